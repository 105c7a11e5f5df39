//! Support for gpupool's whole-system tests: find the built artifacts (the
//! shim, the GPU server, the software driver test double), compile the C test
//! programs with the system C compiler, start a server on loopback, and run
//! programs through the shim.
//!
//! The tests need `cargo build --workspace` to have run first (the README's
//! test command does it).

pub mod headers;
pub mod layouts;

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The cargo target directory holding the built binaries and libraries.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    exe.parent().and_then(Path::parent).expect("target dir").to_path_buf()
}

fn artifact(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is missing: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

pub fn server_binary() -> PathBuf {
    artifact("gpupool-server")
}

/// The software driver test double (simulated GPU).
pub fn soft_driver() -> PathBuf {
    artifact("libgpupool_softcuda.so")
}

/// gpupool's NVML (`libnvidia-ml.so.1`).
pub fn nvml_shim() -> PathBuf {
    artifact("libnvidia_ml.so")
}

/// A directory holding `libcuda.so.1` (the gpupool shim) and
/// `libnvidia-ml.so.1` (gpupool's NVML), to put first on `LD_LIBRARY_PATH`.
pub fn shim_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = scratch_dir().join("shim");
        link_libraries(
            &dir,
            &[
                ("libcuda.so.1", artifact("libcuda.so")),
                ("libnvidia-ml.so.1", nvml_shim()),
            ],
        );
        dir
    })
    .clone()
}

/// Make `dir` hold a symbolic link `name -> target` for each pair.
pub fn link_libraries(dir: &Path, links: &[(&str, PathBuf)]) {
    std::fs::create_dir_all(dir).unwrap();
    for (name, target) in links {
        let link = dir.join(name);
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(target, &link).unwrap();
    }
}

/// A loopback TCP port free now that stays this test's to reuse: below
/// the kernel's ephemeral range, so no socket bound to port 0 and no
/// outgoing connection's local end takes it while the test leaves it
/// unbound (and a connection to it while nothing listens is refused, never
/// connected to itself, as one to an unbound ephemeral port can be).
pub fn fixed_port() -> u16 {
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let span = low.saturating_sub(10_000).max(1);
    let seed = std::process::id() as u64 * 7919
        + std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos() as u64);
    (0..200u64)
        .map(|i| low - 1 - ((seed + i * 104_729) % span as u64) as u16)
        .find(|&p| std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .expect("no free loopback port below the ephemeral range")
}

/// A CUDA install a test needs is missing (`what`, e.g. "cuobjdump at
/// ..."): under `GPUPOOL_REQUIRE_CUDA=1` (the test command sets it) the
/// test fails; otherwise it says so, and the caller skips it.
pub fn cuda_install_missing(what: &str) {
    assert!(
        std::env::var("GPUPOOL_REQUIRE_CUDA").as_deref() != Ok("1"),
        "GPUPOOL_REQUIRE_CUDA=1 but {what} is not installed: run scripts/cuda-toolchain.sh"
    );
    eprintln!("{what} is not installed; the tests that need it did not run");
}

/// The paths, colon-separated, in environment variable `var`, where the
/// test command put an install the test needs (`what`); where there are
/// none, [`cuda_install_missing`] says so.
pub fn installed_paths(var: &str, what: &str) -> Vec<PathBuf> {
    let found: Vec<PathBuf> = std::env::var(var)
        .unwrap_or_default()
        .split(':')
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .collect();
    if found.is_empty() {
        cuda_install_missing(what);
    }
    found
}

/// A copy of the software driver that exports none of `names`, as a driver
/// of an older CUDA version lacks the entry points that came later. Each
/// name's first letter is changed in the copy's dynamic string table (the
/// names its dynamic symbols have), so that `dlsym` does not find it.
pub fn soft_driver_lacking(names: &[&str]) -> PathBuf {
    let mut bytes = std::fs::read(soft_driver()).expect("read the software driver");
    let dynstr = dynamic_strings(&bytes).expect("the software driver's dynamic string table");
    for name in names {
        let whole = format!("\0{name}\0").into_bytes();
        let table = &mut bytes[dynstr.clone()];
        let at = table
            .windows(whole.len())
            .position(|w| w == whole.as_slice())
            .unwrap_or_else(|| panic!("the software driver does not export {name}"));
        table[at + 1] = b'x';
    }
    let out = scratch_dir().join(format!("libgpupool_softcuda-lacking-{}.so", names.len()));
    std::fs::write(&out, bytes).expect("write the driver copy");
    out
}

/// Where an ELF64 shared object's dynamic symbols' string table lies: the
/// section a `SHT_DYNSYM` section links to.
fn dynamic_strings(elf: &[u8]) -> Option<std::ops::Range<usize>> {
    let u16_at = |o: usize| Some(u16::from_le_bytes(elf.get(o..o + 2)?.try_into().ok()?) as usize);
    let u32_at = |o: usize| Some(u32::from_le_bytes(elf.get(o..o + 4)?.try_into().ok()?) as usize);
    let u64_at = |o: usize| Some(u64::from_le_bytes(elf.get(o..o + 8)?.try_into().ok()?) as usize);
    let (table, entry, count) = (u64_at(0x28)?, u16_at(0x3a)?, u16_at(0x3c)?);
    let section = |i: usize| table + i * entry;
    let dynsym = (0..count).map(section).find(|&s| u32_at(s + 4) == Some(11))?;
    let strings = section(u32_at(dynsym + 0x28)?);
    let (offset, size) = (u64_at(strings + 0x18)?, u64_at(strings + 0x20)?);
    (offset + size <= elf.len()).then_some(offset..offset + size)
}

/// A per-process scratch directory under the target dir.
pub fn scratch_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = target_dir().join("gpupool-tests").join(std::process::id().to_string());
        std::fs::create_dir_all(&d).unwrap();
        d
    })
    .clone()
}

/// Compile a C test program from `tests/c/` (once per process).
pub fn c_program(name: &str) -> PathBuf {
    static BUILT: Mutex<Vec<(String, PathBuf)>> = Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, p)) = built.iter().find(|(n, _)| n == name) {
        return p.clone();
    }
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("c")
        .join(format!("{name}.c"));
    let out = scratch_dir().join(name);
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let status = Command::new(&cc)
        .args(["-O2", "-Wall", "-o"])
        .arg(&out)
        .arg(&src)
        .arg("-ldl")
        .arg("-pthread")
        .status()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {cc}: {e}"));
    assert!(status.success(), "compiling {} failed", src.display());
    built.push((name.to_string(), out.clone()));
    out
}

/// A GPU server on loopback, on the software driver, for one test.
pub struct Server {
    child: Child,
    pub tcp: String,
    pub quic: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(&[])
    }

    pub fn start_with(env: &[(&str, &str)]) -> Server {
        Server::start_configured(env, None)
    }

    /// A server with `config` as its TOML configuration file (the flags of
    /// [`Server::start_with`] still apply over it).
    pub fn start_configured(env: &[(&str, &str)], config: Option<&str>) -> Server {
        Server::start_on(&soft_driver(), env, config)
    }

    /// A server on `driver` (a software driver of another build, such as
    /// [`soft_driver_lacking`]'s), labelled simulated.
    pub fn start_on(driver: &Path, env: &[(&str, &str)], config: Option<&str>) -> Server {
        let state = scratch_dir().join(format!(
            "server-{}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos()
        ));
        let mut cmd = Command::new(server_binary());
        cmd.args([
            "--listen-tcp",
            "127.0.0.1:0",
            "--listen-quic",
            "127.0.0.1:0",
            "--simulated",
            "--driver",
        ])
        .arg(driver)
        .env("GPUPOOL_STATE_DIR", &state)
        .env("GPUPOOL_LOG", "info")
        .env("NO_COLOR", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        if let Some(text) = config {
            std::fs::create_dir_all(&state).expect("server state folder");
            let file = state.join("server.toml");
            std::fs::write(&file, text).expect("write the server configuration");
            cmd.arg("--config").arg(file);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start gpupool-server");
        let log = Arc::new(Mutex::new(String::new()));
        let mut stderr = child.stderr.take().unwrap();
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).expect("server ready line");
        assert!(
            line.starts_with("gpupool-server ready:"),
            "unexpected server output {line:?}; log: {}",
            log.lock().unwrap()
        );
        let urls: Vec<&str> = line.split_whitespace().skip(2).collect();
        let tcp = urls
            .iter()
            .find(|u| u.starts_with("tcp://"))
            .expect("tcp url")
            .to_string();
        let quic = urls
            .iter()
            .find(|u| u.starts_with("quic://"))
            .expect("quic url")
            .to_string();
        Server { child, tcp, quic, log }
    }

    /// A live view of the server's log, for helpers that outlive a borrow.
    pub fn log_handle(&self) -> Arc<Mutex<String>> {
        Arc::clone(&self.log)
    }

    /// Everything the server has logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// The process id of the worker of the first session the log tells of
    /// (`session started ... pid=N`); fails the test when there is none.
    pub fn first_worker_pid(&self) -> u32 {
        let log = self.log();
        log.lines()
            .find(|l| l.contains("session started"))
            .and_then(|l| l.split_whitespace().find_map(|w| w.strip_prefix("pid=")))
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no worker pid in the log:\n{log}"))
    }

    /// Wait until the log contains `needle`.
    pub fn wait_for_log(&self, needle: &str, timeout: Duration) -> bool {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if self.log().contains(needle) {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The daemon's process id (to stop and continue it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn tcp_addr(&self) -> String {
        self.tcp.trim_start_matches("tcp://").to_string()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The output of a `driver_check hold` program up to its `HOLDING` line (or
/// its end, when it stopped before holding).
pub fn output_until_holding(program: &mut Child) -> String {
    let mut out = String::new();
    let mut stdout = BufReader::new(program.stdout.take().expect("stdout piped"));
    while !out.contains("HOLDING") {
        if stdout.read_line(&mut out).unwrap_or(0) == 0 {
            break;
        }
    }
    out
}

/// A command that runs `program` with the shim as its `libcuda.so.1`.
pub fn through_shim(program: &Path, server_url: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("LD_LIBRARY_PATH", shim_dir())
        .env("GPUPOOL_SERVER", server_url)
        .env("NO_COLOR", "1")
        // GPUPOOL_TEST_SHIM_LOG raises the shim's log level when a test is
        // being looked into.
        .env(
            "GPUPOOL_LOG",
            std::env::var("GPUPOOL_TEST_SHIM_LOG").unwrap_or_else(|_| "warn".into()),
        );
    cmd
}

/// Run to completion, killing the program if it takes longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn test program");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output");
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            let out = child.wait_with_output().expect("output");
            panic!(
                "program hung for {timeout:?}; stdout: {} stderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Run the driver-API check program in `mode` through the shim and return
/// its output; asserts success.
pub fn driver_check(server_url: &str, args: &[&str]) -> String {
    let mut cmd = through_shim(&c_program("driver_check"), server_url);
    cmd.args(args);
    let out = run_with_timeout(cmd, Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "driver_check {args:?} failed ({}):\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    // No device range lay on the program's memory (the shim's own managed
    // mappings are not such).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("lies where this process has memory mapped"),
        "driver_check {args:?}: {stderr}"
    );
    stdout
}
