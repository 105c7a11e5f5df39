//! The GPU server on drivers older than the newest: NVIDIA's own
//! user-space drivers of CUDA 12.2 and 12.4 (Debian's packages, which load
//! without a GPU; `scripts/nvidia-driver.sh`), and the software driver
//! lacking what CUDA 12.2's driver lacks, which programs then run on.

use gpupool_gpu_server::driver::OPTIONAL_ENTRY_POINTS;
use gpupool_tests::*;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

/// The entry points the server can do without that NVIDIA's driver 535
/// (CUDA 12.2) lacks: green contexts, edge data, conditional nodes,
/// capture into a graph (12.3), parameter layouts (12.4), context-wide
/// events (12.5). The test on driver 535 itself checks this list.
const LACKING_IN_CUDA_12_2: &[&str] = &[
    "cuCtxFromGreenCtx",
    "cuCtxGetDevResource",
    "cuCtxRecordEvent",
    "cuCtxWaitEvent",
    "cuDevResourceGenerateDesc",
    "cuDevSmResourceSplitByCount",
    "cuDeviceGetDevResource",
    "cuFuncGetParamInfo",
    "cuGraphAddDependencies_v2",
    "cuGraphAddNode_v2",
    "cuGraphConditionalHandleCreate",
    "cuGraphGetEdges_v2",
    "cuGraphRemoveDependencies_v2",
    "cuGreenCtxCreate",
    "cuGreenCtxDestroy",
    "cuGreenCtxStreamCreate",
    "cuKernelGetParamInfo",
    "cuStreamBeginCaptureToGraph",
    "cuStreamGetCaptureInfo_v3",
    "cuStreamUpdateCaptureDependencies_v2",
];

/// NVIDIA's drivers the test command fetched, colon-separated in
/// `GPUPOOL_TEST_NVIDIA_DRIVERS`.
fn nvidia_drivers() -> Vec<PathBuf> {
    installed_paths(
        "GPUPOOL_TEST_NVIDIA_DRIVERS",
        "NVIDIA's driver packages (scripts/nvidia-driver.sh)",
    )
}

/// Every entry point the server needs is in NVIDIA's drivers back to 535
/// (CUDA 12.2), and on a machine without a GPU the server stops with the
/// driver's own reason: a server on any driver it can serve from starts,
/// whatever CUDA version the driver is of.
#[test]
fn the_server_finds_its_entry_points_in_nvidias_drivers_back_to_cuda_12_2() {
    for lib in nvidia_drivers() {
        let shown = lib.display().to_string();
        // SAFETY: NVIDIA's driver library; loading it runs its initialisers,
        // which need no GPU.
        let loaded = unsafe { libloading::Library::new(&lib) }.unwrap_or_else(|e| panic!("load {shown}: {e}"));
        let mut lacking: Vec<&str> = OPTIONAL_ENTRY_POINTS
            .iter()
            .copied()
            // SAFETY: only the symbol's presence is asked.
            .filter(|n| unsafe { loaded.get::<*const ()>(n.as_bytes()) }.is_err())
            .collect();
        lacking.sort_unstable();
        eprintln!(
            "{shown} lacks {} of the optional entry points: {lacking:?}",
            lacking.len()
        );
        if shown.contains("-535.") {
            assert_eq!(lacking, LACKING_IN_CUDA_12_2, "what driver 535 lacks");
        }
        let mut cmd = Command::new(server_binary());
        cmd.args(["--listen-tcp", "127.0.0.1:0", "--listen-quic", "", "--driver"])
            .arg(&lib)
            .env("GPUPOOL_STATE_DIR", scratch_dir().join("nvidia-driver-server"))
            .env("RUST_BACKTRACE", "0")
            .env("NO_COLOR", "1");
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            !stderr.contains(" lacks "),
            "{shown}: an entry point is missing: {stderr}"
        );
        // Without a GPU (the test machines'), the driver's reason; with one
        // whose kernel module is of this driver, the server would serve.
        assert!(
            stdout.contains("gpupool-server ready")
                || (!out.status.success()
                    && stderr.contains(&format!(
                        "the CUDA driver {shown} did not start: cuInit failed: CUDA_ERROR_"
                    ))),
            "{shown}: status {}, stdout {stdout}, stderr {stderr}",
            out.status
        );
    }
}

/// On a driver without the entry points CUDA 12.2's lacks, the server says
/// which it lacks at start; kernels launch with parameter layouts read from
/// the code loaded (from modules and libraries, handed out again after an
/// unload too), graphs capture and replay through the older forms, and
/// what has no older form is not found by `cuGetProcAddress` (the server
/// names it in the handshake), as on such a driver.
#[test]
fn programs_run_on_a_driver_of_cuda_12_2() {
    let driver = soft_driver_lacking(LACKING_IN_CUDA_12_2);
    let server = Server::start_on(&driver, &[("GPUPOOL_SOFT_REUSE_HANDLES", "1")], None);
    assert!(
        server.wait_for_log("lacks 20 entry points", Duration::from_secs(10)),
        "{}",
        server.log()
    );
    let log = server.log();
    for name in LACKING_IN_CUDA_12_2 {
        assert!(log.contains(name), "{name} not named as lacking: {log}");
    }
    assert!(log.contains("parameter layouts are read from the code"), "{log}");
    for (mode, ok) in [
        ("vadd", "OK vadd n=100000"),
        ("library", "OK library n=5000"),
        ("reuse", "OK reuse 8 rounds"),
        ("streams", "OK streams"),
        ("callbacks", "OK callbacks"),
        ("hostnodes", "OK hostnodes"),
        ("managed", "OK managed"),
        ("pools", "OK pools"),
    ] {
        let out = driver_check(&server.tcp, &[mode]);
        assert!(out.contains(ok), "{mode}: {out}");
    }
    // Graphs built, captured (the capture's state asked through the older
    // form) and replayed, until the first function of CUDA 12.3's that the
    // server cannot stand in for; green contexts at their first function:
    // `cuGetProcAddress` does not find them, as a driver of CUDA 12.2
    // answers (before, they were found and answered 801).
    for (mode, first_refused) in [
        ("graph", "cuGetProcAddress(cuStreamBeginCaptureToGraph) = 500"),
        ("green", "cuGetProcAddress(cuDeviceGetDevResource) = 500"),
    ] {
        let mut cmd = through_shim(&c_program("driver_check"), &server.tcp);
        cmd.arg(mode);
        let out = run_with_timeout(cmd, Duration::from_secs(60));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && stderr.contains(first_refused),
            "{mode}: {stderr}"
        );
    }
}
