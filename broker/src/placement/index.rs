//! Bucketed candidate index: keys (servers or GPUs) filed by a small integer
//! (free whole GPUs, free thousandths of a GPU), with O(1) moves and a bitmap
//! of non-empty buckets so that "the nearest bucket holding anything at or
//! above this level" is a few word scans instead of a walk over 10,000 servers.

const ABSENT: u32 = u32::MAX;

#[derive(Debug, Clone)]
pub(crate) struct BucketIndex {
    buckets: Vec<Vec<u32>>,
    /// One bit per bucket, set when the bucket holds at least one key.
    nonempty: Vec<u64>,
    /// For each key: its bucket and its position there, or ABSENT.
    bucket_of: Vec<u32>,
    position: Vec<u32>,
}

impl BucketIndex {
    pub(crate) fn new(bucket_count: usize, key_space: usize) -> Self {
        BucketIndex {
            buckets: vec![Vec::new(); bucket_count],
            nonempty: vec![0; bucket_count.div_ceil(64)],
            bucket_of: vec![ABSENT; key_space],
            position: vec![ABSENT; key_space],
        }
    }

    pub(crate) fn bucket_count(&self) -> usize {
        self.buckets.len()
    }

    /// Files `key` under `bucket`, or takes it out with `None`.
    pub(crate) fn set(&mut self, key: u32, bucket: Option<usize>) {
        let k = key as usize;
        let current = self.bucket_of[k];
        let target = bucket.map_or(ABSENT, |b| b as u32);
        if current == target {
            return;
        }
        if current != ABSENT {
            let b = current as usize;
            let pos = self.position[k] as usize;
            let list = &mut self.buckets[b];
            list.swap_remove(pos);
            if let Some(&moved) = list.get(pos) {
                self.position[moved as usize] = pos as u32;
            }
            if list.is_empty() {
                self.nonempty[b / 64] &= !(1u64 << (b % 64));
            }
        }
        if let Some(b) = bucket {
            let list = &mut self.buckets[b];
            self.position[k] = list.len() as u32;
            list.push(key);
            self.nonempty[b / 64] |= 1u64 << (b % 64);
        } else {
            self.position[k] = ABSENT;
        }
        self.bucket_of[k] = target;
    }

    pub(crate) fn bucket(&self, b: usize) -> &[u32] {
        &self.buckets[b]
    }

    /// Smallest non-empty bucket index ≥ `from`.
    pub(crate) fn next_nonempty(&self, from: usize) -> Option<usize> {
        if from >= self.buckets.len() {
            return None;
        }
        let mut word = from / 64;
        let mut bits = self.nonempty[word] & (!0u64 << (from % 64));
        loop {
            if bits != 0 {
                return Some(word * 64 + bits.trailing_zeros() as usize);
            }
            word += 1;
            if word >= self.nonempty.len() {
                return None;
            }
            bits = self.nonempty[word];
        }
    }

    /// Largest non-empty bucket index ≤ `upto`.
    pub(crate) fn prev_nonempty(&self, upto: usize) -> Option<usize> {
        let upto = upto.min(self.buckets.len().checked_sub(1)?);
        let mut word = upto / 64;
        let shift = 63 - (upto % 64);
        let mut bits = self.nonempty[word] & (!0u64 >> shift);
        loop {
            if bits != 0 {
                return Some(word * 64 + 63 - bits.leading_zeros() as usize);
            }
            if word == 0 {
                return None;
            }
            word -= 1;
            bits = self.nonempty[word];
        }
    }

    /// Non-empty buckets in `[lo, hi]`, ascending or descending.
    pub(crate) fn buckets_in(&self, lo: usize, hi: usize, descending: bool) -> BucketWalk<'_> {
        BucketWalk {
            index: self,
            lo,
            hi,
            descending,
            done: lo > hi,
        }
    }

    /// Number of keys in buckets `[lo, hi]`.
    pub(crate) fn count_in(&self, lo: usize, hi: usize) -> usize {
        self.buckets_in(lo, hi, false).map(|b| self.buckets[b].len()).sum()
    }
}

pub(crate) struct BucketWalk<'a> {
    index: &'a BucketIndex,
    lo: usize,
    hi: usize,
    descending: bool,
    done: bool,
}

impl Iterator for BucketWalk<'_> {
    type Item = usize;
    fn next(&mut self) -> Option<usize> {
        if self.done {
            return None;
        }
        let found = if self.descending {
            self.index.prev_nonempty(self.hi).filter(|&b| b >= self.lo)
        } else {
            self.index.next_nonempty(self.lo).filter(|&b| b <= self.hi)
        };
        match found {
            Some(b) => {
                if self.descending {
                    if b == 0 || b - 1 < self.lo {
                        self.done = true;
                    } else {
                        self.hi = b - 1;
                    }
                } else if b >= self.hi {
                    self.done = true;
                } else {
                    self.lo = b + 1;
                }
                Some(b)
            }
            None => {
                self.done = true;
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_keys_and_finds_neighbouring_buckets() {
        let mut ix = BucketIndex::new(1001, 10);
        ix.set(1, Some(300));
        ix.set(2, Some(300));
        ix.set(3, Some(999));
        ix.set(4, Some(70));
        assert_eq!(ix.next_nonempty(0), Some(70));
        assert_eq!(ix.next_nonempty(71), Some(300));
        assert_eq!(ix.next_nonempty(301), Some(999));
        assert_eq!(ix.next_nonempty(1000), None);
        assert_eq!(ix.prev_nonempty(1000), Some(999));
        assert_eq!(ix.prev_nonempty(298), Some(70));
        assert_eq!(ix.prev_nonempty(69), None);
        ix.set(1, None);
        assert_eq!(ix.bucket(300), &[2]);
        ix.set(2, Some(999));
        assert_eq!(ix.next_nonempty(71), Some(999));
        let up: Vec<_> = ix.buckets_in(0, 1000, false).collect();
        let down: Vec<_> = ix.buckets_in(0, 1000, true).collect();
        assert_eq!(up, vec![70, 999]);
        assert_eq!(down, vec![999, 70]);
        assert_eq!(ix.count_in(71, 1000), 2);
        assert_eq!(ix.buckets_in(71, 998, false).count(), 0);
    }
}
