//! Replays a slice of the real openb trace (if present) and checks that the
//! fragmentation-aware policy strands no more GPU than best-fit.
//! The trace directory comes from GPUPOOL_OPENB_DIR, else the shared
//! reference copy beside the workspace.

use std::path::PathBuf;

use gpupool_broker::placement::Policy;
use gpupool_broker::sim::{self, trace};

fn trace_dir() -> PathBuf {
    std::env::var_os("GPUPOOL_OPENB_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/reference/openb-trace"))
}

#[test]
fn fgd_leaves_no_more_unallocated_than_best_fit_on_an_openb_slice() {
    let dir = trace_dir();
    if !dir.join("openb_node_list_all_node.csv").exists() {
        println!(
            "skipped: openb trace not found at {} (set GPUPOOL_OPENB_DIR)",
            dir.display()
        );
        return;
    }
    // A quarter of the cluster and the tasks, so the test stays fast in debug.
    let nodes: Vec<_> = trace::load_nodes(&dir).unwrap().into_iter().step_by(4).collect();
    let tasks: Vec<_> = trace::load_tasks(&dir, "default")
        .unwrap()
        .into_iter()
        .step_by(4)
        .collect();
    let capacity: u64 = nodes.iter().map(|n| n.gpus as u64 * 1000).sum();
    let order = sim::tuned_workload(&tasks, capacity, 130.0, 42);
    let best_fit = sim::replay(&nodes, &tasks, &order, Policy::BestFit, 42).unwrap();
    let fgd = sim::replay(&nodes, &tasks, &order, Policy::Fragmentation, 42).unwrap();
    for arrived in [100.0, 130.0] {
        let (b, f) = (best_fit.unallocated_at(arrived), fgd.unallocated_at(arrived));
        println!("at {arrived}% arrived: best-fit {b:.2}% fgd {f:.2}% unallocated");
        assert!(f <= b, "fgd {f:.2}% > best-fit {b:.2}% at {arrived}%");
        assert!(f < 50.0, "placements happened");
    }
}
