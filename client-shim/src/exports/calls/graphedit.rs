//! Graphs changed after they are built: a node's work read back
//! (`cuGraphKernelNodeGetParams` and its kin: one round trip, the server's
//! driver answers) and replaced in its graph (`cuGraph*NodeSetParams`,
//! `cuGraphNodeSetParams`, `cuGraphExecNodeSetParams`), nodes and edges
//! removed, graphs cloned, kernel nodes' launch attributes, and the flags
//! of an executable graph.
//!
//! A kernel node's parameters read back are kept here, one block per node,
//! for the `kernelParams` array the program is given to point into: it
//! stays valid until the node's parameters are read again, or the node
//! goes.

use super::graphs::{
    built, exec_node_set, graph_of, node_launch, KernelNodeParams, KernelNodeParamsV2, MemAllocNodeParams,
    MemsetNodeParams, NODE_PARAMS_UNION, TYPE_EVENT_RECORD, TYPE_GRAPH, TYPE_HOST, TYPE_KERNEL, TYPE_MEMCPY,
    TYPE_MEMSET, TYPE_WAIT_EVENT,
};
use super::*;
use gpupool_proto::message::GraphNode;
use std::collections::HashMap;
use std::sync::Mutex;

/// Kernel nodes -> their parameters as last read back: the packed block
/// and one address into it per parameter.
type ReadBack = HashMap<Handle, (Box<[u8]>, Box<[usize]>)>;

static READ_BACK: Mutex<Option<ReadBack>> = Mutex::new(None);

/// Child graph nodes -> their graph, once asked for.
static CHILD_GRAPHS: Mutex<Option<HashMap<Handle, Handle>>> = Mutex::new(None);

fn read_back<T>(f: impl FnOnce(&mut ReadBack) -> T) -> T {
    let mut r = READ_BACK.lock().unwrap_or_else(|p| p.into_inner());
    f(r.get_or_insert_with(HashMap::new))
}

fn child_graphs<T>(f: impl FnOnce(&mut HashMap<Handle, Handle>) -> T) -> T {
    let mut c = CHILD_GRAPHS.lock().unwrap_or_else(|p| p.into_inner());
    f(c.get_or_insert_with(HashMap::new))
}

/// Executable graphs -> the flags they were instantiated with.
static EXEC_FLAGS: Mutex<Option<HashMap<Handle, u64>>> = Mutex::new(None);

/// Bytes of a `CUlaunchAttributeValue`.
const ATTRIBUTE_BYTES: usize = 64;

/// `CU_MEMORYTYPE_DEVICE`.
const MEMORYTYPE_DEVICE: u32 = 2;

/// The context of `node`'s graph: known here for nodes made or listed,
/// the current one otherwise (the server checks the node is of a graph of
/// that context).
fn node_ctx(s: &Shim, node: Handle) -> CuResult<Handle> {
    match graph_of(node).and_then(|g| read(&s.graphs).get(&g).copied()) {
        Some(ctx) => Ok(ctx),
        None => current_ctx(),
    }
}

/// A node's work, from the server: (work, packed kernel parameters, an
/// allocation node's address).
fn node_work(node: *mut c_void) -> CuResult<(Handle, GraphNode, Vec<u8>, u64)> {
    let s = shim()?;
    let ctx = node_ctx(s, handle(node))?;
    match s.remote.call(
        &Request::GraphNodeGet {
            ctx,
            node: handle(node),
        },
        &[],
    )? {
        Reply::Node { node, params, address } => Ok((ctx, node, params, address)),
        _ => Err(CuError::UNKNOWN),
    }
}

/// New work for `node` in its graph.
fn set_work(node: *mut c_void, work: GraphNode, bulk: &[u8]) -> CuResult {
    let s = shim()?;
    let ctx = node_ctx(s, handle(node))?;
    let request = Request::GraphNodeSet {
        ctx,
        node: handle(node),
        params: work,
    };
    s.remote.call(&request, bulk).map(drop)
}

/// The program's name for the server's function or kernel `func`: a
/// library's kernel is named here by a handle of the shim's until loaded.
fn program_function(s: &Shim, func: Handle, kernel: bool) -> Handle {
    if !kernel {
        return func;
    }
    read(&s.lazy_kernels)
        .iter()
        .find(|(_, k)| *lock(&k.remote) == Some(func))
        .map_or(func, |(h, _)| *h)
}

/// A kernel node's parameters: the first layout, and the `_v2` one with
/// the kernel and the context.
unsafe fn kernel_get(node: *mut c_void, params: *mut c_void, v2: bool) -> CuResult {
    let s = shim()?;
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (ctx, GraphNode::Kernel(l), packed, _) = node_work(node)? else {
        return Err(CuError::INVALID_VALUE);
    };
    let func = program_function(s, l.func, l.kernel);
    let layout = param_layout(s, func, l.kernel)?;
    let extent = layout.iter().map(|&(o, n)| (o + n) as usize).max().unwrap_or(0);
    if packed.len() < extent {
        return Err(CuError::UNKNOWN);
    }
    let mut block = packed.into_boxed_slice();
    let base = block.as_mut_ptr() as usize;
    let args: Box<[usize]> = layout.iter().map(|&(o, _)| base + o as usize).collect();
    let args_ptr = read_back(|r| {
        let (_, args) = &*r.entry(handle(node)).insert_entry((block, args)).into_mut();
        if args.is_empty() {
            std::ptr::null_mut()
        } else {
            args.as_ptr() as *mut *mut c_void
        }
    });
    let first = KernelNodeParams {
        func: as_ptr(func),
        grid: l.grid,
        block: l.block,
        shared_mem: l.shared_mem,
        params: args_ptr,
        extra: std::ptr::null_mut(),
    };
    // SAFETY: the program passes room for the layout it asked with.
    unsafe {
        if v2 {
            // cudart names its kernels by their `CUkernel`: the kernel a
            // function was got from is given with it.
            let kern = if l.kernel {
                func
            } else {
                read(&s.kernel_functions)
                    .iter()
                    .find(|((_, c), f)| **f == func && *c == ctx)
                    .map_or(0, |((k, _), _)| *k)
            };
            let p = KernelNodeParamsV2 {
                first,
                kern: as_ptr(kern),
                ctx: as_ptr(ctx),
            };
            params.cast::<KernelNodeParamsV2>().write_unaligned(p);
        } else {
            params.cast::<KernelNodeParams>().write_unaligned(first);
        }
    }
    Ok(())
}

pub unsafe fn graph_kernel_node_get_params(node: *mut c_void, params: *mut c_void) -> CuResult {
    unsafe { kernel_get(node, params, false) }
}

pub unsafe fn graph_kernel_node_get_params_v2(node: *mut c_void, params: *mut c_void) -> CuResult {
    unsafe { kernel_get(node, params, true) }
}

/// A kernel node launches `p` from now on (executable graphs made before
/// keep what they had).
unsafe fn kernel_set(node: *mut c_void, p: KernelNodeParams, kern: CUkernel) -> CuResult {
    let s = shim()?;
    let ctx = node_ctx(s, handle(node))?;
    let (launch, bulk) = unsafe { node_launch(s, ctx, p, kern) }?;
    set_work(node, GraphNode::Kernel(launch), &bulk)
}

pub unsafe fn graph_kernel_node_set_params(node: *mut c_void, params: *const c_void) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes the first layout here.
    let p = unsafe { params.cast::<KernelNodeParams>().read_unaligned() };
    unsafe { kernel_set(node, p, std::ptr::null_mut()) }
}

pub unsafe fn graph_kernel_node_set_params_v2(node: *mut c_void, params: *const c_void) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes the `_v2` layout here.
    let p = unsafe { params.cast::<KernelNodeParamsV2>().read_unaligned() };
    unsafe { kernel_set(node, p.first, p.kern) }
}

pub unsafe fn graph_memset_node_get_params(node: *mut c_void, params: *mut c_void) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (
        _,
        GraphNode::Memset {
            dst,
            pitch,
            value,
            elem_size,
            width,
            height,
        },
        ..,
    ) = node_work(node)?
    else {
        return Err(CuError::INVALID_VALUE);
    };
    let p = MemsetNodeParams {
        dst,
        pitch: pitch as usize,
        value,
        elem_size: elem_size as u32,
        width: width as usize,
        height: height as usize,
    };
    // SAFETY: the program passes room for a CUDA_MEMSET_NODE_PARAMS.
    unsafe { params.cast::<MemsetNodeParams>().write_unaligned(p) };
    Ok(())
}

/// `cuGraphMemsetNodeSetParams`: one row, as for an executable graph.
pub unsafe fn graph_memset_node_set_params(node: *mut c_void, params: *const c_void) -> CuResult {
    let s = shim()?;
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API passes a CUDA_MEMSET_NODE_PARAMS.
    let p = unsafe { params.cast::<MemsetNodeParams>().read_unaligned() };
    let elem_size = u8::try_from(p.elem_size).map_err(|_| CuError::INVALID_VALUE)?;
    if !matches!(elem_size, 1 | 2 | 4) || p.width == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if p.height != 1 {
        tracing::warn!("a memset node set to more than one row is not offered; returning CUDA_ERROR_NOT_SUPPORTED");
        return Err(CuError::NOT_SUPPORTED);
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
    set_work(node, memset, &[])
}

/// `cuGraphMemcpyNodeGetParams`: the device-to-device copy, as a
/// `CUDA_MEMCPY3D` of one row.
pub unsafe fn graph_memcpy_node_get_params(node: *mut c_void, copy: *mut c_void) -> CuResult {
    if copy.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (_, GraphNode::Copy { dst, src, len }, ..) = node_work(node)? else {
        return Err(CuError::INVALID_VALUE);
    };
    // SAFETY: every field is an integer or a raw pointer, for which zero
    // is valid.
    let mut c: super::copies::Memcpy3D = unsafe { std::mem::zeroed() };
    c.src_memory_type = MEMORYTYPE_DEVICE;
    c.src_device = src;
    c.dst_memory_type = MEMORYTYPE_DEVICE;
    c.dst_device = dst;
    c.width_in_bytes = len as usize;
    c.height = 1;
    c.depth = 1;
    // SAFETY: the program passes room for a CUDA_MEMCPY3D.
    unsafe { copy.cast::<super::copies::Memcpy3D>().write_unaligned(c) };
    Ok(())
}

pub unsafe fn graph_memcpy_node_set_params(node: *mut c_void, copy: *const c_void) -> CuResult {
    let s = shim()?;
    let (dst, src, len) = unsafe { super::copies::device_copy_of(copy) }?;
    device_range_ctx(s, dst, len)?;
    device_range_ctx(s, src, len)?;
    set_work(node, GraphNode::Copy { dst, src, len }, &[])
}

unsafe fn event_get(node: *mut c_void, event: *mut CUevent, record: bool) -> CuResult {
    if event.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let e = match node_work(node)?.1 {
        GraphNode::EventRecord { event } if record => event,
        GraphNode::EventWait { event } if !record => event,
        _ => return Err(CuError::INVALID_VALUE),
    };
    unsafe { out(event, as_ptr(e)) }
}

pub unsafe fn graph_event_record_node_get_event(node: *mut c_void, event: *mut CUevent) -> CuResult {
    unsafe { event_get(node, event, true) }
}

pub unsafe fn graph_event_wait_node_get_event(node: *mut c_void, event: *mut CUevent) -> CuResult {
    unsafe { event_get(node, event, false) }
}

pub unsafe fn graph_event_record_node_set_event(node: *mut c_void, event: CUevent) -> CuResult {
    super::completions::recorded_elsewhere(shim()?, handle(event));
    set_work(node, GraphNode::EventRecord { event: handle(event) }, &[])
}

pub unsafe fn graph_event_wait_node_set_event(node: *mut c_void, event: CUevent) -> CuResult {
    set_work(node, GraphNode::EventWait { event: handle(event) }, &[])
}

/// `cuGraphChildGraphNodeGetGraph`: the node's own graph, which the
/// program may change (the node runs what it holds) but not destroy.
pub unsafe fn graph_child_graph_node_get_graph(node: *mut c_void, graph: *mut *mut c_void) -> CuResult {
    let s = shim()?;
    if graph.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (ctx, GraphNode::Child { graph: child }, ..) = node_work(node)? else {
        return Err(CuError::INVALID_VALUE);
    };
    write(&s.graphs).insert(child, ctx);
    // Held by the node's graph (none known: held for good), so that it is
    // not destroyed alone and gets no host nodes (the node's graph would
    // run them unannounced).
    conditionals::hold(child, graph_of(handle(node)).unwrap_or(0));
    child_graphs(|c| c.insert(handle(node), child));
    unsafe { out(graph, as_ptr(child)) }
}

/// `cuGraphMemAllocNodeGetParams`: pinned memory of the graph's device, as
/// every allocation node here is, and where it lies.
pub unsafe fn graph_mem_alloc_node_get_params(node: *mut c_void, params: *mut c_void) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (_, GraphNode::MemAlloc { device, size }, _, address) = node_work(node)? else {
        return Err(CuError::INVALID_VALUE);
    };
    let p = MemAllocNodeParams {
        alloc_type: super::pools::ALLOCATION_PINNED,
        handle_types: 0,
        location: super::pools::MemLocation {
            kind: super::pools::LOCATION_DEVICE,
            id: device,
        },
        rest_of_pool_props: [0; 72],
        access_descs: std::ptr::null(),
        access_desc_count: 0,
        bytesize: size as usize,
        dptr: address,
    };
    // SAFETY: the program passes room for a CUDA_MEM_ALLOC_NODE_PARAMS.
    unsafe { params.cast::<MemAllocNodeParams>().write_unaligned(p) };
    Ok(())
}

pub unsafe fn graph_mem_free_node_get_params(node: *mut c_void, dptr: *mut CUdeviceptr) -> CuResult {
    if dptr.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (_, GraphNode::MemFree { ptr }, ..) = node_work(node)? else {
        return Err(CuError::INVALID_VALUE);
    };
    unsafe { out(dptr, ptr) }
}

/// `cuGraphNodeSetParams`: the typed call for the node's type.
pub unsafe fn graph_node_set_params(node: *mut c_void, params: *const c_void) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let params = params.cast::<u8>();
    // SAFETY: a `CUgraphNodeParams` (API contract): the type, then the
    // union.
    let (kind, body) = unsafe { (params.cast::<u32>().read_unaligned(), params.add(NODE_PARAMS_UNION)) };
    // SAFETY: every member read lies inside the union's 232 bytes.
    let word = |at: usize| unsafe { body.add(at).cast::<*mut c_void>().read_unaligned() };
    unsafe {
        match kind {
            TYPE_KERNEL => graph_kernel_node_set_params_v2(node, body.cast()),
            TYPE_MEMCPY => graph_memcpy_node_set_params(node, body.add(16).cast()),
            TYPE_MEMSET => graph_memset_node_set_params(node, body.cast()),
            TYPE_HOST => super::graphs::graph_host_node_set_params(node, body.cast()),
            TYPE_WAIT_EVENT => graph_event_wait_node_set_event(node, word(0)),
            TYPE_EVENT_RECORD => graph_event_record_node_set_event(node, word(0)),
            other => {
                tracing::warn!(
                    kind = other,
                    "cuGraphNodeSetParams of a node type gpupool does not change; returning CUDA_ERROR_NOT_SUPPORTED"
                );
                Err(CuError::NOT_SUPPORTED)
            }
        }
    }
}

/// `cuGraphExecNodeSetParams`: the typed call for the node's type.
pub unsafe fn graph_exec_node_set_params(exec: *mut c_void, node: *mut c_void, params: *const c_void) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let params = params.cast::<u8>();
    // SAFETY: as in `graph_node_set_params`.
    let (kind, body) = unsafe { (params.cast::<u32>().read_unaligned(), params.add(NODE_PARAMS_UNION)) };
    // SAFETY: as above.
    let word = |at: usize| unsafe { body.add(at).cast::<*mut c_void>().read_unaligned() };
    unsafe {
        match kind {
            TYPE_KERNEL => graph_exec_kernel_node_set_params_v2(exec, node, body.cast()),
            TYPE_MEMCPY => graph_exec_memcpy_node_set_params(exec, node, body.add(16).cast(), word(8)),
            TYPE_MEMSET => graph_exec_memset_node_set_params(exec, node, body.cast(), word(40)),
            TYPE_HOST => graph_exec_host_node_set_params(exec, node, body.cast()),
            TYPE_GRAPH => graph_exec_child_graph_node_set_params(exec, node, word(0)),
            TYPE_WAIT_EVENT => exec_node_set(exec, node, GraphNode::EventWait { event: handle(word(0)) }),
            TYPE_EVENT_RECORD => {
                super::completions::recorded_elsewhere(shim()?, handle(word(0)));
                exec_node_set(exec, node, GraphNode::EventRecord { event: handle(word(0)) })
            }
            other => {
                tracing::warn!(
                    kind = other,
                    "cuGraphExecNodeSetParams of a node type gpupool does not change; returning \
                     CUDA_ERROR_NOT_SUPPORTED"
                );
                Err(CuError::NOT_SUPPORTED)
            }
        }
    }
}

/// `cuGraphDestroyNode`: one round trip; the server answers the node's
/// graph and, for a host node, its token, which launches no longer wait
/// for.
pub unsafe fn graph_destroy_node(node: *mut c_void) -> CuResult {
    let s = shim()?;
    let n = handle(node);
    if hostnodes::child_has(n) {
        tracing::warn!(
            "cuGraphDestroyNode of a child graph node whose graph has host nodes is not supported; returning \
             CUDA_ERROR_NOT_SUPPORTED"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    let ctx = node_ctx(s, n)?;
    let Reply::Pair(graph, token) = s.remote.call(&Request::GraphDestroyNode { ctx, node: n }, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    if token != 0 {
        hostnodes::removed(graph as Handle, token as u64);
    }
    built(|b| {
        if let Some(list) = b.get_mut(&(graph as Handle)) {
            list.retain(|(h, _)| *h != n);
        }
    });
    read_back(|r| r.remove(&n));
    if let Some(child) = child_graphs(|c| c.remove(&n)) {
        for g in conditionals::release(child) {
            write(&s.graphs).remove(&g);
            graphs::forget(g);
            hostnodes::forget(g);
        }
    }
    Ok(())
}

/// `cuGraphRemoveDependencies` and `_v2` (with the edges' data).
unsafe fn remove_dependencies(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    edges: *const u64,
    count: usize,
) -> CuResult {
    let s = shim()?;
    let ctx = graphs::graph_ctx(s, graph)?;
    let (from, to) = unsafe { (graphs::handles(from, count)?, graphs::handles(to, count)?) };
    let edges = unsafe { graphs::edge_data(edges, count) }?;
    let request = Request::GraphRemoveDependencies {
        ctx,
        graph: handle(graph),
        from,
        to,
        edges,
    };
    s.remote.call(&request, &[]).map(drop)
}

pub unsafe fn graph_remove_dependencies(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    count: usize,
) -> CuResult {
    unsafe { remove_dependencies(graph, from, to, std::ptr::null(), count) }
}

pub unsafe fn graph_remove_dependencies_v2(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    edges: *const u64,
    count: usize,
) -> CuResult {
    unsafe { remove_dependencies(graph, from, to, edges, count) }
}

/// `cuGraphClone`: the server's driver copies the graph (one round trip);
/// the copy's host nodes get names of their own, so that launches of the
/// copy and of the original each answer their own.
pub unsafe fn graph_clone(clone: *mut *mut c_void, graph: *mut c_void) -> CuResult {
    let s = shim()?;
    if clone.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = graphs::graph_ctx(s, graph)?;
    let tokens: Vec<(u64, u64)> = hostnodes::tokens_of(handle(graph))
        .into_iter()
        .map(|t| (t, hostnodes::token()))
        .collect();
    let request = Request::GraphClone {
        ctx,
        graph: handle(graph),
        tokens: tokens.clone(),
    };
    let Reply::Cloned { graph: c, renamed } = s.remote.call(&request, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    write(&s.graphs).insert(c, ctx);
    let renames = tokens.into_iter().filter(|(old, _)| renamed.contains(old)).collect();
    hostnodes::cloned(handle(graph), c, renames);
    userobjects::copied(handle(graph), c);
    unsafe { out(clone, as_ptr(c)) }
}

pub unsafe fn graph_node_find_in_clone(found: *mut *mut c_void, node: *mut c_void, clone: *mut c_void) -> CuResult {
    let s = shim()?;
    if found.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = graphs::graph_ctx(s, clone)?;
    let request = Request::GraphFindInClone {
        ctx,
        node: handle(node),
        clone: handle(clone),
    };
    let Reply::Handle(f) = s.remote.call(&request, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    hostnodes::found_in_clone(handle(node), handle(clone), f);
    unsafe { out(found, as_ptr(f)) }
}

fn kernel_node_attribute(node: *mut c_void, attr: u32, set: Option<Vec<u8>>) -> CuResult<Vec<u8>> {
    let s = shim()?;
    let ctx = node_ctx(s, handle(node))?;
    let request = Request::GraphKernelNodeAttribute {
        ctx,
        node: handle(node),
        attr,
        set,
    };
    match s.remote.call(&request, &[])? {
        Reply::Bytes(b) if b.len() == ATTRIBUTE_BYTES => Ok(b),
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn graph_kernel_node_get_attribute(node: *mut c_void, attr: u32, value: *mut u8) -> CuResult {
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let v = kernel_node_attribute(node, attr, None)?;
    // SAFETY: the program passes room for a CUlaunchAttributeValue.
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), value, ATTRIBUTE_BYTES) };
    Ok(())
}

pub unsafe fn graph_kernel_node_set_attribute(node: *mut c_void, attr: u32, value: *const u8) -> CuResult {
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUlaunchAttributeValue.
    let v = unsafe { std::slice::from_raw_parts(value, ATTRIBUTE_BYTES) }.to_vec();
    kernel_node_attribute(node, attr, Some(v)).map(drop)
}

pub unsafe fn graph_kernel_node_copy_attributes(dst: *mut c_void, src: *mut c_void) -> CuResult {
    let s = shim()?;
    let ctx = node_ctx(s, handle(dst))?;
    let request = Request::GraphKernelNodeCopyAttributes {
        ctx,
        dst: handle(dst),
        src: handle(src),
    };
    s.remote.call(&request, &[]).map(drop)
}

/// `exec` was instantiated with `flags`.
pub(super) fn instantiated(exec: Handle, flags: u64) {
    let mut f = EXEC_FLAGS.lock().unwrap_or_else(|p| p.into_inner());
    f.get_or_insert_with(HashMap::new).insert(exec, flags);
}

/// `cuGraphExecGetFlags`: answered here.
pub unsafe fn graph_exec_get_flags(exec: *mut c_void, flags: *mut u64) -> CuResult {
    let s = shim()?;
    graphs::graph_ctx(s, exec)?;
    let f = EXEC_FLAGS.lock().unwrap_or_else(|p| p.into_inner());
    let value = f
        .as_ref()
        .and_then(|f| f.get(&handle(exec)).copied())
        .ok_or(CuError::INVALID_VALUE)?;
    unsafe { out(flags, value) }
}

/// A graph or executable graph went: what was kept for it and its nodes.
pub(super) fn forget(graph: Handle) {
    if let Some(nodes) = graphs::nodes_of(graph) {
        read_back(|r| {
            for n in &nodes {
                r.remove(n);
            }
        });
        child_graphs(|c| {
            for n in &nodes {
                c.remove(n);
            }
        });
    }
    let mut f = EXEC_FLAGS.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = f.as_mut() {
        f.remove(&graph);
    }
}
