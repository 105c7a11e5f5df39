//! Copies and memsets beyond the linear ones: unified-address copies
//! (`cuMemcpy`, `cuMemcpyAsync`), pitched 2D and 3D copies and 2D memsets,
//! pitched allocations, host memory registration and address-range queries.

use super::*;
use crate::remote::Sink;
use gpupool_proto::message::{ArrayPos, CopyEnd};

/// `CUmemorytype` values a 2D copy may name besides host and device.
const MEMORYTYPE_ARRAY: u32 = 3;
const MEMORYTYPE_UNIFIED: u32 = 4;

/// `CUDA_MEMCPY2D` as the driver API lays it out.
#[repr(C)]
#[derive(Clone, Copy)]
struct Memcpy2D {
    src_x_in_bytes: usize,
    src_y: usize,
    src_memory_type: u32,
    src_host: *const c_void,
    src_device: CUdeviceptr,
    src_array: *mut c_void,
    src_pitch: usize,
    dst_x_in_bytes: usize,
    dst_y: usize,
    dst_memory_type: u32,
    dst_host: *mut c_void,
    dst_device: CUdeviceptr,
    dst_array: *mut c_void,
    dst_pitch: usize,
    width_in_bytes: usize,
    height: usize,
}

/// `CUDA_MEMCPY3D` as the driver API lays it out.
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct Memcpy3D {
    pub(super) src_x_in_bytes: usize,
    pub(super) src_y: usize,
    pub(super) src_z: usize,
    pub(super) src_lod: usize,
    pub(super) src_memory_type: u32,
    pub(super) src_host: *const c_void,
    pub(super) src_device: CUdeviceptr,
    pub(super) src_array: *mut c_void,
    pub(super) reserved0: *mut c_void,
    pub(super) src_pitch: usize,
    pub(super) src_height: usize,
    pub(super) dst_x_in_bytes: usize,
    pub(super) dst_y: usize,
    pub(super) dst_z: usize,
    pub(super) dst_lod: usize,
    pub(super) dst_memory_type: u32,
    pub(super) dst_host: *mut c_void,
    pub(super) dst_device: CUdeviceptr,
    pub(super) dst_array: *mut c_void,
    pub(super) reserved1: *mut c_void,
    pub(super) dst_pitch: usize,
    pub(super) dst_height: usize,
    pub(super) width_in_bytes: usize,
    pub(super) height: usize,
    pub(super) depth: usize,
}

/// Where one side of a copy is.
#[derive(Clone, Copy)]
enum Place {
    Host(usize),
    Device(u64),
}

/// Device memory when the shim knows the address as one of the program's
/// device ranges; host memory otherwise (unified addressing).
fn classify(s: &Shim, ptr: u64) -> Place {
    if s.find_device_range(ptr, 0).is_some() {
        Place::Device(ptr)
    } else {
        Place::Host(ptr as usize)
    }
}

/// One side of a 2D copy: its first row, by memory type, offset by
/// `(x, y)` rows of `pitch`.
fn side(s: &Shim, memory_type: u32, host: usize, device: u64, x: usize, y: usize, pitch: usize) -> CuResult<Place> {
    let offset = y
        .checked_mul(pitch)
        .and_then(|o| o.checked_add(x))
        .ok_or(CuError::INVALID_VALUE)?;
    let base = match memory_type {
        // Managed memory is device memory at the same address.
        MEMORYTYPE_HOST if managed::is_managed(host) => Place::Device(host as u64),
        MEMORYTYPE_HOST => Place::Host(host),
        MEMORYTYPE_DEVICE => Place::Device(device),
        MEMORYTYPE_UNIFIED => classify(s, device),
        // Copies with an array end go by `copy_2d_array`.
        _ => return Err(CuError::INVALID_VALUE),
    };
    match base {
        Place::Host(0) => Err(CuError::INVALID_VALUE),
        Place::Host(p) => p.checked_add(offset).map(Place::Host).ok_or(CuError::INVALID_VALUE),
        Place::Device(p) => p
            .checked_add(offset as u64)
            .map(Place::Device)
            .ok_or(CuError::INVALID_VALUE),
    }
}

/// Bytes from the start of the first of `height` rows `pitch` apart to the
/// end of the last one's `width` bytes.
fn span(pitch: usize, width: usize, height: usize) -> CuResult<usize> {
    (height - 1)
        .checked_mul(pitch)
        .and_then(|x| x.checked_add(width))
        .ok_or(CuError::INVALID_VALUE)
}

/// A host-to-host copy on a stream: after the stream's earlier work (which
/// may write either buffer), in the program's own memory.
///
/// # Safety
/// `dst` and `src` must be valid for `n` bytes (the API contract).
unsafe fn host_copy(mode: DefaultStream, dst: usize, src: usize, n: usize, stream: CUstream) -> CuResult {
    if dst == 0 || src == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    unsafe { stream_synchronize(mode, stream) }?;
    // SAFETY: the program passed n bytes at each; `copy` tolerates overlap.
    unsafe { std::ptr::copy(src as *const u8, dst as *mut u8, n) };
    Ok(())
}

unsafe fn copy_unified(mode: DefaultStream, dst: u64, src: u64, size: usize, stream: CUstream, sync: bool) -> CuResult {
    let s = shim()?;
    if size == 0 {
        return Ok(());
    }
    unsafe { copy_linear(mode, classify(s, dst), classify(s, src), size, stream, sync) }
}

/// `n` contiguous bytes from `src` to `dst`, by the copy their places call for.
///
/// # Safety
/// Host places must be valid for `n` bytes (the API contract).
unsafe fn copy_linear(mode: DefaultStream, dst: Place, src: Place, n: usize, stream: CUstream, sync: bool) -> CuResult {
    match (dst, src) {
        (Place::Device(d), Place::Device(from)) => dtod(mode, d, from, n, stream, sync),
        (Place::Device(d), Place::Host(from)) => unsafe { htod(mode, d, from as *const c_void, n, stream, sync) },
        (Place::Host(d), Place::Device(from)) => unsafe { dtoh(mode, d as *mut c_void, from, n, stream, sync) },
        (Place::Host(d), Place::Host(from)) => unsafe { host_copy(mode, d, from, n, stream) },
    }
}

pub unsafe fn memcpy_unified(mode: DefaultStream, dst: CUdeviceptr, src: CUdeviceptr, size: usize) -> CuResult {
    unsafe { copy_unified(mode, dst, src, size, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_unified_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    src: CUdeviceptr,
    size: usize,
    stream: CUstream,
) -> CuResult {
    unsafe { copy_unified(mode, dst, src, size, stream, false) }
}

/// `CUmemcpyAttributes`: the source access order (`CUmemcpySrcAccessOrder`,
/// 1 to 3), location hints and flags.
#[repr(C)]
#[derive(Clone, Copy)]
struct MemcpyAttributes {
    src_access_order: u32,
    src_location: [u32; 2],
    dst_location: [u32; 2],
    flags: u32,
}

/// Copies a batch may hold at most.
const MAX_BATCH: usize = 1 << 20;

/// `cuMemcpyBatchAsync`: each copy as `cuMemcpyAsync` makes it, in order
/// on the stream (CUDA leaves the order within a batch open, so this is one
/// of the orders it allows). The location hints and flags are hints; every
/// source access order is met, since host sources are read at the call or
/// in stream order as for any asynchronous copy.
///
/// # Safety
/// The arrays hold `count` and `num_attrs` entries (API contract).
#[allow(clippy::too_many_arguments)]
unsafe fn batch(
    mode: DefaultStream,
    dsts: *const CUdeviceptr,
    srcs: *const CUdeviceptr,
    sizes: *const usize,
    count: usize,
    attrs: *const c_void,
    attr_idxs: *const usize,
    num_attrs: usize,
    stream: CUstream,
) -> CuResult {
    shim()?;
    // The legacy default stream is not allowed (`CU_STREAM_LEGACY` is 1).
    if (mode == DefaultStream::Legacy && handle(stream) == 0) || handle(stream) == 1 {
        return Err(CuError::INVALID_VALUE);
    }
    if count == 0 || count > MAX_BATCH || num_attrs == 0 || num_attrs > count {
        return Err(CuError::INVALID_VALUE);
    }
    if [
        dsts.is_null(),
        srcs.is_null(),
        sizes.is_null(),
        attrs.is_null(),
        attr_idxs.is_null(),
    ]
    .contains(&true)
    {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the caller's promise.
    let (dsts, srcs, sizes, attrs, idxs) = unsafe {
        (
            std::slice::from_raw_parts(dsts, count),
            std::slice::from_raw_parts(srcs, count),
            std::slice::from_raw_parts(sizes, count),
            std::slice::from_raw_parts(attrs.cast::<MemcpyAttributes>(), num_attrs),
            std::slice::from_raw_parts(attr_idxs, num_attrs),
        )
    };
    let ordered = idxs[0] == 0 && idxs.windows(2).all(|w| w[0] < w[1]) && idxs[num_attrs - 1] < count;
    if !ordered || attrs.iter().any(|a| !(1..=3).contains(&a.src_access_order)) {
        return Err(CuError::INVALID_VALUE);
    }
    for i in 0..count {
        unsafe { copy_unified(mode, dsts[i], srcs[i], sizes[i], stream, false) }?;
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn memcpy_batch_async(
    mode: DefaultStream,
    dsts: *const CUdeviceptr,
    srcs: *const CUdeviceptr,
    sizes: *const usize,
    count: usize,
    attrs: *const c_void,
    attr_idxs: *const usize,
    num_attrs: usize,
    stream: CUstream,
) -> CuResult {
    unsafe { batch(mode, dsts, srcs, sizes, count, attrs, attr_idxs, num_attrs, stream) }
}

/// The CUDA 12.8 form, which also names the failing copy (`SIZE_MAX`:
/// none in particular).
#[allow(clippy::too_many_arguments)]
pub unsafe fn memcpy_batch_async_fail_idx(
    mode: DefaultStream,
    dsts: *const CUdeviceptr,
    srcs: *const CUdeviceptr,
    sizes: *const usize,
    count: usize,
    attrs: *const c_void,
    attr_idxs: *const usize,
    num_attrs: usize,
    fail_idx: *mut usize,
    stream: CUstream,
) -> CuResult {
    let r = unsafe { batch(mode, dsts, srcs, sizes, count, attrs, attr_idxs, num_attrs, stream) };
    if r.is_err() && !fail_idx.is_null() {
        // SAFETY: a writable size_t when non-null (API contract).
        unsafe { fail_idx.write(usize::MAX) };
    }
    r
}

pub unsafe fn memcpy_2d(mode: DefaultStream, copy: *const c_void) -> CuResult {
    unsafe { copy_2d(mode, copy, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_2d_async(mode: DefaultStream, copy: *const c_void, stream: CUstream) -> CuResult {
    unsafe { copy_2d(mode, copy, stream, false) }
}

unsafe fn copy_2d(mode: DefaultStream, copy: *const c_void, stream: CUstream, sync: bool) -> CuResult {
    if copy.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUDA_MEMCPY2D; read unaligned to be safe.
    let c = unsafe { std::ptr::read_unaligned(copy.cast::<Memcpy2D>()) };
    sync_copy_begins(mode, stream, sync)?;
    unsafe { copy_2d_of(mode, &c, stream, sync) }
}

/// Before a 2D or 3D copy, whose pieces may stream: managed memory goes to
/// the device, and a synchronous copy waits as a linear one does
/// ([`before_sync`]).
fn sync_copy_begins(mode: DefaultStream, stream: CUstream, sync: bool) -> CuResult {
    let s = shim()?;
    let sref = Shim::stream_ref(mode, handle(stream));
    managed::settle_for(s, sref)?;
    if sync {
        before_sync(s, stream_ctx(s, stream)?, sref, true);
    }
    Ok(())
}

/// One end of a 1D array copy.
#[derive(Clone, Copy)]
enum End {
    Host(usize),
    Device(CUdeviceptr),
    /// An array and a byte offset into its first row.
    Array(*mut c_void, usize),
}

/// The 1D array copies (`cuMemcpyHtoA` and the rest): one row of `count`
/// bytes as a 2D copy, which checks the row against the array's extent.
unsafe fn copy_1d_array(
    mode: DefaultStream,
    dst: End,
    src: End,
    count: usize,
    stream: CUstream,
    sync: bool,
) -> CuResult {
    shim()?;
    let ends = [dst, src];
    if !ends.iter().any(|e| matches!(e, End::Array(..))) {
        return Err(CuError::INVALID_VALUE);
    }
    for e in ends {
        if matches!(e, End::Array(a, _) if a.is_null()) {
            return Err(CuError::INVALID_VALUE);
        }
    }
    if count == 0 {
        return Ok(());
    }
    // (memory type, x in bytes, host, device, array)
    let fields = |e: End| match e {
        End::Host(p) => (MEMORYTYPE_HOST, 0, p, 0, std::ptr::null_mut()),
        End::Device(p) => (MEMORYTYPE_DEVICE, 0, 0, p, std::ptr::null_mut()),
        End::Array(a, offset) => (MEMORYTYPE_ARRAY, offset, 0, 0, a),
    };
    let (dst_type, dst_x, dst_host, dst_device, dst_array) = fields(dst);
    let (src_type, src_x, src_host, src_device, src_array) = fields(src);
    let c = Memcpy2D {
        src_x_in_bytes: src_x,
        src_y: 0,
        src_memory_type: src_type,
        src_host: src_host as *const c_void,
        src_device,
        src_array,
        src_pitch: count,
        dst_x_in_bytes: dst_x,
        dst_y: 0,
        dst_memory_type: dst_type,
        dst_host: dst_host as *mut c_void,
        dst_device,
        dst_array,
        dst_pitch: count,
        width_in_bytes: count,
        height: 1,
    };
    sync_copy_begins(mode, stream, sync)?;
    unsafe { copy_2d_of(mode, &c, stream, sync) }
}

pub unsafe fn memcpy_htoa(
    mode: DefaultStream,
    dst: *mut c_void,
    offset: usize,
    src: *const c_void,
    count: usize,
) -> CuResult {
    let (dst, src) = (End::Array(dst, offset), End::Host(src as usize));
    unsafe { copy_1d_array(mode, dst, src, count, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_htoa_async(
    mode: DefaultStream,
    dst: *mut c_void,
    offset: usize,
    src: *const c_void,
    count: usize,
    stream: CUstream,
) -> CuResult {
    let (dst, src) = (End::Array(dst, offset), End::Host(src as usize));
    unsafe { copy_1d_array(mode, dst, src, count, stream, false) }
}

pub unsafe fn memcpy_atoh(
    mode: DefaultStream,
    dst: *mut c_void,
    src: *mut c_void,
    offset: usize,
    count: usize,
) -> CuResult {
    let (dst, src) = (End::Host(dst as usize), End::Array(src, offset));
    unsafe { copy_1d_array(mode, dst, src, count, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_atoh_async(
    mode: DefaultStream,
    dst: *mut c_void,
    src: *mut c_void,
    offset: usize,
    count: usize,
    stream: CUstream,
) -> CuResult {
    let (dst, src) = (End::Host(dst as usize), End::Array(src, offset));
    unsafe { copy_1d_array(mode, dst, src, count, stream, false) }
}

pub unsafe fn memcpy_dtoa(
    mode: DefaultStream,
    dst: *mut c_void,
    offset: usize,
    src: CUdeviceptr,
    count: usize,
) -> CuResult {
    let (dst, src) = (End::Array(dst, offset), End::Device(src));
    unsafe { copy_1d_array(mode, dst, src, count, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_atod(
    mode: DefaultStream,
    dst: CUdeviceptr,
    src: *mut c_void,
    offset: usize,
    count: usize,
) -> CuResult {
    let (dst, src) = (End::Device(dst), End::Array(src, offset));
    unsafe { copy_1d_array(mode, dst, src, count, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_atoa(
    mode: DefaultStream,
    dst: *mut c_void,
    dst_offset: usize,
    src: *mut c_void,
    src_offset: usize,
    count: usize,
) -> CuResult {
    let (dst, src) = (End::Array(dst, dst_offset), End::Array(src, src_offset));
    unsafe { copy_1d_array(mode, dst, src, count, std::ptr::null_mut(), true) }
}

/// A graph's copy node (`CUDA_MEMCPY3D`) as a device-to-device copy:
/// `(dst, src, len)`. A node with a host end cannot be held by the
/// server's graph (the host's bytes are the client's, read when the graph
/// runs), nor one with an array end or more than one row yet.
///
/// # Safety
/// `copy` points at a `CUDA_MEMCPY3D` when non-null (API contract).
pub(super) unsafe fn device_copy_of(copy: *const c_void) -> CuResult<(u64, u64, u64)> {
    let s = shim()?;
    if copy.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the caller's promise; read unaligned to be safe.
    let c = unsafe { std::ptr::read_unaligned(copy.cast::<Memcpy3D>()) };
    if c.width_in_bytes == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if c.height > 1 || c.depth > 1 {
        tracing::warn!("a graph copy node of more than one row is not offered yet; returning CUDA_ERROR_NOT_SUPPORTED");
        return Err(CuError::NOT_SUPPORTED);
    }
    let (src, dst) = (
        side(
            s,
            c.src_memory_type,
            c.src_host as usize,
            c.src_device,
            c.src_x_in_bytes,
            c.src_y,
            c.src_pitch,
        ),
        side(
            s,
            c.dst_memory_type,
            c.dst_host as usize,
            c.dst_device,
            c.dst_x_in_bytes,
            c.dst_y,
            c.dst_pitch,
        ),
    );
    match (dst, src) {
        (Ok(Place::Device(d)), Ok(Place::Device(from))) => Ok((d, from, c.width_in_bytes as u64)),
        _ => {
            tracing::warn!(
                "a graph copy node with a host or array end cannot be held by the server's graph; \
                 returning CUDA_ERROR_NOT_SUPPORTED"
            );
            Err(CuError::NOT_SUPPORTED)
        }
    }
}

pub unsafe fn memcpy_3d(mode: DefaultStream, copy: *const c_void) -> CuResult {
    unsafe { copy_3d(mode, copy, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_3d_async(mode: DefaultStream, copy: *const c_void, stream: CUstream) -> CuResult {
    unsafe { copy_3d(mode, copy, stream, false) }
}

/// A 3D copy between linear memories is `depth` 2D copies, one per slice
/// (slice `z` of a side starts `z * height` rows of its pitch further), in
/// order on the stream; slices whose rows follow on from each other on both
/// sides (each side's slice height is the copy's height) are one 2D copy.
/// CUDA arrays and mipmap levels are not supported.
/// `cuMemcpy3DPeer`: `CUDA_MEMCPY3D_PEER` is `CUDA_MEMCPY3D` with each
/// end's context where the latter has a reserved word. The contexts must be
/// the program's; the copy is then made by address, as the server's driver
/// copies between its devices.
unsafe fn copy_3d_peer(mode: DefaultStream, copy: *const c_void, stream: CUstream, sync: bool) -> CuResult {
    let s = shim()?;
    if copy.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUDA_MEMCPY3D_PEER; read unaligned.
    let mut c = unsafe { std::ptr::read_unaligned(copy.cast::<Memcpy3D>()) };
    for ctx in [c.reserved0, c.reserved1] {
        if !read(&s.contexts).contains_key(&handle(ctx)) {
            return Err(CuError::INVALID_CONTEXT);
        }
    }
    (c.reserved0, c.reserved1) = (std::ptr::null_mut(), std::ptr::null_mut());
    unsafe { copy_3d(mode, (&raw const c).cast(), stream, sync) }
}

pub unsafe fn memcpy_3d_peer(mode: DefaultStream, copy: *const c_void) -> CuResult {
    unsafe { copy_3d_peer(mode, copy, std::ptr::null_mut(), true) }
}

pub unsafe fn memcpy_3d_peer_async(mode: DefaultStream, copy: *const c_void, stream: CUstream) -> CuResult {
    unsafe { copy_3d_peer(mode, copy, stream, false) }
}

unsafe fn copy_3d(mode: DefaultStream, copy: *const c_void, stream: CUstream, sync: bool) -> CuResult {
    if copy.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUDA_MEMCPY3D; read unaligned to be safe.
    let c = unsafe { std::ptr::read_unaligned(copy.cast::<Memcpy3D>()) };
    if c.src_lod != 0 || c.dst_lod != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let (width, height, depth) = (c.width_in_bytes, c.height, c.depth);
    let (src_array, dst_array) = (
        c.src_memory_type == MEMORYTYPE_ARRAY,
        c.dst_memory_type == MEMORYTYPE_ARRAY,
    );
    // An array's slices are its own; a linear side's are its slice height
    // of rows.
    if depth > 1 && ((!src_array && height > c.src_height) || (!dst_array && height > c.dst_height)) {
        return Err(CuError::INVALID_VALUE);
    }
    if width == 0 || height == 0 || depth == 0 {
        return Ok(());
    }
    // The first row of slice `z` on each side.
    let row = |y: usize, z: usize, slice: usize| {
        z.checked_mul(slice)
            .and_then(|r| r.checked_add(y))
            .ok_or(CuError::INVALID_VALUE)
    };
    let slice_2d = |z: usize, rows: usize| -> CuResult<Memcpy2D> {
        Ok(Memcpy2D {
            src_x_in_bytes: c.src_x_in_bytes,
            src_y: if src_array {
                c.src_y
            } else {
                row(c.src_y, c.src_z + z, c.src_height)?
            },
            src_memory_type: c.src_memory_type,
            src_host: c.src_host,
            src_device: c.src_device,
            src_array: c.src_array,
            src_pitch: c.src_pitch,
            dst_x_in_bytes: c.dst_x_in_bytes,
            dst_y: if dst_array {
                c.dst_y
            } else {
                row(c.dst_y, c.dst_z + z, c.dst_height)?
            },
            dst_memory_type: c.dst_memory_type,
            dst_host: c.dst_host,
            dst_device: c.dst_device,
            dst_array: c.dst_array,
            dst_pitch: c.dst_pitch,
            width_in_bytes: width,
            height: rows,
        })
    };
    if src_array || dst_array {
        let s = shim()?;
        if src_array {
            check_array_extent(
                s,
                handle(c.src_array),
                (c.src_x_in_bytes, c.src_y, c.src_z),
                (width, height, depth),
            )?;
        }
        if dst_array {
            check_array_extent(
                s,
                handle(c.dst_array),
                (c.dst_x_in_bytes, c.dst_y, c.dst_z),
                (width, height, depth),
            )?;
        }
        sync_copy_begins(mode, stream, sync)?;
        for z in 0..depth {
            let slice = slice_2d(z, height)?;
            let zs = (c.src_z + z, c.dst_z + z);
            unsafe { copy_2d_array(mode, &slice, zs, stream, sync && z + 1 == depth) }?;
        }
        return Ok(());
    }
    let slices: Vec<Memcpy2D> = if depth == 1 || (c.src_height == height && c.dst_height == height) {
        vec![slice_2d(0, height.checked_mul(depth).ok_or(CuError::INVALID_VALUE)?)?]
    } else {
        (0..depth).map(|z| slice_2d(z, height)).collect::<CuResult<_>>()?
    };
    sync_copy_begins(mode, stream, sync)?;
    let last = slices.len() - 1;
    for (i, slice) in slices.iter().enumerate() {
        // Earlier slices stream; the last one waits when the copy does.
        unsafe { copy_2d_of(mode, slice, stream, sync && i == last) }?;
    }
    Ok(())
}

unsafe fn copy_2d_of(mode: DefaultStream, c: &Memcpy2D, stream: CUstream, sync: bool) -> CuResult {
    let s = shim()?;
    let (width, height) = (c.width_in_bytes, c.height);
    if c.src_memory_type == MEMORYTYPE_ARRAY || c.dst_memory_type == MEMORYTYPE_ARRAY {
        return unsafe { copy_2d_array(mode, c, (0, 0), stream, sync) };
    }
    if height > 1 && (width > c.src_pitch || width > c.dst_pitch) {
        return Err(CuError::INVALID_VALUE);
    }
    let src = side(
        s,
        c.src_memory_type,
        c.src_host as usize,
        c.src_device,
        c.src_x_in_bytes,
        c.src_y,
        c.src_pitch,
    )?;
    let dst = side(
        s,
        c.dst_memory_type,
        c.dst_host as usize,
        c.dst_device,
        c.dst_x_in_bytes,
        c.dst_y,
        c.dst_pitch,
    )?;
    if width == 0 || height == 0 {
        return Ok(());
    }
    let (sp, dp) = (c.src_pitch, c.dst_pitch);
    // Rows that touch end to end on both sides are one linear copy.
    if height == 1 || (width == sp && width == dp) {
        let total = width.checked_mul(height).ok_or(CuError::INVALID_VALUE)?;
        return unsafe { copy_linear(mode, dst, src, total, stream, sync) };
    }
    let sref = Shim::stream_ref(mode, handle(stream));
    match (dst, src) {
        (Place::Host(d), Place::Host(f)) => {
            unsafe { stream_synchronize(mode, stream) }?;
            for row in 0..height {
                // SAFETY: each row is `width` bytes of the rows the program named.
                unsafe { std::ptr::copy((f + row * sp) as *const u8, (d + row * dp) as *mut u8, width) };
            }
            Ok(())
        }
        (Place::Device(d), Place::Device(f)) => {
            let ctx = device_range_ctx(s, d, span(dp, width, height)? as u64)?;
            device_range_ctx(s, f, span(sp, width, height)? as u64)?;
            let req = Request::MemcpyDtoD2D {
                ctx,
                stream: sref,
                dst: d,
                dst_pitch: dp as u64,
                src: f,
                src_pitch: sp as u64,
                width: width as u64,
                height: height as u64,
            };
            s.remote.call_or_post(&req, &[], sync)
        }
        (Place::Device(d), Place::Host(f)) if width > COPY_CHUNK => {
            // Rows wider than a chunk: each row is a linear copy.
            for row in 0..height {
                let last = row + 1 == height;
                let from = (f + row * sp) as *const c_void;
                unsafe { htod(mode, d + (row * dp) as u64, from, width, stream, sync && last) }?;
            }
            Ok(())
        }
        (Place::Device(d), Place::Host(f)) => {
            let ctx = device_range_ctx(s, d, span(dp, width, height)? as u64)?;
            refuse_if_capturing(s, sref)?;
            if !sync {
                before_reading(s, ctx, sref, f);
            }
            let band = COPY_CHUNK / width;
            let mut packed = Vec::with_capacity(band.min(height) * width);
            let mut first = 0;
            while first < height {
                let rows = band.min(height - first);
                packed.clear();
                for row in first..first + rows {
                    // SAFETY: the program passed `height` rows of `width`
                    // readable bytes, `sp` apart, at f.
                    packed.extend_from_slice(unsafe { std::slice::from_raw_parts((f + row * sp) as *const u8, width) });
                }
                let req = Request::MemcpyHtoD2D {
                    ctx,
                    stream: sref,
                    dst: d,
                    pitch: dp as u64,
                    width: width as u64,
                    first_row: first as u64,
                    rows: rows as u64,
                };
                first += rows;
                s.remote.call_or_post(&req, &packed, sync && first == height)?;
            }
            Ok(())
        }
        (Place::Host(d), Place::Device(f)) if width > COPY_CHUNK => {
            for row in 0..height {
                let last = row + 1 == height;
                let to = (d + row * dp) as *mut c_void;
                unsafe { dtoh(mode, to, f + (row * sp) as u64, width, stream, sync && last) }?;
            }
            Ok(())
        }
        (Place::Host(d), Place::Device(f)) => {
            let ctx = device_range_ctx(s, f, span(sp, width, height)? as u64)?;
            refuse_if_capturing(s, sref)?;
            let req = Request::MemcpyDtoH2D {
                ctx,
                stream: sref,
                src: f,
                pitch: sp as u64,
                width: width as u64,
                height: height as u64,
                sync,
            };
            let sink = Sink::rows(d as *mut u8, width, dp, height);
            // SAFETY (both): the program gave `height` rows of `width`
            // writable bytes, `dp` apart, at d, which CUDA lets us fill until
            // the copy is observed complete.
            match sync {
                true => unsafe { s.remote.call_into_sink(&req, sink, true) },
                false => unsafe { stream_into(s, &req, ctx, sref, sink) },
            }
        }
    }
}

/// One end of a 2D copy with an array end: host memory with its pitch, or
/// on the GPU.
#[derive(Clone, Copy)]
enum ArrayCopyEnd {
    Host(usize, usize),
    Gpu(CopyEnd),
}

/// A 2D copy of which one end (or both) is a CUDA array, in slice `z` of
/// each array end (`zs`: source, destination). Between the GPU's ends it is
/// one request; host memory goes in bands of rows of at most a copy chunk,
/// rows wider than a chunk in pieces of columns.
unsafe fn copy_2d_array(
    mode: DefaultStream,
    c: &Memcpy2D,
    zs: (usize, usize),
    stream: CUstream,
    sync: bool,
) -> CuResult {
    let s = shim()?;
    let (width, height) = (c.width_in_bytes, c.height);
    let mut array_ctx = None;
    let mut end =
        |kind: u32, host: usize, device: u64, array: *mut c_void, (x, y, z): (usize, usize, usize), pitch: usize| {
            let linear = |base: u64| {
                y.checked_mul(pitch)
                    .and_then(|o| o.checked_add(x))
                    .and_then(|o| base.checked_add(o as u64))
                    .ok_or(CuError::INVALID_VALUE)
            };
            // Unified addressing: the pointer (in the device field) says which.
            let (kind, host) = match (kind, classify(s, device)) {
                (MEMORYTYPE_UNIFIED, Place::Host(p)) => (MEMORYTYPE_HOST, p),
                (MEMORYTYPE_UNIFIED, Place::Device(_)) => (MEMORYTYPE_DEVICE, host),
                (k, _) => (k, host),
            };
            if kind == MEMORYTYPE_HOST && host == 0 {
                return Err(CuError::INVALID_VALUE);
            }
            Ok(match kind {
                MEMORYTYPE_HOST if managed::is_managed(host) => ArrayCopyEnd::Gpu(CopyEnd::Device {
                    ptr: linear(host as u64)?,
                    pitch: pitch as u64,
                }),
                MEMORYTYPE_HOST => ArrayCopyEnd::Host(linear(host as u64)? as usize, pitch),
                MEMORYTYPE_DEVICE => ArrayCopyEnd::Gpu(CopyEnd::Device {
                    ptr: linear(device)?,
                    pitch: pitch as u64,
                }),
                MEMORYTYPE_ARRAY => {
                    let entry = array_entry(s, handle(array))?;
                    check_array_extent(s, handle(array), (x, y, z), (width, height, 1))?;
                    array_ctx = Some(entry.ctx);
                    ArrayCopyEnd::Gpu(CopyEnd::Array(ArrayPos {
                        array: handle(array),
                        x: x as u64,
                        y: y as u64,
                        z: z as u64,
                    }))
                }
                _ => return Err(CuError::INVALID_VALUE),
            })
        };
    let src = end(
        c.src_memory_type,
        c.src_host as usize,
        c.src_device,
        c.src_array,
        (c.src_x_in_bytes, c.src_y, zs.0),
        c.src_pitch,
    )?;
    let dst = end(
        c.dst_memory_type,
        c.dst_host as usize,
        c.dst_device,
        c.dst_array,
        (c.dst_x_in_bytes, c.dst_y, zs.1),
        c.dst_pitch,
    )?;
    let ctx = array_ctx.ok_or(CuError::INVALID_VALUE)?;
    if height > 1 {
        let narrow = |e: ArrayCopyEnd| match e {
            ArrayCopyEnd::Host(_, pitch) => width > pitch,
            ArrayCopyEnd::Gpu(CopyEnd::Device { pitch, .. }) => width as u64 > pitch,
            ArrayCopyEnd::Gpu(CopyEnd::Array(_)) => false,
        };
        if narrow(src) || narrow(dst) {
            return Err(CuError::INVALID_VALUE);
        }
    }
    if width == 0 || height == 0 {
        return Ok(());
    }
    let sref = Shim::stream_ref(mode, handle(stream));
    // Column pieces of at most a chunk, and bands of rows of each.
    let pieces: Vec<(usize, usize)> = (0..width)
        .step_by(COPY_CHUNK)
        .map(|x| (x, COPY_CHUNK.min(width - x)))
        .collect();
    let at = |p: ArrayPos, dx: usize| ArrayPos {
        x: p.x + dx as u64,
        ..p
    };
    match (dst, src) {
        (ArrayCopyEnd::Gpu(d), ArrayCopyEnd::Gpu(f)) => {
            let req = Request::MemcpyArray {
                ctx,
                stream: sref,
                dst: d,
                src: f,
                width: width as u64,
                height: height as u64,
            };
            s.remote.call_or_post(&req, &[], sync)
        }
        (ArrayCopyEnd::Gpu(CopyEnd::Array(pos)), ArrayCopyEnd::Host(f, sp)) => {
            refuse_if_capturing(s, sref)?;
            if !sync {
                before_reading(s, ctx, sref, f);
            }
            let mut packed = Vec::new();
            for (i, &(px, cw)) in pieces.iter().enumerate() {
                let band = (COPY_CHUNK / cw).max(1);
                let mut first = 0;
                while first < height {
                    let rows = band.min(height - first);
                    packed.clear();
                    for r in first..first + rows {
                        // SAFETY: the program passed `height` rows of
                        // `width` readable bytes, `sp` apart, at f.
                        packed.extend_from_slice(unsafe {
                            std::slice::from_raw_parts((f + r * sp + px) as *const u8, cw)
                        });
                    }
                    let req = Request::MemcpyHtoA {
                        ctx,
                        stream: sref,
                        dst: at(pos, px),
                        width: cw as u64,
                        first_row: first as u64,
                        rows: rows as u64,
                    };
                    first += rows;
                    let last = i + 1 == pieces.len() && first == height;
                    s.remote.call_or_post(&req, &packed, sync && last)?;
                }
            }
            Ok(())
        }
        (ArrayCopyEnd::Host(d, dp), ArrayCopyEnd::Gpu(CopyEnd::Array(pos))) => {
            refuse_if_capturing(s, sref)?;
            for (i, &(px, cw)) in pieces.iter().enumerate() {
                let wait = sync && i + 1 == pieces.len();
                let req = Request::MemcpyAtoH {
                    ctx,
                    stream: sref,
                    src: at(pos, px),
                    width: cw as u64,
                    height: height as u64,
                    sync: wait,
                };
                let sink = Sink::rows((d + px) as *mut u8, cw, dp, height);
                // SAFETY (both): the program gave `height` rows of `width`
                // writable bytes, `dp` apart, at d, which CUDA lets us fill
                // until the copy is observed complete.
                match wait {
                    true => unsafe { s.remote.call_into_sink(&req, sink, true) }?,
                    false => unsafe { stream_into(s, &req, ctx, sref, sink) }?,
                }
            }
            Ok(())
        }
        // One end is an array; host memory to device memory is not this.
        _ => Err(CuError::INVALID_VALUE),
    }
}

/// A 2D memset of `height` rows of `width` elements, `pitch` bytes apart.
#[allow(clippy::too_many_arguments)]
fn memset_2d(
    mode: DefaultStream,
    dst: u64,
    pitch: usize,
    value: u32,
    elem_size: u8,
    width: usize,
    height: usize,
    stream: CUstream,
    sync: bool,
) -> CuResult {
    let s = shim()?;
    if width == 0 || height == 0 {
        return Ok(());
    }
    let bytes = width.checked_mul(elem_size as usize).ok_or(CuError::INVALID_VALUE)?;
    if height > 1 && bytes > pitch {
        return Err(CuError::INVALID_VALUE);
    }
    if height == 1 || bytes == pitch {
        let count = width.checked_mul(height).ok_or(CuError::INVALID_VALUE)?;
        return memset(mode, dst, value, elem_size, count, stream, sync);
    }
    if !dst.is_multiple_of(elem_size as u64) || !pitch.is_multiple_of(elem_size as usize) {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = device_range_ctx(s, dst, span(pitch, bytes, height)? as u64)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    managed::settle_for(s, sref)?;
    before_sync(s, ctx, sref, sync);
    let req = Request::Memset2D {
        ctx,
        stream: sref,
        dst,
        pitch: pitch as u64,
        value,
        elem_size,
        width: width as u64,
        height: height as u64,
    };
    s.remote.call_or_post(&req, &[], sync)
}

pub unsafe fn memset_d2d8(mode: DefaultStream, dst: CUdeviceptr, pitch: usize, v: u8, w: usize, h: usize) -> CuResult {
    memset_2d(mode, dst, pitch, v.into(), 1, w, h, std::ptr::null_mut(), true)
}

pub unsafe fn memset_d2d16(
    mode: DefaultStream,
    dst: CUdeviceptr,
    pitch: usize,
    v: u16,
    w: usize,
    h: usize,
) -> CuResult {
    memset_2d(mode, dst, pitch, v.into(), 2, w, h, std::ptr::null_mut(), true)
}

pub unsafe fn memset_d2d32(
    mode: DefaultStream,
    dst: CUdeviceptr,
    pitch: usize,
    v: u32,
    w: usize,
    h: usize,
) -> CuResult {
    memset_2d(mode, dst, pitch, v, 4, w, h, std::ptr::null_mut(), true)
}

pub unsafe fn memset_d2d8_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    pitch: usize,
    v: u8,
    w: usize,
    h: usize,
    stream: CUstream,
) -> CuResult {
    memset_2d(mode, dst, pitch, v.into(), 1, w, h, stream, false)
}

pub unsafe fn memset_d2d16_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    pitch: usize,
    v: u16,
    w: usize,
    h: usize,
    stream: CUstream,
) -> CuResult {
    memset_2d(mode, dst, pitch, v.into(), 2, w, h, stream, false)
}

pub unsafe fn memset_d2d32_async(
    mode: DefaultStream,
    dst: CUdeviceptr,
    pitch: usize,
    v: u32,
    w: usize,
    h: usize,
    stream: CUstream,
) -> CuResult {
    memset_2d(mode, dst, pitch, v, 4, w, h, stream, false)
}

/// The pitch `cuMemAllocPitch` gives rows: a multiple of 512 bytes, as the
/// driver gives on current GPUs.
const PITCH_ALIGNMENT: usize = 512;

pub unsafe fn mem_alloc_pitch(
    ptr: *mut CUdeviceptr,
    pitch: *mut usize,
    width: usize,
    height: usize,
    element_size: u32,
) -> CuResult {
    shim()?;
    if ptr.is_null() || pitch.is_null() || width == 0 || height == 0 || !matches!(element_size, 4 | 8 | 16) {
        return Err(CuError::INVALID_VALUE);
    }
    let row = width
        .checked_next_multiple_of(PITCH_ALIGNMENT)
        .ok_or(CuError::INVALID_VALUE)?;
    let bytes = row.checked_mul(height).ok_or(CuError::INVALID_VALUE)?;
    unsafe { mem_alloc(ptr, bytes) }?;
    unsafe { out(pitch, row) }
}

pub unsafe fn mem_get_address_range(base: *mut CUdeviceptr, size: *mut usize, ptr: CUdeviceptr) -> CuResult {
    let s = shim()?;
    let (b, r) = s.find_device_range(ptr, 0).ok_or(CuError::NOT_FOUND)?;
    unsafe {
        out_opt(base, b);
        out_opt(size, r.size as usize);
    }
    Ok(())
}

/// `CU_MEMHOSTREGISTER_*`: portable, device-mapped, I/O memory, read-only.
const HOST_REGISTER_FLAGS: u32 = 0x0f;

pub unsafe fn mem_host_register(host: *mut c_void, size: usize, flags: u32) -> CuResult {
    let s = shim()?;
    current_ctx()?;
    if host.is_null() || size == 0 || flags & !HOST_REGISTER_FLAGS != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let start = host as usize;
    let end = start.checked_add(size).ok_or(CuError::INVALID_VALUE)?;
    let mut map = lock(&s.host_memory);
    let overlaps = map.range(..end).next_back().is_some_and(|(&b, r)| b + r.size > start);
    if overlaps {
        return Err(CuError::HOST_MEMORY_ALREADY_REGISTERED);
    }
    // The memory stays the program's own: registering it only tells the
    // shim that it is pinned, as it would be for a local GPU.
    map.insert(
        start,
        state::HostRange {
            size,
            flags,
            registered: true,
        },
    );
    Ok(())
}

pub unsafe fn mem_host_unregister(host: *mut c_void) -> CuResult {
    let s = shim()?;
    hostfns::settle_host_work(s);
    let mut map = lock(&s.host_memory);
    match map.get(&(host as usize)) {
        Some(r) if r.registered => {
            map.remove(&(host as usize));
            Ok(())
        }
        _ => Err(CuError::HOST_MEMORY_NOT_REGISTERED),
    }
}

pub unsafe fn mem_host_get_flags(flags: *mut u32, host: *mut c_void) -> CuResult {
    let s = shim()?;
    let (base, _) = s.find_host_range(host as usize).ok_or(CuError::INVALID_VALUE)?;
    let f = lock(&s.host_memory).get(&base).map(|r| r.flags).unwrap_or(0);
    unsafe { out(flags, f) }
}
