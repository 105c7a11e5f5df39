//! The C boundary: NVML's entry points with the signatures of `nvml.h`.
//! Each converts its C arguments, checks them (NULL outputs and foreign
//! handles answer `NVML_ERROR_INVALID_ARGUMENT`, short buffers
//! `NVML_ERROR_INSUFFICIENT_SIZE`, any call before `nvmlInit*`
//! `NVML_ERROR_UNINITIALIZED`) and answers from `session`. No panic crosses
//! this boundary.
//!
//! Entry points NVML has and gpupool cannot answer (NVLink, ECC, fans,
//! clocks policy, MIG, events, ...) are exported as stubs answering
//! `NVML_ERROR_NOT_SUPPORTED`, as NVML itself does for a query a device
//! lacks; names outside both lists are not exported, and a program looking
//! them up with `dlsym` finds nothing (pynvml then raises
//! `NVMLError_FunctionNotFound`).

// The entry points keep NVML's names.
#![allow(non_snake_case, non_camel_case_types, clippy::missing_safety_doc)]

use crate::cuda::{DeviceStatus, STATUS_NO_SERVER_NVML};
use crate::devices::{Device, DeviceTable, Slot};
use crate::error::{self, NvmlError, NvmlResult, NvmlReturn};
use crate::format::{cuda_version, PciAddress};
use crate::session::{self, Backend};
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

pub type nvmlReturn_t = NvmlReturn;
pub type nvmlDevice_t = *mut c_void;

/// `nvmlPciInfo_t` (the layout of `nvmlDeviceGetPciInfo_v2` and `_v3`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlPciInfo_t {
    pub busIdLegacy: [c_char; 16],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pciDeviceId: c_uint,
    pub pciSubSystemId: c_uint,
    pub busId: [c_char; 32],
}

/// The first fields of `nvmlPciInfo_t`, which the original
/// `nvmlDeviceGetPciInfo` (whose struct ends in reserved words instead of
/// `busId`) shares with the later versions.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlPciInfoCommon_t {
    pub busId: [c_char; 16],
    pub domain: c_uint,
    pub bus: c_uint,
    pub device: c_uint,
    pub pciDeviceId: c_uint,
    pub pciSubSystemId: c_uint,
}

/// `nvmlMemory_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlMemory_t {
    pub total: u64,
    pub free: u64,
    pub used: u64,
}

/// `nvmlMemory_v2_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlMemory_v2_t {
    pub version: c_uint,
    pub total: u64,
    pub reserved: u64,
    pub free: u64,
    pub used: u64,
}

/// `nvmlMemory_v2`: the struct's size with the version in the top byte.
pub const NVML_MEMORY_V2: c_uint = std::mem::size_of::<nvmlMemory_v2_t>() as c_uint | (2 << 24);

/// `nvmlUtilization_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct nvmlUtilization_t {
    pub gpu: c_uint,
    pub memory: c_uint,
}

/// `NVML_BRAND_NVIDIA`.
pub const NVML_BRAND_NVIDIA: c_uint = 14;
/// `NVML_TEMPERATURE_GPU`.
pub const NVML_TEMPERATURE_GPU: c_uint = 0;
/// `nvmlClockType_t`.
pub const NVML_CLOCK_GRAPHICS: c_uint = 0;
pub const NVML_CLOCK_SM: c_uint = 1;
pub const NVML_CLOCK_MEM: c_uint = 2;
pub const NVML_CLOCK_VIDEO: c_uint = 3;
/// `pciDeviceId` is (product << 16) | vendor; CUDA does not tell the product.
const PCI_VENDOR_NVIDIA: c_uint = 0x10de;

/// Run an entry point: turn its result into an `nvmlReturn_t`, and stop any
/// panic at the boundary.
fn guard(name: &'static str, f: impl FnOnce() -> NvmlResult) -> nvmlReturn_t {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => e.0,
        Err(_) => {
            tracing::error!(
                call = name,
                "internal error in gpupool NVML (panic caught); returning NVML_ERROR_UNKNOWN"
            );
            NvmlError::UNKNOWN.0
        }
    }
}

/// Write an out-parameter, refusing NULL.
unsafe fn out<T>(ptr: *mut T, value: T) -> NvmlResult {
    if ptr.is_null() {
        return Err(NvmlError::INVALID_ARGUMENT);
    }
    // SAFETY: non-null, and NVML makes the caller pass a writable T.
    unsafe { ptr.write_unaligned(value) };
    Ok(())
}

/// Copy `text` and a NUL into `buf` of `len` bytes.
unsafe fn out_string(buf: *mut c_char, len: c_uint, text: &str) -> NvmlResult {
    if buf.is_null() {
        return Err(NvmlError::INVALID_ARGUMENT);
    }
    let bytes = text.as_bytes();
    if (len as usize) < bytes.len() + 1 {
        return Err(NvmlError::INSUFFICIENT_SIZE);
    }
    // SAFETY: the caller gave `len` writable bytes at `buf`; we write
    // bytes.len() + 1 <= len of them.
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), buf.cast::<u8>(), bytes.len());
        *buf.add(bytes.len()) = 0;
    }
    Ok(())
}

/// Fill a fixed C char array with `text`, NUL-terminated, cut to fit.
fn fill(dst: &mut [c_char], text: &str) {
    dst.fill(0);
    let n = text.len().min(dst.len().saturating_sub(1));
    for (d, s) in dst.iter_mut().zip(&text.as_bytes()[..n]) {
        *d = *s as c_char;
    }
}

/// A C string argument, refusing NULL and non-UTF-8.
unsafe fn in_string<'a>(ptr: *const c_char) -> NvmlResult<&'a str> {
    if ptr.is_null() {
        return Err(NvmlError::INVALID_ARGUMENT);
    }
    // SAFETY: NVML's string arguments are NUL-terminated.
    let s = unsafe { CStr::from_ptr(ptr) };
    s.to_str().map_err(|_| NvmlError::INVALID_ARGUMENT)
}

/// The device a handle names; the handle must be one this library gave out.
fn device(handle: nvmlDevice_t) -> NvmlResult<(&'static Backend, &'static Device)> {
    let b = session::backend()?;
    let d = b.devices.get(handle).ok_or(NvmlError::INVALID_ARGUMENT)?;
    Ok((b, d))
}

/// A device's status, refusing the fields the server could not read.
fn sensors(b: &Backend, d: &Device) -> NvmlResult<DeviceStatus> {
    let s = b.status(d)?;
    if s.flags & STATUS_NO_SERVER_NVML != 0 {
        return Err(NvmlError::NOT_SUPPORTED);
    }
    Ok(s)
}

// ---- initialisation and errors --------------------------------------------

#[no_mangle]
pub extern "C" fn nvmlInit() -> nvmlReturn_t {
    guard("nvmlInit", session::init)
}

#[no_mangle]
pub extern "C" fn nvmlInit_v2() -> nvmlReturn_t {
    guard("nvmlInit_v2", session::init)
}

/// Flags (`NVML_INIT_FLAG_NO_GPUS`, `NVML_INIT_FLAG_NO_ATTACH`) change
/// nothing here: gpupool attaches no GPU locally.
#[no_mangle]
pub extern "C" fn nvmlInitWithFlags(flags: c_uint) -> nvmlReturn_t {
    guard("nvmlInitWithFlags", || {
        tracing::debug!(flags, "nvmlInitWithFlags");
        session::init()
    })
}

#[no_mangle]
pub extern "C" fn nvmlShutdown() -> nvmlReturn_t {
    guard("nvmlShutdown", session::shutdown)
}

#[no_mangle]
pub extern "C" fn nvmlErrorString(result: nvmlReturn_t) -> *const c_char {
    error::description_c(result).as_ptr().cast()
}

// ---- system ---------------------------------------------------------------

/// There is no NVIDIA driver on this machine: the version names gpupool and
/// the CUDA version the session's server offers.
#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetDriverVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlSystemGetDriverVersion", || {
        let b = session::backend()?;
        // The server's driver, as tools parse it (`580.159.04`); a server
        // without one (the software driver) says what it is instead.
        let text = match &b.kernel_driver {
            Some(v) => v.clone(),
            None => format!("gpupool (CUDA {})", cuda_version(b.cuda_version)),
        };
        // SAFETY: the caller gave `length` writable bytes at `version`.
        unsafe { out_string(version, length, &text) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetNVMLVersion(version: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlSystemGetNVMLVersion", || {
        let b = session::backend()?;
        let text = format!("{}.gpupool", cuda_version(b.cuda_version));
        // SAFETY: the caller gave `length` writable bytes at `version`.
        unsafe { out_string(version, length, &text) }
    })
}

unsafe fn cuda_driver_version(version: *mut c_int) -> NvmlResult {
    let b = session::backend()?;
    // SAFETY: `version` is the caller's int pointer, NULL-checked by `out`.
    unsafe { out(version, b.cuda_version) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion(version: *mut c_int) -> nvmlReturn_t {
    // SAFETY: the caller's argument, passed on.
    guard("nvmlSystemGetCudaDriverVersion", || unsafe {
        cuda_driver_version(version)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlSystemGetCudaDriverVersion_v2(version: *mut c_int) -> nvmlReturn_t {
    // SAFETY: the caller's argument, passed on.
    guard("nvmlSystemGetCudaDriverVersion_v2", || unsafe {
        cuda_driver_version(version)
    })
}

/// No S-class units.
#[no_mangle]
pub unsafe extern "C" fn nvmlUnitGetCount(count: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlUnitGetCount", || {
        session::backend()?;
        // SAFETY: `count` is the caller's, NULL-checked by `out`.
        unsafe { out(count, 0) }
    })
}

// ---- finding devices ------------------------------------------------------

unsafe fn device_count(count: *mut c_uint) -> NvmlResult {
    let b = session::backend()?;
    // SAFETY: `count` is the caller's, NULL-checked by `out`.
    unsafe { out(count, b.devices.len() as c_uint) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount(count: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: the caller's argument, passed on.
    guard("nvmlDeviceGetCount", || unsafe { device_count(count) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCount_v2(count: *mut c_uint) -> nvmlReturn_t {
    // SAFETY: the caller's argument, passed on.
    guard("nvmlDeviceGetCount_v2", || unsafe { device_count(count) })
}

unsafe fn handle_by_index(index: c_uint, device: *mut nvmlDevice_t) -> NvmlResult {
    let b = session::backend()?;
    let h = match b.devices.slot(index) {
        Slot::Device(d) => DeviceTable::handle_of(d),
        // A GPU CUDA_VISIBLE_DEVICES keeps from this program.
        Slot::Hidden => return Err(NvmlError::NO_PERMISSION),
        Slot::Beyond => return Err(NvmlError::INVALID_ARGUMENT),
    };
    // SAFETY: `device` is the caller's, NULL-checked by `out`.
    unsafe { out(device, h) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    // SAFETY: the caller's arguments, passed on.
    guard("nvmlDeviceGetHandleByIndex", || unsafe {
        handle_by_index(index, device)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByIndex_v2(index: c_uint, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    // SAFETY: the caller's arguments, passed on.
    guard("nvmlDeviceGetHandleByIndex_v2", || unsafe {
        handle_by_index(index, device)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUID(uuid: *const c_char, device: *mut nvmlDevice_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetHandleByUUID", || {
        let b = session::backend()?;
        // SAFETY: the caller's NUL-terminated string, NULL-checked.
        let text = unsafe { in_string(uuid)? };
        if device.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        let d = b.devices.by_uuid(text).ok_or(NvmlError::NOT_FOUND)?;
        // SAFETY: `device` is the caller's, NULL-checked above.
        unsafe { out(device, DeviceTable::handle_of(d)) }
    })
}

/// `nvmlUUID_v1_t`: a version word, the form (1 text, 2 bytes) and the
/// UUID in that form.
#[repr(C)]
pub struct nvmlUUID_t {
    pub version: c_uint,
    pub kind: c_uint,
    pub value: [u8; 41],
}

/// `nvmlUUID_v1`: the struct's size and version 1 in the top byte.
const UUID_V1: c_uint = std::mem::size_of::<nvmlUUID_t>() as c_uint | (1 << 24);

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByUUIDV(
    uuid: *const nvmlUUID_t,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetHandleByUUIDV", || {
        let b = session::backend()?;
        if uuid.is_null() || device.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        // SAFETY: non-null, and the caller passes an `nvmlUUID_t`, whose
        // version word is read before anything past it.
        let u = unsafe { &*uuid };
        if u.version != UUID_V1 {
            return Err(NvmlError::ARGUMENT_VERSION_MISMATCH);
        }
        let d = match u.kind {
            1 => {
                let text = CStr::from_bytes_until_nul(&u.value).map_err(|_| NvmlError::INVALID_ARGUMENT)?;
                b.devices
                    .by_uuid(text.to_str().map_err(|_| NvmlError::INVALID_ARGUMENT)?)
            }
            2 => b.devices.by_uuid_bytes(&u.value[..16]),
            _ => return Err(NvmlError::INVALID_ARGUMENT),
        }
        .ok_or(NvmlError::NOT_FOUND)?;
        // SAFETY: `device` is the caller's, NULL-checked above.
        unsafe { out(device, DeviceTable::handle_of(d)) }
    })
}

unsafe fn handle_by_pci_bus_id(bus_id: *const c_char, device: *mut nvmlDevice_t) -> NvmlResult {
    let b = session::backend()?;
    // SAFETY: the caller's NUL-terminated string, NULL-checked.
    let text = unsafe { in_string(bus_id)? };
    if device.is_null() {
        return Err(NvmlError::INVALID_ARGUMENT);
    }
    let d = b.devices.by_pci_bus_id(text).ok_or(NvmlError::NOT_FOUND)?;
    // SAFETY: `device` is the caller's, NULL-checked above.
    unsafe { out(device, DeviceTable::handle_of(d)) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId(
    bus_id: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's arguments, passed on.
    guard("nvmlDeviceGetHandleByPciBusId", || unsafe {
        handle_by_pci_bus_id(bus_id, device)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetHandleByPciBusId_v2(
    bus_id: *const c_char,
    device: *mut nvmlDevice_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's arguments, passed on.
    guard("nvmlDeviceGetHandleByPciBusId_v2", || unsafe {
        handle_by_pci_bus_id(bus_id, device)
    })
}

// ---- what a device is -----------------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetIndex(device: nvmlDevice_t, index: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetIndex", || {
        let (_, d) = self::device(device)?;
        // SAFETY: `index` is the caller's, NULL-checked by `out`.
        unsafe { out(index, d.index) }
    })
}

/// `NVML_P2P_CAPS_INDEX_READ` .. `NVML_P2P_CAPS_INDEX_UNKNOWN`.
const P2P_CAPS_INDICES: std::ops::RangeInclusive<c_uint> = 0..=5;
/// `NVML_P2P_CAPS_INDEX_READ`, `_WRITE`, `_NVLINK`, `_ATOMICS`, `_PCI`.
const P2P_CAPS_READ: c_uint = 0;
const P2P_CAPS_WRITE: c_uint = 1;
const P2P_CAPS_NVLINK: c_uint = 2;
const P2P_CAPS_ATOMICS: c_uint = 3;
const P2P_CAPS_PCI: c_uint = 4;
/// `NVML_P2P_STATUS_OK`, `NVML_P2P_STATUS_NOT_SUPPORTED`.
const P2P_STATUS_OK: c_uint = 0;
const P2P_STATUS_NOT_SUPPORTED: c_uint = 5;

/// As the server's driver links the two GPUs (`cuDeviceCanAccessPeer`,
/// through the shim): reads, writes and PCI peer traffic are OK where the
/// first GPU can access the second, atomics where they cross the link
/// natively, NVLink where an NVLink joins them (directly, or both reach
/// NVSwitches); the unknown capability answers
/// `NVML_P2P_STATUS_NOT_SUPPORTED`. A GPU and itself is OK for every
/// capability. NCCL asks it of every pair at start-up and uses peer
/// transport only where reads and writes are OK.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetP2PStatus(
    device1: nvmlDevice_t,
    device2: nvmlDevice_t,
    index: c_uint,
    status: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetP2PStatus", || {
        let (backend, a) = self::device(device1)?;
        let (_, b) = self::device(device2)?;
        if !P2P_CAPS_INDICES.contains(&index) {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        let to_switch = |d: &Device| d.nvlinks.iter().any(|&far| gpu_at(backend, far).is_none());
        let linked = match index {
            _ if a.index == b.index => true,
            P2P_CAPS_READ | P2P_CAPS_WRITE | P2P_CAPS_PCI => a.peers.contains(&b.index),
            P2P_CAPS_ATOMICS => a.peer_atomics.contains(&b.index),
            P2P_CAPS_NVLINK => a.nvlinks.contains(&b.pci) || (to_switch(a) && to_switch(b)),
            _ => false,
        };
        let answer = if linked {
            P2P_STATUS_OK
        } else {
            P2P_STATUS_NOT_SUPPORTED
        };
        // SAFETY: `status` is the caller's, NULL-checked by `out`.
        unsafe { out(status, answer) }
    })
}

/// The device file number has no meaning on a machine without the GPU; the
/// index stands in for it.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMinorNumber(device: nvmlDevice_t, minor: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetMinorNumber", || {
        let (_, d) = self::device(device)?;
        // SAFETY: `minor` is the caller's, NULL-checked by `out`.
        unsafe { out(minor, d.index) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetName(device: nvmlDevice_t, name: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetName", || {
        let (_, d) = self::device(device)?;
        // SAFETY: the caller gave `length` writable bytes at `name`.
        unsafe { out_string(name, length, &d.name) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUUID(device: nvmlDevice_t, uuid: *mut c_char, length: c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetUUID", || {
        let (_, d) = self::device(device)?;
        // SAFETY: the caller gave `length` writable bytes at `uuid`.
        unsafe { out_string(uuid, length, &d.uuid_text) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetBrand(device: nvmlDevice_t, brand: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetBrand", || {
        self::device(device)?;
        // SAFETY: `brand` is the caller's, NULL-checked by `out`.
        unsafe { out(brand, NVML_BRAND_NVIDIA) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetComputeMode(device: nvmlDevice_t, mode: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetComputeMode", || {
        let (_, d) = self::device(device)?;
        let m = d.compute_mode.ok_or(NvmlError::NOT_SUPPORTED)?;
        // SAFETY: `mode` is the caller's, NULL-checked by `out`.
        unsafe { out(mode, m as c_uint) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetCudaComputeCapability(
    device: nvmlDevice_t,
    major: *mut c_int,
    minor: *mut c_int,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetCudaComputeCapability", || {
        let (_, d) = self::device(device)?;
        if major.is_null() || minor.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        // SAFETY: both are the caller's, NULL-checked above.
        unsafe {
            out(major, d.compute_capability.0)?;
            out(minor, d.compute_capability.1)
        }
    })
}

/// `nvmlDeviceArchitecture_t` of a compute capability (major, minor):
/// Kepler 2 to Blackwell 10; `NVML_DEVICE_ARCH_UNKNOWN` otherwise.
fn architecture((major, minor): (i32, i32)) -> c_uint {
    match (major, minor) {
        (3, _) => 2,
        (5, _) => 3,
        (6, _) => 4,
        (7, 0..=4) => 5,
        (7, _) => 6,
        (8, 9) => 8,
        (8, _) => 7,
        (9, _) => 9,
        (10..=12, _) => 10,
        _ => 0xffff_ffff,
    }
}

/// From the compute capability the driver reports.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetArchitecture(device: nvmlDevice_t, arch: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetArchitecture", || {
        let (_, d) = self::device(device)?;
        // SAFETY: `out` checks `arch` for NULL; it is the caller's.
        unsafe { out(arch, architecture(d.compute_capability)) }
    })
}

fn pci_info(d: &Device) -> nvmlPciInfo_t {
    pci_info_at(d.pci, PCI_VENDOR_NVIDIA)
}

/// PCI information of the device at `pci`, with `device_id` as its
/// `pciDeviceId`.
fn pci_info_at(pci: PciAddress, device_id: c_uint) -> nvmlPciInfo_t {
    let mut p = nvmlPciInfo_t {
        busIdLegacy: [0; 16],
        domain: pci.domain,
        bus: pci.bus,
        device: pci.device,
        pciDeviceId: device_id,
        pciSubSystemId: 0,
        busId: [0; 32],
    };
    fill(&mut p.busIdLegacy, &pci.bus_id_legacy());
    fill(&mut p.busId, &pci.bus_id());
    p
}

// ---- NVLink ------------------------------------------------------------------

/// `NVML_NVLINK_MAX_LINKS`.
const NVLINK_MAX_LINKS: c_uint = 18;
/// `nvmlNvLinkCapability_t`: `NVML_NVLINK_CAP_P2P_SUPPORTED` ..
/// `NVML_NVLINK_CAP_VALID`.
const NVLINK_CAP_P2P_SUPPORTED: c_uint = 0;
const NVLINK_CAP_P2P_ATOMICS: c_uint = 2;
const NVLINK_CAP_VALID: c_uint = 5;
/// `nvmlIntNvLinkDeviceType_t`: `NVML_NVLINK_DEVICE_TYPE_GPU`, `_SWITCH`.
const NVLINK_DEVICE_TYPE_GPU: c_uint = 0;
const NVLINK_DEVICE_TYPE_SWITCH: c_uint = 2;

/// NVLink `link` of `device`: the device, and the PCI address at the far
/// end when the link is active. Links are those the server's machine has
/// active (from its NVML, or its configured topology), numbered from 0.
fn nvlink(device: nvmlDevice_t, link: c_uint) -> NvmlResult<(&'static Backend, &'static Device, Option<PciAddress>)> {
    let (b, d) = self::device(device)?;
    if link >= NVLINK_MAX_LINKS {
        return Err(NvmlError::INVALID_ARGUMENT);
    }
    Ok((b, d, d.nvlinks.get(link as usize).copied()))
}

/// The GPU of the machine at `pci`, if the far end of a link is one (else
/// it is an NVSwitch).
fn gpu_at(b: &Backend, pci: PciAddress) -> Option<&Device> {
    b.devices.by_pci_bus_id(&pci.bus_id())
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkState(
    device: nvmlDevice_t,
    link: c_uint,
    active: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetNvLinkState", || {
        let (_, _, far) = nvlink(device, link)?;
        // `NVML_FEATURE_ENABLED` or `_DISABLED`.
        // SAFETY: `active` is the caller's, NULL-checked by `out`.
        unsafe { out(active, far.is_some() as c_uint) }
    })
}

/// The NVLink generation of the device's architecture (Volta 2 .. Blackwell
/// 5), for an active link.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkVersion(
    device: nvmlDevice_t,
    link: c_uint,
    version: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetNvLinkVersion", || {
        let (_, d, far) = nvlink(device, link)?;
        far.ok_or(NvmlError::NOT_SUPPORTED)?;
        let v = nvlink_version(d)?;
        // SAFETY: `version` is the caller's, NULL-checked by `out`.
        unsafe { out(version, v) }
    })
}

/// The NVLink generation of `d`'s architecture.
fn nvlink_version(d: &Device) -> NvmlResult<c_uint> {
    match d.compute_capability.0 {
        6 => Ok(1),
        7 => Ok(2),
        8 => Ok(3),
        9 => Ok(4),
        m if m >= 10 => Ok(5),
        _ => Err(NvmlError::NOT_SUPPORTED),
    }
}

/// An active link carries peer traffic and, where the GPUs at its ends
/// reach each other with native atomics (or through a switch), peer
/// atomics; it reaches no system memory (x86 hosts).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkCapability(
    device: nvmlDevice_t,
    link: c_uint,
    capability: c_uint,
    result: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetNvLinkCapability", || {
        let (b, d, far) = nvlink(device, link)?;
        if capability > NVLINK_CAP_VALID {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        let answer = match (far, capability) {
            (None, _) => false,
            (Some(_), NVLINK_CAP_P2P_SUPPORTED | NVLINK_CAP_VALID) => true,
            (Some(pci), NVLINK_CAP_P2P_ATOMICS) => gpu_at(b, pci).is_none_or(|g| d.peer_atomics.contains(&g.index)),
            (Some(_), _) => false,
        };
        // SAFETY: `result` is the caller's, NULL-checked by `out`.
        unsafe { out(result, answer as c_uint) }
    })
}

/// What is at the far end of an active link: a GPU of the machine (its
/// PCI information) or an NVSwitch (its address).
unsafe fn nvlink_remote_pci(device: nvmlDevice_t, link: c_uint, pci: *mut nvmlPciInfo_t) -> NvmlResult {
    let (b, _, far) = nvlink(device, link)?;
    let far = far.ok_or(NvmlError::NOT_SUPPORTED)?;
    let info = match gpu_at(b, far) {
        Some(g) => pci_info(g),
        None => pci_info_at(far, 0),
    };
    // SAFETY: `pci` is the caller's, NULL-checked by `out`.
    unsafe { out(pci, info) }
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo(
    device: nvmlDevice_t,
    link: c_uint,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's arguments, passed on.
    guard("nvmlDeviceGetNvLinkRemotePciInfo", || unsafe {
        nvlink_remote_pci(device, link, pci)
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemotePciInfo_v2(
    device: nvmlDevice_t,
    link: c_uint,
    pci: *mut nvmlPciInfo_t,
) -> nvmlReturn_t {
    // SAFETY: the caller's arguments, passed on.
    guard("nvmlDeviceGetNvLinkRemotePciInfo_v2", || unsafe {
        nvlink_remote_pci(device, link, pci)
    })
}

/// `nvmlFieldValue_t`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct nvmlFieldValue_t {
    pub fieldId: c_uint,
    pub scopeId: c_uint,
    pub timestamp: i64,
    pub latencyUsec: i64,
    pub valueType: c_uint,
    pub nvmlReturn: nvmlReturn_t,
    /// `nvmlValue_t`, a union of 8 bytes; written as an unsigned int.
    pub value: u64,
}

/// Field ids answered: `NVML_FI_DEV_NVLINK_LINK_COUNT`, and per link
/// (`scopeId`) `NVML_FI_DEV_NVLINK_GET_STATE` and `_GET_VERSION`.
const FI_DEV_NVLINK_LINK_COUNT: c_uint = 91;
const FI_DEV_NVLINK_GET_STATE: c_uint = 165;
const FI_DEV_NVLINK_GET_VERSION: c_uint = 166;
/// `NVML_VALUE_TYPE_UNSIGNED_INT`.
const VALUE_TYPE_UNSIGNED_INT: c_uint = 1;

/// The NVLink fields NCCL reads (on Hopper and later it reads a link's
/// state so): the number of links, and a link's state and version. Every
/// other field answers `NVML_ERROR_NOT_SUPPORTED` in its own `nvmlReturn`.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetFieldValues(
    device: nvmlDevice_t,
    count: i32,
    values: *mut nvmlFieldValue_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetFieldValues", || {
        let (_, d) = self::device(device)?;
        if values.is_null() || count < 0 {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        for i in 0..count as usize {
            // SAFETY: the caller passes `count` entries at `values`.
            let v = unsafe { &mut *values.add(i) };
            let link = d.nvlinks.get(v.scopeId as usize);
            let answer = match v.fieldId {
                FI_DEV_NVLINK_LINK_COUNT => Ok(d.nvlinks.len() as u64),
                FI_DEV_NVLINK_GET_STATE if v.scopeId < NVLINK_MAX_LINKS => Ok(link.is_some() as u64),
                FI_DEV_NVLINK_GET_VERSION if link.is_some() => nvlink_version(d).map(u64::from),
                _ => Err(NvmlError::NOT_SUPPORTED),
            };
            match answer {
                Ok(value) => {
                    v.valueType = VALUE_TYPE_UNSIGNED_INT;
                    v.value = value;
                    v.nvmlReturn = 0; // NVML_SUCCESS
                }
                Err(e) => v.nvmlReturn = e.0,
            }
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetNvLinkRemoteDeviceType(
    device: nvmlDevice_t,
    link: c_uint,
    kind: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetNvLinkRemoteDeviceType", || {
        let (b, _, far) = nvlink(device, link)?;
        let far = far.ok_or(NvmlError::NOT_SUPPORTED)?;
        let t = if gpu_at(b, far).is_some() {
            NVLINK_DEVICE_TYPE_GPU
        } else {
            NVLINK_DEVICE_TYPE_SWITCH
        };
        // SAFETY: `kind` is the caller's, NULL-checked by `out`.
        unsafe { out(kind, t) }
    })
}

unsafe fn device_pci_info(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> NvmlResult {
    let (_, d) = self::device(device)?;
    // SAFETY: `pci` is the caller's, NULL-checked by `out`.
    unsafe { out(pci, pci_info(d)) }
}

/// The original layout: the common fields only (its struct has reserved
/// words where the later ones have `busId`).
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo(device: nvmlDevice_t, pci: *mut nvmlPciInfoCommon_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetPciInfo", || {
        let (_, d) = self::device(device)?;
        let p = pci_info(d);
        let common = nvmlPciInfoCommon_t {
            busId: p.busIdLegacy,
            domain: p.domain,
            bus: p.bus,
            device: p.device,
            pciDeviceId: p.pciDeviceId,
            pciSubSystemId: p.pciSubSystemId,
        };
        // SAFETY: `pci` is the caller's, NULL-checked by `out`.
        unsafe { out(pci, common) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v2(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    // SAFETY: the caller's arguments, passed on.
    guard("nvmlDeviceGetPciInfo_v2", || unsafe { device_pci_info(device, pci) })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPciInfo_v3(device: nvmlDevice_t, pci: *mut nvmlPciInfo_t) -> nvmlReturn_t {
    // SAFETY: the caller's arguments, passed on.
    guard("nvmlDeviceGetPciInfo_v3", || unsafe { device_pci_info(device, pci) })
}

/// The device's maximum clock of a kind, in MHz: what CUDA tells of clocks.
fn clock_mhz(d: &Device, kind: c_uint) -> NvmlResult<c_uint> {
    let khz = match kind {
        NVML_CLOCK_GRAPHICS | NVML_CLOCK_SM => d.clock_khz,
        NVML_CLOCK_MEM => d.memory_clock_khz,
        NVML_CLOCK_VIDEO => None,
        _ => return Err(NvmlError::INVALID_ARGUMENT),
    };
    khz.map(|k| (k / 1000) as c_uint).ok_or(NvmlError::NOT_SUPPORTED)
}

/// Reports the maximum clock: the current one is not known to CUDA.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetClockInfo(
    device: nvmlDevice_t,
    kind: c_uint,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetClockInfo", || {
        let (_, d) = self::device(device)?;
        let mhz = clock_mhz(d, kind)?;
        // SAFETY: `clock` is the caller's, NULL-checked by `out`.
        unsafe { out(clock, mhz) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMaxClockInfo(
    device: nvmlDevice_t,
    kind: c_uint,
    clock: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetMaxClockInfo", || {
        let (_, d) = self::device(device)?;
        let mhz = clock_mhz(d, kind)?;
        // SAFETY: `clock` is the caller's, NULL-checked by `out`.
        unsafe { out(clock, mhz) }
    })
}

// ---- what a device does now -----------------------------------------------

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo(device: nvmlDevice_t, memory: *mut nvmlMemory_t) -> nvmlReturn_t {
    guard("nvmlDeviceGetMemoryInfo", || {
        let (b, d) = self::device(device)?;
        if memory.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        let s = b.status(d)?;
        let m = nvmlMemory_t {
            total: s.total_bytes,
            free: s.free_bytes,
            used: s.used_bytes,
        };
        // SAFETY: `memory` is the caller's, NULL-checked above.
        unsafe { out(memory, m) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetMemoryInfo_v2(
    device: nvmlDevice_t,
    memory: *mut nvmlMemory_v2_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetMemoryInfo_v2", || {
        let (b, d) = self::device(device)?;
        if memory.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        // SAFETY: non-null; the caller passes an nvmlMemory_v2_t whose
        // version word it set.
        let version = unsafe { std::ptr::addr_of!((*memory).version).read_unaligned() };
        if version != NVML_MEMORY_V2 {
            return Err(NvmlError::ARGUMENT_VERSION_MISMATCH);
        }
        let s = b.status(d)?;
        let m = nvmlMemory_v2_t {
            version,
            total: s.total_bytes,
            reserved: 0,
            free: s.free_bytes,
            used: s.used_bytes,
        };
        // SAFETY: `memory` is the caller's, NULL-checked above.
        unsafe { out(memory, m) }
    })
}

/// Not supported when the server has no NVML to read it from.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetUtilizationRates(
    device: nvmlDevice_t,
    utilization: *mut nvmlUtilization_t,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetUtilizationRates", || {
        let (b, d) = self::device(device)?;
        if utilization.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        let s = sensors(b, d)?;
        let u = nvmlUtilization_t {
            gpu: s.gpu_util_percent,
            memory: s.mem_util_percent,
        };
        // SAFETY: `utilization` is the caller's, NULL-checked above.
        unsafe { out(utilization, u) }
    })
}

/// Only the GPU sensor; not supported when the server has no NVML.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetTemperature(
    device: nvmlDevice_t,
    sensor: c_uint,
    temp: *mut c_uint,
) -> nvmlReturn_t {
    guard("nvmlDeviceGetTemperature", || {
        let (b, d) = self::device(device)?;
        if sensor != NVML_TEMPERATURE_GPU || temp.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        let s = sensors(b, d)?;
        // SAFETY: `temp` is the caller's, NULL-checked above.
        unsafe { out(temp, s.temperature_c) }
    })
}

/// Milliwatts; not supported when the server has no NVML.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetPowerUsage(device: nvmlDevice_t, power: *mut c_uint) -> nvmlReturn_t {
    guard("nvmlDeviceGetPowerUsage", || {
        let (b, d) = self::device(device)?;
        if power.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        let s = sensors(b, d)?;
        // SAFETY: `power` is the caller's, NULL-checked above.
        unsafe { out(power, s.power_mw) }
    })
}

/// The program's own work runs on the server, under its process there;
/// no process runs on a device of this machine.
unsafe fn no_processes(device: nvmlDevice_t, count: *mut c_uint) -> NvmlResult {
    self::device(device)?;
    // SAFETY: `count` is the caller's, NULL-checked by `out`.
    unsafe { out(count, 0) }
}

macro_rules! process_queries {
    ($($name:ident),* $(,)?) => {$(
        /// Answers no processes (`*count = 0`); `infos` is not written.
        #[no_mangle]
        pub unsafe extern "C" fn $name(device: nvmlDevice_t, count: *mut c_uint, _infos: *mut c_void) -> nvmlReturn_t {
            // SAFETY: the caller's arguments, passed on.
            guard(stringify!($name), || unsafe { no_processes(device, count) })
        }
    )*};
}

process_queries! {
    nvmlDeviceGetComputeRunningProcesses,
    nvmlDeviceGetComputeRunningProcesses_v2,
    nvmlDeviceGetComputeRunningProcesses_v3,
    nvmlDeviceGetGraphicsRunningProcesses,
    nvmlDeviceGetGraphicsRunningProcesses_v2,
    nvmlDeviceGetGraphicsRunningProcesses_v3,
    nvmlDeviceGetMPSComputeRunningProcesses,
    nvmlDeviceGetMPSComputeRunningProcesses_v2,
    nvmlDeviceGetMPSComputeRunningProcesses_v3,
}

// ---- fabric -------------------------------------------------------------------

/// `nvmlGpuFabricInfo_t`: cluster UUID (16 bytes), status, clique id, state.
const FABRIC_INFO_V1: usize = 28;
/// `nvmlGpuFabricInfo_v2_t`, the smallest versioned form: the version word,
/// then the first form's members and a health mask.
const FABRIC_INFO_V2: usize = 36;

/// `nvmlDeviceGetGpuFabricInfo`: no NVLink fabric reaches the program
/// through gpupool, so the state is `NVML_GPU_FABRIC_STATE_NOT_SUPPORTED`
/// (0), as a GPU outside an NVSwitch fabric answers: every member is zero.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuFabricInfo(device: nvmlDevice_t, info: *mut u8) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuFabricInfo", || {
        self::device(device)?;
        if info.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        // SAFETY: the caller passes an `nvmlGpuFabricInfo_t`.
        unsafe { info.write_bytes(0, FABRIC_INFO_V1) };
        Ok(())
    })
}

/// `nvmlDeviceGetGpuFabricInfoV`: as above, for the versioned structure
/// (version 2 and later, which add members after the first ones; all are
/// zero here). PyTorch asks this at start-up on sm90 devices and warns when
/// it fails.
#[no_mangle]
pub unsafe extern "C" fn nvmlDeviceGetGpuFabricInfoV(device: nvmlDevice_t, info: *mut u8) -> nvmlReturn_t {
    guard("nvmlDeviceGetGpuFabricInfoV", || {
        self::device(device)?;
        if info.is_null() {
            return Err(NvmlError::INVALID_ARGUMENT);
        }
        // SAFETY: the structure begins with its version word.
        let version = unsafe { info.cast::<u32>().read_unaligned() };
        let (size, number) = ((version & 0x00ff_ffff) as usize, version >> 24);
        if number < 2 || !(FABRIC_INFO_V2..=4096).contains(&size) {
            return Err(NvmlError::ARGUMENT_VERSION_MISMATCH);
        }
        // SAFETY: the version says the caller's structure has `size` bytes.
        unsafe { info.add(4).write_bytes(0, size - 4) };
        Ok(())
    })
}

// ---- what gpupool cannot answer ---------------------------------------------

/// A known NVML entry point gpupool does not answer.
fn not_supported(name: &'static str) -> nvmlReturn_t {
    if !session::initialised() {
        return NvmlError::UNINITIALIZED.0;
    }
    tracing::debug!(
        call = name,
        "gpupool NVML does not answer {name}; returning NVML_ERROR_NOT_SUPPORTED"
    );
    NvmlError::NOT_SUPPORTED.0
}

macro_rules! not_supported {
    ($($name:ident),* $(,)?) => {
        $(
            /// Not answered by gpupool: `NVML_ERROR_NOT_SUPPORTED` (after
            /// `nvmlInit`; `NVML_ERROR_UNINITIALIZED` before). Declared without
            /// parameters: under the C calling convention the caller's
            /// arguments are simply not read.
            #[no_mangle]
            pub extern "C" fn $name() -> nvmlReturn_t {
                not_supported(stringify!($name))
            }
        )*
        /// The entry points exported as `NVML_ERROR_NOT_SUPPORTED` stubs.
        pub const NOT_SUPPORTED: &[&str] = &[$(stringify!($name)),*];
    };
}

not_supported! {
    // NVLink error counters of a device on another machine.
    nvmlDeviceGetNvLinkErrorCounter,
    // Topology and affinity of a device on another machine.
    nvmlDeviceGetTopologyCommonAncestor,
    nvmlDeviceGetTopologyNearestGpus,
    nvmlSystemGetTopologyGpuSet,
    nvmlDeviceGetCpuAffinity,
    nvmlDeviceGetCpuAffinityWithinScope,
    nvmlDeviceGetMemoryAffinity,
    nvmlDeviceGetNumaNodeId,
    // Board, firmware and identity details CUDA does not tell.
    nvmlDeviceGetSerial,
    nvmlDeviceGetBoardId,
    nvmlDeviceGetBoardPartNumber,
    nvmlDeviceGetMultiGpuBoard,
    nvmlDeviceGetVbiosVersion,
    nvmlDeviceGetInforomVersion,
    nvmlDeviceGetInforomImageVersion,
    nvmlDeviceGetAttributes,
    nvmlDeviceGetAttributes_v2,
    nvmlDeviceGetModuleId,
    nvmlDeviceGetNumGpuCores,
    nvmlDeviceGetMemoryBusWidth,
    nvmlDeviceGetBusType,
    nvmlDeviceGetHandleBySerial,
    nvmlDeviceGetGspFirmwareMode,
    nvmlDeviceGetGspFirmwareVersion,
    nvmlDeviceGetVirtualizationMode,
    nvmlDeviceGetHostVgpuMode,
    nvmlDeviceGetDisplayMode,
    nvmlDeviceGetDisplayActive,
    nvmlDeviceGetPersistenceMode,
    nvmlDeviceGetDriverModel,
    nvmlDeviceGetDriverModel_v2,
    // PCIe link.
    nvmlDeviceGetCurrPcieLinkGeneration,
    nvmlDeviceGetCurrPcieLinkWidth,
    nvmlDeviceGetMaxPcieLinkGeneration,
    nvmlDeviceGetMaxPcieLinkWidth,
    nvmlDeviceGetGpuMaxPcieLinkGeneration,
    nvmlDeviceGetPcieSpeed,
    nvmlDeviceGetPcieLinkMaxSpeed,
    nvmlDeviceGetPcieThroughput,
    nvmlDeviceGetPcieReplayCounter,
    nvmlDeviceGetPciInfoExt,
    // Power, thermal and clock policy.
    nvmlDeviceGetFanSpeed,
    nvmlDeviceGetFanSpeed_v2,
    nvmlDeviceGetNumFans,
    nvmlDeviceGetTemperatureThreshold,
    nvmlDeviceGetTemperatureV,
    nvmlDeviceGetThermalSettings,
    nvmlDeviceGetPowerState,
    nvmlDeviceGetPerformanceState,
    nvmlDeviceGetPowerManagementMode,
    nvmlDeviceGetPowerManagementLimit,
    nvmlDeviceGetPowerManagementLimitConstraints,
    nvmlDeviceGetPowerManagementDefaultLimit,
    nvmlDeviceGetEnforcedPowerLimit,
    nvmlDeviceGetTotalEnergyConsumption,
    nvmlDeviceGetPowerSource,
    nvmlDeviceGetClock,
    nvmlDeviceGetApplicationsClock,
    nvmlDeviceGetDefaultApplicationsClock,
    nvmlDeviceGetMaxCustomerBoostClock,
    nvmlDeviceGetSupportedMemoryClocks,
    nvmlDeviceGetSupportedGraphicsClocks,
    nvmlDeviceGetCurrentClocksThrottleReasons,
    nvmlDeviceGetCurrentClocksEventReasons,
    nvmlDeviceGetSupportedClocksThrottleReasons,
    nvmlDeviceGetSupportedClocksEventReasons,
    nvmlDeviceGetAutoBoostedClocksEnabled,
    nvmlDeviceGetClkMonStatus,
    nvmlDeviceGetViolationStatus,
    nvmlDeviceGetDynamicPstatesInfo,
    nvmlDeviceGetAdaptiveClockInfoStatus,
    // Memory health and BAR1.
    nvmlDeviceGetEccMode,
    nvmlDeviceGetDefaultEccMode,
    nvmlDeviceGetTotalEccErrors,
    nvmlDeviceGetDetailedEccErrors,
    nvmlDeviceGetMemoryErrorCounter,
    nvmlDeviceGetRetiredPages,
    nvmlDeviceGetRetiredPages_v2,
    nvmlDeviceGetRetiredPagesPendingStatus,
    nvmlDeviceGetRemappedRows,
    nvmlDeviceGetRowRemapperHistogram,
    nvmlDeviceGetBAR1MemoryInfo,
    nvmlDeviceGetConfComputeMemSizeInfo,
    nvmlSystemGetConfComputeState,
    // Sampling, encoder/decoder, accounting and events.
    nvmlDeviceGetSamples,
    nvmlDeviceGetProcessUtilization,
    nvmlDeviceGetProcessesUtilizationInfo,
    nvmlDeviceGetEncoderUtilization,
    nvmlDeviceGetDecoderUtilization,
    nvmlDeviceGetJpgUtilization,
    nvmlDeviceGetOfaUtilization,
    nvmlDeviceGetEncoderCapacity,
    nvmlDeviceGetEncoderStats,
    nvmlDeviceGetEncoderSessions,
    nvmlDeviceGetFBCStats,
    nvmlDeviceGetFBCSessions,
    nvmlDeviceGetAccountingMode,
    nvmlDeviceGetAccountingStats,
    nvmlDeviceGetAccountingPids,
    nvmlDeviceGetAccountingBufferSize,
    nvmlDeviceGetSupportedEventTypes,
    nvmlDeviceRegisterEvents,
    nvmlEventSetCreate,
    nvmlEventSetWait,
    nvmlEventSetWait_v2,
    nvmlEventSetFree,
    nvmlSystemGetProcessName,
    nvmlSystemGetHicVersion,
    // MIG and vGPU.
    nvmlDeviceGetMigMode,
    nvmlDeviceGetMaxMigDeviceCount,
    nvmlDeviceGetMigDeviceHandleByIndex,
    nvmlDeviceGetDeviceHandleFromMigDeviceHandle,
    nvmlDeviceIsMigDeviceHandle,
    nvmlDeviceGetGpuInstanceId,
    nvmlDeviceGetComputeInstanceId,
    nvmlDeviceGetGpuInstances,
    nvmlDeviceGetGpuInstanceProfileInfo,
    nvmlDeviceGetGpuInstanceProfileInfoV,
    nvmlDeviceGetActiveVgpus,
    nvmlDeviceGetSupportedVgpus,
    nvmlDeviceGetCreatableVgpus,
    nvmlDeviceGetGridLicensableFeatures,
    nvmlDeviceGetGridLicensableFeatures_v4,
    // Settings: a client does not change the server's GPU.
    nvmlDeviceSetPersistenceMode,
    nvmlDeviceSetComputeMode,
    nvmlDeviceSetEccMode,
    nvmlDeviceClearEccErrorCounts,
    nvmlDeviceSetPowerManagementLimit,
    nvmlDeviceSetApplicationsClocks,
    nvmlDeviceResetApplicationsClocks,
    nvmlDeviceSetGpuLockedClocks,
    nvmlDeviceResetGpuLockedClocks,
    nvmlDeviceSetMemoryLockedClocks,
    nvmlDeviceResetMemoryLockedClocks,
    nvmlDeviceSetAccountingMode,
    nvmlDeviceClearAccountingPids,
    nvmlDeviceSetMigMode,
    nvmlDeviceSetAutoBoostedClocksEnabled,
    nvmlDeviceSetDefaultAutoBoostedClocksEnabled,
    // MIG instances: a gpupool GPU is lent whole, or as a slice gpupool enforces itself.
    nvmlComputeInstanceDestroy,
    nvmlComputeInstanceGetInfo,
    nvmlComputeInstanceGetInfo_v2,
    nvmlDeviceCreateGpuInstance,
    nvmlDeviceCreateGpuInstanceWithPlacement,
    nvmlDeviceGetGpuInstanceById,
    nvmlDeviceGetGpuInstancePossiblePlacements,
    nvmlDeviceGetGpuInstancePossiblePlacements_v2,
    nvmlDeviceGetGpuInstanceProfileInfoByIdV,
    nvmlDeviceGetGpuInstanceRemainingCapacity,
    nvmlGpuInstanceCreateComputeInstance,
    nvmlGpuInstanceCreateComputeInstanceWithPlacement,
    nvmlGpuInstanceDestroy,
    nvmlGpuInstanceGetComputeInstanceById,
    nvmlGpuInstanceGetComputeInstancePossiblePlacements,
    nvmlGpuInstanceGetComputeInstanceProfileInfo,
    nvmlGpuInstanceGetComputeInstanceProfileInfoV,
    nvmlGpuInstanceGetComputeInstanceRemainingCapacity,
    nvmlGpuInstanceGetComputeInstances,
    nvmlGpuInstanceGetInfo,
    // vGPU.
    nvmlDeviceGetVgpuSchedulerLog,
    nvmlDeviceGetVgpuSchedulerState,
    nvmlDeviceSetVgpuSchedulerState,
    nvmlGpuInstanceGetVgpuSchedulerLog,
    nvmlGpuInstanceGetVgpuSchedulerState,
    nvmlGpuInstanceSetVgpuSchedulerState,
    nvmlVgpuInstanceGetLicenseStatus,
    nvmlDeviceGetGridLicensableFeatures_v2,
    nvmlDeviceGetGridLicensableFeatures_v3,
    nvmlDeviceGetPgpuMetadataString,
    nvmlDeviceGetVgpuCapabilities,
    nvmlDeviceGetVgpuHeterogeneousMode,
    nvmlDeviceGetVgpuInstancesUtilizationInfo,
    nvmlDeviceGetVgpuMetadata,
    nvmlDeviceGetVgpuProcessUtilization,
    nvmlDeviceGetVgpuProcessesUtilizationInfo,
    nvmlDeviceGetVgpuSchedulerCapabilities,
    nvmlDeviceGetVgpuSchedulerLog_v2,
    nvmlDeviceGetVgpuSchedulerState_v2,
    nvmlDeviceGetVgpuTypeCreatablePlacements,
    nvmlDeviceGetVgpuTypeSupportedPlacements,
    nvmlDeviceGetVgpuUtilization,
    nvmlDeviceSetVgpuCapabilities,
    nvmlDeviceSetVgpuHeterogeneousMode,
    nvmlDeviceSetVgpuSchedulerState_v2,
    nvmlDeviceVgpuForceGspUnload,
    nvmlGetVgpuCompatibility,
    nvmlGetVgpuDriverCapabilities,
    nvmlGetVgpuVersion,
    nvmlGpuInstanceGetActiveVgpus,
    nvmlGpuInstanceGetCreatableVgpus,
    nvmlGpuInstanceGetVgpuHeterogeneousMode,
    nvmlGpuInstanceGetVgpuSchedulerLog_v2,
    nvmlGpuInstanceGetVgpuSchedulerState_v2,
    nvmlGpuInstanceGetVgpuTypeCreatablePlacements,
    nvmlGpuInstanceSetVgpuHeterogeneousMode,
    nvmlGpuInstanceSetVgpuSchedulerState_v2,
    nvmlSetVgpuVersion,
    nvmlVgpuInstanceClearAccountingPids,
    nvmlVgpuInstanceGetAccountingMode,
    nvmlVgpuInstanceGetAccountingPids,
    nvmlVgpuInstanceGetAccountingStats,
    nvmlVgpuInstanceGetEccMode,
    nvmlVgpuInstanceGetEncoderCapacity,
    nvmlVgpuInstanceGetEncoderSessions,
    nvmlVgpuInstanceGetEncoderStats,
    nvmlVgpuInstanceGetFBCSessions,
    nvmlVgpuInstanceGetFBCStats,
    nvmlVgpuInstanceGetFbUsage,
    nvmlVgpuInstanceGetFrameRateLimit,
    nvmlVgpuInstanceGetGpuInstanceId,
    nvmlVgpuInstanceGetGpuPciId,
    nvmlVgpuInstanceGetLicenseInfo,
    nvmlVgpuInstanceGetLicenseInfo_v2,
    nvmlVgpuInstanceGetMdevUUID,
    nvmlVgpuInstanceGetMetadata,
    nvmlVgpuInstanceGetPlacementId,
    nvmlVgpuInstanceGetRuntimeStateSize,
    nvmlVgpuInstanceGetType,
    nvmlVgpuInstanceGetUUID,
    nvmlVgpuInstanceGetVmDriverVersion,
    nvmlVgpuInstanceGetVmID,
    nvmlVgpuInstanceSetEncoderCapacity,
    nvmlVgpuTypeGetBAR1Info,
    nvmlVgpuTypeGetCapabilities,
    nvmlVgpuTypeGetClass,
    nvmlVgpuTypeGetDeviceID,
    nvmlVgpuTypeGetFbReservation,
    nvmlVgpuTypeGetFrameRateLimit,
    nvmlVgpuTypeGetFramebufferSize,
    nvmlVgpuTypeGetGpuInstanceProfileId,
    nvmlVgpuTypeGetGspHeapSize,
    nvmlVgpuTypeGetLicense,
    nvmlVgpuTypeGetMaxInstances,
    nvmlVgpuTypeGetMaxInstancesPerGpuInstance,
    nvmlVgpuTypeGetMaxInstancesPerVm,
    nvmlVgpuTypeGetName,
    nvmlVgpuTypeGetNumDisplayHeads,
    nvmlVgpuTypeGetResolution,
    // GPU performance monitoring (GPM) samples.
    nvmlGpmMetricsGet,
    nvmlGpmMigSampleGet,
    nvmlGpmQueryDeviceSupport,
    nvmlGpmQueryIfStreamingEnabled,
    nvmlGpmSampleAlloc,
    nvmlGpmSampleFree,
    nvmlGpmSampleGet,
    nvmlGpmSetStreamingEnabled,
    // Confidential computing.
    nvmlDeviceGetConfComputeGpuAttestationReport,
    nvmlDeviceGetConfComputeGpuCertificate,
    nvmlDeviceGetConfComputeProtectedMemoryUsage,
    nvmlDeviceSetConfComputeUnprotectedMemSize,
    nvmlSystemGetConfComputeCapabilities,
    nvmlSystemGetConfComputeGpusReadyState,
    nvmlSystemGetConfComputeKeyRotationThresholdInfo,
    nvmlSystemGetConfComputeSettings,
    nvmlSystemSetConfComputeGpusReadyState,
    nvmlSystemSetConfComputeKeyRotationThresholdInfo,
    // S-class units.
    nvmlUnitGetDevices,
    nvmlUnitGetFanSpeedInfo,
    nvmlUnitGetHandleByIndex,
    nvmlUnitGetLedState,
    nvmlUnitGetPsuInfo,
    nvmlUnitGetTemperature,
    nvmlUnitGetUnitInfo,
    nvmlUnitSetLedState,
    // Events, system-wide and of GPU operation.
    nvmlEventSetGetContextCount_v1,
    nvmlEventSetGetContextData_v1,
    nvmlEventSetGetContextInfo_v1,
    nvmlEventSetGetGpuOperationalEventContextLegacyXid_v1,
    nvmlEventSetRegisterGpuOperationalEvents_v1,
    nvmlEventSetWait_v3,
    nvmlSystemEventSetCreate,
    nvmlSystemEventSetFree,
    nvmlSystemEventSetWait,
    nvmlSystemRegisterEvents,
    // Settings and administration: a client does not change, reset or remove the server's GPU.
    nvmlDeviceSetGpcClkVfOffset,
    nvmlDeviceSetMemClkVfOffset,
    nvmlDeviceSetNvLinkUtilizationControl,
    nvmlDeviceWorkloadPowerProfileClearRequestedProfiles,
    nvmlDeviceWorkloadPowerProfileSetRequestedProfiles,
    nvmlDeviceClearCpuAffinity,
    nvmlDeviceClearFieldValues,
    nvmlDeviceDiscoverGpus,
    nvmlDeviceModifyDrainState,
    nvmlDevicePowerSmoothingActivatePresetProfile,
    nvmlDevicePowerSmoothingSetState,
    nvmlDevicePowerSmoothingUpdatePresetProfileParam,
    nvmlDeviceReadWritePRM_v1,
    nvmlDeviceRemoveGpu,
    nvmlDeviceRemoveGpu_v2,
    nvmlDeviceResetNvLinkErrorCounters,
    nvmlDeviceSetAPIRestriction,
    nvmlDeviceSetAdaptiveTgpMode_v1,
    nvmlDeviceSetClockOffsets,
    nvmlDeviceSetCpuAffinity,
    nvmlDeviceSetDefaultFanSpeed_v2,
    nvmlDeviceSetDramEncryptionMode,
    nvmlDeviceSetDriverModel,
    nvmlDeviceSetFanControlPolicy,
    nvmlDeviceSetFanSpeed_v2,
    nvmlDeviceSetGpuOperationMode,
    nvmlDeviceSetHostname_v1,
    nvmlDeviceSetMemoryLimits_v1,
    nvmlDeviceSetNvLinkDeviceLowPowerThreshold,
    nvmlDeviceSetNvlinkBwMode,
    nvmlDeviceSetNvlinkBwModeAsync_v1,
    nvmlDeviceSetPowerManagementLimit_v2,
    nvmlDeviceSetPowerMizerMode_v1,
    nvmlDeviceSetRusdSettings_v1,
    nvmlDeviceSetTemperatureThreshold,
    nvmlDeviceSetVirtualizationMode,
    nvmlDeviceValidateInforom,
    nvmlDeviceWorkloadPowerProfileUpdateProfiles_v1,
    nvmlSystemSetNvlinkBwMode,
    // Further board, clock, power, memory, NVLink and process details.
    nvmlDeviceGetNvLinkUtilizationControl,
    nvmlDeviceGetNvLinkUtilizationCounter,
    nvmlDeviceGetAPIRestriction,
    nvmlDeviceGetAccountingStats_v2,
    nvmlDeviceGetAdaptiveTgpModeInfo_v1,
    nvmlDeviceGetAddressingMode,
    nvmlDeviceGetBBXTimeData_v1,
    nvmlDeviceGetBankRemapperStatus_v1,
    nvmlDeviceGetBridgeChipInfo,
    nvmlDeviceGetC2cModeInfoV,
    nvmlDeviceGetCapabilities,
    nvmlDeviceGetClockOffsets,
    nvmlDeviceGetCoolerInfo,
    nvmlDeviceGetCurrentClockFreqs,
    nvmlDeviceGetDramEncryptionMode,
    nvmlDeviceGetFanControlPolicy_v2,
    nvmlDeviceGetFanSpeedRPM,
    nvmlDeviceGetGpcClkMinMaxVfOffset,
    nvmlDeviceGetGpcClkVfOffset,
    nvmlDeviceGetGpuFabricInfo_v4,
    nvmlDeviceGetGpuOperationMode,
    nvmlDeviceGetHostname_v1,
    nvmlDeviceGetInforomConfigurationChecksum,
    nvmlDeviceGetIrqNum,
    nvmlDeviceGetLastBBXFlushTime,
    nvmlDeviceGetMarginTemperature,
    nvmlDeviceGetMemClkMinMaxVfOffset,
    nvmlDeviceGetMemClkVfOffset,
    nvmlDeviceGetMemoryLimits_v1,
    nvmlDeviceGetMinMaxClockOfPState,
    nvmlDeviceGetMinMaxFanSpeed,
    nvmlDeviceGetNvLinkInfo,
    nvmlDeviceGetNvLinkTelemetrySamples_v1,
    nvmlDeviceGetNvlinkBwMode,
    nvmlDeviceGetNvlinkSupportedBwModes,
    nvmlDeviceGetPdi,
    nvmlDeviceGetPerformanceModes,
    nvmlDeviceGetPlatformInfo,
    nvmlDeviceGetPowerMizerMode_v1,
    nvmlDeviceGetRemappedRows_v2,
    nvmlDeviceGetRepairStatus,
    nvmlDeviceGetRunningProcessDetailList,
    nvmlDeviceGetSramEccErrorStatus,
    nvmlDeviceGetSramUniqueUncorrectedEccErrorCounts,
    nvmlDeviceGetSupportedPerformanceStates,
    nvmlDeviceGetTargetFanSpeed,
    nvmlDeviceGetUnrepairableMemoryFlag_v1,
    nvmlDeviceOnSameBoard,
    nvmlDevicePerfMetricsGetSamples_v1,
    nvmlDeviceQueryDrainState,
    nvmlDeviceReadPRMCounters_v1,
    nvmlDeviceWorkloadPowerProfileGetCurrentProfiles,
    nvmlDeviceWorkloadPowerProfileGetProfilesInfo,
    nvmlGetExcludedDeviceCount,
    nvmlGetExcludedDeviceInfoByIndex,
    nvmlSystemGetCPER_v1,
    nvmlSystemGetDriverBranch,
    nvmlSystemGetNvlinkBwMode,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn struct_layouts_are_nvmls() {
        assert_eq!(std::mem::size_of::<nvmlPciInfo_t>(), 68);
        assert_eq!(std::mem::offset_of!(nvmlPciInfo_t, busId), 36);
        assert_eq!(std::mem::size_of::<nvmlPciInfoCommon_t>(), 36);
        assert_eq!(std::mem::size_of::<nvmlMemory_t>(), 24);
        assert_eq!(std::mem::size_of::<nvmlMemory_v2_t>(), 40);
        assert_eq!(NVML_MEMORY_V2, 0x0200_0028);
        assert_eq!(std::mem::size_of::<nvmlUtilization_t>(), 8);
    }

    #[test]
    fn strings_respect_the_buffer() {
        let mut buf = [0x55 as c_char; 8];
        // SAFETY: buf has the 8 writable bytes passed.
        unsafe {
            assert_eq!(
                out_string(buf.as_mut_ptr(), 8, "abcdefgh"),
                Err(NvmlError::INSUFFICIENT_SIZE)
            );
            assert_eq!(buf[0], 0x55, "nothing written on failure");
            assert_eq!(out_string(buf.as_mut_ptr(), 8, "abcdefg"), Ok(()));
            assert_eq!(CStr::from_ptr(buf.as_ptr()).to_str(), Ok("abcdefg"));
            assert_eq!(
                out_string(std::ptr::null_mut(), 8, "a"),
                Err(NvmlError::INVALID_ARGUMENT)
            );
        }
        let mut fixed = [0x55 as c_char; 4];
        fill(&mut fixed, "abcdef");
        assert_eq!(fixed, [b'a' as c_char, b'b' as c_char, b'c' as c_char, 0]);
    }

    #[test]
    fn pci_info_is_filled() {
        let d = Device::new(
            0,
            "x".into(),
            [0; 16],
            0,
            crate::format::PciAddress {
                domain: 0,
                bus: 0x41,
                device: 0,
            },
        );
        let p = pci_info(&d);
        // SAFETY: `fill` NUL-terminates both arrays.
        let (id, legacy) = unsafe { (CStr::from_ptr(p.busId.as_ptr()), CStr::from_ptr(p.busIdLegacy.as_ptr())) };
        assert_eq!(id.to_str(), Ok("00000000:41:00.0"));
        assert_eq!(legacy.to_str(), Ok("0000:41:00.0"));
        assert_eq!((p.bus, p.pciDeviceId & 0xffff), (0x41, 0x10de));
    }

    #[test]
    fn uninitialised_calls_and_error_strings() {
        // No test in this crate initialises NVML (there is no gpupool shim
        // to load here), so every device call is refused as uninitialised.
        let mut n: c_uint = 7;
        // SAFETY: valid pointers, or NULL where NULL is tested.
        unsafe {
            assert_eq!(nvmlDeviceGetCount_v2(&mut n), NvmlError::UNINITIALIZED.0);
            assert_eq!(n, 7);
            let mut h: nvmlDevice_t = std::ptr::null_mut();
            assert_eq!(nvmlDeviceGetHandleByIndex_v2(0, &mut h), NvmlError::UNINITIALIZED.0);
            assert_eq!(nvmlShutdown(), NvmlError::UNINITIALIZED.0);
            assert_eq!(nvmlDeviceGetNvLinkErrorCounter(), NvmlError::UNINITIALIZED.0);
            assert_eq!(CStr::from_ptr(nvmlErrorString(7)).to_str(), Ok("Insufficient Size"));
            assert_eq!(CStr::from_ptr(nvmlErrorString(4242)).to_str(), Ok("Unknown Error"));
        }
        assert!(NOT_SUPPORTED.contains(&"nvmlDeviceGetNvLinkErrorCounter"));
    }
}
