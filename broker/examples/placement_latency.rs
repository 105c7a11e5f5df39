//! Times 100,000 placement decisions (with releases keeping the pool steady)
//! per policy on a 10,000-server × 8-GPU pool and prints p50/p99 latency and
//! decisions per second. `cargo run --release --example placement_latency [N_SERVERS]`

use std::time::Instant;

use gpupool_broker::placement::workload::SteadyLoad;
use gpupool_broker::placement::{Policy, PoolConfig};

fn main() {
    let servers: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(10_000);
    let decisions = 100_000;
    println!("pool: {servers} servers x 8 GPUs, {decisions} decisions per policy");
    println!(
        "{:<12} {:>12} {:>10} {:>10} {:>10} {:>8}",
        "policy", "decisions/s", "p50 us", "p99 us", "max us", "placed%"
    );
    for policy in Policy::ALL {
        let mut load = SteadyLoad::new(servers, PoolConfig::with_policy(policy)).expect("pool builds");
        let mut latencies = Vec::with_capacity(decisions);
        let mut placed = 0usize;
        let started = Instant::now();
        for _ in 0..decisions {
            let t = Instant::now();
            placed += usize::from(load.step());
            latencies.push(t.elapsed().as_nanos() as u64);
        }
        let total = started.elapsed().as_secs_f64();
        latencies.sort_unstable();
        let pct = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize] as f64 / 1000.0;
        println!(
            "{:<12} {:>12.0} {:>10.1} {:>10.1} {:>10.1} {:>8.1}",
            policy.name(),
            decisions as f64 / total,
            pct(0.50),
            pct(0.99),
            pct(1.0),
            100.0 * placed as f64 / decisions as f64
        );
    }
}
