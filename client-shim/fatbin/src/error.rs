//! The one error type of this crate.

/// Why an image, or a part of one, was refused.
///
/// Every variant names the structure or field at fault and what was expected,
/// so a log line is enough to tell a corrupt image from an unsupported one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// No bytes at all (or a PTX string that is empty).
    #[error("the image is empty")]
    Empty,

    /// The first bytes match none of the known image formats.
    #[error(
        "unknown image format (first bytes {prefix:02x?}): expected a fat-binary wrapper (magic 0x466243b1), \
         a fat binary (magic 0xba55ed50), an ELF cubin (\\x7fELF) or PTX text"
    )]
    UnknownFormat {
        /// Up to 8 leading bytes of the image.
        prefix: Vec<u8>,
    },

    /// A structure runs past the end of the bytes given.
    #[error("{what} is truncated: it needs {needed} bytes but only {available} are present")]
    Truncated {
        what: &'static str,
        needed: u64,
        available: u64,
    },

    /// A header field holds a value this parser does not accept.
    #[error("{field} is {found:#x}; expected {expected}")]
    BadField {
        field: &'static str,
        found: u64,
        expected: &'static str,
    },

    /// A declared size is above what this crate accepts.
    #[error("{what} declares {size} bytes, more than the limit of {limit} bytes")]
    TooLarge { what: &'static str, size: u64, limit: u64 },

    /// The wrapper holds only pointers: the fat binary it points to has to
    /// be read from memory first.
    #[error("a fat-binary wrapper only points at a fat binary; pass the fat binary it points to instead")]
    WrapperNotImage,

    /// A compressed fat-binary entry did not decompress.
    #[error("{codec} payload of the sm_{arch} {kind} entry does not decompress: {reason}")]
    Decompress {
        codec: &'static str,
        kind: &'static str,
        arch: u32,
        reason: String,
    },

    /// PTX text that cannot be read.
    #[error("PTX line {line}: {message}")]
    Ptx { line: usize, message: String },

    /// An ELF image whose structure is inconsistent.
    #[error("ELF: {0}")]
    Elf(String),
}
