//! Reading with a short busy-poll before blocking.
//!
//! A thread that blocks in `read` and is woken by the kernel when the reply
//! arrives pays a wake-up on top of the network's round trip; on virtual
//! machines and idle cores that wake-up can cost more than the round trip
//! itself. A thread that expects bytes soon (a caller waiting for its reply,
//! a worker between two requests of a busy client) instead asks for them
//! without blocking for a few tens of microseconds, and only then sleeps.

use std::io::{self, Read};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// A byte source that can also be asked for what has already arrived.
pub trait PollRead: Read + Send {
    /// The bytes available now, without waiting: `Ok(None)` when there are
    /// none yet, `Ok(Some(0))` at end of stream.
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>>;
}

/// A socket, read with `recv(MSG_DONTWAIT)` when polled (the socket itself
/// stays blocking, so a writer sharing it is unaffected).
pub struct SocketRead<S>(pub S);

impl<S: Read> Read for SocketRead<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl<S: Read + AsRawFd + Send> PollRead for SocketRead<S> {
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        // SAFETY: the descriptor is open for as long as `self.0` lives and
        // `buf` is valid for writes of `buf.len()` bytes.
        let n = unsafe {
            libc::recv(
                self.0.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
            )
        };
        if n >= 0 {
            return Ok(Some(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted => Ok(None),
            _ => Err(e),
        }
    }
}

/// Reads from `inner`, polling for up to `spin` before each blocking read.
/// A zero `spin` reads blocking at once.
pub struct Polling<R> {
    inner: R,
    spin: Duration,
}

impl<R: PollRead> Polling<R> {
    pub fn new(inner: R, spin: Duration) -> Polling<R> {
        Polling { inner, spin }
    }

    /// How long reads poll before blocking.
    pub fn spin(&self) -> Duration {
        self.spin
    }

    pub fn get_ref(&self) -> &R {
        &self.inner
    }

    /// Change how long later reads poll before blocking.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }
}

impl<R: PollRead> Read for Polling<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if !self.spin.is_zero() && !buf.is_empty() {
            let start = Instant::now();
            loop {
                if let Some(n) = self.inner.read_now(buf)? {
                    return Ok(n);
                }
                if start.elapsed() >= self.spin {
                    break;
                }
                std::hint::spin_loop();
            }
        }
        self.inner.read(buf)
    }
}

impl PollRead for Box<dyn PollRead> {
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        (**self).read_now(buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn read_now_says_none_until_bytes_arrive_then_eof() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = SocketRead(a);
        let mut buf = [0u8; 8];
        assert_eq!(r.read_now(&mut buf).unwrap(), None);
        b.write_all(b"abc").unwrap();
        assert_eq!(r.read_now(&mut buf).unwrap(), Some(3));
        assert_eq!(&buf[..3], b"abc");
        drop(b);
        assert_eq!(r.read_now(&mut buf).unwrap(), Some(0));
    }

    #[test]
    fn polling_read_falls_back_to_blocking_after_the_spin() {
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = Polling::new(SocketRead(a), Duration::from_micros(200));
        let writer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            b.write_all(b"late").unwrap();
        });
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"late");
        writer.join().unwrap();
    }
}
