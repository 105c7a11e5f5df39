//! Managed memory (`cuMemAllocManaged`): one pointer that the program
//! dereferences on the host and passes to kernels, kept coherent by the
//! shim.
//!
//! The server allocates ordinary device memory; the shim maps the program's
//! host copy at the very same address ([`crate::pages`]). Each 64 KiB block
//! is held by the device, or by the host clean (read-only, the same as the
//! device's) or dirty (writable, newer than the device's):
//! - a first read of a block the device holds faults; the handler fetches
//!   the device's data (up to 1 MiB of neighbouring device-held blocks at
//!   once) and puts it in place in one step, read-only;
//! - a first write of a clean block faults and makes it dirty, writable;
//! - before any work that may touch device memory (launches, graph
//!   launches, copies, memsets), dirty blocks are written to the device and
//!   every block the host holds goes back to the device (inaccessible to
//!   the host) — one atomic load when there are none.
//!
//! The shim's own traffic for this goes on a non-blocking stream of its own
//! per context, finished before the work that needs it is sent. A program
//! that synchronises before it reads what a kernel wrote (as CUDA asks) sees
//! the kernel's data. Copies whose host side is managed memory are made as
//! device copies, so the shim never touches managed pages itself.

use super::*;
use crate::pages::{self, Access, Scratch};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

/// The unit of coherence.
const BLOCK: usize = 64 << 10;
/// Blocks one fault fetches at most (neighbours the device holds, within
/// one aligned window).
const FETCH_BLOCKS: usize = 16;
/// Addresses tried before an allocation gives up on finding its device
/// address free in this process.
const PLACEMENT_TRIES: usize = 4;

/// `CUmemAttach_flags`.
const ATTACH_GLOBAL: u32 = 1;
const ATTACH_HOST: u32 = 2;
const ATTACH_SINGLE: u32 = 4;

/// `CU_DEVICE_CPU` and `CU_DEVICE_INVALID`.
const DEVICE_CPU: i32 = -1;
const DEVICE_INVALID: i32 = -2;

/// `CUmemLocationType`.
const LOCATION_INVALID: u32 = 0;
const LOCATION_DEVICE: u32 = 1;
const LOCATION_HOST: u32 = 2;
const LOCATION_HOST_NUMA: u32 = 3;
const LOCATION_HOST_NUMA_CURRENT: u32 = 4;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Held {
    Device,
    Clean,
    Dirty,
}

/// Where advice or a prefetch names: (`CUmemLocationType`, id).
type Location = (u32, i32);

/// What the program advised for an allocation (`cuMemAdvise`), and where
/// it last prefetched it, for `cuMemRangeGetAttribute`.
#[derive(Debug, Default, Clone)]
struct Advice {
    read_mostly: bool,
    preferred: Option<Location>,
    accessed_by: Vec<Location>,
    last_prefetch: Option<Location>,
}

struct Managed {
    ctx: Handle,
    /// The server's allocation, which holds `base .. base + len`; `None`
    /// for a module's `__managed__` variables.
    alloc: Option<u64>,
    /// Bytes the program asked for (for variables, all that is mapped).
    size: usize,
    /// Bytes mapped at the base: `size` up to whole pages.
    len: usize,
    /// The shim's own writable view of the same pages, for an allocation
    /// ([`pages::map_shared_at`]). Variables have none.
    view: Option<usize>,
    /// Where the data is, for variables: they share pages with memory that
    /// is not theirs, which the shim never reads or writes. Empty for an
    /// allocation, which is data throughout.
    variables: Vec<Variable>,
    blocks: Vec<Held>,
    /// The shim's stream for this context.
    stream: Handle,
    advice: Advice,
}

/// One `__managed__` variable: its bytes and the library (or module) it
/// came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Variable {
    start: usize,
    end: usize,
    library: Handle,
}

impl Managed {
    /// Unmap the range (and the shim's view of it).
    ///
    /// # Safety
    /// The range is gone for the program: nothing uses its pages any more.
    unsafe fn unmap(&self, base: usize) {
        // SAFETY: the caller's promise; both mappings are the shim's.
        unsafe {
            pages::unmap(base, self.len);
            if let Some(view) = self.view {
                pages::unmap(view, self.len);
            }
        }
    }

    /// The pieces of `addr .. addr + len` that hold data: all of it for an
    /// allocation, the variables' bytes in it otherwise.
    fn data_in(&self, addr: usize, len: usize) -> Vec<(usize, usize)> {
        if self.variables.is_empty() {
            return vec![(addr, len)];
        }
        let end = addr + len;
        self.variables
            .iter()
            .filter_map(|v| {
                let (a, b) = (v.start.max(addr), v.end.min(end));
                (a < b).then(|| (a, b - a))
            })
            .collect()
    }

    /// A device address the range surely has, for fences.
    fn probe(&self, base: usize) -> u64 {
        self.variables.first().map_or(base, |v| v.start) as u64
    }

    /// The bytes of blocks `first .. first + n` of the range at `base`.
    fn span(&self, base: usize, first: usize, n: usize) -> (usize, usize) {
        let start = first * BLOCK;
        let end = ((first + n) * BLOCK).min(self.len);
        (base + start, end - start)
    }

    fn resident(&self) -> usize {
        self.blocks.iter().filter(|b| **b != Held::Device).count()
    }
}

struct Table {
    ranges: BTreeMap<usize, Managed>,
    /// Context -> the shim's non-blocking stream in it.
    streams: BTreeMap<Handle, Handle>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    ranges: BTreeMap::new(),
    streams: BTreeMap::new(),
});
/// Managed allocations there are.
static RANGES: AtomicUsize = AtomicUsize::new(0);
/// Blocks the host holds, over all of them.
static RESIDENT: AtomicUsize = AtomicUsize::new(0);

fn table() -> std::sync::MutexGuard<'static, Table> {
    TABLE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Runs `(first, n)` of consecutive blocks that `pick` selects.
fn runs(blocks: &[Held], pick: impl Fn(Held) -> bool) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < blocks.len() {
        if !pick(blocks[i]) {
            i += 1;
            continue;
        }
        let first = i;
        while i < blocks.len() && pick(blocks[i]) {
            i += 1;
        }
        out.push((first, i - first));
    }
    out
}

fn os_error(what: &str, e: std::io::Error) -> CuError {
    tracing::error!("managed memory: {what}: {e}");
    CuError::UNKNOWN
}

/// Whether `addr` lies in managed memory.
pub(super) fn is_managed(addr: usize) -> bool {
    RANGES.load(Ordering::Acquire) != 0 && find(&table(), addr).is_some()
}

fn find(t: &Table, addr: usize) -> Option<usize> {
    let (&base, m) = t.ranges.range(..=addr).next_back()?;
    (addr < base + m.len).then_some(base)
}

/// Wait until everything sent on the shim's `stream` is done, without
/// taking the context's kept errors from the program: a one-byte read at
/// `addr` behind it, whose reply is its own status only.
fn fence(s: &Shim, ctx: Handle, stream: Handle, addr: u64) -> CuResult {
    let mut byte = 0u8;
    let req = Request::MemcpyDtoH {
        ctx,
        stream: StreamRef::Handle(stream),
        src: addr,
        len: 1,
        sync: false,
    };
    // SAFETY: `byte` outlives the call, which waits for the data.
    unsafe { s.remote.call_into_sink(&req, Sink::linear(&mut byte, 1), true) }
}

/// Write the data in `len` bytes of the host copy at `addr` (read-only
/// now) to the device.
fn flush(s: &Shim, m: &Managed, addr: usize, len: usize) -> CuResult {
    for (at, n) in m.data_in(addr, len) {
        // SAFETY: the range is mapped, readable and the shim's own.
        let bytes = unsafe { std::slice::from_raw_parts(at as *const u8, n) };
        for (i, chunk) in bytes.chunks(COPY_CHUNK).enumerate() {
            let req = Request::MemcpyHtoD {
                ctx: m.ctx,
                stream: StreamRef::Handle(m.stream),
                dst: at as u64,
                offset: (i * COPY_CHUNK) as u64,
                total: n as u64,
            };
            s.remote.post(&req, chunk)?;
        }
    }
    Ok(())
}

/// Fetch blocks `first .. first + n` (all held by the device) and put them
/// in place, read-only, in one step.
fn fetch(s: &Shim, base: usize, m: &mut Managed, first: usize, n: usize) -> CuResult {
    let (addr, len) = m.span(base, first, n);
    if let Some(view) = m.view {
        // Into the shim's view while the program's pages stay closed, then
        // open them.
        let req = Request::MemcpyDtoH {
            ctx: m.ctx,
            stream: StreamRef::Handle(m.stream),
            src: addr as u64,
            len: len as u64,
            sync: false,
        };
        // SAFETY: the view is writable and holds the whole range.
        unsafe {
            s.remote
                .call_into_sink(&req, Sink::linear((view + (addr - base)) as *mut u8, len), true)
        }?;
        // SAFETY: the blocks are inside this allocation's mapping.
        unsafe { pages::protect(addr, len, Access::Read) }.map_err(|e| os_error("opening fetched pages", e))?;
        m.blocks[first..first + n].fill(Held::Clean);
        RESIDENT.fetch_add(n, Ordering::AcqRel);
        return Ok(());
    }
    let mut scratch = Scratch::new(len).map_err(|e| os_error("scratch pages", e))?;
    for (at, n) in m.data_in(addr, len) {
        let req = Request::MemcpyDtoH {
            ctx: m.ctx,
            stream: StreamRef::Handle(m.stream),
            src: at as u64,
            len: n as u64,
            sync: false,
        };
        // SAFETY: the scratch pages are writable, hold `at - addr + n`
        // bytes and live until installed.
        unsafe {
            s.remote
                .call_into_sink(&req, Sink::linear(scratch.as_mut_ptr().add(at - addr), n), true)
        }?;
    }
    // SAFETY: the target is inside this allocation's mapping.
    unsafe { scratch.install(addr) }.map_err(|e| os_error("installing fetched pages", e))?;
    m.blocks[first..first + n].fill(Held::Clean);
    RESIDENT.fetch_add(n, Ordering::AcqRel);
    Ok(())
}

/// The fault handler's question: a fault at `addr` in managed memory is
/// resolved (the access is retried); any other is not the shim's.
fn resolve_fault(addr: usize) -> bool {
    if RANGES.load(Ordering::Acquire) == 0 {
        return false;
    }
    let Ok(s) = shim() else { return false };
    let mut t = table();
    let Some(base) = find(&t, addr) else { return false };
    let Some(m) = t.ranges.get_mut(&base) else { return false };
    let b = (addr - base) / BLOCK;
    match m.blocks[b] {
        // Another thread resolved it first.
        Held::Dirty => true,
        Held::Clean => {
            // Only a write faults on a readable block. Dirty first, then
            // writable: no write can land unnoticed.
            m.blocks[b] = Held::Dirty;
            let (a, len) = m.span(base, b, 1);
            // SAFETY: the block is inside this allocation's mapping.
            unsafe { pages::protect(a, len, Access::ReadWrite) }.is_ok()
        }
        Held::Device => {
            let window = b / FETCH_BLOCKS * FETCH_BLOCKS;
            let window_end = (window + FETCH_BLOCKS).min(m.blocks.len());
            let mut first = b;
            while first > window && m.blocks[first - 1] == Held::Device {
                first -= 1;
            }
            let mut end = b + 1;
            while end < window_end && m.blocks[end] == Held::Device {
                end += 1;
            }
            match fetch(s, base, m, first, end - first) {
                Ok(()) => true,
                Err(e) => {
                    // Nothing can be returned to the program from here.
                    eprintln!(
                        "gpupool: managed memory at {addr:#x} could not be fetched from the GPU server \
                         ({e}); the program cannot go on"
                    );
                    false
                }
            }
        }
    }
}

/// Before work that may touch device memory: dirty blocks to the device,
/// then every block back to the device. Work a stream capture records runs
/// later, when its graph is launched, which settles then.
pub(super) fn settle_for(s: &Shim, stream: StreamRef) -> CuResult {
    if RESIDENT.load(Ordering::Acquire) == 0 || capture_of(s, stream).is_some() {
        return Ok(());
    }
    settle(s)
}

fn settle(s: &Shim) -> CuResult {
    settle_locked(s, &mut table())
}

fn settle_locked(s: &Shim, t: &mut Table) -> CuResult {
    let mut fences = Vec::new();
    for (&base, m) in t.ranges.iter_mut() {
        let dirty = runs(&m.blocks, |h| h == Held::Dirty);
        for &(first, n) in &dirty {
            let (addr, len) = m.span(base, first, n);
            // SAFETY: inside this allocation's mapping. Read-only first, so
            // that a write from now on faults (and waits for the table).
            unsafe { pages::protect(addr, len, Access::Read) }.map_err(|e| os_error("protecting pages", e))?;
            flush(s, m, addr, len)?;
            m.blocks[first..first + n].fill(Held::Clean);
        }
        if !dirty.is_empty() {
            fences.push((m.ctx, m.stream, m.probe(base)));
        }
    }
    for (ctx, stream, addr) in fences {
        fence(s, ctx, stream, addr)?;
    }
    for (&base, m) in t.ranges.iter_mut() {
        for (first, n) in runs(&m.blocks, |h| h != Held::Device) {
            let (addr, len) = m.span(base, first, n);
            // SAFETY: inside this allocation's mapping.
            unsafe { pages::protect(addr, len, Access::None) }.map_err(|e| os_error("protecting pages", e))?;
            m.blocks[first..first + n].fill(Held::Device);
            RESIDENT.fetch_sub(n, Ordering::AcqRel);
        }
    }
    Ok(())
}

/// The shim's non-blocking stream in `ctx`, made on first use.
fn private_stream(s: &Shim, t: &mut Table, ctx: Handle) -> CuResult<Handle> {
    if let Some(&h) = t.streams.get(&ctx) {
        return Ok(h);
    }
    let id = new_client_handle();
    let req = Request::StreamCreate {
        ctx,
        flags: 1,
        priority: 0,
        id,
    };
    s.remote.post(&req, &[])?;
    t.streams.insert(ctx, id);
    Ok(id)
}

pub unsafe fn mem_alloc_managed(ptr: *mut CUdeviceptr, size: usize, flags: u32) -> CuResult {
    let s = shim()?;
    let (ctx, device) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    if ptr.is_null() || size == 0 || (flags != ATTACH_GLOBAL && flags != ATTACH_HOST) {
        return Err(CuError::INVALID_VALUE);
    }
    pages::install_fault_handler(resolve_fault).map_err(|e| {
        tracing::warn!("managed memory needs a SIGSEGV handler, which could not be installed: {e}");
        CuError::NOT_SUPPORTED
    })?;
    let page = pages::page_size();
    let len = size.checked_next_multiple_of(page).ok_or(CuError::OUT_OF_MEMORY)?;
    let asked = len.checked_add(page).ok_or(CuError::OUT_OF_MEMORY)? as u64;
    let stream = private_stream(s, &mut table(), ctx)?;
    // The device address, up to a page boundary, must be free here too.
    let mut refused = Vec::new();
    let mut placed = None;
    while placed.is_none() && refused.len() < PLACEMENT_TRIES {
        let d = match s.remote.call(&Request::MemAlloc { ctx, size: asked }, &[])? {
            Reply::Pointer(p) => p,
            _ => return Err(CuError::UNKNOWN),
        };
        let base = (d as usize).next_multiple_of(page);
        // Pages held for freed device memory that lay there go back: the
        // new allocation's own pages, which no other range touches.
        lock(&s.device_memory).give_back(base as u64, len as u64);
        match pages::map_shared_at(base, len) {
            Ok(view) => placed = Some((d, base, view)),
            Err(e) => {
                tracing::debug!("managed memory: device address {base:#x} is taken in this process ({e})");
                refused.push(d);
            }
        }
    }
    for d in refused {
        s.remote.post(&Request::MemFree { ctx, ptr: d }, &[])?;
    }
    let Some((alloc, base, view)) = placed else {
        tracing::warn!(
            "cuMemAllocManaged: {PLACEMENT_TRIES} device addresses were all in use in this process; \
             returning CUDA_ERROR_OUT_OF_MEMORY"
        );
        return Err(CuError::OUT_OF_MEMORY);
    };
    // Both copies start as zeros: the host's pages are zero, the device's
    // are set so, before any later work on any stream.
    let zero = Request::Memset {
        ctx,
        stream: StreamRef::Handle(stream),
        dst: base as u64,
        value: 0,
        elem_size: 1,
        count: len as u64,
    };
    let zeroed = s
        .remote
        .post(&zero, &[])
        .and_then(|()| fence(s, ctx, stream, base as u64));
    if let Err(e) = zeroed {
        // SAFETY: the mappings were just made and are nobody's yet.
        unsafe {
            pages::unmap(base, len);
            pages::unmap(view, len);
        }
        let _ = s.remote.post(&Request::MemFree { ctx, ptr: alloc }, &[]);
        return Err(e);
    }
    // Its pages are the shim's managed mapping, not held.
    lock(&s.device_memory).insert_mapped(
        base as u64,
        DeviceRange {
            size: size as u64,
            ctx,
            device,
            kind: RangeKind::Allocated,
            legacy_ipc: false,
        },
    );
    let blocks = len.div_ceil(BLOCK);
    table().ranges.insert(
        base,
        Managed {
            ctx,
            alloc: Some(alloc),
            size,
            len,
            view: Some(view),
            variables: Vec::new(),
            blocks: vec![Held::Clean; blocks],
            stream,
            advice: Advice::default(),
        },
    );
    RANGES.fetch_add(1, Ordering::AcqRel);
    RESIDENT.fetch_add(blocks, Ordering::AcqRel);
    unsafe { out(ptr, base as u64) }
}

/// Pieces of `lo .. hi` that none of `taken` (sorted `(start, end)`
/// ranges) covers.
fn gaps(lo: usize, hi: usize, taken: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = lo;
    for &(a, b) in taken {
        if a > at {
            out.push((at, a.min(hi)));
        }
        at = at.max(b);
    }
    if at < hi {
        out.push((at, hi));
    }
    out.retain(|(a, b)| a < b);
    out
}

/// A module's `__managed__` variable at `ptr .. ptr + size` (from
/// `cuLibraryGetManaged`): the host maps its pages at the same address,
/// device-held, as for an allocation. Variables share pages with one
/// another (and with memory that is not managed), so one range holds all
/// the variables whose pages touch, and only the variables' bytes ever
/// move.
pub(super) fn adopt_variable(s: &Shim, ctx: Handle, library: Handle, ptr: u64, size: u64) -> CuResult {
    if size == 0 {
        return Ok(());
    }
    pages::install_fault_handler(resolve_fault).map_err(|e| {
        tracing::warn!("managed memory needs a SIGSEGV handler, which could not be installed: {e}");
        CuError::NOT_SUPPORTED
    })?;
    let page = pages::page_size();
    let start = ptr as usize;
    let end = start.checked_add(size as usize).ok_or(CuError::INVALID_VALUE)?;
    let var = Variable { start, end, library };
    let mut t = table();
    let known =
        find(&t, start).is_some_and(|b| t.ranges[&b].variables.iter().any(|v| v.start == start && v.end == end));
    if known {
        return Ok(());
    }
    let (lo, hi) = (start / page * page, end.next_multiple_of(page));
    let touching: Vec<usize> = t
        .ranges
        .iter()
        .filter(|(b, m)| **b < hi && lo < **b + m.len)
        .map(|(b, _)| *b)
        .collect();
    if touching.iter().any(|b| t.ranges[b].alloc.is_some()) {
        tracing::warn!("a __managed__ variable at {start:#x} shares pages with a managed allocation; not mapped");
        return Err(CuError::NOT_SUPPORTED);
    }
    // Everything back to the device first: the merged range starts with
    // every block there.
    if !touching.is_empty() {
        settle_locked(s, &mut t)?;
    }
    let taken: Vec<(usize, usize)> = touching.iter().map(|b| (*b, b + t.ranges[b].len)).collect();
    let lo = taken.first().map_or(lo, |r| r.0.min(lo));
    let hi = taken.iter().map(|r| r.1).max().unwrap_or(hi).max(hi);
    let mut mapped = Vec::new();
    for (a, b) in gaps(lo, hi, &taken) {
        let made = pages::map_zeroed_at(a, b - a).and_then(|()| {
            // SAFETY: just mapped, the shim's own.
            unsafe { pages::protect(a, b - a, Access::None) }
        });
        if let Err(e) = made {
            for (a, b) in mapped {
                // SAFETY: mapped above and nobody's yet.
                unsafe { pages::unmap(a, b - a) };
            }
            tracing::warn!(
                "the __managed__ variable at {start:#x} cannot be mapped at its device address in this process \
                 ({e}); returning CUDA_ERROR_OUT_OF_MEMORY"
            );
            return Err(CuError::OUT_OF_MEMORY);
        }
        mapped.push((a, b));
    }
    let stream = private_stream(s, &mut t, ctx)?;
    let mut variables = vec![var];
    let mut advice = Advice::default();
    for b in &touching {
        if let Some(m) = t.ranges.remove(b) {
            variables.extend(m.variables);
            advice = m.advice;
            RANGES.fetch_sub(1, Ordering::AcqRel);
        }
    }
    variables.sort_by_key(|v| v.start);
    let len = hi - lo;
    t.ranges.insert(
        lo,
        Managed {
            ctx,
            alloc: None,
            size: len,
            len,
            view: None,
            variables,
            blocks: vec![Held::Device; len.div_ceil(BLOCK)],
            stream,
            advice,
        },
    );
    RANGES.fetch_add(1, Ordering::AcqRel);
    Ok(())
}

/// A library or module went: so did its `__managed__` variables.
pub(super) fn forget_library(library: Handle) {
    if RANGES.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut t = table();
    let mut empty = Vec::new();
    for (&base, m) in t.ranges.iter_mut() {
        if m.alloc.is_none() {
            m.variables.retain(|v| v.library != library);
            if m.variables.is_empty() {
                empty.push(base);
            }
        }
    }
    for base in empty {
        if let Some(m) = t.ranges.remove(&base) {
            RANGES.fetch_sub(1, Ordering::AcqRel);
            RESIDENT.fetch_sub(m.resident(), Ordering::AcqRel);
            // SAFETY: the variables went with their library.
            unsafe { m.unmap(base) };
        }
    }
}

/// `cuMemFree` of managed memory: `None` when `ptr` is not the start of a
/// managed allocation.
pub(super) fn free(s: &Shim, ptr: CUdeviceptr) -> Option<CuResult> {
    if RANGES.load(Ordering::Acquire) == 0 {
        return None;
    }
    let mut t = table();
    let alloc = t.ranges.get(&(ptr as usize))?.alloc;
    let Some(alloc) = alloc else {
        // A module's variable: it goes with its module.
        return Some(Err(CuError::INVALID_VALUE));
    };
    let m = t.ranges.remove(&(ptr as usize))?;
    drop(t);
    RANGES.fetch_sub(1, Ordering::AcqRel);
    RESIDENT.fetch_sub(m.resident(), Ordering::AcqRel);
    lock(&s.device_memory).remove(&ptr);
    // SAFETY: the allocation is gone; its pages are the shim's.
    unsafe { m.unmap(ptr as usize) };
    Some(s.remote.post(&Request::MemFree { ctx: m.ctx, ptr: alloc }, &[]))
}

/// A context went: so did its managed memory and the shim's stream in it.
pub(super) fn forget_context(ctx: Handle) {
    if RANGES.load(Ordering::Acquire) == 0 {
        return;
    }
    let mut t = table();
    t.streams.remove(&ctx);
    let gone: Vec<usize> = t.ranges.iter().filter(|(_, m)| m.ctx == ctx).map(|(b, _)| *b).collect();
    for base in gone {
        if let Some(m) = t.ranges.remove(&base) {
            RANGES.fetch_sub(1, Ordering::AcqRel);
            RESIDENT.fetch_sub(m.resident(), Ordering::AcqRel);
            // SAFETY: the memory went with its context.
            unsafe { m.unmap(base) };
        }
    }
}

/// The managed allocation holding all of `ptr .. ptr + count`.
fn range_base(t: &Table, ptr: u64, count: usize) -> CuResult<usize> {
    let base = find(t, ptr as usize).ok_or(CuError::INVALID_VALUE)?;
    let end = (ptr as usize).checked_add(count).ok_or(CuError::INVALID_VALUE)?;
    if count == 0 || end > base + t.ranges[&base].size {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(base)
}

/// A `CUmemLocation` passed by value: its type in the low half, id high.
fn location(raw: u64) -> Location {
    (raw as u32, (raw >> 32) as i32)
}

/// A device ordinal or `CU_DEVICE_CPU` as a location.
fn device_location(device: i32) -> Location {
    match device {
        DEVICE_CPU => (LOCATION_HOST, 0),
        d => (LOCATION_DEVICE, d),
    }
}

/// Check a location advice or a prefetch may name; whether it is the host.
fn check_location(s: &Shim, (kind, id): Location) -> CuResult<bool> {
    match kind {
        LOCATION_DEVICE => s.device(id).map(|_| false).map_err(|_| CuError::INVALID_DEVICE),
        LOCATION_HOST | LOCATION_HOST_NUMA | LOCATION_HOST_NUMA_CURRENT => Ok(true),
        _ => Err(CuError::INVALID_VALUE),
    }
}

unsafe fn prefetch(mode: DefaultStream, ptr: u64, count: usize, to: Location, stream: CUstream) -> CuResult {
    let s = shim()?;
    let to_host = check_location(s, to)?;
    let base = range_base(&table(), ptr, count)?;
    stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    if let Some(m) = table().ranges.get_mut(&base) {
        m.advice.last_prefetch = Some(to);
    }
    if !to_host {
        return settle_for(s, sref);
    }
    // To the host: after the stream's earlier work, which may write it.
    unsafe { stream_synchronize(mode, stream) }?;
    let mut t = table();
    let Some(m) = t.ranges.get_mut(&base) else {
        return Ok(());
    };
    let first = (ptr as usize - base) / BLOCK;
    let last = (ptr as usize - base + count - 1) / BLOCK;
    for (f, n) in runs(&m.blocks[first..=last], |h| h == Held::Device) {
        fetch(s, base, m, first + f, n)?;
    }
    Ok(())
}

pub unsafe fn mem_prefetch_async(
    mode: DefaultStream,
    ptr: CUdeviceptr,
    count: usize,
    device: i32,
    stream: CUstream,
) -> CuResult {
    unsafe { prefetch(mode, ptr, count, device_location(device), stream) }
}

pub unsafe fn mem_prefetch_async_v2(
    mode: DefaultStream,
    ptr: CUdeviceptr,
    count: usize,
    location: u64,
    flags: u32,
    stream: CUstream,
) -> CuResult {
    if flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    unsafe { prefetch(mode, ptr, count, self::location(location), stream) }
}

/// The ranges of a batch (`cuMemPrefetchBatchAsync` and its kin), each of
/// managed memory, on a stream other than the legacy one.
unsafe fn batch_ranges(
    mode: DefaultStream,
    ptrs: *const CUdeviceptr,
    sizes: *const usize,
    count: usize,
    flags: u64,
    stream: CUstream,
) -> CuResult<Vec<(u64, usize)>> {
    if count == 0 || ptrs.is_null() || sizes.is_null() || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if Shim::stream_ref(mode, handle(stream)) == StreamRef::Legacy {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes `count` pointers and sizes (API contract);
    // checked not to be null.
    let ranges: Vec<(u64, usize)> = (0..count).map(|i| unsafe { (*ptrs.add(i), *sizes.add(i)) }).collect();
    let t = table();
    for &(ptr, size) in &ranges {
        range_base(&t, ptr, size)?;
    }
    Ok(ranges)
}

/// `cuMemPrefetchBatchAsync`, and `cuMemDiscardAndPrefetchBatchAsync`
/// (discarding keeps the contents here, which a discarded range may hold):
/// each range to the location whose run of operations it is in
/// (`location_starts`: the first operation of each, from 0, increasing,
/// below `count`). All is checked before anything moves.
pub unsafe fn mem_prefetch_batch_async(
    mode: DefaultStream,
    ptrs: *const CUdeviceptr,
    sizes: *const usize,
    count: usize,
    locations: *const u64,
    location_starts: *const usize,
    location_count: usize,
    flags: u64,
    stream: CUstream,
) -> CuResult {
    let s = shim()?;
    // SAFETY: as `batch_ranges` requires (the program's arrays).
    let ranges = unsafe { batch_ranges(mode, ptrs, sizes, count, flags, stream) }?;
    if locations.is_null() || location_starts.is_null() || location_count == 0 || location_count > count {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes `location_count` of each (API contract);
    // checked not to be null. A CUmemLocation is 8 bytes: type, then id.
    let runs: Vec<(usize, Location)> = (0..location_count)
        .map(|i| unsafe {
            (
                *location_starts.add(i),
                location(std::ptr::read_unaligned(locations.add(i))),
            )
        })
        .collect();
    let increasing = runs.windows(2).all(|w| w[0].0 < w[1].0);
    if runs[0].0 != 0 || !increasing || runs[location_count - 1].0 >= count {
        return Err(CuError::INVALID_VALUE);
    }
    for &(_, at) in &runs {
        check_location(s, at)?;
    }
    for (k, &(start, at)) in runs.iter().enumerate() {
        let end = runs.get(k + 1).map_or(count, |r| r.0);
        for &(ptr, size) in &ranges[start..end] {
            // SAFETY: a checked range of the program's, on its stream.
            unsafe { prefetch(mode, ptr, size, at, stream) }?;
        }
    }
    Ok(())
}

/// `cuMemDiscardBatchAsync`: the ranges' contents become indeterminate;
/// here they keep what they hold, which is one of the values allowed.
pub unsafe fn mem_discard_batch_async(
    mode: DefaultStream,
    ptrs: *const CUdeviceptr,
    sizes: *const usize,
    count: usize,
    flags: u64,
    stream: CUstream,
) -> CuResult {
    let s = shim()?;
    // SAFETY: as `batch_ranges` requires (the program's arrays).
    unsafe { batch_ranges(mode, ptrs, sizes, count, flags, stream) }?;
    stream_ctx(s, stream).map(drop)
}

/// `CUmem_advise`.
mod advise {
    pub const SET_READ_MOSTLY: u32 = 1;
    pub const UNSET_READ_MOSTLY: u32 = 2;
    pub const SET_PREFERRED_LOCATION: u32 = 3;
    pub const UNSET_PREFERRED_LOCATION: u32 = 4;
    pub const SET_ACCESSED_BY: u32 = 5;
    pub const UNSET_ACCESSED_BY: u32 = 6;
}

fn advise(ptr: u64, count: usize, advice: u32, at: Location) -> CuResult {
    use advise::*;
    let s = shim()?;
    if matches!(advice, SET_PREFERRED_LOCATION | SET_ACCESSED_BY | UNSET_ACCESSED_BY) {
        check_location(s, at)?;
    }
    let mut t = table();
    let base = range_base(&t, ptr, count)?;
    let a = &mut t.ranges.get_mut(&base).ok_or(CuError::INVALID_VALUE)?.advice;
    match advice {
        SET_READ_MOSTLY => a.read_mostly = true,
        UNSET_READ_MOSTLY => a.read_mostly = false,
        SET_PREFERRED_LOCATION => a.preferred = Some(at),
        UNSET_PREFERRED_LOCATION => a.preferred = None,
        SET_ACCESSED_BY if !a.accessed_by.contains(&at) => a.accessed_by.push(at),
        SET_ACCESSED_BY => {}
        UNSET_ACCESSED_BY => a.accessed_by.retain(|l| *l != at),
        _ => return Err(CuError::INVALID_VALUE),
    }
    Ok(())
}

pub unsafe fn mem_advise(ptr: CUdeviceptr, count: usize, advice: u32, device: i32) -> CuResult {
    advise(ptr, count, advice, device_location(device))
}

pub unsafe fn mem_advise_v2(ptr: CUdeviceptr, count: usize, advice: u32, location: u64) -> CuResult {
    advise(ptr, count, advice, self::location(location))
}

/// A location as the device-ordinal attributes answer it.
fn as_device(l: Option<Location>) -> i32 {
    match l {
        Some((LOCATION_DEVICE, d)) => d,
        Some(_) => DEVICE_CPU,
        None => DEVICE_INVALID,
    }
}

/// `CUmem_range_attribute`.
mod range_attr {
    pub const READ_MOSTLY: i32 = 1;
    pub const PREFERRED_LOCATION: i32 = 2;
    pub const ACCESSED_BY: i32 = 3;
    pub const LAST_PREFETCH_LOCATION: i32 = 4;
    pub const PREFERRED_LOCATION_TYPE: i32 = 5;
    pub const PREFERRED_LOCATION_ID: i32 = 6;
    pub const LAST_PREFETCH_LOCATION_TYPE: i32 = 7;
    pub const LAST_PREFETCH_LOCATION_ID: i32 = 8;
}

/// The 32-bit values of a range attribute (advice is kept per allocation).
fn range_attribute(ptr: u64, count: usize, attribute: i32, slots: usize) -> CuResult<Vec<i32>> {
    use range_attr::*;
    let t = table();
    let base = range_base(&t, ptr, count)?;
    let a = &t.ranges[&base].advice;
    let one = |v: i32| {
        if slots == 1 {
            Ok(vec![v])
        } else {
            Err(CuError::INVALID_VALUE)
        }
    };
    match attribute {
        READ_MOSTLY => one(a.read_mostly as i32),
        PREFERRED_LOCATION => one(as_device(a.preferred)),
        LAST_PREFETCH_LOCATION => one(as_device(a.last_prefetch)),
        PREFERRED_LOCATION_TYPE => one(a.preferred.map_or(LOCATION_INVALID, |l| l.0) as i32),
        PREFERRED_LOCATION_ID => one(a.preferred.map_or(0, |l| l.1)),
        LAST_PREFETCH_LOCATION_TYPE => one(a.last_prefetch.map_or(LOCATION_INVALID, |l| l.0) as i32),
        LAST_PREFETCH_LOCATION_ID => one(a.last_prefetch.map_or(0, |l| l.1)),
        ACCESSED_BY if slots >= 1 => {
            let mut v: Vec<i32> = a.accessed_by.iter().map(|l| as_device(Some(*l))).collect();
            v.truncate(slots);
            v.resize(slots, DEVICE_INVALID);
            Ok(v)
        }
        _ => Err(CuError::INVALID_VALUE),
    }
}

pub unsafe fn mem_range_get_attribute(
    data: *mut c_void,
    data_size: usize,
    attribute: i32,
    ptr: CUdeviceptr,
    count: usize,
) -> CuResult {
    shim()?;
    if data.is_null() || data_size == 0 || !data_size.is_multiple_of(4) {
        return Err(CuError::INVALID_VALUE);
    }
    let values = range_attribute(ptr, count, attribute, data_size / 4)?;
    // SAFETY: the program gave `data_size` writable bytes at data; the
    // values fill exactly that many.
    unsafe { std::ptr::copy_nonoverlapping(values.as_ptr().cast::<u8>(), data.cast::<u8>(), data_size) };
    Ok(())
}

pub unsafe fn mem_range_get_attributes(
    data: *mut *mut c_void,
    data_sizes: *mut usize,
    attributes: *mut i32,
    num: usize,
    ptr: CUdeviceptr,
    count: usize,
) -> CuResult {
    shim()?;
    if data.is_null() || data_sizes.is_null() || attributes.is_null() || num == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    for i in 0..num {
        // SAFETY: the program passes `num` of each (API contract); each
        // array was checked for null.
        let (slot, size, attribute) = unsafe { (*data.add(i), *data_sizes.add(i), *attributes.add(i)) };
        // SAFETY: the slot holds `size` writable bytes (API contract).
        unsafe { mem_range_get_attribute(slot, size, attribute, ptr, count) }?;
    }
    Ok(())
}

pub unsafe fn stream_attach_mem_async(
    _mode: DefaultStream,
    stream: CUstream,
    ptr: CUdeviceptr,
    length: usize,
    flags: u32,
) -> CuResult {
    let s = shim()?;
    stream_ctx(s, stream)?;
    if !matches!(flags, ATTACH_GLOBAL | ATTACH_HOST | ATTACH_SINGLE) {
        return Err(CuError::INVALID_VALUE);
    }
    // The whole allocation (length 0) or all of it named: coherence does
    // not depend on which streams may touch it, so nothing else changes.
    let t = table();
    let base = find(&t, ptr as usize).ok_or(CuError::INVALID_VALUE)?;
    let size = t.ranges[&base].size;
    if base as u64 != ptr || (length != 0 && length != size) {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gaps_are_what_no_range_covers() {
        assert_eq!(gaps(0, 100, &[]), vec![(0, 100)]);
        assert_eq!(gaps(0, 100, &[(0, 40)]), vec![(40, 100)]);
        assert_eq!(gaps(0, 100, &[(20, 40), (60, 100)]), vec![(0, 20), (40, 60)]);
        assert!(gaps(10, 50, &[(0, 60)]).is_empty());
    }

    #[test]
    fn variables_move_only_their_own_bytes() {
        let v = |start, end| Variable { start, end, library: 1 };
        let m = Managed {
            ctx: 1,
            alloc: None,
            size: 8192,
            len: 8192,
            view: None,
            variables: vec![v(0x1010, 0x1020), v(0x1ff0, 0x2100)],
            blocks: vec![Held::Device],
            stream: 2,
            advice: Advice::default(),
        };
        assert_eq!(m.data_in(0x1000, 0x2000), vec![(0x1010, 0x10), (0x1ff0, 0x110)]);
        assert_eq!(m.data_in(0x2000, 0x1000), vec![(0x2000, 0x100)]);
        assert!(m.data_in(0x1100, 0x100).is_empty());
        assert_eq!(m.probe(0x1000), 0x1010);
        let whole = Managed {
            variables: Vec::new(),
            ..m
        };
        assert_eq!(whole.data_in(0x1000, 0x2000), vec![(0x1000, 0x2000)]);
    }

    #[test]
    fn runs_pick_consecutive_blocks() {
        use Held::*;
        let b = [Device, Clean, Clean, Device, Dirty, Dirty, Clean];
        assert_eq!(runs(&b, |h| h == Device), vec![(0, 1), (3, 1)]);
        assert_eq!(runs(&b, |h| h != Device), vec![(1, 2), (4, 3)]);
        assert_eq!(runs(&b, |h| h == Dirty), vec![(4, 2)]);
        assert!(runs(&[], |_| true).is_empty());
    }

    #[test]
    fn locations_by_value_and_by_ordinal() {
        assert_eq!(location(1 | (3u64 << 32)), (LOCATION_DEVICE, 3));
        assert_eq!(location(2), (LOCATION_HOST, 0));
        assert_eq!(device_location(DEVICE_CPU), (LOCATION_HOST, 0));
        assert_eq!(device_location(0), (LOCATION_DEVICE, 0));
        assert_eq!(as_device(None), DEVICE_INVALID);
        assert_eq!(as_device(Some((LOCATION_HOST, 0))), DEVICE_CPU);
        assert_eq!(as_device(Some((LOCATION_DEVICE, 1))), 1);
    }

    #[test]
    fn spans_end_at_the_mapping() {
        let m = Managed {
            ctx: 1,
            alloc: Some(0),
            size: BLOCK + 10,
            len: BLOCK + 4096,
            view: None,
            variables: Vec::new(),
            blocks: vec![Held::Clean; 2],
            stream: 2,
            advice: Advice::default(),
        };
        assert_eq!(m.span(0x10000, 0, 1), (0x10000, BLOCK));
        assert_eq!(m.span(0x10000, 1, 1), (0x10000 + BLOCK, 4096));
        assert_eq!(m.span(0x10000, 0, 2), (0x10000, BLOCK + 4096));
        assert_eq!(m.resident(), 2);
    }
}
