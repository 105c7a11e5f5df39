// Relocatable device code (`nvcc -rdc=true`), for gpupool's tests: the
// kernel calls a device function defined in another file (rdc_part.cu), so
// the device code is linked, by nvlink at build time (SASS builds) or by
// the driver at load (PTX-only builds, whose linked fat binary is empty).
// cudart registers it with a version 2 fat-binary wrapper. The kernel's
// name is one gpupool's software driver knows; the result is checked.
#include <cstdio>
#include <cuda_runtime.h>

#include "check.h"

__device__ float gp_twice(float x);

__global__ void gp_scale(float *x, float s, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) x[i] = gp_twice(x[i]) * s * 0.5f;
}

int main() {
    const int n = 1 << 12;
    static float host[1 << 12];
    for (int i = 0; i < n; i++) host[i] = (float)(i % 100);
    float *x;
    CHECK(cudaMalloc(&x, n * sizeof(float)));
    CHECK(cudaMemcpy(x, host, n * sizeof(float), cudaMemcpyHostToDevice));
    gp_scale<<<(n + 255) / 256, 256>>>(x, 3.0f, n);
    CHECK(cudaGetLastError());
    CHECK(cudaMemcpy(host, x, n * sizeof(float), cudaMemcpyDeviceToHost));
    for (int i = 0; i < n; i++)
        EXPECT(host[i] == 3.0f * (float)(i % 100), "x[%d] = %g, expected %g", i, host[i], 3.0f * (float)(i % 100));
    CHECK(cudaFree(x));
    printf("OK rdc n=%d\n", n);
    return 0;
}
