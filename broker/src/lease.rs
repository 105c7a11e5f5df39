//! Leases: a placement held by someone for a while.
//!
//! A request becomes a [`Lease`]: queued when it must wait (over quota or no
//! capacity, with queueing configured), active once placed. The holder
//! renews it within its TTL; it ends by release, by expiry when renewal
//! stops, by loss when its server goes down, or by preemption. An ended lease
//! is kept for a while so that its holder learns at its next call why it
//! ended. The token that goes with an active lease is signed by the broker
//! (`gpupool_proto::lease`) and checked by the GPU server on its own.

use serde::{Deserialize, Serialize};

/// A slice of one GPU: device memory and a share of its compute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SliceSpec {
    pub memory_mib: u64,
    /// Share of the GPU's compute in thousandths (1..=1000).
    pub compute_milli: u16,
}

/// Where the requester would like its GPUs: preferences, never refusals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Locality {
    /// A server to favour (by name).
    #[serde(default)]
    pub server: Option<String>,
    /// A NUMA node to favour.
    #[serde(default)]
    pub numa_node: Option<u16>,
}

/// What a client asks for: `gpus` whole GPUs (a gang, all on one server or
/// nothing) or one `slice`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseRequest {
    #[serde(default)]
    pub tenant: Option<String>,
    #[serde(default)]
    pub gpus: Option<u8>,
    #[serde(default)]
    pub slice: Option<SliceSpec>,
    /// GPU model name ("H100"); any model when absent.
    #[serde(default)]
    pub model: Option<String>,
    /// Each granted GPU must have at least this much memory in total.
    #[serde(default)]
    pub min_memory_mib: Option<u64>,
    #[serde(default)]
    pub locality: Option<Locality>,
    /// Higher wins; only matters when preemption is configured and for the
    /// order in which queued requests are served.
    #[serde(default)]
    pub priority: i32,
    /// Wanted renewal period; the broker's default when absent, capped by
    /// its maximum.
    #[serde(default)]
    pub ttl_ms: Option<u64>,
    /// Free text naming the holder (host/pid/program), for operators.
    #[serde(default)]
    pub holder: Option<String>,
}

/// Where a lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LeaseState {
    /// Waiting for quota or capacity; the holder polls by renewing.
    Queued,
    /// Placed; the holder uses it and renews it.
    Active,
    /// Given back by its holder.
    Released,
    /// Not renewed within its TTL.
    Expired,
    /// Its server went down.
    Lost,
    /// Taken for a higher-priority request.
    Preempted,
}

impl LeaseState {
    pub const ALL: [LeaseState; 6] = [
        LeaseState::Queued,
        LeaseState::Active,
        LeaseState::Released,
        LeaseState::Expired,
        LeaseState::Lost,
        LeaseState::Preempted,
    ];

    pub fn name(self) -> &'static str {
        match self {
            LeaseState::Queued => "queued",
            LeaseState::Active => "active",
            LeaseState::Released => "released",
            LeaseState::Expired => "expired",
            LeaseState::Lost => "lost",
            LeaseState::Preempted => "preempted",
        }
    }

    /// Whether the lease is over.
    pub fn is_ended(self) -> bool {
        !matches!(self, LeaseState::Queued | LeaseState::Active)
    }
}

/// One GPU (or slice) a lease holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseGrant {
    /// Index of the GPU on its server.
    pub index: u8,
    pub uuid: String,
    pub compute_milli: u16,
    pub memory_mib: u64,
}

/// A lease as the broker keeps (and persists) it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub id: u64,
    pub tenant: String,
    pub holder: String,
    pub request: LeaseRequest,
    pub state: LeaseState,
    /// Why the lease is queued or why it ended.
    pub reason: Option<String>,
    pub server: Option<String>,
    /// Address clients use to reach the server (as it registered it).
    pub endpoint: Option<String>,
    pub gpus: Vec<LeaseGrant>,
    /// NUMA node of the granted GPUs when they share one.
    pub numa_node: Option<u16>,
    /// Server NIC to use (same NUMA node, RDMA first).
    pub nic: Option<String>,
    pub priority: i32,
    pub ttl_ms: u64,
    pub created_at_ms: u64,
    pub granted_at_ms: Option<u64>,
    /// Active: when it expires unless renewed. Queued: when it is dropped
    /// unless the holder polls.
    pub expires_at_ms: u64,
    pub ended_at_ms: Option<u64>,
}

impl Lease {
    /// Compute granted, in thousandths of a GPU.
    pub fn gpu_milli(&self) -> u64 {
        self.gpus.iter().map(|g| g.compute_milli as u64).sum()
    }

    /// Device memory granted.
    pub fn memory_mib(&self) -> u64 {
        self.gpus.iter().map(|g| g.memory_mib).sum()
    }
}

/// A lease as the API shows it: the lease, plus its token when active.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseView {
    #[serde(flatten)]
    pub lease: Lease,
    /// Signed lease token to present to the GPU server (`GPUPOOL_LEASE_TOKEN`).
    pub token: Option<String>,
}
