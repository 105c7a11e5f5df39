//! Whole-system tests of gpupool's NVML: a C program loads
//! `libnvidia-ml.so.1` (gpupool's NVML) and `libcuda.so.1` (the gpupool
//! shim), as monitoring tools and PyTorch do, and checks what NVML says
//! against what the driver says, over TCP and QUIC to a server on the
//! software driver test double.

use gpupool_tests::*;
use std::time::Duration;

fn nvml_check(cmd: std::process::Command) -> (bool, String, String) {
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn nvml_answers_what_the_driver_answers() {
    let server = Server::start();
    for url in [server.tcp.clone(), server.quic.clone()] {
        let mut cmd = through_shim(&c_program("nvml_check"), &url);
        cmd.arg("exact");
        let (ok, out, err) = nvml_check(cmd);
        assert!(ok, "{url}: nvml_check failed:\nstdout: {out}\nstderr: {err}");
        for line in [
            "OK uninitialised calls refused",
            "OK versions cuda=",
            "OK device 0 ",
            "OK memory total=",
            "OK error paths",
            "OK init counted",
            "OK nvml devices=",
        ] {
            assert!(out.contains(line), "{url}: missing {line:?} in:\n{out}");
        }
        // The software driver has no sensors and the server no NVML.
        assert!(out.contains("OK sensors not supported"), "{url}: {out}");
    }
}

/// NVML numbers a machine's GPUs whatever `CUDA_VISIBLE_DEVICES` shows
/// CUDA; PyTorch maps CUDA device `i` to NVML index `CUDA_VISIBLE_DEVICES[i]`
/// (and counts its devices so). With `2,0` on a 3-GPU server, CUDA's device
/// 0 (the server's GPU 2) is NVML's index 2, and NVML's index 1, a GPU this
/// program does not see, is described (NCCL finds its peers' GPUs through
/// NVML, and failed its start-up while that index answered
/// `NVML_ERROR_NO_PERMISSION`), but what it does now is not told.
#[test]
fn nvml_numbers_the_devices_cuda_visible_devices_names_by_index() {
    let server = Server::start_with(&[("GPUPOOL_SOFT_DEVICE_COUNT", "3")]);
    let mut cmd = through_shim(&c_program("nvml_check"), &server.tcp);
    cmd.arg("indices").env("CUDA_VISIBLE_DEVICES", "2,0");
    let (ok, out, err) = nvml_check(cmd);
    assert!(ok, "stdout: {out}\nstderr: {err}");
    for line in [
        "nvml count 3\n",
        "nvml 0: gpupool simulated GPU 0 (soft driver)\n",
        "nvml 1: gpupool simulated GPU 1 (soft driver) (not the program's)\n",
        "nvml 2: gpupool simulated GPU 2 (soft driver)\n",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

/// NVML's peer-to-peer status is the server driver's peer access: NCCL
/// moves data between two GPUs directly only where NVML says reads and
/// writes between them are OK (it fell back to host memory, which GPUs
/// across the network cannot reach, while every pair answered
/// `NVML_P2P_STATUS_NOT_SUPPORTED`).
#[test]
fn nvml_peer_status_is_the_servers_peer_access() {
    for (links, status) in [("1", "read 0 write 0 atomics 0"), ("0", "read 5 write 5 atomics 5")] {
        let server = Server::start_with(&[("GPUPOOL_SOFT_DEVICE_COUNT", "2"), ("GPUPOOL_SOFT_PEER_ACCESS", links)]);
        let mut cmd = through_shim(&c_program("nvml_check"), &server.tcp);
        cmd.arg("peers");
        let (ok, out, err) = nvml_check(cmd);
        assert!(ok, "links {links}\nstdout: {out}\nstderr: {err}");
        for line in [format!("p2p 0->1 {status}\n"), format!("p2p 1->0 {status}\n")] {
            assert!(out.contains(&line), "links {links}: missing {line:?} in:\n{out}");
        }
    }
}

/// NVML tells each GPU's active NVLinks and what is at their far end, as
/// the server's machine has them (here its configured topology: two GPUs
/// linked to each other), so NCCL sees NVLink between a server's GPUs and
/// sizes its channels for it; before, every NVLink query answered
/// `NVML_ERROR_NOT_SUPPORTED`. Without links, none is active.
#[test]
fn nvml_tells_the_nvlinks_of_the_servers_gpus() {
    let linked = r#"
[[gpu]]
ordinal = 0
nvlink_peers = [1]

[[gpu]]
ordinal = 1
nvlink_peers = [0]
"#;
    for (topology, lines) in [
        (
            Some(linked),
            &[
                "nvlink 0.0: gpu 00000000:19:00.0\n",
                "nvlinks 0: 1\n",
                "nvlink 1.0: gpu 00000000:18:00.0\n",
                "nvlinks 1: 1\n",
            ][..],
        ),
        (None, &["nvlinks 0: 0\n", "nvlinks 1: 0\n"][..]),
    ] {
        let server = Server::start_configured(&[("GPUPOOL_SOFT_DEVICE_COUNT", "2")], topology);
        let mut cmd = through_shim(&c_program("nvml_check"), &server.tcp);
        cmd.arg("nvlinks");
        let (ok, out, err) = nvml_check(cmd);
        assert!(ok, "stdout: {out}\nstderr: {err}");
        for line in lines {
            assert!(out.contains(line), "missing {line:?} in:\n{out}");
        }
    }
}

#[test]
fn the_server_answers_device_status_for_session_devices_only() {
    use gpupool_proto::codec;
    use gpupool_proto::frame::{self, FLAG_WANTS_REPLY};
    use gpupool_proto::handshake::{ClientInfo, Hello, Welcome};
    use gpupool_proto::message::{Reply, Request, DEVICE_STATUS_NO_SERVER_NVML};
    use std::io::Write;

    let server = Server::start();
    let mut s = std::net::TcpStream::connect(server.tcp_addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut scratch = Vec::new();
    let client = ClientInfo {
        host: "test".into(),
        pid: 1,
        program: "nvml-test".into(),
    };
    frame::write_frame(
        &mut s,
        &mut scratch,
        0,
        FLAG_WANTS_REPLY,
        &Hello::new(None, client),
        &[],
        1 << 20,
    )
    .unwrap();
    s.flush().unwrap();
    let mut msg = Vec::new();
    frame::read_frame(&mut s, &mut msg, 64 << 20).unwrap();
    let Welcome::Accepted(info) = codec::decode::<Welcome>(&msg).unwrap() else {
        panic!("refused");
    };
    let mut ask = |id: u64, device: i32| -> Reply {
        let req = Request::DeviceStatus { device };
        frame::write_frame(&mut s, &mut scratch, id, FLAG_WANTS_REPLY, &req, &[], 1 << 20).unwrap();
        s.flush().unwrap();
        let h = frame::read_frame(&mut s, &mut msg, 64 << 20).unwrap();
        assert_eq!(h.id, id);
        codec::decode::<Reply>(&msg).unwrap()
    };
    match ask(1, 0) {
        Reply::DeviceStatus {
            total_bytes,
            free_bytes,
            used_bytes,
            flags,
            ..
        } => {
            assert_eq!(total_bytes, info.devices[0].total_mem);
            assert_eq!(free_bytes + used_bytes, total_bytes);
            assert_ne!(flags & DEVICE_STATUS_NO_SERVER_NVML, 0, "the test server has no NVML");
        }
        other => panic!("unexpected reply {other:?}"),
    }
    // CUDA_ERROR_INVALID_DEVICE for ordinals the session does not have.
    assert_eq!(ask(2, info.devices.len() as i32), Reply::Status(101));
    assert_eq!(ask(3, -1), Reply::Status(101));
}

#[test]
fn nvml_refuses_a_libcuda_that_is_not_gpupools() {
    // libnvidia-ml.so.1 is gpupool's, but libcuda.so.1 is another driver
    // (here the software driver): nvmlInit fails, saying why.
    let dir = scratch_dir().join("foreign-driver");
    link_libraries(
        &dir,
        &[("libcuda.so.1", soft_driver()), ("libnvidia-ml.so.1", nvml_shim())],
    );
    let mut cmd = std::process::Command::new(c_program("nvml_check"));
    cmd.args(["init-fails", "12"]).env("LD_LIBRARY_PATH", &dir);
    let (ok, out, err) = nvml_check(cmd);
    assert!(ok, "stdout: {out}\nstderr: {err}");
    assert!(out.contains("OK init fails: 12 NVML Shared Library Not Found"), "{out}");
    assert!(
        err.contains("not gpupool's client shim"),
        "the reason must be said: {err}"
    );
}

/// `nvml.h` as the test command installs it (`target/cuda/tools`, beside
/// the toolchains of `GPUPOOL_TEST_CUDA_HOMES`).
fn nvml_header() -> Option<std::path::PathBuf> {
    let homes = std::env::var("GPUPOOL_TEST_CUDA_HOMES").unwrap_or_default();
    let header = homes
        .split(':')
        .find(|h| !h.is_empty())
        .and_then(|h| {
            std::path::Path::new(h)
                .ancestors()
                .nth(3)
                .map(|cuda| cuda.join("tools/nvidia/cu13/include/nvml.h"))
        })
        .filter(|h| h.exists());
    if header.is_none() {
        cuda_install_missing("nvml.h (beside the toolchains of GPUPOOL_TEST_CUDA_HOMES)");
    }
    header
}

/// Every entry point NVML 13.4's `nvml.h` declares, and every versioned
/// name it calls one by, is exported by gpupool's NVML, answered or as an
/// `NVML_ERROR_NOT_SUPPORTED` stub: a program linked against NVML finds
/// each name it was built to call, where a missing one would end it with
/// a symbol lookup error.
#[test]
fn every_entry_point_nvml_h_declares_is_exported() {
    let Some(header) = nvml_header() else {
        return;
    };
    let names = headers::declared_entry_points(&std::fs::read_to_string(&header).unwrap(), "DECLDIR", "nvml");
    assert!(
        names.len() > 300,
        "only {} entry points read from {}",
        names.len(),
        header.display()
    );
    assert!(
        names.contains("nvmlInit_v2") && names.contains("nvmlErrorString"),
        "{names:?}"
    );
    let missing = headers::not_exported(&nvml_shim(), &names);
    assert!(
        missing.is_empty(),
        "{} entry points of nvml.h not exported: {missing:?}",
        missing.len()
    );
}
