//! Server configuration: a TOML file, then `GPUPOOL_*` environment variables
//! over it, then command-line flags over both. See `docs/configuration.md`.

use gpupool_proto::lease::{LeasePublicKey, PUBLIC_KEY_PREFIX};
use serde::Deserialize;
use std::path::PathBuf;

/// Everything the server reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// TCP listen address (`host:port`), or empty for none.
    pub listen_tcp: String,
    /// QUIC listen address (`host:port`), or empty for none.
    pub listen_quic: String,
    /// The CUDA driver library to load.
    pub driver: PathBuf,
    /// Say "simulated" in the handshake and logs (set when the driver is the
    /// software test double).
    pub simulated: bool,
    /// Where the server keeps its self-signed certificate.
    pub state_dir: PathBuf,
    /// TLS certificate and key (PEM); both or neither.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// Largest frame body accepted from a client, in bytes.
    pub max_frame: u64,
    /// Refuse clients that present no lease token.
    pub require_lease: bool,
    /// The broker's lease-token public key (`ed25519:...`), or a file
    /// holding it. When set, every client must present a lease token the
    /// broker signed for this server, not yet expired.
    pub broker_public_key: Option<String>,
    /// Name reported to clients and the broker.
    pub server_id: String,
    /// Most concurrent sessions (worker processes).
    pub max_sessions: usize,
    /// Disk space for code images kept by content (`<state_dir>/images`), MiB.
    pub image_cache_mib: u64,
    /// How long a worker polls its connection for the next request before
    /// it sleeps, µs (0: sleep at once). Saves the wake-up between the
    /// requests of a busy client, at the cost of that much CPU per idle gap.
    pub poll_us: u64,
    /// QUIC sessions are terminated by their worker on a UDP port of its
    /// own (the client is redirected there at connection); off, the daemon
    /// relays every QUIC session on the listening port.
    pub quic_direct: bool,
    /// Ports for direct QUIC sessions, `FIRST-LAST` (for firewalls); empty
    /// takes any free port.
    pub quic_session_ports: String,
    /// Broker URLs (`http://host:port`, comma-separated for several) this
    /// server registers with and heartbeats to; empty: no broker.
    pub broker: String,
    /// The secret the broker's servers present (its `server_secret`).
    pub broker_server_secret: Option<String>,
    /// The URL clients dial, as the broker hands it out in leases; empty:
    /// the QUIC listener (with its fingerprint) when there is one, else the
    /// TCP one, on this host's name when listening on every address.
    pub advertise: String,
    /// Topology the server cannot discover (the software driver), or that
    /// corrects discovery: one entry per GPU ordinal to change.
    pub gpu: Vec<GpuTopology>,
    /// Network devices to report instead of those found in sysfs.
    pub nic: Vec<NicTopology>,
    /// Pin each session's worker to the CPUs near its GPUs.
    pub pin_workers: bool,
}

/// A `[[gpu]]` table: what to report for one GPU instead of what was found.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct GpuTopology {
    /// The CUDA ordinal on this server.
    pub ordinal: u8,
    pub model: Option<String>,
    pub numa_node: Option<u16>,
    pub local_cpus: Option<Vec<u32>>,
    pub pci_address: Option<String>,
    /// Ordinals of the GPUs this one reaches over NVLink.
    pub nvlink_peers: Option<Vec<u8>>,
}

/// A `[[nic]]` table: one network device of this server.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct NicTopology {
    pub name: String,
    #[serde(default)]
    pub numa_node: u16,
    #[serde(default)]
    pub rdma: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen_tcp: "127.0.0.1:7070".into(),
            listen_quic: String::new(),
            driver: PathBuf::from("libcuda.so.1"),
            simulated: false,
            state_dir: PathBuf::from(".gpupool/server"),
            tls_cert: None,
            tls_key: None,
            max_frame: gpupool_proto::frame::DEFAULT_MAX_FRAME,
            require_lease: false,
            broker_public_key: None,
            server_id: String::new(),
            max_sessions: 256,
            image_cache_mib: 4096,
            poll_us: 100,
            quic_direct: true,
            quic_session_ports: String::new(),
            broker: String::new(),
            broker_server_secret: None,
            advertise: String::new(),
            gpu: Vec::new(),
            nic: Vec::new(),
            pin_workers: true,
        }
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("configuration file {path} is not valid: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("{0}")]
    Key(String),
    #[error("environment variable {name}={value:?} is not valid: {reason}")]
    Env {
        name: String,
        value: String,
        reason: String,
    },
}

impl ServerConfig {
    /// Load from an optional TOML file, then apply `GPUPOOL_*` variables.
    pub fn load(file: Option<&std::path::Path>) -> Result<ServerConfig, ConfigError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                toml::from_str(&text).map_err(|source| ConfigError::Parse {
                    path: path.display().to_string(),
                    source,
                })?
            }
            None => ServerConfig::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        cfg.quic_session_port_range()?;
        if !cfg.broker.is_empty() && cfg.broker_server_secret.is_none() {
            return Err(ConfigError::Key(
                "broker is set but broker_server_secret (GPUPOOL_BROKER_SERVER_SECRET) is not: the broker registers only servers that present it".into(),
            ));
        }
        if cfg.server_id.is_empty() {
            cfg.server_id = gpupool_proto::handshake::host_name().unwrap_or_else(|| "gpupool-server".into());
        }
        Ok(cfg)
    }

    /// Apply environment overrides from `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let bad = |name: &str, value: &str, reason: &str| ConfigError::Env {
            name: name.into(),
            value: value.into(),
            reason: reason.into(),
        };
        if let Some(v) = get("GPUPOOL_LISTEN_TCP") {
            self.listen_tcp = v;
        }
        if let Some(v) = get("GPUPOOL_LISTEN_QUIC") {
            self.listen_quic = v;
        }
        if let Some(v) = get("GPUPOOL_DRIVER") {
            self.driver = v.into();
        }
        if let Some(v) = get("GPUPOOL_SIMULATED") {
            self.simulated = parse_bool(&v).ok_or_else(|| bad("GPUPOOL_SIMULATED", &v, "expected true or false"))?;
        }
        if let Some(v) = get("GPUPOOL_STATE_DIR") {
            self.state_dir = v.into();
        }
        if let Some(v) = get("GPUPOOL_TLS_CERT") {
            self.tls_cert = Some(v.into());
        }
        if let Some(v) = get("GPUPOOL_TLS_KEY") {
            self.tls_key = Some(v.into());
        }
        if let Some(v) = get("GPUPOOL_MAX_FRAME") {
            self.max_frame = v
                .parse()
                .map_err(|_| bad("GPUPOOL_MAX_FRAME", &v, "expected a byte count"))?;
        }
        if let Some(v) = get("GPUPOOL_REQUIRE_LEASE") {
            self.require_lease =
                parse_bool(&v).ok_or_else(|| bad("GPUPOOL_REQUIRE_LEASE", &v, "expected true or false"))?;
        }
        if let Some(v) = get("GPUPOOL_BROKER_PUBLIC_KEY") {
            self.broker_public_key = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = get("GPUPOOL_SERVER_ID") {
            self.server_id = v;
        }
        if let Some(v) = get("GPUPOOL_MAX_SESSIONS") {
            self.max_sessions = v
                .parse()
                .map_err(|_| bad("GPUPOOL_MAX_SESSIONS", &v, "expected a number"))?;
        }
        if let Some(v) = get("GPUPOOL_IMAGE_CACHE_MIB") {
            self.image_cache_mib = v
                .parse()
                .map_err(|_| bad("GPUPOOL_IMAGE_CACHE_MIB", &v, "expected a number of MiB"))?;
        }
        if let Some(v) = get("GPUPOOL_QUIC_DIRECT") {
            self.quic_direct =
                parse_bool(&v).ok_or_else(|| bad("GPUPOOL_QUIC_DIRECT", &v, "expected true or false"))?;
        }
        if let Some(v) = get("GPUPOOL_QUIC_SESSION_PORTS") {
            self.quic_session_ports = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER") {
            self.broker = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER_SERVER_SECRET") {
            self.broker_server_secret = Some(v).filter(|v| !v.is_empty());
        }
        if let Some(v) = get("GPUPOOL_PIN_WORKERS") {
            self.pin_workers =
                parse_bool(&v).ok_or_else(|| bad("GPUPOOL_PIN_WORKERS", &v, "expected true or false"))?;
        }
        if let Some(v) = get("GPUPOOL_ADVERTISE") {
            self.advertise = v;
        }
        if let Some(v) = get("GPUPOOL_POLL_US") {
            self.poll_us = v
                .parse()
                .map_err(|_| bad("GPUPOOL_POLL_US", &v, "expected a number of microseconds"))?;
        }
        Ok(())
    }
}

impl ServerConfig {
    /// `quic_session_ports` as an inclusive range; (0, 0) for any free port.
    pub fn quic_session_port_range(&self) -> Result<(u16, u16), ConfigError> {
        let text = self.quic_session_ports.trim();
        if text.is_empty() {
            return Ok((0, 0));
        }
        let bad = || {
            ConfigError::Key(format!(
                "quic_session_ports {text:?} is not FIRST-LAST (e.g. 40000-40999)"
            ))
        };
        let (a, b) = text.split_once('-').ok_or_else(bad)?;
        let first: u16 = a.trim().parse().map_err(|_| bad())?;
        let last: u16 = b.trim().parse().map_err(|_| bad())?;
        if first == 0 || first > last {
            return Err(bad());
        }
        Ok((first, last))
    }

    /// The broker's public key from `broker_public_key`: the key text itself,
    /// or the path of a file holding it. `None` when not configured.
    pub fn lease_public_key(&self) -> Result<Option<LeasePublicKey>, ConfigError> {
        let Some(value) = self.broker_public_key.as_deref() else {
            return Ok(None);
        };
        let text = if value.trim_start().starts_with(PUBLIC_KEY_PREFIX) {
            value.to_string()
        } else {
            std::fs::read_to_string(value).map_err(|source| ConfigError::Read {
                path: value.to_string(),
                source,
            })?
        };
        LeasePublicKey::from_text(&text)
            .map(Some)
            .map_err(|e| ConfigError::Key(format!("broker_public_key ({value}): {e}")))
    }
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Some(true),
        "0" | "false" | "no" | "off" => Some(false),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_then_env() {
        let mut cfg: ServerConfig = toml::from_str("listen_tcp = \"0.0.0.0:9000\"\nmax_frame = 1024\n").unwrap();
        assert_eq!(cfg.listen_tcp, "0.0.0.0:9000");
        cfg.apply_env(|k| (k == "GPUPOOL_MAX_FRAME").then(|| "2048".to_string()))
            .unwrap();
        assert_eq!(cfg.max_frame, 2048);
        assert!(cfg
            .apply_env(|k| (k == "GPUPOOL_REQUIRE_LEASE").then(|| "maybe".to_string()))
            .is_err());
        assert!(toml::from_str::<ServerConfig>("no_such_key = 1").is_err());
    }

    #[test]
    fn quic_session_ports_are_a_range_or_any() {
        let mut cfg = ServerConfig::default();
        assert!(cfg.quic_direct);
        assert_eq!(cfg.quic_session_port_range().unwrap(), (0, 0));
        cfg.apply_env(|k| (k == "GPUPOOL_QUIC_SESSION_PORTS").then(|| "40000-40010".to_string()))
            .unwrap();
        assert_eq!(cfg.quic_session_port_range().unwrap(), (40000, 40010));
        for bad in ["40000", "40010-40000", "0-10", "a-b", "1-70000"] {
            cfg.quic_session_ports = bad.into();
            assert!(cfg.quic_session_port_range().is_err(), "{bad}");
        }
        cfg.apply_env(|k| (k == "GPUPOOL_QUIC_DIRECT").then(|| "false".to_string()))
            .unwrap();
        assert!(!cfg.quic_direct);
    }
}
