//! `fleetctl rollback --pool P [--repo PATH] [--key K] [--to N] [--push]`: undo the pool's
//! last generation change in the operator's fleet work tree, commit, sign with a new sequence
//! number (`--key`), push (`--push`), and print what the change means for the hosts. Exit 0,
//! or 2 with a message that says what to do.
//!
//! The flow and its refusals are `pacfleet::rollback`'s; signing and pushing are the ending it
//! shares with set-latest (`cli/signing.rs`). This file parses, calls and prints.

use super::RollbackArgs;
use super::signing::{finish, warn};
use pacfleet::diff::{self, FleetDiff};
use pacfleet::manifest::Name;
use pacfleet::reconcile::short;
use pacfleet::rollback::{self, Rollback, pinning};

pub(super) fn run(args: RollbackArgs) -> anyhow::Result<u8> {
    let pool = Name::new(&args.pool).map_err(|e| anyhow::anyhow!("--pool: {e}"))?;
    let r = rollback::rollback(
        &Rollback {
            pool: &pool,
            repo: &args.repo,
            to: args.to,
            sign: args.key.is_some(),
            push: args.push,
            offline: args.offline,
        },
        &mut warn,
    )?;
    println!(
        "pool {pool}: {} → {} in commit {} on {}",
        pinning(r.from),
        pinning(r.to),
        short(&r.commit),
        r.branch
    );
    print_diff(&r.diff);
    finish(
        &r.work_tree,
        &r.commit,
        &r.branch,
        args.key.as_deref(),
        0,
        r.remote.as_deref(),
    )?;
    println!(
        "hosts of pool {pool} move to these versions on their next reconcile{}",
        if args.key.is_some() && args.push {
            ""
        } else {
            ", once the commit is signed and pushed"
        }
    );
    Ok(0)
}

/// What the commit means for the pool and its hosts, from `fleetctl diff`'s library.
fn print_diff(d: &FleetDiff) {
    if d.is_empty() {
        println!("  no change for any host");
        return;
    }
    let arrow = |old: &Option<String>, new: &Option<String>| {
        format!(
            "{} → {}",
            old.as_deref().unwrap_or("unset"),
            new.as_deref().unwrap_or("unset")
        )
    };
    for s in &d.fleet {
        println!("  fleet {}: {}", s.field, arrow(&s.old, &s.new));
    }
    for p in &d.pools {
        println!(
            "  pool {} ({}): {} → {}",
            p.pool,
            format!("{:?}", p.status).to_lowercase(),
            pinning(p.generation.old),
            pinning(p.generation.new)
        );
        for s in &p.settings {
            println!("    {}: {}", s.field, arrow(&s.old, &s.new));
        }
        let width = p.packages.iter().map(|r| r.name.len()).max().unwrap_or(0);
        for r in &p.packages {
            println!(
                "    {:<10} {:<width$}  {}",
                r.change.as_str(),
                r.name,
                row(r)
            );
        }
    }
    for h in &d.hosts {
        println!(
            "  host {} ({}): {} → {}",
            h.host,
            format!("{:?}", h.status).to_lowercase(),
            h.pool.old.as_deref().unwrap_or("no pool"),
            h.pool.new.as_deref().unwrap_or("no pool")
        );
        for r in &h.packages {
            println!("    {:<10} {}  {}", r.change.as_str(), r.name, row(r));
        }
    }
}

/// A package row's values: `old → new`; checksums shortened, a missing one as `none`.
fn row(r: &diff::PackageChange) -> String {
    match r.change {
        diff::Change::Sha256 => {
            let sum = |s: &Option<String>| {
                s.as_deref()
                    .map_or_else(|| "none".to_owned(), |s| s.chars().take(12).collect())
            };
            format!("sha256 {} → {}", sum(&r.old), sum(&r.new))
        }
        _ => match (&r.old, &r.new) {
            (Some(o), Some(n)) => format!("{o} → {n}"),
            (Some(o), None) => o.clone(),
            (None, Some(n)) => n.clone(),
            (None, None) => String::new(),
        },
    }
}
