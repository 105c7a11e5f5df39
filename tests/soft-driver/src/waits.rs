//! Stream waits for a value that nothing has written yet
//! (`cuStreamWaitValue32` / `64` before the `cuStreamWriteValue*` that
//! meets them, typically from another thread).
//!
//! Work here runs as it is enqueued, so a wait cannot hold back the work
//! after it. What it does hold back is what the program can see of that
//! work's completion: a stream behind an unmet wait answers
//! `CUDA_ERROR_NOT_READY` to queries, and a synchronise of it waits until
//! the wait is met; an event recorded there, and a stream that waits for
//! that event, are behind the same wait; a context synchronise waits for
//! every unmet wait of its streams. A wait is met when a stream write of
//! a value makes its comparison true (other writes to the word are not
//! looked at). Synchronising calls wait outside the driver's lock
//! ([`crate::driver::synchronize`]), so another thread's write can meet the
//! wait, as on a GPU.
//!
//! Waits on the built-in streams are not modelled: one that is not met at
//! once is refused with `CUDA_ERROR_NOT_SUPPORTED`.

use std::collections::HashMap;

/// One unmet wait: the word at `addr` (8 bytes when `wide`, else 4)
/// compared with `value` as `flags` say (`CUstreamWaitValue_flags`).
#[derive(Debug, Clone, Copy)]
pub struct Unmet {
    pub addr: u64,
    pub value: u64,
    pub wide: bool,
    pub flags: u32,
}

/// The unmet waits, and who is behind them.
#[derive(Default)]
pub struct Waits {
    unmet: HashMap<u64, Unmet>,
    next: u64,
    /// Stream -> the unmet waits its later work is behind.
    streams: HashMap<u64, Vec<u64>>,
    /// Event -> the unmet waits its latest record is behind.
    events: HashMap<u64, Vec<u64>>,
}

impl Waits {
    /// `stream`'s later work is behind `wait`.
    pub fn add(&mut self, stream: u64, wait: Unmet) {
        self.next += 1;
        self.unmet.insert(self.next, wait);
        self.streams.entry(stream).or_default().push(self.next);
    }

    /// The unmet waits `stream`'s work so far is behind.
    pub fn of_stream(&mut self, stream: u64) -> Vec<u64> {
        Self::pruned(&self.unmet, &mut self.streams, stream)
    }

    /// The unmet waits `event`'s latest record is behind.
    pub fn of_event(&mut self, event: u64) -> Vec<u64> {
        Self::pruned(&self.unmet, &mut self.events, event)
    }

    fn pruned(unmet: &HashMap<u64, Unmet>, of: &mut HashMap<u64, Vec<u64>>, key: u64) -> Vec<u64> {
        let Some(ids) = of.get_mut(&key) else {
            return Vec::new();
        };
        ids.retain(|id| unmet.contains_key(id));
        let ids = ids.clone();
        if ids.is_empty() {
            of.remove(&key);
        }
        ids
    }

    /// `event` is recorded in `stream`: the record is behind what the
    /// stream's work is behind.
    pub fn record(&mut self, event: u64, stream: u64) {
        let ids = self.of_stream(stream);
        if ids.is_empty() {
            self.events.remove(&event);
        } else {
            self.events.insert(event, ids);
        }
    }

    /// `stream` waits for `event`: its later work is behind the record's
    /// waits too.
    pub fn follow(&mut self, stream: u64, event: u64) {
        let ids = self.of_event(event);
        if !ids.is_empty() {
            self.streams.entry(stream).or_default().extend(ids);
        }
    }

    pub fn forget_stream(&mut self, stream: u64) {
        self.streams.remove(&stream);
    }

    pub fn forget_event(&mut self, event: u64) {
        self.events.remove(&event);
    }

    /// The unmet waits that any of `streams` is behind.
    pub fn of_streams(&mut self, streams: impl IntoIterator<Item = u64>) -> Vec<u64> {
        let mut ids: Vec<u64> = streams.into_iter().flat_map(|s| self.of_stream(s)).collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    }

    /// Which of `ids` are still unmet.
    pub fn still_unmet(&self, ids: &[u64]) -> Vec<u64> {
        ids.iter().copied().filter(|id| self.unmet.contains_key(id)).collect()
    }

    /// After a write: drop the waits `met` says are met (or can no longer
    /// be looked at); whether any was.
    pub fn recheck(&mut self, met: impl Fn(&Unmet) -> bool) -> bool {
        let before = self.unmet.len();
        self.unmet.retain(|_, w| !met(w));
        self.unmet.len() != before
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WAIT: Unmet = Unmet {
        addr: 0x1000,
        value: 1,
        wide: false,
        flags: 0,
    };

    #[test]
    fn a_record_and_a_stream_that_waits_for_it_are_behind_the_wait_until_it_is_met() {
        let mut w = Waits::default();
        w.add(10, WAIT);
        w.record(7, 10);
        w.follow(20, 7);
        assert_eq!(w.of_stream(10).len(), 1);
        assert_eq!(w.of_event(7), w.of_stream(10));
        assert_eq!(w.of_stream(20), w.of_stream(10));
        assert_eq!(w.of_streams([10, 20, 30]).len(), 1);
        assert!(w.of_stream(30).is_empty());
        assert!(!w.recheck(|u| u.value == 2));
        assert!(w.recheck(|u| u.value == 1));
        assert!(w.of_stream(10).is_empty() && w.of_event(7).is_empty() && w.of_stream(20).is_empty());
    }

    #[test]
    fn a_record_after_the_wait_was_met_is_behind_nothing() {
        let mut w = Waits::default();
        w.add(10, WAIT);
        w.record(7, 10);
        w.recheck(|_| true);
        w.record(7, 10);
        assert!(w.of_event(7).is_empty());
    }
}
