// The one kernel of tests/c/cudart12_check.c, built to a fat binary that
// the CUDA 12 runtime registers (nvcc -fatbin).
extern "C" __global__ void gp_scale(float *p, float a, int n) {
    int i = blockIdx.x * blockDim.x + threadIdx.x;
    if (i < n) p[i] *= a;
}
