//! CUDA arrays, texture sampling and surface access of the simulated GPU.
//!
//! An array is packed host memory (row pitch = width × element size, one
//! slice = row pitch × rows); a texture or surface object names an array
//! or, for textures, pitched or linear device memory. Kernels reach them
//! through [`Objects`], which the driver implements over its tables for the
//! launching context, as [`Image`]s: a checked view of the texels.
//!
//! Sampling follows the CUDA programming guide's texture fetching rules for
//! two dimensions: coordinates unnormalised or normalised (× width /
//! height), address modes wrap, clamp, mirror and border (with
//! unnormalised coordinates wrap and mirror act as clamp, the only modes the
//! hardware supports there besides border), point filtering (`floor`) and
//! bilinear filtering with the −0.5 texel-centre offset and 8-bit fractional
//! weights. Only 1-channel 32-bit float texels are sampled.

use crate::result::*;

/// `CU_AD_FORMAT_FLOAT`.
pub const FORMAT_FLOAT: u32 = 0x20;
/// `CU_TR_ADDRESS_MODE_*`.
pub const ADDRESS_WRAP: u32 = 0;
pub const ADDRESS_CLAMP: u32 = 1;
pub const ADDRESS_MIRROR: u32 = 2;
pub const ADDRESS_BORDER: u32 = 3;
/// `CU_TRSF_NORMALIZED_COORDINATES`.
pub const TRSF_NORMALIZED_COORDINATES: u32 = 0x02;
/// `CU_TRSF_*` flags accepted: read as integer, normalised coordinates,
/// sRGB, no trilinear optimisation, seamless cubemap.
pub const TRSF_KNOWN: u32 = 0x01 | 0x02 | 0x10 | 0x20 | 0x40;

/// `CUDA_ARRAY3D_LAYERED`, `_SURFACE_LDST`, `_CUBEMAP`, `_TEXTURE_GATHER`.
pub const ARRAY3D_LAYERED: u32 = 0x01;
pub const ARRAY3D_SURFACE_LDST: u32 = 0x02;
pub const ARRAY3D_CUBEMAP: u32 = 0x04;
pub const ARRAY3D_TEXTURE_GATHER: u32 = 0x08;

/// Bytes of one component of `CUarray_format` `format`, for the formats
/// this double stores (8/16/32-bit integers, half, float).
pub fn component_size(format: u32) -> Option<u64> {
    Some(match format {
        0x01 | 0x08 => 1,
        0x02 | 0x09 | 0x10 => 2,
        0x03 | 0x0a | 0x20 => 4,
        _ => return None,
    })
}

/// Bytes of one element: `format`'s component size × `channels` (1, 2 or 4).
pub fn element_size(format: u32, channels: u32) -> Option<u64> {
    if !matches!(channels, 1 | 2 | 4) {
        return None;
    }
    component_size(format).map(|c| c * u64::from(channels))
}

/// The extent of an array as created: element counts (`height` and `depth`
/// 0 when the array has fewer dimensions), element format and flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayShape {
    pub width: u64,
    pub height: u64,
    pub depth: u64,
    pub format: u32,
    pub channels: u32,
    pub flags: u32,
}

/// Largest extents accepted, as an H100 reports them (1D, 2D, 3D, layered).
const MAX_1D: u64 = 131_072;
const MAX_2D: (u64, u64) = (131_072, 65_536);
const MAX_3D: u64 = 16_384;
const MAX_LAYERED: u64 = 32_768;
const MAX_LAYERS: u64 = 2_048;

impl ArrayShape {
    /// Bytes of one element.
    pub fn element(&self) -> u64 {
        element_size(self.format, self.channels).unwrap_or(0)
    }

    /// Bytes of one row (packed).
    pub fn row_bytes(&self) -> u64 {
        self.width * self.element()
    }

    /// Rows of one slice (at least 1).
    pub fn rows(&self) -> u64 {
        self.height.max(1)
    }

    /// Slices (depth or layers, at least 1).
    pub fn slices(&self) -> u64 {
        self.depth.max(1)
    }

    /// Checks a descriptor (`cuArray3DCreate`'s rules) and returns the
    /// array's size in bytes. Unsupported flags (cubemaps, sparse, …):
    /// `CUDA_ERROR_NOT_SUPPORTED`; anything malformed or too large:
    /// `CUDA_ERROR_INVALID_VALUE`.
    pub fn validate(&self) -> CuResult<u64> {
        let known = ARRAY3D_LAYERED | ARRAY3D_SURFACE_LDST | ARRAY3D_TEXTURE_GATHER;
        if self.flags & !known != 0 {
            // Cubemaps, depth textures, colour attachments, sparse and
            // deferred-mapping arrays are not simulated; unknown bits are
            // malformed.
            return Err(if self.flags & !0x1ff == 0 {
                CUDA_ERROR_NOT_SUPPORTED
            } else {
                CUDA_ERROR_INVALID_VALUE
            });
        }
        let elem = element_size(self.format, self.channels).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let (w, h, d) = (self.width, self.height, self.depth);
        if w == 0 || (d > 0 && h == 0 && self.flags & ARRAY3D_LAYERED == 0) {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        let fits = if self.flags & ARRAY3D_LAYERED != 0 {
            (1..=MAX_LAYERS).contains(&d) && w <= MAX_LAYERED && h <= MAX_LAYERED
        } else if d > 0 {
            w <= MAX_3D && h <= MAX_3D && d <= MAX_3D
        } else if h > 0 {
            w <= MAX_2D.0 && h <= MAX_2D.1
        } else {
            w <= MAX_1D
        };
        if !fits {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if self.flags & ARRAY3D_TEXTURE_GATHER != 0 && (h == 0 || d > 0) {
            // Gather is for 2D arrays only.
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        w.checked_mul(elem)
            .and_then(|r| r.checked_mul(self.rows()))
            .and_then(|s| s.checked_mul(self.slices()))
            .ok_or(CUDA_ERROR_INVALID_VALUE)
    }
}

/// How a texture is sampled (from `CUDA_TEXTURE_DESC`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampler {
    pub normalized: bool,
    /// Address modes of x and y.
    pub address: [u32; 2],
    /// Bilinear (`CU_TR_FILTER_MODE_LINEAR`) rather than point filtering.
    pub linear: bool,
    /// The border colour's first component (1-channel textures).
    pub border: f32,
}

/// A checked view of 2D texels: row `y` starts at `base + y * pitch`, and
/// `width` elements of `element_size(format, channels)` bytes follow.
#[derive(Debug)]
pub struct Image {
    base: *mut u8,
    pub width: u64,
    pub height: u64,
    pub pitch: u64,
    pub format: u32,
    pub channels: u32,
}

impl Image {
    /// A view of `height` rows of `width` elements, `pitch` bytes apart.
    /// `None` if the format is unknown, a figure is zero or the rows do not
    /// fit in their pitch.
    ///
    /// # Safety
    /// `base .. base + pitch * (height - 1) + width * element size` must
    /// be readable and writable for as long as the view is used.
    pub unsafe fn new(base: *mut u8, width: u64, height: u64, pitch: u64, format: u32, channels: u32) -> Option<Image> {
        let row = width.checked_mul(element_size(format, channels)?)?;
        if width == 0 || height == 0 || row > pitch {
            return None;
        }
        pitch.checked_mul(height - 1)?.checked_add(row)?;
        Some(Image {
            base,
            width,
            height,
            pitch,
            format,
            channels,
        })
    }

    /// Bytes of one element.
    pub fn element_size(&self) -> Option<u64> {
        element_size(self.format, self.channels)
    }

    /// The float at element `(x, y)`, which must be in range (1-channel float).
    fn texel_f32(&self, x: u64, y: u64) -> f32 {
        debug_assert!(x < self.width && y < self.height);
        let off = y * self.pitch + x * 4;
        // SAFETY: `x < width` and `y < height` (the callers' addressing
        // guarantees it), so the 4 bytes lie inside the range `new`'s
        // contract makes readable.
        f32::from_bits(unsafe { self.base.add(off as usize).cast::<u32>().read_unaligned() })
    }

    /// Byte offset of the 4 bytes at byte coordinate `xb` of row `y`, as
    /// `suld.b` / `sust.b` with `.trap` address them: out of range faults.
    fn surface_offset(&self, xb: i32, y: i32) -> CuResult<usize> {
        let (Ok(xb), Ok(y)) = (u64::try_from(xb), u64::try_from(y)) else {
            return Err(CUDA_ERROR_ILLEGAL_ADDRESS);
        };
        let row = self.width * self.element_size().unwrap_or(0);
        if xb + 4 > row || y >= self.height {
            return Err(CUDA_ERROR_ILLEGAL_ADDRESS);
        }
        Ok((y * self.pitch + xb) as usize)
    }

    /// `suld.b.2d.b32.trap` at byte coordinate `xb`, row `y`.
    pub fn surface_read_b32(&self, xb: i32, y: i32) -> CuResult<u32> {
        let off = self.surface_offset(xb, y)?;
        // SAFETY: `surface_offset` checked the 4 bytes lie in row `y` of
        // the view, readable per `new`'s contract.
        Ok(unsafe { self.base.add(off).cast::<u32>().read_unaligned() })
    }

    /// `sust.b.2d.b32.trap` at byte coordinate `xb`, row `y`.
    pub fn surface_write_b32(&self, xb: i32, y: i32, v: u32) -> CuResult<()> {
        let off = self.surface_offset(xb, y)?;
        // SAFETY: as in `surface_read_b32`; the range is writable.
        unsafe { self.base.add(off).cast::<u32>().write_unaligned(v) };
        Ok(())
    }
}

/// The texture and surface objects a kernel may name, as the launching
/// context sees them.
pub trait Objects {
    /// Texture object `tex`: its texels and sampler. An unknown handle (or
    /// one whose memory is gone) faults: `CUDA_ERROR_ILLEGAL_ADDRESS`; a
    /// resource this double cannot sample: `CUDA_ERROR_NOT_SUPPORTED`.
    fn texture(&self, tex: u64) -> CuResult<(Image, Sampler)>;
    /// Surface object `surf`'s array, as `texture`.
    fn surface(&self, surf: u64) -> CuResult<Image>;
    /// `cudaGraphSetConditional`: conditional handle `handle` takes
    /// `value`; an unknown handle faults (`CUDA_ERROR_ILLEGAL_ADDRESS`).
    fn set_conditional(&self, handle: u64, value: u32) -> CuResult<()>;
    /// Whether the launching context's device was given access to the pool
    /// whose allocation starts at `base` (`cuMemPoolSetAccess`).
    fn pool_access(&self, _base: u64) -> bool {
        false
    }
}

/// Objects of a launch that names none.
pub struct NoObjects;

impl Objects for NoObjects {
    fn texture(&self, _: u64) -> CuResult<(Image, Sampler)> {
        Err(CUDA_ERROR_ILLEGAL_ADDRESS)
    }
    fn surface(&self, _: u64) -> CuResult<Image> {
        Err(CUDA_ERROR_ILLEGAL_ADDRESS)
    }
    fn set_conditional(&self, _: u64, _: u32) -> CuResult<()> {
        Err(CUDA_ERROR_ILLEGAL_ADDRESS)
    }
}

/// The texel index `i` of a dimension of `n` texels under address `mode`;
/// `None`: outside, the border colour.
fn address(i: i64, n: i64, mode: u32, normalized: bool) -> Option<i64> {
    // With unnormalised coordinates the hardware clamps for wrap and mirror.
    let mode = if !normalized && matches!(mode, ADDRESS_WRAP | ADDRESS_MIRROR) {
        ADDRESS_CLAMP
    } else {
        mode
    };
    match mode {
        ADDRESS_WRAP => Some(i.rem_euclid(n)),
        ADDRESS_MIRROR => {
            let m = i.rem_euclid(2 * n);
            Some(if m >= n { 2 * n - 1 - m } else { m })
        }
        ADDRESS_BORDER => (0..n).contains(&i).then_some(i),
        _ => Some(i.clamp(0, n - 1)),
    }
}

/// A coordinate in texels: scaled when normalised, NaN read as 0 and kept
/// in a range whose floor fits an `i64` with room to add 1.
fn texel_coordinate(c: f32, n: u64, normalized: bool) -> f64 {
    let c = if c.is_nan() { 0.0 } else { f64::from(c) };
    let x = if normalized { c * n as f64 } else { c };
    x.clamp(-1e15, 1e15)
}

/// A bilinear weight: the fraction in 9-bit fixed point with 8 fractional
/// bits, as the texture unit holds it.
fn weight(frac: f64) -> f32 {
    ((frac * 256.0).round() / 256.0) as f32
}

/// `tex2D<float>(tex, u, v)` on a 1-channel float image.
pub fn sample_2d(image: &Image, s: &Sampler, u: f32, v: f32) -> f32 {
    let (w, h) = (image.width as i64, image.height as i64);
    let x = texel_coordinate(u, image.width, s.normalized);
    let y = texel_coordinate(v, image.height, s.normalized);
    let fetch = |i: i64, j: i64| -> f32 {
        match (
            address(i, w, s.address[0], s.normalized),
            address(j, h, s.address[1], s.normalized),
        ) {
            (Some(i), Some(j)) => image.texel_f32(i as u64, j as u64),
            _ => s.border,
        }
    };
    if !s.linear {
        return fetch(x.floor() as i64, y.floor() as i64);
    }
    let (xb, yb) = (x - 0.5, y - 0.5);
    let (i, j) = (xb.floor(), yb.floor());
    let (a, b) = (weight(xb - i), weight(yb - j));
    let (i, j) = (i as i64, j as i64);
    (1.0 - a) * (1.0 - b) * fetch(i, j)
        + a * (1.0 - b) * fetch(i + 1, j)
        + (1.0 - a) * b * fetch(i, j + 1)
        + a * b * fetch(i + 1, j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `w × h` float image whose texel (x, y) is `10 * y + x`, rows
    /// `pitch` floats apart.
    fn image(buf: &mut Vec<f32>, w: u64, h: u64, pitch: u64) -> Image {
        *buf = (0..pitch * h).map(|k| (10 * (k / pitch) + k % pitch) as f32).collect();
        // SAFETY: `buf` holds `pitch * h` floats and outlives the view in
        // each test.
        unsafe { Image::new(buf.as_mut_ptr().cast(), w, h, pitch * 4, FORMAT_FLOAT, 1) }.unwrap()
    }

    fn sampler(normalized: bool, mode: u32, linear: bool) -> Sampler {
        Sampler {
            normalized,
            address: [mode, mode],
            linear,
            border: -1.0,
        }
    }

    #[test]
    fn shapes() {
        let s = |w, h, d, format, channels, flags| ArrayShape {
            width: w,
            height: h,
            depth: d,
            format,
            channels,
            flags,
        };
        assert_eq!(s(16, 0, 0, 0x20, 1, 0).validate(), Ok(64));
        assert_eq!(s(16, 8, 0, 0x01, 4, 0).validate(), Ok(16 * 4 * 8));
        assert_eq!(s(4, 3, 2, 0x10, 2, 0).validate(), Ok(4 * 4 * 3 * 2));
        assert_eq!(s(4, 0, 5, 0x03, 1, ARRAY3D_LAYERED).validate(), Ok(4 * 4 * 5));
        assert_eq!(s(0, 1, 0, 0x20, 1, 0).validate(), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(s(4, 0, 3, 0x20, 1, 0).validate(), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            s(4, 4, 0, 0x20, 1, ARRAY3D_LAYERED).validate(),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(s(4, 4, 0, 0x20, 3, 0).validate(), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(s(4, 4, 0, 0x21, 1, 0).validate(), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(s(4, 4, 0, 0xc0, 1, 0).validate(), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(s(u64::MAX, 1, 0, 0x20, 4, 0).validate(), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(s(131_073, 0, 0, 0x20, 1, 0).validate(), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            s(16_384, 16_384, 16_385, 0x20, 1, 0).validate(),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(
            s(8, 8, 6, 0x20, 1, ARRAY3D_CUBEMAP).validate(),
            Err(CUDA_ERROR_NOT_SUPPORTED)
        );
        assert_eq!(s(8, 8, 0, 0x20, 1, 0x40).validate(), Err(CUDA_ERROR_NOT_SUPPORTED));
        assert_eq!(s(8, 8, 0, 0x20, 1, 0x1000).validate(), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            s(8, 8, 0, 0x20, 1, ARRAY3D_SURFACE_LDST | ARRAY3D_TEXTURE_GATHER).validate(),
            Ok(256)
        );
    }

    #[test]
    fn point_sampling_at_texel_centres() {
        let mut buf = Vec::new();
        let img = image(&mut buf, 4, 3, 6);
        for mode in [ADDRESS_WRAP, ADDRESS_CLAMP, ADDRESS_MIRROR, ADDRESS_BORDER] {
            let s = sampler(false, mode, false);
            for y in 0..3 {
                for x in 0..4 {
                    let v = sample_2d(&img, &s, x as f32 + 0.5, y as f32 + 0.5);
                    assert_eq!(v, (10 * y + x) as f32, "mode {mode} at ({x}, {y})");
                }
            }
            // Anywhere inside a texel is that texel.
            assert_eq!(sample_2d(&img, &s, 2.99, 1.01), 12.0);
        }
    }

    #[test]
    fn edges_clamp_border_wrap_mirror() {
        let mut buf = Vec::new();
        let img = image(&mut buf, 4, 3, 4);
        // Unnormalised: clamp (and wrap/mirror, which act as clamp).
        for mode in [ADDRESS_CLAMP, ADDRESS_WRAP, ADDRESS_MIRROR] {
            let s = sampler(false, mode, false);
            assert_eq!(sample_2d(&img, &s, 5.5, 0.5), 3.0);
            assert_eq!(sample_2d(&img, &s, -3.0, 7.0), 20.0);
        }
        let s = sampler(false, ADDRESS_BORDER, false);
        assert_eq!(sample_2d(&img, &s, 4.0, 0.5), -1.0);
        assert_eq!(sample_2d(&img, &s, 3.9, 2.9), 23.0);
        assert_eq!(sample_2d(&img, &s, -0.1, 0.5), -1.0);
        // Normalised wrap: u = 1.3 is u = 0.3, texel 1 of 4; v = -0.2 is
        // 0.8, texel 2 of 3.
        let s = sampler(true, ADDRESS_WRAP, false);
        assert_eq!(sample_2d(&img, &s, 1.3, -0.2), 21.0);
        // Normalised mirror: u = 1.3 mirrors to 0.7 (texel 2); v = -0.2 to
        // 0.2 (texel 0).
        let s = sampler(true, ADDRESS_MIRROR, false);
        assert_eq!(sample_2d(&img, &s, 1.3, -0.2), 2.0);
        let s = sampler(true, ADDRESS_CLAMP, false);
        assert_eq!(sample_2d(&img, &s, 1.3, -0.2), 3.0);
        let s = sampler(true, ADDRESS_BORDER, false);
        assert_eq!(sample_2d(&img, &s, 1.3, 0.5), -1.0);
        // Normalised centres: (x + 0.5) / w.
        assert_eq!(sample_2d(&img, &s, 2.5 / 4.0, 1.5 / 3.0), 12.0);
        // NaN reads as 0.
        assert_eq!(
            sample_2d(&img, &sampler(false, ADDRESS_CLAMP, false), f32::NAN, 0.5),
            0.0
        );
        // Infinities stay in range.
        assert!(sample_2d(
            &img,
            &sampler(true, ADDRESS_WRAP, true),
            f32::INFINITY,
            f32::NEG_INFINITY
        )
        .is_finite());
    }

    #[test]
    fn bilinear() {
        let mut buf = Vec::new();
        let img = image(&mut buf, 4, 3, 4);
        let s = sampler(false, ADDRESS_CLAMP, true);
        // At texel centres: the texel.
        assert_eq!(sample_2d(&img, &s, 1.5, 1.5), 11.0);
        // Midway between the centres of (1,1), (2,1), (1,2), (2,2).
        assert_eq!(sample_2d(&img, &s, 2.0, 2.0), (11.0 + 12.0 + 21.0 + 22.0) / 4.0);
        // A quarter of the way in x, on row 0's centre: 0.75 * 1 + 0.25 * 2.
        assert_eq!(sample_2d(&img, &s, 1.75, 0.5), 1.25);
        // Clamped at the left edge: all weight on column 0.
        assert_eq!(sample_2d(&img, &s, 0.2, 0.5), 0.0);
        // Border: half texel 3, half border (-1).
        let s = sampler(false, ADDRESS_BORDER, true);
        assert_eq!(sample_2d(&img, &s, 4.0, 0.5), (3.0 - 1.0) / 2.0);
        // Normalised wrap at u = 0: half texel 3, half texel 0.
        let s = sampler(true, ADDRESS_WRAP, true);
        assert_eq!(sample_2d(&img, &s, 0.0, 0.5), (13.0 + 10.0) / 2.0);
        // Weights are in steps of 1/256: 1/1000 of a texel is 0.
        let s = sampler(false, ADDRESS_CLAMP, true);
        assert_eq!(sample_2d(&img, &s, 1.501, 0.5), 1.0);
    }

    #[test]
    fn surfaces_trap_out_of_range() {
        let mut buf = Vec::new();
        let img = image(&mut buf, 4, 3, 5);
        assert_eq!(img.surface_read_b32(8, 1).map(f32::from_bits), Ok(12.0));
        img.surface_write_b32(12, 2, 7.5f32.to_bits()).unwrap();
        assert_eq!(img.surface_read_b32(12, 2).map(f32::from_bits), Ok(7.5));
        assert_eq!(buf[2 * 5 + 3], 7.5);
        assert_eq!(
            img.surface_read_b32(16, 0),
            Err(CUDA_ERROR_ILLEGAL_ADDRESS),
            "past the row (pitch padding)"
        );
        assert_eq!(img.surface_read_b32(13, 0), Err(CUDA_ERROR_ILLEGAL_ADDRESS));
        assert_eq!(img.surface_read_b32(0, 3), Err(CUDA_ERROR_ILLEGAL_ADDRESS));
        assert_eq!(img.surface_write_b32(-4, 0, 0), Err(CUDA_ERROR_ILLEGAL_ADDRESS));
        assert_eq!(img.surface_write_b32(0, -1, 0), Err(CUDA_ERROR_ILLEGAL_ADDRESS));
    }
}
