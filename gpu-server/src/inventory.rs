//! What this server tells the broker about itself: per GPU its UUID, model,
//! memory, compute capability, PCI address, NUMA node, local CPUs and NVLink
//! peers; and the machine's network devices with their NUMA nodes and
//! whether they carry RDMA.
//!
//! Facts come from the driver (name, UUID, memory, attributes), from sysfs
//! (NUMA node and CPU list of a PCI device, network devices) and from NVML
//! (NVLink). On the software driver there is no PCI device and no NVML: the
//! configuration's `[[gpu]]` and `[[nic]]` tables describe the topology
//! instead, and they override what was discovered on real machines too.

use crate::config::{GpuTopology, NicTopology, ServerConfig};
use crate::driver::DeviceFacts;
use crate::nvml::ServerNvml;
use gpupool_broker::inventory::{Gpu, Nic};
use gpupool_proto::affinity;
use gpupool_proto::handshake::{gpu_uuid_string, DeviceInfo, MachineGpu, PeerLink};
use std::path::Path;

/// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`, `_PCI_DEVICE_ID`, `_PCI_DOMAIN_ID`,
/// `_COMPUTE_CAPABILITY_MAJOR`, `_MINOR`.
const ATTR_PCI_BUS: i32 = 33;
const ATTR_PCI_DEVICE: i32 = 34;
const ATTR_PCI_DOMAIN: i32 = 50;
const ATTR_CC_MAJOR: i32 = 75;
const ATTR_CC_MINOR: i32 = 76;

/// One GPU as discovered, before the configuration's overrides.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovered {
    pub gpu: Gpu,
    /// PCI (domain, bus, device), to match NVLink remotes.
    pub pci: (u32, u32, u32),
}

/// The GPUs and NICs of this server, as the broker's registration carries
/// them, from the driver's facts of each device (by ordinal).
pub fn describe(
    cfg: &ServerConfig,
    devices: &[DeviceFacts],
    nvml: &ServerNvml,
) -> anyhow::Result<(Vec<Gpu>, Vec<Nic>)> {
    let sysfs = Path::new("/sys");
    let found: Vec<Discovered> = devices.iter().map(|f| from_facts(f, cfg.simulated, sysfs)).collect();
    let remotes: Vec<Vec<(u32, u32, u32)>> = devices.iter().map(|f| nvml.nvlink_remotes(&f.uuid)).collect();
    let mut gpus = nvlink_peers(found, &remotes);
    apply_gpu_overrides(&mut gpus, &cfg.gpu)?;
    let nics = if cfg.nic.is_empty() {
        network_devices(sysfs)
    } else {
        cfg.nic.iter().map(Nic::from).collect()
    };
    Ok((gpus, nics))
}

/// A GPU from the driver's facts and the sysfs entry of its PCI device.
pub fn from_facts(facts: &DeviceFacts, simulated: bool, sysfs: &Path) -> Discovered {
    let attr = |a: i32| {
        facts
            .attributes
            .iter()
            .find(|(k, _)| *k == a)
            .map(|(_, v)| (*v).max(0) as u32)
            .unwrap_or(0)
    };
    let pci = (attr(ATTR_PCI_DOMAIN), attr(ATTR_PCI_BUS), attr(ATTR_PCI_DEVICE));
    let pci_address = format!("{:04x}:{:02x}:{:02x}.0", pci.0, pci.1, pci.2);
    let device_dir = sysfs.join("bus/pci/devices").join(&pci_address);
    let numa_node = read_numa_node(&device_dir.join("numa_node"));
    let local_cpus = std::fs::read_to_string(device_dir.join("local_cpulist"))
        .ok()
        .and_then(|t| affinity::parse_cpu_list(&t))
        .unwrap_or_default();
    let model = if simulated {
        "simulated".to_string()
    } else {
        model_name(&facts.name)
    };
    Discovered {
        gpu: Gpu {
            uuid: gpu_uuid_string(&facts.uuid),
            model,
            memory_mib: facts.total_mem >> 20,
            compute_capability: (attr(ATTR_CC_MAJOR) as u8, attr(ATTR_CC_MINOR) as u8),
            numa_node,
            local_cpus,
            pci_address,
            nvlink_peers: Vec::new(),
        },
        pci,
    }
}

/// `CU_DEVICE_P2P_ATTRIBUTE_NATIVE_ATOMIC_SUPPORTED`.
const P2P_NATIVE_ATOMIC: i32 = 3;

/// Devices as the handshake describes them, from the driver's facts of each
/// (`facts`: ordinal and facts, in order), each with its link to every other
/// as the driver answers (`cuDeviceCanAccessPeer`, the peer attributes). A
/// peer is named by its place in the list: the ordinal the session knows
/// it by.
pub fn described_devices(driver: &crate::driver::Driver, facts: Vec<(i32, DeviceFacts)>) -> Vec<DeviceInfo> {
    let ordinals: Vec<i32> = facts.iter().map(|(o, _)| *o).collect();
    facts
        .into_iter()
        .map(|(ordinal, f)| DeviceInfo {
            name: f.name,
            uuid: f.uuid,
            total_mem: f.total_mem,
            attributes: f.attributes,
            peers: ordinals
                .iter()
                .enumerate()
                .filter(|&(_, &p)| p != ordinal)
                .filter_map(|(place, &p)| {
                    let (can_access, attributes) = driver.peer_link(ordinal, p).ok()?;
                    Some(PeerLink {
                        peer: place as i32,
                        can_access,
                        attributes,
                    })
                })
                .collect(),
        })
        .collect()
}

/// The GPUs as NVML describes them, in the order of `devices` (as
/// [`described_devices`] makes them): each with its static facts, the GPUs
/// whose memory it can access and those it reaches with native atomics.
/// Its NVLinks are [`fill_nvlinks`]'s.
pub fn machine_gpus(devices: &[DeviceInfo]) -> Vec<MachineGpu> {
    devices
        .iter()
        .map(|d| {
            let attr = |a: i32| d.attributes.iter().find(|(k, _)| *k == a).map_or(0, |(_, v)| *v);
            let peers = |keep: &dyn Fn(&PeerLink) -> bool| -> Vec<u32> {
                d.peers.iter().filter(|l| keep(l)).map(|l| l.peer as u32).collect()
            };
            MachineGpu {
                name: d.name.clone(),
                uuid: d.uuid,
                total_mem: d.total_mem,
                pci: [ATTR_PCI_DOMAIN, ATTR_PCI_BUS, ATTR_PCI_DEVICE].map(|a| attr(a).max(0) as u32),
                compute_capability: [attr(ATTR_CC_MAJOR), attr(ATTR_CC_MINOR)],
                peers: peers(&|l| l.can_access),
                atomic_peers: peers(&|l| l.attributes.contains(&(P2P_NATIVE_ATOMIC, 1))),
                nvlinks: Vec::new(),
            }
        })
        .collect()
}

/// Each GPU's active NVLinks, by the PCI address at their far end: as the
/// server's NVML reads them, else one link to each NVLink peer the
/// configuration names (`gpus`, as described; the software driver's
/// topology).
pub fn fill_nvlinks(machine: &mut [MachineGpu], nvml: &ServerNvml, gpus: &[Gpu]) {
    let pcis: Vec<[u32; 3]> = machine.iter().map(|g| g.pci).collect();
    for (i, g) in machine.iter_mut().enumerate() {
        let remotes = nvml.nvlink_remotes(&g.uuid);
        g.nvlinks = if remotes.is_empty() {
            let peers = gpus.get(i).map(|d| d.nvlink_peers.as_slice()).unwrap_or_default();
            peers.iter().filter_map(|&p| pcis.get(p as usize).copied()).collect()
        } else {
            remotes.into_iter().map(|(d, b, v)| [d, b, v]).collect()
        };
    }
}

/// The pool's name for a GPU model: the device name without the vendor
/// ("NVIDIA H100 80GB HBM3" → "H100 80GB HBM3").
pub fn model_name(device_name: &str) -> String {
    let name = device_name.trim();
    name.strip_prefix("NVIDIA ").unwrap_or(name).trim().to_string()
}

/// A sysfs `numa_node` file; -1 (no NUMA) or unreadable reads as node 0.
fn read_numa_node(path: &Path) -> u16 {
    affinity::read_numa_node(path).unwrap_or(0)
}

/// NVLink peers from each GPU's active links: a link reaching another of
/// these GPUs makes them peers; a link reaching something else is an
/// NVSwitch, and all GPUs on switches reach one another.
pub fn nvlink_peers(found: Vec<Discovered>, remotes: &[Vec<(u32, u32, u32)>]) -> Vec<Gpu> {
    let index_of = |pci: &(u32, u32, u32)| found.iter().position(|d| d.pci == *pci);
    let on_switch: Vec<bool> = remotes
        .iter()
        .map(|r| r.iter().any(|p| index_of(p).is_none()))
        .collect();
    let mut gpus: Vec<Gpu> = found.iter().map(|d| d.gpu.clone()).collect();
    for (i, gpu) in gpus.iter_mut().enumerate() {
        let mut peers: Vec<u8> = remotes
            .get(i)
            .into_iter()
            .flatten()
            .filter_map(&index_of)
            .filter(|&j| j != i)
            .map(|j| j as u8)
            .collect();
        if on_switch.get(i).copied().unwrap_or(false) {
            peers.extend(
                on_switch
                    .iter()
                    .enumerate()
                    .filter(|&(j, &s)| s && j != i)
                    .map(|(j, _)| j as u8),
            );
        }
        peers.sort_unstable();
        peers.dedup();
        gpu.nvlink_peers = peers;
    }
    gpus
}

/// The configuration's `[[gpu]]` entries over what was discovered.
pub fn apply_gpu_overrides(gpus: &mut [Gpu], overrides: &[GpuTopology]) -> anyhow::Result<()> {
    for o in overrides {
        let n = gpus.len();
        let gpu = gpus
            .get_mut(o.ordinal as usize)
            .ok_or_else(|| anyhow::anyhow!("[[gpu]] ordinal {} does not exist: this server has {n} GPUs", o.ordinal))?;
        if let Some(m) = &o.model {
            gpu.model = m.clone();
        }
        if let Some(v) = o.numa_node {
            gpu.numa_node = v;
        }
        if let Some(v) = &o.local_cpus {
            gpu.local_cpus = v.clone();
        }
        if let Some(v) = &o.pci_address {
            gpu.pci_address = v.clone();
        }
        if let Some(v) = &o.nvlink_peers {
            if let Some(bad) = v.iter().find(|&&p| p as usize >= n || p == o.ordinal) {
                anyhow::bail!(
                    "[[gpu]] ordinal {}: NVLink peer {bad} is not another GPU of this server",
                    o.ordinal
                );
            }
            gpu.nvlink_peers = v.clone();
        }
    }
    Ok(())
}

/// Physical network devices (those backed by a device, not `lo`, bridges
/// or veths), with their NUMA nodes, and whether each carries RDMA
/// (InfiniBand or RoCE: the device has an `infiniband` entry).
pub fn network_devices(sysfs: &Path) -> Vec<Nic> {
    let Ok(entries) = std::fs::read_dir(sysfs.join("class/net")) else {
        return Vec::new();
    };
    let mut nics: Vec<Nic> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let device = e.path().join("device");
            if !device.exists() {
                return None;
            }
            Some(Nic {
                numa_node: read_numa_node(&device.join("numa_node")),
                rdma: device.join("infiniband").is_dir(),
                name,
            })
        })
        .collect();
    nics.sort_by(|a, b| a.name.cmp(&b.name));
    nics
}

impl From<&NicTopology> for Nic {
    fn from(n: &NicTopology) -> Nic {
        Nic {
            name: n.name.clone(),
            numa_node: n.numa_node,
            rdma: n.rdma,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(name: &str, uuid_byte: u8, bus: i32) -> DeviceFacts {
        DeviceFacts {
            name: name.into(),
            uuid: [uuid_byte; 16],
            total_mem: 80 << 30,
            attributes: vec![
                (ATTR_PCI_BUS, bus),
                (ATTR_PCI_DEVICE, 0),
                (ATTR_PCI_DOMAIN, 0),
                (75, 9),
                (76, 0),
            ],
        }
    }

    #[test]
    fn a_gpu_is_described_from_its_facts_and_its_pci_device() {
        let sysfs = std::env::temp_dir().join(format!("gpupool-sysfs-{}", std::process::id()));
        let dev = sysfs.join("bus/pci/devices/0000:18:00.0");
        std::fs::create_dir_all(&dev).unwrap();
        std::fs::write(dev.join("numa_node"), "1\n").unwrap();
        std::fs::write(dev.join("local_cpulist"), "8-11,24\n").unwrap();
        let d = from_facts(&facts("NVIDIA H100 80GB HBM3", 0xab, 0x18), false, &sysfs);
        assert_eq!(d.gpu.model, "H100 80GB HBM3");
        assert_eq!(d.gpu.memory_mib, 80 << 10);
        assert_eq!(d.gpu.compute_capability, (9, 0));
        assert_eq!(d.gpu.pci_address, "0000:18:00.0");
        assert_eq!(d.gpu.numa_node, 1);
        assert_eq!(d.gpu.local_cpus, vec![8, 9, 10, 11, 24]);
        assert!(d.gpu.uuid.starts_with("GPU-abababab-"), "{}", d.gpu.uuid);
        // No sysfs entry (the software driver): node 0, no CPU list.
        let d = from_facts(&facts("soft", 1, 0x40), true, &sysfs);
        assert_eq!((d.gpu.numa_node, d.gpu.local_cpus.len()), (0, 0));
        assert_eq!(d.gpu.model, "simulated");
        std::fs::remove_dir_all(&sysfs).unwrap();
    }

    #[test]
    fn nvlink_peers_come_from_direct_links_and_from_switches() {
        let found: Vec<Discovered> = (0..4)
            .map(|i| from_facts(&facts("g", i, 0x10 + i as i32), false, Path::new("/nonexistent")))
            .collect();
        let pci = |i: u32| (0, 0x10 + i, 0);
        // 0-1 linked directly (two links); 2 and 3 each reach an NVSwitch.
        let switch = (0, 0xf0, 0);
        let remotes = vec![vec![pci(1), pci(1)], vec![pci(0)], vec![switch], vec![switch, switch]];
        let gpus = nvlink_peers(found, &remotes);
        let peers: Vec<Vec<u8>> = gpus.iter().map(|g| g.nvlink_peers.clone()).collect();
        assert_eq!(peers, vec![vec![1], vec![0], vec![3], vec![2]]);
    }

    #[test]
    fn overrides_replace_what_was_found_and_are_checked() {
        let found: Vec<Discovered> = (0..2)
            .map(|i| from_facts(&facts("g", i, i as i32), true, Path::new("/nonexistent")))
            .collect();
        let mut gpus = nvlink_peers(found, &[vec![], vec![]]);
        let o = GpuTopology {
            ordinal: 1,
            model: Some("H100".into()),
            numa_node: Some(1),
            local_cpus: Some(vec![4, 5]),
            pci_address: None,
            nvlink_peers: Some(vec![0]),
        };
        apply_gpu_overrides(&mut gpus, std::slice::from_ref(&o)).unwrap();
        assert_eq!((gpus[1].model.as_str(), gpus[1].numa_node), ("H100", 1));
        assert_eq!(gpus[1].nvlink_peers, vec![0]);
        let beyond = GpuTopology {
            ordinal: 2,
            ..o.clone()
        };
        assert!(apply_gpu_overrides(&mut gpus, &[beyond]).is_err());
        let itself = GpuTopology {
            nvlink_peers: Some(vec![1]),
            ..o
        };
        assert!(apply_gpu_overrides(&mut gpus, &[itself]).is_err());
    }

    #[test]
    fn network_devices_are_the_physical_ones() {
        let sysfs = std::env::temp_dir().join(format!("gpupool-sysfs-net-{}", std::process::id()));
        let net = sysfs.join("class/net");
        std::fs::create_dir_all(net.join("lo")).unwrap();
        std::fs::create_dir_all(net.join("ib0/device/infiniband")).unwrap();
        std::fs::write(net.join("ib0/device/numa_node"), "1").unwrap();
        std::fs::create_dir_all(net.join("eth0/device")).unwrap();
        std::fs::write(net.join("eth0/device/numa_node"), "-1").unwrap();
        let nics = network_devices(&sysfs);
        assert_eq!(
            nics,
            vec![
                Nic {
                    name: "eth0".into(),
                    numa_node: 0,
                    rdma: false
                },
                Nic {
                    name: "ib0".into(),
                    numa_node: 1,
                    rdma: true
                },
            ]
        );
        std::fs::remove_dir_all(&sysfs).unwrap();
    }
}
