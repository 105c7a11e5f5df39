//! Calls in flight: one connection to the GPU server, shared by every thread
//! of the program.
//!
//! Calling threads write frames under a short lock (never held across a round
//! trip). Frames from the server are read in order by whoever holds the read
//! side: a thread that waits for a reply takes it itself when nobody else is
//! reading (leader/follower), so a synchronous call costs the transport's
//! round trip and no thread hand-off; while it reads, replies for other
//! threads are delivered to them and device-to-host data goes straight into
//! the program's buffers. A background reader takes over whenever replies are
//! outstanding and no caller reads (streamed device-to-host copies). Because
//! the server answers in request order on one ordered stream, by the time a
//! synchronising call's reply is read, every earlier device-to-host transfer
//! has landed.

use crate::error::{CuError, CuResult};
use gpupool_proto::affinity;
use gpupool_proto::codec;
use gpupool_proto::frame::{self, FLAG_NOTICES_TAKEN, FLAG_WANTS_REPLY};
use gpupool_proto::handshake::{ClientInfo, Hello, SessionInfo, Welcome};
use gpupool_proto::message::{Reply, Request, NOTICE_ID};
use gpupool_proto::transport::{self, ClientStream, ClientTls, FrameReader, PollRead, Polling, ServerUrl};
use gpupool_proto::ProtoError;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Frames larger than this are refused from the server.
const MAX_FRAME: u64 = frame::DEFAULT_MAX_FRAME;

/// Where a reply is awaited, and where its data goes.
#[derive(Default)]
struct Pending {
    waiter: Option<Arc<Waiter>>,
    /// Destination of device-to-host data.
    sink: Option<Sink>,
    /// Called with the reply's status by the thread that reads it (a host
    /// function's reply, which comes when its stream reaches it); with
    /// `CUDA_ERROR_DEVICE_UNAVAILABLE` when the connection is lost first.
    on_reply: Option<Box<dyn FnOnce(u32) + Send>>,
    /// The request's place in the order the server gets requests
    /// ([`Remote::answered_up_to`]).
    sent: u64,
}

/// Where device-to-host data lands: `len` bytes at `addr`, or, for a 2D
/// copy, packed rows of `width` bytes laid out `pitch` apart.
#[derive(Clone, Copy)]
pub struct Sink {
    addr: usize,
    len: usize,
    rows: Option<(usize, usize)>,
}

impl Sink {
    /// `len` bytes at `addr`.
    pub fn linear(addr: *mut u8, len: usize) -> Sink {
        Sink {
            addr: addr as usize,
            len,
            rows: None,
        }
    }

    /// `height` rows of `width` bytes at `addr`, `pitch` apart (`width <=
    /// pitch`); the data arrives packed.
    pub fn rows(addr: *mut u8, width: usize, pitch: usize, height: usize) -> Sink {
        Sink {
            addr: addr as usize,
            len: width * height,
            rows: Some((width, pitch)),
        }
    }
}

/// Device-to-host data held in the shim's own buffer until it may land in
/// the program's memory (behind a host function, [`Remote::call_staged`]).
pub struct Staged {
    buf: Vec<u8>,
    sink: Sink,
}

impl Staged {
    /// Write the data where the copy's destination is.
    ///
    /// # Safety
    /// Every byte the sink names is valid and writable.
    pub unsafe fn land(self) {
        let Sink { addr, len, rows } = self.sink;
        let (width, pitch) = rows.unwrap_or((len.max(1), len.max(1)));
        for (row, bytes) in self.buf.chunks(width).enumerate() {
            // SAFETY: packed row `row` of the sink lies `row * pitch` from
            // its start and is `width` bytes (the last one perhaps fewer):
            // the caller's promise.
            unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), (addr as *mut u8).add(row * pitch), bytes.len()) };
        }
    }
}

#[derive(Default)]
struct Waiter {
    slot: Mutex<Option<Result<Reply, CuError>>>,
    /// True while the waiting thread sleeps on `ready`: only then is a
    /// wake-up (a system call) worth making.
    sleeping: AtomicBool,
    ready: Condvar,
    /// Set once the slot is filled: lets the waiter spin briefly before
    /// sleeping, which saves a thread wake-up on a loopback-fast reply.
    filled: AtomicBool,
}

/// How long a caller whose reply another thread is reading spins before
/// sleeping. Short: on a small machine a spinning caller takes the core the
/// reading thread needs.
const SPIN: std::time::Duration = std::time::Duration::from_micros(20);

impl Waiter {
    fn deliver(&self, value: Result<Reply, CuError>) {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        *slot = Some(value);
        self.filled.store(true, Ordering::Release);
        if self.sleeping.load(Ordering::Relaxed) {
            self.ready.notify_one();
        }
    }

    fn is_filled(&self) -> bool {
        self.filled.load(Ordering::Acquire)
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
            // Set under the slot's lock, which `deliver` holds to fill it.
            self.sleeping.store(true, Ordering::Relaxed);
            slot = self.ready.wait(slot).unwrap_or_else(|p| p.into_inner());
        }
    }
}

struct Writer {
    stream: Box<dyn Write + Send>,
    scratch: Vec<u8>,
    /// Streamed frames held back to go in one write (see [`Remote::send`]).
    held: Vec<u8>,
    /// When the first of the held frames was held.
    held_since: Option<Instant>,
    /// When the flusher writes the held frames if nothing else has.
    flush_by: Option<Instant>,
    /// When the stream was last written.
    last_write: Instant,
    /// Bursts of held frames in a row that the program's own later requests
    /// took along; past [`TRUST_CALLS`] the flusher is not woken for each
    /// burst (its tick is the backstop).
    ended_by_calls: u32,
    /// The flusher waits without a timeout (nothing written for a while).
    flusher_asleep: bool,
    /// When the flusher last wrote held frames: if the program's next
    /// request comes soon after, it would have taken them along anyway.
    flusher_wrote: Option<Instant>,
    /// Requests given to the stream (written or held), counted: each
    /// request's place in the order the server gets them.
    sent: u64,
}

impl Writer {
    /// Write the held frames (if any) and forget them; `now` is when.
    /// Counts the write in `writes`.
    fn write_held(&mut self, now: Instant, writes: &AtomicU64) -> std::io::Result<()> {
        if !self.held.is_empty() {
            writes.fetch_add(1, Ordering::Relaxed);
            let written = self.stream.write_all(&self.held);
            self.held.clear();
            self.last_write = now;
            written?;
        }
        self.held_since = None;
        self.flush_by = None;
        Ok(())
    }
}

/// Bursts ended by waiting requests after which the flusher is no longer
/// woken for each one.
const TRUST_CALLS: u32 = 16;
/// The flusher's tick while the connection is busy: the most held frames
/// wait when it was not woken for them.
const FLUSHER_TICK: Duration = Duration::from_millis(1);
/// Quiet time after which the flusher stops ticking.
const FLUSHER_IDLE: Duration = Duration::from_millis(100);

/// The most bytes of streamed frames held back before they are written.
const HOLD_LIMIT: usize = 64 << 10;
/// Frames with more bulk data than this are written at once.
const HOLD_BULK: usize = 4 << 10;

/// The read side of the connection: held by the one thread reading frames.
struct ReadSide {
    stream: FrameReader<Polling<Box<dyn PollRead>>>,
    msg: Vec<u8>,
}

/// Wakes the background reader when replies are outstanding and no caller
/// is reading them.
#[derive(Default)]
struct Wake {
    wanted: Mutex<bool>,
    cv: Condvar,
}

/// Counters of what crossed the wire, for the call report and benchmarks.
#[derive(Default)]
pub struct Traffic {
    pub round_trips: AtomicU64,
    pub streamed: AtomicU64,
    pub bytes_out: AtomicU64,
    /// Writes to the connection (of one or more frames each).
    pub writes: AtomicU64,
    pub bytes_in: AtomicU64,
}

/// The connection to one GPU server.
pub struct Remote {
    writer: Mutex<Writer>,
    /// Wakes the flusher when frames are held, and when the connection dies.
    flusher: Condvar,
    hold: Duration,
    read_side: Mutex<ReadSide>,
    wake: Wake,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    dead: AtomicBool,
    dead_reason: OnceLock<String>,
    /// Frames were taken in without a caller waiting for them
    /// ([`Remote::take_arrived`]): the next request says so
    /// (`FLAG_NOTICES_TAKEN`), and the server may send more notices unasked.
    notices_taken: AtomicBool,
    /// See [`Remote::answered_up_to`].
    answered: AtomicU64,
    /// See [`Remote::last_place`].
    placed: AtomicU64,
    poll: Duration,
    pub session: SessionInfo,
    pub peer: String,
    pub traffic: Traffic,
    close: Box<dyn Fn() + Send + Sync>,
    _keep: Option<Box<dyn std::any::Any + Send + Sync>>,
    /// Takes the server's notices of completed watched event records
    /// (`Reply::EventsDone`): (event, generation).
    events_done: OnceLock<EventsDoneFn>,
    /// Who takes what the server's driver wrote for the program
    /// (`Reply::Output`): (fd, bytes).
    output: OnceLock<OutputFn>,
}

/// What takes `Reply::EventsDone`'s (event, generation) pairs.
pub type EventsDoneFn = fn(&[(u64, u64)]);

/// What takes `Reply::Output`'s bytes for a standard stream.
pub type OutputFn = fn(u8, &[u8]);

/// What the connection needs from configuration.
pub struct ConnectOptions {
    pub url: ServerUrl,
    pub tls: ClientTls,
    pub lease_token: Option<String>,
    /// How long a caller polls a TCP connection for its reply before it
    /// sleeps (`GPUPOOL_POLL_US`).
    pub poll: Duration,
    /// Pin the I/O threads near the NIC that reaches the server
    /// (`GPUPOOL_PIN_IO`).
    pub pin_io: bool,
    /// The most a streamed request waits in the shim for others to go with
    /// it in one write (`GPUPOOL_HOLD_US`; zero writes each at once).
    pub hold: Duration,
    /// The program's `CUDA_VISIBLE_DEVICES`, told in the hello.
    pub visible_devices: Option<String>,
    /// The driver's variables the program set, told in the hello.
    pub driver_env: Vec<(String, String)>,
}

/// The CPUs near the network device that carries traffic to the server at
/// `url`; `None` on loopback, virtual devices and machines without NUMA.
fn io_cpu_set(url: &ServerUrl) -> Option<affinity::CpuSet> {
    use std::net::ToSocketAddrs;
    let peer = (url.host.as_str(), url.port).to_socket_addrs().ok()?.next()?;
    let cpus = affinity::cpus_towards(peer)?;
    tracing::debug!(cpus = ?cpus, "CPUs near the NIC that reaches the server");
    affinity::CpuSet::new(&cpus)
}

impl Remote {
    /// Connect, shake hands, and start the background reader.
    pub fn connect(opts: &ConnectOptions) -> Result<Arc<Remote>, ProtoError> {
        // A QUIC server may hand the session to a worker on a port of its
        // own (`Welcome::Redirect`): connect there once, with the ticket.
        let mut url = opts.url.clone();
        let mut ticket = None;
        let (writer, keep, close, peer, reader, session, scratch) = loop {
            let ClientStream {
                reader,
                mut writer,
                keep,
                close,
                peer,
            } = transport::connect(&url, &opts.tls)?;
            let mut reader = FrameReader::with_capacity(256 << 10, Polling::new(reader, Duration::ZERO));
            let mut hello = Hello::new(opts.lease_token.clone(), client_info());
            hello.session_ticket = ticket;
            hello.visible_devices = opts.visible_devices.clone();
            hello.driver_env = opts.driver_env.clone();
            let mut scratch = Vec::new();
            frame::write_frame(&mut *writer, &mut scratch, 0, FLAG_WANTS_REPLY, &hello, &[], MAX_FRAME)?;
            writer.flush()?;
            let mut msg = Vec::new();
            let header = frame::read_frame(&mut reader, &mut msg, MAX_FRAME)?;
            frame::skip_bulk(&mut reader, header.bulk_len)?;
            match codec::decode::<Welcome>(&msg)? {
                Welcome::Accepted(info) => break (writer, keep, close, peer, reader, info, scratch),
                Welcome::Refused { reason } => return Err(ProtoError::Refused(reason)),
                Welcome::Redirect { port, ticket: t } if ticket.is_none() && url.scheme == transport::Scheme::Quic => {
                    close();
                    drop(keep);
                    url.port = port;
                    ticket = Some(t);
                }
                Welcome::Redirect { .. } => {
                    return Err(ProtoError::Malformed(format!(
                        "{url} redirected the session again or over TCP"
                    )))
                }
            }
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
                held: Vec::new(),
                held_since: None,
                flush_by: None,
                last_write: Instant::now(),
                ended_by_calls: 0,
                flusher_asleep: false,
                flusher_wrote: None,
                sent: 0,
            }),
            flusher: Condvar::new(),
            hold: opts.hold,
            read_side: Mutex::new(ReadSide {
                stream: reader,
                msg: Vec::new(),
            }),
            wake: Wake::default(),
            pending: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            dead: AtomicBool::new(false),
            dead_reason: OnceLock::new(),
            notices_taken: AtomicBool::new(false),
            answered: AtomicU64::new(0),
            placed: AtomicU64::new(0),
            // Polling pays off where the kernel hands the bytes over (TCP).
            // A QUIC stream's bytes come through the runtime's own thread,
            // which a polling caller would starve of a core.
            poll: match opts.url.scheme {
                transport::Scheme::Tcp => opts.poll,
                transport::Scheme::Quic => Duration::ZERO,
            },
            session,
            peer,
            traffic: Traffic::default(),
            close,
            _keep: keep,
            events_done: OnceLock::new(),
            output: OnceLock::new(),
        });
        let pin = if opts.pin_io { io_cpu_set(&url) } else { None };
        if !opts.hold.is_zero() {
            let for_flusher = Arc::clone(&remote);
            std::thread::Builder::new()
                .name("gpupool-flusher".into())
                .spawn(move || for_flusher.flusher())?;
        }
        let for_reader = Arc::clone(&remote);
        std::thread::Builder::new()
            .name("gpupool-reader".into())
            .spawn(move || {
                if let Some(set) = pin {
                    let _ = set.apply(0);
                }
                for_reader.background_reader()
            })?;
        if let Some(set) = &pin {
            // The QUIC runtime's thread moves every packet of the session.
            let quic = affinity::pin_threads_named(transport::QUIC_CLIENT_THREAD, set);
            tracing::info!(
                quic_threads = quic,
                "I/O threads pinned near the NIC that reaches the server"
            );
        }
        Ok(remote)
    }

    fn lost(&self) -> CuError {
        CuError::DEVICE_UNAVAILABLE
    }

    /// Why the connection is gone, if it is.
    pub fn dead_reason(&self) -> Option<&str> {
        self.dead_reason.get().map(String::as_str)
    }

    /// Send one frame. A streamed frame (no reply asked for) that follows
    /// a write within the hold time is held back and goes in one write
    /// with those after it: with the next request that waits for its reply,
    /// once `HOLD_LIMIT` bytes are held, with the first streamed request
    /// that finds them held for the hold time, or from the flusher thread
    /// (by the hold time when woken for the burst, else at its tick). A
    /// write costs a system call, which on loopback costs more than the
    /// launch it carries; a streamed request after a quiet spell goes at
    /// once.
    fn send(&self, id: u64, flags: u32, req: &Request, bulk: &[u8]) -> CuResult {
        self.send_placed(id, flags, req, bulk, &[]).map(|_| ())
    }

    /// As `send`, answering the request's place in the order the server
    /// gets requests, which is recorded in its pending entry (when it wants
    /// a reply) and in those of `answered_by`, for their answers.
    fn send_placed(&self, id: u64, flags: u32, req: &Request, bulk: &[u8], answered_by: &[u64]) -> CuResult<u64> {
        if self.dead.load(Ordering::Acquire) {
            return Err(self.lost());
        }
        let mut guard = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        let w = &mut *guard;
        let flags = if self.notices_taken.swap(false, Ordering::Relaxed) {
            flags | FLAG_NOTICES_TAKEN
        } else {
            flags
        };
        let now = Instant::now();
        w.sent += 1;
        let place = w.sent;
        self.placed.store(place, Ordering::Release);
        if flags & FLAG_WANTS_REPLY != 0 || !answered_by.is_empty() {
            let mut pending = self.lock_pending();
            for i in answered_by.iter().chain((flags & FLAG_WANTS_REPLY != 0).then_some(&id)) {
                if let Some(p) = pending.get_mut(i) {
                    p.sent = place;
                }
            }
        }
        // Was the flusher's last write one the program would soon have made
        // itself? Then it does not count against trusting the program.
        if let Some(at) = w.flusher_wrote.take() {
            if now.saturating_duration_since(at) < FLUSHER_TICK {
                w.ended_by_calls = w.ended_by_calls.saturating_add(1);
            } else {
                w.ended_by_calls = 0;
            }
        }
        let streamed = flags & FLAG_WANTS_REPLY == 0;
        let small = bulk.len() <= HOLD_BULK;
        let hold = streamed
            && small
            && !self.hold.is_zero()
            && (!w.held.is_empty() || now.saturating_duration_since(w.last_write) < self.hold);
        let writes = &self.traffic.writes;
        let result = if hold {
            frame::encode_frame(&mut w.scratch, id, flags, req, bulk, MAX_FRAME).and_then(|()| {
                w.held.extend_from_slice(&w.scratch);
                // Frames held for the hold time go now, from this thread:
                // the flusher is only for the last ones of a burst.
                let due = w
                    .held_since
                    .is_some_and(|since| now.saturating_duration_since(since) >= self.hold);
                if w.held.len() >= HOLD_LIMIT || due {
                    w.write_held(now, writes)?;
                    w.ended_by_calls = w.ended_by_calls.saturating_add(1);
                } else if w.held_since.is_none() {
                    w.held_since = Some(now);
                    // Waking the flusher costs two context switches; while
                    // the program's own requests take the bursts along, the
                    // flusher's tick is enough of a backstop.
                    if w.flusher_asleep || w.ended_by_calls < TRUST_CALLS {
                        w.flush_by = Some(now + self.hold);
                        self.flusher.notify_one();
                    } else {
                        w.flush_by = Some(now + FLUSHER_TICK);
                    }
                }
                Ok(w.scratch.len())
            })
        } else if !w.held.is_empty() && small {
            // The held frames and this one in one write.
            w.ended_by_calls = w.ended_by_calls.saturating_add(1);
            frame::encode_frame(&mut w.scratch, id, flags, req, bulk, MAX_FRAME).and_then(|()| {
                w.held.extend_from_slice(&w.scratch);
                w.write_held(now, writes)?;
                Ok(w.scratch.len())
            })
        } else {
            w.write_held(now, writes)
                .map_err(ProtoError::from)
                .and_then(|()| {
                    writes.fetch_add(1, Ordering::Relaxed);
                    frame::write_frame(&mut *w.stream, &mut w.scratch, id, flags, req, bulk, MAX_FRAME)
                })
                .inspect(|_| w.last_write = now)
        };
        match result {
            Ok(bytes) => {
                self.traffic.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
                Ok(place)
            }
            Err(ProtoError::FrameTooLarge { .. }) | Err(ProtoError::Encode(_)) => Err(CuError::INVALID_VALUE),
            Err(e) => {
                drop(guard);
                self.mark_dead(format!("sending to {} failed: {e}", self.peer));
                Err(self.lost())
            }
        }
    }

    /// The flusher thread: writes held frames by their deadline.
    fn flusher(&self) {
        // Wake-ups come within a microsecond or so of the deadline, not the
        // 50 µs the kernel's default timer slack allows.
        // SAFETY: PR_SET_TIMERSLACK sets this thread's timer slack (ns).
        unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
        let mut w = self.writer.lock().unwrap_or_else(|p| p.into_inner());
        while !self.dead.load(Ordering::Acquire) {
            let now = Instant::now();
            let Some(by) = w.flush_by else {
                if w.held.is_empty() && now.saturating_duration_since(w.last_write) >= FLUSHER_IDLE {
                    w.flusher_asleep = true;
                    w = self.flusher.wait(w).unwrap_or_else(|p| p.into_inner());
                    w.flusher_asleep = false;
                } else {
                    w = self
                        .flusher
                        .wait_timeout(w, FLUSHER_TICK)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
                continue;
            };
            if now < by {
                let wait = (by - now).min(FLUSHER_TICK);
                w = self.flusher.wait_timeout(w, wait).unwrap_or_else(|p| p.into_inner()).0;
                continue;
            }
            if !w.held.is_empty() {
                // Whether the program needed this write shows at its next
                // request (see `send`).
                w.flusher_wrote = Some(now);
            }
            if let Err(e) = w.write_held(now, &self.traffic.writes) {
                drop(w);
                self.mark_dead(format!("sending to {} failed: {e}", self.peer));
                return;
            }
        }
    }

    /// Stream a status-only request: no reply is asked for; a failure is kept
    /// by the server and returned by the next synchronising call.
    pub fn post(&self, req: &Request, bulk: &[u8]) -> CuResult {
        self.post_placed(req, bulk).map(|_| ())
    }

    /// As [`Remote::post`], answering the request's place in the order the
    /// server gets requests: an answer the server gives to a request placed
    /// before it cannot tell of its work ([`Remote::answered_up_to`]).
    pub fn post_placed(&self, req: &Request, bulk: &[u8]) -> CuResult<u64> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.traffic.streamed.fetch_add(1, Ordering::Relaxed);
        crate::report::note_streamed();
        self.send_placed(id, 0, req, bulk, &[])
    }

    /// The latest place (see [`Remote::post_placed`]) of a request whose
    /// answer has been read (a reply, copy data): the server answers in
    /// order, so no answer read can tell of work placed after it.
    pub fn answered_up_to(&self) -> u64 {
        self.answered.load(Ordering::Acquire)
    }

    /// Send a request and wait for its reply. A `Status`/`Done` reply with an
    /// error becomes `Err`.
    /// A status-only request: waited for (`call`) when `wait`, streamed
    /// (`post`) otherwise.
    pub fn call_or_post(&self, req: &Request, bulk: &[u8], wait: bool) -> CuResult {
        if wait {
            self.call(req, bulk).map(|_| ())
        } else {
            self.post(req, bulk)
        }
    }

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
        // SAFETY: the caller's promise, passed on.
        unsafe { self.call_into_sink(req, Sink::linear(dst, len), wait) }
    }

    /// As [`Remote::call_into`], into any sink.
    ///
    /// # Safety
    /// Every byte the sink names must stay valid and writable until the data
    /// has landed.
    pub unsafe fn call_into_sink(&self, req: &Request, sink: Sink, wait: bool) -> CuResult {
        if wait {
            self.call_with_sink(req, &[], Some(sink)).map(|_| ())
        } else {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            self.lock_pending().insert(
                id,
                Pending {
                    sink: Some(sink),
                    ..Pending::default()
                },
            );
            self.traffic.streamed.fetch_add(1, Ordering::Relaxed);
            crate::report::note_streamed();
            self.send(id, FLAG_WANTS_REPLY, req, &[]).inspect_err(|_| {
                self.lock_pending().remove(&id);
            })?;
            // Nobody waits for this reply: the background reader lands it.
            self.wake_background();
            Ok(())
        }
    }

    /// Send a request whose reply may come much later, after replies to
    /// later requests (a host function's, when its stream reaches it), and
    /// return at once. `on_reply(id)` makes, before the request is sent, what
    /// the thread that reads the reply calls with its status; it is called
    /// exactly once, with the error if the request cannot be sent or the
    /// connection is lost first.
    pub fn call_later(&self, req: &Request, on_reply: impl FnOnce(u64) -> Box<dyn FnOnce(u32) + Send>) -> CuResult {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock_pending().insert(
            id,
            Pending {
                on_reply: Some(on_reply(id)),
                ..Pending::default()
            },
        );
        self.traffic.streamed.fetch_add(1, Ordering::Relaxed);
        crate::report::note_streamed();
        if let Err(e) = self.send(id, FLAG_WANTS_REPLY, req, &[]) {
            // Unless the connection's loss already answered it.
            if let Some(f) = self.lock_pending().remove(&id).and_then(|p| p.on_reply) {
                f(e.0);
            }
            return Err(e);
        }
        // Nobody waits for this reply: the background reader takes it.
        self.wake_background();
        Ok(())
    }

    /// Stream the request `req(ids)` makes of `n` new request ids, each of
    /// which the server answers later as it answers a host function's
    /// request (`Request::GraphHostCalls`): `on_reply(i, id)` makes, before
    /// anything is sent, what the reading thread calls with the `i`th's
    /// status, exactly once (with the send's error if it fails).
    pub fn post_with_replies(
        &self,
        n: usize,
        mut on_reply: impl FnMut(usize, u64) -> Box<dyn FnOnce(u32) + Send>,
        req: impl FnOnce(&[u64]) -> Request,
    ) -> CuResult {
        let ids: Vec<u64> = (0..n).map(|_| self.next_id.fetch_add(1, Ordering::Relaxed)).collect();
        {
            let mut pending = self.lock_pending();
            for (i, &id) in ids.iter().enumerate() {
                pending.insert(
                    id,
                    Pending {
                        on_reply: Some(on_reply(i, id)),
                        ..Pending::default()
                    },
                );
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.traffic.streamed.fetch_add(1, Ordering::Relaxed);
        crate::report::note_streamed();
        if let Err(e) = self.send_placed(id, 0, &req(&ids), &[], &ids) {
            for id in ids {
                // Unless the connection's loss already answered it.
                if let Some(f) = self.lock_pending().remove(&id).and_then(|p| p.on_reply) {
                    f(e.0);
                }
            }
            return Err(e);
        }
        // Nobody waits for these replies: the background reader takes them.
        self.wake_background();
        Ok(())
    }

    /// Send a streamed device-to-host copy whose data must not land in the
    /// program's memory as it comes: it is read into a buffer of the shim's,
    /// and `on_reply(id)` makes, before the request is sent, what the reading
    /// thread calls with the reply's status and that buffer (the caller lands
    /// it when it may). Called exactly once, as [`Remote::call_later`]'s.
    pub fn call_staged(
        &self,
        req: &Request,
        sink: Sink,
        on_reply: impl FnOnce(u64) -> Box<dyn FnOnce(u32, Staged) + Send>,
    ) -> CuResult {
        let mut buf = vec![0u8; sink.len];
        // The buffer's heap block does not move with the Vec; the reader
        // fills it through this sink before the reply that hands it on.
        let staging = Sink::linear(buf.as_mut_ptr(), sink.len);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let land = on_reply(id);
        let staged = Staged { buf, sink };
        self.lock_pending().insert(
            id,
            Pending {
                sink: Some(staging),
                on_reply: Some(Box::new(move |status| land(status, staged))),
                ..Pending::default()
            },
        );
        self.traffic.streamed.fetch_add(1, Ordering::Relaxed);
        crate::report::note_streamed();
        if let Err(e) = self.send(id, FLAG_WANTS_REPLY, req, &[]) {
            if let Some(f) = self.lock_pending().remove(&id).and_then(|p| p.on_reply) {
                f(e.0);
            }
            return Err(e);
        }
        self.wake_background();
        Ok(())
    }

    fn call_with_sink(&self, req: &Request, bulk: &[u8], sink: Option<Sink>) -> CuResult<Reply> {
        self.call_placed_with_sink(req, bulk, sink).map(|(reply, _)| reply)
    }

    /// As [`Remote::call`], answering also the request's place in the
    /// order the server gets requests ([`Remote::last_place`]).
    pub fn call_placed(&self, req: &Request, bulk: &[u8]) -> CuResult<(Reply, u64)> {
        self.call_placed_with_sink(req, bulk, None)
    }

    /// The place of the latest request sent, by any thread: a request
    /// placed at `p` is the latest sent while this answers `p`.
    pub fn last_place(&self) -> u64 {
        self.placed.load(Ordering::Acquire)
    }

    fn call_placed_with_sink(&self, req: &Request, bulk: &[u8], sink: Option<Sink>) -> CuResult<(Reply, u64)> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let waiter = Arc::new(Waiter::default());
        self.lock_pending().insert(
            id,
            Pending {
                waiter: Some(Arc::clone(&waiter)),
                sink,
                ..Pending::default()
            },
        );
        self.traffic.round_trips.fetch_add(1, Ordering::Relaxed);
        crate::report::note_round_trip();
        let place = match self.send_placed(id, FLAG_WANTS_REPLY, req, bulk, &[]) {
            Ok(place) => place,
            Err(e) => {
                self.lock_pending().remove(&id);
                return Err(e);
            }
        };
        let reply = self.await_reply(&waiter)?;
        match reply.status() {
            0 => Ok((reply, place)),
            s => Err(CuError(s)),
        }
    }

    /// Who takes the server's notices of completed event records (once).
    pub fn on_events_done(&self, f: EventsDoneFn) {
        let _ = self.events_done.set(f);
    }

    /// Who takes what the server's driver wrote for the program (once).
    pub fn on_output(&self, f: OutputFn) {
        let _ = self.output.set(f);
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// End the session at process exit: the server frees what it held at
    /// once.
    pub fn end(&self) {
        // What is held still goes: the server runs it before it sees the
        // connection close, as it would have had it been written at once.
        if let Ok(mut w) = self.writer.try_lock() {
            if !self.dead.load(Ordering::Acquire) {
                let _ = w
                    .write_held(Instant::now(), &self.traffic.writes)
                    .and_then(|()| w.stream.flush());
            }
        }
        self.dead.store(true, Ordering::Release);
        self.flusher.notify_all();
        (self.close)();
    }

    /// End the session from the client side (its lease ended): every later
    /// call fails with `reason` logged once, and a thread blocked reading the
    /// connection returns.
    pub fn fail(&self, reason: String) {
        self.mark_dead(reason);
        (self.close)();
    }

    fn mark_dead(&self, reason: String) {
        self.flusher.notify_all();
        if !self.dead.swap(true, Ordering::AcqRel) {
            tracing::error!(server = %self.peer, "{reason}; every later CUDA call fails with CUDA_ERROR_DEVICE_UNAVAILABLE");
            let _ = self.dead_reason.set(reason);
        }
        let pending: Vec<Pending> = self.lock_pending().drain().map(|(_, p)| p).collect();
        for p in pending {
            if let Some(w) = p.waiter {
                w.deliver(Err(self.lost()));
            }
            if let Some(f) = p.on_reply {
                f(self.lost().0);
            }
        }
    }

    /// Wait for `waiter`'s reply, reading the connection ourselves when no
    /// other thread is.
    fn await_reply(&self, waiter: &Waiter) -> Result<Reply, CuError> {
        if !waiter.is_filled() && !self.dead.load(Ordering::Acquire) {
            let side = match self.read_side.try_lock() {
                Ok(side) => Some(side),
                Err(std::sync::TryLockError::Poisoned(p)) => Some(p.into_inner()),
                Err(std::sync::TryLockError::WouldBlock) => None,
            };
            if let Some(mut side) = side {
                // Our reply is due within a round trip: poll for it rather
                // than sleep and pay a wake-up.
                side.stream.get_mut().set_spin(self.poll);
                while !waiter.is_filled() && !self.dead.load(Ordering::Acquire) {
                    if let Err(reason) = self.read_one(&mut side) {
                        drop(side);
                        self.mark_dead(reason);
                        return waiter.wait();
                    }
                }
                drop(side);
                self.hand_over();
            }
            // Otherwise the thread that holds the read side delivers our
            // reply, or hands over to the background reader before it lets
            // go (`hand_over`).
        }
        waiter.wait()
    }

    /// Take in the frames the server has already sent (notices of completed
    /// event records among them), without waiting for any: whether any was.
    /// Nothing is taken while another thread reads the connection, and a
    /// frame not wholly arrived is left for the next reader.
    pub fn take_arrived(&self) -> bool {
        if self.dead.load(Ordering::Acquire) {
            return false;
        }
        let mut side = match self.read_side.try_lock() {
            Ok(side) => side,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        let mut took = false;
        loop {
            if !side.stream.frame_buffered() {
                match side.stream.take_arrived() {
                    Ok(true) => continue,
                    Ok(false) => break,
                    // The reader that waits next tells the failure.
                    Err(_) => break,
                }
            }
            if let Err(reason) = self.read_one(&mut side) {
                drop(side);
                self.mark_dead(reason);
                return took;
            }
            took = true;
        }
        drop(side);
        if took {
            self.notices_taken.store(true, Ordering::Relaxed);
        }
        self.hand_over();
        took
    }

    /// After letting go of the read side: if replies are still outstanding,
    /// the background reader must read them.
    fn hand_over(&self) {
        if !self.lock_pending().is_empty() {
            self.wake_background();
        }
    }

    fn wake_background(&self) {
        let mut wanted = self.wake.wanted.lock().unwrap_or_else(|p| p.into_inner());
        *wanted = true;
        self.wake.cv.notify_one();
    }

    /// Reads for outstanding replies that no caller reads: streamed
    /// device-to-host copies, and replies left when a reading caller got its
    /// own and returned.
    fn background_reader(self: Arc<Self>) {
        loop {
            {
                let mut wanted = self.wake.wanted.lock().unwrap_or_else(|p| p.into_inner());
                while !*wanted {
                    wanted = self.wake.cv.wait(wanted).unwrap_or_else(|p| p.into_inner());
                }
                *wanted = false;
            }
            loop {
                if self.dead.load(Ordering::Acquire) {
                    return;
                }
                let mut side = self.read_side.lock().unwrap_or_else(|p| p.into_inner());
                // Nobody waits on these replies: sleep until they come.
                side.stream.get_mut().set_spin(Duration::ZERO);
                while !self.lock_pending().is_empty() && !self.dead.load(Ordering::Acquire) {
                    if let Err(reason) = self.read_one(&mut side) {
                        drop(side);
                        self.mark_dead(reason);
                        return;
                    }
                }
                drop(side);
                // A caller may have registered a reply after the last check
                // and failed to take the read side while we held it.
                if self.lock_pending().is_empty() {
                    break;
                }
            }
        }
    }

    /// Read and dispatch one frame; an error is the reason the connection
    /// is gone.
    fn read_one(&self, side: &mut ReadSide) -> Result<(), String> {
        let ReadSide { stream, msg } = side;
        self.read_frame(stream, msg).map_err(|e| match e {
            ProtoError::Closed => format!("server {} closed the connection", self.peer),
            e => format!("connection to {} failed: {e}", self.peer),
        })
    }

    fn read_frame(&self, reader: &mut impl Read, msg: &mut Vec<u8>) -> Result<(), ProtoError> {
        let header = frame::read_frame(reader, msg, MAX_FRAME)?;
        let reply: Reply = codec::decode(msg)?;
        self.traffic.bytes_in.fetch_add(
            frame::HEADER_LEN as u64 + u64::from(header.msg_len) + header.bulk_len,
            Ordering::Relaxed,
        );
        if header.id == NOTICE_ID {
            frame::skip_bulk(reader, header.bulk_len)?;
            return match reply {
                Reply::EventsDone { events } => {
                    if let Some(f) = self.events_done.get() {
                        f(&events);
                    }
                    Ok(())
                }
                Reply::Output { fd, bytes } => {
                    if let Some(f) = self.output.get() {
                        f(fd, &bytes);
                    }
                    Ok(())
                }
                other => Err(ProtoError::Malformed(format!("unknown notice {other:?}"))),
            };
        }
        if let Reply::Data { offset } = reply {
            let (sink, sent) = self
                .lock_pending()
                .get(&header.id)
                .map_or((None, 0), |p| (p.sink, p.sent));
            self.answered.fetch_max(sent, Ordering::AcqRel);
            let Sink { addr, len, rows } = sink
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
            let (width, pitch) = rows.unwrap_or((len.max(1), len.max(1)));
            let mut at = offset as usize;
            while at < end as usize {
                let (row, col) = (at / width, at % width);
                let n = (width - col).min(end as usize - at);
                // SAFETY: the caller of `call_into_sink` promised that every
                // byte the sink names stays valid and writable until the
                // reply completes; packed byte `at` (checked below `len`)
                // lies in row `row` at column `col`, and the segment ends
                // within that row.
                let dst = unsafe { std::slice::from_raw_parts_mut((addr as *mut u8).add(row * pitch + col), n) };
                frame::read_bulk(reader, dst)?;
                at += n;
            }
            return Ok(());
        }
        frame::skip_bulk(reader, header.bulk_len)?;
        let pending = self.lock_pending().remove(&header.id);
        if let Some(p) = &pending {
            self.answered.fetch_max(p.sent, Ordering::AcqRel);
        }
        match pending {
            Some(Pending { waiter: Some(w), .. }) => w.deliver(Ok(reply)),
            Some(Pending { on_reply: Some(f), .. }) => f(reply.status()),
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
    let host = gpupool_proto::handshake::host_name().unwrap_or_default();
    ClientInfo {
        host,
        pid: std::process::id(),
        program,
    }
}
