//! pacfleet's integration tests, as one test binary (`cargo test --test it`).
//!
//! `harness` holds the shared fixtures; each other module tests one area against the real
//! pacman toolchain (run `eval "$(scripts/libalpm.sh env)"` first).

mod agent;
mod arch;
mod badinput;
mod bench_smoke;
mod capture;
mod ci_workflow;
mod cli;
mod demo;
mod diff;
mod docs;
mod enroll;
mod example_fleet;
mod faults;
mod fleet_status;
mod harness;
mod health;
mod layers;
mod monitoring;
mod package;
mod peer_cache;
mod peer_discover;
mod peer_herd;
mod props;
mod reconcile;
mod rollout;
mod sign_remote;
mod snapshot;
mod source;
mod ssh;
mod status;
mod status_repo;
mod synth;
mod system;
mod systemd;
mod trust;
mod untrusted;
