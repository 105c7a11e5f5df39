//! The JIT linker (`cuLinkCreate`, `cuLinkAddData`, `cuLinkAddFile`,
//! `cuLinkComplete`, `cuLinkDestroy`), as numba and other JIT compilers use
//! it. The server's driver links, for the GPU the program runs on. The
//! linked image comes back to the shim, which keeps it for the program
//! until `cuLinkDestroy` (as the driver keeps its own). Loading it ships it
//! back once per server, by hash, like any image.

use super::*;
use gpupool_proto::message::SCALAR_JIT_OPTIONS;
use std::collections::HashMap;
use std::sync::Mutex;

/// `CUjit_option`s naming the program's log buffers and their sizes.
const INFO_LOG_BUFFER: u32 = 3;
const INFO_LOG_BUFFER_SIZE: u32 = 4;
const ERROR_LOG_BUFFER: u32 = 5;
const ERROR_LOG_BUFFER_SIZE: u32 = 6;
/// Most options one call may pass.
const MAX_OPTIONS: u32 = 64;

/// Linkers the program holds (the server's handles) -> the image once
/// linked.
static LINKS: Mutex<Option<HashMap<Handle, Option<Vec<u8>>>>> = Mutex::new(None);

fn links<T>(f: impl FnOnce(&mut HashMap<Handle, Option<Vec<u8>>>) -> T) -> T {
    let mut l = LINKS.lock().unwrap_or_else(|p| p.into_inner());
    f(l.get_or_insert_with(HashMap::new))
}

/// The options the server may take, from the program's arrays. The logs
/// are the server's: the program's log buffers are left empty, with zero
/// bytes written.
///
/// # Safety
/// `options` and `values` hold `count` entries when `count > 0` (API
/// contract); a log buffer option's value is a buffer of the size its size
/// option gives.
unsafe fn jit_options(count: u32, options: *mut u32, values: *mut *mut c_void) -> CuResult<Vec<(u32, u64)>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    if count > MAX_OPTIONS || options.is_null() || values.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the caller's promise.
    let (keys, vals) = unsafe {
        (
            std::slice::from_raw_parts(options, count as usize),
            std::slice::from_raw_parts_mut(values, count as usize),
        )
    };
    let size_of = |o: u32| keys.iter().position(|k| *k == o).map_or(0, |i| vals[i] as usize);
    let (info_size, error_size) = (size_of(INFO_LOG_BUFFER_SIZE), size_of(ERROR_LOG_BUFFER_SIZE));
    let mut out = Vec::new();
    for i in 0..keys.len() {
        match keys[i] {
            INFO_LOG_BUFFER | ERROR_LOG_BUFFER => {
                let size = if keys[i] == INFO_LOG_BUFFER {
                    info_size
                } else {
                    error_size
                };
                if size > 0 && !vals[i].is_null() {
                    // SAFETY: a buffer of at least one byte (the caller's
                    // promise).
                    unsafe { vals[i].cast::<u8>().write(0) };
                }
            }
            INFO_LOG_BUFFER_SIZE | ERROR_LOG_BUFFER_SIZE => vals[i] = std::ptr::null_mut(),
            o if SCALAR_JIT_OPTIONS.contains(&o) => out.push((o, vals[i] as u64)),
            o => {
                tracing::warn!(
                    option = o,
                    "a JIT option that names the program's memory cannot reach the server; returning CUDA_ERROR_NOT_SUPPORTED"
                );
                return Err(CuError::NOT_SUPPORTED);
            }
        }
    }
    Ok(out)
}

pub unsafe fn link_create(
    count: u32,
    options: *mut u32,
    values: *mut *mut c_void,
    state: *mut *mut c_void,
) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if state.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the API contract, as `jit_options` asks.
    let options = unsafe { jit_options(count, options, values) }?;
    let Reply::Handle(link) = s.remote.call(&Request::LinkCreate { ctx, options }, &[])? else {
        return Err(CuError::UNKNOWN);
    };
    links(|l| l.insert(link, None));
    unsafe { out(state, as_ptr(link)) }
}

fn known(link: Handle) -> CuResult {
    if links(|l| l.contains_key(&link)) {
        Ok(())
    } else {
        Err(CuError::INVALID_HANDLE)
    }
}

fn add(link: Handle, kind: u32, name: String, data: &[u8]) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    known(link)?;
    s.remote
        .call(&Request::LinkAddData { ctx, link, kind, name }, data)
        .map(|_| ())
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn link_add_data(
    state: *mut c_void,
    kind: u32,
    data: *mut c_void,
    size: usize,
    name: *const c_char,
    _count: u32,
    _options: *mut u32,
    _values: *mut *mut c_void,
) -> CuResult {
    if data.is_null() || size == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let name = if name.is_null() {
        String::new()
    } else {
        unsafe { c_string(name)? }
    };
    // SAFETY: `data` holds `size` bytes (API contract).
    let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), size) };
    add(handle(state), kind, name, bytes)
}

/// The file is the program's, on this machine: the shim reads it and sends
/// its bytes.
pub unsafe fn link_add_file(
    state: *mut c_void,
    kind: u32,
    path: *const c_char,
    _count: u32,
    _options: *mut u32,
    _values: *mut *mut c_void,
) -> CuResult {
    let path = unsafe { c_string(path)? };
    let bytes = std::fs::read(&path).map_err(|e| {
        tracing::debug!("cuLinkAddFile: cannot read {path}: {e}");
        CuError::FILE_NOT_FOUND
    })?;
    if bytes.is_empty() {
        return Err(CuError::INVALID_VALUE);
    }
    add(handle(state), kind, path, &bytes)
}

/// Complete a link on the server and fetch the image.
fn complete(s: &Shim, ctx: Handle, link: Handle) -> CuResult<Vec<u8>> {
    let size_of = match s.remote.call(&Request::LinkComplete { ctx, link }, &[])? {
        Reply::Size(n) => usize::try_from(n).map_err(|_| CuError::OUT_OF_MEMORY)?,
        _ => return Err(CuError::UNKNOWN),
    };
    // The image in pieces: one message is small, an image need not be.
    let mut bytes = Vec::with_capacity(size_of);
    while bytes.len() < size_of {
        let piece = Request::LinkImage {
            link,
            offset: bytes.len() as u64,
        };
        match s.remote.call(&piece, &[])? {
            Reply::Bytes(b) if !b.is_empty() => bytes.extend_from_slice(&b),
            _ => return Err(CuError::UNKNOWN),
        }
    }
    Ok(bytes)
}

/// `CU_JIT_INPUT_FATBINARY`.
const INPUT_FATBINARY: u32 = 2;

/// Link the objects of relocatable device code (each a fat binary) on the
/// server, in `ctx`, as the driver does when a program's linked device code
/// holds nothing its GPU runs; the linker is gone again afterwards.
pub(super) fn link_objects(s: &Shim, ctx: Handle, objects: &[&[u8]]) -> CuResult<Vec<u8>> {
    let Reply::Handle(link) = s.remote.call(
        &Request::LinkCreate {
            ctx,
            options: Vec::new(),
        },
        &[],
    )?
    else {
        return Err(CuError::UNKNOWN);
    };
    let linked = objects
        .iter()
        .enumerate()
        .try_for_each(|(i, object)| {
            let name = format!("relocatable device code object {i}");
            let add = Request::LinkAddData {
                ctx,
                link,
                kind: INPUT_FATBINARY,
                name,
            };
            s.remote.call(&add, object).map(drop)
        })
        .and_then(|()| complete(s, ctx, link));
    let _ = s.remote.call(&Request::LinkDestroy { link }, &[]);
    if let Err(e) = &linked {
        tracing::warn!("linking relocatable device code on the server failed: {e}");
    }
    linked
}

pub unsafe fn link_complete(state: *mut c_void, image: *mut *mut c_void, size: *mut usize) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    if image.is_null() || size.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let link = handle(state);
    known(link)?;
    let bytes = complete(s, ctx, link)?;
    let (p, n) = links(|l| {
        let kept = l.entry(link).or_default().insert(bytes);
        (kept.as_ptr(), kept.len())
    });
    // SAFETY: both are non-null and writable (API contract); the image
    // stays in place until cuLinkDestroy.
    unsafe {
        out(image, p as *mut c_void)?;
        out(size, n)
    }
}

pub unsafe fn link_destroy(state: *mut c_void) -> CuResult {
    let s = shim()?;
    let link = handle(state);
    if links(|l| l.remove(&link)).is_none() {
        return Err(CuError::INVALID_HANDLE);
    }
    s.remote.call(&Request::LinkDestroy { link }, &[]).map(|_| ())
}
