//! `fleetctl set-latest --pool P [--config F] [--repo PATH] [--key K] [--push] [--message M]`:
//! on a host (typically a canary an operator upgraded and tested by hand), write every
//! installed package and version as the next generation of pool P, point the pool at it, and
//! commit that in the operator's fleet work tree; sign it with `--key`, push it with `--push`,
//! or leave the commit for review. Exit 0, or 2 with a message that says what to do.
//!
//! The flow and its refusals are `pacfleet::set_latest`'s; signing and pushing are the ending
//! it shares with rollback (`cli/signing.rs`). This file parses, calls and prints.

use super::SetLatestArgs;
use super::signing::{finish, warn};
use pacfleet::capture;
use pacfleet::config::AgentConfig;
use pacfleet::manifest::Name;
use pacfleet::reconcile::short;
use pacfleet::set_latest::{self, SetLatest};

pub(super) fn run(args: SetLatestArgs) -> anyhow::Result<u8> {
    let pool = Name::new(&args.pool).map_err(|e| anyhow::anyhow!("--pool: {e}"))?;
    let cfg = AgentConfig::load(&args.config.config)?;
    let c = set_latest::capture(
        &SetLatest {
            config: &cfg,
            pool: &pool,
            repo: &args.repo,
            sign: args.key.is_some(),
            push: args.push,
            offline: args.offline,
            message: args.message.as_deref(),
        },
        &mut warn,
    )?;

    println!(
        "captured generation {} of pool {} from {}: {} packages, sha256 for {} ({} from the sync databases, {} from cached package files{})",
        c.number,
        c.pool,
        c.host,
        c.packages,
        c.with_sum,
        c.from_sync_db,
        c.from_cache,
        match c.previous {
            Some(p) if c.kept > 0 => format!(", {} kept from generation {p}", c.kept),
            _ => String::new(),
        }
    );
    match (&c.summary, c.previous) {
        (Some(s), Some(p)) => {
            println!("  against generation {p}: {}", s.counts());
            for line in s.lines(capture::MESSAGE_NAMES) {
                println!("    {line}");
            }
        }
        _ => println!("  the pool floated until now"),
    }
    println!(
        "  wrote {}, set `generation: {}` in {}",
        c.gen_file, c.number, c.pool_file
    );
    println!("  committed {} on {}", short(&c.commit), c.branch);
    // The signature goes above the highest sequence in the notes (fetched before the commit)
    // and above the host's applied sequence.
    finish(
        &c.work_tree,
        &c.commit,
        &c.branch,
        args.key.as_deref(),
        c.applied_sequence,
        c.remote.as_deref(),
    )?;
    Ok(0)
}
