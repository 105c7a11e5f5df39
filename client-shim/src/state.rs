//! What the shim answers locally: the session's devices and their
//! attributes, the contexts and the current context of each thread, cached
//! function and kernel attributes and parameter layouts, and the map of the
//! program's device and host allocations. None of these costs a round trip
//! after its first fetch.

use crate::error::{CuError, CuResult};
use crate::remote::Remote;
use gpupool_proto::handshake::DeviceInfo;
use gpupool_proto::message::{Handle, OccupancyQuery, Reply, StreamRef};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::CString;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// Which default stream an entry point uses for stream 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultStream {
    Legacy,
    PerThread,
}

/// `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`, the driver's special handles.
const STREAM_LEGACY: u64 = 0x1;
const STREAM_PER_THREAD: u64 = 0x2;

/// The primary context of one device, as this process holds it.
#[derive(Debug, Default, Clone)]
pub struct Primary {
    pub handle: Option<Handle>,
    pub retains: u32,
    pub flags: u32,
}

/// A device allocation or module global the program may address.
#[derive(Debug, Clone, Copy)]
pub struct DeviceRange {
    pub size: u64,
    pub ctx: Handle,
    pub device: i32,
    pub kind: RangeKind,
    /// `cuMemAlloc` memory, which legacy IPC (`cuIpcGetMemHandle`) can
    /// share: what `CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE` says.
    pub legacy_ipc: bool,
}

/// How a device range came to the program, which says how it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeKind {
    /// `cuMemAlloc` and its kin: freed with `cuMemFree`.
    Allocated,
    /// A module global: cannot be freed with `cuMemFree`.
    Global,
    /// Physical memory mapped into a reservation (`cuMemMap`): undone with
    /// `cuMemUnmap`, and one range with the mappings that follow on from it.
    Mapped,
    /// Memory of another process opened with `cuIpcOpenMemHandle`: closed
    /// with `cuIpcCloseMemHandle`.
    Opened,
}

/// Host memory the program allocated through the driver (`cuMemAllocHost`,
/// `cuMemHostAlloc`) or registered (`cuMemHostRegister`): pinned, as far as
/// the program can tell.
#[derive(Debug, Clone, Copy)]
pub struct HostRange {
    pub size: usize,
    /// The flags it was allocated or registered with.
    pub flags: u32,
    /// Registered memory is the program's own: it is unregistered, never
    /// freed, by the driver.
    pub registered: bool,
}

/// A stream the program created: its context and what it was created with.
#[derive(Debug, Clone, Copy)]
pub struct StreamInfo {
    pub ctx: Handle,
    pub flags: u32,
    pub priority: i32,
}

/// A stream capture under way.
#[derive(Debug, Clone, Copy)]
pub struct Capture {
    /// Unique in the process (`cuStreamGetCaptureInfo`).
    pub id: u64,
    /// Work it cannot hold was refused: it fails when it ends.
    pub invalidated: bool,
    /// The program's graph it captures into (`cuStreamBeginCaptureToGraph`).
    pub into: Option<Handle>,
}

/// A function's parameters: (offset, size) in declaration order.
pub type ParamLayout = Arc<Vec<(u32, u32)>>;

/// A library the program loaded: held in the shim and shipped to the server
/// when one of its kernels or globals is first used.
pub struct LazyLibrary {
    pub image: Vec<u8>,
    /// The kernel names the image defines, when it could be read.
    pub kernels: Option<HashSet<String>>,
    /// The server's library, once loaded there.
    pub remote: Mutex<Option<Handle>>,
}

/// A kernel looked up in a lazy library: resolved on the server at first use.
pub struct LazyKernel {
    pub library: Arc<LazyLibrary>,
    pub name: String,
    /// The name as `cuKernelGetName` hands it out: valid while the
    /// library is loaded.
    pub c_name: CString,
    pub remote: Mutex<Option<Handle>>,
}

/// Handles the shim makes itself carry this tag: bits 46 to 62 set, above
/// every user-space pointer of the server (below 2^47, or 2^56 with
/// five-level paging), yet positive as a signed 64-bit value, as bindings
/// that keep handles in an `intptr_t` (cuda-python's) need them to be.
const LOCAL_TAG: u64 = 0x7fff_c000_0000_0000;

pub fn is_local(h: Handle) -> bool {
    h & LOCAL_TAG == LOCAL_TAG
}

fn new_local_handle() -> Handle {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    LOCAL_TAG | (NEXT.fetch_add(1, Ordering::Relaxed) << 4)
}

/// Attribute numbers are small; a dense table answers them by index.
const MAX_ATTRIBUTE: usize = 256;

/// Everything the shim holds for the process.
pub struct Shim {
    pub remote: Arc<Remote>,
    attributes: Vec<Vec<Option<i32>>>,
    pub contexts: RwLock<HashMap<Handle, i32>>,
    pub primaries: Mutex<Vec<Primary>>,
    pub kernels: RwLock<HashSet<Handle>>,
    pub params: RwLock<HashMap<Handle, ParamLayout>>,
    /// Function and kernel attributes the driver answered (or, for an
    /// attribute it does not have, refused), by (function, attribute) and
    /// (kernel, attribute, device).
    pub func_attributes: RwLock<HashMap<(Handle, i32), CuResult<i32>>>,
    pub kernel_attributes: RwLock<HashMap<(Handle, i32, i32), CuResult<i32>>>,
    /// `cuMemGetAllocationGranularity`'s answers per (device, recommended):
    /// the driver's granularity of device memory does not change.
    pub granularity: RwLock<HashMap<(i32, bool), u64>>,
    /// Device memory the program may address, held in its address space
    /// too ([`crate::uva`]).
    pub device_memory: Mutex<crate::uva::DeviceMap>,
    pub host_memory: Mutex<BTreeMap<usize, HostRange>>,
    /// Streams the program created.
    pub streams: RwLock<HashMap<Handle, StreamInfo>>,
    /// Contexts the program created -> their creation flags.
    pub context_flags: RwLock<HashMap<Handle, u32>>,
    pub libraries: RwLock<HashMap<Handle, Arc<LazyLibrary>>>,
    pub lazy_kernels: RwLock<HashMap<Handle, Arc<LazyKernel>>>,
    /// (library, kernel name) -> kernel handle, so a name maps to one handle.
    pub kernel_names: Mutex<HashMap<(Handle, String), Handle>>,
    /// (kernel, context) -> the kernel's function in that context.
    pub kernel_functions: RwLock<HashMap<(Handle, Handle), Handle>>,
    /// (library, context) -> the library's module in that context
    /// (`cuLibraryGetModule`).
    pub library_modules: RwLock<HashMap<(Handle, Handle), Handle>>,
    /// Occupancy answers: fixed for a function, a context and a question
    /// until a function or kernel attribute is set.
    pub occupancy: RwLock<HashMap<(Handle, Handle, OccupancyQuery), Reply>>,
    /// The value each settable attribute was last given, by (function or
    /// kernel, attribute, device; `FUNCTION_SET` for a function), so that
    /// setting it again to the same value (cuBLAS and PyTorch do, before
    /// launches) is answered here: setting an attribute to the value it has
    /// is no change.
    pub attribute_sets: RwLock<HashMap<(Handle, i32, i32), i32>>,
    /// Streams that capture (`cuStreamBeginCapture`), so that capture
    /// queries are answered here.
    pub captures: Mutex<HashMap<StreamRef, Capture>>,
    /// Events last recorded in a capture -> the capture's id: a stream that
    /// waits for one joins that capture, as in the driver.
    pub capture_events: Mutex<HashMap<Handle, u64>>,
    /// What the shim knows of events' records, to answer their queries
    /// (`calls::completions`).
    pub event_notes: Mutex<HashMap<Handle, EventNote>>,
    /// Graphs and executable graphs -> their context.
    pub graphs: RwLock<HashMap<Handle, Handle>>,
    /// Host functions enqueued by the program (`cuLaunchHostFunc`).
    pub callbacks: crate::callbacks::Callbacks,
    /// Memory pools the program was given -> their device.
    pub pools: RwLock<HashMap<Handle, i32>>,
    /// The access (`CUmemAccess_flags`) other devices were given to a
    /// pool: (pool, device) -> flags; a device not here has none.
    pub pool_access: RwLock<HashMap<(Handle, i32), u32>>,
    /// Physical memory the program holds handles to (`cuMemCreate`,
    /// `cuMemImportFromShareableHandle`).
    pub physical: RwLock<HashMap<Handle, PhysicalEntry>>,
    /// CUDA arrays the program created.
    pub arrays: RwLock<HashMap<Handle, ArrayEntry>>,
    /// Texture and surface objects, with the descriptors they were made of.
    pub textures: RwLock<HashMap<Handle, TextureEntry>>,
    pub surfaces: RwLock<HashMap<Handle, TextureEntry>>,
    /// Functions the server made for the program (`cuModuleGetFunction`,
    /// `cuKernelGetFunction`): their names and modules.
    pub functions: RwLock<HashMap<Handle, FunctionInfo>>,
    /// The kernel names of each module the program loaded, in image order
    /// (`None` where the shim could not read the image).
    pub module_kernels: RwLock<HashMap<Handle, Option<Arc<Vec<String>>>>>,
    /// Each context's cache preference (`cuCtxSetCacheConfig`).
    pub cache_configs: RwLock<HashMap<Handle, u32>>,
    /// Context limits the driver answered (`cuCtxGetLimit`), by (context,
    /// limit): they change only when the program sets one, which forgets
    /// the context's answers, as its destruction or reset does. Never the
    /// stack size, which the driver raises itself for a launch that needs
    /// more. cuDNN's runtime-compiled engines ask whether the context is a
    /// CIG one at every execution.
    pub limits: RwLock<Limits>,
}

/// The context limits the driver answered ([`Shim::limits`]).
#[derive(Default)]
pub struct Limits {
    pub answers: HashMap<(Handle, i32), usize>,
    /// Counts forgettings, so that an answer asked before one is not kept
    /// after it.
    pub forgotten: u64,
}

/// A function the server made: its name as `cuFuncGetName` hands it out
/// (valid while the function is), and its module where it came from one.
pub struct FunctionInfo {
    pub name: CString,
    pub module: Option<Handle>,
}

/// Physical memory the program holds a handle to.
#[derive(Debug, Clone, Copy)]
pub struct PhysicalEntry {
    pub device: i32,
    /// The `CUmemAllocationHandleType`s it was made exportable as.
    pub handle_types: u32,
    /// References to the handle: its creation or import and each
    /// `cuMemRetainAllocationHandle`, each given up by a `cuMemRelease`.
    pub refs: u32,
}

/// A CUDA array: its context and descriptor.
#[derive(Clone, Copy)]
pub struct ArrayEntry {
    pub ctx: Handle,
    pub desc: gpupool_proto::message::ArrayDesc,
}

/// A texture or surface object: its context, and the program's
/// `CUDA_RESOURCE_DESC` and `CUDA_TEXTURE_DESC` (zero for a surface), as
/// given.
pub struct TextureEntry {
    pub ctx: Handle,
    pub resource: [u8; 144],
    pub texture: [u8; 104],
}

/// What the shim knows of one event's records (`calls::completions`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct EventNote {
    /// Queried or synchronised at least once: its records are watched.
    pub asked: bool,
    /// Never answered here: it may be recorded where the shim does not see
    /// it (another process, a graph).
    pub elsewhere: bool,
    /// Records sent so far; the latest is the one a query asks of.
    pub recorded: u64,
    /// The latest record the server told done.
    pub done: u64,
    /// The latest record sent watched (the server tells its completion).
    pub watched: u64,
    /// When the latest watched record was sent, and its place in the order
    /// the server gets requests.
    pub sent: Option<(std::time::Instant, u64)>,
}

impl EventNote {
    /// A record of the event is sent: the generation the server is to tell
    /// the completion of, when the record is watched.
    pub fn record(&mut self) -> Option<u64> {
        self.recorded += 1;
        self.sent = None;
        let watched = self.asked && !self.elsewhere;
        if watched {
            self.watched = self.recorded;
        }
        watched.then_some(self.recorded)
    }

    /// The watched record `generation` was sent at `place`, just now.
    pub fn placed(&mut self, generation: u64, place: u64) {
        if self.recorded == generation {
            self.sent = Some((std::time::Instant::now(), place));
        }
    }

    /// A record the server does not watch (a context's record): questions
    /// of it ask the server.
    pub fn record_unwatched(&mut self) {
        self.recorded += 1;
        self.sent = None;
    }

    /// Whether the server is to tell the latest record's completion, and
    /// has not yet (as far as the frames read so far say).
    pub fn told_later(&self) -> bool {
        !self.elsewhere && self.recorded > 0 && self.watched == self.recorded && self.done < self.recorded
    }

    /// The server told the watched record `generation` done.
    pub fn told(&mut self, generation: u64) {
        self.done = self.done.max(generation);
    }

    /// The program asks of the event: whether the answer (done) is known
    /// here. Its later records are watched.
    pub fn ask(&mut self) -> bool {
        self.asked = true;
        !self.elsewhere && self.recorded > 0 && self.done == self.recorded
    }
}

/// The device slot of a function's entries in [`Shim::attribute_sets`].
pub const FUNCTION_SET: i32 = i32::MIN;

thread_local! {
    /// This thread's context stack: (context, its device). The top is current.
    static CONTEXT_STACK: RefCell<Vec<(Handle, i32)>> = const { RefCell::new(Vec::new()) };
    static THREAD_ID: u64 = {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        NEXT.fetch_add(1, Ordering::Relaxed)
    };
}

impl Shim {
    pub fn new(remote: Arc<Remote>) -> Shim {
        let devices = &remote.session.devices;
        let attributes = devices
            .iter()
            .map(|d| {
                let mut table = vec![None; MAX_ATTRIBUTE];
                for &(a, v) in &d.attributes {
                    if let Some(slot) = usize::try_from(a).ok().and_then(|a| table.get_mut(a)) {
                        *slot = Some(v);
                    }
                }
                table
            })
            .collect();
        let primaries = vec![Primary::default(); devices.len()];
        Shim {
            remote,
            attributes,
            contexts: RwLock::default(),
            primaries: Mutex::new(primaries),
            kernels: RwLock::default(),
            params: RwLock::default(),
            func_attributes: RwLock::default(),
            kernel_attributes: RwLock::default(),
            granularity: RwLock::default(),
            device_memory: Mutex::default(),
            host_memory: Mutex::default(),
            streams: RwLock::default(),
            context_flags: RwLock::default(),
            libraries: RwLock::default(),
            lazy_kernels: RwLock::default(),
            kernel_names: Mutex::default(),
            kernel_functions: RwLock::default(),
            library_modules: RwLock::default(),
            occupancy: RwLock::default(),
            attribute_sets: RwLock::default(),
            captures: Mutex::default(),
            capture_events: Mutex::default(),
            event_notes: Mutex::default(),
            graphs: RwLock::default(),
            callbacks: Default::default(),
            pools: RwLock::default(),
            pool_access: RwLock::default(),
            physical: RwLock::default(),
            arrays: RwLock::default(),
            textures: RwLock::default(),
            surfaces: RwLock::default(),
            functions: RwLock::default(),
            module_kernels: RwLock::default(),
            cache_configs: RwLock::default(),
            limits: RwLock::default(),
        }
    }

    /// Forget what is cached under the server's function handles (their
    /// attributes, parameter layouts, occupancy answers, attribute sets).
    /// Called when modules, libraries or contexts go away, since the driver
    /// may give a later function the value of a freed one's handle. (Kernel
    /// handles are the shim's own and never reused.)
    pub fn forget_functions(&self) {
        fn w<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
            l.write().unwrap_or_else(|p| p.into_inner())
        }
        w(&self.func_attributes).clear();
        w(&self.params).retain(|h, _| is_local(*h));
        w(&self.occupancy).clear();
        w(&self.attribute_sets).retain(|(_, _, device), _| *device != FUNCTION_SET);
    }

    /// Keep a library; its handle.
    pub fn add_library(&self, lib: Arc<LazyLibrary>) -> Handle {
        let h = new_local_handle();
        self.libraries.write().unwrap_or_else(|p| p.into_inner()).insert(h, lib);
        h
    }

    /// The handle of kernel `name` of `library`, made on first lookup.
    pub fn lazy_kernel(&self, library: Handle, lib: &Arc<LazyLibrary>, name: &str) -> Handle {
        let mut names = self.kernel_names.lock().unwrap_or_else(|p| p.into_inner());
        *names.entry((library, name.to_owned())).or_insert_with(|| {
            let h = new_local_handle();
            let k = LazyKernel {
                library: Arc::clone(lib),
                name: name.to_owned(),
                c_name: CString::new(name).unwrap_or_default(),
                remote: Mutex::new(None),
            };
            self.lazy_kernels
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(h, Arc::new(k));
            h
        })
    }

    /// Forget the handle made for a kernel name the library does not have.
    pub fn forget_lazy_kernel(&self, library: Handle, name: &str) {
        let mut names = self.kernel_names.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(h) = names.remove(&(library, name.to_owned())) {
            self.lazy_kernels.write().unwrap_or_else(|p| p.into_inner()).remove(&h);
        }
    }

    /// Forget a library and its kernels; the library, if it was found.
    pub fn remove_library(&self, library: Handle) -> Option<Arc<LazyLibrary>> {
        let lib = self
            .libraries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&library)?;
        let mut names = self.kernel_names.lock().unwrap_or_else(|p| p.into_inner());
        let mut kernels = self.lazy_kernels.write().unwrap_or_else(|p| p.into_inner());
        let mut functions = self.kernel_functions.write().unwrap_or_else(|p| p.into_inner());
        names.retain(|(l, _), h| {
            let keep = *l != library;
            if !keep {
                kernels.remove(h);
                functions.retain(|(k, _), _| k != h);
            }
            keep
        });
        drop((names, kernels, functions));
        self.library_modules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(l, _), _| *l != library);
        self.forget_functions();
        Some(lib)
    }

    pub fn device(&self, ordinal: i32) -> CuResult<&DeviceInfo> {
        usize::try_from(ordinal)
            .ok()
            .and_then(|i| self.remote.session.devices.get(i))
            .ok_or(CuError::INVALID_DEVICE)
    }

    pub fn attribute(&self, device: i32, attribute: i32) -> CuResult<i32> {
        self.device(device)?;
        let table = &self.attributes[device as usize];
        usize::try_from(attribute)
            .ok()
            .and_then(|a| table.get(a).copied().flatten())
            .ok_or(CuError::INVALID_VALUE)
    }

    pub fn context_device(&self, ctx: Handle) -> CuResult<i32> {
        self.contexts
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&ctx)
            .copied()
            .ok_or(CuError::INVALID_CONTEXT)
    }

    /// Map a stream argument to the server's notion of it.
    pub fn stream_ref(mode: DefaultStream, stream: u64) -> StreamRef {
        match (stream, mode) {
            (0, DefaultStream::Legacy) | (STREAM_LEGACY, _) => StreamRef::Legacy,
            (0, DefaultStream::PerThread) | (STREAM_PER_THREAD, _) => StreamRef::PerThread(thread_id()),
            (h, _) => StreamRef::Handle(h),
        }
    }

    /// The device range containing `ptr..ptr+len`, if one does.
    pub fn find_device_range(&self, ptr: u64, len: u64) -> Option<(u64, DeviceRange)> {
        let map = self.device_memory.lock().unwrap_or_else(|p| p.into_inner());
        let (&base, &range) = map.range(..=ptr).next_back()?;
        let end = ptr.checked_add(len)?;
        if ptr >= base + range.size.max(1) {
            return None;
        }
        let mut reach = base + range.size;
        if end > reach && (range.kind == RangeKind::Mapped) {
            for (&b, r) in map.range(reach..end) {
                if b != reach || r.kind != RangeKind::Mapped {
                    break;
                }
                reach = b + r.size;
            }
        }
        (end <= reach).then_some((base, range))
    }

    /// The host allocation containing `ptr`, if one does.
    pub fn find_host_range(&self, ptr: usize) -> Option<(usize, usize)> {
        let map = self.host_memory.lock().unwrap_or_else(|p| p.into_inner());
        let (&base, r) = map.range(..=ptr).next_back()?;
        (ptr < base + r.size).then_some((base, r.size))
    }

    /// Forget the limits the driver answered for a context.
    pub fn forget_limits(&self, ctx: Handle) {
        let mut limits = self.limits.write().unwrap_or_else(|p| p.into_inner());
        limits.answers.retain(|(c, _), _| *c != ctx);
        limits.forgotten += 1;
    }

    /// Forget everything that belonged to a destroyed or reset context.
    pub fn forget_context(&self, ctx: Handle) {
        self.cache_configs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&ctx);
        self.forget_limits(ctx);
        self.device_memory
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, r| r.ctx != ctx);
        self.kernel_functions
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, c), _| *c != ctx);
        self.library_modules
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|(_, c), _| *c != ctx);
        self.graphs
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, c| *c != ctx);
        for objects in [&self.textures, &self.surfaces] {
            objects
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .retain(|_, t| t.ctx != ctx);
        }
        self.arrays
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, a| a.ctx != ctx);
        // Its streams went with it: they no longer answer queries.
        let mut gone = Vec::new();
        self.streams
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|h, info| {
                let keep = info.ctx != ctx;
                if !keep {
                    gone.push(StreamRef::Handle(*h));
                }
                keep
            });
        let mut captures = self.captures.lock().unwrap_or_else(|p| p.into_inner());
        for stream in &gone {
            captures.remove(stream);
        }
        drop(captures);
        self.callbacks.forget_context(ctx);
        self.forget_functions();
    }
}

/// This thread's id for per-thread default streams.
pub fn thread_id() -> u64 {
    THREAD_ID.with(|id| *id)
}

/// This thread's context stack, unless the thread's storage is already torn
/// down (calls from exit handlers, or from other thread-local destructors):
/// then the thread has no context, and changes to its stack are dropped.
fn with_stack<T: Default>(f: impl FnOnce(&mut Vec<(Handle, i32)>) -> T) -> T {
    CONTEXT_STACK.try_with(|s| f(&mut s.borrow_mut())).unwrap_or_default()
}

/// The current context and its device.
pub fn current() -> Option<(Handle, i32)> {
    with_stack(|s| s.last().copied())
}

/// `cuCtxSetCurrent`: replace the top of the stack (NULL pops it).
pub fn set_current(entry: Option<(Handle, i32)>) {
    with_stack(|s| match entry {
        Some(e) => match s.last_mut() {
            Some(top) => *top = e,
            None => s.push(e),
        },
        None => {
            s.pop();
        }
    })
}

pub fn push_current(entry: (Handle, i32)) {
    with_stack(|s| s.push(entry))
}

pub fn pop_current() -> Option<(Handle, i32)> {
    with_stack(|s| s.pop())
}

/// Remove a destroyed context from this thread's stack.
pub fn drop_from_stack(ctx: Handle) {
    with_stack(|s| s.retain(|(c, _)| *c != ctx))
}

#[cfg(test)]
mod tests {
    /// Handles the shim and the client make are positive as signed values
    /// (bindings keep handles in an `intptr_t`) and lie above every
    /// user-space address (below 2^56 even with five-level paging), so
    /// they meet no handle or pointer of the server's driver.
    #[test]
    fn made_handles_are_positive_and_above_user_space() {
        for _ in 0..3 {
            for h in [new_local_handle(), crate::exports::calls::new_client_handle_for_tests()] {
                assert!((h as i64) > 0, "{h:#x} is negative as a signed value");
                assert!(h >= 1 << 56, "{h:#x} could be a user-space address");
                assert_eq!(h % 16, 0, "{h:#x} is not aligned as a pointer");
            }
        }
        assert!(is_local(new_local_handle()));
        assert!(!is_local(0x7fff_ffff_f000));
        assert!(gpupool_proto::message::is_client_handle(
            crate::exports::calls::new_client_handle_for_tests()
        ));
    }

    use super::*;

    /// An event's queries are answered here only when its latest record was
    /// told done: not before it was ever asked of (its records are not
    /// watched), not after a later record, not on an older record's answer
    /// or an error, and never for an event recorded elsewhere.
    #[test]
    fn event_notes_answer_only_the_latest_record_told_done() {
        let mut n = EventNote::default();
        assert!(!n.ask(), "never recorded");
        assert_eq!(n.record(), Some(1), "asked of, so watched");
        assert!(!n.ask(), "not yet told");
        n.told(1);
        assert!(n.ask());
        assert!(n.ask(), "done stays done");
        assert_eq!(n.record(), Some(2));
        assert!(!n.ask(), "recorded again: the older answer no longer counts");
        assert_eq!(n.record(), Some(3));
        n.told(2);
        assert!(!n.ask(), "an older record's answer");
        n.told(3);
        assert!(n.ask());
        n.told(2);
        assert!(n.ask(), "a late older answer changes nothing");

        let mut fresh = EventNote::default();
        assert_eq!(fresh.record(), None, "not asked of: not watched");
        assert!(!fresh.ask(), "recorded, never told");
        assert_eq!(fresh.record(), Some(2), "asked of: watched from now on");

        let mut elsewhere = EventNote {
            elsewhere: true,
            ..EventNote::default()
        };
        assert!(!elsewhere.ask());
        assert_eq!(elsewhere.record(), None, "recorded elsewhere: not watched");
        elsewhere.told(1);
        assert!(!elsewhere.ask());
    }

    #[test]
    fn context_stack_follows_cuda_rules() {
        assert_eq!(current(), None);
        set_current(Some((10, 0)));
        assert_eq!(current(), Some((10, 0)));
        push_current((20, 1));
        assert_eq!(current(), Some((20, 1)));
        set_current(Some((30, 0)));
        assert_eq!(pop_current(), Some((30, 0)));
        assert_eq!(current(), Some((10, 0)));
        set_current(None);
        assert_eq!(current(), None);
    }

    #[test]
    fn stream_mapping() {
        assert_eq!(Shim::stream_ref(DefaultStream::Legacy, 0), StreamRef::Legacy);
        assert_eq!(
            Shim::stream_ref(DefaultStream::PerThread, 0),
            StreamRef::PerThread(thread_id())
        );
        assert_eq!(Shim::stream_ref(DefaultStream::PerThread, 1), StreamRef::Legacy);
        assert_eq!(
            Shim::stream_ref(DefaultStream::Legacy, 2),
            StreamRef::PerThread(thread_id())
        );
        assert_eq!(
            Shim::stream_ref(DefaultStream::Legacy, 0xabc0),
            StreamRef::Handle(0xabc0)
        );
    }
}
