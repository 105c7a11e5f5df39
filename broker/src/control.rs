//! The broker's state machine: servers that register and heartbeat, leases
//! that are requested, renewed and end, tenants and their quotas — all kept
//! in memory behind one lock, written through to the [`Store`] before an
//! operation answers, and fed to the placement engine.
//!
//! Nothing here speaks HTTP; `api` maps requests onto these methods and
//! [`BrokerError`]s onto status codes. Time comes in as arguments or from
//! the system clock in one place ([`now_ms`]), so the timing rules
//! (heartbeat timeout, lease expiry) are checked by [`Broker::tick`].

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use gpupool_proto::lease::{LeaseClaims, LeaseGpu, LeaseSigner};
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tracing::{info, warn};

use crate::inventory::{Gpu, Inventory, Nic, Server, ServerState, FULL_GPU_MILLI};
use crate::lease::{Lease, LeaseGrant, LeaseRequest, LeaseState, LeaseView};
use crate::metrics::Metrics;
use crate::placement::{
    Allocation, AllocationId, Explanation, GpuGrant, LocalityHint, PlacementEngine, PlacementError, Policy, PoolConfig,
    Request,
};
use crate::store::{Store, StoreError, Table, Write};
use crate::tenant::{self, Quota, Tenant, TenantView, DEFAULT_TENANT};

/// What happens to a request that is over its tenant's quota or finds no
/// capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Admission {
    /// It becomes a queued lease, granted when quota or capacity frees.
    #[default]
    Queue,
    /// It is refused with the reason.
    Refuse,
}

impl std::str::FromStr for Admission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "queue" => Ok(Admission::Queue),
            "refuse" => Ok(Admission::Refuse),
            _ => Err(format!("{s:?} is not an admission mode; use queue or refuse")),
        }
    }
}

/// The rules the broker runs by.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: Policy,
    /// A server silent for this long is marked down.
    pub heartbeat_timeout: Duration,
    /// TTL of a lease whose request names none.
    pub lease_ttl_ms: u64,
    /// Longest TTL a request may ask for.
    pub max_lease_ttl_ms: u64,
    pub admission: Admission,
    /// Whether a request may take capacity from lower-priority leases.
    pub preemption: bool,
    /// How long an ended lease is kept so its holder can learn why.
    pub ended_lease_retention_ms: u64,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            policy: Policy::BestFit,
            heartbeat_timeout: Duration::from_secs(15),
            lease_ttl_ms: 60_000,
            max_lease_ttl_ms: 3_600_000,
            admission: Admission::Queue,
            preemption: false,
            ended_lease_retention_ms: 3_600_000,
        }
    }
}

/// What a GPU server reports when it registers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    /// Its `GPUPOOL_SERVER_ID`; lease tokens name it.
    pub name: String,
    /// Where clients reach it (`tcp://host:port`, `quic://...`).
    #[serde(default)]
    pub endpoint: String,
    pub gpus: Vec<Gpu>,
    #[serde(default)]
    pub nics: Vec<Nic>,
    /// Host CPU offered to tasks, thousandths of a core (0: not tracked).
    #[serde(default)]
    pub cpu_milli: u64,
    /// Host memory offered to tasks (0: not tracked).
    #[serde(default)]
    pub memory_mib: u64,
}

/// A server as the broker keeps (and persists) it.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ServerRecord {
    registration: Registration,
    /// What the administrator set: up, cordoned or draining.
    admin: ServerState,
    /// Marked down for missing heartbeats.
    down: bool,
    down_reason: Option<String>,
    registered_at_ms: u64,
    #[serde(skip, default = "Instant::now")]
    last_heartbeat: Instant,
}

impl ServerRecord {
    fn state(&self) -> ServerState {
        if self.down {
            ServerState::Down
        } else {
            self.admin
        }
    }
}

/// A server as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServerView {
    pub name: String,
    pub endpoint: String,
    pub state: ServerState,
    pub down_reason: Option<String>,
    pub gpus: usize,
    pub models: Vec<String>,
    pub capacity_milli: u64,
    pub allocated_milli: u64,
    pub active_leases: usize,
    pub registered_at_ms: u64,
    pub last_heartbeat_ms_ago: u64,
    pub nics: Vec<Nic>,
}

/// A GPU as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GpuView {
    pub server: String,
    pub index: u8,
    #[serde(flatten)]
    pub gpu: Gpu,
    pub free_milli: u16,
    pub free_memory_mib: u64,
    pub leases: Vec<u64>,
}

/// One granted GPU or slice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SliceView {
    pub lease: u64,
    pub tenant: String,
    pub server: String,
    pub gpu_index: u8,
    pub gpu_uuid: String,
    pub compute_milli: u16,
    pub memory_mib: u64,
}

/// The pool at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PoolView {
    pub name: String,
    pub policy: Policy,
    pub admission: Admission,
    pub preemption: bool,
    pub store: String,
    pub servers: BTreeMap<String, usize>,
    pub gpus: usize,
    pub capacity_milli: u64,
    pub allocated_milli: u64,
    /// Share of the free compute of placeable GPUs that sits on GPUs already
    /// partly granted (0: every free GPU is whole; 1: nothing whole is free).
    pub fragmentation: f64,
    pub leases: BTreeMap<String, usize>,
    pub public_key: String,
}

/// Answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatReply {
    pub server: String,
    pub state: ServerState,
    pub heartbeat_timeout_ms: u64,
    /// Leases active on this server now; sessions under any other lease
    /// may be ended by the server.
    pub active_leases: Vec<u64>,
}

/// What the engine would do with a request, without doing it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExplainView {
    pub placeable: bool,
    pub outcome: String,
    pub explanation: Explanation,
}

/// Why an operation was not done. Every message says what failed and what to
/// do; `api` maps each kind to an HTTP status.
#[derive(Debug, Error)]
pub enum BrokerError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("quota exceeded: {0}")]
    QuotaExceeded(String),
    #[error("no capacity: {0}")]
    NoCapacity(String),
    /// The lease has ended; `reason` says how (lost, preempted, expired...).
    #[error("lease {lease} is {state}: {reason}")]
    LeaseEnded {
        lease: u64,
        state: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The shared store's tokens are signed with another key than this
    /// broker's.
    #[error("{0}")]
    KeyMismatch(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    gpupool_proto::lease::unix_ms_now()
}

struct State {
    servers: BTreeMap<String, ServerRecord>,
    engine: PlacementEngine,
    leases: BTreeMap<u64, Lease>,
    /// Lease id → its allocation in the current engine.
    allocations: HashMap<u64, AllocationId>,
    tenants: BTreeMap<String, Tenant>,
    /// Lease id → why it was placed where it was (not persisted).
    explanations: HashMap<u64, Explanation>,
    next_lease: u64,
}

/// The broker: see the module docs.
pub struct Broker {
    state: Mutex<State>,
    store: Box<dyn Store>,
    signer: LeaseSigner,
    settings: Settings,
    pub metrics: Metrics,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("store", &self.store.describe())
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

fn lease_key(id: u64) -> String {
    format!("{id:020}")
}

fn put<T: Serialize>(table: Table, key: impl Into<String>, value: &T) -> Result<Write, BrokerError> {
    let value = serde_json::to_vec(value).map_err(|e| BrokerError::Internal(format!("cannot encode record: {e}")))?;
    Ok(Write::Put {
        table,
        key: key.into(),
        value,
    })
}

fn put_lease(lease: &Lease) -> Result<Write, BrokerError> {
    put(Table::Leases, lease_key(lease.id), lease)
}

fn decode<T: for<'de> Deserialize<'de>>(table: Table, key: &str, bytes: &[u8]) -> Result<T, BrokerError> {
    serde_json::from_slice(bytes).map_err(|e| {
        BrokerError::Internal(format!(
            "stored record {}/{key} cannot be read ({e}); the database is damaged or from an incompatible version",
            table.name()
        ))
    })
}

fn valid_server_name(name: &str) -> bool {
    tenant::valid_name(name)
}

impl Broker {
    /// Opens a broker over `store`, restoring every server, tenant and lease
    /// it holds. Restored servers get a fresh heartbeat window.
    pub fn open(settings: Settings, store: Box<dyn Store>, signer: LeaseSigner) -> Result<Broker, BrokerError> {
        let (state, mut writes) = load_state(store.as_ref(), settings.policy)?;
        writes.extend(check_signing_key(store.as_ref(), &signer)?);
        store.apply(&writes)?;
        let active = state.leases.values().filter(|l| l.state == LeaseState::Active).count();
        info!(
            servers = state.servers.len(),
            leases = state.leases.len(),
            active,
            tenants = state.tenants.len(),
            store = %store.describe(),
            "broker state restored"
        );
        let broker = Broker {
            state: Mutex::new(state),
            store,
            signer,
            settings,
            metrics: Metrics::default(),
        };
        Ok(broker)
    }

    /// Writes a batch through to the store; a standby broker (not the
    /// store's leader) refuses to change anything.
    ///
    /// The state in memory changes before its batch is written; when the
    /// write fails, the state is read back from the store, so that memory
    /// never runs ahead of what a restart would find.
    fn commit(&self, st: &mut State, writes: &[Write]) -> Result<(), BrokerError> {
        if writes.is_empty() {
            return Ok(());
        }
        let result = if self.store.is_leader() {
            self.store.apply(writes)
        } else {
            Err(StoreError::NotLeader)
        };
        if let Err(e) = result {
            if matches!(e, StoreError::NotLeader) {
                // A deposed leader serves nothing more; what it believes no
                // longer matters, and the store is the new leader's.
                warn!("store write refused: this broker is not the leader");
                return Err(e.into());
            }
            warn!("store write failed ({e}); reloading the broker's state from the store");
            match load_state(self.store.as_ref(), self.settings.policy) {
                Ok((mut fresh, _)) => {
                    fresh.explanations = std::mem::take(&mut st.explanations);
                    for (name, record) in &mut fresh.servers {
                        if let Some(old) = st.servers.get(name) {
                            record.last_heartbeat = old.last_heartbeat;
                        }
                    }
                    *st = fresh;
                }
                Err(reload) => tracing::error!("cannot reload the broker's state from the store: {reload}"),
            }
            return Err(e.into());
        }
        Ok(())
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether this broker may serve: always with an embedded store; with a
    /// replicated one, while it holds the leadership (once lost, never again).
    pub fn is_leader(&self) -> bool {
        self.store.is_leader()
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// The public key GPU servers verify lease tokens with.
    pub fn public_key_text(&self) -> String {
        self.signer.public_key().to_text()
    }

    // ---- servers -------------------------------------------------------

    /// Registers a server, or updates a registered one (its GPUs may change;
    /// leases on GPUs it no longer reports are lost). Brings it up.
    pub fn register(&self, registration: Registration) -> Result<ServerView, BrokerError> {
        if !valid_server_name(&registration.name) {
            return Err(BrokerError::BadRequest(format!(
                "server name {:?} is not valid: use 1 to 64 of letters, digits, '.', '_' and '-'",
                registration.name
            )));
        }
        let mut uuids = std::collections::HashSet::new();
        for gpu in &registration.gpus {
            if gpu.uuid.is_empty() || !uuids.insert(gpu.uuid.as_str()) {
                return Err(BrokerError::BadRequest(format!(
                    "server {}: GPU UUIDs must be present and distinct ({:?})",
                    registration.name, gpu.uuid
                )));
            }
            if gpu.memory_mib == 0 {
                return Err(BrokerError::BadRequest(format!(
                    "server {}: GPU {} reports no memory",
                    registration.name, gpu.uuid
                )));
            }
        }
        let now = now_ms();
        let mut st = self.lock();
        for (name, other) in &st.servers {
            if *name == registration.name {
                continue;
            }
            if let Some(g) = other.registration.gpus.iter().find(|g| uuids.contains(g.uuid.as_str())) {
                return Err(BrokerError::Conflict(format!(
                    "GPU {} is already registered by server {name}; a GPU belongs to one server",
                    g.uuid
                )));
            }
        }
        let mut check: Vec<Server> = st
            .servers
            .values()
            .filter(|r| r.registration.name != registration.name)
            .map(|r| Server::uniform(r.registration.name.clone(), "", 0, 0, 0, 0))
            .collect();
        let mut this = Server::uniform(registration.name.clone(), "", 0, 0, 0, 0);
        this.gpus = registration.gpus.clone();
        check.push(this);
        let mut models: std::collections::HashSet<&str> = st
            .servers
            .values()
            .flat_map(|r| r.registration.gpus.iter().map(|g| g.model.as_str()))
            .collect();
        models.extend(registration.gpus.iter().map(|g| g.model.as_str()));
        if models.len() > 64 {
            return Err(BrokerError::BadRequest(
                "the pool would have more than 64 GPU models; model constraints are kept as 64-bit sets".into(),
            ));
        }
        Inventory::new(check)
            .validate()
            .map_err(|e| BrokerError::BadRequest(e.to_string()))?;

        let name = registration.name.clone();
        let (admin, registered_at_ms) = st
            .servers
            .get(&name)
            .map_or((ServerState::Up, now), |r| (r.admin, r.registered_at_ms));
        let record = ServerRecord {
            registration,
            admin,
            down: false,
            down_reason: None,
            registered_at_ms,
            last_heartbeat: Instant::now(),
        };
        let mut writes = vec![put(Table::Servers, name.clone(), &record)?];
        st.servers.insert(name.clone(), record);
        writes.extend(rebuild(self.settings.policy, &mut st, now)?);
        writes.extend(self.pump(&mut st, now)?);
        self.commit(&mut st, &writes)?;
        self.metrics
            .registrations
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        info!(server = %name, gpus = st.servers.get(&name).map_or(0, |r| r.registration.gpus.len()), "server registered");
        server_view(&st, &name)
    }

    /// Records a heartbeat; a server that was down comes back up (its lost
    /// leases stay lost).
    pub fn heartbeat(&self, name: &str) -> Result<HeartbeatReply, BrokerError> {
        self.metrics
            .heartbeats
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let now = now_ms();
        let mut st = self.lock();
        let record = st.servers.get_mut(name).ok_or_else(|| {
            BrokerError::NotFound(format!(
                "server {name} is not registered; register it first (POST /v1/servers/register)"
            ))
        })?;
        record.last_heartbeat = Instant::now();
        if record.down {
            record.down = false;
            record.down_reason = None;
            let write = put(Table::Servers, name, &*record)?;
            let state = record.state();
            set_engine_state(&mut st, name, state);
            let mut writes = vec![write];
            writes.extend(self.pump(&mut st, now)?);
            self.commit(&mut st, &writes)?;
            info!(server = %name, "server back up after heartbeats resumed");
        }
        let record = st
            .servers
            .get(name)
            .ok_or_else(|| BrokerError::Internal("server vanished".into()))?;
        Ok(HeartbeatReply {
            server: name.to_string(),
            state: record.state(),
            heartbeat_timeout_ms: self.settings.heartbeat_timeout.as_millis() as u64,
            active_leases: st
                .leases
                .values()
                .filter(|l| l.state == LeaseState::Active && l.server.as_deref() == Some(name))
                .map(|l| l.id)
                .collect(),
        })
    }

    /// Sets a server's administrative state: `Up` (uncordon), `Cordoned`
    /// (keeps its leases, takes no new ones) or `Draining` (the same, and
    /// shown as being emptied).
    pub fn set_admin_state(&self, name: &str, admin: ServerState) -> Result<ServerView, BrokerError> {
        if admin == ServerState::Down {
            return Err(BrokerError::BadRequest(
                "a server is marked down by missed heartbeats, not by an administrator; cordon or drain it instead"
                    .into(),
            ));
        }
        let now = now_ms();
        let mut st = self.lock();
        let record = st
            .servers
            .get_mut(name)
            .ok_or_else(|| BrokerError::NotFound(format!("server {name} is not registered")))?;
        record.admin = admin;
        let state = record.state();
        let mut writes = vec![put(Table::Servers, name, &*record)?];
        set_engine_state(&mut st, name, state);
        writes.extend(self.pump(&mut st, now)?);
        self.commit(&mut st, &writes)?;
        info!(server = %name, state = ?admin, "server state set");
        server_view(&st, name)
    }

    pub fn servers(&self) -> Vec<ServerView> {
        let st = self.lock();
        st.servers.keys().filter_map(|n| server_view(&st, n).ok()).collect()
    }

    pub fn server(&self, name: &str) -> Result<ServerView, BrokerError> {
        server_view(&self.lock(), name)
    }

    pub fn gpus(&self) -> Vec<GpuView> {
        let st = self.lock();
        let mut out = Vec::new();
        for (name, record) in &st.servers {
            let id = st.engine.server_id(name);
            for (i, gpu) in record.registration.gpus.iter().enumerate() {
                let (free_milli, free_memory_mib) = id.and_then(|id| st.engine.gpu_free(id, i as u8)).unwrap_or((0, 0));
                let leases = st
                    .leases
                    .values()
                    .filter(|l| {
                        l.state == LeaseState::Active
                            && l.server.as_deref() == Some(name.as_str())
                            && l.gpus.iter().any(|g| g.uuid == gpu.uuid)
                    })
                    .map(|l| l.id)
                    .collect();
                out.push(GpuView {
                    server: name.clone(),
                    index: i as u8,
                    gpu: gpu.clone(),
                    free_milli,
                    free_memory_mib,
                    leases,
                });
            }
        }
        out
    }

    pub fn slices(&self) -> Vec<SliceView> {
        let st = self.lock();
        st.leases
            .values()
            .filter(|l| l.state == LeaseState::Active)
            .flat_map(|l| {
                l.gpus.iter().map(|g| SliceView {
                    lease: l.id,
                    tenant: l.tenant.clone(),
                    server: l.server.clone().unwrap_or_default(),
                    gpu_index: g.index,
                    gpu_uuid: g.uuid.clone(),
                    compute_milli: g.compute_milli,
                    memory_mib: g.memory_mib,
                })
            })
            .collect()
    }

    // ---- leases --------------------------------------------------------

    /// Requests a lease: granted now, queued, or refused with the reason.
    pub fn request(&self, request: LeaseRequest) -> Result<LeaseView, BrokerError> {
        let tenant = request.tenant.clone().unwrap_or_else(|| DEFAULT_TENANT.to_string());
        if !tenant::valid_name(&tenant) {
            return Err(BrokerError::BadRequest(format!(
                "tenant name {tenant:?} is not valid: use 1 to 64 of letters, digits, '.', '_' and '-'"
            )));
        }
        validate_request(&request)?;
        let ttl_ms = request.ttl_ms.unwrap_or(self.settings.lease_ttl_ms);
        if ttl_ms == 0 || ttl_ms > self.settings.max_lease_ttl_ms {
            return Err(BrokerError::BadRequest(format!(
                "ttl_ms {ttl_ms} is out of range; use 1..={} (the broker's max_lease_ttl_ms)",
                self.settings.max_lease_ttl_ms
            )));
        }
        let now = now_ms();
        let mut st = self.lock();
        let mut writes = Vec::new();
        if !st.tenants.contains_key(&tenant) {
            let t = Tenant {
                name: tenant.clone(),
                quota: Quota::default(),
                created_at_ms: now,
            };
            writes.push(put(Table::Tenants, tenant.clone(), &t)?);
            st.tenants.insert(tenant.clone(), t);
        }
        let id = st.next_lease;
        st.next_lease += 1;
        writes.push(put(Table::Meta, "next_lease", &st.next_lease)?);
        let mut lease = Lease {
            id,
            tenant,
            holder: request.holder.clone().unwrap_or_default(),
            priority: request.priority,
            request,
            state: LeaseState::Queued,
            reason: None,
            server: None,
            endpoint: None,
            gpus: Vec::new(),
            numa_node: None,
            nic: None,
            ttl_ms,
            created_at_ms: now,
            granted_at_ms: None,
            expires_at_ms: now.saturating_add(ttl_ms),
            ended_at_ms: None,
        };
        let outcome = self.attempt(&mut st, &mut lease, now, self.settings.preemption)?;
        use std::sync::atomic::Ordering::Relaxed;
        match outcome {
            Attempt::Granted(victims) => {
                self.metrics.placements_granted.fetch_add(1, Relaxed);
                for victim in victims {
                    self.metrics.preemptions.fetch_add(1, Relaxed);
                    let reason = format!(
                        "lease preempted by higher-priority lease {id} (priority {}); request a new lease",
                        lease.priority
                    );
                    if let Some(w) = end_lease(&mut st, victim, LeaseState::Preempted, reason, now)? {
                        writes.push(w);
                    }
                }
            }
            Attempt::Waiting(reason, over_quota) => {
                if self.settings.admission == Admission::Refuse {
                    self.metrics.placements_refused.fetch_add(1, Relaxed);
                    // The id is spent; record it so ids never repeat.
                    self.commit(&mut st, &writes)?;
                    return Err(if over_quota {
                        BrokerError::QuotaExceeded(reason)
                    } else {
                        BrokerError::NoCapacity(reason)
                    });
                }
                self.metrics.placements_queued.fetch_add(1, Relaxed);
                lease.reason = Some(reason);
            }
        }
        writes.push(put_lease(&lease)?);
        self.commit(&mut st, &writes)?;
        info!(
            lease = id,
            tenant = %lease.tenant,
            state = lease.state.name(),
            server = lease.server.as_deref().unwrap_or("-"),
            "lease requested"
        );
        let view = self.view(&lease, true);
        st.leases.insert(id, lease);
        Ok(view)
    }

    /// Tries to place `lease` (queued) now. `Err` only for a request that
    /// can never be placed as written.
    fn attempt(&self, st: &mut State, lease: &mut Lease, now: u64, preempt: bool) -> Result<Attempt, BrokerError> {
        let request = engine_request(st, lease)?;
        let demand_milli = request.gpu_milli();
        let quota = st.tenants.get(&lease.tenant).map(|t| t.quota).unwrap_or_default();
        let (used_milli, used_memory) = usage(st, &lease.tenant);
        if let Some(max) = quota.max_gpu_milli {
            if used_milli + demand_milli > max {
                return Ok(Attempt::Waiting(
                    format!(
                        "tenant {} holds {} of its {} quota and asks for {} more; release leases or raise the quota",
                        lease.tenant,
                        gpus_text(used_milli),
                        gpus_text(max),
                        gpus_text(demand_milli)
                    ),
                    true,
                ));
            }
        }
        let started = Instant::now();
        let (result, mut why) = st.engine.place_explained(&request);
        self.metrics.observe_placement(started.elapsed());
        let mut victims = Vec::new();
        let allocation = match result {
            Ok(a) => a,
            Err(PlacementError::NoCapacity { demand }) => {
                let preempted = if preempt { preempt_for(st, &request) } else { None };
                match preempted {
                    Some((a, v)) => {
                        let ids: Vec<u64> = v.iter().map(|(id, _)| *id).collect();
                        why.note = format!("placed after preempting lower-priority leases {ids:?}");
                        victims = v;
                        a
                    }
                    None => {
                        return Ok(Attempt::Waiting(
                            format!("no server can take {demand} now; it is granted when capacity frees"),
                            false,
                        ))
                    }
                }
            }
            Err(e) => return Err(BrokerError::BadRequest(e.to_string())),
        };
        let memory: u64 = allocation.gpus.iter().map(|g| g.memory_mib).sum();
        if let Some(max) = quota.max_memory_mib {
            if used_memory + memory > max {
                let _ = st.engine.release(allocation.id);
                restore_victims(st, &victims);
                return Ok(Attempt::Waiting(
                    format!(
                        "tenant {} holds {used_memory} MiB of its {max} MiB memory quota and this grant needs {memory} MiB more; release leases or raise the quota",
                        lease.tenant
                    ),
                    true,
                ));
            }
        }
        grant(st, lease, &allocation, now)?;
        st.allocations.insert(lease.id, allocation.id);
        st.explanations.insert(lease.id, why);
        Ok(Attempt::Granted(victims.into_iter().map(|(id, _)| id).collect()))
    }

    /// Places queued leases that now fit, highest priority first, oldest
    /// first within a priority.
    fn pump(&self, st: &mut State, now: u64) -> Result<Vec<Write>, BrokerError> {
        let mut queued: Vec<(i32, u64)> = st
            .leases
            .values()
            .filter(|l| l.state == LeaseState::Queued)
            .map(|l| (l.priority, l.id))
            .collect();
        queued.sort_by_key(|&(p, id)| (std::cmp::Reverse(p), id));
        let mut writes = Vec::new();
        for (_, id) in queued {
            let Some(mut lease) = st.leases.remove(&id) else {
                continue;
            };
            match self.attempt(st, &mut lease, now, false) {
                Ok(Attempt::Granted(_)) => {
                    info!(
                        lease = id,
                        server = lease.server.as_deref().unwrap_or("-"),
                        "queued lease granted"
                    );
                    writes.push(put_lease(&lease)?);
                }
                Ok(Attempt::Waiting(reason, _)) => {
                    if lease.reason.as_deref() != Some(reason.as_str()) {
                        lease.reason = Some(reason);
                        writes.push(put_lease(&lease)?);
                    }
                }
                Err(e) => {
                    lease.state = LeaseState::Expired;
                    lease.reason = Some(format!("queued request can no longer be placed: {e}"));
                    lease.ended_at_ms = Some(now);
                    writes.push(put_lease(&lease)?);
                }
            }
            st.leases.insert(id, lease);
        }
        Ok(writes)
    }

    /// Renews a lease: an active one gets a new expiry and a fresh token; a
    /// queued one stays in the queue (and is told its place's reason). An
    /// ended lease answers with why it ended.
    pub fn renew(&self, id: u64) -> Result<LeaseView, BrokerError> {
        let now = now_ms();
        let mut st = self.lock();
        let lease = st.leases.get_mut(&id).ok_or_else(|| unknown_lease(id))?;
        if lease.state.is_ended() {
            return Err(ended(lease));
        }
        lease.expires_at_ms = now.saturating_add(lease.ttl_ms);
        let write = put_lease(lease)?;
        let lease = lease.clone();
        self.commit(&mut st, &[write])?;
        Ok(self.view(&lease, true))
    }

    /// Gives a lease back. Releasing an ended lease changes nothing.
    pub fn release(&self, id: u64) -> Result<LeaseView, BrokerError> {
        let now = now_ms();
        let mut st = self.lock();
        let state = st.leases.get(&id).ok_or_else(|| unknown_lease(id))?.state;
        let mut writes = Vec::new();
        if !state.is_ended() {
            if let Some(w) = end_lease(&mut st, id, LeaseState::Released, "released by its holder".into(), now)? {
                writes.push(w);
            }
            writes.extend(self.pump(&mut st, now)?);
            self.commit(&mut st, &writes)?;
            info!(lease = id, "lease released");
        }
        let lease = st.leases.get(&id).ok_or_else(|| unknown_lease(id))?;
        Ok(self.view(lease, false))
    }

    pub fn lease(&self, id: u64) -> Result<LeaseView, BrokerError> {
        let st = self.lock();
        let lease = st.leases.get(&id).ok_or_else(|| unknown_lease(id))?;
        Ok(self.view(lease, true))
    }

    /// Every lease the broker remembers (tokens left out).
    pub fn leases(&self) -> Vec<LeaseView> {
        let st = self.lock();
        st.leases.values().map(|l| self.view(l, false)).collect()
    }

    /// Why an active lease was placed where it is.
    pub fn explain_lease(&self, id: u64) -> Result<Explanation, BrokerError> {
        let st = self.lock();
        let lease = st.leases.get(&id).ok_or_else(|| unknown_lease(id))?;
        st.explanations.get(&id).cloned().ok_or_else(|| {
            BrokerError::NotFound(format!(
                "lease {id} ({}) has no placement explanation: explanations are kept in memory for leases placed since the broker started",
                lease.state.name()
            ))
        })
    }

    /// What the engine would do with `request` now, changing nothing.
    pub fn explain(&self, request: LeaseRequest) -> Result<ExplainView, BrokerError> {
        validate_request(&request)?;
        let mut st = self.lock();
        let probe = Lease {
            id: 0,
            tenant: request.tenant.clone().unwrap_or_else(|| DEFAULT_TENANT.into()),
            holder: String::new(),
            priority: request.priority,
            request,
            state: LeaseState::Queued,
            reason: None,
            server: None,
            endpoint: None,
            gpus: Vec::new(),
            numa_node: None,
            nic: None,
            ttl_ms: 0,
            created_at_ms: 0,
            granted_at_ms: None,
            expires_at_ms: 0,
            ended_at_ms: None,
        };
        let request = engine_request(&st, &probe)?;
        let (result, explanation) = st.engine.place_explained(&request);
        let (placeable, outcome) = match result {
            Ok(a) => {
                let _ = st.engine.release(a.id);
                let server = st.engine.server_name(a.server).unwrap_or("?").to_string();
                let gpus: Vec<u8> = a.gpus.iter().map(|g| g.gpu).collect();
                (true, format!("would place on server {server}, GPUs {gpus:?}"))
            }
            Err(e) => (false, e.to_string()),
        };
        Ok(ExplainView {
            placeable,
            outcome,
            explanation,
        })
    }

    // ---- tenants -------------------------------------------------------

    pub fn set_quota(&self, name: &str, quota: Quota) -> Result<TenantView, BrokerError> {
        if !tenant::valid_name(name) {
            return Err(BrokerError::BadRequest(format!(
                "tenant name {name:?} is not valid: use 1 to 64 of letters, digits, '.', '_' and '-'"
            )));
        }
        let now = now_ms();
        let mut st = self.lock();
        let t = st.tenants.entry(name.to_string()).or_insert_with(|| Tenant {
            name: name.to_string(),
            quota: Quota::default(),
            created_at_ms: now,
        });
        t.quota = quota;
        let mut writes = vec![put(Table::Tenants, name, &*t)?];
        writes.extend(self.pump(&mut st, now)?);
        self.commit(&mut st, &writes)?;
        info!(tenant = %name, ?quota, "quota set");
        tenant_view(&st, name)
    }

    pub fn tenants(&self) -> Vec<TenantView> {
        let st = self.lock();
        st.tenants.keys().filter_map(|n| tenant_view(&st, n).ok()).collect()
    }

    pub fn tenant(&self, name: &str) -> Result<TenantView, BrokerError> {
        tenant_view(&self.lock(), name)
    }

    // ---- time ----------------------------------------------------------

    /// Applies the timing rules: servers silent past the heartbeat timeout
    /// go down and their leases are lost; leases not renewed expire; ended
    /// leases past retention are forgotten; freed capacity goes to the queue.
    pub fn tick(&self) -> Result<(), BrokerError> {
        if !self.is_leader() {
            // Timing rules are the leader's to apply.
            return Ok(());
        }
        let now = now_ms();
        let timeout = self.settings.heartbeat_timeout;
        let mut st = self.lock();
        let mut writes = Vec::new();
        let silent: Vec<(String, Duration)> = st
            .servers
            .iter()
            .filter(|(_, r)| !r.down && r.last_heartbeat.elapsed() > timeout)
            .map(|(n, r)| (n.clone(), r.last_heartbeat.elapsed()))
            .collect();
        let mut freed = false;
        for (name, silence) in silent {
            self.metrics
                .heartbeat_timeouts
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let why = format!("server {name} down (no heartbeat for {} ms)", silence.as_millis());
            warn!(server = %name, "{why}; its leases are lost");
            if let Some(record) = st.servers.get_mut(&name) {
                record.down = true;
                record.down_reason = Some(why.clone());
                writes.push(put(Table::Servers, name.clone(), &*record)?);
            }
            set_engine_state(&mut st, &name, ServerState::Down);
            let on_server: Vec<u64> = st
                .leases
                .values()
                .filter(|l| l.state == LeaseState::Active && l.server.as_deref() == Some(name.as_str()))
                .map(|l| l.id)
                .collect();
            for id in on_server {
                let reason = format!("lease lost: {why}; request a new lease");
                writes.extend(end_lease(&mut st, id, LeaseState::Lost, reason, now)?);
                freed = true;
            }
        }
        let due: Vec<(u64, LeaseState)> = st
            .leases
            .values()
            .filter(|l| !l.state.is_ended() && l.expires_at_ms <= now)
            .map(|l| (l.id, l.state))
            .collect();
        for (id, state) in due {
            let reason = if state == LeaseState::Active {
                "lease expired: not renewed within its TTL; request a new lease".to_string()
            } else {
                "queued request dropped: not polled (renewed) within its TTL".to_string()
            };
            info!(lease = id, "{reason}");
            writes.extend(end_lease(&mut st, id, LeaseState::Expired, reason, now)?);
            freed |= state == LeaseState::Active;
        }
        let retention = self.settings.ended_lease_retention_ms;
        let forgotten: Vec<u64> = st
            .leases
            .values()
            .filter(|l| l.ended_at_ms.is_some_and(|t| t.saturating_add(retention) <= now))
            .map(|l| l.id)
            .collect();
        for id in forgotten {
            st.leases.remove(&id);
            st.explanations.remove(&id);
            writes.push(Write::Delete {
                table: Table::Leases,
                key: lease_key(id),
            });
        }
        if freed {
            writes.extend(self.pump(&mut st, now)?);
        }
        self.commit(&mut st, &writes)?;
        Ok(())
    }

    // ---- views ---------------------------------------------------------

    fn view(&self, lease: &Lease, with_token: bool) -> LeaseView {
        let token = (with_token && lease.state == LeaseState::Active)
            .then_some(lease.server.as_ref())
            .flatten()
            .map(|server| {
                self.signer.sign(&LeaseClaims {
                    lease_id: lease.id.to_string(),
                    server_id: server.clone(),
                    gpus: lease
                        .gpus
                        .iter()
                        .map(|g| LeaseGpu {
                            uuid: g.uuid.clone(),
                            compute_milli: g.compute_milli,
                            memory_mib: g.memory_mib,
                        })
                        .collect(),
                    tenant: lease.tenant.clone(),
                    issued_at_ms: now_ms(),
                    expires_at_ms: lease.expires_at_ms,
                })
            });
        LeaseView {
            lease: lease.clone(),
            token,
        }
    }

    pub fn pool(&self) -> PoolView {
        let st = self.lock();
        let mut servers = BTreeMap::new();
        for r in st.servers.values() {
            *servers.entry(state_name(r.state()).to_string()).or_insert(0) += 1;
        }
        let mut leases = BTreeMap::new();
        for s in LeaseState::ALL {
            leases.insert(s.name().to_string(), 0);
        }
        for l in st.leases.values() {
            *leases.entry(l.state.name().to_string()).or_insert(0) += 1;
        }
        PoolView {
            name: "default".into(),
            policy: self.settings.policy,
            admission: self.settings.admission,
            preemption: self.settings.preemption,
            store: self.store.describe(),
            servers,
            gpus: st.servers.values().map(|r| r.registration.gpus.len()).sum(),
            capacity_milli: st.engine.gpu_capacity_milli(),
            allocated_milli: st.engine.allocated_gpu_milli(),
            fragmentation: fragmentation(&st),
            leases,
            public_key: self.public_key_text(),
        }
    }

    /// Prometheus text exposition of the pool.
    pub fn render_metrics(&self) -> String {
        use crate::metrics::gauge;
        let pool = self.pool();
        let mut out = String::new();
        gauge(
            &mut out,
            "gpupool_broker_leader",
            "1 while this broker leads (may change the pool), 0 once it lost its leadership.",
            &[("", if self.is_leader() { 1.0 } else { 0.0 })],
        );
        gauge(
            &mut out,
            "gpupool_gpu_capacity",
            "GPU compute in the pool, in GPUs.",
            &[("", pool.capacity_milli as f64 / 1000.0)],
        );
        gauge(
            &mut out,
            "gpupool_gpu_allocated",
            "GPU compute granted to active leases, in GPUs.",
            &[("", pool.allocated_milli as f64 / 1000.0)],
        );
        gauge(&mut out, "gpupool_gpus", "GPUs registered.", &[("", pool.gpus as f64)]);
        gauge(
            &mut out,
            "gpupool_fragmentation_ratio",
            "Share of free compute on placeable GPUs that sits on partly granted GPUs.",
            &[("", pool.fragmentation)],
        );
        let server_labels: Vec<(String, f64)> = ["up", "cordoned", "draining", "down"]
            .iter()
            .map(|s| (format!("state=\"{s}\""), *pool.servers.get(*s).unwrap_or(&0) as f64))
            .collect();
        let server_labels: Vec<(&str, f64)> = server_labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        gauge(&mut out, "gpupool_servers", "GPU servers by state.", &server_labels);
        let lease_labels: Vec<(String, f64)> = pool
            .leases
            .iter()
            .map(|(s, n)| (format!("state=\"{s}\""), *n as f64))
            .collect();
        let lease_labels: Vec<(&str, f64)> = lease_labels.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        gauge(
            &mut out,
            "gpupool_leases",
            "Leases the broker remembers, by state.",
            &lease_labels,
        );
        self.metrics.render_counters(&mut out);
        out
    }
}

/// Rebuilds the placement engine from the servers and puts every active
/// lease back; leases whose GPUs are gone are marked lost.
fn rebuild(policy: Policy, st: &mut State, now: u64) -> Result<Vec<Write>, BrokerError> {
    let inventory = Inventory::new(
        st.servers
            .values()
            .map(|r| Server {
                name: r.registration.name.clone(),
                gpus: r.registration.gpus.clone(),
                cpu_milli: r.registration.cpu_milli,
                memory_mib: r.registration.memory_mib,
                nics: r.registration.nics.clone(),
                state: r.state(),
            })
            .collect(),
    );
    st.engine = PlacementEngine::new(&inventory, PoolConfig::with_policy(policy))
        .map_err(|e| BrokerError::Internal(format!("cannot build the placement pool: {e}")))?;
    st.allocations.clear();
    let mut writes = Vec::new();
    let active: Vec<u64> = st
        .leases
        .values()
        .filter(|l| l.state == LeaseState::Active)
        .map(|l| l.id)
        .collect();
    for id in active {
        let Some(mut lease) = st.leases.remove(&id) else {
            continue;
        };
        match restore_allocation(st, &mut lease) {
            Ok(allocation) => {
                st.allocations.insert(id, allocation);
            }
            Err(why) => {
                warn!(lease = id, "{why}");
                lease.state = LeaseState::Lost;
                lease.reason = Some(format!("lease lost: {why}; request a new lease"));
                lease.ended_at_ms = Some(now);
                writes.push(put_lease(&lease)?);
            }
        }
        st.leases.insert(id, lease);
    }
    Ok(writes)
}

/// The `meta` record of the public key the pool's tokens verify with.
const PUBLIC_KEY: &str = "public_key";

/// Compares this broker's signing key with the one recorded in the store:
/// brokers sharing a replicated store must sign alike, or the GPU servers
/// would refuse the tokens of whichever is not the first. The write records
/// the key when the store has none (or, embedded, when the key was changed).
fn check_signing_key(store: &dyn Store, signer: &LeaseSigner) -> Result<Option<Write>, BrokerError> {
    let ours = signer.public_key().to_text();
    let mut recorded: Option<String> = None;
    for (k, v) in store.load(Table::Meta)? {
        if k == PUBLIC_KEY {
            recorded = Some(decode(Table::Meta, &k, &v)?);
        }
    }
    match recorded {
        Some(key) if key == ours => Ok(None),
        Some(key) if store.replicated() => Err(BrokerError::KeyMismatch(format!(
            "this broker signs with public key {ours}, but the pool's leases are signed with {key}: \
             give every broker of the pool the same signing_key_file"
        ))),
        Some(key) => {
            warn!(
                previous = %key,
                now = %ours,
                "the signing key changed: GPU servers that verify with the previous public key refuse the new tokens"
            );
            Ok(Some(put(Table::Meta, PUBLIC_KEY, &ours)?))
        }
        None if store.is_leader() => Ok(Some(put(Table::Meta, PUBLIC_KEY, &ours)?)),
        None => Ok(None),
    }
}

/// Reads the whole state from the store and rebuilds the placement pool;
/// also the records the rebuild changed (leases whose GPUs are gone).
fn load_state(store: &dyn Store, policy: Policy) -> Result<(State, Vec<Write>), BrokerError> {
    let mut servers = BTreeMap::new();
    for (k, v) in store.load(Table::Servers)? {
        let record: ServerRecord = decode(Table::Servers, &k, &v)?;
        servers.insert(record.registration.name.clone(), record);
    }
    let mut tenants = BTreeMap::new();
    for (k, v) in store.load(Table::Tenants)? {
        let t: Tenant = decode(Table::Tenants, &k, &v)?;
        tenants.insert(t.name.clone(), t);
    }
    // Holders could not renew while no broker ran: every live lease gets
    // a full TTL from now.
    let now = now_ms();
    let mut leases = BTreeMap::new();
    for (k, v) in store.load(Table::Leases)? {
        let mut l: Lease = decode(Table::Leases, &k, &v)?;
        if !l.state.is_ended() {
            l.expires_at_ms = l.expires_at_ms.max(now.saturating_add(l.ttl_ms));
        }
        leases.insert(l.id, l);
    }
    let mut next_lease = leases.keys().next_back().map_or(1, |id| id + 1);
    for (k, v) in store.load(Table::Meta)? {
        if k == "next_lease" {
            let n: u64 = decode(Table::Meta, &k, &v)?;
            next_lease = next_lease.max(n);
        }
    }
    let engine = PlacementEngine::new(&Inventory::default(), PoolConfig::with_policy(policy))
        .map_err(|e| BrokerError::Internal(e.to_string()))?;
    let mut state = State {
        servers,
        engine,
        leases,
        allocations: HashMap::new(),
        tenants,
        explanations: HashMap::new(),
        next_lease,
    };
    let writes = rebuild(policy, &mut state, now)?;
    Ok((state, writes))
}

enum Attempt {
    /// Placed; the leases preempted for it (to be ended by the caller).
    Granted(Vec<u64>),
    /// Not now: the reason, and whether it is the quota (else capacity).
    Waiting(String, bool),
}

fn validate_request(request: &LeaseRequest) -> Result<(), BrokerError> {
    match (request.gpus, request.slice) {
        (Some(n), None) if n == 0 || n as usize > crate::inventory::MAX_GPUS_PER_SERVER => {
            Err(BrokerError::BadRequest(format!(
                "gpus = {n}: a request takes 1 to {} whole GPUs on one server",
                crate::inventory::MAX_GPUS_PER_SERVER
            )))
        }
        (Some(_), None) => Ok(()),
        (None, Some(s)) if s.compute_milli == 0 || s.compute_milli as u32 > FULL_GPU_MILLI => Err(
            BrokerError::BadRequest(format!("slice compute_milli = {}: use 1..=1000", s.compute_milli)),
        ),
        (None, Some(s)) if s.memory_mib == 0 => {
            Err(BrokerError::BadRequest("slice memory_mib must be at least 1".into()))
        }
        (None, Some(_)) => Ok(()),
        _ => Err(BrokerError::BadRequest(
            "give exactly one of gpus (a number of whole GPUs) or slice ({\"memory_mib\", \"compute_milli\"})".into(),
        )),
    }
}

fn engine_request(st: &State, lease: &Lease) -> Result<Request, BrokerError> {
    let r = &lease.request;
    let mut request = match (r.gpus, r.slice) {
        (Some(n), _) => Request::whole(n),
        (None, Some(s)) => Request::slice(s.compute_milli, s.memory_mib),
        (None, None) => return Err(BrokerError::BadRequest("request asks for no GPU".into())),
    };
    if let Some(model) = &r.model {
        request = request.with_models(st.engine.model_set(&[model]).map_err(|_| {
            BrokerError::BadRequest(format!(
                "no GPU of model {model:?} is registered; the pool has {:?}",
                st.engine.models()
            ))
        })?);
    }
    if let Some(min) = r.min_memory_mib {
        request = request.with_min_memory(min);
    }
    if let Some(hint) = &r.locality {
        request = request.with_locality(LocalityHint {
            server: hint.server.as_deref().and_then(|s| st.engine.server_id(s)),
            numa_node: hint.numa_node,
        });
    }
    request.priority = r.priority;
    request.tenant = Some(lease.tenant.clone());
    Ok(request)
}

/// GPU compute and memory a tenant's active leases hold.
fn usage(st: &State, tenant: &str) -> (u64, u64) {
    st.leases
        .values()
        .filter(|l| l.state == LeaseState::Active && l.tenant == tenant)
        .fold((0, 0), |(m, mem), l| (m + l.gpu_milli(), mem + l.memory_mib()))
}

fn gpus_text(milli: u64) -> String {
    if milli.is_multiple_of(1000) {
        format!("{} GPU", milli / 1000)
    } else {
        format!("{:.3} GPU", milli as f64 / 1000.0)
    }
}

/// Fills a lease from an allocation and activates it.
fn grant(st: &State, lease: &mut Lease, allocation: &Allocation, now: u64) -> Result<(), BrokerError> {
    let name = st
        .engine
        .server_name(allocation.server)
        .ok_or_else(|| BrokerError::Internal("allocation names an unknown server".into()))?
        .to_string();
    let record = st
        .servers
        .get(&name)
        .ok_or_else(|| BrokerError::Internal(format!("server {name} is not registered")))?;
    let mut gpus = Vec::with_capacity(allocation.gpus.len());
    for g in &allocation.gpus {
        let gpu = record
            .registration
            .gpus
            .get(g.gpu as usize)
            .ok_or_else(|| BrokerError::Internal(format!("server {name} has no GPU {}", g.gpu)))?;
        gpus.push(LeaseGrant {
            index: g.gpu,
            uuid: gpu.uuid.clone(),
            compute_milli: g.milli,
            memory_mib: g.memory_mib,
        });
    }
    lease.state = LeaseState::Active;
    lease.reason = None;
    lease.endpoint = Some(record.registration.endpoint.clone());
    lease.nic = allocation
        .nic
        .and_then(|i| record.registration.nics.get(i as usize))
        .map(|n| n.name.clone());
    lease.numa_node = allocation.numa_node;
    lease.server = Some(name);
    lease.gpus = gpus;
    lease.granted_at_ms = Some(now);
    lease.expires_at_ms = now.saturating_add(lease.ttl_ms);
    Ok(())
}

/// Puts an active lease's grants back into the engine, matching GPUs by UUID.
fn restore_allocation(st: &mut State, lease: &mut Lease) -> Result<AllocationId, String> {
    let name = lease.server.clone().unwrap_or_default();
    let record = st
        .servers
        .get(&name)
        .ok_or_else(|| format!("server {name} is no longer registered"))?;
    if record.down {
        return Err(format!("server {name} is down"));
    }
    let mut grants = Vec::with_capacity(lease.gpus.len());
    for g in &mut lease.gpus {
        let index = record
            .registration
            .gpus
            .iter()
            .position(|x| x.uuid == g.uuid)
            .ok_or_else(|| format!("server {name} re-registered without GPU {}", g.uuid))?;
        g.index = index as u8;
        grants.push(GpuGrant {
            gpu: g.index,
            milli: g.compute_milli,
            memory_mib: g.memory_mib,
        });
    }
    let id = st
        .engine
        .server_id(&name)
        .ok_or_else(|| format!("server {name} is not in the pool"))?;
    st.engine
        .reserve(id, &grants, 0, 0, lease.priority, Some(lease.tenant.clone()))
        .map(|a| a.id)
        .map_err(|e| format!("its grants no longer fit server {name}: {e}"))
}

/// Frees lower-priority leases until `request` fits; the leases that had to
/// go are returned (the others are put back). `None` (nothing changed) when
/// even preempting every lower-priority lease would not make it fit.
fn preempt_for(st: &mut State, request: &Request) -> Option<(Allocation, Vec<(u64, Allocation)>)> {
    let mut candidates: Vec<&Lease> = st
        .leases
        .values()
        .filter(|l| l.state == LeaseState::Active && l.priority < request.priority)
        .collect();
    candidates.sort_by_key(|l| (l.priority, std::cmp::Reverse(l.granted_at_ms), std::cmp::Reverse(l.id)));
    let candidates: Vec<u64> = candidates.iter().map(|l| l.id).collect();
    let mut released: Vec<(u64, Allocation)> = Vec::new();
    for id in candidates {
        let Some(aid) = st.allocations.remove(&id) else {
            continue;
        };
        match st.engine.release(aid) {
            Ok(a) => released.push((id, a)),
            Err(_) => continue,
        }
        if let Ok(allocation) = st.engine.place(request) {
            let needed = restore_victims(st, &released);
            return Some((allocation, needed));
        }
    }
    restore_victims(st, &released);
    None
}

/// Puts tentatively released allocations back, newest first; returns the
/// ones that no longer fit.
fn restore_victims(st: &mut State, released: &[(u64, Allocation)]) -> Vec<(u64, Allocation)> {
    let mut gone = Vec::new();
    for (id, a) in released.iter().rev() {
        match st.engine.reserve(
            a.server,
            &a.gpus,
            a.cpu_milli,
            a.memory_mib,
            a.priority,
            a.tenant.clone(),
        ) {
            Ok(back) => {
                st.allocations.insert(*id, back.id);
            }
            Err(_) => gone.push((*id, a.clone())),
        }
    }
    gone.reverse();
    gone
}

/// Ends a live lease, giving its capacity back; the record to persist.
fn end_lease(
    st: &mut State,
    id: u64,
    state: LeaseState,
    reason: String,
    now: u64,
) -> Result<Option<Write>, BrokerError> {
    if let Some(aid) = st.allocations.remove(&id) {
        let _ = st.engine.release(aid);
    }
    let Some(lease) = st.leases.get_mut(&id) else {
        return Ok(None);
    };
    lease.state = state;
    lease.reason = Some(reason);
    lease.ended_at_ms = Some(now);
    Ok(Some(put_lease(lease)?))
}

fn set_engine_state(st: &mut State, name: &str, state: ServerState) {
    if let Some(id) = st.engine.server_id(name) {
        let _ = st.engine.set_server_state(id, state);
    }
}

fn unknown_lease(id: u64) -> BrokerError {
    BrokerError::NotFound(format!(
        "lease {id} is not known to this broker (never granted, or ended long enough ago to be forgotten)"
    ))
}

fn ended(lease: &Lease) -> BrokerError {
    BrokerError::LeaseEnded {
        lease: lease.id,
        state: lease.state.name(),
        reason: lease.reason.clone().unwrap_or_else(|| "ended".into()),
    }
}

pub fn state_name(state: ServerState) -> &'static str {
    match state {
        ServerState::Up => "up",
        ServerState::Cordoned => "cordoned",
        ServerState::Draining => "draining",
        ServerState::Down => "down",
    }
}

fn server_view(st: &State, name: &str) -> Result<ServerView, BrokerError> {
    let r = st
        .servers
        .get(name)
        .ok_or_else(|| BrokerError::NotFound(format!("server {name} is not registered")))?;
    let active: Vec<&Lease> = st
        .leases
        .values()
        .filter(|l| l.state == LeaseState::Active && l.server.as_deref() == Some(name))
        .collect();
    let mut models: Vec<String> = r.registration.gpus.iter().map(|g| g.model.clone()).collect();
    models.dedup();
    Ok(ServerView {
        name: name.to_string(),
        endpoint: r.registration.endpoint.clone(),
        state: r.state(),
        down_reason: r.down_reason.clone(),
        gpus: r.registration.gpus.len(),
        models,
        capacity_milli: r.registration.gpus.len() as u64 * FULL_GPU_MILLI as u64,
        allocated_milli: active.iter().map(|l| l.gpu_milli()).sum(),
        active_leases: active.len(),
        registered_at_ms: r.registered_at_ms,
        last_heartbeat_ms_ago: r.last_heartbeat.elapsed().as_millis() as u64,
        nics: r.registration.nics.clone(),
    })
}

fn tenant_view(st: &State, name: &str) -> Result<TenantView, BrokerError> {
    let t = st.tenants.get(name).ok_or_else(|| {
        BrokerError::NotFound(format!(
            "tenant {name} is not known (it appears with its first request or quota)"
        ))
    })?;
    let (used_gpu_milli, used_memory_mib) = usage(st, name);
    let count = |s: LeaseState| st.leases.values().filter(|l| l.tenant == name && l.state == s).count();
    Ok(TenantView {
        tenant: t.clone(),
        used_gpu_milli,
        used_memory_mib,
        active_leases: count(LeaseState::Active),
        queued_leases: count(LeaseState::Queued),
    })
}

fn fragmentation(st: &State) -> f64 {
    let mut free = 0u64;
    let mut partial = 0u64;
    for (name, r) in &st.servers {
        if !r.state().accepts_placements() {
            continue;
        }
        let Some(id) = st.engine.server_id(name) else { continue };
        for g in 0..r.registration.gpus.len() {
            if let Some((milli, _)) = st.engine.gpu_free(id, g as u8) {
                free += milli as u64;
                if (milli as u32) < FULL_GPU_MILLI {
                    partial += milli as u64;
                }
            }
        }
    }
    if free == 0 {
        0.0
    } else {
        partial as f64 / free as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lease::SliceSpec;
    use crate::store::MemoryStore;

    fn broker(settings: Settings) -> Broker {
        Broker::open(settings, Box::new(MemoryStore::new()), LeaseSigner::from_seed([1; 32])).unwrap()
    }

    fn registration(name: &str, gpus: usize) -> Registration {
        let server = Server::uniform(name, "H100", gpus, 80_000, 0, 0);
        Registration {
            name: name.into(),
            endpoint: format!("tcp://{name}:7070"),
            gpus: server.gpus,
            nics: Vec::new(),
            cpu_milli: 0,
            memory_mib: 0,
        }
    }

    fn slice(compute_milli: u16, priority: i32) -> LeaseRequest {
        LeaseRequest {
            slice: Some(SliceSpec {
                memory_mib: 1000,
                compute_milli,
            }),
            priority,
            ..LeaseRequest::default()
        }
    }

    #[test]
    fn re_registration_without_a_gpu_loses_only_its_leases() {
        let b = broker(Settings::default());
        b.register(registration("a", 2)).unwrap();
        let whole = LeaseRequest {
            gpus: Some(1),
            ..LeaseRequest::default()
        };
        let first = b.request(whole.clone()).unwrap().lease;
        let second = b.request(whole).unwrap().lease;
        assert_ne!(first.gpus[0].uuid, second.gpus[0].uuid);
        // The server comes back with only the GPU of the second lease, now
        // at index 0.
        let mut reg = registration("a", 2);
        reg.gpus.retain(|g| g.uuid == second.gpus[0].uuid);
        b.register(reg).unwrap();
        let first = b.lease(first.id).unwrap().lease;
        assert_eq!(first.state, LeaseState::Lost);
        assert!(first.reason.unwrap().contains("re-registered without GPU"));
        let second = b.lease(second.id).unwrap().lease;
        assert_eq!(second.state, LeaseState::Active);
        assert_eq!(second.gpus[0].index, 0);
        assert_eq!(b.pool().allocated_milli, 1000);
    }

    #[test]
    fn preemption_ends_only_the_leases_it_needs() {
        let b = broker(Settings {
            preemption: true,
            admission: Admission::Refuse,
            ..Settings::default()
        });
        b.register(registration("a", 1)).unwrap();
        let older = b.request(slice(600, 0)).unwrap().lease;
        let younger = b.request(slice(300, 0)).unwrap().lease;
        // 500 needs the 600 slice gone; the 300 slice was tried first
        // (youngest), did not suffice, and is put back.
        let high = b.request(slice(500, 5)).unwrap().lease;
        assert_eq!(high.state, LeaseState::Active);
        assert_eq!(b.lease(older.id).unwrap().lease.state, LeaseState::Preempted);
        assert_eq!(b.lease(younger.id).unwrap().lease.state, LeaseState::Active);
        assert_eq!(b.pool().allocated_milli, 800);
        assert!(matches!(
            b.renew(older.id),
            Err(BrokerError::LeaseEnded { state: "preempted", .. })
        ));
        // Nothing of lower priority can make room for a whole GPU: nothing changes.
        let whole = LeaseRequest {
            gpus: Some(1),
            priority: 3,
            ..LeaseRequest::default()
        };
        assert!(matches!(b.request(whole), Err(BrokerError::NoCapacity(_))));
        assert_eq!(b.lease(younger.id).unwrap().lease.state, LeaseState::Active);
        assert_eq!(b.pool().allocated_milli, 800);
    }

    struct Standby(MemoryStore);

    impl Store for Standby {
        fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.0.load(table)
        }
        fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
            self.0.apply(writes)
        }
        fn is_leader(&self) -> bool {
            false
        }
        fn describe(&self) -> String {
            "standby".into()
        }
    }

    /// Fails every write while `failing` is set.
    struct Flaky {
        inner: MemoryStore,
        failing: std::sync::Arc<std::sync::atomic::AtomicBool>,
    }

    impl Store for Flaky {
        fn load(&self, table: Table) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
            self.inner.load(table)
        }
        fn apply(&self, writes: &[Write]) -> Result<(), StoreError> {
            if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StoreError::Backend {
                    op: "write",
                    reason: "disk full".into(),
                });
            }
            self.inner.apply(writes)
        }
        fn describe(&self) -> String {
            "flaky".into()
        }
    }

    #[test]
    fn a_failed_write_leaves_memory_as_the_store_has_it() {
        let failing = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let store = Flaky {
            inner: MemoryStore::new(),
            failing: failing.clone(),
        };
        let b = Broker::open(Settings::default(), Box::new(store), LeaseSigner::from_seed([1; 32])).unwrap();
        b.register(registration("a", 2)).unwrap();
        let kept = b.request(slice(300, 0)).unwrap().lease;
        failing.store(true, std::sync::atomic::Ordering::SeqCst);
        assert!(matches!(b.request(slice(300, 0)), Err(BrokerError::Store(_))));
        assert!(matches!(b.release(kept.id), Err(BrokerError::Store(_))));
        assert!(matches!(b.set_quota("t", Quota::default()), Err(BrokerError::Store(_))));
        // Nothing the store did not take is believed.
        assert_eq!(b.leases().len(), 1);
        assert_eq!(b.lease(kept.id).unwrap().lease.state, LeaseState::Active);
        assert_eq!(b.pool().allocated_milli, 300);
        assert!(b.tenant("t").is_err());
        failing.store(false, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(b.release(kept.id).unwrap().lease.state, LeaseState::Released);
        assert_eq!(b.pool().allocated_milli, 0);
        let next = b.request(slice(300, 0)).unwrap().lease;
        assert!(next.id > kept.id);
    }

    #[test]
    fn a_standby_broker_changes_nothing() {
        let b = Broker::open(
            Settings::default(),
            Box::new(Standby(MemoryStore::new())),
            LeaseSigner::from_seed([1; 32]),
        )
        .unwrap();
        assert!(matches!(
            b.register(registration("a", 1)),
            Err(BrokerError::Store(StoreError::NotLeader))
        ));
    }
}
