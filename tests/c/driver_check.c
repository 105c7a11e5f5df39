/* A driver-API program for gpupool's whole-system tests and GPU script.
 * It loads libcuda.so.1 the way real programs do and checks every result it
 * gets against values it computes itself.
 *
 *   driver_check vadd      vector add from a PTX module (kernelParams and extra)
 *   driver_check fault     a faulting kernel: the error surfaces at the next sync
 *   driver_check oob       out-of-bounds copies and memsets are refused
 *   driver_check big MIB   round trip of MIB mebibytes through device memory
 *   driver_check streams   async copies, events, query-until-done
 *   driver_check hold MIB  allocate MIB mebibytes, print HOLDING, wait to be killed
 *   driver_check unsupported  call an entry point gpupool does not implement
 *   driver_check bench     timings: sync round trip, launch rate, bandwidth
 *   driver_check latency   timings: sync round trip and 4-byte copy only
 *   driver_check threads   several threads at once, each on its own stream: async
 *                          copies, launches and sync calls, results checked
 *   driver_check library   kernels of a library (cuLibrary*, cuKernel*), launched
 *                          by kernel handle and by function
 *   driver_check copies2d  pitched allocation, 2D copies (host<->device in bands
 *                          and in rows wider than a chunk, device<->device), 3D
 *                          copies of sub-volumes between pitched memories, and
 *                          2D memsets, unified-address copies, host memory
 *                          registration; gaps between rows stay untouched
 *   driver_check queries   stream, context and device queries answered in the shim
 *   driver_check callbacks host functions (cuLaunchHostFunc, cuStreamAddCallback):
 *                          run in order on a thread of their own, after the data
 *                          before them landed, delivered with no further call;
 *                          synchronising calls and queries wait for exactly the
 *                          functions their work follows
 *   driver_check pools     stream-ordered allocation (cuMemAllocAsync, cuMemFreeAsync)
 *                          from the default pool and from a pool of its own, pool
 *                          attributes and the device's current pool
 *   driver_check vmm       virtual memory management: physical pieces mapped one
 *                          after another into a reservation, used as one range
 *                          by copies and a kernel across the pieces' boundary
 *   driver_check managed   managed memory (cuMemAllocManaged): written and read on the
 *                          host around kernels, copies and memsets, read by threads
 *                          at once, prefetch, advice and pointer attributes
 *   driver_check ipc       memory and an event shared with a second process (this
 *                          program again, `ipc-child`): it reads what a kernel here
 *                          wrote, waits for the event, writes back through the
 *                          opened memory; handles of freed memory are refused
 *   driver_check vmm-ipc   physical memory exported as a file descriptor
 *                          (cuMemExportToShareableHandle) and mapped by a second
 *                          process (`vmm-ipc-child`), which reads and writes it
 *   driver_check ipc-hold  share memory, print `HANDLE <hex>` and HOLDING, wait
 *   driver_check ipc-refused HEX CODE  opening the memory handle HEX gives CODE
 *   driver_check hostnodes host nodes of graphs (cuLaunchHostFunc in a capture,
 *                          cuGraphAddHostNode, a child graph's copied twice): they
 *                          run at every launch, in order, and synchronising waits
 *                          for them
 *   driver_check fork      children forked after start-up: their calls fail, and
 *                          their exit leaves the parent's session working
 *   driver_check peers     peer access between devices 0 and 1: the answers agree,
 *                          and once given access, device 0's kernel writes device
 *                          1's memory (GPUPOOL_EXPECT_PEER_ACCESS: the answer
 *                          expected; GPUPOOL_CHECK_PEER_FAULT: a context without
 *                          access faults there)
 *   driver_check limits    context limits: asked once, then the same until one is
 *                          set; the stack size asked every time; a reset context's
 *                          back to its defaults
 *   driver_check logs FILE the driver's error log: failed calls told to callbacks
 *                          (once, also when a callback's own call fails), dumped
 *                          to memory from an iterator and to FILE, the oldest
 *                          messages overwritten past the log's capacity
 *   driver_check green [fault]  green contexts: the device's SMs split, a green
 *                          context of one group running a kernel on its default
 *                          stream and on a stream of its own over memory of the
 *                          primary context, its events, its resource and streams'
 *                          contexts; with `fault`, a kernel faulting on a green
 *                          stream with the primary context current is reported
 *                          by that stream's synchronisation
 *   driver_check cuda135   entry points CUDA 13.5's cuda.h adds, linked by name as a
 *                          program built with it links them: parameter counts of a
 *                          function and a kernel, host functions with a sync mode
 *   driver_check reuse     modules and libraries of one kernel each, of different
 *                          parameter layouts, loaded, run and unloaded in turn; then
 *                          contexts, the first with a limit set, made and destroyed
 *                          in turn
 *   driver_check uva       no page of the program at device memory; an allocation
 *                          never placed on a page the program mapped
 *   driver_check graph     stream capture of launches, a device copy and a memset,
 *                          forked to a second stream and joined, replayed from
 *                          a graph with new inputs each time
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>

#include "driver_api.h"
#include "kernels.ptx.h"

static PFN_cuGetProcAddress_v2 getProc;
static PFN_cuGetErrorName errName;

static void *sym(const char *name, int version) {
    void *f = NULL;
    int status = -1;
    CUresult r = getProc(name, &f, version, 0, &status);
    if (r != CUDA_SUCCESS || f == NULL) {
        fprintf(stderr, "FAIL cuGetProcAddress(%s) = %d\n", name, r);
        exit(2);
    }
    return f;
}

#define GET(name, ver) PFN_##name name = (PFN_##name)sym(#name, ver)
#define CHECK(call)                                                                  \
    do {                                                                             \
        CUresult r_ = (call);                                                        \
        if (r_ != CUDA_SUCCESS) {                                                    \
            const char *n_ = "?";                                                    \
            errName(r_, &n_);                                                        \
            fprintf(stderr, "FAIL %s:%d %s = %d (%s)\n", __FILE__, __LINE__, #call, r_, n_); \
            exit(1);                                                                 \
        }                                                                            \
    } while (0)
#define EXPECT(cond, ...)                        \
    do {                                         \
        if (!(cond)) {                           \
            fprintf(stderr, "FAIL " __VA_ARGS__); \
            fprintf(stderr, "\n");               \
            exit(1);                             \
        }                                        \
    } while (0)

/* The `hostnodes` mode: host functions that count, note what they saw,
 * and one that takes its time. */
static volatile int host_count, host_seen[64], host_slow_done;

static void host_count_fn(void *p) {
    (void)p;
    host_count++;
}

static void host_note_fn(void *p) {
    int *n = p;
    if (*n < 64) host_seen[(*n)++] = host_count;
}

static void host_slow_fn(void *p) {
    (void)p;
    struct timespec t = {0, 300 * 1000 * 1000};
    nanosleep(&t, NULL);
    host_slow_done = 1;
}

/* The `library` mode: dynamic shared memory for a block size, none or 8
 * bytes a thread; counts its calls. */
static int smem_calls;
static size_t smem_none(int block) {
    (void)block;
    smem_calls++;
    return 0;
}
static size_t smem_8_per_thread(int block) {
    smem_calls++;
    return (size_t)block * 8;
}

/* The `ipc` modes: handles travel between processes as hex text. */
static void to_hex(const void *bytes, size_t n, char *out) {
    const unsigned char *b = bytes;
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
    out[2 * n] = 0;
}

static int from_hex(const char *text, void *bytes, size_t n) {
    unsigned char *b = bytes;
    if (strlen(text) != 2 * n) return -1;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(text + 2 * i, "%2x", &v) != 1) return -1;
        b[i] = (unsigned char)v;
    }
    return 0;
}

/* Run this program again with `args` and wait for it: its exit status. */
static int run_self(char *const args[]) {
    extern char **environ;
    pid_t pid = fork();
    if (pid == 0) {
        execve("/proc/self/exe", args, environ);
        _exit(127);
    }
    int status = 0;
    if (pid < 0 || waitpid(pid, &status, 0) != pid) return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static double now_us(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e6 + t.tv_nsec / 1e3;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* The `managed` mode: threads read a managed result at once. */
struct managed_reader {
    const float *p;
    int n;
    float want_scale;
    int bad;
};

static void *managed_read(void *arg) {
    struct managed_reader *r = arg;
    for (int i = r->n - 1; i >= 0; i--)
        if (r->p[i] != (float)i * r->want_scale) r->bad++;
    return NULL;
}

/* The `callbacks` mode: host functions note the order they ran in. */
static pthread_mutex_t cb_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cb_cond = PTHREAD_COND_INITIALIZER;
static int cb_order[64];
static int cb_count;
static int cb_gate_open;
static int cb_on_main;
static pthread_t cb_main;
static CUstream cb_stream_seen;
static CUresult cb_status_seen = -1;
static float cb_first, cb_last;

static void cb_note(int v) {
    pthread_mutex_lock(&cb_lock);
    if (cb_count < 64) cb_order[cb_count] = v;
    cb_count++;
    if (pthread_equal(pthread_self(), cb_main)) cb_on_main = 1;
    pthread_cond_broadcast(&cb_cond);
    pthread_mutex_unlock(&cb_lock);
}

static void cb_record(void *p) { cb_note((int)(intptr_t)p); }

/* Waits until the program opens the gate. */
static void cb_gated(void *p) {
    pthread_mutex_lock(&cb_lock);
    while (!cb_gate_open) pthread_cond_wait(&cb_cond, &cb_lock);
    pthread_mutex_unlock(&cb_lock);
    cb_note((int)(intptr_t)p);
}

static void cb_stream_callback(CUstream s, CUresult status, void *p) {
    cb_stream_seen = s;
    cb_status_seen = status;
    cb_note((int)(intptr_t)p);
}

/* Reads the pinned buffer an earlier copy in the stream filled. */
static const float *cb_buffer;
static unsigned cb_buffer_len;
static void cb_read(void *p) {
    cb_first = cb_buffer[0];
    cb_last = cb_buffer[cb_buffer_len - 1];
    cb_note((int)(intptr_t)p);
}

/* Once the gate opens: notes the first and last bytes of a buffer, then
 * fills it (a value of -1 leaves it). */
struct cb_touch {
    unsigned char *buf;
    size_t len;
    int fill;
    unsigned char first, last;
};
static void cb_gated_touch(void *p) {
    struct cb_touch *t = p;
    pthread_mutex_lock(&cb_lock);
    while (!cb_gate_open) pthread_cond_wait(&cb_cond, &cb_lock);
    pthread_mutex_unlock(&cb_lock);
    t->first = t->buf[0];
    t->last = t->buf[t->len - 1];
    if (t->fill >= 0) memset(t->buf, t->fill, t->len);
    cb_note(0);
}

static void cb_close_gate(void) {
    pthread_mutex_lock(&cb_lock);
    cb_gate_open = 0;
    pthread_mutex_unlock(&cb_lock);
}

static int all_bytes(const unsigned char *p, size_t n, unsigned char v) {
    for (size_t i = 0; i < n; i++)
        if (p[i] != v) return 0;
    return 1;
}

static int cb_done(void) {
    pthread_mutex_lock(&cb_lock);
    int n = cb_count;
    pthread_mutex_unlock(&cb_lock);
    return n;
}

/* Wait (no CUDA call) until `n` functions ran; 0 after `seconds`. */
/* KERNELS_PTX with one of its kernels only: its header and that entry. */
static char *ptx_only(const char *name) {
    const char *first = strstr(KERNELS_PTX, "\n.visible");
    char decl[128];
    snprintf(decl, sizeof decl, ".visible .entry %s(", name);
    const char *start = strstr(KERNELS_PTX, decl);
    const char *end = start ? strstr(start, "\n}\n") : NULL;
    if (!first || !end) {
        fprintf(stderr, "FAIL: no kernel %s in the test module\n", name);
        exit(1);
    }
    size_t head = (size_t)(first - KERNELS_PTX) + 1, body = (size_t)(end - start) + 3;
    char *out = malloc(head + body + 1);
    memcpy(out, KERNELS_PTX, head);
    memcpy(out + head, start, body);
    out[head + body] = 0;
    return out;
}

static int cb_wait_count(int n, int seconds) {
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&cb_lock);
    while (cb_count < n) {
        if (pthread_cond_timedwait(&cb_cond, &cb_lock, &until) == ETIMEDOUT) break;
    }
    int ok = cb_count >= n;
    pthread_mutex_unlock(&cb_lock);
    return ok;
}

static void *cb_opener(void *unused) {
    (void)unused;
    usleep(50 * 1000);
    pthread_mutex_lock(&cb_lock);
    cb_gate_open = 1;
    pthread_cond_broadcast(&cb_cond);
    pthread_mutex_unlock(&cb_lock);
    return NULL;
}

/* The `sync-threads` mode: a second thread's calls while the first waits in
 * a synchronise, ending with the stream write that meets the first's wait. */
struct sync_helper {
    CUcontext ctx;
    CUstream waiting; /* the first thread's stream, behind the wait */
    CUdeviceptr flag; /* the word it waits for */
    CUdeviceptr scratch;
    unsigned value; /* what meets the wait */
    int done;       /* set once every call before the write returned */
    PFN_cuCtxSetCurrent setCurrent;
    PFN_cuStreamCreate streamCreate;
    PFN_cuStreamDestroy streamDestroy;
    PFN_cuStreamQuery streamQuery;
    PFN_cuStreamSynchronize streamSync;
    PFN_cuMemcpyHtoDAsync htodAsync;
    PFN_cuMemcpyDtoHAsync dtohAsync;
    PFN_cuEventCreate eventCreate;
    PFN_cuEventDestroy eventDestroy;
    PFN_cuStreamWriteValue32 writeValue;
};

static void *sync_helper_run(void *arg) {
    struct sync_helper *h = arg;
    CHECK(h->setCurrent(h->ctx));
    /* Time for the first thread to be in its synchronise: without it the
     * test would pass whether calls are served meanwhile or not. */
    usleep(100 * 1000);
    CUstream s;
    CHECK(h->streamCreate(&s, 1 /* CU_STREAM_NON_BLOCKING */));
    unsigned char up[4096], down[4096];
    for (int i = 0; i < 4096; i++) up[i] = (unsigned char)(i * 13 + h->value);
    memset(down, 0, sizeof down);
    CHECK(h->htodAsync(h->scratch, up, sizeof up, s));
    CHECK(h->dtohAsync(down, h->scratch, sizeof down, s));
    CHECK(h->streamSync(s));
    EXPECT(!memcmp(up, down, sizeof up), "the second thread's copies read back wrong while the first waited");
    CUevent e;
    CHECK(h->eventCreate(&e, 0x2));
    CHECK(h->eventDestroy(e));
    CUresult q = h->streamQuery(h->waiting);
    EXPECT(q == CUDA_ERROR_NOT_READY, "the waiting stream's query from another thread = %d, want not ready", q);
    __atomic_store_n(&h->done, 1, __ATOMIC_SEQ_CST);
    CHECK(h->writeValue(s, h->flag, h->value, 0));
    CHECK(h->streamSync(s));
    CHECK(h->streamDestroy(s));
    return NULL;
}

/* The `threads` mode: what each thread needs. */
struct threads_arg {
    int id;
    CUcontext ctx;
    CUfunction scale;
    PFN_cuCtxSetCurrent setCurrent;
    PFN_cuCtxSynchronize ctxSync;
    PFN_cuMemAlloc alloc;
    PFN_cuMemFree free_;
    PFN_cuMemcpyHtoD htod;
    PFN_cuMemcpyDtoH dtoh;
    PFN_cuMemcpyHtoDAsync htodAsync;
    PFN_cuMemcpyDtoHAsync dtohAsync;
    PFN_cuStreamCreate streamCreate;
    PFN_cuStreamDestroy streamDestroy;
    PFN_cuStreamQuery streamQuery;
    PFN_cuLaunchKernel launch;
    int failed;
};

/* Each round: host data -> device (async), scale on the thread's stream,
 * device -> host (async), then either poll the stream until done or make a
 * synchronous copy and a context synchronise; every value is checked. The
 * threads' replies interleave on the one connection. */
static void *threads_body(void *p) {
    struct threads_arg *a = p;
    const unsigned n = 4096 + 512 * a->id;
    float *host = malloc(n * sizeof(float)), *back = malloc(n * sizeof(float));
    float check = 0;
    CUdeviceptr d;
    CUstream s;
#define TCHECK(call)                                                      \
    do {                                                                  \
        CUresult r_ = (call);                                             \
        if (r_ != CUDA_SUCCESS) {                                         \
            fprintf(stderr, "FAIL thread %d: %s = %d\n", a->id, #call, r_); \
            a->failed = 1;                                                \
            return NULL;                                                  \
        }                                                                 \
    } while (0)
    TCHECK(a->setCurrent(a->ctx));
    TCHECK(a->alloc(&d, n * sizeof(float)));
    TCHECK(a->streamCreate(&s, 1 /* non-blocking */));
    for (int round = 0; round < 150; round++) {
        for (unsigned i = 0; i < n; i++) host[i] = (float)(i % 97) + (float)a->id;
        float factor = (float)(round % 5 + 1);
        memset(back, 0, n * sizeof(float));
        TCHECK(a->htodAsync(d, host, n * sizeof(float), s));
        unsigned nn = n;
        void *args[] = {&d, &factor, &nn};
        TCHECK(a->launch(a->scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
        if (round % 2 == 0) {
            TCHECK(a->dtohAsync(back, d, n * sizeof(float), s));
            CUresult q;
            while ((q = a->streamQuery(s)) == CUDA_ERROR_NOT_READY) {
            }
            TCHECK(q);
        } else {
            TCHECK(a->ctxSync());
            TCHECK(a->dtoh(back, d, n * sizeof(float)));
        }
        for (unsigned i = 0; i < n; i++) {
            float want = ((float)(i % 97) + (float)a->id) * factor;
            if (back[i] != want) {
                fprintf(stderr, "FAIL thread %d round %d: back[%u] = %f, want %f\n", a->id, round, i, back[i], want);
                a->failed = 1;
                return NULL;
            }
            check += back[i];
        }
    }
    TCHECK(a->streamDestroy(s));
    TCHECK(a->free_(d));
#undef TCHECK
    free(host);
    free(back);
    (void)check;
    return NULL;
}

/* Driver calls from an exit handler that runs after the shim's own (it is
 * registered before cuInit), as a program's library destructors make them:
 * they fail cleanly, and nothing is logged from the torn-down process. */
static PFN_cuMemFree late_free;
static PFN_cuCtxSynchronize late_sync;
static void late_calls(void) {
    CUresult freed = late_free((CUdeviceptr)0xdead0000);
    CUresult synced = late_sync();
    printf("OK late calls returned %d %d\n", freed, synced);
    fflush(stdout);
}

/* The error log's callback: counts the messages told, keeps the last, and
 * makes a failing call of its own, which must not be told again. */
struct told {
    int count, level_ok, length_ok;
    char last[512];
    PFN_cuMemFree free;
};
static void on_log(void *data, int level, char *message, size_t length) {
    struct told *t = data;
    t->count++;
    t->level_ok += level == 0;
    t->length_ok += strlen(message) == length;
    snprintf(t->last, sizeof t->last, "%s", message);
    t->free((CUdeviceptr)0x10);
}

static int count_lines(const char *text) {
    int n = 0;
    for (; *text; text++) n += *text == '\n';
    return n;
}

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "vadd";
    if (!strcmp(mode, "exit-calls")) atexit(late_calls);
    void *lib = dlopen("libcuda.so.1", RTLD_NOW);
    if (!lib) {
        fprintf(stderr, "FAIL dlopen(libcuda.so.1): %s\n", dlerror());
        return 2;
    }
    getProc = (PFN_cuGetProcAddress_v2)dlsym(lib, "cuGetProcAddress_v2");
    EXPECT(getProc != NULL, "no cuGetProcAddress_v2");
    errName = (PFN_cuGetErrorName)sym("cuGetErrorName", 6000);
    GET(cuInit, 2000);
    GET(cuDriverGetVersion, 2020);
    GET(cuDeviceGet, 2000);
    GET(cuDeviceGetCount, 2000);
    GET(cuDeviceGetName, 2000);
    GET(cuDeviceTotalMem, 3020);
    GET(cuDeviceGetAttribute, 2000);
    GET(cuDevicePrimaryCtxRetain, 7000);
    GET(cuDevicePrimaryCtxRelease, 11000);
    GET(cuDevicePrimaryCtxGetState, 7000);
    GET(cuCtxSetCurrent, 4000);
    GET(cuCtxGetCurrent, 4000);
    GET(cuCtxGetDevice, 2000);
    GET(cuCtxSynchronize, 2000);
    GET(cuModuleLoadData, 2000);
    GET(cuModuleUnload, 2000);
    GET(cuModuleGetFunction, 2000);
    GET(cuFuncGetParamInfo, 12040);
    GET(cuMemAlloc, 3020);
    GET(cuMemFree, 3020);
    GET(cuMemAllocHost, 3020);
    GET(cuMemFreeHost, 2000);
    GET(cuMemHostGetDevicePointer, 3020);
    GET(cuPointerGetAttribute, 4000);
    GET(cuMemcpyHtoD, 3020);
    GET(cuMemcpyDtoH, 3020);
    GET(cuMemcpyDtoD, 3020);
    GET(cuMemcpyHtoDAsync, 3020);
    GET(cuMemcpyDtoHAsync, 3020);
    GET(cuMemsetD32, 3020);
    GET(cuMemsetD8Async, 3020);
    GET(cuStreamCreate, 2000);
    GET(cuMemcpyDtoDAsync, 3020);
    GET(cuStreamSynchronize, 2000);
    GET(cuStreamWaitEvent, 3020);
    /* Version 10010 gives the capture entry points that take a mode. */
    GET(cuStreamBeginCapture, 10010);
    GET(cuStreamEndCapture, 10000);
    GET(cuStreamIsCapturing, 10000);
    GET(cuStreamGetCaptureInfo, 10010);
    GET(cuGraphInstantiateWithFlags, 11040);
    GET(cuGraphLaunch, 10000);
    GET(cuGraphExecDestroy, 10000);
    GET(cuGraphDestroy, 10000);
    GET(cuStreamDestroy, 4000);
    GET(cuStreamQuery, 2000);
    GET(cuEventCreate, 2000);
    GET(cuEventRecord, 2000);
    GET(cuEventSynchronize, 2000);
    GET(cuEventElapsedTime, 2000);
    GET(cuEventDestroy, 4000);
    GET(cuLaunchKernel, 4000);
    GET(cuLibraryLoadData, 12000);
    GET(cuLibraryUnload, 12000);
    GET(cuLibraryGetKernel, 12000);
    GET(cuKernelGetFunction, 12000);
    GET(cuKernelGetParamInfo, 12040);
    GET(cuKernelSetAttribute, 12000);
    GET(cuKernelGetAttribute, 12000);
    GET(cuFuncSetAttribute, 9000);
    GET(cuFuncGetName, 12030);
    GET(cuKernelGetName, 12030);
    GET(cuFuncGetModule, 11000);
    GET(cuKernelGetLibrary, 12050);
    GET(cuFuncIsLoaded, 12040);
    GET(cuFuncLoad, 12040);
    GET(cuLibraryGetKernelCount, 12040);
    GET(cuLibraryEnumerateKernels, 12040);
    GET(cuModuleGetFunctionCount, 12040);
    GET(cuModuleEnumerateFunctions, 12040);
    GET(cuCtxSetCacheConfig, 3020);
    GET(cuCtxGetCacheConfig, 3020);
    GET(cuFuncSetCacheConfig, 3000);
    GET(cuKernelSetCacheConfig, 12000);
    GET(cuCtxGetSharedMemConfig, 4020);
    GET(cuOccupancyMaxActiveBlocksPerMultiprocessor, 6050);

    CHECK(cuInit(0));
    int version = 0, count = 0;
    CHECK(cuDriverGetVersion(&version));
    CHECK(cuDeviceGetCount(&count));
    EXPECT(count >= 1, "no device");
    CUdevice dev;
    CHECK(cuDeviceGet(&dev, 0));
    char name[256];
    size_t total = 0;
    int threads = 0, sms = 0;
    CHECK(cuDeviceGetName(name, sizeof name, dev));
    CHECK(cuDeviceTotalMem(&total, dev));
    CHECK(cuDeviceGetAttribute(&threads, CU_DEVICE_ATTRIBUTE_MAX_THREADS_PER_BLOCK, dev));
    CHECK(cuDeviceGetAttribute(&sms, CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT, dev));
    EXPECT(threads >= 256 && sms >= 1, "implausible attributes %d %d", threads, sms);
    printf("device 0: %s, %zu MiB, %d SMs, driver %d\n", name, total >> 20, sms, version);
    printf("devices: %d\n", count);

    CUcontext ctx, cur = NULL;
    unsigned flags;
    int active = 0;
    CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
    CHECK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
    EXPECT(active == 1, "primary context not active after retain");
    CHECK(cuCtxSetCurrent(ctx));
    CHECK(cuCtxGetCurrent(&cur));
    EXPECT(cur == ctx, "current context mismatch");
    CUdevice cdev = -1;
    CHECK(cuCtxGetDevice(&cdev));
    EXPECT(cdev == dev, "context device mismatch");

    CUmodule mod;
    CHECK(cuModuleLoadData(&mod, KERNELS_PTX));
    CUfunction vadd, scale, fault, null_kernel;
    CHECK(cuModuleGetFunction(&vadd, mod, "gp_vector_add"));
    CHECK(cuModuleGetFunction(&scale, mod, "gp_scale"));
    CHECK(cuModuleGetFunction(&fault, mod, "gp_fault"));
    CHECK(cuModuleGetFunction(&null_kernel, mod, "gp_null"));
    size_t off = 0, size = 0;
    CHECK(cuFuncGetParamInfo(vadd, 3, &off, &size));
    EXPECT(off == 24 && size == 4, "param 3 of gp_vector_add at %zu size %zu", off, size);

    if (!strcmp(mode, "vadd")) {
        const int n = 100000;
        size_t bytes = n * sizeof(float);
        float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
        for (int i = 0; i < n; i++) {
            a[i] = (float)i * 0.5f;
            b[i] = (float)(n - i) * 0.25f;
        }
        CUdeviceptr da, db, dc;
        CHECK(cuMemAlloc(&da, bytes));
        CHECK(cuMemAlloc(&db, bytes));
        CHECK(cuMemAlloc(&dc, bytes));
        unsigned mt = 0;
        CHECK(cuPointerGetAttribute(&mt, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, db + 16));
        EXPECT(mt == CU_MEMORYTYPE_DEVICE, "pointer attribute memory type %u", mt);
        /* cuMemAlloc memory can be shared by legacy IPC (NCCL asks before
         * it registers a buffer). */
        int legacy_ipc = -1;
        CHECK(cuPointerGetAttribute(&legacy_ipc, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, db + 16));
        EXPECT(legacy_ipc == 1, "cuMemAlloc memory legacy IPC capable %d", legacy_ipc);
        /* Synchronous memory operations may be asked for (they are). */
        GET(cuPointerSetAttribute, 2000);
        unsigned sync_on = 1;
        CHECK(cuPointerSetAttribute(&sync_on, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, db));
        CHECK(cuPointerGetAttribute(&sync_on, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, db));
        EXPECT(sync_on == 1, "synchronous memory operations %u", sync_on);
        if (getenv("GPUPOOL_SERVER"))
            EXPECT(cuPointerSetAttribute(&sync_on, CU_POINTER_ATTRIBUTE_MEMORY_TYPE, db) == CUDA_ERROR_INVALID_VALUE &&
                       cuPointerSetAttribute(&sync_on, CU_POINTER_ATTRIBUTE_SYNC_MEMOPS, (CUdeviceptr)a) ==
                           CUDA_ERROR_INVALID_VALUE,
                   "set a memory type, or an attribute of host memory");
        /* The first names of calls that got a `_v2` (same arguments), as
         * programs built against old headers call them. */
        PFN_cuStreamDestroy destroy_v1 = (PFN_cuStreamDestroy)dlsym(lib, "cuStreamDestroy");
        CUstream old_style;
        CHECK(cuStreamCreate(&old_style, 0));
        EXPECT(destroy_v1 && destroy_v1(old_style) == CUDA_SUCCESS, "cuStreamDestroy (the first version)");
        CHECK(cuMemcpyHtoD(da, a, bytes));
        CHECK(cuMemcpyHtoD(db, b, bytes));
        CHECK(cuMemsetD32(dc, 0xffffffffu, n));
        unsigned nn = n;
        void *args[] = {&da, &db, &dc, &nn};
        CHECK(cuLaunchKernel(vadd, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CHECK(cuMemcpyDtoH(c, dc, bytes));
        for (int i = 0; i < n; i++)
            EXPECT(c[i] == a[i] + b[i], "c[%d] = %f, expected %f", i, c[i], a[i] + b[i]);
        /* The same through `extra`, into a scaled copy. */
        struct {
            CUdeviceptr x;
            float s;
            unsigned n;
        } packed = {dc, 3.0f, (unsigned)n};
        size_t packed_size = sizeof packed;
        void *extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &packed_size, CU_LAUNCH_PARAM_END};
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, NULL, extra));
        CHECK(cuMemcpyDtoD(da, dc, bytes));
        CHECK(cuMemcpyDtoH(c, da, bytes));
        for (int i = 0; i < n; i++)
            EXPECT(c[i] == (a[i] + b[i]) * 3.0f, "scaled c[%d] = %f", i, c[i]);
        if (getenv("GPUPOOL_SERVER")) {
            /* A packed block shorter than the kernel's parameters is taken
             * (NCCL passes only what it filled of its argument structure);
             * the driver leaves the rest undefined, gpupool zeros it: here
             * the count, so nothing is scaled. */
            size_t short_size = 12;
            void *short_extra[] = {CU_LAUNCH_PARAM_BUFFER_POINTER, &packed, CU_LAUNCH_PARAM_BUFFER_SIZE, &short_size,
                                   CU_LAUNCH_PARAM_END};
            CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, NULL, short_extra));
            CHECK(cuMemcpyDtoH(c, dc, bytes));
            for (int i = 0; i < n; i++)
                EXPECT(c[i] == (a[i] + b[i]) * 3.0f, "after a short parameter block c[%d] = %f", i, c[i]);
        }
        /* Cooperative launches: all of the grid's blocks must fit at once.
         * One block per multiprocessor does; 64 of 256 threads each do not. */
        {
            GET(cuLaunchCooperativeKernel, 9000);
            GET(cuLaunchKernelEx, 11060);
            int sms = 0;
            CHECK(cuDeviceGetAttribute(&sms, 16, dev));
            unsigned m = (unsigned)sms * 256 < nn ? (unsigned)sms * 256 : nn;
            float half = 0.5f;
            void *hargs[] = {&da, &half, &m};
            CHECK(cuLaunchCooperativeKernel(scale, sms, 1, 1, 256, 1, 1, 0, NULL, hargs));
            CHECK(cuMemcpyDtoH(c, da, bytes));
            for (int i = 0; i < n; i++) {
                float w = (a[i] + b[i]) * 3.0f * ((unsigned)i < m ? 0.5f : 1.0f);
                EXPECT(c[i] == w, "after a cooperative launch c[%d] = %f, want %f", i, c[i], w);
            }
            CUresult r = cuLaunchCooperativeKernel(scale, sms * 64, 1, 1, 256, 1, 1, 0, NULL, hargs);
            EXPECT(r == CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE, "an oversized cooperative launch gave %d", r);
            CUlaunchAttribute coop = {0};
            coop.id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
            coop.value.cooperative = 1;
            CUlaunchConfig lc = {(unsigned)sms * 64, 1, 1, 256, 1, 1, 0, NULL, &coop, 1};
            r = cuLaunchKernelEx(&lc, scale, hargs, NULL);
            EXPECT(r == CUDA_ERROR_COOPERATIVE_LAUNCH_TOO_LARGE, "an oversized cooperative cuLaunchKernelEx gave %d", r);
            CHECK(cuCtxSynchronize());
        }
        CHECK(cuMemFree(da));
        CHECK(cuMemFree(db));
        CHECK(cuMemFree(dc));
        printf("OK vadd n=%d\n", n);
    } else if (!strcmp(mode, "library")) {
        CUlibrary l;
        CUkernel kadd, kscale, missing = NULL;
        CHECK(cuLibraryLoadData(&l, KERNELS_PTX, NULL, NULL, 0, NULL, NULL, 0));
        CHECK(cuLibraryGetKernel(&kadd, l, "gp_vector_add"));
        CHECK(cuLibraryGetKernel(&kscale, l, "gp_scale"));
        CUresult r = cuLibraryGetKernel(&missing, l, "gp_no_such_kernel");
        EXPECT(r == CUDA_ERROR_NOT_FOUND, "lookup of a missing kernel gave %d", r);
        CUkernel again;
        CHECK(cuLibraryGetKernel(&again, l, "gp_vector_add"));
        EXPECT(again == kadd, "one name, two kernel handles");
        CHECK(cuKernelGetParamInfo(kadd, 3, &off, &size));
        EXPECT(off == 24 && size == 4, "kernel param 3 at %zu size %zu", off, size);
        const int n = 5000;
        size_t bytes = n * sizeof(float);
        float *a = malloc(bytes), *c = malloc(bytes);
        for (int i = 0; i < n; i++)
            a[i] = (float)i;
        CUdeviceptr da, dc;
        CHECK(cuMemAlloc(&da, bytes));
        CHECK(cuMemAlloc(&dc, bytes));
        CHECK(cuMemcpyHtoD(da, a, bytes));
        unsigned nn = n;
        void *args[] = {&da, &da, &dc, &nn};
        /* cudart launches a kernel handle as a function. */
        CHECK(cuLaunchKernel((CUfunction)kadd, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CUfunction fscale, fscale2;
        CHECK(cuKernelGetFunction(&fscale, kscale));
        CHECK(cuKernelGetFunction(&fscale2, kscale));
        EXPECT(fscale == fscale2, "one kernel, two functions in one context");
        int blocks1 = 0, blocks2 = 0;
        CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks1, fscale, 256, 0));
        CHECK(cuOccupancyMaxActiveBlocksPerMultiprocessor(&blocks2, fscale, 256, 0));
        EXPECT(blocks1 >= 1 && blocks1 == blocks2, "occupancy answers %d then %d", blocks1, blocks2);
        /* Setting an attribute to the value it was given is no change. */
        int smem = 0;
        CHECK(cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1024, kscale, dev));
        CHECK(cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1024, kscale, dev));
        CHECK(cuKernelGetAttribute(&smem, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, kscale, dev));
        EXPECT(smem == 1024, "dynamic shared memory %d after setting 1024", smem);
        CHECK(cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 2048, kscale, dev));
        CHECK(cuKernelGetAttribute(&smem, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, kscale, dev));
        EXPECT(smem == 2048, "dynamic shared memory %d after setting 2048", smem);
        /* An attribute the driver does not have is refused, every time. */
        for (int i = 0; i < 2; i++) {
            r = cuKernelGetAttribute(&smem, 17, kscale, dev);
            EXPECT(r == CUDA_ERROR_INVALID_VALUE, "attribute 17 gave %d", r);
        }
        r = cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, 64, kscale, dev);
        EXPECT(r == CUDA_ERROR_INVALID_VALUE, "setting a read-only attribute gave %d", r);
        r = cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 1 << 30, kscale, dev);
        EXPECT(r == CUDA_ERROR_INVALID_VALUE, "1 GiB of dynamic shared memory gave %d", r);
        /* The kernel's other attributes came with the first answer. */
        int threads = 0, regs = -1, ptx = 0, binary = 0;
        CHECK(cuKernelGetAttribute(&threads, CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK, kscale, dev));
        CHECK(cuKernelGetAttribute(&regs, CU_FUNC_ATTRIBUTE_NUM_REGS, kscale, dev));
        CHECK(cuKernelGetAttribute(&ptx, CU_FUNC_ATTRIBUTE_PTX_VERSION, kscale, dev));
        CHECK(cuKernelGetAttribute(&binary, CU_FUNC_ATTRIBUTE_BINARY_VERSION, kscale, dev));
        EXPECT(threads >= 256 && regs >= 0 && ptx >= 10 && binary >= 10,
               "kernel attributes: %d threads, %d registers, PTX %d, binary %d", threads, regs, ptx, binary);
        /* The ten attributes cudaFuncGetAttributes asks, of the function:
           the same answers as the kernel's. */
        GET(cuFuncGetAttribute, 2020);
        int fattr[10];
        for (int i = 0; i < 10; i++) CHECK(cuFuncGetAttribute(&fattr[i], i, fscale));
        EXPECT(fattr[0] == threads && fattr[4] == regs && fattr[5] == ptx && fattr[6] == binary,
               "function attributes: %d threads, %d registers, PTX %d, binary %d", fattr[0], fattr[4], fattr[5],
               fattr[6]);
        /* A set through the kernel's function may change the kernel's, so
           the kernel's next set is the driver's to take. */
        CHECK(cuFuncSetAttribute(fscale, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 4096));
        CHECK(cuFuncSetAttribute(fscale, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 4096));
        CHECK(cuKernelSetAttribute(CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES, 2048, kscale, dev));
        float s = 0.5f;
        void *sargs[] = {&dc, &s, &nn};
        CHECK(cuLaunchKernel(fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, sargs, NULL));
        CHECK(cuMemcpyDtoH(c, dc, bytes));
        for (int i = 0; i < n; i++)
            EXPECT(c[i] == a[i], "c[%d] = %f, expected %f", i, c[i], a[i]);
        /* The JIT linker: PTX in, from memory and from a file; an image
         * out that loads and runs; inputs that are not there or not PTX
         * refused. */
        {
            GET(cuLinkCreate, 6050);
            GET(cuLinkAddData, 6050);
            GET(cuLinkAddFile, 6050);
            GET(cuLinkComplete, 5050);
            GET(cuLinkDestroy, 5050);
            char info[256], err[256];
            int jit[] = {CU_JIT_INFO_LOG_BUFFER, CU_JIT_INFO_LOG_BUFFER_SIZE_BYTES, CU_JIT_ERROR_LOG_BUFFER,
                         CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES, CU_JIT_OPTIMIZATION_LEVEL};
            void *jit_values[] = {info, (void *)(uintptr_t)sizeof info, err, (void *)(uintptr_t)sizeof err,
                                  (void *)(uintptr_t)3};
            CUlinkState ls;
            CHECK(cuLinkCreate(5, jit, jit_values, &ls));
            CHECK(cuLinkAddData(ls, CU_JIT_INPUT_PTX, (void *)KERNELS_PTX, sizeof KERNELS_PTX, "kernels.ptx", 0, NULL,
                                NULL));
            void *linked = NULL;
            size_t linked_size = 0;
            CHECK(cuLinkComplete(ls, &linked, &linked_size));
            EXPECT(linked != NULL && linked_size > 0, "linked image %p of %zu bytes", linked, linked_size);
            CUmodule lm;
            CHECK(cuModuleLoadData(&lm, linked));
            CUfunction ladd;
            CHECK(cuModuleGetFunction(&ladd, lm, "gp_vector_add"));
            void *largs[] = {&da, &da, &dc, &nn};
            CHECK(cuLaunchKernel(ladd, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, largs, NULL));
            CHECK(cuMemcpyDtoH(c, dc, bytes));
            for (int i = 0; i < n; i++) EXPECT(c[i] == 2 * a[i], "linked kernel: c[%d] = %f", i, c[i]);
            CHECK(cuModuleUnload(lm));
            CHECK(cuLinkDestroy(ls));
            /* A large input (a long comment), so that an image linked from
             * it may come back in pieces. */
            size_t big_len = sizeof KERNELS_PTX - 1 + 4 + 700000 + 2;
            char *big = malloc(big_len);
            memcpy(big, KERNELS_PTX, sizeof KERNELS_PTX - 1);
            memcpy(big + sizeof KERNELS_PTX - 1, "\n// ", 4);
            memset(big + sizeof KERNELS_PTX - 1 + 4, 'x', 700000);
            memcpy(big + big_len - 2, "\n", 2);
            CHECK(cuLinkCreate(0, NULL, NULL, &ls));
            CHECK(cuLinkAddData(ls, CU_JIT_INPUT_PTX, big, big_len, "big.ptx", 0, NULL, NULL));
            CHECK(cuLinkComplete(ls, &linked, &linked_size));
            CHECK(cuModuleLoadData(&lm, linked));
            CHECK(cuModuleGetFunction(&ladd, lm, "gp_vector_add"));
            CHECK(cuMemsetD32(dc, 0, n));
            CHECK(cuLaunchKernel(ladd, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, largs, NULL));
            CHECK(cuMemcpyDtoH(c, dc, bytes));
            for (int i = 0; i < n; i++) EXPECT(c[i] == 2 * a[i], "kernel linked from a large input: c[%d] = %f", i, c[i]);
            CHECK(cuModuleUnload(lm));
            CHECK(cuLinkDestroy(ls));
            free(big);
            char path[] = "/tmp/gpupool-link-XXXXXX";
            int fd = mkstemp(path);
            EXPECT(fd >= 0, "no temporary file");
            EXPECT(write(fd, KERNELS_PTX, sizeof KERNELS_PTX) == (ssize_t)sizeof KERNELS_PTX, "temporary file write");
            close(fd);
            CHECK(cuLinkCreate(0, NULL, NULL, &ls));
            CHECK(cuLinkAddFile(ls, CU_JIT_INPUT_PTX, path, 0, NULL, NULL));
            CHECK(cuLinkComplete(ls, &linked, &linked_size));
            EXPECT(linked_size > 0, "image linked from a file is empty");
            EXPECT(cuLinkAddFile(ls, CU_JIT_INPUT_PTX, "/nonexistent/gpupool.ptx", 0, NULL, NULL) ==
                       CUDA_ERROR_FILE_NOT_FOUND,
                   "a missing file was linked");
            CHECK(cuLinkDestroy(ls));
            unlink(path);
            CHECK(cuLinkCreate(0, NULL, NULL, &ls));
            static const char junk[] = "this is not PTX";
            EXPECT(cuLinkAddData(ls, CU_JIT_INPUT_PTX, (void *)junk, sizeof junk, "junk", 0, NULL, NULL) != CUDA_SUCCESS,
                   "text that is not PTX was linked");
            CHECK(cuLinkDestroy(ls));
            if (getenv("GPUPOOL_SERVER"))
                EXPECT(cuLinkDestroy(ls) == 400, "a destroyed linker still answers");
        }
        /* Names, owners and lists of kernels and functions. */
        const char *name = NULL;
        CHECK(cuKernelGetName(&name, kscale));
        EXPECT(name && !strcmp(name, "gp_scale"), "kernel name %s", name ? name : "(null)");
        CHECK(cuFuncGetName(&name, fscale));
        EXPECT(!strcmp(name, "gp_scale"), "name of the kernel's function %s", name);
        CHECK(cuFuncGetName(&name, (CUfunction)kadd));
        EXPECT(!strcmp(name, "gp_vector_add"), "name of a kernel as a function %s", name);
        CHECK(cuFuncGetName(&name, vadd));
        EXPECT(!strcmp(name, "gp_vector_add"), "name of a module's function %s", name);
        CUlibrary owner = NULL;
        CHECK(cuKernelGetLibrary(&owner, kadd));
        EXPECT(owner == l, "kernel's library %p, loaded %p", (void *)owner, (void *)l);
        CUmodule fmod = NULL;
        CHECK(cuFuncGetModule(&fmod, scale));
        EXPECT(fmod == mod, "function's module %p, loaded %p", (void *)fmod, (void *)mod);
        const unsigned entries = 6; /* the .entry lines of kernels.ptx.h */
        unsigned count = 0;
        CHECK(cuLibraryGetKernelCount(&count, l));
        EXPECT(count == entries, "library kernel count %u", count);
        CUkernel ks[8] = {0};
        CHECK(cuLibraryEnumerateKernels(ks, count, l));
        int seen_add = 0, seen_names = 0;
        for (unsigned i = 0; i < count; i++) {
            EXPECT(ks[i] != NULL, "enumerated kernel %u is null", i);
            seen_add += ks[i] == kadd;
            CHECK(cuKernelGetName(&name, ks[i]));
            seen_names += !strcmp(name, "gp_null") + !strcmp(name, "gp_fault") + !strcmp(name, "gp_tex_read");
        }
        EXPECT(seen_add == 1 && seen_names == 3, "enumeration: gp_vector_add %d times, 3 names seen %d", seen_add,
               seen_names);
        count = 0;
        CHECK(cuModuleGetFunctionCount(&count, mod));
        EXPECT(count == entries, "module function count %u", count);
        CUfunction fs[8] = {0};
        CHECK(cuModuleEnumerateFunctions(fs, count, mod));
        int seen_vadd = 0;
        for (unsigned i = 0; i < count; i++) {
            EXPECT(fs[i] != NULL, "enumerated function %u is null", i);
            seen_vadd += fs[i] == vadd;
        }
        EXPECT(seen_vadd == 1, "module enumeration holds gp_vector_add's function %d times", seen_vadd);
        int loaded = -1;
        CHECK(cuFuncLoad(vadd));
        CHECK(cuFuncIsLoaded(&loaded, vadd));
        EXPECT(loaded == CU_FUNCTION_LOADING_STATE_LOADED, "loaded function state %d", loaded);
        /* Cache preferences: taken, judged, read back. */
        int pref = -1;
        CHECK(cuCtxSetCacheConfig(CU_FUNC_CACHE_PREFER_SHARED));
        r = cuCtxSetCacheConfig(7);
        EXPECT(r == CUDA_ERROR_INVALID_VALUE, "cache preference 7 gave %d", r);
        CHECK(cuCtxGetCacheConfig(&pref));
        EXPECT(pref == CU_FUNC_CACHE_PREFER_SHARED, "context cache preference %d", pref);
        CHECK(cuCtxSetCacheConfig(0));
        CHECK(cuFuncSetCacheConfig(fscale, CU_FUNC_CACHE_PREFER_L1));
        CHECK(cuFuncSetCacheConfig((CUfunction)kadd, CU_FUNC_CACHE_PREFER_EQUAL));
        r = cuFuncSetCacheConfig(fscale, 9);
        EXPECT(r == CUDA_ERROR_INVALID_VALUE, "function cache preference 9 gave %d", r);
        CHECK(cuKernelSetCacheConfig(kscale, CU_FUNC_CACHE_PREFER_EQUAL, dev));
        r = cuKernelSetCacheConfig(kscale, CU_FUNC_CACHE_PREFER_EQUAL, 99);
        EXPECT(r == CUDA_ERROR_INVALID_DEVICE, "kernel cache preference on device 99 gave %d", r);
        CHECK(cuCtxGetSharedMemConfig(&pref));
        EXPECT(pref == CU_SHARED_MEM_CONFIG_FOUR_BYTE_BANK_SIZE, "shared memory bank config %d", pref);
        /* The occupancy calculator with a shared-memory callback (numba
         * passes one): with none needed it agrees with the plain form; with
         * 8 bytes a thread, the block it picks fits in the 4 KiB of dynamic
         * shared memory the function was allowed above. */
        {
            GET(cuOccupancyMaxPotentialBlockSize, 6050);
            int g0 = 0, b0 = 0, g1 = 0, b1 = 0, g2 = 0, b2 = 0;
            CHECK(cuOccupancyMaxPotentialBlockSize(&g0, &b0, fscale, NULL, 0, 0));
            CHECK(cuOccupancyMaxPotentialBlockSize(&g1, &b1, fscale, smem_none, 0, 0));
            EXPECT(smem_calls > 0 && g1 == g0 && b1 == b0, "with a callback of none: %d x %d, without: %d x %d", g1, b1,
                   g0, b0);
            CHECK(cuOccupancyMaxPotentialBlockSize(&g2, &b2, fscale, smem_8_per_thread, 0, 0));
            EXPECT(b2 > 0 && b2 % 32 == 0 && (size_t)b2 * 8 <= 4096 && g2 > 0,
                   "with 8 bytes a thread: %d blocks of %d", g2, b2);
        }
        /* Code from a file, as torch.compile's kernels load: cuModuleLoad
         * and cuLibraryLoadFromFile of the same PTX, written out. */
        {
            GET(cuModuleLoad, 2000);
            GET(cuLibraryLoadFromFile, 12000);
            char path[] = "/tmp/gpupool-kernels-XXXXXX";
            int fd = mkstemp(path);
            EXPECT(fd >= 0, "mkstemp");
            size_t len = strlen(KERNELS_PTX);
            EXPECT(write(fd, KERNELS_PTX, len) == (ssize_t)len, "write the PTX file");
            close(fd);
            CUmodule fm;
            CHECK(cuModuleLoad(&fm, path));
            CUfunction fadd;
            CHECK(cuModuleGetFunction(&fadd, fm, "gp_vector_add"));
            CUlibrary fl;
            CHECK(cuLibraryLoadFromFile(&fl, path, NULL, NULL, 0, NULL, NULL, 0));
            CUkernel kfile;
            CHECK(cuLibraryGetKernel(&kfile, fl, "gp_scale"));
            unlink(path);
            CHECK(cuMemcpyHtoD(da, a, bytes));
            int fn_ = n;
            void *fargs[] = {&da, &da, &dc, &fn_};
            CHECK(cuLaunchKernel(fadd, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, fargs, NULL));
            float half = 0.5f;
            void *hargs[] = {&dc, &half, &fn_};
            CHECK(cuLaunchKernel((CUfunction)kfile, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, hargs, NULL));
            CHECK(cuMemcpyDtoH(c, dc, bytes));
            for (int i = 0; i < n; i++) EXPECT(c[i] == a[i], "from files: c[%d] = %f, want %f", i, c[i], a[i]);
            CUmodule none;
            CUresult r = cuModuleLoad(&none, "/nonexistent/gpupool-kernels.ptx");
            EXPECT(r == CUDA_ERROR_FILE_NOT_FOUND, "loading a missing file gave %d", r);
            CHECK(cuLibraryUnload(fl));
            CHECK(cuModuleUnload(fm));
        }
        CHECK(cuLibraryUnload(l));
        CHECK(cuMemFree(da));
        CHECK(cuMemFree(dc));
        printf("OK library n=%d\n", n);
    } else if (!strcmp(mode, "managed")) {
        GET(cuMemAllocManaged, 6000);
        GET(cuMemPrefetchAsync, 12020);
        GET(cuMemAdvise, 12020);
        GET(cuMemRangeGetAttribute, 8000);
        GET(cuStreamAttachMemAsync, 6000);
        int managed = 0, pageable = 1;
        CHECK(cuDeviceGetAttribute(&managed, CU_DEVICE_ATTRIBUTE_MANAGED_MEMORY, dev));
        CHECK(cuDeviceGetAttribute(&pageable, CU_DEVICE_ATTRIBUTE_PAGEABLE_MEMORY_ACCESS, dev));
        EXPECT(managed == 1 && pageable == 0, "managed %d pageable access %d", managed, pageable);
        /* Past a fetch window (1 MiB) and a block (64 KiB), not a whole page. */
        const int n = 300001;
        size_t bytes = n * sizeof(float);
        CUdeviceptr ma, mb, mc, plain;
        CHECK(cuMemAllocManaged(&ma, bytes, CU_MEM_ATTACH_GLOBAL));
        CHECK(cuMemAllocManaged(&mb, bytes, CU_MEM_ATTACH_GLOBAL));
        CHECK(cuMemAllocManaged(&mc, bytes, CU_MEM_ATTACH_GLOBAL));
        CHECK(cuMemAlloc(&plain, bytes));
        float *a = (float *)ma, *b = (float *)mb, *c = (float *)mc;
        EXPECT(a[0] == 0.0f && a[n - 1] == 0.0f, "fresh managed memory reads %f %f", a[0], a[n - 1]);
        int is_managed = -1;
        CHECK(cuPointerGetAttribute(&is_managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, ma + 100));
        EXPECT(is_managed == 1, "managed pointer attribute %d", is_managed);
        CHECK(cuPointerGetAttribute(&is_managed, CU_POINTER_ATTRIBUTE_IS_MANAGED, plain));
        EXPECT(is_managed == 0, "device pointer reads as managed");
        /* What cudart 13.5 asks of every pointer it describes. */
        int flags = -1, domain = 0;
        CHECK(cuPointerGetAttribute(&flags, CU_POINTER_ATTRIBUTE_ACCESS_FLAGS, ma));
        CHECK(cuPointerGetAttribute(&domain, CU_POINTER_ATTRIBUTE_LOCALITY_DOMAIN_ORDINAL, mb + 8));
        EXPECT(flags == 3 && domain == -1, "managed access flags %d, locality domain %d", flags, domain);

        /* Host writes, a kernel reads them and writes c; the host reads c. */
        for (int i = 0; i < n; i++) {
            a[i] = (float)i * 0.5f;
            b[i] = (float)i * 0.25f;
        }
        unsigned nn = n;
        void *args[] = {&ma, &mb, &mc, &nn};
        CHECK(cuLaunchKernel(vadd, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CHECK(cuCtxSynchronize());
        for (int i = 0; i < n; i++)
            EXPECT(c[i] == (float)i * 0.75f, "c[%d] = %f after the kernel", i, c[i]);

        /* A host write between kernels reaches the next kernel; threads
         * reading at once all see the kernel's result. */
        c[7] = 1000.0f;
        float s2 = 2.0f;
        void *sargs[] = {&mc, &s2, &nn};
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, sargs, NULL));
        CHECK(cuCtxSynchronize());
        EXPECT(c[7] == 2000.0f, "c[7] = %f: the host's write did not reach the kernel", c[7]);
        c[7] = 7.0f * 0.75f * 2.0f;
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, sargs, NULL));
        CHECK(cuCtxSynchronize());
        pthread_t readers[4];
        struct managed_reader r[4];
        for (int t = 0; t < 4; t++) {
            r[t] = (struct managed_reader){c, n, 3.0f, 0};
            pthread_create(&readers[t], NULL, managed_read, &r[t]);
        }
        for (int t = 0; t < 4; t++) {
            pthread_join(readers[t], NULL);
            EXPECT(r[t].bad == 0, "reader %d saw %d wrong values", t, r[t].bad);
        }

        /* Copies: host-written managed data to device memory, device data
         * into managed memory, a memset of managed memory. */
        a[3] = -1.0f;
        CHECK(cuMemcpyHtoD(plain, a, bytes));
        float *host = malloc(bytes);
        CHECK(cuMemcpyDtoH(host, plain, bytes));
        EXPECT(host[3] == -1.0f && host[n - 1] == (float)(n - 1) * 0.5f, "managed to device copy: %f %f", host[3],
               host[n - 1]);
        CHECK(cuMemsetD32(plain, 0x3f800000u, n)); /* 1.0f */
        CHECK(cuMemcpyDtoH(b, plain, bytes));
        for (int i = 0; i < n; i++) EXPECT(b[i] == 1.0f, "b[%d] = %f after a copy into managed memory", i, b[i]);
        CHECK(cuMemsetD32(ma, 0x40000000u, n)); /* 2.0f */
        CHECK(cuCtxSynchronize());
        for (int i = 0; i < n; i++) EXPECT(a[i] == 2.0f, "a[%d] = %f after a memset", i, a[i]);

        /* Prefetch, advice, attach; and what they refuse. */
        CUmemLocation host_loc = {2, 0}, dev_loc = {1, 0};
        a[0] = 5.0f;
        CHECK(cuMemPrefetchAsync(ma, bytes, dev_loc, 0, NULL));
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, (void *[]){&ma, &s2, &nn}, NULL));
        CHECK(cuMemPrefetchAsync(ma, bytes, host_loc, 0, NULL));
        CHECK(cuStreamSynchronize(NULL));
        EXPECT(a[0] == 10.0f && a[n - 1] == 4.0f, "after prefetch to the host: %f %f", a[0], a[n - 1]);
        int last = 99, preferred = 99, mostly = 99;
        CHECK(cuMemRangeGetAttribute(&last, 4, CU_MEM_RANGE_ATTRIBUTE_LAST_PREFETCH_LOCATION, ma, bytes));
        EXPECT(last == -1, "last prefetch location %d", last);
        CHECK(cuMemAdvise(ma, bytes, CU_MEM_ADVISE_SET_PREFERRED_LOCATION, dev_loc));
        CHECK(cuMemAdvise(ma, 4096, CU_MEM_ADVISE_SET_READ_MOSTLY, dev_loc));
        CHECK(cuMemRangeGetAttribute(&preferred, 4, CU_MEM_RANGE_ATTRIBUTE_PREFERRED_LOCATION, ma, bytes));
        CHECK(cuMemRangeGetAttribute(&mostly, 4, CU_MEM_RANGE_ATTRIBUTE_READ_MOSTLY, ma, 16));
        EXPECT(preferred == 0 && mostly == 1, "preferred %d read mostly %d", preferred, mostly);
        CHECK(cuStreamAttachMemAsync(NULL, mb, 0, CU_MEM_ATTACH_GLOBAL));
        CUdeviceptr bad;
        EXPECT(cuMemAllocManaged(&bad, bytes, 0) == CUDA_ERROR_INVALID_VALUE, "flags 0 accepted");
        EXPECT(cuMemAllocManaged(&bad, 0, CU_MEM_ATTACH_GLOBAL) == CUDA_ERROR_INVALID_VALUE, "size 0 accepted");
        EXPECT(cuMemPrefetchAsync(plain, bytes, host_loc, 0, NULL) == CUDA_ERROR_INVALID_VALUE,
               "prefetch of device memory accepted");
        EXPECT(cuMemPrefetchAsync(ma, bytes + 4096, host_loc, 0, NULL) == CUDA_ERROR_INVALID_VALUE,
               "prefetch past the allocation accepted");
        EXPECT(cuMemAdvise(ma, bytes, 77, dev_loc) == CUDA_ERROR_INVALID_VALUE, "unknown advice accepted");
        EXPECT(cuMemFree(ma + 4096) != CUDA_SUCCESS, "free inside a managed allocation accepted");
        /* A module's __managed__ variables, found with cuModuleGetGlobal:
         * their initial value, host writes a kernel reads, kernel writes
         * the host reads. */
        {
            GET(cuModuleGetGlobal, 3020);
            static const char MANAGED_PTX[] = ".version 8.0\n.target sm_70\n.address_size 64\n"
                                              ".global .attribute(.managed) .align 4 .b8 m_table[4096];\n"
                                              ".global .attribute(.managed) .align 4 .u32 m_count = 5;\n";
            CUmodule mm;
            CHECK(cuModuleLoadData(&mm, MANAGED_PTX));
            CUdeviceptr mt, mcount;
            size_t mt_size = 0, mcount_size = 0;
            CHECK(cuModuleGetGlobal(&mt, &mt_size, mm, "m_table"));
            CHECK(cuModuleGetGlobal(&mcount, &mcount_size, mm, "m_count"));
            EXPECT(mt_size == 4096 && mcount_size == 4, "managed variable sizes %zu %zu", mt_size, mcount_size);
            EXPECT(*(unsigned *)(uintptr_t)mcount == 5, "managed variable initial value %u",
                   *(unsigned *)(uintptr_t)mcount);
            float *t = (float *)(uintptr_t)mt;
            for (int i = 0; i < 1024; i++) t[i] = (float)i;
            float two = 2.0f;
            unsigned k = 1024;
            void *targs[] = {&mt, &two, &k};
            CHECK(cuLaunchKernel(scale, 4, 1, 1, 256, 1, 1, 0, NULL, targs, NULL));
            CHECK(cuCtxSynchronize());
            for (int i = 0; i < 1024; i++) EXPECT(t[i] == 2.0f * (float)i, "managed variable t[%d] = %f", i, t[i]);
            int im = 0;
            CHECK(cuPointerGetAttribute(&im, CU_POINTER_ATTRIBUTE_IS_MANAGED, mt + 64));
            EXPECT(im == 1, "a managed variable reads as not managed");
            CHECK(cuModuleUnload(mm));
        }
        if (getenv("GPUPOOL_SERVER")) {
            /* A forked child has no CUDA: managed memory is not its to
             * touch (it ends as any bad access ends), and the parent's
             * session goes on untouched. */
            float before = a[3];
            CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
            CHECK(cuCtxSynchronize());
            pid_t child = fork();
            if (child == 0) {
                volatile float touched = a[3];
                (void)touched;
                _exit(0);
            }
            int status = 0;
            EXPECT(child > 0 && waitpid(child, &status, 0) == child, "fork or wait failed");
            EXPECT(WIFSIGNALED(status) && WTERMSIG(status) == SIGSEGV, "a forked child read managed memory (status %#x)",
                   status);
            CHECK(cuCtxSynchronize());
            EXPECT(a[3] == before, "managed memory read %g after a child's fault, %g before", a[3], before);
        }
        CHECK(cuMemFree(ma));
        CHECK(cuMemFree(mb));
        CHECK(cuMemFree(mc));
        CHECK(cuMemFree(plain));
        free(host);
        printf("OK managed n=%d\n", n);
    } else if (!strcmp(mode, "graph")) {
        CUmodule m;
        CUfunction fadd, fscale;
        CHECK(cuModuleLoadData(&m, KERNELS_PTX));
        CHECK(cuModuleGetFunction(&fadd, m, "gp_vector_add"));
        CHECK(cuModuleGetFunction(&fscale, m, "gp_scale"));
        const int n = 4096;
        size_t bytes = n * sizeof(float);
        float *a = malloc(bytes), *b = malloc(bytes), *c = malloc(bytes);
        CUdeviceptr da, db, dc, dd;
        CHECK(cuMemAlloc(&da, bytes));
        CHECK(cuMemAlloc(&db, bytes));
        CHECK(cuMemAlloc(&dc, bytes));
        CHECK(cuMemAlloc(&dd, bytes));
        CUstream s, s2;
        CHECK(cuStreamCreate(&s, 1));
        CHECK(cuStreamCreate(&s2, 1));
        CUevent fork, join;
        CHECK(cuEventCreate(&fork, 0));
        CHECK(cuEventCreate(&join, 0));
        int st = -1;
        unsigned long long id = 0;
        CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
        CHECK(cuStreamIsCapturing(s, &st));
        EXPECT(st == 1, "capture status %d while capturing", st);
        CHECK(cuStreamGetCaptureInfo(s, &st, &id));
        EXPECT(st == 1 && id != 0, "capture info %d id %llu", st, id);
        /* d = 2 * (a + b), then d[0..4] = 0 */
        unsigned nn = n;
        void *aargs[] = {&da, &db, &dc, &nn};
        CHECK(cuLaunchKernel(fadd, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, aargs, NULL));
        float two = 2.0f;
        void *sargs[] = {&dc, &two, &nn};
        CHECK(cuLaunchKernel(fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, sargs, NULL));
        CHECK(cuMemcpyDtoDAsync(dd, dc, bytes, s));
        CHECK(cuMemsetD8Async(dd, 0, 4 * sizeof(float), s));
        /* Fork to a second stream and join back: d *= 0.5 there. */
        CHECK(cuEventRecord(fork, s));
        CHECK(cuStreamWaitEvent(s2, fork, 0));
        CHECK(cuStreamIsCapturing(s2, &st));
        EXPECT(st == 1, "a stream waiting for a captured event has capture status %d", st);
        float half = 0.5f;
        void *hargs[] = {&dd, &half, &nn};
        CHECK(cuLaunchKernel(fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s2, hargs, NULL));
        CHECK(cuEventRecord(join, s2));
        CHECK(cuStreamWaitEvent(s, join, 0));
        two = 100.0f; /* the launch's arguments were taken at capture */
        CUgraph g;
        CHECK(cuStreamEndCapture(s, &g));
        CHECK(cuStreamIsCapturing(s, &st));
        EXPECT(st == 0, "capture status %d after the capture", st);
        CHECK(cuStreamIsCapturing(s2, &st));
        EXPECT(st == 0, "the joined stream's capture status %d after the capture", st);
        CUgraphExec ge;
        CHECK(cuGraphInstantiateWithFlags(&ge, g, 0));
        for (int round = 0; round < 3; round++) {
            for (int i = 0; i < n; i++) {
                a[i] = (float)(i + round);
                b[i] = 0.25f * i;
            }
            CHECK(cuMemcpyHtoD(da, a, bytes));
            CHECK(cuMemcpyHtoD(db, b, bytes));
            CHECK(cuGraphLaunch(ge, s));
            CHECK(cuStreamSynchronize(s));
            CHECK(cuMemcpyDtoH(c, dd, bytes));
            for (int i = 0; i < n; i++) {
                float want = i < 4 ? 0.0f : (a[i] + b[i]) * 2.0f * 0.5f;
                EXPECT(c[i] == want, "round %d: d[%d] = %f, expected %f", round, i, c[i], want);
            }
        }
        /* The captured graph's nodes, listed: three kernels, a copy and a
         * memset; the memset, changed in the executable graph, writes
         * 0x3f bytes where it wrote zeroes (halved by the last kernel). */
        {
            GET(cuGraphGetNodes, 10000);
            GET(cuGraphNodeGetType, 10000);
            GET(cuGraphExecMemsetNodeSetParams, 10020);
            size_t count = 0;
            CHECK(cuGraphGetNodes(g, NULL, &count));
            CUgraphNode listed[8] = {0};
            size_t room = 8;
            CHECK(cuGraphGetNodes(g, listed, &room));
            EXPECT(count == 5 && room == 5, "the captured graph has %zu nodes, %zu listed", count, room);
            int kinds[8] = {0};
            CUgraphNode memset_node = NULL;
            for (size_t i = 0; i < room; i++) {
                int t = -1;
                CHECK(cuGraphNodeGetType(listed[i], &t));
                EXPECT(t >= 0 && t < 8, "node %zu has type %d", i, t);
                kinds[t]++;
                if (t == 2) memset_node = listed[i];
            }
            EXPECT(kinds[0] == 3 && kinds[1] == 1 && kinds[2] == 1, "captured node types: %d kernels, %d copies, %d memsets",
                   kinds[0], kinds[1], kinds[2]);
            CUDA_MEMSET_NODE_PARAMS ms = {dd, 0, 0x3f, 1, 4 * sizeof(float), 1};
            CHECK(cuGraphExecMemsetNodeSetParams(ge, memset_node, &ms, ctx));
            CHECK(cuGraphLaunch(ge, s));
            CHECK(cuStreamSynchronize(s));
            CHECK(cuMemcpyDtoH(c, dd, bytes));
            unsigned bits = 0x3f3f3f3fu;
            float f;
            memcpy(&f, &bits, sizeof f);
            for (int i = 0; i < 4; i++) EXPECT(c[i] == f * 0.5f, "changed memset: d[%d] = %g, want %g", i, c[i], f * 0.5f);
            /* The graph described for Graphviz, in the program's file. */
            typedef CUresult (*PFN_dot)(CUgraph, const char *, unsigned);
            PFN_dot dotPrint = (PFN_dot)sym("cuGraphDebugDotPrint", 11030);
            char dot_path[] = "/tmp/gpupool-graph-XXXXXX";
            int dfd = mkstemp(dot_path);
            EXPECT(dfd >= 0, "mkstemp");
            close(dfd);
            CHECK(dotPrint(g, dot_path, 0));
            FILE *df = fopen(dot_path, "r");
            char head[16] = {0};
            EXPECT(df && fread(head, 1, 7, df) == 7 && !strncmp(head, "digraph", 7), "the DOT file starts %s", head);
            fclose(df);
            unlink(dot_path);
        }
        /* A copy from the program's memory cannot be captured: it fails at
           once, and so does the capture when it ends. */
        CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_RELAXED));
        CUresult r = cuMemcpyHtoDAsync(da, a, bytes, s);
        EXPECT(r == CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "host copy in a capture gave %d", r);
        CHECK(cuStreamIsCapturing(s, &st));
        EXPECT(st == 2, "capture status %d after a refused copy", st);
        CUgraph bad = NULL;
        r = cuStreamEndCapture(s, &bad);
        EXPECT(r == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "ending an invalidated capture gave %d", r);
        CHECK(cuStreamIsCapturing(s, &st));
        EXPECT(st == 0, "capture status %d after it ended", st);
        CHECK(cuGraphLaunch(ge, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuGraphExecDestroy(ge));
        CHECK(cuGraphDestroy(g));
        /* A graph built node by node: a = 1 (memset), a *= 3 (kernel),
         * b = a (copy), c = a + b (kernel); d = 7 beside them (memset),
         * joined with the last kernel by an empty node. Launched twice. */
        {
            GET(cuGraphCreate, 10000);
            GET(cuGraphAddEmptyNode, 10000);
            GET(cuGraphAddKernelNode, 12000);
            GET(cuGraphAddMemsetNode, 10000);
            GET(cuGraphAddMemcpyNode, 10000);
            GET(cuGraphAddDependencies, 10000);
            GET(cuGraphGetNodes, 10000);
            CUgraph bg;
            CHECK(cuGraphCreate(&bg, 0));
            CUDA_MEMSET_NODE_PARAMS ms = {da, 0, 0x3f800000u, 4, (size_t)n, 1};
            CUgraphNode set_a, scale_a, copy_b, add_c, set_d, join_all;
            CHECK(cuGraphAddMemsetNode(&set_a, bg, NULL, 0, &ms, ctx));
            float three = 3.0f;
            void *sargs[] = {&da, &three, &nn};
            CUDA_KERNEL_NODE_PARAMS kp = {fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, sargs, NULL, NULL, NULL};
            CHECK(cuGraphAddKernelNode(&scale_a, bg, &set_a, 1, &kp));
            CUDA_MEMCPY3D cp = {0};
            cp.srcMemoryType = CU_MEMORYTYPE_DEVICE;
            cp.srcDevice = da;
            cp.dstMemoryType = CU_MEMORYTYPE_DEVICE;
            cp.dstDevice = db;
            cp.WidthInBytes = bytes;
            cp.Height = 1;
            cp.Depth = 1;
            CHECK(cuGraphAddMemcpyNode(&copy_b, bg, &scale_a, 1, &cp, ctx));
            void *vargs[] = {&da, &db, &dc, &nn};
            CUDA_KERNEL_NODE_PARAMS kv = {fadd, (n + 255) / 256, 1, 1, 256, 1, 1, 0, vargs, NULL, NULL, NULL};
            CHECK(cuGraphAddKernelNode(&add_c, bg, &copy_b, 1, &kv));
            CUDA_MEMSET_NODE_PARAMS md = {dd, 0, 7, 4, (size_t)n, 1};
            CHECK(cuGraphAddMemsetNode(&set_d, bg, NULL, 0, &md, ctx));
            CHECK(cuGraphAddEmptyNode(&join_all, bg, &add_c, 1));
            CHECK(cuGraphAddDependencies(bg, &set_d, &join_all, 1));
            /* A child graph (b = 9, after the sum), copied into the node;
             * an event recorded when everything is done, and waited for. */
            GET(cuGraphAddChildGraphNode, 10000);
            GET(cuGraphAddEventRecordNode, 11010);
            GET(cuGraphAddEventWaitNode, 11010);
            GET(cuEventQuery, 2000);
            CUgraph child;
            CHECK(cuGraphCreate(&child, 0));
            CUDA_MEMSET_NODE_PARAMS mb = {db, 0, 9, 4, (size_t)n, 1};
            CUgraphNode child_set, child_node, record, wait;
            CHECK(cuGraphAddMemsetNode(&child_set, child, NULL, 0, &mb, ctx));
            CHECK(cuGraphAddChildGraphNode(&child_node, bg, &join_all, 1, child));
            CHECK(cuGraphDestroy(child));
            CUevent done;
            CHECK(cuEventCreate(&done, 0));
            CHECK(cuGraphAddEventRecordNode(&record, bg, &child_node, 1, done));
            CHECK(cuGraphAddEventWaitNode(&wait, bg, &record, 1, done));
            size_t count = 0;
            CHECK(cuGraphGetNodes(bg, NULL, &count));
            EXPECT(count == 9, "a graph of nine nodes has %zu", count);
            {
                GET(cuGraphNodeGetType, 10000);
                CUgraphNode listed[10];
                size_t room = 10;
                CHECK(cuGraphGetNodes(bg, listed, &room));
                CUgraphNode mine[9] = {set_a, scale_a, copy_b, add_c, set_d, join_all, child_node, record, wait};
                int types[9] = {2, 0, 1, 0, 2, 5, 4, 7, 6};
                int seen = 0;
                for (int i = 0; i < 9; i++)
                    for (int j = 0; j < 9; j++) seen += listed[i] == mine[j];
                EXPECT(room == 9 && seen == 9 && listed[9] == NULL, "cuGraphGetNodes listed %zu nodes, %d of ours", room,
                       seen);
                for (int j = 0; j < 9; j++) {
                    int t = -1;
                    CHECK(cuGraphNodeGetType(mine[j], &t));
                    EXPECT(t == types[j], "node %d has type %d, want %d", j, t, types[j]);
                }
            }
            CUgraphExec bx;
            CHECK(cuGraphInstantiateWithFlags(&bx, bg, 0));
            unsigned *dw = malloc(bytes);
            for (int round = 0; round < 2; round++) {
                CHECK(cuMemsetD32(dc, 0, n));
                CHECK(cuMemsetD32(dd, 0, n));
                CHECK(cuGraphLaunch(bx, s));
                CHECK(cuStreamSynchronize(s));
                CHECK(cuMemcpyDtoH(c, dc, bytes));
                CHECK(cuMemcpyDtoH(dw, dd, bytes));
                for (int i = 0; i < n; i++) {
                    EXPECT(c[i] == 6.0f, "round %d: built graph c[%d] = %f, want 6", round, i, c[i]);
                    EXPECT(dw[i] == 7, "round %d: built graph d[%d] = %u, want 7", round, i, dw[i]);
                }
                CHECK(cuMemcpyDtoH(dw, db, bytes));
                for (int i = 0; i < n; i++) EXPECT(dw[i] == 9, "round %d: child graph b[%d] = %u", round, i, dw[i]);
                CHECK(cuEventQuery(done));
            }
            /* The executable's scale, changed from 3 to 5: c = 10; the
             * graph it came from keeps its own (a new executable gives 6). */
            GET(cuGraphExecKernelNodeSetParams, 12000);
            float five = 5.0f;
            void *fargs[] = {&da, &five, &nn};
            kp.kernelParams = fargs;
            CHECK(cuGraphExecKernelNodeSetParams(bx, scale_a, &kp));
            CUgraphExec fresh;
            CHECK(cuGraphInstantiateWithFlags(&fresh, bg, 0));
            for (int pass = 0; pass < 2; pass++) {
                float want = pass == 0 ? 10.0f : 6.0f;
                CHECK(cuGraphLaunch(pass == 0 ? bx : fresh, s));
                CHECK(cuStreamSynchronize(s));
                CHECK(cuMemcpyDtoH(c, dc, bytes));
                for (int i = 0; i < n; i++) EXPECT(c[i] == want, "pass %d: c[%d] = %f, want %f", pass, i, c[i], want);
            }
            CHECK(cuGraphExecDestroy(fresh));
            /* The executable's memset (a = 2, so 10 after the scale) and
             * copy (only the first half of b) changed: c = 20 for the
             * first half; for the rest b keeps the child's bits from the
             * last launch (the word 9, a float of about 1e-44), so c = 10. */
            GET(cuGraphExecMemsetNodeSetParams, 10020);
            GET(cuGraphExecMemcpyNodeSetParams, 10020);
            CUDA_MEMSET_NODE_PARAMS ms2 = {da, 0, 0x40000000u, 4, (size_t)n, 1};
            CHECK(cuGraphExecMemsetNodeSetParams(bx, set_a, &ms2, ctx));
            CUDA_MEMCPY3D half = cp;
            half.WidthInBytes = bytes / 2;
            CHECK(cuGraphExecMemcpyNodeSetParams(bx, copy_b, &half, ctx));
            CHECK(cuGraphLaunch(bx, s));
            CHECK(cuStreamSynchronize(s));
            CHECK(cuMemcpyDtoH(c, dc, bytes));
            for (int i = 0; i < n; i++) {
                float want = i < n / 2 ? 20.0f : 10.0f;
                EXPECT(c[i] == want, "after node updates c[%d] = %f, want %f", i, c[i], want);
            }
            /* The child node runs another child of its shape (b = 11); one
             * of another shape is refused. The event nodes take another
             * event: the graph records that one now. */
            GET(cuGraphExecChildGraphNodeSetParams, 11010);
            GET(cuGraphExecEventRecordNodeSetEvent, 11010);
            GET(cuGraphExecEventWaitNodeSetEvent, 11010);
            CUgraph child2, child3;
            CHECK(cuGraphCreate(&child2, 0));
            CUDA_MEMSET_NODE_PARAMS mb2 = {db, 0, 11, 4, (size_t)n, 1};
            CUgraphNode c2, c3a, c3b;
            CHECK(cuGraphAddMemsetNode(&c2, child2, NULL, 0, &mb2, ctx));
            CHECK(cuGraphCreate(&child3, 0));
            CHECK(cuGraphAddMemsetNode(&c3a, child3, NULL, 0, &mb2, ctx));
            CHECK(cuGraphAddMemsetNode(&c3b, child3, &c3a, 1, &mb2, ctx));
            EXPECT(cuGraphExecChildGraphNodeSetParams(bx, child_node, child3) != CUDA_SUCCESS,
                   "a child of another shape was taken");
            CHECK(cuGraphExecChildGraphNodeSetParams(bx, child_node, child2));
            CUevent t0, done2;
            CHECK(cuEventCreate(&t0, 0));
            CHECK(cuEventCreate(&done2, 0));
            float elapsed = -1;
            EXPECT(cuEventElapsedTime(&elapsed, t0, done2) != CUDA_SUCCESS, "elapsed time of events never recorded");
            CHECK(cuGraphExecEventRecordNodeSetEvent(bx, record, done2));
            CHECK(cuGraphExecEventWaitNodeSetEvent(bx, wait, done2));
            EXPECT(cuGraphExecEventWaitNodeSetEvent(bx, record, done2) != CUDA_SUCCESS,
                   "a record node was given a wait's event");
            CHECK(cuEventRecord(t0, s));
            CHECK(cuGraphLaunch(bx, s));
            CHECK(cuStreamSynchronize(s));
            CHECK(cuEventElapsedTime(&elapsed, t0, done2));
            EXPECT(elapsed >= 0, "elapsed %f ms", elapsed);
            CHECK(cuMemcpyDtoH(dw, db, bytes));
            for (int i = 0; i < n; i++) EXPECT(dw[i] == 11, "new child graph b[%d] = %u", i, dw[i]);
            CHECK(cuGraphDestroy(child2));
            CHECK(cuGraphDestroy(child3));
            CHECK(cuEventDestroy(t0));
            CHECK(cuEventDestroy(done2));
            free(dw);
            if (getenv("GPUPOOL_SERVER")) {
                /* A copy node from the program's own memory cannot be the
                 * server's; nodes of another graph are no dependencies. */
                CUDA_MEMCPY3D up = cp;
                up.srcMemoryType = CU_MEMORYTYPE_HOST;
                up.srcHost = a;
                CUgraphNode bad_node;
                EXPECT(cuGraphAddMemcpyNode(&bad_node, bg, NULL, 0, &up, ctx) == CUDA_ERROR_NOT_SUPPORTED,
                       "a copy node from host memory was taken");
                CUgraph other;
                CHECK(cuGraphCreate(&other, 0));
                EXPECT(cuGraphAddEmptyNode(&bad_node, other, &set_a, 1) == CUDA_ERROR_INVALID_VALUE,
                       "a node of another graph taken as a dependency");
                CHECK(cuGraphDestroy(other));
            }
            CHECK(cuGraphExecDestroy(bx));
            CHECK(cuGraphDestroy(bg));
            CHECK(cuEventDestroy(done));
            /* The generic form (cuGraphAddNode, a tagged union): a = 2
             * (memset), a *= 4 (kernel), b = a (copy), an empty node last. */
            {
                GET(cuGraphAddNode, 12020);
                CUgraph gg;
                CHECK(cuGraphCreate(&gg, 0));
                CUgraphNodeParams np;
                CUgraphNode gset, gscale, gcopy, gend;
                memset(&np, 0, sizeof np);
                np.type = CU_GRAPH_NODE_TYPE_MEMSET;
                np.memset.params = (CUDA_MEMSET_NODE_PARAMS){da, 0, 0x40000000u, 4, (size_t)n, 1};
                np.memset.ctx = ctx;
                CHECK(cuGraphAddNode(&gset, gg, NULL, 0, &np));
                float four = 4.0f;
                void *gargs[] = {&da, &four, &nn};
                memset(&np, 0, sizeof np);
                np.type = CU_GRAPH_NODE_TYPE_KERNEL;
                np.kernel = (CUDA_KERNEL_NODE_PARAMS){fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, gargs, NULL, NULL, NULL};
                CHECK(cuGraphAddNode(&gscale, gg, &gset, 1, &np));
                memset(&np, 0, sizeof np);
                np.type = CU_GRAPH_NODE_TYPE_MEMCPY;
                np.memcpy.copyCtx = ctx;
                np.memcpy.copyParams = cp;
                CHECK(cuGraphAddNode(&gcopy, gg, &gscale, 1, &np));
                memset(&np, 0, sizeof np);
                np.type = CU_GRAPH_NODE_TYPE_EMPTY;
                CHECK(cuGraphAddNode(&gend, gg, &gcopy, 1, &np));
                CUgraphExec gx;
                CHECK(cuGraphInstantiateWithFlags(&gx, gg, 0));
                CHECK(cuMemsetD32(db, 0, n));
                CHECK(cuGraphLaunch(gx, s));
                CHECK(cuStreamSynchronize(s));
                CHECK(cuMemcpyDtoH(c, db, bytes));
                for (int i = 0; i < n; i++) EXPECT(c[i] == 8.0f, "generic graph b[%d] = %f, want 8", i, c[i]);
                /* The executable updated from a graph of the same shape
                 * (a = 3 instead of 2): b = 12. One of another shape is
                 * refused, and the executable keeps what it had. */
                GET(cuGraphExecUpdate, 12000);
                GET(cuGraphAddMemsetNode, 10000);
                CUgraph same, other;
                CHECK(cuGraphCreate(&same, 0));
                CUgraphNode s_set, s_scale, s_copy, s_end;
                CUDA_MEMSET_NODE_PARAMS three_ms = {da, 0, 0x40400000u, 4, (size_t)n, 1};
                CHECK(cuGraphAddMemsetNode(&s_set, same, NULL, 0, &three_ms, ctx));
                memset(&np, 0, sizeof np);
                np.type = CU_GRAPH_NODE_TYPE_KERNEL;
                np.kernel = (CUDA_KERNEL_NODE_PARAMS){fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, gargs, NULL, NULL, NULL};
                CHECK(cuGraphAddNode(&s_scale, same, &s_set, 1, &np));
                memset(&np, 0, sizeof np);
                np.type = CU_GRAPH_NODE_TYPE_MEMCPY;
                np.memcpy.copyCtx = ctx;
                np.memcpy.copyParams = cp;
                CHECK(cuGraphAddNode(&s_copy, same, &s_scale, 1, &np));
                memset(&np, 0, sizeof np);
                np.type = CU_GRAPH_NODE_TYPE_EMPTY;
                CHECK(cuGraphAddNode(&s_end, same, &s_copy, 1, &np));
                CUgraphExecUpdateResultInfo info;
                memset(&info, 0xff, sizeof info);
                CHECK(cuGraphExecUpdate(gx, same, &info));
                EXPECT(info.result == 0, "update result %d", info.result);
                CHECK(cuGraphCreate(&other, 0));
                CUgraphNode o_set;
                CHECK(cuGraphAddMemsetNode(&o_set, other, NULL, 0, &three_ms, ctx));
                CUresult ur = cuGraphExecUpdate(gx, other, &info);
                EXPECT(ur == CUDA_ERROR_GRAPH_EXEC_UPDATE_FAILURE && info.result == CU_GRAPH_EXEC_UPDATE_ERROR_TOPOLOGY_CHANGED,
                       "an update to another shape gave %d, result %d", ur, info.result);
                CHECK(cuMemsetD32(db, 0, n));
                CHECK(cuGraphLaunch(gx, s));
                CHECK(cuStreamSynchronize(s));
                CHECK(cuMemcpyDtoH(c, db, bytes));
                for (int i = 0; i < n; i++) EXPECT(c[i] == 12.0f, "updated graph b[%d] = %f, want 12", i, c[i]);
                CHECK(cuGraphDestroy(same));
                CHECK(cuGraphDestroy(other));
                CHECK(cuGraphExecDestroy(gx));
                CHECK(cuGraphDestroy(gg));
            }
        }
        /* Stream-ordered memory in a capture is the graph's: t = alloc;
         * t = 2 (memset); t *= 4; b = t; free t. Each launch gives b = 8. */
        {
            GET(cuMemAllocAsync, 11020);
            GET(cuMemFreeAsync, 11020);
            GET(cuMemsetD32Async, 3020);
            CHECK(cuStreamBeginCapture(s, CU_STREAM_CAPTURE_MODE_GLOBAL));
            CUdeviceptr t = 0;
            CHECK(cuMemAllocAsync(&t, bytes, s));
            CHECK(cuMemsetD32Async(t, 0x40000000u, n, s));
            float four = 4.0f;
            void *margs[] = {&t, &four, &nn};
            CHECK(cuLaunchKernel(fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, margs, NULL));
            CHECK(cuMemcpyDtoDAsync(db, t, bytes, s));
            CHECK(cuMemFreeAsync(t, s));
            CUgraph mg;
            CHECK(cuStreamEndCapture(s, &mg));
            CUgraphExec mx;
            CHECK(cuGraphInstantiateWithFlags(&mx, mg, 1 /* CUDA_GRAPH_INSTANTIATE_FLAG_AUTO_FREE_ON_LAUNCH */));
            for (int round = 0; round < 3; round++) {
                CHECK(cuMemsetD32(db, 0, n));
                CHECK(cuGraphLaunch(mx, s));
                CHECK(cuStreamSynchronize(s));
                CHECK(cuMemcpyDtoH(c, db, bytes));
                for (int i = 0; i < n; i++) EXPECT(c[i] == 8.0f, "round %d: graph memory b[%d] = %f", round, i, c[i]);
            }
            CHECK(cuGraphExecDestroy(mx));
            CHECK(cuGraphDestroy(mg));
        }
        /* The same with memory nodes added by hand: t = alloc; t = 2;
         * t *= 4; b = t; free t. */
        {
            typedef struct {
                int type, handleTypes;
                int locType, locId;
                unsigned char rest[72];
                const void *accessDescs;
                size_t accessDescCount;
                size_t bytesize;
                CUdeviceptr dptr;
            } MemAllocNodeParams;
            typedef CUresult (*PFN_allocNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t,
                                               MemAllocNodeParams *);
            typedef CUresult (*PFN_freeNode)(CUgraphNode *, CUgraph, const CUgraphNode *, size_t, CUdeviceptr);
            GET(cuGraphCreate, 10000);
            GET(cuGraphAddMemsetNode, 10000);
            GET(cuGraphAddKernelNode, 12000);
            GET(cuGraphAddMemcpyNode, 10000);
            PFN_allocNode allocNode = (PFN_allocNode)sym("cuGraphAddMemAllocNode", 11040);
            PFN_freeNode freeNode = (PFN_freeNode)sym("cuGraphAddMemFreeNode", 11040);
            CUgraph mg;
            CHECK(cuGraphCreate(&mg, 0));
            MemAllocNodeParams ap;
            memset(&ap, 0, sizeof ap);
            ap.type = 1;
            ap.locType = 1;
            ap.locId = dev;
            ap.bytesize = bytes;
            CUgraphNode n_alloc, n_set, n_scale, n_copy, n_free;
            CHECK(allocNode(&n_alloc, mg, NULL, 0, &ap));
            EXPECT(ap.dptr != 0, "an allocation node gave no address");
            CUdeviceptr t = ap.dptr;
            CUDA_MEMSET_NODE_PARAMS tm = {t, 0, 0x40000000u, 4, (size_t)n, 1};
            CHECK(cuGraphAddMemsetNode(&n_set, mg, &n_alloc, 1, &tm, ctx));
            float four = 4.0f;
            void *targs[] = {&t, &four, &nn};
            CUDA_KERNEL_NODE_PARAMS tk = {fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, targs, NULL, NULL, NULL};
            CHECK(cuGraphAddKernelNode(&n_scale, mg, &n_set, 1, &tk));
            CUDA_MEMCPY3D tc = {0};
            tc.srcMemoryType = CU_MEMORYTYPE_DEVICE;
            tc.srcDevice = t;
            tc.dstMemoryType = CU_MEMORYTYPE_DEVICE;
            tc.dstDevice = db;
            tc.WidthInBytes = bytes;
            tc.Height = 1;
            tc.Depth = 1;
            CHECK(cuGraphAddMemcpyNode(&n_copy, mg, &n_scale, 1, &tc, ctx));
            CHECK(freeNode(&n_free, mg, &n_copy, 1, t));
            CUgraphExec mx;
            CHECK(cuGraphInstantiateWithFlags(&mx, mg, 0));
            for (int round = 0; round < 2; round++) {
                CHECK(cuMemsetD32(db, 0, n));
                CHECK(cuGraphLaunch(mx, s));
                CHECK(cuStreamSynchronize(s));
                CHECK(cuMemcpyDtoH(c, db, bytes));
                for (int i = 0; i < n; i++) EXPECT(c[i] == 8.0f, "round %d: memory nodes b[%d] = %f", round, i, c[i]);
            }
            /* The kernel node disabled in the executable graph: b = 2; and
             * enabled again: 8. */
            typedef CUresult (*PFN_setEnabled)(CUgraphExec, CUgraphNode, unsigned);
            typedef CUresult (*PFN_getEnabled)(CUgraphExec, CUgraphNode, unsigned *);
            PFN_setEnabled setEnabled = (PFN_setEnabled)sym("cuGraphNodeSetEnabled", 11060);
            PFN_getEnabled getEnabled = (PFN_getEnabled)sym("cuGraphNodeGetEnabled", 11060);
            for (unsigned on = 0; on < 2; on++) {
                unsigned now = 7;
                CHECK(setEnabled(mx, n_scale, on));
                CHECK(getEnabled(mx, n_scale, &now));
                EXPECT(now == on, "the kernel node is enabled %u, set %u", now, on);
                CHECK(cuGraphLaunch(mx, s));
                CHECK(cuStreamSynchronize(s));
                CHECK(cuMemcpyDtoH(c, db, bytes));
                float want = on ? 8.0f : 2.0f;
                for (int i = 0; i < n; i++) EXPECT(c[i] == want, "enabled %u: b[%d] = %f, want %f", on, i, c[i], want);
            }
            CHECK(cuGraphExecDestroy(mx));
            CHECK(cuGraphDestroy(mg));
        }
        /* Capture into a graph already holding a node: a = 1 (the built
         * memset), then a *= 3 (captured after it); the graph has both. */
        {
            GET(cuGraphCreate, 10000);
            GET(cuGraphAddMemsetNode, 10000);
            GET(cuGraphGetNodes, 10000);
            GET(cuGraphNodeGetType, 10000);
            GET(cuStreamBeginCaptureToGraph, 12030);
            CUgraph into;
            CHECK(cuGraphCreate(&into, 0));
            CUDA_MEMSET_NODE_PARAMS one = {da, 0, 0x3f800000u, 4, (size_t)n, 1};
            CUgraphNode first;
            CHECK(cuGraphAddMemsetNode(&first, into, NULL, 0, &one, ctx));
            CHECK(cuStreamBeginCaptureToGraph(s, into, &first, NULL, 1, CU_STREAM_CAPTURE_MODE_GLOBAL));
            CHECK(cuStreamIsCapturing(s, &st));
            EXPECT(st == 1, "capture status %d capturing into a graph", st);
            float three = 3.0f;
            void *targs[] = {&da, &three, &nn};
            CHECK(cuLaunchKernel(fscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, targs, NULL));
            CUgraph ended = NULL;
            CHECK(cuStreamEndCapture(s, &ended));
            EXPECT(ended == into, "a capture into a graph ended with another graph");
            CUgraphNode nodes[4] = {0};
            size_t room = 4;
            CHECK(cuGraphGetNodes(into, nodes, &room));
            int types = 0;
            for (size_t i = 0; i < room; i++) {
                int t = -1;
                CHECK(cuGraphNodeGetType(nodes[i], &t));
                types |= 1 << t;
            }
            EXPECT(room == 2 && types == ((1 << 0) | (1 << 2)), "the graph captured into has %zu nodes (types %#x)",
                   room, types);
            CUgraphExec ix;
            CHECK(cuGraphInstantiateWithFlags(&ix, into, 0));
            CHECK(cuMemsetD32(da, 0, n));
            CHECK(cuGraphLaunch(ix, s));
            CHECK(cuStreamSynchronize(s));
            CHECK(cuMemcpyDtoH(c, da, bytes));
            for (int i = 0; i < n; i++) EXPECT(c[i] == 3.0f, "captured into a graph: a[%d] = %f, want 3", i, c[i]);
            CHECK(cuGraphExecDestroy(ix));
            CHECK(cuGraphDestroy(into));
        }
        printf("OK graph n=%d\n", n);
    } else if (!strcmp(mode, "completions")) {
        /* Event queries after the server told the record done. The phase
         * (argv[2]) picks what the call report of the run shows. */
        const char *phase = argc > 2 ? argv[2] : "local";
        GET(cuEventQuery, 2000);
        alarm(60);
        CUevent e;
        CHECK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
        /* Asked of once: its later records are watched. */
        CHECK(cuEventRecord(e, NULL));
        CHECK(cuEventSynchronize(e));
        if (!strcmp(phase, "local")) {
            /* Done long before the queries: they are answered in the shim
             * once the server's answer is in. */
            CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
            CHECK(cuEventRecord(e, NULL));
            usleep(20000);
            for (int i = 0; i < 100; i++) CHECK(cuEventQuery(e));
            CHECK(cuEventSynchronize(e));
            printf("OK completions local\n");
        } else if (!strcmp(phase, "again")) {
            /* The first record is told done; each record after it is a new
             * question, which the older answer does not settle. */
            CHECK(cuEventRecord(e, NULL));
            usleep(20000);
            CHECK(cuEventQuery(e));
            for (int i = 0; i < 10; i++) {
                CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
                CHECK(cuEventRecord(e, NULL));
                CUresult q = cuEventQuery(e);
                EXPECT(q == CUDA_SUCCESS || q == CUDA_ERROR_NOT_READY, "query after a new record: %d", q);
            }
            printf("OK completions again\n");
        } else if (!strcmp(phase, "young")) {
            /* A query right after its record, before the server can have
             * told it: not ready, without asking. A synchronisation tells
             * the program the work is done: the query after it is done. */
            int not_ready = 0;
            for (int i = 0; i < 10; i++) {
                CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
                CHECK(cuEventRecord(e, NULL));
                CUresult q = cuEventQuery(e);
                EXPECT(q == CUDA_SUCCESS || q == CUDA_ERROR_NOT_READY, "query after a new record: %d", q);
                not_ready += q == CUDA_ERROR_NOT_READY;
                CHECK(cuCtxSynchronize());
                q = cuEventQuery(e);
                EXPECT(q == CUDA_SUCCESS, "query %d after a synchronisation: %d", i, q);
            }
            /* An event recorded after it said done: the work before that
             * is done too, so the older record's query is done. */
            CUevent later;
            CHECK(cuEventCreate(&later, CU_EVENT_DISABLE_TIMING));
            CHECK(cuEventRecord(later, NULL));
            CHECK(cuEventSynchronize(later));
            for (int i = 0; i < 10; i++) {
                CHECK(cuEventRecord(e, NULL));
                CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
                CHECK(cuEventRecord(later, NULL));
                CUresult q;
                while ((q = cuEventQuery(later)) == CUDA_ERROR_NOT_READY) {
                }
                CHECK(q);
                q = cuEventQuery(e);
                EXPECT(q == CUDA_SUCCESS, "query %d of a record before one done: %d", i, q);
            }
            printf("OK completions young (%d of 10 not ready)\n", not_ready);
        } else if (!strcmp(phase, "data")) {
            /* Device-to-host data behind a record has landed when a query
             * says done, whoever answers it. */
            GET(cuMemsetD32Async, 3020);
            const unsigned n = 1 << 18;
            unsigned *host;
            CHECK(cuMemAllocHost((void **)&host, n * 4));
            CUdeviceptr d;
            CHECK(cuMemAlloc(&d, n * 4));
            CUstream st;
            CHECK(cuStreamCreate(&st, 1));
            int local_done = 0;
            for (unsigned round = 1; round <= 8; round++) {
                memset(host, 0, n * 4);
                CHECK(cuMemsetD32Async(d, round * 0x01010101u, n, st));
                CHECK(cuMemcpyDtoHAsync(host, d, n * 4, st));
                CHECK(cuEventRecord(e, st));
                CUresult q;
                int polls = 0;
                while ((q = cuEventQuery(e)) == CUDA_ERROR_NOT_READY) {
                    polls++;
                    usleep(200);
                }
                CHECK(q);
                for (unsigned i = 0; i < n; i++)
                    EXPECT(host[i] == round * 0x01010101u, "round %u: word %u is %#x after the query said done",
                           round, i, host[i]);
                /* Later queries of the same record. */
                usleep(5000);
                for (int i = 0; i < 5; i++) CHECK(cuEventQuery(e));
                local_done += polls == 0;
            }
            printf("OK completions data (%d of 8 rounds done at the first query)\n", local_done);
        } else if (!strcmp(phase, "fault")) {
            /* Told done, then the context breaks: the query tells the
             * fault, as every call after it does. */
            CHECK(cuEventRecord(e, NULL));
            usleep(20000);
            CHECK(cuEventQuery(e));
            CHECK(cuEventQuery(e));
            CUdeviceptr p;
            CHECK(cuMemAlloc(&p, 4096));
            void *args[] = {&p};
            CHECK(cuLaunchKernel(fault, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
            CUresult sync = cuCtxSynchronize();
            EXPECT(sync == CUDA_ERROR_ILLEGAL_ADDRESS, "synchronize after a fault returned %d", sync);
            CUresult q = cuEventQuery(e);
            EXPECT(q == CUDA_ERROR_ILLEGAL_ADDRESS, "a query after the fault returned %d", q);
            printf("OK completions fault\n");
            return 0;
        } else if (!strcmp(phase, "elsewhere")) {
            /* Events the shim may not see recorded: an interprocess event,
             * and one a graph's event record node records. Every question
             * goes to the server. */
            GET(cuGraphCreate, 10000);
            GET(cuGraphAddEventRecordNode, 11010);
            CUevent shared;
            CHECK(cuEventCreate(&shared, CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS));
            CHECK(cuEventRecord(shared, NULL));
            CHECK(cuEventSynchronize(shared));
            CHECK(cuEventRecord(shared, NULL));
            usleep(20000);
            for (int i = 0; i < 5; i++) CHECK(cuEventQuery(shared));
            CUgraph g;
            CUgraphNode node;
            CUgraphExec ge;
            CHECK(cuGraphCreate(&g, 0));
            CHECK(cuGraphAddEventRecordNode(&node, g, NULL, 0, e));
            CHECK(cuGraphInstantiateWithFlags(&ge, g, 0));
            CHECK(cuEventRecord(e, NULL));
            usleep(20000);
            CHECK(cuGraphLaunch(ge, NULL));
            for (int i = 0; i < 5; i++) {
                CUresult q = cuEventQuery(e);
                EXPECT(q == CUDA_SUCCESS || q == CUDA_ERROR_NOT_READY, "query of a graph's event: %d", q);
            }
            CHECK(cuCtxSynchronize());
            printf("OK completions elsewhere\n");
        } else {
            fprintf(stderr, "FAIL unknown completions phase %s\n", phase);
            return 2;
        }
    } else if (!strcmp(mode, "cuda13-calls")) {
        /* Calls cudart 12.5 and 13 look up. */
        GET(cuMemAllocManaged, 6000);
        GET(cuLaunchHostFunc, 10000);
        GET(cuEventQuery, 2000);
        PFN_cuStreamGetCtx_v2 cuStreamGetCtx_v2 = (PFN_cuStreamGetCtx_v2)sym("cuStreamGetCtx", 12050);
        GET(cuOccupancyMaxPotentialClusterSize, 11070);
        GET(cuMemPrefetchBatchAsync, 13000);
        GET(cuMemDiscardBatchAsync, 13000);
        GET(cuMemDiscardAndPrefetchBatchAsync, 13000);
        GET(cuCtxRecordEvent, 12050);
        GET(cuCtxWaitEvent, 12050);
        alarm(60);
        CUstream st;
        CHECK(cuStreamCreate(&st, 1));
        /* A stream's context, and no green context. */
        CUcontext got = NULL;
        void *green = (void *)1;
        CHECK(cuStreamGetCtx_v2(st, &got, &green));
        EXPECT(got == ctx && green == NULL, "stream context %p green %p", (void *)got, green);
        CHECK(cuStreamGetCtx_v2(NULL, &got, NULL));
        EXPECT(got == ctx, "the NULL stream's context %p", (void *)got);
        EXPECT(cuStreamGetCtx_v2(st, NULL, NULL) == CUDA_ERROR_INVALID_VALUE, "no slot taken");

        /* Cluster sizes: asked twice, answered by the server once. */
        CUlaunchConfig cfg;
        memset(&cfg, 0, sizeof cfg);
        cfg.gridDimX = 132;
        cfg.blockDimX = 256;
        cfg.gridDimY = cfg.gridDimZ = cfg.blockDimY = cfg.blockDimZ = 1;
        int cluster = 0, again = 0;
        CHECK(cuOccupancyMaxPotentialClusterSize(&cluster, vadd, &cfg));
        CHECK(cuOccupancyMaxPotentialClusterSize(&again, vadd, &cfg));
        EXPECT(cluster >= 1 && cluster == again, "potential cluster sizes %d then %d", cluster, again);
        EXPECT(cuOccupancyMaxPotentialClusterSize(NULL, vadd, &cfg) == CUDA_ERROR_INVALID_VALUE, "no slot");
        /* Active clusters of 1 to 8 blocks, each a grid of one cluster, as
         * cuBLASLt asks them of every kernel: through gpupool, one round
         * trip for all. */
        {
            typedef CUresult (*PFN_activeClusters)(int *, CUfunction, const CUlaunchConfig *);
            PFN_activeClusters activeClusters = (PFN_activeClusters)sym("cuOccupancyMaxActiveClusters", 11070);
            CUlaunchAttribute dim;
            memset(&dim, 0, sizeof dim);
            dim.id = 4; /* CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION */
            CUlaunchConfig cc = cfg;
            cc.attrs = &dim;
            cc.numAttrs = 1;
            int last = 1 << 30;
            for (unsigned k = 1; k <= 8; k++) {
                unsigned size[3] = {k, 1, 1};
                memcpy(dim.value.bytes, size, sizeof size);
                cc.gridDimX = k;
                int active = -1;
                CHECK(activeClusters(&active, vadd, &cc));
                /* Larger clusters: no more of them fit. */
                EXPECT(active >= 1 && active <= last, "%d active clusters of %u blocks, %d of one fewer", active, k,
                       last);
                last = active;
            }
        }

        /* Managed ranges prefetched in a batch: two to the device, one to
         * the host, on a stream; contents kept. */
        const size_t n = 1 << 16;
        CUdeviceptr m[3];
        for (int i = 0; i < 3; i++) {
            CHECK(cuMemAllocManaged(&m[i], n * 4, CU_MEM_ATTACH_GLOBAL));
            unsigned *w = (unsigned *)m[i];
            for (size_t j = 0; j < n; j++) w[j] = (unsigned)(i * 1000003 + j);
        }
        size_t sizes[3] = {n * 4, n * 4, n * 4};
        CUmemLocation locs[2] = {{1, dev}, {2 /* host */, 0}};
        size_t starts[2] = {0, 2};
        CHECK(cuMemPrefetchBatchAsync(m, sizes, 3, locs, starts, 2, 0, st));
        CHECK(cuStreamSynchronize(st));
        for (int i = 0; i < 3; i++) {
            unsigned *w = (unsigned *)m[i];
            for (size_t j = 0; j < n; j += 997)
                EXPECT(w[j] == (unsigned)(i * 1000003 + j), "range %d word %zu is %u after the batch", i, j, w[j]);
        }
        CHECK(cuMemDiscardBatchAsync(m, sizes, 3, 0, st));
        CHECK(cuMemDiscardAndPrefetchBatchAsync(m, sizes, 3, locs, starts, 2, 0, st));
        CHECK(cuStreamSynchronize(st));
        /* Refused: the legacy stream, flags, a first run not at 0, runs out
         * of order or past the batch, memory that is not managed. */
        size_t bad_first[2] = {1, 2}, bad_order[2] = {0, 0}, bad_end[2] = {0, 3};
        CUdeviceptr plain;
        CHECK(cuMemAlloc(&plain, n * 4));
        CUdeviceptr mixed[3] = {m[0], plain, m[2]};
        CUresult r[8] = {
            cuMemPrefetchBatchAsync(m, sizes, 3, locs, starts, 2, 0, NULL),
            cuMemPrefetchBatchAsync(m, sizes, 3, locs, starts, 2, 1, st),
            cuMemPrefetchBatchAsync(m, sizes, 3, locs, bad_first, 2, 0, st),
            cuMemPrefetchBatchAsync(m, sizes, 3, locs, bad_order, 2, 0, st),
            cuMemPrefetchBatchAsync(m, sizes, 3, locs, bad_end, 2, 0, st),
            cuMemPrefetchBatchAsync(mixed, sizes, 3, locs, starts, 2, 0, st),
            cuMemDiscardBatchAsync(m, sizes, 3, 0, NULL),
            cuMemDiscardBatchAsync(mixed, sizes, 3, 0, st),
        };
        for (int i = 0; i < 8; i++)
            EXPECT(r[i] == CUDA_ERROR_INVALID_VALUE, "bad batch %d answered %d", i, r[i]);

        /* An event for all of the context's work: it follows a host
         * function still running on another stream. */
        CUevent e;
        CHECK(cuEventCreate(&e, CU_EVENT_DISABLE_TIMING));
        cb_gate_open = 0;
        CHECK(cuLaunchHostFunc(st, cb_gated, (void *)41));
        CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
        CHECK(cuCtxRecordEvent(ctx, e));
        usleep(20000);
        CUresult q = cuEventQuery(e);
        EXPECT(q == CUDA_ERROR_NOT_READY, "the context's event is %d while a host function runs", q);
        pthread_mutex_lock(&cb_lock);
        cb_gate_open = 1;
        pthread_cond_broadcast(&cb_cond);
        pthread_mutex_unlock(&cb_lock);
        CHECK(cuEventSynchronize(e));
        EXPECT(cb_done() >= 1, "the event completed before the host function returned");
        /* All later work of the context waits for it. */
        CUstream other;
        CHECK(cuStreamCreate(&other, 1));
        CHECK(cuCtxWaitEvent(ctx, e));
        CHECK(cuStreamSynchronize(other));
        /* Not while a stream of the context captures; that capture fails. */
        CHECK(cuStreamBeginCapture(other, 0));
        CUresult rec = cuCtxRecordEvent(ctx, e);
        EXPECT(rec == CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED, "a context record during a capture: %d", rec);
        CUgraph g = NULL;
        CUresult end = cuStreamEndCapture(other, &g);
        EXPECT(end == CUDA_ERROR_STREAM_CAPTURE_INVALIDATED, "the capture ended with %d", end);
        CHECK(cuEventDestroy(e));

        /* Persisting L2 lines reset; the linear texture width, asked twice
         * (one round trip); atomics over the host link and between GPUs:
         * none natively. */
        GET(cuCtxResetPersistingL2Cache, 11000);
        GET(cuDeviceGetTexture1DLinearMaxWidth, 11010);
        GET(cuDeviceGetHostAtomicCapabilities, 13000);
        GET(cuDeviceGetP2PAtomicCapabilities, 13000);
        CHECK(cuCtxResetPersistingL2Cache());
        size_t width = 0, width2 = 0;
        CHECK(cuDeviceGetTexture1DLinearMaxWidth(&width, 0x20 /* FLOAT */, 4, dev));
        CHECK(cuDeviceGetTexture1DLinearMaxWidth(&width2, 0x20, 4, dev));
        EXPECT(width > 0 && width == width2, "linear texture widths %zu then %zu", width, width2);
        EXPECT(cuDeviceGetTexture1DLinearMaxWidth(&width, 0x20, 3, dev) == CUDA_ERROR_INVALID_VALUE,
               "three channels taken");
        int ops[3] = {0 /* INTEGER_ADD */, 9 /* CAS */, 10 /* FLOAT_ADD */};
        unsigned caps[3] = {7, 7, 7};
        CHECK(cuDeviceGetHostAtomicCapabilities(caps, ops, 3, dev));
        EXPECT(caps[0] == 0 && caps[1] == 0 && caps[2] == 0, "host atomics %u %u %u", caps[0], caps[1], caps[2]);
        int bad_op = 13;
        EXPECT(cuDeviceGetHostAtomicCapabilities(caps, &bad_op, 1, dev) == CUDA_ERROR_INVALID_VALUE,
               "an unknown operation taken");
        EXPECT(cuDeviceGetHostAtomicCapabilities(caps, ops, 3, 7) == CUDA_ERROR_INVALID_DEVICE, "device 7");
        EXPECT(cuDeviceGetP2PAtomicCapabilities(caps, ops, 3, dev, dev) == CUDA_ERROR_INVALID_DEVICE,
               "a device's link to itself");
        printf("OK cuda13 calls (cluster %d)\n", cluster);
    } else if (!strcmp(mode, "green")) {
        GET(cuDeviceGetDevResource, 12040);
        GET(cuCtxGetDevResource, 12040);
        GET(cuGreenCtxGetDevResource, 12040);
        GET(cuDevSmResourceSplitByCount, 12040);
        GET(cuDevResourceGenerateDesc, 12040);
        GET(cuGreenCtxCreate, 12040);
        GET(cuGreenCtxDestroy, 12040);
        GET(cuCtxFromGreenCtx, 12040);
        GET(cuGreenCtxStreamCreate, 12050);
        GET(cuGreenCtxRecordEvent, 12040);
        GET(cuGreenCtxWaitEvent, 12040);
        GET(cuCtxPushCurrent, 4000);
        GET(cuCtxPopCurrent, 4000);
        GET(cuCtxDestroy, 4000);
        PFN_cuStreamGetCtx_v2 cuStreamGetCtx_v2 = (PFN_cuStreamGetCtx_v2)sym("cuStreamGetCtx", 12050);
        alarm(60);
        CUdevResource whole;
        memset(&whole, 0, sizeof whole);
        EXPECT(cuDeviceGetDevResource(dev, &whole, 1000) == CUDA_ERROR_INVALID_RESOURCE_TYPE ||
                   cuDeviceGetDevResource(dev, &whole, 1000) == CUDA_SUCCESS,
               "a workqueue configuration");
        CHECK(cuDeviceGetDevResource(dev, &whole, 1));
        EXPECT(whole.type == 1 && (int)whole.sm.smCount == sms && whole.sm.minSmPartitionSize > 0 &&
                   whole.sm.smCoscheduledAlignment > 0,
               "device resource: type %d, %u SMs (of %d), minimum %u, alignment %u", whole.type, whole.sm.smCount,
               sms, whole.sm.minSmPartitionSize, whole.sm.smCoscheduledAlignment);
        /* How many groups of 16 SMs there would be, then two of them. */
        unsigned possible = 0;
        CHECK(cuDevSmResourceSplitByCount(NULL, &possible, &whole, NULL, 0, 16));
        EXPECT(possible >= 2 && possible * 16 <= (unsigned)sms, "%u groups of 16 SMs", possible);
        CUdevResource groups[2], rest;
        unsigned two = 2;
        CHECK(cuDevSmResourceSplitByCount(groups, &two, &whole, &rest, 0, 16));
        EXPECT(two == 2 && groups[0].sm.smCount >= 16 && groups[1].sm.smCount == groups[0].sm.smCount &&
                   rest.sm.smCount == (unsigned)sms - 2 * groups[0].sm.smCount,
               "split: %u groups of %u SMs, %u left", two, groups[0].sm.smCount, rest.sm.smCount);
        EXPECT(cuDevSmResourceSplitByCount(NULL, &possible, &whole, NULL, 0, (unsigned)sms + 1) != CUDA_SUCCESS,
               "groups larger than the device");
        CUdevResourceDesc desc;
        CHECK(cuDevResourceGenerateDesc(&desc, groups, 1));
        CUgreenCtx g;
        CHECK(cuGreenCtxCreate(&g, desc, dev, 1 /* CU_GREEN_CTX_DEFAULT_STREAM */));
        CUcontext gctx = NULL;
        CHECK(cuCtxFromGreenCtx(&gctx, g));
        EXPECT(gctx != NULL && gctx != ctx, "green context %p, primary %p", (void *)gctx, (void *)ctx);
        CUdevResource mine;
        CHECK(cuGreenCtxGetDevResource(g, &mine, 1));
        EXPECT(mine.sm.smCount == groups[0].sm.smCount, "the green context has %u SMs", mine.sm.smCount);
        CHECK(cuCtxGetDevResource(gctx, &mine, 1));
        EXPECT(mine.sm.smCount == groups[0].sm.smCount, "its context has %u SMs", mine.sm.smCount);
        CHECK(cuCtxGetDevResource(ctx, &mine, 1));
        EXPECT((int)mine.sm.smCount == sms, "the primary context has %u SMs", mine.sm.smCount);

        /* Memory of the primary context, scaled by 5 on the green
         * context's default stream and by 2 on a stream of its own. */
        const unsigned n = 1 << 16;
        float *host = malloc(n * sizeof(float));
        for (unsigned i = 0; i < n; i++) host[i] = (float)(i % 1000);
        CUdeviceptr buf;
        CHECK(cuMemAlloc(&buf, n * sizeof(float)));
        CHECK(cuMemcpyHtoD(buf, host, n * sizeof(float)));
        CHECK(cuCtxPushCurrent(gctx));
        CUmodule gmod;
        CUfunction gscale;
        CHECK(cuModuleLoadData(&gmod, KERNELS_PTX));
        CHECK(cuModuleGetFunction(&gscale, gmod, "gp_scale"));
        float factor = 5.0f;
        int count = (int)n;
        void *args[] = {&buf, &factor, &count};
        CHECK(cuLaunchKernel(gscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CUstream gs, other;
        EXPECT(cuGreenCtxStreamCreate(&other, g, 0, 0) == CUDA_ERROR_INVALID_VALUE, "a blocking green stream");
        CHECK(cuGreenCtxStreamCreate(&gs, g, 1 /* CU_STREAM_NON_BLOCKING */, 0));
        CUcontext sctx = NULL;
        void *sgreen = NULL;
        CHECK(cuStreamGetCtx_v2(gs, &sctx, &sgreen));
        EXPECT(sgreen == (void *)g && sctx == ctx, "green stream's contexts %p and %p", (void *)sctx, sgreen);
        CHECK(cuStreamGetCtx_v2(NULL, &sctx, &sgreen));
        EXPECT(sgreen == (void *)g && sctx == ctx, "NULL stream's contexts %p and %p", (void *)sctx, sgreen);
        CUevent done;
        CHECK(cuEventCreate(&done, 0));
        CHECK(cuGreenCtxRecordEvent(g, done));
        CHECK(cuGreenCtxWaitEvent(g, done));
        CHECK(cuStreamWaitEvent(gs, done, 0));
        factor = 2.0f;
        CHECK(cuLaunchKernel(gscale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, gs, args, NULL));
        CHECK(cuStreamSynchronize(gs));
        CUdeviceptr kept;
        CHECK(cuMemAlloc(&kept, 4096));
        CHECK(cuEventDestroy(done));
        CHECK(cuModuleUnload(gmod));
        CUcontext popped = NULL;
        CHECK(cuCtxPopCurrent(&popped));
        EXPECT(popped == gctx, "popped %p", (void *)popped);
        CHECK(cuStreamGetCtx_v2(NULL, &sctx, &sgreen));
        EXPECT(sgreen == NULL && sctx == ctx, "NULL stream's contexts back home %p and %p", (void *)sctx, sgreen);
        /* A green stream takes work with the primary context current. */
        CHECK(cuMemcpyDtoHAsync(host, buf, n * sizeof(float), gs));
        CHECK(cuStreamSynchronize(gs));
        CHECK(cuStreamDestroy(gs));
        for (unsigned i = 0; i < n; i++)
            EXPECT(host[i] == 10.0f * (float)(i % 1000), "buf[%u] = %g", i, host[i]);
        if (getenv("GPUPOOL_SERVER"))
            EXPECT(cuCtxDestroy(gctx) == CUDA_ERROR_INVALID_CONTEXT, "a green context destroyed as a context");
        CHECK(cuGreenCtxDestroy(g));
        /* What was allocated in it is the primary context's. */
        CHECK(cuMemcpyHtoD(kept, host, 4096));
        CHECK(cuMemFree(kept));
        if (getenv("GPUPOOL_SERVER"))
            EXPECT(cuCtxFromGreenCtx(&gctx, g) != CUDA_SUCCESS, "a destroyed green context");
        CHECK(cuMemFree(buf));
        free(host);
        if (argc > 2 && !strcmp(argv[2], "fault")) {
            CUgreenCtx g2;
            CUcontext g2ctx;
            CUstream fs;
            CUmodule fmod;
            CUfunction gfault;
            CHECK(cuGreenCtxCreate(&g2, desc, dev, 1));
            CHECK(cuCtxFromGreenCtx(&g2ctx, g2));
            CHECK(cuGreenCtxStreamCreate(&fs, g2, 1, 0));
            CHECK(cuCtxPushCurrent(g2ctx));
            CHECK(cuModuleLoadData(&fmod, KERNELS_PTX));
            CHECK(cuModuleGetFunction(&gfault, fmod, "gp_fault"));
            CUdeviceptr p;
            CHECK(cuMemAlloc(&p, 4096));
            CHECK(cuCtxPopCurrent(NULL));
            void *fargs[] = {&p};
            CHECK(cuLaunchKernel(gfault, 1, 1, 1, 1, 1, 1, 0, fs, fargs, NULL));
            CUresult r = cuStreamSynchronize(fs);
            EXPECT(r == CUDA_ERROR_ILLEGAL_ADDRESS, "the green stream's synchronisation returned %d", r);
            printf("OK green fault reported: %d\n", r);
            return 0;
        }
        printf("OK green %u of %d SMs\n", groups[0].sm.smCount, sms);
    } else if (!strcmp(mode, "logs")) {
        GET(cuLogsCurrent, 12090);
        GET(cuLogsDumpToMemory, 12090);
        GET(cuLogsDumpToFile, 12090);
        GET(cuLogsRegisterCallback, 12090);
        GET(cuLogsUnregisterCallback, 12090);
        GET(cuMemFree, 3020);
        EXPECT(argc > 2, "usage: driver_check logs FILE");
        static char text[65536];
        size_t size = sizeof text;
        CUlogIterator it = 12345, start;
        EXPECT(cuLogsCurrent(&it, 1) == CUDA_ERROR_INVALID_VALUE, "flags taken");
        CHECK(cuLogsCurrent(&it, 0));
        start = it;
        struct told t = {0};
        t.free = cuMemFree;
        CUlogsCallbackHandle cb = NULL;
        CHECK(cuLogsRegisterCallback(on_log, &t, &cb));
        EXPECT(cb != NULL, "no callback handle");

        /* A refusal of the shim's and a failure of the server's. */
        EXPECT(cuMemFree((CUdeviceptr)0x20) == CUDA_ERROR_INVALID_VALUE, "a bad free");
        CUdeviceptr huge;
        EXPECT(cuMemAlloc(&huge, (size_t)1 << 50) == CUDA_ERROR_OUT_OF_MEMORY, "a petabyte allocated");
        EXPECT(t.count == 2 && t.level_ok == 2 && t.length_ok == 2, "told %d (%d errors, %d lengths)", t.count,
               t.level_ok, t.length_ok);
        EXPECT(strstr(t.last, "[CUDA][E] Returning 2 (CUDA_ERROR_OUT_OF_MEMORY) from cuMemAlloc_v2"), "told %s",
               t.last);
        /* Each told failure and the callback's own: four messages. */
        CHECK(cuLogsDumpToMemory(&it, text, &size, 0));
        EXPECT(size == strlen(text) && count_lines(text) == 4, "dumped %zu bytes, %d lines:\n%s", size,
               count_lines(text), text);
        EXPECT(strstr(text, "Returning 1 (CUDA_ERROR_INVALID_VALUE) from cuMemFree_v2\n") &&
                   strstr(text, "from cuMemAlloc_v2\n"),
               "dumped:\n%s", text);
        CUlogIterator now;
        CHECK(cuLogsCurrent(&now, 0));
        EXPECT(it == now && it == start + 4, "iterator %u, current %u, start %u", it, now, start);
        size = sizeof text;
        CHECK(cuLogsDumpToMemory(&it, text, &size, 0));
        EXPECT(size == 0 && text[0] == 0, "nothing new, yet %zu bytes", size);

        /* Unregistered: nothing more is told. A buffer too small for any
         * message is refused, and the refusal is logged too. */
        CHECK(cuLogsUnregisterCallback(cb));
        EXPECT(cuLogsUnregisterCallback(cb) == CUDA_ERROR_INVALID_VALUE, "unregistered twice");
        EXPECT(cuMemFree((CUdeviceptr)0x30) == CUDA_ERROR_INVALID_VALUE, "a bad free");
        EXPECT(t.count == 2, "told %d after unregistering", t.count);
        size = 16;
        EXPECT(cuLogsDumpToMemory(&it, text, &size, 0) == CUDA_ERROR_INVALID_VALUE && size == 0,
               "a 16-byte dump: size %zu", size);
        EXPECT(cuLogsDumpToMemory(&it, NULL, &size, 0) == CUDA_ERROR_INVALID_VALUE, "no buffer");
        size = sizeof text;
        CHECK(cuLogsDumpToMemory(&it, text, &size, 0));
        EXPECT(count_lines(text) == 4 && strstr(text, "from cuLogsDumpToMemory\n") &&
                   strstr(text, "from cuLogsUnregisterCallback\n"),
               "dumped:\n%s", text);

        /* Past the log's capacity the oldest go, and a dump from before
         * says so; its last line is the newest message. */
        for (int i = 0; i < 500; i++) cuMemFree((CUdeviceptr)0x40);
        size = sizeof text;
        CHECK(cuLogsDumpToMemory(&start, text, &size, 0));
        EXPECT(size <= 25600 + 200 && strstr(text, "earlier log messages were truncated\n"), "dumped %zu bytes", size);
        EXPECT(count_lines(text) > 250 && count_lines(text) < 500, "%d lines kept", count_lines(text));
        /* A small buffer: the notice, then the newest that fit. */
        size = 400;
        CHECK(cuLogsDumpToMemory(NULL, text, &size, 0));
        EXPECT(size < 400 && strstr(text, "truncated\n") && count_lines(text) >= 3, "small dump:\n%s", text);

        /* The whole kept log to a file (appended). */
        CHECK(cuLogsDumpToFile(NULL, argv[2], 0));
        EXPECT(cuLogsDumpToFile(NULL, "/nonexistent-dir/x/log", 0) == CUDA_ERROR_FILE_NOT_FOUND,
               "a file in no directory");
        printf("OK logs (%d told)\n", t.count);
    } else if (!strcmp(mode, "fork")) {
        /* Children forked after start-up share the parent's connection to
         * the server: their calls fail, and their exit, with or without
         * exit handlers, leaves the parent's session working. */
        unsigned char in[4096], back[4096];
        for (unsigned i = 0; i < sizeof in; i++) in[i] = (unsigned char)(i * 7 + 1);
        CUdeviceptr d;
        CHECK(cuMemAlloc(&d, sizeof in));
        CHECK(cuMemcpyHtoD(d, in, sizeof in));
        fflush(stdout);
        fflush(stderr);
        for (int k = 0; k < 2; k++) {
            pid_t pid = fork();
            if (pid == 0) {
                CUdeviceptr c = 0;
                CUresult r = cuMemAlloc(&c, 64);
                int bad = getenv("GPUPOOL_SERVER") && r != CUDA_ERROR_NOT_INITIALIZED;
                if (k == 0) exit(bad ? 3 : 0);
                _exit(bad ? 3 : 0);
            }
            int status = 0;
            EXPECT(pid > 0 && waitpid(pid, &status, 0) == pid, "fork %d", k);
            EXPECT(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child %d: status %d (3: its call did not fail)", k,
                   status);
        }
        CHECK(cuMemcpyDtoH(back, d, sizeof back));
        CHECK(cuCtxSynchronize());
        EXPECT(!memcmp(in, back, sizeof in), "the parent's memory changed");
        CHECK(cuMemFree(d));
        printf("OK fork\n");
    } else if (!strcmp(mode, "peers")) {
        /* Peer access between the first two devices, as the machine's
         * driver offers it: once device 0's context is given access, its
         * kernel reads device 0's memory and writes device 1's. */
        GET(cuDeviceCanAccessPeer, 4000);
        GET(cuDeviceGetP2PAttribute, 8000);
        GET(cuCtxEnablePeerAccess, 4000);
        GET(cuCtxDisablePeerAccess, 4000);
        GET(cuCtxCreate, 3020);
        GET(cuCtxDestroy, 4000);
        EXPECT(count >= 2, "peers needs two devices, found %d", count);
        const char *level = getenv("NCCL_P2P_LEVEL");
        printf("nccl p2p level %s\n", level ? level : "unset");
        CUdevice d1;
        CHECK(cuDeviceGet(&d1, 1));
        int can = -1, back_can = -1, access = -1, rank = -1;
        CHECK(cuDeviceCanAccessPeer(&can, dev, d1));
        CHECK(cuDeviceCanAccessPeer(&back_can, d1, dev));
        CHECK(cuDeviceGetP2PAttribute(&access, CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED, dev, d1));
        CHECK(cuDeviceGetP2PAttribute(&rank, CU_DEVICE_P2P_ATTRIBUTE_PERFORMANCE_RANK, dev, d1));
        EXPECT(access == can, "access supported %d, but can access peer %d", access, can);
        const char *want = getenv("GPUPOOL_EXPECT_PEER_ACCESS");
        EXPECT(!want || can == atoi(want), "can access peer %d, expected %s", can, want);
        CUcontext c1;
        CHECK(cuDevicePrimaryCtxRetain(&c1, d1));
        enum { N = 4096 };
        float a[N], b[N], c[N];
        for (int i = 0; i < N; i++) {
            a[i] = (float)i;
            b[i] = (float)(3 * i + 1);
        }
        CUdeviceptr da, db, far;
        CHECK(cuCtxSetCurrent(c1));
        CHECK(cuMemAlloc(&far, sizeof c));
        CHECK(cuMemsetD32(far, 0, N));
        CHECK(cuCtxSetCurrent(ctx));
        CHECK(cuMemAlloc(&da, sizeof a));
        CHECK(cuMemAlloc(&db, sizeof b));
        CHECK(cuMemcpyHtoD(da, a, sizeof a));
        CHECK(cuMemcpyHtoD(db, b, sizeof b));
        unsigned nn = N;
        void *args[] = {&da, &db, &far, &nn};
        /* Copies and memsets of one device's memory on a stream of the other
         * device's context (PyTorch copies between GPUs on the source GPU's
         * stream), with or without peer access. */
        {
            CUstream s1;
            CHECK(cuCtxSetCurrent(c1));
            CHECK(cuStreamCreate(&s1, 1));
            CHECK(cuMemcpyDtoDAsync(far, da, sizeof a, s1));
            CHECK(cuMemsetD8Async(da, 0, sizeof a, s1));
            CHECK(cuMemcpyDtoHAsync(c, far, sizeof c, s1));
            CHECK(cuStreamSynchronize(s1));
            for (int i = 0; i < N; i++) EXPECT(c[i] == a[i], "copied across devices c[%d] = %f", i, c[i]);
            CHECK(cuMemcpyHtoDAsync(da, a, sizeof a, s1));
            CHECK(cuMemsetD8Async(far, 0, sizeof c, s1));
            CHECK(cuMemcpyDtoHAsync(c, da, sizeof c, s1));
            CHECK(cuStreamSynchronize(s1));
            for (int i = 0; i < N; i++) EXPECT(c[i] == a[i], "written across devices c[%d] = %f", i, c[i]);
            CHECK(cuStreamDestroy(s1));
            CHECK(cuCtxSetCurrent(ctx));
        }
        EXPECT(cuCtxDisablePeerAccess(c1) == CUDA_ERROR_PEER_ACCESS_NOT_ENABLED, "disabled what was never enabled");
        if (!can) {
            EXPECT(cuCtxEnablePeerAccess(c1, 0) == CUDA_ERROR_PEER_ACCESS_UNSUPPORTED,
                   "peer access enabled between devices that cannot access each other");
            printf("OK peers none\n");
        } else {
            EXPECT(back_can == 1, "device 0 can access device 1, but not the other way");
            if (getenv("GPUPOOL_CHECK_PEER_FAULT")) {
                /* A context not given access faults at the other device's
                 * memory (in a context of its own: the fault is sticky). */
                CUcontext lone;
                CUmodule lm;
                CUfunction ladd;
                CHECK(cuCtxCreate(&lone, 0, dev));
                CHECK(cuModuleLoadData(&lm, KERNELS_PTX));
                CHECK(cuModuleGetFunction(&ladd, lm, "gp_vector_add"));
                CHECK(cuLaunchKernel(ladd, N / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
                CUresult r = cuCtxSynchronize();
                EXPECT(r == CUDA_ERROR_ILLEGAL_ADDRESS, "a kernel reached a peer's memory without access: %d", r);
                CHECK(cuCtxDestroy(lone));
                CHECK(cuCtxSetCurrent(ctx));
            }
            CHECK(cuCtxEnablePeerAccess(c1, 0));
            EXPECT(cuCtxEnablePeerAccess(c1, 0) == CUDA_ERROR_PEER_ACCESS_ALREADY_ENABLED, "enabled twice");
            CHECK(cuLaunchKernel(vadd, N / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
            CHECK(cuCtxSynchronize());
            CHECK(cuMemcpyDtoH(c, far, sizeof c));
            for (int i = 0; i < N; i++)
                EXPECT(c[i] == a[i] + b[i], "peer memory c[%d] = %f, want %f", i, c[i], a[i] + b[i]);
            CHECK(cuCtxDisablePeerAccess(c1));
            EXPECT(cuCtxDisablePeerAccess(c1) == CUDA_ERROR_PEER_ACCESS_NOT_ENABLED, "disabled twice");
            /* Device 1's pool given to device 0: device 0's kernel writes
             * memory of the pool with no peer access between contexts. */
            GET(cuDeviceGetDefaultMemPool, 11020);
            GET(cuMemPoolSetAccess, 11020);
            GET(cuMemPoolGetAccess, 11020);
            GET(cuMemAllocFromPoolAsync, 11020);
            GET(cuMemFreeAsync, 11020);
            CUmemoryPool pool1;
            CHECK(cuDeviceGetDefaultMemPool(&pool1, d1));
            CUmemLocation at0 = {1, dev};
            unsigned got = 9;
            CHECK(cuMemPoolGetAccess(&got, pool1, &at0));
            EXPECT(got == 0, "device 0 has access %u to device 1's pool before it is given", got);
            CUdeviceptr pooled;
            CHECK(cuCtxSetCurrent(c1));
            CHECK(cuMemAllocFromPoolAsync(&pooled, sizeof c, pool1, NULL));
            CHECK(cuMemsetD32(pooled, 0, N));
            CHECK(cuCtxSetCurrent(ctx));
            CUmemAccessDesc give = {{1, dev}, 3};
            CHECK(cuMemPoolSetAccess(pool1, &give, 1));
            CHECK(cuMemPoolGetAccess(&got, pool1, &at0));
            EXPECT(got == 3, "device 0 has access %u to device 1's pool once given", got);
            void *pargs[] = {&da, &db, &pooled, &nn};
            CHECK(cuLaunchKernel(vadd, N / 256, 1, 1, 256, 1, 1, 0, NULL, pargs, NULL));
            CHECK(cuCtxSynchronize());
            memset(c, 0, sizeof c);
            CHECK(cuMemcpyDtoH(c, pooled, sizeof c));
            for (int i = 0; i < N; i++)
                EXPECT(c[i] == a[i] + b[i], "pool memory c[%d] = %f, want %f", i, c[i], a[i] + b[i]);
            give.flags = 0;
            CHECK(cuMemPoolSetAccess(pool1, &give, 1));
            CHECK(cuMemPoolGetAccess(&got, pool1, &at0));
            EXPECT(got == 0, "device 0 kept access %u to device 1's pool", got);
            CHECK(cuCtxSetCurrent(c1));
            CHECK(cuMemFreeAsync(pooled, NULL));
            CHECK(cuCtxSynchronize());
            CHECK(cuCtxSetCurrent(ctx));
            printf("OK peers rank %d\n", rank);
        }
        CHECK(cuMemFree(da));
        CHECK(cuMemFree(db));
        CHECK(cuCtxSetCurrent(c1));
        CHECK(cuMemFree(far));
        CHECK(cuCtxSetCurrent(ctx));
    } else if (!strcmp(mode, "limits")) {
        GET(cuCtxGetLimit, 2000);
        GET(cuCtxSetLimit, 3010);
        GET(cuDevicePrimaryCtxReset, 11000);
        size_t first = 0, v = 0;
        CHECK(cuCtxGetLimit(&first, CU_LIMIT_PRINTF_FIFO_SIZE));
        EXPECT(first > 0, "no printf FIFO");
        for (int i = 0; i < 50; i++) {
            CHECK(cuCtxGetLimit(&v, CU_LIMIT_PRINTF_FIFO_SIZE));
            EXPECT(v == first, "the FIFO's size went from %zu to %zu", first, v);
        }
        /* Set: the next answer is the new size. */
        size_t bigger = first * 4;
        CHECK(cuCtxSetLimit(CU_LIMIT_PRINTF_FIFO_SIZE, bigger));
        CHECK(cuCtxGetLimit(&v, CU_LIMIT_PRINTF_FIFO_SIZE));
        EXPECT(v == bigger, "set to %zu, the FIFO has %zu", bigger, v);
        /* The driver raises the stack size itself: always asked. */
        size_t stack = 0;
        for (int i = 0; i < 10; i++) CHECK(cuCtxGetLimit(&stack, CU_LIMIT_STACK_SIZE));
        EXPECT(stack > 0, "no stack");
        /* A reset context starts again from the defaults. */
        CHECK(cuDevicePrimaryCtxReset(dev));
        CHECK(cuDevicePrimaryCtxRetain(&ctx, dev));
        CHECK(cuCtxSetCurrent(ctx));
        CHECK(cuCtxGetLimit(&v, CU_LIMIT_PRINTF_FIFO_SIZE));
        EXPECT(v == first, "after a reset the FIFO has %zu, not %zu", v, first);
        printf("OK limits\n");
        return 0; /* the reset took the module with it */
    } else if (!strcmp(mode, "exit-calls")) {
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, 4096));
        EXPECT(cuMemFree(p + 1) == CUDA_ERROR_INVALID_VALUE, "a bad free succeeded");
        late_free = cuMemFree;
        late_sync = cuCtxSynchronize;
        printf("OK before exit\n");
    } else if (!strcmp(mode, "fault")) {
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, 4096));
        void *args[] = {&p};
        CUresult launch = cuLaunchKernel(fault, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL);
        /* Under CUDA_LAUNCH_BLOCKING=1 the launch returns once the kernel
         * ran, with its fault; otherwise the fault surfaces later. */
        const char *blocking = getenv("CUDA_LAUNCH_BLOCKING");
        CUresult want = blocking && !strcmp(blocking, "1") ? CUDA_ERROR_ILLEGAL_ADDRESS : CUDA_SUCCESS;
        EXPECT(launch == want, "launch of a faulting kernel returned %d at once, want %d", launch, want);
        CUresult sync = cuCtxSynchronize();
        EXPECT(sync == CUDA_ERROR_ILLEGAL_ADDRESS, "synchronize after fault returned %d", sync);
        CUresult again = cuCtxSynchronize();
        EXPECT(again == CUDA_ERROR_ILLEGAL_ADDRESS, "sticky error not kept: %d", again);
        printf("OK fault reported at synchronize: %d\n", sync);
        return 0;
    } else if (!strcmp(mode, "oob")) {
        CUdeviceptr p;
        char buf[8192] = {0};
        CHECK(cuMemAlloc(&p, 4096));
        CUresult r1 = cuMemcpyHtoD(p + 4000, buf, 200);
        CUresult r2 = cuMemcpyDtoH(buf, p, 8192);
        CUresult r3 = cuMemcpyHtoD(p + 4096 * 1024, buf, 4);
        CUresult r4 = cuMemcpyHtoDAsync(p - 8, buf, 16, NULL);
        CUresult r5 = cuMemFree(p + 8);
        EXPECT(r1 == CUDA_ERROR_INVALID_VALUE && r2 == CUDA_ERROR_INVALID_VALUE && r3 == CUDA_ERROR_INVALID_VALUE &&
                   r4 == CUDA_ERROR_INVALID_VALUE && r5 == CUDA_ERROR_INVALID_VALUE,
               "out-of-bounds results %d %d %d %d %d", r1, r2, r3, r4, r5);
        /* A launch the device cannot run is refused at the call. */
        void *nargs[] = {NULL};
        CUresult r6 = cuLaunchKernel(null_kernel, 1, 1, 1, 4096, 1, 1, 0, NULL, nargs, NULL);
        CUresult r7 = cuLaunchKernel(null_kernel, 1, 1, 1, 64, 64, 64, 0, NULL, nargs, NULL);
        EXPECT(r6 == CUDA_ERROR_INVALID_VALUE && r7 == CUDA_ERROR_INVALID_VALUE, "oversized blocks gave %d %d", r6, r7);
        /* In-bounds work still succeeds afterwards. */
        CHECK(cuMemcpyHtoD(p + 4092, buf, 4));
        CHECK(cuCtxSynchronize());
        CHECK(cuMemFree(p));
        printf("OK out-of-bounds refused\n");
    } else if (!strcmp(mode, "big")) {
        size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 20;
        size_t bytes = mib << 20;
        unsigned char *src = malloc(bytes), *dst = malloc(bytes);
        for (size_t i = 0; i < bytes; i++) src[i] = (unsigned char)(i * 7 + (i >> 12));
        memset(dst, 0, bytes);
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, bytes));
        CHECK(cuMemcpyHtoD(p, src, bytes));
        CHECK(cuMemcpyDtoH(dst, p, bytes));
        EXPECT(memcmp(src, dst, bytes) == 0, "big round trip differs");
        CHECK(cuMemFree(p));
        printf("OK big %zu MiB\n", mib);
    } else if (!strcmp(mode, "big-image")) {
        /* A module image larger than a frame (a 48 MiB comment after the
         * kernels): it goes in pieces, and its kernels run. */
        const size_t pad = (size_t)48 << 20;
        size_t len = sizeof KERNELS_PTX - 1 + 4 + pad + 2;
        char *big = malloc(len);
        memcpy(big, KERNELS_PTX, sizeof KERNELS_PTX - 1);
        memcpy(big + sizeof KERNELS_PTX - 1, "\n// ", 4);
        memset(big + sizeof KERNELS_PTX - 1 + 4, 'x', pad);
        memcpy(big + len - 2, "\n", 2);
        const int n = 4096;
        float host[4096];
        for (int i = 0; i < n; i++) host[i] = (float)i;
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, sizeof host));
        for (int round = 0; round < 2; round++) {
            /* The second load names the image the server now holds. */
            CUmodule m;
            CUfunction f;
            CHECK(cuModuleLoadData(&m, big));
            CHECK(cuModuleGetFunction(&f, m, "gp_scale"));
            CHECK(cuMemcpyHtoD(p, host, sizeof host));
            float two = 2.0f;
            int count = n;
            void *args[] = {&p, &two, &count};
            CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
            float back[4096];
            CHECK(cuMemcpyDtoH(back, p, sizeof back));
            for (int i = 0; i < n; i++) EXPECT(back[i] == 2.0f * (float)i, "round %d: [%d] = %g", round, i, back[i]);
            CHECK(cuModuleUnload(m));
        }
        CHECK(cuMemFree(p));
        free(big);
        printf("OK big-image %zu MiB\n", len >> 20);
    } else if (!strcmp(mode, "streams")) {
        const size_t n = 3 << 20;
        unsigned char *host;
        CHECK(cuMemAllocHost((void **)&host, n));
        for (size_t i = 0; i < n; i++) host[i] = (unsigned char)(i % 251);
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, n));
        CUstream s;
        CUevent e0, e1;
        CHECK(cuStreamCreate(&s, 0));
        CHECK(cuEventCreate(&e0, 0));
        CHECK(cuEventCreate(&e1, 0));
        CHECK(cuEventRecord(e0, s));
        CHECK(cuMemcpyHtoDAsync(p, host, n, s));
        CHECK(cuMemsetD8Async(p + 1000, 0xab, 500, s));
        memset(host, 0, n);
        CHECK(cuMemcpyDtoHAsync(host, p, n, s));
        CHECK(cuEventRecord(e1, s));
        CUresult q;
        while ((q = cuStreamQuery(s)) == CUDA_ERROR_NOT_READY) usleep(100);
        EXPECT(q == CUDA_SUCCESS, "stream query %d", q);
        for (size_t i = 0; i < n; i++) {
            unsigned char want = (i >= 1000 && i < 1500) ? 0xab : (unsigned char)(i % 251);
            EXPECT(host[i] == want, "host[%zu] = %u after query said done, want %u", i, host[i], want);
        }
        float ms = -1;
        CHECK(cuEventSynchronize(e1));
        CHECK(cuEventElapsedTime(&ms, e0, e1));
        EXPECT(ms >= 0, "elapsed %f", ms);
        /* A batch of copies: up from a stack buffer, across, and down,
         * in stream order as a whole. */
        {
            GET(cuMemcpyBatchAsync, 13000);
            unsigned char up[4096], down[4096];
            for (int i = 0; i < 4096; i++) up[i] = (unsigned char)(i * 7 + 3);
            CUdeviceptr dsts[3] = {p, p + 8192, (CUdeviceptr)(uintptr_t)down};
            CUdeviceptr srcs[3] = {(CUdeviceptr)(uintptr_t)up, p, p + 8192};
            size_t sizes[3] = {4096, 4096, 4096};
            CUmemcpyAttributes at[2] = {{CU_MEMCPY_SRC_ACCESS_ORDER_DURING_API_CALL, {0, 0}, {0, 0}, 0},
                                        {CU_MEMCPY_SRC_ACCESS_ORDER_STREAM, {0, 0}, {0, 0}, 0}};
            size_t idxs[2] = {0, 1};
            CHECK(cuMemcpyBatchAsync(dsts, srcs, sizes, 3, at, idxs, 2, s));
            memset(up, 0, sizeof up);
            CHECK(cuStreamSynchronize(s));
            EXPECT(down[0] == 3 && down[4095] == (unsigned char)(4095 * 7 + 3), "batch copies read back %u %u", down[0],
                   down[4095]);
            for (int i = 0; i < 4096; i++) EXPECT(down[i] == (unsigned char)(i * 7 + 3), "batch down[%d] = %u", i, down[i]);
            size_t bad_idxs[2] = {1, 2};
            EXPECT(cuMemcpyBatchAsync(dsts, srcs, sizes, 3, at, bad_idxs, 2, s) == CUDA_ERROR_INVALID_VALUE,
                   "attribute indices not starting at 0 taken");
            at[0].srcAccessOrder = 0;
            EXPECT(cuMemcpyBatchAsync(dsts, srcs, sizes, 3, at, idxs, 2, s) == CUDA_ERROR_INVALID_VALUE,
                   "an invalid source access order taken");
            at[0].srcAccessOrder = CU_MEMCPY_SRC_ACCESS_ORDER_STREAM;
            EXPECT(cuMemcpyBatchAsync(dsts, srcs, sizes, 3, at, idxs, 2, NULL) == CUDA_ERROR_INVALID_VALUE,
                   "a batch on the legacy stream taken");
        }
        /* Stream memory operations: words written and waited on in stream
         * order, one by one and in a batch. */
        {
            GET(cuStreamWriteValue32, 11070);
            GET(cuStreamWriteValue64, 11070);
            GET(cuStreamWaitValue32, 11070);
            GET(cuStreamWaitValue64, 11070);
            GET(cuStreamBatchMemOp, 11070);
            CUdeviceptr w;
            CHECK(cuMemAlloc(&w, 64));
            CHECK(cuMemsetD32(w, 0, 16));
            CHECK(cuStreamWriteValue32(s, w, 0xdeadbeefu, 0));
            CHECK(cuStreamWriteValue64(s, w + 8, 0x0123456789abcdefull, 0));
            CHECK(cuStreamWaitValue32(s, w, 0xdeadbeefu, CU_STREAM_WAIT_VALUE_EQ));
            CHECK(cuStreamWaitValue64(s, w + 8, 0x0123456789abcdefull, CU_STREAM_WAIT_VALUE_EQ));
            CUstreamBatchMemOpParams ops[3];
            memset(ops, 0, sizeof ops);
            ops[0].value_op.operation = CU_STREAM_MEM_OP_WRITE_VALUE_32;
            ops[0].value_op.address = w + 16;
            ops[0].value_op.value = 41;
            ops[1].value_op.operation = CU_STREAM_MEM_OP_WAIT_VALUE_32;
            ops[1].value_op.address = w + 16;
            ops[1].value_op.value = 40;
            ops[1].value_op.flags = CU_STREAM_WAIT_VALUE_GEQ;
            ops[2].value_op.operation = CU_STREAM_MEM_OP_WRITE_VALUE_64;
            ops[2].value_op.address = w + 24;
            ops[2].value_op.value64 = 0xfedcba9876543210ull;
            CHECK(cuStreamBatchMemOp(s, 3, ops, 0));
            CHECK(cuStreamSynchronize(s));
            uint32_t words[8];
            CHECK(cuMemcpyDtoH(words, w, sizeof words));
            EXPECT(words[0] == 0xdeadbeefu && words[2] == 0x89abcdefu && words[3] == 0x01234567u && words[4] == 41 &&
                       words[6] == 0x76543210u && words[7] == 0xfedcba98u,
                   "stream memory operations wrote %#x %#x:%#x %u %#x:%#x", words[0], words[3], words[2], words[4],
                   words[7], words[6]);
            if (getenv("GPUPOOL_SERVER")) {
                uint32_t on_host = 0;
                EXPECT(cuStreamWriteValue32(s, (CUdeviceptr)(uintptr_t)&on_host, 1, 0) == CUDA_ERROR_NOT_SUPPORTED,
                       "a stream write to the client's own memory");
            }
            CHECK(cuMemFree(w));
        }
        CUdeviceptr mapped;
        CUresult zc = cuMemHostGetDevicePointer(&mapped, host, 0);
        EXPECT(zc == CUDA_ERROR_NOT_SUPPORTED || zc == CUDA_SUCCESS, "host device pointer %d", zc);
        CHECK(cuEventDestroy(e0));
        CHECK(cuEventDestroy(e1));
        CHECK(cuStreamDestroy(s));
        CHECK(cuMemFree(p));
        CHECK(cuMemFreeHost(host));
        printf("OK streams\n");
    } else if (!strcmp(mode, "copies2d")) {
        GET(cuMemcpy2D, 3020);
        GET(cuMemcpy2DAsync, 3020);
        GET(cuMemAllocPitch, 3020);
        GET(cuMemsetD2D32, 3020);
        GET(cuMemsetD2D8Async, 3020);
        GET(cuMemcpy, 4000);
        GET(cuMemcpyAsync, 4000);
        GET(cuMemHostRegister, 6050);
        GET(cuMemHostUnregister, 4000);
        GET(cuMemHostGetFlags, 2030);
        GET(cuMemGetAddressRange, 3020);
        /* Sizes: a copy of many bands of whole rows, then rows wider than a
         * copy chunk (1 MiB). */
        const size_t shapes[2][2] = {{3000, 900}, {(1 << 20) + 24, 3}};
        for (int k = 0; k < 2; k++) {
            size_t w = shapes[k][0], h = shapes[k][1], hp = w + 40, bp = w + 72, pitch = 0;
            CUdeviceptr d, d2;
            CHECK(cuMemAllocPitch(&d, &pitch, w, h, 4));
            EXPECT(pitch >= w && pitch % 4 == 0, "pitch %zu for width %zu", pitch, w);
            CHECK(cuMemAllocPitch(&d2, &pitch, w, h, 4));
            CUdeviceptr base = 0;
            size_t range = 0;
            CHECK(cuMemGetAddressRange(&base, &range, d + 5));
            EXPECT(base == d && range >= pitch * h, "address range %llx+%zu", base, range);
            unsigned char *src = malloc(hp * h), *back = malloc(bp * h);
            for (size_t i = 0; i < hp * h; i++) src[i] = (unsigned char)(i * 13 + (i >> 11));
            memset(back, 0xee, bp * h);
            CUDA_MEMCPY2D c;
            memset(&c, 0, sizeof c);
            c.srcMemoryType = CU_MEMORYTYPE_HOST;
            c.srcHost = src;
            c.srcPitch = hp;
            c.dstMemoryType = CU_MEMORYTYPE_DEVICE;
            c.dstDevice = d;
            c.dstPitch = pitch;
            c.WidthInBytes = w;
            c.Height = h;
            CHECK(cuMemcpy2D(&c));
            /* Device to device on a stream, then zero a 16-byte column in
             * rows 0..2 of the copy. */
            CUstream s;
            CHECK(cuStreamCreate(&s, 0));
            CUDA_MEMCPY2D dd = c;
            dd.srcMemoryType = CU_MEMORYTYPE_DEVICE;
            dd.srcHost = NULL;
            dd.srcDevice = d;
            dd.srcPitch = pitch;
            dd.dstDevice = d2;
            CHECK(cuMemcpy2DAsync(&dd, s));
            CHECK(cuMemsetD2D8Async(d2 + 8, pitch, 0, 16, 3, s));
            CUDA_MEMCPY2D out;
            memset(&out, 0, sizeof out);
            out.srcMemoryType = CU_MEMORYTYPE_UNIFIED;
            out.srcDevice = d2;
            out.srcPitch = pitch;
            out.dstMemoryType = CU_MEMORYTYPE_HOST;
            out.dstHost = back;
            out.dstPitch = bp;
            out.WidthInBytes = w;
            out.Height = h;
            CHECK(cuMemcpy2DAsync(&out, s));
            CHECK(cuStreamSynchronize(s));
            for (size_t r = 0; r < h; r++) {
                for (size_t x = 0; x < bp; x++) {
                    unsigned char want = x >= w ? 0xee : (r < 3 && x >= 8 && x < 24) ? 0 : src[r * hp + x];
                    EXPECT(back[r * bp + x] == want, "shape %d row %zu byte %zu = %u, want %u", k, r, x,
                           back[r * bp + x], want);
                }
            }
            /* A copy whose last row would pass the allocation's end is refused. */
            c.Height = h + 1;
            CUresult over = cuMemcpy2D(&c);
            EXPECT(over == CUDA_ERROR_INVALID_VALUE, "2D copy past the allocation: %d", over);
            c.Height = h;
            c.WidthInBytes = pitch + 1;
            over = cuMemcpy2D(&c);
            EXPECT(over == CUDA_ERROR_INVALID_VALUE, "row wider than its pitch: %d", over);
            CHECK(cuStreamDestroy(s));
            CHECK(cuMemFree(d));
            CHECK(cuMemFree(d2));
            free(src);
            free(back);
        }
        /* cuMemsetD2D32 over a pitched region, read back linearly. */
        {
            size_t pitch = 0, w = 10, h = 4;
            CUdeviceptr d;
            CHECK(cuMemAllocPitch(&d, &pitch, w * 4, h, 4));
            CHECK(cuMemsetD32(d, 0x11111111, pitch * h / 4));
            CHECK(cuMemsetD2D32(d, pitch, 0xdeadbeef, w, h));
            unsigned char *all = malloc(pitch * h);
            CHECK(cuMemcpyDtoH(all, d, pitch * h));
            for (size_t r = 0; r < h; r++)
                for (size_t x = 0; x < pitch; x += 4) {
                    unsigned v;
                    memcpy(&v, all + r * pitch + x, 4);
                    unsigned want = x < w * 4 ? 0xdeadbeef : 0x11111111;
                    EXPECT(v == want, "memset2D row %zu byte %zu = %08x", r, x, v);
                }
            free(all);
            CHECK(cuMemFree(d));
        }
        /* Unified-address copies: the shim tells host from device. */
        {
            const size_t n = 5000;
            unsigned char *a = malloc(n), *b = malloc(n), *c2 = malloc(n);
            for (size_t i = 0; i < n; i++) a[i] = (unsigned char)(i * 31);
            CUdeviceptr d, e;
            CHECK(cuMemAlloc(&d, n));
            CHECK(cuMemAlloc(&e, n));
            CHECK(cuMemcpy(d, (CUdeviceptr)a, n));
            CHECK(cuMemcpy(e, d, n));
            CHECK(cuMemcpyAsync((CUdeviceptr)b, e, n, NULL));
            CHECK(cuCtxSynchronize());
            EXPECT(memcmp(a, b, n) == 0, "unified copies differ");
            CHECK(cuMemcpy((CUdeviceptr)c2, (CUdeviceptr)b, n));
            EXPECT(memcmp(a, c2, n) == 0, "host-to-host unified copy differs");
            CHECK(cuMemFree(d));
            CHECK(cuMemFree(e));
            free(a);
            free(b);
            free(c2);
        }
        /* Registered host memory: pinned as far as the program can tell. */
        {
            size_t n = 1 << 16;
            void *p = malloc(n);
            unsigned f = 99;
            CHECK(cuMemHostRegister(p, n, 0x1));
            CUresult again = cuMemHostRegister((char *)p + 64, 64, 0);
            EXPECT(again == CUDA_ERROR_HOST_MEMORY_ALREADY_REGISTERED, "registered twice: %d", again);
            CHECK(cuMemHostGetFlags(&f, (char *)p + 100));
            EXPECT(f == 0x1, "host flags %u", f);
            EXPECT(cuMemFreeHost(p) == CUDA_ERROR_INVALID_VALUE, "freed registered memory");
            CHECK(cuMemHostUnregister(p));
            CUresult gone = cuMemHostUnregister(p);
            EXPECT(gone == CUDA_ERROR_HOST_MEMORY_NOT_REGISTERED, "unregistered twice: %d", gone);
            free(p);
        }
        /* 3D: a sub-volume of a host volume (pitch 320, 9 rows a slice)
         * into a pitched device volume (7 rows a slice), device to device,
         * and back into a packed host volume; each byte checked. */
        {
            GET(cuMemcpy3D, 3020);
            GET(cuMemcpy3DAsync, 3020);
            const size_t w = 300, h = 7, depth = 5, hp = 320, hh = 9, hd = 6;
            unsigned char *vol = malloc(hp * hh * hd), *back = malloc(w * h * depth);
            for (size_t i = 0; i < hp * hh * hd; i++) vol[i] = (unsigned char)(i * 13 + (i >> 9));
            memset(back, 0xee, w * h * depth);
            CUdeviceptr dv, dv2;
            size_t dpitch = 0, dpitch2 = 0;
            CHECK(cuMemAllocPitch(&dv, &dpitch, w, h * depth, 4));
            CHECK(cuMemAllocPitch(&dv2, &dpitch2, w, h * depth, 4));
            CUDA_MEMCPY3D c3;
            memset(&c3, 0, sizeof c3);
            c3.srcMemoryType = CU_MEMORYTYPE_HOST;
            c3.srcHost = vol;
            c3.srcPitch = hp;
            c3.srcHeight = hh;
            c3.srcXInBytes = 4;
            c3.srcY = 1;
            c3.srcZ = 1;
            c3.dstMemoryType = CU_MEMORYTYPE_DEVICE;
            c3.dstDevice = dv;
            c3.dstPitch = dpitch;
            c3.dstHeight = h;
            c3.WidthInBytes = w;
            c3.Height = h;
            c3.Depth = depth;
            CHECK(cuMemcpy3D(&c3));
            CUDA_MEMCPY3D d3;
            memset(&d3, 0, sizeof d3);
            d3.srcMemoryType = CU_MEMORYTYPE_DEVICE;
            d3.srcDevice = dv;
            d3.srcPitch = dpitch;
            d3.srcHeight = h;
            d3.dstMemoryType = CU_MEMORYTYPE_DEVICE;
            d3.dstDevice = dv2;
            d3.dstPitch = dpitch2;
            d3.dstHeight = h;
            d3.WidthInBytes = w;
            d3.Height = h;
            d3.Depth = depth;
            CHECK(cuMemcpy3DAsync(&d3, NULL));
            CUDA_MEMCPY3D b3;
            memset(&b3, 0, sizeof b3);
            b3.srcMemoryType = CU_MEMORYTYPE_DEVICE;
            b3.srcDevice = dv2;
            b3.srcPitch = dpitch2;
            b3.srcHeight = h;
            b3.dstMemoryType = CU_MEMORYTYPE_HOST;
            b3.dstHost = back;
            b3.dstPitch = w;
            b3.dstHeight = h;
            b3.WidthInBytes = w;
            b3.Height = h;
            b3.Depth = depth;
            CHECK(cuMemcpy3D(&b3));
            for (size_t z = 0; z < depth; z++)
                for (size_t y = 0; y < h; y++)
                    for (size_t x = 0; x < w; x++) {
                        unsigned char want = vol[(z + 1) * hp * hh + (y + 1) * hp + x + 4];
                        unsigned char got = back[z * w * h + y * w + x];
                        EXPECT(got == want, "3D byte (%zu,%zu,%zu) = %u, want %u", x, y, z, got, want);
                    }
            /* An array end that names no array. */
            c3.srcMemoryType = CU_MEMORYTYPE_ARRAY;
            c3.srcArray = NULL;
            EXPECT(cuMemcpy3D(&c3) != CUDA_SUCCESS, "a 3D copy from no array was accepted");
            CHECK(cuMemFree(dv));
            CHECK(cuMemFree(dv2));
            free(vol);
            free(back);
        }
        printf("OK copies2d\n");
    } else if (!strcmp(mode, "queries")) {
        GET(cuStreamGetPriority, 5050);
        GET(cuStreamGetFlags, 5050);
        GET(cuStreamGetCtx, 9020);
        GET(cuStreamGetId, 12000);
        GET(cuStreamCreateWithPriority, 5050);
        GET(cuCtxGetFlags, 7000);
        GET(cuDeviceGetPCIBusId, 4010);
        GET(cuDeviceGetByPCIBusId, 4010);
        GET(cuDeviceCanAccessPeer, 4000);
        GET(cuDeviceComputeCapability, 2000);
        CUstream lo, hi;
        CHECK(cuStreamCreateWithPriority(&lo, 1, 0));
        CHECK(cuStreamCreateWithPriority(&hi, 0, -100));
        int p = 7;
        unsigned f = 7;
        CHECK(cuStreamGetPriority(hi, &p));
        EXPECT(p == -5, "priority %d, want the clamped -5", p);
        CHECK(cuStreamGetFlags(lo, &f));
        EXPECT(f == 1, "stream flags %u", f);
        CHECK(cuStreamGetPriority(NULL, &p));
        EXPECT(p == 0, "default stream priority %d", p);
        CUcontext sc = NULL;
        CHECK(cuStreamGetCtx(lo, &sc));
        EXPECT(sc == ctx, "stream context");
        unsigned long long id1 = 0, id2 = 0;
        CHECK(cuStreamGetId(lo, &id1));
        CHECK(cuStreamGetId(hi, &id2));
        EXPECT(id1 != id2, "stream ids equal");
        /* Stream attributes: kept by the driver, checked, copied. */
        {
            GET(cuStreamGetAttribute, 11000);
            GET(cuStreamSetAttribute, 11000);
            GET(cuStreamCopyAttributes, 11000);
            CUstreamAttrValue v;
            memset(&v, 0, sizeof v);
            CHECK(cuStreamGetAttribute(hi, CU_LAUNCH_ATTRIBUTE_PRIORITY, &v));
            EXPECT(v.value == -5, "priority attribute %d, want -5", v.value);
            v.value = -3;
            CHECK(cuStreamSetAttribute(lo, CU_LAUNCH_ATTRIBUTE_PRIORITY, &v));
            CHECK(cuStreamGetPriority(lo, &p));
            EXPECT(p == -3, "priority %d after setting the attribute to -3", p);
            memset(&v, 0, sizeof v);
            v.value = 4; /* CU_SYNC_POLICY_BLOCKING_SYNC */
            CHECK(cuStreamSetAttribute(lo, CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY, &v));
            v.value = 9;
            EXPECT(cuStreamSetAttribute(lo, CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY, &v) == CUDA_ERROR_INVALID_VALUE,
                   "synchronization policy 9 taken");
            CUdeviceptr window;
            CHECK(cuMemAlloc(&window, 1 << 20));
            memset(&v, 0, sizeof v);
            v.accessPolicyWindow.base_ptr = (void *)(uintptr_t)window;
            v.accessPolicyWindow.num_bytes = 1 << 20;
            v.accessPolicyWindow.hitRatio = 0.625f;
            v.accessPolicyWindow.hitProp = 2;  /* persisting */
            v.accessPolicyWindow.missProp = 1; /* streaming */
            CHECK(cuStreamSetAttribute(lo, CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW, &v));
            v.accessPolicyWindow.hitRatio = 1.5f;
            EXPECT(cuStreamSetAttribute(lo, CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW, &v) == CUDA_ERROR_INVALID_VALUE,
                   "a hit ratio of 1.5 taken");
            memset(&v, 0, sizeof v);
            CHECK(cuStreamGetAttribute(lo, CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW, &v));
            EXPECT(v.accessPolicyWindow.base_ptr == (void *)(uintptr_t)window &&
                       v.accessPolicyWindow.num_bytes == 1 << 20 && v.accessPolicyWindow.hitRatio == 0.625f &&
                       v.accessPolicyWindow.hitProp == 2 && v.accessPolicyWindow.missProp == 1,
                   "access policy window read back %p %zu %g %d %d", v.accessPolicyWindow.base_ptr,
                   v.accessPolicyWindow.num_bytes, v.accessPolicyWindow.hitRatio, v.accessPolicyWindow.hitProp,
                   v.accessPolicyWindow.missProp);
            CHECK(cuStreamCopyAttributes(hi, lo));
            memset(&v, 0, sizeof v);
            CHECK(cuStreamGetAttribute(hi, CU_LAUNCH_ATTRIBUTE_SYNCHRONIZATION_POLICY, &v));
            EXPECT(v.value == 4, "copied synchronization policy %d", v.value);
            EXPECT(cuStreamGetAttribute(hi, CU_LAUNCH_ATTRIBUTE_COOPERATIVE, &v) == CUDA_ERROR_INVALID_VALUE,
                   "a launch-only attribute answered for a stream");
            memset(&v, 0, sizeof v);
            v.value = 0;
            CHECK(cuStreamSetAttribute(hi, CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW, &v));
            CHECK(cuStreamSetAttribute(lo, CU_LAUNCH_ATTRIBUTE_ACCESS_POLICY_WINDOW, &v));
            CHECK(cuMemFree(window));
        }
        CHECK(cuStreamDestroy(lo));
        EXPECT(cuStreamGetFlags(lo, &f) == 400, "destroyed stream still answers");
        CHECK(cuStreamDestroy(hi));
        CHECK(cuDevicePrimaryCtxGetState(dev, &flags, &active));
        CHECK(cuCtxGetFlags(&f));
        EXPECT(f == flags, "context flags %u, primary state says %u", f, flags);
        /* The documented 13 bytes hold the whole address: the driver writes
         * a four-digit domain, "0000:3B:00.0". */
        char bus[13];
        CHECK(cuDeviceGetPCIBusId(bus, sizeof bus, dev));
        int pci_bus = -1;
        CHECK(cuDeviceGetAttribute(&pci_bus, 33 /* PCI_BUS_ID */, dev));
        unsigned dom = 99, b = 999, d = 99, fn = 9;
        EXPECT(strlen(bus) == 12 && sscanf(bus, "%4x:%2x:%2x.%1x", &dom, &b, &d, &fn) == 4 && (int)b == pci_bus,
               "bus id \"%s\" for PCI bus %d", bus, pci_bus);
        CUdevice again = -1;
        CHECK(cuDeviceGetByPCIBusId(&again, bus));
        EXPECT(again == dev, "device %d for bus id %s", again, bus);
        EXPECT(cuDeviceGetByPCIBusId(&again, "not a bus id") == CUDA_ERROR_INVALID_VALUE, "bad bus id accepted");
        if (getenv("GPUPOOL_SERVER")) {
            /* What gpupool does not offer reads 0, whatever the server's GPU
             * has: GPUDirect RDMA, dma-buf export, multicast objects. */
            int offered[3] = {7, 7, 7}, which[3] = {116, 124, 132};
            for (int i = 0; i < 3; i++) {
                CHECK(cuDeviceGetAttribute(&offered[i], which[i], dev));
                EXPECT(offered[i] == 0, "attribute %d reads %d through gpupool", which[i], offered[i]);
            }
        }
        int can = 7, major = 0, minor = -1;
        CHECK(cuDeviceCanAccessPeer(&can, dev, dev));
        EXPECT(can == 0, "peer access %d", can);
        CHECK(cuDeviceComputeCapability(&major, &minor, dev));
        EXPECT(major >= 3 && minor >= 0, "compute capability %d.%d", major, minor);
        /* A context's streams go with it (through gpupool they then answer
         * as unknown; a local driver's answer to a dangling handle is not
         * defined). */
        if (getenv("GPUPOOL_SERVER")) {
            GET(cuCtxCreate, 3020);
            GET(cuCtxDestroy, 4000);
            CUcontext own;
            CUstream in_own;
            CHECK(cuCtxCreate(&own, 0, dev));
            CHECK(cuStreamCreate(&in_own, 1));
            CHECK(cuStreamGetFlags(in_own, &f));
            CHECK(cuCtxDestroy(own));
            CHECK(cuCtxSetCurrent(ctx));
            EXPECT(cuStreamGetFlags(in_own, &f) == 400, "a destroyed context's stream still answers");
        }
        /* TMA tensor maps over device memory: encoded, the same again for
         * the same arguments, moved to another address; arguments outside
         * the documented rules refused. */
        {
            GET(cuTensorMapEncodeTiled, 12000);
            GET(cuTensorMapEncodeIm2col, 12000);
            GET(cuTensorMapReplaceAddress, 12000);
            CUdeviceptr t;
            CHECK(cuMemAlloc(&t, 1 << 20));
            void *ta = (void *)(uintptr_t)t;
            uint64_t dims[2] = {256, 64}, strides[1] = {1024};
            unsigned box[2] = {32, 8}, es[2] = {1, 1};
            CUtensorMap m1, m2, m3;
            CHECK(cuTensorMapEncodeTiled(&m1, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, ta, dims, strides, box, es, 0, 0, 0, 0));
            CHECK(cuTensorMapEncodeTiled(&m2, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, ta, dims, strides, box, es, 0, 0, 0, 0));
            EXPECT(!memcmp(&m1, &m2, sizeof m1), "one set of arguments, two tensor maps");
            m3 = m1;
            CHECK(cuTensorMapReplaceAddress(&m3, (char *)ta + 65536));
            EXPECT(memcmp(&m1, &m3, sizeof m1) != 0, "replacing the address changed nothing");
            CHECK(cuTensorMapReplaceAddress(&m3, ta));
            EXPECT(!memcmp(&m1, &m3, sizeof m1), "the address put back does not give the first map");
            uint64_t bad_strides[1] = {1000};
            unsigned big_box[2] = {32, 300};
            EXPECT(cuTensorMapEncodeTiled(&m2, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, (char *)ta + 4, dims, strides, box, es,
                                          0, 0, 0, 0) == CUDA_ERROR_INVALID_VALUE,
                   "a tensor map at an address not 16-byte aligned");
            EXPECT(cuTensorMapEncodeTiled(&m2, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, ta, dims, bad_strides, box, es, 0, 0,
                                          0, 0) == CUDA_ERROR_INVALID_VALUE,
                   "a stride not a multiple of 16");
            EXPECT(cuTensorMapEncodeTiled(&m2, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 2, ta, dims, strides, big_box, es, 0, 0,
                                          0, 0) == CUDA_ERROR_INVALID_VALUE,
                   "a box of 300");
            EXPECT(cuTensorMapEncodeTiled(&m2, CU_TENSOR_MAP_DATA_TYPE_FLOAT32, 6, ta, dims, strides, box, es, 0, 0, 0,
                                          0) == CUDA_ERROR_INVALID_VALUE,
                   "a rank of 6");
            /* An NHWC half-precision image for a convolution. */
            uint64_t idims[4] = {64, 16, 16, 4}, istrides[3] = {128, 2048, 32768};
            int lower[2] = {-1, -1}, upper[2] = {1, 1};
            unsigned ies[4] = {1, 1, 1, 1};
            CHECK(cuTensorMapEncodeIm2col(&m2, CU_TENSOR_MAP_DATA_TYPE_FLOAT16, 4, ta, idims, istrides, lower, upper, 64,
                                          32, ies, 0, 0, 0, 0));
            CHECK(cuMemFree(t));
        }
        /* With no profiler attached, profiling starts and stops. */
        {
            GET(cuProfilerStart, 4000);
            GET(cuProfilerStop, 4000);
            CHECK(cuProfilerStart());
            CHECK(cuProfilerStop());
        }
        /* Copies between two contexts' memory; no peer access to enable. */
        {
            GET(cuCtxCreate, 3020);
            GET(cuCtxDestroy, 4000);
            GET(cuMemcpyPeer, 4000);
            GET(cuMemcpyPeerAsync, 4000);
            GET(cuCtxEnablePeerAccess, 4000);
            GET(cuCtxDisablePeerAccess, 4000);
            GET(cuDeviceGetP2PAttribute, 8000);
            int v = 7;
            EXPECT(cuDeviceGetP2PAttribute(&v, CU_DEVICE_P2P_ATTRIBUTE_ACCESS_SUPPORTED, dev, dev) ==
                       CUDA_ERROR_INVALID_DEVICE,
                   "a device's link to itself answered");
            enum { K = 3000 };
            unsigned char src[K], back[K];
            for (int i = 0; i < K; i++) src[i] = (unsigned char)(i * 7 + 1);
            CUdeviceptr mine, theirs;
            CHECK(cuMemAlloc(&mine, K));
            CHECK(cuMemcpyHtoD(mine, src, K));
            CUcontext other;
            CHECK(cuCtxCreate(&other, 0, dev));
            CHECK(cuMemAlloc(&theirs, 2 * K));
            CHECK(cuCtxSetCurrent(ctx));
            CHECK(cuMemcpyPeer(theirs + K, other, mine, ctx, K));
            CUstream ps;
            CHECK(cuStreamCreate(&ps, 1));
            CHECK(cuMemsetD32(mine, 0, K / 4));
            CHECK(cuMemcpyPeerAsync(mine, ctx, theirs + K, other, K, ps));
            CHECK(cuStreamSynchronize(ps));
            memset(back, 0, K);
            CHECK(cuMemcpyDtoH(back, mine, K));
            EXPECT(!memcmp(back, src, K), "peer copies there and back changed the data");
            /* The 3D form: rows of 1000 bytes out of their K-byte rows. */
            GET(cuMemcpy3DPeer, 4000);
            CUDA_MEMCPY3D p3 = {0};
            p3.srcMemoryType = CU_MEMORYTYPE_DEVICE;
            p3.srcDevice = mine;
            p3.reserved0 = ctx;
            p3.srcPitch = 1000;
            p3.dstMemoryType = CU_MEMORYTYPE_DEVICE;
            p3.dstDevice = theirs;
            p3.reserved1 = other;
            p3.dstPitch = 1000;
            p3.WidthInBytes = 1000;
            p3.Height = 3;
            p3.Depth = 1;
            CHECK(cuMemsetD32(theirs, 0, 2 * K / 4));
            CHECK(cuMemcpy3DPeer(&p3));
            memset(back, 0, K);
            CHECK(cuMemcpyDtoH(back, theirs, K));
            EXPECT(!memcmp(back, src, 3000), "a 3D peer copy changed the data");
            if (getenv("GPUPOOL_SERVER")) {
                p3.reserved1 = (CUcontext)(uintptr_t)0x1230;
                EXPECT(cuMemcpy3DPeer(&p3) == CUDA_ERROR_INVALID_CONTEXT, "a 3D peer copy to an unknown context");
            }
            EXPECT(cuCtxEnablePeerAccess(ctx, 0) == CUDA_ERROR_INVALID_CONTEXT, "peer access to itself");
            if (getenv("GPUPOOL_SERVER")) {
                EXPECT(cuMemcpyPeer(mine, other, theirs, ctx, K) == CUDA_ERROR_INVALID_VALUE,
                       "a peer copy with its contexts swapped was taken");
                EXPECT(cuCtxEnablePeerAccess(other, 0) == CUDA_ERROR_PEER_ACCESS_UNSUPPORTED,
                       "peer access enabled where no device can access a peer");
                EXPECT(cuCtxDisablePeerAccess(other) == CUDA_ERROR_PEER_ACCESS_NOT_ENABLED,
                       "peer access disabled that was never enabled");
            }
            CHECK(cuStreamDestroy(ps));
            CHECK(cuMemFree(mine));
            CHECK(cuCtxSetCurrent(other));
            CHECK(cuMemFree(theirs));
            CHECK(cuCtxDestroy(other));
            CHECK(cuCtxSetCurrent(ctx));
        }
        printf("OK queries %s cc %d.%d\n", bus, major, minor);
    } else if (!strcmp(mode, "cuda135")) {
        typedef CUresult (*ParamCount)(void *, size_t *);
        typedef CUresult (*HostFuncV2)(CUstream, CUhostFn, void *, unsigned);
        ParamCount funcCount = (ParamCount)dlsym(lib, "cuFuncGetParamCount");
        ParamCount kernelCount = (ParamCount)dlsym(lib, "cuKernelGetParamCount");
        HostFuncV2 hostFuncV2 = (HostFuncV2)dlsym(lib, "cuLaunchHostFunc_v2");
        EXPECT(funcCount && kernelCount && hostFuncV2, "a CUDA 13.5 entry point is not exported");
        alarm(60);
        size_t count = 0;
        CHECK(funcCount(vadd, &count));
        EXPECT(count == 4, "gp_vector_add has %zu parameters, want 4", count);
        CHECK(funcCount(null_kernel, &count));
        EXPECT(count == 0, "gp_null has %zu parameters, want 0", count);
        EXPECT(funcCount(vadd, NULL) == CUDA_ERROR_INVALID_VALUE, "a NULL count was taken");
        CUlibrary l;
        CUkernel kscale;
        CHECK(cuLibraryLoadData(&l, KERNELS_PTX, NULL, NULL, 0, NULL, NULL, 0));
        CHECK(cuLibraryGetKernel(&kscale, l, "gp_scale"));
        CHECK(kernelCount(kscale, &count));
        EXPECT(count == 3, "gp_scale has %zu parameters, want 3", count);
        /* Host functions in order, blocking (0) and spin-waiting (1); any
         * other mode is refused and nothing runs. */
        cb_main = pthread_self();
        CUstream s;
        CHECK(cuStreamCreate(&s, 1));
        CHECK(hostFuncV2(s, cb_record, (void *)1, 0));
        CHECK(hostFuncV2(s, cb_record, (void *)2, 1));
        EXPECT(hostFuncV2(s, cb_record, (void *)9, 2) == CUDA_ERROR_INVALID_VALUE, "sync mode 2 was taken");
        CHECK(cuStreamSynchronize(s));
        EXPECT(cb_done() == 2 && cb_order[0] == 1 && cb_order[1] == 2, "%d host functions ran", cb_done());
        CHECK(cuStreamDestroy(s));
        CHECK(cuLibraryUnload(l));
        printf("OK cuda135 params 4 0 3 host functions 2\n");
    } else if (!strcmp(mode, "reuse")) {
        /* Modules, then libraries, each holding one kernel, loaded, run and
         * unloaded in turn with kernels of different parameter layouts. A
         * driver may give a later function the handle of a freed one (the
         * software driver does under GPUPOOL_SOFT_REUSE_HANDLES=1): what
         * was known of the freed function must not be taken for it. */
        alarm(60);
        char *only[2] = {ptx_only("gp_scale"), ptx_only("gp_vector_add")};
        const char *names[2] = {"gp_scale", "gp_vector_add"};
        unsigned n = 4096;
        size_t bytes = n * sizeof(float);
        float *h = malloc(bytes), *got = malloc(bytes);
        for (unsigned i = 0; i < n; i++) h[i] = (float)i * 0.5f;
        CUdeviceptr x, z;
        CHECK(cuMemAlloc(&x, bytes));
        CHECK(cuMemAlloc(&z, bytes));
        CUfunction seen[2] = {NULL, NULL};
        int reused = 0;
        for (int round = 0; round < 8; round++) {
            int k = round % 2, library = round >= 4;
            CUmodule m = NULL;
            CUlibrary l = NULL;
            CUfunction f;
            if (library) {
                CUkernel kk;
                CHECK(cuLibraryLoadData(&l, only[k], NULL, NULL, 0, NULL, NULL, 0));
                CHECK(cuLibraryGetKernel(&kk, l, names[k]));
                f = (CUfunction)kk;
            } else {
                CHECK(cuModuleLoadData(&m, only[k]));
                CHECK(cuModuleGetFunction(&f, m, names[k]));
                if (f == seen[1 - k]) reused++;
                seen[k] = f;
            }
            CHECK(cuMemcpyHtoD(x, h, bytes));
            float s = 2.0f + (float)round;
            void *scale_args[] = {&x, &s, &n};
            void *add_args[] = {&x, &x, &z, &n};
            CHECK(cuLaunchKernel(f, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, k ? add_args : scale_args, NULL));
            CHECK(cuMemcpyDtoH(got, k ? z : x, bytes));
            for (unsigned i = 0; i < n; i++) {
                float want = k ? 2.0f * h[i] : s * h[i];
                EXPECT(got[i] == want, "round %d (%s of a %s): element %u is %f, want %f", round, names[k],
                       library ? "library" : "module", i, got[i], want);
            }
            if (library)
                CHECK(cuLibraryUnload(l));
            else
                CHECK(cuModuleUnload(m));
        }
        free(only[0]);
        free(only[1]);
        /* Contexts made and destroyed in turn: what one was told (a limit
         * set) is not the next one's, whatever handle the driver gives it. */
        GET(cuCtxCreate, 3020);
        GET(cuCtxDestroy, 4000);
        GET(cuCtxGetLimit, 2000);
        GET(cuCtxSetLimit, 3010);
        CUcontext made[2];
        size_t fifo_default = 0;
        for (int round = 0; round < 2; round++) {
            CHECK(cuCtxCreate(&made[round], 0, dev));
            size_t fifo = 0;
            CHECK(cuCtxGetLimit(&fifo, CU_LIMIT_PRINTF_FIFO_SIZE));
            if (round == 0) {
                fifo_default = fifo;
                CHECK(cuCtxSetLimit(CU_LIMIT_PRINTF_FIFO_SIZE, fifo_default * 2));
                CHECK(cuCtxGetLimit(&fifo, CU_LIMIT_PRINTF_FIFO_SIZE));
                EXPECT(fifo >= fifo_default * 2, "the limit set reads %zu", fifo);
            } else {
                EXPECT(fifo == fifo_default, "a new context's limit reads %zu, not its default %zu", fifo, fifo_default);
            }
            CHECK(cuCtxDestroy(made[round]));
        }
        CHECK(cuCtxSetCurrent(ctx));
        printf("reuse: a destroyed context's handle was given to the next: %s\n", made[0] == made[1] ? "yes" : "no");
        /* Apart from the OK line: a real driver reuses as its allocator
         * happens to. */
        printf("reuse: a freed function's handle was given to another %d times\n", reused);
        printf("OK reuse 8 rounds\n");
    } else if (!strcmp(mode, "uva")) {
        /* With unified addressing a pointer is host or device memory, never
         * both: nothing of the program can be mapped where device memory
         * lies. Under the software driver with GPUPOOL_SOFT_DEVICE_ADDRESS
         * (where it puts device memory), the program first maps a page of
         * its own there: the allocations made after it must not lie on it. */
        alarm(60);
        const size_t bytes = 1 << 20;
        long page = sysconf(_SC_PAGESIZE);
        const char *at = getenv("GPUPOOL_SOFT_DEVICE_ADDRESS");
        uintptr_t first = at ? (uintptr_t)strtoull(at, NULL, 16) : 0;
        char *mine = NULL;
        if (first) {
            mine = mmap((void *)first, page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE,
                        -1, 0);
            EXPECT(mine == (char *)first, "cannot map the program's page at %#lx", (unsigned long)first);
            memset(mine, 0x5a, page);
        }
        CUdeviceptr d[4];
        for (int i = 0; i < 4; i++) {
            CHECK(cuMemAlloc(&d[i], bytes));
            uintptr_t lo = (uintptr_t)d[i] - (uintptr_t)d[i] % page;
            void *probe = mmap((void *)lo, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            EXPECT(probe == MAP_FAILED || probe != (void *)lo, "a page could be mapped at device memory %#lx",
                   (unsigned long)d[i]);
            if (probe != MAP_FAILED && probe != (void *)lo) munmap(probe, page);
            EXPECT(!first || d[i] + bytes <= first || d[i] >= first + page,
                   "device memory %#lx lies on the program's page %#lx", (unsigned long)d[i], (unsigned long)first);
            CHECK(cuMemsetD32(d[i], 0x11111111u, bytes / 4));
        }
        CHECK(cuCtxSynchronize());
        for (long i = 0; mine && i < page; i++) EXPECT(mine[i] == 0x5a, "the program's page changed at %ld", i);
        for (int i = 0; i < 4; i++) CHECK(cuMemFree(d[i]));
        /* A reserved range is held from the reservation on: the program
         * cannot map a page where its mappings will go. */
        {
            GET(cuMemAddressReserve, 10020);
            GET(cuMemAddressFree, 10020);
            CUdeviceptr r;
            CHECK(cuMemAddressReserve(&r, 4 << 20, 0, 0, 0));
            uintptr_t mid = (uintptr_t)r + (2 << 20);
            void *probe = mmap((void *)mid, page, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
            EXPECT(probe == MAP_FAILED || probe != (void *)mid, "a page could be mapped in reserved range %#lx",
                   (unsigned long)r);
            if (probe != MAP_FAILED && probe != (void *)mid) munmap(probe, page);
            CHECK(cuMemAddressFree(r, 4 << 20));
        }
        if (mine) munmap(mine, page);
        printf("uva: the program had a page where device memory was to go: %s\n", mine ? "yes" : "no");
        printf("OK uva\n");
    } else if (!strcmp(mode, "callbacks")) {
        GET(cuLaunchHostFunc, 10000);
        GET(cuStreamAddCallback, 5000);
        GET(cuEventQuery, 2000);
        /* A wrong answer here is a hang: fail instead. */
        alarm(60);
        cb_main = pthread_self();
        const unsigned n = 1 << 16;
        const size_t bytes = n * sizeof(float);
        float *pinned;
        CHECK(cuMemAllocHost((void **)&pinned, bytes));
        for (unsigned i = 0; i < n; i++) pinned[i] = (float)i;
        CUdeviceptr d;
        CHECK(cuMemAlloc(&d, bytes));
        CUstream s, t, u;
        CHECK(cuStreamCreate(&s, 1));
        CHECK(cuStreamCreate(&t, 1));
        CHECK(cuStreamCreate(&u, 1));
        /* In order, with work between them, on a thread of their own. */
        CHECK(cuMemcpyHtoDAsync(d, pinned, bytes, s));
        CHECK(cuLaunchHostFunc(s, cb_record, (void *)1));
        float three = 3.0f;
        int count = (int)n;
        void *args[] = {&d, &three, &count};
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
        CHECK(cuLaunchHostFunc(s, cb_record, (void *)2));
        CHECK(cuLaunchHostFunc(s, cb_record, (void *)3));
        CHECK(cuStreamSynchronize(s));
        EXPECT(cb_done() == 3, "%d host functions ran before the synchronise returned, want 3", cb_done());
        EXPECT(cb_order[0] == 1 && cb_order[1] == 2 && cb_order[2] == 3, "order %d %d %d", cb_order[0],
               cb_order[1], cb_order[2]);
        EXPECT(!cb_on_main, "a host function ran on the thread that enqueued it");
        /* Delivered with no later call: the program only waits. */
        CHECK(cuLaunchHostFunc(s, cb_record, (void *)4));
        EXPECT(cb_wait_count(4, 20), "a host function did not run while the program waited without calls");
        /* The data of a copy before the function has landed when it runs. */
        memset(pinned, 0, bytes);
        cb_buffer = pinned;
        cb_buffer_len = n;
        CHECK(cuMemcpyDtoHAsync(pinned, d, bytes, s));
        CHECK(cuLaunchHostFunc(s, cb_read, (void *)5));
        CHECK(cuStreamSynchronize(s));
        EXPECT(cb_done() == 5, "%d ran", cb_done());
        EXPECT(cb_first == 0.0f && cb_last == 3.0f * (float)(n - 1), "the function saw %g .. %g, want 0 .. %g",
               cb_first, cb_last, 3.0f * (float)(n - 1));
        /* A function that waits: its stream is not done, an event after it
         * is not done, another stream is not held up, and a stream that
         * waits for the event is done only once the function returned. */
        CUevent e;
        CHECK(cuEventCreate(&e, 0));
        CHECK(cuLaunchHostFunc(s, cb_gated, (void *)6));
        CHECK(cuEventRecord(e, s));
        for (int i = 0; i < 3; i++) {
            CUresult q = cuStreamQuery(s);
            EXPECT(q == CUDA_ERROR_NOT_READY, "stream query %d while its host function waits", q);
        }
        CUresult eq = cuEventQuery(e);
        EXPECT(eq == CUDA_ERROR_NOT_READY, "event query %d while the host function before it waits", eq);
        CHECK(cuMemsetD8Async(d, 0, 64, t));
        CHECK(cuStreamSynchronize(t));
        EXPECT(cb_done() == 5, "the waiting function returned early");
        CHECK(cuStreamWaitEvent(u, e, 0));
        pthread_t opener;
        EXPECT(pthread_create(&opener, NULL, cb_opener, NULL) == 0, "pthread_create");
        CHECK(cuStreamSynchronize(u));
        EXPECT(cb_done() == 6 && cb_order[5] == 6, "a stream waiting for the event returned before the function");
        pthread_join(opener, NULL);
        CHECK(cuEventQuery(e));
        CHECK(cuStreamQuery(s));
        /* cuStreamAddCallback gets the stream as named and a status. */
        CHECK(cuStreamAddCallback(s, cb_stream_callback, (void *)7, 0));
        CHECK(cuEventRecord(e, s));
        CHECK(cuEventSynchronize(e));
        EXPECT(cb_done() == 7 && cb_stream_seen == s && cb_status_seen == CUDA_SUCCESS,
               "stream callback: ran %d, stream %p, status %d", cb_done(), (void *)cb_stream_seen, cb_status_seen);
        EXPECT(cuStreamAddCallback(s, cb_stream_callback, NULL, 1) == CUDA_ERROR_INVALID_VALUE, "flags accepted");
        EXPECT(cuLaunchHostFunc(s, NULL, NULL) == CUDA_ERROR_INVALID_VALUE, "no function accepted");
        /* The legacy stream: a synchronous copy follows it; a context
         * synchronise follows every stream. */
        CHECK(cuLaunchHostFunc(NULL, cb_record, (void *)8));
        CHECK(cuMemcpyDtoH(pinned, d, 64));
        EXPECT(cb_done() == 8, "a synchronous copy returned before the legacy stream's function");
        CHECK(cuLaunchHostFunc(t, cb_record, (void *)9));
        CHECK(cuCtxSynchronize());
        EXPECT(cb_done() == 9, "a context synchronise returned before a function");
        /* Later work in the stream waits for the function, also where it
         * touches the program's memory. Device-to-host data (linear and 2D)
         * enqueued behind a waiting function lands only after it returned:
         * the function sees the buffer as it was. */
        {
            const size_t k = 4096;
            unsigned char *pb = (unsigned char *)pinned;
            unsigned char *page = malloc(k), *back = malloc(k);
            GET(cuMemcpy2DAsync, 3020);
            GET(cuMemsetD8Async, 3020);
            CHECK(cuMemsetD8Async(d, 0x5a, k, s));
            memset(pb, 0xaa, 2 * k);
            struct cb_touch peek = {pb, k + 1, -1, 0, 0}; /* pb[k]: the 2D copy's first byte */
            cb_close_gate();
            CHECK(cuLaunchHostFunc(s, cb_gated_touch, &peek));
            CHECK(cuMemcpyDtoHAsync(pb, d, k, s));
            CUDA_MEMCPY2D rows = {0};
            rows.srcMemoryType = CU_MEMORYTYPE_DEVICE;
            rows.srcDevice = d;
            rows.srcPitch = 256;
            rows.dstMemoryType = CU_MEMORYTYPE_HOST;
            rows.dstHost = pb + k;
            rows.dstPitch = 512;
            rows.WidthInBytes = 128;
            rows.Height = 8;
            CHECK(cuMemcpy2DAsync(&rows, s));
            CUresult q = cuStreamQuery(s);
            EXPECT(q == CUDA_ERROR_NOT_READY, "stream query %d behind a waiting host function", q);
            EXPECT(pthread_create(&opener, NULL, cb_opener, NULL) == 0, "pthread_create");
            CHECK(cuStreamSynchronize(s));
            pthread_join(opener, NULL);
            EXPECT(peek.first == 0xaa && peek.last == 0xaa,
                   "a host function saw %#x .. %#x, data of copies enqueued after it", peek.first, peek.last);
            EXPECT(all_bytes(pb, k, 0x5a), "the device-to-host copy behind the function did not land");
            int rows_ok = 1;
            for (int r = 0; r < 8; r++)
                rows_ok &= all_bytes(pb + k + r * 512, 128, 0x5a) && all_bytes(pb + k + r * 512 + 128, 384, 0xaa);
            EXPECT(rows_ok, "the 2D copy behind the function landed wrong");
            /* A copy from pinned memory enqueued behind a function reads
             * what the function wrote there. */
            struct cb_touch fill = {pb, k, 0x33, 0, 0};
            cb_close_gate();
            CHECK(cuLaunchHostFunc(s, cb_gated_touch, &fill));
            EXPECT(pthread_create(&opener, NULL, cb_opener, NULL) == 0, "pthread_create");
            CHECK(cuMemcpyHtoDAsync(d, pb, k, s));
            CHECK(cuMemcpyDtoH(back, d, k));
            pthread_join(opener, NULL);
            EXPECT(all_bytes(back, k, 0x33), "a pinned copy read the buffer before the function wrote it (%#x)",
                   back[0]);
            /* A synchronous copy from pageable memory on the legacy stream
             * reads it after a blocking stream's function wrote it. */
            CUstream blocking;
            CHECK(cuStreamCreate(&blocking, 0));
            memset(page, 0x11, k);
            struct cb_touch fill_page = {page, k, 0x44, 0, 0};
            cb_close_gate();
            CHECK(cuLaunchHostFunc(blocking, cb_gated_touch, &fill_page));
            EXPECT(pthread_create(&opener, NULL, cb_opener, NULL) == 0, "pthread_create");
            CHECK(cuMemcpyHtoD(d, page, k));
            pthread_join(opener, NULL);
            CHECK(cuMemcpyDtoH(back, d, k));
            EXPECT(all_bytes(back, k, 0x44), "a synchronous copy read the buffer before the function wrote it (%#x)",
                   back[0]);
            CHECK(cuStreamDestroy(blocking));
            free(page);
            free(back);
        }
        /* In a capture it becomes a host node, which this graph, never
         * launched, never runs (`hostnodes` launches such graphs). */
        CHECK(cuStreamBeginCapture(t, CU_STREAM_CAPTURE_MODE_RELAXED));
        CHECK(cuLaunchHostFunc(t, cb_record, NULL));
        CUgraph g;
        CHECK(cuStreamEndCapture(t, &g));
        CHECK(cuGraphDestroy(g));
        CHECK(cuEventDestroy(e));
        CHECK(cuStreamDestroy(s));
        CHECK(cuStreamDestroy(t));
        CHECK(cuStreamDestroy(u));
        CHECK(cuMemFree(d));
        CHECK(cuMemFreeHost(pinned));
        alarm(0);
        printf("OK callbacks %d host functions\n", cb_done());
    } else if (!strcmp(mode, "pools")) {
        GET(cuMemAllocAsync, 11020);
        GET(cuMemAllocFromPoolAsync, 11020);
        GET(cuMemFreeAsync, 11020);
        GET(cuDeviceGetDefaultMemPool, 11020);
        GET(cuDeviceGetMemPool, 11020);
        GET(cuDeviceSetMemPool, 11020);
        GET(cuMemPoolCreate, 11020);
        GET(cuMemPoolDestroy, 11020);
        GET(cuMemPoolSetAttribute, 11020);
        GET(cuMemPoolGetAttribute, 11020);
        GET(cuMemPoolTrimTo, 11020);
        GET(cuMemPoolGetAccess, 11020);
        int pools_supported = 0;
        CHECK(cuDeviceGetAttribute(&pools_supported, CU_DEVICE_ATTRIBUTE_MEMORY_POOLS_SUPPORTED, dev));
        EXPECT(pools_supported == 1, "memory pools supported: %d", pools_supported);
        const unsigned n = 300000;
        const size_t bytes = n * sizeof(float);
        float *in, *out;
        CHECK(cuMemAllocHost((void **)&in, bytes));
        CHECK(cuMemAllocHost((void **)&out, bytes));
        for (unsigned i = 0; i < n; i++) in[i] = (float)(i % 1000), out[i] = -1.0f;
        CUstream s;
        CHECK(cuStreamCreate(&s, 1));
        /* From the default pool, in stream order: allocate, fill, scale,
         * read back, free, all before one synchronise. */
        CUdeviceptr a;
        CHECK(cuMemAllocAsync(&a, bytes, s));
        /* Pool memory is shared through the pool, not by legacy IPC. */
        int legacy_ipc = -1;
        CHECK(cuPointerGetAttribute(&legacy_ipc, CU_POINTER_ATTRIBUTE_IS_LEGACY_CUDA_IPC_CAPABLE, a));
        EXPECT(legacy_ipc == 0, "pool memory legacy IPC capable %d", legacy_ipc);
        CHECK(cuMemcpyHtoDAsync(a, in, bytes, s));
        float two = 2.0f;
        int count = (int)n;
        void *args[] = {&a, &two, &count};
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
        CHECK(cuMemcpyDtoHAsync(out, a, bytes, s));
        CHECK(cuMemFreeAsync(a, s));
        CHECK(cuStreamSynchronize(s));
        for (unsigned i = 0; i < n; i++) EXPECT(out[i] == 2.0f * (float)(i % 1000), "out[%u] = %g", i, out[i]);
        CUmemoryPool p0 = NULL, cur = NULL;
        CHECK(cuDeviceGetDefaultMemPool(&p0, dev));
        CHECK(cuDeviceGetMemPool(&cur, dev));
        EXPECT(p0 != NULL && cur == p0, "the current pool is not the default one");
        unsigned long long threshold = ~0ull, got = 0;
        CHECK(cuMemPoolSetAttribute(p0, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &threshold));
        CHECK(cuMemPoolGetAttribute(p0, CU_MEMPOOL_ATTR_RELEASE_THRESHOLD, &got));
        EXPECT(got == threshold, "release threshold %llu", got);
        int reuse = 0, reuse_got = 7;
        CHECK(cuMemPoolSetAttribute(p0, CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC, &reuse));
        CHECK(cuMemPoolGetAttribute(p0, CU_MEMPOOL_ATTR_REUSE_ALLOW_OPPORTUNISTIC, &reuse_got));
        EXPECT(reuse_got == 0, "opportunistic reuse %d", reuse_got);
        /* A pool of its own: what it holds is counted, and freed in order. */
        CUmemPoolProps props;
        memset(&props, 0, sizeof props);
        props.allocType = 1;
        props.location.type = 1;
        props.location.id = dev;
        CUmemoryPool p1 = NULL;
        CHECK(cuMemPoolCreate(&p1, &props));
        CUdeviceptr b;
        CHECK(cuMemAllocFromPoolAsync(&b, 1 << 20, p1, s));
        unsigned long long used = 0;
        CHECK(cuMemPoolGetAttribute(p1, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
        EXPECT(used >= (1 << 20), "pool in use: %llu", used);
        CHECK(cuMemsetD8Async(b, 0x5a, 1 << 20, s));
        unsigned char *probe = (unsigned char *)out;
        CHECK(cuMemcpyDtoHAsync(probe, b + 4096, 4096, s));
        CHECK(cuMemFreeAsync(b, s));
        CHECK(cuStreamSynchronize(s));
        for (int i = 0; i < 4096; i++) EXPECT(probe[i] == 0x5a, "pool memory byte %d = %u", i, probe[i]);
        CHECK(cuMemPoolGetAttribute(p1, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
        EXPECT(used == 0, "pool still in use after the free: %llu", used);
        unsigned long long high = 0, zero = 0;
        CHECK(cuMemPoolGetAttribute(p1, CU_MEMPOOL_ATTR_USED_MEM_HIGH, &high));
        EXPECT(high >= (1 << 20), "high-water mark %llu", high);
        CHECK(cuMemPoolSetAttribute(p1, CU_MEMPOOL_ATTR_USED_MEM_HIGH, &zero));
        /* The device's current pool serves cuMemAllocAsync. */
        CHECK(cuDeviceSetMemPool(dev, p1));
        CHECK(cuDeviceGetMemPool(&cur, dev));
        EXPECT(cur == p1, "the current pool did not change");
        CUdeviceptr c;
        CHECK(cuMemAllocAsync(&c, 8192, s));
        CHECK(cuMemPoolGetAttribute(p1, CU_MEMPOOL_ATTR_USED_MEM_CURRENT, &used));
        EXPECT(used >= 8192, "the current pool did not serve the allocation: %llu", used);
        CHECK(cuMemFreeAsync(c, s));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuDeviceSetMemPool(dev, p0));
        CUmemLocation here = {1, dev};
        unsigned access = 0;
        CHECK(cuMemPoolGetAccess(&access, p1, &here));
        EXPECT(access == 3, "the pool's device has access %u", access);
        CHECK(cuMemPoolTrimTo(p1, 0));
        CHECK(cuMemPoolDestroy(p1));
        /* A pool shareable as a file descriptor is made (see pool-ipc);
         * through gpupool other handle types, which cannot travel, are
         * refused. */
        props.handleTypes = 1;
        CUmemoryPool ipc = NULL;
        CHECK(cuMemPoolCreate(&ipc, &props));
        CHECK(cuMemPoolDestroy(ipc));
        props.handleTypes = 8; /* CU_MEM_HANDLE_TYPE_FABRIC */
        CUresult r = cuMemPoolCreate(&ipc, &props);
        if (getenv("GPUPOOL_SERVER")) EXPECT(r == CUDA_ERROR_NOT_SUPPORTED, "fabric pool: %d", r);
        else if (r == CUDA_SUCCESS) CHECK(cuMemPoolDestroy(ipc));
        CHECK(cuStreamDestroy(s));
        CHECK(cuMemFreeHost(in));
        CHECK(cuMemFreeHost(out));
        /* Graph memory attributes and trimming (PyTorch's cudaMallocAsync
         * backend reads them): used and reserved, now and highest; only the
         * highs may be reset. */
        {
            typedef CUresult (*PFN_graphMemAttr)(CUdevice, int, void *);
            typedef CUresult (*PFN_graphMemTrim)(CUdevice);
            PFN_graphMemAttr getAttr = (PFN_graphMemAttr)sym("cuDeviceGetGraphMemAttribute", 11040);
            PFN_graphMemAttr setAttr = (PFN_graphMemAttr)sym("cuDeviceSetGraphMemAttribute", 11040);
            PFN_graphMemTrim trim = (PFN_graphMemTrim)sym("cuDeviceGraphMemTrim", 11040);
            for (int attr = 0; attr < 4; attr++) {
                unsigned long long v = ~0ull;
                CHECK(getAttr(dev, attr, &v));
                EXPECT(v < (1ull << 48), "graph memory attribute %d = %llu", attr, v);
            }
            unsigned long long zero = 0;
            CHECK(setAttr(dev, 1, &zero));
            CHECK(setAttr(dev, 3, &zero));
            EXPECT(setAttr(dev, 0, &zero) == CUDA_ERROR_INVALID_VALUE, "the current use was set");
            CHECK(trim(dev));
        }
        printf("OK pools\n");
    } else if (!strcmp(mode, "arrays")) {
        GET(cuArray3DCreate, 3020);
        GET(cuArrayDestroy, 2000);
        GET(cuArrayGetDescriptor, 3020);
        GET(cuArray3DGetDescriptor, 3020);
        GET(cuMemcpy2D, 3020);
        GET(cuMemcpy2DAsync, 3020);
        GET(cuMemcpy3D, 3020);
        GET(cuTexObjectCreate, 5000);
        GET(cuTexObjectDestroy, 5000);
        GET(cuTexObjectGetResourceDesc, 5000);
        GET(cuSurfObjectCreate, 5000);
        GET(cuSurfObjectDestroy, 5000);
        CUfunction tex_read, surf_scale;
        CHECK(cuModuleGetFunction(&tex_read, mod, "gp_tex_read"));
        CHECK(cuModuleGetFunction(&surf_scale, mod, "gp_surf_scale"));
        /* Odd sizes: no row is a power of two long. */
        int w = 37, h = 19;
        const size_t n = (size_t)w * h, row = (size_t)w * sizeof(float);
        float *img = malloc(n * sizeof(float)), *img2 = malloc(n * sizeof(float));
        float *back = malloc(2 * n * sizeof(float));
        for (size_t i = 0; i < n; i++) img[i] = 1.0f + 0.25f * (float)i, img2[i] = -3.0f * (float)i;
        CUstream s;
        CHECK(cuStreamCreate(&s, 1));
        /* A 2D float array for textures and surfaces. */
        CUDA_ARRAY3D_DESCRIPTOR ad = {(size_t)w, (size_t)h, 0, CU_AD_FORMAT_FLOAT, 1, CUDA_ARRAY3D_SURFACE_LDST};
        CUarray arr;
        CHECK(cuArray3DCreate(&arr, &ad));
        CUDA_ARRAY_DESCRIPTOR d2;
        CHECK(cuArrayGetDescriptor(&d2, arr));
        EXPECT(d2.Width == (size_t)w && d2.Height == (size_t)h && d2.Format == CU_AD_FORMAT_FLOAT && d2.NumChannels == 1,
               "array descriptor %zux%zu format %#x channels %u", d2.Width, d2.Height, d2.Format, d2.NumChannels);
        CUDA_ARRAY3D_DESCRIPTOR d3;
        CHECK(cuArray3DGetDescriptor(&d3, arr));
        EXPECT(d3.Depth == 0 && d3.Flags == CUDA_ARRAY3D_SURFACE_LDST, "3D descriptor depth %zu flags %#x", d3.Depth,
               d3.Flags);
        /* Host to array and back, whole. */
        CUDA_MEMCPY2D up = {0};
        up.srcMemoryType = CU_MEMORYTYPE_HOST;
        up.srcHost = img;
        up.srcPitch = row;
        up.dstMemoryType = CU_MEMORYTYPE_ARRAY;
        up.dstArray = arr;
        up.WidthInBytes = row;
        up.Height = h;
        CHECK(cuMemcpy2D(&up));
        CUDA_MEMCPY2D down = {0};
        down.srcMemoryType = CU_MEMORYTYPE_ARRAY;
        down.srcArray = arr;
        down.dstMemoryType = CU_MEMORYTYPE_HOST;
        down.dstHost = back;
        down.dstPitch = row;
        down.WidthInBytes = row;
        down.Height = h;
        memset(back, 0, n * sizeof(float));
        CHECK(cuMemcpy2D(&down));
        EXPECT(!memcmp(back, img, n * sizeof(float)), "host -> array -> host changed the data");
        /* A sub-rectangle (5 x 4 from x 3, y 2) into wider host rows, on a
         * stream. */
        float sub[4 * 8];
        for (int i = 0; i < 32; i++) sub[i] = -1.0f;
        CUDA_MEMCPY2D part = down;
        part.srcXInBytes = 3 * sizeof(float);
        part.srcY = 2;
        part.dstHost = sub;
        part.dstPitch = 8 * sizeof(float);
        part.WidthInBytes = 5 * sizeof(float);
        part.Height = 4;
        CHECK(cuMemcpy2DAsync(&part, s));
        CHECK(cuStreamSynchronize(s));
        int sub_ok = 1;
        for (int r = 0; r < 4; r++)
            for (int c = 0; c < 8; c++)
                sub_ok &= sub[r * 8 + c] == (c < 5 ? img[(2 + r) * w + 3 + c] : -1.0f);
        EXPECT(sub_ok, "a sub-rectangle of the array landed wrong");
        /* Out of the array's bounds: refused, nothing copied. */
        CUDA_MEMCPY2D over = up;
        over.Height = h + 1;
        EXPECT(cuMemcpy2D(&over) == CUDA_ERROR_INVALID_VALUE, "a copy past the array's last row was accepted");
        /* A texture over the array: point sampling at texel centres reads
         * every texel. */
        CUDA_RESOURCE_DESC rd;
        memset(&rd, 0, sizeof rd);
        rd.resType = CU_RESOURCE_TYPE_ARRAY;
        rd.res.array.hArray = arr;
        CUDA_TEXTURE_DESC td;
        memset(&td, 0, sizeof td);
        td.addressMode[0] = td.addressMode[1] = CU_TR_ADDRESS_MODE_CLAMP;
        td.filterMode = CU_TR_FILTER_MODE_POINT;
        CUtexObject tex;
        CHECK(cuTexObjectCreate(&tex, &rd, &td, NULL));
        CUDA_RESOURCE_DESC got;
        CHECK(cuTexObjectGetResourceDesc(&got, tex));
        EXPECT(got.resType == CU_RESOURCE_TYPE_ARRAY && got.res.array.hArray == arr, "texture resource %d", got.resType);
        CUdeviceptr out;
        CHECK(cuMemAlloc(&out, n * sizeof(float)));
        void *targs[] = {&out, &tex, &w, &h};
        unsigned blocks = (unsigned)((n + 127) / 128);
        CHECK(cuLaunchKernel(tex_read, blocks, 1, 1, 128, 1, 1, 0, s, targs, NULL));
        CHECK(cuMemcpyDtoHAsync(back, out, n * sizeof(float), s));
        CHECK(cuStreamSynchronize(s));
        EXPECT(!memcmp(back, img, n * sizeof(float)), "the texture read %g at texel 0, want %g", back[0], img[0]);
        /* A surface over the same array: scale in place, read back. */
        CUsurfObject surf;
        CHECK(cuSurfObjectCreate(&surf, &rd));
        float two = 2.0f;
        void *sargs[] = {&surf, &two, &w, &h};
        CHECK(cuLaunchKernel(surf_scale, blocks, 1, 1, 128, 1, 1, 0, s, sargs, NULL));
        CHECK(cuStreamSynchronize(s));
        CHECK(cuMemcpy2D(&down));
        int scaled = 1;
        for (size_t i = 0; i < n; i++) scaled &= back[i] == 2.0f * img[i];
        EXPECT(scaled, "the surface wrote %g at texel 1, want %g", back[1], 2.0f * img[1]);
        /* Device memory to the array and the array to device memory. */
        CUdeviceptr lin;
        CHECK(cuMemAlloc(&lin, n * sizeof(float)));
        CHECK(cuMemcpyHtoD(lin, img2, n * sizeof(float)));
        CUDA_MEMCPY2D d2a = {0};
        d2a.srcMemoryType = CU_MEMORYTYPE_DEVICE;
        d2a.srcDevice = lin;
        d2a.srcPitch = row;
        d2a.dstMemoryType = CU_MEMORYTYPE_ARRAY;
        d2a.dstArray = arr;
        d2a.WidthInBytes = row;
        d2a.Height = h;
        CHECK(cuMemcpy2D(&d2a));
        CUDA_MEMCPY2D a2d = {0};
        a2d.srcMemoryType = CU_MEMORYTYPE_ARRAY;
        a2d.srcArray = arr;
        a2d.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        a2d.dstDevice = out;
        a2d.dstPitch = row;
        a2d.WidthInBytes = row;
        a2d.Height = h;
        CHECK(cuMemcpy2D(&a2d));
        CHECK(cuMemcpyDtoH(back, out, n * sizeof(float)));
        EXPECT(!memcmp(back, img2, n * sizeof(float)), "device -> array -> device changed the data");
        /* A texture over pitched device memory (rows 256 bytes apart). */
        const size_t pitch = 256;
        CUdeviceptr pitched;
        CHECK(cuMemAlloc(&pitched, pitch * h));
        CUDA_MEMCPY2D to_pitched = {0};
        to_pitched.srcMemoryType = CU_MEMORYTYPE_HOST;
        to_pitched.srcHost = img;
        to_pitched.srcPitch = row;
        to_pitched.dstMemoryType = CU_MEMORYTYPE_DEVICE;
        to_pitched.dstDevice = pitched;
        to_pitched.dstPitch = pitch;
        to_pitched.WidthInBytes = row;
        to_pitched.Height = h;
        CHECK(cuMemcpy2D(&to_pitched));
        CUDA_RESOURCE_DESC pd;
        memset(&pd, 0, sizeof pd);
        pd.resType = CU_RESOURCE_TYPE_PITCH2D;
        pd.res.pitch2D.devPtr = pitched;
        pd.res.pitch2D.format = CU_AD_FORMAT_FLOAT;
        pd.res.pitch2D.numChannels = 1;
        pd.res.pitch2D.width = w;
        pd.res.pitch2D.height = h;
        pd.res.pitch2D.pitchInBytes = pitch;
        CUtexObject ptex;
        CHECK(cuTexObjectCreate(&ptex, &pd, &td, NULL));
        void *pargs[] = {&out, &ptex, &w, &h};
        CHECK(cuLaunchKernel(tex_read, blocks, 1, 1, 128, 1, 1, 0, s, pargs, NULL));
        CHECK(cuMemcpyDtoHAsync(back, out, n * sizeof(float), s));
        CHECK(cuStreamSynchronize(s));
        EXPECT(!memcmp(back, img, n * sizeof(float)), "the pitched texture read %g at texel 0, want %g", back[0], img[0]);
        /* A layered array: two layers written from one host volume by a 3D
         * copy, read back one layer at a time. */
        CUDA_ARRAY3D_DESCRIPTOR ld = {(size_t)w, (size_t)h, 3, CU_AD_FORMAT_FLOAT, 1, CUDA_ARRAY3D_LAYERED};
        CUarray layers;
        CHECK(cuArray3DCreate(&layers, &ld));
        float *volume = malloc(2 * n * sizeof(float));
        memcpy(volume, img, n * sizeof(float));
        memcpy(volume + n, img2, n * sizeof(float));
        CUDA_MEMCPY3D c3;
        memset(&c3, 0, sizeof c3);
        c3.srcMemoryType = CU_MEMORYTYPE_HOST;
        c3.srcHost = volume;
        c3.srcPitch = row;
        c3.srcHeight = h;
        c3.dstMemoryType = CU_MEMORYTYPE_ARRAY;
        c3.dstArray = layers;
        c3.dstZ = 1;
        c3.WidthInBytes = row;
        c3.Height = h;
        c3.Depth = 2;
        CHECK(cuMemcpy3D(&c3));
        for (int layer = 1; layer <= 2; layer++) {
            CUDA_MEMCPY3D r3;
            memset(&r3, 0, sizeof r3);
            r3.srcMemoryType = CU_MEMORYTYPE_ARRAY;
            r3.srcArray = layers;
            r3.srcZ = layer;
            r3.dstMemoryType = CU_MEMORYTYPE_HOST;
            r3.dstHost = back;
            r3.dstPitch = row;
            r3.dstHeight = h;
            r3.WidthInBytes = row;
            r3.Height = h;
            r3.Depth = 1;
            memset(back, 0, n * sizeof(float));
            CHECK(cuMemcpy3D(&r3));
            EXPECT(!memcmp(back, layer == 1 ? img : img2, n * sizeof(float)), "layer %d read back wrong", layer);
        }
        c3.dstZ = 2;
        EXPECT(cuMemcpy3D(&c3) == CUDA_ERROR_INVALID_VALUE, "a 3D copy past the last layer was accepted");
        /* A 1D array through the 1D copies: in from the host, array to
         * array at offsets, device to array and back, out to the host on a
         * stream; copies past the end are refused. */
        {
            GET(cuMemcpyHtoA, 3020);
            GET(cuMemcpyHtoAAsync, 3020);
            GET(cuMemcpyAtoH, 3020);
            GET(cuMemcpyAtoHAsync, 3020);
            GET(cuMemcpyDtoA, 3020);
            GET(cuMemcpyAtoD, 3020);
            GET(cuMemcpyAtoA, 3020);
            enum { M = 1000 };
            float v[M], want[M], got[M];
            for (int i = 0; i < M; i++) v[i] = 0.5f * (float)i - 3.0f;
            CUDA_ARRAY3D_DESCRIPTOR d1 = {M, 0, 0, CU_AD_FORMAT_FLOAT, 1, 0};
            CUarray a1, b1;
            CHECK(cuArray3DCreate(&a1, &d1));
            CHECK(cuArray3DCreate(&b1, &d1));
            CHECK(cuMemcpyHtoA(a1, 0, v, sizeof v));
            /* b1 = v rotated by 10: its first 10 from v's last, the rest
             * from a1's first 990. */
            CHECK(cuMemcpyAtoA(b1, 10 * sizeof(float), a1, 0, (M - 10) * sizeof(float)));
            CHECK(cuMemcpyHtoA(b1, 0, v + M - 10, 10 * sizeof(float)));
            for (int i = 0; i < M; i++) want[i] = i < 10 ? v[M - 10 + i] : v[i - 10];
            memset(got, 0, sizeof got);
            CHECK(cuMemcpyAtoH(got, b1, 0, sizeof got));
            for (int i = 0; i < M; i++) EXPECT(got[i] == want[i], "1D array b[%d] = %g, want %g", i, got[i], want[i]);
            CUdeviceptr dv;
            CHECK(cuMemAlloc(&dv, sizeof v));
            CHECK(cuMemcpyAtoD(dv, b1, 0, sizeof v));
            /* a1's second half = b1's first half, through device memory. */
            CHECK(cuMemcpyDtoA(a1, (M / 2) * sizeof(float), dv, (M / 2) * sizeof(float)));
            CHECK(cuMemcpyHtoAAsync(a1, 2 * sizeof(float), v + 100, 3 * sizeof(float), s));
            memset(got, 0, sizeof got);
            CHECK(cuMemcpyAtoHAsync(got, a1, 0, sizeof got, s));
            CHECK(cuStreamSynchronize(s));
            for (int i = 0; i < M; i++) {
                float w1 = i >= M / 2 ? want[i - M / 2] : (i >= 2 && i < 5) ? v[100 + i - 2] : v[i];
                EXPECT(got[i] == w1, "1D array a[%d] = %g, want %g", i, got[i], w1);
            }
            EXPECT(cuMemcpyHtoA(a1, (M - 1) * sizeof(float), v, 2 * sizeof(float)) == CUDA_ERROR_INVALID_VALUE,
                   "a 1D copy past the array's end was accepted");
            EXPECT(cuMemcpyAtoH(got, a1, M * sizeof(float), sizeof(float)) == CUDA_ERROR_INVALID_VALUE,
                   "a 1D copy from past the array's end was accepted");
            CHECK(cuMemFree(dv));
            CHECK(cuArrayDestroy(a1));
            CHECK(cuArrayDestroy(b1));
        }
        CHECK(cuTexObjectDestroy(tex));
        CHECK(cuTexObjectDestroy(ptex));
        CHECK(cuSurfObjectDestroy(surf));
        CHECK(cuArrayDestroy(arr));
        CHECK(cuArrayDestroy(layers));
        if (getenv("GPUPOOL_SERVER")) {
            /* A destroyed array is gone (a local driver's answer to a
             * dangling handle is not defined). */
            EXPECT(cuArrayGetDescriptor(&d2, arr) != CUDA_SUCCESS, "a destroyed array still answers");
        }
        CHECK(cuMemFree(out));
        CHECK(cuMemFree(lin));
        CHECK(cuMemFree(pitched));
        CHECK(cuStreamDestroy(s));
        free(img);
        free(img2);
        free(back);
        free(volume);
        printf("OK arrays %dx%d\n", w, h);
    } else if (!strcmp(mode, "vmm")) {
        GET(cuMemAddressReserve, 10020);
        GET(cuMemAddressFree, 10020);
        GET(cuMemCreate, 10020);
        GET(cuMemRelease, 10020);
        GET(cuMemMap, 10020);
        GET(cuMemUnmap, 10020);
        GET(cuMemSetAccess, 10020);
        GET(cuMemGetAllocationGranularity, 10020);
        GET(cuMemGetAccess, 10020);
        int vmm = 0;
        CHECK(cuDeviceGetAttribute(&vmm, CU_DEVICE_ATTRIBUTE_VIRTUAL_MEMORY_MANAGEMENT_SUPPORTED, dev));
        EXPECT(vmm == 1, "virtual memory management supported: %d", vmm);
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof prop);
        prop.type = 1;
        prop.location.type = 1;
        prop.location.id = dev;
        size_t g = 0;
        CHECK(cuMemGetAllocationGranularity(&g, &prop, 0));
        EXPECT(g > 0 && (g & (g - 1)) == 0, "granularity %zu", g);
        CUdeviceptr va;
        CHECK(cuMemAddressReserve(&va, 4 * g, 0, 0, 0));
        CUmemGenericAllocationHandle h1, h2;
        CHECK(cuMemCreate(&h1, g, &prop, 0));
        CHECK(cuMemCreate(&h2, 2 * g, &prop, 0));
        CHECK(cuMemMap(va, g, 0, h1, 0));
        CHECK(cuMemMap(va + g, 2 * g, 0, h2, 0));
        CUmemAccessDesc access = {{1, dev}, 3};
        CHECK(cuMemSetAccess(va, 3 * g, &access, 1));
        /* Floats from half-way into the first piece to well into the
         * second: copies and a kernel cross the boundary. */
        const unsigned n = (unsigned)(g / sizeof(float));
        CUdeviceptr x = va + g / 2;
        float *host = malloc(n * sizeof(float));
        for (unsigned i = 0; i < n; i++) host[i] = (float)(i % 777);
        CHECK(cuMemcpyHtoD(x, host, n * sizeof(float)));
        float five = 5.0f;
        int count = (int)n;
        void *args[] = {&x, &five, &count};
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        memset(host, 0, n * sizeof(float));
        CHECK(cuMemcpyDtoH(host, x, n * sizeof(float)));
        for (unsigned i = 0; i < n; i++) EXPECT(host[i] == 5.0f * (float)(i % 777), "mapped[%u] = %g", i, host[i]);
        unsigned long long flags_rw = 0;
        CHECK(cuMemGetAccess(&flags_rw, &access.location, va + g + 64));
        EXPECT(flags_rw == 3, "access flags %llu", flags_rw);
        /* The handle behind any mapped address, retained (as NCCL finds
         * its buffers' handles back), and what it was made with. */
        GET(cuMemRetainAllocationHandle, 11000);
        GET(cuMemGetAllocationPropertiesFromHandle, 10020);
        CUmemGenericAllocationHandle back = 0;
        CHECK(cuMemRetainAllocationHandle(&back, (void *)(va + g + 100)));
        EXPECT(back == h2, "retained %llx, mapped %llx", back, h2);
        CUmemAllocationProp got;
        memset(&got, 0xab, sizeof got);
        CHECK(cuMemGetAllocationPropertiesFromHandle(&got, back));
        EXPECT(got.type == 1 && got.requestedHandleTypes == 0 && got.location.type == 1 && got.location.id == dev &&
                   got.win32HandleMetaData == NULL,
               "properties: type %d handle types %d location %d/%d", got.type, got.requestedHandleTypes,
               got.location.type, got.location.id);
        EXPECT(cuMemRetainAllocationHandle(&back, (void *)(va + 3 * g)) == CUDA_ERROR_INVALID_VALUE,
               "retained the handle of an unmapped address");
        EXPECT(cuMemGetAllocationPropertiesFromHandle(NULL, h1) == CUDA_ERROR_INVALID_VALUE, "no slot");
        if (getenv("GPUPOOL_SERVER")) {
            /* Through gpupool: not freeable as an allocation, and nothing
             * past what is mapped. */
            EXPECT(cuMemFree(va) == CUDA_ERROR_INVALID_VALUE, "cuMemFree of mapped memory");
            EXPECT(cuMemcpyHtoD(va + 3 * g - 16, host, 32) == CUDA_ERROR_INVALID_VALUE, "copy past the mappings");
        }
        CHECK(cuMemUnmap(va, g));
        CHECK(cuMemUnmap(va + g, 2 * g));
        CHECK(cuMemRelease(h1));
        /* Two references to h2: its creation's and the retained one. */
        CHECK(cuMemRelease(h2));
        CHECK(cuMemGetAllocationPropertiesFromHandle(&got, h2));
        CHECK(cuMemMap(va, 2 * g, 0, h2, 0));
        CHECK(cuMemUnmap(va, 2 * g));
        CHECK(cuMemRelease(h2));
        if (getenv("GPUPOOL_SERVER")) {
            EXPECT(cuMemRelease(h2) == CUDA_ERROR_INVALID_VALUE, "a third release");
            EXPECT(cuMemGetAllocationPropertiesFromHandle(&got, h2) == CUDA_ERROR_INVALID_VALUE,
                   "properties of a released handle");
            /* Memory whose handle went while it stayed mapped has no
             * handle left to give through gpupool. */
            CUmemGenericAllocationHandle h3;
            CHECK(cuMemCreate(&h3, g, &prop, 0));
            CHECK(cuMemMap(va, g, 0, h3, 0));
            CHECK(cuMemRelease(h3));
            EXPECT(cuMemRetainAllocationHandle(&back, (void *)va) == CUDA_ERROR_INVALID_VALUE,
                   "the handle of memory released while mapped");
            CHECK(cuMemUnmap(va, g));
        }
        CHECK(cuMemAddressFree(va, 4 * g));
        free(host);
        printf("OK vmm granularity %zu\n", g);
    } else if (!strcmp(mode, "vmm-ipc") || !strcmp(mode, "vmm-ipc-child")) {
        GET(cuMemAddressReserve, 10020);
        GET(cuMemAddressFree, 10020);
        GET(cuMemCreate, 10020);
        GET(cuMemRelease, 10020);
        GET(cuMemMap, 10020);
        GET(cuMemUnmap, 10020);
        GET(cuMemSetAccess, 10020);
        GET(cuMemGetAllocationGranularity, 10020);
        GET(cuMemExportToShareableHandle, 10020);
        GET(cuMemImportFromShareableHandle, 10020);
        CUmemAllocationProp prop;
        memset(&prop, 0, sizeof prop);
        prop.type = 1;
        prop.requestedHandleTypes = CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR;
        prop.location.type = 1;
        prop.location.id = dev;
        size_t g = 0;
        CHECK(cuMemGetAllocationGranularity(&g, &prop, 0));
        const unsigned n = (unsigned)(g / sizeof(float));
        float *host = malloc(g);
        CUmemGenericAllocationHandle h;
        int child = !strcmp(mode, "vmm-ipc-child");
        int fd = -1;
        if (child) {
            EXPECT(argc == 3, "usage: vmm-ipc-child FD");
            fd = atoi(argv[2]);
            CHECK(cuMemImportFromShareableHandle(&h, (void *)(long)fd, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR));
            close(fd);
        } else {
            CHECK(cuMemCreate(&h, g, &prop, 0));
        }
        CUdeviceptr va;
        CHECK(cuMemAddressReserve(&va, g, 0, 0, 0));
        CHECK(cuMemMap(va, g, 0, h, 0));
        CUmemAccessDesc access = {{1, dev}, 3};
        CHECK(cuMemSetAccess(va, g, &access, 1));
        if (child) {
            CHECK(cuMemcpyDtoH(host, va, g));
            for (unsigned i = 0; i < n; i++) EXPECT(host[i] == (float)(i % 1000), "imported[%u] = %g", i, host[i]);
            float three = 3.0f;
            int count = (int)n;
            void *args[] = {&va, &three, &count};
            CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
            CHECK(cuCtxSynchronize());
            printf("OK vmm-ipc-child\n");
        } else {
            for (unsigned i = 0; i < n; i++) host[i] = (float)(i % 1000);
            CHECK(cuMemcpyHtoD(va, host, g));
            /* Memory made without the handle type has no descriptor; other
             * handle types do not cross machines. */
            CUmemAllocationProp plain = prop;
            plain.requestedHandleTypes = 0;
            CUmemGenericAllocationHandle hp;
            CHECK(cuMemCreate(&hp, g, &plain, 0));
            int bad = -1;
            EXPECT(cuMemExportToShareableHandle(&bad, hp, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0) != CUDA_SUCCESS,
                   "memory made without a handle type was exported");
            CHECK(cuMemRelease(hp));
            char fabric[64];
            EXPECT(cuMemExportToShareableHandle(fabric, h, CU_MEM_HANDLE_TYPE_FABRIC, 0) != CUDA_SUCCESS,
                   "a fabric handle was exported");
            /* A descriptor of something else imports nothing. */
            int pipefd[2];
            EXPECT(pipe(pipefd) == 0, "pipe");
            CUmemGenericAllocationHandle junk;
            EXPECT(cuMemImportFromShareableHandle(&junk, (void *)(long)pipefd[0], CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR) !=
                       CUDA_SUCCESS,
                   "a pipe was imported as memory");
            close(pipefd[0]);
            close(pipefd[1]);
            CHECK(cuMemExportToShareableHandle(&fd, h, CU_MEM_HANDLE_TYPE_POSIX_FILE_DESCRIPTOR, 0));
            /* Handed to the child by inheritance. */
            EXPECT(fcntl(fd, F_SETFD, 0) == 0, "fcntl");
            char fdtext[16];
            snprintf(fdtext, sizeof fdtext, "%d", fd);
            char *args[] = {"driver_check", "vmm-ipc-child", fdtext, NULL};
            int status = run_self(args);
            EXPECT(status == 0, "the vmm-ipc child failed with status %d", status);
            close(fd);
            CHECK(cuMemcpyDtoH(host, va, g));
            for (unsigned i = 0; i < n; i++)
                EXPECT(host[i] == 3.0f * (float)(i % 1000), "after the child: [%u] = %g", i, host[i]);
            printf("OK vmm-ipc granularity %zu\n", g);
        }
        CHECK(cuMemUnmap(va, g));
        CHECK(cuMemRelease(h));
        CHECK(cuMemAddressFree(va, g));
        free(host);
    } else if (!strcmp(mode, "pool-ipc") || !strcmp(mode, "pool-ipc-child")) {
        /* A pool shared with another process as a file descriptor, and an
         * allocation of it by its export data, as cuda.core and RMM share
         * memory between processes. */
        typedef CUresult (*PFN_poolExport)(void *, CUmemoryPool, int, unsigned long long);
        typedef CUresult (*PFN_poolImport)(CUmemoryPool *, void *, int, unsigned long long);
        typedef CUresult (*PFN_ptrExport)(unsigned char *, CUdeviceptr);
        typedef CUresult (*PFN_ptrImport)(CUdeviceptr *, CUmemoryPool, unsigned char *);
        GET(cuMemAllocFromPoolAsync, 11020);
        GET(cuMemFreeAsync, 11020);
        GET(cuMemPoolCreate, 11020);
        GET(cuMemPoolDestroy, 11020);
        PFN_poolExport poolExport = (PFN_poolExport)sym("cuMemPoolExportToShareableHandle", 11020);
        PFN_poolImport poolImport = (PFN_poolImport)sym("cuMemPoolImportFromShareableHandle", 11020);
        PFN_ptrExport ptrExport = (PFN_ptrExport)sym("cuMemPoolExportPointer", 11020);
        PFN_ptrImport ptrImport = (PFN_ptrImport)sym("cuMemPoolImportPointer", 11020);
        const unsigned n = 65536;
        const size_t bytes = n * sizeof(float);
        float *host = malloc(bytes);
        CUstream s;
        CHECK(cuStreamCreate(&s, 1));
        unsigned char data[64];
        if (!strcmp(mode, "pool-ipc-child")) {
            EXPECT(argc == 4 && strlen(argv[3]) == 128, "usage: pool-ipc-child FD EXPORT-DATA");
            int fd = atoi(argv[2]);
            for (int i = 0; i < 64; i++) sscanf(argv[3] + 2 * i, "%2hhx", &data[i]);
            CUmemoryPool pool = NULL;
            CHECK(poolImport(&pool, (void *)(long)fd, 1, 0));
            close(fd);
            /* Nothing is allocated from an imported pool; export data that
             * names nothing imports nothing. */
            CUdeviceptr none = 0;
            EXPECT(cuMemAllocFromPoolAsync(&none, 4096, pool, s) != CUDA_SUCCESS, "allocated from an imported pool");
            unsigned char junk[64];
            memset(junk, 0x5a, sizeof junk);
            EXPECT(ptrImport(&none, pool, junk) != CUDA_SUCCESS, "junk export data was imported");
            CUdeviceptr p = 0;
            CHECK(ptrImport(&p, pool, data));
            CHECK(cuMemcpyDtoH(host, p, bytes));
            for (unsigned i = 0; i < n; i++) EXPECT(host[i] == (float)(i % 1000), "imported[%u] = %g", i, host[i]);
            float three = 3.0f;
            int count = (int)n;
            void *args[] = {&p, &three, &count};
            CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
            CHECK(cuMemFreeAsync(p, s));
            CHECK(cuStreamSynchronize(s));
            EXPECT(cuMemcpyDtoH(host, p, 4) != CUDA_SUCCESS, "freed imported memory was read");
            CHECK(cuMemPoolDestroy(pool));
            printf("OK pool-ipc-child\n");
        } else {
            CUmemPoolProps props;
            memset(&props, 0, sizeof props);
            props.allocType = 1;
            props.location.type = 1;
            props.location.id = dev;
            /* A pool made without the handle type, and memory not of an
             * exportable pool, export nothing. */
            CUmemoryPool plain = NULL;
            CHECK(cuMemPoolCreate(&plain, &props));
            int bad = -1;
            EXPECT(poolExport(&bad, plain, 1, 0) != CUDA_SUCCESS, "a pool made without a handle type was exported");
            CUdeviceptr q = 0;
            CHECK(cuMemAllocFromPoolAsync(&q, 4096, plain, s));
            EXPECT(ptrExport(data, q) != CUDA_SUCCESS, "memory of a plain pool was exported");
            CHECK(cuMemFreeAsync(q, s));
            CHECK(cuMemAlloc(&q, 4096));
            EXPECT(ptrExport(data, q) != CUDA_SUCCESS, "cuMemAlloc memory was exported as a pool's");
            CHECK(cuMemFree(q));
            CHECK(cuStreamSynchronize(s));
            CHECK(cuMemPoolDestroy(plain));
            /* A descriptor of something else imports no pool. */
            int pipefd[2];
            EXPECT(pipe(pipefd) == 0, "pipe");
            CUmemoryPool junk = NULL;
            EXPECT(poolImport(&junk, (void *)(long)pipefd[0], 1, 0) != CUDA_SUCCESS, "a pipe was imported as a pool");
            close(pipefd[0]);
            close(pipefd[1]);
            props.handleTypes = 1;
            CUmemoryPool pool = NULL;
            CHECK(cuMemPoolCreate(&pool, &props));
            CUdeviceptr p = 0;
            CHECK(cuMemAllocFromPoolAsync(&p, bytes, pool, s));
            for (unsigned i = 0; i < n; i++) host[i] = (float)(i % 1000);
            CHECK(cuMemcpyHtoDAsync(p, host, bytes, s));
            CHECK(cuStreamSynchronize(s));
            int fd = -1;
            CHECK(poolExport(&fd, pool, 1, 0));
            CHECK(ptrExport(data, p));
            /* Handed to the child by inheritance, the data as text. */
            EXPECT(fcntl(fd, F_SETFD, 0) == 0, "fcntl");
            char fdtext[16], hex[129];
            snprintf(fdtext, sizeof fdtext, "%d", fd);
            for (int i = 0; i < 64; i++) snprintf(hex + 2 * i, 3, "%02x", data[i]);
            char *args[] = {"driver_check", "pool-ipc-child", fdtext, hex, NULL};
            int status = run_self(args);
            EXPECT(status == 0, "the pool-ipc child failed with status %d", status);
            close(fd);
            CHECK(cuMemcpyDtoH(host, p, bytes));
            for (unsigned i = 0; i < n; i++)
                EXPECT(host[i] == 3.0f * (float)(i % 1000), "after the child: [%u] = %g", i, host[i]);
            CHECK(cuMemFreeAsync(p, s));
            CHECK(cuStreamSynchronize(s));
            CHECK(cuMemPoolDestroy(pool));
            printf("OK pool-ipc\n");
        }
        CHECK(cuStreamDestroy(s));
        free(host);
    } else if (!strcmp(mode, "hostnodes")) {
        GET(cuLaunchHostFunc, 10000);
        GET(cuGraphCreate, 10000);
        GET(cuGraphAddHostNode, 10000);
        GET(cuGraphAddMemsetNode, 10000);
        GET(cuGraphAddChildGraphNode, 10000);
        GET(cuGraphExecUpdate, 12000);
        const int n = 4096;
        size_t bytes = n * sizeof(float);
        CUdeviceptr d;
        CHECK(cuMemAlloc(&d, bytes));
        CUstream s;
        CHECK(cuStreamCreate(&s, 1));
        /* Captured: scale, count, scale, note the count; launched 5 times. */
        int notes = 0;
        float two = 2.0f;
        unsigned un = (unsigned)n;
        void *args[] = {&d, &two, &un};
        CHECK(cuStreamBeginCapture(s, 0));
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
        CHECK(cuLaunchHostFunc(s, host_count_fn, NULL));
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, s, args, NULL));
        CHECK(cuLaunchHostFunc(s, host_note_fn, &notes));
        CUgraph g;
        CHECK(cuStreamEndCapture(s, &g));
        EXPECT(host_count == 0, "a captured host function ran at capture");
        CUgraphExec gx;
        CHECK(cuGraphInstantiateWithFlags(&gx, g, 0));
        float *host = malloc(bytes);
        for (int i = 0; i < n; i++) host[i] = 1.0f;
        CHECK(cuMemcpyHtoD(d, host, bytes));
        for (int launch = 1; launch <= 5; launch++) {
            CHECK(cuGraphLaunch(gx, s));
            CHECK(cuStreamSynchronize(s));
            EXPECT(host_count == launch && notes == launch, "after launch %d: %d counts, %d notes", launch, host_count,
                   notes);
            EXPECT(host_seen[launch - 1] == launch, "launch %d's note saw %d counts", launch, host_seen[launch - 1]);
        }
        CHECK(cuMemcpyDtoH(host, d, bytes));
        for (int i = 0; i < n; i++) EXPECT(host[i] == 1024.0f, "after 5 launches [%d] = %f", i, host[i]);
        /* Built: a memset, then a host node; a child graph holding a host
         * node, copied in twice. Each launch counts three. */
        CUgraph b, child;
        CHECK(cuGraphCreate(&b, 0));
        CHECK(cuGraphCreate(&child, 0));
        CUDA_HOST_NODE_PARAMS count_params = {host_count_fn, NULL};
        CUDA_MEMSET_NODE_PARAMS ms = {d, 0, 0, 4, (size_t)n, 1};
        CUgraphNode set, counted, in_child, c1, c2;
        CHECK(cuGraphAddMemsetNode(&set, b, NULL, 0, &ms, ctx));
        CHECK(cuGraphAddHostNode(&counted, b, &set, 1, &count_params));
        CHECK(cuGraphAddHostNode(&in_child, child, NULL, 0, &count_params));
        CHECK(cuGraphAddChildGraphNode(&c1, b, &counted, 1, child));
        CHECK(cuGraphAddChildGraphNode(&c2, b, &c1, 1, child));
        CUgraphExec bx;
        CHECK(cuGraphInstantiateWithFlags(&bx, b, 0));
        int before = host_count;
        for (int launch = 0; launch < 3; launch++) CHECK(cuGraphLaunch(bx, s));
        CHECK(cuStreamSynchronize(s));
        EXPECT(host_count == before + 9, "3 launches of 3 host nodes counted %d", host_count - before);
        /* A host node's function, read back and changed in the executable
         * graph: the node notes instead of counting. */
        {
            GET(cuGraphHostNodeGetParams, 10000);
            GET(cuGraphExecHostNodeSetParams, 10020);
            CUDA_HOST_NODE_PARAMS got = {NULL, NULL};
            CHECK(cuGraphHostNodeGetParams(counted, &got));
            EXPECT(got.fn == host_count_fn && got.userData == NULL, "a host node's function read back wrong");
            int changed_notes = 0;
            CUDA_HOST_NODE_PARAMS noting = {host_note_fn, &changed_notes};
            CHECK(cuGraphExecHostNodeSetParams(bx, counted, &noting));
            int counted_before = host_count;
            CHECK(cuGraphLaunch(bx, s));
            CHECK(cuStreamSynchronize(s));
            EXPECT(changed_notes == 1 && host_count == counted_before + 2, "after the change: %d notes, %d counts",
                   changed_notes, host_count - counted_before);
            CHECK(cuGraphHostNodeGetParams(counted, &got));
            EXPECT(got.fn == host_count_fn, "the graph's own node changed with the executable's");
        }
        /* Synchronising waits for a host node that takes its time, and a
         * query while it runs says not ready. */
        CUgraph slow;
        CHECK(cuGraphCreate(&slow, 0));
        CUDA_HOST_NODE_PARAMS slow_params = {host_slow_fn, NULL};
        CUgraphNode slow_node;
        CHECK(cuGraphAddHostNode(&slow_node, slow, NULL, 0, &slow_params));
        CUgraphExec sx;
        CHECK(cuGraphInstantiateWithFlags(&sx, slow, 0));
        CHECK(cuGraphLaunch(sx, s));
        CUresult q = cuStreamQuery(s);
        EXPECT(q == CUDA_ERROR_NOT_READY, "a query while a host node runs gave %d", q);
        CHECK(cuStreamSynchronize(s));
        EXPECT(host_slow_done == 1, "the stream synchronised before its host node returned");
        /* An update from a graph of the same shape runs the new graph's
         * function: the notes count again. */
        CUgraph b2;
        CHECK(cuGraphCreate(&b2, 0));
        CUDA_HOST_NODE_PARAMS note_params = {host_note_fn, &notes};
        CUgraphNode n1;
        CHECK(cuGraphAddHostNode(&n1, b2, NULL, 0, &note_params));
        CUgraphExecUpdateResultInfo info;
        CHECK(cuGraphExecUpdate(sx, b2, &info));
        int notes_before = notes;
        CHECK(cuGraphLaunch(sx, s));
        CHECK(cuStreamSynchronize(s));
        EXPECT(notes == notes_before + 1, "the updated graph's host node ran %d times", notes - notes_before);
        CHECK(cuGraphExecDestroy(sx));
        CHECK(cuGraphExecDestroy(bx));
        CHECK(cuGraphExecDestroy(gx));
        CHECK(cuGraphDestroy(b2));
        CHECK(cuGraphDestroy(slow));
        CHECK(cuGraphDestroy(child));
        CHECK(cuGraphDestroy(b));
        CHECK(cuGraphDestroy(g));
        CHECK(cuStreamDestroy(s));
        CHECK(cuMemFree(d));
        free(host);
        printf("OK hostnodes counted=%d\n", host_count);
    } else if (!strcmp(mode, "ipc") || !strcmp(mode, "ipc-hold")) {
        GET(cuIpcGetMemHandle, 4010);
        GET(cuIpcOpenMemHandle, 11000);
        GET(cuIpcGetEventHandle, 4010);
        const int n = 4096;
        size_t bytes = n * sizeof(float);
        float *host = malloc(bytes);
        for (int i = 0; i < n; i++) host[i] = (float)i;
        CUdeviceptr d;
        CHECK(cuMemAlloc(&d, bytes));
        CHECK(cuMemcpyHtoD(d, host, bytes));
        float two = 2.0f;
        unsigned un = (unsigned)n;
        void *args[] = {&d, &two, &un};
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CUipcMemHandle mh, again;
        CHECK(cuIpcGetMemHandle(&mh, d));
        CHECK(cuIpcGetMemHandle(&again, d));
        char mhex[129], ehex[129];
        to_hex(&mh, sizeof mh, mhex);
        if (!strcmp(mode, "ipc-hold")) {
            CHECK(cuCtxSynchronize());
            printf("HANDLE %s\nHOLDING\n", mhex);
            fflush(stdout);
            for (;;) pause();
        }
        /* A process cannot open its own handle; an event that is not
         * interprocess has no handle. */
        CUdeviceptr own = 0;
        CUresult r = cuIpcOpenMemHandle(&own, mh, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS);
        EXPECT(r != CUDA_SUCCESS, "a process opened its own IPC handle");
        CUevent plain, shared;
        CUipcEventHandle eh;
        CHECK(cuEventCreate(&plain, CU_EVENT_DISABLE_TIMING));
        r = cuIpcGetEventHandle(&eh, plain);
        EXPECT(r != CUDA_SUCCESS, "an event that is not interprocess got a handle");
        CHECK(cuEventDestroy(plain));
        r = cuIpcGetMemHandle(&again, d + bytes);
        EXPECT(r != CUDA_SUCCESS, "a handle for memory past the allocation");
        CHECK(cuEventCreate(&shared, CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS));
        CHECK(cuEventRecord(shared, NULL));
        CHECK(cuIpcGetEventHandle(&eh, shared));
        to_hex(&eh, sizeof eh, ehex);
        char count[16];
        snprintf(count, sizeof count, "%d", n);
        char *child[] = {"driver_check", "ipc-child", mhex, ehex, count, NULL};
        int status = run_self(child);
        EXPECT(status == 0, "the ipc child failed with status %d", status);
        /* The child doubled it again through the opened memory. */
        CHECK(cuMemcpyDtoH(host, d, bytes));
        for (int i = 0; i < n; i++) EXPECT(host[i] == 4.0f * i, "after the child: [%d] = %f", i, host[i]);
        /* Freed memory's handle opens nothing. */
        CHECK(cuMemFree(d));
        char *gone[] = {"driver_check", "ipc-gone", mhex, NULL};
        status = run_self(gone);
        EXPECT(status == 0, "the ipc-gone child failed with status %d", status);
        CHECK(cuEventDestroy(shared));
        free(host);
        printf("OK ipc: memory and an event shared with another process\n");
    } else if (!strcmp(mode, "ipc-late")) {
        /* The last work before the program waits for another process with
         * no further CUDA call: a kernel and an interprocess event's record
         * are its last requests, and the child waits for that event and
         * reads what the kernel wrote. Through gpupool with streamed
         * requests held back, they must still go out. */
        GET(cuIpcGetMemHandle, 4010);
        GET(cuIpcGetEventHandle, 4010);
        const int n = 4096;
        size_t bytes = n * sizeof(float);
        float *host = malloc(bytes);
        for (int i = 0; i < n; i++) host[i] = (float)i;
        CUdeviceptr d;
        CHECK(cuMemAlloc(&d, bytes));
        CHECK(cuMemcpyHtoD(d, host, bytes));
        CUipcMemHandle mh;
        CUipcEventHandle eh;
        CUevent shared;
        CHECK(cuIpcGetMemHandle(&mh, d));
        CHECK(cuEventCreate(&shared, CU_EVENT_DISABLE_TIMING | CU_EVENT_INTERPROCESS));
        CHECK(cuIpcGetEventHandle(&eh, shared));
        char mhex[129], ehex[129], count[16];
        to_hex(&mh, sizeof mh, mhex);
        to_hex(&eh, sizeof eh, ehex);
        snprintf(count, sizeof count, "%d", n);
        float two = 2.0f;
        unsigned un = (unsigned)n;
        void *args[] = {&d, &two, &un};
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CHECK(cuEventRecord(shared, NULL));
        char *child[] = {"driver_check", "ipc-child", mhex, ehex, count, NULL};
        int status = run_self(child);
        EXPECT(status == 0, "the child, waiting for this process's last work, failed with status %d", status);
        CHECK(cuMemcpyDtoH(host, d, bytes));
        for (int i = 0; i < n; i++) EXPECT(host[i] == 4.0f * i, "after the child: [%d] = %f", i, host[i]);
        CHECK(cuEventDestroy(shared));
        CHECK(cuMemFree(d));
        free(host);
        printf("OK ipc-late: the last work before a wait without calls went out\n");
    } else if (!strcmp(mode, "ipc-child")) {
        GET(cuIpcOpenMemHandle, 11000);
        GET(cuIpcCloseMemHandle, 4010);
        GET(cuIpcOpenEventHandle, 4010);
        GET(cuEventQuery, 2000);
        GET(cuMemGetAddressRange, 3020);
        EXPECT(argc == 5, "usage: ipc-child MEMHEX EVENTHEX N");
        CUipcMemHandle mh;
        CUipcEventHandle eh;
        EXPECT(from_hex(argv[2], &mh, sizeof mh) == 0 && from_hex(argv[3], &eh, sizeof eh) == 0, "bad handles");
        int n = atoi(argv[4]);
        size_t bytes = n * sizeof(float);
        /* The exporter's event: wait for it, then its work is done. */
        CUevent e;
        CHECK(cuIpcOpenEventHandle(&e, eh));
        CHECK(cuStreamWaitEvent(NULL, e, 0));
        CHECK(cuEventSynchronize(e));
        CHECK(cuEventQuery(e));
        CUdeviceptr p, p2;
        CHECK(cuIpcOpenMemHandle(&p, mh, CU_IPC_MEM_LAZY_ENABLE_PEER_ACCESS));
        CUdeviceptr base = 0;
        size_t size = 0;
        CHECK(cuMemGetAddressRange(&base, &size, p + 8));
        EXPECT(base == p && size >= bytes, "opened range %llx+%zu for %llx", (unsigned long long)base, size,
               (unsigned long long)p);
        float *host = malloc(bytes);
        CHECK(cuMemcpyDtoH(host, p, bytes));
        for (int i = 0; i < n; i++) EXPECT(host[i] == 2.0f * i, "opened [%d] = %f", i, host[i]);
        /* A second open of the handle is the same memory, closed once each. */
        CHECK(cuIpcOpenMemHandle(&p2, mh, 0));
        EXPECT(p2 == p, "a second open mapped %llx, not %llx", (unsigned long long)p2, (unsigned long long)p);
        CHECK(cuIpcCloseMemHandle(p2));
        float two = 2.0f;
        unsigned un = (unsigned)n;
        void *args[] = {&p, &two, &un};
        CHECK(cuLaunchKernel(scale, (n + 255) / 256, 1, 1, 256, 1, 1, 0, NULL, args, NULL));
        CHECK(cuCtxSynchronize());
        /* Opened memory is not freed, it is closed; once closed, it is gone. */
        EXPECT(cuMemFree(p) != CUDA_SUCCESS, "cuMemFree of opened memory succeeded");
        CHECK(cuIpcCloseMemHandle(p));
        EXPECT(cuMemcpyDtoH(host, p, 4) != CUDA_SUCCESS, "a copy from closed memory succeeded");
        EXPECT(cuIpcCloseMemHandle(p) != CUDA_SUCCESS, "closed twice");
        /* Bytes no driver made open nothing. */
        CUipcMemHandle junk;
        memset(&junk, 0x5a, sizeof junk);
        EXPECT(cuIpcOpenMemHandle(&p2, junk, 0) != CUDA_SUCCESS, "a made-up handle opened");
        CHECK(cuEventDestroy(e));
        free(host);
        printf("OK ipc-child\n");
    } else if (!strcmp(mode, "ipc-gone")) {
        GET(cuIpcOpenMemHandle, 11000);
        CUipcMemHandle mh;
        EXPECT(argc == 3 && from_hex(argv[2], &mh, sizeof mh) == 0, "usage: ipc-gone MEMHEX");
        CUdeviceptr p = 0;
        CUresult r = cuIpcOpenMemHandle(&p, mh, 0);
        EXPECT(r != CUDA_SUCCESS, "the handle of freed memory opened at %llx", (unsigned long long)p);
        fprintf(stderr, "freed memory's handle: %d\n", r);
        printf("OK ipc-gone\n");
    } else if (!strcmp(mode, "ipc-refused")) {
        GET(cuIpcOpenMemHandle, 11000);
        CUipcMemHandle mh;
        EXPECT(argc == 4 && from_hex(argv[2], &mh, sizeof mh) == 0, "usage: ipc-refused MEMHEX CODE");
        CUdeviceptr p = 0;
        CUresult r = cuIpcOpenMemHandle(&p, mh, 0);
        EXPECT(r == (CUresult)atoi(argv[3]), "opening gave %d, not %s", r, argv[3]);
        printf("OK ipc-refused %d\n", r);
    } else if (!strcmp(mode, "hold")) {
        size_t mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 8;
        CUdeviceptr p1, p2;
        CHECK(cuMemAlloc(&p1, mib << 20));
        CHECK(cuMemAlloc(&p2, 4096));
        CHECK(cuCtxSynchronize());
        printf("HOLDING %zu\n", (mib << 20) + 4096);
        fflush(stdout);
        for (;;) pause();
    } else if (!strcmp(mode, "outlive")) {
        /* The server goes while the program holds a session: told on
         * standard input, the program's calls then fail with an error, at
         * once, and it exits normally. */
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, 1 << 20));
        CHECK(cuCtxSynchronize());
        printf("HOLDING\n");
        fflush(stdout);
        char line[16];
        if (!fgets(line, sizeof line, stdin)) return 1;
        double start = now_us();
        static unsigned char host[1 << 20];
        CUresult copy = cuMemcpyHtoDAsync(p, host, sizeof host, NULL);
        CUresult sync = cuCtxSynchronize();
        CUdeviceptr q = 0;
        CUresult alloc = cuMemAlloc(&q, 4096);
        CUresult copy2 = cuMemcpyDtoH(host, p, 4096);
        printf("AFTER copy=%d sync=%d alloc=%d copy2=%d in %.0f ms\n", copy, sync, alloc, copy2, (now_us() - start) / 1000);
        return 0;
    } else if (!strcmp(mode, "unsupported")) {
        PFN_cuMipmappedArrayCreate mipmapped = (PFN_cuMipmappedArrayCreate)sym("cuMipmappedArrayCreate", 5000);
        CUresult r = mipmapped(NULL, NULL, 1);
        EXPECT(r == CUDA_ERROR_NOT_SUPPORTED, "cuMipmappedArrayCreate returned %d", r);
        printf("OK unsupported call refused\n");
    } else if (!strcmp(mode, "ctx-sync-idle")) {
        /* Context synchronises with nothing given to the context since the
         * last one: answered without the server (the call report counts
         * the round trips); work, and a kernel's fault, are still waited
         * for and told. */
        GET(cuMemsetD32Async, 3020);
        CHECK(cuCtxSynchronize());
        CHECK(cuCtxSynchronize());
        CHECK(cuCtxSynchronize());
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, 4096));
        CHECK(cuMemsetD32Async(p, 7, 1024, NULL));
        CHECK(cuCtxSynchronize());
        CHECK(cuCtxSynchronize());
        unsigned got = 0;
        CHECK(cuMemcpyDtoH(&got, p + 4092, 4));
        EXPECT(got == 7, "the memset before the synchronise left %u", got);
        void *args[] = {&p};
        CHECK(cuLaunchKernel(fault, 1, 1, 1, 1, 1, 1, 0, NULL, args, NULL));
        CUresult first = cuCtxSynchronize(), second = cuCtxSynchronize();
        EXPECT(first == CUDA_ERROR_ILLEGAL_ADDRESS && second == CUDA_ERROR_ILLEGAL_ADDRESS,
               "synchronises after a fault returned %d and %d", first, second);
        printf("OK ctx-sync-idle\n");
        return 0;
    } else if (!strcmp(mode, "sync-threads")) {
        /* A stream waits for a word that another thread writes later. Each
         * kind of synchronise must wait for that write, while the other
         * thread's own calls (copies, a query of the waiting stream) are
         * answered meanwhile, as a GPU's driver serves each thread. */
        GET(cuStreamWriteValue32, 11070);
        GET(cuStreamWaitValue32, 11070);
        GET(cuEventQuery, 2000);
        CUstream waiting;
        CHECK(cuStreamCreate(&waiting, 1 /* CU_STREAM_NON_BLOCKING */));
        CUdeviceptr flag, scratch;
        CHECK(cuMemAlloc(&flag, 4));
        CHECK(cuMemAlloc(&scratch, 4096));
        CHECK(cuMemsetD32(flag, 0, 1));
        CUevent e;
        CHECK(cuEventCreate(&e, 0x2));
        /* Round 4 copies back behind the wait: its data, and the
         * synchronise after it, wait for the write. */
        enum { BACK = 3 << 20 };
        unsigned char *pattern = malloc(BACK), *back;
        CHECK(cuMemAllocHost((void **)&back, BACK));
        for (int i = 0; i < BACK; i++) pattern[i] = (unsigned char)(i * 7 + 1);
        CUdeviceptr src;
        CHECK(cuMemAlloc(&src, BACK));
        CHECK(cuMemcpyHtoD(src, pattern, BACK));
        memset(back, 0, BACK);
        const char *kinds[4] = {"stream", "event", "context", "copy's stream"};
        for (unsigned round = 1; round <= 4; round++) {
            CHECK(cuStreamWaitValue32(waiting, flag, round, CU_STREAM_WAIT_VALUE_GEQ));
            if (round == 4) CHECK(cuMemcpyDtoHAsync(back, src, BACK, waiting));
            CHECK(cuEventRecord(e, waiting));
            CUresult q = cuStreamQuery(waiting);
            EXPECT(q == CUDA_ERROR_NOT_READY, "a stream behind an unmet wait answered %d to a query", q);
            q = cuEventQuery(e);
            EXPECT(q == CUDA_ERROR_NOT_READY, "an event behind an unmet wait answered %d to a query", q);
            struct sync_helper h = {
                .ctx = ctx,
                .waiting = waiting,
                .flag = flag,
                .scratch = scratch,
                .value = round,
                .setCurrent = cuCtxSetCurrent,
                .streamCreate = cuStreamCreate,
                .streamDestroy = cuStreamDestroy,
                .streamQuery = cuStreamQuery,
                .streamSync = cuStreamSynchronize,
                .htodAsync = cuMemcpyHtoDAsync,
                .dtohAsync = cuMemcpyDtoHAsync,
                .eventCreate = cuEventCreate,
                .eventDestroy = cuEventDestroy,
                .writeValue = cuStreamWriteValue32,
            };
            pthread_t helper;
            EXPECT(pthread_create(&helper, NULL, sync_helper_run, &h) == 0, "pthread_create");
            if (round == 1 || round == 4) CHECK(cuStreamSynchronize(waiting));
            if (round == 2) CHECK(cuEventSynchronize(e));
            if (round == 3) CHECK(cuCtxSynchronize());
            EXPECT(__atomic_load_n(&h.done, __ATOMIC_SEQ_CST) == 1,
                   "a %s synchronise returned before the write its stream waits for", kinds[round - 1]);
            pthread_join(helper, NULL);
            CHECK(cuStreamQuery(waiting));
            CHECK(cuEventQuery(e));
        }
        EXPECT(!memcmp(back, pattern, BACK), "the copy back behind the wait brought the wrong bytes");
        CHECK(cuMemFreeHost(back));
        CHECK(cuMemFree(src));
        free(pattern);
        CHECK(cuEventDestroy(e));
        CHECK(cuStreamDestroy(waiting));
        CHECK(cuMemFree(scratch));
        CHECK(cuMemFree(flag));
        printf("OK sync-threads\n");
    } else if (!strcmp(mode, "threads")) {
        enum { THREADS = 6 };
        pthread_t tid[THREADS];
        struct threads_arg args[THREADS];
        for (int t = 0; t < THREADS; t++) {
            args[t] = (struct threads_arg){
                .id = t,
                .ctx = ctx,
                .scale = scale,
                .setCurrent = cuCtxSetCurrent,
                .ctxSync = cuCtxSynchronize,
                .alloc = cuMemAlloc,
                .free_ = cuMemFree,
                .htod = cuMemcpyHtoD,
                .dtoh = cuMemcpyDtoH,
                .htodAsync = cuMemcpyHtoDAsync,
                .dtohAsync = cuMemcpyDtoHAsync,
                .streamCreate = cuStreamCreate,
                .streamDestroy = cuStreamDestroy,
                .streamQuery = cuStreamQuery,
                .launch = cuLaunchKernel,
            };
            EXPECT(pthread_create(&tid[t], NULL, threads_body, &args[t]) == 0, "pthread_create");
        }
        int failed = 0;
        for (int t = 0; t < THREADS; t++) {
            pthread_join(tid[t], NULL);
            failed |= args[t].failed;
        }
        EXPECT(!failed, "a thread failed");
        printf("OK %d threads, 150 rounds each, every result checked\n", THREADS);
    } else if (!strcmp(mode, "bench") || !strcmp(mode, "latency")) {
        int iters = argc > 2 ? atoi(argv[2]) : 2000;
        int with_launches = !strcmp(mode, "bench");
        CUdeviceptr p;
        static char buf[4];
        CHECK(cuMemAlloc(&p, 1 << 20));
        double *lat = malloc(sizeof(double) * iters);
        /* A stream synchronise: a context's with nothing given to it since
         * the last is answered in the shim. */
        for (int i = 0; i < iters; i++) {
            double t0 = now_us();
            CHECK(cuStreamSynchronize(NULL));
            lat[i] = now_us() - t0;
        }
        qsort(lat, iters, sizeof(double), cmp_double);
        printf("BENCH sync_roundtrip_us p50=%.1f p99=%.1f\n", lat[iters / 2], lat[iters * 99 / 100]);
        for (int i = 0; i < iters; i++) {
            double t0 = now_us();
            CHECK(cuMemcpyDtoH(buf, p, 4));
            lat[i] = now_us() - t0;
        }
        qsort(lat, iters, sizeof(double), cmp_double);
        printf("BENCH dtoh4_us p50=%.1f p99=%.1f\n", lat[iters / 2], lat[iters * 99 / 100]);
        {
            /* A host function on an idle stream: enqueue to its run. */
            GET(cuLaunchHostFunc, 10000);
            GET(cuMemAllocAsync, 11020);
            GET(cuMemFreeAsync, 11020);
            CUstream hs;
            CHECK(cuStreamCreate(&hs, 1));
            for (int i = 0; i < iters; i++) {
                int before = cb_done();
                double t0 = now_us();
                CHECK(cuLaunchHostFunc(hs, cb_record, NULL));
                EXPECT(cb_wait_count(before + 1, 20), "host function %d did not run", i);
                lat[i] = now_us() - t0;
            }
            qsort(lat, iters, sizeof(double), cmp_double);
            printf("BENCH hostfn_us p50=%.1f p99=%.1f\n", lat[iters / 2], lat[iters * 99 / 100]);
            /* A stream-ordered allocation and its free. */
            for (int i = 0; i < iters; i++) {
                CUdeviceptr q;
                double t0 = now_us();
                CHECK(cuMemAllocAsync(&q, 4096, hs));
                CHECK(cuMemFreeAsync(q, hs));
                lat[i] = now_us() - t0;
            }
            CHECK(cuStreamSynchronize(hs));
            CHECK(cuStreamDestroy(hs));
            qsort(lat, iters, sizeof(double), cmp_double);
            printf("BENCH alloc_async_us p50=%.1f p99=%.1f\n", lat[iters / 2], lat[iters * 99 / 100]);
        }
        {
            /* Managed memory against explicit copies of the same size: a
             * host read of device-held memory (one fault that fetches
             * 1 MiB) against a 1 MiB device-to-host copy, and a launch
             * after the host wrote 1 MiB (written back first) against a
             * 1 MiB host-to-device copy. */
            GET(cuMemAllocManaged, 6000);
            int rounds = iters < 200 ? iters : 200;
            const size_t mib = 1 << 20;
            CUdeviceptr m;
            CHECK(cuMemAllocManaged(&m, 16 * mib, CU_MEM_ATTACH_GLOBAL));
            volatile unsigned char *hm = (volatile unsigned char *)(uintptr_t)m;
            unsigned char *big = malloc(mib);
            memset(big, 3, mib);
            for (int i = 0; i < rounds; i++) {
                /* A launch gives every block back to the device. */
                CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
                CHECK(cuCtxSynchronize());
                size_t at = (size_t)(i % 16) * mib;
                double t0 = now_us();
                (void)hm[at];
                lat[i] = now_us() - t0;
            }
            qsort(lat, rounds, sizeof(double), cmp_double);
            printf("BENCH managed_read_1mib_us p50=%.1f p99=%.1f\n", lat[rounds / 2], lat[rounds * 99 / 100]);
            for (int i = 0; i < rounds; i++) {
                double t0 = now_us();
                CHECK(cuMemcpyDtoH(big, p, mib));
                lat[i] = now_us() - t0;
            }
            qsort(lat, rounds, sizeof(double), cmp_double);
            printf("BENCH dtoh_1mib_us p50=%.1f p99=%.1f\n", lat[rounds / 2], lat[rounds * 99 / 100]);
            for (int i = 0; i < rounds; i++) {
                CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
                CHECK(cuCtxSynchronize());
                size_t at = (size_t)(i % 16) * mib;
                for (size_t b = 0; b < mib; b += 64 << 10) hm[at + b] = (unsigned char)i;
                double t0 = now_us();
                CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
                lat[i] = now_us() - t0;
            }
            qsort(lat, rounds, sizeof(double), cmp_double);
            printf("BENCH managed_writeback_1mib_us p50=%.1f p99=%.1f\n", lat[rounds / 2], lat[rounds * 99 / 100]);
            for (int i = 0; i < rounds; i++) {
                double t0 = now_us();
                CHECK(cuMemcpyHtoD(p, big, mib));
                lat[i] = now_us() - t0;
            }
            qsort(lat, rounds, sizeof(double), cmp_double);
            printf("BENCH htod_1mib_us p50=%.1f p99=%.1f\n", lat[rounds / 2], lat[rounds * 99 / 100]);
            CHECK(cuCtxSynchronize());
            CHECK(cuMemFree(m));
            free(big);
        }
        if (with_launches) {
            int launches = iters * 20;
            double t0 = now_us();
            for (int i = 0; i < launches; i++)
                CHECK(cuLaunchKernel(null_kernel, 1, 1, 1, 32, 1, 1, 0, NULL, NULL, NULL));
            CHECK(cuCtxSynchronize());
            double el = now_us() - t0;
            printf("BENCH launches_per_s %.0f\n", launches / (el / 1e6));
        }
        CHECK(cuMemFree(p));
    } else if (!strcmp(mode, "bw")) {
        size_t max_mib = argc > 2 ? strtoul(argv[2], NULL, 10) : 256;
        size_t max = max_mib << 20;
        unsigned char *host = malloc(max);
        memset(host, 1, max);
        CUdeviceptr p;
        CHECK(cuMemAlloc(&p, max));
        /* Untimed first touch: a GPU's memory is backed when it is
         * allocated, a host-memory driver's (the software driver) only when
         * it is first written, which would be timed as transfer. */
        CHECK(cuMemcpyHtoD(p, host, max));
        CHECK(cuMemcpyDtoH(host, p, max));
        for (size_t size = 4096; size <= max; size *= 4) {
            int reps = (int)((256u << 20) / size);
            if (reps < 3) reps = 3;
            if (reps > 2000) reps = 2000;
            double t0 = now_us();
            for (int i = 0; i < reps; i++) CHECK(cuMemcpyHtoD(p, host, size));
            double h2d = now_us() - t0;
            t0 = now_us();
            for (int i = 0; i < reps; i++) CHECK(cuMemcpyDtoH(host, p, size));
            double d2h = now_us() - t0;
            printf("BENCH bw size=%zu htod_MBps=%.1f dtoh_MBps=%.1f\n", size, size * reps / h2d, size * reps / d2h);
            if (size * 4 > max && size != max) size = max / 4;
        }
        CHECK(cuMemFree(p));
    } else {
        fprintf(stderr, "unknown mode %s\n", mode);
        return 2;
    }
    CHECK(cuModuleUnload(mod));
    CHECK(cuDevicePrimaryCtxRelease(dev));
    return 0;
}
