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

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};

/// One queued copy: `len` bytes from `src` to `dst`, both checked live when
/// it was queued and kept so until it is done (frees drain the queue first).
struct Job {
    dst: usize,
    src: usize,
    len: usize,
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
    let mut s = state();
    if !s.started {
        // Without the thread, copies are done where they are queued.
        let spawned = std::thread::Builder::new()
            .name("soft-copy-engine".into())
            .spawn(run)
            .is_ok();
        if !spawned {
            drop(s);
            // SAFETY: the caller's contract; done at once.
            unsafe { std::ptr::copy(src, dst, len) };
            let mut s = state();
            s.queued += 1;
            s.done += 1;
            return s.queued;
        }
        s.started = true;
    }
    s.queue.push_back(Job {
        dst: dst as usize,
        src: src as usize,
        len,
    });
    s.queued += 1;
    WORK.notify_one();
    s.queued
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

/// Wait until every queued copy is done.
pub fn drain() {
    if enabled() {
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
        // SAFETY: `submit`'s contract keeps both ranges valid until this
        // copy is counted done below; `copy` tolerates overlap.
        unsafe { std::ptr::copy(job.src as *const u8, job.dst as *mut u8, job.len) };
        state().done += 1;
        DONE.notify_all();
    }
}
