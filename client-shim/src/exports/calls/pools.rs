//! Stream-ordered allocation and memory pools (`cuMemAllocAsync`,
//! `cuMemFreeAsync`, `cuMemPool*`): the server's driver runs them, so a
//! pool's reuse, thresholds and figures are the GPU's own. An allocation
//! costs a round trip (the driver picks the address); a free streams.

use super::vmm::{export_descriptor, read_token, HANDLE_TYPE_POSIX_FD};
use super::*;

/// `CUmemLocationType` of a device, `CUmemAllocationType` of pinned memory.
pub(super) const LOCATION_DEVICE: u32 = 1;
pub(super) const ALLOCATION_PINNED: u32 = 1;
/// `CU_MEM_ACCESS_FLAGS_PROT_READWRITE`.
const ACCESS_READWRITE: u32 = 3;

/// `CUmemLocation`.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct MemLocation {
    pub(super) kind: u32,
    pub(super) id: i32,
}

impl MemLocation {
    /// The device of the session this location names; other kinds of
    /// memory (host, NUMA node) are not offered remotely.
    pub(super) fn device(self, s: &Shim) -> CuResult<i32> {
        if self.kind != LOCATION_DEVICE {
            return Err(CuError::NOT_SUPPORTED);
        }
        s.device(self.id)?;
        Ok(self.id)
    }
}

/// `CUmemPoolProps`' leading fields (the rest are reserved or Windows').
#[repr(C)]
struct MemPoolPropsHead {
    alloc_type: u32,
    handle_types: u32,
    location: MemLocation,
    win32_security_attributes: *mut c_void,
    max_size: usize,
}

/// `CUmemAccessDesc`.
#[repr(C)]
struct MemAccessDesc {
    location: MemLocation,
    flags: u32,
}

/// A pool's device, as the shim learned it with the pool.
fn pool_device(s: &Shim, pool: Handle) -> CuResult<i32> {
    read(&s.pools).get(&pool).copied().ok_or(CuError::INVALID_VALUE)
}

/// The device a location the program passes names ([`MemLocation::device`]).
fn location_device(s: &Shim, location: *const MemLocation) -> CuResult<i32> {
    if location.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUmemLocation; checked not to be null.
    unsafe { std::ptr::read_unaligned(location) }.device(s)
}

unsafe fn alloc_async(
    mode: DefaultStream,
    ptr: *mut CUdeviceptr,
    size: usize,
    pool: Handle,
    stream: CUstream,
) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let device = s.context_device(ctx)?;
    if ptr.is_null() || size == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if pool != 0 {
        pool_device(s, pool)?;
    }
    let sref = Shim::stream_ref(mode, handle(stream));
    let req = Request::MemAllocAsync {
        ctx,
        stream: sref,
        size: size as u64,
        pool,
    };
    let range = DeviceRange {
        size: size as u64,
        ctx,
        device,
        kind: RangeKind::Allocated,
        legacy_ipc: false,
    };
    let p = super::place_allocation(
        s,
        "stream-ordered allocation",
        range,
        || match s.remote.call(&req, &[])? {
            Reply::Pointer(p) => Ok(p),
            _ => Err(CuError::UNKNOWN),
        },
        // In stream order, after the allocation kept.
        |p| {
            let _ = s.remote.post(
                &Request::MemFreeAsync {
                    ctx,
                    stream: sref,
                    ptr: p,
                },
                &[],
            );
        },
    )?;
    // SAFETY: the caller's contract; `out` checks for NULL.
    unsafe { out(ptr, p) }
}

/// Memory of a pool at `p`, `size` bytes in `ctx` on `device`: the
/// program's, freed with `cuMemFree(Async)`; written to `ptr`.
///
/// # Safety
/// `ptr` is NULL or the program's slot for a device pointer.
unsafe fn deliver_pool_memory(
    s: &Shim,
    ptr: *mut CUdeviceptr,
    p: CUdeviceptr,
    size: u64,
    ctx: Handle,
    device: i32,
) -> CuResult {
    let range = DeviceRange {
        size,
        ctx,
        device,
        kind: RangeKind::Allocated,
        legacy_ipc: false,
    };
    super::keep_device_range(s, "a pool's imported memory", p, range);
    // SAFETY: the caller's contract; `out` checks for NULL.
    unsafe { out(ptr, p) }
}

pub unsafe fn mem_alloc_async(mode: DefaultStream, ptr: *mut CUdeviceptr, size: usize, stream: CUstream) -> CuResult {
    unsafe { alloc_async(mode, ptr, size, 0, stream) }
}

pub unsafe fn mem_alloc_from_pool_async(
    mode: DefaultStream,
    ptr: *mut CUdeviceptr,
    size: usize,
    pool: *mut c_void,
    stream: CUstream,
) -> CuResult {
    if pool.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    unsafe { alloc_async(mode, ptr, size, pool as Handle, stream) }
}

pub unsafe fn mem_free_async(mode: DefaultStream, ptr: CUdeviceptr, stream: CUstream) -> CuResult {
    let s = shim()?;
    stream_ctx(s, stream)?;
    if ptr == 0 {
        return Ok(());
    }
    let range = take_allocation(s, ptr)?;
    let req = Request::MemFreeAsync {
        ctx: range.ctx,
        stream: Shim::stream_ref(mode, handle(stream)),
        ptr,
    };
    s.remote.post(&req, &[])
}

/// Ask the server for a pool and remember its device.
fn pool_reply(s: &Shim, req: &Request, device: i32, pool: *mut *mut c_void) -> CuResult {
    if pool.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    match s.remote.call(req, &[])? {
        Reply::Handle(h) => {
            write(&s.pools).insert(h, device);
            // SAFETY: checked not to be null; the program passes a slot.
            unsafe { out(pool, as_ptr(h)) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

fn pool_of_device(pool: *mut *mut c_void, device: CUdevice, current: bool) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    pool_reply(s, &Request::MemPoolOfDevice { device, current }, device, pool)
}

pub unsafe fn device_get_default_mem_pool(pool: *mut *mut c_void, device: CUdevice) -> CuResult {
    pool_of_device(pool, device, false)
}

pub unsafe fn device_get_mem_pool(pool: *mut *mut c_void, device: CUdevice) -> CuResult {
    pool_of_device(pool, device, true)
}

pub unsafe fn device_set_mem_pool(device: CUdevice, pool: *mut c_void) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    let pool = pool as Handle;
    if pool_device(s, pool)? != device {
        return Err(CuError::INVALID_DEVICE);
    }
    s.remote
        .call(&Request::MemPoolSetCurrent { device, pool }, &[])
        .map(drop)
}

/// `cuMemGetDefaultMemPool` / `cuMemGetMemPool` (CUDA 13): a location and
/// an allocation type instead of a device.
fn location_pool(pool: *mut *mut c_void, location: *const c_void, kind: u32, current: bool) -> CuResult {
    let s = shim()?;
    let device = location_device(s, location.cast())?;
    if kind != ALLOCATION_PINNED {
        return Err(CuError::INVALID_VALUE);
    }
    pool_of_device(pool, device, current)
}

pub unsafe fn mem_get_default_mem_pool(pool: *mut *mut c_void, location: *const c_void, kind: u32) -> CuResult {
    location_pool(pool, location, kind, false)
}

pub unsafe fn mem_get_mem_pool(pool: *mut *mut c_void, location: *const c_void, kind: u32) -> CuResult {
    location_pool(pool, location, kind, true)
}

pub unsafe fn mem_set_mem_pool(location: *const c_void, kind: u32, pool: *mut c_void) -> CuResult {
    let s = shim()?;
    let device = location_device(s, location.cast())?;
    if kind != ALLOCATION_PINNED {
        return Err(CuError::INVALID_VALUE);
    }
    unsafe { device_set_mem_pool(device, pool) }
}

/// Pools of device memory, exportable as a file descriptor to the
/// sessions of the same server; other handle types cannot travel.
pub unsafe fn mem_pool_create(pool: *mut *mut c_void, props: *const c_void) -> CuResult {
    let s = shim()?;
    let props = props.cast::<MemPoolPropsHead>();
    if props.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUmemPoolProps, which starts with these
    // fields; checked not to be null.
    let p = unsafe { &*props };
    if p.alloc_type != ALLOCATION_PINNED {
        return Err(CuError::INVALID_VALUE);
    }
    let device = location_device(s, &p.location)?;
    if p.handle_types & !HANDLE_TYPE_POSIX_FD != 0 {
        tracing::warn!(
            handle_types = p.handle_types,
            "only file descriptors are offered as a pool's shareable handles"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    let req = Request::MemPoolCreate {
        device,
        max_size: p.max_size as u64,
        handle_types: p.handle_types,
    };
    pool_reply(s, &req, device, pool)
}

pub unsafe fn mem_pool_destroy(pool: *mut c_void) -> CuResult {
    let s = shim()?;
    let pool = pool as Handle;
    pool_device(s, pool)?;
    s.remote.call(&Request::MemPoolDestroy { pool }, &[])?;
    write(&s.pools).remove(&pool);
    write(&s.pool_access).retain(|(p, _), _| *p != pool);
    Ok(())
}

/// `cuMemPoolExportToShareableHandle` as a file descriptor, as cuda.core
/// and RMM share a pool between processes: the server's worker keeps the
/// driver's descriptor and answers gpupool's handle for it, which the
/// program gets in a small memory file of its own (as with
/// `cuMemExportToShareableHandle`).
pub unsafe fn mem_pool_export_to_shareable_handle(
    shareable: *mut c_void,
    pool: *mut c_void,
    handle_type: u32,
    flags: u64,
) -> CuResult {
    let s = shim()?;
    let pool = pool as Handle;
    pool_device(s, pool)?;
    if shareable.is_null() || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if handle_type != HANDLE_TYPE_POSIX_FD {
        return Err(CuError::NOT_SUPPORTED);
    }
    // SAFETY: checked not to be null; the program passes an int's room.
    unsafe { export_descriptor(s, &Request::MemPoolExport { pool }, shareable.cast()) }
}

/// `cuMemPoolImportFromShareableHandle` of a descriptor
/// `cuMemPoolExportToShareableHandle` made in a process whose session is on
/// the same server: the server's worker imports the pool from the
/// exporting worker. The program destroys it with `cuMemPoolDestroy`.
pub unsafe fn mem_pool_import_from_shareable_handle(
    pool: *mut *mut c_void,
    os_handle: *mut c_void,
    handle_type: u32,
    flags: u64,
) -> CuResult {
    let s = shim()?;
    if pool.is_null() || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if handle_type != HANDLE_TYPE_POSIX_FD {
        return Err(CuError::NOT_SUPPORTED);
    }
    let token = read_token(os_handle as usize as i32)?;
    match s.remote.call(&Request::MemPoolImport { token }, &[])? {
        Reply::Pair(h, device) => {
            let h = h as Handle;
            write(&s.pools).insert(h, device as i32);
            // SAFETY: checked not to be null; the program passes a slot.
            unsafe { out(pool, as_ptr(h)) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

/// `CUmemPoolPtrExportData`: 64 opaque bytes.
const POOL_PTR_EXPORT_LEN: usize = 64;

/// `cuMemPoolExportPointer` of an allocation from an exportable pool: what
/// the program passes to the importing process is gpupool's handle for the
/// driver's export data (64 bytes, as the driver's).
pub unsafe fn mem_pool_export_pointer(data: *mut c_void, ptr: CUdeviceptr) -> CuResult {
    let s = shim()?;
    if data.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = match lock(&s.device_memory).get(&ptr) {
        Some(r) if r.kind == RangeKind::Allocated => r.ctx,
        _ => return Err(CuError::INVALID_VALUE),
    };
    match s.remote.call(&Request::MemPoolExportPointer { ctx, ptr }, &[])? {
        Reply::Bytes(b) if b.len() == POOL_PTR_EXPORT_LEN => {
            // SAFETY: the program passes a CUmemPoolPtrExportData (64
            // bytes); checked not to be null.
            unsafe { std::ptr::copy_nonoverlapping(b.as_ptr(), data.cast::<u8>(), POOL_PTR_EXPORT_LEN) };
            Ok(())
        }
        _ => Err(CuError::UNKNOWN),
    }
}

/// `cuMemPoolImportPointer` from a pool this process imported: the
/// allocation, in the current context, is the program's until it frees it
/// (`cuMemFree` / `cuMemFreeAsync`), as with the driver.
pub unsafe fn mem_pool_import_pointer(ptr: *mut CUdeviceptr, pool: *mut c_void, data: *mut c_void) -> CuResult {
    let s = shim()?;
    let pool = pool as Handle;
    let device = pool_device(s, pool)?;
    let ctx = current_ctx()?;
    if ptr.is_null() || data.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUmemPoolPtrExportData (64 bytes);
    // checked not to be null.
    let token = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), POOL_PTR_EXPORT_LEN) }.to_vec();
    match s
        .remote
        .call(&Request::MemPoolImportPointer { ctx, pool, token }, &[])?
    {
        // SAFETY: checked not to be null; the program passes a slot.
        Reply::Global { ptr: p, size } => unsafe { deliver_pool_memory(s, ptr, p, size, ctx, device) },
        _ => Err(CuError::UNKNOWN),
    }
}

/// The reuse policies (1 to 3) are ints; the rest 64-bit.
fn int_attribute(attr: i32) -> bool {
    (1..=3).contains(&attr)
}

pub unsafe fn mem_pool_set_attribute(pool: *mut c_void, attr: i32, value: *mut c_void) -> CuResult {
    let s = shim()?;
    let pool = pool as Handle;
    pool_device(s, pool)?;
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes the attribute's type; checked not null.
    let v = unsafe {
        match int_attribute(attr) {
            true => *value.cast::<i32>() as u32 as u64,
            false => *value.cast::<u64>(),
        }
    };
    let req = Request::MemPoolAttribute {
        pool,
        attr,
        set: Some(v),
    };
    s.remote.call(&req, &[]).map(drop)
}

pub unsafe fn mem_pool_get_attribute(pool: *mut c_void, attr: i32, value: *mut c_void) -> CuResult {
    let s = shim()?;
    let pool = pool as Handle;
    pool_device(s, pool)?;
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let req = Request::MemPoolAttribute { pool, attr, set: None };
    match s.remote.call(&req, &[])? {
        // SAFETY: the program passes room for the attribute's type.
        Reply::Size(v) => unsafe {
            match int_attribute(attr) {
                true => out(value.cast::<i32>(), v as u32 as i32),
                false => out(value.cast::<u64>(), v),
            }
        },
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn mem_pool_trim_to(pool: *mut c_void, keep: usize) -> CuResult {
    let s = shim()?;
    let pool = pool as Handle;
    pool_device(s, pool)?;
    let req = Request::MemPoolTrimTo {
        pool,
        keep: keep as u64,
    };
    s.remote.call(&req, &[]).map(drop)
}

/// The pool's own device always reads and writes it. Access from another
/// device of the session is peer access, given on the server's driver (one
/// round trip per device; PyTorch's `cudaMallocAsync` backend gives it when
/// it first copies between two GPUs) and kept here for
/// `cuMemPoolGetAccess`.
pub unsafe fn mem_pool_set_access(pool: *mut c_void, map: *const c_void, count: usize) -> CuResult {
    let s = shim()?;
    let map = map.cast::<MemAccessDesc>();
    let pool = pool as Handle;
    let device = pool_device(s, pool)?;
    if map.is_null() && count > 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes `count` descriptors at `map`.
    let descs = (0..count).map(|i| unsafe { &*map.add(i) });
    let mut wanted = Vec::with_capacity(count);
    for d in descs {
        let to = location_device(s, &d.location)?;
        // CU_MEM_ACCESS_FLAGS_PROT_NONE, _READ or _READWRITE.
        if ![0, 1, ACCESS_READWRITE].contains(&d.flags) {
            return Err(CuError::INVALID_VALUE);
        }
        if to == device {
            if d.flags != ACCESS_READWRITE {
                return Err(CuError::NOT_SUPPORTED);
            }
            continue;
        }
        wanted.push((to, d.flags));
    }
    for (to, flags) in wanted {
        let req = Request::MemPoolSetAccess {
            pool,
            device: to,
            flags,
        };
        s.remote.call(&req, &[])?;
        write(&s.pool_access).insert((pool, to), flags);
    }
    Ok(())
}

pub unsafe fn mem_pool_get_access(flags: *mut u32, pool: *mut c_void, location: *const c_void) -> CuResult {
    let s = shim()?;
    let pool = pool as Handle;
    let device = pool_device(s, pool)?;
    let asked = location_device(s, location.cast())?;
    let given = if asked == device {
        ACCESS_READWRITE
    } else {
        // CU_MEM_ACCESS_FLAGS_PROT_NONE unless given.
        read(&s.pool_access).get(&(pool, asked)).copied().unwrap_or(0)
    };
    // SAFETY: `out` checks `flags` for NULL; the program passes a slot.
    unsafe { out(flags, given) }
}

/// `CUgraphMem_attribute`: used and reserved memory of graphs, now and at
/// their highest; only the highs may be set (to zero, which resets them).
const GRAPH_MEM_ATTR_USED_HIGH: i32 = 1;
const GRAPH_MEM_ATTR_RESERVED_HIGH: i32 = 3;

/// `cuDeviceGetGraphMemAttribute`: the server's driver's (one round trip;
/// PyTorch's `cudaMallocAsync` backend reads them for its memory stats).
pub unsafe fn device_get_graph_mem_attribute(device: CUdevice, attr: i32, value: *mut c_void) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    if value.is_null() || !(0..=GRAPH_MEM_ATTR_RESERVED_HIGH).contains(&attr) {
        return Err(CuError::INVALID_VALUE);
    }
    match s.remote.call(
        &Request::GraphMemAttribute {
            device,
            attr,
            set: None,
        },
        &[],
    )? {
        // SAFETY: the attributes are 64-bit words (`cuuint64_t`).
        Reply::Size(v) => unsafe { out(value.cast::<u64>(), v) },
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn device_set_graph_mem_attribute(device: CUdevice, attr: i32, value: *mut c_void) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    if value.is_null() || !matches!(attr, GRAPH_MEM_ATTR_USED_HIGH | GRAPH_MEM_ATTR_RESERVED_HIGH) {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-null; the attributes are 64-bit words.
    let set = unsafe { value.cast::<u64>().read_unaligned() };
    let request = Request::GraphMemAttribute {
        device,
        attr,
        set: Some(set),
    };
    s.remote.call(&request, &[]).map(drop)
}

pub unsafe fn device_graph_mem_trim(device: CUdevice) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    s.remote.call(&Request::GraphMemTrim { device }, &[]).map(drop)
}
