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

/// One anonymous private mapping, unmapped on drop.
#[derive(Debug)]
pub struct Mapping {
    addr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; the driver only
// touches it while holding the global driver lock.
unsafe impl Send for Mapping {}

impl Mapping {
    /// Maps `len` (> 0) zeroed bytes; pages are committed on first touch.
    pub fn new(len: usize) -> Option<Mapping> {
        if len == 0 {
            return None;
        }
        // SAFETY: an anonymous private mapping with no address hint has no
        // preconditions; the result is checked against MAP_FAILED.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
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
        Some(Mapping { addr: addr.cast(), len })
    }

    pub fn addr(&self) -> u64 {
        self.addr as u64
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr`/`len` describe a mapping created in `Mapping::new`
        // and owned solely by this value, so it is unmapped exactly once.
        unsafe {
            libc::munmap(self.addr.cast(), self.len);
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

    pub fn remove(&mut self, base: u64) -> Option<Allocation> {
        self.map.remove(&base)
    }

    /// Removes every allocation matching `pred`, returning them.
    pub fn remove_where(&mut self, mut pred: impl FnMut(&Allocation) -> bool) -> Vec<Allocation> {
        let bases: Vec<u64> = self.map.iter().filter(|(_, a)| pred(a)).map(|(b, _)| *b).collect();
        bases.into_iter().filter_map(|b| self.map.remove(&b)).collect()
    }

    /// The allocation containing all of `addr .. addr + len` (`len` > 0),
    /// as `(base, allocation)`.
    pub fn containing(&self, addr: u64, len: u64) -> Option<(u64, &Allocation)> {
        let (&base, alloc) = self.map.range(..=addr).next_back()?;
        let end = addr.checked_add(len)?;
        (end <= base + alloc.size).then_some((base, alloc))
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
