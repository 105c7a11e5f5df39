//! Green contexts (`cuGreenCtxCreate`) and the SM resources they are made
//! of (`cuDeviceGetDevResource`, `cuDevSmResourceSplitByCount`,
//! `cuDevResourceGenerateDesc`), as PyTorch's `torch.cuda.green_contexts`
//! partitions a GPU's SMs.
//!
//! The server's driver does every split, so the partitions are the GPU's
//! own; the server keeps the driver's resources and the program's
//! `CUdevResource` carries the server's number for one (in the bytes the
//! driver keeps for itself) beside its public fields. A green context is
//! also one of the session's contexts (`cuCtxFromGreenCtx`, answered
//! here): the program makes it current, launches on its default stream,
//! creates streams and allocates there as in any context. Memory allocated
//! in it belongs to its device's primary context and outlives it, as on
//! the driver, where a green context holds the primary context.

use super::*;
use gpupool_proto::message::SmResource;
use std::collections::HashMap;
use std::sync::Mutex;

/// Bytes of a `CUdevResource` (CUDA 12.4 to 13).
const RESOURCE_BYTES: usize = 144;
/// `CU_DEV_RESOURCE_TYPE_SM`.
const TYPE_SM: u32 = 1;
/// Marks a resource gpupool filled in.
const MAGIC: &[u8; 8] = b"gpupool\0";
/// `CU_STREAM_NON_BLOCKING`, the one flag of a green context's streams.
const STREAM_NON_BLOCKING: u32 = 1;
/// `CU_STREAM_PER_THREAD`.
const STREAM_PER_THREAD: Handle = 2;
/// The most groups of a split, and resources of a descriptor.
const MOST_GROUPS: u32 = 1024;

/// Green contexts -> (the context each is, its device).
static GREENS: Mutex<Option<HashMap<Handle, (Handle, i32)>>> = Mutex::new(None);

fn green(g: *mut c_void) -> CuResult<(Handle, i32)> {
    lock(&GREENS)
        .as_ref()
        .and_then(|m| m.get(&handle(g)).copied())
        .ok_or(CuError::INVALID_HANDLE)
}

/// The green context a context is, if it is one.
pub(super) fn green_of(ctx: Handle) -> Option<Handle> {
    lock(&GREENS)
        .as_ref()
        .and_then(|m| m.iter().find(|(_, (c, _))| *c == ctx).map(|(g, _)| *g))
}

fn encode(r: &SmResource) -> [u8; RESOURCE_BYTES] {
    let mut b = [0u8; RESOURCE_BYTES];
    b[0..4].copy_from_slice(&TYPE_SM.to_le_bytes());
    b[4..12].copy_from_slice(MAGIC);
    b[12..16].copy_from_slice(&r.id.to_le_bytes());
    let fields = [r.sm_count, r.min_partition, r.alignment, r.flags, r.locality];
    for (i, v) in fields.into_iter().enumerate() {
        b[96 + 4 * i..100 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    b
}

/// The server's number for a resource the program passes.
///
/// # Safety
/// `r` is NULL or points at a whole `CUdevResource`.
unsafe fn resource_id(r: *const u8) -> CuResult<u32> {
    if r.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let mut b = [0u8; RESOURCE_BYTES];
    // SAFETY: a CUdevResource is RESOURCE_BYTES readable bytes.
    unsafe { std::ptr::copy_nonoverlapping(r, b.as_mut_ptr(), RESOURCE_BYTES) };
    if u32::from_le_bytes([b[0], b[1], b[2], b[3]]) != TYPE_SM {
        return Err(CuError::INVALID_RESOURCE_TYPE);
    }
    if &b[4..12] != MAGIC {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(u32::from_le_bytes([b[12], b[13], b[14], b[15]]))
}

/// Write a resource into the program's `CUdevResource` (an empty one,
/// `CU_DEV_RESOURCE_TYPE_INVALID`, for none).
///
/// # Safety
/// `r` points at a writable `CUdevResource`.
unsafe fn write_resource(r: *mut u8, value: Option<&SmResource>) {
    let bytes = value.map_or([0u8; RESOURCE_BYTES], encode);
    // SAFETY: the program passes a whole CUdevResource.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), r, RESOURCE_BYTES) };
}

fn ask_resource(s: &Shim, device: i32, ctx: Option<Handle>, out_r: *mut u8, kind: u32) -> CuResult {
    if out_r.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    if kind != TYPE_SM {
        // Workqueues (CUDA 13.1) are not offered.
        return Err(CuError::INVALID_RESOURCE_TYPE);
    }
    match s.remote.call(&Request::DevResource { device, ctx }, &[])? {
        Reply::SmResources(r) if r.len() == 1 => {
            // SAFETY: checked not to be null; the program passes a resource.
            unsafe { write_resource(out_r, Some(&r[0])) };
            Ok(())
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn device_get_dev_resource(device: CUdevice, resource: *mut u8, kind: u32) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    ask_resource(s, device, None, resource, kind)
}

pub unsafe fn ctx_get_dev_resource(ctx: CUcontext, resource: *mut u8, kind: u32) -> CuResult {
    let s = shim()?;
    let h = handle(ctx);
    let device = s.context_device(h)?;
    ask_resource(s, device, Some(h), resource, kind)
}

pub unsafe fn green_ctx_get_dev_resource(g: *mut c_void, resource: *mut u8, kind: u32) -> CuResult {
    let s = shim()?;
    let (ctx, device) = green(g)?;
    ask_resource(s, device, Some(ctx), resource, kind)
}

pub unsafe fn dev_sm_resource_split_by_count(
    result: *mut u8,
    groups: *mut u32,
    input: *const u8,
    remainder: *mut u8,
    flags: u32,
    min_count: u32,
) -> CuResult {
    let s = shim()?;
    if groups.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUdevResource.
    let input = unsafe { resource_id(input) }?;
    let simulate = result.is_null();
    // SAFETY: checked not to be null.
    let wanted = if simulate { 0 } else { unsafe { groups.read() } };
    if wanted > MOST_GROUPS {
        return Err(CuError::INVALID_VALUE);
    }
    let req = Request::DevSmResourceSplitByCount {
        input,
        groups: wanted,
        simulate,
        remainder: !remainder.is_null(),
        flags,
        min_count,
    };
    let Reply::SmSplit {
        groups: made,
        count,
        remainder: rest,
    } = s.remote.call(&req, &[])?
    else {
        return Err(CuError::UNKNOWN);
    };
    if made.len() > wanted as usize {
        return Err(CuError::UNKNOWN);
    }
    for (i, r) in made.iter().enumerate() {
        // SAFETY: the program's `result` holds `wanted` resources.
        unsafe { write_resource(result.add(i * RESOURCE_BYTES), Some(r)) };
    }
    if !remainder.is_null() {
        // SAFETY: checked not to be null; the program passes a resource.
        unsafe { write_resource(remainder, rest.as_ref()) };
    }
    // SAFETY: checked not to be null.
    unsafe { out(groups, if simulate { count } else { made.len() as u32 }) }
}

pub unsafe fn dev_resource_generate_desc(desc: *mut *mut c_void, resources: *const u8, count: u32) -> CuResult {
    let s = shim()?;
    if desc.is_null() || resources.is_null() || count == 0 || count > MOST_GROUPS {
        return Err(CuError::INVALID_VALUE);
    }
    let ids = (0..count as usize)
        // SAFETY: the program passes `count` resources.
        .map(|i| unsafe { resource_id(resources.add(i * RESOURCE_BYTES)) })
        .collect::<CuResult<Vec<_>>>()?;
    match s
        .remote
        .call(&Request::DevResourceGenerateDesc { resources: ids }, &[])?
    {
        // SAFETY: checked not to be null.
        Reply::Handle(h) => unsafe { out(desc, as_ptr(h)) },
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn green_ctx_create(g: *mut *mut c_void, desc: *mut c_void, device: CUdevice, flags: u32) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    if g.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let req = Request::GreenCtxCreate {
        desc: handle(desc),
        device,
        flags,
    };
    let Reply::Pair(green, ctx) = s.remote.call(&req, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    let (green, ctx) = (green as Handle, ctx as Handle);
    write(&s.contexts).insert(ctx, device);
    write(&s.context_flags).insert(ctx, 0);
    lock(&GREENS)
        .get_or_insert_with(HashMap::new)
        .insert(green, (ctx, device));
    // SAFETY: checked not to be null.
    unsafe { out(g, as_ptr(green)) }
}

pub unsafe fn green_ctx_destroy(g: *mut c_void) -> CuResult {
    let s = shim()?;
    let (ctx, device) = green(g)?;
    let green = handle(g);
    s.remote.call(&Request::GreenCtxDestroy { green }, &[])?;
    if let Some(m) = lock(&GREENS).as_mut() {
        m.remove(&green);
    }
    // Its memory is the primary context's from now on (as on the server).
    let primary = lock(&s.primaries)[device as usize].handle;
    if let Some(primary) = primary {
        for r in lock(&s.device_memory).values_mut().filter(|r| r.ctx == ctx) {
            r.ctx = primary;
        }
    }
    write(&s.contexts).remove(&ctx);
    write(&s.context_flags).remove(&ctx);
    crate::exports::tables::context_gone(ctx);
    state::drop_from_stack(ctx);
    super::forget_context(s, ctx);
    write(&s.streams).retain(|_, info| info.ctx != ctx);
    Ok(())
}

pub unsafe fn ctx_from_green_ctx(ctx: *mut CUcontext, g: *mut c_void) -> CuResult {
    shim()?;
    let (c, _) = green(g)?;
    // SAFETY: the program passes a slot (NULL is refused by `out`).
    unsafe { out(ctx, as_ptr(c)) }
}

pub unsafe fn green_ctx_stream_create(stream: *mut CUstream, g: *mut c_void, flags: u32, priority: i32) -> CuResult {
    let s = shim()?;
    let (ctx, _) = green(g)?;
    if stream.is_null() || flags != STREAM_NON_BLOCKING {
        return Err(CuError::INVALID_VALUE);
    }
    // Named here and made on the server without a round trip, as other
    // streams are.
    let id = super::new_client_handle();
    let req = Request::GreenCtxStreamCreate {
        green: handle(g),
        flags,
        priority,
        id,
    };
    s.remote.post(&req, &[])?;
    // SAFETY: checked not to be null.
    unsafe { super::file_stream(s, stream, id, ctx, flags, priority) }
}

pub unsafe fn green_ctx_record_event(g: *mut c_void, event: CUevent) -> CuResult {
    let (ctx, _) = green(g)?;
    // SAFETY: the program's event, passed on with the green context's own.
    unsafe { ctx_record_event(as_ptr(ctx), event) }
}

pub unsafe fn green_ctx_wait_event(g: *mut c_void, event: CUevent) -> CuResult {
    let (ctx, _) = green(g)?;
    // SAFETY: as for the record.
    unsafe { ctx_wait_event(as_ptr(ctx), event) }
}

pub unsafe fn green_ctx_get_id(g: *mut c_void, id: *mut u64) -> CuResult {
    let (ctx, _) = green(g)?;
    // SAFETY: the program's slot, passed on.
    unsafe { ctx_get_id(as_ptr(ctx), id) }
}

/// `cuStreamGetCtx_v2`'s answer for a stream of context `ctx`: a green
/// context's streams (and the special streams while it is current) name
/// the green context and their device's primary context.
pub(super) fn stream_contexts(stream: Handle, ctx: Handle, device: i32) -> CuResult<(Handle, Handle)> {
    match green_of(ctx) {
        None => Ok((ctx, 0)),
        Some(_) if stream == STREAM_PER_THREAD => Err(CuError::INVALID_HANDLE),
        Some(g) => Ok((primary_context(device)?, g)),
    }
}
