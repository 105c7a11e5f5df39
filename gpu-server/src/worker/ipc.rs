//! Memory and events shared between sessions of this server
//! (`cuIpcGetMemHandle`, `cuIpcOpenMemHandle`, `cuIpcCloseMemHandle`,
//! `cuIpcGetEventHandle`, `cuIpcOpenEventHandle`). The driver's own IPC
//! does the work, since each session is a process of its own; the handles
//! the client sees are gpupool's, filed in the server's registry
//! (`crate::ipc`). Only this session's allocations and interprocess events
//! are exported; memory opened here is checked like the session's own until
//! it is closed.

use super::*;
use crate::driver::IpcHandle;
use crate::ipc::{Kind, OpenError};
use gpupool_proto::message::IPC_HANDLE_LEN;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// `CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS`, the only flag.
const IPC_LAZY_ENABLE_PEER_ACCESS: u32 = 1;
/// `CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS`: what an event opened
/// from a handle is.
const OPENED_EVENT_FLAGS: u32 = 0x2 | 0x4;

/// What the session's IPC holds, beyond its tables.
#[derive(Default)]
pub(super) struct Shared {
    /// This session's allocations it made handles for: base -> handle (a
    /// second `cuIpcGetMemHandle` answers the same handle).
    memory: HashMap<u64, [u8; IPC_HANDLE_LEN]>,
    /// Its events it made handles for.
    events: HashMap<Handle, [u8; IPC_HANDLE_LEN]>,
    /// Memory of other sessions opened here: base -> opens not yet closed.
    opened: HashMap<u64, u32>,
    /// Events of other sessions opened here (they go with `EventDestroy`).
    opened_events: HashSet<Handle>,
    /// Physical memory exported as a file descriptor: handle -> the handle
    /// the client got.
    physical: HashMap<Handle, [u8; IPC_HANDLE_LEN]>,
    /// Pools exported as a file descriptor: pool -> the handle the client
    /// got.
    pools: HashMap<Handle, [u8; IPC_HANDLE_LEN]>,
    /// Allocations of exported pools whose export data the client got:
    /// base -> handle.
    pool_pointers: HashMap<u64, [u8; IPC_HANDLE_LEN]>,
    /// The exported descriptors by their handles' secrets, which this
    /// worker's socket hands over (`crate::fdpass`); started at the first
    /// export.
    fds: Option<FdTable>,
}

/// `CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR`.
pub(super) const HANDLE_TYPE_POSIX_FD: u32 = 1;

/// Exported descriptors by their handles' secrets, shared with the thread
/// that hands them over.
type FdTable = Arc<Mutex<HashMap<[u8; 16], OwnedFd>>>;

fn open_error(e: &OpenError) -> Status {
    match e {
        OpenError::Foreign | OpenError::WrongKind { .. } => INVALID_VALUE,
        OpenError::OtherServer => NOT_SUPPORTED,
        OpenError::Gone | OpenError::Io(_) => INVALID_HANDLE,
    }
}

impl Worker<'_> {
    fn registry(&self) -> DriverResult<&crate::ipc::Registry> {
        self.ipc.as_ref().ok_or_else(|| {
            tracing::warn!("IPC asked for, but this server has no IPC registry");
            NOT_SUPPORTED
        })
    }

    /// File the driver's handle of `kind` in the registry: gpupool's handle.
    fn file(&self, kind: Kind, driver_handle: &IpcHandle) -> DriverResult<[u8; IPC_HANDLE_LEN]> {
        self.registry()?
            .export(self.session_id, kind, &driver_handle.reserved)
            .map_err(|e| {
                tracing::warn!("cannot file an IPC handle: {e}");
                OUT_OF_MEMORY
            })
    }

    /// The driver's handle that gpupool's handle `ours` of `kind` names,
    /// with the session that made it.
    fn find(&self, ours: &[u8], kind: Kind) -> DriverResult<(u64, IpcHandle)> {
        let (exporter, reserved) = self.registry()?.lookup(ours, kind).map_err(|e| {
            tracing::warn!("cannot open an IPC {kind:?} handle: {e}");
            open_error(&e)
        })?;
        Ok((exporter, IpcHandle { reserved }))
    }

    /// `cuIpcGetMemHandle` for the allocation holding `ptr`.
    pub(super) fn ipc_get_mem_handle(&mut self, ctx: Handle, ptr: u64) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        let (base, region) = self.tables.region_at(ptr).ok_or(INVALID_VALUE)?;
        if region.kind != RegionKind::Allocated {
            return Err(INVALID_VALUE);
        }
        if let Some(h) = self.shared.memory.get(&base) {
            return Ok(Reply::Bytes(h.to_vec()));
        }
        let mut driver_handle = IpcHandle { reserved: [0; 64] };
        // SAFETY: base is an allocation of this client; the handle is writable.
        unsafe { self.driver.cuIpcGetMemHandle(&mut driver_handle, base) }?;
        let ours = self.file(Kind::Memory, &driver_handle)?;
        self.shared.memory.insert(base, ours);
        Ok(Reply::Bytes(ours.to_vec()))
    }

    /// `cuIpcOpenMemHandle` in `ctx`: the base and size of the mapping.
    pub(super) fn ipc_open_mem_handle(&mut self, ctx: Handle, ours: &[u8], flags: u32) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        if flags & !IPC_LAZY_ENABLE_PEER_ACCESS != 0 {
            return Err(INVALID_VALUE);
        }
        let (exporter, driver_handle) = self.find(ours, Kind::Memory)?;
        let mut p = 0u64;
        // SAFETY: the handle is one the driver made for a session of this
        // server; p is writable.
        unsafe { self.driver.cuIpcOpenMemHandle_v2(&mut p, driver_handle, flags) }?;
        let (mut base, mut size) = (0u64, 0usize);
        // SAFETY: p was just mapped by the driver; both outputs are writable.
        let range = unsafe { self.driver.cuMemGetAddressRange_v2(&mut base, &mut size, p) };
        if range.is_err() || base != p || size == 0 {
            // SAFETY: p was opened above.
            let _ = unsafe { self.driver.cuIpcCloseMemHandle(p) };
            return Err(range.err().unwrap_or(INVALID_HANDLE));
        }
        let size = size as u64;
        match self.tables.memory.get(&p) {
            // The driver answers a second open of the same memory with the
            // same mapping.
            Some(r) if r.kind == RegionKind::Opened && r.ctx == ctx && r.size == size => {}
            _ => {
                let region = Region {
                    size,
                    ctx,
                    kind: RegionKind::Opened,
                };
                if self.tables.add_region(p, region).is_err() {
                    tracing::error!(ptr = p, size, "driver mapped IPC memory over memory the session holds");
                    // SAFETY: p was opened above.
                    let _ = unsafe { self.driver.cuIpcCloseMemHandle(p) };
                    return Err(INVALID_VALUE);
                }
            }
        }
        *self.shared.opened.entry(p).or_insert(0) += 1;
        tracing::debug!(ptr = p, size, exporter, "opened another session's memory");
        Ok(Reply::Global { ptr: p, size })
    }

    /// `cuIpcCloseMemHandle`: the base of memory opened here.
    pub(super) fn ipc_close_mem_handle(&mut self, ctx: Handle, ptr: u64) -> DriverResult {
        self.make_current(ctx)?;
        let count = self.shared.opened.get_mut(&ptr).ok_or(INVALID_VALUE)?;
        *count -= 1;
        if *count == 0 {
            self.shared.opened.remove(&ptr);
            self.tables.memory.remove(&ptr);
        }
        // SAFETY: ptr is memory this session opened and has not closed.
        unsafe { self.driver.cuIpcCloseMemHandle(ptr) }
    }

    /// `cuIpcGetEventHandle` for an interprocess event of this session.
    pub(super) fn ipc_get_event_handle(&mut self, ctx: Handle, event: Handle) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        self.check_event(event)?;
        if let Some(h) = self.shared.events.get(&event) {
            return Ok(Reply::Bytes(h.to_vec()));
        }
        let mut driver_handle = IpcHandle { reserved: [0; 64] };
        // SAFETY: the event belongs to this client; the handle is writable.
        unsafe { self.driver.cuIpcGetEventHandle(&mut driver_handle, self.real(event)) }?;
        let ours = self.file(Kind::Event, &driver_handle)?;
        self.shared.events.insert(event, ours);
        Ok(Reply::Bytes(ours.to_vec()))
    }

    /// `cuIpcOpenEventHandle` in `ctx`, named `id` by the client.
    pub(super) fn ipc_open_event_handle(&mut self, ctx: Handle, ours: &[u8], id: Handle) -> DriverResult {
        self.make_current(ctx)?;
        self.check_new_name(id)?;
        if id == 0 {
            return Err(INVALID_VALUE);
        }
        let (exporter, driver_handle) = self.find(ours, Kind::Event)?;
        let mut e: Ptr = std::ptr::null_mut();
        // SAFETY: the handle is one the driver made for a session of this
        // server; e is writable.
        unsafe { self.driver.cuIpcOpenEventHandle(&mut e, driver_handle) }?;
        self.name_new(id, handle(e), ctx, false);
        self.shared.opened_events.insert(id);
        tracing::debug!(exporter, flags = OPENED_EVENT_FLAGS, "opened another session's event");
        Ok(())
    }

    /// The event `event` is being destroyed: its handle names nothing now.
    pub(super) fn ipc_forget_event(&mut self, event: Handle) {
        self.shared.opened_events.remove(&event);
        if let Some(h) = self.shared.events.remove(&event) {
            if let Some(r) = &self.ipc {
                r.withdraw(&h);
            }
        }
    }

    /// The allocation at `base` is being freed: its handles name nothing
    /// now.
    pub(super) fn ipc_forget_memory(&mut self, base: u64) {
        let handles = [
            self.shared.memory.remove(&base),
            self.shared.pool_pointers.remove(&base),
        ];
        for h in handles.into_iter().flatten() {
            if let Some(r) = &self.ipc {
                r.withdraw(&h);
            }
        }
    }

    /// Close what `ctx` opened (it is going).
    pub(super) fn ipc_close_context(&mut self, ctx: Handle) {
        let opened: Vec<(u64, u32)> = self
            .shared
            .opened
            .iter()
            .filter(|(p, _)| self.tables.memory.get(p).is_some_and(|r| r.ctx == ctx))
            .map(|(p, n)| (*p, *n))
            .collect();
        for (p, n) in opened {
            for _ in 0..n {
                // SAFETY: p is memory this session opened in ctx, current.
                let _ = unsafe { self.driver.cuIpcCloseMemHandle(p) };
            }
            self.shared.opened.remove(&p);
            self.tables.memory.remove(&p);
        }
    }

    /// The descriptors this worker hands over, its socket started at the
    /// first call.
    fn fd_table(&mut self) -> DriverResult<FdTable> {
        if let Some(t) = &self.shared.fds {
            return Ok(Arc::clone(t));
        }
        let name = crate::ipc::fd_socket_name(self.registry()?.run(), self.session_id);
        let listener = crate::fdpass::listen(&name).map_err(|e| {
            tracing::warn!("cannot listen for IPC descriptors on {name}: {e}");
            NOT_SUPPORTED
        })?;
        let table = FdTable::default();
        let served = Arc::clone(&table);
        std::thread::Builder::new()
            .name("ipc-fds".into())
            .spawn(move || {
                for conn in listener.incoming().flatten() {
                    // The table is locked only to look up, never while the
                    // other side is waited for.
                    let _ = crate::fdpass::answer(conn, |key| {
                        let t = served.lock().unwrap_or_else(|p| p.into_inner());
                        t.get(key).and_then(|f| f.try_clone().ok())
                    });
                }
            })
            .map_err(|_| NOT_SUPPORTED)?;
        self.shared.fds = Some(Arc::clone(&table));
        Ok(table)
    }

    /// File `entry` under `kind` and keep `fd` for the worker that opens
    /// it: gpupool's handle for both.
    fn export_fd(&mut self, kind: Kind, entry: &IpcHandle, fd: OwnedFd) -> DriverResult<[u8; IPC_HANDLE_LEN]> {
        let table = self.fd_table()?;
        let ours = self.file(kind, entry)?;
        let secret = self.registry()?.secret_of(&ours).map_err(|_| INVALID_VALUE)?;
        table.lock().unwrap_or_else(|p| p.into_inner()).insert(secret, fd);
        Ok(ours)
    }

    /// The entry and the descriptor gpupool's handle `ours` of `kind`
    /// names, the descriptor fetched from the exporting worker.
    fn fetch_fd(&self, ours: &[u8], kind: Kind) -> DriverResult<(IpcHandle, OwnedFd)> {
        let (exporter, entry) = self.find(ours, kind)?;
        let registry = self.registry()?;
        let secret = registry.secret_of(ours).map_err(|_| INVALID_VALUE)?;
        let name = crate::ipc::fd_socket_name(registry.run(), exporter);
        match crate::fdpass::fetch(&name, &secret) {
            Ok(Some(fd)) => Ok((entry, fd)),
            Ok(None) => Err(INVALID_HANDLE),
            Err(e) => {
                tracing::warn!(exporter, "cannot fetch an exported descriptor: {e}");
                Err(INVALID_HANDLE)
            }
        }
    }

    /// Stop handing over the descriptor of `ours` and withdraw its entry.
    fn withdraw_fd(&self, ours: &[u8; IPC_HANDLE_LEN]) {
        if let Some(r) = &self.ipc {
            if let (Ok(secret), Some(t)) = (r.secret_of(ours), &self.shared.fds) {
                t.lock().unwrap_or_else(|p| p.into_inner()).remove(&secret);
            }
            r.withdraw(ours);
        }
    }

    /// `cuMemExportToShareableHandle` (a file descriptor) of the session's
    /// physical memory `handle`: gpupool's handle, which names its size and
    /// device; the descriptor stays here, for the importing worker to fetch.
    pub(super) fn mem_export(&mut self, handle: Handle) -> DriverResult<Reply> {
        let (size, device) = *self.tables.physical.get(&handle).ok_or(INVALID_VALUE)?;
        if let Some(h) = self.shared.physical.get(&handle) {
            return Ok(Reply::Bytes(h.to_vec()));
        }
        let mut fd: i32 = -1;
        // SAFETY: the handle is physical memory of this client; the driver
        // writes a descriptor into fd.
        unsafe {
            self.driver
                .cuMemExportToShareableHandle((&mut fd as *mut i32).cast(), handle, HANDLE_TYPE_POSIX_FD, 0)
        }?;
        // SAFETY: the driver just made this descriptor for us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut entry = IpcHandle { reserved: [0; 64] };
        entry.reserved[..8].copy_from_slice(&size.to_le_bytes());
        entry.reserved[8..12].copy_from_slice(&device.to_le_bytes());
        let ours = self.export_fd(Kind::Physical, &entry, fd)?;
        self.shared.physical.insert(handle, ours);
        Ok(Reply::Bytes(ours.to_vec()))
    }

    /// `cuMemImportFromShareableHandle` of gpupool's handle `ours`: the
    /// descriptor fetched from the exporting worker, imported by the
    /// driver; the new handle is the session's physical memory.
    pub(super) fn mem_import(&mut self, ours: &[u8]) -> DriverResult<Reply> {
        let (entry, fd) = self.fetch_fd(ours, Kind::Physical)?;
        let size = u64::from_le_bytes(entry.reserved[..8].try_into().expect("8 bytes"));
        let device = i32::from_le_bytes(entry.reserved[8..12].try_into().expect("4 bytes"));
        let mut h = 0u64;
        // SAFETY: fd is a descriptor the driver exported for a session of
        // this server, open here; h is writable. The driver keeps what it
        // needs; the descriptor is closed after.
        unsafe {
            self.driver.cuMemImportFromShareableHandle(
                &mut h,
                fd.as_raw_fd() as usize as *mut c_void,
                HANDLE_TYPE_POSIX_FD,
            )
        }?;
        drop(fd);
        self.tables.physical.insert(h, (size, device));
        Ok(Reply::Pair(h as i64, device as i64))
    }

    /// `cuMemPoolExportToShareableHandle` (a file descriptor) of a pool the
    /// session made exportable: gpupool's handle, which names its device;
    /// the descriptor stays here, for the importing worker to fetch.
    pub(super) fn pool_export(&mut self, pool: Handle) -> DriverResult<Reply> {
        let device = self.tables.pools.get(&pool).ok_or(INVALID_VALUE)?.device;
        if let Some(h) = self.shared.pools.get(&pool) {
            return Ok(Reply::Bytes(h.to_vec()));
        }
        let mut fd: i32 = -1;
        // SAFETY: the pool is one this client may name; the driver writes a
        // descriptor into fd (or refuses a pool made without that type).
        unsafe {
            self.driver.cuMemPoolExportToShareableHandle(
                (&mut fd as *mut i32).cast(),
                as_ptr(pool),
                HANDLE_TYPE_POSIX_FD,
                0,
            )
        }?;
        // SAFETY: the driver just made this descriptor for us.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut entry = IpcHandle { reserved: [0; 64] };
        entry.reserved[..4].copy_from_slice(&device.to_le_bytes());
        let ours = self.export_fd(Kind::Pool, &entry, fd)?;
        self.shared.pools.insert(pool, ours);
        Ok(Reply::Bytes(ours.to_vec()))
    }

    /// `cuMemPoolImportFromShareableHandle` of gpupool's handle `ours`: the
    /// pool, imported by the driver from the exporting worker's descriptor,
    /// is the session's to name and to destroy.
    pub(super) fn pool_import(&mut self, ours: &[u8]) -> DriverResult<Reply> {
        let (entry, fd) = self.fetch_fd(ours, Kind::Pool)?;
        let device = i32::from_le_bytes(entry.reserved[..4].try_into().expect("4 bytes"));
        let mut pool: Ptr = std::ptr::null_mut();
        // SAFETY: fd is a descriptor the driver exported for a session of
        // this server, open here; pool is writable. The descriptor is closed
        // after.
        unsafe {
            self.driver.cuMemPoolImportFromShareableHandle(
                &mut pool,
                fd.as_raw_fd() as usize as *mut c_void,
                HANDLE_TYPE_POSIX_FD,
                0,
            )
        }?;
        drop(fd);
        self.tables
            .pools
            .insert(handle(pool), crate::tables::PoolEntry { created: true, device });
        Ok(Reply::Pair(handle(pool) as i64, device as i64))
    }

    /// `cuMemPoolExportPointer` of the session's allocation at `ptr` (from
    /// an exportable pool, as the driver checks): gpupool's handle for the
    /// driver's export data.
    pub(super) fn pool_export_pointer(&mut self, ctx: Handle, ptr: u64) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        match self.tables.memory.get(&ptr) {
            Some(r) if r.kind == RegionKind::Allocated => {}
            _ => return Err(INVALID_VALUE),
        }
        if let Some(h) = self.shared.pool_pointers.get(&ptr) {
            return Ok(Reply::Bytes(h.to_vec()));
        }
        let mut data = IpcHandle { reserved: [0; 64] };
        // SAFETY: ptr is an allocation of this client; data is writable.
        unsafe { self.driver.cuMemPoolExportPointer(&mut data, ptr) }?;
        let ours = self.file(Kind::PoolPointer, &data)?;
        self.shared.pool_pointers.insert(ptr, ours);
        Ok(Reply::Bytes(ours.to_vec()))
    }

    /// `cuMemPoolImportPointer` from the imported pool `pool`: the base and
    /// size of the allocation, which the session frees as its own.
    pub(super) fn pool_import_pointer(&mut self, ctx: Handle, pool: Handle, ours: &[u8]) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        self.check_pool(pool)?;
        let (exporter, mut data) = self.find(ours, Kind::PoolPointer)?;
        let mut p = 0u64;
        // SAFETY: the pool is one this client may name; data is export data
        // the driver made for a session of this server; p is writable.
        unsafe { self.driver.cuMemPoolImportPointer(&mut p, as_ptr(pool), &mut data) }?;
        let (mut base, mut size) = (0u64, 0usize);
        // SAFETY: p was just imported by the driver; both outputs are writable.
        let range = unsafe { self.driver.cuMemGetAddressRange_v2(&mut base, &mut size, p) };
        if range.is_err() || base != p || size == 0 {
            // SAFETY: p was imported above.
            let _ = unsafe { self.driver.cuMemFree_v2(p) };
            return Err(range.err().unwrap_or(INVALID_HANDLE));
        }
        let region = Region {
            size: size as u64,
            ctx,
            kind: RegionKind::Allocated,
        };
        if self.tables.add_region(p, region).is_err() {
            tracing::error!(
                ptr = p,
                size,
                "driver imported pool memory over memory the session holds"
            );
            // SAFETY: p was imported above.
            let _ = unsafe { self.driver.cuMemFree_v2(p) };
            return Err(INVALID_VALUE);
        }
        tracing::debug!(ptr = p, size, exporter, "imported another session's pool allocation");
        Ok(Reply::Global {
            ptr: p,
            size: size as u64,
        })
    }

    /// The pool `pool` is being destroyed: its handle names nothing now.
    pub(super) fn ipc_forget_pool(&mut self, pool: Handle) {
        if let Some(h) = self.shared.pools.remove(&pool) {
            self.withdraw_fd(&h);
        }
    }

    /// Physical memory `handle` is being released: its handle names
    /// nothing now.
    pub(super) fn ipc_forget_physical(&mut self, handle: Handle) {
        if let Some(h) = self.shared.physical.remove(&handle) {
            self.withdraw_fd(&h);
        }
    }

    /// At the end of the session: its handles name nothing now.
    pub(super) fn ipc_end(&mut self) {
        if let Some(r) = &self.ipc {
            r.remove_session(self.session_id);
        }
        self.shared = Shared::default();
    }
}
