//! The simulated copy engine, on with `GPUPOOL_SOFT_COPY_ENGINE=1`. A GPU copies between pinned host memory and
//! device memory with DMA engines that run beside the CPU: an asynchronous
//! copy returns at once, and the host may read, write or reuse the pinned
//! buffer only once an event or a synchronise says the copy is done. This
//! double does the same: asynchronous copies whose host side is pinned
//! (`cuMemAllocHost`, `cuMemHostAlloc`) are queued here and done, in order,
//! by a thread of their own. A caller that reuses a staging buffer too early
//! sees the wrong bytes, as it would on a GPU.
//!
//! Copies are numbered in the order they were queued. An event recorded now
//! completes when every copy queued before it is done (the queue is one FIFO
//! for all streams, which is stronger than stream order and so still
//! correct). Every other driver call first waits for the queue to empty
//! ([`drain`], called by `driver::with`), so kernels, synchronous copies,
//! frees and synchronises see the copies before them finished.
//!
//! It is off by default: on a machine with few cores the hand-over to the
//! engine's thread costs more than the overlap gains (on two cores, 4 KiB
//! copies through gpupool ran at a third of their speed with it), so the
//! benchmarks run without it and the tests of copy ordering with it.
//!
//! Host functions (`cuLaunchHostFunc`) always go through the same queue,
//! engine on or off: the driver calls them on a thread of its own, never in
//! the caller's, and later work waits for them. Once one has been queued,
//! every driver call waits for the queue to empty, as for copies.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// A host function as `cuLaunchHostFunc` takes it.
pub type HostFn = unsafe extern "C" fn(*mut std::ffi::c_void);

/// One queued piece of work.
enum Job {
    /// `len` bytes from `src` to `dst`, both checked live when it was queued
    /// and kept so until it is done (frees drain the queue first).
    Copy { dst: usize, src: usize, len: usize },
    /// A host function and its argument.
    Host { func: HostFn, data: usize },
}

#[derive(Default)]
struct State {
    queue: VecDeque<Job>,
    /// Copies queued so far; the number of the last one.
    queued: u64,
    /// Copies done so far (they finish in order).
    done: u64,
    started: bool,
}

static ENABLED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Set once a host function has been queued.
static HOST_FUNCTIONS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Turn the engine on (`cuInit` does, under `GPUPOOL_SOFT_COPY_ENGINE=1`).
pub fn enable() {
    ENABLED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Whether asynchronous pinned copies go to the engine.
pub fn enabled() -> bool {
    ENABLED.load(std::sync::atomic::Ordering::Relaxed)
}

static STATE: Mutex<State> = Mutex::new(State {
    queue: VecDeque::new(),
    queued: 0,
    done: 0,
    started: false,
});
/// Signalled when a copy is queued.
static WORK: Condvar = Condvar::new();
/// Signalled when a copy is done.
static DONE: Condvar = Condvar::new();

fn state() -> MutexGuard<'static, State> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Queue a copy of `len` bytes from `src` to `dst`; its number.
///
/// # Safety
/// `src..src+len` must be readable and `dst..dst+len` writable until the copy
/// is done, i.e. until [`wait_for`] of its number or [`drain`] returns.
pub unsafe fn submit(dst: *mut u8, src: *const u8, len: usize) -> u64 {
    queue(Job::Copy {
        dst: dst as usize,
        src: src as usize,
        len,
    })
}

/// Queue a call of `func(data)` after the work queued so far; its number.
pub fn submit_host(func: HostFn, data: *mut std::ffi::c_void) -> u64 {
    HOST_FUNCTIONS.store(true, std::sync::atomic::Ordering::Release);
    queue(Job::Host {
        func,
        data: data as usize,
    })
}

fn queue(job: Job) -> u64 {
    let mut s = state();
    if !s.started {
        // Without the thread, work is done where it is queued.
        let spawned = std::thread::Builder::new()
            .name("soft-copy-engine".into())
            .spawn(run)
            .is_ok();
        if !spawned {
            drop(s);
            // SAFETY: the callers' contracts; done at once.
            unsafe { perform(job) };
            let mut s = state();
            s.queued += 1;
            s.done += 1;
            return s.queued;
        }
        s.started = true;
    }
    s.queue.push_back(job);
    s.queued += 1;
    WORK.notify_one();
    s.queued
}

/// Do one piece of work.
///
/// # Safety
/// As `submit` and `submit_host` require of their callers.
unsafe fn perform(job: Job) {
    match job {
        // SAFETY: `submit`'s contract keeps both ranges valid until this copy
        // is counted done; `copy` tolerates overlap.
        Job::Copy { dst, src, len } => unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, len) },
        // SAFETY: the program handed this function and argument to
        // `cuLaunchHostFunc` to be called once.
        Job::Host { func, data } => unsafe { func(data as *mut std::ffi::c_void) },
    }
}

/// The number of the last copy queued (0 when none was).
pub fn last() -> u64 {
    state().queued
}

/// Whether copy `n` (and every one before it) is done.
pub fn is_done(n: u64) -> bool {
    state().done >= n
}

/// Wait until copy `n` (and every one before it) is done.
pub fn wait_for(n: u64) {
    let mut s = state();
    while s.done < n {
        s = DONE.wait(s).unwrap_or_else(|p| p.into_inner());
    }
}

/// Wait until every queued copy and host function is done.
pub fn drain() {
    if enabled() || HOST_FUNCTIONS.load(std::sync::atomic::Ordering::Acquire) {
        wait_for(last());
    }
}

fn run() {
    loop {
        let job = {
            let mut s = state();
            loop {
                if let Some(job) = s.queue.pop_front() {
                    break job;
                }
                s = WORK.wait(s).unwrap_or_else(|p| p.into_inner());
            }
        };
        // SAFETY: the work was queued under `submit`'s or `submit_host`'s
        // contract, and is counted done only below.
        unsafe { perform(job) };
        state().done += 1;
        DONE.notify_all();
    }
}
