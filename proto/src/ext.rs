//! The C layout of a record gpupool's own entry points pass between the
//! client shim (`libcuda.so.1`, which exports `gpupoolMachineGpus`) and
//! gpupool's NVML library (which calls it): defined once, for both sides.

use crate::handshake::MachineGpu;
use std::ffi::c_char;

/// `NVML_NVLINK_MAX_LINKS`: the most NVLinks a record tells.
pub const MAX_NVLINKS: usize = 18;

/// The longest name a record holds, with its NUL.
pub const NAME_BYTES: usize = 96;

/// One GPU of the server's machine (`gpupoolMachineGpus`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct MachineGpuRecord {
    pub uuid: [u8; 16],
    /// NUL-terminated.
    pub name: [c_char; NAME_BYTES],
    pub total_mem: u64,
    pub pci_domain: u32,
    pub pci_bus: u32,
    pub pci_device: u32,
    pub cc_major: i32,
    pub cc_minor: i32,
    /// Bit `i`: this GPU can access the memory of the machine's GPU `i`.
    pub peers: u64,
    /// Bit `i`: atomics reach the machine's GPU `i` natively.
    pub atomic_peers: u64,
    /// Its active NVLinks (at most `MAX_NVLINKS`), and the PCI address
    /// (domain, bus, device) at the far end of each.
    pub nvlink_count: u32,
    pub nvlinks: [[u32; 3]; MAX_NVLINKS],
}

impl MachineGpuRecord {
    /// A record telling nothing.
    pub const EMPTY: MachineGpuRecord = MachineGpuRecord {
        uuid: [0; 16],
        name: [0; NAME_BYTES],
        total_mem: 0,
        pci_domain: 0,
        pci_bus: 0,
        pci_device: 0,
        cc_major: 0,
        cc_minor: 0,
        peers: 0,
        atomic_peers: 0,
        nvlink_count: 0,
        nvlinks: [[0; 3]; MAX_NVLINKS],
    };

    /// The record of `g` (its name cut to fit, peers past index 63 and
    /// links past `MAX_NVLINKS` left out).
    pub fn of(g: &MachineGpu) -> MachineGpuRecord {
        let bits = |list: &[u32]| list.iter().filter(|&&i| i < 64).fold(0u64, |m, &i| m | 1 << i);
        let mut r = MachineGpuRecord {
            uuid: g.uuid,
            total_mem: g.total_mem,
            pci_domain: g.pci[0],
            pci_bus: g.pci[1],
            pci_device: g.pci[2],
            cc_major: g.compute_capability[0],
            cc_minor: g.compute_capability[1],
            peers: bits(&g.peers),
            atomic_peers: bits(&g.atomic_peers),
            nvlink_count: g.nvlinks.len().min(MAX_NVLINKS) as u32,
            ..MachineGpuRecord::EMPTY
        };
        for (d, &b) in r.name.iter_mut().zip(g.name.as_bytes().iter().take(NAME_BYTES - 1)) {
            *d = b as c_char;
        }
        for (d, l) in r.nvlinks.iter_mut().zip(&g.nvlinks) {
            *d = *l;
        }
        r
    }

    /// The machine indices a bit mask names.
    pub fn indices(mask: u64) -> Vec<u32> {
        (0..64u32).filter(|i| mask & 1 << i != 0).collect()
    }

    /// The name, up to its NUL.
    pub fn name(&self) -> String {
        let bytes: Vec<u8> = self.name.iter().take_while(|&&c| c != 0).map(|&c| c as u8).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The far ends of its active NVLinks.
    pub fn links(&self) -> &[[u32; 3]] {
        &self.nvlinks[..(self.nvlink_count as usize).min(MAX_NVLINKS)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_carries_its_gpu() {
        let g = MachineGpu {
            name: "NVIDIA H100 80GB HBM3".into(),
            uuid: [7; 16],
            total_mem: 80 << 30,
            pci: [0, 0x18, 0],
            compute_capability: [9, 0],
            peers: vec![1, 3, 70],
            atomic_peers: vec![3],
            nvlinks: vec![[0, 0x19, 0]; 20],
        };
        let r = MachineGpuRecord::of(&g);
        assert_eq!(r.name(), g.name);
        assert_eq!(MachineGpuRecord::indices(r.peers), [1, 3]);
        assert_eq!(MachineGpuRecord::indices(r.atomic_peers), [3]);
        assert_eq!(r.links().len(), MAX_NVLINKS);
        assert_eq!(r.links()[0], [0, 0x19, 0]);
        let long = MachineGpu {
            name: "x".repeat(200),
            ..g
        };
        assert_eq!(MachineGpuRecord::of(&long).name().len(), NAME_BYTES - 1);
    }
}
