// The test programs' checks: a failing CUDA runtime call or condition
// prints FAIL with where it happened, and the function returns 1.
#pragma once
#include <cstdio>
#include <cuda_runtime.h>

#define CHECK(call)                                                                              \
    do {                                                                                         \
        cudaError_t e_ = (call);                                                                 \
        if (e_ != cudaSuccess) {                                                                 \
            fprintf(stderr, "FAIL %s:%d %s = %d (%s)\n", __FILE__, __LINE__, #call, (int)e_,     \
                    cudaGetErrorString(e_));                                                     \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)
#define EXPECT(cond, ...)                                                                        \
    do {                                                                                         \
        if (!(cond)) {                                                                           \
            fprintf(stderr, "FAIL " __VA_ARGS__);                                                \
            fprintf(stderr, "\n");                                                               \
            return 1;                                                                            \
        }                                                                                        \
    } while (0)
