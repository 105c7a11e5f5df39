//! The driver's output for the program: what a kernel's `printf` prints,
//! which the driver writes to its process's standard output when the host
//! synchronises, and a failed device-side `assert`'s message, which it
//! writes to standard error. A worker's standard output and standard error
//! are memory files, so the driver's writes never block (a pipe nobody
//! drains would stall the synchronisation that writes it); before each
//! reply the session's thread sends what was written since the last one in
//! notices (`Reply::Output`), and the client writes it to its own stream
//! as it reads the reply, so the driver's output comes out where, and
//! when, it would on a local GPU. The worker's own log lines go to the
//! standard error it was started with ([`crate::move_logs_off_stderr`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// Past this much read, the file starts again from empty.
const RESTART_AT: u64 = 1 << 20;

pub struct Captured {
    file: OwnedFd,
    /// The standard stream captured (1 or 2).
    stream: RawFd,
    /// Bytes of the file already sent.
    sent: u64,
}

impl Captured {
    /// Point this process's standard output (fd 1) at a new memory file.
    pub fn stdout() -> io::Result<Captured> {
        Self::capture(1)
    }

    /// Point this process's standard error (fd 2) at a new memory file.
    /// Log lines must have moved off it first.
    pub fn stderr() -> io::Result<Captured> {
        Self::capture(2)
    }

    fn capture(stream: RawFd) -> io::Result<Captured> {
        // SAFETY: memfd_create takes a NUL-terminated name and flags.
        let fd = unsafe { libc::memfd_create(c"gpupool-device-output".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd was just made and is owned here alone.
        let file = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: both descriptors are open; `stream` becomes a second
        // descriptor of the file (sharing its offset, which its writers
        // advance), without close-on-exec.
        if unsafe { libc::dup2(file.as_raw_fd(), stream) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Captured { file, stream, sent: 0 })
    }

    /// The standard stream captured: 1 (output) or 2 (error).
    pub fn stream(&self) -> u8 {
        self.stream as u8
    }

    /// Flush the C library's buffered streams, the driver's among them.
    pub fn flush_streams() {
        // SAFETY: fflush(NULL) flushes every open output stream.
        unsafe { libc::fflush(std::ptr::null_mut()) };
    }

    /// What was written since the last call, at most `max` bytes; empty
    /// when nothing was. Once everything written is sent and the file has
    /// grown past [`RESTART_AT`], it starts again from empty.
    pub fn take(&mut self, max: usize) -> Vec<u8> {
        // SAFETY: `stream` is open (a descriptor of the file); the offset
        // of the file's writers is where the next write goes.
        let end = unsafe { libc::lseek(self.stream, 0, libc::SEEK_CUR) };
        let Ok(end) = u64::try_from(end) else { return Vec::new() };
        if end <= self.sent {
            if self.sent >= RESTART_AT && end == self.sent {
                self.restart();
            }
            return Vec::new();
        }
        let want = (end - self.sent).min(max as u64) as usize;
        let mut bytes = vec![0u8; want];
        // SAFETY: reads into the local buffer of `want` bytes at an offset
        // of the file; the writers' offset is left alone.
        let n = unsafe {
            libc::pread(
                self.file.as_raw_fd(),
                bytes.as_mut_ptr().cast(),
                want,
                self.sent as libc::off_t,
            )
        };
        let n = usize::try_from(n).unwrap_or(0);
        bytes.truncate(n);
        self.sent += n as u64;
        bytes
    }

    fn restart(&mut self) {
        // SAFETY: the file is ours; emptied and rewound before anything new
        // is written (the driver writes from within calls of this thread).
        unsafe {
            libc::ftruncate(self.file.as_raw_fd(), 0);
            libc::lseek(self.stream, 0, libc::SEEK_SET);
        }
        self.sent = 0;
    }
}
