//! Bounds-checked little-endian field reads.
//!
//! Every read names the structure it belongs to, so that running off the end
//! of the image becomes an [`Error::Truncated`] that says what was cut short.

use crate::Error;

/// `len` bytes of `bytes` at `offset`, or a truncation error naming `what`.
pub(crate) fn slice<'a>(bytes: &'a [u8], offset: u64, len: u64, what: &'static str) -> Result<&'a [u8], Error> {
    let end = offset.checked_add(len).ok_or(Error::Truncated {
        what,
        needed: u64::MAX,
        available: bytes.len() as u64,
    })?;
    if end > bytes.len() as u64 {
        return Err(Error::Truncated {
            what,
            needed: end,
            available: bytes.len() as u64,
        });
    }
    // Both bounds fit in `bytes.len()`, hence in `usize`.
    Ok(&bytes[offset as usize..end as usize])
}

fn array<const N: usize>(bytes: &[u8], offset: u64, what: &'static str) -> Result<[u8; N], Error> {
    let s = slice(bytes, offset, N as u64, what)?;
    let mut out = [0u8; N];
    out.copy_from_slice(s);
    Ok(out)
}

pub(crate) fn u8_at(bytes: &[u8], offset: u64, what: &'static str) -> Result<u8, Error> {
    array::<1>(bytes, offset, what).map(|a| a[0])
}

pub(crate) fn u16_at(bytes: &[u8], offset: u64, what: &'static str) -> Result<u16, Error> {
    array(bytes, offset, what).map(u16::from_le_bytes)
}

pub(crate) fn u32_at(bytes: &[u8], offset: u64, what: &'static str) -> Result<u32, Error> {
    array(bytes, offset, what).map(u32::from_le_bytes)
}

pub(crate) fn u64_at(bytes: &[u8], offset: u64, what: &'static str) -> Result<u64, Error> {
    array(bytes, offset, what).map(u64::from_le_bytes)
}

/// `a + b`, or an overflow reported as a size above the image limit.
pub(crate) fn add(a: u64, b: u64, what: &'static str) -> Result<u64, Error> {
    a.checked_add(b).ok_or(Error::TooLarge {
        what,
        size: u64::MAX,
        limit: crate::MAX_IMAGE_LEN,
    })
}

/// `a * b`, or an overflow reported as a size above the image limit.
pub(crate) fn mul(a: u64, b: u64, what: &'static str) -> Result<u64, Error> {
    a.checked_mul(b).ok_or(Error::TooLarge {
        what,
        size: u64::MAX,
        limit: crate::MAX_IMAGE_LEN,
    })
}
