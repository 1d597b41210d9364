//! `fleetctl history`: the changesets this host applied (or tried to), oldest first.

use super::HistoryArgs;
use crate::agent::AgentConfig;
use crate::reconcile::short;
use crate::state::StateDir;

pub(super) fn run(args: HistoryArgs) -> anyhow::Result<u8> {
    let cfg = AgentConfig::load(&args.config.config)?;
    let state = StateDir::open(&cfg.state_dir)?;
    let history = state.read_history_prefix()?;
    if args.json {
        for e in &history.entries {
            println!("{}", serde_json::to_string(e)?);
        }
    } else if history.entries.is_empty() && history.corrupt.is_none() {
        println!(
            "no changesets recorded yet in {}",
            state.history_path().display()
        );
    } else {
        for e in &history.entries {
            let generation = e
                .generation
                .map(|g| format!(" generation {g}"))
                .unwrap_or_default();
            let when = e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            println!(
                "{when}  {}  pool {}{generation}  {:?}  {} change{}  {:.1}s",
                short(&e.commit),
                e.pool,
                e.outcome,
                e.changes.len(),
                if e.changes.len() == 1 { "" } else { "s" },
                e.duration_ms as f64 / 1000.0
            );
            for c in &e.changes {
                println!(
                    "    {:15} {} {} -> {}",
                    c.action,
                    c.name,
                    c.old.as_deref().unwrap_or("-"),
                    c.new.as_deref().unwrap_or("-")
                );
            }
            if let Some(err) = &e.error {
                println!("    error: {err}");
            }
        }
    }
    if let Some(corrupt) = history.corrupt {
        eprintln!("warning: {corrupt}; the entries above are those before the damaged line");
        return Ok(2);
    }
    Ok(0)
}
