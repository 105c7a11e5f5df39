//! `CUDA_VISIBLE_DEVICES`, read as the driver reads it: entries separated
//! by commas, each a device index or the start of a device's UUID
//! (`GPU-...`); the list ends at the first entry that names no device (an
//! index out of range or negative, a UUID prefix matching none or several,
//! a device named twice, or anything else), and the devices named before it
//! are the visible ones, in that order. An empty value shows none.
//!
//! The client sends its value in its hello. A value that shows no device
//! (`""`, `-1`) makes the shim's `cuInit` answer `CUDA_ERROR_NO_DEVICE`
//! without connecting; any other, the daemon hands to the session's worker
//! as the worker's own `CUDA_VISIBLE_DEVICES` ([`compose`]), so the
//! server's driver shows the session just those devices, in that order,
//! numbered from 0, as it would show a local program.

use crate::handshake::gpu_uuid_string;

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

/// The places `value` gives the devices it shows, when it names them all
/// by index: the `p`-th device the program sees is the server's (and NVML's)
/// device `indices[p]`. `None` when it names one by UUID.
pub fn indices(value: &str) -> Option<Vec<usize>> {
    let mut out = Vec::new();
    for e in entries(value) {
        match e {
            Entry::Index(i) if !out.contains(&i) => out.push(i),
            Entry::Index(_) => break,
            Entry::Uuid(_) => return None,
        }
    }
    Some(out)
}

/// The longest value a hello may carry.
pub const MAX_LEN: usize = 4096;

/// The `CUDA_VISIBLE_DEVICES` of a session's worker: the client's `value`
/// read against the devices the server shows (`server`, the daemon's own
/// `CUDA_VISIBLE_DEVICES`, when it has one). Without one, the client's
/// value as it is: the worker's driver reads it as a local one would. With
/// one, each index the client gives is the server's entry at that place,
/// and the list ends where an index goes past the server's entries, or at
/// a UUID (which could name a GPU the server does not show).
pub fn compose(server: Option<&str>, value: &str) -> String {
    let Some(server) = server else {
        return value.to_string();
    };
    let shown: Vec<&str> = server.split(',').map(str::trim).take(entries(server).len()).collect();
    let mut out = Vec::new();
    for e in entries(value) {
        match e {
            Entry::Index(i) if i < shown.len() => out.push(shown[i]),
            _ => break,
        }
    }
    out.join(",")
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

    #[test]
    fn indices_of_an_index_list() {
        assert_eq!(indices("2,0"), Some(vec![2, 0]));
        assert_eq!(indices("1,1,0"), Some(vec![1]));
        assert_eq!(indices("1,-1,0"), Some(vec![1]));
        assert_eq!(indices("1,GPU-ab"), None);
        assert_eq!(indices(""), Some(vec![]));
    }

    #[test]
    fn a_server_that_shows_some_gpus_is_the_frame_of_the_clients_indices() {
        assert_eq!(compose(None, "1,GPU-ab"), "1,GPU-ab");
        assert_eq!(compose(Some("2,3"), "1"), "3");
        assert_eq!(compose(Some("2, 3"), "1,0"), "3,2");
        assert_eq!(compose(Some("GPU-aa,GPU-bb"), "1"), "GPU-bb");
        // Past the server's entries, or at a UUID, the list ends.
        assert_eq!(compose(Some("2,3"), "0,2,1"), "2");
        assert_eq!(compose(Some("2,3"), "GPU-aa,0"), "");
        assert_eq!(compose(Some("2,-1,3"), "1"), "");
        assert_eq!(compose(Some(""), "0"), "");
    }
}
