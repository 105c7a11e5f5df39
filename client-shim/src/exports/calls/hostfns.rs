//! `cuLaunchHostFunc` and `cuStreamAddCallback`: the program's function
//! runs in the program when the server's stream reaches it
//! ([`crate::callbacks`]).

use super::*;
use crate::callbacks::{Call, HostFn, StreamCallback, StreamKey};

/// Whether `stream`'s work waits for the legacy default stream's (every
/// stream not created `CU_STREAM_NON_BLOCKING`, and the default streams).
pub(super) fn blocking(s: &Shim, stream: StreamRef) -> bool {
    match stream {
        StreamRef::Handle(h) => read(&s.streams).get(&h).is_none_or(|i| i.flags & 1 == 0),
        StreamRef::Legacy | StreamRef::PerThread(_) => true,
    }
}

/// After a synchronous copy or memset on `stream` returned: the host
/// functions its work followed have returned too.
pub(super) fn settle(s: &Shim, ctx: Handle, stream: StreamRef, sync: bool) {
    if sync {
        s.callbacks.wait_stream((ctx, stream));
    }
}

fn enqueue(mode: DefaultStream, stream: CUstream, call: Call) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    if capture_of(s, sref).is_some() {
        // A graph's host node would run the function at every launch of the
        // graph, which the server does not report (see the architecture
        // document).
        tracing::warn!("a host function in a stream capture is not supported");
        return Err(CuError::NOT_SUPPORTED);
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
