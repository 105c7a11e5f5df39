//! Property: no input, however malformed, makes the parser panic.

use gpupool_fatbin::*;
use proptest::prelude::*;

const FIXTURES: [&[u8]; 6] = [
    include_bytes!("fixtures/kernels.ptx"),
    include_bytes!("fixtures/kernels_sm90.cubin"),
    include_bytes!("fixtures/kernels_zstd.fatbin"),
    include_bytes!("fixtures/kernels_lz4.fatbin"),
    include_bytes!("fixtures/two_units.nv_fatbin"),
    include_bytes!("fixtures/large_param_sm90.cubin"),
];

/// Everything a caller may do with untrusted bytes.
fn exercise(bytes: &[u8]) {
    let _ = detect(bytes);
    let _ = required_len(bytes);
    let _ = parse_wrapper(bytes);
    let _ = kernels(bytes);
    let _ = kernels_for(bytes, 9, 0);
    let _ = globals(bytes);
    if let Ok(all) = parse_fatbins(bytes) {
        for fatbin in all {
            let _ = fatbin.entry_for(8, 6);
            for entry in &fatbin.entries {
                let _ = entry.payload_with_limit(1 << 20);
            }
        }
    }
}

fn with_magic() -> impl Strategy<Value = Vec<u8>> {
    let magic = prop_oneof![
        Just(WRAPPER_MAGIC.to_le_bytes().to_vec()),
        Just(FATBIN_MAGIC.to_le_bytes().to_vec()),
        Just(b"\x7fELF\x02\x01\x01".to_vec()),
        Just(b".version 9.0\n.target sm_90\n.entry ".to_vec()),
    ];
    (magic, prop::collection::vec(any::<u8>(), 0..512)).prop_map(|(mut m, rest)| {
        m.extend(rest);
        m
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        exercise(&bytes);
    }

    #[test]
    fn bytes_after_a_magic_never_panic(bytes in with_magic()) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_fixtures_never_panic(
        which in 0..FIXTURES.len(),
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut v = FIXTURES[which].to_vec();
        for (i, b) in edits {
            let i = i.index(v.len());
            v[i] = b;
        }
        exercise(&v);
        exercise(&v[..cut.index(v.len())]);
    }
}
