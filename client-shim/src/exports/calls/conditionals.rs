//! Conditional nodes (`cuGraphConditionalHandleCreate`, `cuGraphAddNode`
//! of a `CU_GRAPH_NODE_TYPE_CONDITIONAL`): if, if/else, while and switch
//! nodes whose bodies run or not as a kernel decides on the GPU
//! (`cudaGraphSetConditional`), as XLA's command buffers run `while` and
//! `cond`. The handle is the server's driver's value, since kernels pass it
//! by value; the body graphs are made by the server's driver with the node
//! and are the node's: the program adds nodes to them (or captures into
//! them) like any graph, and they go when the graph holding the node goes.

use super::*;
use gpupool_proto::message::{conditional_shape_ok, GraphNode};
use std::collections::HashMap;
use std::sync::Mutex;

/// `CUDA_CONDITIONAL_NODE_PARAMS`, as the union of `CUgraphNodeParams`
/// holds it.
#[repr(C)]
struct ConditionalNodeParams {
    handle: u64,
    kind: u32,
    size: u32,
    bodies: *mut *mut c_void,
    ctx: CUcontext,
}

#[derive(Default)]
struct State {
    /// Body graph -> the graph holding its node.
    holders: HashMap<Handle, Handle>,
    /// Conditional node -> the array of its bodies the program was given
    /// (`phGraph_out`): it lives as long as the node.
    arrays: HashMap<Handle, (Handle, Box<[usize]>)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(st.get_or_insert_with(State::default))
}

/// Whether `graph` is a conditional node's body.
pub(super) fn is_body(graph: Handle) -> bool {
    state(|st| st.holders.contains_key(&graph))
}

/// `graph` went: the bodies of its conditional nodes (and theirs) with it.
/// Answers the bodies that went, for the caller's own tables.
/// `graph` is held by `holder` (a child graph node's graph, asked for):
/// it goes with it, never alone.
pub(super) fn hold(graph: Handle, holder: Handle) {
    state(|st| st.holders.insert(graph, holder));
}

/// A held graph went with its node (`cuGraphDestroyNode`): it and the
/// graphs it held.
pub(super) fn release(graph: Handle) -> Vec<Handle> {
    let mut gone = forget(graph);
    state(|st| st.holders.remove(&graph));
    gone.push(graph);
    gone
}

pub(super) fn forget(graph: Handle) -> Vec<Handle> {
    state(|st| {
        let mut gone = Vec::new();
        let mut holders = vec![graph];
        while let Some(h) = holders.pop() {
            st.arrays.retain(|_, (holder, _)| *holder != h);
            let bodies: Vec<Handle> = st.holders.iter().filter(|(_, g)| **g == h).map(|(b, _)| *b).collect();
            for b in bodies {
                st.holders.remove(&b);
                gone.push(b);
                holders.push(b);
            }
        }
        gone
    })
}

/// `cuGraphConditionalHandleCreate`: one round trip; the server's driver's
/// value, for the program's kernels to set.
pub unsafe fn graph_conditional_handle_create(
    out_handle: *mut u64,
    graph: *mut c_void,
    ctx: CUcontext,
    default: u32,
    flags: u32,
) -> CuResult {
    let s = shim()?;
    if out_handle.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let graph_ctx = graphs::graph_ctx(s, graph)?;
    if !ctx.is_null() && handle(ctx) != graph_ctx {
        return Err(CuError::INVALID_CONTEXT);
    }
    let request = Request::GraphConditionalHandleCreate {
        ctx: graph_ctx,
        graph: handle(graph),
        default,
        flags,
    };
    let Reply::Handle(h) = s.remote.call(&request, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    unsafe { out(out_handle, h) }
}

/// A conditional node from the union of a `CUgraphNodeParams`: the bodies
/// the server's driver made are written back (`phGraph_out`).
///
/// # Safety
/// `params` points at a `CUDA_CONDITIONAL_NODE_PARAMS` the program may
/// have written back (API contract).
pub(super) unsafe fn graph_add_conditional_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    params: *mut c_void,
) -> CuResult {
    let s = shim()?;
    // SAFETY: the caller's promise.
    let p = unsafe { &mut *params.cast::<ConditionalNodeParams>() };
    if !conditional_shape_ok(p.kind, p.size) {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = graphs::graph_ctx(s, graph)?;
    if !p.ctx.is_null() && handle(p.ctx) != ctx {
        return Err(CuError::INVALID_CONTEXT);
    }
    let cond = GraphNode::Conditional {
        handle: p.handle,
        kind: p.kind,
        size: p.size,
    };
    let Reply::Conditional { node: n, bodies } =
        (unsafe { graphs::add_replying(node, graph, deps, count, Vec::new(), cond, &[]) })?
    else {
        return Err(CuError::UNKNOWN);
    };
    if bodies.len() != p.size as usize {
        return Err(CuError::UNKNOWN);
    }
    {
        let mut known = write(&s.graphs);
        for &b in &bodies {
            known.insert(b, ctx);
        }
    }
    for &b in &bodies {
        graphs::track_built(b);
    }
    let array: Box<[usize]> = bodies.iter().map(|b| *b as usize).collect();
    p.bodies = array.as_ptr().cast_mut().cast();
    state(|st| {
        for &b in &bodies {
            st.holders.insert(b, handle(graph));
        }
        st.arrays.insert(n, (handle(graph), array));
    });
    Ok(())
}
