//! Conditional nodes in the software driver: handles whose value a kernel
//! sets (`gp_set_condition`, `gp_countdown`), and if, while and switch
//! nodes whose bodies are graphs the node owns. A node names its bodies
//! while its graph is built; instantiating (or copying the graph as a
//! child) takes their operations as they are then, as the driver does.

use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// `CUgraphConditionalNodeType`s.
pub const COND_IF: u32 = 0;
pub const COND_WHILE: u32 = 1;
pub const COND_SWITCH: u32 = 2;
/// `CU_GRAPH_COND_ASSIGN_DEFAULT`.
const COND_ASSIGN_DEFAULT: u32 = 1;
/// Iterations of one while node after which this double gives up, as a
/// watchdog would (a GPU would spin on).
const WHILE_LIMIT: u64 = 1 << 24;

/// A conditional handle (`cuGraphConditionalHandleCreate`).
pub(super) struct CondObj {
    graph: u64,
    default: u32,
    assign_default: bool,
    /// Set by kernels through [`texture::Objects::set_conditional`].
    pub(super) value: AtomicU32,
}

/// A body of a conditional operation: the graph while building, its
/// operations once instantiated or copied.
#[derive(Clone)]
pub(super) enum Body {
    Graph(u64),
    Ops(Arc<Vec<Op>>),
}

/// Where an operation lies in an executable graph: the (conditional
/// operation, body) indices from the top level down, and its index there.
pub(super) type Site = (Vec<(usize, usize)>, usize);

/// The operations at `path` below `ops`.
pub(super) fn ops_at<'a>(mut ops: &'a Arc<Vec<Op>>, path: &[(usize, usize)]) -> CuResult<&'a Arc<Vec<Op>>> {
    for &(at, body) in path {
        ops = match ops.get(at) {
            Some(Op::Conditional { bodies, .. }) => match bodies.get(body) {
                Some(Body::Ops(o)) => o,
                _ => return Err(CUDA_ERROR_INVALID_VALUE),
            },
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
    }
    Ok(ops)
}

/// [`ops_at`], to change (each level copied if shared).
pub(super) fn ops_at_mut<'a>(mut ops: &'a mut Arc<Vec<Op>>, path: &[(usize, usize)]) -> CuResult<&'a mut Arc<Vec<Op>>> {
    for &(at, body) in path {
        ops = match Arc::make_mut(ops).get_mut(at) {
            Some(Op::Conditional { bodies, .. }) => match bodies.get_mut(body) {
                Some(Body::Ops(o)) => o,
                _ => return Err(CUDA_ERROR_INVALID_VALUE),
            },
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
    }
    Ok(ops)
}

/// A conditional node: its bodies, and the array of them the program was
/// given (`phGraph_out`), which lives as long as the node.
pub(super) struct CondNode {
    pub(super) holder: u64,
    pub(super) bodies: Box<[usize]>,
}

impl Driver {
    /// `cuGraphConditionalHandleCreate`.
    pub fn graph_conditional_handle_create(&mut self, graph: u64, ctx: u64, default: u32, flags: u32) -> CuResult<u64> {
        let g = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if flags & !COND_ASSIGN_DEFAULT != 0 || (ctx != 0 && ctx != g.ctx) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = self.handle();
        self.conditionals.insert(
            h,
            CondObj {
                graph,
                default,
                assign_default: flags & COND_ASSIGN_DEFAULT != 0,
                value: AtomicU32::new(default),
            },
        );
        Ok(h)
    }

    /// `cuGraphAddNode` of a conditional node: its node and its bodies,
    /// new empty graphs of the graph's context.
    pub fn graph_add_conditional_node(
        &mut self,
        graph: u64,
        deps: &[u64],
        handle: u64,
        kind: u32,
        size: u32,
    ) -> CuResult<(u64, *const usize)> {
        let ctx = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?.ctx;
        let sized = match kind {
            COND_IF => matches!(size, 1 | 2),
            COND_WHILE => size == 1,
            COND_SWITCH => (1..=1 << 16).contains(&size),
            _ => false,
        };
        if !sized || self.conditionals.get(&handle).is_none_or(|c| c.graph != graph) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let bodies: Vec<u64> = (0..size).map(|_| self.empty_graph(ctx)).collect();
        let op = Op::Conditional {
            handle,
            kind,
            bodies: bodies.iter().map(|b| Body::Graph(*b)).collect(),
        };
        let node = match self.add_node(graph, deps, Some(op)) {
            Ok(n) => n,
            Err(e) => {
                for b in &bodies {
                    self.graphs.remove(b);
                }
                return Err(e);
            }
        };
        for &b in &bodies {
            self.body_of.insert(b, graph);
        }
        let array: Box<[usize]> = bodies.iter().map(|b| *b as usize).collect();
        let at = array.as_ptr();
        let op_at = self.graphs[&graph].ops.len() - 1;
        self.node_ops.insert(node, op_at);
        self.cond_nodes.insert(
            node,
            CondNode {
                holder: graph,
                bodies: array,
            },
        );
        Ok((node, at))
    }

    /// The context a graph was made in.
    pub fn graph_ctx(&self, graph: u64) -> CuResult<u64> {
        self.graphs.get(&graph).map(|g| g.ctx).ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    /// The path from graph `top` down to `graph`, through the conditional
    /// nodes whose bodies hold it: empty when `graph` is `top`.
    pub(super) fn body_path(&self, top: u64, graph: u64) -> CuResult<Vec<(usize, usize)>> {
        let mut path = Vec::new();
        let mut g = graph;
        while g != top {
            let holder = *self.body_of.get(&g).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            let (node, body) = self
                .cond_nodes
                .iter()
                .find_map(|(n, c)| {
                    let i = c.bodies.iter().position(|b| *b as u64 == g)?;
                    Some((*n, i))
                })
                .ok_or(CUDA_ERROR_INVALID_VALUE)?;
            let at = *self.node_ops.get(&node).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            path.push((at, body));
            g = holder;
        }
        path.reverse();
        Ok(path)
    }

    /// Whether `graph` is a conditional node's body.
    pub(super) fn is_body(&self, graph: u64) -> bool {
        self.body_of.contains_key(&graph)
    }

    /// The bodies of the conditional nodes of `graph` (and of theirs), which
    /// go with it. Its conditional handles stay: executable graphs made of
    /// it still set and read them.
    pub(super) fn drop_bodies(&mut self, graph: u64) {
        self.cond_nodes.retain(|_, n| n.holder != graph);
        let bodies: Vec<u64> = self
            .body_of
            .iter()
            .filter(|(_, h)| **h == graph)
            .map(|(b, _)| *b)
            .collect();
        for b in bodies {
            self.body_of.remove(&b);
            self.forget_graph(b);
        }
    }

    /// `ops` with every conditional body's operations as they are now (an
    /// executable graph's, or a child's copy).
    pub(super) fn resolve(&self, ops: &Arc<Vec<Op>>) -> Arc<Vec<Op>> {
        if !ops.iter().any(|op| matches!(op, Op::Conditional { .. })) {
            return Arc::clone(ops);
        }
        let resolved = ops
            .iter()
            .map(|op| match op {
                Op::Conditional { handle, kind, bodies } => Op::Conditional {
                    handle: *handle,
                    kind: *kind,
                    bodies: bodies
                        .iter()
                        .map(|b| match b {
                            Body::Graph(g) => Body::Ops(
                                self.graphs
                                    .get(g)
                                    .map_or_else(|| Arc::new(Vec::new()), |g| self.resolve(&g.ops)),
                            ),
                            Body::Ops(o) => Body::Ops(Arc::clone(o)),
                        })
                        .collect(),
                },
                other => other.clone(),
            })
            .collect();
        Arc::new(resolved)
    }

    /// At the start of a launch: handles made with
    /// `CU_GRAPH_COND_ASSIGN_DEFAULT` that the launch may reach take their
    /// default value.
    pub(super) fn assign_defaults(&self, ops: &[Op]) {
        for op in ops {
            if let Op::Conditional { handle, bodies, .. } = op {
                if let Some(c) = self.conditionals.get(handle).filter(|c| c.assign_default) {
                    c.value.store(c.default, Ordering::Relaxed);
                }
                for b in bodies {
                    if let Body::Ops(o) = b {
                        self.assign_defaults(o);
                    }
                }
            }
        }
    }

    /// Runs a conditional operation of a launch: the bodies its handle's
    /// value picks, when the launch gets there. False when the context
    /// faulted (the launch stops).
    pub(super) fn run_conditional(&mut self, ctx: u64, handle: u64, kind: u32, bodies: &[Body]) -> bool {
        let value = |d: &Driver| {
            d.conditionals
                .get(&handle)
                .map_or(0, |c| c.value.load(Ordering::Relaxed))
        };
        let body = |i: usize| match bodies.get(i) {
            Some(Body::Ops(o)) => Some(Arc::clone(o)),
            _ => None,
        };
        match kind {
            COND_IF => {
                let pick = if value(self) != 0 { body(0) } else { body(1) };
                pick.is_none_or(|ops| self.run_ops(ctx, &ops, None))
            }
            COND_SWITCH => body(value(self) as usize).is_none_or(|ops| self.run_ops(ctx, &ops, None)),
            COND_WHILE => {
                let Some(ops) = body(0) else {
                    return true;
                };
                let mut rounds = 0u64;
                while value(self) != 0 {
                    if !self.run_ops(ctx, &ops, None) {
                        return false;
                    }
                    rounds += 1;
                    if rounds == WHILE_LIMIT {
                        if let Some(c) = self.contexts.get_mut(&ctx) {
                            c.sticky = Some(CUDA_ERROR_LAUNCH_TIMEOUT);
                        }
                        return false;
                    }
                }
                true
            }
            _ => true,
        }
    }
}
