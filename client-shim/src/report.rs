//! The call report (`GPUPOOL_CALL_REPORT=1`): for each driver entry point,
//! how often it was called, where it went (answered in the shim, streamed to
//! the server, or a round trip) and the time it took. Printed at exit.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;

static ENABLED: AtomicBool = AtomicBool::new(false);

#[derive(Default, Clone, Copy)]
struct Stats {
    calls: u64,
    nanos: u128,
    round_trips: u64,
    streamed: u64,
    /// Calls that returned an error, and the last error's code.
    errors: u64,
    last_error: u32,
}

static TABLE: Mutex<Option<HashMap<&'static str, Stats>>> = Mutex::new(None);

thread_local! {
    static ROUND_TRIPS: Cell<u64> = const { Cell::new(0) };
    static STREAMED: Cell<u64> = const { Cell::new(0) };
}

pub fn note_round_trip() {
    ROUND_TRIPS.with(|c| c.set(c.get() + 1));
}

pub fn note_streamed() {
    STREAMED.with(|c| c.set(c.get() + 1));
}

pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Turn the report on and print it when the process exits.
pub fn enable() {
    if ENABLED.swap(true, Ordering::AcqRel) {
        return;
    }
    extern "C" fn at_exit() {
        // A forked child holds a copy of the parent's counts.
        if !crate::config::forked() {
            let _ = std::panic::catch_unwind(print);
        }
    }
    // SAFETY: registering a plain extern "C" function with no captured state.
    unsafe {
        libc::atexit(at_exit);
    }
}

/// Run `f` as the entry point `name`, recording its cost when enabled.
pub fn measure<T>(name: &'static str, f: impl FnOnce() -> T) -> T {
    if !enabled() {
        return f();
    }
    let rt0 = ROUND_TRIPS.with(Cell::get);
    let st0 = STREAMED.with(Cell::get);
    let start = Instant::now();
    let out = f();
    let nanos = start.elapsed().as_nanos();
    let rt = ROUND_TRIPS.with(Cell::get) - rt0;
    let st = STREAMED.with(Cell::get) - st0;
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let s = table.get_or_insert_with(HashMap::new).entry(name).or_default();
    s.calls += 1;
    s.nanos += nanos;
    s.round_trips += rt;
    s.streamed += st;
    out
}

/// Count an error that the entry point `name` returned.
pub fn note_error(name: &'static str, code: u32) {
    if !enabled() {
        return;
    }
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let s = table.get_or_insert_with(HashMap::new).entry(name).or_default();
    s.errors += 1;
    s.last_error = code;
}

fn print() {
    let table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(table) = table.as_ref() else { return };
    let mut rows: Vec<_> = table.iter().collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.1.nanos));
    let server = crate::exports::server_label();
    let mut out = format!(
        "\ngpupool call report ({server})\n{:<44} {:>8} {:>12} {:>12} {:>12} {:>14}  where\n",
        "call", "count", "total µs", "mean µs", "round trips", "errors (last)"
    );
    for (name, s) in rows {
        let route = if s.round_trips > 0 {
            "server, waited for reply"
        } else if s.streamed > 0 {
            "server, streamed (no wait)"
        } else {
            "answered in the shim"
        };
        let errors = if s.errors > 0 {
            format!("{} ({})", s.errors, s.last_error)
        } else {
            "0".into()
        };
        out.push_str(&format!(
            "{:<44} {:>8} {:>12.1} {:>12.2} {:>12} {:>14}  {route}\n",
            name,
            s.calls,
            s.nanos as f64 / 1e3,
            s.nanos as f64 / 1e3 / s.calls.max(1) as f64,
            s.round_trips,
            errors
        ));
    }
    if let Some(total) = crate::exports::traffic_summary() {
        out.push_str(&total);
        out.push('\n');
    }
    eprint!("{out}");
}
