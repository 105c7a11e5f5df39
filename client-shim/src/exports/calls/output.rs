//! What the server's driver wrote for the program (`Reply::Output`): a
//! kernel's `printf` output, which a local driver prints on the program's
//! standard output when the host synchronises, and a failed device-side
//! `assert`'s message, which it prints on standard error. Each goes
//! through the C library's stream (`stdout`, `stderr`), as the driver's
//! own does, so it keeps its place among the program's own lines, and is
//! flushed at once.

/// glibc's standard streams.
mod ffi {
    extern "C" {
        pub static mut stdout: *mut libc::FILE;
        pub static mut stderr: *mut libc::FILE;
    }
}

/// Write the bytes to the program's standard output (fd 1) or standard
/// error (fd 2); other numbers are not sent, and are dropped.
pub(crate) fn write_output(fd: u8, bytes: &[u8]) {
    if bytes.is_empty() {
        return;
    }
    // SAFETY: reading glibc's `stdout` and `stderr` pointers, which it sets
    // before any program code runs; writing `bytes.len()` bytes from a live
    // slice and flushing through the stream's own lock.
    unsafe {
        let stream = match fd {
            1 => std::ptr::addr_of!(ffi::stdout).read(),
            2 => std::ptr::addr_of!(ffi::stderr).read(),
            _ => return,
        };
        if stream.is_null() {
            return;
        }
        libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), stream);
        libc::fflush(stream);
    }
}
