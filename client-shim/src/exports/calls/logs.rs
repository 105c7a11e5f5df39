//! The driver's error log (`cuLogs*`): a plain-language line for each
//! failed driver call, kept in the shim because the calls fail here (the
//! shim's refusals as much as the server's answers). The log holds the
//! latest messages within the driver's 25,600 bytes; a program reads them
//! with an iterator (`cuLogsCurrent`, `cuLogsDumpToMemory`,
//! `cuLogsDumpToFile`), gets each as it happens through a callback
//! (`cuLogsRegisterCallback`), or has them all written to `CUDA_LOG_FILE`
//! (`stdout`, `stderr` or a file's path), as with the driver.
//!
//! A message reads `[12:34:56.789][4242][CUDA][E] Returning 1
//! (CUDA_ERROR_INVALID_VALUE) from cuMemAlloc_v2`, the time being UTC.
//! `CUDA_ERROR_NOT_READY` is an answer, not a failure, and is not logged.

use super::*;
use std::collections::VecDeque;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// The most bytes of messages kept, as the driver documents.
pub const CAPACITY: usize = 25_600;
/// `CU_LOG_LEVEL_ERROR`.
const LEVEL_ERROR: i32 = 0;
/// `CUDA_ERROR_NOT_READY`.
const NOT_READY: u32 = 600;

/// The kept messages, numbered from 0 in the order they were made; an
/// iterator (`CUlogIterator`) is the number of the next message to read.
#[derive(Default)]
pub struct Log {
    entries: VecDeque<String>,
    /// Number of the oldest kept message.
    first: u32,
    bytes: usize,
}

impl Log {
    /// Number the next message will have.
    pub fn next(&self) -> u32 {
        self.first.wrapping_add(self.entries.len() as u32)
    }

    pub fn push(&mut self, message: String) {
        // Each counts with the newline that ends it in a dump.
        let message = if message.len() >= CAPACITY {
            message[..CAPACITY - 1].to_string()
        } else {
            message
        };
        self.bytes += message.len() + 1;
        self.entries.push_back(message);
        while self.bytes > CAPACITY {
            let Some(old) = self.entries.pop_front() else { break };
            self.bytes -= old.len() + 1;
            self.first = self.first.wrapping_add(1);
        }
    }

    /// The messages from `from` on (all kept ones without an iterator), and
    /// how many after `from` were overwritten before they could be read.
    /// `None` for an iterator the log never handed out.
    pub fn since(&self, from: Option<u32>) -> Option<(u32, Vec<&str>)> {
        let Some(from) = from else {
            return Some((self.first, self.entries.iter().map(String::as_str).collect()));
        };
        let past_first = from.wrapping_sub(self.first) as usize;
        if past_first <= self.entries.len() {
            return Some((0, self.entries.iter().skip(past_first).map(String::as_str).collect()));
        }
        // Behind the oldest kept message (numbers wrap, as iterators do).
        let lost = self.first.wrapping_sub(from);
        (lost as usize <= u32::MAX as usize / 2).then(|| (lost, self.entries.iter().map(String::as_str).collect()))
    }
}

/// What a dump into `capacity` bytes (its NUL included) writes: a notice of
/// messages left out, then the newest messages that fit, each ending in a
/// newline. `None` when not even the newest message fits.
pub fn fit(lost: u32, messages: &[&str], capacity: usize) -> Option<String> {
    let room = capacity.checked_sub(1)?;
    let mut taken = 0;
    let mut used = 0;
    for m in messages.iter().rev() {
        if used + m.len() + 1 > room {
            break;
        }
        used += m.len() + 1;
        taken += 1;
    }
    if taken == 0 && !messages.is_empty() {
        return None;
    }
    let mut left_out = lost as usize + messages.len() - taken;
    let mut text = String::with_capacity(used + 96);
    if left_out > 0 {
        // The notice takes room: give up old messages until it fits too.
        loop {
            let notice = notice(left_out);
            let fits = used + notice.len() < room;
            if fits || taken <= 1 {
                if fits {
                    text.push_str(&notice);
                    text.push('\n');
                }
                break;
            }
            let dropped = messages[messages.len() - taken];
            used -= dropped.len() + 1;
            taken -= 1;
            left_out += 1;
        }
    }
    for m in &messages[messages.len() - taken..] {
        text.push_str(m);
        text.push('\n');
    }
    Some(text)
}

fn notice(left_out: usize) -> String {
    let plural = if left_out == 1 { "message was" } else { "messages were" };
    format!("{} {left_out} earlier log {plural} truncated", prefix('W'))
}

fn prefix(severity: char) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = now.as_secs() % 86_400;
    // SAFETY: gettid has no preconditions.
    let tid = unsafe { libc::gettid() };
    format!(
        "[{:02}:{:02}:{:02}.{:03}][{tid}][CUDA][{severity}]",
        secs / 3600,
        secs / 60 % 60,
        secs % 60,
        now.subsec_millis()
    )
}

static LOG: Mutex<Log> = Mutex::new(Log {
    entries: VecDeque::new(),
    first: 0,
    bytes: 0,
});

#[derive(Clone, Copy)]
struct Callback {
    func: unsafe extern "C" fn(*mut c_void, i32, *mut c_char, usize),
    user: usize,
}

/// Registered callbacks; a handle is its slot's position plus one.
static CALLBACKS: Mutex<Vec<Option<Callback>>> = Mutex::new(Vec::new());
static ANY_CALLBACK: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Set while this thread runs the program's callbacks: a driver call
    /// failing inside one is logged, and told to no callback.
    static IN_CALLBACK: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

enum Sink {
    Stdout,
    Stderr,
    File(std::fs::File),
}

/// Where `CUDA_LOG_FILE` asks messages to go, opened at the first message.
fn log_file() -> &'static Mutex<Option<Sink>> {
    static FILE: OnceLock<Mutex<Option<Sink>>> = OnceLock::new();
    FILE.get_or_init(|| {
        let sink = std::env::var_os("CUDA_LOG_FILE").and_then(|path| match path.to_str() {
            Some("stdout") => Some(Sink::Stdout),
            Some("stderr") => Some(Sink::Stderr),
            _ => match std::fs::OpenOptions::new().create(true).append(true).open(&path) {
                Ok(f) => Some(Sink::File(f)),
                Err(e) => {
                    tracing::warn!(path = ?path, error = %e, "CUDA_LOG_FILE cannot be opened; driver log messages are kept in memory only");
                    None
                }
            },
        });
        Mutex::new(sink)
    })
}

/// Log a failed driver call (from the boundary guard).
pub(crate) fn log_failure(call: &str, status: u32) {
    if status == NOT_READY || !crate::config::may_log() {
        return;
    }
    let name = error::name(status).unwrap_or("CUDA_ERROR_UNKNOWN");
    let message = format!("{} Returning {status} ({name}) from {call}", prefix('E'));
    if let Some(sink) = lock(log_file()).as_mut() {
        let line = format!("{message}\n");
        let _ = match sink {
            Sink::Stdout => std::io::stdout().write_all(line.as_bytes()),
            Sink::Stderr => std::io::stderr().write_all(line.as_bytes()),
            Sink::File(f) => f.write_all(line.as_bytes()),
        };
    }
    let told = ANY_CALLBACK.load(Ordering::Relaxed).then(|| message.clone());
    lock(&LOG).push(message);
    if let Some(message) = told {
        tell_callbacks(&message);
    }
}

fn tell_callbacks(message: &str) {
    let Ok(false) = IN_CALLBACK.try_with(|c| c.replace(true)) else {
        return;
    };
    let callbacks: Vec<Callback> = lock(&CALLBACKS).iter().flatten().copied().collect();
    for cb in callbacks {
        // Each gets its own copy: the message is the callback's to change.
        let mut text = Vec::with_capacity(message.len() + 1);
        text.extend_from_slice(message.as_bytes());
        text.push(0);
        // SAFETY: the program registered `func` as a CUlogsCallback; the
        // message is NUL-terminated, writable and lives across the call.
        unsafe {
            (cb.func)(
                cb.user as *mut c_void,
                LEVEL_ERROR,
                text.as_mut_ptr().cast(),
                message.len(),
            )
        };
    }
    let _ = IN_CALLBACK.try_with(|c| c.set(false));
}

pub unsafe fn logs_register_callback(callback: *mut c_void, user: *mut c_void, handle: *mut *mut c_void) -> CuResult {
    if callback.is_null() || handle.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a CUlogsCallback.
    let func = unsafe {
        std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*mut c_void, i32, *mut c_char, usize)>(callback)
    };
    let mut callbacks = lock(&CALLBACKS);
    callbacks.push(Some(Callback {
        func,
        user: user as usize,
    }));
    ANY_CALLBACK.store(true, Ordering::Relaxed);
    // Handles are 1-based positions: never NULL.
    // SAFETY: checked not to be NULL; the program passes a slot.
    unsafe { out(handle, callbacks.len() as *mut c_void) }
}

pub unsafe fn logs_unregister_callback(handle: *mut c_void) -> CuResult {
    let mut callbacks = lock(&CALLBACKS);
    match (handle as usize).checked_sub(1).and_then(|i| callbacks.get_mut(i)) {
        Some(slot @ Some(_)) => {
            *slot = None;
            Ok(())
        }
        _ => Err(CuError::INVALID_VALUE),
    }
}

pub unsafe fn logs_current(iterator: *mut u32, flags: u32) -> CuResult {
    if flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let next = lock(&LOG).next();
    // SAFETY: the program passes a slot (NULL is refused by `out`).
    unsafe { out(iterator, next) }
}

/// The iterator's value (`None` for a NULL one, meaning every kept message).
unsafe fn start(iterator: *mut u32) -> Option<u32> {
    // SAFETY: a non-NULL iterator is the program's CUlogIterator.
    (!iterator.is_null()).then(|| unsafe { iterator.read() })
}

pub unsafe fn logs_dump_to_memory(iterator: *mut u32, buffer: *mut c_char, size: *mut usize, flags: u32) -> CuResult {
    if buffer.is_null() || size.is_null() || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: checked non-NULL; the program passes its buffer's size.
    let capacity = unsafe { size.read() };
    let log = lock(&LOG);
    // SAFETY: a non-NULL iterator is the program's CUlogIterator.
    let (lost, messages) = log.since(unsafe { start(iterator) }).ok_or(CuError::INVALID_VALUE)?;
    let text = if messages.is_empty() && lost == 0 {
        String::new()
    } else {
        match fit(lost, &messages, capacity) {
            Some(text) => text,
            None => {
                // SAFETY: checked not to be NULL above.
                unsafe { size.write(0) };
                return Err(CuError::INVALID_VALUE);
            }
        }
    };
    if capacity > 0 {
        // SAFETY: `fit` left room for the NUL within the program's
        // `capacity` bytes.
        unsafe {
            std::ptr::copy_nonoverlapping(text.as_ptr(), buffer.cast::<u8>(), text.len());
            buffer.add(text.len()).write(0);
        }
    }
    // SAFETY: `size` was checked not to be NULL; a non-NULL iterator is
    // the program's CUlogIterator.
    unsafe {
        size.write(text.len());
        out_opt(iterator, log.next());
    }
    Ok(())
}

pub unsafe fn logs_dump_to_file(iterator: *mut u32, path: *const c_char, flags: u32) -> CuResult {
    if path.is_null() || flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the program passes a NUL-terminated path.
    let path = unsafe { CStr::from_ptr(path) };
    let path = std::path::Path::new(<std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(
        path.to_bytes(),
    ));
    let text = {
        let log = lock(&LOG);
        // SAFETY: as in `logs_dump_to_memory`.
        let (lost, messages) = log.since(unsafe { start(iterator) }).ok_or(CuError::INVALID_VALUE)?;
        let mut text = String::new();
        if lost > 0 {
            text.push_str(&notice(lost as usize));
            text.push('\n');
        }
        for m in messages {
            text.push_str(m);
            text.push('\n');
        }
        (text, log.next())
    };
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.0.as_bytes()));
    if let Err(e) = written {
        tracing::warn!(path = %path.display(), error = %e, "cuLogsDumpToFile: the log could not be written");
        return Err(match e.kind() {
            std::io::ErrorKind::NotFound => CuError::FILE_NOT_FOUND,
            _ => CuError::OPERATING_SYSTEM,
        });
    }
    // SAFETY: a non-NULL iterator is the program's CUlogIterator.
    unsafe { out_opt(iterator, text.1) };
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log_of(n: usize, len: usize) -> Log {
        let mut log = Log::default();
        for i in 0..n {
            log.push(format!("{i:0len$}"));
        }
        log
    }

    #[test]
    fn the_log_keeps_the_newest_messages_within_its_capacity() {
        let log = log_of(300, 99);
        assert_eq!(log.next(), 300);
        assert!(log.bytes <= CAPACITY);
        assert_eq!(log.entries.len(), CAPACITY / 100);
        assert_eq!(log.first as usize, 300 - CAPACITY / 100);
        assert_eq!(log.entries.back().unwrap().trim_start_matches('0'), "299");
        // An iterator behind the oldest kept message learns how many it lost.
        let (lost, messages) = log.since(Some(10)).unwrap();
        assert_eq!(lost, log.first - 10);
        assert_eq!(messages.len(), log.entries.len());
        let (lost, messages) = log.since(Some(298)).unwrap();
        assert_eq!((lost, messages.len()), (0, 2));
        assert_eq!(log.since(Some(300)).unwrap().1.len(), 0);
        assert!(log.since(Some(301)).is_none(), "an iterator never handed out");
    }

    #[test]
    fn a_dump_keeps_the_newest_messages_that_fit_and_says_what_it_left_out() {
        let messages = ["aaaa", "bbbb", "cccc"];
        assert_eq!(fit(0, &messages, 100).unwrap(), "aaaa\nbbbb\ncccc\n");
        // Exactly enough: three lines and the NUL.
        assert_eq!(fit(0, &messages, 16).unwrap(), "aaaa\nbbbb\ncccc\n");
        // Not enough for the notice: the newest message alone.
        assert_eq!(fit(0, &messages, 15).unwrap(), "cccc\n");
        assert!(
            fit(0, &messages, 5).is_none(),
            "the newest message and its NUL need 6 bytes"
        );
        assert!(fit(0, &messages, 0).is_none());
        // Room for the notice and two messages.
        let long = ["a".repeat(100), "b".repeat(100), "c".repeat(100)];
        let long: Vec<&str> = long.iter().map(String::as_str).collect();
        let capacity = notice(1).len() + 1 + 2 * 101 + 1;
        let text = fit(0, &long, capacity).unwrap();
        assert!(
            text.ends_with(&format!(
                " 1 earlier log message was truncated\n{}\n{}\n",
                long[1], long[2]
            )),
            "{text}"
        );
        assert_eq!(text.len(), capacity - 1);
        // One byte less: the notice costs the older of the two.
        let text = fit(0, &long, capacity - 1).unwrap();
        assert!(
            text.ends_with(&format!(" 2 earlier log messages were truncated\n{}\n", long[2])),
            "{text}"
        );
        let text = fit(5, &messages, 200).unwrap();
        assert!(
            text.contains(" 5 earlier log messages were truncated\naaaa\n"),
            "{text}"
        );
    }
}
