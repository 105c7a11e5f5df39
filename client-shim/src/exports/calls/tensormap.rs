//! TMA tensor maps (`cuTensorMapEncodeTiled`, `cuTensorMapEncodeIm2col`,
//! `cuTensorMapReplaceAddress`). A map is the GPU's own opaque encoding, so
//! the server's driver makes it. Encoding is a function of the arguments
//! alone, so the shim keeps each answer: a program that encodes the same
//! map before every launch (as Triton's host-side descriptors do) pays one
//! round trip for the first only.

use super::*;
use gpupool_proto::message::{TensorMapDesc, TensorMapKind, TENSOR_MAP_BYTES};
use std::collections::HashMap;
use std::sync::Mutex;

type Map = [u8; TENSOR_MAP_BYTES];

/// Answers kept at most; the cache starts over when full.
const CACHE_LIMIT: usize = 4096;

#[derive(Default)]
struct Cache {
    encoded: HashMap<TensorMapDesc, Map>,
    replaced: HashMap<(Map, u64), Map>,
}

static CACHE: Mutex<Option<Cache>> = Mutex::new(None);

fn cached<T>(f: impl FnOnce(&mut Cache) -> T) -> T {
    let mut c = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    f(c.get_or_insert_with(Cache::default))
}

/// `n` values the program passed (`n` is at most 5, the largest rank).
///
/// # Safety
/// `p` points at `n` values when `n > 0` (API contract).
unsafe fn values<T: Copy>(p: *const T, n: usize) -> CuResult<Vec<T>> {
    if n == 0 {
        return Ok(Vec::new());
    }
    if p.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the caller's promise.
    Ok(unsafe { std::slice::from_raw_parts(p, n) }.to_vec())
}

/// The program's map: non-null and 64-byte aligned, as the driver asks.
fn map_ptr(map: *mut c_void) -> CuResult<*mut Map> {
    if map.is_null() || !(map as usize).is_multiple_of(64) {
        return Err(CuError::INVALID_VALUE);
    }
    Ok(map.cast())
}

fn map_of(reply: Reply) -> CuResult<Map> {
    match reply {
        Reply::Bytes(v) => v.try_into().map_err(|_| CuError::UNKNOWN),
        _ => Err(CuError::UNKNOWN),
    }
}

/// The map kept for `key` in the `table` of the cache, or the one `ask`
/// fetches, then kept.
fn remembered<K: std::hash::Hash + Eq>(
    table: fn(&mut Cache) -> &mut HashMap<K, Map>,
    key: K,
    ask: impl FnOnce(&K) -> CuResult<Map>,
) -> CuResult<Map> {
    if let Some(m) = cached(|c| table(c).get(&key).copied()) {
        return Ok(m);
    }
    let m = ask(&key)?;
    cached(|c| {
        let t = table(c);
        if t.len() >= CACHE_LIMIT {
            t.clear();
        }
        t.insert(key, m);
    });
    Ok(m)
}

fn encode(out: *mut Map, desc: TensorMapDesc) -> CuResult {
    let s = shim()?;
    let m = remembered(
        |c| &mut c.encoded,
        desc,
        |d| map_of(s.remote.call(&Request::TensorMapEncode(d.clone()), &[])?),
    )?;
    // SAFETY: `out` is the program's 64-aligned CUtensorMap (checked
    // non-null).
    unsafe { out.write(m) };
    Ok(())
}

/// A map's description from the program's arguments, encoded.
///
/// # Safety
/// Each array holds what `rank` asks (API contract): `rank` dimensions and
/// element strides, `rank - 1` strides.
#[allow(clippy::too_many_arguments)]
unsafe fn encode_map(
    map: *mut c_void,
    data_type: u32,
    rank: u32,
    min_rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    element_strides: *const u32,
    modes: [u32; 4],
    kind: impl FnOnce(usize) -> CuResult<TensorMapKind>,
) -> CuResult {
    let out = map_ptr(map)?;
    if !(min_rank..=5).contains(&rank) {
        return Err(CuError::INVALID_VALUE);
    }
    let r = rank as usize;
    let [interleave, swizzle, l2_promotion, oob_fill] = modes;
    // SAFETY: the caller's promise.
    let desc = unsafe {
        TensorMapDesc {
            data_type,
            rank,
            address: address as u64,
            dims: values(dims, r)?,
            strides: values(strides, r - 1)?,
            element_strides: values(element_strides, r)?,
            interleave,
            swizzle,
            l2_promotion,
            oob_fill,
            kind: kind(r)?,
        }
    };
    encode(out, desc)
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn tensor_map_encode_tiled(
    map: *mut c_void,
    data_type: u32,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    box_dims: *const u32,
    element_strides: *const u32,
    interleave: u32,
    swizzle: u32,
    l2_promotion: u32,
    oob_fill: u32,
) -> CuResult {
    let modes = [interleave, swizzle, l2_promotion, oob_fill];
    // SAFETY: each array holds what the rank asks (API contract).
    let kind = |r| {
        Ok(TensorMapKind::Tiled {
            box_dims: unsafe { values(box_dims, r)? },
        })
    };
    unsafe {
        encode_map(
            map,
            data_type,
            rank,
            1,
            address,
            dims,
            strides,
            element_strides,
            modes,
            kind,
        )
    }
}

#[allow(clippy::too_many_arguments)]
pub unsafe fn tensor_map_encode_im2col(
    map: *mut c_void,
    data_type: u32,
    rank: u32,
    address: *mut c_void,
    dims: *const u64,
    strides: *const u64,
    lower: *const i32,
    upper: *const i32,
    channels: u32,
    pixels: u32,
    element_strides: *const u32,
    interleave: u32,
    swizzle: u32,
    l2_promotion: u32,
    oob_fill: u32,
) -> CuResult {
    let modes = [interleave, swizzle, l2_promotion, oob_fill];
    // SAFETY: each array holds what the rank asks (API contract).
    let kind = |r: usize| unsafe {
        Ok(TensorMapKind::Im2col {
            lower: values(lower, r - 2)?,
            upper: values(upper, r - 2)?,
            channels,
            pixels,
        })
    };
    unsafe {
        encode_map(
            map,
            data_type,
            rank,
            3,
            address,
            dims,
            strides,
            element_strides,
            modes,
            kind,
        )
    }
}

pub unsafe fn tensor_map_replace_address(map: *mut c_void, address: *mut c_void) -> CuResult {
    let s = shim()?;
    let p = map_ptr(map)?;
    // SAFETY: the program's CUtensorMap, checked non-null and aligned.
    let old = unsafe { p.read() };
    let m = remembered(
        |c| &mut c.replaced,
        (old, address as u64),
        |&(map, address)| {
            let request = Request::TensorMapReplaceAddress {
                map: map.to_vec(),
                address,
            };
            map_of(s.remote.call(&request, &[])?)
        },
    )?;
    // SAFETY: as above.
    unsafe { p.write(m) };
    Ok(())
}
