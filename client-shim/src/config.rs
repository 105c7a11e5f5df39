//! Shim configuration, from the environment (the program's own command line
//! is not ours to read):
//! - `GPUPOOL_SERVER`: `tcp://host:port` or `quic://host:port[?fingerprint=…]`
//! - `GPUPOOL_TLS_CA`: PEM file of CA certificates to verify a QUIC server
//!   against, instead of pinning a fingerprint
//! - `GPUPOOL_LEASE_TOKEN`: lease token to present (issued by the broker)
//! - `GPUPOOL_BROKER`: `http://host:port` of a gpupool broker, or the URLs of
//!   all the brokers of a pool, comma-separated (tried in order until the
//!   leader answers); when set, the shim asks it for a lease and connects to
//!   the server the lease names (`GPUPOOL_SERVER` is then not needed)
//! - `GPUPOOL_BROKER_TOKEN`: bearer token for the broker
//! - `GPUPOOL_REQUEST`: what to ask the broker for, e.g. `gpus=1` (default)
//!   or `memory_mib=8192,compute=0.5,model=H100`
//! - `GPUPOOL_BROKER_WAIT_S`: how long to wait while the broker queues the
//!   request (300 s by default)
//! - `GPUPOOL_POLL_US`: how long a thread waiting for a reply polls the
//!   connection before it sleeps (default 100; 0 sleeps at once)
//! - `GPUPOOL_HOLD_US`: the most a streamed request (a launch, an async
//!   copy or memset, an event record) waits in the shim for the ones after
//!   it to go in one write (default 20; 0 writes each at once)
//! - `GPUPOOL_PIN_IO`: pin the shim's I/O threads (the background reader,
//!   the QUIC runtime) to the CPUs of the NUMA node of the network device
//!   that reaches the server (default on; `0` leaves them where they are)
//! - `GPUPOOL_LOG`: log filter (`warn` by default), e.g. `info`, `gpupool=debug`
//! - `GPUPOOL_LOG_FORMAT`: `json` for JSON logs
//! - `GPUPOOL_CALL_REPORT`: when set, print at exit where each call went and
//!   the time it took

use gpupool_proto::transport::{ClientTls, ServerUrl};

/// The shim's settings.
pub struct Config {
    pub server: Result<ServerUrl, String>,
    pub tls: ClientTls,
    pub lease_token: Option<String>,
    pub call_report: bool,
    pub broker: Option<String>,
    pub broker_token: Option<String>,
    pub request: String,
    pub broker_wait: std::time::Duration,
    pub poll: std::time::Duration,
    pub hold: std::time::Duration,
    pub pin_io: bool,
}

/// Default of `GPUPOOL_POLL_US`: a little more than a loopback or LAN
/// round trip through the server.
const DEFAULT_POLL_US: u64 = 100;

/// Default of `GPUPOOL_HOLD_US`.
const DEFAULT_HOLD_US: u64 = 20;

impl Config {
    pub fn from_env() -> Config {
        let server = match std::env::var("GPUPOOL_SERVER") {
            Ok(url) => ServerUrl::parse(&url).map_err(|e| e.to_string()),
            Err(_) => {
                Err("GPUPOOL_SERVER is not set: set it to the GPU server's address, e.g. tcp://gpu-host:7070".into())
            }
        };
        let tls = match std::env::var_os("GPUPOOL_TLS_CA") {
            Some(p) => ClientTls::CaFile(p.into()),
            None => ClientTls::Pinned,
        };
        Config {
            server,
            tls,
            lease_token: std::env::var("GPUPOOL_LEASE_TOKEN").ok().filter(|t| !t.is_empty()),
            call_report: std::env::var_os("GPUPOOL_CALL_REPORT").is_some_and(|v| !v.is_empty() && v != "0"),
            broker: std::env::var("GPUPOOL_BROKER").ok().filter(|b| !b.is_empty()),
            broker_token: std::env::var("GPUPOOL_BROKER_TOKEN").ok().filter(|t| !t.is_empty()),
            request: std::env::var("GPUPOOL_REQUEST").unwrap_or_default(),
            broker_wait: std::time::Duration::from_secs(
                std::env::var("GPUPOOL_BROKER_WAIT_S")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(300),
            ),
            poll: std::time::Duration::from_micros(
                std::env::var("GPUPOOL_POLL_US")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_POLL_US),
            ),
            hold: std::time::Duration::from_micros(
                std::env::var("GPUPOOL_HOLD_US")
                    .ok()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(DEFAULT_HOLD_US),
            ),
            pin_io: std::env::var("GPUPOOL_PIN_IO")
                .map_or(true, |v| !matches!(v.as_str(), "0" | "false" | "no" | "off")),
        }
    }
}

/// Set once the process exits (the shim's exit handlers ran).
static EXITING: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Mark the process as exiting: from now on the shim logs nothing.
pub fn exiting() {
    EXITING.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Dropped when this thread's thread-local storage is torn down, which at
/// `exit` happens before the exit handlers (the program's library
/// destructors among them, which may still call the driver) run.
struct Sentinel;

impl Drop for Sentinel {
    fn drop(&mut self) {}
}

thread_local! {
    static SENTINEL: Sentinel = const { Sentinel };
}

/// Whether logging is still safe here: the log writer keeps thread-local
/// state, and touching it once that is gone (in exit handlers, or in other
/// thread-local destructors) panics. Checked on the paths that log from
/// within a driver call, never on the hot path.
pub fn may_log() -> bool {
    !EXITING.load(std::sync::atomic::Ordering::Relaxed) && !forked() && SENTINEL.try_with(|_| ()).is_ok()
}

/// Set in a child forked after the shim connected.
static FORKED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called in the child of a `fork` (registered with `pthread_atfork`).
extern "C" fn in_forked_child() {
    FORKED.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// From now on, tell a forked child apart: it shares the parent's
/// connection to the server, which only the parent may use (a child's
/// exit handlers ending the session, or its calls writing requests, would
/// break the parent's session), and it has none of the shim's threads.
pub fn watch_forks() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers a plain extern "C" function, with no captured
        // state, that only stores to an atomic (async-signal-safe).
        unsafe { libc::pthread_atfork(None, None, Some(in_forked_child)) };
    });
}

/// Whether this process is a child forked after the shim connected: every
/// driver call there fails (`CUDA_ERROR_NOT_INITIALIZED`), as CUDA gives
/// a forked child nothing of its parent's, and the exit handlers leave the
/// parent's session, lease and call report alone.
pub fn forked() -> bool {
    FORKED.load(std::sync::atomic::Ordering::Relaxed)
}

/// `CUDA_LAUNCH_BLOCKING=1`: each kernel launch returns once the kernel
/// ran, with its error, as the driver does for debugging; through gpupool
/// each launch then waits for the server's answer (read once).
pub fn launch_blocking() -> bool {
    static BLOCKING: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *BLOCKING.get_or_init(|| std::env::var("CUDA_LAUNCH_BLOCKING").is_ok_and(|v| v.trim() == "1"))
}

/// On a session whose server has several GPUs, tell NCCL to take its peer
/// transport between any two of them the driver lets reach each other
/// (`NCCL_P2P_LEVEL=SYS`), unless the program chose a level itself or
/// `GPUPOOL_NCCL_P2P_LEVEL=0`. NCCL reads its GPUs' PCI topology on this
/// machine, where a remote GPU has none (each seems behind a host bridge of
/// its own), and would otherwise keep two GPUs without NVLink apart and
/// move data through shared host memory, which GPUs across the network
/// cannot reach: every collective would fail. The driver still decides
/// (`cuDeviceCanAccessPeer`); NCCL reads the variable when a
/// communicator starts, after `cuInit`.
pub fn steer_nccl_to_peer_transport(machine_gpus: usize) {
    let off = std::env::var("GPUPOOL_NCCL_P2P_LEVEL").is_ok_and(|v| v.trim() == "0");
    let chosen = ["NCCL_P2P_LEVEL", "NCCL_P2P_DISABLE"]
        .iter()
        .any(|v| std::env::var_os(v).is_some());
    if machine_gpus < 2 || off || chosen {
        return;
    }
    // SAFETY: both strings are NUL-terminated literals; setenv copies them
    // and, with overwrite 0, leaves a value set meanwhile. It runs once, in
    // cuInit, before any NCCL communicator can read the variable.
    let r = unsafe { libc::setenv(c"NCCL_P2P_LEVEL".as_ptr(), c"SYS".as_ptr(), 0) };
    if r == 0 {
        tracing::info!(
            machine_gpus,
            "NCCL_P2P_LEVEL=SYS: NCCL takes its peer transport between this session's GPUs"
        );
    }
}

/// Start logging to standard error, once.
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let filter = EnvFilter::try_from_env("GPUPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("warn"));
        let json = std::env::var("GPUPOOL_LOG_FORMAT").is_ok_and(|f| f == "json");
        let builder = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .with_target(false);
        // A program may have installed its own subscriber; then ours stays out.
        let _ = if json {
            builder.json().try_init()
        } else {
            builder.try_init()
        };
    });
    // Registered after the subscriber, so torn down before its state.
    let _ = SENTINEL.try_with(|_| ());
}
