//! Fat binaries (magic `0xBA55ED50`) and the wrapper that points at them
//! (magic `0x466243B1`).
//!
//! A fat binary is a 16-byte header followed by entries, each an entry
//! header and a payload: a cubin ELF image or PTX text for one
//! architecture, possibly compressed with LZ4 (block format) or zstd.
//!
//! ```text
//! fat binary header    u32 magic, u16 version (1), u16 header_size, u64 fat_size
//! entry header         u16 kind, u16 version, u32 header_size, u64 payload_size,
//!                      u32 compressed_size, u32 -, u32 binary version,
//!                      u32 sm arch, u32 -, u32 -, u64 flags, u64 -, u64 uncompressed_size
//! ```
//!
//! Linkers concatenate the fat binaries of several translation units into
//! one `.nv_fatbin` section; [`parse_fatbins`] walks such a region.

use std::borrow::Cow;
use std::io::Read;

use crate::read::{add, slice, u16_at, u32_at, u64_at};
use crate::{Error, LenQuery, MAX_IMAGE_LEN};

/// Magic number of a fat binary, little-endian.
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Magic number of the fat-binary wrapper (`__fatBinC_Wrapper_t`) that
/// cudart hands to the driver.
pub const WRAPPER_MAGIC: u32 = 0x4662_43B1;
/// Size of the fat-binary header.
pub const FATBIN_HEADER_LEN: u64 = 16;
/// Size of the wrapper: magic, version, data pointer, second pointer.
pub const WRAPPER_LEN: u64 = 24;
/// Size of the fixed part of an entry header (PTX entries carry more).
pub const ENTRY_HEADER_MIN_LEN: u64 = 64;
/// Entry flag: the payload is LZ4-compressed (block format).
pub const FLAG_LZ4: u64 = 0x2000;
/// Entry flag: the payload is a zstd frame.
pub const FLAG_ZSTD: u64 = 0x8000;
/// Entry flag: 64-bit code.
pub const FLAG_64BIT: u64 = 0x1;
/// Largest decompressed payload [`Entry::payload`] produces (1 GiB).
pub const MAX_PAYLOAD_LEN: u64 = 1 << 30;

/// A fat-binary wrapper as cudart passes it to `__cudaRegisterFatBinary`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wrapper {
    /// 1: `data` points at a fat binary; 2: at the device-linked fat
    /// binary of relocatable device code.
    pub version: u32,
    /// Address of the fat binary in the process that holds it.
    pub data: u64,
    /// Address of a file name (version 1), unused by the driver; in
    /// version 2 the address of the array of prelinked fat binaries.
    pub filename_or_fatbins: u64,
}

/// Reads a wrapper; the caller follows its pointers itself. In version 2
/// (relocatable device code, `nvcc -rdc`), `data` is the device-linked fat
/// binary and `filename_or_fatbins` a NULL-terminated array of the
/// objects' own fat binaries, which a driver links itself when the linked
/// one holds no code for its GPU (PTX-only builds leave it empty).
pub fn parse_wrapper(bytes: &[u8]) -> Result<Wrapper, Error> {
    const WHAT: &str = "fat-binary wrapper";
    let magic = u32_at(bytes, 0, WHAT)?;
    if magic != WRAPPER_MAGIC {
        return Err(Error::BadField {
            field: "fat-binary wrapper magic",
            found: magic.into(),
            expected: "0x466243b1",
        });
    }
    let version = u32_at(bytes, 4, WHAT)?;
    let data = u64_at(bytes, 8, WHAT)?;
    let filename_or_fatbins = u64_at(bytes, 16, WHAT)?;
    match version {
        1 | 2 => Ok(Wrapper {
            version,
            data,
            filename_or_fatbins,
        }),
        v => Err(Error::BadField {
            field: "fat-binary wrapper version",
            found: v.into(),
            expected: "1 or 2",
        }),
    }
}

/// Fat-binary header fields, from a prefix of at least 16 bytes.
fn header(bytes: &[u8]) -> Result<(u16, u16, u64), Error> {
    const WHAT: &str = "fat-binary header";
    let magic = u32_at(bytes, 0, WHAT)?;
    if magic != FATBIN_MAGIC {
        return Err(Error::BadField {
            field: "fat-binary magic",
            found: magic.into(),
            expected: "0xba55ed50",
        });
    }
    let version = u16_at(bytes, 4, WHAT)?;
    if version != 1 {
        return Err(Error::BadField {
            field: "fat-binary version",
            found: version.into(),
            expected: "1",
        });
    }
    let header_size = u16_at(bytes, 6, WHAT)?;
    if u64::from(header_size) < FATBIN_HEADER_LEN {
        return Err(Error::BadField {
            field: "fat-binary header_size",
            found: header_size.into(),
            expected: "at least 16",
        });
    }
    let fat_size = u64_at(bytes, 8, WHAT)?;
    let total = add(u64::from(header_size), fat_size, "fat binary")?;
    if total > MAX_IMAGE_LEN {
        return Err(Error::TooLarge {
            what: "fat binary (header_size + fat_size)",
            size: total,
            limit: MAX_IMAGE_LEN,
        });
    }
    Ok((version, header_size, fat_size))
}

/// [`crate::required_len`] for a prefix that starts with the fat-binary magic.
pub(crate) fn required_len(prefix: &[u8]) -> Result<LenQuery, Error> {
    if (prefix.len() as u64) < FATBIN_HEADER_LEN {
        return Ok(LenQuery::NeedAtLeast(FATBIN_HEADER_LEN));
    }
    let (_, header_size, fat_size) = header(prefix)?;
    Ok(LenQuery::Exact(u64::from(header_size) + fat_size))
}

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// PTX text (kind 1).
    Ptx,
    /// A cubin ELF image (kind 2).
    Elf,
    /// Anything else (kind 4 is LTO intermediate code, for instance).
    Other(u16),
}

impl EntryKind {
    fn from_raw(kind: u16) -> Self {
        match kind {
            1 => EntryKind::Ptx,
            2 => EntryKind::Elf,
            k => EntryKind::Other(k),
        }
    }

    /// Short lower-case name for messages.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Ptx => "PTX",
            EntryKind::Elf => "ELF",
            EntryKind::Other(_) => "non-code",
        }
    }
}

/// How an entry's payload is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    /// LZ4 block format (`--compress-mode=speed`).
    Lz4,
    /// A zstd frame (`--compress-mode=default|size|balance`).
    Zstd,
}

/// One entry of a fat binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry<'a> {
    pub kind: EntryKind,
    /// Entry header version (0x101 in current toolkits).
    pub version: u16,
    pub header_size: u32,
    /// Bytes of payload after the header (padded to 8; the stored,
    /// possibly compressed, form).
    pub payload_size: u64,
    /// Bytes of compressed data at the start of the payload (0 when the
    /// payload is not compressed).
    pub compressed_size: u32,
    /// `major * 10 + minor` of the target architecture: 90 for `sm_90`.
    pub sm_arch: u32,
    pub flags: u64,
    /// Size of the decompressed payload (0 when not compressed).
    pub uncompressed_size: u64,
    /// Offset of this entry's header from the start of its fat binary.
    pub offset: u64,
    /// The payload as stored.
    raw: &'a [u8],
}

impl<'a> Entry<'a> {
    /// The compression named by the flags; both bits set is an error.
    pub fn compression(&self) -> Result<Compression, Error> {
        match (self.flags & FLAG_LZ4 != 0, self.flags & FLAG_ZSTD != 0) {
            (false, false) => Ok(Compression::None),
            (true, false) => Ok(Compression::Lz4),
            (false, true) => Ok(Compression::Zstd),
            (true, true) => Err(Error::BadField {
                field: "fat-binary entry flags",
                found: self.flags,
                expected: "at most one of LZ4 (0x2000) and zstd (0x8000)",
            }),
        }
    }

    /// Whether the payload is compressed (by either codec).
    pub fn is_compressed(&self) -> bool {
        self.flags & (FLAG_LZ4 | FLAG_ZSTD) != 0
    }

    /// The payload as stored (compressed or not, with its padding).
    pub fn raw_payload(&self) -> &'a [u8] {
        self.raw
    }

    /// The payload, decompressed when needed, at most [`MAX_PAYLOAD_LEN`] bytes.
    pub fn payload(&self) -> Result<Cow<'a, [u8]>, Error> {
        self.payload_with_limit(MAX_PAYLOAD_LEN)
    }

    /// The payload, refusing any entry that declares more than `limit`
    /// decompressed bytes. Decompression never produces more than the
    /// entry's declared uncompressed size, and a stream that ends early
    /// or runs long is an error.
    pub fn payload_with_limit(&self, limit: u64) -> Result<Cow<'a, [u8]>, Error> {
        let codec = match self.compression()? {
            Compression::None => return Ok(Cow::Borrowed(self.raw)),
            Compression::Lz4 => "LZ4",
            Compression::Zstd => "zstd",
        };
        let declared = self.uncompressed_size;
        if declared > limit {
            return Err(Error::TooLarge {
                what: "decompressed fat-binary entry",
                size: declared,
                limit,
            });
        }
        let input = slice(
            self.raw,
            0,
            u64::from(self.compressed_size),
            "compressed payload of a fat-binary entry",
        )?;
        let fail = |reason: String| Error::Decompress {
            codec,
            kind: self.kind.name(),
            arch: self.sm_arch,
            reason,
        };
        let out = match self.compression()? {
            Compression::Lz4 => {
                // An LZ4 sequence expands at most ~255 times; a larger claim
                // is corrupt and must not size an allocation.
                let bound = (input.len() as u64).saturating_mul(255).saturating_add(16);
                if declared > bound {
                    return Err(fail(format!(
                        "declares {declared} bytes from {} compressed bytes, beyond what LZ4 can expand to",
                        input.len()
                    )));
                }
                let mut out = vec![0u8; declared as usize];
                let n = lz4_flex::block::decompress_into(input, &mut out).map_err(|e| fail(e.to_string()))?;
                out.truncate(n);
                out
            }
            _ => {
                let mut decoder = ruzstd::decoding::StreamingDecoder::new(input).map_err(|e| fail(e.to_string()))?;
                let mut out = Vec::new();
                // One byte past the declared size tells a long stream apart.
                (&mut decoder)
                    .take(declared + 1)
                    .read_to_end(&mut out)
                    .map_err(|e| fail(e.to_string()))?;
                out
            }
        };
        if out.len() as u64 != declared {
            return Err(fail(format!(
                "produced {}{} bytes, the entry header declares {declared}",
                out.len(),
                if out.len() as u64 > declared { " or more" } else { "" }
            )));
        }
        Ok(Cow::Owned(out))
    }
}

/// A parsed fat binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatBinary<'a> {
    pub version: u16,
    pub header_size: u16,
    /// Bytes after the header.
    pub fat_size: u64,
    pub entries: Vec<Entry<'a>>,
}

impl FatBinary<'_> {
    /// Bytes the fat binary occupies: `header_size + fat_size`.
    pub fn len(&self) -> u64 {
        u64::from(self.header_size) + self.fat_size
    }

    /// Whether it has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether a device of compute capability `major.minor` can run some
    /// entry: PTX of that architecture or an earlier one (the driver
    /// compiles it), or an ELF of the same major version and a minor one
    /// no later than the device's.
    pub fn runs_on(&self, major: u32, minor: u32) -> bool {
        self.entries.iter().any(|e| e.runs_on(major, minor))
    }
}

impl Entry<'_> {
    /// Whether a device of compute capability `major.minor` can load this
    /// entry: PTX of that architecture or an earlier one, or an ELF of the
    /// same major version and a minor one no later than the device's.
    pub fn runs_on(&self, major: u32, minor: u32) -> bool {
        match self.kind {
            EntryKind::Ptx => self.sm_arch <= major * 10 + minor,
            EntryKind::Elf => self.sm_arch / 10 == major && self.sm_arch % 10 <= minor,
            EntryKind::Other(_) => false,
        }
    }
}

/// The fat binary at the start of `bytes` with only the entries that a
/// device of one of the compute capabilities `devices` can load (see
/// [`Entry::runs_on`]), in their order, bytes unchanged: what a driver of
/// such devices may pick from is all there, and nothing else. `None` when
/// it would keep every entry or none (the driver then judges the image
/// whole), or when an entry is not a multiple of 8 bytes long (the entries
/// kept would not stay aligned).
pub fn only_for(bytes: &[u8], devices: &[(u32, u32)]) -> Result<Option<Vec<u8>>, Error> {
    let fatbin = parse_fatbin(bytes)?;
    let kept: Vec<&Entry<'_>> = fatbin
        .entries
        .iter()
        .filter(|e| devices.iter().any(|&(major, minor)| e.runs_on(major, minor)))
        .collect();
    if kept.is_empty() || kept.len() == fatbin.entries.len() {
        return Ok(None);
    }
    let head = usize::from(fatbin.header_size);
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..head]);
    for e in kept {
        let len = u64::from(e.header_size) + e.payload_size;
        if !len.is_multiple_of(8) {
            return Ok(None);
        }
        // `parse_fatbin` checked that each entry lies inside the image.
        out.extend_from_slice(&bytes[e.offset as usize..(e.offset + len) as usize]);
    }
    let fat_size = (out.len() - head) as u64;
    out[8..16].copy_from_slice(&fat_size.to_le_bytes());
    Ok(Some(out))
}

impl<'a> FatBinary<'a> {
    /// The entry a device of compute capability `major.minor` loads, as its
    /// driver picks: an ELF of the same major version and the latest minor
    /// no later than the device's; failing that, the latest PTX no later
    /// than the device (compiled by the driver); `None` when neither is
    /// there. Among equals, the first.
    pub fn entry_for(&self, major: u32, minor: u32) -> Option<&Entry<'a>> {
        let device = major * 10 + minor;
        let best = |fits: &dyn Fn(&Entry<'a>) -> bool| {
            self.entries
                .iter()
                .filter(|e| fits(e))
                .fold(None::<&Entry<'a>>, |b, e| match b {
                    Some(b) if b.sm_arch >= e.sm_arch => Some(b),
                    _ => Some(e),
                })
        };
        best(&|e| e.kind == EntryKind::Elf && e.sm_arch / 10 == major && e.sm_arch % 10 <= minor)
            .or_else(|| best(&|e| e.kind == EntryKind::Ptx && e.sm_arch <= device))
    }
}

/// Parses the fat binary at the start of `bytes` (bytes after its
/// `header_size + fat_size` are not looked at).
pub fn parse_fatbin(bytes: &[u8]) -> Result<FatBinary<'_>, Error> {
    let (version, header_size, fat_size) = header(bytes)?;
    let body = slice(
        bytes,
        u64::from(header_size),
        fat_size,
        "fat binary (header_size + fat_size)",
    )?;
    let mut entries = Vec::new();
    let mut at = 0u64;
    let end = body.len() as u64;
    while at < end {
        let rest = &body[at as usize..];
        if rest.len() < ENTRY_HEADER_MIN_LEN as usize && rest.iter().all(|&b| b == 0) {
            break; // alignment padding
        }
        let entry = entry(body, at, u64::from(header_size))?;
        at = at + u64::from(entry.header_size) + entry.payload_size;
        entries.push(entry);
    }
    Ok(FatBinary {
        version,
        header_size,
        fat_size,
        entries,
    })
}

/// Reads the entry whose header is at `at` in `body` (the bytes after the
/// fat-binary header, which is `base` bytes long).
fn entry(body: &[u8], at: u64, base: u64) -> Result<Entry<'_>, Error> {
    const WHAT: &str = "fat-binary entry header";
    let fixed = slice(body, at, ENTRY_HEADER_MIN_LEN, WHAT)?;
    let kind = u16_at(fixed, 0, WHAT)?;
    let version = u16_at(fixed, 2, WHAT)?;
    let header_size = u32_at(fixed, 4, WHAT)?;
    let payload_size = u64_at(fixed, 8, WHAT)?;
    let compressed_size = u32_at(fixed, 16, WHAT)?;
    let sm_arch = u32_at(fixed, 28, WHAT)?;
    let flags = u64_at(fixed, 40, WHAT)?;
    let uncompressed_size = u64_at(fixed, 56, WHAT)?;
    if kind == 0 {
        return Err(Error::BadField {
            field: "fat-binary entry kind",
            found: 0,
            expected: "1 (PTX), 2 (ELF) or another non-zero kind",
        });
    }
    if u64::from(header_size) < ENTRY_HEADER_MIN_LEN {
        return Err(Error::BadField {
            field: "fat-binary entry header_size",
            found: header_size.into(),
            expected: "at least 64",
        });
    }
    let payload_at = add(at, u64::from(header_size), "fat-binary entry")?;
    let raw = slice(body, payload_at, payload_size, "fat-binary entry payload")?;
    if (flags & (FLAG_LZ4 | FLAG_ZSTD)) != 0 && u64::from(compressed_size) > payload_size {
        return Err(Error::BadField {
            field: "fat-binary entry compressed_size",
            found: compressed_size.into(),
            expected: "no more than the entry's payload_size",
        });
    }
    Ok(Entry {
        kind: EntryKind::from_raw(kind),
        version,
        header_size,
        payload_size,
        compressed_size,
        sm_arch,
        flags,
        uncompressed_size,
        offset: base + at,
        raw,
    })
}

/// Parses every fat binary in a region where linkers placed them one after
/// another (each padded to 8 bytes). Trailing zero bytes are padding.
pub fn parse_fatbins(region: &[u8]) -> Result<Vec<FatBinary<'_>>, Error> {
    let mut out = Vec::new();
    let mut at = 0usize;
    loop {
        let rest = &region[at..];
        if rest.iter().all(|&b| b == 0) {
            if out.is_empty() {
                return Err(Error::Empty);
            }
            return Ok(out);
        }
        let fatbin = parse_fatbin(rest)?;
        // `parse_fatbin` checked that `len()` bytes are present.
        let len = fatbin.len() as usize;
        out.push(fatbin);
        at += len;
        let pad = (8 - at % 8) % 8;
        if region.len() - at < pad || region[at..at + pad].iter().any(|&b| b != 0) {
            // Not 8-aligned padding: the next one (if any) must start here.
            continue;
        }
        at += pad;
    }
}
