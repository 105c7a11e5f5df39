//! Host nodes of graphs: `cuLaunchHostFunc` on a capturing stream and
//! `cuGraphAddHostNode`. The program's function runs in the program at
//! every launch of the graph, as a host function does
//! ([`crate::callbacks`]): each node has a token the server's node carries,
//! and before a launch the shim makes one request id per host node the
//! launch reaches (`Request::GraphHostCalls`), which the server answers
//! when the launch reaches the node. So every rule of host functions (what
//! synchronising calls wait for, where data behind a function lands) holds
//! for host nodes too.

use super::*;
use crate::callbacks::Call;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

/// The host nodes of a graph: (token, the program's function), in the
/// order made.
type Hosts = Vec<(u64, Call)>;

#[derive(Default)]
struct State {
    /// Capture id -> the host functions captured so far.
    captures: HashMap<u64, Hosts>,
    /// Graph or executable graph -> its host nodes (copied children's too).
    graphs: HashMap<Handle, Hosts>,
    /// Child graph nodes whose graph had host nodes.
    children: HashSet<Handle>,
    /// Host nodes added to built graphs -> (graph, token).
    nodes: HashMap<Handle, (Handle, u64)>,
    /// Executable graphs -> the graph they were made from.
    sources: HashMap<Handle, Handle>,
    /// Clones -> the tokens their host nodes were renamed with (old, new).
    renames: HashMap<Handle, Vec<(u64, u64)>>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(st.get_or_insert_with(State::default))
}

/// A new token for a host node.
pub(super) fn token() -> u64 {
    new_client_handle()
}

/// A host function captured in capture `capture`, as node `token`.
pub(super) fn captured(capture: u64, token: u64, call: Call) {
    state(|st| st.captures.entry(capture).or_default().push((token, call)));
}

/// Capture `capture` ended, as `graph` when it made one.
pub(super) fn capture_ended(capture: u64, graph: Option<Handle>) {
    state(|st| {
        let hosts = st.captures.remove(&capture).unwrap_or_default();
        if let Some(g) = graph.filter(|_| !hosts.is_empty()) {
            // A capture into an existing graph adds to its nodes.
            st.graphs.entry(g).or_default().extend(hosts);
        }
    });
}

/// `graph` got the host node `node`, named `token`.
pub(super) fn added(graph: Handle, node: Handle, token: u64, call: Call) {
    state(|st| {
        st.graphs.entry(graph).or_default().push((token, call));
        st.nodes.insert(node, (graph, token));
    });
}

/// The function of host node `node` of a built graph.
pub(super) fn params_of(node: Handle) -> Option<Call> {
    state(|st| {
        let (graph, token) = *st.nodes.get(&node)?;
        st.graphs
            .get(&graph)?
            .iter()
            .find(|(t, _)| *t == token)
            .map(|(_, c)| *c)
    })
}

/// Host node `node` runs `call` from now on: in its graph, or, given
/// `exec`, in that executable graph made of it. False when `node` is no
/// host node of a built graph (or not of `exec`'s graph).
pub(super) fn set(node: Handle, exec: Option<Handle>, call: Call) -> bool {
    state(|st| {
        let Some(&(graph, token)) = st.nodes.get(&node) else {
            return false;
        };
        let target = match exec {
            Some(x) if st.sources.get(&x) == Some(&graph) => x,
            Some(_) => return false,
            None => graph,
        };
        let Some(list) = st.graphs.get_mut(&target) else {
            return false;
        };
        for entry in list.iter_mut().filter(|(t, _)| *t == token) {
            entry.1 = call;
        }
        true
    })
}

/// `graph` got `node`, a copy of `child`, with the child's host nodes.
pub(super) fn child_added(graph: Handle, node: Handle, child: Handle) {
    state(|st| {
        let Some(hosts) = st.graphs.get(&child).cloned() else {
            return;
        };
        st.children.insert(node);
        st.graphs.entry(graph).or_default().extend(hosts);
    });
}

/// The tokens of `graph`'s host nodes.
pub(super) fn tokens_of(graph: Handle) -> Vec<u64> {
    state(|st| {
        st.graphs
            .get(&graph)
            .map(|h| h.iter().map(|(t, _)| *t).collect())
            .unwrap_or_default()
    })
}

/// `graph`'s host node named `token` went (`cuGraphDestroyNode`).
pub(super) fn removed(graph: Handle, token: u64) {
    state(|st| {
        if let Some(list) = st.graphs.get_mut(&graph) {
            list.retain(|(t, _)| *t != token);
            if list.is_empty() {
                st.graphs.remove(&graph);
            }
        }
        st.nodes.retain(|_, (g, t)| !(*g == graph && *t == token));
    });
}

/// `clone` is a copy of `graph` whose host nodes named by the first of
/// each pair of `renames` are named by the second.
pub(super) fn cloned(graph: Handle, clone: Handle, renames: Vec<(u64, u64)>) {
    state(|st| {
        if let Some(hosts) = st.graphs.get(&graph).cloned() {
            let renamed = hosts
                .into_iter()
                .map(|(t, call)| {
                    let t = renames.iter().find(|(old, _)| *old == t).map_or(t, |(_, new)| *new);
                    (t, call)
                })
                .collect();
            st.graphs.insert(clone, renamed);
        }
        st.renames.insert(clone, renames);
    });
}

/// `found` is the node of `clone` that `node` became: a host node of a
/// built graph is one here too.
pub(super) fn found_in_clone(node: Handle, clone: Handle, found: Handle) {
    state(|st| {
        let Some(&(_, token)) = st.nodes.get(&node) else {
            return;
        };
        let renamed = st
            .renames
            .get(&clone)
            .and_then(|r| r.iter().find(|(old, _)| *old == token))
            .map_or(token, |(_, new)| *new);
        st.nodes.insert(found, (clone, renamed));
    });
}

/// `to` (an executable graph) now runs `from`'s nodes.
pub(super) fn copy(from: Handle, to: Handle) {
    state(|st| {
        st.sources.insert(to, from);
        match st.graphs.get(&from).cloned() {
            Some(h) => {
                st.graphs.insert(to, h);
            }
            None => {
                st.graphs.remove(&to);
            }
        }
    });
}

/// Whether `graph` has host nodes, or the child node `node` was made of a
/// graph with some.
pub(super) fn has(graph: Handle) -> bool {
    state(|st| st.graphs.contains_key(&graph))
}

pub(super) fn child_has(node: Handle) -> bool {
    state(|st| st.children.contains(&node))
}

/// The host nodes a launch of `exec` reaches.
pub(super) fn of(exec: Handle) -> Hosts {
    state(|st| st.graphs.get(&exec).cloned().unwrap_or_default())
}

/// A graph or executable graph went.
pub(super) fn forget(graph: Handle) {
    state(|st| {
        st.graphs.remove(&graph);
        st.sources.remove(&graph);
        st.renames.remove(&graph);
        st.nodes.retain(|_, (g, _)| *g != graph);
    });
}

/// Before a launch of `exec` on `stream`: tell the server which request
/// answers each host node it reaches, and expect those answers as host
/// functions enqueued on the stream.
pub(super) fn before_launch(s: &'static Shim, ctx: Handle, exec: Handle, stream: StreamRef) -> CuResult {
    let hosts = of(exec);
    if hosts.is_empty() {
        return Ok(());
    }
    if capture_of(s, stream).is_some() {
        tracing::warn!("a graph with host nodes launched into a stream capture is not supported");
        return Err(CuError::NOT_SUPPORTED);
    }
    let key = (ctx, stream);
    let blocking = hostfns::blocking(s, stream);
    let callbacks = &s.callbacks;
    s.remote.post_with_replies(
        hosts.len(),
        |i, id| {
            callbacks.enqueued(key, blocking, id);
            let call = hosts[i].1;
            Box::new(move |status| callbacks.reached(id, call, status))
        },
        |ids| Request::GraphHostCalls {
            ctx,
            calls: hosts.iter().zip(ids).map(|((token, _), id)| (*token, *id)).collect(),
        },
    )
}
