//! Calls in flight: one connection to the GPU server, shared by every thread
//! of the program.
//!
//! Calling threads write frames under a short lock (never held across a round
//! trip). One reader thread reads every frame the server sends, in order:
//! device-to-host data goes straight into the program's buffer, replies wake
//! the thread that waits for them. Because the server answers in request
//! order on one ordered stream, by the time a synchronising call's reply is
//! read, every earlier device-to-host transfer has landed.

use crate::error::{CuError, CuResult};
use gpupool_proto::codec;
use gpupool_proto::frame::{self, FLAG_WANTS_REPLY};
use gpupool_proto::handshake::{ClientInfo, Hello, SessionInfo, Welcome};
use gpupool_proto::message::{Reply, Request};
use gpupool_proto::transport::{self, ClientStream, ClientTls, ServerUrl};
use gpupool_proto::ProtoError;
use std::collections::HashMap;
use std::io::{BufReader, Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};

/// Frames larger than this are refused from the server.
const MAX_FRAME: u64 = frame::DEFAULT_MAX_FRAME;

/// Where a reply is awaited, and where its data goes.
struct Pending {
    waiter: Option<Arc<Waiter>>,
    /// Destination of device-to-host data: (address, length).
    sink: Option<(usize, usize)>,
}

#[derive(Default)]
struct Waiter {
    slot: Mutex<Option<Result<Reply, CuError>>>,
    ready: Condvar,
    /// Set once the slot is filled: lets the waiter spin briefly before
    /// sleeping, which saves a thread wake-up on a loopback-fast reply.
    filled: AtomicBool,
}

/// How long a caller spins for its reply before sleeping.
const SPIN: std::time::Duration = std::time::Duration::from_micros(50);

impl Waiter {
    fn deliver(&self, value: Result<Reply, CuError>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(value);
        self.filled.store(true, Ordering::Release);
        self.ready.notify_one();
    }

    fn wait(&self) -> Result<Reply, CuError> {
        let start = std::time::Instant::now();
        while !self.filled.load(Ordering::Acquire) && start.elapsed() < SPIN {
            std::hint::spin_loop();
        }
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(v) = slot.take() {
                return v;
            }
            slot = self.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct Writer {
    stream: Box<dyn Write + Send>,
    scratch: Vec<u8>,
}

/// Counters of what crossed the wire, for the call report and benchmarks.
#[derive(Default)]
pub struct Traffic {
    pub round_trips: AtomicU64,
    pub streamed: AtomicU64,
    pub bytes_out: AtomicU64,
    pub bytes_in: AtomicU64,
}

/// The connection to one GPU server.
pub struct Remote {
    writer: Mutex<Writer>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    dead: AtomicBool,
    dead_reason: OnceLock<String>,
    pub session: SessionInfo,
    pub peer: String,
    pub traffic: Traffic,
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
}

/// What the connection needs from configuration.
pub struct ConnectOptions {
    pub url: ServerUrl,
    pub tls: ClientTls,
    pub lease_token: Option<String>,
}

impl Remote {
    /// Connect, shake hands, and start the reader thread.
    pub fn connect(opts: &ConnectOptions) -> Result<Arc<Remote>, ProtoError> {
        let ClientStream {
            reader,
            mut writer,
            keep,
            peer,
        } = transport::connect(&opts.url, &opts.tls)?;
        let mut reader = BufReader::with_capacity(256 << 10, reader);
        let hello = Hello::new(opts.lease_token.clone(), client_info());
        let mut scratch = Vec::new();
        frame::write_frame(&mut *writer, &mut scratch, 0, FLAG_WANTS_REPLY, &hello, &[], MAX_FRAME)?;
        writer.flush()?;
        let mut msg = Vec::new();
        let header = frame::read_frame(&mut reader, &mut msg, MAX_FRAME)?;
        frame::skip_bulk(&mut reader, header.bulk_len)?;
        let session = match codec::decode::<Welcome>(&msg)? {
            Welcome::Accepted(info) => info,
            Welcome::Refused { reason } => return Err(ProtoError::Refused(reason)),
        };
        if session.version != gpupool_proto::PROTOCOL_VERSION {
            return Err(ProtoError::VersionMismatch {
                peer: session.version,
                ours: gpupool_proto::PROTOCOL_VERSION,
            });
        }
        let remote = Arc::new(Remote {
            writer: Mutex::new(Writer {
                stream: writer,
                scratch,
            }),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dead: AtomicBool::new(false),
            dead_reason: OnceLock::new(),
            session,
            peer,
            traffic: Traffic::default(),
            _keep: keep,
        });
        let for_reader = Arc::clone(&remote);
        std::thread::Builder::new()
            .name("gpupool-reader".into())
            .spawn(move || for_reader.read_loop(reader))?;
        Ok(remote)
    }

    fn lost(&self) -> CuError {
        CuError::DEVICE_UNAVAILABLE
    }

    /// Why the connection is gone, if it is.
    pub fn dead_reason(&self) -> Option<&str> {
        self.dead_reason.get().map(String::as_str)
    }

    fn send(&self, id: u64, flags: u32, req: &Request, bulk: &[u8]) -> CuResult {
        if self.dead.load(Ordering::Acquire) {
            return Err(self.lost());
        }
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let Writer { stream, scratch } = &mut *w;
        match frame::write_frame(&mut **stream, scratch, id, flags, req, bulk, MAX_FRAME) {
            Ok(()) => {
                self.traffic
                    .bytes_out
                    .fetch_add((frame::HEADER_LEN + bulk.len()) as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(ProtoError::FrameTooLarge { .. }) | Err(ProtoError::Encode(_)) => Err(CuError::INVALID_VALUE),
            Err(e) => {
                drop(w);
                self.mark_dead(format!("sending to {} failed: {e}", self.peer));
                Err(self.lost())
            }
        }
    }

    /// Stream a status-only request: no reply is asked for; a failure is kept
    /// by the server and returned by the next synchronising call.
    pub fn post(&self, req: &Request, bulk: &[u8]) -> CuResult {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.traffic.streamed.fetch_add(1, Ordering::Relaxed);
        crate::report::note_streamed();
        self.send(id, 0, req, bulk)
    }

    /// Send a request and wait for its reply. A `Status`/`Done` reply with an
    /// error becomes `Err`.
    pub fn call(&self, req: &Request, bulk: &[u8]) -> CuResult<Reply> {
        self.call_with_sink(req, bulk, None)
    }

    /// Send a request whose reply brings device-to-host data into
    /// `dst..dst+len`. With `wait`, block until all of it has landed; without,
    /// return at once (the data lands before any later reply is read).
    ///
    /// # Safety
    /// `dst..dst+len` must stay valid and writable until the data has landed.
    pub unsafe fn call_into(&self, req: &Request, dst: *mut u8, len: usize, wait: bool) -> CuResult {
        if wait {
            self.call_with_sink(req, &[], Some((dst as usize, len))).map(|_| ())
        } else {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.lock_pending().insert(
                id,
                Pending {
                    waiter: None,
                    sink: Some((dst as usize, len)),
                },
            );
            self.traffic.streamed.fetch_add(1, Ordering::Relaxed);
            crate::report::note_streamed();
            self.send(id, FLAG_WANTS_REPLY, req, &[]).inspect_err(|_| {
                self.lock_pending().remove(&id);
            })
        }
    }

    fn call_with_sink(&self, req: &Request, bulk: &[u8], sink: Option<(usize, usize)>) -> CuResult<Reply> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let waiter = Arc::new(Waiter::default());
        self.lock_pending().insert(
            id,
            Pending {
                waiter: Some(Arc::clone(&waiter)),
                sink,
            },
        );
        self.traffic.round_trips.fetch_add(1, Ordering::Relaxed);
        crate::report::note_round_trip();
        if let Err(e) = self.send(id, FLAG_WANTS_REPLY, req, bulk) {
            self.lock_pending().remove(&id);
            return Err(e);
        }
        let reply = waiter.wait()?;
        match reply.status() {
            0 => Ok(reply),
            s => Err(CuError(s)),
        }
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// End the session from the client side (its lease ended): every later
    /// call fails with `reason` logged once.
    pub fn fail(&self, reason: String) {
        self.mark_dead(reason)
    }

    fn mark_dead(&self, reason: String) {
        if !self.dead.swap(true, Ordering::AcqRel) {
            tracing::error!(server = %self.peer, "{reason}; every later CUDA call fails with CUDA_ERROR_DEVICE_UNAVAILABLE");
            let _ = self.dead_reason.set(reason);
        }
        let pending: Vec<Pending> = self.lock_pending().drain().map(|(_, p)| p).collect();
        for p in pending {
            if let Some(w) = p.waiter {
                w.deliver(Err(self.lost()));
            }
        }
    }

    fn read_loop(self: Arc<Self>, mut reader: BufReader<Box<dyn Read + Send>>) {
        let mut msg = Vec::new();
        let reason = loop {
            match self.read_one(&mut reader, &mut msg) {
                Ok(()) => {}
                Err(ProtoError::Closed) => break format!("server {} closed the connection", self.peer),
                Err(e) => break format!("connection to {} failed: {e}", self.peer),
            }
        };
        self.mark_dead(reason);
    }

    fn read_one(&self, reader: &mut impl Read, msg: &mut Vec<u8>) -> Result<(), ProtoError> {
        let header = frame::read_frame(reader, msg, MAX_FRAME)?;
        let reply: Reply = codec::decode(msg)?;
        self.traffic
            .bytes_in
            .fetch_add(frame::HEADER_LEN as u64 + header.bulk_len, Ordering::Relaxed);
        if let Reply::Data { offset } = reply {
            let sink = self.lock_pending().get(&header.id).and_then(|p| p.sink);
            let (addr, len) = sink
                .ok_or_else(|| ProtoError::Malformed(format!("data for request {} which expects none", header.id)))?;
            let end = offset
                .checked_add(header.bulk_len)
                .filter(|&e| e <= len as u64)
                .ok_or_else(|| {
                    ProtoError::Malformed(format!(
                        "data at {offset}+{} beyond the {len}-byte destination",
                        header.bulk_len
                    ))
                })?;
            // SAFETY: the caller of `call_into` promised that addr..addr+len
            // stays valid and writable until the reply completes; the range
            // offset..end was checked to lie inside it.
            let dst = unsafe {
                std::slice::from_raw_parts_mut((addr as *mut u8).add(offset as usize), (end - offset) as usize)
            };
            return frame::read_bulk(reader, dst);
        }
        frame::skip_bulk(reader, header.bulk_len)?;
        let pending = self.lock_pending().remove(&header.id);
        match pending {
            Some(Pending { waiter: Some(w), .. }) => w.deliver(Ok(reply)),
            Some(Pending { waiter: None, .. }) => {
                if reply.status() != 0 {
                    tracing::debug!(
                        id = header.id,
                        status = reply.status(),
                        "streamed copy failed; the server reports it at the next synchronising call"
                    );
                }
            }
            None => return Err(ProtoError::Malformed(format!("reply to unknown request {}", header.id))),
        }
        Ok(())
    }
}

pub(crate) fn client_info() -> ClientInfo {
    let program = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_default();
    ClientInfo {
        host,
        pid: std::process::id(),
        program,
    }
}
