//! Framing: a fixed little-endian header, an encoded message, a raw bulk tail.
//!
//! ```text
//! offset  size  field
//!      0     4  body_len   bytes after the header (message + bulk)
//!      4     4  msg_len    bytes of the encoded message; bulk = body_len - msg_len
//!      8     4  flags      bit 0: the sender waits for a reply (client to server)
//!     12     8  id         request id; replies carry the id of their request
//! ```
//!
//! The bulk tail lets copy payloads and module images travel without being
//! re-encoded: a reader decodes the small message first and then reads the
//! bulk bytes straight into their destination.

use crate::codec;
use crate::error::ProtoError;
use serde::Serialize;
use std::io::{Read, Write};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 20;
/// Flag bit: the client waits for a reply to this request.
pub const FLAG_WANTS_REPLY: u32 = 1;
/// Flag bit (version 15): since its previous request the client took in
/// the notices the server had sent, so the server may send more unasked.
pub const FLAG_NOTICES_TAKEN: u32 = 2;
/// Every flag bit a frame may carry.
const KNOWN_FLAGS: u32 = FLAG_WANTS_REPLY | FLAG_NOTICES_TAKEN;
/// Default cap on a frame's body; both ends enforce their own limit.
pub const DEFAULT_MAX_FRAME: u64 = 64 << 20;
/// Size of the chunks bulk copies are cut into, so that network transfer
/// of one chunk overlaps the device copy of the previous one.
pub const COPY_CHUNK: usize = 1 << 20;
/// Bulk tails up to this size are written with their header in one buffer.
const COALESCE_LIMIT: usize = 64 << 10;

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub id: u64,
    pub flags: u32,
    pub msg_len: u32,
    pub bulk_len: u64,
}

impl FrameHeader {
    pub fn wants_reply(&self) -> bool {
        self.flags & FLAG_WANTS_REPLY != 0
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let body = self.msg_len as u64 + self.bulk_len;
        let mut out = [0u8; HEADER_LEN];
        out[0..4].copy_from_slice(&(body as u32).to_le_bytes());
        out[4..8].copy_from_slice(&self.msg_len.to_le_bytes());
        out[8..12].copy_from_slice(&self.flags.to_le_bytes());
        out[12..20].copy_from_slice(&self.id.to_le_bytes());
        out
    }

    /// Parse and validate a header against `max_body`.
    pub fn decode(bytes: &[u8; HEADER_LEN], max_body: u64) -> Result<FrameHeader, ProtoError> {
        let word = |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        let body = word(0) as u64;
        let msg_len = word(4);
        let flags = word(8);
        let mut id = [0u8; 8];
        id.copy_from_slice(&bytes[12..20]);
        if body > max_body {
            return Err(ProtoError::FrameTooLarge {
                size: body,
                limit: max_body,
            });
        }
        if msg_len as u64 > body {
            return Err(ProtoError::Malformed(format!(
                "message length {msg_len} exceeds body length {body}"
            )));
        }
        if msg_len as usize > codec::MAX_MESSAGE_BYTES {
            return Err(ProtoError::Malformed(format!(
                "message length {msg_len} exceeds the message limit {}",
                codec::MAX_MESSAGE_BYTES
            )));
        }
        if msg_len == 0 {
            return Err(ProtoError::Malformed("empty message".into()));
        }
        if flags & !KNOWN_FLAGS != 0 {
            return Err(ProtoError::Malformed(format!("unknown flags {flags:#x}")));
        }
        Ok(FrameHeader {
            id: u64::from_le_bytes(id),
            flags,
            msg_len,
            bulk_len: body - msg_len as u64,
        })
    }
}

/// Encode a frame's header and message into `out` (cleared first), for a
/// bulk tail of `bulk_len` bytes that the caller appends or writes after.
fn encode_head<T: Serialize>(
    out: &mut Vec<u8>,
    id: u64,
    flags: u32,
    msg: &T,
    bulk_len: usize,
    max_body: u64,
) -> Result<(), ProtoError> {
    out.clear();
    out.extend_from_slice(&[0u8; HEADER_LEN]);
    codec::encode_into(msg, out)?;
    let msg_len = out.len() - HEADER_LEN;
    let body = msg_len as u64 + bulk_len as u64;
    if body > max_body {
        return Err(ProtoError::FrameTooLarge {
            size: body,
            limit: max_body,
        });
    }
    let header = FrameHeader {
        id,
        flags,
        msg_len: msg_len as u32,
        bulk_len: bulk_len as u64,
    };
    out[..HEADER_LEN].copy_from_slice(&header.encode());
    Ok(())
}

/// Encode a whole frame (header, message, bulk) into `out`, which is cleared
/// first. Used where the caller wants the bytes rather than a writer.
pub fn encode_frame<T: Serialize>(
    out: &mut Vec<u8>,
    id: u64,
    flags: u32,
    msg: &T,
    bulk: &[u8],
    max_body: u64,
) -> Result<(), ProtoError> {
    encode_head(out, id, flags, msg, bulk.len(), max_body)?;
    out.extend_from_slice(bulk);
    Ok(())
}

/// Write one frame. `scratch` is reused between calls to avoid allocation.
/// Small bulk tails go out in the same write as the header (one system call,
/// one packet); large ones are written from where they are, uncopied.
/// Returns the bytes written.
pub fn write_frame<W: Write + ?Sized, T: Serialize>(
    w: &mut W,
    scratch: &mut Vec<u8>,
    id: u64,
    flags: u32,
    msg: &T,
    bulk: &[u8],
    max_body: u64,
) -> Result<usize, ProtoError> {
    if bulk.len() <= COALESCE_LIMIT {
        encode_frame(scratch, id, flags, msg, bulk, max_body)?;
        w.write_all(scratch)?;
        Ok(scratch.len())
    } else {
        encode_head(scratch, id, flags, msg, bulk.len(), max_body)?;
        w.write_all(scratch)?;
        w.write_all(bulk)?;
        Ok(scratch.len() + bulk.len())
    }
}

/// Read one frame's header and message bytes into `msg`; the bulk tail
/// (`header.bulk_len` bytes) is left in the stream for the caller.
pub fn read_frame<R: Read + ?Sized>(r: &mut R, msg: &mut Vec<u8>, max_body: u64) -> Result<FrameHeader, ProtoError> {
    let mut hb = [0u8; HEADER_LEN];
    read_exact_or_closed(r, &mut hb)?;
    let header = FrameHeader::decode(&hb, max_body)?;
    msg.clear();
    msg.resize(header.msg_len as usize, 0);
    r.read_exact(msg)?;
    Ok(header)
}

/// Read the bulk tail into `dst` (exactly `dst.len()` bytes).
pub fn read_bulk<R: Read + ?Sized>(r: &mut R, dst: &mut [u8]) -> Result<(), ProtoError> {
    r.read_exact(dst)?;
    Ok(())
}

/// Read and throw away `n` bytes of a bulk tail nobody wants.
pub fn skip_bulk<R: Read + ?Sized>(r: &mut R, mut n: u64) -> Result<(), ProtoError> {
    let mut sink = [0u8; 16 << 10];
    while n > 0 {
        let take = n.min(sink.len() as u64) as usize;
        r.read_exact(&mut sink[..take])?;
        n -= take as u64;
    }
    Ok(())
}

/// `read_exact` that reports a clean end of stream before the first byte as
/// `Closed`, and a stream cut mid-header as an error.
fn read_exact_or_closed<R: Read + ?Sized>(r: &mut R, buf: &mut [u8]) -> Result<(), ProtoError> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) if got == 0 => return Err(ProtoError::Closed),
            Ok(0) => {
                return Err(ProtoError::Malformed(format!(
                    "stream ended inside a frame header ({got} of {HEADER_LEN} bytes)"
                )))
            }
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// A frame found in a buffer: header, message bytes, bulk bytes, bytes used.
pub type SplitFrame<'a> = (FrameHeader, &'a [u8], &'a [u8], usize);

/// Parse frames from a byte buffer without any stream: returns the header,
/// the message bytes and the bulk bytes of the first frame and how many bytes
/// it used, or `None` when more bytes are needed. The fuzz target and the
/// relay use this.
pub fn split_frame(buf: &[u8], max_body: u64) -> Result<Option<SplitFrame<'_>>, ProtoError> {
    if buf.len() < HEADER_LEN {
        return Ok(None);
    }
    let mut hb = [0u8; HEADER_LEN];
    hb.copy_from_slice(&buf[..HEADER_LEN]);
    let header = FrameHeader::decode(&hb, max_body)?;
    let total = HEADER_LEN + header.msg_len as usize + header.bulk_len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    let msg = &buf[HEADER_LEN..HEADER_LEN + header.msg_len as usize];
    let bulk = &buf[HEADER_LEN + header.msg_len as usize..total];
    Ok(Some((header, msg, bulk, total)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        let h = FrameHeader {
            id: 77,
            flags: FLAG_WANTS_REPLY,
            msg_len: 12,
            bulk_len: 4096,
        };
        assert_eq!(FrameHeader::decode(&h.encode(), DEFAULT_MAX_FRAME).unwrap(), h);
    }

    #[test]
    fn oversized_frame_is_refused() {
        let h = FrameHeader {
            id: 1,
            flags: 0,
            msg_len: 8,
            bulk_len: 1 << 30,
        };
        let err = FrameHeader::decode(&h.encode(), DEFAULT_MAX_FRAME).unwrap_err();
        assert!(matches!(err, ProtoError::FrameTooLarge { .. }), "{err}");
    }

    #[test]
    fn message_longer_than_body_is_malformed() {
        let mut b = FrameHeader {
            id: 1,
            flags: 0,
            msg_len: 8,
            bulk_len: 0,
        }
        .encode();
        b[4..8].copy_from_slice(&100u32.to_le_bytes());
        assert!(matches!(
            FrameHeader::decode(&b, DEFAULT_MAX_FRAME),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn unknown_flags_are_malformed() {
        let mut b = FrameHeader {
            id: 1,
            flags: 0,
            msg_len: 8,
            bulk_len: 0,
        }
        .encode();
        b[8] = 0x80;
        assert!(matches!(
            FrameHeader::decode(&b, DEFAULT_MAX_FRAME),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn stream_round_trip_with_large_bulk() {
        let bulk: Vec<u8> = (0..200_000u32).map(|i| i as u8).collect();
        let mut wire = Vec::new();
        let mut scratch = Vec::new();
        write_frame(
            &mut wire,
            &mut scratch,
            5,
            0,
            &("hello", 3u32),
            &bulk,
            DEFAULT_MAX_FRAME,
        )
        .unwrap();
        write_frame(&mut wire, &mut scratch, 6, 1, &7u64, b"tiny", DEFAULT_MAX_FRAME).unwrap();
        let mut r = &wire[..];
        let mut msg = Vec::new();
        let h = read_frame(&mut r, &mut msg, DEFAULT_MAX_FRAME).unwrap();
        assert_eq!((h.id, h.bulk_len), (5, bulk.len() as u64));
        let (s, n): (String, u32) = codec::decode(&msg).unwrap();
        assert_eq!((s.as_str(), n), ("hello", 3));
        let mut got = vec![0u8; h.bulk_len as usize];
        read_bulk(&mut r, &mut got).unwrap();
        assert_eq!(got, bulk);
        let h = read_frame(&mut r, &mut msg, DEFAULT_MAX_FRAME).unwrap();
        assert!(h.wants_reply());
        skip_bulk(&mut r, h.bulk_len).unwrap();
        assert!(matches!(
            read_frame(&mut r, &mut msg, DEFAULT_MAX_FRAME),
            Err(ProtoError::Closed)
        ));
    }

    #[test]
    fn truncated_header_is_malformed_not_closed() {
        let mut r = &[1u8, 2, 3][..];
        let mut msg = Vec::new();
        assert!(matches!(
            read_frame(&mut r, &mut msg, DEFAULT_MAX_FRAME),
            Err(ProtoError::Malformed(_))
        ));
    }

    #[test]
    fn split_frame_needs_whole_frame() {
        let mut out = Vec::new();
        encode_frame(&mut out, 9, 0, &1u8, b"abc", DEFAULT_MAX_FRAME).unwrap();
        assert!(split_frame(&out[..out.len() - 1], DEFAULT_MAX_FRAME).unwrap().is_none());
        let (h, _, bulk, used) = split_frame(&out, DEFAULT_MAX_FRAME).unwrap().unwrap();
        assert_eq!((h.id, bulk, used), (9, &b"abc"[..], out.len()));
    }
}
