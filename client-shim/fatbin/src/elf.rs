//! Cubin ELF images: their length, kernels, parameter layouts and variables.
//!
//! A cubin is a little-endian ELF64 file (machine 190, `EM_CUDA`). Each
//! kernel is a `STT_FUNC` symbol defined in a section `.text.<name>`;
//! its parameter layout is in `.nv.info.<name>` as `EIATTR_KPARAM_INFO`
//! records. An `.nv.info*` section is a list of attribute records, each
//! starting with a 4-byte header:
//!
//! ```text
//! u8 format    1: no value, 2: byte value, 3: u16 value (in the header's
//!              last two bytes), 4: sized value (u16 length, then that many bytes)
//! u8 attribute 0x17 = KPARAM_INFO, 0x0a = PARAM_CBANK, 0x19 = CBANK_PARAM_SIZE, ...
//! u16          the value (format 3) or the length of what follows (format 4)
//! ```
//!
//! A `KPARAM_INFO` value is 12 bytes: `u32` index (0), `u16` ordinal,
//! `u16` byte offset in the parameter buffer, `u32` packed word whose top
//! 14 bits (bits 18..32) are the parameter's size in bytes. Kernels whose
//! parameters pass the old 4 KiB limit (CUDA 12.1 and later allow 32764
//! bytes; PyTorch's foreach and AMP kernels take a 25 KiB tensor list) have
//! `KPARAM_INFO_V2` records (0x45) instead: 12 bytes too, the index, ordinal
//! and offset as before, then a `u16` size in bytes and a `u16` of flags.

use crate::read::{add, mul, slice, u16_at, u32_at, u64_at, u8_at};
use crate::{Error, GlobalInfo, KernelInfo, LenQuery, ParamInfo, MAX_IMAGE_LEN};

const EHDR_LEN: u64 = 64;
const SHDR_LEN: u64 = 64;
const PHDR_LEN: u64 = 56;
const SYM_LEN: u64 = 24;
const SHT_SYMTAB: u32 = 2;
const SHT_NOBITS: u32 = 8;
const STT_OBJECT: u8 = 1;
const STT_FUNC: u8 = 2;
const SHN_LORESERVE: u16 = 0xff00;
const SHN_XINDEX: u16 = 0xffff;
/// `st_other` bit the CUDA toolchain sets on kernel entry points.
const STO_CUDA_ENTRY: u8 = 0x10;
/// Machine number of NVIDIA CUDA code.
pub const EM_CUDA: u16 = 190;

/// `EIATTR_KPARAM_INFO`.
const EIATTR_KPARAM_INFO: u8 = 0x17;
/// `EIATTR_KPARAM_INFO_V2`, of kernels with more than 4 KiB of parameters.
const EIATTR_KPARAM_INFO_V2: u8 = 0x45;
const EIFMT_NVAL: u8 = 1;
const EIFMT_BVAL: u8 = 2;
const EIFMT_HVAL: u8 = 3;
const EIFMT_SVAL: u8 = 4;

/// Header fields that locate the section and program header tables.
struct Header {
    phoff: u64,
    phnum: u64,
    shoff: u64,
    /// 0 with `shoff != 0` means the count is in section 0's `sh_size`.
    shnum: u64,
    shstrndx: u16,
}

fn bad(field: &'static str, found: u64, expected: &'static str) -> Error {
    Error::BadField { field, found, expected }
}

/// Reads and checks the ELF header (from a prefix of at least 64 bytes).
fn header(b: &[u8]) -> Result<Header, Error> {
    const WHAT: &str = "ELF header";
    let ident = slice(b, 0, 16, WHAT)?;
    if &ident[..4] != b"\x7fELF" {
        return Err(bad("ELF magic", u32_at(b, 0, WHAT)?.into(), "\\x7fELF"));
    }
    if ident[4] != 2 {
        return Err(bad(
            "ELF class",
            ident[4].into(),
            "2 (64-bit); 32-bit cubins are not supported",
        ));
    }
    if ident[5] != 1 {
        return Err(bad("ELF data encoding", ident[5].into(), "1 (little-endian)"));
    }
    let phoff = u64_at(b, 32, WHAT)?;
    let shoff = u64_at(b, 40, WHAT)?;
    let phentsize = u16_at(b, 54, WHAT)?;
    let phnum = u16_at(b, 56, WHAT)?;
    let shentsize = u16_at(b, 58, WHAT)?;
    let shnum = u16_at(b, 60, WHAT)?;
    let shstrndx = u16_at(b, 62, WHAT)?;
    if phnum != 0 && u64::from(phentsize) != PHDR_LEN {
        return Err(bad("ELF e_phentsize", phentsize.into(), "56"));
    }
    if (shnum != 0 || shoff != 0) && u64::from(shentsize) != SHDR_LEN {
        return Err(bad("ELF e_shentsize", shentsize.into(), "64"));
    }
    Ok(Header {
        phoff,
        phnum: phnum.into(),
        shoff,
        shnum: shnum.into(),
        shstrndx,
    })
}

fn table_end(off: u64, count: u64, entry: u64, what: &'static str) -> Result<u64, Error> {
    if count == 0 {
        return Ok(0);
    }
    add(off, mul(count, entry, what)?, what)
}

fn capped(len: u64, what: &'static str) -> Result<u64, Error> {
    if len > MAX_IMAGE_LEN {
        return Err(Error::TooLarge {
            what,
            size: len,
            limit: MAX_IMAGE_LEN,
        });
    }
    Ok(len)
}

/// Number of section headers, resolving extended numbering.
fn section_count(b: &[u8], h: &Header) -> Result<u64, Error> {
    if h.shnum == 0 && h.shoff != 0 {
        return u64_at(b, add(h.shoff, 32, "ELF section header 0")?, "ELF section header 0");
    }
    Ok(h.shnum)
}

/// [`crate::required_len`] for a prefix that starts with `\x7fELF`.
pub(crate) fn required_len(prefix: &[u8]) -> Result<LenQuery, Error> {
    let have = prefix.len() as u64;
    if have < EHDR_LEN {
        return Ok(LenQuery::NeedAtLeast(EHDR_LEN));
    }
    let h = header(prefix)?;
    if h.shnum == 0 && h.shoff != 0 {
        let first = capped(
            add(h.shoff, SHDR_LEN, "ELF section header table")?,
            "ELF section header table",
        )?;
        if have < first {
            return Ok(LenQuery::NeedAtLeast(first));
        }
    }
    let shnum = section_count(prefix, &h)?;
    let sh_end = capped(
        table_end(h.shoff, shnum, SHDR_LEN, "ELF section header table")?,
        "ELF section header table",
    )?;
    let ph_end = capped(
        table_end(h.phoff, h.phnum, PHDR_LEN, "ELF program header table")?,
        "ELF program header table",
    )?;
    let tables = sh_end.max(ph_end).max(EHDR_LEN);
    if have < tables {
        return Ok(LenQuery::NeedAtLeast(tables));
    }
    let mut end = tables;
    for i in 0..shnum {
        let s = section(prefix, h.shoff, i)?;
        if s.kind != SHT_NOBITS {
            end = end.max(add(s.offset, s.size, "ELF section")?);
        }
    }
    for i in 0..h.phnum {
        let at = h.phoff + i * PHDR_LEN;
        let offset = u64_at(prefix, at + 8, "ELF program header")?;
        let filesz = u64_at(prefix, at + 32, "ELF program header")?;
        end = end.max(add(offset, filesz, "ELF segment")?);
    }
    Ok(LenQuery::Exact(capped(
        end,
        "ELF image (end of its last section or segment)",
    )?))
}

#[derive(Debug, Clone, Copy)]
struct Section {
    name: u32,
    kind: u32,
    offset: u64,
    size: u64,
    link: u32,
}

fn section(b: &[u8], shoff: u64, i: u64) -> Result<Section, Error> {
    const WHAT: &str = "ELF section header";
    let at = add(shoff, mul(i, SHDR_LEN, WHAT)?, WHAT)?;
    let raw = slice(b, at, SHDR_LEN, WHAT)?;
    Ok(Section {
        name: u32_at(raw, 0, WHAT)?,
        kind: u32_at(raw, 4, WHAT)?,
        offset: u64_at(raw, 24, WHAT)?,
        size: u64_at(raw, 32, WHAT)?,
        link: u32_at(raw, 40, WHAT)?,
    })
}

/// The fields of an ELF symbol this crate uses.
struct Symbol {
    name: String,
    /// `STT_*` (low nibble of `st_info`).
    kind: u8,
    other: u8,
    shndx: u16,
    size: u64,
}

/// A parsed cubin: its sections with names resolved.
pub(crate) struct Elf<'a> {
    bytes: &'a [u8],
    sections: Vec<(String, Section)>,
}

/// A NUL-terminated name at `offset` in a string table.
fn name_at(strtab: &[u8], offset: u32, what: &str) -> Result<String, Error> {
    let rest = strtab
        .get(offset as usize..)
        .ok_or_else(|| Error::Elf(format!("{what} name offset {offset} is outside its string table")))?;
    let end = rest
        .iter()
        .position(|&b| b == 0)
        .ok_or_else(|| Error::Elf(format!("{what} name at offset {offset} is not NUL-terminated")))?;
    String::from_utf8(rest[..end].to_vec())
        .map_err(|_| Error::Elf(format!("{what} name at offset {offset} is not UTF-8")))
}

impl<'a> Elf<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Self, Error> {
        if let LenQuery::NeedAtLeast(n) | LenQuery::Exact(n) = required_len(bytes)? {
            if n > bytes.len() as u64 {
                return Err(Error::Truncated {
                    what: "ELF image (its headers, sections and segments)",
                    needed: n,
                    available: bytes.len() as u64,
                });
            }
        }
        let h = header(bytes)?;
        let machine = u16_at(bytes, 18, "ELF header")?;
        if machine != EM_CUDA {
            return Err(bad("ELF e_machine", machine.into(), "190 (NVIDIA CUDA)"));
        }
        let shnum = section_count(bytes, &h)?;
        // Every header must be present, so the count is bounded by the image.
        slice(
            bytes,
            h.shoff,
            mul(shnum, SHDR_LEN, "ELF section header table")?,
            "ELF section header table",
        )?;
        let raw: Vec<Section> = (0..shnum)
            .map(|i| section(bytes, h.shoff, i))
            .collect::<Result<_, _>>()?;
        let shstrndx = if h.shstrndx == SHN_XINDEX {
            raw.first().map(|s| u64::from(s.link)).unwrap_or(0)
        } else {
            u64::from(h.shstrndx)
        };
        let mut sections = Vec::with_capacity(raw.len());
        if shnum > 0 {
            let strtab_hdr = raw.get(shstrndx as usize).ok_or_else(|| {
                Error::Elf(format!(
                    "section name table index {shstrndx} is not below the {shnum} sections"
                ))
            })?;
            let strtab = slice(bytes, strtab_hdr.offset, strtab_hdr.size, "ELF section name table")?;
            for s in raw {
                sections.push((name_at(strtab, s.name, "section")?, s));
            }
        }
        Ok(Elf { bytes, sections })
    }

    fn data(&self, s: &Section, what: &'static str) -> Result<&'a [u8], Error> {
        if s.kind == SHT_NOBITS {
            return Ok(&[]);
        }
        slice(self.bytes, s.offset, s.size, what)
    }

    fn section_named(&self, name: &str) -> Option<&Section> {
        self.sections.iter().find(|(n, _)| n == name).map(|(_, s)| s)
    }

    /// Every symbol but the null one.
    fn symbols(&self) -> Result<Vec<Symbol>, Error> {
        let mut out = Vec::new();
        for (_, s) in self.sections.iter().filter(|(_, s)| s.kind == SHT_SYMTAB) {
            let data = self.data(s, "ELF symbol table")?;
            let (_, strs) = self.sections.get(s.link as usize).ok_or_else(|| {
                Error::Elf(format!(
                    "symbol table links to string table {} which does not exist",
                    s.link
                ))
            })?;
            let strtab = self.data(strs, "ELF symbol string table")?;
            for i in 0..data.len() as u64 / SYM_LEN {
                let sym = &data[(i * SYM_LEN) as usize..((i + 1) * SYM_LEN) as usize];
                const WHAT: &str = "ELF symbol";
                let name = u32_at(sym, 0, WHAT)?;
                let info = u8_at(sym, 4, WHAT)?;
                let other = u8_at(sym, 5, WHAT)?;
                let shndx = u16_at(sym, 6, WHAT)?;
                let size = u64_at(sym, 16, WHAT)?;
                if i == 0 {
                    continue;
                }
                out.push(Symbol {
                    name: name_at(strtab, name, "symbol")?,
                    kind: info & 0xf,
                    other,
                    shndx,
                    size,
                });
            }
        }
        Ok(out)
    }

    /// Kernels: `STT_FUNC` symbols in `.text.<name>` that are marked as
    /// entry points or have an `.nv.info.<name>` section.
    pub(crate) fn kernels(&self) -> Result<Vec<KernelInfo>, Error> {
        let mut out: Vec<KernelInfo> = Vec::new();
        for Symbol {
            name,
            kind,
            other,
            shndx,
            ..
        } in self.symbols()?
        {
            if kind != STT_FUNC || shndx == 0 || shndx >= SHN_LORESERVE {
                continue;
            }
            let Some((section_name, _)) = self.sections.get(usize::from(shndx)) else {
                return Err(Error::Elf(format!(
                    "symbol `{name}` is in section {shndx}, which does not exist"
                )));
            };
            if section_name.strip_prefix(".text.") != Some(name.as_str()) {
                continue;
            }
            let info = self.section_named(&format!(".nv.info.{name}"));
            if other & STO_CUDA_ENTRY == 0 && info.is_none() {
                continue; // a device function, not a kernel
            }
            if out.iter().any(|k| k.name == name) {
                continue;
            }
            let params = match info {
                Some(s) => Some(kparams(self.data(s, "ELF .nv.info section")?, &name)?),
                None => None,
            };
            out.push(KernelInfo { name, params });
        }
        Ok(out)
    }

    /// Variables: defined `STT_OBJECT` symbols with a size.
    pub(crate) fn globals(&self) -> Result<Vec<GlobalInfo>, Error> {
        let mut out: Vec<GlobalInfo> = Vec::new();
        for Symbol {
            name,
            kind,
            shndx,
            size,
            ..
        } in self.symbols()?
        {
            if kind != STT_OBJECT || shndx == 0 || shndx >= SHN_LORESERVE || size == 0 {
                continue;
            }
            if name.starts_with(['.', '$']) || out.iter().any(|g| g.name == name) {
                continue;
            }
            out.push(GlobalInfo { name, size });
        }
        Ok(out)
    }
}

/// The parameter layout from a kernel's `.nv.info.<name>` records, in
/// parameter order.
fn kparams(info: &[u8], kernel: &str) -> Result<Vec<ParamInfo>, Error> {
    let mut by_ordinal: Vec<(u16, ParamInfo)> = Vec::new();
    let mut at = 0usize;
    while at < info.len() {
        let what = "an .nv.info record";
        let format = u8_at(info, at as u64, what)?;
        let attribute = u8_at(info, at as u64 + 1, what)?;
        let value = u16_at(info, at as u64 + 2, what)?;
        match format {
            EIFMT_NVAL | EIFMT_BVAL | EIFMT_HVAL => at += 4,
            EIFMT_SVAL => {
                let data = slice(info, at as u64 + 4, value.into(), "an .nv.info record value")?;
                if attribute == EIATTR_KPARAM_INFO || attribute == EIATTR_KPARAM_INFO_V2 {
                    if data.len() < 12 {
                        return Err(Error::Elf(format!(
                            "KPARAM_INFO record of `{kernel}` is {} bytes, expected 12",
                            data.len()
                        )));
                    }
                    let ordinal = u16_at(data, 4, what)?;
                    let offset = u16_at(data, 6, what)?;
                    let size = if attribute == EIATTR_KPARAM_INFO {
                        u32_at(data, 8, what)? >> 18
                    } else {
                        u16_at(data, 8, what)?.into()
                    };
                    if by_ordinal.iter().any(|(o, _)| *o == ordinal) {
                        return Err(Error::Elf(format!("`{kernel}` describes parameter {ordinal} twice")));
                    }
                    by_ordinal.push((
                        ordinal,
                        ParamInfo {
                            offset: offset.into(),
                            size,
                        },
                    ));
                }
                at += 4 + data.len();
            }
            f => {
                return Err(Error::Elf(format!(
                    "unknown .nv.info record format {f} (attribute {attribute:#x}) for `{kernel}` at byte {at}"
                )))
            }
        }
    }
    by_ordinal.sort_by_key(|(o, _)| *o);
    for (i, (o, _)) in by_ordinal.iter().enumerate() {
        if usize::from(*o) != i {
            return Err(Error::Elf(format!("`{kernel}` has no layout for parameter {i}")));
        }
    }
    Ok(by_ordinal.into_iter().map(|(_, p)| p).collect())
}
