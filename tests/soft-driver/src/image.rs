//! Loading of module images: PTX text, cubin ELF images and fat binaries.
//!
//! Whatever the format, the result is the [`ptx::Module`] the rest of the
//! simulated driver works with. A fat binary is read through its entries:
//! a PTX entry the simulated sm_90 device can take (compute_90 or older)
//! is preferred, since PTX gives the full picture (parameters, launch
//! bounds, initialised variables); otherwise an sm_90 cubin provides the
//! kernel list, the parameter layouts from its `EIATTR_KPARAM_INFO`
//! records and its variables (zero-initialised: cubin initialisers are not
//! read). Fat-binary wrappers never reach a driver: the shim unwraps them.

use gpupool_fatbin::{self as fatbin, EntryKind, ImageKind};

use crate::ptx::{self, PtxError};
use crate::result::*;

/// The simulated device's architecture (`major * 10 + minor`).
const DEVICE_SM: u32 = 90;

/// Logs why an image was refused; the driver API only has the error code.
fn refuse(code: CUresult, why: impl std::fmt::Display) -> CUresult {
    eprintln!("gpupool soft driver: module image refused ({}): {why}", name(code));
    code
}

fn name(code: CUresult) -> String {
    error_name(code).map_or_else(|| code.to_string(), |n| n.to_string_lossy().into_owned())
}

fn ptx_error(e: PtxError) -> CUresult {
    let code = match e {
        PtxError::NotPtx(_) => CUDA_ERROR_INVALID_IMAGE,
        PtxError::Syntax(_) => CUDA_ERROR_INVALID_PTX,
        PtxError::UnsupportedVersion(_) => CUDA_ERROR_UNSUPPORTED_PTX_VERSION,
        PtxError::Unsupported(_) => CUDA_ERROR_NOT_SUPPORTED,
    };
    refuse(code, e)
}

/// Parses a module image of any supported format.
pub fn load(image: &[u8]) -> CuResult<ptx::Module> {
    match fatbin::detect(image) {
        Ok(ImageKind::FatBinary) => from_fatbin(image),
        Ok(ImageKind::Elf) => from_elf(image),
        Ok(ImageKind::Wrapper) => Err(refuse(
            CUDA_ERROR_INVALID_IMAGE,
            "a fat-binary wrapper was passed where the fat binary it points to was expected",
        )),
        // PTX, and text the PTX parser should judge (it tells a syntax
        // error from something that is not PTX at all).
        Ok(ImageKind::Ptx) | Err(fatbin::Error::UnknownFormat { .. } | fatbin::Error::Empty) => {
            if image.starts_with(b"\x7fELF") {
                return Err(refuse(CUDA_ERROR_INVALID_IMAGE, "truncated ELF image"));
            }
            ptx::parse_image(fatbin::ptx_text(image).unwrap_or(image)).map_err(ptx_error)
        }
        Err(e) => Err(refuse(CUDA_ERROR_INVALID_IMAGE, e)),
    }
}

/// A module from a cubin: kernels with their parameter layouts, variables.
fn from_elf(image: &[u8]) -> CuResult<ptx::Module> {
    let invalid = |e: fatbin::Error| refuse(CUDA_ERROR_INVALID_IMAGE, format!("cubin: {e}"));
    let kernels = fatbin::kernels(image).map_err(invalid)?;
    let globals = fatbin::globals(image).map_err(invalid)?;
    let entries = kernels
        .into_iter()
        .map(|k| {
            let params = k
                .params
                .unwrap_or_default()
                .iter()
                .enumerate()
                .map(|(i, p)| ptx::Param {
                    name: format!("{}_param_{i}", k.name),
                    offset: p.offset as usize,
                    size: p.size as usize,
                    align: natural_align(p.offset, p.size),
                })
                .collect();
            ptx::Entry {
                name: k.name,
                params,
                maxntid: None,
                reqntid: None,
            }
        })
        .collect();
    let variables = globals
        .into_iter()
        .map(|g| ptx::Variable {
            name: g.name,
            space: ptx::Space::Global,
            size: g.size as usize,
            align: 8,
            init: Vec::new(),
            managed: false,
        })
        .collect();
    Ok(ptx::Module {
        version: (0, 0),
        target_sm: DEVICE_SM,
        address_size: 64,
        entries,
        variables,
    })
}

/// The largest power of two (up to 16) that the offset allows and the size needs.
fn natural_align(offset: u32, size: u32) -> usize {
    let by_size = size.next_power_of_two().clamp(1, 16);
    let by_offset = if offset == 0 {
        16
    } else {
        1 << offset.trailing_zeros().min(4)
    };
    by_size.min(by_offset) as usize
}

/// A module from the best entry of a fat binary (or of several back to back).
/// The newest PTX text of a fat binary the device can compile (checked by
/// parsing it), for the JIT linker; `None` when it holds no PTX.
pub fn fatbin_ptx(image: &[u8]) -> CuResult<Option<Vec<u8>>> {
    let all = fatbin::parse_fatbins(image).map_err(|e| refuse(CUDA_ERROR_INVALID_IMAGE, e))?;
    let newest = all
        .iter()
        .flat_map(|f| f.entries.iter())
        .filter(|e| e.kind == EntryKind::Ptx && e.sm_arch <= DEVICE_SM)
        .max_by_key(|e| e.sm_arch);
    let Some(entry) = newest else { return Ok(None) };
    let text = entry.payload().map_err(|e| refuse(CUDA_ERROR_INVALID_IMAGE, e))?;
    let mut text = fatbin::ptx_text(&text).unwrap_or(&text).to_vec();
    ptx::parse_image(&text).map_err(ptx_error)?;
    text.push(0);
    Ok(Some(text))
}

fn from_fatbin(image: &[u8]) -> CuResult<ptx::Module> {
    let all = fatbin::parse_fatbins(image).map_err(|e| refuse(CUDA_ERROR_INVALID_IMAGE, e))?;
    let entries: Vec<_> = all.iter().flat_map(|f| f.entries.iter()).collect();
    // `GPUPOOL_SOFT_REFUSE_FATBIN_WITHOUT_SM=<arch>`: a driver that refuses
    // any fat binary holding no code for `arch` (as a driver might refuse
    // one the shim cut down), so that tests reach the shim's fallback of
    // sending the image whole.
    if let Some(arch) = std::env::var("GPUPOOL_SOFT_REFUSE_FATBIN_WITHOUT_SM")
        .ok()
        .and_then(|v| v.trim().parse::<u32>().ok())
    {
        if !entries.iter().any(|e| e.kind == EntryKind::Elf && e.sm_arch == arch) {
            return Err(refuse(
                CUDA_ERROR_INVALID_IMAGE,
                format!("GPUPOOL_SOFT_REFUSE_FATBIN_WITHOUT_SM={arch}: a fat binary without sm_{arch} code"),
            ));
        }
    }
    // The newest PTX the device can compile, then an exact-match cubin.
    let ptx_entry = entries
        .iter()
        .filter(|e| e.kind == EntryKind::Ptx && e.sm_arch <= DEVICE_SM)
        .max_by_key(|e| e.sm_arch);
    let elf_entry = entries
        .iter()
        .find(|e| e.kind == EntryKind::Elf && e.sm_arch == DEVICE_SM);
    let mut ptx_failure = None;
    if let Some(e) = ptx_entry {
        match e.payload() {
            Ok(text) => match ptx::parse_image(fatbin::ptx_text(&text).unwrap_or(&text)) {
                Ok(m) => return Ok(m),
                Err(err) => ptx_failure = Some(err),
            },
            Err(err) => return Err(refuse(CUDA_ERROR_INVALID_IMAGE, err)),
        }
    }
    if let Some(e) = elf_entry {
        if let Some(err) = &ptx_failure {
            eprintln!("gpupool soft driver: PTX entry of a fat binary not usable ({err}); using its sm_90 cubin");
        }
        let cubin = e.payload().map_err(|err| refuse(CUDA_ERROR_INVALID_IMAGE, err))?;
        return from_elf(&cubin);
    }
    if let Some(err) = ptx_failure {
        return Err(ptx_error(err));
    }
    let archs: Vec<String> = entries
        .iter()
        .map(|e| format!("{} sm_{}", e.kind.name(), e.sm_arch))
        .collect();
    Err(refuse(
        CUDA_ERROR_NO_BINARY_FOR_GPU,
        format!(
            "the fat binary has no sm_{DEVICE_SM} cubin and no PTX for compute_{DEVICE_SM} or older (it has: {})",
            if archs.is_empty() {
                "no entries".to_string()
            } else {
                archs.join(", ")
            }
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ZSTD: &[u8] = include_bytes!("../../../client-shim/fatbin/tests/fixtures/kernels_zstd.fatbin");
    const CUBIN: &[u8] = include_bytes!("../../../client-shim/fatbin/tests/fixtures/kernels_sm90.cubin");

    #[test]
    fn fat_binary_prefers_ptx() {
        let m = load(ZSTD).unwrap();
        assert_eq!(m.version, (9, 0), "read from the PTX entry");
        let e = m.entry("_Z13gp_vector_addPKfS0_Pfi").unwrap();
        let layout: Vec<_> = e.params.iter().map(|p| (p.offset, p.size)).collect();
        assert_eq!(layout, [(0, 8), (8, 8), (16, 8), (24, 4)]);
        assert_eq!(m.variable("gp_counter").unwrap().init, 7u32.to_le_bytes());
    }

    #[test]
    fn cubin_gives_kernels_and_variables() {
        let m = load(CUBIN).unwrap();
        let e = m.entry("_Z8gp_mixedc4PairsPdf").unwrap();
        let layout: Vec<_> = e.params.iter().map(|p| (p.offset, p.size, p.align)).collect();
        assert_eq!(layout, [(0, 1, 1), (8, 16, 8), (24, 2, 2), (32, 8, 8), (40, 4, 4)]);
        assert_eq!(m.variable("gp_bias").unwrap().size, 16);
    }

    #[test]
    fn unusable_images() {
        assert_eq!(load(b"\x7fELF\x02\x01\x01\0"), Err(CUDA_ERROR_INVALID_IMAGE));
        let mut w = 0x4662_43B1u32.to_le_bytes().to_vec();
        w.extend_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(load(&w), Err(CUDA_ERROR_INVALID_IMAGE));
        assert_eq!(load(&ZSTD[..100]), Err(CUDA_ERROR_INVALID_IMAGE));
        // Only sm_80 code: nothing the sm_90 device can run.
        let mut v = ZSTD.to_vec();
        let fb = fatbin::parse_fatbin(ZSTD).unwrap();
        for e in &fb.entries {
            let at = e.offset as usize + 28;
            v[at..at + 4].copy_from_slice(&if e.kind == EntryKind::Ptx { 100u32 } else { 80 }.to_le_bytes());
        }
        assert_eq!(load(&v), Err(CUDA_ERROR_NO_BINARY_FOR_GPU));
    }
}
