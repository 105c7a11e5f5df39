//! Host implementations of the kernels the simulated GPU knows how to run.
//!
//! A kernel is recognised by its `.entry` name *and* its parameter sizes;
//! anything else loads fine but cannot be launched. Each kernel runs one
//! logical thread per element for `gridDim.x * blockDim.x` threads, and
//! every memory access goes through [`DeviceAccess`], so a bad pointer puts
//! the context into a sticky error exactly as a faulting GPU kernel would.

use crate::memory::{AllocKind, AllocationMap};
use crate::ptx::Entry;
use crate::result::*;
pub(crate) use crate::texture::Objects;

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
    /// `gp_tex_read(float* out, CUtexObject tex, int w, int h)`:
    /// `out[i] = tex2D<float>(tex, i % w + 0.5f, i / w + 0.5f)`.
    TexRead,
    /// `gp_surf_scale(CUsurfObject surf, float s, int w, int h)`: element
    /// `(i % w, i / w)` of the surface is multiplied by `s` in place.
    SurfScale,
    /// `gp_set_condition(cudaGraphConditionalHandle h, const unsigned* v)`:
    /// thread 0 calls `cudaGraphSetConditional(h, *v)`.
    SetCondition,
    /// `gp_countdown(cudaGraphConditionalHandle h, int* counter)`: thread 0
    /// decrements `*counter` and sets `h` to whether it is still positive
    /// (the body of a while node that runs `*counter` times).
    Countdown,
    /// `gp_hello(int n)`: each thread `i` (of the whole grid) calls
    /// `printf("hello %d from thread %d\n", n, i)`; the lines come out, in
    /// thread order, when the host next synchronises.
    Hello,
    /// `gp_assert(const int* v, int n)`: each thread `i < n` asserts
    /// `v[i] != 0`. A failed assertion's message comes out on standard
    /// error when the host next synchronises, and the context is left in
    /// `CUDA_ERROR_ASSERT` (710), as on a GPU. The message is this double's
    /// own: `gp_assert: thread: [i,0,0] Assertion `v[i] != 0` failed.`
    Assert,
}

/// Output of `printf` in kernels, until the host synchronises.
static PRINTF: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Messages of failed device-side assertions, until the host synchronises.
static ASSERTS: std::sync::Mutex<Vec<u8>> = std::sync::Mutex::new(Vec::new());

/// Write what kernels printed to standard output, and the messages of
/// their failed assertions to standard error, as the driver does when the
/// host synchronises.
pub(crate) fn flush_device_output() {
    use std::io::Write;
    let take = |buf: &std::sync::Mutex<Vec<u8>>| std::mem::take(&mut *buf.lock().unwrap_or_else(|p| p.into_inner()));
    let text = take(&PRINTF);
    if !text.is_empty() {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(&text);
        let _ = out.flush();
    }
    let text = take(&ASSERTS);
    if !text.is_empty() {
        let _ = std::io::stderr().lock().write_all(&text);
    }
}

/// `(name, kernel, parameter sizes)` of every known kernel.
pub const KNOWN_KERNELS: &[(&str, Known, &[usize])] = &[
    ("gp_null", Known::Null, &[]),
    ("gp_vector_add", Known::VectorAdd, &[8, 8, 8, 4]),
    ("gp_scale", Known::Scale, &[8, 4, 4]),
    ("gp_fill_u32", Known::FillU32, &[8, 4, 4]),
    ("gp_saxpy", Known::Saxpy, &[4, 4, 8, 8]),
    ("gp_fault", Known::Fault, &[8]),
    ("gp_tex_read", Known::TexRead, &[8, 8, 4, 4]),
    ("gp_surf_scale", Known::SurfScale, &[8, 4, 4, 4]),
    ("gp_set_condition", Known::SetCondition, &[8, 8]),
    ("gp_countdown", Known::Countdown, &[8, 8]),
    ("gp_hello", Known::Hello, &[4]),
    ("gp_assert", Known::Assert, &[8, 4]),
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
    /// Tells which pools' memory the kernel's device was given.
    objects: &'a dyn Objects,
    /// The devices whose own memory (allocations and module variables) the
    /// kernel may address, one bit each: its context's, and its peers'.
    reach: u64,
    /// Last allocation range found (`lo .. hi`), to keep loops cheap.
    cached: (u64, u64),
}

impl<'a> DeviceAccess<'a> {
    pub(crate) fn new(mem: &'a AllocationMap, reach: u64, objects: &'a dyn Objects) -> Self {
        DeviceAccess {
            mem,
            objects,
            reach,
            cached: (0, 0),
        }
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
            let own = matches!(alloc.kind, AllocKind::Device | AllocKind::ModuleVariable { .. });
            if own && self.reach & (1 << alloc.device) == 0 && !self.objects.pool_access(base) {
                // Another device's memory, whose access was not given.
                return Err(CUDA_ERROR_ILLEGAL_ADDRESS);
            }
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
/// `Err` is the fault the kernel hit (700, 716, or 710 for a failed assertion): the caller makes it the
/// context's sticky error.
pub(crate) fn run(
    kernel: Known,
    entry: &Entry,
    params: &[u8],
    threads: u64,
    mem: &AllocationMap,
    reach: u64,
    objects: &dyn Objects,
) -> Result<(), CUresult> {
    let args = Args { buf: params, entry };
    let mut dev = DeviceAccess::new(mem, reach, objects);
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
        Known::SetCondition if threads > 0 => {
            let v = dev.read_u32(args.u64(1))?;
            objects.set_conditional(args.u64(0), v)
        }
        Known::Countdown if threads > 0 => {
            let counter = args.u64(1);
            let left = (dev.read_u32(counter)? as i32).wrapping_sub(1);
            dev.write_u32(counter, left as u32)?;
            objects.set_conditional(args.u64(0), (left > 0) as u32)
        }
        Known::SetCondition | Known::Countdown => Ok(()),
        Known::Hello => {
            let n = args.i32(0);
            let mut out = PRINTF.lock().unwrap_or_else(|p| p.into_inner());
            // The device's printf buffer holds 1 MiB by default.
            for i in 0..threads.min(1 << 14) {
                out.extend_from_slice(format!("hello {n} from thread {i}\n").as_bytes());
            }
            Ok(())
        }
        Known::Assert => {
            let v = args.u64(0);
            let mut failed = false;
            for i in 0..count(args.i32(1)) {
                if dev.read_u32(v.wrapping_add(i * 4))? == 0 {
                    let mut out = ASSERTS.lock().unwrap_or_else(|p| p.into_inner());
                    out.extend_from_slice(
                        format!("gp_assert: thread: [{i},0,0] Assertion `v[i] != 0` failed.\n").as_bytes(),
                    );
                    failed = true;
                }
            }
            if failed {
                Err(CUDA_ERROR_ASSERT)
            } else {
                Ok(())
            }
        }
        Known::TexRead => {
            let (out, tex, w, h) = (args.u64(0), args.u64(1), args.i32(2), args.i32(3));
            let n = grid_elements(w, h, threads);
            if n == 0 {
                return Ok(());
            }
            let (image, sampler) = objects.texture(tex)?;
            if image.format != crate::texture::FORMAT_FLOAT || image.channels != 1 {
                // A documented limit of this double: only 1-channel float
                // textures are sampled.
                return Err(CUDA_ERROR_NOT_SUPPORTED);
            }
            for i in 0..n {
                // `i < n <= i32::MAX`, and `w != 0` since `w * h > 0`; the
                // PTX's `rem.s32` / `div.s32` truncate as Rust's do.
                let i = i as i32;
                let (x, y) = (i % w, i / w);
                let v = crate::texture::sample_2d(&image, &sampler, x as f32 + 0.5, y as f32 + 0.5);
                dev.write_f32(out.wrapping_add(i as u64 * 4), v)?;
            }
            Ok(())
        }
        Known::SurfScale => {
            let (surf, s, w, h) = (args.u64(0), args.f32(1), args.i32(2), args.i32(3));
            let n = grid_elements(w, h, threads);
            if n == 0 {
                return Ok(());
            }
            let image = objects.surface(surf)?;
            if image.element_size() != Some(4) {
                // `suld.b.2d.b32` reads 4-byte elements; other element
                // sizes are a documented limit of this double.
                return Err(CUDA_ERROR_NOT_SUPPORTED);
            }
            for i in 0..n {
                let i = i as i32;
                let (x, y) = (i % w, i / w);
                // `shl.b32` of the element index: the byte coordinate.
                let xb = x.wrapping_mul(4);
                let v = f32::from_bits(image.surface_read_b32(xb, y)?);
                image.surface_write_b32(xb, y, (v * s).to_bits())?;
            }
            Ok(())
        }
    }
}

/// How many threads of a `w * h` kernel do work: `min(w * h, threads)`,
/// with `w * h` wrapping in 32 bits as the PTX's `mul.lo.s32` does.
fn grid_elements(w: i32, h: i32, threads: u64) -> u64 {
    u64::try_from(w.wrapping_mul(h)).unwrap_or(0).min(threads)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ptx::Param;
    use crate::texture::Image;

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

    /// Objects over host buffers: texture 1 and surface 2 name `image`
    /// (a 1-channel float `w × h` image), texture 3 is an int texture.
    struct TestObjects {
        texels: std::cell::RefCell<Vec<f32>>,
        /// Conditional values set: (handle, value); handle 5 is known.
        conditions: std::cell::RefCell<Vec<(u64, u32)>>,
        w: u64,
        h: u64,
        sampler: crate::texture::Sampler,
    }

    impl Objects for TestObjects {
        fn texture(&self, tex: u64) -> Result<(Image, crate::texture::Sampler), CUresult> {
            let format = match tex {
                1 => crate::texture::FORMAT_FLOAT,
                3 => 0x03,
                _ => return Err(CUDA_ERROR_ILLEGAL_ADDRESS),
            };
            let base = self.texels.borrow_mut().as_mut_ptr().cast();
            // SAFETY: the buffer holds `w * h` floats and outlives the launch.
            let img = unsafe { Image::new(base, self.w, self.h, self.w * 4, format, 1) }.unwrap();
            Ok((img, self.sampler))
        }
        fn surface(&self, surf: u64) -> Result<Image, CUresult> {
            if surf != 2 {
                return Err(CUDA_ERROR_ILLEGAL_ADDRESS);
            }
            let base = self.texels.borrow_mut().as_mut_ptr().cast();
            // SAFETY: as in `texture`.
            Ok(unsafe { Image::new(base, self.w, self.h, self.w * 4, crate::texture::FORMAT_FLOAT, 1) }.unwrap())
        }
        fn set_conditional(&self, handle: u64, value: u32) -> Result<(), CUresult> {
            if handle != 5 {
                return Err(CUDA_ERROR_ILLEGAL_ADDRESS);
            }
            self.conditions.borrow_mut().push((handle, value));
            Ok(())
        }
    }

    fn objects(w: u64, h: u64, normalized: bool, mode: u32, linear: bool) -> TestObjects {
        TestObjects {
            texels: std::cell::RefCell::new((0..w * h).map(|k| (100 * (k / w) + k % w) as f32).collect()),
            conditions: std::cell::RefCell::new(Vec::new()),
            w,
            h,
            sampler: crate::texture::Sampler {
                normalized,
                address: [mode, mode],
                linear,
                border: -7.0,
            },
        }
    }

    /// Runs `gp_tex_read` over a `w × h` grid into a fresh allocation.
    fn tex_read(objects: &TestObjects, tex: u64, w: i32, h: i32, threads: u64) -> (Result<(), CUresult>, Vec<f32>) {
        use crate::memory::{AllocKind, Allocation, Mapping};
        let n = (w.max(1) * h.max(1)) as usize;
        let mut mem = AllocationMap::default();
        let out = mem.insert(Allocation {
            size: n as u64 * 4,
            charged: 0,
            ctx: 1,
            device: 0,
            kind: AllocKind::Device,
            mapping: Mapping::new(n * 4).unwrap(),
        });
        let e = entry("gp_tex_read", &[8, 8, 4, 4]);
        let mut params = Vec::new();
        params.extend_from_slice(&out.to_le_bytes());
        params.extend_from_slice(&tex.to_le_bytes());
        params.extend_from_slice(&w.to_le_bytes());
        params.extend_from_slice(&h.to_le_bytes());
        let r = run(Known::TexRead, &e, &params, threads, &mem, 1, objects);
        // SAFETY: `out` is the live `n * 4`-byte mapping made above.
        let v = unsafe { std::slice::from_raw_parts(out as *const f32, n) }.to_vec();
        (r, v)
    }

    /// A kernel reaches the memory of its own device and of the devices in
    /// its reach (peer access given), and faults at any other's.
    #[test]
    fn other_devices_memory_is_reached_only_with_peer_access() {
        use crate::memory::{AllocKind, Allocation, Mapping};
        let mut mem = AllocationMap::default();
        let far = mem.insert(Allocation {
            size: 64,
            charged: 0,
            ctx: 2,
            device: 1,
            kind: AllocKind::Device,
            mapping: Mapping::new(64).unwrap(),
        });
        let o = objects(1, 1, false, 0, false);
        let fill = entry("gp_fill_u32", &[8, 4, 4]);
        let params = [&far.to_le_bytes()[..], &7u32.to_le_bytes(), &16i32.to_le_bytes()].concat();
        assert_eq!(
            run(Known::FillU32, &fill, &params, 16, &mem, 0b01, &o),
            Err(CUDA_ERROR_ILLEGAL_ADDRESS)
        );
        assert_eq!(run(Known::FillU32, &fill, &params, 16, &mem, 0b11, &o), Ok(()));
        // SAFETY: `far` is the live 64-byte mapping made above.
        let v = unsafe { std::slice::from_raw_parts(far as *const u32, 16) };
        assert!(v.iter().all(|&x| x == 7), "{v:?}");
    }

    /// `gp_set_condition` sets the handle to the word it reads;
    /// `gp_countdown` decrements its counter and sets whether it is still
    /// positive; an unknown handle faults; no thread, nothing happens.
    #[test]
    fn conditional_kernels() {
        use crate::memory::{AllocKind, Allocation, Mapping};
        let mut mem = AllocationMap::default();
        let word = mem.insert(Allocation {
            size: 4,
            charged: 0,
            ctx: 1,
            device: 0,
            kind: AllocKind::Device,
            mapping: Mapping::new(4).unwrap(),
        });
        let o = objects(1, 1, false, 0, false);
        let params = |h: u64| [h.to_le_bytes(), word.to_le_bytes()].concat();
        let set = entry("gp_set_condition", &[8, 8]);
        let down = entry("gp_countdown", &[8, 8]);
        // SAFETY: `word` is the live 4-byte mapping made above.
        let store = |v: u32| unsafe { (word as *mut u32).write(v) };
        // SAFETY: as above.
        let load = || unsafe { (word as *const u32).read() };
        store(7);
        assert_eq!(run(Known::SetCondition, &set, &params(5), 32, &mem, 1, &o), Ok(()));
        store(2);
        assert_eq!(run(Known::Countdown, &down, &params(5), 32, &mem, 1, &o), Ok(()));
        assert_eq!(load(), 1);
        assert_eq!(run(Known::Countdown, &down, &params(5), 1, &mem, 1, &o), Ok(()));
        assert_eq!(load(), 0);
        assert_eq!(run(Known::Countdown, &down, &params(5), 0, &mem, 1, &o), Ok(()));
        assert_eq!(load(), 0, "no thread ran");
        assert_eq!(*o.conditions.borrow(), [(5, 7), (5, 1), (5, 0)]);
        assert_eq!(
            run(Known::SetCondition, &set, &params(6), 1, &mem, 1, &o),
            Err(CUDA_ERROR_ILLEGAL_ADDRESS)
        );
    }

    #[test]
    fn tex_read_kernel() {
        use crate::texture::{ADDRESS_BORDER, ADDRESS_CLAMP, ADDRESS_WRAP};
        // Point, unnormalised: every texel, row by row.
        let o = objects(3, 2, false, ADDRESS_CLAMP, false);
        let (r, v) = tex_read(&o, 1, 3, 2, 64);
        assert_eq!(r, Ok(()));
        assert_eq!(v, [0.0, 1.0, 2.0, 100.0, 101.0, 102.0]);
        // Fewer threads than elements: the rest untouched.
        let (_, v) = tex_read(&o, 1, 3, 2, 4);
        assert_eq!(v, [0.0, 1.0, 2.0, 100.0, 0.0, 0.0]);
        // A grid wider than the texture: clamped, or the border colour.
        let (_, v) = tex_read(&o, 1, 5, 1, 64);
        assert_eq!(v, [0.0, 1.0, 2.0, 2.0, 2.0]);
        let o = objects(3, 2, false, ADDRESS_BORDER, false);
        let (_, v) = tex_read(&o, 1, 5, 3, 64);
        assert_eq!(v[3..5], [-7.0, -7.0]);
        assert_eq!(v[10..15], [-7.0; 5]);
        // Normalised wrap: u = x + 0.5 wraps to 0.5, the middle texel of
        // each dimension (4 × 2: texel (2, 1)).
        let o = objects(4, 2, true, ADDRESS_WRAP, false);
        let (_, v) = tex_read(&o, 1, 3, 2, 64);
        assert_eq!(v, [102.0; 6]);
        // Normalised, bilinear, wrap: u = 0.5 is midway between the centres
        // of texels 1 and 2, v = 0.5 between rows 0 and 1.
        let o = objects(4, 2, true, ADDRESS_WRAP, true);
        let (_, v) = tex_read(&o, 1, 2, 1, 64);
        let mid = (1.0 + 2.0 + 101.0 + 102.0) / 4.0;
        assert_eq!(v, [mid, mid]);
        // Normalised clamp: x >= 1 is past the edge.
        let o = objects(4, 2, true, ADDRESS_CLAMP, false);
        let (_, v) = tex_read(&o, 1, 3, 1, 64);
        assert_eq!(v, [102.0, 103.0, 103.0]);
        // Unknown handle: a fault; an int texture: not supported.
        assert_eq!(tex_read(&o, 9, 2, 1, 64).0, Err(CUDA_ERROR_ILLEGAL_ADDRESS));
        assert_eq!(tex_read(&o, 3, 2, 1, 64).0, Err(CUDA_ERROR_NOT_SUPPORTED));
        // Nothing to do: the handle is never looked at.
        assert_eq!(tex_read(&o, 9, 0, 5, 64).0, Ok(()));
        assert_eq!(tex_read(&o, 9, -2, 3, 64).0, Ok(()));
    }

    #[test]
    fn surf_scale_kernel() {
        use crate::texture::ADDRESS_CLAMP;
        let run_scale = |o: &TestObjects, surf: u64, s: f32, w: i32, h: i32| {
            let e = entry("gp_surf_scale", &[8, 4, 4, 4]);
            let mut params = Vec::new();
            params.extend_from_slice(&surf.to_le_bytes());
            params.extend_from_slice(&s.to_le_bytes());
            params.extend_from_slice(&w.to_le_bytes());
            params.extend_from_slice(&h.to_le_bytes());
            run(Known::SurfScale, &e, &params, 1024, &AllocationMap::default(), 1, o)
        };
        let o = objects(3, 2, false, ADDRESS_CLAMP, false);
        assert_eq!(run_scale(&o, 2, 2.0, 3, 2), Ok(()));
        assert_eq!(*o.texels.borrow(), [0.0, 2.0, 4.0, 200.0, 202.0, 204.0]);
        // A 2 × 2 grid on the 3 × 2 surface touches its left two columns.
        assert_eq!(run_scale(&o, 2, 0.5, 2, 2), Ok(()));
        assert_eq!(*o.texels.borrow(), [0.0, 1.0, 4.0, 100.0, 101.0, 204.0]);
        // Past the right edge: a fault (after the elements before it).
        assert_eq!(run_scale(&o, 2, 10.0, 4, 1), Err(CUDA_ERROR_ILLEGAL_ADDRESS));
        assert_eq!(o.texels.borrow()[..3], [0.0, 10.0, 40.0]);
        assert_eq!(run_scale(&o, 2, 1.0, 3, 3), Err(CUDA_ERROR_ILLEGAL_ADDRESS));
        assert_eq!(run_scale(&o, 7, 1.0, 3, 2), Err(CUDA_ERROR_ILLEGAL_ADDRESS));
    }

    #[test]
    fn the_c_test_module_declares_the_known_kernels() {
        let header = include_str!("../../c/kernels.ptx.h");
        let mut text = String::new();
        for line in header.lines().filter(|l| l.starts_with('"')) {
            let body = line.trim_end_matches(';').trim().trim_matches('"');
            text.push_str(&body.replace("\\n", "\n"));
        }
        let module = crate::ptx::parse(&text).expect("kernels.ptx.h parses");
        for (name, kernel) in [
            ("gp_null", Known::Null),
            ("gp_vector_add", Known::VectorAdd),
            ("gp_scale", Known::Scale),
            ("gp_fault", Known::Fault),
            ("gp_tex_read", Known::TexRead),
            ("gp_surf_scale", Known::SurfScale),
        ] {
            let e = module.entry(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(lookup(e), Some(kernel), "{name}");
        }
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
