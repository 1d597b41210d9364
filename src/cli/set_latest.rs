//! `fleetctl set-latest --pool P [--config F] [--repo PATH] [--key K] [--push] [--message M]`:
//! on a host (typically a canary an operator upgraded and tested by hand), write every
//! installed package and version as the next generation of pool P, point the pool at it, and
//! commit that in the operator's fleet work tree; sign it with `--key`, push it with `--push`,
//! or leave the commit for review. Exit 0, or 2 with a message that says what to do.
//!
//! Refusals, checked before anything is written (see README "Capturing and rolling back
//! generations" for why): the host has applied no fleet state, or is not in pool P at the
//! commit it applied; the work tree has uncommitted changes; the work tree's branch does not
//! contain the commit the host applied, or asks the host for something else than that commit
//! did (another generation or lock, other explicit packages) — a capture must be based on the
//! fleet state the host runs, or it would silently undo the changes made since.
//!
//! This file also holds what `rollback` shares: the work tree through the `git` command line
//! ([`WorkTree`]), signing through `fleetctl sign`, and pushing the branch with the notes.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use anyhow::{Context, bail};
use chrono::{SecondsFormat, Utc};

use super::{SetLatestArgs, SignArgs};
use crate::capture::{self, Provenance, ShaSource};
use crate::config::AgentConfig;
use crate::manifest::{Fleet, FleetFiles, Generation, Name, is_manifest_dir, is_manifest_path};
use crate::reconcile::short;
use crate::resolve::{self, Resolved};
use crate::source;
use crate::state::StateDir;
use crate::system::{HostPaths, Mode, System};
use crate::trust::NOTES_REF;

pub(super) fn run(args: SetLatestArgs) -> anyhow::Result<u8> {
    Name::new(&args.pool).map_err(|e| anyhow::anyhow!("--pool: {e}"))?;
    let pool = args.pool.as_str();
    let cfg = AgentConfig::load(&args.config.config)?;
    let host = cfg.hostname.clone();
    let wt = WorkTree::open(&args.repo)?;

    // 1. What the host runs: its applied state, and its pool at that commit.
    let applied = applied_state(&cfg)?;
    let at_applied = fleet_at_either(&[cfg.mirror_dir(), wt.root.clone()], &applied.commit)
        .with_context(|| {
            format!(
                "cannot read the fleet at commit {}, which host {host} applied",
                short(&applied.commit)
            )
        })?;
    let resolved_applied = match resolve::resolve(&at_applied, &host)? {
        None => bail!(
            "host {host} is not in pool `{pool}`: at the commit it applied ({}) no pool selects it; run set-latest on a host of pool `{pool}`",
            short(&applied.commit)
        ),
        Some(r) if r.pool != pool => bail!(
            "host {host} is in pool `{}`, not `{pool}` (at the commit it applied, {}); run set-latest on a host of pool `{pool}`, or pass --pool {}",
            r.pool,
            short(&applied.commit),
            r.pool
        ),
        Some(r) => r,
    };

    // 2. The operator's work tree: clean, up to date, and asking of the host what it runs.
    wt.ensure_clean()?;
    let branch = wt.branch()?;
    let remote = wt.prepare(&branch, args.push, args.key.is_some(), args.offline)?;
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
        bail!(
            "host {host} has no installed packages (root {}): nothing to capture; check `root:` and `dbpath:` in {}",
            cfg.root.display(),
            cfg.source.display()
        );
    }
    let fleet = Fleet::from_dir(&wt.root)?;
    let pool_name = Name::new(pool).map_err(|e| anyhow::anyhow!(e))?;
    let previous: Option<Generation> = at_head
        .generation
        .and_then(|n| fleet.generations.get(&(pool_name, n)))
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
        bail!(
            "host {host} runs exactly generation {} of pool `{pool}` (same packages, versions and sha256): nothing to capture; upgrade it first (`pacman -Syu`), test it, then capture",
            p.number
        );
    }
    let text = capture::render_generation(
        &generation,
        &capture::header(&generation, &found.installed, previous.as_ref()),
    );
    let message = capture::commit_message(
        &generation,
        &found.installed,
        previous.as_ref(),
        args.message.as_deref(),
    );

    // 4. Write, check, commit.
    let pool_file = fleet
        .pools
        .get(pool)
        .map(|p| p.file.clone())
        .ok_or_else(|| anyhow::anyhow!("pool `{pool}` is not in the work tree's fleet"))?;
    let gen_file = capture::generation_path(pool, number);
    let edits = Edits::new(&wt.root)
        .create(&gen_file, text.as_bytes())?
        .rewrite(&pool_file, |old| {
            capture::set_pool_generation(&pool_file, old, number).map_err(Into::into)
        })?;
    if let Err(e) = check_fleet(&wt.root, &host, pool, Some(number)) {
        edits.undo();
        return Err(e.context(format!(
            "the captured generation {number} of pool `{pool}` does not validate; nothing was committed. If a host of the pool asks for a package {host} does not have, install it on {host} and capture again"
        )));
    }
    let commit = match wt.commit(&[&gen_file, &pool_file], &message) {
        Ok(c) => c,
        Err(e) => {
            edits.undo();
            return Err(e);
        }
    };

    // 5. Report, sign, push.
    let summary = previous
        .as_ref()
        .map(|p| capture::compare(&p.packages, &generation.packages));
    let with_sum = generation
        .packages
        .values()
        .filter(|p| p.sha256.is_some())
        .count();
    let kept = with_sum.saturating_sub(found.sha256.len());
    println!(
        "captured generation {number} of pool {pool} from {host}: {} packages, sha256 for {with_sum} ({} from the sync databases, {} from cached package files{})",
        generation.packages.len(),
        found.count(ShaSource::SyncDb),
        found.count(ShaSource::Cache),
        match &previous {
            Some(p) if kept > 0 => format!(", {kept} kept from generation {}", p.number),
            _ => String::new(),
        }
    );
    match (&summary, &previous) {
        (Some(s), Some(p)) => {
            println!("  against generation {}: {}", p.number, s.counts());
            for line in s.lines(capture::MESSAGE_NAMES) {
                println!("    {line}");
            }
        }
        _ => println!("  the pool floated until now"),
    }
    println!("  wrote {gen_file}, set `generation: {number}` in {pool_file}");
    println!("  committed {} on {branch}", short(&commit));
    // `sign` fetches the remote's notes and goes above the highest there and here; above the
    // host's applied sequence too.
    finish(
        &wt,
        &commit,
        &branch,
        args.key.as_deref(),
        Sign {
            above: applied.sequence,
        },
        remote.as_deref(),
    )?;
    Ok(0)
}

/// The next free generation number of `pool`: one more than the highest generation file under
/// `generations/<pool>/` now or ever in the branch's history, so that a number is never reused
/// for another lock (a rollback's revert deletes the captured file, hosts' records keep it).
fn next_number(wt: &WorkTree, pool: &str) -> anyhow::Result<u32> {
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
    highest.checked_add(1).ok_or_else(|| {
        anyhow::anyhow!("pool `{pool}` has had generation {highest}; no number is left")
    })
}

/// The host's applied state; a clear refusal when it has none.
fn applied_state(cfg: &AgentConfig) -> anyhow::Result<crate::state::AppliedState> {
    let none = || {
        anyhow::anyhow!(
            "host {} has not applied any fleet state yet ({} has no state.json): run `fleetctl reconcile` on it first, so the capture is based on a signed state it runs. If reconcile fails because its pool is pinned to a generation this host cannot reach (a pinned version found nowhere, a sha256 mismatch: pins from another machine or an example), unpin the pool (remove `generation:` from its file), sign and push, reconcile the host, then capture",
            cfg.hostname,
            cfg.state_dir.display()
        )
    };
    if !cfg.state_dir.is_dir() {
        return Err(none());
    }
    StateDir::open(&cfg.state_dir)?
        .load_applied()?
        .ok_or_else(none)
}

/// The checked fleet at `commit`, read from the first of `repos` that has the commit.
pub(super) fn fleet_at_either(repos: &[PathBuf], commit: &str) -> anyhow::Result<Fleet> {
    let mut last = None;
    for repo in repos {
        match fleet_at(repo, commit) {
            Ok(f) => return Ok(f),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| anyhow::anyhow!("no repository to read from")))
}

/// The checked fleet at `commit` of the repository `repo` (bare or work tree).
pub(super) fn fleet_at(repo: &Path, commit: &str) -> anyhow::Result<Fleet> {
    let (blobs, links) = source::read_tree_with_links(repo, commit, is_manifest_path, |p| {
        is_manifest_path(p) || is_manifest_dir(p)
    })?;
    Fleet::from_files(&FleetFiles::from_tree(blobs, links)).map_err(|d| {
        anyhow::anyhow!(
            "the fleet at commit {} of {} does not validate:\n{d}",
            short(commit),
            repo.display()
        )
    })
}

/// Refuses unless the branch contains the applied commit and, at HEAD, asks of `host` exactly
/// what the applied commit asked: same pool, generation, lock and explicit packages. Returns
/// the host's resolution at HEAD.
fn based_on_applied(
    wt: &WorkTree,
    applied: &str,
    head: &str,
    host: &str,
    pool: &str,
    was: &Resolved,
) -> anyhow::Result<Resolved> {
    let root = &wt.root;
    if source::rev_parse(root, applied).is_err() {
        bail!(
            "the work tree {} does not have commit {}, which host {host} applied: pull the fleet repository (`git pull`) and try again",
            root.display(),
            short(applied)
        );
    }
    if !source::is_ancestor(root, applied, head)? {
        bail!(
            "the work tree's HEAD ({}) does not contain commit {}, which host {host} applied: check out the branch the hosts follow and pull, then try again",
            short(head),
            short(applied)
        );
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
        bail!(
            "host {host} is no longer in pool `{pool}` at the work tree's HEAD ({}): capture from a host of the pool",
            short(head)
        );
    };
    let explicit = |r: &Resolved| r.explicit.keys().cloned().collect::<BTreeSet<String>>();
    if now.generation != was.generation || now.pins != was.pins || explicit(&now) != explicit(was) {
        let pinning =
            |g: Option<u32>| g.map_or_else(|| "floating".to_owned(), |n| format!("generation {n}"));
        bail!(
            "host {host} has not applied the current state of pool `{pool}`: it runs commit {} ({}), but the branch now asks it for {}{}{}. A capture must be based on the state the host runs, or it would silently undo those changes: sign and push them, run `fleetctl reconcile` on {host}, check it, then capture again",
            short(applied),
            pinning(was.generation),
            pinning(now.generation),
            if now.generation == was.generation {
                " with other packages or versions"
            } else {
                ""
            },
            changed_since()
        );
    }
    Ok(now)
}

/// Validates the work tree and checks that `host` resolves to `pool` at `generation`.
pub(super) fn check_fleet(
    root: &Path,
    host: &str,
    pool: &str,
    generation: Option<u32>,
) -> anyhow::Result<Fleet> {
    let fleet = Fleet::from_dir(root)?;
    if !host.is_empty() {
        match resolve::resolve(&fleet, host)? {
            Some(r) if r.pool == pool && r.generation == generation => {}
            other => bail!(
                "after the edit host {host} resolves to {:?}, not pool `{pool}` at {generation:?}",
                other.map(|r| (r.pool, r.generation))
            ),
        }
    }
    Ok(fleet)
}

/// Files written in the work tree, and how to put them back.
pub(super) struct Edits {
    root: PathBuf,
    undo: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Edits {
    pub(super) fn new(root: &Path) -> Edits {
        Edits {
            root: root.to_owned(),
            undo: Vec::new(),
        }
    }

    /// Creates `rel`; it must not exist.
    pub(super) fn create(mut self, rel: &str, bytes: &[u8]) -> anyhow::Result<Edits> {
        let path = self.root.join(rel);
        if path.exists() {
            bail!(
                "{} already exists; refusing to overwrite a generation",
                path.display()
            );
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(&path, bytes).with_context(|| format!("cannot write {}", path.display()))?;
        self.undo.push((path, None));
        Ok(self)
    }

    /// Rewrites `rel` with `edit` applied to its text.
    pub(super) fn rewrite(
        mut self,
        rel: &str,
        edit: impl FnOnce(&str) -> anyhow::Result<String>,
    ) -> anyhow::Result<Edits> {
        let path = self.root.join(rel);
        let old =
            std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
        let text = String::from_utf8(old.clone())
            .map_err(|_| anyhow::anyhow!("{} is not UTF-8", path.display()));
        let new = match text.and_then(|t| edit(&t)) {
            Ok(n) => n,
            Err(e) => {
                self.undo();
                return Err(e);
            }
        };
        if let Err(e) = std::fs::write(&path, new) {
            self.undo();
            return Err(e).with_context(|| format!("cannot write {}", path.display()));
        }
        self.undo.push((path, Some(old)));
        Ok(self)
    }

    /// Puts every file back as it was (best effort; the work tree was clean before).
    pub(super) fn undo(self) {
        for (path, old) in self.undo.into_iter().rev() {
            let _ = match old {
                Some(bytes) => std::fs::write(&path, bytes),
                None => std::fs::remove_file(&path),
            };
        }
    }
}

/// How [`finish`] signs: the new statement's sequence is above `above` (and above every one
/// in the notes, here and on the remote, as `fleetctl sign` does). The notes were fetched by
/// [`WorkTree::prepare`], before anything was written.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Sign {
    pub(super) above: u64,
}

/// Signs `commit` with `key` through `fleetctl sign` (same key handling and password prompt,
/// same report), then pushes to `remote` if given; without a key, says how to sign.
pub(super) fn finish(
    wt: &WorkTree,
    commit: &str,
    branch: &str,
    key: Option<&Path>,
    how: Sign,
    remote: Option<&str>,
) -> anyhow::Result<()> {
    match key {
        Some(key) => {
            let below = unsigned_below(wt, commit);
            if !below.is_empty() {
                eprintln!(
                    "warning: signing {} also approves {} unsigned commit(s) under it, which hosts have not been allowed to apply yet: {}",
                    short(commit),
                    below.len(),
                    below.join("; ")
                );
            }
            super::sign::run(SignArgs {
                rev: commit.to_owned(),
                key: key.to_owned(),
                repo: wt.root.clone(),
                expires_in: std::time::Duration::from_secs(30 * 24 * 3600),
                sequence: None,
                renew: false,
                offline: false,
                above: how.above,
                synced: true,
            })
            .context(
                "the commit is made but not signed; sign it with `fleetctl sign HEAD --key KEY`",
            )?;
        }
        None => println!(
            "not signed (no --key): review it, then `fleetctl sign {} --key KEY` to let hosts apply it",
            short(commit)
        ),
    }
    match remote {
        Some(remote) => {
            wt.push(remote, branch)?;
            println!("pushed {branch} and {NOTES_REF} to {remote}");
        }
        None => println!(
            "not pushed (no --push): `git push --atomic origin {branch} {NOTES_REF}` publishes it"
        ),
    }
    Ok(())
}

/// The commits between `commit` and its newest signed ancestor (`%h %s` each, at most 10
/// shown); empty when the parent is signed or no ancestor is.
fn unsigned_below(wt: &WorkTree, commit: &str) -> Vec<String> {
    let Ok(log) = wt.git(&[
        "log",
        "--format=%H %h %s",
        "-n",
        "200",
        &format!("{commit}^"),
    ]) else {
        return Vec::new();
    };
    let mut unsigned = Vec::new();
    for line in log.lines() {
        let mut parts = line.splitn(2, ' ');
        let (Some(id), Some(rest)) = (parts.next(), parts.next()) else {
            continue;
        };
        if matches!(source::read_note(&wt.root, id), Ok(Some(_))) {
            let more = unsigned.len().saturating_sub(10);
            unsigned.truncate(10);
            if more > 0 {
                unsigned.push(format!("and {more} more"));
            }
            return unsigned;
        }
        unsigned.push(rest.to_owned());
    }
    Vec::new()
}

/// The operator's fleet work tree, driven through the `git` command line.
pub(super) struct WorkTree {
    /// The work tree's top directory (holds fleet.yaml).
    pub(super) root: PathBuf,
}

impl WorkTree {
    /// Opens the work tree at `path`: git must be installed, `path` must be the top of a git
    /// work tree and hold fleet.yaml.
    pub(super) fn open(path: &Path) -> anyhow::Result<WorkTree> {
        let root = path
            .canonicalize()
            .with_context(|| format!("--repo {}: no such directory", path.display()))?;
        if !root.join("fleet.yaml").is_file() && !root.join("fleet.yml").is_file() {
            bail!(
                "{} is not a fleet repository: it has no fleet.yaml; pass the work tree with --repo PATH",
                root.display()
            );
        }
        let wt = WorkTree { root };
        let top = wt.git(&["rev-parse", "--show-toplevel"]).with_context(|| {
            format!("{} is not a git work tree; clone the fleet repository and pass its work tree with --repo", wt.root.display())
        })?;
        let top = PathBuf::from(top.trim());
        if top.canonicalize().ok().as_deref() != Some(wt.root.as_path()) {
            bail!(
                "{} is inside the git work tree {}, but hosts read fleet.yaml at the top of the repository; pass --repo {}",
                wt.root.display(),
                top.display(),
                top.display()
            );
        }
        Ok(wt)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(&self.root).args(args);
        cmd.env("LC_ALL", "C");
        cmd
    }

    fn output(&self, mut cmd: Command, args: &[&str]) -> anyhow::Result<Output> {
        cmd.output().map_err(|e| spawn_error(e, args))
    }

    /// Runs git; stdout, or an error with git's stderr.
    pub(super) fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = self.output(self.command(args), args)?;
        ok(args, &out)
    }

    /// Runs git with `input` on stdin.
    fn git_stdin(&self, args: &[&str], input: &str) -> anyhow::Result<String> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| spawn_error(e, args))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .context("writing to git")?;
        }
        let out = child.wait_with_output().context("waiting for git")?;
        ok(args, &out)
    }

    /// Refuses when `git status --porcelain` lists anything (untracked files included).
    pub(super) fn ensure_clean(&self) -> anyhow::Result<()> {
        let status = self.git(&["status", "--porcelain", "--untracked-files=normal"])?;
        if status.trim().is_empty() {
            return Ok(());
        }
        let lines: Vec<&str> = status.lines().collect();
        bail!(
            "the work tree {} has uncommitted changes ({}{}); commit or stash them (`git stash -u`) first, so this commit holds only its own change",
            self.root.display(),
            lines
                .iter()
                .take(5)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(", "),
            if lines.len() > 5 {
                format!(" and {} more", lines.len() - 5)
            } else {
                String::new()
            }
        )
    }

    /// The checked-out branch; refuses a detached HEAD.
    pub(super) fn branch(&self) -> anyhow::Result<String> {
        match self.git(&["symbolic-ref", "--quiet", "--short", "HEAD"]) {
            Ok(b) if !b.trim().is_empty() => Ok(b.trim().to_owned()),
            _ => bail!(
                "the work tree {} has no branch checked out (detached HEAD); check out the fleet's branch (e.g. `git switch main`)",
                self.root.display()
            ),
        }
    }

    /// The HEAD commit id.
    pub(super) fn head(&self) -> anyhow::Result<String> {
        Ok(self
            .git(&["rev-parse", "--verify", "HEAD^{commit}"])?
            .trim()
            .to_owned())
    }

    /// Stages `paths` (additions, edits and deletions) and commits them with `message`.
    pub(super) fn commit(&self, paths: &[&str], message: &str) -> anyhow::Result<String> {
        let mut add = vec!["add", "-A", "--"];
        add.extend_from_slice(paths);
        self.git(&add)?;
        self.commit_staged(message)
    }

    /// Commits what is staged with `message`.
    pub(super) fn commit_staged(&self, message: &str) -> anyhow::Result<String> {
        self.git_stdin(&["commit", "-q", "-F", "-"], message)
            .context("git could not commit (is user.name/user.email set? `git config user.email you@example.com`)")?;
        self.head()
    }

    /// The remote `branch` pushes to: its configured remote, else `origin`.
    fn remote_of(&self, branch: &str) -> String {
        self.git(&["config", "--get", &format!("branch.{branch}.remote")])
            .ok()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty() && r != ".")
            .unwrap_or_else(|| "origin".to_owned())
    }

    /// Before anything is written: for `--push`, [`WorkTree::prepare_push`] (returns the
    /// remote); else, when the commit will be signed, the remote's notes fetched as `fleetctl
    /// sign` does (`offline` as its flag), so that a fetch that fails or notes that diverged
    /// refuse before a commit is made, not after.
    pub(super) fn prepare(
        &self,
        branch: &str,
        push: bool,
        sign: bool,
        offline: bool,
    ) -> anyhow::Result<Option<String>> {
        if push {
            return self.prepare_push(branch).map(Some);
        }
        if sign {
            super::notes_sync::sync(&self.root, offline)?;
        }
        Ok(None)
    }

    /// Before anything is written for `--push`: the remote exists, its branch has nothing this
    /// one lacks, and its signature notes are fetched (so the new statement's sequence number
    /// follows the highest published one; see `notes_sync`). Returns the remote.
    pub(super) fn prepare_push(&self, branch: &str) -> anyhow::Result<String> {
        let remote = self.remote_of(branch);
        if self.git(&["remote", "get-url", &remote]).is_err() {
            bail!(
                "--push: the work tree has no remote `{remote}`; add it (`git remote add {remote} URL`) or leave out --push"
            );
        }
        let heads = self.git(&[
            "ls-remote",
            &remote,
            &format!("refs/heads/{branch}"),
            NOTES_REF,
        ])?;
        let has = |r: &str| heads.lines().any(|l| l.ends_with(&format!("\t{r}")));
        if has(&format!("refs/heads/{branch}")) {
            self.git(&["fetch", "-q", &remote, &format!("refs/heads/{branch}")])?;
            if self
                .git(&["merge-base", "--is-ancestor", "FETCH_HEAD", "HEAD"])
                .is_err()
            {
                bail!(
                    "--push: {remote}/{branch} has commits this work tree lacks; `git pull --rebase {remote} {branch}`, then try again"
                );
            }
        }
        // The notes: fetched and fast-forwarded as `fleetctl sign` does, refused when they
        // diverged, before anything is written.
        super::notes_sync::sync(&self.root, false)?;
        Ok(remote)
    }

    /// Pushes `branch` and, if there are any, the signature notes, atomically.
    pub(super) fn push(&self, remote: &str, branch: &str) -> anyhow::Result<()> {
        let branch_ref = format!("refs/heads/{branch}:refs/heads/{branch}");
        let notes_ref = format!("{NOTES_REF}:{NOTES_REF}");
        let mut args = vec!["push", "-q", "--atomic", remote, branch_ref.as_str()];
        if self
            .git(&["rev-parse", "--verify", "-q", NOTES_REF])
            .is_ok()
        {
            args.push(&notes_ref);
        }
        self.git(&args).with_context(|| {
            format!(
                "pushing to {remote} failed; the commit and its signature are kept here: fix the cause and run `git push --atomic {remote} {branch} {NOTES_REF}`"
            )
        })?;
        Ok(())
    }
}

fn spawn_error(e: std::io::Error, args: &[&str]) -> anyhow::Error {
    if e.kind() == std::io::ErrorKind::NotFound {
        anyhow::anyhow!(
            "the `git` command is not installed (or not on PATH); set-latest and rollback commit with it: install git (`pacman -S git`)"
        )
    } else {
        anyhow::anyhow!("cannot run git {}: {e}", args.join(" "))
    }
}

fn ok(args: &[&str], out: &Output) -> anyhow::Result<String> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let detail = [stderr.trim(), stdout.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    bail!("git {} failed ({}): {detail}", args.join(" "), out.status)
}
