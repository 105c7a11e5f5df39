//! The boundary to `libcuda.so.1`: loaded with libloading, which where
//! gpupool is used finds gpupool's client shim, the same library (and so the
//! same session) the program's own CUDA calls use. Standard driver entry
//! points describe the devices; gpupool's extension `gpupoolDeviceStatus`
//! gives what changes (memory in use, utilisation, temperature, power), and
//! its presence is how this library knows the driver is gpupool's.

use crate::devices::Device;
use crate::format::PciAddress;
use gpupool_proto::ext::MachineGpuRecord;
use std::ffi::{c_char, CStr};
use thiserror::Error;

/// A CUDA driver status.
pub type CuResult = u32;

/// The name the loader finds the driver (gpupool's shim) under.
pub const LIBRARY: &str = "libcuda.so.1";

/// `GpupoolDeviceStatus`, as the client shim defines it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeviceStatus {
    pub total_bytes: u64,
    pub free_bytes: u64,
    pub used_bytes: u64,
    pub gpu_util_percent: u32,
    pub mem_util_percent: u32,
    pub temperature_c: u32,
    pub power_mw: u32,
    pub flags: u32,
}

/// `DeviceStatus.flags`: simulated device.
pub const STATUS_SIMULATED: u32 = 1 << 0;
/// `DeviceStatus.flags`: the server has no NVML; utilisation, temperature
/// and power are unknown.
pub const STATUS_NO_SERVER_NVML: u32 = 1 << 1;

/// Why the driver could not be used.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot load {LIBRARY}: {0}")]
    NotFound(libloading::Error),
    #[error(
        "the {LIBRARY} the loader found is not gpupool's client shim (it has no gpupoolDeviceStatus); \
         this libnvidia-ml.so.1 answers only for gpupool GPUs: put gpupool's libcuda.so.1 first on \
         LD_LIBRARY_PATH, or take this libnvidia-ml.so.1 off it to use the real NVML"
    )]
    NotGpupool,
    #[error("{LIBRARY} lacks {0}: {1}")]
    MissingSymbol(&'static str, libloading::Error),
}

type InitFn = unsafe extern "C" fn(u32) -> CuResult;
type IntOutFn = unsafe extern "C" fn(*mut i32) -> CuResult;
type DeviceGetFn = unsafe extern "C" fn(*mut i32, i32) -> CuResult;
type NameFn = unsafe extern "C" fn(*mut c_char, i32, i32) -> CuResult;
type UuidFn = unsafe extern "C" fn(*mut u8, i32) -> CuResult;
type TotalMemFn = unsafe extern "C" fn(*mut usize, i32) -> CuResult;
type AttributeFn = unsafe extern "C" fn(*mut i32, i32, i32) -> CuResult;
type StatusFn = unsafe extern "C" fn(i32, *mut DeviceStatus) -> CuResult;
type KernelDriverFn = unsafe extern "C" fn(*mut std::ffi::c_char, u32) -> CuResult;
type CanAccessPeerFn = unsafe extern "C" fn(*mut i32, i32, i32) -> CuResult;
type MachineFn = unsafe extern "C" fn(*mut MachineGpuRecord, u32, *mut u32) -> CuResult;

/// The most GPUs of a machine read.
const MAX_MACHINE_GPUS: usize = 64;
type P2PAttributeFn = unsafe extern "C" fn(*mut i32, i32, i32, i32) -> CuResult;

/// `CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED`.
const P2P_NATIVE_ATOMIC: i32 = 3;

/// `CUdevice_attribute` numbers NVML's answers come from.
const ATTRIBUTE_CLOCK_RATE: i32 = 13;
const ATTRIBUTE_COMPUTE_MODE: i32 = 20;
const ATTRIBUTE_PCI_BUS_ID: i32 = 33;
const ATTRIBUTE_PCI_DEVICE_ID: i32 = 34;
const ATTRIBUTE_MEMORY_CLOCK_RATE: i32 = 36;
const ATTRIBUTE_PCI_DOMAIN_ID: i32 = 50;
const ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR: i32 = 75;
const ATTRIBUTE_COMPUTE_CAPABILITY_MINOR: i32 = 76;

/// The loaded driver's entry points.
pub struct Cuda {
    init: InitFn,
    driver_get_version: IntOutFn,
    device_get_count: IntOutFn,
    device_get: DeviceGetFn,
    device_get_name: NameFn,
    device_get_uuid: UuidFn,
    device_total_mem: TotalMemFn,
    device_get_attribute: AttributeFn,
    device_can_access_peer: CanAccessPeerFn,
    device_get_p2p_attribute: P2PAttributeFn,
    device_status: StatusFn,
    /// `gpupoolKernelDriverVersion`, in shims that have it.
    kernel_driver: Option<KernelDriverFn>,
    /// `gpupoolMachineGpus`, in shims that have it.
    machine: Option<MachineFn>,
    // Keeps the function pointers above valid.
    _library: libloading::Library,
}

fn check(status: CuResult) -> Result<(), CuResult> {
    match status {
        0 => Ok(()),
        s => Err(s),
    }
}

impl Cuda {
    /// Load `libcuda.so.1` and check that it is gpupool's.
    pub fn load() -> Result<Cuda, LoadError> {
        // SAFETY: loading the driver runs its initialisers, which is what
        // loading libcuda is for; where the program already loaded it, this
        // returns the same library.
        let library = unsafe { libloading::Library::new(LIBRARY) }.map_err(LoadError::NotFound)?;
        // SAFETY: gpupoolDeviceStatus has the StatusFn signature in every
        // gpupool shim that exports it.
        let device_status = match unsafe { library.get::<StatusFn>(b"gpupoolDeviceStatus\0") } {
            Ok(f) => *f,
            Err(_) => return Err(LoadError::NotGpupool),
        };
        macro_rules! entry {
            ($name:literal, $ty:ty) => {{
                // SAFETY: the symbol has this C signature in the CUDA driver
                // API, which gpupool's shim implements.
                let f = unsafe { library.get::<$ty>(concat!($name, "\0").as_bytes()) }
                    .map_err(|e| LoadError::MissingSymbol($name, e))?;
                *f
            }};
        }
        // SAFETY: gpupoolKernelDriverVersion has the KernelDriverFn
        // signature in every gpupool shim that exports it.
        let kernel_driver = unsafe { library.get::<KernelDriverFn>(b"gpupoolKernelDriverVersion\0") }
            .ok()
            .map(|f| *f);
        // SAFETY: gpupoolMachineGpus has the MachineFn signature in every
        // gpupool shim that exports it.
        let machine = unsafe { library.get::<MachineFn>(b"gpupoolMachineGpus\0") }
            .ok()
            .map(|f| *f);
        Ok(Cuda {
            kernel_driver,
            machine,
            init: entry!("cuInit", InitFn),
            driver_get_version: entry!("cuDriverGetVersion", IntOutFn),
            device_get_count: entry!("cuDeviceGetCount", IntOutFn),
            device_get: entry!("cuDeviceGet", DeviceGetFn),
            device_get_name: entry!("cuDeviceGetName", NameFn),
            device_get_uuid: entry!("cuDeviceGetUuid_v2", UuidFn),
            device_total_mem: entry!("cuDeviceTotalMem_v2", TotalMemFn),
            device_get_attribute: entry!("cuDeviceGetAttribute", AttributeFn),
            device_can_access_peer: entry!("cuDeviceCanAccessPeer", CanAccessPeerFn),
            device_get_p2p_attribute: entry!("cuDeviceGetP2PAttribute", P2PAttributeFn),
            device_status,
            _library: library,
        })
    }

    /// `cuInit(0)`: connects the shim to its server if the program has not.
    pub fn init(&self) -> Result<(), CuResult> {
        // SAFETY: cuInit takes a flags word.
        check(unsafe { (self.init)(0) })
    }

    /// The server's NVIDIA kernel driver version, when it has one.
    pub fn kernel_driver_version(&self) -> Option<String> {
        let f = self.kernel_driver?;
        let mut buf = [0 as std::ffi::c_char; 96];
        // SAFETY: buf has the 96 bytes the call is told of.
        check(unsafe { f(buf.as_mut_ptr(), buf.len() as u32) }).ok()?;
        // SAFETY: on success the shim wrote a NUL-terminated string there.
        let text = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
        text.to_str().ok().map(str::to_string)
    }

    /// The GPUs of the server's machine NVML describes, in NVML's order
    /// (their peers as indices in that order), when the shim tells them.
    pub fn machine(&self) -> Option<Vec<Device>> {
        let f = self.machine?;
        let mut buf = vec![MachineGpuRecord::EMPTY; MAX_MACHINE_GPUS];
        let mut count = 0u32;
        // SAFETY: buf holds the MAX_MACHINE_GPUS entries the call is told of.
        check(unsafe { f(buf.as_mut_ptr(), buf.len() as u32, &mut count) }).ok()?;
        let gpus = buf
            .iter()
            .take((count as usize).min(MAX_MACHINE_GPUS))
            .enumerate()
            .map(|(i, g)| {
                let pci = PciAddress {
                    domain: g.pci_domain,
                    bus: g.pci_bus,
                    device: g.pci_device,
                };
                let mut d = Device::new(i as u32, g.name(), g.uuid, g.total_mem, pci);
                d.compute_capability = (g.cc_major, g.cc_minor);
                d.peers = MachineGpuRecord::indices(g.peers);
                d.peer_atomics = MachineGpuRecord::indices(g.atomic_peers);
                d.nvlinks = g
                    .links()
                    .iter()
                    .map(|&[domain, bus, device]| PciAddress { domain, bus, device })
                    .collect();
                d
            })
            .collect();
        Some(gpus)
    }

    pub fn driver_version(&self) -> Result<i32, CuResult> {
        let mut v = 0;
        // SAFETY: v is a writable int.
        check(unsafe { (self.driver_get_version)(&mut v) })?;
        Ok(v)
    }

    pub fn device_count(&self) -> Result<i32, CuResult> {
        let mut n = 0;
        // SAFETY: n is a writable int.
        check(unsafe { (self.device_get_count)(&mut n) })?;
        Ok(n)
    }

    fn attribute(&self, attribute: i32, device: i32) -> Option<i32> {
        let mut v = 0;
        // SAFETY: v is a writable int.
        check(unsafe { (self.device_get_attribute)(&mut v, attribute, device) }).ok()?;
        Some(v)
    }

    /// Whether device `ordinal` can address `peer`'s memory, and whether
    /// atomics cross the link natively, as the driver answers.
    fn peer_link(&self, ordinal: i32, peer: i32) -> (bool, bool) {
        let (mut can, mut atomics) = (0, 0);
        // SAFETY: both are writable ints.
        let asked = unsafe {
            check((self.device_can_access_peer)(&mut can, ordinal, peer)).and_then(|()| {
                check((self.device_get_p2p_attribute)(
                    &mut atomics,
                    P2P_NATIVE_ATOMIC,
                    ordinal,
                    peer,
                ))
            })
        };
        (asked.is_ok() && can != 0, asked.is_ok() && atomics != 0)
    }

    /// The CUDA ordinals of the devices (of `count`) that `d` can access,
    /// and of those it reaches with native atomics, as the driver answers.
    pub fn fill_peers(&self, d: &mut Device, count: i32) {
        let Some(ordinal) = d.ordinal.map(|o| o as i32) else {
            return;
        };
        for peer in (0..count).filter(|&p| p != ordinal) {
            let (access, atomics) = self.peer_link(ordinal, peer);
            if access {
                d.peers.push(peer as u32);
            }
            if atomics {
                d.peer_atomics.push(peer as u32);
            }
        }
    }

    /// Everything NVML answers about device `ordinal` that cannot change.
    pub fn device(&self, ordinal: i32) -> Result<Device, CuResult> {
        let mut device = 0;
        let mut name = [0 as c_char; 256];
        let mut uuid = [0u8; 16];
        let mut total = 0usize;
        // SAFETY: each out-pointer addresses a buffer of the size the API
        // requires (name: the 256 chars passed, uuid: 16 bytes).
        unsafe {
            check((self.device_get)(&mut device, ordinal))?;
            check((self.device_get_name)(name.as_mut_ptr(), name.len() as i32, device))?;
            check((self.device_get_uuid)(uuid.as_mut_ptr(), device))?;
            check((self.device_total_mem)(&mut total, device))?;
        }
        // The driver NUL-terminates within the buffer; a last NUL makes sure.
        name[name.len() - 1] = 0;
        // SAFETY: `name` holds a NUL within its bounds.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
        let attribute = |a| self.attribute(a, device);
        let pci = PciAddress {
            domain: attribute(ATTRIBUTE_PCI_DOMAIN_ID).unwrap_or(0) as u32,
            bus: attribute(ATTRIBUTE_PCI_BUS_ID).unwrap_or(0) as u32,
            device: attribute(ATTRIBUTE_PCI_DEVICE_ID).unwrap_or(0) as u32,
        };
        let mut d = Device::new(ordinal as u32, name, uuid, total as u64, pci);
        d.compute_capability = (
            attribute(ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR).unwrap_or(0),
            attribute(ATTRIBUTE_COMPUTE_CAPABILITY_MINOR).unwrap_or(0),
        );
        d.clock_khz = attribute(ATTRIBUTE_CLOCK_RATE).filter(|&v| v > 0);
        d.memory_clock_khz = attribute(ATTRIBUTE_MEMORY_CLOCK_RATE).filter(|&v| v > 0);
        d.compute_mode = attribute(ATTRIBUTE_COMPUTE_MODE);
        Ok(d)
    }

    /// What device `ordinal` holds and does now (the shim caches it briefly).
    pub fn status(&self, ordinal: u32) -> Result<DeviceStatus, CuResult> {
        let mut s = DeviceStatus::default();
        // SAFETY: s is a writable DeviceStatus, laid out as the shim's
        // GpupoolDeviceStatus.
        check(unsafe { (self.device_status)(ordinal as i32, &mut s) })?;
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_layout_matches_the_shim() {
        assert_eq!(std::mem::size_of::<DeviceStatus>(), 48);
        assert_eq!(std::mem::offset_of!(DeviceStatus, gpu_util_percent), 24);
        assert_eq!(std::mem::offset_of!(DeviceStatus, flags), 40);
    }
}
