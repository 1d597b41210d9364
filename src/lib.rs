//! fleetctl: the command line on top of the pacfleet library (`crates/pacfleet`). Parse →
//! call → print: clap definitions, one file per subcommand, the output formats and progress
//! bars. A library target too, so the integration tests can read the clap definitions.

pub mod cli;
