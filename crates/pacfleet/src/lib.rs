//! pacfleet: GitOps for fleets of Arch Linux machines.
//!
//! The library core; the `fleetctl` crate (the workspace's root: src/main.rs, src/cli/) is a
//! thin shell around it. No clap, anyhow or indicatif here: errors are typed per operation,
//! progress goes to a [`progress::Reporter`] the binary installs.
//! Pure logic (`manifest` parsing, `resolve`, `plan`) works on plain data; I/O sits at the
//! edges (`source` for git, `system`/`apply` for libalpm, `state` for the host's records).
//! The operator's workflows are library flows too — `set_latest`, `rollback` (over the
//! `worktree` driver), `signing` (over `trust` and `notes_sync`), `fleet_read` for `diff` —
//! each with its own error type, returning what the CLI prints. Nothing here uses `cli`.

pub mod agent;
pub mod apply;
pub mod archive;
pub mod capture;
pub mod config;
pub mod diff;
pub mod download;
pub mod enroll;
pub mod escape;
pub mod fleet_read;
pub mod fleet_reports;
pub mod fleet_status;
pub mod health;
pub mod keys;
pub mod manifest;
pub mod metrics;
pub mod notes_sync;
pub mod peer_discover;
pub mod peer_serve;
pub mod peers;
pub mod plan;
pub mod process;
pub mod progress;
pub mod reconcile;
pub mod report;
pub mod resolve;
pub mod rollback;
pub mod rollout;
pub mod set_latest;
pub mod signing;
pub mod snapshot;
pub mod source;
pub mod state;
pub mod status_repo;
pub mod sync_source;
pub mod system;
pub mod trust;
pub mod validate;
pub mod window;
pub mod worktree;
