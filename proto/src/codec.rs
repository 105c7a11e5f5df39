//! The message codec: bincode 2 over serde, kept behind this one module so it
//! can be swapped without touching message definitions or transports.
//!
//! bincode 3.0.0 on crates.io is a tombstone (its source is a
//! `compile_error!`); 2.0.1 is final and pinned exactly in the workspace.

use crate::error::ProtoError;
use serde::{de::DeserializeOwned, Serialize};

/// Largest encoded message (not counting a frame's bulk tail) either side
/// accepts. Messages are small: handles, sizes, names, attribute lists.
pub const MAX_MESSAGE_BYTES: usize = 1 << 20;

fn config() -> impl bincode::config::Config {
    bincode::config::standard()
        .with_little_endian()
        .with_variable_int_encoding()
        .with_limit::<MAX_MESSAGE_BYTES>()
}

/// Encode `value`, appending to `out`.
pub fn encode_into<T: Serialize>(value: &T, out: &mut Vec<u8>) -> Result<(), ProtoError> {
    bincode::serde::encode_into_std_write(value, out, config())
        .map(|_| ())
        .map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Encode `value` into a fresh buffer.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, ProtoError> {
    bincode::serde::encode_to_vec(value, config()).map_err(|e| ProtoError::Encode(e.to_string()))
}

/// Decode exactly one value from `bytes`; trailing bytes are an error, so a
/// message can never smuggle unparsed data.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ProtoError> {
    let (value, used) =
        bincode::serde::decode_from_slice(bytes, config()).map_err(|e| ProtoError::Decode(e.to_string()))?;
    if used != bytes.len() {
        return Err(ProtoError::Decode(format!(
            "{} trailing bytes after message",
            bytes.len() - used
        )));
    }
    Ok(value)
}
