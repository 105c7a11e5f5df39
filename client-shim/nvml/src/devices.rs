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
    /// NVML's index: the CUDA ordinal, unless `CUDA_VISIBLE_DEVICES`
    /// picks devices by index, when it is the index the program named
    /// (NVML numbers all of a machine's GPUs whatever CUDA shows).
    pub index: u32,
    /// The CUDA ordinal in this process; `None` for a GPU of the machine
    /// that the session does not have (`CUDA_VISIBLE_DEVICES` keeps it
    /// from the program): NVML describes it, but tells nothing of what it
    /// does now.
    pub ordinal: Option<u32>,
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
    /// The NVML indices of the devices whose memory this one can address
    /// (`cuDeviceCanAccessPeer`), and of those it reaches with native
    /// atomics.
    pub peers: Vec<u32>,
    pub peer_atomics: Vec<u32>,
    /// The PCI address at the far end of each active NVLink.
    pub nvlinks: Vec<PciAddress>,
}

impl Device {
    /// A device with these facts; the UUID's text is derived.
    pub fn new(index: u32, name: String, uuid: [u8; 16], total_mem: u64, pci: PciAddress) -> Device {
        Device {
            index,
            ordinal: Some(index),
            name,
            uuid,
            uuid_text: gpu_uuid_string(&uuid),
            total_mem,
            pci,
            compute_capability: (0, 0),
            clock_khz: None,
            memory_clock_khz: None,
            compute_mode: None,
            peers: Vec::new(),
            peer_atomics: Vec::new(),
            nvlinks: Vec::new(),
        }
    }
}

/// The session's devices, by index, and their handles.
#[derive(Debug)]
pub struct DeviceTable {
    devices: Box<[Device]>,
}

/// What NVML says of an index.
#[derive(Debug, PartialEq, Eq)]
pub enum Slot<'a> {
    Device(&'a Device),
    /// A GPU of the server that `CUDA_VISIBLE_DEVICES` keeps from this
    /// program: counted, but nothing is known of it here.
    Hidden,
    Beyond,
}

impl DeviceTable {
    pub fn new(devices: Vec<Device>) -> DeviceTable {
        DeviceTable {
            devices: devices.into_boxed_slice(),
        }
    }

    /// The session's devices placed at the NVML indices `visible` (the
    /// program's `CUDA_VISIBLE_DEVICES`) gives them, when it names them by
    /// index: `CUDA_VISIBLE_DEVICES=1` shows CUDA device 0, which NVML
    /// numbers 1, as PyTorch expects when it maps one to the other.
    /// The devices' `peers` are CUDA ordinals here, and become NVML indices.
    pub fn placed(mut devices: Vec<Device>, visible: Option<&str>) -> DeviceTable {
        if let Some(places) = visible.and_then(gpupool_proto::visible::indices) {
            if places.len() >= devices.len() {
                for (d, &place) in devices.iter_mut().zip(&places) {
                    d.index = place as u32;
                }
            }
        }
        let index_of: Vec<u32> = devices.iter().map(|d| d.index).collect();
        let to_index = |ordinals: &mut Vec<u32>| {
            *ordinals = ordinals
                .iter()
                .filter_map(|&o| index_of.get(o as usize).copied())
                .collect();
        };
        for d in &mut devices {
            to_index(&mut d.peers);
            to_index(&mut d.peer_atomics);
        }
        DeviceTable::new(devices)
    }

    /// The machine's GPUs (`machine`, in NVML's order, each index in the
    /// list its NVML index), each of the session's `devices` in its place
    /// by UUID; a session device the list lacks goes after them.
    pub fn from_machine(machine: Vec<Device>, mut devices: Vec<Device>) -> DeviceTable {
        let mut table = Vec::with_capacity(machine.len().max(devices.len()));
        for (i, m) in machine.into_iter().enumerate() {
            let d = match devices.iter().position(|d| d.uuid == m.uuid) {
                Some(p) => {
                    let mut d = devices.remove(p);
                    d.peers = m.peers;
                    d.peer_atomics = m.peer_atomics;
                    d.nvlinks = m.nvlinks;
                    d
                }
                None => Device { ordinal: None, ..m },
            };
            table.push(Device { index: i as u32, ..d });
        }
        let next = table.len() as u32;
        for (k, mut d) in devices.into_iter().enumerate() {
            d.index = next + k as u32;
            d.peers.clear();
            d.peer_atomics.clear();
            table.push(d);
        }
        DeviceTable::new(table)
    }

    /// NVML's device count: one past the highest index.
    pub fn len(&self) -> usize {
        self.devices.iter().map(|d| d.index as usize + 1).max().unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }

    /// What is at NVML index `index`.
    pub fn slot(&self, index: u32) -> Slot<'_> {
        match self.devices.iter().find(|d| d.index == index) {
            Some(d) => Slot::Device(d),
            None if (index as usize) < self.len() => Slot::Hidden,
            None => Slot::Beyond,
        }
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

    /// The device with this UUID, in its 16 bytes.
    pub fn by_uuid_bytes(&self, bytes: &[u8]) -> Option<&Device> {
        self.devices.iter().find(|d| d.uuid[..] == *bytes)
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

    /// The handle of the device at NVML index `index`.
    fn handle(t: &DeviceTable, index: u32) -> Option<*mut c_void> {
        match t.slot(index) {
            Slot::Device(d) => Some(DeviceTable::handle_of(d)),
            _ => None,
        }
    }

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
        let h0 = handle(&t, 0).unwrap();
        let h1 = handle(&t, 1).unwrap();
        assert!(!h0.is_null() && !h1.is_null());
        assert_ne!(h0, h1);
        assert_eq!(t.get(h0).unwrap().index, 0);
        assert_eq!(t.get(h1).unwrap().index, 1);
        assert_eq!(handle(&t, 2), None);
        // Stable: asking again gives the same handle.
        assert_eq!(handle(&t, 1), Some(h1));
    }

    #[test]
    fn the_machines_gpus_take_their_places_and_the_sessions_fill_theirs() {
        let machine = |i: u32, peers: &[u32]| {
            let mut uuid = [0u8; 16];
            uuid[15] = i as u8 + 1;
            let mut d = Device::new(i, format!("machine GPU {i}"), uuid, 1 << 30, PciAddress::default());
            d.peers = peers.to_vec();
            d
        };
        // The session has the machine's GPU 1, as its CUDA device 0.
        let mut mine = table().devices.into_vec()[1].clone();
        mine.ordinal = Some(0);
        mine.uuid[15] = 2;
        let t = DeviceTable::from_machine(vec![machine(0, &[1]), machine(1, &[0])], vec![mine]);
        assert_eq!(t.len(), 2);
        let Slot::Device(other) = t.slot(0) else {
            panic!("index 0")
        };
        assert_eq!((other.ordinal, other.name.as_str()), (None, "machine GPU 0"));
        let Slot::Device(ours) = t.slot(1) else {
            panic!("index 1")
        };
        assert_eq!(
            (ours.ordinal, ours.name.as_str(), ours.peers.as_slice()),
            (Some(0), "GPU 1", &[0][..])
        );
    }

    #[test]
    fn devices_sit_at_the_indices_cuda_visible_devices_names() {
        let devs = || table().devices.into_vec();
        let t = DeviceTable::placed(devs(), Some("3,1"));
        assert_eq!(t.len(), 4);
        assert_eq!(t.slot(3), Slot::Device(&t.devices[0]));
        assert_eq!(t.devices[0].ordinal, Some(0));
        assert_eq!(t.slot(1), Slot::Device(&t.devices[1]));
        assert_eq!(t.slot(0), Slot::Hidden);
        assert_eq!(t.slot(2), Slot::Hidden);
        assert_eq!(t.slot(4), Slot::Beyond);
        // By UUID, or fewer places than devices: CUDA's numbering.
        for v in [Some("GPU-00,1"), Some("1"), None] {
            let t = DeviceTable::placed(devs(), v);
            assert_eq!((t.len(), t.devices[1].index), (2, 1), "{v:?}");
        }
    }

    #[test]
    fn foreign_handles_are_refused() {
        let t = table();
        assert!(t.get(std::ptr::null()).is_none());
        let h0 = handle(&t, 0).unwrap() as usize;
        assert!(t.get((h0 + 1) as *const c_void).is_none());
        let other = table();
        assert!(t.get(handle(&other, 0).unwrap()).is_none());
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
