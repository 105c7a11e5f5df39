//! State survives a restart on the same database file; a server that stops
//! heartbeating is marked down within its timeout and its leases are lost.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use gpupool_broker::control::Admission;
use gpupool_proto::lease::{unix_ms_now, LeasePublicKey};
use serde_json::{json, Value};

#[test]
fn restart_on_the_same_file_loses_nothing() {
    let dir = Dir::new("restart");
    let mut cfg = config(&dir);
    cfg.admission = Admission::Queue;
    let (leases_before, tenants_before, public_key, queued_id) = {
        let h = start(&cfg);
        h.register("gpu-a", "H100", 2, 81_559);
        h.register("gpu-b", "L4", 1, 23_034);
        h.admin
            .call::<Value>(
                "PUT",
                "/v1/tenants/nlp/quota",
                Some(&json!({ "max_gpu_milli": 2000, "max_memory_mib": 200000 })),
            )
            .unwrap();
        h.request(json!({ "tenant": "nlp", "gpus": 2, "model": "H100" }))
            .unwrap();
        h.request(json!({ "tenant": "vision", "slice": { "memory_mib": 4096, "compute_milli": 250 } }))
            .unwrap();
        let released = h
            .request(json!({ "tenant": "vision", "slice": { "memory_mib": 1024, "compute_milli": 100 } }))
            .unwrap();
        h.admin
            .call::<Value>("DELETE", &format!("/v1/leases/{}", released["id"]), None)
            .unwrap();
        let queued = h.request(json!({ "tenant": "nlp", "gpus": 1 })).unwrap();
        assert_eq!(queued["state"], "queued");
        h.admin.call::<Value>("POST", "/v1/servers/gpu-b/cordon", None).unwrap();
        let key: Value = h.anonymous.call("GET", "/v1/public-key", None).unwrap();
        (
            h.get("/v1/leases"),
            h.get("/v1/tenants"),
            key["public_key"].clone(),
            queued["id"].clone(),
        )
        // The broker stops here: runtime, listener and database closed.
    };
    assert_eq!(leases_before.as_array().unwrap().len(), 4);

    let h = start(&cfg);
    // Every lease, in every state, came back; live ones with a fresh TTL, as
    // their holders could not renew while the broker was down.
    let leases_after = h.get("/v1/leases");
    let without_expiry = |v: &Value| {
        let mut v = v.clone();
        for l in v.as_array_mut().unwrap() {
            l.as_object_mut().unwrap().remove("expires_at_ms");
        }
        v
    };
    assert_eq!(without_expiry(&leases_after), without_expiry(&leases_before));
    for (after, before) in leases_after
        .as_array()
        .unwrap()
        .iter()
        .zip(leases_before.as_array().unwrap())
    {
        assert!(after["expires_at_ms"].as_u64() >= before["expires_at_ms"].as_u64());
    }
    assert_eq!(h.get("/v1/tenants"), tenants_before, "tenants and quotas came back");
    let servers = h.get("/v1/servers");
    assert_eq!(servers.as_array().unwrap().len(), 2);
    assert_eq!(servers[1]["name"], "gpu-b");
    assert_eq!(servers[1]["state"], "Cordoned");
    // The same signing key: tokens issued now verify with the old public key.
    let key: Value = h.anonymous.call("GET", "/v1/public-key", None).unwrap();
    assert_eq!(key["public_key"], public_key);
    let active: Vec<&Value> = leases_before
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "active")
        .collect();
    assert_eq!(active.len(), 2);
    let verifier = LeasePublicKey::from_text(public_key.as_str().unwrap()).unwrap();
    for lease in &active {
        let renewed: Value = h
            .admin
            .call("POST", &format!("/v1/leases/{}/renew", lease["id"]), None)
            .unwrap();
        assert_eq!(renewed["gpus"], lease["gpus"]);
        let server = renewed["server"].as_str().unwrap();
        verifier
            .verify(renewed["token"].as_str().unwrap(), server, unix_ms_now())
            .unwrap();
    }
    // The capacity they hold is still held: the restored engine refuses what
    // would need it, and GPU views show it.
    assert_eq!(h.get("/v1/pools")[0]["allocated_milli"], 2250);
    let dry: Value = h
        .admin
        .call("POST", "/v1/explain", Some(&json!({ "gpus": 1, "model": "H100" })))
        .unwrap();
    assert_eq!(dry["placeable"], false, "{dry}");
    // The queued request is still queued, and lease ids never repeat.
    assert_eq!(h.get(&format!("/v1/leases/{queued_id}"))["state"], "queued");
    let next = h
        .request(json!({ "tenant": "other", "slice": { "memory_mib": 1, "compute_milli": 1 } }))
        .unwrap();
    assert!(next["id"].as_u64().unwrap() > queued_id.as_u64().unwrap());
    // Releasing a restored lease frees its GPUs for the queued request.
    let gang = active.iter().find(|l| l["tenant"] == "nlp").unwrap();
    h.admin
        .call::<Value>("DELETE", &format!("/v1/leases/{}", gang["id"]), None)
        .unwrap();
    assert_eq!(h.get(&format!("/v1/leases/{queued_id}"))["state"], "active");
}

#[test]
fn a_silent_server_goes_down_within_its_timeout_and_its_leases_are_lost() {
    let dir = Dir::new("heartbeat");
    let mut cfg = config(&dir);
    cfg.heartbeat_timeout_ms = 200;
    let h = start(&cfg);
    h.register("gpu-b", "H100", 1, 81_559);
    h.register("gpu-a", "H100", 1, 81_559);
    // Both servers heartbeat from their own thread, however slow the
    // requests below are on a loaded machine, until gpu-a is told to fall
    // silent; the thread notes when it sent gpu-a's last heartbeat.
    let stop = Arc::new(AtomicBool::new(false));
    let gpu_a = Arc::new(Mutex::new((true, Instant::now())));
    let beating = {
        let (client, stop, gpu_a) = (h.server.clone(), stop.clone(), gpu_a.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = client.call::<Value>("POST", "/v1/servers/gpu-b/heartbeat", None);
                {
                    let mut a = gpu_a.lock().unwrap();
                    if a.0 {
                        a.1 = Instant::now();
                        let _ = client.call::<Value>("POST", "/v1/servers/gpu-a/heartbeat", None);
                    }
                }
                std::thread::sleep(Duration::from_millis(25));
            }
        })
    };
    let on_a = h
        .request(json!({ "gpus": 1, "locality": { "server": "gpu-a" } }))
        .unwrap();
    assert_eq!(on_a["server"], "gpu-a");
    let on_b = h.request(json!({ "gpus": 1 })).unwrap();
    assert_eq!(on_b["server"], "gpu-b");
    let waiting = h.request(json!({ "gpus": 1, "ttl_ms": 10_000 })).unwrap();
    assert_eq!(waiting["state"], "queued");

    let silent_since = {
        let mut a = gpu_a.lock().unwrap();
        a.0 = false;
        a.1
    };
    // gpu-b keeps beating; gpu-a falls silent.
    let mut down_after = None;
    while silent_since.elapsed() < Duration::from_secs(3) {
        let a = h.get("/v1/servers/gpu-a");
        if a["state"] == "Down" {
            down_after = Some(silent_since.elapsed());
            assert!(a["down_reason"].as_str().unwrap().contains("no heartbeat for"), "{a}");
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let down_after = down_after.expect("gpu-a marked down");
    // Timeout 200 ms, checked every 50 ms: down between 200 and ~300 ms
    // (allowing for a loaded machine).
    assert!(down_after >= Duration::from_millis(200), "{down_after:?}");
    assert!(down_after < Duration::from_millis(1000), "{down_after:?}");
    println!(
        "gpu-a marked down {} ms after its last heartbeat (timeout 200 ms)",
        down_after.as_millis()
    );

    let (status, code, message) = refusal(h.admin.call("POST", &format!("/v1/leases/{}/renew", on_a["id"]), None));
    assert_eq!((status, code.as_str()), (410, "lease_ended"));
    assert!(message.contains("lease lost: server gpu-a down"), "{message}");
    assert_eq!(h.get(&format!("/v1/leases/{}", on_a["id"]))["state"], "lost");
    // The healthy server's lease is untouched; a down server takes nothing.
    let renewed: Value = h
        .admin
        .call("POST", &format!("/v1/leases/{}/renew", on_b["id"]), None)
        .unwrap();
    assert_eq!(renewed["state"], "active");
    assert_eq!(h.get(&format!("/v1/leases/{}", waiting["id"]))["state"], "queued");
    let metrics = h.raw(&h.anonymous, "GET", "/metrics", None).text();
    assert!(metrics.contains("gpupool_heartbeat_timeouts_total 1"), "{metrics}");
    assert!(metrics.contains("gpupool_servers{state=\"down\"} 1"), "{metrics}");

    // Heartbeats resume: the server is back up and serves the queue; the
    // lost lease stays lost.
    let beat = h.heartbeat("gpu-a");
    assert_eq!(beat["state"], "Up");
    let granted = h.get(&format!("/v1/leases/{}", waiting["id"]));
    assert_eq!(granted["state"], "active");
    assert_eq!(granted["server"], "gpu-a");
    assert_eq!(h.get(&format!("/v1/leases/{}", on_a["id"]))["state"], "lost");
    stop.store(true, Ordering::Relaxed);
    beating.join().unwrap();
}
