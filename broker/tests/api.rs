//! The broker's admin API over real HTTP on 127.0.0.1.

mod common;

use std::time::Duration;

use common::*;
use gpupool_broker::control::Admission;
use gpupool_proto::lease::{unix_ms_now, LeasePublicKey, LeaseTokenError};
use serde_json::{json, Value};

fn public_key(h: &Harness) -> LeasePublicKey {
    let v: Value = h.anonymous.call("GET", "/v1/public-key", None).unwrap();
    LeasePublicKey::from_text(v["public_key"].as_str().unwrap()).unwrap()
}

#[test]
fn register_heartbeat_request_renew_release() {
    let dir = Dir::new("flow");
    let h = start(&config(&dir));
    let server = h.register("gpu-a", "H100", 2, 81_559);
    assert_eq!(server["state"], "Up");
    assert_eq!(server["gpus"], 2);
    let beat = h.heartbeat("gpu-a");
    assert_eq!(beat["active_leases"], json!([]));

    let lease = h
        .request(json!({ "tenant": "vision", "slice": { "memory_mib": 8192, "compute_milli": 250 }, "holder": "node1/42/train" }))
        .unwrap();
    assert_eq!(lease["state"], "active");
    assert_eq!(lease["server"], "gpu-a");
    assert_eq!(lease["endpoint"], "tcp://gpu-a:7070");
    assert_eq!(lease["nic"], "mlx5_0");
    assert_eq!(lease["gpus"][0]["compute_milli"], 250);
    assert_eq!(lease["gpus"][0]["memory_mib"], 8192);
    let id = lease["id"].as_u64().unwrap();

    // The token verifies with the broker's public key, offline, and names
    // exactly what was granted.
    let key = public_key(&h);
    let token = lease["token"].as_str().unwrap();
    let claims = key.verify(token, "gpu-a", unix_ms_now()).unwrap();
    assert_eq!(claims.lease_id, id.to_string());
    assert_eq!(claims.gpus[0].uuid, lease["gpus"][0]["uuid"].as_str().unwrap());
    assert_eq!(claims.gpus[0].compute_milli, 250);
    assert_eq!(claims.tenant, "vision");
    assert!(matches!(
        key.verify(token, "gpu-b", unix_ms_now()),
        Err(LeaseTokenError::WrongServer { .. })
    ));

    // The heartbeat now reports the lease; the GPU shows it.
    assert_eq!(h.heartbeat("gpu-a")["active_leases"], json!([id]));
    let gpus = h.get("/v1/gpus");
    let used: Vec<&Value> = gpus
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["free_milli"] == 750)
        .collect();
    assert_eq!(used.len(), 1);
    assert_eq!(used[0]["leases"], json!([id]));
    assert_eq!(h.get("/v1/slices")[0]["lease"], id);

    std::thread::sleep(Duration::from_millis(5));
    let renewed: Value = h.admin.call("POST", &format!("/v1/leases/{id}/renew"), None).unwrap();
    assert!(renewed["expires_at_ms"].as_u64() > lease["expires_at_ms"].as_u64());
    let renewed_claims = key
        .verify(renewed["token"].as_str().unwrap(), "gpu-a", unix_ms_now())
        .unwrap();
    assert!(renewed_claims.expires_at_ms > claims.expires_at_ms);

    let pool = &h.get("/v1/pools")[0];
    assert_eq!(pool["allocated_milli"], 250);
    assert_eq!(pool["capacity_milli"], 2000);
    assert_eq!(pool["leases"]["active"], 1);
    let tenants = h.get("/v1/tenants");
    assert_eq!(tenants[0]["name"], "vision");
    assert_eq!(tenants[0]["used_gpu_milli"], 250);

    let released: Value = h.admin.call("DELETE", &format!("/v1/leases/{id}"), None).unwrap();
    assert_eq!(released["state"], "released");
    assert!(released["token"].is_null());
    assert_eq!(h.get("/v1/pools")[0]["allocated_milli"], 0);
    let (status, code, message) = refusal(h.admin.call("POST", &format!("/v1/leases/{id}/renew"), None));
    assert_eq!((status, code.as_str()), (410, "lease_ended"));
    assert!(message.contains("released"), "{message}");

    // Metrics and the OpenAPI document are served without a token.
    let metrics = h.raw(&h.anonymous, "GET", "/metrics", None).text();
    for line in [
        "gpupool_gpu_capacity 2",
        "gpupool_gpu_allocated 0",
        "gpupool_heartbeats_total 2",
        "gpupool_placements_total{outcome=\"granted\"} 1",
        "gpupool_placement_seconds_count 1",
        "gpupool_leases{state=\"released\"} 1",
        "gpupool_servers{state=\"up\"} 1",
        "gpupool_fragmentation_ratio 0",
    ] {
        assert!(metrics.lines().any(|l| l == line), "missing {line:?} in\n{metrics}");
    }
    let openapi: Value = h.anonymous.call("GET", "/openapi.json", None).unwrap();
    assert!(openapi["paths"]["/v1/leases"]["post"].is_object());
}

#[test]
fn gangs_are_all_or_nothing_and_fragmentation_is_reported() {
    let dir = Dir::new("gang");
    let mut cfg = config(&dir);
    cfg.admission = Admission::Refuse;
    let h = start(&cfg);
    h.register("gpu-a", "H100", 4, 81_559);
    let slice = h
        .request(json!({ "slice": { "memory_mib": 1000, "compute_milli": 500 } }))
        .unwrap();
    let gang = h.request(json!({ "gpus": 3, "model": "H100" })).unwrap();
    assert_eq!(gang["gpus"].as_array().unwrap().len(), 3);
    assert_ne!(
        gang["gpus"]
            .as_array()
            .unwrap()
            .iter()
            .map(|g| g["index"].clone())
            .collect::<Vec<_>>(),
        vec![slice["gpus"][0]["index"].clone()]
    );
    // Half of one GPU is left: no gang of two, not even one whole GPU.
    let (status, code, message) = refusal(h.request(json!({ "gpus": 2 })));
    assert_eq!((status, code.as_str()), (503, "no_capacity"));
    assert!(message.contains("2 whole GPU"), "{message}");
    assert_eq!(h.get("/v1/pools")[0]["allocated_milli"], 3500);
    // All that is free is half of the sliced GPU: fully fragmented.
    assert_eq!(refusal(h.request(json!({ "gpus": 1 }))).0, 503);
    assert_eq!(h.get("/v1/pools")[0]["fragmentation"], 1.0);
    h.admin
        .call::<Value>("DELETE", &format!("/v1/leases/{}", gang["id"]), None)
        .unwrap();
    let frag = h.get("/v1/pools")[0]["fragmentation"].as_f64().unwrap();
    assert!((frag - 500.0 / 3500.0).abs() < 1e-9, "{frag}");
    let (status, _, message) = refusal(h.request(json!({ "gpus": 1, "model": "T4" })));
    assert_eq!(status, 400);
    assert!(message.contains("no GPU of model \"T4\""), "{message}");
}

#[test]
fn auth_failures_are_refused_with_reasons() {
    let dir = Dir::new("auth");
    let h = start(&config(&dir));
    let (status, code, message) = refusal(h.anonymous.call("GET", "/v1/servers", None));
    assert_eq!((status, code.as_str()), (401, "unauthorized"));
    assert!(message.contains("no admin token"), "{message}");
    let wrong = h.admin.with_token(Some("nope".into()));
    let (status, _, message) = refusal(wrong.call("GET", "/v1/leases", None));
    assert_eq!(status, 401);
    assert!(message.contains("wrong admin token"), "{message}");
    // The server secret is not an admin token, nor the other way round.
    assert_eq!(refusal(h.server.call("GET", "/v1/servers", None)).0, 401);
    let reg = registration("gpu-a", "H100", 1, 1000);
    let (status, _, message) = refusal(h.admin.call("POST", "/v1/servers/register", Some(&reg)));
    assert_eq!(status, 401);
    assert!(message.contains("server_secret"), "{message}");
    assert_eq!(
        refusal(h.anonymous.call("POST", "/v1/servers/gpu-a/heartbeat", None)).0,
        401
    );
    // Open endpoints stay open.
    assert_eq!(h.raw(&h.anonymous, "GET", "/healthz", None).status, 200);
}

#[test]
fn malformed_input_gets_400_with_a_clear_error() {
    let dir = Dir::new("malformed");
    let h = start(&config(&dir));
    h.register("gpu-a", "H100", 1, 81_559);
    let r = h.raw(&h.admin, "POST", "/v1/leases", Some("{\"gpus\": 1,"));
    assert_eq!(r.status, 400);
    let body: Value = r.json().unwrap();
    assert_eq!(body["code"], "bad_json");
    assert!(
        body["error"].as_str().unwrap().contains("not a valid lease request"),
        "{body}"
    );
    let r = h.raw(&h.admin, "POST", "/v1/leases", Some("{\"gpuz\": 1}"));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("unknown field"), "{}", r.text());
    let r = h.raw(
        &h.admin,
        "POST",
        "/v1/leases",
        Some("{\"gpus\": 1, \"slice\": {\"memory_mib\": 1, \"compute_milli\": 1}}"),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("exactly one of gpus"), "{}", r.text());
    let r = h.raw(
        &h.admin,
        "POST",
        "/v1/leases",
        Some("{\"slice\": {\"memory_mib\": 1, \"compute_milli\": 1001}}"),
    );
    assert_eq!(r.status, 400);
    let r = h.raw(
        &h.admin,
        "POST",
        "/v1/leases",
        Some("{\"gpus\": 1, \"ttl_ms\": 99999999999}"),
    );
    assert_eq!(r.status, 400);
    assert!(r.text().contains("ttl_ms"), "{}", r.text());
    let r = h.raw(
        &h.admin,
        "POST",
        "/v1/leases",
        Some("{\"gpus\": 1, \"tenant\": \"no spaces\"}"),
    );
    assert_eq!(r.status, 400);
    let r = h.raw(&h.admin, "GET", "/v1/leases/abc", None);
    assert_eq!(r.status, 400);
    assert!(r.text().contains("not a lease id"), "{}", r.text());
    let r = h.raw(&h.admin, "GET", "/v1/leases/999", None);
    assert_eq!(r.status, 404);
    let r = h.raw(&h.admin, "PUT", "/v1/tenants/t/quota", Some("{\"max_gpu_milli\": -1}"));
    assert_eq!(r.status, 400);
    let r = h.raw(&h.server, "POST", "/v1/servers/register", Some("{\"name\": \"x\"}"));
    assert_eq!(r.status, 400);
    assert!(r.text().contains("missing field `gpus`"), "{}", r.text());
    let mut dup = registration("gpu-b", "H100", 2, 1000);
    dup["gpus"][1]["uuid"] = dup["gpus"][0]["uuid"].clone();
    let r = h.raw(&h.server, "POST", "/v1/servers/register", Some(&dup.to_string()));
    assert_eq!(r.status, 400);
    let stolen = registration("gpu-a", "H100", 1, 1000);
    let mut stolen_b = registration("gpu-c", "H100", 1, 1000);
    stolen_b["gpus"][0]["uuid"] = stolen["gpus"][0]["uuid"].clone();
    let r = h.raw(&h.server, "POST", "/v1/servers/register", Some(&stolen_b.to_string()));
    assert_eq!(r.status, 409);
    let r = h.raw(&h.server, "POST", "/v1/servers/nobody/heartbeat", None);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("register it first"), "{}", r.text());
    let r = h.raw(&h.admin, "GET", "/v1/nothing-here", None);
    assert_eq!(r.status, 404);
    assert!(r.text().contains("openapi.json"));
    // The broker still works after all that.
    assert_eq!(h.request(json!({ "gpus": 1 })).unwrap()["state"], "active");
}

#[test]
fn over_quota_requests_are_refused_when_so_configured() {
    let dir = Dir::new("quota-refuse");
    let mut cfg = config(&dir);
    cfg.admission = Admission::Refuse;
    let h = start(&cfg);
    h.register("gpu-a", "A100", 4, 40_960);
    let t: Value = h
        .admin
        .call("PUT", "/v1/tenants/nlp/quota", Some(&json!({ "max_gpu_milli": 1500 })))
        .unwrap();
    assert_eq!(t["quota"]["max_gpu_milli"], 1500);
    h.request(json!({ "tenant": "nlp", "gpus": 1 })).unwrap();
    let (status, code, message) = refusal(h.request(json!({ "tenant": "nlp", "gpus": 1 })));
    assert_eq!((status, code.as_str()), (403, "quota_exceeded"));
    assert!(
        message.contains("tenant nlp holds 1 GPU of its 1.500 GPU quota"),
        "{message}"
    );
    // A half-GPU slice still fits the quota; another tenant is not limited.
    h.request(json!({ "tenant": "nlp", "slice": { "memory_mib": 1024, "compute_milli": 500 } }))
        .unwrap();
    h.request(json!({ "tenant": "vision", "gpus": 2 })).unwrap();
    // Memory quotas count the whole memory of whole GPUs.
    h.admin
        .call::<Value>(
            "PUT",
            "/v1/tenants/vision/quota",
            Some(&json!({ "max_memory_mib": 100_000 })),
        )
        .unwrap();
    let (status, _, message) =
        refusal(h.request(json!({ "tenant": "vision", "slice": { "memory_mib": 30000, "compute_milli": 100 } })));
    assert_eq!(status, 403);
    assert!(message.contains("memory quota"), "{message}");
    assert_eq!(h.get("/v1/tenants/vision")["used_memory_mib"], 81_920);
    // Nothing was left allocated by the refusals.
    assert_eq!(h.get("/v1/pools")[0]["allocated_milli"], 3500);
}

#[test]
fn over_quota_requests_queue_and_are_granted_when_quota_frees() {
    let dir = Dir::new("quota-queue");
    let h = start(&config(&dir));
    h.register("gpu-a", "A100", 4, 40_960);
    h.admin
        .call::<Value>("PUT", "/v1/tenants/nlp/quota", Some(&json!({ "max_gpu_milli": 1000 })))
        .unwrap();
    let first = h.request(json!({ "tenant": "nlp", "gpus": 1 })).unwrap();
    let second = h.request(json!({ "tenant": "nlp", "gpus": 1 })).unwrap();
    assert_eq!(second["state"], "queued");
    assert!(second["token"].is_null());
    assert!(second["reason"].as_str().unwrap().contains("quota"), "{second}");
    let id2 = second["id"].as_u64().unwrap();
    // Polling a queued lease keeps it queued.
    let polled: Value = h.admin.call("POST", &format!("/v1/leases/{id2}/renew"), None).unwrap();
    assert_eq!(polled["state"], "queued");
    assert_eq!(h.get("/v1/tenants/nlp")["queued_leases"], 1);
    h.admin
        .call::<Value>("DELETE", &format!("/v1/leases/{}", first["id"]), None)
        .unwrap();
    let now: Value = h.get(&format!("/v1/leases/{id2}"));
    assert_eq!(now["state"], "active");
    assert!(now["token"].is_string());
    // Raising the quota also lets the queue move.
    let third = h.request(json!({ "tenant": "nlp", "gpus": 2 })).unwrap();
    assert_eq!(third["state"], "queued");
    h.admin
        .call::<Value>("PUT", "/v1/tenants/nlp/quota", Some(&json!({ "max_gpu_milli": 3000 })))
        .unwrap();
    assert_eq!(h.get(&format!("/v1/leases/{}", third["id"]))["state"], "active");
    assert!(h
        .raw(&h.anonymous, "GET", "/metrics", None)
        .text()
        .contains("gpupool_placements_total{outcome=\"queued\"} 2"));
}

#[test]
fn cordon_and_drain_stop_new_placements_only() {
    let dir = Dir::new("cordon");
    let h = start(&config(&dir));
    h.register("gpu-a", "H100", 1, 81_559);
    let held = h
        .request(json!({ "slice": { "memory_mib": 1024, "compute_milli": 100 } }))
        .unwrap();
    let s: Value = h.admin.call("POST", "/v1/servers/gpu-a/cordon", None).unwrap();
    assert_eq!(s["state"], "Cordoned");
    let waiting = h
        .request(json!({ "slice": { "memory_mib": 1024, "compute_milli": 100 } }))
        .unwrap();
    assert_eq!(waiting["state"], "queued");
    assert!(
        waiting["reason"].as_str().unwrap().contains("no server can take"),
        "{waiting}"
    );
    // The held lease keeps running and renewing on the cordoned server.
    let renewed: Value = h
        .admin
        .call("POST", &format!("/v1/leases/{}/renew", held["id"]), None)
        .unwrap();
    assert_eq!(renewed["state"], "active");
    let s: Value = h.admin.call("POST", "/v1/servers/gpu-a/drain", None).unwrap();
    assert_eq!(s["state"], "Draining");
    assert_eq!(s["active_leases"], 1);
    assert_eq!(h.get(&format!("/v1/leases/{}", waiting["id"]))["state"], "queued");
    let s: Value = h.admin.call("POST", "/v1/servers/gpu-a/uncordon", None).unwrap();
    assert_eq!(s["state"], "Up");
    assert_eq!(h.get(&format!("/v1/leases/{}", waiting["id"]))["state"], "active");
    let (status, _, _) = refusal(h.admin.call("POST", "/v1/servers/nobody/cordon", None));
    assert_eq!(status, 404);
}

#[test]
fn explanations_show_the_candidates_and_the_choice() {
    let dir = Dir::new("explain");
    let h = start(&config(&dir));
    h.register("gpu-a", "H100", 2, 81_559);
    h.register("gpu-b", "H100", 2, 81_559);
    let first = h
        .request(json!({ "slice": { "memory_mib": 1024, "compute_milli": 300 } }))
        .unwrap();
    let second = h
        .request(json!({ "slice": { "memory_mib": 1024, "compute_milli": 300 } }))
        .unwrap();
    // Best fit puts the second slice beside the first.
    assert_eq!(second["gpus"][0]["uuid"], first["gpus"][0]["uuid"]);
    let why = h.get(&format!("/v1/leases/{}/explain", second["id"]));
    assert_eq!(why["policy"], "BestFit");
    let candidates = why["candidates"].as_array().unwrap();
    assert_eq!(candidates.len(), 2, "{why}");
    let chosen = &candidates[why["chosen"].as_u64().unwrap() as usize];
    assert_eq!(chosen["server_name"], second["server"]);
    // A dry run explains without allocating.
    let before = h.get("/v1/pools")[0]["allocated_milli"].clone();
    let dry: Value = h
        .admin
        .call("POST", "/v1/explain", Some(&json!({ "gpus": 2 })))
        .unwrap();
    assert_eq!(dry["placeable"], true);
    assert!(
        dry["outcome"].as_str().unwrap().starts_with("would place on server"),
        "{dry}"
    );
    let dry: Value = h
        .admin
        .call("POST", "/v1/explain", Some(&json!({ "gpus": 3 })))
        .unwrap();
    assert_eq!(dry["placeable"], false);
    assert!(dry["outcome"].as_str().unwrap().contains("no server can take"), "{dry}");
    assert_eq!(h.get("/v1/pools")[0]["allocated_milli"], before);
    assert_eq!(h.get("/v1/leases").as_array().unwrap().len(), 2);
}

#[test]
fn preemption_only_when_configured() {
    let dir = Dir::new("preempt");
    let mut cfg = config(&dir);
    cfg.admission = Admission::Refuse;
    cfg.preemption = true;
    let h = start(&cfg);
    h.register("gpu-a", "H100", 2, 81_559);
    let low = h
        .request(json!({ "gpus": 1, "priority": 0, "tenant": "batch" }))
        .unwrap();
    let lower = h
        .request(json!({ "gpus": 1, "priority": -5, "tenant": "batch" }))
        .unwrap();
    // Equal priority does not preempt.
    assert_eq!(refusal(h.request(json!({ "gpus": 1, "priority": -5 }))).0, 503);
    let high = h
        .request(json!({ "gpus": 1, "priority": 10, "tenant": "prod" }))
        .unwrap();
    assert_eq!(high["state"], "active");
    // The lowest-priority lease went; the other stays.
    let (status, code, message) = refusal(h.admin.call("POST", &format!("/v1/leases/{}/renew", lower["id"]), None));
    assert_eq!((status, code.as_str()), (410, "lease_ended"));
    assert!(
        message.contains(&format!("preempted by higher-priority lease {}", high["id"])),
        "{message}"
    );
    assert_eq!(h.get(&format!("/v1/leases/{}", low["id"]))["state"], "active");
    assert!(h
        .raw(&h.anonymous, "GET", "/metrics", None)
        .text()
        .contains("gpupool_preemptions_total 1"));

    // Without the setting, priority only orders the queue.
    let dir2 = Dir::new("no-preempt");
    let mut cfg2 = config(&dir2);
    cfg2.admission = Admission::Refuse;
    let h2 = start(&cfg2);
    h2.register("gpu-a", "H100", 1, 81_559);
    h2.request(json!({ "gpus": 1, "priority": 0 })).unwrap();
    assert_eq!(refusal(h2.request(json!({ "gpus": 1, "priority": 10 }))).0, 503);
}

#[test]
fn unrenewed_leases_expire_and_free_their_gpus() {
    let dir = Dir::new("expiry");
    let mut cfg = config(&dir);
    cfg.lease_ttl_ms = 400;
    cfg.heartbeat_timeout_ms = 60_000;
    let h = start(&cfg);
    h.register("gpu-a", "H100", 1, 81_559);
    let lease = h.request(json!({ "gpus": 1 })).unwrap();
    let waiting = h.request(json!({ "gpus": 1, "ttl_ms": 5000 })).unwrap();
    assert_eq!(waiting["state"], "queued");
    let id = lease["id"].as_u64().unwrap();
    assert!(eventually(Duration::from_secs(3), || h
        .get(&format!("/v1/leases/{id}"))["state"]
        == "expired"));
    let (status, _, message) = refusal(h.admin.call("POST", &format!("/v1/leases/{id}/renew"), None));
    assert_eq!(status, 410);
    assert!(message.contains("lease expired"), "{message}");
    // Its GPU went to the queued request.
    assert_eq!(h.get(&format!("/v1/leases/{}", waiting["id"]))["state"], "active");
}
