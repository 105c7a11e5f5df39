//! `cuLaunchHostFunc` and `cuStreamAddCallback`: the program's function
//! runs in the program when the server's stream reaches it
//! ([`crate::callbacks`]).

use super::*;
use crate::callbacks::{Call, HostFn, StreamCallback, StreamKey};
use crate::remote::Sink;
use std::time::Duration;

/// Whether `stream`'s work waits for the legacy default stream's (every
/// stream not created `CU_STREAM_NON_BLOCKING`, and the default streams).
pub(super) fn blocking(s: &Shim, stream: StreamRef) -> bool {
    match stream {
        StreamRef::Handle(h) => read(&s.streams).get(&h).is_none_or(|i| i.flags & 1 == 0),
        StreamRef::Legacy | StreamRef::PerThread(_) => true,
    }
}

/// How long an asynchronous copy from pinned memory waits for the host
/// functions before it, which may fill its buffer, before it reads anyway.
const PINNED_READ_WAIT: Duration = Duration::from_secs(5);

/// Before a synchronous copy or memset on `stream`: CUDA runs it after the
/// stream's earlier work, host functions included, so it reads pageable
/// memory, and its data lands, only after they have returned. Wait for them
/// here, before anything is read or sent.
pub(super) fn before_sync(s: &Shim, ctx: Handle, stream: StreamRef, sync: bool) {
    if sync {
        s.callbacks.wait_stream((ctx, stream));
    }
}

/// Before an asynchronous copy on `stream` reads the program's memory at
/// `src`: from pinned memory CUDA reads when the stream gets there, after
/// the host functions before it (which may write the buffer), so wait for
/// those; pageable memory CUDA reads at the call, as the shim does. A
/// function that has not returned after [`PINNED_READ_WAIT`] (one that waits
/// for something the program does after this call) is not waited for
/// longer: the copy reads the buffer then, and says so.
pub(super) fn before_reading(s: &Shim, ctx: Handle, stream: StreamRef, src: usize) {
    // Functions first: with none open that is one atomic load.
    let key = (ctx, stream);
    if s.callbacks.follows_open(key)
        && s.find_host_range(src).is_some()
        && !s.callbacks.wait_stream_for(key, PINNED_READ_WAIT)
    {
        tracing::warn!(
            "an asynchronous copy from pinned memory waited {} s for a host function enqueued before it; \
             it reads the buffer now, before that function returns",
            PINNED_READ_WAIT.as_secs()
        );
    }
}

/// Where an asynchronous device-to-host copy on `stream` lands: in the
/// program's memory as the data comes, or, while the stream's work follows
/// a host function that has not returned, in the shim, to be written there
/// once it has (in stream order, on the callback thread).
///
/// # Safety
/// Every byte the sink names stays valid and writable until the copy is
/// observed complete.
pub(super) unsafe fn stream_into(
    s: &'static Shim,
    req: &Request,
    ctx: Handle,
    stream: StreamRef,
    sink: Sink,
) -> CuResult {
    match s.callbacks.staged_landing((ctx, stream), blocking(s, stream)) {
        Some(land) => s.remote.call_staged(req, sink, land),
        // SAFETY: the caller's promise, passed on.
        None => unsafe { s.remote.call_into_sink(req, sink, false) },
    }
}

pub(super) fn enqueue(mode: DefaultStream, stream: CUstream, call: Call) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    if let Some(capture) = capture_of(s, sref) {
        // A host node of the graph: it runs at every launch
        // (`hostnodes`). `cuStreamAddCallback` cannot be captured.
        if matches!(call, Call::Stream { .. }) {
            return Err(CuError::STREAM_CAPTURE_UNSUPPORTED);
        }
        let token = hostnodes::token();
        hostnodes::captured(capture.id, token, call);
        return s.remote.post(
            &Request::CaptureHostFunc {
                ctx,
                stream: sref,
                token,
            },
            &[],
        );
    }
    let key: StreamKey = (ctx, sref);
    let blocking = blocking(s, sref);
    let callbacks = &s.callbacks;
    s.remote
        .call_later(&Request::LaunchHostFunc { ctx, stream: sref }, |id| {
            callbacks.enqueued(key, blocking, id);
            Box::new(move |status| callbacks.reached(id, call, status))
        })
}

/// Work on the program's pinned host memory that the driver does as if it
/// were device memory (unified addressing makes it an address memsets and
/// copies reach; XLA's redzone checks set and read pinned buffers so).
#[derive(Clone, Copy)]
pub(super) enum HostWork {
    /// `count` elements of `elem_size` bytes of `value` at `dst`.
    Fill {
        dst: u64,
        value: u32,
        elem_size: u8,
        count: usize,
    },
    /// `len` bytes from `src` to `dst` (ranges that do not overlap).
    Copy { dst: u64, src: u64, len: usize },
}

impl HostWork {
    /// # Safety
    /// The ranges are the program's memory, valid until the stream has done
    /// this work (as with the driver).
    unsafe fn run(self) {
        match self {
            HostWork::Fill {
                dst,
                value,
                elem_size,
                count,
            } => {
                let bytes = value.to_le_bytes();
                let pattern = &bytes[..elem_size as usize];
                // SAFETY: the caller's promise.
                let out = unsafe { std::slice::from_raw_parts_mut(dst as *mut u8, count * pattern.len()) };
                for chunk in out.chunks_exact_mut(pattern.len()) {
                    chunk.copy_from_slice(pattern);
                }
            }
            // SAFETY: the caller's promise.
            HostWork::Copy { dst, src, len } => unsafe {
                std::ptr::copy(src as *const u8, dst as *mut u8, len);
            },
        }
    }
}

/// Host work enqueued and not yet run (work that never runs, its stream
/// having failed, keeps this above zero: frees then wait a little more).
static PENDING: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Before pinned host memory goes (`cuMemFreeHost`, `cuMemHostUnregister`):
/// the host work enqueued into it must have run, as the driver's free
/// waits for the work before it. It runs as host functions, which the
/// stream's work reaches in order.
pub(super) fn settle_host_work(s: &Shim) {
    if PENDING.load(std::sync::atomic::Ordering::Acquire) > 0 {
        s.callbacks.wait_all();
    }
}

/// `work` on pinned host memory, done by the shim when `stream` gets there
/// (the server's GPU cannot reach that memory), as a host function; a
/// synchronous call then waits for it. In a capture it becomes a host node,
/// which does the work at every launch (its description then lives as long
/// as the process: a graph may be launched at any time).
pub(super) fn host_work(mode: DefaultStream, stream: CUstream, work: HostWork, sync: bool) -> CuResult {
    /// The work, and whether it is freed once run (and counted in
    /// `PENDING` until then).
    struct Job {
        work: HostWork,
        once: bool,
    }
    unsafe extern "C" fn run(data: *mut c_void) {
        let job = data.cast::<Job>();
        // SAFETY: made by Box::into_raw below; a `once` job runs once, a
        // captured one is never freed.
        let (work, once) = unsafe { ((*job).work, (*job).once) };
        if once {
            // SAFETY: as above, this is its only run.
            drop(unsafe { Box::from_raw(job) });
        }
        // SAFETY: the ranges were checked to lie in the program's memory,
        // which it keeps until the stream has done this work.
        unsafe { work.run() };
        if once {
            PENDING.fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
        }
    }
    let s = shim()?;
    let once = capture_of(s, Shim::stream_ref(mode, handle(stream))).is_none();
    let job = Box::into_raw(Box::new(Job { work, once }));
    if once {
        PENDING.fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }
    enqueue(
        mode,
        stream,
        Call::Host {
            func: run,
            data: job as usize,
        },
    )?;
    if sync {
        unsafe { stream_synchronize(mode, stream) }?;
    }
    Ok(())
}

/// `cuLaunchHostFunc_v2` (CUDA 13.5): as `cuLaunchHostFunc`. Its sync
/// mode (`CU_HOST_TASK_BLOCKING` 0, `CU_HOST_TASK_SPINWAIT` 1) says how the
/// driver's thread waits for host tasks; the shim's host functions run on a
/// thread of its own, which waits for the server's word either way.
pub unsafe fn launch_host_func_v2(
    mode: DefaultStream,
    stream: CUstream,
    func: *mut c_void,
    data: *mut c_void,
    sync_mode: u32,
) -> CuResult {
    if sync_mode > 1 {
        return Err(CuError::INVALID_VALUE);
    }
    unsafe { launch_host_func(mode, stream, func, data) }
}

pub unsafe fn launch_host_func(
    mode: DefaultStream,
    stream: CUstream,
    func: *mut c_void,
    data: *mut c_void,
) -> CuResult {
    if func.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a `CUhostFn`, a C function of one pointer
    // argument; it was checked not to be null.
    let func = unsafe { std::mem::transmute::<*mut c_void, HostFn>(func) };
    enqueue(
        mode,
        stream,
        Call::Host {
            func,
            data: data as usize,
        },
    )
}

pub unsafe fn stream_add_callback(
    mode: DefaultStream,
    stream: CUstream,
    callback: *mut c_void,
    data: *mut c_void,
    flags: u32,
) -> CuResult {
    if callback.is_null() || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a `CUstreamCallback`, a C function of
    // (stream, status, pointer); it was checked not to be null.
    let func = unsafe { std::mem::transmute::<*mut c_void, StreamCallback>(callback) };
    enqueue(
        mode,
        stream,
        Call::Stream {
            func,
            stream: stream as usize,
            data: data as usize,
        },
    )
}
