//! gpupool wire protocol.
//!
//! A client shim and a GPU server exchange *frames*. Each frame is a fixed
//! header (`frame`) followed by a message encoded by `codec` and, for bulk
//! data such as copy payloads and module images, a raw tail that is never
//! re-encoded. A session starts with a handshake (`handshake`): the client
//! presents its protocol version and credentials, the server answers with the
//! devices it offers. After that, `message::Request`s flow one way and
//! `message::Reply`s the other, matched by request id; requests that return
//! only a status are sent without a reply being asked for.
//!
//! Everything here but `transport` is free of I/O: plain functions over bytes
//! and values. `transport` owns the sockets (TCP, QUIC) and gives both sides
//! ordered byte streams to carry frames.

pub mod affinity;
pub mod broker_client;
pub mod codec;
pub mod error;
pub mod ext;
pub mod frame;
pub mod handshake;
pub mod lease;
pub mod message;
pub mod transport;
pub mod visible;

pub use error::ProtoError;

/// Version of the wire protocol; both ends must agree exactly.
pub const PROTOCOL_VERSION: u32 = 19;
