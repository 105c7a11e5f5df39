//! Host nodes of graphs: a host function captured on a stream
//! (`cuLaunchHostFunc` in a capture) or added to a graph
//! (`cuGraphAddHostNode`). The program's function runs in the program, as
//! for `LaunchHostFunc`, but at every launch of the graph: the server's
//! node carries the client's token, and the client tells before each launch
//! (`GraphHostCalls`) which request id answers each of the launch's nodes.
//! A graph cannot run concurrently with itself, so the reachings of one node
//! come in launch order and each takes the oldest id told for it.

use super::*;
use crate::driver::HostNodeParams;
use std::collections::VecDeque;

/// What the driver's host node gets: the session's list and the token.
struct HostNode {
    reached: Arc<Reached>,
    token: u64,
}

/// The host function of every host node the server makes: notes that the
/// graph reached the node and wakes the session's thread. Unlike
/// `host_call_reached` it runs at every launch, so it frees nothing.
unsafe extern "C" fn host_node_reached(data: Ptr) {
    // SAFETY: `data` is a `HostNode` of the session's `HostNodes`, which
    // keeps it until the session's graphs are gone.
    let node = unsafe { &*data.cast::<HostNode>() };
    node.reached
        .ids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Reach::Node(node.token));
    node.reached.wake.wake();
}

/// The session's host nodes.
#[derive(Default)]
pub(super) struct HostNodes {
    /// Token -> the node's data (boxed: the driver holds its address).
    nodes: HashMap<u64, Box<HostNode>>,
    /// Token -> the request ids told for its next reachings, oldest first.
    calls: HashMap<u64, VecDeque<u64>>,
    /// What the last `GraphHostCalls` told, until the launch it precedes.
    told: Vec<(u64, u64)>,
    /// Request ids no node will answer (their launch failed, or they named
    /// no node): the client is told they did not run.
    refused: Vec<u64>,
}

impl HostNodes {
    /// The request id the next reaching of `token` answers.
    pub(super) fn next_call(&mut self, token: u64) -> Option<u64> {
        self.calls.get_mut(&token)?.pop_front()
    }

    /// What was told for the launch now being made.
    pub(super) fn take_told(&mut self) -> Vec<(u64, u64)> {
        std::mem::take(&mut self.told)
    }

    /// The launch `told` was for did not happen: its ids will not be
    /// reached.
    pub(super) fn refuse(&mut self, told: &[(u64, u64)]) {
        for &(token, id) in told {
            if let Some(q) = self.calls.get_mut(&token) {
                q.retain(|i| *i != id);
            }
            self.refused.push(id);
        }
    }

    pub(super) fn take_refused(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.refused)
    }
}

impl Worker<'_> {
    /// The driver's parameters for a new host node named `token`.
    pub(super) fn host_node_params(&mut self, token: u64) -> DriverResult<HostNodeParams> {
        let reached = self.reached.clone().ok_or(NOT_SUPPORTED)?;
        if token == 0 || self.host_nodes.nodes.contains_key(&token) {
            return Err(INVALID_VALUE);
        }
        let node = self
            .host_nodes
            .nodes
            .entry(token)
            .or_insert_with(|| Box::new(HostNode { reached, token }));
        Ok(HostNodeParams {
            func: host_node_reached,
            user_data: (&mut **node as *mut HostNode).cast(),
        })
    }

    /// The token of the session's host node whose data is `data`.
    pub(super) fn host_node_token(&self, data: Ptr) -> Option<u64> {
        self.host_nodes
            .nodes
            .iter()
            .find(|(_, n)| std::ptr::eq(&***n, data.cast::<HostNode>()))
            .map(|(t, _)| *t)
    }

    /// A host function on a capturing stream: a host node named `token` in
    /// the graph being captured.
    pub(super) fn capture_host_func(&mut self, ctx: Handle, stream: StreamRef, token: u64) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        let mut status = 0i32;
        // SAFETY: s is resolved from this client's tables; status is writable.
        unsafe { self.driver.cuStreamIsCapturing(s, &mut status) }?;
        if status != 1 {
            return Err(INVALID_VALUE);
        }
        let params = self.host_node_params(token)?;
        // SAFETY: s is this client's capturing stream; the node's data lives
        // until the session ends, longer than any graph made of the capture.
        let r = unsafe { self.driver.cuLaunchHostFunc(s, params.func, params.user_data) };
        if r.is_err() {
            self.host_nodes.nodes.remove(&token);
        }
        r
    }

    /// The client's next graph launch reaches these host nodes: answer
    /// `id` when it reaches `token`, for each.
    pub(super) fn graph_host_calls(&mut self, calls: &[(u64, u64)]) -> DriverResult {
        // Every id is answered: by its node, or at once as refused (a
        // client waiting for an id nothing answers would wait forever).
        self.host_funcs_out += calls.len();
        let h = &mut self.host_nodes;
        let stale = std::mem::take(&mut h.told);
        h.refuse(&stale);
        if calls.iter().any(|(token, _)| !h.nodes.contains_key(token)) {
            h.refused.extend(calls.iter().map(|(_, id)| *id));
            return Err(INVALID_VALUE);
        }
        for &(token, id) in calls {
            h.calls.entry(token).or_default().push_back(id);
        }
        h.told = calls.to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_node_reached_takes_the_oldest_id_told_for_it() {
        let mut h = HostNodes::default();
        h.calls.entry(5).or_default().extend([10, 20]);
        h.calls.entry(6).or_default().push_back(11);
        assert_eq!(h.next_call(6), Some(11));
        assert_eq!(h.next_call(5), Some(10));
        assert_eq!(h.next_call(5), Some(20));
        assert_eq!(h.next_call(5), None);
        assert_eq!(h.next_call(7), None);
    }

    #[test]
    fn a_launch_that_failed_refuses_its_ids_and_leaves_the_others() {
        let mut h = HostNodes::default();
        h.calls.entry(5).or_default().push_back(1);
        let told = [(5, 2), (6, 3)];
        for &(t, id) in &told {
            h.calls.entry(t).or_default().push_back(id);
        }
        h.refuse(&told);
        assert_eq!(h.take_refused(), vec![2, 3]);
        assert!(h.take_refused().is_empty());
        assert_eq!(h.next_call(5), Some(1));
        assert_eq!(h.next_call(5), None);
        assert_eq!(h.next_call(6), None);
    }
}
