//! The operating system's page mappings for managed memory, and the fault
//! handler that keeps them coherent: the FFI to the C library's `mmap`,
//! `mprotect`, `mremap`, `munmap` and `sigaction` lives here, behind safe
//! functions over address ranges the shim owns.
//!
//! A managed allocation's host copy sits at the very address of its device
//! memory, so that the program uses one pointer on both sides. Which pages
//! hold current data is kept by [`crate::exports::calls::managed`]: pages
//! the device holds are inaccessible, and the program's first touch of one
//! faults into [`install_fault_handler`]'s handler, which fetches them.

use std::ffi::c_void;
use std::io;
use std::sync::OnceLock;

/// The system's page size.
pub fn page_size() -> usize {
    static PAGE: OnceLock<usize> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        usize::try_from(p).ok().filter(|p| p.is_power_of_two()).unwrap_or(4096)
    })
}

/// What the program may do with a range of pages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    None,
    Read,
    ReadWrite,
}

impl Access {
    fn prot(self) -> i32 {
        match self {
            Access::None => libc::PROT_NONE,
            Access::Read => libc::PROT_READ,
            Access::ReadWrite => libc::PROT_READ | libc::PROT_WRITE,
        }
    }
}

/// Map `len` bytes of zeroed, read-only pages at exactly `addr` (page
/// aligned), failing with `AlreadyExists` where anything is mapped there
/// already: nothing of the process is ever replaced.
pub fn map_zeroed_at(addr: usize, len: usize) -> io::Result<()> {
    map_anonymous_at(addr, len, libc::PROT_READ)
}

/// Hold `len` bytes at exactly `addr` (page aligned) with pages of no
/// access and no memory behind them, so that nothing else of the process
/// is mapped there; `AlreadyExists` where anything is mapped already.
pub fn hold_at(addr: usize, len: usize) -> io::Result<()> {
    map_anonymous_at(addr, len, libc::PROT_NONE)
}

/// Fresh anonymous pages at exactly `addr`, never replacing anything.
fn map_anonymous_at(addr: usize, len: usize, prot: i32) -> io::Result<()> {
    if !addr.is_multiple_of(page_size()) || len == 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE;
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping; the
    // new one is anonymous and owned by the caller from here on.
    let got = unsafe { libc::mmap(addr as *mut c_void, len, prot, flags, -1, 0) };
    if got == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    if got as usize != addr {
        // A kernel older than MAP_FIXED_NOREPLACE took the address as a
        // hint and mapped elsewhere.
        // SAFETY: the mapping was just made, and nothing else knows it.
        unsafe { libc::munmap(got, len) };
        return Err(io::Error::from(io::ErrorKind::AlreadyExists));
    }
    Ok(())
}

/// Map `len` bytes of zeroed pages twice over one memory file: read-only at
/// exactly `addr` (page aligned) for the program, as [`map_zeroed_at`]
/// does, and writable wherever the kernel puts it for the shim. Returns the
/// shim's view. The shim fills device data into its view while the
/// program's pages stay inaccessible, then opens them: no fresh pages for
/// every fetch, and no thread of the program sees a half-filled page.
/// Neither mapping is inherited by a forked child (which cannot use CUDA).
pub fn map_shared_at(addr: usize, len: usize) -> io::Result<usize> {
    if !addr.is_multiple_of(page_size()) || len == 0 {
        return Err(io::Error::from(io::ErrorKind::InvalidInput));
    }
    // SAFETY: the name is NUL-terminated; the file is new and the caller's.
    let fd = unsafe { libc::memfd_create(c"gpupool-managed".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    let mapped = (|| {
        // SAFETY: fd is the new file's.
        if unsafe { libc::ftruncate(fd, len as libc::off_t) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let flags = libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE;
        // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping.
        let got = unsafe { libc::mmap(addr as *mut c_void, len, libc::PROT_READ, flags, fd, 0) };
        if got == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        if got as usize != addr {
            // A kernel older than MAP_FIXED_NOREPLACE mapped elsewhere.
            // SAFETY: just made, nothing else knows it.
            unsafe { libc::munmap(got, len) };
            return Err(io::Error::from(io::ErrorKind::AlreadyExists));
        }
        // SAFETY: a new shared mapping of the same file, anywhere.
        let view = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                0,
            )
        };
        if view == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            // SAFETY: made above, nothing else knows it.
            unsafe { libc::munmap(addr as *mut c_void, len) };
            return Err(e);
        }
        for at in [addr as *mut c_void, view] {
            // SAFETY: both are the mappings just made. Failing only keeps
            // them in a child, which is harmless.
            unsafe { libc::madvise(at, len, libc::MADV_DONTFORK) };
        }
        Ok(view as usize)
    })();
    // SAFETY: the mappings keep the file; the descriptor is not needed.
    unsafe { libc::close(fd) };
    mapped
}

/// Change what the program may do with `len` bytes at `addr`.
///
/// # Safety
/// The range lies inside a mapping made by [`map_zeroed_at`] and not yet
/// unmapped.
pub unsafe fn protect(addr: usize, len: usize, access: Access) -> io::Result<()> {
    // SAFETY: the caller's promise: the range is the shim's own mapping.
    match unsafe { libc::mprotect(addr as *mut c_void, len, access.prot()) } {
        0 => Ok(()),
        _ => Err(io::Error::last_os_error()),
    }
}

/// Unmap `len` bytes at `addr`.
///
/// # Safety
/// The range is a mapping made by [`map_zeroed_at`] or [`hold_at`] that
/// nothing uses any more.
pub unsafe fn unmap(addr: usize, len: usize) {
    // SAFETY: the caller's promise.
    unsafe { libc::munmap(addr as *mut c_void, len) };
}

/// Fresh writable pages of the shim's own, to fill before they replace a
/// range of a managed allocation at once ([`Scratch::install`]).
pub struct Scratch {
    addr: usize,
    len: usize,
}

impl Scratch {
    pub fn new(len: usize) -> io::Result<Scratch> {
        // Populated at once: the fetch writes every page, and one call that
        // makes them all costs less than a fault for each.
        let flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE;
        // SAFETY: a new anonymous mapping wherever the kernel puts it.
        let got = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                flags,
                -1,
                0,
            )
        };
        if got == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Scratch {
            addr: got as usize,
            len,
        })
    }

    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.addr as *mut u8
    }

    /// Make the pages read-only and move them over `len` bytes at `target`
    /// in one step: no thread of the program ever sees the range half
    /// filled, or can write it before the shim knows.
    ///
    /// # Safety
    /// `target` names a range of the same length inside a mapping made by
    /// [`map_zeroed_at`].
    pub unsafe fn install(self, target: usize) -> io::Result<()> {
        let (addr, len) = (self.addr, self.len);
        // SAFETY: the scratch pages are this value's own.
        if unsafe { libc::mprotect(addr as *mut c_void, len, libc::PROT_READ) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: the source is this value's mapping, the target the
        // caller's promise; MREMAP_FIXED replaces the target's pages with
        // the source's, atomically for other threads.
        let got = unsafe {
            libc::mremap(
                addr as *mut c_void,
                len,
                len,
                libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                target as *mut c_void,
            )
        };
        if got == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        // The pages moved: nothing is left to unmap.
        std::mem::forget(self);
        Ok(())
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        // SAFETY: the mapping is this value's own and still in place.
        unsafe { libc::munmap(self.addr as *mut c_void, self.len) };
    }
}

/// What the fault handler asks: whether a fault at this address was one of
/// managed memory, now resolved (the access is retried).
pub type FaultResolver = fn(usize) -> bool;

static RESOLVER: OnceLock<FaultResolver> = OnceLock::new();
static PREVIOUS: OnceLock<libc::sigaction> = OnceLock::new();
/// The process that installed the handler. A forked child inherits the
/// handler but not the managed pages (nor a session of its own): its
/// faults are never the shim's to serve.
static OWNER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

/// Install the handler for `SIGSEGV` once: faults `resolve` claims are
/// retried; any other goes to the handler that was there before (the
/// default one ends the program as it would have).
pub fn install_fault_handler(resolve: FaultResolver) -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let done = INSTALLED.get_or_init(|| {
        RESOLVER.get_or_init(|| resolve);
        // SAFETY: getpid has no preconditions.
        OWNER.store(unsafe { libc::getpid() }, std::sync::atomic::Ordering::Release);
        // SAFETY: a zeroed sigaction is a valid value to fill in.
        let mut action: libc::sigaction = unsafe { std::mem::zeroed() };
        action.sa_sigaction = on_fault as *const () as usize;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
        // SAFETY: sa_mask is this value's own.
        unsafe { libc::sigemptyset(&mut action.sa_mask) };
        // SAFETY: as above.
        let mut previous: libc::sigaction = unsafe { std::mem::zeroed() };
        // SAFETY: both structs are valid; the handler is a plain function.
        if unsafe { libc::sigaction(libc::SIGSEGV, &action, &mut previous) } != 0 {
            return Err(io::Error::last_os_error().raw_os_error().unwrap_or(0));
        }
        PREVIOUS.get_or_init(|| previous);
        Ok(())
    });
    done.map_err(io::Error::from_raw_os_error)
}

extern "C" fn on_fault(signal: i32, info: *mut libc::siginfo_t, context: *mut c_void) {
    // SAFETY: errno is the thread's own; the handler restores it.
    let errno = unsafe { *libc::__errno_location() };
    // SAFETY: the kernel passes a valid siginfo for an SA_SIGINFO handler.
    let addr = unsafe { (*info).si_addr() } as usize;
    // SAFETY: getpid is async-signal-safe and has no preconditions.
    let ours = unsafe { libc::getpid() } == OWNER.load(std::sync::atomic::Ordering::Acquire);
    // A resolver that panics must not unwind into the faulting frame.
    let resolved = ours
        && RESOLVER
            .get()
            .is_some_and(|r| std::panic::catch_unwind(|| r(addr)).unwrap_or(false));
    if resolved {
        // SAFETY: as above.
        unsafe { *libc::__errno_location() = errno };
        return;
    }
    let Some(previous) = PREVIOUS.get() else { return };
    let handler = previous.sa_sigaction;
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        // Put the default action back: returning re-runs the faulting
        // access, which then ends the program as it would have without
        // gpupool.
        // SAFETY: a zeroed sigaction with SIG_DFL is the default action.
        let mut default: libc::sigaction = unsafe { std::mem::zeroed() };
        default.sa_sigaction = libc::SIG_DFL;
        // SAFETY: valid struct; no old action wanted.
        unsafe { libc::sigaction(libc::SIGSEGV, &default, std::ptr::null_mut()) };
    } else if previous.sa_flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the program installed this three-argument handler.
        let f = unsafe { std::mem::transmute::<usize, extern "C" fn(i32, *mut libc::siginfo_t, *mut c_void)>(handler) };
        f(signal, info, context);
    } else {
        // SAFETY: the program installed this one-argument handler.
        let f = unsafe { std::mem::transmute::<usize, extern "C" fn(i32)>(handler) };
        f(signal);
    }
}
