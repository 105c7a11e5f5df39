//! Before `cuInit`, the simulated driver refuses work as the real one does.
//! (A separate test binary, so no other test has initialised the driver.)

use std::ptr::null_mut;

use gpupool_softcuda::exports::*;

#[test]
fn calls_before_cu_init_fail() {
    let mut v = 0;
    let mut p = 0u64;
    let mut ctx = null_mut();
    // SAFETY: valid out-pointers.
    unsafe {
        ok_version(&mut v);
        assert_eq!(cuDeviceGetCount(&mut v), 3);
        assert_eq!(cuMemAlloc_v2(&mut p, 16), 3);
        assert_eq!(cuCtxCreate_v2(&mut ctx, 0, 0), 3);
        assert_eq!(cuCtxSynchronize(), 3);
    }
    assert_eq!(cuInit(0), 0);
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { cuDeviceGetCount(&mut v) }, 0);
    assert!(v >= 1);
}

fn ok_version(v: &mut i32) {
    // SAFETY: valid out-pointer.
    assert_eq!(unsafe { cuDriverGetVersion(v) }, 0, "works before cuInit");
    assert_eq!(*v, 13000);
}
