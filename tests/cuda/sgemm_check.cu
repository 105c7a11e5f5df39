// cuBLAS SGEMM checked against the CPU, for the GPU machine script: the same
// unmodified program runs natively and through gpupool.
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "check.h"

#define CHECK_BLAS(call)                                         \
    do {                                                         \
        cublasStatus_t s_ = (call);                              \
        if (s_ != CUBLAS_STATUS_SUCCESS) {                       \
            fprintf(stderr, "FAIL %s = %d\n", #call, (int)s_);   \
            return 1;                                            \
        }                                                        \
    } while (0)

int main() {
    const int n = 512, reps = 10;
    const size_t bytes = (size_t)n * n * sizeof(float);
    float *a = (float *)malloc(bytes), *b = (float *)malloc(bytes), *c = (float *)malloc(bytes);
    srand(7);
    for (int i = 0; i < n * n; i++) {
        a[i] = (float)(rand() % 17) / 16.0f - 0.5f;
        b[i] = (float)(rand() % 13) / 12.0f - 0.5f;
    }
    float *da, *db, *dc;
    CHECK(cudaMalloc(&da, bytes));
    CHECK(cudaMalloc(&db, bytes));
    CHECK(cudaMalloc(&dc, bytes));
    CHECK(cudaMemcpy(da, a, bytes, cudaMemcpyHostToDevice));
    CHECK(cudaMemcpy(db, b, bytes, cudaMemcpyHostToDevice));
    cublasHandle_t h;
    CHECK_BLAS(cublasCreate(&h));
    const float one = 1.0f, zero = 0.0f;
    // Warm-up (loads the kernels), then timed repetitions.
    CHECK_BLAS(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, da, n, db, n, &zero, dc, n));
    CHECK(cudaDeviceSynchronize());
    double t0 = now_ms();
    for (int r = 0; r < reps; r++)
        CHECK_BLAS(cublasSgemm(h, CUBLAS_OP_N, CUBLAS_OP_N, n, n, n, &one, da, n, db, n, &zero, dc, n));
    CHECK(cudaDeviceSynchronize());
    double ms = (now_ms() - t0) / reps;
    CHECK(cudaMemcpy(c, dc, bytes, cudaMemcpyDeviceToHost));
    // Column-major: c[i + j*n] = sum_k a[i + k*n] * b[k + j*n].
    double max_err = 0;
    for (int j = 0; j < n; j += 7)
        for (int i = 0; i < n; i += 5) {
            double s = 0;
            for (int k = 0; k < n; k++) s += (double)a[i + k * n] * b[k + j * n];
            max_err = fmax(max_err, fabs(s - c[i + j * n]));
        }
    if (max_err > 1e-2) {
        fprintf(stderr, "FAIL sgemm max error %g\n", max_err);
        return 1;
    }
    CHECK_BLAS(cublasDestroy(h));
    printf("OK sgemm n=%d\n", n);
    printf("BENCH sgemm_512_ms %.4f\n", ms);
    return 0;
}
