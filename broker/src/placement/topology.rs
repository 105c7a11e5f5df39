//! Choosing which GPUs of one server a gang of whole GPUs gets.
//!
//! Preference order, encoded in a small rank (lower is better) so that it can
//! also order servers: a fully NVLink-connected set, then a connected one,
//! then one without NVLink; then a set on one NUMA node; then a NUMA node with
//! an RDMA NIC, so that the GPUs, the NIC carrying the client's traffic and
//! the CPU cores pinned for the server's workers sit together.

/// The topology facts of one server that the choice needs.
pub(crate) struct TopologyView<'a> {
    /// NUMA node of each GPU (index within the server).
    pub numa: &'a [u16],
    /// NVLink peers of each GPU as a bitmask of indices.
    pub nvlink: &'a [u32],
    pub full_nvlink: bool,
    pub has_nvlink: bool,
    /// NUMA nodes that have an RDMA NIC, as a bitmask (nodes ≥ 64 ignored).
    pub rdma_numa_mask: u64,
    pub has_nics: bool,
}

impl TopologyView<'_> {
    /// 1 when the server has NICs but none with RDMA on this NUMA node.
    pub(crate) fn nic_penalty(&self, numa: u16) -> u8 {
        let local = numa < 64 && self.rdma_numa_mask & (1u64 << numa) != 0;
        u8::from(self.has_nics && !local)
    }

    fn hint_penalty(numa: u16, prefer: Option<u16>) -> u8 {
        u8::from(prefer.is_some_and(|p| p != numa))
    }

    /// Picks `n` GPUs out of `eligible` (a bitmask of free, acceptable GPUs).
    /// Returns the chosen mask and its rank.
    pub(crate) fn choose_whole(&self, eligible: u32, n: usize, prefer_numa: Option<u16>) -> Option<(u32, u8)> {
        if n == 0 || (eligible.count_ones() as usize) < n {
            return None;
        }
        if n == 1 {
            let (_, g) = bits(eligible)
                .map(|g| {
                    let numa = self.numa[g];
                    ((self.nic_penalty(numa), Self::hint_penalty(numa, prefer_numa)), g)
                })
                .min()?;
            return Some((1u32 << g, self.nic_penalty(self.numa[g])));
        }
        if self.full_nvlink || !self.has_nvlink {
            let link_rank = if self.full_nvlink { 0 } else { 2 };
            return Some(self.choose_by_numa(eligible, n, prefer_numa, link_rank));
        }
        self.choose_greedy(eligible, n, prefer_numa)
    }

    /// When links do not distinguish sets, only NUMA placement matters: one
    /// NUMA node if any has room, the smallest such (big groups stay whole for
    /// later gangs); otherwise as few NUMA nodes as possible.
    fn choose_by_numa(&self, eligible: u32, n: usize, prefer: Option<u16>, link_rank: u8) -> (u32, u8) {
        let mut groups: Vec<(u16, u32)> = Vec::with_capacity(4);
        for g in bits(eligible) {
            let numa = self.numa[g];
            match groups.iter_mut().find(|(node, _)| *node == numa) {
                Some((_, mask)) => *mask |= 1 << g,
                None => groups.push((numa, 1 << g)),
            }
        }
        let single = groups
            .iter()
            .filter(|(_, mask)| mask.count_ones() as usize >= n)
            .min_by_key(|(numa, mask)| {
                (
                    self.nic_penalty(*numa),
                    Self::hint_penalty(*numa, prefer),
                    mask.count_ones(),
                )
            });
        if let Some(&(numa, mask)) = single {
            return (lowest_bits(mask, n), link_rank * 4 + self.nic_penalty(numa));
        }
        groups.sort_by_key(|(numa, mask)| (std::cmp::Reverse(mask.count_ones()), *numa));
        let mut chosen = 0u32;
        let mut nic = 1u8;
        for (numa, mask) in groups {
            let need = n - chosen.count_ones() as usize;
            if need == 0 {
                break;
            }
            nic = nic.min(self.nic_penalty(numa));
            chosen |= lowest_bits(mask, need);
        }
        (chosen, link_rank * 4 + 2 + nic)
    }

    /// Partial NVLink meshes (e.g. hybrid cube-mesh): grow a set from every
    /// seed, adding the GPU with most links into the set, and keep the best.
    fn choose_greedy(&self, eligible: u32, n: usize, prefer: Option<u16>) -> Option<(u32, u8)> {
        let mut best: Option<((u8, u8), u32)> = None;
        for seed in bits(eligible) {
            let mut set = 1u32 << seed;
            while (set.count_ones() as usize) < n {
                let next = bits(eligible & !set).max_by_key(|&g| {
                    (
                        (self.nvlink[g] & set).count_ones(),
                        self.numa[g] == self.numa[seed],
                        std::cmp::Reverse(g),
                    )
                })?;
                set |= 1 << next;
            }
            let rank = self.rank_of(set);
            let key = (rank, Self::hint_penalty(self.numa[seed], prefer));
            if best.is_none_or(|(k, _)| key < k) {
                best = Some((key, set));
            }
        }
        best.map(|((rank, _), set)| (set, rank))
    }

    fn rank_of(&self, set: u32) -> u8 {
        let fully = bits(set).all(|g| (self.nvlink[g] | (1 << g)) & set == set);
        let link_rank = if fully {
            0
        } else if self.connected(set) {
            1
        } else {
            2
        };
        let first_numa = self.numa[set.trailing_zeros() as usize];
        let one_numa = bits(set).all(|g| self.numa[g] == first_numa);
        let nic = bits(set).map(|g| self.nic_penalty(self.numa[g])).min().unwrap_or(0);
        link_rank * 4 + if one_numa { 0 } else { 2 } + nic
    }

    fn connected(&self, set: u32) -> bool {
        let mut reached = 1u32 << set.trailing_zeros();
        loop {
            let grown = bits(reached).fold(reached, |acc, g| acc | (self.nvlink[g] & set));
            if grown == reached {
                return reached == set;
            }
            reached = grown;
        }
    }
}

/// Indices of the set bits of a mask, ascending.
pub(crate) fn bits(mut mask: u32) -> impl Iterator<Item = usize> {
    std::iter::from_fn(move || {
        if mask == 0 {
            return None;
        }
        let g = mask.trailing_zeros() as usize;
        mask &= mask - 1;
        Some(g)
    })
}

fn lowest_bits(mask: u32, n: usize) -> u32 {
    bits(mask).take(n).fold(0, |acc, g| acc | (1 << g))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// DGX-1 style hybrid cube-mesh: two fully linked quads {0-3} {4-7},
    /// plus links i <-> i+4.
    fn cube_mesh() -> Vec<u32> {
        (0..8)
            .map(|g: u32| {
                let quad = if g < 4 { 0b0000_1111 } else { 0b1111_0000 };
                (quad & !(1 << g)) | (1 << ((g + 4) % 8))
            })
            .collect()
    }

    #[test]
    fn greedy_finds_a_fully_connected_quad() {
        let nvlink = cube_mesh();
        let numa = [0, 0, 0, 0, 1, 1, 1, 1];
        let view = TopologyView {
            numa: &numa,
            nvlink: &nvlink,
            full_nvlink: false,
            has_nvlink: true,
            rdma_numa_mask: 0b11,
            has_nics: true,
        };
        // GPUs 0 and 5 are taken: only the quad 4..7 minus 5 and 0..3 minus 0.
        // A fully connected 4-set exists only if a whole quad is free: free
        // 1,2,3,4,6,7 has none, so the best is connected (rank 1) or better.
        let (set, rank) = view.choose_whole(0b1101_1110, 4, None).unwrap();
        assert_eq!(set.count_ones(), 4);
        assert!(rank < 8, "rank {rank}");
        // With quad 4..7 whole free, it is chosen: fully connected, one NUMA node.
        let (set, rank) = view.choose_whole(0b1111_0110, 4, None).unwrap();
        assert_eq!(set, 0b1111_0000);
        assert_eq!(rank, 0);
    }

    #[test]
    fn nvswitch_prefers_a_single_numa_node_and_rdma_nic() {
        let nvlink: Vec<u32> = (0..8).map(|g| 0xff & !(1 << g)).collect();
        let numa = [0, 0, 0, 0, 1, 1, 1, 1];
        let view = TopologyView {
            numa: &numa,
            nvlink: &nvlink,
            full_nvlink: true,
            has_nvlink: true,
            rdma_numa_mask: 0b10,
            has_nics: true,
        };
        let (set, rank) = view.choose_whole(0xff, 2, None).unwrap();
        assert_eq!(set, 0b0011_0000, "NUMA 1 has the RDMA NIC");
        assert_eq!(rank, 0);
        // Three free on NUMA 0, one on NUMA 1: four must span both.
        let (set, rank) = view.choose_whole(0b0001_0111, 4, None).unwrap();
        assert_eq!(set, 0b0001_0111);
        assert_eq!(rank, 2);
        assert_eq!(view.choose_whole(0b0001_0111, 5, None), None);
    }
}
