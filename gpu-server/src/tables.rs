//! One client's own tables: every handle and device address the client sends
//! is looked up here before the driver sees it. Plain data, no driver calls.

use gpupool_proto::message::Handle;
use std::collections::{BTreeMap, HashMap, HashSet};

/// `CUDA_ERROR_INVALID_VALUE`, `CUDA_ERROR_INVALID_CONTEXT`,
/// `CUDA_ERROR_INVALID_HANDLE`.
pub const INVALID_VALUE: u32 = 1;
pub const INVALID_CONTEXT: u32 = 201;
pub const INVALID_HANDLE: u32 = 400;

/// A memory pool the client may name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolEntry {
    /// Made (`cuMemPoolCreate`) or imported by this client, which destroys
    /// it at the end; a device's default or current pool is not.
    pub created: bool,
    /// The device whose memory it holds.
    pub device: i32,
}

/// A device memory range the client may address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub size: u64,
    pub ctx: Handle,
    pub kind: RegionKind,
}

/// How a region came to the client, which says how it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegionKind {
    /// `cuMemAlloc` and its kin: undone with `cuMemFree`.
    Allocated,
    /// A module global: belongs to its module, not to `cuMemFree`.
    Global,
    /// Physical memory mapped into a reserved range (`cuMemMap`): undone
    /// with `cuMemUnmap`.
    Mapped,
    /// Another session's memory opened here (`cuIpcOpenMemHandle`): undone
    /// with `cuIpcCloseMemHandle`, and not this client's to count.
    Opened,
}

/// A CUDA array of the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayInfo {
    pub ctx: Handle,
    /// Bytes in a row (width in elements times the element's size).
    pub row_bytes: u64,
    /// Rows in a slice and slices (or layers), each at least 1.
    pub rows: u64,
    pub slices: u64,
    /// Made for surface load and store (`CUDA_ARRAY3D_SURFACE_LDST`).
    pub surface: bool,
}

/// What one client holds.
#[derive(Debug, Default)]
pub struct Tables {
    /// Context -> device.
    pub contexts: HashMap<Handle, i32>,
    /// Device -> its primary context, while retained.
    pub primaries: HashMap<i32, Handle>,
    /// Module -> context.
    pub modules: HashMap<Handle, Handle>,
    /// Function -> module (0 for functions of library kernels).
    pub functions: HashMap<Handle, Handle>,
    pub libraries: HashSet<Handle>,
    /// A library's module in a context (`cuLibraryGetModule`) -> (library,
    /// context): named as a module, owned by the library.
    pub library_modules: HashMap<Handle, (Handle, Handle)>,
    /// Kernel -> library.
    pub kernels: HashMap<Handle, Handle>,
    /// Parameter layouts of functions and kernels. Each is forgotten when
    /// its function goes, and when the driver hands its handle out again:
    /// a real driver may give a later function or kernel the handle of a
    /// freed one, whose layout would otherwise be taken for it.
    pub layouts: HashMap<Handle, Vec<(u32, u32)>>,
    /// Parameter layouts by kernel name, read from the code of each module
    /// and library the client loaded, when the driver cannot give them
    /// (`cuFuncGetParamInfo` is CUDA 12.4's).
    pub code_layouts: HashMap<Handle, HashMap<String, Vec<(u32, u32)>>>,
    /// Stream -> context.
    pub streams: HashMap<Handle, Handle>,
    /// Event -> context.
    pub events: HashMap<Handle, Handle>,
    /// Graph -> context.
    pub graphs: HashMap<Handle, Handle>,
    /// Executable graph -> context.
    pub execs: HashMap<Handle, Handle>,
    /// Client-named stream or event -> the driver's handle for it.
    pub real: HashMap<Handle, Handle>,
    /// Base address -> region.
    pub memory: BTreeMap<u64, Region>,
    /// Memory pools this client may name.
    pub pools: HashMap<Handle, PoolEntry>,
    /// Reserved virtual address ranges (`cuMemAddressReserve`): base -> size.
    pub reservations: BTreeMap<u64, u64>,
    /// Physical allocations (`cuMemCreate`) -> (size, device).
    pub physical: HashMap<Handle, (u64, i32)>,
    /// References `cuMemRetainAllocationHandle` added to a physical
    /// allocation, each released by one `cuMemRelease` before the last.
    pub physical_retained: HashMap<Handle, u32>,
    /// Base of each mapping -> the physical allocation it maps.
    pub mapped_from: HashMap<u64, Handle>,
    /// SM resources handed to the client, by number (one more than the
    /// index), and each resource's number.
    pub resources: Vec<crate::driver::DevResource>,
    pub resource_ids: HashMap<crate::driver::DevResource, u32>,
    /// Resource descriptors made for the client (the driver frees them
    /// with the process).
    pub resource_descs: HashSet<Handle>,
    /// Green contexts -> the context each is (also in `contexts`).
    pub greens: HashMap<Handle, Handle>,
    /// CUDA arrays.
    pub arrays: HashMap<Handle, ArrayInfo>,
    /// Texture and surface objects -> (context, the array they read, if
    /// one).
    pub textures: HashMap<Handle, (Handle, Option<Handle>)>,
    pub surfaces: HashMap<Handle, (Handle, Handle)>,
    /// JIT linkers (`cuLinkCreate`).
    pub links: HashSet<Handle>,
    /// Nodes of graphs the client builds -> their graph.
    pub nodes: HashMap<Handle, Handle>,
    /// Conditional handles (the driver's values) -> the graph they were
    /// made for.
    pub conditionals: HashMap<u64, Handle>,
    /// Body graphs of conditional nodes -> the graph holding the node. The
    /// driver owns them: they go with that graph, never on their own.
    pub bodies: HashMap<Handle, Handle>,
    /// Child graph nodes -> their graph, once the session asked for it
    /// (`cuGraphChildGraphNodeGetGraph`; also in `bodies`: it goes with
    /// the node's graph, or the node).
    pub child_graphs: HashMap<Handle, Handle>,
}

impl Tables {
    /// `graph` went (with its nodes, conditional handles and the bodies
    /// of its conditional nodes, theirs too).
    pub fn forget_graph(&mut self, graph: Handle) {
        self.graphs.remove(&graph);
        self.nodes.retain(|_, g| *g != graph);
        let nodes = &self.nodes;
        self.child_graphs.retain(|n, _| nodes.contains_key(n));
        self.conditionals.retain(|_, g| *g != graph);
        let bodies: Vec<Handle> = self
            .bodies
            .iter()
            .filter(|(_, holder)| **holder == graph)
            .map(|(b, _)| *b)
            .collect();
        for b in bodies {
            self.bodies.remove(&b);
            self.forget_graph(b);
        }
    }

    pub fn context(&self, ctx: Handle) -> Result<i32, u32> {
        self.contexts.get(&ctx).copied().ok_or(INVALID_CONTEXT)
    }

    /// Check that `ptr..ptr+len` lies inside one region of this client, or
    /// in mappings that follow on from each other (memory mapped piece by
    /// piece into one reservation is one range to the program).
    pub fn check_range(&self, ptr: u64, len: u64) -> Result<Region, u32> {
        let (base, region) = self.region_at(ptr).ok_or(INVALID_VALUE)?;
        let end = ptr.checked_add(len).ok_or(INVALID_VALUE)?;
        let mut reach = base + region.size;
        if end > reach && region.kind == RegionKind::Mapped {
            for (&b, r) in self.memory.range(reach..end) {
                if b != reach || r.kind != RegionKind::Mapped {
                    break;
                }
                reach = b + r.size;
            }
        }
        if end > reach {
            return Err(INVALID_VALUE);
        }
        Ok(region)
    }

    /// The region of this client holding `ptr`, and its base.
    pub fn region_at(&self, ptr: u64) -> Option<(u64, Region)> {
        let (&base, &region) = self.memory.range(..=ptr).next_back()?;
        (ptr < base + region.size.max(1)).then_some((base, region))
    }

    /// Record an allocation; refuses overlap with anything already held
    /// (a driver handing out overlapping memory would be a bug to surface).
    pub fn add_region(&mut self, base: u64, region: Region) -> Result<(), u32> {
        if let Some((&b, r)) = self.memory.range(..base.saturating_add(region.size)).next_back() {
            let overlaps = b + r.size > base;
            let same_global =
                r.kind == RegionKind::Global && region.kind == RegionKind::Global && b == base && r.size == region.size;
            if overlaps && !same_global {
                return Err(INVALID_VALUE);
            }
        }
        self.memory.insert(base, region);
        Ok(())
    }

    /// Remove an allocation made by `cuMemAlloc`; the base must be exact.
    pub fn remove_allocation(&mut self, base: u64) -> Result<Region, u32> {
        match self.memory.get(&base) {
            Some(r) if r.kind == RegionKind::Allocated => Ok(self.memory.remove(&base).expect("present")),
            _ => Err(INVALID_VALUE),
        }
    }

    /// The reservation that holds all of `base .. base + size`.
    pub fn reservation_of(&self, base: u64, size: u64) -> Option<u64> {
        let (&b, &len) = self.reservations.range(..=base).next_back()?;
        let end = base.checked_add(size)?;
        (end <= b + len).then_some(b)
    }

    /// Bytes of device memory allocated (not counting module globals).
    pub fn allocated_bytes(&self) -> u64 {
        self.memory
            .values()
            .filter(|r| r.kind == RegionKind::Allocated)
            .map(|r| r.size)
            .sum()
    }

    /// Forget the functions of `modules`, with their layouts, and the
    /// modules' code layouts.
    pub fn forget_functions_of(&mut self, modules: &HashSet<Handle>) {
        let layouts = &mut self.layouts;
        self.functions.retain(|f, m| {
            let keep = !modules.contains(m);
            if !keep {
                layouts.remove(f);
            }
            keep
        });
        self.code_layouts.retain(|m, _| !modules.contains(m));
    }

    /// Forget an unloaded library: its kernels, its modules and their
    /// functions, with their layouts.
    pub fn forget_library(&mut self, library: Handle) {
        self.libraries.remove(&library);
        let layouts = &mut self.layouts;
        self.kernels.retain(|k, l| {
            let keep = *l != library;
            if !keep {
                layouts.remove(k);
            }
            keep
        });
        let mut gone: HashSet<Handle> = self
            .library_modules
            .iter()
            .filter(|(_, (l, _))| *l == library)
            .map(|(m, _)| *m)
            .collect();
        self.library_modules.retain(|m, _| !gone.contains(m));
        gone.insert(library);
        self.forget_functions_of(&gone);
    }

    /// Forget everything that lived in `ctx`.
    pub fn drop_context(&mut self, ctx: Handle) {
        self.contexts.remove(&ctx);
        self.primaries.retain(|_, c| *c != ctx);
        let modules: HashSet<Handle> = self
            .modules
            .iter()
            .filter(|(_, c)| **c == ctx)
            .map(|(m, _)| *m)
            .chain(
                self.library_modules
                    .iter()
                    .filter(|(_, (_, c))| *c == ctx)
                    .map(|(m, _)| *m),
            )
            .collect();
        self.modules.retain(|m, _| !modules.contains(m));
        self.library_modules.retain(|m, _| !modules.contains(m));
        self.forget_functions_of(&modules);
        self.streams.retain(|_, c| *c != ctx);
        self.events.retain(|_, c| *c != ctx);
        self.graphs.retain(|_, c| *c != ctx);
        let graphs = &self.graphs;
        self.nodes.retain(|_, g| graphs.contains_key(g));
        self.execs.retain(|_, c| *c != ctx);
        let (streams, events) = (&self.streams, &self.events);
        self.real
            .retain(|h, _| streams.contains_key(h) || events.contains_key(h));
        self.memory.retain(|_, r| r.ctx != ctx);
        self.arrays.retain(|_, a| a.ctx != ctx);
        self.textures.retain(|_, (c, _)| *c != ctx);
        self.surfaces.retain(|_, (c, _)| *c != ctx);
    }

    /// Check that `rows` rows of `width` bytes from byte `x` of row `y` of
    /// slice `z` lie inside array `array` of context `ctx`.
    pub fn check_array(
        &self,
        ctx: Handle,
        array: Handle,
        at: (u64, u64, u64),
        width: u64,
        rows: u64,
    ) -> Result<(), u32> {
        let a = self.arrays.get(&array).filter(|a| a.ctx == ctx).ok_or(INVALID_HANDLE)?;
        let (x, y, z) = at;
        let inside = x.checked_add(width).is_some_and(|e| e <= a.row_bytes)
            && y.checked_add(rows).is_some_and(|e| e <= a.rows)
            && z < a.slices;
        inside.then_some(()).ok_or(INVALID_VALUE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(size: u64) -> Region {
        Region {
            size,
            ctx: 1,
            kind: RegionKind::Allocated,
        }
    }

    #[test]
    fn ranges_must_lie_in_one_allocation() {
        let mut t = Tables::default();
        t.add_region(0x1000, region(0x100)).unwrap();
        t.add_region(0x2000, region(0x100)).unwrap();
        assert!(t.check_range(0x1000, 0x100).is_ok());
        assert!(t.check_range(0x10ff, 1).is_ok());
        assert_eq!(t.check_range(0x10ff, 2), Err(INVALID_VALUE));
        assert_eq!(t.check_range(0x0fff, 1), Err(INVALID_VALUE));
        assert_eq!(t.check_range(0x1100, 1), Err(INVALID_VALUE));
        // Spanning two allocations is not one allocation.
        assert_eq!(t.check_range(0x1000, 0x1100), Err(INVALID_VALUE));
        assert_eq!(t.check_range(u64::MAX - 1, 4), Err(INVALID_VALUE));
    }

    #[test]
    fn mappings_that_follow_on_are_one_range() {
        let mut t = Tables::default();
        let mapped = |size| Region {
            size,
            ctx: 1,
            kind: RegionKind::Mapped,
        };
        t.add_region(0x10000, mapped(0x1000)).unwrap();
        t.add_region(0x11000, mapped(0x1000)).unwrap();
        t.add_region(0x13000, mapped(0x1000)).unwrap();
        assert!(t.check_range(0x10800, 0x1000).is_ok(), "across two mappings");
        assert_eq!(t.check_range(0x11800, 0x1000), Err(INVALID_VALUE), "across a hole");
        t.add_region(0x14000, region(0x1000)).unwrap();
        assert_eq!(
            t.check_range(0x13800, 0x1000),
            Err(INVALID_VALUE),
            "from a mapping into an allocation"
        );
    }

    #[test]
    fn free_needs_the_exact_base_and_not_a_global() {
        let mut t = Tables::default();
        t.add_region(0x1000, region(0x100)).unwrap();
        t.add_region(
            0x4000,
            Region {
                size: 8,
                ctx: 1,
                kind: RegionKind::Global,
            },
        )
        .unwrap();
        assert_eq!(t.remove_allocation(0x1010), Err(INVALID_VALUE));
        assert_eq!(t.remove_allocation(0x4000), Err(INVALID_VALUE));
        assert_eq!(t.allocated_bytes(), 0x100);
        assert!(t.remove_allocation(0x1000).is_ok());
        assert_eq!(t.allocated_bytes(), 0);
        assert_eq!(t.check_range(0x1000, 1), Err(INVALID_VALUE));
    }

    #[test]
    fn overlapping_regions_are_refused() {
        let mut t = Tables::default();
        t.add_region(0x1000, region(0x100)).unwrap();
        assert_eq!(t.add_region(0x10f0, region(0x100)), Err(INVALID_VALUE));
        assert_eq!(t.add_region(0x0f80, region(0x100)), Err(INVALID_VALUE));
        assert!(t.add_region(0x1100, region(0x100)).is_ok());
    }

    #[test]
    fn dropping_a_context_forgets_its_objects() {
        let mut t = Tables::default();
        t.contexts.insert(1, 0);
        t.contexts.insert(2, 0);
        t.add_region(0x1000, region(0x10)).unwrap();
        t.add_region(
            0x2000,
            Region {
                size: 0x10,
                ctx: 2,
                kind: RegionKind::Allocated,
            },
        )
        .unwrap();
        t.modules.insert(50, 1);
        t.functions.insert(60, 50);
        t.streams.insert(70, 1);
        t.drop_context(1);
        assert!(t.check_range(0x1000, 1).is_err());
        assert!(t.check_range(0x2000, 1).is_ok());
        assert!(t.modules.is_empty() && t.functions.is_empty() && t.streams.is_empty());
        assert_eq!(t.context(1), Err(INVALID_CONTEXT));
    }

    #[test]
    fn array_copies_must_fit_the_array() {
        let mut t = Tables::default();
        let info = ArrayInfo {
            ctx: 1,
            row_bytes: 148,
            rows: 19,
            slices: 3,
            surface: false,
        };
        t.arrays.insert(0xa000, info);
        assert_eq!(t.check_array(1, 0xa000, (0, 0, 0), 148, 19), Ok(()));
        assert_eq!(t.check_array(1, 0xa000, (4, 18, 2), 144, 1), Ok(()));
        assert_eq!(
            t.check_array(1, 0xa000, (4, 0, 0), 148, 1),
            Err(INVALID_VALUE),
            "past the row"
        );
        assert_eq!(
            t.check_array(1, 0xa000, (0, 1, 0), 4, 19),
            Err(INVALID_VALUE),
            "past the last row"
        );
        assert_eq!(
            t.check_array(1, 0xa000, (0, 0, 3), 4, 1),
            Err(INVALID_VALUE),
            "past the last slice"
        );
        assert_eq!(
            t.check_array(1, 0xa000, (u64::MAX, 0, 0), 2, 1),
            Err(INVALID_VALUE),
            "overflow"
        );
        assert_eq!(
            t.check_array(2, 0xa000, (0, 0, 0), 4, 1),
            Err(INVALID_HANDLE),
            "another context's"
        );
        assert_eq!(
            t.check_array(1, 0xb000, (0, 0, 0), 4, 1),
            Err(INVALID_HANDLE),
            "not an array"
        );
        t.drop_context(1);
        assert!(t.arrays.is_empty());
    }
}
