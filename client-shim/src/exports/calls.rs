//! The implemented driver entry points: C arguments in, checked, then plain
//! Rust over `state` (answered locally) and `remote` (sent to the server).
//! Each function here is `unsafe` because it dereferences pointers the
//! program passed; each checks them for null before use.

use super::{
    c_char, CUcontext, CUdevice, CUdeviceptr, CUevent, CUfunction, CUgraphInstantiateParams, CUkernel, CUlaunchConfig,
    CUlibrary, CUmodule, CUresult, CUstream,
};
use crate::config::{self, Config};
use crate::error::{self, CuError, CuResult};
use crate::remote::{ConnectOptions, Remote, Sink};
use crate::state::{self, DefaultStream, DeviceRange, RangeKind, Shim};
use gpupool_fatbin::{ImageKind, LenQuery};
use gpupool_proto::frame::COPY_CHUNK;
use gpupool_proto::message::{Handle, Launch, OccupancyQuery, Reply, Request, StreamRef};
use sha2::{Digest, Sha256};
use std::ffi::{c_void, CStr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};

mod arrays;
mod captureinfo;
mod completions;
mod conditionals;
mod copies;
mod edges;
mod functions;
mod graphedit;
mod graphs;
mod green;
mod hostfns;
mod hostnodes;
mod ipc;
mod link;
mod logs;
mod managed;
mod memops;
mod output;
mod pools;
mod queries;
mod tensormap;
mod userobjects;
mod vmm;
pub use arrays::*;
pub use captureinfo::*;
pub use completions::*;
pub use conditionals::*;
pub use copies::*;
pub use edges::*;
pub use functions::*;
pub use graphedit::*;
pub use graphs::*;
pub use green::*;
pub use hostfns::*;
pub use ipc::*;
pub use link::*;
pub use logs::*;
pub use managed::*;
pub use memops::*;
pub use pools::*;
pub use queries::*;
pub use tensormap::*;
pub use userobjects::*;
pub use vmm::*;

static SHIM: OnceLock<Result<Shim, CuError>> = OnceLock::new();

/// Driver API version gpupool presents.
const API_VERSION: u32 = 13000;

pub(crate) fn shim() -> CuResult<&'static Shim> {
    if crate::config::forked() {
        return Err(forked_child());
    }
    match SHIM.get() {
        Some(Ok(s)) => Ok(s),
        Some(Err(e)) => Err(*e),
        None => Err(CuError::NOT_INITIALIZED),
    }
}

pub(crate) fn server_label() -> String {
    match SHIM.get() {
        Some(Ok(s)) => {
            let sim = if s.remote.session.simulated {
                ", simulated GPU"
            } else {
                ""
            };
            format!("server {} session {}{sim}", s.remote.peer, s.remote.session.session_id)
        }
        _ => "not connected".into(),
    }
}

/// What crossed the wire in this session, for the call report's last line.
pub(crate) fn traffic_summary() -> Option<String> {
    let Some(Ok(s)) = SHIM.get() else { return None };
    let t = &s.remote.traffic;
    let n = |c: &std::sync::atomic::AtomicU64| c.load(std::sync::atomic::Ordering::Relaxed);
    Some(format!(
        "to the server: {} round trips, {} streamed requests; {} bytes sent in {} writes, {} bytes received",
        n(&t.round_trips),
        n(&t.streamed),
        n(&t.bytes_out),
        n(&t.writes),
        n(&t.bytes_in)
    ))
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn read<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(m: &std::sync::RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    m.write().unwrap_or_else(|p| p.into_inner())
}

/// Write an out-parameter, refusing NULL.
pub(super) unsafe fn out<T>(ptr: *mut T, value: T) -> CuResult {
    if ptr.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-null, and the driver API makes the caller pass a writable T.
    unsafe { ptr.write(value) };
    Ok(())
}

/// Write an optional out-parameter (NULL means "not wanted").
unsafe fn out_opt<T>(ptr: *mut T, value: T) {
    if !ptr.is_null() {
        // SAFETY: as in `out`.
        unsafe { ptr.write(value) };
    }
}

unsafe fn c_string(ptr: *const c_char) -> CuResult<String> {
    if ptr.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the driver API passes NUL-terminated names.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map(str::to_owned).map_err(|_| CuError::INVALID_VALUE)
}

fn current_ctx() -> CuResult<Handle> {
    state::current().map(|(c, _)| c).ok_or(CuError::INVALID_CONTEXT)
}

fn handle(ptr: *mut c_void) -> Handle {
    ptr as usize as Handle
}

fn as_ptr(h: Handle) -> *mut c_void {
    h as usize as *mut c_void
}

// ---- initialisation and errors ------------------------------------------

pub unsafe fn init(flags: u32) -> CuResult {
    if flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if crate::config::forked() {
        return Err(forked_child());
    }
    let result = SHIM.get_or_init(|| {
        config::init_logging();
        let visible = std::env::var("CUDA_VISIBLE_DEVICES").ok();
        if visible.as_deref().is_some_and(gpupool_proto::visible::shows_none) {
            // As the driver: no device, and no server asked.
            tracing::info!("CUDA_VISIBLE_DEVICES shows no device; cuInit answers CUDA_ERROR_NO_DEVICE");
            return Err(CuError::NO_DEVICE);
        }
        let cfg = Config::from_env();
        if cfg.call_report {
            crate::report::enable();
        }
        let (url, lease_token, lease) = match &cfg.broker {
            Some(b) => {
                let (url, lease) = lease_from_broker(b, &cfg).map_err(|e| {
                    tracing::error!("cannot get a GPU from the broker: {e}");
                    CuError::NO_DEVICE
                })?;
                let token = Some(lease.1.token.clone());
                (url, token, Some(lease))
            }
            None => {
                let url = cfg.server.map_err(|reason| {
                    tracing::error!("{reason}");
                    CuError::NO_DEVICE
                })?;
                (url, cfg.lease_token, None)
            }
        };
        let opts = ConnectOptions {
            url: url.clone(),
            tls: cfg.tls,
            lease_token,
            poll: cfg.poll,
            pin_io: cfg.pin_io,
            hold: cfg.hold,
            visible_devices: visible.clone(),
            driver_env: gpupool_proto::handshake::driver_env_of_process(),
        };
        match Remote::connect(&opts) {
            Ok(remote) => {
                if let Some((broker, granted)) = lease {
                    let r = Arc::clone(&remote);
                    crate::broker::hold(broker, &granted, move |why| r.fail(format!("the GPU lease ended: {why}")));
                }
                // SAFETY: registering a plain extern "C" function with no
                // captured state.
                unsafe { libc::atexit(end_session_at_exit) };
                crate::config::watch_forks();
                let s = &remote.session;
                tracing::info!(server = %url, session = s.session_id, devices = s.devices.len(), simulated = s.simulated, "connected to gpupool server");
                if s.devices.is_empty() {
                    match &visible {
                        Some(v) => tracing::info!(server = %url, value = %v, "CUDA_VISIBLE_DEVICES shows none of the server's devices; cuInit answers CUDA_ERROR_NO_DEVICE"),
                        None => tracing::error!(server = %url, "the server offers no GPU to this session"),
                    }
                    remote.end();
                    return Err(CuError::NO_DEVICE);
                }
                remote.on_events_done(completions::events_done);
                remote.on_output(output::write_output);
                crate::config::steer_nccl_to_peer_transport(s.machine.len());
                Ok(Shim::new(remote))
            }
            Err(e) => {
                tracing::error!(server = %url, "cannot reach the gpupool server: {e}");
                if let Some((broker, granted)) = lease {
                    let _ = broker.release(granted.id);
                }
                Err(CuError::NO_DEVICE)
            }
        }
    });
    result.as_ref().map(|_| ()).map_err(|e| *e)
}

/// At exit, end the session so the server frees it now (a QUIC peer would
/// otherwise wait for its idle timeout).
extern "C" fn end_session_at_exit() {
    crate::config::exiting();
    if crate::config::forked() {
        // The session is the parent's.
        return;
    }
    let _ = std::panic::catch_unwind(|| {
        if let Some(Ok(s)) = SHIM.get() {
            s.remote.end();
        }
    });
}

/// The error of every call in a child forked after the shim connected.
/// Nothing is logged: PyTorch's data-loader workers are such children, and
/// their exit makes calls that fail natively too, unseen.
#[cold]
fn forked_child() -> CuError {
    CuError::NOT_INITIALIZED
}

/// The driver version the program is told (and the integrity hash covers).
pub(super) fn reported_driver_version() -> i32 {
    match SHIM.get() {
        Some(Ok(s)) => s.remote.session.driver_version.min(API_VERSION as i32),
        _ => API_VERSION as i32,
    }
}

/// Ask the broker for a lease; the server it names and the lease.
fn lease_from_broker(
    url: &str,
    cfg: &Config,
) -> Result<
    (
        gpupool_proto::transport::ServerUrl,
        (crate::broker::Broker, crate::broker::Granted),
    ),
    String,
> {
    use crate::broker::{parse_request, Broker};
    let broker = Broker::new(url, cfg.broker_token.clone()).map_err(|e| e.to_string())?;
    let who = crate::remote::client_info();
    let holder = format!("{}/{}/{}", who.host, who.pid, who.program);
    let request = parse_request(&cfg.request, &holder).map_err(|e| e.to_string())?;
    let granted = broker.acquire(&request, cfg.broker_wait).map_err(|e| e.to_string())?;
    tracing::info!(lease = granted.id, server = %granted.endpoint, "lease granted by the broker");
    let server = gpupool_proto::transport::ServerUrl::parse(&granted.endpoint).map_err(|e| {
        let _ = broker.release(granted.id);
        format!(
            "the lease names server {:?}, which is not a gpupool address: {e}",
            granted.endpoint
        )
    })?;
    Ok((server, (broker, granted)))
}

pub unsafe fn driver_get_version(version: *mut i32) -> CuResult {
    unsafe { out(version, reported_driver_version()) }
}

pub unsafe fn get_error_name(err: CUresult, text: *mut *const c_char) -> CuResult {
    match error::name_c(err) {
        Some(s) => unsafe { out(text, s.as_ptr().cast()) },
        None => {
            unsafe { out_opt(text, std::ptr::null()) };
            Err(CuError::INVALID_VALUE)
        }
    }
}

pub unsafe fn get_error_string(err: CUresult, text: *mut *const c_char) -> CuResult {
    match error::description(err) {
        Some(s) => unsafe { out(text, s.as_ptr().cast()) },
        None => {
            unsafe { out_opt(text, std::ptr::null()) };
            Err(CuError::INVALID_VALUE)
        }
    }
}

/// `cuGetProcAddress` statuses.
const SYMBOL_SUCCESS: i32 = 0;
const SYMBOL_NOT_FOUND: i32 = 1;

pub unsafe fn get_proc_address(symbol: *const c_char, pfn: *mut *mut c_void, version: i32, flags: u64) -> CuResult {
    unsafe { get_proc_address_v2(symbol, pfn, version, flags, std::ptr::null_mut()) }
}

extern "C" fn anonymous_entry() -> CUresult {
    super::unsupported("(unnamed entry point)")
}

pub unsafe fn get_proc_address_v2(
    symbol: *const c_char,
    pfn: *mut *mut c_void,
    version: i32,
    flags: u64,
    status: *mut i32,
) -> CuResult {
    if pfn.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let name = unsafe { c_string(symbol)? };
    // The real driver answers an empty name with an internal function.
    if name.is_empty() {
        unsafe { out(pfn, anonymous_entry as *mut c_void)? };
        unsafe { out_opt(status, SYMBOL_SUCCESS) };
        return Ok(());
    }
    // A function the server's driver lacks (and the server does not stand
    // in for) is not found, as a driver of that version answers.
    let unserved = match SHIM.get() {
        Some(Ok(s)) => s.remote.session.unserved.contains(&name),
        _ => false,
    };
    let found = if unserved {
        tracing::debug!(symbol = %name, "cuGetProcAddress: the server's driver lacks it");
        None
    } else {
        crate::procaddr::resolve(&name, version, flags).and_then(super::generated::symbol_address)
    };
    match found {
        Some(f) => {
            unsafe { out(pfn, f)? };
            unsafe { out_opt(status, SYMBOL_SUCCESS) };
            Ok(())
        }
        None => {
            unsafe { out(pfn, std::ptr::null_mut())? };
            unsafe { out_opt(status, SYMBOL_NOT_FOUND) };
            tracing::debug!(symbol = %name, version, flags, "cuGetProcAddress: unknown symbol");
            Err(CuError::NOT_FOUND)
        }
    }
}

pub unsafe fn get_export_table(table: *mut *const c_void, uuid: *const u8) -> CuResult {
    if table.is_null() || uuid.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let mut id = [0u8; 16];
    // SAFETY: a CUuuid is 16 readable bytes.
    unsafe { std::ptr::copy_nonoverlapping(uuid, id.as_mut_ptr(), 16) };
    match super::tables::lookup(&id) {
        Some(t) => unsafe { out(table, t) },
        None => {
            let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
            tracing::warn!(table = %hex, "cuGetExportTable: gpupool does not serve this table");
            unsafe { out(table, std::ptr::null()) }?;
            Err(CuError::NOT_SUPPORTED)
        }
    }
}

/// `cuModuleGetLoadingMode`: lazy unless the program's environment asks for
/// eager loading, as the driver decides (`CUDA_MODULE_LOADING`).
pub unsafe fn module_get_loading_mode(mode: *mut i32) -> CuResult {
    const EAGER: i32 = 1;
    const LAZY: i32 = 2;
    let eager = std::env::var("CUDA_MODULE_LOADING").is_ok_and(|v| v.eq_ignore_ascii_case("EAGER"));
    unsafe { out(mode, if eager { EAGER } else { LAZY }) }
}

// ---- devices ------------------------------------------------------------

pub unsafe fn device_get(device: *mut CUdevice, ordinal: i32) -> CuResult {
    let s = shim()?;
    s.device(ordinal)?;
    unsafe { out(device, ordinal) }
}

pub unsafe fn device_get_count(count: *mut i32) -> CuResult {
    let s = shim()?;
    unsafe { out(count, s.remote.session.devices.len() as i32) }
}

pub unsafe fn device_get_name(name: *mut c_char, len: i32, device: CUdevice) -> CuResult {
    let s = shim()?;
    let d = s.device(device)?;
    if name.is_null() || len <= 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let bytes = d.name.as_bytes();
    let n = bytes.len().min(len as usize - 1);
    // SAFETY: the caller gave `len` writable bytes; we write n + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), name.cast::<u8>(), n);
        *name.add(n) = 0;
    }
    Ok(())
}

pub unsafe fn device_get_uuid(uuid: *mut u8, device: CUdevice) -> CuResult {
    let s = shim()?;
    let d = s.device(device)?;
    if uuid.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: a CUuuid is 16 writable bytes.
    unsafe { std::ptr::copy_nonoverlapping(d.uuid.as_ptr(), uuid, 16) };
    Ok(())
}

pub unsafe fn device_total_mem(bytes: *mut usize, device: CUdevice) -> CuResult {
    let s = shim()?;
    let d = s.device(device)?;
    unsafe { out(bytes, d.total_mem as usize) }
}

/// `CUdevice_attribute` numbers the shim answers itself.
mod attr {
    pub const MANAGED_MEMORY: i32 = 83;
    pub const HOST_NATIVE_ATOMIC_SUPPORTED: i32 = 86;
    pub const PAGEABLE_MEMORY_ACCESS: i32 = 88;
    pub const CONCURRENT_MANAGED_ACCESS: i32 = 89;
    pub const PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES: i32 = 100;
    pub const DIRECT_MANAGED_MEM_ACCESS_FROM_HOST: i32 = 101;
    /// Features the server's GPU may have that gpupool does not offer the
    /// program: GPUDirect RDMA and dma-buf export to this machine's devices
    /// (`cuMemGetHandleForAddressRange`), fabric handles, multicast objects
    /// (NVLink SHARP), memory decompression, host and host-NUMA memory in
    /// the virtual memory and pool APIs, and partial host atomics. Each
    /// answers 0, so a program that asks before it uses one (NCCL asks of
    /// all of them) does not take a path that would fail.
    pub const NOT_OFFERED: [i32; 14] = [
        110, // GPU_DIRECT_RDMA_WITH_CUDA_VMM_SUPPORTED
        116, // GPU_DIRECT_RDMA_SUPPORTED
        124, // DMA_BUF_SUPPORTED
        128, // HANDLE_TYPE_FABRIC_SUPPORTED
        132, // MULTICAST_SUPPORTED
        136, // MEM_DECOMPRESS_ALGORITHM_MASK
        137, // MEM_DECOMPRESS_MAXIMUM_LENGTH
        141, // HOST_NUMA_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED
        142, // HOST_NUMA_MEMORY_POOLS_SUPPORTED
        143, // HOST_NUMA_MULTINODE_IPC_SUPPORTED
        144, // HOST_MEMORY_POOLS_SUPPORTED
        146, // HOST_ALLOC_DMA_BUF_SUPPORTED
        147, // ONLY_PARTIAL_HOST_NATIVE_ATOMIC_SUPPORTED
        161, // GPU_DIRECT_RDMA_WITH_LOCALIZED_MEMORY_SUPPORTED
    ];
}

pub unsafe fn device_get_attribute(value: *mut i32, attribute: i32, device: CUdevice) -> CuResult {
    let s = shim()?;
    let v = match attribute {
        // Managed memory, kept coherent by the shim (`managed`), also
        // while kernels run.
        attr::MANAGED_MEMORY | attr::CONCURRENT_MANAGED_ACCESS => {
            s.device(device)?;
            1
        }
        // A GPU on another machine cannot reach this process's pageable
        // memory, nor can this process reach device memory directly.
        attr::PAGEABLE_MEMORY_ACCESS
        | attr::HOST_NATIVE_ATOMIC_SUPPORTED
        | attr::PAGEABLE_MEMORY_ACCESS_USES_HOST_PAGE_TABLES
        | attr::DIRECT_MANAGED_MEM_ACCESS_FROM_HOST => {
            s.device(device)?;
            0
        }
        a if attr::NOT_OFFERED.contains(&a) => {
            // An attribute the server's driver does not know stays unknown.
            s.attribute(device, attribute)?;
            0
        }
        _ => s.attribute(device, attribute)?,
    };
    unsafe { out(value, v) }
}

// ---- primary contexts ---------------------------------------------------

/// The primary context of `device` on the server, created on first use.
fn primary_handle(s: &Shim, p: &mut state::Primary, device: CUdevice) -> CuResult<Handle> {
    if let Some(h) = p.handle {
        return Ok(h);
    }
    let Reply::Handle(h) = s.remote.call(&Request::PrimaryCtxRetain { device }, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    write(&s.contexts).insert(h, device);
    p.handle = Some(h);
    Ok(h)
}

/// The primary context of a device without retaining it (cudart's interface
/// table asks for it this way).
pub(super) fn primary_context(device: CUdevice) -> CuResult<Handle> {
    let s = shim()?;
    s.device(device)?;
    let mut primaries = lock(&s.primaries);
    primary_handle(s, &mut primaries[device as usize], device)
}

pub unsafe fn primary_ctx_retain(ctx: *mut CUcontext, device: CUdevice) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    if ctx.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let mut primaries = lock(&s.primaries);
    let p = &mut primaries[device as usize];
    let h = primary_handle(s, p, device)?;
    p.retains += 1;
    unsafe { out(ctx, as_ptr(h)) }
}

pub unsafe fn primary_ctx_release(device: CUdevice) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    let gone = {
        let mut primaries = lock(&s.primaries);
        let p = &mut primaries[device as usize];
        if p.retains == 0 {
            return Err(CuError::INVALID_CONTEXT);
        }
        p.retains -= 1;
        if p.retains == 0 {
            p.handle.take()
        } else {
            None
        }
    };
    if let Some(h) = gone {
        super::tables::context_gone(h);
        write(&s.contexts).remove(&h);
        forget_context(s, h);
        s.remote.post(&Request::PrimaryCtxRelease { device }, &[])?;
    }
    Ok(())
}

pub unsafe fn primary_ctx_set_flags(device: CUdevice, flags: u32) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    s.remote.call(&Request::PrimaryCtxSetFlags { device, flags }, &[])?;
    lock(&s.primaries)[device as usize].flags = flags;
    Ok(())
}

pub unsafe fn primary_ctx_get_state(device: CUdevice, flags: *mut u32, active: *mut i32) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    if flags.is_null() || active.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let p = lock(&s.primaries)[device as usize].clone();
    unsafe {
        out(flags, p.flags)?;
        out(active, i32::from(p.retains > 0))
    }
}

pub unsafe fn primary_ctx_reset(device: CUdevice) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    let gone = {
        let mut primaries = lock(&s.primaries);
        let p = &mut primaries[device as usize];
        p.retains = 0;
        p.flags = 0;
        p.handle.take()
    };
    if let Some(h) = gone {
        super::tables::context_gone(h);
        write(&s.contexts).remove(&h);
        forget_context(s, h);
    }
    s.remote.call(&Request::PrimaryCtxReset { device }, &[])?;
    Ok(())
}

// ---- contexts -----------------------------------------------------------

pub unsafe fn ctx_create(ctx: *mut CUcontext, flags: u32, device: CUdevice) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    if ctx.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let Reply::Handle(h) = s.remote.call(&Request::CtxCreate { device, flags }, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    write(&s.contexts).insert(h, device);
    write(&s.context_flags).insert(h, flags);
    state::push_current((h, device));
    unsafe { out(ctx, as_ptr(h)) }
}

pub unsafe fn ctx_create_v4(ctx: *mut CUcontext, params: *mut c_void, flags: u32, device: CUdevice) -> CuResult {
    if !params.is_null() {
        tracing::warn!("cuCtxCreate_v4 with execution-affinity or CIG parameters is not supported");
        return Err(CuError::NOT_SUPPORTED);
    }
    unsafe { ctx_create(ctx, flags, device) }
}

/// Forget what the shim held for a context that went.
fn forget_context(s: &Shim, ctx: Handle) {
    s.forget_context(ctx);
    managed::forget_context(ctx);
}

pub unsafe fn ctx_destroy(ctx: CUcontext) -> CuResult {
    let s = shim()?;
    let h = handle(ctx);
    if green::green_of(h).is_some() {
        // A green context goes with cuGreenCtxDestroy.
        return Err(CuError::INVALID_CONTEXT);
    }
    let removed = write(&s.contexts).remove(&h);
    if removed.is_none() {
        return Err(CuError::INVALID_CONTEXT);
    }
    write(&s.context_flags).remove(&h);
    super::tables::context_gone(h);
    state::drop_from_stack(h);
    forget_context(s, h);
    s.remote.post(&Request::CtxDestroy { ctx: h }, &[])
}

pub unsafe fn ctx_set_current(ctx: CUcontext) -> CuResult {
    if ctx.is_null() {
        state::set_current(None);
        return Ok(());
    }
    let s = shim()?;
    let h = handle(ctx);
    let device = s.context_device(h)?;
    state::set_current(Some((h, device)));
    Ok(())
}

pub unsafe fn ctx_get_current(ctx: *mut CUcontext) -> CuResult {
    shim()?;
    unsafe { out(ctx, current_context()) }
}

/// The calling thread's current context, NULL when it has none.
pub(crate) fn current_context() -> CUcontext {
    state::current().map_or(std::ptr::null_mut(), |(c, _)| as_ptr(c))
}

pub unsafe fn ctx_push_current(ctx: CUcontext) -> CuResult {
    let s = shim()?;
    let h = handle(ctx);
    let device = s.context_device(h)?;
    state::push_current((h, device));
    Ok(())
}

pub unsafe fn ctx_pop_current(ctx: *mut CUcontext) -> CuResult {
    shim()?;
    let (c, _) = state::pop_current().ok_or(CuError::INVALID_CONTEXT)?;
    unsafe { out_opt(ctx, as_ptr(c)) };
    Ok(())
}

pub unsafe fn ctx_get_device(device: *mut CUdevice) -> CuResult {
    shim()?;
    let (_, d) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    unsafe { out(device, d) }
}

pub unsafe fn ctx_get_device_v2(device: *mut CUdevice, ctx: CUcontext) -> CuResult {
    if ctx.is_null() {
        return unsafe { ctx_get_device(device) };
    }
    let s = shim()?;
    let d = s.context_device(handle(ctx))?;
    unsafe { out(device, d) }
}

pub unsafe fn ctx_synchronize() -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    synchronize_context(s, ctx)
}

pub unsafe fn ctx_synchronize_v2(ctx: CUcontext) -> CuResult {
    let s = shim()?;
    let ctx = if ctx.is_null() { current_ctx()? } else { handle(ctx) };
    s.context_device(ctx)?;
    synchronize_context(s, ctx)
}

/// The context whose synchronise last succeeded, and that request's place
/// in the order the server gets requests.
static CONTEXT_SYNCED: std::sync::Mutex<Option<(Handle, u64)>> = std::sync::Mutex::new(None);

/// `cuCtxSynchronize` of `ctx`. While no request of any thread was sent
/// since the context's last synchronise succeeded, nothing can have been
/// given to it since (work, and the streamed calls whose errors a
/// synchronise answers, are all requests): it is idle, and the answer is
/// given here. A loop that synchronises before and after each step (a
/// benchmark's `torch.cuda.synchronize()`) waits for the server once a
/// step.
fn synchronize_context(s: &Shim, ctx: Handle) -> CuResult {
    let idle = lock(&CONTEXT_SYNCED).is_some_and(|(c, place)| c == ctx && s.remote.last_place() == place)
        && s.remote.dead_reason().is_none();
    if !idle {
        *lock(&CONTEXT_SYNCED) = None;
        let (_, place) = s.remote.call_placed(&Request::CtxSynchronize { ctx }, &[])?;
        *lock(&CONTEXT_SYNCED) = Some((ctx, place));
    }
    s.callbacks.wait_context(ctx);
    Ok(())
}

pub unsafe fn ctx_get_limit(value: *mut usize, limit: i32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let asked = {
        let limits = read(&s.limits);
        if let Some(&v) = limits.answers.get(&(ctx, limit)) {
            return unsafe { out(value, v) };
        }
        limits.forgotten
    };
    match s.remote.call(&Request::CtxGetLimit { ctx, limit }, &[])? {
        Reply::Size(v) => {
            let mut limits = write(&s.limits);
            if limit != CU_LIMIT_STACK_SIZE && limits.forgotten == asked {
                limits.answers.insert((ctx, limit), v as usize);
            }
            drop(limits);
            unsafe { out(value, v as usize) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

/// `CU_LIMIT_STACK_SIZE`: the one limit the driver changes by itself.
const CU_LIMIT_STACK_SIZE: i32 = 0;

pub unsafe fn ctx_set_limit(limit: i32, value: usize) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    let set = s.remote.call(
        &Request::CtxSetLimit {
            ctx,
            limit,
            value: value as u64,
        },
        &[],
    );
    // The driver may round the value (or, failing, change nothing): the
    // next question asks it.
    s.forget_limits(ctx);
    set.map(|_| ())
}

pub unsafe fn ctx_get_api_version(ctx: CUcontext, version: *mut u32) -> CuResult {
    let s = shim()?;
    let h = if ctx.is_null() { current_ctx()? } else { handle(ctx) };
    s.context_device(h)?;
    unsafe { out(version, API_VERSION) }
}

pub unsafe fn ctx_get_stream_priority_range(least: *mut i32, greatest: *mut i32) -> CuResult {
    shim()?;
    current_ctx()?;
    // Answered locally: the range is a property of the architecture (every
    // GPU since compute capability 7.0 answers 0 and -5).
    unsafe {
        out_opt(least, 0);
        out_opt(greatest, -5);
    }
    Ok(())
}

// ---- modules, functions, libraries, kernels -------------------------------

/// The bytes of the code image at `image`: PTX text, a cubin, a fat binary,
/// or a fat-binary wrapper (followed to its fat binary). The image's own
/// headers say how long it is (`gpupool_fatbin::required_len`); the shim
/// reads no further than they say. The wrapper of relocatable device code
/// (version 2) whose linked fat binary holds nothing the GPU can run (a
/// PTX-only `nvcc -rdc` build) has its objects linked by the server's
/// driver, as the driver does at load: the linked image is answered.
unsafe fn image_bytes<'a>(image: *const c_void) -> CuResult<std::borrow::Cow<'a, [u8]>> {
    let mut p = image.cast::<u8>();
    for _hop in 0..2 {
        // SAFETY: the caller passes an image (checked for NULL there).
        let bytes = unsafe { measured_image(p) }?;
        if gpupool_fatbin::detect(bytes) != Ok(ImageKind::Wrapper) {
            return Ok(bytes.into());
        }
        let wrapper = gpupool_fatbin::parse_wrapper(bytes).map_err(|e| {
            tracing::warn!("fat-binary wrapper refused: {e}");
            CuError::INVALID_IMAGE
        })?;
        p = wrapper.data as usize as *const u8;
        if wrapper.version == 2 && wrapper.filename_or_fatbins != 0 {
            // SAFETY: a version 2 wrapper's data is the linked fat binary.
            let linked = unsafe { measured_image(p) }?;
            if runs_here(linked)? {
                return Ok(linked.into());
            }
            // SAFETY: its second pointer is the NULL-terminated array of
            // the objects' fat binaries.
            let objects = unsafe { prelinked_objects(wrapper.filename_or_fatbins as usize as *const *const u8) }?;
            let s = shim()?;
            let ctx = match state::current() {
                Some((c, _)) => c,
                None => primary_context(0)?,
            };
            return link::link_objects(s, ctx, &objects).map(Into::into);
        }
    }
    // A wrapper pointing at a wrapper.
    Err(CuError::INVALID_IMAGE)
}

/// The image at `p`, as long as its headers say.
///
/// # Safety
/// `p` is NULL or the start of a code image.
unsafe fn measured_image<'a>(p: *const u8) -> CuResult<&'a [u8]> {
    if p.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let mut have = 1usize;
    let len = loop {
        // SAFETY: `have` bytes were vouched for by the image's headers
        // read so far (one byte to start: every image has one).
        let prefix = unsafe { std::slice::from_raw_parts(p, have) };
        match gpupool_fatbin::required_len(prefix) {
            Ok(LenQuery::NeedAtLeast(n)) if (n as usize) > have => have = n as usize,
            Ok(LenQuery::Exact(n)) => break n as usize,
            Ok(LenQuery::NulTerminated) => {
                // SAFETY: PTX images are NUL-terminated strings.
                break unsafe { CStr::from_ptr(p.cast()) }.to_bytes_with_nul().len();
            }
            Ok(LenQuery::NeedAtLeast(_)) => return Err(CuError::INVALID_IMAGE),
            Err(e) => {
                tracing::warn!("not a code image gpupool can read: {e}");
                return Err(CuError::INVALID_IMAGE);
            }
        }
    };
    // SAFETY: the image's headers say it occupies `len` bytes from p.
    Ok(unsafe { std::slice::from_raw_parts(p, len) })
}

/// Whether the device-linked fat binary of relocatable device code holds
/// code the session's GPU (of the current context, else device 0) runs.
fn runs_here(linked: &[u8]) -> CuResult<bool> {
    let s = shim()?;
    let device = state::current().map_or(0, |(_, d)| d);
    let major = s.attribute(device, 75)? as u32;
    let minor = s.attribute(device, 76)? as u32;
    let fatbin = gpupool_fatbin::parse_fatbin(linked).map_err(|e| {
        tracing::warn!("the linked fat binary of relocatable device code is unreadable: {e}");
        CuError::INVALID_IMAGE
    })?;
    Ok(fatbin.runs_on(major, minor))
}

/// The most objects one program's relocatable device code may hold.
const MOST_PRELINKED: usize = 4096;

/// The objects' fat binaries of relocatable device code.
///
/// # Safety
/// `array` is a NULL-terminated array of pointers to fat binaries.
unsafe fn prelinked_objects<'a>(array: *const *const u8) -> CuResult<Vec<&'a [u8]>> {
    let mut objects = Vec::new();
    for i in 0..MOST_PRELINKED {
        // SAFETY: the array holds pointers up to its NULL.
        let p = unsafe { array.add(i).read() };
        if p.is_null() {
            return Ok(objects);
        }
        // SAFETY: each is a fat binary.
        objects.push(unsafe { measured_image(p) }?);
    }
    tracing::warn!("relocatable device code of more than {MOST_PRELINKED} objects is refused");
    Err(CuError::INVALID_IMAGE)
}

pub(super) unsafe fn load_module(module: *mut CUmodule, image: *const c_void) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if module.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let bytes = unsafe { image_bytes(image)? };
    let h = ship_image(s, &bytes, |sha256| Request::ModuleLoad { ctx, sha256 })?;
    functions::loaded_module(s, h, &bytes);
    unsafe { out(module, as_ptr(h)) }
}

/// Images up to this size go with the first request; larger ones are named
/// by hash first and sent only when the server does not hold them.
const INLINE_IMAGE: usize = 64 << 10;
/// Images up to this size travel in one frame; larger ones in pieces of
/// [`IMAGE_PIECE`] bytes (`ImagePart`).
const WHOLE_IMAGE: usize = 32 << 20;
const IMAGE_PIECE: usize = 16 << 20;

/// Load an image on the server, sending its bytes only when needed.
fn ship_image(s: &Shim, bytes: &[u8], request: impl Fn([u8; 32]) -> Request) -> CuResult<Handle> {
    let Some(cut) = for_session_gpus(s, bytes) else {
        return send_image(s, bytes, &request);
    };
    match send_image(s, &cut, &request) {
        // The server's driver refused the image as cut: the whole image, as
        // the program gave it, is the driver's to judge, and the images
        // after it go whole too.
        Err(e) if REFUSED_IMAGE.contains(&e) => {
            tracing::warn!(
                error = e.0,
                bytes = bytes.len(),
                sent = cut.len(),
                "the server's driver refused a fat binary cut to its GPUs' code; sending it and the images after it whole"
            );
            CUT_REFUSED.store(true, Ordering::Relaxed);
            send_image(s, bytes, &request)
        }
        r => r,
    }
}

/// Errors by which a driver refuses a code image itself.
const REFUSED_IMAGE: [CuError; 5] = [
    CuError::INVALID_IMAGE,
    CuError::NO_BINARY_FOR_GPU,
    CuError::INVALID_PTX,
    CuError::UNSUPPORTED_PTX_VERSION,
    CuError::INVALID_SOURCE,
];

/// Set once the server's driver refused an image the shim cut: from then
/// on fat binaries go whole.
static CUT_REFUSED: AtomicBool = AtomicBool::new(false);

/// Sends a code image (named by its hash first when it is large, so that
/// an image the server holds is not sent again) and loads it with
/// `request`.
fn send_image(s: &Shim, bytes: &[u8], request: &impl Fn([u8; 32]) -> Request) -> CuResult<Handle> {
    let sha256: [u8; 32] = Sha256::digest(bytes).into();
    let first: &[u8] = if bytes.len() <= INLINE_IMAGE { bytes } else { &[] };
    let reply = match s.remote.call(&request(sha256), first)? {
        Reply::ImageUnknown if first.is_empty() && bytes.len() <= WHOLE_IMAGE => {
            s.remote.call(&request(sha256), bytes)?
        }
        Reply::ImageUnknown if first.is_empty() => {
            // Too large for one frame (NCCL's device code for every
            // architecture is hundreds of MiB): in pieces, then named.
            if bytes.len() as u64 > gpupool_proto::message::MAX_IMAGE_BYTES {
                tracing::warn!(bytes = bytes.len(), "a code image over gpupool's limit was refused");
                return Err(CuError::INVALID_IMAGE);
            }
            let total = bytes.len() as u64;
            for (i, piece) in bytes.chunks(IMAGE_PIECE).enumerate() {
                let offset = (i * IMAGE_PIECE) as u64;
                s.remote.post(&Request::ImagePart { sha256, offset, total }, piece)?;
            }
            match s.remote.call(&request(sha256), &[])? {
                Reply::ImageUnknown => {
                    tracing::warn!(
                        bytes = bytes.len(),
                        "the server did not take a code image sent in pieces"
                    );
                    return Err(CuError::INVALID_IMAGE);
                }
                r => r,
            }
        }
        r => r,
    };
    match reply {
        Reply::Handle(h) => Ok(h),
        _ => Err(CuError::UNKNOWN),
    }
}

/// A fat binary cut down to the entries the session's GPUs can load
/// (`gpupool_fatbin::only_for`), which is all their driver may pick from:
/// libraries built for every architecture (NCCL's, PyTorch's) then cross
/// the network with one architecture's code, not a dozen. `None` for other
/// images, or when nothing would be cut.
fn for_session_gpus(s: &Shim, bytes: &[u8]) -> Option<Vec<u8>> {
    if CUT_REFUSED.load(Ordering::Relaxed) || gpupool_fatbin::detect(bytes) != Ok(ImageKind::FatBinary) {
        return None;
    }
    let devices: Vec<(u32, u32)> = (0..s.remote.session.devices.len() as i32)
        .filter_map(|d| Some((s.attribute(d, 75).ok()? as u32, s.attribute(d, 76).ok()? as u32)))
        .collect();
    let cut = gpupool_fatbin::only_for(bytes, &devices).ok().flatten()?;
    tracing::debug!(
        bytes = bytes.len(),
        sent = cut.len(),
        "a fat binary goes with the code of the session's GPUs only"
    );
    Some(cut)
}

/// The server's handle for a function or kernel handle the program holds:
/// a kernel of a lazy library is loaded and looked up on first use.
fn resolve(s: &Shim, h: Handle) -> CuResult<Handle> {
    if !state::is_local(h) {
        return Ok(h);
    }
    let kernel = read(&s.lazy_kernels).get(&h).cloned().ok_or(CuError::INVALID_HANDLE)?;
    let mut remote = lock(&kernel.remote);
    if let Some(r) = *remote {
        return Ok(r);
    }
    let library = remote_library(s, &kernel.library)?;
    let Reply::Handle(r) = s.remote.call(
        &Request::LibraryGetKernel {
            library,
            name: kernel.name.clone(),
        },
        &[],
    )?
    else {
        return Err(CuError::UNKNOWN);
    };
    write(&s.kernels).insert(r);
    *remote = Some(r);
    Ok(r)
}

/// The server's copy of a lazy library, loaded on first need.
fn remote_library(s: &Shim, lib: &state::LazyLibrary) -> CuResult<Handle> {
    let mut remote = lock(&lib.remote);
    if let Some(h) = *remote {
        return Ok(h);
    }
    let h = ship_image(s, &lib.image, |sha256| Request::LibraryLoad { sha256 })?;
    *remote = Some(h);
    Ok(h)
}

/// The kernel names an image defines, each once, in image order; `None`
/// when the shim cannot read the image.
fn image_kernels(bytes: &[u8]) -> Option<Vec<String>> {
    // A fat binary's kernels are read from the entry the GPU (of the
    // current context, else device 0) loads, the only one decompressed.
    let device = state::current().map_or(0, |(_, d)| d);
    let capability = shim().and_then(|s| Ok((s.attribute(device, 75)? as u32, s.attribute(device, 76)? as u32)));
    let listed = match capability {
        Ok((major, minor)) => gpupool_fatbin::kernels_for(bytes, major, minor),
        Err(_) => gpupool_fatbin::kernels(bytes),
    };
    match listed {
        Ok(k) => {
            let mut seen = std::collections::HashSet::new();
            Some(
                k.into_iter()
                    .map(|k| k.name)
                    .filter(|n| seen.insert(n.clone()))
                    .collect(),
            )
        }
        Err(e) => {
            tracing::debug!("cannot list the kernels of an image ({e}); the server will be asked");
            None
        }
    }
}

fn is_kernel(s: &Shim, h: Handle) -> bool {
    state::is_local(h) || read(&s.kernels).contains(&h)
}

pub unsafe fn module_load_data(module: *mut CUmodule, image: *const c_void) -> CuResult {
    unsafe { load_module(module, image) }
}

pub unsafe fn module_load_data_ex(
    module: *mut CUmodule,
    image: *const c_void,
    _num_options: u32,
    _options: *mut i32,
    _values: *mut *mut c_void,
) -> CuResult {
    // JIT options (log buffers, optimisation level) are hints; the server's
    // driver compiles with its defaults.
    unsafe { load_module(module, image) }
}

pub unsafe fn module_load_fat_binary(module: *mut CUmodule, image: *const c_void) -> CuResult {
    unsafe { load_module(module, image) }
}

/// A code image from a file of the program's (PTX, cubin or fat binary),
/// with a NUL after it: PTX files are text without one, and the other
/// forms say their own length.
unsafe fn image_file(path: *const c_char) -> CuResult<Vec<u8>> {
    let path = unsafe { c_string(path)? };
    let mut bytes = std::fs::read(&path).map_err(|e| {
        tracing::debug!("cannot read the code image {path}: {e}");
        CuError::FILE_NOT_FOUND
    })?;
    if bytes.is_empty() {
        return Err(CuError::INVALID_IMAGE);
    }
    bytes.push(0);
    Ok(bytes)
}

/// `cuModuleLoad`: the file is the program's, so the shim reads it and
/// loads it as `cuModuleLoadData` does (Inductor's kernels of
/// `torch.compile` are loaded so, from the cubins it writes).
pub unsafe fn module_load(module: *mut CUmodule, path: *const c_char) -> CuResult {
    let image = unsafe { image_file(path)? };
    unsafe { load_module(module, image.as_ptr().cast()) }
}

/// `cuLibraryLoadFromFile`: as `cuLibraryLoadData` of the file's bytes.
pub unsafe fn library_load_from_file(
    library: *mut CUlibrary,
    path: *const c_char,
    jit_options: *mut i32,
    jit_values: *mut *mut c_void,
    num_jit: u32,
    library_options: *mut i32,
    library_values: *mut *mut c_void,
    num_library: u32,
) -> CuResult {
    let image = unsafe { image_file(path)? };
    unsafe {
        library_load_data(
            library,
            image.as_ptr().cast(),
            jit_options,
            jit_values,
            num_jit,
            library_options,
            library_values,
            num_library,
        )
    }
}

pub unsafe fn module_unload(module: CUmodule) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    s.remote.call(
        &Request::ModuleUnload {
            ctx,
            module: handle(module),
        },
        &[],
    )?;
    s.forget_functions();
    functions::unloaded_module(s, handle(module));
    managed::forget_library(handle(module));
    Ok(())
}

pub unsafe fn module_get_function(function: *mut CUfunction, module: CUmodule, name: *const c_char) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if function.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let name = unsafe { c_string(name)? };
    let f = function_in(s, ctx, module, &name)?;
    unsafe { out(function, f) }
}

/// A module's function by name, made by the server in `ctx`.
fn function_in(s: &Shim, ctx: Handle, module: CUmodule, name: &str) -> CuResult<CUfunction> {
    match s.remote.call(
        &Request::ModuleGetFunction {
            ctx,
            module: handle(module),
            name: name.to_owned(),
        },
        &[],
    )? {
        Reply::Handle(h) => {
            functions::made_function(s, h, name, Some(handle(module)));
            Ok(as_ptr(h))
        }
        _ => Err(CuError::UNKNOWN),
    }
}

fn record_global(s: &Shim, ctx: Handle, ptr: u64, size: u64) {
    let device = s.context_device(ctx).unwrap_or(0);
    let range = DeviceRange {
        size,
        ctx,
        device,
        kind: RangeKind::Global,
        legacy_ipc: false,
    };
    if managed::is_managed(ptr as usize) {
        // A `__managed__` variable: its pages are the shim's managed mapping.
        lock(&s.device_memory).insert_mapped(ptr, range);
    } else {
        keep_device_range(s, "a module global", ptr, range);
    }
}

/// Record a module or library global the server reported and hand its
/// address and size to the program.
unsafe fn deliver_global(s: &Shim, ctx: Handle, reply: Reply, ptr: *mut CUdeviceptr, bytes: *mut usize) -> CuResult {
    let Reply::Global { ptr: p, size } = reply else {
        return Err(CuError::UNKNOWN);
    };
    record_global(s, ctx, p, size);
    unsafe {
        out_opt(ptr, p);
        out_opt(bytes, size as usize);
    }
    Ok(())
}

pub unsafe fn module_get_global(
    ptr: *mut CUdeviceptr,
    bytes: *mut usize,
    module: CUmodule,
    name: *const c_char,
) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    let name = unsafe { c_string(name)? };
    let reply = s.remote.call(
        &Request::ModuleGetGlobal {
            ctx,
            module: handle(module),
            name,
        },
        &[],
    )?;
    let reply = match reply {
        // A `__managed__` variable, which host code reads and writes
        // through the pointer: mapped here as managed memory, and gone with
        // its module.
        Reply::ManagedGlobal { ptr: p, size } => {
            managed::adopt_variable(s, ctx, handle(module), p, size)?;
            Reply::Global { ptr: p, size }
        }
        r => r,
    };
    unsafe { deliver_global(s, ctx, reply, ptr, bytes) }
}

/// Every `CUfunction_attribute` (`CU_FUNC_ATTRIBUTE_MAX` is 16): all are
/// asked at the first question about a function or kernel, in one round
/// trip. cudart's `cudaFuncGetAttributes` asks ten of them, and NCCL eight
/// of each of its kernels, one after another.
const FUNCTION_ATTRIBUTES: std::ops::Range<i32> = 0..16;

/// An attribute from `map` (keyed by `key(attribute)`), all of them fetched
/// at once with `fetch` when it is absent. An attribute the driver does
/// not have (`CUDA_ERROR_INVALID_VALUE`) is remembered as such too: cuDNN
/// 9.26 asks for two that the driver may not know before each convolution.
fn cached_attribute<K: std::hash::Hash + Eq>(
    map: &std::sync::RwLock<std::collections::HashMap<K, CuResult<i32>>>,
    key: impl Fn(i32) -> K,
    attribute: i32,
    fetch: impl FnOnce(Vec<i32>) -> CuResult<Reply>,
) -> CuResult<i32> {
    if let Some(v) = read(map).get(&key(attribute)) {
        return *v;
    }
    let mut attrs: Vec<i32> = FUNCTION_ATTRIBUTES.collect();
    if !FUNCTION_ATTRIBUTES.contains(&attribute) {
        attrs.push(attribute);
    }
    let Reply::Attributes(answers) = fetch(attrs.clone())? else {
        return Err(CuError::UNKNOWN);
    };
    if answers.len() != attrs.len() {
        return Err(CuError::UNKNOWN);
    }
    let mut known = write(map);
    let mut asked = Err(CuError::UNKNOWN);
    for (&a, (status, v)) in attrs.iter().zip(answers) {
        let answer = if status == 0 { Ok(v) } else { Err(CuError(status)) };
        if matches!(answer, Ok(_) | Err(CuError::INVALID_VALUE)) {
            known.insert(key(a), answer);
        }
        if a == attribute {
            asked = answer;
        }
    }
    asked
}

pub unsafe fn func_get_attribute(value: *mut i32, attribute: i32, function: CUfunction) -> CuResult {
    let s = shim()?;
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let func = handle(function);
    let v = cached_attribute(
        &s.func_attributes,
        |a| (func, a),
        attribute,
        |attrs| {
            let ctx = current_ctx()?;
            s.remote.call(
                &Request::FuncGetAttributes {
                    ctx,
                    func: resolve(s, func)?,
                    attrs,
                },
                &[],
            )
        },
    )?;
    unsafe { out(value, v) }
}

/// The attributes `cuFuncSetAttribute` and `cuKernelSetAttribute` may set
/// (`CUfunction_attribute`: dynamic shared memory, carveout, required
/// cluster width/height/depth, non-portable clusters, cluster scheduling);
/// the others are read-only and refused by the driver.
const SETTABLE_ATTRIBUTES: [i32; 7] = [8, 9, 11, 12, 13, 14, 15];

/// Whether setting `key` to `value` is a repeat of the last set, which the
/// driver took: no change, answered here.
fn repeated_set(s: &Shim, key: (Handle, i32, i32), value: i32) -> bool {
    SETTABLE_ATTRIBUTES.contains(&key.1) && read(&s.attribute_sets).get(&key) == Some(&value)
}

/// Whether setting attribute `set` may change attribute `other`: itself,
/// and the cluster attributes (10 to 15) one another. Dynamic shared
/// memory (8) and the carveout (9) change nothing else.
fn set_may_change(set: i32, other: i32) -> bool {
    const CLUSTER: std::ops::RangeInclusive<i32> = 10..=15;
    other == set || (CLUSTER.contains(&set) && CLUSTER.contains(&other))
}

/// After a set the driver took: the cached answers it may have changed are
/// forgotten, on the handle and on every handle of the other kind (a
/// kernel's functions carry its attributes, and a function may be a
/// kernel's), and so are the occupancy answers, which depend on them, and
/// the other kind's recorded sets, which may no longer hold.
fn record_set(s: &Shim, key: (Handle, i32, i32), value: i32) {
    let (h, attr, device) = key;
    let function = device == state::FUNCTION_SET;
    if function {
        write(&s.func_attributes).retain(|(f, a), _| *f != h || !set_may_change(attr, *a));
        write(&s.kernel_attributes).retain(|(_, a, _), _| !set_may_change(attr, *a));
    } else {
        write(&s.kernel_attributes).retain(|(k, a, _), _| *k != h || !set_may_change(attr, *a));
        write(&s.func_attributes).retain(|(_, a), _| !set_may_change(attr, *a));
    }
    write(&s.occupancy).clear();
    let mut sets = write(&s.attribute_sets);
    sets.retain(|(_, a, d), _| (*d == state::FUNCTION_SET) == function || !set_may_change(attr, *a));
    sets.insert(key, value);
}

pub unsafe fn func_set_attribute(function: CUfunction, attribute: i32, value: i32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    let func = handle(function);
    let key = (func, attribute, state::FUNCTION_SET);
    if repeated_set(s, key, value) {
        return Ok(());
    }
    s.remote.call(
        &Request::FuncSetAttribute {
            ctx,
            func: resolve(s, func)?,
            attr: attribute,
            value,
        },
        &[],
    )?;
    record_set(s, key, value);
    Ok(())
}

/// A function's (or kernel's) parameter layout, fetched once.
fn param_layout(s: &Shim, func: Handle, kernel: bool) -> CuResult<Arc<Vec<(u32, u32)>>> {
    if let Some(p) = read(&s.params).get(&func) {
        return Ok(Arc::clone(p));
    }
    let ctx = current_ctx()?;
    let remote = resolve(s, func)?;
    match s.remote.call(
        &Request::ParamInfo {
            ctx,
            func: remote,
            kernel,
        },
        &[],
    )? {
        Reply::Params(p) => {
            let p = Arc::new(p);
            write(&s.params).insert(func, Arc::clone(&p));
            Ok(p)
        }
        _ => Err(CuError::UNKNOWN),
    }
}

unsafe fn param_info(func: Handle, kernel: bool, index: usize, offset: *mut usize, size: *mut usize) -> CuResult {
    let s = shim()?;
    let layout = param_layout(s, func, kernel)?;
    let &(o, n) = layout.get(index).ok_or(CuError::INVALID_VALUE)?;
    unsafe {
        out_opt(offset, o as usize);
        out_opt(size, n as usize);
    }
    Ok(())
}

pub unsafe fn func_get_param_info(
    function: CUfunction,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> CuResult {
    let kernel = shim().is_ok_and(|s| is_kernel(s, handle(function)));
    unsafe { param_info(handle(function), kernel, index, offset, size) }
}

pub unsafe fn kernel_get_param_info(kernel: CUkernel, index: usize, offset: *mut usize, size: *mut usize) -> CuResult {
    unsafe { param_info(handle(kernel), true, index, offset, size) }
}

/// `cuFuncGetParamCount` and `cuKernelGetParamCount` (CUDA 13.5): the
/// length of the parameter layout `cuFuncGetParamInfo` reads from.
unsafe fn param_count(func: Handle, kernel: bool, count: *mut usize) -> CuResult {
    let s = shim()?;
    if count.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let layout = param_layout(s, func, kernel)?;
    unsafe { out(count, layout.len()) }
}

pub unsafe fn func_get_param_count(function: CUfunction, count: *mut usize) -> CuResult {
    let kernel = shim().is_ok_and(|s| is_kernel(s, handle(function)));
    unsafe { param_count(handle(function), kernel, count) }
}

pub unsafe fn kernel_get_param_count(kernel: CUkernel, count: *mut usize) -> CuResult {
    unsafe { param_count(handle(kernel), true, count) }
}

pub unsafe fn library_load_data(
    library: *mut CUlibrary,
    code: *const c_void,
    _jit_options: *mut i32,
    _jit_values: *mut *mut c_void,
    _num_jit: u32,
    _library_options: *mut i32,
    _library_values: *mut *mut c_void,
    _num_library: u32,
) -> CuResult {
    let s = shim()?;
    if library.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let bytes = unsafe { image_bytes(code)? };
    let kernels = image_kernels(&bytes).map(|k| k.into_iter().collect());
    let lib = Arc::new(state::LazyLibrary {
        image: bytes.to_vec(),
        kernels,
        remote: std::sync::Mutex::new(None),
    });
    if lib.kernels.is_none() {
        // The server's driver is the judge of an image the shim cannot read.
        remote_library(s, &lib)?;
    }
    let h = s.add_library(lib);
    unsafe { out(library, as_ptr(h)) }
}

pub unsafe fn library_unload(library: CUlibrary) -> CuResult {
    let s = shim()?;
    let lib = s.remove_library(handle(library)).ok_or(CuError::INVALID_HANDLE)?;
    managed::forget_library(handle(library));
    let remote = *lock(&lib.remote);
    match remote {
        Some(h) => s.remote.post(&Request::LibraryUnload { library: h }, &[]),
        None => Ok(()),
    }
}

pub unsafe fn library_get_kernel(kernel: *mut CUkernel, library: CUlibrary, name: *const c_char) -> CuResult {
    let s = shim()?;
    if kernel.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let name = unsafe { c_string(name)? };
    let lh = handle(library);
    let lib = read(&s.libraries).get(&lh).cloned().ok_or(CuError::INVALID_HANDLE)?;
    // A name the shim read in the image is answered here; any other, or
    // any name of an image the shim could not read, the server's driver
    // answers (so that a name the shim's reading missed is still found).
    let listed = lib.kernels.as_ref().is_some_and(|names| names.contains(&name));
    let h = s.lazy_kernel(lh, &lib, &name);
    if !listed {
        let found_before = read(&s.lazy_kernels).get(&h).is_some_and(|k| lock(&k.remote).is_some());
        if let Err(e) = resolve(s, h) {
            s.forget_lazy_kernel(lh, &name);
            return Err(e);
        }
        if lib.kernels.is_some() && !found_before {
            tracing::warn!(kernel = %name, "the server's driver found a kernel the shim did not read in its image");
        }
    }
    unsafe { out(kernel, as_ptr(h)) }
}

pub unsafe fn library_get_global(
    ptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUlibrary,
    name: *const c_char,
) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    let name = unsafe { c_string(name)? };
    let lib = read(&s.libraries)
        .get(&handle(library))
        .cloned()
        .ok_or(CuError::INVALID_HANDLE)?;
    let library = remote_library(s, &lib)?;
    let reply = s.remote.call(&Request::LibraryGetGlobal { ctx, library, name }, &[])?;
    unsafe { deliver_global(s, ctx, reply, ptr, bytes) }
}

/// `cuLibraryGetManaged`: a `__managed__` variable, which host code then
/// reads and writes through the pointer (cudart sets its shadow to it), so
/// the shim maps it as managed memory.
pub unsafe fn library_get_managed(
    ptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUlibrary,
    name: *const c_char,
) -> CuResult {
    let s = shim()?;
    let ctx = match state::current() {
        Some((ctx, _)) => ctx,
        // cudart asks at start-up, before any context is current: the
        // variables then live in device 0's primary context, which the shim
        // retains for them.
        None => {
            let mut primaries = lock(&s.primaries);
            let p = &mut primaries[0];
            let h = primary_handle(s, p, 0)?;
            p.retains += 1;
            h
        }
    };
    let name = unsafe { c_string(name)? };
    let lh = handle(library);
    let lib = read(&s.libraries).get(&lh).cloned().ok_or(CuError::INVALID_HANDLE)?;
    let remote = remote_library(s, &lib)?;
    let reply = s.remote.call(
        &Request::LibraryGetManaged {
            ctx,
            library: remote,
            name,
        },
        &[],
    )?;
    let Reply::Global { ptr: p, size } = reply else {
        return Err(CuError::UNKNOWN);
    };
    managed::adopt_variable(s, ctx, lh, p, size)?;
    unsafe { deliver_global(s, ctx, reply, ptr, bytes) }
}

/// `cuLibraryGetModule`: the library's module in the current context, made
/// by the server at the first question in each context (cudart 12 asks it
/// before it launches a kernel it registered, then asks the module for the
/// function).
pub unsafe fn library_get_module(module: *mut CUmodule, library: CUlibrary) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if module.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let lh = handle(library);
    let key = (lh, ctx);
    if let Some(&m) = read(&s.library_modules).get(&key) {
        return unsafe { out(module, as_ptr(m)) };
    }
    let lib = read(&s.libraries).get(&lh).cloned().ok_or(CuError::INVALID_HANDLE)?;
    let library = remote_library(s, &lib)?;
    match s.remote.call(&Request::LibraryGetModule { ctx, library }, &[])? {
        Reply::Handle(m) => {
            write(&s.library_modules).insert(key, m);
            unsafe { out(module, as_ptr(m)) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn kernel_get_function(function: *mut CUfunction, kernel: CUkernel) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if function.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let key = (handle(kernel), ctx);
    if let Some(&f) = read(&s.kernel_functions).get(&key) {
        return unsafe { out(function, as_ptr(f)) };
    }
    let name = read(&s.lazy_kernels).get(&key.0).map(|k| k.name.clone());
    let kernel = resolve(s, handle(kernel))?;
    match s.remote.call(&Request::KernelGetFunction { ctx, kernel }, &[])? {
        Reply::Handle(h) => {
            write(&s.kernel_functions).insert(key, h);
            if let Some(name) = name {
                functions::made_function(s, h, &name, None);
            }
            unsafe { out(function, as_ptr(h)) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn kernel_get_attribute(value: *mut i32, attribute: i32, kernel: CUkernel, device: CUdevice) -> CuResult {
    let s = shim()?;
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let kernel = handle(kernel);
    let v = cached_attribute(
        &s.kernel_attributes,
        |a| (kernel, a, device),
        attribute,
        |attrs| {
            s.remote.call(
                &Request::KernelGetAttributes {
                    kernel: resolve(s, kernel)?,
                    attrs,
                    device,
                },
                &[],
            )
        },
    )?;
    unsafe { out(value, v) }
}

pub unsafe fn kernel_set_attribute(attribute: i32, value: i32, kernel: CUkernel, device: CUdevice) -> CuResult {
    let s = shim()?;
    let k = handle(kernel);
    let key = (k, attribute, device);
    if repeated_set(s, key, value) {
        return Ok(());
    }
    s.remote.call(
        &Request::KernelSetAttribute {
            kernel: resolve(s, k)?,
            attr: attribute,
            value,
            device,
        },
        &[],
    )?;
    record_set(s, key, value);
    Ok(())
}

// ---- memory ---------------------------------------------------------------

pub unsafe fn mem_alloc(ptr: *mut CUdeviceptr, size: usize) -> CuResult {
    let s = shim()?;
    let (ctx, device) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    if ptr.is_null() || size == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let range = DeviceRange {
        size: size as u64,
        ctx,
        device,
        kind: RangeKind::Allocated,
        legacy_ipc: true,
    };
    let p = place_allocation(
        s,
        "cuMemAlloc",
        range,
        || match s.remote.call(&Request::MemAlloc { ctx, size: size as u64 }, &[])? {
            Reply::Pointer(p) => Ok(p),
            _ => Err(CuError::UNKNOWN),
        },
        |p| {
            let _ = s.remote.post(&Request::MemFree { ctx, ptr: p }, &[]);
        },
    )?;
    unsafe { out(ptr, p) }
}

/// Record device memory `alloc` makes as `range`. Memory that lies on
/// memory of the program's is made again (the first kept meanwhile, so the
/// driver gives another address), so that no program pointer is also a
/// device pointer; what lay there is then given back with `free`. After
/// [`PLACEMENT_TRIES`], or where another allocation fails, the first is
/// kept, with a warning.
pub(super) fn place_allocation(
    s: &Shim,
    call: &str,
    range: DeviceRange,
    alloc: impl FnMut() -> CuResult<u64>,
    free: impl FnMut(u64),
) -> CuResult<u64> {
    place_range(s, call, Some(range), range.size, alloc, free)
}

/// As [`place_allocation`], for a range kept as `range`, or only held
/// (`None`: an address reservation, whose mappings are kept as they come).
pub(super) fn place_range(
    s: &Shim,
    call: &str,
    range: Option<DeviceRange>,
    size: u64,
    mut alloc: impl FnMut() -> CuResult<u64>,
    mut free: impl FnMut(u64),
) -> CuResult<u64> {
    let mut clashed = Vec::new();
    let placed = loop {
        let p = match alloc() {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        let clear = match range {
            Some(range) => lock(&s.device_memory).insert(p, range),
            None => lock(&s.device_memory).hold_range(p, size),
        };
        if clear || clashed.len() >= PLACEMENT_TRIES {
            break Ok(p);
        }
        clashed.push(p);
    };
    let placed = match (placed, clashed.first()) {
        (Err(_), Some(&first)) => Ok(first),
        (placed, _) => placed,
    };
    for &p in clashed.iter().filter(|&&p| placed != Ok(p)) {
        if range.is_some() {
            lock(&s.device_memory).remove(&p);
        }
        free(p);
    }
    if let Ok(p) = placed {
        if clashed.contains(&p) {
            uva_clash(call, p, size);
        } else if !clashed.is_empty() {
            tracing::debug!(
                "{call}: {} device addresses lay on the program's memory; allocated again",
                clashed.len()
            );
        }
    }
    placed
}

/// How many allocations lying on the program's memory `cuMemAlloc` makes
/// before it keeps one.
const PLACEMENT_TRIES: usize = 8;

/// Record device memory `call` gave the program, holding its pages; where
/// it lies on the program's memory, say so.
pub(super) fn keep_device_range(s: &Shim, call: &str, base: u64, range: DeviceRange) {
    if !lock(&s.device_memory).insert(base, range) {
        uva_clash(call, base, range.size);
    }
}

/// Say that device memory lies where the program has memory mapped: calls
/// that take either kind by address then take that memory for device
/// memory.
fn uva_clash(call: &str, base: u64, size: u64) {
    tracing::warn!(
        "{call}: device memory at {base:#x} ({size} bytes) lies where this process has memory mapped; \
         calls given an address of either kind take those addresses for device memory"
    );
}

pub unsafe fn mem_free(ptr: CUdeviceptr) -> CuResult {
    let s = shim()?;
    if ptr == 0 {
        return Ok(());
    }
    if let Some(done) = managed::free(s, ptr) {
        return done;
    }
    let range = take_allocation(s, ptr)?;
    s.remote.post(&Request::MemFree { ctx: range.ctx, ptr }, &[])
}

/// Forget the allocation at `ptr` (not a module global, not mapped
/// memory), which the program frees.
pub(super) fn take_allocation(s: &Shim, ptr: CUdeviceptr) -> CuResult<DeviceRange> {
    if managed::is_managed(ptr as usize) {
        return Err(CuError::INVALID_VALUE);
    }
    let mut map = lock(&s.device_memory);
    match map.get(&ptr) {
        Some(r) if r.kind == RangeKind::Allocated => map.remove(&ptr).ok_or(CuError::INVALID_VALUE),
        _ => Err(CuError::INVALID_VALUE),
    }
}

pub unsafe fn mem_get_info(free: *mut usize, total: *mut usize) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    match s.remote.call(&Request::MemGetInfo { ctx }, &[])? {
        Reply::MemInfo { free: f, total: t } => unsafe {
            out_opt(free, f as usize);
            out_opt(total, t as usize);
            Ok(())
        },
        _ => Err(CuError::UNKNOWN),
    }
}

/// Host memory from `cuMemAllocHost`/`cuMemHostAlloc` is ordinary client
/// memory, page-aligned; it is not pinned on the GPU server (the server
/// stages copies through pinned buffers of its own).
unsafe fn alloc_host(host: *mut *mut c_void, size: usize, flags: u32) -> CuResult {
    let s = shim()?;
    current_ctx()?;
    if host.is_null() || size == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: posix_memalign writes the new address into p.
    let rc = unsafe { libc::posix_memalign(&mut p, 4096, size) };
    if rc != 0 || p.is_null() {
        return Err(CuError::OUT_OF_MEMORY);
    }
    lock(&s.host_memory).insert(
        p as usize,
        state::HostRange {
            size,
            flags,
            registered: false,
        },
    );
    unsafe { out(host, p) }
}

pub unsafe fn mem_alloc_host(host: *mut *mut c_void, size: usize) -> CuResult {
    unsafe { alloc_host(host, size, 0) }
}

/// `CU_MEMHOSTALLOC_DEVICEMAP`: the program wants a device alias.
const MEMHOSTALLOC_DEVICEMAP: u32 = 0x02;

pub unsafe fn mem_host_alloc(host: *mut *mut c_void, size: usize, flags: u32) -> CuResult {
    if flags & !0x07 != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if flags & MEMHOSTALLOC_DEVICEMAP != 0 {
        tracing::debug!(
            "cuMemHostAlloc(DEVICEMAP): the memory is allocated, but kernels on the remote GPU cannot address it"
        );
    }
    unsafe { alloc_host(host, size, flags) }
}

pub unsafe fn mem_free_host(host: *mut c_void) -> CuResult {
    let s = shim()?;
    hostfns::settle_host_work(s);
    {
        let mut map = lock(&s.host_memory);
        match map.get(&(host as usize)) {
            Some(r) if !r.registered => map.remove(&(host as usize)),
            _ => return Err(CuError::INVALID_VALUE),
        };
    }
    // SAFETY: the pointer came from posix_memalign in alloc_host.
    unsafe { libc::free(host) };
    Ok(())
}

pub unsafe fn mem_host_get_device_pointer(_ptr: *mut CUdeviceptr, _host: *mut c_void, _flags: u32) -> CuResult {
    shim()?;
    // A GPU on another machine cannot address this process's memory.
    tracing::warn!("cuMemHostGetDevicePointer: host-mapped (zero-copy) memory cannot work over the network; returning CUDA_ERROR_NOT_SUPPORTED");
    Err(CuError::NOT_SUPPORTED)
}

/// `CUpointer_attribute` numbers.
mod pointer_attr {
    pub const CONTEXT: i32 = 1;
    pub const MEMORY_TYPE: i32 = 2;
    pub const DEVICE_POINTER: i32 = 3;
    pub const HOST_POINTER: i32 = 4;
    pub const SYNC_MEMOPS: i32 = 6;
    pub const BUFFER_ID: i32 = 7;
    pub const IS_MANAGED: i32 = 8;
    pub const DEVICE_ORDINAL: i32 = 9;
    pub const RANGE_START_ADDR: i32 = 11;
    pub const RANGE_SIZE: i32 = 12;
    pub const MAPPED: i32 = 13;
    pub const LEGACY_IPC_CAPABLE: i32 = 10;
    pub const ALLOWED_HANDLE_TYPES: i32 = 14;
    pub const GPU_DIRECT_RDMA_CAPABLE: i32 = 15;
    pub const ACCESS_FLAGS: i32 = 16;
    pub const HW_DECOMPRESS_CAPABLE: i32 = 21;
    pub const LOCALITY_DOMAIN_ORDINAL: i32 = 22;
    pub const ACCESS_FLAG_READWRITE: i32 = 3;
}

const MEMORYTYPE_HOST: u32 = 1;
const MEMORYTYPE_DEVICE: u32 = 2;

/// `cuPointerSetAttribute`: only `CU_POINTER_ATTRIBUTE_SYNC_MEMOPS` may be
/// set, on device memory. Synchronous copies and memsets through gpupool
/// always synchronise (they are answered once done), so the attribute
/// stays on, as `cuPointerGetAttribute` reports it, whatever is set.
pub unsafe fn pointer_set_attribute(value: *const c_void, attribute: i32, ptr: CUdeviceptr) -> CuResult {
    let s = shim()?;
    if value.is_null() || attribute != pointer_attr::SYNC_MEMOPS {
        return Err(CuError::INVALID_VALUE);
    }
    s.find_device_range(ptr, 0).ok_or(CuError::INVALID_VALUE)?;
    Ok(())
}

pub unsafe fn pointer_get_attribute(data: *mut c_void, attribute: i32, ptr: CUdeviceptr) -> CuResult {
    use pointer_attr::*;
    let s = shim()?;
    if data.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if let Some((base, r)) = s.find_device_range(ptr, 0) {
        return unsafe {
            match attribute {
                CONTEXT => out(data.cast::<*mut c_void>(), as_ptr(r.ctx)),
                MEMORY_TYPE => out(data.cast::<u32>(), MEMORYTYPE_DEVICE),
                DEVICE_POINTER => out(data.cast::<u64>(), ptr),
                HOST_POINTER if managed::is_managed(ptr as usize) => out(data.cast::<u64>(), ptr),
                HOST_POINTER => Err(CuError::INVALID_VALUE),
                SYNC_MEMOPS | MAPPED => out(data.cast::<i32>(), 1),
                BUFFER_ID => out(data.cast::<u64>(), base),
                IS_MANAGED => out(data.cast::<i32>(), managed::is_managed(ptr as usize) as i32),
                DEVICE_ORDINAL => out(data.cast::<i32>(), r.device),
                RANGE_START_ADDR => out(data.cast::<u64>(), base),
                RANGE_SIZE => out(data.cast::<usize>(), r.size as usize),
                // cuMemAlloc memory is shared by legacy IPC through the
                // server, as with the driver (NCCL reads this to tell it
                // from memory mapped with cuMemMap); nothing can be reached
                // by GPUDirect RDMA or decompression engines here.
                LEGACY_IPC_CAPABLE => out(data.cast::<i32>(), r.legacy_ipc as i32),
                GPU_DIRECT_RDMA_CAPABLE | HW_DECOMPRESS_CAPABLE => out(data.cast::<i32>(), 0),
                ALLOWED_HANDLE_TYPES => out(data.cast::<u64>(), 0),
                ACCESS_FLAGS => out(data.cast::<i32>(), ACCESS_FLAG_READWRITE),
                // Not localised to a locality domain.
                LOCALITY_DOMAIN_ORDINAL => out(data.cast::<i32>(), -1),
                _ => {
                    tracing::debug!(
                        attribute,
                        "cuPointerGetAttribute: attribute not served for device memory"
                    );
                    Err(CuError::NOT_SUPPORTED)
                }
            }
        };
    }
    if let Some((base, size)) = s.find_host_range(ptr as usize) {
        let device = state::current().map_or(0, |(_, d)| d);
        return unsafe {
            match attribute {
                CONTEXT => out(
                    data.cast::<*mut c_void>(),
                    state::current().map_or(std::ptr::null_mut(), |(c, _)| as_ptr(c)),
                ),
                MEMORY_TYPE => out(data.cast::<u32>(), MEMORYTYPE_HOST),
                HOST_POINTER => out(data.cast::<*mut c_void>(), ptr as usize as *mut c_void),
                DEVICE_POINTER => Err(CuError::NOT_SUPPORTED),
                IS_MANAGED => out(data.cast::<i32>(), 0),
                MAPPED => out(data.cast::<i32>(), 1),
                LEGACY_IPC_CAPABLE | GPU_DIRECT_RDMA_CAPABLE | HW_DECOMPRESS_CAPABLE => out(data.cast::<i32>(), 0),
                ALLOWED_HANDLE_TYPES => out(data.cast::<u64>(), 0),
                LOCALITY_DOMAIN_ORDINAL => out(data.cast::<i32>(), -1),
                DEVICE_ORDINAL => out(data.cast::<i32>(), device),
                BUFFER_ID => out(data.cast::<u64>(), base as u64),
                RANGE_START_ADDR => out(data.cast::<u64>(), base as u64),
                RANGE_SIZE => out(data.cast::<usize>(), size),
                _ => Err(CuError::NOT_SUPPORTED),
            }
        };
    }
    Err(CuError::INVALID_VALUE)
}

/// Bytes of a pointer attribute's value (`cuPointerGetAttributes` writes a
/// zero of this size for one that does not apply).
fn pointer_attribute_size(attribute: i32) -> usize {
    match attribute {
        // CUDA_POINTER_ATTRIBUTE_P2P_TOKENS
        5 => 16,
        // Memory type, and the int-valued flags and ordinals.
        2 | 6 | 8 | 9 | 10 | 13 | 15 | 16 | 21 | 22 => 4,
        _ => 8,
    }
}

/// `cuPointerGetAttributes`: each attribute as `cuPointerGetAttribute`
/// answers it; one that does not apply to the pointer (an unknown pointer
/// among them: CUDA's plural form does not fail for those) reads as zero.
pub unsafe fn pointer_get_attributes(
    count: u32,
    attributes: *const i32,
    data: *mut *mut c_void,
    ptr: CUdeviceptr,
) -> CuResult {
    shim()?;
    if count == 0 || attributes.is_null() || data.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    for i in 0..count as usize {
        // SAFETY: the caller passes `count` attributes and `count` slots
        // (API contract); both were checked for null.
        let (attribute, slot) = unsafe { (*attributes.add(i), *data.add(i)) };
        if slot.is_null() {
            continue;
        }
        // SAFETY: `slot` holds room for the attribute's value (API
        // contract).
        match unsafe { pointer_get_attribute(slot, attribute, ptr) } {
            Ok(()) => {}
            Err(e) if e == CuError::INVALID_VALUE || e == CuError::NOT_SUPPORTED => {
                // SAFETY: as above; the zero is the attribute's own size.
                unsafe { std::ptr::write_bytes(slot.cast::<u8>(), 0, pointer_attribute_size(attribute)) };
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

// ---- copies and memsets ----------------------------------------------------

/// The context owning `ptr..ptr+len`, or INVALID_VALUE when the range is not
/// inside one of the program's allocations.
fn device_range_ctx(s: &Shim, ptr: u64, len: u64) -> CuResult<Handle> {
    s.find_device_range(ptr, len).map(|(_, r)| r.ctx).ok_or_else(|| {
        tracing::debug!(
            ptr = format_args!("{ptr:#x}"),
            len,
            "device range outside the program's allocations"
        );
        CuError::INVALID_VALUE
    })
}

unsafe fn htod(
    mode: DefaultStream,
    dst: u64,
    src: *const c_void,
    size: usize,
    stream: CUstream,
    sync: bool,
) -> CuResult {
    let s = shim()?;
    if size == 0 {
        return Ok(());
    }
    if src.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if managed::is_managed(src as usize) {
        // Managed memory is device memory at the same address.
        return dtod(mode, dst, src as u64, size, stream, sync);
    }
    let ctx = match device_range_ctx(s, dst, size as u64) {
        Ok(ctx) => ctx,
        Err(_) if in_pinned_host_memory(s, dst, size as u64) => {
            return host_copy(mode, dst, src as u64, size, stream, sync);
        }
        Err(e) => return Err(e),
    };
    let ctx = ordering_ctx(s, stream, ctx)?;
    let stream = Shim::stream_ref(mode, handle(stream));
    refuse_if_capturing(s, stream)?;
    managed::settle_for(s, stream)?;
    match sync {
        true => before_sync(s, ctx, stream, true),
        false => before_reading(s, ctx, stream, src as usize),
    }
    // SAFETY: the program passed `size` readable bytes at src.
    let bytes = unsafe { std::slice::from_raw_parts(src.cast::<u8>(), size) };
    let chunks = bytes.len().div_ceil(COPY_CHUNK);
    for (i, chunk) in bytes.chunks(COPY_CHUNK).enumerate() {
        let req = Request::MemcpyHtoD {
            ctx,
            stream,
            dst,
            offset: (i * COPY_CHUNK) as u64,
            total: size as u64,
        };
        s.remote.call_or_post(&req, chunk, sync && i + 1 == chunks)?;
    }
    Ok(())
}

unsafe fn dtoh(mode: DefaultStream, dst: *mut c_void, src: u64, size: usize, stream: CUstream, sync: bool) -> CuResult {
    let s = shim()?;
    if size == 0 {
        return Ok(());
    }
    if dst.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if managed::is_managed(dst as usize) {
        return dtod(mode, dst as u64, src, size, stream, sync);
    }
    let ctx = match device_range_ctx(s, src, size as u64) {
        Ok(ctx) => ctx,
        Err(_) if in_pinned_host_memory(s, src, size as u64) => {
            return host_copy(mode, dst as u64, src, size, stream, sync);
        }
        Err(e) => return Err(e),
    };
    let ctx = ordering_ctx(s, stream, ctx)?;
    let stream = Shim::stream_ref(mode, handle(stream));
    refuse_if_capturing(s, stream)?;
    managed::settle_for(s, stream)?;
    let req = Request::MemcpyDtoH {
        ctx,
        stream,
        src,
        len: size as u64,
        sync,
    };
    let sink = Sink::linear(dst.cast(), size);
    // SAFETY (both): the program gave `size` writable bytes at dst, which
    // CUDA lets us fill until the copy is observed complete (a sync call
    // drains them).
    match sync {
        true => {
            before_sync(s, ctx, stream, true);
            unsafe { s.remote.call_into_sink(&req, sink, true) }
        }
        false => unsafe { stream_into(s, &req, ctx, stream, sink) },
    }
}

fn dtod(mode: DefaultStream, dst: u64, src: u64, size: usize, stream: CUstream, sync: bool) -> CuResult {
    let s = shim()?;
    if size == 0 {
        return Ok(());
    }
    let (to, from) = (
        device_range_ctx(s, dst, size as u64),
        device_range_ctx(s, src, size as u64),
    );
    let pinned = |r: &CuResult<Handle>, p: u64| r.is_err() && in_pinned_host_memory(s, p, size as u64);
    match (pinned(&to, dst), pinned(&from, src)) {
        (true, true) => return host_copy(mode, dst, src, size, stream, sync),
        // SAFETY (both): pinned host memory of the program, `size` bytes.
        (false, true) => return unsafe { htod(mode, dst, src as *const c_void, size, stream, sync) },
        (true, false) => return unsafe { dtoh(mode, dst as *mut c_void, src, size, stream, sync) },
        (false, false) => {}
    }
    from?;
    let ctx = ordering_ctx(s, stream, to?)?;
    let stream = Shim::stream_ref(mode, handle(stream));
    let req = Request::MemcpyDtoD {
        ctx,
        stream,
        dst,
        src,
        len: size as u64,
    };
    managed::settle_for(s, stream)?;
    before_sync(s, ctx, stream, sync);
    s.remote.call_or_post(&req, &[], sync)
}

fn memset(
    mode: DefaultStream,
    dst: u64,
    value: u32,
    elem_size: u8,
    count: usize,
    stream: CUstream,
    sync: bool,
) -> CuResult {
    let s = shim()?;
    if count == 0 {
        return Ok(());
    }
    if !dst.is_multiple_of(elem_size as u64) {
        return Err(CuError::INVALID_VALUE);
    }
    let bytes = (count as u64)
        .checked_mul(elem_size as u64)
        .ok_or(CuError::INVALID_VALUE)?;
    let ctx = match device_range_ctx(s, dst, bytes) {
        Ok(ctx) => ctx,
        Err(_) if in_pinned_host_memory(s, dst, bytes) => {
            let fill = hostfns::HostWork::Fill {
                dst,
                value,
                elem_size,
                count,
            };
            return hostfns::host_work(mode, stream, fill, sync);
        }
        Err(e) => return Err(e),
    };
    let ctx = ordering_ctx(s, stream, ctx)?;
    let stream = Shim::stream_ref(mode, handle(stream));
    let req = Request::Memset {
        ctx,
        stream,
        dst,
        value,
        elem_size,
        count: count as u64,
    };
    managed::settle_for(s, stream)?;
    before_sync(s, ctx, stream, sync);
    s.remote.call_or_post(&req, &[], sync)
}

/// Whether `ptr..ptr+len` lies in one range of the program's pinned host
/// memory, which with unified addressing the driver's memsets and copies
/// reach as device memory. Asked only of ranges that are no device memory
/// of the session (device memory comes first: the server's addresses are
/// another process's and may be the program's too).
fn in_pinned_host_memory(s: &Shim, ptr: u64, len: u64) -> bool {
    let Some(end) = ptr.checked_add(len) else {
        return false;
    };
    lock(&s.host_memory)
        .range(..=ptr as usize)
        .next_back()
        .is_some_and(|(base, r)| end <= *base as u64 + r.size as u64)
}

/// A copy between the program's memory and pinned host memory named as
/// device memory: done by the shim in stream order.
fn host_copy(mode: DefaultStream, dst: u64, src: u64, len: usize, stream: CUstream, sync: bool) -> CuResult {
    let copy = hostfns::HostWork::Copy { dst, src, len };
    hostfns::host_work(mode, stream, copy, sync)
}

pub unsafe fn memcpy_htod(mode: DefaultStream, dst: CUdeviceptr, src: *const c_void, size: usize) -> CuResult {
    unsafe { htod(mode, dst, src, size, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_htod_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    src: *const c_void,
    size: usize,
    stream: CUstream,
) -> CuResult {
    unsafe { htod(mode, dst, src, size, stream, false) }
}

pub unsafe fn memcpy_dtoh(mode: DefaultStream, dst: *mut c_void, src: CUdeviceptr, size: usize) -> CuResult {
    unsafe { dtoh(mode, dst, src, size, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_dtoh_async(
    mode: DefaultStream,
    dst: *mut c_void,
    src: CUdeviceptr,
    size: usize,
    stream: CUstream,
) -> CuResult {
    unsafe { dtoh(mode, dst, src, size, stream, false) }
}

pub unsafe fn memcpy_dtod(mode: DefaultStream, dst: CUdeviceptr, src: CUdeviceptr, size: usize) -> CuResult {
    dtod(mode, dst, src, size, std::ptr::null_mut(), true)
}

pub unsafe fn memcpy_dtod_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    size: usize,
    stream: CUstream,
) -> CuResult {
    dtod(mode, dst, src, size, stream, false)
}

/// A copy between memory of two contexts (`cuMemcpyPeer`): each range must
/// be of its context; the server's driver copies between them (staged
/// through the server's memory where its GPUs have no link).
#[allow(clippy::too_many_arguments)]
fn peer_copy(
    mode: DefaultStream,
    dst: u64,
    dst_ctx: CUcontext,
    src: u64,
    src_ctx: CUcontext,
    size: usize,
    stream: CUstream,
    sync: bool,
) -> CuResult {
    let s = shim()?;
    for ctx in [dst_ctx, src_ctx] {
        if !read(&s.contexts).contains_key(&handle(ctx)) {
            return Err(CuError::INVALID_CONTEXT);
        }
    }
    if size == 0 {
        return Ok(());
    }
    if device_range_ctx(s, dst, size as u64)? != handle(dst_ctx)
        || device_range_ctx(s, src, size as u64)? != handle(src_ctx)
    {
        return Err(CuError::INVALID_VALUE);
    }
    dtod(mode, dst, src, size, stream, sync)
}

pub unsafe fn memcpy_peer(
    mode: DefaultStream,
    dst: CUdeviceptr,
    dst_ctx: CUcontext,
    src: CUdeviceptr,
    src_ctx: CUcontext,
    size: usize,
) -> CuResult {
    peer_copy(mode, dst, dst_ctx, src, src_ctx, size, std::ptr::null_mut(), true)
}

pub unsafe fn memcpy_peer_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    dst_ctx: CUcontext,
    src: CUdeviceptr,
    src_ctx: CUcontext,
    size: usize,
    stream: CUstream,
) -> CuResult {
    peer_copy(mode, dst, dst_ctx, src, src_ctx, size, stream, false)
}

pub unsafe fn memset_d8(mode: DefaultStream, dst: CUdeviceptr, value: u8, count: usize) -> CuResult {
    memset(mode, dst, value as u32, 1, count, std::ptr::null_mut(), true)
}

pub unsafe fn memset_d16(mode: DefaultStream, dst: CUdeviceptr, value: u16, count: usize) -> CuResult {
    memset(mode, dst, value as u32, 2, count, std::ptr::null_mut(), true)
}

pub unsafe fn memset_d32(mode: DefaultStream, dst: CUdeviceptr, value: u32, count: usize) -> CuResult {
    memset(mode, dst, value, 4, count, std::ptr::null_mut(), true)
}

pub unsafe fn memset_d8_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    value: u8,
    count: usize,
    stream: CUstream,
) -> CuResult {
    memset(mode, dst, value as u32, 1, count, stream, false)
}

pub unsafe fn memset_d16_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    value: u16,
    count: usize,
    stream: CUstream,
) -> CuResult {
    memset(mode, dst, value as u32, 2, count, stream, false)
}

pub unsafe fn memset_d32_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    value: u32,
    count: usize,
    stream: CUstream,
) -> CuResult {
    memset(mode, dst, value, 4, count, stream, false)
}

// ---- streams and events -----------------------------------------------------

unsafe fn create_stream(stream: *mut CUstream, flags: u32, priority: i32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if stream.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // CU_STREAM_DEFAULT or CU_STREAM_NON_BLOCKING: checked here, as the
    // driver would, since the creation itself does not wait.
    if flags & !1 != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // Named here and created on the server without a round trip; an error
    // creating it comes back at the next synchronising call.
    let id = new_client_handle();
    s.remote.post(
        &Request::StreamCreate {
            ctx,
            flags,
            priority,
            id,
        },
        &[],
    )?;
    // SAFETY: stream was checked for null; the caller passes a writable slot.
    unsafe { file_stream(s, stream, id, ctx, flags, priority) }
}

/// File a stream the server was asked to make and hand its name out.
///
/// # Safety
/// `stream` is a writable, non-NULL slot.
unsafe fn file_stream(s: &Shim, stream: *mut CUstream, id: Handle, ctx: Handle, flags: u32, priority: i32) -> CuResult {
    // The driver clamps a priority to the range it reports (0 to -5).
    let info = state::StreamInfo {
        ctx,
        flags,
        priority: priority.clamp(-5, 0),
    };
    write(&s.streams).insert(id, info);
    unsafe { out(stream, as_ptr(id)) }
}

/// `new_client_handle`, for the tests of the handles' ranges.
#[cfg(test)]
pub(crate) fn new_client_handle_for_tests() -> Handle {
    new_client_handle()
}

/// A new name for a stream or event the shim creates without waiting:
/// aligned as the driver's pointers are (PyTorch takes a foreign stream's
/// address as its stream id, which must be even).
fn new_client_handle() -> Handle {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(1);
    gpupool_proto::message::CLIENT_HANDLE_TAG | ((NEXT.fetch_add(1, Ordering::Relaxed) << 4) & 0xffff_ffff_fff0)
}

pub unsafe fn stream_create(stream: *mut CUstream, flags: u32) -> CuResult {
    unsafe { create_stream(stream, flags, 0) }
}

pub unsafe fn stream_create_with_priority(stream: *mut CUstream, flags: u32, priority: i32) -> CuResult {
    unsafe { create_stream(stream, flags, priority) }
}

/// The context a copy or memset on `stream` runs in: a stream the
/// program made runs its work in its own context ([`stream_ctx`]), which
/// need not be that of the memory (PyTorch copies from one GPU to another
/// on the source GPU's stream); the built-in streams, in the memory's
/// (`range_ctx`).
fn ordering_ctx(s: &Shim, stream: CUstream, range_ctx: Handle) -> CuResult<Handle> {
    if handle(stream) <= 2 {
        return Ok(range_ctx);
    }
    stream_ctx(s, stream)
}

/// The context a stream belongs to (the current one for default streams).
fn stream_ctx(s: &Shim, stream: CUstream) -> CuResult<Handle> {
    let h = handle(stream);
    match read(&s.streams).get(&h) {
        Some(info) => Ok(info.ctx),
        None if h <= 2 => current_ctx(),
        None => Err(CuError::INVALID_HANDLE),
    }
}

pub unsafe fn stream_destroy(stream: CUstream) -> CuResult {
    let s = shim()?;
    let h = handle(stream);
    let ctx = write(&s.streams).remove(&h).ok_or(CuError::INVALID_HANDLE)?.ctx;
    lock(&s.captures).remove(&StreamRef::Handle(h));
    s.callbacks.forget_stream((ctx, StreamRef::Handle(h)));
    s.remote.post(&Request::StreamDestroy { ctx, stream: h }, &[])
}

pub unsafe fn stream_synchronize(mode: DefaultStream, stream: CUstream) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let stream = Shim::stream_ref(mode, handle(stream));
    s.remote.call(&Request::StreamSynchronize { ctx, stream }, &[])?;
    s.callbacks.wait_stream((ctx, stream));
    Ok(())
}

pub unsafe fn stream_query(mode: DefaultStream, stream: CUstream) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let stream = Shim::stream_ref(mode, handle(stream));
    s.remote.call(&Request::StreamQuery { ctx, stream }, &[])?;
    s.callbacks.query_stream((ctx, stream))
}

/// A stream that waits for an event recorded in a capture joins the
/// capture (the driver's rule; PyTorch's allocator asks whether side streams
/// capture, to keep their memory in the graph's pool).
pub unsafe fn stream_wait_event(mode: DefaultStream, stream: CUstream, event: CUevent, flags: u32) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    s.remote.post(
        &Request::StreamWaitEvent {
            ctx,
            stream: sref,
            event: handle(event),
            flags,
        },
        &[],
    )?;
    s.callbacks.waits((ctx, sref), blocking(s, sref), handle(event));
    let joined = lock(&s.capture_events).get(&handle(event)).copied();
    if let Some(id) = joined {
        let mut captures = lock(&s.captures);
        if captures.values().any(|c| c.id == id) {
            captures.entry(sref).or_insert(state::Capture {
                id,
                invalidated: false,
                into: None,
            });
        }
    }
    Ok(())
}

/// `CUstreamCaptureStatus`: none, active, invalidated.
const CAPTURE_NONE: i32 = 0;
const CAPTURE_ACTIVE: i32 = 1;
const CAPTURE_INVALIDATED: i32 = 2;

/// The capture `stream` is in, if it captures.
fn capture_of(s: &Shim, stream: StreamRef) -> Option<state::Capture> {
    lock(&s.captures).get(&stream).copied()
}

fn capture_id(s: &Shim, mode: DefaultStream, stream: CUstream) -> Option<u64> {
    capture_of(s, Shim::stream_ref(mode, handle(stream))).map(|c| c.id)
}

/// Copies between the program's memory and the device cannot be captured:
/// a graph replayed on the server cannot reach the program's buffers. On a
/// capturing stream they fail at once, and the capture fails when it ends.
fn refuse_if_capturing(s: &Shim, stream: StreamRef) -> CuResult {
    match lock(&s.captures).get_mut(&stream) {
        Some(c) => {
            c.invalidated = true;
            Err(CuError::STREAM_CAPTURE_UNSUPPORTED)
        }
        None => Ok(()),
    }
}

/// Answered here from the captures the shim began.
pub unsafe fn stream_is_capturing(mode: DefaultStream, stream: CUstream, status: *mut i32) -> CuResult {
    let s = shim()?;
    stream_ctx(s, stream)?;
    let v = match capture_of(s, Shim::stream_ref(mode, handle(stream))) {
        None => CAPTURE_NONE,
        Some(c) if c.invalidated => CAPTURE_INVALIDATED,
        Some(_) => CAPTURE_ACTIVE,
    };
    unsafe { out(status, v) }
}

pub unsafe fn stream_get_capture_info(
    mode: DefaultStream,
    stream: CUstream,
    status: *mut i32,
    id: *mut u64,
) -> CuResult {
    unsafe {
        stream_is_capturing(mode, stream, status)?;
        out_opt(id, shim().ok().and_then(|s| capture_id(s, mode, stream)).unwrap_or(0));
    }
    Ok(())
}

pub unsafe fn stream_get_capture_info_v2(
    mode: DefaultStream,
    stream: CUstream,
    status: *mut i32,
    id: *mut u64,
    graph: *mut *mut c_void,
    deps: *mut *const c_void,
    count: *mut usize,
) -> CuResult {
    unsafe { stream_get_capture_info_v3(mode, stream, status, id, graph, deps, std::ptr::null_mut(), count) }
}

/// `cuStreamBeginCapture_v2`: a round trip, so that a stream that cannot
/// capture says so here.
pub unsafe fn stream_begin_capture(mode: DefaultStream, stream: CUstream, capture_mode: u32) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    s.remote.call(
        &Request::StreamBeginCapture {
            ctx,
            stream: sref,
            mode: capture_mode,
        },
        &[],
    )?;
    let id = new_capture_id();
    lock(&s.captures).insert(
        sref,
        state::Capture {
            id,
            invalidated: false,
            into: None,
        },
    );
    Ok(())
}

/// A capture's id, unique in the process (`cuStreamGetCaptureInfo`).
fn new_capture_id() -> u64 {
    static NEXT_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    NEXT_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `cuStreamBeginCaptureToGraph`: the capture's work joins `graph`, after
/// its nodes `deps` (default edges only).
pub unsafe fn stream_begin_capture_to_graph(
    mode: DefaultStream,
    stream: CUstream,
    graph: *mut c_void,
    deps: *const *mut c_void,
    edges: *const u64,
    count: usize,
    capture_mode: u32,
) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let g = handle(graph);
    if graph_ctx(s, g)? != ctx {
        return Err(CuError::INVALID_VALUE);
    }
    let deps = unsafe { graphs::edges_to(deps, edges, count) }?;
    let sref = Shim::stream_ref(mode, handle(stream));
    let request = Request::StreamBeginCaptureToGraph {
        ctx,
        stream: sref,
        graph: g,
        deps,
        mode: capture_mode,
    };
    s.remote.call(&request, &[])?;
    let id = new_capture_id();
    let capture = state::Capture {
        id,
        invalidated: false,
        into: Some(g),
    };
    lock(&s.captures).insert(sref, capture);
    Ok(())
}

/// The first `cuStreamBeginCapture`, without a mode: global.
pub unsafe fn stream_begin_capture_v1(mode: DefaultStream, stream: CUstream) -> CuResult {
    unsafe { stream_begin_capture(mode, stream, 0) }
}

pub unsafe fn stream_end_capture(mode: DefaultStream, stream: CUstream, graph: *mut *mut c_void) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    // A capture into the program's graph may leave the graph unanswered
    // (PyTorch ends a conditional node's body so); another must take it.
    if graph.is_null() && lock(&s.captures).get(&sref).is_none_or(|c| c.into.is_none()) {
        return Err(CuError::INVALID_VALUE);
    }
    // The capture ends on the server whatever it answers.
    let reply = s.remote.call(&Request::StreamEndCapture { ctx, stream: sref }, &[]);
    // The streams that joined it leave it with it.
    let capture = {
        let mut captures = lock(&s.captures);
        captures.remove(&sref).map(|origin| {
            let mut invalidated = origin.invalidated;
            captures.retain(|_, c| {
                let joined = c.id == origin.id;
                invalidated |= joined && c.invalidated;
                !joined
            });
            state::Capture { invalidated, ..origin }
        })
    };
    if let Some(c) = capture {
        lock(&s.capture_events).retain(|_, id| *id != c.id);
    }
    let made = match (&reply, capture) {
        (Ok(Reply::Handle(g)), Some(c)) if !c.invalidated => Some(*g),
        _ => None,
    };
    if let Some(c) = capture {
        hostnodes::capture_ended(c.id, made);
        // The graph the program saw under way goes with a failed capture.
        if let Some(seen) = captureinfo::ended(c.id, sref).filter(|_| made.is_none() && c.into.is_none()) {
            write(&s.graphs).remove(&seen);
            graphs::forget(seen);
        }
    }
    if capture.is_some_and(|c| c.invalidated) {
        // A graph captured into is the program's, and stays.
        if let (Ok(Reply::Handle(graph)), None) = (reply, capture.and_then(|c| c.into)) {
            s.remote.post(&Request::GraphDestroy { ctx, graph }, &[])?;
        }
        return Err(CuError::STREAM_CAPTURE_INVALIDATED);
    }
    if let Some(g) = capture.and_then(|c| c.into) {
        // The graph has the captured nodes too: listed again, so that the
        // nodes known here are all of them.
        reply?;
        graphs::list_captured(s, ctx, g)?;
        unsafe { out_opt(graph, as_ptr(g)) };
        return Ok(());
    }
    match reply? {
        Reply::Handle(g) => {
            write(&s.graphs).insert(g, ctx);
            unsafe { out(graph, as_ptr(g)) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

thread_local! {
    /// This thread's stream capture mode (`CUstreamCaptureMode`, global by default).
    static CAPTURE_MODE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// `cuThreadExchangeStreamCaptureMode`: kept per thread here; a change is
/// streamed to the server, which runs the client's calls under it. (The
/// server runs all of a client's threads on one thread, so the mode is the
/// last one any of them set.)
pub unsafe fn thread_exchange_stream_capture_mode(mode: *mut u32) -> CuResult {
    let s = shim()?;
    if mode.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-null, and readable by the API contract.
    let new = unsafe { *mode };
    if new > 2 {
        return Err(CuError::INVALID_VALUE);
    }
    let old = CAPTURE_MODE.with(|m| m.replace(new));
    if old != new {
        s.remote.post(&Request::SetCaptureMode { mode: new }, &[])?;
    }
    unsafe { out(mode, old) }
}

/// The context of a graph or executable graph this process holds.
fn graph_ctx(s: &Shim, graph: Handle) -> CuResult<Handle> {
    read(&s.graphs).get(&graph).copied().ok_or(CuError::INVALID_VALUE)
}

pub unsafe fn graph_instantiate_with_flags(exec: *mut *mut c_void, graph: *mut c_void, flags: u64) -> CuResult {
    let s = shim()?;
    if exec.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let graph = handle(graph);
    let ctx = graph_ctx(s, graph)?;
    match s.remote.call(&Request::GraphInstantiate { ctx, graph, flags }, &[])? {
        Reply::Handle(e) => {
            write(&s.graphs).insert(e, ctx);
            hostnodes::copy(graph, e);
            userobjects::copied(graph, e);
            graphedit::instantiated(e, flags);
            unsafe { out(exec, as_ptr(e)) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

/// `cuGraphInstantiate` (and `_v2`) of CUDA 11: no flags; no error node
/// and an empty log are given back.
pub unsafe fn graph_instantiate(
    exec: *mut *mut c_void,
    graph: *mut c_void,
    error_node: *mut *mut c_void,
    log: *mut c_char,
    log_size: usize,
) -> CuResult {
    unsafe {
        out_opt(error_node, std::ptr::null_mut());
        if !log.is_null() && log_size > 0 {
            *log = 0;
        }
        graph_instantiate_with_flags(exec, graph, 0)
    }
}

/// `CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD`: upload on `upload_stream` as part
/// of the instantiation.
const INSTANTIATE_FLAG_UPLOAD: u64 = 2;

pub unsafe fn graph_instantiate_with_params(
    mode: DefaultStream,
    exec: *mut *mut c_void,
    graph: *mut c_void,
    params: *mut CUgraphInstantiateParams,
) -> CuResult {
    if params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-null, and valid for reads and writes by the API contract.
    let p = unsafe { &mut *params };
    p.error_node = std::ptr::null_mut();
    let upload_stream = p.upload_stream;
    let r = unsafe { graph_instantiate_with_flags(exec, graph, p.flags & !INSTANTIATE_FLAG_UPLOAD) }.and_then(|()| {
        if p.flags & INSTANTIATE_FLAG_UPLOAD != 0 {
            // SAFETY: exec was just written.
            unsafe { graph_upload(mode, *exec, upload_stream) }
        } else {
            Ok(())
        }
    });
    if r.is_ok() {
        // SAFETY: exec was just written.
        graphedit::instantiated(handle(unsafe { *exec }), p.flags);
    }
    // CUDA_GRAPH_INSTANTIATE_SUCCESS or _ERROR.
    p.result = u32::from(r.is_err());
    r
}

pub unsafe fn graph_launch(mode: DefaultStream, exec: *mut c_void, stream: CUstream) -> CuResult {
    post_graph_work(mode, exec, stream, true, |ctx, exec, stream| Request::GraphLaunch {
        ctx,
        exec,
        stream,
    })
}

pub unsafe fn graph_upload(mode: DefaultStream, exec: *mut c_void, stream: CUstream) -> CuResult {
    post_graph_work(mode, exec, stream, false, |ctx, exec, stream| Request::GraphUpload {
        ctx,
        exec,
        stream,
    })
}

/// Stream work of an executable graph on `stream`, as `request` makes it;
/// a `launch` runs the graph's host nodes.
fn post_graph_work(
    mode: DefaultStream,
    exec: *mut c_void,
    stream: CUstream,
    launch: bool,
    request: impl FnOnce(Handle, Handle, StreamRef) -> Request,
) -> CuResult {
    let s = shim()?;
    let exec = handle(exec);
    let ctx = graph_ctx(s, exec)?;
    let stream_ptr = stream;
    let stream = Shim::stream_ref(mode, handle(stream));
    managed::settle_for(s, stream)?;
    if launch {
        hostnodes::before_launch(s, ctx, exec, stream)?;
    }
    s.remote.post(&request(ctx, exec, stream), &[])?;
    if launch {
        userobjects::launched(exec, mode, stream_ptr);
    }
    Ok(())
}

/// `cuGraphGetNodes`. A captured graph's count is the server's (one round
/// trip: PyTorch asks it to warn of an empty capture); its nodes, when
/// asked for, are listed by the server once and known here from then on.
pub unsafe fn graph_get_nodes(graph: *mut c_void, nodes: *mut *mut c_void, count: *mut usize) -> CuResult {
    let s = shim()?;
    if count.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let known = match graphs::nodes_of(handle(graph)) {
        None if !nodes.is_null() => Some(graphs::list_captured(s, graph_ctx(s, handle(graph))?, handle(graph))?),
        known => known,
    };
    if let Some(list) = known {
        // A graph the program built: its nodes are known here.
        if !nodes.is_null() {
            // SAFETY: the program passes room for `*count` nodes (API
            // contract); the rest of that room is set to null.
            let room = unsafe { *count };
            for i in 0..room {
                let n = list.get(i).map_or(std::ptr::null_mut(), |h| as_ptr(*h));
                unsafe { nodes.add(i).write(n) };
            }
            return unsafe { out(count, list.len().min(room)) };
        }
        return unsafe { out(count, list.len()) };
    }
    let graph = handle(graph);
    let ctx = graph_ctx(s, graph)?;
    match s.remote.call(&Request::GraphNodeCount { ctx, graph }, &[])? {
        Reply::Size(n) => unsafe { out(count, n as usize) },
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn graph_exec_destroy(exec: *mut c_void) -> CuResult {
    let s = shim()?;
    let exec = handle(exec);
    let ctx = write(&s.graphs).remove(&exec).ok_or(CuError::INVALID_VALUE)?;
    hostnodes::forget(exec);
    graphedit::forget(exec);
    userobjects::exec_gone(s, exec);
    s.remote.post(&Request::GraphExecDestroy { ctx, exec }, &[])
}

pub unsafe fn graph_destroy(graph: *mut c_void) -> CuResult {
    let s = shim()?;
    let graph = handle(graph);
    // A conditional node's body goes with the graph holding the node.
    if conditionals::is_body(graph) {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = write(&s.graphs).remove(&graph).ok_or(CuError::INVALID_VALUE)?;
    for g in std::iter::once(graph).chain(conditionals::forget(graph)) {
        write(&s.graphs).remove(&g);
        graphedit::forget(g);
        userobjects::graph_gone(g);
        graphs::forget(g);
        hostnodes::forget(g);
    }
    s.remote.post(&Request::GraphDestroy { ctx, graph }, &[])
}

pub unsafe fn event_create(event: *mut CUevent, flags: u32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if event.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // CU_EVENT_BLOCKING_SYNC | DISABLE_TIMING | INTERPROCESS, and an
    // interprocess event must not time (the driver's own checks).
    if flags & !0x7 != 0 || (flags & 0x4 != 0 && flags & 0x2 == 0) {
        return Err(CuError::INVALID_VALUE);
    }
    let id = new_client_handle();
    s.remote.post(&Request::EventCreate { ctx, flags, id }, &[])?;
    completions::created(s, id, flags);
    // SAFETY: event was checked for null; the caller passes a writable slot.
    unsafe { out(event, as_ptr(id)) }
}

fn event_ctx() -> Handle {
    state::current().map_or(0, |(c, _)| c)
}

pub unsafe fn event_destroy(event: CUevent) -> CuResult {
    let s = shim()?;
    s.callbacks.forget_event(handle(event));
    completions::destroyed(s, handle(event));
    s.remote.post(
        &Request::EventDestroy {
            ctx: event_ctx(),
            event: handle(event),
        },
        &[],
    )
}

/// `cuEventRecordWithFlags`: outside stream capture, CU_EVENT_RECORD_EXTERNAL
/// (1) records as plain `cuEventRecord` does (gpupool does not capture).
pub unsafe fn event_record_with_flags(mode: DefaultStream, event: CUevent, stream: CUstream, flags: u32) -> CuResult {
    if flags & !1 != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: same contract as cuEventRecord.
    unsafe { event_record(mode, event, stream) }
}

pub unsafe fn event_elapsed_time(ms: *mut f32, start: CUevent, end: CUevent) -> CuResult {
    let s = shim()?;
    if ms.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    match s.remote.call(
        &Request::EventElapsedTime {
            ctx: event_ctx(),
            start: handle(start),
            end: handle(end),
        },
        &[],
    )? {
        Reply::Float(v) => unsafe { out(ms, v) },
        _ => Err(CuError::UNKNOWN),
    }
}

// ---- launches ----------------------------------------------------------------

/// `CU_LAUNCH_PARAM_*` markers of the `extra` list.
const LAUNCH_PARAM_END: usize = 0x00;
const LAUNCH_PARAM_BUFFER_POINTER: usize = 0x01;
const LAUNCH_PARAM_BUFFER_SIZE: usize = 0x02;

/// Most bytes of kernel parameters the driver accepts (CUDA 12.1+).
const MAX_PARAM_BYTES: usize = 32764;

/// Pack a launch's arguments into one block laid out by the function's
/// parameter offsets, from either `kernelParams` or `extra`.
unsafe fn pack_params(
    s: &Shim,
    func: Handle,
    kernel: bool,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult<Vec<u8>> {
    if !params.is_null() {
        let layout = param_layout(s, func, kernel)?;
        let size = layout.iter().map(|&(o, n)| (o + n) as usize).max().unwrap_or(0);
        let mut block = vec![0u8; size];
        for (i, &(o, n)) in layout.iter().enumerate() {
            // SAFETY: kernelParams holds one pointer per parameter.
            let arg = unsafe { *params.add(i) };
            if arg.is_null() {
                return Err(CuError::INVALID_VALUE);
            }
            // SAFETY: each argument pointer addresses the parameter's n bytes.
            let src = unsafe { std::slice::from_raw_parts(arg.cast::<u8>(), n as usize) };
            block[o as usize..(o + n) as usize].copy_from_slice(src);
        }
        return Ok(block);
    }
    if extra.is_null() {
        // A kernel without parameters.
        let layout = param_layout(s, func, kernel)?;
        return if layout.is_empty() {
            Ok(Vec::new())
        } else {
            Err(CuError::INVALID_VALUE)
        };
    }
    let (mut buffer, mut size): (*const u8, Option<usize>) = (std::ptr::null(), None);
    for i in (0..64).step_by(2) {
        // SAFETY: `extra` is a key/value list ended by CU_LAUNCH_PARAM_END.
        let key = unsafe { *extra.add(i) } as usize;
        match key {
            LAUNCH_PARAM_END => break,
            LAUNCH_PARAM_BUFFER_POINTER => buffer = unsafe { *extra.add(i + 1) }.cast(),
            LAUNCH_PARAM_BUFFER_SIZE => {
                let p = unsafe { *extra.add(i + 1) }.cast::<usize>();
                if p.is_null() {
                    return Err(CuError::INVALID_VALUE);
                }
                // SAFETY: the size entry points at a size_t.
                size = Some(unsafe { p.read_unaligned() });
            }
            _ => return Err(CuError::INVALID_VALUE),
        }
    }
    let size = size.ok_or(CuError::INVALID_VALUE)?;
    if buffer.is_null() || size > MAX_PARAM_BYTES {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the buffer entry points at `size` bytes of packed parameters.
    Ok(unsafe { std::slice::from_raw_parts(buffer, size) }.to_vec())
}

/// Device attributes bounding a launch: threads per block, block and grid
/// dimensions.
const ATTR_MAX_THREADS_PER_BLOCK: i32 = 1;
const ATTR_MAX_BLOCK_DIM: [i32; 3] = [2, 3, 4];
const ATTR_MAX_GRID_DIM: [i32; 3] = [5, 6, 7];

/// Refuse a launch configuration the device cannot run, at the call, as the
/// driver does (rather than at the next synchronise).
fn check_launch_dims(s: &Shim, ctx: Handle, grid: [u32; 3], block: [u32; 3]) -> CuResult {
    let device = s.context_device(ctx)?;
    let limit = |attr| s.attribute(device, attr).ok().map(|v| v as u64);
    let threads: u64 = block.iter().map(|&b| b as u64).product();
    let over = |v: u32, attr| limit(attr).is_some_and(|l| v as u64 > l);
    if limit(ATTR_MAX_THREADS_PER_BLOCK).is_some_and(|l| threads > l)
        || (0..3).any(|i| over(block[i], ATTR_MAX_BLOCK_DIM[i]) || over(grid[i], ATTR_MAX_GRID_DIM[i]))
    {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
unsafe fn launch(
    mode: DefaultStream,
    function: CUfunction,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    stream: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    attrs: Vec<(u32, Vec<u8>)>,
) -> CuResult {
    let s = shim()?;
    let func = handle(function);
    check_launch_args(func, grid, block, params, extra)?;
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    let (launch, block_bytes) =
        unsafe { packed_launch(s, ctx, func, grid, block, shared_mem, params, extra, sref, attrs)? };
    managed::settle_for(s, launch.stream)?;
    // Under CUDA_LAUNCH_BLOCKING=1 the server's driver runs each launch to
    // its end and answers the kernel's error, which the launch returns.
    s.remote
        .call_or_post(&Request::Launch(launch), &block_bytes, config::launch_blocking())
}

/// What a launch's arguments must be before anything else is looked at.
fn check_launch_args(
    func: Handle,
    grid: [u32; 3],
    block: [u32; 3],
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    if func == 0 || grid.contains(&0) || block.contains(&0) || (!params.is_null() && !extra.is_null()) {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(())
}

/// A launch of `func` in `ctx`, its dimensions checked against the device
/// and its parameters packed by the function's layout: what a launch, a
/// graph's kernel node and a change of one send.
///
/// # Safety
/// `params` / `extra` follow the launch contract.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn packed_launch(
    s: &Shim,
    ctx: Handle,
    func: Handle,
    grid: [u32; 3],
    block: [u32; 3],
    shared_mem: u32,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
    stream: StreamRef,
    attrs: Vec<(u32, Vec<u8>)>,
) -> CuResult<(Launch, Vec<u8>)> {
    let kernel = is_kernel(s, func);
    check_launch_dims(s, ctx, grid, block)?;
    let block_bytes = unsafe { pack_params(s, func, kernel, params, extra)? };
    let launch = Launch {
        ctx,
        func: resolve(s, func)?,
        kernel,
        grid,
        block,
        shared_mem,
        stream,
        attrs,
    };
    Ok((launch, block_bytes))
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_kernel(
    mode: DefaultStream,
    function: CUfunction,
    grid_x: u32,
    grid_y: u32,
    grid_z: u32,
    block_x: u32,
    block_y: u32,
    block_z: u32,
    shared_mem: u32,
    stream: CUstream,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    unsafe {
        launch(
            mode,
            function,
            [grid_x, grid_y, grid_z],
            [block_x, block_y, block_z],
            shared_mem,
            stream,
            params,
            extra,
            Vec::new(),
        )
    }
}

/// Most launch attributes a config may carry.
const MAX_LAUNCH_ATTRS: u32 = 64;

unsafe fn launch_attrs(config: &CUlaunchConfig) -> CuResult<Vec<(u32, Vec<u8>)>> {
    if config.num_attrs == 0 {
        return Ok(Vec::new());
    }
    if config.attrs.is_null() || config.num_attrs > MAX_LAUNCH_ATTRS {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: attrs points at num_attrs launch attributes.
    let attrs = unsafe { std::slice::from_raw_parts(config.attrs, config.num_attrs as usize) };
    Ok(attrs.iter().map(|a| (a.id, a.value.to_vec())).collect())
}

/// `CU_LAUNCH_ATTRIBUTE_COOPERATIVE`.
const LAUNCH_ATTRIBUTE_COOPERATIVE: u32 = 2;
/// `CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT`.
const MULTIPROCESSOR_COUNT: i32 = 16;

/// The blocks of a cooperative launch must all be resident at once. The
/// driver refuses one too large at the call; the shim does the same from
/// the occupancy answer (one round trip the first time, then cached), so
/// that the refusal does not wait for the next synchronise.
fn check_cooperative(function: CUfunction, grid: [u32; 3], block: [u32; 3], shared_mem: u32) -> CuResult {
    let s = shim()?;
    let (_, device) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    let threads: u64 = block.iter().map(|&b| b as u64).product();
    let blocks: u64 = grid.iter().map(|&g| g as u64).product();
    let query = OccupancyQuery::MaxActiveBlocksPerMultiprocessor {
        block_size: i32::try_from(threads).map_err(|_| CuError::INVALID_VALUE)?,
        dynamic_smem: shared_mem as u64,
        flags: 0,
    };
    let per_sm = int_reply(occupancy(function, query)?)?.max(0) as u64;
    let sms = s.attribute(device, MULTIPROCESSOR_COUNT)?.max(0) as u64;
    if blocks > per_sm * sms {
        return Err(CuError::COOPERATIVE_LAUNCH_TOO_LARGE);
    }
    Ok(())
}

/// `cuLaunchCooperativeKernel`: a launch with the cooperative attribute.
#[allow(clippy::too_many_arguments)]
pub unsafe fn launch_cooperative_kernel(
    mode: DefaultStream,
    function: CUfunction,
    grid_x: u32,
    grid_y: u32,
    grid_z: u32,
    block_x: u32,
    block_y: u32,
    block_z: u32,
    shared_mem: u32,
    stream: CUstream,
    params: *mut *mut c_void,
) -> CuResult {
    let (grid, block) = ([grid_x, grid_y, grid_z], [block_x, block_y, block_z]);
    check_cooperative(function, grid, block, shared_mem)?;
    let mut value = vec![0u8; 64];
    value[..4].copy_from_slice(&1i32.to_le_bytes());
    let attrs = vec![(LAUNCH_ATTRIBUTE_COOPERATIVE, value)];
    unsafe {
        launch(
            mode,
            function,
            grid,
            block,
            shared_mem,
            stream,
            params,
            std::ptr::null_mut(),
            attrs,
        )
    }
}

pub unsafe fn launch_kernel_ex(
    mode: DefaultStream,
    config: *const CUlaunchConfig,
    function: CUfunction,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    if config.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-null, and the API passes a CUlaunchConfig.
    let c = unsafe { &*config };
    let attrs = unsafe { launch_attrs(c)? };
    let cooperative = attrs
        .iter()
        .any(|(id, v)| *id == LAUNCH_ATTRIBUTE_COOPERATIVE && v.get(..4).is_some_and(|b| b != [0; 4]));
    if cooperative {
        check_cooperative(
            function,
            [c.grid_dim_x, c.grid_dim_y, c.grid_dim_z],
            [c.block_dim_x, c.block_dim_y, c.block_dim_z],
            c.shared_mem_bytes,
        )?;
    }
    unsafe {
        launch(
            mode,
            function,
            [c.grid_dim_x, c.grid_dim_y, c.grid_dim_z],
            [c.block_dim_x, c.block_dim_y, c.block_dim_z],
            c.shared_mem_bytes,
            c.stream,
            params,
            extra,
            attrs,
        )
    }
}

// ---- occupancy -----------------------------------------------------------------

fn occupancy(function: CUfunction, query: OccupancyQuery) -> CuResult<Reply> {
    let s = shim()?;
    let ctx = current_ctx()?;
    let key = (handle(function), ctx, query);
    if let Some(r) = read(&s.occupancy).get(&key) {
        return Ok(r.clone());
    }
    let reply = s.remote.call(
        &Request::Occupancy {
            ctx,
            func: resolve(s, handle(function))?,
            query,
        },
        &[],
    )?;
    write(&s.occupancy).insert(key, reply.clone());
    Ok(reply)
}

fn int_reply(r: Reply) -> CuResult<i64> {
    match r {
        Reply::Int(v) => Ok(v),
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn occupancy_max_active_blocks(
    blocks: *mut i32,
    function: CUfunction,
    block_size: i32,
    dynamic_smem: usize,
) -> CuResult {
    unsafe { occupancy_max_active_blocks_with_flags(blocks, function, block_size, dynamic_smem, 0) }
}

pub unsafe fn occupancy_max_active_blocks_with_flags(
    blocks: *mut i32,
    function: CUfunction,
    block_size: i32,
    dynamic_smem: usize,
    flags: u32,
) -> CuResult {
    if blocks.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let q = OccupancyQuery::MaxActiveBlocksPerMultiprocessor {
        block_size,
        dynamic_smem: dynamic_smem as u64,
        flags,
    };
    let v = int_reply(occupancy(function, q)?)?;
    unsafe { out(blocks, v as i32) }
}

pub unsafe fn occupancy_max_potential_block_size(
    min_grid: *mut i32,
    block_size: *mut i32,
    function: CUfunction,
    smem_callback: *const c_void,
    dynamic_smem: usize,
    block_size_limit: i32,
) -> CuResult {
    unsafe {
        occupancy_max_potential_block_size_with_flags(
            min_grid,
            block_size,
            function,
            smem_callback,
            dynamic_smem,
            block_size_limit,
            0,
        )
    }
}

pub unsafe fn occupancy_max_potential_block_size_with_flags(
    min_grid: *mut i32,
    block_size: *mut i32,
    function: CUfunction,
    smem_callback: *const c_void,
    dynamic_smem: usize,
    block_size_limit: i32,
    flags: u32,
) -> CuResult {
    if min_grid.is_null() || block_size.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if !smem_callback.is_null() {
        // SAFETY: the program passes a `CUoccupancyB2DSize`, a C function
        // of the block size; checked not to be null.
        let callback = unsafe { std::mem::transmute::<*const c_void, SmemForBlock>(smem_callback) };
        let (grid, block) = potential_block_size_with(function, callback, block_size_limit, flags)?;
        return unsafe {
            out(min_grid, grid)?;
            out(block_size, block)
        };
    }
    let q = OccupancyQuery::MaxPotentialBlockSize {
        dynamic_smem: dynamic_smem as u64,
        block_size_limit,
        flags,
    };
    match occupancy(function, q)? {
        Reply::Pair(g, b) => unsafe {
            out(min_grid, g as i32)?;
            out(block_size, b as i32)
        },
        _ => Err(CuError::UNKNOWN),
    }
}

/// `CUoccupancyB2DSize`: the dynamic shared memory a block of so many
/// threads uses.
type SmemForBlock = unsafe extern "C" fn(i32) -> usize;

/// `CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK`; the device's maximum threads
/// per block and per multiprocessor, and its multiprocessor count.
const FUNC_MAX_THREADS_PER_BLOCK: i32 = 0;
const DEVICE_MAX_THREADS_PER_BLOCK: i32 = 1;
const DEVICE_MAX_THREADS_PER_SM: i32 = 39;
const DEVICE_SM_COUNT: i32 = 16;
const WARP: i32 = 32;

/// The block size of most resident threads when a block of `b` threads
/// uses `callback(b)` bytes of dynamic shared memory: the occupancy
/// calculator's search (block sizes from the largest allowed down, in
/// warps, stopping at full occupancy), run here because the callback is
/// the program's code. Each size tried asks the server's occupancy once
/// (the answers are kept).
fn potential_block_size_with(
    function: CUfunction,
    callback: SmemForBlock,
    limit: i32,
    flags: u32,
) -> CuResult<(i32, i32)> {
    let s = shim()?;
    let (_, device) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    let mut func_max = 0;
    // SAFETY: a local slot; the function is the program's.
    unsafe { func_get_attribute(&mut func_max, FUNC_MAX_THREADS_PER_BLOCK, function) }?;
    let mut max_block = func_max.min(s.attribute(device, DEVICE_MAX_THREADS_PER_BLOCK)?);
    if limit > 0 {
        max_block = max_block.min(limit);
    }
    let per_sm = s.attribute(device, DEVICE_MAX_THREADS_PER_SM)?;
    let sms = s.attribute(device, DEVICE_SM_COUNT)?;
    let (mut best_threads, mut best_block, mut best_blocks) = (0i64, 0i32, 0i32);
    let mut aligned = (max_block + WARP - 1) / WARP * WARP;
    while aligned > 0 {
        let block = aligned.min(max_block);
        // SAFETY: the program's callback, called as the driver calls it.
        let smem = unsafe { callback(block) };
        let q = OccupancyQuery::MaxActiveBlocksPerMultiprocessor {
            block_size: block,
            dynamic_smem: smem as u64,
            flags,
        };
        let blocks = int_reply(occupancy(function, q)?)? as i32;
        let threads = block as i64 * blocks as i64;
        if threads > best_threads {
            (best_threads, best_block, best_blocks) = (threads, block, blocks);
        }
        if threads >= per_sm as i64 {
            break;
        }
        aligned -= WARP;
    }
    Ok((best_blocks * sms, best_block))
}

pub unsafe fn occupancy_available_dynamic_smem(
    smem: *mut usize,
    function: CUfunction,
    num_blocks: i32,
    block_size: i32,
) -> CuResult {
    if smem.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let v = int_reply(occupancy(
        function,
        OccupancyQuery::AvailableDynamicSmemPerBlock { num_blocks, block_size },
    )?)?;
    unsafe { out(smem, v as usize) }
}

/// `CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION`.
const LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION: u32 = 4;

/// `cuOccupancyMaxPotentialClusterSize`: the server driver's answer for
/// the launch's shape (and its cluster, if it names one), kept as the other
/// occupancy answers are.
pub unsafe fn occupancy_max_potential_cluster_size(
    size: *mut i32,
    function: CUfunction,
    config: *const CUlaunchConfig,
) -> CuResult {
    if size.is_null() || config.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-null CUlaunchConfig.
    let c = unsafe { &*config };
    let attrs = unsafe { launch_attrs(c)? };
    let mut cluster = [0u32; 3];
    if let Some((_, v)) = attrs.iter().find(|(id, _)| *id == LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION) {
        for (i, slot) in cluster.iter_mut().enumerate() {
            *slot = u32::from_le_bytes(v[i * 4..i * 4 + 4].try_into().unwrap());
        }
    }
    let q = OccupancyQuery::MaxPotentialClusterSize {
        grid: [c.grid_dim_x, c.grid_dim_y, c.grid_dim_z],
        block: [c.block_dim_x, c.block_dim_y, c.block_dim_z],
        shared_mem: c.shared_mem_bytes,
        cluster,
    };
    let v = int_reply(occupancy(function, q)?)?;
    unsafe { out(size, v as i32) }
}

pub unsafe fn occupancy_max_active_clusters(
    clusters: *mut i32,
    function: CUfunction,
    config: *const CUlaunchConfig,
) -> CuResult {
    if clusters.is_null() || config.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-null CUlaunchConfig.
    let c = unsafe { &*config };
    let attrs = unsafe { launch_attrs(c)? };
    let mut cluster = [1u32; 3];
    if let Some((_, v)) = attrs.iter().find(|(id, _)| *id == LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION) {
        for (i, slot) in cluster.iter_mut().enumerate() {
            *slot = u32::from_le_bytes(v[i * 4..i * 4 + 4].try_into().unwrap());
        }
    }
    let grid = [c.grid_dim_x, c.grid_dim_y, c.grid_dim_z];
    let block = [c.block_dim_x, c.block_dim_y, c.block_dim_z];
    let shared_mem = c.shared_mem_bytes;
    if grid == cluster && cluster[1] == 1 && cluster[2] == 1 && cluster[0] >= 1 {
        cluster_probes(function, block, shared_mem, cluster[0])?;
    }
    let q = OccupancyQuery::MaxActiveClusters {
        grid,
        block,
        shared_mem,
        cluster,
    };
    let v = int_reply(occupancy(function, q)?)?;
    unsafe { out(clusters, v as i32) }
}

/// The cluster sizes asked at once when one is asked of a grid of one
/// cluster: cuBLASLt asks each of 1 to 16 of every kernel so, one call
/// each (112 round trips at the start-up of `benches/torch_step.py`'s
/// small GPT on the software driver before, 51 now: an attribute set
/// between questions forgets the answers, as it must).
const CLUSTER_PROBES: u32 = 16;

/// Fill the occupancy answers of clusters of 1 to [`CLUSTER_PROBES`] blocks
/// (and of `size`), each a grid of one cluster, with one question, unless
/// `size`'s is known. Sizes the driver refuses are left to be asked alone.
fn cluster_probes(function: CUfunction, block: [u32; 3], shared_mem: u32, size: u32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    let query = |k: u32| OccupancyQuery::MaxActiveClusters {
        grid: [k, 1, 1],
        block,
        shared_mem,
        cluster: [k, 1, 1],
    };
    if read(&s.occupancy).contains_key(&(handle(function), ctx, query(size))) {
        return Ok(());
    }
    let mut sizes: Vec<u32> = (1..=CLUSTER_PROBES).collect();
    if size > CLUSTER_PROBES {
        sizes.push(size);
    }
    let request = Request::OccupancyClusters {
        ctx,
        func: resolve(s, handle(function))?,
        block,
        shared_mem,
        sizes: sizes.clone(),
    };
    let Reply::Attributes(answers) = s.remote.call(&request, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    if answers.len() != sizes.len() {
        return Err(CuError::UNKNOWN);
    }
    let mut known = write(&s.occupancy);
    for (k, (status, v)) in sizes.into_iter().zip(answers) {
        if status == 0 {
            known.insert((handle(function), ctx, query(k)), Reply::Int(v as i64));
        }
    }
    Ok(())
}
