//! The `gpupool` CLI and the `gpupool-broker` daemon, run as programs.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::*;
use serde_json::Value;

fn gpupool(h: &Harness, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_gpupool"))
        .args(["--broker", &format!("http://{}", h.running.addr)])
        .args(args)
        .env("GPUPOOL_BROKER_ADMIN_TOKEN", ADMIN)
        .output()
        .expect("run gpupool");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn cli_tables_json_and_errors() {
    let dir = Dir::new("cli");
    let h = start(&config(&dir));
    h.register("gpu-a", "H100", 2, 81_559);

    let (ok, out, _) = gpupool(&h, &["servers"]);
    assert!(ok);
    assert!(out.starts_with("SERVER"), "{out}");
    assert!(out.lines().nth(1).unwrap().starts_with("gpu-a "), "{out}");

    let (ok, out, err) = gpupool(
        &h,
        &[
            "request",
            "--slice-memory-mib",
            "4096",
            "--compute",
            "0.25",
            "--tenant",
            "vision",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.contains("active") && out.contains("token: gpl1."), "{out}");

    let (ok, out, _) = gpupool(&h, &["--json", "leases"]);
    assert!(ok);
    let leases: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(leases[0]["gpus"][0]["compute_milli"], 250);
    let id = leases[0]["id"].to_string();

    let (ok, out, _) = gpupool(&h, &["quota", "set", "vision", "--gpus", "1.5"]);
    assert!(ok);
    assert!(out.contains("vision") && out.contains("1.500"), "{out}");
    let (ok, out, _) = gpupool(&h, &["explain", &id]);
    assert!(ok);
    assert!(out.contains("policy BestFit") && out.contains('*'), "{out}");
    let (ok, out, _) = gpupool(&h, &["explain", "--gpus", "2"]);
    assert!(ok);
    assert!(out.contains("no server can take"), "{out}");
    let (ok, out, _) = gpupool(&h, &["cordon", "gpu-a"]);
    assert!(ok && out.contains("cordoned"), "{out}");
    let (ok, out, _) = gpupool(&h, &["gpus"]);
    assert!(ok && out.contains("GPU-gpu-a-0"), "{out}");
    let (ok, out, _) = gpupool(&h, &["release", &id]);
    assert!(ok && out.contains("released"), "{out}");

    // Errors: the broker's reason, non-zero exit, nothing on stdout.
    let (ok, out, err) = gpupool(&h, &["renew", &id]);
    assert!(!ok && out.is_empty());
    assert!(err.contains("410") && err.contains("released"), "{err}");
    let (ok, _, err) = gpupool(&h, &["request", "--gpus", "1.5"]);
    assert!(!ok && err.contains("--gpus N"), "{err}");
    let (ok, _, err) = gpupool(&h, &["frobnicate"]);
    assert!(!ok && err.contains("unknown command"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_gpupool"))
        .args(["--broker", &format!("http://{}", h.running.addr), "servers"])
        .env_remove("GPUPOOL_BROKER_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no admin token"));
}

#[test]
fn daemon_starts_from_env_creates_its_key_and_refuses_bad_config() {
    let dir = Dir::new("daemon");
    let key_file = dir.0.join("keys/signing.key");
    let mut child = Command::new(env!("CARGO_BIN_EXE_gpupool-broker"))
        .args(["--listen", "127.0.0.1:0"])
        .env("GPUPOOL_BROKER_DB", dir.0.join("db/broker.redb"))
        .env("GPUPOOL_BROKER_ADMIN_TOKEN", ADMIN)
        .env("GPUPOOL_BROKER_SERVER_SECRET", SECRET)
        .env("GPUPOOL_BROKER_SIGNING_KEY_FILE", &key_file)
        .env("GPUPOOL_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .expect("start gpupool-broker");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("gpupool-broker ready: http://127.0.0.1:"), "{line}");
    assert!(line.contains("public_key=ed25519:"), "{line}");
    assert!(key_file.exists());
    let url = line.split_whitespace().nth(2).unwrap();
    let admin = gpupool_broker::client::Client::new(url, Some(ADMIN.into())).unwrap();
    let pools: Value = admin.call("GET", "/v1/pools", None).unwrap();
    assert!(pools[0]["store"].as_str().unwrap().contains("redb"));
    let _ = child.kill();
    let _ = child.wait();

    let out = Command::new(env!("CARGO_BIN_EXE_gpupool-broker"))
        .args(["--listen", "127.0.0.1:0"])
        .env("GPUPOOL_BROKER_DB", ":memory:")
        .env_remove("GPUPOOL_BROKER_ADMIN_TOKEN")
        .env("GPUPOOL_BROKER_SIGNING_KEY_FILE", &key_file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("admin_token is empty"));
}
