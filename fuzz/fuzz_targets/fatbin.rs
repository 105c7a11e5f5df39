//! Fuzz the code-image parser with untrusted bytes, as the client shim reads
//! them from a program's memory and the software driver receives them:
//! `cargo fuzz run fatbin` (nightly).
#![no_main]

use gpupool_fatbin::{detect, globals, kernels, kernels_for, parse_fatbins, parse_wrapper, required_len, LenQuery};
use libfuzzer_sys::fuzz_target;

/// Decompressed entries are capped well below the library default so a
/// small input cannot make one run take seconds.
const PAYLOAD_LIMIT: u64 = 1 << 22;

fuzz_target!(|data: &[u8]| {
    // The shim's measuring loop: grow the prefix as asked, never past the data.
    let mut have = 0usize;
    while let Ok(LenQuery::NeedAtLeast(n)) = required_len(&data[..have]) {
        assert!(n as usize > have, "required_len must ask for more than it has");
        if n as usize > data.len() {
            break;
        }
        have = n as usize;
    }
    let _ = detect(data);
    let _ = parse_wrapper(data);
    if let Ok(all) = parse_fatbins(data) {
        for fatbin in &all {
            for entry in &fatbin.entries {
                let _ = entry.payload_with_limit(PAYLOAD_LIMIT);
            }
        }
    }
    let _ = kernels(data);
    let _ = kernels_for(data, 9, 0);
    let _ = globals(data);
});
