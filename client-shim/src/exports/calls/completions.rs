//! Event records (by stream and by context) and event queries, answered in
//! the shim where the server told the answer. PyTorch's pinned-memory allocator
//! records an event behind each block's copy and queries it before reusing
//! the block (`cudaEventQuery`, every step of a training loop that feeds
//! pinned batches, as `DataLoader(pin_memory=True)` does); through gpupool
//! each query was a round trip.
//!
//! Once the program has asked of an event (a query or a synchronise), its
//! later records go as `Request::EventRecordWatched`, streamed as before,
//! with the record's generation (the count of its records). The server
//! tells which watched records completed in a notice (`Reply::EventsDone`)
//! just before its next reply to a request that asked for one, which the
//! shim reads with that reply, and also unasked while the session is idle
//! (the server's `eventwatch`). No thread of the shim's waits for notices:
//! before it would ask the server of a watched record not yet told, the
//! shim takes in what the server has sent, without waiting
//! ([`crate::remote::Remote::take_arrived`]). A query or synchronise of
//! an event whose latest record was told done is answered here: the event
//! is done, and stays done until it is recorded again. Any other case asks
//! the server, as before: the first question, a record not yet told (the
//! answer to that question then brings the notices of what else completed),
//! a record the server did not tell (an error, or an error its context
//! keeps: the server tells it when asked), and events that may be recorded
//! where the shim does not see it: interprocess events (another process may
//! record them), and events recorded in a capture or by a graph's event
//! record node.
//!
//! A query that comes right after its record, before the server can have
//! told it, is answered "not ready" here while the record is young and
//! nothing told to the program can speak of it ([`young`]).
//!
//! Nothing the program can observe changes: device-to-host data behind the
//! record came before the notice on the same connection, and host functions
//! before it are waited for as a round trip's answer would be
//! ([`crate::callbacks`]). An error that a streamed call after the record
//! left in the context is told at the next call that asks the server, as
//! every streamed call's error is. Once a call fails with an error that
//! breaks the context (a kernel fault), nothing is answered here any more.

use super::*;
use crate::state::EventNote;

/// `CU_EVENT_INTERPROCESS`.
pub(super) const EVENT_INTERPROCESS: u32 = 0x4;

/// A new event of the program (`cuEventCreate`, `cuIpcOpenEventHandle`).
pub(super) fn created(s: &Shim, event: Handle, flags: u32) {
    let note = EventNote {
        elsewhere: flags & EVENT_INTERPROCESS != 0,
        ..EventNote::default()
    };
    lock(&s.event_notes).insert(event, note);
}

pub(super) fn destroyed(s: &Shim, event: Handle) {
    lock(&s.event_notes).remove(&event);
}

/// The event may be recorded where the shim does not see it: a graph's
/// event record node, a capture, another process.
pub(super) fn recorded_elsewhere(s: &Shim, event: Handle) {
    if let Some(n) = lock(&s.event_notes).get_mut(&event) {
        n.elsewhere = true;
    }
}

/// The server's notice of completed watched records (read with the reply
/// it came before): (event, generation).
pub(crate) fn events_done(done: &[(u64, u64)]) {
    let Ok(s) = shim() else { return };
    let mut notes = lock(&s.event_notes);
    for &(event, generation) in done {
        if let Some(n) = notes.get_mut(&event) {
            n.told(generation);
        }
    }
}

/// Set once a call failed with an error that breaks the context for good
/// (a kernel fault): from then on every call goes to the server, which
/// answers it with that error as the driver does.
static CONTEXT_BROKEN: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// A call of the program failed with `status` (on every failure, off the
/// hot path).
pub(crate) fn call_failed(status: u32) {
    // CUDA_ERROR_ECC_UNCORRECTABLE, ILLEGAL_ADDRESS, LAUNCH_TIMEOUT, and
    // the hardware faults HARDWARE_STACK_ERROR .. LAUNCH_FAILED.
    if matches!(status, 214 | 700 | 702 | 714..=719) {
        CONTEXT_BROKEN.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The latest place (in the order the server gets requests) of an event
/// record this shim answered done: the program knows the work before it
/// completed.
static TOLD_HERE_UP_TO: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The latest place of a request whose completion, or that of work before
/// it, the program may have been told: an answer of the server read (a
/// synchronisation, a query, a host function to run, copy data), or an
/// event answered done here. Nothing told can speak of work placed later:
/// the server answers in order, and work can wait only for work enqueued
/// before it.
fn told_up_to(s: &Shim) -> u64 {
    s.remote
        .answered_up_to()
        .max(TOLD_HERE_UP_TO.load(std::sync::atomic::Ordering::Acquire))
}

/// How long after a watched record's sending a query may be answered "not
/// ready" here ([`young`]): about how long the server's notice of a record
/// that completes at once takes to come back.
const YOUNG: std::time::Duration = std::time::Duration::from_micros(200);

/// Whether a question about `event` is answered here. When the latest
/// record is watched and not yet told, the notices the server sent unasked
/// since the last read are taken in first.
fn answered_here(s: &Shim, event: Handle) -> bool {
    let (known, later) = match lock(&s.event_notes).get_mut(&event) {
        Some(n) => (n.ask(), n.told_later()),
        None => (false, false),
    };
    if CONTEXT_BROKEN.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    let done =
        known || (later && s.remote.take_arrived() && lock(&s.event_notes).get_mut(&event).is_some_and(EventNote::ask));
    if done {
        if let Some((_, place)) = lock(&s.event_notes).get(&event).and_then(|n| n.sent) {
            TOLD_HERE_UP_TO.fetch_max(place, std::sync::atomic::Ordering::AcqRel);
        }
    }
    done
}

/// Whether a query of `event` is answered "not ready" here: its latest
/// record is watched, was sent less than [`YOUNG`] ago and is not told
/// done, and nothing told to the program since can speak of it (no answer
/// about a request placed after it: [`told_up_to`]). A local GPU could
/// answer the same (the record's work may take that long), and nothing the
/// program knows contradicts it: a synchronisation or a query answered
/// done after the record ends it. PyTorch's allocators query
/// the event of a block freed a moment before (the pinned-memory
/// allocator's, a block used on another stream); such a query was a round
/// trip, and "not ready" makes the allocator take another block, as it
/// does on a GPU that has not finished.
fn young(s: &Shim, event: Handle) -> bool {
    if CONTEXT_BROKEN.load(std::sync::atomic::Ordering::Relaxed) {
        return false;
    }
    let notes = lock(&s.event_notes);
    let Some(n) = notes.get(&event) else { return false };
    n.told_later()
        && n.sent
            .is_some_and(|(at, place)| at.elapsed() < YOUNG && told_up_to(s) < place)
}

pub unsafe fn event_record(mode: DefaultStream, event: CUevent, stream: CUstream) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    let ev = handle(event);
    let capture = capture_of(s, sref);
    if capture.is_some() {
        recorded_elsewhere(s, ev);
    }
    // The record's generation when the server is to tell its completion.
    let watched = lock(&s.event_notes).get_mut(&ev).and_then(EventNote::record);
    let request = match watched {
        Some(generation) => Request::EventRecordWatched {
            ctx,
            event: ev,
            stream: sref,
            generation,
        },
        None => Request::EventRecord {
            ctx,
            event: ev,
            stream: sref,
        },
    };
    let place = s.remote.post_placed(&request, &[])?;
    if let Some(generation) = watched {
        if let Some(n) = lock(&s.event_notes).get_mut(&ev) {
            n.placed(generation, place);
        }
    }
    s.callbacks.recorded(ev, (ctx, sref));
    let mut events = lock(&s.capture_events);
    match capture {
        Some(c) => events.insert(ev, c.id),
        None => events.remove(&ev),
    };
    Ok(())
}

pub unsafe fn event_synchronize(event: CUevent) -> CuResult {
    let s = shim()?;
    let event = handle(event);
    if !answered_here(s, event) {
        let request = Request::EventSynchronize {
            ctx: event_ctx(),
            event,
        };
        s.remote.call(&request, &[])?;
    }
    s.callbacks.wait_event(event);
    Ok(())
}

pub unsafe fn event_query(event: CUevent) -> CuResult {
    let s = shim()?;
    let event = handle(event);
    if !answered_here(s, event) {
        if young(s, event) {
            return Err(CuError::NOT_READY);
        }
        let request = Request::EventQuery {
            ctx: event_ctx(),
            event,
        };
        s.remote.call(&request, &[])?;
    }
    s.callbacks.query_event(event)
}

/// Whether a stream of `ctx` captures (`cuCtxRecordEvent` is refused then,
/// and those captures fail when they end, as in the driver).
fn refuse_if_context_captures(s: &Shim, ctx: Handle) -> CuResult {
    let mut captures = lock(&s.captures);
    let mut refused = false;
    for (sref, c) in captures.iter_mut() {
        let of = match *sref {
            StreamRef::Handle(h) => stream_ctx(s, as_ptr(h)).ok(),
            _ => state::current().map(|(c, _)| c),
        };
        if of == Some(ctx) {
            c.invalidated = true;
            refused = true;
        }
    }
    if refused {
        return Err(CuError::STREAM_CAPTURE_UNSUPPORTED);
    }
    Ok(())
}

/// `cuCtxRecordEvent`: the event records all of the context's work so
/// far, host functions included. Streamed; a record of the shim's notes
/// like any other (not watched: its queries ask the server until the next
/// watched record is told done).
pub unsafe fn ctx_record_event(ctx: CUcontext, event: CUevent) -> CuResult {
    let s = shim()?;
    let ctx = if ctx.is_null() { current_ctx()? } else { handle(ctx) };
    s.context_device(ctx)?;
    let ev = handle(event);
    refuse_if_context_captures(s, ctx)?;
    s.remote.post(&Request::CtxRecordEvent { ctx, event: ev }, &[])?;
    if let Some(n) = lock(&s.event_notes).get_mut(&ev) {
        n.record_unwatched();
    }
    s.callbacks.recorded_in_context(ev, ctx);
    lock(&s.capture_events).remove(&ev);
    Ok(())
}

/// `cuCtxWaitEvent`: all of the context's later work waits for the event
/// (and for the host functions it follows).
pub unsafe fn ctx_wait_event(ctx: CUcontext, event: CUevent) -> CuResult {
    let s = shim()?;
    let ctx = if ctx.is_null() { current_ctx()? } else { handle(ctx) };
    s.context_device(ctx)?;
    let ev = handle(event);
    s.remote.post(&Request::CtxWaitEvent { ctx, event: ev }, &[])?;
    s.callbacks.context_waits(ctx, ev);
    Ok(())
}
