//! Property tests of the placement invariants, for every policy: no GPU is
//! ever given more than its compute or memory, gangs are all-or-nothing on
//! one server, model and memory constraints hold, and releasing everything
//! restores the pool exactly.

use gpupool_broker::inventory::{Inventory, Server};
use gpupool_broker::placement::{
    AllocationId, CandidateLimits, GpuDemand, PlacementEngine, Policy, PoolConfig, Request, ServerId,
};
use proptest::prelude::*;

fn inventory() -> Inventory {
    let mut servers = vec![
        Server::uniform("t4-a", "T4", 2, 16_000, 16_000, 64_000),
        Server::uniform("t4-b", "T4", 4, 16_000, 32_000, 64_000),
        Server::nvswitch("h100", "H100", 8, 80_000, 2),
        Server::uniform("cpu", "none", 0, 0, 64_000, 256_000),
    ];
    // A partial NVLink mesh: two linked pairs.
    let mut mesh = Server::uniform("mesh", "A100", 4, 40_000, 32_000, 128_000);
    mesh.gpus[0].nvlink_peers = vec![1];
    mesh.gpus[1].nvlink_peers = vec![0];
    mesh.gpus[2].nvlink_peers = vec![3];
    mesh.gpus[3].nvlink_peers = vec![2];
    servers.push(mesh);
    Inventory::new(servers)
}

#[derive(Debug, Clone)]
enum Op {
    Place {
        kind: u8,
        size: u16,
        cpu: u64,
        model: u8,
        min_memory: u64,
    },
    Release(usize),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0u8..3, 1u16..=1000, 0u64..12_000, 0u8..4, prop_oneof![Just(0u64), Just(20_000u64)])
            .prop_map(|(kind, size, cpu, model, min_memory)| Op::Place { kind, size, cpu, model, min_memory }),
        1 => (0usize..64).prop_map(Op::Release),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop::sample::select(Policy::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn placement_invariants_hold(policy in policy(), exhaustive in any::<bool>(), ops in prop::collection::vec(op(), 1..80)) {
        let inv = inventory();
        let limits = if exhaustive { CandidateLimits::exhaustive() } else { CandidateLimits { per_bucket: 1, total: 2 } };
        let mut engine = PlacementEngine::new(&inv, PoolConfig { policy, limits, ..PoolConfig::default() }).unwrap();
        let models = ["T4", "H100", "A100"];
        let mut live: Vec<AllocationId> = Vec::new();
        for op in ops {
            match op {
                Op::Place { kind, size, cpu, model, min_memory } => {
                    let mut request = match kind {
                        0 => Request::slice(size, size as u64 * 10),
                        1 => Request::whole((size % 8 + 1) as u8),
                        _ => Request::host_only(cpu, 1024),
                    }
                    .with_host(cpu, 1024)
                    .with_min_memory(min_memory);
                    let allowed = (model < 3).then(|| models[model as usize]);
                    if let Some(m) = allowed {
                        request = request.with_models(engine.model_set(&[m]).unwrap());
                    }
                    if let Ok(a) = engine.place(&request) {
                        let server = &inv.servers[a.server.0 as usize];
                        match request.gpus {
                            GpuDemand::Whole { count } => {
                                prop_assert_eq!(a.gpus.len(), count as usize, "gang all-or-nothing");
                                let mut ids: Vec<u8> = a.gpus.iter().map(|g| g.gpu).collect();
                                ids.dedup();
                                prop_assert_eq!(ids.len(), count as usize, "distinct GPUs");
                                prop_assert!(a.gpus.iter().all(|g| g.milli == 1000));
                            }
                            GpuDemand::Slice { milli, .. } => {
                                prop_assert_eq!(a.gpus.len(), 1, "a slice lives on one GPU");
                                prop_assert_eq!(a.gpus[0].milli, milli);
                            }
                            GpuDemand::None => prop_assert!(a.gpus.is_empty()),
                        }
                        for g in &a.gpus {
                            let gpu = &server.gpus[g.gpu as usize];
                            if let Some(m) = allowed {
                                prop_assert_eq!(gpu.model.as_str(), m, "model constraint");
                            }
                            prop_assert!(gpu.memory_mib >= min_memory, "memory constraint");
                        }
                        live.push(a.id);
                    }
                }
                Op::Release(i) => {
                    if !live.is_empty() {
                        let id = live.swap_remove(i % live.len());
                        engine.release(id).unwrap();
                    }
                }
            }
            // Never over-allocated, and the pool's books balance.
            let mut granted = 0u64;
            for (s, server) in inv.servers.iter().enumerate() {
                let id = ServerId(s as u32);
                let (cpu, mem) = engine.host_free(id).unwrap();
                prop_assert!(cpu <= server.cpu_milli && mem <= server.memory_mib);
                for (g, gpu) in server.gpus.iter().enumerate() {
                    let (milli, memory) = engine.gpu_free(id, g as u8).unwrap();
                    prop_assert!(milli <= 1000 && memory <= gpu.memory_mib);
                    granted += 1000 - milli as u64;
                }
            }
            prop_assert_eq!(granted, engine.allocated_gpu_milli());
        }
        for id in live {
            engine.release(id).unwrap();
        }
        prop_assert_eq!(engine.allocated_gpu_milli(), 0);
        for (s, server) in inv.servers.iter().enumerate() {
            let id = ServerId(s as u32);
            prop_assert_eq!(engine.host_free(id), Some((server.cpu_milli, server.memory_mib)));
            for (g, gpu) in server.gpus.iter().enumerate() {
                prop_assert_eq!(engine.gpu_free(id, g as u8), Some((1000, gpu.memory_mib)));
            }
        }
    }
}
