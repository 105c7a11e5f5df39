//! Requests (client to server) and replies (server to client).
//!
//! Handles (`Handle`) are the server driver's own values: the shim hands them
//! to the program unchanged, and the server looks every one up in that
//! client's own tables before use. Device pointers are the GPU's real
//! addresses, for the same reason (programs do arithmetic on them).
//!
//! Bulk data (copy payloads, module images, kernel parameter blocks) travels
//! in the frame's bulk tail, never inside these messages.

use serde::{Deserialize, Serialize};

/// An opaque server-side handle (context, module, function, library, kernel,
/// stream, event).
pub type Handle = u64;
/// A device address.
pub type DevicePtr = u64;
/// A CUDA driver status code (`CUresult`), carried as the driver's number.
pub type Status = u32;

/// Which stream a streamed call runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StreamRef {
    /// The NULL stream under legacy semantics (also `CU_STREAM_LEGACY`).
    Legacy,
    /// The per-thread default stream of one client thread (`_ptsz`/`_ptds`
    /// entry points, or `CU_STREAM_PER_THREAD`). The server keeps one stream
    /// per client thread id.
    PerThread(u64),
    /// A stream the client created.
    Handle(Handle),
}

/// Handles a client names itself (streams and events created without a
/// round trip) carry this tag in their top 16 bits: no driver hands out a
/// user-space pointer there, so they cannot collide with the driver's own.
/// The top bit is clear: bindings keep handles in an `intptr_t`
/// (cuda-python's refuse negative ones).
pub const CLIENT_HANDLE_TAG: Handle = 0x49a0_0000_0000_0000;

/// Whether `h` is a client-named handle.
pub fn is_client_handle(h: Handle) -> bool {
    h & 0xffff_0000_0000_0000 == CLIENT_HANDLE_TAG && h != CLIENT_HANDLE_TAG
}

/// One requested driver operation. The comment on each says whether the
/// client waits for it (sync) or streams it (async: status-only, errors kept
/// for the next synchronising call).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Request {
    /// sync -> `Reply::Handle` (the primary context).
    PrimaryCtxRetain { device: i32 },
    /// async.
    PrimaryCtxRelease { device: i32 },
    /// sync.
    PrimaryCtxSetFlags { device: i32, flags: u32 },
    /// sync.
    PrimaryCtxReset { device: i32 },
    /// sync -> `Reply::Handle`.
    CtxCreate { device: i32, flags: u32 },
    /// async.
    CtxDestroy { ctx: Handle },
    /// sync. Waits for all work of the context; returns any kept async error.
    CtxSynchronize { ctx: Handle },
    /// sync -> `Reply::Size`.
    CtxGetLimit { ctx: Handle, limit: i32 },
    /// sync.
    CtxSetLimit { ctx: Handle, limit: i32, value: u64 },
    /// sync -> `Reply::MemInfo`.
    MemGetInfo { ctx: Handle },
    /// sync -> `Reply::Pointer`.
    MemAlloc { ctx: Handle, size: u64 },
    /// async.
    MemFree { ctx: Handle, ptr: DevicePtr },
    /// sync -> `Reply::Pointer`: stream-ordered allocation
    /// (`cuMemAllocAsync`, or `cuMemAllocFromPoolAsync` with a `pool`; 0 is
    /// the device's current pool).
    MemAllocAsync {
        ctx: Handle,
        stream: StreamRef,
        size: u64,
        pool: Handle,
    },
    /// async: stream-ordered free (`cuMemFreeAsync`).
    MemFreeAsync {
        ctx: Handle,
        stream: StreamRef,
        ptr: DevicePtr,
    },
    /// sync -> `Reply::Handle`: the device's default pool, or (`current`)
    /// the pool its stream-ordered allocations come from now.
    MemPoolOfDevice { device: i32, current: bool },
    /// sync: `cuDeviceSetMemPool`.
    MemPoolSetCurrent { device: i32, pool: Handle },
    /// sync -> `Reply::Handle`: a pool of device memory on `device`, at most
    /// `max_size` bytes (0: no limit of its own), exportable as
    /// `handle_types` says (`CUmemAllocationHandleType` bits; only the file
    /// descriptor, 1, is offered; version 18).
    MemPoolCreate {
        device: i32,
        max_size: u64,
        handle_types: u32,
    },
    /// sync.
    MemPoolDestroy { pool: Handle },
    /// sync -> `Reply::Size`: a pool attribute (`CUmemPool_attribute`),
    /// after setting it to `set` when given. 32-bit attributes travel as
    /// their value.
    MemPoolAttribute { pool: Handle, attr: i32, set: Option<u64> },
    /// sync -> `Reply::Size`: a graph memory attribute of a device
    /// (`cuDeviceGetGraphMemAttribute`), after setting it to `set` when
    /// given (`cuDeviceSetGraphMemAttribute`).
    GraphMemAttribute { device: i32, attr: i32, set: Option<u64> },
    /// sync: `cuDeviceGraphMemTrim`.
    GraphMemTrim { device: i32 },
    /// sync -> `Reply::Bytes` (64): a handle another session of this server
    /// can import for the session's physical memory `handle`
    /// (`cuMemExportToShareableHandle` of a file descriptor).
    MemExport { handle: Handle },
    /// sync -> `Reply::Pair(handle, device)`: physical memory of another
    /// session imported from the handle `MemExport` made
    /// (`cuMemImportFromShareableHandle`).
    MemImport { token: Vec<u8> },
    /// sync: `cuMemPoolTrimTo`.
    MemPoolTrimTo { pool: Handle, keep: u64 },
    /// sync: `cuMemPoolSetAccess` of one device other than the pool's own
    /// (`CUmemAccess_flags`: 0 none, 3 read-write). Version 17.
    MemPoolSetAccess { pool: Handle, device: i32, flags: u32 },
    /// sync -> `Reply::Bytes` (64): a handle another session of this server
    /// can import the session's exportable pool `pool` with
    /// (`cuMemPoolExportToShareableHandle` of a file descriptor). Version 18.
    MemPoolExport { pool: Handle },
    /// sync -> `Reply::Pair(pool, device)`: another session's pool imported
    /// from the handle `MemPoolExport` made
    /// (`cuMemPoolImportFromShareableHandle`). Version 18.
    MemPoolImport { token: Vec<u8> },
    /// sync -> `Reply::Bytes` (64): what another session that imported the
    /// pool of the session's allocation `ptr` imports the allocation with
    /// (`cuMemPoolExportPointer`). Version 18.
    MemPoolExportPointer { ctx: Handle, ptr: DevicePtr },
    /// sync -> `Reply::Global`: the allocation `token` names, from the
    /// imported pool `pool`, mapped in `ctx` (`cuMemPoolImportPointer`).
    /// The session frees it as its own. Version 18.
    MemPoolImportPointer { ctx: Handle, pool: Handle, token: Vec<u8> },
    /// sync -> `Reply::Pointer`: a range of virtual addresses
    /// (`cuMemAddressReserve`; `alignment` 0: the driver's).
    MemAddressReserve { size: u64, alignment: u64 },
    /// sync: `cuMemAddressFree` of a whole reservation with nothing mapped.
    MemAddressFree { ptr: DevicePtr, size: u64 },
    /// sync -> `Reply::Handle`: physical memory on `device` (`cuMemCreate`),
    /// shareable as `handle_types` says (the driver's bits).
    MemCreate { device: i32, size: u64, handle_types: u32 },
    /// sync: `cuMemRelease`.
    MemRelease { handle: Handle },
    /// sync -> `Reply::Pair(handle, device)`: `cuMemRetainAllocationHandle`
    /// of an address the session mapped, whose physical memory it still
    /// holds a handle to; one more reference, released by `MemRelease`.
    MemRetainAllocationHandle { ptr: DevicePtr },
    /// sync: map `size` bytes of `handle` from `offset` at `ptr`, inside a
    /// reservation of the session (`cuMemMap`); the range is then the
    /// session's device memory, filed under `ctx`.
    MemMap {
        ctx: Handle,
        ptr: DevicePtr,
        size: u64,
        offset: u64,
        handle: Handle,
    },
    /// sync: `cuMemUnmap` of whole mappings.
    MemUnmap { ptr: DevicePtr, size: u64 },
    /// sync: `cuMemSetAccess` for one device of the session.
    MemSetAccess {
        ptr: DevicePtr,
        size: u64,
        device: i32,
        flags: u32,
    },
    /// sync -> `Reply::Size`: `cuMemGetAllocationGranularity` for device
    /// memory on `device`, minimum or (`recommended`) recommended.
    MemGranularity { device: i32, recommended: bool },
    /// sync -> `Reply::Handle`: a CUDA array (`cuArray3DCreate`; a 2D array
    /// has depth 0, a 1D one height 0 too) in `ctx`.
    ArrayCreate { ctx: Handle, desc: ArrayDesc },
    /// sync: `cuArrayDestroy`, once no texture or surface object of the
    /// session names it.
    ArrayDestroy { array: Handle },
    /// Rows `first_row .. first_row + rows` of a host-to-array copy of
    /// `width`-byte rows: row `r` lands at row `dst.y + r` of slice `dst.z`,
    /// from byte `dst.x`. The rows, packed, are the bulk tail (at most a copy
    /// chunk). Async unless the frame asks for a reply.
    MemcpyHtoA {
        ctx: Handle,
        stream: StreamRef,
        dst: ArrayPos,
        width: u64,
        first_row: u64,
        rows: u64,
    },
    /// Array-to-host copy of `height` rows of `width` bytes from `src`:
    /// answered as `MemcpyDtoH2D` is, rows packed into `Reply::Data` chunks.
    MemcpyAtoH {
        ctx: Handle,
        stream: StreamRef,
        src: ArrayPos,
        width: u64,
        height: u64,
        sync: bool,
    },
    /// Copy of `height` rows of `width` bytes between device memory and
    /// arrays, at least one end an array. async (or sync when the frame
    /// asks).
    MemcpyArray {
        ctx: Handle,
        stream: StreamRef,
        dst: CopyEnd,
        src: CopyEnd,
        width: u64,
        height: u64,
    },
    /// sync -> `Reply::Handle`: a texture object (`cuTexObjectCreate`, no
    /// resource view) over the session's own array or device memory.
    TexObjectCreate {
        ctx: Handle,
        resource: Resource,
        texture: TextureDesc,
    },
    /// sync: `cuTexObjectDestroy`.
    TexObjectDestroy { tex: Handle },
    /// sync -> `Reply::Handle`: a surface object over an array of the
    /// session made for surface load/store (`cuSurfObjectCreate`).
    SurfObjectCreate { ctx: Handle, array: Handle },
    /// sync: `cuSurfObjectDestroy`.
    SurfObjectDestroy { surf: Handle },
    /// One chunk of a host-to-device copy; the bytes are the bulk tail.
    /// `offset` is the chunk's position within the whole copy of `total`
    /// bytes starting at `dst`. Async unless the frame asks for a reply (a
    /// synchronous copy asks on its last chunk).
    MemcpyHtoD {
        ctx: Handle,
        stream: StreamRef,
        dst: DevicePtr,
        offset: u64,
        total: u64,
    },
    /// Device-to-host copy: the server answers with `Reply::Data` chunks
    /// (bulk tails) and ends with `Reply::Done`. Both the sync and async forms
    /// ask for a reply, since the data must come back.
    /// `sync` marks the synchronous form, which (like every synchronising
    /// call) also returns and clears the context's kept error.
    MemcpyDtoH {
        ctx: Handle,
        stream: StreamRef,
        src: DevicePtr,
        len: u64,
        sync: bool,
    },
    /// async (or sync when the frame asks).
    MemcpyDtoD {
        ctx: Handle,
        stream: StreamRef,
        dst: DevicePtr,
        src: DevicePtr,
        len: u64,
    },
    /// Memset of `count` elements of `elem_size` (1, 2 or 4) bytes.
    Memset {
        ctx: Handle,
        stream: StreamRef,
        dst: DevicePtr,
        value: u32,
        elem_size: u8,
        count: u64,
    },
    /// Rows `first_row .. first_row + rows` of a 2D host-to-device copy of
    /// `width`-byte rows into `dst`, row `r` at `dst + r * pitch`; the rows,
    /// packed, are the bulk tail (at most a copy chunk: the client sends a
    /// long copy as several bands). Async unless the frame asks for a reply.
    MemcpyHtoD2D {
        ctx: Handle,
        stream: StreamRef,
        dst: DevicePtr,
        pitch: u64,
        width: u64,
        first_row: u64,
        rows: u64,
    },
    /// 2D device-to-host copy of `height` rows of `width` bytes from `src`
    /// (row `r` at `src + r * pitch`): answered as `MemcpyDtoH` is, with the
    /// rows packed into `Reply::Data` chunks of whole rows. A row wider than
    /// a copy chunk is refused; the client copies such rows one by one.
    MemcpyDtoH2D {
        ctx: Handle,
        stream: StreamRef,
        src: DevicePtr,
        pitch: u64,
        width: u64,
        height: u64,
        sync: bool,
    },
    /// 2D device-to-device copy. async (or sync when the frame asks).
    MemcpyDtoD2D {
        ctx: Handle,
        stream: StreamRef,
        dst: DevicePtr,
        dst_pitch: u64,
        src: DevicePtr,
        src_pitch: u64,
        width: u64,
        height: u64,
    },
    /// 2D memset of `height` rows of `width` elements of `elem_size` (1, 2
    /// or 4) bytes, row `r` at `dst + r * pitch`. async (or sync).
    Memset2D {
        ctx: Handle,
        stream: StreamRef,
        dst: DevicePtr,
        pitch: u64,
        value: u32,
        elem_size: u8,
        width: u64,
        height: u64,
    },
    /// sync -> `Reply::Handle`. The image is the bulk tail; with no tail the
    /// server loads the image it holds under `sha256`, or answers
    /// `Reply::ImageUnknown` so the client sends it.
    ModuleLoad { ctx: Handle, sha256: [u8; 32] },
    /// sync.
    ModuleUnload { ctx: Handle, module: Handle },
    /// sync -> `Reply::Function`.
    ModuleGetFunction { ctx: Handle, module: Handle, name: String },
    /// sync -> `Reply::Global`.
    ModuleGetGlobal { ctx: Handle, module: Handle, name: String },
    /// sync -> `Reply::Handle`; the image as for `ModuleLoad`.
    LibraryLoad { sha256: [u8; 32] },
    /// sync.
    LibraryUnload { library: Handle },
    /// sync -> `Reply::Function` (the handle is a kernel).
    LibraryGetKernel { library: Handle, name: String },
    /// sync -> `Reply::Global`.
    LibraryGetGlobal { ctx: Handle, library: Handle, name: String },
    /// sync -> `Reply::Handle`: the kernel's function in the current context.
    KernelGetFunction { ctx: Handle, kernel: Handle },
    /// streamed, with a piece of a code image in the bulk tail: the bytes
    /// at `offset` of the image of `total` bytes whose SHA-256 is `sha256`,
    /// for an image too large for one frame. Pieces come in order; once all
    /// are there and the hash holds, the next `ModuleLoad` or `LibraryLoad`
    /// naming it with an empty bulk tail loads it. At most
    /// [`MAX_IMAGE_BYTES`] in all. Version 18.
    ImagePart { sha256: [u8; 32], offset: u64, total: u64 },
    /// sync -> `Reply::Handle`: the library's module in `ctx`
    /// (`cuLibraryGetModule`, which cudart 12 asks before it launches a
    /// kernel it registered). The library owns it. Version 18.
    LibraryGetModule { ctx: Handle, library: Handle },
    /// sync -> `Reply::Attributes`: the driver's status and value of each of
    /// `attrs` (`CUfunction_attribute`, at most [`MAX_ATTRIBUTES`]) of a
    /// function, in order: the client asks every attribute at its first
    /// question about a function, a round trip for all of them.
    FuncGetAttributes { ctx: Handle, func: Handle, attrs: Vec<i32> },
    /// sync.
    FuncSetAttribute {
        ctx: Handle,
        func: Handle,
        attr: i32,
        value: i32,
    },
    /// sync -> `Reply::Attributes`: as `FuncGetAttributes`, of a kernel on
    /// a device.
    KernelGetAttributes {
        kernel: Handle,
        attrs: Vec<i32>,
        device: i32,
    },
    /// sync.
    KernelSetAttribute {
        kernel: Handle,
        attr: i32,
        value: i32,
        device: i32,
    },
    /// sync -> `Reply::Int`. `kind` picks the occupancy query.
    Occupancy {
        ctx: Handle,
        func: Handle,
        query: OccupancyQuery,
    },
    /// sync -> `Reply::Attributes`: `cuOccupancyMaxActiveClusters` of a
    /// launch of `block` threads and `shared_mem` bytes whose grid is one
    /// cluster of `size` blocks along x, for each of `sizes` (at most
    /// [`MAX_ATTRIBUTES`]), in order: the driver's status and answer each.
    /// cuBLASLt asks every size from 1 to 16 of each kernel, one call each.
    /// Version 18.
    OccupancyClusters {
        ctx: Handle,
        func: Handle,
        block: [u32; 3],
        shared_mem: u32,
        sizes: Vec<u32>,
    },
    /// `id` 0: sync -> `Reply::Handle`. Otherwise async: `id` is the
    /// client's own name for the stream ([`is_client_handle`]), which the
    /// server maps to the driver's handle, so creating costs no round trip.
    StreamCreate {
        ctx: Handle,
        flags: u32,
        priority: i32,
        id: Handle,
    },
    /// async.
    StreamDestroy { ctx: Handle, stream: Handle },
    /// sync.
    StreamSynchronize { ctx: Handle, stream: StreamRef },
    /// sync; `Reply::Status` may be `CUDA_ERROR_NOT_READY`.
    StreamQuery { ctx: Handle, stream: StreamRef },
    /// async.
    StreamWaitEvent {
        ctx: Handle,
        stream: StreamRef,
        event: Handle,
        flags: u32,
    },
    /// As `StreamCreate`: `id` 0 answers the driver's handle, otherwise the
    /// event is created async under the client's name `id`.
    EventCreate { ctx: Handle, flags: u32, id: Handle },
    /// async.
    EventDestroy { ctx: Handle, event: Handle },
    /// async.
    EventRecord {
        ctx: Handle,
        event: Handle,
        stream: StreamRef,
    },
    /// sync.
    EventSynchronize { ctx: Handle, event: Handle },
    /// sync; may answer `CUDA_ERROR_NOT_READY`.
    EventQuery { ctx: Handle, event: Handle },
    /// sync -> `Reply::Float`.
    EventElapsedTime { ctx: Handle, start: Handle, end: Handle },
    /// async. The packed parameter block (laid out by the function's
    /// parameter offsets) is the bulk tail.
    Launch(Launch),
    /// sync -> `Reply::Params`: offsets and sizes of a function's (or, with
    /// `kernel`, a library kernel's) parameters.
    ParamInfo { ctx: Handle, func: Handle, kernel: bool },
    /// sync -> `Reply::DeviceStatus`: what the device holds and does now
    /// (memory, utilisation, temperature, power), for the NVML shim. Needs no
    /// context; an ordinal the session does not have answers
    /// `CUDA_ERROR_INVALID_DEVICE`.
    DeviceStatus { device: i32 },
    /// sync. `mode` is the `CUstreamCaptureMode`.
    StreamBeginCapture { ctx: Handle, stream: StreamRef, mode: u32 },
    /// sync -> `Reply::Handle`, the captured graph. The capture ends even
    /// when this fails (an invalidated capture answers
    /// `CUDA_ERROR_STREAM_CAPTURE_INVALIDATED`).
    StreamEndCapture { ctx: Handle, stream: StreamRef },
    /// sync -> `Reply::Handle`, the executable graph.
    GraphInstantiate { ctx: Handle, graph: Handle, flags: u64 },
    /// async.
    GraphLaunch {
        ctx: Handle,
        exec: Handle,
        stream: StreamRef,
    },
    /// async.
    GraphUpload {
        ctx: Handle,
        exec: Handle,
        stream: StreamRef,
    },
    /// sync -> `Reply::Size`: how many nodes a graph has.
    GraphNodeCount { ctx: Handle, graph: Handle },
    /// async.
    GraphExecDestroy { ctx: Handle, exec: Handle },
    /// async.
    GraphDestroy { ctx: Handle, graph: Handle },
    /// async: the capture mode (`CUstreamCaptureMode`) the server runs the
    /// client's following calls under (`cuThreadExchangeStreamCaptureMode`).
    SetCaptureMode { mode: u32 },
    /// A host function on `stream` (`cuLaunchHostFunc`,
    /// `cuStreamAddCallback`). Sent asking for a reply, which comes when the
    /// stream reaches the function (after replies to later requests, maybe):
    /// `Reply::Status(0)` tells the client to run it now. A failure to
    /// enqueue it answers at once with the error; the client then does not
    /// run it.
    LaunchHostFunc { ctx: Handle, stream: StreamRef },
    /// sync: the L1 / shared memory preference (`CUfunc_cache`) of a
    /// context, a function or a kernel (`cuCtxSetCacheConfig`,
    /// `cuFuncSetCacheConfig`, `cuKernelSetCacheConfig`).
    SetCacheConfig {
        ctx: Handle,
        target: CacheTarget,
        config: u32,
    },
    /// sync -> `Reply::Bytes`: a stream attribute (`CUstreamAttrValue`,
    /// 64 bytes), set first when `set` holds a value
    /// (`cuStreamGetAttribute`, `cuStreamSetAttribute`).
    StreamAttribute {
        ctx: Handle,
        stream: StreamRef,
        attr: u32,
        set: Option<Vec<u8>>,
    },
    /// sync: `cuStreamCopyAttributes`.
    StreamCopyAttributes {
        ctx: Handle,
        dst: StreamRef,
        src: StreamRef,
    },
    /// sync -> `Reply::Global`: a `__managed__` variable of a library
    /// (`cuLibraryGetManaged`).
    LibraryGetManaged { ctx: Handle, library: Handle, name: String },
    /// sync -> `Reply::Bytes`: a TMA tensor map (`CUtensorMap`, 128 bytes)
    /// the server's driver encodes (`cuTensorMapEncodeTiled`,
    /// `cuTensorMapEncodeIm2col`).
    TensorMapEncode(TensorMapDesc),
    /// sync -> `Reply::Bytes`: `map` with its global address replaced
    /// (`cuTensorMapReplaceAddress`).
    TensorMapReplaceAddress { map: Vec<u8>, address: u64 },
    /// sync -> `Reply::Handle`: a JIT linker (`cuLinkCreate`) with the
    /// program's scalar JIT options as (option, value). Options that name
    /// client memory (log buffers, symbol tables) never travel.
    LinkCreate { ctx: Handle, options: Vec<(u32, u64)> },
    /// sync: an input for the linker, its bytes the bulk tail
    /// (`cuLinkAddData`; the client reads the file of `cuLinkAddFile`).
    LinkAddData {
        ctx: Handle,
        link: Handle,
        kind: u32,
        name: String,
    },
    /// sync -> `Reply::Size`: link (`cuLinkComplete`); the image's bytes,
    /// which `LinkImage` then reads.
    LinkComplete { ctx: Handle, link: Handle },
    /// sync -> `Reply::Bytes`: up to [`LINK_IMAGE_CHUNK`] bytes of the
    /// linked image from `offset` (messages are small; images need not be).
    LinkImage { link: Handle, offset: u64 },
    /// sync: `cuLinkDestroy`.
    LinkDestroy { link: Handle },
    /// sync -> `Reply::Handle`: an empty graph (`cuGraphCreate`).
    GraphCreate { ctx: Handle },
    /// sync -> `Reply::Handle`: a node added to `graph` after the nodes
    /// `deps` (`cuGraphAdd*Node`). A kernel node's packed parameters are
    /// the bulk tail, as for a launch. `edges` is empty for default edges,
    /// or holds one `CUgraphEdgeData` (8 bytes, little endian) per
    /// dependency (kernel nodes only: programmatic launch edges).
    GraphAddNode {
        ctx: Handle,
        graph: Handle,
        deps: Vec<Handle>,
        edges: Vec<u64>,
        node: GraphNode,
    },
    /// sync: a kernel node's launch in an executable graph, replaced
    /// (`cuGraphExecKernelNodeSetParams`); the packed parameters are the
    /// bulk tail.
    GraphExecKernelNodeSet {
        ctx: Handle,
        exec: Handle,
        node: Handle,
        launch: Launch,
    },
    /// sync: a memset or copy node's work in an executable graph, replaced
    /// (`cuGraphExecMemsetNodeSetParams`, `cuGraphExecMemcpyNodeSetParams`).
    GraphExecNodeSet {
        ctx: Handle,
        exec: Handle,
        node: Handle,
        params: GraphNode,
    },
    /// sync -> `Reply::Bytes`: an executable graph updated from `graph`
    /// (`cuGraphExecUpdate`): the driver's status, the update result and
    /// the error node, as three little-endian words of 4, 4 and 8 bytes.
    GraphExecUpdate { ctx: Handle, exec: Handle, graph: Handle },
    /// async: memory operations on a stream (`cuStreamWriteValue*`,
    /// `cuStreamWaitValue*`, `cuStreamBatchMemOp`), in order.
    StreamMemOps {
        ctx: Handle,
        stream: StreamRef,
        ops: Vec<MemOp>,
    },
    /// sync: edges `from[i] -> to[i]` (`cuGraphAddDependencies`), with
    /// `edges[i]` their data when not empty (`cuGraphAddDependencies_v2`).
    GraphAddDependencies {
        ctx: Handle,
        graph: Handle,
        from: Vec<Handle>,
        to: Vec<Handle>,
        edges: Vec<u64>,
    },
    /// sync: a handle another session of this server can open for the
    /// allocation holding `ptr` (`cuIpcGetMemHandle`): `Bytes`, 64 of them.
    IpcGetMemHandle { ctx: Handle, ptr: DevicePtr },
    /// sync: open another session's memory in `ctx` (`cuIpcOpenMemHandle`):
    /// `Global` with the base the driver mapped it at and its size.
    IpcOpenMemHandle { ctx: Handle, handle: Vec<u8>, flags: u32 },
    /// sync: close memory opened with `IpcOpenMemHandle`.
    IpcCloseMemHandle { ctx: Handle, ptr: DevicePtr },
    /// sync: a handle for an interprocess event (`cuIpcGetEventHandle`):
    /// `Bytes`, 64 of them.
    IpcGetEventHandle { ctx: Handle, event: Handle },
    /// sync: open another session's event in `ctx` under the client's name
    /// `id` (`cuIpcOpenEventHandle`).
    IpcOpenEventHandle { ctx: Handle, handle: Vec<u8>, id: Handle },
    /// async: a host function on a capturing `stream`: it becomes a host
    /// node of the graph, named `token` (unique in the session), and runs
    /// at every launch of the graph (see `GraphHostCalls`).
    CaptureHostFunc { ctx: Handle, stream: StreamRef, token: u64 },
    /// async, sent just before a `GraphLaunch` whose graph has host nodes:
    /// for each `(token, id)`, when the launch reaches the host node
    /// `token`, the server answers the (never sent) request `id` with
    /// `Reply::Status(0)`, as it answers `LaunchHostFunc`, and the client
    /// runs the node's function. A node reached more than once in a launch
    /// (a child graph copied twice) is named as often.
    GraphHostCalls { ctx: Handle, calls: Vec<(u64, u64)> },
    /// sync: the nodes of a graph, with their types (`CUgraphNodeType`),
    /// in the driver's order: `Reply::Nodes`. The session may name them
    /// from then on (a captured graph's nodes, to change them in an
    /// executable graph).
    GraphListNodes { ctx: Handle, graph: Handle },
    /// sync -> `Reply::Int` (1 enabled, 0 not): whether a node of an
    /// executable graph runs, after setting it to `set` when given
    /// (`cuGraphNodeSetEnabled`, `cuGraphNodeGetEnabled`).
    GraphNodeEnabled {
        ctx: Handle,
        exec: Handle,
        node: Handle,
        set: Option<bool>,
    },
    /// sync -> `Reply::Bytes`: the graph described in Graphviz DOT by the
    /// server's driver (`cuGraphDebugDotPrint` with `flags`); the client
    /// writes it to the program's file.
    GraphDebugDot { ctx: Handle, graph: Handle, flags: u32 },
    /// sync: begin a capture on `stream` into the session's `graph`, after
    /// its nodes `deps` (`cuStreamBeginCaptureToGraph`); `StreamEndCapture`
    /// answers that graph.
    StreamBeginCaptureToGraph {
        ctx: Handle,
        stream: StreamRef,
        graph: Handle,
        deps: Vec<Handle>,
        mode: u32,
    },
    /// sync -> `Reply::Handle`: a conditional handle for `graph`, the
    /// driver's value (kernels pass it to `cudaGraphSetConditional`, so it
    /// travels unchanged), with `default` and `flags` as given
    /// (`cuGraphConditionalHandleCreate`).
    GraphConditionalHandleCreate {
        ctx: Handle,
        graph: Handle,
        default: u32,
        flags: u32,
    },
    /// sync -> `Reply::CaptureInfo`: the graph a capture on `stream` builds
    /// and the nodes its next work will follow (`cuStreamGetCaptureInfo`
    /// asked for them). The session may name that graph and those nodes
    /// from then on: add nodes to the graph while it is captured into.
    StreamCaptureInfo { ctx: Handle, stream: StreamRef },
    /// sync: the nodes a capture's next work follows, replaced (`flags` 1)
    /// or added to (0), with their edges' data when not empty
    /// (`cuStreamUpdateCaptureDependencies`).
    StreamUpdateCaptureDependencies {
        ctx: Handle,
        stream: StreamRef,
        deps: Vec<Handle>,
        edges: Vec<u64>,
        flags: u32,
    },
    /// sync -> `Reply::Edges`: every edge of one of the session's graphs,
    /// as the driver lists them (`cuGraphGetEdges`); the session may name
    /// their nodes from then on.
    GraphEdges { ctx: Handle, graph: Handle },
    /// sync -> `Reply::Node`: a kernel, memset, copy, child graph, event,
    /// allocation or free node's work as its graph holds it
    /// (`cuGraphKernelNodeGetParams` and its kin). A child graph node's
    /// graph becomes a graph of the session, the node's to the end.
    GraphNodeGet { ctx: Handle, node: Handle },
    /// sync: a kernel, memset, copy or event node's work in its graph,
    /// replaced (`cuGraphKernelNodeSetParams` and its kin); a kernel's
    /// packed parameters are the bulk tail.
    GraphNodeSet {
        ctx: Handle,
        node: Handle,
        params: GraphNode,
    },
    /// sync: a node of one of the session's graphs removed, with its edges
    /// (`cuGraphDestroyNode`). Conditional, allocation and free nodes go
    /// only with their graph.
    GraphDestroyNode { ctx: Handle, node: Handle },
    /// sync: edges `from[i] -> to[i]` removed, with `edges[i]` their data
    /// when not empty (`cuGraphRemoveDependencies`).
    GraphRemoveDependencies {
        ctx: Handle,
        graph: Handle,
        from: Vec<Handle>,
        to: Vec<Handle>,
        edges: Vec<u64>,
    },
    /// sync -> `Reply::Cloned`: a copy of one of the session's graphs
    /// (`cuGraphClone`). Each host node of the copy's top level named by a
    /// token of `tokens` (old, new) is named by the new one.
    GraphClone {
        ctx: Handle,
        graph: Handle,
        tokens: Vec<(u64, u64)>,
    },
    /// sync -> `Reply::Handle`: the node of `clone` that `node` of the
    /// cloned graph became (`cuGraphNodeFindInClone`).
    GraphFindInClone { ctx: Handle, node: Handle, clone: Handle },
    /// sync -> `Reply::Bytes` (64 bytes, `CUlaunchAttributeValue`): a
    /// kernel node's launch attribute `attr`, after setting it to `set`
    /// when given (`cuGraphKernelNodeGetAttribute`,
    /// `cuGraphKernelNodeSetAttribute`).
    GraphKernelNodeAttribute {
        ctx: Handle,
        node: Handle,
        attr: u32,
        set: Option<Vec<u8>>,
    },
    /// sync: kernel node `dst` takes the launch attributes of `src`
    /// (`cuGraphKernelNodeCopyAttributes`).
    GraphKernelNodeCopyAttributes { ctx: Handle, dst: Handle, src: Handle },
    /// async: `EventRecord`, after which the server tells the client when
    /// the event completes: `Reply::EventsDone` with (event, `generation`),
    /// once the record is done and the event's context kept no error. A
    /// later record, the event's destruction or a record into a capture
    /// ends the watch with nothing told. The client answers queries of an
    /// event whose latest record was told done itself.
    EventRecordWatched {
        ctx: Handle,
        event: Handle,
        stream: StreamRef,
        generation: u64,
    },
    /// async: `cuCtxRecordEvent`, the event records all the context's work
    /// so far.
    CtxRecordEvent { ctx: Handle, event: Handle },
    /// async: `cuCtxWaitEvent`, all the context's later work waits for the
    /// event.
    CtxWaitEvent { ctx: Handle, event: Handle },
    /// sync: `cuCtxResetPersistingL2Cache`.
    CtxResetPersistingL2Cache { ctx: Handle },
    /// sync: `cuCtxEnablePeerAccess(peer, flags)` (`enable`) or
    /// `cuCtxDisablePeerAccess(peer)` with `ctx` current: whether `ctx`'s
    /// work may address the memory of `peer`'s device. Version 17.
    CtxPeerAccess {
        ctx: Handle,
        peer: Handle,
        enable: bool,
        flags: u32,
    },
    /// sync: `cuDeviceGetTexture1DLinearMaxWidth`, answered `Reply::Size`.
    /// Needs no context.
    DeviceTexture1DLinearMaxWidth { device: i32, format: u32, channels: u32 },
    /// sync -> `Reply::SmResources` (one): the SM resource of a device
    /// (`cuDeviceGetDevResource`) or, with `ctx`, of a context
    /// (`cuCtxGetDevResource`, `cuGreenCtxGetDevResource`). Green contexts
    /// and their resources: version 14.
    DevResource { device: i32, ctx: Option<Handle> },
    /// sync -> `Reply::SmSplit`: `cuDevSmResourceSplitByCount` of the
    /// session's resource `input` into at most `groups` groups (with
    /// `simulate`, only their count is answered, and no group is kept).
    DevSmResourceSplitByCount {
        input: u32,
        groups: u32,
        simulate: bool,
        remainder: bool,
        flags: u32,
        min_count: u32,
    },
    /// sync -> `Reply::Handle`: `cuDevResourceGenerateDesc` of resources of
    /// the session.
    DevResourceGenerateDesc { resources: Vec<u32> },
    /// sync -> `Reply::Pair(green, ctx)`: `cuGreenCtxCreate`, and the
    /// context it is as a `CUcontext` (`cuCtxFromGreenCtx`), which the
    /// session may name as any of its contexts.
    GreenCtxCreate { desc: Handle, device: i32, flags: u32 },
    /// sync: `cuGreenCtxDestroy`, with everything its context holds.
    GreenCtxDestroy { green: Handle },
    /// async: `cuGreenCtxStreamCreate`, a stream named `id` by the client.
    GreenCtxStreamCreate {
        green: Handle,
        flags: u32,
        priority: i32,
        id: Handle,
    },
}

/// An SM resource (`CUdevResource` of `CU_DEV_RESOURCE_TYPE_SM`) the
/// server holds for the session, by its number there, with its public
/// fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SmResource {
    pub id: u32,
    pub sm_count: u32,
    pub min_partition: u32,
    pub alignment: u32,
    pub flags: u32,
    pub locality: u32,
}

/// The largest code image a session may send in pieces
/// ([`Request::ImagePart`]).
pub const MAX_IMAGE_BYTES: u64 = 2 << 30;

/// Bytes of an IPC handle (`CUipcMemHandle`, `CUipcEventHandle`).
pub const IPC_HANDLE_LEN: usize = 64;

/// One stream memory operation: a 32- or 64-bit (`wide`) write or wait
/// at a device address, with the driver's flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemOp {
    Write {
        addr: DevicePtr,
        value: u64,
        wide: bool,
        flags: u32,
    },
    Wait {
        addr: DevicePtr,
        value: u64,
        wide: bool,
        flags: u32,
    },
}

/// A node of a graph the program builds itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum GraphNode {
    Empty,
    /// A kernel; the launch's stream is not used.
    Kernel(Launch),
    /// `height` rows of `width` elements, `pitch` bytes apart.
    Memset {
        dst: DevicePtr,
        pitch: u64,
        value: u32,
        elem_size: u8,
        width: u64,
        height: u64,
    },
    /// A device-to-device copy.
    Copy {
        dst: DevicePtr,
        src: DevicePtr,
        len: u64,
    },
    /// A copy of another graph of the session, made now.
    Child {
        graph: Handle,
    },
    /// Records or waits for an event of the session.
    EventRecord {
        event: Handle,
    },
    EventWait {
        event: Handle,
    },
    /// A host node (`cuGraphAddHostNode`), named `token` as
    /// `Request::CaptureHostFunc` names one.
    Host {
        token: u64,
    },
    /// An allocation node of `size` bytes of `device`'s memory
    /// (`cuGraphAddMemAllocNode`): answered `Reply::Pair(node, address)`.
    MemAlloc {
        device: i32,
        size: u64,
    },
    /// A free node of a graph allocation (`cuGraphAddMemFreeNode`).
    MemFree {
        ptr: DevicePtr,
    },
    /// A conditional node (`CUgraphConditionalNodeType` `kind`: if, while,
    /// switch) on the session's conditional `handle`, with `size` body
    /// graphs the driver makes: answered `Reply::Conditional`.
    Conditional {
        handle: u64,
        kind: u32,
        size: u32,
    },
}

/// `CUgraphConditionalNodeType`s.
pub const CONDITIONAL_IF: u32 = 0;
pub const CONDITIONAL_WHILE: u32 = 1;
pub const CONDITIONAL_SWITCH: u32 = 2;

/// Most body graphs one switch node may have here.
pub const MAX_CONDITIONAL_BODIES: u32 = 1024;

/// Whether a conditional node of `kind` may have `size` bodies: 1 or 2
/// for if, 1 for while, 1 to [`MAX_CONDITIONAL_BODIES`] for switch.
pub fn conditional_shape_ok(kind: u32, size: u32) -> bool {
    match kind {
        CONDITIONAL_IF => matches!(size, 1 | 2),
        CONDITIONAL_WHILE => size == 1,
        CONDITIONAL_SWITCH => (1..=MAX_CONDITIONAL_BODIES).contains(&size),
        _ => false,
    }
}

/// Bytes of a linked image one `LinkImage` answer carries at most.
pub const LINK_IMAGE_CHUNK: usize = 512 << 10;

/// JIT options whose value is a number, not an address: the ones a link
/// may carry to the server (`CUjit_option`).
pub const SCALAR_JIT_OPTIONS: [u32; 25] = [
    0, 1, 2, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 20, 21, 22, 23, 24, 29, 30, 31, 32, 33, 34, 35,
];

/// Bytes of a `CUtensorMap`.
pub const TENSOR_MAP_BYTES: usize = 128;

/// What a tensor map describes, as the program passed it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TensorMapDesc {
    pub data_type: u32,
    pub rank: u32,
    pub address: u64,
    /// `rank` sizes, and the byte strides of all but the first dimension.
    pub dims: Vec<u64>,
    pub strides: Vec<u64>,
    pub element_strides: Vec<u32>,
    pub interleave: u32,
    pub swizzle: u32,
    pub l2_promotion: u32,
    pub oob_fill: u32,
    pub kind: TensorMapKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TensorMapKind {
    /// `rank` box sizes.
    Tiled { box_dims: Vec<u32> },
    /// The pixel box corners (`rank - 2` each), channels per pixel and
    /// pixels per column.
    Im2col {
        lower: Vec<i32>,
        upper: Vec<i32>,
        channels: u32,
        pixels: u32,
    },
}

/// Bytes of a `CUstreamAttrValue` / `CUlaunchAttributeValue`.
pub const ATTRIBUTE_VALUE_BYTES: usize = 64;

/// Most attributes one `FuncGetAttributes` or `KernelGetAttributes` may ask.
pub const MAX_ATTRIBUTES: usize = 64;

/// What a cache preference is set on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CacheTarget {
    /// The context `ctx` itself.
    Context,
    Function(Handle),
    Kernel {
        kernel: Handle,
        device: i32,
    },
}

/// The launch of one kernel.
/// `CUDA_ARRAY3D_DESCRIPTOR`: extent in elements, `CUarray_format`,
/// channels per element and `CUDA_ARRAY3D_*` flags, as the driver numbers
/// them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayDesc {
    pub width: u64,
    pub height: u64,
    pub depth: u64,
    pub format: u32,
    pub channels: u32,
    pub flags: u32,
}

/// Bytes of one CUDA array element of `format` (`CUarray_format`: 8, 16
/// and 32-bit integers, half and float) with `channels` (1, 2 or 4)
/// channels; None for a format or count the driver does not have.
pub fn array_element_bytes(format: u32, channels: u32) -> Option<u64> {
    let one = match format {
        0x01 | 0x08 => 1,
        0x02 | 0x09 | 0x10 => 2,
        0x03 | 0x0a | 0x20 => 4,
        _ => return None,
    };
    matches!(channels, 1 | 2 | 4).then_some(one * u64::from(channels))
}

/// A place in a CUDA array: byte `x` of row `y` of slice (or layer) `z`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArrayPos {
    pub array: Handle,
    pub x: u64,
    pub y: u64,
    pub z: u64,
}

/// One end of a copy on the GPU: rows `pitch` apart from `ptr`, or a place
/// in an array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CopyEnd {
    Device { ptr: DevicePtr, pitch: u64 },
    Array(ArrayPos),
}

/// What a texture object reads (`CUDA_RESOURCE_DESC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Resource {
    Array(Handle),
    Linear {
        ptr: DevicePtr,
        format: u32,
        channels: u32,
        size: u64,
    },
    Pitch2D {
        ptr: DevicePtr,
        format: u32,
        channels: u32,
        width: u64,
        height: u64,
        pitch: u64,
    },
}

/// `CUDA_TEXTURE_DESC`'s fields, as the driver numbers them.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TextureDesc {
    pub address_mode: [u32; 3],
    pub filter_mode: u32,
    pub flags: u32,
    pub max_anisotropy: u32,
    pub mipmap_filter_mode: u32,
    pub mipmap_level_bias: f32,
    pub min_mipmap_level_clamp: f32,
    pub max_mipmap_level_clamp: f32,
    pub border_color: [f32; 4],
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    pub ctx: Handle,
    /// A `CUfunction`, or a `CUkernel` when `kernel` is set.
    pub func: Handle,
    pub kernel: bool,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
    pub stream: StreamRef,
    /// `cuLaunchKernelEx` attributes: (id, 64 value bytes as the driver lays
    /// them out). Empty for `cuLaunchKernel`.
    pub attrs: Vec<(u32, Vec<u8>)>,
}

/// The occupancy calculator's questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OccupancyQuery {
    MaxActiveBlocksPerMultiprocessor {
        block_size: i32,
        dynamic_smem: u64,
        flags: u32,
    },
    /// Answers `Reply::Pair(min_grid_size, block_size)`.
    MaxPotentialBlockSize {
        dynamic_smem: u64,
        block_size_limit: i32,
        flags: u32,
    },
    AvailableDynamicSmemPerBlock {
        num_blocks: i32,
        block_size: i32,
    },
    MaxActiveClusters {
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem: u32,
        cluster: [u32; 3],
    },
    /// `cuOccupancyMaxPotentialClusterSize`; `cluster` all 0 when the
    /// launch names none.
    MaxPotentialClusterSize {
        grid: [u32; 3],
        block: [u32; 3],
        shared_mem: u32,
        cluster: [u32; 3],
    },
}

/// A server answer to a request that asked for one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    /// Only a status. Non-zero is the driver's error code.
    Status(Status),
    Handle(Handle),
    Pointer(DevicePtr),
    Size(u64),
    Int(i64),
    Pair(i64, i64),
    Float(f32),
    /// (status, value) of each attribute asked, in the order asked.
    Attributes(Vec<(Status, i32)>),
    MemInfo {
        free: u64,
        total: u64,
    },
    Global {
        ptr: DevicePtr,
        size: u64,
    },
    /// Parameter (offset, size) pairs in declaration order.
    Params(Vec<(u32, u32)>),
    /// A chunk of device-to-host data: `len` bytes at `offset` of the copy
    /// follow as the bulk tail. More frames with the same id follow.
    Data {
        offset: u64,
    },
    /// The end of a multi-frame reply, with its status.
    Done(Status),
    /// The server holds no image with the hash a load named: send it.
    ImageUnknown,
    /// A value as the driver laid it out.
    Bytes(Vec<u8>),
    /// A module global that is a `__managed__` variable (answers
    /// `ModuleGetGlobal` as `Global` does).
    ManagedGlobal {
        ptr: DevicePtr,
        size: u64,
    },
    /// Nodes of a graph and their types (`Request::GraphListNodes`).
    Nodes(Vec<(Handle, u32)>),
    /// A conditional node and its body graphs, in the driver's order
    /// (`GraphNode::Conditional`). The bodies are the node's: the session
    /// adds nodes to them, and they go with the graph holding the node.
    Conditional {
        node: Handle,
        bodies: Vec<Handle>,
    },
    /// Edges `from[i] -> to[i]` of a graph with their data (`edges[i]`,
    /// `CUgraphEdgeData` as a little-endian word) (`Request::GraphEdges`).
    Edges {
        from: Vec<Handle>,
        to: Vec<Handle>,
        edges: Vec<u64>,
    },
    /// The graph a capture builds and the nodes its next work follows,
    /// with their edges' data (empty: default edges)
    /// (`Request::StreamCaptureInfo`).
    CaptureInfo {
        graph: Handle,
        deps: Vec<Handle>,
        edges: Vec<u64>,
    },
    /// A node's work (`Request::GraphNodeGet`): for a kernel, `params` are
    /// its packed parameters; for an allocation node, `address` is where
    /// its memory lies.
    Node {
        node: GraphNode,
        params: Vec<u8>,
        address: u64,
    },
    /// A copy of a graph (`Request::GraphClone`) and the tokens of the
    /// host nodes renamed in it (the old names).
    Cloned {
        graph: Handle,
        renamed: Vec<u64>,
    },
    /// SM resources (`Request::DevResource`).
    SmResources(Vec<SmResource>),
    /// The groups of a split, how many there are (all of them when only
    /// simulated), and what remains (`Request::DevSmResourceSplitByCount`).
    SmSplit {
        groups: Vec<SmResource>,
        count: u32,
        remainder: Option<SmResource>,
    },
    /// Answer to `Request::DeviceStatus`. Memory is the session's view: the
    /// whole device, or the slice assigned to the session.
    DeviceStatus {
        total_bytes: u64,
        free_bytes: u64,
        used_bytes: u64,
        gpu_util_percent: u32,
        mem_util_percent: u32,
        temperature_c: u32,
        power_mw: u32,
        /// `DEVICE_STATUS_*` bits.
        flags: u32,
    },
    /// Not a reply: sent by the server in a frame of its own with id
    /// [`NOTICE_ID`], just before the reply to a request that asked for
    /// one (so the client reads it as it reads that reply, and nothing is
    /// sent while no one reads). Watched event records
    /// (`Request::EventRecordWatched`) that completed: (event, generation).
    EventsDone {
        events: Vec<(Handle, u64)>,
    },
    /// Not a reply: a notice, as `EventsDone` (version 14). What the
    /// server's driver wrote to the worker's standard output (`fd` 1: a
    /// kernel's `printf` output at synchronisation) or standard error
    /// (`fd` 2: a failed device-side `assert`'s message), in order for each
    /// stream, at most [`OUTPUT_CHUNK`] bytes a notice. The client writes
    /// it to its own stream of that number, and ignores other numbers.
    Output {
        fd: u8,
        bytes: Vec<u8>,
    },
}

/// The most bytes of one `Reply::Output` notice.
pub const OUTPUT_CHUNK: usize = 64 << 10;

/// The frame id of server notices (`Reply::EventsDone`): no request has it.
pub const NOTICE_ID: u64 = 0;

/// `Reply::DeviceStatus` flag: the device is simulated (software driver).
pub const DEVICE_STATUS_SIMULATED: u32 = 1 << 0;
/// `Reply::DeviceStatus` flag: the server has no NVML, so utilisation,
/// temperature and power are unknown (reported as zero).
pub const DEVICE_STATUS_NO_SERVER_NVML: u32 = 1 << 1;

impl Reply {
    /// The status this reply carries (success for value replies).
    pub fn status(&self) -> Status {
        match self {
            Reply::Status(s) | Reply::Done(s) => *s,
            _ => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec;

    #[test]
    fn array_requests_round_trip() {
        let at = ArrayPos {
            array: 0x7f00_1234_5000,
            x: 12,
            y: 3,
            z: 2,
        };
        let requests = [
            Request::ArrayCreate {
                ctx: 9,
                desc: ArrayDesc {
                    width: 37,
                    height: 19,
                    depth: 3,
                    format: 0x20,
                    channels: 1,
                    flags: 1,
                },
            },
            Request::MemcpyHtoA {
                ctx: 9,
                stream: StreamRef::PerThread(4),
                dst: at,
                width: 148,
                first_row: 5,
                rows: 7,
            },
            Request::MemcpyArray {
                ctx: 9,
                stream: StreamRef::Legacy,
                dst: CopyEnd::Device {
                    ptr: 0x7000_0000,
                    pitch: 256,
                },
                src: CopyEnd::Array(at),
                width: 148,
                height: 19,
            },
            Request::TexObjectCreate {
                ctx: 9,
                resource: Resource::Pitch2D {
                    ptr: 0x7000_0000,
                    format: 0x20,
                    channels: 1,
                    width: 37,
                    height: 19,
                    pitch: 256,
                },
                texture: TextureDesc {
                    address_mode: [1, 1, 3],
                    filter_mode: 1,
                    flags: 2,
                    max_anisotropy: 0,
                    mipmap_filter_mode: 0,
                    mipmap_level_bias: 0.0,
                    min_mipmap_level_clamp: 0.0,
                    max_mipmap_level_clamp: 0.0,
                    border_color: [0.5, 0.0, 0.0, 1.0],
                },
            },
        ];
        for r in requests {
            let bytes = codec::encode(&r).unwrap();
            assert_eq!(codec::decode::<Request>(&bytes).unwrap(), r);
        }
    }

    #[test]
    fn element_sizes_are_the_drivers() {
        assert_eq!(array_element_bytes(0x20, 1), Some(4));
        assert_eq!(array_element_bytes(0x01, 4), Some(4));
        assert_eq!(array_element_bytes(0x10, 2), Some(4));
        assert_eq!(array_element_bytes(0x0a, 4), Some(16));
        assert_eq!(array_element_bytes(0x20, 3), None, "three channels");
        assert_eq!(array_element_bytes(0x07, 1), None, "no such format");
    }
}
