//! CUDA arrays, 2D/3D copies with array sides, texture and surface objects
//! and the kernels that use them, through the exported C API.
//!
//! The copy engine is on in this process (`GPUPOOL_SOFT_COPY_ENGINE=1`, set
//! before the one `cuInit`), so asynchronous copies from pinned memory take
//! the engine's path. Tests run one at a time, each in its own context.

use std::ffi::{c_void, CString};
use std::ptr::{null, null_mut};
use std::sync::{Mutex, Once};

use gpupool_softcuda::exports::*;

static SERIAL: Mutex<()> = Mutex::new(());
static INIT: Once = Once::new();

const FLOAT: u32 = 0x20;

fn ok(r: CUresult) {
    assert_eq!(r, 0, "expected CUDA_SUCCESS, got {r}");
}

/// A fresh current context; the guard keeps the tests one at a time.
fn context() -> (std::sync::MutexGuard<'static, ()>, CUcontext) {
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    INIT.call_once(|| {
        // Set once, before the driver reads it, while no other test thread
        // runs driver code (they wait on SERIAL or on this Once).
        std::env::set_var("GPUPOOL_SOFT_COPY_ENGINE", "1");
        ok(cuInit(0));
    });
    let mut ctx = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuCtxCreate_v2(&mut ctx, 0, 0) });
    (guard, ctx)
}

fn array2d(w: usize, h: usize, format: u32, channels: u32) -> CUarray {
    let mut a = null_mut();
    let d = CudaArrayDescriptor {
        width: w,
        height: h,
        format,
        num_channels: channels,
    };
    // SAFETY: valid pointers.
    ok(unsafe { cuArrayCreate_v2(&mut a, &d) });
    a
}

fn array3d(w: usize, h: usize, d: usize, format: u32, channels: u32, flags: u32) -> CUarray {
    let mut a = null_mut();
    let desc = CudaArray3DDescriptor {
        width: w,
        height: h,
        depth: d,
        format,
        num_channels: channels,
        flags,
    };
    // SAFETY: valid pointers.
    ok(unsafe { cuArray3DCreate_v2(&mut a, &desc) });
    a
}

fn alloc(n: usize) -> CUdeviceptr {
    let mut p = 0;
    // SAFETY: valid out-pointer.
    ok(unsafe { cuMemAlloc_v2(&mut p, n) });
    p
}

fn dtoh(p: CUdeviceptr, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    // SAFETY: `v` holds `n` bytes.
    ok(unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), p, n) });
    v
}

fn htod(p: CUdeviceptr, bytes: &[u8]) {
    // SAFETY: `bytes` is readable for its length.
    ok(unsafe { cuMemcpyHtoD_v2(p, bytes.as_ptr().cast(), bytes.len()) });
}

/// A 2D copy from host bytes into an array.
fn host_to_array(src: &[u8], pitch: usize, a: CUarray, x: usize, y: usize, w: usize, h: usize) -> CUresult {
    let c = CudaMemcpy2D {
        src_memory_type: 1,
        src_host: src.as_ptr().cast(),
        src_pitch: pitch,
        dst_memory_type: 3,
        dst_array: a,
        dst_x_in_bytes: x,
        dst_y: y,
        width_in_bytes: w,
        height: h,
        ..Default::default()
    };
    // SAFETY: the host rows lie in `src` (checked by the callers' figures).
    unsafe { cuMemcpy2D_v2(&c) }
}

/// The whole of a packed `row × rows × slices` array, read with one 3D copy.
fn read_array(a: CUarray, row: usize, rows: usize, slices: usize) -> Vec<u8> {
    let mut out = vec![0u8; row * rows * slices];
    let c = CudaMemcpy3D {
        src_memory_type: 3,
        src_array: a,
        dst_memory_type: 1,
        dst_host: out.as_mut_ptr().cast(),
        dst_pitch: row,
        dst_height: rows,
        width_in_bytes: row,
        height: rows,
        depth: slices,
        ..Default::default()
    };
    // SAFETY: `out` holds the whole array.
    ok(unsafe { cuMemcpy3D_v2(&c) });
    out
}

fn floats(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

fn float_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|f| f.to_le_bytes()).collect()
}

#[test]
fn arrays_are_created_described_and_destroyed() {
    let (_g, ctx) = context();
    let a = array2d(7, 3, 0x02, 2);
    assert!(!a.is_null());
    let mut d = CudaArrayDescriptor::default();
    // SAFETY: valid pointers.
    ok(unsafe { cuArrayGetDescriptor_v2(&mut d, a) });
    assert_eq!(
        d,
        CudaArrayDescriptor {
            width: 7,
            height: 3,
            format: 0x02,
            num_channels: 2
        }
    );
    let mut d3 = CudaArray3DDescriptor::default();
    // SAFETY: valid pointers.
    ok(unsafe { cuArray3DGetDescriptor_v2(&mut d3, a) });
    assert_eq!((d3.width, d3.height, d3.depth, d3.flags), (7, 3, 0, 0));

    let b = array3d(4, 0, 6, 0x0a, 4, 1 | 2);
    // SAFETY: valid pointers.
    ok(unsafe { cuArray3DGetDescriptor_v2(&mut d3, b) });
    assert_eq!(
        d3,
        CudaArray3DDescriptor {
            width: 4,
            height: 0,
            depth: 6,
            format: 0x0a,
            num_channels: 4,
            flags: 3
        }
    );

    // Memory is charged while the array lives.
    let (mut free0, mut total) = (0, 0);
    let (mut free1, mut free2) = (0, 0);
    // SAFETY: valid out-pointers.
    unsafe {
        ok(cuMemGetInfo_v2(&mut free0, &mut total));
        let big = array3d(256, 256, 16, FLOAT, 4, 0);
        ok(cuMemGetInfo_v2(&mut free1, &mut total));
        assert_eq!(free0 - free1, 256 * 256 * 16 * 16);
        ok(cuArrayDestroy(big));
        ok(cuMemGetInfo_v2(&mut free2, &mut total));
    }
    assert_eq!(free2, free0);

    // SAFETY: handles are validated; out-pointers valid or null on purpose.
    unsafe {
        ok(cuArrayDestroy(a));
        assert_eq!(cuArrayDestroy(a), 400, "destroyed twice");
        assert_eq!(cuArrayGetDescriptor_v2(&mut d, a), 400);
        assert_eq!(cuArrayDestroy(0xdead_0000 as CUarray), 400);
        assert_eq!(cuArrayDestroy(null_mut()), 400);
        assert_eq!(cuArrayGetDescriptor_v2(null_mut(), b), 1);
        let mut h = null_mut();
        assert_eq!(cuArrayCreate_v2(&mut h, null()), 1);
        assert_eq!(cuArrayCreate_v2(null_mut(), &CudaArrayDescriptor::default()), 1);
    }

    // Bad descriptors.
    let bad2 = |w, h, format, ch| {
        let mut x = null_mut();
        let d = CudaArrayDescriptor {
            width: w,
            height: h,
            format,
            num_channels: ch,
        };
        // SAFETY: valid pointers.
        unsafe { cuArrayCreate_v2(&mut x, &d) }
    };
    assert_eq!(bad2(0, 4, FLOAT, 1), 1, "zero width");
    assert_eq!(bad2(4, 4, FLOAT, 3), 1, "three channels");
    assert_eq!(bad2(4, 4, 0x04, 1), 1, "no such format");
    assert_eq!(bad2(4, 4, 0xc0, 1), 1, "a format not simulated");
    assert_eq!(bad2(usize::MAX, usize::MAX, FLOAT, 4), 1, "overflowing size");
    assert_eq!(bad2(131_072, 65_536, FLOAT, 4), 2, "128 GiB: out of memory");
    let bad3 = |w, h, d, flags| {
        let mut x = null_mut();
        let desc = CudaArray3DDescriptor {
            width: w,
            height: h,
            depth: d,
            format: FLOAT,
            num_channels: 1,
            flags,
        };
        // SAFETY: valid pointers.
        unsafe { cuArray3DCreate_v2(&mut x, &desc) }
    };
    assert_eq!(bad3(8, 8, 6, 4), 801, "cubemap");
    assert_eq!(bad3(8, 8, 0, 0x40), 801, "sparse");
    assert_eq!(bad3(8, 0, 4, 0), 1, "depth without height");
    assert_eq!(bad3(8, 8, 0, 1), 1, "layered without layers");
    assert_eq!(bad3(16_385, 2, 2, 0), 1, "3D too wide");
    assert_eq!(bad3(8, 8, 0, 8), 0, "texture gather 2D");
    ok(cuArrayDestroy(b));
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn copies_between_host_device_and_arrays() {
    let (_g, ctx) = context();
    // A 5 × 4 array of 2-byte elements: rows of 10 bytes.
    let a = array2d(5, 4, 0x02, 1);
    let host: Vec<u8> = (0..64u8).collect();
    // 3 elements × 2 rows from a host block of pitch 16, into (1, 2).
    ok(host_to_array(&host, 16, a, 2, 2, 6, 2));
    let mut want = vec![0u8; 40];
    want[22..28].copy_from_slice(&host[0..6]);
    want[32..38].copy_from_slice(&host[16..22]);
    assert_eq!(read_array(a, 10, 4, 1), want);

    // Refused, and nothing written: past the row, past the last row, an
    // offset that is not a whole element, a width that is not.
    let before = read_array(a, 10, 4, 1);
    assert_eq!(host_to_array(&host, 16, a, 6, 0, 6, 1), 1);
    assert_eq!(host_to_array(&host, 16, a, 0, 3, 2, 2), 1);
    assert_eq!(host_to_array(&host, 16, a, 1, 0, 2, 1), 1);
    assert_eq!(host_to_array(&host, 16, a, 0, 0, 3, 1), 1);
    assert_eq!(host_to_array(&host, 16, a, usize::MAX - 1, 0, 4, 1), 1);
    assert_eq!(read_array(a, 10, 4, 1), before);

    // Array → device (pitched) → array → host.
    let dev = alloc(4 * 32);
    let to_dev = CudaMemcpy2D {
        src_memory_type: 3,
        src_array: a,
        src_x_in_bytes: 2,
        src_y: 2,
        dst_memory_type: 2,
        dst_device: dev,
        dst_pitch: 32,
        dst_y: 1,
        width_in_bytes: 6,
        height: 2,
        ..Default::default()
    };
    // SAFETY: no host memory involved.
    ok(unsafe { cuMemcpy2D_v2(&to_dev) });
    let d = dtoh(dev, 128);
    assert_eq!(d[32..38], host[0..6]);
    assert_eq!(d[64..70], host[16..22]);
    assert!(d[..32].iter().all(|&b| b == 0) && d[38..64].iter().all(|&b| b == 0));
    // Past the allocation: refused.
    let mut past = to_dev;
    past.dst_y = 3;
    // SAFETY: as above.
    assert_eq!(unsafe { cuMemcpy2D_v2(&past) }, 1);
    assert_eq!(dtoh(dev, 128), d);

    // Device → a second array, unified on the device side; then array →
    // array.
    let b = array2d(5, 4, 0x02, 1);
    let from_dev = CudaMemcpy2D {
        src_memory_type: 4,
        src_device: dev + 32,
        src_pitch: 32,
        dst_memory_type: 3,
        dst_array: b,
        width_in_bytes: 6,
        height: 2,
        ..Default::default()
    };
    // SAFETY: no host memory involved.
    ok(unsafe { cuMemcpy2D_v2(&from_dev) });
    let mut want_b = vec![0u8; 40];
    want_b[0..6].copy_from_slice(&host[0..6]);
    want_b[10..16].copy_from_slice(&host[16..22]);
    assert_eq!(read_array(b, 10, 4, 1), want_b);
    let a_to_b = CudaMemcpy2D {
        src_memory_type: 3,
        src_array: a,
        src_y: 2,
        dst_memory_type: 3,
        dst_array: b,
        dst_x_in_bytes: 4,
        dst_y: 2,
        width_in_bytes: 6,
        height: 2,
        ..Default::default()
    };
    // SAFETY: no host memory involved.
    ok(unsafe { cuMemcpy2D_v2(&a_to_b) });
    want_b[24..30].copy_from_slice(&want[20..26]);
    want_b[34..40].copy_from_slice(&want[30..36]);
    assert_eq!(read_array(b, 10, 4, 1), want_b);

    // A destroyed array is refused.
    // SAFETY: handles validated.
    unsafe {
        ok(cuArrayDestroy(b));
        assert_eq!(cuMemcpy2D_v2(&a_to_b), 1);
    }

    // An existing 2D device copy that runs past its allocation now fails
    // before writing a row.
    let small = alloc(64);
    let rows = CudaMemcpy2D {
        src_memory_type: 1,
        src_host: host.as_ptr().cast(),
        src_pitch: 16,
        dst_memory_type: 2,
        dst_device: small,
        dst_pitch: 32,
        width_in_bytes: 16,
        height: 3,
        ..Default::default()
    };
    // SAFETY: the host rows lie in `host`.
    assert_eq!(unsafe { cuMemcpy2D_v2(&rows) }, 1);
    assert_eq!(dtoh(small, 64), vec![0u8; 64]);
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn three_d_copies_with_offsets() {
    let (_g, ctx) = context();
    // 4 × 3 × 3 of 4-byte elements: rows of 16 bytes, slices of 48.
    let a = array3d(4, 3, 3, 0x03, 1, 0);
    let src: Vec<u8> = (0..=255u8).cycle().take(3 * 4 * 24).collect();
    // 2 elements × 2 rows × 2 slices from a host box (pitch 24, 4 rows a
    // slice, offset (4 bytes, 1 row, 1 slice)) into the array at (1, 1, 1).
    let c = CudaMemcpy3D {
        src_memory_type: 1,
        src_host: src.as_ptr().cast(),
        src_x_in_bytes: 4,
        src_y: 1,
        src_z: 1,
        src_pitch: 24,
        src_height: 4,
        dst_memory_type: 3,
        dst_array: a,
        dst_x_in_bytes: 4,
        dst_y: 1,
        dst_z: 1,
        width_in_bytes: 8,
        height: 2,
        depth: 2,
        ..Default::default()
    };
    // SAFETY: the host box lies in `src`.
    ok(unsafe { cuMemcpy3D_v2(&c) });
    let mut want = vec![0u8; 144];
    for z in 0..2 {
        for y in 0..2 {
            let s = (1 + z) * 96 + (1 + y) * 24 + 4;
            let d = (1 + z) * 48 + (1 + y) * 16 + 4;
            want[d..d + 8].copy_from_slice(&src[s..s + 8]);
        }
    }
    assert_eq!(read_array(a, 16, 3, 3), want);

    // Refusals, nothing written: a slice too many, LOD, a source slice
    // height shorter than its rows, a reserved pointer.
    let before = read_array(a, 16, 3, 3);
    let refused = |f: &dyn Fn(&mut CudaMemcpy3D)| {
        let mut bad = c;
        f(&mut bad);
        // SAFETY: the host box lies in `src` where it is read at all.
        unsafe { cuMemcpy3D_v2(&bad) }
    };
    assert_eq!(refused(&|b| b.dst_z = 2), 1);
    assert_eq!(refused(&|b| b.dst_lod = 1), 1);
    assert_eq!(refused(&|b| b.src_height = 2), 1);
    assert_eq!(refused(&|b| b.reserved0 = 8 as *mut c_void), 1);
    assert_eq!(refused(&|b| b.src_memory_type = 9), 1);
    assert_eq!(read_array(a, 16, 3, 3), before);

    // Array → device box → host, 3D both ways, asynchronously on a stream.
    let dev = alloc(3 * 3 * 32);
    let mut stream = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuStreamCreate(&mut stream, 0) });
    let to_dev = CudaMemcpy3D {
        src_memory_type: 3,
        src_array: a,
        dst_memory_type: 2,
        dst_device: dev,
        dst_pitch: 32,
        dst_height: 3,
        width_in_bytes: 16,
        height: 3,
        depth: 3,
        ..Default::default()
    };
    // SAFETY: no host memory involved.
    ok(unsafe { cuMemcpy3DAsync_v2(&to_dev, stream) });
    let mut pinned: *mut c_void = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuMemAllocHost_v2(&mut pinned, 144) });
    let back = CudaMemcpy3D {
        src_memory_type: 2,
        src_device: dev,
        src_pitch: 32,
        src_height: 3,
        dst_memory_type: 1,
        dst_host: pinned,
        dst_pitch: 16,
        dst_height: 3,
        width_in_bytes: 16,
        height: 3,
        depth: 3,
        ..Default::default()
    };
    // SAFETY: `pinned` holds 144 bytes until freed below.
    unsafe {
        ok(cuMemcpy3DAsync_v2(&back, stream));
        ok(cuStreamSynchronize(stream));
        assert_eq!(std::slice::from_raw_parts(pinned.cast::<u8>(), 144), &before[..]);
    }
    // The device box past its allocation: refused.
    let mut past = to_dev;
    past.dst_height = 4;
    // SAFETY: no host memory involved.
    assert_eq!(unsafe { cuMemcpy3D_v2(&past) }, 1);

    // Pinned host → array asynchronously (the copy engine's path), read
    // back after a synchronise.
    // SAFETY: `pinned` holds 144 bytes; the copy is done before it is freed.
    unsafe {
        std::slice::from_raw_parts_mut(pinned.cast::<u8>(), 144).fill(0x5a);
        let up = CudaMemcpy2D {
            src_memory_type: 1,
            src_host: pinned,
            src_pitch: 16,
            dst_memory_type: 3,
            dst_array: a,
            dst_y: 1,
            width_in_bytes: 16,
            height: 2,
            ..Default::default()
        };
        ok(cuMemcpy2DAsync_v2(&up, stream));
        ok(cuStreamSynchronize(stream));
        ok(cuMemFreeHost(pinned));
    }
    let after = read_array(a, 16, 3, 3);
    assert!(after[16..48].iter().all(|&b| b == 0x5a));
    assert_eq!(after[..16], before[..16]);
    assert_eq!(after[48..], before[48..]);
    ok(cuStreamDestroy_v2(stream));
    ok(cuCtxDestroy_v2(ctx));
}

fn resource_array(a: CUarray) -> CudaResourceDesc {
    let mut r = CudaResourceDesc {
        res_type: 0,
        ..Default::default()
    };
    r.res.array = CudaResourceArray { h_array: a };
    r
}

fn resource_pitch(ptr: CUdeviceptr, w: usize, h: usize, pitch: usize) -> CudaResourceDesc {
    let mut r = CudaResourceDesc {
        res_type: 3,
        ..Default::default()
    };
    r.res.pitch_2d = CudaResourcePitch2D {
        dev_ptr: ptr,
        format: FLOAT,
        num_channels: 1,
        width: w,
        height: h,
        pitch_in_bytes: pitch,
    };
    r
}

fn tex_desc(mode: u32, filter: u32, flags: u32) -> CudaTextureDesc {
    CudaTextureDesc {
        address_mode: [mode; 3],
        filter_mode: filter,
        flags,
        border_color: [-9.0, 0.0, 0.0, 0.0],
        ..Default::default()
    }
}

fn tex_create(res: &CudaResourceDesc, desc: &CudaTextureDesc, view: *const CudaResourceViewDesc) -> (CUresult, u64) {
    let mut t = 0;
    // SAFETY: valid pointers (or null on purpose).
    let r = unsafe { cuTexObjectCreate(&mut t, res, desc, view) };
    (r, t)
}

#[test]
fn texture_and_surface_objects() {
    let (_g, ctx) = context();
    let a = array2d(4, 4, FLOAT, 1);
    let desc = tex_desc(1, 1, 2);
    let (r, t) = tex_create(&resource_array(a), &desc, null());
    ok(r);
    assert_ne!(t, 0);
    let mut got = CudaResourceDesc::default();
    let mut got_desc = CudaTextureDesc::default();
    // SAFETY: valid pointers; the union member read is the one written.
    unsafe {
        ok(cuTexObjectGetResourceDesc(&mut got, t));
        assert_eq!((got.res_type, got.res.array.h_array), (0, a));
        ok(cuTexObjectGetTextureDesc(&mut got_desc, t));
    }
    assert_eq!(got_desc, desc);
    // An all-zero resource view is no view.
    let zero_view = CudaResourceViewDesc::default();
    ok(tex_create(&resource_array(a), &desc, &zero_view).0);
    let view = CudaResourceViewDesc {
        format: 0x16,
        width: 4,
        height: 4,
        ..Default::default()
    };
    assert_eq!(tex_create(&resource_array(a), &desc, &view).0, 801);
    let mut mip = resource_array(a);
    mip.res_type = 1;
    assert_eq!(tex_create(&mip, &desc, null()).0, 801);
    let mut odd = resource_array(a);
    odd.res_type = 4;
    assert_eq!(tex_create(&odd, &desc, null()).0, 1);
    odd.res_type = 0;
    odd.flags = 1;
    assert_eq!(tex_create(&odd, &desc, null()).0, 1);
    assert_eq!(tex_create(&resource_array(a), &tex_desc(4, 0, 0), null()).0, 1);
    assert_eq!(tex_create(&resource_array(a), &tex_desc(0, 2, 0), null()).0, 1);
    assert_eq!(tex_create(&resource_array(a), &tex_desc(0, 0, 0x100), null()).0, 1);
    assert_eq!(tex_create(&resource_array(0x1234 as CUarray), &desc, null()).0, 1);
    // SAFETY: null pointers on purpose.
    unsafe {
        let mut t2 = 0;
        assert_eq!(cuTexObjectCreate(&mut t2, &resource_array(a), null(), null()), 1);
        assert_eq!(cuTexObjectCreate(null_mut(), &resource_array(a), &desc, null()), 1);
        assert_eq!(cuTexObjectCreate(&mut t2, null(), &desc, null()), 1);
    }

    // Pitched and linear device memory: aligned, inside an allocation.
    let dev = alloc(4096);
    let (r, tp) = tex_create(&resource_pitch(dev, 8, 8, 64), &desc, null());
    ok(r);
    // SAFETY: valid pointers; the member read is the one `res_type` names.
    unsafe {
        ok(cuTexObjectGetResourceDesc(&mut got, tp));
        assert_eq!(got.res_type, 3);
        let p = got.res.pitch_2d;
        assert_eq!((p.dev_ptr, p.width, p.height, p.pitch_in_bytes), (dev, 8, 8, 64));
    }
    assert_eq!(
        tex_create(&resource_pitch(dev + 4, 8, 8, 64), &desc, null()).0,
        1,
        "unaligned"
    );
    assert_eq!(
        tex_create(&resource_pitch(dev, 8, 8, 48), &desc, null()).0,
        1,
        "pitch alignment"
    );
    assert_eq!(
        tex_create(&resource_pitch(dev, 32, 8, 64), &desc, null()).0,
        1,
        "row past pitch"
    );
    assert_eq!(
        tex_create(&resource_pitch(dev, 8, 65, 64), &desc, null()).0,
        1,
        "past the allocation"
    );
    let mut lin = CudaResourceDesc {
        res_type: 2,
        ..Default::default()
    };
    lin.res.linear = CudaResourceLinear {
        dev_ptr: dev,
        format: FLOAT,
        num_channels: 1,
        size_in_bytes: 4096,
    };
    ok(tex_create(&lin, &desc, null()).0);
    lin.res.linear.size_in_bytes = 4097;
    assert_eq!(tex_create(&lin, &desc, null()).0, 1);

    // Surfaces: arrays made for load/store only.
    let mut s = 0;
    let sa = array3d(4, 4, 0, FLOAT, 1, 2);
    // SAFETY: valid pointers.
    unsafe {
        assert_eq!(cuSurfObjectCreate(&mut s, &resource_array(a)), 1, "no SURFACE_LDST");
        assert_eq!(cuSurfObjectCreate(&mut s, &resource_pitch(dev, 8, 8, 64)), 1);
        ok(cuSurfObjectCreate(&mut s, &resource_array(sa)));
        assert_ne!(s, 0);
        ok(cuSurfObjectGetResourceDesc(&mut got, s));
        assert_eq!((got.res_type, got.res.array.h_array), (0, sa));
        ok(cuSurfObjectDestroy(s));
        assert_eq!(cuSurfObjectDestroy(s), 1);
        assert_eq!(cuSurfObjectGetResourceDesc(&mut got, s), 1);
        ok(cuTexObjectDestroy(t));
        assert_eq!(cuTexObjectDestroy(t), 1);
        assert_eq!(cuTexObjectGetTextureDesc(&mut got_desc, t), 1);
        assert_eq!(cuTexObjectDestroy(0), 1);
        ok(cuCtxDestroy_v2(ctx));
        // The context's objects went with it.
        assert_eq!(cuTexObjectDestroy(tp), 1);
    }
}

/// The C test programs' PTX module, NUL-terminated.
fn test_module() -> CUmodule {
    let header = include_str!("../../c/kernels.ptx.h");
    let mut ptx = String::new();
    for line in header.lines().filter(|l| l.starts_with('"')) {
        let body = line.trim_end_matches(';').trim().trim_matches('"');
        ptx.push_str(&body.replace("\\n", "\n"));
    }
    let ptx = CString::new(ptx).unwrap();
    let mut m = null_mut();
    // SAFETY: NUL-terminated PTX.
    ok(unsafe { cuModuleLoadData(&mut m, ptx.as_ptr().cast()) });
    m
}

fn function(m: CUmodule, name: &str) -> CUfunction {
    let mut f = null_mut();
    let n = CString::new(name).unwrap();
    // SAFETY: valid pointers.
    ok(unsafe { cuModuleGetFunction(&mut f, m, n.as_ptr()) });
    f
}

/// Launches `f` over `threads` threads (blocks of 32) with `args`.
fn launch(f: CUfunction, threads: u32, args: &mut [*mut c_void]) -> CUresult {
    // SAFETY: one pointer per parameter, each to a value of its size.
    unsafe {
        cuLaunchKernel(
            f,
            threads.div_ceil(32),
            1,
            1,
            32,
            1,
            1,
            0,
            null_mut(),
            args.as_mut_ptr(),
            null_mut(),
        )
    }
}

fn tex_read(f: CUfunction, out: CUdeviceptr, tex: u64, w: i32, h: i32) -> Vec<f32> {
    let (mut out_v, mut tex_v, mut w_v, mut h_v) = (out, tex, w, h);
    let mut args: [*mut c_void; 4] = [
        (&mut out_v as *mut u64).cast(),
        (&mut tex_v as *mut u64).cast(),
        (&mut w_v as *mut i32).cast(),
        (&mut h_v as *mut i32).cast(),
    ];
    ok(launch(f, (w * h) as u32, &mut args));
    ok(cuCtxSynchronize());
    floats(&dtoh(out, (w * h) as usize * 4))
}

#[test]
fn kernels_sample_textures_and_scale_surfaces() {
    let (_g, ctx) = context();
    let m = test_module();
    let read = function(m, "gp_tex_read");
    let scale = function(m, "gp_surf_scale");
    // Texel (x, y) = 10 y + x on a 4 × 3 array and on pitched memory.
    let texels: Vec<f32> = (0..12).map(|k| (10 * (k / 4) + k % 4) as f32).collect();
    let a = array3d(4, 3, 0, FLOAT, 1, 2);
    ok(host_to_array(&float_bytes(&texels), 16, a, 0, 0, 16, 3));
    let pitched = alloc(3 * 64);
    for y in 0..3 {
        htod(pitched + y as u64 * 64, &float_bytes(&texels[y * 4..y * 4 + 4]));
    }
    let out = alloc(4096);

    for res in [resource_array(a), resource_pitch(pitched, 4, 3, 64)] {
        // Point, clamp, unnormalised: the texels, then clamped past the edge.
        let (r, t) = tex_create(&res, &tex_desc(1, 0, 0), null());
        ok(r);
        assert_eq!(tex_read(read, out, t, 4, 3), texels);
        assert_eq!(
            tex_read(read, out, t, 6, 1),
            [0.0, 1.0, 2.0, 3.0, 3.0, 3.0],
            "clamped at the right edge"
        );
        // Border: the border colour outside.
        let (r, tb) = tex_create(&res, &tex_desc(3, 0, 0), null());
        ok(r);
        let v = tex_read(read, out, tb, 5, 4);
        assert_eq!(v[4], -9.0);
        assert_eq!(v[15..20], [-9.0; 5]);
        assert_eq!(v[6], 11.0);
        // Normalised wrap: every (x + 0.5, y + 0.5) is (0.5, 0.5), texel
        // (2, 1).
        let (r, tw) = tex_create(&res, &tex_desc(0, 0, 2), null());
        ok(r);
        assert_eq!(tex_read(read, out, tw, 3, 2), [12.0; 6]);
        // Bilinear at the midpoint: normalised wrap on 4 × 3, u = 0.5 is
        // between columns 1 and 2; v = 0.5 is row 1's centre.
        let (r, tl) = tex_create(&res, &tex_desc(0, 1, 2), null());
        ok(r);
        assert_eq!(tex_read(read, out, tl, 2, 1), [11.5, 11.5]);
        for t in [t, tb, tw, tl] {
            ok(cuTexObjectDestroy(t));
        }
    }

    // The surface: scale in place, then read the array back.
    let mut s = 0;
    // SAFETY: valid pointers.
    ok(unsafe { cuSurfObjectCreate(&mut s, &resource_array(a)) });
    let (mut s_v, mut k, mut w, mut h) = (s, 3.0f32, 3i32, 2i32);
    let mut args: [*mut c_void; 4] = [
        (&mut s_v as *mut u64).cast(),
        (&mut k as *mut f32).cast(),
        (&mut w as *mut i32).cast(),
        (&mut h as *mut i32).cast(),
    ];
    ok(launch(scale, 6, &mut args));
    let got = floats(&read_array(a, 16, 3, 1));
    let want: Vec<f32> = texels
        .iter()
        .enumerate()
        .map(|(k, &v)| if k % 4 < 3 && k / 4 < 2 { v * 3.0 } else { v })
        .collect();
    assert_eq!(got, want);

    // Past the surface's edge: the context faults, sticky.
    // SAFETY: args[2] points at `w`, live for the whole test.
    unsafe { args[2].cast::<i32>().write(5) };
    ok(launch(scale, 5, &mut args));
    assert_eq!(cuCtxSynchronize(), 700);
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn unknown_textures_fault_and_int_textures_are_not_supported() {
    let (_g, ctx) = context();
    let m = test_module();
    let read = function(m, "gp_tex_read");
    let out = alloc(256);
    let (mut out_v, mut tex_v, mut w, mut h) = (out, 0x5eed_dead_beefu64, 2i32, 2i32);
    let mut args: [*mut c_void; 4] = [
        (&mut out_v as *mut u64).cast(),
        (&mut tex_v as *mut u64).cast(),
        (&mut w as *mut i32).cast(),
        (&mut h as *mut i32).cast(),
    ];
    ok(launch(read, 4, &mut args));
    assert_eq!(cuCtxSynchronize(), 700);
    ok(cuCtxDestroy_v2(ctx));

    let (_g2, ctx) = {
        drop(_g);
        context()
    };
    let m = test_module();
    let read = function(m, "gp_tex_read");
    let out = alloc(256);
    let ia = array2d(2, 2, 0x03, 1);
    let (r, t) = tex_create(&resource_array(ia), &tex_desc(1, 0, 1), null());
    ok(r);
    out_v = out;
    tex_v = t;
    let mut args: [*mut c_void; 4] = [
        (&mut out_v as *mut u64).cast(),
        (&mut tex_v as *mut u64).cast(),
        (&mut w as *mut i32).cast(),
        (&mut h as *mut i32).cast(),
    ];
    ok(launch(read, 4, &mut args));
    assert_eq!(cuCtxSynchronize(), 801);
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn texture_limits_are_h100_like() {
    let (_g, ctx) = context();
    let attr = |a: i32| {
        let mut v = 0;
        // SAFETY: valid out-pointer.
        ok(unsafe { cuDeviceGetAttribute(&mut v, a, 0) });
        v
    };
    assert_eq!(attr(14), 512, "TEXTURE_ALIGNMENT");
    assert_eq!(attr(21), 131_072, "MAXIMUM_TEXTURE1D_WIDTH");
    assert_eq!((attr(22), attr(23)), (131_072, 65_536), "MAXIMUM_TEXTURE2D");
    assert_eq!(
        (attr(24), attr(25), attr(26)),
        (16_384, 16_384, 16_384),
        "MAXIMUM_TEXTURE3D"
    );
    assert_eq!(attr(30), 512, "SURFACE_ALIGNMENT");
    assert_eq!(attr(51), 32, "TEXTURE_PITCH_ALIGNMENT");
    assert_eq!(
        (attr(27), attr(28), attr(29)),
        (32_768, 32_768, 2_048),
        "TEXTURE2D_LAYERED"
    );
    assert_eq!((attr(56), attr(57)), (131_072, 65_536), "SURFACE2D");
    assert_eq!(
        (attr(69), attr(70), attr(71), attr(72)),
        (1 << 28, 131_072, 65_000, 2_097_120),
        "TEXTURE_LINEAR"
    );
    ok(cuCtxDestroy_v2(ctx));
}
