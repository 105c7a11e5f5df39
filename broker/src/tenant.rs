//! Tenants and their quotas.

use serde::{Deserialize, Serialize};

/// The tenant requests without one are charged to.
pub const DEFAULT_TENANT: &str = "default";

/// Limits on what one tenant's active leases may hold together; `None` is
/// no limit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// GPU compute, in thousandths of a GPU (a whole GPU is 1000).
    #[serde(default)]
    pub max_gpu_milli: Option<u64>,
    /// Device memory over all granted GPUs and slices.
    #[serde(default)]
    pub max_memory_mib: Option<u64>,
}

/// A tenant as the broker keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tenant {
    pub name: String,
    pub quota: Quota,
    pub created_at_ms: u64,
}

/// A tenant with what it holds now, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantView {
    #[serde(flatten)]
    pub tenant: Tenant,
    pub used_gpu_milli: u64,
    pub used_memory_mib: u64,
    pub active_leases: usize,
    pub queued_leases: usize,
}

/// Whether `name` is usable as a tenant name: 1..=64 of `[A-Za-z0-9._-]`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}
