//! Green contexts and the SM resources they are made of
//! (`cuDeviceGetDevResource`, `cuDevSmResourceSplitByCount`,
//! `cuDevResourceGenerateDesc`, `cuGreenCtxCreate`), as PyTorch's
//! `torch.cuda.green_contexts` and inference servers partition a GPU's SMs.
//!
//! Resources are the driver's own structures, kept here whole and named to
//! the client by number: the client sees their public fields (the SM
//! count, the partition rules) and hands the numbers back to split them
//! or to describe a green context, so every split is the driver's. A green
//! context is also a context of the session (`cuCtxFromGreenCtx`): the
//! client names it as any other, makes it current, creates streams and
//! allocates in it. It goes with `GreenCtxDestroy` or the session.

use super::{as_ptr, handle, Worker};
use crate::driver::{DevResource, DriverResult, Ptr, Status};
use gpupool_proto::message::{Handle, Reply, SmResource};

/// `CUDA_ERROR_INVALID_VALUE`.
const INVALID_VALUE: Status = 1;
/// `CUDA_ERROR_OUT_OF_MEMORY`.
const OUT_OF_MEMORY: Status = 2;
/// `CUDA_ERROR_INVALID_RESOURCE_TYPE`.
const INVALID_RESOURCE_TYPE: Status = 914;
/// The most groups one split may ask for, and resources one descriptor
/// may hold (a GPU has a few hundred SMs at most).
const MOST_GROUPS: u32 = 1024;
/// The most distinct resources a session may hold.
const MOST_RESOURCES: usize = 1 << 16;

impl Worker<'_> {
    /// File a resource the driver answered (once per distinct resource).
    fn keep_resource(&mut self, r: DevResource) -> DriverResult<SmResource> {
        if r.kind() != DevResource::TYPE_SM {
            return Err(INVALID_RESOURCE_TYPE);
        }
        let id = match self.tables.resource_ids.get(&r) {
            Some(id) => *id,
            None => {
                if self.tables.resources.len() >= MOST_RESOURCES {
                    return Err(OUT_OF_MEMORY);
                }
                self.tables.resources.push(r);
                let id = self.tables.resources.len() as u32;
                self.tables.resource_ids.insert(r, id);
                id
            }
        };
        let [sm_count, min_partition, alignment, flags, locality] = r.sm_fields();
        Ok(SmResource {
            id,
            sm_count,
            min_partition,
            alignment,
            flags,
            locality,
        })
    }

    fn resource(&self, id: u32) -> DriverResult<DevResource> {
        let i = (id as usize).checked_sub(1).ok_or(INVALID_VALUE)?;
        self.tables.resources.get(i).copied().ok_or(INVALID_VALUE)
    }

    /// The SM resource of a device, or of a context of the session.
    pub(super) fn dev_resource(&mut self, device: i32, ctx: Option<Handle>) -> DriverResult<Reply> {
        let mut r = DevResource::EMPTY;
        match ctx {
            Some(ctx) => {
                self.tables.context(ctx)?;
                // SAFETY: r is a whole CUdevResource; ctx is a context of
                // this client.
                unsafe {
                    self.driver
                        .cuCtxGetDevResource(as_ptr(ctx), &mut r, DevResource::TYPE_SM)
                }?;
            }
            None => {
                self.check_device(device)?;
                // SAFETY: r is a whole CUdevResource; the device is one of
                // the session's.
                unsafe { self.driver.cuDeviceGetDevResource(device, &mut r, DevResource::TYPE_SM) }?;
            }
        }
        Ok(Reply::SmResources(vec![self.keep_resource(r)?]))
    }

    pub(super) fn sm_split(
        &mut self,
        input: u32,
        groups: u32,
        simulate: bool,
        remainder: bool,
        flags: u32,
        min_count: u32,
    ) -> DriverResult<Reply> {
        let input = self.resource(input)?;
        if groups > MOST_GROUPS {
            return Err(INVALID_VALUE);
        }
        let mut count = groups;
        let mut results = vec![DevResource::EMPTY; if simulate { 0 } else { groups as usize }];
        let mut rest = DevResource::EMPTY;
        let result_ptr = if simulate {
            std::ptr::null_mut()
        } else {
            results.as_mut_ptr()
        };
        let rest_ptr: *mut DevResource = if remainder { &mut rest } else { std::ptr::null_mut() };
        // SAFETY: `results` holds `count` resources (or is NULL to only
        // count them), `rest` one (or NULL); `input` is a resource the
        // driver made for this client.
        unsafe {
            self.driver
                .cuDevSmResourceSplitByCount(result_ptr, &mut count, &input, rest_ptr, flags, min_count)
        }?;
        let made = if simulate { 0 } else { count.min(groups) as usize };
        let groups = results[..made]
            .iter()
            .map(|r| self.keep_resource(*r))
            .collect::<DriverResult<Vec<_>>>()?;
        let remainder = if remainder && rest.kind() == DevResource::TYPE_SM {
            Some(self.keep_resource(rest)?)
        } else {
            None
        };
        Ok(Reply::SmSplit {
            groups,
            count,
            remainder,
        })
    }

    pub(super) fn resource_desc(&mut self, resources: &[u32]) -> DriverResult<Reply> {
        if resources.is_empty() || resources.len() > MOST_GROUPS as usize {
            return Err(INVALID_VALUE);
        }
        let mut all = resources
            .iter()
            .map(|&id| self.resource(id))
            .collect::<DriverResult<Vec<_>>>()?;
        let mut desc: Ptr = std::ptr::null_mut();
        // SAFETY: `all` holds the resources, each the driver's own.
        unsafe {
            self.driver
                .cuDevResourceGenerateDesc(&mut desc, all.as_mut_ptr(), all.len() as u32)
        }?;
        self.tables.resource_descs.insert(handle(desc));
        Ok(Reply::Handle(handle(desc)))
    }

    pub(super) fn green_create(&mut self, desc: Handle, device: i32, flags: u32) -> DriverResult<Reply> {
        if !self.tables.resource_descs.contains(&desc) {
            return Err(INVALID_VALUE);
        }
        self.check_device(device)?;
        let mut green: Ptr = std::ptr::null_mut();
        // SAFETY: green is writable; desc was made for this client; the
        // driver checks the flags.
        unsafe { self.driver.cuGreenCtxCreate(&mut green, as_ptr(desc), device, flags) }?;
        let mut ctx: Ptr = std::ptr::null_mut();
        // SAFETY: ctx is writable; green was just made.
        if let Err(e) = unsafe { self.driver.cuCtxFromGreenCtx(&mut ctx, green) } {
            // SAFETY: as above; nothing else holds it.
            let _ = unsafe { self.driver.cuGreenCtxDestroy(green) };
            return Err(e);
        }
        self.tables.contexts.insert(handle(ctx), device);
        self.tables.greens.insert(handle(green), handle(ctx));
        Ok(Reply::Pair(handle(green) as i64, handle(ctx) as i64))
    }

    /// Whether two contexts of the session are of one device and one of
    /// them is a green context's.
    pub(super) fn same_device_with_green(&self, a: Handle, b: Handle) -> bool {
        let device = |c| self.tables.contexts.get(&c).copied();
        device(a).is_some() && device(a) == device(b) && (self.green_of(a).is_some() || self.green_of(b).is_some())
    }

    /// The green context a context of the session is, if it is one.
    pub(super) fn green_of(&self, ctx: Handle) -> Option<Handle> {
        self.tables.greens.iter().find(|(_, c)| **c == ctx).map(|(g, _)| *g)
    }

    pub(super) fn green_destroy(&mut self, green: Handle) -> DriverResult {
        let ctx = *self.tables.greens.get(&green).ok_or(INVALID_VALUE)?;
        // Memory allocated while the green context was current is its
        // device's primary context's (which the green context holds), and
        // outlives it, as the program's allocator expects.
        let device = self.tables.context(ctx)?;
        if let Some(&primary) = self.tables.primaries.get(&device) {
            for r in self.tables.memory.values_mut().filter(|r| r.ctx == ctx) {
                r.ctx = primary;
            }
        }
        self.release_context_resources(ctx);
        self.forget_context(ctx);
        self.tables.greens.remove(&green);
        // SAFETY: the green context was made for this client; what its
        // context held is freed above.
        unsafe { self.driver.cuGreenCtxDestroy(as_ptr(green)) }
    }

    pub(super) fn green_stream_create(
        &mut self,
        green: Handle,
        flags: u32,
        priority: i32,
        id: Handle,
    ) -> DriverResult<Reply> {
        let ctx = *self.tables.greens.get(&green).ok_or(INVALID_VALUE)?;
        self.make_current(ctx)?;
        self.check_new_name(id)?;
        let mut s: Ptr = std::ptr::null_mut();
        // SAFETY: s is writable; the green context is this client's; the
        // driver checks flags and priority.
        unsafe {
            self.driver
                .cuGreenCtxStreamCreate(&mut s, as_ptr(green), flags, priority)
        }?;
        Ok(Reply::Handle(self.name_new(id, handle(s), ctx, true)))
    }
}
