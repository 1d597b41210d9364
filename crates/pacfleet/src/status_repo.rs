//! The status repository (docs/contract.md §6): a git repository of its own (agent.yaml
//! `status_repo:`) where every host publishes its signed report ([`crate::report`]), and from
//! which the hosts of its pool and `fleetctl fleet status` read them. This module owns where
//! reports live there, pushing a host's report, fetching a pool's reports (or every pool's)
//! into a local copy, and reading them back verified and bounded.
//!
//! # Layout
//!
//! One ref per host, `refs/pacfleet/status/<pool>/<hostname>` ([`report_ref`]), pointing at a
//! parentless commit whose tree holds `report.json` and `report.json.minisig`. A host
//! force-pushes a new commit over its ref each time; the status repository keeps no history
//! (a reader remembers the sequences it saw, and [`report::verify`] refuses older ones).
//!
//! The local copy is one bare repository ([`crate::config::AgentConfig::status_dir`],
//! `state_dir/status.git`, made on first use): the host's own commit is written there and kept
//! under `refs/pacfleet/outgoing` before it is pushed, and fetches mirror the remote's
//! `refs/pacfleet/status/…` into the same names (forced, pruned). It is not the fleet
//! repository's mirror: nothing written to the status repository can change what a host
//! applies.
//!
//! # Trust and bounds
//!
//! Whoever can write the status repository can put anything under any ref, so nothing read
//! from it counts before it verifies under the key the host's manifest names at the reader's
//! target ([`read_pool`], through [`report::verify`]); what does not verify is returned as
//! rejected, with its reason, never as an error of the read. A pool's fetch asks only for the
//! pool's refs (a ref-prefix refspec, which protocol v2 sends to the server as `ref-prefix`),
//! and every fetch stops at [`StatusRemote::timeout`] and when the pack arriving grows past
//! [`StatusRemote::max_fetch_bytes`]. Reading stops at [`MAX_REFS`] refs, and no object is
//! loaded before its header says it is within its bound (a report, its signature, the commit
//! and tree holding them).
//!
//! # Transport
//!
//! Pushing and fetching run the `git` command: gix cannot push, and one way for both keeps
//! their ssh handling and time bounds the same. git runs with stdin closed, no terminal
//! prompts or askpass helpers, only the `file`, `git`, `http(s)` and `ssh` transports, and,
//! with agent.yaml `ssh_key:`, ssh as the fleet fetch runs it ([`SshIdentity::command`] in
//! `GIT_SSH_COMMAND`: that key and known_hosts file only, strict host key checking, batch
//! mode). It runs in a process group of its own, killed whole (ssh and remote helpers too)
//! when time is up. The local copy is read with gix.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use gix::hash::ObjectId;

use crate::config::AgentConfig;
use crate::keys::Key;
use crate::report::{
    self, Expect, HostReport, MAX_REPORT_BYTES, MAX_SIGNATURE_BYTES, ReportRejection, SignedReport,
};
use crate::source::{SshIdentity, error_chain, redact_url};

/// Every report ref is below this: `refs/pacfleet/status/<pool>/<hostname>`.
pub const STATUS_REFS: &str = "refs/pacfleet/status/";

/// The report's file in a report commit's tree.
pub const REPORT_FILE: &str = "report.json";

/// The signature's file in a report commit's tree.
pub const SIGNATURE_FILE: &str = "report.json.minisig";

/// A read stops with [`ReadError::TooManyRefs`] past this many refs: more than any fleet has
/// hosts.
pub const MAX_REFS: usize = 100_000;

/// Where the local copy keeps this host's last report commit.
pub const OUTGOING_REF: &str = "refs/pacfleet/outgoing";

/// A report commit or its tree larger than this is not read (they are about 200 bytes).
const MAX_OBJECT_BYTES: u64 = 64 * 1024;

/// How much of git's stderr an error keeps.
const MAX_STDERR_BYTES: u64 = 16 * 1024;

/// The transports git may use for the status repository (`GIT_ALLOW_PROTOCOL`).
const ALLOWED_PROTOCOLS: &str = "file:git:http:https:ssh";

/// Where reports are pushed and fetched from, and the bounds of doing it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusRemote {
    /// The status repository: a URL git understands, or a local path (agent.yaml
    /// `status_repo:`).
    pub url: String,
    /// For an ssh URL: the key and known_hosts file ssh must use (agent.yaml `ssh_key:`).
    pub ssh: Option<SshIdentity>,
    /// The longest one push or fetch may take (agent.yaml `status_timeout:`).
    pub timeout: Duration,
    /// A fetch stops when the pack arriving grows past this (agent.yaml `max_pack_size:`).
    pub max_fetch_bytes: u64,
}

impl StatusRemote {
    /// The status repository of agent.yaml, `None` without `status_repo:` (no reports).
    pub fn from_config(cfg: &AgentConfig) -> Option<StatusRemote> {
        let url = cfg.status_repo.clone()?;
        Some(StatusRemote {
            ssh: cfg
                .ssh
                .clone()
                .filter(|_| crate::config::repo_is_over_ssh(&url)),
            url,
            timeout: cfg.status_timeout,
            max_fetch_bytes: cfg.max_pack_bytes,
        })
    }
}

/// A pool or host name that cannot be a component of a report ref.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "{what} {value:?} cannot name a status ref (refs/pacfleet/status/<pool>/<hostname>): {reason}; pool and host names follow the rule of docs/contract.md §1.1"
)]
pub struct RefNameError {
    /// `pool` or `host`.
    pub what: &'static str,
    /// The name.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks `value` as one ref component: a manifest name (§1.1) that git also takes as a ref
/// component (no `..`, not ending in `.` or `.lock`, not `@`).
fn check_component(what: &'static str, value: &str) -> Result<(), RefNameError> {
    let err = |reason: String| RefNameError {
        what,
        value: value.to_owned(),
        reason,
    };
    crate::manifest::Name::new(value).map_err(|e| err(e.to_string()))?;
    if value.contains("..") {
        return Err(err("it contains `..`".to_owned()));
    }
    if value.ends_with('.') || value.ends_with(".lock") {
        return Err(err("it ends in `.` or `.lock`".to_owned()));
    }
    if value == "@" {
        return Err(err("it is `@`".to_owned()));
    }
    Ok(())
}

/// The ref of `host`'s report: `refs/pacfleet/status/<pool>/<host>`.
pub fn report_ref(pool: &str, host: &str) -> Result<String, RefNameError> {
    check_component("pool", pool)?;
    check_component("host", host)?;
    Ok(format!("{STATUS_REFS}{pool}/{host}"))
}

/// The prefix of a pool's report refs: `refs/pacfleet/status/<pool>/`.
pub fn pool_prefix(pool: &str) -> Result<String, RefNameError> {
    check_component("pool", pool)?;
    Ok(format!("{STATUS_REFS}{pool}/"))
}

/// Running `git` failed.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// There is no `git` to run.
    #[error("the `git` command is not installed (or not on PATH): install git (`pacman -S git`)")]
    NotInstalled,
    /// git could not be started or waited for.
    #[error("cannot run git: {0}")]
    Spawn(#[source] std::io::Error),
    /// git exited unsuccessfully.
    #[error("git {command} failed ({status}): {stderr}")]
    Failed {
        /// `push` or `fetch`.
        command: &'static str,
        /// Its exit status.
        status: String,
        /// What it said (the start of it).
        stderr: String,
    },
    /// git ran out of time and was killed, with its children.
    #[error(
        "git {command} did not finish within {} and was stopped{}",
        humantime::format_duration(*timeout),
        if stderr.is_empty() { String::new() } else { format!(" (it said: {stderr})") }
    )]
    TimedOut {
        /// `push` or `fetch`.
        command: &'static str,
        /// The bound.
        timeout: Duration,
        /// What it said before.
        stderr: String,
    },
    /// The pack arriving grew past the bound; git was killed.
    #[error(
        "git {command} was stopped: the server sent more than {limit} bytes (agent.yaml `max_pack_size`); reports are a few KiB each, so someone put something large under the refs: delete it from the status repository"
    )]
    TooLarge {
        /// `fetch`.
        command: &'static str,
        /// The bound, in bytes.
        limit: u64,
    },
}

/// Pushing this host's report failed. The pass is not affected; the report is pushed again
/// after a later pass.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    /// The pool or host cannot name a ref.
    #[error("cannot push this host's report: {0}")]
    RefName(#[from] RefNameError),
    /// The local copy cannot be made or written.
    #[error(
        "cannot push this host's report: the local copy of the status repository {} cannot be used: {detail}; check the state directory (remove {} to have it made again)",
        path.display(),
        path.display()
    )]
    Local {
        /// The local copy.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// git push failed or ran out of time.
    #[error(
        "cannot push this host's report to {reference} of the status repository {url}: {source}; check `status_repo:` in agent.yaml, the network, and that this host may push there (the pass itself is not affected; the report is pushed again after a later pass)"
    )]
    Push {
        /// The status repository (passwords redacted).
        url: String,
        /// The ref pushed to.
        reference: String,
        /// What git did.
        #[source]
        source: GitError,
    },
}

/// Fetching reports failed; the local copy keeps what the last fetch brought.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The pool cannot name a ref.
    #[error("cannot fetch the pool's reports: {0}")]
    RefName(#[from] RefNameError),
    /// The local copy cannot be made.
    #[error(
        "cannot fetch reports: the local copy of the status repository {} cannot be used: {detail}; check the state directory (remove {} to have it made again)",
        path.display(),
        path.display()
    )]
    Local {
        /// The local copy.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
    /// git fetch failed or ran out of time.
    #[error(
        "cannot fetch {refs} from the status repository {url}: {source}; check `status_repo:` in agent.yaml and the network"
    )]
    Fetch {
        /// The status repository (passwords redacted).
        url: String,
        /// The refs fetched (`refs/pacfleet/status/<pool>/*`).
        refs: String,
        /// What git did.
        #[source]
        source: GitError,
    },
}

/// Reading the local copy failed (not a report's fault: those are rejected one by one).
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// The pool cannot name a ref.
    #[error("cannot read the pool's reports: {0}")]
    RefName(#[from] RefNameError),
    /// The local copy cannot be opened.
    #[error(
        "cannot open the local copy of the status repository {}: {detail}; it is made by the first fetch of the status repository",
        path.display()
    )]
    Open {
        /// The local copy.
        path: PathBuf,
        /// gix's reason.
        detail: String,
    },
    /// Its refs cannot be listed.
    #[error("cannot list the refs under {prefix} in {}: {detail}", path.display())]
    Refs {
        /// The local copy.
        path: PathBuf,
        /// The refs listed.
        prefix: String,
        /// gix's reason.
        detail: String,
    },
    /// More refs than any fleet has hosts.
    #[error(
        "the status repository has more than {limit} refs under {prefix}, more than any fleet has hosts: someone filled it; nothing was read. Delete the refs of hosts that are not in the fleet (`git for-each-ref {prefix}` where the status repository is served)"
    )]
    TooManyRefs {
        /// The refs listed.
        prefix: String,
        /// [`MAX_REFS`].
        limit: usize,
    },
}

/// What a fetch did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The refs fetched: `refs/pacfleet/status/<pool>/` or all of `refs/pacfleet/status/`.
    pub prefix: String,
    /// How long it took.
    pub elapsed: Duration,
}

/// The reports of one pool, as read.
#[derive(Debug, Default)]
pub struct PoolReports {
    /// Hostname → its report, verified.
    pub valid: BTreeMap<String, HostReport>,
    /// The refs whose report was not accepted: the ref's host (or what stands in its place)
    /// and why. In ref order.
    pub rejected: Vec<(String, ReportRejection)>,
}

impl PoolReports {
    /// The rejected reports counted by kind ([`ReportRejection::label`]).
    pub fn rejected_by_kind(&self) -> BTreeMap<&'static str, usize> {
        let mut counts = BTreeMap::new();
        for (_, r) in &self.rejected {
            *counts.entry(r.label()).or_insert(0) += 1;
        }
        counts
    }
}

/// Opens the local copy at `dir`, making it (bare) when it is missing or an empty directory.
fn open_or_init(dir: &Path) -> Result<gix::Repository, String> {
    let empty = match std::fs::read_dir(dir) {
        Ok(mut entries) => entries.next().is_none(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => true,
        Err(e) => return Err(e.to_string()),
    };
    let repo = if empty {
        std::fs::create_dir_all(dir).map_err(|e| format!("making it: {e}"))?;
        gix::init_bare(dir).map_err(|e| format!("making it: {}", error_chain(&e)))?
    } else {
        gix::open(dir).map_err(|e| format!("it is not a git repository: {}", error_chain(&e)))?
    };
    if !repo.is_bare() {
        return Err("it has a work tree, and it must be a bare repository".to_owned());
    }
    Ok(repo)
}

/// Writes `report`'s commit into `repo` (and [`OUTGOING_REF`] to it): a parentless commit of a
/// tree of [`REPORT_FILE`] and [`SIGNATURE_FILE`].
fn write_commit(
    repo: &gix::Repository,
    report: &SignedReport,
    pool: &str,
    host: &str,
) -> Result<ObjectId, gix::Error> {
    write_commit_at(repo, report, pool, host, OUTGOING_REF)
}

/// [`write_commit`], pointing `reference` at it.
fn write_commit_at(
    repo: &gix::Repository,
    report: &SignedReport,
    pool: &str,
    host: &str,
    reference: &str,
) -> Result<ObjectId, gix::Error> {
    use gix::objs::tree::{Entry, EntryKind};
    let json = repo.write_blob(&report.json)?.detach();
    let sig = repo.write_blob(report.signature.as_bytes())?.detach();
    // Sorted as git sorts tree entries: the shorter name first.
    let tree = gix::objs::Tree {
        entries: vec![
            Entry {
                mode: EntryKind::Blob.into(),
                filename: REPORT_FILE.into(),
                oid: json,
            },
            Entry {
                mode: EntryKind::Blob.into(),
                filename: SIGNATURE_FILE.into(),
                oid: sig,
            },
        ],
    };
    let tree = repo.write_object(&tree)?.detach();
    let who = gix::actor::Signature {
        name: "pacfleet".into(),
        email: format!("{host}@pacfleet.invalid").into(),
        time: gix::date::Time::now_utc(),
    };
    let commit = gix::objs::Commit {
        tree,
        parents: Default::default(),
        author: who.clone(),
        committer: who,
        encoding: None,
        message: format!("pacfleet report of {host} (pool {pool})\n").into(),
        extra_headers: Vec::new(),
    };
    let commit = repo.write_object(&commit)?.detach();
    repo.reference(
        reference,
        commit,
        gix::refs::transaction::PreviousValue::Any,
        format!("pacfleet: report of {host}"),
    )?;
    Ok(commit)
}

/// Writes `report` as `refs/pacfleet/status/<pool>/<host>` of the repository at `dir` (made
/// when missing): what a host's push leaves in a status repository, for one served from this
/// machine, and for the benchmarks that build a large one without thousands of pushes.
pub fn store(dir: &Path, report: &SignedReport, pool: &str, host: &str) -> Result<(), PushError> {
    let reference = report_ref(pool, host)?;
    let local = |detail: String| PushError::Local {
        path: dir.to_owned(),
        detail,
    };
    let repo = open_or_init(dir).map_err(local)?;
    write_commit_at(&repo, report, pool, host, &reference)
        .map_err(|e| local(format!("writing the report commit: {}", error_chain(&e))))?;
    Ok(())
}

/// Pushes `report` to `refs/pacfleet/status/<pool>/<host>` of the status repository,
/// replacing what was there, within `remote.timeout`. The commit is written into the local
/// copy at `local_dir` first (made when missing).
pub fn push(
    remote: &StatusRemote,
    local_dir: &Path,
    report: &SignedReport,
    pool: &str,
    host: &str,
) -> Result<(), PushError> {
    let deadline = Instant::now() + remote.timeout;
    let reference = report_ref(pool, host)?;
    let local = |detail: String| PushError::Local {
        path: local_dir.to_owned(),
        detail,
    };
    let repo = open_or_init(local_dir).map_err(local)?;
    let commit = write_commit(&repo, report, pool, host)
        .map_err(|e| local(format!("writing the report commit: {}", error_chain(&e))))?;
    let refspec = format!("+{commit}:{reference}");
    git(
        remote,
        local_dir,
        "push",
        &["--quiet", "--no-verify", "--", &remote.url, &refspec],
        deadline,
        None,
    )
    .map_err(|source| PushError::Push {
        url: redact_url(&remote.url),
        reference,
        source,
    })?;
    housekeeping(remote, local_dir, deadline);
    Ok(())
}

/// Fetches the reports of `pool` (only `refs/pacfleet/status/<pool>/*`, forced, pruned) into
/// the local copy at `local_dir` (made when missing), within `remote.timeout`.
pub fn fetch_pool(
    remote: &StatusRemote,
    local_dir: &Path,
    pool: &str,
) -> Result<Fetched, FetchError> {
    let prefix = pool_prefix(pool)?;
    fetch_prefix(remote, local_dir, prefix)
}

/// Fetches the reports of every pool (`refs/pacfleet/status/*`), as [`fetch_pool`] does one
/// pool's: for `fleetctl fleet status`.
pub fn fetch_all(remote: &StatusRemote, local_dir: &Path) -> Result<Fetched, FetchError> {
    fetch_prefix(remote, local_dir, STATUS_REFS.to_owned())
}

fn fetch_prefix(
    remote: &StatusRemote,
    local_dir: &Path,
    prefix: String,
) -> Result<Fetched, FetchError> {
    let started = Instant::now();
    let deadline = started + remote.timeout;
    open_or_init(local_dir).map_err(|detail| FetchError::Local {
        path: local_dir.to_owned(),
        detail,
    })?;
    let refspec = format!("+{prefix}*:{prefix}*");
    git(
        remote,
        local_dir,
        "fetch",
        &[
            "--quiet",
            "--no-tags",
            "--no-write-fetch-head",
            "--prune",
            "--no-auto-maintenance",
            "--no-recurse-submodules",
            "--",
            &remote.url,
            &refspec,
        ],
        deadline,
        Some((local_dir.join("objects/pack"), remote.max_fetch_bytes)),
    )
    .map_err(|source| FetchError::Fetch {
        url: redact_url(&remote.url),
        refs: format!("{prefix}*"),
        source,
    })?;
    housekeeping(remote, local_dir, deadline);
    Ok(Fetched {
        prefix,
        elapsed: started.elapsed(),
    })
}

/// `git gc --auto` in the time left, so that the local copy does not grow with every report
/// (each fetch keeps its pack; old report commits become garbage). Its failure is only logged:
/// the next push or fetch tries again.
fn housekeeping(remote: &StatusRemote, local_dir: &Path, deadline: Instant) {
    if Instant::now() >= deadline {
        return;
    }
    if let Err(e) = git(
        remote,
        local_dir,
        "gc",
        &["--auto", "--quiet"],
        deadline,
        None,
    ) {
        tracing::debug!("housekeeping of {} skipped: {e}", local_dir.display());
    }
}

/// Runs `git --git-dir=<local_dir> <command> <args>` for the status repository (see the
/// module documentation for its environment), until `deadline`; with `watch`, also until the
/// directory `watch.0` grows by more than `watch.1` bytes.
fn git(
    remote: &StatusRemote,
    local_dir: &Path,
    command: &'static str,
    args: &[&str],
    deadline: Instant,
    watch: Option<(PathBuf, u64)>,
) -> Result<(), GitError> {
    let mut cmd = Command::new("git");
    cmd.arg(format!("--git-dir={}", local_dir.display()));
    for setting in [
        // Housekeeping runs in the foreground, inside the time bound (never detached).
        "gc.autoDetach=false",
        "maintenance.autoDetach=false",
        "core.hooksPath=/dev/null",
        // Every fetch keeps its pack, so the watch sees what arrives in objects/pack.
        "fetch.unpackLimit=1",
        "transfer.unpackLimit=1",
        "credential.interactive=never",
        "protocol.version=2",
    ] {
        cmd.arg("-c").arg(setting);
    }
    cmd.arg(command)
        .args(args)
        .env("LC_ALL", "C")
        .env("GIT_TERMINAL_PROMPT", "0")
        // Empty: no askpass helper at all (not even core.askPass or SSH_ASKPASS).
        .env("GIT_ASKPASS", "")
        .env("SSH_ASKPASS_REQUIRE", "never")
        .env("GIT_ALLOW_PROTOCOL", ALLOWED_PROTOCOLS)
        .env_remove("SSH_ASKPASS")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .env_remove("GIT_ALTERNATE_OBJECT_DIRECTORIES")
        .env_remove("GIT_NAMESPACE")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .process_group(0);
    if let Some(identity) = &remote.ssh {
        cmd.env("GIT_SSH_COMMAND", identity.command())
            .env("GIT_SSH_VARIANT", "ssh");
    }
    let mut child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            GitError::NotInstalled
        } else {
            GitError::Spawn(e)
        }
    })?;
    // stderr is drained on a thread, so git never blocks on a full pipe; the start is kept.
    let (tx, rx) = mpsc::channel();
    if let Some(mut stderr) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut kept = Vec::new();
            let _ = (&mut stderr).take(MAX_STDERR_BYTES).read_to_end(&mut kept);
            let _ = std::io::copy(&mut stderr, &mut std::io::sink());
            let _ = tx.send(kept);
        });
    }
    let said = |rx: &mpsc::Receiver<Vec<u8>>| {
        let bytes = rx.recv_timeout(Duration::from_secs(1)).unwrap_or_default();
        // Untrusted (a server's `remote:` lines): one line, escaped.
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        crate::escape::terminal_safe(&lines.join(" "))
    };
    let start = watch
        .as_ref()
        .map_or(0, |(dir, _)| crate::source::dir_bytes(dir));
    let too_large = || {
        watch
            .as_ref()
            .filter(|(dir, limit)| crate::source::dir_bytes(dir).saturating_sub(start) > *limit)
            .map(|(_, limit)| GitError::TooLarge {
                command,
                limit: *limit,
            })
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(e) => {
                crate::process::kill_group(&mut child);
                return Err(GitError::Spawn(e));
            }
        }
        if Instant::now() >= deadline {
            crate::process::kill_group(&mut child);
            return Err(GitError::TimedOut {
                command,
                timeout: remote.timeout,
                stderr: said(&rx),
            });
        }
        if let Some(e) = too_large() {
            crate::process::kill_group(&mut child);
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // Faster than the watch looks: it still counts (the objects stay, each read is bounded).
    if let Some(e) = too_large() {
        return Err(e);
    }
    if status.success() {
        return Ok(());
    }
    Err(GitError::Failed {
        command,
        status: status.to_string(),
        stderr: said(&rx),
    })
}

/// The refs under `prefix` in `repo` and the object each points to (`None`: a symbolic ref),
/// at most `cap` of them.
fn list_refs(
    repo: &gix::Repository,
    path: &Path,
    prefix: &str,
    cap: usize,
) -> Result<Vec<(String, Option<ObjectId>)>, ReadError> {
    let refs_err = |e: gix::Error| ReadError::Refs {
        path: path.to_owned(),
        prefix: prefix.to_owned(),
        detail: error_chain(&e),
    };
    let platform = repo.references().map_err(refs_err)?;
    let iter = platform.prefixed(prefix).map_err(refs_err)?;
    let mut out = Vec::new();
    for r in iter {
        let r = r.map_err(refs_err)?;
        if out.len() == cap {
            return Err(ReadError::TooManyRefs {
                prefix: prefix.to_owned(),
                limit: cap,
            });
        }
        let name = r.name().as_bstr().to_string();
        out.push((name, r.target().try_id().map(ToOwned::to_owned)));
    }
    Ok(out)
}

/// The bytes of blob `id` (the file `file` of a report), refused unread when its header says
/// it is larger than `limit`.
fn bounded_blob(
    repo: &gix::Repository,
    id: ObjectId,
    file: &'static str,
    limit: usize,
    host: &str,
) -> Result<Vec<u8>, ReportRejection> {
    let not_a_report = |detail: String| ReportRejection::NotAReport {
        host: host.to_owned(),
        detail,
    };
    let header = repo
        .find_header(id)
        .map_err(|e| not_a_report(format!("its {file} cannot be read: {}", error_chain(&e))))?;
    if header.kind() != gix::objs::Kind::Blob {
        return Err(not_a_report(format!(
            "its {file} is a {}, not a file",
            header.kind()
        )));
    }
    if header.size() > limit as u64 {
        return Err(ReportRejection::TooLarge {
            host: host.to_owned(),
            file,
            size: header.size(),
            limit: limit as u64,
        });
    }
    let mut blob = repo
        .find_blob(id)
        .map_err(|e| not_a_report(format!("its {file} cannot be read: {}", error_chain(&e))))?;
    Ok(blob.take_data())
}

/// The report under one ref, verified against `expect`.
fn read_report(
    repo: &gix::Repository,
    target: Option<ObjectId>,
    expect: &Expect<'_>,
) -> Result<HostReport, ReportRejection> {
    let host = expect.host;
    let not_a_report = |detail: String| ReportRejection::NotAReport {
        host: host.to_owned(),
        detail,
    };
    let bounded_header = |id: ObjectId, kind: gix::objs::Kind, what: &'static str| {
        let header = repo
            .find_header(id)
            .map_err(|e| not_a_report(format!("its {what} cannot be read: {}", error_chain(&e))))?;
        if header.kind() != kind {
            return Err(not_a_report(format!(
                "it points at a {}, not a {what}",
                header.kind()
            )));
        }
        if header.size() > MAX_OBJECT_BYTES {
            return Err(ReportRejection::TooLarge {
                host: host.to_owned(),
                file: what,
                size: header.size(),
                limit: MAX_OBJECT_BYTES,
            });
        }
        Ok(())
    };
    let commit = target.ok_or_else(|| not_a_report("it is a symbolic ref".to_owned()))?;
    bounded_header(commit, gix::objs::Kind::Commit, "commit")?;
    let tree = repo
        .find_commit(commit)
        .and_then(|c| c.tree_id().map(|t| t.detach()))
        .map_err(|e| not_a_report(format!("its commit cannot be read: {}", error_chain(&e))))?;
    bounded_header(tree, gix::objs::Kind::Tree, "tree")?;
    let tree = repo
        .find_tree(tree)
        .map_err(|e| not_a_report(format!("its tree cannot be read: {}", error_chain(&e))))?;
    let blob = |name: &str| match tree.find_entry(name).map(|e| (e.mode(), e.object_id())) {
        Some((mode, id)) if mode.is_blob() => Ok(Some(id)),
        Some(_) => Err(not_a_report(format!("its {name} is not a file"))),
        None => Ok(None),
    };
    let json = blob(REPORT_FILE)?
        .ok_or_else(|| not_a_report(format!("its commit has no {REPORT_FILE}")))?;
    let sig = blob(SIGNATURE_FILE)?;
    let json = bounded_blob(repo, json, "report.json", MAX_REPORT_BYTES, host)?;
    let sig = sig
        .map(|id| bounded_blob(repo, id, "report.json.minisig", MAX_SIGNATURE_BYTES, host))
        .transpose()?;
    report::verify(&json, sig.as_deref(), expect)
}

/// Reads and verifies the reports of `pool` in the local copy at `local_dir` (as the last
/// fetch left it). Each is checked ([`report::verify`]) against `fleet`, its ref's pool and
/// host, the host's key (`keys(host)`: `key:` of its manifest at the reader's target; `None`
/// when it has none) and the highest sequence of that host seen before (`seen`). Reports
/// that do not pass are in [`PoolReports::rejected`]; the error is for a local copy that
/// cannot be read, or more than [`MAX_REFS`] refs.
pub fn read_pool(
    local_dir: &Path,
    pool: &str,
    keys: &(dyn Fn(&str) -> Option<Key> + Sync),
    fleet: &str,
    seen: &BTreeMap<String, u64>,
) -> Result<PoolReports, ReadError> {
    let prefix = pool_prefix(pool)?;
    let mut pools = read_prefix(local_dir, &prefix, keys, fleet, seen, MAX_REFS)?;
    Ok(pools.remove(pool).unwrap_or_default())
}

/// [`read_pool`] for every pool in the local copy (after [`fetch_all`]): pool → its reports.
pub fn read_all(
    local_dir: &Path,
    keys: &(dyn Fn(&str) -> Option<Key> + Sync),
    fleet: &str,
    seen: &BTreeMap<String, u64>,
) -> Result<BTreeMap<String, PoolReports>, ReadError> {
    read_prefix(local_dir, STATUS_REFS, keys, fleet, seen, MAX_REFS)
}

fn read_prefix(
    local_dir: &Path,
    prefix: &str,
    keys: &(dyn Fn(&str) -> Option<Key> + Sync),
    fleet: &str,
    seen: &BTreeMap<String, u64>,
    cap: usize,
) -> Result<BTreeMap<String, PoolReports>, ReadError> {
    let mut repo = gix::open(local_dir).map_err(|e| ReadError::Open {
        path: local_dir.to_owned(),
        detail: error_chain(&e),
    })?;
    // Reports are read once each: no object cache worth its memory.
    repo.object_cache_size(0);
    let refs = list_refs(&repo, local_dir, prefix, cap)?;
    // Verifying is a signature check and a few object reads a report, independent of one
    // another: spread over the machine's cores (one chunk of refs a thread, each with its own
    // handle on the repository), then gathered in ref order.
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .clamp(1, 8);
    let chunk = refs.len().div_ceil(threads).max(256);
    let sync = repo.into_sync();
    let read: Vec<Vec<OneReport>> = std::thread::scope(|scope| {
        let handles: Vec<_> = refs
            .chunks(chunk)
            .map(|part| {
                let sync = &sync;
                scope.spawn(move || {
                    let mut repo = sync.to_thread_local();
                    repo.object_cache_size(0);
                    part.iter()
                        .map(|(name, target)| read_one(&repo, name, *target, keys, fleet, seen))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        handles
            .into_iter()
            // A thread that panicked panics here too: no report is dropped silently.
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect()
    });
    let mut pools: BTreeMap<String, PoolReports> = BTreeMap::new();
    for (pool, host, result) in read.into_iter().flatten() {
        let entry = pools.entry(pool).or_default();
        match result {
            Ok(r) => {
                entry.valid.insert(host, r);
            }
            Err(e) => entry.rejected.push((host, e)),
        }
    }
    Ok(pools)
}

/// What one ref holds: (pool, host, the report or why it is not one).
type OneReport = (String, String, Result<HostReport, ReportRejection>);

/// The report under ref `name` (at `target`).
fn read_one(
    repo: &gix::Repository,
    name: &str,
    target: Option<ObjectId>,
    keys: &(dyn Fn(&str) -> Option<Key> + Sync),
    fleet: &str,
    seen: &BTreeMap<String, u64>,
) -> OneReport {
    let rest = name.strip_prefix(STATUS_REFS).unwrap_or(name);
    let (pool, host) = rest.split_once('/').unwrap_or(("", rest));
    let named = check_component("pool", pool).and_then(|()| check_component("host", host));
    if let Err(e) = named {
        let why = ReportRejection::NotAReport {
            host: host.to_owned(),
            detail: format!("its ref {name} is not refs/pacfleet/status/<pool>/<hostname>: {e}"),
        };
        return (pool.to_owned(), host.to_owned(), Err(why));
    }
    let key = keys(host);
    let expect = Expect {
        fleet,
        pool,
        host,
        key: key.as_ref(),
        seen: seen.get(host).copied(),
    };
    (
        pool.to_owned(),
        host.to_owned(),
        read_report(repo, target, &expect),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_components_are_names_git_takes() {
        assert_eq!(
            report_ref("ws", "ws-01.lab").unwrap(),
            "refs/pacfleet/status/ws/ws-01.lab"
        );
        assert_eq!(pool_prefix("ws").unwrap(), "refs/pacfleet/status/ws/");
        for (pool, host) in [
            ("ws", "a..b"),
            ("ws", "a.lock"),
            ("ws", "a."),
            ("ws", "@"),
            ("ws", "a/b"),
            ("ws", "A"),
            ("ws", "-a"),
            ("ws", ""),
            ("w*", "a"),
            ("../x", "a"),
        ] {
            let e = report_ref(pool, host).unwrap_err();
            assert!(e.to_string().contains("cannot name a status ref"), "{e}");
        }
    }

    #[test]
    fn a_report_pushed_to_a_local_path_is_fetched_and_verified() {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served.git");
        gix::init_bare(&served).unwrap();
        let remote = StatusRemote {
            url: served.display().to_string(),
            ssh: None,
            timeout: Duration::from_secs(20),
            max_fetch_bytes: 1 << 20,
        };
        let kp = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
        let report: HostReport = serde_json::from_value(serde_json::json!({
            "format": 1, "fleet": "acme", "host": "a", "pool": "ws", "wave": 0,
            "target": "0".repeat(40), "outcome": "converged", "sequence": 1,
            "at": "2026-01-02T03:04:05Z",
        }))
        .unwrap();
        let signed = report::sign(&report, &kp.sk).unwrap();
        push(&remote, &dir.path().join("a.git"), &signed, "ws", "a").unwrap();
        let reader = dir.path().join("b/status.git");
        let fetched = fetch_pool(&remote, &reader, "ws").unwrap();
        assert_eq!(fetched.prefix, "refs/pacfleet/status/ws/");
        let key = Key {
            name: "a".to_owned(),
            key: kp.pk,
        };
        let keys = |h: &str| (h == "a").then(|| key.clone());
        let pool = read_pool(&reader, "ws", &keys, "acme", &BTreeMap::new()).unwrap();
        assert_eq!(pool.valid["a"], report);
        assert!(pool.rejected.is_empty(), "{:?}", pool.rejected);
        // Another pool has nothing; reading a copy that was never fetched says how it is made.
        assert!(
            read_pool(&reader, "db", &keys, "acme", &BTreeMap::new())
                .unwrap()
                .valid
                .is_empty()
        );
        let e = read_pool(
            &dir.path().join("none"),
            "ws",
            &keys,
            "acme",
            &BTreeMap::new(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("first fetch"), "{e}");
    }

    #[test]
    fn a_read_stops_at_its_ref_cap_before_reading_any() {
        let dir = tempfile::tempdir().unwrap();
        let local = dir.path().join("status.git");
        let repo = open_or_init(&local).unwrap();
        let signed = SignedReport {
            json: b"{}".to_vec(),
            signature: String::new(),
        };
        let commit = write_commit(&repo, &signed, "ws", "a").unwrap();
        for host in ["a", "b", "c"] {
            repo.reference(
                format!("{STATUS_REFS}ws/{host}").as_str(),
                commit,
                gix::refs::transaction::PreviousValue::Any,
                "test",
            )
            .unwrap();
        }
        let none = |_: &str| None;
        let seen = BTreeMap::new();
        let e =
            read_prefix(&local, "refs/pacfleet/status/ws/", &none, "acme", &seen, 2).unwrap_err();
        assert!(
            matches!(e, ReadError::TooManyRefs { limit: 2, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("nothing was read"), "{e}");
        // Within the cap every ref is read (and, keyless, rejected and counted).
        let pools =
            read_prefix(&local, "refs/pacfleet/status/ws/", &none, "acme", &seen, 3).unwrap();
        assert_eq!(
            pools["ws"].rejected_by_kind(),
            BTreeMap::from([("no-key", 3)])
        );
        // The outgoing commit is not a report ref.
        assert!(!pools["ws"].valid.contains_key("outgoing"));
    }
}
