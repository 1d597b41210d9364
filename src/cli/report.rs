//! The human form of a pass report (`fleetctl plan` and `fleetctl reconcile` print it):
//! header, one aligned line per change, totals, notices.

use super::output::{bytes, delta, terminal_safe};
use pacfleet::plan::Action;
use pacfleet::reconcile::{PassReport, Verdict, WindowState, short};

/// The human form of a pass report: header, one aligned line per change, totals, notices.
pub(super) fn print_report(r: &PassReport) {
    let Some(pool) = &r.pool else {
        println!(
            "host {} is not in the fleet at {}: no pool selects it, nothing to do",
            r.host,
            short(&r.commit)
        );
        return;
    };
    let pinning = match r.generation {
        Some(g) => format!("generation {g}"),
        None => "floating".to_owned(),
    };
    println!(
        "host {} · pool {pool} ({pinning}) · fleet commit {}",
        r.host,
        short(&r.commit)
    );
    let window = match &r.window {
        WindowState::Closed { next: Some(n) } => format!("closed; opens {n}"),
        WindowState::Closed { next: None } => "closed; never opens again".to_owned(),
        WindowState::Open { until } => format!("open until {until}"),
        WindowState::None => "open (no window)".to_owned(),
    };
    println!("window: {window}");
    println!(
        "signed: sequence {} by {}",
        r.sequence,
        r.signers.join(", ")
    );
    if !r.waiting.is_empty() {
        println!(
            "waiting for a signature: {} newer commit{}, newest {}",
            r.waiting.len(),
            if r.waiting.len() == 1 { "" } else { "s" },
            short(r.waiting.last().map_or("", String::as_str))
        );
    }
    let cs = &r.changeset;
    for a in &cs.answers {
        println!("policy: {}", terminal_safe(a));
    }
    for h in &cs.held {
        println!("held: {}", terminal_safe(&h.to_string()));
    }
    if cs.is_empty() {
        if cs.held.is_empty() {
            println!("converged: nothing to do");
        } else {
            println!(
                "not converged: {} package(s) held back by this host's IgnorePkg/IgnoreGroup",
                cs.held.len()
            );
        }
        return;
    }
    let name_w = cs.changes.iter().map(|c| c.name.len()).max().unwrap_or(0);
    let old_w = cs
        .changes
        .iter()
        .map(|c| c.old.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(0);
    let new_w = cs
        .changes
        .iter()
        .map(|c| c.new.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(0);
    for c in &cs.changes {
        let reason = match c.reason {
            Some(pacfleet::plan::Reason::Explicit) => "explicit",
            Some(pacfleet::plan::Reason::Dependency) => "dep",
            None => "",
        };
        let sizes = match c.action {
            Action::MarkExplicit | Action::MarkDependency => String::new(),
            _ if c.download_size > 0 => format!(
                "{:>10} dl {:>11}",
                bytes(c.download_size),
                delta(c.size_delta)
            ),
            _ => format!("{:>10}    {:>11}", "", delta(c.size_delta)),
        };
        println!(
            "  {:15} {:name_w$}  {:>old_w$} -> {:new_w$}  {reason:8} {sizes}  {}",
            c.action,
            c.name,
            c.old.as_deref().unwrap_or("-"),
            c.new.as_deref().unwrap_or("-"),
            c.why.join(", ")
        );
    }
    let adds_files = cs.changes.iter().any(|c| {
        matches!(
            c.action,
            Action::Install | Action::Upgrade | Action::Downgrade | Action::Reinstall
        )
    });
    // After a prefetch (or any earlier download) libalpm finds every file in the cache.
    let cached = if adds_files && cs.download_size() == 0 {
        " (every package file is in the cache)"
    } else {
        ""
    };
    println!(
        "{} · download {}{cached} · installed size {}",
        cs.summary(),
        bytes(cs.download_size()),
        delta(cs.size_delta())
    );
    if !cs.pacnew.is_empty() {
        println!(
            "probably .pacnew (modified config files): {}",
            cs.pacnew.join(", ")
        );
    }
    match &r.verdict {
        Verdict::Pending { hold } => println!("{hold}"),
        Verdict::Applied => println!("applied in {:.1}s", r.duration.as_secs_f64()),
        Verdict::AppliedWithWarnings => {
            println!("applied with warnings in {:.1}s", r.duration.as_secs_f64())
        }
        Verdict::Unhealthy { rolled_back } => {
            let failure = r.health.as_ref().and_then(|h| h.failure.as_deref());
            println!(
                "applied, then the health check failed: {}",
                terminal_safe(failure.unwrap_or("no detail"))
            );
            if let (true, Some(back)) = (rolled_back, &r.rolled_back) {
                println!(
                    "rolled back to the packages this host had before: {}",
                    back.summary_with_versions()
                );
            }
        }
        _ => {}
    }
    if let Some(w) = &r.wave {
        println!("rollout: wave {} ({} of {})", w.name, w.index + 1, w.of);
    }
    // What the pass downloaded (peers or upstream), or prefetched for the pending change.
    if let Some(d) = &r.downloads {
        for (label, text) in super::output::download_lines(d) {
            println!("{label}: {text}");
        }
    }
    for a in &r.notices.answers {
        println!("policy: {}", terminal_safe(a));
    }
    for w in &r.notices.warnings {
        println!("warning: {}", terminal_safe(w));
    }
    for n in &r.notices.pacnew {
        println!("new config written as {n}: merge it (pacdiff)");
    }
    for n in &r.notices.pacsave {
        println!("config of a removed package kept as {n}");
    }
}
