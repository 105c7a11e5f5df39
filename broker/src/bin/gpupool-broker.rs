//! `gpupool-broker`: the broker daemon.
//!
//! ```text
//! gpupool-broker [--config FILE] [--listen HOST:PORT] [--db PATH]
//! ```
//! Settings: TOML file, then `GPUPOOL_BROKER_*` variables, then these flags
//! (see docs/broker.md).

use anyhow::{bail, Context};
use gpupool_broker::config::BrokerConfig;
use std::io::Write;
use std::path::PathBuf;

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
    let running = gpupool_broker::api::start(&cfg)?;
    println!(
        "gpupool-broker ready: http://{} public_key={}",
        running.addr,
        running.broker.public_key_text()
    );
    let _ = std::io::stdout().flush();
    running.wait_for_signal();
    tracing::info!("stopping");
    running.stop();
    Ok(())
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
