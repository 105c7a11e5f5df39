//! gpupool GPU server: runs forwarded CUDA driver calls on this machine's
//! GPUs.
//!
//! The daemon (`session`) accepts clients over TCP and QUIC, checks each
//! client's hello, and starts one worker process per session; the worker
//! (`worker`) executes the client's calls in order on the driver (`driver`,
//! the only module that calls `libcuda.so.1`; `nvml` reads what only NVML
//! knows, such as utilisation), checking every handle and
//! address against the client's own tables (`tables`); sessions of one
//! server share memory and events through `ipc`. A client's crash,
//! sticky error or leak stays in its own process, and everything it held is
//! freed when its connection ends.

pub mod config;
pub mod driver;
pub mod fdpass;
pub mod images;
pub mod inventory;
pub mod ipc;
pub mod nvml;
pub mod registration;
pub mod session;
pub mod tables;
pub mod worker;

/// Start logging to standard error (`GPUPOOL_LOG` filter, `info` by default;
/// `GPUPOOL_LOG_FORMAT=json` for JSON).
pub fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("GPUPOOL_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("GPUPOOL_LOG_FORMAT").is_ok_and(|f| f == "json");
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
