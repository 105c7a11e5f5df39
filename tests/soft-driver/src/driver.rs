//! State and semantics of the simulated driver.
//!
//! One global [`Driver`] behind a `Mutex` holds every object (devices,
//! contexts, allocations, modules, functions, libraries, kernels, streams,
//! events). Handles are unique non-null values issued from a counter and
//! validated against these tables on every call. The current context is
//! thread-local, as in the real driver.
//!
//! Work is executed when it is enqueued, except, with the copy engine on
//! ([`crate::engine`]), asynchronous copies whose host side is pinned,
//! which it does on a thread of its own: an event completes, and a stream is idle, when the
//! copies queued before are done, and every other call waits for them
//! first ([`with`]). A kernel fault
//! leaves its context in a sticky error state that every later call using
//! that context reports, until the context is destroyed or reset.

use std::cell::Cell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::engine;
use crate::kernels::{self, Recognised};
use crate::memory::{page_size, round_up, AllocKind, Allocation, AllocationMap, Mapping, ALLOC_ALIGN, VMM_GRANULARITY};
use crate::ptx;
use crate::result::*;
use crate::texture::{self, ArrayShape, Image, Sampler};

mod conditionals;
pub mod graphedit;
pub mod green;
mod ipc;
mod peer;

use conditionals::{Body, CondNode, CondObj};

/// `cuDriverGetVersion` / `cuCtxGetApiVersion`: CUDA 13.0.
pub const DRIVER_VERSION: i32 = 13000;
/// Default simulated memory per device (16 GiB).
const DEFAULT_MEMORY_MIB: u64 = 16 * 1024;
/// Streams `NULL`, `CU_STREAM_LEGACY` and `CU_STREAM_PER_THREAD`.
const BUILTIN_STREAMS: [u64; 3] = [0, 1, 2];
/// First handle value; handles advance in steps of 16.
const FIRST_HANDLE: u64 = 0x5eed_0000_1000;

pub const SM_COUNT: i32 = 132;
pub const MAX_THREADS_PER_BLOCK: u32 = 1024;
pub const MAX_THREADS_PER_SM: i32 = 2048;
pub const MAX_SHARED_PER_SM: i32 = 233472;
pub const MAX_SHARED_PER_BLOCK: i32 = 49152;
pub const MAX_SHARED_PER_BLOCK_OPTIN: i32 = 232448;
const RESERVED_SHARED_PER_BLOCK: i32 = 1024;

thread_local! {
    static CURRENT: Cell<u64> = const { Cell::new(0) };
}

static DRIVER: Mutex<Option<Driver>> = Mutex::new(None);

/// Runs `f` on the initialised driver (`CUDA_ERROR_NOT_INITIALIZED` before
/// `cuInit`), once the copies queued before are done.
pub fn with<T>(f: impl FnOnce(&mut Driver) -> CuResult<T>) -> CuResult<T> {
    engine::drain();
    with_beside_copies(f)
}

/// Runs `f` on the driver while queued copies go on: for calls that neither
/// touch memory nor depend on the copies being done (events, queries, the
/// current context, asynchronous copies themselves).
pub fn with_beside_copies<T>(f: impl FnOnce(&mut Driver) -> CuResult<T>) -> CuResult<T> {
    let mut guard = DRIVER.lock().unwrap_or_else(|e| e.into_inner());
    let driver = guard.as_mut().ok_or(CUDA_ERROR_NOT_INITIALIZED)?;
    f(driver)
}

/// Stream waits met so far, and the signal that one was ([`synchronize`]).
static WAITS_MET: Mutex<u64> = Mutex::new(0);
static WAIT_MET: std::sync::Condvar = std::sync::Condvar::new();

/// A synchronising call: runs `f` (through [`with`], or beside the copies
/// when `beside`), which checks its arguments and answers the unmet stream
/// waits ([`crate::waits`]) the call must wait for; until it answers none,
/// waits outside the driver's lock for a wait to be met, and asks again.
pub fn synchronize(beside: bool, f: impl Fn(&mut Driver) -> CuResult<Vec<u64>>) -> CuResult<()> {
    loop {
        let seen = *WAITS_MET.lock().unwrap_or_else(|e| e.into_inner());
        let unmet = if beside { with_beside_copies(&f)? } else { with(&f)? };
        if unmet.is_empty() {
            return Ok(());
        }
        let mut met = WAITS_MET.lock().unwrap_or_else(|e| e.into_inner());
        while *met == seen {
            met = WAIT_MET.wait(met).unwrap_or_else(|e| e.into_inner());
        }
    }
}

/// `cuInit`: creates the driver state on first call. Reads
/// `GPUPOOL_SOFT_MEMORY_MIB` (memory per device, default 16384),
/// `GPUPOOL_SOFT_DEVICE_COUNT` (default 1) and `GPUPOOL_SOFT_MACHINE_ID`
/// (0 to 65535, default 0: goes into the device UUIDs, so that simulated
/// servers of one pool have GPUs of their own), `CUDA_VISIBLE_DEVICES` (as
/// the driver reads it: which of those GPUs it shows, in which order), and
/// `GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS` (`1`: unknown kernels are skipped
/// instead of refused), `CUDA_LAUNCH_BLOCKING` (`1`: a launch answers its
/// kernel's fault), `GPUPOOL_SOFT_PEER_ACCESS` (`0`: no device can
/// access another's memory, [`peer`]), `GPUPOOL_SOFT_COPY_ENGINE` (`1`:
/// asynchronous pinned copies run beside the caller, [`engine`]),
/// `GPUPOOL_SOFT_DEVICE_ADDRESS` (hex: device memory is asked for from
/// there up) and `GPUPOOL_SOFT_REUSE_HANDLES` (`0`: the handles of unloaded modules and
/// libraries and of destroyed streams, events and executable graphs are
/// not given out again).
pub fn init(flags: u32) -> CuResult<()> {
    if flags != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let mut guard = DRIVER.lock().unwrap_or_else(|e| e.into_inner());
    if guard.is_none() {
        let env_num = |name: &str, default: u64| -> CuResult<u64> {
            match std::env::var(name) {
                Ok(v) => v.trim().parse().map_err(|_| CUDA_ERROR_INVALID_VALUE),
                Err(_) => Ok(default),
            }
        };
        let mib = env_num("GPUPOOL_SOFT_MEMORY_MIB", DEFAULT_MEMORY_MIB)?;
        let count = env_num("GPUPOOL_SOFT_DEVICE_COUNT", 1)?;
        let machine = env_num("GPUPOOL_SOFT_MACHINE_ID", 0)?;
        if count == 0 {
            return Err(100); // CUDA_ERROR_NO_DEVICE
        }
        if mib == 0 || count > 64 || machine > u16::MAX as u64 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let capacity = mib.checked_mul(1 << 20).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let mut driver = Driver::new(count as usize, capacity);
        driver.machine_id = machine as u16;
        if let Ok(v) = std::env::var("CUDA_VISIBLE_DEVICES") {
            if !driver.show_only(&v) {
                return Err(100); // CUDA_ERROR_NO_DEVICE
            }
        }
        driver.skip_unknown = match std::env::var("GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS").as_deref() {
            Ok("1") => true,
            Ok("0") | Err(_) => false,
            Ok(_) => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        driver.launch_blocking = std::env::var("CUDA_LAUNCH_BLOCKING").is_ok_and(|v| v.trim() == "1");
        driver.one_model = std::env::var("GPUPOOL_SOFT_ONE_MODEL").is_ok_and(|v| v.trim() == "1");
        if let Ok(v) = std::env::var("GPUPOOL_SOFT_DEVICE_ADDRESS") {
            let base =
                u64::from_str_radix(v.trim().trim_start_matches("0x"), 16).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
            crate::memory::place_from(base);
        }
        match std::env::var("GPUPOOL_SOFT_REUSE_HANDLES").as_deref() {
            Ok("1") | Err(_) => driver.reusable = Some(HashMap::new()),
            Ok("0") => {}
            Ok(_) => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        driver.peer_links = match std::env::var("GPUPOOL_SOFT_PEER_ACCESS").as_deref() {
            Ok("1") | Err(_) => true,
            Ok("0") => false,
            Ok(_) => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        match std::env::var("GPUPOOL_SOFT_COPY_ENGINE").as_deref() {
            Ok("1") => engine::enable(),
            Ok("0") | Err(_) => {}
            Ok(_) => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        if driver.skip_unknown {
            eprintln!(
                "gpupool soft driver: GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS=1: kernels it cannot run are skipped, \
                 and their results are not computed"
            );
        }
        *guard = Some(driver);
    }
    Ok(())
}

fn current() -> u64 {
    CURRENT.with(Cell::get)
}

fn set_current(ctx: u64) {
    CURRENT.with(|c| c.set(ctx));
}

struct Device {
    /// Which simulated GPU of the machine this is (its UUID and PCI bus
    /// say so), whatever place `CUDA_VISIBLE_DEVICES` gives it.
    physical: usize,
    capacity: u64,
    used: u64,
    primary_handle: u64,
    primary_refs: u32,
    primary_flags: u32,
}

struct Context {
    device: usize,
    flags: u32,
    primary: bool,
    sticky: Option<CUresult>,
    limits: [u64; LIMITS.len()],
    /// `cuCtxSetCacheConfig`'s preference (`CUfunc_cache`).
    cache_config: u32,
}

struct ModuleObj {
    ctx: u64,
    ptx: Arc<ptx::Module>,
    /// Function handle of each entry, in `ptx.entries` order.
    functions: Vec<u64>,
    /// Variable name → (device address, size).
    variables: HashMap<String, (u64, u64)>,
    library: Option<u64>,
}

/// Number of `CUfunction_attribute` values (`CU_FUNC_ATTRIBUTE_MAX`).
pub const FUNC_ATTRIBUTE_COUNT: usize = 16;
const ATTR_MAX_THREADS: usize = 0;
const ATTR_PTX_VERSION: usize = 5;
const ATTR_MAX_DYNAMIC_SHARED: usize = 8;

type FuncAttrs = [i32; FUNC_ATTRIBUTE_COUNT];

struct FunctionObj {
    ctx: u64,
    ptx: Arc<ptx::Module>,
    entry: usize,
    recognised: Recognised,
    attrs: FuncAttrs,
    /// `cuFuncSetCacheConfig`'s preference.
    cache_config: u32,
}

struct LibraryObj {
    ptx: Arc<ptx::Module>,
    /// Kernel handle of each entry, in `ptx.entries` order.
    kernels: Vec<u64>,
    /// Context → the module this library was loaded as there.
    modules: HashMap<u64, u64>,
}

struct KernelObj {
    library: u64,
    entry: usize,
    /// Attributes set per device with `cuKernelSetAttribute`.
    attrs: HashMap<usize, FuncAttrs>,
    /// `cuKernelSetCacheConfig`'s preference per device.
    cache_configs: HashMap<usize, u32>,
}

/// A JIT linker: its inputs, and the image once linked.
type LinkObj = (Vec<Vec<u8>>, Option<Vec<u8>>);

struct StreamObj {
    ctx: u64,
    /// Set while the stream captures (`cuStreamBeginCapture`).
    capture: Option<Capture>,
    /// The stream whose capture this one joined, by waiting for an event
    /// recorded in it: its work goes into that capture.
    joined: Option<u64>,
}

/// Work recorded by a capturing stream instead of run.
struct Capture {
    mode: u32,
    ops: Vec<Op>,
    /// Capturing into this existing graph (`cuStreamBeginCaptureToGraph`).
    into: Option<u64>,
    /// Stream-ordered allocations made in the capture: the graph's memory.
    allocs: Vec<u64>,
    /// An operation the capture cannot hold was attempted: ending it fails.
    invalidated: bool,
    /// `into` was made for the capture when its graph was first asked
    /// for (`cuStreamGetCaptureInfo`): it goes if the capture fails.
    made: bool,
    /// The nodes the next work follows, as last told
    /// (`cuStreamGetCaptureInfo`, `cuStreamUpdateCaptureDependencies`).
    frontier: Vec<u64>,
}

/// One node of a captured graph, replayed in order by `cuGraphLaunch`.
#[derive(Clone)]
enum Op {
    /// A kernel (`None`: one this double cannot run) with its packed
    /// parameters and thread count.
    Launch {
        func: u64,
        kernel: Option<kernels::Known>,
        params: Vec<u8>,
        threads: u64,
        /// The launch's shape, as given (a node's parameters read back).
        cfg: NodeShape,
    },
    /// A node removed from its graph (`cuGraphDestroyNode`): nothing runs.
    Removed,
    Memset {
        dst: u64,
        pattern: Vec<u8>,
        count: u64,
    },
    CopyDtoD {
        dst: u64,
        src: u64,
        n: u64,
    },
    /// A copy from pinned host memory (`src`) to the device.
    CopyIn {
        dst: u64,
        src: u64,
        n: u64,
    },
    /// A copy from the device to pinned host memory (`dst`).
    CopyOut {
        dst: u64,
        src: u64,
        n: u64,
    },
    /// An event record node: the event completes when the graph gets here.
    Record {
        event: u64,
    },
    /// A host node: `func(data)`, queued after the work before it.
    Host {
        func: engine::HostFn,
        data: usize,
    },
    /// A conditional node (`conditionals`): the bodies handle `handle`'s
    /// value picks run where the launch gets here.
    Conditional {
        handle: u64,
        kind: u32,
        bodies: Vec<Body>,
    },
}

/// Whether two lists of operations have the same shape: the same
/// operations in order, kernels of the same functions (what an executable
/// graph's update asks of the new work).
fn same_shape(a: &[Op], b: &[Op]) -> bool {
    let same = |a: &Op, b: &Op| match (a, b) {
        (Op::Launch { func: f, .. }, Op::Launch { func: h, .. }) => f == h,
        _ => std::mem::discriminant(a) == std::mem::discriminant(b),
    };
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| same(a, b))
}

/// `CUgraphNodeType`s.
const NODE_KERNEL: u32 = 0;
const NODE_MEMCPY: u32 = 1;
const NODE_MEMSET: u32 = 2;
const NODE_HOST: u32 = 3;
const NODE_GRAPH: u32 = 4;
const NODE_EMPTY: u32 = 5;
const NODE_WAIT_EVENT: u32 = 6;
const NODE_EVENT_RECORD: u32 = 7;
const NODE_MEM_ALLOC: u32 = 10;
const NODE_MEM_FREE: u32 = 11;
const NODE_CONDITIONAL: u32 = 13;

impl Op {
    /// The type of the node this operation is.
    fn node_type(&self) -> u32 {
        match self {
            Op::Launch { .. } => NODE_KERNEL,
            Op::Memset { .. } => NODE_MEMSET,
            Op::CopyDtoD { .. } | Op::CopyIn { .. } | Op::CopyOut { .. } => NODE_MEMCPY,
            Op::Record { .. } => NODE_EVENT_RECORD,
            Op::Host { .. } => NODE_HOST,
            Op::Conditional { .. } => NODE_CONDITIONAL,
            Op::Removed => NODE_EMPTY,
        }
    }
}

/// A graph (`cuStreamEndCapture`) or an executable graph
/// (`cuGraphInstantiate*`).
struct GraphObj {
    ctx: u64,
    ops: Arc<Vec<Op>>,
    /// Memory the graph allocated (stream-ordered allocations captured in
    /// it), held too by the executable graphs made of it: it is freed when
    /// the last of them goes (`graph_memory`).
    memory: Vec<u64>,
    /// For an executable graph, the operations of nodes disabled in it
    /// (`cuGraphNodeSetEnabled`).
    disabled: HashSet<usize>,
    /// For an executable graph, the graph it was made from (whose nodes
    /// name its operations); for a graph, itself or 0.
    source: u64,
}

/// `CUstreamCaptureMode`: global, thread-local, relaxed.
const CAPTURE_MODE_RELAXED: u32 = 2;

struct EventObj {
    ctx: u64,
    flags: u32,
    recorded: Option<Instant>,
    /// The copy engine's last copy when it was recorded.
    copies: u64,
    /// The stream whose capture it was last recorded in, if it was.
    captured_in: Option<u64>,
}

struct HostAlloc {
    ctx: u64,
    len: u64,
    _mapping: Mapping,
}

/// A CUDA array: packed texels in a mapping of its own (not a device
/// allocation, so no device pointer reaches it).
struct ArrayObj {
    ctx: u64,
    device: usize,
    shape: ArrayShape,
    charged: u64,
    mapping: Mapping,
}

/// What a texture or surface object reads (`CUDA_RESOURCE_DESC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resource {
    /// `CU_RESOURCE_TYPE_ARRAY`.
    Array(u64),
    /// `CU_RESOURCE_TYPE_LINEAR`.
    Linear {
        ptr: u64,
        format: u32,
        channels: u32,
        size: u64,
    },
    /// `CU_RESOURCE_TYPE_PITCH2D`.
    Pitch2D {
        ptr: u64,
        format: u32,
        channels: u32,
        width: u64,
        height: u64,
        pitch: u64,
    },
}

/// `CUDA_TEXTURE_DESC`, as given.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct TexDesc {
    pub address: [u32; 3],
    pub filter: u32,
    pub flags: u32,
    pub max_anisotropy: u32,
    pub mipmap_filter: u32,
    pub mipmap_bias: f32,
    pub min_mipmap_clamp: f32,
    pub max_mipmap_clamp: f32,
    pub border: [f32; 4],
}

struct TexObj {
    ctx: u64,
    resource: Resource,
    desc: TexDesc,
}

struct SurfObj {
    ctx: u64,
    array: u64,
}

/// One side of a 2D or 3D copy (`CUDA_MEMCPY2D` / `CUDA_MEMCPY3D`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Memory {
    Host(u64),
    Device(u64),
    Array(u64),
    /// `CU_MEMORYTYPE_UNIFIED`: device memory if the address is in an
    /// allocation, host memory otherwise.
    Unified(u64),
}

/// One side of a copy with its offsets: `x` in bytes, `y` rows, `z`
/// slices; `pitch` and `rows` (rows per slice) for host and device sides
/// (arrays have their own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyEnd {
    pub memory: Memory,
    pub x: u64,
    pub y: u64,
    pub z: u64,
    pub pitch: u64,
    pub rows: u64,
}

/// A 2D (`depth` 1) or 3D copy of `width` bytes × `height` rows × `depth`
/// slices.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Copy3d {
    pub src: CopyEnd,
    pub dst: CopyEnd,
    pub width: u64,
    pub height: u64,
    pub depth: u64,
}

/// A copy side checked and placed: first byte, row and slice strides, and
/// for host memory the range it spans.
struct Placed {
    addr: u64,
    pitch: u64,
    slice: u64,
    host: Option<(u64, u64)>,
}

/// `CU_DEVICE_ATTRIBUTE_TEXTURE_ALIGNMENT` and `_TEXTURE_PITCH_ALIGNMENT`.
const TEXTURE_ALIGNMENT: u64 = 512;
const TEXTURE_PITCH_ALIGNMENT: u64 = 32;
/// `CU_DEVICE_ATTRIBUTE_MAXIMUM_TEXTURE1D_LINEAR_WIDTH`, `TEXTURE2D_LINEAR_*`.
const MAX_TEXTURE_LINEAR_ELEMENTS: u64 = 1 << 28;
const MAX_TEXTURE_PITCH2D: (u64, u64, u64) = (131_072, 65_000, 2_097_120);

/// `CUlimit` defaults (0 stack size … 6 persisting L2 cache size, then 7
/// shared memory size, 8 CIG enabled and 9 CIG shared-memory fallback: 0 in
/// a context that is not a CUDA-in-graphics one; cuBLAS reads 8).
const LIMITS: [u64; 10] = [1024, 1 << 20, 8 << 20, 2, 2048, 64, 0, 0, 0, 0];
/// Number of `CUlimit` values (`CU_LIMIT_MAX`).
const LIMIT_COUNT: i32 = 10;

const EVENT_DISABLE_TIMING: u32 = 0x2;
const EVENT_INTERPROCESS: u32 = 0x4;

/// Grid, block and stream of one launch.
#[derive(Debug, Clone, Copy)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
    pub stream: u64,
}

/// A launch's grid, block and dynamic shared memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeShape {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
}

/// The whole simulated driver.
/// The kinds of object whose handles are given again, each from its own
/// freed ones, as a real driver's allocator reuses memory of one size for
/// objects of one type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Module,
    Function,
    Library,
    Kernel,
    Stream,
    Event,
    Exec,
    Graph,
    Context,
}

pub struct Driver {
    devices: Vec<Device>,
    /// Distinguishes this simulated machine's device UUIDs.
    machine_id: u16,
    /// `GPUPOOL_SOFT_SKIP_UNKNOWN_KERNELS=1`: launches of kernels this
    /// double cannot run succeed without running (their results are not
    /// computed). For measuring what a real program asks of the driver
    /// (calls, round trips, bytes per step) past its first unknown kernel.
    skip_unknown: bool,
    next_handle: u64,
    /// `GPUPOOL_SOFT_REUSE_HANDLES` (on unless `0`): handles of unloaded modules, their
    /// functions, unloaded libraries and their kernels, and destroyed
    /// contexts, streams, events, graphs and executable graphs, are given out again, last
    /// freed first, as a real driver's allocator gives a later object the
    /// address of a freed one. None: every handle is new.
    reusable: Option<HashMap<Kind, Vec<u64>>>,
    /// Whether the devices are linked, each to each
    /// (`GPUPOOL_SOFT_PEER_ACCESS`, on unless `0`): see [`peer`].
    peer_links: bool,
    /// `CUDA_LAUNCH_BLOCKING=1`: a launch answers the fault its kernel hit.
    launch_blocking: bool,
    /// `GPUPOOL_SOFT_ONE_MODEL=1`: every GPU has one name
    /// ([`Driver::device_name`]).
    one_model: bool,
    /// `(context, peer context)` pairs whose peer access is enabled.
    peers: HashSet<(u64, u64)>,
    contexts: HashMap<u64, Context>,
    /// Handles of destroyed (non-primary) contexts.
    retired: HashSet<u64>,
    allocs: AllocationMap,
    host_allocs: BTreeMap<u64, HostAlloc>,
    modules: HashMap<u64, ModuleObj>,
    functions: HashMap<u64, FunctionObj>,
    libraries: HashMap<u64, LibraryObj>,
    kernels: HashMap<u64, KernelObj>,
    streams: HashMap<u64, StreamObj>,
    /// Stream attributes set (`cuStreamSetAttribute`), by (context,
    /// stream): the built-in streams have theirs per context.
    stream_attrs: HashMap<(u64, u64), HashMap<u32, [u8; STREAM_ATTR_BYTES]>>,
    /// JIT linkers.
    links: HashMap<u64, LinkObj>,
    /// Nodes of graphs built node by node -> their graph.
    nodes: HashMap<u64, u64>,
    /// Kernel nodes -> the index of their launch in their graph.
    node_ops: HashMap<u64, usize>,
    /// Child graph nodes -> the range of their graph's operations that are
    /// the child's (start, count).
    child_ops: HashMap<u64, (usize, usize)>,
    /// Event wait nodes -> the event they wait for (they have no
    /// operation here).
    event_waits: HashMap<u64, u64>,
    /// Every node's `CUgraphNodeType`.
    node_types: HashMap<u64, u32>,
    /// Allocation nodes -> (address, size); free nodes -> (address, 0).
    node_memory: HashMap<u64, (u64, u64)>,
    /// Kernel nodes' launch attributes set (`cuGraphKernelNodeSetAttribute`).
    node_attrs: HashMap<u64, HashMap<u32, [u8; graphedit::ATTR_VALUE_BYTES]>>,
    /// (node, clone) -> the node it became in that clone (`cuGraphClone`).
    clones: HashMap<(u64, u64), u64>,
    /// Child graph nodes -> their graph, once asked for
    /// (`cuGraphChildGraphNodeGetGraph`).
    child_graphs: HashMap<u64, u64>,
    /// Node -> the nodes it follows, with the edges' data
    /// (`CUgraphEdgeData` as a word; 0 for a default edge).
    node_deps: HashMap<u64, Vec<(u64, u64)>>,
    /// Allocations that are graphs' memory (made in a capture), until freed
    /// outside one or their graphs go.
    graph_owned: HashSet<u64>,
    /// Graph memory -> how many graphs and executable graphs hold it.
    graph_memory: HashMap<u64, u32>,
    events: HashMap<u64, EventObj>,
    /// Stream waits for a value not yet written, and the streams and
    /// event records behind them ([`crate::waits`]).
    waits: crate::waits::Waits,
    graphs: HashMap<u64, GraphObj>,
    execs: HashMap<u64, GraphObj>,
    /// Memory pools (`cuMemPool*`): each device's default one is made at
    /// its first use.
    pools: HashMap<u64, PoolObj>,
    /// Per device: (default pool, current pool), once made.
    device_pools: HashMap<usize, (u64, u64)>,
    /// Stream-ordered allocations -> their pool.
    pool_allocs: HashMap<u64, u64>,
    /// Reserved address ranges (`cuMemAddressReserve`) by base.
    reservations: BTreeMap<u64, Mapping>,
    /// Physical memory (`cuMemCreate`) by handle.
    physical: HashMap<u64, Physical>,
    /// CUDA arrays, texture objects and surface objects by handle.
    arrays: HashMap<u64, ArrayObj>,
    textures: HashMap<u64, TexObj>,
    surfaces: HashMap<u64, SurfObj>,
    /// Memory and events shared with other processes.
    ipc: ipc::Ipc,
    /// Conditional handles, conditional nodes, and the bodies of those
    /// nodes -> the graph holding the node.
    conditionals: HashMap<u64, CondObj>,
    cond_nodes: HashMap<u64, CondNode>,
    body_of: HashMap<u64, u64>,
    /// Green contexts and resource descriptors.
    green: green::Green,
}

/// Physical memory for `cuMemMap`: a shared-memory file, so that one piece
/// can be mapped at several addresses.
struct Physical {
    fd: std::os::fd::OwnedFd,
    size: u64,
    device: usize,
    /// `CUmemAllocationHandleType`s it may be exported as.
    handle_types: u32,
    /// Imported from another process (`cuMemImportFromShareableHandle`):
    /// charged there, not here.
    imported: bool,
    /// References to the handle: its creation or import, and each
    /// `cuMemRetainAllocationHandle`; each `cuMemRelease` gives one up.
    refs: u32,
}

/// `CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR`.
const HANDLE_TYPE_POSIX_FD: u32 = 1;

/// A memory pool. Frees take effect at once here (work runs at enqueue), so
/// the memory a pool holds is what is in use.
struct PoolObj {
    device: usize,
    /// Made by `cuMemPoolCreate` (a default pool cannot be destroyed).
    created: bool,
    /// 0: no limit of its own.
    max_size: u64,
    /// `CU_MEMPOOL_ATTR_REUSE_*` (1 to 3) and `RELEASE_THRESHOLD` (4).
    reuse: [i32; 3],
    threshold: u64,
    used: u64,
    used_high: u64,
    reserved_high: u64,
    /// `CUmemAllocationHandleType`s it may be exported as.
    handle_types: u32,
    /// Imported from another process (`cuMemPoolImportFromShareableHandle`):
    /// that process and its pool. Nothing is allocated from it here.
    imported: Option<(u32, u64)>,
    /// The other devices given access to the pool's memory
    /// (`cuMemPoolSetAccess`), one bit each.
    access: u64,
}

/// Checks `CUctx_flags`: scheduling mode (0, 1, 2 or 4) plus known bits.
fn check_ctx_flags(flags: u32) -> CuResult<()> {
    const KNOWN: u32 = 0x07 | 0x08 | 0x10 | 0x20 | 0x40 | 0x80;
    if flags & !KNOWN != 0 || ![0, 1, 2, 4].contains(&(flags & 0x07)) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    Ok(())
}

fn default_attrs(module: &ptx::Module, entry: &ptx::Entry) -> FuncAttrs {
    let mut a = [0; FUNC_ATTRIBUTE_COUNT];
    a[ATTR_MAX_THREADS] = entry.max_threads_per_block() as i32;
    a[4] = 16; // NUM_REGS
    a[ATTR_PTX_VERSION] = module.target_sm as i32;
    a[6] = 90; // BINARY_VERSION: JIT-compiled for the sm_90 device
    a[ATTR_MAX_DYNAMIC_SHARED] = MAX_SHARED_PER_BLOCK;
    a[9] = -1; // PREFERRED_SHARED_MEMORY_CARVEOUT: no preference
    a
}

/// Applies `cuFuncSetAttribute` / `cuKernelSetAttribute` to an attribute set.
/// `CUjitInputType`.
const JIT_INPUT_CUBIN: u32 = 0;
const JIT_INPUT_PTX: u32 = 1;
const JIT_INPUT_FATBINARY: u32 = 2;

/// Bytes of a `CUstreamAttrValue`.
pub const STREAM_ATTR_BYTES: usize = 64;
/// The `CUlaunchAttributeID`s valid for streams.
const STREAM_ATTR_ACCESS_POLICY_WINDOW: u32 = 1;
const STREAM_ATTR_SYNCHRONIZATION_POLICY: u32 = 3;
const STREAM_ATTR_PRIORITY: u32 = 8;
const STREAM_ATTR_MEM_SYNC_DOMAIN_MAP: u32 = 9;
const STREAM_ATTR_MEM_SYNC_DOMAIN: u32 = 10;
const STREAM_ATTR_NVLINK_UTIL_CENTRIC: u32 = 16;
const STREAM_ATTRS: [u32; 6] = [
    STREAM_ATTR_ACCESS_POLICY_WINDOW,
    STREAM_ATTR_SYNCHRONIZATION_POLICY,
    STREAM_ATTR_PRIORITY,
    STREAM_ATTR_MEM_SYNC_DOMAIN_MAP,
    STREAM_ATTR_MEM_SYNC_DOMAIN,
    STREAM_ATTR_NVLINK_UTIL_CENTRIC,
];
/// An H100's `CU_DEVICE_ATTRIBUTE_MAX_ACCESS_POLICY_WINDOW_SIZE`.
const MAX_ACCESS_POLICY_WINDOW: u64 = 134_213_632;

/// `CU_FUNC_CACHE_PREFER_NONE`; `CU_FUNC_CACHE_PREFER_EQUAL` (3) is the last.
const FUNC_CACHE_PREFER_NONE: u32 = 0;

fn cache_config(config: u32) -> CuResult<u32> {
    if config <= 3 {
        Ok(config)
    } else {
        Err(CUDA_ERROR_INVALID_VALUE)
    }
}

fn set_attr(attrs: &mut FuncAttrs, attrib: i32, value: i32) -> CuResult<()> {
    let ok = match attrib {
        8 => (0..=MAX_SHARED_PER_BLOCK_OPTIN).contains(&value),
        9 => (-1..=100).contains(&value),
        11..=13 => (0..=16).contains(&value),
        14 => (0..=1).contains(&value),
        15 => (0..=2).contains(&value),
        _ => false,
    };
    if !ok {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    attrs[attrib as usize] = value;
    Ok(())
}

fn get_attr(attrs: &FuncAttrs, attrib: i32) -> CuResult<i32> {
    usize::try_from(attrib)
        .ok()
        .and_then(|i| attrs.get(i).copied())
        .ok_or(CUDA_ERROR_INVALID_VALUE)
}

/// Value of a `CUdevice_attribute` for the simulated H100-like device
/// (attributes not listed are 0; the last arm is the intended fallback).
#[allow(clippy::match_overlapping_arm)]
fn device_attribute(attrib: i32, ordinal: usize) -> CuResult<i32> {
    Ok(match attrib {
        1 => MAX_THREADS_PER_BLOCK as i32,
        2 | 3 => 1024,
        4 => 64,
        5 => i32::MAX,
        6 | 7 => 65535,
        8 => MAX_SHARED_PER_BLOCK,
        9 => 65536,      // TOTAL_CONSTANT_MEMORY
        10 => 32,        // WARP_SIZE
        11 => i32::MAX,  // MAX_PITCH
        12 => 65536,     // MAX_REGISTERS_PER_BLOCK
        13 => 1_980_000, // CLOCK_RATE (kHz)
        14 => 512,       // TEXTURE_ALIGNMENT
        15 => 1,         // GPU_OVERLAP
        16 => SM_COUNT,
        19 => 1, // CAN_MAP_HOST_MEMORY
        21 => 131072,
        22 => 131072,
        23 => 65536,
        24..=26 => 16384,
        27 | 28 => 32_768,           // MAXIMUM_TEXTURE2D_LAYERED_WIDTH / _HEIGHT
        29 => 2048,                  // MAXIMUM_TEXTURE2D_LAYERED_LAYERS
        30 => 512,                   // SURFACE_ALIGNMENT
        42 => 32_768,                // MAXIMUM_TEXTURE1D_LAYERED_WIDTH
        43 => 2048,                  // MAXIMUM_TEXTURE1D_LAYERED_LAYERS
        44 => 1,                     // CAN_TEX2D_GATHER
        45 | 46 => 32_768,           // MAXIMUM_TEXTURE2D_GATHER_WIDTH / _HEIGHT
        47 | 48 => 8192,             // MAXIMUM_TEXTURE3D_WIDTH / _HEIGHT_ALTERNATE
        49 => 32_768,                // MAXIMUM_TEXTURE3D_DEPTH_ALTERNATE
        52 | 53 => 32_768,           // MAXIMUM_TEXTURECUBEMAP(_LAYERED)_WIDTH
        54 => 2046,                  // MAXIMUM_TEXTURECUBEMAP_LAYERED_LAYERS
        55 => 32_768,                // MAXIMUM_SURFACE1D_WIDTH
        56 => 131_072,               // MAXIMUM_SURFACE2D_WIDTH
        57 => 65_536,                // MAXIMUM_SURFACE2D_HEIGHT
        58..=60 => 16_384,           // MAXIMUM_SURFACE3D_*
        61 => 32_768,                // MAXIMUM_SURFACE1D_LAYERED_WIDTH
        62 => 2048,                  // MAXIMUM_SURFACE1D_LAYERED_LAYERS
        63 | 64 => 32_768,           // MAXIMUM_SURFACE2D_LAYERED_WIDTH / _HEIGHT
        65 => 2048,                  // MAXIMUM_SURFACE2D_LAYERED_LAYERS
        66 | 67 => 32_768,           // MAXIMUM_SURFACECUBEMAP(_LAYERED)_WIDTH
        68 => 2046,                  // MAXIMUM_SURFACECUBEMAP_LAYERED_LAYERS
        69 => 1 << 28,               // MAXIMUM_TEXTURE1D_LINEAR_WIDTH
        70 => 131_072,               // MAXIMUM_TEXTURE2D_LINEAR_WIDTH
        71 => 65_000,                // MAXIMUM_TEXTURE2D_LINEAR_HEIGHT
        72 => 2_097_120,             // MAXIMUM_TEXTURE2D_LINEAR_PITCH
        73 | 74 => 32_768,           // MAXIMUM_TEXTURE2D_MIPMAPPED_WIDTH / _HEIGHT
        77 => 32_768,                // MAXIMUM_TEXTURE1D_MIPMAPPED_WIDTH
        31 => 1,                     // CONCURRENT_KERNELS
        32 => 1,                     // ECC_ENABLED
        33 => 0x18 + ordinal as i32, // PCI_BUS_ID
        34 => 0,                     // PCI_DEVICE_ID
        36 => 2_619_000,             // MEMORY_CLOCK_RATE (kHz)
        37 => 5120,                  // GLOBAL_MEMORY_BUS_WIDTH
        38 => 52_428_800,            // L2_CACHE_SIZE
        39 => MAX_THREADS_PER_SM,
        40 => 3,      // ASYNC_ENGINE_COUNT
        41 => 1,      // UNIFIED_ADDRESSING
        50 => 0,      // PCI_DOMAIN_ID
        51 => 32,     // TEXTURE_PITCH_ALIGNMENT
        75 => 9,      // COMPUTE_CAPABILITY_MAJOR
        76 => 0,      // COMPUTE_CAPABILITY_MINOR
        78 => 1,      // STREAM_PRIORITIES_SUPPORTED
        79 | 80 => 1, // GLOBAL/LOCAL_L1_CACHE_SUPPORTED
        81 => MAX_SHARED_PER_SM,
        82 => 65536,          // MAX_REGISTERS_PER_MULTIPROCESSOR
        85 => ordinal as i32, // MULTI_GPU_BOARD_GROUP_ID
        87 => 2,              // SINGLE_TO_DOUBLE_PRECISION_PERF_RATIO
        90 => 1,              // COMPUTE_PREEMPTION_SUPPORTED
        95 => 1,              // COOPERATIVE_LAUNCH (cuLaunchCooperativeKernel runs)
        97 => MAX_SHARED_PER_BLOCK_OPTIN,
        106 => 32,          // MAX_BLOCKS_PER_MULTIPROCESSOR
        108 => 78_643_200,  // MAX_PERSISTING_L2_CACHE_SIZE
        109 => 134_213_632, // MAX_ACCESS_POLICY_WINDOW_SIZE
        111 => RESERVED_SHARED_PER_BLOCK,
        102 => 1, // VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
        115 => 1, // MEMORY_POOLS_SUPPORTED
        // GPUDIRECT_RDMA_SUPPORTED, DMA_BUF_SUPPORTED, MULTICAST_SUPPORTED:
        // as an H100 of an NVSwitch system reports them.
        116 | 124 | 132 => 1,
        120 => 1,        // CLUSTER_LAUNCH
        126 => 4,        // MEM_SYNC_DOMAIN_COUNT
        131 | 134 => -1, // NUMA_ID, HOST_NUMA_ID
        1..=150 => 0,
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    })
}

/// The texture and surface objects of one launch's context.
struct LaunchObjects<'a> {
    driver: &'a Driver,
    ctx: u64,
}

impl texture::Objects for LaunchObjects<'_> {
    fn pool_access(&self, base: u64) -> bool {
        let device = self.driver.ctx_device(self.ctx);
        let pool = self
            .driver
            .pool_allocs
            .get(&base)
            .and_then(|p| self.driver.pools.get(p));
        pool.is_some_and(|p| p.access & (1 << device) != 0)
    }

    fn texture(&self, tex: u64) -> CuResult<(Image, Sampler)> {
        let t = self
            .driver
            .textures
            .get(&tex)
            .filter(|t| t.ctx == self.ctx)
            .ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
        let image = self.driver.image(self.ctx, &t.resource)?;
        let sampler = Sampler {
            normalized: t.desc.flags & texture::TRSF_NORMALIZED_COORDINATES != 0,
            address: [t.desc.address[0], t.desc.address[1]],
            linear: t.desc.filter == 1,
            border: t.desc.border[0],
        };
        Ok((image, sampler))
    }

    fn set_conditional(&self, handle: u64, value: u32) -> CuResult<()> {
        let c = self
            .driver
            .conditionals
            .get(&handle)
            .ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
        c.value.store(value, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    fn surface(&self, surf: u64) -> CuResult<Image> {
        let s = self
            .driver
            .surfaces
            .get(&surf)
            .filter(|s| s.ctx == self.ctx)
            .ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
        self.driver.image(self.ctx, &Resource::Array(s.array))
    }
}

impl Driver {
    fn new(count: usize, capacity: u64) -> Driver {
        let mut d = Driver {
            devices: Vec::new(),
            machine_id: 0,
            skip_unknown: false,
            next_handle: FIRST_HANDLE,
            reusable: None,
            peer_links: true,
            launch_blocking: false,
            one_model: false,
            peers: HashSet::new(),
            contexts: HashMap::new(),
            retired: HashSet::new(),
            allocs: AllocationMap::default(),
            host_allocs: BTreeMap::new(),
            modules: HashMap::new(),
            functions: HashMap::new(),
            libraries: HashMap::new(),
            kernels: HashMap::new(),
            streams: HashMap::new(),
            stream_attrs: HashMap::new(),
            links: HashMap::new(),
            nodes: HashMap::new(),
            node_ops: HashMap::new(),
            child_ops: HashMap::new(),
            event_waits: HashMap::new(),
            node_types: HashMap::new(),
            node_memory: HashMap::new(),
            node_attrs: HashMap::new(),
            clones: HashMap::new(),
            child_graphs: HashMap::new(),
            node_deps: HashMap::new(),
            graph_owned: HashSet::new(),
            graph_memory: HashMap::new(),
            events: HashMap::new(),
            waits: crate::waits::Waits::default(),
            graphs: HashMap::new(),
            execs: HashMap::new(),
            pools: HashMap::new(),
            device_pools: HashMap::new(),
            pool_allocs: HashMap::new(),
            reservations: BTreeMap::new(),
            physical: HashMap::new(),
            arrays: HashMap::new(),
            textures: HashMap::new(),
            surfaces: HashMap::new(),
            ipc: ipc::Ipc::default(),
            conditionals: HashMap::new(),
            cond_nodes: HashMap::new(),
            body_of: HashMap::new(),
            green: green::Green::default(),
        };
        for physical in 0..count {
            let primary_handle = d.handle();
            d.devices.push(Device {
                physical,
                capacity,
                used: 0,
                primary_handle,
                primary_refs: 0,
                primary_flags: 0,
            });
        }
        d
    }

    fn handle(&mut self) -> u64 {
        let h = self.next_handle;
        self.next_handle += 0x10;
        h
    }

    /// A handle for a new object of `kind`: the last freed one of that
    /// kind, where handles are given again, else a new one.
    fn handle_of(&mut self, kind: Kind) -> u64 {
        match self.reusable.as_mut().and_then(|r| r.get_mut(&kind)).and_then(Vec::pop) {
            Some(h) => h,
            None => self.handle(),
        }
    }

    /// Handles of `kind` no object holds any more: given out again (the
    /// last one first) unless `GPUPOOL_SOFT_REUSE_HANDLES=0`.
    fn free_handles(&mut self, kind: Kind, gone: impl IntoIterator<Item = u64>) {
        if let Some(free) = self.reusable.as_mut() {
            free.entry(kind).or_default().extend(gone);
        }
    }

    // ----- devices -----

    /// Whether `dev` is a device here (`CUDA_ERROR_INVALID_DEVICE` if not).
    pub fn check_device(&self, dev: i32) -> CuResult<()> {
        self.device(dev).map(drop)
    }

    fn device(&self, dev: i32) -> CuResult<usize> {
        usize::try_from(dev)
            .ok()
            .filter(|&d| d < self.devices.len())
            .ok_or(CUDA_ERROR_INVALID_DEVICE)
    }

    pub fn device_count(&self) -> i32 {
        self.devices.len() as i32
    }

    pub fn device_get(&self, ordinal: i32) -> CuResult<i32> {
        self.device(ordinal).map(|d| d as i32)
    }

    /// Each GPU's own name, `gpupool simulated GPU <n> (soft driver)`, so
    /// that tests tell them apart; with `GPUPOOL_SOFT_ONE_MODEL=1` one name
    /// for all, `gpupool simulated GPU (soft driver)`, as the GPUs of a real
    /// server share their model's (XLA runs one computation over several
    /// devices only if they are of one kind).
    pub fn device_name(&self, dev: i32) -> CuResult<String> {
        let d = self.device(dev)?;
        Ok(if self.one_model {
            "gpupool simulated GPU (soft driver)".to_string()
        } else {
            format!("gpupool simulated GPU {} (soft driver)", self.devices[d].physical)
        })
    }

    pub fn device_uuid(&self, dev: i32) -> CuResult<[u8; 16]> {
        let d = self.device(dev)?;
        Ok(self.physical_uuid(self.devices[d].physical))
    }

    /// The UUID of the machine's simulated GPU `physical`.
    fn physical_uuid(&self, physical: usize) -> [u8; 16] {
        let mut uuid = *b"gpupool-softgpu\0";
        if self.machine_id != 0 {
            uuid[13..15].copy_from_slice(&self.machine_id.to_be_bytes());
        }
        uuid[15] = physical as u8;
        uuid
    }

    /// Show only the GPUs `CUDA_VISIBLE_DEVICES` names, in its order, as
    /// the driver does; `false` when it names none.
    fn show_only(&mut self, value: &str) -> bool {
        let uuids: Vec<[u8; 16]> = (0..self.devices.len()).map(|p| self.physical_uuid(p)).collect();
        let chosen = gpupool_proto::visible::select(value, &uuids);
        let mut all: Vec<Option<Device>> = std::mem::take(&mut self.devices).into_iter().map(Some).collect();
        self.devices = chosen.iter().filter_map(|&p| all[p].take()).collect();
        !self.devices.is_empty()
    }

    pub fn device_total_mem(&self, dev: i32) -> CuResult<u64> {
        let d = self.device(dev)?;
        Ok(self.devices[d].capacity)
    }

    pub fn device_attribute(&self, attrib: i32, dev: i32) -> CuResult<i32> {
        let d = self.device(dev)?;
        device_attribute(attrib, self.devices[d].physical)
    }

    // ----- contexts -----

    /// The calling thread's current context (which must still exist).
    fn current_ctx(&self) -> CuResult<u64> {
        let ctx = current();
        if ctx == 0 {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        if self.contexts.contains_key(&ctx) {
            Ok(ctx)
        } else if self.retired.contains(&ctx) || self.is_primary_handle(ctx) {
            Err(CUDA_ERROR_CONTEXT_IS_DESTROYED)
        } else {
            Err(CUDA_ERROR_INVALID_CONTEXT)
        }
    }

    fn is_primary_handle(&self, ctx: u64) -> bool {
        self.devices.iter().any(|d| d.primary_handle == ctx)
    }

    /// Fails with the context's sticky error, if it has one.
    fn healthy(&self, ctx: u64) -> CuResult<u64> {
        match self.contexts.get(&ctx) {
            None => Err(CUDA_ERROR_CONTEXT_IS_DESTROYED),
            Some(c) => match c.sticky {
                Some(e) => Err(e),
                None => Ok(ctx),
            },
        }
    }

    /// The current context, which must exist and be free of sticky errors.
    fn active_ctx(&self) -> CuResult<u64> {
        self.current_ctx().and_then(|c| self.healthy(c))
    }

    fn new_context(&mut self, handle: u64, device: usize, flags: u32, primary: bool) {
        self.contexts.insert(
            handle,
            Context {
                device,
                flags,
                primary,
                sticky: None,
                limits: LIMITS,
                cache_config: FUNC_CACHE_PREFER_NONE,
            },
        );
    }

    /// Frees everything a context owns and removes it.
    fn drop_context(&mut self, ctx: u64) {
        let Some(c) = self.contexts.remove(&ctx) else {
            return;
        };
        self.forget_peers(ctx);
        let modules: Vec<u64> = self
            .modules
            .iter()
            .filter(|(_, m)| m.ctx == ctx)
            .map(|(h, _)| *h)
            .collect();
        for m in modules {
            self.drop_module(m);
        }
        for a in self.allocs.remove_where(|a| a.ctx == ctx) {
            self.devices[a.device].used -= a.charged;
        }
        self.ipc_forget_gone();
        let allocs = &self.allocs;
        self.graph_owned.retain(|p| allocs.get(*p).is_some());
        self.graph_memory.retain(|p, _| allocs.get(*p).is_some());
        self.host_allocs.retain(|_, h| h.ctx != ctx);
        let devices = &mut self.devices;
        self.arrays.retain(|_, a| {
            if a.ctx == ctx {
                devices[a.device].used -= a.charged;
            }
            a.ctx != ctx
        });
        self.textures.retain(|_, t| t.ctx != ctx);
        self.surfaces.retain(|_, t| t.ctx != ctx);
        let gone: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.ctx == ctx)
            .map(|(h, _)| *h)
            .collect();
        self.streams.retain(|_, s| s.ctx != ctx);
        self.stream_attrs.retain(|(c, _), _| *c != ctx);
        self.free_handles(Kind::Stream, gone);
        self.events.retain(|_, e| e.ctx != ctx);
        self.graphs.retain(|_, g| g.ctx != ctx);
        self.execs.retain(|_, g| g.ctx != ctx);
        if !c.primary {
            self.retired.insert(ctx);
            self.free_handles(Kind::Context, [ctx]);
        }
        if current() == ctx && !c.primary {
            set_current(0);
        }
    }

    pub fn ctx_create(&mut self, flags: u32, dev: i32) -> CuResult<u64> {
        let d = self.device(dev)?;
        check_ctx_flags(flags)?;
        let h = self.handle_of(Kind::Context);
        self.retired.remove(&h);
        self.new_context(h, d, flags, false);
        set_current(h);
        Ok(h)
    }

    pub fn ctx_destroy(&mut self, ctx: u64) -> CuResult<()> {
        match self.contexts.get(&ctx) {
            Some(c) if !c.primary && !self.is_green_context(ctx) => {
                self.drop_context(ctx);
                Ok(())
            }
            _ => Err(CUDA_ERROR_INVALID_CONTEXT),
        }
    }

    pub fn ctx_set_current(&mut self, ctx: u64) -> CuResult<()> {
        if ctx == 0 || self.contexts.contains_key(&ctx) || self.is_primary_handle(ctx) {
            set_current(ctx);
            Ok(())
        } else {
            Err(CUDA_ERROR_INVALID_CONTEXT)
        }
    }

    pub fn ctx_get_current(&self) -> u64 {
        current()
    }

    /// `cuCtxSynchronize`: not while a stream of the context captures in
    /// global or thread-local mode (the capture is invalidated).
    /// Answers the unmet stream waits its streams are behind.
    pub fn ctx_synchronize(&mut self) -> CuResult<Vec<u64>> {
        let ctx = self.active_ctx()?;
        let mut refused = false;
        for s in self.streams.values_mut().filter(|s| s.ctx == ctx) {
            if let Some(c) = s.capture.as_mut().filter(|c| c.mode != CAPTURE_MODE_RELAXED) {
                c.invalidated = true;
                refused = true;
            }
        }
        if refused {
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        let streams: Vec<u64> = self
            .streams
            .iter()
            .filter(|(_, s)| s.ctx == ctx)
            .map(|(h, _)| *h)
            .collect();
        Ok(self.waits.of_streams(streams))
    }

    pub fn ctx_get_limit(&self, limit: i32) -> CuResult<u64> {
        let ctx = self.current_ctx()?;
        let i = usize::try_from(limit)
            .ok()
            .filter(|&l| l < LIMIT_COUNT as usize)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        self.contexts[&ctx]
            .limits
            .get(i)
            .copied()
            .ok_or(CUDA_ERROR_UNSUPPORTED_LIMIT)
    }

    pub fn ctx_set_limit(&mut self, limit: i32, value: u64) -> CuResult<()> {
        let ctx = self.active_ctx()?;
        let i = usize::try_from(limit)
            .ok()
            .filter(|&l| l < LIMIT_COUNT as usize)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let value = match i {
            0 | 1 | 2 | 4 => value,
            3 => value.min(24),                            // device runtime sync depth
            5 => value.clamp(32, 128).next_power_of_two(), // L2 fetch granularity
            6 => value.min(78_643_200),
            _ => return Err(CUDA_ERROR_UNSUPPORTED_LIMIT),
        };
        if let Some(c) = self.contexts.get_mut(&ctx) {
            c.limits[i] = value;
        }
        Ok(())
    }

    pub fn ctx_set_cache_config(&mut self, config: u32) -> CuResult<()> {
        let ctx = self.active_ctx()?;
        let config = cache_config(config)?;
        if let Some(c) = self.contexts.get_mut(&ctx) {
            c.cache_config = config;
        }
        Ok(())
    }

    pub fn ctx_get_cache_config(&self) -> CuResult<u32> {
        let ctx = self.active_ctx()?;
        Ok(self.contexts[&ctx].cache_config)
    }

    pub fn ctx_api_version(&self, ctx: u64) -> CuResult<u32> {
        if ctx == 0 {
            self.current_ctx()?;
        } else if !self.contexts.contains_key(&ctx) {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        Ok(DRIVER_VERSION as u32)
    }

    // ----- primary contexts -----

    pub fn primary_retain(&mut self, dev: i32) -> CuResult<u64> {
        let d = self.device(dev)?;
        let (h, flags, refs) = {
            let dv = &self.devices[d];
            (dv.primary_handle, dv.primary_flags, dv.primary_refs)
        };
        if refs == 0 {
            self.new_context(h, d, flags, true);
        }
        self.devices[d].primary_refs = refs.saturating_add(1);
        Ok(h)
    }

    pub fn primary_release(&mut self, dev: i32) -> CuResult<()> {
        let d = self.device(dev)?;
        let dv = &mut self.devices[d];
        if dv.primary_refs == 0 {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        dv.primary_refs -= 1;
        if dv.primary_refs == 0 {
            let h = dv.primary_handle;
            self.drop_context(h);
        }
        Ok(())
    }

    pub fn primary_set_flags(&mut self, dev: i32, flags: u32) -> CuResult<()> {
        let d = self.device(dev)?;
        check_ctx_flags(flags)?;
        self.devices[d].primary_flags = flags;
        let h = self.devices[d].primary_handle;
        if let Some(c) = self.contexts.get_mut(&h) {
            c.flags = flags;
        }
        Ok(())
    }

    pub fn primary_get_state(&self, dev: i32) -> CuResult<(u32, bool)> {
        let d = self.device(dev)?;
        let dv = &self.devices[d];
        Ok((dv.primary_flags, dv.primary_refs > 0))
    }

    /// Destroys the primary context's resources and state (sticky errors
    /// included); it is inactive afterwards until retained again.
    pub fn primary_reset(&mut self, dev: i32) -> CuResult<()> {
        let d = self.device(dev)?;
        let h = self.devices[d].primary_handle;
        self.drop_context(h);
        self.devices[d].primary_refs = 0;
        Ok(())
    }

    // ----- memory -----

    fn ctx_device(&self, ctx: u64) -> usize {
        self.contexts[&ctx].device
    }

    /// Maps and charges `size` bytes on the context's device.
    fn allocate(&mut self, ctx: u64, size: u64, kind: AllocKind) -> CuResult<u64> {
        if size == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let device = self.ctx_device(ctx);
        let charged = round_up(size, ALLOC_ALIGN).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        let dv = &self.devices[device];
        if charged > dv.capacity - dv.used {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        let len = round_up(size, page_size())
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        let mapping = Mapping::new(len).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        self.devices[device].used += charged;
        Ok(self.allocs.insert(Allocation {
            size,
            charged,
            ctx,
            device,
            kind,
            mapping,
        }))
    }

    pub fn mem_alloc(&mut self, size: u64) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        self.allocate(ctx, size, AllocKind::Device)
    }

    /// `cuMemGetAddressRange`: base and size of the allocation holding
    /// `ptr`.
    pub fn address_range(&self, ptr: u64) -> CuResult<(u64, u64)> {
        self.current_ctx()?;
        let (base, a) = self.allocs.containing(ptr, 1).ok_or(CUDA_ERROR_NOT_FOUND)?;
        Ok((base, a.size))
    }

    pub fn mem_free(&mut self, dptr: u64) -> CuResult<()> {
        self.active_ctx()?;
        match self.allocs.get(dptr) {
            Some(a) if matches!(a.kind, AllocKind::Device | AllocKind::PoolImported { .. }) => {}
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        self.release(dptr);
        Ok(())
    }

    /// Give back device allocation `dptr`, and its pool's share of it.
    fn release(&mut self, dptr: u64) {
        if let Some(a) = self.allocs.remove(dptr) {
            self.devices[a.device].used -= a.charged;
            self.ipc_forget_gone();
            if let Some(pool) = self.pool_allocs.remove(&dptr) {
                if let Some(p) = self.pools.get_mut(&pool) {
                    p.used = p.used.saturating_sub(a.size);
                }
            }
        }
    }

    // ----- virtual memory management -----

    /// `cuMemAddressReserve`: `size` a multiple of the host page, `align` a
    /// power of two or 0 (the granularity).
    pub fn mem_address_reserve(&mut self, size: u64, align: u64) -> CuResult<u64> {
        let page = page_size();
        if size == 0 || !size.is_multiple_of(page) || (align != 0 && !align.is_power_of_two()) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let align = align.max(VMM_GRANULARITY);
        let m = Mapping::reserve(size as usize, align as usize).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        let base = m.addr();
        self.reservations.insert(base, m);
        Ok(base)
    }

    /// `cuMemAddressFree` of a whole reservation with nothing mapped in it.
    pub fn mem_address_free(&mut self, ptr: u64, size: u64) -> CuResult<()> {
        match self.reservations.get(&ptr) {
            Some(m) if m.bytes() as u64 == size => {}
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        if self.allocs.any_in(ptr, size) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.reservations.remove(&ptr);
        Ok(())
    }

    /// `cuMemCreate` of pinned device memory, `size` a multiple of the
    /// granularity.
    pub fn mem_create(&mut self, size: u64, alloc_type: u32, location: (u32, i32), handle_types: u32) -> CuResult<u64> {
        if alloc_type != 1 || location.0 != 1 || size == 0 || !size.is_multiple_of(VMM_GRANULARITY) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if handle_types & !HANDLE_TYPE_POSIX_FD != 0 {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let device = self.device(location.1)?;
        let dv = &self.devices[device];
        if size > dv.capacity - dv.used {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        // SAFETY: memfd_create takes a NUL-terminated name and flags.
        let fd = unsafe { libc::memfd_create(c"gpupool-soft-physical".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        // SAFETY: fd was just created and nothing else owns it.
        let fd = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        // SAFETY: sizes the file just made (its pages are committed on
        // first touch).
        if unsafe { libc::ftruncate(std::os::fd::AsRawFd::as_raw_fd(&fd), size as libc::off_t) } != 0 {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        self.devices[device].used += size;
        let h = self.handle();
        self.physical.insert(
            h,
            Physical {
                refs: 1,
                fd,
                size,
                device,
                handle_types,
                imported: false,
            },
        );
        Ok(h)
    }

    /// `cuMemRelease`: mappings of the memory keep it until they go.
    pub fn mem_release(&mut self, handle: u64) -> CuResult<()> {
        let p = self.physical.get_mut(&handle).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        p.refs -= 1;
        if p.refs > 0 {
            return Ok(());
        }
        let p = self.physical.remove(&handle).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if !p.imported {
            self.devices[p.device].used -= p.size;
        }
        Ok(())
    }

    /// `cuMemExportToShareableHandle` as a file descriptor (the caller's to
    /// close): the memory file itself, for memory made exportable so.
    pub fn mem_export_fd(&mut self, handle: u64, handle_type: u32) -> CuResult<i32> {
        let p = self.physical.get(&handle).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if handle_type != HANDLE_TYPE_POSIX_FD {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        if p.handle_types & HANDLE_TYPE_POSIX_FD == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let fd = p.fd.try_clone().map_err(|_| CUDA_ERROR_OUT_OF_MEMORY)?;
        Ok(std::os::fd::IntoRawFd::into_raw_fd(fd))
    }

    /// `cuMemImportFromShareableHandle` of a descriptor another process's
    /// `mem_export_fd` made (the caller keeps its descriptor).
    pub fn mem_import_fd(&mut self, fd: i32, handle_type: u32) -> CuResult<u64> {
        if handle_type != HANDLE_TYPE_POSIX_FD {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        // SAFETY: only borrowed, to duplicate; a bad descriptor fails below.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
        let fd = borrowed.try_clone_to_owned().map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        let file = std::fs::File::from(fd);
        let size = file.metadata().map_err(|_| CUDA_ERROR_INVALID_VALUE)?.len();
        if size == 0 || !size.is_multiple_of(VMM_GRANULARITY) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = self.handle();
        self.physical.insert(
            h,
            Physical {
                refs: 1,
                fd: file.into(),
                size,
                device: 0,
                handle_types: HANDLE_TYPE_POSIX_FD,
                imported: true,
            },
        );
        Ok(h)
    }

    /// `cuMemMap`: every figure a multiple of the granularity; the range
    /// inside one reservation and free there.
    pub fn mem_map(&mut self, ptr: u64, size: u64, offset: u64, handle: u64) -> CuResult<()> {
        let p = self.physical.get(&handle).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let g = VMM_GRANULARITY;
        if size == 0
            || !ptr.is_multiple_of(g)
            || !size.is_multiple_of(g)
            || !offset.is_multiple_of(g)
            || offset.saturating_add(size) > p.size
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let inside = self
            .reservations
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&b, m)| ptr.checked_add(size).is_some_and(|e| e <= b + m.bytes() as u64));
        if !inside || self.allocs.any_in(ptr, size) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let device = p.device;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&p.fd);
        // SAFETY: the range lies in a live reservation and no allocation
        // (so no other placed mapping) overlaps it.
        let mapping = unsafe { Mapping::place(ptr, size as usize, fd, offset) }.ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        self.allocs.insert(Allocation {
            size,
            charged: 0,
            // No context owns mapped memory: destroying one leaves it.
            ctx: 0,
            device,
            kind: AllocKind::Mapped { handle },
            mapping,
        });
        Ok(())
    }

    /// `cuMemUnmap` of whole mappings making up `ptr .. ptr + size`.
    pub fn mem_unmap(&mut self, ptr: u64, size: u64) -> CuResult<()> {
        let end = ptr.checked_add(size).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let mut at = ptr;
        let mut bases = Vec::new();
        while at < end {
            match self.allocs.get(at) {
                Some(a) if matches!(a.kind, AllocKind::Mapped { .. }) && at + a.size <= end => {
                    bases.push(at);
                    at += a.size;
                }
                _ => return Err(CUDA_ERROR_INVALID_VALUE),
            }
        }
        for b in bases {
            self.allocs.remove(b);
        }
        Ok(())
    }

    /// `cuMemRetainAllocationHandle`: the handle of the physical memory
    /// mapped at any address of a mapping, with one more reference. Memory
    /// whose handles were all released while mapped has no handle left to
    /// give here (the real driver's handle lives on with the mapping).
    pub fn mem_retain_allocation_handle(&mut self, addr: u64) -> CuResult<u64> {
        let handle = match self.allocs.containing(addr, 1) {
            Some((_, a)) => match a.kind {
                AllocKind::Mapped { handle } => handle,
                _ => return Err(CUDA_ERROR_INVALID_VALUE),
            },
            None => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        let p = self.physical.get_mut(&handle).ok_or(CUDA_ERROR_NOT_SUPPORTED)?;
        p.refs += 1;
        Ok(handle)
    }

    /// `cuMemSetAccess`: the range must be mapped; access is always read
    /// and write here.
    pub fn mem_set_access(&mut self, ptr: u64, size: u64) -> CuResult<()> {
        match self.allocs.containing(ptr, size.max(1)) {
            Some((_, a)) if matches!(a.kind, AllocKind::Mapped { .. }) => Ok(()),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    // ----- memory pools and stream-ordered allocation -----

    fn new_pool(&mut self, device: usize, created: bool, max_size: u64) -> u64 {
        let h = self.handle();
        self.pools.insert(
            h,
            PoolObj {
                handle_types: 0,
                imported: None,
                access: 0,
                device,
                created,
                max_size,
                reuse: [1, 1, 1],
                threshold: 0,
                used: 0,
                used_high: 0,
                reserved_high: 0,
            },
        );
        h
    }

    /// The device's (default, current) pools, made at first use.
    fn device_pools(&mut self, dev: i32) -> CuResult<(u64, u64)> {
        let d = self.device(dev)?;
        if let Some(p) = self.device_pools.get(&d) {
            return Ok(*p);
        }
        let pool = self.new_pool(d, false, 0);
        self.device_pools.insert(d, (pool, pool));
        Ok((pool, pool))
    }

    pub fn device_default_mem_pool(&mut self, dev: i32) -> CuResult<u64> {
        Ok(self.device_pools(dev)?.0)
    }

    pub fn device_mem_pool(&mut self, dev: i32) -> CuResult<u64> {
        Ok(self.device_pools(dev)?.1)
    }

    pub fn device_set_mem_pool(&mut self, dev: i32, pool: u64) -> CuResult<()> {
        let (default, _) = self.device_pools(dev)?;
        let d = self.device(dev)?;
        match self.pools.get(&pool) {
            Some(p) if p.device == d => {}
            Some(_) => return Err(CUDA_ERROR_INVALID_DEVICE),
            None => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        self.device_pools.insert(d, (default, pool));
        Ok(())
    }

    /// `cuMemPoolCreate` for pinned device memory (`alloc_type` 1,
    /// `location_type` 1), exportable as a file descriptor or not at all.
    pub fn mem_pool_create(
        &mut self,
        alloc_type: u32,
        handle_types: u32,
        location: (u32, i32),
        max_size: u64,
    ) -> CuResult<u64> {
        if alloc_type != 1 || location.0 != 1 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if handle_types & !HANDLE_TYPE_POSIX_FD != 0 {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let d = self.device(location.1)?;
        let pool = self.new_pool(d, true, max_size);
        self.pool_mut(pool)?.handle_types = handle_types;
        Ok(pool)
    }

    pub fn mem_pool_destroy(&mut self, pool: u64) -> CuResult<()> {
        match self.pools.get(&pool) {
            Some(p) if p.created => {}
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        let device = self.pools.remove(&pool).map(|p| p.device);
        // A device whose current pool this was goes back to its default.
        if let Some((default, current)) = device.and_then(|d| self.device_pools.get_mut(&d)) {
            if *current == pool {
                *current = *default;
            }
        }
        Ok(())
    }

    fn pool_mut(&mut self, pool: u64) -> CuResult<&mut PoolObj> {
        self.pools.get_mut(&pool).ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    /// Set `CUmemPool_attribute` `attr`: 1 to 3 take an int, 4 a 64-bit
    /// threshold; the high-water marks (6, 8) may only be reset to 0; the
    /// current figures (5, 7) are read-only.
    pub fn mem_pool_set_attribute(&mut self, pool: u64, attr: i32, value: u64) -> CuResult<()> {
        let p = self.pool_mut(pool)?;
        match attr {
            1..=3 => p.reuse[attr as usize - 1] = value as i32,
            4 => p.threshold = value,
            6 | 8 if value == 0 => {
                p.reserved_high = p.used;
                p.used_high = p.used;
            }
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        Ok(())
    }

    pub fn mem_pool_get_attribute(&mut self, pool: u64, attr: i32) -> CuResult<u64> {
        let p = self.pool_mut(pool)?;
        Ok(match attr {
            1..=3 => p.reuse[attr as usize - 1] as u64,
            4 => p.threshold,
            5 | 7 => p.used,
            6 => p.reserved_high,
            8 => p.used_high,
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        })
    }

    pub fn mem_pool_trim_to(&mut self, pool: u64) -> CuResult<()> {
        self.pool_mut(pool).map(drop)
    }

    /// `cuMemAllocAsync` (pool None: the device's current pool) and
    /// `cuMemAllocFromPoolAsync`. In a capture the memory is the graph's:
    /// made now, and the same at every launch (a GPU maps it at the
    /// allocation node), until the graph and its executables are gone.
    pub fn mem_alloc_async(&mut self, size: u64, pool: Option<u64>, stream: u64) -> CuResult<u64> {
        let ctx = self.stream_ctx(stream)?;
        if self.capture_of(stream).is_some() {
            let ptr = self.allocate(ctx, size, AllocKind::Device)?;
            self.graph_owned.insert(ptr);
            if let Some(c) = self.capture_of(stream) {
                c.allocs.push(ptr);
            }
            return Ok(ptr);
        }
        let device = self.ctx_device(ctx);
        let pool = match pool {
            Some(p) => p,
            None => self.device_mem_pool(device as i32)?,
        };
        let p = self.pools.get(&pool).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if p.device != device || p.imported.is_some() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if p.max_size != 0 && p.used.saturating_add(size) > p.max_size {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        let ptr = self.allocate(ctx, size, AllocKind::Device)?;
        self.pool_allocs.insert(ptr, pool);
        let p = self.pool_mut(pool)?;
        p.used += size;
        p.used_high = p.used_high.max(p.used);
        p.reserved_high = p.reserved_high.max(p.used);
        Ok(ptr)
    }

    /// `cuMemFreeAsync`. In a capture, of the graph's own memory: its free
    /// node, which changes nothing here (the memory stays the graph's);
    /// other memory cannot be freed in a capture in this double.
    pub fn mem_free_async(&mut self, dptr: u64, stream: u64) -> CuResult<()> {
        self.stream_ctx(stream)?;
        if self.capture_of(stream).is_some() && self.graph_owned.contains(&dptr) {
            return Ok(());
        }
        self.refuse_in_capture(stream)?;
        match self.allocs.get(dptr) {
            Some(a) if matches!(a.kind, AllocKind::Device | AllocKind::PoolImported { .. }) => {}
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        self.graph_owned.remove(&dptr);
        self.release(dptr);
        Ok(())
    }

    /// A graph or executable graph holds `memory`.
    fn hold_graph_memory(&mut self, memory: &[u64]) {
        for p in memory {
            *self.graph_memory.entry(*p).or_insert(0) += 1;
        }
    }

    /// A graph or executable graph went: memory no other holds goes too
    /// (unless it was freed outside a graph before).
    fn drop_graph_memory(&mut self, memory: Vec<u64>) {
        for p in memory {
            let Some(n) = self.graph_memory.get_mut(&p) else {
                continue;
            };
            *n -= 1;
            if *n == 0 {
                self.graph_memory.remove(&p);
                if self.graph_owned.remove(&p) {
                    self.release(p);
                }
            }
        }
    }

    pub fn mem_get_info(&self) -> CuResult<(u64, u64)> {
        let ctx = self.active_ctx()?;
        let dv = &self.devices[self.ctx_device(ctx)];
        Ok((dv.capacity - dv.used, dv.capacity))
    }

    pub fn mem_alloc_host(&mut self, size: u64) -> CuResult<*mut u8> {
        let ctx = self.active_ctx()?;
        if size == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let len = round_up(size, page_size())
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        let mapping = Mapping::new(len).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        let addr = mapping.addr();
        self.host_allocs.insert(
            addr,
            HostAlloc {
                ctx,
                len: len as u64,
                _mapping: mapping,
            },
        );
        Ok(addr as *mut u8)
    }

    pub fn mem_free_host(&mut self, p: u64) -> CuResult<()> {
        self.active_ctx()?;
        self.host_allocs.remove(&p).map(drop).ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    /// Host pointer for a device range that must lie in one allocation.
    /// Whether `ptr` lies in a device allocation (unified addressing).
    pub fn is_device(&self, ptr: u64) -> bool {
        self.allocs.containing(ptr, 1).is_some()
    }

    fn device_range(&self, dptr: u64, len: u64) -> CuResult<*mut u8> {
        self.allocs
            .containing(dptr, len)
            .map(|_| dptr as *mut u8)
            .ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    /// Checks `stream` for an operation in the current context and returns
    /// that context (healthy).
    fn enqueue_ctx(&self, stream: u64) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        if !BUILTIN_STREAMS.contains(&stream) {
            match self.streams.get(&stream) {
                Some(s) if s.ctx == ctx => {}
                _ => return Err(CUDA_ERROR_INVALID_HANDLE),
            }
        }
        Ok(ctx)
    }

    /// `cuMemcpyHtoD`: copies `n` bytes from host `src` into device `dst`.
    /// `copy(dst_host_ptr)` performs the copy once the range is checked.
    /// Copies on a capturing stream go to [`Driver::capture_host_copy`]
    /// first; any that reach here on one are refused.
    pub fn memcpy_htod(&mut self, dst: u64, n: u64, stream: u64, copy: impl FnOnce(*mut u8)) -> CuResult<()> {
        self.enqueue_ctx(stream)?;
        self.refuse_in_capture(stream)?;
        if n == 0 {
            return Ok(());
        }
        copy(self.device_range(dst, n)?);
        Ok(())
    }

    /// `cuMemcpyDtoH`: `copy(src_host_ptr)` copies out once checked.
    pub fn memcpy_dtoh(&mut self, src: u64, n: u64, stream: u64, copy: impl FnOnce(*const u8)) -> CuResult<()> {
        self.enqueue_ctx(stream)?;
        self.refuse_in_capture(stream)?;
        if n == 0 {
            return Ok(());
        }
        copy(self.device_range(src, n)?);
        Ok(())
    }

    pub fn memcpy_dtod(&mut self, dst: u64, src: u64, n: u64, stream: u64) -> CuResult<()> {
        self.enqueue_ctx(stream)?;
        if n == 0 {
            return Ok(());
        }
        self.device_range(dst, n)?;
        self.device_range(src, n)?;
        if let Some(c) = self.capture_of(stream) {
            c.ops.push(Op::CopyDtoD { dst, src, n });
            return Ok(());
        }
        self.run_dtod(dst, src, n)
    }

    fn run_dtod(&self, dst: u64, src: u64, n: u64) -> CuResult<()> {
        let d = self.device_range(dst, n)?;
        let s = self.device_range(src, n)?;
        // SAFETY: both ranges were checked to lie inside live allocations,
        // which are writable mappings owned by the driver; `copy` allows overlap.
        unsafe { std::ptr::copy(s, d, n as usize) };
        Ok(())
    }

    /// `cuMemsetD8/16/32`: writes `count` elements of `pattern`
    /// (little-endian, 1, 2 or 4 bytes) at `dst`.
    pub fn memset(&mut self, dst: u64, pattern: &[u8], count: u64, stream: u64) -> CuResult<()> {
        self.enqueue_ctx(stream)?;
        let elem = pattern.len() as u64;
        if dst & (elem - 1) != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if count == 0 {
            return Ok(());
        }
        let len = count.checked_mul(elem).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        self.device_range(dst, len)?;
        if let Some(c) = self.capture_of(stream) {
            c.ops.push(Op::Memset {
                dst,
                pattern: pattern.to_vec(),
                count,
            });
            return Ok(());
        }
        self.run_memset(dst, pattern, count)
    }

    /// Writes `count` elements of `pattern` at `dst` (alignment checked).
    fn run_memset(&self, dst: u64, pattern: &[u8], count: u64) -> CuResult<()> {
        let len = count
            .checked_mul(pattern.len() as u64)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let p = self.device_range(dst, len)?;
        if pattern.iter().all(|&b| b == pattern[0]) {
            // SAFETY: `p .. p + len` was checked to lie in a live, writable allocation.
            unsafe { std::ptr::write_bytes(p, pattern[0], len as usize) };
        } else {
            // SAFETY: as above; `p` is `elem`-aligned (checked by the caller)
            // and the slice covers exactly the checked range.
            let dst = unsafe { std::slice::from_raw_parts_mut(p, len as usize) };
            for chunk in dst.chunks_exact_mut(pattern.len()) {
                chunk.copy_from_slice(pattern);
            }
        }
        Ok(())
    }

    /// Checks that `rows` rows of `width` bytes, `pitch` apart from
    /// `start`, lie in one device allocation (2D copies check this before
    /// copying a row).
    pub fn check_device_rows(&self, start: u64, pitch: u64, width: u64, rows: u64) -> CuResult<()> {
        if width == 0 || rows == 0 {
            return Ok(());
        }
        let span = pitch
            .checked_mul(rows - 1)
            .and_then(|s| s.checked_add(width))
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        self.device_range(start, span).map(drop)
    }

    // ----- arrays, textures and surfaces -----

    /// `cuArrayCreate` / `cuArray3DCreate`: packed, zeroed texels charged
    /// against the device's memory.
    pub fn array_create(&mut self, shape: ArrayShape) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        let bytes = shape.validate()?;
        let device = self.ctx_device(ctx);
        let charged = round_up(bytes, ALLOC_ALIGN).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let dv = &self.devices[device];
        if charged > dv.capacity - dv.used {
            return Err(CUDA_ERROR_OUT_OF_MEMORY);
        }
        let len = round_up(bytes, page_size())
            .and_then(|l| usize::try_from(l).ok())
            .ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        let mapping = Mapping::new(len).ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
        self.devices[device].used += charged;
        let h = self.handle();
        self.arrays.insert(
            h,
            ArrayObj {
                ctx,
                device,
                shape,
                charged,
                mapping,
            },
        );
        Ok(h)
    }

    /// `cuArrayGetDescriptor` / `cuArray3DGetDescriptor`.
    pub fn array_descriptor(&self, array: u64) -> CuResult<ArrayShape> {
        let a = self.arrays.get(&array).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        self.healthy(a.ctx)?;
        Ok(a.shape)
    }

    /// `cuArrayDestroy`. Texture and surface objects of the array stay, and
    /// fault when a kernel uses them (undefined on a GPU).
    pub fn array_destroy(&mut self, array: u64) -> CuResult<()> {
        let a = self.arrays.remove(&array).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        self.devices[a.device].used -= a.charged;
        Ok(())
    }

    /// Checks a resource for a texture object in `ctx`.
    fn check_resource(&self, ctx: u64, res: &Resource) -> CuResult<()> {
        match *res {
            Resource::Array(a) => match self.arrays.get(&a) {
                Some(a) if a.ctx == ctx => Ok(()),
                _ => Err(CUDA_ERROR_INVALID_VALUE),
            },
            Resource::Linear {
                ptr,
                format,
                channels,
                size,
            } => {
                let elem = texture::element_size(format, channels).ok_or(CUDA_ERROR_INVALID_VALUE)?;
                if size == 0 || ptr % TEXTURE_ALIGNMENT != 0 || size / elem > MAX_TEXTURE_LINEAR_ELEMENTS {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                self.device_range(ptr, size).map(drop)
            }
            Resource::Pitch2D {
                ptr,
                format,
                channels,
                width,
                height,
                pitch,
            } => {
                let elem = texture::element_size(format, channels).ok_or(CUDA_ERROR_INVALID_VALUE)?;
                let (max_w, max_h, max_pitch) = MAX_TEXTURE_PITCH2D;
                if width == 0
                    || height == 0
                    || width > max_w
                    || height > max_h
                    || pitch > max_pitch
                    || ptr % TEXTURE_ALIGNMENT != 0
                    || pitch % TEXTURE_PITCH_ALIGNMENT != 0
                    || width * elem > pitch
                {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
                self.check_device_rows(ptr, pitch, width * elem, height)
            }
        }
    }

    /// `cuTexObjectCreate` (the caller has refused mipmapped arrays and
    /// resource views).
    pub fn tex_create(&mut self, resource: Resource, desc: TexDesc) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        self.check_resource(ctx, &resource)?;
        if desc.address.iter().any(|&m| m > texture::ADDRESS_BORDER)
            || desc.filter > 1
            || desc.mipmap_filter > 1
            || desc.flags & !texture::TRSF_KNOWN != 0
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = self.handle();
        self.textures.insert(h, TexObj { ctx, resource, desc });
        Ok(h)
    }

    pub fn tex_destroy(&mut self, tex: u64) -> CuResult<()> {
        self.textures.remove(&tex).map(drop).ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    /// `cuTexObjectGetResourceDesc` / `cuTexObjectGetTextureDesc`.
    pub fn tex_get(&self, tex: u64) -> CuResult<(Resource, TexDesc)> {
        let t = self.textures.get(&tex).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        self.healthy(t.ctx)?;
        Ok((t.resource, t.desc))
    }

    /// `cuSurfObjectCreate`: an array made with `CUDA_ARRAY3D_SURFACE_LDST`.
    pub fn surf_create(&mut self, resource: Resource) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        let Resource::Array(array) = resource else {
            return Err(CUDA_ERROR_INVALID_VALUE);
        };
        match self.arrays.get(&array) {
            Some(a) if a.ctx == ctx && a.shape.flags & texture::ARRAY3D_SURFACE_LDST != 0 => {}
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        let h = self.handle();
        self.surfaces.insert(h, SurfObj { ctx, array });
        Ok(h)
    }

    pub fn surf_destroy(&mut self, surf: u64) -> CuResult<()> {
        self.surfaces.remove(&surf).map(drop).ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    pub fn surf_get(&self, surf: u64) -> CuResult<Resource> {
        let s = self.surfaces.get(&surf).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        self.healthy(s.ctx)?;
        Ok(Resource::Array(s.array))
    }

    /// The texels of a resource for a kernel: an array's one 2D slice (a
    /// 1D array is one row), or pitched device memory still allocated.
    /// Gone: a fault; 3D, layered or linear: not supported here.
    fn image(&self, ctx: u64, res: &Resource) -> CuResult<Image> {
        match *res {
            Resource::Array(a) => {
                let a = self
                    .arrays
                    .get(&a)
                    .filter(|a| a.ctx == ctx)
                    .ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
                let sh = a.shape;
                if sh.depth > 0 || sh.flags & texture::ARRAY3D_LAYERED != 0 {
                    return Err(CUDA_ERROR_NOT_SUPPORTED);
                }
                // SAFETY: the mapping holds at least `row_bytes * rows`
                // bytes (the array's size) and lives while the driver lock,
                // held for the whole launch, keeps the array in the table.
                unsafe {
                    Image::new(
                        a.mapping.addr() as *mut u8,
                        sh.width,
                        sh.rows(),
                        sh.row_bytes(),
                        sh.format,
                        sh.channels,
                    )
                }
                .ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)
            }
            Resource::Pitch2D {
                ptr,
                format,
                channels,
                width,
                height,
                pitch,
            } => {
                let elem = texture::element_size(format, channels).ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
                self.check_device_rows(ptr, pitch, width * elem, height)
                    .map_err(|_| CUDA_ERROR_ILLEGAL_ADDRESS)?;
                // SAFETY: the rows were just checked to lie in one live
                // allocation, which the driver lock keeps for the launch.
                unsafe { Image::new(ptr as *mut u8, width, height, pitch, format, channels) }
                    .ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)
            }
            Resource::Linear { .. } => Err(CUDA_ERROR_NOT_SUPPORTED),
        }
    }

    /// Checks one side of a copy of `ext` = (width bytes, rows, slices),
    /// all non-zero, and places it.
    fn place(&self, ctx: u64, end: &CopyEnd, ext: (u64, u64, u64)) -> CuResult<Placed> {
        let (w, h, d) = ext;
        let bad = CUDA_ERROR_INVALID_VALUE;
        let memory = match end.memory {
            Memory::Unified(p) if self.is_device(p) => Memory::Device(p),
            Memory::Unified(p) => Memory::Host(p),
            m => m,
        };
        match memory {
            Memory::Array(a) => {
                let a = self.arrays.get(&a).filter(|a| a.ctx == ctx).ok_or(bad)?;
                let sh = a.shape;
                let (elem, row, rows) = (sh.element(), sh.row_bytes(), sh.rows());
                let fits = |off: u64, n: u64, limit: u64| off.checked_add(n).is_some_and(|e| e <= limit);
                if !end.x.is_multiple_of(elem)
                    || !w.is_multiple_of(elem)
                    || !fits(end.x, w, row)
                    || !fits(end.y, h, rows)
                    || !fits(end.z, d, sh.slices())
                {
                    return Err(bad);
                }
                // In range of the array's size, so no overflow.
                let slice = row * rows;
                let addr = a.mapping.addr() + end.z * slice + end.y * row + end.x;
                Ok(Placed {
                    addr,
                    pitch: row,
                    slice,
                    host: None,
                })
            }
            Memory::Host(p) | Memory::Device(p) => {
                if p == 0 || ((h > 1 || d > 1) && end.pitch < w) {
                    return Err(bad);
                }
                if d > 1 && end.y.checked_add(h).is_none_or(|rows| end.rows < rows) {
                    return Err(bad);
                }
                let slice = if d > 1 {
                    end.pitch.checked_mul(end.rows).ok_or(bad)?
                } else {
                    0
                };
                let offset = end
                    .z
                    .checked_mul(slice)
                    .and_then(|o| o.checked_add(end.y.checked_mul(end.pitch)?))
                    .and_then(|o| o.checked_add(end.x))
                    .ok_or(bad)?;
                let addr = p.checked_add(offset).ok_or(bad)?;
                let span = (d - 1)
                    .checked_mul(slice)
                    .and_then(|s| s.checked_add((h - 1).checked_mul(end.pitch)?))
                    .and_then(|s| s.checked_add(w))
                    .ok_or(bad)?;
                addr.checked_add(span).ok_or(bad)?;
                let host = if let Memory::Device(_) = memory {
                    self.device_range(addr, span)?;
                    None
                } else {
                    Some((addr, span))
                };
                Ok(Placed {
                    addr,
                    pitch: end.pitch,
                    slice,
                    host,
                })
            }
            Memory::Unified(_) => Err(bad),
        }
    }

    /// A 2D or 3D copy with any of host, device, array (and unified) on
    /// each side, every side checked before a byte moves. Asynchronous ones
    /// whose host sides are all pinned go to the copy engine when it is on;
    /// the rest are done here, after the queued copies. Not in a capture.
    pub fn memcpy_3d(&mut self, c: &Copy3d, stream: u64, asynchronous: bool) -> CuResult<()> {
        let ctx = self.enqueue_ctx(stream)?;
        for end in [&c.src, &c.dst] {
            if let Memory::Array(a) = end.memory {
                self.arrays
                    .get(&a)
                    .filter(|a| a.ctx == ctx)
                    .ok_or(CUDA_ERROR_INVALID_VALUE)?;
            }
        }
        if c.width == 0 || c.height == 0 || c.depth == 0 {
            return Ok(());
        }
        let ext = (c.width, c.height, c.depth);
        let src = self.place(ctx, &c.src, ext)?;
        let dst = self.place(ctx, &c.dst, ext)?;
        self.refuse_in_capture(stream)?;
        let hosts: Vec<(u64, u64)> = [src.host, dst.host].into_iter().flatten().collect();
        let queued =
            asynchronous && engine::enabled() && !hosts.is_empty() && hosts.iter().all(|&(p, n)| self.is_pinned(p, n));
        if !queued {
            engine::drain();
        }
        let width = c.width as usize;
        for z in 0..c.depth {
            for y in 0..c.height {
                // Inside the spans `place` checked, so no overflow.
                let s = (src.addr + z * src.slice + y * src.pitch) as *const u8;
                let d = (dst.addr + z * dst.slice + y * dst.pitch) as *mut u8;
                if queued {
                    // SAFETY: device and array rows were checked live, and
                    // stay so until the queue drains (frees and destroys
                    // drain it first); host rows are pinned memory the
                    // caller keeps until the copy is done (asynchronous
                    // copy contract).
                    unsafe { engine::submit(d, s, width) };
                } else {
                    // SAFETY: device and array rows were checked to lie in
                    // live mappings of the driver's; host rows are valid for
                    // the copy (API contract); `copy` tolerates overlap.
                    unsafe { std::ptr::copy(s, d, width) };
                }
            }
        }
        Ok(())
    }

    // ----- modules -----

    /// Loads a parsed module into `ctx`: allocates its variables and makes
    /// a function for each entry.
    fn instantiate(&mut self, ctx: u64, ptx: Arc<ptx::Module>, library: Option<u64>) -> CuResult<u64> {
        let h = self.handle_of(Kind::Module);
        let mut variables = HashMap::new();
        for v in &ptx.variables {
            // A variable of no size (an empty array NCCL's code declares)
            // still has an address.
            match self.allocate(ctx, v.size.max(1) as u64, AllocKind::ModuleVariable { module: h }) {
                Ok(addr) => {
                    if !v.init.is_empty() {
                        let n = v.init.len().min(v.size);
                        // SAFETY: `addr` is a fresh mapping of at least `v.size`
                        // bytes and `n <= v.size`.
                        unsafe { std::ptr::copy_nonoverlapping(v.init.as_ptr(), addr as *mut u8, n) };
                    }
                    variables.insert(v.name.clone(), (addr, v.size as u64));
                }
                Err(e) => {
                    for a in self
                        .allocs
                        .remove_where(|a| a.kind == AllocKind::ModuleVariable { module: h })
                    {
                        self.devices[a.device].used -= a.charged;
                    }
                    return Err(e);
                }
            }
        }
        let mut functions = Vec::with_capacity(ptx.entries.len());
        for (i, entry) in ptx.entries.iter().enumerate() {
            let f = self.handle_of(Kind::Function);
            let mut attrs = default_attrs(&ptx, entry);
            if let Some(lib) = library {
                let kernel = self.libraries[&lib].kernels[i];
                if let Some(a) = self.kernels[&kernel].attrs.get(&self.ctx_device(ctx)) {
                    attrs = *a;
                }
            }
            self.functions.insert(
                f,
                FunctionObj {
                    ctx,
                    ptx: ptx.clone(),
                    entry: i,
                    recognised: kernels::recognise(entry),
                    attrs,
                    cache_config: FUNC_CACHE_PREFER_NONE,
                },
            );
            functions.push(f);
        }
        self.modules.insert(
            h,
            ModuleObj {
                ctx,
                ptx,
                functions,
                variables,
                library,
            },
        );
        Ok(h)
    }

    fn drop_module(&mut self, m: u64) {
        let Some(module) = self.modules.remove(&m) else {
            return;
        };
        for f in &module.functions {
            self.functions.remove(f);
        }
        self.free_handles(Kind::Function, module.functions.iter().rev().copied());
        self.free_handles(Kind::Module, [m]);
        for a in self
            .allocs
            .remove_where(|a| a.kind == AllocKind::ModuleVariable { module: m })
        {
            self.devices[a.device].used -= a.charged;
        }
        if let Some(lib) = module.library.and_then(|l| self.libraries.get_mut(&l)) {
            lib.modules.remove(&module.ctx);
        }
    }

    pub fn module_load(&mut self, image: &[u8]) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        let ptx = crate::image::load(image)?;
        self.instantiate(ctx, Arc::new(ptx), None)
    }

    pub fn module_unload(&mut self, m: u64) -> CuResult<()> {
        let module = self.modules.get(&m).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if module.library.is_some() {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        self.healthy(module.ctx)?;
        self.drop_module(m);
        Ok(())
    }

    pub fn module_get_function(&self, m: u64, name: &str) -> CuResult<u64> {
        let module = self.modules.get(&m).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        module
            .ptx
            .entries
            .iter()
            .position(|e| e.name == name)
            .map(|i| module.functions[i])
            .ok_or(CUDA_ERROR_NOT_FOUND)
    }

    /// `cuPointerGetAttribute(CU_POINTER_ATTRIBUTE_IS_MANAGED)`: whether
    /// `ptr` lies in a module's `__managed__` variable (the only managed
    /// memory of this double; the server asks only this).
    pub fn pointer_is_managed(&self, ptr: u64) -> CuResult<bool> {
        let (_, alloc) = self.allocs.containing(ptr, 1).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let AllocKind::ModuleVariable { module } = alloc.kind else {
            return Ok(false);
        };
        let m = self.modules.get(&module).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        Ok(m.variables.iter().any(|(name, &(addr, size))| {
            (addr..addr + size).contains(&ptr) && m.ptx.variable(name).is_some_and(|v| v.managed)
        }))
    }

    pub fn module_get_global(&self, m: u64, name: &str) -> CuResult<(u64, u64)> {
        let module = self.modules.get(&m).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        self.healthy(module.ctx)?;
        module.variables.get(name).copied().ok_or(CUDA_ERROR_NOT_FOUND)
    }

    // ----- the JIT linker -----

    pub fn link_create(&mut self) -> CuResult<u64> {
        self.active_ctx()?;
        let h = self.handle();
        self.links.insert(h, (Vec::new(), None));
        Ok(h)
    }

    /// `cuLinkAddData`: PTX text (checked by parsing it now, as the driver
    /// compiles it now), or a cubin or fat binary when it is the only input.
    /// A fat binary holding PTX (an object of relocatable device code)
    /// takes part as that PTX; one holding only ELF code (a relocatable
    /// library such as the device runtime's), which the double cannot link,
    /// takes part only as the sole input.
    pub fn link_add_data(&mut self, link: u64, kind: u32, data: &[u8]) -> CuResult<()> {
        self.active_ctx()?;
        let (inputs, out) = self.links.get_mut(&link).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if out.is_some() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let input = match kind {
            JIT_INPUT_PTX => {
                crate::image::load(data).map_err(|_| CUDA_ERROR_INVALID_PTX)?;
                data.to_vec()
            }
            JIT_INPUT_FATBINARY => match crate::image::fatbin_ptx(data)? {
                Some(ptx) => ptx,
                None => data.to_vec(),
            },
            JIT_INPUT_CUBIN => {
                crate::image::load(data)?;
                data.to_vec()
            }
            // Objects, libraries and NVVM IR are not modelled.
            _ => return Err(CUDA_ERROR_NOT_SUPPORTED),
        };
        inputs.push(input);
        Ok(())
    }

    /// `cuLinkComplete`: one input is its own image; several PTX inputs are
    /// one module of all their declarations (a symbol defined twice fails
    /// as a link does).
    pub fn link_complete(&mut self, link: u64) -> CuResult<&[u8]> {
        self.active_ctx()?;
        let (inputs, out) = self.links.get_mut(&link).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if out.is_none() {
            let is_ptx = |input: &[u8]| {
                let body = input.split(|&b| b == 0).next().unwrap_or_default();
                gpupool_fatbin::detect(body).ok() == Some(gpupool_fatbin::ImageKind::Ptx)
            };
            let elf_library =
                |input: &[u8]| gpupool_fatbin::detect(input).ok() == Some(gpupool_fatbin::ImageKind::FatBinary);
            // Libraries of ELF code only take no part beside PTX.
            let any_ptx = inputs.iter().any(|i| is_ptx(i));
            let ptx: Vec<&Vec<u8>> = inputs.iter().filter(|i| !(any_ptx && elf_library(i))).collect();
            let image = match ptx.as_slice() {
                [] => return Err(CUDA_ERROR_INVALID_VALUE),
                [one] => (*one).clone(),
                many => {
                    let mut text = Vec::new();
                    for (i, input) in many.iter().enumerate() {
                        let body = input.split(|&b| b == 0).next().unwrap_or_default();
                        if !is_ptx(input) {
                            return Err(CUDA_ERROR_NOT_SUPPORTED);
                        }
                        for line in body.split(|&b| b == b'\n') {
                            let directive = line.trim_ascii_start();
                            let header = [&b".version"[..], b".target", b".address_size"]
                                .iter()
                                .any(|d| directive.starts_with(d));
                            if i == 0 || !header {
                                text.extend_from_slice(line);
                                text.push(b'\n');
                            }
                        }
                    }
                    text.push(0);
                    crate::image::load(&text).map_err(|_| CUDA_ERROR_INVALID_PTX)?;
                    text
                }
            };
            *out = Some(image);
        }
        Ok(out.as_deref().unwrap_or_default())
    }

    pub fn link_destroy(&mut self, link: u64) -> CuResult<()> {
        self.links.remove(&link).map(|_| ()).ok_or(CUDA_ERROR_INVALID_HANDLE)
    }

    // ----- libraries and kernels -----

    pub fn library_load(&mut self, image: &[u8]) -> CuResult<u64> {
        let ptx = Arc::new(crate::image::load(image)?);
        let h = self.handle_of(Kind::Library);
        let mut kernels = Vec::with_capacity(ptx.entries.len());
        for i in 0..ptx.entries.len() {
            let k = self.handle_of(Kind::Kernel);
            self.kernels.insert(
                k,
                KernelObj {
                    library: h,
                    entry: i,
                    attrs: HashMap::new(),
                    cache_configs: HashMap::new(),
                },
            );
            kernels.push(k);
        }
        self.libraries.insert(
            h,
            LibraryObj {
                ptx,
                kernels,
                modules: HashMap::new(),
            },
        );
        Ok(h)
    }

    pub fn library_unload(&mut self, lib: u64) -> CuResult<()> {
        let library = self.libraries.get(&lib).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let modules: Vec<u64> = library.modules.values().copied().collect();
        let kernels = library.kernels.clone();
        for m in modules {
            self.drop_module(m);
        }
        for k in &kernels {
            self.kernels.remove(k);
        }
        self.libraries.remove(&lib);
        self.free_handles(Kind::Kernel, kernels.into_iter().rev());
        self.free_handles(Kind::Library, [lib]);
        Ok(())
    }

    pub fn library_get_kernel(&self, lib: u64, name: &str) -> CuResult<u64> {
        let library = self.libraries.get(&lib).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        library
            .ptx
            .entries
            .iter()
            .position(|e| e.name == name)
            .map(|i| library.kernels[i])
            .ok_or(CUDA_ERROR_NOT_FOUND)
    }

    /// The module a library is loaded as in the current context (loaded on
    /// first use, as the real driver does for context-independent loading).
    fn library_module(&mut self, lib: u64) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        let library = self.libraries.get(&lib).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if let Some(&m) = library.modules.get(&ctx) {
            return Ok(m);
        }
        let ptx = library.ptx.clone();
        let m = self.instantiate(ctx, ptx, Some(lib))?;
        if let Some(l) = self.libraries.get_mut(&lib) {
            l.modules.insert(ctx, m);
        }
        Ok(m)
    }

    pub fn library_get_global(&mut self, lib: u64, name: &str) -> CuResult<(u64, u64)> {
        if !self.libraries.contains_key(&lib) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        if self.libraries[&lib].ptx.variable(name).is_none() {
            return Err(CUDA_ERROR_NOT_FOUND);
        }
        let m = self.library_module(lib)?;
        self.module_get_global(m, name)
    }

    /// `cuLibraryGetManaged`: a `__managed__` variable; other globals are
    /// not found by it.
    pub fn library_get_managed(&mut self, lib: u64, name: &str) -> CuResult<(u64, u64)> {
        let managed = self
            .libraries
            .get(&lib)
            .ok_or(CUDA_ERROR_INVALID_HANDLE)?
            .ptx
            .variable(name)
            .is_some_and(|v| v.managed);
        if !managed {
            return Err(CUDA_ERROR_NOT_FOUND);
        }
        self.library_get_global(lib, name)
    }

    /// `cuLibraryGetModule`: the library's module in the current context.
    pub fn library_get_module(&mut self, lib: u64) -> CuResult<u64> {
        self.library_module(lib)
    }

    pub fn kernel_get_function(&mut self, kernel: u64) -> CuResult<u64> {
        let k = self.kernels.get(&kernel).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let entry = k.entry;
        let m = self.library_module(k.library)?;
        Ok(self.modules[&m].functions[entry])
    }

    fn kernel_entry(&self, kernel: u64) -> CuResult<(&ptx::Module, &ptx::Entry)> {
        let k = self.kernels.get(&kernel).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let ptx = &self.libraries[&k.library].ptx;
        Ok((ptx, &ptx.entries[k.entry]))
    }

    fn kernel_attrs(&self, kernel: u64, device: usize) -> CuResult<FuncAttrs> {
        let (ptx, entry) = self.kernel_entry(kernel)?;
        Ok(self.kernels[&kernel]
            .attrs
            .get(&device)
            .copied()
            .unwrap_or_else(|| default_attrs(ptx, entry)))
    }

    pub fn kernel_get_attribute(&self, attrib: i32, kernel: u64, dev: i32) -> CuResult<i32> {
        let d = self.device(dev)?;
        get_attr(&self.kernel_attrs(kernel, d)?, attrib)
    }

    pub fn kernel_set_attribute(&mut self, attrib: i32, value: i32, kernel: u64, dev: i32) -> CuResult<()> {
        let d = self.device(dev)?;
        let mut attrs = self.kernel_attrs(kernel, d)?;
        set_attr(&mut attrs, attrib, value)?;
        let k = self.kernels.get_mut(&kernel).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        k.attrs.insert(d, attrs);
        let (lib, entry) = (k.library, k.entry);
        // Functions already made from this kernel on that device follow.
        let mods: Vec<(u64, u64)> = self.libraries[&lib].modules.iter().map(|(c, m)| (*c, *m)).collect();
        for (ctx, m) in mods {
            if self.contexts.get(&ctx).is_some_and(|c| c.device == d) {
                let f = self.modules[&m].functions[entry];
                if let Some(func) = self.functions.get_mut(&f) {
                    func.attrs[attrib as usize] = value;
                }
            }
        }
        Ok(())
    }

    pub fn kernel_param_info(&self, kernel: u64, index: usize) -> CuResult<(usize, usize)> {
        let (_, entry) = self.kernel_entry(kernel)?;
        entry
            .params
            .get(index)
            .map(|p| (p.offset, p.size))
            .ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    // ----- functions -----

    /// A function handle, or a kernel handle used as one (allowed by the
    /// real driver), resolved to a function of the current context.
    fn resolve_function(&mut self, f: u64) -> CuResult<u64> {
        if self.functions.contains_key(&f) {
            Ok(f)
        } else if self.kernels.contains_key(&f) {
            self.kernel_get_function(f)
        } else {
            Err(CUDA_ERROR_INVALID_HANDLE)
        }
    }

    fn function(&mut self, f: u64) -> CuResult<&mut FunctionObj> {
        let f = self.resolve_function(f)?;
        self.functions.get_mut(&f).ok_or(CUDA_ERROR_INVALID_HANDLE)
    }

    pub fn func_get_attribute(&mut self, attrib: i32, f: u64) -> CuResult<i32> {
        get_attr(&self.function(f)?.attrs, attrib)
    }

    pub fn func_set_attribute(&mut self, f: u64, attrib: i32, value: i32) -> CuResult<()> {
        set_attr(&mut self.function(f)?.attrs, attrib, value)
    }

    pub fn func_set_cache_config(&mut self, f: u64, config: u32) -> CuResult<()> {
        let config = cache_config(config)?;
        self.function(f)?.cache_config = config;
        Ok(())
    }

    pub fn kernel_set_cache_config(&mut self, kernel: u64, config: u32, dev: i32) -> CuResult<()> {
        let d = self.device(dev)?;
        let config = cache_config(config)?;
        let k = self.kernels.get_mut(&kernel).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        k.cache_configs.insert(d, config);
        Ok(())
    }

    pub fn func_param_info(&mut self, f: u64, index: usize) -> CuResult<(usize, usize)> {
        let func = self.function(f)?;
        func.ptx.entries[func.entry]
            .params
            .get(index)
            .map(|p| (p.offset, p.size))
            .ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    // ----- launches -----

    /// Validates and runs one launch. `fill(params, buffer)` packs the
    /// caller's arguments into `buffer` (zeroed, `params` layout).
    pub fn launch(
        &mut self,
        f: u64,
        cfg: &LaunchConfig,
        fill: impl FnOnce(&[ptx::Param], &mut [u8]) -> CuResult<()>,
    ) -> CuResult<()> {
        let ctx = self.enqueue_ctx(cfg.stream)?;
        let op = self.launch_op(ctx, f, cfg, fill)?;
        if let Some(c) = self.capture_of(cfg.stream) {
            c.ops.push(op);
            return Ok(());
        }
        match op {
            Op::Launch {
                func,
                kernel: Some(k),
                params,
                threads,
                ..
            } => {
                self.run_kernel(ctx, func, k, &params, threads)?;
                // CUDA_LAUNCH_BLOCKING=1: the launch returns once the kernel
                // ran, with the fault it hit.
                match self.contexts.get(&ctx).and_then(|c| c.sticky) {
                    Some(fault) if self.launch_blocking => Err(fault),
                    _ => Ok(()),
                }
            }
            _ => Ok(()),
        }
    }

    /// A launch checked as the driver checks it, as the operation that runs
    /// it (now, or from a graph).
    fn launch_op(
        &mut self,
        ctx: u64,
        f: u64,
        cfg: &LaunchConfig,
        fill: impl FnOnce(&[ptx::Param], &mut [u8]) -> CuResult<()>,
    ) -> CuResult<Op> {
        let fid = self.resolve_function(f)?;
        let func = &self.functions[&fid];
        if func.ctx != ctx {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        let [bx, by, bz] = cfg.block;
        let [gx, gy, gz] = cfg.grid;
        let threads = u64::from(bx) * u64::from(by) * u64::from(bz);
        if cfg.block.contains(&0)
            || cfg.grid.contains(&0)
            || bx > 1024
            || by > 1024
            || bz > 64
            || threads > u64::from(MAX_THREADS_PER_BLOCK)
            || gx > i32::MAX as u32
            || gy > 65535
            || gz > 65535
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let entry = &func.ptx.entries[func.entry];
        if let Some(req) = entry.reqntid {
            if req != cfg.block {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
        }
        if threads > func.attrs[ATTR_MAX_THREADS] as u64 {
            return Err(CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
        }
        if cfg.shared_mem > func.attrs[ATTR_MAX_DYNAMIC_SHARED] as u32 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let mut params = vec![0u8; entry.param_bytes()];
        fill(&entry.params, &mut params)?;
        let known = match &func.recognised {
            Recognised::Known(k) => Some(*k),
            Recognised::WrongLayout(why) => {
                eprintln!("gpupool soft driver: launch refused (CUDA_ERROR_INVALID_VALUE): {why}");
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            Recognised::Unknown if self.skip_unknown => None,
            Recognised::Unknown => return Err(CUDA_ERROR_NOT_SUPPORTED),
        };
        let threads = u64::from(gx) * u64::from(bx);
        Ok(Op::Launch {
            func: fid,
            kernel: known,
            params,
            threads,
            cfg: NodeShape {
                grid: cfg.grid,
                block: cfg.block,
                shared_mem: cfg.shared_mem,
            },
        })
    }

    /// Runs a known kernel; a fault leaves `ctx` sticky, as on a GPU.
    fn run_kernel(&mut self, ctx: u64, fid: u64, kernel: kernels::Known, params: &[u8], threads: u64) -> CuResult<()> {
        let func = self.functions.get(&fid).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let entry = &func.ptx.entries[func.entry];
        let objects = LaunchObjects { driver: self, ctx };
        let reach = self.reach(ctx);
        if let Err(fault) = kernels::run(kernel, entry, params, threads, &self.allocs, reach, &objects) {
            if let Some(c) = self.contexts.get_mut(&ctx) {
                c.sticky = Some(fault);
            }
        }
        Ok(())
    }

    // ----- stream capture and graphs -----

    /// The capture `stream` records into, if it captures.
    /// (A stream that joined a capture records into the capture's origin.)
    fn capture_of(&mut self, stream: u64) -> Option<&mut Capture> {
        let origin = self.capture_origin(stream)?;
        self.streams.get_mut(&origin).and_then(|s| s.capture.as_mut())
    }

    /// The stream whose capture `stream` records into.
    fn capture_origin(&self, stream: u64) -> Option<u64> {
        let s = self.streams.get(&stream)?;
        match (&s.capture, s.joined) {
            (Some(_), _) => Some(stream),
            (None, Some(origin)) => Some(origin),
            (None, None) => None,
        }
    }

    /// Work a capture cannot hold (in this double: copies to or from
    /// pageable host memory, waits for events of other captures or of none,
    /// synchronising or querying the stream, graph launches) fails with
    /// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED` and invalidates the capture,
    /// as the driver does for work it cannot capture.
    fn refuse_in_capture(&mut self, stream: u64) -> CuResult<()> {
        match self.capture_of(stream) {
            Some(c) => {
                c.invalidated = true;
                Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED)
            }
            None => Ok(()),
        }
    }

    /// An asynchronous copy between the host and the device on a capturing
    /// stream: captured, as the driver does, when the host side is pinned
    /// memory (the graph reads or writes it when it runs); refused otherwise
    /// (this double's rule). `None` when the stream does not capture.
    pub fn capture_host_copy(
        &mut self,
        stream: u64,
        device: u64,
        host: u64,
        n: u64,
        inbound: bool,
    ) -> Option<CuResult<()>> {
        self.capture_of(stream)?;
        if !self.is_pinned(host, n) {
            return Some(self.refuse_in_capture(stream));
        }
        if let Err(e) = self.device_range(device, n) {
            return Some(Err(e));
        }
        let op = if inbound {
            Op::CopyIn {
                dst: device,
                src: host,
                n,
            }
        } else {
            Op::CopyOut {
                dst: host,
                src: device,
                n,
            }
        };
        self.capture_of(stream)?.ops.push(op);
        Some(Ok(()))
    }

    /// A replayed copy between pinned host memory and the device.
    fn run_host_copy(&self, device: u64, host: u64, n: u64, inbound: bool) -> CuResult<()> {
        let d = self.device_range(device, n)?;
        if !self.is_pinned(host, n) {
            return Err(CUDA_ERROR_ILLEGAL_ADDRESS);
        }
        let h = host as *mut u8;
        // SAFETY: both ranges were checked to lie inside live mappings owned
        // by the driver; `copy` allows overlap.
        unsafe {
            if inbound {
                std::ptr::copy(h, d, n as usize)
            } else {
                std::ptr::copy(d, h, n as usize)
            }
        };
        Ok(())
    }

    /// `cuStreamBeginCapture_v2`. The NULL and per-thread streams cannot
    /// capture here.
    pub fn stream_begin_capture(&mut self, stream: u64, mode: u32) -> CuResult<()> {
        if mode > CAPTURE_MODE_RELAXED {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if BUILTIN_STREAMS.contains(&stream) {
            self.active_ctx()?;
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        self.stream_ctx(stream)?;
        let s = self.streams.get_mut(&stream).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if s.capture.is_some() {
            return Err(CUDA_ERROR_ILLEGAL_STATE);
        }
        s.capture = Some(Capture {
            mode,
            ops: Vec::new(),
            into: None,
            allocs: Vec::new(),
            invalidated: false,
            made: false,
            frontier: Vec::new(),
        });
        Ok(())
    }

    /// `cuStreamBeginCaptureToGraph`: a capture whose work joins `graph`
    /// after `deps`, nodes of it (work runs in the order added here, which
    /// any dependencies allow).
    pub fn stream_begin_capture_to_graph(&mut self, stream: u64, graph: u64, deps: &[u64], mode: u32) -> CuResult<()> {
        let ctx = self.stream_ctx(stream)?;
        match self.graphs.get(&graph) {
            Some(g) if g.ctx == ctx => {}
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        if deps.iter().any(|d| self.nodes.get(d) != Some(&graph)) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.stream_begin_capture(stream, mode)?;
        if let Some(c) = self.streams.get_mut(&stream).and_then(|s| s.capture.as_mut()) {
            c.into = Some(graph);
            c.frontier = deps.to_vec();
        }
        Ok(())
    }

    /// `cuStreamEndCapture`: the graph of what the stream recorded.
    pub fn stream_end_capture(&mut self, stream: u64) -> CuResult<u64> {
        let ctx = self.stream_ctx(stream)?;
        let capture = self
            .streams
            .get_mut(&stream)
            .and_then(|s| s.capture.take())
            .ok_or(CUDA_ERROR_ILLEGAL_STATE)?;
        for s in self.streams.values_mut() {
            if s.joined == Some(stream) {
                s.joined = None;
            }
        }
        if capture.invalidated {
            // No graph holds what the capture allocated.
            self.hold_graph_memory(&capture.allocs);
            self.drop_graph_memory(capture.allocs);
            if let Some(g) = capture.into.filter(|_| capture.made) {
                self.forget_graph(g);
            }
            return Err(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED);
        }
        if let Some(g) = capture.into {
            // The work joins the existing graph, one node per operation.
            let base = self.graphs.get(&g).ok_or(CUDA_ERROR_INVALID_VALUE)?.ops.len();
            self.node_per_op(g, base, &capture.ops, &capture.frontier);
            let graph = self.graphs.get_mut(&g).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            Arc::make_mut(&mut graph.ops).extend(capture.ops);
            graph.memory.extend(&capture.allocs);
            self.hold_graph_memory(&capture.allocs);
            return Ok(g);
        }
        let h = self.handle();
        self.node_per_op(h, 0, &capture.ops, &[]);
        self.hold_graph_memory(&capture.allocs);
        self.graphs.insert(
            h,
            GraphObj {
                ctx,
                ops: Arc::new(capture.ops),
                source: 0,
                memory: capture.allocs,
                disabled: HashSet::new(),
            },
        );
        Ok(h)
    }

    /// A node of `graph` for each captured operation, in order, the first
    /// being the graph's operation `base`.
    /// Each follows the one before it; the first follows `first` (the
    /// capture's dependencies).
    fn node_per_op(&mut self, graph: u64, base: usize, ops: &[Op], first: &[u64]) -> Vec<u64> {
        let mut before: Vec<u64> = first.to_vec();
        ops.iter()
            .enumerate()
            .map(|(at, op)| {
                let node = self.handle();
                self.nodes.insert(node, graph);
                self.node_ops.insert(node, base + at);
                self.node_types.insert(node, op.node_type());
                self.node_deps.insert(node, before.iter().map(|d| (*d, 0)).collect());
                before = vec![node];
                node
            })
            .collect()
    }

    /// `cuGraphGetEdges_v2`: every edge of `graph` as (from, to, data), in
    /// the order the nodes were made.
    pub fn graph_edges(&self, graph: u64) -> CuResult<Vec<(u64, u64, u64)>> {
        Ok(self
            .graph_nodes(graph)?
            .iter()
            .flat_map(|to| {
                self.node_deps
                    .get(to)
                    .into_iter()
                    .flatten()
                    .map(move |(from, data)| (*from, *to, *data))
            })
            .collect())
    }

    /// The data of the edges `deps[i] -> node` (given with the node).
    pub fn set_edge_data(&mut self, node: u64, edges: &[u64]) {
        if let Some(deps) = self.node_deps.get_mut(&node) {
            for (d, e) in deps.iter_mut().zip(edges) {
                d.1 = *e;
            }
        }
    }

    /// `cuStreamGetCaptureInfo` of a capture's graph: (graph, the nodes the
    /// next work follows). The graph is made at the first ask, and the
    /// work captured so far becomes its nodes, so that the program may add
    /// nodes after them (they run in the order added).
    pub fn capture_graph(&mut self, stream: u64) -> CuResult<(u64, Vec<u64>)> {
        let ctx = self.stream_ctx(stream)?;
        let origin = self.capture_origin(stream).ok_or(CUDA_ERROR_ILLEGAL_STATE)?;
        let made = match self.streams.get(&origin).and_then(|s| s.capture.as_ref()) {
            Some(c) if c.invalidated => return Err(CUDA_ERROR_STREAM_CAPTURE_INVALIDATED),
            Some(c) => c.into,
            None => return Err(CUDA_ERROR_ILLEGAL_STATE),
        };
        let graph = match made {
            Some(g) => g,
            None => self.empty_graph(ctx),
        };
        let c = self.capture_of(origin).ok_or(CUDA_ERROR_ILLEGAL_STATE)?;
        c.made |= made.is_none();
        c.into = Some(graph);
        let ops = std::mem::take(&mut c.ops);
        if !ops.is_empty() {
            let base = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?.ops.len();
            let first = self.capture_of(origin).map(|c| c.frontier.clone()).unwrap_or_default();
            let nodes = self.node_per_op(graph, base, &ops, &first);
            let g = self.graphs.get_mut(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            Arc::make_mut(&mut g.ops).extend(ops);
            if let (Some(last), Some(c)) = (nodes.last(), self.capture_of(origin)) {
                c.frontier = vec![*last];
            }
        }
        let frontier = self.capture_of(origin).map(|c| c.frontier.clone()).unwrap_or_default();
        Ok((graph, frontier))
    }

    /// `cuStreamUpdateCaptureDependencies`: nodes of the capture's graph
    /// (asked for before) replace (`flags` 1) or join (0) the ones the next
    /// work follows. Work runs in the order added here, so only the
    /// frontier changes.
    pub fn capture_update_deps(&mut self, stream: u64, deps: &[u64], flags: u32) -> CuResult<()> {
        self.stream_ctx(stream)?;
        if flags > 1 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let origin = self.capture_origin(stream).ok_or(CUDA_ERROR_ILLEGAL_STATE)?;
        let graph = self
            .streams
            .get(&origin)
            .and_then(|s| s.capture.as_ref())
            .and_then(|c| c.into)
            .ok_or(CUDA_ERROR_ILLEGAL_STATE)?;
        if deps.iter().any(|d| self.nodes.get(d) != Some(&graph)) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let c = self.capture_of(origin).ok_or(CUDA_ERROR_ILLEGAL_STATE)?;
        if flags == 1 {
            c.frontier.clear();
        }
        c.frontier.extend(deps);
        Ok(())
    }

    /// `cuStreamIsCapturing`: none (0), active (1) or invalidated (2).
    pub fn stream_capture_status(&self, stream: u64) -> CuResult<i32> {
        self.stream_is_capturing(stream)?;
        let origin = self.capture_origin(stream);
        Ok(
            match origin
                .and_then(|o| self.streams.get(&o))
                .and_then(|s| s.capture.as_ref())
            {
                None => 0,
                Some(c) if c.invalidated => 2,
                Some(_) => 1,
            },
        )
    }

    /// `cuGraphInstantiateWithFlags` (auto-free, upload, device launch and
    /// node priority flags are accepted and change nothing here).
    pub fn graph_instantiate(&mut self, graph: u64, flags: u64) -> CuResult<u64> {
        if flags & !0xf != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let g = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let exec = GraphObj {
            ctx: g.ctx,
            ops: self.resolve(&g.ops),
            source: graph,
            memory: g.memory.clone(),
            disabled: HashSet::new(),
        };
        self.hold_graph_memory(&exec.memory);
        self.healthy(exec.ctx)?;
        let h = self.handle_of(Kind::Exec);
        self.execs.insert(h, exec);
        Ok(h)
    }

    /// `cuGraphLaunch`: runs the graph's work in order on `stream`. Work
    /// that reaches outside live memory faults the context, as on a GPU.
    pub fn graph_launch(&mut self, exec: u64, stream: u64) -> CuResult<()> {
        let ctx = self.stream_ctx(stream)?;
        let g = self.execs.get(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if g.ctx != ctx {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let ops = Arc::clone(&g.ops);
        let disabled = g.disabled.clone();
        self.refuse_in_capture(stream)?;
        self.assign_defaults(&ops);
        self.run_ops(ctx, &ops, Some(&disabled));
        Ok(())
    }

    /// Runs a launch's operations in order (but those `disabled`), until
    /// one faults the context; false then.
    fn run_ops(&mut self, ctx: u64, ops: &[Op], disabled: Option<&HashSet<usize>>) -> bool {
        for (at, op) in ops.iter().enumerate() {
            if disabled.is_some_and(|d| d.contains(&at)) {
                continue;
            }
            let r = match op {
                Op::Launch {
                    func,
                    kernel: Some(k),
                    params,
                    threads,
                    ..
                } => self.run_kernel(ctx, *func, *k, params, *threads),
                Op::Launch { kernel: None, .. } | Op::Removed => Ok(()),
                Op::Memset { dst, pattern, count } => self.run_memset(*dst, pattern, *count),
                Op::CopyDtoD { dst, src, n } => self.run_dtod(*dst, *src, *n),
                Op::CopyIn { dst, src, n } => self.run_host_copy(*dst, *src, *n, true),
                Op::CopyOut { dst, src, n } => self.run_host_copy(*src, *dst, *n, false),
                Op::Record { event } => {
                    if let Some(e) = self.events.get_mut(event) {
                        e.recorded = Some(Instant::now());
                        e.copies = engine::last();
                    }
                    Ok(())
                }
                Op::Host { func, data } => {
                    engine::submit_host(*func, *data as *mut std::ffi::c_void);
                    Ok(())
                }
                Op::Conditional { handle, kind, bodies } => {
                    if !self.run_conditional(ctx, *handle, *kind, bodies) {
                        return false;
                    }
                    Ok(())
                }
            };
            if r.is_err() {
                if let Some(c) = self.contexts.get_mut(&ctx) {
                    c.sticky = Some(CUDA_ERROR_ILLEGAL_ADDRESS);
                }
            }
            if self.contexts.get(&ctx).is_none_or(|c| c.sticky.is_some()) {
                return false;
            }
        }
        true
    }

    /// `cuGraphUpload`: checks the graph and the stream; nothing to upload.
    pub fn graph_upload(&mut self, exec: u64, stream: u64) -> CuResult<()> {
        let ctx = self.stream_ctx(stream)?;
        match self.execs.get(&exec) {
            Some(g) if g.ctx == ctx => Ok(()),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// `cuGraphGetNodes` without a node array: how many nodes it has.
    /// The nodes of a graph built node by node, or the operations of a
    /// captured one.
    /// `cuGraphGetNodes` with a node array: the graph's nodes in the order
    /// made.
    pub fn graph_nodes(&self, graph: u64) -> CuResult<Vec<u64>> {
        self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let mut nodes: Vec<u64> = self
            .nodes
            .iter()
            .filter(|(_, g)| **g == graph)
            .map(|(n, _)| *n)
            .collect();
        nodes.sort_unstable();
        Ok(nodes)
    }

    /// `cuGraphDebugDotPrint`: the graph's operations, in the order they
    /// run here, as a chain of Graphviz nodes.
    pub fn graph_dot(&self, graph: u64) -> CuResult<String> {
        let g = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let mut dot = format!("digraph gpupool_soft_graph_{graph:x} {{\n");
        for (i, op) in g.ops.iter().enumerate() {
            let kind = match op.node_type() {
                NODE_KERNEL => "kernel",
                NODE_MEMCPY => "memcpy",
                NODE_MEMSET => "memset",
                NODE_HOST => "host",
                NODE_CONDITIONAL => "conditional",
                NODE_EMPTY => "removed",
                _ => "event record",
            };
            dot.push_str(&format!("  n{i} [label=\"{kind}\"];\n"));
            if i > 0 {
                dot.push_str(&format!("  n{} -> n{i};\n", i - 1));
            }
        }
        dot.push_str("}\n");
        Ok(dot)
    }

    /// `cuGraphNodeGetType`.
    pub fn graph_node_type(&self, node: u64) -> CuResult<u32> {
        self.node_types.get(&node).copied().ok_or(CUDA_ERROR_INVALID_VALUE)
    }

    pub fn graph_node_count(&self, graph: u64) -> CuResult<usize> {
        let g = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let built = self.nodes.values().filter(|n| **n == graph).count();
        Ok(if built > 0 { built } else { g.ops.len() })
    }

    pub fn graph_exec_destroy(&mut self, exec: u64) -> CuResult<()> {
        let x = self.execs.remove(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        self.drop_graph_memory(x.memory);
        self.free_handles(Kind::Exec, [exec]);
        Ok(())
    }

    // ----- stream memory operations -----

    /// `cuStreamWriteValue*`: the word written at once, as all work here.
    pub fn stream_write_value(&mut self, stream: u64, addr: u64, value: u64, wide: bool, flags: u32) -> CuResult<()> {
        self.stream_ctx(stream)?;
        self.refuse_in_capture(stream)?;
        if flags > 1 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let n = if wide { 8 } else { 4 };
        let p = self.device_range(addr, n)?;
        // SAFETY: `device_range` checked `n` bytes at `addr` are allocated.
        unsafe { std::ptr::copy_nonoverlapping(value.to_le_bytes().as_ptr(), p, n as usize) };
        let mut waits = std::mem::take(&mut self.waits);
        // A wait on memory freed since is met: nothing can meet it now.
        let any = waits.recheck(|w| self.wait_met(w.addr, w.value, w.wide, w.flags).unwrap_or(true));
        self.waits = waits;
        if any {
            *WAITS_MET.lock().unwrap_or_else(|e| e.into_inner()) += 1;
            WAIT_MET.notify_all();
        }
        Ok(())
    }

    /// `cuStreamWaitValue*`: met by what is already written, or by a later
    /// stream write of a value ([`crate::waits`]).
    pub fn stream_wait_value(&mut self, stream: u64, addr: u64, value: u64, wide: bool, flags: u32) -> CuResult<()> {
        self.stream_ctx(stream)?;
        self.refuse_in_capture(stream)?;
        if self.wait_met(addr, value, wide, flags)? {
            return Ok(());
        }
        if BUILTIN_STREAMS.contains(&stream) {
            eprintln!("gpupool soft driver: a wait on a built-in stream that nothing written meets; refused (this double cannot wait there)");
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let wait = crate::waits::Unmet {
            addr,
            value,
            wide,
            flags,
        };
        self.waits.add(stream, wait);
        Ok(())
    }

    /// Whether the word at `addr` meets a stream wait for `value` as
    /// `flags` say.
    fn wait_met(&self, addr: u64, value: u64, wide: bool, flags: u32) -> CuResult<bool> {
        const FLUSH: u32 = 1 << 30;
        let n = if wide { 8 } else { 4 };
        let p = self.device_range(addr, n)?;
        let mut bytes = [0u8; 8];
        // SAFETY: `device_range` checked `n` bytes at `addr` are allocated.
        unsafe { std::ptr::copy_nonoverlapping(p, bytes.as_mut_ptr(), n as usize) };
        let (now, value) = if wide {
            (u64::from_le_bytes(bytes), value)
        } else {
            (
                u64::from(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]])),
                value & 0xffff_ffff,
            )
        };
        Ok(match flags & !FLUSH {
            // GEQ: (now - value) >= 0 as a signed word.
            0 if wide => (now.wrapping_sub(value) as i64) >= 0,
            0 => (now.wrapping_sub(value) as u32 as i32) >= 0,
            1 => now == value,
            2 => now & value != 0,
            3 if wide => !(now | value) != 0,
            3 => !(now as u32 | value as u32) != 0,
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        })
    }

    // ----- graphs built node by node -----

    pub fn graph_create(&mut self, flags: u32) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        Ok(self.empty_graph(ctx))
    }

    /// A new graph of `ctx` without nodes (`cuGraphCreate`, a capture's
    /// graph asked for, a conditional node's body).
    fn empty_graph(&mut self, ctx: u64) -> u64 {
        let h = self.handle_of(Kind::Graph);
        self.graphs.insert(
            h,
            GraphObj {
                ctx,
                ops: Arc::new(Vec::new()),
                source: h,
                memory: Vec::new(),
                disabled: HashSet::new(),
            },
        );
        h
    }

    /// Adds `op` (none for an empty node) after `deps`, all nodes of
    /// `graph`. Nodes run in the order they were added, which every set of
    /// dependencies allows: a node's dependencies are added before it.
    fn add_node(&mut self, graph: u64, deps: &[u64], op: Option<Op>) -> CuResult<u64> {
        if !self.graphs.contains_key(&graph) || deps.iter().any(|d| self.nodes.get(d) != Some(&graph)) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let kind = op.as_ref().map_or(NODE_EMPTY, Op::node_type);
        if let Some(op) = op {
            let g = self.graphs.get_mut(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            Arc::make_mut(&mut g.ops).push(op);
        }
        let h = self.handle();
        self.nodes.insert(h, graph);
        self.node_types.insert(h, kind);
        self.node_deps.insert(h, deps.iter().map(|d| (*d, 0)).collect());
        Ok(h)
    }

    pub fn graph_add_empty_node(&mut self, graph: u64, deps: &[u64]) -> CuResult<u64> {
        self.add_node(graph, deps, None)
    }

    pub fn graph_add_kernel_node(
        &mut self,
        graph: u64,
        deps: &[u64],
        f: u64,
        cfg: &LaunchConfig,
        fill: impl FnOnce(&[ptx::Param], &mut [u8]) -> CuResult<()>,
    ) -> CuResult<u64> {
        let ctx = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?.ctx;
        let op = self.launch_op(ctx, f, cfg, fill)?;
        let node = self.add_node(graph, deps, Some(op))?;
        let at = self.graphs[&graph].ops.len() - 1;
        self.node_ops.insert(node, at);
        Ok(node)
    }

    /// `cuGraphExecUpdate`: an executable graph takes `graph`'s operations
    /// when the two have the same shape (the same operations, kernels of
    /// the same functions); otherwise nothing changes and the result says
    /// the topology changed (`CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED`).
    pub fn graph_exec_update(&mut self, exec: u64, graph: u64) -> CuResult<u32> {
        let g = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let x = self.execs.get(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if g.ctx != x.ctx || !same_shape(&g.ops, &x.ops) {
            return Ok(2);
        }
        let ops = self.resolve(&g.ops);
        if let Some(x) = self.execs.get_mut(&exec) {
            x.ops = ops;
        }
        Ok(0)
    }

    /// `cuGraphExecKernelNodeSetParams`: the kernel node's launch in an
    /// executable graph, replaced (the graph it came from keeps its own).
    pub fn graph_exec_kernel_node_set(
        &mut self,
        exec: u64,
        node: u64,
        f: u64,
        cfg: &LaunchConfig,
        fill: impl FnOnce(&[ptx::Param], &mut [u8]) -> CuResult<()>,
    ) -> CuResult<()> {
        let ctx = self.execs.get(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?.ctx;
        let at = self.exec_site(exec, node, |op| matches!(op, Op::Launch { .. }))?;
        let op = self.launch_op(ctx, f, cfg, fill)?;
        self.set_exec_op(exec, at, op)
    }

    /// A memset node: `height` rows of `width` elements of `elem_size`
    /// bytes, `pitch` apart, checked against the allocations now.
    #[allow(clippy::too_many_arguments)]
    pub fn graph_add_memset_node(
        &mut self,
        graph: u64,
        deps: &[u64],
        dst: u64,
        pitch: u64,
        value: u32,
        elem_size: u32,
        width: u64,
        height: u64,
    ) -> CuResult<u64> {
        if !matches!(elem_size, 1 | 2 | 4) || width == 0 || height == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let row = width * elem_size as u64;
        if height > 1 && pitch < row {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let pattern = value.to_le_bytes()[..elem_size as usize].to_vec();
        let mut ops = Vec::new();
        for r in 0..height {
            let at = dst.checked_add(r * pitch).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            self.device_range(at, row)?;
            ops.push(Op::Memset {
                dst: at,
                pattern: pattern.clone(),
                count: width,
            });
        }
        let last = ops.pop();
        let one_row = ops.is_empty();
        let node = self.add_node(graph, deps, last)?;
        if one_row {
            let at = self.graphs[&graph].ops.len() - 1;
            self.node_ops.insert(node, at);
        }
        if !ops.is_empty() {
            let g = self.graphs.get_mut(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            let all = Arc::make_mut(&mut g.ops);
            let at = all.len() - 1;
            all.splice(at..at, ops);
        }
        Ok(node)
    }

    pub fn graph_add_copy_node(&mut self, graph: u64, deps: &[u64], dst: u64, src: u64, n: u64) -> CuResult<u64> {
        if n == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.device_range(dst, n)?;
        self.device_range(src, n)?;
        let node = self.add_node(graph, deps, Some(Op::CopyDtoD { dst, src, n }))?;
        let at = self.graphs[&graph].ops.len() - 1;
        self.node_ops.insert(node, at);
        Ok(node)
    }

    /// The index in an executable graph of the operation of `node`, a node
    /// of the graph it was made from, if that operation is of the kind
    /// `same` accepts.
    /// The operation of `node` in the top level of executable graph
    /// `exec`, if it is one `same` accepts.
    fn exec_op(&self, exec: u64, node: u64, same: impl Fn(&Op) -> bool) -> CuResult<usize> {
        match self.exec_site(exec, node, same)? {
            (path, at) if path.is_empty() => Ok(at),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// Where the operation of `node` lies in executable graph `exec` (at
    /// its top level, or in a conditional body: `conditionals::Site`), if
    /// it is one `same` accepts.
    fn exec_site(&self, exec: u64, node: u64, same: impl Fn(&Op) -> bool) -> CuResult<conditionals::Site> {
        let x = self.execs.get(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let (graph, at) = match (self.nodes.get(&node), self.node_ops.get(&node)) {
            (Some(g), Some(&at)) => (*g, at),
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        let path = self.body_path(x.source, graph)?;
        let ops = conditionals::ops_at(&x.ops, &path)?;
        match ops.get(at) {
            Some(op) if same(op) => Ok((path, at)),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    fn set_exec_op(&mut self, exec: u64, (path, at): conditionals::Site, op: Op) -> CuResult<()> {
        let x = self.execs.get_mut(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let ops = conditionals::ops_at_mut(&mut x.ops, &path)?;
        *Arc::make_mut(ops).get_mut(at).ok_or(CUDA_ERROR_INVALID_VALUE)? = op;
        Ok(())
    }

    /// `cuGraphExecMemsetNodeSetParams`: one row, as the driver asks.
    #[allow(clippy::too_many_arguments)]
    pub fn graph_exec_memset_node_set(
        &mut self,
        exec: u64,
        node: u64,
        dst: u64,
        value: u32,
        elem_size: u32,
        width: u64,
        height: u64,
    ) -> CuResult<()> {
        if !matches!(elem_size, 1 | 2 | 4) || width == 0 || height != 1 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let at = self.exec_site(exec, node, |op| matches!(op, Op::Memset { .. }))?;
        self.device_range(dst, width * elem_size as u64)?;
        let pattern = value.to_le_bytes()[..elem_size as usize].to_vec();
        self.set_exec_op(
            exec,
            at,
            Op::Memset {
                dst,
                pattern,
                count: width,
            },
        )
    }

    /// `cuGraphExecMemcpyNodeSetParams`: a device copy of one row.
    pub fn graph_exec_copy_node_set(&mut self, exec: u64, node: u64, dst: u64, src: u64, n: u64) -> CuResult<()> {
        if n == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let at = self.exec_site(exec, node, |op| matches!(op, Op::CopyDtoD { .. }))?;
        self.device_range(dst, n)?;
        self.device_range(src, n)?;
        self.set_exec_op(exec, at, Op::CopyDtoD { dst, src, n })
    }

    /// A child graph node: the child's operations, copied now (later
    /// changes to the child do not reach the node).
    pub fn graph_add_child_node(&mut self, graph: u64, deps: &[u64], child: u64) -> CuResult<u64> {
        if child == graph {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let c = self.graphs.get(&child).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        // A graph with memory nodes cannot be a child, as with the driver.
        if !c.memory.is_empty() {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let ops = self.resolve(&c.ops).to_vec();
        let node = self.add_node(graph, deps, None)?;
        let g = self.graphs.get_mut(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let start = g.ops.len();
        let len = ops.len();
        Arc::make_mut(&mut g.ops).extend(ops);
        self.child_ops.insert(node, (start, len));
        self.node_types.insert(node, NODE_GRAPH);
        Ok(node)
    }

    /// `cuGraphExecChildGraphNodeSetParams`: the child node of an
    /// executable graph runs `child`'s operations from now on; the child
    /// must have the shape of the graph the node was made with.
    pub fn graph_exec_child_node_set(&mut self, exec: u64, node: u64, child: u64) -> CuResult<()> {
        let x = self.execs.get(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let (start, len) = match (self.nodes.get(&node), self.child_ops.get(&node)) {
            (Some(g), Some(&r)) if *g == x.source && r.0 + r.1 <= x.ops.len() => r,
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        };
        let c = self.graphs.get(&child).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if c.ctx != x.ctx || !same_shape(&c.ops, &x.ops[start..start + len]) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let ops = self.resolve(&c.ops).to_vec();
        let x = self.execs.get_mut(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        Arc::make_mut(&mut x.ops).splice(start..start + len, ops);
        Ok(())
    }

    /// `cuGraphNodeSetEnabled` / `cuGraphNodeGetEnabled` (`set` None) of a
    /// kernel, memset or copy node in an executable graph.
    pub fn graph_node_enabled(&mut self, exec: u64, node: u64, set: Option<bool>) -> CuResult<bool> {
        let at = self.exec_op(exec, node, |op| {
            matches!(op, Op::Launch { .. } | Op::Memset { .. } | Op::CopyDtoD { .. })
        })?;
        let x = self.execs.get_mut(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        match set {
            Some(true) => {
                x.disabled.remove(&at);
            }
            Some(false) => {
                x.disabled.insert(at);
            }
            None => {}
        }
        Ok(!x.disabled.contains(&at))
    }

    /// `cuGraphExecEventRecordNodeSetEvent` and
    /// `cuGraphExecEventWaitNodeSetEvent`: the event node of an executable
    /// graph records (or waits for) `event` from now on.
    pub fn graph_exec_event_node_set(&mut self, exec: u64, node: u64, event: u64, record: bool) -> CuResult<()> {
        let ctx = self.execs.get(&exec).ok_or(CUDA_ERROR_INVALID_VALUE)?.ctx;
        if self.events.get(&event).is_none_or(|e| e.ctx != ctx) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        if record {
            let at = self.exec_site(exec, node, |op| matches!(op, Op::Record { .. }))?;
            self.set_exec_op(exec, at, Op::Record { event })
        } else {
            let source = self.execs[&exec].source;
            match self.nodes.get(&node) {
                Some(g) if *g == source && self.event_waits.contains_key(&node) => Ok(()),
                _ => Err(CUDA_ERROR_INVALID_VALUE),
            }
        }
    }

    /// Event nodes: a record completes the event where the graph reaches
    /// it; a wait needs nothing here, where a graph's work runs in order.
    pub fn graph_add_event_node(&mut self, graph: u64, deps: &[u64], event: u64, record: bool) -> CuResult<u64> {
        let ctx = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?.ctx;
        // Not in a conditional node's body (CUDA's rule).
        if self.is_body(graph) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if self.events.get(&event).is_none_or(|e| e.ctx != ctx) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        let node = self.add_node(graph, deps, record.then_some(Op::Record { event }))?;
        if record {
            let at = self.graphs[&graph].ops.len() - 1;
            self.node_ops.insert(node, at);
        } else {
            self.event_waits.insert(node, event);
            self.node_types.insert(node, NODE_WAIT_EVENT);
        }
        Ok(node)
    }

    /// `cuGraphAddDependencies` (`edges`: the edges' data, or none).
    pub fn graph_add_dependencies(&mut self, graph: u64, from: &[u64], to: &[u64], edges: &[u64]) -> CuResult<()> {
        if from.len() != to.len() || !(edges.is_empty() || edges.len() == to.len()) || !self.graphs.contains_key(&graph)
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let of_graph = |n: &u64| self.nodes.get(n) == Some(&graph);
        if !from.iter().all(of_graph) || !to.iter().all(of_graph) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // Nodes run in the order added; an edge against that order is one
        // this double cannot honour.
        if from.iter().zip(to).any(|(f, t)| f >= t) {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        for (i, (f, t)) in from.iter().zip(to).enumerate() {
            let data = edges.get(i).copied().unwrap_or(0);
            self.node_deps.entry(*t).or_default().push((*f, data));
        }
        Ok(())
    }

    pub fn graph_destroy(&mut self, graph: u64) -> CuResult<()> {
        // A conditional node's body goes with the graph holding the node,
        // and a child graph node's graph with the node.
        if self.is_body(graph) || self.is_child_graph(graph) || !self.graphs.contains_key(&graph) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        self.forget_graph(graph);
        Ok(())
    }

    /// `graph` goes, with its nodes and conditional bodies.
    fn forget_graph(&mut self, graph: u64) {
        self.drop_bodies(graph);
        self.nodes.retain(|_, g| *g != graph);
        let nodes = &self.nodes;
        self.node_ops.retain(|n, _| nodes.contains_key(n));
        self.child_ops.retain(|n, _| nodes.contains_key(n));
        self.event_waits.retain(|n, _| nodes.contains_key(n));
        self.node_types.retain(|n, _| nodes.contains_key(n));
        self.node_deps.retain(|n, _| nodes.contains_key(n));
        self.node_memory.retain(|n, _| nodes.contains_key(n));
        self.node_attrs.retain(|n, _| nodes.contains_key(n));
        self.clones.retain(|(n, c), _| nodes.contains_key(n) && *c != graph);
        if let Some(g) = self.graphs.remove(&graph) {
            self.drop_graph_memory(g.memory);
            self.free_handles(Kind::Graph, [graph]);
        }
        self.drop_orphan_child_graphs();
    }

    // ----- occupancy -----

    pub fn occupancy_max_blocks(&mut self, f: u64, block_size: i32, dyn_smem: u64, flags: u32) -> CuResult<i32> {
        if flags > 1 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let max_threads = self.function(f)?.attrs[ATTR_MAX_THREADS];
        let max_dyn = self.function(f)?.attrs[ATTR_MAX_DYNAMIC_SHARED];
        if block_size <= 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if block_size > max_threads || dyn_smem > max_dyn as u64 {
            return Ok(0);
        }
        let mut blocks = MAX_THREADS_PER_SM / block_size;
        if dyn_smem > 0 {
            let per_block = dyn_smem + RESERVED_SHARED_PER_BLOCK as u64;
            blocks = blocks.min((MAX_SHARED_PER_SM as u64 / per_block) as i32);
        }
        Ok(blocks.max(0))
    }

    /// A cooperative launch's blocks must all be resident at once.
    pub fn check_cooperative(&mut self, f: u64, cfg: &LaunchConfig) -> CuResult<()> {
        let threads = cfg.block.iter().map(|&b| b as u64).product::<u64>();
        let blocks = cfg.grid.iter().map(|&g| g as u64).product::<u64>();
        let per_sm = self.occupancy_max_blocks(f, threads.min(i32::MAX as u64) as i32, cfg.shared_mem as u64, 0)?;
        if blocks > per_sm as u64 * SM_COUNT as u64 {
            return Err(CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE);
        }
        Ok(())
    }

    pub fn occupancy_max_potential_block_size(&mut self, f: u64, dyn_smem: u64, limit: i32) -> CuResult<(i32, i32)> {
        let max_threads = self.function(f)?.attrs[ATTR_MAX_THREADS];
        let mut block = max_threads.min(MAX_THREADS_PER_BLOCK as i32);
        if limit > 0 {
            block = block.min(limit);
        }
        if block >= 32 {
            block -= block % 32;
        }
        let blocks = self.occupancy_max_blocks(f, block, dyn_smem, 0)?;
        Ok((SM_COUNT * blocks, block))
    }

    pub fn occupancy_available_dyn_smem(&mut self, f: u64, num_blocks: i32, block_size: i32) -> CuResult<u64> {
        self.function(f)?;
        if num_blocks <= 0 || block_size <= 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let per_block = (MAX_SHARED_PER_SM / num_blocks - RESERVED_SHARED_PER_BLOCK).max(0);
        Ok(per_block.min(MAX_SHARED_PER_BLOCK_OPTIN) as u64)
    }

    pub fn occupancy_max_active_clusters(&mut self, f: u64) -> CuResult<i32> {
        self.function(f)?;
        Ok(SM_COUNT)
    }

    /// `cuOccupancyMaxPotentialClusterSize`: the portable most (8) for any
    /// block the device can run.
    pub fn occupancy_max_potential_cluster_size(&mut self, f: u64, block: [u32; 3]) -> CuResult<i32> {
        self.function(f)?;
        let threads = block.iter().map(|&b| u64::from(b)).product::<u64>();
        if threads == 0 || threads > 1024 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        Ok(8)
    }

    /// `cuCtxResetPersistingL2Cache`: nothing persists here.
    pub fn ctx_reset_persisting_l2_cache(&mut self) -> CuResult<()> {
        self.active_ctx().map(drop)
    }

    /// `cuDeviceGetTexture1DLinearMaxWidth`: 2^28 elements
    /// (`MAXIMUM_TEXTURE1D_LINEAR_WIDTH`) of any valid format and channel
    /// count.
    pub fn texture_1d_linear_max_width(&self, format: u32, channels: u32, dev: i32) -> CuResult<usize> {
        self.check_device(dev)?;
        crate::texture::element_size(format, channels).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        Ok(1 << 28)
    }

    /// `cuCtxRecordEvent`: the event follows all the context's work, which
    /// here is all done but for queued copies; refused while a stream of the
    /// context captures.
    pub fn ctx_record_event(&mut self, ctx: u64, event: u64) -> CuResult<()> {
        self.healthy(ctx)?;
        let ev_ctx = self.events.get(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?.ctx;
        if !self.events_may_cross(ev_ctx, ctx) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        if self.streams.values().any(|s| s.ctx == ctx && s.capture.is_some()) {
            return Err(CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED);
        }
        if let Some(e) = self.events.get_mut(&event) {
            e.captured_in = None;
            e.recorded = Some(Instant::now());
            e.copies = engine::last();
        }
        Ok(())
    }

    /// `cuCtxWaitEvent`: work here runs in order, so only checked.
    pub fn ctx_wait_event(&mut self, ctx: u64, event: u64) -> CuResult<()> {
        self.healthy(ctx)?;
        self.events.get(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        Ok(())
    }

    // ----- streams -----

    pub fn stream_create(&mut self, flags: u32) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        if flags & !1 != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        Ok(self.new_stream(ctx))
    }

    /// A new stream of `ctx`.
    fn new_stream(&mut self, ctx: u64) -> u64 {
        let h = self.handle_of(Kind::Stream);
        self.streams.insert(
            h,
            StreamObj {
                ctx,
                capture: None,
                joined: None,
            },
        );
        h
    }

    pub fn stream_destroy(&mut self, stream: u64) -> CuResult<()> {
        self.streams.remove(&stream).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        self.waits.forget_stream(stream);
        self.stream_attrs.retain(|(_, s), _| *s != stream);
        self.free_handles(Kind::Stream, [stream]);
        Ok(())
    }

    /// The context `stream` belongs to, which must be healthy.
    /// `cuStreamSetAttribute`: the stream attributes a GPU has, checked as
    /// the driver checks them.
    pub fn stream_set_attribute(&mut self, stream: u64, attr: u32, value: &[u8; STREAM_ATTR_BYTES]) -> CuResult<()> {
        let ctx = self.stream_ctx(stream)?;
        let int = |at: usize| i32::from_ne_bytes(value[at..at + 4].try_into().unwrap_or_default());
        let mut stored = *value;
        match attr {
            STREAM_ATTR_ACCESS_POLICY_WINDOW => {
                let bytes = u64::from_ne_bytes(value[8..16].try_into().unwrap_or_default());
                let hit_ratio = f32::from_ne_bytes(value[16..20].try_into().unwrap_or_default());
                let props_ok = (0..=2).contains(&int(20)) && (0..=2).contains(&int(24));
                if bytes > MAX_ACCESS_POLICY_WINDOW || !(0.0..=1.0).contains(&hit_ratio) || !props_ok {
                    return Err(CUDA_ERROR_INVALID_VALUE);
                }
            }
            STREAM_ATTR_SYNCHRONIZATION_POLICY if !(1..=4).contains(&int(0)) => return Err(CUDA_ERROR_INVALID_VALUE),
            STREAM_ATTR_PRIORITY => {
                let p = int(0).clamp(-5, 0);
                stored = [0; STREAM_ATTR_BYTES];
                stored[..4].copy_from_slice(&p.to_ne_bytes());
            }
            STREAM_ATTR_MEM_SYNC_DOMAIN if !(0..=1).contains(&int(0)) => return Err(CUDA_ERROR_INVALID_VALUE),
            STREAM_ATTR_SYNCHRONIZATION_POLICY
            | STREAM_ATTR_MEM_SYNC_DOMAIN_MAP
            | STREAM_ATTR_MEM_SYNC_DOMAIN
            | STREAM_ATTR_NVLINK_UTIL_CENTRIC => {}
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        self.stream_attrs.entry((ctx, stream)).or_default().insert(attr, stored);
        Ok(())
    }

    pub fn stream_get_attribute(&self, stream: u64, attr: u32) -> CuResult<[u8; STREAM_ATTR_BYTES]> {
        let ctx = self.stream_ctx(stream)?;
        if !STREAM_ATTRS.contains(&attr) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let set = self.stream_attrs.get(&(ctx, stream)).and_then(|a| a.get(&attr));
        let mut value = set.copied().unwrap_or([0; STREAM_ATTR_BYTES]);
        if set.is_none() && attr == STREAM_ATTR_SYNCHRONIZATION_POLICY {
            value[..4].copy_from_slice(&1i32.to_ne_bytes()); // CU_SYNC_POLICY_AUTO
        }
        Ok(value)
    }

    pub fn stream_copy_attributes(&mut self, dst: u64, src: u64) -> CuResult<()> {
        let dst_ctx = self.stream_ctx(dst)?;
        let src_ctx = self.stream_ctx(src)?;
        let attrs = self.stream_attrs.get(&(src_ctx, src)).cloned().unwrap_or_default();
        self.stream_attrs.insert((dst_ctx, dst), attrs);
        Ok(())
    }

    fn stream_ctx(&self, stream: u64) -> CuResult<u64> {
        if BUILTIN_STREAMS.contains(&stream) {
            self.active_ctx()
        } else {
            let s = self.streams.get(&stream).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
            self.healthy(s.ctx)
        }
    }

    /// Answers the unmet stream waits the stream is behind.
    pub fn stream_synchronize(&mut self, stream: u64) -> CuResult<Vec<u64>> {
        self.stream_ctx(stream)?;
        self.refuse_in_capture(stream)?;
        Ok(self.waits.of_stream(stream))
    }

    /// `cuLaunchHostFunc`: checks the stream; the caller queues the function
    /// on the engine's thread. A capture cannot hold it in this double.
    /// `cuLaunchHostFunc`: true when the function is to be queued now;
    /// false when the stream captures, and the capture took it as a host
    /// node.
    pub fn launch_host_func(&mut self, stream: u64, func: engine::HostFn, data: usize) -> CuResult<bool> {
        self.stream_ctx(stream)?;
        match self.capture_of(stream) {
            Some(c) => {
                c.ops.push(Op::Host { func, data });
                Ok(false)
            }
            None => Ok(true),
        }
    }

    /// `cuGraphAddMemAllocNode`: the graph's memory, made now and the same
    /// at every launch (as a capture's allocations are here).
    pub fn graph_add_mem_alloc_node(
        &mut self,
        graph: u64,
        deps: &[u64],
        device: i32,
        size: u64,
    ) -> CuResult<(u64, u64)> {
        let ctx = self.graphs.get(&graph).ok_or(CUDA_ERROR_INVALID_VALUE)?.ctx;
        if self.device(device)? != self.ctx_device(ctx) || size == 0 || self.is_body(graph) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let node = self.add_node(graph, deps, None)?;
        let ptr = self.allocate(ctx, size, AllocKind::Device)?;
        self.graph_owned.insert(ptr);
        self.hold_graph_memory(&[ptr]);
        if let Some(g) = self.graphs.get_mut(&graph) {
            g.memory.push(ptr);
        }
        self.node_types.insert(node, NODE_MEM_ALLOC);
        self.node_memory.insert(node, (ptr, size));
        Ok((node, ptr))
    }

    /// `cuGraphAddMemFreeNode` of the graph's own memory: nothing happens
    /// here when it runs (the memory stays the graph's).
    pub fn graph_add_mem_free_node(&mut self, graph: u64, deps: &[u64], ptr: u64) -> CuResult<u64> {
        if !self
            .graphs
            .get(&graph)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?
            .memory
            .contains(&ptr)
        {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let node = self.add_node(graph, deps, None)?;
        self.node_types.insert(node, NODE_MEM_FREE);
        self.node_memory.insert(node, (ptr, 0));
        Ok(node)
    }

    /// `cuGraphAddHostNode`.
    pub fn graph_add_host_node(
        &mut self,
        graph: u64,
        deps: &[u64],
        func: engine::HostFn,
        data: usize,
    ) -> CuResult<u64> {
        // Not in a conditional node's body (CUDA's rule).
        if self.is_body(graph) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let node = self.add_node(graph, deps, Some(Op::Host { func, data }))?;
        let at = self.graphs[&graph].ops.len() - 1;
        self.node_ops.insert(node, at);
        Ok(node)
    }

    /// `cuStreamWaitEvent`. Work runs at enqueue, so waiting is nothing,
    /// except in captures: a stream that waits for an event recorded in a
    /// capture joins it (its later work is captured there), and a wait
    /// inside a capture for an event recorded in the same one orders
    /// nothing more (the capture is one sequence here).
    pub fn stream_wait_event(&mut self, stream: u64, event: u64, flags: u32) -> CuResult<()> {
        self.stream_ctx(stream)?;
        let captured_in = self.events.get(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?.captured_in;
        if flags > 1 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let origin = captured_in.filter(|o| self.streams.get(o).is_some_and(|s| s.capture.is_some()));
        match (self.capture_origin(stream), origin) {
            (None, Some(o)) => {
                if let Some(s) = self.streams.get_mut(&stream) {
                    s.joined = Some(o);
                }
                Ok(())
            }
            (Some(mine), Some(o)) if mine == o => Ok(()),
            (Some(_), _) => self.refuse_in_capture(stream),
            (None, None) => {
                self.waits.follow(stream, event);
                Ok(())
            }
        }
    }

    pub fn stream_is_capturing(&self, stream: u64) -> CuResult<i32> {
        if BUILTIN_STREAMS.contains(&stream) {
            self.current_ctx()?;
        } else if !self.streams.contains_key(&stream) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        Ok(0) // CU_STREAM_CAPTURE_STATUS_NONE
    }

    // ----- events -----

    pub fn event_create(&mut self, flags: u32) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        if flags & !0x7 != 0 || (flags & EVENT_INTERPROCESS != 0 && flags & EVENT_DISABLE_TIMING == 0) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = self.handle_of(Kind::Event);
        self.events.insert(
            h,
            EventObj {
                ctx,
                flags,
                recorded: None,
                copies: 0,
                captured_in: None,
            },
        );
        Ok(h)
    }

    pub fn event_destroy(&mut self, event: u64) -> CuResult<()> {
        self.events.remove(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        self.waits.forget_event(event);
        self.free_handles(Kind::Event, [event]);
        Ok(())
    }

    pub fn event_record(&mut self, event: u64, stream: u64) -> CuResult<()> {
        let ev_ctx = self.events.get(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?.ctx;
        let ctx = self.stream_ctx(stream)?;
        if !self.events_may_cross(ev_ctx, ctx) {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        let origin = self.capture_origin(stream);
        if let Some(e) = self.events.get_mut(&event) {
            e.captured_in = origin;
            if origin.is_none() {
                e.recorded = Some(Instant::now());
                e.copies = engine::last();
                self.waits.record(event, stream);
                // Another process sees it done: so it is (see `ipc`).
                if e.flags & EVENT_INTERPROCESS != 0 {
                    engine::wait_for(e.copies);
                    self.waits.forget_event(event);
                }
            }
        }
        Ok(())
    }

    /// `cuEventSynchronize`: an event is complete once the copies queued
    /// before its record are done (at once if it was never recorded) and
    /// the stream waits it is behind are met: answers those not yet met.
    pub fn event_wait(&mut self, event: u64) -> CuResult<Vec<u64>> {
        let e = self.events.get(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        engine::wait_for(e.copies);
        self.healthy(e.ctx)?;
        Ok(self.waits.of_event(event))
    }

    /// `cuEventQuery`: `CUDA_ERROR_NOT_READY` while copies queued before its
    /// record are still going, or a stream wait it is behind is unmet.
    pub fn event_query(&mut self, event: u64) -> CuResult<()> {
        let e = self.events.get(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        self.healthy(e.ctx)?;
        if engine::is_done(e.copies) && self.waits.of_event(event).is_empty() {
            Ok(())
        } else {
            Err(CUDA_ERROR_NOT_READY)
        }
    }

    /// `cuStreamQuery`: `CUDA_ERROR_NOT_READY` while queued copies are going
    /// (the engine's queue is shared by all streams).
    pub fn stream_query(&mut self, stream: u64) -> CuResult<()> {
        self.stream_ctx(stream)?;
        self.refuse_in_capture(stream)?;
        if engine::is_done(engine::last()) && self.waits.of_stream(stream).is_empty() {
            Ok(())
        } else {
            Err(CUDA_ERROR_NOT_READY)
        }
    }

    /// Whether `ptr..ptr+n` lies in one pinned host allocation.
    pub fn is_pinned(&self, ptr: u64, n: u64) -> bool {
        self.host_allocs
            .range(..=ptr)
            .next_back()
            .is_some_and(|(&start, h)| ptr.checked_add(n).is_some_and(|end| end <= start + h.len))
    }

    pub fn event_elapsed(&self, start: u64, end: u64) -> CuResult<f32> {
        let s = self.events.get(&start).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let e = self.events.get(&end).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        self.healthy(s.ctx)?;
        self.healthy(e.ctx)?;
        if (s.flags | e.flags) & EVENT_DISABLE_TIMING != 0 {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        }
        let (Some(t0), Some(t1)) = (s.recorded, e.recorded) else {
            return Err(CUDA_ERROR_INVALID_HANDLE);
        };
        let ms = if t1 >= t0 {
            (t1 - t0).as_secs_f64() * 1e3
        } else {
            -((t0 - t1).as_secs_f64() * 1e3)
        };
        Ok(ms as f32)
    }
}
