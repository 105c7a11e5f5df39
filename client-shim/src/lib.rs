//! gpupool client shim: a `libcuda.so.1` for machines without a GPU.
//!
//! Loaded by `LD_PRELOAD` or found first on `LD_LIBRARY_PATH`, it exports
//! every symbol of the real driver (`exports`, generated from `api/`). Calls
//! whose answers cannot change are answered from `state`; the rest go over
//! one connection (`remote`) to a gpupool GPU server: status-only calls
//! (launches, async copies and memsets, event records, frees) are streamed
//! without waiting, and their errors come back at the next synchronising
//! call, as CUDA reports asynchronous errors.

pub mod broker;
pub mod callbacks;
pub mod config;
pub mod error;
pub mod exports;
pub mod integrity;
pub mod pages;
pub mod procaddr;
pub mod remote;
pub mod report;
pub mod state;
pub mod uva;
