//! The `extern "C"` driver API entry points of the simulated `libcuda.so.1`.
//!
//! Each export only converts its raw arguments, calls the safe simulated
//! driver in [`crate::driver`], and writes results through the caller's
//! out-pointers. Every export runs inside [`std::panic::catch_unwind`]; a
//! panic becomes `CUDA_ERROR_UNKNOWN` and never crosses the FFI boundary.
//!
//! # Safety
//!
//! The contract is the real driver API's: every non-null pointer argument
//! must be valid for the reads or writes that call performs in CUDA (host
//! buffers of the stated size, out-pointers to the stated type,
//! NUL-terminated strings and PTX images, cubins and fat binaries as long
//! as their headers say, `kernelParams` with one pointer
//! per kernel parameter). Null out-pointers are rejected with
//! `CUDA_ERROR_INVALID_VALUE`; device pointers and handles are always
//! validated and never dereferenced unchecked.

#![allow(non_snake_case)]
#![allow(clippy::missing_safety_doc)]
#![deny(unsafe_op_in_unsafe_fn)]

use std::ffi::{c_char, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::driver::{self, Copy3d, CopyEnd, LaunchConfig, Memory, Resource, TexDesc};
use crate::engine;
use crate::ptx::Param;
use crate::result::*;
use crate::tensormap;
use crate::texture::ArrayShape;

mod graphedit;
mod green;

pub use crate::result::CUresult;

pub type CUdevice = i32;
pub type CUdeviceptr = u64;
pub type CUcontext = *mut c_void;
pub type CUmodule = *mut c_void;
pub type CUfunction = *mut c_void;
pub type CUlibrary = *mut c_void;
pub type CUkernel = *mut c_void;
pub type CUstream = *mut c_void;
pub type CUevent = *mut c_void;
pub type CUgraph = *mut c_void;
pub type CUgraphExec = *mut c_void;
pub type CUarray = *mut c_void;
pub type CUtexObject = u64;
pub type CUsurfObject = u64;

/// `CU_LAUNCH_PARAM_END`
pub const CU_LAUNCH_PARAM_END: *mut c_void = std::ptr::null_mut();
/// `CU_LAUNCH_PARAM_BUFFER_POINTER` (a sentinel key, never dereferenced)
#[allow(clippy::manual_dangling_ptr)]
pub const CU_LAUNCH_PARAM_BUFFER_POINTER: *mut c_void = 0x01 as *mut c_void;
/// `CU_LAUNCH_PARAM_BUFFER_SIZE` (a sentinel key, never dereferenced)
#[allow(clippy::manual_dangling_ptr)]
pub const CU_LAUNCH_PARAM_BUFFER_SIZE: *mut c_void = 0x02 as *mut c_void;
/// Longest `extra` list accepted (key/value pairs plus terminator).
const MAX_EXTRA_ENTRIES: usize = 64;

/// `CUlaunchAttribute` (the value union is 64 bytes).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CUlaunchAttribute {
    pub id: u32,
    pub pad: [u8; 4],
    pub value: [u8; 64],
}

/// `CU_LAUNCH_ATTRIBUTE_COOPERATIVE`.
const LAUNCH_ATTRIBUTE_COOPERATIVE: u32 = 2;

/// `CUlaunchConfig`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CUlaunchConfig {
    pub gridDimX: u32,
    pub gridDimY: u32,
    pub gridDimZ: u32,
    pub blockDimX: u32,
    pub blockDimY: u32,
    pub blockDimZ: u32,
    pub sharedMemBytes: u32,
    pub hStream: CUstream,
    pub attrs: *mut CUlaunchAttribute,
    pub numAttrs: u32,
}

/// Runs an export body, turning panics into `CUDA_ERROR_UNKNOWN`.
fn ffi(body: impl FnOnce() -> CuResult<()>) -> CUresult {
    match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => CUDA_SUCCESS,
        Ok(Err(code)) => code,
        Err(_) => CUDA_ERROR_UNKNOWN,
    }
}

/// Rejects a null out-pointer before any work is done.
fn need<T>(p: *const T) -> CuResult<()> {
    if p.is_null() {
        Err(CUDA_ERROR_INVALID_VALUE)
    } else {
        Ok(())
    }
}

/// Writes through an out-pointer (null → `CUDA_ERROR_INVALID_VALUE`).
///
/// # Safety
/// A non-null `p` must be valid for a write of `T`.
unsafe fn out<T>(p: *mut T, v: T) -> CuResult<()> {
    need(p)?;
    // SAFETY: `p` is non-null and valid for writes per this function's contract.
    unsafe { p.write_unaligned(v) };
    Ok(())
}

/// Writes through an optional out-pointer (null → nothing).
///
/// # Safety
/// A non-null `p` must be valid for a write of `T`.
unsafe fn out_opt<T>(p: *mut T, v: T) {
    if !p.is_null() {
        // SAFETY: `p` is non-null and valid for writes per this function's contract.
        unsafe { p.write_unaligned(v) };
    }
}

/// Borrows a NUL-terminated symbol name.
///
/// # Safety
/// A non-null `p` must point to a NUL-terminated string.
unsafe fn name<'a>(p: *const c_char) -> CuResult<&'a str> {
    need(p)?;
    // SAFETY: `p` is non-null and NUL-terminated per this function's contract.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str().map_err(|_| CUDA_ERROR_NOT_FOUND)
}

/// Borrows a module image: PTX text up to its NUL, or a cubin or fat binary
/// of the length its headers give (read as `gpupool_fatbin::required_len`
/// directs, which never asks past the end of a well-formed image).
/// Text that is not recognisable goes to the PTX parser as before, which
/// tells a syntax error from something that is not an image.
///
/// # Safety
/// A non-null `p` must point to a whole image of its format: a
/// NUL-terminated string, or a cubin or fat binary as long as its headers say.
unsafe fn image<'a>(p: *const c_void) -> CuResult<&'a [u8]> {
    use gpupool_fatbin::LenQuery;
    need(p)?;
    let base = p.cast::<u8>();
    let mut have = 0usize;
    loop {
        // SAFETY: `have` bytes were asked for by `required_len`, which never
        // exceeds the length of a well-formed image of the format seen so
        // far; the image is whole per this function's contract.
        let prefix = unsafe { std::slice::from_raw_parts(base, have) };
        match gpupool_fatbin::required_len(prefix) {
            Ok(LenQuery::NeedAtLeast(n)) => {
                have = usize::try_from(n).map_err(|_| CUDA_ERROR_INVALID_IMAGE)?;
            }
            Ok(LenQuery::Exact(n)) => {
                let len = usize::try_from(n).map_err(|_| CUDA_ERROR_INVALID_IMAGE)?;
                // SAFETY: the headers read so far say the image is `len`
                // bytes, and it is whole per this function's contract.
                return Ok(unsafe { std::slice::from_raw_parts(base, len) });
            }
            Ok(LenQuery::NulTerminated) => {
                // SAFETY: PTX text is NUL-terminated per the contract.
                return Ok(unsafe { CStr::from_ptr(p.cast()) }.to_bytes());
            }
            Err(gpupool_fatbin::Error::UnknownFormat { .. } | gpupool_fatbin::Error::Empty) => {
                // Not a binary format: a string, judged by the PTX parser.
                // SAFETY: a non-binary image is NUL-terminated text per the contract.
                return Ok(unsafe { CStr::from_ptr(p.cast()) }.to_bytes());
            }
            Err(e) => {
                eprintln!("gpupool soft driver: module image refused (CUDA_ERROR_INVALID_IMAGE): {e}");
                return Err(CUDA_ERROR_INVALID_IMAGE);
            }
        }
    }
}

fn h(p: *mut c_void) -> u64 {
    p as u64
}

fn ptr(v: u64) -> *mut c_void {
    v as *mut c_void
}

// ----- initialisation, version, errors -----

#[no_mangle]
pub extern "C" fn cuInit(flags: u32) -> CUresult {
    ffi(|| driver::init(flags))
}

#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(version: *mut i32) -> CUresult {
    // SAFETY: `version` is valid for writes when non-null (API contract).
    ffi(|| unsafe { out(version, driver::DRIVER_VERSION) })
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(error: CUresult, pstr: *mut *const c_char) -> CUresult {
    ffi(|| {
        need(pstr)?;
        let s = error_name(error);
        // SAFETY: `pstr` is non-null and valid for writes (API contract).
        unsafe { out(pstr, s.map_or(std::ptr::null(), CStr::as_ptr)) }?;
        s.map(drop).ok_or(CUDA_ERROR_INVALID_VALUE)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(error: CUresult, pstr: *mut *const c_char) -> CUresult {
    ffi(|| {
        need(pstr)?;
        let s = error_string(error);
        // SAFETY: `pstr` is non-null and valid for writes (API contract).
        unsafe { out(pstr, s.map_or(std::ptr::null(), CStr::as_ptr)) }?;
        s.map(drop).ok_or(CUDA_ERROR_INVALID_VALUE)
    })
}

// ----- devices -----

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut i32) -> CUresult {
    ffi(|| {
        let n = driver::with(|d| Ok(d.device_count()))?;
        // SAFETY: `count` is valid for writes when non-null (API contract).
        unsafe { out(count, n) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: i32) -> CUresult {
    ffi(|| {
        let dev = driver::with(|d| d.device_get(ordinal))?;
        // SAFETY: `device` is valid for writes when non-null (API contract).
        unsafe { out(device, dev) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name_out: *mut c_char, len: i32, dev: CUdevice) -> CUresult {
    ffi(|| {
        need(name_out)?;
        let len = usize::try_from(len)
            .ok()
            .filter(|&l| l > 0)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let name = driver::with(|d| d.device_name(dev))?;
        let n = name.len().min(len - 1);
        // SAFETY: `name_out` is non-null and valid for `len` bytes (API
        // contract); `n + 1 <= len`.
        unsafe {
            std::ptr::copy_nonoverlapping(name.as_ptr(), name_out.cast::<u8>(), n);
            name_out.add(n).write(0);
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], dev: CUdevice) -> CUresult {
    ffi(|| {
        let u = driver::with(|d| d.device_uuid(dev))?;
        // SAFETY: `uuid` is valid for a 16-byte write when non-null (API contract).
        unsafe { out(uuid, u) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], dev: CUdevice) -> CUresult {
    // SAFETY: same contract as `cuDeviceGetUuid`.
    unsafe { cuDeviceGetUuid(uuid, dev) }
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CUresult {
    ffi(|| {
        let n = driver::with(|d| d.device_total_mem(dev))?;
        // SAFETY: `bytes` is valid for writes when non-null (API contract).
        unsafe { out(bytes, n as usize) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(pi: *mut i32, attrib: i32, dev: CUdevice) -> CUresult {
    ffi(|| {
        need(pi)?;
        let v = driver::with(|d| d.device_attribute(attrib, dev))?;
        // SAFETY: `pi` is valid for writes when non-null (API contract).
        unsafe { out(pi, v) }
    })
}

// ----- peer access -----

#[no_mangle]
pub unsafe extern "C" fn cuDeviceCanAccessPeer(can: *mut i32, dev: CUdevice, peer: CUdevice) -> CUresult {
    ffi(|| {
        need(can)?;
        let v = driver::with(|d| d.can_access_peer(dev, peer))?;
        // SAFETY: `can` is valid for writes when non-null (API contract).
        unsafe { out(can, v as i32) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetP2PAttribute(
    value: *mut i32,
    attrib: i32,
    src: CUdevice,
    dst: CUdevice,
) -> CUresult {
    ffi(|| {
        need(value)?;
        let v = driver::with(|d| d.p2p_attribute(attrib, src, dst))?;
        // SAFETY: `value` is valid for writes when non-null (API contract).
        unsafe { out(value, v) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxEnablePeerAccess(peer: CUcontext, flags: u32) -> CUresult {
    ffi(|| driver::with(|d| d.ctx_enable_peer_access(peer as u64, flags)))
}

#[no_mangle]
pub extern "C" fn cuCtxDisablePeerAccess(peer: CUcontext) -> CUresult {
    ffi(|| driver::with(|d| d.ctx_disable_peer_access(peer as u64)))
}

// ----- primary contexts -----

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut CUcontext, dev: CUdevice) -> CUresult {
    ffi(|| {
        need(pctx)?;
        let c = driver::with(|d| d.primary_retain(dev))?;
        // SAFETY: `pctx` is valid for writes when non-null (API contract).
        unsafe { out(pctx, ptr(c)) }
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CUresult {
    ffi(|| driver::with(|d| d.primary_release(dev)))
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxSetFlags_v2(dev: CUdevice, flags: u32) -> CUresult {
    ffi(|| driver::with(|d| d.primary_set_flags(dev, flags)))
}

#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxGetState(dev: CUdevice, flags: *mut u32, active: *mut i32) -> CUresult {
    ffi(|| {
        need(flags)?;
        need(active)?;
        let (f, a) = driver::with(|d| d.primary_get_state(dev))?;
        // SAFETY: both pointers are non-null and valid for writes (API contract).
        unsafe {
            out(flags, f)?;
            out(active, i32::from(a))
        }
    })
}

#[no_mangle]
pub extern "C" fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CUresult {
    ffi(|| driver::with(|d| d.primary_reset(dev)))
}

// ----- contexts -----

#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v2(pctx: *mut CUcontext, flags: u32, dev: CUdevice) -> CUresult {
    ffi(|| {
        need(pctx)?;
        let c = driver::with(|d| d.ctx_create(flags, dev))?;
        // SAFETY: `pctx` is valid for writes when non-null (API contract).
        unsafe { out(pctx, ptr(c)) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxDestroy_v2(ctx: CUcontext) -> CUresult {
    ffi(|| driver::with(|d| d.ctx_destroy(h(ctx))))
}

#[no_mangle]
pub extern "C" fn cuCtxSetCurrent(ctx: CUcontext) -> CUresult {
    ffi(|| driver::with_beside_copies(|d| d.ctx_set_current(h(ctx))))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut CUcontext) -> CUresult {
    ffi(|| {
        let c = driver::with_beside_copies(|d| Ok(d.ctx_get_current()))?;
        // SAFETY: `pctx` is valid for writes when non-null (API contract).
        unsafe { out(pctx, ptr(c)) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSynchronize() -> CUresult {
    let r = ffi(|| driver::synchronize(false, |d| d.ctx_synchronize()));
    crate::kernels::flush_device_output();
    r
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetLimit(pvalue: *mut usize, limit: i32) -> CUresult {
    ffi(|| {
        need(pvalue)?;
        let v = driver::with(|d| d.ctx_get_limit(limit))?;
        // SAFETY: `pvalue` is valid for writes when non-null (API contract).
        unsafe { out(pvalue, v as usize) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxSetLimit(limit: i32, value: usize) -> CUresult {
    ffi(|| driver::with(|d| d.ctx_set_limit(limit, value as u64)))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(least: *mut i32, greatest: *mut i32) -> CUresult {
    ffi(|| {
        driver::with(|_| Ok(()))?;
        // SAFETY: either pointer may be null; non-null ones are valid for
        // writes (API contract).
        unsafe {
            out_opt(least, 0);
            out_opt(greatest, -5);
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetApiVersion(ctx: CUcontext, version: *mut u32) -> CUresult {
    ffi(|| {
        need(version)?;
        let v = driver::with(|d| d.ctx_api_version(h(ctx)))?;
        // SAFETY: `version` is valid for writes when non-null (API contract).
        unsafe { out(version, v) }
    })
}

// ----- modules -----

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut CUmodule, img: *const c_void) -> CUresult {
    ffi(|| {
        need(module)?;
        // SAFETY: `img` is a whole PTX, cubin or fat-binary image when non-null (API contract).
        let bytes = unsafe { image(img) }?;
        let m = driver::with(|d| d.module_load(bytes))?;
        // SAFETY: `module` is non-null and valid for writes (API contract).
        unsafe { out(module, ptr(m)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut CUmodule,
    img: *const c_void,
    _num_options: u32,
    _options: *mut i32,
    _option_values: *mut *mut c_void,
) -> CUresult {
    // SAFETY: same contract as `cuModuleLoadData`; JIT options are ignored.
    unsafe { cuModuleLoadData(module, img) }
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadFatBinary(module: *mut CUmodule, fat_cubin: *const c_void) -> CUresult {
    // SAFETY: same contract as `cuModuleLoadData` (a fat binary, cubin or PTX).
    unsafe { cuModuleLoadData(module, fat_cubin) }
}

#[no_mangle]
pub extern "C" fn cuModuleUnload(module: CUmodule) -> CUresult {
    ffi(|| driver::with(|d| d.module_unload(h(module))))
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    func: *mut CUfunction,
    module: CUmodule,
    fname: *const c_char,
) -> CUresult {
    ffi(|| {
        need(func)?;
        // SAFETY: `fname` is NUL-terminated when non-null (API contract).
        let n = unsafe { name(fname) }?;
        let f = driver::with(|d| d.module_get_function(h(module), n))?;
        // SAFETY: `func` is non-null and valid for writes (API contract).
        unsafe { out(func, ptr(f)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    module: CUmodule,
    gname: *const c_char,
) -> CUresult {
    ffi(|| {
        // SAFETY: `gname` is NUL-terminated when non-null (API contract).
        let n = unsafe { name(gname) }?;
        let (addr, size) = driver::with(|d| d.module_get_global(h(module), n))?;
        // SAFETY: either out-pointer may be null; non-null ones are valid
        // for writes (API contract).
        unsafe {
            out_opt(dptr, addr);
            out_opt(bytes, size as usize);
        }
        Ok(())
    })
}

// ----- libraries and kernels -----

#[no_mangle]
pub unsafe extern "C" fn cuLibraryLoadData(
    library: *mut CUlibrary,
    code: *const c_void,
    _jit_options: *mut i32,
    _jit_option_values: *mut *mut c_void,
    _num_jit_options: u32,
    _library_options: *mut i32,
    _library_option_values: *mut *mut c_void,
    _num_library_options: u32,
) -> CUresult {
    ffi(|| {
        need(library)?;
        // SAFETY: `code` is a whole PTX, cubin or fat-binary image when non-null (API contract).
        let bytes = unsafe { image(code) }?;
        let l = driver::with(|d| d.library_load(bytes))?;
        // SAFETY: `library` is non-null and valid for writes (API contract).
        unsafe { out(library, ptr(l)) }
    })
}

#[no_mangle]
pub extern "C" fn cuLibraryUnload(library: CUlibrary) -> CUresult {
    ffi(|| driver::with(|d| d.library_unload(h(library))))
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetKernel(
    kernel: *mut CUkernel,
    library: CUlibrary,
    kname: *const c_char,
) -> CUresult {
    ffi(|| {
        need(kernel)?;
        // SAFETY: `kname` is NUL-terminated when non-null (API contract).
        let n = unsafe { name(kname) }?;
        let k = driver::with(|d| d.library_get_kernel(h(library), n))?;
        // SAFETY: `kernel` is non-null and valid for writes (API contract).
        unsafe { out(kernel, ptr(k)) }
    })
}

/// A library's global, or (`managed`) its `__managed__` variable.
///
/// # Safety
/// The API contract of `cuLibraryGetGlobal`.
unsafe fn library_variable(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUlibrary,
    gname: *const c_char,
    managed: bool,
) -> CUresult {
    ffi(|| {
        // SAFETY: `gname` is NUL-terminated when non-null (API contract).
        let n = unsafe { name(gname) }?;
        let (addr, size) = driver::with(|d| {
            if managed {
                d.library_get_managed(h(library), n)
            } else {
                d.library_get_global(h(library), n)
            }
        })?;
        // SAFETY: either out-pointer may be null; non-null ones are valid
        // for writes (API contract).
        unsafe {
            out_opt(dptr, addr);
            out_opt(bytes, size as usize);
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetGlobal(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUlibrary,
    gname: *const c_char,
) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { library_variable(dptr, bytes, library, gname, false) }
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetManaged(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    library: CUlibrary,
    gname: *const c_char,
) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { library_variable(dptr, bytes, library, gname, true) }
}

#[no_mangle]
pub unsafe extern "C" fn cuLibraryGetModule(module: *mut CUmodule, library: CUlibrary) -> CUresult {
    ffi(|| {
        need(module)?;
        let m = driver::with(|d| d.library_get_module(h(library)))?;
        // SAFETY: `module` is non-null and valid for writes (API contract).
        unsafe { out(module, ptr(m)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuKernelGetFunction(func: *mut CUfunction, kernel: CUkernel) -> CUresult {
    ffi(|| {
        need(func)?;
        let f = driver::with(|d| d.kernel_get_function(h(kernel)))?;
        // SAFETY: `func` is non-null and valid for writes (API contract).
        unsafe { out(func, ptr(f)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuKernelGetAttribute(pi: *mut i32, attrib: i32, kernel: CUkernel, dev: CUdevice) -> CUresult {
    ffi(|| {
        need(pi)?;
        let v = driver::with(|d| d.kernel_get_attribute(attrib, h(kernel), dev))?;
        // SAFETY: `pi` is non-null and valid for writes (API contract).
        unsafe { out(pi, v) }
    })
}

#[no_mangle]
pub extern "C" fn cuKernelSetAttribute(attrib: i32, val: i32, kernel: CUkernel, dev: CUdevice) -> CUresult {
    ffi(|| driver::with(|d| d.kernel_set_attribute(attrib, val, h(kernel), dev)))
}

#[no_mangle]
pub unsafe extern "C" fn cuKernelGetParamInfo(
    kernel: CUkernel,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> CUresult {
    ffi(|| {
        need(offset)?;
        let (o, s) = driver::with(|d| d.kernel_param_info(h(kernel), index))?;
        // SAFETY: `offset` is non-null and `size` may be null; both are
        // valid for writes when non-null (API contract).
        unsafe {
            out(offset, o)?;
            out_opt(size, s);
        }
        Ok(())
    })
}

// ----- functions -----

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(pi: *mut i32, attrib: i32, func: CUfunction) -> CUresult {
    ffi(|| {
        need(pi)?;
        let v = driver::with(|d| d.func_get_attribute(attrib, h(func)))?;
        // SAFETY: `pi` is non-null and valid for writes (API contract).
        unsafe { out(pi, v) }
    })
}

#[no_mangle]
pub extern "C" fn cuFuncSetCacheConfig(func: CUfunction, config: u32) -> CUresult {
    ffi(|| driver::with(|d| d.func_set_cache_config(h(func), config)))
}

#[no_mangle]
pub extern "C" fn cuKernelSetCacheConfig(kernel: CUkernel, config: u32, dev: CUdevice) -> CUresult {
    ffi(|| driver::with(|d| d.kernel_set_cache_config(h(kernel), config, dev)))
}

#[no_mangle]
pub extern "C" fn cuCtxSetCacheConfig(config: u32) -> CUresult {
    ffi(|| driver::with(|d| d.ctx_set_cache_config(config)))
}

#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCacheConfig(config: *mut u32) -> CUresult {
    ffi(|| {
        need(config)?;
        let c = driver::with(|d| d.ctx_get_cache_config())?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(config, c) }
    })
}

#[no_mangle]
pub extern "C" fn cuFuncSetAttribute(func: CUfunction, attrib: i32, value: i32) -> CUresult {
    ffi(|| driver::with(|d| d.func_set_attribute(h(func), attrib, value)))
}

#[no_mangle]
pub unsafe extern "C" fn cuFuncGetParamInfo(
    func: CUfunction,
    index: usize,
    offset: *mut usize,
    size: *mut usize,
) -> CUresult {
    ffi(|| {
        need(offset)?;
        let (o, s) = driver::with(|d| d.func_param_info(h(func), index))?;
        // SAFETY: `offset` is non-null and `size` may be null; both are
        // valid for writes when non-null (API contract).
        unsafe {
            out(offset, o)?;
            out_opt(size, s);
        }
        Ok(())
    })
}

// ----- memory -----

#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CUresult {
    ffi(|| {
        need(dptr)?;
        let p = driver::with(|d| d.mem_alloc(bytesize as u64))?;
        // SAFETY: `dptr` is non-null and valid for writes (API contract).
        unsafe { out(dptr, p) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CUresult {
    ffi(|| driver::with(|d| d.mem_free(dptr)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(dptr: *mut CUdeviceptr, bytesize: usize, stream: CUstream) -> CUresult {
    ffi(|| {
        need(dptr)?;
        let p = driver::with(|d| d.mem_alloc_async(bytesize as u64, None, h(stream)))?;
        // SAFETY: `dptr` is non-null and valid for writes (API contract).
        unsafe { out(dptr, p) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocFromPoolAsync(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    pool: *mut c_void,
    stream: CUstream,
) -> CUresult {
    ffi(|| {
        need(dptr)?;
        let p = driver::with(|d| d.mem_alloc_async(bytesize as u64, Some(pool as u64), h(stream)))?;
        // SAFETY: `dptr` is non-null and valid for writes (API contract).
        unsafe { out(dptr, p) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, stream: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.mem_free_async(dptr, h(stream))))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(pool: *mut *mut c_void, dev: CUdevice) -> CUresult {
    ffi(|| {
        need(pool)?;
        let p = driver::with(|d| d.device_default_mem_pool(dev))?;
        // SAFETY: `pool` is non-null and valid for writes (API contract).
        unsafe { out(pool, p as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetMemPool(pool: *mut *mut c_void, dev: CUdevice) -> CUresult {
    ffi(|| {
        need(pool)?;
        let p = driver::with(|d| d.device_mem_pool(dev))?;
        // SAFETY: `pool` is non-null and valid for writes (API contract).
        unsafe { out(pool, p as *mut c_void) }
    })
}

#[no_mangle]
pub extern "C" fn cuDeviceSetMemPool(dev: CUdevice, pool: *mut c_void) -> CUresult {
    ffi(|| driver::with(|d| d.device_set_mem_pool(dev, pool as u64)))
}

/// `CUmemPoolProps`' leading fields: allocation type, handle types, location.
#[repr(C)]
pub struct MemPoolPropsHead {
    alloc_type: u32,
    handle_types: u32,
    location_type: u32,
    location_id: i32,
    win32_security_attributes: *mut c_void,
    max_size: usize,
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolCreate(pool: *mut *mut c_void, props: *const MemPoolPropsHead) -> CUresult {
    ffi(|| {
        need(pool)?;
        if props.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `props` is non-null and points at a CUmemPoolProps, whose
        // leading fields are these (API contract).
        let p = unsafe { &*props };
        let h = driver::with(|d| {
            d.mem_pool_create(
                p.alloc_type,
                p.handle_types,
                (p.location_type, p.location_id),
                p.max_size as u64,
            )
        })?;
        // SAFETY: `pool` is non-null and valid for writes (API contract).
        unsafe { out(pool, h as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolExportToShareableHandle(
    shareable: *mut c_void,
    pool: *mut c_void,
    handle_type: u32,
    flags: u64,
) -> CUresult {
    ffi(|| {
        need(shareable)?;
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let fd = driver::with(|d| d.mem_pool_export_fd(pool as u64, handle_type))?;
        // SAFETY: for a file descriptor the handle is an int (API contract).
        unsafe { out(shareable.cast::<i32>(), fd) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolImportFromShareableHandle(
    pool: *mut *mut c_void,
    os_handle: *mut c_void,
    handle_type: u32,
    flags: u64,
) -> CUresult {
    ffi(|| {
        need(pool)?;
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = driver::with(|d| d.mem_pool_import_fd(os_handle as usize as i32, handle_type))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(pool, h as *mut c_void) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolExportPointer(data: *mut [u8; 64], ptr: CUdeviceptr) -> CUresult {
    ffi(|| {
        need(data)?;
        let h = driver::with(|d| d.mem_pool_export_pointer(ptr))?;
        // SAFETY: non-null; a CUmemPoolPtrExportData is 64 bytes (API
        // contract).
        unsafe { out(data, h) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolImportPointer(
    ptr: *mut CUdeviceptr,
    pool: *mut c_void,
    data: *mut [u8; 64],
) -> CUresult {
    ffi(|| {
        need(ptr)?;
        need(data)?;
        // SAFETY: non-null; a CUmemPoolPtrExportData is 64 bytes (API
        // contract).
        let h = unsafe { data.read_unaligned() };
        let p = driver::with(|d| d.mem_pool_import_pointer(pool as u64, &h))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(ptr, p) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemPoolDestroy(pool: *mut c_void) -> CUresult {
    ffi(|| driver::with(|d| d.mem_pool_destroy(pool as u64)))
}

/// Attributes 1 to 3 are ints; the others 64-bit.
fn pool_attribute_is_int(attr: i32) -> bool {
    (1..=3).contains(&attr)
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolSetAttribute(pool: *mut c_void, attr: i32, value: *mut c_void) -> CUresult {
    ffi(|| {
        need(value)?;
        // SAFETY: `value` is non-null and holds the attribute's type (API
        // contract).
        let v = unsafe {
            if pool_attribute_is_int(attr) {
                *value.cast::<i32>() as u64
            } else {
                *value.cast::<u64>()
            }
        };
        driver::with(|d| d.mem_pool_set_attribute(pool as u64, attr, v))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolGetAttribute(pool: *mut c_void, attr: i32, value: *mut c_void) -> CUresult {
    ffi(|| {
        need(value)?;
        let v = driver::with(|d| d.mem_pool_get_attribute(pool as u64, attr))?;
        // SAFETY: `value` is non-null and valid for writes of the
        // attribute's type (API contract).
        unsafe {
            if pool_attribute_is_int(attr) {
                out(value.cast::<i32>(), v as i32)
            } else {
                out(value.cast::<u64>(), v)
            }
        }
    })
}

/// `CUmemAccessDesc`: a location (type, id) and `CUmemAccess_flags`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MemAccessDesc {
    pub location_type: i32,
    pub location_id: i32,
    pub flags: u32,
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolSetAccess(pool: *mut c_void, map: *const MemAccessDesc, count: usize) -> CUresult {
    ffi(|| {
        if map.is_null() && count > 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        for i in 0..count {
            // SAFETY: the caller passes `count` descriptors (API contract).
            let d = unsafe { map.add(i).read_unaligned() };
            if d.location_type != 1 {
                return Err(CUDA_ERROR_INVALID_VALUE);
            }
            driver::with(|drv| drv.mem_pool_set_access(h(pool), d.location_id, d.flags))?;
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemPoolGetAccess(flags: *mut u32, pool: *mut c_void, location: *const [i32; 2]) -> CUresult {
    ffi(|| {
        need(flags)?;
        need(location)?;
        // SAFETY: non-null, a CUmemLocation (API contract).
        let [kind, id] = unsafe { location.read_unaligned() };
        if kind != 1 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let v = driver::with(|d| d.mem_pool_get_access(h(pool), id))?;
        // SAFETY: `flags` is non-null and valid for writes (API contract).
        unsafe { out(flags, v) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemPoolTrimTo(pool: *mut c_void, _keep: usize) -> CUresult {
    ffi(|| driver::with(|d| d.mem_pool_trim_to(pool as u64)))
}

/// `CUmemAllocationProp`'s leading fields: type, handle types, location.
#[repr(C)]
pub struct MemAllocationPropHead {
    alloc_type: u32,
    requested_handle_types: u32,
    location_type: u32,
    location_id: i32,
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAddressReserve(
    ptr: *mut CUdeviceptr,
    size: usize,
    alignment: usize,
    _addr: CUdeviceptr,
    flags: u64,
) -> CUresult {
    ffi(|| {
        need(ptr)?;
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let p = driver::with(|d| d.mem_address_reserve(size as u64, alignment as u64))?;
        // SAFETY: `ptr` is non-null and valid for writes (API contract).
        unsafe { out(ptr, p) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemAddressFree(ptr: CUdeviceptr, size: usize) -> CUresult {
    ffi(|| driver::with(|d| d.mem_address_free(ptr, size as u64)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemCreate(
    handle: *mut u64,
    size: usize,
    prop: *const MemAllocationPropHead,
    flags: u64,
) -> CUresult {
    ffi(|| {
        need(handle)?;
        if prop.is_null() || flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `prop` is non-null and points at a CUmemAllocationProp,
        // whose leading fields are these (API contract).
        let p = unsafe { &*prop };
        let h = driver::with(|d| {
            d.mem_create(
                size as u64,
                p.alloc_type,
                (p.location_type, p.location_id),
                p.requested_handle_types,
            )
        })?;
        // SAFETY: `handle` is non-null and valid for writes (API contract).
        unsafe { out(handle, h) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemExportToShareableHandle(
    shareable: *mut c_void,
    handle: u64,
    handle_type: u32,
    flags: u64,
) -> CUresult {
    ffi(|| {
        need(shareable)?;
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let fd = driver::with(|d| d.mem_export_fd(handle, handle_type))?;
        // SAFETY: for a file descriptor the handle is an int (API contract).
        unsafe { out(shareable.cast::<i32>(), fd) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemImportFromShareableHandle(
    handle: *mut u64,
    os_handle: *mut c_void,
    handle_type: u32,
) -> CUresult {
    ffi(|| {
        need(handle)?;
        let h = driver::with(|d| d.mem_import_fd(os_handle as usize as i32, handle_type))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(handle, h) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemRelease(handle: u64) -> CUresult {
    ffi(|| driver::with(|d| d.mem_release(handle)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemRetainAllocationHandle(handle: *mut u64, addr: *mut c_void) -> CUresult {
    ffi(|| {
        need(handle)?;
        let h = driver::with(|d| d.mem_retain_allocation_handle(addr as u64))?;
        // SAFETY: `handle` is non-null and valid for writes (API contract).
        unsafe { out(handle, h) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, handle: u64, flags: u64) -> CUresult {
    ffi(|| {
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        driver::with(|d| d.mem_map(ptr, size as u64, offset as u64, handle))
    })
}

#[no_mangle]
pub extern "C" fn cuMemUnmap(ptr: CUdeviceptr, size: usize) -> CUresult {
    ffi(|| driver::with(|d| d.mem_unmap(ptr, size as u64)))
}

#[no_mangle]
pub unsafe extern "C" fn cuMemSetAccess(ptr: CUdeviceptr, size: usize, desc: *const c_void, count: usize) -> CUresult {
    ffi(|| {
        if desc.is_null() || count == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        driver::with(|d| d.mem_set_access(ptr, size as u64))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetAllocationGranularity(
    granularity: *mut usize,
    prop: *const MemAllocationPropHead,
    _option: u32,
) -> CUresult {
    ffi(|| {
        need(granularity)?;
        if prop.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `granularity` is non-null and valid for writes (API
        // contract).
        unsafe { out(granularity, crate::memory::VMM_GRANULARITY as usize) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CUresult {
    ffi(|| {
        let (f, t) = driver::with(|d| d.mem_get_info())?;
        // SAFETY: either pointer may be null; non-null ones are valid for
        // writes (API contract).
        unsafe {
            out_opt(free, f as usize);
            out_opt(total, t as usize);
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytesize: usize) -> CUresult {
    ffi(|| {
        need(pp)?;
        let p = driver::with(|d| d.mem_alloc_host(bytesize as u64))?;
        // SAFETY: `pp` is non-null and valid for writes (API contract).
        unsafe { out(pp, p.cast()) }
    })
}

#[no_mangle]
pub extern "C" fn cuMemFreeHost(p: *mut c_void) -> CUresult {
    ffi(|| driver::with(|d| d.mem_free_host(h(p))))
}

/// Host-to-device copy shared by the sync and async exports.
///
/// # Safety
/// A non-null `src` must be valid for reads of `n` bytes.
unsafe fn htod(dst: CUdeviceptr, src: *const c_void, n: usize, stream: u64, asynchronous: bool) -> CUresult {
    ffi(|| {
        if n > 0 {
            need(src)?;
        }
        driver::with_beside_copies(|d| {
            // From pinned memory an asynchronous copy is the copy engine's;
            // any other waits for the queued copies and is done here.
            if asynchronous {
                if let Some(captured) = d.capture_host_copy(stream, dst, src as u64, n as u64, true) {
                    return captured;
                }
            }
            let queued = asynchronous && engine::enabled() && d.is_pinned(src as u64, n as u64);
            if !queued {
                engine::drain();
            }
            d.memcpy_htod(dst, n as u64, stream, |to| {
                if queued {
                    // SAFETY: `to` addresses `n` checked device bytes, kept
                    // until the queue drains (frees drain it first); `src`
                    // is pinned memory the caller keeps until the copy is
                    // done (asynchronous copy contract).
                    unsafe { engine::submit(to, src.cast::<u8>(), n) };
                } else {
                    // SAFETY: `to` addresses `n` checked device bytes; `src` is
                    // valid for `n` bytes (contract); `copy` tolerates overlap.
                    unsafe { std::ptr::copy(src.cast::<u8>(), to, n) }
                }
            })
        })
    })
}

/// Device-to-host copy shared by the sync and async exports.
///
/// # Safety
/// A non-null `dst` must be valid for writes of `n` bytes.
unsafe fn dtoh(dst: *mut c_void, src: CUdeviceptr, n: usize, stream: u64, asynchronous: bool) -> CUresult {
    ffi(|| {
        if n > 0 {
            need(dst)?;
        }
        driver::with_beside_copies(|d| {
            if asynchronous {
                if let Some(captured) = d.capture_host_copy(stream, src, dst as u64, n as u64, false) {
                    return captured;
                }
            }
            let queued = asynchronous && engine::enabled() && d.is_pinned(dst as u64, n as u64);
            if !queued {
                engine::drain();
            }
            d.memcpy_dtoh(src, n as u64, stream, |from| {
                if queued {
                    // SAFETY: as in `htod`, the other way round.
                    unsafe { engine::submit(dst.cast::<u8>(), from, n) };
                } else {
                    // SAFETY: `from` addresses `n` checked device bytes; `dst` is
                    // valid for `n` bytes (contract); `copy` tolerates overlap.
                    unsafe { std::ptr::copy(from, dst.cast::<u8>(), n) }
                }
            })
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(dst: CUdeviceptr, src: *const c_void, n: usize) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { htod(dst, src, n, 0, false) }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    stream: CUstream,
) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { htod(dst, src, n, h(stream), true) }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { dtoh(dst, src, n, 0, false) }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    stream: CUstream,
) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { dtoh(dst, src, n, h(stream), true) }
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CUresult {
    ffi(|| driver::with(|d| d.memcpy_dtod(dst, src, n as u64, 0)))
}

#[no_mangle]
pub extern "C" fn cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize, stream: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.memcpy_dtod(dst, src, n as u64, h(stream))))
}

#[no_mangle]
pub extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, uc: u8, n: usize) -> CUresult {
    ffi(|| driver::with(|d| d.memset(dst, &[uc], n as u64, 0)))
}

#[no_mangle]
pub extern "C" fn cuMemsetD16_v2(dst: CUdeviceptr, us: u16, n: usize) -> CUresult {
    ffi(|| driver::with(|d| d.memset(dst, &us.to_le_bytes(), n as u64, 0)))
}

#[no_mangle]
pub extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, ui: u32, n: usize) -> CUresult {
    ffi(|| driver::with(|d| d.memset(dst, &ui.to_le_bytes(), n as u64, 0)))
}

#[no_mangle]
pub extern "C" fn cuMemsetD8Async(dst: CUdeviceptr, uc: u8, n: usize, stream: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.memset(dst, &[uc], n as u64, h(stream))))
}

#[no_mangle]
pub extern "C" fn cuMemsetD16Async(dst: CUdeviceptr, us: u16, n: usize, stream: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.memset(dst, &us.to_le_bytes(), n as u64, h(stream))))
}

#[no_mangle]
pub extern "C" fn cuMemsetD32Async(dst: CUdeviceptr, ui: u32, n: usize, stream: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.memset(dst, &ui.to_le_bytes(), n as u64, h(stream))))
}

// ----- 2D copies and memsets -----

/// `CUDA_MEMCPY2D`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CudaMemcpy2D {
    pub src_x_in_bytes: usize,
    pub src_y: usize,
    pub src_memory_type: u32,
    pub src_host: *const c_void,
    pub src_device: CUdeviceptr,
    pub src_array: *mut c_void,
    pub src_pitch: usize,
    pub dst_x_in_bytes: usize,
    pub dst_y: usize,
    pub dst_memory_type: u32,
    pub dst_host: *mut c_void,
    pub dst_device: CUdeviceptr,
    pub dst_array: *mut c_void,
    pub dst_pitch: usize,
    pub width_in_bytes: usize,
    pub height: usize,
}

impl Default for CudaMemcpy2D {
    fn default() -> Self {
        // SAFETY: all fields are integers and raw pointers, for which zero
        // bytes are valid (null pointers).
        unsafe { std::mem::zeroed() }
    }
}

/// One side of a 2D copy, resolved: (is device memory, first row's address, pitch).
fn copy_side(
    memory_type: u32,
    host: u64,
    device: u64,
    x: usize,
    y: usize,
    pitch: usize,
) -> CuResult<(bool, u64, usize)> {
    let device_side = match memory_type {
        1 => false,
        2 => true,
        // Unified: whichever the address is.
        4 => driver::with_beside_copies(|d| Ok(d.is_device(device)))?,
        // Copies with an array side take `memcpy_3d`'s path.
        3 => return Err(CUDA_ERROR_INVALID_VALUE),
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    };
    let base = if device_side || memory_type == 4 { device } else { host };
    let offset = y.checked_mul(pitch).and_then(|o| o.checked_add(x));
    let start = offset.and_then(|o| base.checked_add(o as u64));
    Ok((device_side, start.ok_or(CUDA_ERROR_INVALID_VALUE)?, pitch))
}

/// A 2D copy, row by row through the linear copies.
///
/// # Safety
/// Host rows named by `p` must be valid for the copy (API contract).
unsafe fn memcpy_2d(p: *const CudaMemcpy2D, stream: u64, asynchronous: bool) -> CUresult {
    ffi(|| {
        need(p)?;
        // SAFETY: non-null, and points to a CUDA_MEMCPY2D (API contract).
        let c = unsafe { p.read_unaligned() };
        if c.src_memory_type == MEMORY_TYPE_ARRAY || c.dst_memory_type == MEMORY_TYPE_ARRAY {
            let copy = Copy3d {
                src: copy_end(
                    c.src_memory_type,
                    c.src_host as u64,
                    c.src_device,
                    h(c.src_array),
                    [c.src_x_in_bytes, c.src_y, 0],
                    c.src_pitch,
                    0,
                )?,
                dst: copy_end(
                    c.dst_memory_type,
                    c.dst_host as u64,
                    c.dst_device,
                    h(c.dst_array),
                    [c.dst_x_in_bytes, c.dst_y, 0],
                    c.dst_pitch,
                    0,
                )?,
                width: c.width_in_bytes as u64,
                height: c.height as u64,
                depth: 1,
            };
            return driver::with_beside_copies(|d| d.memcpy_3d(&copy, stream, asynchronous));
        }
        let (width, height) = (c.width_in_bytes, c.height);
        if height > 1 && (width > c.src_pitch || width > c.dst_pitch) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let (src_dev, src, src_pitch) = copy_side(
            c.src_memory_type,
            c.src_host as u64,
            c.src_device,
            c.src_x_in_bytes,
            c.src_y,
            c.src_pitch,
        )?;
        let (dst_dev, dst, dst_pitch) = copy_side(
            c.dst_memory_type,
            c.dst_host as u64,
            c.dst_device,
            c.dst_x_in_bytes,
            c.dst_y,
            c.dst_pitch,
        )?;
        if width == 0 || height == 0 {
            return Ok(());
        }
        // Every device row is checked before the first is copied.
        for (dev, start, pitch) in [(src_dev, src, src_pitch), (dst_dev, dst, dst_pitch)] {
            if dev {
                driver::with_beside_copies(|d| d.check_device_rows(start, pitch as u64, width as u64, height as u64))?;
            }
        }
        for row in 0..height as u64 {
            let s = src + row * src_pitch as u64;
            let d = dst + row * dst_pitch as u64;
            // SAFETY: each row is `width` bytes of the rows the caller named.
            let r = unsafe {
                match (src_dev, dst_dev) {
                    (false, true) => htod(d, ptr(s), width, stream, asynchronous),
                    (true, false) => dtoh(ptr(d), s, width, stream, asynchronous),
                    (true, true) => ffi(|| driver::with(|drv| drv.memcpy_dtod(d, s, width as u64, stream))),
                    (false, false) => {
                        std::ptr::copy(s as *const u8, d as *mut u8, width);
                        CUDA_SUCCESS
                    }
                }
            };
            if r != CUDA_SUCCESS {
                return Err(r);
            }
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2D_v2(p: *const CudaMemcpy2D) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { memcpy_2d(p, 0, false) }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DUnaligned_v2(p: *const CudaMemcpy2D) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { memcpy_2d(p, 0, false) }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpy2DAsync_v2(p: *const CudaMemcpy2D, stream: CUstream) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { memcpy_2d(p, h(stream), true) }
}

// ----- CUDA arrays and 3D copies -----

/// `CU_MEMORYTYPE_ARRAY`.
const MEMORY_TYPE_ARRAY: u32 = 3;

/// One side of a 2D or 3D copy (`x` in bytes, `y` rows, `z` slices;
/// `rows`: rows per slice of host or device memory).
fn copy_end(
    memory_type: u32,
    host: u64,
    device: u64,
    array: u64,
    [x, y, z]: [usize; 3],
    pitch: usize,
    rows: usize,
) -> CuResult<CopyEnd> {
    let memory = match memory_type {
        1 => Memory::Host(host),
        2 => Memory::Device(device),
        MEMORY_TYPE_ARRAY => Memory::Array(array),
        4 => Memory::Unified(device),
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    };
    Ok(CopyEnd {
        memory,
        x: x as u64,
        y: y as u64,
        z: z as u64,
        pitch: pitch as u64,
        rows: rows as u64,
    })
}

/// `CUDA_ARRAY_DESCRIPTOR`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CudaArrayDescriptor {
    pub width: usize,
    pub height: usize,
    pub format: u32,
    pub num_channels: u32,
}

/// `CUDA_ARRAY3D_DESCRIPTOR`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CudaArray3DDescriptor {
    pub width: usize,
    pub height: usize,
    pub depth: usize,
    pub format: u32,
    pub num_channels: u32,
    pub flags: u32,
}

/// `CUDA_MEMCPY3D`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CudaMemcpy3D {
    pub src_x_in_bytes: usize,
    pub src_y: usize,
    pub src_z: usize,
    pub src_lod: usize,
    pub src_memory_type: u32,
    pub src_host: *const c_void,
    pub src_device: CUdeviceptr,
    pub src_array: CUarray,
    pub reserved0: *mut c_void,
    pub src_pitch: usize,
    pub src_height: usize,
    pub dst_x_in_bytes: usize,
    pub dst_y: usize,
    pub dst_z: usize,
    pub dst_lod: usize,
    pub dst_memory_type: u32,
    pub dst_host: *mut c_void,
    pub dst_device: CUdeviceptr,
    pub dst_array: CUarray,
    pub reserved1: *mut c_void,
    pub dst_pitch: usize,
    pub dst_height: usize,
    pub width_in_bytes: usize,
    pub height: usize,
    pub depth: usize,
}

impl Default for CudaMemcpy3D {
    fn default() -> Self {
        // SAFETY: all fields are integers and raw pointers, for which zero
        // bytes are valid (null pointers).
        unsafe { std::mem::zeroed() }
    }
}

const _: () = {
    assert!(std::mem::size_of::<CudaArrayDescriptor>() == 24);
    assert!(std::mem::size_of::<CudaArray3DDescriptor>() == 40);
    assert!(std::mem::size_of::<CudaMemcpy2D>() == 128);
    assert!(std::mem::size_of::<CudaMemcpy3D>() == 200);
    assert!(std::mem::offset_of!(CudaMemcpy3D, dst_x_in_bytes) == 88);
    assert!(std::mem::offset_of!(CudaMemcpy3D, width_in_bytes) == 176);
};

fn shape_from_3d(d: &CudaArray3DDescriptor) -> ArrayShape {
    ArrayShape {
        width: d.width as u64,
        height: d.height as u64,
        depth: d.depth as u64,
        format: d.format,
        channels: d.num_channels,
        flags: d.flags,
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuArrayCreate_v2(handle: *mut CUarray, desc: *const CudaArrayDescriptor) -> CUresult {
    ffi(|| {
        need(handle)?;
        need(desc)?;
        // SAFETY: `desc` is non-null and points to a CUDA_ARRAY_DESCRIPTOR (API contract).
        let d = unsafe { desc.read_unaligned() };
        let shape = shape_from_3d(&CudaArray3DDescriptor {
            width: d.width,
            height: d.height,
            depth: 0,
            format: d.format,
            num_channels: d.num_channels,
            flags: 0,
        });
        let a = driver::with(|drv| drv.array_create(shape))?;
        // SAFETY: `handle` is non-null and valid for writes (API contract).
        unsafe { out(handle, ptr(a)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuArray3DCreate_v2(handle: *mut CUarray, desc: *const CudaArray3DDescriptor) -> CUresult {
    ffi(|| {
        need(handle)?;
        need(desc)?;
        // SAFETY: `desc` is non-null and points to a CUDA_ARRAY3D_DESCRIPTOR (API contract).
        let d = unsafe { desc.read_unaligned() };
        let a = driver::with(|drv| drv.array_create(shape_from_3d(&d)))?;
        // SAFETY: `handle` is non-null and valid for writes (API contract).
        unsafe { out(handle, ptr(a)) }
    })
}

#[no_mangle]
pub extern "C" fn cuArrayDestroy(array: CUarray) -> CUresult {
    ffi(|| driver::with(|d| d.array_destroy(h(array))))
}

#[no_mangle]
pub unsafe extern "C" fn cuArrayGetDescriptor_v2(desc: *mut CudaArrayDescriptor, array: CUarray) -> CUresult {
    ffi(|| {
        need(desc)?;
        let s = driver::with_beside_copies(|d| d.array_descriptor(h(array)))?;
        let v = CudaArrayDescriptor {
            width: s.width as usize,
            height: s.height as usize,
            format: s.format,
            num_channels: s.channels,
        };
        // SAFETY: `desc` is non-null and valid for writes (API contract).
        unsafe { out(desc, v) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuArray3DGetDescriptor_v2(desc: *mut CudaArray3DDescriptor, array: CUarray) -> CUresult {
    ffi(|| {
        need(desc)?;
        let s = driver::with_beside_copies(|d| d.array_descriptor(h(array)))?;
        let v = CudaArray3DDescriptor {
            width: s.width as usize,
            height: s.height as usize,
            depth: s.depth as usize,
            format: s.format,
            num_channels: s.channels,
            flags: s.flags,
        };
        // SAFETY: `desc` is non-null and valid for writes (API contract).
        unsafe { out(desc, v) }
    })
}

/// A 3D copy: any of host, device, array and unified memory on each side.
///
/// # Safety
/// Host memory named by `p` must be valid for the copy (API contract).
unsafe fn memcpy_3d(p: *const CudaMemcpy3D, stream: u64, asynchronous: bool) -> CUresult {
    ffi(|| {
        need(p)?;
        // SAFETY: non-null, and points to a CUDA_MEMCPY3D (API contract).
        let c = unsafe { p.read_unaligned() };
        if c.src_lod != 0 || c.dst_lod != 0 || !c.reserved0.is_null() || !c.reserved1.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let copy = Copy3d {
            src: copy_end(
                c.src_memory_type,
                c.src_host as u64,
                c.src_device,
                h(c.src_array),
                [c.src_x_in_bytes, c.src_y, c.src_z],
                c.src_pitch,
                c.src_height,
            )?,
            dst: copy_end(
                c.dst_memory_type,
                c.dst_host as u64,
                c.dst_device,
                h(c.dst_array),
                [c.dst_x_in_bytes, c.dst_y, c.dst_z],
                c.dst_pitch,
                c.dst_height,
            )?,
            width: c.width_in_bytes as u64,
            height: c.height as u64,
            depth: c.depth as u64,
        };
        driver::with_beside_copies(|d| d.memcpy_3d(&copy, stream, asynchronous))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpy3D_v2(p: *const CudaMemcpy3D) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { memcpy_3d(p, 0, false) }
}

#[no_mangle]
pub unsafe extern "C" fn cuMemcpy3DAsync_v2(p: *const CudaMemcpy3D, stream: CUstream) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { memcpy_3d(p, h(stream), true) }
}

// ----- texture and surface objects -----

/// `CUDA_RESOURCE_DESC::res.array`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CudaResourceArray {
    pub h_array: CUarray,
}

/// `CUDA_RESOURCE_DESC::res.linear`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CudaResourceLinear {
    pub dev_ptr: CUdeviceptr,
    pub format: u32,
    pub num_channels: u32,
    pub size_in_bytes: usize,
}

/// `CUDA_RESOURCE_DESC::res.pitch2D`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct CudaResourcePitch2D {
    pub dev_ptr: CUdeviceptr,
    pub format: u32,
    pub num_channels: u32,
    pub width: usize,
    pub height: usize,
    pub pitch_in_bytes: usize,
}

/// `CUDA_RESOURCE_DESC::res`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union CudaResourceUnion {
    pub array: CudaResourceArray,
    pub linear: CudaResourceLinear,
    pub pitch_2d: CudaResourcePitch2D,
    pub reserved: [i32; 32],
}

/// `CUDA_RESOURCE_DESC`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CudaResourceDesc {
    pub res_type: u32,
    pub res: CudaResourceUnion,
    pub flags: u32,
}

impl Default for CudaResourceDesc {
    fn default() -> Self {
        // SAFETY: integers, raw pointers and a union of them: zero bytes
        // are valid for all.
        unsafe { std::mem::zeroed() }
    }
}

/// `CUDA_TEXTURE_DESC`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CudaTextureDesc {
    pub address_mode: [u32; 3],
    pub filter_mode: u32,
    pub flags: u32,
    pub max_anisotropy: u32,
    pub mipmap_filter_mode: u32,
    pub mipmap_level_bias: f32,
    pub min_mipmap_level_clamp: f32,
    pub max_mipmap_level_clamp: f32,
    pub border_color: [f32; 4],
    pub reserved: [i32; 12],
}

/// `CUDA_RESOURCE_VIEW_DESC`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CudaResourceViewDesc {
    pub format: u32,
    pub width: usize,
    pub height: usize,
    pub depth: usize,
    pub first_mipmap_level: u32,
    pub last_mipmap_level: u32,
    pub first_layer: u32,
    pub last_layer: u32,
    pub reserved: [u32; 16],
}

const _: () = {
    assert!(std::mem::size_of::<CudaResourceDesc>() == 144);
    assert!(std::mem::offset_of!(CudaResourceDesc, res) == 8);
    assert!(std::mem::offset_of!(CudaResourceDesc, flags) == 136);
    assert!(std::mem::size_of::<CudaTextureDesc>() == 104);
    assert!(std::mem::offset_of!(CudaTextureDesc, border_color) == 40);
    assert!(std::mem::size_of::<CudaResourceViewDesc>() == 112);
};

/// A resource description as the driver keeps it. Mipmapped arrays are not
/// simulated: `CUDA_ERROR_NOT_SUPPORTED`.
fn resource_from(d: &CudaResourceDesc) -> CuResult<Resource> {
    if d.flags != 0 {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    // SAFETY: (this union read and each below) every member is made of integers and
    // raw pointers, valid for any bytes, and the caller's structure is
    // whole (API contract); the member read is the one `res_type` names.
    Ok(match d.res_type {
        0 => Resource::Array(h(unsafe { d.res.array }.h_array)),
        1 => return Err(CUDA_ERROR_NOT_SUPPORTED),
        2 => {
            // SAFETY: as above.
            let l = unsafe { d.res.linear };
            Resource::Linear {
                ptr: l.dev_ptr,
                format: l.format,
                channels: l.num_channels,
                size: l.size_in_bytes as u64,
            }
        }
        3 => {
            // SAFETY: as above.
            let p = unsafe { d.res.pitch_2d };
            Resource::Pitch2D {
                ptr: p.dev_ptr,
                format: p.format,
                channels: p.num_channels,
                width: p.width as u64,
                height: p.height as u64,
                pitch: p.pitch_in_bytes as u64,
            }
        }
        _ => return Err(CUDA_ERROR_INVALID_VALUE),
    })
}

/// The `CUDA_RESOURCE_DESC` of a resource (the rest zero).
fn resource_to(r: &Resource) -> CudaResourceDesc {
    let mut d = CudaResourceDesc::default();
    match *r {
        Resource::Array(a) => {
            d.res_type = 0;
            d.res.array = CudaResourceArray { h_array: ptr(a) };
        }
        Resource::Linear {
            ptr,
            format,
            channels,
            size,
        } => {
            d.res_type = 2;
            d.res.linear = CudaResourceLinear {
                dev_ptr: ptr,
                format,
                num_channels: channels,
                size_in_bytes: size as usize,
            };
        }
        Resource::Pitch2D {
            ptr,
            format,
            channels,
            width,
            height,
            pitch,
        } => {
            d.res_type = 3;
            d.res.pitch_2d = CudaResourcePitch2D {
                dev_ptr: ptr,
                format,
                num_channels: channels,
                width: width as usize,
                height: height as usize,
                pitch_in_bytes: pitch as usize,
            };
        }
    }
    d
}

#[no_mangle]
pub unsafe extern "C" fn cuTexObjectCreate(
    tex: *mut CUtexObject,
    res_desc: *const CudaResourceDesc,
    tex_desc: *const CudaTextureDesc,
    view_desc: *const CudaResourceViewDesc,
) -> CUresult {
    ffi(|| {
        need(tex)?;
        need(res_desc)?;
        need(tex_desc)?;
        // SAFETY: non-null, and points to a CUDA_RESOURCE_DESC (API contract).
        let res = resource_from(&unsafe { res_desc.read_unaligned() })?;
        // SAFETY: non-null, and points to a CUDA_TEXTURE_DESC (API contract).
        let t = unsafe { tex_desc.read_unaligned() };
        if !view_desc.is_null() {
            // SAFETY: non-null, and points to a CUDA_RESOURCE_VIEW_DESC (API contract).
            let v = unsafe { view_desc.read_unaligned() };
            if v != CudaResourceViewDesc::default() {
                // Resource views are not simulated.
                return Err(CUDA_ERROR_NOT_SUPPORTED);
            }
        }
        let desc = TexDesc {
            address: t.address_mode,
            filter: t.filter_mode,
            flags: t.flags,
            max_anisotropy: t.max_anisotropy,
            mipmap_filter: t.mipmap_filter_mode,
            mipmap_bias: t.mipmap_level_bias,
            min_mipmap_clamp: t.min_mipmap_level_clamp,
            max_mipmap_clamp: t.max_mipmap_level_clamp,
            border: t.border_color,
        };
        let obj = driver::with(|d| d.tex_create(res, desc))?;
        // SAFETY: `tex` is non-null and valid for writes (API contract).
        unsafe { out(tex, obj) }
    })
}

#[no_mangle]
pub extern "C" fn cuTexObjectDestroy(tex: CUtexObject) -> CUresult {
    ffi(|| driver::with(|d| d.tex_destroy(tex)))
}

#[no_mangle]
pub unsafe extern "C" fn cuTexObjectGetResourceDesc(desc: *mut CudaResourceDesc, tex: CUtexObject) -> CUresult {
    ffi(|| {
        need(desc)?;
        let (res, _) = driver::with_beside_copies(|d| d.tex_get(tex))?;
        // SAFETY: `desc` is non-null and valid for writes (API contract).
        unsafe { out(desc, resource_to(&res)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuTexObjectGetTextureDesc(desc: *mut CudaTextureDesc, tex: CUtexObject) -> CUresult {
    ffi(|| {
        need(desc)?;
        let (_, t) = driver::with_beside_copies(|d| d.tex_get(tex))?;
        let v = CudaTextureDesc {
            address_mode: t.address,
            filter_mode: t.filter,
            flags: t.flags,
            max_anisotropy: t.max_anisotropy,
            mipmap_filter_mode: t.mipmap_filter,
            mipmap_level_bias: t.mipmap_bias,
            min_mipmap_level_clamp: t.min_mipmap_clamp,
            max_mipmap_level_clamp: t.max_mipmap_clamp,
            border_color: t.border,
            reserved: [0; 12],
        };
        // SAFETY: `desc` is non-null and valid for writes (API contract).
        unsafe { out(desc, v) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuSurfObjectCreate(surf: *mut CUsurfObject, res_desc: *const CudaResourceDesc) -> CUresult {
    ffi(|| {
        need(surf)?;
        need(res_desc)?;
        // SAFETY: non-null, and points to a CUDA_RESOURCE_DESC (API contract).
        let d = unsafe { res_desc.read_unaligned() };
        if d.res_type != 0 {
            // Surfaces are of arrays only.
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let res = resource_from(&d)?;
        let obj = driver::with(|drv| drv.surf_create(res))?;
        // SAFETY: `surf` is non-null and valid for writes (API contract).
        unsafe { out(surf, obj) }
    })
}

#[no_mangle]
pub extern "C" fn cuSurfObjectDestroy(surf: CUsurfObject) -> CUresult {
    ffi(|| driver::with(|d| d.surf_destroy(surf)))
}

#[no_mangle]
pub unsafe extern "C" fn cuSurfObjectGetResourceDesc(desc: *mut CudaResourceDesc, surf: CUsurfObject) -> CUresult {
    ffi(|| {
        need(desc)?;
        let res = driver::with_beside_copies(|d| d.surf_get(surf))?;
        // SAFETY: `desc` is non-null and valid for writes (API contract).
        unsafe { out(desc, resource_to(&res)) }
    })
}

/// A 2D memset, row by row.
fn memset_2d(dst: u64, pitch: usize, pattern: &[u8], width: usize, height: usize, stream: u64) -> CUresult {
    ffi(|| {
        if height > 1 && width * pattern.len() > pitch {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        driver::with(|d| {
            for row in 0..height as u64 {
                d.memset(dst + row * pitch as u64, pattern, width as u64, stream)?;
            }
            Ok(())
        })
    })
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D8_v2(dst: CUdeviceptr, pitch: usize, v: u8, w: usize, hgt: usize) -> CUresult {
    memset_2d(dst, pitch, &[v], w, hgt, 0)
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D16_v2(dst: CUdeviceptr, pitch: usize, v: u16, w: usize, hgt: usize) -> CUresult {
    memset_2d(dst, pitch, &v.to_le_bytes(), w, hgt, 0)
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D32_v2(dst: CUdeviceptr, pitch: usize, v: u32, w: usize, hgt: usize) -> CUresult {
    memset_2d(dst, pitch, &v.to_le_bytes(), w, hgt, 0)
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D8Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: u8,
    w: usize,
    hgt: usize,
    s: CUstream,
) -> CUresult {
    memset_2d(dst, pitch, &[v], w, hgt, h(s))
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D16Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: u16,
    w: usize,
    hgt: usize,
    s: CUstream,
) -> CUresult {
    memset_2d(dst, pitch, &v.to_le_bytes(), w, hgt, h(s))
}

#[no_mangle]
pub extern "C" fn cuMemsetD2D32Async(
    dst: CUdeviceptr,
    pitch: usize,
    v: u32,
    w: usize,
    hgt: usize,
    s: CUstream,
) -> CUresult {
    memset_2d(dst, pitch, &v.to_le_bytes(), w, hgt, h(s))
}

// ----- streams -----

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(pstream: *mut CUstream, flags: u32) -> CUresult {
    ffi(|| {
        need(pstream)?;
        let s = driver::with(|d| d.stream_create(flags))?;
        // SAFETY: `pstream` is non-null and valid for writes (API contract).
        unsafe { out(pstream, ptr(s)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(pstream: *mut CUstream, flags: u32, priority: i32) -> CUresult {
    // SAFETY: same contract as `cuStreamCreate`; every priority is valid
    // (the driver clamps it) and all streams run work synchronously.
    let r = unsafe { cuStreamCreate(pstream, flags) };
    if r != CUDA_SUCCESS || priority == 0 {
        return r;
    }
    let mut v = [0u8; driver::STREAM_ATTR_BYTES];
    v[..4].copy_from_slice(&priority.to_ne_bytes());
    // SAFETY: `cuStreamCreate` wrote the new stream to `pstream`.
    let stream = unsafe { pstream.read() };
    ffi(|| driver::with(|d| d.stream_set_attribute(h(stream), STREAM_ATTRIBUTE_PRIORITY, &v)))
}

/// `CU_LAUNCH_ATTRIBUTE_PRIORITY`, which streams have too.
const STREAM_ATTRIBUTE_PRIORITY: u32 = 8;

#[no_mangle]
pub unsafe extern "C" fn cuStreamSetAttribute(stream: CUstream, attr: u32, value: *const c_void) -> CUresult {
    ffi(|| {
        need(value)?;
        // SAFETY: `value` points at a CUstreamAttrValue (API contract).
        let v = unsafe { value.cast::<[u8; driver::STREAM_ATTR_BYTES]>().read_unaligned() };
        driver::with(|d| d.stream_set_attribute(h(stream), attr, &v))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamGetAttribute(stream: CUstream, attr: u32, value: *mut c_void) -> CUresult {
    ffi(|| {
        need(value)?;
        let v = driver::with(|d| d.stream_get_attribute(h(stream), attr))?;
        // SAFETY: `value` has room for a CUstreamAttrValue (API contract).
        unsafe { out(value.cast::<[u8; driver::STREAM_ATTR_BYTES]>(), v) }
    })
}

#[no_mangle]
pub extern "C" fn cuStreamCopyAttributes(dst: CUstream, src: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.stream_copy_attributes(h(dst), h(src))))
}

#[no_mangle]
pub extern "C" fn cuStreamDestroy_v2(stream: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.stream_destroy(h(stream))))
}

#[no_mangle]
pub extern "C" fn cuStreamSynchronize(stream: CUstream) -> CUresult {
    let r = ffi(|| driver::synchronize(false, |d| d.stream_synchronize(h(stream))));
    crate::kernels::flush_device_output();
    r
}

#[no_mangle]
pub extern "C" fn cuStreamQuery(stream: CUstream) -> CUresult {
    ffi(|| driver::with_beside_copies(|d| d.stream_query(h(stream))))
}

/// The function runs on the engine's thread once the work queued before it
/// is done, never in the caller's thread; later calls wait for it.
#[no_mangle]
pub extern "C" fn cuLaunchHostFunc(stream: CUstream, func: Option<engine::HostFn>, data: *mut c_void) -> CUresult {
    ffi(|| {
        let func = func.ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if driver::with_beside_copies(|d| d.launch_host_func(h(stream), func, data as usize))? {
            engine::submit_host(func, data);
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuStreamWaitEvent(stream: CUstream, event: CUevent, flags: u32) -> CUresult {
    ffi(|| driver::with(|d| d.stream_wait_event(h(stream), h(event), flags)))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(stream: CUstream, status: *mut i32) -> CUresult {
    ffi(|| {
        need(status)?;
        let s = driver::with_beside_copies(|d| d.stream_capture_status(h(stream)))?;
        // SAFETY: `status` is non-null and valid for writes (API contract).
        unsafe { out(status, s) }
    })
}

// ----- stream capture and graphs -----

thread_local! {
    /// This thread's `CUstreamCaptureMode` (global by default).
    static CAPTURE_MODE: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
}

/// The first `cuStreamBeginCapture`, without a mode: global.
#[no_mangle]
pub extern "C" fn cuStreamBeginCapture(stream: CUstream) -> CUresult {
    cuStreamBeginCapture_v2(stream, 0)
}

#[no_mangle]
pub extern "C" fn cuStreamBeginCapture_v2(stream: CUstream, mode: u32) -> CUresult {
    ffi(|| driver::with(|d| d.stream_begin_capture(h(stream), mode)))
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamBeginCaptureToGraph(
    stream: CUstream,
    graph: *mut c_void,
    deps: *const *mut c_void,
    edges: *const u64,
    n: usize,
    mode: u32,
) -> CUresult {
    ffi(|| {
        if !edges.is_null() {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        // SAFETY: API contract.
        let deps = unsafe { nodes(deps, n) }?;
        driver::with(|d| d.stream_begin_capture_to_graph(h(stream), h(graph), &deps, mode))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture(stream: CUstream, graph: *mut CUgraph) -> CUresult {
    ffi(|| {
        need(graph)?;
        let g = driver::with(|d| d.stream_end_capture(h(stream)))?;
        // SAFETY: `graph` is non-null and valid for writes (API contract).
        unsafe { out(graph, g as CUgraph) }
    })
}

/// `cuThreadExchangeStreamCaptureMode`: swaps this thread's mode.
#[no_mangle]
pub unsafe extern "C" fn cuThreadExchangeStreamCaptureMode(mode: *mut u32) -> CUresult {
    ffi(|| {
        need(mode)?;
        // SAFETY: `mode` is non-null and valid for reads and writes (API contract).
        let new = unsafe { *mode };
        if new > 2 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let old = CAPTURE_MODE.with(|m| m.replace(new));
        // SAFETY: as above.
        unsafe { out(mode, old) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(exec: *mut CUgraphExec, graph: CUgraph, flags: u64) -> CUresult {
    ffi(|| {
        need(exec)?;
        let e = driver::with(|d| d.graph_instantiate(h(graph), flags))?;
        // SAFETY: `exec` is non-null and valid for writes (API contract).
        unsafe { out(exec, e as CUgraphExec) }
    })
}

#[no_mangle]
pub extern "C" fn cuGraphLaunch(exec: CUgraphExec, stream: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.graph_launch(h(exec), h(stream))))
}

#[no_mangle]
pub extern "C" fn cuGraphUpload(exec: CUgraphExec, stream: CUstream) -> CUresult {
    ffi(|| driver::with(|d| d.graph_upload(h(exec), h(stream))))
}

#[no_mangle]
pub extern "C" fn cuGraphExecDestroy(exec: CUgraphExec) -> CUresult {
    ffi(|| driver::with(|d| d.graph_exec_destroy(h(exec))))
}

/// `cuGraphGetNodes`: the count only (this double hands out no nodes).
#[no_mangle]
pub unsafe extern "C" fn cuGraphGetNodes(graph: CUgraph, nodes: *mut *mut c_void, count: *mut usize) -> CUresult {
    ffi(|| {
        need(count)?;
        if nodes.is_null() {
            let n = driver::with(|d| d.graph_node_count(h(graph)))?;
            // SAFETY: `count` is non-null and valid for writes (API contract).
            return unsafe { out(count, n) };
        }
        let list = driver::with(|d| d.graph_nodes(h(graph)))?;
        // SAFETY: `count` is readable and writable and `nodes` has room for
        // `*count` nodes (API contract); the room left over is nulled.
        unsafe {
            let room = *count;
            for i in 0..room {
                nodes
                    .add(i)
                    .write(list.get(i).map_or(std::ptr::null_mut(), |n| ptr(*n)));
            }
            out(count, list.len().min(room))
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphDebugDotPrint(graph: CUgraph, path: *const std::ffi::c_char, _flags: u32) -> CUresult {
    ffi(|| {
        need(path)?;
        let dot = driver::with(|d| d.graph_dot(h(graph)))?;
        // SAFETY: the API passes a NUL-terminated path.
        let path = unsafe { std::ffi::CStr::from_ptr(path) };
        let path = std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
            path.to_bytes(),
        ));
        std::fs::write(path, dot).map_err(|_| CUDA_ERROR_OPERATING_SYSTEM)
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphNodeGetType(node: *mut c_void, kind: *mut u32) -> CUresult {
    ffi(|| {
        need(kind)?;
        let t = driver::with(|d| d.graph_node_type(h(node)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(kind, t) }
    })
}

#[no_mangle]
pub extern "C" fn cuGraphDestroy(graph: CUgraph) -> CUresult {
    ffi(|| driver::with(|d| d.graph_destroy(h(graph))))
}

// ----- events -----

#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(pevent: *mut CUevent, flags: u32) -> CUresult {
    ffi(|| {
        need(pevent)?;
        let e = driver::with(|d| d.event_create(flags))?;
        // SAFETY: `pevent` is non-null and valid for writes (API contract).
        unsafe { out(pevent, ptr(e)) }
    })
}

#[no_mangle]
pub extern "C" fn cuEventDestroy_v2(event: CUevent) -> CUresult {
    ffi(|| driver::with(|d| d.event_destroy(h(event))))
}

#[no_mangle]
pub extern "C" fn cuEventRecord(event: CUevent, stream: CUstream) -> CUresult {
    ffi(|| driver::with_beside_copies(|d| d.event_record(h(event), h(stream))))
}

/// Nothing persists in this double's (absent) L2 cache.
#[no_mangle]
pub extern "C" fn cuCtxResetPersistingL2Cache() -> CUresult {
    ffi(|| driver::with(|d| d.ctx_reset_persisting_l2_cache()))
}

#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetTexture1DLinearMaxWidth(
    width: *mut usize,
    format: u32,
    channels: u32,
    device: CUdevice,
) -> CUresult {
    ffi(|| {
        need(width)?;
        let w = driver::with(|d| d.texture_1d_linear_max_width(format, channels, device))?;
        // SAFETY: `width` is non-null and valid for writes (API contract).
        unsafe { out(width, w) }
    })
}

#[no_mangle]
pub extern "C" fn cuCtxRecordEvent(ctx: CUcontext, event: CUevent) -> CUresult {
    ffi(|| driver::with_beside_copies(|d| d.ctx_record_event(h(ctx), h(event))))
}

#[no_mangle]
pub extern "C" fn cuCtxWaitEvent(ctx: CUcontext, event: CUevent) -> CUresult {
    ffi(|| driver::with_beside_copies(|d| d.ctx_wait_event(h(ctx), h(event))))
}

#[no_mangle]
pub extern "C" fn cuEventSynchronize(event: CUevent) -> CUresult {
    let r = ffi(|| driver::synchronize(true, |d| d.event_wait(h(event))));
    crate::kernels::flush_device_output();
    r
}

#[no_mangle]
pub extern "C" fn cuEventQuery(event: CUevent) -> CUresult {
    ffi(|| driver::with_beside_copies(|d| d.event_query(h(event))))
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    ffi(|| {
        need(ms)?;
        let v = driver::with(|d| d.event_elapsed(h(start), h(end)))?;
        // SAFETY: `ms` is non-null and valid for writes (API contract).
        unsafe { out(ms, v) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(ms: *mut f32, start: CUevent, end: CUevent) -> CUresult {
    // SAFETY: same contract as `cuEventElapsedTime`.
    unsafe { cuEventElapsedTime(ms, start, end) }
}

// ----- launches -----

/// Packs launch arguments from `kernelParams` or `extra` into `buf`.
///
/// # Safety
/// `kernel_params`, when non-null, holds one valid pointer per parameter,
/// each addressing a value of that parameter's size; `extra`, when
/// non-null, is a `CU_LAUNCH_PARAM_END`-terminated key/value list whose
/// buffer and size pointers are valid.
unsafe fn pack_params(
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
    params: &[Param],
    buf: &mut [u8],
) -> CuResult<()> {
    if !kernel_params.is_null() && !extra.is_null() {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    if !kernel_params.is_null() {
        for (i, p) in params.iter().enumerate() {
            // SAFETY: `kernel_params` has one entry per parameter (contract).
            let arg = unsafe { *kernel_params.add(i) };
            need(arg)?;
            // SAFETY: `arg` addresses `p.size` readable bytes (contract), and
            // `buf` holds `p.offset + p.size` bytes by construction.
            unsafe { std::ptr::copy_nonoverlapping(arg.cast::<u8>(), buf[p.offset..].as_mut_ptr(), p.size) };
        }
        return Ok(());
    }
    if extra.is_null() {
        return if params.is_empty() {
            Ok(())
        } else {
            Err(CUDA_ERROR_INVALID_VALUE)
        };
    }
    let (mut buffer, mut size): (*const u8, *const usize) = (std::ptr::null(), std::ptr::null());
    let mut i = 0;
    loop {
        if i >= MAX_EXTRA_ENTRIES {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the list is terminated by CU_LAUNCH_PARAM_END (contract),
        // and every key read so far was followed by its value.
        let key = unsafe { *extra.add(i) };
        if key == CU_LAUNCH_PARAM_END {
            break;
        }
        // SAFETY: a key other than END is followed by its value (contract).
        let value = unsafe { *extra.add(i + 1) };
        match key {
            k if k == CU_LAUNCH_PARAM_BUFFER_POINTER => buffer = value.cast(),
            k if k == CU_LAUNCH_PARAM_BUFFER_SIZE => size = value.cast(),
            _ => return Err(CUDA_ERROR_INVALID_VALUE),
        }
        i += 2;
    }
    if buf.is_empty() {
        return Ok(());
    }
    need(buffer)?;
    need(size)?;
    // SAFETY: `size` points to a `size_t` (contract).
    let size = unsafe { size.read_unaligned() };
    // A buffer shorter than the parameters the kernel declares is taken, as
    // the driver takes it (NCCL fills only the start of its 4 KiB argument
    // structure); the rest stays zero here.
    let n = size.min(buf.len());
    // SAFETY: `buffer` holds `size >= n` readable bytes (contract).
    unsafe { std::ptr::copy_nonoverlapping(buffer, buf.as_mut_ptr(), n) };
    Ok(())
}

#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernel(
    f: CUfunction,
    grid_x: u32,
    grid_y: u32,
    grid_z: u32,
    block_x: u32,
    block_y: u32,
    block_z: u32,
    shared_mem_bytes: u32,
    stream: CUstream,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    let cfg = LaunchConfig {
        grid: [grid_x, grid_y, grid_z],
        block: [block_x, block_y, block_z],
        shared_mem: shared_mem_bytes,
        stream: h(stream),
    };
    ffi(|| {
        driver::with(|d| {
            d.launch(h(f), &cfg, |params, buf| {
                // SAFETY: `kernel_params` / `extra` follow the launch contract.
                unsafe { pack_params(kernel_params, extra, params, buf) }
            })
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernelEx(
    config: *const CUlaunchConfig,
    f: CUfunction,
    kernel_params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CUresult {
    ffi(|| {
        need(config)?;
        // SAFETY: `config` is non-null and points to a CUlaunchConfig (contract).
        let c = unsafe { config.read_unaligned() };
        if c.numAttrs > 0 && c.attrs.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let attrs = if c.numAttrs == 0 {
            &[][..]
        } else {
            // SAFETY: non-null, and `numAttrs` attributes (contract).
            unsafe { std::slice::from_raw_parts(c.attrs, c.numAttrs as usize) }
        };
        let cooperative = attrs
            .iter()
            .any(|a| a.id == LAUNCH_ATTRIBUTE_COOPERATIVE && a.value[..4] != [0; 4]);
        let cfg = LaunchConfig {
            grid: [c.gridDimX, c.gridDimY, c.gridDimZ],
            block: [c.blockDimX, c.blockDimY, c.blockDimZ],
            shared_mem: c.sharedMemBytes,
            stream: h(c.hStream),
        };
        driver::with(|d| {
            if cooperative {
                d.check_cooperative(h(f), &cfg)?;
            }
            d.launch(h(f), &cfg, |params, buf| {
                // SAFETY: `kernel_params` / `extra` follow the launch contract.
                unsafe { pack_params(kernel_params, extra, params, buf) }
            })
        })
    })
}

// ----- occupancy -----

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    num_blocks: *mut i32,
    func: CUfunction,
    block_size: i32,
    dynamic_smem: usize,
) -> CUresult {
    // SAFETY: same contract as the `WithFlags` variant.
    unsafe { cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(num_blocks, func, block_size, dynamic_smem, 0) }
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    num_blocks: *mut i32,
    func: CUfunction,
    block_size: i32,
    dynamic_smem: usize,
    flags: u32,
) -> CUresult {
    ffi(|| {
        need(num_blocks)?;
        let n = driver::with(|d| d.occupancy_max_blocks(h(func), block_size, dynamic_smem as u64, flags))?;
        // SAFETY: `num_blocks` is non-null and valid for writes (API contract).
        unsafe { out(num_blocks, n) }
    })
}

/// `cuOccupancyMaxPotentialBlockSizeWithFlags`: as without flags (the
/// simulated device has no caching modes to choose between).
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    min_grid_size: *mut i32,
    block_size: *mut i32,
    func: CUfunction,
    block_size_to_dynamic_smem: *const c_void,
    dynamic_smem: usize,
    block_size_limit: i32,
    _flags: u32,
) -> CUresult {
    // SAFETY: same arguments and contract as the call without flags.
    unsafe {
        cuOccupancyMaxPotentialBlockSize(
            min_grid_size,
            block_size,
            func,
            block_size_to_dynamic_smem,
            dynamic_smem,
            block_size_limit,
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSize(
    min_grid_size: *mut i32,
    block_size: *mut i32,
    func: CUfunction,
    _block_size_to_dynamic_smem: *const c_void,
    dynamic_smem: usize,
    block_size_limit: i32,
) -> CUresult {
    ffi(|| {
        need(min_grid_size)?;
        need(block_size)?;
        let (g, b) =
            driver::with(|d| d.occupancy_max_potential_block_size(h(func), dynamic_smem as u64, block_size_limit))?;
        // SAFETY: both pointers are non-null and valid for writes (API contract).
        unsafe {
            out(min_grid_size, g)?;
            out(block_size, b)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    dynamic_smem: *mut usize,
    func: CUfunction,
    num_blocks: i32,
    block_size: i32,
) -> CUresult {
    ffi(|| {
        need(dynamic_smem)?;
        let n = driver::with(|d| d.occupancy_available_dyn_smem(h(func), num_blocks, block_size))?;
        // SAFETY: `dynamic_smem` is non-null and valid for writes (API contract).
        unsafe { out(dynamic_smem, n as usize) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveClusters(
    num_clusters: *mut i32,
    func: CUfunction,
    config: *const CUlaunchConfig,
) -> CUresult {
    ffi(|| {
        need(num_clusters)?;
        need(config)?;
        let n = driver::with(|d| d.occupancy_max_active_clusters(h(func)))?;
        // SAFETY: `num_clusters` is non-null and valid for writes (API contract).
        unsafe { out(num_clusters, n) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialClusterSize(
    size: *mut i32,
    func: CUfunction,
    config: *const CUlaunchConfig,
) -> CUresult {
    ffi(|| {
        need(size)?;
        need(config)?;
        // SAFETY: `config` is non-null and points at a CUlaunchConfig (API
        // contract).
        let c = unsafe { &*config };
        let block = [c.blockDimX, c.blockDimY, c.blockDimZ];
        let n = driver::with(|d| d.occupancy_max_potential_cluster_size(h(func), block))?;
        // SAFETY: `size` is non-null and valid for writes (API contract).
        unsafe { out(size, n) }
    })
}

// ----- tensor maps -----

/// Reads `n` values the caller passes (`n` at most 5, the largest rank).
///
/// # Safety
/// `p` points at `n` values when `n > 0` (API contract).
unsafe fn slice_of<'a, T>(p: *const T, n: usize) -> CuResult<&'a [T]> {
    if n == 0 {
        return Ok(&[]);
    }
    need(p)?;
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(p, n) })
}

fn map_out(map: *mut c_void) -> CuResult<*mut [u8; tensormap::MAP_BYTES]> {
    need(map)?;
    if !(map as usize).is_multiple_of(64) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    Ok(map.cast())
}

/// A tensor map from the program's arguments: the arrays the rank asks
/// read, then `encode` given the common parts and the rank.
///
/// # Safety
/// Each array holds what `rank` asks (API contract).
#[allow(clippy::too_many_arguments)]
unsafe fn encode_map(
    map: *mut c_void,
    data_type: u32,
    rank: u32,
    min_rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    element_strides: *const u32,
    [interleave, swizzle, l2_promotion, oob_fill]: [u32; 4],
    encode: impl FnOnce(&tensormap::Common, usize) -> CuResult<[u8; tensormap::MAP_BYTES]>,
) -> CUresult {
    ffi(|| {
        let out = map_out(map)?;
        if !(min_rank..=5).contains(&rank) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let r = rank as usize;
        // SAFETY: each array holds what the rank asks (API contract).
        let (dims, strides, es) = unsafe {
            (
                slice_of(dims, r)?,
                slice_of(strides, r - 1)?,
                slice_of(element_strides, r)?,
            )
        };
        let c = tensormap::Common {
            data_type,
            rank,
            address: address as u64,
            dims,
            strides,
            element_strides: es,
            interleave,
            swizzle,
            l2_promotion,
            oob_fill,
        };
        let m = encode(&c, r)?;
        // SAFETY: `out` is non-null, 64-aligned and holds a CUtensorMap.
        unsafe { out.write(m) };
        Ok(())
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuTensorMapEncodeTiled(
    map: *mut c_void,
    data_type: u32,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    box_dims: *const u32,
    element_strides: *const u32,
    interleave: u32,
    swizzle: u32,
    l2_promotion: u32,
    oob_fill: u32,
) -> CUresult {
    let modes = [interleave, swizzle, l2_promotion, oob_fill];
    // SAFETY: each array holds what the rank asks (API contract).
    let encode = |c: &tensormap::Common, r| tensormap::encode_tiled(c, unsafe { slice_of(box_dims, r)? });
    unsafe {
        encode_map(
            map,
            data_type,
            rank,
            1,
            address,
            dims,
            strides,
            element_strides,
            modes,
            encode,
        )
    }
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuTensorMapEncodeIm2col(
    map: *mut c_void,
    data_type: u32,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    lower: *const i32,
    upper: *const i32,
    channels: u32,
    pixels: u32,
    element_strides: *const u32,
    interleave: u32,
    swizzle: u32,
    l2_promotion: u32,
    oob_fill: u32,
) -> CUresult {
    let modes = [interleave, swizzle, l2_promotion, oob_fill];
    // SAFETY: each array holds what the rank asks (API contract).
    let encode = |c: &tensormap::Common, r: usize| unsafe {
        tensormap::encode_im2col(c, slice_of(lower, r - 2)?, slice_of(upper, r - 2)?, channels, pixels)
    };
    unsafe {
        encode_map(
            map,
            data_type,
            rank,
            3,
            address,
            dims,
            strides,
            element_strides,
            modes,
            encode,
        )
    }
}

#[no_mangle]
pub unsafe extern "C" fn cuTensorMapReplaceAddress(map: *mut c_void, address: *mut c_void) -> CUresult {
    ffi(|| {
        let m = map_out(map)?;
        // SAFETY: non-null, 64-aligned, a CUtensorMap (API contract).
        tensormap::replace_address(unsafe { &mut *m }, address as u64)
    })
}

// ----- the JIT linker -----

/// `cuLinkCreate`: JIT options (optimisation level, target and the rest)
/// change nothing in this double; log buffers are left empty.
#[no_mangle]
pub unsafe extern "C" fn cuLinkCreate_v2(
    num_options: u32,
    _options: *mut u32,
    _values: *mut *mut c_void,
    state: *mut *mut c_void,
) -> CUresult {
    ffi(|| {
        need(state)?;
        if num_options > 64 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let l = driver::with(|d| d.link_create())?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(state, ptr(l)) }
    })
}

#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn cuLinkAddData_v2(
    state: *mut c_void,
    kind: u32,
    data: *mut c_void,
    size: usize,
    _name: *const c_char,
    _num_options: u32,
    _options: *mut u32,
    _values: *mut *mut c_void,
) -> CUresult {
    ffi(|| {
        need(data)?;
        if size == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: `data` holds `size` bytes (API contract).
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
        driver::with(|d| d.link_add_data(h(state), kind, bytes))
    })
}

/// The image stays the linker's until `cuLinkDestroy`, as the driver's does.
#[no_mangle]
pub unsafe extern "C" fn cuLinkComplete(state: *mut c_void, image: *mut *mut c_void, size: *mut usize) -> CUresult {
    ffi(|| {
        need(image)?;
        need(size)?;
        let (p, n) = driver::with(|d| d.link_complete(h(state)).map(|i| (i.as_ptr(), i.len())))?;
        // SAFETY: both are non-null and valid for writes (API contract).
        unsafe {
            out(image, p as *mut c_void)?;
            out(size, n)
        }
    })
}

#[no_mangle]
pub extern "C" fn cuLinkDestroy(state: *mut c_void) -> CUresult {
    ffi(|| driver::with(|d| d.link_destroy(h(state))))
}

// ----- graphs built node by node -----

/// `CUDA_KERNEL_NODE_PARAMS` (`_v2`).
#[repr(C)]
pub struct CUDA_KERNEL_NODE_PARAMS {
    pub func: CUfunction,
    pub gridDimX: u32,
    pub gridDimY: u32,
    pub gridDimZ: u32,
    pub blockDimX: u32,
    pub blockDimY: u32,
    pub blockDimZ: u32,
    pub sharedMemBytes: u32,
    pub kernelParams: *mut *mut c_void,
    pub extra: *mut *mut c_void,
    pub kern: CUkernel,
    pub ctx: CUcontext,
}

/// `CUDA_MEMSET_NODE_PARAMS`.
#[repr(C)]
pub struct CUDA_MEMSET_NODE_PARAMS {
    pub dst: CUdeviceptr,
    pub pitch: usize,
    pub value: u32,
    pub elementSize: u32,
    pub width: usize,
    pub height: usize,
}

/// The dependencies a node is added after.
///
/// # Safety
/// `deps` holds `n` node handles when `n > 0` (API contract).
unsafe fn nodes(deps: *const *mut c_void, n: usize) -> CuResult<Vec<u64>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    need(deps)?;
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(deps, n) }
        .iter()
        .map(|d| h(*d))
        .collect())
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphCreate(graph: *mut *mut c_void, flags: u32) -> CUresult {
    ffi(|| {
        need(graph)?;
        let g = driver::with(|d| d.graph_create(flags))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(graph, ptr(g)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddEmptyNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
) -> CUresult {
    ffi(|| {
        need(node)?;
        // SAFETY: API contract.
        let deps = unsafe { nodes(deps, n) }?;
        let x = driver::with(|d| d.graph_add_empty_node(h(graph), &deps))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddKernelNode_v2(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    params: *const CUDA_KERNEL_NODE_PARAMS,
) -> CUresult {
    ffi(|| {
        need(node)?;
        need(params)?;
        // SAFETY: API contract.
        let (deps, p) = (unsafe { nodes(deps, n) }?, unsafe { &*params });
        let f = if p.func.is_null() { h(p.kern) } else { h(p.func) };
        let cfg = LaunchConfig {
            grid: [p.gridDimX, p.gridDimY, p.gridDimZ],
            block: [p.blockDimX, p.blockDimY, p.blockDimZ],
            shared_mem: p.sharedMemBytes,
            stream: 0,
        };
        let (kp, extra) = (p.kernelParams, p.extra);
        let x = driver::with(|d| {
            d.graph_add_kernel_node(h(graph), &deps, f, &cfg, |params, buf| {
                // SAFETY: the node's parameters follow the launch contract.
                unsafe { pack_params(kp, extra, params, buf) }
            })
        })?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddMemsetNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    params: *const CUDA_MEMSET_NODE_PARAMS,
    _ctx: CUcontext,
) -> CUresult {
    ffi(|| {
        need(node)?;
        need(params)?;
        // SAFETY: API contract.
        let (deps, p) = (unsafe { nodes(deps, n) }?, unsafe { &*params });
        let x = driver::with(|d| {
            d.graph_add_memset_node(
                h(graph),
                &deps,
                p.dst,
                p.pitch as u64,
                p.value,
                p.elementSize,
                p.width as u64,
                p.height as u64,
            )
        })?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

/// A copy node: device to device, one row, in this double.
#[no_mangle]
pub unsafe extern "C" fn cuGraphAddMemcpyNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    copy: *const CudaMemcpy3D,
    _ctx: CUcontext,
) -> CUresult {
    ffi(|| {
        need(node)?;
        need(copy)?;
        // SAFETY: API contract.
        let (deps, c) = (unsafe { nodes(deps, n) }?, unsafe { copy.read_unaligned() });
        // `CU_MEMORYTYPE_DEVICE` and `_UNIFIED`.
        let device = |t: u32| t == 2 || t == 4;
        if !device(c.src_memory_type) || !device(c.dst_memory_type) || c.height > 1 || c.depth > 1 {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let at = |base: u64, x: usize, y: usize, pitch: usize| {
            y.checked_mul(pitch)
                .and_then(|o| o.checked_add(x))
                .and_then(|o| base.checked_add(o as u64))
                .ok_or(CUDA_ERROR_INVALID_VALUE)
        };
        let src = at(c.src_device, c.src_x_in_bytes, c.src_y, c.src_pitch)?;
        let dst = at(c.dst_device, c.dst_x_in_bytes, c.dst_y, c.dst_pitch)?;
        let x = driver::with(|d| d.graph_add_copy_node(h(graph), &deps, dst, src, c.width_in_bytes as u64))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddDependencies(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    n: usize,
) -> CUresult {
    ffi(|| {
        // SAFETY: API contract.
        let (from, to) = unsafe { (nodes(from, n)?, nodes(to, n)?) };
        driver::with(|d| d.graph_add_dependencies(h(graph), &from, &to, &[]))
    })
}

/// `cuStreamGetCaptureInfo_v3`: the status and id, and the capture's
/// graph and the nodes its next work follows (default edges here).
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v3(
    stream: CUstream,
    status: *mut i32,
    id: *mut u64,
    graph: *mut *mut c_void,
    deps: *mut *const *mut c_void,
    edges: *mut *const u64,
    count: *mut usize,
) -> CUresult {
    // SAFETY: the caller's contract.
    unsafe { capture_info(stream, status, id, graph, deps, edges, count) }
}

/// The capture's status, graph and dependencies, for both forms (each
/// export calls this rather than the other, so that a copy of this driver
/// without one still loads).
unsafe fn capture_info(
    stream: CUstream,
    status: *mut i32,
    id: *mut u64,
    graph: *mut *mut c_void,
    deps: *mut *const *mut c_void,
    edges: *mut *const u64,
    count: *mut usize,
) -> CUresult {
    // The node array, valid until the next call (one thread's at a time).
    thread_local! {
        static NODES: std::cell::RefCell<(Vec<*mut c_void>, Vec<u64>)> = const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
    }
    ffi(|| {
        need(status)?;
        let st = driver::with(|d| d.stream_capture_status(h(stream)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(status, st) }?;
        let (g, nodes) = if st == 1 {
            driver::with(|d| d.capture_graph(h(stream)))?
        } else {
            (0, Vec::new())
        };
        let (dp, ep) = NODES.with(|n| {
            let mut n = n.borrow_mut();
            n.0 = nodes.iter().map(|x| ptr(*x)).collect();
            n.1 = vec![0; nodes.len()];
            (n.0.as_ptr(), n.1.as_ptr())
        });
        let some = !nodes.is_empty();
        // SAFETY: each out pointer, when not null, is writable (API contract).
        unsafe {
            if !id.is_null() {
                out(id, if st == 0 { 0 } else { h(stream) })?;
            }
            if !graph.is_null() {
                out(graph, ptr(g))?;
            }
            if !deps.is_null() {
                out(deps, if some { dp } else { std::ptr::null() })?;
            }
            if !edges.is_null() {
                out(edges, if some { ep } else { std::ptr::null() })?;
            }
            if !count.is_null() {
                out(count, nodes.len())?;
            }
        }
        Ok(())
    })
}

/// `cuStreamUpdateCaptureDependencies_v2`.
#[no_mangle]
pub unsafe extern "C" fn cuStreamUpdateCaptureDependencies_v2(
    stream: CUstream,
    deps: *const *mut c_void,
    edges: *const u64,
    n: usize,
    flags: u32,
) -> CUresult {
    // SAFETY: the caller's contract.
    unsafe { update_capture_deps(stream, deps, edges, n, flags) }
}

/// Both forms of `cuStreamUpdateCaptureDependencies`.
unsafe fn update_capture_deps(
    stream: CUstream,
    deps: *const *mut c_void,
    edges: *const u64,
    n: usize,
    flags: u32,
) -> CUresult {
    ffi(|| {
        // SAFETY: API contract.
        unsafe { check_edges(edges, n) }?;
        // SAFETY: API contract.
        let deps = unsafe { nodes(deps, n) }?;
        driver::with(|d| d.capture_update_deps(h(stream), &deps, flags))
    })
}

/// `cuGraphAddDependencies_v2`: edges with data, which order here as
/// default edges do.
#[no_mangle]
pub unsafe extern "C" fn cuGraphAddDependencies_v2(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    edges: *const u64,
    n: usize,
) -> CUresult {
    ffi(|| {
        // SAFETY: API contract.
        unsafe { check_edges(edges, n) }?;
        // SAFETY: API contract.
        let (from, to) = unsafe { (nodes(from, n)?, nodes(to, n)?) };
        let data = if edges.is_null() || n == 0 {
            &[][..]
        } else {
            // SAFETY: `edges` holds `n` entries (API contract).
            unsafe { std::slice::from_raw_parts(edges, n) }
        };
        driver::with(|d| d.graph_add_dependencies(h(graph), &from, &to, data))
    })
}

/// `cuGraphGetEdges_v2`: with null arrays, how many edges; else up to
/// `*count` of them (and their data when asked).
#[no_mangle]
pub unsafe extern "C" fn cuGraphGetEdges_v2(
    graph: *mut c_void,
    from: *mut *mut c_void,
    to: *mut *mut c_void,
    edges: *mut u64,
    count: *mut usize,
) -> CUresult {
    // SAFETY: the caller's contract.
    unsafe { graph_edges(graph, from, to, edges, count) }
}

/// Both forms of `cuGraphGetEdges`.
unsafe fn graph_edges(
    graph: *mut c_void,
    from: *mut *mut c_void,
    to: *mut *mut c_void,
    edges: *mut u64,
    count: *mut usize,
) -> CUresult {
    ffi(|| {
        need(count)?;
        let all = driver::with(|d| d.graph_edges(h(graph)))?;
        // SAFETY: non-null (checked) and read/write (API contract).
        let room = unsafe { *count };
        if from.is_null() && to.is_null() {
            // SAFETY: as above.
            return unsafe { out(count, all.len()) };
        }
        if from.is_null() || to.is_null() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        for (i, (f, t, e)) in all.iter().take(room).enumerate() {
            // SAFETY: each array holds `room` entries (API contract).
            unsafe {
                from.add(i).write(ptr(*f));
                to.add(i).write(ptr(*t));
                if !edges.is_null() {
                    edges.add(i).write(*e);
                }
            }
        }
        // SAFETY: as above.
        unsafe { out(count, all.len().min(room)) }
    })
}

/// `cuGraphGetEdges`, CUDA 12.2's form without edge data.
#[no_mangle]
pub unsafe extern "C" fn cuGraphGetEdges(
    graph: *mut c_void,
    from: *mut *mut c_void,
    to: *mut *mut c_void,
    count: *mut usize,
) -> CUresult {
    // SAFETY: the caller's contract, with no edge data asked.
    unsafe { graph_edges(graph, from, to, std::ptr::null_mut(), count) }
}

/// `cuStreamGetCaptureInfo_v2`, CUDA 12.2's form without edge data.
#[no_mangle]
pub unsafe extern "C" fn cuStreamGetCaptureInfo_v2(
    stream: CUstream,
    status: *mut i32,
    id: *mut u64,
    graph: *mut *mut c_void,
    deps: *mut *const *mut c_void,
    count: *mut usize,
) -> CUresult {
    // SAFETY: the caller's contract, with no edge data asked.
    unsafe { capture_info(stream, status, id, graph, deps, std::ptr::null_mut(), count) }
}

/// `cuStreamUpdateCaptureDependencies`, CUDA 12.2's form without edge data.
#[no_mangle]
pub unsafe extern "C" fn cuStreamUpdateCaptureDependencies(
    stream: CUstream,
    deps: *const *mut c_void,
    n: usize,
    flags: u32,
) -> CUresult {
    // SAFETY: the caller's contract, with default edges.
    unsafe { update_capture_deps(stream, deps, std::ptr::null(), n, flags) }
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddChildGraphNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    child: *mut c_void,
) -> CUresult {
    ffi(|| {
        need(node)?;
        // SAFETY: API contract.
        let deps = unsafe { nodes(deps, n) }?;
        let x = driver::with(|d| d.graph_add_child_node(h(graph), &deps, h(child)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

/// Event record and wait nodes.
///
/// # Safety
/// As for the other node functions (API contract).
unsafe fn event_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    event: CUevent,
    record: bool,
) -> CUresult {
    ffi(|| {
        need(node)?;
        // SAFETY: API contract.
        let deps = unsafe { nodes(deps, n) }?;
        let x = driver::with(|d| d.graph_add_event_node(h(graph), &deps, h(event), record))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

/// `CUDA_MEM_ALLOC_NODE_PARAMS`: pool properties (88 bytes, of which the
/// allocation type, handle types and location lead), access descriptors,
/// size, and the address given back.
#[repr(C)]
pub struct CudaMemAllocNodeParams {
    pub alloc_type: u32,
    pub handle_types: u32,
    pub location_type: u32,
    pub location_id: i32,
    pub rest_of_pool_props: [u8; 72],
    pub access_descs: *const c_void,
    pub access_desc_count: usize,
    pub bytesize: usize,
    pub dptr: CUdeviceptr,
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddMemAllocNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    params: *mut CudaMemAllocNodeParams,
) -> CUresult {
    ffi(|| {
        need(node)?;
        need(params)?;
        // SAFETY: API contract.
        let (p, deps) = unsafe { (&mut *params, nodes(deps, n)?) };
        if p.alloc_type != 1 || p.location_type != 1 || p.handle_types != 0 || p.access_desc_count != 0 {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let (x, address) =
            driver::with(|d| d.graph_add_mem_alloc_node(h(graph), &deps, p.location_id, p.bytesize as u64))?;
        p.dptr = address;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphConditionalHandleCreate(
    handle: *mut u64,
    graph: *mut c_void,
    ctx: CUcontext,
    default: u32,
    flags: u32,
) -> CUresult {
    ffi(|| {
        need(handle)?;
        let x = driver::with(|d| d.graph_conditional_handle_create(h(graph), h(ctx), default, flags))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(handle, x) }
    })
}

/// `CUDA_CONDITIONAL_NODE_PARAMS`.
#[repr(C)]
pub struct CudaConditionalNodeParams {
    pub handle: u64,
    pub kind: u32,
    pub size: u32,
    pub bodies: *mut *mut c_void,
    pub ctx: CUcontext,
}

/// `CU_GRAPH_NODE_TYPE_KERNEL`, `CU_GRAPH_NODE_TYPE_CONDITIONAL`.
const NODE_TYPE_KERNEL: u32 = 0;
const NODE_TYPE_CONDITIONAL: u32 = 13;
/// Where the parameters' union starts in a `CUgraphNodeParams`.
const NODE_PARAMS_UNION: usize = 16;

/// Edge data (`CUgraphEdgeData`, 8 bytes each): ports 0 to 2, types 0 and
/// 1 (programmatic), reserved bytes zero. Work runs in order here, so a
/// programmatic edge orders as a default one does.
///
/// # Safety
/// `edges` holds `n` entries when non-null (API contract).
unsafe fn check_edges(edges: *const u64, n: usize) -> CuResult<()> {
    if edges.is_null() || n == 0 {
        return Ok(());
    }
    // SAFETY: the caller's promise.
    let data = unsafe { std::slice::from_raw_parts(edges, n) };
    let valid = |e: &u64| {
        let b = e.to_le_bytes();
        b[0] <= 2 && b[1] <= 2 && b[2] <= 1 && b[3..].iter().all(|r| *r == 0)
    };
    if data.iter().all(valid) {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_VALUE)
    }
}

/// `cuGraphAddNode_v2` of a kernel node (the `_v2` layout) or a
/// conditional node; other node types have their typed calls here.
#[no_mangle]
pub unsafe extern "C" fn cuGraphAddNode_v2(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    edges: *const u64,
    n: usize,
    params: *mut c_void,
) -> CUresult {
    if params.is_null() {
        return CUDA_ERROR_INVALID_VALUE;
    }
    // SAFETY: API contract.
    if let Err(e) = unsafe { check_edges(edges, n) } {
        return e;
    }
    // SAFETY: a CUgraphNodeParams leads with its type; the union follows.
    let (kind, body) = unsafe { (params.cast::<u32>().read(), params.cast::<u8>().add(NODE_PARAMS_UNION)) };
    match kind {
        NODE_TYPE_KERNEL => {
            // SAFETY: the union is a CUDA_KERNEL_NODE_PARAMS_v2 (API contract).
            let r = unsafe { cuGraphAddKernelNode_v2(node, graph, deps, n, body.cast()) };
            if r == CUDA_SUCCESS && !edges.is_null() && n > 0 {
                // SAFETY: the node was written; `edges` holds `n` entries.
                let (x, data) = unsafe { (h(*node), std::slice::from_raw_parts(edges, n)) };
                let _ = driver::with(|d| {
                    d.set_edge_data(x, data);
                    Ok(())
                });
            }
            r
        }
        // SAFETY: the union is a CUDA_CONDITIONAL_NODE_PARAMS (API contract).
        NODE_TYPE_CONDITIONAL => unsafe { conditional_node(node, graph, deps, n, body.cast()) },
        _ => CUDA_ERROR_NOT_SUPPORTED,
    }
}

/// A conditional node; its bodies are written back into `params`.
///
/// # Safety
/// As for the other node functions (API contract).
unsafe fn conditional_node(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    params: *mut CudaConditionalNodeParams,
) -> CUresult {
    ffi(|| {
        need(node)?;
        // SAFETY: API contract.
        let (p, deps) = unsafe { (&mut *params, nodes(deps, n)?) };
        if !p.ctx.is_null() && driver::with(|d| d.graph_ctx(h(graph)))? != h(p.ctx) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let (x, bodies) = driver::with(|d| d.graph_add_conditional_node(h(graph), &deps, p.handle, p.kind, p.size))?;
        p.bodies = bodies.cast_mut().cast();
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddMemFreeNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    dptr: CUdeviceptr,
) -> CUresult {
    ffi(|| {
        need(node)?;
        // SAFETY: API contract.
        let deps = unsafe { nodes(deps, n) }?;
        let x = driver::with(|d| d.graph_add_mem_free_node(h(graph), &deps, dptr))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

/// `CUDA_HOST_NODE_PARAMS`.
#[repr(C)]
pub struct CudaHostNodeParams {
    pub func: Option<engine::HostFn>,
    pub user_data: *mut c_void,
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddHostNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    params: *const CudaHostNodeParams,
) -> CUresult {
    ffi(|| {
        need(node)?;
        need(params)?;
        // SAFETY: API contract.
        let (p, deps) = unsafe { (params.read(), nodes(deps, n)?) };
        let func = p.func.ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let x = driver::with(|d| d.graph_add_host_node(h(graph), &deps, func, p.user_data as usize))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(node, ptr(x)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddEventRecordNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    event: CUevent,
) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { event_node(node, graph, deps, n, event, true) }
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphAddEventWaitNode(
    node: *mut *mut c_void,
    graph: *mut c_void,
    deps: *const *mut c_void,
    n: usize,
    event: CUevent,
) -> CUresult {
    // SAFETY: forwarded under the same contract.
    unsafe { event_node(node, graph, deps, n, event, false) }
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphExecKernelNodeSetParams_v2(
    exec: *mut c_void,
    node: *mut c_void,
    params: *const CUDA_KERNEL_NODE_PARAMS,
) -> CUresult {
    ffi(|| {
        need(params)?;
        // SAFETY: API contract.
        let p = unsafe { &*params };
        let f = if p.func.is_null() { h(p.kern) } else { h(p.func) };
        let cfg = LaunchConfig {
            grid: [p.gridDimX, p.gridDimY, p.gridDimZ],
            block: [p.blockDimX, p.blockDimY, p.blockDimZ],
            shared_mem: p.sharedMemBytes,
            stream: 0,
        };
        let (kp, extra) = (p.kernelParams, p.extra);
        driver::with(|d| {
            d.graph_exec_kernel_node_set(h(exec), h(node), f, &cfg, |params, buf| {
                // SAFETY: the node's parameters follow the launch contract.
                unsafe { pack_params(kp, extra, params, buf) }
            })
        })
    })
}

// ----- stream memory operations -----

#[no_mangle]
pub extern "C" fn cuStreamWriteValue32_v2(stream: CUstream, addr: CUdeviceptr, value: u32, flags: u32) -> CUresult {
    ffi(|| driver::with(|d| d.stream_write_value(h(stream), addr, value as u64, false, flags)))
}

#[no_mangle]
pub extern "C" fn cuStreamWriteValue64_v2(stream: CUstream, addr: CUdeviceptr, value: u64, flags: u32) -> CUresult {
    ffi(|| driver::with(|d| d.stream_write_value(h(stream), addr, value, true, flags)))
}

#[no_mangle]
pub extern "C" fn cuStreamWaitValue32_v2(stream: CUstream, addr: CUdeviceptr, value: u32, flags: u32) -> CUresult {
    ffi(|| driver::with(|d| d.stream_wait_value(h(stream), addr, value as u64, false, flags)))
}

#[no_mangle]
pub extern "C" fn cuStreamWaitValue64_v2(stream: CUstream, addr: CUdeviceptr, value: u64, flags: u32) -> CUresult {
    ffi(|| driver::with(|d| d.stream_wait_value(h(stream), addr, value, true, flags)))
}

// ----- pointer attributes -----

/// `CU_POINTER_ATTRIBUTE_IS_MANAGED`.
const POINTER_ATTRIBUTE_IS_MANAGED: i32 = 8;

/// `cuPointerGetAttribute`: whether a pointer is managed memory; other
/// attributes are not modelled.
#[no_mangle]
pub unsafe extern "C" fn cuPointerGetAttribute(data: *mut c_void, attribute: i32, ptr: CUdeviceptr) -> CUresult {
    ffi(|| {
        need(data)?;
        if attribute != POINTER_ATTRIBUTE_IS_MANAGED {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let managed = driver::with(|d| d.pointer_is_managed(ptr))?;
        // SAFETY: `data` has room for an int (API contract).
        unsafe { out(data.cast::<i32>(), managed as i32) }
    })
}

/// `CUgraphExecUpdateResultInfo`.
#[repr(C)]
pub struct CUgraphExecUpdateResultInfo {
    pub result: u32,
    pub errorNode: *mut c_void,
    pub errorFromNode: *mut c_void,
}

/// `CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE`.
const GRAPH_EXEC_UPDATE_FAILURE: CUresult = 910;

#[no_mangle]
pub unsafe extern "C" fn cuGraphExecUpdate_v2(
    exec: *mut c_void,
    graph: *mut c_void,
    info: *mut CUgraphExecUpdateResultInfo,
) -> CUresult {
    ffi(|| {
        need(info)?;
        let result = driver::with(|d| d.graph_exec_update(h(exec), h(graph)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe {
            info.write(CUgraphExecUpdateResultInfo {
                result,
                errorNode: std::ptr::null_mut(),
                errorFromNode: std::ptr::null_mut(),
            })
        };
        if result == 0 {
            Ok(())
        } else {
            Err(GRAPH_EXEC_UPDATE_FAILURE)
        }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphExecMemsetNodeSetParams(
    exec: *mut c_void,
    node: *mut c_void,
    params: *const CUDA_MEMSET_NODE_PARAMS,
    _ctx: CUcontext,
) -> CUresult {
    ffi(|| {
        need(params)?;
        // SAFETY: API contract.
        let p = unsafe { &*params };
        driver::with(|d| {
            d.graph_exec_memset_node_set(
                h(exec),
                h(node),
                p.dst,
                p.value,
                p.elementSize,
                p.width as u64,
                p.height as u64,
            )
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphExecMemcpyNodeSetParams(
    exec: *mut c_void,
    node: *mut c_void,
    copy: *const CudaMemcpy3D,
    _ctx: CUcontext,
) -> CUresult {
    ffi(|| {
        need(copy)?;
        // SAFETY: API contract.
        let c = unsafe { copy.read_unaligned() };
        // `CU_MEMORYTYPE_DEVICE` and `_UNIFIED`.
        let device = |t: u32| t == 2 || t == 4;
        if !device(c.src_memory_type) || !device(c.dst_memory_type) || c.height > 1 || c.depth > 1 {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let src = c
            .src_device
            .checked_add(c.src_x_in_bytes as u64)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let dst = c
            .dst_device
            .checked_add(c.dst_x_in_bytes as u64)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        driver::with(|d| d.graph_exec_copy_node_set(h(exec), h(node), dst, src, c.width_in_bytes as u64))
    })
}

#[no_mangle]
pub extern "C" fn cuGraphNodeSetEnabled(exec: *mut c_void, node: *mut c_void, enabled: u32) -> CUresult {
    ffi(|| driver::with(|d| d.graph_node_enabled(h(exec), h(node), Some(enabled != 0))).map(drop))
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphNodeGetEnabled(exec: *mut c_void, node: *mut c_void, enabled: *mut u32) -> CUresult {
    ffi(|| {
        need(enabled)?;
        let e = driver::with(|d| d.graph_node_enabled(h(exec), h(node), None))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(enabled, e as u32) }
    })
}

#[no_mangle]
pub extern "C" fn cuGraphExecChildGraphNodeSetParams(
    exec: *mut c_void,
    node: *mut c_void,
    child: *mut c_void,
) -> CUresult {
    ffi(|| driver::with(|d| d.graph_exec_child_node_set(h(exec), h(node), h(child))))
}

#[no_mangle]
pub extern "C" fn cuGraphExecEventRecordNodeSetEvent(exec: *mut c_void, node: *mut c_void, event: CUevent) -> CUresult {
    ffi(|| driver::with(|d| d.graph_exec_event_node_set(h(exec), h(node), h(event), true)))
}

#[no_mangle]
pub extern "C" fn cuGraphExecEventWaitNodeSetEvent(exec: *mut c_void, node: *mut c_void, event: CUevent) -> CUresult {
    ffi(|| driver::with(|d| d.graph_exec_event_node_set(h(exec), h(node), h(event), false)))
}

// ----- address ranges and IPC -----

/// `CUipcMemHandle` / `CUipcEventHandle`, passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CUipcHandle {
    pub reserved: [u8; 64],
}

/// `cuMemGetAddressRange`: the allocation holding `ptr`.
#[no_mangle]
pub unsafe extern "C" fn cuMemGetAddressRange_v2(
    base: *mut CUdeviceptr,
    size: *mut usize,
    ptr: CUdeviceptr,
) -> CUresult {
    ffi(|| {
        let (b, s) = driver::with(|d| d.address_range(ptr))?;
        // SAFETY: each output, when non-null, is valid for writes (API
        // contract).
        unsafe {
            out_opt(base, b);
            out_opt(size, s as usize);
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuIpcGetMemHandle(handle: *mut CUipcHandle, dptr: CUdeviceptr) -> CUresult {
    ffi(|| {
        need(handle)?;
        let reserved = driver::with(|d| d.ipc_get_mem_handle(dptr))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(handle, CUipcHandle { reserved }) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuIpcOpenMemHandle_v2(dptr: *mut CUdeviceptr, handle: CUipcHandle, flags: u32) -> CUresult {
    ffi(|| {
        need(dptr)?;
        let p = driver::with(|d| d.ipc_open_mem_handle(&handle.reserved, flags))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(dptr, p) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuIpcOpenMemHandle(dptr: *mut CUdeviceptr, handle: CUipcHandle, flags: u32) -> CUresult {
    // SAFETY: the same contract.
    unsafe { cuIpcOpenMemHandle_v2(dptr, handle, flags) }
}

#[no_mangle]
pub extern "C" fn cuIpcCloseMemHandle(dptr: CUdeviceptr) -> CUresult {
    ffi(|| driver::with(|d| d.ipc_close_mem_handle(dptr)))
}

#[no_mangle]
pub unsafe extern "C" fn cuIpcGetEventHandle(handle: *mut CUipcHandle, event: CUevent) -> CUresult {
    ffi(|| {
        need(handle)?;
        let reserved = driver::with_beside_copies(|d| d.ipc_get_event_handle(h(event)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(handle, CUipcHandle { reserved }) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuIpcOpenEventHandle(event: *mut CUevent, handle: CUipcHandle) -> CUresult {
    ffi(|| {
        need(event)?;
        let e = driver::with_beside_copies(|d| d.ipc_open_event_handle(&handle.reserved))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(event, ptr(e)) }
    })
}

// ----- graph memory -----

/// `cuDeviceGetGraphMemAttribute`: graphs here allocate no memory of their
/// own, so every attribute (used and reserved, now and highest) is 0.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetGraphMemAttribute(device: CUdevice, attr: i32, value: *mut c_void) -> CUresult {
    ffi(|| {
        need(value)?;
        driver::with(|d| d.check_device(device))?;
        if !(0..=3).contains(&attr) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        // SAFETY: the attributes are 64-bit words (API contract).
        unsafe { out(value.cast::<u64>(), 0u64) }
    })
}

/// `cuDeviceSetGraphMemAttribute`: only the highs (1, 3) may be reset, to 0.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceSetGraphMemAttribute(device: CUdevice, attr: i32, value: *mut c_void) -> CUresult {
    ffi(|| {
        need(value)?;
        driver::with(|d| d.check_device(device))?;
        // SAFETY: non-null; a 64-bit word (API contract).
        let v = unsafe { value.cast::<u64>().read_unaligned() };
        if !matches!(attr, 1 | 3) || v != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        Ok(())
    })
}

#[no_mangle]
pub extern "C" fn cuDeviceGraphMemTrim(device: CUdevice) -> CUresult {
    ffi(|| driver::with(|d| d.check_device(device)))
}
