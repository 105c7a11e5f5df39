//! A QUIC session terminated by the process that serves it: a gpu-server
//! worker owns the UDP socket of its session and drives QUIC on its own
//! thread, so a request travels from the network to the driver call without
//! crossing a thread or a process (the daemon's relay crosses both twice).
//!
//! The worker thread drives the connection whenever it reads or writes the
//! session stream (a current-thread runtime, entered with `block_on`). While
//! it runs a long driver call (a synchronise on a kernel that takes seconds)
//! nobody would answer the peer's packets; a keeper thread then (after 20 ms) drives the
//! runtime until the worker comes back to the stream, so acknowledgements
//! and keep-alives flow and the connection does not time out.

use super::quic::quic_server_config;
use super::{PollRead, ServerIdentity};
use crate::error::ProtoError;
use std::future::Future;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// After the worker has been away from the stream this long, the keeper
/// drives the connection.
const KEEPER_AFTER: Duration = Duration::from_millis(20);
/// How often the keeper looks (rarely: an idle session should cost nothing).
const KEEPER_LOOK: Duration = Duration::from_millis(20);
/// While driving, how soon the keeper gives the runtime back.
const KEEPER_TICK: Duration = Duration::from_millis(1);

/// Who drives the runtime: `away_since` is 0 while the worker is at the
/// stream (reading or writing), else the moment (µs after `base`) it left.
struct Drive {
    rt: tokio::runtime::Runtime,
    base: Instant,
    away_since: AtomicU64,
    stop: AtomicBool,
}

impl Drive {
    fn now_us(&self) -> u64 {
        (self.base.elapsed().as_micros() as u64).max(1)
    }

    /// Run `f` on the stream, driving the connection meanwhile.
    fn at_stream<F: Future>(&self, f: F) -> F::Output {
        self.away_since.store(0, Ordering::Release);
        let out = self.rt.block_on(f);
        self.away_since.store(self.now_us(), Ordering::Release);
        out
    }

    fn keeper(self: Arc<Self>) {
        while !self.stop.load(Ordering::Acquire) {
            std::thread::sleep(KEEPER_LOOK);
            let since = self.away_since.load(Ordering::Acquire);
            if since == 0 || self.now_us().saturating_sub(since) < KEEPER_AFTER.as_micros() as u64 {
                continue;
            }
            let drive = Arc::clone(&self);
            self.rt.block_on(async move {
                while drive.away_since.load(Ordering::Acquire) != 0 && !drive.stop.load(Ordering::Acquire) {
                    tokio::time::sleep(KEEPER_TICK).await;
                }
            });
        }
    }
}

/// Stops the keeper when the last half of the session goes.
struct KeeperGuard(Arc<Drive>);

impl Drop for KeeperGuard {
    fn drop(&mut self) {
        self.0.stop.store(true, Ordering::Release);
    }
}

/// A worker's QUIC endpoint on the session's own UDP socket.
pub struct DirectQuicListener {
    drive: Arc<Drive>,
    endpoint: quinn::Endpoint,
    guard: Arc<KeeperGuard>,
}

/// One accepted connection's stream, split into blocking halves that the
/// worker thread uses.
pub struct DirectQuicStream {
    pub reader: DirectQuicReader,
    pub writer: DirectQuicWriter,
    pub peer: SocketAddr,
    connection: quinn::Connection,
}

impl DirectQuicStream {
    /// Close the connection, telling the peer `reason`.
    pub fn close(&self, reason: &str) {
        self.connection.close(0u32.into(), reason.as_bytes());
    }
}

impl DirectQuicListener {
    /// Serve QUIC with `identity` on `socket` (bound by the daemon).
    pub fn new(socket: UdpSocket, identity: &ServerIdentity) -> Result<DirectQuicListener, ProtoError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        socket.set_nonblocking(true)?;
        let config = quic_server_config(identity)?;
        let endpoint = {
            let _enter = rt.enter();
            quinn::Endpoint::new(
                quinn::EndpointConfig::default(),
                Some(config),
                socket,
                Arc::new(quinn::TokioRuntime),
            )?
        };
        let drive = Arc::new(Drive {
            rt,
            base: Instant::now(),
            away_since: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let keeper = Arc::clone(&drive);
        std::thread::Builder::new()
            .name("gpupool-quic-keeper".into())
            .spawn(move || keeper.keeper())?;
        Ok(DirectQuicListener {
            guard: Arc::new(KeeperGuard(Arc::clone(&drive))),
            drive,
            endpoint,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.endpoint.local_addr()
    }

    /// Wait until `deadline` for a connection and its first stream.
    pub fn accept(&self, deadline: Instant) -> Result<DirectQuicStream, ProtoError> {
        let left = deadline.saturating_duration_since(Instant::now());
        let endpoint = self.endpoint.clone();
        let accepted = self.drive.at_stream(async move {
            tokio::time::timeout(left, async {
                let incoming = endpoint.accept().await.ok_or(ProtoError::Closed)?;
                let connection = incoming
                    .await
                    .map_err(|e| ProtoError::Tls(format!("QUIC handshake failed: {e}")))?;
                let (send, recv) = connection
                    .accept_bi()
                    .await
                    .map_err(|e| ProtoError::Tls(format!("no session stream: {e}")))?;
                Ok::<_, ProtoError>((connection, send, recv))
            })
            .await
        });
        let (connection, send, recv) = accepted.map_err(|_| ProtoError::Closed)??;
        Ok(DirectQuicStream {
            peer: connection.remote_address(),
            reader: DirectQuicReader {
                drive: Arc::clone(&self.drive),
                recv,
                deadline: None,
                stash: Vec::new(),
                stash_at: 0,
                _guard: Arc::clone(&self.guard),
            },
            writer: DirectQuicWriter {
                drive: Arc::clone(&self.drive),
                send,
                _guard: Arc::clone(&self.guard),
            },
            connection,
        })
    }
}

pub struct DirectQuicReader {
    drive: Arc<Drive>,
    recv: quinn::RecvStream,
    deadline: Option<Instant>,
    /// Bytes a wait between frames read ahead (`fill_or`), served first.
    stash: Vec<u8>,
    stash_at: usize,
    _guard: Arc<KeeperGuard>,
}

/// How much a wait between frames reads ahead.
const STASH: usize = 64 << 10;

impl DirectQuicReader {
    /// Read ahead into the stash unless `wake` completes first: true when
    /// bytes (or the end of the stream) are there to read, false when woken.
    /// A stream read that loses the race has taken nothing (quinn's reads
    /// are cancel-safe).
    pub(super) fn fill_or<F: Future>(&mut self, wake: F) -> io::Result<bool> {
        if self.stash_at < self.stash.len() {
            return Ok(true);
        }
        let mut buf = std::mem::take(&mut self.stash);
        buf.resize(STASH, 0);
        let recv = &mut self.recv;
        let got = self.drive.at_stream(async {
            tokio::select! {
                biased;
                n = recv.read(&mut buf) => Some(n),
                _ = wake => None,
            }
        });
        let n = match got {
            None => 0,
            Some(Ok(Some(n))) => n,
            // The end of the stream, or its failure, is for the read to tell.
            Some(Ok(None)) | Some(Err(_)) => {
                buf.clear();
                self.stash = buf;
                self.stash_at = 0;
                return Ok(true);
            }
        };
        buf.truncate(n);
        self.stash = buf;
        self.stash_at = 0;
        Ok(n > 0)
    }

    /// Reads after `deadline` fail with `TimedOut` (for the hello of a
    /// connection that may never send one); `None` waits as long as it takes.
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline;
    }
}

impl Read for DirectQuicReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.stash_at < self.stash.len() {
            let n = buf.len().min(self.stash.len() - self.stash_at);
            buf[..n].copy_from_slice(&self.stash[self.stash_at..self.stash_at + n]);
            self.stash_at += n;
            return Ok(n);
        }
        let recv = &mut self.recv;
        let read = match self.deadline {
            None => self.drive.at_stream(recv.read(buf)),
            Some(d) => {
                let left = d.saturating_duration_since(Instant::now());
                // The timer is made inside the runtime, which it needs.
                self.drive
                    .at_stream(async move { tokio::time::timeout(left, recv.read(buf)).await })
                    .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "nothing arrived in time"))?
            }
        };
        match read {
            Ok(Some(n)) => Ok(n),
            Ok(None) => Ok(0),
            Err(e) => Err(io::Error::new(io::ErrorKind::ConnectionReset, e)),
        }
    }
}

impl PollRead for DirectQuicReader {
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        if self.stash_at < self.stash.len() {
            return self.read(buf).map(Some);
        }
        // The bytes this thread has not driven in yet are not there; a read
        // that drives the connection is the way to get them.
        let mut read = std::pin::pin!(self.recv.read(buf));
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match read.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(Ok(Some(n))) => Ok(Some(n)),
            std::task::Poll::Ready(Ok(None)) => Ok(Some(0)),
            std::task::Poll::Ready(Err(e)) => Err(io::Error::new(io::ErrorKind::ConnectionReset, e)),
            std::task::Poll::Pending => Ok(None),
        }
    }
}

pub struct DirectQuicWriter {
    drive: Arc<Drive>,
    send: quinn::SendStream,
    _guard: Arc<KeeperGuard>,
}

impl DirectQuicWriter {
    /// Finish the stream and wait (up to `timeout`) until the peer has it
    /// all: a refusal must arrive before the process exits.
    pub fn finish(&mut self, timeout: Duration) {
        let send = &mut self.send;
        self.drive.at_stream(async move {
            let _ = send.finish();
            let _ = tokio::time::timeout(timeout, send.stopped()).await;
        });
    }
}

impl Write for DirectQuicWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let send = &mut self.send;
        self.drive
            .at_stream(async move {
                let written = send.write(buf).await;
                // Let the connection send it now, not at the next read.
                tokio::task::yield_now().await;
                written
            })
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        let send = &mut self.send;
        self.drive
            .at_stream(async move {
                let written = send.write_all(buf).await;
                // Let the connection send it now, not at the next read.
                tokio::task::yield_now().await;
                written
            })
            .map_err(|e| io::Error::new(io::ErrorKind::BrokenPipe, e))
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}
