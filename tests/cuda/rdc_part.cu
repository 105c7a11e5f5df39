// The other half of rdc_check.cu: a device function its kernel calls.
__device__ float gp_twice(float x) { return 2.0f * x; }
