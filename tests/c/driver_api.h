/* The CUDA driver API declarations the gpupool test programs use, written
 * from the published API reference (types, numbers and signatures), so the
 * programs build without a CUDA toolkit. Programs resolve every entry point
 * the way real ones do: dlopen("libcuda.so.1"), then cuGetProcAddress. */
#ifndef GPUPOOL_TEST_DRIVER_API_H
#define GPUPOOL_TEST_DRIVER_API_H
#include <stddef.h>
#include <stdint.h>

typedef int CUresult;
typedef int CUdevice;
typedef unsigned long long CUdeviceptr;
typedef struct CUctx_st *CUcontext;
typedef struct CUmod_st *CUmodule;
typedef struct CUfunc_st *CUfunction;
typedef struct CUstream_st *CUstream;
typedef struct CUevent_st *CUevent;
typedef struct CUlib_st *CUlibrary;
typedef struct CUkern_st *CUkernel;
typedef struct CUgraph_st *CUgraph;
typedef struct CUgraphExec_st *CUgraphExec;

#define CUDA_SUCCESS 0
#define CUDA_ERROR_INVALID_VALUE 1
#define CUDA_ERROR_NOT_INITIALIZED 3
#define CUDA_ERROR_OUT_OF_MEMORY 2
#define CUDA_ERROR_INVALID_DEVICE 101
#define CUDA_ERROR_INVALID_CONTEXT 201
#define CUDA_ERROR_INVALID_RESOURCE_TYPE 914
#define CUDA_ERROR_NOT_FOUND 500
#define CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED 712
#define CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED 713
#define CU_MEMORYTYPE_HOST 1
#define CU_MEMORYTYPE_UNIFIED 4
#define CUDA_ERROR_NOT_READY 600
#define CUDA_ERROR_ILLEGAL_ADDRESS 700
#define CUDA_ERROR_NOT_SUPPORTED 801
#define CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED 900
#define CUDA_ERROR_STREAM_CAPTURE_INVALIDATED 901
#define CU_STREAM_CAPTURE_MODE_GLOBAL 0
#define CU_STREAM_CAPTURE_MODE_RELAXED 2
#define CU_LAUNCH_PARAM_END ((void *)0x00)
#define CU_LAUNCH_PARAM_BUFFER_POINTER ((void *)0x01)
#define CU_LAUNCH_PARAM_BUFFER_SIZE ((void *)0x02)
#define CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK 1
#define CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT 16
#define CU_POINTER_ATTRIBUTE_MEMORY_TYPE 2
#define CU_POINTER_ATTRIBUTE_SYNC_MEMOPS 6
#define CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE 10
#define CU_MEMORYTYPE_DEVICE 2
#define CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK 0
#define CU_FUNC_ATTRIBUTE_NUM_REGS 4
#define CU_FUNC_ATTRIBUTE_PTX_VERSION 5
#define CU_FUNC_ATTRIBUTE_BINARY_VERSION 6
#define CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES 8

typedef struct {
    size_t srcXInBytes, srcY;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    size_t srcPitch;
    size_t dstXInBytes, dstY;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    size_t dstPitch;
    size_t WidthInBytes, Height;
} CUDA_MEMCPY2D;
typedef CUresult (*PFN_cuMemcpy2D)(const CUDA_MEMCPY2D *);
typedef struct {
    size_t srcXInBytes, srcY, srcZ, srcLOD;
    int srcMemoryType;
    const void *srcHost;
    CUdeviceptr srcDevice;
    void *srcArray;
    void *reserved0;
    size_t srcPitch, srcHeight;
    size_t dstXInBytes, dstY, dstZ, dstLOD;
    int dstMemoryType;
    void *dstHost;
    CUdeviceptr dstDevice;
    void *dstArray;
    void *reserved1;
    size_t dstPitch, dstHeight;
    size_t WidthInBytes, Height, Depth;
} CUDA_MEMCPY3D;
#define CU_MEMORYTYPE_ARRAY 3
typedef CUresult (*PFN_cuMemcpy3D)(const CUDA_MEMCPY3D *);
typedef CUresult (*PFN_cuMemcpy3DAsync)(const CUDA_MEMCPY3D *, CUstream);
typedef CUresult (*PFN_cuMemcpy2DAsync)(const CUDA_MEMCPY2D *, CUstream);
/* CUDA arrays, texture and surface objects. */
typedef struct CUarray_st *CUarray;
typedef unsigned long long CUtexObject;
typedef unsigned long long CUsurfObject;
#define CU_AD_FORMAT_UNSIGNED_INT8 0x01
#define CU_AD_FORMAT_FLOAT 0x20
#define CUDA_ARRAY3D_LAYERED 0x01
#define CUDA_ARRAY3D_SURFACE_LDST 0x02
#define CU_RESOURCE_TYPE_ARRAY 0
#define CU_RESOURCE_TYPE_PITCH2D 3
#define CU_TR_ADDRESS_MODE_WRAP 0
#define CU_TR_ADDRESS_MODE_CLAMP 1
#define CU_TR_ADDRESS_MODE_BORDER 3
#define CU_TR_FILTER_MODE_POINT 0
#define CU_TR_FILTER_MODE_LINEAR 1
#define CU_TRSF_NORMALIZED_COORDINATES 0x02
typedef struct {
    size_t Width, Height;
    int Format;
    unsigned NumChannels;
} CUDA_ARRAY_DESCRIPTOR;
typedef struct {
    size_t Width, Height, Depth;
    int Format;
    unsigned NumChannels;
    unsigned Flags;
} CUDA_ARRAY3D_DESCRIPTOR;
typedef struct {
    int resType;
    union {
        struct {
            CUarray hArray;
        } array;
        struct {
            CUdeviceptr devPtr;
            int format;
            unsigned numChannels;
            size_t width, height, pitchInBytes;
        } pitch2D;
        struct {
            int reserved[32];
        } reserved;
    } res;
    unsigned flags;
} CUDA_RESOURCE_DESC;
typedef struct {
    int addressMode[3];
    int filterMode;
    unsigned flags;
    unsigned maxAnisotropy;
    int mipmapFilterMode;
    float mipmapLevelBias, minMipmapLevelClamp, maxMipmapLevelClamp;
    float borderColor[4];
    int reserved[12];
} CUDA_TEXTURE_DESC;
typedef CUresult (*PFN_cuArrayCreate)(CUarray *, const CUDA_ARRAY_DESCRIPTOR *);
typedef CUresult (*PFN_cuMemcpyHtoA)(CUarray, size_t, const void *, size_t);
typedef CUresult (*PFN_cuMemcpyHtoAAsync)(CUarray, size_t, const void *, size_t, CUstream);
typedef CUresult (*PFN_cuMemcpyAtoH)(void *, CUarray, size_t, size_t);
typedef CUresult (*PFN_cuMemcpyAtoHAsync)(void *, CUarray, size_t, size_t, CUstream);
typedef CUresult (*PFN_cuMemcpyDtoA)(CUarray, size_t, CUdeviceptr, size_t);
typedef CUresult (*PFN_cuMemcpyAtoD)(CUdeviceptr, CUarray, size_t, size_t);
typedef CUresult (*PFN_cuMemcpyAtoA)(CUarray, size_t, CUarray, size_t, size_t);
typedef CUresult (*PFN_cuArray3DCreate)(CUarray *, const CUDA_ARRAY3D_DESCRIPTOR *);
typedef CUresult (*PFN_cuArrayDestroy)(CUarray);
typedef CUresult (*PFN_cuArrayGetDescriptor)(CUDA_ARRAY_DESCRIPTOR *, CUarray);
typedef CUresult (*PFN_cuArray3DGetDescriptor)(CUDA_ARRAY3D_DESCRIPTOR *, CUarray);
typedef CUresult (*PFN_cuTexObjectCreate)(CUtexObject *, const CUDA_RESOURCE_DESC *, const CUDA_TEXTURE_DESC *,
                                          const void *);
typedef CUresult (*PFN_cuTexObjectDestroy)(CUtexObject);
typedef CUresult (*PFN_cuTexObjectGetResourceDesc)(CUDA_RESOURCE_DESC *, CUtexObject);
typedef CUresult (*PFN_cuSurfObjectCreate)(CUsurfObject *, const CUDA_RESOURCE_DESC *);
typedef CUresult (*PFN_cuSurfObjectDestroy)(CUsurfObject);
typedef CUresult (*PFN_cuMemAllocPitch)(CUdeviceptr *, size_t *, size_t, size_t, unsigned);
typedef CUresult (*PFN_cuMemsetD2D32)(CUdeviceptr, size_t, unsigned, size_t, size_t);
typedef CUresult (*PFN_cuMemsetD2D8Async)(CUdeviceptr, size_t, unsigned char, size_t, size_t, CUstream);
typedef CUresult (*PFN_cuMemcpy)(CUdeviceptr, CUdeviceptr, size_t);
typedef CUresult (*PFN_cuMemcpyAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
typedef CUresult (*PFN_cuMemHostRegister)(void *, size_t, unsigned);
typedef CUresult (*PFN_cuMemHostUnregister)(void *);
typedef CUresult (*PFN_cuMemHostGetFlags)(unsigned *, void *);
typedef CUresult (*PFN_cuMemGetAddressRange)(CUdeviceptr *, size_t *, CUdeviceptr);
typedef struct {
    char reserved[64];
} CUipcMemHandle;
typedef struct {
    char reserved[64];
} CUipcEventHandle;
#define CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS 1
#define CU_EVENT_DISABLE_TIMING 2
#define CU_EVENT_INTERPROCESS 4
typedef CUresult (*PFN_cuIpcGetMemHandle)(CUipcMemHandle *, CUdeviceptr);
typedef CUresult (*PFN_cuIpcOpenMemHandle)(CUdeviceptr *, CUipcMemHandle, unsigned);
typedef CUresult (*PFN_cuIpcCloseMemHandle)(CUdeviceptr);
typedef CUresult (*PFN_cuIpcGetEventHandle)(CUipcEventHandle *, CUevent);
typedef CUresult (*PFN_cuIpcOpenEventHandle)(CUevent *, CUipcEventHandle);
typedef CUresult (*PFN_cuStreamGetPriority)(CUstream, int *);
typedef CUresult (*PFN_cuStreamGetFlags)(CUstream, unsigned *);
typedef CUresult (*PFN_cuStreamGetCtx)(CUstream, CUcontext *);
typedef CUresult (*PFN_cuStreamGetId)(CUstream, unsigned long long *);
typedef CUresult (*PFN_cuStreamCreateWithPriority)(CUstream *, unsigned, int);
typedef CUresult (*PFN_cuCtxGetFlags)(unsigned *);
typedef CUresult (*PFN_cuDeviceGetPCIBusId)(char *, int, CUdevice);
typedef CUresult (*PFN_cuDeviceGetByPCIBusId)(CUdevice *, const char *);
typedef CUresult (*PFN_cuDeviceCanAccessPeer)(int *, CUdevice, CUdevice);
typedef CUresult (*PFN_cuDeviceComputeCapability)(int *, int *, CUdevice);
typedef CUresult (*PFN_cuGetProcAddress_v2)(const char *, void **, int, uint64_t, int *);
typedef CUresult (*PFN_cuInit)(unsigned);
typedef CUresult (*PFN_cuDriverGetVersion)(int *);
typedef CUresult (*PFN_cuDeviceGet)(CUdevice *, int);
typedef CUresult (*PFN_cuDeviceGetCount)(int *);
typedef CUresult (*PFN_cuDeviceGetName)(char *, int, CUdevice);
typedef CUresult (*PFN_cuDeviceTotalMem)(size_t *, CUdevice);
typedef CUresult (*PFN_cuDeviceGetAttribute)(int *, int, CUdevice);
typedef CUresult (*PFN_cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
typedef CUresult (*PFN_cuDevicePrimaryCtxRelease)(CUdevice);
typedef CUresult (*PFN_cuDevicePrimaryCtxGetState)(CUdevice, unsigned *, int *);
typedef CUresult (*PFN_cuCtxSetCurrent)(CUcontext);
typedef CUresult (*PFN_cuCtxGetCurrent)(CUcontext *);
typedef CUresult (*PFN_cuCtxGetDevice)(CUdevice *);
typedef CUresult (*PFN_cuCtxSynchronize)(void);
typedef CUresult (*PFN_cuModuleLoadData)(CUmodule *, const void *);
typedef CUresult (*PFN_cuModuleUnload)(CUmodule);
typedef CUresult (*PFN_cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
typedef CUresult (*PFN_cuFuncGetParamInfo)(CUfunction, size_t, size_t *, size_t *);
typedef CUresult (*PFN_cuLibraryLoadData)(CUlibrary *, const void *, void *, void *, unsigned, void *, void *, unsigned);
typedef CUresult (*PFN_cuLibraryLoadFromFile)(CUlibrary *, const char *, void *, void *, unsigned, void *, void *, unsigned);
typedef CUresult (*PFN_cuModuleLoad)(CUmodule *, const char *);
#define CUDA_ERROR_FILE_NOT_FOUND 301
typedef CUresult (*PFN_cuLibraryUnload)(CUlibrary);
typedef CUresult (*PFN_cuOccupancyMaxActiveBlocksPerMultiprocessor)(int *, CUfunction, int, size_t);
typedef size_t (*CUoccupancyB2DSize)(int);
typedef CUresult (*PFN_cuOccupancyMaxPotentialBlockSize)(int *, int *, CUfunction, CUoccupancyB2DSize, size_t, int);
typedef CUresult (*PFN_cuLibraryGetKernel)(CUkernel *, CUlibrary, const char *);
typedef CUresult (*PFN_cuKernelGetFunction)(CUfunction *, CUkernel);
typedef CUresult (*PFN_cuKernelGetParamInfo)(CUkernel, size_t, size_t *, size_t *);
typedef CUresult (*PFN_cuKernelSetAttribute)(int, int, CUkernel, CUdevice);
typedef CUresult (*PFN_cuKernelGetAttribute)(int *, int, CUkernel, CUdevice);
typedef CUresult (*PFN_cuFuncGetAttribute)(int *, int, CUfunction);
typedef struct {
    int id;
    char pad[4];
    union {
        int cooperative;
        char bytes[64];
    } value;
} CUlaunchAttribute;
typedef struct {
    unsigned gridDimX, gridDimY, gridDimZ;
    unsigned blockDimX, blockDimY, blockDimZ;
    unsigned sharedMemBytes;
    CUstream hStream;
    CUlaunchAttribute *attrs;
    unsigned numAttrs;
} CUlaunchConfig;
#define CU_LAUNCH_ATTRIBUTE_COOPERATIVE 2
#define CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW 1
#define CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY 3
#define CU_LAUNCH_ATTRIBUTE_PRIORITY 8
typedef union {
    char bytes[64];
    int value;
    struct {
        void *base_ptr;
        size_t num_bytes;
        float hitRatio;
        int hitProp, missProp;
    } accessPolicyWindow;
} CUstreamAttrValue;
typedef CUresult (*PFN_cuStreamGetAttribute)(CUstream, int, CUstreamAttrValue *);
typedef CUresult (*PFN_cuStreamSetAttribute)(CUstream, int, const CUstreamAttrValue *);
typedef CUresult (*PFN_cuStreamCopyAttributes)(CUstream, CUstream);
typedef struct {
    _Alignas(64) unsigned char opaque[128];
} CUtensorMap;
typedef CUresult (*PFN_cuTensorMapEncodeTiled)(CUtensorMap *, int, unsigned, void *, const uint64_t *, const uint64_t *,
                                               const unsigned *, const unsigned *, int, int, int, int);
typedef CUresult (*PFN_cuTensorMapEncodeIm2col)(CUtensorMap *, int, unsigned, void *, const uint64_t *,
                                                const uint64_t *, const int *, const int *, unsigned, unsigned,
                                                const unsigned *, int, int, int, int);
typedef CUresult (*PFN_cuTensorMapReplaceAddress)(CUtensorMap *, void *);
#define CU_TENSOR_MAP_DATA_TYPE_FLOAT32 7
#define CU_TENSOR_MAP_DATA_TYPE_FLOAT16 6
typedef struct CUlinkState_st *CUlinkState;
typedef CUresult (*PFN_cuLinkCreate)(unsigned, int *, void **, CUlinkState *);
typedef CUresult (*PFN_cuLinkAddData)(CUlinkState, int, void *, size_t, const char *, unsigned, int *, void **);
typedef CUresult (*PFN_cuLinkAddFile)(CUlinkState, int, const char *, unsigned, int *, void **);
typedef CUresult (*PFN_cuLinkComplete)(CUlinkState, void **, size_t *);
typedef CUresult (*PFN_cuLinkDestroy)(CUlinkState);
#define CU_JIT_INFO_LOG_BUFFER 3
#define CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES 4
#define CU_JIT_ERROR_LOG_BUFFER 5
#define CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES 6
#define CU_JIT_OPTIMIZATION_LEVEL 7
#define CU_JIT_INPUT_PTX 1
#define CUDA_ERROR_FILE_NOT_FOUND 301
typedef struct {
    int srcAccessOrder;
    int srcLocHint[2], dstLocHint[2];
    unsigned flags;
} CUmemcpyAttributes;
typedef CUresult (*PFN_cuMemcpyBatchAsync)(CUdeviceptr *, CUdeviceptr *, size_t *, size_t, CUmemcpyAttributes *,
                                           size_t *, size_t, CUstream);
#define CU_MEMCPY_SRC_ACCESS_ORDER_STREAM 1
#define CU_MEMCPY_SRC_ACCESS_ORDER_DURING_API_CALL 2
typedef CUresult (*PFN_cuStreamWriteValue32)(CUstream, CUdeviceptr, unsigned, unsigned);
typedef CUresult (*PFN_cuStreamWriteValue64)(CUstream, CUdeviceptr, uint64_t, unsigned);
typedef CUresult (*PFN_cuStreamWaitValue32)(CUstream, CUdeviceptr, unsigned, unsigned);
typedef CUresult (*PFN_cuStreamWaitValue64)(CUstream, CUdeviceptr, uint64_t, unsigned);
typedef union {
    int operation;
    struct {
        int operation;
        CUdeviceptr address;
        union {
            unsigned value;
            uint64_t value64;
        };
        unsigned flags;
        CUdeviceptr alias;
    } value_op;
    uint64_t pad[6];
} CUstreamBatchMemOpParams;
typedef CUresult (*PFN_cuStreamBatchMemOp)(CUstream, unsigned, CUstreamBatchMemOpParams *, unsigned);
#define CU_STREAM_MEM_OP_WAIT_VALUE_32 1
#define CU_STREAM_MEM_OP_WRITE_VALUE_32 2
#define CU_STREAM_MEM_OP_WRITE_VALUE_64 5
#define CU_STREAM_WAIT_VALUE_GEQ 0
#define CU_STREAM_WAIT_VALUE_EQ 1
typedef CUresult (*PFN_cuModuleGetGlobal)(CUdeviceptr *, size_t *, CUmodule, const char *);
typedef CUresult (*PFN_cuProfilerStart)(void);
typedef CUresult (*PFN_cuProfilerStop)(void);
#define CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE 720
typedef CUresult (*PFN_cuLaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **);
typedef CUresult (*PFN_cuLaunchCooperativeKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned,
                                                  unsigned, unsigned, CUstream, void **);
typedef CUresult (*PFN_cuFuncGetName)(const char **, CUfunction);
typedef CUresult (*PFN_cuKernelGetName)(const char **, CUkernel);
typedef CUresult (*PFN_cuFuncGetModule)(CUmodule *, CUfunction);
typedef CUresult (*PFN_cuKernelGetLibrary)(CUlibrary *, CUkernel);
typedef CUresult (*PFN_cuFuncIsLoaded)(int *, CUfunction);
typedef CUresult (*PFN_cuFuncLoad)(CUfunction);
typedef CUresult (*PFN_cuLibraryGetKernelCount)(unsigned *, CUlibrary);
typedef CUresult (*PFN_cuLibraryEnumerateKernels)(CUkernel *, unsigned, CUlibrary);
typedef CUresult (*PFN_cuModuleGetFunctionCount)(unsigned *, CUmodule);
typedef CUresult (*PFN_cuModuleEnumerateFunctions)(CUfunction *, unsigned, CUmodule);
typedef CUresult (*PFN_cuCtxSetCacheConfig)(int);
typedef CUresult (*PFN_cuCtxGetCacheConfig)(int *);
typedef CUresult (*PFN_cuFuncSetCacheConfig)(CUfunction, int);
typedef CUresult (*PFN_cuKernelSetCacheConfig)(CUkernel, int, CUdevice);
typedef CUresult (*PFN_cuCtxGetSharedMemConfig)(int *);
#define CU_FUNC_CACHE_PREFER_SHARED 1
#define CU_FUNC_CACHE_PREFER_L1 2
#define CU_FUNC_CACHE_PREFER_EQUAL 3
#define CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE 1
#define CU_FUNCTION_LOADING_STATE_LOADED 1
typedef CUresult (*PFN_cuFuncSetAttribute)(CUfunction, int, int);
typedef CUresult (*PFN_cuMemAlloc)(CUdeviceptr *, size_t);
typedef CUresult (*PFN_cuMemFree)(CUdeviceptr);
typedef CUresult (*PFN_cuMemGetInfo)(size_t *, size_t *);
typedef CUresult (*PFN_cuMemAllocHost)(void **, size_t);
typedef CUresult (*PFN_cuMemFreeHost)(void *);
typedef CUresult (*PFN_cuMemHostGetDevicePointer)(CUdeviceptr *, void *, unsigned);
typedef CUresult (*PFN_cuPointerGetAttribute)(void *, int, CUdeviceptr);
typedef CUresult (*PFN_cuMemcpyHtoD)(CUdeviceptr, const void *, size_t);
typedef CUresult (*PFN_cuMemcpyDtoH)(void *, CUdeviceptr, size_t);
typedef CUresult (*PFN_cuMemcpyDtoD)(CUdeviceptr, CUdeviceptr, size_t);
typedef CUresult (*PFN_cuMemcpyHtoDAsync)(CUdeviceptr, const void *, size_t, CUstream);
typedef CUresult (*PFN_cuMemcpyDtoHAsync)(void *, CUdeviceptr, size_t, CUstream);
typedef CUresult (*PFN_cuMemsetD32)(CUdeviceptr, unsigned, size_t);
typedef CUresult (*PFN_cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
typedef CUresult (*PFN_cuMemsetD32Async)(CUdeviceptr, unsigned, size_t, CUstream);
typedef CUresult (*PFN_cuStreamCreate)(CUstream *, unsigned);
typedef CUresult (*PFN_cuMemcpyDtoDAsync)(CUdeviceptr, CUdeviceptr, size_t, CUstream);
typedef CUresult (*PFN_cuStreamBeginCapture)(CUstream, int);
typedef CUresult (*PFN_cuStreamEndCapture)(CUstream, CUgraph *);
typedef CUresult (*PFN_cuStreamIsCapturing)(CUstream, int *);
typedef CUresult (*PFN_cuStreamGetCaptureInfo)(CUstream, int *, unsigned long long *);
typedef CUresult (*PFN_cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph, unsigned long long);
typedef CUresult (*PFN_cuGraphLaunch)(CUgraphExec, CUstream);
typedef CUresult (*PFN_cuGraphExecDestroy)(CUgraphExec);
typedef CUresult (*PFN_cuGraphDestroy)(CUgraph);
typedef struct CUgraphNode_st *CUgraphNode;
typedef CUresult (*PFN_cuStreamBeginCaptureToGraph)(CUstream, CUgraph, const CUgraphNode *, const void *, size_t,
                                                    int);
typedef CUresult (*PFN_cuGraphExecChildGraphNodeSetParams)(CUgraphExec, CUgraphNode, CUgraph);
typedef CUresult (*PFN_cuGraphExecEventRecordNodeSetEvent)(CUgraphExec, CUgraphNode, CUevent);
typedef CUresult (*PFN_cuGraphExecEventWaitNodeSetEvent)(CUgraphExec, CUgraphNode, CUevent);
typedef struct {
    CUfunction func;
    unsigned gridDimX, gridDimY, gridDimZ;
    unsigned blockDimX, blockDimY, blockDimZ;
    unsigned sharedMemBytes;
    void **kernelParams;
    void **extra;
    CUkernel kern;
    CUcontext ctx;
} CUDA_KERNEL_NODE_PARAMS;
typedef struct {
    CUdeviceptr dst;
    size_t pitch;
    unsigned value, elementSize;
    size_t width, height;
} CUDA_MEMSET_NODE_PARAMS;
typedef CUresult (*PFN_cuGraphCreate)(CUgraph *, unsigned);
typedef CUresult (*PFN_cuGraphAddEmptyNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t);
typedef CUresult (*PFN_cuGraphAddKernelNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                             const CUDA_KERNEL_NODE_PARAMS *);
typedef CUresult (*PFN_cuGraphAddMemsetNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                             const CUDA_MEMSET_NODE_PARAMS *, CUcontext);
typedef CUresult (*PFN_cuGraphAddMemcpyNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                             const CUDA_MEMCPY3D *, CUcontext);
typedef CUresult (*PFN_cuGraphAddDependencies)(CUgraph, const CUgraphNode *, const CUgraphNode *, size_t);
typedef CUresult (*PFN_cuGraphGetNodes)(CUgraph, CUgraphNode *, size_t *);
typedef CUresult (*PFN_cuGraphNodeGetType)(CUgraphNode, int *);
typedef struct {
    int type;
    int reserved0[3];
    union {
        long long reserved1[29];
        CUDA_KERNEL_NODE_PARAMS kernel;
        struct {
            CUDA_MEMSET_NODE_PARAMS params;
            CUcontext ctx;
        } memset;
        struct {
            int flags, reserved;
            CUcontext copyCtx;
            CUDA_MEMCPY3D copyParams;
        } memcpy;
    };
    long long reserved2;
} CUgraphNodeParams;
typedef CUresult (*PFN_cuGraphAddNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t, CUgraphNodeParams *);
typedef struct {
    int result;
    CUgraphNode errorNode, errorFromNode;
} CUgraphExecUpdateResultInfo;
typedef CUresult (*PFN_cuGraphExecUpdate)(CUgraphExec, CUgraph, CUgraphExecUpdateResultInfo *);
#define CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE 910
#define CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED 2
#define CU_GRAPH_NODE_TYPE_KERNEL 0
#define CU_GRAPH_NODE_TYPE_MEMCPY 1
#define CU_GRAPH_NODE_TYPE_MEMSET 2
#define CU_GRAPH_NODE_TYPE_EMPTY 5
typedef CUresult (*PFN_cuGraphExecKernelNodeSetParams)(CUgraphExec, CUgraphNode, const CUDA_KERNEL_NODE_PARAMS *);
typedef CUresult (*PFN_cuGraphExecMemsetNodeSetParams)(CUgraphExec, CUgraphNode, const CUDA_MEMSET_NODE_PARAMS *,
                                                       CUcontext);
typedef CUresult (*PFN_cuGraphExecMemcpyNodeSetParams)(CUgraphExec, CUgraphNode, const CUDA_MEMCPY3D *, CUcontext);
typedef CUresult (*PFN_cuGraphAddChildGraphNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t, CUgraph);
typedef CUresult (*PFN_cuGraphAddEventRecordNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t, CUevent);
typedef CUresult (*PFN_cuGraphAddEventWaitNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t, CUevent);
typedef CUresult (*PFN_cuStreamDestroy)(CUstream);
typedef CUresult (*PFN_cuPointerSetAttribute)(const void *, int, CUdeviceptr);
typedef CUresult (*PFN_cuStreamSynchronize)(CUstream);
typedef CUresult (*PFN_cuStreamWaitEvent)(CUstream, CUevent, unsigned);
typedef CUresult (*PFN_cuStreamQuery)(CUstream);
typedef void (*CUhostFn)(void *);
typedef void (*CUstreamCallback)(CUstream, CUresult, void *);
typedef CUresult (*PFN_cuLaunchHostFunc)(CUstream, CUhostFn, void *);
typedef struct {
    CUhostFn fn;
    void *userData;
} CUDA_HOST_NODE_PARAMS;
typedef CUresult (*PFN_cuGraphAddHostNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                           const CUDA_HOST_NODE_PARAMS *);
typedef CUresult (*PFN_cuGraphHostNodeGetParams)(CUgraphNode, CUDA_HOST_NODE_PARAMS *);
typedef CUresult (*PFN_cuGraphExecHostNodeSetParams)(CUgraphExec, CUgraphNode, const CUDA_HOST_NODE_PARAMS *);
typedef CUresult (*PFN_cuStreamAddCallback)(CUstream, CUstreamCallback, void *, unsigned);
typedef CUresult (*PFN_cuEventQuery)(CUevent);
typedef struct CUmemPoolHandle_st *CUmemoryPool;
typedef CUresult (*PFN_cuCtxCreate)(CUcontext *, unsigned, CUdevice);
typedef CUresult (*PFN_cuCtxDestroy)(CUcontext);
typedef CUresult (*PFN_cuMemcpyPeer)(CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t);
/* CUDA_MEMCPY3D_PEER: CUDA_MEMCPY3D with each end's context in place of
 * its reserved word. */
typedef CUresult (*PFN_cuMemcpy3DPeer)(const CUDA_MEMCPY3D *);
typedef CUresult (*PFN_cuMemcpyPeerAsync)(CUdeviceptr, CUcontext, CUdeviceptr, CUcontext, size_t, CUstream);
typedef CUresult (*PFN_cuCtxEnablePeerAccess)(CUcontext, unsigned);
typedef CUresult (*PFN_cuCtxDisablePeerAccess)(CUcontext);
typedef CUresult (*PFN_cuDeviceGetP2PAttribute)(int *, int, CUdevice, CUdevice);
#define CUDA_ERROR_PEER_ACCESS_UNSUPPORTED 217
#define CUDA_ERROR_PEER_ACCESS_NOT_ENABLED 705
#define CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED 704
#define CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED 2
#define CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK 1
typedef struct {
    int type; /* CU_MEM_LOCATION_TYPE_DEVICE = 1 */
    int id;
} CUmemLocation;
typedef CUresult (*PFN_cuMemAllocManaged)(CUdeviceptr *, size_t, unsigned);
typedef CUresult (*PFN_cuMemPrefetchAsync)(CUdeviceptr, size_t, CUmemLocation, unsigned, CUstream);
typedef CUresult (*PFN_cuMemAdvise)(CUdeviceptr, size_t, int, CUmemLocation);
typedef CUresult (*PFN_cuMemRangeGetAttribute)(void *, size_t, int, CUdeviceptr, size_t);
typedef CUresult (*PFN_cuStreamAttachMemAsync)(CUstream, CUdeviceptr, size_t, unsigned);
#define CU_MEM_ATTACH_GLOBAL 1
#define CU_POINTER_ATTRIBUTE_IS_MANAGED 8
#define CU_POINTER_ATTRIBUTE_ACCESS_FLAGS 16
#define CU_POINTER_ATTRIBUTE_LOCALITY_DOMAIN_ORDINAL 22
#define CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY 83
#define CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS 88
#define CU_MEM_ADVISE_SET_READ_MOSTLY 1
#define CU_MEM_ADVISE_SET_PREFERRED_LOCATION 3
#define CU_MEM_RANGE_ATTRIBUTE_READ_MOSTLY 1
#define CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION 2
#define CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION 4
typedef struct {
    int allocType;   /* CU_MEM_ALLOCATION_TYPE_PINNED = 1 */
    int handleTypes; /* CU_MEM_HANDLE_TYPE_NONE = 0, POSIX_FILE_DESCRIPTOR = 1 */
    CUmemLocation location;
    void *win32SecurityAttributes;
    size_t maxSize;
    unsigned short usage;
    unsigned char reserved[54];
} CUmemPoolProps;
#define CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED 115
#define CU_MEMPOOL_ATTR_RELEASE_THRESHOLD 4
#define CU_MEMPOOL_ATTR_USED_MEM_CURRENT 7
#define CU_MEMPOOL_ATTR_USED_MEM_HIGH 8
#define CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC 2
typedef CUresult (*PFN_cuMemAllocAsync)(CUdeviceptr *, size_t, CUstream);
typedef CUresult (*PFN_cuMemAllocFromPoolAsync)(CUdeviceptr *, size_t, CUmemoryPool, CUstream);
typedef CUresult (*PFN_cuMemFreeAsync)(CUdeviceptr, CUstream);
typedef CUresult (*PFN_cuDeviceGetDefaultMemPool)(CUmemoryPool *, CUdevice);
typedef CUresult (*PFN_cuDeviceGetMemPool)(CUmemoryPool *, CUdevice);
typedef CUresult (*PFN_cuDeviceSetMemPool)(CUdevice, CUmemoryPool);
typedef CUresult (*PFN_cuMemPoolCreate)(CUmemoryPool *, const CUmemPoolProps *);
typedef CUresult (*PFN_cuMemPoolDestroy)(CUmemoryPool);
typedef CUresult (*PFN_cuMemPoolSetAttribute)(CUmemoryPool, int, void *);
typedef CUresult (*PFN_cuMemPoolGetAttribute)(CUmemoryPool, int, void *);
typedef CUresult (*PFN_cuMemPoolTrimTo)(CUmemoryPool, size_t);
typedef CUresult (*PFN_cuMemPoolGetAccess)(unsigned *, CUmemoryPool, CUmemLocation *);
typedef unsigned long long CUmemGenericAllocationHandle;
typedef struct {
    int type;                 /* CU_MEM_ALLOCATION_TYPE_PINNED = 1 */
    int requestedHandleTypes; /* CU_MEM_HANDLE_TYPE_NONE = 0 */
    CUmemLocation location;
    void *win32HandleMetaData;
    struct {
        unsigned char compressionType;
        unsigned char gpuDirectRDMACapable;
        unsigned short usage;
        unsigned char reserved[4];
    } allocFlags;
} CUmemAllocationProp;
typedef struct {
    CUmemLocation location;
    int flags; /* CU_MEM_ACCESS_FLAGS_PROT_READWRITE = 3 */
} CUmemAccessDesc;
typedef CUresult (*PFN_cuMemPoolSetAccess)(CUmemoryPool, const CUmemAccessDesc *, size_t);
#define CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED 102
typedef CUresult (*PFN_cuMemAddressReserve)(CUdeviceptr *, size_t, size_t, CUdeviceptr, unsigned long long);
typedef CUresult (*PFN_cuMemAddressFree)(CUdeviceptr, size_t);
typedef CUresult (*PFN_cuMemCreate)(CUmemGenericAllocationHandle *, size_t, const CUmemAllocationProp *,
                                    unsigned long long);
typedef CUresult (*PFN_cuMemRelease)(CUmemGenericAllocationHandle);
typedef CUresult (*PFN_cuMemRetainAllocationHandle)(CUmemGenericAllocationHandle *, void *);
typedef CUresult (*PFN_cuMemGetAllocationPropertiesFromHandle)(CUmemAllocationProp *, CUmemGenericAllocationHandle);
typedef CUresult (*PFN_cuMemExportToShareableHandle)(void *, CUmemGenericAllocationHandle, int, unsigned long long);
typedef CUresult (*PFN_cuMemImportFromShareableHandle)(CUmemGenericAllocationHandle *, void *, int);
#define CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR 1
#define CU_MEM_HANDLE_TYPE_FABRIC 8
typedef CUresult (*PFN_cuMemMap)(CUdeviceptr, size_t, size_t, CUmemGenericAllocationHandle, unsigned long long);
typedef CUresult (*PFN_cuMemUnmap)(CUdeviceptr, size_t);
typedef CUresult (*PFN_cuMemSetAccess)(CUdeviceptr, size_t, const CUmemAccessDesc *, size_t);
typedef CUresult (*PFN_cuMemGetAllocationGranularity)(size_t *, const CUmemAllocationProp *, int);
typedef CUresult (*PFN_cuMemGetAccess)(unsigned long long *, const CUmemLocation *, CUdeviceptr);
typedef CUresult (*PFN_cuEventCreate)(CUevent *, unsigned);
typedef CUresult (*PFN_cuEventRecord)(CUevent, CUstream);
typedef CUresult (*PFN_cuEventSynchronize)(CUevent);
typedef CUresult (*PFN_cuEventElapsedTime)(float *, CUevent, CUevent);
typedef CUresult (*PFN_cuEventDestroy)(CUevent);
typedef CUresult (*PFN_cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned, CUstream, void **, void **);
typedef CUresult (*PFN_cuGetErrorName)(CUresult, const char **);
typedef CUresult (*PFN_cuMipmappedArrayCreate)(void *, const void *, unsigned);
/* Calls of CUDA 12.5 and 13 that cudart looks up. */
typedef CUresult (*PFN_cuStreamGetCtx_v2)(CUstream, CUcontext *, void **);
typedef CUresult (*PFN_cuOccupancyMaxPotentialClusterSize)(int *, CUfunction, const CUlaunchConfig *);
typedef CUresult (*PFN_cuMemPrefetchBatchAsync)(CUdeviceptr *, size_t *, size_t, CUmemLocation *, size_t *, size_t,
                                                unsigned long long, CUstream);
typedef CUresult (*PFN_cuMemDiscardBatchAsync)(CUdeviceptr *, size_t *, size_t, unsigned long long, CUstream);
typedef CUresult (*PFN_cuMemDiscardAndPrefetchBatchAsync)(CUdeviceptr *, size_t *, size_t, CUmemLocation *, size_t *,
                                                          size_t, unsigned long long, CUstream);
typedef CUresult (*PFN_cuCtxRecordEvent)(CUcontext, CUevent);
typedef CUresult (*PFN_cuCtxWaitEvent)(CUcontext, CUevent);
typedef CUresult (*PFN_cuCtxResetPersistingL2Cache)(void);
typedef CUresult (*PFN_cuDeviceGetHostAtomicCapabilities)(unsigned *, const int *, unsigned, CUdevice);
typedef CUresult (*PFN_cuDeviceGetP2PAtomicCapabilities)(unsigned *, const int *, unsigned, CUdevice, CUdevice);
typedef CUresult (*PFN_cuDeviceGetTexture1DLinearMaxWidth)(size_t *, int, unsigned, CUdevice);
typedef struct {
    unsigned smCount, minSmPartitionSize, smCoscheduledAlignment, flags, localityDomainId;
} CUdevSmResource;
typedef struct CUdevResource_st {
    int type; /* CU_DEV_RESOURCE_TYPE_SM = 1 */
    unsigned char _internal_padding[92];
    union {
        CUdevSmResource sm;
        unsigned char _oversize[40];
    };
    struct CUdevResource_st *nextResource;
} CUdevResource;
typedef struct CUdevResourceDesc_st *CUdevResourceDesc;
typedef struct CUgreenCtx_st *CUgreenCtx;
typedef CUresult (*PFN_cuCtxPushCurrent)(CUcontext);
typedef CUresult (*PFN_cuCtxPopCurrent)(CUcontext *);
typedef CUresult (*PFN_cuCtxDestroy)(CUcontext);
typedef CUresult (*PFN_cuDeviceGetDevResource)(CUdevice, CUdevResource *, int);
typedef CUresult (*PFN_cuCtxGetDevResource)(CUcontext, CUdevResource *, int);
typedef CUresult (*PFN_cuGreenCtxGetDevResource)(CUgreenCtx, CUdevResource *, int);
typedef CUresult (*PFN_cuDevSmResourceSplitByCount)(CUdevResource *, unsigned *, const CUdevResource *, CUdevResource *,
                                                    unsigned, unsigned);
typedef CUresult (*PFN_cuDevResourceGenerateDesc)(CUdevResourceDesc *, CUdevResource *, unsigned);
typedef CUresult (*PFN_cuGreenCtxCreate)(CUgreenCtx *, CUdevResourceDesc, CUdevice, unsigned);
typedef CUresult (*PFN_cuGreenCtxDestroy)(CUgreenCtx);
typedef CUresult (*PFN_cuCtxFromGreenCtx)(CUcontext *, CUgreenCtx);
typedef CUresult (*PFN_cuGreenCtxStreamCreate)(CUstream *, CUgreenCtx, unsigned, int);
typedef CUresult (*PFN_cuGreenCtxRecordEvent)(CUgreenCtx, CUevent);
typedef CUresult (*PFN_cuGreenCtxWaitEvent)(CUgreenCtx, CUevent);
typedef unsigned CUlogIterator;
typedef void (*CUlogsCallback)(void *, int, char *, size_t);
typedef struct CUlogsCallbackEntry_st *CUlogsCallbackHandle;
typedef CUresult (*PFN_cuLogsCurrent)(CUlogIterator *, unsigned);
typedef CUresult (*PFN_cuLogsDumpToMemory)(CUlogIterator *, char *, size_t *, unsigned);
typedef CUresult (*PFN_cuLogsDumpToFile)(CUlogIterator *, const char *, unsigned);
typedef CUresult (*PFN_cuLogsRegisterCallback)(CUlogsCallback, void *, CUlogsCallbackHandle *);
typedef CUresult (*PFN_cuLogsUnregisterCallback)(CUlogsCallbackHandle);
#define CU_LIMIT_STACK_SIZE 0
#define CU_LIMIT_PRINTF_FIFO_SIZE 1
typedef CUresult (*PFN_cuCtxGetLimit)(size_t *, int);
typedef CUresult (*PFN_cuCtxSetLimit)(int, size_t);
typedef CUresult (*PFN_cuDevicePrimaryCtxReset)(CUdevice);

#endif
