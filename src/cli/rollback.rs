//! `fleetctl rollback --pool P [--repo PATH] [--key K] [--to N] [--push]`: undo the pool's
//! last generation change in the operator's fleet work tree, commit, sign with a new sequence
//! number (`--key`), push (`--push`), and print what the change means for the hosts. Exit 0,
//! or 2 with a message that says what to do.
//!
//! Without `--to`, the newest commit on the branch that changed `pools/P.yaml`'s
//! `generation:` (found by walking `git log -- pools/P.yaml generations/P/` and comparing the
//! parsed values before and after each commit) is reverted (`git revert`), so everything that
//! commit did — the captured generation file, the pool's pointer — is undone together. A
//! generation change that itself lowered the number (an earlier rollback) is not reverted:
//! that would roll forward; `--to N` or `git revert` say that explicitly. With `--to N`, the
//! pool file's `generation:` line is set to N in place (comments and layout kept) and
//! committed as "P: roll back to generation N".
//!
//! Refusals: uncommitted changes in the work tree, a pool with no generation change in its
//! history, a generation N that does not exist, a result that does not validate, a revert that
//! does not apply cleanly.

use anyhow::bail;

use super::RollbackArgs;
use super::set_latest::{Edits, Sign, WorkTree, check_fleet, finish};
use crate::capture::{self, Summary};
use crate::diff::{self, Filter, FleetDiff};
use crate::manifest::{Fleet, Generation, Name};
use crate::reconcile::short;
use crate::source;

pub(super) fn run(args: RollbackArgs) -> anyhow::Result<u8> {
    Name::new(&args.pool).map_err(|e| anyhow::anyhow!("--pool: {e}"))?;
    let pool = args.pool.as_str();
    let wt = WorkTree::open(&args.repo)?;
    wt.ensure_clean()?;
    let branch = wt.branch()?;
    let before = Fleet::from_dir(&wt.root)?;
    let Some(doc) = before.pools.get(pool) else {
        bail!(
            "there is no pool `{pool}` in the fleet at {} (pools: {})",
            wt.root.display(),
            before
                .pools
                .keys()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    };
    let pool_file = doc.file.clone();
    let current = doc.spec.generation;
    let numbers: Vec<u32> = before
        .generations
        .keys()
        .filter(|(p, _)| p.as_str() == pool)
        .map(|(_, n)| *n)
        .collect();
    let remote = wt.prepare(&branch, args.push, args.key.is_some(), args.offline)?;

    let (commit, target) = match args.to {
        Some(n) => to_generation(&wt, &before, pool, &pool_file, current, &numbers, n)?,
        None => revert_last(&wt, &before, pool, &pool_file, &numbers)?,
    };
    let after = Fleet::from_dir(&wt.root)?;
    println!(
        "pool {pool}: {} → {} in commit {} on {branch}",
        pinning(current),
        pinning(target),
        short(&commit)
    );
    print_diff(&diff::diff(
        &before,
        &after,
        &Filter {
            pools: vec![pool.to_owned()],
            hosts: Vec::new(),
        },
    ));
    finish(
        &wt,
        &commit,
        &branch,
        args.key.as_deref(),
        Sign { above: 0 },
        remote.as_deref(),
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

fn pinning(g: Option<u32>) -> String {
    g.map_or_else(|| "floating".to_owned(), |n| format!("generation {n}"))
}

fn lock<'a>(fleet: &'a Fleet, pool: &str, n: Option<u32>) -> Option<&'a Generation> {
    let n = n?;
    fleet
        .generations
        .iter()
        .find(|((p, m), _)| p.as_str() == pool && *m == n)
        .map(|(_, d)| &d.spec)
}

/// `Generation A → B: 2 downgraded, 1 removed.` and the changes, for commit messages.
fn change_text(
    before: &Fleet,
    after: &Fleet,
    pool: &str,
    from: Option<u32>,
    to: Option<u32>,
) -> String {
    let old = lock(before, pool, from);
    let new = lock(after, pool, to);
    let mut out = String::new();
    match (old, new) {
        (Some(o), Some(n)) => {
            let s: Summary = capture::compare(&o.packages, &n.packages);
            out.push_str(&format!(
                "Generation {} → {}: {}.\n",
                o.number,
                n.number,
                s.counts()
            ));
            if !s.is_empty() {
                out.push('\n');
                for l in s.lines(capture::MESSAGE_NAMES) {
                    out.push_str(&format!("  {l}\n"));
                }
            }
        }
        (Some(o), None) => out.push_str(&format!(
            "Generation {} → floating: hosts upgrade to their repositories' versions.\n",
            o.number
        )),
        (None, Some(n)) => out.push_str(&format!(
            "Floating → generation {}: hosts move to its {} pinned versions.\n",
            n.number,
            n.packages.len()
        )),
        (None, None) => {}
    }
    out
}

/// `--to N`: sets `generation: N` in the pool file and commits it.
fn to_generation(
    wt: &WorkTree,
    before: &Fleet,
    pool: &str,
    pool_file: &str,
    current: Option<u32>,
    numbers: &[u32],
    n: u32,
) -> anyhow::Result<(String, Option<u32>)> {
    if !numbers.contains(&n) {
        bail!(
            "generation {n} of pool `{pool}` does not exist ({} is missing); {}",
            capture::generation_path(pool, n),
            if numbers.is_empty() {
                format!(
                    "pool `{pool}` has no generations: capture one with `fleetctl set-latest --pool {pool}`"
                )
            } else {
                format!(
                    "it has {}",
                    numbers
                        .iter()
                        .map(u32::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            }
        );
    }
    if current == Some(n) {
        bail!("pool `{pool}` is already at generation {n}; nothing to roll back");
    }
    let edits = Edits::new(&wt.root).rewrite(pool_file, |old| {
        capture::set_pool_generation(pool_file, old, n).map_err(Into::into)
    })?;
    let after = match check_fleet(&wt.root, "", pool, Some(n)) {
        Ok(f) => f,
        Err(e) => {
            edits.undo();
            return Err(e.context(format!(
                "with `generation: {n}` the fleet does not validate; nothing was committed"
            )));
        }
    };
    let verb = match current {
        Some(c) if n < c => "roll back to",
        Some(_) => "move forward to",
        None => "pin to",
    };
    let message = format!(
        "{pool}: {verb} generation {n}\n\nSet with `fleetctl rollback --pool {pool} --to {n}`.\n{}",
        change_text(before, &after, pool, current, Some(n))
    );
    match wt.commit(&[pool_file], &message) {
        Ok(c) => Ok((c, Some(n))),
        Err(e) => {
            edits.undo();
            Err(e)
        }
    }
}

/// The pool file's text at `rev`, `None` when the file (or the revision) does not exist.
fn pool_text(wt: &WorkTree, rev: &str, pool_file: &str) -> anyhow::Result<Option<String>> {
    let Ok(commit) = source::rev_parse(&wt.root, rev) else {
        return Ok(None);
    };
    let files = source::read_tree(&wt.root, &commit, |p| p == pool_file)?;
    Ok(files
        .into_iter()
        .next()
        .map(|(_, b)| String::from_utf8_lossy(&b).into_owned()))
}

/// A commit that changed a pool's `generation:`.
struct GenerationChange {
    commit: String,
    /// The value in its parent (`None`: floating).
    from: Option<u32>,
    /// The value it set.
    to: Option<u32>,
}

/// The newest commit that changed the pool's `generation:`, with the value before and after.
fn last_generation_change(
    wt: &WorkTree,
    pool: &str,
    pool_file: &str,
) -> anyhow::Result<Option<GenerationChange>> {
    let log = wt.git(&[
        "log",
        "--format=%H",
        "HEAD",
        "--",
        pool_file,
        &format!("generations/{pool}/"),
    ])?;
    for c in log.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let Some(after) = pool_text(wt, c, pool_file)? else {
            continue; // the pool file was deleted here (and later re-created)
        };
        let Some(before) = pool_text(wt, &format!("{c}^"), pool_file)? else {
            return Ok(None); // the pool was created here: nothing older to return to
        };
        let parse = |text: &str, rev: &str| {
            capture::pool_generation(text).map_err(|e| {
                anyhow::anyhow!("{pool_file} at commit {} does not parse: {e}", short(rev))
            })
        };
        let (b, a) = (parse(&before, &format!("{c}^"))?, parse(&after, c)?);
        if a != b {
            return Ok(Some(GenerationChange {
                commit: c.to_owned(),
                from: b,
                to: a,
            }));
        }
    }
    Ok(None)
}

/// Without `--to`: reverts the newest commit that changed the pool's generation.
fn revert_last(
    wt: &WorkTree,
    before: &Fleet,
    pool: &str,
    pool_file: &str,
    numbers: &[u32],
) -> anyhow::Result<(String, Option<u32>)> {
    let have = if numbers.is_empty() {
        String::new()
    } else {
        format!(
            " (its generations: {})",
            numbers
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let Some(GenerationChange { commit, from, to }) = last_generation_change(wt, pool, pool_file)?
    else {
        bail!(
            "pool `{pool}` has no generation change to roll back: no commit on this branch changed `generation:` in {pool_file}{have}; pin a generation with `--to N`"
        );
    };
    let subject = wt
        .git(&["log", "-1", "--format=%s", &commit])?
        .trim()
        .to_owned();
    if let (Some(b), Some(a)) = (from, to)
        && a < b
    {
        bail!(
            "the last generation change of pool `{pool}` (commit {}: {subject}) already moved it back from generation {b} to {a}; reverting it would re-apply generation {b}. To undo that rollback on purpose run `git revert {}`; to go further back use `--to N`{have}",
            short(&commit),
            short(&commit)
        );
    }
    let abort = || {
        let _ = wt.git(&["revert", "--abort"]);
        let _ = wt.git(&["reset", "-q", "--hard", "HEAD"]);
    };
    if let Err(e) = wt.git(&["revert", "--no-commit", &commit]) {
        abort();
        return Err(e.context(format!(
            "commit {} (\"{subject}\") does not revert cleanly: later commits changed the same lines; nothing was changed. Set the generation directly with `--to {}`",
            short(&commit),
            from.map_or_else(|| "N".to_owned(), |b| b.to_string())
        )));
    }
    let after = match check_fleet(&wt.root, "", pool, from) {
        Ok(f) => f,
        Err(e) => {
            abort();
            return Err(e.context(format!(
                "reverting commit {} does not give a valid fleet; nothing was changed",
                short(&commit)
            )));
        }
    };
    let message = format!(
        "Revert \"{subject}\"\n\nThis reverts commit {commit}.\n\n{pool}: roll back from {} to {} (`fleetctl rollback --pool {pool}`).\n{}",
        pinning(to),
        pinning(from),
        change_text(before, &after, pool, to, from)
    );
    match wt.commit_staged(&message) {
        Ok(c) => Ok((c, from)),
        Err(e) => {
            abort();
            Err(e)
        }
    }
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
