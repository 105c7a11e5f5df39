//! Host implementations of the kernels the simulated GPU knows how to run.
//!
//! A kernel is recognised by its `.entry` name *and* its parameter sizes;
//! anything else loads fine but cannot be launched. Each kernel runs one
//! logical thread per element for `gridDim.x * blockDim.x` threads, and
//! every memory access goes through [`DeviceAccess`], so a bad pointer puts
//! the context into a sticky error exactly as a faulting GPU kernel would.

use crate::memory::AllocationMap;
use crate::ptx::Entry;
use crate::result::*;

/// The kernels this double can execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Known {
    /// `gp_null()`
    Null,
    /// `gp_vector_add(const float* a, const float* b, float* c, int n)`
    VectorAdd,
    /// `gp_scale(float* x, float s, int n)`
    Scale,
    /// `gp_fill_u32(unsigned* p, unsigned v, int n)`
    FillU32,
    /// `gp_saxpy(int n, float a, const float* x, float* y)`
    Saxpy,
    /// `gp_fault(unsigned* p)`: always performs an illegal access.
    Fault,
}

/// `(name, kernel, parameter sizes)` of every known kernel.
pub const KNOWN_KERNELS: &[(&str, Known, &[usize])] = &[
    ("gp_null", Known::Null, &[]),
    ("gp_vector_add", Known::VectorAdd, &[8, 8, 8, 4]),
    ("gp_scale", Known::Scale, &[8, 4, 4]),
    ("gp_fill_u32", Known::FillU32, &[8, 4, 4]),
    ("gp_saxpy", Known::Saxpy, &[4, 4, 8, 8]),
    ("gp_fault", Known::Fault, &[8]),
];

/// How a kernel entry relates to the known kernels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Recognised {
    /// A known kernel with the parameter layout it needs.
    Known(Known),
    /// Named like a known kernel, but its parameters are not the ones that
    /// kernel takes (the message says how): launches are refused with
    /// `CUDA_ERROR_INVALID_VALUE`.
    WrongLayout(String),
    /// Not a kernel this double can run.
    Unknown,
}

/// The source-level name of a kernel symbol: the symbol itself for an
/// `extern "C"` kernel, the identifier of a C++-mangled one
/// (`_Z13gp_vector_addPKfS0_Pfi` → `gp_vector_add`).
pub fn base_name(symbol: &str) -> &str {
    let Some(rest) = symbol.strip_prefix("_Z") else {
        return symbol;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    let Ok(len) = rest[..digits].parse::<usize>() else {
        return symbol;
    };
    rest.get(digits..digits.saturating_add(len)).unwrap_or(symbol)
}

/// Which known kernel an entry is, checking its parameter sizes.
pub fn recognise(entry: &Entry) -> Recognised {
    let name = base_name(&entry.name);
    let Some((known_name, kernel, sizes)) = KNOWN_KERNELS.iter().find(|(n, _, _)| *n == name) else {
        return Recognised::Unknown;
    };
    let actual: Vec<usize> = entry.params.iter().map(|p| p.size).collect();
    if actual.as_slice() == *sizes {
        Recognised::Known(*kernel)
    } else {
        Recognised::WrongLayout(format!(
            "`{}` is {known_name}, which takes parameters of {sizes:?} bytes, but the module declares {actual:?}",
            entry.name
        ))
    }
}

/// The known kernel an entry implements, if any (by name, plain or
/// mangled, and parameter sizes).
pub fn lookup(entry: &Entry) -> Option<Known> {
    match recognise(entry) {
        Recognised::Known(k) => Some(k),
        _ => None,
    }
}

/// Bounds- and alignment-checked access to simulated device memory.
pub(crate) struct DeviceAccess<'a> {
    mem: &'a AllocationMap,
    /// Last allocation range found (`lo .. hi`), to keep loops cheap.
    cached: (u64, u64),
}

impl<'a> DeviceAccess<'a> {
    pub(crate) fn new(mem: &'a AllocationMap) -> Self {
        DeviceAccess { mem, cached: (0, 0) }
    }

    /// Host pointer for a naturally aligned `size`-byte access at `addr`.
    fn ptr(&mut self, addr: u64, size: u64) -> Result<*mut u8, CUresult> {
        // `size` is 4 here; natural alignment is required as on a GPU.
        if addr & (size - 1) != 0 {
            return Err(CUDA_ERROR_MISALIGNED_ADDRESS);
        }
        let end = addr.checked_add(size).ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
        if !(addr >= self.cached.0 && end <= self.cached.1) {
            let (base, alloc) = self.mem.containing(addr, size).ok_or(CUDA_ERROR_ILLEGAL_ADDRESS)?;
            self.cached = (base, base + alloc.size);
        }
        Ok(addr as *mut u8)
    }

    pub fn read_u32(&mut self, addr: u64) -> Result<u32, CUresult> {
        let p = self.ptr(addr, 4)?;
        // SAFETY: `ptr` checked that `addr .. addr + 4` lies in a live
        // allocation (a mapping the driver owns) and is 4-byte aligned.
        Ok(unsafe { p.cast::<u32>().read() })
    }

    pub fn write_u32(&mut self, addr: u64, v: u32) -> Result<(), CUresult> {
        let p = self.ptr(addr, 4)?;
        // SAFETY: as in `read_u32`; the mapping is writable.
        unsafe { p.cast::<u32>().write(v) };
        Ok(())
    }

    pub fn read_f32(&mut self, addr: u64) -> Result<f32, CUresult> {
        self.read_u32(addr).map(f32::from_bits)
    }

    pub fn write_f32(&mut self, addr: u64, v: f32) -> Result<(), CUresult> {
        self.write_u32(addr, v.to_bits())
    }
}

/// Arguments of one launch, read from the packed parameter buffer.
struct Args<'a> {
    buf: &'a [u8],
    entry: &'a Entry,
}

impl Args<'_> {
    fn bytes<const N: usize>(&self, i: usize) -> [u8; N] {
        let p = &self.entry.params[i];
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[p.offset..p.offset + N]);
        out
    }
    fn u64(&self, i: usize) -> u64 {
        u64::from_le_bytes(self.bytes(i))
    }
    fn u32(&self, i: usize) -> u32 {
        u32::from_le_bytes(self.bytes(i))
    }
    fn i32(&self, i: usize) -> i32 {
        i32::from_le_bytes(self.bytes(i))
    }
    fn f32(&self, i: usize) -> f32 {
        f32::from_le_bytes(self.bytes(i))
    }
}

/// Runs a known kernel. `params` is the packed parameter buffer laid out as
/// `entry.params` says (the caller has checked its length and that `entry`
/// matches `kernel`); `threads` is `gridDim.x * blockDim.x`.
///
/// `Err` is the fault the kernel hit (700 or 716): the caller makes it the
/// context's sticky error.
pub(crate) fn run(
    kernel: Known,
    entry: &Entry,
    params: &[u8],
    threads: u64,
    mem: &AllocationMap,
) -> Result<(), CUresult> {
    let args = Args { buf: params, entry };
    let mut dev = DeviceAccess::new(mem);
    let count = |n: i32| u64::try_from(n).unwrap_or(0).min(threads);
    match kernel {
        Known::Null => Ok(()),
        Known::VectorAdd => {
            let (a, b, c) = (args.u64(0), args.u64(1), args.u64(2));
            for i in 0..count(args.i32(3)) {
                let off = i * 4;
                let v = dev.read_f32(a.wrapping_add(off))? + dev.read_f32(b.wrapping_add(off))?;
                dev.write_f32(c.wrapping_add(off), v)?;
            }
            Ok(())
        }
        Known::Scale => {
            let (x, s) = (args.u64(0), args.f32(1));
            for i in 0..count(args.i32(2)) {
                let p = x.wrapping_add(i * 4);
                let v = dev.read_f32(p)? * s;
                dev.write_f32(p, v)?;
            }
            Ok(())
        }
        Known::FillU32 => {
            let (p, v) = (args.u64(0), args.u32(1));
            for i in 0..count(args.i32(2)) {
                dev.write_u32(p.wrapping_add(i * 4), v)?;
            }
            Ok(())
        }
        Known::Saxpy => {
            let (a, x, y) = (args.f32(1), args.u64(2), args.u64(3));
            for i in 0..count(args.i32(0)) {
                let off = i * 4;
                // nvcc contracts `a * x + y` into one fused multiply-add.
                let v = a.mul_add(dev.read_f32(x.wrapping_add(off))?, dev.read_f32(y.wrapping_add(off))?);
                dev.write_f32(y.wrapping_add(off), v)?;
            }
            Ok(())
        }
        Known::Fault => Err(CUDA_ERROR_ILLEGAL_ADDRESS),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx::Param;

    fn entry(name: &str, sizes: &[usize]) -> Entry {
        let mut offset = 0usize;
        let params = sizes
            .iter()
            .enumerate()
            .map(|(i, &size)| {
                offset = offset.div_ceil(size) * size;
                let p = Param {
                    name: format!("p{i}"),
                    offset,
                    size,
                    align: size,
                };
                offset += size;
                p
            })
            .collect();
        Entry {
            name: name.into(),
            params,
            maxntid: None,
            reqntid: None,
        }
    }

    #[test]
    fn base_names() {
        assert_eq!(base_name("_Z13gp_vector_addPKfS0_Pfi"), "gp_vector_add");
        assert_eq!(base_name("gp_scale"), "gp_scale");
        assert_eq!(base_name("_Z8gp_nul"), "_Z8gp_nul", "length past the end");
        assert_eq!(base_name("_Z"), "_Z");
        assert_eq!(base_name("_Zx"), "_Zx");
        assert_eq!(base_name("_Z99999999999999999999999a"), "_Z99999999999999999999999a");
    }

    #[test]
    fn recognition_checks_the_layout() {
        let add = entry("_Z13gp_vector_addPKfS0_Pfi", &[8, 8, 8, 4]);
        assert_eq!(recognise(&add), Recognised::Known(Known::VectorAdd));
        assert_eq!(lookup(&entry("gp_saxpy", &[4, 4, 8, 8])), Some(Known::Saxpy));
        assert!(matches!(
            recognise(&entry("_Z8gp_scalePfi", &[8, 4])),
            Recognised::WrongLayout(_)
        ));
        assert_eq!(recognise(&entry("_Z9gp_scalerPfi", &[8, 4, 4])), Recognised::Unknown);
        assert_eq!(recognise(&entry("mystery", &[])), Recognised::Unknown);
    }
}
