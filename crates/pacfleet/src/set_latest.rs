//! set-latest's flow: on a host (typically a canary an operator upgraded and tested by hand),
//! write every installed package and version as the next generation of pool P, point the pool
//! at it, and commit that in the operator's fleet work tree ([`capture`]); `fleetctl
//! set-latest` then signs and pushes it (`signing::sign_new`, `WorkTree::push`).
//!
//! Refusals, checked before anything is written (see README "Capturing and rolling back
//! generations" for why): the host has applied no fleet state, or is not in pool P at the
//! commit it applied; the work tree has uncommitted changes; the work tree's branch does not
//! contain the commit the host applied, or asks the host for something else than that commit
//! did (another generation or lock, other explicit packages) — a capture must be based on the
//! fleet state the host runs, or it would silently undo the changes made since
//! ([`based_on_applied`]). Generation numbers are never reused ([`next_number`]).
//!
//! The host's packages come from `capture::read_host`, the lock and its text from `capture`,
//! the work tree is driven by `worktree`. Nothing here prints: [`Captured`] says what was done.

use std::collections::BTreeSet;

use chrono::{SecondsFormat, Utc};

use crate::capture::{self, CaptureError, Provenance, ShaSource, Summary};
use crate::config::AgentConfig;
use crate::fleet_read::{FleetReadError, fleet_at, fleet_at_either};
use crate::manifest::{Fleet, Generation, LoadError, Name};
use crate::reconcile::short;
use crate::resolve::{self, ResolveError, Resolved};
use crate::source::{self, ReadError};
use crate::state::{AppliedState, StateDir, StateError};
use crate::system::{HostPaths, Mode, System, SystemError};
use crate::worktree::{CheckError, Edits, WorkTree, WorkTreeError, check_fleet};

/// set-latest refused or failed; nothing was committed.
#[derive(Debug, thiserror::Error)]
pub enum SetLatestError {
    /// The work tree could not be used.
    #[error(transparent)]
    WorkTree(#[from] WorkTreeError),
    /// The host has applied nothing yet.
    #[error(
        "host {host} has not applied any fleet state yet ({} has no state.json): run `fleetctl reconcile` on it first, so the capture is based on a signed state it runs. If reconcile fails because its pool is pinned to a generation this host cannot reach (a pinned version found nowhere, a sha256 mismatch: pins from another machine or an example), unpin the pool (remove `generation:` from its file), sign and push, reconcile the host, then capture",
        state_dir.display()
    )]
    NotApplied {
        /// The host.
        host: String,
        /// Its state directory.
        state_dir: std::path::PathBuf,
    },
    /// The host's state could not be read.
    #[error(transparent)]
    State(#[from] StateError),
    /// The fleet at the applied commit could not be read.
    #[error(
        "cannot read the fleet at commit {}, which host {host} applied",
        short(commit)
    )]
    AppliedFleet {
        /// The applied commit.
        commit: String,
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: Box<FleetReadError>,
    },
    /// A fleet could not be read.
    #[error(transparent)]
    FleetRead(#[from] FleetReadError),
    /// The host does not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// No pool selects the host at the applied commit.
    #[error(
        "host {host} is not in pool `{pool}`: at the commit it applied ({}) no pool selects it; run set-latest on a host of pool `{pool}`",
        short(commit)
    )]
    NotInPool {
        /// The host.
        host: String,
        /// The pool asked for.
        pool: String,
        /// The applied commit.
        commit: String,
    },
    /// Another pool selects the host at the applied commit.
    #[error(
        "host {host} is in pool `{actual}`, not `{pool}` (at the commit it applied, {}); run set-latest on a host of pool `{pool}`, or pass --pool {actual}",
        short(commit)
    )]
    OtherPool {
        /// The host.
        host: String,
        /// The pool asked for.
        pool: String,
        /// The host's pool.
        actual: String,
        /// The applied commit.
        commit: String,
    },
    /// The work tree lacks the applied commit.
    #[error(
        "the work tree {} does not have commit {}, which host {host} applied: pull the fleet repository (`git pull`) and try again",
        root.display(),
        short(commit)
    )]
    MissingApplied {
        /// The work tree.
        root: std::path::PathBuf,
        /// The host.
        host: String,
        /// The applied commit.
        commit: String,
    },
    /// HEAD does not contain the applied commit.
    #[error(
        "the work tree's HEAD ({}) does not contain commit {}, which host {host} applied: check out the branch the hosts follow and pull, then try again",
        short(head),
        short(applied)
    )]
    NotAncestor {
        /// HEAD.
        head: String,
        /// The applied commit.
        applied: String,
        /// The host.
        host: String,
    },
    /// Reading the work tree's repository failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// At HEAD no pool or another pool selects the host.
    #[error(
        "host {host} is no longer in pool `{pool}` at the work tree's HEAD ({}): capture from a host of the pool",
        short(head)
    )]
    NoLongerInPool {
        /// The host.
        host: String,
        /// The pool.
        pool: String,
        /// HEAD.
        head: String,
    },
    /// The branch asks the host for something else than what it applied.
    #[error(
        "host {host} has not applied the current state of pool `{pool}`: it runs commit {} ({}), but the branch now asks it for {}{}{changed}. A capture must be based on the state the host runs, or it would silently undo those changes: sign and push them, run `fleetctl reconcile` on {host}, check it, then capture again",
        short(applied),
        pinning(*was),
        pinning(*now),
        if was == now { " with other packages or versions" } else { "" }
    )]
    NotCurrent {
        /// The host.
        host: String,
        /// The pool.
        pool: String,
        /// The applied commit.
        applied: String,
        /// The generation at the applied commit (`None`: floating).
        was: Option<u32>,
        /// The same, at HEAD.
        now: Option<u32>,
        /// `; changed since by: …` (the commits), or nothing.
        changed: String,
    },
    /// The host's packages could not be read.
    #[error(transparent)]
    System(#[from] SystemError),
    /// The host has no installed packages.
    #[error(
        "host {host} has no installed packages (root {}): nothing to capture; check `root:` and `dbpath:` in {}",
        root.display(),
        config.display()
    )]
    NothingInstalled {
        /// The host.
        host: String,
        /// Its root.
        root: std::path::PathBuf,
        /// Its agent.yaml.
        config: std::path::PathBuf,
    },
    /// The work tree's fleet does not load.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// Every generation number was used.
    #[error("pool `{pool}` has had generation {highest}; no number is left")]
    NoNumberLeft {
        /// The pool.
        pool: String,
        /// The highest number it had.
        highest: u32,
    },
    /// The lock could not be built.
    #[error(transparent)]
    Capture(#[from] CaptureError),
    /// The host runs the pool's current generation exactly.
    #[error(
        "host {host} runs exactly generation {number} of pool `{pool}` (same packages, versions and sha256): nothing to capture; upgrade it first (`pacman -Syu`), test it, then capture"
    )]
    Unchanged {
        /// The host.
        host: String,
        /// The generation.
        number: u32,
        /// The pool.
        pool: String,
    },
    /// The pool is not in the work tree's fleet.
    #[error("pool `{pool}` is not in the work tree's fleet")]
    PoolMissing {
        /// The pool.
        pool: String,
    },
    /// The fleet with the new generation does not validate (the edits were put back).
    #[error(
        "the captured generation {number} of pool `{pool}` does not validate; nothing was committed. If a host of the pool asks for a package {host} does not have, install it on {host} and capture again"
    )]
    Invalid {
        /// The generation.
        number: u32,
        /// The pool.
        pool: String,
        /// The host.
        host: String,
        /// Why.
        #[source]
        source: Box<CheckError>,
    },
}

/// `generation N`, or `floating`.
fn pinning(g: Option<u32>) -> String {
    g.map_or_else(|| "floating".to_owned(), |n| format!("generation {n}"))
}

/// What to capture, and where.
#[derive(Debug, Clone, Copy)]
pub struct SetLatest<'a> {
    /// The host's agent configuration.
    pub config: &'a AgentConfig,
    /// The pool the host is in.
    pub pool: &'a Name,
    /// The operator's fleet work tree.
    pub repo: &'a std::path::Path,
    /// The commit will be signed (the notes are fetched first).
    pub sign: bool,
    /// The commit will be pushed (the remote is checked first).
    pub push: bool,
    /// When signing, do not fetch the remote's notes.
    pub offline: bool,
    /// The commit's first line instead of the default.
    pub message: Option<&'a str>,
}

/// What [`capture`] committed.
#[derive(Debug)]
pub struct Captured {
    /// The work tree.
    pub work_tree: WorkTree,
    /// Its branch.
    pub branch: String,
    /// The remote to push to (`push`).
    pub remote: Option<String>,
    /// The commit made.
    pub commit: String,
    /// The host.
    pub host: String,
    /// The pool.
    pub pool: String,
    /// The new generation's number.
    pub number: u32,
    /// The generation file written.
    pub gen_file: String,
    /// The pool file edited.
    pub pool_file: String,
    /// How many packages the generation pins.
    pub packages: usize,
    /// How many of them with a sha256.
    pub with_sum: usize,
    /// sha256 sums found in the sync databases.
    pub from_sync_db: usize,
    /// sha256 sums found by hashing cached package files.
    pub from_cache: usize,
    /// sha256 sums kept from the previous generation.
    pub kept: usize,
    /// The previous generation's number (`None`: the pool floated).
    pub previous: Option<u32>,
    /// What changed against the previous generation.
    pub summary: Option<Summary>,
    /// The sequence of the statement the host applied (a signature goes above it).
    pub applied_sequence: u64,
}

/// Captures the host's packages as the pool's next generation and commits it (see the module
/// documentation for the refusals). `warn` gets what the operator is warned of on the way
/// (signature notes not fetched).
pub fn capture(
    opts: &SetLatest<'_>,
    warn: &mut dyn FnMut(String),
) -> Result<Captured, SetLatestError> {
    let cfg = opts.config;
    let pool = opts.pool.as_str();
    let host = cfg.hostname.clone();
    let wt = WorkTree::open(opts.repo)?;

    // 1. What the host runs: its applied state, and its pool at that commit.
    let applied = applied_state(cfg)?;
    let at_applied = fleet_at_either(&[cfg.mirror_dir(), wt.root.clone()], &applied.commit)
        .map_err(|source| SetLatestError::AppliedFleet {
            commit: applied.commit.clone(),
            host: host.clone(),
            source: Box::new(source),
        })?;
    let resolved_applied = match resolve::resolve(&at_applied, &host)? {
        None => {
            return Err(SetLatestError::NotInPool {
                host,
                pool: pool.to_owned(),
                commit: applied.commit,
            });
        }
        Some(r) if r.pool != pool => {
            return Err(SetLatestError::OtherPool {
                host,
                pool: pool.to_owned(),
                actual: r.pool,
                commit: applied.commit,
            });
        }
        Some(r) => r,
    };

    // 2. The operator's work tree: clean, up to date, and asking of the host what it runs.
    wt.ensure_clean()?;
    let branch = wt.branch()?;
    let prepared = wt.prepare(&branch, opts.push, opts.sign, opts.offline)?;
    if let Some(w) = prepared.synced.as_ref().and_then(|s| s.warning(&wt.root)) {
        warn(w);
    }
    let head = wt.head()?;
    let at_head = based_on_applied(&wt, &applied.commit, &head, &host, pool, &resolved_applied)?;

    // 3. Capture.
    let paths = HostPaths {
        root: cfg.root.clone(),
        dbpath: cfg.dbpath.clone(),
        pacman_conf: cfg.pacman_conf.clone(),
    };
    let found = {
        let sys = System::open(&paths, Mode::Plan)?;
        capture::read_host(&sys)?
    };
    if found.installed.is_empty() {
        return Err(SetLatestError::NothingInstalled {
            host,
            root: cfg.root.clone(),
            config: cfg.source.clone(),
        });
    }
    let fleet = Fleet::from_dir(&wt.root)?;
    let previous: Option<Generation> = at_head
        .generation
        .and_then(|n| fleet.generations.get(&(opts.pool.clone(), n)))
        .map(|g| g.spec.clone());
    let number = next_number(&wt, pool)?;
    let prov = Provenance {
        pool: pool.to_owned(),
        number,
        host: host.clone(),
        at: Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true),
    };
    let generation =
        capture::build_generation(&prov, &found.installed, &found.sums(), previous.as_ref())?;
    if let Some(p) = previous
        .as_ref()
        .filter(|p| p.packages == generation.packages)
    {
        return Err(SetLatestError::Unchanged {
            host,
            number: p.number,
            pool: pool.to_owned(),
        });
    }
    let text = capture::render_generation(
        &generation,
        &capture::header(&generation, &found.installed, previous.as_ref()),
    );
    let message = capture::commit_message(
        &generation,
        &found.installed,
        previous.as_ref(),
        opts.message,
    );

    // 4. Write, check, commit.
    let pool_file = fleet
        .pools
        .get(pool)
        .map(|p| p.file.clone())
        .ok_or_else(|| SetLatestError::PoolMissing {
            pool: pool.to_owned(),
        })?;
    let gen_file = capture::generation_path(pool, number);
    let edits = Edits::new(&wt.root)
        .create(&gen_file, text.as_bytes())?
        .rewrite(&pool_file, |old| {
            capture::set_pool_generation(&pool_file, old, number)
        })?;
    if let Err(source) = check_fleet(&wt.root, &host, pool, Some(number)) {
        edits.undo();
        return Err(SetLatestError::Invalid {
            number,
            pool: pool.to_owned(),
            host,
            source: Box::new(source),
        });
    }
    let commit = match wt.commit(&[&gen_file, &pool_file], &message) {
        Ok(c) => c,
        Err(e) => {
            edits.undo();
            return Err(e.into());
        }
    };

    let summary = previous
        .as_ref()
        .map(|p| capture::compare(&p.packages, &generation.packages));
    let with_sum = generation
        .packages
        .values()
        .filter(|p| p.sha256.is_some())
        .count();
    Ok(Captured {
        work_tree: wt,
        branch,
        remote: prepared.remote,
        commit,
        host,
        pool: pool.to_owned(),
        number,
        gen_file,
        pool_file,
        packages: generation.packages.len(),
        with_sum,
        from_sync_db: found.count(ShaSource::SyncDb),
        from_cache: found.count(ShaSource::Cache),
        kept: with_sum.saturating_sub(found.sha256.len()),
        previous: previous.as_ref().map(|p| p.number),
        summary,
        applied_sequence: applied.sequence,
    })
}

/// The next free generation number of `pool`: one more than the highest generation file under
/// `generations/<pool>/` now or ever in the branch's history, so that a number is never reused
/// for another lock (a rollback's revert deletes the captured file, hosts' records keep it).
pub fn next_number(wt: &WorkTree, pool: &str) -> Result<u32, SetLatestError> {
    let dir = format!("generations/{pool}/");
    let number = |path: &str| {
        let file = path.strip_prefix(&dir)?;
        let stem = file
            .strip_suffix(".yaml")
            .or_else(|| file.strip_suffix(".yml"))?;
        stem.parse::<u32>().ok()
    };
    let mut highest = 0;
    if let Ok(entries) = std::fs::read_dir(wt.root.join(&dir)) {
        for e in entries.flatten() {
            let name = format!("{dir}{}", e.file_name().to_string_lossy());
            highest = highest.max(number(&name).unwrap_or(0));
        }
    }
    let history = wt.git(&[
        "log",
        "--format=",
        "--name-only",
        "--diff-filter=A",
        "HEAD",
        "--",
        &dir,
    ])?;
    for path in history.lines() {
        highest = highest.max(number(path.trim()).unwrap_or(0));
    }
    highest
        .checked_add(1)
        .ok_or_else(|| SetLatestError::NoNumberLeft {
            pool: pool.to_owned(),
            highest,
        })
}

/// The host's applied state; a clear refusal when it has none.
fn applied_state(cfg: &AgentConfig) -> Result<AppliedState, SetLatestError> {
    let none = || SetLatestError::NotApplied {
        host: cfg.hostname.clone(),
        state_dir: cfg.state_dir.clone(),
    };
    if !cfg.state_dir.is_dir() {
        return Err(none());
    }
    StateDir::open(&cfg.state_dir)?
        .load_applied()?
        .ok_or_else(none)
}

/// set-latest's safety rule: refuses unless the branch contains the applied commit and, at
/// HEAD, asks of `host` exactly what the applied commit asked (`was`): same pool, generation,
/// lock and explicit packages. Returns the host's resolution at HEAD.
pub fn based_on_applied(
    wt: &WorkTree,
    applied: &str,
    head: &str,
    host: &str,
    pool: &str,
    was: &Resolved,
) -> Result<Resolved, SetLatestError> {
    let root = &wt.root;
    if source::rev_parse(root, applied).is_err() {
        return Err(SetLatestError::MissingApplied {
            root: root.clone(),
            host: host.to_owned(),
            commit: applied.to_owned(),
        });
    }
    if !source::is_ancestor(root, applied, head)? {
        return Err(SetLatestError::NotAncestor {
            head: head.to_owned(),
            applied: applied.to_owned(),
            host: host.to_owned(),
        });
    }
    let fleet = fleet_at(root, head)?;
    let now = resolve::resolve(&fleet, host)?;
    let changed_since = || -> String {
        let pool_path = fleet
            .pools
            .get(pool)
            .map_or_else(|| format!("pools/{pool}.yaml"), |p| p.file.clone());
        let log = wt
            .git(&[
                "log",
                "--format=%h %s",
                &format!("{applied}..{head}"),
                "--",
                &pool_path,
                &format!("generations/{pool}/"),
            ])
            .unwrap_or_default();
        let commits: Vec<&str> = log.lines().take(5).collect();
        if commits.is_empty() {
            String::new()
        } else {
            format!("; changed since by: {}", commits.join("; "))
        }
    };
    let Some(now) = now.filter(|r| r.pool == pool) else {
        return Err(SetLatestError::NoLongerInPool {
            host: host.to_owned(),
            pool: pool.to_owned(),
            head: head.to_owned(),
        });
    };
    let explicit = |r: &Resolved| r.explicit.keys().cloned().collect::<BTreeSet<String>>();
    if now.generation != was.generation || now.pins != was.pins || explicit(&now) != explicit(was) {
        return Err(SetLatestError::NotCurrent {
            host: host.to_owned(),
            pool: pool.to_owned(),
            applied: applied.to_owned(),
            was: was.generation,
            now: now.generation,
            changed: changed_since(),
        });
    }
    Ok(now)
}
