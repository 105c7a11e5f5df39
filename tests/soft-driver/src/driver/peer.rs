//! Peer access between the double's devices (`cuDeviceCanAccessPeer`,
//! `cuDeviceGetP2PAttribute`, `cuCtxEnablePeerAccess`,
//! `cuCtxDisablePeerAccess`), as a machine whose GPUs are linked each to
//! each (NVLink) models it; `GPUPOOL_SOFT_PEER_ACCESS=0` models one whose
//! GPUs are not (no device can access another).
//!
//! The double's devices all live in this process's memory, so a kernel
//! could touch any of them. It is held to what a GPU may address: memory
//! of its own context's device, and of a device one of whose contexts its
//! context was given access to. Anything else faults with
//! `CUDA_ERROR_ILLEGAL_ADDRESS`, as a GPU's access to a peer it was not
//! given does. Copies between devices need no peer access (the driver
//! stages them), as with the driver. A pool's memory is also reached from
//! the devices given access to the pool (`cuMemPoolSetAccess`).

use super::*;

/// `CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK`.
const PERFORMANCE_RANK: i32 = 1;
/// `CU_DEVICE_P2P_ATTRIBUTE_ONLY_PARTIAL_NATIVE_ATOMIC_SUPPORTED`, the last.
const ONLY_PARTIAL_NATIVE_ATOMIC: i32 = 5;

impl Driver {
    /// `cuDeviceCanAccessPeer`: yes for two different devices of a linked
    /// machine.
    pub fn can_access_peer(&self, dev: i32, peer: i32) -> CuResult<bool> {
        let (d, p) = (self.device(dev)?, self.device(peer)?);
        Ok(self.peer_links && d != p)
    }

    /// `cuDeviceGetP2PAttribute`: a linked pair has rank 0, access, native
    /// atomics and array access; an unlinked pair none of them.
    pub fn p2p_attribute(&self, attrib: i32, src: i32, dst: i32) -> CuResult<i32> {
        let (s, d) = (self.device(src)?, self.device(dst)?);
        if s == d {
            return Err(CUDA_ERROR_INVALID_DEVICE);
        }
        match attrib {
            PERFORMANCE_RANK | ONLY_PARTIAL_NATIVE_ATOMIC => Ok(0),
            2..=4 => Ok(self.peer_links as i32),
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// `cuCtxEnablePeerAccess`: the current context's work may address the
    /// memory of `peer`'s device from now on.
    pub fn ctx_enable_peer_access(&mut self, peer: u64, flags: u32) -> CuResult<()> {
        let ctx = self.current_ctx()?;
        let Some(p) = self.contexts.get(&peer) else {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        };
        if peer == ctx {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        if flags != 0 {
            return Err(CUDA_ERROR_INVALID_VALUE);
        }
        if !self.peer_links || p.device == self.ctx_device(ctx) {
            return Err(CUDA_ERROR_PEER_ACCESS_UNSUPPORTED);
        }
        if !self.peers.insert((ctx, peer)) {
            return Err(CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED);
        }
        Ok(())
    }

    /// `cuCtxDisablePeerAccess`.
    pub fn ctx_disable_peer_access(&mut self, peer: u64) -> CuResult<()> {
        let ctx = self.current_ctx()?;
        if !self.contexts.contains_key(&peer) {
            return Err(CUDA_ERROR_INVALID_CONTEXT);
        }
        if self.peers.remove(&(ctx, peer)) {
            Ok(())
        } else {
            Err(CUDA_ERROR_PEER_ACCESS_NOT_ENABLED)
        }
    }

    /// The devices whose memory work of `ctx` may address, one bit each:
    /// its own, and those it was given access to.
    pub(super) fn reach(&self, ctx: u64) -> u64 {
        let own = 1u64 << self.ctx_device(ctx);
        self.peers
            .iter()
            .filter(|(c, _)| *c == ctx)
            .filter_map(|(_, p)| self.contexts.get(p))
            .fold(own, |r, p| r | 1 << p.device)
    }

    /// `cuMemPoolSetAccess` for one device: the pool's own always reads and
    /// writes it (`CUDA_ERROR_INVALID_VALUE` for anything else); another
    /// linked device gets access (`flags` 1 or 3) or loses it (0).
    pub fn mem_pool_set_access(&mut self, pool: u64, dev: i32, flags: u32) -> CuResult<()> {
        let d = self.device(dev)?;
        let linked = self.peer_links;
        let p = self.pools.get_mut(&pool).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        match flags {
            3 if d == p.device => Ok(()),
            _ if d == p.device => Err(CUDA_ERROR_INVALID_VALUE),
            0 | 1 | 3 if !linked => Err(CUDA_ERROR_INVALID_DEVICE),
            0 => {
                p.access &= !(1 << d);
                Ok(())
            }
            1 | 3 => {
                p.access |= 1 << d;
                Ok(())
            }
            _ => Err(CUDA_ERROR_INVALID_VALUE),
        }
    }

    /// `cuMemPoolGetAccess`: read-write for the pool's own device and those
    /// given access, none for the others.
    pub fn mem_pool_get_access(&self, pool: u64, dev: i32) -> CuResult<u32> {
        let d = self.device(dev)?;
        let p = self.pools.get(&pool).ok_or(CUDA_ERROR_INVALID_VALUE)?;
        Ok(if d == p.device || p.access & (1 << d) != 0 {
            3
        } else {
            0
        })
    }

    /// Forget the access given to or by a context that goes.
    pub(super) fn forget_peers(&mut self, ctx: u64) {
        self.peers.retain(|&(c, p)| c != ctx && p != ctx);
    }
}
