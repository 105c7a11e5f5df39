//! The entry points a C API header (`cuda.h`, `nvml.h`) declares, and
//! whether a library exports each: a program built with the header links
//! against those names, and a name the library lacks ends the program with
//! a symbol lookup error.

use std::collections::BTreeSet;
use std::ffi::CString;
use std::path::Path;

/// The names of the entry points `header` declares whose names start with
/// `prefix`: each `... MARKER name(` (the header's calling-convention
/// macro, `CUDAAPI` or `DECLDIR`), each versioned name a `#define` calls
/// one by (`#define cuCtxCreate cuCtxCreate_v2`), and the per-thread
/// default-stream names of `__CUDA_API_PTDS(x)` and `__CUDA_API_PTSZ(x)`
/// (`x_ptds`, `x_ptsz`).
pub fn declared_entry_points(header: &str, marker: &str, prefix: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let versioned = |name: &str| name.rsplit_once("_v").is_some_and(|(_, v)| v.parse::<u32>().is_ok());
    for line in header.lines().map(str::trim) {
        if let Some((_, rest)) = line.split_once(marker) {
            if let Some((before, _)) = rest.split_once('(') {
                let name = before
                    .rsplit(|c: char| c.is_whitespace() || c == '*')
                    .next()
                    .unwrap_or_default();
                if name.starts_with(prefix) {
                    names.insert(name.to_owned());
                }
            }
        }
        for (wrapper, suffix) in [("__CUDA_API_PTDS(", "_ptds"), ("__CUDA_API_PTSZ(", "_ptsz")] {
            if let Some((_, rest)) = line.split_once(wrapper) {
                let name = rest.split(')').next().unwrap_or_default().trim();
                if name.starts_with(prefix) {
                    names.insert(format!("{name}{suffix}"));
                }
            }
        }
        if let Some(rest) = line
            .strip_prefix('#')
            .map(str::trim_start)
            .and_then(|l| l.strip_prefix("define"))
        {
            let mut words = rest.split_whitespace();
            if let (Some(alias), Some(target), None) = (words.next(), words.next(), words.next()) {
                if alias.starts_with(prefix) && target.starts_with(prefix) && versioned(target) {
                    names.insert(target.to_owned());
                }
            }
        }
    }
    names
}

/// The names of `names` that the shared library at `library` does not
/// export (looked up with `dlsym`, nothing called).
pub fn not_exported<'a>(library: &Path, names: &'a BTreeSet<String>) -> Vec<&'a String> {
    let path = CString::new(library.as_os_str().as_encoded_bytes()).expect("a path without NUL");
    // SAFETY: dlopen of one of gpupool's libraries, whose load runs nothing
    // but its statics' setup; the handle is closed below.
    let lib = unsafe { libc::dlopen(path.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
    assert!(!lib.is_null(), "dlopen {}", library.display());
    let missing = names
        .iter()
        .filter(|name| {
            let c = CString::new(name.as_str()).expect("a name without NUL");
            // SAFETY: `lib` is the open handle; only the address is looked up.
            unsafe { libc::dlsym(lib, c.as_ptr()) }.is_null()
        })
        .collect();
    // SAFETY: the handle from dlopen above; no symbol of it is used after.
    unsafe { libc::dlclose(lib) };
    missing
}
