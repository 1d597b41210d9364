//! rollback's flow ([`rollback`]): undo the pool's last generation change in the operator's
//! fleet work tree, or pin `--to N`, and commit; `fleetctl rollback` then prints what the
//! change means for the hosts ([`RolledBack::diff`]), signs with a new sequence number and
//! pushes (`signing::sign_new`, `WorkTree::push`).
//!
//! Without `to`, the newest commit on the branch that changed `pools/P.yaml`'s
//! `generation:` (found by walking `git log -- pools/P.yaml generations/P/` and comparing the
//! parsed values before and after each commit) is reverted (`git revert`), so everything that
//! commit did — the captured generation file, the pool's pointer — is undone together. A
//! generation change that itself lowered the number (an earlier rollback) is not reverted:
//! that would roll forward; `--to N` or `git revert` say that explicitly. With `to` N, the
//! pool file's `generation:` line is set to N in place (comments and layout kept) and
//! committed as "P: roll back to generation N".
//!
//! Refusals ([`RollbackError`]): uncommitted changes in the work tree, a pool with no
//! generation change in its history, a generation N that does not exist, a result that does
//! not validate, a revert that does not apply cleanly. The work tree is driven by `worktree`;
//! nothing here prints.

use crate::capture::{self, Summary};
use crate::diff::{self, Filter, FleetDiff};
use crate::manifest::{Fleet, Generation, LoadError, Name};
use crate::reconcile::short;
use crate::source::{self, ReadError};
use crate::worktree::{CheckError, Edits, WorkTree, WorkTreeError, check_fleet};

/// rollback refused or failed; nothing was committed.
#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    /// The work tree could not be used.
    #[error(transparent)]
    WorkTree(#[from] WorkTreeError),
    /// The work tree's fleet does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Reading the work tree's history failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// No such pool.
    #[error("there is no pool `{pool}` in the fleet at {} (pools: {pools})", root.display())]
    NoPool {
        /// The pool.
        pool: String,
        /// The work tree.
        root: std::path::PathBuf,
        /// The pools there are, comma-separated.
        pools: String,
    },
    /// `--to N` names no generation of the pool.
    #[error("generation {number} of pool `{pool}` does not exist ({path} is missing); {hint}")]
    NoGeneration {
        /// The generation asked for.
        number: u32,
        /// The pool.
        pool: String,
        /// Its file.
        path: String,
        /// The generations there are, or how to capture one.
        hint: String,
    },
    /// `--to N` where the pool is at N.
    #[error("pool `{pool}` is already at generation {number}; nothing to roll back")]
    AlreadyAt {
        /// The pool.
        pool: String,
        /// The generation.
        number: u32,
    },
    /// The fleet with `generation: N` does not validate (the edit was put back).
    #[error("with `generation: {number}` the fleet does not validate; nothing was committed")]
    Invalid {
        /// The generation.
        number: u32,
        /// Why.
        #[source]
        source: CheckError,
    },
    /// A pool file in the history does not parse.
    #[error("{file} at commit {} does not parse: {detail}", short(commit))]
    PoolParse {
        /// The pool file.
        file: String,
        /// The commit (or `C^`).
        commit: String,
        /// Why.
        detail: String,
    },
    /// No commit changed the pool's generation.
    #[error(
        "pool `{pool}` has no generation change to roll back: no commit on this branch changed `generation:` in {file}{have}; pin a generation with `--to N`"
    )]
    NoChange {
        /// The pool.
        pool: String,
        /// Its file.
        file: String,
        /// ` (its generations: …)`, or nothing.
        have: String,
    },
    /// The last change was a rollback already.
    #[error(
        "the last generation change of pool `{pool}` (commit {}: {subject}) already moved it back from generation {from} to {to}; reverting it would re-apply generation {from}. To undo that rollback on purpose run `git revert {}`; to go further back use `--to N`{have}",
        short(commit),
        short(commit)
    )]
    WouldRollForward {
        /// The pool.
        pool: String,
        /// The commit.
        commit: String,
        /// Its subject.
        subject: String,
        /// The generation before it.
        from: u32,
        /// The generation it set.
        to: u32,
        /// ` (its generations: …)`, or nothing.
        have: String,
    },
    /// `git revert` did not apply (the work tree was reset).
    #[error(
        "commit {} (\"{subject}\") does not revert cleanly: later commits changed the same lines; nothing was changed. Set the generation directly with `--to {to}`",
        short(commit)
    )]
    RevertConflict {
        /// The commit.
        commit: String,
        /// Its subject.
        subject: String,
        /// The generation to pin instead, or `N`.
        to: String,
        /// What git said.
        #[source]
        source: Box<WorkTreeError>,
    },
    /// The reverted fleet does not validate (the work tree was reset).
    #[error(
        "reverting commit {} does not give a valid fleet; nothing was changed",
        short(commit)
    )]
    RevertInvalid {
        /// The commit.
        commit: String,
        /// Why.
        #[source]
        source: CheckError,
    },
}

/// What to roll back, and where.
#[derive(Debug, Clone, Copy)]
pub struct Rollback<'a> {
    /// The pool.
    pub pool: &'a Name,
    /// The operator's fleet work tree.
    pub repo: &'a std::path::Path,
    /// Pin this generation instead of reverting the last change.
    pub to: Option<u32>,
    /// The commit will be signed (the notes are fetched first).
    pub sign: bool,
    /// The commit will be pushed (the remote is checked first).
    pub push: bool,
    /// When signing, do not fetch the remote's notes.
    pub offline: bool,
}

/// What [`rollback`] committed.
#[derive(Debug)]
pub struct RolledBack {
    /// The work tree.
    pub work_tree: WorkTree,
    /// Its branch.
    pub branch: String,
    /// The remote to push to (`push`).
    pub remote: Option<String>,
    /// The commit made.
    pub commit: String,
    /// The pool's generation before (`None`: floating).
    pub from: Option<u32>,
    /// Its generation now.
    pub to: Option<u32>,
    /// What the commit changes for the pool and its hosts.
    pub diff: FleetDiff,
}

/// Rolls the pool back (see the module documentation) and commits. `warn` gets what the
/// operator is warned of on the way (signature notes not fetched).
pub fn rollback(
    opts: &Rollback<'_>,
    warn: &mut dyn FnMut(String),
) -> Result<RolledBack, RollbackError> {
    let pool = opts.pool.as_str();
    let wt = WorkTree::open(opts.repo)?;
    wt.ensure_clean()?;
    let branch = wt.branch()?;
    let before = Fleet::from_dir(&wt.root)?;
    let Some(doc) = before.pools.get(pool) else {
        return Err(RollbackError::NoPool {
            pool: pool.to_owned(),
            root: wt.root.clone(),
            pools: before
                .pools
                .keys()
                .map(|p| p.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        });
    };
    let pool_file = doc.file.clone();
    let current = doc.spec.generation;
    let numbers: Vec<u32> = before
        .generations
        .keys()
        .filter(|(p, _)| p.as_str() == pool)
        .map(|(_, n)| *n)
        .collect();
    let prepared = wt.prepare(&branch, opts.push, opts.sign, opts.offline)?;
    if let Some(w) = prepared.synced.as_ref().and_then(|s| s.warning(&wt.root)) {
        warn(w);
    }

    let (commit, target) = match opts.to {
        Some(n) => to_generation(&wt, &before, pool, &pool_file, current, &numbers, n)?,
        None => revert_last(&wt, &before, pool, &pool_file, &numbers)?,
    };
    let after = Fleet::from_dir(&wt.root)?;
    let diff = diff::diff(
        &before,
        &after,
        &Filter {
            pools: vec![pool.to_owned()],
            hosts: Vec::new(),
        },
    );
    Ok(RolledBack {
        work_tree: wt,
        branch,
        remote: prepared.remote,
        commit,
        from: current,
        to: target,
        diff,
    })
}

/// `generation N`, or `floating`.
pub fn pinning(g: Option<u32>) -> String {
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
) -> Result<(String, Option<u32>), RollbackError> {
    if !numbers.contains(&n) {
        return Err(RollbackError::NoGeneration {
            number: n,
            pool: pool.to_owned(),
            path: capture::generation_path(pool, n),
            hint: if numbers.is_empty() {
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
            },
        });
    }
    if current == Some(n) {
        return Err(RollbackError::AlreadyAt {
            pool: pool.to_owned(),
            number: n,
        });
    }
    let edits = Edits::new(&wt.root).rewrite(pool_file, |old| {
        capture::set_pool_generation(pool_file, old, n)
    })?;
    let after = match check_fleet(&wt.root, "", pool, Some(n)) {
        Ok(f) => f,
        Err(source) => {
            edits.undo();
            return Err(RollbackError::Invalid { number: n, source });
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
            Err(e.into())
        }
    }
}

/// The pool file's text at `rev`, `None` when the file (or the revision) does not exist.
fn pool_text(wt: &WorkTree, rev: &str, pool_file: &str) -> Result<Option<String>, ReadError> {
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
) -> Result<Option<GenerationChange>, RollbackError> {
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
            capture::pool_generation(text).map_err(|detail| RollbackError::PoolParse {
                file: pool_file.to_owned(),
                commit: rev.to_owned(),
                detail,
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
) -> Result<(String, Option<u32>), RollbackError> {
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
        return Err(RollbackError::NoChange {
            pool: pool.to_owned(),
            file: pool_file.to_owned(),
            have,
        });
    };
    let subject = wt
        .git(&["log", "-1", "--format=%s", &commit])?
        .trim()
        .to_owned();
    if let (Some(b), Some(a)) = (from, to)
        && a < b
    {
        return Err(RollbackError::WouldRollForward {
            pool: pool.to_owned(),
            commit,
            subject,
            from: b,
            to: a,
            have,
        });
    }
    let abort = || {
        let _ = wt.git(&["revert", "--abort"]);
        let _ = wt.git(&["reset", "-q", "--hard", "HEAD"]);
    };
    if let Err(source) = wt.git(&["revert", "--no-commit", &commit]) {
        abort();
        return Err(RollbackError::RevertConflict {
            commit,
            subject,
            to: from.map_or_else(|| "N".to_owned(), |b| b.to_string()),
            source: Box::new(source),
        });
    }
    let after = match check_fleet(&wt.root, "", pool, from) {
        Ok(f) => f,
        Err(source) => {
            abort();
            return Err(RollbackError::RevertInvalid { commit, source });
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
            Err(e.into())
        }
    }
}
