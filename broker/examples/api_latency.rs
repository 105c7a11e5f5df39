//! Times the broker's API end to end over HTTP on 127.0.0.1 with the
//! embedded redb store (fsync on every write): lease request, renew and
//! release round trips, then a restart holding many active leases.
//!
//! `cargo run --release -p gpupool-broker --example api_latency [SERVERS] [ROUNDS]`

use std::time::{Duration, Instant};

use gpupool_broker::api;
use gpupool_broker::client::Client;
use gpupool_broker::config::BrokerConfig;
use serde_json::{json, Value};

fn percentiles(mut v: Vec<Duration>) -> String {
    v.sort_unstable();
    let at = |p: f64| v[((v.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    format!(
        "p50 {:>8.0} us   p99 {:>8.0} us   max {:>8.0} us",
        at(0.5),
        at(0.99),
        at(1.0)
    )
}

fn main() -> anyhow::Result<()> {
    let servers: usize = std::env::args().nth(1).and_then(|s| s.parse().ok()).unwrap_or(100);
    let rounds: usize = std::env::args().nth(2).and_then(|s| s.parse().ok()).unwrap_or(1000);
    let dir = std::env::temp_dir().join(format!("gpupool-api-latency-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let cfg = BrokerConfig {
        listen: "127.0.0.1:0".into(),
        db_path: dir.join("broker.redb"),
        admin_token: "admin".into(),
        server_secret: "secret".into(),
        signing_key_file: dir.join("signing.key"),
        ..BrokerConfig::default()
    };
    let running = api::start(&cfg)?;
    let url = format!("http://{}", running.addr);
    let admin = Client::new(&url, Some("admin".into()))?;
    let server = Client::new(&url, Some("secret".into()))?;
    let started = Instant::now();
    for s in 0..servers {
        let gpus: Vec<Value> = (0..8)
            .map(|i| {
                json!({ "uuid": format!("GPU-{s}-{i}"), "model": if s % 2 == 0 { "H100" } else { "A100" },
                        "memory_mib": 81559, "compute_capability": [9, 0], "numa_node": i / 4,
                        "local_cpus": [], "pci_address": "", "nvlink_peers": (0..8).filter(|&p| p != i).collect::<Vec<_>>() })
            })
            .collect();
        server.call::<Value>(
            "POST",
            "/v1/servers/register",
            Some(&json!({ "name": format!("gpu-{s}"), "gpus": gpus })),
        )?;
    }
    println!(
        "registered {servers} servers x 8 GPUs in {:.2} s (each rebuilds the pool)",
        started.elapsed().as_secs_f64()
    );
    let (mut request, mut renew, mut release) = (Vec::new(), Vec::new(), Vec::new());
    let started = Instant::now();
    for i in 0..rounds {
        let body = if i % 4 == 0 {
            json!({ "gpus": 2, "tenant": "train" })
        } else {
            json!({ "slice": { "memory_mib": 8192, "compute_milli": 250 }, "tenant": "infer" })
        };
        let t = Instant::now();
        let lease: Value = admin.call("POST", "/v1/leases", Some(&body))?;
        request.push(t.elapsed());
        let id = lease["id"].as_u64().unwrap_or_default();
        let t = Instant::now();
        admin.call::<Value>("POST", &format!("/v1/leases/{id}/renew"), None)?;
        renew.push(t.elapsed());
        // Keep about half the leases: the pool fills as it would.
        if i % 2 == 0 {
            let t = Instant::now();
            admin.call::<Value>("DELETE", &format!("/v1/leases/{id}"), None)?;
            release.push(t.elapsed());
        }
    }
    let total = started.elapsed().as_secs_f64();
    let calls = request.len() + renew.len() + release.len();
    println!(
        "{rounds} rounds, {calls} calls in {total:.2} s: {:.0} calls/s",
        calls as f64 / total
    );
    println!("request  {}", percentiles(request));
    println!("renew    {}", percentiles(renew));
    println!("release  {}", percentiles(release));
    let (n, mean) = running.broker.metrics.placement_latency();
    println!(
        "placement engine: {n} decisions, mean {:.1} us",
        mean.as_secs_f64() * 1e6
    );
    let pool: Value = admin.call("GET", "/v1/pools", None)?;
    let active = pool[0]["leases"]["active"].clone();
    println!(
        "pool: {} of {} GPUs allocated, fragmentation {:.3}, {active} active leases",
        pool[0]["allocated_milli"].as_f64().unwrap_or(0.0) / 1000.0,
        pool[0]["capacity_milli"].as_f64().unwrap_or(0.0) / 1000.0,
        pool[0]["fragmentation"].as_f64().unwrap_or(0.0)
    );
    let leases_before: Value = admin.call("GET", "/v1/leases", None)?;
    running.stop();
    let t = Instant::now();
    let running = api::start(&cfg)?;
    let reopened = t.elapsed();
    let admin = Client::new(&format!("http://{}", running.addr), Some("admin".into()))?;
    let leases_after: Value = admin.call("GET", "/v1/leases", None)?;
    // Live leases come back with a fresh TTL; everything else is as it was.
    let without_expiry = |v: &Value| -> Vec<Value> {
        v.as_array()
            .map(|ls| {
                ls.iter()
                    .map(|l| {
                        let mut l = l.clone();
                        if let Some(o) = l.as_object_mut() {
                            o.remove("expires_at_ms");
                        }
                        l
                    })
                    .collect()
            })
            .unwrap_or_default()
    };
    println!(
        "restart with {} leases ({active} active): ready in {:.1} ms, leases identical but for renewed expiries: {}",
        leases_before.as_array().map_or(0, Vec::len),
        reopened.as_secs_f64() * 1e3,
        without_expiry(&leases_before) == without_expiry(&leases_after)
    );
    running.stop();
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
