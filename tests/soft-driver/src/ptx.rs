//! A small, defensive PTX reader for the simulated driver.
//!
//! It does not compile anything. It reads only what the simulated driver
//! needs from a PTX module: the `.version`, `.target` and `.address_size`
//! header, every kernel (`.entry`) with its parameter list and launch-bound
//! directives, and every module-scope `.global` / `.const` variable with its
//! size, alignment and initializer. Function (`.func`) and kernel bodies are
//! skipped with brace matching. Malformed input yields a [`PtxError`], never
//! a panic.

use std::collections::HashSet;
use std::fmt;

/// Why a module image was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PtxError {
    /// Not PTX text at all (binary, not UTF-8, no `.version` directive).
    NotPtx(String),
    /// PTX text that does not parse.
    Syntax(String),
    /// PTX whose `.version` is newer than the simulated driver accepts.
    UnsupportedVersion(String),
    /// Valid PTX that uses something this simulated driver does not model.
    Unsupported(String),
}

impl fmt::Display for PtxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PtxError::NotPtx(m) => write!(f, "not a PTX image: {m}"),
            PtxError::Syntax(m) => write!(f, "PTX syntax error: {m}"),
            PtxError::UnsupportedVersion(m) => write!(f, "unsupported PTX version: {m}"),
            PtxError::Unsupported(m) => write!(f, "unsupported PTX feature: {m}"),
        }
    }
}

impl std::error::Error for PtxError {}

/// One kernel parameter as the driver lays it out in the parameter buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Param {
    pub name: String,
    pub offset: usize,
    pub size: usize,
    pub align: usize,
}

/// One `.entry` (kernel).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub params: Vec<Param>,
    /// `.maxntid x, y, z` (missing dimensions are 1).
    pub maxntid: Option<[u32; 3]>,
    /// `.reqntid x, y, z` (missing dimensions are 1).
    pub reqntid: Option<[u32; 3]>,
}

impl Entry {
    /// Size in bytes of the whole parameter buffer.
    pub fn param_bytes(&self) -> usize {
        self.params.last().map(|p| p.offset + p.size).unwrap_or(0)
    }

    /// Largest block size this kernel may be launched with, from its
    /// launch-bound directives (1024 when it has none).
    pub fn max_threads_per_block(&self) -> u32 {
        let prod = |d: [u32; 3]| d.iter().fold(1u64, |acc, &x| acc.saturating_mul(u64::from(x)));
        let mut max = 1024u64;
        if let Some(d) = self.maxntid {
            max = max.min(prod(d));
        }
        if let Some(d) = self.reqntid {
            max = max.min(prod(d));
        }
        max as u32
    }
}

/// State space of a module-scope variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Space {
    Global,
    Const,
}

/// One module-scope `.global` or `.const` variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variable {
    pub name: String,
    pub space: Space,
    pub size: usize,
    pub align: usize,
    /// Initial contents, little-endian; shorter than `size` means the rest is zero.
    pub init: Vec<u8>,
    /// Declared `.attribute(.managed)` (a CUDA `__managed__` variable).
    pub managed: bool,
}

/// What the simulated driver knows about a loaded PTX module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Module {
    pub version: (u32, u32),
    /// The `sm_XX` number of the first `.target` entry.
    pub target_sm: u32,
    pub address_size: u32,
    pub entries: Vec<Entry>,
    pub variables: Vec<Variable>,
}

impl Module {
    pub fn entry(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    pub fn variable(&self, name: &str) -> Option<&Variable> {
        self.variables.iter().find(|v| v.name == name)
    }
}

/// Newest PTX ISA major version accepted (PTX ISA 9.x ships with CUDA 13).
const MAX_PTX_MAJOR: u32 = 9;
/// The simulated device is compute capability 9.0.
const DEVICE_SM: u32 = 90;
/// Largest kernel parameter buffer (bytes) on compute capability 7.0+.
const MAX_PARAM_BYTES: usize = 32764;

/// Parses a module image given as raw bytes (without the terminating NUL).
pub fn parse_image(bytes: &[u8]) -> Result<Module, PtxError> {
    if bytes.starts_with(b"\x7fELF") {
        return Err(PtxError::NotPtx(
            "ELF cubins are not supported by the simulated driver".into(),
        ));
    }
    let text = std::str::from_utf8(bytes)
        .map_err(|_| PtxError::NotPtx("image is neither PTX text nor a known format".into()))?;
    parse(text)
}

/// Parses PTX text.
pub fn parse(text: &str) -> Result<Module, PtxError> {
    let tokens = tokenize(text)?;
    if !tokens.iter().any(|t| matches!(t, Tok::Word(w) if w == ".version")) {
        return Err(PtxError::NotPtx("no .version directive".into()));
    }
    Parser { toks: tokens, pos: 0 }.module()
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Identifier, directive (`.param`), instruction word, or number.
    Word(String),
    /// String literal (contents only).
    Str,
    /// Single punctuation character.
    Punct(char),
}

fn is_word_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '$' | '%' | '.')
}

fn tokenize(text: &str) -> Result<Vec<Tok>, PtxError> {
    let chars: Vec<char> = text.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '/' && chars.get(i + 1) == Some(&'/') {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && chars.get(i + 1) == Some(&'*') {
            i += 2;
            loop {
                if i + 1 >= chars.len() {
                    return Err(PtxError::Syntax("unterminated block comment".into()));
                }
                if chars[i] == '*' && chars[i + 1] == '/' {
                    i += 2;
                    break;
                }
                i += 1;
            }
        } else if c == '"' {
            i += 1;
            loop {
                match chars.get(i) {
                    None | Some('\n') => return Err(PtxError::Syntax("unterminated string literal".into())),
                    Some('\\') => i += 2,
                    Some('"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            toks.push(Tok::Str);
        } else if c.is_ascii_digit() {
            let start = i;
            let hex = c == '0' && matches!(chars.get(i + 1), Some('x' | 'X' | 'f' | 'F' | 'd' | 'D'));
            while i < chars.len() {
                let d = chars[i];
                let exponent_sign =
                    (d == '+' || d == '-') && !hex && matches!(chars.get(i.wrapping_sub(1)), Some('e' | 'E'));
                if d.is_ascii_alphanumeric() || d == '.' || exponent_sign {
                    i += 1;
                } else {
                    break;
                }
            }
            toks.push(Tok::Word(chars[start..i].iter().collect()));
        } else if is_word_char(c) {
            let start = i;
            while i < chars.len() && is_word_char(chars[i]) {
                i += 1;
            }
            let word: String = chars[start..i].iter().collect();
            if word.starts_with('.') && word.len() > 1 && word[1..].contains('.') {
                // `.ptr.global.align` is three directives written together.
                for part in word[1..].split('.') {
                    if part.is_empty() {
                        return Err(PtxError::Syntax(format!("bad directive `{word}`")));
                    }
                    toks.push(Tok::Word(format!(".{part}")));
                }
            } else {
                toks.push(Tok::Word(word));
            }
        } else if c.is_ascii_punctuation() {
            toks.push(Tok::Punct(c));
            i += 1;
        } else {
            return Err(PtxError::Syntax(format!("unexpected character {c:?}")));
        }
    }
    Ok(toks)
}

struct Parser {
    toks: Vec<Tok>,
    pos: usize,
}

fn syntax<T>(msg: impl Into<String>) -> Result<T, PtxError> {
    Err(PtxError::Syntax(msg.into()))
}

/// Size in bytes of a PTX fundamental type directive (`.u32` → 4).
fn type_size(ty: &str) -> Option<usize> {
    Some(match ty {
        ".u8" | ".s8" | ".b8" => 1,
        ".u16" | ".s16" | ".b16" | ".f16" | ".bf16" => 2,
        ".u32" | ".s32" | ".b32" | ".f32" | ".f16x2" | ".bf16x2" => 4,
        ".u64" | ".s64" | ".b64" | ".f64" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

fn is_ident(s: &str) -> bool {
    let mut cs = s.chars();
    match cs.next() {
        Some(c) if c.is_ascii_alphabetic() || matches!(c, '_' | '$' | '%') => {}
        _ => return false,
    }
    cs.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '$'))
}

fn parse_uint(s: &str) -> Option<u64> {
    let s = s.strip_suffix(['U', 'u']).unwrap_or(s);
    if let Some(h) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = s.strip_prefix("0b").or_else(|| s.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else if s.len() > 1 && s.starts_with('0') {
        u64::from_str_radix(&s[1..], 8).ok()
    } else {
        s.parse().ok()
    }
}

impl Parser {
    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos)
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
        }
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).cloned();
        if t.is_some() {
            self.pos += 1;
        }
        t
    }

    fn eat_punct(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), PtxError> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            syntax(format!("expected `{c}`, found {:?}", self.peek()))
        }
    }

    fn eat_word(&mut self, w: &str) -> bool {
        if self.peek_word() == Some(w) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn word(&mut self, what: &str) -> Result<String, PtxError> {
        match self.next() {
            Some(Tok::Word(w)) => Ok(w),
            other => syntax(format!("expected {what}, found {other:?}")),
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, PtxError> {
        let w = self.word(what)?;
        if is_ident(&w) {
            Ok(w)
        } else {
            syntax(format!("`{w}` is not a valid {what}"))
        }
    }

    fn uint(&mut self, what: &str) -> Result<u64, PtxError> {
        let w = self.word(what)?;
        parse_uint(&w).ok_or_else(|| PtxError::Syntax(format!("`{w}` is not a valid {what}")))
    }

    fn align_value(&mut self) -> Result<usize, PtxError> {
        let n = self.uint("alignment")?;
        if n == 0 || !n.is_power_of_two() || n > 4096 {
            return syntax(format!("bad alignment {n}"));
        }
        Ok(n as usize)
    }

    /// Skips a balanced `{ ... }` block; the opening brace is the next token.
    fn skip_block(&mut self) -> Result<(), PtxError> {
        self.expect_punct('{')?;
        let mut depth = 1usize;
        while depth > 0 {
            match self.next() {
                None => return syntax("unterminated `{` block"),
                Some(Tok::Punct('{')) => depth += 1,
                Some(Tok::Punct('}')) => depth -= 1,
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// Skips a declaration up to its `;`, or a definition through its body.
    /// A prototype's `;` may be missing (ptxas takes XLA's
    /// `.extern .func cudaGraphSetConditional (...)` followed directly by
    /// the kernel): after a parameter list, a directive that opens a new
    /// declaration ends it.
    fn skip_declaration(&mut self) -> Result<(), PtxError> {
        let mut parens = 0usize;
        let mut after_params = false;
        loop {
            match self.peek() {
                None => return syntax("unterminated declaration"),
                Some(Tok::Word(w))
                    if parens == 0
                        && after_params
                        && matches!(
                            w.as_str(),
                            ".visible" | ".extern" | ".weak" | ".common" | ".entry" | ".func" | ".global" | ".const"
                        ) =>
                {
                    return Ok(());
                }
                Some(Tok::Punct('(')) => parens += 1,
                Some(Tok::Punct(')')) => {
                    parens = parens
                        .checked_sub(1)
                        .ok_or_else(|| PtxError::Syntax("unbalanced `)`".into()))?;
                    after_params = parens == 0;
                }
                Some(Tok::Punct(';')) if parens == 0 => {
                    self.pos += 1;
                    return Ok(());
                }
                Some(Tok::Punct('{')) if parens == 0 => return self.skip_block(),
                Some(Tok::Punct('}')) => return syntax("unbalanced `}`"),
                Some(_) => {}
            }
            self.pos += 1;
        }
    }

    fn module(mut self) -> Result<Module, PtxError> {
        let mut version = None;
        let mut target_sm = None;
        let mut address_size = 64;
        let mut entries: Vec<Entry> = Vec::new();
        let mut variables: Vec<Variable> = Vec::new();
        let mut names = HashSet::new();

        while let Some(tok) = self.next() {
            let w = match tok {
                Tok::Word(w) => w,
                Tok::Punct(';') => continue,
                other => return syntax(format!("unexpected {other:?} at module scope")),
            };
            match w.as_str() {
                ".version" => {
                    let v = self.word("version number")?;
                    let (maj, min) = v
                        .split_once('.')
                        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
                        .ok_or_else(|| PtxError::Syntax(format!("bad .version `{v}`")))?;
                    if version.is_some() {
                        return syntax("duplicate .version");
                    }
                    if maj > MAX_PTX_MAJOR {
                        return Err(PtxError::UnsupportedVersion(v));
                    }
                    version = Some((maj, min));
                }
                ".target" => {
                    let mut first = true;
                    loop {
                        let t = self.word("target")?;
                        if first {
                            let sm = t
                                .strip_prefix("sm_")
                                .map(|s| s.trim_end_matches(['a', 'f']))
                                .and_then(|s| s.parse::<u32>().ok())
                                .ok_or_else(|| PtxError::Syntax(format!("bad .target `{t}`")))?;
                            if sm > DEVICE_SM {
                                return syntax(format!("target {t} is newer than the device (sm_{DEVICE_SM})"));
                            }
                            target_sm = Some(sm);
                            first = false;
                        }
                        if !self.eat_punct(',') {
                            break;
                        }
                    }
                }
                ".address_size" => {
                    let n = self.uint("address size")?;
                    if n != 32 && n != 64 {
                        return syntax(format!("bad .address_size {n}"));
                    }
                    address_size = n as u32;
                }
                ".visible" | ".extern" | ".weak" | ".common" => {
                    let external = w == ".extern";
                    self.declaration(external, &mut entries, &mut variables, &mut names)?
                }
                ".entry" | ".func" | ".global" | ".const" => {
                    self.pos -= 1;
                    self.declaration(false, &mut entries, &mut variables, &mut names)?
                }
                ".file" => {
                    // `.file N "name" [, timestamp, size]` (no semicolon)
                    self.uint("file number")?;
                    if self.next() != Some(Tok::Str) {
                        return syntax(".file needs a file name");
                    }
                    while self.eat_punct(',') {
                        self.word("file attribute")?;
                    }
                }
                ".loc" => {
                    // `.loc file line column` (no semicolon)
                    while self.peek_word().is_some_and(|w| parse_uint(w).is_some()) {
                        self.pos += 1;
                    }
                }
                ".pragma" | ".shared" | ".tex" | ".texref" | ".surfref" | ".samplerref" | ".alias"
                | ".callprototype" => self.skip_declaration()?,
                ".section" => {
                    self.word("section name")?;
                    self.skip_block()?;
                }
                other if other.starts_with('.') => self.skip_declaration()?,
                other => return syntax(format!("unexpected `{other}` at module scope")),
            }
            if version.is_none() {
                return syntax(".version must be the first directive");
            }
        }

        let version = version.ok_or_else(|| PtxError::NotPtx("no .version directive".into()))?;
        let target_sm = target_sm.ok_or_else(|| PtxError::Syntax("missing .target".into()))?;
        Ok(Module {
            version,
            target_sm,
            address_size,
            entries,
            variables,
        })
    }

    fn declaration(
        &mut self,
        external: bool,
        entries: &mut Vec<Entry>,
        variables: &mut Vec<Variable>,
        names: &mut HashSet<String>,
    ) -> Result<(), PtxError> {
        let mut external = external;
        while let Some(w) = self.peek_word() {
            match w {
                ".visible" | ".weak" | ".common" => self.pos += 1,
                ".extern" => {
                    external = true;
                    self.pos += 1
                }
                _ => break,
            }
        }
        let kind = self.word("declaration")?;
        match kind.as_str() {
            ".entry" => {
                let entry = self.entry()?;
                match entry {
                    Some(e) if !external => {
                        if !names.insert(e.name.clone()) {
                            return syntax(format!("duplicate symbol `{}`", e.name));
                        }
                        entries.push(e);
                    }
                    _ => {}
                }
                Ok(())
            }
            ".global" | ".const" => {
                let space = if kind == ".global" { Space::Global } else { Space::Const };
                let vars = self.variables(space)?;
                if !external {
                    for v in vars {
                        if !names.insert(v.name.clone()) {
                            return syntax(format!("duplicate symbol `{}`", v.name));
                        }
                        variables.push(v);
                    }
                }
                Ok(())
            }
            _ => self.skip_declaration(),
        }
    }

    /// Parses an entry after `.entry`; `None` for a prototype (no body).
    fn entry(&mut self) -> Result<Option<Entry>, PtxError> {
        let name = self.ident("kernel name")?;
        let mut params = Vec::new();
        if self.eat_punct('(') {
            let mut offset = 0usize;
            if !self.eat_punct(')') {
                loop {
                    let p = self.param(offset)?;
                    offset = p.offset + p.size;
                    params.push(p);
                    if self.eat_punct(')') {
                        break;
                    }
                    self.expect_punct(',')?;
                }
            }
            if offset > MAX_PARAM_BYTES {
                return syntax(format!(
                    "kernel `{name}` has {offset} bytes of parameters (limit {MAX_PARAM_BYTES})"
                ));
            }
        }
        let mut entry = Entry {
            name,
            params,
            maxntid: None,
            reqntid: None,
        };
        loop {
            match self.peek() {
                Some(Tok::Punct('{')) => {
                    self.skip_block()?;
                    return Ok(Some(entry));
                }
                Some(Tok::Punct(';')) => {
                    self.pos += 1;
                    return Ok(None);
                }
                Some(Tok::Word(w)) if w == ".maxntid" || w == ".reqntid" => {
                    let is_max = w == ".maxntid";
                    self.pos += 1;
                    let mut dims = [1u32; 3];
                    for (i, d) in dims.iter_mut().enumerate() {
                        if i > 0 && !self.eat_punct(',') {
                            break;
                        }
                        let n = self.uint("thread count")?;
                        if n == 0 || n > 1024 {
                            return syntax(format!("bad thread count {n}"));
                        }
                        *d = n as u32;
                    }
                    if is_max {
                        entry.maxntid = Some(dims);
                    } else {
                        entry.reqntid = Some(dims);
                    }
                }
                Some(Tok::Word(w)) if w.starts_with('.') => {
                    // .minnctapersm, .maxnreg, .noreturn, cluster directives...
                    self.pos += 1;
                    while let Some(Tok::Word(v)) = self.peek() {
                        if v.starts_with('.') {
                            break;
                        }
                        self.pos += 1;
                        if !self.eat_punct(',') {
                            break;
                        }
                    }
                }
                other => return syntax(format!("unexpected {other:?} in kernel header")),
            }
        }
    }

    /// `.param [.align N] [.vN] .type [.ptr [.space] [.align N]] name [[M]]`
    fn param(&mut self, offset: usize) -> Result<Param, PtxError> {
        if !self.eat_word(".param") {
            return syntax(format!("expected `.param`, found {:?}", self.peek()));
        }
        let mut align = None;
        if self.eat_word(".align") {
            align = Some(self.align_value()?);
        }
        let (elem, natural) = self.data_type()?;
        if self.eat_word(".ptr") {
            while let Some(w) = self.peek_word() {
                match w {
                    ".global" | ".const" | ".local" | ".shared" => self.pos += 1,
                    ".align" => {
                        self.pos += 1;
                        self.align_value()?;
                    }
                    _ => break,
                }
            }
        }
        let name = self.ident("parameter name")?;
        let count = self.array_dims(false)?.unwrap_or(1);
        let size = elem
            .checked_mul(count)
            .filter(|&s| s <= MAX_PARAM_BYTES)
            .ok_or_else(|| PtxError::Syntax(format!("parameter `{name}` is too large")))?;
        let align = align.unwrap_or(natural).max(natural);
        let offset = offset.div_ceil(align) * align;
        Ok(Param {
            name,
            offset,
            size,
            align,
        })
    }

    /// `[.v2|.v4] .type` → (element size, natural alignment).
    fn data_type(&mut self) -> Result<(usize, usize), PtxError> {
        let lanes = match self.peek_word() {
            Some(".v2") => 2,
            Some(".v4") => 4,
            Some(".v8") => 8,
            _ => 1,
        };
        if lanes > 1 {
            self.pos += 1;
        }
        let ty = self.word("type")?;
        let size = type_size(&ty).ok_or_else(|| PtxError::Syntax(format!("unknown or unsupported type `{ty}`")))?;
        Ok((size * lanes, size * lanes))
    }

    /// Optional `[N]` (or `[N][M]...`) suffix → element count. An empty
    /// `[]` is allowed only when `allow_open` (sized by an initializer),
    /// and is reported as `Some(0)`.
    fn array_dims(&mut self, allow_open: bool) -> Result<Option<usize>, PtxError> {
        let mut count: Option<usize> = None;
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                if !allow_open || count.is_some() {
                    return syntax("array without a size");
                }
                count = Some(0);
                continue;
            }
            let n = self.uint("array size")?;
            self.expect_punct(']')?;
            if n == 0 {
                return syntax("array of size 0");
            }
            let n = usize::try_from(n).map_err(|_| PtxError::Syntax("array too large".into()))?;
            count = Some(
                count
                    .unwrap_or(1)
                    .max(1)
                    .checked_mul(n)
                    .ok_or_else(|| PtxError::Syntax("array too large".into()))?,
            );
        }
        Ok(count)
    }

    /// Variables after `.global` / `.const`, through the `;`.
    fn variables(&mut self, space: Space) -> Result<Vec<Variable>, PtxError> {
        let mut managed = false;
        if self.eat_word(".attribute") {
            self.expect_punct('(')?;
            loop {
                managed |= self.word("variable attribute")? == ".managed";
                if self.eat_punct(')') {
                    break;
                }
                self.expect_punct(',')?;
            }
        }
        let mut align = None;
        if self.eat_word(".align") {
            align = Some(self.align_value()?);
        }
        let ty = self.peek_word().map(str::to_string);
        let (elem, natural) = match self.data_type() {
            Ok(t) => t,
            Err(_) if ty.as_deref().is_some_and(|t| t.ends_with("ref")) => {
                // .texref / .samplerref / .surfref globals: nothing to allocate.
                self.skip_declaration()?;
                return Ok(Vec::new());
            }
            Err(e) => return Err(e),
        };
        let is_float = matches!(ty.as_deref(), Some(".f32" | ".f64"));
        let align = align.unwrap_or(natural).max(natural);
        let mut vars = Vec::new();
        loop {
            let name = self.ident("variable name")?;
            let count = self.array_dims(true)?;
            let mut init = Vec::new();
            let mut n_init = 0;
            if self.eat_punct('=') {
                n_init = self.initializer(elem, is_float, &mut init)?;
            }
            let count = match count {
                Some(0) if n_init == 0 => return syntax(format!("`{name}[]` needs an initializer")),
                Some(0) => n_init,
                Some(c) => c,
                None => 1,
            };
            if n_init > count {
                return syntax(format!("too many initializers for `{name}`"));
            }
            let size = elem
                .checked_mul(count)
                .ok_or_else(|| PtxError::Syntax(format!("`{name}` is too large")))?;
            vars.push(Variable {
                name,
                space,
                size,
                align,
                init,
                managed,
            });
            if self.eat_punct(';') {
                return Ok(vars);
            }
            self.expect_punct(',')?;
        }
    }

    /// Parses `value` or `{ v, v, ... }` (nested braces flatten) and appends
    /// the little-endian bytes; returns the number of elements.
    fn initializer(&mut self, elem: usize, is_float: bool, out: &mut Vec<u8>) -> Result<usize, PtxError> {
        if self.eat_punct('{') {
            let mut n = 0;
            if self.eat_punct('}') {
                return Ok(0);
            }
            loop {
                n += self.initializer(elem, is_float, out)?;
                if self.eat_punct('}') {
                    return Ok(n);
                }
                self.expect_punct(',')?;
            }
        }
        let neg = self.eat_punct('-');
        let w = self.word("initializer value")?;
        if is_ident(&w) || w.starts_with("generic") {
            return Err(PtxError::Unsupported(format!(
                "address initializer `{w}` is not simulated"
            )));
        }
        let bytes =
            literal_bytes(&w, neg, elem, is_float).ok_or_else(|| PtxError::Syntax(format!("bad initializer `{w}`")))?;
        out.extend_from_slice(&bytes);
        Ok(1)
    }
}

/// Encodes one literal for a variable whose elements are `elem` bytes wide.
fn literal_bytes(w: &str, neg: bool, elem: usize, is_float: bool) -> Option<Vec<u8>> {
    let hex_float = |prefix: [&str; 2], digits: usize| {
        let h = w.strip_prefix(prefix[0]).or_else(|| w.strip_prefix(prefix[1]))?;
        (h.len() == digits).then(|| u64::from_str_radix(h, 16).ok())?
    };
    let mut bytes = if let Some(bits) = hex_float(["0f", "0F"], 8) {
        // Exact bit pattern of an f32 (sign flipped by a leading minus).
        let bits = bits as u32 ^ if neg { 0x8000_0000 } else { 0 };
        match (is_float, elem) {
            (true, 4) => bits.to_le_bytes().to_vec(),
            (true, 8) => f64::from(f32::from_bits(bits)).to_le_bytes().to_vec(),
            _ => return None,
        }
    } else if let Some(bits) = hex_float(["0d", "0D"], 16) {
        let bits = bits ^ if neg { 1 << 63 } else { 0 };
        match (is_float, elem) {
            (true, 8) => bits.to_le_bytes().to_vec(),
            (true, 4) => (f64::from_bits(bits) as f32).to_le_bytes().to_vec(),
            _ => return None,
        }
    } else if is_float {
        let v = match parse_uint(w) {
            Some(i) => i as f64,
            None => w.parse::<f64>().ok()?,
        };
        let v = if neg { -v } else { v };
        match elem {
            4 => (v as f32).to_le_bytes().to_vec(),
            8 => v.to_le_bytes().to_vec(),
            _ => return None,
        }
    } else {
        let v = parse_uint(w)?;
        let v = if neg { v.wrapping_neg() } else { v };
        v.to_le_bytes()[..elem.min(8)].to_vec()
    };
    bytes.resize(elem, 0);
    Some(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = ".version 8.0\n.target sm_90\n.address_size 64\n";

    fn module(body: &str) -> Module {
        parse(&format!("{HEADER}{body}")).expect("parses")
    }

    fn layout(e: &Entry) -> Vec<(usize, usize)> {
        e.params.iter().map(|p| (p.offset, p.size)).collect()
    }

    #[test]
    fn header() {
        let m = module("");
        assert_eq!(m.version, (8, 0));
        assert_eq!(m.target_sm, 90);
        assert_eq!(m.address_size, 64);
        assert!(m.entries.is_empty());
    }

    #[test]
    fn mixed_param_layout() {
        let m = module(".visible .entry k(.param .u64 a, .param .f32 b, .param .u32 c, .param .u64 d)\n{\n ret;\n}\n");
        let e = m.entry("k").unwrap();
        assert_eq!(layout(e), vec![(0, 8), (8, 4), (12, 4), (16, 8)]);
        assert_eq!(e.param_bytes(), 24);
    }

    #[test]
    fn realistic_nvcc_output() {
        let src = r#"
//
// Generated by NVIDIA NVVM Compiler
//
.version 8.4
.target sm_90
.address_size 64

	// .globl	gp_saxpy
.global .align 4 .b8 table[64];
.global .align 4 .u32 counter = 7;
.global .attribute(.managed) .align 4 .b8 shared_table[4000];
.global .attribute(.managed) .align 4 .u32 shared_count = 3;
.const .align 4 .f32 coeffs[3] = {0f3F800000, 2.5, -1};

.visible .entry gp_saxpy(
	.param .u32 gp_saxpy_param_0,
	.param .f32 gp_saxpy_param_1,
	.param .u64 .ptr .global .align 4 gp_saxpy_param_2,
	.param .u64 .ptr.global.align 4 gp_saxpy_param_3
)
.maxntid 256, 1, 1
{
	.reg .pred 	%p<2>;
	.reg .f32 	%f<4>;
	.reg .b32 	%r<6>;
	.reg .b64 	%rd<8>;

	ld.param.u32 	%r2, [gp_saxpy_param_0];
	mov.u32 	%r3, %ctaid.x;
	setp.ge.s32 	%p1, %r1, %r2;
	@%p1 bra 	$L__BB0_2;
	{ // nested scope
	}
$L__BB0_2:
	ret;

}
.func (.param .b32 retval) helper(.param .b32 x)
{
	ret;
}
.visible .entry gp_null()
{
	ret;
}
"#;
        let m = parse(src).unwrap();
        assert_eq!(m.version, (8, 4));
        let e = m.entry("gp_saxpy").unwrap();
        assert_eq!(layout(e), vec![(0, 4), (4, 4), (8, 8), (16, 8)]);
        assert_eq!(e.maxntid, Some([256, 1, 1]));
        assert_eq!(e.max_threads_per_block(), 256);
        assert!(m.entry("helper").is_none(), ".func is not a kernel");
        assert_eq!(m.entry("gp_null").unwrap().params.len(), 0);

        let t = m.variable("table").unwrap();
        assert_eq!((t.size, t.align, t.space), (64, 4, Space::Global));
        let c = m.variable("counter").unwrap();
        assert_eq!(
            (c.size, c.init.clone(), c.managed),
            (4, 7u32.to_le_bytes().to_vec(), false)
        );
        let st = m.variable("shared_table").unwrap();
        assert_eq!((st.size, st.align, st.managed), (4000, 4, true));
        let sc = m.variable("shared_count").unwrap();
        assert_eq!((sc.init.clone(), sc.managed), (3u32.to_le_bytes().to_vec(), true));
        let k = m.variable("coeffs").unwrap();
        assert_eq!(k.space, Space::Const);
        let vals: Vec<f32> = k
            .init
            .chunks(4)
            .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
            .collect();
        assert_eq!(vals, vec![1.0, 2.5, -1.0]);
    }

    #[test]
    fn aligned_byte_arrays_and_small_types() {
        let m = module(
            ".entry k(.param .u8 a, .param .align 16 .b8 s[24], .param .u16 b, .param .s64 c, .param .f64 d, .param .b32 e)\n{ ret; }\n",
        );
        let e = m.entry("k").unwrap();
        assert_eq!(layout(e), vec![(0, 1), (16, 24), (40, 2), (48, 8), (56, 8), (64, 4)]);
        assert_eq!(e.params[1].align, 16);
    }

    #[test]
    fn entry_without_param_list_and_prototype() {
        // A prototype without its `;`, as XLA's conditional kernels have.
        let m = module(
            ".extern .func cudaGraphSetConditional\n(\n .param .b64 p0,\n .param .b32 p1\n)\n\n\
             .visible .entry set_while_condition(\n .param .u64 a,\n .param .u64 b\n)\n{\n ret;\n}\n",
        );
        assert_eq!(m.entry("set_while_condition").unwrap().params.len(), 2);
        let m = module(".func (.param .b32 r) f(.param .b32 x)\n.entry k() { ret; }\n");
        assert!(m.entry("k").is_some());
        let m = module(".extern .entry ext(.param .u32 x);\n.entry bare\n{\n ret;\n}\n");
        assert!(m.entry("ext").is_none());
        assert!(m.entry("bare").unwrap().params.is_empty());
    }

    #[test]
    fn multiple_variables_and_unsized_array() {
        let m = module(".global .u32 a, b[4];\n.global .u8 bytes[] = {1, 2, 3};\n.global .s32 neg = -2;\n");
        assert_eq!(m.variable("a").unwrap().size, 4);
        assert_eq!(m.variable("b").unwrap().size, 16);
        assert_eq!(m.variable("bytes").unwrap().size, 3);
        assert_eq!(m.variable("bytes").unwrap().init, vec![1, 2, 3]);
        assert_eq!(m.variable("neg").unwrap().init, (-2i32).to_le_bytes().to_vec());
    }

    #[test]
    fn reqntid_and_unknown_directives() {
        let m = module(".entry k() .reqntid 32, 2 .minnctapersm 4 .maxnreg 32 { ret; }\n");
        let e = m.entry("k").unwrap();
        assert_eq!(e.reqntid, Some([32, 2, 1]));
        assert_eq!(e.max_threads_per_block(), 64);
    }

    #[test]
    fn debug_sections_are_skipped() {
        let m = module(".file 1 \"k.cu\"\n.entry k() { ret; }\n.section .debug_info { .b32 1 .b8 0 }\n");
        assert!(m.entry("k").is_some());
    }

    #[test]
    fn not_ptx() {
        assert!(matches!(parse_image(b"\x7fELF\x02\x01"), Err(PtxError::NotPtx(_))));
        assert!(matches!(parse_image(&[0xff, 0xfe, 0x00]), Err(PtxError::NotPtx(_))));
        assert!(matches!(parse("hello world"), Err(PtxError::NotPtx(_))));
        assert!(matches!(parse(""), Err(PtxError::NotPtx(_))));
    }

    #[test]
    fn malformed_ptx_is_an_error() {
        let bad = [
            ".version 8.0\n.entry k(.param .u64 a) { ret; }",
            ".version x\n.target sm_90\n",
            ".version 8.0\n.target sm_90\n.entry k(.param .u64 a { ret; }",
            ".version 8.0\n.target sm_90\n.entry k(.param .u64 a) { ret; ",
            ".version 8.0\n.target sm_90\n.entry k(.param .q64 a) { ret; }",
            ".version 8.0\n.target sm_90\n.entry k(.param .u32 a[0]) { ret; }",
            ".version 8.0\n.target sm_90\n.entry k(.param .align 3 .b8 a[4]) { ret; }",
            ".version 8.0\n.target sm_90\n.entry k() { ret; }\n.entry k() { ret; }",
            ".version 8.0\n.target sm_90\n.global .u32 g[2] = {1, 2, 3};",
            ".version 8.0\n.target sm_90\n.global .u32 g[];",
            ".version 8.0\n.target sm_90\n}",
            ".version 8.0\n.target sm_90\nmov.u32 %r1, 0;",
            ".version 8.0\n.target sm_90\n/* open comment",
            ".version 8.0\n.target sm_90\n.file 1 \"open",
            ".version 8.0\n.target sm_100\n",
            ".version 8.0\n.target sm_90\n.entry k(.param .u8 a[40000]) { ret; }",
        ];
        for src in bad {
            match parse(src) {
                Err(PtxError::Syntax(_)) => {}
                other => panic!("{src:?} gave {other:?}"),
            }
        }
        assert!(matches!(
            parse(".version 10.0\n.target sm_90\n"),
            Err(PtxError::UnsupportedVersion(_))
        ));
    }

    #[test]
    fn never_panics_on_truncations() {
        let src = format!(
            "{HEADER}.global .align 8 .b8 g[16] = {{1,2}};\n.visible .entry gp_vector_add(.param .u64 a, .param .u64 b, .param .u64 c, .param .u32 n) .maxntid 128 {{ ld.param.u64 %rd1, [a]; ret; }}\n"
        );
        for end in 0..=src.len() {
            let _ = parse(&src[..end]);
        }
        for junk in ["(", ")", "[", "]", "{", "}", ",", "=", "-", ".param", ".align", ";"] {
            for i in 0..src.len() {
                let mut s = src.clone();
                s.insert_str(i, junk);
                let _ = parse(&s);
            }
        }
    }
}
