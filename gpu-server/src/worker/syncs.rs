//! Synchronising calls that do not hold the session: `StreamSynchronize`,
//! `EventSynchronize` and `CtxSynchronize`.
//!
//! A session serves all of its client's threads, one request at a time. A
//! synchronise that blocked the session's thread in the driver would hold
//! every other thread's requests behind it: threads that each launch on
//! their own stream and synchronise it would not overlap, and a stream
//! waiting for a word that another thread writes later
//! (`cuStreamWaitValue32` against a later `cuStreamWriteValue32`) would
//! hold the session for good. So a synchronise whose work is not done is
//! waited for in one of two ways:
//!
//! - **Polled by the session's thread** ([`SPIN`] at most), as the driver
//!   polls by default, while no other request arrives: a single-threaded
//!   program's synchronise (a training step's) is answered as soon as its
//!   work is done, with no hand-over between threads. A stream's and an
//!   event's are polled with their queries. A context has no query: the
//!   session polls an event of its own recorded on each of the context's
//!   streams that a request named since the context's last synchronise
//!   (`Worker::busy`; typically one or two in a training loop).
//! - **Parked** once another request arrives, or the time is up: a thread
//!   of the session's (`gpupool-sync`, one per parked synchronise, kept
//!   for the next) waits in the driver, and tells the session when it is
//!   done through the same hand-over as host functions ([`Reach::Synced`]).
//!   The session goes on with later requests, and answers the synchronise
//!   when told, after the host functions it waited for.
//!
//! What polling finds done is then asked of the driver by its own call,
//! on the session's thread, which returns at once: the answer (its errors
//! included) is always the driver's, and a context's work that no stream
//! named can only make the call wait, never answer early.
//!
//! What a parked synchronise waits for is fixed at its place in the
//! request order, as the driver fixes it when the call is made:
//! - a stream's: an event of the server's, recorded on the stream when it
//!   is parked (no request of the session's ran in between);
//! - an event's: the event itself, as the program recorded it;
//! - a context's: `cuCtxSynchronize` on the waiting thread, which also
//!   waits for work that other threads enqueued after it (a context has
//!   no record to wait for; waiting longer never answers early).
//!
//! Its answer is its own error, else the first error that a streamed call
//! of its context left before it. Errors that streamed calls leave after
//! it are told by the next synchronising call.
//!
//! A context does not go while a synchronise waits on it: destroying,
//! releasing or resetting it waits for those first (they end by
//! themselves unless the program destroys what another of its threads
//! still waits for).

use super::{Reach, Reached, Worker};
use crate::driver::{Ptr, Status, Waits};
use gpupool_proto::frame;
use gpupool_proto::message::{Handle, Reply, Request};
use gpupool_proto::transport::WaitRead;
use gpupool_proto::ProtoError;
use std::collections::VecDeque;
use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// The longest the session's thread polls a synchronise's work while no
/// other request arrives. A longer wait costs one hand-over between
/// threads (some microseconds) on top of it.
pub(super) const SPIN: Duration = Duration::from_millis(5);
/// How often polling looks for another request (and host functions
/// reached).
const LOOK: Duration = Duration::from_micros(5);
/// How long a context that goes, or a session that ends, waits for the
/// synchronises that wait on it.
const SETTLE: Duration = Duration::from_secs(10);
const SETTLE_AT_END: Duration = Duration::from_secs(1);
/// `CUDA_ERROR_NOT_READY`.
const NOT_READY: Status = 600;
/// `CU_EVENT_DISABLE_TIMING`.
const DISABLE_TIMING: u32 = 0x2;

/// A synchronise the session answers when a helper tells it.
pub(super) struct Parked {
    /// The request to answer.
    id: u64,
    /// The context whose streamed errors it answers, and the first of
    /// those, taken at its place.
    ctx: Handle,
    kept: Option<Status>,
    /// The server's event recorded on the stream, and its context: back
    /// to that context's spares once told.
    own: Option<(Handle, Ptr)>,
    /// Set by the helper when the driver's wait returned.
    done: Arc<AtomicBool>,
    /// Its place in the request order (`calls`): once a context's
    /// synchronise succeeds, the context's streams named before it are
    /// idle.
    place: u64,
    /// A context's synchronise.
    whole_context: bool,
}

/// What a helper waits for.
#[derive(Clone, Copy)]
enum Wait {
    Event(usize),
    Context(usize),
}

struct Job {
    id: u64,
    wait: Wait,
    done: Arc<AtomicBool>,
    reached: Arc<Reached>,
}

#[derive(Default)]
struct Queue {
    jobs: VecDeque<Job>,
    /// Helpers not waiting in the driver (spinning or asleep): each takes
    /// the next job.
    free: usize,
    closed: bool,
}

struct Shared {
    queue: Mutex<Queue>,
    work: Condvar,
}

/// The session's helper threads, which wait in the driver for parked
/// synchronises. One is started whenever a job would otherwise wait for a
/// helper to finish another wait: two parked synchronises never wait in
/// turn.
pub(super) struct Helpers {
    waits: Waits,
    shared: Arc<Shared>,
}

impl Helpers {
    pub(super) fn new(waits: Waits) -> Helpers {
        Helpers {
            waits,
            shared: Arc::new(Shared {
                queue: Mutex::new(Queue::default()),
                work: Condvar::new(),
            }),
        }
    }

    /// Have a helper wait; false when no thread could be started.
    fn submit(&self, job: Job) -> bool {
        let mut q = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
        if q.jobs.len() >= q.free {
            let shared = Arc::clone(&self.shared);
            let waits = self.waits;
            let started = std::thread::Builder::new()
                .name("gpupool-sync".into())
                .spawn(move || helper(waits, &shared));
            if started.is_err() {
                return false;
            }
            q.free += 1;
        }
        q.jobs.push_back(job);
        self.shared.work.notify_one();
        true
    }
}

impl Drop for Helpers {
    fn drop(&mut self) {
        self.shared.queue.lock().unwrap_or_else(|p| p.into_inner()).closed = true;
        self.shared.work.notify_all();
    }
}

/// A helper thread: waits in the driver for each job it takes, and tells
/// the session. It ends when the session's helpers go; one still waiting
/// then goes with the session's process.
fn helper(waits: Waits, shared: &Shared) {
    loop {
        let job = {
            let mut q = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(job) = q.jobs.pop_front() {
                    q.free -= 1;
                    break job;
                }
                if q.closed {
                    return;
                }
                q = shared.work.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        let result = match job.wait {
            // SAFETY: the event is live until the session is told (the
            // server's own goes back to its spares only then; a program's
            // is the program's, which waits for this).
            Wait::Event(e) => unsafe { waits.event_synchronize(e as Ptr) },
            // SAFETY: a context waited on does not go before this is told
            // (`settle_parked`).
            Wait::Context(c) => unsafe { waits.ctx_synchronize(c as Ptr) },
        };
        let status = result.err().unwrap_or(0);
        job.reached
            .ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Reach::Synced { id: job.id, status });
        // After the push: a session that sees `done` finds the answer.
        job.done.store(true, Ordering::Release);
        job.reached.wake.wake();
        shared.queue.lock().unwrap_or_else(|p| p.into_inner()).free += 1;
    }
}

impl Worker<'_> {
    /// A synchronising request that wants its answer: `Some` when it is
    /// answered now, `None` when it was parked (answered later, by
    /// [`Worker::answer_parked`]).
    pub(super) fn synchronise<R: WaitRead, W: Write>(
        &mut self,
        id: u64,
        request: Request,
        reader: &mut BufReader<R>,
        writer: &mut W,
    ) -> Result<Option<Reply>, ProtoError> {
        // A synchronise in a capture fails as the driver decides (and ends
        // the capture): it answers at once.
        if self.captures > 0 || self.reached.is_none() {
            return Ok(Some(self.synchronise_here(request)));
        }
        let d = self.driver;
        match request {
            Request::StreamSynchronize { ctx, stream } => {
                let s = match self.enter(ctx, stream) {
                    Ok(s) => s,
                    Err(e) => return Ok(Some(Reply::Status(self.sync_status(ctx, Err(e))))),
                };
                // SAFETY: s is resolved from this client's tables.
                let polled =
                    self.poll_while_alone(reader, writer, |_| unsafe { d.cuStreamQuery(s) } != Err(NOT_READY))?;
                if polled {
                    return Ok(Some(self.synchronise_here(request)));
                }
                match self.record_own(s) {
                    Some(own) => {
                        let kept = self.kept.remove(&ctx);
                        self.park(id, ctx, kept, Some(own), Wait::Event(own.1 as usize), request)
                    }
                    None => Ok(Some(self.synchronise_here(request))),
                }
            }
            Request::EventSynchronize { ctx, event } => {
                let ectx = self.tables.events.get(&event).copied().unwrap_or(ctx);
                if self.check_event(event).is_err() {
                    return Ok(Some(self.synchronise_here(request)));
                }
                let e = self.real(event);
                // SAFETY: the event belongs to this client.
                let polled =
                    self.poll_while_alone(reader, writer, |_| unsafe { d.cuEventQuery(e) } != Err(NOT_READY))?;
                if polled {
                    return Ok(Some(self.synchronise_here(request)));
                }
                let kept = self.kept.remove(&ectx);
                self.park(id, ectx, kept, None, Wait::Event(e as usize), request)
            }
            Request::CtxSynchronize { ctx } => {
                if let Err(e) = self.make_current(ctx) {
                    return Ok(Some(Reply::Status(self.sync_status(ctx, Err(e)))));
                }
                // The context's streams that took work since its last
                // synchronise, each with an event of the server's. Later
                // requests mark their streams afresh.
                let place = self.calls;
                self.last_busy = None;
                let busy: Vec<Ptr> = self
                    .busy
                    .iter()
                    .filter(|((c, _), _)| *c == ctx)
                    .map(|((_, s), _)| *s)
                    .collect();
                let mut own = Vec::with_capacity(busy.len());
                for s in busy {
                    match self.record_own(s) {
                        Some(o) => own.push(o),
                        None => break,
                    }
                }
                let polled = self.poll_while_alone(reader, writer, |w| {
                    own.iter()
                        // SAFETY: the server's events, live.
                        .all(|(_, e)| unsafe { w.driver.cuEventQuery(*e) } != Err(NOT_READY))
                })?;
                for (c, e) in own {
                    self.sync_events.entry(c).or_default().push(e);
                }
                if polled {
                    // The driver's own answer (at once, unless work went
                    // where no stream named it).
                    let reply = self.synchronise_here(request);
                    if reply == Reply::Status(0) {
                        self.forget_busy(|(c, _), at| *c != ctx || *at > place);
                    }
                    return Ok(Some(reply));
                }
                let kept = self.kept.remove(&ctx);
                self.park(id, ctx, kept, None, Wait::Context(ctx as usize), request)
            }
            other => Ok(Some(self.synchronise_here(other))),
        }
    }

    /// The synchronise done by the session's thread, in the driver.
    fn synchronise_here(&mut self, request: Request) -> Reply {
        let d = self.driver;
        self.call(d, request).1
    }

    /// Park the synchronise `request` (answered `id`): a helper waits for
    /// `wait`. Where no helper can be had, it is done here instead (`own`
    /// goes back first).
    fn park(
        &mut self,
        id: u64,
        ctx: Handle,
        kept: Option<Status>,
        own: Option<(Handle, Ptr)>,
        wait: Wait,
        request: Request,
    ) -> Result<Option<Reply>, ProtoError> {
        let done = Arc::new(AtomicBool::new(false));
        if !self.hand_to_helper(id, wait, Arc::clone(&done)) {
            tracing::warn!("no thread could be started to wait for a synchronise: the session waits for it itself");
            if let Some((c, e)) = own {
                self.sync_events.entry(c).or_default().push(e);
            }
            if let Some(k) = kept {
                self.kept.entry(ctx).or_insert(k);
            }
            return Ok(Some(self.synchronise_here(request)));
        }
        self.parked.push(Parked {
            id,
            ctx,
            kept,
            own,
            done,
            place: self.calls,
            whole_context: matches!(wait, Wait::Context(_)),
        });
        Ok(None)
    }

    /// Have a helper wait for `event` and tell `id` (a parked device-to-host
    /// copy, `copies`); false when no helper could be had.
    pub(super) fn helper_waits_for_event(&mut self, id: u64, event: Ptr, done: Arc<AtomicBool>) -> bool {
        self.hand_to_helper(id, Wait::Event(event as usize), done)
    }

    /// Have a helper wait for `wait`, then tell `id` and set `done`; false
    /// when no helper could be had.
    fn hand_to_helper(&mut self, id: u64, wait: Wait, done: Arc<AtomicBool>) -> bool {
        let Some(reached) = self.reached.clone() else {
            return false;
        };
        let driver = self.driver;
        let helpers = self.helpers.get_or_insert_with(|| Helpers::new(driver.waits()));
        helpers.submit(Job {
            id,
            wait,
            done,
            reached,
        })
    }

    /// Poll `done` while no other request arrives (telling host functions
    /// reached meanwhile), for at most [`SPIN`]: whether it answered true.
    pub(super) fn poll_while_alone<R: WaitRead, W: Write>(
        &mut self,
        reader: &mut BufReader<R>,
        writer: &mut W,
        mut done: impl FnMut(&mut Self) -> bool,
    ) -> Result<bool, ProtoError> {
        let Some(reached) = self.reached.clone() else {
            return Ok(false);
        };
        let start = Instant::now();
        let mut looked = start;
        loop {
            if done(self) {
                return Ok(true);
            }
            if !reader.buffer().is_empty() {
                return Ok(false);
            }
            // The socket and the wake-up cost a system call to look at:
            // every LOOK, not at every poll of the work.
            let now = Instant::now();
            if now.duration_since(looked) >= LOOK {
                looked = now;
                match reader.get_mut().wait_readable_for(&reached.wake, Duration::ZERO)? {
                    Some(true) => return Ok(false),
                    Some(false) => {
                        self.tell_reached(writer)?;
                        writer.flush()?;
                    }
                    None => {}
                }
                if now.duration_since(start) >= SPIN {
                    return Ok(false);
                }
            }
            std::hint::spin_loop();
        }
    }

    /// An event of the server's recorded on `s` now (in the current
    /// context), for a helper to wait for.
    fn record_own(&mut self, s: Ptr) -> Option<(Handle, Ptr)> {
        let ctx = self.current?;
        let e = match self.sync_events.get_mut(&ctx).and_then(Vec::pop) {
            Some(e) => e,
            None => {
                let mut e: Ptr = std::ptr::null_mut();
                // SAFETY: e is writable; the event is made in the current context.
                unsafe { self.driver.cuEventCreate(&mut e, DISABLE_TIMING) }.ok()?;
                e
            }
        };
        // SAFETY: the event is the server's, of the current context, as
        // is the stream's work (`enter`).
        match unsafe { self.driver.cuEventRecord(e, s) } {
            Ok(()) => Some((ctx, e)),
            Err(_) => {
                self.sync_events.entry(ctx).or_default().push(e);
                None
            }
        }
    }

    /// A helper told that parked synchronise `id` is done, with the
    /// driver's `status`: answer it.
    pub(super) fn answer_parked<W: Write>(
        &mut self,
        writer: &mut W,
        id: u64,
        status: Status,
    ) -> Result<(), ProtoError> {
        let Some(at) = self.parked.iter().position(|p| p.id == id) else {
            // A parked copy's event is done: the copies are looked at.
            return self.flush_copies(writer);
        };
        let p = self.parked.swap_remove(at);
        if let Some((ctx, e)) = p.own {
            self.sync_events.entry(ctx).or_default().push(e);
        }
        if status == 0 && p.whole_context {
            self.forget_busy(|(c, _), at| *c != p.ctx || *at > p.place);
        }
        let status = if status != 0 { status } else { p.kept.unwrap_or(0) };
        self.flush_copies(writer)?;
        self.send_output(writer, true)?;
        frame::write_frame(
            writer,
            &mut self.scratch,
            p.id,
            0,
            &Reply::Status(status),
            &[],
            self.max_frame,
        )?;
        self.client_reads();
        Ok(())
    }

    /// Before `ctx` goes: wait for the parked synchronises and copies that
    /// wait on it (they are answered later, as told), and destroy its
    /// spare events.
    pub(super) fn settle_parked(&mut self, ctx: Handle) {
        let mut flags: Vec<Arc<AtomicBool>> = self
            .parked
            .iter()
            .filter(|p| p.ctx == ctx || p.own.is_some_and(|(c, _)| c == ctx))
            .map(|p| Arc::clone(&p.done))
            .collect();
        flags.extend(self.copies_in(ctx));
        if !wait_flags(&flags, SETTLE) {
            tracing::warn!(
                "a context goes while a synchronise or copy of another thread of the program still waits on it"
            );
        }
        for p in self.parked.iter_mut().filter(|p| p.own.is_some_and(|(c, _)| c == ctx)) {
            if let Some((_, e)) = p.own.take() {
                // SAFETY: the server's event; its helper's wait returned
                // (or the program destroys what it still waits for).
                let _ = unsafe { self.driver.cuEventDestroy_v2(e) };
            }
        }
        for e in self.sync_events.remove(&ctx).unwrap_or_default() {
            // SAFETY: a spare event of the server's, waited on by no one.
            let _ = unsafe { self.driver.cuEventDestroy_v2(e) };
        }
    }

    /// At the session's end: give the synchronises and copies still waiting
    /// a moment, then leave them. What a helper still waits on (the
    /// server's event, a copy's staging buffer) is not destroyed: it goes
    /// with the session's process, which ends next.
    pub(super) fn settle_all_parked(&mut self) {
        let mut flags: Vec<Arc<AtomicBool>> = self.parked.iter().map(|p| Arc::clone(&p.done)).collect();
        flags.extend(self.all_copies());
        if !wait_flags(&flags, SETTLE_AT_END) {
            let waiting = flags.iter().filter(|f| !f.load(Ordering::Acquire)).count();
            tracing::info!(
                waiting,
                "the session ended with synchronises or copies still waiting in the driver; they are left to the end of its process"
            );
        }
        self.parked.clear();
        self.abandon_copies();
    }
}

/// Wait until every flag is set, for at most `limit`: whether they all were.
fn wait_flags(flags: &[Arc<AtomicBool>], limit: Duration) -> bool {
    let start = Instant::now();
    loop {
        if flags.iter().all(|f| f.load(Ordering::Acquire)) {
            return true;
        }
        if start.elapsed() >= limit {
            return false;
        }
        std::thread::sleep(Duration::from_micros(100));
    }
}
