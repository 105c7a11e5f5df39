//! `gpupool-sim`: replays the openb trace under every placement policy and
//! writes curves (CSV), plots (SVG) and a table beside the published figures.
//!
//! Usage: `gpupool-sim TRACE_DIR OUT_DIR [--seeds 42..51|42,43] [--traces default,gpushare40]
//! [--policies best-fit,fgd] [--threads N]`

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use gpupool_broker::placement::Policy;
use gpupool_broker::sim::{self, report, RunResult};

struct Args {
    trace_dir: PathBuf,
    out_dir: PathBuf,
    seeds: Vec<u64>,
    traces: Vec<String>,
    policies: Vec<Policy>,
    threads: usize,
}

fn parse_args() -> Result<Args> {
    let mut positional = Vec::new();
    let mut seeds: Vec<u64> = (42..=51).collect();
    let mut traces: Vec<String> = sim::TRACES.iter().map(|s| s.to_string()).collect();
    let mut policies = Policy::ALL.to_vec();
    let mut threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().with_context(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seeds" => {
                let v = value()?;
                seeds = match v.split_once("..") {
                    Some((a, b)) => (a.parse()?..=b.parse()?).collect(),
                    None => v.split(',').map(str::parse).collect::<Result<_, _>>()?,
                };
            }
            "--traces" => traces = value()?.split(',').map(str::to_string).collect(),
            "--policies" => policies = value()?.split(',').map(str::parse).collect::<Result<_, _>>()?,
            "--threads" => threads = value()?.parse()?,
            "-h" | "--help" => {
                println!("usage: gpupool-sim TRACE_DIR OUT_DIR [--seeds 42..51] [--traces default,gpushare40,multigpu20] [--policies best-fit,packing,spread,random,dot-product,fgd] [--threads N]");
                std::process::exit(0);
            }
            _ if arg.starts_with("--") => bail!("unknown option {arg}"),
            _ => positional.push(PathBuf::from(arg)),
        }
    }
    let [trace_dir, out_dir]: [PathBuf; 2] = positional
        .try_into()
        .map_err(|_| anyhow::anyhow!("expected TRACE_DIR and OUT_DIR (see --help)"))?;
    if seeds.is_empty() {
        bail!("no seeds given");
    }
    Ok(Args {
        trace_dir,
        out_dir,
        seeds,
        traces,
        policies,
        threads: threads.max(1),
    })
}

fn main() -> Result<()> {
    let args = parse_args()?;
    std::fs::create_dir_all(&args.out_dir).with_context(|| format!("creating {}", args.out_dir.display()))?;
    let nodes = sim::trace::load_nodes(&args.trace_dir)?;
    let started = Instant::now();
    for trace in &args.traces {
        let tasks = sim::trace::load_tasks(&args.trace_dir, trace)?;
        let capacity: u64 = nodes.iter().map(|n| n.gpus as u64 * 1000).sum();
        let jobs: Vec<(Policy, u64)> = args
            .policies
            .iter()
            .flat_map(|&p| args.seeds.iter().map(move |&s| (p, s)))
            .collect();
        let next = AtomicUsize::new(0);
        let results: Mutex<Vec<RunResult>> = Mutex::new(Vec::new());
        let trace_started = Instant::now();
        std::thread::scope(|scope| -> Result<()> {
            let workers: Vec<_> = (0..args.threads)
                .map(|_| {
                    scope.spawn(|| -> Result<()> {
                        loop {
                            let j = next.fetch_add(1, Ordering::Relaxed);
                            let Some(&(policy, seed)) = jobs.get(j) else {
                                return Ok(());
                            };
                            let order = sim::tuned_workload(&tasks, capacity, sim::TUNE_PERCENT, seed);
                            let run = sim::replay(&nodes, &tasks, &order, policy, seed)?;
                            results.lock().expect("results lock").push(run);
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().map_err(|_| anyhow::anyhow!("a replay thread panicked"))??;
            }
            Ok(())
        })?;
        let results = results.into_inner().expect("results lock");
        let curves: Vec<report::Curve> = args
            .policies
            .iter()
            .map(|&p| {
                let runs: Vec<&RunResult> = results.iter().filter(|r| r.policy == p).collect();
                report::Curve::from_runs(p, &runs)
            })
            .collect();
        let csv_path = args.out_dir.join(format!("openb_{trace}.csv"));
        std::fs::write(&csv_path, report::csv(&curves))?;
        let svg_path = args.out_dir.join(format!("openb_{trace}.svg"));
        std::fs::write(&svg_path, report::svg(trace, &curves))?;
        println!("{}", report::table(trace, &curves));
        println!(
            "  {} tasks in the trace, {} runs in {:.1}s; wrote {} and {}\n",
            tasks.len(),
            jobs.len(),
            trace_started.elapsed().as_secs_f64(),
            csv_path.display(),
            svg_path.display()
        );
    }
    println!("total {:.1}s", started.elapsed().as_secs_f64());
    Ok(())
}
