//! Graphs the program builds node by node (`cuGraphCreate`,
//! `cuGraphAdd*Node`, `cuGraphAddDependencies`), as XLA's command buffers
//! and the CUDA samples do. Each node is made in the server's graph (one
//! round trip: the node's handle is the driver's); instantiating and
//! launching are those of captured graphs. Kernel, memset, device-to-device
//! copy, empty, child-graph, event record and wait, and host nodes
//! (`hostnodes`) are offered.

use super::*;
use gpupool_proto::message::GraphNode;
use std::collections::HashMap;
use std::sync::Mutex;

/// `CUgraphNodeType` of the nodes offered.
pub(super) const TYPE_KERNEL: u32 = 0;
pub(super) const TYPE_MEMCPY: u32 = 1;
pub(super) const TYPE_MEMSET: u32 = 2;
pub(super) const TYPE_HOST: u32 = 3;
pub(super) const TYPE_GRAPH: u32 = 4;
pub(super) const TYPE_EMPTY: u32 = 5;
pub(super) const TYPE_WAIT_EVENT: u32 = 6;
pub(super) const TYPE_EVENT_RECORD: u32 = 7;
pub(super) const TYPE_MEM_ALLOC: u32 = 10;
pub(super) const TYPE_MEM_FREE: u32 = 11;
pub(super) const TYPE_CONDITIONAL: u32 = 13;

/// The nodes of each graph the program built, in the order added, with
/// their types: `cuGraphGetNodes` and `cuGraphNodeGetType` are answered
/// from here.
static BUILT: Mutex<Option<Built>> = Mutex::new(None);

/// Graph -> its (node, type) in the order added.
pub(super) type Built = HashMap<Handle, Vec<(Handle, u32)>>;

pub(super) fn built<T>(f: impl FnOnce(&mut Built) -> T) -> T {
    let mut b = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    f(b.get_or_insert_with(HashMap::new))
}

/// A graph whose nodes are all made here from now on (a new graph, a
/// conditional node's body).
pub(super) fn track_built(graph: Handle) {
    built(|b| b.insert(graph, Vec::new()));
}

/// A graph went (`cuGraphDestroy`).
pub(super) fn forget(graph: Handle) {
    built(|b| b.remove(&graph));
}

/// The graph of a node made or listed here.
pub(super) fn graph_of(node: Handle) -> Option<Handle> {
    built(|b| {
        b.iter()
            .find(|(_, n)| n.iter().any(|(h, _)| *h == node))
            .map(|(g, _)| *g)
    })
}

/// The nodes of a graph the program built, or of a captured one listed
/// before, if known here.
pub(super) fn nodes_of(graph: Handle) -> Option<Vec<Handle>> {
    built(|b| b.get(&graph).map(|n| n.iter().map(|(h, _)| *h).collect()))
}

/// The nodes of a captured graph, from the server (one round trip; known
/// here from then on, with later nodes added to it).
pub(super) fn list_captured(s: &Shim, ctx: Handle, graph: Handle) -> CuResult<Vec<Handle>> {
    match s.remote.call(&Request::GraphListNodes { ctx, graph }, &[])? {
        Reply::Nodes(list) => {
            let nodes = list.iter().map(|(h, _)| *h).collect();
            built(|b| b.insert(graph, list));
            Ok(nodes)
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn graph_node_get_type(node: *mut c_void, kind: *mut u32) -> CuResult {
    shim()?;
    if kind.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let n = handle(node);
    let found = built(|b| b.values().flatten().find(|(h, _)| *h == n).map(|(_, t)| *t));
    match found {
        Some(t) => unsafe { out(kind, t) },
        None => {
            tracing::warn!(
                "cuGraphNodeGetType of a node gpupool has not listed (a captured graph's nodes are known once \
                 cuGraphGetNodes listed them); returning CUDA_ERROR_NOT_SUPPORTED"
            );
            Err(CuError::NOT_SUPPORTED)
        }
    }
}

/// `CUDA_KERNEL_NODE_PARAMS`: the first layout, and the `_v2` one, which
/// adds a kernel handle and the context to run it in.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct KernelNodeParams {
    pub(super) func: CUfunction,
    pub(super) grid: [u32; 3],
    pub(super) block: [u32; 3],
    pub(super) shared_mem: u32,
    pub(super) params: *mut *mut c_void,
    pub(super) extra: *mut *mut c_void,
}

#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct KernelNodeParamsV2 {
    pub(super) first: KernelNodeParams,
    pub(super) kern: CUkernel,
    pub(super) ctx: CUcontext,
}

/// `CUDA_MEMSET_NODE_PARAMS`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct MemsetNodeParams {
    pub(super) dst: CUdeviceptr,
    pub(super) pitch: usize,
    pub(super) value: u32,
    pub(super) elem_size: u32,
    pub(super) width: usize,
    pub(super) height: usize,
}

/// Most dependencies one call may name.
const MAX_DEPENDENCIES: usize = 1 << 16;

/// The node handles the program passed.
///
/// # Safety
/// `nodes` holds `count` handles when `count > 0` (API contract).
pub(super) unsafe fn handles(nodes: *const *mut c_void, count: usize) -> CuResult<Vec<Handle>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if nodes.is_null() || count > MAX_DEPENDENCIES {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(nodes, count) }
        .iter()
        .map(|n| handle(*n))
        .collect())
}

/// The context a graph was made in.
pub(super) fn graph_ctx(s: &Shim, graph: *mut c_void) -> CuResult<Handle> {
    read(&s.graphs)
        .get(&handle(graph))
        .copied()
        .ok_or(CuError::INVALID_VALUE)
}

/// Add `node` to the server's graph; the node's handle to the program.
unsafe fn add(
    out_node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    node: GraphNode,
    bulk: &[u8],
) -> CuResult {
    unsafe { add_replying(out_node, graph, deps, count, Vec::new(), node, bulk) }.map(drop)
}

/// As [`add`]; also the address an allocation node's memory has.
unsafe fn add_answering(
    out_node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    node: GraphNode,
    bulk: &[u8],
) -> CuResult<Option<u64>> {
    Ok(
        match unsafe { add_replying(out_node, graph, deps, count, Vec::new(), node, bulk) }? {
            Reply::Pair(_, address) => Some(address as u64),
            _ => None,
        },
    )
}

/// As [`add`], with the edges' data (`CUgraphEdgeData`, one per
/// dependency, or none for default edges); the server's answer.
pub(super) unsafe fn add_replying(
    out_node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    edges: Vec<u64>,
    node: GraphNode,
    bulk: &[u8],
) -> CuResult<Reply> {
    let s = shim()?;
    if out_node.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = graph_ctx(s, graph)?;
    let deps = unsafe { handles(deps, count) }?;
    let kind = match &node {
        GraphNode::Empty => TYPE_EMPTY,
        GraphNode::Kernel(_) => TYPE_KERNEL,
        GraphNode::Memset { .. } => TYPE_MEMSET,
        GraphNode::Copy { .. } => TYPE_MEMCPY,
        GraphNode::Child { .. } => TYPE_GRAPH,
        GraphNode::EventRecord { .. } => TYPE_EVENT_RECORD,
        GraphNode::EventWait { .. } => TYPE_WAIT_EVENT,
        GraphNode::Host { .. } => TYPE_HOST,
        GraphNode::MemAlloc { .. } => TYPE_MEM_ALLOC,
        GraphNode::MemFree { .. } => TYPE_MEM_FREE,
        GraphNode::Conditional { .. } => TYPE_CONDITIONAL,
    };
    let request = Request::GraphAddNode {
        ctx,
        graph: handle(graph),
        deps,
        edges,
        node,
    };
    let reply = s.remote.call(&request, bulk)?;
    let n = match reply {
        Reply::Handle(n) => n,
        Reply::Pair(n, _) => n as Handle,
        Reply::Conditional { node, .. } => node,
        _ => return Err(CuError::UNKNOWN),
    };
    // A captured graph's nodes are known here once listed.
    built(|b| {
        if let Some(list) = b.get_mut(&handle(graph)) {
            list.push((n, kind));
        }
    });
    unsafe { out(out_node, as_ptr(n)) }?;
    Ok(reply)
}

/// `CUDA_MEM_ALLOC_NODE_PARAMS`: the pool's properties (88 bytes), access
/// descriptors, the size, and the address the driver gives back.
#[repr(C)]
pub(super) struct MemAllocNodeParams {
    pub(super) alloc_type: u32,
    pub(super) handle_types: u32,
    pub(super) location: super::pools::MemLocation,
    pub(super) rest_of_pool_props: [u8; 72],
    pub(super) access_descs: *const c_void,
    pub(super) access_desc_count: usize,
    pub(super) bytesize: usize,
    pub(super) dptr: CUdeviceptr,
}

const _: () = assert!(std::mem::size_of::<MemAllocNodeParams>() == 120);

/// `cuGraphAddMemAllocNode`: the server's driver allocates the graph's
/// memory (one round trip) and says where; the memory is the program's to
/// name, as a stream-ordered allocation's in a capture is. Pinned device
/// memory of the graph's device, without access for others.
pub unsafe fn graph_add_mem_alloc_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    params: *mut c_void,
) -> CuResult {
    let s = shim()?;
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes a CUDA_MEM_ALLOC_NODE_PARAMS.
    let p = unsafe { &mut *params.cast::<MemAllocNodeParams>() };
    if p.alloc_type != super::pools::ALLOCATION_PINNED || p.bytesize == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if p.handle_types != 0 || p.access_desc_count != 0 {
        tracing::warn!("graph allocations with handle types or access for other devices are not offered");
        return Err(CuError::NOT_SUPPORTED);
    }
    let device = p.location.device(s)?;
    let ctx = graph_ctx(s, graph)?;
    let size = p.bytesize as u64;
    let alloc = GraphNode::MemAlloc { device, size };
    let address = unsafe { add_answering(node, graph, deps, count, alloc, &[]) }?.ok_or(CuError::UNKNOWN)?;
    p.dptr = address;
    let range = DeviceRange {
        size,
        ctx,
        device,
        kind: RangeKind::Allocated,
        legacy_ipc: false,
    };
    super::keep_device_range(s, "a graph's allocation node", address, range);
    Ok(())
}

/// `cuGraphAddMemFreeNode` of a graph allocation.
pub unsafe fn graph_add_mem_free_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    ptr: CUdeviceptr,
) -> CuResult {
    let s = shim()?;
    unsafe { add(node, graph, deps, count, GraphNode::MemFree { ptr }, &[]) }?;
    lock(&s.device_memory).remove(&ptr);
    Ok(())
}

pub unsafe fn graph_create(graph: *mut *mut c_void, flags: u32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if graph.is_null() || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let Reply::Handle(g) = s.remote.call(&Request::GraphCreate { ctx }, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    write(&s.graphs).insert(g, ctx);
    track_built(g);
    unsafe { out(graph, as_ptr(g)) }
}

pub unsafe fn graph_add_empty_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
) -> CuResult {
    unsafe { add(node, graph, deps, count, GraphNode::Empty, &[]) }
}

/// A kernel node's launch in `ctx` (its stream unused): the kernel when
/// the node names no function.
///
/// # Safety
/// The node's parameters follow the launch contract.
pub(super) unsafe fn node_launch(
    s: &Shim,
    ctx: Handle,
    p: KernelNodeParams,
    kern: CUkernel,
) -> CuResult<(Launch, Vec<u8>)> {
    let func = if p.func.is_null() { handle(kern) } else { handle(p.func) };
    check_launch_args(func, p.grid, p.block, p.params, p.extra)?;
    let legacy = StreamRef::Legacy;
    unsafe {
        packed_launch(
            s,
            ctx,
            func,
            p.grid,
            p.block,
            p.shared_mem,
            p.params,
            p.extra,
            legacy,
            Vec::new(),
        )
    }
}

/// A kernel node, as a launch would be sent (the parameters packed by the
/// function's layout) but held by the graph.
unsafe fn kernel_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    edges: Vec<u64>,
    p: KernelNodeParams,
    kern: CUkernel,
) -> CuResult {
    let s = shim()?;
    let ctx = graph_ctx(s, graph)?;
    let (launch, bulk) = unsafe { node_launch(s, ctx, p, kern) }?;
    let kernel = GraphNode::Kernel(launch);
    unsafe { add_replying(node, graph, deps, count, edges, kernel, &bulk) }.map(drop)
}

pub unsafe fn graph_add_kernel_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    params: *const c_void,
) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes the first layout here.
    let p = unsafe { params.cast::<KernelNodeParams>().read_unaligned() };
    unsafe { kernel_node(node, graph, deps, count, Vec::new(), p, std::ptr::null_mut()) }
}

pub unsafe fn graph_add_kernel_node_v2(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    params: *const c_void,
) -> CuResult {
    unsafe { kernel_node_v2(node, graph, deps, count, Vec::new(), params) }
}

/// A kernel node of the `_v2` layout after `deps`, with the edges' data.
unsafe fn kernel_node_v2(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    edges: Vec<u64>,
    params: *const c_void,
) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes the `_v2` layout here.
    let p = unsafe { params.cast::<KernelNodeParamsV2>().read_unaligned() };
    let s = shim()?;
    if !p.ctx.is_null() && Some(&handle(p.ctx)) != read(&s.graphs).get(&handle(graph)) {
        // The server's graph is made in one context.
        tracing::warn!("a kernel node for another context than its graph's; returning CUDA_ERROR_NOT_SUPPORTED");
        return Err(CuError::NOT_SUPPORTED);
    }
    unsafe { kernel_node(node, graph, deps, count, edges, p.first, p.kern) }
}

pub unsafe fn graph_add_memset_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    params: *const c_void,
    _ctx: CUcontext,
) -> CuResult {
    let s = shim()?;
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes a CUDA_MEMSET_NODE_PARAMS.
    let p = unsafe { params.cast::<MemsetNodeParams>().read_unaligned() };
    let elem_size = u8::try_from(p.elem_size).map_err(|_| CuError::INVALID_VALUE)?;
    if !matches!(elem_size, 1 | 2 | 4) || p.width == 0 || p.height == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let row = p.width.checked_mul(elem_size as usize).ok_or(CuError::INVALID_VALUE)?;
    let span = (p.height - 1)
        .checked_mul(p.pitch)
        .and_then(|x| x.checked_add(row))
        .ok_or(CuError::INVALID_VALUE)?;
    if p.height > 1 && p.pitch < row {
        return Err(CuError::INVALID_VALUE);
    }
    device_range_ctx(s, p.dst, span as u64)?;
    let memset = GraphNode::Memset {
        dst: p.dst,
        pitch: p.pitch as u64,
        value: p.value,
        elem_size,
        width: p.width as u64,
        height: p.height as u64,
    };
    unsafe { add(node, graph, deps, count, memset, &[]) }
}

pub unsafe fn graph_add_memcpy_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    copy: *const c_void,
    _ctx: CUcontext,
) -> CuResult {
    let s = shim()?;
    let (dst, src, len) = unsafe { super::copies::device_copy_of(copy) }?;
    device_range_ctx(s, dst, len)?;
    device_range_ctx(s, src, len)?;
    unsafe { add(node, graph, deps, count, GraphNode::Copy { dst, src, len }, &[]) }
}

pub unsafe fn graph_add_dependencies(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    count: usize,
) -> CuResult {
    unsafe { graph_add_dependencies_v2(graph, from, to, std::ptr::null(), count) }
}

/// `cuGraphAddDependencies_v2`: edges with data (programmatic launch
/// edges, as XLA's command buffers make) pass to the server's driver.
pub unsafe fn graph_add_dependencies_v2(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    edges: *const u64,
    count: usize,
) -> CuResult {
    let s = shim()?;
    let ctx = graph_ctx(s, graph)?;
    let (from, to) = unsafe { (handles(from, count)?, handles(to, count)?) };
    let request = Request::GraphAddDependencies {
        ctx,
        graph: handle(graph),
        from,
        to,
        edges: unsafe { edge_data(edges, count) }?,
    };
    s.remote.call(&request, &[]).map(|_| ())
}

/// Edge data (`CUgraphEdgeData`, 8 bytes each): only the default, all
/// zeroes, is offered.
///
/// # Safety
/// `edges` holds `count` entries when non-null (API contract).
/// Dependencies `deps` with default edges (`edges` null or all zeroes).
///
/// # Safety
/// `deps` and `edges`, when not null, point at `count` entries.
pub(super) unsafe fn edges_to(deps: *const *mut c_void, edges: *const u64, count: usize) -> CuResult<Vec<Handle>> {
    unsafe { default_edges(edges, count) }?;
    unsafe { handles(deps, count) }
}

/// Edge data (`CUgraphEdgeData`: from port, to port, type, five reserved
/// bytes) to send: none when every edge is the default. Reserved bytes
/// must be zero, types and ports those the driver defines.
///
/// # Safety
/// `edges` holds `count` entries when non-null (API contract).
pub(super) unsafe fn edge_data(edges: *const u64, count: usize) -> CuResult<Vec<u64>> {
    if edges.is_null() || count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_DEPENDENCIES {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the caller's promise.
    let data = unsafe { std::slice::from_raw_parts(edges, count) };
    if data.iter().all(|e| *e == 0) {
        return Ok(Vec::new());
    }
    // Ports 0..=2 (default, programmatic, launch order), types 0..=1.
    let valid = |e: u64| {
        let b = e.to_le_bytes();
        b[0] <= 2 && b[1] <= 2 && b[2] <= 1 && b[3..].iter().all(|r| *r == 0)
    };
    if !data.iter().all(|e| valid(*e)) {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(data.to_vec())
}

unsafe fn default_edges(edges: *const u64, count: usize) -> CuResult {
    if !edges.is_null() && count > 0 {
        // SAFETY: the caller's promise.
        let data = unsafe { std::slice::from_raw_parts(edges, count) };
        if let Some(e) = data.iter().find(|e| **e != 0) {
            tracing::warn!(
                edge = format!("{e:#018x}"),
                "graph edges with data are not offered; returning CUDA_ERROR_NOT_SUPPORTED"
            );
            return Err(CuError::NOT_SUPPORTED);
        }
    }
    Ok(())
}

pub unsafe fn graph_add_child_graph_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    child: *mut c_void,
) -> CuResult {
    let s = shim()?;
    if graph_ctx(s, child)? != graph_ctx(s, graph)? {
        return Err(CuError::INVALID_VALUE);
    }
    let child_graph = handle(child);
    if hostnodes::has(child_graph) {
        refuse_host_nodes_in_body(handle(graph))?;
    }
    let child = GraphNode::Child { graph: child_graph };
    unsafe { add(node, graph, deps, count, child, &[]) }?;
    // SAFETY: `add` wrote the new node there.
    hostnodes::child_added(handle(graph), handle(unsafe { *node }), child_graph);
    userobjects::copied(child_graph, handle(graph));
    Ok(())
}

/// `CUDA_HOST_NODE_PARAMS` (the first two members of its `_v2`).
#[repr(C)]
#[derive(Clone, Copy)]
struct HostNodeParams {
    func: *mut c_void,
    data: *mut c_void,
}

/// `cuGraphAddHostNode`: the program's function runs at every launch of
/// the graph (`hostnodes`).
pub unsafe fn graph_add_host_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    params: *const c_void,
) -> CuResult {
    let call = unsafe { host_call(params) }?;
    refuse_host_nodes_in_body(handle(graph))?;
    let token = hostnodes::token();
    unsafe { add(node, graph, deps, count, GraphNode::Host { token }, &[]) }?;
    // SAFETY: `add` wrote the new node there.
    hostnodes::added(handle(graph), handle(unsafe { *node }), token, call);
    Ok(())
}

/// Host nodes cannot be in a conditional node's body, CUDA's rule; the
/// shim could not tell which of them a launch reaches.
fn refuse_host_nodes_in_body(graph: Handle) -> CuResult {
    if conditionals::is_body(graph) {
        tracing::warn!(
            "a host node in a conditional node's body (CUDA allows kernel, empty, memset, memcpy, child graph \
             and conditional nodes there) or in a child graph node's graph; returning CUDA_ERROR_INVALID_VALUE"
        );
        return Err(CuError::INVALID_VALUE);
    }
    Ok(())
}

/// The program's host function a `CUDA_HOST_NODE_PARAMS` names.
unsafe fn host_call(params: *const c_void) -> CuResult<crate::callbacks::Call> {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes a CUDA_HOST_NODE_PARAMS.
    let p = unsafe { params.cast::<HostNodeParams>().read_unaligned() };
    if p.func.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a `CUhostFn`, checked not to be null.
    let func = unsafe { std::mem::transmute::<*mut c_void, crate::callbacks::HostFn>(p.func) };
    Ok(crate::callbacks::Call::Host {
        func,
        data: p.data as usize,
    })
}

/// `cuGraphHostNodeGetParams`: answered in the shim, for host nodes of
/// built graphs.
pub unsafe fn graph_host_node_get_params(node: *mut c_void, params: *mut c_void) -> CuResult {
    shim()?;
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    match hostnodes::params_of(handle(node)) {
        Some(crate::callbacks::Call::Host { func, data }) => {
            let p = HostNodeParams {
                func: func as *mut c_void,
                data: data as *mut c_void,
            };
            // SAFETY: the program passes room for a CUDA_HOST_NODE_PARAMS.
            unsafe { params.cast::<HostNodeParams>().write_unaligned(p) };
            Ok(())
        }
        _ => Err(CuError::INVALID_VALUE),
    }
}

/// `cuGraphHostNodeSetParams`: the node's function in its graph (the
/// server's node names only the node, so nothing travels).
pub unsafe fn graph_host_node_set_params(node: *mut c_void, params: *const c_void) -> CuResult {
    shim()?;
    let call = unsafe { host_call(params) }?;
    match hostnodes::set(handle(node), None, call) {
        true => Ok(()),
        false => Err(CuError::INVALID_VALUE),
    }
}

/// `cuGraphExecHostNodeSetParams`: the node's function in an executable
/// graph made of its graph.
pub unsafe fn graph_exec_host_node_set_params(exec: *mut c_void, node: *mut c_void, params: *const c_void) -> CuResult {
    let s = shim()?;
    graph_ctx(s, exec)?;
    let call = unsafe { host_call(params) }?;
    match hostnodes::set(handle(node), Some(handle(exec)), call) {
        true => Ok(()),
        false => Err(CuError::INVALID_VALUE),
    }
}

pub unsafe fn graph_add_event_record_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    event: CUevent,
) -> CuResult {
    if let Ok(s) = shim() {
        super::completions::recorded_elsewhere(s, handle(event));
    }
    let record = GraphNode::EventRecord { event: handle(event) };
    unsafe { add(node, graph, deps, count, record, &[]) }
}

pub unsafe fn graph_add_event_wait_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    event: CUevent,
) -> CuResult {
    let wait = GraphNode::EventWait { event: handle(event) };
    unsafe { add(node, graph, deps, count, wait, &[]) }
}

/// `cuGraphExecKernelNodeSetParams`: a kernel node's launch in an
/// executable graph, replaced (one round trip; the server's driver checks
/// that the node is of the graph the executable was made from).
unsafe fn exec_kernel_node_set(exec: *mut c_void, node: *mut c_void, p: KernelNodeParams, kern: CUkernel) -> CuResult {
    let s = shim()?;
    let ctx = graph_ctx(s, exec)?;
    let (launch, bulk) = unsafe { node_launch(s, ctx, p, kern) }?;
    let request = Request::GraphExecKernelNodeSet {
        ctx,
        exec: handle(exec),
        node: handle(node),
        launch,
    };
    s.remote.call(&request, &bulk).map(|_| ())
}

pub unsafe fn graph_exec_kernel_node_set_params(
    exec: *mut c_void,
    node: *mut c_void,
    params: *const c_void,
) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes the first layout here.
    let p = unsafe { params.cast::<KernelNodeParams>().read_unaligned() };
    unsafe { exec_kernel_node_set(exec, node, p, std::ptr::null_mut()) }
}

pub unsafe fn graph_exec_kernel_node_set_params_v2(
    exec: *mut c_void,
    node: *mut c_void,
    params: *const c_void,
) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes the `_v2` layout here.
    let p = unsafe { params.cast::<KernelNodeParamsV2>().read_unaligned() };
    unsafe { exec_kernel_node_set(exec, node, p.first, p.kern) }
}

/// Where a `CUgraphNodeParams`'s union begins (after the type and three
/// reserved words).
pub(super) const NODE_PARAMS_UNION: usize = 16;

/// `cuGraphAddNode`: a node described by a tagged `CUgraphNodeParams`, made
/// as the typed call for its type makes it.
///
/// # Safety
/// `params` points at a `CUgraphNodeParams` (API contract).
unsafe fn add_generic(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    edges: Vec<u64>,
    params: *const u8,
) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the caller's promise; the type is the first word.
    let (kind, body) = unsafe { (params.cast::<u32>().read_unaligned(), params.add(NODE_PARAMS_UNION)) };
    if !edges.is_empty() && kind != TYPE_KERNEL {
        tracing::warn!(
            kind,
            "graph edges with data to a node other than a kernel are not offered; returning CUDA_ERROR_NOT_SUPPORTED"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    // SAFETY: every member read lies inside the union's 232 bytes.
    let word = |at: usize| unsafe { body.add(at).cast::<*mut c_void>().read_unaligned() };
    unsafe {
        match kind {
            // `CUDA_KERNEL_NODE_PARAMS_v3`: the `_v2` layout.
            TYPE_KERNEL => kernel_node_v2(node, graph, deps, count, edges, body.cast()),
            // `CUDA_MEMCPY_NODE_PARAMS`: flags, reserved, context, then the copy.
            TYPE_MEMCPY => graph_add_memcpy_node(node, graph, deps, count, body.add(16).cast(), word(8)),
            // `CUDA_MEMSET_NODE_PARAMS_v2`: the first layout, then the context.
            TYPE_MEMSET => graph_add_memset_node(node, graph, deps, count, body.cast(), word(40)),
            TYPE_GRAPH => graph_add_child_graph_node(node, graph, deps, count, word(0)),
            // `CUDA_HOST_NODE_PARAMS_v2`: the function, its argument, flags.
            TYPE_HOST => graph_add_host_node(node, graph, deps, count, body.cast()),
            // `CUDA_MEM_ALLOC_NODE_PARAMS_v2`: the first layout; the address
            // is written back into the union.
            TYPE_MEM_ALLOC => graph_add_mem_alloc_node(node, graph, deps, count, body.cast_mut().cast()),
            // `CUDA_MEM_FREE_NODE_PARAMS`: the address.
            TYPE_MEM_FREE => graph_add_mem_free_node(node, graph, deps, count, word(0) as CUdeviceptr),
            TYPE_EMPTY => graph_add_empty_node(node, graph, deps, count),
            TYPE_WAIT_EVENT => graph_add_event_wait_node(node, graph, deps, count, word(0)),
            TYPE_EVENT_RECORD => graph_add_event_record_node(node, graph, deps, count, word(0)),
            // `CUDA_CONDITIONAL_NODE_PARAMS`: the bodies are written back.
            TYPE_CONDITIONAL => {
                conditionals::graph_add_conditional_node(node, graph, deps, count, body.cast_mut().cast())
            }
            other => {
                tracing::warn!(
                    kind = other,
                    "cuGraphAddNode of a node type gpupool does not offer; returning CUDA_ERROR_NOT_SUPPORTED"
                );
                Err(CuError::NOT_SUPPORTED)
            }
        }
    }
}

pub unsafe fn graph_add_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    count: usize,
    params: *const c_void,
) -> CuResult {
    unsafe { add_generic(node, graph, deps, count, Vec::new(), params.cast()) }
}

/// `cuGraphAddNode_v2`: with edge data (to kernel nodes only).
pub unsafe fn graph_add_node_v2(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    edges: *const u64,
    count: usize,
    params: *const c_void,
) -> CuResult {
    let edges = unsafe { edge_data(edges, count) }?;
    unsafe { add_generic(node, graph, deps, count, edges, params.cast()) }
}

/// `cuGraphExecUpdate` through the server's driver: (status, update
/// result, error node).
fn exec_update(exec: *mut c_void, graph: *mut c_void) -> CuResult<(u32, u32, Handle)> {
    let s = shim()?;
    let ctx = graph_ctx(s, exec)?;
    if graph_ctx(s, graph)? != ctx {
        return Err(CuError::INVALID_VALUE);
    }
    let request = Request::GraphExecUpdate {
        ctx,
        exec: handle(exec),
        graph: handle(graph),
    };
    let (status, result, node) = match s.remote.call(&request, &[])? {
        Reply::Bytes(b) if b.len() == 16 => (
            u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        ),
        _ => return Err(CuError::UNKNOWN),
    };
    if status == 0 && result == 0 {
        // The executable now runs the graph's nodes, host nodes included.
        hostnodes::copy(handle(graph), handle(exec));
    }
    Ok((status, result, node))
}

fn status(code: u32) -> CuResult {
    if code == 0 {
        Ok(())
    } else {
        Err(CuError(code))
    }
}

/// `cuGraphExecUpdate_v2`: the result in a `CUgraphExecUpdateResultInfo`
/// (result, error node, error-from node).
pub unsafe fn graph_exec_update_v2(exec: *mut c_void, graph: *mut c_void, info: *mut c_void) -> CuResult {
    if info.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (code, result, node) = exec_update(exec, graph)?;
    // SAFETY: `info` points at a CUgraphExecUpdateResultInfo (API
    // contract): a 4-byte result, then two node handles from byte 8.
    unsafe {
        info.cast::<u32>().write_unaligned(result);
        info.cast::<u8>().add(8).cast::<u64>().write_unaligned(node);
        info.cast::<u8>().add(16).cast::<u64>().write_unaligned(0);
    }
    status(code)
}

/// `cuGraphExecUpdate`, the CUDA 10.2 form: the error node and the result
/// through two pointers.
pub unsafe fn graph_exec_update(
    exec: *mut c_void,
    graph: *mut c_void,
    error_node: *mut *mut c_void,
    result: *mut u32,
) -> CuResult {
    if error_node.is_null() || result.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (code, r, node) = exec_update(exec, graph)?;
    unsafe {
        out(result, r)?;
        out(error_node, as_ptr(node))?;
    }
    status(code)
}

/// New work for a memset or copy node of an executable graph.
pub(super) fn exec_node_set(exec: *mut c_void, node: *mut c_void, params: GraphNode) -> CuResult {
    let s = shim()?;
    let ctx = graph_ctx(s, exec)?;
    let request = Request::GraphExecNodeSet {
        ctx,
        exec: handle(exec),
        node: handle(node),
        params,
    };
    s.remote.call(&request, &[]).map(|_| ())
}

/// `cuGraphExecMemsetNodeSetParams`: one row, as the driver asks.
pub unsafe fn graph_exec_memset_node_set_params(
    exec: *mut c_void,
    node: *mut c_void,
    params: *const c_void,
    _ctx: CUcontext,
) -> CuResult {
    let s = shim()?;
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes a CUDA_MEMSET_NODE_PARAMS.
    let p = unsafe { params.cast::<MemsetNodeParams>().read_unaligned() };
    let elem_size = u8::try_from(p.elem_size).map_err(|_| CuError::INVALID_VALUE)?;
    if !matches!(elem_size, 1 | 2 | 4) || p.width == 0 || p.height != 1 {
        return Err(CuError::INVALID_VALUE);
    }
    let row = p.width.checked_mul(elem_size as usize).ok_or(CuError::INVALID_VALUE)?;
    device_range_ctx(s, p.dst, row as u64)?;
    let memset = GraphNode::Memset {
        dst: p.dst,
        pitch: row as u64,
        value: p.value,
        elem_size,
        width: p.width as u64,
        height: 1,
    };
    exec_node_set(exec, node, memset)
}

/// `cuGraphExecMemcpyNodeSetParams`: a device-to-device copy of one row.
pub unsafe fn graph_exec_memcpy_node_set_params(
    exec: *mut c_void,
    node: *mut c_void,
    copy: *const c_void,
    _ctx: CUcontext,
) -> CuResult {
    let s = shim()?;
    let (dst, src, len) = unsafe { super::copies::device_copy_of(copy) }?;
    device_range_ctx(s, dst, len)?;
    device_range_ctx(s, src, len)?;
    exec_node_set(exec, node, GraphNode::Copy { dst, src, len })
}

/// `cuGraphExecChildGraphNodeSetParams`: the child graph node of an
/// executable graph runs `child`'s work (of the same shape) from now on.
pub unsafe fn graph_exec_child_graph_node_set_params(
    exec: *mut c_void,
    node: *mut c_void,
    child: *mut c_void,
) -> CuResult {
    let s = shim()?;
    if graph_ctx(s, child)? != graph_ctx(s, exec)? {
        return Err(CuError::INVALID_VALUE);
    }
    if hostnodes::has(handle(child)) || hostnodes::child_has(handle(node)) {
        tracing::warn!(
            "cuGraphExecChildGraphNodeSetParams with host nodes in either child is not supported; returning \
             CUDA_ERROR_NOT_SUPPORTED"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    exec_node_set(exec, node, GraphNode::Child { graph: handle(child) })
}

/// `cuGraphExecEventRecordNodeSetEvent`.
pub unsafe fn graph_exec_event_record_node_set_event(exec: *mut c_void, node: *mut c_void, event: CUevent) -> CuResult {
    super::completions::recorded_elsewhere(shim()?, handle(event));
    exec_node_set(exec, node, GraphNode::EventRecord { event: handle(event) })
}

/// `cuGraphExecEventWaitNodeSetEvent`.
pub unsafe fn graph_exec_event_wait_node_set_event(exec: *mut c_void, node: *mut c_void, event: CUevent) -> CuResult {
    exec_node_set(exec, node, GraphNode::EventWait { event: handle(event) })
}

/// `cuGraphDebugDotPrint`: the server's driver describes the graph (one
/// round trip), and the description is written to the program's file
/// (PyTorch's `CUDAGraph.debug_dump` asks for it).
pub unsafe fn graph_debug_dot_print(graph: *mut c_void, path: *const c_char, flags: u32) -> CuResult {
    let s = shim()?;
    let ctx = graph_ctx(s, graph)?;
    let path = unsafe { c_string(path)? };
    let request = Request::GraphDebugDot {
        ctx,
        graph: handle(graph),
        flags,
    };
    match s.remote.call(&request, &[])? {
        Reply::Bytes(dot) => std::fs::write(&path, dot).map_err(|e| {
            tracing::warn!("cuGraphDebugDotPrint cannot write {path}: {e}");
            CuError::OPERATING_SYSTEM
        }),
        _ => Err(CuError::UNKNOWN),
    }
}

/// `cuGraphNodeSetEnabled` and `cuGraphNodeGetEnabled`: whether a kernel,
/// memset or copy node of an executable graph runs, on the server's driver
/// (one round trip each).
fn node_enabled(exec: *mut c_void, node: *mut c_void, set: Option<bool>) -> CuResult<bool> {
    let s = shim()?;
    let ctx = graph_ctx(s, exec)?;
    let request = Request::GraphNodeEnabled {
        ctx,
        exec: handle(exec),
        node: handle(node),
        set,
    };
    match s.remote.call(&request, &[])? {
        Reply::Int(v) => Ok(v != 0),
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn graph_node_set_enabled(exec: *mut c_void, node: *mut c_void, enabled: u32) -> CuResult {
    node_enabled(exec, node, Some(enabled != 0)).map(drop)
}

pub unsafe fn graph_node_get_enabled(exec: *mut c_void, node: *mut c_void, enabled: *mut u32) -> CuResult {
    if enabled.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let e = node_enabled(exec, node, None)?;
    unsafe { out(enabled, e as u32) }
}
