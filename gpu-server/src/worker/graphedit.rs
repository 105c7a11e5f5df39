//! Graphs changed after they are built: a node's work read back
//! (`GraphNodeGet`) and replaced in its graph (`GraphNodeSet`), nodes and
//! edges removed, graphs cloned (host nodes renamed in the copy, so that a
//! launch of the copy and of the original answer their own host calls),
//! and kernel nodes' launch attributes. Every node named is one of the
//! session's, in a graph of the context named.

use super::*;
use crate::driver::{End, HostNodeParams, KernelNodeParams, MemAllocNodeParams, MEMORYTYPE_DEVICE};

/// `CUgraphNodeType`s.
const NODE_KERNEL: u32 = 0;
const NODE_MEMCPY: u32 = 1;
const NODE_MEMSET: u32 = 2;
const NODE_HOST: u32 = 3;
const NODE_GRAPH: u32 = 4;
const NODE_WAIT_EVENT: u32 = 6;
const NODE_EVENT_RECORD: u32 = 7;
const NODE_MEM_ALLOC: u32 = 10;
const NODE_MEM_FREE: u32 = 11;
const NODE_CONDITIONAL: u32 = 13;

/// `CU_MEMORYTYPE_UNIFIED`.
const MEMORYTYPE_UNIFIED: u32 = 4;

/// `CUlaunchAttributeID`s valid for kernel nodes: access policy window,
/// cooperative, cluster dimension, cluster scheduling, priority, memory
/// synchronisation domain map and domain, preferred cluster dimension,
/// device-updatable node, preferred shared memory carveout. (Events, 7
/// and 12, are launches' only.)
const NODE_ATTRIBUTES: [u32; 10] = [1, 2, 4, 5, 8, 9, 10, 11, 13, 14];

/// Bytes of a `CUlaunchAttributeValue`.
const ATTRIBUTE_BYTES: usize = 64;

/// `CU_LAUNCH_PARAM_END`, `_BUFFER_POINTER`, `_BUFFER_SIZE`.
const PARAM_END: usize = 0;
const PARAM_BUFFER_POINTER: usize = 1;
const PARAM_BUFFER_SIZE: usize = 2;

/// One row of memset or copy work, as the driver takes it.
pub(super) enum RowWork {
    Memset(MemsetNodeParams),
    Copy(Memcpy3D),
}

impl Worker<'_> {
    /// The graph of the session's `node`, made in `ctx` (made current).
    fn node_graph(&mut self, ctx: Handle, node: Handle) -> DriverResult<Handle> {
        self.make_current(ctx)?;
        let graph = *self.tables.nodes.get(&node).ok_or(INVALID_VALUE)?;
        if self.tables.graphs.get(&graph) != Some(&ctx) {
            return Err(INVALID_VALUE);
        }
        Ok(graph)
    }

    fn node_type(&self, node: Handle) -> DriverResult<u32> {
        let mut kind = 0u32;
        // SAFETY: a node of the session; kind is writable.
        unsafe { self.driver.cuGraphNodeGetType(as_ptr(node), &mut kind) }?;
        Ok(kind)
    }

    /// A memset or copy of one row, checked against the session's
    /// allocations as a new node's is.
    pub(super) fn row_work(&self, params: &GraphNode) -> DriverResult<RowWork> {
        match *params {
            GraphNode::Memset {
                dst,
                value,
                elem_size,
                width,
                height: 1,
                ..
            } if matches!(elem_size, 1 | 2 | 4) && width > 0 => {
                let row = width.checked_mul(elem_size as u64).ok_or(INVALID_VALUE)?;
                self.tables.check_range(dst, row)?;
                Ok(RowWork::Memset(MemsetNodeParams {
                    dst,
                    pitch: row as usize,
                    value,
                    elem_size: elem_size as u32,
                    width: width as usize,
                    height: 1,
                }))
            }
            GraphNode::Copy { dst, src, len } if len > 0 => {
                self.tables.check_range(dst, len)?;
                self.tables.check_range(src, len)?;
                let l = len as usize;
                Ok(RowWork::Copy(Memcpy3D::rows(
                    End::Device(src, l),
                    End::Device(dst, l),
                    l,
                    1,
                )))
            }
            _ => Err(INVALID_VALUE),
        }
    }

    /// The client's name for the driver's event `e`.
    fn event_name(&self, e: Ptr) -> DriverResult<Handle> {
        let e = handle(e);
        let named = self.tables.real.iter().find(|(_, r)| **r == e).map(|(n, _)| *n);
        match named.or(Some(e)) {
            Some(n) if self.tables.events.contains_key(&n) => Ok(n),
            _ => Err(NOT_SUPPORTED),
        }
    }

    /// The session's function or kernel a kernel node runs: (handle,
    /// whether a kernel). The driver may answer a kernel's function in the
    /// context; that is found by asking each kernel for its own.
    fn node_function(&self, func: Ptr, kern: Ptr) -> DriverResult<(Handle, bool)> {
        let (f, k) = (handle(func), handle(kern));
        if self.tables.functions.contains_key(&f) {
            return Ok((f, false));
        }
        if self.tables.kernels.contains_key(&k) {
            return Ok((k, true));
        }
        if self.tables.kernels.contains_key(&f) {
            return Ok((f, true));
        }
        for &kernel in self.tables.kernels.keys() {
            let mut of: Ptr = std::ptr::null_mut();
            // SAFETY: a kernel of the session, in the current context.
            if unsafe { self.driver.cuKernelGetFunction(&mut of, as_ptr(kernel)) }.is_ok() && of == func {
                return Ok((kernel, true));
            }
        }
        Err(NOT_SUPPORTED)
    }

    /// A kernel node's parameters, packed by the function's layout.
    fn kernel_node_get(&mut self, ctx: Handle, node: Ptr) -> DriverResult<Reply> {
        // SAFETY: all-zero is a valid parameter block (null pointers).
        let mut p: KernelNodeParams = unsafe { std::mem::zeroed() };
        // SAFETY: a kernel node of the session; p is writable.
        unsafe { self.driver.cuGraphKernelNodeGetParams_v2(node, &mut p) }?;
        let (func, kernel) = self.node_function(p.func, p.kern)?;
        let layout = self.layout(func, kernel)?;
        let extent = layout.iter().map(|&(o, n)| (o + n) as usize).max().unwrap_or(0);
        let mut packed = vec![0u8; extent];
        if !p.params.is_null() {
            for (i, &(offset, size)) in layout.iter().enumerate() {
                // SAFETY: the driver's array holds one pointer per
                // parameter, each to `size` bytes it keeps with the node.
                let arg = unsafe { *p.params.add(i) };
                if arg.is_null() {
                    return Err(UNKNOWN);
                }
                // SAFETY: as above; the destination is inside `packed`.
                unsafe {
                    std::ptr::copy_nonoverlapping(
                        arg.cast::<u8>(),
                        packed.as_mut_ptr().add(offset as usize),
                        size as usize,
                    )
                };
            }
        } else if !p.extra.is_null() {
            let (buffer, size) = Self::extra_buffer(p.extra)?;
            if size < extent {
                return Err(UNKNOWN);
            }
            // SAFETY: the driver's buffer holds `size` >= extent bytes.
            unsafe { std::ptr::copy_nonoverlapping(buffer, packed.as_mut_ptr(), extent) };
        }
        let launch = Launch {
            ctx,
            func,
            kernel,
            grid: p.grid,
            block: p.block,
            shared_mem: p.shared_mem,
            stream: StreamRef::Legacy,
            attrs: Vec::new(),
        };
        Ok(Reply::Node {
            node: GraphNode::Kernel(launch),
            params: packed,
            address: 0,
        })
    }

    /// The packed block and its size of a `CU_LAUNCH_PARAM_*` list.
    fn extra_buffer(extra: *mut Ptr) -> DriverResult<(*const u8, usize)> {
        let (mut buffer, mut size) = (std::ptr::null::<u8>(), None);
        for i in (0..64).step_by(2) {
            // SAFETY: the driver's list runs to CU_LAUNCH_PARAM_END in
            // (key, value) pairs.
            let key = unsafe { *extra.add(i) } as usize;
            if key == PARAM_END {
                break;
            }
            // SAFETY: as above.
            let value = unsafe { *extra.add(i + 1) };
            match key {
                PARAM_BUFFER_POINTER => buffer = value.cast_const().cast(),
                // SAFETY: the size's value points at a size_t.
                PARAM_BUFFER_SIZE if !value.is_null() => size = Some(unsafe { *value.cast::<usize>() }),
                _ => return Err(NOT_SUPPORTED),
            }
        }
        match size {
            Some(n) if !buffer.is_null() => Ok((buffer, n)),
            _ => Err(UNKNOWN),
        }
    }

    /// `GraphNodeGet`: a node's work as its graph holds it.
    pub(super) fn graph_node_get(&mut self, ctx: Handle, node: Handle) -> DriverResult<Reply> {
        let graph = self.node_graph(ctx, node)?;
        let n = as_ptr(node);
        let d = self.driver;
        let plain = |node| Reply::Node {
            node,
            params: Vec::new(),
            address: 0,
        };
        match self.node_type(node)? {
            NODE_KERNEL => self.kernel_node_get(ctx, n),
            NODE_MEMSET => {
                // SAFETY: all-zero is a valid parameter block.
                let mut p: MemsetNodeParams = unsafe { std::mem::zeroed() };
                // SAFETY: a memset node of the session; p is writable.
                unsafe { d.cuGraphMemsetNodeGetParams(n, &mut p) }?;
                Ok(plain(GraphNode::Memset {
                    dst: p.dst,
                    pitch: p.pitch as u64,
                    value: p.value,
                    elem_size: u8::try_from(p.elem_size).map_err(|_| UNKNOWN)?,
                    width: p.width as u64,
                    height: p.height as u64,
                }))
            }
            NODE_MEMCPY => {
                // SAFETY: all-zero is a valid copy description.
                let mut c: Memcpy3D = unsafe { std::mem::zeroed() };
                // SAFETY: a copy node of the session; c is writable.
                unsafe { d.cuGraphMemcpyNodeGetParams(n, &mut c) }?;
                let device = |t: u32| t == MEMORYTYPE_DEVICE || t == MEMORYTYPE_UNIFIED;
                // Only copies between device memory mean the same on the
                // client: a host address here is the server's.
                let one_row = c.height <= 1 && c.depth <= 1 && c.src_y == 0 && c.dst_y == 0;
                if !device(c.src_memory_type) || !device(c.dst_memory_type) || !one_row {
                    return Err(NOT_SUPPORTED);
                }
                Ok(plain(GraphNode::Copy {
                    dst: c.dst_device + c.dst_x_in_bytes as u64,
                    src: c.src_device + c.src_x_in_bytes as u64,
                    len: c.width_in_bytes as u64,
                }))
            }
            NODE_GRAPH => {
                let mut child: Ptr = std::ptr::null_mut();
                // SAFETY: a child graph node of the session; child writable.
                unsafe { d.cuGraphChildGraphNodeGetGraph(n, &mut child) }?;
                // The node's graph: the session may change it, and it goes
                // with the node (or the node's graph), never alone.
                let c = handle(child);
                self.tables.graphs.insert(c, ctx);
                self.tables.bodies.insert(c, graph);
                self.tables.child_graphs.insert(node, c);
                Ok(plain(GraphNode::Child { graph: c }))
            }
            kind @ (NODE_EVENT_RECORD | NODE_WAIT_EVENT) => {
                let mut e: Ptr = std::ptr::null_mut();
                // SAFETY: an event node of the session; e is writable.
                unsafe {
                    if kind == NODE_EVENT_RECORD {
                        d.cuGraphEventRecordNodeGetEvent(n, &mut e)
                    } else {
                        d.cuGraphEventWaitNodeGetEvent(n, &mut e)
                    }
                }?;
                let event = self.event_name(e)?;
                Ok(plain(if kind == NODE_EVENT_RECORD {
                    GraphNode::EventRecord { event }
                } else {
                    GraphNode::EventWait { event }
                }))
            }
            NODE_MEM_ALLOC => {
                // SAFETY: all-zero is a valid parameter block.
                let mut p: MemAllocNodeParams = unsafe { std::mem::zeroed() };
                // SAFETY: an allocation node of the session; p is writable.
                unsafe { d.cuGraphMemAllocNodeGetParams(n, &mut p) }?;
                Ok(Reply::Node {
                    node: GraphNode::MemAlloc {
                        device: p.pool_props.location_id,
                        size: p.bytesize as u64,
                    },
                    params: Vec::new(),
                    address: p.dptr,
                })
            }
            NODE_MEM_FREE => {
                let mut ptr = 0u64;
                // SAFETY: a free node of the session; ptr is writable.
                unsafe { d.cuGraphMemFreeNodeGetParams(n, &mut ptr) }?;
                Ok(plain(GraphNode::MemFree { ptr }))
            }
            _ => Err(NOT_SUPPORTED),
        }
    }

    /// `GraphNodeSet`: a kernel, memset, copy or event node's work in its
    /// graph, replaced.
    pub(super) fn graph_node_set(
        &mut self,
        ctx: Handle,
        node: Handle,
        work: &GraphNode,
        params: &mut [u64],
        len: usize,
    ) -> DriverResult {
        self.node_graph(ctx, node)?;
        let kind = self.node_type(node)?;
        let n = as_ptr(node);
        let d = self.driver;
        match work {
            GraphNode::Kernel(l) if kind == NODE_KERNEL && l.attrs.is_empty() => {
                let mut args = self.kernel_args(l, params, len)?;
                let p = Self::kernel_node_params(l, ctx, &mut args);
                // SAFETY: a kernel node of the session; the driver copies
                // the parameters now.
                unsafe { d.cuGraphKernelNodeSetParams_v2(n, &p) }
            }
            GraphNode::Memset { .. } if kind == NODE_MEMSET => match self.row_work(work)? {
                // SAFETY: a memset node of the session; the row lies in its
                // allocations.
                RowWork::Memset(p) => unsafe { d.cuGraphMemsetNodeSetParams(n, &p) },
                RowWork::Copy(_) => Err(INVALID_VALUE),
            },
            GraphNode::Copy { .. } if kind == NODE_MEMCPY => match self.row_work(work)? {
                // SAFETY: a copy node of the session; both ranges lie in its
                // allocations.
                RowWork::Copy(c) => unsafe { d.cuGraphMemcpyNodeSetParams(n, &c) },
                RowWork::Memset(_) => Err(INVALID_VALUE),
            },
            &GraphNode::EventRecord { event } if kind == NODE_EVENT_RECORD => {
                self.check_event(event)?;
                // SAFETY: the node and the event are the session's.
                unsafe { d.cuGraphEventRecordNodeSetEvent(n, self.real(event)) }
            }
            &GraphNode::EventWait { event } if kind == NODE_WAIT_EVENT => {
                self.check_event(event)?;
                // SAFETY: the node and the event are the session's.
                unsafe { d.cuGraphEventWaitNodeSetEvent(n, self.real(event)) }
            }
            _ => Err(INVALID_VALUE),
        }
    }

    /// `GraphDestroyNode`: answers the node's graph and, for a host node,
    /// its token (0 otherwise). Conditional nodes (whose bodies are graphs
    /// of the session) and memory nodes (whose memory is) go only with
    /// their graph; host nodes of a child graph node's graph stay, as the
    /// client counts them with the graph holding the node.
    pub(super) fn graph_destroy_node(&mut self, ctx: Handle, node: Handle) -> DriverResult<Reply> {
        let graph = self.node_graph(ctx, node)?;
        let kind = self.node_type(node)?;
        if matches!(kind, NODE_CONDITIONAL | NODE_MEM_ALLOC | NODE_MEM_FREE) {
            return Err(NOT_SUPPORTED);
        }
        let mut token = 0;
        if kind == NODE_HOST {
            if self.tables.child_graphs.values().any(|g| *g == graph) {
                return Err(NOT_SUPPORTED);
            }
            let mut p = HostNodeParams {
                func: host_node_placeholder,
                user_data: std::ptr::null_mut(),
            };
            // SAFETY: a host node of the session; p is writable.
            unsafe { self.driver.cuGraphHostNodeGetParams(as_ptr(node), &mut p) }?;
            token = self.host_node_token(p.user_data).unwrap_or(0);
        }
        // SAFETY: a node of the session.
        unsafe { self.driver.cuGraphDestroyNode(as_ptr(node)) }?;
        self.tables.nodes.remove(&node);
        if let Some(child) = self.tables.child_graphs.remove(&node) {
            self.tables.bodies.remove(&child);
            self.tables.forget_graph(child);
        }
        Ok(Reply::Pair(graph as i64, token as i64))
    }

    /// `GraphRemoveDependencies`.
    pub(super) fn graph_remove_dependencies(
        &mut self,
        ctx: Handle,
        graph: Handle,
        (from, to): (&[Handle], &[Handle]),
        edges: &[u64],
    ) -> DriverResult {
        self.check_graph(ctx, graph)?;
        if from.len() != to.len() || !(edges.is_empty() || edges.len() == to.len()) {
            return Err(INVALID_VALUE);
        }
        let (from, to) = (self.graph_nodes(graph, from)?, self.graph_nodes(graph, to)?);
        let e = if edges.is_empty() {
            std::ptr::null()
        } else {
            edges.as_ptr()
        };
        // SAFETY: the graph and the nodes are the session's; one datum per
        // edge when any.
        unsafe {
            self.driver
                .graph_remove_dependencies(as_ptr(graph), from.as_ptr(), to.as_ptr(), e, from.len())
        }
    }

    /// `GraphClone`: the copy is a graph of the session; each host node of
    /// its top level named by an old token of `tokens` is named by the new
    /// one (the tokens renamed are answered).
    pub(super) fn graph_clone(&mut self, ctx: Handle, graph: Handle, tokens: &[(u64, u64)]) -> DriverResult<Reply> {
        self.check_graph(ctx, graph)?;
        let mut c: Ptr = std::ptr::null_mut();
        // SAFETY: the graph is the session's; c is writable.
        unsafe { self.driver.cuGraphClone(&mut c, as_ptr(graph)) }?;
        match self.rename_host_nodes(c, tokens) {
            Ok(renamed) => {
                self.tables.graphs.insert(handle(c), ctx);
                Ok(Reply::Cloned {
                    graph: handle(c),
                    renamed,
                })
            }
            Err(e) => {
                // SAFETY: the copy was made just now and is named nowhere.
                let _ = unsafe { self.driver.cuGraphDestroy(c) };
                Err(e)
            }
        }
    }

    fn rename_host_nodes(&mut self, clone: Ptr, tokens: &[(u64, u64)]) -> DriverResult<Vec<u64>> {
        let d = self.driver;
        let mut n = 0usize;
        // SAFETY: the copy is the session's; with no array only the count.
        unsafe { d.cuGraphGetNodes(clone, std::ptr::null_mut(), &mut n) }?;
        let mut nodes: Vec<Ptr> = vec![std::ptr::null_mut(); n];
        // SAFETY: as above; the array has room for `n` nodes.
        unsafe { d.cuGraphGetNodes(clone, nodes.as_mut_ptr(), &mut n) }?;
        nodes.truncate(n);
        let mut renamed = Vec::new();
        for node in nodes {
            if self.node_type(handle(node))? != NODE_HOST {
                continue;
            }
            let mut p = HostNodeParams {
                func: host_node_placeholder,
                user_data: std::ptr::null_mut(),
            };
            // SAFETY: a host node of the copy; p is writable.
            unsafe { d.cuGraphHostNodeGetParams(node, &mut p) }?;
            let Some(old) = self.host_node_token(p.user_data) else {
                continue;
            };
            let Some(&(_, new)) = tokens.iter().find(|(o, _)| *o == old) else {
                continue;
            };
            let fresh = self.host_node_params(new)?;
            // SAFETY: a host node of the copy; the data lives until the
            // session ends.
            unsafe { d.cuGraphHostNodeSetParams(node, &fresh) }?;
            renamed.push(old);
        }
        Ok(renamed)
    }

    /// `GraphFindInClone`: the node becomes one the session may name.
    pub(super) fn graph_find_in_clone(&mut self, ctx: Handle, node: Handle, clone: Handle) -> DriverResult<Reply> {
        self.node_graph(ctx, node)?;
        self.check_graph(ctx, clone)?;
        let mut found: Ptr = std::ptr::null_mut();
        // SAFETY: the node and the clone are the session's; found writable.
        unsafe {
            self.driver
                .cuGraphNodeFindInClone(&mut found, as_ptr(node), as_ptr(clone))
        }?;
        self.tables.nodes.insert(handle(found), clone);
        Ok(Reply::Handle(handle(found)))
    }

    /// `GraphKernelNodeAttribute`.
    pub(super) fn graph_kernel_node_attribute(
        &mut self,
        ctx: Handle,
        node: Handle,
        attr: u32,
        set: Option<&[u8]>,
    ) -> DriverResult<Reply> {
        self.node_graph(ctx, node)?;
        if self.node_type(node)? != NODE_KERNEL || !NODE_ATTRIBUTES.contains(&attr) {
            return Err(INVALID_VALUE);
        }
        let n = as_ptr(node);
        if let Some(v) = set {
            if v.len() != ATTRIBUTE_BYTES {
                return Err(INVALID_VALUE);
            }
            // SAFETY: a kernel node of the session; 64 value bytes.
            unsafe { self.driver.cuGraphKernelNodeSetAttribute(n, attr, v.as_ptr()) }?;
        }
        let mut value = vec![0u8; ATTRIBUTE_BYTES];
        // SAFETY: as above; room for the value.
        unsafe { self.driver.cuGraphKernelNodeGetAttribute(n, attr, value.as_mut_ptr()) }?;
        Ok(Reply::Bytes(value))
    }

    /// `GraphKernelNodeCopyAttributes`.
    pub(super) fn graph_kernel_node_copy_attributes(&mut self, ctx: Handle, dst: Handle, src: Handle) -> DriverResult {
        self.node_graph(ctx, dst)?;
        self.node_graph(ctx, src)?;
        if self.node_type(dst)? != NODE_KERNEL || self.node_type(src)? != NODE_KERNEL {
            return Err(INVALID_VALUE);
        }
        // SAFETY: both are kernel nodes of the session.
        unsafe { self.driver.cuGraphKernelNodeCopyAttributes(as_ptr(dst), as_ptr(src)) }
    }
}

/// What a host node's parameters hold before the driver writes them.
unsafe extern "C" fn host_node_placeholder(_: Ptr) {}
