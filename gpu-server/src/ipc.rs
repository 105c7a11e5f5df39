//! IPC handles between the sessions of one server (`cuIpcGetMemHandle`,
//! `cuIpcGetEventHandle` and their opening).
//!
//! Each session runs in a worker process of its own, so the driver's own IPC
//! serves sessions of one server as it serves processes of one machine. What
//! the program gets is not the driver's handle but gpupool's: it names this
//! server's run and an entry in the registry, a folder under the server's
//! state folder where the exporting worker leaves the driver's handle. The
//! opening worker reads it there, so:
//! - a handle made by another server (or an earlier run of this one) is
//!   told apart from one whose memory is gone, and the driver never sees
//!   bytes another machine's driver made;
//! - an entry can only be found by its 128-bit secret, which only the
//!   program the handle was given to holds.
//!
//! Layout of a gpupool handle (64 bytes):
//! `magic (8) | run of the server (8) | exporting session (8, LE) |
//! secret (16) | zeros (24)`; the magic's last byte says what it names
//! ([`Kind`]). Entries live at `<registry>/<session>/<secret in hex>` and hold
//! the kind and the driver's handle; a session's folder goes when the
//! session ends, whether its worker exits or dies.

use gpupool_proto::message::IPC_HANDLE_LEN;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use thiserror::Error;

/// The first seven bytes of every gpupool IPC handle.
const MAGIC: &[u8; 7] = b"gpupool";
/// Name of the file that holds the server run's identity.
const RUN_FILE: &str = "run";

/// What a handle names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Memory = 1,
    Event = 2,
    /// Physical memory (`cuMemExportToShareableHandle`): the entry holds
    /// its size and device; the file descriptor itself is handed over by
    /// the exporting worker ([`fd_socket_name`]).
    Physical = 3,
    /// A memory pool (`cuMemPoolExportToShareableHandle`): the entry holds
    /// its device; the descriptor is handed over as a physical memory's is.
    Pool = 4,
    /// An allocation of an exported pool (`cuMemPoolExportPointer`): the
    /// entry holds the driver's export data.
    PoolPointer = 5,
}

/// The abstract Unix socket on which the worker of `session` hands over the
/// file descriptors it exported, in the server run `run`.
pub fn fd_socket_name(run: &[u8; 8], session: u64) -> String {
    format!("gpupool-{}-{session}-fds", hex(run))
}

/// Why a handle cannot be opened here.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum OpenError {
    #[error("not a gpupool IPC handle")]
    Foreign,
    #[error("the handle names {found:?}, not {wanted:?}")]
    WrongKind { wanted: Kind, found: Kind },
    #[error("the handle was made by another server, or by an earlier run of this one")]
    OtherServer,
    #[error("what the handle named is gone (freed, or its session ended)")]
    Gone,
    #[error("the IPC registry cannot be read: {0}")]
    Io(String),
}

/// The registry of one server run.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
    run: [u8; 8],
}

fn random<const N: usize>() -> std::io::Result<[u8; N]> {
    let mut out = [0u8; N];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut out)?;
    Ok(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Registry {
    /// The daemon's, at start: a fresh registry in `dir`, with a new run
    /// identity; what an earlier run left there is removed.
    pub fn create(dir: &Path) -> std::io::Result<Registry> {
        match std::fs::remove_dir_all(dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(dir)?;
        let run = random::<8>()?;
        std::fs::write(dir.join(RUN_FILE), run)?;
        Ok(Registry {
            dir: dir.to_path_buf(),
            run,
        })
    }

    /// A worker's: the registry its daemon made in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Registry> {
        let bytes = std::fs::read(dir.join(RUN_FILE))?;
        let run = bytes
            .try_into()
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "the registry's run file is damaged"))?;
        Ok(Registry {
            dir: dir.to_path_buf(),
            run,
        })
    }

    /// This server run's identity.
    pub fn run(&self) -> &[u8; 8] {
        &self.run
    }

    /// The secret a gpupool handle carries (after checking it is one of
    /// this run's).
    pub fn secret_of(&self, ours: &[u8]) -> Result<[u8; 16], OpenError> {
        self.parse(ours).map(|(_, secret, _)| secret)
    }

    fn session_dir(&self, session: u64) -> PathBuf {
        self.dir.join(session.to_string())
    }

    /// File the driver's `handle` for `kind` under `session` and give the
    /// gpupool handle that names it.
    pub fn export(
        &self,
        session: u64,
        kind: Kind,
        handle: &[u8; IPC_HANDLE_LEN],
    ) -> std::io::Result<[u8; IPC_HANDLE_LEN]> {
        let secret = random::<16>()?;
        let dir = self.session_dir(session);
        std::fs::create_dir_all(&dir)?;
        let name = hex(&secret);
        // Written whole under another name, then renamed: an opener never
        // reads half an entry.
        let partial = dir.join(format!(".{name}"));
        let mut f = std::fs::File::create(&partial)?;
        f.write_all(&[kind as u8])?;
        f.write_all(handle)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&partial, dir.join(&name))?;
        let mut out = [0u8; IPC_HANDLE_LEN];
        out[..7].copy_from_slice(MAGIC);
        out[7] = kind as u8;
        out[8..16].copy_from_slice(&self.run);
        out[16..24].copy_from_slice(&session.to_le_bytes());
        out[24..40].copy_from_slice(&secret);
        Ok(out)
    }

    /// The driver's handle that the gpupool handle `ours` names, with the
    /// session that made it.
    pub fn lookup(&self, ours: &[u8], wanted: Kind) -> Result<(u64, [u8; IPC_HANDLE_LEN]), OpenError> {
        let (session, secret, kind) = self.parse(ours)?;
        if kind != wanted {
            return Err(OpenError::WrongKind { wanted, found: kind });
        }
        let path = self.session_dir(session).join(hex(&secret));
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(OpenError::Gone),
            Err(e) => return Err(OpenError::Io(e.to_string())),
        };
        if bytes.len() != 1 + IPC_HANDLE_LEN || bytes[0] != kind as u8 {
            return Err(OpenError::Io("a damaged entry".into()));
        }
        let mut handle = [0u8; IPC_HANDLE_LEN];
        handle.copy_from_slice(&bytes[1..]);
        Ok((session, handle))
    }

    /// Remove the entry the gpupool handle `ours` names (what it named is
    /// being freed).
    pub fn withdraw(&self, ours: &[u8]) {
        if let Ok((session, secret, _)) = self.parse(ours) {
            let _ = std::fs::remove_file(self.session_dir(session).join(hex(&secret)));
        }
    }

    /// Remove every entry of `session` (it ended).
    pub fn remove_session(&self, session: u64) {
        match std::fs::remove_dir_all(self.session_dir(session)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(session, "cannot remove the session's IPC entries: {e}"),
        }
    }

    fn parse(&self, ours: &[u8]) -> Result<(u64, [u8; 16], Kind), OpenError> {
        if ours.len() != IPC_HANDLE_LEN || &ours[..7] != MAGIC || ours[40..].iter().any(|&b| b != 0) {
            return Err(OpenError::Foreign);
        }
        let kind = match ours[7] {
            1 => Kind::Memory,
            2 => Kind::Event,
            3 => Kind::Physical,
            4 => Kind::Pool,
            5 => Kind::PoolPointer,
            _ => return Err(OpenError::Foreign),
        };
        if ours[8..16] != self.run {
            return Err(OpenError::OtherServer);
        }
        let session = u64::from_le_bytes(ours[16..24].try_into().expect("8 bytes"));
        let secret: [u8; 16] = ours[24..40].try_into().expect("16 bytes");
        Ok((session, secret, kind))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gpupool-ipc-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn handles_open_on_their_run_and_no_other() {
        let dir = scratch("runs");
        let daemon = Registry::create(&dir).unwrap();
        let worker = Registry::open(&dir).unwrap();
        let driver: [u8; 64] = std::array::from_fn(|i| i as u8 ^ 0x5a);
        let h = worker.export(7, Kind::Memory, &driver).unwrap();
        assert_eq!(&h[..7], MAGIC);
        assert_eq!(daemon.lookup(&h, Kind::Memory), Ok((7, driver)));
        assert_eq!(
            daemon.lookup(&h, Kind::Event),
            Err(OpenError::WrongKind {
                wanted: Kind::Event,
                found: Kind::Memory
            })
        );
        // Another handle for the same thing has its own secret.
        let h2 = worker.export(7, Kind::Memory, &driver).unwrap();
        assert_ne!(h, h2);
        // A guessed secret finds nothing.
        let mut guessed = h;
        guessed[30] ^= 1;
        assert_eq!(daemon.lookup(&guessed, Kind::Memory), Err(OpenError::Gone));
        // The driver's own bytes, or a damaged tail, are not ours.
        assert_eq!(daemon.lookup(&driver, Kind::Memory), Err(OpenError::Foreign));
        let mut tail = h;
        tail[63] = 1;
        assert_eq!(daemon.lookup(&tail, Kind::Memory), Err(OpenError::Foreign));
        assert_eq!(daemon.lookup(&h[..32], Kind::Memory), Err(OpenError::Foreign));
        // A new run of the server does not know the old run's handles.
        let restarted = Registry::create(&dir).unwrap();
        assert_eq!(restarted.lookup(&h, Kind::Memory), Err(OpenError::OtherServer));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn entries_go_when_withdrawn_or_when_their_session_ends() {
        let dir = scratch("ends");
        let reg = Registry::create(&dir).unwrap();
        let a = reg.export(1, Kind::Memory, &[1; 64]).unwrap();
        let b = reg.export(1, Kind::Event, &[2; 64]).unwrap();
        let c = reg.export(2, Kind::Memory, &[3; 64]).unwrap();
        reg.withdraw(&a);
        assert_eq!(reg.lookup(&a, Kind::Memory), Err(OpenError::Gone));
        assert_eq!(reg.lookup(&b, Kind::Event), Ok((1, [2; 64])));
        reg.remove_session(1);
        assert_eq!(reg.lookup(&b, Kind::Event), Err(OpenError::Gone));
        assert_eq!(reg.lookup(&c, Kind::Memory), Ok((2, [3; 64])));
        // Pools and their allocations' export data are kinds of their own.
        let pool = reg.export(2, Kind::Pool, &[4; 64]).unwrap();
        let data = reg.export(2, Kind::PoolPointer, &[5; 64]).unwrap();
        assert_eq!(reg.lookup(&pool, Kind::Pool), Ok((2, [4; 64])));
        assert_eq!(reg.lookup(&data, Kind::PoolPointer), Ok((2, [5; 64])));
        assert!(matches!(
            reg.lookup(&data, Kind::Pool),
            Err(OpenError::WrongKind { .. })
        ));
        // Removing what is already gone is not an error.
        reg.remove_session(1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
