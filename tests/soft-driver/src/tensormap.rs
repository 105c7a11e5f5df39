//! TMA tensor maps (`cuTensorMapEncodeTiled`, `cuTensorMapEncodeIm2col`,
//! `cuTensorMapReplaceAddress`): the arguments are checked against the
//! driver's documented rules, and the map is this double's own packing of
//! them. A GPU's encoding is opaque and cannot be reproduced here; no
//! kernel of this double reads a tensor map.

use crate::result::*;

/// Bytes of a `CUtensorMap`.
pub const MAP_BYTES: usize = 128;

/// Bytes of one element of each `CUtensorMapDataType` (the packed 4- and
/// 6-bit types count as one byte per 16-element group unit here).
fn element_bytes(data_type: u32) -> Option<u64> {
    Some(match data_type {
        0 => 1,                   // UINT8
        1 | 6 | 9 => 2,           // UINT16, FLOAT16, BFLOAT16
        2 | 3 | 7 | 10..=12 => 4, // UINT32, INT32, FLOAT32, FLOAT32_FTZ, TFLOAT32, TFLOAT32_FTZ
        4 | 5 | 8 => 8,           // UINT64, INT64, FLOAT64
        13..=15 => 1,             // 16U4_ALIGN8B, 16U4_ALIGN16B, 16U6_ALIGN16B
        _ => return None,
    })
}

/// The parts every tensor map has.
pub struct Common<'a> {
    pub data_type: u32,
    pub rank: u32,
    pub address: u64,
    pub dims: &'a [u64],
    pub strides: &'a [u64],
    pub element_strides: &'a [u32],
    pub interleave: u32,
    pub swizzle: u32,
    pub l2_promotion: u32,
    pub oob_fill: u32,
}

fn check(ok: bool) -> CuResult<()> {
    if ok {
        Ok(())
    } else {
        Err(CUDA_ERROR_INVALID_VALUE)
    }
}

fn check_common(c: &Common, min_rank: u32) -> CuResult<u64> {
    let elem = element_bytes(c.data_type).ok_or(CUDA_ERROR_INVALID_VALUE)?;
    check((min_rank..=5).contains(&c.rank) && (c.interleave == 0 || c.rank >= 3))?;
    check(c.interleave <= 2 && c.swizzle <= 6 && c.l2_promotion <= 3 && c.oob_fill <= 1)?;
    let align = if c.interleave == 2 { 32 } else { 16 };
    check(c.address != 0 && c.address.is_multiple_of(align))?;
    check(c.dims.iter().all(|&d| (1..=1 << 31).contains(&d)))?;
    let stride_align = if c.interleave == 2 { 32 } else { 16 };
    check(c.strides.iter().all(|&s| s.is_multiple_of(stride_align) && s < 1 << 40))?;
    check(c.element_strides.iter().all(|&e| (1..=8).contains(&e)))?;
    // 32-byte interleave takes only 32-byte swizzling.
    check(c.interleave != 2 || c.swizzle == 1)?;
    Ok(elem)
}

/// The double's map: the address first (so that replacing it is a write
/// of eight bytes), then the arguments.
fn pack(c: &Common, kind: u8, shape: &[u32]) -> [u8; MAP_BYTES] {
    let mut m = [0u8; MAP_BYTES];
    m[..8].copy_from_slice(&c.address.to_le_bytes());
    m[8] = c.data_type as u8;
    m[9] = c.rank as u8;
    m[10] = c.interleave as u8;
    m[11] = c.swizzle as u8;
    m[12] = c.l2_promotion as u8;
    m[13] = c.oob_fill as u8;
    m[14] = kind;
    for (i, d) in c.dims.iter().enumerate() {
        m[16 + 8 * i..24 + 8 * i].copy_from_slice(&d.to_le_bytes());
    }
    for (i, s) in c.strides.iter().enumerate() {
        // Strides are multiples of 16 below 2^40: 36 bits, kept in five bytes.
        m[56 + 5 * i..61 + 5 * i].copy_from_slice(&(s >> 4).to_le_bytes()[..5]);
    }
    for (i, e) in c.element_strides.iter().enumerate() {
        m[76 + i] = *e as u8;
    }
    for (i, v) in shape.iter().enumerate().take(10) {
        m[82 + 4 * i..86 + 4 * i].copy_from_slice(&v.to_le_bytes());
    }
    m
}

fn lengths(c: &Common) -> CuResult<()> {
    let rank = c.rank as usize;
    check(c.dims.len() == rank && c.strides.len() + 1 == rank && c.element_strides.len() == rank)
}

pub fn encode_tiled(c: &Common, box_dims: &[u32]) -> CuResult<[u8; MAP_BYTES]> {
    let elem = check_common(c, 1)?;
    lengths(c)?;
    check(box_dims.len() == c.rank as usize && box_dims.iter().all(|&b| (1..=256).contains(&b)))?;
    let inner = box_dims[0] as u64 * elem;
    if c.interleave == 0 {
        check(inner.is_multiple_of(16))?;
        let limit = match c.swizzle {
            0 => u64::MAX,
            1 => 32,
            2 => 64,
            _ => 128,
        };
        check(inner <= limit)?;
    }
    Ok(pack(c, 1, box_dims))
}

pub fn encode_im2col(
    c: &Common,
    lower: &[i32],
    upper: &[i32],
    channels: u32,
    pixels: u32,
) -> CuResult<[u8; MAP_BYTES]> {
    check_common(c, 3)?;
    lengths(c)?;
    let corners = c.rank as usize - 2;
    check(lower.len() == corners && upper.len() == corners)?;
    check((1..=256).contains(&channels) && (1..=1024).contains(&pixels))?;
    let mut shape = vec![channels, pixels];
    shape.extend(lower.iter().chain(upper).map(|&v| v as u32));
    Ok(pack(c, 2, &shape))
}

pub fn replace_address(map: &mut [u8; MAP_BYTES], address: u64) -> CuResult<()> {
    let align = if map[10] == 2 { 32 } else { 16 };
    check(map[14] != 0 && address != 0 && address.is_multiple_of(align))?;
    map[..8].copy_from_slice(&address.to_le_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn common<'a>(address: u64, dims: &'a [u64], strides: &'a [u64], es: &'a [u32]) -> Common<'a> {
        Common {
            data_type: 7,
            rank: dims.len() as u32,
            address,
            dims,
            strides,
            element_strides: es,
            interleave: 0,
            swizzle: 0,
            l2_promotion: 0,
            oob_fill: 0,
        }
    }

    #[test]
    fn tiled_maps_follow_the_documented_rules() {
        let c = common(0x1000, &[256, 64], &[1024], &[1, 1]);
        let m = encode_tiled(&c, &[32, 8]).unwrap();
        assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), 0x1000);
        assert_eq!(
            encode_tiled(&c, &[32, 8]).unwrap(),
            m,
            "encoding is a function of the arguments"
        );
        assert_eq!(
            encode_tiled(&c, &[3, 8]),
            Err(CUDA_ERROR_INVALID_VALUE),
            "12-byte inner box"
        );
        assert_eq!(encode_tiled(&c, &[32, 300]), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            encode_tiled(&common(0x1004, &[256, 64], &[1024], &[1, 1]), &[32, 8]),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(
            encode_tiled(&common(0x1000, &[256, 64], &[1000], &[1, 1]), &[32, 8]),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        assert_eq!(
            encode_tiled(&common(0x1000, &[256, 64], &[1024], &[1, 9]), &[32, 8]),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        let swizzled = Common {
            swizzle: 1,
            ..common(0x1000, &[256, 64], &[1024], &[1, 1])
        };
        assert_eq!(
            encode_tiled(&swizzled, &[16, 8]),
            Err(CUDA_ERROR_INVALID_VALUE),
            "64 bytes over a 32-byte swizzle"
        );
        assert!(encode_tiled(&swizzled, &[8, 8]).is_ok());
    }

    #[test]
    fn im2col_and_replaced_addresses() {
        let c = common(0x2000, &[64, 16, 16, 4], &[256, 4096, 65536], &[1, 1, 1, 1]);
        let mut m = encode_im2col(&c, &[-1, -1], &[1, 1], 64, 32).unwrap();
        assert_eq!(encode_im2col(&c, &[-1], &[1, 1], 64, 32), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            encode_im2col(&common(0x2000, &[64, 16], &[256], &[1, 1]), &[], &[], 64, 32),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
        replace_address(&mut m, 0x8000).unwrap();
        assert_eq!(u64::from_le_bytes(m[..8].try_into().unwrap()), 0x8000);
        assert_eq!(replace_address(&mut m, 0x8008), Err(CUDA_ERROR_INVALID_VALUE));
        assert_eq!(
            replace_address(&mut [0; MAP_BYTES], 0x8000),
            Err(CUDA_ERROR_INVALID_VALUE)
        );
    }
}
