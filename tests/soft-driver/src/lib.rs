//! # gpupool soft driver — a simulated GPU (test double)
//!
//! **This is not a GPU driver.** It is a software test double for NVIDIA's
//! `libcuda.so.1`, built as a `cdylib` so gpupool's GPU server can load it
//! in place of the real driver and be tested end to end on machines with no
//! GPU. It implements a subset of the CUDA driver API over host memory:
//!
//! * one or more simulated H100-like devices (compute capability 9.0,
//!   132 SMs) with plausible attributes;
//! * primary and created contexts, thread-local current context;
//! * device memory as real, lazily committed host memory with capacity
//!   accounting (`GPUPOOL_SOFT_MEMORY_MIB`, default 16 GiB per device);
//!   device pointers are host addresses, every device range is
//!   bounds-checked against the live allocations;
//! * copies and memsets, done at enqueue; with `GPUPOOL_SOFT_COPY_ENGINE=1`
//!   asynchronous copies to or from pinned host memory run on a simulated
//!   copy engine ([`engine`]), beside the caller, as DMA does, and every
//!   other call waits for them;
//! * modules and libraries loaded from PTX text, cubin ELF images or fat
//!   binaries ([`image`]), with parameter layouts and `.global` / `.const`
//!   variables read by a small PTX parser ([`ptx`]) or, for cubins, from
//!   the ELF's kernel attributes;
//! * launches of a fixed set of known kernels executed on the host
//!   ([`kernels`]), recognised by name, plain or C++-mangled; other kernels
//!   load but fail to launch with `CUDA_ERROR_NOT_SUPPORTED`;
//! * CUDA arrays (packed host memory), 2D and 3D copies to and from them,
//!   texture objects sampled by the known kernel `gp_tex_read` and surface
//!   objects read and written by `gp_surf_scale` ([`texture`]);
//! * TMA tensor maps, checked as the driver documents and packed in this
//!   double's own layout ([`tensormap`]);
//! * streams, events with host timestamps, occupancy queries; stream
//!   waits for a value that another thread's stream write meets
//!   ([`waits`]);
//! * memory and events shared with other processes (`cuIpc*`): an exported
//!   allocation moves onto a shared-memory file that the opening process
//!   maps through `/proc`;
//! * stream capture and graphs: a capturing stream (and any stream that
//!   waits for an event recorded in its capture) records launches, memsets,
//!   device copies and copies to or from pinned memory, and a graph launch
//!   replays them in order;
//! * sticky errors: a faulting kernel (`gp_fault`, or any out-of-bounds
//!   access) leaves its context in `CUDA_ERROR_ILLEGAL_ADDRESS` until the
//!   context is destroyed or the primary context is reset.
//!
//! Handles are validated against the driver's own tables and every call
//! returns the real driver's error code for the situations modelled. The
//! C entry points live in [`exports`]; the same functions can be called
//! from Rust through this crate's `rlib`.

pub mod engine;
pub mod exports;
pub mod image;
pub mod kernels;
pub mod ptx;
pub mod result;
pub mod tensormap;
pub mod texture;
pub mod waits;

mod driver;
mod memory;

pub use driver::DRIVER_VERSION;
