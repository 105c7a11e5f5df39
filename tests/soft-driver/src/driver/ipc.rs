//! Memory and events shared between processes (`cuIpc*`), as the double
//! models them.
//!
//! - **Memory.** The first handle made for an allocation moves it onto a
//!   shared-memory file, at the same address and with the same contents;
//!   the handle names the process and the file's descriptor, and another
//!   process opens it through `/proc/<pid>/fd`, mapping the very same
//!   pages. Opening a handle again in one process answers the mapping it
//!   already has (counted; each open is closed once).
//! - **Events.** Work here runs when it is enqueued, so an event is done
//!   once recorded; an interprocess event's record also waits for the copy
//!   engine, so that what it stands for is done before any process can see
//!   it. An opened event is therefore always complete: waiting on it,
//!   synchronising or querying it succeeds at once.
//! - A process cannot open a handle it made (`CUDA_ERROR_INVALID_CONTEXT`,
//!   as the driver answers).
//!
//! - **Pools** (`cuMemPoolExportToShareableHandle` of a file descriptor):
//!   the descriptor is a small memory file holding a handle that names the
//!   process and its pool. An allocation's export data
//!   (`cuMemPoolExportPointer`) moves it onto a shared-memory file as a
//!   memory handle does, and names the pool too; the importing process
//!   maps it through `/proc/<pid>/fd` (`cuMemPoolImportPointer`) and frees
//!   it with `cuMemFree(Async)`. Nothing is allocated from an imported pool.
//!
//! The double's own handle (64 bytes): `b"softipc"`, the kind (1 memory, 2
//! event, 3 pool, 4 pool allocation), the process id (4 bytes), the
//! descriptor (4), the allocation's base, the event or the pool (8), the
//! mapping's length or the pool's device (8), the pool of an allocation (8),
//! zeros.

use super::*;
use std::os::fd::{AsRawFd, OwnedFd};

const MAGIC: &[u8; 7] = b"softipc";
const KIND_MEMORY: u8 = 1;
const KIND_EVENT: u8 = 2;
const KIND_POOL: u8 = 3;
const KIND_POOL_POINTER: u8 = 4;
/// `CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS`.
const LAZY_ENABLE_PEER_ACCESS: u32 = 1;

pub type IpcHandle = [u8; 64];

/// What this process shares and has opened.
#[derive(Default)]
pub(super) struct Ipc {
    /// Allocations moved onto shared memory: base -> the file.
    exports: HashMap<u64, OwnedFd>,
    /// Other processes' allocations opened here: (pid, base) -> (address
    /// here, opens not yet closed).
    opened: HashMap<(u32, u64), (u64, u32)>,
}

struct Parsed {
    kind: u8,
    pid: u32,
    fd: i32,
    id: u64,
    len: u64,
    /// The pool of an allocation's export data.
    pool: u64,
}

fn pack(kind: u8, fd: i32, id: u64, len: u64) -> IpcHandle {
    let mut h = [0u8; 64];
    h[..7].copy_from_slice(MAGIC);
    h[7] = kind;
    h[8..12].copy_from_slice(&std::process::id().to_le_bytes());
    h[12..16].copy_from_slice(&fd.to_le_bytes());
    h[16..24].copy_from_slice(&id.to_le_bytes());
    h[24..32].copy_from_slice(&len.to_le_bytes());
    h
}

fn parse(h: &IpcHandle, kind: u8) -> CuResult<Parsed> {
    let tail = if kind == KIND_POOL_POINTER { 40 } else { 32 };
    if &h[..7] != MAGIC || h[7] != kind || h[tail..].iter().any(|&b| b != 0) {
        return Err(CUDA_ERROR_INVALID_VALUE);
    }
    let word = |r: std::ops::Range<usize>| -> u64 {
        let mut b = [0u8; 8];
        b[..r.len()].copy_from_slice(&h[r]);
        u64::from_le_bytes(b)
    };
    let p = Parsed {
        kind,
        pid: word(8..12) as u32,
        fd: word(12..16) as u32 as i32,
        id: word(16..24),
        len: word(24..32),
        pool: word(32..40),
    };
    if p.pid == std::process::id() {
        return Err(CUDA_ERROR_INVALID_CONTEXT);
    }
    Ok(p)
}

/// A memory file holding `bytes`, closed on exec.
fn memory_file(bytes: &[u8]) -> std::io::Result<OwnedFd> {
    use std::io::Write;
    use std::os::fd::FromRawFd;
    // SAFETY: memfd_create takes a NUL-terminated name and flags.
    let fd = unsafe { libc::memfd_create(c"softcuda-pool".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just made and is owned here alone.
    let mut file = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    file.write_all(bytes)?;
    Ok(file.into())
}

impl Driver {
    /// `cuIpcGetMemHandle`: for the `cuMemAlloc` allocation holding `dptr`.
    pub fn ipc_get_mem_handle(&mut self, dptr: u64) -> CuResult<IpcHandle> {
        self.active_ctx()?;
        let (base, alloc) = self.allocs.containing(dptr, 1).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if alloc.kind != AllocKind::Device || self.pool_allocs.contains_key(&base) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let (fd, len) = self.share_allocation(base)?;
        Ok(pack(KIND_MEMORY, fd, base, len))
    }

    /// The allocation at `base` on a shared-memory file (moved there at
    /// the first call): the file's descriptor and the mapping's length.
    fn share_allocation(&mut self, base: u64) -> CuResult<(i32, u64)> {
        let alloc = self.allocs.get_mut(base).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let len = alloc.mapping.bytes() as u64;
        if !self.ipc.exports.contains_key(&base) {
            engine::drain();
            let alloc = self.allocs.get_mut(base).ok_or(CUDA_ERROR_INVALID_VALUE)?;
            // SAFETY: the driver lock is held and the copy engine drained,
            // so nothing touches the allocation while it moves.
            let fd = unsafe { alloc.mapping.share() }.ok_or(CUDA_ERROR_OUT_OF_MEMORY)?;
            self.ipc.exports.insert(base, fd);
        }
        Ok((self.ipc.exports[&base].as_raw_fd(), len))
    }

    /// `cuMemPoolExportToShareableHandle` as a file descriptor (the
    /// caller's to close), for a pool made exportable so.
    pub fn mem_pool_export_fd(&mut self, pool: u64, handle_type: u32) -> CuResult<i32> {
        let p = self.pools.get(&pool).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        if handle_type != HANDLE_TYPE_POSIX_FD {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        if p.handle_types & HANDLE_TYPE_POSIX_FD == 0 || p.imported.is_some() {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let h = pack(KIND_POOL, -1, pool, p.device as u64);
        let file = memory_file(&h).map_err(|_| CUDA_ERROR_OUT_OF_MEMORY)?;
        Ok(std::os::fd::IntoRawFd::into_raw_fd(file))
    }

    /// `cuMemPoolImportFromShareableHandle` of a descriptor another
    /// process's `mem_pool_export_fd` made (the caller keeps its
    /// descriptor).
    pub fn mem_pool_import_fd(&mut self, fd: i32, handle_type: u32) -> CuResult<u64> {
        if handle_type != HANDLE_TYPE_POSIX_FD {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let mut h = [0u8; 64];
        // SAFETY: reads into the local buffer from the caller's descriptor;
        // a bad descriptor fails.
        let n = unsafe { libc::pread(fd, h.as_mut_ptr().cast(), h.len(), 0) };
        if n != h.len() as isize {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let p = parse(&h, KIND_POOL)?;
        let device = usize::try_from(p.len).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        self.device(i32::try_from(device).map_err(|_| CUDA_ERROR_INVALID_VALUE)?)?;
        let pool = self.new_pool(device, true, 0);
        self.pool_mut(pool)?.imported = Some((p.pid, p.id));
        Ok(pool)
    }

    /// `cuMemPoolExportPointer` of an allocation from an exportable pool.
    pub fn mem_pool_export_pointer(&mut self, ptr: u64) -> CuResult<IpcHandle> {
        let pool = *self.pool_allocs.get(&ptr).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let exportable = self
            .pools
            .get(&pool)
            .map(|p| p.handle_types & HANDLE_TYPE_POSIX_FD != 0);
        if exportable != Some(true) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let (fd, len) = self.share_allocation(ptr)?;
        let mut h = pack(KIND_POOL_POINTER, fd, ptr, len);
        h[32..40].copy_from_slice(&pool.to_le_bytes());
        Ok(h)
    }

    /// `cuMemPoolImportPointer`: map the allocation `data` names, from the
    /// process and pool that `pool` was imported from.
    pub fn mem_pool_import_pointer(&mut self, pool: u64, data: &IpcHandle) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        let from = self.pools.get(&pool).ok_or(CUDA_ERROR_INVALID_VALUE)?.imported;
        let p = parse(data, KIND_POOL_POINTER)?;
        if from != Some((p.pid, p.pool)) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let len = usize::try_from(p.len).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        let path = std::path::PathBuf::from(format!("/proc/{}/fd/{}", p.pid, p.fd));
        let mapping = Mapping::open_shared(&path, len).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        Ok(self.allocs.insert(Allocation {
            size: p.len,
            charged: 0,
            ctx,
            device: self.ctx_device(ctx),
            kind: AllocKind::PoolImported { pid: p.pid, base: p.id },
            mapping,
        }))
    }

    /// `cuIpcOpenMemHandle`: map another process's allocation here.
    pub fn ipc_open_mem_handle(&mut self, handle: &IpcHandle, flags: u32) -> CuResult<u64> {
        let ctx = self.active_ctx()?;
        if flags & !LAZY_ENABLE_PEER_ACCESS != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let p = parse(handle, KIND_MEMORY)?;
        if let Some((addr, count)) = self.ipc.opened.get_mut(&(p.pid, p.id)) {
            *count += 1;
            return Ok(*addr);
        }
        let len = usize::try_from(p.len).map_err(|_| CUDA_ERROR_INVALID_VALUE)?;
        let path = std::path::PathBuf::from(format!("/proc/{}/fd/{}", p.pid, p.fd));
        let mapping = Mapping::open_shared(&path, len).map_err(|_| CUDA_ERROR_MAP_FAILED)?;
        let addr = self.allocs.insert(Allocation {
            size: p.len,
            charged: 0,
            ctx,
            device: self.ctx_device(ctx),
            kind: AllocKind::Opened { pid: p.pid, base: p.id },
            mapping,
        });
        self.ipc.opened.insert((p.pid, p.id), (addr, 1));
        debug_assert_eq!(p.kind, KIND_MEMORY);
        Ok(addr)
    }

    /// `cuIpcCloseMemHandle`.
    pub fn ipc_close_mem_handle(&mut self, dptr: u64) -> CuResult<()> {
        self.active_ctx()?;
        let Some(AllocKind::Opened { pid, base }) = self.allocs.get(dptr).map(|a| a.kind) else {
            return Err(CUDA_ERROR_INVALID_VALUE);
        };
        let entry = self.ipc.opened.get_mut(&(pid, base)).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        entry.1 -= 1;
        if entry.1 == 0 {
            self.ipc.opened.remove(&(pid, base));
            self.allocs.remove(dptr);
        }
        Ok(())
    }

    /// `cuIpcGetEventHandle`: for an interprocess event.
    pub fn ipc_get_event_handle(&mut self, event: u64) -> CuResult<IpcHandle> {
        let e = self.events.get(&event).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        if e.flags & EVENT_INTERPROCESS == 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        Ok(pack(KIND_EVENT, -1, event, 0))
    }

    /// `cuIpcOpenEventHandle`: an event of this process standing for
    /// another's (always complete here, see above).
    pub fn ipc_open_event_handle(&mut self, handle: &IpcHandle) -> CuResult<u64> {
        parse(handle, KIND_EVENT)?;
        self.event_create(EVENT_DISABLE_TIMING | EVENT_INTERPROCESS)
    }

    /// Forget what names allocations that are gone (freed, or their
    /// context destroyed).
    pub(super) fn ipc_forget_gone(&mut self) {
        let allocs = &self.allocs;
        self.ipc.exports.retain(|base, _| allocs.get(*base).is_some());
        self.ipc.opened.retain(|_, (addr, _)| allocs.get(*addr).is_some());
    }
}
