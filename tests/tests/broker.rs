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
    let dir = scratch_dir().join(format!("broker-{name}"));
    let mut child = Command::new(target_dir().join("gpupool-broker"))
        .args(["--listen", "127.0.0.1:0", "--db", ":memory:"])
        .env("GPUPOOL_BROKER_ADMIN_TOKEN", ADMIN)
        .env("GPUPOOL_BROKER_SERVER_SECRET", SECRET)
        .env("GPUPOOL_BROKER_SIGNING_KEY_FILE", dir.join("signing.key"))
        .env("GPUPOOL_LOG", "warn")
        .stdout(Stdio::piped())
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
    assert!(head.starts_with("HTTP/1.1 2"), "{method} {path}: {head}\n{body}");
    serde_json::from_str(body).unwrap_or(Value::Null)
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
                "uuid": "GPU-sim-a-0", "model": "simulated", "memory_mib": 16384,
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
    let mut cmd = through_shim(&c_program("driver_check"), "");
    cmd.env_remove("GPUPOOL_SERVER")
        .env("GPUPOOL_BROKER", &broker.url)
        .env("GPUPOOL_BROKER_TOKEN", ADMIN)
        .env("GPUPOOL_REQUEST", "memory_mib=4096,compute=0.5")
        .arg("vadd");
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("OK vadd"),
        "{stdout}\n{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
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
    let mut cmd = through_shim(&c_program("driver_check"), "");
    cmd.env_remove("GPUPOOL_SERVER")
        .env("GPUPOOL_BROKER", &broker.url)
        .env("GPUPOOL_BROKER_TOKEN", ADMIN)
        .env("GPUPOOL_BROKER_WAIT_S", "1")
        .env("GPUPOOL_REQUEST", "gpus=1")
        .arg("vadd");
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("cannot get a GPU from the broker"), "{stderr}");
}
