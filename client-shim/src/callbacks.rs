//! Host functions: `cuLaunchHostFunc` and `cuStreamAddCallback` run program
//! code when a stream reaches them. The function lives in the program, so it
//! runs here, on a thread of the shim's, in the order the server's streams
//! reach them; the server answers the request that enqueued it at that point.
//!
//! The server's stream does not wait for the program's function (its host
//! function only reports the point and returns), so the server never waits
//! on the client and the session cannot deadlock on a function that waits for
//! the program. What the program can observe of "later work waits for it"
//! is kept here: every call that tells the program that work after a host
//! function is done (a stream or context synchronise, an event synchronise,
//! a query that answers success, a synchronous copy) first waits for that
//! function to have returned, and a query answers `CUDA_ERROR_NOT_READY`
//! while it runs. Which functions a call waits for follows the program's
//! own ordering: those enqueued on the stream, those its stream waited for
//! through events, and the legacy default stream's implicit ordering with
//! blocking streams.
//!
//! Later work in the stream that touches the program's memory waits for the
//! function as CUDA's would: device-to-host data for a copy enqueued behind
//! an open function is held in the shim and lands, in order on the same
//! thread, only once the function has returned ([`Callbacks::staged_landing`]);
//! a copy that reads the program's pinned memory waits for the function
//! before it reads ([`Callbacks::wait_stream_for`]).

use crate::error::CuError;
use crate::remote::Staged;
use gpupool_proto::message::{Handle, StreamRef};
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// A stream as the program names it: its context and the stream.
pub type StreamKey = (Handle, StreamRef);

/// `CUhostFn`.
pub type HostFn = unsafe extern "C" fn(*mut c_void);
/// `CUstreamCallback`.
pub type StreamCallback = unsafe extern "C" fn(*mut c_void, u32, *mut c_void);

/// The program's function and what it is called with.
#[derive(Clone, Copy)]
pub enum Call {
    /// `cuLaunchHostFunc`: `func(data)`.
    Host { func: HostFn, data: usize },
    /// `cuStreamAddCallback`: `func(stream, status, data)`, with the stream
    /// as the program named it.
    Stream {
        func: StreamCallback,
        stream: usize,
        data: usize,
    },
}

impl Call {
    /// Run it.
    ///
    /// # Safety
    /// The program gave this function and arguments to be called once.
    unsafe fn run(self) {
        match self {
            // SAFETY: the caller's promise.
            Call::Host { func, data } => unsafe { func(data as *mut c_void) },
            // SAFETY: as above; the status is CUDA_SUCCESS (errors of the
            // stream come back at the next synchronising call).
            Call::Stream { func, stream, data } => unsafe { func(stream as *mut c_void, 0, data as *mut c_void) },
        }
    }
}

/// What the shim's callback thread does, in the order the server's streams
/// reached it.
enum Job {
    /// Run the program's host function.
    Run(Call),
    /// Land device-to-host data behind the functions before it.
    Land(Staged),
}

impl Job {
    /// # Safety
    /// A `Run`'s function was given to be called once; a `Land`'s sink is the
    /// program's memory, valid until the copy is observed complete, which
    /// waits for this job.
    unsafe fn run(self) {
        match self {
            // SAFETY: the caller's promise.
            Job::Run(call) => unsafe { call.run() },
            // SAFETY: as above.
            Job::Land(staged) => unsafe { staged.land() },
        }
    }
}

/// The host functions a stream's later work follows.
#[derive(Default)]
struct Follows {
    ids: Vec<u64>,
    /// The stream synchronises with the legacy default stream.
    blocking: bool,
}

#[derive(Default)]
struct State {
    /// Host functions enqueued and not yet returned, with their context.
    open: HashMap<u64, Handle>,
    streams: HashMap<StreamKey, Follows>,
    /// What an event's completion follows, as of its last record.
    events: HashMap<Handle, Vec<u64>>,
    /// What all of a context's later work follows (`cuCtxWaitEvent`).
    contexts: HashMap<Handle, Vec<u64>>,
}

/// The host functions of one connection.
#[derive(Default)]
pub struct Callbacks {
    state: Mutex<State>,
    returned: Condvar,
    /// How many are open: while none is, every hook returns at once.
    open: AtomicUsize,
    runner: Mutex<Option<mpsc::Sender<(u64, Job)>>>,
}

impl Callbacks {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn none_open(&self) -> bool {
        self.open.load(Ordering::Acquire) == 0
    }

    /// A host function (request `id`) was enqueued on `stream`.
    pub fn enqueued(&self, stream: StreamKey, blocking: bool, id: u64) {
        let mut st = self.lock();
        let State { open, streams, .. } = &mut *st;
        open.insert(id, stream.0);
        self.open.fetch_add(1, Ordering::AcqRel);
        let follows = streams.entry(stream).or_default();
        follows.blocking = blocking;
        follows.ids.retain(|i| open.contains_key(i));
        follows.ids.push(id);
    }

    /// The server reached request `id`'s function (`status` 0) or could not
    /// enqueue it: run it, in order, on the shim's callback thread.
    pub fn reached(&'static self, id: u64, call: Call, status: u32) {
        if status != 0 {
            tracing::warn!(status, "the server could not enqueue a host function; it does not run");
            self.returned_from(id);
            return;
        }
        self.in_order(id, Job::Run(call));
    }

    /// Device-to-host data of request `id`, a copy on `stream`, is to be
    /// held back while the stream's work follows an open host function
    /// (`None` when it follows none: the data lands as it comes). Until it
    /// has landed, the copy is open like a host function: synchronising
    /// calls wait for it and queries answer not ready. The returned closure
    /// takes the reply's status and the held data.
    #[allow(clippy::type_complexity)]
    pub fn staged_landing(
        &'static self,
        stream: StreamKey,
        blocking: bool,
    ) -> Option<impl FnOnce(u64) -> Box<dyn FnOnce(u32, Staged) + Send>> {
        if !self.follows_open(stream) {
            return None;
        }
        Some(move |id| {
            self.enqueued(stream, blocking, id);
            Box::new(move |status: u32, staged: Staged| match status {
                // Its functions' jobs were queued before: the server tells
                // of a function reached before any reply to later work.
                0 => self.in_order(id, Job::Land(staged)),
                // A failed copy lands nothing; its error comes back at the
                // next synchronising call.
                _ => self.returned_from(id),
            }) as Box<dyn FnOnce(u32, Staged) + Send>
        })
    }

    /// Do `job` on the callback thread after every job before it.
    fn in_order(&'static self, id: u64, job: Job) {
        let mut runner = self.runner.lock().unwrap_or_else(|p| p.into_inner());
        if runner.is_none() {
            let (tx, rx) = mpsc::channel::<(u64, Job)>();
            let spawned = std::thread::Builder::new()
                .name("gpupool-callbacks".into())
                .spawn(move || {
                    while let Ok((id, job)) = rx.recv() {
                        // SAFETY: a function the program enqueued to be
                        // called once, when its stream reached it, or data
                        // for the program's memory (`Job::run`).
                        unsafe { job.run() };
                        self.returned_from(id);
                    }
                });
            match spawned {
                Ok(_) => *runner = Some(tx),
                Err(e) => tracing::error!("cannot start the host function thread: {e}"),
            }
        }
        let unsent = match runner.as_ref() {
            Some(tx) => tx.send((id, job)).err().map(|e| e.0 .1),
            None => Some(job),
        };
        drop(runner);
        if let Some(job) = unsent {
            // No thread to run it on: run it here rather than never.
            // SAFETY: as above.
            unsafe { job.run() };
            self.returned_from(id);
        }
    }

    /// The connection is gone: nothing more will be reached.
    pub fn abandoned(&self, id: u64) {
        self.returned_from(id);
    }

    fn returned_from(&self, id: u64) {
        let mut st = self.lock();
        if st.open.remove(&id).is_some() {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
        drop(st);
        self.returned.notify_all();
    }

    /// The open host functions `stream`'s work so far follows.
    fn follows(st: &State, stream: StreamKey) -> Vec<u64> {
        let (ctx, sref) = stream;
        let mut ids: Vec<u64> = Vec::new();
        let mut add = |f: &Follows| ids.extend(f.ids.iter().filter(|i| st.open.contains_key(i)));
        if let Some(f) = st.streams.get(&stream) {
            add(f);
        }
        if let Some(waited) = st.contexts.get(&ctx) {
            add(&Follows {
                ids: waited.clone(),
                blocking: true,
            });
        }
        match sref {
            // The legacy stream waits for every blocking stream.
            StreamRef::Legacy => st
                .streams
                .iter()
                .filter(|((c, s), f)| *c == ctx && *s != StreamRef::Legacy && f.blocking)
                .for_each(|(_, f)| add(f)),
            // A blocking stream waits for the legacy stream.
            _ if st.streams.get(&stream).is_none_or(|f| f.blocking) => {
                if let Some(f) = st.streams.get(&(ctx, StreamRef::Legacy)) {
                    add(f);
                }
            }
            _ => {}
        }
        ids
    }

    /// An event was recorded on `stream`: its completion follows what the
    /// stream's work does.
    pub fn recorded(&self, event: Handle, stream: StreamKey) {
        if self.none_open() {
            return;
        }
        let mut st = self.lock();
        let ids = Self::follows(&st, stream);
        st.events.insert(event, ids);
    }

    /// An event was recorded for all of `ctx`'s work (`cuCtxRecordEvent`):
    /// its completion follows every host function of the context.
    pub fn recorded_in_context(&self, event: Handle, ctx: Handle) {
        if self.none_open() {
            return;
        }
        let mut st = self.lock();
        let ids = st.open.iter().filter(|(_, c)| **c == ctx).map(|(i, _)| *i).collect();
        st.events.insert(event, ids);
    }

    /// All of `ctx`'s later work waits for `event` (`cuCtxWaitEvent`).
    pub fn context_waits(&self, ctx: Handle, event: Handle) {
        if self.none_open() {
            return;
        }
        let mut st = self.lock();
        let Some(ids) = st.events.get(&event).cloned() else {
            return;
        };
        let st = &mut *st;
        let waited = st.contexts.entry(ctx).or_default();
        // Those returned are followed by nothing any more.
        waited.retain(|i| st.open.contains_key(i) && !ids.contains(i));
        waited.extend(ids.into_iter().filter(|i| st.open.contains_key(i)));
    }

    /// `stream` waits for `event`: its later work follows what the event does.
    pub fn waits(&self, stream: StreamKey, blocking: bool, event: Handle) {
        if self.none_open() {
            return;
        }
        let mut st = self.lock();
        let Some(ids) = st.events.get(&event).cloned() else {
            return;
        };
        let follows = st.streams.entry(stream).or_default();
        follows.blocking = blocking;
        follows.ids.extend(ids);
    }

    fn wait_for(&self, pick: impl Fn(&State) -> Vec<u64>) {
        if self.none_open() {
            return;
        }
        let mut st = self.lock();
        let ids = pick(&st);
        while ids.iter().any(|i| st.open.contains_key(i)) {
            st = self.returned.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Wait until every host function enqueued so far has returned (or
    /// was abandoned).
    pub fn wait_all(&self) {
        self.wait_for(|st| st.open.keys().copied().collect());
    }

    /// Wait until the host functions `stream`'s work follows have returned.
    pub fn wait_stream(&self, stream: StreamKey) {
        self.wait_for(|st| Self::follows(st, stream));
    }

    /// Whether `stream`'s work so far follows a host function that has not
    /// returned.
    pub fn follows_open(&self, stream: StreamKey) -> bool {
        !self.none_open() && !Self::follows(&self.lock(), stream).is_empty()
    }

    /// As [`Callbacks::wait_stream`], for at most `limit`: false if a
    /// function had still not returned by then.
    pub fn wait_stream_for(&self, stream: StreamKey, limit: Duration) -> bool {
        if self.none_open() {
            return true;
        }
        let until = Instant::now() + limit;
        let mut st = self.lock();
        let ids = Self::follows(&st, stream);
        while ids.iter().any(|i| st.open.contains_key(i)) {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            st = self
                .returned
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        true
    }

    /// Wait until every host function of `ctx` has returned.
    pub fn wait_context(&self, ctx: Handle) {
        self.wait_for(|st| st.open.iter().filter(|(_, c)| **c == ctx).map(|(i, _)| *i).collect());
    }

    /// Wait until the host functions `event` follows have returned.
    pub fn wait_event(&self, event: Handle) {
        self.wait_for(|st| st.events.get(&event).cloned().unwrap_or_default());
    }

    /// A query of `stream` that the server answered `CUDA_SUCCESS`: not
    /// ready while a host function its work follows runs.
    pub fn query_stream(&self, stream: StreamKey) -> Result<(), CuError> {
        if self.none_open() {
            return Ok(());
        }
        let st = self.lock();
        match Self::follows(&st, stream).is_empty() {
            true => Ok(()),
            false => Err(CuError::NOT_READY),
        }
    }

    /// As [`Callbacks::query_stream`], for an event.
    pub fn query_event(&self, event: Handle) -> Result<(), CuError> {
        if self.none_open() {
            return Ok(());
        }
        let st = self.lock();
        let open = st
            .events
            .get(&event)
            .is_some_and(|ids| ids.iter().any(|i| st.open.contains_key(i)));
        match open {
            false => Ok(()),
            true => Err(CuError::NOT_READY),
        }
    }

    /// The program destroyed `stream` or `event`.
    pub fn forget_stream(&self, stream: StreamKey) {
        self.lock().streams.remove(&stream);
    }

    /// The program destroyed context `ctx`: its streams are gone.
    pub fn forget_context(&self, ctx: Handle) {
        let mut st = self.lock();
        st.streams.retain(|(c, _), _| *c != ctx);
        st.contexts.remove(&ctx);
    }

    pub fn forget_event(&self, event: Handle) {
        self.lock().events.remove(&event);
    }
}
