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
}

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
        let (&base, region) = self.tables.memory.range(..=ptr).next_back().ok_or(INVALID_VALUE)?;
        if ptr >= base + region.size.max(1) || region.kind != RegionKind::Allocated {
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

    /// The allocation at `base` is being freed: its handle names nothing now.
    pub(super) fn ipc_forget_memory(&mut self, base: u64) {
        if let Some(h) = self.shared.memory.remove(&base) {
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

    /// At the end of the session: its handles name nothing now.
    pub(super) fn ipc_end(&mut self) {
        if let Some(r) = &self.ipc {
            r.remove_session(self.session_id);
        }
        self.shared = Shared::default();
    }
}
