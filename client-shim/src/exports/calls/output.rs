//! What the server's driver wrote for the program (`Reply::Output`): a
//! kernel's `printf` output, which a local driver prints on the program's
//! standard output when the host synchronises. It goes through the C
//! library's `stdout` stream, as the driver's own does, so it keeps its
//! place among the program's own `printf` lines, and is flushed at once.

/// glibc's standard output stream.
mod ffi {
    extern "C" {
        pub static mut stdout: *mut libc::FILE;
    }
}

/// Write the bytes to the program's standard output (fd 1; nothing else
/// is sent).
pub(crate) fn write_output(fd: u8, bytes: &[u8]) {
    if fd != 1 || bytes.is_empty() {
        return;
    }
    // SAFETY: reading glibc's `stdout` pointer, which it sets before any
    // program code runs; writing `bytes.len()` bytes from a live slice and
    // flushing through the stream's own lock.
    unsafe {
        let stream = std::ptr::addr_of!(ffi::stdout).read();
        if stream.is_null() {
            return;
        }
        libc::fwrite(bytes.as_ptr().cast(), 1, bytes.len(), stream);
        libc::fflush(stream);
    }
}
