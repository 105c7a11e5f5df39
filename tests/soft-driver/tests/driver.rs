//! End-to-end tests of the simulated driver through its exported C API
//! (called via the crate's rlib).
//!
//! Tests run in parallel threads of one process and share the simulated
//! driver, so each test works in its own context; tests that touch the
//! primary context of device 0 hold `PRIMARY`.

use std::ffi::{c_void, CStr, CString};
use std::ptr::null_mut;
use std::sync::Mutex;

use gpupool_softcuda::exports::*;

static PRIMARY: Mutex<()> = Mutex::new(());

/// The tests share one driver in this process, and its device addresses are
/// host mappings the kernel may hand out again at once: a test checking that
/// freed memory is refused must not see another test's new allocation there.
/// So they run one at a time.
static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

const PTX: &str = r#"
.version 8.0
.target sm_90
.address_size 64

.global .align 4 .b8 scratch[64];
.global .u32 counter = 42;

.visible .entry gp_null()
{
    ret;
}

.visible .entry gp_vector_add(
    .param .u64 gp_vector_add_param_0,
    .param .u64 gp_vector_add_param_1,
    .param .u64 gp_vector_add_param_2,
    .param .u32 gp_vector_add_param_3
)
{
    ret;
}

.visible .entry gp_scale(.param .u64 x, .param .f32 s, .param .u32 n) { ret; }
.visible .entry gp_fill_u32(.param .u64 p, .param .u32 v, .param .u32 n) { ret; }
.visible .entry gp_saxpy(.param .u32 n, .param .f32 a, .param .u64 x, .param .u64 y) { ret; }
.visible .entry gp_fault(.param .u64 p) { ret; }
.visible .entry mystery(.param .u64 a, .param .f32 b, .param .u32 c, .param .u64 d) { ret; }
.visible .entry bounded(.param .u64 a) .maxntid 128, 1, 1 { ret; }
"#;

fn ok(r: CUresult) {
    assert_eq!(r, 0, "expected CUDA_SUCCESS, got {}", name(r));
}

fn name(r: CUresult) -> String {
    let mut p = std::ptr::null();
    // SAFETY: `p` is a valid out-pointer.
    unsafe { cuGetErrorName(r, &mut p) };
    if p.is_null() {
        format!("unknown code {r}")
    } else {
        // SAFETY: the driver returns static NUL-terminated names.
        unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
    }
}

/// Initialises the driver and makes a fresh context current on this thread.
fn context() -> CUcontext {
    ok(cuInit(0));
    let mut ctx = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuCtxCreate_v2(&mut ctx, 0, 0) });
    ctx
}

fn load(ptx: &str) -> Result<CUmodule, CUresult> {
    let src = CString::new(ptx).unwrap();
    let mut m = null_mut();
    // SAFETY: valid out-pointer and NUL-terminated image.
    match unsafe { cuModuleLoadData(&mut m, src.as_ptr().cast()) } {
        0 => Ok(m),
        e => Err(e),
    }
}

fn function(m: CUmodule, fname: &str) -> Result<CUfunction, CUresult> {
    let n = CString::new(fname).unwrap();
    let mut f = null_mut();
    // SAFETY: valid out-pointer and NUL-terminated name.
    match unsafe { cuModuleGetFunction(&mut f, m, n.as_ptr()) } {
        0 => Ok(f),
        e => Err(e),
    }
}

fn alloc(bytes: usize) -> CUdeviceptr {
    let mut p = 0;
    // SAFETY: valid out-pointer.
    ok(unsafe { cuMemAlloc_v2(&mut p, bytes) });
    p
}

fn upload<T: Copy>(dst: CUdeviceptr, data: &[T]) {
    // SAFETY: `data` is valid for its byte length.
    ok(unsafe { cuMemcpyHtoD_v2(dst, data.as_ptr().cast(), std::mem::size_of_val(data)) });
}

fn download<T: Copy + Default>(src: CUdeviceptr, n: usize) -> Vec<T> {
    let mut v = vec![T::default(); n];
    // SAFETY: `v` is valid for its byte length.
    ok(unsafe { cuMemcpyDtoH_v2(v.as_mut_ptr().cast(), src, std::mem::size_of_val(&v[..])) });
    v
}

/// Launches `f` on a 1-D grid with `kernelParams`.
fn launch(f: CUfunction, grid: u32, block: u32, args: &mut [*mut c_void]) -> CUresult {
    // SAFETY: `args` holds one pointer per kernel parameter.
    unsafe { cuLaunchKernel(f, grid, 1, 1, block, 1, 1, 0, null_mut(), args.as_mut_ptr(), null_mut()) }
}

fn arg<T>(v: &mut T) -> *mut c_void {
    (v as *mut T).cast()
}

#[test]
fn device_queries() {
    let _serial = serial();
    ok(cuInit(0));
    assert_eq!(cuInit(1), 1, "cuInit flags must be 0");
    let mut v = 0;
    // SAFETY: valid out-pointers throughout.
    unsafe {
        ok(cuDriverGetVersion(&mut v));
        assert_eq!(v, 13000);
        ok(cuDeviceGetCount(&mut v));
        assert!(v >= 1);
        let mut dev = -1;
        ok(cuDeviceGet(&mut dev, 0));
        assert_eq!(dev, 0);
        assert_eq!(cuDeviceGet(&mut dev, 99), 101);

        let mut buf = [0i8; 128];
        ok(cuDeviceGetName(buf.as_mut_ptr(), buf.len() as i32, 0));
        let n = CStr::from_ptr(buf.as_ptr()).to_str().unwrap();
        assert!(n.contains("simulated"), "{n}");
        let mut tiny = [0x7fi8; 4];
        ok(cuDeviceGetName(tiny.as_mut_ptr(), 4, 0));
        assert_eq!(tiny[3], 0, "truncated and NUL-terminated");
        assert_eq!(cuDeviceGetName(buf.as_mut_ptr(), 0, 0), 1);

        let mut uuid = [0u8; 16];
        ok(cuDeviceGetUuid(&mut uuid, 0));
        let mut uuid2 = [1u8; 16];
        ok(cuDeviceGetUuid_v2(&mut uuid2, 0));
        assert_eq!(uuid, uuid2);

        let mut total = 0usize;
        ok(cuDeviceTotalMem_v2(&mut total, 0));
        assert!(total > 0);

        for (attr, want) in [
            (1, 1024),
            (2, 1024),
            (4, 64),
            (5, i32::MAX),
            (6, 65535),
            (8, 49152),
            (10, 32),
            (12, 65536),
            (16, 132),
            (39, 2048),
            (41, 1),
            (75, 9),
            (76, 0),
            (81, 233472),
            (97, 232448),
            (149, 0),
        ] {
            ok(cuDeviceGetAttribute(&mut v, attr, 0));
            assert_eq!(v, want, "attribute {attr}");
        }
        assert_eq!(cuDeviceGetAttribute(&mut v, 0, 0), 1);
        assert_eq!(cuDeviceGetAttribute(&mut v, 151, 0), 1);
        assert_eq!(cuDeviceGetAttribute(&mut v, 1, 7), 101);
        assert_eq!(cuDeviceGetAttribute(null_mut(), 1, 0), 1);
    }
}

#[test]
fn error_names_and_strings() {
    let _serial = serial();
    let mut p = std::ptr::null();
    // SAFETY: valid out-pointers; returned strings are static.
    unsafe {
        ok(cuGetErrorName(700, &mut p));
        assert_eq!(CStr::from_ptr(p).to_str().unwrap(), "CUDA_ERROR_ILLEGAL_ADDRESS");
        ok(cuGetErrorString(1, &mut p));
        assert_eq!(CStr::from_ptr(p).to_str().unwrap(), "invalid argument");
        ok(cuGetErrorName(0, &mut p));
        assert_eq!(CStr::from_ptr(p).to_str().unwrap(), "CUDA_SUCCESS");
        assert_eq!(cuGetErrorName(4242, &mut p), 1);
        assert!(p.is_null());
    }
}

#[test]
fn calls_without_a_context_fail() {
    let _serial = serial();
    ok(cuInit(0));
    std::thread::spawn(|| {
        let mut p = 0;
        // SAFETY: valid out-pointers.
        unsafe {
            assert_eq!(cuMemAlloc_v2(&mut p, 16), 201);
            assert_eq!(cuCtxSynchronize(), 201);
            let mut ctx = 1 as CUcontext;
            ok(cuCtxGetCurrent(&mut ctx));
            assert!(ctx.is_null());
            assert_eq!(cuCtxSetCurrent(0xdead_0000 as CUcontext), 201);
        }
    })
    .join()
    .unwrap();
}

#[test]
fn memory_alloc_copy_free() {
    let _serial = serial();
    let ctx = context();
    let a = alloc(1000);
    assert_eq!(a % 256, 0, "device pointers are 256-byte aligned");
    assert_eq!(download::<u8>(a, 1000), vec![0u8; 1000], "fresh memory is zeroed");

    let data: Vec<u8> = (0..1000).map(|i| (i % 251) as u8).collect();
    upload(a, &data);
    assert_eq!(download::<u8>(a, 1000), data);

    let b = alloc(1000);
    ok(cuMemcpyDtoD_v2(b, a + 10, 500));
    assert_eq!(download::<u8>(b, 500), data[10..510].to_vec());
    // Overlapping device-to-device copy behaves like memmove.
    ok(cuMemcpyDtoD_v2(a + 1, a, 100));
    let moved = download::<u8>(a, 101);
    assert_eq!(moved[1..], data[..100]);

    ok(cuMemsetD8_v2(b, 0xab, 3));
    ok(cuMemsetD16_v2(b + 4, 0x1234, 2));
    ok(cuMemsetD32_v2(b + 8, 0xdead_beef, 2));
    let got = download::<u8>(b, 16);
    assert_eq!(&got[..3], &[0xab; 3]);
    assert_eq!(&got[4..8], &[0x34, 0x12, 0x34, 0x12]);
    assert_eq!(&got[8..16], &[0xef, 0xbe, 0xad, 0xde, 0xef, 0xbe, 0xad, 0xde]);
    assert_eq!(cuMemsetD32_v2(b + 2, 0, 1), 1, "misaligned memset");
    assert_eq!(cuMemsetD16_v2(b + 1, 0, 1), 1, "misaligned memset");

    // Out-of-bounds and unknown ranges are INVALID_VALUE.
    let mut host = [0u8; 16];
    // SAFETY: `host` is valid for 16 bytes; sizes passed below never exceed that.
    unsafe {
        assert_eq!(cuMemcpyHtoD_v2(a + 990, host.as_ptr().cast(), 16), 1);
        assert_eq!(cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), a + 1000, 1), 1);
        assert_eq!(cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), 0x10, 1), 1);
        assert_eq!(cuMemcpyHtoD_v2(a, std::ptr::null(), 4), 1);
        ok(cuMemcpyDtoH_v2(host.as_mut_ptr().cast(), a + 984, 16));
    }
    assert_eq!(cuMemcpyDtoD_v2(b, a + 600, 500), 1);
    assert_eq!(cuMemsetD8_v2(a + 999, 0, 2), 1);
    assert_eq!(cuMemsetD32_v2(u64::MAX - 3, 0, 1), 1);

    // Free must be given an allocation base, once.
    assert_eq!(cuMemFree_v2(a + 8), 1);
    ok(cuMemFree_v2(a));
    assert_eq!(cuMemFree_v2(a), 1);
    assert_eq!(download_err(a), 1, "freed memory is no longer addressable");

    // Zero-byte and oversized allocations.
    let mut p = 0;
    let (mut free, mut total) = (0usize, 0usize);
    // SAFETY: valid out-pointers.
    unsafe {
        assert_eq!(cuMemAlloc_v2(&mut p, 0), 1);
        assert_eq!(cuMemAlloc_v2(null_mut(), 16), 1);
        ok(cuMemGetInfo_v2(&mut free, &mut total));
        assert!(free <= total);
        assert_eq!(cuMemAlloc_v2(&mut p, total + 1), 2);
    }

    // Pinned host memory.
    let mut hp = null_mut();
    // SAFETY: valid out-pointer; the pinned buffer is 64 bytes.
    unsafe {
        ok(cuMemAllocHost_v2(&mut hp, 64));
        hp.cast::<u8>().write_bytes(7, 64);
        ok(cuMemcpyHtoD_v2(b, hp, 64));
        assert_eq!(cuMemFreeHost(hp.cast::<u8>().add(1).cast()), 1);
        ok(cuMemFreeHost(hp));
    }
    assert_eq!(download::<u8>(b, 64), vec![7u8; 64]);
    ok(cuCtxDestroy_v2(ctx));
}

fn download_err(src: CUdeviceptr) -> CUresult {
    let mut b = [0u8; 4];
    // SAFETY: `b` is valid for 4 bytes.
    unsafe { cuMemcpyDtoH_v2(b.as_mut_ptr().cast(), src, 4) }
}

#[test]
fn memory_accounting() {
    let _serial = serial();
    let ctx = context();
    let (mut free0, mut total) = (0usize, 0usize);
    // SAFETY: valid out-pointers.
    unsafe { ok(cuMemGetInfo_v2(&mut free0, &mut total)) };
    // A big allocation is accounted but not committed until touched.
    let big = alloc(total / 2);
    let (mut free1, mut total1) = (0usize, 0usize);
    // SAFETY: valid out-pointers.
    unsafe { ok(cuMemGetInfo_v2(&mut free1, &mut total1)) };
    assert_eq!(total, total1);
    let mut p = 0;
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { cuMemAlloc_v2(&mut p, total / 2 + 4096) }, 2);
    ok(cuMemFree_v2(big));
    // Destroying a context frees what it allocated.
    let _leak = alloc(1 << 20);
    ok(cuCtxDestroy_v2(ctx));
    assert_eq!(cuCtxDestroy_v2(ctx), 201);
    assert_eq!(cuMemFree_v2(_leak), 201, "no current context any more");
}

#[test]
fn vector_add_with_kernel_params_and_extra() {
    let _serial = serial();
    let ctx = context();
    let m = load(PTX).unwrap();
    let f = function(m, "gp_vector_add").unwrap();
    let n = 1000usize;
    let a: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
    let b: Vec<f32> = (0..n).map(|i| 1000.0 - i as f32).collect();
    let (da, db, dc) = (alloc(n * 4), alloc(n * 4), alloc(n * 4));
    upload(da, &a);
    upload(db, &b);

    let (mut pa, mut pb, mut pc, mut pn) = (da, db, dc, n as i32);
    let mut args = [arg(&mut pa), arg(&mut pb), arg(&mut pc), arg(&mut pn)];
    ok(launch(f, n.div_ceil(256) as u32, 256, &mut args));
    ok(cuCtxSynchronize());
    let c: Vec<f32> = download(dc, n);
    for i in 0..n {
        assert_eq!(c[i], a[i] + b[i], "element {i}");
    }

    // Same launch through `extra`, with a packed buffer: c = c + a.
    let mut buf = [0u8; 28];
    buf[0..8].copy_from_slice(&dc.to_le_bytes());
    buf[8..16].copy_from_slice(&da.to_le_bytes());
    buf[16..24].copy_from_slice(&dc.to_le_bytes());
    buf[24..28].copy_from_slice(&(n as i32).to_le_bytes());
    let mut size = buf.len();
    let mut extra = [
        CU_LAUNCH_PARAM_BUFFER_POINTER,
        buf.as_mut_ptr().cast(),
        CU_LAUNCH_PARAM_BUFFER_SIZE,
        arg(&mut size),
        CU_LAUNCH_PARAM_END,
    ];
    // SAFETY: `extra` is a terminated key/value list with valid pointers.
    ok(unsafe { cuLaunchKernel(f, 4, 1, 1, 256, 1, 1, 0, null_mut(), null_mut(), extra.as_mut_ptr()) });
    let c2: Vec<f32> = download(dc, n);
    for i in 0..n {
        assert_eq!(c2[i], c[i] + a[i], "element {i}");
    }

    // A buffer shorter than the parameters is taken, as the driver takes it
    // (NCCL passes only the part of its argument structure it filled); the
    // rest reads zero here, so without `n` no element changes.
    let mut small = 24usize;
    let mut short_extra = [
        CU_LAUNCH_PARAM_BUFFER_POINTER,
        buf.as_mut_ptr().cast(),
        CU_LAUNCH_PARAM_BUFFER_SIZE,
        arg(&mut small),
        CU_LAUNCH_PARAM_END,
    ];
    // SAFETY: as above.
    ok(unsafe {
        cuLaunchKernel(
            f,
            4,
            1,
            1,
            256,
            1,
            1,
            0,
            null_mut(),
            null_mut(),
            short_extra.as_mut_ptr(),
        )
    });
    ok(cuCtxSynchronize());
    assert_eq!(
        download::<f32>(dc, n),
        c2,
        "a launch whose count reads zero changed elements"
    );

    // Both argument forms at once, or neither, are rejected.
    // SAFETY: as above.
    unsafe {
        assert_eq!(
            cuLaunchKernel(
                f,
                4,
                1,
                1,
                256,
                1,
                1,
                0,
                null_mut(),
                args.as_mut_ptr(),
                extra.as_mut_ptr()
            ),
            1
        );
        assert_eq!(
            cuLaunchKernel(f, 4, 1, 1, 256, 1, 1, 0, null_mut(), null_mut(), null_mut()),
            1
        );
    }

    // Only gridDim.x * blockDim.x threads run: n is honoured up to that.
    ok(cuMemsetD32_v2(dc, 0, n));
    ok(launch(f, 1, 100, &mut args));
    let c3: Vec<f32> = download(dc, n);
    assert_eq!(c3[99], a[99] + b[99]);
    assert_eq!(c3[100], 0.0);

    // cuLaunchKernelEx with a stream of this context.
    let mut stream = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuStreamCreate(&mut stream, 0) });
    let mut attrs = [CUlaunchAttribute {
        id: 0,
        pad: [0; 4],
        value: [0; 64],
    }];
    let cfg = CUlaunchConfig {
        gridDimX: 4,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: 256,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: 0,
        hStream: stream,
        attrs: attrs.as_mut_ptr(),
        numAttrs: 1,
    };
    ok(cuMemsetD32_v2(dc, 0, n));
    // SAFETY: `cfg` and `args` are valid.
    ok(unsafe { cuLaunchKernelEx(&cfg, f, args.as_mut_ptr(), null_mut()) });
    ok(cuStreamSynchronize(stream));
    assert_eq!(download::<f32>(dc, n), c);
    assert_eq!(std::mem::size_of::<CUlaunchAttribute>(), 72);
    ok(cuModuleUnload(m));
    assert_eq!(launch(f, 1, 1, &mut args), 400, "function of an unloaded module");
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn other_known_kernels() {
    let _serial = serial();
    let ctx = context();
    let m = load(PTX).unwrap();
    let n = 300usize;
    let x = alloc(n * 4);
    let y = alloc(n * 4);
    let xs: Vec<f32> = (0..n).map(|i| i as f32).collect();
    upload(x, &xs);

    let (mut px, mut s, mut pn) = (x, 2.5f32, n as i32);
    ok(launch(
        function(m, "gp_scale").unwrap(),
        2,
        256,
        &mut [arg(&mut px), arg(&mut s), arg(&mut pn)],
    ));
    let scaled: Vec<f32> = download(x, n);
    assert!(scaled.iter().zip(&xs).all(|(g, v)| *g == v * 2.5));

    let (mut py, mut v) = (y, 7u32);
    ok(launch(
        function(m, "gp_fill_u32").unwrap(),
        2,
        256,
        &mut [arg(&mut py), arg(&mut v), arg(&mut pn)],
    ));
    assert_eq!(download::<u32>(y, n), vec![7u32; n]);

    let ys: Vec<f32> = (0..n).map(|i| 1.0 - i as f32).collect();
    upload(y, &ys);
    let mut a = 3.0f32;
    ok(launch(
        function(m, "gp_saxpy").unwrap(),
        2,
        256,
        &mut [arg(&mut pn), arg(&mut a), arg(&mut px), arg(&mut py)],
    ));
    let got: Vec<f32> = download(y, n);
    for i in 0..n {
        assert_eq!(got[i], a.mul_add(scaled[i], ys[i]), "element {i}");
    }

    // Negative n does nothing.
    let mut neg = -5i32;
    ok(launch(
        function(m, "gp_fill_u32").unwrap(),
        1,
        32,
        &mut [arg(&mut py), arg(&mut v), arg(&mut neg)],
    ));
    assert_eq!(download::<f32>(y, n), got);

    ok(launch(function(m, "gp_null").unwrap(), 1000, 1024, &mut []));
    ok(cuCtxSynchronize());
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn unknown_kernels_and_bad_launches() {
    let _serial = serial();
    let ctx = context();
    let m = load(PTX).unwrap();
    assert_eq!(function(m, "nope").unwrap_err(), 500);
    let mystery = function(m, "mystery").unwrap();
    let (mut a, mut b, mut c, mut d) = (0u64, 0f32, 0u32, 0u64);
    let mut args = [arg(&mut a), arg(&mut b), arg(&mut c), arg(&mut d)];
    assert_eq!(launch(mystery, 1, 1, &mut args), 801);

    let null = function(m, "gp_null").unwrap();
    // SAFETY: gp_null takes no parameters; all pointers are null or valid.
    unsafe {
        assert_eq!(
            cuLaunchKernel(null, 1, 1, 1, 1025, 1, 1, 0, null_mut(), null_mut(), null_mut()),
            1
        );
        assert_eq!(
            cuLaunchKernel(null, 1, 1, 1, 32, 32, 2, 0, null_mut(), null_mut(), null_mut()),
            1
        );
        assert_eq!(
            cuLaunchKernel(null, 1, 1, 1, 1, 1, 65, 0, null_mut(), null_mut(), null_mut()),
            1
        );
        assert_eq!(
            cuLaunchKernel(null, 0, 1, 1, 1, 1, 1, 0, null_mut(), null_mut(), null_mut()),
            1
        );
        assert_eq!(
            cuLaunchKernel(null, 1, 65536, 1, 1, 1, 1, 0, null_mut(), null_mut(), null_mut()),
            1
        );
        assert_eq!(
            cuLaunchKernel(null, 1, 1, 1, 1, 1, 1, 49153, null_mut(), null_mut(), null_mut()),
            1
        );
        ok(cuLaunchKernel(
            null,
            1,
            1,
            1,
            1,
            1,
            1,
            49152,
            null_mut(),
            null_mut(),
            null_mut(),
        ));
        ok(cuLaunchKernel(
            null,
            1,
            1,
            1,
            1,
            1,
            1,
            0,
            1 as CUstream,
            null_mut(),
            null_mut(),
        ));
        ok(cuLaunchKernel(
            null,
            1,
            1,
            1,
            1,
            1,
            1,
            0,
            2 as CUstream,
            null_mut(),
            null_mut(),
        ));
        assert_eq!(
            cuLaunchKernel(null, 1, 1, 1, 1, 1, 1, 0, 0x77 as CUstream, null_mut(), null_mut()),
            400
        );
        assert_eq!(
            cuLaunchKernel(
                0x1234 as CUfunction,
                1,
                1,
                1,
                1,
                1,
                1,
                0,
                null_mut(),
                null_mut(),
                null_mut()
            ),
            400
        );
        // Opting in to more dynamic shared memory.
        ok(cuFuncSetAttribute(null, 8, 100_000));
        ok(cuLaunchKernel(
            null,
            1,
            1,
            1,
            1,
            1,
            1,
            100_000,
            null_mut(),
            null_mut(),
            null_mut(),
        ));
    }
    // `.maxntid 128` bounds the block size of that kernel.
    let bounded = function(m, "bounded").unwrap();
    let mut v = 0;
    // SAFETY: valid out-pointer.
    unsafe { ok(cuFuncGetAttribute(&mut v, 0, bounded)) };
    assert_eq!(v, 128);
    let mut p = 0u64;
    assert_eq!(launch(bounded, 1, 256, &mut [arg(&mut p)]), 701);
    assert_eq!(launch(bounded, 1, 128, &mut [arg(&mut p)]), 801);
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn param_info_and_function_attributes() {
    let _serial = serial();
    let ctx = context();
    let m = load(PTX).unwrap();
    let f = function(m, "mystery").unwrap();
    let (mut off, mut size) = (0usize, 0usize);
    let mut layout = Vec::new();
    // SAFETY: valid out-pointers.
    unsafe {
        for i in 0..4 {
            ok(cuFuncGetParamInfo(f, i, &mut off, &mut size));
            layout.push((off, size));
        }
        assert_eq!(cuFuncGetParamInfo(f, 4, &mut off, &mut size), 1);
        ok(cuFuncGetParamInfo(f, 0, &mut off, null_mut()));
        assert_eq!(cuFuncGetParamInfo(0x99 as CUfunction, 0, &mut off, &mut size), 400);
    }
    assert_eq!(layout, vec![(0, 8), (8, 4), (12, 4), (16, 8)]);

    let mut v = 0;
    // SAFETY: valid out-pointers.
    unsafe {
        for (attr, want) in [(0, 1024), (1, 0), (2, 0), (3, 0), (4, 16), (5, 90), (6, 90), (8, 49152)] {
            ok(cuFuncGetAttribute(&mut v, attr, f));
            assert_eq!(v, want, "attribute {attr}");
        }
        assert_eq!(cuFuncGetAttribute(&mut v, 16, f), 1);
        assert_eq!(cuFuncGetAttribute(&mut v, -1, f), 1);
        ok(cuFuncSetAttribute(f, 8, 65536));
        ok(cuFuncGetAttribute(&mut v, 8, f));
        assert_eq!(v, 65536);
        assert_eq!(cuFuncSetAttribute(f, 8, 300_000), 1);
        assert_eq!(cuFuncSetAttribute(f, 0, 1), 1, "read-only attribute");
    }
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn fault_makes_the_context_sticky() {
    let _serial = serial();
    let ctx = context();
    let m = load(PTX).unwrap();
    let buf = alloc(64);
    let mut p = buf;
    let fault = function(m, "gp_fault").unwrap();
    ok(launch(fault, 1, 1, &mut [arg(&mut p)]));
    assert_eq!(cuCtxSynchronize(), 700);
    assert_eq!(cuCtxSynchronize(), 700, "the error is sticky");
    let mut q = 0;
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { cuMemAlloc_v2(&mut q, 16) }, 700);
    assert_eq!(download_err(buf), 700);
    assert_eq!(cuMemsetD8_v2(buf, 0, 1), 700);
    assert_eq!(launch(function(m, "gp_null").unwrap(), 1, 1, &mut []), 700);
    assert_eq!(cuStreamSynchronize(null_mut()), 700);
    ok(cuCtxDestroy_v2(ctx));

    // A fresh context is unaffected.
    let ctx2 = context();
    ok(cuCtxSynchronize());
    ok(cuCtxDestroy_v2(ctx2));
}

#[test]
fn out_of_bounds_kernel_access_faults() {
    let _serial = serial();
    let ctx = context();
    let m = load(PTX).unwrap();
    let f = function(m, "gp_fill_u32").unwrap();
    let d = alloc(100 * 4);
    // In bounds: fine.
    let (mut p, mut v, mut n) = (d, 1u32, 100i32);
    ok(launch(f, 1, 128, &mut [arg(&mut p), arg(&mut v), arg(&mut n)]));
    ok(cuCtxSynchronize());
    // One element past the end: the launch succeeds, the context faults.
    n = 101;
    ok(launch(f, 1, 128, &mut [arg(&mut p), arg(&mut v), arg(&mut n)]));
    assert_eq!(cuCtxSynchronize(), 700);
    ok(cuCtxDestroy_v2(ctx));

    // A wild pointer and a misaligned pointer.
    let ctx = context();
    let m = load(PTX).unwrap();
    let f = function(m, "gp_fill_u32").unwrap();
    let (mut p, mut v, mut n) = (0x1000u64, 1u32, 1i32);
    ok(launch(f, 1, 1, &mut [arg(&mut p), arg(&mut v), arg(&mut n)]));
    assert_eq!(cuCtxSynchronize(), 700);
    ok(cuCtxDestroy_v2(ctx));

    let ctx = context();
    let m = load(PTX).unwrap();
    let f = function(m, "gp_fill_u32").unwrap();
    let d = alloc(64);
    let (mut p, mut v, mut n) = (d + 2, 1u32, 1i32);
    ok(launch(f, 1, 1, &mut [arg(&mut p), arg(&mut v), arg(&mut n)]));
    assert_eq!(cuCtxSynchronize(), 716);
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn primary_context_lifecycle_and_reset() {
    let _serial = serial();
    let _g = PRIMARY.lock().unwrap_or_else(|e| e.into_inner());
    ok(cuInit(0));
    let (mut flags, mut active) = (0u32, 0i32);
    let mut ctx = null_mut();
    // SAFETY: valid out-pointers.
    unsafe {
        ok(cuDevicePrimaryCtxSetFlags_v2(0, 4));
        ok(cuDevicePrimaryCtxRetain(&mut ctx, 0));
        ok(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active));
        assert_eq!((flags, active), (4, 1));
        assert_eq!(cuDevicePrimaryCtxSetFlags_v2(0, 3), 1);
        let mut again = null_mut();
        ok(cuDevicePrimaryCtxRetain(&mut again, 0));
        assert_eq!(ctx, again, "one primary context per device");
        ok(cuDevicePrimaryCtxRelease_v2(0));
    }
    ok(cuCtxSetCurrent(ctx));
    assert_eq!(cuCtxDestroy_v2(ctx), 201, "primary contexts are not destroyed");
    let m = load(PTX).unwrap();
    let mut p = alloc(64);
    ok(launch(function(m, "gp_fault").unwrap(), 1, 1, &mut [arg(&mut p)]));
    assert_eq!(cuCtxSynchronize(), 700);

    // Reset clears the sticky error along with every resource.
    ok(cuDevicePrimaryCtxReset_v2(0));
    // SAFETY: valid out-pointers.
    unsafe {
        ok(cuDevicePrimaryCtxGetState(0, &mut flags, &mut active));
        assert_eq!(active, 0);
        assert_eq!(cuCtxSynchronize(), 709, "inactive primary context");
        ok(cuDevicePrimaryCtxRetain(&mut ctx, 0));
    }
    ok(cuCtxSetCurrent(ctx));
    ok(cuCtxSynchronize());
    assert_eq!(download_err(p), 1, "allocations did not survive the reset");
    assert_eq!(cuModuleUnload(m), 400, "modules did not survive the reset");
    let mut version = 0;
    // SAFETY: valid out-pointer.
    unsafe { ok(cuCtxGetApiVersion(ctx, &mut version)) };
    assert_eq!(version, 13000);
    ok(cuDevicePrimaryCtxRelease_v2(0));
    assert_eq!(cuDevicePrimaryCtxRelease_v2(0), 201);
    ok(cuCtxSetCurrent(null_mut()));
    assert_eq!(cuDevicePrimaryCtxRelease_v2(5), 101);
}

#[test]
fn module_globals() {
    let _serial = serial();
    let ctx = context();
    let m = load(PTX).unwrap();
    let (mut dptr, mut size) = (0u64, 0usize);
    let g = CString::new("scratch").unwrap();
    let c = CString::new("counter").unwrap();
    let missing = CString::new("missing").unwrap();
    // SAFETY: valid out-pointers and names.
    unsafe {
        ok(cuModuleGetGlobal_v2(&mut dptr, &mut size, m, g.as_ptr()));
        assert_eq!(size, 64);
        assert_eq!(download::<u8>(dptr, 64), vec![0u8; 64]);
        upload(dptr, &[5u32; 16]);
        let mut again = 0u64;
        ok(cuModuleGetGlobal_v2(&mut again, null_mut(), m, g.as_ptr()));
        assert_eq!(again, dptr);
        assert_eq!(download::<u32>(dptr, 16), vec![5u32; 16]);
        assert_eq!(cuMemFree_v2(dptr), 1, "module memory is not cuMemAlloc memory");

        ok(cuModuleGetGlobal_v2(&mut dptr, &mut size, m, c.as_ptr()));
        assert_eq!(size, 4);
        assert_eq!(download::<u32>(dptr, 1), vec![42]);
        assert_eq!(cuModuleGetGlobal_v2(&mut dptr, &mut size, m, missing.as_ptr()), 500);
        assert_eq!(
            cuModuleGetGlobal_v2(&mut dptr, &mut size, 0x55 as CUmodule, c.as_ptr()),
            400
        );
    }
    ok(cuModuleUnload(m));
    assert_eq!(download_err(dptr), 1, "unloading frees module variables");
    assert_eq!(cuModuleUnload(m), 400);
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn bad_images() {
    let _serial = serial();
    let ctx = context();
    assert_eq!(load("not ptx at all").unwrap_err(), 200);
    assert_eq!(
        load(".version 8.0\n.target sm_90\n.entry k(.param .u64 a { ret; }").unwrap_err(),
        218
    );
    assert_eq!(load(".version 8.0\n.target sm_90\n.entry k() { ret;").unwrap_err(), 218);
    assert_eq!(load(".version 12.0\n.target sm_90\n").unwrap_err(), 222);
    let mut m = null_mut();
    // SAFETY: null image is rejected before being read.
    assert_eq!(unsafe { cuModuleLoadData(&mut m, std::ptr::null()) }, 1);
    // An ELF header (no sections) for no CUDA machine: 64 bytes, as its header says.
    let mut elf = [0u8; 64];
    elf[..7].copy_from_slice(b"\x7fELF\x02\x01\x01");
    // SAFETY: a whole 64-byte ELF image.
    assert_eq!(unsafe { cuModuleLoadData(&mut m, elf.as_ptr().cast()) }, 200);
    let src = CString::new(PTX).unwrap();
    // SAFETY: valid out-pointer and image; options are ignored.
    ok(unsafe { cuModuleLoadDataEx(&mut m, src.as_ptr().cast(), 0, null_mut(), null_mut()) });
    ok(cuCtxDestroy_v2(ctx));
    assert_eq!(cuModuleUnload(m), 400, "destroying the context unloaded it");
}

#[test]
fn libraries_and_kernels() {
    let _serial = serial();
    ok(cuInit(0));
    let src = CString::new(PTX).unwrap();
    let mut lib = null_mut();
    // SAFETY: valid out-pointer and image; options are null.
    ok(unsafe {
        cuLibraryLoadData(
            &mut lib,
            src.as_ptr().cast(),
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            null_mut(),
            0,
        )
    });
    let kname = CString::new("gp_vector_add").unwrap();
    let mut kernel = null_mut();
    let (mut off, mut size) = (0usize, 0usize);
    let mut v = 0;
    // SAFETY: valid out-pointers and names throughout.
    unsafe {
        ok(cuLibraryGetKernel(&mut kernel, lib, kname.as_ptr()));
        let nope = CString::new("nope").unwrap();
        let mut k2 = null_mut();
        assert_eq!(cuLibraryGetKernel(&mut k2, lib, nope.as_ptr()), 500);
        ok(cuKernelGetParamInfo(kernel, 3, &mut off, &mut size));
        assert_eq!((off, size), (24, 4));
        assert_eq!(cuKernelGetParamInfo(kernel, 4, &mut off, &mut size), 1);
        ok(cuKernelSetAttribute(8, 70_000, kernel, 0));
        ok(cuKernelGetAttribute(&mut v, 8, kernel, 0));
        assert_eq!(v, 70_000);
        assert_eq!(cuKernelGetAttribute(&mut v, 8, kernel, 9), 101);
        let mut f = null_mut();
        assert_eq!(cuKernelGetFunction(&mut f, kernel), 201, "needs a context");
    }

    let ctx = context();
    let mut f = null_mut();
    // SAFETY: valid out-pointers.
    unsafe {
        ok(cuKernelGetFunction(&mut f, kernel));
        let mut f2 = null_mut();
        ok(cuKernelGetFunction(&mut f2, kernel));
        assert_eq!(f, f2);
        ok(cuFuncGetAttribute(&mut v, 8, f));
        assert_eq!(v, 70_000, "kernel attributes carry over to its functions");
    }
    let n = 64usize;
    let (da, db, dc) = (alloc(n * 4), alloc(n * 4), alloc(n * 4));
    upload(da, &vec![1.5f32; n]);
    upload(db, &vec![2.0f32; n]);
    let (mut pa, mut pb, mut pc, mut pn) = (da, db, dc, n as i32);
    let mut args = [arg(&mut pa), arg(&mut pb), arg(&mut pc), arg(&mut pn)];
    ok(launch(f, 1, 64, &mut args));
    assert_eq!(download::<f32>(dc, n), vec![3.5f32; n]);
    // A CUkernel may be passed where a CUfunction is expected.
    ok(cuMemsetD32_v2(dc, 0, n));
    ok(launch(kernel, 1, 64, &mut args));
    assert_eq!(download::<f32>(dc, n), vec![3.5f32; n]);

    let g = CString::new("counter").unwrap();
    let (mut dptr, mut gsize) = (0u64, 0usize);
    // SAFETY: valid out-pointers and name.
    unsafe { ok(cuLibraryGetGlobal(&mut dptr, &mut gsize, lib, g.as_ptr())) };
    assert_eq!(gsize, 4);
    assert_eq!(download::<u32>(dptr, 1), vec![42]);

    ok(cuLibraryUnload(lib));
    assert_eq!(cuLibraryUnload(lib), 400);
    assert_eq!(launch(f, 1, 64, &mut args), 400);
    assert_eq!(download_err(dptr), 1);
    ok(cuCtxDestroy_v2(ctx));
}

/// Asynchronous copies to and from pinned memory run on the copy engine,
/// beside the caller: an event recorded after one completes when it is done,
/// a query says `CUDA_ERROR_NOT_READY` until then, and any other call (here
/// a synchronous copy) waits for the queued copies first.
#[test]
fn pinned_async_copies_run_beside_the_caller() {
    let _serial = serial();
    // The other tests hold to the driver's rules with the engine on too.
    gpupool_softcuda::engine::enable();
    let ctx = context();
    const N: usize = 64 << 20;
    let d = alloc(N);
    let (mut up, mut down) = (null_mut(), null_mut());
    let (mut s, mut e) = (null_mut(), null_mut());
    // SAFETY: valid out-pointers; the pinned buffers have N bytes and stay
    // allocated until the copies into and out of them are done.
    unsafe {
        ok(cuStreamCreate(&mut s, 1));
        ok(cuEventCreate(&mut e, 2));
        ok(cuMemAllocHost_v2(&mut up, N));
        ok(cuMemAllocHost_v2(&mut down, N));
        let up = std::slice::from_raw_parts_mut(up.cast::<u8>(), N);
        let down = std::slice::from_raw_parts_mut(down.cast::<u8>(), N);
        for (i, b) in up.iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        // Host to device, then a synchronous copy back: it waits.
        ok(cuMemcpyHtoDAsync_v2(d, up.as_ptr().cast(), N, s));
        ok(cuEventRecord(e, s));
        let mut polls = 0u64;
        loop {
            match cuEventQuery(e) {
                0 => break,
                600 => polls += 1,
                other => panic!("cuEventQuery: {}", name(other)),
            }
        }
        let back: Vec<u8> = download(d + (N as u64) - 4096, 4096);
        assert_eq!(&back[..], &up[N - 4096..]);
        // Device to host into pinned memory, known done by the event.
        ok(cuMemsetD8_v2(d, 7, N));
        ok(cuMemcpyDtoHAsync_v2(down.as_mut_ptr().cast(), d, N, s));
        ok(cuEventRecord(e, s));
        let busy = cuStreamQuery(s);
        assert!(busy == 0 || busy == 600, "cuStreamQuery: {}", name(busy));
        ok(cuEventSynchronize(e));
        assert!(down.iter().all(|&b| b == 7), "the event completed before its copy");
        ok(cuStreamQuery(s));
        eprintln!("polled a 64 MiB copy {polls} times before it was done");
        ok(cuMemFreeHost(up.as_mut_ptr().cast()));
        ok(cuMemFreeHost(down.as_mut_ptr().cast()));
        ok(cuMemFree_v2(d));
        ok(cuEventDestroy_v2(e));
        ok(cuStreamDestroy_v2(s));
        ok(cuCtxDestroy_v2(ctx));
    }
}

#[test]
fn streams_and_events() {
    let _serial = serial();
    let ctx = context();
    let mut s = null_mut();
    let (mut e0, mut e1, mut nt) = (null_mut(), null_mut(), null_mut());
    let mut ms = -1f32;
    let mut capturing = -1;
    let (mut least, mut greatest) = (1, 1);
    // SAFETY: valid out-pointers throughout.
    unsafe {
        ok(cuStreamCreate(&mut s, 1));
        assert_eq!(cuStreamCreate(&mut s, 8), 1);
        let mut s2 = null_mut();
        ok(cuStreamCreateWithPriority(&mut s2, 0, -3));
        ok(cuStreamDestroy_v2(s2));
        assert_eq!(cuStreamDestroy_v2(s2), 400);
        assert_eq!(cuStreamSynchronize(s2), 400);
        ok(cuStreamQuery(s));
        ok(cuStreamIsCapturing(s, &mut capturing));
        assert_eq!(capturing, 0);
        ok(cuCtxGetStreamPriorityRange(&mut least, &mut greatest));
        assert_eq!((least, greatest), (0, -5));

        ok(cuEventCreate(&mut e0, 0));
        ok(cuEventCreate(&mut e1, 0));
        ok(cuEventCreate(&mut nt, 2));
        assert_eq!(cuEventCreate(&mut nt, 4), 1, "interprocess needs DISABLE_TIMING");
        ok(cuEventQuery(e0));
        assert_eq!(cuEventElapsedTime(&mut ms, e0, e1), 400, "never recorded");
        ok(cuEventRecord(e0, s));
        assert_eq!(cuEventElapsedTime(&mut ms, e0, e1), 400, "end never recorded");
        std::thread::sleep(std::time::Duration::from_millis(5));
        ok(cuEventRecord(e1, null_mut()));
        ok(cuEventSynchronize(e1));
        ok(cuEventQuery(e1));
        ok(cuEventElapsedTime(&mut ms, e0, e1));
        assert!((4.0..5000.0).contains(&ms), "{ms}");
        ok(cuEventElapsedTime_v2(&mut ms, e0, e1));
        ok(cuEventRecord(nt, s));
        assert_eq!(cuEventElapsedTime(&mut ms, e0, nt), 400, "timing disabled");
        ok(cuStreamWaitEvent(s, e1, 0));
        assert_eq!(cuStreamWaitEvent(s, 0x42 as CUevent, 0), 400);
        ok(cuEventDestroy_v2(e0));
        assert_eq!(cuEventDestroy_v2(e0), 400);
        assert_eq!(cuEventRecord(e0, s), 400);

        // Async copies and memsets run on the stream.
        let d = alloc(16);
        let src = [9u8; 16];
        ok(cuMemcpyHtoDAsync_v2(d, src.as_ptr().cast(), 16, s));
        ok(cuMemsetD8Async(d, 1, 4, s));
        ok(cuMemsetD16Async(d + 4, 0x0202, 2, s));
        ok(cuMemsetD32Async(d + 8, 0x0303_0303, 1, s));
        let d2 = alloc(16);
        ok(cuMemcpyDtoDAsync_v2(d2, d, 16, s));
        let mut back = [0u8; 16];
        ok(cuMemcpyDtoHAsync_v2(back.as_mut_ptr().cast(), d2, 16, s));
        ok(cuStreamSynchronize(s));
        assert_eq!(back, [1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 9, 9, 9, 9]);
        assert_eq!(
            cuMemcpyHtoDAsync_v2(d, src.as_ptr().cast(), 16, 0x4321 as CUstream),
            400
        );
    }

    // A stream of another context cannot be used from this one.
    let other = context();
    assert_eq!(cuMemsetD8Async(0, 0, 0, s), 400);
    ok(cuCtxDestroy_v2(other));
    ok(cuCtxSetCurrent(ctx));
    ok(cuStreamDestroy_v2(s));
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn limits_and_occupancy() {
    let _serial = serial();
    let ctx = context();
    let mut v = 0usize;
    // SAFETY: valid out-pointers throughout.
    unsafe {
        ok(cuCtxGetLimit(&mut v, 0));
        assert_eq!(v, 1024);
        ok(cuCtxSetLimit(0, 4096));
        ok(cuCtxGetLimit(&mut v, 0));
        assert_eq!(v, 4096);
        ok(cuCtxSetLimit(2, 64 << 20));
        assert_eq!(cuCtxGetLimit(&mut v, 42), 1);
        assert_eq!(cuCtxSetLimit(-1, 0), 1);
    }
    let m = load(PTX).unwrap();
    let f = function(m, "gp_vector_add").unwrap();
    let (mut n, mut grid, mut block) = (0i32, 0i32, 0i32);
    let mut smem = 0usize;
    // SAFETY: valid out-pointers; the cluster config is valid.
    unsafe {
        ok(cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut n, f, 256, 0));
        assert_eq!(n, 8);
        ok(cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
            &mut n, f, 1000, 0, 0,
        ));
        assert_eq!(n, 2);
        ok(cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut n, f, 2048, 0));
        assert_eq!(n, 0);
        ok(cuOccupancyMaxPotentialBlockSize(
            &mut grid,
            &mut block,
            f,
            std::ptr::null(),
            0,
            0,
        ));
        assert_eq!((grid, block), (132 * 2, 1024));
        ok(cuOccupancyMaxPotentialBlockSize(
            &mut grid,
            &mut block,
            f,
            std::ptr::null(),
            0,
            256,
        ));
        assert_eq!((grid, block), (132 * 8, 256));
        ok(cuOccupancyAvailableDynamicSMemPerBlock(&mut smem, f, 1, 128));
        assert_eq!(smem, 232448);
        let cfg = CUlaunchConfig {
            gridDimX: 1,
            gridDimY: 1,
            gridDimZ: 1,
            blockDimX: 128,
            blockDimY: 1,
            blockDimZ: 1,
            sharedMemBytes: 0,
            hStream: null_mut(),
            attrs: null_mut(),
            numAttrs: 0,
        };
        ok(cuOccupancyMaxActiveClusters(&mut n, f, &cfg));
        assert_eq!(n, 132);
        assert_eq!(
            cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut n, 0x3 as CUfunction, 256, 0),
            400
        );
    }
    ok(cuCtxDestroy_v2(ctx));
}

#[test]
fn concurrent_contexts_on_threads() {
    let _serial = serial();
    ok(cuInit(0));
    let threads: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let ctx = context();
                let m = load(PTX).unwrap();
                let f = function(m, "gp_fill_u32").unwrap();
                let d = alloc(4096 * 4);
                for round in 0..20u32 {
                    let (mut p, mut v, mut n) = (d, t * 1000 + round, 4096i32);
                    ok(launch(f, 16, 256, &mut [arg(&mut p), arg(&mut v), arg(&mut n)]));
                    assert_eq!(download::<u32>(d, 4096), vec![t * 1000 + round; 4096]);
                }
                ok(cuCtxDestroy_v2(ctx));
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// Launches `f` on `stream` with `kernelParams`.
fn launch_on(f: CUfunction, stream: CUstream, grid: u32, args: &mut [*mut c_void]) -> CUresult {
    // SAFETY: `args` holds one pointer per kernel parameter.
    unsafe { cuLaunchKernel(f, grid, 1, 1, 256, 1, 1, 0, stream, args.as_mut_ptr(), null_mut()) }
}

/// A capturing stream records its work instead of running it; the graph
/// replays that work, with the arguments captured, each time it is
/// launched, reading the inputs as they are then. Work a capture cannot
/// hold here (copies from the host) invalidates it.
#[test]
fn captured_work_replays_from_a_graph() {
    let _serial = serial();
    let ctx = context();
    let m = load(PTX).unwrap();
    let add = function(m, "gp_vector_add").unwrap();
    let scale = function(m, "gp_scale").unwrap();
    let n = 1000usize;
    let (da, db, dc, dd) = (alloc(n * 4), alloc(n * 4), alloc(n * 4), alloc(n * 4));
    let mut s = null_mut();
    let (mut graph, mut exec) = (null_mut(), null_mut());
    let mut status = -1;
    // SAFETY: valid out-pointers; kernel arguments point at live locals.
    unsafe {
        ok(cuStreamCreate(&mut s, 1));
        assert_eq!(
            cuStreamBeginCapture_v2(null_mut(), 0),
            900,
            "the NULL stream cannot capture"
        );
        assert_eq!(cuStreamEndCapture(s, &mut graph), 401, "not capturing");
        ok(cuStreamBeginCapture_v2(s, 0));
        assert_eq!(cuStreamBeginCapture_v2(s, 0), 401, "already capturing");
        ok(cuStreamIsCapturing(s, &mut status));
        assert_eq!(status, 1);
        // c = a + b; c *= 2; d = c; d[0..4] = 0
        let (mut pa, mut pb, mut pc, mut pn) = (da, db, dc, n as i32);
        ok(launch_on(
            add,
            s,
            4,
            &mut [arg(&mut pa), arg(&mut pb), arg(&mut pc), arg(&mut pn)],
        ));
        let (mut two, mut pc2) = (2.0f32, dc);
        ok(launch_on(
            scale,
            s,
            4,
            &mut [arg(&mut pc2), arg(&mut two), arg(&mut pn)],
        ));
        ok(cuMemcpyDtoDAsync_v2(dd, dc, n * 4, s));
        ok(cuMemsetD32Async(dd, 0, 4, s));
        // The arguments were captured: changing the locals changes nothing.
        two = 100.0;
        ok(cuStreamEndCapture(s, &mut graph));
        ok(cuStreamIsCapturing(s, &mut status));
        assert_eq!(status, 0);
        assert_eq!(two, 100.0);
        // Nothing ran during the capture.
        assert!(download::<f32>(dc, n).iter().all(|&v| v == 0.0));
        ok(cuGraphInstantiateWithFlags(&mut exec, graph, 0));
        for round in 0..3 {
            let a: Vec<f32> = (0..n).map(|i| (i + round) as f32).collect();
            let b: Vec<f32> = (0..n).map(|i| 0.5 * i as f32).collect();
            upload(da, &a);
            upload(db, &b);
            ok(cuGraphLaunch(exec, s));
            ok(cuStreamSynchronize(s));
            let d: Vec<f32> = download(dd, n);
            for i in 0..n {
                let want = if i < 4 { 0.0 } else { (a[i] + b[i]) * 2.0 };
                assert_eq!(d[i], want, "round {round}, element {i}");
            }
        }
        ok(cuGraphExecDestroy(exec));
        assert_eq!(cuGraphLaunch(exec, s), 1, "destroyed");
        ok(cuGraphDestroy(graph));

        // A copy from pinned memory is captured: the graph reads the
        // memory when it runs.
        let mut pinned = null_mut();
        ok(cuMemAllocHost_v2(&mut pinned, 16));
        let pinned_bytes = std::slice::from_raw_parts_mut(pinned.cast::<u8>(), 16);
        ok(cuStreamBeginCapture_v2(s, 2));
        ok(cuMemcpyHtoDAsync_v2(da, pinned.cast_const(), 16, s));
        ok(cuStreamEndCapture(s, &mut graph));
        ok(cuGraphInstantiateWithFlags(&mut exec, graph, 0));
        pinned_bytes.fill(0x5a);
        ok(cuGraphLaunch(exec, s));
        assert_eq!(download::<u8>(da, 16), vec![0x5a; 16]);
        ok(cuGraphExecDestroy(exec));
        ok(cuGraphDestroy(graph));
        ok(cuMemFreeHost(pinned));

        // A copy from pageable memory invalidates the capture.
        ok(cuStreamBeginCapture_v2(s, 2));
        let host = [1u8; 16];
        assert_eq!(cuMemcpyHtoDAsync_v2(da, host.as_ptr().cast(), 16, s), 900);
        ok(cuStreamIsCapturing(s, &mut status));
        assert_eq!(status, 2);
        assert_eq!(cuStreamEndCapture(s, &mut graph), 901);
        ok(cuStreamIsCapturing(s, &mut status));
        assert_eq!(status, 0);
        // A context synchronise during a global capture is refused, and
        // invalidates it; in relaxed mode it is allowed.
        ok(cuStreamBeginCapture_v2(s, 0));
        assert_eq!(cuCtxSynchronize(), 900);
        assert_eq!(cuStreamEndCapture(s, &mut graph), 901);
        ok(cuStreamBeginCapture_v2(s, 2));
        ok(cuCtxSynchronize());
        ok(cuStreamEndCapture(s, &mut graph));
        ok(cuGraphDestroy(graph));
        let mut mode = 2u32;
        ok(cuThreadExchangeStreamCaptureMode(&mut mode));
        assert_eq!(mode, 0);
        ok(cuThreadExchangeStreamCaptureMode(&mut mode));
        assert_eq!(mode, 2);
        ok(cuStreamDestroy_v2(s));
        ok(cuCtxDestroy_v2(ctx));
    }
}

const COND_PTX: &str = r#"
.version 8.0
.target sm_90
.address_size 64
.extern .func cudaGraphSetConditional (.param .b64 h, .param .b32 v)
.visible .entry gp_set_condition(.param .u64 h, .param .u64 v) { ret; }
.visible .entry gp_countdown(.param .u64 h, .param .u64 c) { ret; }
.visible .entry gp_scale(.param .u64 x, .param .f32 s, .param .u32 n) { ret; }
"#;

/// A kernel node of `graph` after `deps`, one block of 32 threads.
fn kernel_node(graph: *mut c_void, deps: &[*mut c_void], f: CUfunction, args: &mut [*mut c_void]) -> *mut c_void {
    let p = CUDA_KERNEL_NODE_PARAMS {
        func: f,
        gridDimX: 1,
        gridDimY: 1,
        gridDimZ: 1,
        blockDimX: 32,
        blockDimY: 1,
        blockDimZ: 1,
        sharedMemBytes: 0,
        kernelParams: args.as_mut_ptr(),
        extra: null_mut(),
        kern: null_mut(),
        ctx: null_mut(),
    };
    let mut node = null_mut();
    // SAFETY: valid out-pointer, dependencies and parameters.
    ok(unsafe { cuGraphAddKernelNode_v2(&mut node, graph, deps.as_ptr(), deps.len(), &p) });
    node
}

/// A conditional node (`CUgraphNodeParams`) of `graph` after `deps`: its
/// bodies.
fn conditional(graph: *mut c_void, deps: &[*mut c_void], handle: u64, kind: u32, size: u32) -> Vec<*mut c_void> {
    #[repr(C)]
    struct Params {
        node_type: u32,
        reserved: [i32; 3],
        handle: u64,
        kind: u32,
        size: u32,
        bodies: *mut *mut c_void,
        ctx: *mut c_void,
        rest: [u64; 25],
        reserved2: i64,
    }
    let mut p = Params {
        node_type: 13,
        reserved: [0; 3],
        handle,
        kind,
        size,
        bodies: null_mut(),
        ctx: null_mut(),
        rest: [0; 25],
        reserved2: 0,
    };
    let mut node = null_mut();
    // SAFETY: valid out-pointer, dependencies and a complete parameter block.
    ok(unsafe {
        cuGraphAddNode_v2(
            &mut node,
            graph,
            deps.as_ptr(),
            std::ptr::null(),
            deps.len(),
            (&mut p as *mut Params).cast(),
        )
    });
    // SAFETY: the driver wrote an array of `size` bodies.
    unsafe { std::slice::from_raw_parts(p.bodies, size as usize) }.to_vec()
}

/// Conditional nodes nest (an if inside a while's body, its handle made
/// for that body), run where the graph copies them as a child, take their
/// bodies as they are at instantiation, and go with their graph.
#[test]
fn conditional_nodes_nest_and_copy() {
    let _g = serial();
    let ctx = context();
    let m = load(COND_PTX).unwrap();
    let (set, down, scale) = (
        function(m, "gp_set_condition").unwrap(),
        function(m, "gp_countdown").unwrap(),
        function(m, "gp_scale").unwrap(),
    );
    let (x, counter, flag) = (alloc(4 * 8), alloc(4), alloc(4));
    let mut graph = null_mut();
    // SAFETY: valid out-pointers throughout.
    ok(unsafe { cuGraphCreate(&mut graph, 0) });
    let (mut hw, mut hi) = (0u64, 0u64);
    // SAFETY: valid out-pointers and handles of this test.
    ok(unsafe { cuGraphConditionalHandleCreate(&mut hw, graph, null_mut(), 1, 1) });
    let body = conditional(graph, &[], hw, 1, 1)[0];
    // A handle of the body, for the if inside it.
    // SAFETY: valid out-pointers and handles of this test.
    ok(unsafe { cuGraphConditionalHandleCreate(&mut hi, body, null_mut(), 0, 0) });
    let (mut xp, mut cp, mut fp, mut n, mut two) = (x, counter, flag, 8u32, 2.0f32);
    let countdown = kernel_node(body, &[], down, &mut [arg(&mut hw), arg(&mut cp)]);
    let pick = kernel_node(body, &[countdown], set, &mut [arg(&mut hi), arg(&mut fp)]);
    let inner = conditional(body, &[pick], hi, 0, 1)[0];
    // Added after the node was made: the body is read at instantiation.
    kernel_node(inner, &[], scale, &mut [arg(&mut xp), arg(&mut two), arg(&mut n)]);
    // A handle of another graph does not make a node here.
    assert_eq!(
        {
            let mut node = null_mut();
            let mut p = [0u64; 32];
            p[0] = 13;
            p[2] = hi;
            p[3] = 1;
            // SAFETY: a complete parameter block.
            unsafe {
                cuGraphAddNode_v2(
                    &mut node,
                    graph,
                    std::ptr::null(),
                    std::ptr::null(),
                    0,
                    p.as_mut_ptr().cast(),
                )
            }
        },
        1
    );
    let run = |exec: *mut c_void, rounds: i32, pick: u32| -> Vec<f32> {
        upload(x, &[1.0f32; 8]);
        upload(counter, &[rounds]);
        upload(flag, &[pick]);
        ok(cuGraphLaunch(exec, null_mut()));
        ok(cuCtxSynchronize());
        download(x, 8)
    };
    let mut exec = null_mut();
    // SAFETY: valid out-pointers and handles of this test.
    ok(unsafe { cuGraphInstantiateWithFlags(&mut exec, graph, 0) });
    assert_eq!(run(exec, 3, 1), [8.0; 8], "three rounds, each doubling");
    assert_eq!(run(exec, 3, 0), [1.0; 8], "the if ran nothing");
    assert_eq!(download::<i32>(counter, 1), [0]);
    // Copied as a child of another graph, the nodes run there.
    let mut outer = null_mut();
    // SAFETY: valid out-pointers and handles of this test.
    ok(unsafe { cuGraphCreate(&mut outer, 0) });
    let mut child = null_mut();
    // SAFETY: valid out-pointers and handles of this test.
    ok(unsafe { cuGraphAddChildGraphNode(&mut child, outer, std::ptr::null(), 0, graph) });
    let mut outer_exec = null_mut();
    // SAFETY: valid out-pointers and handles of this test.
    ok(unsafe { cuGraphInstantiateWithFlags(&mut outer_exec, outer, 0) });
    assert_eq!(run(outer_exec, 2, 1), [4.0; 8]);
    // A body cannot go alone; with its graph it does, handles too.
    assert_eq!(cuGraphDestroy(body), 1);
    ok(cuGraphDestroy(graph));
    let mut again = 0u64;
    assert_eq!(
        // SAFETY: valid out-pointers and handles of this test.
        unsafe { cuGraphConditionalHandleCreate(&mut again, body, null_mut(), 0, 0) },
        1
    );
    // The executable graphs keep what they were made of.
    assert_eq!(run(exec, 1, 1), [2.0; 8]);
    assert_eq!(run(outer_exec, 1, 1), [2.0; 8]);
    ok(cuGraphExecDestroy(exec));
    ok(cuGraphExecDestroy(outer_exec));
    ok(cuGraphDestroy(outer));
    ok(cuCtxDestroy_v2(ctx));
}

/// A stream wait for a word another thread writes later: queries of the
/// stream, and of an event recorded behind the wait, answer not ready; each
/// kind of synchronise waits, outside the driver's lock (the other thread's
/// calls go on), until the write meets it.
#[test]
fn a_stream_wait_holds_synchronises_until_another_threads_write_meets_it() {
    let _serial = serial();
    let ctx = context();
    let flag = alloc(4);
    ok(cuMemsetD32_v2(flag, 0, 1));
    let mut waiting = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuStreamCreate(&mut waiting, 1) });
    let mut e = null_mut();
    // SAFETY: valid out-pointer.
    ok(unsafe { cuEventCreate(&mut e, 2) });
    const NOT_READY: CUresult = 600;
    for round in 1..=3u32 {
        ok(cuStreamWaitValue32_v2(waiting, flag, round, 0));
        ok(cuEventRecord(e, waiting));
        assert_eq!(cuStreamQuery(waiting), NOT_READY);
        assert_eq!(cuEventQuery(e), NOT_READY);
        let written = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (w, ctx_addr) = (written.clone(), ctx as usize);
        let writer = std::thread::spawn(move || {
            ok(cuCtxSetCurrent(ctx_addr as CUcontext));
            std::thread::sleep(std::time::Duration::from_millis(50));
            // Served while the first thread waits.
            let p = alloc(64);
            ok(cuMemFree_v2(p));
            let mut s = null_mut();
            // SAFETY: valid out-pointer.
            ok(unsafe { cuStreamCreate(&mut s, 1) });
            w.store(true, std::sync::atomic::Ordering::SeqCst);
            ok(cuStreamWriteValue32_v2(s, flag, round, 0));
            ok(cuStreamSynchronize(s));
            ok(cuStreamDestroy_v2(s));
        });
        match round {
            1 => ok(cuStreamSynchronize(waiting)),
            2 => ok(cuEventSynchronize(e)),
            _ => ok(cuCtxSynchronize()),
        }
        assert!(
            written.load(std::sync::atomic::Ordering::SeqCst),
            "round {round}: the synchronise returned before the write"
        );
        writer.join().unwrap();
        ok(cuStreamQuery(waiting));
        ok(cuEventQuery(e));
    }
    ok(cuEventDestroy_v2(e));
    ok(cuStreamDestroy_v2(waiting));
    ok(cuMemFree_v2(flag));
    ok(cuCtxDestroy_v2(ctx));
}
