//! Fragmentation measure behind the fragmentation-aware policy (after FGD,
//! Weng et al., USENIX ATC'23).
//!
//! A node's free GPU capacity is "fragmented" for a task when the task cannot
//! use it: all of it when the task does not fit on the node at all (too few
//! whole GPUs, no GPU with a large enough share, or not enough host CPU or
//! memory), otherwise the free share of every GPU too small for the task's
//! per-GPU need. Averaging over the mix of typical tasks — the shapes that
//! make up most arrivals so far — gives the node's expected fragmentation; the
//! policy places each task where that expectation grows least.

use std::collections::HashMap;

use crate::inventory::FULL_GPU_MILLI;

/// What one GPU-using task shape needs per GPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum GpuNeed {
    /// `n` untouched GPUs.
    Whole(u8),
    /// One GPU with at least this many thousandths free.
    Slice(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ShapeKey {
    pub need: GpuNeed,
    pub cpu_milli: u64,
    pub memory_mib: u64,
}

#[derive(Debug, Clone)]
struct MixClass {
    need: GpuNeed,
    /// (cpu milli, memory MiB, weight); weights over all classes sum to 1.
    shapes: Vec<(u64, u64, f64)>,
}

/// Running tally of arrived task shapes and the typical subset drawn from it.
#[derive(Debug, Clone)]
pub(crate) struct TypicalMix {
    counts: HashMap<ShapeKey, u64>,
    seen: u64,
    next_refresh: u64,
    /// Share of arrivals the typical subset must cover.
    coverage: f64,
    classes: Vec<MixClass>,
    /// Bumped whenever `classes` changes, so cached node values go stale.
    pub generation: u64,
}

impl TypicalMix {
    pub(crate) fn new(coverage: f64) -> Self {
        TypicalMix {
            counts: HashMap::new(),
            seen: 0,
            next_refresh: 1,
            coverage,
            classes: Vec::new(),
            generation: 0,
        }
    }

    /// Number of typical shapes currently in the mix.
    pub(crate) fn shape_count(&self) -> usize {
        self.classes.iter().map(|c| c.shapes.len()).sum()
    }

    /// Counts one arrival. The typical subset is rebuilt on a doubling
    /// schedule early on and then every 256 arrivals: often enough to follow
    /// the workload, rarely enough that cached node values stay useful.
    pub(crate) fn observe(&mut self, key: ShapeKey) {
        *self.counts.entry(key).or_insert(0) += 1;
        self.seen += 1;
        if self.seen >= self.next_refresh {
            self.rebuild();
            self.next_refresh = if self.seen < 256 {
                self.seen * 2
            } else {
                self.seen + 256
            };
        }
    }

    fn rebuild(&mut self) {
        let mut shapes: Vec<(ShapeKey, u64)> = self.counts.iter().map(|(k, &c)| (*k, c)).collect();
        // Most frequent first; the key order makes ties deterministic.
        shapes.sort_by(|a, b| {
            b.1.cmp(&a.1)
                .then(a.0.need.cmp(&b.0.need))
                .then(a.0.cpu_milli.cmp(&b.0.cpu_milli))
                .then(a.0.memory_mib.cmp(&b.0.memory_mib))
        });
        let total: u64 = shapes.iter().map(|s| s.1).sum();
        let mut kept = Vec::new();
        let mut covered = 0u64;
        for (key, count) in shapes {
            if (covered as f64) >= self.coverage * total as f64 {
                break;
            }
            covered += count;
            kept.push((key, count));
        }
        let mut classes: Vec<MixClass> = Vec::new();
        for (key, count) in kept {
            let weight = count as f64 / covered as f64;
            match classes.iter_mut().find(|c| c.need == key.need) {
                Some(class) => class.shapes.push((key.cpu_milli, key.memory_mib, weight)),
                None => classes.push(MixClass {
                    need: key.need,
                    shapes: vec![(key.cpu_milli, key.memory_mib, weight)],
                }),
            }
        }
        self.classes = classes;
        self.generation += 1;
    }

    /// Expected fragmented GPU thousandths on a node whose GPUs have `free`
    /// thousandths free each and whose host has the given CPU and memory free.
    pub(crate) fn expected_fragmentation(&self, free: &[u16], cpu_free: u64, memory_free: u64) -> f64 {
        let mut total = 0u32;
        let mut whole = 0u32;
        let mut largest = 0u16;
        for &f in free {
            total += f as u32;
            if f as u32 == FULL_GPU_MILLI {
                whole += 1;
            }
            largest = largest.max(f);
        }
        if total == 0 {
            return 0.0;
        }
        let mut expected = 0.0;
        for class in &self.classes {
            let (gpu_fits, unusable) = match class.need {
                GpuNeed::Whole(n) => (whole >= n as u32, total - whole * FULL_GPU_MILLI),
                GpuNeed::Slice(m) => (largest >= m, free.iter().filter(|&&f| f < m).map(|&f| f as u32).sum()),
            };
            for &(cpu, memory, weight) in &class.shapes {
                let fits = gpu_fits && cpu <= cpu_free && memory <= memory_free;
                expected += weight * if fits { unusable } else { total } as f64;
            }
        }
        expected
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(need: GpuNeed, cpu: u64) -> ShapeKey {
        ShapeKey {
            need,
            cpu_milli: cpu,
            memory_mib: 0,
        }
    }

    #[test]
    fn typical_mix_keeps_the_shapes_covering_the_target_share() {
        let mut mix = TypicalMix::new(0.95);
        for _ in 0..90 {
            mix.observe(key(GpuNeed::Whole(1), 1000));
        }
        for _ in 0..8 {
            mix.observe(key(GpuNeed::Slice(500), 1000));
        }
        mix.observe(key(GpuNeed::Slice(300), 1000));
        mix.observe(key(GpuNeed::Whole(8), 1000));
        mix.rebuild();
        // 90 + 8 = 98% ≥ 95%: the two rare shapes are left out.
        assert_eq!(mix.shape_count(), 2);
    }

    #[test]
    fn fragmentation_counts_shares_too_small_for_the_mix() {
        let mut mix = TypicalMix::new(1.0);
        mix.observe(key(GpuNeed::Slice(500), 0));
        mix.rebuild();
        // A GPU with 300 free cannot host a 500 share: fragmented.
        assert_eq!(mix.expected_fragmentation(&[300, 1000], 0, 0), 300.0);
        // Nothing free at all: nothing fragmented.
        assert_eq!(mix.expected_fragmentation(&[0, 0], 0, 0), 0.0);
        let mut mix = TypicalMix::new(1.0);
        mix.observe(key(GpuNeed::Whole(1), 4000));
        mix.rebuild();
        // Not enough CPU on the node: every free share is stranded.
        assert_eq!(mix.expected_fragmentation(&[1000, 600], 2000, 0), 1600.0);
        assert_eq!(mix.expected_fragmentation(&[1000, 600], 8000, 0), 600.0);
    }
}
