//! TCP: one connection per session, Nagle off (requests are small and a
//! waiting caller must not sit behind a delayed ACK).

use super::{ClientStream, ServerUrl};
use crate::error::ProtoError;
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

pub fn tcp_client_connect(url: &ServerUrl) -> Result<ClientStream, ProtoError> {
    let peer = url.authority();
    let fail = |reason: String| ProtoError::Connect {
        peer: peer.clone(),
        reason,
    };
    let addrs: Vec<_> = peer.to_socket_addrs().map_err(|e| fail(e.to_string()))?.collect();
    let mut last = String::from("no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, Duration::from_secs(10)) {
            Ok(stream) => {
                stream.set_nodelay(true)?;
                let writer = stream.try_clone()?;
                let closer = stream.try_clone()?;
                return Ok(ClientStream {
                    reader: Box::new(super::SocketRead(stream)),
                    writer: Box::new(writer),
                    keep: None,
                    close: Box::new(move || {
                        let _ = closer.shutdown(std::net::Shutdown::Both);
                    }),
                    peer: url.to_string(),
                });
            }
            Err(e) => last = e.to_string(),
        }
    }
    Err(fail(last))
}
