//! `CUDA_VISIBLE_DEVICES`, read as the driver reads it: entries separated
//! by commas, each a device index or the start of a device's UUID
//! (`GPU-...`); the list ends at the first entry that names no device (an
//! index out of range or negative, a UUID prefix matching none or several,
//! a device named twice, or anything else), and the devices named before it
//! are the visible ones, in that order. An empty value shows none.
//!
//! gpupool applies the part a program most relies on: a value that shows
//! no device (`""`, `-1`) makes `cuInit` answer `CUDA_ERROR_NO_DEVICE`
//! without connecting, as programs and test suites use it to keep off the
//! GPU. Showing a subset of a session's devices, or reordering them, is not
//! applied yet: the program sees all of them, and the shim says so once.

use gpupool_proto::handshake::gpu_uuid_string;

/// One entry of the list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Entry<'a> {
    Index(usize),
    Uuid(&'a str),
}

/// The entries up to the first that cannot name a device whatever the
/// devices are.
fn entries(value: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    for raw in value.split(',') {
        let e = raw.trim();
        if let Ok(i) = e.parse::<usize>() {
            out.push(Entry::Index(i));
        } else if e.len() > 4 && (e.starts_with("GPU-") || e.starts_with("MIG-")) {
            out.push(Entry::Uuid(e));
        } else {
            break;
        }
    }
    out
}

/// Whether `value` shows no device, whatever devices there are.
pub fn shows_none(value: &str) -> bool {
    entries(value).is_empty()
}

/// The devices `value` shows, as indices into `uuids` (the session's
/// devices in order), in the order it names them.
pub fn select(value: &str, uuids: &[[u8; 16]]) -> Vec<usize> {
    let names: Vec<String> = uuids.iter().map(gpu_uuid_string).collect();
    let mut chosen = Vec::new();
    for e in entries(value) {
        let found = match e {
            Entry::Index(i) => (i < uuids.len()).then_some(i),
            Entry::Uuid(prefix) => {
                let mut matching = names.iter().enumerate().filter(|(_, n)| n.starts_with(prefix));
                match (matching.next(), matching.next()) {
                    (Some((i, _)), None) => Some(i),
                    _ => None,
                }
            }
        };
        match found {
            Some(i) if !chosen.contains(&i) => chosen.push(i),
            _ => break,
        }
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: [u8; 16] = [0xaa; 16];
    const B: [u8; 16] = [0xab; 16];

    #[test]
    fn values_that_show_no_device() {
        for v in ["", " ", "-1", "none", ",0", "GPU-"] {
            assert!(shows_none(v), "{v:?}");
        }
        for v in ["0", "1,0", " 2 ", "GPU-aa", "MIG-1234"] {
            assert!(!shows_none(v), "{v:?}");
        }
    }

    #[test]
    fn selection_stops_at_the_first_entry_naming_no_device() {
        let devs = [A, B];
        assert_eq!(select("0,1", &devs), [0, 1]);
        assert_eq!(select("1", &devs), [1]);
        assert_eq!(select("1,0", &devs), [1, 0]);
        assert_eq!(select("1,5,0", &devs), [1]);
        assert_eq!(select("0,-1,1", &devs), [0]);
        assert_eq!(select("0,0,1", &devs), [0]);
        assert_eq!(select("7", &devs), Vec::<usize>::new());
        // UUID prefixes: unique ones name a device, ambiguous ones stop.
        assert_eq!(select("GPU-abab", &devs), [1]);
        assert_eq!(select("GPU-a,0", &devs), Vec::<usize>::new());
        assert_eq!(select("GPU-aaaaaaaa-aaaa,1", &devs), [0, 1]);
        assert_eq!(select("", &devs), Vec::<usize>::new());
    }
}
