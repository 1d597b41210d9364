//! `fleetctl agent`: see `pacfleet::agent`. Runs until SIGTERM or SIGINT; exit 0 then, 2 if it
//! cannot start.

use super::AgentArgs;

pub(super) fn run(args: AgentArgs) -> anyhow::Result<u8> {
    pacfleet::agent::run(&args.config.config)?;
    Ok(0)
}
