//! Parsing of the code images CUDA programs hand to the driver: fat-binary
//! wrappers, fat binaries, cubin ELF images and PTX text.
//!
//! The client shim receives these as bare pointers. It first asks
//! [`required_len`] how many bytes the image at that pointer occupies
//! (reading more of it as the answer says), copies exactly that, and ships
//! it to a GPU server. It also reads the image locally with [`kernels`] and
//! [`globals`], so kernel and variable look-ups need no round trip.
//!
//! ```text
//! pointer ──required_len──▶ bytes ──detect──▶ Wrapper ──parse_wrapper──▶ pointer to a fat binary
//!                                             FatBinary ──parse_fatbin──▶ entries ──payload──▶ PTX / ELF
//!                                             Elf / Ptx ──kernels, globals──▶ names and parameter layouts
//! ```
//!
//! Everything here is safe code over byte slices: every size is checked
//! against the bytes present and against [`MAX_IMAGE_LEN`], and malformed
//! input is an [`Error`], never a panic.

mod elf;
mod error;
mod fatbin;
mod ptx;
mod read;

pub use error::Error;
pub use fatbin::{
    only_for, parse_fatbin, parse_fatbins, parse_wrapper, Compression, Entry, EntryKind, FatBinary, Wrapper,
    FATBIN_MAGIC, FLAG_64BIT, FLAG_LZ4, FLAG_ZSTD, MAX_PAYLOAD_LEN, WRAPPER_LEN, WRAPPER_MAGIC,
};

/// Largest image accepted (4 GiB): anything claiming more is corrupt.
pub const MAX_IMAGE_LEN: u64 = 1 << 32;

const ELF_MAGIC: [u8; 4] = *b"\x7fELF";

/// The format of a code image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImageKind {
    /// `__fatBinC_Wrapper_t`: a pointer to a fat binary, not the code itself.
    Wrapper,
    /// A fat binary: entries of PTX and cubins for several architectures.
    FatBinary,
    /// A cubin: an ELF image for one architecture.
    Elf,
    /// PTX text, NUL-terminated.
    Ptx,
}

/// How many bytes an image occupies, as far as a prefix of it tells.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LenQuery {
    /// The prefix is too short to tell: read at least this many bytes from
    /// the start and ask again. The number never exceeds the length of the
    /// smallest well-formed image of the format seen so far: while the
    /// prefix could still be PTX text it grows one byte at a time, so a
    /// caller never reads past the terminating NUL of a short string.
    NeedAtLeast(u64),
    /// The image is exactly this many bytes long.
    Exact(u64),
    /// PTX: the image runs to (and includes) the first NUL byte.
    NulTerminated,
}

/// A kernel parameter's place in the parameter buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ParamInfo {
    pub offset: u32,
    pub size: u32,
}

/// A kernel an image defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KernelInfo {
    /// The symbol name, mangled as the compiler emitted it.
    pub name: String,
    /// Parameter layout, in parameter order; `None` when the image does not
    /// say (a cubin without `.nv.info` records for the kernel).
    pub params: Option<Vec<ParamInfo>>,
}

impl KernelInfo {
    /// Bytes of the parameter buffer (end of the last parameter).
    pub fn param_bytes(&self) -> Option<u32> {
        self.params
            .as_ref()
            .map(|ps| ps.iter().map(|p| p.offset + p.size).max().unwrap_or(0))
    }
}

/// A module-scope variable (`__device__` or `__constant__`) an image defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GlobalInfo {
    pub name: String,
    pub size: u64,
}

/// What the first bytes say, possibly "not enough bytes yet".
enum Prefix {
    Kind(ImageKind),
    NeedMore(u64),
}

fn looks_like_text(b: u8) -> bool {
    b.is_ascii_graphic() || b.is_ascii_whitespace()
}

fn classify(prefix: &[u8]) -> Result<Prefix, Error> {
    const MAGICS: [([u8; 4], ImageKind); 3] = [
        (WRAPPER_MAGIC.to_le_bytes(), ImageKind::Wrapper),
        (FATBIN_MAGIC.to_le_bytes(), ImageKind::FatBinary),
        (ELF_MAGIC, ImageKind::Elf),
    ];
    if prefix.is_empty() {
        return Ok(Prefix::NeedMore(1));
    }
    for (magic, kind) in MAGICS {
        if prefix.starts_with(&magic) {
            return Ok(Prefix::Kind(kind));
        }
    }
    if prefix.len() < 4 && MAGICS.iter().any(|(m, _)| m.starts_with(prefix)) {
        // Still possibly PTX ("P..."): grow one byte at a time.
        let n = if prefix.iter().all(|&b| looks_like_text(b)) {
            prefix.len() + 1
        } else {
            4
        };
        return Ok(Prefix::NeedMore(n as u64));
    }
    // PTX: optional whitespace, then a comment or a directive.
    match prefix.iter().position(|b| !b.is_ascii_whitespace()) {
        None => Ok(Prefix::NeedMore(prefix.len() as u64 + 1)),
        Some(i) => match prefix[i] {
            0 => Err(Error::Empty),
            b'/' | b'.' => Ok(Prefix::Kind(ImageKind::Ptx)),
            _ => Err(Error::UnknownFormat {
                prefix: prefix.iter().take(8).copied().collect(),
            }),
        },
    }
}

/// The format of an image from its first bytes.
pub fn detect(prefix: &[u8]) -> Result<ImageKind, Error> {
    match classify(prefix)? {
        Prefix::Kind(k) => Ok(k),
        Prefix::NeedMore(_) if prefix.is_empty() => Err(Error::Empty),
        Prefix::NeedMore(n) => Err(Error::Truncated {
            what: "image (too short to tell its format)",
            needed: n,
            available: prefix.len() as u64,
        }),
    }
}

/// How many bytes the image starting with `prefix` occupies.
///
/// A caller holding only a pointer starts with a small prefix (even an
/// empty one) and reads as much as each [`LenQuery::NeedAtLeast`] asks
/// until the answer is [`LenQuery::Exact`] or [`LenQuery::NulTerminated`].
/// A wrapper is [`WRAPPER_LEN`] bytes; a fat binary is `header_size +
/// fat_size` (only the first of several concatenated ones); a cubin ends at
/// the end of its last header table, section or segment. Sizes over
/// [`MAX_IMAGE_LEN`] are refused.
pub fn required_len(prefix: &[u8]) -> Result<LenQuery, Error> {
    match classify(prefix)? {
        Prefix::NeedMore(n) => Ok(LenQuery::NeedAtLeast(n)),
        Prefix::Kind(ImageKind::Wrapper) => {
            if (prefix.len() as u64) < WRAPPER_LEN {
                Ok(LenQuery::NeedAtLeast(WRAPPER_LEN))
            } else {
                parse_wrapper(prefix)?;
                Ok(LenQuery::Exact(WRAPPER_LEN))
            }
        }
        Prefix::Kind(ImageKind::FatBinary) => fatbin::required_len(prefix),
        Prefix::Kind(ImageKind::Elf) => elf::required_len(prefix),
        Prefix::Kind(ImageKind::Ptx) => Ok(LenQuery::NulTerminated),
    }
}

/// Adds `k` to `out` unless a kernel of that name is there; a layout fills
/// in one that was missing.
fn merge_kernel(out: &mut Vec<KernelInfo>, k: KernelInfo) {
    match out.iter_mut().find(|e| e.name == k.name) {
        Some(e) if e.params.is_none() => e.params = k.params,
        Some(_) => {}
        None => out.push(k),
    }
}

fn merge_global(out: &mut Vec<GlobalInfo>, g: GlobalInfo) {
    if !out.iter().any(|e| e.name == g.name) {
        out.push(g);
    }
}

/// Calls `f` with the kind and (decompressed) payload of the PTX and ELF
/// entries of every fat binary in `image`: all of them, or, for a device
/// of compute capability `device` (major, minor), the one entry its
/// driver picks ([`FatBinary::entry_for`]) where there is one.
fn for_each_code_entry(
    image: &[u8],
    device: Option<(u32, u32)>,
    mut f: impl FnMut(EntryKind, &[u8]) -> Result<(), Error>,
) -> Result<(), Error> {
    for fatbin in parse_fatbins(image)? {
        let picked = device.and_then(|(major, minor)| fatbin.entry_for(major, minor));
        for entry in &fatbin.entries {
            let chosen = match picked {
                Some(p) => std::ptr::eq(p, entry),
                None => matches!(entry.kind, EntryKind::Ptx | EntryKind::Elf),
            };
            if chosen {
                f(entry.kind, &entry.payload()?)?;
            }
        }
    }
    Ok(())
}

/// The kernels an image defines, with their parameter layouts.
///
/// For a fat binary this is the union over its PTX and ELF entries (and
/// over concatenated fat binaries), one per name, in first-seen order.
/// A wrapper is refused: it only points at the fat binary.
pub fn kernels(image: &[u8]) -> Result<Vec<KernelInfo>, Error> {
    kernels_of(image, None)
}

/// The kernels of the code a device of compute capability `major.minor`
/// runs from an image. For a fat binary that is, in each of its fat
/// binaries, the one entry the driver picks: the ELF of the device's major
/// version with the latest minor no later than the device's, else the
/// latest PTX no later than the device. Only that entry is decompressed
/// (NCCL's libraries hold a compressed ELF for each of a dozen
/// architectures). A fat binary with no entry for the device is read
/// whole, as [`kernels`] does: the driver refuses it at load.
pub fn kernels_for(image: &[u8], major: u32, minor: u32) -> Result<Vec<KernelInfo>, Error> {
    kernels_of(image, Some((major, minor)))
}

/// [`kernels`], or [`kernels_for`] a device of compute capability `device`.
fn kernels_of(image: &[u8], device: Option<(u32, u32)>) -> Result<Vec<KernelInfo>, Error> {
    match detect(image)? {
        ImageKind::Wrapper => Err(Error::WrapperNotImage),
        ImageKind::Ptx => Ok(ptx::scan(image)?.kernels),
        ImageKind::Elf => elf::Elf::parse(image)?.kernels(),
        ImageKind::FatBinary => {
            let mut out = Vec::new();
            for_each_code_entry(image, device, |kind, payload| {
                let found = match kind {
                    EntryKind::Ptx => ptx::scan(payload)?.kernels,
                    _ => elf::Elf::parse(payload)?.kernels()?,
                };
                for k in found {
                    merge_kernel(&mut out, k);
                }
                Ok(())
            })?;
            Ok(out)
        }
    }
}

/// The module-scope variables an image defines (best effort: `.global` and
/// `.const` PTX variables, `STT_OBJECT` cubin symbols).
pub fn globals(image: &[u8]) -> Result<Vec<GlobalInfo>, Error> {
    match detect(image)? {
        ImageKind::Wrapper => Err(Error::WrapperNotImage),
        ImageKind::Ptx => Ok(ptx::scan(image)?.globals),
        ImageKind::Elf => elf::Elf::parse(image)?.globals(),
        ImageKind::FatBinary => {
            let mut out = Vec::new();
            for_each_code_entry(image, None, |kind, payload| {
                let found = match kind {
                    EntryKind::Ptx => ptx::scan(payload)?.globals,
                    _ => elf::Elf::parse(payload)?.globals()?,
                };
                for g in found {
                    merge_global(&mut out, g);
                }
                Ok(())
            })?;
            Ok(out)
        }
    }
}

/// The PTX text of an image (up to its first NUL), when it is PTX.
pub fn ptx_text(image: &[u8]) -> Option<&[u8]> {
    matches!(detect(image), Ok(ImageKind::Ptx)).then(|| ptx::text(image))
}
