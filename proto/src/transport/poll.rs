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

impl<R: PollRead> PollRead for Polling<R> {
    fn read_now(&mut self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        self.inner.read_now(buf)
    }
}

/// Buffered reading of a peer's frames that can also take in what has
/// arrived without waiting ([`FrameReader::take_arrived`]) and tell
/// whether a whole frame is in ([`FrameReader::frame_buffered`]), so that
/// a reader can handle the frames already sent and stop before one it
/// would wait for. Reads must end at frame boundaries for the second to
/// hold (a reader of whole frames does).
pub struct FrameReader<R> {
    inner: R,
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl<R> FrameReader<R> {
    pub fn with_capacity(capacity: usize, inner: R) -> FrameReader<R> {
        FrameReader {
            inner,
            buf: vec![0u8; capacity.max(crate::frame::HEADER_LEN)].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }

    /// Whether the buffer holds a whole frame, header and body.
    pub fn frame_buffered(&self) -> bool {
        let bytes = &self.buf[self.start..self.end];
        if bytes.len() < crate::frame::HEADER_LEN {
            return false;
        }
        let body = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        bytes.len() - crate::frame::HEADER_LEN >= body
    }
}

impl<R: PollRead> FrameReader<R> {
    /// Take into the buffer what has arrived, without waiting: whether
    /// anything came (nothing at the end of the stream, which the next read
    /// tells, or when the buffer is full).
    pub fn take_arrived(&mut self) -> io::Result<bool> {
        if self.start == self.end {
            (self.start, self.end) = (0, 0);
        } else if self.end == self.buf.len() {
            self.buf.copy_within(self.start..self.end, 0);
            (self.start, self.end) = (0, self.end - self.start);
        }
        if self.end == self.buf.len() {
            return Ok(false);
        }
        match self.inner.read_now(&mut self.buf[self.end..])? {
            Some(n) if n > 0 => {
                self.end += n;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

impl<R: Read> Read for FrameReader<R> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        if self.start == self.end {
            // Large reads (bulk data) go straight to their destination.
            if out.len() >= self.buf.len() {
                return self.inner.read(out);
            }
            self.end = self.inner.read(&mut self.buf)?;
            self.start = 0;
        }
        let n = out.len().min(self.end - self.start);
        out[..n].copy_from_slice(&self.buf[self.start..self.start + n]);
        self.start += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_frame_reader_takes_what_arrived_and_knows_a_whole_frame() {
        use crate::frame;
        use crate::message::Reply;
        let (a, mut b) = UnixStream::pair().unwrap();
        let mut r = FrameReader::with_capacity(64, Polling::new(SocketRead(a), Duration::ZERO));
        assert!(!r.take_arrived().unwrap(), "nothing sent yet");
        assert!(!r.frame_buffered());
        let mut one = Vec::new();
        frame::encode_frame(&mut one, 7, 0, &Reply::Status(3), &[], 1 << 20).unwrap();
        // Half a frame: taken in, but not whole.
        b.write_all(&one[..one.len() / 2]).unwrap();
        assert!(r.take_arrived().unwrap());
        assert!(!r.frame_buffered());
        b.write_all(&one[one.len() / 2..]).unwrap();
        b.write_all(&one).unwrap();
        while r.take_arrived().unwrap() {}
        assert!(r.frame_buffered());
        let mut msg = Vec::new();
        for _ in 0..2 {
            assert!(r.frame_buffered());
            let h = frame::read_frame(&mut r, &mut msg, 1 << 20).unwrap();
            assert_eq!(h.id, 7);
        }
        assert!(!r.frame_buffered(), "both frames read");
        // A frame larger than the buffer is never whole in it, and reads
        // (blocking) as any other.
        let mut big = Vec::new();
        frame::encode_frame(&mut big, 8, 0, &Reply::Status(0), &[9u8; 200], 1 << 20).unwrap();
        b.write_all(&big).unwrap();
        std::thread::sleep(Duration::from_millis(10));
        while r.take_arrived().unwrap() {}
        assert!(!r.frame_buffered());
        let h = frame::read_frame(&mut r, &mut msg, 1 << 20).unwrap();
        assert_eq!((h.id, h.bulk_len), (8, 200));
        let mut bulk = vec![0u8; 200];
        r.read_exact(&mut bulk).unwrap();
        assert!(bulk.iter().all(|&x| x == 9));
        drop(b);
        assert!(!r.take_arrived().unwrap(), "the end of the stream is no bytes");
    }

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
