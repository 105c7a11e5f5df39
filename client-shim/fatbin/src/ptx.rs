//! Kernel and variable declarations read from PTX text.
//!
//! Only module scope is looked at: `.entry` headers with their `.param`
//! lists, and `.global` / `.const` variables. Bodies are skipped by brace
//! matching; nothing is compiled or checked beyond what those need.

use crate::{Error, GlobalInfo, KernelInfo, ParamInfo};

/// Largest parameter buffer a kernel may have (CUDA 12.1+ on sm_70+).
const MAX_PARAM_BYTES: u64 = 32764;
/// Largest module-scope variable accepted (4 GiB).
const MAX_VARIABLE_LEN: u64 = 1 << 32;

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    /// Identifier, directive, number or instruction word.
    Word(String),
    Str,
    Punct(char),
}

struct Token {
    tok: Tok,
    line: usize,
}

/// The text of a PTX image: everything before the first NUL.
pub(crate) fn text(image: &[u8]) -> &[u8] {
    match image.iter().position(|&b| b == 0) {
        Some(n) => &image[..n],
        None => image,
    }
}

fn err<T>(line: usize, message: impl Into<String>) -> Result<T, Error> {
    Err(Error::Ptx {
        line,
        message: message.into(),
    })
}

fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'$' | b'%' | b'.')
}

fn tokenize(src: &[u8]) -> Result<Vec<Token>, Error> {
    let mut out = Vec::new();
    let mut line = 1;
    let mut i = 0;
    while i < src.len() {
        let c = src[i];
        if c == b'\n' {
            line += 1;
            i += 1;
        } else if c.is_ascii_whitespace() {
            i += 1;
        } else if src[i..].starts_with(b"//") {
            while i < src.len() && src[i] != b'\n' {
                i += 1;
            }
        } else if src[i..].starts_with(b"/*") {
            let start = line;
            i += 2;
            loop {
                if i + 1 >= src.len() {
                    return err(start, "unterminated /* comment");
                }
                if src[i] == b'*' && src[i + 1] == b'/' {
                    i += 2;
                    break;
                }
                if src[i] == b'\n' {
                    line += 1;
                }
                i += 1;
            }
        } else if c == b'"' {
            i += 1;
            loop {
                match src.get(i) {
                    None | Some(b'\n') => return err(line, "unterminated string literal"),
                    Some(b'\\') => i += 2,
                    Some(b'"') => {
                        i += 1;
                        break;
                    }
                    Some(_) => i += 1,
                }
            }
            out.push(Token { tok: Tok::Str, line });
        } else if is_word(c) {
            let start = i;
            while i < src.len() && is_word(src[i]) {
                i += 1;
            }
            // Only ASCII bytes pass `is_word`.
            let w = String::from_utf8_lossy(&src[start..i]);
            if let Some(directives) = w.strip_prefix('.') {
                // `.ptr.global.align` is three directives written together.
                for part in directives.split('.') {
                    out.push(Token {
                        tok: Tok::Word(format!(".{part}")),
                        line,
                    });
                }
            } else {
                out.push(Token {
                    tok: Tok::Word(w.into_owned()),
                    line,
                });
            }
        } else if c.is_ascii_punctuation() {
            out.push(Token {
                tok: Tok::Punct(c as char),
                line,
            });
            i += 1;
        } else {
            return err(line, format!("unexpected byte {c:#04x} outside a comment or string"));
        }
    }
    Ok(out)
}

/// Size in bytes of a PTX fundamental type.
fn type_size(ty: &str) -> Option<u64> {
    Some(match ty {
        ".b8" | ".u8" | ".s8" | ".pred" | ".e4m3x2" | ".e5m2x2" => 1,
        ".b16" | ".u16" | ".s16" | ".f16" | ".bf16" => 2,
        ".b32" | ".u32" | ".s32" | ".f32" | ".f16x2" | ".bf16x2" | ".tf32" => 4,
        ".b64" | ".u64" | ".s64" | ".f64" => 8,
        ".b128" => 16,
        _ => return None,
    })
}

/// What a scan of the module found.
#[derive(Debug, Default)]
pub(crate) struct Module {
    pub kernels: Vec<KernelInfo>,
    pub globals: Vec<GlobalInfo>,
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

impl Parser {
    fn line(&self) -> usize {
        self.toks
            .get(self.pos)
            .or_else(|| self.toks.last())
            .map(|t| t.line)
            .unwrap_or(1)
    }

    fn peek(&self) -> Option<&Tok> {
        self.toks.get(self.pos).map(|t| &t.tok)
    }

    fn next(&mut self) -> Option<Tok> {
        let t = self.toks.get(self.pos).map(|t| t.tok.clone());
        self.pos += 1;
        t
    }

    fn peek_word(&self) -> Option<&str> {
        match self.peek() {
            Some(Tok::Word(w)) => Some(w),
            _ => None,
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

    fn eat_punct(&mut self, c: char) -> bool {
        if self.peek() == Some(&Tok::Punct(c)) {
            self.pos += 1;
            true
        } else {
            false
        }
    }

    fn expect_punct(&mut self, c: char) -> Result<(), Error> {
        if self.eat_punct(c) {
            Ok(())
        } else {
            err(self.line(), format!("expected `{c}`, found {}", self.describe()))
        }
    }

    fn describe(&self) -> String {
        match self.peek() {
            None => "the end of the text".into(),
            Some(Tok::Word(w)) => format!("`{w}`"),
            Some(Tok::Str) => "a string".into(),
            Some(Tok::Punct(c)) => format!("`{c}`"),
        }
    }

    fn word(&mut self, what: &str) -> Result<String, Error> {
        match self.peek() {
            Some(Tok::Word(w)) => {
                let w = w.clone();
                self.pos += 1;
                Ok(w)
            }
            _ => err(self.line(), format!("expected {what}, found {}", self.describe())),
        }
    }

    fn ident(&mut self, what: &str) -> Result<String, Error> {
        let line = self.line();
        let w = self.word(what)?;
        let first = w.as_bytes()[0];
        if first == b'.' || first.is_ascii_digit() {
            return err(line, format!("expected {what}, found `{w}`"));
        }
        Ok(w)
    }

    fn uint(&mut self, what: &str) -> Result<u64, Error> {
        let line = self.line();
        let w = self.word(what)?;
        let v = match w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
            Some(h) => u64::from_str_radix(h.trim_end_matches(['U', 'u']), 16).ok(),
            None => w.trim_end_matches(['U', 'u']).parse().ok(),
        };
        v.map_or_else(|| err(line, format!("expected {what}, found `{w}`")), Ok)
    }

    fn align(&mut self) -> Result<u64, Error> {
        let line = self.line();
        let a = self.uint("an alignment")?;
        if !a.is_power_of_two() || a > 1 << 16 {
            return err(line, format!("alignment {a} is not a power of two up to 65536"));
        }
        Ok(a)
    }

    /// `[.vN] .type` → element size (which is also its natural alignment).
    fn data_type(&mut self) -> Result<Option<u64>, Error> {
        let lanes = match self.peek_word() {
            Some(".v2") => 2,
            Some(".v4") => 4,
            Some(".v8") => 8,
            _ => 1,
        };
        if lanes > 1 {
            self.pos += 1;
        }
        let line = self.line();
        let ty = self.word("a type")?;
        if ty.ends_with("ref") {
            return Ok(None); // .texref, .samplerref, .surfref: no storage
        }
        match type_size(&ty) {
            Some(s) => Ok(Some(s * lanes)),
            None => err(line, format!("unknown type `{ty}`")),
        }
    }

    /// Element count from `[N]...` suffixes; `Some(0)` for an open `[]`.
    fn dims(&mut self) -> Result<Option<u64>, Error> {
        let mut count: Option<u64> = None;
        while self.eat_punct('[') {
            if self.eat_punct(']') {
                count = Some(0);
                continue;
            }
            let line = self.line();
            let n = self.uint("an array size")?;
            self.expect_punct(']')?;
            let c = count.unwrap_or(1).max(1).checked_mul(n);
            match c {
                Some(c) if c <= MAX_VARIABLE_LEN => count = Some(c),
                _ => return err(line, "array too large"),
            }
        }
        Ok(count)
    }

    /// Skips to the end of the current statement (`;`) at this nesting level,
    /// or past a balanced `{ ... }` block, whichever ends it.
    fn skip_statement(&mut self) -> Result<(), Error> {
        let line = self.line();
        while let Some(t) = self.next() {
            match t {
                Tok::Punct(';') => return Ok(()),
                Tok::Punct('{') => {
                    self.pos -= 1;
                    return self.skip_block();
                }
                Tok::Punct('}') => return err(self.line(), "unbalanced `}`"),
                _ => {}
            }
        }
        err(line, "statement does not end")
    }

    fn skip_block(&mut self) -> Result<(), Error> {
        let line = self.line();
        self.expect_punct('{')?;
        let mut depth = 1usize;
        while let Some(t) = self.next() {
            match t {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                _ => {}
            }
        }
        err(line, "block opened here is not closed")
    }

    fn module(mut self) -> Result<Module, Error> {
        let mut m = Module::default();
        let mut saw_version = false;
        let mut external = false;
        while let Some(t) = self.peek().cloned() {
            match t {
                Tok::Word(w) => match w.as_str() {
                    ".version" => {
                        saw_version = true;
                        self.pos += 1;
                        self.word("a PTX version")?;
                    }
                    ".extern" => {
                        external = true;
                        self.pos += 1;
                        continue;
                    }
                    ".visible" | ".weak" | ".common" => {
                        self.pos += 1;
                        continue;
                    }
                    ".entry" => {
                        self.pos += 1;
                        if let Some(k) = self.entry()? {
                            if !external {
                                if m.kernels.iter().any(|e| e.name == k.name) {
                                    return err(self.line(), format!("kernel `{}` is defined twice", k.name));
                                }
                                m.kernels.push(k);
                            }
                        }
                    }
                    ".global" | ".const" => {
                        self.pos += 1;
                        let vars = self.variables()?;
                        if !external {
                            m.globals.extend(vars);
                        }
                    }
                    // Directives without a `;`.
                    ".target" => {
                        self.pos += 1;
                        self.word("a target")?;
                        while self.eat_punct(',') {
                            self.word("a target")?;
                        }
                    }
                    ".address_size" => {
                        self.pos += 1;
                        self.uint("an address size")?;
                    }
                    ".file" | ".loc" => {
                        self.pos += 1;
                        while matches!(self.peek(), Some(Tok::Str | Tok::Punct(',')))
                            || self.peek_word().is_some_and(|w| w.as_bytes()[0].is_ascii_digit())
                        {
                            self.pos += 1;
                        }
                    }
                    ".section" => {
                        self.pos += 1;
                        self.word("a section name")?;
                        self.skip_block()?;
                    }
                    ".func" | ".shared" | ".local" | ".pragma" | ".alias" => self.skip_statement()?,
                    _ => return err(self.line(), format!("unexpected `{w}` at module scope")),
                },
                Tok::Punct('{') => self.skip_block()?,
                Tok::Punct(';') => self.pos += 1,
                _ => return err(self.line(), format!("unexpected {} at module scope", self.describe())),
            }
            external = false;
        }
        if !saw_version {
            return err(1, "no `.version` directive: not PTX text");
        }
        Ok(m)
    }

    /// After `.entry`: the name, parameters and body (or `;` for a
    /// declaration, which yields `None`).
    fn entry(&mut self) -> Result<Option<KernelInfo>, Error> {
        let name = self.ident("a kernel name")?;
        let mut params = Vec::new();
        if self.eat_punct('(') {
            let mut end = 0u64;
            if !self.eat_punct(')') {
                loop {
                    let line = self.line();
                    let (size, align) = self.param()?;
                    let offset = end.div_ceil(align) * align;
                    end = offset + size;
                    if end > MAX_PARAM_BYTES {
                        return err(line, format!("parameters of `{name}` exceed {MAX_PARAM_BYTES} bytes"));
                    }
                    params.push(ParamInfo {
                        offset: offset as u32,
                        size: size as u32,
                    });
                    if self.eat_punct(')') {
                        break;
                    }
                    self.expect_punct(',')?;
                }
            }
        }
        // Performance directives (.maxntid 256, 1, 1 ...) up to the body.
        loop {
            match self.peek() {
                Some(Tok::Punct('{')) => {
                    self.skip_block()?;
                    return Ok(Some(KernelInfo {
                        name,
                        params: Some(params),
                    }));
                }
                Some(Tok::Punct(';')) => {
                    self.pos += 1;
                    return Ok(None);
                }
                Some(Tok::Word(_)) | Some(Tok::Punct(',')) => self.pos += 1,
                _ => {
                    return err(
                        self.line(),
                        format!("expected the body of `{name}`, found {}", self.describe()),
                    )
                }
            }
        }
    }

    /// `.param [.align N] [.vN] .type [.ptr [.space] [.align N]] name [[M]]`
    /// → (size, alignment).
    fn param(&mut self) -> Result<(u64, u64), Error> {
        let line = self.line();
        if !self.eat_word(".param") {
            return err(line, format!("expected `.param`, found {}", self.describe()));
        }
        let mut align = 1;
        if self.eat_word(".align") {
            align = self.align()?;
        }
        let Some(elem) = self.data_type()? else {
            return err(line, "texture and sampler parameters are not supported");
        };
        if self.eat_word(".ptr") {
            while let Some(w) = self.peek_word() {
                match w {
                    ".global" | ".const" | ".local" | ".shared" => self.pos += 1,
                    ".align" => {
                        self.pos += 1;
                        self.align()?;
                    }
                    _ => break,
                }
            }
        }
        self.ident("a parameter name")?;
        let count = match self.dims()? {
            Some(0) => return err(line, "a parameter array needs a size"),
            Some(c) => c,
            None => 1,
        };
        let size = elem.saturating_mul(count);
        if size > MAX_PARAM_BYTES {
            return err(line, format!("parameter of {size} bytes exceeds {MAX_PARAM_BYTES}"));
        }
        Ok((size, align.max(elem.min(16))))
    }

    /// After `.global` / `.const`: one or more variables through the `;`.
    fn variables(&mut self) -> Result<Vec<GlobalInfo>, Error> {
        // `.attribute(.managed)` and the like: nothing the shim needs.
        if self.eat_word(".attribute") {
            self.expect_punct('(')?;
            while !self.eat_punct(')') {
                if self.next().is_none() {
                    return err(self.line(), "unterminated variable attribute");
                }
            }
        }
        if self.eat_word(".align") {
            self.align()?;
        }
        let Some(elem) = self.data_type()? else {
            self.skip_statement()?;
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        loop {
            let line = self.line();
            let name = self.ident("a variable name")?;
            let count = self.dims()?;
            let mut given = 0u64;
            if self.eat_punct('=') {
                given = self.initializer()?;
            }
            let count = match count {
                Some(0) if given == 0 => return err(line, format!("`{name}[]` has no size and no initializer")),
                Some(0) => given,
                Some(c) => c,
                None => 1,
            };
            let size = elem.saturating_mul(count);
            if size > MAX_VARIABLE_LEN {
                return err(line, format!("`{name}` is larger than {MAX_VARIABLE_LEN} bytes"));
            }
            out.push(GlobalInfo { name, size });
            if self.eat_punct(';') {
                return Ok(out);
            }
            self.expect_punct(',')?;
        }
    }

    /// An initializer: a value, an expression or `{ ... }` lists; returns
    /// the number of leaf values.
    fn initializer(&mut self) -> Result<u64, Error> {
        let line = self.line();
        let mut depth = 0usize;
        let mut values = 0u64;
        let mut in_value = false;
        loop {
            match self.peek() {
                None => return err(line, "initializer does not end"),
                Some(Tok::Punct('{')) => depth += 1,
                Some(Tok::Punct('}')) => {
                    if depth == 0 {
                        return err(self.line(), "unbalanced `}` in initializer");
                    }
                    depth -= 1;
                }
                Some(Tok::Punct(',')) if depth == 0 => break,
                Some(Tok::Punct(';')) if depth == 0 => break,
                Some(Tok::Punct(';')) => return err(self.line(), "initializer list is not closed"),
                Some(Tok::Punct(',')) => {
                    in_value = false;
                }
                Some(_) => {
                    if !in_value {
                        values += 1;
                        in_value = true;
                    }
                }
            }
            if matches!(self.peek(), Some(Tok::Punct('{' | '}'))) {
                in_value = false;
            }
            self.pos += 1;
        }
        Ok(values)
    }
}

/// Reads the kernels and variables of a PTX image (text up to the first NUL).
pub(crate) fn scan(image: &[u8]) -> Result<Module, Error> {
    let src = text(image);
    if src.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(Error::Empty);
    }
    let toks = tokenize(src)?;
    Parser { toks, pos: 0 }.module()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(k: &KernelInfo) -> Vec<(u32, u32)> {
        k.params.as_ref().unwrap().iter().map(|p| (p.offset, p.size)).collect()
    }

    #[test]
    fn params_and_globals() {
        let src = b".version 9.0\n.target sm_90\n.address_size 64\n\
            .global .align 4 .b8 table[64];\n.visible .const .align 4 .f32 k[] = {1.0, 2.0, 3.0};\n\
            .extern .global .align 4 .u32 ext;\n.global .u32 a, b[4] = {1, 2};\n\
            .global .attribute(.managed) .align 4 .b8 shared[40];\n\
            .visible .entry mixed(.param .u8 c, .param .align 8 .b8 p[16], .param .u16 s, \
              .param .u64 .ptr .global .align 8 out, .param .f32 f)\n.maxntid 128, 1, 1\n{ ret; }\n\
            .extern .entry ext_k(.param .u32 x);\n\
            .func (.param .b32 r) helper(.param .b32 x) { ret; }\n.entry none { ret; }\n";
        let m = scan(src).unwrap();
        let names: Vec<_> = m.kernels.iter().map(|k| k.name.as_str()).collect();
        assert_eq!(names, ["mixed", "none"]);
        assert_eq!(layout(&m.kernels[0]), [(0, 1), (8, 16), (24, 2), (32, 8), (40, 4)]);
        assert!(layout(&m.kernels[1]).is_empty());
        let g: Vec<_> = m.globals.iter().map(|g| (g.name.as_str(), g.size)).collect();
        assert_eq!(g, [("table", 64), ("k", 12), ("a", 4), ("b", 16), ("shared", 40)]);
    }

    #[test]
    fn malformed() {
        for src in [
            &b".version 9.0\n.entry k(.param .u64 a { ret; }"[..],
            b".version 9.0\n.entry k(.param .q64 a) { ret; }",
            b".version 9.0\n.entry k() { ret; ",
            b".version 9.0\n.entry k() { ret; }\n.entry k() { ret; }",
            b".version 9.0\n.entry k(.param .u8 a[40000]) { ret; }",
            b".version 9.0\n/* open",
            b".target sm_90\n",
            b".version 9.0\n.global .u32 g[];",
        ] {
            assert!(
                matches!(scan(src), Err(Error::Ptx { .. })),
                "{:?}",
                String::from_utf8_lossy(src)
            );
        }
        assert!(matches!(scan(b"  \n"), Err(Error::Empty)));
    }
}
