//! gpupool broker: the pool's control plane.
//!
//! Servers register their GPUs ([`inventory`]); requests for whole GPUs or
//! slices of one are matched to GPUs by the [`placement`] engine under a
//! pool-wide policy, which returns allocations that leases are built on.
//! [`sim`] replays the public openb cluster trace through the engine to
//! compare policies by how much GPU capacity they leave stranded.

pub mod inventory;
pub mod placement;
pub mod sim;
