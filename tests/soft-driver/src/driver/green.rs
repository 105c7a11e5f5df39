//! Green contexts and SM resources, as the double models them.
//!
//! - **SMs.** A device has [`SM_COUNT`] SMs, numbered from 0. A resource is
//!   a run of them: `first` and `count`. Its partition rules are
//!   Hopper-like: at least 8 SMs, in multiples of 8 (2 and 2 with
//!   `CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING`).
//! - **Splits** cut groups of equal size from the front of the input's run;
//!   what is left is the remainder. The groups and the remainder cannot be
//!   split again (`CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION`), as the
//!   driver documents; resources of devices and contexts can.
//! - **A green context** is a context of its own, holding its device's
//!   primary context while it lives. Its work runs as any other here (no SM
//!   is reserved); what it asks of its resource is its descriptor's SMs.
//!   Memory allocated in it is the primary context's, and outlives it.
//!
//! The double's resource (144 bytes): the type (1, SM) at byte 0;
//! `b"softsm"` at byte 4, then the device (4 bytes), `first` (4), whether
//! it came from a split (4); the public `CUdevSmResource` fields at byte 96.

use super::*;

const MAGIC: &[u8; 6] = b"softsm";
pub const RESOURCE_BYTES: usize = 144;
/// `CU_DEV_RESOURCE_TYPE_SM`.
pub const RESOURCE_TYPE_SM: u32 = 1;
/// `CU_DEV_SM_RESOURCE_SPLIT_IGNORE_SM_COSCHEDULING`,
/// `CU_DEV_SM_RESOURCE_SPLIT_MAX_POTENTIAL_CLUSTER_SIZE`.
const SPLIT_IGNORE_COSCHEDULING: u32 = 1;
const SPLIT_FLAGS: u32 = 3;
/// `CU_GREEN_CTX_DEFAULT_STREAM`.
const GREEN_CTX_DEFAULT_STREAM: u32 = 1;
/// `CU_STREAM_NON_BLOCKING`.
const STREAM_NON_BLOCKING: u32 = 1;

/// A run of a device's SMs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SmRun {
    pub device: usize,
    pub first: u32,
    pub count: u32,
    pub split: bool,
}

impl SmRun {
    fn rules(flags: u32) -> (u32, u32) {
        if flags & SPLIT_IGNORE_COSCHEDULING != 0 {
            (2, 2)
        } else {
            (8, 8)
        }
    }

    pub fn encode(&self) -> [u8; RESOURCE_BYTES] {
        let mut b = [0u8; RESOURCE_BYTES];
        let (min, align) = Self::rules(0);
        b[0..4].copy_from_slice(&RESOURCE_TYPE_SM.to_le_bytes());
        b[4..10].copy_from_slice(MAGIC);
        b[12..16].copy_from_slice(&(self.device as u32).to_le_bytes());
        b[16..20].copy_from_slice(&self.first.to_le_bytes());
        b[20..24].copy_from_slice(&u32::from(self.split).to_le_bytes());
        for (i, v) in [self.count, min, align, 0, 0].into_iter().enumerate() {
            b[96 + 4 * i..100 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
        b
    }

    pub fn decode(b: &[u8; RESOURCE_BYTES]) -> CuResult<SmRun> {
        let word = |at: usize| u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
        if word(0) != RESOURCE_TYPE_SM {
            return Err(CUDA_ERROR_INVALID_RESOURCE_TYPE);
        }
        if &b[4..10] != MAGIC {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        Ok(SmRun {
            device: word(12) as usize,
            first: word(16),
            count: word(96),
            split: word(20) != 0,
        })
    }
}

#[derive(Default)]
pub struct Green {
    /// Resource descriptors: their device and SM runs.
    descs: HashMap<u64, (usize, Vec<SmRun>)>,
    /// Green contexts -> (their context, their SMs).
    greens: HashMap<u64, (u64, Vec<SmRun>)>,
}

impl Driver {
    fn whole_device(&self, device: usize) -> SmRun {
        SmRun {
            device,
            first: 0,
            count: SM_COUNT as u32,
            split: false,
        }
    }

    pub fn device_resource(&self, dev: i32, kind: u32) -> CuResult<SmRun> {
        let device = self.device(dev)?;
        if kind != RESOURCE_TYPE_SM {
            return Err(CUDA_ERROR_INVALID_RESOURCE_TYPE);
        }
        Ok(self.whole_device(device))
    }

    /// A context's SMs: a green one's, or the whole device's.
    pub fn ctx_resource(&self, ctx: u64, kind: u32) -> CuResult<SmRun> {
        let c = self.contexts.get(&ctx).ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
        if kind != RESOURCE_TYPE_SM {
            return Err(CUDA_ERROR_INVALID_RESOURCE_TYPE);
        }
        match self.green.greens.values().find(|(c, _)| *c == ctx) {
            Some((_, runs)) => Ok(SmRun {
                device: c.device,
                first: runs.iter().map(|r| r.first).min().unwrap_or(0),
                count: runs.iter().map(|r| r.count).sum(),
                split: false,
            }),
            None => Ok(self.whole_device(c.device)),
        }
    }

    /// `cuDevSmResourceSplitByCount`: `groups` is the most wanted (ignored
    /// when only counting); answers the groups made (or their count) and
    /// the remainder.
    pub fn sm_split(
        &self,
        input: &SmRun,
        groups: Option<u32>,
        flags: u32,
        min_count: u32,
    ) -> CuResult<(u32, Vec<SmRun>, SmRun)> {
        self.device(input.device as i32)?;
        if flags & !SPLIT_FLAGS != 0 || min_count > input.count {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if input.split {
            return Err(CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION);
        }
        let (min, align) = SmRun::rules(flags);
        let size = min_count.div_ceil(align).saturating_mul(align).max(min);
        let possible = input.count / size;
        let made = groups.map_or(possible, |g| g.min(possible));
        let runs = (0..made)
            .map(|i| SmRun {
                device: input.device,
                first: input.first + i * size,
                count: size,
                split: true,
            })
            .collect::<Vec<_>>();
        let remainder = SmRun {
            device: input.device,
            first: input.first + made * size,
            count: input.count - made * size,
            split: true,
        };
        Ok((made, if groups.is_some() { runs } else { Vec::new() }, remainder))
    }

    pub fn resource_desc(&mut self, runs: Vec<SmRun>) -> CuResult<u64> {
        let device = runs.first().ok_or(CUDA_ERROR_INVALID_VALUE)?.device;
        self.device(device as i32)?;
        for (i, a) in runs.iter().enumerate() {
            let overlaps = runs[..i]
                .iter()
                .any(|b| a.first < b.first + b.count && b.first < a.first + a.count);
            if a.device != device || a.count == 0 || overlaps {
                return Err(CUDA_ERROR_INVALID_RESOURCE_CONFIGURATION);
            }
        }
        let h = self.handle();
        self.green.descs.insert(h, (device, runs));
        Ok(h)
    }

    pub fn green_create(&mut self, desc: u64, dev: i32, flags: u32) -> CuResult<u64> {
        let device = self.device(dev)?;
        let (desc_device, runs) = self.green.descs.get(&desc).cloned().ok_or(CUDA_ERROR_INVALID_VALUE)?;
        // CUDA 13.0 requires the default stream (13.1 also takes none).
        if flags != GREEN_CTX_DEFAULT_STREAM {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if desc_device != device {
            return Err(CUDA_ERROR_INVALID_DEVICE);
        }
        self.primary_retain(dev)?;
        let ctx = self.handle();
        self.new_context(ctx, device, 0, false);
        let green = self.handle();
        self.green.greens.insert(green, (ctx, runs));
        Ok(green)
    }

    pub fn green_context(&self, green: u64) -> CuResult<u64> {
        self.green
            .greens
            .get(&green)
            .map(|(c, _)| *c)
            .ok_or(CUDA_ERROR_INVALID_HANDLE)
    }

    pub fn green_destroy(&mut self, green: u64) -> CuResult<()> {
        let (ctx, _) = self.green.greens.remove(&green).ok_or(CUDA_ERROR_INVALID_HANDLE)?;
        let device = self
            .contexts
            .get(&ctx)
            .map(|c| c.device)
            .ok_or(CUDA_ERROR_INVALID_CONTEXT)?;
        let primary = self.devices[device].primary_handle;
        // The green context's memory is its primary context's.
        for base in self.allocs.bases_where(|a| a.ctx == ctx) {
            if let Some(a) = self.allocs.get_mut(base) {
                a.ctx = primary;
            }
        }
        self.drop_context(ctx);
        self.retired.insert(ctx);
        if current() == ctx {
            set_current(0);
        }
        self.primary_release(device as i32)
    }

    /// Whether an event of context `a` may record work of context `b`:
    /// the same context, or contexts of one device one of which is a green
    /// context's (an event made with the primary context current records a
    /// green context's work, as cudart's `cudaExecutionCtxRecordEvent` and
    /// PyTorch's green streams use it).
    pub fn events_may_cross(&self, a: u64, b: u64) -> bool {
        let device = |c| self.contexts.get(&c).map(|c| c.device);
        a == b
            || (device(a).is_some() && device(a) == device(b) && (self.is_green_context(a) || self.is_green_context(b)))
    }

    /// Whether a context is a green context's (cuCtxDestroy refuses it).
    pub fn is_green_context(&self, ctx: u64) -> bool {
        self.green.greens.values().any(|(c, _)| *c == ctx)
    }

    pub fn green_stream_create(&mut self, green: u64, flags: u32) -> CuResult<u64> {
        let ctx = self.green_context(green)?;
        self.healthy(ctx)?;
        if flags != STREAM_NON_BLOCKING {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        Ok(self.new_stream(ctx))
    }
}
