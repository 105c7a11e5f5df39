//! Placement: decides which server and which GPUs (or which slice of one GPU)
//! a request gets.
//!
//! A [`PlacementEngine`] is one pool: it copies the [`Inventory`] into a compact
//! mutable view, files servers and GPUs into bucket indexes by free capacity
//! and model, and for each [`Request`] gathers a bounded set of candidates from
//! those buckets, scores them with the pool's [`Policy`] and commits the best
//! one as an [`Allocation`]. Releasing an allocation gives its capacity back.
//! Every policy keeps the same hard rules: a slice lives on one GPU, a gang of
//! whole GPUs lives on one server or nowhere, model and memory constraints
//! hold, and no GPU is ever given more than its compute or memory.
//!
//! [`Inventory`]: crate::inventory::Inventory

mod engine;
mod fragmentation;
mod index;
mod topology;
pub mod workload;

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use engine::PlacementEngine;

/// Index of a server in the pool's inventory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ServerId(pub u32);

/// Handle of a granted allocation; give it back with [`PlacementEngine::release`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct AllocationId(pub u64);

/// How a pool ranks the servers and GPUs that could take a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub enum Policy {
    /// Tightest fit: the GPU (or server) left with the least free capacity.
    #[default]
    BestFit,
    /// Occupied GPUs first, then idle GPUs on busy servers, then idle servers.
    Packing,
    /// Emptiest server and GPU first, to spread load and interference.
    Spread,
    /// Any feasible candidate, uniformly at random.
    Random,
    /// Largest dot product of the request and the server's free resources.
    DotProduct,
    /// Smallest growth of expected fragmentation under the typical task mix (FGD).
    Fragmentation,
}

impl Policy {
    pub const ALL: [Policy; 6] = [
        Policy::BestFit,
        Policy::Packing,
        Policy::Spread,
        Policy::Random,
        Policy::DotProduct,
        Policy::Fragmentation,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Policy::BestFit => "best-fit",
            Policy::Packing => "packing",
            Policy::Spread => "spread",
            Policy::Random => "random",
            Policy::DotProduct => "dot-product",
            Policy::Fragmentation => "fgd",
        }
    }
}

impl fmt::Display for Policy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Policy {
    type Err = PlacementError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "best-fit" | "bestfit" => Ok(Policy::BestFit),
            "packing" => Ok(Policy::Packing),
            "spread" => Ok(Policy::Spread),
            "random" => Ok(Policy::Random),
            "dot-product" | "dotproduct" => Ok(Policy::DotProduct),
            "fgd" | "fragmentation" => Ok(Policy::Fragmentation),
            _ => Err(PlacementError::UnknownPolicy(s.to_string())),
        }
    }
}

/// How many candidate servers a decision may score. Bounding this keeps a
/// decision's cost independent of the pool's size; the bucket indexes make
/// the bounded set a good one (tightest, emptiest, or a sample of every
/// capacity level, depending on the policy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CandidateLimits {
    /// Most candidates taken from one capacity bucket by sampling policies.
    pub per_bucket: usize,
    /// Most candidates scored per allowed GPU model.
    pub total: usize,
}

impl Default for CandidateLimits {
    fn default() -> Self {
        CandidateLimits {
            per_bucket: 4,
            total: 32,
        }
    }
}

impl CandidateLimits {
    /// Score every feasible server (simulations of small clusters).
    pub fn exhaustive() -> Self {
        CandidateLimits {
            per_bucket: usize::MAX,
            total: usize::MAX,
        }
    }
}

/// Pool-wide placement settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct PoolConfig {
    pub policy: Policy,
    pub limits: CandidateLimits,
    /// Seed for the random policy and random sampling.
    pub seed: u64,
    /// Share of arrivals the fragmentation policy's typical mix covers.
    pub typical_coverage: f64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            policy: Policy::BestFit,
            limits: CandidateLimits::default(),
            seed: 0,
            typical_coverage: 0.95,
        }
    }
}

impl PoolConfig {
    pub fn with_policy(policy: Policy) -> Self {
        PoolConfig {
            policy,
            ..PoolConfig::default()
        }
    }
}

/// The GPU part of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GpuDemand {
    /// Host resources only (CPU-only tasks of a trace).
    None,
    /// `count` whole GPUs on one server, all or nothing.
    Whole { count: u8 },
    /// Part of one GPU: compute in thousandths (1..=1000) and memory.
    Slice { milli: u16, memory_mib: u64 },
}

/// A set of GPU models a request accepts, as a bitset over the pool's models.
/// Build one with [`PlacementEngine::model_set`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ModelSet(pub(crate) u64);

impl ModelSet {
    pub const ANY: ModelSet = ModelSet(u64::MAX);

    pub(crate) fn allows(self, model: u16) -> bool {
        self.0 & (1u64 << model) != 0
    }
}

impl Default for ModelSet {
    fn default() -> Self {
        ModelSet::ANY
    }
}

/// Where the requester would like to be: soft preferences, never refusals.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LocalityHint {
    /// A server to favour (for example where the tenant's other leases are).
    pub server: Option<ServerId>,
    /// A NUMA node to favour for the GPUs (and so the NIC and CPU cores).
    pub numa_node: Option<u16>,
}

/// One placement request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub gpus: GpuDemand,
    pub models: ModelSet,
    /// Every granted GPU must have at least this much memory in total.
    pub min_memory_mib: u64,
    pub locality: LocalityHint,
    /// Recorded on the allocation for lease management; placement itself does
    /// not preempt.
    pub priority: i32,
    pub tenant: Option<String>,
    /// Host CPU (thousandths of a core) and memory the task needs on the server.
    pub cpu_milli: u64,
    pub memory_mib: u64,
}

impl Request {
    fn with_gpus(gpus: GpuDemand) -> Self {
        Request {
            gpus,
            models: ModelSet::ANY,
            min_memory_mib: 0,
            locality: LocalityHint::default(),
            priority: 0,
            tenant: None,
            cpu_milli: 0,
            memory_mib: 0,
        }
    }

    /// `count` whole GPUs on one server.
    pub fn whole(count: u8) -> Self {
        Request::with_gpus(GpuDemand::Whole { count })
    }

    /// A slice of one GPU.
    pub fn slice(milli: u16, memory_mib: u64) -> Self {
        Request::with_gpus(GpuDemand::Slice { milli, memory_mib })
    }

    /// Host resources only.
    pub fn host_only(cpu_milli: u64, memory_mib: u64) -> Self {
        Request::with_gpus(GpuDemand::None).with_host(cpu_milli, memory_mib)
    }

    pub fn with_host(mut self, cpu_milli: u64, memory_mib: u64) -> Self {
        self.cpu_milli = cpu_milli;
        self.memory_mib = memory_mib;
        self
    }

    pub fn with_models(mut self, models: ModelSet) -> Self {
        self.models = models;
        self
    }

    pub fn with_min_memory(mut self, min_memory_mib: u64) -> Self {
        self.min_memory_mib = min_memory_mib;
        self
    }

    pub fn with_locality(mut self, locality: LocalityHint) -> Self {
        self.locality = locality;
        self
    }

    /// Total GPU compute asked for, in thousandths of a GPU.
    pub fn gpu_milli(&self) -> u64 {
        match self.gpus {
            GpuDemand::None => 0,
            GpuDemand::Whole { count } => count as u64 * 1000,
            GpuDemand::Slice { milli, .. } => milli as u64,
        }
    }
}

/// One GPU (or part of one) granted by an allocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GpuGrant {
    /// Index of the GPU within its server's inventory entry.
    pub gpu: u8,
    pub milli: u16,
    pub memory_mib: u64,
}

/// A granted placement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    pub id: AllocationId,
    pub server: ServerId,
    pub gpus: Vec<GpuGrant>,
    pub cpu_milli: u64,
    pub memory_mib: u64,
    /// NUMA node of the granted GPUs when they share one: pin CPU cores there.
    pub numa_node: Option<u16>,
    /// Index of the server NIC to use (same NUMA node, RDMA first), if any.
    pub nic: Option<u8>,
    pub priority: i32,
    pub tenant: Option<String>,
}

/// One scored candidate in a decision's explanation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CandidateScore {
    pub server: ServerId,
    pub server_name: String,
    /// GPU indices within the server that this candidate would use.
    pub gpus: Vec<u8>,
    /// Topology rank (0 best: one NUMA node, fully NVLink-connected).
    pub topology_rank: u8,
    /// The policy's score; lower is better.
    pub score: f64,
    /// Tie-breaker; lower is better.
    pub tie_break: f64,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Explanation {
    pub policy: Option<Policy>,
    pub candidates: Vec<CandidateScore>,
    /// Index into `candidates` of the one chosen.
    pub chosen: Option<usize>,
    /// Free-text note (for example why nothing fitted).
    pub note: String,
}

/// Why a request could not be placed, or an operation could not be done.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum PlacementError {
    #[error("no server can take this request ({demand}); free capacity, model or memory constraints rule every server out — retry after leases end or relax the constraints")]
    NoCapacity { demand: String },
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    #[error("unknown GPU model {0:?}; the pool has no GPU of that model")]
    UnknownModel(String),
    #[error("unknown placement policy {0:?}; use best-fit, packing, spread, random, dot-product or fgd")]
    UnknownPolicy(String),
    #[error("allocation {0} is not held in this pool (already released?)")]
    UnknownAllocation(u64),
    #[error("server {0} is not in this pool")]
    UnknownServer(u32),
    #[error(transparent)]
    Inventory(#[from] crate::inventory::InventoryError),
}
