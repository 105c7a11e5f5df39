//! Inventory: what the pool owns — servers, their GPUs, NICs and host resources.
//!
//! These are plain descriptions, as a GPU server reports them when it registers
//! (or as a trace describes a cluster). The placement engine builds its own
//! compact, mutable view from them; nothing here changes as leases come and go.

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Largest number of GPUs one server may hold. NVLink peer sets are kept as
/// bitmasks, and the engine keeps per-server scratch arrays of this size.
pub const MAX_GPUS_PER_SERVER: usize = 32;

/// A whole GPU's compute, in thousandths. Slices ask for a part of this.
pub const FULL_GPU_MILLI: u32 = 1000;

/// Lifecycle state of a server, as the administrator or health checks set it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
pub enum ServerState {
    /// Accepts new placements.
    #[default]
    Up,
    /// Keeps its leases, takes no new ones (administrative hold).
    Cordoned,
    /// Takes no new leases; existing ones are being moved away or finished.
    Draining,
    /// Unreachable; takes nothing.
    Down,
}

impl ServerState {
    /// Whether new placements may land here.
    pub fn accepts_placements(self) -> bool {
        matches!(self, ServerState::Up)
    }
}

/// One physical GPU as its server reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gpu {
    pub uuid: String,
    /// Model name as the pool's constraints speak of it ("H100", "T4", ...).
    pub model: String,
    pub memory_mib: u64,
    /// CUDA compute capability (major, minor).
    pub compute_capability: (u8, u8),
    pub numa_node: u16,
    /// Host CPU cores close to this GPU (same NUMA node).
    pub local_cpus: Vec<u32>,
    pub pci_address: String,
    /// Indices (within the same server) of GPUs this one reaches over NVLink.
    pub nvlink_peers: Vec<u8>,
}

impl Gpu {
    /// A GPU with no topology detail, for traces and tests.
    pub fn plain(uuid: impl Into<String>, model: impl Into<String>, memory_mib: u64) -> Self {
        Gpu {
            uuid: uuid.into(),
            model: model.into(),
            memory_mib,
            compute_capability: (0, 0),
            numa_node: 0,
            local_cpus: Vec::new(),
            pci_address: String::new(),
            nvlink_peers: Vec::new(),
        }
    }
}

/// A network interface of a server; clients reach GPUs through it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Nic {
    pub name: String,
    pub numa_node: u16,
    /// Whether it carries RDMA (InfiniBand / RoCE); otherwise QUIC over IP.
    pub rdma: bool,
}

/// A GPU server (or, in the openb simulation, a CPU-only node with no GPUs).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Server {
    pub name: String,
    pub gpus: Vec<Gpu>,
    /// Host CPU available to tasks, in thousandths of a core.
    pub cpu_milli: u64,
    /// Host memory available to tasks.
    pub memory_mib: u64,
    pub nics: Vec<Nic>,
    pub state: ServerState,
}

impl Server {
    /// A server of `count` identical GPUs with no NVLink and one NUMA node.
    pub fn uniform(
        name: impl Into<String>,
        model: &str,
        count: usize,
        gpu_memory_mib: u64,
        cpu_milli: u64,
        memory_mib: u64,
    ) -> Self {
        let name = name.into();
        let gpus = (0..count)
            .map(|i| Gpu::plain(format!("GPU-{name}-{i}"), model, gpu_memory_mib))
            .collect();
        Server {
            name,
            gpus,
            cpu_milli,
            memory_mib,
            nics: Vec::new(),
            state: ServerState::Up,
        }
    }

    /// A DGX-like server: `count` GPUs all joined by NVSwitch, split evenly
    /// over `numa_nodes` NUMA nodes, one RDMA NIC per NUMA node.
    pub fn nvswitch(name: impl Into<String>, model: &str, count: usize, gpu_memory_mib: u64, numa_nodes: u16) -> Self {
        let mut server = Server::uniform(name, model, count, gpu_memory_mib, 128_000, 1 << 20);
        let per_numa = count.div_ceil(numa_nodes.max(1) as usize).max(1);
        for (i, gpu) in server.gpus.iter_mut().enumerate() {
            gpu.numa_node = (i / per_numa) as u16;
            gpu.compute_capability = (9, 0);
            gpu.pci_address = format!("0000:{:02x}:00.0", 0x10 + i);
            gpu.local_cpus = (0..8).map(|c| (i / per_numa) as u32 * 64 + c).collect();
            gpu.nvlink_peers = (0..count as u8).filter(|&p| p as usize != i).collect();
        }
        server.nics = (0..numa_nodes)
            .map(|n| Nic {
                name: format!("mlx5_{n}"),
                numa_node: n,
                rdma: true,
            })
            .collect();
        server
    }
}

/// Why an inventory cannot be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum InventoryError {
    #[error("server {server} has {count} GPUs; at most {MAX_GPUS_PER_SERVER} per server are supported — split it into several registrations")]
    TooManyGpus { server: String, count: usize },
    #[error("server {server}: GPU {gpu} names NVLink peer {peer}, which is not a GPU index on that server")]
    BadNvlinkPeer { server: String, gpu: usize, peer: u8 },
    #[error("server name {0:?} appears twice; server names must be unique")]
    DuplicateServer(String),
    #[error("the pool has more than 64 GPU models; model constraints are kept as 64-bit sets")]
    TooManyModels,
}

/// The set of servers a pool places onto.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inventory {
    pub servers: Vec<Server>,
}

impl Inventory {
    pub fn new(servers: Vec<Server>) -> Self {
        Inventory { servers }
    }

    /// Checks the limits the engine relies on.
    pub fn validate(&self) -> Result<(), InventoryError> {
        let mut names = std::collections::HashSet::new();
        let mut models = std::collections::HashSet::new();
        for server in &self.servers {
            if !names.insert(server.name.as_str()) {
                return Err(InventoryError::DuplicateServer(server.name.clone()));
            }
            if server.gpus.len() > MAX_GPUS_PER_SERVER {
                return Err(InventoryError::TooManyGpus {
                    server: server.name.clone(),
                    count: server.gpus.len(),
                });
            }
            for (i, gpu) in server.gpus.iter().enumerate() {
                models.insert(gpu.model.as_str());
                if let Some(&peer) = gpu.nvlink_peers.iter().find(|&&p| p as usize >= server.gpus.len()) {
                    return Err(InventoryError::BadNvlinkPeer {
                        server: server.name.clone(),
                        gpu: i,
                        peer,
                    });
                }
            }
        }
        if models.len() > 64 {
            return Err(InventoryError::TooManyModels);
        }
        Ok(())
    }

    /// Total GPUs in the pool.
    pub fn gpu_count(&self) -> usize {
        self.servers.iter().map(|s| s.gpus.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nvswitch_server_is_fully_connected_and_split_over_numa() {
        let s = Server::nvswitch("a", "H100", 8, 81_559, 2);
        assert_eq!(s.gpus.len(), 8);
        assert!(s.gpus.iter().all(|g| g.nvlink_peers.len() == 7));
        assert_eq!(s.gpus[3].numa_node, 0);
        assert_eq!(s.gpus[4].numa_node, 1);
        assert_eq!(s.nics.len(), 2);
        Inventory::new(vec![s]).validate().unwrap();
    }

    #[test]
    fn validation_rejects_bad_peers_and_duplicates() {
        let mut s = Server::uniform("a", "T4", 2, 15_360, 1000, 1000);
        s.gpus[0].nvlink_peers = vec![5];
        assert!(matches!(
            Inventory::new(vec![s]).validate(),
            Err(InventoryError::BadNvlinkPeer { peer: 5, .. })
        ));
        let s = Server::uniform("a", "T4", 2, 15_360, 1000, 1000);
        assert_eq!(
            Inventory::new(vec![s.clone(), s]).validate(),
            Err(InventoryError::DuplicateServer("a".into()))
        );
        let big = Server::uniform("b", "T4", 33, 15_360, 1000, 1000);
        assert!(matches!(
            Inventory::new(vec![big]).validate(),
            Err(InventoryError::TooManyGpus { count: 33, .. })
        ));
    }
}
