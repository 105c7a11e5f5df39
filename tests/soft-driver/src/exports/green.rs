//! Entry points of green contexts and SM resources (`driver::green`).

use super::*;
use crate::driver::green::{SmRun, RESOURCE_BYTES};

/// Reads a `CUdevResource` the caller passes.
///
/// # Safety
/// `r` is NULL or points at a whole `CUdevResource`.
unsafe fn read_resource(r: *const u8) -> CuResult<SmRun> {
    if r.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: a CUdevResource is RESOURCE_BYTES readable bytes (API contract).
    let bytes = unsafe { &*r.cast::<[u8; RESOURCE_BYTES]>() };
    SmRun::decode(bytes)
}

/// Writes a resource into the caller's `CUdevResource`.
///
/// # Safety
/// `r` is NULL or points at a writable `CUdevResource`.
unsafe fn write_resource(r: *mut u8, run: &SmRun) -> CuResult<()> {
    need(r)?;
    // SAFETY: as above, writable.
    unsafe { r.cast::<[u8; RESOURCE_BYTES]>().write_unaligned(run.encode()) };
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetDevResource(dev: CUdevice, resource: *mut u8, kind: u32) -> CUresult {
    ffi(|| {
        need(resource)?;
        let run = driver::with(|d| d.device_resource(dev, kind))?;
        // SAFETY: checked non-null; a CUdevResource (API contract).
        unsafe { write_resource(resource, &run) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevResource(ctx: CUcontext, resource: *mut u8, kind: u32) -> CUresult {
    ffi(|| {
        need(resource)?;
        let run = driver::with(|d| d.ctx_resource(h(ctx), kind))?;
        // SAFETY: as above.
        unsafe { write_resource(resource, &run) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGreenCtxGetDevResource(green: *mut c_void, resource: *mut u8, kind: u32) -> CUresult {
    ffi(|| {
        need(resource)?;
        let run = driver::with(|d| {
            let ctx = d.green_context(h(green))?;
            d.ctx_resource(ctx, kind)
        })?;
        // SAFETY: as above.
        unsafe { write_resource(resource, &run) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDevSmResourceSplitByCount(
    result: *mut u8,
    groups: *mut u32,
    input: *const u8,
    remainder: *mut u8,
    flags: u32,
    min_count: u32,
) -> CUresult {
    ffi(|| {
        need(groups)?;
        // SAFETY: the caller passes a CUdevResource.
        let input = unsafe { read_resource(input) }?;
        // SAFETY: groups is non-null and readable (API contract).
        let wanted = (!result.is_null()).then(|| unsafe { groups.read() });
        let (made, runs, rest) = driver::with(|d| d.sm_split(&input, wanted, flags, min_count))?;
        for (i, run) in runs.iter().enumerate() {
            // SAFETY: result holds `wanted` >= made resources (API contract).
            unsafe { write_resource(result.add(i * RESOURCE_BYTES), run) }?;
        }
        if !remainder.is_null() {
            // SAFETY: a writable CUdevResource (API contract).
            unsafe { write_resource(remainder, &rest) }?;
        }
        // SAFETY: checked non-null.
        unsafe { out(groups, made) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDevResourceGenerateDesc(
    desc: *mut *mut c_void,
    resources: *const u8,
    count: u32,
) -> CUresult {
    ffi(|| {
        need(desc)?;
        if resources.is_null() || count == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let runs = (0..count as usize)
            // SAFETY: the caller passes `count` resources.
            .map(|i| unsafe { read_resource(resources.add(i * RESOURCE_BYTES)) })
            .collect::<CuResult<Vec<_>>>()?;
        let h = driver::with(|d| d.resource_desc(runs))?;
        // SAFETY: checked non-null.
        unsafe { out(desc, h as usize as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGreenCtxCreate(
    green: *mut *mut c_void,
    desc: *mut c_void,
    dev: CUdevice,
    flags: u32,
) -> CUresult {
    ffi(|| {
        need(green)?;
        let g = driver::with(|d| d.green_create(h(desc), dev, flags))?;
        // SAFETY: checked non-null.
        unsafe { out(green, g as usize as *mut c_void) }
    })
}

#[no_mangle]
pub extern "C" fn cuGreenCtxDestroy(green: *mut c_void) -> CUresult {
    ffi(|| driver::with(|d| d.green_destroy(h(green))))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxFromGreenCtx(ctx: *mut CUcontext, green: *mut c_void) -> CUresult {
    ffi(|| {
        need(ctx)?;
        let c = driver::with(|d| d.green_context(h(green)))?;
        // SAFETY: checked non-null.
        unsafe { out(ctx, c as usize as CUcontext) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGreenCtxStreamCreate(
    stream: *mut CUstream,
    green: *mut c_void,
    flags: u32,
    _priority: i32,
) -> CUresult {
    ffi(|| {
        need(stream)?;
        let s = driver::with(|d| d.green_stream_create(h(green), flags))?;
        // SAFETY: checked non-null.
        unsafe { out(stream, s as usize as CUstream) }
    })
}
