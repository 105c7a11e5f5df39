//! One client session, in its own process: reads the client's frames in
//! order, checks every handle and address against the client's own tables,
//! runs the call on the driver, and answers the calls that asked for an
//! answer. Streamed calls that fail leave their error with their context;
//! the next synchronising call of that context returns it.
//!
//! When the connection ends, for whatever reason, everything the client held
//! is freed before the process exits.

use crate::driver::{
    Driver, DriverResult, GraphExecUpdateResultInfo, KernelNodeParams, LaunchAttribute, LaunchConfig, MemAccessDesc,
    MemAllocationProp, MemPoolProps, Memcpy2D, Memcpy3D, MemsetNodeParams, Ptr, Side, Status, NOT_SUPPORTED,
};
use crate::images::ImageCache;
use crate::nvml::ServerNvml;
use crate::tables::{PoolEntry, Region, RegionKind, Tables, INVALID_HANDLE, INVALID_VALUE};
use gpupool_proto::codec;
use gpupool_proto::frame::{self, FrameHeader, COPY_CHUNK};
use gpupool_proto::handshake::{SessionInfo, Welcome};
use gpupool_proto::message::{
    is_client_handle, CacheTarget, GraphNode, Handle, Launch, MemOp, OccupancyQuery, Reply, Request, StreamRef,
    TensorMapDesc, TensorMapKind, ATTRIBUTE_VALUE_BYTES, DEVICE_STATUS_NO_SERVER_NVML, LINK_IMAGE_CHUNK,
    MAX_ATTRIBUTES, NOTICE_ID, SCALAR_JIT_OPTIONS, TENSOR_MAP_BYTES,
};
use gpupool_proto::transport::{WaitRead, Wake};
use gpupool_proto::ProtoError;
use std::collections::{HashMap, HashSet};
use std::ffi::{c_void, CString};
use std::io::{BufReader, BufWriter, Read, Write};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Output buffer of a session: replies and small copies of one request go out in one write.
const OUT_BUFFER: usize = 64 << 10;
/// Staging buffers a session makes, besides those that copies hold while
/// their data waits to be sent, before a copy waits for one in use.
const STAGING_SPARE: usize = 4;
/// `CU_STREAM_LEGACY`.
const STREAM_LEGACY: Ptr = 0x1 as Ptr;
/// CUDA_ERROR_OUT_OF_MEMORY, CUDA_ERROR_INVALID_IMAGE.
const OUT_OF_MEMORY: Status = 2;
const INVALID_IMAGE: Status = 200;
/// CUDA_ERROR_INVALID_DEVICE.
const INVALID_DEVICE: Status = 101;
/// CUDA_ERROR_OPERATING_SYSTEM.
const OPERATING_SYSTEM: Status = 304;
/// `CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED`, `_INVALIDATED`.
const STREAM_CAPTURE_UNSUPPORTED: Status = 900;
const STREAM_CAPTURE_INVALIDATED: Status = 901;
/// `CUDA_ERROR_UNKNOWN`.
const UNKNOWN: Status = 999;
/// `CUDA_ERROR_ILLEGAL_STATE`.
const ILLEGAL_STATE: Status = 401;

/// How a session ended.
#[derive(Debug)]
pub enum SessionEnd {
    /// The client closed the connection or died.
    Disconnected,
    /// The client sent something the protocol does not allow.
    ProtocolViolation(String),
    /// The connection failed.
    Io(String),
}

/// What the worker frees when the session ends, for the log.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    pub allocations: usize,
    pub bytes: u64,
    pub streams: usize,
    pub events: usize,
    pub modules: usize,
    pub contexts: usize,
}

/// Staging buffer for one chunk of a copy, pinned when the driver allows,
/// with the event that tells when the device is done with it.
struct Staging {
    host: Ptr,
    pinned: bool,
    fallback: Vec<u8>,
    event: Ptr,
    /// The context the event was made in: a stream of another context
    /// cannot record it, so it is made again there.
    event_ctx: Option<Handle>,
    busy: bool,
    /// Held by a device-to-host copy whose data waits to be sent
    /// (`copies`): no other copy takes it.
    held: bool,
}

/// Host functions the driver has reached, for the session's thread to tell
/// the client. The driver calls them on a thread of its own; each pushes
/// its request id here and wakes the session's thread, which may be waiting
/// for the client's next request.
struct Reached {
    ids: Mutex<Vec<Reach>>,
    wake: Wake,
}

/// One host function the driver reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// The client's `LaunchHostFunc` with this request id.
    Request(u64),
    /// A graph's host node, by its token (`hostnodes`).
    Node(u64),
    /// Not a host function: the driver's wait for a parked synchronise
    /// (request `id`) returned `status` (`syncs`).
    Synced { id: u64, status: Status },
}

/// What the driver's host function gets: the request that enqueued it.
struct HostCall {
    reached: Arc<Reached>,
    id: u64,
}

/// The host function the server enqueues for a client's: tells the session
/// that the stream has reached it. It returns at once, so the stream does
/// not wait for the client's function (see the architecture document).
unsafe extern "C" fn host_call_reached(data: Ptr) {
    // SAFETY: `data` is the `HostCall` that `launch_host_func` boxed and
    // handed to the driver, which calls this function once with it.
    let call = unsafe { Box::from_raw(data.cast::<HostCall>()) };
    call.reached
        .ids
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Reach::Request(call.id));
    call.reached.wake.wake();
}

/// The executing side of one session.
mod arrays;
mod copies;
mod eventwatch;
mod graphedit;
mod green;
mod hostnodes;
mod ipc;
pub mod output;
mod syncs;

pub struct Worker<'d> {
    driver: &'d Driver,
    tables: Tables,
    /// First error of a streamed call, per context.
    kept: HashMap<Handle, Status>,
    /// Per-thread default streams: (context, client thread) -> stream.
    per_thread: HashMap<(Handle, u64), Ptr>,
    /// A launch's parameters padded out to all that its kernel declares,
    /// when the program packed fewer ([`Worker::kernel_args`]).
    padded_params: Vec<u64>,
    /// Linked images (`cuLinkComplete`): the driver's, until the linker
    /// is destroyed.
    linked: HashMap<Handle, (Ptr, usize)>,
    current: Option<Handle>,
    /// The context the request being handled runs its work in, when that
    /// is its stream's rather than the one it names (a green context's
    /// stream): a streamed error is kept for it, where a synchronisation
    /// of that stream looks.
    work_ctx: Option<Handle>,
    /// This process's standard output and standard error, captured for
    /// the client.
    output: Vec<output::Captured>,
    staging: Vec<Staging>,
    next_staging: usize,
    max_frame: u64,
    scratch: Vec<u8>,
    msg: Vec<u8>,
    /// Images by content, shared with the server's other workers.
    images: Option<ImageCache>,
    /// Images arriving in pieces (`ImagePart`): hash -> the bytes so far and
    /// the whole length.
    arriving: HashMap<[u8; 32], (Vec<u8>, u64)>,
    /// Images that arrived whole in pieces, for the load that names them.
    arrived: HashMap<[u8; 32], Vec<u8>>,
    /// NVML, loaded at the first `DeviceStatus`.
    nvml: Option<ServerNvml>,
    /// The memory this session may use on each device, when it holds a slice
    /// of a GPU rather than the whole of it. `DeviceStatus` reports this as
    /// the device's total. None (the whole device) until the broker assigns
    /// slices to sessions.
    memory_limit: Option<u64>,
    /// Stream captures under way; while there are any, copies through the
    /// staging buffers check that their stream is not capturing.
    captures: u32,
    /// Capturing streams on which a copy was refused: their capture fails.
    invalidated: HashSet<Ptr>,
    /// Streams capturing into a graph of the session's
    /// (`cuStreamBeginCaptureToGraph`): the graph stays, however the
    /// capture ends.
    capturing_into: HashMap<Ptr, Handle>,
    /// Captures whose graph the client has seen (`StreamCaptureInfo`):
    /// stream -> that graph, which the driver destroys if the capture fails.
    capture_graphs: HashMap<Ptr, Handle>,
    /// Host functions reached; None when no wake-up could be made (host
    /// functions are then not supported).
    reached: Option<Arc<Reached>>,
    /// Host functions enqueued and not yet told to the client.
    host_funcs_out: usize,
    /// Synchronises answered once a helper tells they are done (`syncs`).
    parked: Vec<syncs::Parked>,
    /// The threads that wait for them, once one was needed.
    helpers: Option<syncs::Helpers>,
    /// The server's events for parked stream synchronises, spare, by
    /// context.
    sync_events: HashMap<Handle, Vec<Ptr>>,
    /// The device-to-host copy being made, issued whole (`copies`).
    deferred: Option<copies::CopyOut>,
    /// Copies issued whole whose data waits to be sent.
    copies: Vec<copies::CopyOut>,
    /// Answers of copies whose data went, to follow the host functions
    /// reached before them.
    copy_replies: Vec<(u64, Reply)>,
    /// Streams named by a request since their context's last synchronise
    /// (context, stream) -> the request's place (`calls`): what a context
    /// synchronise polls (`syncs`).
    busy: HashMap<(Handle, Ptr), u64>,
    /// The stream marked in `busy` last.
    last_busy: Option<(Handle, Ptr)>,
    /// Watched event records not yet told done (`eventwatch`).
    watches: Vec<eventwatch::Watch>,
    /// Notices sent unasked since the client last showed it reads
    /// (`eventwatch`).
    unasked: usize,
    /// When the session, idle, next looks at watched records.
    next_look: Instant,
    /// The server's IPC registry, when it has one.
    ipc: Option<crate::ipc::Registry>,
    /// What this session shares with others, and has opened of theirs.
    shared: ipc::Shared,
    /// Host nodes of the session's graphs, and the launches they answer.
    host_nodes: hostnodes::HostNodes,
    pub session_id: u64,
    pub calls: u64,
}

/// The NVIDIA kernel driver's version, from `/proc/driver/nvidia/version`
/// (`NVRM version: NVIDIA UNIX x86_64 Kernel Module  580.159.04  …`).
fn kernel_driver_version() -> Option<String> {
    let text = std::fs::read_to_string("/proc/driver/nvidia/version").ok()?;
    parse_kernel_driver_version(&text)
}

fn parse_kernel_driver_version(text: &str) -> Option<String> {
    let line = text.lines().find(|l| l.starts_with("NVRM version:"))?;
    line.split_whitespace()
        .find(|w| {
            w.split('.').count() >= 2
                && w.split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
        })
        .map(str::to_string)
}

fn as_ptr(h: Handle) -> Ptr {
    h as usize as Ptr
}

fn handle(p: Ptr) -> Handle {
    p as usize as Handle
}

impl<'d> Worker<'d> {
    pub fn new(driver: &'d Driver, session_id: u64, max_frame: u64) -> Worker<'d> {
        Worker {
            driver,
            tables: Tables::default(),
            kept: HashMap::new(),
            per_thread: HashMap::new(),
            padded_params: Vec::new(),
            linked: HashMap::new(),
            current: None,
            work_ctx: None,
            output: Vec::new(),
            staging: Vec::new(),
            next_staging: 0,
            max_frame,
            scratch: Vec::new(),
            msg: Vec::new(),
            images: None,
            arriving: HashMap::new(),
            arrived: HashMap::new(),
            nvml: None,
            memory_limit: None,
            captures: 0,
            invalidated: HashSet::new(),
            capturing_into: HashMap::new(),
            capture_graphs: HashMap::new(),
            reached: Wake::new().ok().map(|wake| {
                Arc::new(Reached {
                    ids: Mutex::new(Vec::new()),
                    wake,
                })
            }),
            host_funcs_out: 0,
            parked: Vec::new(),
            helpers: None,
            sync_events: HashMap::new(),
            busy: HashMap::new(),
            last_busy: None,
            deferred: None,
            copies: Vec::new(),
            copy_replies: Vec::new(),
            watches: Vec::new(),
            unasked: 0,
            next_look: Instant::now(),
            ipc: None,
            shared: ipc::Shared::default(),
            host_nodes: hostnodes::HostNodes::default(),
            session_id,
            calls: 0,
        }
    }

    /// Load and keep images by content in `cache`.
    pub fn with_image_cache(mut self, cache: Option<ImageCache>) -> Self {
        self.images = cache;
        self
    }

    /// Use `nvml` for `DeviceStatus` instead of loading NVML at first use.
    pub fn with_nvml(mut self, nvml: ServerNvml) -> Self {
        self.nvml = Some(nvml);
        self
    }

    /// Share memory and events with other sessions through `registry`.
    pub fn with_ipc(mut self, registry: Option<crate::ipc::Registry>) -> Self {
        self.ipc = registry;
        self
    }

    /// Send what the driver writes to this process's standard streams, as
    /// captured, to the client (see [`output`]).
    pub fn with_output(mut self, output: Vec<output::Captured>) -> Self {
        self.output = output;
        self
    }

    /// Limit the memory `DeviceStatus` reports to a slice of `bytes`.
    pub fn with_memory_limit(mut self, bytes: Option<u64>) -> Self {
        self.memory_limit = bytes;
        self
    }

    /// The devices this session offers, as the handshake describes them.
    pub fn session_info(driver: &Driver, session_id: u64, server_id: &str, simulated: bool) -> SessionInfo {
        let count = driver.device_count().unwrap_or(0);
        let facts = (0..count)
            .filter_map(|d| Some((d, driver.device_facts(d).ok()?)))
            .collect();
        let devices = crate::inventory::described_devices(driver, facts);
        SessionInfo {
            version: gpupool_proto::PROTOCOL_VERSION,
            server_id: server_id.to_string(),
            session_id,
            driver_version: driver.version().unwrap_or(0),
            kernel_driver: if simulated {
                String::new()
            } else {
                kernel_driver_version().unwrap_or_default()
            },
            simulated,
            machine: crate::inventory::machine_gpus(&devices),
            devices,
            unserved: driver.unserved_entry_points().into_iter().map(String::from).collect(),
        }
    }

    /// Send the handshake answer.
    pub fn welcome<W: Write + ?Sized>(&mut self, w: &mut W, info: SessionInfo) -> Result<(), ProtoError> {
        frame::write_frame(
            w,
            &mut self.scratch,
            0,
            0,
            &Welcome::Accepted(info),
            &[],
            self.max_frame,
        )?;
        w.flush()?;
        Ok(())
    }

    /// Serve frames until the connection ends; then free everything.
    pub fn serve<R: WaitRead, W: Write>(&mut self, reader: R, writer: W) -> (SessionEnd, Cleanup) {
        let mut reader = BufReader::with_capacity(256 << 10, reader);
        // What one request sends (a small copy's data and its reply) leaves
        // in one write; bulk chunks larger than the buffer go straight out.
        let mut writer = BufWriter::with_capacity(OUT_BUFFER, writer);
        let end = loop {
            match self
                .idle(&mut reader, &mut writer)
                .and_then(|()| self.serve_one(&mut reader, &mut writer))
            {
                Ok(()) => {}
                Err(ProtoError::Closed) => break SessionEnd::Disconnected,
                Err(e) if e.is_disconnect() => break SessionEnd::Disconnected,
                Err(ProtoError::Io(e)) => break SessionEnd::Io(e.to_string()),
                Err(e) => break SessionEnd::ProtocolViolation(e.to_string()),
            }
        };
        (end, self.cleanup())
    }

    /// Before reading the next request, while none has begun to arrive:
    /// tell the client of the host functions reached while any are out, and
    /// of watched event records that completed while any are watched (see
    /// `eventwatch`), waiting for a request, a host function or the next
    /// look at the events. (With neither, the read itself waits.)
    fn idle<R: WaitRead, W: Write>(&mut self, reader: &mut BufReader<R>, writer: &mut W) -> Result<(), ProtoError> {
        let Some(reached) = self.reached.clone() else {
            return Ok(());
        };
        // Looks at the events come at most every FIRST_LOOK while the
        // client streams requests, and at doubling intervals while it is
        // quiet.
        let mut look = eventwatch::FIRST_LOOK;
        while reader.buffer().is_empty() {
            self.tell_reached(writer)?;
            if self.watching_unasked() && Instant::now() >= self.next_look {
                self.tell_done_unasked(writer)?;
                self.next_look = Instant::now() + look;
                look = (look * 2).min(eventwatch::LAST_LOOK);
            }
            writer.flush()?;
            if self.watching_unasked() {
                let left = self.next_look.saturating_duration_since(Instant::now());
                // Bytes: the request. Woken: a host function was reached
                // (told at the top). Neither: time to look again.
                if reader.get_mut().wait_readable_for(&reached.wake, left)? == Some(true) {
                    break;
                }
            } else if self.host_funcs_out > 0 || !self.parked.is_empty() || !self.copies.is_empty() {
                if reader.get_mut().wait_readable(&reached.wake)? {
                    break;
                }
            } else {
                break;
            }
        }
        Ok(())
    }

    /// Answer the requests whose host functions the driver has reached: the
    /// client runs them now. Called before every reply, so a synchronising
    /// call's answer follows the host functions it waited for.
    fn tell_reached<W: Write>(&mut self, writer: &mut W) -> Result<(), ProtoError> {
        // With none out, none can have been reached: no lock on the hot path.
        if self.host_funcs_out == 0 && self.parked.is_empty() && self.copies.is_empty() && self.copy_replies.is_empty()
        {
            return Ok(());
        }
        let Some(reached) = self.reached.clone() else {
            return Ok(());
        };
        for id in self.host_nodes.take_refused() {
            self.host_funcs_out = self.host_funcs_out.saturating_sub(1);
            let refused = Reply::Status(INVALID_VALUE);
            frame::write_frame(writer, &mut self.scratch, id, 0, &refused, &[], self.max_frame)?;
        }
        // The data of copies done goes first; then every function reached
        // before them (the stream got to those first: until a look finds
        // none more), then the copies' answers.
        loop {
            let take = || std::mem::take(&mut *reached.ids.lock().unwrap_or_else(|p| p.into_inner()));
            let mut reaches = take();
            if !self.copies.is_empty() {
                self.flush_copies(writer)?;
                reaches.extend(take());
            }
            if reaches.is_empty() {
                break;
            }
            for reach in reaches {
                let id = match reach {
                    Reach::Request(id) => id,
                    Reach::Node(token) => match self.host_nodes.next_call(token) {
                        Some(id) => id,
                        None => {
                            tracing::warn!(token, "a graph's host node was reached with no launch of it told");
                            continue;
                        }
                    },
                    Reach::Synced { id, status } => {
                        self.answer_parked(writer, id, status)?;
                        continue;
                    }
                };
                self.host_funcs_out = self.host_funcs_out.saturating_sub(1);
                frame::write_frame(writer, &mut self.scratch, id, 0, &Reply::Status(0), &[], self.max_frame)?;
            }
        }
        self.send_copy_replies(writer)
    }

    /// Enqueue the client's host function (request `id`) on its stream. Not
    /// in a capture: a graph's host node runs at every launch, which one
    /// reply cannot tell (the client sends `CaptureHostFunc` for those).
    fn launch_host_func(&mut self, ctx: Handle, stream: StreamRef, id: u64) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        let reached = self.reached.clone().ok_or(NOT_SUPPORTED)?;
        if self.captures > 0 {
            let mut status = 0i32;
            // SAFETY: s is resolved from this client's tables; status is writable.
            unsafe { self.driver.cuStreamIsCapturing(s, &mut status) }?;
            if status != 0 {
                return Err(NOT_SUPPORTED);
            }
        }
        let call = Box::into_raw(Box::new(HostCall { reached, id }));
        // SAFETY: s is this client's stream in the current context; the
        // driver calls `host_call_reached` once with `call`, which owns it.
        let result = unsafe { self.driver.cuLaunchHostFunc(s, host_call_reached, call.cast()) };
        match result {
            Ok(()) => self.host_funcs_out += 1,
            // SAFETY: the driver refused it, so it will never call back with
            // `call`, which is still ours.
            Err(_) => drop(unsafe { Box::from_raw(call) }),
        }
        result
    }

    fn serve_one<R: WaitRead, W: Write>(
        &mut self,
        reader: &mut BufReader<R>,
        writer: &mut W,
    ) -> Result<(), ProtoError> {
        let mut msg = std::mem::take(&mut self.msg);
        let header = frame::read_frame(reader, &mut msg, self.max_frame)?;
        let decoded = codec::decode::<Request>(&msg);
        self.msg = msg;
        let request = decoded?;
        self.calls += 1;
        if header.flags & frame::FLAG_NOTICES_TAKEN != 0 {
            self.client_reads();
        }
        let synchronises = matches!(
            request,
            Request::CtxSynchronize { .. } | Request::StreamSynchronize { .. } | Request::EventSynchronize { .. }
        );
        let reply = if synchronises && header.wants_reply() && header.bulk_len == 0 {
            self.work_ctx = None;
            self.synchronise(header.id, request, reader, writer)?
        } else {
            let reply = self.execute(&header, request, reader, writer)?;
            self.finish_copy(reply, reader, writer)?
        };
        self.tell_reached(writer)?;
        if let Some(reply) = reply {
            // The client reads what completed, and what the driver wrote
            // for it, as it reads this reply (after the data of copies
            // before those records).
            let done = self.events_done();
            self.tell_reached(writer)?;
            if let Some(done) = done {
                frame::write_frame(writer, &mut self.scratch, NOTICE_ID, 0, &done, &[], self.max_frame)?;
            }
            self.send_output(writer, synchronises)?;
            frame::write_frame(writer, &mut self.scratch, header.id, 0, &reply, &[], self.max_frame)?;
            self.client_reads();
        }
        writer.flush()?;
        Ok(())
    }

    /// Notices of what the driver wrote to standard output and standard
    /// error since the last reply (after a synchronisation, what its C
    /// library still buffers too).
    fn send_output<W: Write>(&mut self, writer: &mut W, synchronised: bool) -> Result<(), ProtoError> {
        if self.output.is_empty() {
            return Ok(());
        }
        if synchronised {
            output::Captured::flush_streams();
        }
        for captured in &mut self.output {
            loop {
                let bytes = captured.take(gpupool_proto::message::OUTPUT_CHUNK);
                if bytes.is_empty() {
                    break;
                }
                let notice = Reply::Output {
                    fd: captured.stream(),
                    bytes,
                };
                frame::write_frame(writer, &mut self.scratch, NOTICE_ID, 0, &notice, &[], self.max_frame)?;
            }
        }
        Ok(())
    }

    /// Keep a streamed call's error for its context.
    fn keep(&mut self, ctx: Handle, status: Status, what: &str) {
        tracing::debug!(
            request = what,
            status,
            "a streamed request failed: the context's next synchronising call reports it"
        );
        let ctx = self.work_ctx.take().unwrap_or(ctx);
        self.kept.entry(ctx).or_insert(status);
    }

    /// The answer of a synchronising call: its own error, else the first
    /// error a streamed call of the context left.
    fn sync_status(&mut self, ctx: Handle, own: DriverResult) -> Status {
        match own {
            Err(s) => {
                self.kept.remove(&ctx);
                s
            }
            Ok(()) => self.kept.remove(&ctx).unwrap_or(0),
        }
    }

    fn make_current(&mut self, ctx: Handle) -> DriverResult {
        self.tables.context(ctx)?;
        if self.current != Some(ctx) {
            // SAFETY: ctx is a live context of this client (checked above).
            unsafe { self.driver.cuCtxSetCurrent(as_ptr(ctx)) }?;
            self.current = Some(ctx);
        }
        Ok(())
    }

    /// `cuCtxEnablePeerAccess` / `cuCtxDisablePeerAccess` of `peer`, one
    /// of this client's contexts, with `ctx` current.
    fn peer_access(&mut self, ctx: Handle, peer: Handle, enable: bool, flags: u32) -> DriverResult {
        self.tables.context(peer)?;
        self.make_current(ctx)?;
        // SAFETY: peer is a live context of this client (checked above).
        unsafe {
            if enable {
                self.driver.cuCtxEnablePeerAccess(as_ptr(peer), flags)
            } else {
                self.driver.cuCtxDisablePeerAccess(as_ptr(peer))
            }
        }
    }

    fn stream(&mut self, ctx: Handle, s: StreamRef) -> DriverResult<Ptr> {
        let (owner, p) = self.resolve_stream(ctx, s)?;
        // Whatever names a stream may have given it work. The stream named
        // last is marked already (from a place after the context's last
        // synchronise: those forget `last_busy`).
        if self.last_busy != Some((owner, p)) {
            self.busy.insert((owner, p), self.calls);
            self.last_busy = Some((owner, p));
        }
        Ok(p)
    }

    /// Forget the streams marked busy that `keep` does not keep.
    fn forget_busy(&mut self, keep: impl FnMut(&(Handle, Ptr), &mut u64) -> bool) {
        self.busy.retain(keep);
        self.last_busy = None;
    }

    /// The stream `s` names for a request of `ctx`, and the context it
    /// belongs to.
    fn resolve_stream(&mut self, ctx: Handle, s: StreamRef) -> DriverResult<(Handle, Ptr)> {
        match s {
            StreamRef::Legacy => Ok((ctx, STREAM_LEGACY)),
            StreamRef::Handle(h) => match self.tables.streams.get(&h) {
                Some(c) if *c == ctx => Ok((ctx, self.real(h))),
                // A green context's streams take work from any context of
                // their device, and a green context's work may go to its
                // device's other streams (the driver runs it in the
                // stream's context), as PyTorch uses green streams with
                // the primary context current.
                Some(&c) if self.same_device_with_green(c, ctx) => Ok((c, self.real(h))),
                _ => Err(INVALID_HANDLE),
            },
            StreamRef::PerThread(t) => {
                if let Some(p) = self.per_thread.get(&(ctx, t)) {
                    return Ok((ctx, *p));
                }
                let mut p: Ptr = std::ptr::null_mut();
                // SAFETY: p is writable; flags 0 make a stream that
                // synchronises with the legacy stream, as the per-thread
                // default stream does.
                unsafe { self.driver.cuStreamCreateWithPriority(&mut p, 0, 0) }?;
                self.per_thread.insert((ctx, t), p);
                Ok((ctx, p))
            }
        }
    }

    /// Make `ctx` current and resolve the stream; work for a stream of
    /// another context (a green context's, see [`Worker::stream`]) runs in
    /// the stream's context, so that one is made current.
    fn enter(&mut self, ctx: Handle, s: StreamRef) -> DriverResult<Ptr> {
        self.make_current(ctx)?;
        let p = self.stream(ctx, s)?;
        if let StreamRef::Handle(h) = s {
            match self.tables.streams.get(&h) {
                Some(&owner) if owner != ctx => {
                    self.make_current(owner)?;
                    self.work_ctx = Some(owner);
                }
                _ => {}
            }
        }
        Ok(p)
    }

    fn execute<R: Read, W: Write>(
        &mut self,
        header: &FrameHeader,
        request: Request,
        reader: &mut R,
        writer: &mut W,
    ) -> Result<Option<Reply>, ProtoError> {
        let wants = header.wants_reply();
        self.work_ctx = None;
        // Requests that carry bulk data read it themselves; any other bulk is
        // a protocol violation.
        let carries_bulk = matches!(
            request,
            Request::MemcpyHtoD { .. }
                | Request::MemcpyHtoD2D { .. }
                | Request::MemcpyHtoA { .. }
                | Request::ModuleLoad { .. }
                | Request::LibraryLoad { .. }
                | Request::ImagePart { .. }
                | Request::LinkAddData { .. }
                | Request::GraphAddNode { .. }
                | Request::GraphExecKernelNodeSet { .. }
                | Request::GraphNodeSet { .. }
                | Request::Launch(_)
        );
        if !carries_bulk && header.bulk_len != 0 {
            return Err(ProtoError::Malformed(format!(
                "{} unexpected bulk bytes",
                header.bulk_len
            )));
        }
        let d = self.driver;
        let reply = match request {
            Request::MemcpyHtoD { .. } | Request::MemcpyHtoD2D { .. } | Request::MemcpyHtoA { .. } => {
                let (ctx, stream, status) = match request {
                    Request::MemcpyHtoD {
                        ctx,
                        stream,
                        dst,
                        offset,
                        total,
                    } => (
                        ctx,
                        stream,
                        self.copy_in(ctx, stream, dst, offset, total, header.bulk_len, reader)?,
                    ),
                    Request::MemcpyHtoD2D {
                        ctx,
                        stream,
                        dst,
                        pitch,
                        width,
                        first_row,
                        rows,
                    } => {
                        let band = Band {
                            base: dst,
                            pitch,
                            width,
                            first_row,
                            rows,
                        };
                        (
                            ctx,
                            stream,
                            self.copy_in_2d(ctx, stream, band, header.bulk_len, reader)?,
                        )
                    }
                    Request::MemcpyHtoA {
                        ctx,
                        stream,
                        dst,
                        width,
                        first_row,
                        rows,
                    } => {
                        let band = (width, first_row, rows);
                        let status = self.copy_into_array(ctx, stream, dst, band, header.bulk_len, reader)?;
                        (ctx, stream, status)
                    }
                    _ => unreachable!("matched above"),
                };
                if wants {
                    let own = if status == 0 {
                        self.sync_stream(ctx, stream)
                    } else {
                        Err(status)
                    };
                    Reply::Status(self.sync_status(ctx, own))
                } else {
                    if status != 0 {
                        self.keep(ctx, status, "copy to the device");
                    }
                    return Ok(None);
                }
            }
            Request::MemcpyDtoH { .. } | Request::MemcpyDtoH2D { .. } | Request::MemcpyAtoH { .. } => {
                let (ctx, sync, status) = match request {
                    Request::MemcpyDtoH {
                        ctx,
                        stream,
                        src,
                        len,
                        sync,
                    } => (ctx, sync, self.copy_out(header.id, ctx, stream, src, len, writer)?),
                    Request::MemcpyDtoH2D {
                        ctx,
                        stream,
                        src,
                        pitch,
                        width,
                        height,
                        sync,
                    } => {
                        let rows = Band {
                            base: src,
                            pitch,
                            width,
                            first_row: 0,
                            rows: height,
                        };
                        (ctx, sync, self.copy_out_2d(header.id, ctx, stream, rows, writer)?)
                    }
                    Request::MemcpyAtoH {
                        ctx,
                        stream,
                        src,
                        width,
                        height,
                        sync,
                    } => {
                        let status = self.copy_out_of_array(header.id, ctx, stream, src, (width, height), writer)?;
                        (ctx, sync, status)
                    }
                    _ => unreachable!("matched above"),
                };
                // The client reads the data either way. A synchronous copy
                // reports its own error or the context's kept one, and clears
                // it; an asynchronous one keeps its own error for the next
                // synchronising call.
                let own = if status == 0 { Ok(()) } else { Err(status) };
                if sync {
                    Reply::Done(self.sync_status(ctx, own))
                } else {
                    if status != 0 {
                        self.keep(ctx, status, "copy from the device");
                    }
                    Reply::Done(status)
                }
            }
            Request::ModuleLoad { ctx, sha256 } => match self.image(reader, header.bulk_len, &sha256)? {
                Some((image, fresh)) => {
                    let r = self.module_load(ctx, &image);
                    if let Err(status) = &r {
                        tracing::debug!(
                            status,
                            bytes = image.len() - 1,
                            "the driver refused a code image (ModuleLoad)"
                        );
                    }
                    self.cache_loaded(&r, &image, fresh);
                    to_reply(r)
                }
                None => Reply::ImageUnknown,
            },
            Request::ImagePart { sha256, offset, total } => {
                let piece = read_image(reader, header.bulk_len)?;
                let status = self.image_part(sha256, offset, total, &piece[..piece.len() - 1]);
                // A refused piece is told by the load that names the image
                // (`ImageUnknown`), not kept for a context.
                if wants {
                    Reply::Done(status)
                } else {
                    return Ok(None);
                }
            }
            Request::LibraryLoad { sha256 } => match self.image(reader, header.bulk_len, &sha256)? {
                Some((image, fresh)) => {
                    let r = self.library_load(&image);
                    if let Err(status) = &r {
                        tracing::debug!(
                            status,
                            bytes = image.len() - 1,
                            "the driver refused a code image (LibraryLoad)"
                        );
                    }
                    self.cache_loaded(&r, &image, fresh);
                    to_reply(r)
                }
                None => Reply::ImageUnknown,
            },
            Request::GraphAddNode {
                ctx,
                graph,
                deps,
                edges,
                node,
            } => {
                let (mut params, len) = read_params(reader, header.bulk_len)?;
                to_reply(self.graph_add_node(ctx, graph, (&deps, &edges), &node, &mut params, len))
            }
            Request::GraphExecKernelNodeSet {
                ctx,
                exec,
                node,
                launch,
            } => {
                let (mut params, len) = read_params(reader, header.bulk_len)?;
                to_reply(self.graph_exec_kernel_node_set(ctx, exec, node, &launch, &mut params, len))
            }
            Request::GraphNodeSet {
                ctx,
                node,
                params: work,
            } => {
                let (mut params, len) = read_params(reader, header.bulk_len)?;
                to_reply(self.graph_node_set(ctx, node, &work, &mut params, len))
            }
            Request::LinkAddData { ctx, link, kind, name } => {
                let data = read_image(reader, header.bulk_len)?;
                to_reply(self.link_add_data(ctx, link, kind, &name, &data))
            }
            Request::LaunchHostFunc { ctx, stream } => {
                if !wants {
                    return Err(ProtoError::Malformed("a host function must ask for its reply".into()));
                }
                match self.launch_host_func(ctx, stream, header.id) {
                    // Answered when the stream reaches it (`tell_reached`).
                    Ok(()) => return Ok(None),
                    Err(s) => {
                        self.keep(ctx, s, "LaunchHostFunc");
                        Reply::Status(s)
                    }
                }
            }
            Request::Launch(launch) => {
                let (mut params, len) = read_params(reader, header.bulk_len)?;
                let ctx = launch.ctx;
                let result = self.launch(&launch, &mut params, len);
                if wants {
                    Reply::Status(self.sync_status(ctx, result))
                } else {
                    if let Err(s) = result {
                        self.keep(ctx, s, "Launch");
                    }
                    return Ok(None);
                }
            }
            other => {
                // The request's name, for the log of a failure.
                let name = tracing::enabled!(tracing::Level::DEBUG).then(|| {
                    let text = format!("{other:?}");
                    text.split([' ', '(', '{']).next().unwrap_or_default().to_string()
                });
                let (ctx, result) = self.call(d, other);
                match (wants, result) {
                    (true, r) => {
                        if r.status() != 0 {
                            tracing::debug!(request = name.as_deref(), status = r.status(), "a request failed");
                        }
                        r
                    }
                    (false, r) => {
                        if r.status() != 0 {
                            self.keep(ctx, r.status(), name.as_deref().unwrap_or("streamed request"));
                        }
                        return Ok(None);
                    }
                }
            }
        };
        Ok(Some(reply))
    }

    /// Calls with no bulk data. Returns the context (for keeping errors) and
    /// the reply.
    fn call(&mut self, d: &Driver, request: Request) -> (Handle, Reply) {
        use Request as R;
        let ctx_of = |r: &Request| -> Handle {
            match r {
                R::CtxDestroy { ctx }
                | R::CtxSynchronize { ctx }
                | R::CtxGetLimit { ctx, .. }
                | R::CtxSetLimit { ctx, .. } => *ctx,
                R::MemGetInfo { ctx } | R::MemAlloc { ctx, .. } | R::MemFree { ctx, .. } => *ctx,
                R::MemAllocAsync { ctx, .. } | R::MemFreeAsync { ctx, .. } => *ctx,
                R::MemPoolExportPointer { ctx, .. } | R::MemPoolImportPointer { ctx, .. } => *ctx,
                R::MemcpyDtoD { ctx, .. } | R::Memset { ctx, .. } => *ctx,
                R::MemcpyDtoD2D { ctx, .. } | R::Memset2D { ctx, .. } | R::MemcpyArray { ctx, .. } => *ctx,
                R::ModuleUnload { ctx, .. } | R::ModuleGetFunction { ctx, .. } | R::ModuleGetGlobal { ctx, .. } => *ctx,
                R::LibraryGetGlobal { ctx, .. } | R::KernelGetFunction { ctx, .. } => *ctx,
                R::LibraryGetModule { ctx, .. } => *ctx,
                R::LibraryGetManaged { ctx, .. } | R::LinkCreate { ctx, .. } | R::LinkComplete { ctx, .. } => *ctx,
                R::FuncGetAttributes { ctx, .. } | R::FuncSetAttribute { ctx, .. } | R::Occupancy { ctx, .. } => *ctx,
                R::StreamCreate { ctx, .. } | R::StreamDestroy { ctx, .. } | R::StreamSynchronize { ctx, .. } => *ctx,
                R::StreamQuery { ctx, .. } | R::StreamWaitEvent { ctx, .. } => *ctx,
                R::EventCreate { ctx, .. } | R::EventDestroy { ctx, .. } | R::EventRecord { ctx, .. } => *ctx,
                R::EventRecordWatched { ctx, .. } | R::CtxRecordEvent { ctx, .. } | R::CtxWaitEvent { ctx, .. } => *ctx,
                R::CtxResetPersistingL2Cache { ctx } | R::CtxPeerAccess { ctx, .. } => *ctx,
                R::EventSynchronize { ctx, .. } | R::EventQuery { ctx, .. } | R::EventElapsedTime { ctx, .. } => *ctx,
                R::ParamInfo { ctx, .. } | R::SetCacheConfig { ctx, .. } => *ctx,
                R::OccupancyClusters { ctx, .. } => *ctx,
                R::StreamAttribute { ctx, .. } | R::StreamCopyAttributes { ctx, .. } => *ctx,
                R::StreamBeginCapture { ctx, .. } | R::StreamEndCapture { ctx, .. } => *ctx,
                R::GraphInstantiate { ctx, .. } | R::GraphLaunch { ctx, .. } | R::GraphUpload { ctx, .. } => *ctx,
                R::GraphExecDestroy { ctx, .. } | R::GraphDestroy { ctx, .. } | R::GraphNodeCount { ctx, .. } => *ctx,
                R::GraphCreate { ctx } | R::GraphAddDependencies { ctx, .. } => *ctx,
                R::StreamMemOps { ctx, .. } | R::GraphExecUpdate { ctx, .. } | R::GraphExecNodeSet { ctx, .. } => *ctx,
                R::IpcGetMemHandle { ctx, .. } | R::IpcOpenMemHandle { ctx, .. } | R::IpcCloseMemHandle { ctx, .. } => {
                    *ctx
                }
                R::IpcGetEventHandle { ctx, .. } | R::IpcOpenEventHandle { ctx, .. } => *ctx,
                R::CaptureHostFunc { ctx, .. } | R::GraphHostCalls { ctx, .. } => *ctx,
                R::GraphListNodes { ctx, .. } | R::StreamBeginCaptureToGraph { ctx, .. } => *ctx,
                R::GraphDebugDot { ctx, .. } | R::GraphNodeEnabled { ctx, .. } => *ctx,
                R::GraphConditionalHandleCreate { ctx, .. } | R::StreamCaptureInfo { ctx, .. } => *ctx,
                R::StreamUpdateCaptureDependencies { ctx, .. } | R::GraphEdges { ctx, .. } => *ctx,
                R::GraphNodeGet { ctx, .. } | R::GraphDestroyNode { ctx, .. } => *ctx,
                R::GraphRemoveDependencies { ctx, .. } | R::GraphClone { ctx, .. } => *ctx,
                R::GraphFindInClone { ctx, .. } | R::GraphKernelNodeAttribute { ctx, .. } => *ctx,
                R::GraphKernelNodeCopyAttributes { ctx, .. } => *ctx,
                _ => 0,
            }
        };
        let ctx = ctx_of(&request);
        let reply = match request {
            R::PrimaryCtxRetain { device } => to_reply(self.primary_retain(device)),
            R::PrimaryCtxRelease { device } => to_reply(self.primary_release(device)),
            R::PrimaryCtxSetFlags { device, flags } => {
                // SAFETY: plain values; the driver validates the device.
                to_reply(unsafe { d.cuDevicePrimaryCtxSetFlags_v2(device, flags) })
            }
            R::PrimaryCtxReset { device } => to_reply(self.primary_reset(device)),
            R::CtxCreate { device, flags } => to_reply(self.ctx_create(device, flags)),
            R::CtxDestroy { ctx } => to_reply(self.ctx_destroy(ctx)),
            R::CtxSynchronize { ctx } => {
                let own = self.make_current(ctx).and_then(|()| {
                    // SAFETY: no arguments; ctx is current.
                    unsafe { d.cuCtxSynchronize() }
                });
                Reply::Status(self.sync_status(ctx, own))
            }
            R::CtxGetLimit { ctx, limit } => to_reply(self.make_current(ctx).and_then(|()| {
                let mut v = 0usize;
                // SAFETY: v is writable.
                unsafe { d.cuCtxGetLimit(&mut v, limit) }.map(|()| Reply::Size(v as u64))
            })),
            R::CtxSetLimit { ctx, limit, value } => {
                to_reply(self.make_current(ctx).and_then(|()| {
                    // SAFETY: plain values.
                    unsafe { d.cuCtxSetLimit(limit, value as usize) }
                }))
            }
            R::MemGetInfo { ctx } => to_reply(self.make_current(ctx).and_then(|()| {
                let (mut free, mut total) = (0usize, 0usize);
                // SAFETY: both are writable.
                unsafe { d.cuMemGetInfo_v2(&mut free, &mut total) }.map(|()| Reply::MemInfo {
                    free: free as u64,
                    total: total as u64,
                })
            })),
            R::MemAlloc { ctx, size } => to_reply(self.mem_alloc(ctx, size)),
            R::MemFree { ctx, ptr } => to_reply(self.mem_free(ctx, ptr)),
            R::MemAllocAsync {
                ctx,
                stream,
                size,
                pool,
            } => to_reply(self.mem_alloc_async(ctx, stream, size, pool)),
            R::MemFreeAsync { ctx, stream, ptr } => to_reply(self.mem_free_async(ctx, stream, ptr)),
            R::MemPoolOfDevice { device, current } => to_reply(self.pool_of_device(device, current)),
            R::MemPoolSetCurrent { device, pool } => to_reply(self.check_pool(pool).and_then(|()| {
                // SAFETY: the pool is one this client may name; the driver
                // checks that it belongs to the device.
                unsafe { d.cuDeviceSetMemPool(device, as_ptr(pool)) }
            })),
            R::MemPoolCreate {
                device,
                max_size,
                handle_types,
            } => to_reply(self.pool_create(device, max_size, handle_types)),
            R::MemPoolExport { pool } => to_reply(self.pool_export(pool)),
            R::MemPoolImport { token } => to_reply(self.pool_import(&token)),
            R::MemPoolExportPointer { ctx, ptr } => to_reply(self.pool_export_pointer(ctx, ptr)),
            R::MemPoolImportPointer { ctx, pool, token } => to_reply(self.pool_import_pointer(ctx, pool, &token)),
            R::MemPoolDestroy { pool } => to_reply(self.pool_destroy(pool)),
            R::MemPoolAttribute { pool, attr, set } => to_reply(self.pool_attribute(pool, attr, set)),
            R::GraphMemAttribute { device, attr, set } => to_reply(self.graph_mem_attribute(device, attr, set)),
            R::GraphMemTrim { device } => to_reply(self.check_device(device).and_then(|()| {
                // SAFETY: a device of this server.
                unsafe { d.cuDeviceGraphMemTrim(device) }
            })),
            R::MemPoolTrimTo { pool, keep } => to_reply(self.check_pool(pool).and_then(|()| {
                // SAFETY: as for MemPoolSetCurrent.
                unsafe { d.cuMemPoolTrimTo(as_ptr(pool), keep as usize) }
            })),
            R::MemPoolSetAccess { pool, device, flags } => to_reply(self.check_pool(pool).and_then(|()| {
                let desc = MemAccessDesc {
                    location_type: 1,
                    location_id: device,
                    flags,
                };
                // SAFETY: the pool is this client's (checked); one descriptor.
                unsafe { d.cuMemPoolSetAccess(as_ptr(pool), &desc, 1) }
            })),
            R::MemAddressReserve { size, alignment } => to_reply(self.address_reserve(size, alignment)),
            R::MemAddressFree { ptr, size } => to_reply(self.address_free(ptr, size)),
            R::MemCreate {
                device,
                size,
                handle_types,
            } => to_reply(self.physical_create(device, size, handle_types)),
            R::MemRelease { handle } => to_reply(self.physical_release(handle)),
            R::MemRetainAllocationHandle { ptr } => to_reply(self.physical_retain(ptr)),
            R::MemExport { handle } => to_reply(self.mem_export(handle)),
            R::MemImport { token } => to_reply(self.mem_import(&token)),
            R::MemMap {
                ctx,
                ptr,
                size,
                offset,
                handle,
            } => to_reply(self.map(ctx, ptr, size, offset, handle)),
            R::MemUnmap { ptr, size } => to_reply(self.unmap(ptr, size)),
            R::MemSetAccess {
                ptr,
                size,
                device,
                flags,
            } => to_reply(self.set_access(ptr, size, device, flags)),
            R::MemGranularity { device, recommended } => {
                let prop = MemAllocationProp::device(device, 0);
                let mut g = 0usize;
                // SAFETY: g is writable and prop a complete property block;
                // the driver validates the device.
                to_reply(
                    unsafe { d.cuMemGetAllocationGranularity(&mut g, &prop, recommended as u32) }
                        .map(|()| Reply::Size(g as u64)),
                )
            }
            R::ArrayCreate { ctx, desc } => to_reply(self.array_create(ctx, desc)),
            R::ArrayDestroy { array } => to_reply(self.array_destroy(array)),
            R::MemcpyArray {
                ctx,
                stream,
                dst,
                src,
                width,
                height,
            } => {
                let r = self.copy_array(ctx, stream, dst, src, width, height);
                Reply::Status(self.sync_status(ctx, r))
            }
            R::TexObjectCreate { ctx, resource, texture } => to_reply(self.texture_create(ctx, resource, texture)),
            R::TexObjectDestroy { tex } => to_reply(self.texture_destroy(tex)),
            R::SurfObjectCreate { ctx, array } => to_reply(self.surface_create(ctx, array)),
            R::SurfObjectDestroy { surf } => to_reply(self.surface_destroy(surf)),
            R::MemcpyDtoD {
                ctx,
                stream,
                dst,
                src,
                len,
            } => {
                // A device-to-device copy, even the synchronous one, does
                // not wait for the device (the driver's documented
                // behaviour), so the worker goes on with the next request.
                let r = self.enter(ctx, stream).and_then(|s| {
                    self.tables.check_range(dst, len)?;
                    self.tables.check_range(src, len)?;
                    // SAFETY: both ranges lie inside this client's allocations.
                    unsafe { d.cuMemcpyDtoDAsync_v2(dst, src, len as usize, s) }
                });
                Reply::Status(self.sync_status(ctx, r))
            }
            R::Memset {
                ctx,
                stream,
                dst,
                value,
                elem_size,
                count,
            } => {
                let r = self.memset(ctx, stream, dst, value, elem_size, count);
                Reply::Status(self.sync_status(ctx, r))
            }
            R::MemcpyDtoD2D {
                ctx,
                stream,
                dst,
                dst_pitch,
                src,
                src_pitch,
                width,
                height,
            } => {
                // Like the linear device-to-device copy, it does not wait.
                let r = self.enter(ctx, stream).and_then(|s| {
                    let rows = |base, pitch| Band {
                        base,
                        pitch,
                        width,
                        first_row: 0,
                        rows: height,
                    };
                    self.check_band(&rows(dst, dst_pitch))?;
                    self.check_band(&rows(src, src_pitch))?;
                    if width == 0 || height == 0 {
                        return Ok(());
                    }
                    let copy = Memcpy2D::new(
                        Side::Device(src, src_pitch as usize),
                        Side::Device(dst, dst_pitch as usize),
                        width as usize,
                        height as usize,
                    );
                    // SAFETY: both row spans lie inside this client's allocations.
                    unsafe { d.cuMemcpy2DAsync_v2(&copy, s) }
                });
                Reply::Status(self.sync_status(ctx, r))
            }
            R::Memset2D {
                ctx,
                stream,
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            } => {
                let r = self.memset_2d(ctx, stream, dst, pitch, value, elem_size, width, height);
                Reply::Status(self.sync_status(ctx, r))
            }
            R::ModuleUnload { ctx, module } => to_reply(self.module_unload(ctx, module)),
            R::ModuleGetFunction { ctx, module, name } => to_reply(self.module_get_function(ctx, module, &name)),
            R::ModuleGetGlobal { ctx, module, name } => to_reply(self.module_get_global(ctx, module, &name)),
            R::LibraryUnload { library } => to_reply(self.library_unload(library)),
            R::LibraryGetKernel { library, name } => to_reply(self.library_get_kernel(library, &name)),
            R::LibraryGetGlobal { ctx, library, name } => to_reply(self.library_get_global(ctx, library, &name, false)),
            R::LibraryGetManaged { ctx, library, name } => to_reply(self.library_get_global(ctx, library, &name, true)),
            R::TensorMapEncode(desc) => to_reply(tensor_map_encode(d, &desc)),
            R::LinkCreate { ctx, options } => to_reply(self.link_create(ctx, &options)),
            R::GraphCreate { ctx } => to_reply(self.graph_create(ctx)),
            R::GraphExecUpdate { ctx, exec, graph } => to_reply(self.graph_exec_update(ctx, exec, graph)),
            R::GraphExecNodeSet {
                ctx,
                exec,
                node,
                params,
            } => to_reply(self.graph_exec_node_set(ctx, exec, node, &params)),
            R::StreamMemOps { ctx, stream, ops } => to_reply(self.stream_mem_ops(ctx, stream, &ops)),
            R::GraphAddDependencies {
                ctx,
                graph,
                from,
                to,
                edges,
            } => to_reply(self.graph_add_dependencies(ctx, graph, &from, &to, &edges)),
            R::LinkComplete { ctx, link } => to_reply(self.link_complete(ctx, link)),
            R::CaptureHostFunc { ctx, stream, token } => to_reply(self.capture_host_func(ctx, stream, token)),
            R::GraphHostCalls { calls, .. } => to_reply(self.graph_host_calls(&calls)),
            R::IpcGetMemHandle { ctx, ptr } => to_reply(self.ipc_get_mem_handle(ctx, ptr)),
            R::IpcOpenMemHandle { ctx, handle, flags } => to_reply(self.ipc_open_mem_handle(ctx, &handle, flags)),
            R::IpcCloseMemHandle { ctx, ptr } => to_reply(self.ipc_close_mem_handle(ctx, ptr)),
            R::IpcGetEventHandle { ctx, event } => to_reply(self.ipc_get_event_handle(ctx, event)),
            R::IpcOpenEventHandle { ctx, handle, id } => to_reply(self.ipc_open_event_handle(ctx, &handle, id)),
            R::LinkImage { link, offset } => to_reply(self.link_image(link, offset)),
            R::LinkDestroy { link } => to_reply(self.link_destroy(link)),
            R::TensorMapReplaceAddress { map, address } => to_reply(tensor_map_replace(d, &map, address)),
            R::KernelGetFunction { ctx, kernel } => to_reply(self.kernel_get_function(ctx, kernel)),
            R::LibraryGetModule { ctx, library } => to_reply(self.library_get_module(ctx, library)),
            R::FuncGetAttributes { ctx, func, attrs } => to_reply(self.make_current(ctx).and_then(|()| {
                self.check_function(func)?;
                attributes(&attrs, |v, a| {
                    // SAFETY: func is this client's function; v is writable.
                    unsafe { d.cuFuncGetAttribute(v, a, as_ptr(func)) }
                })
            })),
            R::FuncSetAttribute { ctx, func, attr, value } => to_reply(self.make_current(ctx).and_then(|()| {
                self.check_function(func)?;
                // SAFETY: func is this client's function.
                unsafe { d.cuFuncSetAttribute(as_ptr(func), attr, value) }
            })),
            R::KernelGetAttributes { kernel, attrs, device } => to_reply(self.check_kernel(kernel).and_then(|()| {
                attributes(&attrs, |v, a| {
                    // SAFETY: kernel is this client's; v is writable.
                    unsafe { d.cuKernelGetAttribute(v, a, as_ptr(kernel), device) }
                })
            })),
            R::KernelSetAttribute {
                kernel,
                attr,
                value,
                device,
            } => to_reply(self.check_kernel(kernel).and_then(|()| {
                // SAFETY: kernel is this client's.
                unsafe { d.cuKernelSetAttribute(attr, value, as_ptr(kernel), device) }
            })),
            R::Occupancy { ctx, func, query } => to_reply(self.occupancy(ctx, func, query)),
            R::SetCacheConfig { ctx, target, config } => to_reply(self.set_cache_config(d, ctx, target, config)),
            R::OccupancyClusters {
                ctx,
                func,
                block,
                shared_mem,
                sizes,
            } => to_reply(self.occupancy_clusters(ctx, func, block, shared_mem, &sizes)),
            R::StreamAttribute { ctx, stream, attr, set } => to_reply(self.stream_attribute(d, ctx, stream, attr, set)),
            R::StreamCopyAttributes { ctx, dst, src } => to_reply(self.enter(ctx, dst).and_then(|dst| {
                let src = self.stream(ctx, src)?;
                // SAFETY: both streams are resolved from this client's tables.
                unsafe { d.cuStreamCopyAttributes(dst, src) }
            })),
            R::StreamCreate {
                ctx,
                flags,
                priority,
                id,
            } => to_reply(self.make_current(ctx).and_then(|()| {
                self.check_new_name(id)?;
                let mut s: Ptr = std::ptr::null_mut();
                // SAFETY: s is writable.
                unsafe { d.cuStreamCreateWithPriority(&mut s, flags, priority) }?;
                Ok(Reply::Handle(self.name_new(id, handle(s), ctx, true)))
            })),
            R::StreamDestroy { ctx, stream } => to_reply(self.make_current(ctx).and_then(|()| {
                match self.tables.streams.get(&stream) {
                    Some(c) if *c == ctx => {}
                    _ => return Err(INVALID_HANDLE),
                }
                let real = self.real(stream);
                self.tables.streams.remove(&stream);
                self.tables.real.remove(&stream);
                // A capture under way ends with its stream; what was kept of
                // it must not be taken for a later stream's, which the
                // driver may give the same handle.
                let mut capturing = 0i32;
                // SAFETY: the stream belongs to this client; capturing is writable.
                if unsafe { d.cuStreamIsCapturing(real, &mut capturing) }.is_ok() && capturing != 0 {
                    self.captures = self.captures.saturating_sub(1);
                }
                self.forget_capture(real);
                self.forget_busy(|(_, b), _| *b != real);
                // SAFETY: the stream belongs to this client.
                unsafe { d.cuStreamDestroy_v2(real) }
            })),
            R::StreamSynchronize { ctx, stream } => {
                let r = self.sync_stream(ctx, stream);
                Reply::Status(self.sync_status(ctx, r))
            }
            R::StreamQuery { ctx, stream } => {
                let r = self.enter(ctx, stream).and_then(|s| {
                    // SAFETY: s is resolved from this client's tables.
                    unsafe { d.cuStreamQuery(s) }
                });
                Reply::Status(self.sync_status(ctx, r))
            }
            R::StreamWaitEvent {
                ctx,
                stream,
                event,
                flags,
            } => to_reply(self.enter(ctx, stream).and_then(|s| {
                self.check_event(event)?;
                // SAFETY: stream and event belong to this client.
                unsafe { d.cuStreamWaitEvent(s, self.real(event), flags) }
            })),
            R::EventCreate { ctx, flags, id } => to_reply(self.make_current(ctx).and_then(|()| {
                self.check_new_name(id)?;
                let mut e: Ptr = std::ptr::null_mut();
                // SAFETY: e is writable.
                unsafe { d.cuEventCreate(&mut e, flags) }?;
                Ok(Reply::Handle(self.name_new(id, handle(e), ctx, false)))
            })),
            R::EventDestroy { event, .. } => to_reply(self.check_event(event).and_then(|()| {
                self.unwatch_event(event);
                self.ipc_forget_event(event);
                let real = self.real(event);
                self.tables.events.remove(&event);
                self.tables.real.remove(&event);
                // SAFETY: the event belongs to this client.
                unsafe { d.cuEventDestroy_v2(real) }
            })),
            R::EventRecord { ctx, event, stream } => {
                to_reply(self.enter(ctx, stream).and_then(|s| {
                    self.check_event(event)?;
                    // SAFETY: stream and event belong to this client.
                    unsafe { d.cuEventRecord(self.real(event), s) }
                }))
            }
            R::EventRecordWatched {
                ctx,
                event,
                stream,
                generation,
            } => to_reply(self.record_watched(ctx, event, stream, generation)),
            R::CtxRecordEvent { ctx, event } | R::CtxWaitEvent { ctx, event } => {
                let record = matches!(request, R::CtxRecordEvent { .. });
                to_reply(self.make_current(ctx).and_then(|()| {
                    self.check_event(event)?;
                    if record {
                        self.unwatch_event(event);
                        // SAFETY: context and event belong to this client.
                        unsafe { d.cuCtxRecordEvent(as_ptr(ctx), self.real(event)) }
                    } else {
                        // SAFETY: as above.
                        unsafe { d.cuCtxWaitEvent(as_ptr(ctx), self.real(event)) }
                    }
                }))
            }
            R::EventSynchronize { event, .. } => {
                let ectx = self.tables.events.get(&event).copied().unwrap_or(ctx);
                let r = self.check_event(event).and_then(|()| {
                    // SAFETY: the event belongs to this client.
                    unsafe { d.cuEventSynchronize(self.real(event)) }
                });
                Reply::Status(self.sync_status(ectx, r))
            }
            R::EventQuery { event, .. } => {
                let ectx = self.tables.events.get(&event).copied().unwrap_or(ctx);
                let r = self.check_event(event).and_then(|()| {
                    // SAFETY: the event belongs to this client.
                    unsafe { d.cuEventQuery(self.real(event)) }
                });
                Reply::Status(self.sync_status(ectx, r))
            }
            R::EventElapsedTime { start, end, .. } => to_reply(
                self.check_event(start)
                    .and_then(|()| self.check_event(end))
                    .and_then(|()| {
                        let mut ms = 0f32;
                        // SAFETY: both events belong to this client; ms is writable.
                        unsafe { d.cuEventElapsedTime(&mut ms, self.real(start), self.real(end)) }
                            .map(|()| Reply::Float(ms))
                    }),
            ),
            R::DeviceStatus { device } => to_reply(self.device_status(device)),
            R::DeviceTexture1DLinearMaxWidth {
                device,
                format,
                channels,
            } => to_reply(self.check_device(device).and_then(|()| {
                let mut width = 0usize;
                // SAFETY: width is writable; the driver checks the rest.
                unsafe { d.cuDeviceGetTexture1DLinearMaxWidth(&mut width, format, channels, device) }?;
                Ok(Reply::Size(width as u64))
            })),
            R::DevResource { device, ctx } => to_reply(self.dev_resource(device, ctx)),
            R::DevSmResourceSplitByCount {
                input,
                groups,
                simulate,
                remainder,
                flags,
                min_count,
            } => to_reply(self.sm_split(input, groups, simulate, remainder, flags, min_count)),
            R::DevResourceGenerateDesc { resources } => to_reply(self.resource_desc(&resources)),
            R::GreenCtxCreate { desc, device, flags } => to_reply(self.green_create(desc, device, flags)),
            R::GreenCtxDestroy { green } => to_reply(self.green_destroy(green)),
            R::GreenCtxStreamCreate {
                green,
                flags,
                priority,
                id,
            } => to_reply(self.green_stream_create(green, flags, priority, id)),
            R::CtxPeerAccess {
                ctx,
                peer,
                enable,
                flags,
            } => to_reply(self.peer_access(ctx, peer, enable, flags)),
            R::CtxResetPersistingL2Cache { ctx } => to_reply(self.make_current(ctx).and_then(|()| {
                // SAFETY: no arguments; ctx is current.
                unsafe { d.cuCtxResetPersistingL2Cache() }
            })),
            R::StreamBeginCapture { ctx, stream, mode } => to_reply(self.enter(ctx, stream).and_then(|s| {
                // SAFETY: s is resolved from this client's tables.
                unsafe { d.cuStreamBeginCapture_v2(s, mode) }?;
                self.captures += 1;
                Ok(())
            })),
            R::StreamEndCapture { ctx, stream } => to_reply(self.end_capture(ctx, stream)),
            R::GraphInstantiate { ctx, graph, flags } => to_reply(self.make_current(ctx).and_then(|()| {
                if self.tables.graphs.get(&graph) != Some(&ctx) {
                    return Err(INVALID_VALUE);
                }
                let mut exec: Ptr = std::ptr::null_mut();
                // SAFETY: the graph belongs to this client; exec is writable.
                unsafe { d.cuGraphInstantiateWithFlags(&mut exec, as_ptr(graph), flags) }?;
                self.tables.execs.insert(handle(exec), ctx);
                Ok(Reply::Handle(handle(exec)))
            })),
            R::GraphLaunch { ctx, exec, stream } => {
                let told = self.host_nodes.take_told();
                let r = self.enter(ctx, stream).and_then(|s| {
                    self.check_exec(ctx, exec)?;
                    // SAFETY: the executable graph and the stream belong to this client.
                    unsafe { d.cuGraphLaunch(as_ptr(exec), s) }
                });
                if r.is_err() {
                    // Its host nodes will not be reached: the client is told.
                    self.host_nodes.refuse(&told);
                }
                to_reply(r)
            }
            R::GraphUpload { ctx, exec, stream } => to_reply(self.enter(ctx, stream).and_then(|s| {
                self.check_exec(ctx, exec)?;
                // SAFETY: as for GraphLaunch.
                unsafe { d.cuGraphUpload(as_ptr(exec), s) }
            })),
            R::GraphExecDestroy { ctx, exec } => to_reply(self.make_current(ctx).and_then(|()| {
                self.check_exec(ctx, exec)?;
                self.tables.execs.remove(&exec);
                // SAFETY: the executable graph belongs to this client.
                unsafe { d.cuGraphExecDestroy(as_ptr(exec)) }
            })),
            R::GraphDestroy { ctx, graph } => to_reply(self.make_current(ctx).and_then(|()| {
                // A conditional node's body goes with the node's graph.
                if self.tables.graphs.get(&graph) != Some(&ctx) || self.tables.bodies.contains_key(&graph) {
                    return Err(INVALID_VALUE);
                }
                self.tables.forget_graph(graph);
                // SAFETY: the graph belonged to this client.
                unsafe { d.cuGraphDestroy(as_ptr(graph)) }
            })),
            R::StreamCaptureInfo { ctx, stream } => to_reply(self.capture_info(ctx, stream)),
            R::GraphEdges { ctx, graph } => to_reply(self.graph_edges(ctx, graph)),
            R::GraphNodeGet { ctx, node } => to_reply(self.graph_node_get(ctx, node)),
            R::GraphDestroyNode { ctx, node } => to_reply(self.graph_destroy_node(ctx, node)),
            R::GraphRemoveDependencies {
                ctx,
                graph,
                from,
                to,
                edges,
            } => to_reply(self.graph_remove_dependencies(ctx, graph, (&from, &to), &edges)),
            R::GraphClone { ctx, graph, tokens } => to_reply(self.graph_clone(ctx, graph, &tokens)),
            R::GraphFindInClone { ctx, node, clone } => to_reply(self.graph_find_in_clone(ctx, node, clone)),
            R::GraphKernelNodeAttribute { ctx, node, attr, set } => {
                to_reply(self.graph_kernel_node_attribute(ctx, node, attr, set.as_deref()))
            }
            R::GraphKernelNodeCopyAttributes { ctx, dst, src } => {
                to_reply(self.graph_kernel_node_copy_attributes(ctx, dst, src))
            }
            R::StreamUpdateCaptureDependencies {
                ctx,
                stream,
                deps,
                edges,
                flags,
            } => to_reply(self.update_capture_deps(ctx, stream, &deps, &edges, flags)),
            R::GraphConditionalHandleCreate {
                ctx,
                graph,
                default,
                flags,
            } => to_reply(self.check_graph(ctx, graph).and_then(|()| {
                let mut h = 0u64;
                // SAFETY: the graph and context are this client's; h is
                // writable; the driver checks the flags.
                unsafe { d.cuGraphConditionalHandleCreate(&mut h, as_ptr(graph), as_ptr(ctx), default, flags) }?;
                self.tables.conditionals.insert(h, graph);
                Ok(Reply::Handle(h))
            })),
            R::GraphListNodes { ctx, graph } => to_reply(self.graph_list_nodes(ctx, graph)),
            R::GraphDebugDot { ctx, graph, flags } => to_reply(self.graph_debug_dot(ctx, graph, flags)),
            R::GraphNodeEnabled { ctx, exec, node, set } => to_reply(self.check_exec(ctx, exec).and_then(|()| {
                if !self.tables.nodes.contains_key(&node) {
                    return Err(INVALID_VALUE);
                }
                if let Some(on) = set {
                    // SAFETY: the executable graph and the node are this
                    // client's (the driver checks they belong together).
                    unsafe { d.cuGraphNodeSetEnabled(as_ptr(exec), as_ptr(node), on as u32) }?;
                }
                let mut enabled = 0u32;
                // SAFETY: as above; enabled is writable.
                unsafe { d.cuGraphNodeGetEnabled(as_ptr(exec), as_ptr(node), &mut enabled) }?;
                Ok(Reply::Int(enabled as i64))
            })),
            R::StreamBeginCaptureToGraph {
                ctx,
                stream,
                graph,
                deps,
                mode,
            } => to_reply(self.begin_capture_to_graph(ctx, stream, graph, &deps, mode)),
            R::GraphNodeCount { ctx, graph } => to_reply(self.make_current(ctx).and_then(|()| {
                if self.tables.graphs.get(&graph) != Some(&ctx) {
                    return Err(INVALID_VALUE);
                }
                let mut n = 0usize;
                // SAFETY: the graph belongs to this client; with no node
                // array the driver only writes the count.
                unsafe { d.cuGraphGetNodes(as_ptr(graph), std::ptr::null_mut(), &mut n) }?;
                Ok(Reply::Size(n as u64))
            })),
            R::SetCaptureMode { mode } => {
                let mut m = mode;
                // SAFETY: m is readable and writable; the driver checks the mode.
                to_reply(unsafe { d.cuThreadExchangeStreamCaptureMode(&mut m) })
            }
            R::ParamInfo { ctx, func, kernel } => to_reply(
                self.make_current(ctx)
                    .and_then(|()| self.layout(func, kernel).map(Reply::Params)),
            ),
            // Bulk-carrying requests and host functions are handled by
            // `execute`.
            R::LaunchHostFunc { .. }
            | R::MemcpyHtoD { .. }
            | R::MemcpyHtoD2D { .. }
            | R::MemcpyHtoA { .. }
            | R::MemcpyDtoH { .. }
            | R::MemcpyDtoH2D { .. }
            | R::MemcpyAtoH { .. }
            | R::ModuleLoad { .. }
            | R::LibraryLoad { .. }
            | R::ImagePart { .. }
            | R::LinkAddData { .. }
            | R::GraphAddNode { .. }
            | R::GraphExecKernelNodeSet { .. }
            | R::GraphNodeSet { .. }
            | R::Launch(_) => Reply::Status(INVALID_VALUE),
        };
        (ctx, reply)
    }

    fn check_exec(&self, ctx: Handle, exec: Handle) -> DriverResult {
        match self.tables.execs.get(&exec) {
            Some(c) if *c == ctx => Ok(()),
            _ => Err(INVALID_VALUE),
        }
    }

    /// `cuStreamEndCapture`. The capture ends on the driver whatever
    /// happened; one in which a copy was refused fails as invalidated.
    fn end_capture(&mut self, ctx: Handle, stream: StreamRef) -> DriverResult<Reply> {
        let s = self.enter(ctx, stream)?;
        let mut status = 0i32;
        // SAFETY: s is resolved from this client's tables; status is writable.
        unsafe { self.driver.cuStreamIsCapturing(s, &mut status) }?;
        let mut graph: Ptr = std::ptr::null_mut();
        // SAFETY: s is resolved from this client's tables; graph is writable.
        let r = unsafe { self.driver.cuStreamEndCapture(s, &mut graph) };
        // Only the end of a capture under way counts it ended: the count
        // keeps copies out of every capture, whatever the client sends.
        if status != 0 {
            self.captures = self.captures.saturating_sub(1);
        }
        let into = self.capturing_into.remove(&s);
        let seen = self.capture_graphs.remove(&s);
        if self.invalidated.remove(&s) || r.is_err() {
            if into.is_none() {
                if !graph.is_null() {
                    // SAFETY: the driver just made this graph for us.
                    let _ = unsafe { self.driver.cuGraphDestroy(graph) };
                }
                // The graph the client saw under way went with the capture.
                if let Some(g) = seen {
                    self.tables.forget_graph(g);
                }
            }
            r?;
            return Err(STREAM_CAPTURE_INVALIDATED);
        }
        self.tables.graphs.insert(handle(graph), ctx);
        Ok(Reply::Handle(handle(graph)))
    }

    /// `cuStreamGetCaptureInfo` of the graph and dependencies of a capture
    /// under way, which the session may name from now on.
    fn capture_info(&mut self, ctx: Handle, stream: StreamRef) -> DriverResult<Reply> {
        let s = self.enter(ctx, stream)?;
        let (mut status, mut id, mut graph, mut count) = (0i32, 0u64, std::ptr::null_mut(), 0usize);
        let (mut deps, mut edges): (*const Ptr, *const u64) = (std::ptr::null(), std::ptr::null());
        // SAFETY: s is resolved from this client's tables; every out
        // pointer is writable.
        unsafe {
            self.driver
                .stream_capture_info(s, &mut status, &mut id, &mut graph, &mut deps, &mut edges, &mut count)
        }?;
        match status {
            1 if !graph.is_null() => {}
            // Not capturing.
            0 => return Err(ILLEGAL_STATE),
            _ => return Err(STREAM_CAPTURE_INVALIDATED),
        }
        let list = |p: *const Ptr| -> Vec<Handle> {
            if p.is_null() || count == 0 {
                return Vec::new();
            }
            // SAFETY: the driver's array of `count` nodes, valid until the
            // next call on the stream.
            unsafe { std::slice::from_raw_parts(p, count) }
                .iter()
                .map(|n| handle(*n))
                .collect()
        };
        let deps = list(deps);
        let edges: Vec<u64> = if edges.is_null() || count == 0 {
            Vec::new()
        } else {
            // SAFETY: as above, `count` edge data.
            unsafe { std::slice::from_raw_parts(edges, count) }.to_vec()
        };
        let edges = if edges.iter().all(|e| *e == 0) {
            Vec::new()
        } else {
            edges
        };
        let g = handle(graph);
        self.tables.graphs.insert(g, ctx);
        for d in &deps {
            self.tables.nodes.insert(*d, g);
        }
        if !self.capturing_into.contains_key(&s) {
            self.capture_graphs.insert(s, g);
        }
        Ok(Reply::CaptureInfo { graph: g, deps, edges })
    }

    /// Every edge of one of the session's graphs, whose nodes the session
    /// may name from now on.
    fn graph_edges(&mut self, ctx: Handle, graph: Handle) -> DriverResult<Reply> {
        self.check_graph(ctx, graph)?;
        let g = as_ptr(graph);
        let mut n = 0usize;
        let none: *mut Ptr = std::ptr::null_mut();
        // SAFETY: the graph is this client's; with no arrays the driver
        // only writes the count.
        unsafe { self.driver.graph_get_edges(g, none, none, std::ptr::null_mut(), &mut n) }?;
        let null: Ptr = std::ptr::null_mut();
        let (mut from, mut to, mut edges) = (vec![null; n], vec![null; n], vec![0u64; n]);
        // SAFETY: as above; each array has room for `n` edges.
        unsafe {
            self.driver
                .graph_get_edges(g, from.as_mut_ptr(), to.as_mut_ptr(), edges.as_mut_ptr(), &mut n)
        }?;
        let n = n.min(from.len());
        let (from, to): (Vec<Handle>, Vec<Handle>) = (
            from[..n].iter().map(|p| handle(*p)).collect(),
            to[..n].iter().map(|p| handle(*p)).collect(),
        );
        for node in from.iter().chain(&to) {
            self.tables.nodes.insert(*node, graph);
        }
        edges.truncate(n);
        Ok(Reply::Edges { from, to, edges })
    }

    /// `cuStreamUpdateCaptureDependencies`: nodes of the capture's graph.
    fn update_capture_deps(
        &mut self,
        ctx: Handle,
        stream: StreamRef,
        deps: &[Handle],
        edges: &[u64],
        flags: u32,
    ) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        if flags > 1 || !(edges.is_empty() || edges.len() == deps.len()) {
            return Err(INVALID_VALUE);
        }
        // The graph is the one the client was told of.
        let graph = self
            .capture_graphs
            .get(&s)
            .or_else(|| self.capturing_into.get(&s))
            .copied()
            .ok_or(ILLEGAL_STATE)?;
        let nodes = self.graph_nodes(graph, deps)?;
        let e = if edges.is_empty() {
            std::ptr::null()
        } else {
            edges.as_ptr()
        };
        // SAFETY: the stream is this client's, the nodes its capture's
        // graph's; one edge datum per node when any.
        unsafe {
            self.driver
                .update_capture_dependencies(s, nodes.as_ptr(), e, nodes.len(), flags)
        }
    }

    /// `cuStreamBeginCaptureToGraph`: capture on `stream` into `graph`,
    /// after its nodes `deps`.
    fn begin_capture_to_graph(
        &mut self,
        ctx: Handle,
        stream: StreamRef,
        graph: Handle,
        deps: &[Handle],
        mode: u32,
    ) -> DriverResult {
        self.check_graph(ctx, graph)?;
        if deps.iter().any(|n| self.tables.nodes.get(n) != Some(&graph)) {
            return Err(INVALID_VALUE);
        }
        let s = self.enter(ctx, stream)?;
        let dp: Vec<Ptr> = deps.iter().map(|n| as_ptr(*n)).collect();
        let dptr = if dp.is_empty() { std::ptr::null() } else { dp.as_ptr() };
        // SAFETY: the stream, the graph and its nodes are this client's;
        // no edge data (the default edges).
        unsafe {
            self.driver
                .cuStreamBeginCaptureToGraph(s, as_ptr(graph), dptr, std::ptr::null(), dp.len(), mode)
        }?;
        self.captures += 1;
        self.capturing_into.insert(s, graph);
        Ok(())
    }

    /// Copies through the staging buffers cannot be captured: a graph would
    /// keep the buffer's address, which later copies reuse. On a capturing
    /// stream they are refused and the capture fails at its end.
    fn refuse_if_capturing(&mut self, s: Ptr) -> DriverResult {
        if self.captures == 0 {
            return Ok(());
        }
        let mut status = 0i32;
        // SAFETY: s is resolved from this client's tables; status is writable.
        unsafe { self.driver.cuStreamIsCapturing(s, &mut status) }?;
        if status != 0 {
            self.invalidated.insert(s);
            return Err(STREAM_CAPTURE_UNSUPPORTED);
        }
        Ok(())
    }

    fn set_cache_config(&mut self, d: &Driver, ctx: Handle, target: CacheTarget, config: u32) -> DriverResult {
        match target {
            CacheTarget::Context => {
                self.make_current(ctx)?;
                // SAFETY: a plain value; the driver validates it.
                unsafe { d.cuCtxSetCacheConfig(config) }
            }
            CacheTarget::Function(func) => {
                self.make_current(ctx)?;
                self.check_function(func)?;
                // SAFETY: func is this client's function.
                unsafe { d.cuFuncSetCacheConfig(as_ptr(func), config) }
            }
            CacheTarget::Kernel { kernel, device } => {
                self.check_kernel(kernel)?;
                // SAFETY: kernel is this client's.
                unsafe { d.cuKernelSetCacheConfig(as_ptr(kernel), config, device) }
            }
        }
    }

    /// A stream attribute, set first when `set` holds a value; answered
    /// with the value the driver then reports.
    fn stream_attribute(
        &mut self,
        d: &Driver,
        ctx: Handle,
        stream: StreamRef,
        attr: u32,
        set: Option<Vec<u8>>,
    ) -> DriverResult<Reply> {
        let s = self.enter(ctx, stream)?;
        // The union is 64 bytes, 8-aligned.
        let mut value = [0u64; ATTRIBUTE_VALUE_BYTES / 8];
        if let Some(bytes) = set {
            if bytes.len() != ATTRIBUTE_VALUE_BYTES {
                return Err(INVALID_VALUE);
            }
            for (v, b) in value.iter_mut().zip(bytes.chunks_exact(8)) {
                *v = u64::from_ne_bytes(b.try_into().unwrap_or_default());
            }
            // SAFETY: s is this client's stream; value holds a whole union.
            unsafe { d.cuStreamSetAttribute(s, attr, value.as_ptr().cast()) }?;
        }
        // SAFETY: as above; the driver writes at most the union.
        unsafe { d.cuStreamGetAttribute(s, attr, value.as_mut_ptr().cast()) }?;
        Ok(Reply::Bytes(value.iter().flat_map(|v| v.to_ne_bytes()).collect()))
    }

    fn check_function(&self, func: Handle) -> DriverResult {
        if self.tables.functions.contains_key(&func) {
            Ok(())
        } else {
            Err(INVALID_HANDLE)
        }
    }

    fn check_kernel(&self, kernel: Handle) -> DriverResult {
        if self.tables.kernels.contains_key(&kernel) {
            Ok(())
        } else {
            Err(INVALID_HANDLE)
        }
    }

    /// The driver's handle for a stream or event the client names `h`.
    fn real(&self, h: Handle) -> Ptr {
        as_ptr(self.tables.real.get(&h).copied().unwrap_or(h))
    }

    /// A name the client gives a new stream or event: 0 (the driver's
    /// handle is answered instead), or a client handle not in use.
    fn check_new_name(&self, id: Handle) -> DriverResult {
        let taken = self.tables.streams.contains_key(&id) || self.tables.events.contains_key(&id);
        if id == 0 || (is_client_handle(id) && !taken) {
            Ok(())
        } else {
            Err(INVALID_VALUE)
        }
    }

    /// Record a new stream (or event) of `ctx` under the client's name, or
    /// its own handle when the client gave none; returns the name.
    fn name_new(&mut self, id: Handle, real: Handle, ctx: Handle, stream: bool) -> Handle {
        let name = if id == 0 { real } else { id };
        if id != 0 {
            self.tables.real.insert(id, real);
        }
        if stream {
            self.tables.streams.insert(name, ctx);
        } else {
            self.tables.events.insert(name, ctx);
        }
        name
    }

    fn check_event(&self, event: Handle) -> DriverResult {
        if self.tables.events.contains_key(&event) {
            Ok(())
        } else {
            Err(INVALID_HANDLE)
        }
    }

    fn sync_stream(&mut self, ctx: Handle, stream: StreamRef) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        // SAFETY: s is resolved from this client's tables.
        unsafe { self.driver.cuStreamSynchronize(s) }
    }

    // ---- device status ----

    fn check_device(&self, device: i32) -> DriverResult {
        if (0..self.driver.device_count()?).contains(&device) {
            Ok(())
        } else {
            Err(INVALID_DEVICE)
        }
    }

    /// A graph memory attribute of `device` (each a 64-bit value), set to
    /// `set` first when given.
    fn graph_mem_attribute(&mut self, device: i32, attr: i32, set: Option<u64>) -> DriverResult<Reply> {
        self.check_device(device)?;
        let mut value = set.unwrap_or(0);
        let slot = (&mut value as *mut u64).cast::<c_void>();
        if set.is_some() {
            // SAFETY: the attribute's value is a 64-bit word, readable here.
            unsafe { self.driver.cuDeviceSetGraphMemAttribute(device, attr, slot) }?;
        }
        // SAFETY: as above; the driver writes the word.
        unsafe { self.driver.cuDeviceGetGraphMemAttribute(device, attr, slot) }?;
        Ok(Reply::Size(value))
    }

    /// `DeviceStatus`: memory as this session sees it, and what NVML reads.
    fn device_status(&mut self, device: i32) -> DriverResult<Reply> {
        self.check_device(device)?;
        let uuid = self.driver.device_uuid(device)?;
        let sample = self.nvml.get_or_insert_with(ServerNvml::load).sample(&uuid);
        let (mut total, mut free) = match sample.as_ref().and_then(|s| s.memory) {
            Some((total, free, _)) => (total, free),
            None => self.driver_memory(device)?,
        };
        if let Some(limit) = self.memory_limit {
            total = total.min(limit);
            free = total.saturating_sub(self.client_bytes(device));
        }
        let free = free.min(total);
        let sample = sample.unwrap_or_default();
        let (gpu_util, mem_util) = sample.utilization.unwrap_or((0, 0));
        let flags = if self.nvml.as_ref().is_some_and(ServerNvml::available) {
            0
        } else {
            DEVICE_STATUS_NO_SERVER_NVML
        };
        Ok(Reply::DeviceStatus {
            total_bytes: total,
            free_bytes: free,
            used_bytes: total - free,
            gpu_util_percent: gpu_util,
            mem_util_percent: mem_util,
            temperature_c: sample.temperature_c.unwrap_or(0),
            power_mw: sample.power_mw.unwrap_or(0),
            flags,
        })
    }

    /// (total, free) from the driver: `cuMemGetInfo` in a context this
    /// client holds on the device; with none, the device's size less what
    /// this client allocated (nothing), rather than creating a context,
    /// which on a real GPU costs hundreds of MiB and milliseconds.
    fn driver_memory(&mut self, device: i32) -> DriverResult<(u64, u64)> {
        let held = self.tables.primaries.get(&device).copied().or_else(|| {
            self.tables
                .contexts
                .iter()
                .find(|(_, d)| **d == device)
                .map(|(c, _)| *c)
        });
        match held {
            Some(ctx) => {
                self.make_current(ctx)?;
                let (mut free, mut total) = (0usize, 0usize);
                // SAFETY: both are writable; ctx, a context of this client, is current.
                unsafe { self.driver.cuMemGetInfo_v2(&mut free, &mut total) }?;
                Ok((total as u64, free as u64))
            }
            None => {
                let total = self.driver.device_total_mem(device)?;
                Ok((total, total.saturating_sub(self.client_bytes(device))))
            }
        }
    }

    /// Bytes this client holds in allocations on `device`.
    fn client_bytes(&self, device: i32) -> u64 {
        self.tables
            .memory
            .values()
            .filter(|r| {
                matches!(r.kind, RegionKind::Allocated | RegionKind::Mapped)
                    && self.tables.contexts.get(&r.ctx) == Some(&device)
            })
            .map(|r| r.size)
            .sum()
    }

    // ---- contexts ----

    fn primary_retain(&mut self, device: i32) -> DriverResult<Reply> {
        let mut ctx: Ptr = std::ptr::null_mut();
        // SAFETY: ctx is writable; the driver validates the device.
        unsafe { self.driver.cuDevicePrimaryCtxRetain(&mut ctx, device) }?;
        let h = handle(ctx);
        self.tables.contexts.insert(h, device);
        self.tables.primaries.insert(device, h);
        Ok(Reply::Handle(h))
    }

    fn primary_release(&mut self, device: i32) -> DriverResult {
        let ctx = self
            .tables
            .primaries
            .get(&device)
            .copied()
            .ok_or(crate::tables::INVALID_CONTEXT)?;
        self.unwatch_context(ctx);
        self.release_context_resources(ctx);
        self.forget_captures_in(ctx);
        self.tables.drop_context(ctx);
        if self.current == Some(ctx) {
            self.current = None;
        }
        // SAFETY: this client retained the primary context of `device`.
        unsafe { self.driver.cuDevicePrimaryCtxRelease_v2(device) }
    }

    fn primary_reset(&mut self, device: i32) -> DriverResult {
        if let Some(ctx) = self.tables.primaries.get(&device).copied() {
            self.forget_context(ctx);
        }
        // SAFETY: plain value; the driver frees everything in the context.
        unsafe { self.driver.cuDevicePrimaryCtxReset_v2(device) }
    }

    fn ctx_create(&mut self, device: i32, flags: u32) -> DriverResult<Reply> {
        let mut ctx: Ptr = std::ptr::null_mut();
        // SAFETY: ctx is writable; the driver validates device and flags.
        unsafe { self.driver.cuCtxCreate_v2(&mut ctx, flags, device) }?;
        // cuCtxCreate makes the new context current on this thread.
        self.current = Some(handle(ctx));
        self.tables.contexts.insert(handle(ctx), device);
        Ok(Reply::Handle(handle(ctx)))
    }

    fn ctx_destroy(&mut self, ctx: Handle) -> DriverResult {
        self.tables.context(ctx)?;
        // A primary context is released, a green one destroyed as such.
        if self.tables.primaries.values().any(|c| *c == ctx) || self.green_of(ctx).is_some() {
            return Err(crate::tables::INVALID_CONTEXT);
        }
        self.forget_context(ctx);
        // SAFETY: the context was created by this client.
        unsafe { self.driver.cuCtxDestroy_v2(as_ptr(ctx)) }
    }

    /// Drop what the worker knows of a context that goes.
    fn forget_context(&mut self, ctx: Handle) {
        self.settle_parked(ctx);
        self.forget_busy(|(c, _), _| *c != ctx);
        self.unwatch_context(ctx);
        self.forget_captures_in(ctx);
        self.per_thread.retain(|(c, _), _| *c != ctx);
        self.tables.drop_context(ctx);
        self.kept.remove(&ctx);
        if self.current == Some(ctx) {
            self.current = None;
        }
    }

    /// Drop what was kept of the captures on `ctx`'s streams, which go with
    /// it: the driver may give a later stream one of their handles.
    fn forget_captures_in(&mut self, ctx: Handle) {
        let mut streams: Vec<Ptr> = self
            .tables
            .streams
            .iter()
            .filter(|(_, c)| **c == ctx)
            .map(|(s, _)| self.real(*s))
            .collect();
        streams.extend(self.per_thread.iter().filter(|((c, _), _)| *c == ctx).map(|(_, p)| *p));
        for s in streams {
            self.forget_capture(s);
        }
    }

    /// Drop what was kept of a capture on stream `s` (a refused copy, the
    /// graphs the client saw or gave), which goes.
    fn forget_capture(&mut self, s: Ptr) {
        self.invalidated.remove(&s);
        self.capture_graphs.remove(&s);
        self.capturing_into.remove(&s);
    }

    /// Free what a context holds before it is released (its allocations,
    /// streams, events, modules), since releasing a primary context that
    /// another client also holds would not free them.
    fn release_context_resources(&mut self, ctx: Handle) {
        if self.make_current(ctx).is_err() {
            return;
        }
        self.settle_parked(ctx);
        self.forget_busy(|(c, _), _| *c != ctx);
        let d = self.driver;
        self.release_arrays(ctx);
        self.ipc_close_context(ctx);
        let bases: Vec<u64> = self
            .tables
            .memory
            .iter()
            .filter(|(_, r)| r.ctx == ctx && r.kind == RegionKind::Allocated)
            .map(|(b, _)| *b)
            .collect();
        for b in bases {
            self.ipc_forget_memory(b);
            // SAFETY: b is an allocation of this client.
            let _ = unsafe { d.cuMemFree_v2(b) };
        }
        let streams: Vec<Ptr> = self
            .per_thread
            .iter()
            .filter(|((c, _), _)| *c == ctx)
            .map(|(_, s)| *s)
            .chain(
                self.tables
                    .streams
                    .iter()
                    .filter(|(_, c)| **c == ctx)
                    .map(|(s, _)| self.real(*s)),
            )
            .collect();
        for s in streams {
            // SAFETY: s is a stream of this client.
            let _ = unsafe { d.cuStreamDestroy_v2(s) };
        }
        self.per_thread.retain(|(c, _), _| *c != ctx);
        for (e, _) in self.tables.events.iter().filter(|(_, c)| **c == ctx) {
            // SAFETY: e is an event of this client.
            let _ = unsafe { d.cuEventDestroy_v2(self.real(*e)) };
        }
        for (x, _) in self.tables.execs.iter().filter(|(_, c)| **c == ctx) {
            // SAFETY: x is an executable graph of this client.
            let _ = unsafe { d.cuGraphExecDestroy(as_ptr(*x)) };
        }
        let bodies = &self.tables.bodies;
        for (g, _) in self
            .tables
            .graphs
            .iter()
            .filter(|(g, c)| **c == ctx && !bodies.contains_key(*g))
        {
            // SAFETY: g is a graph of this client (bodies of conditional
            // nodes go with the graph holding the node).
            let _ = unsafe { d.cuGraphDestroy(as_ptr(*g)) };
        }
        for (m, _) in self.tables.modules.iter().filter(|(_, c)| **c == ctx) {
            // SAFETY: m is a module of this client.
            let _ = unsafe { d.cuModuleUnload(as_ptr(*m)) };
        }
        if self.staging.iter().any(|s| s.pinned) {
            self.free_staging();
        }
    }

    // ---- memory ----

    fn mem_alloc(&mut self, ctx: Handle, size: u64) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        if size == 0 {
            return Err(INVALID_VALUE);
        }
        let mut p = 0u64;
        // SAFETY: p is writable.
        unsafe { self.driver.cuMemAlloc_v2(&mut p, size as usize) }?;
        self.own_allocation(ctx, p, size, None)
    }

    /// File new memory at `p` as this client's; on a clash with what the
    /// tables hold, give it back (in `stream`'s order when it was allocated
    /// in one).
    fn own_allocation(&mut self, ctx: Handle, p: u64, size: u64, stream: Option<Ptr>) -> DriverResult<Reply> {
        if self
            .tables
            .add_region(
                p,
                Region {
                    size,
                    ctx,
                    kind: RegionKind::Allocated,
                },
            )
            .is_err()
        {
            tracing::error!(
                ptr = p,
                size,
                "driver returned memory overlapping an existing allocation"
            );
            // SAFETY: p was just allocated.
            let _ = unsafe {
                match stream {
                    Some(s) => self.driver.cuMemFreeAsync(p, s),
                    None => self.driver.cuMemFree_v2(p),
                }
            };
            return Err(OUT_OF_MEMORY);
        }
        Ok(Reply::Pointer(p))
    }

    /// Stream-ordered allocation, from the device's current pool or `pool`.
    fn mem_alloc_async(&mut self, ctx: Handle, stream: StreamRef, size: u64, pool: Handle) -> DriverResult<Reply> {
        let s = self.enter(ctx, stream)?;
        if size == 0 {
            return Err(INVALID_VALUE);
        }
        let mut p = 0u64;
        if pool == 0 {
            // SAFETY: p is writable; s is this client's stream in the
            // current context.
            unsafe { self.driver.cuMemAllocAsync(&mut p, size as usize, s) }?;
        } else {
            self.check_pool(pool)?;
            // SAFETY: as above; the pool is one this client may name.
            unsafe {
                self.driver
                    .cuMemAllocFromPoolAsync(&mut p, size as usize, as_ptr(pool), s)
            }?;
        }
        self.own_allocation(ctx, p, size, Some(s))
    }

    /// Stream-ordered free: later requests may not name the memory; work
    /// before the free in the stream still may use it.
    fn mem_free_async(&mut self, ctx: Handle, stream: StreamRef, ptr: u64) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        match self.tables.memory.get(&ptr) {
            Some(r) if r.ctx == ctx && r.kind == RegionKind::Allocated => {}
            _ => return Err(INVALID_VALUE),
        }
        self.tables.remove_allocation(ptr)?;
        self.ipc_forget_memory(ptr);
        // SAFETY: ptr is an allocation of this client; s its stream.
        unsafe { self.driver.cuMemFreeAsync(ptr, s) }
    }

    fn address_reserve(&mut self, size: u64, alignment: u64) -> DriverResult<Reply> {
        if size == 0 {
            return Err(INVALID_VALUE);
        }
        let mut p = 0u64;
        // SAFETY: p is writable; no address hint, flags 0.
        unsafe {
            self.driver
                .cuMemAddressReserve(&mut p, size as usize, alignment as usize, 0, 0)
        }?;
        self.tables.reservations.insert(p, size);
        Ok(Reply::Pointer(p))
    }

    /// A whole reservation of this session, with nothing mapped in it.
    fn address_free(&mut self, ptr: u64, size: u64) -> DriverResult {
        if self.tables.reservations.get(&ptr) != Some(&size) {
            return Err(INVALID_VALUE);
        }
        if self.tables.memory.range(ptr..ptr + size).next().is_some() {
            return Err(INVALID_VALUE);
        }
        // SAFETY: the range is a reservation of this client.
        unsafe { self.driver.cuMemAddressFree(ptr, size as usize) }?;
        self.tables.reservations.remove(&ptr);
        Ok(())
    }

    fn physical_create(&mut self, device: i32, size: u64, handle_types: u32) -> DriverResult<Reply> {
        if size == 0 {
            return Err(INVALID_VALUE);
        }
        let prop = MemAllocationProp::device(device, handle_types);
        let mut h = 0u64;
        // SAFETY: h is writable and prop a complete property block; the
        // driver validates the device, the size and the handle types.
        unsafe { self.driver.cuMemCreate(&mut h, size as usize, &prop, 0) }?;
        self.tables.physical.insert(h, (size, device));
        Ok(Reply::Handle(h))
    }

    fn physical_release(&mut self, handle: Handle) -> DriverResult {
        self.tables.physical.get(&handle).ok_or(INVALID_VALUE)?;
        // SAFETY: the handle is a physical allocation of this client (its
        // mappings, if any, keep the memory until they are unmapped).
        unsafe { self.driver.cuMemRelease(handle) }?;
        if let Some(n) = self.tables.physical_retained.get_mut(&handle) {
            // One of the references `physical_retain` gave.
            *n -= 1;
            if *n == 0 {
                self.tables.physical_retained.remove(&handle);
            }
            return Ok(());
        }
        self.tables.physical.remove(&handle);
        self.ipc_forget_physical(handle);
        Ok(())
    }

    /// `cuMemRetainAllocationHandle` of any address in a mapping of this
    /// session whose physical memory it still holds: the mapping's handle,
    /// with one more reference. (Memory whose last handle was released
    /// while mapped is the mapping's alone, and is not handed out again.)
    fn physical_retain(&mut self, ptr: u64) -> DriverResult<Reply> {
        let (base, region) = self.tables.region_at(ptr).ok_or(INVALID_VALUE)?;
        if region.kind != RegionKind::Mapped {
            return Err(INVALID_VALUE);
        }
        let handle = *self.tables.mapped_from.get(&base).ok_or(INVALID_VALUE)?;
        let (_, device) = *self.tables.physical.get(&handle).ok_or(INVALID_VALUE)?;
        let mut h = 0u64;
        // SAFETY: h is writable; ptr lies in a mapping of this client.
        unsafe {
            self.driver
                .cuMemRetainAllocationHandle(&mut h, ptr as usize as *mut c_void)
        }?;
        if h != handle {
            // Not the handle the mapping was made from: give it back.
            // SAFETY: the reference was just taken.
            let _ = unsafe { self.driver.cuMemRelease(h) };
            return Err(UNKNOWN);
        }
        *self.tables.physical_retained.entry(handle).or_default() += 1;
        Ok(Reply::Pair(handle as i64, device as i64))
    }

    /// Map physical memory into a reservation; the range becomes this
    /// session's device memory.
    fn map(&mut self, ctx: Handle, ptr: u64, size: u64, offset: u64, handle: Handle) -> DriverResult {
        self.tables.context(ctx)?;
        let (len, _) = *self.tables.physical.get(&handle).ok_or(INVALID_VALUE)?;
        if size == 0 || offset.checked_add(size).is_none_or(|end| end > len) {
            return Err(INVALID_VALUE);
        }
        self.tables.reservation_of(ptr, size).ok_or(INVALID_VALUE)?;
        let region = Region {
            size,
            ctx,
            kind: RegionKind::Mapped,
        };
        self.tables.add_region(ptr, region)?;
        // SAFETY: the range lies in a reservation of this client and clashes
        // with none of its memory; the handle is its own.
        let result = unsafe { self.driver.cuMemMap(ptr, size as usize, offset as usize, handle, 0) };
        match result {
            Ok(()) => {
                self.tables.mapped_from.insert(ptr, handle);
            }
            Err(_) => {
                self.tables.memory.remove(&ptr);
            }
        }
        result
    }

    /// The mappings that make up exactly `ptr .. ptr + size`.
    fn mappings_covering(&self, ptr: u64, size: u64) -> DriverResult<Vec<u64>> {
        let end = ptr.checked_add(size).ok_or(INVALID_VALUE)?;
        let mut at = ptr;
        let mut bases = Vec::new();
        for (&b, r) in self.tables.memory.range(ptr..end) {
            if b != at || r.kind != RegionKind::Mapped || b + r.size > end {
                return Err(INVALID_VALUE);
            }
            bases.push(b);
            at = b + r.size;
        }
        if at != end || bases.is_empty() {
            return Err(INVALID_VALUE);
        }
        Ok(bases)
    }

    fn unmap(&mut self, ptr: u64, size: u64) -> DriverResult {
        let bases = self.mappings_covering(ptr, size)?;
        // SAFETY: the range is exactly mappings of this client.
        unsafe { self.driver.cuMemUnmap(ptr, size as usize) }?;
        for b in bases {
            self.tables.memory.remove(&b);
            self.tables.mapped_from.remove(&b);
        }
        Ok(())
    }

    fn set_access(&mut self, ptr: u64, size: u64, device: i32, flags: u32) -> DriverResult {
        self.mappings_covering(ptr, size)?;
        let desc = MemAccessDesc {
            location_type: 1,
            location_id: device,
            flags,
        };
        // SAFETY: the range is mappings of this client; one descriptor.
        unsafe { self.driver.cuMemSetAccess(ptr, size as usize, &desc, 1) }
    }

    /// At the end of the session: mappings, physical memory, reservations.
    fn release_virtual_memory(&mut self) {
        let mapped: Vec<(u64, u64)> = self
            .tables
            .memory
            .iter()
            .filter(|(_, r)| r.kind == RegionKind::Mapped)
            .map(|(b, r)| (*b, r.size))
            .collect();
        for (b, size) in mapped {
            // SAFETY: a mapping of this client.
            let _ = unsafe { self.driver.cuMemUnmap(b, size as usize) };
            self.tables.memory.remove(&b);
        }
        self.tables.mapped_from.clear();
        let retained = std::mem::take(&mut self.tables.physical_retained);
        for (h, _) in std::mem::take(&mut self.tables.physical) {
            for _ in 0..=retained.get(&h).copied().unwrap_or(0) {
                // SAFETY: physical memory of this client, now unmapped; once
                // for each reference it holds.
                let _ = unsafe { self.driver.cuMemRelease(h) };
            }
        }
        for (b, size) in std::mem::take(&mut self.tables.reservations) {
            // SAFETY: a reservation of this client, now empty.
            let _ = unsafe { self.driver.cuMemAddressFree(b, size as usize) };
        }
    }

    fn check_pool(&self, pool: Handle) -> DriverResult {
        if self.tables.pools.contains_key(&pool) {
            Ok(())
        } else {
            Err(INVALID_VALUE)
        }
    }

    /// The device's default or current pool; this client may name it from
    /// now on.
    fn pool_of_device(&mut self, device: i32, current: bool) -> DriverResult<Reply> {
        let mut pool: Ptr = std::ptr::null_mut();
        // SAFETY: pool is writable; the driver validates the device.
        unsafe {
            if current {
                self.driver.cuDeviceGetMemPool(&mut pool, device)
            } else {
                self.driver.cuDeviceGetDefaultMemPool(&mut pool, device)
            }
        }?;
        self.tables
            .pools
            .entry(handle(pool))
            .or_insert(PoolEntry { created: false, device });
        Ok(Reply::Handle(handle(pool)))
    }

    fn pool_create(&mut self, device: i32, max_size: u64, handle_types: u32) -> DriverResult<Reply> {
        // Only a file descriptor can reach another session (of this server).
        if handle_types & !ipc::HANDLE_TYPE_POSIX_FD != 0 {
            return Err(NOT_SUPPORTED);
        }
        let props = MemPoolProps::device(device, max_size as usize, handle_types);
        let mut pool: Ptr = std::ptr::null_mut();
        // SAFETY: pool is writable and props a complete CUmemPoolProps.
        unsafe { self.driver.cuMemPoolCreate(&mut pool, &props) }?;
        self.tables
            .pools
            .insert(handle(pool), PoolEntry { created: true, device });
        Ok(Reply::Handle(handle(pool)))
    }

    fn pool_destroy(&mut self, pool: Handle) -> DriverResult {
        match self.tables.pools.get(&pool) {
            Some(p) if p.created => {}
            // A device's default pool cannot be destroyed.
            _ => return Err(INVALID_VALUE),
        }
        // SAFETY: the pool was created (or imported) by this client.
        unsafe { self.driver.cuMemPoolDestroy(as_ptr(pool)) }?;
        self.tables.pools.remove(&pool);
        self.ipc_forget_pool(pool);
        Ok(())
    }

    /// Set (when asked) and read a pool attribute. The reuse policies (1 to
    /// 3) are ints; the threshold and the memory figures (4 to 8) 64-bit.
    fn pool_attribute(&mut self, pool: Handle, attr: i32, set: Option<u64>) -> DriverResult<Reply> {
        self.check_pool(pool)?;
        let wide = match attr {
            1..=3 => false,
            4..=8 => true,
            _ => return Err(INVALID_VALUE),
        };
        let mut value64: u64 = set.unwrap_or(0);
        let mut value32: i32 = set.unwrap_or(0) as i32;
        let slot: *mut c_void = if wide {
            (&mut value64 as *mut u64).cast()
        } else {
            (&mut value32 as *mut i32).cast()
        };
        if set.is_some() {
            // SAFETY: slot holds a value of the attribute's width.
            unsafe { self.driver.cuMemPoolSetAttribute(as_ptr(pool), attr, slot) }?;
        }
        // SAFETY: as above; the driver writes the attribute's width.
        unsafe { self.driver.cuMemPoolGetAttribute(as_ptr(pool), attr, slot) }?;
        Ok(Reply::Size(if wide { value64 } else { value32 as u32 as u64 }))
    }

    fn mem_free(&mut self, ctx: Handle, ptr: u64) -> DriverResult {
        self.make_current(ctx)?;
        match self.tables.memory.get(&ptr) {
            Some(r) if r.ctx == ctx && r.kind == RegionKind::Allocated => {}
            _ => return Err(INVALID_VALUE),
        }
        self.tables.remove_allocation(ptr)?;
        self.ipc_forget_memory(ptr);
        // SAFETY: ptr is an allocation of this client.
        unsafe { self.driver.cuMemFree_v2(ptr) }
    }

    fn memset(
        &mut self,
        ctx: Handle,
        stream: StreamRef,
        dst: u64,
        value: u32,
        elem_size: u8,
        count: u64,
    ) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        let bytes = count.checked_mul(elem_size as u64).ok_or(INVALID_VALUE)?;
        self.tables.check_range(dst, bytes)?;
        let d = self.driver;
        // SAFETY: dst..dst+bytes lies inside this client's allocations.
        unsafe {
            match elem_size {
                1 => d.cuMemsetD8Async(dst, value as u8, count as usize, s),
                2 => d.cuMemsetD16Async(dst, value as u16, count as usize, s),
                4 => d.cuMemsetD32Async(dst, value, count as usize, s),
                _ => Err(INVALID_VALUE),
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn memset_2d(
        &mut self,
        ctx: Handle,
        stream: StreamRef,
        dst: u64,
        pitch: u64,
        value: u32,
        elem_size: u8,
        width: u64,
        height: u64,
    ) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        if !matches!(elem_size, 1 | 2 | 4) || !dst.is_multiple_of(elem_size as u64) {
            return Err(INVALID_VALUE);
        }
        let bytes = width.checked_mul(elem_size as u64).ok_or(INVALID_VALUE)?;
        self.check_band(&Band {
            base: dst,
            pitch,
            width: bytes,
            first_row: 0,
            rows: height,
        })?;
        if width == 0 || height == 0 {
            return Ok(());
        }
        let d = self.driver;
        let (p, w, h) = (pitch as usize, width as usize, height as usize);
        // SAFETY: every row lies inside this client's allocations (checked).
        unsafe {
            match elem_size {
                1 => d.cuMemsetD2D8Async(dst, p, value as u8, w, h, s),
                2 => d.cuMemsetD2D16Async(dst, p, value as u16, w, h, s),
                _ => d.cuMemsetD2D32Async(dst, p, value, w, h, s),
            }
        }
    }

    /// Checks that every row of `band` lies inside one of the client's
    /// allocations: the span from its first row's start to its last row's
    /// end does, and rows do not overlap (`width <= pitch`).
    fn check_band(&self, band: &Band) -> DriverResult {
        if band.rows == 0 || band.width == 0 {
            return Ok(());
        }
        if band.rows > 1 && band.width > band.pitch {
            return Err(INVALID_VALUE);
        }
        let start = band.start().ok_or(INVALID_VALUE)?;
        let span = (band.rows - 1)
            .checked_mul(band.pitch)
            .and_then(|x| x.checked_add(band.width))
            .ok_or(INVALID_VALUE)?;
        self.tables.check_range(start, span).map(|_| ())
    }

    /// Allocate the staging buffers on first use (pinned by the driver when
    /// it can; plain memory otherwise).
    fn ensure_staging(&mut self) {
        while self.staging.len() < 2 {
            let buffer = self.new_staging();
            self.staging.push(buffer);
        }
    }

    /// A staging buffer of COPY_CHUNK bytes, pinned when the driver allows,
    /// with its event (in the current context).
    fn new_staging(&mut self) -> Staging {
        let mut host: Ptr = std::ptr::null_mut();
        // SAFETY: host is writable.
        let pinned = unsafe { self.driver.cuMemAllocHost_v2(&mut host, COPY_CHUNK) }.is_ok();
        let mut event: Ptr = std::ptr::null_mut();
        // SAFETY: event is writable; flag 0x2 (CU_EVENT_DISABLE_TIMING) keeps it cheap.
        if unsafe { self.driver.cuEventCreate(&mut event, 0x2) }.is_err() {
            event = std::ptr::null_mut();
        }
        let fallback = if pinned { Vec::new() } else { vec![0u8; COPY_CHUNK] };
        Staging {
            host,
            pinned,
            fallback,
            event,
            event_ctx: self.current,
            busy: false,
            held: false,
        }
    }

    fn free_staging(&mut self) {
        // A buffer still held is one a helper may still wait on (a copy
        // left at the session's end): it goes with the process.
        for s in self.staging.drain(..).filter(|s| !s.held) {
            if s.pinned {
                // SAFETY: allocated with cuMemAllocHost.
                let _ = unsafe { self.driver.cuMemFreeHost(s.host) };
            }
            if !s.event.is_null() {
                // SAFETY: created with cuEventCreate.
                let _ = unsafe { self.driver.cuEventDestroy_v2(s.event) };
            }
        }
    }

    /// Take a staging buffer: one no copy holds whose last use is done (the
    /// next in turn first), else a new one while the session has fewer
    /// than [`STAGING_SPARE`] besides those held, else the next in turn,
    /// waiting until the device is done with it. So a copy does not wait
    /// behind another stream's work while buffers can be had.
    fn take_staging(&mut self) -> DriverResult<usize> {
        self.ensure_staging();
        let i = match self.idle_staging() {
            Some(i) => i,
            None if self.staging.len() - self.held_staging() < STAGING_SPARE => {
                let buffer = self.new_staging();
                self.staging.push(buffer);
                self.staging.len() - 1
            }
            None => {
                let n = self.staging.len();
                (0..n)
                    .map(|k| (self.next_staging + k) % n)
                    .find(|&i| !self.staging[i].held)
                    .ok_or(OUT_OF_MEMORY)?
            }
        };
        self.next_staging = (i + 1) % self.staging.len();
        self.ready_staging(i)?;
        Ok(i)
    }

    /// A staging buffer no copy holds whose last use is done (or that
    /// never had one), the next in turn first.
    fn idle_staging(&self) -> Option<usize> {
        let n = self.staging.len();
        (0..n).map(|k| (self.next_staging + k) % n).find(|&i| {
            let s = &self.staging[i];
            // SAFETY: the event is the buffer's own, live.
            !s.held && (!s.busy || s.event.is_null() || unsafe { self.driver.cuEventQuery(s.event) }.is_ok())
        })
    }

    /// How many staging buffers copies hold.
    pub(super) fn held_staging(&self) -> usize {
        self.staging.iter().filter(|s| s.held).count()
    }

    /// Wait until the device is done with staging buffer `i`, and give it
    /// an event of the current context.
    fn ready_staging(&mut self, i: usize) -> DriverResult {
        let current = self.current;
        let s = &mut self.staging[i];
        if s.busy && !s.event.is_null() {
            // SAFETY: the event was recorded after the copy that used this buffer.
            unsafe { self.driver.cuEventSynchronize(s.event) }?;
        }
        s.busy = false;
        if s.event_ctx != current {
            // The copy runs in another context than the event's (a second
            // device, or a context of the program's own): its event is
            // made again in this one. The buffer itself serves every
            // context (pinned memory is portable with unified addressing).
            if !s.event.is_null() {
                // SAFETY: the event is idle (waited for above) and unused.
                let _ = unsafe { self.driver.cuEventDestroy_v2(s.event) };
            }
            let mut event: Ptr = std::ptr::null_mut();
            // SAFETY: event is writable; as in new_staging.
            if unsafe { self.driver.cuEventCreate(&mut event, 0x2) }.is_err() {
                event = std::ptr::null_mut();
            }
            s.event = event;
            s.event_ctx = current;
        }
        Ok(())
    }

    fn staging_slice(&mut self, i: usize, len: usize) -> &mut [u8] {
        let s = &mut self.staging[i];
        if s.pinned {
            // SAFETY: the pinned buffer has COPY_CHUNK bytes and len <= COPY_CHUNK.
            unsafe { std::slice::from_raw_parts_mut(s.host.cast::<u8>(), len) }
        } else {
            &mut s.fallback[..len]
        }
    }

    /// Mark a staging buffer in use by work just queued on `stream`.
    fn staging_in_flight(&mut self, i: usize, stream: Ptr) -> DriverResult {
        let s = &mut self.staging[i];
        if s.event.is_null() {
            // Without an event, wait for the stream itself.
            // SAFETY: stream is resolved from this client's tables.
            return unsafe { self.driver.cuStreamSynchronize(stream) };
        }
        // SAFETY: the event and stream are live.
        unsafe { self.driver.cuEventRecord(s.event, stream) }?;
        s.busy = true;
        Ok(())
    }

    /// One chunk of a host-to-device copy: the bulk bytes go from the socket
    /// into a staging buffer, then to the device asynchronously while the
    /// next chunk arrives. Returns the status; only I/O errors end the session.
    #[allow(clippy::too_many_arguments)]
    fn copy_in<R: Read>(
        &mut self,
        ctx: Handle,
        stream: StreamRef,
        dst: u64,
        offset: u64,
        total: u64,
        len: u64,
        reader: &mut R,
    ) -> Result<Status, ProtoError> {
        let target = dst.checked_add(offset);
        let checked = self.enter(ctx, stream).and_then(|s| {
            let target = target.ok_or(INVALID_VALUE)?;
            if offset.checked_add(len).is_none_or(|e| e > total) {
                return Err(INVALID_VALUE);
            }
            self.tables.check_range(target, len)?;
            self.refuse_if_capturing(s)?;
            Ok((s, target))
        });
        let (s, target) = match checked {
            Ok(v) => v,
            Err(status) => {
                frame::skip_bulk(reader, len)?;
                return Ok(status);
            }
        };
        if len as usize > COPY_CHUNK {
            // Larger than a staging buffer: copy through plain memory, synchronously.
            let mut buf = vec![0u8; len as usize];
            frame::read_bulk(reader, &mut buf)?;
            // SAFETY: the range was checked; buf outlives the synchronised copy.
            let r = unsafe {
                self.driver
                    .cuMemcpyHtoDAsync_v2(target, buf.as_ptr().cast(), buf.len(), s)
            }
            // SAFETY: s is live.
            .and_then(|()| unsafe { self.driver.cuStreamSynchronize(s) });
            return Ok(r.err().unwrap_or(0));
        }
        self.stage_in(s, len as usize, reader, |d, src| {
            // SAFETY: the target range was checked; the staging buffer stays
            // untouched until its event says the copy is done.
            unsafe { d.cuMemcpyHtoDAsync_v2(target, src.cast(), len as usize, s) }
        })
    }

    /// Reads `len` (at most a staging buffer's) bulk bytes into a staging
    /// buffer and has `issue(driver, staging)` queue their copy to the device
    /// on `s`; the buffer is reused once that copy is done. Returns the
    /// status; only I/O errors end the session.
    fn stage_in<R: Read>(
        &mut self,
        s: Ptr,
        len: usize,
        reader: &mut R,
        issue: impl FnOnce(&Driver, *mut u8) -> DriverResult,
    ) -> Result<Status, ProtoError> {
        let i = match self.take_staging() {
            Ok(i) => i,
            Err(status) => {
                frame::skip_bulk(reader, len as u64)?;
                return Ok(status);
            }
        };
        frame::read_bulk(reader, self.staging_slice(i, len))?;
        let src = self.staging_slice(i, len).as_mut_ptr();
        let r = issue(self.driver, src).and_then(|()| self.staging_in_flight(i, s));
        Ok(r.err().unwrap_or(0))
    }

    /// Rows of a 2D host-to-device copy (one band: at most a staging
    /// buffer), bulk bytes -> staging -> device, as in [`Worker::copy_in`].
    fn copy_in_2d<R: Read>(
        &mut self,
        ctx: Handle,
        stream: StreamRef,
        band: Band,
        len: u64,
        reader: &mut R,
    ) -> Result<Status, ProtoError> {
        let checked = self.enter(ctx, stream).and_then(|s| {
            if band.width.checked_mul(band.rows) != Some(len) || len > COPY_CHUNK as u64 {
                return Err(INVALID_VALUE);
            }
            self.check_band(&band)?;
            self.refuse_if_capturing(s)?;
            Ok(s)
        });
        let s = match checked {
            Ok(s) if len > 0 => s,
            Ok(_) => return Ok(0),
            Err(status) => {
                frame::skip_bulk(reader, len)?;
                return Ok(status);
            }
        };
        let start = band.start().unwrap_or_default();
        self.stage_in(s, len as usize, reader, |d, src| {
            let copy = Memcpy2D::new(
                Side::Host(src.cast(), band.width as usize),
                Side::Device(start, band.pitch as usize),
                band.width as usize,
                band.rows as usize,
            );
            // SAFETY: the rows were checked; the staging buffer stays
            // untouched until its event says the copy is done.
            unsafe { d.cuMemcpy2DAsync_v2(&copy, s) }
        })
    }

    /// A device-to-host copy: chunks go device -> staging -> socket, the
    /// device copy of one chunk overlapping the send of the previous one.
    fn copy_out<W: Write>(
        &mut self,
        id: u64,
        ctx: Handle,
        stream: StreamRef,
        src: u64,
        len: u64,
        writer: &mut W,
    ) -> Result<Status, ProtoError> {
        let s = match self.enter(ctx, stream).and_then(|s| {
            self.tables.check_range(src, len)?;
            self.refuse_if_capturing(s)?;
            Ok(s)
        }) {
            Ok(s) => s,
            Err(status) => return Ok(status),
        };
        self.stream_out(id, s, len, COPY_CHUNK as u64, writer, |d, dst, offset, n| {
            // SAFETY: the source range was checked; the staging buffer has n bytes.
            unsafe { d.cuMemcpyDtoHAsync_v2(dst.cast::<c_void>(), src + offset, n, s) }
        })
    }

    /// A 2D device-to-host copy: bands of whole rows go device -> staging
    /// (packed) -> socket, as in [`Worker::copy_out`].
    fn copy_out_2d<W: Write>(
        &mut self,
        id: u64,
        ctx: Handle,
        stream: StreamRef,
        rows: Band,
        writer: &mut W,
    ) -> Result<Status, ProtoError> {
        let checked = self.enter(ctx, stream).and_then(|s| {
            if rows.width > COPY_CHUNK as u64 {
                return Err(INVALID_VALUE);
            }
            self.check_band(&rows)?;
            self.refuse_if_capturing(s)?;
            Ok(s)
        });
        let s = match checked {
            Ok(s) => s,
            Err(status) => return Ok(status),
        };
        if rows.width == 0 || rows.rows == 0 {
            return Ok(0);
        }
        let width = rows.width;
        let len = width * rows.rows;
        let band = (COPY_CHUNK as u64 / width) * width;
        self.stream_out(id, s, len, band, writer, |d, dst, offset, n| {
            let copy = Memcpy2D::new(
                Side::Device(rows.base + offset / width * rows.pitch, rows.pitch as usize),
                Side::Host(dst.cast(), width as usize),
                width as usize,
                n / width as usize,
            );
            // SAFETY: the rows were checked; the staging buffer has n bytes,
            // n / width rows of width bytes.
            unsafe { d.cuMemcpy2DAsync_v2(&copy, s) }
        })
    }

    /// Sends `len` bytes produced by `issue` in chunks of at most `chunk`
    /// bytes: `issue(driver, staging, offset, n)` queues on `s` the device
    /// copy of bytes `offset..offset + n` into a staging buffer, and each
    /// chunk is sent while the next one's device copy runs.
    fn stream_out<W: Write>(
        &mut self,
        id: u64,
        s: Ptr,
        len: u64,
        chunk: u64,
        writer: &mut W,
        issue: impl Fn(&Driver, *mut u8, u64, usize) -> DriverResult,
    ) -> Result<Status, ProtoError> {
        let chunks: Vec<(u64, usize)> = (0..len)
            .step_by(chunk as usize)
            .map(|o| (o, (len - o).min(chunk) as usize))
            .collect();
        if self.may_defer_copy(chunks.len()) {
            // Issued whole now; sent when done (`copies`).
            for &(offset, n) in &chunks {
                let i = match self.take_staging() {
                    Ok(i) => i,
                    Err(status) => {
                        self.drop_deferred();
                        return Ok(status);
                    }
                };
                let dst = self.staging_slice(i, n).as_mut_ptr();
                let r = issue(self.driver, dst, offset, n).and_then(|()| self.staging_in_flight(i, s));
                if let Err(status) = r {
                    self.drop_deferred();
                    return Ok(status);
                }
                self.defer_chunk(id, i, offset, n);
            }
            return Ok(0);
        }
        let mut queued: Option<(usize, u64, usize)> = None;
        for &(offset, n) in &chunks {
            let i = match self.take_staging() {
                Ok(i) => i,
                Err(status) => return Ok(status),
            };
            let dst = self.staging_slice(i, n).as_mut_ptr();
            let r = issue(self.driver, dst, offset, n).and_then(|()| self.staging_in_flight(i, s));
            if let Err(status) = r {
                return Ok(status);
            }
            if let Some(prev) = queued.replace((i, offset, n)) {
                if let Err(status) = self.send_chunk(id, prev, writer)? {
                    return Ok(status);
                }
            }
        }
        if let Some(prev) = queued {
            if let Err(status) = self.send_chunk(id, prev, writer)? {
                return Ok(status);
            }
        }
        Ok(0)
    }

    fn send_chunk<W: Write>(
        &mut self,
        id: u64,
        (i, offset, n): (usize, u64, usize),
        writer: &mut W,
    ) -> Result<DriverResult, ProtoError> {
        let st = &mut self.staging[i];
        if st.busy && !st.event.is_null() {
            // SAFETY: the event was recorded after this chunk's copy.
            if let Err(status) = unsafe { self.driver.cuEventSynchronize(st.event) } {
                return Ok(Err(status));
            }
            st.busy = false;
        }
        let mut scratch = std::mem::take(&mut self.scratch);
        let max_frame = self.max_frame;
        let data = self.staging_slice(i, n);
        let r = frame::write_frame(writer, &mut scratch, id, 0, &Reply::Data { offset }, data, max_frame);
        self.scratch = scratch;
        r?;
        Ok(Ok(()))
    }

    // ---- modules and kernels ----

    /// The image a load carries, or the cached one its hash names (`None`
    /// when there is neither). `true` when it came over the wire.
    fn image<R: Read>(
        &mut self,
        reader: &mut R,
        bulk_len: u64,
        sha256: &[u8; 32],
    ) -> Result<Option<(Vec<u8>, bool)>, ProtoError> {
        if bulk_len > 0 {
            return Ok(Some((read_image(reader, bulk_len)?, true)));
        }
        if let Some(mut image) = self.arrived.remove(sha256) {
            image.push(0);
            return Ok(Some((image, true)));
        }
        let cached = self.images.as_ref().and_then(|c| c.get(sha256));
        Ok(cached.map(|mut image| {
            image.push(0);
            (image, false)
        }))
    }

    /// A piece of an image too large for one frame (`ImagePart`). Pieces
    /// out of order, past the announced length or the limit (for one image,
    /// and for all the session holds unloaded), or an image whose hash does
    /// not hold, are dropped with what came before
    /// (`CUDA_ERROR_INVALID_IMAGE`); the load that names it then answers
    /// `ImageUnknown`.
    fn image_part(&mut self, sha256: [u8; 32], offset: u64, total: u64, piece: &[u8]) -> Status {
        if offset == 0 {
            if total == 0 || total > gpupool_proto::message::MAX_IMAGE_BYTES {
                tracing::warn!(total, "an image in pieces over the limit was refused");
                return INVALID_IMAGE;
            }
            self.arriving.insert(sha256, (Vec::new(), total));
        }
        // What a session holds in images not yet loaded stays under the
        // limit of one image, however many it starts.
        let held: u64 = self.arriving.values().map(|(b, _)| b.len() as u64).sum::<u64>()
            + self.arrived.values().map(|b| b.len() as u64).sum::<u64>();
        let Some((bytes, want)) = self.arriving.get_mut(&sha256) else {
            return INVALID_IMAGE;
        };
        let want = *want;
        let end = offset.saturating_add(piece.len() as u64);
        let in_order = offset == bytes.len() as u64 && end <= want && !(piece.is_empty() && end < want);
        let within = held + piece.len() as u64 <= gpupool_proto::message::MAX_IMAGE_BYTES;
        if !in_order || !within {
            if !in_order {
                tracing::warn!(offset, total, "a piece of an image out of order was refused");
            } else {
                tracing::warn!(held, total, "images in pieces over the session's limit were refused");
            }
            self.arriving.remove(&sha256);
            return INVALID_IMAGE;
        }
        bytes.extend_from_slice(piece);
        if end < want {
            return 0;
        }
        let Some((bytes, _)) = self.arriving.remove(&sha256) else {
            return INVALID_IMAGE;
        };
        if crate::images::sha256(&bytes) != sha256 {
            tracing::warn!(total, "an image in pieces did not match its hash");
            return INVALID_IMAGE;
        }
        self.arrived.insert(sha256, bytes);
        0
    }

    /// Keep an image the driver accepted, so that the next client that names
    /// it need not send it.
    fn cache_loaded(&self, result: &DriverResult<Reply>, image: &[u8], fresh: bool) {
        if let (Ok(_), true, Some(cache)) = (result, fresh, &self.images) {
            cache.put(&image[..image.len() - 1]);
        }
    }

    // ---- stream memory operations ----

    fn stream_mem_ops(&mut self, ctx: Handle, stream: StreamRef, ops: &[MemOp]) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        let d = self.driver;
        for op in ops {
            let (MemOp::Write { addr, wide, .. } | MemOp::Wait { addr, wide, .. }) = *op;
            self.tables.check_range(addr, if wide { 8 } else { 4 })?;
            // SAFETY: the word lies inside this client's allocations; the
            // stream is this client's.
            unsafe {
                match *op {
                    MemOp::Write {
                        addr,
                        value,
                        wide: false,
                        flags,
                    } => d.cuStreamWriteValue32_v2(s, addr, value as u32, flags),
                    MemOp::Write {
                        addr,
                        value,
                        wide: true,
                        flags,
                    } => d.cuStreamWriteValue64_v2(s, addr, value, flags),
                    MemOp::Wait {
                        addr,
                        value,
                        wide: false,
                        flags,
                    } => d.cuStreamWaitValue32_v2(s, addr, value as u32, flags),
                    MemOp::Wait {
                        addr,
                        value,
                        wide: true,
                        flags,
                    } => d.cuStreamWaitValue64_v2(s, addr, value, flags),
                }
            }?;
        }
        Ok(())
    }

    // ---- graphs the client builds node by node ----

    fn graph_create(&mut self, ctx: Handle) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        let mut g: Ptr = std::ptr::null_mut();
        // SAFETY: g is writable; flags must be 0.
        unsafe { self.driver.cuGraphCreate(&mut g, 0) }?;
        self.tables.graphs.insert(handle(g), ctx);
        Ok(Reply::Handle(handle(g)))
    }

    /// The driver's handles of `nodes`, all of `graph`.
    fn graph_nodes(&self, graph: Handle, nodes: &[Handle]) -> DriverResult<Vec<Ptr>> {
        nodes
            .iter()
            .map(|n| match self.tables.nodes.get(n) {
                Some(g) if *g == graph => Ok(as_ptr(*n)),
                _ => Err(INVALID_VALUE),
            })
            .collect()
    }

    fn check_graph(&mut self, ctx: Handle, graph: Handle) -> DriverResult {
        self.make_current(ctx)?;
        if self.tables.graphs.get(&graph) == Some(&ctx) {
            Ok(())
        } else {
            Err(INVALID_VALUE)
        }
    }

    /// A node after `deps`, with `edges` their data (none: default edges;
    /// kernel nodes only).
    fn graph_add_node(
        &mut self,
        ctx: Handle,
        graph: Handle,
        (deps, edges): (&[Handle], &[u64]),
        node: &GraphNode,
        params: &mut [u64],
        len: usize,
    ) -> DriverResult<Reply> {
        self.check_graph(ctx, graph)?;
        let deps = self.graph_nodes(graph, deps)?;
        let with_edges = !edges.is_empty();
        if with_edges && (edges.len() != deps.len() || !matches!(node, GraphNode::Kernel(_))) {
            return Err(INVALID_VALUE);
        }
        let (g, dp, nd) = (as_ptr(graph), deps.as_ptr(), deps.len());
        let d = self.driver;
        let mut n: Ptr = std::ptr::null_mut();
        match node {
            // SAFETY: the graph and the dependencies are this client's.
            GraphNode::Empty => unsafe { d.cuGraphAddEmptyNode(&mut n, g, dp, nd) }?,
            GraphNode::Kernel(l) => {
                if !l.attrs.is_empty() {
                    return Err(INVALID_VALUE);
                }
                let mut args = self.kernel_args(l, params, len)?;
                let p = Self::kernel_node_params(l, ctx, &mut args);
                if with_edges {
                    let mut generic = crate::driver::GraphNodeParams::new(crate::driver::NODE_TYPE_KERNEL, p);
                    let gp = (&mut generic as *mut crate::driver::GraphNodeParams<KernelNodeParams>).cast();
                    // SAFETY: as above, with one edge datum per dependency
                    // (the driver checks them); a complete parameter block.
                    unsafe { d.cuGraphAddNode_v2(&mut n, g, dp, edges.as_ptr(), nd, gp) }?;
                } else {
                    // SAFETY: as above; the driver copies the parameters now.
                    unsafe { d.cuGraphAddKernelNode_v2(&mut n, g, dp, nd, &p) }?;
                }
            }
            &GraphNode::Memset {
                dst,
                pitch,
                value,
                elem_size,
                width,
                height,
            } => {
                if !matches!(elem_size, 1 | 2 | 4) || width == 0 || height == 0 {
                    return Err(INVALID_VALUE);
                }
                let row = width.checked_mul(elem_size as u64).ok_or(INVALID_VALUE)?;
                let pitch = if height == 1 { row } else { pitch };
                self.check_band(&Band {
                    base: dst,
                    pitch,
                    width: row,
                    first_row: 0,
                    rows: height,
                })?;
                let p = MemsetNodeParams {
                    dst,
                    pitch: pitch as usize,
                    value,
                    elem_size: elem_size as u32,
                    width: width as usize,
                    height: height as usize,
                };
                // SAFETY: the rows lie inside this client's allocations.
                unsafe { d.cuGraphAddMemsetNode(&mut n, g, dp, nd, &p, as_ptr(ctx)) }?;
            }
            &GraphNode::Copy { dst, src, len } => {
                if len == 0 {
                    return Err(INVALID_VALUE);
                }
                self.tables.check_range(dst, len)?;
                self.tables.check_range(src, len)?;
                let n_bytes = len as usize;
                use crate::driver::End;
                let c = Memcpy3D::rows(End::Device(src, n_bytes), End::Device(dst, n_bytes), n_bytes, 1);
                // SAFETY: both ranges lie inside this client's allocations.
                unsafe { d.cuGraphAddMemcpyNode(&mut n, g, dp, nd, &c, as_ptr(ctx)) }?;
            }
            &GraphNode::Child { graph: child } => {
                if self.tables.graphs.get(&child) != Some(&ctx) || child == graph {
                    return Err(INVALID_VALUE);
                }
                // SAFETY: both graphs are this client's; the driver copies
                // the child into the node.
                unsafe { d.cuGraphAddChildGraphNode(&mut n, g, dp, nd, as_ptr(child)) }?;
            }
            &GraphNode::Host { token } => {
                let params = self.host_node_params(token)?;
                // SAFETY: the graph and dependencies are this client's; the
                // node's data lives until the session ends.
                unsafe { d.cuGraphAddHostNode(&mut n, g, dp, nd, &params) }?;
            }
            &GraphNode::MemAlloc { device, size } => {
                if size == 0 || self.tables.contexts.get(&ctx) != Some(&device) {
                    return Err(INVALID_VALUE);
                }
                let mut p = crate::driver::MemAllocNodeParams {
                    pool_props: MemPoolProps::device(device, 0, 0),
                    access_descs: std::ptr::null(),
                    access_desc_count: 0,
                    bytesize: size as usize,
                    dptr: 0,
                };
                // SAFETY: the graph and dependencies are this client's; p
                // is a complete parameter block, its address written back.
                unsafe { d.cuGraphAddMemAllocNode(&mut n, g, dp, nd, &mut p) }?;
                // The graph's memory is the session's to name, as a
                // stream-ordered allocation in a capture is.
                self.own_allocation(ctx, p.dptr, size, None)?;
                self.tables.nodes.insert(handle(n), graph);
                return Ok(Reply::Pair(handle(n) as i64, p.dptr as i64));
            }
            &GraphNode::MemFree { ptr } => {
                match self.tables.memory.get(&ptr) {
                    Some(r) if r.ctx == ctx && r.kind == RegionKind::Allocated => {}
                    _ => return Err(INVALID_VALUE),
                }
                // SAFETY: the graph and dependencies are this client's; ptr
                // is memory of the session (the driver checks it is a
                // graph's allocation).
                unsafe { d.cuGraphAddMemFreeNode(&mut n, g, dp, nd, ptr) }?;
                self.tables.memory.remove(&ptr);
            }
            &GraphNode::Conditional { handle: h, kind, size } => {
                return self.add_conditional(ctx, graph, &deps, h, kind, size)
            }
            &GraphNode::EventRecord { event } | &GraphNode::EventWait { event } => {
                if self.tables.events.get(&event) != Some(&ctx) {
                    return Err(INVALID_HANDLE);
                }
                let e = self.real(event);
                // SAFETY: the event is this client's.
                unsafe {
                    if matches!(node, GraphNode::EventRecord { .. }) {
                        d.cuGraphAddEventRecordNode(&mut n, g, dp, nd, e)
                    } else {
                        d.cuGraphAddEventWaitNode(&mut n, g, dp, nd, e)
                    }
                }?;
            }
        }
        self.tables.nodes.insert(handle(n), graph);
        Ok(Reply::Handle(handle(n)))
    }

    /// A conditional node on the session's handle `h` after `deps`; its
    /// bodies become graphs of the session, the node's to the end.
    fn add_conditional(
        &mut self,
        ctx: Handle,
        graph: Handle,
        deps: &[Ptr],
        h: u64,
        kind: u32,
        size: u32,
    ) -> DriverResult<Reply> {
        let sized = gpupool_proto::message::conditional_shape_ok(kind, size);
        // The driver checks that the handle is the graph's; here, that it
        // is one of this session's.
        if !sized || !self.tables.conditionals.contains_key(&h) {
            return Err(INVALID_VALUE);
        }
        use crate::driver::{ConditionalNodeParams, GraphNodeParams, NODE_TYPE_CONDITIONAL};
        let cond = ConditionalNodeParams {
            handle: h,
            kind,
            size,
            bodies: std::ptr::null_mut(),
            ctx: as_ptr(ctx),
            pad: [0; 5],
        };
        let mut p = GraphNodeParams::new(NODE_TYPE_CONDITIONAL, cond);
        let pp = (&mut p as *mut GraphNodeParams<ConditionalNodeParams>).cast();
        let mut n: Ptr = std::ptr::null_mut();
        // SAFETY: the graph and dependencies are this client's; p is a
        // complete parameter block whose body array the driver writes.
        unsafe {
            self.driver
                .cuGraphAddNode_v2(&mut n, as_ptr(graph), deps.as_ptr(), std::ptr::null(), deps.len(), pp)
        }?;
        let bodies = p.params.bodies;
        if bodies.is_null() {
            return Err(UNKNOWN);
        }
        // SAFETY: the driver's array of `size` graphs, alive as long as
        // the node.
        let bodies: Vec<Handle> = unsafe { std::slice::from_raw_parts(bodies, size as usize) }
            .iter()
            .map(|b| handle(*b))
            .collect();
        for &b in &bodies {
            self.tables.graphs.insert(b, ctx);
            self.tables.bodies.insert(b, graph);
        }
        self.tables.nodes.insert(handle(n), graph);
        Ok(Reply::Conditional {
            node: handle(n),
            bodies,
        })
    }

    /// The kernel node parameters of a launch: a kernel or a function, in
    /// `ctx`, with `args` its parameter pointers.
    fn kernel_node_params(l: &Launch, ctx: Handle, args: &mut [Ptr]) -> KernelNodeParams {
        let (func, kern) = if l.kernel {
            (std::ptr::null_mut(), as_ptr(l.func))
        } else {
            (as_ptr(l.func), std::ptr::null_mut())
        };
        KernelNodeParams {
            func,
            grid: l.grid,
            block: l.block,
            shared_mem: l.shared_mem,
            params: if args.is_empty() {
                std::ptr::null_mut()
            } else {
                args.as_mut_ptr()
            },
            extra: std::ptr::null_mut(),
            kern,
            ctx: as_ptr(ctx),
        }
    }

    fn graph_exec_kernel_node_set(
        &mut self,
        ctx: Handle,
        exec: Handle,
        node: Handle,
        launch: &Launch,
        params: &mut [u64],
        len: usize,
    ) -> DriverResult {
        self.make_current(ctx)?;
        self.check_exec(ctx, exec)?;
        if !self.tables.nodes.contains_key(&node) || !launch.attrs.is_empty() {
            return Err(INVALID_VALUE);
        }
        let mut args = self.kernel_args(launch, params, len)?;
        let p = Self::kernel_node_params(launch, ctx, &mut args);
        // SAFETY: the executable graph and the node are this client's; the
        // driver copies the parameters now.
        unsafe {
            self.driver
                .cuGraphExecKernelNodeSetParams_v2(as_ptr(exec), as_ptr(node), &p)
        }
    }

    /// A memset or copy node of an executable graph, given new work: one
    /// row, checked against the session's allocations as a new node is.
    fn graph_exec_node_set(&mut self, ctx: Handle, exec: Handle, node: Handle, params: &GraphNode) -> DriverResult {
        self.make_current(ctx)?;
        self.check_exec(ctx, exec)?;
        if !self.tables.nodes.contains_key(&node) {
            return Err(INVALID_VALUE);
        }
        let (x, n, c) = (as_ptr(exec), as_ptr(node), as_ptr(ctx));
        match *params {
            GraphNode::Memset { .. } | GraphNode::Copy { .. } => match self.row_work(params)? {
                // SAFETY: exec and node are this client's; the row lies
                // inside its allocations.
                graphedit::RowWork::Memset(p) => unsafe { self.driver.cuGraphExecMemsetNodeSetParams(x, n, &p, c) },
                // SAFETY: as above, both ranges.
                graphedit::RowWork::Copy(copy) => unsafe { self.driver.cuGraphExecMemcpyNodeSetParams(x, n, &copy, c) },
            },
            GraphNode::Child { graph } => {
                self.check_graph(ctx, graph)?;
                // SAFETY: exec, node and the child graph are this client's.
                unsafe { self.driver.cuGraphExecChildGraphNodeSetParams(x, n, as_ptr(graph)) }
            }
            GraphNode::EventRecord { event } => {
                self.check_event(event)?;
                // SAFETY: exec, node and the event are this client's.
                unsafe { self.driver.cuGraphExecEventRecordNodeSetEvent(x, n, self.real(event)) }
            }
            GraphNode::EventWait { event } => {
                self.check_event(event)?;
                // SAFETY: exec, node and the event are this client's.
                unsafe { self.driver.cuGraphExecEventWaitNodeSetEvent(x, n, self.real(event)) }
            }
            _ => Err(INVALID_VALUE),
        }
    }

    /// `cuGraphDebugDotPrint` into a file of the worker's, read back.
    fn graph_debug_dot(&mut self, ctx: Handle, graph: Handle, flags: u32) -> DriverResult<Reply> {
        self.check_graph(ctx, graph)?;
        let path = std::env::temp_dir().join(format!("gpupool-graph-{}-{graph:x}.dot", std::process::id()));
        let cpath = CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| INVALID_VALUE)?;
        // SAFETY: the graph is this client's; the path is a NUL-terminated
        // string of the worker's.
        let r = unsafe { self.driver.cuGraphDebugDotPrint(as_ptr(graph), cpath.as_ptr(), flags) };
        let dot = std::fs::read(&path);
        let _ = std::fs::remove_file(&path);
        r?;
        let dot = dot.map_err(|_| OPERATING_SYSTEM)?;
        if dot.len() as u64 > self.max_frame / 2 {
            return Err(NOT_SUPPORTED);
        }
        Ok(Reply::Bytes(dot))
    }

    /// The nodes of one of the session's graphs, which it may name from now
    /// on.
    fn graph_list_nodes(&mut self, ctx: Handle, graph: Handle) -> DriverResult<Reply> {
        self.check_graph(ctx, graph)?;
        let g = as_ptr(graph);
        let mut n = 0usize;
        // SAFETY: the graph belongs to this client; with no node array the
        // driver only writes the count.
        unsafe { self.driver.cuGraphGetNodes(g, std::ptr::null_mut(), &mut n) }?;
        let mut nodes: Vec<Ptr> = vec![std::ptr::null_mut(); n];
        // SAFETY: as above; the array has room for `n` nodes.
        unsafe { self.driver.cuGraphGetNodes(g, nodes.as_mut_ptr(), &mut n) }?;
        nodes.truncate(n);
        let mut listed = Vec::with_capacity(nodes.len());
        for node in nodes {
            let mut kind = 0u32;
            // SAFETY: a node the driver just listed; kind is writable.
            unsafe { self.driver.cuGraphNodeGetType(node, &mut kind) }?;
            self.tables.nodes.insert(handle(node), graph);
            listed.push((handle(node), kind));
        }
        Ok(Reply::Nodes(listed))
    }

    fn graph_exec_update(&mut self, ctx: Handle, exec: Handle, graph: Handle) -> DriverResult<Reply> {
        self.check_exec(ctx, exec)?;
        self.check_graph(ctx, graph)?;
        let mut info = GraphExecUpdateResultInfo {
            result: 0,
            error_node: std::ptr::null_mut(),
            error_from_node: std::ptr::null_mut(),
        };
        // SAFETY: both graphs are this client's; info is writable.
        let status = unsafe { self.driver.cuGraphExecUpdate_v2(as_ptr(exec), as_ptr(graph), &mut info) }
            .err()
            .unwrap_or(0);
        let mut out = Vec::with_capacity(16);
        out.extend_from_slice(&status.to_le_bytes());
        out.extend_from_slice(&info.result.to_le_bytes());
        out.extend_from_slice(&(handle(info.error_node)).to_le_bytes());
        Ok(Reply::Bytes(out))
    }

    fn graph_add_dependencies(
        &mut self,
        ctx: Handle,
        graph: Handle,
        from: &[Handle],
        to: &[Handle],
        edges: &[u64],
    ) -> DriverResult {
        self.check_graph(ctx, graph)?;
        if from.len() != to.len() || !(edges.is_empty() || edges.len() == from.len()) {
            return Err(INVALID_VALUE);
        }
        let (from, to) = (self.graph_nodes(graph, from)?, self.graph_nodes(graph, to)?);
        let g = as_ptr(graph);
        // SAFETY: every node is of this client's graph; there is one edge
        // datum per edge when there are any (the driver checks them).
        unsafe {
            if edges.is_empty() {
                self.driver
                    .cuGraphAddDependencies(g, from.as_ptr(), to.as_ptr(), from.len())
            } else {
                self.driver
                    .cuGraphAddDependencies_v2(g, from.as_ptr(), to.as_ptr(), edges.as_ptr(), from.len())
            }
        }
    }

    // ---- the JIT linker ----

    /// The linker compiles for the GPU of the context current at each step.
    fn link_create(&mut self, ctx: Handle, options: &[(u32, u64)]) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        // Only numbers: an address would be the server's to write.
        if options.len() > SCALAR_JIT_OPTIONS.len() || options.iter().any(|(o, _)| !SCALAR_JIT_OPTIONS.contains(o)) {
            return Err(INVALID_VALUE);
        }
        let mut keys: Vec<u32> = options.iter().map(|(o, _)| *o).collect();
        let mut values: Vec<Ptr> = options.iter().map(|(_, v)| *v as usize as Ptr).collect();
        let mut link: Ptr = std::ptr::null_mut();
        // SAFETY: both arrays hold `options.len()` entries; every value is
        // a number the driver reads (or overwrites) in place.
        unsafe {
            self.driver
                .cuLinkCreate_v2(keys.len() as u32, keys.as_mut_ptr(), values.as_mut_ptr(), &mut link)
        }?;
        self.tables.links.insert(handle(link));
        Ok(Reply::Handle(handle(link)))
    }

    fn link_add_data(&mut self, ctx: Handle, link: Handle, kind: u32, name: &str, data: &[u8]) -> DriverResult {
        self.make_current(ctx)?;
        if !self.tables.links.contains(&link) {
            return Err(INVALID_HANDLE);
        }
        let name = CString::new(name).map_err(|_| INVALID_VALUE)?;
        // `data` ends with a NUL the client did not send (read_image).
        let len = data.len() - 1;
        // SAFETY: the linker is this client's; the data outlives the call.
        unsafe {
            self.driver.cuLinkAddData_v2(
                as_ptr(link),
                kind,
                data.as_ptr() as Ptr,
                len,
                name.as_ptr(),
                0,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        }
    }

    fn link_complete(&mut self, ctx: Handle, link: Handle) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        if !self.tables.links.contains(&link) {
            return Err(INVALID_HANDLE);
        }
        let (mut image, mut size): (Ptr, usize) = (std::ptr::null_mut(), 0);
        // SAFETY: the linker is this client's; both outputs are writable.
        unsafe { self.driver.cuLinkComplete(as_ptr(link), &mut image, &mut size) }?;
        if image.is_null() {
            return Err(INVALID_VALUE);
        }
        self.linked.insert(link, (image, size));
        Ok(Reply::Size(size as u64))
    }

    fn link_image(&mut self, link: Handle, offset: u64) -> DriverResult<Reply> {
        let &(image, size) = self.linked.get(&link).ok_or(INVALID_HANDLE)?;
        let start = usize::try_from(offset)
            .ok()
            .filter(|&o| o <= size)
            .ok_or(INVALID_VALUE)?;
        let end = size.min(start + LINK_IMAGE_CHUNK);
        // SAFETY: the driver's image lives until the linker is destroyed,
        // and start..end lies inside its `size` bytes.
        let bytes = unsafe { std::slice::from_raw_parts(image.cast::<u8>().add(start), end - start) };
        Ok(Reply::Bytes(bytes.to_vec()))
    }

    fn link_destroy(&mut self, link: Handle) -> DriverResult {
        if !self.tables.links.remove(&link) {
            return Err(INVALID_HANDLE);
        }
        self.linked.remove(&link);
        // SAFETY: the linker was this client's.
        unsafe { self.driver.cuLinkDestroy(as_ptr(link)) }
    }

    fn module_load(&mut self, ctx: Handle, image: &[u8]) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        image_kind_ok(&image[..image.len() - 1])?;
        let mut m: Ptr = std::ptr::null_mut();
        // SAFETY: image is a complete, NUL-terminated buffer (read_image).
        unsafe { self.driver.cuModuleLoadData(&mut m, image.as_ptr().cast()) }?;
        self.tables.modules.insert(handle(m), ctx);
        self.read_code_layouts(handle(m), image);
        Ok(Reply::Handle(handle(m)))
    }

    fn module_unload(&mut self, ctx: Handle, module: Handle) -> DriverResult {
        self.make_current(ctx)?;
        if self.tables.modules.get(&module) != Some(&ctx) {
            return Err(INVALID_HANDLE);
        }
        // SAFETY: the module belongs to this client.
        unsafe { self.driver.cuModuleUnload(as_ptr(module)) }?;
        self.tables.modules.remove(&module);
        self.tables.forget_functions_of(&HashSet::from([module]));
        Ok(())
    }

    fn module_get_function(&mut self, ctx: Handle, module: Handle, name: &str) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        self.check_module(module)?;
        let name = CString::new(name).map_err(|_| INVALID_VALUE)?;
        let mut f: Ptr = std::ptr::null_mut();
        // SAFETY: the module belongs to this client; name is NUL-terminated.
        unsafe { self.driver.cuModuleGetFunction(&mut f, as_ptr(module), name.as_ptr()) }?;
        self.tables.functions.insert(handle(f), module);
        let owner = match self.tables.library_modules.get(&module) {
            Some(&(library, _)) => library,
            None => module,
        };
        self.handed_out(handle(f), owner, &name);
        Ok(Reply::Handle(handle(f)))
    }

    fn module_get_global(&mut self, ctx: Handle, module: Handle, name: &str) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        self.check_module(module)?;
        let name = CString::new(name).map_err(|_| INVALID_VALUE)?;
        let (mut p, mut size) = (0u64, 0usize);
        // SAFETY: as above; p and size are writable.
        unsafe {
            self.driver
                .cuModuleGetGlobal_v2(&mut p, &mut size, as_ptr(module), name.as_ptr())
        }?;
        let reply = self.register_global(ctx, p, size as u64);
        // A `__managed__` variable: the client maps it for host code.
        let mut managed = 0i32;
        // SAFETY: p is the driver's own address; managed is writable.
        let is_managed = unsafe {
            self.driver
                .cuPointerGetAttribute((&raw mut managed).cast(), POINTER_ATTRIBUTE_IS_MANAGED, p)
        };
        Ok(match is_managed {
            Ok(()) if managed != 0 => Reply::ManagedGlobal {
                ptr: p,
                size: size as u64,
            },
            _ => reply,
        })
    }

    /// Let the client address a module or library global it looked up. A
    /// global looked up twice is the same region, so a refusal to re-add it
    /// is expected and ignored.
    fn register_global(&mut self, ctx: Handle, ptr: u64, size: u64) -> Reply {
        let _ = self.tables.add_region(
            ptr,
            Region {
                size,
                ctx,
                kind: RegionKind::Global,
            },
        );
        Reply::Global { ptr, size }
    }

    fn library_load(&mut self, image: &[u8]) -> DriverResult<Reply> {
        image_kind_ok(&image[..image.len() - 1])?;
        let mut l: Ptr = std::ptr::null_mut();
        let null = std::ptr::null_mut();
        // SAFETY: image is complete and NUL-terminated; no options.
        unsafe {
            self.driver.cuLibraryLoadData(
                &mut l,
                image.as_ptr().cast(),
                null,
                null.cast(),
                0,
                null,
                null.cast(),
                0,
            )
        }?;
        self.tables.libraries.insert(handle(l));
        self.read_code_layouts(handle(l), image);
        Ok(Reply::Handle(handle(l)))
    }

    fn library_unload(&mut self, library: Handle) -> DriverResult {
        if !self.tables.libraries.contains(&library) {
            return Err(INVALID_HANDLE);
        }
        // SAFETY: the library belongs to this client.
        unsafe { self.driver.cuLibraryUnload(as_ptr(library)) }?;
        self.tables.forget_library(library);
        Ok(())
    }

    fn library_get_kernel(&mut self, library: Handle, name: &str) -> DriverResult<Reply> {
        if !self.tables.libraries.contains(&library) {
            return Err(INVALID_HANDLE);
        }
        let name = CString::new(name).map_err(|_| INVALID_VALUE)?;
        let mut k: Ptr = std::ptr::null_mut();
        // SAFETY: the library belongs to this client; name is NUL-terminated.
        unsafe { self.driver.cuLibraryGetKernel(&mut k, as_ptr(library), name.as_ptr()) }?;
        self.tables.kernels.insert(handle(k), library);
        self.handed_out(handle(k), library, &name);
        Ok(Reply::Handle(handle(k)))
    }

    /// A library's global, or (`managed`) its `__managed__` variable.
    fn library_get_global(&mut self, ctx: Handle, library: Handle, name: &str, managed: bool) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        if !self.tables.libraries.contains(&library) {
            return Err(INVALID_HANDLE);
        }
        let name = CString::new(name).map_err(|_| INVALID_VALUE)?;
        let (mut p, mut size) = (0u64, 0usize);
        let lib = as_ptr(library);
        // SAFETY: the library is this client's; both outputs are writable.
        unsafe {
            if managed {
                self.driver.cuLibraryGetManaged(&mut p, &mut size, lib, name.as_ptr())
            } else {
                self.driver.cuLibraryGetGlobal(&mut p, &mut size, lib, name.as_ptr())
            }
        }?;
        Ok(self.register_global(ctx, p, size as u64))
    }

    /// `cuLibraryGetModule`: the library's module in `ctx`, which the
    /// session names as a module (its functions, its globals) but cannot
    /// unload.
    fn library_get_module(&mut self, ctx: Handle, library: Handle) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        if !self.tables.libraries.contains(&library) {
            return Err(INVALID_HANDLE);
        }
        let mut m: Ptr = std::ptr::null_mut();
        // SAFETY: the library belongs to this client; m is writable.
        unsafe { self.driver.cuLibraryGetModule(&mut m, as_ptr(library)) }?;
        self.tables.library_modules.insert(handle(m), (library, ctx));
        Ok(Reply::Handle(handle(m)))
    }

    /// A module the session may name: one it loaded, or a library's.
    fn check_module(&self, module: Handle) -> DriverResult {
        if self.tables.modules.contains_key(&module) || self.tables.library_modules.contains_key(&module) {
            Ok(())
        } else {
            Err(INVALID_HANDLE)
        }
    }

    fn kernel_get_function(&mut self, ctx: Handle, kernel: Handle) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        self.check_kernel(kernel)?;
        let mut f: Ptr = std::ptr::null_mut();
        // SAFETY: the kernel belongs to this client.
        unsafe { self.driver.cuKernelGetFunction(&mut f, as_ptr(kernel)) }?;
        self.tables.functions.insert(handle(f), 0);
        // The kernel's function has the kernel's parameters (and whatever
        // was known under that handle was of a freed function).
        match self.tables.layouts.get(&kernel).cloned() {
            Some(l) => self.tables.layouts.insert(handle(f), l),
            None => self.tables.layouts.remove(&handle(f)),
        };
        Ok(Reply::Handle(handle(f)))
    }

    /// The driver handed out `func` (a function or kernel) for kernel
    /// `name` of `owner` (a module or library): whatever was known under
    /// that handle was of a freed function. Where the driver gives no
    /// parameter layouts, the layout read from the owner's code is kept.
    fn handed_out(&mut self, func: Handle, owner: Handle, name: &std::ffi::CStr) {
        let read = self
            .tables
            .code_layouts
            .get(&owner)
            .and_then(|names| names.get(name.to_str().ok()?))
            .cloned();
        match read {
            Some(layout) => self.tables.layouts.insert(func, layout),
            None => self.tables.layouts.remove(&func),
        };
    }

    /// Where the driver gives no parameter layouts, read them from the code
    /// just loaded as `owner` (`image`, NUL-terminated). Parameter layouts
    /// are the kernel's signature's, the same in each architecture's code,
    /// so the code of the device of the current context is read.
    fn read_code_layouts(&mut self, owner: Handle, image: &[u8]) {
        if self.driver.gives_param_info() {
            return;
        }
        let device = self
            .current
            .and_then(|c| self.tables.contexts.get(&c).copied())
            .unwrap_or(0);
        let (major, minor) = self.driver.compute_capability(device);
        let code = &image[..image.len().saturating_sub(1)];
        match gpupool_fatbin::kernels_for(code, major, minor) {
            Ok(kernels) => {
                let names = kernels
                    .into_iter()
                    .filter_map(|k| {
                        let layout = k.params?.iter().map(|p| (p.offset, p.size)).collect();
                        Some((k.name, layout))
                    })
                    .collect();
                self.tables.code_layouts.insert(owner, names);
            }
            Err(e) => tracing::warn!(
                "cannot read the parameter layouts of a code image ({e}); its kernels cannot be launched \
                 on this driver, which does not give them"
            ),
        }
    }

    /// A function's parameter layout, from the driver once, then cached.
    fn layout(&mut self, func: Handle, kernel: bool) -> DriverResult<Vec<(u32, u32)>> {
        if let Some(l) = self.tables.layouts.get(&func) {
            return Ok(l.clone());
        }
        if kernel {
            self.check_kernel(func)?
        } else {
            self.check_function(func)?
        }
        if !self.driver.gives_param_info() {
            // Neither the driver nor the code loaded gave it.
            tracing::warn!(
                "no parameter layout for function {func:#x}: the driver does not give layouts and its code \
                 did not say; its launches answer CUDA_ERROR_NOT_SUPPORTED"
            );
            return Err(NOT_SUPPORTED);
        }
        let mut layout = Vec::new();
        for index in 0..4096usize {
            let (mut offset, mut size) = (0usize, 0usize);
            // SAFETY: the handle belongs to this client; out-pointers writable.
            let r = unsafe {
                if kernel {
                    self.driver
                        .cuKernelGetParamInfo(as_ptr(func), index, &mut offset, &mut size)
                } else {
                    self.driver
                        .cuFuncGetParamInfo(as_ptr(func), index, &mut offset, &mut size)
                }
            };
            match r {
                Ok(()) => layout.push((offset as u32, size as u32)),
                // The driver answers INVALID_VALUE past the last parameter.
                Err(INVALID_VALUE) => break,
                Err(s) => return Err(s),
            }
        }
        self.tables.layouts.insert(func, layout.clone());
        Ok(layout)
    }

    /// The `kernelParams` of a launch: a pointer to each parameter in the
    /// packed block (`len` bytes of `params`), by the driver's own layout.
    ///
    /// A block packed by the program (`extra`) may be shorter than the
    /// parameters the kernel declares: NCCL declares a 4 KiB argument
    /// structure and passes the part it filled, which the driver takes (the
    /// rest is not defined). Such a block is padded with zeros here.
    fn kernel_args(&mut self, l: &Launch, params: &mut [u64], len: usize) -> DriverResult<Vec<Ptr>> {
        let layout = self.layout(l.func, l.kernel)?;
        let extent = layout.iter().map(|&(o, n)| (o + n) as usize).max().unwrap_or(0);
        if len > params.len() * 8 {
            return Err(INVALID_VALUE);
        }
        let base = if len < extent {
            let words = extent.div_ceil(8);
            self.padded_params.clear();
            self.padded_params.resize(words, 0);
            let copied = len.div_ceil(8);
            self.padded_params[..copied].copy_from_slice(&params[..copied]);
            self.padded_params.as_mut_ptr().cast::<u8>()
        } else {
            params.as_mut_ptr().cast::<u8>()
        };
        // SAFETY: every offset + size is within `extent` bytes, which the
        // parameter block or its padded copy holds (the copy lives in the
        // worker until the next launch; the driver reads the parameters
        // during the call that takes them).
        Ok(layout
            .iter()
            .map(|&(o, _)| unsafe { base.add(o as usize) }.cast())
            .collect())
    }

    fn launch(&mut self, l: &Launch, params: &mut [u64], len: usize) -> DriverResult {
        let s = self.enter(l.ctx, l.stream)?;
        let mut args = self.kernel_args(l, params, len)?;
        let args_ptr = if args.is_empty() {
            std::ptr::null_mut()
        } else {
            args.as_mut_ptr()
        };
        let f = as_ptr(l.func);
        if l.attrs.is_empty() {
            // SAFETY: f is this client's function or kernel; args point into
            // the parameter block laid out by the driver's own offsets.
            unsafe {
                self.driver.cuLaunchKernel(
                    f,
                    l.grid[0],
                    l.grid[1],
                    l.grid[2],
                    l.block[0],
                    l.block[1],
                    l.block[2],
                    l.shared_mem,
                    s,
                    args_ptr,
                    std::ptr::null_mut(),
                )
            }
        } else {
            let attrs = launch_attributes(&l.attrs)?;
            let config = LaunchConfig {
                grid: l.grid,
                block: l.block,
                shared_mem: l.shared_mem,
                stream: s,
                attrs: attrs.as_ptr(),
                num_attrs: attrs.len() as u32,
            };
            // SAFETY: as above; config and attrs outlive the call.
            unsafe { self.driver.cuLaunchKernelEx(&config, f, args_ptr, std::ptr::null_mut()) }
        }
    }

    fn occupancy(&mut self, ctx: Handle, func: Handle, query: OccupancyQuery) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        self.check_function(func).or_else(|_| self.check_kernel(func))?;
        let d = self.driver;
        let f = as_ptr(func);
        match query {
            OccupancyQuery::MaxActiveBlocksPerMultiprocessor {
                block_size,
                dynamic_smem,
                flags,
            } => {
                let mut v = 0;
                // SAFETY: f is this client's; v writable.
                unsafe {
                    d.cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
                        &mut v,
                        f,
                        block_size,
                        dynamic_smem as usize,
                        flags,
                    )
                }?;
                Ok(Reply::Int(v as i64))
            }
            OccupancyQuery::MaxPotentialBlockSize {
                dynamic_smem,
                block_size_limit,
                flags,
            } => {
                let (mut g, mut b) = (0, 0);
                // SAFETY: as above; no callback.
                unsafe {
                    d.cuOccupancyMaxPotentialBlockSizeWithFlags(
                        &mut g,
                        &mut b,
                        f,
                        std::ptr::null(),
                        dynamic_smem as usize,
                        block_size_limit,
                        flags,
                    )
                }?;
                Ok(Reply::Pair(g as i64, b as i64))
            }
            OccupancyQuery::AvailableDynamicSmemPerBlock { num_blocks, block_size } => {
                let mut v = 0usize;
                // SAFETY: as above.
                unsafe { d.cuOccupancyAvailableDynamicSMemPerBlock(&mut v, f, num_blocks, block_size) }?;
                Ok(Reply::Int(v as i64))
            }
            OccupancyQuery::MaxActiveClusters {
                grid,
                block,
                shared_mem,
                cluster,
            }
            | OccupancyQuery::MaxPotentialClusterSize {
                grid,
                block,
                shared_mem,
                cluster,
            } => {
                let active = matches!(query, OccupancyQuery::MaxActiveClusters { .. });
                let v = cluster_occupancy(d, f, active, grid, block, shared_mem, cluster)?;
                Ok(Reply::Int(v as i64))
            }
        }
    }

    /// `OccupancyClusters`: the active clusters of each size, a grid of one
    /// cluster each.
    fn occupancy_clusters(
        &mut self,
        ctx: Handle,
        func: Handle,
        block: [u32; 3],
        shared_mem: u32,
        sizes: &[u32],
    ) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        self.check_function(func).or_else(|_| self.check_kernel(func))?;
        let f = as_ptr(func);
        attributes(&sizes.iter().map(|&k| k as i32).collect::<Vec<_>>(), |v, k| {
            let size = [k as u32, 1, 1];
            *v = cluster_occupancy(self.driver, f, true, size, block, shared_mem, size)?;
            Ok(())
        })
    }

    /// Free everything the client held, context by context.
    pub fn cleanup(&mut self) -> Cleanup {
        let started = Instant::now();
        let c = Cleanup {
            allocations: self
                .tables
                .memory
                .values()
                .filter(|r| r.kind == RegionKind::Allocated)
                .count(),
            bytes: self.tables.allocated_bytes(),
            streams: self.tables.streams.len() + self.per_thread.len(),
            events: self.tables.events.len(),
            modules: self.tables.modules.len(),
            contexts: self.tables.contexts.len(),
        };
        self.settle_all_parked();
        self.release_virtual_memory();
        // Green contexts first: each holds its device's primary context.
        for (green, ctx) in std::mem::take(&mut self.tables.greens) {
            self.release_context_resources(ctx);
            // SAFETY: the green context was made for this client.
            let _ = unsafe { self.driver.cuGreenCtxDestroy(as_ptr(green)) };
            self.tables.drop_context(ctx);
        }
        let contexts: Vec<(Handle, i32)> = self.tables.contexts.iter().map(|(c, d)| (*c, *d)).collect();
        for (ctx, device) in contexts {
            self.release_context_resources(ctx);
            if self.tables.primaries.get(&device) == Some(&ctx) {
                // SAFETY: this client retained the primary context.
                let _ = unsafe { self.driver.cuDevicePrimaryCtxRelease_v2(device) };
            } else {
                // SAFETY: the context was created by this client.
                let _ = unsafe { self.driver.cuCtxDestroy_v2(as_ptr(ctx)) };
            }
            self.tables.drop_context(ctx);
        }
        for l in self.tables.libraries.drain() {
            // SAFETY: the library belongs to this client.
            let _ = unsafe { self.driver.cuLibraryUnload(as_ptr(l)) };
        }
        for l in self.tables.links.drain() {
            // SAFETY: the linker belongs to this client.
            let _ = unsafe { self.driver.cuLinkDestroy(as_ptr(l)) };
        }
        for (pool, entry) in std::mem::take(&mut self.tables.pools) {
            if entry.created {
                // SAFETY: the pool was created by this client; its memory
                // went with the contexts above.
                let _ = unsafe { self.driver.cuMemPoolDestroy(as_ptr(pool)) };
            }
        }
        self.free_staging();
        self.ipc_end();
        tracing::debug!(elapsed_us = started.elapsed().as_micros() as u64, "cleanup done");
        c
    }
}

/// Read a module image from the bulk tail, with a NUL appended (its form is
/// checked by `image_kind_ok` before the driver sees it).
/// Rows `first_row .. first_row + rows` of a pitched region at `base`:
/// row `r` holds `width` bytes at `base + r * pitch`.
struct Band {
    base: u64,
    pitch: u64,
    width: u64,
    first_row: u64,
    rows: u64,
}

impl Band {
    /// The address of the band's first row.
    fn start(&self) -> Option<u64> {
        self.first_row
            .checked_mul(self.pitch)
            .and_then(|o| self.base.checked_add(o))
    }
}

/// A launch's packed parameters from the bulk tail, in a buffer of words
/// (parameters are aligned as the driver lays them out); its length.
fn read_params<R: Read>(reader: &mut R, len: u64) -> Result<(Vec<u64>, usize), ProtoError> {
    let len = len as usize;
    let mut params = vec![0u64; len.div_ceil(8)];
    // SAFETY: viewing the u64 buffer as bytes; the length is within it.
    let bytes = unsafe { std::slice::from_raw_parts_mut(params.as_mut_ptr().cast::<u8>(), len) };
    frame::read_bulk(reader, bytes)?;
    Ok((params, len))
}

fn read_image<R: Read>(reader: &mut R, len: u64) -> Result<Vec<u8>, ProtoError> {
    let mut image = vec![0u8; len as usize];
    frame::read_bulk(reader, &mut image)?;
    // A trailing NUL keeps a driver that scans for one inside the buffer.
    image.push(0);
    Ok(image)
}

fn launch_attributes(attrs: &[(u32, Vec<u8>)]) -> DriverResult<Vec<LaunchAttribute>> {
    attrs
        .iter()
        .map(|(id, v)| {
            if v.len() != 64 {
                return Err(INVALID_VALUE);
            }
            let mut value = [0u8; 64];
            value.copy_from_slice(v);
            Ok(LaunchAttribute {
                id: *id,
                pad: [0; 4],
                value,
            })
        })
        .collect()
}

/// A driver result as the reply that carries it.
trait IntoReply {
    fn into_reply(self) -> Reply;
}

impl IntoReply for DriverResult<Reply> {
    fn into_reply(self) -> Reply {
        self.unwrap_or_else(Reply::Status)
    }
}

impl IntoReply for DriverResult {
    fn into_reply(self) -> Reply {
        Reply::Status(self.err().unwrap_or(0))
    }
}

/// `CU_POINTER_ATTRIBUTE_IS_MANAGED`.
const POINTER_ATTRIBUTE_IS_MANAGED: i32 = 8;

/// A `CUtensorMap`: 128 bytes, 64-aligned.
#[repr(C, align(64))]
struct TensorMap([u8; TENSOR_MAP_BYTES]);

/// Encode a tensor map with the driver: a pure function of its arguments,
/// which need no context (the address is only written into the map).
fn tensor_map_encode(d: &Driver, t: &TensorMapDesc) -> DriverResult<Reply> {
    let rank = t.rank as usize;
    let sized = |n: usize, want: usize| if n == want { Ok(()) } else { Err(INVALID_VALUE) };
    if !(1..=5).contains(&rank) {
        return Err(INVALID_VALUE);
    }
    sized(t.dims.len(), rank)?;
    sized(t.strides.len(), rank - 1)?;
    sized(t.element_strides.len(), rank)?;
    let mut map = TensorMap([0; TENSOR_MAP_BYTES]);
    let out = map.0.as_mut_ptr().cast::<c_void>();
    let address = t.address as usize as *mut c_void;
    match &t.kind {
        TensorMapKind::Tiled { box_dims } => {
            sized(box_dims.len(), rank)?;
            // SAFETY: every array holds what the rank asks (checked above);
            // `out` is a 64-aligned CUtensorMap.
            unsafe {
                d.cuTensorMapEncodeTiled(
                    out,
                    t.data_type,
                    t.rank,
                    address,
                    t.dims.as_ptr(),
                    t.strides.as_ptr(),
                    box_dims.as_ptr(),
                    t.element_strides.as_ptr(),
                    t.interleave,
                    t.swizzle,
                    t.l2_promotion,
                    t.oob_fill,
                )
            }?;
        }
        TensorMapKind::Im2col {
            lower,
            upper,
            channels,
            pixels,
        } => {
            if rank < 3 {
                return Err(INVALID_VALUE);
            }
            sized(lower.len(), rank - 2)?;
            sized(upper.len(), rank - 2)?;
            // SAFETY: as above.
            unsafe {
                d.cuTensorMapEncodeIm2col(
                    out,
                    t.data_type,
                    t.rank,
                    address,
                    t.dims.as_ptr(),
                    t.strides.as_ptr(),
                    lower.as_ptr(),
                    upper.as_ptr(),
                    *channels,
                    *pixels,
                    t.element_strides.as_ptr(),
                    t.interleave,
                    t.swizzle,
                    t.l2_promotion,
                    t.oob_fill,
                )
            }?;
        }
    }
    Ok(Reply::Bytes(map.0.to_vec()))
}

fn tensor_map_replace(d: &Driver, map: &[u8], address: u64) -> DriverResult<Reply> {
    let mut m = TensorMap([0; TENSOR_MAP_BYTES]);
    if map.len() != TENSOR_MAP_BYTES {
        return Err(INVALID_VALUE);
    }
    m.0.copy_from_slice(map);
    // SAFETY: a whole, 64-aligned CUtensorMap; the address is only encoded.
    unsafe { d.cuTensorMapReplaceAddress(m.0.as_mut_ptr().cast(), address as usize as *mut c_void) }?;
    Ok(Reply::Bytes(m.0.to_vec()))
}

fn to_reply(r: impl IntoReply) -> Reply {
    r.into_reply()
}

/// `cuOccupancyMaxActiveClusters` (`active`) or
/// `cuOccupancyMaxPotentialClusterSize` of function `f` for a launch of
/// `grid` and `block` with `shared_mem` bytes, in clusters of `cluster`
/// (all 0: the launch names none, as a potential size may be asked).
fn cluster_occupancy(
    d: &Driver,
    f: Ptr,
    active: bool,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    cluster: [u32; 3],
) -> DriverResult<i32> {
    let mut value = [0u8; 64];
    for (i, c) in cluster.iter().enumerate() {
        value[i * 4..i * 4 + 4].copy_from_slice(&c.to_le_bytes());
    }
    // CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
    let attrs = [LaunchAttribute {
        id: 4,
        pad: [0; 4],
        value,
    }];
    let named = cluster != [0; 3];
    let config = LaunchConfig {
        grid,
        block,
        shared_mem,
        stream: std::ptr::null_mut(),
        attrs: attrs.as_ptr(),
        num_attrs: u32::from(named),
    };
    let mut v = 0;
    if active {
        // SAFETY: config and attrs outlive the call; f is the client's.
        unsafe { d.cuOccupancyMaxActiveClusters(&mut v, f, &config) }?;
    } else {
        // SAFETY: as above.
        unsafe { d.cuOccupancyMaxPotentialClusterSize(&mut v, f, &config) }?;
    }
    Ok(v)
}

/// Each of `attrs` asked of the driver by `get(value, attribute)`: its
/// status and value, in order. More than [`MAX_ATTRIBUTES`] is refused.
fn attributes(attrs: &[i32], mut get: impl FnMut(&mut i32, i32) -> DriverResult) -> DriverResult<Reply> {
    if attrs.len() > MAX_ATTRIBUTES {
        return Err(INVALID_VALUE);
    }
    let answers = attrs
        .iter()
        .map(|&a| {
            let mut v = 0;
            match get(&mut v, a) {
                Ok(()) => (0, v),
                Err(e) => (e, 0),
            }
        })
        .collect();
    Ok(Reply::Attributes(answers))
}

/// Whether an image looks like one the driver can load.
pub fn image_kind_ok(image: &[u8]) -> Result<(), Status> {
    if image.starts_with(b"\x7fELF") || image.starts_with(&0xBA55_ED50u32.to_le_bytes()) {
        return Ok(());
    }
    // PTX: text with a NUL before the end.
    if image.iter().position(|&b| b == 0).is_some_and(|p| p > 0) {
        Ok(())
    } else {
        Err(INVALID_IMAGE)
    }
}

#[cfg(test)]
mod tests {
    use super::parse_kernel_driver_version;

    #[test]
    fn attributes_answer_each_in_order_and_refuse_too_many() {
        use super::{attributes, Reply, INVALID_VALUE, MAX_ATTRIBUTES};
        let r = attributes(&[0, 17, 4], |v, a| {
            if a == 17 {
                return Err(INVALID_VALUE);
            }
            *v = a * 10 + 1;
            Ok(())
        });
        assert!(matches!(r, Ok(Reply::Attributes(ref a)) if a == &[(0, 1), (INVALID_VALUE, 0), (0, 41)]));
        let many = vec![0; MAX_ATTRIBUTES + 1];
        assert_eq!(attributes(&many, |_, _| Ok(())).err(), Some(INVALID_VALUE));
    }

    #[test]
    fn the_kernel_driver_version_is_read_from_the_nvrm_line() {
        let text = "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  580.159.04  Release Build  (dvs-builder@U22)  Thu Oct  2 2025\nGCC version:  gcc version 12.3.0\n";
        assert_eq!(parse_kernel_driver_version(text).as_deref(), Some("580.159.04"));
        let old = "NVRM version: NVIDIA UNIX x86_64 Kernel Module  535.104.05  Sat Aug 19 01:15:15 UTC 2023\n";
        assert_eq!(parse_kernel_driver_version(old).as_deref(), Some("535.104.05"));
        assert_eq!(parse_kernel_driver_version("GCC version: 12.3.0\n"), None);
        assert_eq!(parse_kernel_driver_version("NVRM version: unknown\n"), None);
    }
}
