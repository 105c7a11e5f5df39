//! Memory and events shared between processes (`cuIpcGetMemHandle`,
//! `cuIpcOpenMemHandle`, `cuIpcCloseMemHandle`, `cuIpcGetEventHandle`,
//! `cuIpcOpenEventHandle`). Each process has its own session, and the
//! server's driver shares between sessions as between processes; the
//! handles are the server's (64 bytes, which the program may pass on in
//! any way it likes), and a handle of another server is refused there with
//! `CUDA_ERROR_NOT_SUPPORTED`. Each is one round trip.

use super::*;
use crate::exports::CUipcHandle;
use gpupool_proto::message::IPC_HANDLE_LEN;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Opens not yet closed of each opened base: the driver answers a second
/// open of one handle with the same mapping, and the range stays until the
/// last close.
static OPENS: Mutex<BTreeMap<u64, u32>> = Mutex::new(BTreeMap::new());

/// Ask for a handle with `request`.
fn get_handle(s: &Shim, request: &Request, out_handle: *mut CUipcHandle) -> CuResult {
    match s.remote.call(request, &[])? {
        Reply::Bytes(b) if b.len() == IPC_HANDLE_LEN => {
            let mut reserved = [0u8; IPC_HANDLE_LEN];
            reserved.copy_from_slice(&b);
            // SAFETY: out_handle was checked for null by the caller; the
            // program passes room for a handle.
            unsafe { out(out_handle, CUipcHandle { reserved }) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn ipc_get_mem_handle(handle: *mut CUipcHandle, ptr: CUdeviceptr) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if handle.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // Only cuMemAlloc memory has one: not pool, graph, mapped or managed
    // memory, as with the driver.
    match s.find_device_range(ptr, 0) {
        Some((_, r)) if r.legacy_ipc => {}
        _ => return Err(CuError::INVALID_VALUE),
    }
    get_handle(s, &Request::IpcGetMemHandle { ctx, ptr }, handle)
}

pub unsafe fn ipc_open_mem_handle(ptr: *mut CUdeviceptr, handle: CUipcHandle, flags: u32) -> CuResult {
    let s = shim()?;
    let (ctx, device) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    if ptr.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let request = Request::IpcOpenMemHandle {
        ctx,
        handle: handle.reserved.to_vec(),
        flags,
    };
    match s.remote.call(&request, &[])? {
        Reply::Global { ptr: p, size } => {
            *lock(&OPENS).entry(p).or_insert(0) += 1;
            let range = DeviceRange {
                size,
                ctx,
                device,
                kind: RangeKind::Opened,
                legacy_ipc: false,
            };
            super::keep_device_range(s, "cuIpcOpenMemHandle", p, range);
            // SAFETY: ptr was checked for null; the program passes a
            // writable slot.
            unsafe { out(ptr, p) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn ipc_close_mem_handle(ptr: CUdeviceptr) -> CuResult {
    let s = shim()?;
    let ctx = match lock(&s.device_memory).get(&ptr) {
        Some(r) if r.kind == RangeKind::Opened => r.ctx,
        _ => return Err(CuError::INVALID_VALUE),
    };
    s.remote.call(&Request::IpcCloseMemHandle { ctx, ptr }, &[])?;
    let mut opens = lock(&OPENS);
    let last = match opens.get_mut(&ptr) {
        Some(n) if *n > 1 => {
            *n -= 1;
            false
        }
        _ => true,
    };
    if last {
        opens.remove(&ptr);
        lock(&s.device_memory).remove(&ptr);
    }
    Ok(())
}

pub unsafe fn ipc_get_event_handle(handle: *mut CUipcHandle, event: CUevent) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if handle.is_null() || event.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let request = Request::IpcGetEventHandle {
        ctx,
        event: super::handle(event),
    };
    // Other processes may record it from now on.
    super::completions::recorded_elsewhere(s, super::handle(event));
    get_handle(s, &request, handle)
}

pub unsafe fn ipc_open_event_handle(event: *mut CUevent, handle: CUipcHandle) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if event.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let id = new_client_handle();
    let request = Request::IpcOpenEventHandle {
        ctx,
        handle: handle.reserved.to_vec(),
        id,
    };
    s.remote.call(&request, &[])?;
    // Recorded by the process that shared it.
    super::completions::created(s, id, super::completions::EVENT_INTERPROCESS);
    // SAFETY: event was checked for null; the program passes a writable
    // slot.
    unsafe { out(event, as_ptr(id)) }
}
