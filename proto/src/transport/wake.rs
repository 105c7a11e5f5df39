//! Waiting between frames for either the peer's next bytes or a wake-up from
//! another thread of this process.
//!
//! A gpu-server worker reads its client's requests on one thread. Some events
//! happen on other threads: the driver calls a host function (a client's
//! `cuLaunchHostFunc`) on a thread of its own when a stream reaches it, and
//! the client must hear of it even when it sends nothing more. Before the
//! worker blocks for its client's next request it waits on both: the
//! session's socket and a [`Wake`]. A wake-up returns the wait without
//! consuming any of the peer's bytes, so a frame is never cut.

use super::poll::{Polling, SocketRead};
use super::quic_direct::DirectQuicReader;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

/// A wake-up another thread can give to a reader waiting between frames.
pub struct Wake {
    fd: OwnedFd,
    notify: tokio::sync::Notify,
}

impl Wake {
    pub fn new() -> io::Result<Wake> {
        // SAFETY: eventfd takes an initial count and flags and returns a new
        // descriptor or -1.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Wake {
            // SAFETY: fd was just created and nothing else owns it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
            notify: tokio::sync::Notify::new(),
        })
    }

    /// Wake the reader (now, or at its next wait if it is not waiting).
    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from `one` to the eventfd this Wake owns. A
        // full counter (EAGAIN) already means "woken".
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
        self.notify.notify_one();
    }

    /// Take a pending wake-up of the descriptor.
    fn clear(&self) {
        let mut count: u64 = 0;
        // SAFETY: reads at most 8 bytes into `count`; the eventfd does not
        // block (EFD_NONBLOCK).
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut count as *mut u64).cast(), 8) };
    }
}

/// A byte source whose reader can wait for bytes or a wake-up.
pub trait WaitRead: Read {
    /// Wait until bytes (or the end of the stream, or an error) can be read,
    /// `true`, or until `wake` is woken, `false`. Reads nothing.
    fn wait_readable(&mut self, wake: &Wake) -> io::Result<bool>;

    /// As [`WaitRead::wait_readable`], for at most `timeout`: `None` when it
    /// passed. A source that cannot time its wait may also answer `false`
    /// (woken) when it passed.
    fn wait_readable_for(&mut self, wake: &Wake, timeout: Duration) -> io::Result<Option<bool>>;
}

impl<T: WaitRead + ?Sized> WaitRead for &mut T {
    fn wait_readable(&mut self, wake: &Wake) -> io::Result<bool> {
        (**self).wait_readable(wake)
    }

    fn wait_readable_for(&mut self, wake: &Wake, timeout: Duration) -> io::Result<Option<bool>> {
        (**self).wait_readable_for(wake, timeout)
    }
}

/// Poll `fd` and the wake-up's descriptor for `timeout` (`None`: as long as
/// it takes): Some(true) when `fd` is readable, Some(false) when woken, None
/// at the timeout.
fn poll_both(fd: i32, wake: &Wake, timeout: Option<Duration>) -> io::Result<Option<bool>> {
    let limit = timeout.map(|t| libc::timespec {
        tv_sec: t.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: t.subsec_nanos() as libc::c_long,
    });
    let mut fds = [
        libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        },
        libc::pollfd {
            fd: wake.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        },
    ];
    loop {
        let limit = limit.as_ref().map_or(std::ptr::null(), |t| t as *const libc::timespec);
        // SAFETY: `fds` is an array of two pollfd structures and `limit`
        // null or a timespec, all living across the call; no signal mask.
        let n = unsafe { libc::ppoll(fds.as_mut_ptr(), 2, limit, std::ptr::null()) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Ok(None);
        }
        // Hang-up and errors count as readable: the read reports them.
        if fds[0].revents != 0 {
            return Ok(Some(true));
        }
        wake.clear();
        return Ok(Some(false));
    }
}

impl<S: Read + AsRawFd> WaitRead for SocketRead<S> {
    fn wait_readable(&mut self, wake: &Wake) -> io::Result<bool> {
        Ok(poll_both(self.0.as_raw_fd(), wake, None)?.unwrap_or(true))
    }

    fn wait_readable_for(&mut self, wake: &Wake, timeout: Duration) -> io::Result<Option<bool>> {
        poll_both(self.0.as_raw_fd(), wake, Some(timeout))
    }
}

impl<S: Read + AsRawFd + Send> Polling<SocketRead<S>> {
    /// Polls without sleeping for the reader's spin time (within
    /// `timeout`), then sleeps for what is left of it.
    fn wait_polling(&mut self, wake: &Wake, timeout: Option<Duration>) -> io::Result<Option<bool>> {
        let fd = self.get_ref().0.as_raw_fd();
        let spin = timeout.map_or(self.spin(), |t| t.min(self.spin()));
        let start = Instant::now();
        if !spin.is_zero() {
            while start.elapsed() < spin {
                if let Some(ready) = poll_both(fd, wake, Some(Duration::ZERO))? {
                    return Ok(Some(ready));
                }
                std::hint::spin_loop();
            }
        }
        poll_both(fd, wake, timeout.map(|t| t.saturating_sub(start.elapsed())))
    }
}

impl<S: Read + AsRawFd + Send> WaitRead for Polling<SocketRead<S>> {
    fn wait_readable(&mut self, wake: &Wake) -> io::Result<bool> {
        Ok(self.wait_polling(wake, None)?.unwrap_or(true))
    }

    fn wait_readable_for(&mut self, wake: &Wake, timeout: Duration) -> io::Result<Option<bool>> {
        self.wait_polling(wake, Some(timeout))
    }
}

impl WaitRead for DirectQuicReader {
    fn wait_readable(&mut self, wake: &Wake) -> io::Result<bool> {
        self.fill_or(wake.notify.notified())
    }

    /// A timeout reads as a wake-up.
    fn wait_readable_for(&mut self, wake: &Wake, timeout: Duration) -> io::Result<Option<bool>> {
        let woken_or_late = async {
            let _ = tokio::time::timeout(timeout, wake.notify.notified()).await;
        };
        self.fill_or(woken_or_late).map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn a_wake_up_returns_the_wait_and_bytes_are_left_for_the_read() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let wake = Arc::new(Wake::new().unwrap());
        let mut r = Polling::new(SocketRead(a), Duration::from_micros(50));
        let w = Arc::clone(&wake);
        let waker = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            w.wake();
        });
        assert!(!r.wait_readable(&wake).unwrap(), "woken, not readable");
        waker.join().unwrap();
        b.write_all(b"frame").unwrap();
        assert!(r.wait_readable(&wake).unwrap());
        let mut buf = [0u8; 5];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"frame");
        // A wake-up given while nobody waits is taken by the next wait.
        wake.wake();
        assert!(!r.wait_readable(&wake).unwrap());
        drop(b);
        let start = Instant::now();
        assert!(r.wait_readable(&wake).unwrap(), "a closed peer reads as end of stream");
        assert!(start.elapsed() < Duration::from_secs(10));
        assert_eq!(r.read(&mut buf).unwrap(), 0);
    }
}
