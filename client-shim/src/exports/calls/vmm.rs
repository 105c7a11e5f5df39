//! Virtual memory management (`cuMemAddressReserve`, `cuMemCreate`,
//! `cuMemMap`, `cuMemSetAccess` and their undoing), as PyTorch's expandable
//! segments use it: the server's driver reserves, creates and maps, so the
//! addresses are the GPU's own; each mapped piece is the program's device
//! memory, and pieces that follow on from each other are one range.

use super::pools::{MemLocation, ALLOCATION_PINNED};
use super::*;
use crate::state::PhysicalEntry;
/// `CU_MEM_ALLOC_GRANULARITY_RECOMMENDED`.
const GRANULARITY_RECOMMENDED: u32 = 1;

/// `CUmemAllocationProp`'s leading fields.
#[repr(C)]
struct AllocationPropHead {
    alloc_type: u32,
    requested_handle_types: u32,
    location: MemLocation,
}

/// `CUmemAccessDesc`.
#[repr(C)]
struct AccessDesc {
    location: MemLocation,
    flags: u32,
}

/// The device a `CUmemAllocationProp` names; memory elsewhere (host, NUMA
/// node) is not offered remotely.
fn prop_device(s: &Shim, prop: *const c_void) -> CuResult<(i32, u32)> {
    if prop.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUmemAllocationProp, which starts with
    // these fields; checked not to be null.
    let p = unsafe { std::ptr::read_unaligned(prop.cast::<AllocationPropHead>()) };
    if p.alloc_type != ALLOCATION_PINNED {
        return Err(CuError::INVALID_VALUE);
    }
    Ok((p.location.device(s)?, p.requested_handle_types))
}

pub unsafe fn mem_address_reserve(
    ptr: *mut CUdeviceptr,
    size: usize,
    alignment: usize,
    _addr: CUdeviceptr,
    flags: u64,
) -> CuResult {
    let s = shim()?;
    if ptr.is_null() || size == 0 || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let req = Request::MemAddressReserve {
        size: size as u64,
        alignment: alignment as u64,
    };
    // Its pages are held at once, so that what the program maps meanwhile
    // does not land where its mappings will; a reservation on memory the
    // program has is made again.
    let reserve = || match s.remote.call(&req, &[])? {
        Reply::Pointer(p) => Ok(p),
        _ => Err(CuError::UNKNOWN),
    };
    let free = |p| {
        let _ = s.remote.call(
            &Request::MemAddressFree {
                ptr: p,
                size: size as u64,
            },
            &[],
        );
    };
    let p = super::place_range(s, "cuMemAddressReserve", None, size as u64, reserve, free)?;
    // SAFETY: checked not to be null; the program passes a slot.
    unsafe { out(ptr, p) }
}

pub unsafe fn mem_address_free(ptr: CUdeviceptr, size: usize) -> CuResult {
    let s = shim()?;
    let req = Request::MemAddressFree { ptr, size: size as u64 };
    s.remote.call(&req, &[]).map(drop)
}

/// Physical memory on a device. Handle types (for sharing) are the driver's
/// to allow; exporting one cannot cross machines and is not supported.
pub unsafe fn mem_create(handle: *mut u64, size: usize, prop: *const c_void, flags: u64) -> CuResult {
    let s = shim()?;
    if handle.is_null() || size == 0 || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let (device, handle_types) = prop_device(s, prop)?;
    let req = Request::MemCreate {
        device,
        size: size as u64,
        handle_types,
    };
    match s.remote.call(&req, &[])? {
        Reply::Handle(h) => {
            let entry = PhysicalEntry {
                device,
                handle_types,
                refs: 1,
            };
            write(&s.physical).insert(h, entry);
            // SAFETY: checked not to be null; the program passes a slot.
            unsafe { out(handle, h) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn mem_release(handle: u64) -> CuResult {
    let s = shim()?;
    if !read(&s.physical).contains_key(&handle) {
        return Err(CuError::INVALID_VALUE);
    }
    s.remote.call(&Request::MemRelease { handle }, &[])?;
    let mut physical = write(&s.physical);
    if let Some(entry) = physical.get_mut(&handle) {
        entry.refs -= 1;
        if entry.refs == 0 {
            physical.remove(&handle);
        }
    }
    Ok(())
}

/// `cuMemRetainAllocationHandle`: the handle of the physical memory mapped
/// at any address of a mapping, with one more reference (the server's
/// driver takes it). Memory whose handles were all released while it stayed
/// mapped is the mapping's alone: asking for it is refused
/// (`CUDA_ERROR_INVALID_VALUE`).
pub unsafe fn mem_retain_allocation_handle(handle: *mut u64, addr: *mut c_void) -> CuResult {
    let s = shim()?;
    if handle.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let ptr = addr as u64;
    match s.find_device_range(ptr, 1) {
        Some((_, r)) if r.kind == RangeKind::Mapped => {}
        found => {
            tracing::debug!(ptr = format_args!("{ptr:#x}"), kind = ?found.map(|(_, r)| r.kind), "cuMemRetainAllocationHandle: not mapped memory");
            return Err(CuError::INVALID_VALUE);
        }
    }
    match s.remote.call(&Request::MemRetainAllocationHandle { ptr }, &[])? {
        Reply::Pair(h, _) => {
            let h = h as u64;
            let mut physical = write(&s.physical);
            let entry = physical.get_mut(&h).ok_or(CuError::UNKNOWN)?;
            entry.refs += 1;
            // SAFETY: checked not to be null; the program passes a slot.
            unsafe { out(handle, h) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

/// `CUmemAllocationProp`, whole.
#[repr(C)]
struct AllocationProp {
    head: AllocationPropHead,
    win32_handle_meta_data: *mut c_void,
    compression_type: u8,
    gpu_direct_rdma_capable: u8,
    usage: u16,
    reserved: [u8; 4],
}

/// `cuMemGetAllocationPropertiesFromHandle`, answered here: what the
/// memory was made with on the server (pinned device memory, the handle
/// types asked for; no compression, no GPUDirect RDMA, no usage hints,
/// which gpupool does not pass on).
pub unsafe fn mem_get_allocation_properties_from_handle(prop: *mut c_void, handle: u64) -> CuResult {
    let s = shim()?;
    let entry = *read(&s.physical).get(&handle).ok_or(CuError::INVALID_VALUE)?;
    let value = AllocationProp {
        head: AllocationPropHead {
            alloc_type: ALLOCATION_PINNED,
            requested_handle_types: entry.handle_types,
            location: MemLocation {
                kind: super::pools::LOCATION_DEVICE,
                id: entry.device,
            },
        },
        win32_handle_meta_data: std::ptr::null_mut(),
        compression_type: 0,
        gpu_direct_rdma_capable: 0,
        usage: 0,
        reserved: [0; 4],
    };
    // SAFETY: the program passes a CUmemAllocationProp (null refused).
    unsafe { out(prop.cast::<AllocationProp>(), value) }
}

pub unsafe fn mem_map(ptr: CUdeviceptr, size: usize, offset: usize, handle: u64, flags: u64) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if flags != 0 || size == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let device = read(&s.physical).get(&handle).ok_or(CuError::INVALID_VALUE)?.device;
    let req = Request::MemMap {
        ctx,
        ptr,
        size: size as u64,
        offset: offset as u64,
        handle,
    };
    s.remote.call(&req, &[])?;
    let range = DeviceRange {
        size: size as u64,
        ctx,
        device,
        kind: RangeKind::Mapped,
        legacy_ipc: false,
    };
    super::keep_device_range(s, "cuMemMap", ptr, range);
    Ok(())
}

pub unsafe fn mem_unmap(ptr: CUdeviceptr, size: usize) -> CuResult {
    let s = shim()?;
    s.remote.call(&Request::MemUnmap { ptr, size: size as u64 }, &[])?;
    let end = ptr.saturating_add(size as u64);
    lock(&s.device_memory).retain(|&b, r| !(r.kind == RangeKind::Mapped && b >= ptr && b < end));
    Ok(())
}

/// Access for devices of the session; each descriptor is one request.
pub unsafe fn mem_set_access(ptr: CUdeviceptr, size: usize, desc: *const c_void, count: usize) -> CuResult {
    let s = shim()?;
    if desc.is_null() || count == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let desc = desc.cast::<AccessDesc>();
    for i in 0..count {
        // SAFETY: the program passes `count` descriptors at `desc`.
        let d = unsafe { std::ptr::read_unaligned(desc.add(i)) };
        let req = Request::MemSetAccess {
            ptr,
            size: size as u64,
            device: d.location.device(s)?,
            flags: d.flags,
        };
        s.remote.call(&req, &[])?;
    }
    Ok(())
}

pub unsafe fn mem_get_allocation_granularity(granularity: *mut usize, prop: *const c_void, option: u32) -> CuResult {
    let s = shim()?;
    let (device, _) = prop_device(s, prop)?;
    let recommended = option == GRANULARITY_RECOMMENDED;
    // Asked once per device and option: NCCL asks before each of the
    // hundreds of buffers it maps at start-up.
    let known = read(&s.granularity).get(&(device, recommended)).copied();
    let g = match known {
        Some(g) => g,
        None => match s.remote.call(&Request::MemGranularity { device, recommended }, &[])? {
            Reply::Size(g) => {
                write(&s.granularity).insert((device, recommended), g);
                g
            }
            _ => return Err(CuError::UNKNOWN),
        },
    };
    // SAFETY: the program passes a slot (null is refused by `out`).
    unsafe { out(granularity, g as usize) }
}

/// Mapped memory is read-write for the device it lives on, and nothing for
/// others (peer access is not offered).
pub unsafe fn mem_get_access(flags: *mut u64, location: *const c_void, ptr: CUdeviceptr) -> CuResult {
    let s = shim()?;
    if location.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUmemLocation; checked not to be null.
    let l = unsafe { std::ptr::read_unaligned(location.cast::<MemLocation>()) };
    let (_, range) = s.find_device_range(ptr, 1).ok_or(CuError::INVALID_VALUE)?;
    if range.kind != RangeKind::Mapped {
        return Err(CuError::INVALID_VALUE);
    }
    let rw = l.kind == super::pools::LOCATION_DEVICE && l.id == range.device;
    unsafe { out(flags, if rw { 3 } else { 0 }) }
}

/// `CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR`.
pub(super) const HANDLE_TYPE_POSIX_FD: u32 = 1;

/// `cuMemExportToShareableHandle` as a file descriptor, as PyTorch's
/// expandable segments share memory between processes: the server's
/// worker keeps the driver's descriptor and answers gpupool's handle for
/// it; the program gets a descriptor of its own, a small memory file
/// holding that handle, to pass on as it would the driver's (inherited,
/// over a Unix socket, or fetched with `pidfd_getfd`). Other handle types
/// cannot travel and answer `CUDA_ERROR_NOT_SUPPORTED`.
pub unsafe fn mem_export_to_shareable_handle(
    shareable: *mut c_void,
    handle: u64,
    handle_type: u32,
    flags: u64,
) -> CuResult {
    let s = shim()?;
    if shareable.is_null() || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if handle_type != HANDLE_TYPE_POSIX_FD {
        tracing::warn!(handle_type, "only file descriptors are offered as shareable handles");
        return Err(CuError::NOT_SUPPORTED);
    }
    if !read(&s.physical).contains_key(&handle) {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: checked not to be null; for a file descriptor the shareable
    // handle is an int (API contract).
    unsafe { export_descriptor(s, &Request::MemExport { handle }, shareable.cast()) }
}

/// Ask the server for the gpupool handle of what `request` exports, and
/// give the program a descriptor of its own for it (a memory file holding
/// the handle) in `fd`.
///
/// # Safety
/// `fd` is the program's room for an int.
pub(super) unsafe fn export_descriptor(s: &Shim, request: &Request, fd: *mut i32) -> CuResult {
    let token = match s.remote.call(request, &[])? {
        Reply::Bytes(b) if b.len() == gpupool_proto::message::IPC_HANDLE_LEN => b,
        _ => return Err(CuError::UNKNOWN),
    };
    let file = token_file(&token).map_err(|e| {
        tracing::warn!("cannot make the shareable handle's file: {e}");
        CuError::OUT_OF_MEMORY
    })?;
    // SAFETY: the caller's contract; `out` checks for NULL.
    unsafe { out(fd, std::os::fd::IntoRawFd::into_raw_fd(file)) }
}

/// A memory file holding `token`, closed on exec as the driver's are.
fn token_file(token: &[u8]) -> std::io::Result<std::os::fd::OwnedFd> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"gpupool-shareable".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just made and is owned here alone.
    let mut file = std::fs::File::from(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) });
    file.write_all(token)?;
    Ok(file.into())
}

/// The gpupool handle a descriptor [`token_file`] made holds; any other
/// file (the driver's descriptor of another machine, say) answers
/// `CUDA_ERROR_INVALID_VALUE`.
pub(super) fn read_token(fd: i32) -> CuResult<Vec<u8>> {
    let mut token = vec![0u8; gpupool_proto::message::IPC_HANDLE_LEN + 1];
    // SAFETY: reads into the local buffer from the program's descriptor
    // (its offset untouched); a bad descriptor fails.
    let n = unsafe { libc::pread(fd, token.as_mut_ptr().cast(), token.len(), 0) };
    if n != gpupool_proto::message::IPC_HANDLE_LEN as isize {
        return Err(CuError::INVALID_VALUE);
    }
    token.truncate(gpupool_proto::message::IPC_HANDLE_LEN);
    Ok(token)
}

/// `cuMemImportFromShareableHandle` of a descriptor that
/// `cuMemExportToShareableHandle` made (here or in another process of a
/// session of the same server): the handle is read from it, and the
/// server's worker imports the memory from the exporting worker.
pub unsafe fn mem_import_from_shareable_handle(handle: *mut u64, os_handle: *mut c_void, handle_type: u32) -> CuResult {
    let s = shim()?;
    if handle.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if handle_type != HANDLE_TYPE_POSIX_FD {
        return Err(CuError::NOT_SUPPORTED);
    }
    let token = read_token(os_handle as usize as i32)?;
    match s.remote.call(&Request::MemImport { token }, &[])? {
        Reply::Pair(h, device) => {
            let h = h as u64;
            let entry = PhysicalEntry {
                device: device as i32,
                handle_types: HANDLE_TYPE_POSIX_FD,
                refs: 1,
            };
            write(&s.physical).insert(h, entry);
            // SAFETY: checked not to be null; the program passes a slot.
            unsafe { out(handle, h) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}
