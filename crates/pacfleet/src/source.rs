//! The fleet repository as a host sees it, through `gix`.
//!
//! A host keeps a private **bare** mirror of the fleet repository (no work tree, ever) and
//! [`fetch`]es into it. Manifests are then read straight out of git objects: all of them
//! ([`read_tree`], for `validate`-like readers) or, on a host, only what it needs, by exact
//! path (`crate::validate::fleet_for_host`, through [`Repo::tree_files`]); history questions are answered from the mirror ([`is_ancestor`],
//! [`commits_between`]), and signature notes are looked up under `refs/notes/pacfleet`
//! ([`read_note`]). A pass asking many of these opens the repository once ([`Repo`]).
//!
//! # Layout of the mirror
//!
//! | local ref                         | comes from on the remote | refspec                                   |
//! |-----------------------------------|--------------------------|-------------------------------------------|
//! | `refs/remotes/origin/<branch>`    | `refs/heads/<branch>`    | `+refs/heads/<branch>:refs/remotes/origin/<branch>` |
//! | `refs/notes/pacfleet`             | `refs/notes/pacfleet`    | `+refs/notes/pacfleet:refs/notes/pacfleet` |
//!
//! Both refspecs force-update: the mirror always reflects the remote, and force pushes are
//! detected by the caller with [`is_ancestor`] (old objects stay in the mirror; nothing is ever
//! garbage collected here). Tags are never fetched. If the remote has no `refs/notes/pacfleet`,
//! that is fine; if it had one and deleted it, the local notes ref is deleted as well.
//! The name of the remote-tracking ref makes `origin/<branch>` work with [`rev_parse`].
//!
//! # Transports
//!
//! `spec.url` is anything `git` accepts: a local path (absolute or relative to the current
//! directory, bare or non-bare repository), `file://`, `git://`, `http(s)://`, `ssh://` or
//! scp-like `user@host:path`. Local paths and `file://` spawn `git-upload-pack` and `ssh`
//! spawns `ssh`, exactly like `git fetch` does, so these need the respective programs on `PATH`.
//! With [`FetchOptions::ssh`] (agent.yaml `ssh_key:`), ssh is run with that identity and
//! known_hosts file only, in batch mode with strict host key checking ([`SshIdentity`]), so it
//! works where `~/.ssh` is out of reach (the systemd units set `ProtectHome=yes`).
//! `git://` and `http(s)://` are implemented natively. Configuration such as `http.proxy`
//! or `url.<base>.insteadOf` is read from the usual system and global git configuration.
//! A password in the URL (`https://user:token@host/…`) is redacted from error messages.
//!
//! # Time bounds
//!
//! [`fetch_with`] returns within [`FetchOptions::timeout`] (plus a short grace period) whatever
//! the remote does: the fetch runs on a worker thread that is told to stop when time is up, and
//! left behind if it cannot (a `git://` or `ssh` server that accepts but never answers). Connecting
//! is bounded separately: 5 s for `git://` (fixed by gix), [`FetchOptions::connect_timeout`] for
//! HTTP(S), and each HTTP request is also bounded by [`FetchOptions::timeout`].

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use gix::bstr::ByteSlice;
use gix::hash::ObjectId;
use gix::remote::Direction;

use crate::manifest::Entry;

/// The remote name used in the mirror's remote-tracking refs (`refs/remotes/origin/<branch>`).
pub const REMOTE_NAME: &str = "origin";

/// The notes ref holding signatures, both on the remote and in the mirror.
pub const NOTES_REF: &str = "refs/notes/pacfleet";

/// Where the fleet repo comes from: a local path, or a `file://`, `git://`, `https://`,
/// `http://`, `ssh://` (or scp-like `user@host:path`) URL, and which branch to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoSpec {
    /// The repository location as written in `agent.yaml` (`repo:`).
    pub url: String,
    /// The branch to follow, without `refs/heads/` (e.g. `main`).
    pub branch: String,
}

impl RepoSpec {
    /// The full name of the local remote-tracking ref this spec is fetched into,
    /// `refs/remotes/origin/<branch>`.
    pub fn tracking_ref(&self) -> String {
        format!("refs/remotes/{REMOTE_NAME}/{}", self.branch)
    }
}

/// What [`fetch`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// The tip commit of the branch (full hex id).
    pub commit: String,
    /// The root tree of [`Fetched::commit`] (full hex id).
    pub tree: String,
    /// Whether the branch tip differs from what the mirror had before this fetch
    /// (`true` for the first fetch into a new mirror, and also after a force push).
    pub updated: bool,
}

/// Limits for [`fetch_with`]; [`fetch`] uses [`FetchOptions::default`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Give up on the whole fetch after this long. This bounds every HTTP request and
    /// interrupts the pack transfer of any transport; default 10 minutes.
    pub timeout: Duration,
    /// Give up connecting to an HTTP(S) or `git://` server after this long; default 20
    /// seconds (`ssh` uses whatever ssh is configured with).
    pub connect_timeout: Duration,
    /// Give up when the pack the server sends grows past this many bytes: everything in the
    /// repository was written by whoever can push, before anything is verified. Default
    /// 256 MiB (a fleet repository of YAML is a few MiB even after years).
    pub max_pack_bytes: u64,
    /// For `ssh://` and scp-like URLs: the identity and known_hosts file ssh must use. `None`:
    /// ssh as configured for the user running fleetctl (`~/.ssh`, `ssh_config`).
    pub ssh: Option<SshIdentity>,
}

/// The ssh identity a host fetches with (agent.yaml `ssh_key:` and `ssh_known_hosts:`).
///
/// ssh runs as `ssh -i KEY -o IdentitiesOnly=yes -o IdentityAgent=none -o
/// UserKnownHostsFile=KNOWN_HOSTS -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes
/// -o BatchMode=yes` followed by gix's own arguments ([`SshIdentity::command`]): nothing in
/// `~/.ssh` is read or written, an unknown or changed server key is refused rather than
/// accepted, and a missing key fails instead of prompting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SshIdentity {
    /// The private key (`ssh_key:`).
    pub key: PathBuf,
    /// The known_hosts file holding the server's host key (`ssh_known_hosts:`).
    pub known_hosts: PathBuf,
}

impl SshIdentity {
    /// The ssh command line, as a `/bin/sh` command that gix completes with `"$@"` (the way
    /// git runs `GIT_SSH_COMMAND`); both paths are single-quoted, so any path is safe.
    pub fn command(&self) -> String {
        format!(
            "ssh -i {} -o IdentitiesOnly=yes -o IdentityAgent=none -o UserKnownHostsFile={} -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes",
            shell_quote(&self.key),
            shell_quote(&self.known_hosts)
        )
    }
}

/// `p` in single quotes for `/bin/sh`, with every `'` written as `'\''`.
fn shell_quote(p: &Path) -> String {
    format!("'{}'", p.to_string_lossy().replace('\'', r"'\''"))
}

/// The default of [`FetchOptions::max_pack_bytes`].
pub const DEFAULT_MAX_PACK_BYTES: u64 = 256 * 1024 * 1024;

impl Default for FetchOptions {
    fn default() -> Self {
        FetchOptions {
            timeout: Duration::from_secs(600),
            connect_timeout: Duration::from_secs(20),
            max_pack_bytes: DEFAULT_MAX_PACK_BYTES,
            ssh: None,
        }
    }
}

/// Why [`fetch`] failed; every message names the URL (passwords redacted) or the mirror path.
///
/// All variants except [`FetchError::Transfer`], [`FetchError::TimedOut`] and
/// [`FetchError::Inspect`] happen before anything is transferred and leave the mirror exactly as
/// it was. The others may leave new objects behind, but each ref is updated atomically to the
/// remote's value or not at all, so the mirror always holds a consistent, previously fetched
/// state.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The branch name cannot be a git branch.
    #[error(
        "invalid branch name {branch:?} for fleet repository {url}: {reason}; check `branch:` in agent.yaml"
    )]
    InvalidBranch {
        /// The repository URL.
        url: String,
        /// The branch as given.
        branch: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The URL could not be parsed.
    #[error("invalid fleet repository URL {url:?}: {detail}; check `repo:` in agent.yaml")]
    InvalidUrl {
        /// The URL as given.
        url: String,
        /// What gix said.
        detail: String,
    },
    /// The local mirror could not be created or opened.
    #[error(
        "cannot use {} as the local mirror of the fleet repository: {detail}; check its permissions, or delete it to start over",
        dest.display()
    )]
    Mirror {
        /// The mirror directory.
        dest: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// Connecting to the remote, or listing its refs, failed.
    #[error(
        "cannot reach fleet repository {url}: {detail}; check `repo:` in agent.yaml and that the server is reachable from this host"
    )]
    Connect {
        /// The repository URL.
        url: String,
        /// What went wrong.
        detail: String,
    },
    /// The remote does not have the branch.
    #[error(
        "branch {branch:?} does not exist in fleet repository {url} ({}); is the branch pushed? check `branch:` in agent.yaml",
        if available.is_empty() { "it has no branches at all".to_owned() } else { format!("it has: {}", available.join(", ")) }
    )]
    MissingBranch {
        /// The repository URL.
        url: String,
        /// The branch that was asked for.
        branch: String,
        /// Branches the remote does have (possibly truncated).
        available: Vec<String>,
    },
    /// Receiving objects or updating refs failed.
    #[error("fetching branch {branch:?} from fleet repository {url} failed: {detail}")]
    Transfer {
        /// The repository URL.
        url: String,
        /// The branch being fetched.
        branch: String,
        /// What went wrong.
        detail: String,
    },
    /// The fetch took longer than [`FetchOptions::timeout`].
    #[error(
        "fetching branch {branch:?} from fleet repository {url} did not finish within {}; check the network, or raise the timeout",
        humantime::format_duration(*timeout)
    )]
    TimedOut {
        /// The repository URL.
        url: String,
        /// The branch being fetched.
        branch: String,
        /// The limit that was exceeded.
        timeout: Duration,
    },
    /// A stop signal came while waiting for the fetch.
    #[error(
        "fetching branch {branch:?} from fleet repository {url} was stopped by a signal; nothing was changed"
    )]
    Stopped {
        /// The repository URL.
        url: String,
        /// The branch being fetched.
        branch: String,
    },
    /// The server sent more than `max_pack_bytes`.
    #[error(
        "fetching branch {branch:?} from fleet repository {url} was stopped: the server sent more than {limit} bytes; nothing was kept. If the repository really is that large, raise `max_pack_size` in agent.yaml; otherwise someone pushed something huge: remove it from the branch's history"
    )]
    TooLarge {
        /// The repository URL.
        url: String,
        /// The branch being fetched.
        branch: String,
        /// The limit.
        limit: u64,
    },
    /// The fetched branch could not be resolved to a commit in the mirror.
    #[error(
        "fetched branch {branch:?} from {url}, but cannot read it from the mirror at {}: {detail}; delete the mirror to fetch afresh",
        dest.display()
    )]
    Inspect {
        /// The repository URL.
        url: String,
        /// The branch being fetched.
        branch: String,
        /// The mirror directory.
        dest: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

impl FetchError {
    /// Apply `f` to every text in the error (URL, branch, details).
    fn map_text(self, f: impl Fn(String) -> String) -> FetchError {
        use FetchError::*;
        match self {
            InvalidBranch {
                url,
                branch,
                reason,
            } => InvalidBranch {
                url: f(url),
                branch,
                reason: f(reason),
            },
            InvalidUrl { url, detail } => InvalidUrl {
                url: f(url),
                detail: f(detail),
            },
            Mirror { dest, detail } => Mirror {
                dest,
                detail: f(detail),
            },
            Connect { url, detail } => Connect {
                url: f(url),
                detail: f(detail),
            },
            MissingBranch {
                url,
                branch,
                available,
            } => MissingBranch {
                url: f(url),
                branch,
                available,
            },
            Transfer {
                url,
                branch,
                detail,
            } => Transfer {
                url: f(url),
                branch,
                detail: f(detail),
            },
            TimedOut {
                url,
                branch,
                timeout,
            } => TimedOut {
                url: f(url),
                branch,
                timeout,
            },
            Stopped { url, branch } => Stopped {
                url: f(url),
                branch,
            },
            TooLarge { url, branch, limit } => TooLarge {
                url: f(url),
                branch,
                limit,
            },
            Inspect {
                url,
                branch,
                dest,
                detail,
            } => Inspect {
                url: f(url),
                branch,
                dest,
                detail: f(detail),
            },
        }
    }
}

/// Why reading from a repository ([`read_tree`], [`is_ancestor`], [`commits_between`],
/// [`read_note`], [`rev_parse`]) failed.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    /// A signature note is larger than any statement: refused unread.
    #[error(
        "the signature note on commit {commit} is {size} bytes; statements over 64 KiB are refused (it was not read)"
    )]
    NoteTooLarge {
        /// The commit it is attached to.
        commit: String,
        /// The note blob's size.
        size: u64,
    },
    /// The repository could not be opened.
    #[error("cannot open git repository at {}: {detail}; has the fleet repository been fetched yet?", repo.display())]
    Open {
        /// The repository path.
        repo: PathBuf,
        /// What went wrong.
        detail: String,
    },
    /// A revision did not resolve to anything.
    #[error("revision {rev:?} not found in git repository at {}: {detail}", repo.display())]
    UnknownRevision {
        /// The repository path.
        repo: PathBuf,
        /// The revision as given.
        rev: String,
        /// What gix said.
        detail: String,
    },
    /// A revision resolved to something other than a commit (after peeling tags).
    #[error("revision {rev:?} in git repository at {} is a {kind}, not a commit", repo.display())]
    NotACommit {
        /// The repository path.
        repo: PathBuf,
        /// The revision as given.
        rev: String,
        /// The kind of object it names.
        kind: String,
    },
    /// An object could not be read (missing or corrupt).
    #[error(
        "cannot read {what} in git repository at {}: {detail}; the mirror may be damaged, delete it to fetch afresh",
        repo.display()
    )]
    Object {
        /// The repository path.
        repo: PathBuf,
        /// Which object, e.g. `tree of commit abc…` or `blob pools/web.yaml`.
        what: String,
        /// What went wrong.
        detail: String,
    },
}

/// Fetch `spec` into a bare mirror at `dest` with default [`FetchOptions`].
///
/// `dest` is created (with parents) if it is missing or an empty directory; it never gets a
/// work tree, and the source repository is never written to. The branch is stored in
/// `refs/remotes/origin/<branch>` and the remote's `refs/notes/pacfleet`, if any, in
/// `refs/notes/pacfleet` (see the [module docs](self)). A fetch with nothing new transfers
/// no objects. Returns the branch tip and whether it changed.
pub fn fetch(spec: &RepoSpec, dest: &Path) -> Result<Fetched, FetchError> {
    fetch_with(spec, dest, &FetchOptions::default())
}

/// Like [`fetch`], with explicit time limits.
///
/// The fetch runs on a worker thread while the calling thread keeps time. When
/// [`FetchOptions::timeout`] expires, the worker is asked to stop (gix checks this while
/// receiving the pack) and given a short grace period to clean up; if it is stuck elsewhere
/// (e.g. a `git://` server that accepted the connection but never answers), it is left behind
/// and this function returns [`FetchError::TimedOut`] anyway. A worker left behind checks the
/// flag before it starts transferring objects and while it does, and gives up when it is set.
pub fn fetch_with(
    spec: &RepoSpec,
    dest: &Path,
    options: &FetchOptions,
) -> Result<Fetched, FetchError> {
    start_fetch(spec, dest, options).wait()
}

/// Where the worker thread sends the fetch's outcome.
type FetchReceiver = std::sync::mpsc::Receiver<Result<Fetched, FetchError>>;

/// A fetch running on its worker thread ([`start_fetch`]); [`PendingFetch::wait`] gives its
/// outcome, keeping [`fetch_with`]'s time limit counted from the start.
pub struct PendingFetch {
    spec: RepoSpec,
    options: FetchOptions,
    started: std::time::Instant,
    /// A password in the URL, scrubbed from every message.
    secret: Option<String>,
    interrupt: Arc<AtomicBool>,
    running: Option<(FetchReceiver, std::thread::JoinHandle<()>)>,
    /// The outcome, when there was nothing to wait for (a bad branch, or no thread to run on).
    done: Option<Result<Fetched, FetchError>>,
}

/// Starts [`fetch_with`]'s work on a worker thread and returns at once, so a pass can read its
/// package databases while the fetch waits on the network.
pub fn start_fetch(spec: &RepoSpec, dest: &Path, options: &FetchOptions) -> PendingFetch {
    // A password in the URL (`https://user:token@host/…`) must not end up in messages or logs.
    let secret = gix::url::parse(spec.url.as_bytes().as_bstr())
        .ok()
        .and_then(|url| url.password().map(str::to_owned));
    let interrupt = Arc::new(AtomicBool::new(false));
    let mut pending = PendingFetch {
        spec: spec.clone(),
        options: options.clone(),
        started: std::time::Instant::now(),
        secret,
        interrupt: Arc::clone(&interrupt),
        running: None,
        done: None,
    };
    if let Err(e) = validate_branch(spec) {
        pending.done = Some(Err(e));
        return pending;
    }
    let (done, result) = std::sync::mpsc::channel();
    let worker = {
        let (spec, dest, options) = (spec.clone(), dest.to_owned(), options.clone());
        std::thread::Builder::new()
            .name("pacfleet-fetch".into())
            .spawn(move || {
                // The receiver is gone only if the caller gave up; nobody needs the result then.
                let _ = done.send(fetch_blocking(&spec, &dest, &options, &interrupt));
            })
    };
    match worker {
        Ok(worker) => pending.running = Some((result, worker)),
        Err(err) => {
            tracing::warn!(%err, "cannot start a fetch thread; fetching without a time limit");
            pending.done = Some(fetch_blocking(spec, dest, options, &pending.interrupt));
        }
    }
    pending
}

impl PendingFetch {
    /// The fetch's outcome, within its time limit (counted from [`start_fetch`]).
    pub fn wait(self) -> Result<Fetched, FetchError> {
        self.wait_or_stop(&AtomicBool::new(false))
    }

    /// Like [`wait`](Self::wait), but gives up (asking the worker to stop) as soon as `stop`
    /// is set: a pass told to stop does not sit out a slow server.
    pub fn wait_or_stop(mut self, stop: &AtomicBool) -> Result<Fetched, FetchError> {
        let shown = redact_url(&self.spec.url);
        let (url, secret) = (self.spec.url.clone(), self.secret.clone());
        let scrub = |err: FetchError| {
            let err = if shown == url {
                err
            } else {
                err.map_text(|text| text.replace(&url, &shown))
            };
            match &secret {
                Some(secret) => err.map_text(|text| scrub_secret(text, secret)),
                None => err,
            }
        };
        if let Some(done) = self.done.take() {
            return done.map_err(scrub);
        }
        self.wait_worker(stop).map_err(scrub)
    }

    fn wait_worker(&mut self, stop: &AtomicBool) -> Result<Fetched, FetchError> {
        let Some((result, worker)) = self.running.take() else {
            return Err(FetchError::Transfer {
                url: self.spec.url.clone(),
                branch: self.spec.branch.clone(),
                detail: "the fetch was waited for twice (this is a bug in pacfleet)".into(),
            });
        };
        let (spec, options) = (&self.spec, &self.options);
        let timed_out = || FetchError::TimedOut {
            url: spec.url.clone(),
            branch: spec.branch.clone(),
            timeout: options.timeout,
        };
        use std::sync::mpsc::RecvTimeoutError;
        // Wait in short slices, to notice a stop signal.
        let first = loop {
            let left = options.timeout.saturating_sub(self.started.elapsed());
            match result.recv_timeout(left.min(Duration::from_millis(100))) {
                Err(RecvTimeoutError::Timeout) if !left.is_zero() => {
                    if stop.load(Ordering::SeqCst) {
                        self.interrupt.store(true, Ordering::SeqCst);
                        // The worker winds down on its own; nobody waits for it.
                        return Err(FetchError::Stopped {
                            url: spec.url.clone(),
                            branch: spec.branch.clone(),
                        });
                    }
                }
                other => break other,
            }
        };
        let outcome = match first {
            Ok(outcome) => outcome,
            Err(RecvTimeoutError::Timeout) => {
                self.interrupt.store(true, Ordering::SeqCst);
                match result.recv_timeout(grace(options.timeout)) {
                    // It made it after all.
                    Ok(Ok(fetched)) => Ok(fetched),
                    Ok(Err(_)) => Err(timed_out()),
                    Err(_) => {
                        tracing::warn!(
                            url = redact_url(&spec.url),
                            "fetch did not stop after its time limit; leaving its thread behind"
                        );
                        return Err(timed_out());
                    }
                }
            }
            Err(RecvTimeoutError::Disconnected) => Err(FetchError::Transfer {
                url: spec.url.clone(),
                branch: spec.branch.clone(),
                detail: "the fetch thread panicked (this is a bug in pacfleet)".into(),
            }),
        };
        // The worker has sent its result (or panicked), so joining cannot block for long.
        let _ = worker.join();
        outcome
    }
}

/// The bytes of the files directly in `dir` (0 when it cannot be read).
pub(crate) fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// How long a fetch that ran out of time gets to wind down before it is left behind.
fn grace(timeout: Duration) -> Duration {
    (timeout / 4).min(Duration::from_secs(10))
}

/// The fetch itself, on the current thread; `interrupt` aborts the pack transfer.
fn fetch_blocking(
    spec: &RepoSpec,
    dest: &Path,
    options: &FetchOptions,
    interrupt: &AtomicBool,
) -> Result<Fetched, FetchError> {
    let url = spec.url.as_str();
    let branch = spec.branch.as_str();
    let remote_branch = format!("refs/heads/{branch}");
    let tracking = spec.tracking_ref();

    let parsed_url =
        gix::url::parse(url.as_bytes().as_bstr()).map_err(|err| FetchError::InvalidUrl {
            url: url.to_owned(),
            detail: err.to_string(),
        })?;

    let repo = open_or_init_mirror(dest)?;
    let before = current_id(&repo, &tracking).map_err(|detail| FetchError::Mirror {
        dest: dest.to_owned(),
        detail,
    })?;
    let transfer_err = |detail: String| FetchError::Transfer {
        url: url.to_owned(),
        branch: branch.to_owned(),
        detail,
    };
    let connect_err = |detail: String| FetchError::Connect {
        url: url.to_owned(),
        detail,
    };

    let remote = repo
        .remote_at(parsed_url.clone())
        .and_then(|remote| {
            remote
                .with_fetch_tags(gix::remote::fetch::Tags::None)
                .with_refspecs(
                    [
                        gix::bstr::BString::from(format!("+{remote_branch}:{tracking}")),
                        gix::bstr::BString::from(format!("+{NOTES_REF}:{NOTES_REF}")),
                    ],
                    Direction::Fetch,
                )
        })
        .map_err(|err| FetchError::InvalidUrl {
            url: url.to_owned(),
            detail: error_chain(&err),
        })?;

    let timed_out = || {
        interrupt
            .load(Ordering::SeqCst)
            .then(|| FetchError::TimedOut {
                url: url.to_owned(),
                branch: branch.to_owned(),
                timeout: options.timeout,
            })
    };

    let prepare = connect(&remote, &parsed_url, options)
        .map_err(connect_err)?
        .prepare_fetch(gix::progress::Discard, Default::default())
        .map_err(|err| timed_out().unwrap_or_else(|| connect_err(error_chain(&err))))?;

    let ref_map = prepare.ref_map();
    let has_branch = ref_map
        .mappings
        .iter()
        .any(|m| m.remote.as_name() == Some(remote_branch.as_bytes().as_bstr()));
    if !has_branch {
        drop(prepare);
        return Err(FetchError::MissingBranch {
            url: url.to_owned(),
            branch: branch.to_owned(),
            available: list_branches(&repo, &parsed_url, options),
        });
    }
    let remote_has_notes = ref_map
        .mappings
        .iter()
        .any(|m| m.remote.as_name() == Some(NOTES_REF.as_bytes().as_bstr()));

    if let Some(err) = timed_out() {
        return Err(err);
    }
    // A watchdog measures what arrives in the pack directory and stops the transfer (the same
    // flag as the time limit) once it passes the limit.
    let too_large = AtomicBool::new(false);
    let receiving = AtomicBool::new(true);
    let pack_dir = repo.path().join("objects/pack");
    let outcome = std::thread::scope(|scope| {
        scope.spawn(|| {
            let before = dir_bytes(&pack_dir);
            while receiving.load(Ordering::SeqCst) {
                if dir_bytes(&pack_dir).saturating_sub(before) > options.max_pack_bytes {
                    too_large.store(true, Ordering::SeqCst);
                    interrupt.store(true, Ordering::SeqCst);
                    return;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        let outcome = prepare
            .with_reflog_message(gix::remote::fetch::RefLogMessage::Prefixed {
                action: "pacfleet fetch".into(),
            })
            .receive(gix::progress::Discard, interrupt);
        receiving.store(false, Ordering::SeqCst);
        outcome
    });
    if too_large.load(Ordering::SeqCst) {
        return Err(FetchError::TooLarge {
            url: url.to_owned(),
            branch: branch.to_owned(),
            limit: options.max_pack_bytes,
        });
    }
    if let Some(err) = timed_out() {
        return Err(err);
    }
    let outcome = outcome.map_err(|err| transfer_err(error_chain(&err)))?;
    tracing::debug!(
        url = %parsed_url,
        branch,
        pack_received = matches!(outcome.status, gix::remote::fetch::Status::Change { .. }),
        "fetched fleet repository"
    );

    if !remote_has_notes {
        remove_stale_notes(&repo).map_err(transfer_err)?;
    }

    let inspect_err = |detail: String| FetchError::Inspect {
        url: url.to_owned(),
        branch: branch.to_owned(),
        dest: dest.to_owned(),
        detail,
    };
    let after = current_id(&repo, &tracking)
        .map_err(inspect_err)?
        .ok_or_else(|| inspect_err(format!("{tracking} was not written")))?;
    let commit = repo.find_commit(after).map_err(|err| {
        inspect_err(format!(
            "{tracking} points to {after}, which is not a readable commit: {}",
            error_chain(&err)
        ))
    })?;
    let tree = commit
        .tree_id()
        .map_err(|err| inspect_err(format!("tree of commit {after}: {}", error_chain(&err))))?;
    Ok(Fetched {
        commit: after.to_string(),
        tree: tree.to_string(),
        updated: before != Some(after),
    })
}

/// Read every blob under `commit`'s tree (recursively) whose path matches `want(path)`.
///
/// `commit` is any revision [`rev_parse`] understands (typically a hex id). Paths use `/`
/// separators and are relative to the repository root (`fleet.yaml`, `pools/web.yaml`). Only
/// regular and executable files are considered, never symlinks or submodules. The result is
/// sorted by path.
pub fn read_tree(
    repo: &Path,
    commit: &str,
    want: impl Fn(&str) -> bool,
) -> Result<Vec<(String, Vec<u8>)>, ReadError> {
    Ok(read_tree_with_links(repo, commit, want, |_| false)?.0)
}

/// Like [`read_tree`], and also the symbolic links (mode 120000) whose paths `want_link`
/// accepts, as `(path, target)`: a link's blob is the path it points to, never a file's
/// contents, so callers report links rather than read them as files.
#[allow(clippy::type_complexity)]
pub fn read_tree_with_links(
    repo: &Path,
    commit: &str,
    want: impl Fn(&str) -> bool,
    want_link: impl Fn(&str) -> bool,
) -> Result<(Vec<(String, Vec<u8>)>, Vec<(String, Vec<u8>)>), ReadError> {
    let r = open(repo)?;
    let id = resolve_commit(&r, repo, commit)?;
    let object_err = |what: String, err: gix::Error| ReadError::Object {
        repo: repo.to_owned(),
        what,
        detail: error_chain(&err),
    };
    let tree = r
        .find_commit(id)
        .and_then(|c| c.tree())
        .map_err(|err| object_err(format!("tree of commit {id}"), err))?;
    let entries = tree
        .traverse()
        .breadthfirst
        .files()
        .map_err(|err| object_err(format!("files of commit {id}"), err))?;
    let (mut out, mut links) = (Vec::new(), Vec::new());
    for entry in entries {
        let link = entry.mode.is_link();
        if !entry.mode.is_blob() && !link {
            continue;
        }
        let Ok(path) = std::str::from_utf8(&entry.filepath) else {
            tracing::debug!(path = %entry.filepath, "skipping non-UTF-8 path in fleet repository");
            continue;
        };
        if !(if link { want_link(path) } else { want(path) }) {
            continue;
        }
        let mut blob = r
            .find_blob(entry.oid)
            .map_err(|err| object_err(format!("file {path} of commit {id}"), err))?;
        if link {
            links.push((path.to_owned(), blob.take_data()));
        } else {
            out.push((path.to_owned(), blob.take_data()));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    links.sort_by(|a, b| a.0.cmp(&b.0));
    Ok((out, links))
}

/// Is `ancestor` an ancestor of, or equal to, `descendant`? Both are revisions (hex ids).
///
/// `false` after a force push that dropped `ancestor` from the branch, or for unrelated
/// histories.
pub fn is_ancestor(repo: &Path, ancestor: &str, descendant: &str) -> Result<bool, ReadError> {
    Repo::open(repo)?.is_ancestor(ancestor, descendant)
}

/// Commits reachable from `tip` but not from `stop` (all of history when `stop` is `None`),
/// newest first (`git rev-list stop..tip`). The list starts with `tip` unless `tip` is
/// reachable from `stop`, in which case it is empty. Commits on merged side branches are
/// included; for linear history this is simply the first-parent chain from `tip` down to,
/// excluding, `stop`.
pub fn commits_between(
    repo: &Path,
    stop: Option<&str>,
    tip: &str,
) -> Result<Vec<String>, ReadError> {
    Repo::open(repo)?.commits_between(stop, tip)
}

/// The largest signature note read: a statement and a handful of signatures fit in far less.
pub const MAX_NOTE_BYTES: usize = 64 * 1024;

/// The note attached to `commit` (a revision, typically a hex id) under `refs/notes/pacfleet`,
/// if any. Handles flat and fanned-out (`ab/cdef…`) note trees. A note over
/// [`MAX_NOTE_BYTES`] is [`ReadError::NoteTooLarge`], without reading it.
pub fn read_note(repo: &Path, commit: &str) -> Result<Option<Vec<u8>>, ReadError> {
    let r = Repo::open(repo)?;
    let id = resolve_commit(&r.repo, repo, commit)?;
    r.notes()?.note(&id.to_string())
}

/// A repository opened once for many questions: a pass's verification asks several of every
/// commit since the one it applied, and opening a repository (which loads its pack indexes)
/// for each made catching up cost more than fetching. The free functions of this module open
/// one for a single question.
pub struct Repo {
    repo: gix::Repository,
    path: PathBuf,
}

impl Repo {
    /// Opens the repository at `path` (bare, a `.git` directory, or a work tree).
    pub fn open(path: &Path) -> Result<Repo, ReadError> {
        let mut repo = open(path)?;
        // Catching up asks of every commit its tree, its fleet.yaml and its note, through the
        // same notes and history objects, stored as deltas of one another in the pack:
        // decoded objects and delta bases are kept, not decoded again for every question.
        repo.object_cache_size_if_unset(4 * 1024 * 1024);
        repo.objects.set_pack_cache(|| {
            Box::new(gix::odb::pack::cache::lru::MemoryCappedHashmap::new(
                8 * 1024 * 1024,
            ))
        });
        Ok(Repo {
            repo,
            path: path.to_owned(),
        })
    }

    fn object_err(&self, what: String) -> impl Fn(gix::Error) -> ReadError + '_ {
        move |err| ReadError::Object {
            repo: self.path.clone(),
            what: what.clone(),
            detail: error_chain(&err),
        }
    }

    /// See [`is_ancestor`].
    pub fn is_ancestor(&self, ancestor: &str, descendant: &str) -> Result<bool, ReadError> {
        let a = resolve_commit(&self.repo, &self.path, ancestor)?;
        let d = resolve_commit(&self.repo, &self.path, descendant)?;
        if a == d {
            return Ok(true);
        }
        let base = self
            .repo
            .merge_base(a, d)
            .map_err(self.object_err(format!("history between {a} and {d}")))?;
        Ok(base.is_some_and(|base| base.detach() == a))
    }

    /// See [`commits_between`].
    pub fn commits_between(&self, stop: Option<&str>, tip: &str) -> Result<Vec<String>, ReadError> {
        let tip_id = resolve_commit(&self.repo, &self.path, tip)?;
        let stop_id = stop
            .map(|s| resolve_commit(&self.repo, &self.path, s))
            .transpose()?;
        let walk_err = self.object_err(format!("history of {tip_id}"));
        let walk = self
            .repo
            .rev_walk([tip_id])
            .with_hidden(stop_id)
            .all()
            .map_err(&walk_err)?;
        let mut out = Vec::new();
        for info in walk {
            out.push(info.map_err(&walk_err)?.id.to_string());
        }
        Ok(out)
    }

    /// The commit that made `files` what they are at `tip`: walking first parents from `tip`,
    /// the oldest commit whose parent has any of them different (added, removed or changed).
    /// `known` is an earlier answer, (the tip it was asked at, its origin): met on the way with
    /// the files unchanged, it ends the walk. At most `limit` commits are walked; beyond that
    /// the oldest one reached is the answer.
    pub fn change_origin(
        &self,
        tip: &str,
        files: &[String],
        known: Option<(&str, &str)>,
        limit: usize,
    ) -> Result<String, ReadError> {
        let tip_id = resolve_commit(&self.repo, &self.path, tip)?;
        let ids_at =
            |commit: ObjectId| -> Result<(Vec<Option<ObjectId>>, Option<ObjectId>), ReadError> {
                let err = self.object_err(format!("commit {commit}"));
                let c = self.repo.find_commit(commit).map_err(&err)?;
                let parent = c.parent_ids().next().map(|p| p.detach());
                let tree = c.tree().map_err(&err)?;
                let ids = files
                    .iter()
                    .map(|f| {
                        tree.lookup_entry_by_path(f)
                            .map(|e| e.map(|e| e.object_id()))
                            .map_err(&err)
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok((ids, parent))
            };
        let (want, mut parent) = ids_at(tip_id)?;
        let mut origin = tip_id;
        for _ in 0..limit {
            if let Some((at, answer)) = known
                && origin == at
            {
                return Ok(answer.to_owned());
            }
            let Some(p) = parent else { break };
            let (ids, next) = ids_at(p)?;
            if ids != want {
                break;
            }
            origin = p;
            parent = next;
        }
        Ok(origin.to_string())
    }

    /// See [`commit_tree`].
    pub fn commit_tree(&self, commit: &str) -> Result<String, ReadError> {
        Ok(self.tree_of(commit)?.to_string())
    }

    fn tree_of(&self, commit: &str) -> Result<ObjectId, ReadError> {
        let id = resolve_commit(&self.repo, &self.path, commit)?;
        self.repo
            .find_commit(id)
            .and_then(|c| c.tree_id().map(|t| t.detach()))
            .map_err(self.object_err(format!("commit {id}")))
    }

    /// The regular file at exactly `path` (`/`-separated, e.g. `fleet.yaml`) in `commit`'s
    /// tree, found by looking up each component (no walk of the tree); `None` when there is
    /// none, or it is a symbolic link, a directory or a submodule (as [`read_tree`] skips them).
    pub fn file(&self, commit: &str, path: &str) -> Result<Option<Vec<u8>>, ReadError> {
        self.file_in_tree(self.tree_of(commit)?, path)
    }

    /// [`Repo::file`] of the tree `tree`.
    pub fn file_in_tree(&self, tree: ObjectId, path: &str) -> Result<Option<Vec<u8>>, ReadError> {
        match self.tree_files(tree).lookup(path)? {
            Entry::File(bytes) => Ok(Some(bytes)),
            Entry::Missing | Entry::Link { .. } => Ok(None),
        }
    }

    /// Exact-path reads of the tree `tree`, each directory decoded once.
    pub fn tree_files(&self, tree: ObjectId) -> TreeFiles<'_> {
        TreeFiles {
            repo: self,
            root: tree,
            dirs: std::collections::HashMap::new(),
        }
    }

    /// The signature notes under `refs/notes/pacfleet` (none when the ref does not exist).
    pub fn notes(&self) -> Result<Notes<'_>, ReadError> {
        let tree = match self
            .repo
            .try_find_reference(NOTES_REF)
            .map_err(self.object_err(NOTES_REF.to_owned()))?
        {
            Some(mut reference) => Some(
                reference
                    .peel_to_commit()
                    .and_then(|c| c.tree_id().map(|t| t.detach()))
                    .map_err(self.object_err(format!("tree of {NOTES_REF}")))?,
            ),
            None => None,
        };
        Ok(Notes { repo: self, tree })
    }
}

/// Exact-path reads of one tree ([`Repo::tree_files`]): each lookup descends component by
/// component, and every directory read on the way is kept, so that looking up two names in a
/// directory of 100,000 entries decodes it once.
pub struct TreeFiles<'r> {
    repo: &'r Repo,
    root: ObjectId,
    /// Directory path (`""` for the root) → its tree, or what stood in its place.
    dirs: std::collections::HashMap<String, Result<gix::Tree<'r>, Entry>>,
}

impl<'r> TreeFiles<'r> {
    /// Reads directory `dir` (`""`: the root) into `dirs`, with its parents: its tree, or what
    /// stands in place of it (a link on the way, or nothing).
    fn ensure(&mut self, dir: &str) -> Result<(), ReadError> {
        if self.dirs.contains_key(dir) {
            return Ok(());
        }
        let value = if dir.is_empty() {
            Ok(self.tree(self.root, "the root directory")?)
        } else {
            let (parent, name) = dir.rsplit_once('/').unwrap_or(("", dir));
            self.ensure(parent)?;
            match &self.dirs[parent] {
                Err(other) => Err(other.clone()),
                Ok(tree) => match tree.find_entry(name).map(|e| (e.mode(), e.object_id())) {
                    Some((mode, id)) if mode.is_tree() => Ok(self.tree(id, dir)?),
                    Some((mode, id)) if mode.is_link() => Err(Entry::Link {
                        at: dir.to_owned(),
                        target: self.blob(id, dir)?,
                    }),
                    _ => Err(Entry::Missing),
                },
            }
        };
        self.dirs.insert(dir.to_owned(), value);
        Ok(())
    }

    fn tree(&self, id: ObjectId, dir: &str) -> Result<gix::Tree<'r>, ReadError> {
        self.repo
            .repo
            .find_tree(id)
            .map_err(self.repo.object_err(format!("directory {dir}")))
    }

    fn blob(&self, id: ObjectId, path: &str) -> Result<Vec<u8>, ReadError> {
        let mut blob = self
            .repo
            .repo
            .find_blob(id)
            .map_err(self.repo.object_err(format!("file {path}")))?;
        Ok(blob.take_data())
    }

    /// What is at `path`.
    pub fn lookup(&mut self, path: &str) -> Result<Entry, ReadError> {
        let (parent, name) = path.rsplit_once('/').unwrap_or(("", path));
        self.ensure(parent)?;
        let entry = match &self.dirs[parent] {
            Ok(tree) => tree.find_entry(name).map(|e| (e.mode(), e.object_id())),
            Err(other) => return Ok(other.clone()),
        };
        Ok(match entry {
            Some((mode, id)) if mode.is_blob() => Entry::File(self.blob(id, path)?),
            Some((mode, id)) if mode.is_link() => Entry::Link {
                at: path.to_owned(),
                target: self.blob(id, path)?,
            },
            _ => Entry::Missing,
        })
    }

    /// The names of the entries of directory `dir`, or what stands in place of it.
    pub fn list(&mut self, dir: &str) -> Result<Result<Vec<String>, Entry>, ReadError> {
        self.ensure(dir)?;
        Ok(match &self.dirs[dir] {
            Ok(tree) => Ok(tree
                .iter()
                .filter_map(Result::ok)
                .filter_map(|e| std::str::from_utf8(e.filename()).ok().map(str::to_owned))
                .collect()),
            Err(other) => Err(other.clone()),
        })
    }
}

impl crate::manifest::FleetSource for TreeFiles<'_> {
    type Error = ReadError;

    fn read(&mut self, path: &str) -> Result<Entry, ReadError> {
        self.lookup(path)
    }

    fn list(&mut self, dir: &str) -> Result<Result<Vec<String>, Entry>, ReadError> {
        TreeFiles::list(self, dir)
    }
}

impl Repo {
    /// The git directory (`.git` of a work tree, or the bare repository itself).
    pub fn git_dir(&self) -> &Path {
        self.repo.git_dir()
    }

    /// The tree of the commit `reference` points to; `None` when the reference does not exist.
    pub fn ref_tree(&self, reference: &str) -> Result<Option<ObjectId>, ReadError> {
        match self
            .repo
            .try_find_reference(reference)
            .map_err(self.object_err(reference.to_owned()))?
        {
            Some(mut r) => Ok(Some(
                r.peel_to_commit()
                    .and_then(|c| c.tree_id().map(|t| t.detach()))
                    .map_err(self.object_err(format!("tree of {reference}")))?,
            )),
            None => Ok(None),
        }
    }

    /// The bytes of the blob `id`.
    pub fn blob(&self, id: ObjectId) -> Result<Vec<u8>, ReadError> {
        let mut blob = self
            .repo
            .find_blob(id)
            .map_err(self.object_err(format!("blob {id}")))?;
        Ok(blob.take_data())
    }

    /// Every blob under the tree `tree`, recursively, as (path, blob id).
    pub fn blobs(&self, tree: ObjectId) -> Result<Vec<(String, ObjectId)>, ReadError> {
        let (mut gone, mut came) = (Vec::new(), Vec::new());
        self.compare(None, Some(tree), String::new(), &mut gone, &mut came)?;
        Ok(came)
    }

    /// How the blobs under tree `new` differ from those under tree `old`: (path, id) of the
    /// blobs only `old` has, or has with other contents, and of those only `new` has. Equal
    /// subtrees are skipped unread, so two notes trees that differ by one note cost a few
    /// tree reads whatever their size.
    #[allow(clippy::type_complexity)]
    pub fn changed_blobs(
        &self,
        old: ObjectId,
        new: ObjectId,
    ) -> Result<(Vec<(String, ObjectId)>, Vec<(String, ObjectId)>), ReadError> {
        let (mut gone, mut came) = (Vec::new(), Vec::new());
        self.compare(Some(old), Some(new), String::new(), &mut gone, &mut came)?;
        Ok((gone, came))
    }

    fn compare(
        &self,
        old: Option<ObjectId>,
        new: Option<ObjectId>,
        prefix: String,
        gone: &mut Vec<(String, ObjectId)>,
        came: &mut Vec<(String, ObjectId)>,
    ) -> Result<(), ReadError> {
        if old == new {
            return Ok(());
        }
        type Entries = std::collections::BTreeMap<Vec<u8>, (gix::objs::tree::EntryMode, ObjectId)>;
        let entries = |id: Option<ObjectId>| -> Result<Entries, ReadError> {
            let Some(id) = id else {
                return Ok(Entries::new());
            };
            let tree = self
                .repo
                .find_tree(id)
                .map_err(self.object_err(format!("tree {id}")))?;
            Ok(tree
                .iter()
                .filter_map(Result::ok)
                .map(|e| (e.filename().to_vec(), (e.mode(), e.object_id())))
                .collect())
        };
        let (a, b) = (entries(old)?, entries(new)?);
        let names: std::collections::BTreeSet<&Vec<u8>> = a.keys().chain(b.keys()).collect();
        for name in names {
            let (x, y) = (a.get(name), b.get(name));
            if x == y {
                continue;
            }
            let path = format!("{prefix}{}", String::from_utf8_lossy(name));
            let tree_of = |e: Option<&(gix::objs::tree::EntryMode, ObjectId)>| {
                e.filter(|(m, _)| m.is_tree()).map(|(_, id)| *id)
            };
            // Depth is bounded by the nesting of the trees the repository holds.
            self.compare(tree_of(x), tree_of(y), format!("{path}/"), gone, came)?;
            let blob_of = |e: Option<&(gix::objs::tree::EntryMode, ObjectId)>| {
                e.filter(|(m, _)| m.is_blob()).map(|(_, id)| *id)
            };
            if let Some(id) = blob_of(x) {
                gone.push((path.clone(), id));
            }
            if let Some(id) = blob_of(y) {
                came.push((path, id));
            }
        }
        Ok(())
    }
}

/// The signature notes of a repository ([`Repo::notes`]), looked up by commit as git does:
/// the note of `abcd…` is the blob `abcd…` of the notes tree, or `cd…` under its directory
/// `ab/` (fan-out), and so on. Nothing is indexed up front: a pass asks for the few commits
/// since the one it applied, whatever the length of the history.
pub struct Notes<'r> {
    repo: &'r Repo,
    tree: Option<ObjectId>,
}

impl Notes<'_> {
    /// The note on `commit` (a full hex id), if any. A note over [`MAX_NOTE_BYTES`] is
    /// [`ReadError::NoteTooLarge`], without reading it: anyone who can push writes notes.
    pub fn note(&self, commit: &str) -> Result<Option<Vec<u8>>, ReadError> {
        let Some(blob) = self.find(commit)? else {
            return Ok(None);
        };
        let r = &self.repo.repo;
        let object_err = self.repo.object_err(format!("note for {commit}"));
        let size = r.find_header(blob).map_err(&object_err)?.size();
        if size > MAX_NOTE_BYTES as u64 {
            return Err(ReadError::NoteTooLarge {
                commit: commit.to_owned(),
                size,
            });
        }
        let mut blob = r.find_blob(blob).map_err(&object_err)?;
        Ok(Some(blob.take_data()))
    }

    /// The note blob of `commit`: at each level the whole remaining id names the blob, or its
    /// next two digits a fan-out directory (the depth is bounded by the id's length).
    fn find(&self, commit: &str) -> Result<Option<ObjectId>, ReadError> {
        let Some(mut tree) = self.tree else {
            return Ok(None);
        };
        if commit.is_empty() || !commit.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(None);
        }
        let r = &self.repo.repo;
        let mut rest = commit;
        loop {
            let t = r
                .find_tree(tree)
                .map_err(self.repo.object_err(format!("notes tree of {NOTES_REF}")))?;
            if let Some(e) = t.find_entry(rest)
                && e.mode().is_blob()
            {
                return Ok(Some(e.object_id()));
            }
            if rest.len() <= 2 {
                return Ok(None);
            }
            match t.find_entry(&rest[..2]) {
                Some(e) if e.mode().is_tree() => {
                    tree = e.object_id();
                    rest = &rest[2..];
                }
                _ => return Ok(None),
            }
        }
    }
}

/// The tree id (hex) of `commit`.
pub fn commit_tree(repo: &Path, commit: &str) -> Result<String, ReadError> {
    Repo::open(repo)?.commit_tree(commit)
}

/// The regular file at exactly `path` of `commit` (see [`Repo::file`]): one lookup per path
/// component, not a walk of the tree.
pub fn read_file(repo: &Path, commit: &str, path: &str) -> Result<Option<Vec<u8>>, ReadError> {
    Repo::open(repo)?.file(commit, path)
}

/// Resolve `rev` (e.g. `HEAD`, `main`, `origin/main`, a full or abbreviated hex id, `v1^{}`)
/// in the repository at `repo` (bare, a `.git` directory, or a work tree) to a commit id (hex).
/// Annotated tags are peeled.
pub fn rev_parse(repo: &Path, rev: &str) -> Result<String, ReadError> {
    let r = open(repo)?;
    Ok(resolve_commit(&r, repo, rev)?.to_string())
}

// ---------------------------------------------------------------------------------------------

/// Replace the URL password `secret` in `text`: always where it appears as `:secret@`, and
/// anywhere if it is long enough not to match unrelated text by accident.
/// `url` as it may be shown: for http(s), the whole userinfo (`https://TOKEN@host/…` carries
/// the token as the user name) becomes `<redacted>`; for other schemes only a password does
/// (`ssh://git@host/…` stays as it is). Anything that is not a URL with `://` is shown as is.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    let (userinfo, host) = (&authority[..at], &authority[at + 1..]);
    let shown = if matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        "<redacted>".to_owned()
    } else {
        match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:<redacted>"),
            None => userinfo.to_owned(),
        }
    };
    format!("{scheme}://{shown}@{host}{}", &rest[authority_end..])
}

fn scrub_secret(text: String, secret: &str) -> String {
    const REDACTED: &str = "<redacted>";
    if secret.is_empty() {
        return text;
    }
    let text = text.replace(&format!(":{secret}@"), &format!(":{REDACTED}@"));
    if secret.len() >= 6 {
        text.replace(secret, REDACTED)
    } else {
        text
    }
}

/// Render a gix error with all its causes, since its `Display` shows only the outermost one.
pub(crate) fn error_chain(err: &gix::Error) -> String {
    let mut parts: Vec<String> = Vec::new();
    for e in err.iter_errors() {
        let s = e.to_string();
        if !s.is_empty() && !parts.iter().any(|p| p.contains(&s)) {
            parts.push(s);
        }
    }
    if parts.is_empty() {
        err.to_string()
    } else {
        parts.join(": ")
    }
}

fn validate_branch(spec: &RepoSpec) -> Result<(), FetchError> {
    let invalid = |reason: &str| FetchError::InvalidBranch {
        url: spec.url.clone(),
        branch: spec.branch.clone(),
        reason: reason.to_owned(),
    };
    let branch = spec.branch.as_str();
    if branch.is_empty() {
        return Err(invalid("it is empty"));
    }
    if branch.starts_with("refs/") {
        return Err(invalid("give the branch name without `refs/heads/`"));
    }
    // Refspec syntax must not leak in through the branch name (`a:b`, `*`, `^`, `+`).
    if branch
        .chars()
        .any(|c| matches!(c, ':' | '*' | '?' | '[' | '\\' | '^' | '~') || c.is_whitespace())
        || branch.starts_with(['+', '-'])
    {
        return Err(invalid(
            "it contains characters git does not allow in branch names",
        ));
    }
    gix::refs::FullName::try_from(format!("refs/heads/{branch}"))
        .map_err(|err| invalid(&err.to_string()))?;
    Ok(())
}

/// Open the mirror at `dest`, creating it as a bare repository if it doesn't exist or is an
/// empty directory.
fn open_or_init_mirror(dest: &Path) -> Result<gix::Repository, FetchError> {
    let mirror_err = |detail: String| FetchError::Mirror {
        dest: dest.to_owned(),
        detail,
    };
    let is_empty_dir = match std::fs::read_dir(dest) {
        Ok(mut entries) => entries.next().is_none(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => true,
        Err(err) => return Err(mirror_err(err.to_string())),
    };
    let repo = if is_empty_dir {
        gix::init_bare(dest)
            .map_err(|err| mirror_err(format!("creating it: {}", error_chain(&err))))?
    } else {
        gix::open(dest).map_err(|err| {
            mirror_err(format!(
                "it exists but is not a git repository: {}",
                error_chain(&err)
            ))
        })?
    };
    if !repo.is_bare() {
        return Err(mirror_err(
            "it is a repository with a work tree, but the mirror must be bare".into(),
        ));
    }
    Ok(repo)
}

/// The object `name` points to, if the ref exists.
fn current_id(repo: &gix::Repository, name: &str) -> Result<Option<ObjectId>, String> {
    match repo.try_find_reference(name) {
        Ok(Some(mut r)) => r
            .peel_to_id()
            .map(|id| Some(id.detach()))
            .map_err(|err| format!("reading {name}: {}", error_chain(&err))),
        Ok(None) => Ok(None),
        Err(err) => Err(format!("reading {name}: {}", error_chain(&err))),
    }
}

/// The remote no longer has signature notes: drop ours so the mirror reflects the remote.
fn remove_stale_notes(repo: &gix::Repository) -> Result<(), String> {
    match repo.try_find_reference(NOTES_REF) {
        Ok(Some(r)) => r.delete().map_err(|err| {
            format!(
                "removing {NOTES_REF}, which the remote no longer has: {}",
                error_chain(&err)
            )
        }),
        Ok(None) => Ok(()),
        Err(err) => Err(format!("reading {NOTES_REF}: {}", error_chain(&err))),
    }
}

/// A connection to the remote's URL, with our time limits applied to HTTP.
type Connection<'remote, 'repo> = gix::remote::Connection<
    'remote,
    'static,
    'repo,
    Box<dyn gix::protocol::transport::client::blocking_io::Transport + Send>,
>;

fn connect<'remote, 'repo>(
    remote: &'remote gix::Remote<'repo>,
    url: &gix::Url,
    options: &FetchOptions,
) -> Result<Connection<'remote, 'repo>, String> {
    if url.scheme == gix::url::Scheme::Git {
        return connect_git_daemon(remote, options);
    }
    if let (gix::url::Scheme::Ssh, Some(identity)) = (&url.scheme, &options.ssh) {
        return connect_ssh(remote, identity);
    }
    let mut connection = remote
        .connect(Direction::Fetch)
        .map_err(|err| error_chain(&err))?;
    if matches!(url.scheme, gix::url::Scheme::Http | gix::url::Scheme::Https) {
        connection = connection.with_transport_options(http_options(remote.repo(), url, options)?);
    }
    Ok(connection)
}

/// A `git://` connection made here rather than by gix: gix writes every pkt-line as several
/// small writes, and on a socket with Nagle's algorithm each request then waits for the ACK of
/// its first segment, which the daemon delays (~40 ms, three times in a fetch that brings
/// something). This one sets `TCP_NODELAY`, tries every address the host resolves to, and
/// gives up connecting after `connect_timeout` (gix: the first address, 5 s).
fn connect_git_daemon<'remote, 'repo>(
    remote: &'remote gix::Remote<'repo>,
    options: &FetchOptions,
) -> Result<Connection<'remote, 'repo>, String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let (url, version) = remote
        .sanitized_url_and_version(Direction::Fetch)
        .map_err(|err| error_chain(&err))?;
    if url.user().is_some() {
        return Err("a git:// URL cannot carry a user name; remove it".into());
    }
    let host = url.host().ok_or("the git:// URL has no host")?;
    let port = url.port.unwrap_or(9418);
    let addresses = (host, port)
        .to_socket_addrs()
        .map_err(|err| format!("cannot resolve {host}: {err}"))?;
    let mut last_err = format!("{host} resolves to no address");
    let mut stream = None;
    for address in addresses {
        match TcpStream::connect_timeout(&address, options.connect_timeout) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(err) => last_err = format!("cannot connect to {address}: {err}"),
        }
    }
    let stream = stream.ok_or(last_err)?;
    stream
        .set_nodelay(true)
        .map_err(|err| format!("cannot set TCP_NODELAY: {err}"))?;
    let write = stream
        .try_clone()
        .map_err(|err| format!("cannot clone the connection: {err}"))?;
    let transport = gix::protocol::transport::client::git::blocking_io::Connection::new(
        stream,
        write,
        version,
        url.path.clone(),
        Some((host.to_owned(), url.port)),
        gix::protocol::transport::client::git::ConnectMode::Daemon,
        false,
    );
    Ok(remote.to_connection_with_transport(Box::new(transport)))
}

/// An ssh connection with [`SshIdentity`]'s command line instead of the repository's
/// `core.sshCommand` (gix's own ssh transport, the program kind fixed to OpenSSH so no probe
/// runs first).
fn connect_ssh<'remote, 'repo>(
    remote: &'remote gix::Remote<'repo>,
    identity: &SshIdentity,
) -> Result<Connection<'remote, 'repo>, String> {
    use gix::protocol::transport::client::blocking_io::ssh;
    if !identity.key.is_file() {
        return Err(format!(
            "ssh_key {} does not exist; make the host's deploy key with `ssh-keygen -t ed25519 -N '' -f {}` and add its .pub to the repository's deploy keys",
            identity.key.display(),
            identity.key.display()
        ));
    }
    if !identity.known_hosts.is_file() {
        return Err(format!(
            "ssh_known_hosts {} does not exist; add the server's host key to it (`ssh-keyscan HOST >> {}`, then compare the fingerprint with the server's)",
            identity.known_hosts.display(),
            identity.known_hosts.display()
        ));
    }
    let (url, version) = remote
        .sanitized_url_and_version(Direction::Fetch)
        .map_err(|err| error_chain(&err))?;
    let options = ssh::connect::Options {
        command: Some(identity.command().into()),
        disallow_shell: false,
        kind: Some(ssh::ProgramKind::Ssh),
    };
    let transport = ssh::connect(url, version, options, false).map_err(|err| err.to_string())?;
    Ok(remote.to_connection_with_transport(Box::new(transport)))
}

/// Best effort: the branches the remote has, for an error message (at most 20 and a count).
/// Only lists refs; nothing is written to `repo`.
fn list_branches(repo: &gix::Repository, url: &gix::Url, options: &FetchOptions) -> Vec<String> {
    const MAX_LISTED: usize = 20;
    let listed = repo
        .remote_at(url.clone())
        .and_then(|remote| {
            remote
                .with_fetch_tags(gix::remote::fetch::Tags::None)
                .with_refspecs(["refs/heads/*:refs/remotes/origin/*"], Direction::Fetch)
        })
        .map_err(|err| error_chain(&err))
        .and_then(|remote| {
            connect(&remote, url, options)?
                .ref_map(gix::progress::Discard, Default::default())
                .map_err(|err| error_chain(&err))
        });
    let ref_map = match listed {
        Ok((ref_map, _handshake)) => ref_map,
        Err(err) => {
            tracing::debug!(%err, "cannot list the remote's branches");
            return Vec::new();
        }
    };
    let mut available: Vec<String> = ref_map
        .remote_refs
        .iter()
        .filter_map(|r| {
            r.unpack()
                .0
                .strip_prefix(b"refs/heads/")
                .map(|b| b.to_str_lossy().into_owned())
        })
        .collect();
    available.sort();
    if available.len() > MAX_LISTED {
        let more = available.len() - MAX_LISTED;
        available.truncate(MAX_LISTED);
        available.push(format!("and {more} more"));
    }
    available
}

/// HTTP transport options from git configuration, with our time limits applied.
fn http_options(
    repo: &gix::Repository,
    url: &gix::Url,
    options: &FetchOptions,
) -> Result<Box<dyn std::any::Any>, String> {
    use gix::protocol::transport::client::blocking_io::http;
    let url_str = url.to_bstring();
    let configured = repo
        .transport_options(url_str.as_bstr(), None)
        .map_err(|err| format!("reading HTTP configuration: {}", error_chain(&err)))?;
    let mut http_options = configured
        .and_then(|o| o.downcast::<http::Options>().ok())
        .map(|o| *o)
        .unwrap_or_default();
    if http_options.connect_timeout.is_none() {
        http_options.connect_timeout = Some(options.connect_timeout);
    }
    let connect_timeout = http_options
        .connect_timeout
        .unwrap_or(options.connect_timeout);
    // Longer than the overall limit, which `fetch_with` enforces itself: reqwest's default of
    // 30 s per request would otherwise cut long transfers short.
    let timeout = options.timeout + grace(options.timeout);
    let backend = http::reqwest::Options {
        configure_client: Some(Box::new(move |builder| {
            Ok(builder.connect_timeout(connect_timeout).timeout(timeout))
        })),
        configure_request: None,
    };
    http_options.backend = Some(Arc::new(std::sync::Mutex::new(backend)));
    Ok(Box::new(http_options))
}

fn open(repo: &Path) -> Result<gix::Repository, ReadError> {
    gix::open(repo).map_err(|err| ReadError::Open {
        repo: repo.to_owned(),
        detail: error_chain(&err),
    })
}

/// Resolve `rev` to a commit id, peeling tags.
fn resolve_commit(r: &gix::Repository, repo: &Path, rev: &str) -> Result<ObjectId, ReadError> {
    let unknown = |err: gix::Error| ReadError::UnknownRevision {
        repo: repo.to_owned(),
        rev: rev.to_owned(),
        detail: error_chain(&err),
    };
    // A full id (what a pass asks about, thousands of times when catching up) names its object
    // as `rev_parse` would take it, without a prefix search that checks the pack directory
    // on disk each time.
    let id = match ObjectId::from_hex(rev.as_bytes()) {
        Ok(id) if rev.len() == 40 => gix::prelude::ObjectIdExt::attach(id, r),
        _ => r
            .rev_parse_single(rev.as_bytes().as_bstr())
            .map_err(unknown)?,
    };
    let object = id.object().map_err(unknown)?;
    let kind = object.kind;
    match object.peel_tags_to_end() {
        Ok(peeled) if peeled.kind == gix::object::Kind::Commit => Ok(peeled.id),
        Ok(peeled) => Err(ReadError::NotACommit {
            repo: repo.to_owned(),
            rev: rev.to_owned(),
            kind: peeled.kind.to_string(),
        }),
        Err(err) => Err(ReadError::Object {
            repo: repo.to_owned(),
            what: format!("{kind} {rev}"),
            detail: error_chain(&err),
        }),
    }
}

/// The repository that holds `dir` (a work tree, a directory inside one, or a bare
/// repository), found as git finds it, walking up: its git directory and its work tree
/// (`None` for a bare repository). `Err` says what gix said.
pub fn discover(dir: &Path) -> Result<(PathBuf, Option<PathBuf>), String> {
    let repo = gix::discover(dir).map_err(|e| e.to_string())?;
    Ok((
        repo.git_dir().to_owned(),
        repo.workdir().map(Path::to_path_buf),
    ))
}

/// Why [`merge_base`] failed.
#[derive(Debug, thiserror::Error)]
pub enum MergeBaseError {
    /// The repository could not be opened.
    #[error("opening {}", .0.display())]
    Open(PathBuf, #[source] Box<gix::Error>),
    /// A commit id is not an id.
    #[error(transparent)]
    Id(#[from] gix::Error),
    /// gix could not compute it.
    #[error("finding the merge base")]
    Compute(#[source] Box<gix::Error>),
}

/// The best common ancestor of commits `a` and `b` (full hex ids) in the repository at
/// `repo`; `None` when they have none.
pub fn merge_base(repo: &Path, a: &str, b: &str) -> Result<Option<String>, MergeBaseError> {
    let r = gix::open(repo).map_err(|e| MergeBaseError::Open(repo.to_owned(), Box::new(e)))?;
    let id = |hex: &str| ObjectId::from_hex(hex.as_bytes());
    let base = r
        .merge_base(id(a)?, id(b)?)
        .map_err(|e| MergeBaseError::Compute(Box::new(e)))?;
    Ok(base.map(|b| b.to_string()))
}

/// Why [`write_note`] failed: which step, and what gix said.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {detail}")]
pub struct NoteWriteError {
    /// The step: opening the repository or the notes, parsing the id, writing the note.
    pub context: String,
    /// gix's reason.
    pub detail: String,
}

/// Replaces the note on `commit` (full hex id) under `notes_ref` with `data`, as one notes
/// commit (gix's notes editing; the committer comes from the git config).
pub fn write_note(
    repo: &Path,
    notes_ref: &str,
    commit: &str,
    data: &[u8],
) -> Result<(), NoteWriteError> {
    let other = |context: &str, e: &dyn std::fmt::Display| NoteWriteError {
        context: context.into(),
        detail: e.to_string(),
    };
    let r = gix::open(repo).map_err(|e| other(&format!("opening {}", repo.display()), &e))?;
    let id =
        ObjectId::from_hex(commit.as_bytes()).map_err(|e| other("parsing the commit id", &e))?;
    let mut notes = r
        .notes()
        .and_then(|n| n.with_refs([notes_ref]))
        .map_err(|e| other("opening the notes", &e))?
        .with_commit_message(format!("pacfleet: sign {commit}"));
    notes.replace(notes_ref, id, data).map_err(|e| {
        other(
            &format!("writing the note for {commit} (is user.name/user.email set in git config? the notes commit needs a committer)"),
            &e,
        )
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::{SshIdentity, redact_url};

    #[test]
    fn ssh_command_quotes_its_paths_for_the_shell() {
        let id = SshIdentity {
            key: "/etc/pacfleet/ssh/id_ed25519".into(),
            known_hosts: "/etc/pacfleet/it's here/known_hosts".into(),
        };
        assert_eq!(
            id.command(),
            "ssh -i '/etc/pacfleet/ssh/id_ed25519' -o IdentitiesOnly=yes -o IdentityAgent=none \
             -o UserKnownHostsFile='/etc/pacfleet/it'\\''s here/known_hosts' \
             -o GlobalKnownHostsFile=/dev/null -o StrictHostKeyChecking=yes -o BatchMode=yes"
        );
    }

    #[test]
    fn userinfo_is_redacted_where_it_can_be_a_secret() {
        assert_eq!(
            redact_url("https://ghp_TOKEN@git.example.com/ops/fleet.git"),
            "https://<redacted>@git.example.com/ops/fleet.git"
        );
        assert_eq!(
            redact_url("http://user:pw@127.0.0.1:8080/f.git"),
            "http://<redacted>@127.0.0.1:8080/f.git"
        );
        assert_eq!(
            redact_url("ssh://git:pw@host/f.git"),
            "ssh://git:<redacted>@host/f.git"
        );
        for same in [
            "ssh://git@host/f.git",
            "https://git.example.com/f.git",
            "git@host:f.git",
            "/srv/fleet",
            "git://h/a@b",
        ] {
            assert_eq!(redact_url(same), same);
        }
    }
}
