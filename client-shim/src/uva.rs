//! The device memory the program may address, held in the program's own
//! address space too. With unified addressing a pointer is either host or
//! device memory, and calls that take either (`cuMemcpy`, pointer queries,
//! the memsets and copies of pinned host memory) tell them apart by
//! address. The server's addresses are another process's, so a program
//! buffer could lie at an address of its device memory. Each device range
//! is therefore held here with pages of no access ([`pages::hold_at`]):
//! nothing the program maps later lands in it, and a range that falls on
//! memory the program already has is told to the caller, which allocates
//! again where it can.

use crate::pages;
use crate::state::DeviceRange;
use std::collections::BTreeMap;
use std::ops::Deref;

/// Device ranges by base address, with the pages held for them.
#[derive(Debug, Default)]
pub struct DeviceMap {
    ranges: BTreeMap<u64, DeviceRange>,
    /// Page intervals `start -> end` held by this map, disjoint.
    held: BTreeMap<u64, u64>,
}

impl Deref for DeviceMap {
    type Target = BTreeMap<u64, DeviceRange>;
    fn deref(&self) -> &Self::Target {
        &self.ranges
    }
}

/// The pages `base..base+size` touch (a range of no size, one byte's).
fn span(base: u64, size: u64) -> (u64, u64) {
    let page = pages::page_size() as u64;
    let start = base - base % page;
    let end = base.saturating_add(size.max(1)).div_ceil(page).saturating_mul(page);
    (start, end)
}

impl DeviceMap {
    /// Keep a range (replacing one at the same base) and hold its pages.
    /// False where some of them could not be held: the program has memory
    /// there (or the shim's managed memory, which holds its own pages).
    pub fn insert(&mut self, base: u64, range: DeviceRange) -> bool {
        self.ranges.insert(base, range);
        let (start, end) = span(base, range.size);
        let mut clear = true;
        for (a, b) in self.gaps(start, end) {
            clear &= self.hold(a, b);
        }
        clear
    }

    /// Hold the pages `a..b`, or where something is mapped among them, the
    /// rest of them (halving around what is there); whether all were held.
    fn hold(&mut self, a: u64, b: u64) -> bool {
        let page = pages::page_size() as u64;
        let held = usize::try_from(a)
            .ok()
            .zip(usize::try_from(b - a).ok())
            .is_some_and(|(addr, len)| pages::hold_at(addr, len).is_ok());
        if held {
            self.held.insert(a, b);
            return true;
        }
        if b - a <= page {
            return false;
        }
        let mid = a + (b - a) / page / 2 * page;
        let first = self.hold(a, mid);
        self.hold(mid, b) && first
    }

    /// Forget the range at `base`, and give back the pages no other range
    /// touches.
    pub fn remove(&mut self, base: &u64) -> Option<DeviceRange> {
        let range = self.ranges.remove(base)?;
        self.release(*base, range.size);
        Some(range)
    }

    /// Keep only the ranges `keep` says, giving back the others' pages.
    pub fn retain(&mut self, mut keep: impl FnMut(&u64, &mut DeviceRange) -> bool) {
        let mut gone = Vec::new();
        self.ranges.retain(|b, r| {
            let k = keep(b, r);
            if !k {
                gone.push((*b, r.size));
            }
            k
        });
        for (b, size) in gone {
            self.release(b, size);
        }
    }

    /// The ranges, to change what they say (not where they lie).
    pub fn values_mut(&mut self) -> impl Iterator<Item = &mut DeviceRange> {
        self.ranges.values_mut()
    }

    /// The parts of `start..end` this map does not hold.
    fn gaps(&self, start: u64, end: u64) -> Vec<(u64, u64)> {
        let mut out = Vec::new();
        let mut at = start;
        let before = self.held.range(..start).next_back().map(|(&a, &b)| (a, b));
        for (a, b) in before
            .into_iter()
            .chain(self.held.range(start..end).map(|(&a, &b)| (a, b)))
        {
            if b <= at {
                continue;
            }
            if a > at {
                out.push((at, a.min(end)));
            }
            at = at.max(b);
            if at >= end {
                break;
            }
        }
        if at < end {
            out.push((at, end));
        }
        out
    }

    /// Give back the held pages of `base..base+size` that no remaining
    /// range touches.
    fn release(&mut self, base: u64, size: u64) {
        let (mut start, mut end) = span(base, size);
        // Ranges never share bytes, so another can touch only the first
        // and the last page.
        let page = pages::page_size() as u64;
        let before = self.ranges.range(..base).next_back();
        if before.is_some_and(|(&b, r)| span(b, r.size).1 > start) {
            start += page;
        }
        let after = self.ranges.range(base..).next();
        if after.is_some_and(|(&b, _)| b < end) {
            end -= page;
        }
        if start >= end {
            return;
        }
        let overlapping: Vec<(u64, u64)> = self
            .held
            .range(..end)
            .rev()
            .take_while(|(_, &b)| b > start)
            .map(|(&a, &b)| (a, b))
            .collect();
        for (a, b) in overlapping {
            let (from, to) = (a.max(start), b.min(end));
            if from >= to {
                continue;
            }
            // SAFETY: from..to lies in an interval this map held with
            // `hold_at`, which no range uses any more.
            unsafe { pages::unmap(from as usize, (to - from) as usize) };
            self.held.remove(&a);
            if a < from {
                self.held.insert(a, from);
            }
            if to < b {
                self.held.insert(to, b);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::RangeKind;

    fn range(size: u64) -> DeviceRange {
        DeviceRange {
            size,
            ctx: 1,
            device: 0,
            kind: RangeKind::Allocated,
            legacy_ipc: false,
        }
    }

    /// Whether anything is mapped at `addr`'s page (a probe mapping there
    /// fails), leaving nothing behind.
    fn taken(addr: u64) -> bool {
        let page = pages::page_size();
        let a = addr as usize - addr as usize % page;
        match pages::hold_at(a, page) {
            Ok(()) => {
                // SAFETY: the probe was just made here.
                unsafe { pages::unmap(a, page) };
                false
            }
            Err(_) => true,
        }
    }

    /// A free stretch of address space of `len` bytes, page aligned.
    fn free_area(len: usize) -> u64 {
        // SAFETY: a fresh anonymous mapping anywhere, unmapped at once.
        unsafe {
            let p = libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            );
            assert_ne!(p, libc::MAP_FAILED);
            libc::munmap(p, len);
            p as u64
        }
    }

    #[test]
    fn device_ranges_hold_their_pages_until_no_range_touches_them() {
        let page = pages::page_size() as u64;
        let area = free_area(16 * page as usize);
        let mut map = DeviceMap::default();
        // Two ranges sharing a page, and one of several pages.
        assert!(map.insert(area + 100, range(200)));
        assert!(map.insert(area + 400, range(page)));
        assert!(map.insert(area + 4 * page, range(3 * page)));
        for p in [area, area + page, area + 4 * page, area + 6 * page] {
            assert!(taken(p), "page {:#x} not held", p - area);
        }
        assert!(!taken(area + 2 * page) && !taken(area + 7 * page));
        // The first goes: the page it shares stays held for the second.
        assert!(map.remove(&(area + 100)).is_some());
        assert!(taken(area) && taken(area + page));
        assert!(map.remove(&(area + 400)).is_some());
        assert!(!taken(area) && !taken(area + page));
        map.retain(|_, _| false);
        assert!(!taken(area + 4 * page) && !taken(area + 6 * page));
        assert!(map.is_empty());
    }

    #[test]
    fn a_range_on_the_programs_memory_is_told_and_its_memory_left_alone() {
        let page = pages::page_size() as u64;
        let area = free_area(8 * page as usize);
        // The program's own memory on the third page.
        pages::map_zeroed_at((area + 2 * page) as usize, page as usize).unwrap();
        let mut map = DeviceMap::default();
        assert!(!map.insert(area + page, range(3 * page)), "a clash must be told");
        assert!(taken(area + page) && taken(area + 3 * page));
        map.remove(&(area + page));
        assert!(!taken(area + page) && !taken(area + 3 * page));
        // The program's page is still its own, readable.
        // SAFETY: the page was mapped readable above and is still mapped.
        assert_eq!(unsafe { *((area + 2 * page) as *const u8) }, 0);
        // SAFETY: the test's own mapping.
        unsafe { pages::unmap((area + 2 * page) as usize, page as usize) };
    }
}
