// cuFFT transforms checked against a direct DFT on the CPU, for the GPU
// machine script: the same unmodified program runs natively and through
// gpupool. A power-of-two complex transform and a real transform of a length
// with a prime factor (cuFFT loads different kernel modules for each).
#include <cmath>
#include <complex>
#include <cstdio>
#include <cstdlib>
#include <cufft.h>
#include <cuda_runtime.h>

#include "check.h"

#define CHECK_FFT(call)                                        \
    do {                                                       \
        cufftResult r_ = (call);                               \
        if (r_ != CUFFT_SUCCESS) {                             \
            fprintf(stderr, "FAIL %s = %d\n", #call, (int)r_); \
            return 1;                                          \
        }                                                      \
    } while (0)

// The largest error of `got` (`outputs` values for each of `batch` rows)
// against the DFT of `in` (rows of n values, complex or real).
template <typename In>
static double dft_error(const In *in, const cufftComplex *got, int n, int outputs, int batch) {
    double worst = 0;
    for (int b = 0; b < batch; b++)
        for (int k = 0; k < outputs; k++) {
            std::complex<double> s = 0;
            for (int j = 0; j < n; j++) {
                double a = -2.0 * M_PI * (double)j * k / n;
                s += std::complex<double>(in[b * n + j]) * std::complex<double>(cos(a), sin(a));
            }
            const cufftComplex &g = got[b * outputs + k];
            worst = fmax(worst, std::abs(s - std::complex<double>(g.x, g.y)));
        }
    return worst;
}

int main() {
    srand(11);
    // Complex to complex, 256 points, 8 rows.
    const int n = 256, batch = 8;
    std::complex<float> *x = new std::complex<float>[n * batch];
    for (int i = 0; i < n * batch; i++)
        x[i] = std::complex<float>((rand() % 19) / 18.0f - 0.5f, (rand() % 23) / 22.0f - 0.5f);
    cufftComplex *dx, *dy;
    CHECK(cudaMalloc(&dx, sizeof(cufftComplex) * n * batch));
    CHECK(cudaMalloc(&dy, sizeof(cufftComplex) * n * batch));
    CHECK(cudaMemcpy(dx, x, sizeof(cufftComplex) * n * batch, cudaMemcpyHostToDevice));
    cufftHandle c2c;
    CHECK_FFT(cufftPlan1d(&c2c, n, CUFFT_C2C, batch));
    CHECK_FFT(cufftExecC2C(c2c, dx, dy, CUFFT_FORWARD));
    CHECK(cudaDeviceSynchronize());
    const int reps = 20;
    double t0 = now_ms();
    for (int r = 0; r < reps; r++) CHECK_FFT(cufftExecC2C(c2c, dx, dy, CUFFT_FORWARD));
    CHECK(cudaDeviceSynchronize());
    double ms = (now_ms() - t0) / reps;
    cufftComplex *y = new cufftComplex[n * batch];
    CHECK(cudaMemcpy(y, dy, sizeof(cufftComplex) * n * batch, cudaMemcpyDeviceToHost));
    double err = dft_error(x, y, n, n, batch);
    if (err > 1e-3) {
        fprintf(stderr, "FAIL c2c max error %g\n", err);
        return 1;
    }
    // Real to complex, 1000 points (2^3 5^3), 3 rows: n/2+1 outputs a row.
    const int m = 1000, rows = 3, outs = m / 2 + 1;
    float *r = new float[m * rows];
    for (int i = 0; i < m * rows; i++) r[i] = (rand() % 29) / 28.0f - 0.5f;
    float *dr;
    cufftComplex *dz;
    CHECK(cudaMalloc(&dr, sizeof(float) * m * rows));
    CHECK(cudaMalloc(&dz, sizeof(cufftComplex) * outs * rows));
    CHECK(cudaMemcpy(dr, r, sizeof(float) * m * rows, cudaMemcpyHostToDevice));
    cufftHandle r2c;
    CHECK_FFT(cufftPlan1d(&r2c, m, CUFFT_R2C, rows));
    CHECK_FFT(cufftExecR2C(r2c, dr, dz));
    CHECK(cudaDeviceSynchronize());
    cufftComplex *z = new cufftComplex[outs * rows];
    CHECK(cudaMemcpy(z, dz, sizeof(cufftComplex) * outs * rows, cudaMemcpyDeviceToHost));
    err = dft_error(r, z, m, outs, rows);
    if (err > 1e-2) {
        fprintf(stderr, "FAIL r2c max error %g\n", err);
        return 1;
    }
    CHECK_FFT(cufftDestroy(c2c));
    CHECK_FFT(cufftDestroy(r2c));
    printf("OK fft n=%d batch=%d, r2c n=%d rows=%d\n", n, batch, m, rows);
    printf("BENCH fft_c2c_256x8_ms %.4f\n", ms);
    return 0;
}
