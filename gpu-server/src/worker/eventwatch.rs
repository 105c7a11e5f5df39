//! Completion notices for recorded events (`Request::EventRecordWatched`).
//!
//! The client watches the records of an event it has queried, so that
//! later queries of that event (PyTorch's pinned-memory allocator asks of
//! each block's event before it reuses the block) are answered in the shim
//! instead of costing a round trip each.
//!
//! A thread of the session's polls the watched events with `cuEventQuery`,
//! from [`FIRST_PAUSE`] after it has work again, backing off to
//! [`LONGEST_PAUSE`] between passes: nothing is added to the program's
//! streams (a host function there would stall each stream at every record),
//! and a record wakes the thread only when it had nothing to watch. What completed waits
//! for the session's next reply to a request that asked for one, and goes
//! just before it (`Reply::EventsDone`): the client reads it as it reads
//! that reply, so notices never wait in a connection nobody reads, and the
//! client needs no thread of its own for them. A watch ends with nothing
//! told when its event is recorded again, destroyed or its context goes
//! (its entry is removed under the thread's lock, so the thread never
//! queries an event after it is gone), and a completion is not told while
//! its context keeps an error (the client asks the server, which tells it).

use super::Worker;
use crate::driver::{Ptr, Status};
use gpupool_proto::message::{Handle, Reply, StreamRef};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

/// `CUDA_ERROR_NOT_READY`.
const NOT_READY: Status = 600;
/// The pause after the first pass over newly watched events.
const FIRST_PAUSE: Duration = Duration::from_micros(100);
/// The longest pause between passes.
const LONGEST_PAUSE: Duration = Duration::from_millis(2);

/// Completions held while their context keeps an error, at most.
const MAX_UNTOLD: usize = 1024;

/// `cuEventQuery`, as the loaded driver has it.
pub(super) type QueryFn = unsafe extern "C" fn(Ptr) -> Status;

/// One watched record: the event (the client's name and the driver's
/// handle), its context, and the record's generation (the client's count).
#[derive(Debug, Clone, Copy)]
struct Watch {
    event: Handle,
    real: usize,
    ctx: Handle,
    generation: u64,
}

#[derive(Default)]
struct State {
    watches: Vec<Watch>,
    /// Completed, not yet told.
    done: Vec<Watch>,
    stop: bool,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// `done` is not empty: the session's thread looks only then.
    any_done: AtomicBool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The session's watching thread and what it watches.
pub(super) struct Watcher {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Watcher {
    /// Start the thread. `query` must stay callable until [`Watcher::stop`]
    /// returns (the worker stops it before the driver is unloaded).
    pub(super) fn start(query: QueryFn) -> std::io::Result<Watcher> {
        let shared = Arc::new(Shared::default());
        let theirs = Arc::clone(&shared);
        let thread = std::thread::Builder::new()
            .name("gpupool-events".into())
            .spawn(move || watch(&theirs, query))?;
        Ok(Watcher {
            shared,
            thread: Some(thread),
        })
    }

    fn add(&self, w: Watch) {
        let mut st = self.shared.lock();
        let idle = st.watches.is_empty();
        st.watches.push(w);
        drop(st);
        // A thread that watches others looks at this one at its next pass,
        // without a wake-up per record.
        if idle {
            self.shared.changed.notify_one();
        }
    }

    /// End the watches that `end` picks.
    fn remove(&self, end: impl Fn(&Watch) -> bool) {
        self.shared.lock().watches.retain(|w| !end(w));
    }

    /// The completions found since the last call.
    fn take_done(&self) -> Vec<Watch> {
        if !self.shared.any_done.load(Ordering::Acquire) {
            return Vec::new();
        }
        let mut st = self.shared.lock();
        self.shared.any_done.store(false, Ordering::Release);
        std::mem::take(&mut st.done)
    }

    /// Completions to tell later; past [`MAX_UNTOLD`], the oldest are
    /// dropped (the client then asks of those events, as of any).
    fn put_back(&self, later: Vec<Watch>) {
        if later.is_empty() {
            return;
        }
        let mut st = self.shared.lock();
        st.done.extend(later);
        let over = st.done.len().saturating_sub(MAX_UNTOLD);
        st.done.drain(..over);
        self.shared.any_done.store(true, Ordering::Release);
    }

    /// Stop the thread and wait for it: after this the driver is not called.
    pub(super) fn stop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.changed.notify_one();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The watching thread's loop.
fn watch(shared: &Shared, query: QueryFn) {
    let mut pause = FIRST_PAUSE;
    let mut st = shared.lock();
    loop {
        while st.watches.is_empty() && !st.stop {
            st = shared.changed.wait(st).unwrap_or_else(|p| p.into_inner());
            pause = FIRST_PAUSE;
        }
        if st.stop {
            return;
        }
        let mut done = Vec::new();
        st.watches.retain(|w| {
            // SAFETY: the event is the driver's and alive: entries are
            // removed under this lock before their event is destroyed.
            match unsafe { query(w.real as Ptr) } {
                NOT_READY => true,
                0 => {
                    done.push(*w);
                    false
                }
                // An error is the server's to tell when asked.
                _ => false,
            }
        });
        // Each pass waits twice as long as the one before, up to the
        // longest pause, however many complete: a session that records
        // all the time costs the thread a few hundred passes a second.
        pause = (pause * 2).min(LONGEST_PAUSE);
        if !done.is_empty() {
            st.done.extend(done);
            shared.any_done.store(true, Ordering::Release);
        }
        // The stop ends the pause early.
        st = shared
            .changed
            .wait_timeout(st, pause)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

impl Worker<'_> {
    /// `EventRecordWatched`: record the event, and watch the record unless
    /// it went into a capture.
    pub(super) fn record_watched(
        &mut self,
        ctx: Handle,
        event: Handle,
        stream: StreamRef,
        generation: u64,
    ) -> crate::driver::DriverResult {
        // The event's earlier record can no longer be told.
        self.unwatch(|w| w.event == event);
        let s = self.enter(ctx, stream)?;
        self.check_event(event)?;
        // SAFETY: stream and event belong to this client.
        unsafe { self.driver.cuEventRecord(self.real(event), s) }?;
        if self.captures > 0 {
            let mut status = 0i32;
            // SAFETY: s is resolved from this client's tables; status is writable.
            let capturing = unsafe { self.driver.cuStreamIsCapturing(s, &mut status) }.is_ok() && status != 0;
            if capturing {
                // A node of the capture's graph, not a record.
                return Ok(());
            }
        }
        if self.watcher.is_none() {
            match Watcher::start(self.driver.event_query_fn()) {
                Ok(w) => self.watcher = Some(w),
                Err(e) => {
                    // Queries then go to the server, as unwatched ones do.
                    tracing::warn!("cannot start the event watching thread: {e}");
                    return Ok(());
                }
            }
        }
        if let Some(watcher) = &self.watcher {
            watcher.add(Watch {
                event,
                real: self.real(event) as usize,
                ctx,
                generation,
            });
        }
        Ok(())
    }

    fn unwatch(&mut self, end: impl Fn(&Watch) -> bool) {
        if let Some(watcher) = &self.watcher {
            watcher.remove(end);
        }
    }

    /// Before `event` is destroyed.
    pub(super) fn unwatch_event(&mut self, event: Handle) {
        self.unwatch(|w| w.event == event);
    }

    /// Before `ctx` and its events go.
    pub(super) fn unwatch_context(&mut self, ctx: Handle) {
        self.unwatch(|w| w.ctx == ctx);
    }

    /// The notice to send before the next reply, if any record completed:
    /// those of contexts that keep no error (the others wait until the
    /// error is told).
    pub(super) fn events_done(&mut self) -> Option<Reply> {
        let watcher = self.watcher.as_ref()?;
        let (later, now): (Vec<Watch>, Vec<Watch>) = watcher
            .take_done()
            .into_iter()
            .partition(|w| self.kept.contains_key(&w.ctx));
        watcher.put_back(later);
        let events: Vec<(Handle, u64)> = now.into_iter().map(|w| (w.event, w.generation)).collect();
        (!events.is_empty()).then_some(Reply::EventsDone { events })
    }
}
