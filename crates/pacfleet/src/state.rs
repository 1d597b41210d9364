//! What a host remembers between passes, written so nothing is lost.
//!
//! Everything lives in the agent's `state_dir` (default `/var/lib/pacfleet`, created 0711; its files are written 0644 — they hold nothing secret — so a desktop user's
//! `fleetctl status --waybar` can read them by name):
//!
//! | file | content | written |
//! |---|---|---|
//! | `state.json` | [`AppliedState`]: the last state applied (commit, tree, sequence, generation) | atomically, after an apply |
//! | `inventory.json` | the package names pacfleet installed; removal is only ever of these | atomically |
//! | `status.json` | [`PassStatus`]: the outcome of the last pass, applied or not | atomically, after every pass |
//! | `history.jsonl` | [`HistoryEntry`] per pass that changed or tried to change something | appended, one line, fsynced |
//! | `pass.lock` | flock held by the running pass; contains its pid | [`StateDir::lock_pass`] |
//! | `transaction.json` | [`TransactionMarker`]: the transaction being committed, by which process, under which lock | before a commit; removed once its outcome is recorded |
//! | `converged.json` | [`ConvergedInputs`]: what the last converged full plan read (a digest) and the host's resolution at its tree, reused while those are unchanged | atomically, after a full plan that found nothing to do; removed before a transaction |
//!
//! The state directory must be the running user's (root on a host) and writable by nobody
//! else, and its parent writable only by that user or root (or sticky, as `/tmp`):
//! [`StateDir::open_private`], which every pass uses, refuses anything else with the fix
//! (`chown root: DIR && chmod 0711 DIR`). Nobody else can then plant a file or a symbolic link
//! in it; as a second line, state files are opened with `O_NOFOLLOW` (a symbolic link in place
//! of one is an error naming it, never followed), and [`write_atomic`] creates its temporary file
//! with `O_CREAT|O_EXCL|O_NOFOLLOW` and renames it over the target, which replaces a link there
//! rather than writing through it. Names read from `transaction.json` are checked (package
//! names by the manifest rules, versions as Arch versions) before they are joined into a path.
//!
//! Every whole-file write goes through [`write_atomic`] (temp file in the same directory, fsync,
//! rename, fsync the directory), so a crash leaves either the old or the new file, never a mix.
//! Reports rewritten by every pass — `status.json`, the metrics counters and the textfile —
//! go through [`write_report`]: the same, without the directory's fsync, so a crash may keep
//! the previous report (never a torn one: the data is on disk before the rename), which the
//! next pass replaces; a no-op pass saves three fsyncs by it.
//! A file that exists but cannot be read back is an error that names it and says what to do;
//! pacfleet never resets state silently, because a lost `state.json` would drop the sequence
//! number that protects against replayed states, and a lost inventory would change what `prune`
//! may remove.
//!
//! `state.json` and `inventory.json` carry `"format": 1`; a file of another format is refused
//! with a message instead of being misread.

use std::collections::BTreeSet;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::plan::Change;
use crate::plan::{Held, Notices};

/// The on-disk format of `state.json` and `inventory.json` this pacfleet reads and writes.
pub const STATE_FORMAT: u64 = 1;

pub const APPLIED_FILE: &str = "state.json";
pub const INVENTORY_FILE: &str = "inventory.json";
pub const STATUS_FILE: &str = "status.json";
pub const HISTORY_FILE: &str = "history.jsonl";
pub const LOCK_FILE: &str = "pass.lock";
pub const TRANSACTION_FILE: &str = "transaction.json";
pub const CONVERGED_FILE: &str = "converged.json";
/// What this host knows of its pool's rollouts (`rollout.json`): the change it last named,
/// a change it failed, the last report it published.
pub const ROLLOUT_FILE: &str = "rollout.json";
/// The peers avoided for a while (`peers::AvoidList`).
pub const PEERS_FILE: &str = "peers.json";

const WHAT_TO_DO: &str = "inspect or move it aside; pacfleet will not guess";

/// What the last converged pass planned against: a digest of every input of the plan (see
/// `reconcile`), and the resolution of the host it planned for. A pass whose inputs digest the
/// same has nothing to do and skips planning; a pass whose target tree and hostname are the
/// resolution's reads no manifest and resolves nothing. Derived data: losing or damaging the
/// file costs one full read and plan, never a wrong one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConvergedInputs {
    /// sha256 of the plan's inputs, lowercase hex.
    pub key: String,
    /// When a full plan last found nothing to do with these inputs.
    pub planned_at: DateTime<Utc>,
    /// The host's resolution those inputs include.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resolved: Option<ResolvedAt>,
}

/// A host's resolution at one tree of the fleet repository: it follows from the tree's
/// manifests, the hostname and the rules of this pacfleet alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolvedAt {
    /// The tree id (hex) the manifests were read from.
    pub tree: String,
    /// The hostname resolved for.
    pub hostname: String,
    /// The pacfleet version that resolved it (another may resolve differently).
    pub pacfleet: String,
    /// What it resolved to.
    pub resolved: crate::resolve::Resolved,
}

impl ResolvedAt {
    /// The resolution, if it was made at `tree` for `hostname` by this pacfleet.
    pub fn reuse(&self, tree: &str, hostname: &str) -> Option<&crate::resolve::Resolved> {
        (self.tree == tree
            && self.hostname == hostname
            && self.pacfleet == env!("CARGO_PKG_VERSION"))
        .then_some(&self.resolved)
    }
}

/// `rollout.json`: what a host keeps between passes about its pool's changes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutRecord {
    /// The last change named: (the target commit it was named at, the change's commit), so
    /// that the next pass walks only the commits since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named: Option<(String, String)>,
    /// A change whose health check failed on this host: never applied again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed: Option<FailedChange>,
    /// The last report this host published (or tried to).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<crate::report::HostReport>,
    /// Whether `report` reached the status repository.
    #[serde(default)]
    pub pushed: bool,
    /// When the last push went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<DateTime<Utc>>,
    /// Pushes that failed, ever.
    #[serde(default)]
    pub push_failures: u64,
    /// The newest report sequence seen of each other host (replays older than it are refused).
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub seen: std::collections::BTreeMap<String, u64>,
    /// Reports refused, ever, by reason.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rejected: std::collections::BTreeMap<String, u64>,
}

/// A change this host applied and found unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedChange {
    /// The change (its rollout id).
    pub change: String,
    /// The target commit it was applied at.
    pub commit: String,
    /// When.
    pub at: DateTime<Utc>,
    /// What the health check said.
    pub failure: String,
    /// Whether the host went back to the packages it had before.
    pub rolled_back: bool,
}

/// The last state this host applied. Stored in `state.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedState {
    /// Commit id of the applied fleet state.
    pub commit: String,
    /// Tree id of that commit (bound into the signature statement).
    pub tree: String,
    /// Sequence number from the signature statement; later states must not be lower.
    pub sequence: u64,
    /// The pool's pinned generation, if it had one.
    pub generation: Option<u32>,
    /// The pool this host was in.
    pub pool: String,
    pub applied_at: DateTime<Utc>,
    /// Fleet name from `fleet.yaml`.
    pub fleet: String,
    /// Names of the keys that signed it.
    #[serde(default)]
    pub signers: Vec<String>,
    /// fleet.yaml `keys:` in force after it (name, base64 key), if it listed any.
    #[serde(default)]
    pub keys: Option<Vec<(String, String)>>,
    /// The keys that accepted it (see `trust::Anchor::accepted_by`).
    #[serde(default)]
    pub accepted_by: Option<Vec<(String, String)>>,
}

impl AppliedState {
    /// What trust verification builds on.
    pub fn anchor(&self) -> crate::trust::Anchor {
        crate::trust::Anchor {
            commit: self.commit.clone(),
            sequence: self.sequence,
            fleet: self.fleet.clone(),
            keys: self.keys.clone(),
            accepted_by: self.accepted_by.clone(),
        }
    }
}

/// How a pass ended, as recorded in `status.json`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PassOutcome {
    /// Nothing to do: the host matches its target.
    Converged,
    /// Changes were applied.
    Applied,
    /// Something went wrong (fetch, resolve, transaction…).
    Failed,
    /// The target was not trusted (signature, sequence, ancestry): nothing applied.
    Refused,
    /// Changes are due but were not applied (outside the window, pool paused, dry run).
    Pending,
    /// Changes were applied, but something went wrong on the way without failing the
    /// transaction (a scriptlet or hook failed): see `warnings`.
    AppliedWithWarnings,
    /// Nothing else to do, but the host's IgnorePkg/IgnoreGroup hold packages back from what
    /// the fleet asks: see `held`. Never "converged".
    Held,
    /// No pool of the fleet selects this host (a hostname typo, a pool removed): pacfleet
    /// manages nothing on it. A pass that worked, but not a state to show as healthy.
    NotInFleet,
}

impl PassOutcome {
    /// Every outcome, in the order the metrics list them.
    pub const ALL: [PassOutcome; 8] = [
        PassOutcome::Converged,
        PassOutcome::Applied,
        PassOutcome::AppliedWithWarnings,
        PassOutcome::Held,
        PassOutcome::NotInFleet,
        PassOutcome::Pending,
        PassOutcome::Failed,
        PassOutcome::Refused,
    ];

    /// The outcome as `status.json` and the metrics' `outcome` label spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            PassOutcome::Converged => "converged",
            PassOutcome::Applied => "applied",
            PassOutcome::Failed => "failed",
            PassOutcome::Refused => "refused",
            PassOutcome::Pending => "pending",
            PassOutcome::AppliedWithWarnings => "applied-with-warnings",
            PassOutcome::Held => "held",
            PassOutcome::NotInFleet => "not-in-fleet",
        }
    }

    /// Whether the pass did its job (for `last_success`, `pacfleet_up` and `status`):
    /// everything but a failure or a refusal. The one place this rule is written.
    pub fn succeeded(self) -> bool {
        !matches!(self, PassOutcome::Failed | PassOutcome::Refused)
    }

    /// Whether the pass left the host as the fleet wants it (or the fleet does not want it
    /// at all), as far as a pass can: what IgnorePkg holds stays held until the host's admin
    /// lets go. Changes found after such a pass are drift (the agent's drift watch).
    pub fn settled(self) -> bool {
        matches!(
            self,
            PassOutcome::Converged
                | PassOutcome::Applied
                | PassOutcome::AppliedWithWarnings
                | PassOutcome::Held
                | PassOutcome::NotInFleet
        )
    }

    /// Whether the pass changed packages.
    pub fn applied(self) -> bool {
        matches!(
            self,
            PassOutcome::Applied | PassOutcome::AppliedWithWarnings
        )
    }
}

impl std::fmt::Display for PassOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a pass failed or was refused: the short stable label of `status.json`'s `failure`, the
/// metrics' `reason` label and `fleetctl status`. An interface dashboards and alerts depend
/// on (README.md, "Status, waybar and Prometheus", lists [`FailureReason::ALL`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailureReason {
    /// Fetching the fleet repository failed.
    Fetch,
    /// Reading the fetched commit failed.
    Read,
    /// The target commit's manifests are invalid.
    Invalid,
    /// The host could not be resolved (two pools match it) or its window evaluated.
    Resolve,
    /// libalpm (planning, the package database) failed.
    System,
    /// pacman's lock, or a running transaction of another pass, kept the pass out.
    Locked,
    /// The package transaction failed.
    Apply,
    /// The state directory or the anchor file could not be used.
    State,
    /// agent.yaml's trust configuration is unusable (no or unreadable `trusted_keys`).
    Config,
    /// The trust rules refused the fleet state.
    Refused,
    /// A stop signal ended the pass before its transaction.
    Stopped,
    /// The pool's health check failed after applying.
    Health,
}

impl FailureReason {
    /// Every reason, in the order the metrics and README.md list them.
    pub const ALL: [FailureReason; 12] = [
        FailureReason::Fetch,
        FailureReason::Read,
        FailureReason::Invalid,
        FailureReason::Resolve,
        FailureReason::System,
        FailureReason::Locked,
        FailureReason::Apply,
        FailureReason::State,
        FailureReason::Config,
        FailureReason::Refused,
        FailureReason::Stopped,
        FailureReason::Health,
    ];

    /// The label, as `status.json` and the metrics spell it (serde writes the same).
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::Fetch => "fetch",
            FailureReason::Read => "read",
            FailureReason::Invalid => "invalid",
            FailureReason::Resolve => "resolve",
            FailureReason::System => "system",
            FailureReason::Locked => "locked",
            FailureReason::Apply => "apply",
            FailureReason::State => "state",
            FailureReason::Config => "config",
            FailureReason::Refused => "refused",
            FailureReason::Stopped => "stopped",
            FailureReason::Health => "health",
        }
    }
}

impl std::fmt::Display for FailureReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The result of the last pass, written after every pass. Stored in `status.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassStatus {
    pub at: DateTime<Utc>,
    pub outcome: PassOutcome,
    /// Human explanation: the error, the reason for pending, etc.
    #[serde(default)]
    pub message: Option<String>,
    /// Changes the host still needs to converge (0 when converged or just applied).
    #[serde(default)]
    pub pending_changes: usize,
    /// The signed commit the pass aimed at, if it got that far.
    #[serde(default)]
    pub target_commit: Option<String>,
    /// When the target's signature statement expires (after that the host reports stale).
    #[serde(default)]
    pub signed_until: Option<DateTime<Utc>>,
    /// When the pool's window next opens, if changes wait for it (RFC 3339, local time).
    #[serde(default)]
    pub next_window: Option<String>,
    /// Packages changed outside pacfleet since it last converged (set by `fleetctl agent`'s
    /// drift watch; cleared when a pass converges).
    #[serde(default)]
    pub drift: Vec<String>,
    /// Unsigned commits newer than the target, waiting for a signature.
    #[serde(default)]
    pub waiting_for_signature: usize,
    /// Wall time of the pass in milliseconds.
    #[serde(default)]
    pub duration_ms: u64,
    /// Why the pass failed, as a short stable label for metrics (`fetch`, `invalid`,
    /// `resolve`, `system`, `apply`, `locked`, `state`, `refused`, …); `None` unless failed or
    /// refused.
    #[serde(default)]
    pub failure: Option<FailureReason>,
    /// When a pass last ended converged, applied or pending; kept by failed and refused passes,
    /// so it says since when this host has been stale.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// Packages the host's IgnorePkg/IgnoreGroup hold back (`name installed -> wanted held by
    /// IgnorePkg`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// What went wrong without failing the pass (failed scriptlets and hooks).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// `.pacnew`/`.pacsave` files the last transaction wrote (merge them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub config_files: Vec<String>,
    /// The host's place in its pool's rollout, when the pool has `rollout:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutStatus>,
    /// The running kernel's modules are gone (a kernel upgrade): the host needs a reboot.
    #[serde(default)]
    pub needs_reboot: bool,
    /// Whether the last health check passed, when the pass ran one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_ok: Option<bool>,
    /// The host's report in the status repository, when agent.yaml has `status_repo:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<ReportStatus>,
    /// Package files the pass downloaded, by source (peers, upstream), or ahead of the window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloads: Option<crate::peers::Downloads>,
}

/// A host's place in its pool's rollout, as `status.json` and the metrics show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutStatus {
    /// The pool.
    pub pool: String,
    /// The host's wave (its name).
    pub wave: String,
    /// Its index, from 0.
    pub index: usize,
    /// How many waves the rollout has.
    pub of: usize,
    /// The pool's current change (its rollout id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub change: Option<String>,
    /// The change waits for an earlier wave or a soak time.
    #[serde(default)]
    pub waiting: bool,
    /// The rollout halted: more hosts failed than the budget allows.
    #[serde(default)]
    pub halted: bool,
}

/// The host's report in the status repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportStatus {
    /// Whether the newest report reached the status repository.
    pub pushed: bool,
    /// When a push last went through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pushed_at: Option<DateTime<Utc>>,
    /// Why the last push failed (it is retried by the next pass).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Pushes that failed, ever.
    #[serde(default)]
    pub push_failures: u64,
    /// Other hosts' reports this host refused, ever, by reason.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub rejected: std::collections::BTreeMap<String, u64>,
}

/// How a changeset ended, as recorded in `history.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HistoryOutcome {
    Applied,
    /// Applied; a scriptlet or hook failed on the way (the entry's `notices.warnings`).
    AppliedWithWarnings,
    Failed,
    Refused,
    DryRun,
    /// The pass died (or could not record its outcome) during its package transaction; a
    /// later pass found its `transaction.json` and recovered.
    Interrupted,
    /// The pool's health check failed after applying, and this transaction put back the
    /// packages the host had before.
    RolledBack,
}

/// One line of `history.jsonl`: a pass that changed or tried to change something.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub at: DateTime<Utc>,
    pub commit: String,
    /// Key id (or name) of the signer(s) of the applied state.
    #[serde(default)]
    pub signer: Option<String>,
    pub pool: String,
    #[serde(default)]
    pub generation: Option<u32>,
    pub changes: Vec<Change>,
    pub outcome: HistoryOutcome,
    #[serde(default)]
    pub error: Option<String>,
    pub duration_ms: u64,
    /// What the transaction reported: policy answers, `.pacnew`/`.pacsave` files, scriptlet
    /// output and warnings.
    #[serde(default, skip_serializing_if = "Notices::is_empty")]
    pub notices: Notices,
    /// Packages IgnorePkg/IgnoreGroup held back in this pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
    /// The package files this transaction took, by source: those the pass downloaded ahead
    /// (peers first; counted with the pass's first transaction) and those libalpm downloaded
    /// in its commit. Absent when it downloaded nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub downloads: Option<crate::peers::Downloads>,
}

/// `transaction.json`: written just before pacfleet commits a libalpm transaction, while it
/// holds pacman's lock, and removed once the outcome is recorded. Finding it at the start of a
/// pass means the pass that wrote it died in the transaction or before recording its outcome;
/// it names that process exactly (pid, start time, boot) and the lock file it held, so the
/// next pass can prove a stale `db.lck` is its own before removing it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TransactionMarker {
    /// The process that ran the transaction.
    pub pid: u32,
    /// Its start time: clock ticks after boot (`/proc/<pid>/stat` field 22).
    pub start_time: u64,
    /// `/proc/sys/kernel/random/boot_id` while it ran.
    pub boot_id: String,
    /// pacman's lock file, held by that process.
    pub lockfile: PathBuf,
    /// The lock file's identity while it was held ([`lock_identity`]): a lock removed and
    /// created again, even with a reused inode number, has another.
    pub lock_id: String,
    /// What the pass was applying.
    pub commit: String,
    pub pool: String,
    #[serde(default)]
    pub generation: Option<u32>,
    pub started_at: DateTime<Utc>,
    pub changes: Vec<Change>,
}

/// What identifies one lock file: device, inode and modification time to the nanosecond
/// (libalpm creates `db.lck` empty and never writes it, so its mtime is its creation time).
pub fn lock_identity(meta: &std::fs::Metadata) -> String {
    use std::os::unix::fs::MetadataExt;
    format!(
        "{}:{}:{}.{:09}",
        meta.dev(),
        meta.ino(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

/// This process as `transaction.json` records it: (pid, start time, boot id).
pub fn this_process() -> (u32, u64, String) {
    let pid = std::process::id();
    (pid, process_start_time(pid).unwrap_or(0), boot_id())
}

/// Whether the process a marker names is still running: same boot, same pid, same start time
/// (a reused pid has another start time; after a reboot nothing of the old boot runs).
pub fn process_alive(pid: u32, start_time: u64, boot: &str) -> bool {
    boot_id() == boot && process_start_time(pid) == Some(start_time)
}

fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // `pid (comm) state …`: comm may hold spaces and parentheses, so split at the last ')'.
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

/// `history.jsonl` read as far as it is valid.
#[derive(Debug)]
pub struct HistoryPrefix {
    /// Every entry before the first corrupt line (all of them if none is corrupt).
    pub entries: Vec<HistoryEntry>,
    /// The first corrupt line, if any ([`StateError::CorruptHistory`]); later lines were not read.
    pub corrupt: Option<StateError>,
}

/// Why the state directory could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{} exists but is not a directory; pacfleet needs it as its state_dir: move it aside or set `state_dir` in agent.yaml", path.display())]
    NotADirectory { path: PathBuf },

    #[error(
        "{} is a symbolic link; pacfleet opens its state files only directly, never through a link (it could point anywhere): remove it (`rm {}`), find out who made it, and retry",
        path.display(), path.display()
    )]
    Symlink { path: PathBuf },

    #[error(
        "refusing the state directory {}: {detail}. Whoever can change it can make root overwrite files of their choice; fix it with `chown root: {} && chmod 0711 {}` (and make its parent writable only by root), or set `state_dir` in agent.yaml to such a directory",
        dir.display(), dir.display(), dir.display()
    )]
    Insecure {
        /// The directory that failed the check (the state dir or its parent).
        path: PathBuf,
        /// The state dir, for the fix.
        dir: PathBuf,
        detail: String,
    },

    /// The state dir is root's (a host's, as it should be) and fleetctl runs as another user.
    #[error(
        "the state directory {} belongs to root and fleetctl runs as uid {uid}: run this command as root (sudo); a host's state is read and written only by root",
        dir.display()
    )]
    NotRoot {
        /// The state dir.
        dir: PathBuf,
        /// The user fleetctl runs as.
        uid: u32,
    },

    #[error("{} is corrupt ({detail}); {WHAT_TO_DO}", path.display())]
    Corrupt { path: PathBuf, detail: String },

    #[error(
        "{} has format {found}, but this pacfleet reads format {STATE_FORMAT}; it was written by another pacfleet version: run that version, or {WHAT_TO_DO}",
        path.display()
    )]
    UnsupportedFormat { path: PathBuf, found: String },

    #[error(
        "{}:{line}: corrupt history entry ({detail}); fix or delete that line (history is append-only; pacfleet will not guess)",
        path.display()
    )]
    CorruptHistory {
        path: PathBuf,
        line: usize,
        detail: String,
    },

    #[error(
        "another fleetctl pass ({}) is running: {} is locked; wait for it to finish",
        pid.map(|p| format!("pid {p}")).unwrap_or_else(|| "pid unknown".to_owned()),
        path.display()
    )]
    Locked { path: PathBuf, pid: Option<u32> },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StateError {
    let path = path.to_path_buf();
    move |source| {
        if source.raw_os_error() == Some(libc::ELOOP) {
            // O_NOFOLLOW met a symbolic link as the last component.
            return StateError::Symlink { path };
        }
        StateError::Io {
            action,
            path,
            source,
        }
    }
}

/// Checks `parent`, a directory holding the state dir `dir` (or where it is to be created):
/// owned by the running user or root, and not writable by group or others unless sticky.
fn check_holder(dir: &Path, parent: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let insecure = |detail: String| StateError::Insecure {
        path: parent.to_path_buf(),
        dir: dir.to_path_buf(),
        detail,
    };
    let meta = std::fs::metadata(parent).map_err(io_err("inspect", parent))?;
    if meta.uid() != euid() && meta.uid() != 0 {
        return Err(insecure(format!(
            "its parent {} is owned by uid {}, who could replace it",
            parent.display(),
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        return Err(insecure(format!(
            "its parent {} is writable by group or others without the sticky bit (mode {:04o}), so they could replace it",
            parent.display(),
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// `O_NOFOLLOW` on `opts`: opening a symbolic link fails (ELOOP, [`StateError::Symlink`]).
fn no_follow(opts: &mut OpenOptions) -> &mut OpenOptions {
    opts.custom_flags(libc::O_NOFOLLOW)
}

/// The effective user id of this process.
pub fn euid() -> u32 {
    // SAFETY: geteuid has no preconditions, cannot fail and touches no memory of ours.
    unsafe { libc::geteuid() }
}

/// Checks that `dir` (an existing directory) is safe to keep root's state in: owned by the
/// running user and writable by nobody else; its parent (where `dir` could be renamed or
/// replaced) owned by the running user or root and not writable by group or others unless
/// sticky. `dir` is checked as it resolves (a state dir may be a link to another disk); when
/// it is a link, the directory holding the link is checked too.
pub fn check_private_dir(dir: &Path) -> Result<(), StateError> {
    use std::os::unix::fs::MetadataExt;
    let me = euid();
    let insecure = |path: &Path, detail: String| StateError::Insecure {
        path: path.to_path_buf(),
        dir: dir.to_path_buf(),
        detail,
    };
    let real = std::fs::canonicalize(dir).map_err(io_err("resolve", dir))?;
    let meta = std::fs::metadata(&real).map_err(io_err("inspect", &real))?;
    if meta.uid() == 0 && me != 0 {
        return Err(StateError::NotRoot {
            dir: dir.to_path_buf(),
            uid: me,
        });
    }
    if meta.uid() != me {
        return Err(insecure(
            &real,
            format!(
                "it is owned by uid {}, but fleetctl runs as uid {me}",
                meta.uid()
            ),
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(insecure(
            &real,
            format!(
                "it is writable by {} (mode {:04o})",
                if meta.mode() & 0o002 != 0 {
                    "others"
                } else {
                    "its group"
                },
                meta.mode() & 0o7777
            ),
        ));
    }
    let mut parents = vec![real.parent().map(Path::to_path_buf)];
    if std::fs::symlink_metadata(dir).is_ok_and(|m| m.file_type().is_symlink()) {
        let holder = dir
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        parents.push(std::fs::canonicalize(holder).ok());
    }
    for parent in parents.into_iter().flatten() {
        check_holder(dir, &parent)?;
    }
    Ok(())
}

/// Write `bytes` to `path` so that a crash leaves either the old file or the new one: a temp file
/// in the same directory is written and fsynced, renamed over `path`, and the directory fsynced.
/// The file is created mode 0600.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    write_atomic_mode(path, bytes, 0o644)
}

/// [`write_atomic`] with the file's permission bits set to `mode` before it replaces `path`.
pub fn write_atomic_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    let dir = replace_with(path, bytes, mode)?;
    sync_dir(dir)
}

/// A report every pass rewrites (see the module docs): [`write_atomic_mode`] without the
/// directory's fsync. After a crash the file is the old report or the new one, whole.
pub fn write_report(path: &Path, bytes: &[u8], mode: u32) -> Result<(), StateError> {
    replace_with(path, bytes, mode).map(drop)
}

/// Writes `bytes` to a fresh temporary file beside `path` (mode `mode`, fsynced) and renames it
/// over `path`; returns the directory, for the caller to fsync when the rename must be durable.
fn replace_with<'p>(path: &'p Path, bytes: &[u8], mode: u32) -> Result<&'p Path, StateError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    // O_CREAT|O_EXCL|O_NOFOLLOW: a fresh file of our own, never an existing one or a link.
    let mut tmp = tempfile::Builder::new()
        .prefix(&format!(".{name}."))
        .suffix(".tmp")
        .make_in(dir, |p| {
            no_follow(
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .mode(0o600),
            )
            .open(p)
        })
        .map_err(io_err("create a temporary file in", dir))?;
    tmp.write_all(bytes)
        .and_then(|()| {
            tmp.as_file()
                .set_permissions(std::fs::Permissions::from_mode(mode))
        })
        .and_then(|()| tmp.as_file().sync_all())
        .map_err(io_err("write", tmp.path()))?;
    tmp.persist(path)
        .map_err(|e| io_err("replace", path)(e.error))?;
    Ok(dir)
}

fn sync_dir(dir: &Path) -> Result<(), StateError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_err("fsync directory", dir))
}

/// Serialize `value` as a JSON object with `"format": STATE_FORMAT` added.
fn to_versioned_json<T: Serialize>(value: &T) -> Vec<u8> {
    let mut v = serde_json::to_value(value).expect("state types serialize to JSON");
    if let serde_json::Value::Object(map) = &mut v {
        map.insert("format".to_owned(), STATE_FORMAT.into());
    }
    let mut out = serde_json::to_vec_pretty(&v).expect("JSON value serializes");
    out.push(b'\n');
    out
}

/// Parse a file written by [`to_versioned_json`], checking `format` first so a newer file is
/// reported as such rather than as unknown fields.
fn from_versioned_json<T: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<T, StateError> {
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_path_buf(),
        detail,
    };
    let mut v: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
    let serde_json::Value::Object(map) = &mut v else {
        return Err(corrupt("not a JSON object".to_owned()));
    };
    match map.remove("format") {
        None => return Err(corrupt("no `format` field".to_owned())),
        Some(f) if f.as_u64() == Some(STATE_FORMAT) => {}
        Some(f) => {
            return Err(StateError::UnsupportedFormat {
                path: path.to_path_buf(),
                found: f.to_string(),
            });
        }
    }
    serde_json::from_value(v).map_err(|e| corrupt(e.to_string()))
}

/// Read `path` (never through a symbolic link: [`StateError::Symlink`]); a missing file is
/// `None`.
pub fn read_optional(path: &Path) -> Result<Option<Vec<u8>>, StateError> {
    let read = || -> std::io::Result<Vec<u8>> {
        let mut bytes = Vec::new();
        no_follow(OpenOptions::new().read(true))
            .open(path)?
            .read_to_end(&mut bytes)?;
        Ok(bytes)
    };
    match read() {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path)(e)),
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct InventoryFile {
    packages: BTreeSet<String>,
}

/// The host's state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    path: PathBuf,
}

impl StateDir {
    /// Open `path`, creating it (mode 0711: others may read `status.json` by name, not list
    /// the directory) if it does not exist.
    pub fn open(path: impl AsRef<Path>) -> Result<StateDir, StateError> {
        let path = path.as_ref().to_path_buf();
        match std::fs::metadata(&path) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => return Err(StateError::NotADirectory { path }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o711)
                    .create(&path)
                    .map_err(io_err("create state directory", &path))?;
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    sync_dir(parent)?;
                }
            }
            Err(e) => return Err(io_err("access state directory", &path)(e)),
        }
        Ok(StateDir { path })
    }

    /// [`StateDir::open`] for a pass, which writes root's state: the directory must pass
    /// [`check_private_dir`] (created ones do). Readers (`status`, `history`) use `open`.
    pub fn open_private(path: impl AsRef<Path>) -> Result<StateDir, StateError> {
        let path = path.as_ref();
        if std::fs::symlink_metadata(path).is_err() {
            // Not there yet: it is created only in a directory nobody else can change.
            if let Some(holder) = path.ancestors().skip(1).find(|a| a.is_dir()) {
                let holder = std::fs::canonicalize(holder).map_err(io_err("resolve", holder))?;
                check_holder(path, &holder)?;
            }
        }
        let state = StateDir::open(path)?;
        check_private_dir(&state.path)?;
        Ok(state)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn applied_path(&self) -> PathBuf {
        self.path.join(APPLIED_FILE)
    }
    pub fn inventory_path(&self) -> PathBuf {
        self.path.join(INVENTORY_FILE)
    }
    pub fn status_path(&self) -> PathBuf {
        self.path.join(STATUS_FILE)
    }
    pub fn history_path(&self) -> PathBuf {
        self.path.join(HISTORY_FILE)
    }
    pub fn transaction_path(&self) -> PathBuf {
        self.path.join(TRANSACTION_FILE)
    }

    /// The marker of an unfinished transaction, if a pass left one.
    /// Every package name in it follows the manifest's name rule and every version is an Arch
    /// version, or it is [`StateError::Corrupt`]: they are joined into database paths.
    pub fn load_transaction(&self) -> Result<Option<TransactionMarker>, StateError> {
        let path = self.transaction_path();
        let Some(marker) = read_optional(&path)?
            .map(|b| from_versioned_json::<TransactionMarker>(&path, &b))
            .transpose()?
        else {
            return Ok(None);
        };
        for c in &marker.changes {
            let bad = crate::manifest::Name::new(&c.name)
                .err()
                .map(|e| format!("package {e}"))
                .or_else(|| {
                    [&c.old, &c.new].into_iter().flatten().find_map(|v| {
                        crate::manifest::check_version(v)
                            .err()
                            .map(|e| format!("version `{v}` of `{}`: {e}", c.name))
                    })
                });
            if let Some(detail) = bad {
                return Err(StateError::Corrupt { path, detail });
            }
        }
        Ok(Some(marker))
    }

    /// Writes the marker (atomically) before a transaction is committed. Failing here stops the
    /// pass before any package is touched: nothing is installed that could not be recorded.
    pub fn begin_transaction(&self, marker: &TransactionMarker) -> Result<(), StateError> {
        write_atomic(&self.transaction_path(), &to_versioned_json(marker))
    }

    /// Removes the marker once the transaction's outcome is recorded.
    pub fn end_transaction(&self) -> Result<(), StateError> {
        self.remove(&self.transaction_path())
    }

    /// Removes a file of the state directory, durably; a missing file is already removed.
    fn remove(&self, path: &Path) -> Result<(), StateError> {
        match std::fs::remove_file(path) {
            Ok(()) => sync_dir(&self.path),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", path)(e)),
        }
    }

    /// The inputs of the last converged plan; `None` when there is none or it cannot be read
    /// (then the pass plans in full, which is always correct).
    pub fn load_converged(&self) -> Option<ConvergedInputs> {
        let path = self.path.join(CONVERGED_FILE);
        match read_optional(&path)
            .and_then(|b| b.map(|b| from_versioned_json(&path, &b)).transpose())
        {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!("ignoring {}: {e}", path.display());
                None
            }
        }
    }

    /// What this host remembers of its rollouts; empty when there is no (readable) record:
    /// losing it costs a walk of the history and one report pushed again.
    pub fn load_rollout(&self) -> RolloutRecord {
        let path = self.path.join(ROLLOUT_FILE);
        match read_optional(&path)
            .and_then(|b| b.map(|b| from_versioned_json(&path, &b)).transpose())
        {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                RolloutRecord::default()
            }
        }
    }

    /// Records `rollout.json`.
    pub fn save_rollout(&self, record: &RolloutRecord) -> Result<(), StateError> {
        write_atomic(&self.path.join(ROLLOUT_FILE), &to_versioned_json(record))
    }

    /// The peers avoided for a while (`peers.json`); a missing or unreadable file avoids none.
    pub fn load_avoided(&self) -> crate::peers::AvoidList {
        let path = self.path.join(PEERS_FILE);
        match read_optional(&path)
            .and_then(|b| b.map(|b| from_versioned_json(&path, &b)).transpose())
        {
            Ok(r) => r.unwrap_or_default(),
            Err(e) => {
                tracing::warn!("ignoring {}: {e}", path.display());
                crate::peers::AvoidList::default()
            }
        }
    }

    /// Records `peers.json`.
    pub fn save_avoided(&self, list: &crate::peers::AvoidList) -> Result<(), StateError> {
        write_atomic(&self.path.join(PEERS_FILE), &to_versioned_json(list))
    }

    pub fn save_converged(&self, inputs: &ConvergedInputs) -> Result<(), StateError> {
        write_atomic(&self.path.join(CONVERGED_FILE), &to_versioned_json(inputs))
    }

    /// Forgets the last converged plan's inputs (before anything changes the system).
    pub fn clear_converged(&self) -> Result<(), StateError> {
        self.remove(&self.path.join(CONVERGED_FILE))
    }

    pub fn lock_path(&self) -> PathBuf {
        self.path.join(LOCK_FILE)
    }

    /// The last applied state; `None` if this host never applied one.
    pub fn load_applied(&self) -> Result<Option<AppliedState>, StateError> {
        let path = self.applied_path();
        read_optional(&path)?
            .map(|b| from_versioned_json(&path, &b))
            .transpose()
    }

    pub fn save_applied(&self, state: &AppliedState) -> Result<(), StateError> {
        write_atomic(&self.applied_path(), &to_versioned_json(state))
    }

    /// The packages pacfleet installed. A missing file is the empty set (nothing pacfleet
    /// installed may be removed, which is the safe direction); a corrupt one is an error.
    pub fn load_inventory(&self) -> Result<BTreeSet<String>, StateError> {
        let path = self.inventory_path();
        Ok(read_optional(&path)?
            .map(|b| from_versioned_json::<InventoryFile>(&path, &b))
            .transpose()?
            .map(|f| f.packages)
            .unwrap_or_default())
    }

    pub fn save_inventory(&self, packages: &BTreeSet<String>) -> Result<(), StateError> {
        let file = InventoryFile {
            packages: packages.clone(),
        };
        write_atomic(&self.inventory_path(), &to_versioned_json(&file))
    }

    /// Record a successful apply: the inventory first, then `state.json`, so a crash in between
    /// leaves the old target (the next pass re-plans it) with an inventory that already lists
    /// what was installed.
    pub fn record_applied(
        &self,
        state: &AppliedState,
        inventory: &BTreeSet<String>,
    ) -> Result<(), StateError> {
        self.save_inventory(inventory)?;
        self.save_applied(state)
    }

    /// The status of the last pass; `None` if no pass has run yet.
    pub fn load_status(&self) -> Result<Option<PassStatus>, StateError> {
        let path = self.status_path();
        read_optional(&path)?
            .map(|b| from_versioned_json(&path, &b))
            .transpose()
    }

    pub fn save_status(&self, status: &PassStatus) -> Result<(), StateError> {
        write_report(&self.status_path(), &to_versioned_json(status), 0o644)
    }

    /// Append one entry to `history.jsonl`: opened with O_APPEND, written as one line, fsynced.
    /// If a previous append was cut short (the file does not end in a newline) the entry starts
    /// on a new line, leaving the torn line for the reader to report.
    pub fn append_history(&self, entry: &HistoryEntry) -> Result<(), StateError> {
        let path = self.history_path();
        let mut line = serde_json::to_vec(entry).expect("history entries serialize to JSON");
        line.push(b'\n');
        let mut file = no_follow(
            OpenOptions::new()
                .read(true)
                .append(true)
                .create(true)
                .mode(0o644),
        )
        .open(&path)
        .map_err(io_err("open", &path))?;
        let len = file.metadata().map_err(io_err("stat", &path))?.len();
        if len > 0 {
            let mut last = [0u8; 1];
            file.seek(SeekFrom::Start(len - 1))
                .and_then(|_| file.read_exact(&mut last))
                .map_err(io_err("read", &path))?;
            if last[0] != b'\n' {
                line.insert(0, b'\n');
            }
        }
        file.write_all(&line)
            .and_then(|()| file.sync_data())
            .map_err(io_err("append to", &path))?;
        if len == 0 {
            sync_dir(&self.path)?;
        }
        Ok(())
    }

    /// Every history entry, oldest first. A corrupt line is an error naming the file and line.
    pub fn read_history(&self) -> Result<Vec<HistoryEntry>, StateError> {
        let prefix = self.read_history_prefix()?;
        match prefix.corrupt {
            Some(e) => Err(e),
            None => Ok(prefix.entries),
        }
    }

    /// The history entries up to the first corrupt line, and that line's error, for showing what
    /// can be shown with a warning. Only I/O errors fail.
    pub fn read_history_prefix(&self) -> Result<HistoryPrefix, StateError> {
        let path = self.history_path();
        let bytes = read_optional(&path)?.unwrap_or_default();
        let mut entries = Vec::new();
        for (i, line) in bytes.split(|b| *b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<HistoryEntry>(line) {
                Ok(e) => entries.push(e),
                Err(e) => {
                    return Ok(HistoryPrefix {
                        entries,
                        corrupt: Some(StateError::CorruptHistory {
                            path,
                            line: i + 1,
                            detail: e.to_string(),
                        }),
                    });
                }
            }
        }
        Ok(HistoryPrefix {
            entries,
            corrupt: None,
        })
    }

    /// Take the pass lock (non-blocking flock on `pass.lock`), so two `fleetctl` passes never
    /// run on one state dir at once. Held until the returned [`PassLock`] is dropped.
    pub fn lock_pass(&self) -> Result<PassLock, StateError> {
        lock_file(self.lock_path())
    }
}

/// Takes a non-blocking flock on `path` (created if missing) and writes our pid into it; the
/// error names the holder's pid. Used for the pass lock of a state dir and of a root.
pub fn lock_file(path: PathBuf) -> Result<PassLock, StateError> {
    // No truncate: until we hold the lock, the pid in the file is the holder's.
    let mut file = no_follow(
        OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o600),
    )
    .open(&path)
    .map_err(io_err("open", &path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            return Err(StateError::Locked {
                pid: text.trim().parse().ok(),
                path,
            });
        }
        Err(std::fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
    }
    file.set_len(0)
        .and_then(|()| file.seek(SeekFrom::Start(0)))
        .and_then(|_| writeln!(file, "{}", std::process::id()))
        .and_then(|()| file.sync_data())
        .map_err(io_err("write pid to", &path))?;
    Ok(PassLock { file, path })
}

/// The held pass lock; released (and the pid cleared) on drop.
#[derive(Debug)]
pub struct PassLock {
    file: File,
    path: PathBuf,
}

impl PassLock {
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for PassLock {
    fn drop(&mut self) {
        // Best effort: the lock itself goes away with the file description.
        let _ = self.file.set_len(0);
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn applied() -> AppliedState {
        AppliedState {
            commit: "c0ffee".into(),
            tree: "7ree".into(),
            sequence: 7,
            signers: vec!["ops".into()],
            keys: None,
            accepted_by: None,
            generation: Some(3),
            pool: "workstations".into(),
            applied_at: "2026-11-20T09:00:00Z".parse().unwrap(),
            fleet: "acme".into(),
        }
    }

    fn entry(name: &str) -> HistoryEntry {
        HistoryEntry {
            at: "2026-11-20T08:00:00Z".parse().unwrap(),
            commit: "c0ffee".into(),
            signer: Some("RWQ…".into()),
            pool: "workstations".into(),
            generation: None,
            changes: vec![
                Change::new(crate::plan::Action::Install, name, None, Some("1.0-1")),
                Change::new(crate::plan::Action::MarkDependency, "libfoo", None, None),
            ],
            outcome: HistoryOutcome::DryRun,
            error: None,
            duration_ms: 42,
            notices: Default::default(),
            held: Vec::new(),
            downloads: None,
        }
    }

    fn state() -> (tempfile::TempDir, StateDir) {
        let d = tempfile::tempdir().unwrap();
        let s = StateDir::open(d.path().join("state")).unwrap();
        (d, s)
    }

    #[test]
    fn missing_state_dir_is_created_0711() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("a/b/pacfleet");
        let s = StateDir::open(&p).unwrap();
        assert_eq!(s.path(), p);
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o711);
        // Opening again is fine.
        StateDir::open(&p).unwrap();
        // A file in the way is an error.
        let f = d.path().join("file");
        std::fs::write(&f, "").unwrap();
        assert!(matches!(
            StateDir::open(&f),
            Err(StateError::NotADirectory { .. })
        ));
    }

    #[test]
    fn atomic_write_round_trip() {
        let (_d, s) = state();
        let p = s.path().join("x");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(s.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temp files left behind");
    }

    #[test]
    fn labels_are_what_serde_writes_and_all_lists_each_once() {
        for r in FailureReason::ALL {
            assert_eq!(serde_json::to_value(r).unwrap(), r.as_str());
            let back: FailureReason = serde_json::from_value(r.as_str().into()).unwrap();
            assert_eq!(back, r);
        }
        let distinct: BTreeSet<_> = FailureReason::ALL.iter().collect();
        assert_eq!(distinct.len(), FailureReason::ALL.len());
        for o in PassOutcome::ALL {
            assert_eq!(serde_json::to_value(o).unwrap(), o.as_str());
        }
        let distinct: BTreeSet<_> = PassOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(distinct.len(), PassOutcome::ALL.len());
    }

    #[test]
    fn applied_round_trip() {
        let (_d, s) = state();
        assert_eq!(s.load_applied().unwrap(), None);
        s.save_applied(&applied()).unwrap();
        assert_eq!(s.load_applied().unwrap(), Some(applied()));
        let text = std::fs::read_to_string(s.applied_path()).unwrap();
        assert!(text.contains("\"format\": 1"), "{text}");
        assert!(
            text.contains("\"applied_at\": \"2026-11-20T09:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn corrupt_applied_is_an_error_and_untouched() {
        let (_d, s) = state();
        for bad in [
            &b"{\"format\": 1, \"commit\": "[..],
            b"[]",
            b"{\"commit\": \"x\"}",
            b"{\"format\": 1, \"commit\": \"x\"}",
        ] {
            std::fs::write(s.applied_path(), bad).unwrap();
            let e = s.load_applied().unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(msg.contains("state.json"), "{msg}");
            assert!(msg.contains("move it aside"), "{msg}");
            assert_eq!(std::fs::read(s.applied_path()).unwrap(), bad);
        }
        // Unknown fields are not silently dropped.
        let mut v =
            serde_json::from_slice::<serde_json::Value>(&to_versioned_json(&applied())).unwrap();
        v["sequnce"] = 9.into();
        std::fs::write(s.applied_path(), v.to_string()).unwrap();
        let e = s.load_applied().unwrap_err();
        assert!(e.to_string().contains("sequnce"), "{e}");
    }

    #[test]
    fn other_format_is_refused() {
        let (_d, s) = state();
        std::fs::write(s.applied_path(), "{\"format\": 2, \"new\": true}").unwrap();
        let e = s.load_applied().unwrap_err();
        assert!(
            matches!(&e, StateError::UnsupportedFormat { found, .. } if found == "2"),
            "{e:?}"
        );
    }

    #[test]
    fn inventory_round_trip_and_corruption() {
        let (_d, s) = state();
        assert!(s.load_inventory().unwrap().is_empty());
        let inv: BTreeSet<String> = ["firefox", "base"].map(String::from).into();
        s.save_inventory(&inv).unwrap();
        assert_eq!(s.load_inventory().unwrap(), inv);
        std::fs::write(s.inventory_path(), "{\"format\":1,\"packages\":[1]}").unwrap();
        let e = s.load_inventory().unwrap_err();
        assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
        assert!(e.to_string().contains("inventory.json"));

        s.record_applied(&applied(), &inv).unwrap();
        assert_eq!(s.load_inventory().unwrap(), inv);
        assert_eq!(s.load_applied().unwrap(), Some(applied()));
    }

    #[test]
    fn status_round_trip() {
        let (_d, s) = state();
        assert_eq!(s.load_status().unwrap(), None);
        let st = PassStatus {
            at: "2026-11-20T09:00:00Z".parse().unwrap(),
            outcome: PassOutcome::Pending,
            message: Some("outside the maintenance window".into()),
            pending_changes: 3,
            target_commit: Some("c0ffee".into()),
            signed_until: None,
            next_window: None,
            drift: Vec::new(),
            waiting_for_signature: 0,
            duration_ms: 0,
            failure: None,
            last_success: None,
            held: Vec::new(),
            warnings: Vec::new(),
            config_files: Vec::new(),
            rollout: None,
            needs_reboot: false,
            health_ok: None,
            report: None,
            downloads: None,
        };
        s.save_status(&st).unwrap();
        assert_eq!(s.load_status().unwrap(), Some(st));
        let text = std::fs::read_to_string(s.status_path()).unwrap();
        assert!(text.contains("\"outcome\": \"pending\""), "{text}");
    }

    #[test]
    fn history_downloads_are_optional_and_read_back() {
        let plain = serde_json::to_string(&entry("a")).unwrap();
        assert!(!plain.contains("downloads"), "{plain}");
        let mut e = entry("a");
        e.downloads = Some(crate::peers::Downloads {
            peer_files: 2,
            peer_bytes: 2048,
            upstream_files: 1,
            upstream_bytes: 10,
            ..Default::default()
        });
        let (_d, s) = state();
        s.append_history(&e).unwrap();
        s.append_history(&entry("b")).unwrap();
        assert_eq!(s.read_history().unwrap(), vec![e, entry("b")]);
    }

    #[test]
    fn history_append_and_read() {
        let (_d, s) = state();
        assert!(s.read_history().unwrap().is_empty());
        s.append_history(&entry("a")).unwrap();
        s.append_history(&entry("b")).unwrap();
        let got = s.read_history().unwrap();
        assert_eq!(got, vec![entry("a"), entry("b")]);
        let text = std::fs::read_to_string(s.history_path()).unwrap();
        assert_eq!(text.lines().count(), 2);
        assert!(text.contains("\"action\":\"mark-dependency\""), "{text}");
        assert!(text.contains("\"outcome\":\"dry-run\""), "{text}");
    }

    #[test]
    fn corrupt_history_line_is_reported_and_prefix_readable() {
        let (_d, s) = state();
        s.append_history(&entry("a")).unwrap();
        // A torn append: no trailing newline.
        let mut f = OpenOptions::new()
            .append(true)
            .open(s.history_path())
            .unwrap();
        f.write_all(b"{\"at\":\"2026-").unwrap();
        drop(f);
        s.append_history(&entry("c")).unwrap();

        let e = s.read_history().unwrap_err();
        match &e {
            StateError::CorruptHistory { line, path, .. } => {
                assert_eq!(*line, 2);
                assert_eq!(path, &s.history_path());
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(e.to_string().contains("history.jsonl:2:"), "{e}");

        let prefix = s.read_history_prefix().unwrap();
        assert_eq!(prefix.entries, vec![entry("a")]);
        assert!(matches!(
            prefix.corrupt,
            Some(StateError::CorruptHistory { line: 2, .. })
        ));
        // The entry appended after the torn line is on its own line.
        let text = std::fs::read_to_string(s.history_path()).unwrap();
        assert_eq!(text.lines().count(), 3);
    }

    #[test]
    fn state_dirs_others_can_change_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("state");
        StateDir::open_private(&dir).unwrap();
        let chmod = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        for (mode, expect) in [
            (0o777, "writable by others"),
            (0o770, "writable by its group"),
        ] {
            chmod(&dir, mode);
            let e = StateDir::open_private(&dir).unwrap_err();
            let msg = e.to_string();
            assert!(matches!(e, StateError::Insecure { .. }), "{e:?}");
            assert!(msg.contains(expect), "{msg}");
            assert!(
                msg.contains(&format!("chown root: {0} && chmod 0711 {0}", dir.display())),
                "{msg}"
            );
        }
        chmod(&dir, 0o711);
        // The parent: writable by others only with the sticky bit (as /tmp).
        chmod(d.path(), 0o777);
        let e = StateDir::open_private(&dir).unwrap_err();
        assert!(e.to_string().contains("without the sticky bit"), "{e}");
        // Nor is a missing one created in such a parent.
        let e = StateDir::open_private(d.path().join("new/state")).unwrap_err();
        assert!(e.to_string().contains("without the sticky bit"), "{e}");
        assert!(!d.path().join("new").exists());
        chmod(d.path(), 0o1777);
        StateDir::open_private(&dir).unwrap();
        chmod(d.path(), 0o700);
        // A link to a safe directory, held in an unsafe one, is refused too.
        let holder = d.path().join("open");
        std::fs::create_dir(&holder).unwrap();
        chmod(&holder, 0o777);
        std::os::unix::fs::symlink(&dir, holder.join("state")).unwrap();
        let e = StateDir::open_private(holder.join("state")).unwrap_err();
        assert!(e.to_string().contains("without the sticky bit"), "{e}");
        // Another user's directory (needs root to make).
        if euid() == 0 {
            std::os::unix::fs::chown(&dir, Some(65534), None).unwrap();
            let e = StateDir::open_private(&dir).unwrap_err();
            assert!(e.to_string().contains("owned by uid 65534"), "{e}");
            // Readers do not care.
            StateDir::open(&dir).unwrap();
        }
    }

    #[test]
    fn state_files_are_never_opened_through_a_link() {
        let (d, s) = state();
        let canary = d.path().join("canary");
        std::fs::write(&canary, "keep me").unwrap();
        for name in [LOCK_FILE, STATUS_FILE, HISTORY_FILE, APPLIED_FILE] {
            std::os::unix::fs::symlink(&canary, s.path().join(name)).unwrap();
        }
        let e = s.lock_pass().unwrap_err();
        assert!(matches!(e, StateError::Symlink { .. }), "{e:?}");
        assert!(
            e.to_string().contains("pass.lock is a symbolic link"),
            "{e}"
        );
        assert!(matches!(s.load_status(), Err(StateError::Symlink { .. })));
        assert!(matches!(s.load_applied(), Err(StateError::Symlink { .. })));
        assert!(matches!(
            s.append_history(&entry("a")),
            Err(StateError::Symlink { .. })
        ));
        // An atomic write replaces the link itself.
        s.save_applied(&applied()).unwrap();
        assert!(
            !std::fs::symlink_metadata(s.applied_path())
                .unwrap()
                .is_symlink()
        );
        assert_eq!(s.load_applied().unwrap(), Some(applied()));
        assert_eq!(std::fs::read_to_string(&canary).unwrap(), "keep me");
    }

    #[test]
    fn transaction_markers_naming_paths_are_corrupt() {
        let (_d, s) = state();
        let marker = |name: &str, version: &str| TransactionMarker {
            pid: 1,
            start_time: 1,
            boot_id: "b".into(),
            lockfile: "/var/lib/pacman/db.lck".into(),
            lock_id: "1:2:3.000000004".into(),
            commit: "c0ffee".into(),
            pool: "ws".into(),
            generation: None,
            started_at: "2026-11-20T08:00:00Z".parse().unwrap(),
            changes: vec![Change::new(
                crate::plan::Action::Install,
                name,
                None,
                Some(version),
            )],
        };
        s.begin_transaction(&marker("app", "1:1.0.r2.g3+x~4-1.1"))
            .unwrap();
        assert!(s.load_transaction().unwrap().is_some());
        for (name, version, expect) in [
            ("../../etc", "1.0-1", "must not start with"),
            ("a/b", "1.0-1", "character '/' is not allowed"),
            (
                "app",
                "1.0-1/../../../etc",
                "the pkgrel (after the last `-`) must be digits",
            ),
            ("app", "", "it is empty"),
            ("app", "..", "there is no `-pkgrel`"),
            ("app", "../x-1", "the pkgver has the character '/'"),
        ] {
            s.begin_transaction(&marker(name, version)).unwrap();
            let e = s.load_transaction().unwrap_err();
            assert!(matches!(e, StateError::Corrupt { .. }), "{e:?}");
            let msg = e.to_string();
            assert!(
                msg.contains("transaction.json") && msg.contains(expect),
                "{msg}"
            );
        }
    }

    #[test]
    fn pass_lock_excludes_a_second_handle() {
        let (_d, s) = state();
        let lock = s.lock_pass().unwrap();
        let pid = std::fs::read_to_string(s.lock_path()).unwrap();
        assert_eq!(pid.trim(), std::process::id().to_string());

        let other = StateDir::open(s.path()).unwrap();
        let e = other.lock_pass().unwrap_err();
        match &e {
            StateError::Locked { pid, .. } => assert_eq!(*pid, Some(std::process::id())),
            other => panic!("unexpected {other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("another fleetctl pass"), "{msg}");
        assert!(
            msg.contains(&format!("pid {}", std::process::id())),
            "{msg}"
        );

        drop(lock);
        let again = other.lock_pass().unwrap();
        assert_eq!(again.path(), s.lock_path());
    }
}
