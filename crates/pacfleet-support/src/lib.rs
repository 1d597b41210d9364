//! pacfleet-support: what pacfleet's demo, tests and benchmarks build their worlds from —
//! synthetic pacman packages, sync databases and archive layouts ([`synth`]), checked
//! against `repo-add` by the tests, the directory layout of a simulated host ([`host`]), and a
//! counting HTTP mirror ([`mirror`]). Not part of the host agent: `fleetctl` depends on it only
//! for `fleetctl demo` (its default `demo` feature).

pub mod host;
pub mod mirror;
pub mod synth;
