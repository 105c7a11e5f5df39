//! Decisions per second of every policy on a 10,000-server × 8-GPU pool,
//! under a steady allocate/release mix (see `placement::workload`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use gpupool_broker::placement::workload::SteadyLoad;
use gpupool_broker::placement::{Policy, PoolConfig};

fn decisions(c: &mut Criterion) {
    let mut group = c.benchmark_group("placement_10000x8");
    group.throughput(Throughput::Elements(1));
    group.sample_size(20);
    for policy in Policy::ALL {
        let mut load = SteadyLoad::new(10_000, PoolConfig::with_policy(policy)).expect("pool builds");
        group.bench_function(policy.name(), |b| b.iter(|| load.step()));
    }
    group.finish();
}

criterion_group!(benches, decisions);
criterion_main!(benches);
