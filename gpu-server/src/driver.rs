//! The only place that calls the real driver: `libcuda.so.1` (or the
//! software driver test double) loaded with libloading. Each entry point is a
//! typed function pointer; callers get `Result`s with the driver's status.

// The entry points mirror the driver API's signatures, however long.
#![allow(non_snake_case, clippy::too_many_arguments)]

use std::ffi::{c_char, c_void, CStr};
use std::path::Path;
use thiserror::Error;

/// A driver status other than success.
pub type Status = u32;
pub type DriverResult<T = ()> = Result<T, Status>;

/// `CUDA_ERROR_NOT_SUPPORTED`: what a call of an entry point the driver
/// lacks answers.
pub const NOT_SUPPORTED: Status = 801;

pub type CUdeviceptr = u64;
pub type Ptr = *mut c_void;
/// `CUhostFn`.
pub type HostFn = unsafe extern "C" fn(Ptr);

/// Failure to load the driver library.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("cannot load the CUDA driver {path}: {source}")]
    Library { path: String, source: libloading::Error },
    #[error("the CUDA driver {path} lacks {symbol}: {source}")]
    Symbol {
        path: String,
        symbol: &'static str,
        source: libloading::Error,
    },
    #[error("the CUDA driver {path} did not start: cuInit failed: {name} ({status})")]
    Init { path: String, status: Status, name: String },
}

/// `CUlaunchConfig` as the driver lays it out.
#[repr(C)]
pub struct LaunchConfig {
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
    pub stream: Ptr,
    pub attrs: *const LaunchAttribute,
    pub num_attrs: u32,
}

/// `CUlaunchAttribute`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct LaunchAttribute {
    pub id: u32,
    pub pad: [u8; 4],
    pub value: [u8; 64],
}

/// `CUmemPoolProps` as the driver lays it out (88 bytes).
#[repr(C)]
pub struct MemPoolProps {
    /// `CUmemAllocationType`: 1, pinned (the only one).
    pub alloc_type: u32,
    /// `CUmemAllocationHandleType` bits: 0, none; 1, a file descriptor.
    pub handle_types: u32,
    /// `CUmemLocation`: type 1 (device) and the device ordinal.
    pub location_type: u32,
    pub location_id: i32,
    pub win32_security_attributes: Ptr,
    pub max_size: usize,
    pub usage: u16,
    pub reserved: [u8; 54],
}

/// `CUdevResource` (144 bytes): the driver's own, kept whole.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct DevResource(pub [u64; 18]);

impl DevResource {
    pub const EMPTY: DevResource = DevResource([0; 18]);
    /// `CU_DEV_RESOURCE_TYPE_SM`.
    pub const TYPE_SM: u32 = 1;

    fn word(&self, i: usize) -> u32 {
        let w = self.0[i / 2];
        if i.is_multiple_of(2) {
            w as u32
        } else {
            (w >> 32) as u32
        }
    }

    pub fn kind(&self) -> u32 {
        self.word(0)
    }

    /// The public fields of an SM resource (`CUdevSmResource`, at byte 96):
    /// SM count, minimum partition, co-scheduled alignment, flags and
    /// locality domain.
    pub fn sm_fields(&self) -> [u32; 5] {
        [
            self.word(24),
            self.word(25),
            self.word(26),
            self.word(27),
            self.word(28),
        ]
    }
}

/// `CUmemAllocationProp` (32 bytes) for pinned device memory.
#[repr(C)]
pub struct MemAllocationProp {
    /// `CU_MEM_ALLOCATION_TYPE_PINNED`: 1.
    pub alloc_type: u32,
    pub requested_handle_types: u32,
    /// `CU_MEM_LOCATION_TYPE_DEVICE` (1) and the ordinal.
    pub location_type: u32,
    pub location_id: i32,
    pub win32_handle_meta_data: Ptr,
    pub compression_type: u8,
    pub gpu_direct_rdma_capable: u8,
    pub usage: u16,
    pub reserved: [u8; 4],
}

impl MemPoolProps {
    /// Pinned memory on `device`, exportable as `handle_types` says, up to
    /// `max_size` bytes (0: no limit).
    pub fn device(device: i32, max_size: usize, handle_types: u32) -> MemPoolProps {
        MemPoolProps {
            alloc_type: 1,
            handle_types,
            location_type: 1,
            location_id: device,
            win32_security_attributes: std::ptr::null_mut(),
            max_size,
            usage: 0,
            reserved: [0; 54],
        }
    }
}

impl MemAllocationProp {
    /// Pinned memory on `device`, shareable as `handle_types` says.
    pub fn device(device: i32, handle_types: u32) -> MemAllocationProp {
        MemAllocationProp {
            alloc_type: 1,
            requested_handle_types: handle_types,
            location_type: 1,
            location_id: device,
            win32_handle_meta_data: std::ptr::null_mut(),
            compression_type: 0,
            gpu_direct_rdma_capable: 0,
            usage: 0,
            reserved: [0; 4],
        }
    }
}

/// `CUmemAccessDesc`: a device location and its `CUmemAccess_flags`.
#[repr(C)]
pub struct MemAccessDesc {
    pub location_type: u32,
    pub location_id: i32,
    pub flags: u32,
}

/// `CUmemorytype` values a 2D copy names.
pub const MEMORYTYPE_HOST: u32 = 1;
pub const MEMORYTYPE_DEVICE: u32 = 2;

/// `CUDA_MEMCPY2D` as the driver lays it out.
#[repr(C)]
pub struct Memcpy2D {
    pub src_x_in_bytes: usize,
    pub src_y: usize,
    pub src_memory_type: u32,
    pub src_host: *const c_void,
    pub src_device: CUdeviceptr,
    pub src_array: Ptr,
    pub src_pitch: usize,
    pub dst_x_in_bytes: usize,
    pub dst_y: usize,
    pub dst_memory_type: u32,
    pub dst_host: Ptr,
    pub dst_device: CUdeviceptr,
    pub dst_array: Ptr,
    pub dst_pitch: usize,
    pub width_in_bytes: usize,
    pub height: usize,
}

/// One side of a 2D copy: host memory or a device address, with its pitch.
#[derive(Clone, Copy)]
pub enum Side {
    Host(*mut c_void, usize),
    Device(CUdeviceptr, usize),
}

impl Memcpy2D {
    /// A copy of `height` rows of `width` bytes from `src` to `dst`.
    pub fn new(src: Side, dst: Side, width: usize, height: usize) -> Memcpy2D {
        let mut c = Memcpy2D {
            src_x_in_bytes: 0,
            src_y: 0,
            src_memory_type: 0,
            src_host: std::ptr::null(),
            src_device: 0,
            src_array: std::ptr::null_mut(),
            src_pitch: 0,
            dst_x_in_bytes: 0,
            dst_y: 0,
            dst_memory_type: 0,
            dst_host: std::ptr::null_mut(),
            dst_device: 0,
            dst_array: std::ptr::null_mut(),
            dst_pitch: 0,
            width_in_bytes: width,
            height,
        };
        match src {
            Side::Host(p, pitch) => {
                (c.src_memory_type, c.src_host, c.src_pitch) = (MEMORYTYPE_HOST, p.cast_const(), pitch)
            }
            Side::Device(p, pitch) => (c.src_memory_type, c.src_device, c.src_pitch) = (MEMORYTYPE_DEVICE, p, pitch),
        }
        match dst {
            Side::Host(p, pitch) => (c.dst_memory_type, c.dst_host, c.dst_pitch) = (MEMORYTYPE_HOST, p, pitch),
            Side::Device(p, pitch) => (c.dst_memory_type, c.dst_device, c.dst_pitch) = (MEMORYTYPE_DEVICE, p, pitch),
        }
        c
    }
}

/// `CUDA_ARRAY3D_DESCRIPTOR`.
#[repr(C)]
pub struct Array3DDesc {
    pub width: usize,
    pub height: usize,
    pub depth: usize,
    pub format: u32,
    pub channels: u32,
    pub flags: u32,
}

/// `CUDA_KERNEL_NODE_PARAMS` (the `_v2` layout: a kernel, or a function,
/// and the context it runs in).
#[repr(C)]
pub struct KernelNodeParams {
    pub func: Ptr,
    pub grid: [u32; 3],
    pub block: [u32; 3],
    pub shared_mem: u32,
    pub params: *mut Ptr,
    pub extra: *mut Ptr,
    pub kern: Ptr,
    pub ctx: Ptr,
}

/// `CUgraphExecUpdateResultInfo`.
#[repr(C)]
pub struct GraphExecUpdateResultInfo {
    pub result: u32,
    pub error_node: Ptr,
    pub error_from_node: Ptr,
}

/// `CUDA_MEMSET_NODE_PARAMS`.
#[repr(C)]
pub struct MemsetNodeParams {
    pub dst: CUdeviceptr,
    pub pitch: usize,
    pub value: u32,
    pub elem_size: u32,
    pub width: usize,
    pub height: usize,
}

/// `CUDA_MEMCPY3D` as the driver lays it out.
#[repr(C)]
pub struct Memcpy3D {
    pub src_x_in_bytes: usize,
    pub src_y: usize,
    pub src_z: usize,
    pub src_lod: usize,
    pub src_memory_type: u32,
    pub src_host: *const c_void,
    pub src_device: CUdeviceptr,
    pub src_array: Ptr,
    pub reserved0: Ptr,
    pub src_pitch: usize,
    pub src_height: usize,
    pub dst_x_in_bytes: usize,
    pub dst_y: usize,
    pub dst_z: usize,
    pub dst_lod: usize,
    pub dst_memory_type: u32,
    pub dst_host: Ptr,
    pub dst_device: CUdeviceptr,
    pub dst_array: Ptr,
    pub reserved1: Ptr,
    pub dst_pitch: usize,
    pub dst_height: usize,
    pub width_in_bytes: usize,
    pub height: usize,
    pub depth: usize,
}

/// One end of a copy that may involve a CUDA array: host memory or device
/// memory with its pitch, or byte `x` of row `y` of slice `z` of an array.
#[derive(Clone, Copy)]
pub enum End {
    Host(*mut c_void, usize),
    Device(CUdeviceptr, usize),
    Array(Ptr, usize, usize, usize),
}

/// `CU_MEMORYTYPE_ARRAY`.
const MEMORYTYPE_ARRAY: u32 = 3;

impl Memcpy3D {
    /// A copy of `height` rows of `width` bytes, one slice, from `src` to
    /// `dst`.
    pub fn rows(src: End, dst: End, width: usize, height: usize) -> Memcpy3D {
        // SAFETY: every field is an integer or a raw pointer, for which all
        // zeroes is a valid value (null, 0).
        let mut c: Memcpy3D = unsafe { std::mem::zeroed() };
        (c.width_in_bytes, c.height, c.depth) = (width, height, 1);
        match src {
            End::Host(p, pitch) => {
                (c.src_memory_type, c.src_host, c.src_pitch) = (MEMORYTYPE_HOST, p.cast_const(), pitch)
            }
            End::Device(p, pitch) => (c.src_memory_type, c.src_device, c.src_pitch) = (MEMORYTYPE_DEVICE, p, pitch),
            End::Array(a, x, y, z) => {
                (c.src_memory_type, c.src_array, c.src_x_in_bytes, c.src_y, c.src_z) = (MEMORYTYPE_ARRAY, a, x, y, z)
            }
        }
        match dst {
            End::Host(p, pitch) => (c.dst_memory_type, c.dst_host, c.dst_pitch) = (MEMORYTYPE_HOST, p, pitch),
            End::Device(p, pitch) => (c.dst_memory_type, c.dst_device, c.dst_pitch) = (MEMORYTYPE_DEVICE, p, pitch),
            End::Array(a, x, y, z) => {
                (c.dst_memory_type, c.dst_array, c.dst_x_in_bytes, c.dst_y, c.dst_z) = (MEMORYTYPE_ARRAY, a, x, y, z)
            }
        }
        // One slice: the slice heights only need to cover the rows.
        (c.src_height, c.dst_height) = (height, height);
        c
    }
}

/// `CUDA_RESOURCE_DESC` (144 bytes): the resource type, then its union of
/// 128 bytes, then flags.
#[repr(C)]
pub struct ResourceDesc {
    pub res_type: u32,
    pub res: [u64; 16],
    pub flags: u32,
}

/// `CUDA_TEXTURE_DESC` (104 bytes).
#[repr(C)]
pub struct TextureDesc {
    pub address_mode: [u32; 3],
    pub filter_mode: u32,
    pub flags: u32,
    pub max_anisotropy: u32,
    pub mipmap_filter_mode: u32,
    pub mipmap_level_bias: f32,
    pub min_mipmap_level_clamp: f32,
    pub max_mipmap_level_clamp: f32,
    pub border_color: [f32; 4],
    pub reserved: [i32; 12],
}

/// `CUipcMemHandle` and `CUipcEventHandle`: 64 bytes the driver makes,
/// passed by value.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct IpcHandle {
    pub reserved: [u8; 64],
}

/// `CUDA_HOST_NODE_PARAMS`.
#[repr(C)]
pub struct HostNodeParams {
    pub func: HostFn,
    pub user_data: Ptr,
}

/// `CUDA_MEM_ALLOC_NODE_PARAMS` (120 bytes).
#[repr(C)]
pub struct MemAllocNodeParams {
    pub pool_props: MemPoolProps,
    pub access_descs: *const c_void,
    pub access_desc_count: usize,
    pub bytesize: usize,
    pub dptr: CUdeviceptr,
}

/// `CUgraphNodeParams` (256 bytes): a node's type and its parameters in a
/// 232-byte union, for `cuGraphAddNode_v2` (the nodes made with edge data
/// or none of their own call: kernels with programmatic edges,
/// conditional nodes).
#[repr(C)]
pub struct GraphNodeParams<T> {
    pub node_type: u32,
    pub reserved0: [i32; 3],
    pub params: T,
    pub rest_of_union: [u8; 232 - 72],
    pub reserved2: i64,
}

/// `CUDA_CONDITIONAL_NODE_PARAMS`: the handle, its kind and body count,
/// the body array the driver writes back, and the context.
#[repr(C)]
pub struct ConditionalNodeParams {
    pub handle: u64,
    pub kind: u32,
    pub size: u32,
    pub bodies: *mut Ptr,
    pub ctx: Ptr,
    pub pad: [u64; 5],
}

/// `CU_GRAPH_NODE_TYPE_KERNEL`, `CU_GRAPH_NODE_TYPE_CONDITIONAL`.
pub const NODE_TYPE_KERNEL: u32 = 0;
pub const NODE_TYPE_CONDITIONAL: u32 = 13;

impl<T> GraphNodeParams<T> {
    /// A node of `node_type` with `params` (72 bytes, the kernel and
    /// conditional layouts' size here), the rest of the union zero.
    pub fn new(node_type: u32, params: T) -> Self {
        const { assert!(std::mem::size_of::<T>() == 72) };
        GraphNodeParams {
            node_type,
            reserved0: [0; 3],
            params,
            rest_of_union: [0; 232 - 72],
            reserved2: 0,
        }
    }
}

const _: () = assert!(std::mem::size_of::<KernelNodeParams>() == 72);
const _: () = assert!(std::mem::size_of::<GraphNodeParams<KernelNodeParams>>() == 256);
const _: () = assert!(std::mem::size_of::<GraphNodeParams<ConditionalNodeParams>>() == 256);
const _: () = assert!(std::mem::size_of::<Memcpy3D>() == 200);
const _: () = assert!(std::mem::size_of::<MemAllocNodeParams>() == 120);
const _: () = assert!(std::mem::size_of::<ResourceDesc>() == 144);
const _: () = assert!(std::mem::size_of::<TextureDesc>() == 104);
const _: () = assert!(std::mem::size_of::<Array3DDesc>() == 40);

macro_rules! driver_api {
    (
        required {
            $( $name:ident ( $($arg:ident : $ty:ty),* ); )*
        }
        optional {
            $( $oname:ident ( $($oarg:ident : $oty:ty),* ); )*
        }
    ) => {
        /// Typed entry points of the loaded driver; the optional ones where
        /// it has them.
        struct Fns {
            $( $name: unsafe extern "C" fn($($ty),*) -> Status, )*
            $( $oname: Option<unsafe extern "C" fn($($oty),*) -> Status>, )*
        }

        /// The entry points a driver may lack (newer than CUDA 12.2's).
        pub const OPTIONAL_ENTRY_POINTS: &[&str] = &[$( stringify!($oname), )*];

        impl Fns {
            fn load(lib: &libloading::Library, path: &str) -> Result<Fns, LoadError> {
                Ok(Fns {
                    $( $name: {
                        // SAFETY: the symbol has this C signature in every
                        // driver that exports it (CUDA driver API, 12.2+).
                        let sym = unsafe {
                            lib.get::<unsafe extern "C" fn($($ty),*) -> Status>(concat!(stringify!($name), "\0").as_bytes())
                        }.map_err(|source| LoadError::Symbol { path: path.to_string(), symbol: stringify!($name), source })?;
                        *sym
                    }, )*
                    $( $oname: {
                        // SAFETY: as above, for the drivers that export it.
                        let sym = unsafe {
                            lib.get::<unsafe extern "C" fn($($oty),*) -> Status>(concat!(stringify!($oname), "\0").as_bytes())
                        };
                        sym.ok().map(|s| *s)
                    }, )*
                })
            }

            /// The optional entry points this driver lacks.
            fn missing(&self) -> Vec<&'static str> {
                let mut out = Vec::new();
                $( if self.$oname.is_none() { out.push(stringify!($oname)); } )*
                out
            }
        }

        impl Driver {
            $(
                /// Calls the driver's entry point of the same name.
                ///
                /// # Safety
                /// Pointer arguments must be valid as the driver API requires.
                #[inline]
                pub unsafe fn $name(&self, $($arg: $ty),*) -> DriverResult {
                    // SAFETY: the caller upholds the driver API's contract.
                    status(unsafe { (self.fns.$name)($($arg),*) })
                }
            )*
            $(
                /// Calls the driver's entry point of the same name;
                /// `CUDA_ERROR_NOT_SUPPORTED` where the driver lacks it.
                ///
                /// # Safety
                /// Pointer arguments must be valid as the driver API requires.
                #[inline]
                pub unsafe fn $oname(&self, $($oarg: $oty),*) -> DriverResult {
                    let f = self.fns.$oname.ok_or(NOT_SUPPORTED)?;
                    // SAFETY: the caller upholds the driver API's contract.
                    status(unsafe { f($($oarg),*) })
                }
            )*
        }
    };
}

driver_api! {
    required {
        cuInit(flags: u32);
        cuGetErrorName(error: Status, name: *mut *const c_char);
        cuGetErrorString(error: Status, text: *mut *const c_char);
        cuDriverGetVersion(version: *mut i32);
        cuDeviceGetCount(count: *mut i32);
        cuDeviceGet(device: *mut i32, ordinal: i32);
        cuDeviceGetName(name: *mut c_char, len: i32, device: i32);
        cuDeviceGetUuid_v2(uuid: *mut u8, device: i32);
        cuDeviceTotalMem_v2(bytes: *mut usize, device: i32);
        cuDeviceGetAttribute(value: *mut i32, attribute: i32, device: i32);
        cuDeviceCanAccessPeer(can: *mut i32, device: i32, peer: i32);
        cuDeviceGetP2PAttribute(value: *mut i32, attribute: i32, src: i32, dst: i32);
        cuCtxEnablePeerAccess(peer: Ptr, flags: u32);
        cuCtxDisablePeerAccess(peer: Ptr);
        cuDevicePrimaryCtxRetain(ctx: *mut Ptr, device: i32);
        cuDevicePrimaryCtxRelease_v2(device: i32);
        cuDevicePrimaryCtxSetFlags_v2(device: i32, flags: u32);
        cuDevicePrimaryCtxReset_v2(device: i32);
        cuCtxCreate_v2(ctx: *mut Ptr, flags: u32, device: i32);
        cuCtxDestroy_v2(ctx: Ptr);
        cuCtxSetCurrent(ctx: Ptr);
        cuCtxSynchronize();
        cuCtxGetLimit(value: *mut usize, limit: i32);
        cuCtxSetLimit(limit: i32, value: usize);
        cuModuleLoadData(module: *mut Ptr, image: *const c_void);
        cuModuleUnload(module: Ptr);
        cuModuleGetFunction(function: *mut Ptr, module: Ptr, name: *const c_char);
        cuModuleGetGlobal_v2(ptr: *mut CUdeviceptr, bytes: *mut usize, module: Ptr, name: *const c_char);
        cuLibraryLoadData(library: *mut Ptr, code: *const c_void, jit_options: *mut i32, jit_values: *mut Ptr, num_jit: u32, library_options: *mut i32, library_values: *mut Ptr, num_library: u32);
        cuLibraryUnload(library: Ptr);
        cuLibraryGetKernel(kernel: *mut Ptr, library: Ptr, name: *const c_char);
        cuLibraryGetGlobal(ptr: *mut CUdeviceptr, bytes: *mut usize, library: Ptr, name: *const c_char);
        cuLibraryGetManaged(ptr: *mut CUdeviceptr, bytes: *mut usize, library: Ptr, name: *const c_char);
        cuLibraryGetModule(module: *mut Ptr, library: Ptr);
        cuKernelGetFunction(function: *mut Ptr, kernel: Ptr);
        cuKernelGetAttribute(value: *mut i32, attribute: i32, kernel: Ptr, device: i32);
        cuKernelSetAttribute(attribute: i32, value: i32, kernel: Ptr, device: i32);
        cuFuncGetAttribute(value: *mut i32, attribute: i32, function: Ptr);
        cuFuncSetAttribute(function: Ptr, attribute: i32, value: i32);
        cuFuncSetCacheConfig(function: Ptr, config: u32);
        cuKernelSetCacheConfig(kernel: Ptr, config: u32, device: i32);
        cuCtxSetCacheConfig(config: u32);
        cuStreamGetAttribute(stream: Ptr, attr: u32, value: *mut c_void);
        cuStreamSetAttribute(stream: Ptr, attr: u32, value: *const c_void);
        cuStreamCopyAttributes(dst: Ptr, src: Ptr);
        cuTensorMapEncodeTiled(map: *mut c_void, data_type: u32, rank: u32, address: *mut c_void, dims: *const u64, strides: *const u64, box_dims: *const u32, element_strides: *const u32, interleave: u32, swizzle: u32, l2_promotion: u32, oob_fill: u32);
        cuTensorMapEncodeIm2col(map: *mut c_void, data_type: u32, rank: u32, address: *mut c_void, dims: *const u64, strides: *const u64, lower: *const i32, upper: *const i32, channels: u32, pixels: u32, element_strides: *const u32, interleave: u32, swizzle: u32, l2_promotion: u32, oob_fill: u32);
        cuTensorMapReplaceAddress(map: *mut c_void, address: *mut c_void);
        cuLinkCreate_v2(count: u32, options: *mut u32, values: *mut Ptr, link: *mut Ptr);
        cuLinkAddData_v2(link: Ptr, kind: u32, data: Ptr, size: usize, name: *const c_char, count: u32, options: *mut u32, values: *mut Ptr);
        cuLinkComplete(link: Ptr, image: *mut Ptr, size: *mut usize);
        cuLinkDestroy(link: Ptr);
        cuGraphCreate(graph: *mut Ptr, flags: u32);
        cuGraphAddEmptyNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize);
        cuGraphAddKernelNode_v2(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, params: *const KernelNodeParams);
        cuGraphAddMemsetNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, params: *const MemsetNodeParams, ctx: Ptr);
        cuGraphAddMemcpyNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, copy: *const Memcpy3D, ctx: Ptr);
        cuGraphAddDependencies(graph: Ptr, from: *const Ptr, to: *const Ptr, count: usize);
        cuGraphAddHostNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, params: *const HostNodeParams);
        cuGraphAddMemAllocNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, params: *mut MemAllocNodeParams);
        cuGraphAddMemFreeNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, ptr: CUdeviceptr);
        cuGraphExecKernelNodeSetParams_v2(exec: Ptr, node: Ptr, params: *const KernelNodeParams);
        cuGraphExecUpdate_v2(exec: Ptr, graph: Ptr, info: *mut GraphExecUpdateResultInfo);
        cuGraphExecMemsetNodeSetParams(exec: Ptr, node: Ptr, params: *const MemsetNodeParams, ctx: Ptr);
        cuGraphExecMemcpyNodeSetParams(exec: Ptr, node: Ptr, copy: *const Memcpy3D, ctx: Ptr);
        cuGraphExecChildGraphNodeSetParams(exec: Ptr, node: Ptr, child: Ptr);
        cuGraphExecEventRecordNodeSetEvent(exec: Ptr, node: Ptr, event: Ptr);
        cuGraphExecEventWaitNodeSetEvent(exec: Ptr, node: Ptr, event: Ptr);
        cuStreamWriteValue32_v2(stream: Ptr, addr: CUdeviceptr, value: u32, flags: u32);
        cuPointerGetAttribute(data: *mut c_void, attribute: i32, ptr: CUdeviceptr);
        cuStreamWriteValue64_v2(stream: Ptr, addr: CUdeviceptr, value: u64, flags: u32);
        cuStreamWaitValue32_v2(stream: Ptr, addr: CUdeviceptr, value: u32, flags: u32);
        cuStreamWaitValue64_v2(stream: Ptr, addr: CUdeviceptr, value: u64, flags: u32);
        cuGraphAddChildGraphNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, child: Ptr);
        cuGraphKernelNodeGetParams_v2(node: Ptr, params: *mut KernelNodeParams);
        cuGraphKernelNodeSetParams_v2(node: Ptr, params: *const KernelNodeParams);
        cuGraphMemsetNodeGetParams(node: Ptr, params: *mut MemsetNodeParams);
        cuGraphMemsetNodeSetParams(node: Ptr, params: *const MemsetNodeParams);
        cuGraphMemcpyNodeGetParams(node: Ptr, copy: *mut Memcpy3D);
        cuGraphMemcpyNodeSetParams(node: Ptr, copy: *const Memcpy3D);
        cuGraphEventRecordNodeGetEvent(node: Ptr, event: *mut Ptr);
        cuGraphEventRecordNodeSetEvent(node: Ptr, event: Ptr);
        cuGraphEventWaitNodeGetEvent(node: Ptr, event: *mut Ptr);
        cuGraphEventWaitNodeSetEvent(node: Ptr, event: Ptr);
        cuGraphChildGraphNodeGetGraph(node: Ptr, graph: *mut Ptr);
        cuGraphMemAllocNodeGetParams(node: Ptr, params: *mut MemAllocNodeParams);
        cuGraphMemFreeNodeGetParams(node: Ptr, dptr: *mut CUdeviceptr);
        cuGraphHostNodeGetParams(node: Ptr, params: *mut HostNodeParams);
        cuGraphHostNodeSetParams(node: Ptr, params: *const HostNodeParams);
        cuGraphDestroyNode(node: Ptr);
        cuGraphClone(clone: *mut Ptr, graph: Ptr);
        cuGraphNodeFindInClone(found: *mut Ptr, node: Ptr, clone: Ptr);
        cuGraphKernelNodeGetAttribute(node: Ptr, attr: u32, value: *mut u8);
        cuGraphKernelNodeSetAttribute(node: Ptr, attr: u32, value: *const u8);
        cuGraphKernelNodeCopyAttributes(dst: Ptr, src: Ptr);
        cuGraphAddEventRecordNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, event: Ptr);
        cuGraphAddEventWaitNode(node: *mut Ptr, graph: Ptr, deps: *const Ptr, count: usize, event: Ptr);
        cuMemAlloc_v2(ptr: *mut CUdeviceptr, size: usize);
        cuMemFree_v2(ptr: CUdeviceptr);
        cuMemGetAddressRange_v2(base: *mut CUdeviceptr, size: *mut usize, ptr: CUdeviceptr);
        cuIpcGetMemHandle(handle: *mut IpcHandle, ptr: CUdeviceptr);
        cuIpcOpenMemHandle_v2(ptr: *mut CUdeviceptr, handle: IpcHandle, flags: u32);
        cuIpcCloseMemHandle(ptr: CUdeviceptr);
        cuMemExportToShareableHandle(shareable: *mut c_void, handle: u64, handle_type: u32, flags: u64);
        cuMemImportFromShareableHandle(handle: *mut u64, os_handle: *mut c_void, handle_type: u32);
        cuIpcGetEventHandle(handle: *mut IpcHandle, event: Ptr);
        cuIpcOpenEventHandle(event: *mut Ptr, handle: IpcHandle);
        cuMemGetInfo_v2(free: *mut usize, total: *mut usize);
        cuMemAllocAsync(ptr: *mut CUdeviceptr, size: usize, stream: Ptr);
        cuMemAllocFromPoolAsync(ptr: *mut CUdeviceptr, size: usize, pool: Ptr, stream: Ptr);
        cuMemFreeAsync(ptr: CUdeviceptr, stream: Ptr);
        cuDeviceGetDefaultMemPool(pool: *mut Ptr, device: i32);
        cuDeviceGetMemPool(pool: *mut Ptr, device: i32);
        cuDeviceSetMemPool(device: i32, pool: Ptr);
        cuMemPoolCreate(pool: *mut Ptr, props: *const MemPoolProps);
        cuMemPoolDestroy(pool: Ptr);
        cuMemPoolSetAttribute(pool: Ptr, attr: i32, value: *mut c_void);
        cuMemPoolGetAttribute(pool: Ptr, attr: i32, value: *mut c_void);
        cuMemPoolTrimTo(pool: Ptr, keep: usize);
        cuMemPoolSetAccess(pool: Ptr, map: *const MemAccessDesc, count: usize);
        cuMemPoolExportToShareableHandle(shareable: *mut c_void, pool: Ptr, handle_type: u32, flags: u64);
        cuMemPoolImportFromShareableHandle(pool: *mut Ptr, os_handle: *mut c_void, handle_type: u32, flags: u64);
        cuMemPoolExportPointer(data: *mut IpcHandle, ptr: CUdeviceptr);
        cuMemPoolImportPointer(ptr: *mut CUdeviceptr, pool: Ptr, data: *mut IpcHandle);
        cuMemAddressReserve(ptr: *mut CUdeviceptr, size: usize, alignment: usize, addr: CUdeviceptr, flags: u64);
        cuMemAddressFree(ptr: CUdeviceptr, size: usize);
        cuMemCreate(handle: *mut u64, size: usize, prop: *const MemAllocationProp, flags: u64);
        cuMemRelease(handle: u64);
        cuMemRetainAllocationHandle(handle: *mut u64, addr: *mut c_void);
        cuMemMap(ptr: CUdeviceptr, size: usize, offset: usize, handle: u64, flags: u64);
        cuMemUnmap(ptr: CUdeviceptr, size: usize);
        cuMemSetAccess(ptr: CUdeviceptr, size: usize, desc: *const MemAccessDesc, count: usize);
        cuMemGetAllocationGranularity(granularity: *mut usize, prop: *const MemAllocationProp, option: u32);
        cuMemAllocHost_v2(host: *mut Ptr, size: usize);
        cuMemFreeHost(host: Ptr);
        cuMemcpyHtoDAsync_v2(dst: CUdeviceptr, src: *const c_void, size: usize, stream: Ptr);
        cuMemcpyDtoHAsync_v2(dst: Ptr, src: CUdeviceptr, size: usize, stream: Ptr);
        cuMemcpyDtoDAsync_v2(dst: CUdeviceptr, src: CUdeviceptr, size: usize, stream: Ptr);
        cuMemsetD8Async(dst: CUdeviceptr, value: u8, count: usize, stream: Ptr);
        cuMemsetD16Async(dst: CUdeviceptr, value: u16, count: usize, stream: Ptr);
        cuMemsetD32Async(dst: CUdeviceptr, value: u32, count: usize, stream: Ptr);
        cuMemcpy2DAsync_v2(copy: *const Memcpy2D, stream: Ptr);
        cuMemcpy3DAsync_v2(copy: *const Memcpy3D, stream: Ptr);
        cuArray3DCreate_v2(array: *mut Ptr, desc: *const Array3DDesc);
        cuArrayDestroy(array: Ptr);
        cuTexObjectCreate(tex: *mut u64, res: *const ResourceDesc, desc: *const TextureDesc, view: *const c_void);
        cuTexObjectDestroy(tex: u64);
        cuSurfObjectCreate(surf: *mut u64, res: *const ResourceDesc);
        cuSurfObjectDestroy(surf: u64);
        cuMemsetD2D8Async(dst: CUdeviceptr, pitch: usize, value: u8, width: usize, height: usize, stream: Ptr);
        cuMemsetD2D16Async(dst: CUdeviceptr, pitch: usize, value: u16, width: usize, height: usize, stream: Ptr);
        cuMemsetD2D32Async(dst: CUdeviceptr, pitch: usize, value: u32, width: usize, height: usize, stream: Ptr);
        cuStreamCreateWithPriority(stream: *mut Ptr, flags: u32, priority: i32);
        cuStreamDestroy_v2(stream: Ptr);
        cuStreamSynchronize(stream: Ptr);
        cuStreamQuery(stream: Ptr);
        cuStreamWaitEvent(stream: Ptr, event: Ptr, flags: u32);
        cuLaunchHostFunc(stream: Ptr, func: HostFn, data: Ptr);
        cuStreamBeginCapture_v2(stream: Ptr, mode: u32);
        cuStreamEndCapture(stream: Ptr, graph: *mut Ptr);
        cuStreamIsCapturing(stream: Ptr, status: *mut i32);
        cuThreadExchangeStreamCaptureMode(mode: *mut u32);
        cuGraphInstantiateWithFlags(exec: *mut Ptr, graph: Ptr, flags: u64);
        cuGraphLaunch(exec: Ptr, stream: Ptr);
        cuGraphUpload(exec: Ptr, stream: Ptr);
        cuGraphExecDestroy(exec: Ptr);
        cuGraphDestroy(graph: Ptr);
        cuGraphGetNodes(graph: Ptr, nodes: *mut Ptr, count: *mut usize);
        cuDeviceGetGraphMemAttribute(device: i32, attr: i32, value: *mut c_void);
        cuDeviceSetGraphMemAttribute(device: i32, attr: i32, value: *mut c_void);
        cuDeviceGraphMemTrim(device: i32);
        cuGraphNodeGetType(node: Ptr, kind: *mut u32);
        cuGraphDebugDotPrint(graph: Ptr, path: *const c_char, flags: u32);
        cuGraphNodeSetEnabled(exec: Ptr, node: Ptr, enabled: u32);
        cuGraphNodeGetEnabled(exec: Ptr, node: Ptr, enabled: *mut u32);
        cuEventCreate(event: *mut Ptr, flags: u32);
        cuEventDestroy_v2(event: Ptr);
        cuEventRecord(event: Ptr, stream: Ptr);
        cuEventSynchronize(event: Ptr);
        cuEventQuery(event: Ptr);
        cuCtxResetPersistingL2Cache();
        cuDeviceGetTexture1DLinearMaxWidth(width: *mut usize, format: u32, channels: u32, device: i32);
        cuOccupancyMaxPotentialClusterSize(size: *mut i32, func: Ptr, config: *const LaunchConfig);
        cuEventElapsedTime(ms: *mut f32, start: Ptr, end: Ptr);
        cuLaunchKernel(function: Ptr, gx: u32, gy: u32, gz: u32, bx: u32, by: u32, bz: u32, shared_mem: u32, stream: Ptr, params: *mut Ptr, extra: *mut Ptr);
        cuLaunchKernelEx(config: *const LaunchConfig, function: Ptr, params: *mut Ptr, extra: *mut Ptr);
        cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(blocks: *mut i32, function: Ptr, block_size: i32, smem: usize, flags: u32);
        cuOccupancyMaxPotentialBlockSizeWithFlags(min_grid: *mut i32, block_size: *mut i32, function: Ptr, callback: *const c_void, smem: usize, limit: i32, flags: u32);
        cuOccupancyAvailableDynamicSMemPerBlock(smem: *mut usize, function: Ptr, num_blocks: i32, block_size: i32);
        cuOccupancyMaxActiveClusters(clusters: *mut i32, function: Ptr, config: *const LaunchConfig);
    }
    optional {
        cuCtxFromGreenCtx(ctx: *mut Ptr, green: Ptr);
        cuCtxGetDevResource(ctx: Ptr, resource: *mut DevResource, kind: u32);
        cuCtxRecordEvent(ctx: Ptr, event: Ptr);
        cuCtxWaitEvent(ctx: Ptr, event: Ptr);
        cuDevResourceGenerateDesc(desc: *mut Ptr, resources: *mut DevResource, count: u32);
        cuDevSmResourceSplitByCount(result: *mut DevResource, groups: *mut u32, input: *const DevResource, remainder: *mut DevResource, flags: u32, min_count: u32);
        cuDeviceGetDevResource(device: i32, resource: *mut DevResource, kind: u32);
        cuFuncGetParamInfo(function: Ptr, index: usize, offset: *mut usize, size: *mut usize);
        cuGraphAddDependencies_v2(graph: Ptr, from: *const Ptr, to: *const Ptr, edges: *const u64, count: usize);
        cuGraphAddNode_v2(node: *mut Ptr, graph: Ptr, deps: *const Ptr, edges: *const u64, count: usize, params: *mut c_void);
        cuGraphConditionalHandleCreate(handle: *mut u64, graph: Ptr, ctx: Ptr, default: u32, flags: u32);
        cuGraphGetEdges_v2(graph: Ptr, from: *mut Ptr, to: *mut Ptr, edges: *mut u64, count: *mut usize);
        cuGraphRemoveDependencies_v2(graph: Ptr, from: *const Ptr, to: *const Ptr, edges: *const u64, count: usize);
        cuGreenCtxCreate(green: *mut Ptr, desc: Ptr, device: i32, flags: u32);
        cuGreenCtxDestroy(green: Ptr);
        cuGreenCtxStreamCreate(stream: *mut Ptr, green: Ptr, flags: u32, priority: i32);
        cuKernelGetParamInfo(kernel: Ptr, index: usize, offset: *mut usize, size: *mut usize);
        cuStreamBeginCaptureToGraph(stream: Ptr, graph: Ptr, deps: *const Ptr, edges: *const c_void, count: usize, mode: u32);
        cuStreamGetCaptureInfo_v3(stream: Ptr, status: *mut i32, id: *mut u64, graph: *mut Ptr, deps: *mut *const Ptr, edges: *mut *const u64, count: *mut usize);
        cuStreamUpdateCaptureDependencies_v2(stream: Ptr, deps: *const Ptr, edges: *const u64, count: usize, flags: u32);
        // The forms without edge data, for drivers older than CUDA 12.3.
        cuGraphGetEdges(graph: Ptr, from: *mut Ptr, to: *mut Ptr, count: *mut usize);
        cuGraphRemoveDependencies(graph: Ptr, from: *const Ptr, to: *const Ptr, count: usize);
        cuStreamGetCaptureInfo_v2(stream: Ptr, status: *mut i32, id: *mut u64, graph: *mut Ptr, deps: *mut *const Ptr, count: *mut usize);
        cuStreamUpdateCaptureDependencies(stream: Ptr, deps: *const Ptr, count: usize, flags: u32);
    }
}

/// Optional entry points the server answers `CUDA_ERROR_NOT_SUPPORTED` for
/// where the driver lacks them, each the function of its own name.
const ALONE_UNSERVED: &[&str] = &[
    "cuCtxRecordEvent",
    "cuCtxWaitEvent",
    "cuGraphConditionalHandleCreate",
    "cuStreamBeginCaptureToGraph",
];

/// The optional entry points green contexts need.
const GREEN_ENTRY_POINTS: &[&str] = &[
    "cuCtxFromGreenCtx",
    "cuCtxGetDevResource",
    "cuDevResourceGenerateDesc",
    "cuDevSmResourceSplitByCount",
    "cuDeviceGetDevResource",
    "cuGreenCtxCreate",
    "cuGreenCtxDestroy",
    "cuGreenCtxStreamCreate",
];

/// The functions of green contexts, which none serves without them.
const GREEN_FUNCTIONS: &[&str] = &[
    "cuCtxFromGreenCtx",
    "cuCtxGetDevResource",
    "cuDevResourceGenerateDesc",
    "cuDevSmResourceSplitByCount",
    "cuDevSmResourceSplit",
    "cuDeviceGetDevResource",
    "cuGreenCtxCreate",
    "cuGreenCtxDestroy",
    "cuGreenCtxGetDevResource",
    "cuGreenCtxGetId",
    "cuGreenCtxRecordEvent",
    "cuGreenCtxStreamCreate",
    "cuGreenCtxWaitEvent",
    "cuStreamGetDevResource",
    "cuStreamGetGreenCtx",
];

/// The calls of graphs and captures that carry edge data (CUDA 12.3), on
/// a driver without them: the older form where every edge is the default
/// one (edge data of zeros), `CUDA_ERROR_NOT_SUPPORTED` where one is not.
impl Driver {
    /// `cuGraphGetEdges`: from an older driver every edge's datum is 0.
    ///
    /// # Safety
    /// As `cuGraphGetEdges_v2`: with arrays, each has room for `*count`.
    pub unsafe fn graph_get_edges(
        &self,
        graph: Ptr,
        from: *mut Ptr,
        to: *mut Ptr,
        edges: *mut u64,
        count: *mut usize,
    ) -> DriverResult {
        if self.fns.cuGraphGetEdges_v2.is_some() {
            // SAFETY: the caller's contract.
            return unsafe { self.cuGraphGetEdges_v2(graph, from, to, edges, count) };
        }
        // SAFETY: the caller's contract, less the edge data.
        let room = if from.is_null() { 0 } else { unsafe { *count } };
        unsafe { self.cuGraphGetEdges(graph, from, to, count) }?;
        if !edges.is_null() {
            // SAFETY: `edges` has room for the `room` edges asked for.
            unsafe { std::ptr::write_bytes(edges, 0, room.min(*count)) };
        }
        Ok(())
    }

    /// `cuGraphRemoveDependencies` (`edges` null: the default edges).
    ///
    /// # Safety
    /// As `cuGraphRemoveDependencies_v2`.
    pub unsafe fn graph_remove_dependencies(
        &self,
        graph: Ptr,
        from: *const Ptr,
        to: *const Ptr,
        edges: *const u64,
        count: usize,
    ) -> DriverResult {
        if self.fns.cuGraphRemoveDependencies_v2.is_some() || !edges.is_null() {
            // SAFETY: the caller's contract.
            return unsafe { self.cuGraphRemoveDependencies_v2(graph, from, to, edges, count) };
        }
        // SAFETY: as above, without edge data.
        unsafe { self.cuGraphRemoveDependencies(graph, from, to, count) }
    }

    /// `cuStreamGetCaptureInfo`: from an older driver `*edges` is null (the
    /// default edges).
    ///
    /// # Safety
    /// As `cuStreamGetCaptureInfo_v3`.
    pub unsafe fn stream_capture_info(
        &self,
        stream: Ptr,
        status: *mut i32,
        id: *mut u64,
        graph: *mut Ptr,
        deps: *mut *const Ptr,
        edges: *mut *const u64,
        count: *mut usize,
    ) -> DriverResult {
        if self.fns.cuStreamGetCaptureInfo_v3.is_some() {
            // SAFETY: the caller's contract.
            return unsafe { self.cuStreamGetCaptureInfo_v3(stream, status, id, graph, deps, edges, count) };
        }
        // SAFETY: the caller's contract, less the edge data.
        unsafe {
            *edges = std::ptr::null();
            self.cuStreamGetCaptureInfo_v2(stream, status, id, graph, deps, count)
        }
    }

    /// `cuStreamUpdateCaptureDependencies` (`edges` null: the default
    /// edges).
    ///
    /// # Safety
    /// As `cuStreamUpdateCaptureDependencies_v2`.
    pub unsafe fn update_capture_dependencies(
        &self,
        stream: Ptr,
        deps: *const Ptr,
        edges: *const u64,
        count: usize,
        flags: u32,
    ) -> DriverResult {
        if self.fns.cuStreamUpdateCaptureDependencies_v2.is_some() || !edges.is_null() {
            // SAFETY: the caller's contract.
            return unsafe { self.cuStreamUpdateCaptureDependencies_v2(stream, deps, edges, count, flags) };
        }
        // SAFETY: as above, without edge data.
        unsafe { self.cuStreamUpdateCaptureDependencies(stream, deps, count, flags) }
    }

    /// Whether the driver gives parameter layouts (`cuFuncGetParamInfo`,
    /// `cuKernelGetParamInfo`: CUDA 12.4). Without them the server reads
    /// layouts from the code it loads.
    pub fn gives_param_info(&self) -> bool {
        self.fns.cuFuncGetParamInfo.is_some() && self.fns.cuKernelGetParamInfo.is_some()
    }

    /// The driver functions, by the names `cuGetProcAddress` takes, that
    /// this driver lacks and the server does not stand in for: those the
    /// server answers `CUDA_ERROR_NOT_SUPPORTED` whatever their arguments
    /// (not those it serves with older forms, or from the code loaded).
    /// Green contexts go together: without one of their entry points none
    /// of them serves.
    pub fn unserved_entry_points(&self) -> Vec<&'static str> {
        let missing = self.missing_entry_points();
        let mut out: Vec<&'static str> = ALONE_UNSERVED.iter().copied().filter(|n| missing.contains(n)).collect();
        if GREEN_ENTRY_POINTS.iter().any(|n| missing.contains(n)) {
            out.extend_from_slice(GREEN_FUNCTIONS);
        }
        out
    }

    /// The optional entry points ([`OPTIONAL_ENTRY_POINTS`]) this driver
    /// lacks; their calls answer `CUDA_ERROR_NOT_SUPPORTED` (or take the
    /// older forms above).
    pub fn missing_entry_points(&self) -> Vec<&'static str> {
        self.fns.missing()
    }
}

/// The loaded driver.
pub struct Driver {
    fns: Fns,
    pub path: String,
    _lib: libloading::Library,
}

// SAFETY: the CUDA driver API is thread-safe; the function pointers stay
// valid while `_lib` is loaded, which is as long as the Driver lives.
unsafe impl Send for Driver {}
// SAFETY: as above.
unsafe impl Sync for Driver {}

/// The driver's blocking waits, for a thread that waits for a session while
/// the session's own thread goes on (`worker::syncs`). It holds only entry
/// points, which stay valid for the life of the process: the driver's
/// library is never unloaded ([`Driver::load`]).
#[derive(Clone, Copy)]
pub struct Waits {
    event_synchronize: unsafe extern "C" fn(Ptr) -> Status,
    ctx_set_current: unsafe extern "C" fn(Ptr) -> Status,
    ctx_synchronize: unsafe extern "C" fn() -> Status,
}

impl Waits {
    /// `cuEventSynchronize`.
    ///
    /// # Safety
    /// `event` must be a live event.
    pub unsafe fn event_synchronize(&self, event: Ptr) -> DriverResult {
        // SAFETY: the caller's promise; the entry point stays loaded.
        status(unsafe { (self.event_synchronize)(event) })
    }

    /// `cuCtxSynchronize` of `ctx`, made current on the calling thread.
    ///
    /// # Safety
    /// `ctx` must be a live context.
    pub unsafe fn ctx_synchronize(&self, ctx: Ptr) -> DriverResult {
        // SAFETY: the caller's promise; the entry points stay loaded.
        status(unsafe { (self.ctx_set_current)(ctx) })?;
        // SAFETY: no arguments; the context is current on this thread.
        status(unsafe { (self.ctx_synchronize)() })
    }
}

/// A driver status as a result.
#[inline]
fn status(s: Status) -> DriverResult {
    match s {
        0 => Ok(()),
        s => Err(s),
    }
}

/// `CUdevice_attribute` numbers are below this.
const MAX_DEVICE_ATTRIBUTE: i32 = 160;

/// `CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK` (1) to
/// `_ONLY_PARTIAL_NATIVE_ATOMIC_SUPPORTED` (5).
pub const P2P_ATTRIBUTES: std::ops::RangeInclusive<i32> = 1..=5;

/// What a device tells about itself.
#[derive(Debug, Clone)]
pub struct DeviceFacts {
    pub name: String,
    pub uuid: [u8; 16],
    pub total_mem: u64,
    pub attributes: Vec<(i32, i32)>,
}

impl Driver {
    /// Load the driver library at `path` and initialise it.
    pub fn load(path: &Path) -> Result<Driver, LoadError> {
        let shown = path.display().to_string();
        // SAFETY: loading the driver runs its initialisers, which is what
        // loading libcuda is for. It is never unloaded (RTLD_NODELETE): the
        // threads that wait in it for a session ([`Waits`]) may outlive the
        // Driver, and NVIDIA's driver is not made to be unloaded.
        let lib = unsafe {
            libloading::os::unix::Library::open(
                Some(path),
                libloading::os::unix::RTLD_NOW | libloading::os::unix::RTLD_LOCAL | libc::RTLD_NODELETE,
            )
        }
        .map(libloading::Library::from)
        .map_err(|source| LoadError::Library {
            path: shown.clone(),
            source,
        })?;
        let fns = Fns::load(&lib, &shown)?;
        let driver = Driver {
            fns,
            path: shown,
            _lib: lib,
        };
        // SAFETY: cuInit takes a flags word.
        unsafe { driver.cuInit(0) }.map_err(|status| LoadError::Init {
            path: driver.path.clone(),
            status,
            name: driver.error_name(status),
        })?;
        Ok(driver)
    }

    /// The blocking waits, for threads of their own ([`Waits`]).
    pub fn waits(&self) -> Waits {
        Waits {
            event_synchronize: self.fns.cuEventSynchronize,
            ctx_set_current: self.fns.cuCtxSetCurrent,
            ctx_synchronize: self.fns.cuCtxSynchronize,
        }
    }

    /// The driver's name of a status (`CUDA_ERROR_NO_DEVICE`), and its
    /// description where it has one.
    pub fn error_name(&self, status: Status) -> String {
        let (mut name, mut text): (*const c_char, *const c_char) = (std::ptr::null(), std::ptr::null());
        // SAFETY: both out-pointers are writable; the driver points them at
        // its own static strings, or fails for a status it does not know
        // (cuGetErrorString works before cuInit).
        let (named, told) = unsafe {
            (
                self.cuGetErrorName(status, &mut name).is_ok() && !name.is_null(),
                self.cuGetErrorString(status, &mut text).is_ok() && !text.is_null(),
            )
        };
        // SAFETY: the driver's strings are NUL-terminated and static.
        let read = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned();
        match (named, told) {
            (true, true) => format!("{}, {}", read(name), read(text)),
            (true, false) => read(name),
            _ => format!("status {status}"),
        }
    }

    pub fn version(&self) -> DriverResult<i32> {
        let mut v = 0;
        // SAFETY: v is a writable int.
        unsafe { self.cuDriverGetVersion(&mut v) }?;
        Ok(v)
    }

    pub fn device_count(&self) -> DriverResult<i32> {
        let mut n = 0;
        // SAFETY: n is a writable int.
        unsafe { self.cuDeviceGetCount(&mut n) }?;
        Ok(n)
    }

    /// The device's UUID, as `cuDeviceGetUuid_v2` gives it.
    pub fn device_uuid(&self, ordinal: i32) -> DriverResult<[u8; 16]> {
        let mut dev = 0;
        let mut uuid = [0u8; 16];
        // SAFETY: dev is a writable int; uuid is the 16 bytes a CUuuid holds.
        unsafe {
            self.cuDeviceGet(&mut dev, ordinal)?;
            self.cuDeviceGetUuid_v2(uuid.as_mut_ptr(), dev)?;
        }
        Ok(uuid)
    }

    /// The device's whole memory in bytes.
    pub fn device_total_mem(&self, ordinal: i32) -> DriverResult<u64> {
        let mut dev = 0;
        let mut total = 0usize;
        // SAFETY: both are writable.
        unsafe {
            self.cuDeviceGet(&mut dev, ordinal)?;
            self.cuDeviceTotalMem_v2(&mut total, dev)?;
        }
        Ok(total as u64)
    }

    /// The device's compute capability, (0, 0) where the driver does not
    /// say.
    pub fn compute_capability(&self, ordinal: i32) -> (u32, u32) {
        const CC_MAJOR: i32 = 75;
        const CC_MINOR: i32 = 76;
        let (mut dev, mut major, mut minor) = (0, 0, 0);
        // SAFETY: each out-pointer is a writable int.
        let ok = unsafe {
            self.cuDeviceGet(&mut dev, ordinal).is_ok()
                && self.cuDeviceGetAttribute(&mut major, CC_MAJOR, dev).is_ok()
                && self.cuDeviceGetAttribute(&mut minor, CC_MINOR, dev).is_ok()
        };
        if ok {
            (major as u32, minor as u32)
        } else {
            (0, 0)
        }
    }

    /// Whether device `ordinal` can address the memory of device `peer`,
    /// and every peer attribute (`CUdevice_P2PAttribute` 1 to 5) the driver
    /// answers for the link.
    pub fn peer_link(&self, ordinal: i32, peer: i32) -> DriverResult<(bool, Vec<(i32, i32)>)> {
        let (mut dev, mut other, mut can) = (0, 0, 0);
        // SAFETY: each out-pointer is a writable int.
        unsafe {
            self.cuDeviceGet(&mut dev, ordinal)?;
            self.cuDeviceGet(&mut other, peer)?;
            self.cuDeviceCanAccessPeer(&mut can, dev, other)?;
        }
        let mut attributes = Vec::new();
        for a in P2P_ATTRIBUTES {
            let mut v = 0;
            // SAFETY: v is a writable int.
            if unsafe { self.cuDeviceGetP2PAttribute(&mut v, a, dev, other) }.is_ok() {
                attributes.push((a, v));
            }
        }
        Ok((can != 0, attributes))
    }

    /// Everything that cannot change about device `ordinal`.
    pub fn device_facts(&self, ordinal: i32) -> DriverResult<DeviceFacts> {
        let mut dev = 0;
        let mut name = [0 as c_char; 256];
        let mut uuid = [0u8; 16];
        let mut total = 0usize;
        // SAFETY: each out-pointer addresses a buffer of the size the API
        // requires (name: 256 chars as passed, uuid: 16 bytes).
        unsafe {
            self.cuDeviceGet(&mut dev, ordinal)?;
            self.cuDeviceGetName(name.as_mut_ptr(), name.len() as i32, dev)?;
            self.cuDeviceGetUuid_v2(uuid.as_mut_ptr(), dev)?;
            self.cuDeviceTotalMem_v2(&mut total, dev)?;
        }
        // SAFETY: the driver NUL-terminates the name within the buffer.
        let name = unsafe { CStr::from_ptr(name.as_ptr()) }.to_string_lossy().into_owned();
        let mut attributes = Vec::new();
        for a in 1..MAX_DEVICE_ATTRIBUTE {
            let mut v = 0;
            // SAFETY: v is a writable int.
            if unsafe { self.cuDeviceGetAttribute(&mut v, a, dev) }.is_ok() {
                attributes.push((a, v));
            }
        }
        Ok(DeviceFacts {
            name,
            uuid,
            total_mem: total as u64,
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    /// Every entry point the server loads is one the real driver exports
    /// (the list the shim is generated from: `libcuda.so.1` of driver 580,
    /// CUDA 13.0): a name it lacks would stop the server from starting on a
    /// GPU, which the software driver, exporting whatever it is given,
    /// cannot show.
    #[test]
    fn every_entry_point_is_one_the_real_driver_exports() {
        let exports: std::collections::HashSet<&str> = include_str!("../../client-shim/api/exports.txt")
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        let source = include_str!("driver.rs");
        let start = source.find("\ndriver_api! {").expect("the entry point list");
        let list = &source[start..start + source[start..].find("\n}\n").expect("its end")];
        let names: Vec<&str> = list
            .lines()
            .filter_map(|l| l.trim().split_once('(').map(|(n, _)| n))
            .filter(|n| n.starts_with("cu"))
            .collect();
        assert!(names.len() > 100, "read {} entry points", names.len());
        let missing: Vec<&&str> = names.iter().filter(|n| !exports.contains(**n)).collect();
        assert!(missing.is_empty(), "not exported by the driver: {missing:?}");
    }
}
