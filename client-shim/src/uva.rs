//! The device memory the program may address, held in the program's own
//! address space too. With unified addressing a pointer is either host or
//! device memory, and calls that take either (`cuMemcpy`, pointer queries,
//! the memsets and copies of pinned host memory) tell them apart by
//! address. The server's addresses are another process's, so a program
//! buffer could lie at an address of its device memory. Each device range
//! is therefore held here with pages of no access ([`pages::hold_at`]):
//! nothing the program maps later lands in it, and a range that falls on
//! memory the program already has is told to the caller, which allocates
//! again where it can. Pages stay held when their range goes: the driver
//! gives freed addresses out again (a pool's, at every allocation), which
//! then cost no system call, and holding costs no memory. Only the shim's
//! managed memory, which maps pages of its own at device addresses, gives
//! held pages back ([`DeviceMap::give_back`]).

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

/// The smallest stretch around a mapping of the program's that holding
/// halves down to: the system calls stay few (two per stretch) however
/// large the clash.
const HALVE_DOWN_TO: u64 = 2 << 20;

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
        self.hold_range(base, range.size)
    }

    /// Hold the pages of `base..base+size` without keeping a range there
    /// (an address reservation, whose mappings are kept as they come).
    /// False where some of them could not be held, as for [`DeviceMap::insert`].
    pub fn hold_range(&mut self, base: u64, size: u64) -> bool {
        let (start, end) = span(base, size);
        let mut clear = true;
        for (a, b) in self.gaps(start, end) {
            clear &= self.hold(a, b);
        }
        clear
    }

    /// Keep a range whose pages the shim has mapped itself (managed
    /// memory), holding nothing for it.
    pub fn insert_mapped(&mut self, base: u64, range: DeviceRange) {
        self.ranges.insert(base, range);
    }

    /// Hold the pages `a..b`, or where something is mapped among them, the
    /// rest of them (halving around what is there, down to stretches of
    /// [`HALVE_DOWN_TO`]); false where something is. Where the system refuses for another reason (a limit on the
    /// process's address space), the pages are left unheld, as the program
    /// would have had them without gpupool, and that is said once.
    fn hold(&mut self, a: u64, b: u64) -> bool {
        let page = pages::page_size() as u64;
        let Some((addr, len)) = usize::try_from(a).ok().zip(usize::try_from(b - a).ok()) else {
            return true;
        };
        match pages::hold_at(addr, len) {
            Ok(()) => {
                self.note_held(a, b);
                return true;
            }
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                static SAID: std::sync::Once = std::sync::Once::new();
                SAID.call_once(|| {
                    tracing::warn!(
                        "cannot hold device memory's addresses in this process ({e}); a program buffer may come \
                         to lie at a device address, which calls given an address of either kind then take \
                         for device memory"
                    )
                });
                return true;
            }
            Err(_) => {}
        }
        if b - a <= HALVE_DOWN_TO.max(page) {
            return false;
        }
        let mid = a + (b - a) / page / 2 * page;
        let first = self.hold(a, mid);
        self.hold(mid, b) && first
    }

    /// Forget the range at `base` (its pages stay held).
    pub fn remove(&mut self, base: &u64) -> Option<DeviceRange> {
        self.ranges.remove(base)
    }

    /// Keep only the ranges `keep` says (the others' pages stay held).
    pub fn retain(&mut self, keep: impl FnMut(&u64, &mut DeviceRange) -> bool) {
        self.ranges.retain(keep);
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

    /// Note `a..b` held, joined to the held intervals it touches.
    fn note_held(&mut self, mut a: u64, mut b: u64) {
        if let Some((&pa, &pb)) = self.held.range(..a).next_back() {
            if pb == a {
                self.held.remove(&pa);
                a = pa;
            }
        }
        if let Some(nb) = self.held.remove(&b) {
            b = nb;
        }
        self.held.insert(a, b);
    }

    /// Give back the held pages among `addr..addr+len` (page aligned), for
    /// the shim to map its own there. No range may lie there.
    pub fn give_back(&mut self, addr: u64, len: u64) {
        let (start, end) = (addr, addr.saturating_add(len));
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
            // `hold_at`, where (the caller's promise) no range lies.
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

    /// The tests map and unmap at addresses they found free: one at a time.
    static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

    /// A free stretch of address space of `len` bytes, page aligned, far
    /// below where the kernel places mappings of its own choosing (top
    /// down from the top of the address space), so that no thread's stack
    /// or allocation lands in it while a test runs.
    fn free_area(len: usize) -> u64 {
        let mut at = 0x1000_0000_0000u64 + (std::process::id() as u64 % 4096) * (1 << 30);
        loop {
            if pages::hold_at(at as usize, len).is_ok() {
                // SAFETY: the probe was just made here.
                unsafe { pages::unmap(at as usize, len) };
                return at;
            }
            at += 1 << 30;
        }
    }

    #[test]
    fn device_ranges_hold_their_pages_until_given_back() {
        let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
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
        // Gone ranges leave their pages held, and a range there again
        // holds nothing new.
        assert!(map.remove(&(area + 100)).is_some());
        map.retain(|_, _| false);
        assert!(map.is_empty());
        assert!(taken(area) && taken(area + 5 * page));
        assert!(map.insert(area + 4 * page, range(page)));
        assert_eq!(map.held.len(), 2, "adjacent holds are one: {:?}", map.held);
        // Given back for the shim's own mapping: just those pages.
        map.remove(&(area + 4 * page));
        map.give_back(area + 5 * page, page);
        assert!(!taken(area + 5 * page) && taken(area + 4 * page) && taken(area + 6 * page));
        map.give_back(area, 16 * page);
        assert!(!taken(area) && !taken(area + 6 * page) && map.held.is_empty());
    }

    #[test]
    fn pages_the_system_will_not_hold_are_no_clash() {
        let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        // Above the top of the user address space: refused, but not
        // because anything is mapped there.
        let mut map = DeviceMap::default();
        let top = 1u64 << 60;
        assert!(
            map.insert(top, range(1 << 20)),
            "a refusal other than a clash is no clash"
        );
        assert!(map.held.is_empty());
    }

    #[test]
    fn a_range_on_the_programs_memory_is_told_and_its_memory_left_alone() {
        let _one = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let page = pages::page_size() as u64;
        let mib = 1 << 20;
        let area = free_area(8 * mib as usize);
        // The program's own page 3 MiB in.
        let mine = area + 3 * mib + page;
        pages::map_zeroed_at(mine as usize, page as usize).unwrap();
        let mut map = DeviceMap::default();
        assert!(!map.insert(area, range(8 * mib)), "a clash must be told");
        // Held around it, in the halves that hold none of it.
        assert!(taken(area) && taken(area + 2 * mib - page) && taken(area + 4 * mib) && taken(area + 8 * mib - page));
        assert!(!taken(area + 2 * mib) && !taken(area + 4 * mib - page));
        map.remove(&area);
        map.give_back(area, 8 * mib);
        assert!(!taken(area) && !taken(area + 4 * mib));
        // The program's page is still its own, readable.
        // SAFETY: the page was mapped readable above and is still mapped.
        assert_eq!(unsafe { *(mine as *const u8) }, 0);
        // SAFETY: the test's own mapping.
        unsafe { pages::unmap(mine as usize, page as usize) };
    }
}
