/* An NVML program for gpupool's whole-system tests. It loads
 * libnvidia-ml.so.1 and libcuda.so.1 the way monitoring tools and frameworks
 * do (dlopen), and checks what NVML says about each device against what the
 * CUDA driver says, then the error paths.
 *
 *   nvml_check [exact]    every check; prints OK lines. With `exact` (a
 *                         server on the software driver, where nothing else
 *                         allocates), memory must match cuMemGetInfo exactly
 *   nvml_check init-fails CODE
 *                         nvmlInit_v2 must fail with CODE (for a libcuda.so.1
 *                         that is not gpupool's)
 *
 * NVML declarations are written from the published API reference.
 */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef int nvmlReturn_t;
typedef struct nvmlDevice_st *nvmlDevice_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NO_PERMISSION 4
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25

typedef struct {
    char busIdLegacy[16];
    unsigned int domain;
    unsigned int bus;
    unsigned int device;
    unsigned int pciDeviceId;
    unsigned int pciSubSystemId;
    char busId[32];
} nvmlPciInfo_t;

typedef struct {
    unsigned long long total;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_t;

typedef struct {
    unsigned int version;
    unsigned long long total;
    unsigned long long reserved;
    unsigned long long free;
    unsigned long long used;
} nvmlMemory_v2_t;
#define nvmlMemory_v2 ((unsigned int)(sizeof(nvmlMemory_v2_t) | (2 << 24)))

#define NVML_UUID_TYPE_ASCII 1
#define NVML_UUID_TYPE_BINARY 2
typedef struct {
    unsigned int version;
    unsigned int type;
    union {
        char str[41];
        unsigned char bytes[16];
    } value;
} nvmlUUID_t;
#define nvmlUUID_v1 ((unsigned int)(sizeof(nvmlUUID_t) | (1 << 24)))

typedef struct {
    unsigned int gpu;
    unsigned int memory;
} nvmlUtilization_t;

typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;

/* CUDA driver declarations (driver API reference). */
typedef int CUresult;
typedef int CUdevice;
typedef struct CUctx_st *CUcontext;
typedef unsigned long long CUdeviceptr;
#define CU_DEVICE_ATTRIBUTE_PCI_BUS_ID 33
#define CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID 34
#define CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID 50
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR 75
#define CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR 76

#define FAIL(...)                             \
    do {                                      \
        fprintf(stderr, "FAIL " __VA_ARGS__); \
        fprintf(stderr, "\n");                \
        exit(1);                              \
    } while (0)
#define EXPECT(cond, ...)      \
    do {                       \
        if (!(cond)) {         \
            FAIL(__VA_ARGS__); \
        }                      \
    } while (0)
/* An NVML call that must answer `want`. */
#define NV(want, call)                                                                              \
    do {                                                                                            \
        nvmlReturn_t r_ = (call);                                                                   \
        if (r_ != (want))                                                                           \
            FAIL("%s:%d %s = %d (%s), expected %d", __FILE__, __LINE__, #call, r_, nvmlErrorString(r_), \
                 (want));                                                                           \
    } while (0)
#define CU(call)                                                              \
    do {                                                                      \
        CUresult r_ = (call);                                                 \
        if (r_ != 0)                                                          \
            FAIL("%s:%d %s = %d", __FILE__, __LINE__, #call, r_);             \
    } while (0)

static void *need(void *lib, const char *name) {
    void *f = dlsym(lib, name);
    if (f == NULL)
        FAIL("dlsym(%s): %s", name, dlerror());
    return f;
}
#define LOAD(lib, ret, name, args) ret(*name) args = (ret(*) args)need(lib, #name)

static const char *(*nvmlErrorString)(nvmlReturn_t);

static void sleep_ms(int ms) { usleep(ms * 1000); }

int main(int argc, char **argv) {
    void *nvml = dlopen("libnvidia-ml.so.1", RTLD_NOW);
    if (nvml == NULL)
        FAIL("dlopen(libnvidia-ml.so.1): %s", dlerror());
    nvmlErrorString = (const char *(*)(nvmlReturn_t))need(nvml, "nvmlErrorString");
    LOAD(nvml, nvmlReturn_t, nvmlInit_v2, (void));
    LOAD(nvml, nvmlReturn_t, nvmlShutdown, (void));

    if (argc == 3 && strcmp(argv[1], "init-fails") == 0) {
        int want = atoi(argv[2]);
        nvmlReturn_t r = nvmlInit_v2();
        EXPECT(r == want, "nvmlInit_v2 = %d (%s), expected %d", r, nvmlErrorString(r), want);
        printf("OK init fails: %d %s\n", r, nvmlErrorString(r));
        return 0;
    }

    if (argc == 2 && strcmp(argv[1], "indices") == 0) {
        /* What NVML shows at each index, beside CUDA's devices: run with
         * CUDA_VISIBLE_DEVICES. */
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetCount_v2, (unsigned *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetHandleByIndex_v2, (unsigned, nvmlDevice_t *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetName, (nvmlDevice_t, char *, unsigned));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetIndex, (nvmlDevice_t, unsigned *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetMemoryInfo, (nvmlDevice_t, nvmlMemory_t *));
        NV(NVML_SUCCESS, nvmlInit_v2());
        unsigned count = 0;
        NV(NVML_SUCCESS, nvmlDeviceGetCount_v2(&count));
        printf("nvml count %u\n", count);
        for (unsigned i = 0; i < count; i++) {
            nvmlDevice_t h = NULL;
            nvmlReturn_t r = nvmlDeviceGetHandleByIndex_v2(i, &h);
            if (r == NVML_ERROR_NO_PERMISSION) {
                printf("nvml %u: hidden\n", i);
                continue;
            }
            EXPECT(r == NVML_SUCCESS, "handle %u: %d", i, r);
            char name[96];
            unsigned back = 99;
            NV(NVML_SUCCESS, nvmlDeviceGetName(h, name, sizeof name));
            NV(NVML_SUCCESS, nvmlDeviceGetIndex(h, &back));
            EXPECT(back == i, "index %u reads back as %u", i, back);
            /* A GPU the program does not see is described, but what it does
             * now is not told. */
            nvmlMemory_t mem;
            nvmlReturn_t m = nvmlDeviceGetMemoryInfo(h, &mem);
            EXPECT(m == NVML_SUCCESS || m == NVML_ERROR_NO_PERMISSION, "memory of %u: %d", i, m);
            printf("nvml %u: %s%s\n", i, name, m == NVML_SUCCESS ? "" : " (not the program's)");
        }
        NV(NVML_SUCCESS, nvmlShutdown());
        return 0;
    }

    if (argc == 2 && strcmp(argv[1], "nvlinks") == 0) {
        typedef struct {
            unsigned fieldId, scopeId;
            long long timestamp, latencyUsec;
            int valueType;
            nvmlReturn_t nvmlReturn;
            unsigned long long value;
        } field_t;
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetFieldValues, (nvmlDevice_t, int, field_t *));
        /* Each GPU's active NVLinks as NCCL reads them: state, P2P
         * capability, what is at the far end and its bus id. */
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetCount_v2, (unsigned *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetHandleByIndex_v2, (unsigned, nvmlDevice_t *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetNvLinkState, (nvmlDevice_t, unsigned, unsigned *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetNvLinkCapability, (nvmlDevice_t, unsigned, unsigned, unsigned *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetNvLinkRemotePciInfo_v2, (nvmlDevice_t, unsigned, nvmlPciInfo_t *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetNvLinkRemoteDeviceType, (nvmlDevice_t, unsigned, unsigned *));
        NV(NVML_SUCCESS, nvmlInit_v2());
        unsigned count = 0;
        NV(NVML_SUCCESS, nvmlDeviceGetCount_v2(&count));
        for (unsigned i = 0; i < count; i++) {
            nvmlDevice_t h;
            NV(NVML_SUCCESS, nvmlDeviceGetHandleByIndex_v2(i, &h));
            unsigned active = 0;
            for (unsigned l = 0; l < 18; l++) {
                unsigned on = 9, p2p = 9, type = 9;
                NV(NVML_SUCCESS, nvmlDeviceGetNvLinkState(h, l, &on));
                NV(NVML_SUCCESS, nvmlDeviceGetNvLinkCapability(h, l, 0, &p2p));
                EXPECT(on == p2p, "link %u of %u: state %u, P2P %u", l, i, on, p2p);
                if (!on) {
                    nvmlPciInfo_t none;
                    NV(NVML_ERROR_NOT_SUPPORTED, nvmlDeviceGetNvLinkRemotePciInfo_v2(h, l, &none));
                    continue;
                }
                nvmlPciInfo_t far;
                NV(NVML_SUCCESS, nvmlDeviceGetNvLinkRemotePciInfo_v2(h, l, &far));
                NV(NVML_SUCCESS, nvmlDeviceGetNvLinkRemoteDeviceType(h, l, &type));
                printf("nvlink %u.%u: %s %s\n", i, l, type == 0 ? "gpu" : type == 2 ? "switch" : "?", far.busId);
                active++;
                if (type == 0) {
                    /* The GPU at the far end: NVML's P2P status says NVLink. */
                    nvmlDevice_t peer;
                    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetHandleByPciBusId_v2, (const char *, nvmlDevice_t *));
                    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetP2PStatus, (nvmlDevice_t, nvmlDevice_t, unsigned, unsigned *));
                    NV(NVML_SUCCESS, nvmlDeviceGetHandleByPciBusId_v2(far.busId, &peer));
                    unsigned nvl = 9;
                    NV(NVML_SUCCESS, nvmlDeviceGetP2PStatus(h, peer, 2, &nvl));
                    EXPECT(nvl == 0, "NVLink P2P status %u from %u across link %u", nvl, i, l);
                }
            }
            unsigned dummy;
            NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetNvLinkState(h, 18, &dummy));
            /* The same through field values (NVML_FI_DEV_NVLINK_LINK_COUNT,
             * NVML_FI_DEV_NVLINK_GET_STATE of link 0), as NCCL reads them on
             * Hopper; an unknown field answers in its own status. */
            field_t f[3] = {{91, 0}, {165, 0}, {1, 0}};
            NV(NVML_SUCCESS, nvmlDeviceGetFieldValues(h, 3, f));
            EXPECT(f[0].nvmlReturn == NVML_SUCCESS && (unsigned)f[0].value == active, "link count field %u (%d)",
                   (unsigned)f[0].value, f[0].nvmlReturn);
            EXPECT(f[1].nvmlReturn == NVML_SUCCESS && (unsigned)f[1].value == (active > 0), "link 0 state field %u",
                   (unsigned)f[1].value);
            EXPECT(f[2].nvmlReturn == NVML_ERROR_NOT_SUPPORTED, "field 1 answered %d", f[2].nvmlReturn);
            printf("nvlinks %u: %u\n", i, active);
        }
        NV(NVML_SUCCESS, nvmlShutdown());
        return 0;
    }

    if (argc == 2 && strcmp(argv[1], "peers") == 0) {
        /* What NVML says of the link between GPUs 0 and 1, each way, for
         * reads, writes and atomics, beside the driver's answer. */
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetHandleByIndex_v2, (unsigned, nvmlDevice_t *));
        LOAD(nvml, nvmlReturn_t, nvmlDeviceGetP2PStatus, (nvmlDevice_t, nvmlDevice_t, unsigned, unsigned *));
        NV(NVML_SUCCESS, nvmlInit_v2());
        nvmlDevice_t d[2];
        NV(NVML_SUCCESS, nvmlDeviceGetHandleByIndex_v2(0, &d[0]));
        NV(NVML_SUCCESS, nvmlDeviceGetHandleByIndex_v2(1, &d[1]));
        void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
        if (cuda == NULL)
            FAIL("dlopen(libcuda.so.1): %s", dlerror());
        int (*cuDeviceCanAccessPeer)(int *, int, int) = (int (*)(int *, int, int))need(cuda, "cuDeviceCanAccessPeer");
        for (int from = 0; from < 2; from++) {
            int can = -1;
            EXPECT(cuDeviceCanAccessPeer(&can, from, 1 - from) == 0, "cuDeviceCanAccessPeer");
            unsigned read = 99, write = 99, atomics = 99;
            NV(NVML_SUCCESS, nvmlDeviceGetP2PStatus(d[from], d[1 - from], 0, &read));
            NV(NVML_SUCCESS, nvmlDeviceGetP2PStatus(d[from], d[1 - from], 1, &write));
            NV(NVML_SUCCESS, nvmlDeviceGetP2PStatus(d[from], d[1 - from], 3, &atomics));
            EXPECT((read == 0) == (can == 1) && (write == 0) == (can == 1),
                   "NVML says read %u write %u from %d, the driver can access %d", read, write, from, can);
            printf("p2p %d->%d read %u write %u atomics %u\n", from, 1 - from, read, write, atomics);
        }
        NV(NVML_SUCCESS, nvmlShutdown());
        return 0;
    }

    LOAD(nvml, nvmlReturn_t, nvmlSystemGetDriverVersion, (char *, unsigned));
    LOAD(nvml, nvmlReturn_t, nvmlSystemGetCudaDriverVersion_v2, (int *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetCount_v2, (unsigned *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetHandleByIndex_v2, (unsigned, nvmlDevice_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetHandleByUUID, (const char *, nvmlDevice_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetHandleByUUIDV, (const nvmlUUID_t *, nvmlDevice_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetHandleByPciBusId_v2, (const char *, nvmlDevice_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetIndex, (nvmlDevice_t, unsigned *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetName, (nvmlDevice_t, char *, unsigned));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetUUID, (nvmlDevice_t, char *, unsigned));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetMemoryInfo, (nvmlDevice_t, nvmlMemory_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetMemoryInfo_v2, (nvmlDevice_t, nvmlMemory_v2_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetUtilizationRates, (nvmlDevice_t, nvmlUtilization_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetTemperature, (nvmlDevice_t, int, unsigned *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetPowerUsage, (nvmlDevice_t, unsigned *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetPciInfo_v3, (nvmlDevice_t, nvmlPciInfo_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetCudaComputeCapability, (nvmlDevice_t, int *, int *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetArchitecture, (nvmlDevice_t, unsigned *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetComputeRunningProcesses_v3,
         (nvmlDevice_t, unsigned *, nvmlProcessInfo_t *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetNvLinkState, (nvmlDevice_t, unsigned, int *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetGpuFabricInfoV, (nvmlDevice_t, void *));
    LOAD(nvml, nvmlReturn_t, nvmlDeviceGetP2PStatus, (nvmlDevice_t, nvmlDevice_t, unsigned, unsigned *));

    /* Before nvmlInit: everything is refused as uninitialised. */
    unsigned count = 12345;
    NV(NVML_ERROR_UNINITIALIZED, nvmlDeviceGetCount_v2(&count));
    EXPECT(count == 12345, "count written before init");
    NV(NVML_ERROR_UNINITIALIZED, nvmlShutdown());
    nvmlDevice_t h = NULL;
    NV(NVML_ERROR_UNINITIALIZED, nvmlDeviceGetHandleByIndex_v2(0, &h));
    printf("OK uninitialised calls refused\n");

    NV(NVML_SUCCESS, nvmlInit_v2());

    void *cuda = dlopen("libcuda.so.1", RTLD_NOW);
    if (cuda == NULL)
        FAIL("dlopen(libcuda.so.1): %s", dlerror());
    LOAD(cuda, CUresult, cuInit, (unsigned));
    LOAD(cuda, CUresult, cuDriverGetVersion, (int *));
    LOAD(cuda, CUresult, cuDeviceGetCount, (int *));
    LOAD(cuda, CUresult, cuDeviceGet, (CUdevice *, int));
    LOAD(cuda, CUresult, cuDeviceGetName, (char *, int, CUdevice));
    LOAD(cuda, CUresult, cuDeviceGetUuid_v2, (unsigned char *, CUdevice));
    LOAD(cuda, CUresult, cuDeviceTotalMem_v2, (size_t *, CUdevice));
    LOAD(cuda, CUresult, cuDeviceGetAttribute, (int *, int, CUdevice));
    LOAD(cuda, CUresult, cuDevicePrimaryCtxRetain, (CUcontext *, CUdevice));
    LOAD(cuda, CUresult, cuDevicePrimaryCtxRelease_v2, (CUdevice));
    LOAD(cuda, CUresult, cuCtxSetCurrent, (CUcontext));
    LOAD(cuda, CUresult, cuMemAlloc_v2, (CUdeviceptr *, size_t));
    LOAD(cuda, CUresult, cuMemFree_v2, (CUdeviceptr));
    LOAD(cuda, CUresult, cuMemGetInfo_v2, (size_t *, size_t *));
    CU(cuInit(0));

    int cu_version = 0, nv_version = 0;
    CU(cuDriverGetVersion(&cu_version));
    NV(NVML_SUCCESS, nvmlSystemGetCudaDriverVersion_v2(&nv_version));
    EXPECT(cu_version == nv_version, "CUDA version: NVML %d, driver %d", nv_version, cu_version);
    char text[96];
    NV(NVML_SUCCESS, nvmlSystemGetDriverVersion(text, sizeof text));
    NV(NVML_ERROR_INSUFFICIENT_SIZE, nvmlSystemGetDriverVersion(text, 2));
    printf("OK versions cuda=%d driver=\"%s\"\n", nv_version, text);

    int cu_count = 0;
    CU(cuDeviceGetCount(&cu_count));
    NV(NVML_SUCCESS, nvmlDeviceGetCount_v2(&count));
    EXPECT((int)count == cu_count && count > 0, "device count: NVML %u, driver %d", count, cu_count);

    for (unsigned i = 0; i < count; i++) {
        CUdevice dev;
        CU(cuDeviceGet(&dev, (int)i));
        NV(NVML_SUCCESS, nvmlDeviceGetHandleByIndex_v2(i, &h));
        EXPECT(h != NULL, "NULL handle for %u", i);
        unsigned index = 99;
        NV(NVML_SUCCESS, nvmlDeviceGetIndex(h, &index));
        EXPECT(index == i, "index %u for device %u", index, i);

        char cu_name[256], nv_name[96];
        CU(cuDeviceGetName(cu_name, sizeof cu_name, dev));
        NV(NVML_SUCCESS, nvmlDeviceGetName(h, nv_name, sizeof nv_name));
        EXPECT(strcmp(cu_name, nv_name) == 0, "name: NVML \"%s\", driver \"%s\"", nv_name, cu_name);

        unsigned char u[16];
        CU(cuDeviceGetUuid_v2(u, dev));
        char want_uuid[64], nv_uuid[96];
        snprintf(want_uuid, sizeof want_uuid,
                 "GPU-%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", u[0], u[1], u[2],
                 u[3], u[4], u[5], u[6], u[7], u[8], u[9], u[10], u[11], u[12], u[13], u[14], u[15]);
        NV(NVML_SUCCESS, nvmlDeviceGetUUID(h, nv_uuid, sizeof nv_uuid));
        EXPECT(strcmp(want_uuid, nv_uuid) == 0, "UUID: NVML %s, driver %s", nv_uuid, want_uuid);
        nvmlDevice_t by = NULL;
        NV(NVML_SUCCESS, nvmlDeviceGetHandleByUUID(nv_uuid, &by));
        EXPECT(by == h, "handle by UUID differs");
        /* The versioned lookup, by the text and by the 16 bytes. */
        nvmlUUID_t uv;
        memset(&uv, 0, sizeof uv);
        uv.version = nvmlUUID_v1;
        uv.type = NVML_UUID_TYPE_ASCII;
        snprintf(uv.value.str, sizeof uv.value.str, "%s", nv_uuid);
        by = NULL;
        NV(NVML_SUCCESS, nvmlDeviceGetHandleByUUIDV(&uv, &by));
        EXPECT(by == h, "handle by UUID text (V) differs");
        memset(&uv.value, 0, sizeof uv.value);
        uv.type = NVML_UUID_TYPE_BINARY;
        memcpy(uv.value.bytes, u, 16);
        by = NULL;
        NV(NVML_SUCCESS, nvmlDeviceGetHandleByUUIDV(&uv, &by));
        EXPECT(by == h, "handle by UUID bytes (V) differs");
        uv.version = nvmlUUID_v1 + 1;
        NV(NVML_ERROR_ARGUMENT_VERSION_MISMATCH, nvmlDeviceGetHandleByUUIDV(&uv, &by));
        uv.version = nvmlUUID_v1;
        uv.type = 7;
        NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetHandleByUUIDV(&uv, &by));
        uv.type = NVML_UUID_TYPE_BINARY;
        uv.value.bytes[15] ^= 0xff;
        NV(NVML_ERROR_NOT_FOUND, nvmlDeviceGetHandleByUUIDV(&uv, &by));

        int bus, slot, domain, major, minor;
        CU(cuDeviceGetAttribute(&bus, CU_DEVICE_ATTRIBUTE_PCI_BUS_ID, dev));
        CU(cuDeviceGetAttribute(&slot, CU_DEVICE_ATTRIBUTE_PCI_DEVICE_ID, dev));
        CU(cuDeviceGetAttribute(&domain, CU_DEVICE_ATTRIBUTE_PCI_DOMAIN_ID, dev));
        CU(cuDeviceGetAttribute(&major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, dev));
        CU(cuDeviceGetAttribute(&minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, dev));
        nvmlPciInfo_t pci;
        memset(&pci, 0x55, sizeof pci);
        NV(NVML_SUCCESS, nvmlDeviceGetPciInfo_v3(h, &pci));
        char want_bus[32];
        snprintf(want_bus, sizeof want_bus, "%08X:%02X:%02X.0", domain, bus, slot);
        EXPECT(strcmp(pci.busId, want_bus) == 0, "busId \"%s\", expected \"%s\"", pci.busId, want_bus);
        EXPECT(pci.domain == (unsigned)domain && pci.bus == (unsigned)bus && pci.device == (unsigned)slot,
               "PCI fields %x:%x:%x", pci.domain, pci.bus, pci.device);
        /* The short form cudaDeviceGetPCIBusId gives, in lowercase. */
        char short_bus[32];
        snprintf(short_bus, sizeof short_bus, "%04x:%02x:%02x.0", domain, bus, slot);
        NV(NVML_SUCCESS, nvmlDeviceGetHandleByPciBusId_v2(short_bus, &by));
        EXPECT(by == h, "handle by PCI bus id differs");

        int nv_major = -1, nv_minor = -1;
        NV(NVML_SUCCESS, nvmlDeviceGetCudaComputeCapability(h, &nv_major, &nv_minor));
        EXPECT(nv_major == major && nv_minor == minor, "compute capability %d.%d, driver %d.%d", nv_major,
               nv_minor, major, minor);

        /* Hopper (sm_90) is NVML's architecture 9. */
        unsigned arch = 0;
        NV(NVML_SUCCESS, nvmlDeviceGetArchitecture(h, &arch));
        EXPECT(major != 9 || arch == 9, "architecture %u for sm_%d%d", arch, major, minor);
        unsigned procs = 5;
        NV(NVML_SUCCESS, nvmlDeviceGetComputeRunningProcesses_v3(h, &procs, NULL));
        EXPECT(procs == 0, "%u processes", procs);
        printf("OK device %u \"%s\" %s %s sm_%d%d\n", i, nv_name, nv_uuid, pci.busId, major, minor);
    }

    /* Memory, as the session sees it, with an allocation of its own. */
    CUcontext ctx;
    CU(cuDevicePrimaryCtxRetain(&ctx, 0));
    CU(cuCtxSetCurrent(ctx));
    const size_t held = 8 << 20;
    CUdeviceptr p;
    CU(cuMemAlloc_v2(&p, held));
    size_t cu_free = 0, cu_total = 0, dev_total = 0;
    CU(cuMemGetInfo_v2(&cu_free, &cu_total));
    CU(cuDeviceTotalMem_v2(&dev_total, 0));
    NV(NVML_SUCCESS, nvmlDeviceGetHandleByIndex_v2(0, &h));
    nvmlMemory_t mem;
    NV(NVML_SUCCESS, nvmlDeviceGetMemoryInfo(h, &mem));
    EXPECT(mem.total == dev_total, "total %llu, cuDeviceTotalMem %zu", mem.total, dev_total);
    EXPECT(mem.used == mem.total - mem.free, "used %llu != total - free", mem.used);
    EXPECT(mem.used >= held, "used %llu with %zu allocated", mem.used, held);
    /* On a real GPU others may allocate between the two reads; on the
     * software driver the numbers are the session's own and exact. */
    int exact = argc == 2 && strcmp(argv[1], "exact") == 0;
    if (exact)
        EXPECT(mem.free == cu_free && mem.total == cu_total, "free %llu, cuMemGetInfo %zu", mem.free, cu_free);
    nvmlMemory_v2_t mem2;
    memset(&mem2, 0, sizeof mem2);
    mem2.version = nvmlMemory_v2;
    NV(NVML_SUCCESS, nvmlDeviceGetMemoryInfo_v2(h, &mem2));
    EXPECT(mem2.total == mem.total && mem2.version == nvmlMemory_v2, "memory v2 total %llu", mem2.total);
    mem2.version = 1;
    NV(NVML_ERROR_ARGUMENT_VERSION_MISMATCH, nvmlDeviceGetMemoryInfo_v2(h, &mem2));
    CU(cuMemFree_v2(p));
    sleep_ms(150); /* past the shim's cache */
    nvmlMemory_t after;
    NV(NVML_SUCCESS, nvmlDeviceGetMemoryInfo(h, &after));
    if (exact)
        EXPECT(after.free == mem.free + held, "free after cuMemFree %llu, before %llu", after.free, mem.free);
    printf("OK memory total=%llu used=%llu free=%llu free-after-release=%llu\n", mem.total, mem.used, mem.free,
           after.free);
    CU(cuDevicePrimaryCtxRelease_v2(0));

    /* Sensors: known when the server has NVML, else not supported. */
    nvmlUtilization_t util;
    nvmlReturn_t r = nvmlDeviceGetUtilizationRates(h, &util);
    unsigned temp = 0, power = 0;
    if (r == NVML_SUCCESS) {
        EXPECT(util.gpu <= 100 && util.memory <= 100, "utilisation %u%% %u%%", util.gpu, util.memory);
        NV(NVML_SUCCESS, nvmlDeviceGetTemperature(h, 0, &temp));
        NV(NVML_SUCCESS, nvmlDeviceGetPowerUsage(h, &power));
        printf("OK sensors gpu=%u%% mem=%u%% temp=%uC power=%umW\n", util.gpu, util.memory, temp, power);
    } else {
        EXPECT(r == NVML_ERROR_NOT_SUPPORTED, "nvmlDeviceGetUtilizationRates = %d", r);
        NV(NVML_ERROR_NOT_SUPPORTED, nvmlDeviceGetTemperature(h, 0, &temp));
        NV(NVML_ERROR_NOT_SUPPORTED, nvmlDeviceGetPowerUsage(h, &power));
        printf("OK sensors not supported\n");
    }

    /* Error paths. */
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetHandleByIndex_v2(count, &h));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetHandleByIndex_v2(0, NULL));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetCount_v2(NULL));
    NV(NVML_SUCCESS, nvmlDeviceGetHandleByIndex_v2(0, &h));
    char small[4];
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetName(h, NULL, 64));
    NV(NVML_ERROR_INSUFFICIENT_SIZE, nvmlDeviceGetName(h, small, sizeof small));
    char uuid40[40];
    NV(NVML_ERROR_INSUFFICIENT_SIZE, nvmlDeviceGetUUID(h, uuid40, sizeof uuid40));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetMemoryInfo(h, NULL));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetUtilizationRates(h, NULL));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetPciInfo_v3(h, NULL));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetCudaComputeCapability(h, NULL, NULL));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetTemperature(h, 7, &temp));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetComputeRunningProcesses_v3(h, NULL, NULL));
    nvmlDevice_t foreign = (nvmlDevice_t)&mem;
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetMemoryInfo(foreign, &mem));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetName(NULL, text, sizeof text));
    nvmlDevice_t by = NULL;
    NV(NVML_ERROR_NOT_FOUND, nvmlDeviceGetHandleByUUID("GPU-00000000-0000-0000-0000-0000000000ff", &by));
    NV(NVML_ERROR_NOT_FOUND, nvmlDeviceGetHandleByPciBusId_v2("0000:ff:1f.0", &by));
    int active = 9;
    /* A server without NVLinks: link 0 is inactive; past the last link,
     * an invalid argument. */
    NV(NVML_SUCCESS, nvmlDeviceGetNvLinkState(h, 0, &active));
    EXPECT(active == 0, "NVLink 0 active %d on a server without NVLinks", active);
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetNvLinkState(h, 18, &active));
    /* No NVLink fabric: the state is NOT_SUPPORTED (0), as PyTorch reads it
     * at start-up (version 2: version, cluster UUID, status, clique id,
     * state, health mask). */
    struct {
        unsigned version;
        unsigned char uuid[16];
        int status;
        unsigned clique;
        unsigned char state;
        unsigned health;
    } fabric;
    memset(&fabric, 0x5a, sizeof fabric);
    fabric.version = (unsigned)sizeof fabric | (2u << 24);
    NV(NVML_SUCCESS, nvmlDeviceGetGpuFabricInfoV(h, &fabric));
    EXPECT(fabric.state == 0 && fabric.status == 0 && fabric.uuid[0] == 0 && fabric.health == 0,
           "fabric state %u status %d", fabric.state, fabric.status);
    fabric.version = (unsigned)sizeof fabric | (1u << 24);
    NV(NVML_ERROR_ARGUMENT_VERSION_MISMATCH, nvmlDeviceGetGpuFabricInfoV(h, &fabric));
    /* Peer-to-peer: a GPU and itself, every capability (NCCL asks at
     * start-up); no link to another is offered. */
    for (unsigned cap = 0; cap <= 5; cap++) {
        unsigned p2p = 99;
        NV(NVML_SUCCESS, nvmlDeviceGetP2PStatus(h, h, cap, &p2p));
        EXPECT(p2p == 0, "P2P status of a GPU and itself, capability %u: %u", cap, p2p);
    }
    unsigned p2p = 0;
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetP2PStatus(h, h, 6, &p2p));
    NV(NVML_ERROR_INVALID_ARGUMENT, nvmlDeviceGetP2PStatus(h, h, 0, NULL));
    EXPECT(strcmp(nvmlErrorString(NVML_ERROR_INVALID_ARGUMENT), "Invalid Argument") == 0, "error string \"%s\"",
           nvmlErrorString(NVML_ERROR_INVALID_ARGUMENT));
    printf("OK error paths\n");

    /* Initialisation is counted. */
    NV(NVML_SUCCESS, nvmlInit_v2());
    NV(NVML_SUCCESS, nvmlShutdown());
    NV(NVML_SUCCESS, nvmlDeviceGetCount_v2(&count));
    NV(NVML_SUCCESS, nvmlShutdown());
    NV(NVML_ERROR_UNINITIALIZED, nvmlDeviceGetCount_v2(&count));
    NV(NVML_ERROR_UNINITIALIZED, nvmlShutdown());
    /* Handles stay valid across a new initialisation. */
    NV(NVML_SUCCESS, nvmlInit_v2());
    NV(NVML_SUCCESS, nvmlDeviceGetName(h, text, sizeof text));
    NV(NVML_SUCCESS, nvmlShutdown());
    printf("OK init counted\n");

    printf("OK nvml devices=%u\n", count);
    return 0;
}
