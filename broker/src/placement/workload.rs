//! A synthetic request stream for benchmarks and latency checks: a large
//! pool of 8-GPU NVSwitch servers and a mix of slices and gangs, released
//! in arrival order so the pool stays near a steady fill level.

use std::collections::VecDeque;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{AllocationId, PlacementEngine, PlacementError, PoolConfig, Request};
use crate::inventory::{Inventory, Server};

/// `servers` DGX-like servers of 8 H100s each, two NUMA nodes, RDMA NICs.
pub fn benchmark_inventory(servers: usize) -> Inventory {
    Inventory::new(
        (0..servers)
            .map(|i| Server::nvswitch(format!("gpu-{i:05}"), "H100", 8, 81_559, 2))
            .collect(),
    )
}

/// Drives a pool with a steady allocate/release mix.
pub struct SteadyLoad {
    pub engine: PlacementEngine,
    live: VecDeque<AllocationId>,
    rng: StdRng,
    /// Allocations kept alive before the oldest is released.
    keep: usize,
}

impl SteadyLoad {
    /// A pool over `servers` servers, pre-filled to about 60% of its GPUs.
    pub fn new(servers: usize, config: PoolConfig) -> Result<Self, PlacementError> {
        let engine = PlacementEngine::new(&benchmark_inventory(servers), config)?;
        // Mean request ≈ 0.75 GPU: this many live allocations fill ~60%.
        let keep = servers * 8 * 6 / 10 * 4 / 3;
        let mut load = SteadyLoad {
            engine,
            live: VecDeque::with_capacity(keep + 1),
            rng: StdRng::seed_from_u64(7),
            keep,
        };
        for _ in 0..keep {
            load.step();
        }
        Ok(load)
    }

    /// The next request of the mix: mostly slices, some whole GPUs and gangs.
    pub fn next_request(&mut self) -> Request {
        let r: u32 = self.rng.gen_range(0..100);
        match r {
            0..=59 => {
                let milli = [100u16, 250, 300, 500, 700][self.rng.gen_range(0..5)];
                Request::slice(milli, milli as u64 * 40)
            }
            60..=89 => Request::whole(1),
            90..=96 => Request::whole([2u8, 4][self.rng.gen_range(0..2)]),
            _ => Request::whole(8),
        }
    }

    /// One decision, plus a release when the pool holds enough. Returns
    /// whether the request was placed.
    pub fn step(&mut self) -> bool {
        let request = self.next_request();
        let placed = match self.engine.place(&request) {
            Ok(allocation) => {
                self.live.push_back(allocation.id);
                true
            }
            Err(_) => false,
        };
        while self.live.len() > self.keep {
            if let Some(id) = self.live.pop_front() {
                // Ids come from this engine and are released once.
                let _ = self.engine.release(id);
            }
        }
        placed
    }
}
