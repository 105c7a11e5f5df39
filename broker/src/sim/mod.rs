//! Replay of the openb trace (Weng et al., USENIX ATC'23) through the
//! placement engine, as the FGD authors' simulator does it: every node of the
//! cluster, tasks in trace order and never removed, the workload topped up to
//! 1.3× the cluster's GPU capacity with random copies of trace tasks, and the
//! allocated GPU share recorded after every submission.
//!
//! The figure of merit is the share of GPU capacity left unallocated at a
//! given arrived demand (100% and 130% of capacity).

pub mod report;
pub mod trace;

use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::placement::{CandidateLimits, ModelSet, PlacementEngine, PlacementError, Policy, PoolConfig, Request};
pub use trace::{NodeRecord, TaskRecord, TraceError};

/// The pod lists the published figures cover.
pub const TRACES: [&str; 3] = ["default", "gpushare40", "multigpu20"];

/// Arrived demand, in percent of GPU capacity, the workload is topped up to.
pub const TUNE_PERCENT: f64 = 130.0;

/// One replay's outcome.
#[derive(Debug, Clone)]
pub struct RunResult {
    pub policy: Policy,
    pub seed: u64,
    /// After each submission: (arrived GPU demand %, unallocated GPU share %).
    pub points: Vec<(f64, f64)>,
    pub submitted: usize,
    pub placed: usize,
    pub elapsed: Duration,
}

impl RunResult {
    /// Unallocated share at the last submission whose arrived demand is at
    /// most `arrived` percent (100% unallocated before the first).
    pub fn unallocated_at(&self, arrived: f64) -> f64 {
        let end = self.points.partition_point(|&(a, _)| a <= arrived + 1e-9);
        if end == 0 {
            100.0
        } else {
            self.points[end - 1].1
        }
    }
}

/// The trace's tasks in order, then random copies of them (drawn with
/// `seed`) until the GPU demand reaches `percent` of `capacity_milli`.
pub fn tuned_workload(tasks: &[TaskRecord], capacity_milli: u64, percent: f64, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..tasks.len()).collect();
    let target = capacity_milli as f64 * percent / 100.0;
    let mut demand: f64 = tasks.iter().map(|t| t.gpu_demand_milli() as f64).sum();
    let mut rng = StdRng::seed_from_u64(seed);
    if tasks.iter().all(|t| t.num_gpu == 0) {
        return order;
    }
    while demand < target {
        let i = rng.gen_range(0..tasks.len());
        order.push(i);
        demand += tasks[i].gpu_demand_milli() as f64;
    }
    order
}

/// The placement request for a trace task in `engine`'s pool.
pub fn request_for(engine: &PlacementEngine, task: &TaskRecord) -> Request {
    let request = match task.num_gpu {
        0 => Request::host_only(task.cpu_milli, task.memory_mib),
        1 if task.gpu_milli < 1000 => Request::slice(task.gpu_milli, 0),
        n => Request::whole(n),
    }
    .with_host(task.cpu_milli, task.memory_mib);
    if task.gpu_spec.is_empty() {
        return request;
    }
    // Models the cluster lacks simply cannot be chosen.
    let known: Vec<&String> = task.gpu_spec.iter().filter(|m| engine.models().contains(m)).collect();
    let set = engine.model_set(&known).unwrap_or(ModelSet::ANY);
    request.with_models(if known.is_empty() { ModelSet(0) } else { set })
}

/// Replays `order` (indices into `tasks`) on a fresh pool of `nodes`.
pub fn replay(
    nodes: &[NodeRecord],
    tasks: &[TaskRecord],
    order: &[usize],
    policy: Policy,
    seed: u64,
) -> Result<RunResult, PlacementError> {
    let started = Instant::now();
    let config = PoolConfig {
        policy,
        // A 1,523-node cluster is small enough to score every feasible node,
        // as the published simulator does.
        limits: CandidateLimits::exhaustive(),
        seed,
        ..PoolConfig::default()
    };
    let mut engine = PlacementEngine::new(&trace::inventory(nodes), config)?;
    let capacity = engine.gpu_capacity_milli().max(1) as f64;
    let requests: Vec<Request> = tasks.iter().map(|t| request_for(&engine, t)).collect();
    let mut points = Vec::with_capacity(order.len());
    let mut arrived = 0.0;
    let mut placed = 0;
    for &i in order {
        arrived += tasks[i].gpu_demand_milli() as f64;
        match engine.place(&requests[i]) {
            Ok(_) => placed += 1,
            Err(PlacementError::NoCapacity { .. }) => {}
            Err(e) => return Err(e),
        }
        let allocated = engine.allocated_gpu_milli() as f64;
        points.push((100.0 * arrived / capacity, 100.0 * (1.0 - allocated / capacity)));
    }
    tracing::debug!(%policy, seed, placed, submitted = order.len(), "replay done");
    Ok(RunResult {
        policy,
        seed,
        points,
        submitted: order.len(),
        placed,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(num_gpu: u8, gpu_milli: u16) -> TaskRecord {
        TaskRecord {
            name: "t".into(),
            cpu_milli: 1000,
            memory_mib: 1024,
            num_gpu,
            gpu_milli,
            gpu_spec: Vec::new(),
            creation_time: None,
        }
    }

    #[test]
    fn workload_is_topped_up_to_the_target_demand() {
        let tasks = vec![task(1, 500), task(0, 0), task(2, 1000)];
        let order = tuned_workload(&tasks, 10_000, 130.0, 42);
        assert_eq!(&order[..3], &[0, 1, 2]);
        let demand: u64 = order.iter().map(|&i| tasks[i].gpu_demand_milli()).sum();
        assert!(demand >= 13_000);
        assert_eq!(order, tuned_workload(&tasks, 10_000, 130.0, 42), "seeded");
    }

    #[test]
    fn replay_records_the_unallocated_share() {
        let nodes = vec![NodeRecord {
            name: "n".into(),
            cpu_milli: 64_000,
            memory_mib: 1 << 20,
            gpus: 2,
            model: "T4".into(),
        }];
        let tasks = vec![task(1, 500), task(1, 700), task(1, 500)];
        let run = replay(&nodes, &tasks, &[0, 1, 2], Policy::BestFit, 1).unwrap();
        assert_eq!(run.placed, 3);
        assert_eq!(run.points.len(), 3);
        assert!((run.points[2].0 - 85.0).abs() < 1e-9);
        assert!((run.unallocated_at(100.0) - 15.0).abs() < 1e-9);
        assert_eq!(run.unallocated_at(10.0), 100.0);
    }
}
