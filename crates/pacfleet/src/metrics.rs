//! Metrics of a host's passes: counters kept across passes, and a Prometheus textfile.
//!
//! After every reconcile pass (`fleetctl reconcile` under the timer, or a pass of `fleetctl
//! agent`), [`record_pass`] does two things:
//!
//! 1. It updates `counters.json` in the state directory ([`Counters`]): passes by outcome,
//!    failures by reason, applied changesets, the time of the last successful pass. Written
//!    atomically with [`crate::state::write_report`]; a damaged file is an error naming it, never
//!    reset behind the operator's back (delete it to start the counters from zero; Prometheus
//!    handles counter resets).
//! 2. If agent.yaml sets `textfile:`, it writes that file in the format of node_exporter's
//!    textfile collector (`# HELP` and `# TYPE` lines, then samples): gauges for the state of
//!    the host (last pass and last success times, pending changes, drift, applied sequence,
//!    signature expiry, pass duration, an info series with the fleet, pool, generation and
//!    commit, the last pass's package downloads by source and what it prefetched) and the
//!    counters above. The collector may read the directory at any moment, so
//!    the file is written to a temporary file in the same directory whose name does not end in
//!    `.prom` (the collector ignores it), made world-readable (node_exporter does not run as
//!    root), fsynced and renamed over the target.
//!
//! The metric names and labels are listed in README.md ("Status, waybar and Prometheus"); they
//! are an interface dashboards and alerts depend on.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::state::{
    self, AppliedState, FailureReason, PassOutcome, PassStatus, StateDir, StateError,
};

/// The counters file in the state directory.
pub const COUNTERS_FILE: &str = "counters.json";

/// The on-disk format of `counters.json` this pacfleet reads and writes.
pub const COUNTERS_FORMAT: u64 = 1;

// Every pass outcome (`PassOutcome::ALL`) and every failure reason (`FailureReason::ALL`) is
// exported, at 0 until it happens, so rates work from the first pass. A reason `counters.json`
// holds that is not one of them (`unknown`) is still exported once it occurs.

/// Counters kept across passes in `state_dir/counters.json`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Counters {
    /// File format; [`COUNTERS_FORMAT`].
    pub format: u64,
    /// Passes by outcome (`converged`, `applied`, `pending`, `failed`, `refused`).
    #[serde(default)]
    pub passes: BTreeMap<String, u64>,
    /// Failed and refused passes by reason (`fetch`, `apply`, `refused`, …).
    #[serde(default)]
    pub failures: BTreeMap<String, u64>,
    /// Passes that applied a changeset.
    #[serde(default)]
    pub applied_changesets: u64,
    /// End of the last pass that succeeded (converged, applied, or pending behind a window or
    /// pause), if any.
    #[serde(default)]
    pub last_success: Option<DateTime<Utc>>,
    /// End of the last pass after which the host matched its target (converged or applied).
    #[serde(default)]
    pub last_converged: Option<DateTime<Utc>>,
}

/// Why metrics could not be recorded. The pass itself is not affected.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The state directory (or the counters file in it) could not be read or written.
    #[error(transparent)]
    State(#[from] StateError),
    /// `counters.json` exists but cannot be used.
    #[error(
        "{} is corrupt ({detail}); it only holds metric counters: delete it to start them from zero",
        path.display()
    )]
    Corrupt { path: PathBuf, detail: String },
    /// The textfile could not be written.
    #[error(
        "cannot {action} the metrics textfile {}: {source}; check `textfile` in agent.yaml (its directory must exist: node_exporter's --collector.textfile.directory)",
        path.display()
    )]
    Textfile {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn counters_path(state: &StateDir) -> PathBuf {
    state.path().join(COUNTERS_FILE)
}

/// The counters so far; all zero if no pass recorded any.
pub fn load_counters(state: &StateDir) -> Result<Counters, MetricsError> {
    let path = counters_path(state);
    // Never through a symbolic link (StateError::Symlink).
    let Some(bytes) = crate::state::read_optional(&path)? else {
        return Ok(Counters {
            format: COUNTERS_FORMAT,
            ..Counters::default()
        });
    };
    let counters: Counters = serde_json::from_slice(&bytes).map_err(|e| MetricsError::Corrupt {
        path: path.clone(),
        detail: e.to_string(),
    })?;
    if counters.format != COUNTERS_FORMAT {
        return Err(MetricsError::Corrupt {
            path,
            detail: format!(
                "format {}, but this pacfleet reads format {COUNTERS_FORMAT}",
                counters.format
            ),
        });
    }
    Ok(counters)
}

fn save_counters(state: &StateDir, counters: &Counters) -> Result<(), MetricsError> {
    let mut bytes = serde_json::to_vec_pretty(counters).expect("counters serialize to JSON");
    bytes.push(b'\n');
    state::write_report(&counters_path(state), &bytes, 0o644)?;
    Ok(())
}

impl Counters {
    /// Counts one pass.
    pub fn count(&mut self, status: &PassStatus) {
        self.format = COUNTERS_FORMAT;
        *self
            .passes
            .entry(status.outcome.as_str().to_owned())
            .or_default() += 1;
        if status.outcome.succeeded() {
            self.last_success = Some(status.at);
            if matches!(
                status.outcome,
                PassOutcome::Converged | PassOutcome::Applied
            ) {
                self.last_converged = Some(status.at);
            }
            if status.outcome.applied() {
                self.applied_changesets += 1;
            }
        } else {
            let reason = match status.failure {
                Some(r) => r.as_str(),
                None if status.outcome == PassOutcome::Refused => FailureReason::Refused.as_str(),
                None => "unknown",
            };
            *self.failures.entry(reason.to_owned()).or_default() += 1;
        }
    }
}

/// Records a finished pass: counts it in `counters.json` and, with `textfile`, rewrites the
/// Prometheus textfile. Called by [`crate::reconcile::run`] after `status.json` is written;
/// errors are logged there and never fail the pass.
pub fn record_pass(
    state: &StateDir,
    status: &PassStatus,
    textfile: Option<&Path>,
) -> Result<(), MetricsError> {
    let mut counters = load_counters(state)?;
    counters.count(status);
    save_counters(state, &counters)?;
    if let Some(path) = textfile {
        let applied = state.load_applied()?;
        write_textfile(path, applied.as_ref(), status, &counters, Utc::now())?;
    }
    Ok(())
}

/// Rewrites the textfile from what the state directory holds now, counting nothing: for a
/// change of `status.json` between passes (the agent's drift watch). Without a recorded pass
/// there is nothing to write.
pub fn refresh_textfile(state: &StateDir, textfile: &Path) -> Result<(), MetricsError> {
    let Some(status) = state.load_status()? else {
        return Ok(());
    };
    let counters = load_counters(state)?;
    let applied = state.load_applied()?;
    write_textfile(textfile, applied.as_ref(), &status, &counters, Utc::now())
}

/// Writes the metrics to `path` atomically (see the module documentation), world-readable.
pub fn write_textfile(
    path: &Path,
    applied: Option<&AppliedState>,
    status: &PassStatus,
    counters: &Counters,
    now: DateTime<Utc>,
) -> Result<(), MetricsError> {
    let text = render(applied, status, counters, now);
    // A report's atomic write: `.NAME.XXXXXX.tmp` (hidden and not `*.prom`, so the collector
    // never reads a partial file), mode 0644, fsync, rename.
    crate::state::write_report(path, text.as_bytes(), 0o644).map_err(|e| match e {
        StateError::Io {
            action,
            path,
            source,
        } => MetricsError::Textfile {
            action,
            path,
            source,
        },
        other => MetricsError::State(other),
    })
}

/// A label value in the exposition format: backslash, double quote and newline escaped.
fn label_value(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', r#"\""#)
        .replace('\n', r"\n")
}

/// Builds the exposition text.
struct Exposition {
    out: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}");
        let _ = writeln!(self.out, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }

    fn gauge(&mut self, name: &str, help: &str, value: impl std::fmt::Display) {
        self.family(name, "gauge", help);
        self.sample(name, &[], value);
    }
}

/// Seconds since the epoch, with milliseconds.
fn seconds(t: DateTime<Utc>) -> String {
    format!("{:.3}", t.timestamp_millis() as f64 / 1000.0)
}

/// The rollout's series: the host's wave and whether its change waits or the rollout halted,
/// the health check, a reboot needed, and the host's report in the status repository.
fn rollout_series(x: &mut Exposition, status: &PassStatus) {
    if let Some(r) = &status.rollout {
        x.family(
            "pacfleet_rollout_wave",
            "gauge",
            "The host's wave in its pool's rollout (its index from 0; label wave: its name).",
        );
        x.sample(
            "pacfleet_rollout_wave",
            &[("pool", &r.pool), ("wave", &r.wave)],
            r.index,
        );
        x.gauge(
            "pacfleet_rollout_waiting",
            "Whether the pool's change waits for this host's wave (an earlier wave, or a soak time).",
            u8::from(r.waiting),
        );
        x.gauge(
            "pacfleet_rollout_halted",
            "Whether the pool's rollout halted: more hosts failed the change than failure_budget allows.",
            u8::from(r.halted),
        );
    }
    x.gauge(
        "pacfleet_needs_reboot",
        "Whether the running kernel's modules are gone (a kernel upgrade): the host needs a reboot.",
        u8::from(status.needs_reboot),
    );
    if let Some(ok) = status.health_ok {
        x.gauge(
            "pacfleet_health_ok",
            "Whether the pool's health check passed after the last pass that applied changes.",
            u8::from(ok),
        );
    }
    if let Some(r) = &status.report {
        if let Some(t) = r.pushed_at {
            x.gauge(
                "pacfleet_report_pushed_timestamp_seconds",
                "When this host's report last reached the status repository, in seconds since the epoch.",
                seconds(t),
            );
        }
        x.family(
            "pacfleet_report_push_failures_total",
            "counter",
            "Pushes of this host's report to the status repository that failed (each is retried by the next pass).",
        );
        x.sample("pacfleet_report_push_failures_total", &[], r.push_failures);
        x.family(
            "pacfleet_reports_rejected_total",
            "counter",
            "Other hosts' reports this host refused (forged, replayed, foreign, malformed), by reason.",
        );
        for (reason, n) in &r.rejected {
            x.sample("pacfleet_reports_rejected_total", &[("reason", reason)], n);
        }
    }
}

/// The last pass's downloads: bytes and package files by source, files peers served that
/// failed their sha256, and what was prefetched for a pending change. At 0 when the pass
/// downloaded nothing, so a dashboard's series never break.
fn download_series(x: &mut Exposition, status: &PassStatus) {
    let none = crate::peers::Downloads::default();
    let d = status.downloads.as_ref().unwrap_or(&none);
    x.family(
        "pacfleet_download_bytes",
        "gauge",
        "Bytes of package files the last pass downloaded, by source (peer: other hosts' caches; upstream: the mirrors or the archive).",
    );
    x.sample(
        "pacfleet_download_bytes",
        &[("source", "peer")],
        d.peer_bytes,
    );
    x.sample(
        "pacfleet_download_bytes",
        &[("source", "upstream")],
        d.upstream_bytes,
    );
    x.family(
        "pacfleet_download_files",
        "gauge",
        "Package files the last pass downloaded, by source (peer, upstream).",
    );
    x.sample(
        "pacfleet_download_files",
        &[("source", "peer")],
        d.peer_files,
    );
    x.sample(
        "pacfleet_download_files",
        &[("source", "upstream")],
        d.upstream_files,
    );
    x.gauge(
        "pacfleet_peer_bad_files",
        "Package files peers served in the last pass that failed their sha256 check (discarded).",
        d.bad_from.values().map(|n| u64::from(*n)).sum::<u64>(),
    );
    let (prefetched, left) = if d.prefetch {
        (d.peer_files.saturating_add(d.upstream_files), d.left)
    } else {
        (0, 0)
    };
    x.gauge(
        "pacfleet_prefetched_files",
        "Package files the last pass downloaded ahead for a pending change (prefetch: true).",
        prefetched,
    );
    x.gauge(
        "pacfleet_prefetch_left_files",
        "Package files the pending change still has to download after the last pass's prefetch.",
        left,
    );
}

/// The textfile's contents: every metric with its `# HELP` and `# TYPE`.
pub fn render(
    applied: Option<&AppliedState>,
    status: &PassStatus,
    counters: &Counters,
    now: DateTime<Utc>,
) -> String {
    let mut x = Exposition { out: String::new() };
    let ok = status.outcome.succeeded();
    x.gauge(
        "pacfleet_up",
        "Whether the last pass succeeded (1: converged, applied, applied with warnings, held or pending; 0: failed or refused).",
        u8::from(ok),
    );
    if let Some(a) = applied {
        let generation = a.generation.map(|g| g.to_string()).unwrap_or_default();
        x.family(
            "pacfleet_info",
            "gauge",
            "The fleet state this host last applied (always 1; generation is empty for a floating pool).",
        );
        x.sample(
            "pacfleet_info",
            &[
                ("fleet", &a.fleet),
                ("pool", &a.pool),
                ("generation", &generation),
                ("commit", &a.commit),
                ("version", env!("CARGO_PKG_VERSION")),
            ],
            1,
        );
        x.gauge(
            "pacfleet_applied_sequence",
            "Signature sequence number of the fleet state this host last applied.",
            a.sequence,
        );
        x.gauge(
            "pacfleet_applied_timestamp_seconds",
            "When this host applied the fleet state it runs, in seconds since the epoch.",
            seconds(a.applied_at),
        );
    }
    x.family(
        "pacfleet_last_outcome",
        "gauge",
        "Outcome of the last pass: 1 for the outcome it had, 0 for the others.",
    );
    for outcome in PassOutcome::ALL {
        x.sample(
            "pacfleet_last_outcome",
            &[("outcome", outcome.as_str())],
            u8::from(outcome == status.outcome),
        );
    }
    x.gauge(
        "pacfleet_last_pass_timestamp_seconds",
        "When the last pass ended, in seconds since the epoch.",
        seconds(status.at),
    );
    if let Some(t) = counters.last_success {
        x.gauge(
            "pacfleet_last_success_timestamp_seconds",
            "When the last successful pass (converged, applied or pending) ended, in seconds since the epoch.",
            seconds(t),
        );
    }
    if let Some(t) = counters.last_converged {
        x.gauge(
            "pacfleet_last_converged_timestamp_seconds",
            "When a pass last left the host matching its target (converged or applied), in seconds since the epoch.",
            seconds(t),
        );
    }
    x.gauge(
        "pacfleet_pass_duration_seconds",
        "Wall time of the last pass.",
        format!("{:.3}", status.duration_ms as f64 / 1000.0),
    );
    x.gauge(
        "pacfleet_pending_changes",
        "Package changes the host still needs to match its target (held back by a window, a pause or a dry run).",
        status.pending_changes,
    );
    x.gauge(
        "pacfleet_in_fleet",
        "Whether a pool of the fleet selects this host (0: pacfleet manages nothing on it).",
        u8::from(status.outcome != PassOutcome::NotInFleet),
    );
    x.gauge(
        "pacfleet_held_packages",
        "Packages the host's IgnorePkg/IgnoreGroup hold back from what the fleet asks.",
        status.held.len(),
    );
    x.gauge(
        "pacfleet_warnings",
        "Warnings of the last pass (failed scriptlets or hooks in a transaction that went on).",
        status.warnings.len(),
    );
    x.gauge(
        "pacfleet_drift_packages",
        "Packages changed outside pacfleet since the host last converged.",
        status.drift.len(),
    );
    x.gauge(
        "pacfleet_waiting_for_signature_commits",
        "Commits newer than the target that wait for a signature.",
        status.waiting_for_signature,
    );
    if let Some(t) = status.signed_until {
        x.gauge(
            "pacfleet_signed_until_timestamp_seconds",
            "When the signature of the target fleet state expires (after that the host refuses it as stale), in seconds since the epoch.",
            seconds(t),
        );
    }
    if let Some(t) = status
        .next_window
        .as_deref()
        .and_then(|n| DateTime::parse_from_rfc3339(n).ok())
    {
        x.gauge(
            "pacfleet_next_window_timestamp_seconds",
            "When the pool's window next opens, if pending changes wait for it, in seconds since the epoch.",
            seconds(t.with_timezone(&Utc)),
        );
    }
    rollout_series(&mut x, status);
    download_series(&mut x, status);
    x.family(
        "pacfleet_passes_total",
        "counter",
        "Reconcile passes by outcome.",
    );
    let mut outcomes: BTreeMap<&str, u64> =
        PassOutcome::ALL.iter().map(|o| (o.as_str(), 0)).collect();
    for (k, v) in &counters.passes {
        outcomes.insert(k, *v);
    }
    for (outcome, n) in outcomes {
        x.sample("pacfleet_passes_total", &[("outcome", outcome)], n);
    }
    let names: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
    x.family(
        "pacfleet_failures_total",
        "counter",
        &format!(
            "Failed and refused passes by reason ({}).",
            names.join(", ")
        ),
    );
    let mut reasons: BTreeMap<&str, u64> = names.iter().map(|r| (*r, 0)).collect();
    for (k, v) in &counters.failures {
        reasons.insert(k, *v);
    }
    for (reason, n) in reasons {
        x.sample("pacfleet_failures_total", &[("reason", reason)], n);
    }
    x.family(
        "pacfleet_applied_changesets_total",
        "counter",
        "Passes that applied a changeset.",
    );
    x.sample(
        "pacfleet_applied_changesets_total",
        &[],
        counters.applied_changesets,
    );
    x.gauge(
        "pacfleet_textfile_timestamp_seconds",
        "When pacfleet wrote this file, in seconds since the epoch.",
        seconds(now),
    );
    x.out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(outcome: PassOutcome, failure: Option<FailureReason>) -> PassStatus {
        PassStatus {
            at: DateTime::parse_from_rfc3339("2026-11-20T09:00:00Z")
                .unwrap()
                .with_timezone(&Utc),
            outcome,
            message: None,
            pending_changes: 3,
            target_commit: None,
            signed_until: None,
            next_window: Some("2027-01-01T00:00:00+01:00".to_owned()),
            drift: vec!["install tool".to_owned()],
            waiting_for_signature: 0,
            duration_ms: 1234,
            failure,
            last_success: None,
            held: Vec::new(),
            warnings: Vec::new(),
            config_files: Vec::new(),
            rollout: None,
            needs_reboot: false,
            health_ok: None,
            report: None,
            downloads: None,
        }
    }

    #[test]
    fn counts_outcomes_reasons_and_successes() {
        let mut c = Counters::default();
        c.count(&status(PassOutcome::Applied, None));
        c.count(&status(PassOutcome::Failed, Some(FailureReason::Fetch)));
        c.count(&status(PassOutcome::Failed, Some(FailureReason::Fetch)));
        c.count(&status(PassOutcome::Refused, None));
        assert_eq!(c.passes["applied"], 1);
        assert_eq!(c.passes["failed"], 2);
        assert_eq!(c.failures["fetch"], 2);
        assert_eq!(c.failures["refused"], 1);
        assert_eq!(c.applied_changesets, 1);
        assert!(c.last_success.is_some() && c.last_converged.is_some());
    }

    #[test]
    fn renders_every_family_with_help_and_type() {
        let mut c = Counters::default();
        c.count(&status(PassOutcome::Pending, None));
        let mut s = status(PassOutcome::Pending, None);
        s.message = Some("x".to_owned());
        let text = render(None, &s, &c, Utc::now());
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let name = line.split(['{', ' ']).next().unwrap();
            assert!(text.contains(&format!("# HELP {name} ")), "{name}");
            assert!(text.contains(&format!("# TYPE {name} ")), "{name}");
        }
        assert!(text.contains("pacfleet_pending_changes 3\n"), "{text}");
        assert!(text.contains("pacfleet_drift_packages 1\n"), "{text}");
        assert!(
            text.contains("pacfleet_pass_duration_seconds 1.234\n"),
            "{text}"
        );
        assert!(
            text.contains("pacfleet_next_window_timestamp_seconds 1798758000.000\n"),
            "{text}"
        );
        assert!(text.contains("pacfleet_passes_total{outcome=\"pending\"} 1\n"));
        assert!(text.contains("pacfleet_failures_total{reason=\"apply\"} 0\n"));
        assert!(text.contains("pacfleet_last_outcome{outcome=\"pending\"} 1\n"));
        assert!(!text.contains("pacfleet_last_converged_timestamp_seconds"));
    }

    #[test]
    fn rollout_health_reboot_and_report_series() {
        let mut s = status(PassOutcome::Pending, None);
        s.rollout = Some(crate::state::RolloutStatus {
            pool: "ws".into(),
            wave: "early".into(),
            index: 1,
            of: 3,
            change: Some("c".repeat(40)),
            waiting: true,
            halted: false,
        });
        s.needs_reboot = true;
        s.health_ok = Some(false);
        s.report = Some(crate::state::ReportStatus {
            pushed: false,
            pushed_at: Some(s.at),
            error: Some("unreachable".into()),
            push_failures: 2,
            rejected: [("bad-signature".to_owned(), 3)].into(),
        });
        let text = render(None, &s, &Counters::default(), Utc::now());
        for want in [
            "pacfleet_rollout_wave{pool=\"ws\",wave=\"early\"} 1\n",
            "pacfleet_rollout_waiting 1\n",
            "pacfleet_rollout_halted 0\n",
            "pacfleet_needs_reboot 1\n",
            "pacfleet_health_ok 0\n",
            "pacfleet_report_pushed_timestamp_seconds 1795165200.000\n",
            "pacfleet_report_push_failures_total 2\n",
            "pacfleet_reports_rejected_total{reason=\"bad-signature\"} 3\n",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        // Without a rollout, health check or status repository: only the reboot gauge.
        let plain = render(
            None,
            &status(PassOutcome::Converged, None),
            &Counters::default(),
            Utc::now(),
        );
        assert!(plain.contains("pacfleet_needs_reboot 0\n"));
        assert!(!plain.contains("pacfleet_rollout_") && !plain.contains("pacfleet_report"));
    }

    #[test]
    fn download_series_by_source_and_prefetch() {
        let plain = render(
            None,
            &status(PassOutcome::Converged, None),
            &Counters::default(),
            Utc::now(),
        );
        for want in [
            "pacfleet_download_bytes{source=\"peer\"} 0\n",
            "pacfleet_download_bytes{source=\"upstream\"} 0\n",
            "pacfleet_download_files{source=\"peer\"} 0\n",
            "pacfleet_peer_bad_files 0\n",
            "pacfleet_prefetched_files 0\n",
            "pacfleet_prefetch_left_files 0\n",
        ] {
            assert!(plain.contains(want), "{want} missing:\n{plain}");
        }
        let mut s = status(PassOutcome::Pending, None);
        s.downloads = Some(crate::peers::Downloads {
            peer_bytes: 3000,
            upstream_bytes: 1000,
            peer_files: 3,
            upstream_files: 1,
            bad_from: [("http://a:1".to_owned(), 2), ("http://b:1".to_owned(), 1)].into(),
            peers: vec!["http://a:1".into(), "http://b:1".into()],
            prefetch: true,
            left: 2,
        });
        let text = render(None, &s, &Counters::default(), Utc::now());
        for want in [
            "pacfleet_download_bytes{source=\"peer\"} 3000\n",
            "pacfleet_download_bytes{source=\"upstream\"} 1000\n",
            "pacfleet_download_files{source=\"peer\"} 3\n",
            "pacfleet_download_files{source=\"upstream\"} 1\n",
            "pacfleet_peer_bad_files 3\n",
            "pacfleet_prefetched_files 4\n",
            "pacfleet_prefetch_left_files 2\n",
        ] {
            assert!(text.contains(want), "{want} missing:\n{text}");
        }
        // Peer URLs never become labels: a series per peer would grow without bound.
        assert!(!text.contains("http://"), "{text}");
    }

    /// The backticked words of README.md's metrics table row for `metric`.
    fn readme_labels(metric: &str) -> Vec<String> {
        let readme = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md"));
        let row = readme
            .lines()
            .find(|l| l.starts_with(&format!("| `{metric}")))
            .unwrap_or_else(|| panic!("README.md has no row for {metric}"));
        let list = row.rsplit('|').nth(1).unwrap().split(':').nth(1).unwrap();
        list.split('`')
            .skip(1)
            .step_by(2)
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn readme_lists_every_failure_reason_and_outcome() {
        let reasons: Vec<&str> = FailureReason::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(readme_labels("pacfleet_failures_total"), reasons);
        let outcomes: Vec<&str> = PassOutcome::ALL.iter().map(|o| o.as_str()).collect();
        assert_eq!(readme_labels("pacfleet_passes_total"), outcomes);
    }

    #[test]
    fn every_reason_and_outcome_is_exported_at_zero() {
        let text = render(
            None,
            &status(PassOutcome::Converged, None),
            &Counters::default(),
            Utc::now(),
        );
        for r in FailureReason::ALL {
            assert!(
                text.contains(&format!("pacfleet_failures_total{{reason=\"{r}\"}} 0\n")),
                "{r}"
            );
        }
        for o in PassOutcome::ALL {
            assert!(
                text.contains(&format!("pacfleet_passes_total{{outcome=\"{o}\"}} 0\n")),
                "{o}"
            );
        }
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(label_value("a\"b\\c\nd"), r#"a\"b\\c\nd"#);
    }
}
