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

fn enqueue(mode: DefaultStream, stream: CUstream, call: Call) -> CuResult {
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
