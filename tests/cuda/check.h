// The test programs' checks: a failing CUDA runtime call or condition
// prints FAIL with where it happened, and the function returns 1. And the
// clock the BENCH lines are timed with.
#pragma once
#include <cstdio>
#include <ctime>
#include <cuda_runtime.h>

static inline double now_ms() {
    timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

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
