//! A graph's edges read back: `cuGraphGetEdges`, `cuGraphGetRootNodes`,
//! `cuGraphNodeGetDependencies` and `cuGraphNodeGetDependentNodes` (both
//! versions each, with edge data). The server's driver lists the graph's
//! edges (one round trip, `GraphEdges`); the shim answers each call from
//! that list.

use super::*;

/// The edges of `graph`: (from, to, data).
fn edges_of(s: &Shim, graph: Handle) -> CuResult<Vec<(Handle, Handle, u64)>> {
    let ctx = graphs::graph_ctx(s, as_ptr(graph))?;
    match s.remote.call(&Request::GraphEdges { ctx, graph }, &[])? {
        Reply::Edges { from, to, edges } if from.len() == to.len() => Ok(from
            .iter()
            .zip(&to)
            .enumerate()
            .map(|(i, (f, t))| (*f, *t, edges.get(i).copied().unwrap_or(0)))
            .collect()),
        _ => Err(CuError::UNKNOWN),
    }
}

/// Writes up to `*count` entries of `list` (node pairs or nodes, and edge
/// data when asked) and the number written, or only the total when no
/// array is given, as the driver does. Entries past the list are null.
///
/// # Safety
/// Each non-null array holds `*count` entries (API contract).
unsafe fn answer(
    list: &[(Handle, Option<Handle>, u64)],
    first: *mut *mut c_void,
    second: *mut *mut c_void,
    edges: *mut u64,
    count: *mut usize,
) -> CuResult {
    if count.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if first.is_null() {
        return unsafe { out(count, list.len()) };
    }
    // SAFETY: the caller's promise.
    let room = unsafe { *count };
    if room > 1 << 24 {
        return Err(CuError::INVALID_VALUE);
    }
    if edges.is_null() && list.iter().take(room).any(|(_, _, e)| *e != 0) {
        // Edge data the caller cannot see would be lost.
        return Err(CuError::LOSSY_QUERY);
    }
    for i in 0..room {
        let entry = list.get(i);
        // SAFETY: each array holds `room` entries.
        unsafe {
            first.add(i).write(entry.map_or(std::ptr::null_mut(), |e| as_ptr(e.0)));
            if !second.is_null() {
                second
                    .add(i)
                    .write(entry.and_then(|e| e.1).map_or(std::ptr::null_mut(), as_ptr));
            }
            if !edges.is_null() {
                edges.add(i).write(entry.map_or(0, |e| e.2));
            }
        }
    }
    unsafe { out(count, list.len().min(room)) }
}

pub unsafe fn graph_get_edges(
    graph: *mut c_void,
    from: *mut *mut c_void,
    to: *mut *mut c_void,
    count: *mut usize,
) -> CuResult {
    unsafe { graph_get_edges_v2(graph, from, to, std::ptr::null_mut(), count) }
}

pub unsafe fn graph_get_edges_v2(
    graph: *mut c_void,
    from: *mut *mut c_void,
    to: *mut *mut c_void,
    edges: *mut u64,
    count: *mut usize,
) -> CuResult {
    let s = shim()?;
    if from.is_null() != to.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let list: Vec<_> = edges_of(s, handle(graph))?
        .into_iter()
        .map(|(f, t, e)| (f, Some(t), e))
        .collect();
    unsafe { answer(&list, from, to, edges, count) }
}

/// `cuGraphGetRootNodes`: the graph's nodes that follow none.
pub unsafe fn graph_get_root_nodes(graph: *mut c_void, roots: *mut *mut c_void, count: *mut usize) -> CuResult {
    let s = shim()?;
    let g = handle(graph);
    let ctx = graphs::graph_ctx(s, graph)?;
    let nodes = match graphs::nodes_of(g) {
        Some(n) => n,
        None => graphs::list_captured(s, ctx, g)?,
    };
    let edges = edges_of(s, g)?;
    let list: Vec<_> = nodes
        .into_iter()
        .filter(|n| !edges.iter().any(|(_, t, _)| t == n))
        .map(|n| (n, None, 0))
        .collect();
    unsafe { answer(&list, roots, std::ptr::null_mut(), std::ptr::null_mut(), count) }
}

/// The nodes `node` follows (`dependents` false) or that follow it, with
/// the edges' data.
fn neighbours(node: Handle, dependents: bool) -> CuResult<Vec<(Handle, Option<Handle>, u64)>> {
    let s = shim()?;
    let Some(graph) = graphs::graph_of(node) else {
        tracing::warn!(
            "the edges of a node gpupool has not listed (a captured graph's nodes are known once \
             cuGraphGetNodes listed them); returning CUDA_ERROR_NOT_SUPPORTED"
        );
        return Err(CuError::NOT_SUPPORTED);
    };
    Ok(edges_of(s, graph)?
        .into_iter()
        .filter_map(|(f, t, e)| match dependents {
            false if t == node => Some((f, None, e)),
            true if f == node => Some((t, None, e)),
            _ => None,
        })
        .collect())
}

pub unsafe fn graph_node_get_dependencies(node: *mut c_void, deps: *mut *mut c_void, count: *mut usize) -> CuResult {
    unsafe { graph_node_get_dependencies_v2(node, deps, std::ptr::null_mut(), count) }
}

pub unsafe fn graph_node_get_dependencies_v2(
    node: *mut c_void,
    deps: *mut *mut c_void,
    edges: *mut u64,
    count: *mut usize,
) -> CuResult {
    let list = neighbours(handle(node), false)?;
    unsafe { answer(&list, deps, std::ptr::null_mut(), edges, count) }
}

pub unsafe fn graph_node_get_dependent_nodes(node: *mut c_void, deps: *mut *mut c_void, count: *mut usize) -> CuResult {
    unsafe { graph_node_get_dependent_nodes_v2(node, deps, std::ptr::null_mut(), count) }
}

pub unsafe fn graph_node_get_dependent_nodes_v2(
    node: *mut c_void,
    deps: *mut *mut c_void,
    edges: *mut u64,
    count: *mut usize,
) -> CuResult {
    let list = neighbours(handle(node), true)?;
    unsafe { answer(&list, deps, std::ptr::null_mut(), edges, count) }
}
