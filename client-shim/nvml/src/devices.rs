//! The devices NVML reports: the session's devices as `libcuda.so.1` (the
//! gpupool shim) describes them, read once, and the handles handed to the
//! program. A handle (`nvmlDevice_t`) is the address of a table entry; the
//! table never moves or shrinks, so handles stay valid for the life of the
//! process, and a handle is accepted only if it is one of those addresses.

use crate::format::PciAddress;
use gpupool_proto::handshake::gpu_uuid_string;
use std::ffi::c_void;

/// What NVML answers about a device that cannot change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    /// The CUDA ordinal, which is also NVML's index.
    pub index: u32,
    pub name: String,
    pub uuid: [u8; 16],
    /// `GPU-xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
    pub uuid_text: String,
    pub total_mem: u64,
    pub pci: PciAddress,
    /// (major, minor).
    pub compute_capability: (i32, i32),
    /// Maximum SM clock, when the driver tells it.
    pub clock_khz: Option<i32>,
    /// Maximum memory clock, when the driver tells it.
    pub memory_clock_khz: Option<i32>,
    /// `CUcomputemode`, numbered as `nvmlComputeMode_t` is.
    pub compute_mode: Option<i32>,
}

impl Device {
    /// A device with these facts; the UUID's text is derived.
    pub fn new(index: u32, name: String, uuid: [u8; 16], total_mem: u64, pci: PciAddress) -> Device {
        Device {
            index,
            name,
            uuid,
            uuid_text: gpu_uuid_string(&uuid),
            total_mem,
            pci,
            compute_capability: (0, 0),
            clock_khz: None,
            memory_clock_khz: None,
            compute_mode: None,
        }
    }
}

/// The session's devices, by index, and their handles.
#[derive(Debug)]
pub struct DeviceTable {
    devices: Box<[Device]>,
}

impl DeviceTable {
    pub fn new(devices: Vec<Device>) -> DeviceTable {
        DeviceTable {
            devices: devices.into_boxed_slice(),
        }
    }

    pub fn len(&self) -> usize {
        self.devices.len()
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// The handle of the device at `index`.
    pub fn handle(&self, index: u32) -> Option<*mut c_void> {
        self.devices.get(index as usize).map(Self::handle_of)
    }

    /// The handle of a device of this table.
    pub fn handle_of(device: &Device) -> *mut c_void {
        device as *const Device as *mut c_void
    }

    /// The device a handle names, if it is one this table handed out. The
    /// handle is compared, never read through.
    pub fn get(&self, handle: *const c_void) -> Option<&Device> {
        self.devices.iter().find(|d| std::ptr::eq(Self::handle_of(d), handle))
    }

    /// The device with this UUID text (any case).
    pub fn by_uuid(&self, text: &str) -> Option<&Device> {
        self.devices
            .iter()
            .find(|d| d.uuid_text.eq_ignore_ascii_case(text.trim()))
    }

    /// The device at this PCI bus id, in any form NVML accepts.
    pub fn by_pci_bus_id(&self, text: &str) -> Option<&Device> {
        let (address, function) = PciAddress::parse(text)?;
        if function != 0 {
            return None;
        }
        self.devices.iter().find(|d| d.pci == address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> DeviceTable {
        let dev = |i: u32, bus: u32| {
            let mut uuid = [0u8; 16];
            uuid[15] = i as u8 + 1;
            Device::new(
                i,
                format!("GPU {i}"),
                uuid,
                1 << 30,
                PciAddress {
                    domain: 0,
                    bus,
                    device: 0,
                },
            )
        };
        DeviceTable::new(vec![dev(0, 0x41), dev(1, 0x81)])
    }

    #[test]
    fn handles_are_distinct_non_null_and_resolve() {
        let t = table();
        assert_eq!(t.len(), 2);
        let h0 = t.handle(0).unwrap();
        let h1 = t.handle(1).unwrap();
        assert!(!h0.is_null() && !h1.is_null());
        assert_ne!(h0, h1);
        assert_eq!(t.get(h0).unwrap().index, 0);
        assert_eq!(t.get(h1).unwrap().index, 1);
        assert_eq!(t.handle(2), None);
        // Stable: asking again gives the same handle.
        assert_eq!(t.handle(1), Some(h1));
    }

    #[test]
    fn foreign_handles_are_refused() {
        let t = table();
        assert!(t.get(std::ptr::null()).is_none());
        let h0 = t.handle(0).unwrap() as usize;
        assert!(t.get((h0 + 1) as *const c_void).is_none());
        let other = table();
        assert!(t.get(other.handle(0).unwrap()).is_none());
    }

    #[test]
    fn lookup_by_uuid_and_bus_id() {
        let t = table();
        assert_eq!(t.by_uuid("GPU-00000000-0000-0000-0000-000000000002").unwrap().index, 1);
        assert_eq!(t.by_uuid("gpu-00000000-0000-0000-0000-000000000001").unwrap().index, 0);
        assert!(t.by_uuid("GPU-00000000-0000-0000-0000-000000000009").is_none());
        assert_eq!(t.by_pci_bus_id("00000000:81:00.0").unwrap().index, 1);
        assert_eq!(t.by_pci_bus_id("0000:41:00.0").unwrap().index, 0);
        assert!(t.by_pci_bus_id("0000:41:00.1").is_none());
        assert!(t.by_pci_bus_id("0000:42:00.0").is_none());
        assert!(t.by_pci_bus_id("nonsense").is_none());
    }
}
