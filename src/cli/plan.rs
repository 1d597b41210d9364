//! `fleetctl plan`: fetch, resolve and show exactly what the next reconcile would do; takes
//! no lock. Exit 0 converged, 1 changes, 2 error.

use super::PlanArgs;
use super::report::print_report;
use pacfleet::config::AgentConfig;
use pacfleet::reconcile::{self, PassOptions};

pub(super) fn run(args: PlanArgs) -> anyhow::Result<u8> {
    let cfg = AgentConfig::load(&args.config.config)?;
    let opts = PassOptions::default();
    let report = reconcile::run(&cfg, opts)?;
    if args.json {
        super::output::json(&report)?;
    } else {
        print_report(&report);
    }
    if let Some(refused) = &report.refused {
        eprintln!("error: refused: {}", super::output::terminal_safe(refused));
    }
    // docs/contract.md §3: 3 when the trust rules refused a newer commit.
    Ok(report.exit(opts).code())
}
