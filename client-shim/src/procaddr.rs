//! `cuGetProcAddress` answers: which exported symbol serves a driver function
//! name at a requested CUDA version and default-stream kind.

use crate::exports::generated::PROC_TABLE;

/// `CU_GET_PROC_ADDRESS_PER_THREAD_DEFAULT_STREAM`.
pub const PER_THREAD_DEFAULT_STREAM: u64 = 2;

/// The symbol answering `name` at `version` with `flags`, or `None` when the
/// driver knows no such function.
pub fn resolve(name: &str, version: i32, flags: u64) -> Option<&str> {
    let kind = if flags & PER_THREAD_DEFAULT_STREAM != 0 { 2 } else { 0 };
    let pick = |kind: u64| -> Option<&'static str> {
        let mut candidates = PROC_TABLE.iter().filter(|(n, _, k, _)| *n == name && *k == kind);
        let first = candidates.next()?;
        // Highest version not above the request; the lowest when all are.
        let mut best: Option<&(&str, i32, u64, &str)> = (first.1 <= version).then_some(first);
        let mut lowest = first;
        for c in candidates {
            if c.1 < lowest.1 {
                lowest = c;
            }
            if c.1 <= version && best.is_none_or(|b| c.1 > b.1) {
                best = Some(c);
            }
        }
        Some(best.unwrap_or(lowest).3)
    };
    if let Some(sym) = pick(kind).or_else(|| pick(0)) {
        return Some(sym);
    }
    generic(name, version, kind == 2)
}

/// Names no recorded answer covers: the `_v2` generation of the CUDA 3.2
/// API (version 3020) serves requests from that version on, and a
/// per-thread request takes the `_ptds` / `_ptsz` form where one exists.
fn generic<'a>(name: &'a str, version: i32, per_thread: bool) -> Option<&'a str> {
    use crate::exports::generated::symbol_address;
    symbol_address(name)?;
    let base: &'a str = match EXPORTED_V2.iter().find(|(n, _)| *n == name) {
        Some((_, v2)) if version >= 3020 => v2,
        _ => name,
    };
    if per_thread {
        if let Some((_, pt)) = PER_THREAD.iter().find(|(n, _)| *n == base) {
            return Some(pt);
        }
    }
    Some(base)
}

use crate::exports::generated::{EXPORTED_V2, PER_THREAD};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_by_version() {
        assert_eq!(resolve("cuCtxGetDevice", 2000, 0), Some("cuCtxGetDevice"));
        assert_eq!(resolve("cuCtxGetDevice", 13000, 0), Some("cuCtxGetDevice_v2"));
        assert_eq!(resolve("cuCtxGetDevice", 12080, 0), Some("cuCtxGetDevice"));
        assert_eq!(resolve("cuMemAlloc", 13000, 0), Some("cuMemAlloc_v2"));
        assert_eq!(resolve("cuGetProcAddress", 12000, 0), Some("cuGetProcAddress_v2"));
        assert_eq!(resolve("cuGetProcAddress", 11030, 0), Some("cuGetProcAddress"));
    }

    #[test]
    fn answers_per_thread_variants() {
        assert_eq!(resolve("cuLaunchKernel", 12000, 2), Some("cuLaunchKernel_ptsz"));
        assert_eq!(resolve("cuMemcpyHtoD", 12000, 2), Some("cuMemcpyHtoD_v2_ptds"));
        assert_eq!(resolve("cuLaunchKernel", 12000, 0), Some("cuLaunchKernel"));
        // No per-thread form: the default answer serves.
        assert_eq!(resolve("cuInit", 12000, 2), Some("cuInit"));
    }

    #[test]
    fn unknown_names_are_not_found() {
        assert_eq!(resolve("cuNoSuchFunction", 12000, 0), None);
        // Exported but never seen in a trace: the symbol itself answers.
        assert!(resolve("cuArrayCreate_v2", 12000, 0).is_some());
    }

    #[test]
    fn unrecorded_names_take_their_v2_and_per_thread_forms() {
        assert_eq!(resolve("cuMemsetD32", 12000, 0), Some("cuMemsetD32_v2"));
        assert_eq!(resolve("cuMemsetD32", 2000, 0), Some("cuMemsetD32"));
        assert_eq!(resolve("cuMemsetD32", 12000, 2), Some("cuMemsetD32_v2_ptds"));
        assert_eq!(resolve("cuMemAllocHost", 12000, 0), Some("cuMemAllocHost_v2"));
    }
}
