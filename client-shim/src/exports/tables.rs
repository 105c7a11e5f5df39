//! The driver's export tables (`cuGetExportTable`), served from the shim.
//!
//! cudart, cuBLAS, cuDNN and PyTorch ask the driver for tables of function
//! pointers by UUID before any work. Each table here is a static array whose
//! first word is usually its size in bytes; the entries programs call are
//! implemented, the others answer 0 (and, in the tables nobody has described
//! publicly, log the slot once so that a new caller shows up in the logs).
//! What each table and entry is, and what gpupool does for it, is in
//! `docs/export-tables.md`.
//!
//! The integrity check (`d4082055…`) hashes the addresses of the
//! CUDART_INTERFACE table, of its own table and of its own function, so those
//! three must be the statics below and nothing else.

use super::calls;
use super::{guard, CUcontext, CUdevice, CUmodule, CUresult};
use crate::error::{CuError, CuResult};
use crate::integrity::{self, Caller, DeviceFacts};
use gpupool_proto::message::Handle;
use std::cell::UnsafeCell;
use std::collections::{HashMap, HashSet};
use std::ffi::c_void;
use std::sync::Mutex;

/// A table of words: a size or a function address each.
#[repr(C)]
pub struct Table<const N: usize>([*const c_void; N]);

// SAFETY: the tables are immutable after compilation; the pointers are code
// addresses and small integers, shared read-only by every thread.
unsafe impl<const N: usize> Sync for Table<N> {}

impl<const N: usize> Table<N> {
    fn start(&'static self) -> *const c_void {
        self.0.as_ptr().cast()
    }
}

const fn size_word(slots: usize) -> *const c_void {
    (slots * 8) as *const c_void
}

const NULL: *const c_void = std::ptr::null();

/// Entries that exist but whose meaning is not needed: they answer 0.
extern "C" fn zero() -> usize {
    0
}

/// `CUuuid`s, in the byte order programs pass them.
const CUDART_INTERFACE_ID: [u8; 16] = uuid(0x6bd5fb6c_5bf4e74a_8987d939_12fd9df9);
const TOOLS_HOOKS_ID: [u8; 16] = uuid(0xa094798c_2e742e74_93f20800_200c0a66);
const TOOLS_TLS_ID: [u8; 16] = uuid(0x42d85a81_23f6cb47_8298f6e7_8a3aecdc);
const CONTEXT_STORAGE_ID: [u8; 16] = uuid(0xc693336e_1121df11_a8c368f3_55d89593);
const CONTEXT_CHECKS_ID: [u8; 16] = uuid(0x263e8860_7cd26143_92f6bbd5_006dfa7e);
const INTEGRITY_ID: [u8; 16] = uuid(0xd4082055_bde6704b_8d34ba12_3c66e1f2);
const EARLY_ID: [u8; 16] = uuid(0xf8cff951_21468b4e_b9e2fb46_9e7c0dd9);
const CUBLAS_CONTEXT_ID: [u8; 16] = uuid(0x21318c60_97143248_8ca641ff_7324c8f2);
const TORCH_TABLE_ID: [u8; 16] = uuid(0x69a28e9f_24498b47_b030c5da_330ea4e9);
const CUBLASLT_TABLE_ID: [u8; 16] = uuid(0x1734dc26_800d4745_8726c0f1_e7dd8bca);
const CUPTI_TABLE_ID: [u8; 16] = uuid(0x7cb63f9b_9ca48e42_a484beb6_6e6aed7f);
const TOOLS_MODULE_ID: [u8; 16] = uuid(0x6e163fbe_b958444d_835ce182_aff1991e);

const fn uuid(v: u128) -> [u8; 16] {
    v.to_be_bytes()
}

// ---- CUDART_INTERFACE (6bd5fb6c…): checked by the integrity hash ---------

pub static CUDART_INTERFACE: Table<13> = Table([
    size_word(13),
    module_from_wrapper as *const c_void,
    primary_context as *const c_void,
    NULL,
    NULL,
    NULL,
    module_from_wrapper_ext as *const c_void,
    interface_noop as *const c_void,
    module_from_fatbin as *const c_void,
    NULL,
    NULL,
    NULL,
    load_compilers as *const c_void,
]);

/// [1]: load a module from a fat-binary wrapper (`__fatBinC_Wrapper_t`).
unsafe extern "C" fn module_from_wrapper(module: *mut CUmodule, wrapper: *const c_void) -> CUresult {
    // SAFETY: cudart passes a writable module slot and a wrapper it owns.
    guard("cudart interface: module from wrapper", || unsafe {
        calls::load_module(module, wrapper)
    })
}

/// [2]: the primary context of a device, created if need be.
unsafe extern "C" fn primary_context(ctx: *mut CUcontext, device: CUdevice) -> CUresult {
    guard("cudart interface: primary context", || {
        let h = calls::primary_context(device)?;
        // SAFETY: cudart passes a writable context slot; out() checks NULL.
        unsafe { calls::out(ctx, h as usize as CUcontext) }
    })
}

/// [6]: as [1], with three further arguments that cudart passes as zero.
unsafe extern "C" fn module_from_wrapper_ext(
    module: *mut CUmodule,
    wrapper: *const c_void,
    a3: *mut c_void,
    a4: *mut c_void,
    a5: u32,
) -> CUresult {
    // SAFETY: as in `module_from_wrapper`.
    unsafe {
        load_with_extras(
            "cudart interface: module from wrapper (ext)",
            6,
            module,
            wrapper,
            [a3, a4],
            a5,
        )
    }
}

/// Slots 6 and 8: a module load whose extra arguments must be zero.
unsafe fn load_with_extras(
    name: &'static str,
    slot: u32,
    module: *mut CUmodule,
    image: *const c_void,
    extra: [*mut c_void; 2],
    flags: u32,
) -> CUresult {
    guard(name, || {
        if extra.iter().any(|p| !p.is_null()) || flags != 0 {
            tracing::warn!("cudart interface slot {slot} called with non-zero extra arguments; not supported");
            return Err(CuError::NOT_SUPPORTED);
        }
        // SAFETY: cudart passes a writable module slot and an image it owns.
        unsafe { calls::load_module(module, image) }
    })
}

/// [7]: no effect.
extern "C" fn interface_noop(_arg: usize) {}

/// [8]: load a module from a bare fat binary (the argument order differs).
unsafe extern "C" fn module_from_fatbin(
    fatbin: *const c_void,
    module: *mut CUmodule,
    a3: *mut c_void,
    a4: *mut c_void,
    a5: u32,
) -> CUresult {
    // SAFETY: as in `module_from_wrapper`.
    unsafe {
        load_with_extras(
            "cudart interface: module from fat binary",
            8,
            module,
            fatbin,
            [a3, a4],
            a5,
        )
    }
}

/// [12]: load the JIT compilers; the server's driver has its own.
extern "C" fn load_compilers() -> CUresult {
    0
}

// ---- tools runtime callback hooks (a094798c…) ---------------------------

static TOOLS_HOOKS: Table<7> = Table([
    size_word(7),
    zero as *const c_void,
    hooks_buffer_a as *const c_void,
    zero as *const c_void,
    zero as *const c_void,
    zero as *const c_void,
    hooks_buffer_b as *const c_void,
]);

/// A buffer cudart's tools support may write into.
struct HookBuffer<const N: usize>(UnsafeCell<[u32; N]>);

// SAFETY: the shim never reads or writes these buffers; only the program
// does, through the pointer handed out, under its own synchronisation.
unsafe impl<const N: usize> Sync for HookBuffer<N> {}

static HOOK_BUFFER_A: HookBuffer<1024> = HookBuffer(UnsafeCell::new([0; 1024]));
static HOOK_BUFFER_B: HookBuffer<14> = HookBuffer(UnsafeCell::new([0; 14]));

unsafe fn hand_out<const N: usize>(buf: &'static HookBuffer<N>, ptr: *mut *mut c_void, size: *mut usize) {
    if !ptr.is_null() {
        // SAFETY: a writable pointer slot, NULL checked.
        unsafe { ptr.write(buf.0.get().cast()) };
    }
    if !size.is_null() {
        // SAFETY: a writable size slot, NULL checked.
        unsafe { size.write(N) };
    }
}

/// [2]: a buffer and its size.
unsafe extern "C" fn hooks_buffer_a(ptr: *mut *mut c_void, size: *mut usize) {
    // SAFETY: see hand_out.
    unsafe { hand_out(&HOOK_BUFFER_A, ptr, size) }
}

/// [6]: a second buffer and its size.
unsafe extern "C" fn hooks_buffer_b(ptr: *mut *mut c_void, size: *mut usize) {
    // SAFETY: see hand_out.
    unsafe { hand_out(&HOOK_BUFFER_B, ptr, size) }
}

// ---- tools TLS (42d85a81…): called hundreds of times, kept trivial -------

static TOOLS_TLS: Table<3> = Table([size_word(3), zero as *const c_void, thread_context as *const c_void]);

/// [2]: the calling thread's current context (NULL when it has none), as
/// `cuCtxGetCurrent` answers. cuBLASLt reads it back unconditionally and
/// hands it to the cuBLAS context table's slot 4.
unsafe extern "C" fn thread_context(ctx: *mut CUcontext) -> CUresult {
    if ctx.is_null() {
        return CuError::INVALID_VALUE.0;
    }
    let current = std::panic::catch_unwind(calls::current_context).unwrap_or(std::ptr::null_mut());
    // SAFETY: a writable context slot, NULL checked.
    unsafe { ctx.write(current) };
    0
}

// ---- context-local storage (c693336e…): no size word, NULL-terminated ----

static CONTEXT_STORAGE: Table<4> = Table([
    storage_put as *const c_void,
    storage_delete as *const c_void,
    storage_get as *const c_void,
    NULL,
]);

/// Called with (context, key, value) when a context holding the entry goes.
type StorageDestructor = Option<unsafe extern "C" fn(CUcontext, *mut c_void, *mut c_void)>;

#[derive(Clone, Copy)]
struct StorageEntry {
    value: usize,
    destructor: StorageDestructor,
}

/// Per (context, key): what the program stored.
static STORAGE: Mutex<Option<HashMap<(Handle, usize), StorageEntry>>> = Mutex::new(None);

fn storage<R>(f: impl FnOnce(&mut HashMap<(Handle, usize), StorageEntry>) -> R) -> R {
    let mut g = STORAGE.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// The context an entry point means: the given one, or the current one.
fn storage_context(ctx: CUcontext) -> CuResult<Handle> {
    if ctx.is_null() {
        crate::state::current().map(|(c, _)| c).ok_or(CuError::INVALID_CONTEXT)
    } else {
        Ok(ctx as usize as Handle)
    }
}

/// [0]: put(context, key, value, destructor).
unsafe extern "C" fn storage_put(
    ctx: CUcontext,
    key: *mut c_void,
    value: *mut c_void,
    destructor: StorageDestructor,
) -> CUresult {
    guard("context storage: put", || {
        let ctx = storage_context(ctx)?;
        let entry = StorageEntry {
            value: value as usize,
            destructor,
        };
        storage(|m| m.insert((ctx, key as usize), entry));
        Ok(())
    })
}

/// [1]: delete(context, key).
unsafe extern "C" fn storage_delete(ctx: CUcontext, key: *mut c_void) -> CUresult {
    guard("context storage: delete", || {
        let ctx = storage_context(ctx)?;
        storage(|m| m.remove(&(ctx, key as usize)));
        Ok(())
    })
}

/// [2]: get(&value, context, key); a missing key is an invalid handle.
unsafe extern "C" fn storage_get(value: *mut *mut c_void, ctx: CUcontext, key: *mut c_void) -> CUresult {
    guard("context storage: get", || {
        let ctx = storage_context(ctx)?;
        let entry = storage(|m| m.get(&(ctx, key as usize)).copied()).ok_or(CuError::INVALID_HANDLE)?;
        // SAFETY: cudart passes a writable value slot; out() checks NULL.
        unsafe { calls::out(value, entry.value as *mut c_void) }
    })
}

/// A context was destroyed or reset: run the destructors of what the program
/// stored in it. Call with no shim lock held: destructors call back into the
/// driver.
pub(crate) fn context_gone(ctx: Handle) {
    let gone: Vec<(usize, StorageEntry)> = storage(|m| {
        let keys: Vec<(Handle, usize)> = m.keys().filter(|(c, _)| *c == ctx).copied().collect();
        keys.into_iter()
            .filter_map(|k| m.remove(&k).map(|e| (k.1, e)))
            .collect()
    });
    for (key, entry) in gone {
        if let Some(d) = entry.destructor {
            // SAFETY: the program registered this destructor for this entry
            // and expects it called once, with its context, key and value.
            unsafe {
                d(
                    ctx as usize as CUcontext,
                    key as *mut c_void,
                    entry.value as *mut c_void,
                )
            };
        }
    }
}

// ---- context checks (263e8860…) ------------------------------------------

static CONTEXT_CHECKS: Table<15> = Table([
    size_word(15),
    checks_slot::<1> as *const c_void,
    context_check as *const c_void,
    checks_slot::<3> as *const c_void,
    checks_slot::<4> as *const c_void,
    checks_slot::<5> as *const c_void,
    checks_slot::<6> as *const c_void,
    checks_slot::<7> as *const c_void,
    checks_slot::<8> as *const c_void,
    checks_slot::<9> as *const c_void,
    checks_slot::<10> as *const c_void,
    checks_slot::<11> as *const c_void,
    checks_slot::<12> as *const c_void,
    checks_slot::<13> as *const c_void,
    checks_slot::<14> as *const c_void,
]);

/// The entries besides [2]: answer 0, logged once each.
extern "C" fn checks_slot<const I: usize>() -> usize {
    std::panic::catch_unwind(|| undescribed("263e8860 (context checks)", I)).unwrap_or(0)
}

/// [2]: no flags set for any context.
unsafe extern "C" fn context_check(_ctx: CUcontext, result: *mut u32, _detail: *mut *const c_void) -> CUresult {
    if !result.is_null() {
        // SAFETY: a writable u32, NULL checked.
        unsafe { result.write(0) };
    }
    0
}

// ---- integrity check (d4082055…): checked by cudart ----------------------

pub static INTEGRITY: Table<3> = Table([size_word(3), integrity_check as *const c_void, NULL]);

/// [1]: integrity_check(version, unix_seconds, out[2]).
unsafe extern "C" fn integrity_check(version: u32, unix_seconds: u64, result: *mut [u64; 2]) -> CUresult {
    guard("integrity check", || {
        let answer = integrity::answer(version, unix_seconds, &caller(), &device_facts()?);
        // SAFETY: cudart passes room for two words; out() checks NULL.
        unsafe { calls::out(result, answer) }
    })
}

fn caller() -> Caller {
    Caller {
        driver_version: calls::reported_driver_version() as u32,
        pid: std::process::id(),
        // SAFETY: pthread_self has no preconditions.
        thread: unsafe { libc::pthread_self() } as u32,
        cudart_table: CUDART_INTERFACE.start() as u64,
        integrity_table: INTEGRITY.start() as u64,
        check_fn: INTEGRITY.0[1] as u64,
    }
}

/// Attributes the hash covers: PCI domain, bus and device.
const ATTR_PCI_DOMAIN: i32 = 50;
const ATTR_PCI_BUS: i32 = 33;
const ATTR_PCI_DEVICE: i32 = 34;

/// The devices exactly as the program sees them.
fn device_facts() -> CuResult<Vec<DeviceFacts>> {
    let Ok(s) = calls::shim() else {
        return Ok(Vec::new());
    };
    let attr = |d: i32, a: i32| s.attribute(d, a).unwrap_or(0);
    Ok(s.remote
        .session
        .devices
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let i = i as i32;
            DeviceFacts {
                uuid: d.uuid,
                pci_domain: attr(i, ATTR_PCI_DOMAIN),
                pci_bus: attr(i, ATTR_PCI_BUS),
                pci_device: attr(i, ATTR_PCI_DEVICE),
            }
        })
        .collect())
}

// ---- tables whose entries are not publicly described ---------------------

static SEEN_SLOTS: Mutex<Option<HashSet<(&'static str, usize)>>> = Mutex::new(None);

/// An undescribed entry was called: log it once, answer 0.
fn undescribed(table: &'static str, slot: usize) -> usize {
    let first = SEEN_SLOTS
        .lock()
        .map(|mut g| g.get_or_insert_with(HashSet::new).insert((table, slot)))
        .unwrap_or(false);
    if first {
        tracing::info!(table, slot, "export table entry called; gpupool answers 0");
    }
    0
}

extern "C" fn cublas_slot<const I: usize>() -> usize {
    std::panic::catch_unwind(|| undescribed("21318c60 (cuBLAS context)", I)).unwrap_or(0)
}

extern "C" fn torch_slot<const I: usize>() -> usize {
    std::panic::catch_unwind(|| undescribed("69a28e9f (PyTorch)", I)).unwrap_or(0)
}

extern "C" fn cublaslt_slot<const I: usize>() -> usize {
    std::panic::catch_unwind(|| undescribed("1734dc26 (cuBLASLt)", I)).unwrap_or(0)
}

extern "C" fn tools_module_slot<const I: usize>() -> usize {
    std::panic::catch_unwind(|| undescribed("6e163fbe (tools module)", I)).unwrap_or(0)
}

extern "C" fn cupti_slot<const I: usize>() -> usize {
    std::panic::catch_unwind(|| undescribed("7cb63f9b (CUPTI)", I)).unwrap_or(0)
}

macro_rules! logged_table {
    ($f:ident; $($i:literal)*) => {
        [$( $f::<$i> as *const c_void ),*]
    };
}

const fn with_size<const N: usize, const M: usize>(slots: [*const c_void; M]) -> Table<N> {
    let mut t = [NULL; N];
    t[0] = size_word(N);
    let mut i = 0;
    while i < M {
        t[i + 1] = slots[i];
        i += 1;
    }
    Table(t)
}

/// A table with one slot's entry replaced.
const fn with_entry<const N: usize>(mut t: Table<N>, slot: usize, entry: *const c_void) -> Table<N> {
    t.0[slot] = entry;
    t
}

/// `21318c60…`: requested by cuBLAS, cuFFT and, at start-up, by cudart 13.5,
/// which crashes when it is missing. 93 words.
static CUBLAS_CONTEXT: Table<93> = with_entry(
    with_size(logged_table!(cublas_slot;
        1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39
        40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75
        76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92)),
    4,
    context_number as *const c_void,
);

/// `21318c60…` [4]: a number naming the context for as long as the process
/// lives (cuFFT keys its per-context kernel cache by the context and this
/// number, so a context made again at an old address is told apart): the
/// answer `cuCtxGetId` gives.
unsafe extern "C" fn context_number(ctx: CUcontext, number: *mut u64) -> CUresult {
    // SAFETY: the caller passes a writable u64; ctx_get_id checks NULL.
    guard("cuBLAS context: context number", || unsafe {
        calls::ctx_get_id(ctx, number)
    })
}

/// `6e163fbe…`: the driver's module and function internals (the tools'
/// `CU_ETID_ToolsModule`), requested by cuFFT. Real size unknown: cuFFT
/// checks only that it holds slot 7.
static TOOLS_MODULE: Table<64> = with_entry(
    with_size(logged_table!(tools_module_slot;
        1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39
        40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63)),
    7,
    module_functions as *const c_void,
);

/// Called once for each function of a module, with the caller's pointer.
type FunctionVisitor = unsafe extern "C" fn(user: *mut c_void, function: super::CUfunction);

/// `6e163fbe…` [7]: call `visit(user, function)` for each function of a
/// module. Answers 1 when every function was visited, 0 otherwise (an
/// unknown context or module, a module whose image the shim cannot read,
/// no visitor); cuFFT, which asks this of each kernel module it loads and
/// keeps the function it is given, takes anything but 1 as failure.
unsafe extern "C" fn module_functions(
    ctx: CUcontext,
    module: CUmodule,
    visit: Option<FunctionVisitor>,
    user: *mut c_void,
) -> u32 {
    let visited = guard("tools module: the functions of a module", || {
        let visit = visit.ok_or(CuError::INVALID_VALUE)?;
        // SAFETY: the shim's own handles; the functions are the server's.
        for f in unsafe { calls::module_functions(ctx, module) }? {
            // SAFETY: the caller's visitor, called as it asked, with its
            // own pointer.
            unsafe { visit(user, f) };
        }
        Ok(())
    });
    u32::from(visited == 0)
}

/// `69a28e9f…`: requested by PyTorch. 34 words.
static TORCH_TABLE: Table<34> = with_size(logged_table!(torch_slot;
    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33));

/// `1734dc26…`: requested by cuBLASLt's half-precision heuristics
/// (`cublasLtMatmulAlgoGetHeuristic`), which crash when it is missing.
static CUBLASLT_TABLE: Table<64> = with_size(logged_table!(cublaslt_slot;
    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39
    40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63));

/// `7cb63f9b…`: requested by CUPTI (PyTorch's profiler), which asks for it
/// again and again and then crashes when it is missing; with it, CUPTI
/// goes on without calling it.
static CUPTI_TABLE: Table<64> = with_size(logged_table!(cupti_slot;
    1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39
    40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63));

/// `f8cff951…`: requested first by cudart; its answer makes no observable
/// difference, so its entries do nothing.
static EARLY: Table<3> = Table([size_word(3), zero as *const c_void, zero as *const c_void]);

/// The table for a UUID, if gpupool serves it.
pub(crate) fn lookup(id: &[u8; 16]) -> Option<*const c_void> {
    Some(match *id {
        CUDART_INTERFACE_ID => CUDART_INTERFACE.start(),
        TOOLS_HOOKS_ID => TOOLS_HOOKS.start(),
        TOOLS_TLS_ID => TOOLS_TLS.start(),
        CONTEXT_STORAGE_ID => CONTEXT_STORAGE.start(),
        CONTEXT_CHECKS_ID => CONTEXT_CHECKS.start(),
        INTEGRITY_ID => INTEGRITY.start(),
        EARLY_ID => EARLY.start(),
        CUBLAS_CONTEXT_ID => CUBLAS_CONTEXT.start(),
        TORCH_TABLE_ID => TORCH_TABLE.start(),
        CUBLASLT_TABLE_ID => CUBLASLT_TABLE.start(),
        CUPTI_TABLE_ID => CUPTI_TABLE.start(),
        TOOLS_MODULE_ID => TOOLS_MODULE.start(),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(p: *const c_void, n: usize) -> Vec<usize> {
        // SAFETY: every table below has at least n words.
        unsafe { std::slice::from_raw_parts(p.cast::<usize>(), n) }.to_vec()
    }

    #[test]
    fn sizes_match_the_real_driver() {
        for (id, size) in [
            (CUDART_INTERFACE_ID, 104),
            (TOOLS_HOOKS_ID, 56),
            (TOOLS_TLS_ID, 24),
            (CONTEXT_CHECKS_ID, 120),
            (INTEGRITY_ID, 24),
            (EARLY_ID, 24),
            (CUBLAS_CONTEXT_ID, 744),
            (TORCH_TABLE_ID, 272),
            (CUBLASLT_TABLE_ID, 512),
            (CUPTI_TABLE_ID, 512),
            (TOOLS_MODULE_ID, 512),
        ] {
            let t = lookup(&id).expect("served");
            assert_eq!(words(t, 1)[0], size, "table {id:02x?}");
        }
        // Context-local storage has no size word: three functions, then NULL.
        let cls = words(lookup(&CONTEXT_STORAGE_ID).unwrap(), 4);
        assert!(cls[..3].iter().all(|&w| w > 4096));
        assert_eq!(cls[3], 0);
        assert!(lookup(&[0; 16]).is_none());
    }

    /// cuBLASLt reads slot 2's answer whatever it returns: it must always be
    /// written, NULL without a current context, the top of the thread's
    /// context stack otherwise.
    #[test]
    fn tools_tls_gives_the_threads_current_context() {
        let t = words(lookup(&TOOLS_TLS_ID).unwrap(), 3);
        // SAFETY: slot 2 is thread_context.
        let f: unsafe extern "C" fn(*mut CUcontext) -> CUresult = unsafe { std::mem::transmute(t[2]) };
        std::thread::spawn(move || {
            let mut ctx = 0x0040_0000_0040_usize as CUcontext;
            // SAFETY: a writable slot; NULL is refused.
            unsafe {
                assert_eq!(f(&mut ctx), 0);
                assert!(ctx.is_null());
                crate::state::push_current((0x5eed_0000_1000, 0));
                assert_eq!(f(&mut ctx), 0);
                assert_eq!(ctx as usize, 0x5eed_0000_1000);
                assert_eq!(f(std::ptr::null_mut()), CuError::INVALID_VALUE.0);
            }
        })
        .join()
        .unwrap();
    }

    /// Without a connection the tools module table's iteration fails as the
    /// caller expects failure told: 0, and the visitor is never called.
    #[test]
    fn module_functions_answers_0_when_it_cannot_list() {
        unsafe extern "C" fn never(_user: *mut c_void, _f: super::super::CUfunction) {
            panic!("visited");
        }
        let t = words(lookup(&TOOLS_MODULE_ID).unwrap(), 8);
        type Iterate = unsafe extern "C" fn(CUcontext, CUmodule, Option<FunctionVisitor>, *mut c_void) -> u32;
        // SAFETY: slot 7 is module_functions.
        let f: Iterate = unsafe { std::mem::transmute(t[7]) };
        let m = 0x5eed_0000_1170usize as CUmodule;
        // SAFETY: the handles are unknown; nothing is dereferenced.
        unsafe {
            assert_eq!(f(std::ptr::null_mut(), m, Some(never), std::ptr::null_mut()), 0);
            assert_eq!(f(std::ptr::null_mut(), m, None, std::ptr::null_mut()), 0);
        }
    }

    #[test]
    fn uuid_byte_order() {
        assert_eq!(&CUDART_INTERFACE_ID[..4], &[0x6b, 0xd5, 0xfb, 0x6c]);
        assert_eq!(CUDART_INTERFACE_ID[15], 0xf9);
    }

    #[test]
    fn context_storage_round_trip_and_destructors() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static DESTROYED: AtomicUsize = AtomicUsize::new(0);
        unsafe extern "C" fn dtor(_ctx: CUcontext, key: *mut c_void, value: *mut c_void) {
            assert_eq!(key as usize, 0x51);
            DESTROYED.store(value as usize, Ordering::SeqCst);
        }
        let ctx = 0x7777usize as CUcontext;
        let key = 0x51usize as *mut c_void;
        let mut v: *mut c_void = std::ptr::null_mut();
        unsafe {
            assert_eq!(storage_get(&mut v, ctx, key), CuError::INVALID_HANDLE.0);
            assert_eq!(storage_put(ctx, key, 0xabc as *mut c_void, Some(dtor)), 0);
            assert_eq!(storage_get(&mut v, ctx, key), 0);
        }
        assert_eq!(v as usize, 0xabc);
        context_gone(0x7777);
        assert_eq!(DESTROYED.load(Ordering::SeqCst), 0xabc);
        unsafe {
            assert_eq!(storage_get(&mut v, ctx, key), CuError::INVALID_HANDLE.0);
            assert_eq!(storage_put(ctx, key, 0x10 as *mut c_void, None), 0);
            assert_eq!(storage_delete(ctx, key), 0);
            assert_eq!(storage_get(&mut v, ctx, key), CuError::INVALID_HANDLE.0);
        }
    }

    #[test]
    fn undescribed_slots_answer_zero() {
        let t = words(lookup(&CUBLAS_CONTEXT_ID).unwrap(), 93);
        // SAFETY: slot 39 is one of the logged functions.
        let f: extern "C" fn() -> usize = unsafe { std::mem::transmute(t[39]) };
        assert_eq!(f(), 0);
    }
}
