//! The kernel parameter layouts gpupool's fat-binary parser reads from a
//! shared library's device code, checked against what NVIDIA's own reader,
//! cuobjdump, prints of the same code.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

/// A kernel's parameters as (offset, size) pairs, in parameter order.
type Layout = Vec<(u32, u32)>;

/// A kernel's name and its (ordinal, offset, size) records as cuobjdump
/// prints them, in its order.
type Printed = (String, Vec<(u32, u32, u32)>);

/// The `.nv_fatbin` section of an ELF64 shared library, where nvcc puts
/// the device code of every unit it linked.
fn fatbin_section(elf: &[u8]) -> Result<&[u8], String> {
    let bytes = |at: usize, n: usize| elf.get(at..at.checked_add(n)?);
    let uint = |at: usize, n: usize| -> Option<usize> {
        let mut v = [0u8; 8];
        v[..n].copy_from_slice(bytes(at, n)?);
        usize::try_from(u64::from_le_bytes(v)).ok()
    };
    let bad = || "not an ELF64 file with section headers".to_string();
    if bytes(0, 5) != Some(b"\x7fELF\x02") {
        return Err(bad());
    }
    let shoff = uint(0x28, 8).ok_or_else(bad)?;
    let shentsize = uint(0x3a, 2).ok_or_else(bad)?;
    let shnum = uint(0x3c, 2).ok_or_else(bad)?;
    let shstrndx = uint(0x3e, 2).ok_or_else(bad)?;
    // (name offset, file offset, size) of section `i`.
    let section = |i: usize| -> Option<(usize, usize, usize)> {
        let h = shoff + i * shentsize;
        Some((uint(h, 4)?, uint(h + 0x18, 8)?, uint(h + 0x20, 8)?))
    };
    let (_, names, _) = section(shstrndx).ok_or_else(bad)?;
    for i in 0..shnum {
        let (name, offset, size) = section(i).ok_or_else(bad)?;
        if bytes(names + name, 11) == Some(b".nv_fatbin\0") {
            return bytes(offset, size).ok_or_else(bad);
        }
    }
    Err("no .nv_fatbin section".into())
}

/// What `cuobjdump -elf -arch sm_XY` prints of each kernel's
/// `EIATTR_KPARAM_INFO` and `EIATTR_KPARAM_INFO_V2` records: the distinct
/// (name, layout) pairs of the library's ELF code for that architecture.
fn cuobjdump_layouts(tool: &Path, library: &Path, arch: (u32, u32)) -> Result<BTreeSet<(String, Layout)>, String> {
    let out = Command::new(tool)
        .args(["-elf", "-arch", &format!("sm_{}{}", arch.0, arch.1)])
        .arg(library)
        .output()
        .map_err(|e| format!("run {}: {e}", tool.display()))?;
    if !out.status.success() {
        return Err(format!("cuobjdump: {}", String::from_utf8_lossy(&out.stderr)));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let mut seen = BTreeSet::new();
    // The kernel whose `.nv.info.<name>` section is being printed, and
    // its (ordinal, offset, size) records so far.
    let mut current: Option<Printed> = None;
    let mut finish = |c: Option<Printed>| {
        if let Some((name, mut records)) = c {
            records.sort();
            seen.insert((name, records.into_iter().map(|(_, o, s)| (o, s)).collect()));
        }
    };
    let hex = |line: &str, field: &str| -> Option<u32> {
        let after = line.split(field).nth(1)?.trim_start().strip_prefix(':')?.trim_start();
        u32::from_str_radix(after.strip_prefix("0x")?.split_whitespace().next()?, 16).ok()
    };
    for line in text.lines() {
        if let Some(name) = line.strip_prefix(".nv.info.") {
            finish(current.replace((name.trim().to_owned(), Vec::new())));
        } else if line.starts_with('.') {
            finish(current.take());
        } else if let Some((_, records)) = current.as_mut() {
            if let (Some(o), Some(off), Some(s)) = (hex(line, "Ordinal"), hex(line, "Offset"), hex(line, "Size")) {
                records.push((o, off, s));
            }
        }
    }
    finish(current);
    Ok(seen)
}

/// Checks every kernel cuobjdump finds in `library`'s code for `arch`
/// against the layout gpupool's parser reads for a device of that
/// capability. Returns how many distinct kernels agreed; an error names
/// the first few that did not.
pub fn agree_with_cuobjdump(tool: &Path, library: &Path, arch: (u32, u32)) -> Result<usize, String> {
    let elf = std::fs::read(library).map_err(|e| format!("read {}: {e}", library.display()))?;
    let region = fatbin_section(&elf)?;
    let ours: BTreeMap<String, BTreeSet<Layout>> = gpupool_fatbin::kernels_for(region, arch.0, arch.1)
        .map_err(|e| format!("the parser: {e}"))?
        .into_iter()
        .fold(BTreeMap::new(), |mut m, k| {
            let layout = k.params.map(|p| p.iter().map(|p| (p.offset, p.size)).collect());
            m.entry(k.name).or_default().extend(layout);
            m
        });
    let theirs = cuobjdump_layouts(tool, library, arch)?;
    if theirs.is_empty() {
        return Err(format!("cuobjdump found no sm_{}{} kernels", arch.0, arch.1));
    }
    let wrong: Vec<String> = theirs
        .iter()
        .filter(|(name, layout)| !ours.get(name).is_some_and(|l| l.contains(layout)))
        .take(5)
        .map(|(name, layout)| format!("{name}: cuobjdump {layout:?}, parser {:?}", ours.get(name)))
        .collect();
    if wrong.is_empty() {
        Ok(theirs.len())
    } else {
        Err(format!("layouts differ: {}", wrong.join("; ")))
    }
}
