//! Entry points of graphs changed after they are built
//! (`driver::graphedit`): node parameters read back and set, nodes and
//! edges removed, clones, kernel node attributes.

use super::*;
use crate::driver::graphedit::ATTR_VALUE_BYTES;
use std::collections::HashMap;
use std::sync::Mutex;

/// Kernel nodes' parameters as last read back: the packed block and one
/// address into it per parameter, which the caller's `kernelParams`
/// points at until the next read of the same node.
static READ_BACK: Mutex<Option<ReadBack>> = Mutex::new(None);

/// Node -> (packed block, an address into it per parameter).
type ReadBack = HashMap<u64, (Box<[u8]>, Box<[usize]>)>;

/// `CU_MEMORYTYPE_DEVICE`.
const MEMORY_DEVICE: u32 = 2;

#[no_mangle]
pub unsafe extern "C" fn cuGraphKernelNodeGetParams_v2(
    node: *mut c_void,
    params: *mut CUDA_KERNEL_NODE_PARAMS,
) -> CUresult {
    ffi(|| {
        need(params)?;
        let k = driver::with(|d| d.graph_kernel_node_get(h(node)))?;
        let (func, shape, packed, layout, ctx) = (k.func, k.shape, k.params, k.layout, k.ctx);
        let mut block: Box<[u8]> = packed.into_boxed_slice();
        let base = block.as_mut_ptr() as usize;
        let args: Box<[usize]> = layout.iter().map(|(offset, _)| base + offset).collect();
        let mut kept = READ_BACK.lock().unwrap_or_else(|p| p.into_inner());
        let kept = kept.get_or_insert_with(HashMap::new);
        let (_, args) = &*kept.entry(h(node)).insert_entry((block, args)).into_mut();
        let p = CUDA_KERNEL_NODE_PARAMS {
            func: ptr(func),
            gridDimX: shape.grid[0],
            gridDimY: shape.grid[1],
            gridDimZ: shape.grid[2],
            blockDimX: shape.block[0],
            blockDimY: shape.block[1],
            blockDimZ: shape.block[2],
            sharedMemBytes: shape.shared_mem,
            kernelParams: if args.is_empty() {
                std::ptr::null_mut()
            } else {
                args.as_ptr() as *mut *mut c_void
            },
            extra: std::ptr::null_mut(),
            kern: std::ptr::null_mut(),
            ctx: ptr(ctx),
        };
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(params, p) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphKernelNodeSetParams_v2(
    node: *mut c_void,
    params: *const CUDA_KERNEL_NODE_PARAMS,
) -> CUresult {
    ffi(|| {
        need(params)?;
        // SAFETY: API contract.
        let p = unsafe { &*params };
        let f = if p.func.is_null() { h(p.kern) } else { h(p.func) };
        let cfg = LaunchConfig {
            grid: [p.gridDimX, p.gridDimY, p.gridDimZ],
            block: [p.blockDimX, p.blockDimY, p.blockDimZ],
            shared_mem: p.sharedMemBytes,
            stream: 0,
        };
        let (kp, extra) = (p.kernelParams, p.extra);
        driver::with(|d| {
            d.graph_kernel_node_set(h(node), f, &cfg, |params, buf| {
                // SAFETY: the node's parameters follow the launch contract.
                unsafe { pack_params(kp, extra, params, buf) }
            })
        })
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphMemsetNodeGetParams(
    node: *mut c_void,
    params: *mut CUDA_MEMSET_NODE_PARAMS,
) -> CUresult {
    ffi(|| {
        need(params)?;
        let (dst, value, elem_size, width) = driver::with(|d| d.graph_memset_node_get(h(node)))?;
        let p = CUDA_MEMSET_NODE_PARAMS {
            dst,
            pitch: 0,
            value,
            elementSize: elem_size,
            width: width as usize,
            height: 1,
        };
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(params, p) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphMemsetNodeSetParams(
    node: *mut c_void,
    params: *const CUDA_MEMSET_NODE_PARAMS,
) -> CUresult {
    ffi(|| {
        need(params)?;
        // SAFETY: API contract.
        let p = unsafe { params.read_unaligned() };
        if p.height != 1 {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        driver::with(|d| d.graph_memset_node_set(h(node), p.dst, p.value, p.elementSize, p.width as u64))
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphMemcpyNodeGetParams(node: *mut c_void, copy: *mut CudaMemcpy3D) -> CUresult {
    ffi(|| {
        need(copy)?;
        let (dst, src, n) = driver::with(|d| d.graph_copy_node_get(h(node)))?;
        let c = CudaMemcpy3D {
            src_memory_type: MEMORY_DEVICE,
            src_device: src,
            dst_memory_type: MEMORY_DEVICE,
            dst_device: dst,
            width_in_bytes: n as usize,
            height: 1,
            depth: 1,
            ..CudaMemcpy3D::default()
        };
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(copy, c) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphMemcpyNodeSetParams(node: *mut c_void, copy: *const CudaMemcpy3D) -> CUresult {
    ffi(|| {
        need(copy)?;
        // SAFETY: API contract.
        let c = unsafe { copy.read_unaligned() };
        // `CU_MEMORYTYPE_DEVICE` and `_UNIFIED`.
        let device = |t: u32| t == MEMORY_DEVICE || t == 4;
        if !device(c.src_memory_type) || !device(c.dst_memory_type) || c.height > 1 || c.depth > 1 {
            return Err(CUDA_ERROR_NOT_SUPPORTED);
        }
        let src = c
            .src_device
            .checked_add(c.src_x_in_bytes as u64)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        let dst = c
            .dst_device
            .checked_add(c.dst_x_in_bytes as u64)
            .ok_or(CUDA_ERROR_INVALID_VALUE)?;
        driver::with(|d| d.graph_copy_node_set(h(node), dst, src, c.width_in_bytes as u64))
    })
}

unsafe fn event_of(node: *mut c_void, event: *mut CUevent, record: bool) -> CUresult {
    ffi(|| {
        need(event)?;
        let e = driver::with(|d| d.graph_event_node_get(h(node), record))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(event, ptr(e)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphEventRecordNodeGetEvent(node: *mut c_void, event: *mut CUevent) -> CUresult {
    // SAFETY: the caller's contract.
    unsafe { event_of(node, event, true) }
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphEventWaitNodeGetEvent(node: *mut c_void, event: *mut CUevent) -> CUresult {
    // SAFETY: the caller's contract.
    unsafe { event_of(node, event, false) }
}

#[no_mangle]
pub extern "C" fn cuGraphEventRecordNodeSetEvent(node: *mut c_void, event: CUevent) -> CUresult {
    ffi(|| driver::with(|d| d.graph_event_node_set(h(node), h(event), true)))
}

#[no_mangle]
pub extern "C" fn cuGraphEventWaitNodeSetEvent(node: *mut c_void, event: CUevent) -> CUresult {
    ffi(|| driver::with(|d| d.graph_event_node_set(h(node), h(event), false)))
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphChildGraphNodeGetGraph(node: *mut c_void, graph: *mut CUgraph) -> CUresult {
    ffi(|| {
        need(graph)?;
        let g = driver::with(|d| d.graph_child_graph(h(node)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(graph, ptr(g)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphMemAllocNodeGetParams(
    node: *mut c_void,
    params: *mut CudaMemAllocNodeParams,
) -> CUresult {
    ffi(|| {
        need(params)?;
        let (dptr, size, device) = driver::with(|d| d.graph_mem_alloc_node_get(h(node)))?;
        let p = CudaMemAllocNodeParams {
            // Pinned memory of the device, no handle types, no access for
            // others: the only allocation nodes made here.
            alloc_type: 1,
            handle_types: 0,
            location_type: 1,
            location_id: device,
            rest_of_pool_props: [0; 72],
            access_descs: std::ptr::null(),
            access_desc_count: 0,
            bytesize: size as usize,
            dptr,
        };
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(params, p) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphMemFreeNodeGetParams(node: *mut c_void, dptr: *mut CUdeviceptr) -> CUresult {
    ffi(|| {
        need(dptr)?;
        let p = driver::with(|d| d.graph_mem_free_node_get(h(node)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(dptr, p) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphHostNodeGetParams(node: *mut c_void, params: *mut CudaHostNodeParams) -> CUresult {
    ffi(|| {
        need(params)?;
        let (func, data) = driver::with(|d| d.graph_host_node_get(h(node)))?;
        let p = CudaHostNodeParams {
            func: Some(func),
            user_data: data as *mut c_void,
        };
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(params, p) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphHostNodeSetParams(node: *mut c_void, params: *const CudaHostNodeParams) -> CUresult {
    ffi(|| {
        need(params)?;
        // SAFETY: API contract.
        let p = unsafe { params.read() };
        let func = p.func.ok_or(CUDA_ERROR_INVALID_VALUE)?;
        driver::with(|d| d.graph_host_node_set(h(node), func, p.user_data as usize))
    })
}

#[no_mangle]
pub extern "C" fn cuGraphDestroyNode(node: *mut c_void) -> CUresult {
    ffi(|| {
        driver::with(|d| d.graph_destroy_node(h(node)))?;
        let mut kept = READ_BACK.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(k) = kept.as_mut() {
            k.remove(&h(node));
        }
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphRemoveDependencies_v2(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    edges: *const u64,
    n: usize,
) -> CUresult {
    // SAFETY: the caller's contract.
    unsafe { remove_dependencies(graph, from, to, edges, n) }
}

/// Both forms of `cuGraphRemoveDependencies`.
unsafe fn remove_dependencies(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    edges: *const u64,
    n: usize,
) -> CUresult {
    ffi(|| {
        // SAFETY: API contract: `n` of each, edge data optional.
        let (from, to) = unsafe { (nodes(from, n)?, nodes(to, n)?) };
        let data = if edges.is_null() || n == 0 {
            Vec::new()
        } else {
            // SAFETY: as above.
            unsafe { std::slice::from_raw_parts(edges, n) }.to_vec()
        };
        driver::with(|d| d.graph_remove_dependencies(h(graph), &from, &to, &data))
    })
}

/// `cuGraphRemoveDependencies`, CUDA 12.2's form without edge data.
#[no_mangle]
pub unsafe extern "C" fn cuGraphRemoveDependencies(
    graph: *mut c_void,
    from: *const *mut c_void,
    to: *const *mut c_void,
    n: usize,
) -> CUresult {
    // SAFETY: the caller's contract, with default edges.
    unsafe { remove_dependencies(graph, from, to, std::ptr::null(), n) }
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphClone(clone: *mut CUgraph, graph: *mut c_void) -> CUresult {
    ffi(|| {
        need(clone)?;
        let c = driver::with(|d| d.graph_clone(h(graph)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(clone, ptr(c)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphNodeFindInClone(
    found: *mut *mut c_void,
    node: *mut c_void,
    clone: *mut c_void,
) -> CUresult {
    ffi(|| {
        need(found)?;
        let n = driver::with(|d| d.graph_find_in_clone(h(node), h(clone)))?;
        // SAFETY: non-null and valid for writes (API contract).
        unsafe { out(found, ptr(n)) }
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphKernelNodeGetAttribute(node: *mut c_void, attr: u32, value: *mut u8) -> CUresult {
    ffi(|| {
        need(value)?;
        let v = driver::with(|d| d.graph_kernel_node_attr(h(node), attr, None))?;
        // SAFETY: `value` is a `CUlaunchAttributeValue` (API contract).
        unsafe { std::ptr::copy_nonoverlapping(v.as_ptr(), value, ATTR_VALUE_BYTES) };
        Ok(())
    })
}

#[no_mangle]
pub unsafe extern "C" fn cuGraphKernelNodeSetAttribute(node: *mut c_void, attr: u32, value: *const u8) -> CUresult {
    ffi(|| {
        need(value)?;
        let mut v = [0u8; ATTR_VALUE_BYTES];
        // SAFETY: `value` is a `CUlaunchAttributeValue` (API contract).
        unsafe { std::ptr::copy_nonoverlapping(value, v.as_mut_ptr(), ATTR_VALUE_BYTES) };
        driver::with(|d| d.graph_kernel_node_attr(h(node), attr, Some(v))).map(drop)
    })
}

#[no_mangle]
pub extern "C" fn cuGraphKernelNodeCopyAttributes(dst: *mut c_void, src: *mut c_void) -> CUresult {
    ffi(|| driver::with(|d| d.graph_kernel_node_copy_attrs(h(dst), h(src))))
}
