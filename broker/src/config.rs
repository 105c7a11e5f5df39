//! Broker configuration: a TOML file, then `GPUPOOL_BROKER_*` environment
//! variables over it. See `docs/broker.md`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use gpupool_proto::lease::LeaseSigner;
use serde::Deserialize;

use crate::control::{Admission, Settings};
use crate::placement::Policy;
use crate::store::{MemoryStore, RedbStore, Store, StoreError};

/// Everything the broker daemon reads at start.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BrokerConfig {
    /// HTTP listen address (`host:port`).
    pub listen: String,
    /// Where state is kept: `redb` (the embedded file `db_path`) or `etcd`.
    pub store: String,
    /// The embedded database file; `:memory:` keeps nothing (tests, demos).
    pub db_path: PathBuf,
    /// etcd client URLs, for `store = "etcd"`.
    pub etcd_endpoints: Vec<String>,
    /// Key prefix of this pool in etcd (ends in `/`).
    pub etcd_prefix: String,
    /// TTL of the leadership lease in etcd, in seconds: how soon a standby
    /// broker takes over from a leader that vanished.
    pub etcd_lease_ttl_s: u64,
    /// This broker's name in the leader election; host name and listen
    /// address when empty.
    pub broker_name: String,
    /// Bearer token administrators (and the CLI) present.
    pub admin_token: String,
    /// Bearer token GPU servers present to register and heartbeat.
    pub server_secret: String,
    pub heartbeat_timeout_ms: u64,
    pub lease_ttl_ms: u64,
    pub max_lease_ttl_ms: u64,
    /// The broker's ed25519 signing key; created at first start if absent.
    pub signing_key_file: PathBuf,
    /// `queue` or `refuse` requests over quota or without capacity.
    pub admission: Admission,
    /// Let higher-priority requests take lower-priority leases.
    pub preemption: bool,
    /// Placement policy: best-fit, packing, spread, random, dot-product, fgd.
    pub policy: String,
    /// How long ended leases are remembered, so holders learn why they ended.
    pub ended_lease_retention_ms: u64,
}

impl Default for BrokerConfig {
    fn default() -> Self {
        let s = Settings::default();
        BrokerConfig {
            listen: "127.0.0.1:7080".into(),
            store: "redb".into(),
            db_path: PathBuf::from(".gpupool/broker/broker.redb"),
            etcd_endpoints: vec!["http://127.0.0.1:2379".into()],
            etcd_prefix: "/gpupool/".into(),
            etcd_lease_ttl_s: 5,
            broker_name: String::new(),
            admin_token: String::new(),
            server_secret: String::new(),
            heartbeat_timeout_ms: s.heartbeat_timeout.as_millis() as u64,
            lease_ttl_ms: s.lease_ttl_ms,
            max_lease_ttl_ms: s.max_lease_ttl_ms,
            signing_key_file: PathBuf::from(".gpupool/broker/signing.key"),
            admission: s.admission,
            preemption: s.preemption,
            policy: s.policy.name().into(),
            ended_lease_retention_ms: s.ended_lease_retention_ms,
        }
    }
}

/// A configuration that cannot be used, or a key that cannot be had.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("configuration file {path} is not valid: {source}")]
    Parse { path: String, source: toml::de::Error },
    #[error("environment variable {name}={value:?} is not valid: {reason}")]
    Env {
        name: String,
        value: String,
        reason: String,
    },
    #[error("configuration is not usable: {0}")]
    Invalid(String),
    #[error("signing key file {path}: {reason}")]
    Key { path: String, reason: String },
}

impl BrokerConfig {
    /// Loads an optional TOML file, then applies `GPUPOOL_BROKER_*` variables.
    pub fn load(file: Option<&Path>) -> Result<BrokerConfig, ConfigError> {
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
            None => BrokerConfig::default(),
        };
        cfg.apply_env(|k| std::env::var(k).ok())?;
        Ok(cfg)
    }

    /// Applies environment overrides from `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let bad = |name: &str, value: &str, reason: &str| ConfigError::Env {
            name: name.into(),
            value: value.into(),
            reason: reason.into(),
        };
        let number = |name: &str, v: &str| v.parse::<u64>().map_err(|_| bad(name, v, "expected a whole number"));
        if let Some(v) = get("GPUPOOL_BROKER_LISTEN") {
            self.listen = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER_DB") {
            self.db_path = v.into();
        }
        if let Some(v) = get("GPUPOOL_BROKER_STORE") {
            self.store = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER_ETCD_ENDPOINTS") {
            self.etcd_endpoints = v
                .split(',')
                .map(|e| e.trim().to_string())
                .filter(|e| !e.is_empty())
                .collect();
        }
        if let Some(v) = get("GPUPOOL_BROKER_ETCD_PREFIX") {
            self.etcd_prefix = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER_ETCD_LEASE_TTL_S") {
            self.etcd_lease_ttl_s = number("GPUPOOL_BROKER_ETCD_LEASE_TTL_S", &v)?;
        }
        if let Some(v) = get("GPUPOOL_BROKER_NAME") {
            self.broker_name = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER_ADMIN_TOKEN") {
            self.admin_token = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER_SERVER_SECRET") {
            self.server_secret = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER_HEARTBEAT_TIMEOUT_MS") {
            self.heartbeat_timeout_ms = number("GPUPOOL_BROKER_HEARTBEAT_TIMEOUT_MS", &v)?;
        }
        if let Some(v) = get("GPUPOOL_BROKER_LEASE_TTL_MS") {
            self.lease_ttl_ms = number("GPUPOOL_BROKER_LEASE_TTL_MS", &v)?;
        }
        if let Some(v) = get("GPUPOOL_BROKER_MAX_LEASE_TTL_MS") {
            self.max_lease_ttl_ms = number("GPUPOOL_BROKER_MAX_LEASE_TTL_MS", &v)?;
        }
        if let Some(v) = get("GPUPOOL_BROKER_SIGNING_KEY_FILE") {
            self.signing_key_file = v.into();
        }
        if let Some(v) = get("GPUPOOL_BROKER_ADMISSION") {
            self.admission = v.parse().map_err(|e: String| bad("GPUPOOL_BROKER_ADMISSION", &v, &e))?;
        }
        if let Some(v) = get("GPUPOOL_BROKER_PREEMPTION") {
            self.preemption =
                parse_bool(&v).ok_or_else(|| bad("GPUPOOL_BROKER_PREEMPTION", &v, "expected true or false"))?;
        }
        if let Some(v) = get("GPUPOOL_BROKER_POLICY") {
            self.policy = v;
        }
        if let Some(v) = get("GPUPOOL_BROKER_ENDED_LEASE_RETENTION_MS") {
            self.ended_lease_retention_ms = number("GPUPOOL_BROKER_ENDED_LEASE_RETENTION_MS", &v)?;
        }
        Ok(())
    }

    /// Checks the configuration and turns it into the broker's rules.
    pub fn settings(&self) -> Result<Settings, ConfigError> {
        if self.admin_token.is_empty() {
            return Err(ConfigError::Invalid(
                "admin_token is empty; set it (or GPUPOOL_BROKER_ADMIN_TOKEN) to a long random string".into(),
            ));
        }
        if self.server_secret.is_empty() {
            return Err(ConfigError::Invalid(
                "server_secret is empty; set it (or GPUPOOL_BROKER_SERVER_SECRET) to a long random string shared with the GPU servers".into(),
            ));
        }
        if self.heartbeat_timeout_ms == 0 || self.lease_ttl_ms == 0 {
            return Err(ConfigError::Invalid(
                "heartbeat_timeout_ms and lease_ttl_ms must be above 0".into(),
            ));
        }
        if self.max_lease_ttl_ms < self.lease_ttl_ms {
            return Err(ConfigError::Invalid(format!(
                "max_lease_ttl_ms ({}) is below lease_ttl_ms ({})",
                self.max_lease_ttl_ms, self.lease_ttl_ms
            )));
        }
        let policy: Policy = self
            .policy
            .parse()
            .map_err(|e: crate::placement::PlacementError| ConfigError::Invalid(e.to_string()))?;
        Ok(Settings {
            policy,
            heartbeat_timeout: Duration::from_millis(self.heartbeat_timeout_ms),
            lease_ttl_ms: self.lease_ttl_ms,
            max_lease_ttl_ms: self.max_lease_ttl_ms,
            admission: self.admission,
            preemption: self.preemption,
            ended_lease_retention_ms: self.ended_lease_retention_ms,
        })
    }
}

impl BrokerConfig {
    /// Opens the configured store. With etcd this waits until this broker is
    /// elected leader.
    pub fn open_store(&self) -> Result<Box<dyn Store>, ConfigError> {
        let failed = |e: StoreError| ConfigError::Invalid(e.to_string());
        match self.store.as_str() {
            "redb" if self.db_path.as_os_str() == ":memory:" => Ok(Box::new(MemoryStore::new())),
            "redb" => Ok(Box::new(RedbStore::open(&self.db_path).map_err(failed)?)),
            "memory" => Ok(Box::new(MemoryStore::new())),
            "etcd" => self.open_etcd(),
            other => Err(ConfigError::Invalid(format!(
                "store {other:?} is not known; use redb or etcd"
            ))),
        }
    }

    #[cfg(feature = "etcd")]
    fn open_etcd(&self) -> Result<Box<dyn Store>, ConfigError> {
        if self.etcd_endpoints.is_empty() {
            return Err(ConfigError::Invalid("store = etcd needs etcd_endpoints".into()));
        }
        let name = if self.broker_name.is_empty() {
            let host = gpupool_proto::handshake::host_name().unwrap_or_default();
            format!("{host}/{}", self.listen)
        } else {
            self.broker_name.clone()
        };
        let store = crate::store::EtcdStore::open(crate::store::EtcdOptions {
            endpoints: self.etcd_endpoints.clone(),
            prefix: self.etcd_prefix.clone(),
            name,
            lease_ttl_s: self.etcd_lease_ttl_s.clamp(1, 3600) as i64,
            connect_timeout: Duration::from_secs(5),
        })
        .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(Box::new(store))
    }

    #[cfg(not(feature = "etcd"))]
    fn open_etcd(&self) -> Result<Box<dyn Store>, ConfigError> {
        Err(ConfigError::Invalid(
            "store = etcd, but this build has no etcd support; build gpupool-broker with --features etcd".into(),
        ))
    }
}

/// Reads the broker's signing key, or creates one (readable by its owner
/// only) when the file does not exist.
pub fn load_or_create_signing_key(path: &Path) -> Result<LeaseSigner, ConfigError> {
    let err = |reason: String| ConfigError::Key {
        path: path.display().to_string(),
        reason,
    };
    match std::fs::read_to_string(path) {
        Ok(text) => LeaseSigner::from_text(&text).map_err(|e| err(e.to_string())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use rand::RngCore;
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                std::fs::create_dir_all(parent).map_err(|e| err(format!("cannot create its folder: {e}")))?;
            }
            let mut seed = [0u8; 32];
            rand::rngs::OsRng.fill_bytes(&mut seed);
            let signer = LeaseSigner::from_seed(seed);
            // Written whole under a name of its own, then linked into place:
            // brokers starting together on one key file all end up with the
            // key that was linked first, never with a half-written file.
            let mut name = path.as_os_str().to_owned();
            name.push(format!(".{}.new", std::process::id()));
            let fresh = PathBuf::from(name);
            let _ = std::fs::remove_file(&fresh);
            let written = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&fresh)
                .and_then(|mut file| {
                    file.write_all(format!("{}\n", signer.to_text()).as_bytes())?;
                    file.sync_all()
                })
                .and_then(|_| std::fs::hard_link(&fresh, path));
            let _ = std::fs::remove_file(&fresh);
            match written {
                Ok(()) => {
                    tracing::info!(path = %path.display(), public_key = %signer.public_key().to_text(), "created a new signing key");
                    Ok(signer)
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => load_or_create_signing_key(path),
                Err(e) => Err(err(format!("cannot create it: {e}"))),
            }
        }
        Err(e) => Err(err(format!("cannot read it: {e}"))),
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
    fn toml_then_env_then_checks() {
        let mut cfg: BrokerConfig =
            toml::from_str("listen = \"0.0.0.0:9000\"\nadmission = \"refuse\"\nadmin_token = \"a\"\n").unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:9000");
        assert_eq!(cfg.admission, Admission::Refuse);
        assert!(cfg.settings().is_err(), "no server secret");
        cfg.apply_env(|k| match k {
            "GPUPOOL_BROKER_SERVER_SECRET" => Some("s".into()),
            "GPUPOOL_BROKER_LEASE_TTL_MS" => Some("500".into()),
            "GPUPOOL_BROKER_POLICY" => Some("fgd".into()),
            _ => None,
        })
        .unwrap();
        let s = cfg.settings().unwrap();
        assert_eq!(s.lease_ttl_ms, 500);
        assert_eq!(s.policy, Policy::Fragmentation);
        assert!(cfg
            .apply_env(|k| (k == "GPUPOOL_BROKER_ADMISSION").then(|| "maybe".into()))
            .is_err());
        assert!(toml::from_str::<BrokerConfig>("no_such_key = 1").is_err());
    }

    #[test]
    fn unknown_or_unbuilt_stores_are_refused() {
        let mut cfg = BrokerConfig {
            store: "zookeeper".into(),
            ..BrokerConfig::default()
        };
        assert!(cfg.open_store().err().unwrap().to_string().contains("not known"));
        cfg.store = "memory".into();
        assert!(cfg.open_store().unwrap().describe().contains("in-memory"));
        #[cfg(not(feature = "etcd"))]
        {
            cfg.store = "etcd".into();
            assert!(cfg.open_store().err().unwrap().to_string().contains("--features etcd"));
        }
    }

    #[test]
    fn signing_key_is_created_once_then_reused() {
        let dir = std::env::temp_dir().join(format!("gpupool-key-{}", std::process::id()));
        let path = dir.join("k");
        let _ = std::fs::remove_dir_all(&dir);
        let a = load_or_create_signing_key(&path).unwrap();
        let b = load_or_create_signing_key(&path).unwrap();
        assert_eq!(a.public_key(), b.public_key());
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        std::fs::write(&path, "junk").unwrap();
        assert!(load_or_create_signing_key(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
