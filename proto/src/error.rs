//! Errors of the protocol layer.

use thiserror::Error;

/// Anything that can go wrong reading, writing or interpreting frames.
#[derive(Debug, Error)]
pub enum ProtoError {
    #[error("frame of {size} bytes exceeds the limit of {limit} bytes")]
    FrameTooLarge { size: u64, limit: u64 },
    #[error("malformed frame: {0}")]
    Malformed(String),
    #[error("message could not be encoded: {0}")]
    Encode(String),
    #[error("message could not be decoded: {0}")]
    Decode(String),
    #[error("protocol version mismatch: peer speaks {peer}, this side speaks {ours}")]
    VersionMismatch { peer: u32, ours: u32 },
    #[error("handshake refused by server: {0}")]
    Refused(String),
    #[error("bad server address {url:?}: {reason}")]
    BadAddress { url: String, reason: String },
    #[error("TLS setup failed: {0}")]
    Tls(String),
    #[error("connection to {peer} failed: {reason}")]
    Connect { peer: String, reason: String },
    #[error("connection closed by peer")]
    Closed,
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl ProtoError {
    /// Whether the error means the peer went away rather than misbehaved.
    pub fn is_disconnect(&self) -> bool {
        match self {
            ProtoError::Closed => true,
            ProtoError::Io(e) => matches!(
                e.kind(),
                std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }
}
