//! Broker failover on etcd, end to end: a real `etcd` and two
//! `gpupool-broker` processes on one prefix and one signing key. The leader
//! is killed and the standby takes over every lease; a leader stopped past
//! its lease's TTL comes back deposed, refuses every call with
//! `503 not_leader` and changes nothing; a leader stopped cleanly hands over
//! at once.
//!
//! Needs the `etcd` binary (Debian: etcd-server): without it the tests say
//! so and pass, unless `GPUPOOL_REQUIRE_ETCD=1` (as `scripts/test.sh` sets).

#![cfg(feature = "etcd")]

mod common;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, registration, Dir, ADMIN, SECRET};
use gpupool_broker::client::{Client, ClientError};
use gpupool_broker::config::load_or_create_signing_key;
use gpupool_proto::lease::{unix_ms_now, LeasePublicKey};
use serde_json::{json, Value};

/// TTL of the brokers' leadership lease, in seconds.
const LEASE_TTL_S: u64 = 1;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// Test fixture: one etcd member on free loopback ports, its data in a
/// folder of its own; killed and the folder removed when dropped.
struct EtcdFixture {
    child: Child,
    url: String,
    log: PathBuf,
    _dir: Dir,
}

impl EtcdFixture {
    /// `None` (after saying why) when there is no etcd binary to run.
    fn start(test: &str) -> Option<EtcdFixture> {
        if Command::new("etcd").arg("--version").output().is_err() {
            assert!(
                std::env::var("GPUPOOL_REQUIRE_ETCD").map_or(true, |v| v != "1"),
                "GPUPOOL_REQUIRE_ETCD=1 but there is no etcd binary on PATH (install etcd-server)"
            );
            println!("skipping {test}: no etcd binary on PATH (install etcd-server)");
            return None;
        }
        let dir = Dir::new(&format!("etcd-{test}"));
        let (client, peer) = (free_port(), free_port());
        let url = format!("http://127.0.0.1:{client}");
        let peer_url = format!("http://127.0.0.1:{peer}");
        let log = dir.0.join("etcd.log");
        let out = std::fs::File::create(&log).expect("etcd log file");
        let child = Command::new("etcd")
            .args(["--name", "gpupool-test", "--data-dir"])
            .arg(dir.0.join("data"))
            .args(["--listen-client-urls", &url, "--advertise-client-urls", &url])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args(["--initial-cluster", &format!("gpupool-test={peer_url}")])
            // Short raft timings: a one-member cluster elects itself at
            // once, and etcd grants leases as short as 1 s (its minimum TTL
            // is 1.5 election timeouts, rounded up to whole seconds).
            .args(["--heartbeat-interval", "25", "--election-timeout", "250"])
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .expect("start etcd");
        let etcd = EtcdFixture {
            child,
            url,
            log,
            _dir: dir,
        };
        let health = Client::new(&etcd.url, None)
            .unwrap()
            .with_timeout(Duration::from_secs(2));
        let healthy = eventually(Duration::from_secs(20), || {
            health
                .send("GET", "/health", None)
                .is_ok_and(|r| r.status == 200 && r.text().contains("true"))
        });
        assert!(healthy, "etcd did not become healthy:\n{}", read(&etcd.log));
        Some(etcd)
    }
}

impl Drop for EtcdFixture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Test fixture: a `gpupool-broker` process on etcd, its output in files;
/// killed when dropped.
struct BrokerProcess {
    child: Child,
    url: String,
    out: PathBuf,
    err: PathBuf,
}

impl BrokerProcess {
    fn start(dir: &Dir, name: &str, etcd: &EtcdFixture, prefix: &str, key_file: &Path, ttl_s: u64) -> BrokerProcess {
        let port = free_port();
        let config = dir.0.join(format!("{name}.toml"));
        let text = format!(
            "listen = \"127.0.0.1:{port}\"\nstore = \"etcd\"\netcd_endpoints = [\"{}\"]\n\
             etcd_prefix = \"{prefix}\"\netcd_lease_ttl_s = {ttl_s}\nbroker_name = \"{name}\"\n\
             admin_token = \"{ADMIN}\"\nserver_secret = \"{SECRET}\"\nsigning_key_file = \"{}\"\n\
             heartbeat_timeout_ms = 60000\n",
            etcd.url,
            key_file.display()
        );
        std::fs::write(&config, text).expect("write broker config");
        let (out, err) = (dir.0.join(format!("{name}.out")), dir.0.join(format!("{name}.err")));
        let child = Command::new(env!("CARGO_BIN_EXE_gpupool-broker"))
            .arg("--config")
            .arg(&config)
            .env_clear()
            .env("GPUPOOL_LOG", "info")
            .stdout(std::fs::File::create(&out).expect("broker output file"))
            .stderr(std::fs::File::create(&err).expect("broker log file"))
            .spawn()
            .expect("start gpupool-broker");
        BrokerProcess {
            child,
            url: format!("http://127.0.0.1:{port}"),
            out,
            err,
        }
    }

    /// What it printed and logged, for failure messages.
    fn output(&self) -> String {
        format!("--- stdout\n{}--- stderr\n{}", read(&self.out), read(&self.err))
    }

    fn admin(&self) -> Client {
        Client::new(&self.url, Some(ADMIN.into()))
            .unwrap()
            .with_timeout(Duration::from_secs(5))
    }

    fn server(&self) -> Client {
        self.admin().with_token(Some(SECRET.into()))
    }

    /// Whether it answers calls on the pool's state.
    fn serving(&self) -> bool {
        self.admin().call::<Value>("GET", "/v1/pools", None).is_ok()
    }

    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn signal(&self, signal: libc::c_int) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) takes plain integers and touches no memory of
        // ours; the pid is our own child's, not yet waited for, so it cannot
        // name another process.
        let rc = unsafe { libc::kill(pid, signal) };
        assert_eq!(rc, 0, "kill({pid}, {signal}) failed");
    }

    /// Waits for it to stand by: alive, campaigning, its port closed.
    fn standing_by(&mut self) {
        let campaigning = eventually(Duration::from_secs(20), || {
            read(&self.err).contains("campaigning for broker leadership")
        });
        assert!(campaigning, "the standby never campaigned:\n{}", self.output());
        assert!(self.running(), "the standby exited:\n{}", self.output());
        assert!(
            matches!(
                self.admin().call::<Value>("GET", "/v1/pools", None),
                Err(ClientError::Connect { .. })
            ),
            "a standby must not serve:\n{}",
            self.output()
        );
        assert!(read(&self.out).contains("standing by"), "{}", self.output());
    }
}

impl Drop for BrokerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Two brokers on one etcd prefix and one signing key: `a` serving as the
/// leader, `b` standing by.
struct Pool {
    a: BrokerProcess,
    b: BrokerProcess,
    public_key: LeasePublicKey,
    // Dropped last: the brokers' files live there.
    _dir: Dir,
}

fn pool(test: &str, etcd: &EtcdFixture, ttl_s: u64) -> Pool {
    let dir = Dir::new(test);
    // One key file for both, made before either starts.
    let key_file = dir.0.join("signing.key");
    let public_key = load_or_create_signing_key(&key_file).unwrap().public_key();
    let prefix = format!("/gpupool-{test}/");
    let a = BrokerProcess::start(&dir, "broker-a", etcd, &prefix, &key_file, ttl_s);
    assert!(
        eventually(Duration::from_secs(20), || a.serving()),
        "broker A never served:\n{}",
        a.output()
    );
    let mut b = BrokerProcess::start(&dir, "broker-b", etcd, &prefix, &key_file, ttl_s);
    b.standing_by();
    Pool {
        a,
        b,
        public_key,
        _dir: dir,
    }
}

fn call(client: &Client, method: &str, path: &str, body: Option<Value>) -> Value {
    client
        .call(method, path, body.as_ref())
        .unwrap_or_else(|e| panic!("{method} {path} failed: {e}"))
}

fn lease_request(client: &Client, body: Value) -> Value {
    call(client, "POST", "/v1/leases", Some(body))
}

fn ids(leases: &Value) -> Vec<u64> {
    leases
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["id"].as_u64().unwrap())
        .collect()
}

/// Leases as compared across a failover: a standby gives live leases a
/// fresh TTL (their holders may not have reached a broker meanwhile), so
/// expiry may only move later.
fn same_leases(after: &Value, before: &Value) {
    let strip = |v: &Value| {
        let mut v = v.clone();
        for l in v.as_array_mut().unwrap() {
            l.as_object_mut().unwrap().remove("expires_at_ms");
        }
        v
    };
    assert_eq!(strip(after), strip(before));
    for (a, b) in after.as_array().unwrap().iter().zip(before.as_array().unwrap()) {
        assert!(a["expires_at_ms"].as_u64() >= b["expires_at_ms"].as_u64());
    }
}

/// No GPU gives more compute or memory than it has, and what the broker
/// shows free is what its active leases leave.
fn nothing_over_allocated(client: &Client) {
    let leases = call(client, "GET", "/v1/leases", None);
    let mut held: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    for l in leases.as_array().unwrap().iter().filter(|l| l["state"] == "active") {
        for g in l["gpus"].as_array().unwrap() {
            let e = held.entry(g["uuid"].as_str().unwrap().to_string()).or_default();
            e.0 += g["compute_milli"].as_u64().unwrap();
            e.1 += g["memory_mib"].as_u64().unwrap();
        }
    }
    for gpu in call(client, "GET", "/v1/gpus", None).as_array().unwrap() {
        let uuid = gpu["uuid"].as_str().unwrap();
        let (milli, memory) = held.get(uuid).copied().unwrap_or_default();
        let total = gpu["memory_mib"].as_u64().unwrap();
        assert!(
            milli <= 1000 && memory <= total,
            "{uuid} over-allocated: {milli} milli, {memory} MiB"
        );
        assert_eq!(gpu["free_milli"].as_u64().unwrap(), 1000 - milli, "{uuid}");
        assert_eq!(gpu["free_memory_mib"].as_u64().unwrap(), total - memory, "{uuid}");
    }
}

/// A renewal through `client`: still active, and a token that verifies with
/// the pool's public key for the lease's own server.
fn renews_with_a_valid_token(client: &Client, public_key: &LeasePublicKey, lease: &Value) {
    let id = lease["id"].as_u64().unwrap();
    let renewed = call(client, "POST", &format!("/v1/leases/{id}/renew"), None);
    assert_eq!(renewed["state"], "active", "lease {id}");
    let server = lease["server"].as_str().unwrap();
    let claims = public_key
        .verify(renewed["token"].as_str().unwrap(), server, unix_ms_now())
        .unwrap_or_else(|e| panic!("lease {id}'s new token does not verify: {e}"));
    assert_eq!(claims.lease_id, id.to_string());
    assert_eq!(claims.gpus.len(), lease["gpus"].as_array().unwrap().len());
}

#[test]
fn the_standby_takes_over_every_lease_when_the_leader_is_killed() {
    let Some(etcd) = EtcdFixture::start("takeover") else {
        return;
    };
    let pool = pool("takeover", &etcd, LEASE_TTL_S);
    // Clients given both brokers, the leader first.
    let both = format!("{},{}", pool.a.url, pool.b.url);
    let admin = Client::new(&both, Some(ADMIN.into())).unwrap();
    let server = admin.with_token(Some(SECRET.into()));

    call(
        &server,
        "POST",
        "/v1/servers/register",
        Some(registration("gpu-a", "H100", 4, 81_559)),
    );
    call(
        &server,
        "POST",
        "/v1/servers/register",
        Some(registration("gpu-b", "L4", 2, 23_034)),
    );
    let nlp = lease_request(&admin, json!({ "tenant": "nlp", "gpus": 2, "model": "H100" }));
    let small = json!({ "tenant": "vision", "model": "H100", "slice": { "memory_mib": 4096, "compute_milli": 250 } });
    let vision = lease_request(&admin, small.clone());
    let vision2 = lease_request(
        &admin,
        json!({ "tenant": "vision", "model": "H100", "slice": { "memory_mib": 8192, "compute_milli": 500 } }),
    );
    let ml = lease_request(&admin, json!({ "tenant": "ml", "gpus": 1, "model": "L4" }));
    let gone = lease_request(&admin, small.clone());
    call(&admin, "DELETE", &format!("/v1/leases/{}", gone["id"]), None);
    let queued = lease_request(&admin, json!({ "tenant": "nlp", "gpus": 4, "model": "H100" }));
    assert_eq!(queued["state"], "queued", "{queued}");
    for l in [&nlp, &vision, &vision2, &ml] {
        assert_eq!(l["state"], "active", "{l}");
    }
    assert_eq!(admin.url(), pool.a.url, "the leader answers");
    let leases = call(&admin, "GET", "/v1/leases", None);
    let gpus = call(&admin, "GET", "/v1/gpus", None);
    let tenants = call(&admin, "GET", "/v1/tenants", None);
    let on_gpu_a: Vec<u64> = leases
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| l["state"] == "active" && l["server"] == "gpu-a")
        .map(|l| l["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        call(&server, "POST", "/v1/servers/gpu-a/heartbeat", None)["active_leases"],
        json!(on_gpu_a)
    );

    pool.a.signal(libc::SIGKILL);
    let killed = Instant::now();
    let took_over = eventually(Duration::from_secs(15), || pool.b.serving());
    let failover = killed.elapsed();
    assert!(took_over, "the standby never took over:\n{}", pool.b.output());
    println!(
        "failover: {} ms from SIGKILL to the standby serving",
        failover.as_millis()
    );
    assert!(
        failover < Duration::from_secs(LEASE_TTL_S + 4),
        "failover took {failover:?}"
    );
    assert!(
        read(&pool.b.out).contains("gpupool-broker ready"),
        "{}",
        pool.b.output()
    );

    // Through the same clients: the dead leader is passed over, the new one
    // remembered.
    let after = call(&admin, "GET", "/v1/leases", None);
    assert_eq!(admin.url(), pool.b.url);
    same_leases(&after, &leases);
    assert_eq!(
        call(&admin, "GET", "/v1/gpus", None),
        gpus,
        "every grant on the same GPUs"
    );
    assert_eq!(call(&admin, "GET", "/v1/tenants", None), tenants);
    for l in [&nlp, &vision, &vision2, &ml] {
        let id = l["id"].as_u64().unwrap();
        let now = call(&admin, "GET", &format!("/v1/leases/{id}"), None);
        assert_eq!(
            (now["state"].clone(), now["gpus"].clone()),
            (json!("active"), l["gpus"].clone())
        );
        renews_with_a_valid_token(&admin, &pool.public_key, l);
    }
    assert_eq!(
        call(&admin, "GET", &format!("/v1/leases/{}", gone["id"]), None)["state"],
        "released"
    );
    let heartbeat = call(&server, "POST", "/v1/servers/gpu-a/heartbeat", None);
    assert_eq!(heartbeat["state"], "Up");
    assert_eq!(heartbeat["active_leases"], json!(on_gpu_a));
    call(&server, "POST", "/v1/servers/gpu-b/heartbeat", None);

    // New leases take fresh ids and only what is free.
    let last = *ids(&leases).iter().max().unwrap();
    let fresh = lease_request(&admin, json!({ "tenant": "ml", "gpus": 1, "model": "H100" }));
    assert_eq!(fresh["state"], "active", "{fresh}");
    assert_eq!(
        fresh["id"].as_u64().unwrap(),
        last + 1,
        "ids go on where the old leader left them"
    );
    let whole: Vec<&Value> = nlp["gpus"].as_array().unwrap().iter().collect();
    for g in fresh["gpus"].as_array().unwrap() {
        assert!(!whole.iter().any(|w| w["uuid"] == g["uuid"]), "{g} is held by {nlp}");
    }
    let l4s = lease_request(&admin, json!({ "tenant": "ml", "gpus": 2, "model": "L4" }));
    assert_eq!(l4s["state"], "queued", "one of the two L4s is leased: {l4s}");
    assert!(l4s["id"].as_u64().unwrap() > last + 1);
    nothing_over_allocated(&admin);

    // Release works, and frees what it held.
    let released = call(&admin, "DELETE", &format!("/v1/leases/{}", ml["id"]), None);
    assert_eq!(released["state"], "released");
    let l4s_now = call(&admin, "GET", &format!("/v1/leases/{}", l4s["id"]), None);
    assert_eq!(
        l4s_now["state"], "active",
        "the queued L4 pair got the freed GPU: {l4s_now}"
    );
    let renewed = admin.call::<Value>("POST", &format!("/v1/leases/{}/renew", ml["id"]), None);
    assert!(
        matches!(&renewed, Err(ClientError::Api { status: 410, .. })),
        "{renewed:?}"
    );
    nothing_over_allocated(&admin);
}

#[test]
fn a_leader_stopped_past_its_lease_comes_back_deposed_and_changes_nothing() {
    let Some(etcd) = EtcdFixture::start("deposed") else {
        return;
    };
    let mut pool = pool("deposed", &etcd, LEASE_TTL_S);
    let (a, b) = (pool.a.admin(), pool.b.admin());
    call(
        &pool.a.server(),
        "POST",
        "/v1/servers/register",
        Some(registration("gpu-a", "H100", 2, 81_559)),
    );
    let whole = lease_request(&a, json!({ "tenant": "nlp", "gpus": 1 }));
    let slice = lease_request(
        &a,
        json!({ "tenant": "vision", "slice": { "memory_mib": 4096, "compute_milli": 250 } }),
    );

    // Cut off (stopped) for longer than its lease: the standby is elected.
    pool.a.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let took_over = eventually(Duration::from_secs(15), || pool.b.serving());
    assert!(took_over, "the standby never took over:\n{}", pool.b.output());
    println!(
        "failover: {} ms from SIGSTOP to the standby serving",
        stopped.elapsed().as_millis()
    );
    let third = lease_request(
        &b,
        json!({ "tenant": "ml", "slice": { "memory_mib": 1024, "compute_milli": 100 } }),
    );
    assert_eq!(third["state"], "active");
    let state = call(&b, "GET", "/v1/leases", None);

    // Back, the old leader refuses every call on the pool's state at once.
    pool.a.signal(libc::SIGCONT);
    let whole_id = whole["id"].as_u64().unwrap();
    let slice_id = slice["id"].as_u64().unwrap();
    let attempts: [(&Client, &str, String, Option<Value>); 6] = [
        (
            &a,
            "POST",
            "/v1/leases".into(),
            Some(json!({ "tenant": "nlp", "gpus": 1 })),
        ),
        (&a, "POST", format!("/v1/leases/{whole_id}/renew"), None),
        (&a, "DELETE", format!("/v1/leases/{slice_id}"), None),
        (&a, "GET", "/v1/leases".into(), None),
        (
            &a,
            "PUT",
            "/v1/tenants/nlp/quota".into(),
            Some(json!({ "max_gpu_milli": 0 })),
        ),
        (&pool.a.server(), "POST", "/v1/servers/gpu-a/heartbeat".into(), None),
    ];
    for (client, method, path, body) in &attempts {
        let started = Instant::now();
        match client.call::<Value>(method, path, body.as_ref()) {
            Err(ClientError::Api { status, code, message }) => {
                assert_eq!(
                    (status, code.as_str()),
                    (503, "not_leader"),
                    "{method} {path}: {message}"
                );
            }
            other => panic!("{method} {path} on the deposed leader answered {other:?}"),
        }
        assert!(started.elapsed() < Duration::from_secs(2), "{method} {path} was slow");
    }
    let metrics = pool.a.admin().send("GET", "/metrics", None).unwrap().text();
    assert!(metrics.contains("gpupool_broker_leader 0"), "{metrics}");

    // Then it closes its port and exits, to stand by again once restarted.
    let exited = eventually(Duration::from_secs(10), || !pool.a.running());
    assert!(exited, "the deposed leader kept running:\n{}", pool.a.output());
    let status = pool.a.child.wait().unwrap();
    assert!(!status.success(), "{status}");
    assert!(pool.a.output().contains("lost the leadership"), "{}", pool.a.output());

    // The new leader's state is as it made it.
    same_leases(&call(&b, "GET", "/v1/leases", None), &state);
    let quota = call(&b, "GET", "/v1/tenants/nlp", None);
    assert!(quota["quota"]["max_gpu_milli"].is_null(), "{quota}");
    renews_with_a_valid_token(&b, &pool.public_key, &slice);
    renews_with_a_valid_token(&b, &pool.public_key, &whole);
    let next = lease_request(&b, json!({ "tenant": "nlp", "gpus": 1 }));
    assert_eq!(next["id"].as_u64(), third["id"].as_u64().map(|id| id + 1));
    nothing_over_allocated(&b);
}

#[test]
fn a_leader_that_stops_cleanly_hands_over_at_once() {
    let Some(etcd) = EtcdFixture::start("handover") else {
        return;
    };
    // A long lease: only the old leader's resignation can make this quick.
    let ttl_s = 10;
    let mut pool = pool("handover", &etcd, ttl_s);
    let lease = lease_request(
        &pool.a.admin(),
        json!({ "tenant": "nlp", "slice": { "memory_mib": 1024, "compute_milli": 100 } }),
    );
    assert_eq!(lease["state"], "queued", "no server registered: {lease}");
    pool.a.signal(libc::SIGTERM);
    let stopped = Instant::now();
    let took_over = eventually(Duration::from_secs(ttl_s + 5), || pool.b.serving());
    let handover = stopped.elapsed();
    assert!(took_over, "the standby never took over:\n{}", pool.b.output());
    println!(
        "handover: {} ms from SIGTERM to the standby serving",
        handover.as_millis()
    );
    assert!(
        handover < Duration::from_secs(3),
        "took {handover:?}: the leader did not resign"
    );
    assert!(pool.a.child.wait().unwrap().success(), "{}", pool.a.output());
    let kept = call(&pool.b.admin(), "GET", &format!("/v1/leases/{}", lease["id"]), None);
    assert_eq!(kept["state"], "queued");
}
