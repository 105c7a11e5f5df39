//! `gpupool-broker`: the broker daemon.
//!
//! ```text
//! gpupool-broker [--config FILE] [--listen HOST:PORT] [--db PATH]
//! ```
//! Settings: TOML file, then `GPUPOOL_BROKER_*` variables, then these flags
//! (see docs/broker.md).
//!
//! With `store = "etcd"` it stands by until elected leader, then serves; a
//! leader that loses its leadership answers `503 not_leader` for one lease
//! TTL, then exits with status 1 (run it under a supervisor that restarts
//! it, to stand by again).

use anyhow::{bail, Context};
use gpupool_broker::api::Stopping;
use gpupool_broker::config::BrokerConfig;
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

const USAGE: &str = "usage: gpupool-broker [--config FILE] [--listen HOST:PORT] [--db PATH]";

fn main() -> anyhow::Result<()> {
    let mut config_file: Option<PathBuf> = None;
    let mut listen = None;
    let mut db = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value\n{USAGE}"));
        match a.as_str() {
            "--config" => config_file = Some(value("--config")?.into()),
            "--listen" => listen = Some(value("--listen")?),
            "--db" => db = Some(value("--db")?),
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    init_logging();
    let mut cfg = BrokerConfig::load(config_file.as_deref())?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    if let Some(d) = db {
        cfg.db_path = d.into();
    }
    if cfg.store == "etcd" {
        println!(
            "gpupool-broker standing by: campaigning for leadership on etcd {} prefix {}",
            cfg.etcd_endpoints.join(","),
            cfg.etcd_prefix
        );
        let _ = std::io::stdout().flush();
    }
    let running = gpupool_broker::api::start(&cfg)?;
    println!(
        "gpupool-broker ready: http://{} public_key={}",
        running.addr,
        running.broker.public_key_text()
    );
    let _ = std::io::stdout().flush();
    match running.wait() {
        Stopping::Signal => {
            tracing::info!("stopping");
            running.stop();
            Ok(())
        }
        Stopping::LostLeadership => {
            // Clients that still call get a clear `503 not_leader` (and try
            // the next broker) for a lease TTL (2 s at least); then the port closes and
            // the process ends, for its supervisor to start it again as a
            // standby.
            let linger = Duration::from_secs(cfg.etcd_lease_ttl_s.clamp(2, 60));
            tracing::error!(
                "lost the leadership: answering 503 not_leader for {linger:?}, then exiting to rejoin as a standby"
            );
            running.linger(linger);
            running.stop();
            bail!("this broker lost its leadership; start it again to stand by for the next election")
        }
    }
}

/// Logs to standard error (`GPUPOOL_LOG` filter, `info` by default;
/// `GPUPOOL_LOG_FORMAT=json` for JSON).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GPUPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("GPUPOOL_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
