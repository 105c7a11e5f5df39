//! Stream memory operations (`cuStreamWriteValue32/64`,
//! `cuStreamWaitValue32/64`, `cuStreamBatchMemOp`): writes of a word and
//! waits on one, in stream order, streamed to the server like launches
//! (an error is kept for the next synchronise). The words must be device
//! memory: host memory is the client's, which the server's GPU cannot
//! reach.

use super::*;
use gpupool_proto::message::MemOp;

/// `CUstreamBatchMemOpType`.
const OP_WAIT_32: u32 = 1;
const OP_WRITE_32: u32 = 2;
const OP_FLUSH_REMOTE_WRITES: u32 = 3;
const OP_WAIT_64: u32 = 4;
const OP_WRITE_64: u32 = 5;
/// Bytes of one `CUstreamBatchMemOpParams`.
const BATCH_PARAMS_BYTES: usize = 48;
/// Operations one batch may hold at most.
const MAX_BATCH: u32 = 1 << 16;

fn send(mode: DefaultStream, stream: CUstream, ops: Vec<MemOp>) -> CuResult {
    let s = shim()?;
    let ctx = stream_ctx(s, stream)?;
    for op in &ops {
        let (MemOp::Write { addr, wide, .. } | MemOp::Wait { addr, wide, .. }) = *op;
        if s.find_device_range(addr, if wide { 8 } else { 4 }).is_none() {
            tracing::warn!(
                addr = format_args!("{addr:#x}"),
                "a stream memory operation outside the program's device memory (host memory is the client's); \
                 returning CUDA_ERROR_NOT_SUPPORTED"
            );
            return Err(CuError::NOT_SUPPORTED);
        }
    }
    if ops.is_empty() {
        return Ok(());
    }
    let sref = Shim::stream_ref(mode, handle(stream));
    managed::settle_for(s, sref)?;
    s.remote.post(&Request::StreamMemOps { ctx, stream: sref, ops }, &[])
}

pub unsafe fn stream_write_value32(
    mode: DefaultStream,
    stream: CUstream,
    addr: CUdeviceptr,
    value: u32,
    flags: u32,
) -> CuResult {
    let op = MemOp::Write {
        addr,
        value: value as u64,
        wide: false,
        flags,
    };
    send(mode, stream, vec![op])
}

pub unsafe fn stream_write_value64(
    mode: DefaultStream,
    stream: CUstream,
    addr: CUdeviceptr,
    value: u64,
    flags: u32,
) -> CuResult {
    let op = MemOp::Write {
        addr,
        value,
        wide: true,
        flags,
    };
    send(mode, stream, vec![op])
}

pub unsafe fn stream_wait_value32(
    mode: DefaultStream,
    stream: CUstream,
    addr: CUdeviceptr,
    value: u32,
    flags: u32,
) -> CuResult {
    let op = MemOp::Wait {
        addr,
        value: value as u64,
        wide: false,
        flags,
    };
    send(mode, stream, vec![op])
}

pub unsafe fn stream_wait_value64(
    mode: DefaultStream,
    stream: CUstream,
    addr: CUdeviceptr,
    value: u64,
    flags: u32,
) -> CuResult {
    let op = MemOp::Wait {
        addr,
        value,
        wide: true,
        flags,
    };
    send(mode, stream, vec![op])
}

/// `cuStreamBatchMemOp`: waits, writes and flushes (a flush of remote
/// writes has nothing to flush here: the server's GPU is the only writer).
pub unsafe fn stream_batch_mem_op(
    mode: DefaultStream,
    stream: CUstream,
    count: u32,
    params: *const c_void,
    flags: u32,
) -> CuResult {
    if flags != 0 || count == 0 || count > MAX_BATCH || params.is_null() {
        return Err(CuError::INVALID_VALUE);
    }
    // SAFETY: `params` holds `count` CUstreamBatchMemOpParams (API contract).
    let bytes = unsafe { std::slice::from_raw_parts(params.cast::<u8>(), count as usize * BATCH_PARAMS_BYTES) };
    let word = |b: &[u8], at: usize| u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]);
    let long = |b: &[u8], at: usize| {
        let mut v = [0u8; 8];
        v.copy_from_slice(&b[at..at + 8]);
        u64::from_ne_bytes(v)
    };
    let mut ops = Vec::with_capacity(count as usize);
    for p in bytes.chunks_exact(BATCH_PARAMS_BYTES) {
        // operation at 0, address at 8, value at 16, flags at 24.
        let (addr, flags) = (long(p, 8), word(p, 24));
        let op = match word(p, 0) {
            OP_WAIT_32 => MemOp::Wait {
                addr,
                value: word(p, 16) as u64,
                wide: false,
                flags,
            },
            OP_WAIT_64 => MemOp::Wait {
                addr,
                value: long(p, 16),
                wide: true,
                flags,
            },
            OP_WRITE_32 => MemOp::Write {
                addr,
                value: word(p, 16) as u64,
                wide: false,
                flags,
            },
            OP_WRITE_64 => MemOp::Write {
                addr,
                value: long(p, 16),
                wide: true,
                flags,
            },
            OP_FLUSH_REMOTE_WRITES if word(p, 4) == 0 => continue,
            other => {
                tracing::warn!(
                    operation = other,
                    "a stream memory operation gpupool does not offer; returning CUDA_ERROR_NOT_SUPPORTED"
                );
                return Err(CuError::NOT_SUPPORTED);
            }
        };
        ops.push(op);
    }
    send(mode, stream, ops)
}
