//! CUDA arrays (`cuArrayCreate`, `cuArray3DCreate`), and the texture and
//! surface objects that read them or device memory (`cuTexObjectCreate`,
//! `cuSurfObjectCreate`): made by the server's driver, one round trip each;
//! their descriptors are answered here. Copies into and out of arrays are
//! the 2D and 3D copies' (`copies.rs`).

use super::*;
use crate::state::{ArrayEntry, TextureEntry};
use gpupool_proto::message::{array_element_bytes, ArrayDesc, Resource, TextureDesc};

/// `CUDA_ARRAY_DESCRIPTOR`.
#[repr(C)]
#[derive(Clone, Copy)]
struct ArrayDescriptor {
    width: usize,
    height: usize,
    format: u32,
    channels: u32,
}

/// `CUDA_ARRAY3D_DESCRIPTOR`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Array3DDescriptor {
    width: usize,
    height: usize,
    depth: usize,
    format: u32,
    channels: u32,
    flags: u32,
}

/// `CUDA_RESOURCE_DESC`: the type, a 128-byte union, flags.
#[repr(C)]
#[derive(Clone, Copy)]
struct ResourceDescriptor {
    kind: u32,
    res: [u64; 16],
    flags: u32,
}

/// `CUDA_TEXTURE_DESC`.
#[repr(C)]
#[derive(Clone, Copy)]
struct TextureDescriptor {
    address_mode: [u32; 3],
    filter_mode: u32,
    flags: u32,
    max_anisotropy: u32,
    mipmap_filter_mode: u32,
    mipmap_level_bias: f32,
    min_mipmap_level_clamp: f32,
    max_mipmap_level_clamp: f32,
    border_color: [f32; 4],
    reserved: [i32; 12],
}

/// `CUDA_RESOURCE_VIEW_DESC` (112 bytes), which gpupool does not offer.
const RESOURCE_VIEW_BYTES: usize = 112;

const _: () = assert!(std::mem::size_of::<ArrayDescriptor>() == 24);
const _: () = assert!(std::mem::size_of::<Array3DDescriptor>() == 40);
const _: () = assert!(std::mem::size_of::<ResourceDescriptor>() == 144);
const _: () = assert!(std::mem::size_of::<TextureDescriptor>() == 104);

/// `CUresourcetype`.
const RESOURCE_ARRAY: u32 = 0;
const RESOURCE_MIPMAPPED_ARRAY: u32 = 1;
const RESOURCE_LINEAR: u32 = 2;
const RESOURCE_PITCH2D: u32 = 3;

/// `CUDA_ARRAY3D_*` flags the server's driver is asked for: layered,
/// surface load/store, texture gather, depth textures, colour attachments.
/// Cubemaps, sparse and deferred-mapping arrays are not offered.
const OFFERED_FLAGS: u32 = 0x01 | 0x02 | 0x08 | 0x10 | 0x20;

fn create(s: &Shim, desc: ArrayDesc) -> CuResult<Handle> {
    let ctx = current_ctx()?;
    if desc.flags & !OFFERED_FLAGS != 0 {
        tracing::warn!(
            flags = desc.flags,
            "CUDA arrays with these flags are not supported by gpupool"
        );
        return Err(CuError::NOT_SUPPORTED);
    }
    match s.remote.call(&Request::ArrayCreate { ctx, desc }, &[])? {
        Reply::Handle(h) => {
            write(&s.arrays).insert(h, ArrayEntry { ctx, desc });
            Ok(h)
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn array_create(array: *mut *mut c_void, desc: *const c_void) -> CuResult {
    let s = shim()?;
    if array.is_null() || desc.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUDA_ARRAY_DESCRIPTOR; read unaligned.
    let d = unsafe { std::ptr::read_unaligned(desc.cast::<ArrayDescriptor>()) };
    let desc = ArrayDesc {
        width: d.width as u64,
        height: d.height as u64,
        depth: 0,
        format: d.format,
        channels: d.channels,
        flags: 0,
    };
    let h = create(s, desc)?;
    // SAFETY: checked not to be null; the program passes a slot.
    unsafe { out(array, h as *mut c_void) }
}

pub unsafe fn array_3d_create(array: *mut *mut c_void, desc: *const c_void) -> CuResult {
    let s = shim()?;
    if array.is_null() || desc.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUDA_ARRAY3D_DESCRIPTOR; read unaligned.
    let d = unsafe { std::ptr::read_unaligned(desc.cast::<Array3DDescriptor>()) };
    let desc = ArrayDesc {
        width: d.width as u64,
        height: d.height as u64,
        depth: d.depth as u64,
        format: d.format,
        channels: d.channels,
        flags: d.flags,
    };
    let h = create(s, desc)?;
    // SAFETY: as above.
    unsafe { out(array, h as *mut c_void) }
}

pub unsafe fn array_destroy(array: *mut c_void) -> CuResult {
    let s = shim()?;
    let h = handle(array);
    if !read(&s.arrays).contains_key(&h) {
        return Err(CuError::INVALID_HANDLE);
    }
    s.remote.call(&Request::ArrayDestroy { array: h }, &[])?;
    write(&s.arrays).remove(&h);
    Ok(())
}

/// The program's array `array`.
pub(super) fn array_entry(s: &Shim, array: Handle) -> CuResult<ArrayEntry> {
    read(&s.arrays).get(&array).copied().ok_or(CuError::INVALID_HANDLE)
}

/// Check, before any piece of a copy is sent, that `depth` slices from
/// `z` of `height` rows of `width` bytes from byte `x` of row `y` lie in
/// the program's array `array`: a copy that does not fit copies nothing.
pub(super) fn check_array_extent(
    s: &Shim,
    array: Handle,
    (x, y, z): (usize, usize, usize),
    (width, height, depth): (usize, usize, usize),
) -> CuResult {
    let d = array_entry(s, array)?.desc;
    let row = array_element_bytes(d.format, d.channels)
        .and_then(|e| e.checked_mul(d.width))
        .ok_or(CuError::INVALID_VALUE)?;
    let fits = |at: usize, n: usize, limit: u64| (at as u64).checked_add(n as u64).is_some_and(|e| e <= limit);
    match fits(x, width, row) && fits(y, height, d.height.max(1)) && fits(z, depth, d.depth.max(1)) {
        true => Ok(()),
        false => Err(CuError::INVALID_VALUE),
    }
}

pub unsafe fn array_get_descriptor(desc: *mut c_void, array: *mut c_void) -> CuResult {
    let s = shim()?;
    let a = array_entry(s, handle(array))?.desc;
    if a.depth > 0 {
        // A 3D or layered array has no 2D descriptor.
        return Err(CuError::INVALID_VALUE);
    }
    let d = ArrayDescriptor {
        width: a.width as usize,
        height: a.height as usize,
        format: a.format,
        channels: a.channels,
    };
    // SAFETY: out checks for null; the program passes room for a
    // CUDA_ARRAY_DESCRIPTOR, which may not be aligned.
    unsafe { out_unaligned(desc.cast::<ArrayDescriptor>(), d) }
}

pub unsafe fn array_3d_get_descriptor(desc: *mut c_void, array: *mut c_void) -> CuResult {
    let s = shim()?;
    let a = array_entry(s, handle(array))?.desc;
    let d = Array3DDescriptor {
        width: a.width as usize,
        height: a.height as usize,
        depth: a.depth as usize,
        format: a.format,
        channels: a.channels,
        flags: a.flags,
    };
    // SAFETY: as above, for a CUDA_ARRAY3D_DESCRIPTOR.
    unsafe { out_unaligned(desc.cast::<Array3DDescriptor>(), d) }
}

/// Write `value` to a possibly unaligned slot the program passed.
unsafe fn out_unaligned<T>(ptr: *mut T, value: T) -> CuResult {
    if ptr.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: non-null, and the caller passes room for a T.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// What a resource descriptor names, as the server is asked for it, and the
/// context it is in.
fn resource_of(s: &Shim, r: &ResourceDescriptor) -> CuResult<(Resource, Handle)> {
    if r.flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let (format, channels) = (r.res[1] as u32, (r.res[1] >> 32) as u32);
    match r.kind {
        RESOURCE_ARRAY => {
            let a = r.res[0];
            Ok((Resource::Array(a), array_entry(s, a)?.ctx))
        }
        RESOURCE_LINEAR => {
            let (ptr, size) = (r.res[0], r.res[2]);
            let ctx = device_range_ctx(s, ptr, size)?;
            Ok((
                Resource::Linear {
                    ptr,
                    format,
                    channels,
                    size,
                },
                ctx,
            ))
        }
        RESOURCE_PITCH2D => {
            let (ptr, width, height, pitch) = (r.res[0], r.res[2], r.res[3], r.res[4]);
            let row = array_element_bytes(format, channels)
                .and_then(|e| e.checked_mul(width))
                .ok_or(CuError::INVALID_VALUE)?;
            let span = height
                .checked_sub(1)
                .and_then(|h| h.checked_mul(pitch))
                .and_then(|b| b.checked_add(row))
                .ok_or(CuError::INVALID_VALUE)?;
            let ctx = device_range_ctx(s, ptr, span)?;
            Ok((
                Resource::Pitch2D {
                    ptr,
                    format,
                    channels,
                    width,
                    height,
                    pitch,
                },
                ctx,
            ))
        }
        RESOURCE_MIPMAPPED_ARRAY => {
            tracing::warn!("textures of mipmapped arrays are not supported by gpupool");
            Err(CuError::NOT_SUPPORTED)
        }
        _ => Err(CuError::INVALID_VALUE),
    }
}

pub unsafe fn tex_object_create(
    tex: *mut u64,
    res: *const c_void,
    desc: *const c_void,
    view: *const c_void,
) -> CuResult {
    let s = shim()?;
    if tex.is_null() || res.is_null() || desc.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUDA_RESOURCE_DESC, a CUDA_TEXTURE_DESC
    // and, when not null, a CUDA_RESOURCE_VIEW_DESC; read as bytes, unaligned.
    let (raw_r, raw_t) = unsafe {
        (
            std::ptr::read_unaligned(res.cast::<[u8; 144]>()),
            std::ptr::read_unaligned(desc.cast::<[u8; 104]>()),
        )
    };
    // SAFETY: both are plain C structs of integers and floats, any bytes of
    // their sizes (checked above) a valid value.
    let (r, t) = unsafe {
        (
            std::ptr::read_unaligned(raw_r.as_ptr().cast::<ResourceDescriptor>()),
            std::ptr::read_unaligned(raw_t.as_ptr().cast::<TextureDescriptor>()),
        )
    };
    if !view.is_null() {
        // SAFETY: as above.
        let v = unsafe { std::ptr::read_unaligned(view.cast::<[u8; RESOURCE_VIEW_BYTES]>()) };
        if v.iter().any(|&b| b != 0) {
            tracing::warn!("texture resource views are not supported by gpupool");
            return Err(CuError::NOT_SUPPORTED);
        }
    }
    let (resource, ctx) = resource_of(s, &r)?;
    let texture = TextureDesc {
        address_mode: t.address_mode,
        filter_mode: t.filter_mode,
        flags: t.flags,
        max_anisotropy: t.max_anisotropy,
        mipmap_filter_mode: t.mipmap_filter_mode,
        mipmap_level_bias: t.mipmap_level_bias,
        min_mipmap_level_clamp: t.min_mipmap_level_clamp,
        max_mipmap_level_clamp: t.max_mipmap_level_clamp,
        border_color: t.border_color,
    };
    let req = Request::TexObjectCreate { ctx, resource, texture };
    match s.remote.call(&req, &[])? {
        Reply::Handle(h) => {
            let entry = TextureEntry {
                ctx,
                resource: raw_r,
                texture: raw_t,
            };
            write(&s.textures).insert(h, entry);
            // SAFETY: checked not to be null.
            unsafe { out(tex, h) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn tex_object_destroy(tex: u64) -> CuResult {
    let s = shim()?;
    if !read(&s.textures).contains_key(&tex) {
        return Err(CuError::INVALID_VALUE);
    }
    s.remote.call(&Request::TexObjectDestroy { tex }, &[])?;
    write(&s.textures).remove(&tex);
    Ok(())
}

/// Copy `bytes` to the program's slot `dst`.
unsafe fn out_bytes(dst: *mut c_void, bytes: &[u8]) -> CuResult {
    if dst.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes room for the descriptor these bytes are.
    unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst.cast::<u8>(), bytes.len()) };
    Ok(())
}

pub unsafe fn tex_object_get_resource_desc(res: *mut c_void, tex: u64) -> CuResult {
    let s = shim()?;
    let e = read(&s.textures)
        .get(&tex)
        .map(|e| e.resource)
        .ok_or(CuError::INVALID_VALUE)?;
    // SAFETY: room for a CUDA_RESOURCE_DESC (API contract).
    unsafe { out_bytes(res, &e) }
}

pub unsafe fn tex_object_get_texture_desc(desc: *mut c_void, tex: u64) -> CuResult {
    let s = shim()?;
    let e = read(&s.textures)
        .get(&tex)
        .map(|e| e.texture)
        .ok_or(CuError::INVALID_VALUE)?;
    // SAFETY: room for a CUDA_TEXTURE_DESC (API contract).
    unsafe { out_bytes(desc, &e) }
}

pub unsafe fn tex_object_get_resource_view_desc(view: *mut c_void, tex: u64) -> CuResult {
    let s = shim()?;
    if !read(&s.textures).contains_key(&tex) {
        return Err(CuError::INVALID_VALUE);
    }
    // No texture here has a view (the driver answers zeroes for none).
    // SAFETY: room for a CUDA_RESOURCE_VIEW_DESC (API contract).
    unsafe { out_bytes(view, &[0u8; RESOURCE_VIEW_BYTES]) }
}

pub unsafe fn surf_object_create(surf: *mut u64, res: *const c_void) -> CuResult {
    let s = shim()?;
    if surf.is_null() || res.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUDA_RESOURCE_DESC; read as bytes,
    // unaligned, then as the struct, which any bytes are.
    let raw = unsafe { std::ptr::read_unaligned(res.cast::<[u8; 144]>()) };
    // SAFETY: as above.
    let r = unsafe { std::ptr::read_unaligned(raw.as_ptr().cast::<ResourceDescriptor>()) };
    if r.kind != RESOURCE_ARRAY || r.flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let array = r.res[0];
    let ctx = array_entry(s, array)?.ctx;
    match s.remote.call(&Request::SurfObjectCreate { ctx, array }, &[])? {
        Reply::Handle(h) => {
            let entry = TextureEntry {
                ctx,
                resource: raw,
                texture: [0; 104],
            };
            write(&s.surfaces).insert(h, entry);
            // SAFETY: checked not to be null.
            unsafe { out(surf, h) }
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn surf_object_destroy(surf: u64) -> CuResult {
    let s = shim()?;
    if !read(&s.surfaces).contains_key(&surf) {
        return Err(CuError::INVALID_VALUE);
    }
    s.remote.call(&Request::SurfObjectDestroy { surf }, &[])?;
    write(&s.surfaces).remove(&surf);
    Ok(())
}

pub unsafe fn surf_object_get_resource_desc(res: *mut c_void, surf: u64) -> CuResult {
    let s = shim()?;
    let e = read(&s.surfaces)
        .get(&surf)
        .map(|e| e.resource)
        .ok_or(CuError::INVALID_VALUE)?;
    // SAFETY: room for a CUDA_RESOURCE_DESC (API contract).
    unsafe { out_bytes(res, &e) }
}
