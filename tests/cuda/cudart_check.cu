// An ordinary CUDA runtime program, built by nvcc with static or shared
// cudart, for gpupool's tests: it must run unmodified through the shim. Its
// kernels carry the names gpupool's software driver knows (as C++ names,
// mangled by nvcc), so the same program runs on the software driver and on
// a GPU. Every result is checked against values computed here.
//
//   cudart_check          allocations, copies, kernels, streams, events
//   cudart_check fault    a faulting kernel: error 700 at the next synchronise
//   cudart_check assert   a failed device-side assert: its message on
//                         standard error at the next synchronise, between
//                         this program's own lines there, and error 710
//   cudart_check ipc      memory and an event shared with a second process
//                         (this program again, `ipc-child`) through cudaIpc*
//   cudart_check conditional
//                         graphs with if/else, while and switch nodes whose
//                         condition kernels set (cudaGraphSetConditional),
//                         one put into a stream capture by hand (as
//                         PyTorch's torch.cond does), and kernel nodes
//                         joined by programmatic edges
//   cudart_check graphedit
//                         graphs changed after they are built: nodes'
//                         parameters read back and set, nodes and edges
//                         removed, clones (with host nodes), kernel node
//                         attributes, an executable graph's flags
//   cudart_check printf   a kernel's printf output, on this program's
//                         standard output at the next synchronisation,
//                         among its own lines
//   cudart_check green    (CUDA 13.1 runtimes and later) a green context
//                         of 16 SMs split from the device (cudaGreenCtxCreate,
//                         an execution context), a kernel on a stream of its
//                         own, its events, resource and synchronisation
#include <cassert>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <cuda_runtime.h>

#include "check.h"
#include <sys/wait.h>
#include <unistd.h>

// `__managed__` variables: cudart maps them at start-up, before main.
__managed__ float m_table[3000];
__managed__ int m_count = 11;

__global__ void gp_vector_add(const float *a, const float *b, float *c, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) c[i] = a[i] + b[i];
}

__global__ void gp_scale(float *x, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] *= s;
}

// One thread per texel: the texel at (x, y), point-sampled at its centre.
__global__ void gp_tex_read(float *out, cudaTextureObject_t tex, int w, int h) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < w * h) out[i] = tex2D<float>(tex, (float)(i % w) + 0.5f, (float)(i / w) + 0.5f);
}

// One thread per element: scale a float surface in place (x in bytes).
__global__ void gp_surf_scale(cudaSurfaceObject_t surf, float s, int w, int h) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < w * h) {
        int x = (i % w) * 4, y = i / w;
        float v = surf2Dread<float>(surf, x, y);
        surf2Dwrite(v * s, surf, x, y);
    }
}

__global__ void gp_fill_u32(unsigned *p, unsigned v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] = v;
}

// Conditional nodes' kernels: the condition is the value at v; a countdown
// that keeps a while node going until the counter reaches zero.
__global__ void gp_set_condition(cudaGraphConditionalHandle h, const unsigned *v) {
    if (threadIdx.x == 0 && blockIdx.x == 0) cudaGraphSetConditional(h, *v);
}

__global__ void gp_countdown(cudaGraphConditionalHandle h, int *counter) {
    if (threadIdx.x == 0 && blockIdx.x == 0) {
        int left = *counter - 1;
        *counter = left;
        cudaGraphSetConditional(h, left > 0);
    }
}

__global__ void gp_fault(unsigned *p) {
    *(volatile unsigned *)(p - (1ull << 40)) = 1;
}

// Host functions note what they saw; they run on a thread of the driver's.
static float seen_first = -1, seen_last = -1;
static int host_calls, stream_callbacks;
struct Seen {
    const float *p;
    int n;
};

static void read_back(void *arg) {
    Seen *s = (Seen *)arg;
    seen_first = s->p[0];
    seen_last = s->p[s->n - 1];
    host_calls++;
}

static int graph_host_calls;
static void count_graph_host(void *) { graph_host_calls++; }

static void CUDART_CB stream_callback(cudaStream_t, cudaError_t status, void *arg) {
    if (status == cudaSuccess) stream_callbacks += *(int *)arg;
}

static int fault() {
    unsigned *p;
    CHECK(cudaMalloc(&p, 256));
    gp_fault<<<1, 1>>>(p);
    cudaError_t launch = cudaGetLastError();
    EXPECT(launch == cudaSuccess, "launch itself failed: %d", (int)launch);
    cudaError_t e = cudaDeviceSynchronize();
    EXPECT(e == cudaErrorIllegalAddress, "synchronise after a fault gave %d (%s)", (int)e, cudaGetErrorString(e));
    e = cudaDeviceSynchronize();
    EXPECT(e == cudaErrorIllegalAddress, "the fault is not sticky: %d", (int)e);
    printf("OK fault\n");
    return 0;
}

__global__ void gp_assert(const int *v, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) assert(v[i] != 0);
}

// A failed device-side assert: its message on standard error at the
// synchronisation, cudaErrorAssert then and after.
static int device_assert() {
    const int n = 4, host[n] = {1, 1, 0, 1};
    int *v;
    CHECK(cudaMalloc(&v, sizeof host));
    CHECK(cudaMemcpy(v, host, sizeof host, cudaMemcpyHostToDevice));
    fprintf(stderr, "before the kernel\n");
    gp_assert<<<1, n>>>(v, n);
    CHECK(cudaGetLastError());
    cudaError_t e = cudaDeviceSynchronize();
    EXPECT(e == cudaErrorAssert, "synchronise after a failed assert gave %d (%s)", (int)e, cudaGetErrorString(e));
    fprintf(stderr, "after the synchronisation\n");
    e = cudaMemcpy((void *)host, v, sizeof host, cudaMemcpyDeviceToHost);
    EXPECT(e == cudaErrorAssert, "the failed assert is not sticky: %d", (int)e);
    printf("OK assert\n");
    return 0;
}

static void to_hex(const void *bytes, size_t n, char *out) {
    const unsigned char *b = (const unsigned char *)bytes;
    for (size_t i = 0; i < n; i++) sprintf(out + 2 * i, "%02x", b[i]);
}

static bool from_hex(const char *text, void *bytes, size_t n) {
    unsigned char *b = (unsigned char *)bytes;
    if (strlen(text) != 2 * n) return false;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        if (sscanf(text + 2 * i, "%2x", &v) != 1) return false;
        b[i] = (unsigned char)v;
    }
    return true;
}

// A kernel node of `g` after `deps` (NULL for none) running `func` on one
// block of `threads` threads.
static cudaError_t kernel_node(cudaGraphNode_t *node, cudaGraph_t g, const cudaGraphNode_t *dep, void *func,
                               unsigned threads, void **args) {
    cudaKernelNodeParams kp = {};
    kp.func = func;
    kp.gridDim = dim3(1);
    kp.blockDim = dim3(threads);
    kp.kernelParams = args;
    return cudaGraphAddKernelNode(node, g, dep, dep ? 1 : 0, &kp);
}

// A conditional node of `g` after `dep`; its bodies in `bodies`.
static cudaError_t conditional_node(cudaGraphNode_t *node, cudaGraph_t g, cudaGraphNode_t dep,
                                    cudaGraphConditionalHandle h, cudaGraphConditionalNodeType type, unsigned size,
                                    cudaGraph_t *bodies) {
    cudaGraphNodeParams cp = {};
    cp.type = cudaGraphNodeTypeConditional;
    cp.conditional.handle = h;
    cp.conditional.type = type;
    cp.conditional.size = size;
    cudaError_t e = cudaGraphAddNode(node, g, &dep, NULL, 1, &cp);
    if (e == cudaSuccess)
        for (unsigned i = 0; i < size; i++) bodies[i] = cp.conditional.phGraph_out[i];
    return e;
}

static int read_u32(const unsigned *d, unsigned *out, int n) {
    CHECK(cudaMemcpy(out, d, n * sizeof(unsigned), cudaMemcpyDeviceToHost));
    return 0;
}

// If/else, while and switch nodes, their conditions set by kernels on the
// device; a body filled by stream capture; a body's destruction refused.
static int conditional() {
    const int n = 256;
    unsigned *flag, *out, host[n];
    int *counter;
    float *x;
    CHECK(cudaMalloc(&flag, sizeof(unsigned)));
    CHECK(cudaMalloc(&out, n * sizeof(unsigned)));
    CHECK(cudaMalloc(&counter, sizeof(int)));
    CHECK(cudaMalloc(&x, n * sizeof(float)));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    int count = n;

    // if/else: body 0 writes 1 where the flag is non-zero, body 1 writes 2.
    {
        cudaGraph_t g, bodies[2];
        CHECK(cudaGraphCreate(&g, 0));
        cudaGraphConditionalHandle h;
        CHECK(cudaGraphConditionalHandleCreate(&h, g, 0, 0));
        cudaGraphNode_t set, cond, then_fill, else_fill;
        void *set_args[] = {&h, &flag};
        CHECK(kernel_node(&set, g, NULL, (void *)gp_set_condition, 32, set_args));
        CHECK(conditional_node(&cond, g, set, h, cudaGraphCondTypeIf, 2, bodies));
        unsigned one = 1, two = 2;
        void *then_args[] = {&out, &one, &count}, *else_args[] = {&out, &two, &count};
        CHECK(kernel_node(&then_fill, bodies[0], NULL, (void *)gp_fill_u32, n, then_args));
        CHECK(kernel_node(&else_fill, bodies[1], NULL, (void *)gp_fill_u32, n, else_args));
        // A body is the node's: destroying it alone is refused.
        EXPECT(cudaGraphDestroy(bodies[0]) != cudaSuccess, "a conditional body was destroyed alone");
        cudaGetLastError();
        size_t nodes = 0;
        CHECK(cudaGraphGetNodes(bodies[1], NULL, &nodes));
        EXPECT(nodes == 1, "else body has %zu nodes", nodes);
        cudaGraphNodeType type;
        CHECK(cudaGraphNodeGetType(cond, &type));
        EXPECT(type == cudaGraphNodeTypeConditional, "conditional node type %d", (int)type);
        cudaGraphExec_t ge;
        CHECK(cudaGraphInstantiate(&ge, g, 0));
        const unsigned flags[] = {1, 0, 7, 0};
        for (unsigned f : flags) {
            CHECK(cudaMemcpyAsync(flag, &f, sizeof f, cudaMemcpyHostToDevice, s));
            CHECK(cudaGraphLaunch(ge, s));
            CHECK(cudaStreamSynchronize(s));
            if (read_u32(out, host, n)) return 1;
            unsigned want = f ? 1 : 2;
            for (int i = 0; i < n; i++) EXPECT(host[i] == want, "if/else flag %u: out[%d] = %u", f, i, host[i]);
        }
        // A body's kernel node changed in the executable graph (XLA updates
        // its command buffers so): the new value there, the graph's own
        // node untouched.
        unsigned five = 5;
        void *five_args[] = {&out, &five, &count};
        cudaKernelNodeParams kp = {};
        kp.func = (void *)gp_fill_u32;
        kp.gridDim = dim3(1);
        kp.blockDim = dim3(n);
        kp.kernelParams = five_args;
        CHECK(cudaGraphExecKernelNodeSetParams(ge, then_fill, &kp));
        for (int round = 0; round < 2; round++) {
            const unsigned f = 1;
            CHECK(cudaMemcpyAsync(flag, &f, sizeof f, cudaMemcpyHostToDevice, s));
            cudaGraphExec_t run = ge;
            if (round == 1) CHECK(cudaGraphInstantiate(&run, g, 0));
            CHECK(cudaGraphLaunch(run, s));
            CHECK(cudaStreamSynchronize(s));
            if (read_u32(out, host, n)) return 1;
            unsigned want = round == 0 ? 5 : 1;
            for (int i = 0; i < n; i++) EXPECT(host[i] == want, "changed body node, round %d: out[%d] = %u", round, i, host[i]);
            if (round == 1) CHECK(cudaGraphExecDestroy(run));
        }
        CHECK(cudaGraphExecDestroy(ge));
        CHECK(cudaGraphDestroy(g));
    }

    // while: the body scales x by 2 and counts down from 5; the handle
    // starts at 1 at every launch (cudaGraphCondAssignDefault).
    {
        cudaGraph_t g, body;
        CHECK(cudaGraphCreate(&g, 0));
        cudaGraphConditionalHandle h;
        CHECK(cudaGraphConditionalHandleCreate(&h, g, 1, cudaGraphCondAssignDefault));
        cudaGraphNode_t start, loop, scale, down;
        CHECK(cudaGraphAddEmptyNode(&start, g, NULL, 0));
        CHECK(conditional_node(&loop, g, start, h, cudaGraphCondTypeWhile, 1, &body));
        float two = 2.0f;
        void *scale_args[] = {&x, &two, &count}, *down_args[] = {&h, &counter};
        CHECK(kernel_node(&scale, body, NULL, (void *)gp_scale, n, scale_args));
        CHECK(kernel_node(&down, body, &scale, (void *)gp_countdown, 32, down_args));
        cudaGraphExec_t ge;
        CHECK(cudaGraphInstantiate(&ge, g, 0));
        float xs[n];
        for (int launch = 0; launch < 2; launch++) {
            const int rounds = 5 - 2 * launch;
            for (int i = 0; i < n; i++) xs[i] = (float)i;
            CHECK(cudaMemcpyAsync(x, xs, sizeof xs, cudaMemcpyHostToDevice, s));
            CHECK(cudaMemcpyAsync(counter, &rounds, sizeof rounds, cudaMemcpyHostToDevice, s));
            CHECK(cudaGraphLaunch(ge, s));
            CHECK(cudaStreamSynchronize(s));
            int left = -1;
            CHECK(cudaMemcpy(xs, x, sizeof xs, cudaMemcpyDeviceToHost));
            CHECK(cudaMemcpy(&left, counter, sizeof left, cudaMemcpyDeviceToHost));
            EXPECT(left == 0, "while: counter %d after %d rounds", left, rounds);
            for (int i = 0; i < n; i++)
                EXPECT(xs[i] == (float)i * (float)(1 << rounds), "while %d rounds: x[%d] = %g", rounds, i, xs[i]);
        }
        CHECK(cudaGraphExecDestroy(ge));
        CHECK(cudaGraphDestroy(g));
    }

    // switch: body k writes 10 * (k + 1); a value past the bodies runs
    // none. Body 2 is filled by capturing a stream into it.
    {
        cudaGraph_t g, bodies[3];
        CHECK(cudaGraphCreate(&g, 0));
        cudaGraphConditionalHandle h;
        CHECK(cudaGraphConditionalHandleCreate(&h, g, 0, 0));
        cudaGraphNode_t set, cond, fill;
        void *set_args[] = {&h, &flag};
        CHECK(kernel_node(&set, g, NULL, (void *)gp_set_condition, 32, set_args));
        CHECK(conditional_node(&cond, g, set, h, cudaGraphCondTypeSwitch, 3, bodies));
        unsigned v0 = 10, v1 = 20, v2 = 30;
        void *a0[] = {&out, &v0, &count}, *a1[] = {&out, &v1, &count};
        CHECK(kernel_node(&fill, bodies[0], NULL, (void *)gp_fill_u32, n, a0));
        CHECK(kernel_node(&fill, bodies[1], NULL, (void *)gp_fill_u32, n, a1));
        cudaStream_t cs;
        CHECK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
        CHECK(cudaStreamBeginCaptureToGraph(cs, bodies[2], NULL, NULL, 0, cudaStreamCaptureModeGlobal));
        gp_fill_u32<<<1, n, 0, cs>>>(out, v2, n);
        cudaGraph_t captured;
        CHECK(cudaStreamEndCapture(cs, &captured));
        EXPECT(captured == bodies[2], "capture into a body answered another graph");
        CHECK(cudaStreamDestroy(cs));
        cudaGraphExec_t ge;
        CHECK(cudaGraphInstantiate(&ge, g, 0));
        const unsigned picks[] = {2, 0, 1, 9};
        const unsigned want[] = {30, 10, 20, 20};
        for (int k = 0; k < 4; k++) {
            CHECK(cudaMemcpyAsync(flag, &picks[k], sizeof picks[k], cudaMemcpyHostToDevice, s));
            CHECK(cudaGraphLaunch(ge, s));
            CHECK(cudaStreamSynchronize(s));
            if (read_u32(out, host, n)) return 1;
            for (int i = 0; i < n; i++)
                EXPECT(host[i] == want[k], "switch %u: out[%d] = %u, want %u", picks[k], i, host[i], want[k]);
        }
        CHECK(cudaGraphExecDestroy(ge));
        CHECK(cudaGraphDestroy(g));
    }
    // A conditional node put into a stream capture, as PyTorch does for
    // torch.cond: the capture's graph and dependencies asked for, the node
    // added there, the capture made to follow it, its body captured on
    // another stream; then more work captured after it.
    {
        cudaStream_t cs, bs;
        CHECK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
        CHECK(cudaStreamCreateWithFlags(&bs, cudaStreamNonBlocking));
        CHECK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeGlobal));
        cudaStreamCaptureStatus status;
        unsigned long long id = 0;
        cudaGraph_t capturing = NULL;
        const cudaGraphNode_t *deps = NULL;
        const cudaGraphEdgeData *edges = NULL;
        size_t ndeps = 7;
        CHECK(cudaStreamGetCaptureInfo(cs, &status, &id, &capturing, &deps, &edges, &ndeps));
        EXPECT(status == cudaStreamCaptureStatusActive && capturing && ndeps == 0, "capture info at the start: %d %zu",
               (int)status, ndeps);
        cudaGraphConditionalHandle h;
        CHECK(cudaGraphConditionalHandleCreate(&h, capturing, 0, cudaGraphCondAssignDefault));
        gp_set_condition<<<1, 32, 0, cs>>>(h, flag);
        CHECK(cudaStreamGetCaptureInfo(cs, &status, &id, &capturing, &deps, &edges, &ndeps));
        EXPECT(ndeps == 1 && deps, "capture info after a kernel: %zu dependencies", ndeps);
        cudaGraphNodeParams cp = {};
        cp.type = cudaGraphNodeTypeConditional;
        cp.conditional.handle = h;
        cp.conditional.type = cudaGraphCondTypeIf;
        cp.conditional.size = 1;
        cudaGraphNode_t cond;
        CHECK(cudaGraphAddNode(&cond, capturing, deps, NULL, ndeps, &cp));
        CHECK(cudaStreamUpdateCaptureDependencies(cs, &cond, NULL, 1, cudaStreamSetCaptureDependencies));
        cudaGraph_t body = cp.conditional.phGraph_out[0];
        CHECK(cudaStreamBeginCaptureToGraph(bs, body, NULL, NULL, 0, cudaStreamCaptureModeRelaxed));
        unsigned seven = 7;
        gp_fill_u32<<<1, n, 0, bs>>>(out, seven, n);
        CHECK(cudaStreamEndCapture(bs, &body));
        float four = 4.0f;
        gp_scale<<<1, n, 0, cs>>>(x, four, n);
        cudaGraph_t g;
        CHECK(cudaStreamEndCapture(cs, &g));
        EXPECT(g == capturing, "the capture ended with another graph than it built");
        cudaGraphExec_t ge;
        CHECK(cudaGraphInstantiate(&ge, g, 0));
        float xs[n];
        for (int i = 0; i < n; i++) xs[i] = 1.0f;
        CHECK(cudaMemcpy(x, xs, sizeof xs, cudaMemcpyHostToDevice));
        const unsigned flags[] = {1, 0};
        for (int k = 0; k < 2; k++) {
            unsigned zero = 0;
            CHECK(cudaMemcpy(out, &zero, sizeof zero, cudaMemcpyHostToDevice));
            CHECK(cudaMemcpyAsync(flag, &flags[k], sizeof flags[k], cudaMemcpyHostToDevice, s));
            CHECK(cudaGraphLaunch(ge, s));
            CHECK(cudaStreamSynchronize(s));
            if (read_u32(out, host, 1)) return 1;
            EXPECT(host[0] == (flags[k] ? 7u : 0u), "captured if, flag %u: out[0] = %u", flags[k], host[0]);
        }
        CHECK(cudaMemcpy(xs, x, sizeof xs, cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++) EXPECT(xs[i] == 16.0f, "work captured after the if: x[%d] = %g", i, xs[i]);
        CHECK(cudaGraphExecDestroy(ge));
        CHECK(cudaGraphDestroy(g));
        CHECK(cudaStreamDestroy(bs));
        CHECK(cudaStreamDestroy(cs));
    }

    // Programmatic launch edges between kernel nodes, as XLA's command
    // buffers make them: a fill (2.0f), then x3 on an edge given with the
    // node (cudaGraphAddNode), then x0.5 on one added after
    // (cudaGraphAddDependencies): 3.0 everywhere, in that order only.
    {
        cudaGraph_t g;
        CHECK(cudaGraphCreate(&g, 0));
        cudaGraphNode_t fill, triple, half;
        unsigned two_bits = 0x40000000u;
        float three = 3.0f, a_half = 0.5f;
        void *fill_args[] = {&x, &two_bits, &count}, *triple_args[] = {&x, &three, &count},
             *half_args[] = {&x, &a_half, &count};
        CHECK(kernel_node(&fill, g, NULL, (void *)gp_fill_u32, n, fill_args));
        cudaGraphEdgeData edge = {};
        edge.from_port = cudaGraphKernelNodePortProgrammatic;
        edge.type = cudaGraphDependencyTypeProgrammatic;
        cudaGraphNodeParams kp = {};
        kp.type = cudaGraphNodeTypeKernel;
        kp.kernel.func = (void *)gp_scale;
        kp.kernel.gridDim = dim3(1);
        kp.kernel.blockDim = dim3(n);
        kp.kernel.kernelParams = triple_args;
        CHECK(cudaGraphAddNode(&triple, g, &fill, &edge, 1, &kp));
        CHECK(kernel_node(&half, g, NULL, (void *)gp_scale, n, half_args));
        CHECK(cudaGraphAddDependencies(g, &triple, &half, &edge, 1));
        // Edge data with reserved bytes set is refused.
        cudaGraphEdgeData bad = edge;
        bad.reserved[0] = 1;
        cudaGraphNode_t extra;
        CHECK(cudaGraphAddEmptyNode(&extra, g, NULL, 0));
        EXPECT(cudaGraphAddDependencies(g, &half, &extra, &bad, 1) != cudaSuccess, "reserved edge bytes taken");
        cudaGetLastError();
        // The edges read back, with their data.
        cudaGraphNode_t from[4], to[4];
        cudaGraphEdgeData data[4];
        size_t count = 0;
        CHECK(cudaGraphGetEdges(g, NULL, NULL, NULL, &count));
        EXPECT(count == 2, "%zu edges", count);
        count = 4;
        CHECK(cudaGraphGetEdges(g, from, to, data, &count));
        EXPECT(count == 2 && to[2] == NULL, "%zu edges read", count);
        for (int k = 0; k < 2; k++) {
            int first = from[k] == fill && to[k] == triple, second = from[k] == triple && to[k] == half;
            EXPECT((first || second) && data[k].type == cudaGraphDependencyTypeProgrammatic &&
                       data[k].from_port == cudaGraphKernelNodePortProgrammatic,
                   "edge %d: %p -> %p type %d port %d", k, (void *)from[k], (void *)to[k], (int)data[k].type,
                   (int)data[k].from_port);
        }
        count = 4;
        EXPECT(cudaGraphGetEdges(g, from, to, NULL, &count) == cudaErrorLossyQuery, "edge data dropped silently");
        cudaGetLastError();
        count = 4;
        CHECK(cudaGraphNodeGetDependencies(half, from, data, &count));
        EXPECT(count == 1 && from[0] == triple && data[0].type == cudaGraphDependencyTypeProgrammatic,
               "half follows %zu nodes", count);
        count = 4;
        CHECK(cudaGraphNodeGetDependentNodes(fill, to, data, &count));
        EXPECT(count == 1 && to[0] == triple, "%zu nodes follow the fill", count);
        count = 4;
        CHECK(cudaGraphGetRootNodes(g, from, &count));
        EXPECT(count == 2 && ((from[0] == fill && from[1] == extra) || (from[0] == extra && from[1] == fill)),
               "%zu root nodes", count);
        cudaGraphExec_t ge;
        CHECK(cudaGraphInstantiate(&ge, g, 0));
        CHECK(cudaGraphLaunch(ge, s));
        CHECK(cudaStreamSynchronize(s));
        float xs[n];
        CHECK(cudaMemcpy(xs, x, sizeof xs, cudaMemcpyDeviceToHost));
        for (int i = 0; i < n; i++) EXPECT(xs[i] == 3.0f, "programmatic edges: x[%d] = %g", i, xs[i]);
        CHECK(cudaGraphExecDestroy(ge));
        CHECK(cudaGraphDestroy(g));
    }
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(flag));
    CHECK(cudaFree(out));
    CHECK(cudaFree(counter));
    CHECK(cudaFree(x));
    printf("OK cudart conditional\n");
    return 0;
}

// The exporter: a kernel's result and an interprocess event recorded after
// it, for the child to open; then the child's writes are read back here.
static int ipc() {
    const int n = 1 << 12;
    const size_t bytes = n * sizeof(float);
    float *host = (float *)malloc(bytes), *d;
    for (int i = 0; i < n; i++) host[i] = (float)i;
    CHECK(cudaMalloc(&d, bytes));
    CHECK(cudaMemcpy(d, host, bytes, cudaMemcpyHostToDevice));
    gp_scale<<<(n + 255) / 256, 256>>>(d, 3.0f, n);
    CHECK(cudaGetLastError());
    cudaEvent_t e;
    CHECK(cudaEventCreateWithFlags(&e, cudaEventDisableTiming | cudaEventInterprocess));
    CHECK(cudaEventRecord(e, 0));
    cudaIpcMemHandle_t mh;
    cudaIpcEventHandle_t eh;
    CHECK(cudaIpcGetMemHandle(&mh, d));
    CHECK(cudaIpcGetEventHandle(&eh, e));
    char mhex[2 * sizeof mh + 1] = {0}, ehex[2 * sizeof eh + 1] = {0}, count[16];
    to_hex(&mh, sizeof mh, mhex);
    to_hex(&eh, sizeof eh, ehex);
    snprintf(count, sizeof count, "%d", n);
    fflush(stdout);
    pid_t pid = fork();
    if (pid == 0) {
        char *args[] = {(char *)"cudart_check", (char *)"ipc-child", mhex, ehex, count, NULL};
        execv("/proc/self/exe", args);
        _exit(127);
    }
    int status = 0;
    EXPECT(pid > 0 && waitpid(pid, &status, 0) == pid && WIFEXITED(status) && WEXITSTATUS(status) == 0,
           "the ipc child failed (status %x)", status);
    CHECK(cudaMemcpy(host, d, bytes, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) EXPECT(host[i] == 6.0f * i, "after the child: [%d] = %f", i, host[i]);
    CHECK(cudaEventDestroy(e));
    CHECK(cudaFree(d));
    free(host);
    printf("OK cudart ipc\n");
    return 0;
}

static int ipc_child(int argc, char **argv) {
    cudaIpcMemHandle_t mh;
    cudaIpcEventHandle_t eh;
    EXPECT(argc == 5 && from_hex(argv[2], &mh, sizeof mh) && from_hex(argv[3], &eh, sizeof eh), "bad handles");
    int n = atoi(argv[4]);
    size_t bytes = n * sizeof(float);
    cudaEvent_t e;
    CHECK(cudaIpcOpenEventHandle(&e, eh));
    CHECK(cudaStreamWaitEvent(0, e, 0));
    CHECK(cudaEventSynchronize(e));
    float *d, *host = (float *)malloc(bytes);
    CHECK(cudaIpcOpenMemHandle((void **)&d, mh, cudaIpcMemLazyEnablePeerAccess));
    cudaPointerAttributes attr;
    CHECK(cudaPointerGetAttributes(&attr, d));
    EXPECT(attr.type == cudaMemoryTypeDevice, "opened memory is of type %d", (int)attr.type);
    CHECK(cudaMemcpy(host, d, bytes, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) EXPECT(host[i] == 3.0f * i, "opened [%d] = %f", i, host[i]);
    gp_scale<<<(n + 255) / 256, 256>>>(d, 2.0f, n);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    CHECK(cudaIpcCloseMemHandle(d));
    CHECK(cudaEventDestroy(e));
    free(host);
    printf("OK cudart ipc-child\n");
    return 0;
}


static int expect_all(const unsigned *d, unsigned *host, int n, unsigned want, const char *what) {
    if (read_u32(d, host, n)) return 1;
    for (int i = 0; i < n; i++) EXPECT(host[i] == want, "%s: [%d] = %u, not %u", what, i, host[i], want);
    return 0;
}

static int launch_once(cudaGraph_t g, cudaStream_t s) {
    cudaGraphExec_t ge;
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    CHECK(cudaGraphLaunch(ge, s));
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaGraphExecDestroy(ge));
    return 0;
}

static size_t node_count(cudaGraph_t g) {
    size_t n = 0;
    if (cudaGraphGetNodes(g, NULL, &n) != cudaSuccess) return (size_t)-1;
    return n;
}

static size_t edge_count(cudaGraph_t g) {
    size_t n = 0;
    if (cudaGraphGetEdges(g, NULL, NULL, NULL, &n) != cudaSuccess) return (size_t)-1;
    return n;
}

static int user_objects_destroyed;
static void destroy_user_object(void *count) { __atomic_add_fetch((int *)count, 1, __ATOMIC_SEQ_CST); }

// Whether the destructor has run `want` times within a few seconds (it
// runs on a thread of the driver's, after the call that released it).
static bool destroyed_within(int want) {
    for (int i = 0; i < 500; i++) {
        if (__atomic_load_n(&user_objects_destroyed, __ATOMIC_SEQ_CST) == want) return true;
        usleep(10000);
    }
    return false;
}

// User objects: references held by the program, by a graph and by the
// executable graph made of it; the destructor runs once the last goes.
static int user_objects(cudaStream_t s, unsigned *b, int *count) {
    cudaUserObject_t obj;
    CHECK(cudaUserObjectCreate(&obj, &user_objects_destroyed, destroy_user_object, 2,
                               cudaUserObjectNoDestructorSync));
    CHECK(cudaUserObjectRelease(obj, 1));
    usleep(50000);
    EXPECT(user_objects_destroyed == 0, "a user object was destroyed with a reference left");
    cudaGraph_t g;
    CHECK(cudaGraphCreate(&g, 0));
    cudaGraphNode_t k;
    unsigned one = 1;
    void *args[] = {&b, &one, count};
    CHECK(kernel_node(&k, g, NULL, (void *)gp_fill_u32, 256, args));
    // The program's last reference moves to the graph; the executable graph
    // takes one of its own.
    CHECK(cudaGraphRetainUserObject(g, obj, 1, cudaGraphUserObjectMove));
    cudaGraphExec_t ge;
    CHECK(cudaGraphInstantiate(&ge, g, 0));
    CHECK(cudaGraphLaunch(ge, s));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamSynchronize(s));
    usleep(50000);
    EXPECT(user_objects_destroyed == 0, "a user object was destroyed while an executable graph held it");
    CHECK(cudaGraphExecDestroy(ge));
    EXPECT(destroyed_within(1), "the user object was destroyed %d times, not once", user_objects_destroyed);
    // A graph's reference, released by the program.
    CHECK(cudaUserObjectCreate(&obj, &user_objects_destroyed, destroy_user_object, 1,
                               cudaUserObjectNoDestructorSync));
    CHECK(cudaGraphCreate(&g, 0));
    CHECK(cudaGraphRetainUserObject(g, obj, 2, 0));
    CHECK(cudaUserObjectRelease(obj, 1));
    CHECK(cudaGraphReleaseUserObject(g, obj, 1));
    EXPECT(cudaGraphReleaseUserObject(g, obj, 2) != cudaSuccess, "a graph released more than it held");
    cudaGetLastError();
    usleep(50000);
    EXPECT(user_objects_destroyed == 1, "destroyed with the graph's reference left");
    CHECK(cudaGraphDestroy(g));
    EXPECT(destroyed_within(2), "the second user object was destroyed %d times", user_objects_destroyed - 1);
    return 0;
}

// Graphs changed after they are built.
static int graphedit() {
    const int n = 256;
    unsigned *a, *b, host[n];
    CHECK(cudaMalloc(&a, n * sizeof(unsigned)));
    CHECK(cudaMalloc(&b, n * sizeof(unsigned)));
    cudaStream_t s;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    int count = n;

    // fill a with 7 -> memset b to 3 -> copy a to b -> an empty node: b
    // ends as a.
    cudaGraph_t g;
    CHECK(cudaGraphCreate(&g, 0));
    cudaGraphNode_t fill, memset_node, copy, empty;
    unsigned seven = 7;
    void *fill_args[] = {&a, &seven, &count};
    CHECK(kernel_node(&fill, g, NULL, (void *)gp_fill_u32, n, fill_args));
    cudaMemsetParams mp = {};
    mp.dst = b;
    mp.value = 3;
    mp.elementSize = 4;
    mp.width = n;
    mp.height = 1;
    CHECK(cudaGraphAddMemsetNode(&memset_node, g, &fill, 1, &mp));
    CHECK(cudaGraphAddMemcpyNode1D(&copy, g, &memset_node, 1, b, a, n * sizeof(unsigned), cudaMemcpyDeviceToDevice));
    CHECK(cudaGraphAddEmptyNode(&empty, g, &copy, 1));

    // The kernel node's parameters, read back.
    cudaKernelNodeParams kp = {};
    CHECK(cudaGraphKernelNodeGetParams(fill, &kp));
    EXPECT(kp.func == (void *)gp_fill_u32, "kernel node function %p, not %p", kp.func, (void *)gp_fill_u32);
    EXPECT(kp.gridDim.x == 1 && kp.blockDim.x == (unsigned)n && kp.sharedMemBytes == 0, "kernel node shape %u/%u/%u",
           kp.gridDim.x, kp.blockDim.x, kp.sharedMemBytes);
    EXPECT(kp.kernelParams != NULL, "no kernel parameters read back");
    EXPECT(*(unsigned **)kp.kernelParams[0] == a && *(unsigned *)kp.kernelParams[1] == 7 &&
               *(int *)kp.kernelParams[2] == n,
           "kernel parameters read back: %p %u %d", *(void **)kp.kernelParams[0], *(unsigned *)kp.kernelParams[1],
           *(int *)kp.kernelParams[2]);
    // The memset's and the copy's.
    cudaMemsetParams mq = {};
    CHECK(cudaGraphMemsetNodeGetParams(memset_node, &mq));
    EXPECT(mq.dst == b && mq.value == 3 && mq.elementSize == 4 && mq.width == (size_t)n,
           "memset node read back: %p %u %u %zu", mq.dst, mq.value, mq.elementSize, mq.width);
    cudaMemcpy3DParms cq = {};
    CHECK(cudaGraphMemcpyNodeGetParams(copy, &cq));
    EXPECT(cq.srcPtr.ptr == a && cq.dstPtr.ptr == b && cq.extent.width == n * sizeof(unsigned),
           "copy node read back: %p -> %p, %zu", cq.srcPtr.ptr, cq.dstPtr.ptr, cq.extent.width);

    if (launch_once(g, s) || expect_all(b, host, n, 7, "built graph")) return 1;

    // Set in the graph: fill with 9; then the memset writes 5 over a, and
    // the copy still takes a to b.
    unsigned nine = 9;
    void *nine_args[] = {&a, &nine, &count};
    kp.kernelParams = nine_args;
    CHECK(cudaGraphKernelNodeSetParams(fill, &kp));
    if (launch_once(g, s) || expect_all(b, host, n, 9, "kernel node set")) return 1;
    mp.value = 5;
    mp.dst = a;
    CHECK(cudaGraphMemsetNodeSetParams(memset_node, &mp));
    CHECK(cudaGraphMemcpyNodeSetParams1D(copy, b, a, n * sizeof(unsigned), cudaMemcpyDeviceToDevice));
    if (launch_once(g, s) || expect_all(b, host, n, 5, "memset and copy nodes set")) return 1;
    // The generic call: the kernel node fills with 4 (which the memset
    // then overwrites), read back.
    unsigned four = 4;
    void *four_args[] = {&a, &four, &count};
    cudaGraphNodeParams np = {};
    np.type = cudaGraphNodeTypeKernel;
    np.kernel.func = (void *)gp_fill_u32;
    np.kernel.gridDim = dim3(1);
    np.kernel.blockDim = dim3(n);
    np.kernel.kernelParams = four_args;
    CHECK(cudaGraphNodeSetParams(fill, &np));
    CHECK(cudaGraphKernelNodeGetParams(fill, &kp));
    EXPECT(*(unsigned *)kp.kernelParams[1] == 4, "generic set: value %u", *(unsigned *)kp.kernelParams[1]);

    // Nodes and edges removed: the empty node (with its edge), then the
    // edge memset -> copy, which is put back after.
    size_t nodes = node_count(g), edges = edge_count(g);
    EXPECT(nodes == 4 && edges == 3, "graph has %zu nodes and %zu edges", nodes, edges);
    CHECK(cudaGraphDestroyNode(empty));
    EXPECT(node_count(g) == 3 && edge_count(g) == 2, "after removing a node: %zu nodes, %zu edges", node_count(g),
           edge_count(g));
    CHECK(cudaGraphRemoveDependencies(g, &memset_node, &copy, NULL, 1));
    EXPECT(edge_count(g) == 1, "after removing an edge: %zu edges", edge_count(g));
    EXPECT(cudaGraphRemoveDependencies(g, &memset_node, &copy, NULL, 1) != cudaSuccess, "an absent edge was removed");
    cudaGetLastError();
    CHECK(cudaGraphAddDependencies(g, &memset_node, &copy, NULL, 1));

    // A clone: its kernel node found and changed; the original keeps its own.
    cudaGraph_t c;
    CHECK(cudaGraphClone(&c, g));
    EXPECT(node_count(c) == 3, "clone has %zu nodes", node_count(c));
    cudaGraphNode_t cfill, cmemset;
    CHECK(cudaGraphNodeFindInClone(&cfill, fill, c));
    CHECK(cudaGraphNodeFindInClone(&cmemset, memset_node, c));
    CHECK(cudaGraphKernelNodeGetParams(cfill, &kp));
    EXPECT(*(unsigned *)kp.kernelParams[1] == 4, "clone's kernel node value %u", *(unsigned *)kp.kernelParams[1]);
    mp.value = 8;
    CHECK(cudaGraphMemsetNodeSetParams(cmemset, &mp));
    if (launch_once(c, s) || expect_all(b, host, n, 8, "clone")) return 1;
    if (launch_once(g, s) || expect_all(b, host, n, 5, "original after its clone changed")) return 1;

    // Kernel node attributes.
    cudaLaunchAttributeValue v = {};
    v.priority = 1;
    CHECK(cudaGraphKernelNodeSetAttribute(fill, cudaLaunchAttributePriority, &v));
    cudaLaunchAttributeValue w = {};
    CHECK(cudaGraphKernelNodeGetAttribute(fill, cudaLaunchAttributePriority, &w));
    EXPECT(w.priority == 1, "kernel node priority %d", w.priority);
    CHECK(cudaGraphKernelNodeCopyAttributes(cfill, fill));
    cudaLaunchAttributeValue x = {};
    CHECK(cudaGraphKernelNodeGetAttribute(cfill, cudaLaunchAttributePriority, &x));
    EXPECT(x.priority == 1, "copied kernel node priority %d", x.priority);

    // An executable graph's flags.
    cudaGraphExec_t ge;
    CHECK(cudaGraphInstantiateWithFlags(&ge, g, cudaGraphInstantiateFlagUseNodePriority));
    unsigned long long flags = 0;
    CHECK(cudaGraphExecGetFlags(ge, &flags));
    EXPECT(flags == cudaGraphInstantiateFlagUseNodePriority, "executable graph flags %llu", flags);
    CHECK(cudaGraphExecDestroy(ge));

    // A child graph node's graph: the node's own, changed through it.
    cudaGraph_t inner, holder, got;
    CHECK(cudaGraphCreate(&inner, 0));
    cudaGraphNode_t inner_fill, child;
    unsigned two = 2;
    void *two_args[] = {&b, &two, &count};
    CHECK(kernel_node(&inner_fill, inner, NULL, (void *)gp_fill_u32, n, two_args));
    CHECK(cudaGraphCreate(&holder, 0));
    CHECK(cudaGraphAddChildGraphNode(&child, holder, NULL, 0, inner));
    CHECK(cudaGraphChildGraphNodeGetGraph(child, &got));
    EXPECT(node_count(got) == 1, "child graph node's graph has %zu nodes", node_count(got));
    EXPECT(cudaGraphDestroy(got) != cudaSuccess, "a child graph node's graph was destroyed alone");
    cudaGetLastError();
    if (launch_once(holder, s) || expect_all(b, host, n, 2, "child graph node")) return 1;
    cudaGraphNode_t got_fill;
    size_t one = 1;
    CHECK(cudaGraphGetNodes(got, &got_fill, &one));
    unsigned six = 6;
    void *six_args[] = {&b, &six, &count};
    kp = {};
    kp.func = (void *)gp_fill_u32;
    kp.gridDim = dim3(1);
    kp.blockDim = dim3(n);
    kp.kernelParams = six_args;
    CHECK(cudaGraphKernelNodeSetParams(got_fill, &kp));
    if (launch_once(holder, s) || expect_all(b, host, n, 6, "child graph node's graph changed")) return 1;
    CHECK(cudaGraphDestroy(holder));
    CHECK(cudaGraphDestroy(inner));

    // Host nodes: a clone's run for its own launches; a host node removed
    // runs no more (and nothing waits for it).
    cudaGraph_t hg, hc;
    CHECK(cudaGraphCreate(&hg, 0));
    cudaGraphNode_t host_node, after;
    cudaHostNodeParams hp = {};
    hp.fn = count_graph_host;
    CHECK(cudaGraphAddHostNode(&host_node, hg, NULL, 0, &hp));
    CHECK(kernel_node(&after, hg, &host_node, (void *)gp_fill_u32, n, two_args));
    CHECK(cudaGraphClone(&hc, hg));
    graph_host_calls = 0;
    cudaGraphExec_t he, hce;
    CHECK(cudaGraphInstantiate(&he, hg, 0));
    CHECK(cudaGraphInstantiate(&hce, hc, 0));
    cudaStream_t s2;
    CHECK(cudaStreamCreateWithFlags(&s2, cudaStreamNonBlocking));
    for (int i = 0; i < 3; i++) {
        CHECK(cudaGraphLaunch(he, s));
        CHECK(cudaGraphLaunch(hce, s2));
    }
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaStreamSynchronize(s2));
    EXPECT(graph_host_calls == 6, "host nodes of a graph and its clone ran %d times, not 6", graph_host_calls);
    CHECK(cudaGraphExecDestroy(he));
    CHECK(cudaGraphDestroyNode(host_node));
    graph_host_calls = 0;
    if (launch_once(hg, s)) return 1;
    EXPECT(graph_host_calls == 0, "a removed host node ran %d times", graph_host_calls);
    CHECK(cudaGraphLaunch(hce, s2));
    CHECK(cudaStreamSynchronize(s2));
    EXPECT(graph_host_calls == 1, "the clone's host node ran %d times after the original's went", graph_host_calls);
    CHECK(cudaGraphExecDestroy(hce));
    CHECK(cudaGraphDestroy(hc));
    CHECK(cudaGraphDestroy(hg));
    if (user_objects(s, b, &count)) return 1;
    CHECK(cudaGraphDestroy(c));
    CHECK(cudaGraphDestroy(g));
    CHECK(cudaStreamDestroy(s2));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaFree(a));
    CHECK(cudaFree(b));
    printf("OK cudart graphedit\n");
    return 0;
}

__global__ void gp_hello(int n) { printf("hello %d from thread %d\n", n, (int)(blockIdx.x * blockDim.x + threadIdx.x)); }

static int hello() {
    printf("before the kernel\n");
    gp_hello<<<1, 4>>>(7);
    CHECK(cudaGetLastError());
    CHECK(cudaDeviceSynchronize());
    printf("OK cudart printf\n");
    return 0;
}

#if CUDART_VERSION >= 13010
static int green() {
    cudaDevResource whole;
    CHECK(cudaDeviceGetDevResource(0, &whole, cudaDevResourceTypeSm));
    unsigned groups = 1;
    cudaDevResource group, rest;
    CHECK(cudaDevSmResourceSplitByCount(&group, &groups, &whole, &rest, 0, 16));
    EXPECT(groups == 1 && group.sm.smCount >= 16 && group.sm.smCount + rest.sm.smCount == whole.sm.smCount,
           "split of %u SMs: %u group(s) of %u, %u left", whole.sm.smCount, groups, group.sm.smCount,
           rest.sm.smCount);
    cudaDevResourceDesc_t desc;
    CHECK(cudaDevResourceGenerateDesc(&desc, &group, 1));
    cudaExecutionContext_t g;
    CHECK(cudaGreenCtxCreate(&g, desc, 0, 0));
    cudaDevResource mine;
    CHECK(cudaExecutionCtxGetDevResource(g, &mine, cudaDevResourceTypeSm));
    EXPECT(mine.sm.smCount == group.sm.smCount, "the green context has %u SMs", mine.sm.smCount);
    int device = -1;
    CHECK(cudaExecutionCtxGetDevice(&device, g));
    EXPECT(device == 0, "the green context's device is %d", device);
    cudaStream_t s;
    CHECK(cudaExecutionCtxStreamCreate(&s, g, cudaStreamDefault, 0));
    const int n = 1 << 16;
    float *host = (float *)malloc(n * sizeof(float)), *x;
    for (int i = 0; i < n; i++) host[i] = (float)(i % 1000);
    CHECK(cudaMalloc(&x, n * sizeof(float)));
    CHECK(cudaMemcpyAsync(x, host, n * sizeof(float), cudaMemcpyHostToDevice, s));
    gp_scale<<<(n + 255) / 256, 256, 0, s>>>(x, 3.0f, n);
    CHECK(cudaGetLastError());
    cudaEvent_t done;
    CHECK(cudaEventCreate(&done));
    CHECK(cudaExecutionCtxRecordEvent(g, done));
    CHECK(cudaEventSynchronize(done));
    CHECK(cudaMemcpyAsync(host, x, n * sizeof(float), cudaMemcpyDeviceToHost, s));
    CHECK(cudaExecutionCtxSynchronize(g));
    for (int i = 0; i < n; i++) EXPECT(host[i] == 3.0f * (float)(i % 1000), "x[%d] = %g", i, host[i]);
    CHECK(cudaEventDestroy(done));
    CHECK(cudaStreamDestroy(s));
    // Not destroyed here: cudart 13.5 on a 13.0 driver (what gpupool
    // reports) answers cudaExecutionCtxDestroy with cudaErrorInvalidValue
    // without calling the driver; the session's end frees it.
    CHECK(cudaFree(x));
    free(host);
    printf("OK cudart green %u SMs\n", group.sm.smCount);
    return 0;
}
#else
static int green() {
    printf("OK cudart green: not in this runtime\n");
    return 0;
}
#endif

int main(int argc, char **argv) {
    const char *mode = argc > 1 ? argv[1] : "all";
    int runtime = 0, driver = 0, count = 0;
    CHECK(cudaRuntimeGetVersion(&runtime));
    CHECK(cudaDriverGetVersion(&driver));
    CHECK(cudaGetDeviceCount(&count));
    EXPECT(count >= 1, "no device");
    cudaDeviceProp prop;
    CHECK(cudaGetDeviceProperties(&prop, 0));
    EXPECT(prop.multiProcessorCount >= 1 && prop.maxThreadsPerBlock >= 256, "implausible properties");
    printf("device 0: %s, cc %d.%d, runtime %d, driver %d\n", prop.name, prop.major, prop.minor, runtime, driver);
    if (!strcmp(mode, "fault")) return fault();
    if (!strcmp(mode, "assert")) return device_assert();
    if (!strcmp(mode, "ipc")) return ipc();
    if (!strcmp(mode, "ipc-child")) return ipc_child(argc, argv);
    if (!strcmp(mode, "conditional")) return conditional();
    if (!strcmp(mode, "graphedit")) return graphedit();
    if (!strcmp(mode, "green")) return green();
    if (!strcmp(mode, "printf")) return hello();

    const int n = 1 << 16;
    const size_t bytes = n * sizeof(float);
    float *a = (float *)malloc(bytes), *b = (float *)malloc(bytes), *c = (float *)malloc(bytes);
    for (int i = 0; i < n; i++) {
        a[i] = (float)i;
        b[i] = (float)(2 * i + 1);
    }
    size_t free_before = 0, total = 0;
    CHECK(cudaMemGetInfo(&free_before, &total));
    float *da, *db, *dc;
    CHECK(cudaMalloc(&da, bytes));
    CHECK(cudaMalloc(&db, bytes));
    CHECK(cudaMalloc(&dc, bytes));
    CHECK(cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemset(dc, 0, bytes));
    gp_vector_add<<<(n + 255) / 256, 256>>>(da, db, dc, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(c, dc, bytes, cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++) EXPECT(c[i] == a[i] + b[i], "c[%d] = %f", i, c[i]);

    // A stream, pinned host memory, async copies and events.
    cudaStream_t s;
    cudaEvent_t start, stop;
    float *pinned;
    CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
    CHECK(cudaEventCreate(&start));
    CHECK(cudaEventCreate(&stop));
    CHECK(cudaMallocHost(&pinned, bytes));
    CHECK(cudaEventRecord(start, s));
    gp_scale<<<(n + 255) / 256, 256, 0, s>>>(dc, 0.5f, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpyAsync(pinned, dc, bytes, cudaMemcpyDeviceToHost, s));
    CHECK(cudaEventRecord(stop, s));
    CHECK(cudaEventSynchronize(stop));
    for (int i = 0; i < n; i++) EXPECT(pinned[i] == (a[i] + b[i]) * 0.5f, "scaled[%d] = %f", i, pinned[i]);
    float ms = -1;
    CHECK(cudaEventElapsedTime(&ms, start, stop));
    EXPECT(ms >= 0, "elapsed time %f", ms);
    CHECK(cudaStreamSynchronize(s));
    CHECK(cudaStreamDestroy(s));
    CHECK(cudaEventDestroy(start));
    CHECK(cudaEventDestroy(stop));
    CHECK(cudaFreeHost(pinned));
    CHECK(cudaFree(da));
    CHECK(cudaFree(db));
    CHECK(cudaFree(dc));
    CHECK(cudaDeviceSynchronize());

    // Pitched memory and 2D copies, copies by address (cudaMemcpyDefault),
    // registered host memory: as cudart asks the driver for them.
    {
        const size_t w = 1000, h = 300, hp = 1024;
        unsigned char *src = (unsigned char *)malloc(hp * h), *back = (unsigned char *)malloc(hp * h);
        for (size_t i = 0; i < hp * h; i++) src[i] = (unsigned char)(i * 7 + (i >> 10));
        memset(back, 0x5a, hp * h);
        void *d;
        size_t pitch = 0;
        CHECK(cudaMallocPitch(&d, &pitch, w, h));
        EXPECT(pitch >= w, "pitch %zu", pitch);
        CHECK(cudaMemcpy2D(d, pitch, src, hp, w, h, cudaMemcpyHostToDevice));
        CHECK(cudaMemset2D((char *)d + 10, pitch, 0x33, 5, 2));
        CHECK(cudaHostRegister(back, hp * h, cudaHostRegisterDefault));
        CHECK(cudaMemcpy2DAsync(back, hp, d, pitch, w, h, cudaMemcpyDefault, 0));
        CHECK(cudaDeviceSynchronize());
        for (size_t r = 0; r < h; r++)
            for (size_t x = 0; x < hp; x++) {
                unsigned char want = x >= w ? 0x5a : (r < 2 && x >= 10 && x < 15) ? 0x33 : src[r * hp + x];
                EXPECT(back[r * hp + x] == want, "2D row %zu byte %zu = %u, want %u", r, x, back[r * hp + x], want);
            }
        CHECK(cudaHostUnregister(back));
        unsigned char *lin;
        CHECK(cudaMalloc(&lin, w));
        CHECK(cudaMemcpy(lin, src, w, cudaMemcpyDefault));
        CHECK(cudaMemcpy(back, lin, w, cudaMemcpyDefault));
        EXPECT(memcmp(back, src, w) == 0, "cudaMemcpyDefault round trip differs");
        CHECK(cudaFree(lin));
        CHECK(cudaFree(d));
        free(src);
        free(back);
    }

    // 3D: a pitched volume (cudaMalloc3D), set (cudaMemset3D), written and
    // read back by cudaMemcpy3D.
    {
        const size_t w = 200, h = 6, d = 4;
        cudaExtent extent = make_cudaExtent(w, h, d);
        cudaPitchedPtr vol;
        CHECK(cudaMalloc3D(&vol, extent));
        CHECK(cudaMemset3D(vol, 0x42, extent));
        unsigned char *host = (unsigned char *)malloc(w * h * d);
        memset(host, 0, w * h * d);
        cudaMemcpy3DParms back = {};
        back.srcPtr = vol;
        back.dstPtr = make_cudaPitchedPtr(host, w, w, h);
        back.extent = extent;
        back.kind = cudaMemcpyDeviceToHost;
        CHECK(cudaMemcpy3D(&back));
        for (size_t i = 0; i < w * h * d; i++) EXPECT(host[i] == 0x42, "memset3D byte %zu = %u", i, host[i]);
        for (size_t i = 0; i < w * h * d; i++) host[i] = (unsigned char)(i * 31 + 7);
        cudaMemcpy3DParms in = {};
        in.srcPtr = make_cudaPitchedPtr(host, w, w, h);
        in.dstPtr = vol;
        in.extent = make_cudaExtent(w - 8, h, d);
        in.kind = cudaMemcpyHostToDevice;
        CHECK(cudaMemcpy3D(&in));
        unsigned char *again = (unsigned char *)malloc(w * h * d);
        back.dstPtr = make_cudaPitchedPtr(again, w, w, h);
        CHECK(cudaMemcpy3D(&back));
        for (size_t z = 0; z < d; z++)
            for (size_t y = 0; y < h; y++)
                for (size_t x = 0; x < w; x++) {
                    size_t i = (z * h + y) * w + x;
                    unsigned char want = x < w - 8 ? host[i] : 0x42;
                    EXPECT(again[i] == want, "3D byte (%zu,%zu,%zu) = %u, want %u", x, y, z, again[i], want);
                }
        CHECK(cudaFree(vol.ptr));
        free(host);
        free(again);
    }

    // Host functions through cudart: after the copy before them, before the
    // synchronise after them returns.
    {
        float *host, *out, *dev;
        CHECK(cudaMallocHost(&host, bytes));
        CHECK(cudaMallocHost(&out, bytes));
        CHECK(cudaMalloc(&dev, bytes));
        for (int i = 0; i < n; i++) host[i] = (float)i, out[i] = -1.0f;
        cudaStream_t hs;
        CHECK(cudaStreamCreateWithFlags(&hs, cudaStreamNonBlocking));
        CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, hs));
        gp_scale<<<(n + 255) / 256, 256, 0, hs>>>(dev, 2.0f, n);
        CHECK(cudaMemcpyAsync(out, dev, bytes, cudaMemcpyDeviceToHost, hs));
        Seen seen = {out, n};
        CHECK(cudaLaunchHostFunc(hs, read_back, &seen));
        int add = 5;
        CHECK(cudaStreamAddCallback(hs, stream_callback, &add, 0));
        CHECK(cudaStreamSynchronize(hs));
        EXPECT(host_calls == 1 && stream_callbacks == 5, "host functions ran %d and %d times", host_calls,
               stream_callbacks);
        EXPECT(seen_first == 0.0f && seen_last == 2.0f * (float)(n - 1), "host function saw %g .. %g", seen_first,
               seen_last);
        CHECK(cudaStreamDestroy(hs));
        CHECK(cudaFree(dev));
        CHECK(cudaFreeHost(host));
        CHECK(cudaFreeHost(out));
    }
    // Stream-ordered allocation through cudart: the device's pool, a
    // threshold set on it, a pool of the program's own.
    {
        int pools = 0;
        CHECK(cudaDeviceGetAttribute(&pools, cudaDevAttrMemoryPoolsSupported, 0));
        EXPECT(pools == 1, "memory pools supported: %d", pools);
        cudaStream_t ps;
        CHECK(cudaStreamCreateWithFlags(&ps, cudaStreamNonBlocking));
        float *host, *dev;
        CHECK(cudaMallocHost(&host, bytes));
        for (int i = 0; i < n; i++) host[i] = (float)i;
        CHECK(cudaMallocAsync(&dev, bytes, ps));
        CHECK(cudaMemcpyAsync(dev, host, bytes, cudaMemcpyHostToDevice, ps));
        gp_scale<<<(n + 255) / 256, 256, 0, ps>>>(dev, 3.0f, n);
        CHECK(cudaGetLastError());
        CHECK(cudaMemcpyAsync(host, dev, bytes, cudaMemcpyDeviceToHost, ps));
        CHECK(cudaFreeAsync(dev, ps));
        CHECK(cudaStreamSynchronize(ps));
        for (int i = 0; i < n; i++) EXPECT(host[i] == 3.0f * (float)i, "async-allocated[%d] = %f", i, host[i]);
        cudaMemPool_t pool;
        CHECK(cudaDeviceGetDefaultMemPool(&pool, 0));
        unsigned long long threshold = 64ull << 20, got = 0;
        CHECK(cudaMemPoolSetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &threshold));
        CHECK(cudaMemPoolGetAttribute(pool, cudaMemPoolAttrReleaseThreshold, &got));
        EXPECT(got == threshold, "release threshold %llu", got);
        cudaMemPoolProps props = {};
        props.allocType = cudaMemAllocationTypePinned;
        props.location.type = cudaMemLocationTypeDevice;
        props.location.id = 0;
        cudaMemPool_t own;
        CHECK(cudaMemPoolCreate(&own, &props));
        void *p;
        CHECK(cudaMallocFromPoolAsync(&p, 1 << 20, own, ps));
        CHECK(cudaMemsetAsync(p, 0x11, 1 << 20, ps));
        unsigned char probe[256];
        CHECK(cudaMemcpyAsync(probe, (char *)p + 1000, sizeof probe, cudaMemcpyDeviceToHost, ps));
        CHECK(cudaFreeAsync(p, ps));
        CHECK(cudaStreamSynchronize(ps));
        for (unsigned i = 0; i < sizeof probe; i++) EXPECT(probe[i] == 0x11, "pool byte %u = %u", i, probe[i]);
        CHECK(cudaMemPoolDestroy(own));
        CHECK(cudaStreamDestroy(ps));
        CHECK(cudaFreeHost(host));
    }
    // A CUDA array as image code uses one: filled from host rows, read by
    // a texture object, scaled in place through a surface object, read back.
    {
        const int w = 45, h = 13, texels = w * h;
        float *img = (float *)malloc(texels * sizeof(float)), *back = (float *)malloc(texels * sizeof(float));
        for (int i = 0; i < texels; i++) img[i] = 0.5f * (float)i - 7.0f;
        cudaChannelFormatDesc fmt = cudaCreateChannelDesc<float>();
        cudaArray_t arr;
        CHECK(cudaMallocArray(&arr, &fmt, w, h, cudaArraySurfaceLoadStore));
        CHECK(cudaMemcpy2DToArray(arr, 0, 0, img, w * sizeof(float), w * sizeof(float), h, cudaMemcpyHostToDevice));
        cudaResourceDesc rd = {};
        rd.resType = cudaResourceTypeArray;
        rd.res.array.array = arr;
        cudaTextureDesc td = {};
        td.addressMode[0] = td.addressMode[1] = cudaAddressModeClamp;
        td.filterMode = cudaFilterModePoint;
        td.readMode = cudaReadModeElementType;
        cudaTextureObject_t tex;
        CHECK(cudaCreateTextureObject(&tex, &rd, &td, NULL));
        float *out;
        CHECK(cudaMalloc(&out, texels * sizeof(float)));
        gp_tex_read<<<(texels + 127) / 128, 128>>>(out, tex, w, h);
        CHECK(cudaGetLastError());
        CHECK(cudaMemcpy(back, out, texels * sizeof(float), cudaMemcpyDeviceToHost));
        for (int i = 0; i < texels; i++) EXPECT(back[i] == img[i], "texel %d read %g, want %g", i, back[i], img[i]);
        cudaSurfaceObject_t surf;
        CHECK(cudaCreateSurfaceObject(&surf, &rd));
        gp_surf_scale<<<(texels + 127) / 128, 128>>>(surf, -2.0f, w, h);
        CHECK(cudaGetLastError());
        CHECK(cudaMemcpy2DFromArray(back, w * sizeof(float), arr, 0, 0, w * sizeof(float), h, cudaMemcpyDeviceToHost));
        for (int i = 0; i < texels; i++)
            EXPECT(back[i] == -2.0f * img[i], "surface texel %d = %g, want %g", i, back[i], -2.0f * img[i]);
        CHECK(cudaDestroySurfaceObject(surf));
        CHECK(cudaDestroyTextureObject(tex));
        CHECK(cudaFreeArray(arr));
        CHECK(cudaFree(out));
        free(img);
        free(back);
    }
    // Managed memory as cudart programs use it: written by the host, read
    // and written by kernels, read by the host after a synchronise, with
    // prefetches and advice on the way.
    {
        const int m = 100003;
        float *x, *y;
        CHECK(cudaMallocManaged(&x, m * sizeof(float)));
        CHECK(cudaMallocManaged(&y, m * sizeof(float)));
        for (int i = 0; i < m; i++) {
            x[i] = (float)(i % 1000);
            y[i] = 1.0f;
        }
        cudaMemLocation gpu = {};
        gpu.type = cudaMemLocationTypeDevice;
        gpu.id = 0;
        CHECK(cudaMemAdvise(x, m * sizeof(float), cudaMemAdviseSetReadMostly, gpu));
        CHECK(cudaMemPrefetchAsync(x, m * sizeof(float), gpu, 0, 0));
        gp_vector_add<<<(m + 255) / 256, 256>>>(x, y, y, m);
        CHECK(cudaGetLastError());
        CHECK(cudaDeviceSynchronize());
        for (int i = 0; i < m; i++) EXPECT(y[i] == x[i] + 1.0f, "managed y[%d] = %g", i, y[i]);
        y[5] = 100.0f;
        gp_scale<<<(m + 255) / 256, 256>>>(y, 2.0f, m);
        CHECK(cudaDeviceSynchronize());
        EXPECT(y[5] == 200.0f && y[m - 1] == 2.0f * (x[m - 1] + 1.0f), "managed after scale: %g %g", y[5], y[m - 1]);
        cudaPointerAttributes pa;
        CHECK(cudaPointerGetAttributes(&pa, y));
        EXPECT(pa.type == cudaMemoryTypeManaged, "managed pointer type %d", (int)pa.type);
        int read_mostly = 0;
        CHECK(cudaMemRangeGetAttribute(&read_mostly, sizeof read_mostly, cudaMemRangeAttributeReadMostly, x,
                                       m * sizeof(float)));
        EXPECT(read_mostly == 1, "read-mostly advice not kept: %d", read_mostly);
        CHECK(cudaFree(x));
        CHECK(cudaFree(y));
    }
    // __managed__ variables: the device's initial values, host writes that
    // kernels read, kernel writes the host reads after a synchronise, and a
    // copy from one.
    {
        EXPECT(m_count == 11, "__managed__ initial value %d", m_count);
        for (int i = 0; i < 3000; i++) m_table[i] = 0.5f * (float)i;
        gp_scale<<<(3000 + 255) / 256, 256>>>(m_table, 4.0f, 3000);
        CHECK(cudaGetLastError());
        CHECK(cudaDeviceSynchronize());
        for (int i = 0; i < 3000; i++) EXPECT(m_table[i] == 2.0f * (float)i, "m_table[%d] = %g", i, m_table[i]);
        m_count += 5;
        int back = 0;
        CHECK(cudaMemcpy(&back, &m_count, sizeof back, cudaMemcpyDefault));
        EXPECT(back == 16, "copy of a __managed__ variable read %d", back);
        cudaPointerAttributes pa;
        CHECK(cudaPointerGetAttributes(&pa, m_table));
        EXPECT(pa.type == cudaMemoryTypeManaged, "__managed__ pointer type %d", (int)pa.type);
    }
    // A graph built node by node through cudart: memset, kernel, copy.
    {
        const int m = 5000;
        float *x, *y;
        CHECK(cudaMalloc(&x, m * sizeof(float)));
        CHECK(cudaMalloc(&y, m * sizeof(float)));
        cudaGraph_t g;
        CHECK(cudaGraphCreate(&g, 0));
        cudaMemsetParams ms = {};
        ms.dst = x;
        ms.value = 0x40000000u; // 2.0f
        ms.elementSize = 4;
        ms.width = m;
        ms.height = 1;
        cudaGraphNode_t set, scale, copy;
        CHECK(cudaGraphAddMemsetNode(&set, g, NULL, 0, &ms));
        float f = 2.5f;
        int count = m;
        void *args[] = {&x, &f, &count};
        cudaKernelNodeParams kp = {};
        kp.func = (void *)gp_scale;
        kp.gridDim = dim3((m + 255) / 256);
        kp.blockDim = dim3(256);
        kp.kernelParams = args;
        CHECK(cudaGraphAddKernelNode(&scale, g, &set, 1, &kp));
        CHECK(cudaGraphAddMemcpyNode1D(&copy, g, &scale, 1, y, x, m * sizeof(float), cudaMemcpyDeviceToDevice));
        cudaGraphExec_t ge;
        CHECK(cudaGraphInstantiate(&ge, g, 0));
        CHECK(cudaGraphLaunch(ge, 0));
        CHECK(cudaStreamSynchronize(0));
        float *back = (float *)malloc(m * sizeof(float));
        CHECK(cudaMemcpy(back, y, m * sizeof(float), cudaMemcpyDeviceToHost));
        for (int i = 0; i < m; i++) EXPECT(back[i] == 5.0f, "built graph y[%d] = %g", i, back[i]);
        free(back);
        CHECK(cudaGraphExecDestroy(ge));
        CHECK(cudaGraphDestroy(g));
        // Host nodes: a host function captured behind a kernel, and one
        // added to a built graph; each runs at every launch.
        cudaStream_t cs;
        CHECK(cudaStreamCreateWithFlags(&cs, cudaStreamNonBlocking));
        CHECK(cudaStreamBeginCapture(cs, cudaStreamCaptureModeGlobal));
        gp_scale<<<(m + 255) / 256, 256, 0, cs>>>(x, 1.0f, m);
        CHECK(cudaLaunchHostFunc(cs, count_graph_host, NULL));
        cudaGraph_t hg;
        CHECK(cudaStreamEndCapture(cs, &hg));
        cudaHostNodeParams hp = {count_graph_host, NULL};
        cudaGraphNode_t extra;
        CHECK(cudaGraphAddHostNode(&extra, hg, NULL, 0, &hp));
        cudaGraphExec_t hx;
        CHECK(cudaGraphInstantiate(&hx, hg, 0));
        for (int i = 0; i < 3; i++) CHECK(cudaGraphLaunch(hx, cs));
        CHECK(cudaStreamSynchronize(cs));
        EXPECT(graph_host_calls == 6, "host nodes ran %d times in 3 launches of 2", graph_host_calls);
        CHECK(cudaGraphExecDestroy(hx));
        CHECK(cudaGraphDestroy(hg));
        CHECK(cudaStreamDestroy(cs));
        CHECK(cudaFree(x));
        CHECK(cudaFree(y));
    }
    // Pinned host memory set by the driver's memsets (unified addressing
    // makes it an address they reach; XLA's redzone checks rely on it): in
    // stream order, and synchronously.
    {
        const int words = 4096;
        unsigned *hp;
        CHECK(cudaMallocHost(&hp, words * sizeof(unsigned)));
        for (int i = 0; i < words; i++) hp[i] = 1;
        cudaStream_t ms;
        CHECK(cudaStreamCreateWithFlags(&ms, cudaStreamNonBlocking));
        CHECK(cudaMemsetAsync(hp + 16, 0x7f, 64 * sizeof(unsigned), ms));
        CHECK(cudaStreamSynchronize(ms));
        for (int i = 0; i < words; i++) {
            unsigned want = i >= 16 && i < 80 ? 0x7f7f7f7fu : 1u;
            EXPECT(hp[i] == want, "pinned memset: word %d = %#x", i, hp[i]);
        }
        CHECK(cudaMemset(hp, 0, sizeof(unsigned)));
        EXPECT(hp[0] == 0 && hp[1] == 1, "synchronous pinned memset: %#x %#x", hp[0], hp[1]);
        // Copies naming pinned memory as device memory, each way.
        unsigned back[64], in[8] = {5, 6, 7, 8, 9, 10, 11, 12}, *dbuf;
        CHECK(cudaMalloc(&dbuf, 64 * sizeof(unsigned)));
        CHECK(cudaMemcpyAsync(back, hp + 16, sizeof back, cudaMemcpyDeviceToHost, ms));
        CHECK(cudaMemcpyAsync(hp + 100, in, sizeof in, cudaMemcpyHostToDevice, ms));
        CHECK(cudaMemcpyAsync(dbuf, hp + 16, sizeof back, cudaMemcpyDeviceToDevice, ms));
        CHECK(cudaMemcpyAsync(hp + 200, dbuf, 8 * sizeof(unsigned), cudaMemcpyDeviceToDevice, ms));
        CHECK(cudaStreamSynchronize(ms));
        for (int i = 0; i < 64; i++) EXPECT(back[i] == 0x7f7f7f7fu, "pinned as source: %d = %#x", i, back[i]);
        for (int i = 0; i < 8; i++) {
            EXPECT(hp[100 + i] == in[i], "pinned as destination: %d = %u", i, hp[100 + i]);
            EXPECT(hp[200 + i] == 0x7f7f7f7fu, "device to pinned: %d = %#x", i, hp[200 + i]);
        }
        CHECK(cudaFree(dbuf));
        CHECK(cudaStreamDestroy(ms));
        CHECK(cudaFreeHost(hp));
    }
    // Cache preferences and kernel names, as cudart hands them on.
    {
        CHECK(cudaDeviceSetCacheConfig(cudaFuncCachePreferShared));
        cudaFuncCache pref = cudaFuncCachePreferNone;
        CHECK(cudaDeviceGetCacheConfig(&pref));
        EXPECT(pref == cudaFuncCachePreferShared, "device cache preference %d", (int)pref);
        CHECK(cudaDeviceSetCacheConfig(cudaFuncCachePreferNone));
        CHECK(cudaFuncSetCacheConfig(gp_scale, cudaFuncCachePreferL1));
        const char *name = NULL;
        CHECK(cudaFuncGetName(&name, gp_vector_add));
        EXPECT(name && strstr(name, "gp_vector_add"), "kernel name %s", name ? name : "(null)");
    }
    printf("OK cudart n=%d\n", n);
    return 0;
}
