//! CUDA arrays, the copies into and out of them, and the texture and surface
//! objects made of them or of device memory. Every array, texture and
//! surface is the session's own, looked up in its tables; every copy is
//! checked against the array's extent and the session's device memory.

use super::*;
use crate::driver::{Array3DDesc, End, Memcpy3D, ResourceDesc, TextureDesc};
use crate::tables::ArrayInfo;
use gpupool_proto::message::{array_element_bytes, ArrayDesc, ArrayPos, CopyEnd, Resource, TextureDesc as WireTexture};

/// `CUDA_ARRAY3D_LAYERED`, `CUDA_ARRAY3D_SURFACE_LDST`.
const ARRAY_LAYERED: u32 = 1;
const ARRAY_SURFACE_LDST: u32 = 2;
/// `CUresourcetype`.
const RESOURCE_ARRAY: u32 = 0;
const RESOURCE_LINEAR: u32 = 2;
const RESOURCE_PITCH2D: u32 = 3;

impl Worker<'_> {
    /// `cuArray3DCreate` in `ctx`.
    pub(super) fn array_create(&mut self, ctx: Handle, desc: ArrayDesc) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        let elem = array_element_bytes(desc.format, desc.channels).ok_or(INVALID_VALUE)?;
        let row_bytes = desc.width.checked_mul(elem).ok_or(INVALID_VALUE)?;
        if desc.width == 0 || (desc.height == 0 && desc.depth > 0 && desc.flags & ARRAY_LAYERED == 0) {
            return Err(INVALID_VALUE);
        }
        let size = |v: u64| usize::try_from(v).map_err(|_| INVALID_VALUE);
        let d = Array3DDesc {
            width: size(desc.width)?,
            height: size(desc.height)?,
            depth: size(desc.depth)?,
            format: desc.format,
            channels: desc.channels,
            flags: desc.flags,
        };
        let mut array: Ptr = std::ptr::null_mut();
        // SAFETY: array is writable and d a complete descriptor; the driver
        // checks the extent, format and flags against the device.
        unsafe { self.driver.cuArray3DCreate_v2(&mut array, &d) }?;
        let handle = array as Handle;
        self.tables.arrays.insert(
            handle,
            ArrayInfo {
                ctx,
                row_bytes,
                rows: desc.height.max(1),
                slices: desc.depth.max(1),
                surface: desc.flags & ARRAY_SURFACE_LDST != 0,
            },
        );
        Ok(Reply::Handle(handle))
    }

    /// `cuArrayDestroy`, refused while a texture or surface of the session
    /// reads the array (its memory must not be handed out again under them).
    pub(super) fn array_destroy(&mut self, array: Handle) -> DriverResult {
        let info = *self.tables.arrays.get(&array).ok_or(INVALID_HANDLE)?;
        let named = self.tables.textures.values().any(|(_, a)| *a == Some(array))
            || self.tables.surfaces.values().any(|(_, a)| *a == array);
        if named {
            tracing::debug!("an array is destroyed while texture or surface objects read it: refused");
            return Err(INVALID_VALUE);
        }
        self.make_current(info.ctx)?;
        // SAFETY: the array belongs to this client and nothing names it.
        unsafe { self.driver.cuArrayDestroy(as_ptr(array)) }?;
        self.tables.arrays.remove(&array);
        Ok(())
    }

    /// One end of a copy between device memory and arrays, checked for
    /// `height` rows of `width` bytes.
    fn copy_end(&self, ctx: Handle, end: CopyEnd, width: u64, height: u64) -> DriverResult<End> {
        let size = |v: u64| usize::try_from(v).map_err(|_| INVALID_VALUE);
        match end {
            CopyEnd::Device { ptr, pitch } => {
                self.check_band(&Band {
                    base: ptr,
                    pitch,
                    width,
                    first_row: 0,
                    rows: height,
                })?;
                Ok(End::Device(ptr, size(pitch)?))
            }
            CopyEnd::Array(at) => {
                self.tables
                    .check_array(ctx, at.array, (at.x, at.y, at.z), width, height)?;
                Ok(End::Array(as_ptr(at.array), size(at.x)?, size(at.y)?, size(at.z)?))
            }
        }
    }

    /// A copy of rows between device memory and arrays (`MemcpyArray`). Like
    /// the device-to-device copies it does not wait for the device.
    pub(super) fn copy_array(
        &mut self,
        ctx: Handle,
        stream: StreamRef,
        dst: CopyEnd,
        src: CopyEnd,
        width: u64,
        height: u64,
    ) -> DriverResult {
        let s = self.enter(ctx, stream)?;
        if !matches!(dst, CopyEnd::Array(_)) && !matches!(src, CopyEnd::Array(_)) {
            return Err(INVALID_VALUE);
        }
        let (d, f) = (
            self.copy_end(ctx, dst, width, height)?,
            self.copy_end(ctx, src, width, height)?,
        );
        if width == 0 || height == 0 {
            return Ok(());
        }
        let copy = Memcpy3D::rows(f, d, width as usize, height as usize);
        // SAFETY: both ends were checked against this client's arrays and
        // allocations.
        unsafe { self.driver.cuMemcpy3DAsync_v2(&copy, s) }
    }

    /// Rows of a host-to-array copy (one band: at most a staging buffer),
    /// bulk bytes -> staging -> array, as in [`Worker::copy_in_2d`].
    pub(super) fn copy_into_array<R: Read>(
        &mut self,
        ctx: Handle,
        stream: StreamRef,
        dst: ArrayPos,
        (width, first_row, rows): (u64, u64, u64),
        len: u64,
        reader: &mut R,
    ) -> Result<Status, ProtoError> {
        let checked = self.enter(ctx, stream).and_then(|s| {
            if width.checked_mul(rows) != Some(len) || len > COPY_CHUNK as u64 {
                return Err(INVALID_VALUE);
            }
            let y = dst.y.checked_add(first_row).ok_or(INVALID_VALUE)?;
            self.tables
                .check_array(ctx, dst.array, (dst.x, y, dst.z), width, rows)?;
            self.refuse_if_capturing(s)?;
            Ok((s, y))
        });
        let (s, y) = match checked {
            Ok(v) if len > 0 => v,
            Ok(_) => return Ok(0),
            Err(status) => {
                frame::skip_bulk(reader, len)?;
                return Ok(status);
            }
        };
        let array = End::Array(as_ptr(dst.array), dst.x as usize, y as usize, dst.z as usize);
        self.stage_in(s, len as usize, reader, |d, src| {
            let copy = Memcpy3D::rows(
                End::Host(src.cast(), width as usize),
                array,
                width as usize,
                rows as usize,
            );
            // SAFETY: the rows were checked against the array; the staging
            // buffer stays untouched until its event says the copy is done.
            unsafe { d.cuMemcpy3DAsync_v2(&copy, s) }
        })
    }

    /// An array-to-host copy: bands of whole rows go array -> staging
    /// (packed) -> socket, as in [`Worker::copy_out_2d`].
    pub(super) fn copy_out_of_array<W: Write>(
        &mut self,
        id: u64,
        ctx: Handle,
        stream: StreamRef,
        src: ArrayPos,
        (width, height): (u64, u64),
        writer: &mut W,
    ) -> Result<Status, ProtoError> {
        let checked = self.enter(ctx, stream).and_then(|s| {
            if width > COPY_CHUNK as u64 {
                return Err(INVALID_VALUE);
            }
            self.tables
                .check_array(ctx, src.array, (src.x, src.y, src.z), width, height)?;
            self.refuse_if_capturing(s)?;
            Ok(s)
        });
        let s = match checked {
            Ok(s) => s,
            Err(status) => return Ok(status),
        };
        if width == 0 || height == 0 {
            return Ok(0);
        }
        let band = (COPY_CHUNK as u64 / width) * width;
        let array = as_ptr(src.array);
        self.stream_out(id, s, width * height, band, writer, |d, dst, offset, n| {
            let from = End::Array(array, src.x as usize, (src.y + offset / width) as usize, src.z as usize);
            let copy = Memcpy3D::rows(
                from,
                End::Host(dst.cast(), width as usize),
                width as usize,
                n / width as usize,
            );
            // SAFETY: the rows were checked against the array; the staging
            // buffer has n bytes, n / width rows of width bytes.
            unsafe { d.cuMemcpy3DAsync_v2(&copy, s) }
        })
    }

    /// `cuTexObjectCreate` over the session's own array or device memory.
    pub(super) fn texture_create(&mut self, ctx: Handle, resource: Resource, t: WireTexture) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        let mut res = ResourceDesc {
            res_type: 0,
            res: [0; 16],
            flags: 0,
        };
        let mut array = None;
        match resource {
            Resource::Array(a) => {
                self.tables
                    .arrays
                    .get(&a)
                    .filter(|i| i.ctx == ctx)
                    .ok_or(INVALID_HANDLE)?;
                (res.res_type, res.res[0]) = (RESOURCE_ARRAY, a);
                array = Some(a);
            }
            Resource::Linear {
                ptr,
                format,
                channels,
                size,
            } => {
                array_element_bytes(format, channels).ok_or(INVALID_VALUE)?;
                self.tables.check_range(ptr, size)?;
                res.res_type = RESOURCE_LINEAR;
                res.res[..3].copy_from_slice(&[ptr, u64::from(format) | u64::from(channels) << 32, size]);
            }
            Resource::Pitch2D {
                ptr,
                format,
                channels,
                width,
                height,
                pitch,
            } => {
                let elem = array_element_bytes(format, channels).ok_or(INVALID_VALUE)?;
                self.check_band(&Band {
                    base: ptr,
                    pitch,
                    width: width.checked_mul(elem).ok_or(INVALID_VALUE)?,
                    first_row: 0,
                    rows: height,
                })?;
                res.res_type = RESOURCE_PITCH2D;
                res.res[..5].copy_from_slice(&[
                    ptr,
                    u64::from(format) | u64::from(channels) << 32,
                    width,
                    height,
                    pitch,
                ]);
            }
        }
        let desc = TextureDesc {
            address_mode: t.address_mode,
            filter_mode: t.filter_mode,
            flags: t.flags,
            max_anisotropy: t.max_anisotropy,
            mipmap_filter_mode: t.mipmap_filter_mode,
            mipmap_level_bias: t.mipmap_level_bias,
            min_mipmap_level_clamp: t.min_mipmap_level_clamp,
            max_mipmap_level_clamp: t.max_mipmap_level_clamp,
            border_color: t.border_color,
            reserved: [0; 12],
        };
        let mut tex = 0u64;
        // SAFETY: tex is writable; res and desc are complete descriptors of
        // this client's own memory; no resource view.
        unsafe { self.driver.cuTexObjectCreate(&mut tex, &res, &desc, std::ptr::null()) }?;
        self.tables.textures.insert(tex, (ctx, array));
        Ok(Reply::Handle(tex))
    }

    pub(super) fn texture_destroy(&mut self, tex: Handle) -> DriverResult {
        self.tables.textures.get(&tex).ok_or(INVALID_HANDLE)?;
        // SAFETY: a texture object of this client.
        unsafe { self.driver.cuTexObjectDestroy(tex) }?;
        self.tables.textures.remove(&tex);
        Ok(())
    }

    /// `cuSurfObjectCreate` over an array of the session made for surface
    /// load and store.
    pub(super) fn surface_create(&mut self, ctx: Handle, array: Handle) -> DriverResult<Reply> {
        self.make_current(ctx)?;
        let info = self
            .tables
            .arrays
            .get(&array)
            .filter(|i| i.ctx == ctx)
            .ok_or(INVALID_HANDLE)?;
        if !info.surface {
            return Err(INVALID_VALUE);
        }
        let mut res = ResourceDesc {
            res_type: RESOURCE_ARRAY,
            res: [0; 16],
            flags: 0,
        };
        res.res[0] = array;
        let mut surf = 0u64;
        // SAFETY: surf is writable; res names an array of this client.
        unsafe { self.driver.cuSurfObjectCreate(&mut surf, &res) }?;
        self.tables.surfaces.insert(surf, (ctx, array));
        Ok(Reply::Handle(surf))
    }

    pub(super) fn surface_destroy(&mut self, surf: Handle) -> DriverResult {
        self.tables.surfaces.get(&surf).ok_or(INVALID_HANDLE)?;
        // SAFETY: a surface object of this client.
        unsafe { self.driver.cuSurfObjectDestroy(surf) }?;
        self.tables.surfaces.remove(&surf);
        Ok(())
    }

    /// When a context goes (destroyed, or at the end of the session): its
    /// texture and surface objects, then its arrays.
    pub(super) fn release_arrays(&mut self, ctx: Handle) {
        let mine = |c: &Handle| *c == ctx;
        let d = self.driver;
        for (t, _) in self.tables.textures.iter().filter(|(_, (c, _))| mine(c)) {
            // SAFETY: a texture object of this client.
            let _ = unsafe { d.cuTexObjectDestroy(*t) };
        }
        for (t, _) in self.tables.surfaces.iter().filter(|(_, (c, _))| mine(c)) {
            // SAFETY: a surface object of this client.
            let _ = unsafe { d.cuSurfObjectDestroy(*t) };
        }
        for (a, _) in self.tables.arrays.iter().filter(|(_, i)| mine(&i.ctx)) {
            // SAFETY: an array of this client, which nothing reads any more.
            let _ = unsafe { d.cuArrayDestroy(as_ptr(*a)) };
        }
        self.tables.textures.retain(|_, (c, _)| !mine(c));
        self.tables.surfaces.retain(|_, (c, _)| !mine(c));
        self.tables.arrays.retain(|_, i| !mine(&i.ctx));
    }
}
