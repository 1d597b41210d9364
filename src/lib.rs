//! pacfleet: GitOps for fleets of Arch Linux machines.
//!
//! The library core; `fleetctl` (src/main.rs, src/cli/) is a thin shell around it.
//! Pure logic (`manifest` parsing, `resolve`, `plan`) works on plain data; I/O sits at the
//! edges (`source` for git, `system`/`apply` for libalpm, `state` for the host's records).

pub mod agent;
pub mod apply;
pub mod archive;
pub mod capture;
pub mod cli;
pub mod config;
pub mod diff;
pub mod enroll;
pub mod escape;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod plan;
pub mod progress;
pub mod reconcile;
pub mod resolve;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod sync_source;
pub mod synth;
pub mod system;
pub mod trust;
pub mod validate;
pub mod window;
