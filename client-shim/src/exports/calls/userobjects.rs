//! User objects (`cuUserObjectCreate`, `cuGraphRetainUserObject`): a
//! program's resource with a destructor, whose references graphs hold, as
//! NCCL keeps its buffers alive while a captured graph may still run. They
//! are the program's, so they live here, with nothing sent: a graph holds
//! its references until it goes; an executable graph takes its graph's at
//! instantiation and gives them up once its last launch has run (a host
//! function on the stream of that launch); a copy of a graph (a clone, a
//! child graph node) takes the references of the graph copied. When the
//! last reference goes the destructor runs on a thread of the shim's, never
//! inside the call that released it, as CUDA allows
//! (`CU_USER_OBJECT_NO_DESTRUCTOR_SYNC`).

use super::*;
use crate::callbacks::{Call, HostFn};
use std::collections::HashMap;
use std::sync::Mutex;

/// `CU_USER_OBJECT_NO_DESTRUCTOR_SYNC`: the only flag of a user object.
const NO_DESTRUCTOR_SYNC: u32 = 1;
/// `CU_GRAPH_USER_OBJECT_MOVE`: references move from the caller.
const GRAPH_USER_OBJECT_MOVE: u32 = 1;

struct Object {
    data: usize,
    destroy: HostFn,
    refs: u64,
}

#[derive(Default)]
struct State {
    objects: HashMap<Handle, Object>,
    /// Graph or executable graph -> the references it holds, per object.
    held: HashMap<Handle, HashMap<Handle, u64>>,
    /// Executable graph -> the stream of its last launch.
    launched: HashMap<Handle, (DefaultStream, usize)>,
}

static STATE: Mutex<Option<State>> = Mutex::new(None);

fn state<T>(f: impl FnOnce(&mut State) -> T) -> T {
    let mut st = STATE.lock().unwrap_or_else(|p| p.into_inner());
    f(st.get_or_insert_with(State::default))
}

/// Run a destructor on a thread of its own (inline if none can start).
fn destroy(destroy: HostFn, data: usize) {
    // SAFETY: the program's destructor, given with the object; it takes
    // the pointer it was given with.
    let run = move || unsafe { destroy(data as *mut c_void) };
    if let Err(e) = std::thread::Builder::new()
        .name("gpupool-user-object".into())
        .spawn(run)
    {
        tracing::warn!("no thread for a user object's destructor ({e}); running it now");
        run();
    }
}

impl State {
    /// `count` references of `object` released: the destructors of the
    /// objects whose last went.
    fn release(&mut self, object: Handle, count: u64, gone: &mut Vec<(HostFn, usize)>) -> CuResult {
        let o = self.objects.get_mut(&object).ok_or(CuError::INVALID_HANDLE)?;
        if count == 0 || count > o.refs {
            return Err(CuError::INVALID_VALUE);
        }
        o.refs -= count;
        if o.refs == 0 {
            if let Some(o) = self.objects.remove(&object) {
                gone.push((o.destroy, o.data));
            }
        }
        Ok(())
    }

    /// Every reference `holder` has, released.
    fn release_all(&mut self, holder: Handle, gone: &mut Vec<(HostFn, usize)>) {
        for (object, count) in self.held.remove(&holder).unwrap_or_default() {
            let _ = self.release(object, count, gone);
        }
    }

    /// `to` takes references to each object `from` holds.
    fn copy_refs(&mut self, from: Handle, to: Handle) {
        let Some(refs) = self.held.get(&from).cloned() else {
            return;
        };
        for (object, count) in refs {
            if let Some(o) = self.objects.get_mut(&object) {
                o.refs += count;
                *self.held.entry(to).or_default().entry(object).or_default() += count;
            }
        }
    }
}

fn run_destructors(gone: Vec<(HostFn, usize)>) {
    for (f, data) in gone {
        destroy(f, data);
    }
}

pub unsafe fn user_object_create(
    object: *mut *mut c_void,
    data: *mut c_void,
    destructor: *mut c_void,
    initial: u32,
    flags: u32,
) -> CuResult {
    shim()?;
    if object.is_null() || destructor.is_null() || initial == 0 || flags != NO_DESTRUCTOR_SYNC {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a `CUhostFn`, checked not to be null.
    let destroy = unsafe { std::mem::transmute::<*mut c_void, HostFn>(destructor) };
    let h = new_client_handle();
    state(|st| {
        st.objects.insert(
            h,
            Object {
                data: data as usize,
                destroy,
                refs: initial as u64,
            },
        )
    });
    unsafe { out(object, as_ptr(h)) }
}

pub unsafe fn user_object_retain(object: *mut c_void, count: u32) -> CuResult {
    shim()?;
    if count == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    state(|st| match st.objects.get_mut(&handle(object)) {
        Some(o) => {
            o.refs += count as u64;
            Ok(())
        }
        None => Err(CuError::INVALID_HANDLE),
    })
}

pub unsafe fn user_object_release(object: *mut c_void, count: u32) -> CuResult {
    shim()?;
    let mut gone = Vec::new();
    let r = state(|st| st.release(handle(object), count as u64, &mut gone));
    run_destructors(gone);
    r
}

pub unsafe fn graph_retain_user_object(graph: *mut c_void, object: *mut c_void, count: u32, flags: u32) -> CuResult {
    let s = shim()?;
    graphs::graph_ctx(s, graph)?;
    if count == 0 || flags & !GRAPH_USER_OBJECT_MOVE != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    state(|st| {
        let o = st.objects.get_mut(&handle(object)).ok_or(CuError::INVALID_HANDLE)?;
        if flags & GRAPH_USER_OBJECT_MOVE == 0 {
            o.refs += count as u64;
        } else if o.refs < count as u64 {
            return Err(CuError::INVALID_VALUE);
        }
        *st.held
            .entry(handle(graph))
            .or_default()
            .entry(handle(object))
            .or_default() += count as u64;
        Ok(())
    })
}

pub unsafe fn graph_release_user_object(graph: *mut c_void, object: *mut c_void, count: u32) -> CuResult {
    let s = shim()?;
    graphs::graph_ctx(s, graph)?;
    let mut gone = Vec::new();
    let r = state(|st| {
        let held = st
            .held
            .get_mut(&handle(graph))
            .and_then(|h| h.get_mut(&handle(object)))
            .ok_or(CuError::INVALID_VALUE)?;
        if count == 0 || (count as u64) > *held {
            return Err(CuError::INVALID_VALUE);
        }
        *held -= count as u64;
        st.release(handle(object), count as u64, &mut gone)
    });
    run_destructors(gone);
    r
}

/// `to` (an executable graph, a clone, a graph given a child graph node
/// of `from`) takes `from`'s references.
pub(super) fn copied(from: Handle, to: Handle) {
    state(|st| st.copy_refs(from, to));
}

/// An executable graph was launched on `stream`.
pub(super) fn launched(exec: Handle, mode: DefaultStream, stream: CUstream) {
    state(|st| {
        if st.held.contains_key(&exec) {
            st.launched.insert(exec, (mode, stream as usize));
        }
    });
}

/// A graph went: its references go.
pub(super) fn graph_gone(graph: Handle) {
    let mut gone = Vec::new();
    state(|st| st.release_all(graph, &mut gone));
    run_destructors(gone);
}

/// An executable graph went: its references go once its last launch has
/// run (a host function on that launch's stream), or now if it never ran.
pub(super) fn exec_gone(s: &Shim, exec: Handle) {
    let (refs, last) = state(|st| (st.held.remove(&exec), st.launched.remove(&exec)));
    let Some(refs) = refs.filter(|r| !r.is_empty()) else {
        return;
    };
    unsafe extern "C" fn release_refs(data: *mut c_void) {
        // SAFETY: made by Box::into_raw below, run once.
        let refs = unsafe { Box::from_raw(data.cast::<HashMap<Handle, u64>>()) };
        let mut gone = Vec::new();
        state(|st| {
            for (object, count) in refs.iter() {
                let _ = st.release(*object, *count, &mut gone);
            }
        });
        run_destructors(gone);
    }
    let data = Box::into_raw(Box::new(refs));
    let call = Call::Host {
        func: release_refs,
        data: data as usize,
    };
    let queued = last.is_some_and(|(mode, stream)| {
        let sref = Shim::stream_ref(mode, stream as Handle);
        capture_of(s, sref).is_none() && hostfns::enqueue(mode, stream as CUstream, call).is_ok()
    });
    if !queued {
        // SAFETY: not queued, so this is its only run.
        unsafe { release_refs(data.cast()) };
    }
}
