//! gpupool broker: the pool's control plane.
//!
//! GPU servers register their GPUs and heartbeat ([`control`], over
//! [`inventory`] descriptions); requests for whole GPUs or slices of one are
//! matched to GPUs by the [`placement`] engine under a pool-wide policy and
//! become [`lease`]s with a TTL and a token signed by the broker, which the
//! GPU server checks on its own. [`tenant`] quotas bound what each tenant
//! holds. Every change is written through a [`store`] (an embedded redb file
//! by default) before it is answered, so a restarted broker loses nothing.
//! [`api`] serves it all over HTTP/JSON with Prometheus [`metrics`];
//! [`client`] is the small HTTP client the `gpupool` CLI and the tests use.
//! [`sim`] replays the public openb cluster trace through the engine to
//! compare policies by how much GPU capacity they leave stranded.

pub mod api;
/// The broker's HTTP client (it lives in `proto`, shared with the GPU server
/// and the client shim).
pub use gpupool_proto::broker_client as client;
pub mod config;
pub mod control;
pub mod inventory;
pub mod lease;
pub mod metrics;
pub mod placement;
pub mod sim;
pub mod store;
pub mod tenant;
