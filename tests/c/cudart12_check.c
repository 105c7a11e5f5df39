/* The CUDA 12 runtime (libcudart.so.12, CUDA 12.8) through the driver: its
 * start-up (export tables, integrity check), memory, streams, events,
 * stream-ordered allocation, a kernel it registers from a fat binary and
 * launches, and a graph captured from a stream. No CUDA 12 compiler is on
 * PyPI, so this program does what nvcc's generated host code does: it
 * registers the fat binary (built by a CUDA 13 nvcc, given as argv[1]) and
 * the kernel with the runtime itself. The runtime is opened with dlopen,
 * the declarations written here from the runtime API's documentation.
 *
 * Usage: cudart12_check FATBIN   (a fat binary holding gp_scale)
 * Prints "OK cudart12 ..." and exits 0 when every check holds. */
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    unsigned x, y, z;
} dim3;
/* __fatBinC_Wrapper_t */
typedef struct {
    int magic, version;
    const void *data;
    void *filename_or_fatbins;
} fatbin_wrapper;

static void *rt;
static const char *(*error_string)(int);

static void *fn(const char *name) {
    void *f = dlsym(rt, name);
    if (!f) {
        printf("FAIL the runtime has no %s\n", name);
        exit(1);
    }
    return f;
}

#define CALL(T, name, ...)                                                                 \
    do {                                                                                   \
        int r_ = ((T)fn(#name))(__VA_ARGS__);                                              \
        if (r_ != 0) {                                                                     \
            printf("FAIL %s:%d %s: %d (%s)\n", __FILE__, __LINE__, #name, r_, error_string(r_)); \
            exit(1);                                                                       \
        }                                                                                  \
    } while (0)
#define EXPECT(c, ...)                                        \
    do {                                                      \
        if (!(c)) {                                           \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);       \
            printf(__VA_ARGS__);                              \
            printf("\n");                                     \
            exit(1);                                          \
        }                                                     \
    } while (0)

typedef int (*p_int)(int *);
typedef int (*p_i)(int);
typedef int (*p_void)(void);
typedef int (*p_pp)(void **);
typedef int (*p_p)(void *);
typedef int (*p_malloc)(void **, size_t);
typedef int (*p_memcpy)(void *, const void *, size_t, int);
typedef int (*p_memcpy_async)(void *, const void *, size_t, int, void *);
typedef int (*p_memset)(void *, int, size_t);
typedef int (*p_pp2)(void *, void *);
typedef int (*p_elapsed)(float *, void *, void *);
typedef int (*p_malloc_async)(void **, size_t, void *);
typedef int (*p_launch)(const void *, dim3, dim3, void **, size_t, void *);
typedef int (*p_capture)(void *, int);
typedef int (*p_instantiate)(void **, void *, unsigned long long);

/* The kernel's host-side name: nvcc makes a stub function whose address
 * stands for the kernel. */
static void gp_scale_stub(void) {}

int main(int argc, char **argv) {
    EXPECT(argc == 2, "usage: cudart12_check FATBIN");
    rt = dlopen("libcudart.so.12", RTLD_NOW);
    EXPECT(rt, "dlopen(libcudart.so.12): %s", dlerror());
    error_string = (const char *(*)(int))fn("cudaGetErrorString");
    int version = 0, driver = 0, count = 0;
    CALL(p_int, cudaRuntimeGetVersion, &version);
    CALL(p_int, cudaDriverGetVersion, &driver);
    EXPECT(version / 1000 == 12, "runtime version %d", version);
    CALL(p_int, cudaGetDeviceCount, &count);
    EXPECT(count >= 1, "%d devices", count);
    CALL(p_i, cudaSetDevice, 0);
    int sms = 0;
    CALL(int (*)(int *, int, int), cudaDeviceGetAttribute, &sms, 16 /* multiprocessor count */, 0);
    EXPECT(sms > 0, "%d SMs", sms);

    /* What nvcc's host code does before main: register the fat binary and
     * its kernel. */
    FILE *f = fopen(argv[1], "rb");
    EXPECT(f, "cannot open %s", argv[1]);
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned long long *image = calloc((size_t)size / 8 + 1, 8);
    EXPECT(fread(image, 1, (size_t)size, f) == (size_t)size, "short read of %s", argv[1]);
    fclose(f);
    static fatbin_wrapper wrapper;
    wrapper.magic = 0x466243b1;
    wrapper.version = 1;
    wrapper.data = image;
    void **(*register_fatbin)(void *) = (void **(*)(void *))fn("__cudaRegisterFatBinary");
    void (*register_end)(void **) = (void (*)(void **))fn("__cudaRegisterFatBinaryEnd");
    void (*register_function)(void **, const char *, char *, const char *, int, void *, void *, void *, void *, int *) =
        (void (*)(void **, const char *, char *, const char *, int, void *, void *, void *, void *, int *))fn(
            "__cudaRegisterFunction");
    void (*unregister_fatbin)(void **) = (void (*)(void **))fn("__cudaUnregisterFatBinary");
    void **handle = register_fatbin(&wrapper);
    register_function(handle, (const char *)gp_scale_stub, "gp_scale", "gp_scale", -1, NULL, NULL, NULL, NULL, NULL);
    register_end(handle);

    enum { N = 100000 };
    const size_t bytes = N * sizeof(float);
    float *host = malloc(bytes), *back = malloc(bytes);
    for (int i = 0; i < N; i++) host[i] = (float)(i % 1000);
    void *d = NULL;
    CALL(p_malloc, cudaMalloc, &d, bytes);
    CALL(p_memset, cudaMemset, d, 0, bytes);
    CALL(p_memcpy, cudaMemcpy, d, host, bytes, 1 /* host to device */);

    void *stream = NULL, *start = NULL, *end = NULL;
    CALL(p_pp, cudaStreamCreate, &stream);
    CALL(p_pp, cudaEventCreate, &start);
    CALL(p_pp, cudaEventCreate, &end);
    CALL(p_pp2, cudaEventRecord, start, stream);
    float a = 2.5f;
    int n = N;
    void *args[] = {&d, &a, &n};
    dim3 grid = {(N + 255) / 256, 1, 1}, block = {256, 1, 1};
    CALL(p_launch, cudaLaunchKernel, (const void *)gp_scale_stub, grid, block, args, 0, stream);
    CALL(p_void, cudaGetLastError);
    CALL(p_pp2, cudaEventRecord, end, stream);
    CALL(p_p, cudaEventSynchronize, end);
    float ms = -1.0f;
    CALL(p_elapsed, cudaEventElapsedTime, &ms, start, end);
    EXPECT(ms >= 0.0f, "elapsed %g ms", ms);
    CALL(p_memcpy_async, cudaMemcpyAsync, back, d, bytes, 2 /* device to host */, stream);
    CALL(p_p, cudaStreamSynchronize, stream);
    for (int i = 0; i < N; i++) EXPECT(back[i] == 2.5f * (float)(i % 1000), "scaled[%d] = %g", i, back[i]);

    /* Stream-ordered memory, and the same launch captured into a graph and
     * replayed twice. */
    void *e = NULL;
    CALL(p_malloc_async, cudaMallocAsync, &e, bytes, stream);
    CALL(p_memcpy_async, cudaMemcpyAsync, e, host, bytes, 1, stream);
    void *gargs[] = {&e, &a, &n};
    CALL(p_capture, cudaStreamBeginCapture, stream, 0 /* global */);
    CALL(p_launch, cudaLaunchKernel, (const void *)gp_scale_stub, grid, block, gargs, 0, stream);
    void *graph = NULL, *exec = NULL;
    CALL(p_pp2, cudaStreamEndCapture, stream, &graph);
    CALL(p_instantiate, cudaGraphInstantiate, &exec, graph, 0);
    CALL(p_pp2, cudaGraphLaunch, exec, stream);
    CALL(p_pp2, cudaGraphLaunch, exec, stream);
    CALL(p_memcpy_async, cudaMemcpyAsync, back, e, bytes, 2, stream);
    CALL(p_pp2, cudaFreeAsync, e, stream);
    CALL(p_p, cudaStreamSynchronize, stream);
    for (int i = 0; i < N; i++)
        EXPECT(back[i] == 6.25f * (float)(i % 1000), "replayed[%d] = %g", i, back[i]);
    CALL(p_p, cudaGraphExecDestroy, exec);
    CALL(p_p, cudaGraphDestroy, graph);

    CALL(p_p, cudaEventDestroy, start);
    CALL(p_p, cudaEventDestroy, end);
    CALL(p_p, cudaStreamDestroy, stream);
    CALL(p_p, cudaFree, d);
    CALL(p_void, cudaDeviceSynchronize);
    unregister_fatbin(handle);
    printf("OK cudart12 runtime %d driver %d\n", version, driver);
    free(host);
    free(back);
    free(image);
    return 0;
}
