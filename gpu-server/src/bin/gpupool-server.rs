//! `gpupool-server`: the GPU server daemon.
//!
//! ```text
//! gpupool-server [--config FILE] [--listen-tcp ADDR] [--listen-quic ADDR] [--driver PATH] [--simulated]
//! ```
//! (`gpupool-server worker ...` is the per-session worker the daemon starts.)

use anyhow::{bail, Context};
use gpupool_broker::inventory::{Gpu, Nic};
use gpupool_gpu_server::config::ServerConfig;
use gpupool_gpu_server::inventory;
use gpupool_gpu_server::nvml::ServerNvml;
use gpupool_gpu_server::session::{self, WorkerLauncher};
use gpupool_proto::handshake::MachineGpu;
use std::io::Write;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::PathBuf;

const USAGE: &str = "usage: gpupool-server [--config FILE] [--listen-tcp HOST:PORT] [--listen-quic HOST:PORT] [--driver PATH] [--simulated]";

fn main() -> anyhow::Result<()> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let worker = args.first().is_some_and(|a| a == "worker");
    if worker {
        args.remove(0);
    }
    let mut config_file: Option<PathBuf> = None;
    let mut session: Option<u64> = None;
    let mut overrides: Vec<(&str, String)> = Vec::new();
    let mut it = args.into_iter();
    while let Some(a) = it.next() {
        let mut value = |name: &str| it.next().with_context(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--config" => config_file = Some(value("--config")?.into()),
            "--session" => session = Some(value("--session")?.parse().context("--session")?),
            "--listen-tcp" => overrides.push(("GPUPOOL_LISTEN_TCP", value("--listen-tcp")?)),
            "--listen-quic" => overrides.push(("GPUPOOL_LISTEN_QUIC", value("--listen-quic")?)),
            "--driver" => overrides.push(("GPUPOOL_DRIVER", value("--driver")?)),
            "--simulated" => overrides.push(("GPUPOOL_SIMULATED", "true".into())),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    // Flags become the environment variables they stand for, so that the
    // worker processes, which inherit the environment, see them too. This
    // runs before any thread starts.
    for (name, value) in overrides {
        std::env::set_var(name, value);
    }
    gpupool_gpu_server::init_logging();
    let cfg = ServerConfig::load(config_file.as_deref())?;
    if worker {
        let session = session.context("worker needs --session")?;
        // SAFETY: the daemon placed this session's socket at fd 3 before exec.
        let fd = unsafe { OwnedFd::from_raw_fd(3) };
        return session::run_worker(&cfg, session, fd);
    }
    let exe = std::env::current_exe().context("cannot find this program's path to start workers")?;
    let launcher = WorkerLauncher { exe, config_file };
    let (inventory, machine) = check_driver(&cfg)?;
    // One runtime thread: the daemon only accepts, checks hellos and relays
    // QUIC sessions, and a QUIC packet, its connection and its relay task
    // handled on one thread cross no thread boundary (QUIC sync call p50
    // 137 µs against 164 µs with two threads, side by side on loopback).
    // Workers are processes of their own.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(session::serve(cfg, launcher, inventory, machine, |bound| {
        let mut line = String::from("gpupool-server ready:");
        if let Some(a) = bound.tcp {
            line += &format!(" tcp://{a}");
        }
        if let Some((a, fp)) = &bound.quic {
            line += &format!(" quic://{a}?fingerprint={fp}");
        }
        println!("{line}");
        let _ = std::io::stdout().flush();
    }))
}

/// The GPUs and NICs the broker is told of, when they could be described.
type Inventory = Option<(Vec<Gpu>, Vec<Nic>)>;

/// Load the driver once at start so a broken installation fails now, with
/// its reason, rather than at the first client; and say what is served.
/// Describe the GPUs and NICs (for the broker, and for pinning workers),
/// and the machine's GPUs as sessions' NVML tells them.
fn check_driver(cfg: &ServerConfig) -> anyhow::Result<(Inventory, Vec<MachineGpu>)> {
    let driver = gpupool_gpu_server::driver::Driver::load(&cfg.driver)?;
    let missing = driver.missing_entry_points();
    if !missing.is_empty() {
        tracing::warn!(
            driver_version = driver.version().unwrap_or(0),
            "the driver lacks {} entry points of later CUDA versions; programs' calls of them answer \
             CUDA_ERROR_NOT_SUPPORTED{}: {}",
            missing.len(),
            if driver.gives_param_info() {
                ""
            } else {
                ", and kernels' parameter layouts are read from the code programs load"
            },
            missing.join(", ")
        );
    }
    let count = driver
        .device_count()
        .map_err(|s| anyhow::anyhow!("cuDeviceGetCount failed with status {s}"))?;
    let label = if cfg.simulated {
        " (simulated: software driver, no real GPU)"
    } else {
        ""
    };
    // Each device's facts, read once: for this log, and to describe the
    // server (to the broker, and for pinning workers).
    let facts: Vec<_> = (0..count).map(|d| driver.device_facts(d)).collect();
    for (d, f) in facts.iter().enumerate() {
        if let Ok(f) = f {
            tracing::info!(device = d, name = %f.name, memory_mib = f.total_mem >> 20, "serving GPU{label}");
        }
    }
    tracing::info!(driver = %driver.path, devices = count, "driver loaded{label}");
    let nvml = if cfg.simulated {
        ServerNvml::absent()
    } else {
        ServerNvml::load()
    };
    let mut machine = {
        let known = facts
            .iter()
            .enumerate()
            .filter_map(|(d, f)| Some((d as i32, f.as_ref().ok()?.clone())));
        inventory::machine_gpus(&inventory::described_devices(&driver, known.collect()))
    };
    let described = facts
        .into_iter()
        .enumerate()
        .map(|(d, f)| f.map_err(|s| anyhow::anyhow!("cannot describe device {d}: status {s}")))
        .collect::<anyhow::Result<Vec<_>>>()
        .and_then(|devices| inventory::describe(cfg, &devices, &nvml));
    let (gpus, nics) = match described {
        Ok(found) => found,
        Err(e) if cfg.broker.is_empty() => {
            tracing::warn!("cannot describe this server's GPUs ({e}); workers are not pinned");
            inventory::fill_nvlinks(&mut machine, &nvml, &[]);
            return Ok((None, machine));
        }
        Err(e) => return Err(e),
    };
    inventory::fill_nvlinks(&mut machine, &nvml, &gpus);
    for g in &gpus {
        tracing::info!(uuid = %g.uuid, model = %g.model, numa_node = g.numa_node, pci = %g.pci_address, local_cpus = ?g.local_cpus, nvlink_peers = ?g.nvlink_peers, "GPU topology");
    }
    Ok((Some((gpus, nics)), machine))
}
