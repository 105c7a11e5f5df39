//! Loading real compiler output (fat binaries, cubins) through the exported
//! C API and running the known kernels by their C++-mangled names.

use std::ffi::{c_void, CString};
use std::ptr::null_mut;

use gpupool_softcuda::exports::*;

const PLAIN: &[u8] = include_bytes!("../../../client-shim/fatbin/tests/fixtures/kernels_plain.fatbin");
const ZSTD: &[u8] = include_bytes!("../../../client-shim/fatbin/tests/fixtures/kernels_zstd.fatbin");
const LZ4: &[u8] = include_bytes!("../../../client-shim/fatbin/tests/fixtures/kernels_lz4.fatbin");
const CUBIN: &[u8] = include_bytes!("../../../client-shim/fatbin/tests/fixtures/kernels_sm90.cubin");
const VECTOR_ADD: &str = "_Z13gp_vector_addPKfS0_Pfi";

fn ok(r: CUresult) {
    assert_eq!(r, 0, "expected CUDA_SUCCESS, got {r}");
}

fn context() -> CUcontext {
    ok(cuInit(0));
    let mut ctx = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuCtxCreate_v2(&mut ctx, 0, 0) });
    ctx
}

/// Loads `image` (8-aligned, as images are in a program's memory).
fn load(image: &[u8]) -> Result<CUmodule, CUresult> {
    let mut aligned = vec![0u64; image.len().div_ceil(8)];
    // SAFETY: `aligned` has room for `image.len()` bytes.
    unsafe { std::ptr::copy_nonoverlapping(image.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), image.len()) };
    let mut m = null_mut();
    // SAFETY: valid out-pointer and a whole image.
    match unsafe { cuModuleLoadData(&mut m, aligned.as_ptr().cast()) } {
        0 => Ok(m),
        e => Err(e),
    }
}

fn function(m: CUmodule, name: &str) -> Result<CUfunction, CUresult> {
    let n = CString::new(name).unwrap();
    let mut f = null_mut();
    // SAFETY: valid out-pointer and NUL-terminated name.
    match unsafe { cuModuleGetFunction(&mut f, m, n.as_ptr()) } {
        0 => Ok(f),
        e => Err(e),
    }
}

fn alloc_with(data: &[f32]) -> CUdeviceptr {
    let mut p = 0;
    // SAFETY: valid out-pointer; `data` is valid for its byte length.
    unsafe {
        ok(cuMemAlloc_v2(&mut p, std::mem::size_of_val(data)));
        ok(cuMemcpyHtoD_v2(p, data.as_ptr().cast(), std::mem::size_of_val(data)));
    }
    p
}

fn download(src: CUdeviceptr, n: usize) -> Vec<f32> {
    let mut v = vec![0f32; n];
    // SAFETY: `v` is valid for its byte length.
    ok(unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, n * 4) });
    v
}

fn arg<T>(v: &mut T) -> *mut c_void {
    (v as *mut T).cast()
}

fn launch(f: CUfunction, threads: u32, args: &mut [*mut c_void]) -> CUresult {
    // SAFETY: `args` holds one pointer per kernel parameter.
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

/// Runs `_Z13gp_vector_addPKfS0_Pfi` from module `m` and checks the sums.
fn vector_add(m: CUmodule) {
    let f = function(m, VECTOR_ADD).unwrap();
    let n = 100;
    let a: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
    let (mut pa, mut pb, mut pc) = (alloc_with(&a), alloc_with(&b), alloc_with(&vec![0.0; n]));
    let mut count = n as i32;
    ok(launch(
        f,
        n as u32,
        &mut [arg(&mut pa), arg(&mut pb), arg(&mut pc), arg(&mut count)],
    ));
    let want: Vec<f32> = (0..n).map(|i| 1.5 * i as f32).collect();
    assert_eq!(download(pc, n), want);
}

#[test]
fn fat_binaries_and_cubins_run_mangled_kernels() {
    let ctx = context();
    for image in [PLAIN, ZSTD, LZ4, CUBIN] {
        let m = load(image).unwrap();
        vector_add(m);
        // An `extern "C"` kernel beside it.
        let scale = function(m, "gp_scale").unwrap();
        let mut x = alloc_with(&[1.0, 2.0, 3.0]);
        let (mut s, mut n) = (2.0f32, 3i32);
        ok(launch(scale, 3, &mut [arg(&mut x), arg(&mut s), arg(&mut n)]));
        assert_eq!(download(x, 3), [2.0, 4.0, 6.0]);
        // Loaded, but not a kernel this driver can run.
        let mixed = function(m, "_Z8gp_mixedc4PairsPdf").unwrap();
        let (mut c, mut pair, mut sh, mut out, mut f) = (0u8, [0u64; 2], 0u16, 0u64, 0f32);
        assert_eq!(
            launch(
                mixed,
                1,
                &mut [arg(&mut c), arg(&mut pair), arg(&mut sh), arg(&mut out), arg(&mut f)]
            ),
            801
        );
        assert_eq!(
            function(m, "gp_vector_add").unwrap_err(),
            500,
            "looked up by its symbol name"
        );
        ok(cuModuleUnload(m));
    }
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn module_globals_from_fat_binaries() {
    let ctx = context();
    for (image, counter) in [(ZSTD, 7u32), (CUBIN, 0)] {
        let m = load(image).unwrap();
        let (mut dptr, mut bytes) = (0u64, 0usize);
        let name = CString::new("gp_counter").unwrap();
        // SAFETY: valid out-pointers and name.
        ok(unsafe { cuModuleGetGlobal_v2(&mut dptr, &mut bytes, m, name.as_ptr()) });
        assert_eq!(bytes, 4);
        let mut v = 0u32;
        // SAFETY: `v` is valid for 4 bytes.
        ok(unsafe { cuMemcpyDtoH_v2(arg(&mut v), dptr, 4) });
        assert_eq!(v, counter, "PTX carries the initial value; a cubin's is not read");
        let name = CString::new("gp_bias").unwrap();
        // SAFETY: as above.
        ok(unsafe { cuModuleGetGlobal_v2(&mut dptr, &mut bytes, m, name.as_ptr()) });
        assert_eq!(bytes, 16);
        ok(cuModuleUnload(m));
    }
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn libraries_from_fat_binaries() {
    let ctx = context();
    let mut aligned = vec![0u64; ZSTD.len().div_ceil(8)];
    // SAFETY: `aligned` has room for the image.
    unsafe { std::ptr::copy_nonoverlapping(ZSTD.as_ptr(), aligned.as_mut_ptr().cast::<u8>(), ZSTD.len()) };
    let mut lib = null_mut();
    // SAFETY: valid out-pointer and a whole fat binary; no options.
    ok(unsafe {
        cuLibraryLoadData(
            &mut lib,
            aligned.as_ptr().cast(),
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            null_mut(),
            0,
        )
    });
    let mut kernel = null_mut();
    let name = CString::new(VECTOR_ADD).unwrap();
    // SAFETY: valid out-pointer and name.
    ok(unsafe { cuLibraryGetKernel(&mut kernel, lib, name.as_ptr()) });
    let mut f = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuKernelGetFunction(&mut f, kernel) });
    let (mut a, mut b, mut c) = (alloc_with(&[1.0]), alloc_with(&[2.0]), alloc_with(&[0.0]));
    let mut n = 1i32;
    ok(launch(f, 1, &mut [arg(&mut a), arg(&mut b), arg(&mut c), arg(&mut n)]));
    assert_eq!(download(c, 1), [3.0]);
    ok(cuLibraryUnload(lib));
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn known_name_with_the_wrong_layout_is_refused_at_launch() {
    let ctx = context();
    let ptx = ".version 9.0\n.target sm_90\n.address_size 64\n\
               .visible .entry _Z8gp_scalePfi(.param .u64 x, .param .u32 n) { ret; }\n\0";
    let m = load(ptx.as_bytes()).unwrap();
    let f = function(m, "_Z8gp_scalePfi").unwrap();
    let (mut x, mut n) = (alloc_with(&[1.0]), 1i32);
    assert_eq!(launch(f, 1, &mut [arg(&mut x), arg(&mut n)]), 1);
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn bad_binary_images() {
    let ctx = context();
    // Truncated: the header claims more than there is.
    let mut cut = PLAIN[..64].to_vec();
    cut.resize(PLAIN.len(), 0);
    assert_eq!(load(&cut).unwrap_err(), 200);
    // A version-2 wrapper is the shim's to unwrap, never the driver's.
    let mut wrapper = 0x4662_43B1u32.to_le_bytes().to_vec();
    wrapper.extend_from_slice(&[2, 0, 0, 0]);
    wrapper.extend_from_slice(&[0; 16]);
    assert_eq!(load(&wrapper).unwrap_err(), 200);
    // A fat binary with an unknown version.
    let mut v = PLAIN.to_vec();
    v[4] = 9;
    assert_eq!(load(&v).unwrap_err(), 200);
    ok(cuCtxDestroy_v2(ctx));
}
