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
        .with_writer(|| LogWriter);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

/// The descriptor log lines are written to: standard error, until
/// [`move_logs_off_stderr`].
static LOG_FD: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(2);

/// Keep writing log lines (and panic messages) where standard error points
/// now, through a descriptor of their own, so that standard error itself
/// can be given to the driver's output for the client (a worker's
/// `worker::output`).
pub fn move_logs_off_stderr() -> std::io::Result<()> {
    // SAFETY: duplicates fd 2 to a new descriptor, closed on exec.
    let fd = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    LOG_FD.store(fd, std::sync::atomic::Ordering::Relaxed);
    // A panic's message is a log line of the server, not output of the
    // driver for the client.
    std::panic::set_hook(Box::new(|info| {
        let trace = std::backtrace::Backtrace::capture();
        if trace.status() == std::backtrace::BacktraceStatus::Captured {
            tracing::error!("{info}\n{trace}");
        } else {
            tracing::error!("{info}");
        }
    }));
    Ok(())
}

/// Writes log lines to [`LOG_FD`]: each line whole, as the formatter hands
/// it over in one `write_all`.
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let fd = LOG_FD.load(std::sync::atomic::Ordering::Relaxed);
        // SAFETY: writes from a live slice to a descriptor this process
        // keeps open for its whole life (fd 2 or its duplicate).
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        usize::try_from(n).map_err(|_| std::io::Error::last_os_error())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}
