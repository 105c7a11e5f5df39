//! Graphs changed after they are built: a node's work read back and
//! replaced (`cuGraphKernelNodeGetParams` and its kin), nodes and edges
//! removed, graphs cloned, and kernel nodes' launch attributes.
//!
//! This double keeps a graph as its operations in order, each node naming
//! the operation it is (`node_ops`). So a removed node leaves an operation
//! that does nothing in its place, and a child graph node's graph, asked
//! for, is a copy of the child's operations made then, whose changes are
//! made in the node's copy too (nodes added to it are not: the driver's
//! child graph is the node's own).

use super::*;

/// Bytes of a `CUlaunchAttributeValue`.
pub const ATTR_VALUE_BYTES: usize = 64;

/// `CUlaunchAttributeID`s a kernel node may hold here: access policy
/// window, cooperative, priority, cluster dimension and scheduling, memory
/// synchronisation domain and its map, preferred shared memory carveout.
const NODE_ATTRS: [u32; 8] = [1, 2, 4, 5, 8, 9, 10, 14];

/// A kernel node's parameters (`cuGraphKernelNodeGetParams`).
pub struct KernelNodeWork {
    pub func: u64,
    pub shape: NodeShape,
    /// The packed parameters, and each one's (offset, size).
    pub params: Vec<u8>,
    pub layout: Vec<(usize, usize)>,
    pub ctx: u64,
}

impl Driver {
    /// The operation of `node`, in its graph, if it is one `same` accepts.
    fn node_op(&self, node: u64, same: impl Fn(&Op) -> bool) -> CuResult<(u64, usize)> {
        let (graph, at) = match (self.nodes.get(&node), self.node_ops.get(&node)) {
            (Some(g), Some(&at)) => (*g, at),
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        match self.graphs.get(&graph).and_then(|g| g.ops.get(at)) {
            Some(op) if same(op) => Ok((graph, at)),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// The operation at `at` of `graph` replaced; in a child graph node's
    /// graph, in the graph holding the node too (where the child's
    /// operations were copied).
    fn set_node_op(&mut self, (graph, at): (u64, usize), op: Op) -> CuResult<()> {
        let g = self.graphs.get_mut(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        *Arc::make_mut(&mut g.ops).get_mut(at).ok_or(CUDA_ERROR_INVALID_VALUE)? = op.clone();
        let holder = self.child_graphs.iter().find(|(_, g)| **g == graph).map(|(n, _)| *n);
        if let Some(node) = holder {
            match (self.nodes.get(&node), self.child_ops.get(&node)) {
                (Some(&parent), Some(&(start, len))) if at < len => return self.set_node_op((parent, start + at), op),
                _ => {}
            }
        }
        Ok(())
    }

    /// `cuGraphKernelNodeGetParams`.
    pub fn graph_kernel_node_get(&self, node: u64) -> CuResult<KernelNodeWork> {
        let (graph, at) = self.node_op(node, |op| matches!(op, Op::Launch { .. }))?;
        let Op::Launch { func, params, cfg, .. } = &self.graphs[&graph].ops[at] else {
            return Err(CUDA_ERROR_INVALID_VALUE);
        };
        let f = self.functions.get(func).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let layout = f.ptx.entries[f.entry]
            .params
            .iter()
            .map(|p| (p.offset, p.size))
            .collect();
        Ok(KernelNodeWork {
            func: *func,
            shape: *cfg,
            params: params.clone(),
            layout,
            ctx: self.graphs[&graph].ctx,
        })
    }

    /// `cuGraphKernelNodeSetParams`: the node launches `f` so from now on
    /// (executable graphs made before keep what they had).
    pub fn graph_kernel_node_set(
        &mut self,
        node: u64,
        f: u64,
        cfg: &LaunchConfig,
        fill: impl FnOnce(&[ptx::Param], &mut [u8]) -> CuResult<()>,
    ) -> CuResult<()> {
        let site = self.node_op(node, |op| matches!(op, Op::Launch { .. }))?;
        let ctx = self.graphs[&site.0].ctx;
        let op = self.launch_op(ctx, f, cfg, fill)?;
        self.set_node_op(site, op)
    }

    /// `cuGraphMemsetNodeGetParams` of a one-row memset: (dst, value,
    /// element size, width).
    pub fn graph_memset_node_get(&self, node: u64) -> CuResult<(u64, u32, u32, u64)> {
        let (graph, at) = self.node_op(node, |op| matches!(op, Op::Memset { .. }))?;
        let Op::Memset { dst, pattern, count } = &self.graphs[&graph].ops[at] else {
            return Err(CUDA_ERROR_INVALID_VALUE);
        };
        let mut value = [0u8; 4];
        value[..pattern.len()].copy_from_slice(pattern);
        Ok((*dst, u32::from_le_bytes(value), pattern.len() as u32, *count))
    }

    /// `cuGraphMemsetNodeSetParams`: one row.
    pub fn graph_memset_node_set(
        &mut self,
        node: u64,
        dst: u64,
        value: u32,
        elem_size: u32,
        width: u64,
    ) -> CuResult<()> {
        if !matches!(elem_size, 1 | 2 | 4) || width == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let site = self.node_op(node, |op| matches!(op, Op::Memset { .. }))?;
        self.device_range(dst, width * elem_size as u64)?;
        let pattern = value.to_le_bytes()[..elem_size as usize].to_vec();
        self.set_node_op(
            site,
            Op::Memset {
                dst,
                pattern,
                count: width,
            },
        )
    }

    /// `cuGraphMemcpyNodeGetParams` of a device copy: (dst, src, bytes).
    pub fn graph_copy_node_get(&self, node: u64) -> CuResult<(u64, u64, u64)> {
        let (graph, at) = self.node_op(node, |op| matches!(op, Op::CopyDtoD { .. }))?;
        match self.graphs[&graph].ops[at] {
            Op::CopyDtoD { dst, src, n } => Ok((dst, src, n)),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// `cuGraphMemcpyNodeSetParams`: a device copy of one row.
    pub fn graph_copy_node_set(&mut self, node: u64, dst: u64, src: u64, n: u64) -> CuResult<()> {
        if n == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let site = self.node_op(node, |op| matches!(op, Op::CopyDtoD { .. }))?;
        self.device_range(dst, n)?;
        self.device_range(src, n)?;
        self.set_node_op(site, Op::CopyDtoD { dst, src, n })
    }

    /// The event of an event record (`record`) or wait node.
    pub fn graph_event_node_get(&self, node: u64, record: bool) -> CuResult<u64> {
        if !record {
            return self.event_waits.get(&node).copied().ok_or(CUDA_ERROR_INVALID_VALUE);
        }
        let (graph, at) = self.node_op(node, |op| matches!(op, Op::Record { .. }))?;
        match self.graphs[&graph].ops[at] {
            Op::Record { event } => Ok(event),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// An event record (`record`) or wait node records (waits for) `event`
    /// from now on.
    pub fn graph_event_node_set(&mut self, node: u64, event: u64, record: bool) -> CuResult<()> {
        let graph = *self.nodes.get(&node).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let ctx = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?.ctx;
        if self.events.get(&event).is_none_or(|e| e.ctx != ctx) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        if record {
            let site = self.node_op(node, |op| matches!(op, Op::Record { .. }))?;
            return self.set_node_op(site, Op::Record { event });
        }
        match self.event_waits.get_mut(&node) {
            Some(e) => {
                *e = event;
                Ok(())
            }
            None => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// `cuGraphChildGraphNodeGetGraph`: the node's graph, made the first
    /// time it is asked for (see the module's note); the node's, so not to
    /// be destroyed alone.
    pub fn graph_child_graph(&mut self, node: u64) -> CuResult<u64> {
        if let Some(g) = self.child_graphs.get(&node) {
            return Ok(*g);
        }
        let graph = *self.nodes.get(&node).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let (start, len) = *self.child_ops.get(&node).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let parent = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let ops: Vec<Op> = parent
            .ops
            .get(start..start + len)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?
            .to_vec();
        let ctx = parent.ctx;
        let child = self.handle();
        self.graphs.insert(
            child,
            GraphObj {
                ctx,
                ops: Arc::new(Vec::new()),
                memory: Vec::new(),
                disabled: HashSet::new(),
                source: 0,
            },
        );
        self.node_per_op(child, 0, &ops, &[]);
        if let Some(g) = self.graphs.get_mut(&child) {
            g.ops = Arc::new(ops);
        }
        self.child_graphs.insert(node, child);
        Ok(child)
    }

    /// Whether `graph` is a child graph node's own.
    pub(super) fn is_child_graph(&self, graph: u64) -> bool {
        self.child_graphs.values().any(|g| *g == graph)
    }

    /// Child graphs of nodes that went, gone with them.
    pub(super) fn drop_orphan_child_graphs(&mut self) {
        let gone: Vec<(u64, u64)> = self
            .child_graphs
            .iter()
            .filter(|(n, _)| !self.nodes.contains_key(n))
            .map(|(n, g)| (*n, *g))
            .collect();
        for (node, graph) in gone {
            self.child_graphs.remove(&node);
            self.forget_graph(graph);
        }
    }

    /// `cuGraphMemAllocNodeGetParams`: (address, size, device).
    pub fn graph_mem_alloc_node_get(&self, node: u64) -> CuResult<(u64, u64, i32)> {
        if self.node_types.get(&node) != Some(&NODE_MEM_ALLOC) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let &(ptr, size) = self.node_memory.get(&node).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let graph = self.nodes.get(&node).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let ctx = self.graphs.get(graph).ok_or(CUDA_ERROR_INVALID_VALUE)?.ctx;
        Ok((ptr, size, self.ctx_device(ctx) as i32))
    }

    /// `cuGraphMemFreeNodeGetParams`: the address freed.
    pub fn graph_mem_free_node_get(&self, node: u64) -> CuResult<u64> {
        if self.node_types.get(&node) != Some(&NODE_MEM_FREE) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.node_memory.get(&node).map(|m| m.0).ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    /// `cuGraphHostNodeGetParams`.
    pub fn graph_host_node_get(&self, node: u64) -> CuResult<(engine::HostFn, usize)> {
        let (graph, at) = self.node_op(node, |op| matches!(op, Op::Host { .. }))?;
        match self.graphs[&graph].ops[at] {
            Op::Host { func, data } => Ok((func, data)),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// `cuGraphHostNodeSetParams`.
    pub fn graph_host_node_set(&mut self, node: u64, func: engine::HostFn, data: usize) -> CuResult<()> {
        let site = self.node_op(node, |op| matches!(op, Op::Host { .. }))?;
        self.set_node_op(site, Op::Host { func, data })
    }

    /// `cuGraphDestroyNode`: the node and its edges go; its operation does
    /// nothing from now on. Conditional nodes, memory nodes and memsets of
    /// several rows are not removed here.
    pub fn graph_destroy_node(&mut self, node: u64) -> CuResult<()> {
        let graph = *self.nodes.get(&node).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let kind = *self.node_types.get(&node).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if matches!(kind, NODE_CONDITIONAL | NODE_MEM_ALLOC | NODE_MEM_FREE) {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let ops: Vec<usize> = if let Some(&(start, len)) = self.child_ops.get(&node) {
            (start..start + len).collect()
        } else if let Some(&at) = self.node_ops.get(&node) {
            vec![at]
        } else if kind == NODE_MEMSET {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        } else {
            Vec::new()
        };
        for at in ops {
            self.set_node_op((graph, at), Op::Removed)?;
        }
        self.nodes.remove(&node);
        self.node_ops.remove(&node);
        self.child_ops.remove(&node);
        self.event_waits.remove(&node);
        self.node_types.remove(&node);
        self.node_deps.remove(&node);
        self.node_attrs.remove(&node);
        for deps in self.node_deps.values_mut() {
            deps.retain(|(from, _)| *from != node);
        }
        self.drop_orphan_child_graphs();
        Ok(())
    }

    /// `cuGraphRemoveDependencies`: each edge `from[i] -> to[i]` (with data
    /// `edges[i]` when given) must be there.
    pub fn graph_remove_dependencies(&mut self, graph: u64, from: &[u64], to: &[u64], edges: &[u64]) -> CuResult<()> {
        if from.len() != to.len() || !(edges.is_empty() || edges.len() == to.len()) || !self.graphs.contains_key(&graph)
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        for (i, (f, t)) in from.iter().zip(to).enumerate() {
            let data = edges.get(i).copied();
            let found = self.nodes.get(t) == Some(&graph)
                && self
                    .node_deps
                    .get(t)
                    .is_some_and(|d| d.iter().any(|(n, e)| n == f && data.is_none_or(|x| x == *e)));
            if !found {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
        }
        for (i, (f, t)) in from.iter().zip(to).enumerate() {
            let data = edges.get(i).copied();
            if let Some(deps) = self.node_deps.get_mut(t) {
                if let Some(at) = deps.iter().position(|(n, e)| n == f && data.is_none_or(|x| x == *e)) {
                    deps.remove(at);
                }
            }
        }
        Ok(())
    }

    /// `cuGraphClone`: a graph with the same operations and a node for each
    /// of `graph`'s, with the same edges. Graphs with memory or
    /// conditional nodes are not cloned here.
    pub fn graph_clone(&mut self, graph: u64) -> CuResult<u64> {
        let g = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if !g.memory.is_empty() || g.ops.iter().any(|op| matches!(op, Op::Conditional { .. })) {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let copy = GraphObj {
            ctx: g.ctx,
            ops: Arc::new(g.ops.to_vec()),
            memory: Vec::new(),
            disabled: HashSet::new(),
            source: 0,
        };
        let clone = self.handle();
        self.graphs.insert(clone, copy);
        let originals = self.graph_nodes(graph)?;
        let mut made = HashMap::new();
        for &n in &originals {
            let c = self.handle();
            made.insert(n, c);
            self.nodes.insert(c, clone);
            if let Some(t) = self.node_types.get(&n).copied() {
                self.node_types.insert(c, t);
            }
            if let Some(at) = self.node_ops.get(&n).copied() {
                self.node_ops.insert(c, at);
            }
            if let Some(r) = self.child_ops.get(&n).copied() {
                self.child_ops.insert(c, r);
            }
            if let Some(e) = self.event_waits.get(&n).copied() {
                self.event_waits.insert(c, e);
            }
            if let Some(a) = self.node_attrs.get(&n).cloned() {
                self.node_attrs.insert(c, a);
            }
            self.clones.insert((n, clone), c);
        }
        for n in &originals {
            let deps = self.node_deps.get(n).cloned().unwrap_or_default();
            let mapped = deps.iter().filter_map(|(d, e)| made.get(d).map(|m| (*m, *e))).collect();
            self.node_deps.insert(made[n], mapped);
        }
        Ok(clone)
    }

    /// `cuGraphNodeFindInClone`.
    pub fn graph_find_in_clone(&self, node: u64, clone: u64) -> CuResult<u64> {
        self.clones
            .get(&(node, clone))
            .copied()
            .filter(|c| self.nodes.contains_key(c))
            .ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    /// A kernel node's launch attribute `attr`, after setting it to `set`
    /// when given; zeros when never set.
    pub fn graph_kernel_node_attr(
        &mut self,
        node: u64,
        attr: u32,
        set: Option<[u8; ATTR_VALUE_BYTES]>,
    ) -> CuResult<[u8; ATTR_VALUE_BYTES]> {
        if self.node_types.get(&node) != Some(&NODE_KERNEL) || !NODE_ATTRS.contains(&attr) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let attrs = self.node_attrs.entry(node).or_default();
        if let Some(v) = set {
            attrs.insert(attr, v);
        }
        Ok(attrs.get(&attr).copied().unwrap_or([0; ATTR_VALUE_BYTES]))
    }

    /// `cuGraphKernelNodeCopyAttributes`: `dst` takes `src`'s attributes.
    pub fn graph_kernel_node_copy_attrs(&mut self, dst: u64, src: u64) -> CuResult<()> {
        let kernel = |n: &u64| self.node_types.get(n) == Some(&NODE_KERNEL);
        if !kernel(&dst) || !kernel(&src) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let attrs = self.node_attrs.get(&src).cloned().unwrap_or_default();
        self.node_attrs.insert(dst, attrs);
        Ok(())
    }
}
