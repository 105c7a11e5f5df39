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
    installed_paths("GPUPOOL_TEST_CUDA_HOMES", "a CUDA toolchain (GPUPOOL_TEST_CUDA_HOMES)")
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
    nvcc_build_with(home, name, shared, &[])
}

/// `nvcc_build` with extra nvcc arguments (include and library folders).
fn nvcc_build_with(home: &Path, name: &str, shared: bool, extra: &[String]) -> PathBuf {
    static BUILT: Mutex<Vec<(PathBuf, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    let key = home.join(format!("{name}-{shared}"));
    if let Some((_, p)) = built.iter().find(|(k, _)| *k == key) {
        return p.clone();
    }
    let out = nvcc_compile(home, name, shared, extra);
    built.push((key, out.clone()));
    out
}

fn nvcc_compile(home: &Path, name: &str, shared: bool, extra: &[String]) -> PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cuda")
        .join(format!("{name}.cu"));
    let kind = if shared { "shared" } else { "static" };
    let out = scratch_dir().join(format!("{name}-{}-{kind}", version_of(home)));
    let lib = format!("-L{}", home.join("lib").display());
    let fixed = ["-arch=sm_90", "-cudart", kind, "-o"];
    let mut args: Vec<&std::ffi::OsStr> = fixed.iter().map(|a| a.as_ref()).collect();
    args.extend([out.as_os_str(), src.as_os_str(), lib.as_ref()]);
    args.extend(extra.iter().map(std::ffi::OsStr::new));
    run_nvcc(home, &args);
    out
}

/// Run the toolchain's nvcc (its folder first on `PATH`) with `args`; a
/// failed build fails the test with nvcc's message.
fn run_nvcc(home: &Path, args: &[&std::ffi::OsStr]) {
    let bin = home.join("bin");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
    let output = Command::new(bin.join("nvcc"))
        .env("PATH", path)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run nvcc from {}: {e}", bin.display()));
    assert!(
        output.status.success(),
        "nvcc {args:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
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
    // No device range lay on the program's memory: the shim's own managed
    // mappings (`__managed__` variables) are not such.
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("lies where this process has memory mapped"),
        "{} {args:?}: {stderr}",
        program.display()
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
            // Conditional nodes (if/else, while, switch) set on the device.
            let out = run(home, &program, &server, &["conditional"]);
            assert!(
                out.contains("OK cudart conditional"),
                "{} (shared={shared}): {out}",
                version_of(home)
            );
            // Graphs changed after they are built.
            let out = run(home, &program, &server, &["graphedit"]);
            assert!(
                out.contains("OK cudart graphedit"),
                "{} (shared={shared}): {out}",
                version_of(home)
            );
            // A kernel's printf: the server's driver writes it; it comes out
            // here, at the synchronisation, between the program's lines.
            let out = run(home, &program, &server, &["printf"]);
            let lines: Vec<&str> = out.lines().skip_while(|l| l.starts_with("device 0")).collect();
            assert_eq!(
                lines,
                [
                    "before the kernel",
                    "hello 7 from thread 0",
                    "hello 7 from thread 1",
                    "hello 7 from thread 2",
                    "hello 7 from thread 3",
                    "OK cudart printf"
                ],
                "{} (shared={shared}): {out}",
                version_of(home)
            );
            // Green contexts (execution contexts of CUDA 13.1 runtimes).
            let out = run(home, &program, &server, &["green"]);
            let minor = version_of(home).split('.').nth(1).and_then(|m| m.parse::<u32>().ok());
            let want = if minor.is_some_and(|m| m >= 1) {
                "OK cudart green 16 SMs"
            } else {
                "OK cudart green: not in this runtime"
            };
            assert!(out.contains(want), "{} (shared={shared}): {out}", version_of(home));
            // cudaIpc* between two processes (two sessions of the server).
            let out = run(home, &program, &server, &["ipc"]);
            assert!(
                out.contains("OK cudart ipc-child") && out.contains("OK cudart ipc\n"),
                "{} (shared={shared}): {out}",
                version_of(home)
            );
        }
    }
}

/// Relocatable device code (`nvcc -rdc=true`, two files): cudart registers
/// it with a version 2 wrapper. A SASS build carries its device-linked code;
/// a PTX-only build carries an empty linked fat binary, and the objects are
/// linked by the server's driver at load, as the driver does natively.
#[test]
fn relocatable_device_code_runs_through_gpupool() {
    let homes = cuda_homes();
    if homes.is_empty() {
        return;
    }
    let server = Server::start();
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("cuda");
    for home in &homes {
        for (label, arch, shared) in [
            ("sass", "arch=compute_90,code=sm_90", false),
            ("ptx", "arch=compute_90,code=compute_90", false),
            ("ptx-shared", "arch=compute_90,code=compute_90", true),
        ] {
            let out = scratch_dir().join(format!("rdc_check-{}-{label}", version_of(home)));
            let bin = home.join("bin");
            let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default());
            let built = Command::new(bin.join("nvcc"))
                .env("PATH", path)
                .args([
                    "-rdc=true",
                    "-gencode",
                    arch,
                    "-cudart",
                    if shared { "shared" } else { "static" },
                    "-o",
                ])
                .arg(&out)
                .arg(dir.join("rdc_check.cu"))
                .arg(dir.join("rdc_part.cu"))
                .arg(format!("-L{}", home.join("lib").display()))
                .output()
                .unwrap_or_else(|e| panic!("cannot run nvcc from {}: {e}", bin.display()));
            assert!(
                built.status.success(),
                "nvcc -rdc failed: {}",
                String::from_utf8_lossy(&built.stderr)
            );
            let stdout = run(home, &out, &server, &[]);
            assert!(
                stdout.contains("OK rdc n=4096"),
                "{} ({label}): {stdout}",
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

#[test]
fn a_failed_device_assert_prints_its_message_on_the_programs_stderr() {
    let homes = cuda_homes();
    let Some(home) = homes.first() else {
        return;
    };
    let server = Server::start();
    for shared in [false, true] {
        let program = nvcc_build(home, "cudart_check", shared);
        let mut cmd = through_shim(&program, &server.tcp);
        cmd.env(
            "LD_LIBRARY_PATH",
            format!("{}:{}", shim_dir().display(), home.join("lib").display()),
        )
        .arg("assert");
        let out = run_with_timeout(cmd, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() && stdout.contains("OK assert"),
            "shared={shared} ({}):\nstdout: {stdout}\nstderr: {stderr}\nserver: {}",
            out.status,
            server.log()
        );
        // The driver's message (the software driver's own wording; a GPU's
        // names the source line and block too) comes out at the
        // synchronisation, between the program's own lines on stderr, once.
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("kernel") || l.contains("Assertion") || l.contains("synchronisation"))
            .collect();
        assert_eq!(lines.len(), 3, "shared={shared}: {stderr}");
        assert_eq!(lines[0], "before the kernel", "shared={shared}: {stderr}");
        assert!(
            lines[1].contains("thread: [2,0,0]") && lines[1].ends_with("Assertion `v[i] != 0` failed."),
            "shared={shared}: {stderr}"
        );
        assert_eq!(lines[2], "after the synchronisation", "shared={shared}: {stderr}");
        assert!(!stdout.contains("Assertion"), "shared={shared}: {stdout}");
        // The server's log is its own: the message is not in it.
        assert!(!server.log().contains("Assertion"), "{}", server.log());
    }
}

/// The CUDA 12 runtime (12.8, `libcudart.so.12`) through gpupool: its
/// start-up, memory, streams, timed events, stream-ordered allocation, a
/// kernel it registers from a fat binary (built by the 13.0 nvcc; PyPI has
/// no CUDA 12 compiler) launched directly and from a captured graph. It
/// asks the driver for what cudart 13 does not (`cuLibraryGetModule`, then
/// the module's function, before its first launch).
#[test]
fn cuda_12_runtime_starts_and_launches_through_gpupool() {
    let Some(home) = cuda_homes().into_iter().find(|h| version_of(h) == "13.0") else {
        return;
    };
    let rt12 = home
        .ancestors()
        .nth(3)
        .map(|cuda| cuda.join("12.8").join("nvidia").join("cuda_runtime").join("lib"))
        .filter(|lib| lib.join("libcudart.so.12").exists());
    let Some(rt12) = rt12 else {
        cuda_install_missing(&format!("the CUDA 12 runtime beside {}", home.display()));
        return;
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cuda")
        .join("scale_kernel.cu");
    let fatbin = scratch_dir().join("scale_kernel.fatbin");
    run_nvcc(
        &home,
        &[
            "-fatbin".as_ref(),
            "-arch=sm_90".as_ref(),
            "-o".as_ref(),
            fatbin.as_os_str(),
            src.as_os_str(),
        ],
    );
    let server = Server::start();
    let mut cmd = through_shim(&c_program("cudart12_check"), &server.tcp);
    cmd.env(
        "LD_LIBRARY_PATH",
        format!("{}:{}", shim_dir().display(), rt12.display()),
    )
    .env("GPUPOOL_CALL_REPORT", "1")
    .arg(&fatbin);
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let context = || format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
    assert!(out.status.success(), "{}", context());
    assert!(
        stdout.contains("OK cudart12 runtime 12080 driver 13000"),
        "{}",
        context()
    );
    // The runtime asked for the library's module, which the server made.
    let module = stderr.lines().find(|l| l.starts_with("cuLibraryGetModule "));
    assert!(module.is_some_and(|l| l.contains("server")), "{}", context());
    assert!(!stderr.contains("does not support"), "{}", context());
}

/// nvcc's arguments for sm_80, sm_90 and sm_100 code and compute_90 PTX.
const THREE_ARCHS: [&str; 6] = [
    "-gencode",
    "arch=compute_80,code=sm_80",
    "-gencode",
    "arch=compute_90,code=[sm_90,compute_90]",
    "-gencode",
    "arch=compute_100,code=sm_100",
];

/// A program built for several architectures (sm_80, sm_90 and sm_100
/// code, compute_90 PTX) runs as before, and its fat binary crosses the
/// network cut down to what the server's GPU (sm_90) can load; where the
/// server's driver refuses the cut image, it goes whole.
#[test]
fn fat_binaries_travel_with_the_servers_architecture_only() {
    let Some(home) = cuda_homes().into_iter().find(|h| version_of(h) == "13.0") else {
        return;
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cuda")
        .join("cudart_check.cu");
    let out = scratch_dir().join("cudart_check-three-archs");
    let lib = format!("-L{}", home.join("lib").display());
    let mut all: Vec<&std::ffi::OsStr> = THREE_ARCHS
        .iter()
        .chain(&["-cudart", "static", "-o"])
        .map(|a| a.as_ref())
        .collect();
    all.extend([out.as_os_str(), src.as_os_str(), lib.as_ref()]);
    run_nvcc(&home, &all);
    // The program through a server; its standard error (the shim's debug
    // log), having checked that it ran as natively.
    let run_on = |server: &Server| -> String {
        let mut cmd = through_shim(&out, &server.tcp);
        cmd.env("GPUPOOL_LOG", "debug");
        let run = run_with_timeout(cmd, Duration::from_secs(120));
        let stdout = String::from_utf8_lossy(&run.stdout);
        let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
        let context = format!("stdout: {stdout}\nstderr: {stderr}\nserver: {}", server.log());
        assert!(
            run.status.success() && stdout.contains("OK cudart n=65536"),
            "{context}"
        );
        stderr
    };
    let stderr = run_on(&Server::start());
    // bytes=<whole> sent=<cut>: about a third goes.
    let cut = stderr
        .lines()
        .find(|l| l.contains("a fat binary goes with the code of the session's GPUs only"))
        .unwrap_or_else(|| panic!("no fat binary was cut: {stderr}"));
    let field = |name: &str| -> u64 {
        let at = cut.find(&format!("{name}=")).unwrap_or_else(|| panic!("{name}: {cut}")) + name.len() + 1;
        cut[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert!(field("sent") < field("bytes"), "{cut}");
    // A driver that refuses the cut image (a test double's knob: no fat
    // binary without sm_80 code): the shim sends it whole, and the program
    // runs as before.
    let stderr = run_on(&Server::start_with(&[("GPUPOOL_SOFT_REFUSE_FATBIN_WITHOUT_SM", "80")]));
    assert!(
        stderr.contains("refused a fat binary cut to its GPUs' code; sending it"),
        "{stderr}"
    );
}

/// Every entry point the `cuda.h` of each toolchain (CUDA 13.0 and 13.5)
/// declares, with the versioned and per-thread default-stream names its
/// macros call them by, is exported by the shim: a program built with
/// either header and linked against `libcuda.so` finds each name it calls.
#[test]
fn every_entry_point_cuda_h_declares_is_exported() {
    let shim = shim_dir().join("libcuda.so.1");
    for home in cuda_homes() {
        let header = home.join("include").join("cuda.h");
        let text = std::fs::read_to_string(&header).unwrap_or_else(|e| panic!("{}: {e}", header.display()));
        let names = headers::declared_entry_points(&text, "CUDAAPI", "cu");
        assert!(
            names.len() > 500,
            "only {} entry points read from {}",
            names.len(),
            header.display()
        );
        for name in [
            "cuInit",
            "cuCtxCreate_v4",
            "cuMemcpyHtoD_v2_ptds",
            "cuLaunchKernel_ptsz",
        ] {
            assert!(names.contains(name), "{name} not read from {}", header.display());
        }
        let missing = headers::not_exported(&shim, &names);
        assert!(
            missing.is_empty(),
            "{} entry points of {} not exported: {missing:?}",
            missing.len(),
            header.display()
        );
    }
}

/// cuobjdump, installed by the test command in `target/cuda/tools`.
fn cuobjdump(home: &Path) -> Option<PathBuf> {
    let tool = home.ancestors().nth(3)?.join("tools/nvidia/cu13/bin/cuobjdump");
    if !tool.exists() {
        cuda_install_missing(&format!("cuobjdump at {}", tool.display()));
        return None;
    }
    Some(tool)
}

/// `cuobjdump ARGS` in `dir`; its standard output, failing the test when
/// it fails.
fn run_cuobjdump(tool: &Path, dir: &Path, args: &[&std::ffi::OsStr]) -> String {
    let out = Command::new(tool)
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run cuobjdump");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "cuobjdump {args:?}: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// The fat binaries the shim cuts down to the server's GPUs
/// (`gpupool_fatbin::only_for`) are read by NVIDIA's own reader, cuobjdump,
/// as fat binaries holding just the entries kept, each of which it
/// extracts (decompressed) byte for byte as it extracts that entry of the
/// whole image: of a build for sm_80, sm_90 (code and PTX) and sm_100, with
/// entries plain and compressed.
#[test]
fn cut_fat_binaries_read_as_nvidia_reads_them() {
    let Some(home) = cuda_homes().into_iter().find(|h| version_of(h) == "13.0") else {
        return;
    };
    let Some(tool) = cuobjdump(&home) else {
        return;
    };
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("cuda")
        .join("scale_kernel.cu");
    for (name, extra) in [("plain", &[][..]), ("compressed", &["-Xfatbin", "-compress-all"][..])] {
        let dir = scratch_dir().join(format!("cut-{name}"));
        std::fs::create_dir_all(&dir).unwrap();
        let whole = dir.join("whole.fatbin");
        let mut args: Vec<&std::ffi::OsStr> = ["-fatbin"]
            .iter()
            .chain(&THREE_ARCHS)
            .chain(extra)
            .map(|a| a.as_ref())
            .collect();
        args.extend(["-o".as_ref(), whole.as_os_str(), src.as_os_str()]);
        run_nvcc(&home, &args);
        let bytes = std::fs::read(&whole).unwrap();
        let listed = |file: &str| {
            let mut l: Vec<String> = run_cuobjdump(&tool, &dir, &["-lelf".as_ref(), "-lptx".as_ref(), file.as_ref()])
                .lines()
                .map(|l| l.rsplit(' ').next().unwrap_or_default().to_owned())
                .collect();
            l.sort();
            l
        };
        assert_eq!(
            listed("whole.fatbin"),
            [
                "whole.1.sm_80.cubin",
                "whole.1.sm_90.ptx",
                "whole.2.sm_90.cubin",
                "whole.3.sm_100.cubin"
            ],
            "{name}"
        );
        run_cuobjdump(
            &tool,
            &dir,
            &["-xelf", "all", "-xptx", "all", "whole.fatbin"].map(std::ffi::OsStr::new),
        );
        // An H100 (9.0) keeps the sm_90 code and PTX; an A10 (8.6) the
        // sm_80 code.
        let cases = [
            (
                (9, 0),
                "h100",
                vec![
                    ("whole.2.sm_90.cubin", "h100.1.sm_90.cubin"),
                    ("whole.1.sm_90.ptx", "h100.1.sm_90.ptx"),
                ],
            ),
            ((8, 6), "a10", vec![("whole.1.sm_80.cubin", "a10.1.sm_80.cubin")]),
        ];
        for (cc, device, pairs) in cases {
            let cut = gpupool_fatbin::only_for(&bytes, &[cc]).unwrap().expect("entries go");
            assert!(cut.len() < bytes.len());
            let file = format!("{device}.fatbin");
            std::fs::write(dir.join(&file), &cut).unwrap();
            let mut want: Vec<&str> = pairs.iter().map(|(_, c)| *c).collect();
            want.sort();
            assert_eq!(listed(&file), want, "{name} {device}");
            run_cuobjdump(
                &tool,
                &dir,
                &["-xelf", "all", "-xptx", "all", &file].map(std::ffi::OsStr::new),
            );
            for (original, kept) in pairs {
                let a = std::fs::read(dir.join(original)).unwrap();
                let b = std::fs::read(dir.join(kept)).unwrap();
                assert!(!a.is_empty() && a == b, "{name}: {kept} differs from {original}");
            }
        }
    }
}

/// The parameter layout the fat-binary parser reads of every sm_90 kernel
/// of cuBLAS 13 (the library the test command installs) is the one
/// cuobjdump prints of it.
#[test]
fn cublas_kernel_layouts_agree_with_cuobjdump() {
    let Some((home, libs)) = toolchain_with_libs() else {
        return;
    };
    let Some(tool) = cuobjdump(&home) else {
        return;
    };
    let library = libs.join("lib").join("libcublas.so.13");
    let agreed = layouts::agree_with_cuobjdump(&tool, &library, (9, 0)).unwrap_or_else(|e| panic!("{e}"));
    // cuBLAS 13.0 has some 3,500 distinct sm_90 kernels.
    assert!(agreed > 1000, "only {agreed} kernels compared");
}

/// cuBLAS and cuFFT installed beside a toolchain
/// (`<toolchain>/libs/nvidia/cu13`; the test command installs them for 13.0).
fn libs_home(home: &Path) -> Option<PathBuf> {
    let libs = home.ancestors().nth(2)?.join("libs").join("nvidia").join("cu13");
    let have = ["libcublas.so.13", "libcufft.so.12"]
        .iter()
        .all(|l| libs.join("lib").join(l).exists());
    have.then_some(libs)
}

/// The 13.0 toolchain and the libraries beside it, when installed (a
/// missing install fails under `GPUPOOL_REQUIRE_CUDA=1`).
fn toolchain_with_libs() -> Option<(PathBuf, PathBuf)> {
    let home = cuda_homes().into_iter().find(|h| version_of(h) == "13.0")?;
    let Some(libs) = libs_home(&home) else {
        cuda_install_missing(&format!("cuBLAS and cuFFT beside {}", home.display()));
        return None;
    };
    Some((home, libs))
}

/// Build `tests/cuda/<name>.cu` (static cudart) against one of the
/// libraries and run it through the shim with the call report on: its
/// standard error, and the server's log.
fn run_with_library(home: &Path, libs: &Path, name: &str, lib: &str) -> (String, String) {
    let extra = [
        format!("-I{}", libs.join("include").display()),
        format!("-L{}", libs.join("lib").display()),
        format!("-l{lib}"),
    ];
    let program = nvcc_build_with(home, name, false, &extra);
    let server = Server::start();
    let mut cmd = through_shim(&program, &server.tcp);
    cmd.env(
        "LD_LIBRARY_PATH",
        format!("{}:{}", shim_dir().display(), libs.join("lib").display()),
    )
    .env("GPUPOOL_CALL_REPORT", "1");
    let out = run_with_timeout(cmd, Duration::from_secs(120));
    (String::from_utf8_lossy(&out.stderr).into_owned(), server.log())
}

/// (count, round trips, errors) of one call in the shim's call report.
fn report_row(report: &str, call: &str) -> Option<(u64, u64, u64)> {
    // Names may hold spaces ("integrity check"); the numbers follow them.
    let rest = report
        .lines()
        .find_map(|l| l.strip_prefix(call).filter(|r| r.starts_with(' ')))?;
    let cols: Vec<&str> = rest.split_whitespace().collect();
    Some((cols[0].parse().ok()?, cols[3].parse().ok()?, cols[4].parse().ok()?))
}

/// cuBLAS 13 starts through gpupool: two cudart instances (the program's and
/// cuBLAS's own) pass the integrity check, cuBLAS's export tables are served,
/// its thousands of fat binaries are registered lazily in the shim, and
/// `cublasSgemm` resolves its kernel and launches it with `cuLaunchKernelEx`.
/// The software driver knows no cuBLAS kernel, so the launch is refused on
/// the server (CUDA_ERROR_NOT_SUPPORTED) and that error comes back at the
/// next synchronise, as an asynchronous error does; on a GPU the script runs
/// the same program to a checked result.
#[test]
fn cublas_starts_and_its_first_gemm_reaches_the_server() {
    let Some((home, libs)) = toolchain_with_libs() else {
        return;
    };
    let (stderr, log) = run_with_library(&home, &libs, "sgemm_check", "cublas");
    let context = || format!("stderr: {stderr}\nserver: {log}");
    assert!(
        stderr.contains(" cudaDeviceSynchronize() = 801 "),
        "cuBLAS should get as far as its first GEMM, refused by the software driver at the synchronise:\n{}",
        context()
    );
    let (launches, _, launch_errors) =
        report_row(&stderr, "cuLaunchKernelEx").unwrap_or_else(|| panic!("no launch arrived:\n{}", context()));
    assert!(launches >= 1 && launch_errors == 0, "{}", context());
    let (loads, load_trips, load_errors) =
        report_row(&stderr, "cuLibraryLoadData").unwrap_or_else(|| panic!("no library loads:\n{}", context()));
    assert!(
        loads >= 1 && load_trips == 0 && load_errors == 0,
        "libraries are registered in the shim and shipped at first use:\n{}",
        context()
    );
    let (checks, check_trips, _) =
        report_row(&stderr, "integrity check").unwrap_or_else(|| panic!("no integrity check:\n{}", context()));
    assert!(
        checks >= 2 && check_trips == 0,
        "both cudart instances check:\n{}",
        context()
    );
    let (syncs, _, sync_errors) = report_row(&stderr, "cuCtxSynchronize_v2")
        .or_else(|| report_row(&stderr, "cuCtxSynchronize"))
        .unwrap_or_else(|| panic!("no synchronise:\n{}", context()));
    assert!(syncs >= 1 && sync_errors == 1, "{}", context());
}

/// cuFFT 12 (CUDA 13.0) plans through gpupool: each plan loads its kernel
/// module with `cuModuleLoadData` and asks the driver's tools module table
/// (`6e163fbe…`, slot 7) for the module's function, which the shim answers
/// from the module's image; without the table cuFFT refuses the plan
/// (`CUFFT_INTERNAL_ERROR`). The software driver knows no cuFFT kernel, so
/// the first transform is refused at the synchronise after it; on a GPU the
/// script runs the same program to results checked against a DFT.
#[test]
fn cufft_plans_find_their_kernels_through_the_tools_module_table() {
    let Some((home, libs)) = toolchain_with_libs() else {
        return;
    };
    let (stderr, log) = run_with_library(&home, &libs, "fft_check", "cufft");
    let context = || format!("stderr: {stderr}\nserver: {log}");
    assert!(
        stderr.contains(" cudaDeviceSynchronize() = 801 "),
        "the plan should be made and its transform reach the software driver, which refuses it at the synchronise:\n{}",
        context()
    );
    let (asked, _, errors) = report_row(&stderr, "tools module: the functions of a module")
        .unwrap_or_else(|| panic!("cuFFT did not ask for its module's functions:\n{}", context()));
    assert!(asked >= 1 && errors == 0, "{}", context());
    let (launches, _, launch_errors) =
        report_row(&stderr, "cuLaunchKernel").unwrap_or_else(|| panic!("no launch arrived:\n{}", context()));
    assert!(launches >= 1 && launch_errors == 0, "{}", context());
}
