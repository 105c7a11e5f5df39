//! The parser against real `nvcc` output (see `fixtures/README.md`).

use gpupool_fatbin::*;

const PTX: &[u8] = include_bytes!("fixtures/kernels.ptx");
const CUBIN: &[u8] = include_bytes!("fixtures/kernels_sm90.cubin");
const PLAIN: &[u8] = include_bytes!("fixtures/kernels_plain.fatbin");
const ZSTD: &[u8] = include_bytes!("fixtures/kernels_zstd.fatbin");
const LZ4: &[u8] = include_bytes!("fixtures/kernels_lz4.fatbin");
const TWO_UNITS: &[u8] = include_bytes!("fixtures/two_units.nv_fatbin");
const LARGE_PARAM: &[u8] = include_bytes!("fixtures/large_param_sm90.cubin");

const VECTOR_ADD: &str = "_Z13gp_vector_addPKfS0_Pfi";
const MIXED: &str = "_Z8gp_mixedc4PairsPdf";

/// The PTX image as a program hands it over: text and a terminating NUL.
fn ptx_image() -> Vec<u8> {
    let mut v = PTX.to_vec();
    v.push(0);
    v
}

/// What a caller holding only a pointer to `memory` learns by following
/// [`required_len`]: checks that it never asks past the image's end.
fn measured_len(memory: &[u8]) -> u64 {
    let mut have = 0usize;
    loop {
        match required_len(&memory[..have]).expect("well-formed image") {
            LenQuery::NeedAtLeast(n) => {
                assert!(n as usize > have, "asks for {n} bytes holding {have}");
                assert!(
                    n as usize <= memory.len(),
                    "asks for {n} bytes of a {}-byte image",
                    memory.len()
                );
                have = n as usize;
            }
            LenQuery::Exact(n) => return n,
            LenQuery::NulTerminated => return memory.iter().position(|&b| b == 0).expect("a NUL") as u64 + 1,
        }
    }
}

fn layout(k: &KernelInfo) -> Vec<(u32, u32)> {
    k.params
        .as_ref()
        .expect("a parameter layout")
        .iter()
        .map(|p| (p.offset, p.size))
        .collect()
}

/// The four kernels of `kernels.cu`, checked by name and layout.
fn check_kernels(image: &[u8]) {
    let ks = kernels(image).unwrap();
    let mut names: Vec<&str> = ks.iter().map(|k| k.name.as_str()).collect();
    names.sort();
    assert_eq!(names, [VECTOR_ADD, MIXED, "gp_null", "gp_scale"]);
    let by = |n: &str| ks.iter().find(|k| k.name == n).unwrap();
    assert_eq!(layout(by(VECTOR_ADD)), [(0, 8), (8, 8), (16, 8), (24, 4)]);
    assert_eq!(layout(by(MIXED)), [(0, 1), (8, 16), (24, 2), (32, 8), (40, 4)]);
    assert_eq!(layout(by("gp_scale")), [(0, 8), (8, 4), (12, 4)]);
    assert_eq!(layout(by("gp_null")), []);
    assert_eq!(by(VECTOR_ADD).param_bytes(), Some(28));
}

fn check_globals(image: &[u8]) {
    let mut gs: Vec<(String, u64)> = globals(image).unwrap().into_iter().map(|g| (g.name, g.size)).collect();
    gs.sort();
    assert_eq!(
        gs,
        [
            ("gp_bias".to_string(), 16),
            ("gp_coeffs".to_string(), 12),
            ("gp_counter".to_string(), 4)
        ]
    );
}

#[test]
fn detects_every_kind() {
    assert_eq!(detect(&ptx_image()), Ok(ImageKind::Ptx));
    assert_eq!(detect(CUBIN), Ok(ImageKind::Elf));
    for f in [PLAIN, ZSTD, LZ4, TWO_UNITS] {
        assert_eq!(detect(f), Ok(ImageKind::FatBinary));
    }
}

#[test]
fn required_len_matches_the_files() {
    assert_eq!(measured_len(&ptx_image()), PTX.len() as u64 + 1);
    for f in [CUBIN, PLAIN, ZSTD, LZ4] {
        assert_eq!(measured_len(f), f.len() as u64);
    }
    // Two fat binaries back to back: the first one only.
    assert_eq!(measured_len(TWO_UNITS), parse_fatbin(TWO_UNITS).unwrap().len());
    // Followed by unrelated bytes, as in a process's memory.
    let mut memory = CUBIN.to_vec();
    memory.extend_from_slice(&[0xAB; 100]);
    assert_eq!(measured_len(&memory), CUBIN.len() as u64);
}

#[test]
fn fat_binary_entries() {
    let plain = parse_fatbin(PLAIN).unwrap();
    assert_eq!(plain.len(), PLAIN.len() as u64);
    let shape: Vec<_> = plain
        .entries
        .iter()
        .map(|e| (e.kind, e.sm_arch, e.is_compressed()))
        .collect();
    assert_eq!(shape, [(EntryKind::Elf, 90, false), (EntryKind::Ptx, 90, false)]);

    let zstd = parse_fatbin(ZSTD).unwrap();
    let shape: Vec<_> = zstd.entries.iter().map(|e| (e.kind, e.sm_arch)).collect();
    assert_eq!(
        shape,
        [(EntryKind::Elf, 80), (EntryKind::Elf, 90), (EntryKind::Ptx, 90)]
    );
    for e in &zstd.entries {
        assert_eq!(e.compression(), Ok(Compression::Zstd));
        assert_eq!(e.payload().unwrap().len() as u64, e.uncompressed_size);
    }
    // sm_80 and sm_90 code and compute_90 PTX: runs on 8.x from 8.0 and
    // on anything from 9.0, not on 7.5.
    assert!(zstd.runs_on(8, 0) && zstd.runs_on(8, 6) && zstd.runs_on(9, 0) && zstd.runs_on(12, 0));
    assert!(!zstd.runs_on(7, 5));
    // sm_90 code and compute_90 PTX: not on 8.6.
    assert!(plain.runs_on(9, 0) && plain.runs_on(10, 0) && !plain.runs_on(8, 6));
    let lz4 = parse_fatbin(LZ4).unwrap();
    assert_eq!(lz4.entries.len(), 1);
    assert_eq!(lz4.entries[0].compression(), Ok(Compression::Lz4));

    // The same PTX however it is stored.
    let text = |p: &[u8]| -> Vec<u8> { p.iter().copied().take_while(|&b| b != 0).collect() };
    let plain_ptx = text(&plain.entries[1].payload().unwrap());
    assert!(plain_ptx.windows(8).any(|w| w == b".version"));
    assert_eq!(text(&zstd.entries[2].payload().unwrap()), plain_ptx);
    assert_eq!(text(&lz4.entries[0].payload().unwrap()), plain_ptx);
    // The same sm_90 cubin compressed or not.
    assert_eq!(zstd.entries[1].payload().unwrap(), plain.entries[0].payload().unwrap());
}

#[test]
fn kernels_from_every_format() {
    check_kernels(&ptx_image());
    check_kernels(PTX);
    check_kernels(CUBIN);
    check_kernels(PLAIN);
    check_kernels(ZSTD);
    check_kernels(LZ4);
    // The cubin inside the fat binary agrees with its PTX.
    let plain = parse_fatbin(PLAIN).unwrap();
    let mut from_elf = kernels(&plain.entries[0].payload().unwrap()).unwrap();
    let mut from_ptx = kernels(&plain.entries[1].payload().unwrap()).unwrap();
    from_elf.sort_by(|a, b| a.name.cmp(&b.name));
    from_ptx.sort_by(|a, b| a.name.cmp(&b.name));
    assert_eq!(from_elf, from_ptx);
}

/// The entry a device loads, as its driver picks it, and the kernels read
/// from that entry alone.
#[test]
fn the_entry_a_device_loads() {
    let zstd = parse_fatbin(ZSTD).unwrap();
    let pick = |major, minor| zstd.entry_for(major, minor).map(|e| (e.kind, e.sm_arch));
    // An ELF of the device's major version, the latest minor no later
    // than the device's, before any PTX.
    assert_eq!(pick(8, 0), Some((EntryKind::Elf, 80)));
    assert_eq!(pick(8, 6), Some((EntryKind::Elf, 80)));
    assert_eq!(pick(9, 0), Some((EntryKind::Elf, 90)));
    // No ELF of its major version: the PTX, compiled by the driver.
    assert_eq!(pick(10, 0), Some((EntryKind::Ptx, 90)));
    assert_eq!(pick(7, 5), None);
    let lz4 = parse_fatbin(LZ4).unwrap();
    assert_eq!(lz4.entry_for(9, 0).map(|e| e.kind), Some(EntryKind::Ptx));
    assert_eq!(lz4.entry_for(8, 9).map(|e| e.kind), None);
    // The same kernels, with their layouts, from the entry alone, whatever
    // the device; a device no entry fits reads every entry.
    for (major, minor) in [(8, 0), (9, 0), (10, 0), (7, 5)] {
        let mut picked = kernels_for(ZSTD, major, minor).unwrap();
        let mut all = kernels(ZSTD).unwrap();
        picked.sort_by(|a, b| a.name.cmp(&b.name));
        all.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(picked, all, "{major}.{minor}");
    }
    // Concatenated fat binaries: each one's entry.
    let names: Vec<String> = kernels_for(TWO_UNITS, 9, 0)
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(names, ["_Z13unit_a_kernelPi", "unit_b_kernel"]);
    // Images that are not fat binaries read as themselves.
    assert_eq!(kernels_for(CUBIN, 9, 0).unwrap(), kernels(CUBIN).unwrap());
    assert_eq!(kernels_for(&ptx_image(), 9, 0).unwrap(), kernels(&ptx_image()).unwrap());
}

/// A fat binary cut down to what given devices can load: the entries kept
/// are the original bytes, in order; the result parses, measures and
/// lists the same kernels for those devices.
#[test]
fn fat_binary_only_for_some_devices() {
    let zstd = parse_fatbin(ZSTD).unwrap();
    let shape =
        |f: &FatBinary<'_>| -> Vec<(EntryKind, u32)> { f.entries.iter().map(|e| (e.kind, e.sm_arch)).collect() };
    // An H100: the sm_90 code and the compute_90 PTX; not the sm_80 code.
    let h100 = only_for(ZSTD, &[(9, 0)]).unwrap().expect("the sm_80 entry goes");
    let cut = parse_fatbin(&h100).unwrap();
    assert_eq!(shape(&cut), [(EntryKind::Elf, 90), (EntryKind::Ptx, 90)]);
    assert_eq!(measured_len(&h100), h100.len() as u64);
    assert!(h100.len() < ZSTD.len());
    for (kept, original) in cut.entries.iter().zip(&zstd.entries[1..]) {
        assert_eq!(kept.raw_payload(), original.raw_payload());
        assert_eq!(kept.payload().unwrap(), original.payload().unwrap());
    }
    assert_eq!(kernels_for(&h100, 9, 0).unwrap(), kernels_for(ZSTD, 9, 0).unwrap());
    // An A10 (8.6): the sm_80 code only; the compute_90 PTX is too new.
    let a10 = only_for(ZSTD, &[(8, 6)]).unwrap().unwrap();
    assert_eq!(shape(&parse_fatbin(&a10).unwrap()), [(EntryKind::Elf, 80)]);
    // Both at once: every entry stays, so nothing is cut.
    assert_eq!(only_for(ZSTD, &[(8, 6), (9, 0)]).unwrap(), None);
    // Nothing loads on 7.5: the image stays whole, for the driver to refuse.
    assert_eq!(only_for(ZSTD, &[(7, 5)]).unwrap(), None);
    // Not a fat binary: an error, as parse_fatbin gives.
    assert!(only_for(CUBIN, &[(9, 0)]).is_err());
}

/// Parameters past 4 KiB (`KPARAM_INFO_V2` records, as PyTorch's foreach
/// and AMP kernels have): their layout is read as from the old records, in
/// the image beside a kernel with the old records.
#[test]
fn layout_of_parameters_past_4_kib() {
    let ks = kernels(LARGE_PARAM).unwrap();
    let by = |n: &str| ks.iter().find(|k| k.name == n).unwrap_or_else(|| panic!("{n}: {ks:?}"));
    assert_eq!(layout(by("gp_big_sum")), [(0, 8000), (8000, 8), (8008, 4)]);
    assert_eq!(layout(by("gp_small")), [(0, 8), (8, 4)]);
}

#[test]
fn globals_from_every_format() {
    for image in [&ptx_image()[..], CUBIN, PLAIN, ZSTD, LZ4] {
        check_globals(image);
    }
}

#[test]
fn concatenated_fat_binaries() {
    let all = parse_fatbins(TWO_UNITS).unwrap();
    assert_eq!(all.len(), 2);
    let names: Vec<String> = kernels(TWO_UNITS).unwrap().into_iter().map(|k| k.name).collect();
    assert_eq!(names, ["_Z13unit_a_kernelPi", "unit_b_kernel"]);
    let b = kernels(TWO_UNITS).unwrap().pop().unwrap();
    assert_eq!(layout(&b), [(0, 8), (8, 4)]);
}

#[test]
fn wrapper() {
    let mut w = Vec::new();
    w.extend_from_slice(&WRAPPER_MAGIC.to_le_bytes());
    w.extend_from_slice(&1u32.to_le_bytes());
    w.extend_from_slice(&0x7f00_1234_5678u64.to_le_bytes());
    w.extend_from_slice(&0u64.to_le_bytes());
    assert_eq!(detect(&w), Ok(ImageKind::Wrapper));
    assert_eq!(measured_len(&w), WRAPPER_LEN);
    assert_eq!(
        parse_wrapper(&w),
        Ok(Wrapper {
            version: 1,
            data: 0x7f00_1234_5678,
            filename_or_fatbins: 0
        })
    );
    assert_eq!(kernels(&w), Err(Error::WrapperNotImage));
    // Version 2 (relocatable device code): `data` is the device-linked fat
    // binary, the second pointer the objects' own.
    w[4] = 2;
    w[16..24].copy_from_slice(&0x7f00_0000_1000u64.to_le_bytes());
    assert_eq!(
        parse_wrapper(&w),
        Ok(Wrapper {
            version: 2,
            data: 0x7f00_1234_5678,
            filename_or_fatbins: 0x7f00_0000_1000
        })
    );
    assert_eq!(required_len(&w), Ok(LenQuery::Exact(WRAPPER_LEN)));
    w[4] = 3;
    assert!(matches!(parse_wrapper(&w), Err(Error::BadField { .. })));
}

#[test]
fn truncated_binaries_are_errors() {
    for f in [CUBIN, PLAIN, ZSTD, LZ4] {
        for end in 0..f.len() {
            let cut = &f[..end];
            assert!(kernels(cut).is_err(), "kernels() of {end} of {} bytes", f.len());
            let _ = globals(cut);
            let _ = parse_fatbin(cut);
            match required_len(cut) {
                Ok(LenQuery::Exact(n)) => assert_eq!(n, f.len() as u64),
                Ok(LenQuery::NeedAtLeast(n)) => assert!(n as usize > end),
                other => panic!("{other:?} for {end} bytes"),
            }
        }
    }
    // A truncated PTX text may still parse (it is text); it must not panic.
    for end in 0..PTX.len() {
        let _ = kernels(&PTX[..end]);
        let _ = globals(&PTX[..end]);
    }
}

#[test]
fn corrupted_images_do_not_panic() {
    for f in [&ptx_image()[..], CUBIN, PLAIN, ZSTD, LZ4, TWO_UNITS] {
        // Every header byte, then a sample of the rest (a debug build is slow).
        for i in (0..f.len()).filter(|i| *i < 256 || i % 13 == 0) {
            for x in [0x01u8, 0x80, 0xff] {
                let mut v = f.to_vec();
                v[i] ^= x;
                let _ = required_len(&v);
                let _ = kernels(&v);
                let _ = globals(&v);
                if let Ok(fb) = parse_fatbin(&v) {
                    for e in &fb.entries {
                        let _ = e.payload_with_limit(1 << 20);
                    }
                }
            }
        }
    }
}

#[test]
fn specific_corruptions_name_the_field() {
    let mut v = PLAIN.to_vec();
    v[4] = 2;
    assert!(matches!(
        parse_fatbin(&v),
        Err(Error::BadField {
            field: "fat-binary version",
            ..
        })
    ));
    let mut v = PLAIN.to_vec();
    v[8..16].copy_from_slice(&(u64::MAX - 8).to_le_bytes());
    assert!(matches!(required_len(&v), Err(Error::TooLarge { .. })));
    let mut v = PLAIN.to_vec();
    v[8..16].copy_from_slice(&(8u64 << 30).to_le_bytes());
    assert!(matches!(required_len(&v), Err(Error::TooLarge { .. })));
    // A zstd entry whose declared size is one byte short.
    let zstd = parse_fatbin(ZSTD).unwrap();
    let at = (zstd.entries[2].offset + 56) as usize;
    let mut v = ZSTD.to_vec();
    let declared = u64::from_le_bytes(v[at..at + 8].try_into().unwrap());
    v[at..at + 8].copy_from_slice(&(declared - 1).to_le_bytes());
    let fb = parse_fatbin(&v).unwrap();
    assert!(matches!(
        fb.entries[2].payload(),
        Err(Error::Decompress { codec: "zstd", .. })
    ));
    // An LZ4 entry claiming far more than LZ4 can expand to.
    let mut v = LZ4.to_vec();
    let at = (parse_fatbin(LZ4).unwrap().entries[0].offset + 56) as usize;
    v[at..at + 8].copy_from_slice(&(1u64 << 29).to_le_bytes());
    let fb = parse_fatbin(&v).unwrap();
    assert!(matches!(
        fb.entries[0].payload(),
        Err(Error::Decompress { codec: "LZ4", .. })
    ));
    // Unknown formats.
    assert!(matches!(detect(b"hello"), Err(Error::UnknownFormat { .. })));
    assert_eq!(detect(b""), Err(Error::Empty));
    assert_eq!(required_len(b"  \n\0"), Err(Error::Empty));
    let mut v = CUBIN.to_vec();
    v[4] = 1;
    assert!(matches!(kernels(&v), Err(Error::BadField { field: "ELF class", .. })));
}
