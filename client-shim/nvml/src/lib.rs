//! gpupool's NVML: a `libnvidia-ml.so.1` for machines whose GPUs are remote,
//! so that tools and frameworks asking NVML (PyTorch for device counts and
//! memory, `nvidia-smi`-like monitors) see the GPUs the program has through
//! gpupool.
//!
//! It opens no connection of its own. `nvmlInit` loads `libcuda.so.1`
//! (`cuda`), which where gpupool is used is gpupool's client shim, the same
//! library and session as the program's CUDA calls; the devices are read
//! once through the standard driver entry points (`devices`), and what
//! changes (memory in use, utilisation, temperature, power) comes through
//! the shim's extension `gpupoolDeviceStatus`, which asks the GPU server and
//! caches the answer briefly. The C entry points live in `exports`; `session`
//! counts initialisations. If the `libcuda.so.1` found is not gpupool's,
//! `nvmlInit` fails with `NVML_ERROR_LIBRARY_NOT_FOUND` and says why.

pub mod cuda;
pub mod devices;
pub mod error;
pub mod exports;
pub mod format;
pub mod session;
