//! A capture's graph and dependencies asked for while it is under way
//! (`cuStreamGetCaptureInfo` with a graph or dependency out-pointer) and
//! changed (`cuStreamUpdateCaptureDependencies`): what PyTorch does to put a
//! conditional node into the graph it captures (`torch.cond` under CUDA
//! graphs), and libraries do to add nodes by hand beside captured work.
//! Each is one round trip; asking for the status and id alone stays in the
//! shim, and so does asking for the graph once it is known (cudart asks for
//! it at every status query during a capture).

use super::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// A dependency array answered, with its edge data.
type Answered = (Box<[usize]>, Box<[u64]>);

#[derive(Default)]
struct State {
    /// Capture id -> the graph the program was told of.
    seen: HashMap<u64, Handle>,
    /// Stream -> the dependency array (and edge data) last answered, valid
    /// until the next call on the stream.
    arrays: HashMap<StreamRef, Answered>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(st.get_or_insert_with(State::default))
}

/// Capture `id` on `stream` ended: the graph the program was told of, if
/// one, which goes with the capture if it failed.
pub(super) fn ended(id: u64, stream: StreamRef) -> Option<Handle> {
    state(|st| {
        st.arrays.remove(&stream);
        st.seen.remove(&id)
    })
}

/// `cuStreamGetCaptureInfo_v3` (and `_v2`, without edge data).
#[allow(clippy::too_many_arguments)]
pub unsafe fn stream_get_capture_info_v3(
    mode: DefaultStream,
    stream: CUstream,
    status: *mut i32,
    id: *mut u64,
    graph: *mut *mut c_void,
    deps: *mut *const c_void,
    edges: *mut *const c_void,
    count: *mut usize,
) -> CuResult {
    let s = shim()?;
    let mut st = CAPTURE_NONE;
    unsafe { stream_get_capture_info(mode, stream, &mut st, id) }?;
    if !status.is_null() {
        unsafe { out(status, st) }?;
    }
    let asked = !graph.is_null() || !deps.is_null() || !edges.is_null() || !count.is_null();
    if st != CAPTURE_ACTIVE || !asked {
        unsafe {
            out_opt(graph, std::ptr::null_mut());
            out_opt(deps, std::ptr::null());
            out_opt(edges, std::ptr::null());
            out_opt(count, 0);
        }
        return Ok(());
    }
    let capture = capture_id(s, mode, stream);
    // cudart asks for the graph at every status query; it stays the same
    // through a capture, so once known it is answered here.
    if deps.is_null() && edges.is_null() && count.is_null() {
        if let Some(g) = capture.and_then(|c| state(|st| st.seen.get(&c).copied())) {
            unsafe { out_opt(graph, as_ptr(g)) };
            return Ok(());
        }
    }
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    let Reply::CaptureInfo {
        graph: g,
        deps: nodes,
        edges: data,
    } = s.remote.call(&Request::StreamCaptureInfo { ctx, stream: sref }, &[])?
    else {
        return Err(CuError::UNKNOWN);
    };
    write(&s.graphs).entry(g).or_insert(ctx);
    let n = nodes.len();
    let (dep_ptr, edge_ptr) = state(|st| {
        if let Some(c) = capture {
            st.seen.insert(c, g);
        }
        let nodes: Box<[usize]> = nodes.iter().map(|d| *d as usize).collect();
        let data: Box<[u64]> = if data.is_empty() {
            vec![0; n].into()
        } else {
            data.into()
        };
        let ptrs = (nodes.as_ptr().cast::<c_void>(), data.as_ptr().cast::<c_void>());
        st.arrays.insert(sref, (nodes, data));
        ptrs
    });
    unsafe {
        out_opt(graph, as_ptr(g));
        out_opt(deps, if n == 0 { std::ptr::null() } else { dep_ptr });
        out_opt(edges, if n == 0 { std::ptr::null() } else { edge_ptr });
        out_opt(count, n);
    }
    Ok(())
}

/// `cuStreamUpdateCaptureDependencies`: default edges.
pub unsafe fn stream_update_capture_dependencies(
    mode: DefaultStream,
    stream: CUstream,
    deps: *const *mut c_void,
    count: usize,
    flags: u32,
) -> CuResult {
    unsafe { stream_update_capture_dependencies_v2(mode, stream, deps, std::ptr::null(), count, flags) }
}

/// `cuStreamUpdateCaptureDependencies_v2`: the nodes (of the capture's
/// graph) its next work follows, replaced (`CU_STREAM_SET_CAPTURE_DEPENDENCIES`)
/// or added to; one round trip.
pub unsafe fn stream_update_capture_dependencies_v2(
    mode: DefaultStream,
    stream: CUstream,
    deps: *const *mut c_void,
    edges: *const u64,
    count: usize,
    flags: u32,
) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    if flags > 1 {
        return Err(CuError::INVALID_VALUE);
    }
    let sref = Shim::stream_ref(mode, handle(stream));
    if capture_of(s, sref).is_none_or(|c| c.invalidated) {
        return Err(CuError::ILLEGAL_STATE);
    }
    let request = Request::StreamUpdateCaptureDependencies {
        ctx,
        stream: sref,
        deps: unsafe { graphs::handles(deps, count) }?,
        edges: unsafe { graphs::edge_data(edges, count) }?,
        flags,
    };
    s.remote.call(&request, &[]).map(drop)
}
