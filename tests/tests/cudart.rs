//! Unmodified nvcc programs through gpupool: CUDA runtime programs built by
//! the real nvcc (from PyPI, installed by the test command) with static and
//! with shared cudart, run through the shim against a server on the software
//! driver. This exercises cudart's real start-up: its export tables, the
//! integrity check, fat-binary registration and lazy library loading.
//!
//! `GPUPOOL_TEST_CUDA_HOMES` lists the toolchains (`scripts/cuda-toolchain.sh`
//! prints it). Without it the tests say so and pass, unless
//! `GPUPOOL_REQUIRE_CUDA=1` (set by the test command), where they fail.

use gpupool_tests::*;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

fn cuda_homes() -> Vec<PathBuf> {
    let homes: Vec<PathBuf> = std::env::var("GPUPOOL_TEST_CUDA_HOMES")
        .unwrap_or_default()
        .split(':')
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
        .collect();
    if homes.is_empty() {
        assert!(
            std::env::var("GPUPOOL_REQUIRE_CUDA").as_deref() != Ok("1"),
            "GPUPOOL_REQUIRE_CUDA=1 but GPUPOOL_TEST_CUDA_HOMES is empty: run scripts/cuda-toolchain.sh"
        );
        eprintln!("no CUDA toolchain given (GPUPOOL_TEST_CUDA_HOMES); the nvcc tests did not run");
    }
    homes
}

/// The toolchain's version, from its directory name (`target/cuda/<v>/...`).
fn version_of(home: &Path) -> String {
    home.ancestors()
        .nth(2)
        .and_then(|p| p.file_name())
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "cuda".into())
}

/// Build `tests/cuda/<name>.cu` with this toolchain; static or shared cudart.
/// Each build happens once per test process (tests run in parallel).
fn nvcc_build(home: &Path, name: &str, shared: bool) -> PathBuf {
    static BUILT: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let key = home.join(format!("{name}-{shared}"));
    if let Some((_, p)) = built.iter().find(|(k, _)| *k == key) {
        return p.clone();
    }
    let out = nvcc_compile(home, name, shared);
    built.push((key, out.clone()));
    out
}

fn nvcc_compile(home: &Path, name: &str, shared: bool) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cuda")
        .join(format!("{name}.cu"));
    let kind = if shared { "shared" } else { "static" };
    let out = scratch_dir().join(format!("{name}-{}-{kind}", version_of(home)));
    let bin = home.join("bin");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new(bin.join("nvcc"))
        .env("PATH", path)
        .args(["-arch=sm_90", "-cudart", kind, "-o"])
        .arg(&out)
        .arg(&src)
        .arg(format!("-L{}", home.join("lib").display()))
        .output()
        .unwrap_or_else(|e| panic!("cannot run nvcc from {}: {e}", bin.display()));
    assert!(
        output.status.success(),
        "nvcc failed for {}:\n{}",
        src.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    out
}

fn run(home: &Path, program: &Path, server: &Server, args: &[&str]) -> String {
    let mut cmd = through_shim(program, &server.tcp);
    // The shim first; then the toolchain's libcudart.so.13 for shared builds.
    cmd.env(
        "LD_LIBRARY_PATH",
        format!("{}:{}", shim_dir().display(), home.join("lib").display()),
    )
    .args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{} {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}\nserver: {}",
        program.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    stdout
}

#[test]
fn nvcc_programs_run_with_static_and_shared_cudart() {
    let homes = cuda_homes();
    if homes.is_empty() {
        return;
    }
    let server = Server::start();
    for home in &homes {
        for shared in [false, true] {
            let program = nvcc_build(home, "cudart_check", shared);
            let out = run(home, &program, &server, &[]);
            assert!(
                out.contains("OK cudart n=65536"),
                "{} (shared={shared}): {out}",
                version_of(home)
            );
        }
    }
}

#[test]
fn cudart_reports_a_kernel_fault_at_the_next_synchronise() {
    let homes = cuda_homes();
    let Some(home) = homes.first() else {
        return;
    };
    let server = Server::start();
    let program = nvcc_build(home, "cudart_check", false);
    let out = run(home, &program, &server, &["fault"]);
    assert!(out.contains("OK fault"), "{out}");
}
