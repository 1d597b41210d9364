//! A host's signed status report (docs/contract.md §6): what one host tells the fleet about its
//! last pass that changed its state. Owns the report's shape (the JSON every reader parses),
//! its bounds, and signing and verifying it with the host's minisign key. Where reports live
//! (the status repository's refs) is `status_repo`'s.
//!
//! A report is written by the host it names, and read by every other host of its pool (later
//! waves decide from it) and by `fleetctl fleet status`. Until verified it is an adversary's:
//! anyone with write access to the status repository can put bytes under any ref. So a reader
//! bounds what it reads ([`MAX_REPORT_BYTES`]), parses strictly (unknown fields refused), and
//! accepts a report only when it is signed by the key the host's manifest names (`key:` in
//! `hosts/<name>.yaml`) at the reader's own target commit, names this fleet, the ref's host
//! and pool, and is not older than one the reader already saw.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// The report format this pacfleet writes and reads.
pub const FORMAT: u32 = 1;

/// Reports larger than this are not read (a real one is a few KiB).
pub const MAX_REPORT_BYTES: usize = 256 * 1024;

/// What a host's pass left it as (docs/contract.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportOutcome {
    /// The host matches its desired state.
    Converged,
    /// The change was applied (and, with `health:`, found healthy).
    Applied,
    /// A change is due and waits: a window, a pause, or the host's rollout wave.
    Pending,
    /// Applying or the health check failed.
    Failed,
    /// The health check failed and the host went back to the packages it had before.
    RolledBack,
    /// The trust rules refused the fleet state.
    Refused,
    /// No pool selects the host.
    NotInFleet,
}

impl ReportOutcome {
    /// The word the report and `fleet status` use.
    pub fn label(self) -> &'static str {
        match self {
            ReportOutcome::Converged => "converged",
            ReportOutcome::Applied => "applied",
            ReportOutcome::Pending => "pending",
            ReportOutcome::Failed => "failed",
            ReportOutcome::RolledBack => "rolled-back",
            ReportOutcome::Refused => "refused",
            ReportOutcome::NotInFleet => "not-in-fleet",
        }
    }

    /// Whether the host succeeded on its change (what a later wave waits for).
    pub fn succeeded(self) -> bool {
        matches!(self, ReportOutcome::Converged | ReportOutcome::Applied)
    }

    /// Whether the host failed its change (what the failure budget counts).
    pub fn failed(self) -> bool {
        matches!(self, ReportOutcome::Failed | ReportOutcome::RolledBack)
    }
}

/// The result of the pool's `health.commands` after applying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Every command exited 0 within the timeout.
    pub passed: bool,
    /// The first failing command and what it said (bounded), when one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One host's report of its last pass that changed its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// [`FORMAT`].
    pub format: u32,
    /// The fleet (fleet.yaml `name:`).
    pub fleet: String,
    /// The reporting host.
    pub host: String,
    /// Its pool.
    pub pool: String,
    /// Its wave in the pool's rollout (0 without `rollout:`).
    pub wave: usize,
    /// The change the host worked on: the commit that made the pool's desired state what it is
    /// at `target` (the rollout id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// The signed commit the pass aimed at.
    pub target: String,
    /// The commit whose state the host has applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The pool's generation at `target`, if pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// What the pass left the host as.
    pub outcome: ReportOutcome,
    /// Why a pending host waits, or why it failed (plain text, bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The health check after applying, when the pool has `health:` and the pass applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Changes made outside pacfleet (`action name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    /// Packages this host's IgnorePkg/IgnoreGroup hold back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// Scriptlet and hook warnings of the pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The running kernel's modules are gone (a kernel upgrade): the host needs a reboot.
    #[serde(default)]
    pub needs_reboot: bool,
    /// Rises with every report this host writes: a reader refuses one lower than a report of
    /// this host it already saw (a replay).
    pub sequence: u64,
    /// When the pass ended.
    pub at: DateTime<Utc>,
}
