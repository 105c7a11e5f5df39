//! The broker in the data path: a program on a GPU-less node sets only
//! `GPUPOOL_BROKER`; the shim gets a lease, connects to the server the lease
//! names with the broker-signed token (which the server verifies offline),
//! runs, and releases the lease at exit. A server that verifies tokens
//! refuses a client without one.

use gpupool_tests::*;
use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const ADMIN: &str = "test-admin-token";
const SECRET: &str = "test-server-secret";

struct Broker {
    child: Child,
    url: String,
    public_key: String,
}

impl Drop for Broker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_broker(name: &str) -> Broker {
    start_broker_with(name, &[])
}

fn start_broker_with(name: &str, env: &[(&str, &str)]) -> Broker {
    start_broker_at(name, "127.0.0.1:0", env)
}

fn start_broker_at(name: &str, listen: &str, env: &[(&str, &str)]) -> Broker {
    // The signing key is kept per name: a broker restarted under the same
    // name signs with the same key.
    let dir = scratch_dir().join(format!("broker-{name}"));
    let mut cmd = Command::new(target_dir().join("gpupool-broker"));
    cmd.args(["--listen", listen, "--db", ":memory:"])
        .env("GPUPOOL_BROKER_ADMIN_TOKEN", ADMIN)
        .env("GPUPOOL_BROKER_SERVER_SECRET", SECRET)
        .env("GPUPOOL_BROKER_SIGNING_KEY_FILE", dir.join("signing.key"))
        .env("GPUPOOL_LOG", "warn")
        .stdout(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .expect("start gpupool-broker (built by cargo build --workspace)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut words = line.split_whitespace().skip(2);
    let url = words.next().expect("broker url").to_string();
    let public_key = words
        .next()
        .and_then(|w| w.strip_prefix("public_key="))
        .expect("broker public key")
        .to_string();
    Broker { child, url, public_key }
}

/// A minimal HTTP exchange with the broker (the test plays the server's
/// registration agent and the administrator).
fn http(broker: &Broker, method: &str, path: &str, token: &str, body: Option<Value>) -> Value {
    let (head, body) = http_raw(broker, method, path, token, body);
    assert!(head.starts_with("HTTP/1.1 2"), "{method} {path}: {head}\n{body}");
    serde_json::from_str(&body).unwrap_or(Value::Null)
}

/// One exchange; the status line and headers, and the body.
fn http_raw(broker: &Broker, method: &str, path: &str, token: &str, body: Option<Value>) -> (String, String) {
    let addr = broker.url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    s.read_to_string(&mut answer).unwrap();
    let (head, body) = answer.split_once("\r\n\r\n").unwrap();
    (head.to_string(), body.to_string())
}

/// `driver_check args` with only the broker named: the shim takes a lease.
fn brokered(broker: &Broker, request: Option<&str>, args: &[&str]) -> Command {
    let mut cmd = through_shim(&c_program("driver_check"), "");
    cmd.env_remove("GPUPOOL_SERVER")
        .env("GPUPOOL_BROKER", &broker.url)
        .env("GPUPOOL_BROKER_TOKEN", ADMIN)
        .args(args);
    if let Some(r) = request {
        cmd.env("GPUPOOL_REQUEST", r);
    }
    cmd
}

/// Runs `cmd` and checks that it printed `expected` and succeeded.
fn assert_runs(cmd: Command, expected: &str, server: &Server) {
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains(expected),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
}

/// Polls `f` until it gives a value or `timeout` passes.
fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The broker's view of server `name`, once it is registered.
fn server_view(broker: &Broker, name: &str) -> Option<Value> {
    let (head, body) = http_raw(broker, "GET", &format!("/v1/servers/{name}"), ADMIN, None);
    head.starts_with("HTTP/1.1 200")
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// A simulated server with two GPUs that registers itself with `broker`.
fn registering_server(broker: &Broker, name: &str, machine_id: &str) -> Server {
    // Topology the software driver cannot report: two NVLinked GPUs on two
    // NUMA nodes, and an RDMA NIC.
    let topology = r#"
[[gpu]]
ordinal = 0
model = "H100"
local_cpus = [0, 1]
nvlink_peers = [1]

[[gpu]]
ordinal = 1
model = "H100"
numa_node = 1
local_cpus = [2, 3]
nvlink_peers = [0]

[[nic]]
name = "ib0"
numa_node = 1
rdma = true
"#;
    Server::start_configured(
        &[
            ("GPUPOOL_SERVER_ID", name),
            ("GPUPOOL_BROKER", &broker.url),
            ("GPUPOOL_BROKER_SERVER_SECRET", SECRET),
            ("GPUPOOL_SOFT_DEVICE_COUNT", "2"),
            ("GPUPOOL_SOFT_MACHINE_ID", machine_id),
        ],
        Some(topology),
    )
}

#[test]
fn a_program_gets_its_gpu_through_a_broker_lease() {
    let broker = start_broker("lease");
    let server = Server::start_with(&[
        ("GPUPOOL_SERVER_ID", "sim-a"),
        ("GPUPOOL_BROKER_PUBLIC_KEY", &broker.public_key),
    ]);
    http(
        &broker,
        "POST",
        "/v1/servers/register",
        SECRET,
        Some(json!({
            "name": "sim-a",
            "endpoint": server.tcp,
            "gpus": [{
                // The software driver's first GPU (machine 0): the server
                // shows a leased session the GPUs its lease names.
                "uuid": "GPU-67707570-6f6f-6c2d-736f-667467707500", "model": "simulated", "memory_mib": 16384,
                "compute_capability": [9, 0], "numa_node": 0, "local_cpus": [0],
                "pci_address": "0000:01:00.0", "nvlink_peers": []
            }],
            "nics": [],
        })),
    );

    // Without a token the server refuses.
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("vadd");
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(
        !out.status.success(),
        "a server verifying leases accepted a client without one"
    );

    // With only the broker named, the program runs.
    assert_runs(
        brokered(&broker, Some("memory_mib=4096,compute=0.5"), &["vadd"]),
        "OK vadd",
        &server,
    );

    // The lease was a half-GPU slice on sim-a, and it was released at exit.
    let leases = http(&broker, "GET", "/v1/leases", ADMIN, None);
    let lease = leases
        .as_array()
        .and_then(|l| l.iter().find(|l| l["server"] == "sim-a"))
        .unwrap_or_else(|| panic!("no lease on sim-a: {leases}"))
        .clone();
    assert_eq!(lease["gpus"][0]["compute_milli"], 500, "{lease}");
    assert_eq!(lease["state"], "released", "{lease}");
}

#[test]
fn a_request_the_pool_cannot_meet_fails_clearly() {
    let broker = start_broker("empty");
    let mut cmd = brokered(&broker, Some("gpus=1"), &["vadd"]);
    cmd.env("GPUPOOL_BROKER_WAIT_S", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot get a GPU from the broker"), "{stderr}");
}

/// A server given only the broker's address registers itself (GPUs with the
/// topology of its configuration, NICs, the URL clients dial), verifies
/// tokens with the key it asked the broker for, and serves the leases the
/// broker grants on it.
#[test]
fn a_server_registers_itself_and_serves_the_leases_of_its_gpus() {
    let broker = start_broker("self-register");
    let server = registering_server(&broker, "sim-r", "7");
    let view = wait_for(Duration::from_secs(20), || server_view(&broker, "sim-r"))
        .unwrap_or_else(|| panic!("the server did not register:\n{}", server.log()));
    assert_eq!(view["gpus"], 2, "{view}");
    assert_eq!(view["state"], "Up", "{view}");
    assert_eq!(
        view["endpoint"].as_str().unwrap(),
        server.quic,
        "the QUIC listener is advertised: {view}"
    );
    assert_eq!(
        view["nics"],
        json!([{ "name": "ib0", "numa_node": 1, "rdma": true }]),
        "{view}"
    );
    let gpus = http(&broker, "GET", "/v1/gpus", ADMIN, None);
    let ours: Vec<&Value> = gpus
        .as_array()
        .unwrap()
        .iter()
        .filter(|g| g["server"] == "sim-r")
        .collect();
    assert_eq!(ours.len(), 2, "{gpus}");
    assert_eq!(ours[1]["numa_node"], 1, "{gpus}");
    assert_eq!(ours[1]["local_cpus"], json!([2, 3]), "{gpus}");
    assert_eq!(ours[0]["nvlink_peers"], json!([1]), "{gpus}");
    assert_eq!(ours[0]["model"], "H100", "{gpus}");
    assert_eq!(ours[0]["memory_mib"], 16384, "{gpus}");
    assert_ne!(ours[0]["uuid"], ours[1]["uuid"], "{gpus}");

    // The key came from the broker: a client without a token is refused.
    let out = run_with_timeout(
        {
            let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
            cmd.arg("vadd");
            cmd
        },
        Duration::from_secs(60),
    );
    assert!(!out.status.success(), "a client without a lease token was served");

    // Both GPUs as one gang, over the advertised QUIC endpoint.
    assert_runs(brokered(&broker, Some("gpus=2"), &["vadd"]), "OK vadd", &server);
    let leases = http(&broker, "GET", "/v1/leases", ADMIN, None);
    let lease = &leases.as_array().unwrap()[0];
    assert_eq!(lease["gpus"].as_array().unwrap().len(), 2, "{lease}");
    assert_eq!(lease["state"], "released", "{lease}");
    let id = lease["id"].to_string();
    assert!(
        server.log().contains(&format!("lease={id}")),
        "the session's lease is not in the log:\n{}",
        server.log()
    );
}

/// A session sees the GPUs of its lease and no other GPU of its server: a
/// lease of one of two GPUs shows one device, the leased one, and the
/// program's `CUDA_VISIBLE_DEVICES` picks among the leased GPUs only (an
/// index past them shows none). Before, a leased session saw every GPU of
/// its server.
#[test]
fn a_leased_session_sees_only_the_gpus_of_its_lease() {
    let broker = start_broker("lease-gpus");
    let server = registering_server(&broker, "sim-l", "9");
    wait_for(Duration::from_secs(20), || server_view(&broker, "sim-l"))
        .unwrap_or_else(|| panic!("the server did not register:\n{}", server.log()));
    for _ in 0..2 {
        // The first lease takes one GPU; while it holds it, the second
        // takes the other.
        let lease = http(
            &broker,
            "POST",
            "/v1/leases",
            ADMIN,
            Some(json!({ "gpus": 1, "holder": "test/visible" })),
        );
        assert_eq!(lease["state"], "active", "{lease}");
        let uuid = lease["gpus"][0]["uuid"].as_str().unwrap().to_string();
        let gpu = u8::from_str_radix(&uuid[uuid.len() - 2..], 16).unwrap();
        let run = |visible: Option<&str>| {
            let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
            cmd.env("GPUPOOL_LEASE_TOKEN", lease["token"].as_str().unwrap());
            if let Some(v) = visible {
                cmd.env("CUDA_VISIBLE_DEVICES", v);
            }
            let out = run_with_timeout(cmd, Duration::from_secs(60));
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).into_owned(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        };
        for visible in [None, Some("0")] {
            let (ok, stdout, stderr) = run(visible);
            let context = || format!("lease of {uuid}, CUDA_VISIBLE_DEVICES {visible:?}\n{stdout}\n{stderr}");
            assert!(ok, "{}", context());
            assert!(stdout.contains("devices: 1\n"), "{}", context());
            assert!(
                stdout.contains(&format!("device 0: gpupool simulated GPU {gpu} (soft driver)")),
                "{}",
                context()
            );
        }
        let (ok, stdout, stderr) = run(Some("1"));
        assert!(!ok, "an index past the lease's GPUs showed one:\n{stdout}\n{stderr}");
    }
}

/// A session whose lease the broker no longer holds active is ended by its
/// server at the next heartbeat, so the GPU it held is free for others.
#[test]
fn a_session_whose_lease_ends_is_ended_by_its_server() {
    let broker = start_broker_with("end-session", &[("GPUPOOL_BROKER_HEARTBEAT_TIMEOUT_MS", "600")]);
    let server = registering_server(&broker, "sim-e", "8");
    wait_for(Duration::from_secs(20), || server_view(&broker, "sim-e"))
        .unwrap_or_else(|| panic!("the server did not register:\n{}", server.log()));
    let lease = http(
        &broker,
        "POST",
        "/v1/leases",
        ADMIN,
        Some(json!({ "gpus": 1, "holder": "test/hold" })),
    );
    assert_eq!(lease["state"], "active", "{lease}");
    // The program holds memory under the lease's token and waits.
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.env("GPUPOOL_LEASE_TOKEN", lease["token"].as_str().unwrap())
        .arg("hold")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut program = cmd.spawn().unwrap();
    let held = output_until_holding(&mut program);
    assert!(held.contains("HOLDING"), "{held}\n{}", server.log());

    http(&broker, "DELETE", &format!("/v1/leases/{}", lease["id"]), ADMIN, None);
    let ended = server.wait_for_log("its lease is no longer active at the broker", Duration::from_secs(10));
    let _ = program.kill();
    let _ = program.wait();
    assert!(ended, "the session outlived its lease:\n{}", server.log());
    assert!(
        server.wait_for_log("worker exited abnormally", Duration::from_secs(5)),
        "{}",
        server.log()
    );
}

/// A server that stops heartbeating is marked down within its timeout; the
/// lease on it is lost and its holder told; once the server heartbeats
/// again it is back up and serves new leases.
#[test]
fn a_silent_server_is_marked_down_and_its_holders_are_told() {
    let broker = start_broker_with(
        "silent",
        &[
            ("GPUPOOL_BROKER_HEARTBEAT_TIMEOUT_MS", "600"),
            ("GPUPOOL_BROKER_LEASE_TTL_MS", "1500"),
        ],
    );
    let server = registering_server(&broker, "sim-s", "9");
    wait_for(Duration::from_secs(20), || server_view(&broker, "sim-s"))
        .unwrap_or_else(|| panic!("the server did not register:\n{}", server.log()));
    let mut cmd = brokered(&broker, None, &["hold"]);
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut program = cmd.spawn().unwrap();
    let holder_log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let mut stderr = program.stderr.take().unwrap();
    let sink = std::sync::Arc::clone(&holder_log);
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    let held = output_until_holding(&mut program);
    assert!(held.contains("HOLDING"), "{held}\n{}", server.log());

    // SAFETY: plain signal to the server process this test started.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGSTOP) }, 0);
    let stopped = std::time::Instant::now();
    let down = wait_for(Duration::from_secs(10), || {
        server_view(&broker, "sim-s").filter(|v| v["state"] == "Down")
    });
    let took = stopped.elapsed();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(server.pid() as i32, libc::SIGCONT) }, 0);
    let down = down.unwrap_or_else(|| panic!("the stopped server was never marked down"));
    println!("marked down {took:?} after its heartbeats stopped (timeout 600 ms)");
    assert!(
        took < Duration::from_secs(3),
        "marked down after {took:?} (timeout 600 ms): {down}"
    );
    let leases = http(&broker, "GET", "/v1/leases", ADMIN, None);
    assert_eq!(leases[0]["state"], "lost", "{leases}");

    // The holder learns it at its next renew (its stderr, read meanwhile).
    let told = wait_for(Duration::from_secs(10), || {
        let log = holder_log.lock().unwrap().clone();
        (log.contains("the GPU lease ended") && log.contains("lost")).then_some(())
    });
    let _ = program.kill();
    let _ = program.wait();
    assert!(
        told.is_some(),
        "the holder was not told:\n{}",
        holder_log.lock().unwrap()
    );

    // Heartbeats resume: the server is up again and takes new leases.
    wait_for(Duration::from_secs(10), || {
        server_view(&broker, "sim-s").filter(|v| v["state"] == "Up")
    })
    .unwrap_or_else(|| panic!("the server did not come back up:\n{}", server.log()));
    assert_runs(brokered(&broker, None, &["vadd"]), "OK vadd", &server);
}

/// A broker that comes back empty (restarted on an in-memory store) no
/// longer knows the server: the server's next heartbeat is answered 404 and
/// it registers again, by itself; while the broker was away it kept serving.
#[test]
fn a_server_registers_again_with_a_broker_that_forgot_it() {
    // The broker comes back at the same address: a port no other socket
    // can take meanwhile.
    let port = fixed_port();
    let listen = format!("127.0.0.1:{port}");
    let settings = [("GPUPOOL_BROKER_HEARTBEAT_TIMEOUT_MS", "300")];
    let broker = start_broker_at("forgetful", &listen, &settings);
    let server = registering_server(&broker, "sim-f", "10");
    wait_for(Duration::from_secs(20), || server_view(&broker, "sim-f"))
        .unwrap_or_else(|| panic!("the server did not register:\n{}", server.log()));
    let url = broker.url.clone();
    drop(broker);
    // Away: the server says so once and keeps trying.
    assert!(
        server.wait_for_log("heartbeat failed", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let broker = start_broker_at("forgetful", &listen, &settings);
    assert_eq!(broker.url, url);
    let view = wait_for(Duration::from_secs(20), || server_view(&broker, "sim-f"))
        .unwrap_or_else(|| panic!("the server did not register again:\n{}", server.log()));
    assert_eq!(view["gpus"], 2, "{view}");
    assert!(
        server
            .log()
            .contains("the broker no longer knows this server; registering again"),
        "{}",
        server.log()
    );
}
