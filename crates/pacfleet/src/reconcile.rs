//! One pass on one host: fetch the fleet repository, (verify it — `trust`, next), read the
//! manifests of the target commit, resolve this host, plan against the real package database,
//! apply when allowed, and record what happened. `fleetctl plan`, `fleetctl reconcile`, the
//! agent loop and the demo all run passes through here.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::apply::{self, ApplyError, Notices};
use crate::config::AgentConfig;
use crate::manifest::Diagnostics;
use crate::plan::{self, Action, Changeset};
use crate::resolve::{self, ResolveError, Resolved};
use crate::source::{self, FetchError, ReadError, RepoSpec};
use crate::state::{
    AppliedState, ConvergedInputs, FailureReason, HistoryEntry, HistoryOutcome, PassOutcome,
    PassStatus, ResolvedAt, StateDir, StateError, TransactionMarker,
};
use crate::system::{Mode, Policy, System, SystemError};
use crate::trust::{self, Anchor, KeyError, Refusal};
use crate::window::{self, Gate};

mod fetch;
mod publish;
mod waves;

/// Set when a stop signal reaches `fleetctl reconcile`: a pass that has not begun its
/// transaction stops before it; a transaction that has begun always finishes.
pub static STOP: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// What kind of pass to run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassOptions {
    /// Apply the changes (`reconcile`); false: only show them (`plan`).
    pub apply: bool,
    /// With `apply`: plan under the same rules but change nothing.
    pub dry_run: bool,
    /// With `apply`: apply even outside the pool's window (an operator at the console).
    pub ignore_window: bool,
    /// With `apply`: plan against the package databases even when nothing the plan reads
    /// changed since the last full plan found nothing to do.
    pub full_plan: bool,
    /// With `apply`: provision an empty root (no package database yet: an image or chroot
    /// being built) by creating its database; without it such a root is refused.
    pub bootstrap: bool,
}

/// Where the pool's window stands at the time of the pass.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum WindowState {
    /// The pool has no window (or the pass did not get as far as the pool).
    #[default]
    None,
    /// Inside the window, until this time.
    Open {
        /// When it closes.
        until: String,
    },
    /// Outside the window; it next opens then (`None`: never again).
    Closed {
        /// The next start.
        next: Option<String>,
    },
}

/// Why changes were not applied although there are some.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "kebab-case")]
pub enum Hold {
    /// The pool is paused.
    Paused,
    /// Outside the pool's window.
    Window {
        /// When it opens next (RFC 3339, local time), if ever.
        next: Option<String>,
    },
    /// `--dry-run`.
    DryRun,
    /// `plan`: nothing is ever applied.
    PlanOnly,
    /// The host's rollout wave waits for an earlier wave, or for its soak time.
    Wave {
        /// The host's wave (its name).
        wave: String,
        /// What it waits for.
        waits: String,
    },
    /// The rollout halted: more hosts failed the change than the pool's `failure_budget`.
    Halted {
        /// The hosts that reported failure.
        failed: Vec<String>,
        /// The budget.
        budget: u32,
    },
    /// This host applied the change before and its health check failed: not again.
    FailedBefore {
        /// The change (its rollout id).
        change: String,
        /// What the health check said then.
        failure: String,
    },
}

impl std::fmt::Display for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Hold::Paused => f.write_str("paused (the pool has `paused: true`)"),
            Hold::Window { next: Some(n) } => {
                write!(f, "pending until {n} (outside the pool's window)")
            }
            Hold::Window { next: None } => {
                f.write_str("pending: the pool's window never opens again")
            }
            Hold::DryRun => f.write_str("dry run: nothing applied"),
            Hold::PlanOnly => f.write_str("plan only"),
            Hold::Wave { wave, waits } => write!(f, "pending (wave {wave} waits for {waits})"),
            Hold::Halted { failed, budget } => write!(
                f,
                "rollout halted: {} host(s) failed this change ({}), more than the pool's failure_budget of {budget}; a new change (a fix, or `fleetctl rollback`) restarts it",
                failed.len(),
                failed.join(", ")
            ),
            Hold::FailedBefore { change, failure } => write!(
                f,
                "not retried: this host applied change {} before and its health check failed ({failure}); a new change (a fix, or `fleetctl rollback`) is needed",
                short(change)
            ),
        }
    }
}

/// How a pass ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Verdict {
    /// No pool selects this host: nothing is done.
    NotInFleet,
    /// The host already matches its desired state.
    Converged,
    /// The changeset was applied.
    Applied,
    /// The changeset was applied; a scriptlet or hook failed on the way (`notices.warnings`).
    AppliedWithWarnings,
    /// Nothing to change, but the host's IgnorePkg/IgnoreGroup hold packages back
    /// (`changeset.held`): never converged.
    Held,
    /// Changes are due but were held back.
    Pending {
        /// Why.
        hold: Hold,
    },
    /// The changeset was applied and the pool's health check failed (`health` says how);
    /// with `rollback: true` the host went back to the packages it had (`rolled_back`).
    Unhealthy {
        /// Whether the host is back on the packages it had before the pass.
        rolled_back: bool,
    },
}

impl Verdict {
    /// The outcome `status.json` records for this verdict (a refused newer commit aside:
    /// [`PassReport::outcome`]).
    pub fn outcome(&self) -> PassOutcome {
        match self {
            Verdict::NotInFleet => PassOutcome::NotInFleet,
            Verdict::Converged => PassOutcome::Converged,
            Verdict::Applied => PassOutcome::Applied,
            Verdict::AppliedWithWarnings => PassOutcome::AppliedWithWarnings,
            Verdict::Held => PassOutcome::Held,
            Verdict::Pending { .. } => PassOutcome::Pending,
            Verdict::Unhealthy { .. } => PassOutcome::Failed,
        }
    }

    /// Whether the pass left the host as the fleet wants it: [`PassOutcome::settled`].
    pub fn settled(&self) -> bool {
        self.outcome().settled()
    }
}

/// fleetctl's exit codes (docs/contract.md §3). A pass's
/// report ([`PassReport::exit`]) and error ([`PassError::exit`]) become one here only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Done (`reconcile`: converged, applied, or held back by a window or pause, which the
    /// output says; `plan`: converged).
    Success = 0,
    /// `plan`: changes are due.
    Changes = 1,
    /// An error: nothing was changed, or the error says what was.
    Error = 2,
    /// The trust rules refused the fleet state (or a newer commit of it).
    Refused = 3,
}

impl Exit {
    /// The process's exit code.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The exit status a process's exit code stands for, if it is one of fleetctl's.
    pub fn from_code(code: i32) -> Option<Exit> {
        match code {
            0 => Some(Exit::Success),
            1 => Some(Exit::Changes),
            2 => Some(Exit::Error),
            3 => Some(Exit::Refused),
            _ => None,
        }
    }
}

/// The whole story of one pass: what `plan --json` and `reconcile --json` print, and what the
/// agent reads back from its child passes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassReport {
    /// This host's name.
    pub host: String,
    /// The fleet's name (fleet.yaml `name:`), once the pass read the manifests.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fleet: Option<String>,
    /// The fleet commit the pass aimed at.
    pub commit: String,
    /// Whether the fetch brought a new commit.
    pub fetched_new: bool,
    /// Names of the keys that signed the target.
    pub signers: Vec<String>,
    /// The target's statement sequence number.
    pub sequence: u64,
    /// Unsigned commits newer than the target, waiting for a signature (oldest first).
    pub waiting: Vec<String>,
    /// A newer commit that carried a statement but was refused, and why (exit 3).
    pub refused: Option<String>,
    /// When the target's signature statement expires.
    pub signed_until: chrono::DateTime<chrono::Utc>,
    /// Changes needed although the target is the state this host last converged on: someone
    /// changed the host outside pacfleet (`action name`, e.g. `install tool`).
    pub drift: Vec<String>,
    /// The host's pool, if any.
    pub pool: Option<String>,
    /// The pool's generation, if pinned.
    pub generation: Option<u32>,
    /// Whether the window allows applying now (`None`: no window).
    pub window_open_until: Option<String>,
    /// The pool's window now, for `plan` as much as for `reconcile` (RFC 3339, local time).
    pub window: WindowState,
    /// What the pass decided.
    pub verdict: Verdict,
    /// The changes (applied, or that would be applied).
    pub changeset: Changeset,
    /// Events of the commit (pacnew, pacsave, scriptlets, policy answers).
    pub notices: Notices,
    /// The pool's current change, its rollout id: the commit that made the pool's desired
    /// state what it is at the target (with `rollout:` or `health:` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// This host's wave in the pool's rollout (with `rollout:` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wave: Option<WaveInfo>,
    /// The health check after applying (with `health:`, when the pass applied changes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::report::Health>,
    /// What the rollback after a failed health check did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back: Option<Changeset>,
    /// The running kernel's modules are gone (a kernel upgrade): the host needs a reboot.
    #[serde(default)]
    pub needs_reboot: bool,
    /// Package files downloaded in this pass, by source (peers, upstream), or ahead of the
    /// window (`prefetch: true`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloads: Option<crate::peers::Downloads>,
    /// Wall time of the pass.
    #[serde(serialize_with = "ser_millis", deserialize_with = "de_millis")]
    pub duration: Duration,
}

/// A host's place in its pool's rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaveInfo {
    /// The wave's index, from 0.
    pub index: usize,
    /// Its name.
    pub name: String,
    /// How many waves the rollout has.
    pub of: usize,
}

impl PassReport {
    /// The outcome `status.json` records: the verdict's, or refused when a newer commit was.
    pub fn outcome(&self) -> PassOutcome {
        if self.refused.is_some() {
            PassOutcome::Refused
        } else {
            self.verdict.outcome()
        }
    }

    /// The exit status of the command that ran this pass: `reconcile` (`opts.apply`) or
    /// `plan`, which also tells whether changes are due.
    pub fn exit(&self, opts: PassOptions) -> Exit {
        if self.outcome() == PassOutcome::Refused {
            Exit::Refused
        } else if matches!(self.verdict, Verdict::Unhealthy { .. }) {
            Exit::Error
        } else if opts.apply || self.changeset.settled() {
            Exit::Success
        } else {
            Exit::Changes
        }
    }
}

fn ser_millis<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u128(d.as_millis())
}

fn de_millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    u64::deserialize(d).map(Duration::from_millis)
}

/// A pass failed.
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The state directory could not be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// Fetching the fleet repository failed.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// Reading the fetched commit failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The target commit's manifests are invalid.
    #[error("the fleet at commit {commit} is invalid; nothing was changed.\n{diags}")]
    Invalid {
        /// The commit.
        commit: String,
        /// Every problem.
        diags: Diagnostics,
    },
    /// The host matches two pools.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The pool's window could not be evaluated.
    #[error(transparent)]
    Window(#[from] window::WindowError),
    /// libalpm planning failed.
    #[error(transparent)]
    System(#[from] SystemError),
    /// Applying failed.
    #[error(transparent)]
    Apply(#[from] ApplyError),
    /// The fleet state is not trusted: nothing was applied.
    #[error("refused: {0}")]
    Refused(#[from] Refusal),
    /// A trusted key could not be read.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// No trusted keys are configured.
    #[error(
        "{config} lists no `trusted_keys`: a host applies only states signed by keys it trusts; add the fleet's public key(s), e.g. `trusted_keys: [/etc/pacfleet/keys/ops.pub]`"
    )]
    NoTrustedKeys {
        /// The agent.yaml.
        config: String,
    },
    /// A stop signal came before the transaction began.
    #[error("stopped by a signal before the transaction began; nothing was changed")]
    Stopped,
    /// `transaction.json` names a process that is still running.
    #[error(
        "{marker} records a package transaction by fleetctl pid {pid}, which is still running; wait for it to finish (pacfleet recovers only transactions whose process is provably gone)"
    )]
    TransactionRunning {
        /// The marker file.
        marker: String,
        /// The live process.
        pid: u32,
    },
    /// The local database has entries a transaction left half-written, and no marker of ours
    /// says which transaction: pacfleet will not guess.
    #[error(
        "the package database {dbpath} has incomplete entries ({entries}): a package transaction was interrupted and pacfleet has no record of starting it (no transaction.json), so it will not repair it. Check with `pacman -Dk`, reinstall those packages by hand (pacman -S --overwrite for their files) or remove the entries, then retry"
    )]
    IncompleteDatabase {
        /// The local database directory.
        dbpath: String,
        /// The incomplete entries (`name-version`).
        entries: String,
    },
    /// The keyring transaction went in; the rest failed.
    #[error(
        "the keyring was upgraded first, in a transaction of its own ({keyring}; recorded in history); then the rest failed: {source}"
    )]
    AfterKeyring {
        /// What the keyring transaction did.
        keyring: String,
        /// Why the rest failed.
        #[source]
        source: Box<PassError>,
    },
    /// The anchor file could not be read or written.
    #[error(transparent)]
    Anchor(#[from] AnchorError),
}

/// The anchor file ([`anchor_path`]) could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    /// Reading it failed.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The anchor file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It does not parse.
    #[error(
        "cannot parse {path}: {source}; it records the last applied fleet state: restore it or delete it at the console to re-enroll this host"
    )]
    Parse {
        /// The anchor file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The anchor does not encode.
    #[error("cannot encode {path}: {source}")]
    Encode {
        /// The anchor file.
        path: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

impl PassError {
    /// The exit status docs/contract.md §3 gives this failure: refused for trust refusals, an
    /// error otherwise.
    pub fn exit(&self) -> Exit {
        match self.outcome() {
            PassOutcome::Refused => Exit::Refused,
            _ => Exit::Error,
        }
    }

    /// Why the pass failed, for status and metrics (`fetch`, `invalid`, `refused`, …).
    pub fn reason(&self) -> FailureReason {
        match self {
            PassError::State(_) | PassError::Anchor(_) => FailureReason::State,
            PassError::Fetch(FetchError::Stopped { .. }) => FailureReason::Stopped,
            PassError::Fetch(_) => FailureReason::Fetch,
            PassError::Read(_) => FailureReason::Read,
            PassError::Invalid { .. } => FailureReason::Invalid,
            PassError::Resolve(_) | PassError::Window(_) => FailureReason::Resolve,
            PassError::System(SystemError::Locked { .. })
            | PassError::TransactionRunning { .. } => FailureReason::Locked,
            PassError::IncompleteDatabase { .. } => FailureReason::System,
            PassError::System(_) => FailureReason::System,
            PassError::Apply(_) => FailureReason::Apply,
            PassError::Refused(_) => FailureReason::Refused,
            PassError::Key(_) | PassError::NoTrustedKeys { .. } => FailureReason::Config,
            PassError::Stopped => FailureReason::Stopped,
            PassError::AfterKeyring { source, .. } => source.reason(),
        }
    }

    fn outcome(&self) -> PassOutcome {
        match self {
            PassError::Refused(_) => PassOutcome::Refused,
            PassError::AfterKeyring { source, .. } => source.outcome(),
            _ => PassOutcome::Failed,
        }
    }
}

/// Runs one pass. `plan` passes take no lock and write nothing but the fetched repository;
/// `reconcile` passes take pacfleet's pass lock and pacman's lock, and record status and history.
pub fn run(cfg: &AgentConfig, opts: PassOptions) -> Result<PassReport, PassError> {
    let start = Instant::now();
    // A pass writes root's state: the directory must be root's alone (StateError::Insecure).
    let state = StateDir::open_private(&cfg.state_dir)?;
    // One pass per state dir.
    let _pass_lock = if opts.apply {
        Some(state.lock_pass()?)
    } else {
        None
    };
    let mut target_commit = None;
    // Read before the pass: a damaged status.json only loses this, and is replaced.
    let last_success = state
        .load_status()
        .ok()
        .flatten()
        .and_then(|s| s.last_success);
    let result = (|| {
        // One pass per root too (two configs can share a root); a root without a package
        // database is provisioned only when asked for.
        let _root_lock = if opts.apply {
            prepare_root(cfg, opts.bootstrap)?;
            Some(crate::state::lock_file(cfg.dbpath.join("pacfleet.lock"))?)
        } else {
            None
        };
        pass(cfg, opts, &state, start, &mut target_commit)
    })();
    if opts.apply {
        let mut status = pass_status(
            &result,
            target_commit.clone(),
            start.elapsed(),
            last_success,
        );
        if !opts.dry_run && cfg.status_repo.is_some() {
            let mut record = state.load_rollout();
            let loaded = record.clone();
            let applied = state.load_applied().ok().flatten();
            if let Some(report) = publish::build(
                cfg,
                &result,
                applied.as_ref(),
                &record,
                status.message.as_deref(),
            ) {
                status.report = Some(publish::publish(cfg, report, &mut record));
                if record != loaded
                    && let Err(e) = state.save_rollout(&record)
                {
                    tracing::error!("cannot record the report's publication: {e}");
                }
            }
        }
        if let Err(e) = state.save_status(&status) {
            tracing::error!("cannot record the pass status: {e}");
        }
        if let Err(e) = crate::metrics::record_pass(&state, &status, cfg.textfile.as_deref()) {
            tracing::error!("cannot record metrics: {e}");
        }
        tracing::debug!(
            "pass phase done: status and metrics at {:?}",
            start.elapsed()
        );
        let refusal = match &result {
            Err(e @ PassError::Refused(_)) => Some(e.to_string()),
            Ok(r) => r.refused.clone(),
            Err(_) => None,
        };
        if let Some(message) = refusal {
            let entry = HistoryEntry {
                at: chrono::Utc::now(),
                commit: target_commit.clone().unwrap_or_default(),
                signer: None,
                pool: result
                    .as_ref()
                    .ok()
                    .and_then(|r| r.pool.clone())
                    .unwrap_or_default(),
                generation: result.as_ref().ok().and_then(|r| r.generation),
                changes: Vec::new(),
                outcome: HistoryOutcome::Refused,
                error: Some(message),
                duration_ms: u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX),
                notices: Notices::default(),
                held: Vec::new(),
                downloads: None,
            };
            if let Err(e) = state.append_history(&entry) {
                tracing::error!("cannot record the refusal in history: {e}");
            }
        }
    }
    result
}

/// A root with no package database (no `<dbpath>/local`) is refused, unless `bootstrap` asks
/// to provision it: then its database is created empty (as pacstrap's first pacman does), and
/// the pass installs the keyring first, then the pool's packages.
fn prepare_root(cfg: &AgentConfig, bootstrap: bool) -> Result<(), PassError> {
    let local = cfg.dbpath.join("local");
    if local.is_dir() {
        return Ok(());
    }
    if !bootstrap {
        return Err(SystemError::NoDatabase {
            dbpath: cfg.dbpath.display().to_string(),
            root: cfg.root.display().to_string(),
        }
        .into());
    }
    tracing::info!(
        "bootstrapping {}: creating an empty package database at {}",
        cfg.root.display(),
        cfg.dbpath.display()
    );
    // pacman-conf refuses a DBPath, CacheDir, HookDir or GPGDir that does not exist: read the
    // directories from pacman.conf itself, check the keyring before anything is created, then
    // create the rest, then read the configuration as a pass does.
    let dirs = crate::system::conf_dirs(&cfg.pacman_conf, &cfg.root)?;
    let has_keyring = ["pubring.gpg", "pubring.kbx"]
        .iter()
        .any(|f| dirs.gpg.join(f).is_file());
    let checks_packages = crate::system::merge_sig_level(alpm::SigLevel::NONE, &dirs.sig_level)
        .contains(alpm::SigLevel::PACKAGE);
    if checks_packages && !has_keyring {
        return Err(SystemError::NoKeyring {
            gpgdir: dirs.gpg.display().to_string(),
        }
        .into());
    }
    std::fs::create_dir_all(&local).map_err(|e| io_error("cannot create", &local, e))?;
    // The local database schema libalpm 16 writes; it accepts an empty database with it.
    crate::state::write_atomic(&local.join("ALPM_DB_VERSION"), b"9\n")?;
    // What pacman.conf names and pacstrap would create: the cache dirs and hook dirs.
    for dir in dirs.cache.iter().chain(&dirs.hook) {
        std::fs::create_dir_all(dir).map_err(|e| io_error("cannot create", dir, e))?;
    }
    Ok(())
}

/// What `status.json` records of a pass.
fn pass_status(
    result: &Result<PassReport, PassError>,
    target_commit: Option<String>,
    took: Duration,
    last_success: Option<chrono::DateTime<chrono::Utc>>,
) -> PassStatus {
    let mut status = PassStatus {
        at: chrono::Utc::now(),
        outcome: PassOutcome::Failed,
        message: None,
        pending_changes: 0,
        target_commit,
        signed_until: None,
        next_window: None,
        drift: Vec::new(),
        waiting_for_signature: 0,
        duration_ms: u64::try_from(took.as_millis()).unwrap_or(u64::MAX),
        failure: None,
        last_success,
        held: Vec::new(),
        warnings: Vec::new(),
        config_files: Vec::new(),
        rollout: None,
        needs_reboot: false,
        health_ok: None,
        report: None,
        downloads: None,
    };
    match result {
        Err(e) => {
            status.outcome = e.outcome();
            status.message = Some(e.to_string());
            status.failure = Some(e.reason());
        }
        Ok(r) => {
            status.target_commit = Some(r.commit.clone());
            status.signed_until = Some(r.signed_until);
            status.downloads = r.downloads.clone();
            status.waiting_for_signature = r.waiting.len();
            status.outcome = r.verdict.outcome();
            status.held = r.changeset.held.iter().map(|h| h.to_string()).collect();
            status.warnings = r.notices.warnings.clone();
            status.config_files = r
                .notices
                .pacnew
                .iter()
                .chain(&r.notices.pacsave)
                .cloned()
                .collect();
            status.message = match &r.verdict {
                Verdict::NotInFleet => Some(format!(
                    "host {} is in no pool of the fleet: pacfleet manages nothing on it; check `hostname:` in agent.yaml and the pools' `hosts:` and `labels:`",
                    r.host
                )),
                Verdict::Pending { hold } => Some(hold.to_string()),
                Verdict::Held => Some(format!(
                    "{} package(s) held back by this host's IgnorePkg/IgnoreGroup",
                    r.changeset.held.len()
                )),
                Verdict::AppliedWithWarnings => Some(r.notices.warnings.join("; ")),
                Verdict::Unhealthy { rolled_back } => Some(format!(
                    "the health check failed after applying: {}{}",
                    r.health
                        .as_ref()
                        .and_then(|h| h.failure.as_deref())
                        .unwrap_or("no detail"),
                    if *rolled_back {
                        "; rolled back to the packages this host had before"
                    } else {
                        ""
                    }
                )),
                _ => None,
            };
            if let Verdict::Unhealthy { .. } = r.verdict {
                status.failure = Some(FailureReason::Health);
            }
            status.needs_reboot = r.needs_reboot;
            // A change this host failed keeps saying so on the passes that do not retry it.
            status.health_ok = r.health.as_ref().map(|h| h.passed).or(match &r.verdict {
                Verdict::Pending {
                    hold: Hold::FailedBefore { .. },
                } => Some(false),
                _ => None,
            });
            status.rollout = match (&r.wave, &r.pool) {
                (Some(w), Some(pool)) => Some(crate::state::RolloutStatus {
                    pool: pool.clone(),
                    wave: w.name.clone(),
                    index: w.index,
                    of: w.of,
                    change: r.change.clone(),
                    waiting: matches!(
                        r.verdict,
                        Verdict::Pending {
                            hold: Hold::Wave { .. }
                        }
                    ),
                    halted: matches!(
                        r.verdict,
                        Verdict::Pending {
                            hold: Hold::Halted { .. }
                        }
                    ),
                }),
                _ => None,
            };
            if let Verdict::Pending {
                hold: Hold::Window { next },
            } = &r.verdict
            {
                status.next_window = next.clone();
            }
            if let Verdict::Pending { .. } = r.verdict {
                status.pending_changes = r.changeset.changes.len();
                status.drift = r.drift.clone();
            }
            if let Some(refused) = &r.refused {
                status.outcome = PassOutcome::Refused;
                status.message = Some(refused.clone());
                status.failure = Some(FailureReason::Refused);
            }
        }
    }
    if status.outcome.succeeded() {
        status.last_success = Some(status.at);
    } else if let (Some(t), Some(m)) = (status.last_success, status.message.as_mut()) {
        m.push_str(&format!(
            "; last successful pass at {}",
            t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)
        ));
    }
    status
}

/// The verified target of a pass.
struct Trusted {
    expires: chrono::DateTime<chrono::Utc>,
    commit: String,
    tree: String,
    signers: Vec<String>,
    anchor: Anchor,
    waiting: Vec<String>,
    refused: Option<Refusal>,
}

fn read_anchor(cfg: &AgentConfig) -> Result<Option<Anchor>, PassError> {
    let path = cfg.anchor_path();
    let shown = path.display().to_string();
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|source| {
            AnchorError::Parse {
                path: shown,
                source,
            }
            .into()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(AnchorError::Read {
            path: shown,
            source,
        }
        .into()),
    }
}

fn write_anchor(cfg: &AgentConfig, anchor: &Anchor) -> Result<(), PassError> {
    let path = cfg.anchor_path();
    let json = serde_json::to_vec_pretty(anchor).map_err(|source| AnchorError::Encode {
        path: path.display().to_string(),
        source,
    })?;
    crate::state::write_atomic(&path, &json)?;
    Ok(())
}

/// What [`check_trust`] found: the commit a pass of `cfg` would apply and who signed it.
#[derive(Debug, Clone)]
pub struct TrustCheck {
    /// The branch tip fetched.
    pub tip: String,
    /// The newest acceptable commit (the pass's target).
    pub commit: String,
    /// The fleet its statement names.
    pub fleet: String,
    /// The names of the trusted keys that signed it.
    pub signers: Vec<String>,
    /// When its statement expires.
    pub expires: chrono::DateTime<chrono::Utc>,
}

/// How a host fetches its fleet repository: agent.yaml's pack limit and ssh identity.
fn fetch_options(cfg: &AgentConfig) -> source::FetchOptions {
    source::FetchOptions {
        max_pack_bytes: cfg.max_pack_bytes,
        ssh: cfg.ssh.clone(),
        ..source::FetchOptions::default()
    }
}

/// The first two steps of a pass, alone: fetch `cfg.repo` into the state directory's mirror
/// (opened as a pass opens it) and choose the target under the same trust rules. Nothing
/// else is read or written (no lock, no status, no history). For `fleetctl enroll`, which
/// checks a new host's configuration before writing it.
pub fn check_trust(cfg: &AgentConfig) -> Result<TrustCheck, PassError> {
    let state = StateDir::open_private(&cfg.state_dir)?;
    let spec = RepoSpec {
        url: cfg.repo.clone(),
        branch: cfg.branch.clone(),
    };
    let repo = cfg.mirror_dir();
    let fetched = source::fetch_with(&spec, &repo, &fetch_options(cfg))?;
    let trusted = verify(cfg, &state, &repo, &fetched.commit)?;
    Ok(TrustCheck {
        tip: fetched.commit,
        commit: trusted.commit,
        fleet: trusted.anchor.fleet,
        signers: trusted.signers,
        expires: trusted.expires,
    })
}

/// Chooses the target commit under the trust rules.
fn verify(
    cfg: &AgentConfig,
    state: &StateDir,
    repo: &std::path::Path,
    tip: &str,
) -> Result<Trusted, PassError> {
    if cfg.trusted_keys.is_empty() {
        return Err(PassError::NoTrustedKeys {
            config: cfg.source.display().to_string(),
        });
    }
    let root_keys = cfg
        .trusted_keys
        .iter()
        .map(|p| trust::load_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let applied = state.load_applied()?.map(|a| a.anchor());
    let remembered = read_anchor(cfg)?;
    let anchor_file = cfg.anchor_path().display().to_string();
    match (&applied, &remembered) {
        (None, Some(r)) => {
            return Err(Refusal::StateLost {
                detail: format!(
                    "{} has no record of an applied state, but this host applied fleet `{}` sequence {} (commit {}) before",
                    state.applied_path().display(),
                    r.fleet,
                    r.sequence,
                    short(&r.commit)
                ),
                anchor: anchor_file,
            }
            .into());
        }
        (Some(a), Some(r))
            if a.sequence < r.sequence || (a.sequence == r.sequence && a.commit != r.commit) =>
        {
            return Err(Refusal::StateLost {
                detail: format!(
                    "{} records sequence {} (commit {}), older than the sequence {} (commit {}) this host applied: the state directory was restored from an old copy",
                    state.applied_path().display(),
                    a.sequence,
                    short(&a.commit),
                    r.sequence,
                    short(&r.commit)
                ),
                anchor: anchor_file,
            }
            .into());
        }
        _ => {}
    }
    let now = chrono::Utc::now();
    if let (Some(want), Some(a)) = (&cfg.fleet, &applied)
        && &a.fleet != want
    {
        return Err(Refusal::WrongFleet {
            config: cfg.source.display().to_string(),
            configured: want.clone(),
            applied: a.fleet.clone(),
        }
        .into());
    }
    let selection = trust::select(
        repo,
        tip,
        applied.as_ref(),
        cfg.fleet.as_deref(),
        &root_keys,
        cfg.threshold,
        now,
    )
    .map_err(|e| match e {
        trust::SelectError::Read(e) => PassError::Read(e),
        trust::SelectError::Refused(r) => PassError::Refused(r),
    })?;
    if let Some(t) = selection.target {
        return Ok(Trusted {
            expires: t.verified.statement.expires,
            commit: t.commit,
            tree: t.tree,
            signers: t.verified.signers,
            anchor: t.anchor,
            waiting: selection.waiting,
            refused: selection.refused,
        });
    }
    // Nothing newer is acceptable: stay on what was applied, if its signature still holds.
    let Some(anchor) = applied else {
        return Err(selection
            .refused
            .unwrap_or(Refusal::Unsigned {
                commit: tip.to_owned(),
            })
            .into());
    };
    let verified = trust::reverify_anchor(repo, &anchor, &root_keys, cfg.threshold, now).map_err(
        |e| match e {
            trust::SelectError::Read(e) => PassError::Read(e),
            trust::SelectError::Refused(r) => PassError::Refused(r),
        },
    )?;
    Ok(Trusted {
        expires: verified.statement.expires,
        commit: anchor.commit.clone(),
        tree: verified.statement.tree.clone(),
        signers: verified.signers,
        anchor: Anchor {
            sequence: verified.statement.sequence,
            ..anchor
        },
        waiting: selection.waiting,
        refused: selection.refused,
    })
}

/// What a pass found of an earlier pass that died in its transaction.
struct Interrupted {
    marker: TransactionMarker,
    /// Packages the dead transaction was installing that are not (completely) installed now:
    /// asked for again, with their files allowed to be overwritten.
    unfinished: Vec<(String, String, Option<PathBuf>)>,
    /// What the recovery did, for the log and the history.
    actions: Vec<String>,
}

/// The digest of everything a plan reads, so that a pass can tell it would plan the same as
/// the last converged one: what this host should have (`Resolved`, which follows from the
/// commit, the hostname and the pool), what pacfleet installed (the inventory), the local
/// database (every entry's `desc`), the sync databases after the refresh, the effective
/// pacman configuration (IgnorePkg, repositories, architecture, ...) and this pacfleet's
/// version. A transaction changes the local database, so an applied pass never matches.
fn plan_inputs_key(
    resolved: &Resolved,
    inventory: &BTreeSet<String>,
    local: &crate::system::LocalScan,
    sys: &System,
) -> Result<String, PassError> {
    use sha2::Digest;
    let mut hash = sha2::Sha256::new();
    let mut part = |bytes: &[u8]| {
        hash.update((bytes.len() as u64).to_le_bytes());
        hash.update(bytes);
    };
    part(b"pacfleet plan inputs 1");
    part(env!("CARGO_PKG_VERSION").as_bytes());
    part(format!("{resolved:?}").as_bytes());
    for name in inventory {
        part(name.as_bytes());
    }
    part(local.fingerprint.as_bytes());
    part(sys.sync_fingerprint()?.as_bytes());
    part(format!("{:?}", sys.conf()).as_bytes());
    Ok(format!("{:x}", hash.finalize()))
}

fn incomplete_database(cfg: &AgentConfig, entries: &[String]) -> PassError {
    PassError::IncompleteDatabase {
        dbpath: cfg.dbpath.join("local").display().to_string(),
        entries: entries.join(", "),
    }
}

fn io_error(context: &'static str, path: &std::path::Path, source: std::io::Error) -> PassError {
    PassError::System(SystemError::Io {
        context,
        path: path.display().to_string(),
        source,
    })
}

/// Finds `transaction.json` left by a pass that died during its transaction and, if that
/// process is provably gone, undoes what it left: pacman's lock, when it is the very file that
/// process held, and the half-written database entries of the packages it was installing.
/// Leaves everything (the marker too) while pacman's lock is someone else's.
fn recover_interrupted(
    cfg: &AgentConfig,
    state: &StateDir,
) -> Result<Option<Interrupted>, PassError> {
    let Some(marker) = state.load_transaction()? else {
        return Ok(None);
    };
    if crate::state::process_alive(marker.pid, marker.start_time, &marker.boot_id) {
        return Err(PassError::TransactionRunning {
            marker: state.transaction_path().display().to_string(),
            pid: marker.pid,
        });
    }
    let mut actions = Vec::new();
    let lock = cfg.dbpath.join("db.lck");
    match std::fs::metadata(&lock) {
        Ok(m) if crate::state::lock_identity(&m) != marker.lock_id => {
            // Not the lock the dead pass held: someone else's. Wait for it as usual.
            tracing::warn!(
                "{} records an interrupted transaction, but {} is not the lock that pass held; leaving it alone",
                state.transaction_path().display(),
                lock.display()
            );
            return Ok(None);
        }
        Ok(_) => {
            std::fs::remove_file(&lock)
                .map_err(|e| io_error("cannot remove the stale lock", &lock, e))?;
            actions.push(format!("removed the stale lock {}", lock.display()));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("cannot inspect", &lock, e)),
    }
    let mut unfinished = Vec::new();
    for c in &marker.changes {
        if !matches!(
            c.action,
            Action::Install | Action::Upgrade | Action::Downgrade | Action::Reinstall
        ) {
            continue;
        }
        let Some(version) = &c.new else { continue };
        let entry = cfg
            .dbpath
            .join("local")
            .join(format!("{}-{version}", c.name));
        let complete = entry.join("desc").is_file() && entry.join("files").is_file();
        if entry.is_dir() && !complete {
            std::fs::remove_dir_all(&entry)
                .map_err(|e| io_error("cannot remove the incomplete entry", &entry, e))?;
            actions.push(format!(
                "removed the incomplete database entry {}-{version}",
                c.name
            ));
        }
        if !complete {
            let file = c
                .source
                .as_deref()
                .filter(|s| !s.starts_with("repo "))
                .map(PathBuf::from);
            unfinished.push((c.name.clone(), version.clone(), file));
        }
    }
    let message = format!(
        "fleetctl pid {} was interrupted during the package transaction it started at {} (commit {}){}",
        marker.pid,
        marker
            .started_at
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        short(&marker.commit),
        if actions.is_empty() {
            String::new()
        } else {
            format!("; {}", actions.join("; "))
        }
    );
    tracing::warn!("{message}; finishing its work now");
    actions.insert(0, message);
    Ok(Some(Interrupted {
        marker,
        unfinished,
        actions,
    }))
}

/// The history entry of the dead pass.
fn interrupted_entry(i: &Interrupted) -> HistoryEntry {
    HistoryEntry {
        at: chrono::Utc::now(),
        commit: i.marker.commit.clone(),
        signer: None,
        pool: i.marker.pool.clone(),
        generation: i.marker.generation,
        changes: i.marker.changes.clone(),
        outcome: HistoryOutcome::Interrupted,
        error: Some(format!(
            "interrupted: {}; recovered by fleetctl pid {}",
            i.actions.join("; "),
            std::process::id()
        )),
        duration_ms: 0,
        notices: Notices::default(),
        held: Vec::new(),
        downloads: None,
    }
}

fn pass(
    cfg: &AgentConfig,
    opts: PassOptions,
    state: &StateDir,
    start: Instant,
    target_commit: &mut Option<String>,
) -> Result<PassReport, PassError> {
    // 1. Fetch.
    let spec = RepoSpec {
        url: cfg.repo.clone(),
        branch: cfg.branch.clone(),
    };
    let repo = cfg.mirror_dir();
    // Where the time of a pass goes, for `RUST_LOG=pacfleet=debug` (BENCHMARKS.md).
    let phase = |name: &str| tracing::debug!("pass phase done: {name} at {:?}", start.elapsed());
    // While the fetch waits on the network: pacman's configuration (a subprocess) and, for a
    // pass that may apply, the package databases read through libalpm (no lock taken, nothing
    // written; dropped unused when the pass turns out held, or the database changed meanwhile).
    let pending = source::start_fetch(&spec, &repo, &fetch_options(cfg));
    let pacman_conf = crate::system::read_conf(&cfg.host_paths());
    let mut early = match (&pacman_conf, opts.apply) {
        (Ok(conf), true) => open_early(cfg, state, conf),
        _ => None,
    };
    phase("configuration and package databases, beside the fetch");
    let fetched = pending.wait_or_stop(&STOP)?;
    phase("fetch");
    tracing::info!(
        "fleet {} at {} ({})",
        source::redact_url(&cfg.repo),
        short(&fetched.commit),
        if fetched.updated { "new" } else { "unchanged" }
    );
    // 2. Verify: the newest commit a threshold of trusted keys signed (docs/contract.md §4.2).
    let trusted = verify(cfg, state, &repo, &fetched.commit)?;
    phase("verify");
    stop_point()?;
    let commit = trusted.commit.clone();
    *target_commit = Some(commit.clone());
    log_target(&trusted);
    let settled = settled_on(state, &commit);
    let mut report = new_report(cfg, fetched.updated, &trusted);
    // 3. Manifests of the target: what this host needs of them, by exact path (other hosts'
    // files are `validate`'s), unless the last converged pass resolved this host at this very
    // tree already.
    let converged = state.load_converged();
    let Some((resolved, resolution_reused)) = resolution(cfg, &repo, &trusted, &converged)? else {
        report.duration = start.elapsed();
        return Ok(report);
    };
    phase("manifests and resolution");
    report.pool = Some(resolved.pool.clone());
    report.fleet = Some(resolved.fleet.clone());
    report.generation = resolved.generation;
    let place = waves::place(&resolved);
    report.wave = place.as_ref().map(|(info, _)| info.clone());

    // 5. May we apply?
    let gate = window::gate(resolved.window.as_ref(), &chrono::Local::now())?;
    if let Gate::Open { until: Some(u) } = &gate {
        report.window_open_until = Some(u.to_rfc3339());
    }
    report.window = window_state(&gate);
    let hold = hold_for(opts, &resolved, &gate);

    // 6. Plan against the real system; apply if allowed.
    let mut inventory = state.load_inventory()?;
    // `pacman-conf` fails on a DBPath that does not exist: say what is wrong with the root.
    prepare_root(cfg, false)?;
    let pacman_conf = pacman_conf?;
    let mut rollout = state.load_rollout();
    let loaded = rollout.clone();
    let change = name_change(&repo, &trusted, &resolved, &mut rollout);
    report.change = change.clone();
    let ctx = PassContext {
        cfg,
        opts,
        state,
        repo: &repo,
        start,
        place: place.as_ref(),
        trusted: &trusted,
        resolved: &resolved,
        converged: &converged,
        resolution_reused,
        change: change.as_deref(),
        failed_before: rollout
            .failed
            .clone()
            .filter(|f| Some(&f.change) == change.as_ref()),
    };
    let hold = match hold {
        Some(h) => {
            let prefetch =
                cfg.prefetch && opts.apply && !opts.dry_run && matches!(h, Hold::Window { .. });
            let (changeset, downloads) =
                plan_held(cfg, state, &resolved, &inventory, pacman_conf, prefetch)?;
            report.changeset = changeset;
            report.downloads = downloads;
            // `plan` shows what a reconcile would wait for.
            match h {
                Hold::PlanOnly if !report.changeset.is_empty() => {
                    rollout_hold(&ctx, &mut rollout).or(Some(h))
                }
                h => Some(h),
            }
        }
        None => apply_now(
            &ctx,
            early.take(),
            pacman_conf,
            &mut report,
            &mut inventory,
            &mut rollout,
        )?,
    };
    phase("record");
    remember_failure(&report, &mut rollout);
    if opts.apply
        && !opts.dry_run
        && rollout != loaded
        && let Err(e) = state.save_rollout(&rollout)
    {
        tracing::warn!("cannot record rollout.json: {e}");
    }
    finish(&mut report, hold, settled);
    report.needs_reboot = crate::system::needs_reboot(&cfg.root);
    report.duration = start.elapsed();
    Ok(report)
}

/// Says what the trust rules left: a newer commit refused, unsigned ones waiting.
fn log_target(trusted: &Trusted) {
    if let Some(r) = &trusted.refused {
        tracing::warn!("refused: {r}");
    }
    if !trusted.waiting.is_empty() {
        tracing::info!(
            "{} newer commit{} for a signature (newest {})",
            trusted.waiting.len(),
            if trusted.waiting.len() == 1 {
                " waits"
            } else {
                "s wait"
            },
            short(trusted.waiting.last().map_or("", String::as_str))
        );
    }
}

/// The report of a pass at the verified target, before the manifests are read.
fn new_report(cfg: &AgentConfig, fetched_new: bool, trusted: &Trusted) -> PassReport {
    PassReport {
        host: cfg.hostname.clone(),
        fleet: None,
        commit: trusted.commit.clone(),
        fetched_new,
        pool: None,
        generation: None,
        window_open_until: None,
        window: WindowState::None,
        signers: trusted.signers.clone(),
        sequence: trusted.anchor.sequence,
        waiting: trusted.waiting.clone(),
        refused: trusted.refused.as_ref().map(|r| r.to_string()),
        signed_until: trusted.expires,
        drift: Vec::new(),
        verdict: Verdict::NotInFleet,
        changeset: Changeset::default(),
        notices: Notices::default(),
        change: None,
        wave: None,
        health: None,
        rolled_back: None,
        needs_reboot: false,
        downloads: None,
        duration: Duration::ZERO,
    }
}

/// This host resolved at the target: the last converged pass's resolution when it was made at
/// this very tree (and whether it was), else read and resolved now; `None` when no pool
/// selects the host.
fn resolution(
    cfg: &AgentConfig,
    repo: &std::path::Path,
    trusted: &Trusted,
    converged: &Option<ConvergedInputs>,
) -> Result<Option<(Resolved, bool)>, PassError> {
    let reused = converged
        .as_ref()
        .and_then(|c| c.resolved.as_ref())
        .and_then(|r| r.reuse(&trusted.tree, &cfg.hostname));
    if let Some(r) = reused {
        tracing::debug!("the last converged pass resolved this host at this tree: reused");
        return Ok(Some((r.clone(), true)));
    }
    Ok(resolve_host(cfg, repo, trusted)?.map(|r| (r, false)))
}

/// After a failed health check: the change is remembered as failed here, never applied again.
fn remember_failure(report: &PassReport, record: &mut crate::state::RolloutRecord) {
    if let (Some(h), Some(change)) = (&report.health, &report.change)
        && !h.passed
    {
        record.failed = Some(crate::state::FailedChange {
            change: change.clone(),
            commit: report.commit.clone(),
            at: chrono::Utc::now(),
            failure: h.failure.clone().unwrap_or_default(),
            rolled_back: report.rolled_back.is_some(),
        });
    }
}

/// What the steps of an applying pass share.
struct PassContext<'a> {
    cfg: &'a AgentConfig,
    opts: PassOptions,
    state: &'a StateDir,
    /// The fleet repository's local mirror.
    repo: &'a std::path::Path,
    start: Instant,
    /// This host's wave and the pool's waves, with `rollout:`.
    place: Option<&'a (WaveInfo, Vec<crate::rollout::Wave>)>,
    trusted: &'a Trusted,
    resolved: &'a Resolved,
    converged: &'a Option<ConvergedInputs>,
    resolution_reused: bool,
    /// The pool's current change, with `rollout:` or `health:`.
    change: Option<&'a str>,
    /// This host's failed health check on that very change, if any.
    failed_before: Option<crate::state::FailedChange>,
}

/// Whether the pool's rollout lets this host apply the current change now (`None`: it may).
/// A host of a later wave whose change cannot be named waits.
fn rollout_hold(ctx: &PassContext<'_>, record: &mut crate::state::RolloutRecord) -> Option<Hold> {
    let (info, waves) = ctx.place?;
    let Some(change) = ctx.change else {
        return (info.index > 0).then(|| Hold::Wave {
            wave: info.name.clone(),
            waits: "the name of the pool's change, which cannot be read from the fleet repository"
                .to_owned(),
        });
    };
    waves::hold(
        ctx.cfg,
        ctx.repo,
        &ctx.trusted.tree,
        ctx.resolved,
        info,
        waves,
        change,
        record,
        chrono::Utc::now(),
    )
}

/// How many commits back a pass looks for the commit that made its pool's change.
const CHANGE_WALK_LIMIT: usize = 10_000;

/// The pool's current change (its rollout id), for a pool with `rollout:` or `health:`: the
/// commit that made the pool's files what they are at the target. Remembered in `rollout.json`
/// so that the next pass walks only the commits since. `None` when it cannot be read (the pass
/// goes on without rollout gates, and says so).
fn name_change(
    repo: &std::path::Path,
    trusted: &Trusted,
    resolved: &Resolved,
    record: &mut crate::state::RolloutRecord,
) -> Option<String> {
    let gates = &resolved.gates;
    if gates.rollout.is_none() && gates.health.is_none() {
        return None;
    }
    if let Some((at, origin)) = &record.named
        && at == &trusted.commit
    {
        return Some(origin.clone());
    }
    let known = record
        .named
        .as_ref()
        .map(|(at, origin)| (at.as_str(), origin.as_str()));
    let named = source::Repo::open(repo)
        .and_then(|r| r.change_origin(&trusted.commit, &gates.files, known, CHANGE_WALK_LIMIT));
    match named {
        Ok(origin) => {
            record.named = Some((trusted.commit.clone(), origin.clone()));
            Some(origin)
        }
        Err(e) => {
            tracing::warn!("cannot name the pool's current change: {e}");
            None
        }
    }
}

/// What a pass planned, and whether it could skip planning.
struct Planned {
    /// The digest of the plan's inputs (none after recovering an interrupted transaction).
    inputs_key: Option<String>,
    /// Nothing the plan reads changed since the last full plan found nothing to do.
    unchanged_inputs: bool,
    /// The intent the changeset was prepared from (none when planning was skipped).
    intent: Option<plan::Intent>,
}

/// An applying pass once nothing holds it: open the package system, refresh, plan (or skip
/// planning when nothing it reads changed), apply, check health, record. Returns the hold that
/// kept the changes back after all (the rollout, or a change this host failed before).
fn apply_now(
    ctx: &PassContext<'_>,
    early: Option<Early>,
    pacman_conf: pacmanconf::Config,
    report: &mut PassReport,
    inventory: &mut BTreeSet<String>,
    rollout: &mut crate::state::RolloutRecord,
) -> Result<Option<Hold>, PassError> {
    let (cfg, state, resolved) = (ctx.cfg, ctx.state, ctx.resolved);
    let phase =
        |name: &str| tracing::debug!("pass phase done: {name} at {:?}", ctx.start.elapsed());
    let interrupted = recover_interrupted(cfg, state)?;
    let (mut sys, preloaded, local) = open_for_apply(
        cfg,
        resolved,
        early.filter(|_| interrupted.is_none()),
        pacman_conf,
    )?;
    phase("open, lock wait, local database scan");
    if interrupted.is_none()
        && let Some(archive) = fetch::archive_fetch(cfg, state, sys.conf(), fetch::Purpose::Apply)
    {
        sys.fetch_archive_through(archive);
    }
    sys.refresh()?;
    phase("refresh");
    let mut planned = plan_or_skip(
        ctx,
        &mut sys,
        preloaded,
        &local,
        interrupted.as_ref(),
        report,
        inventory,
    )?;
    if let Some(i) = &interrupted {
        state.append_history(&interrupted_entry(i))?;
    }
    let mut hold = None;
    if !report.changeset.is_empty()
        && let Some(f) = &ctx.failed_before
    {
        hold = Some(Hold::FailedBefore {
            change: f.change.clone(),
            failure: f.failure.clone(),
        });
    }
    if !report.changeset.is_empty() && hold.is_none() {
        hold = rollout_hold(ctx, rollout);
    }
    if !report.changeset.is_empty() && cfg.prefetch && matches!(hold, Some(Hold::Wave { .. })) {
        report.downloads = fetch::ahead(cfg, state, &mut sys, fetch::Purpose::Prefetch);
    }
    if report.changeset.is_empty() || hold.is_some() {
        sys.release();
    } else {
        if interrupted.is_none() {
            report.downloads = fetch::ahead(cfg, state, &mut sys, fetch::Purpose::Apply);
        }
        if report.downloads.is_some()
            && let Some(intent) = &planned.intent
        {
            // Released for the downloads; and libalpm remembers each package's download size
            // from the prepare: a handle of its own sees the files now in the cache, and
            // downloads none of them again.
            sys = reopen(cfg, resolved, sys)?;
            sys.set_policy(policy(inventory));
            report.changeset = sys.prepare(intent, resolved)?;
        }
        let before = apply::libalpm_downloads();
        let tx = Tx {
            state,
            commit: &ctx.trusted.commit,
            resolved,
            signers: &ctx.trusted.signers,
            start: ctx.start,
            rolling_back: false,
            downloads: std::cell::Cell::new(report.downloads.clone()),
        };
        let committed = commit_changes(cfg, &tx, &mut sys, report, inventory, &mut planned.intent);
        fetch::add_libalpm(&mut report.downloads, before);
        committed?;
        *inventory = next_inventory(inventory, &report.changeset);
        if let Some(spec) = &resolved.gates.health {
            check_health(ctx, &tx, spec, &mut sys, report, inventory)?;
        }
    }
    let recovered = interrupted.is_some();
    if let (Some(key), true) = (planned.inputs_key, report.changeset.settled())
        && (!planned.unchanged_inputs || !ctx.resolution_reused)
    {
        remember_converged(
            cfg,
            state,
            key,
            ctx.converged,
            planned.unchanged_inputs,
            ctx.trusted,
            resolved,
        );
    }
    if report.health.as_ref().is_some_and(|h| !h.passed) {
        // Not the new state: what is installed now is recorded, the applied state stays.
        state.save_inventory(inventory)?;
        state.end_transaction()?;
    } else if hold.is_none() {
        record(
            cfg,
            state,
            ctx.trusted,
            resolved,
            inventory,
            &report.changeset,
            recovered,
        )?;
    }
    Ok(hold)
}

/// Plans against the package databases, unless nothing the plan reads changed since a full
/// plan found nothing to do: then the pass is converged without asking libalpm.
fn plan_or_skip(
    ctx: &PassContext<'_>,
    sys: &mut System,
    preloaded: Option<Preloaded>,
    local: &crate::system::LocalScan,
    interrupted: Option<&Interrupted>,
    report: &mut PassReport,
    inventory: &mut BTreeSet<String>,
) -> Result<Planned, PassError> {
    let resolved = ctx.resolved;
    let inputs_key = match interrupted {
        None => Some(plan_inputs_key(resolved, inventory, local, sys)?),
        Some(_) => None,
    };
    let unchanged_inputs = !ctx.opts.full_plan
        && inputs_key.is_some()
        && ctx.converged.as_ref().map(|c| &c.key) == inputs_key.as_ref();
    if unchanged_inputs {
        tracing::debug!("nothing the plan reads changed since the last full plan: converged");
        return Ok(Planned {
            inputs_key,
            unchanged_inputs,
            intent: None,
        });
    }
    // Read beside the fetch, unless the local database changed since.
    let installed = match preloaded {
        Some((installed, fingerprint)) if fingerprint == local.fingerprint => installed,
        _ => sys.installed(),
    };
    let mut intent = plan::intent(resolved, &installed, inventory);
    if let Some(i) = interrupted {
        resume_interrupted(i, sys, resolved, &installed, &mut intent, inventory)?;
    }
    sys.set_policy(policy(inventory));
    report.changeset = sys.prepare(&intent, resolved)?;
    tracing::debug!("pass phase done: prepare at {:?}", ctx.start.elapsed());
    Ok(Planned {
        inputs_key,
        unchanged_inputs,
        intent: Some(intent),
    })
}

/// After applying: the pool's health commands; on failure with `rollback: true`, the packages
/// the host had before the pass, exactly, in a transaction of their own (from the cache, else
/// the archive), recorded in history as the rollback of the change.
fn check_health(
    ctx: &PassContext<'_>,
    tx: &Tx<'_>,
    spec: &crate::manifest::HealthSpec,
    sys: &mut System,
    report: &mut PassReport,
    inventory: &mut BTreeSet<String>,
) -> Result<(), PassError> {
    let health = crate::health::check(
        spec,
        &crate::health::Subject {
            root: &ctx.cfg.root,
            host: &ctx.cfg.hostname,
            pool: &ctx.resolved.pool,
            commit: &ctx.trusted.commit,
        },
    );
    let passed = health.passed;
    report.health = Some(health);
    if passed || !spec.rollback {
        return Ok(());
    }
    let intent = reverse_intent(&report.changeset, ctx.resolved);
    let mut back_to = ctx.resolved.clone();
    // The versions the host had are the lock now: nothing may move past them.
    for t in &intent.targets {
        if let Some(v) = &t.version {
            back_to.pins.insert(
                t.name.clone(),
                crate::manifest::Pin {
                    version: v.clone(),
                    sha256: None,
                },
            );
        }
    }
    tracing::warn!(
        "health check failed: rolling back to the packages this host had before the pass"
    );
    sys.set_policy(policy(inventory));
    // A rollback that cannot be made (an old version in neither the cache nor the archive)
    // leaves the host on the new packages: it is reported unhealthy and not rolled back, and
    // the change is still never applied again; the pass does not end in that error.
    let rolled = (|| -> Result<Changeset, PassError> {
        let back = sys.prepare(&intent, &back_to)?;
        if back.is_empty() {
            sys.release();
            return Ok(back);
        }
        let rtx = Tx {
            resolved: &back_to,
            rolling_back: true,
            downloads: std::cell::Cell::default(),
            ..*tx
        };
        let notices = rtx.commit(sys, &back)?;
        report.notices.extend(notices);
        Ok(back)
    })();
    match rolled {
        Ok(back) => {
            *inventory = next_inventory(inventory, &back);
            report.rolled_back = Some(back);
        }
        Err(e) => {
            sys.release();
            tracing::error!("the rollback after the failed health check failed: {e}");
            report.notices.warnings.push(format!(
                "the rollback after the failed health check failed: {e}"
            ));
        }
    }
    Ok(())
}

/// The intent that undoes an applied changeset: what it installed removed, what it upgraded,
/// downgraded or removed put back at the version it had.
fn reverse_intent(applied: &Changeset, resolved: &Resolved) -> plan::Intent {
    let mut intent = plan::Intent::default();
    for c in &applied.changes {
        match (&c.old, &c.new) {
            (None, Some(_)) => intent.remove.push(c.name.clone()),
            (Some(old), _) if c.new.as_ref() != Some(old) => intent.targets.push(plan::Target {
                name: c.name.clone(),
                version: Some(old.clone()),
                repo: None,
                sha256: None,
                explicit: resolved.explicit.contains_key(&c.name),
            }),
            _ => {}
        }
    }
    intent
}

/// The local database as `open_early` read it beside the fetch, and the scan fingerprint it had.
type Preloaded = (std::collections::BTreeMap<String, plan::Installed>, String);

/// The package system of an applying pass: the one opened beside the fetch when the usual
/// order allows (`early`, with the local database it read then), else a new one; the pool's
/// snapshot applied; pacman's lock waited for (bounded); then the local database scanned, a
/// half-written entry refused. Returns the handle, what `early` read, and the scan.
fn open_for_apply(
    cfg: &AgentConfig,
    resolved: &Resolved,
    early: Option<Early>,
    pacman_conf: pacmanconf::Config,
) -> Result<(System, Option<Preloaded>, crate::system::LocalScan), PassError> {
    let (mut sys, preloaded) = match early {
        Some(e) => (e.sys, Some((e.installed, e.fingerprint))),
        None => (
            System::open_with(&cfg.host_paths(), Mode::Apply, pacman_conf)?,
            None,
        ),
    };
    if let Some(date) = &resolved.snapshot {
        sys.use_snapshot(resolved.archive.as_deref(), date)?;
    }
    apply::wait_for_lock(&sys.lockfile(), cfg.lock_timeout)?;
    // After the wait: a pacman at work leaves half-written entries for a moment.
    let local = crate::system::scan_local(&cfg.dbpath)?;
    if !local.incomplete.is_empty() {
        return Err(incomplete_database(cfg, &local.incomplete));
    }
    Ok((sys, preloaded, local))
}

/// A new handle in place of `sys` (released, with pacman's lock), configured as
/// [`open_for_apply`] configured it, with pacman's lock waited for again.
fn reopen(cfg: &AgentConfig, resolved: &Resolved, sys: System) -> Result<System, PassError> {
    let conf = sys.conf().clone();
    drop(sys);
    let mut sys = System::open_with(&cfg.host_paths(), Mode::Apply, conf)?;
    if let Some(date) = &resolved.snapshot {
        sys.use_snapshot(resolved.archive.as_deref(), date)?;
    }
    apply::wait_for_lock(&sys.lockfile(), cfg.lock_timeout)?;
    Ok(sys)
}

/// Plans around a transaction a dead pass left: what it installed is pacfleet's (the
/// inventory), what it was installing is asked for again, and the files its half-extracted
/// packages left may be replaced.
fn resume_interrupted(
    i: &Interrupted,
    sys: &mut System,
    resolved: &Resolved,
    installed: &std::collections::BTreeMap<String, plan::Installed>,
    intent: &mut plan::Intent,
    inventory: &mut BTreeSet<String>,
) -> Result<(), PassError> {
    for c in &i.marker.changes {
        match c.action {
            Action::Install => {
                inventory.insert(c.name.clone());
            }
            Action::Remove if !installed.contains_key(&c.name) => {
                inventory.remove(&c.name);
            }
            _ => {}
        }
    }
    for (name, _, _) in &i.unfinished {
        if !installed.contains_key(name) && !intent.targets.iter().any(|t| &t.name == name) {
            let pin = resolved.pins.get(name);
            intent.targets.push(plan::Target {
                name: name.clone(),
                version: pin.map(|p| p.version.clone()),
                repo: None,
                sha256: pin.and_then(|p| p.sha256.clone()),
                explicit: resolved.explicit.contains_key(name),
            });
        }
    }
    let allowed = sys.allow_overwrite(&i.unfinished)?;
    if !allowed.is_empty() {
        tracing::info!(
            "files the interrupted transaction left may be overwritten: {}",
            allowed.join(", ")
        );
    }
    Ok(())
}

/// Records the inputs of a plan that found nothing to do (and this host's resolution at the
/// tree), after a full plan and after a skipped one that read the manifests of a new tree (same
/// plan inputs: a commit that changed nothing this host reads), so that the next pass can skip
/// both. Losing it only costs the next pass a full plan.
fn remember_converged(
    cfg: &AgentConfig,
    state: &StateDir,
    key: String,
    converged: &Option<ConvergedInputs>,
    unchanged_inputs: bool,
    trusted: &Trusted,
    resolved: &Resolved,
) {
    let inputs = ConvergedInputs {
        key,
        planned_at: match converged {
            Some(c) if unchanged_inputs => c.planned_at,
            _ => chrono::Utc::now(),
        },
        resolved: Some(ResolvedAt {
            tree: trusted.tree.clone(),
            hostname: cfg.hostname.clone(),
            pacfleet: env!("CARGO_PKG_VERSION").to_owned(),
            resolved: resolved.clone(),
        }),
    };
    if let Err(e) = state.save_converged(&inputs) {
        tracing::warn!("cannot record the converged plan's inputs: {e}");
    }
}

/// The end of a pass: drift (changes on a host that had converged on this very commit) and
/// the verdict.
fn finish(report: &mut PassReport, hold: Option<Hold>, settled: bool) {
    if settled && !report.changeset.is_empty() {
        report.drift = report
            .changeset
            .changes
            .iter()
            .map(|c| format!("{} {}", c.action, c.name))
            .collect();
        tracing::warn!(
            "drift: this host changed outside pacfleet ({})",
            report.drift.join(", ")
        );
    }
    report.verdict = match hold {
        _ if report.health.as_ref().is_some_and(|h| !h.passed) => Verdict::Unhealthy {
            rolled_back: report.rolled_back.is_some(),
        },
        _ if report.changeset.settled() => Verdict::Converged,
        _ if report.changeset.is_empty() => Verdict::Held,
        Some(hold) => Verdict::Pending { hold },
        None if !report.notices.warnings.is_empty() => Verdict::AppliedWithWarnings,
        None => Verdict::Applied,
    };
    for h in &report.changeset.held {
        tracing::warn!("held back by this host: {h}");
    }
}

/// Steps 3 and 4 of a pass: what this host needs of the manifests at the trusted commit, read
/// by exact path (other hosts' files are `validate`'s), and this host resolved against them;
/// `None` when no pool selects it.
fn resolve_host(
    cfg: &AgentConfig,
    repo: &std::path::Path,
    trusted: &Trusted,
) -> Result<Option<Resolved>, PassError> {
    let fleet =
        crate::validate::fleet_for_host(repo, &trusted.tree, &cfg.hostname)?.map_err(|diags| {
            PassError::Invalid {
                commit: trusted.commit.clone(),
                diags,
            }
        })?;
    stop_point()?;
    let resolved = resolve::resolve(&fleet, &cfg.hostname)?;
    if resolved.is_none() {
        tracing::info!(
            "host {} is in no pool of fleet {}: nothing to do",
            cfg.hostname,
            fleet.name()
        );
    }
    Ok(resolved)
}

/// Commits a prepared changeset: the keyring packages first in a transaction of their own when
/// there are others too (then the rest planned and committed in the same pass), or all at once
/// (a corrupt package file downloaded again and committed once more). Every transaction goes
/// through [`Tx::commit`] (marker, history). On an error the caller's `?` drops `sys`, which
/// releases the transaction and pacman's lock.
fn commit_changes(
    cfg: &AgentConfig,
    tx: &Tx<'_>,
    sys: &mut System,
    report: &mut PassReport,
    inventory: &mut BTreeSet<String>,
    planned: &mut Option<plan::Intent>,
) -> Result<(), PassError> {
    let resolved = tx.resolved;
    if STOP.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(PassError::Stopped);
    }
    tracing::info!("applying: {}", report.changeset.summary());
    tx.state.clear_converged()?;
    let keyring = keyring_targets(&report.changeset, &cfg.keyring_packages, resolved);
    if !keyring.is_empty() && keyring.len() < report.changeset.changes.len() {
        // Keyring first, in a transaction of its own: packages signed by a key only the
        // new keyring has verify in the second.
        sys.release();
        let names: Vec<&str> = keyring.iter().map(|t| t.name.as_str()).collect();
        tracing::info!("upgrading the keyring first: {}", names.join(", "));
        let first = sys.prepare(
            &plan::Intent {
                targets: keyring,
                ..plan::Intent::default()
            },
            resolved,
        )?;
        let notices = tx.commit(sys, &first)?;
        *inventory = next_inventory(inventory, &first);
        tx.state.save_inventory(inventory)?;
        report.notices.extend(notices);
        let rest = (|| -> Result<(Changeset, Notices), PassError> {
            sys.set_policy(policy(inventory));
            let installed = sys.installed();
            let intent = plan::intent(resolved, &installed, inventory);
            let rest = sys.prepare(&intent, resolved)?;
            let notices = if rest.is_empty() {
                sys.release();
                Notices::default()
            } else {
                tx.commit(sys, &rest)?
            };
            Ok((rest, notices))
        })();
        let (rest, notices) = rest.map_err(|e| PassError::AfterKeyring {
            keyring: first.summary_with_versions(),
            source: Box::new(e),
        })?;
        report.changeset = merge_changesets(first, rest);
        report.notices.extend(notices);
    } else {
        let notices = match tx.commit(sys, &report.changeset) {
            Err(PassError::Apply(e)) if e.corrupt_files() && planned.is_some() => {
                // libalpm deleted the corrupt files: plan again, which downloads
                // them anew, and commit once more. Files from peers were checked against
                // their sha256, but a signature file a peer served was not: the peers that
                // served files in this pass are avoided, and libalpm downloads from upstream.
                let served: Vec<String> = report
                    .downloads
                    .as_ref()
                    .filter(|d| d.peer_files > 0)
                    .map(|d| d.peers.clone())
                    .unwrap_or_default();
                if served.is_empty() {
                    tracing::warn!("{e}; downloading the corrupt package files again");
                } else {
                    fetch::avoid_after_corrupt(tx.state, &served, &e.to_string());
                    tracing::warn!(
                        "{e}; files came from the peers ({}): downloading them again from upstream only",
                        served.join(", ")
                    );
                }
                let intent = planned.take().unwrap_or_default();
                sys.set_policy(policy(inventory));
                report.changeset = sys.prepare(&intent, resolved)?;
                tx.commit(sys, &report.changeset)?
            }
            other => other?,
        };
        report.notices.extend(notices);
    }
    Ok(())
}

/// Where the pool's window stands, as the report says it.
fn window_state<Tz: chrono::TimeZone>(gate: &Gate<Tz>) -> WindowState {
    match gate {
        Gate::Open { until: Some(u) } => WindowState::Open {
            until: u.to_rfc3339(),
        },
        Gate::Open { until: None } => WindowState::None,
        Gate::Closed { next } => WindowState::Closed {
            next: next.as_ref().map(|n| n.to_rfc3339()),
        },
    }
}

/// Why this pass may not apply, if it may not: plan only, the pool paused, its window
/// closed (unless ignored), a dry run.
fn hold_for<Tz: chrono::TimeZone>(
    opts: PassOptions,
    resolved: &Resolved,
    gate: &Gate<Tz>,
) -> Option<Hold> {
    if !opts.apply {
        Some(Hold::PlanOnly)
    } else if resolved.paused {
        Some(Hold::Paused)
    } else if let (Gate::Closed { next }, false) = (gate, opts.ignore_window) {
        Some(Hold::Window {
            next: next.as_ref().map(|n| n.to_rfc3339()),
        })
    } else if opts.dry_run {
        Some(Hold::DryRun)
    } else {
        None
    }
}

/// A held pass's plan: against a private copy of the sync databases, no lock, nothing
/// written but, with `prefetch`, the change's package files into the cache. A transaction
/// pacfleet recorded is recovered by the next reconcile; anything else half-written is
/// reported, never called converged.
fn plan_held(
    cfg: &AgentConfig,
    state: &StateDir,
    resolved: &Resolved,
    inventory: &BTreeSet<String>,
    pacman_conf: pacmanconf::Config,
    prefetch: bool,
) -> Result<(Changeset, Option<crate::peers::Downloads>), PassError> {
    let local = crate::system::scan_local(&cfg.dbpath)?;
    if !local.incomplete.is_empty() && state.load_transaction()?.is_none() {
        return Err(incomplete_database(cfg, &local.incomplete));
    }
    let mut sys = System::open_with(&cfg.host_paths(), Mode::Plan, pacman_conf)?;
    sys.set_policy(policy(inventory));
    if let Some(date) = &resolved.snapshot {
        sys.use_snapshot(resolved.archive.as_deref(), date)?;
    }
    sys.refresh()?;
    if prefetch
        && let Some(archive) =
            fetch::archive_fetch(cfg, state, sys.conf(), fetch::Purpose::Prefetch)
    {
        sys.fetch_archive_through(archive);
    }
    let intent = plan::intent(resolved, &sys.installed(), inventory);
    let mut changeset = sys.prepare(&intent, resolved)?;
    note_keyring_first(&mut changeset, &cfg.keyring_packages);
    let downloads = (prefetch && !changeset.is_empty())
        .then(|| fetch::ahead(cfg, state, &mut sys, fetch::Purpose::Prefetch))
        .flatten();
    Ok((changeset, downloads))
}

/// Records an applying pass's outcome: state.json, the inventory and the anchor — only what
/// changed: a converged pass on the state already recorded (a newer commit refused, or
/// unsigned commits waiting) leaves state.json and the anchor as they are, so `applied_at`
/// stays the time it was applied — then ends the transaction marker (this pass's, or the
/// recovered one's).
fn record(
    cfg: &AgentConfig,
    state: &StateDir,
    trusted: &Trusted,
    resolved: &Resolved,
    inventory: &BTreeSet<String>,
    changeset: &Changeset,
    recovered: bool,
) -> Result<(), PassError> {
    let commit = &trusted.commit;
    let previous = state.load_applied()?;
    let unchanged = changeset.is_empty()
        && !recovered
        && previous.as_ref().is_some_and(|p| {
            &p.commit == commit
                && p.sequence == trusted.anchor.sequence
                && p.keys == trusted.anchor.keys
                && p.signers == trusted.signers
                && p.generation == resolved.generation
                && p.pool == resolved.pool
        })
        && read_anchor(cfg)?.as_ref() == Some(&trusted.anchor);
    if !unchanged {
        let applied = AppliedState {
            commit: commit.clone(),
            tree: trusted.tree.clone(),
            sequence: trusted.anchor.sequence,
            generation: resolved.generation,
            pool: resolved.pool.clone(),
            applied_at: chrono::Utc::now(),
            fleet: resolved.fleet.clone(),
            signers: trusted.signers.clone(),
            keys: trusted.anchor.keys.clone(),
            accepted_by: trusted.anchor.accepted_by.clone(),
        };
        state.record_applied(&applied, inventory)?;
        write_anchor(cfg, &trusted.anchor)?;
    }
    if !changeset.is_empty() || recovered {
        state.end_transaction()?;
    }
    Ok(())
}

/// Whether the last pass converged on `commit` (so changes now are drift, not new state).
/// Read before this pass writes its own status.
fn settled_on(state: &StateDir, commit: &str) -> bool {
    let applied = state.load_applied().ok().flatten();
    let status = state.load_status().ok().flatten();
    applied.is_some_and(|a| a.commit == commit)
        && status.is_some_and(|s| {
            matches!(s.outcome, PassOutcome::Converged | PassOutcome::Applied)
                && s.target_commit.as_deref() == Some(commit)
        })
}

/// The package system a reconcile pass opens while its fetch waits on the network.
struct Early {
    sys: System,
    /// The local database as plain data, read then.
    installed: std::collections::BTreeMap<String, plan::Installed>,
    /// `scan_local`'s fingerprint when it was read: the pass uses `installed` only if the
    /// database still has it after waiting for pacman's lock.
    fingerprint: String,
}

/// Opens the package system and reads the local and sync databases, or `None` whenever the
/// usual order matters: a transaction to recover first, pacman's lock held, a half-written
/// entry, any error (the pass meets it again later, in order, and reports it there).
///
/// Not when the last full plan found nothing to do (`converged.json`): then this pass most
/// likely skips planning altogether, and reading the databases would only cost it time.
fn open_early(cfg: &AgentConfig, state: &StateDir, conf: &pacmanconf::Config) -> Option<Early> {
    if state.load_converged().is_some()
        || !matches!(state.load_transaction(), Ok(None))
        || cfg.dbpath.join("db.lck").exists()
    {
        return None;
    }
    let local = crate::system::scan_local(&cfg.dbpath).ok()?;
    if !local.incomplete.is_empty() {
        return None;
    }
    let sys = System::open_with(&cfg.host_paths(), Mode::Apply, conf.clone()).ok()?;
    let installed = sys.installed();
    sys.load_sync_databases();
    Some(Early {
        sys,
        installed,
        fingerprint: local.fingerprint,
    })
}

/// Where a pass that was told to stop (SIGTERM, SIGINT) stops before its transaction.
fn stop_point() -> Result<(), PassError> {
    if STOP.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(PassError::Stopped);
    }
    Ok(())
}

/// The policy libalpm's questions are answered by: the desired and locked sets come from the
/// plan's `Resolved` (`System::prepare` fills them in); the inventory from here.
fn policy(inventory: &BTreeSet<String>) -> Policy {
    Policy {
        inventory: inventory.clone(),
        ..Policy::default()
    }
}

/// The keyring packages (`keyring_packages` of agent.yaml) a changeset installs or upgrades,
/// as targets of a transaction of their own.
fn keyring_targets(cs: &Changeset, keyrings: &[String], resolved: &Resolved) -> Vec<plan::Target> {
    cs.changes
        .iter()
        .filter(|c| {
            keyrings.contains(&c.name)
                && matches!(
                    c.action,
                    Action::Install | Action::Upgrade | Action::Downgrade | Action::Reinstall
                )
        })
        .map(|c| plan::Target {
            name: c.name.clone(),
            version: c.new.clone(),
            repo: None,
            sha256: resolved.pins.get(&c.name).and_then(|p| p.sha256.clone()),
            explicit: resolved.explicit.contains_key(&c.name),
        })
        .collect()
}

/// `plan`: say that the keyring goes first, as `reconcile` will do it.
fn note_keyring_first(cs: &mut Changeset, keyrings: &[String]) {
    let names: Vec<&str> = cs
        .changes
        .iter()
        .filter(|c| keyrings.contains(&c.name) && c.new.is_some())
        .map(|c| c.name.as_str())
        .collect();
    if !names.is_empty() && names.len() < cs.changes.len() {
        cs.answers.push(format!(
            "keyring first: {} is applied in a transaction of its own before the rest",
            names.join(", ")
        ));
    }
}

/// One changeset shown for two transactions (the keyring's, then the rest).
fn merge_changesets(first: Changeset, rest: Changeset) -> Changeset {
    let mut out = first;
    out.changes.extend(rest.changes);
    out.pacnew.extend(rest.pacnew);
    out.answers.extend(rest.answers);
    out.held = rest.held;
    out
}

/// What committing a changeset needs to record it.
struct Tx<'a> {
    state: &'a StateDir,
    commit: &'a str,
    resolved: &'a Resolved,
    signers: &'a [String],
    start: Instant,
    /// This transaction undoes the pass's changes after a failed health check.
    rolling_back: bool,
    /// What the pass downloaded ahead of its transactions: the first one's history entry
    /// takes it.
    downloads: std::cell::Cell<Option<crate::peers::Downloads>>,
}

impl Tx<'_> {
    /// Commits the changeset prepared on `sys`: writes `transaction.json` first (a pass that
    /// cannot stops before any package changes), then the history entry of the outcome.
    fn commit(&self, sys: &mut System, cs: &Changeset) -> Result<Notices, PassError> {
        // Before the commit, under pacman's lock: who is committing what, under which lock.
        let lock = sys.lockfile();
        let lock_id = match std::fs::metadata(&lock) {
            Ok(m) => crate::state::lock_identity(&m),
            Err(e) => {
                sys.release();
                return Err(io_error("cannot inspect", &lock, e));
            }
        };
        let (pid, start_time, boot_id) = crate::state::this_process();
        let marker = TransactionMarker {
            pid,
            start_time,
            boot_id,
            lockfile: lock,
            lock_id,
            commit: self.commit.to_owned(),
            pool: self.resolved.pool.clone(),
            generation: self.resolved.generation,
            started_at: chrono::Utc::now(),
            changes: cs.changes.clone(),
        };
        if let Err(e) = self.state.begin_transaction(&marker) {
            sys.release();
            return Err(e.into());
        }
        tracing::debug!(
            "pass phase done: transaction marker at {:?}",
            self.start.elapsed()
        );
        let before = apply::libalpm_downloads();
        let applied = apply::commit(sys, cs);
        let mut downloads = self.downloads.take();
        fetch::add_libalpm(&mut downloads, before);
        tracing::debug!("pass phase done: commit at {:?}", self.start.elapsed());
        let entry = |outcome, error: Option<String>, notices: Notices| HistoryEntry {
            at: chrono::Utc::now(),
            commit: self.commit.to_owned(),
            signer: Some(self.signers.join(", ")),
            pool: self.resolved.pool.clone(),
            generation: self.resolved.generation,
            changes: cs.changes.clone(),
            outcome,
            error,
            duration_ms: u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX),
            notices: Notices {
                answers: cs.answers.iter().cloned().chain(notices.answers).collect(),
                ..notices
            },
            held: cs.held.clone(),
            downloads: downloads.clone().filter(|d| !d.is_empty()),
        };
        match applied {
            Ok(notices) => {
                let outcome = if self.rolling_back {
                    HistoryOutcome::RolledBack
                } else if notices.warnings.is_empty() {
                    HistoryOutcome::Applied
                } else {
                    HistoryOutcome::AppliedWithWarnings
                };
                self.state
                    .append_history(&entry(outcome, None, notices.clone()))?;
                Ok(notices)
            }
            Err(e) => {
                self.state.append_history(&entry(
                    HistoryOutcome::Failed,
                    Some(e.to_string()),
                    Notices::default(),
                ))?;
                self.state.end_transaction()?;
                Err(e.into())
            }
        }
    }
}

/// The inventory after a changeset: what pacfleet installed is added, what it removed is gone.
/// A package that replaces others (a rename) is pacfleet's only if one of those was.
fn next_inventory(before: &BTreeSet<String>, changes: &Changeset) -> BTreeSet<String> {
    let mut inv = before.clone();
    for c in &changes.changes {
        match c.action {
            Action::Install if !c.replaces.is_empty() => {
                let ours = c.replaces.iter().any(|r| before.contains(r));
                if ours {
                    inv.insert(c.name.clone());
                }
            }
            Action::Install => {
                inv.insert(c.name.clone());
            }
            Action::Remove => {
                inv.remove(&c.name);
            }
            _ => {}
        }
    }
    inv
}

/// The first 12 hex digits of a commit id.
pub fn short(commit: &str) -> &str {
    commit.get(..12).unwrap_or(commit)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pass's report with every field set, for the tests here and in the submodules.
    pub(super) fn report(verdict: Verdict) -> PassReport {
        PassReport {
            host: "ws-01".into(),
            fleet: Some("acme".into()),
            commit: "a".repeat(40),
            fetched_new: true,
            signers: vec!["ops".into()],
            sequence: 7,
            waiting: vec!["b".repeat(40)],
            refused: None,
            signed_until: "2026-12-23T09:00:00Z".parse().unwrap(),
            drift: vec!["install tool".into()],
            pool: Some("desktops".into()),
            generation: Some(3),
            window_open_until: None,
            window: WindowState::Closed {
                next: Some("2026-12-01T02:00:00+01:00".into()),
            },
            verdict,
            changeset: Changeset {
                changes: vec![plan::Change {
                    action: Action::Install,
                    name: "tool".into(),
                    old: None,
                    new: Some("1.0-1".into()),
                    reason: Some(plan::Reason::Explicit),
                    why: vec!["desired".into()],
                    download_size: 10,
                    size_delta: 20,
                    source: Some("repo core".into()),
                    replaces: Vec::new(),
                }],
                ..Changeset::default()
            },
            notices: Notices::default(),
            change: Some("c".repeat(40)),
            wave: Some(WaveInfo {
                index: 1,
                name: "early".into(),
                of: 3,
            }),
            health: Some(crate::report::Health {
                passed: false,
                failure: Some("`false` exited with status 1".into()),
            }),
            rolled_back: Some(Changeset::default()),
            needs_reboot: true,
            downloads: Some(crate::peers::Downloads {
                peer_bytes: 300,
                upstream_bytes: 100,
                peer_files: 3,
                upstream_files: 1,
                bad_from: [("http://10.0.0.5:7878".to_owned(), 1)].into(),
                peers: vec!["http://10.0.0.5:7878".into()],
                prefetch: false,
                left: 0,
            }),
            duration: Duration::from_millis(1234),
        }
    }

    #[test]
    fn the_report_reads_back_as_printed() {
        for verdict in [
            Verdict::Unhealthy { rolled_back: true },
            Verdict::Pending {
                hold: Hold::Wave {
                    wave: "early".into(),
                    waits: "wave canary: ws-01 has not reported success".into(),
                },
            },
            Verdict::Pending {
                hold: Hold::Halted {
                    failed: vec!["ws-02".into()],
                    budget: 0,
                },
            },
            Verdict::Pending {
                hold: Hold::FailedBefore {
                    change: "c".repeat(40),
                    failure: "no".into(),
                },
            },
            Verdict::Pending {
                hold: Hold::Window {
                    next: Some("2026-12-01T02:00:00+01:00".into()),
                },
            },
            Verdict::Pending { hold: Hold::Paused },
            Verdict::AppliedWithWarnings,
            Verdict::NotInFleet,
        ] {
            let r = report(verdict);
            let json = serde_json::to_string_pretty(&r).unwrap();
            assert!(json.contains("\"duration\": 1234"), "{json}");
            let back: PassReport = serde_json::from_str(&json).unwrap();
            assert_eq!(back, r);
        }
    }

    #[test]
    fn exit_statuses() {
        let plan = PassOptions::default();
        let reconcile = PassOptions {
            apply: true,
            ..PassOptions::default()
        };
        let pending = report(Verdict::Pending {
            hold: Hold::PlanOnly,
        });
        assert_eq!(pending.exit(plan), Exit::Changes);
        assert_eq!(pending.exit(reconcile), Exit::Success);
        let converged = PassReport {
            changeset: Changeset::default(),
            ..report(Verdict::Converged)
        };
        assert_eq!(converged.exit(plan), Exit::Success);
        let refused = PassReport {
            refused: Some("commit c is not signed".into()),
            ..converged
        };
        assert_eq!(refused.outcome(), PassOutcome::Refused);
        assert_eq!(refused.exit(plan), Exit::Refused);
        assert_eq!(refused.exit(reconcile), Exit::Refused);
        assert_eq!(PassError::Stopped.exit(), Exit::Error);
        let after_keyring = PassError::AfterKeyring {
            keyring: "upgrade archlinux-keyring".into(),
            source: Box::new(PassError::Refused(Refusal::Unsigned { commit: "c".into() })),
        };
        assert_eq!(after_keyring.exit(), Exit::Refused);
        assert_eq!(after_keyring.reason(), FailureReason::Refused);
        for e in [Exit::Success, Exit::Changes, Exit::Error, Exit::Refused] {
            assert_eq!(Exit::from_code(i32::from(e.code())), Some(e));
        }
        assert_eq!(Exit::from_code(101), None);
    }
}
