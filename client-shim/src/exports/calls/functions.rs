//! What a program asks of its functions, kernels, modules and libraries
//! besides their attributes: names, owners, loading state and enumeration,
//! answered in the shim from what it recorded when they were made; and
//! cache preferences, which the server's driver takes.

use super::*;
use gpupool_proto::message::CacheTarget;
use std::ffi::CString;

/// `CU_FUNC_CACHE_PREFER_EQUAL`, the last `CUfunc_cache`.
const FUNC_CACHE_PREFER_EQUAL: u32 = 3;
/// `CUsharedconfig`: the bank size a Hopper GPU has, and the last value.
const SHARED_MEM_FOUR_BYTE_BANKS: u32 = 1;
const SHARED_MEM_EIGHT_BYTE_BANKS: u32 = 2;
/// `CUfunctionLoadingState`.
const FUNCTION_UNLOADED: i32 = 0;
const FUNCTION_LOADED: i32 = 1;

/// A module was loaded as `module`: keep its kernel names, in image order,
/// when the image can be read.
pub(super) fn loaded_module(s: &Shim, module: Handle, bytes: &[u8]) {
    write(&s.module_kernels).insert(module, image_kernels(bytes).map(Arc::new));
}

pub(super) fn unloaded_module(s: &Shim, module: Handle) {
    write(&s.module_kernels).remove(&module);
    write(&s.functions).retain(|_, f| f.module != Some(module));
}

/// The server made function `h` named `name` (of `module`, when it came
/// from one).
pub(super) fn made_function(s: &Shim, h: Handle, name: &str, module: Option<Handle>) {
    let info = state::FunctionInfo {
        name: CString::new(name).unwrap_or_default(),
        module,
    };
    write(&s.functions).insert(h, info);
}

pub unsafe fn func_get_name(name: *mut *const c_char, function: CUfunction) -> CuResult {
    let s = shim()?;
    if name.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let h = handle(function);
    // A kernel handle may stand for a function (CUDA lets it).
    let p = if state::is_local(h) {
        read(&s.lazy_kernels).get(&h).map(|k| k.c_name.as_ptr())
    } else {
        read(&s.functions).get(&h).map(|f| f.name.as_ptr())
    };
    // SAFETY: `name` is non-null and writable (API contract); the string
    // lives as long as the function.
    unsafe { out(name, p.ok_or(CuError::INVALID_HANDLE)?) }
}

pub unsafe fn kernel_get_name(name: *mut *const c_char, kernel: CUkernel) -> CuResult {
    let s = shim()?;
    if name.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let p = read(&s.lazy_kernels).get(&handle(kernel)).map(|k| k.c_name.as_ptr());
    // SAFETY: as for `func_get_name`; the string lives as long as the
    // kernel's library.
    unsafe { out(name, p.ok_or(CuError::INVALID_HANDLE)?) }
}

pub unsafe fn func_get_module(module: *mut CUmodule, function: CUfunction) -> CuResult {
    let s = shim()?;
    if module.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let h = handle(function);
    let found = read(&s.functions).get(&h).map(|f| f.module);
    match found {
        Some(Some(m)) => unsafe { out(module, as_ptr(m)) },
        Some(None) => {
            tracing::warn!(
                "cuFuncGetModule of a function made from a library kernel: the module the library became in the \
                 context is not known to the client; returning CUDA_ERROR_NOT_SUPPORTED"
            );
            Err(CuError::NOT_SUPPORTED)
        }
        None if is_kernel(s, h) => Err(CuError::NOT_SUPPORTED),
        None => Err(CuError::INVALID_HANDLE),
    }
}

pub unsafe fn kernel_get_library(library: *mut CUlibrary, kernel: CUkernel) -> CuResult {
    let s = shim()?;
    if library.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let k = handle(kernel);
    let lib = lock(&s.kernel_names)
        .iter()
        .find_map(|((lib, _), h)| (*h == k).then_some(*lib))
        .ok_or(CuError::INVALID_HANDLE)?;
    unsafe { out(library, as_ptr(lib)) }
}

/// `cuFuncIsLoaded`: a library's kernel is loaded on the server at its
/// first use (or `cuFuncLoad`); a module's functions are loaded with it.
pub unsafe fn func_is_loaded(loaded: *mut i32, function: CUfunction) -> CuResult {
    let s = shim()?;
    if loaded.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let h = handle(function);
    let v = if state::is_local(h) {
        let k = read(&s.lazy_kernels).get(&h).cloned().ok_or(CuError::INVALID_HANDLE)?;
        let resolved = lock(&k.remote).is_some();
        if resolved {
            FUNCTION_LOADED
        } else {
            FUNCTION_UNLOADED
        }
    } else if read(&s.functions).contains_key(&h) || read(&s.kernels).contains(&h) {
        FUNCTION_LOADED
    } else {
        return Err(CuError::INVALID_HANDLE);
    };
    unsafe { out(loaded, v) }
}

pub unsafe fn func_load(function: CUfunction) -> CuResult {
    let s = shim()?;
    let h = handle(function);
    if state::is_local(h) {
        return resolve(s, h).map(|_| ());
    }
    if read(&s.functions).contains_key(&h) || read(&s.kernels).contains(&h) {
        Ok(())
    } else {
        Err(CuError::INVALID_HANDLE)
    }
}

/// A library's kernel names, sorted, when the shim could read its image.
fn library_names(s: &Shim, library: CUlibrary) -> CuResult<(Handle, Arc<state::LazyLibrary>, Vec<String>)> {
    let lh = handle(library);
    let lib = read(&s.libraries).get(&lh).cloned().ok_or(CuError::INVALID_HANDLE)?;
    let Some(names) = &lib.kernels else {
        tracing::warn!("the kernels of a library whose image the client cannot read are not listed; returning CUDA_ERROR_NOT_SUPPORTED");
        return Err(CuError::NOT_SUPPORTED);
    };
    let mut names: Vec<String> = names.iter().cloned().collect();
    names.sort();
    Ok((lh, lib, names))
}

pub unsafe fn library_get_kernel_count(count: *mut u32, library: CUlibrary) -> CuResult {
    let s = shim()?;
    if count.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (_, _, names) = library_names(s, library)?;
    unsafe { out(count, names.len() as u32) }
}

pub unsafe fn library_enumerate_kernels(kernels: *mut CUkernel, count: u32, library: CUlibrary) -> CuResult {
    let s = shim()?;
    if kernels.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let (lh, lib, names) = library_names(s, library)?;
    for (i, name) in names.iter().take(count as usize).enumerate() {
        let h = s.lazy_kernel(lh, &lib, name);
        // SAFETY: the caller's buffer holds `count` handles (API contract).
        unsafe { kernels.add(i).write(as_ptr(h)) };
    }
    Ok(())
}

/// A module's kernel names, when the shim could read its image.
fn module_names(s: &Shim, module: CUmodule) -> CuResult<Arc<Vec<String>>> {
    match read(&s.module_kernels).get(&handle(module)) {
        Some(Some(names)) => Ok(Arc::clone(names)),
        Some(None) => {
            tracing::warn!("the functions of a module whose image the client cannot read are not listed; returning CUDA_ERROR_NOT_SUPPORTED");
            Err(CuError::NOT_SUPPORTED)
        }
        None => Err(CuError::INVALID_HANDLE),
    }
}

pub unsafe fn module_get_function_count(count: *mut u32, module: CUmodule) -> CuResult {
    let s = shim()?;
    if count.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let names = module_names(s, module)?;
    unsafe { out(count, names.len() as u32) }
}

/// `cuModuleEnumerateFunctions`: the server makes each function (one round
/// trip per function; programs ask this once).
pub unsafe fn module_enumerate_functions(functions: *mut CUfunction, count: u32, module: CUmodule) -> CuResult {
    let s = shim()?;
    if functions.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let ctx = current_ctx()?;
    let names = module_names(s, module)?;
    for (i, name) in names.iter().take(count as usize).enumerate() {
        let f = function_in(s, ctx, module, name)?;
        // SAFETY: the caller's buffer holds `count` handles (API contract).
        unsafe { functions.add(i).write(f) };
    }
    Ok(())
}

/// Every function of a module, made in `ctx` (the current context when
/// NULL), in the order of its image: the tools module table's iteration.
pub unsafe fn module_functions(ctx: CUcontext, module: CUmodule) -> CuResult<Vec<CUfunction>> {
    let s = shim()?;
    let ctx = if ctx.is_null() { current_ctx()? } else { handle(ctx) };
    s.context_device(ctx)?;
    let names = module_names(s, module)?;
    names.iter().map(|name| function_in(s, ctx, module, name)).collect()
}

fn check_cache_config(config: u32) -> CuResult {
    if config <= FUNC_CACHE_PREFER_EQUAL {
        Ok(())
    } else {
        Err(CuError::INVALID_VALUE)
    }
}

/// Streamed when the shim knows the target (a function the server made, a
/// kernel it resolved, the current context): the driver then has nothing
/// to refuse, as the preference is checked here. TensorFlow sets it before
/// the first launch of each of its kernels. A function the shim does not
/// know waits for the server's answer.
fn set_cache_config(s: &Shim, ctx: Handle, target: CacheTarget, config: u32) -> CuResult {
    let known = match target {
        CacheTarget::Function(f) => read(&s.functions).contains_key(&f),
        CacheTarget::Kernel { .. } | CacheTarget::Context => true,
    };
    let request = Request::SetCacheConfig { ctx, target, config };
    if known {
        s.remote.post(&request, &[])?;
    } else {
        s.remote.call(&request, &[])?;
    }
    // The preference may change what the occupancy calculator answers.
    write(&s.occupancy).clear();
    Ok(())
}

pub unsafe fn ctx_set_cache_config(config: u32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    check_cache_config(config)?;
    set_cache_config(s, ctx, CacheTarget::Context, config)?;
    write(&s.cache_configs).insert(ctx, config);
    Ok(())
}

pub unsafe fn ctx_get_cache_config(config: *mut u32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if config.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let c = read(&s.cache_configs).get(&ctx).copied().unwrap_or(0);
    unsafe { out(config, c) }
}

pub unsafe fn func_set_cache_config(function: CUfunction, config: u32) -> CuResult {
    let s = shim()?;
    let (ctx, device) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    check_cache_config(config)?;
    let h = handle(function);
    let target = if is_kernel(s, h) {
        // A kernel standing for a function: its function in this context.
        CacheTarget::Kernel {
            kernel: resolve(s, h)?,
            device,
        }
    } else {
        CacheTarget::Function(h)
    };
    set_cache_config(s, ctx, target, config)
}

pub unsafe fn kernel_set_cache_config(kernel: CUkernel, config: u32, device: CUdevice) -> CuResult {
    let s = shim()?;
    s.device(device)?;
    check_cache_config(config)?;
    let h = handle(kernel);
    if !is_kernel(s, h) {
        return Err(CuError::INVALID_HANDLE);
    }
    let target = CacheTarget::Kernel {
        kernel: resolve(s, h)?,
        device,
    };
    set_cache_config(s, 0, target, config)
}

/// Shared memory bank size: fixed at four bytes on the GPUs gpupool
/// serves, where the driver takes a setting and changes nothing.
pub unsafe fn ctx_get_shared_mem_config(config: *mut u32) -> CuResult {
    shim()?;
    current_ctx()?;
    if config.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    unsafe { out(config, SHARED_MEM_FOUR_BYTE_BANKS) }
}

pub unsafe fn ctx_set_shared_mem_config(config: u32) -> CuResult {
    shim()?;
    current_ctx()?;
    if config > SHARED_MEM_EIGHT_BYTE_BANKS {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(())
}

pub unsafe fn func_set_shared_mem_config(function: CUfunction, config: u32) -> CuResult {
    let s = shim()?;
    let h = handle(function);
    if !is_kernel(s, h) && !read(&s.functions).contains_key(&h) {
        return Err(CuError::INVALID_HANDLE);
    }
    if config > SHARED_MEM_EIGHT_BYTE_BANKS {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(())
}
