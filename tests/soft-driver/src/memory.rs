//! Simulated device memory: anonymous host mappings (lazily committed,
//! zero-filled) indexed by base address in an interval map.
//!
//! A device pointer handed out by the simulated driver *is* the host address
//! of its mapping. Every device range the driver or a kernel touches is
//! checked against the live allocations first, so a bad pointer becomes a
//! CUDA error, never a host fault.

use std::collections::BTreeMap;

/// Alignment guaranteed for device allocations (the real driver gives 256).
pub const ALLOC_ALIGN: u64 = 256;

/// Granularity of virtual memory management (`cuMemCreate`, `cuMemMap`),
/// as on current GPUs.
pub const VMM_GRANULARITY: u64 = 2 << 20;

/// One host mapping, unmapped on drop: anonymous and private, or (for
/// `cuMemMap`) shared memory placed inside a reservation, which dropping
/// gives back to the reservation.
#[derive(Debug)]
pub struct Mapping {
    addr: *mut u8,
    len: usize,
    /// Inside a reservation: on drop, put inaccessible address space back
    /// instead of unmapping.
    in_reservation: bool,
}

// SAFETY: the mapping is plain memory owned by this value; the driver only
// touches it while holding the global driver lock.
unsafe impl Send for Mapping {}

/// Where the next device memory is asked to go (`GPUPOOL_SOFT_DEVICE_ADDRESS`),
/// 0 where the kernel chooses.
static NEXT_PLACE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Ask for device memory from `base` up (a hint the kernel takes where the
/// addresses are free), so that a test knows where it will lie.
pub fn place_from(base: u64) {
    NEXT_PLACE.store(base, std::sync::atomic::Ordering::Relaxed);
}

impl Mapping {
    /// Maps `len` (> 0) zeroed bytes; pages are committed on first touch.
    pub fn new(len: usize) -> Option<Mapping> {
        use std::sync::atomic::Ordering;
        if len == 0 {
            return None;
        }
        let step = (len as u64).div_ceil(1 << 21) << 21;
        let hint = match NEXT_PLACE.load(Ordering::Relaxed) {
            0 => 0,
            _ => NEXT_PLACE.fetch_add(step, Ordering::Relaxed),
        };
        // SAFETY: an anonymous private mapping with at most an address hint
        // (never replacing anything) has no preconditions; the result is
        // checked against MAP_FAILED.
        let addr = unsafe {
            libc::mmap(
                hint as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED || addr.is_null() {
            return None;
        }
        Some(Mapping {
            addr: addr.cast(),
            len,
            in_reservation: false,
        })
    }

    /// Reserves `len` (> 0) bytes of inaccessible address space aligned to
    /// `align` (a power of two, at least a page).
    pub fn reserve(len: usize, align: usize) -> Option<Mapping> {
        let total = len.checked_add(align)?;
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked against MAP_FAILED.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                total,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED || addr.is_null() {
            return None;
        }
        let start = addr as usize;
        let base = (start + align - 1) & !(align - 1);
        // SAFETY: trimming the parts of the mapping just made that lie
        // before and after the aligned range.
        unsafe {
            if base > start {
                libc::munmap(addr, base - start);
            }
            let tail = start + total - (base + len);
            if tail > 0 {
                libc::munmap((base + len) as *mut libc::c_void, tail);
            }
        }
        Some(Mapping {
            addr: base as *mut u8,
            len,
            in_reservation: false,
        })
    }

    /// Maps `len` bytes of the shared memory `fd` from `offset`, readable
    /// and writable, at `addr`, which must lie in a reservation.
    ///
    /// # Safety
    /// `addr .. addr + len` must be inaccessible address space of a live
    /// reservation that nothing else maps.
    pub unsafe fn place(addr: u64, len: usize, fd: i32, offset: u64) -> Option<Mapping> {
        // SAFETY: the caller's promise; MAP_FIXED replaces only reserved,
        // unused address space.
        let got = unsafe {
            libc::mmap(
                addr as *mut libc::c_void,
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd,
                offset as libc::off_t,
            )
        };
        if got == libc::MAP_FAILED || got as u64 != addr {
            return None;
        }
        Some(Mapping {
            addr: addr as *mut u8,
            len,
            in_reservation: true,
        })
    }

    /// Back this (anonymous, private) mapping with a shared-memory file,
    /// at the same address and with the same contents, and give the file,
    /// which another process may map too (`cuIpcGetMemHandle`).
    ///
    /// # Safety
    /// Nothing may touch the mapping while it is moved onto the file.
    pub unsafe fn share(&mut self) -> Option<std::os::fd::OwnedFd> {
        use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
        if self.in_reservation {
            return None;
        }
        // SAFETY: memfd_create takes a NUL-terminated name and flags.
        let fd = unsafe { libc::memfd_create(c"gpupool-soft-ipc".as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return None;
        }
        // SAFETY: fd was just made and is owned here alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut file = std::fs::File::from(fd);
        // SAFETY: addr .. addr + len is this mapping, readable; the caller
        // promises nothing writes it meanwhile.
        let contents = unsafe { std::slice::from_raw_parts(self.addr, self.len) };
        if std::io::Write::write_all(&mut file, contents).is_err() {
            return None;
        }
        let fd = OwnedFd::from(file);
        // SAFETY: MAP_FIXED replaces exactly this value's own mapping with
        // the file, which now holds the same bytes.
        let got = unsafe {
            libc::mmap(
                self.addr.cast(),
                self.len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_FIXED,
                fd.as_raw_fd(),
                0,
            )
        };
        (got == self.addr.cast()).then_some(fd)
    }

    /// Map `len` bytes of the shared-memory file at `path` (another
    /// process's, through `/proc`), wherever the kernel puts them.
    pub fn open_shared(path: &std::path::Path, len: usize) -> std::io::Result<Mapping> {
        use std::os::fd::AsRawFd;
        let file = std::fs::OpenOptions::new().read(true).write(true).open(path)?;
        if len == 0 || file.metadata()?.len() < len as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "shorter than the handle says",
            ));
        }
        // SAFETY: a shared mapping of an open file with no address hint has
        // no preconditions; the result is checked against MAP_FAILED.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if addr == libc::MAP_FAILED || addr.is_null() {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Mapping {
            addr: addr.cast(),
            len,
            in_reservation: false,
        })
    }

    pub fn addr(&self) -> u64 {
        self.addr as u64
    }

    pub fn bytes(&self) -> usize {
        self.len
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` describe a mapping this value made and owns
        // alone, so it is undone exactly once; one placed in a reservation
        // is replaced by inaccessible address space, as reserved.
        unsafe {
            if self.in_reservation {
                libc::mmap(
                    self.addr.cast(),
                    self.len,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED,
                    -1,
                    0,
                );
            } else {
                libc::munmap(self.addr.cast(), self.len);
            }
        }
    }
}

/// What an allocation was made for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AllocKind {
    /// `cuMemAlloc`.
    Device,
    /// Storage of a module's `.global` / `.const` variable (owned by the module).
    ModuleVariable { module: u64 },
    /// Physical memory mapped into a reservation (`cuMemMap`).
    Mapped { handle: u64 },
    /// Another process's allocation at `base` opened here
    /// (`cuIpcOpenMemHandle`); charged to that process.
    Opened { pid: u32, base: u64 },
    /// Another process's allocation at `base` imported from its pool
    /// (`cuMemPoolImportPointer`); freed here with `cuMemFree(Async)`,
    /// charged to that process.
    PoolImported { pid: u32, base: u64 },
}

#[derive(Debug)]
pub struct Allocation {
    /// Bytes requested (the valid range is `base .. base + size`).
    pub size: u64,
    /// Bytes charged against the device's capacity.
    pub charged: u64,
    pub ctx: u64,
    pub device: usize,
    pub kind: AllocKind,
    pub mapping: Mapping,
}

/// Live device allocations keyed by base address.
#[derive(Debug, Default)]
pub struct AllocationMap {
    map: BTreeMap<u64, Allocation>,
}

impl AllocationMap {
    pub fn insert(&mut self, alloc: Allocation) -> u64 {
        let base = alloc.mapping.addr();
        self.map.insert(base, alloc);
        base
    }

    pub fn get(&self, base: u64) -> Option<&Allocation> {
        self.map.get(&base)
    }

    pub fn get_mut(&mut self, base: u64) -> Option<&mut Allocation> {
        self.map.get_mut(&base)
    }

    pub fn remove(&mut self, base: u64) -> Option<Allocation> {
        self.map.remove(&base)
    }

    /// The bases of every allocation matching `pred`.
    pub fn bases_where(&self, mut pred: impl FnMut(&Allocation) -> bool) -> Vec<u64> {
        self.map.iter().filter(|(_, a)| pred(a)).map(|(b, _)| *b).collect()
    }

    /// Removes every allocation matching `pred`, returning them.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&Allocation) -> bool) -> Vec<Allocation> {
        let bases: Vec<u64> = self.map.iter().filter(|(_, a)| pred(a)).map(|(b, _)| *b).collect();
        bases.into_iter().filter_map(|b| self.map.remove(&b)).collect()
    }

    /// The allocation containing all of `addr .. addr + len` (`len` > 0),
    /// as `(base, allocation)`; a range may also run on through mappings
    /// that follow on from each other (as one reservation's pieces do).
    pub fn containing(&self, addr: u64, len: u64) -> Option<(u64, &Allocation)> {
        let (&base, alloc) = self.map.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        if addr >= base + alloc.size.max(1) {
            return None;
        }
        let mut reach = base + alloc.size;
        let mapped = |a: &Allocation| matches!(a.kind, AllocKind::Mapped { .. });
        if end > reach && mapped(alloc) {
            for (&b, a) in self.map.range(reach..end) {
                if b != reach || !mapped(a) {
                    break;
                }
                reach = b + a.size;
            }
        }
        (end <= reach).then_some((base, alloc))
    }

    /// Whether anything lies in `addr .. addr + len`.
    pub fn any_in(&self, addr: u64, len: u64) -> bool {
        let end = addr.saturating_add(len);
        self.map
            .range(..end)
            .next_back()
            .is_some_and(|(&b, a)| b + a.size > addr)
    }
}

/// Rounds `n` up to a multiple of `to` (a power of two).
pub fn round_up(n: u64, to: u64) -> Option<u64> {
    Some(n.checked_add(to - 1)? & !(to - 1))
}

/// Page size of the host.
pub fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as u64
    } else {
        4096
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alloc(size: u64) -> Allocation {
        Allocation {
            size,
            charged: size,
            ctx: 1,
            device: 0,
            kind: AllocKind::Device,
            mapping: Mapping::new(size as usize).unwrap(),
        }
    }

    #[test]
    fn interval_lookup() {
        let mut m = AllocationMap::default();
        let a = m.insert(alloc(1000));
        assert_eq!(a % ALLOC_ALIGN, 0);
        assert!(m.containing(a, 1000).is_some());
        assert!(m.containing(a + 999, 1).is_some());
        assert!(m.containing(a + 999, 2).is_none());
        assert!(m.containing(a + 1000, 1).is_none());
        assert!(m.containing(u64::MAX, 2).is_none());
        let p = a as *const u8;
        // SAFETY: `p` points into the 1000-byte mapping made above.
        let v = unsafe { p.cast::<u32>().read() };
        assert_eq!(v, 0, "fresh memory is zeroed");
        assert!(m.remove(a).is_some());
        assert!(m.containing(a, 1).is_none());
    }
}
