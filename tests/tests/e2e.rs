//! Whole-system tests: a C program on the driver API -> the gpupool shim
//! (`libcuda.so.1`) -> TCP or QUIC on loopback -> the GPU server -> the
//! software driver test double. Every result is checked by the program
//! against values it computed itself.

use gpupool_proto::codec;
use gpupool_proto::frame::{self, FLAG_WANTS_REPLY};
use gpupool_proto::handshake::{ClientInfo, Hello, Welcome};
use gpupool_tests::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn both(server: &Server) -> [String; 2] {
    [server.tcp.clone(), server.quic.clone()]
}

#[test]
fn ptx_kernels_run_with_results_checked() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["vadd"]);
        assert!(out.contains("OK vadd n=100000"), "{url}: {out}");
        assert!(out.contains("simulated"), "the device must say it is simulated: {out}");
    }
}

#[test]
fn asynchronous_error_is_reported_at_the_next_synchronise() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["fault"]);
        assert!(out.contains("OK fault reported at synchronize: 700"), "{url}: {out}");
    }
}

#[test]
fn out_of_bounds_copies_are_refused() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["oob"]);
        assert!(out.contains("OK out-of-bounds refused"), "{url}: {out}");
    }
}

#[test]
fn large_copies_are_chunked_and_exact() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["big", "20"]);
        assert!(out.contains("OK big 20 MiB"), "{url}: {out}");
    }
}

#[test]
fn async_copies_land_before_a_query_says_done() {
    let server = Server::start();
    for url in both(&server) {
        let out = driver_check(&url, &["streams"]);
        assert!(out.contains("OK streams"), "{url}: {out}");
    }
}

#[test]
fn unsupported_call_fails_loudly_by_name() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("unsupported");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("does not support cuArrayCreate_v2"),
        "the log must name the call: {stderr}"
    );
}

#[test]
fn killed_client_memory_is_freed() {
    let server = Server::start();
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.args(["hold", "8"]).stdout(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 256];
    while !seen.contains("HOLDING") {
        let n = stdout.read(&mut buf).unwrap();
        assert!(n > 0, "program ended before holding memory: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    let held = 8 * 1024 * 1024 + 4096;
    assert!(seen.contains(&format!("HOLDING {held}")), "{seen}");
    child.kill().unwrap();
    child.wait().unwrap();
    let line = format!("freed 2 allocations ({held} bytes)");
    assert!(
        server.wait_for_log(&line, Duration::from_secs(15)),
        "server did not free the killed client's memory; log:\n{}",
        server.log()
    );
    assert!(
        server.wait_for_log("worker exited", Duration::from_secs(15)),
        "worker process did not exit:\n{}",
        server.log()
    );
}

fn hello_frame(version: u32) -> Vec<u8> {
    let mut hello = Hello::new(
        None,
        ClientInfo {
            host: "test".into(),
            pid: 1,
            program: "e2e".into(),
        },
    );
    hello.version = version;
    let mut out = Vec::new();
    frame::encode_frame(&mut out, 0, FLAG_WANTS_REPLY, &hello, &[], 1 << 20).unwrap();
    out
}

fn read_welcome(stream: &mut TcpStream) -> Welcome {
    let mut msg = Vec::new();
    let h = frame::read_frame(stream, &mut msg, 1 << 20).unwrap();
    frame::skip_bulk(stream, h.bulk_len).unwrap();
    codec::decode(&msg).unwrap()
}

#[test]
fn malformed_frames_end_that_session_only() {
    let server = Server::start();
    // Garbage instead of a hello.
    let mut s = TcpStream::connect(server.tcp_addr()).unwrap();
    s.write_all(&[0xff; 64]).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    // A good hello, then a frame claiming 1 GiB, then a frame that does not decode.
    for bad in [
        frame::FrameHeader {
            id: 1,
            flags: 0,
            msg_len: 8,
            bulk_len: 1 << 30,
        }
        .encode()
        .to_vec(),
        {
            let mut f = frame::FrameHeader {
                id: 2,
                flags: 1,
                msg_len: 4,
                bulk_len: 0,
            }
            .encode()
            .to_vec();
            f.extend_from_slice(&[0xee, 0xee, 0xee, 0xee]);
            f
        },
    ] {
        let mut s = TcpStream::connect(server.tcp_addr()).unwrap();
        s.write_all(&hello_frame(gpupool_proto::PROTOCOL_VERSION)).unwrap();
        assert!(matches!(read_welcome(&mut s), Welcome::Accepted(_)));
        s.write_all(&bad).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut rest = Vec::new();
        let n = s.read_to_end(&mut rest).unwrap_or(0);
        assert_eq!(n, 0, "server answered a malformed frame");
    }
    assert!(
        server.wait_for_log("protocol violation", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    // The server still serves others.
    let out = driver_check(&server.tcp, &["vadd"]);
    assert!(out.contains("OK vadd"));
}

#[test]
fn wrong_protocol_version_is_refused_with_a_reason() {
    let server = Server::start();
    let mut s = TcpStream::connect(server.tcp_addr()).unwrap();
    s.write_all(&hello_frame(99)).unwrap();
    match read_welcome(&mut s) {
        Welcome::Refused { reason } => assert!(reason.contains("version"), "{reason}"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn lease_is_required_when_configured() {
    let server = Server::start_with(&[("GPUPOOL_REQUIRE_LEASE", "true")]);
    let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
    cmd.arg("vadd");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("requires a lease token"), "{stderr}");
}

#[test]
fn quic_refuses_an_unpinned_or_wrong_certificate() {
    let server = Server::start();
    let addr = server.quic.split('?').next().unwrap().to_string();
    for url in [addr.clone(), format!("{addr}?fingerprint={}", "00".repeat(32))] {
        let mut cmd = through_shim(&c_program("driver_check"), &url);
        cmd.arg("vadd");
        let out = run_with_timeout(cmd, Duration::from_secs(30));
        assert!(!out.status.success(), "{url} should not connect");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("cuInit") && (stderr.contains("fingerprint")),
            "{url}: {stderr}"
        );
    }
}

#[test]
fn no_server_configured_is_a_clear_error() {
    let mut cmd = through_shim(&c_program("driver_check"), "");
    cmd.env_remove("GPUPOOL_SERVER").arg("vadd");
    let out = run_with_timeout(cmd, Duration::from_secs(30));
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GPUPOOL_SERVER is not set"), "{stderr}");
}
