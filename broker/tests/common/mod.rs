//! Test support: a broker on 127.0.0.1:0 with its files in a fresh folder,
//! and clients for the admin and for a GPU server.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use gpupool_broker::api::{self, RunningBroker};
use gpupool_broker::client::{Client, ClientError, Response};
use gpupool_broker::config::BrokerConfig;
use serde_json::{json, Value};

pub const ADMIN: &str = "admin-token-for-tests";
pub const SECRET: &str = "server-secret-for-tests";

/// A folder of its own per test, removed when dropped.
pub struct Dir(pub PathBuf);

impl Dir {
    pub fn new(name: &str) -> Dir {
        static N: AtomicU32 = AtomicU32::new(0);
        let path = std::env::temp_dir().join(format!(
            "gpupool-broker-test-{}-{name}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).expect("create test folder");
        Dir(path)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn config(dir: &Dir) -> BrokerConfig {
    BrokerConfig {
        listen: "127.0.0.1:0".into(),
        db_path: dir.0.join("broker.redb"),
        admin_token: ADMIN.into(),
        server_secret: SECRET.into(),
        signing_key_file: dir.0.join("signing.key"),
        ..BrokerConfig::default()
    }
}

pub struct Harness {
    pub running: RunningBroker,
    pub admin: Client,
    pub server: Client,
    pub anonymous: Client,
}

pub fn start(cfg: &BrokerConfig) -> Harness {
    let running = api::start(cfg).expect("broker starts");
    let url = format!("http://{}", running.addr);
    Harness {
        admin: Client::new(&url, Some(ADMIN.into())).unwrap(),
        server: Client::new(&url, Some(SECRET.into())).unwrap(),
        anonymous: Client::new(&url, None).unwrap(),
        running,
    }
}

/// A registration of `count` GPUs of `model`, NVLink-joined, one NUMA node.
pub fn registration(name: &str, model: &str, count: usize, memory_mib: u64) -> Value {
    let gpus: Vec<Value> = (0..count)
        .map(|i| {
            json!({
                "uuid": format!("GPU-{name}-{i}"),
                "model": model,
                "memory_mib": memory_mib,
                "compute_capability": [9, 0],
                "numa_node": 0,
                "local_cpus": [0, 1, 2, 3],
                "pci_address": format!("0000:{:02x}:00.0", 0x10 + i),
                "nvlink_peers": (0..count as u8).filter(|&p| p as usize != i).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "name": name,
        "endpoint": format!("tcp://{name}:7070"),
        "gpus": gpus,
        "nics": [{ "name": "mlx5_0", "numa_node": 0, "rdma": true }],
    })
}

impl Harness {
    pub fn register(&self, name: &str, model: &str, count: usize, memory_mib: u64) -> Value {
        self.server
            .call(
                "POST",
                "/v1/servers/register",
                Some(&registration(name, model, count, memory_mib)),
            )
            .expect("registration accepted")
    }

    pub fn heartbeat(&self, name: &str) -> Value {
        self.server
            .call("POST", &format!("/v1/servers/{name}/heartbeat"), None)
            .expect("heartbeat accepted")
    }

    pub fn request(&self, body: Value) -> Result<Value, ClientError> {
        self.admin.call("POST", "/v1/leases", Some(&body))
    }

    pub fn get(&self, path: &str) -> Value {
        self.admin.call("GET", path, None).expect("GET succeeds")
    }

    pub fn raw(&self, client: &Client, method: &str, path: &str, body: Option<&str>) -> Response {
        client
            .send(method, path, body.map(str::as_bytes))
            .expect("broker answers")
    }
}

/// The status and error message of a refused call.
pub fn refusal(result: Result<Value, ClientError>) -> (u16, String, String) {
    match result {
        Err(ClientError::Api { status, code, message }) => (status, code, message),
        other => panic!("expected the broker to refuse, got {other:?}"),
    }
}

/// Polls `check` every 10 ms until it holds or `limit` passes.
pub fn eventually(limit: std::time::Duration, mut check: impl FnMut() -> bool) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if check() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    check()
}
