//! gpupool's own C entry points, beside the driver's: what no CUDA call
//! answers but gpupool's NVML shim (`libnvidia-ml.so.1`) needs. The NVML
//! shim finds them with `dlsym` on the `libcuda.so.1` it loads; finding
//! them is also how it knows that library is gpupool's.
//!
//! - `gpupoolDeviceStatus(ordinal, *out)`: memory, utilisation, temperature
//!   and power of a session device, asked of the server and kept for
//!   `STATUS_TTL` so a tool polling NVML does not flood the server.
//! - `gpupoolKernelDriverVersion(buf, len)`: the version of the server's
//!   NVIDIA kernel driver (`580.159.04`), as its handshake told;
//!   `CUDA_ERROR_NOT_FOUND` when it has none (the software driver).
//! - `gpupoolMachineGpus(out, capacity, *count)`: the GPUs of the server's
//!   machine that NVML describes, in NVML's order, with their links: the
//!   session's devices and those `CUDA_VISIBLE_DEVICES` keeps from it.

use super::{guard, CUresult};
use crate::error::{CuError, CuResult};
use gpupool_proto::ext::MachineGpuRecord;
use gpupool_proto::message::{Reply, Request, DEVICE_STATUS_SIMULATED};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// `GpupoolDeviceStatus`, as the NVML shim declares it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GpupoolDeviceStatus {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    pub gpu_util_percent: u32,
    pub mem_util_percent: u32,
    pub temperature_c: u32,
    pub power_mw: u32,
    /// Bit 0: simulated device; bit 1: the server has no NVML (utilisation,
    /// temperature and power unknown, reported as zero).
    pub flags: u32,
}

/// How long an answer is reused.
pub const STATUS_TTL: Duration = Duration::from_millis(100);

/// Answers by device ordinal, with the time each was fetched.
static CACHE: Mutex<Vec<Option<(Instant, GpupoolDeviceStatus)>>> = Mutex::new(Vec::new());

/// The status of session device `ordinal`: memory, utilisation, temperature,
/// power. `CUDA_ERROR_NOT_INITIALIZED` before `cuInit`,
/// `CUDA_ERROR_INVALID_DEVICE` for an ordinal the session does not have,
/// `CUDA_ERROR_INVALID_VALUE` for a NULL `out`.
///
/// # Safety
/// `out` is NULL or points to a writable `GpupoolDeviceStatus`.
#[no_mangle]
pub unsafe extern "C" fn gpupoolDeviceStatus(ordinal: i32, out: *mut GpupoolDeviceStatus) -> CUresult {
    guard("gpupoolDeviceStatus", || {
        let status = device_status(ordinal)?;
        // SAFETY: `out` is the caller's, NULL-checked by `out`, and points to
        // a writable GpupoolDeviceStatus by this function's contract.
        unsafe { super::calls::out(out, status) }
    })
}

/// Write the server's kernel driver version, NUL-terminated, into the
/// `len` bytes at `buf`: `CUDA_ERROR_NOT_FOUND` when the server has no
/// NVIDIA kernel driver, `CUDA_ERROR_INVALID_VALUE` when it does not fit.
///
/// # Safety
/// `buf` is NULL or points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn gpupoolKernelDriverVersion(buf: *mut std::ffi::c_char, len: u32) -> CUresult {
    guard("gpupoolKernelDriverVersion", || {
        let s = super::calls::shim()?;
        let version = s.remote.session.kernel_driver.as_bytes();
        if version.is_empty() {
            return Err(CuError::NOT_FOUND);
        }
        if buf.is_null() || version.len() >= len as usize {
            return Err(CuError::INVALID_VALUE);
        }
        // SAFETY: the caller gave `len` writable bytes, more than the
        // version and its NUL.
        unsafe {
            std::ptr::copy_nonoverlapping(version.as_ptr(), buf.cast::<u8>(), version.len());
            *buf.add(version.len()) = 0;
        }
        Ok(())
    })
}

/// Write up to `capacity` of the machine's GPUs at `out` and their number
/// at `count` (`out` may be NULL with `capacity` 0, to ask the number).
///
/// # Safety
/// `out` points to `capacity` writable entries when `capacity` > 0;
/// `count` is NULL or points to a writable `u32`.
#[no_mangle]
pub unsafe extern "C" fn gpupoolMachineGpus(out: *mut MachineGpuRecord, capacity: u32, count: *mut u32) -> CUresult {
    guard("gpupoolMachineGpus", || {
        let s = super::calls::shim()?;
        let machine = &s.remote.session.machine;
        if count.is_null() || (out.is_null() && capacity > 0) {
            return Err(CuError::INVALID_VALUE);
        }
        for (i, g) in machine.iter().take(capacity as usize).enumerate() {
            // SAFETY: the caller gave `capacity` > i writable entries.
            unsafe { out.add(i).write(MachineGpuRecord::of(g)) };
        }
        // SAFETY: checked not to be NULL; the caller's writable u32.
        unsafe { count.write(machine.len() as u32) };
        Ok(())
    })
}

fn device_status(ordinal: i32) -> CuResult<GpupoolDeviceStatus> {
    let s = super::calls::shim()?;
    s.device(ordinal)?;
    let slot = ordinal as usize;
    let now = Instant::now();
    if let Some(Some((at, status))) = lock_cache().get(slot) {
        if now.duration_since(*at) < STATUS_TTL {
            return Ok(*status);
        }
    }
    // The lock is not held across the round trip: two threads polling at
    // once may both ask, which costs one extra request, never a stall.
    let reply = s.remote.call(&Request::DeviceStatus { device: ordinal }, &[])?;
    let mut status = from_reply(reply)?;
    if s.remote.session.simulated {
        status.flags |= DEVICE_STATUS_SIMULATED;
    }
    let mut cache = lock_cache();
    if cache.len() <= slot {
        cache.resize(slot + 1, None);
    }
    cache[slot] = Some((Instant::now(), status));
    Ok(status)
}

fn lock_cache() -> std::sync::MutexGuard<'static, Vec<Option<(Instant, GpupoolDeviceStatus)>>> {
    CACHE.lock().unwrap_or_else(|p| p.into_inner())
}

fn from_reply(reply: Reply) -> CuResult<GpupoolDeviceStatus> {
    match reply {
        Reply::DeviceStatus {
            total_bytes,
            free_bytes,
            used_bytes,
            gpu_util_percent,
            mem_util_percent,
            temperature_c,
            power_mw,
            flags,
        } => Ok(GpupoolDeviceStatus {
            total_bytes,
            free_bytes,
            used_bytes,
            gpu_util_percent,
            mem_util_percent,
            temperature_c,
            power_mw,
            flags,
        }),
        other => {
            tracing::error!(reply = ?other, "the server answered DeviceStatus with an unexpected reply");
            Err(CuError::UNKNOWN)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_matches_the_c_declaration() {
        // Three u64 then five u32: 44 bytes, padded to 48 by the u64 alignment.
        assert_eq!(std::mem::size_of::<GpupoolDeviceStatus>(), 48);
        assert_eq!(std::mem::align_of::<GpupoolDeviceStatus>(), 8);
        assert_eq!(std::mem::offset_of!(GpupoolDeviceStatus, gpu_util_percent), 24);
        assert_eq!(std::mem::offset_of!(GpupoolDeviceStatus, flags), 40);
    }

    #[test]
    fn reply_converts_field_by_field() {
        let r = Reply::DeviceStatus {
            total_bytes: 10,
            free_bytes: 7,
            used_bytes: 3,
            gpu_util_percent: 50,
            mem_util_percent: 20,
            temperature_c: 40,
            power_mw: 70_000,
            flags: 2,
        };
        let s = from_reply(r).unwrap();
        assert_eq!((s.total_bytes, s.free_bytes, s.used_bytes), (10, 7, 3));
        assert_eq!((s.gpu_util_percent, s.mem_util_percent), (50, 20));
        assert_eq!((s.temperature_c, s.power_mw, s.flags), (40, 70_000, 2));
        assert_eq!(from_reply(Reply::Status(0)), Err(CuError::UNKNOWN));
    }

    #[test]
    fn fails_without_a_session() {
        let mut s = GpupoolDeviceStatus::default();
        // SAFETY: `s` is a writable GpupoolDeviceStatus.
        let status = unsafe { gpupoolDeviceStatus(0, &mut s) };
        // Not initialised, or (if another test ran cuInit) no server to reach.
        assert!(status == CuError::NOT_INITIALIZED.0 || status == CuError::NO_DEVICE.0);
        // SAFETY: NULL is allowed and refused.
        assert_ne!(unsafe { gpupoolDeviceStatus(0, std::ptr::null_mut()) }, 0);
    }
}
