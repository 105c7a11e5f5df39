//! Passing a file descriptor between the server's workers over a Unix
//! socket (`SCM_RIGHTS`): how physical memory one session exported as a
//! file descriptor (`cuMemExportToShareableHandle`) reaches the worker of
//! the session that imports it. The sockets are abstract (no file to clean
//! up, no path length limit), named by `ipc::fd_socket_name`.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixListener, UnixStream};
use std::time::Duration;

/// How long either side waits for the other.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Listen on the abstract socket `name`.
pub fn listen(name: &str) -> std::io::Result<UnixListener> {
    UnixListener::bind_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)
}

/// Answer one request on `conn`: it sends a 16-byte key; the reply is one
/// byte, 1 with the descriptor `find(key)` gives attached, 0 without.
pub fn answer(mut conn: UnixStream, find: impl FnOnce(&[u8; 16]) -> Option<OwnedFd>) -> std::io::Result<()> {
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    let mut key = [0u8; 16];
    conn.read_exact(&mut key)?;
    match find(&key) {
        Some(fd) => send_fd(&conn, fd.as_raw_fd()),
        None => conn.write_all(&[0]),
    }
}

/// Ask the socket `name` for the descriptor filed under `key`.
pub fn fetch(name: &str, key: &[u8; 16]) -> std::io::Result<Option<OwnedFd>> {
    let mut conn = UnixStream::connect_addr(&SocketAddr::from_abstract_name(name.as_bytes())?)?;
    conn.set_read_timeout(Some(TIMEOUT))?;
    conn.set_write_timeout(Some(TIMEOUT))?;
    conn.write_all(key)?;
    recv_fd(&conn)
}

/// Room for one descriptor's control message.
const CMSG_ROOM: usize = 64;

/// A message of the one byte `iov` names, with the control buffer
/// `control`, of which `controllen` bytes are used.
fn message(iov: &mut libc::iovec, control: &mut [u8; CMSG_ROOM], controllen: usize) -> libc::msghdr {
    // SAFETY: a zeroed msghdr is a valid empty message; its buffers are set
    // below to the caller's, which outlive its use.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = controllen;
    msg
}

fn send_fd(conn: &UnixStream, fd: RawFd) -> std::io::Result<()> {
    let mut byte = [1u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u8; CMSG_ROOM];
    // SAFETY: CMSG_SPACE only computes a size.
    let space = unsafe { libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) } as usize;
    let msg = message(&mut iov, &mut control, space);
    // SAFETY: the control buffer has room for one header and one
    // descriptor (CMSG_SPACE of it, which CMSG_ROOM exceeds); CMSG_FIRSTHDR
    // points into it, and the descriptor is written into its data.
    unsafe {
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
    }
    // SAFETY: msg describes the local buffers above; the socket is open.
    let n = unsafe { libc::sendmsg(conn.as_raw_fd(), &msg, 0) };
    if n != 1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

fn recv_fd(conn: &UnixStream) -> std::io::Result<Option<OwnedFd>> {
    let mut byte = [0u8];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut control = [0u8; CMSG_ROOM];
    let mut msg = message(&mut iov, &mut control, CMSG_ROOM);
    // SAFETY: msg describes the local buffers above; descriptors received
    // are closed on exec.
    let n = unsafe { libc::recvmsg(conn.as_raw_fd(), &mut msg, libc::MSG_CMSG_CLOEXEC) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if n == 0 || byte[0] == 0 {
        return Ok(None);
    }
    // SAFETY: the kernel filled msg's control buffer; each header it holds
    // lies inside it, and an SCM_RIGHTS one carries a descriptor now ours.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let fd = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>());
                return Ok(Some(OwnedFd::from_raw_fd(fd)));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_descriptor_travels_by_key_and_an_unknown_key_gets_none() {
        let name = format!("gpupool-test-fdpass-{}", std::process::id());
        let listener = listen(&name).unwrap();
        let file = tempfile_fd();
        let raw = file.as_raw_fd();
        let served = std::thread::spawn(move || {
            for _ in 0..2 {
                let (conn, _) = listener.accept().unwrap();
                answer(conn, |k| {
                    // SAFETY: `raw` is the test file's, open for the test.
                    (k == &[7u8; 16]).then(|| {
                        unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) }
                            .try_clone_to_owned()
                            .unwrap()
                    })
                })
                .unwrap();
            }
        });
        let got = fetch(&name, &[7u8; 16]).unwrap().expect("a descriptor");
        let a = std::fs::File::from(got).metadata().unwrap();
        let b = std::fs::File::from(file.try_clone().unwrap()).metadata().unwrap();
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()), "the same file");
        assert!(fetch(&name, &[8u8; 16]).unwrap().is_none());
        served.join().unwrap();
        drop(file);
    }

    fn tempfile_fd() -> OwnedFd {
        let path = std::env::temp_dir().join(format!("gpupool-fdpass-{}", std::process::id()));
        let f = std::fs::File::create(&path).unwrap();
        let _ = std::fs::remove_file(&path);
        OwnedFd::from(f)
    }
}
