//! `fleetctl history`: the changesets this host applied (or tried to), oldest first.

use super::HistoryArgs;
use pacfleet::config::AgentConfig;
use pacfleet::escape::terminal_safe;
use pacfleet::reconcile::short;
use pacfleet::state::StateDir;

pub(super) fn run(args: HistoryArgs) -> anyhow::Result<u8> {
    let cfg = AgentConfig::load(&args.config.config)?;
    let state = StateDir::open(&cfg.state_dir)?;
    let history = state.read_history_prefix()?;
    let skip = args
        .limit
        .map_or(0, |n| history.entries.len().saturating_sub(n));
    let entries = &history.entries[skip..];
    if args.json {
        for e in entries {
            println!("{}", serde_json::to_string(e)?);
        }
    } else if history.entries.is_empty() && history.corrupt.is_none() {
        println!(
            "no changesets recorded yet in {}",
            state.history_path().display()
        );
    } else {
        for e in entries {
            let generation = e
                .generation
                .map(|g| format!(" generation {g}"))
                .unwrap_or_default();
            let when = e.at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
            let outcome = serde_json::to_value(e.outcome)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let commit = if e.commit.is_empty() {
                "(no target)"
            } else {
                short(&e.commit)
            };
            println!(
                "{when}  {commit}  pool {}{generation}  {outcome}  {} change{}  {:.1}s",
                e.pool,
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
            for h in &e.held {
                println!("    held: {}", terminal_safe(&h.to_string()));
            }
            for a in &e.notices.answers {
                println!("    policy: {}", terminal_safe(a));
            }
            for w in &e.notices.warnings {
                println!("    warning: {}", terminal_safe(w));
            }
            for f in e.notices.pacnew.iter().chain(&e.notices.pacsave) {
                println!("    config: {}", terminal_safe(f));
            }
            if let Some(d) = &e.downloads {
                for (label, text) in super::output::download_lines(d) {
                    println!("    {label}: {text}");
                }
            }
            if let Some(err) = &e.error {
                println!("    error: {}", terminal_safe(err));
            }
        }
    }
    if let Some(corrupt) = history.corrupt {
        eprintln!("warning: {corrupt}; the entries above are those before the damaged line");
        return Ok(2);
    }
    Ok(0)
}
