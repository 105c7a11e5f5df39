//! Questions about streams, contexts and devices that the shim answers from
//! what it holds: none costs a round trip. Stream attributes, which the
//! server's driver keeps, are here too: one round trip each.

use super::*;
use gpupool_proto::handshake::PeerLink;
use gpupool_proto::message::ATTRIBUTE_VALUE_BYTES;
use std::ffi::c_char;

/// What a stream was created with: (flags, priority). Default streams have
/// neither.
fn stream_params(s: &Shim, stream: CUstream) -> CuResult<(u32, i32)> {
    let h = handle(stream);
    if h <= 2 {
        current_ctx()?;
        return Ok((0, 0));
    }
    read(&s.streams)
        .get(&h)
        .map(|info| (info.flags, info.priority))
        .ok_or(CuError::INVALID_HANDLE)
}

/// `CU_LAUNCH_ATTRIBUTE_PRIORITY`, which streams have too.
const STREAM_ATTRIBUTE_PRIORITY: u32 = 8;

/// A stream attribute through the server's driver, set first when `set`
/// holds a value; the value it then has.
fn stream_attribute(mode: DefaultStream, stream: CUstream, attr: u32, set: Option<Vec<u8>>) -> CuResult<Vec<u8>> {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    let sref = Shim::stream_ref(mode, handle(stream));
    let setting = set.is_some();
    match s.remote.call(
        &Request::StreamAttribute {
            ctx,
            stream: sref,
            attr,
            set,
        },
        &[],
    )? {
        Reply::Bytes(v) if v.len() == ATTRIBUTE_VALUE_BYTES => {
            if setting && attr == STREAM_ATTRIBUTE_PRIORITY {
                // What cuStreamGetPriority answers follows.
                let p = i32::from_ne_bytes([v[0], v[1], v[2], v[3]]);
                if let Some(info) = write(&s.streams).get_mut(&handle(stream)) {
                    info.priority = p;
                }
            }
            Ok(v)
        }
        _ => Err(CuError::UNKNOWN),
    }
}

pub unsafe fn stream_get_attribute(mode: DefaultStream, stream: CUstream, attr: u32, value: *mut c_void) -> CuResult {
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let v = stream_attribute(mode, stream, attr, None)?;
    // SAFETY: `value` has room for a CUstreamAttrValue (API contract).
    unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), value.cast::<u8>(), ATTRIBUTE_VALUE_BYTES) };
    Ok(())
}

pub unsafe fn stream_set_attribute(mode: DefaultStream, stream: CUstream, attr: u32, value: *const c_void) -> CuResult {
    if value.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: `value` points at a CUstreamAttrValue (API contract).
    let v = unsafe { std::slice::from_raw_parts(value.cast::<u8>(), ATTRIBUTE_VALUE_BYTES) }.to_vec();
    stream_attribute(mode, stream, attr, Some(v)).map(|_| ())
}

pub unsafe fn stream_copy_attributes(mode: DefaultStream, dst: CUstream, src: CUstream) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, dst)?;
    stream_ctx(s, src)?;
    s.remote.call(
        &Request::StreamCopyAttributes {
            ctx,
            dst: Shim::stream_ref(mode, handle(dst)),
            src: Shim::stream_ref(mode, handle(src)),
        },
        &[],
    )?;
    // The priority went with the rest.
    let p = stream_params(s, src)?.1;
    if let Some(info) = write(&s.streams).get_mut(&handle(dst)) {
        info.priority = p;
    }
    Ok(())
}

pub unsafe fn stream_get_priority(_mode: DefaultStream, stream: CUstream, priority: *mut i32) -> CuResult {
    let s = shim()?;
    let (_, p) = stream_params(s, stream)?;
    unsafe { out(priority, p) }
}

pub unsafe fn stream_get_flags(_mode: DefaultStream, stream: CUstream, flags: *mut u32) -> CuResult {
    let s = shim()?;
    let (f, _) = stream_params(s, stream)?;
    unsafe { out(flags, f) }
}

pub unsafe fn stream_get_ctx(_mode: DefaultStream, stream: CUstream, ctx: *mut CUcontext) -> CuResult {
    let s = shim()?;
    let c = stream_ctx(s, stream)?;
    unsafe { out(ctx, as_ptr(c)) }
}

/// `cuStreamGetGreenCtx`: gpupool makes no green contexts, so no stream
/// belongs to one (null, as the driver answers for a stream of an ordinary
/// context).
pub unsafe fn stream_get_green_ctx(stream: CUstream, green: *mut *mut c_void) -> CuResult {
    let s = shim()?;
    stream_ctx(s, stream)?;
    unsafe { out(green, std::ptr::null_mut()) }
}

/// `cuStreamGetCtx_v2`: the stream's context, and no green context (gpupool
/// makes none).
pub unsafe fn stream_get_ctx_v2(
    _mode: DefaultStream,
    stream: CUstream,
    ctx: *mut CUcontext,
    green: *mut *mut c_void,
) -> CuResult {
    let s = shim()?;
    if ctx.is_null() && green.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let c = stream_ctx(s, stream)?;
    let (c, g) = super::green::stream_contexts(handle(stream), c, s.context_device(c)?)?;
    if !ctx.is_null() {
        // SAFETY: checked not to be null; the program passes a slot.
        unsafe { out(ctx, as_ptr(c)) }?;
    }
    if !green.is_null() {
        // SAFETY: as above.
        unsafe { out(green, as_ptr(g)) }?;
    }
    Ok(())
}

pub unsafe fn stream_get_device(_mode: DefaultStream, stream: CUstream, device: *mut CUdevice) -> CuResult {
    let s = shim()?;
    let c = stream_ctx(s, stream)?;
    let d = s.context_device(c)?;
    unsafe { out(device, d) }
}

pub unsafe fn stream_get_id(mode: DefaultStream, stream: CUstream, id: *mut u64) -> CuResult {
    let s = shim()?;
    stream_params(s, stream)?;
    // Unique in the process: the legacy stream 0, each thread's per-thread
    // stream its own number, created streams their name's.
    let value = match Shim::stream_ref(mode, handle(stream)) {
        StreamRef::Legacy => 0,
        StreamRef::PerThread(t) => (1 << 48) | t,
        StreamRef::Handle(h) => (2 << 48) | (h & 0xffff_ffff_ffff),
    };
    unsafe { out(id, value) }
}

pub unsafe fn ctx_get_id(ctx: CUcontext, id: *mut u64) -> CuResult {
    let s = shim()?;
    let h = if ctx.is_null() { current_ctx()? } else { handle(ctx) };
    s.context_device(h)?;
    unsafe { out(id, h) }
}

pub unsafe fn ctx_get_flags(flags: *mut u32) -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    let device = s.context_device(ctx)?;
    let primary = lock(&s.primaries)
        .get(device as usize)
        .filter(|p| p.handle == Some(ctx))
        .map(|p| p.flags);
    let f = match primary {
        Some(f) => f,
        None => read(&s.context_flags).get(&ctx).copied().unwrap_or(0),
    };
    unsafe { out(flags, f) }
}

/// `CU_DEVICE_ATTRIBUTE_PCI_BUS_ID`, `_PCI_DEVICE_ID`, `_PCI_DOMAIN_ID`.
const PCI_BUS: i32 = 33;
const PCI_DEVICE: i32 = 34;
const PCI_DOMAIN: i32 = 50;

/// The remote GPU's PCI address, as the driver writes it: a four-digit
/// domain in upper-case hex (`0000:3B:00.0`), twelve characters, so that it
/// fits the 13-byte buffer the driver's documentation asks for. (NVML's
/// `busId` is the one with an eight-digit domain.)
fn pci_bus_id(s: &Shim, device: CUdevice) -> CuResult<String> {
    let (domain, bus, dev) = (
        s.attribute(device, PCI_DOMAIN)?,
        s.attribute(device, PCI_BUS)?,
        s.attribute(device, PCI_DEVICE)?,
    );
    Ok(format!("{domain:04X}:{bus:02X}:{dev:02X}.0"))
}

pub unsafe fn device_get_pci_bus_id(id: *mut c_char, len: i32, device: CUdevice) -> CuResult {
    let s = shim()?;
    if id.is_null() || len <= 0 {
        return Err(CuError::INVALID_VALUE);
    }
    let text = pci_bus_id(s, device)?;
    let n = text.len().min(len as usize - 1);
    // SAFETY: the program gave `len` writable bytes at id; n + 1 <= len.
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), id, n);
        *id.add(n) = 0;
    }
    Ok(())
}

/// `[domain:]bus:device[.function]` in hex, as PCI addresses are written.
fn parse_pci(text: &str) -> Option<(u32, u32, u32)> {
    let text = text.split('.').next()?;
    let parts: Vec<&str> = text.split(':').collect();
    let hex = |p: &str| u32::from_str_radix(p, 16).ok();
    match parts.as_slice() {
        [bus, dev] => Some((0, hex(bus)?, hex(dev)?)),
        [domain, bus, dev] => Some((hex(domain)?, hex(bus)?, hex(dev)?)),
        _ => None,
    }
}

pub unsafe fn device_get_by_pci_bus_id(device: *mut CUdevice, id: *const c_char) -> CuResult {
    let s = shim()?;
    if device.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let text = unsafe { c_string(id) }?;
    let want = parse_pci(&text).ok_or(CuError::INVALID_VALUE)?;
    for d in 0..s.remote.session.devices.len() as i32 {
        let have = (
            s.attribute(d, PCI_DOMAIN)? as u32,
            s.attribute(d, PCI_BUS)? as u32,
            s.attribute(d, PCI_DEVICE)? as u32,
        );
        if have == want {
            return unsafe { out(device, d) };
        }
    }
    Err(CuError::INVALID_DEVICE)
}

pub unsafe fn device_can_access_peer(can: *mut i32, device: CUdevice, peer: CUdevice) -> CuResult {
    let s = shim()?;
    let link = peer_link(s, device, peer)?;
    // The server's driver's answer for its two devices (none for a device
    // and itself).
    // SAFETY: `out` checks `can` for NULL; the program passes a slot.
    unsafe { out(can, link.is_some_and(|l| l.can_access) as i32) }
}

/// The server's word on `device`'s link to `peer`, from the handshake;
/// `None` for a device and itself.
fn peer_link(s: &Shim, device: CUdevice, peer: CUdevice) -> CuResult<Option<&PeerLink>> {
    let info = s.device(device)?;
    s.device(peer)?;
    if device == peer {
        return Ok(None);
    }
    // A server that could not ask its driver about the link offers none.
    Ok(info.peers.iter().find(|l| l.peer == peer))
}

/// `CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK` ..
/// `_ONLY_PARTIAL_NATIVE_ATOMIC_SUPPORTED`.
const P2P_ATTRIBUTES: std::ops::RangeInclusive<i32> = 1..=5;

/// The server's driver's answer for the link between two of its devices,
/// from the handshake (0 for an attribute it did not answer).
pub unsafe fn device_get_p2p_attribute(value: *mut i32, attribute: i32, src: CUdevice, dst: CUdevice) -> CuResult {
    let s = shim()?;
    if src == dst {
        s.device(src)?;
        return Err(CuError::INVALID_DEVICE);
    }
    let link = peer_link(s, src, dst)?;
    if value.is_null() || !P2P_ATTRIBUTES.contains(&attribute) {
        return Err(CuError::INVALID_VALUE);
    }
    let v = link
        .and_then(|l| l.attributes.iter().find(|(a, _)| *a == attribute))
        .map_or(0, |(_, v)| *v);
    // SAFETY: checked not to be NULL above; the program passes a slot.
    unsafe { out(value, v) }
}

/// `CU_ATOMIC_OPERATION_MAX`: operations are below it.
const ATOMIC_OPERATIONS: u32 = 13;

/// Checks the operations of an atomic capability query and answers that
/// the link supports none of them natively.
///
/// # Safety
/// `capabilities` and `operations` hold `count` values when not null.
unsafe fn no_atomic_capabilities(capabilities: *mut u32, operations: *const u32, count: u32) -> CuResult {
    if capabilities.is_null() || operations.is_null() || count == 0 {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: the caller's promise.
    let ops = unsafe { std::slice::from_raw_parts(operations, count as usize) };
    if ops.iter().any(|&op| op >= ATOMIC_OPERATIONS) {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: as above.
    unsafe { std::ptr::write_bytes(capabilities, 0, count as usize) };
    Ok(())
}

/// `cuDeviceGetHostAtomicCapabilities`: the program's host memory is not
/// the device's to reach (`cuMemHostGetDevicePointer` is not supported), so
/// no atomic operation crosses that link.
pub unsafe fn device_get_host_atomic_capabilities(
    capabilities: *mut u32,
    operations: *const u32,
    count: u32,
    device: CUdevice,
) -> CuResult {
    shim()?.device(device)?;
    // SAFETY: the program passes `count` of each (API contract).
    unsafe { no_atomic_capabilities(capabilities, operations, count) }
}

/// `cuDeviceGetP2PAtomicCapabilities`: no link between remote GPUs is
/// offered (as `cuDeviceGetP2PAttribute` answers), so none.
pub unsafe fn device_get_p2p_atomic_capabilities(
    capabilities: *mut u32,
    operations: *const u32,
    count: u32,
    src: CUdevice,
    dst: CUdevice,
) -> CuResult {
    let s = shim()?;
    s.device(src)?;
    s.device(dst)?;
    if src == dst {
        return Err(CuError::INVALID_DEVICE);
    }
    // SAFETY: the program passes `count` of each (API contract).
    unsafe { no_atomic_capabilities(capabilities, operations, count) }
}

/// `cuDeviceGetTexture1DLinearMaxWidth`: the server driver's answer, kept
/// per (device, format, channels).
pub unsafe fn device_get_texture_1d_linear_max_width(
    width: *mut usize,
    format: u32,
    channels: u32,
    device: CUdevice,
) -> CuResult {
    /// (device, format, channels) and the width.
    type Known = Vec<((i32, u32, u32), u64)>;
    static KNOWN: std::sync::Mutex<Known> = std::sync::Mutex::new(Vec::new());
    let s = shim()?;
    s.device(device)?;
    if width.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    let key = (device, format, channels);
    let known = lock(&KNOWN).iter().find(|(k, _)| *k == key).map(|(_, w)| *w);
    let w = match known {
        Some(w) => w,
        None => {
            let request = Request::DeviceTexture1DLinearMaxWidth {
                device,
                format,
                channels,
            };
            let Reply::Size(w) = s.remote.call(&request, &[])? else {
                return Err(CuError::UNKNOWN);
            };
            lock(&KNOWN).push((key, w));
            w
        }
    };
    // SAFETY: checked not to be null; the program passes a slot.
    unsafe { out(width, w as usize) }
}

/// `cuCtxResetPersistingL2Cache`, on the server's driver for the current
/// context (one round trip).
pub unsafe fn ctx_reset_persisting_l2_cache() -> CuResult {
    let s = shim()?;
    let ctx = current_ctx()?;
    s.remote
        .call(&Request::CtxResetPersistingL2Cache { ctx }, &[])
        .map(drop)
}

/// The device of a context the program holds.
fn context_device(s: &Shim, ctx: CUcontext) -> CuResult<i32> {
    read(&s.contexts)
        .get(&handle(ctx))
        .copied()
        .ok_or(CuError::INVALID_CONTEXT)
}

/// `cuCtxEnablePeerAccess`: on the server's driver, for two of the
/// session's contexts (one round trip; programs enable each pair once). A
/// pair of devices the server's driver links not is refused here, as the
/// driver refuses it.
pub unsafe fn ctx_enable_peer_access(peer: CUcontext, flags: u32) -> CuResult {
    let s = shim()?;
    let (current, device) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    let peer_device = context_device(s, peer)?;
    if handle(peer) == current {
        return Err(CuError::INVALID_CONTEXT);
    }
    if flags != 0 {
        return Err(CuError::INVALID_VALUE);
    }
    if !peer_link(s, device, peer_device)?.is_some_and(|l| l.can_access) {
        return Err(CuError::PEER_ACCESS_UNSUPPORTED);
    }
    peer_access(s, current, peer, true)
}

/// `cuCtxDisablePeerAccess`: on the server's driver, which knows what was
/// enabled.
pub unsafe fn ctx_disable_peer_access(peer: CUcontext) -> CuResult {
    let s = shim()?;
    let (current, device) = state::current().ok_or(CuError::INVALID_CONTEXT)?;
    let peer_device = context_device(s, peer)?;
    if !peer_link(s, device, peer_device)?.is_some_and(|l| l.can_access) {
        return Err(CuError::PEER_ACCESS_NOT_ENABLED);
    }
    peer_access(s, current, peer, false)
}

fn peer_access(s: &Shim, ctx: Handle, peer: CUcontext, enable: bool) -> CuResult {
    let request = Request::CtxPeerAccess {
        ctx,
        peer: handle(peer),
        enable,
        flags: 0,
    };
    s.remote.call(&request, &[]).map(drop)
}

/// `CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR` / `_MINOR`.
const CC_MAJOR: i32 = 75;
const CC_MINOR: i32 = 76;

pub unsafe fn device_compute_capability(major: *mut i32, minor: *mut i32, device: CUdevice) -> CuResult {
    let s = shim()?;
    let (a, b) = (s.attribute(device, CC_MAJOR)?, s.attribute(device, CC_MINOR)?);
    unsafe {
        out(major, a)?;
        out(minor, b)
    }
}

/// `cuProfilerStart` / `cuProfilerStop`: no profiler can attach to the
/// program's GPU work from the client (a profiler of the server process
/// sees it there), and with none attached the driver answers success.
pub unsafe fn profiler_start() -> CuResult {
    shim()?;
    current_ctx().map(|_| ())
}

pub unsafe fn profiler_stop() -> CuResult {
    shim()?;
    current_ctx().map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::parse_pci;

    #[test]
    fn pci_addresses_parse_with_and_without_domain() {
        assert_eq!(parse_pci("00000000:65:00.0"), Some((0, 0x65, 0)));
        assert_eq!(parse_pci("0001:1a:03"), Some((1, 0x1a, 3)));
        assert_eq!(parse_pci("65:00.0"), Some((0, 0x65, 0)));
        assert_eq!(parse_pci("zz:00.0"), None);
        assert_eq!(parse_pci("1:2:3:4"), None);
    }
}
