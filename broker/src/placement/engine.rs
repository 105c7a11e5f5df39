//! The placement engine: indexes, candidate gathering, scoring and commit.

use std::cell::Cell;
use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tracing::{debug, trace};

use super::fragmentation::{GpuNeed, ShapeKey, TypicalMix};
use super::index::BucketIndex;
use super::topology::{bits, TopologyView};
use super::{
    Allocation, AllocationId, CandidateScore, Explanation, GpuDemand, GpuGrant, ModelSet, PlacementError, Policy,
    PoolConfig, Request, ServerId,
};
use crate::inventory::{Inventory, ServerState, FULL_GPU_MILLI, MAX_GPUS_PER_SERVER};

const FULL: u16 = FULL_GPU_MILLI as u16;
/// Host-only requests are filed by free CPU in whole cores, capped here.
const HOST_BUCKETS: usize = 1024;
/// Tries at drawing a feasible random candidate before falling back to a scan.
const RANDOM_TRIES: usize = 32;

#[derive(Debug, Clone)]
struct GpuSlot {
    server: u32,
    model: u16,
    milli_free: u16,
    memory_free: u64,
    memory_capacity: u64,
}

impl GpuSlot {
    fn is_untouched(&self) -> bool {
        self.milli_free == FULL && self.memory_free == self.memory_capacity
    }
}

#[derive(Debug, Clone)]
struct ServerSlot {
    name: String,
    state: ServerState,
    first_gpu: u32,
    gpu_count: u32,
    cpu_capacity: u64,
    cpu_free: u64,
    memory_capacity: u64,
    memory_free: u64,
    gpu_milli_free: u64,
    numa: Vec<u16>,
    nvlink: Vec<u32>,
    full_nvlink: bool,
    has_nvlink: bool,
    rdma_numa_mask: u64,
    nics: Vec<(u16, bool)>,
    models: u64,
    /// Bumped on every change, so cached fragmentation goes stale.
    version: u64,
}

impl ServerSlot {
    fn gpu_milli_capacity(&self) -> u64 {
        self.gpu_count as u64 * FULL_GPU_MILLI as u64
    }

    fn host_fits(&self, request: &Request) -> bool {
        self.cpu_free >= request.cpu_milli && self.memory_free >= request.memory_mib
    }

    fn topology(&self) -> TopologyView<'_> {
        TopologyView {
            numa: &self.numa,
            nvlink: &self.nvlink,
            full_nvlink: self.full_nvlink,
            has_nvlink: self.has_nvlink,
            rdma_numa_mask: self.rdma_numa_mask,
            has_nics: !self.nics.is_empty(),
        }
    }
}

/// One scored way of placing the request on one server.
#[derive(Debug, Clone, Copy)]
struct Choice {
    server: u32,
    /// GPUs used, as a bitmask of indices within the server.
    gpus: u32,
    rank: u8,
    affinity: u8,
    score: f64,
    tie: f64,
}

impl Choice {
    fn better_than(&self, other: &Choice) -> bool {
        (self.rank, self.affinity)
            .cmp(&(other.rank, other.affinity))
            .then(self.score.total_cmp(&other.score))
            .then(self.tie.total_cmp(&other.tie))
            .is_lt()
    }
}

/// A pool of servers and the state of every GPU in it; see the module docs.
#[derive(Debug)]
pub struct PlacementEngine {
    config: PoolConfig,
    models: Vec<String>,
    servers: Vec<ServerSlot>,
    gpus: Vec<GpuSlot>,
    /// Per model: servers by how many untouched GPUs of that model they have.
    whole_index: Vec<BucketIndex>,
    /// Per model: GPUs by free thousandths (1..=1000).
    slice_index: Vec<BucketIndex>,
    /// Servers by free CPU cores, for host-only requests.
    host_index: BucketIndex,
    allocations: HashMap<u64, Allocation>,
    next_allocation: u64,
    rng: StdRng,
    mix: TypicalMix,
    /// Per server: (version, mix generation, expected fragmentation).
    /// Interior-mutable so that scoring can stay a shared borrow.
    fragmentation_cache: Vec<Cell<(u64, u64, f64)>>,
    /// Per server: the gather pass that last took it, to take each once.
    taken: Vec<u32>,
    pass: u32,
    candidates: Vec<u32>,
    allocated_milli: u64,
    capacity_milli: u64,
}

impl PlacementEngine {
    /// Builds a pool over `inventory`; every server starts with nothing allocated.
    pub fn new(inventory: &Inventory, config: PoolConfig) -> Result<Self, PlacementError> {
        inventory.validate()?;
        let mut models: Vec<String> = Vec::new();
        let mut servers = Vec::with_capacity(inventory.servers.len());
        let mut gpus = Vec::with_capacity(inventory.gpu_count());
        for (s, server) in inventory.servers.iter().enumerate() {
            let first_gpu = gpus.len() as u32;
            let mut model_mask = 0u64;
            for gpu in &server.gpus {
                let model = match models.iter().position(|m| *m == gpu.model) {
                    Some(i) => i,
                    None => {
                        models.push(gpu.model.clone());
                        models.len() - 1
                    }
                };
                model_mask |= 1 << model;
                gpus.push(GpuSlot {
                    server: s as u32,
                    model: model as u16,
                    milli_free: FULL,
                    memory_free: gpu.memory_mib,
                    memory_capacity: gpu.memory_mib,
                });
            }
            let nvlink: Vec<u32> = server
                .gpus
                .iter()
                .map(|g| g.nvlink_peers.iter().fold(0u32, |m, &p| m | (1 << p)))
                .collect();
            let count = server.gpus.len();
            let all = if count == 0 { 0 } else { (1u64 << count) as u32 - 1 };
            let full_nvlink = count > 1 && nvlink.iter().enumerate().all(|(i, &m)| (m | (1 << i)) & all == all);
            let rdma_numa_mask = server
                .nics
                .iter()
                .filter(|n| n.rdma && n.numa_node < 64)
                .fold(0u64, |m, n| m | (1 << n.numa_node));
            servers.push(ServerSlot {
                name: server.name.clone(),
                state: server.state,
                first_gpu,
                gpu_count: count as u32,
                cpu_capacity: server.cpu_milli,
                cpu_free: server.cpu_milli,
                memory_capacity: server.memory_mib,
                memory_free: server.memory_mib,
                gpu_milli_free: count as u64 * FULL_GPU_MILLI as u64,
                numa: server.gpus.iter().map(|g| g.numa_node).collect(),
                has_nvlink: nvlink.iter().any(|&m| m != 0),
                nvlink,
                full_nvlink,
                rdma_numa_mask,
                nics: server.nics.iter().map(|n| (n.numa_node, n.rdma)).collect(),
                models: model_mask,
                version: 0,
            });
        }
        let capacity_milli = gpus.len() as u64 * FULL_GPU_MILLI as u64;
        let mut engine = PlacementEngine {
            config,
            whole_index: (0..models.len())
                .map(|_| BucketIndex::new(MAX_GPUS_PER_SERVER + 1, servers.len()))
                .collect(),
            slice_index: (0..models.len())
                .map(|_| BucketIndex::new(FULL as usize + 1, gpus.len()))
                .collect(),
            host_index: BucketIndex::new(HOST_BUCKETS, servers.len()),
            models,
            fragmentation_cache: vec![Cell::new((u64::MAX, 0, 0.0)); servers.len()],
            taken: vec![0; servers.len()],
            servers,
            gpus,
            allocations: HashMap::new(),
            next_allocation: 1,
            rng: StdRng::seed_from_u64(config.seed),
            mix: TypicalMix::new(config.typical_coverage),
            pass: 0,
            candidates: Vec::new(),
            allocated_milli: 0,
            capacity_milli,
        };
        for s in 0..engine.servers.len() {
            engine.reindex(s);
        }
        debug!(
            servers = engine.servers.len(),
            gpus = engine.gpus.len(),
            policy = %config.policy,
            "placement pool built"
        );
        Ok(engine)
    }

    pub fn policy(&self) -> Policy {
        self.config.policy
    }

    /// The set of the named models, for [`Request::with_models`].
    pub fn model_set<S: AsRef<str>>(&self, names: &[S]) -> Result<ModelSet, PlacementError> {
        let mut set = 0u64;
        for name in names {
            let name = name.as_ref();
            let i = self
                .models
                .iter()
                .position(|m| m == name)
                .ok_or_else(|| PlacementError::UnknownModel(name.to_string()))?;
            set |= 1 << i;
        }
        Ok(ModelSet(set))
    }

    /// GPU models of the pool, in the order model sets number them.
    pub fn models(&self) -> &[String] {
        &self.models
    }

    pub fn server_count(&self) -> usize {
        self.servers.len()
    }

    pub fn server_id(&self, name: &str) -> Option<ServerId> {
        self.servers
            .iter()
            .position(|s| s.name == name)
            .map(|i| ServerId(i as u32))
    }

    pub fn server_name(&self, server: ServerId) -> Option<&str> {
        self.servers.get(server.0 as usize).map(|s| s.name.as_str())
    }

    /// Free thousandths and free memory of one GPU.
    pub fn gpu_free(&self, server: ServerId, gpu: u8) -> Option<(u16, u64)> {
        let s = self.servers.get(server.0 as usize)?;
        if gpu as u32 >= s.gpu_count {
            return None;
        }
        let g = &self.gpus[(s.first_gpu + gpu as u32) as usize];
        Some((g.milli_free, g.memory_free))
    }

    /// Free host CPU (thousandths) and memory of a server.
    pub fn host_free(&self, server: ServerId) -> Option<(u64, u64)> {
        self.servers.get(server.0 as usize).map(|s| (s.cpu_free, s.memory_free))
    }

    /// GPU compute granted across the pool, in thousandths of a GPU.
    pub fn allocated_gpu_milli(&self) -> u64 {
        self.allocated_milli
    }

    /// GPU compute of the whole pool, in thousandths of a GPU.
    pub fn gpu_capacity_milli(&self) -> u64 {
        self.capacity_milli
    }

    pub fn allocation(&self, id: AllocationId) -> Option<&Allocation> {
        self.allocations.get(&id.0)
    }

    pub fn allocation_count(&self) -> usize {
        self.allocations.len()
    }

    /// Typical task shapes the fragmentation policy currently weighs.
    pub fn typical_shape_count(&self) -> usize {
        self.mix.shape_count()
    }

    /// Changes a server's state; servers not `Up` get no new placements but
    /// keep what they hold.
    pub fn set_server_state(&mut self, server: ServerId, state: ServerState) -> Result<(), PlacementError> {
        let s = server.0 as usize;
        let slot = self.servers.get_mut(s).ok_or(PlacementError::UnknownServer(server.0))?;
        slot.state = state;
        slot.version += 1;
        self.reindex(s);
        Ok(())
    }

    /// Places a request, or says why it cannot be placed.
    pub fn place(&mut self, request: &Request) -> Result<Allocation, PlacementError> {
        self.decide(request, None)
    }

    /// Places a request and also explains the decision: every candidate
    /// scored and the one chosen. Costs more than [`place`](Self::place).
    pub fn place_explained(&mut self, request: &Request) -> (Result<Allocation, PlacementError>, Explanation) {
        let mut why = Explanation {
            policy: Some(self.config.policy),
            ..Explanation::default()
        };
        let result = self.decide(request, Some(&mut why));
        (result, why)
    }

    /// Counts a request's shape into the typical task mix the fragmentation
    /// policy weighs, without placing it: every placement does this itself;
    /// call it directly to teach the pool a forecast workload.
    pub fn observe(&mut self, request: &Request) {
        let need = match request.gpus {
            GpuDemand::None => return,
            GpuDemand::Whole { count } => GpuNeed::Whole(count),
            GpuDemand::Slice { milli, .. } => GpuNeed::Slice(milli),
        };
        self.mix.observe(ShapeKey {
            need,
            cpu_milli: request.cpu_milli,
            memory_mib: request.memory_mib,
        });
    }

    /// Gives an allocation's capacity back.
    pub fn release(&mut self, id: AllocationId) -> Result<Allocation, PlacementError> {
        let allocation = self
            .allocations
            .remove(&id.0)
            .ok_or(PlacementError::UnknownAllocation(id.0))?;
        let s = allocation.server.0 as usize;
        let first = self.servers[s].first_gpu;
        for grant in &allocation.gpus {
            let gpu = &mut self.gpus[(first + grant.gpu as u32) as usize];
            gpu.milli_free += grant.milli;
            gpu.memory_free += grant.memory_mib;
            self.allocated_milli -= grant.milli as u64;
        }
        let server = &mut self.servers[s];
        server.cpu_free += allocation.cpu_milli;
        server.memory_free += allocation.memory_mib;
        server.gpu_milli_free += allocation.gpus.iter().map(|g| g.milli as u64).sum::<u64>();
        server.version += 1;
        trace!(allocation = id.0, server = %server.name, "released");
        self.reindex(s);
        Ok(allocation)
    }

    /// Takes exactly the given grants on `server`, as an earlier decision
    /// made them: how a broker restores its leases into a rebuilt pool
    /// (after a restart or a server's re-registration) and puts back leases
    /// it tentatively released. Refused, changing nothing, when a GPU index
    /// is out of range or lacks the free capacity; the server's state is not
    /// checked, so leases on cordoned or draining servers come back too.
    pub fn reserve(
        &mut self,
        server: ServerId,
        grants: &[GpuGrant],
        cpu_milli: u64,
        memory_mib: u64,
        priority: i32,
        tenant: Option<String>,
    ) -> Result<Allocation, PlacementError> {
        let s = server.0 as usize;
        let slot = self.servers.get(s).ok_or(PlacementError::UnknownServer(server.0))?;
        let first = slot.first_gpu;
        let mut seen = 0u32;
        for grant in grants {
            let free = self.gpu_free(server, grant.gpu).ok_or_else(|| {
                PlacementError::InvalidRequest(format!("server {} has no GPU {}", slot.name, grant.gpu))
            })?;
            if seen & (1 << grant.gpu) != 0 {
                return Err(PlacementError::InvalidRequest(format!(
                    "GPU {} granted twice",
                    grant.gpu
                )));
            }
            seen |= 1 << grant.gpu;
            if grant.milli == 0 || free.0 < grant.milli || free.1 < grant.memory_mib {
                return Err(PlacementError::NoCapacity {
                    demand: format!(
                        "{}/1000 of GPU {} with {} MiB on server {} (free: {}/1000, {} MiB)",
                        grant.milli, grant.gpu, grant.memory_mib, slot.name, free.0, free.1
                    ),
                });
            }
        }
        if slot.cpu_free < cpu_milli || slot.memory_free < memory_mib {
            return Err(PlacementError::NoCapacity {
                demand: format!("{cpu_milli} mCPU, {memory_mib} MiB host memory on server {}", slot.name),
            });
        }
        for grant in grants {
            let gpu = &mut self.gpus[(first + grant.gpu as u32) as usize];
            gpu.milli_free -= grant.milli;
            gpu.memory_free -= grant.memory_mib;
            self.allocated_milli += grant.milli as u64;
        }
        let slot = &mut self.servers[s];
        slot.cpu_free -= cpu_milli;
        slot.memory_free -= memory_mib;
        slot.gpu_milli_free -= grants.iter().map(|g| g.milli as u64).sum::<u64>();
        slot.version += 1;
        let numa_node = grants
            .first()
            .map(|g| slot.numa[g.gpu as usize])
            .filter(|&n| grants.iter().all(|g| slot.numa[g.gpu as usize] == n));
        let nic = pick_nic(&slot.nics, numa_node);
        let id = AllocationId(self.next_allocation);
        self.next_allocation += 1;
        let allocation = Allocation {
            id,
            server,
            gpus: grants.to_vec(),
            cpu_milli,
            memory_mib,
            numa_node,
            nic,
            priority,
            tenant,
        };
        self.reindex(s);
        self.allocations.insert(id.0, allocation.clone());
        Ok(allocation)
    }

    fn validate(&self, request: &Request) -> Result<(), PlacementError> {
        match request.gpus {
            GpuDemand::Whole { count } if count == 0 || count as usize > MAX_GPUS_PER_SERVER => {
                Err(PlacementError::InvalidRequest(format!(
                    "asks for {count} whole GPUs; a gang must be 1..={MAX_GPUS_PER_SERVER}"
                )))
            }
            GpuDemand::Slice { milli, .. } if milli == 0 || milli > FULL => Err(PlacementError::InvalidRequest(
                format!("slice of {milli} thousandths; must be 1..=1000"),
            )),
            _ => Ok(()),
        }
    }

    fn decide(&mut self, request: &Request, mut why: Option<&mut Explanation>) -> Result<Allocation, PlacementError> {
        self.validate(request)?;
        if self.config.policy == Policy::Fragmentation {
            self.observe(request);
        }
        self.gather(request);
        let mut best: Option<Choice> = None;
        let candidates = std::mem::take(&mut self.candidates);
        for &s in &candidates {
            let Some(choice) = self.evaluate(s, request) else {
                continue;
            };
            if let Some(why) = why.as_deref_mut() {
                why.candidates.push(CandidateScore {
                    server: ServerId(s),
                    server_name: self.servers[s as usize].name.clone(),
                    gpus: bits(choice.gpus).map(|g| g as u8).collect(),
                    topology_rank: choice.rank,
                    score: choice.score,
                    tie_break: choice.tie,
                });
            }
            if best.as_ref().is_none_or(|b| choice.better_than(b)) {
                if let Some(why) = why.as_deref_mut() {
                    why.chosen = Some(why.candidates.len() - 1);
                }
                best = Some(choice);
            }
        }
        self.candidates = candidates;
        match best {
            Some(choice) => Ok(self.commit(choice, request)),
            None => {
                let demand = describe(request);
                if let Some(why) = why {
                    why.note = format!("nothing fits {demand}");
                }
                trace!(%demand, "unplaceable");
                Err(PlacementError::NoCapacity { demand })
            }
        }
    }

    /// Fills `self.candidates` with servers worth scoring.
    fn gather(&mut self, request: &Request) {
        self.candidates.clear();
        self.pass = self.pass.wrapping_add(1);
        if self.pass == 0 {
            self.taken.iter_mut().for_each(|t| *t = 0);
            self.pass = 1;
        }
        let limits = self.config.limits;
        let (per_bucket, total, descending) = match self.config.policy {
            Policy::BestFit | Policy::Packing => (limits.total, limits.total, false),
            Policy::Spread => (limits.total, limits.total, true),
            Policy::DotProduct | Policy::Fragmentation => (limits.per_bucket, limits.total, false),
            Policy::Random => {
                if self.gather_random(request) {
                    return;
                }
                // Few feasible candidates hide among many infeasible ones:
                // scan, then choose among what the scan found at random.
                (limits.total, limits.total, false)
            }
        };
        match request.gpus {
            GpuDemand::Whole { count } => {
                for m in 0..self.models.len() {
                    if !request.models.allows(m as u16) {
                        continue;
                    }
                    let mut taken_here = 0;
                    let index = &self.whole_index[m];
                    'buckets: for b in index.buckets_in(count as usize, index.bucket_count() - 1, descending) {
                        let mut from_bucket = 0;
                        for &s in index.bucket(b) {
                            let server = &self.servers[s as usize];
                            if self.taken[s as usize] == self.pass || !server.host_fits(request) {
                                continue;
                            }
                            self.taken[s as usize] = self.pass;
                            self.candidates.push(s);
                            taken_here += 1;
                            from_bucket += 1;
                            if taken_here >= total {
                                break 'buckets;
                            }
                            if from_bucket >= per_bucket {
                                break;
                            }
                        }
                    }
                }
            }
            GpuDemand::Slice { milli, memory_mib } => {
                for m in 0..self.models.len() {
                    if !request.models.allows(m as u16) {
                        continue;
                    }
                    let mut taken_here = 0;
                    let index = &self.slice_index[m];
                    'buckets: for b in index.buckets_in(milli as usize, FULL as usize, descending) {
                        let mut from_bucket = 0;
                        for &g in index.bucket(b) {
                            let gpu = &self.gpus[g as usize];
                            let s = gpu.server as usize;
                            if self.taken[s] == self.pass
                                || gpu.memory_free < memory_mib
                                || gpu.memory_capacity < request.min_memory_mib
                                || !self.servers[s].host_fits(request)
                            {
                                continue;
                            }
                            self.taken[s] = self.pass;
                            self.candidates.push(s as u32);
                            taken_here += 1;
                            from_bucket += 1;
                            if taken_here >= total {
                                break 'buckets;
                            }
                            if from_bucket >= per_bucket {
                                break;
                            }
                        }
                    }
                }
            }
            GpuDemand::None => {
                let index = &self.host_index;
                let lowest = (request.cpu_milli / 1000).min(HOST_BUCKETS as u64 - 1) as usize;
                let mut taken_here = 0;
                'host: for b in index.buckets_in(lowest, HOST_BUCKETS - 1, descending) {
                    let mut from_bucket = 0;
                    for &s in index.bucket(b) {
                        if !self.servers[s as usize].host_fits(request) {
                            continue;
                        }
                        self.candidates.push(s);
                        taken_here += 1;
                        from_bucket += 1;
                        if taken_here >= total {
                            break 'host;
                        }
                        if from_bucket >= per_bucket {
                            break;
                        }
                    }
                }
            }
        }
        if self.config.policy == Policy::Random && self.candidates.len() > 1 {
            let pick = self.candidates[self.rng.gen_range(0..self.candidates.len())];
            self.candidates.clear();
            self.candidates.push(pick);
        }
        self.add_hinted_server(request);
    }

    fn add_hinted_server(&mut self, request: &Request) {
        if let Some(ServerId(s)) = request.locality.server {
            let i = s as usize;
            if i < self.servers.len()
                && self.taken[i] != self.pass
                && self.servers[i].state.accepts_placements()
                && !self.candidates.contains(&s)
            {
                self.taken[i] = self.pass;
                self.candidates.push(s);
            }
        }
    }

    /// Draws one candidate uniformly from the index entries that could fit;
    /// false when no draw found a feasible one.
    fn gather_random(&mut self, request: &Request) -> bool {
        let (lowest, highest) = match request.gpus {
            GpuDemand::Whole { count } => (count as usize, MAX_GPUS_PER_SERVER),
            GpuDemand::Slice { milli, .. } => (milli as usize, FULL as usize),
            GpuDemand::None => (
                (request.cpu_milli / 1000).min(HOST_BUCKETS as u64 - 1) as usize,
                HOST_BUCKETS - 1,
            ),
        };
        let indexes: Vec<&BucketIndex> = self.indexes_for(request);
        let population: usize = indexes.iter().map(|ix| ix.count_in(lowest, highest)).sum();
        if population == 0 {
            return false;
        }
        for _ in 0..RANDOM_TRIES {
            let r = self.rng.gen_range(0..population);
            let salt: u64 = self.rng.gen();
            let this = &*self;
            let mut r = r;
            let mut drawn = None;
            'find: for ix in this.indexes_for(request) {
                for b in ix.buckets_in(lowest, highest, false) {
                    let bucket = ix.bucket(b);
                    if r < bucket.len() {
                        drawn = Some(bucket[r]);
                        break 'find;
                    }
                    r -= bucket.len();
                }
            }
            let Some(key) = drawn else { continue };
            let s = match request.gpus {
                GpuDemand::Slice { .. } => this.gpus[key as usize].server,
                _ => key,
            };
            if this.evaluate_with(s, request, salt).is_some() {
                self.taken[s as usize] = self.pass;
                self.candidates.push(s);
                return true;
            }
        }
        false
    }

    /// The indexes a request's candidates are filed in.
    fn indexes_for(&self, request: &Request) -> Vec<&BucketIndex> {
        match request.gpus {
            GpuDemand::Whole { .. } => self
                .whole_index
                .iter()
                .enumerate()
                .filter(|(m, _)| request.models.allows(*m as u16))
                .map(|(_, ix)| ix)
                .collect(),
            GpuDemand::Slice { .. } => self
                .slice_index
                .iter()
                .enumerate()
                .filter(|(m, _)| request.models.allows(*m as u16))
                .map(|(_, ix)| ix)
                .collect(),
            GpuDemand::None => vec![&self.host_index],
        }
    }

    /// Scores placing `request` on server `s`, choosing its GPUs; `None` when
    /// it does not fit.
    fn evaluate(&mut self, s: u32, request: &Request) -> Option<Choice> {
        let policy = self.config.policy;
        let salt: u64 = if policy == Policy::Random { self.rng.gen() } else { 0 };
        let this = &*self;
        this.evaluate_with(s, request, salt)
    }

    fn evaluate_with(&self, s: u32, request: &Request, salt: u64) -> Option<Choice> {
        let policy = self.config.policy;
        let server = &self.servers[s as usize];
        if !server.state.accepts_placements() || !server.host_fits(request) {
            return None;
        }
        let affinity = u8::from(request.locality.server.is_some_and(|h| h.0 != s));
        let first = server.first_gpu as usize;
        let gpus = &self.gpus[first..first + server.gpu_count as usize];
        let capacity = server.gpu_milli_capacity().max(1) as f64;
        let cpu_left = (server.cpu_free - request.cpu_milli) as f64 / server.cpu_capacity.max(1) as f64;
        let memory_left = (server.memory_free - request.memory_mib) as f64 / server.memory_capacity.max(1) as f64;
        let untouched = gpus.iter().filter(|g| g.is_untouched()).count() as f64;
        let mut choice = Choice {
            server: s,
            gpus: 0,
            rank: 0,
            affinity,
            score: 0.0,
            tie: 0.0,
        };
        match request.gpus {
            GpuDemand::Whole { count } => {
                let eligible = gpus.iter().enumerate().fold(0u32, |mask, (i, g)| {
                    let ok = g.is_untouched()
                        && request.models.allows(g.model)
                        && g.memory_capacity >= request.min_memory_mib;
                    mask | (u32::from(ok) << i)
                });
                let (set, rank) =
                    server
                        .topology()
                        .choose_whole(eligible, count as usize, request.locality.numa_node)?;
                choice.gpus = set;
                choice.rank = rank;
                let untouched_after = untouched - count as f64;
                let gpu_free_after = server.gpu_milli_free as f64 - 1000.0 * count as f64;
                let used_before = 1.0 - server.gpu_milli_free as f64 / capacity;
                (choice.score, choice.tie) = match policy {
                    Policy::BestFit => (untouched_after, gpu_free_after / capacity + cpu_left),
                    Policy::Packing => {
                        let idle = server.gpu_milli_free == server.gpu_milli_capacity();
                        (if idle { 2.0 } else { 0.0 } - used_before, untouched_after)
                    }
                    Policy::Spread => (-gpu_free_after / capacity, -cpu_left),
                    Policy::DotProduct => (-self.dot(s, request), untouched_after),
                    Policy::Random => (0.0, 0.0),
                    Policy::Fragmentation => (self.fragmentation_delta(s, request, set), untouched_after),
                };
            }
            GpuDemand::Slice { milli, memory_mib } => {
                let view = server.topology();
                let mut best: Option<((u8, u8), f64, usize)> = None;
                let mut seen_free: [u16; MAX_GPUS_PER_SERVER] = [0; MAX_GPUS_PER_SERVER];
                let mut seen_delta = [0.0f64; MAX_GPUS_PER_SERVER];
                let mut seen = 0usize;
                for (i, g) in gpus.iter().enumerate() {
                    if g.milli_free < milli
                        || g.memory_free < memory_mib
                        || !request.models.allows(g.model)
                        || g.memory_capacity < request.min_memory_mib
                    {
                        continue;
                    }
                    let numa = server.numa[i];
                    let near = (
                        view.nic_penalty(numa),
                        u8::from(request.locality.numa_node.is_some_and(|p| p != numa)),
                    );
                    let key = match policy {
                        Policy::Spread => -(g.milli_free as f64),
                        // Uniform among feasible GPUs: a per-GPU pseudo-random key.
                        Policy::Random => mix64(salt ^ i as u64) as f64,
                        Policy::Fragmentation => {
                            // GPUs with equal free shares give equal results.
                            match seen_free[..seen].iter().position(|&f| f == g.milli_free) {
                                Some(j) => seen_delta[j],
                                None => {
                                    let d = self.fragmentation_delta(s, request, 1 << i);
                                    seen_free[seen] = g.milli_free;
                                    seen_delta[seen] = d;
                                    seen += 1;
                                    d + g.milli_free as f64 * 1e-6
                                }
                            }
                        }
                        _ => g.milli_free as f64,
                    };
                    if best.is_none_or(|(n, k, _)| (near, key) < (n, k)) {
                        best = Some((near, key, i));
                    }
                }
                let (_, key, i) = best?;
                let g = &gpus[i];
                choice.gpus = 1 << i;
                let left = (g.milli_free - milli) as f64;
                let untouched_after = untouched - f64::from(u8::from(g.is_untouched()));
                let gpu_free_after = server.gpu_milli_free as f64 - milli as f64;
                let used_before = 1.0 - server.gpu_milli_free as f64 / capacity;
                (choice.score, choice.tie) = match policy {
                    Policy::BestFit => (left, untouched_after + cpu_left),
                    Policy::Packing => {
                        let tier = if g.milli_free < FULL {
                            0.0
                        } else if server.gpu_milli_free < server.gpu_milli_capacity() {
                            2.0
                        } else {
                            4.0
                        };
                        (tier - used_before, left)
                    }
                    Policy::Spread => (-gpu_free_after / capacity, -left),
                    Policy::DotProduct => (-self.dot(s, request), left),
                    Policy::Random => (0.0, 0.0),
                    Policy::Fragmentation => (key, left + untouched_after * 1000.0),
                };
            }
            GpuDemand::None => {
                let left = cpu_left + memory_left;
                let used = 2.0
                    - (server.cpu_free as f64 / server.cpu_capacity.max(1) as f64)
                    - (server.memory_free as f64 / server.memory_capacity.max(1) as f64);
                // Free GPU share counts as leftover too: host-only work then
                // prefers servers whose GPUs are gone (or that have none)
                // instead of starving usable GPUs of CPU.
                let gpu_left = server.gpu_milli_free as f64 / capacity;
                (choice.score, choice.tie) = match policy {
                    Policy::BestFit => (left + gpu_left, 0.0),
                    Policy::Packing => (2.0 * gpu_left - used, left),
                    Policy::Spread => (-left, 0.0),
                    Policy::DotProduct => (-self.dot(s, request), left),
                    Policy::Random => (0.0, 0.0),
                    Policy::Fragmentation => (
                        self.fragmentation_delta(s, request, 0),
                        server.gpu_milli_free as f64 + left,
                    ),
                };
            }
        }
        Some(choice)
    }

    /// Alignment of the request with the server's free resources, each
    /// dimension normalised by the server's capacity (Tetris-style).
    fn dot(&self, s: u32, request: &Request) -> f64 {
        let server = &self.servers[s as usize];
        let cpu_cap = server.cpu_capacity.max(1) as f64;
        let memory_cap = server.memory_capacity.max(1) as f64;
        let gpu_cap = server.gpu_milli_capacity().max(1) as f64;
        (request.cpu_milli as f64 / cpu_cap) * (server.cpu_free as f64 / cpu_cap)
            + (request.memory_mib as f64 / memory_cap) * (server.memory_free as f64 / memory_cap)
            + (request.gpu_milli() as f64 / gpu_cap) * (server.gpu_milli_free as f64 / gpu_cap)
    }

    /// Growth of the server's expected fragmentation if `request` took the
    /// GPUs in `set` (a mask within the server).
    fn fragmentation_delta(&self, s: u32, request: &Request, set: u32) -> f64 {
        let server = &self.servers[s as usize];
        let first = server.first_gpu as usize;
        let count = server.gpu_count as usize;
        let mut free = [0u16; MAX_GPUS_PER_SERVER];
        for (i, f) in free[..count].iter_mut().enumerate() {
            *f = self.gpus[first + i].milli_free;
        }
        let cached = self.fragmentation_cache[s as usize].get();
        let before = if cached.0 == server.version && cached.1 == self.mix.generation {
            cached.2
        } else {
            let value = self
                .mix
                .expected_fragmentation(&free[..count], server.cpu_free, server.memory_free);
            self.fragmentation_cache[s as usize].set((server.version, self.mix.generation, value));
            value
        };
        let take = match request.gpus {
            GpuDemand::None => 0,
            GpuDemand::Whole { .. } => FULL,
            GpuDemand::Slice { milli, .. } => milli,
        };
        for g in bits(set) {
            free[g] -= take;
        }
        let after = self.mix.expected_fragmentation(
            &free[..count],
            server.cpu_free - request.cpu_milli,
            server.memory_free - request.memory_mib,
        );
        after - before
    }

    fn commit(&mut self, choice: Choice, request: &Request) -> Allocation {
        let s = choice.server as usize;
        let first = self.servers[s].first_gpu;
        let mut grants = Vec::with_capacity(choice.gpus.count_ones() as usize);
        for i in bits(choice.gpus) {
            let gpu = &mut self.gpus[(first + i as u32) as usize];
            let (milli, memory) = match request.gpus {
                GpuDemand::Slice { milli, memory_mib } => (milli, memory_mib),
                _ => (FULL, gpu.memory_capacity),
            };
            debug_assert!(gpu.milli_free >= milli && gpu.memory_free >= memory);
            gpu.milli_free -= milli;
            gpu.memory_free -= memory;
            self.allocated_milli += milli as u64;
            grants.push(GpuGrant {
                gpu: i as u8,
                milli,
                memory_mib: memory,
            });
        }
        let server = &mut self.servers[s];
        server.cpu_free -= request.cpu_milli;
        server.memory_free -= request.memory_mib;
        server.gpu_milli_free -= grants.iter().map(|g| g.milli as u64).sum::<u64>();
        server.version += 1;
        let numa_node = grants
            .first()
            .map(|g| server.numa[g.gpu as usize])
            .filter(|&n| grants.iter().all(|g| server.numa[g.gpu as usize] == n));
        let nic = pick_nic(&server.nics, numa_node);
        let id = AllocationId(self.next_allocation);
        self.next_allocation += 1;
        let allocation = Allocation {
            id,
            server: ServerId(s as u32),
            gpus: grants,
            cpu_milli: request.cpu_milli,
            memory_mib: request.memory_mib,
            numa_node,
            nic,
            priority: request.priority,
            tenant: request.tenant.clone(),
        };
        trace!(allocation = id.0, server = %server.name, gpus = choice.gpus, "placed");
        self.reindex(s);
        self.allocations.insert(id.0, allocation.clone());
        allocation
    }

    /// Refiles a server and its GPUs after any change.
    fn reindex(&mut self, s: usize) {
        let server = &self.servers[s];
        let up = server.state.accepts_placements();
        let first = server.first_gpu as usize;
        let count = server.gpu_count as usize;
        let mut models = server.models;
        while models != 0 {
            let m = models.trailing_zeros() as usize;
            models &= models - 1;
            let untouched = self.gpus[first..first + count]
                .iter()
                .filter(|g| g.model as usize == m && g.is_untouched())
                .count();
            let bucket = (up && untouched > 0).then_some(untouched);
            self.whole_index[m].set(s as u32, bucket);
        }
        for g in first..first + count {
            let gpu = &self.gpus[g];
            let bucket = (up && gpu.milli_free > 0).then_some(gpu.milli_free as usize);
            self.slice_index[gpu.model as usize].set(g as u32, bucket);
        }
        let cores = (server.cpu_free / 1000).min(HOST_BUCKETS as u64 - 1) as usize;
        self.host_index.set(s as u32, up.then_some(cores));
    }
}

/// NIC on the GPUs' NUMA node, RDMA first; else any RDMA NIC; else the first.
fn pick_nic(nics: &[(u16, bool)], numa: Option<u16>) -> Option<u8> {
    let rank = |&(n, rdma): &(u16, bool)| (Some(n) != numa, !rdma);
    nics.iter()
        .enumerate()
        .min_by_key(|(_, nic)| rank(nic))
        .map(|(i, _)| i as u8)
}

/// SplitMix64 finaliser: spreads a seed into well-mixed bits.
fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

fn describe(request: &Request) -> String {
    let gpus = match request.gpus {
        GpuDemand::None => "no GPU".to_string(),
        GpuDemand::Whole { count } => format!("{count} whole GPU(s)"),
        GpuDemand::Slice { milli, memory_mib } => {
            format!("a slice of {milli}/1000 GPU with {memory_mib} MiB")
        }
    };
    format!(
        "{gpus}, {} mCPU, {} MiB host memory",
        request.cpu_milli, request.memory_mib
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::inventory::Server;

    fn pool(policy: Policy, servers: Vec<Server>) -> PlacementEngine {
        PlacementEngine::new(&Inventory::new(servers), PoolConfig::with_policy(policy)).unwrap()
    }

    #[test]
    fn best_fit_puts_a_slice_on_the_tightest_gpu() {
        let mut engine = pool(
            Policy::BestFit,
            vec![
                Server::uniform("a", "T4", 2, 16_000, 8000, 8000),
                Server::uniform("b", "T4", 2, 16_000, 8000, 8000),
            ],
        );
        let first = engine.place(&Request::slice(600, 0)).unwrap();
        let second = engine.place(&Request::slice(300, 0)).unwrap();
        assert_eq!(first.server, second.server);
        assert_eq!(first.gpus[0].gpu, second.gpus[0].gpu, "300 fits in the 400 left");
        assert_eq!(engine.allocated_gpu_milli(), 900);
    }

    #[test]
    fn spread_uses_the_emptiest_server() {
        let mut engine = pool(
            Policy::Spread,
            vec![
                Server::uniform("a", "T4", 2, 16_000, 8000, 8000),
                Server::uniform("b", "T4", 2, 16_000, 8000, 8000),
            ],
        );
        let first = engine.place(&Request::slice(500, 0)).unwrap();
        let second = engine.place(&Request::slice(500, 0)).unwrap();
        assert_ne!(first.server, second.server);
    }

    #[test]
    fn gangs_stay_on_one_server_or_fail_whole() {
        let mut engine = pool(
            Policy::BestFit,
            vec![
                Server::uniform("a", "V100", 4, 32_000, 8000, 8000),
                Server::uniform("b", "V100", 4, 32_000, 8000, 8000),
            ],
        );
        engine.place(&Request::whole(3)).unwrap();
        engine.place(&Request::whole(3)).unwrap();
        // Two GPUs are free, one on each server: a pair cannot be placed.
        let err = engine.place(&Request::whole(2)).unwrap_err();
        assert!(matches!(err, PlacementError::NoCapacity { .. }));
        assert_eq!(engine.allocated_gpu_milli(), 6000);
    }

    #[test]
    fn model_and_memory_constraints_hold() {
        let mut engine = pool(
            Policy::Spread,
            vec![
                Server::uniform("t4", "T4", 4, 16_000, 8000, 8000),
                Server::uniform("a100", "A100", 4, 80_000, 8000, 8000),
            ],
        );
        let a100 = engine.model_set(&["A100"]).unwrap();
        let placed = engine.place(&Request::whole(1).with_models(a100)).unwrap();
        assert_eq!(engine.server_name(placed.server), Some("a100"));
        let placed = engine.place(&Request::slice(100, 0).with_min_memory(40_000)).unwrap();
        assert_eq!(engine.server_name(placed.server), Some("a100"));
        assert!(matches!(
            engine.model_set(&["H100"]),
            Err(PlacementError::UnknownModel(_))
        ));
    }

    #[test]
    fn release_restores_capacity_and_cordon_stops_placement() {
        let mut engine = pool(Policy::Packing, vec![Server::uniform("a", "T4", 2, 16_000, 8000, 8000)]);
        let a = engine.place(&Request::whole(2).with_host(1000, 1000)).unwrap();
        assert!(engine.place(&Request::slice(1, 0)).is_err());
        engine.release(a.id).unwrap();
        assert_eq!(engine.allocated_gpu_milli(), 0);
        assert_eq!(engine.host_free(ServerId(0)), Some((8000, 8000)));
        assert!(engine.release(a.id).is_err());
        engine.set_server_state(ServerId(0), ServerState::Cordoned).unwrap();
        assert!(engine.place(&Request::slice(1, 0)).is_err());
        engine.set_server_state(ServerId(0), ServerState::Up).unwrap();
        assert!(engine.place(&Request::slice(1, 0)).is_ok());
    }

    #[test]
    fn multi_gpu_requests_prefer_nvlink_and_one_numa_node() {
        let mut engine = pool(
            Policy::BestFit,
            vec![
                Server::uniform("plain", "H100", 4, 80_000, 128_000, 1 << 20),
                Server::nvswitch("dgx", "H100", 8, 80_000, 2),
            ],
        );
        let (placed, why) = engine.place_explained(&Request::whole(4));
        let placed = placed.unwrap();
        assert_eq!(engine.server_name(placed.server), Some("dgx"));
        assert_eq!(placed.numa_node, Some(0));
        assert_eq!(placed.nic, Some(0));
        assert_eq!(why.candidates.len(), 2);
        assert_eq!(why.candidates[why.chosen.unwrap()].server_name, "dgx");
    }

    #[test]
    fn fragmentation_policy_keeps_whole_gpus_for_whole_gpu_work() {
        let mut engine = pool(
            Policy::Fragmentation,
            vec![
                Server::uniform("a", "T4", 2, 16_000, 64_000, 64_000),
                Server::uniform("b", "T4", 2, 16_000, 64_000, 64_000),
            ],
        );
        // Teach the mix: mostly whole-GPU work, some halves.
        for _ in 0..6 {
            let id = engine.place(&Request::whole(1)).unwrap().id;
            engine.release(id).unwrap();
        }
        let half = engine.place(&Request::slice(500, 0)).unwrap();
        let other = engine.place(&Request::slice(500, 0)).unwrap();
        // The second half goes beside the first rather than breaking a new GPU.
        assert_eq!((half.server, half.gpus[0].gpu), (other.server, other.gpus[0].gpu));
        assert!(engine.typical_shape_count() >= 1);
    }

    #[test]
    fn random_policy_finds_the_only_fit() {
        let mut engine = pool(
            Policy::Random,
            vec![
                Server::uniform("a", "T4", 1, 16_000, 8000, 8000),
                Server::uniform("b", "T4", 1, 16_000, 8000, 8000),
            ],
        );
        let first = engine.place(&Request::slice(900, 0)).unwrap();
        let second = engine.place(&Request::slice(900, 0)).unwrap();
        assert_ne!(first.server, second.server, "only the untouched GPU fits");
        assert!(engine.place(&Request::slice(200, 0)).is_err());
        let third = engine.place(&Request::slice(100, 0)).unwrap();
        assert_eq!(engine.gpu_free(third.server, 0).unwrap().0, 0);
        assert_eq!(engine.allocated_gpu_milli(), 1900);
    }

    #[test]
    fn reserve_restores_exact_grants_and_refuses_overcommit() {
        let mut p = pool(
            Policy::BestFit,
            vec![Server::uniform("a", "T4", 2, 16_000, 8_000, 64_000)],
        );
        let a = p.place(&Request::slice(600, 8_000)).unwrap();
        p.release(a.id).unwrap();
        let again = p.reserve(a.server, &a.gpus, 0, 0, 0, None).unwrap();
        assert_eq!(again.gpus, a.gpus);
        let g = a.gpus[0].gpu;
        assert_eq!(p.gpu_free(a.server, g), Some((400, 8_000)));
        let too_much = [GpuGrant {
            gpu: g,
            milli: 500,
            memory_mib: 1,
        }];
        assert!(matches!(
            p.reserve(a.server, &too_much, 0, 0, 0, None),
            Err(PlacementError::NoCapacity { .. })
        ));
        let no_gpu = [GpuGrant {
            gpu: 9,
            milli: 1,
            memory_mib: 1,
        }];
        assert!(p.reserve(a.server, &no_gpu, 0, 0, 0, None).is_err());
        assert_eq!(p.gpu_free(a.server, g), Some((400, 8_000)));
    }

    #[test]
    fn invalid_requests_are_refused() {
        let mut engine = pool(Policy::BestFit, vec![Server::uniform("a", "T4", 1, 16_000, 8000, 8000)]);
        assert!(matches!(
            engine.place(&Request::whole(0)),
            Err(PlacementError::InvalidRequest(_))
        ));
        assert!(matches!(
            engine.place(&Request::slice(1001, 0)),
            Err(PlacementError::InvalidRequest(_))
        ));
    }
}
