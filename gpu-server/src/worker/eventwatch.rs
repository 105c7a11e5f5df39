//! Completion notices for recorded events (`Request::EventRecordWatched`).
//!
//! The client watches the records of an event it has queried, so that
//! later queries of that event (PyTorch's pinned-memory allocator asks of
//! each block's event before it reuses the block) are answered in the shim
//! instead of costing a round trip each.
//!
//! The server tells completions in notices (`Reply::EventsDone`), asking
//! the driver of the watched events (`cuEventQuery`, oldest first, at most
//! [`CHECKED_PER_REPLY`] of them) at two points:
//! - just before it writes a reply, which the client reads as it reads
//!   that reply, so the notice is as fresh as the reply;
//! - while the session waits for the client's next request, for as long
//!   as records are watched: at most every [`FIRST_LOOK`] while the client
//!   streams requests (so between two of its writes), at intervals
//!   doubling up to [`LAST_LOOK`] while it is quiet, and asking of at most
//!   [`CHECKED_UNASKED`] records a look. These notices come unasked: the client takes
//!   them in, without waiting, before it would ask the server of an event,
//!   so a query of a record that completed while the program did other
//!   work costs no round trip even when nothing else was answered since.
//!   So that notices never fill a connection nobody reads, at most
//!   [`UNASKED_MAX`] go between two signs that the client reads: a reply
//!   (whoever waits for it reads all before it), or a request flagged
//!   `FLAG_NOTICES_TAKEN` (the client took in notices since its last
//!   request).
//!
//! Nothing is added to the program's streams (a host function there would
//! stall each stream at every record).
//!
//! A watch ends with nothing told when its event is recorded again or
//! destroyed, its context goes, or the driver answers an error (the client
//! asks the server, which tells it). While the event's context keeps an
//! error, a completion waits: it is told once that error has been.

use super::Worker;
use crate::driver::{DriverResult, Status};
use gpupool_proto::error::ProtoError;
use gpupool_proto::frame;
use gpupool_proto::message::{Handle, Reply, StreamRef, NOTICE_ID};
use std::io::Write;
use std::time::Duration;

/// `CUDA_ERROR_NOT_READY`.
const NOT_READY: Status = 600;
/// The most watched events asked of before one reply.
const CHECKED_PER_REPLY: usize = 64;
/// The first look at watched events after the session fell idle.
pub(super) const FIRST_LOOK: Duration = Duration::from_micros(20);
/// The longest wait between two looks while records are watched.
pub(super) const LAST_LOOK: Duration = Duration::from_millis(5);
/// The most notices sent unasked between two signs that the client reads.
const UNASKED_MAX: usize = 16;
/// The most watched events asked of in one look while idle.
const CHECKED_UNASKED: usize = 8;

/// One watched record: the event (the client's name), its context, and the
/// record's generation (the client's count of its records).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Watch {
    event: Handle,
    ctx: Handle,
    generation: u64,
}

impl Worker<'_> {
    /// `EventRecordWatched`: record the event, and watch the record unless
    /// it went into a capture.
    pub(super) fn record_watched(
        &mut self,
        ctx: Handle,
        event: Handle,
        stream: StreamRef,
        generation: u64,
    ) -> DriverResult {
        // The event's earlier record can no longer be told.
        self.unwatch_event(event);
        let s = self.enter(ctx, stream)?;
        self.check_event(event)?;
        // SAFETY: stream and event belong to this client.
        unsafe { self.driver.cuEventRecord(self.real(event), s) }?;
        if self.captures > 0 {
            let mut status = 0i32;
            // SAFETY: s is resolved from this client's tables; status is writable.
            let capturing = unsafe { self.driver.cuStreamIsCapturing(s, &mut status) }.is_ok() && status != 0;
            if capturing {
                // A node of the capture's graph, not a record.
                return Ok(());
            }
        }
        self.watches.push(Watch { event, ctx, generation });
        Ok(())
    }

    /// Before `event` is destroyed, or recorded again.
    pub(super) fn unwatch_event(&mut self, event: Handle) {
        self.watches.retain(|w| w.event != event);
    }

    /// Before `ctx` and its events go.
    pub(super) fn unwatch_context(&mut self, ctx: Handle) {
        self.watches.retain(|w| w.ctx != ctx);
    }

    /// Whether, while idle, the session should look at watched records.
    pub(super) fn watching_unasked(&self) -> bool {
        !self.watches.is_empty() && self.unasked < UNASKED_MAX
    }

    /// While idle: tell the watched records that completed, unasked.
    pub(super) fn tell_done_unasked<W: Write>(&mut self, writer: &mut W) -> Result<(), ProtoError> {
        if !self.watching_unasked() {
            return Ok(());
        }
        let done = self.events_checked(CHECKED_UNASKED);
        // The data of copies before those records goes first (`copies`).
        self.tell_reached(writer)?;
        if let Some(done) = done {
            frame::write_frame(writer, &mut self.scratch, NOTICE_ID, 0, &done, &[], self.max_frame)?;
            self.unasked += 1;
        }
        Ok(())
    }

    /// The client reads what was sent before now.
    pub(super) fn client_reads(&mut self) {
        self.unasked = 0;
    }

    /// The notice to send before the next reply, if a watched record
    /// completed (in a context that keeps no error).
    pub(super) fn events_done(&mut self) -> Option<Reply> {
        self.events_checked(CHECKED_PER_REPLY)
    }

    /// The notice of the watched records that completed, asking the driver
    /// of at most `most` of them.
    fn events_checked(&mut self, most: usize) -> Option<Reply> {
        if self.watches.is_empty() {
            return None;
        }
        let mut events = Vec::new();
        let driver = self.driver;
        let mut watches = std::mem::take(&mut self.watches);
        // Those not asked of this time go first next time.
        let rest = watches.split_off(watches.len().min(most));
        let mut waiting = Vec::new();
        for w in watches {
            if self.check_event(w.event).is_err() {
                continue;
            }
            // SAFETY: the event is this client's and alive (checked above;
            // a destroyed event's watch is gone with it).
            match unsafe { driver.cuEventQuery(self.real(w.event)) } {
                Ok(()) if !self.kept.contains_key(&w.ctx) => events.push((w.event, w.generation)),
                Ok(()) | Err(NOT_READY) => waiting.push(w),
                // The server tells the error when asked.
                Err(_) => {}
            }
        }
        self.watches = rest;
        self.watches.extend(waiting);
        (!events.is_empty()).then_some(Reply::EventsDone { events })
    }
}
