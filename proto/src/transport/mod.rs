//! Transports: ordered, reliable byte streams that carry frames.
//!
//! The client side is blocking (the shim's calling threads write, one reader
//! thread reads), the server side is tokio. Addresses are URLs:
//! `tcp://host:port` and `quic://host:port`; a QUIC URL may carry
//! `?fingerprint=<sha256 hex>` to pin a self-signed server certificate.

mod poll;
mod quic;
mod quic_direct;
mod tcp;
mod url;
mod wake;

pub use poll::{FrameReader, PollRead, Polling, SocketRead};
pub use quic::{
    cert_fingerprint, load_or_create_server_identity, quic_client_connect, quic_server_endpoint, ClientTls,
    ServerIdentity, ALPN, QUIC_CLIENT_THREAD,
};
pub use quic_direct::{DirectQuicListener, DirectQuicReader, DirectQuicStream, DirectQuicWriter};
pub use tcp::tcp_client_connect;
pub use url::{Scheme, ServerUrl};
pub use wake::{WaitRead, Wake};

use crate::error::ProtoError;
use std::any::Any;
use std::io::Write;

/// A connected client stream, split into halves usable from different
/// threads. `keep` holds whatever must stay alive for the halves to work
/// (for QUIC: the runtime and the connection).
pub struct ClientStream {
    pub reader: Box<dyn PollRead>,
    pub writer: Box<dyn Write + Send>,
    pub keep: Option<Box<dyn Any + Send + Sync>>,
    /// Ends the connection from any thread, so that a thread blocked
    /// reading or writing it returns at once (with an error or end of
    /// stream).
    pub close: Box<dyn Fn() + Send + Sync>,
    pub peer: String,
}

/// Connect to a server URL (blocking).
pub fn connect(url: &ServerUrl, tls: &ClientTls) -> Result<ClientStream, ProtoError> {
    match url.scheme {
        Scheme::Tcp => tcp_client_connect(url),
        Scheme::Quic => quic_client_connect(url, tls),
    }
}
