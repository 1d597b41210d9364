//! `fleetctl reconcile`: one pass that applies. Exit 0 converged (or held back by a window or
//! pause, which the output says), 2 error, 3 refused by the trust rules.

use super::ReconcileArgs;
use pacfleet::config::AgentConfig;
use pacfleet::reconcile::{self, PassOptions};

pub(super) fn run(args: ReconcileArgs) -> anyhow::Result<u8> {
    if pacfleet::state::euid() != 0 {
        anyhow::bail!(
            "fleetctl reconcile changes this host's packages and records its state, as pacman does: run it as root (sudo fleetctl reconcile …); `fleetctl plan` and `fleetctl status` need no root"
        );
    }
    let cfg = AgentConfig::load(&args.config.config)?;
    // systemd stops the unit with SIGTERM; a pass stops before its transaction, never inside.
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        unsafe {
            signal_hook::low_level::register(signal, || {
                reconcile::STOP.store(true, std::sync::atomic::Ordering::SeqCst);
            })
        }?;
    }
    let opts = PassOptions {
        apply: true,
        dry_run: args.dry_run,
        ignore_window: args.ignore_window,
        full_plan: args.full_plan,
        bootstrap: args.bootstrap,
    };
    let report = reconcile::run(&cfg, opts)?;
    if args.json {
        super::output::json(&report)?;
    } else {
        super::report::print_report(&report);
    }
    if report.verdict == reconcile::Verdict::NotInFleet {
        eprintln!(
            "warning: no pool of the fleet selects host {}: pacfleet manages nothing on it; check `hostname:` in {} and the pools' `hosts:`/`labels:`",
            report.host,
            cfg.source.display()
        );
    }
    if let Some(refused) = &report.refused {
        eprintln!("error: refused: {}", super::output::terminal_safe(refused));
    }
    Ok(report.exit(opts).code())
}
