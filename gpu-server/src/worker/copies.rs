//! Device-to-host copies that do not hold the session while their stream
//! gets to them.
//!
//! A device-to-host copy's data can be sent only once its stream has
//! reached it: behind a long kernel, or a stream wait that another thread
//! of the program meets later, the session would wait that long before it
//! read another request. So a copy of at most [`DEFERRED_CHUNKS`] chunks
//! is issued whole at its place in the request order (each chunk into a
//! staging buffer of its own, which the copy holds), and then:
//!
//! - while no other request arrives, the session polls the last chunk's
//!   event (as synchronises are polled, `syncs`) and sends the data and the
//!   answer as soon as it is done;
//! - otherwise the copy is parked: a helper thread waits for that event,
//!   and the session goes on with later requests, sending the data and the
//!   answer once the event is done.
//!
//! Nothing the program can observe changes. Every answer that can tell the
//! program that work is done (a synchronise's or a query's answer, a host
//! function reached, a notice of completed events) is made before the
//! parked copies are looked at, and sent after the data of those found
//! done: work behind a copy in its stream is done only once the copy is,
//! so its data always comes first. A synchronous copy answers the error a
//! streamed call left before it, as when it was answered at once.
//!
//! Larger copies, and copies while more than [`HELD_MAX`] staging buffers
//! are held, are sent chunk by chunk as the stream gets to them, holding
//! the session meanwhile.

use super::Worker;
use crate::driver::Status;
use gpupool_proto::frame;
use gpupool_proto::message::{Handle, Reply};
use gpupool_proto::transport::WaitRead;
use gpupool_proto::ProtoError;
use std::io::{BufReader, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The most chunks (of `COPY_CHUNK` bytes) of a copy that is sent when
/// done rather than as its stream gets to it.
pub(super) const DEFERRED_CHUNKS: usize = 16;
/// The most staging buffers that copies waiting to send hold.
const HELD_MAX: usize = 32;
/// `CUDA_ERROR_NOT_READY`.
const NOT_READY: Status = 600;

/// A device-to-host copy issued whole, whose data waits to be sent.
pub(super) struct CopyOut {
    /// The request.
    id: u64,
    /// The context its staging events were recorded in.
    ctx: Option<Handle>,
    /// (staging buffer, offset in the copy, bytes), in order.
    chunks: Vec<(usize, u64, usize)>,
    /// The answer once the data is sent (`Done` with the copy's status as
    /// of its place); an error of the data's own replaces it.
    reply: Option<Reply>,
    /// Data and answer sent.
    sent: bool,
    /// Set by the helper once the last chunk's event is done (parked
    /// copies only): its buffers are free then.
    done: Option<Arc<AtomicBool>>,
}

impl Worker<'_> {
    /// Whether a copy of `chunks` chunks can be issued whole and sent when
    /// done.
    pub(super) fn may_defer_copy(&self, chunks: usize) -> bool {
        self.reached.is_some() && chunks <= DEFERRED_CHUNKS && self.held_staging() + chunks <= HELD_MAX
    }

    /// Issued whole: staging buffer `i` of the copy `id` now being made
    /// holds bytes `offset..offset + n`.
    pub(super) fn defer_chunk(&mut self, id: u64, i: usize, offset: u64, n: usize) {
        self.staging[i].held = true;
        match self.deferred.as_mut().filter(|c| c.id == id) {
            Some(c) => c.chunks.push((i, offset, n)),
            None => {
                self.deferred = Some(CopyOut {
                    id,
                    ctx: self.current,
                    chunks: vec![(i, offset, n)],
                    reply: None,
                    sent: false,
                    done: None,
                })
            }
        }
    }

    /// The copy being made failed before it was issued whole: its buffers
    /// are free again, nothing of it is sent.
    pub(super) fn drop_deferred(&mut self) {
        if let Some(c) = self.deferred.take() {
            for (i, _, _) in c.chunks {
                self.staging[i].held = false;
            }
        }
    }

    /// The request just executed issued a copy whole (`reply` is its
    /// answer): send it now if its data is done while no other request
    /// arrives (the answer then goes as any other, `Some`), else park it.
    pub(super) fn finish_copy<R: WaitRead, W: Write>(
        &mut self,
        reply: Option<Reply>,
        reader: &mut BufReader<R>,
        writer: &mut W,
    ) -> Result<Option<Reply>, ProtoError> {
        let Some(mut copy) = self.deferred.take() else {
            return Ok(reply);
        };
        copy.reply = reply;
        let Some(&(last, _, _)) = copy.chunks.last() else {
            return Ok(copy.reply);
        };
        let event = self.staging[last].event;
        let d = self.driver;
        // SAFETY: the staging buffer's own event, live while held.
        let polled = self.poll_while_alone(reader, writer, |_| unsafe { d.cuEventQuery(event) } != Err(NOT_READY))?;
        let done = Arc::new(AtomicBool::new(false));
        // Without a helper, the data is waited for here, as for a larger copy.
        if polled || !self.helper_waits_for_event(copy.id, event, Arc::clone(&done)) {
            return self.send_copy_now(copy, writer);
        }
        copy.done = Some(done);
        self.copies.push(copy);
        Ok(None)
    }

    /// Send a copy's data (waited for if need be), free its buffers, and
    /// answer its answer.
    fn send_copy_now<W: Write>(&mut self, mut copy: CopyOut, writer: &mut W) -> Result<Option<Reply>, ProtoError> {
        let reply = copy.reply.take();
        let status = self.send_copy_data(&copy, writer)?;
        self.release_copy(&copy);
        Ok(match status {
            0 => reply,
            s => Some(Reply::Done(s)),
        })
    }

    /// Send the data of the parked copies that are done, in order, and keep
    /// their answers for [`Worker::send_copy_replies`]; free the buffers of
    /// those whose helpers are done too. Called after any answer that can
    /// tell of completed work was made, before it is sent.
    ///
    /// The answers wait for the host functions reached before them
    /// (`tell_reached` sends those first): the shim lands data held back
    /// behind a function when the copy's answer comes, in the order of the
    /// answers.
    pub(super) fn flush_copies<W: Write>(&mut self, writer: &mut W) -> Result<(), ProtoError> {
        if self.copies.is_empty() {
            return Ok(());
        }
        let mut copies = std::mem::take(&mut self.copies);
        for copy in copies.iter_mut().filter(|c| !c.sent) {
            let Some(&(last, _, _)) = copy.chunks.last() else {
                continue;
            };
            // SAFETY: the staging buffer's own event, live while held.
            if unsafe { self.driver.cuEventQuery(self.staging[last].event) } == Err(NOT_READY) {
                continue;
            }
            let status = self.send_copy_data(copy, writer)?;
            let reply = match (status, copy.reply.take()) {
                (0, reply) => reply,
                (s, _) => Some(Reply::Done(s)),
            };
            if let Some(reply) = reply {
                self.copy_replies.push((copy.id, reply));
            }
            copy.sent = true;
        }
        copies.retain(|c| {
            let finished = c.sent && c.done.as_ref().is_none_or(|d| d.load(Ordering::Acquire));
            if finished {
                self.release_copy(c);
            }
            !finished
        });
        self.copies = copies;
        Ok(())
    }

    /// Write the answers of copies whose data went.
    pub(super) fn send_copy_replies<W: Write>(&mut self, writer: &mut W) -> Result<(), ProtoError> {
        for (id, reply) in std::mem::take(&mut self.copy_replies) {
            frame::write_frame(writer, &mut self.scratch, id, 0, &reply, &[], self.max_frame)?;
            self.client_reads();
        }
        Ok(())
    }

    /// Write a copy's data frames (its chunks are done); the first error
    /// of their events instead, with nothing more written.
    fn send_copy_data<W: Write>(&mut self, copy: &CopyOut, writer: &mut W) -> Result<Status, ProtoError> {
        for &(i, offset, n) in &copy.chunks {
            if let Err(status) = self.send_chunk(copy.id, (i, offset, n), writer)? {
                return Ok(status);
            }
        }
        Ok(0)
    }

    fn release_copy(&mut self, copy: &CopyOut) {
        for &(i, _, _) in &copy.chunks {
            if let Some(s) = self.staging.get_mut(i) {
                s.held = false;
            }
        }
    }

    /// At the session's end: forget the parked copies. The buffers of
    /// those whose helpers still wait stay held, so that they are never
    /// freed under the helper.
    pub(super) fn abandon_copies(&mut self) {
        for copy in std::mem::take(&mut self.copies) {
            if copy.done.as_ref().is_none_or(|d| d.load(Ordering::Acquire)) {
                self.release_copy(&copy);
            }
        }
    }

    /// The helpers' flags of the parked copies whose staging events are of
    /// `ctx`.
    pub(super) fn copies_in(&self, ctx: Handle) -> Vec<Arc<AtomicBool>> {
        self.copies
            .iter()
            .filter(|c| c.ctx == Some(ctx))
            .filter_map(|c| c.done.clone())
            .collect()
    }

    /// Every parked copy's helper flag.
    pub(super) fn all_copies(&self) -> Vec<Arc<AtomicBool>> {
        self.copies.iter().filter_map(|c| c.done.clone()).collect()
    }
}
