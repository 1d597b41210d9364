//! The host's report after a pass (docs/contract.md §6): what the pass left the host as, signed
//! with the host's key and pushed to `refs/pacfleet/status/<pool>/<hostname>` of
//! `status_repo`. Only when it says something new: a pass whose report would equal the last
//! one published (apart from its time) pushes nothing, so a fleet costs its forge a push per
//! change per host, not per pass. A push that fails never fails the pass: the report is kept
//! as unpublished in `rollout.json` and pushed by the next pass, and status and metrics say so.

use chrono::Utc;

use super::{PassError, PassReport, Verdict};
use crate::config::AgentConfig;
use crate::report::{self, FORMAT, HostReport, ReportOutcome};
use crate::state::{AppliedState, ReportStatus, RolloutRecord};
use crate::status_repo::{self, StatusRemote};

/// How much of a message a report carries.
const MAX_MESSAGE: usize = 1024;

/// What this pass's report says, `None` when there is nothing to report: no pool (the host
/// was never in one), or no fleet known.
pub(super) fn build(
    cfg: &AgentConfig,
    result: &Result<PassReport, PassError>,
    applied: Option<&AppliedState>,
    record: &RolloutRecord,
    status_message: Option<&str>,
) -> Option<HostReport> {
    let previous = record.report.as_ref();
    let failed_change = record.failed.as_ref();
    let (pool, fleet, outcome, r) = match result {
        Ok(r) => {
            let pool = r.pool.clone().or_else(|| applied.map(|a| a.pool.clone()))?;
            let fleet = r
                .fleet
                .clone()
                .or_else(|| applied.map(|a| a.fleet.clone()))?;
            let failed_here = failed_change
                .filter(|f| r.change.as_deref() == Some(f.change.as_str()))
                .map(|f| f.rolled_back);
            let outcome = match (&r.verdict, failed_here) {
                _ if r.refused.is_some() => ReportOutcome::Refused,
                (Verdict::NotInFleet, _) => ReportOutcome::NotInFleet,
                (Verdict::Unhealthy { rolled_back: true }, _) => ReportOutcome::RolledBack,
                (Verdict::Unhealthy { .. }, _) => ReportOutcome::Failed,
                // The change failed here before: that is what this host has to say of it.
                (_, Some(true)) => ReportOutcome::RolledBack,
                (_, Some(false)) => ReportOutcome::Failed,
                (Verdict::Converged | Verdict::Held, _) => ReportOutcome::Converged,
                (Verdict::Applied | Verdict::AppliedWithWarnings, _) => ReportOutcome::Applied,
                (Verdict::Pending { .. }, _) => ReportOutcome::Pending,
            };
            (pool, fleet, outcome, Some(r))
        }
        Err(e) => {
            let applied = applied?;
            // Only what says something of the fleet state is published: a refusal, or the
            // change failing on this host (invalid, unresolvable, unplannable, its transaction
            // failing). A pass that could not get that far (fetch, lock, state, configuration,
            // a signal) changed nothing, and counting it against a rollout's failure budget
            // would halt a rollout for a network blip: the last report stands.
            let outcome = match e {
                PassError::Refused(_) => ReportOutcome::Refused,
                PassError::Invalid { .. }
                | PassError::Resolve(_)
                | PassError::Apply(_)
                | PassError::AfterKeyring { .. } => ReportOutcome::Failed,
                PassError::System(e) if !matches!(e, crate::system::SystemError::Locked { .. }) => {
                    ReportOutcome::Failed
                }
                _ => return None,
            };
            (applied.pool.clone(), applied.fleet.clone(), outcome, None)
        }
    };
    // The pass's own words, never status.json's (which adds when the last success was).
    let message = match (result, r) {
        (Err(e), _) => Some(e.to_string()),
        (Ok(_), Some(r)) => match &r.verdict {
            Verdict::Pending { hold } => Some(hold.to_string()),
            // The health field says what failed.
            Verdict::Unhealthy { rolled_back: true } => {
                Some("the health check failed; rolled back to the packages it had".to_owned())
            }
            Verdict::Unhealthy { rolled_back: false } => {
                Some("the health check failed after applying".to_owned())
            }
            Verdict::NotInFleet | Verdict::Held | Verdict::AppliedWithWarnings => {
                status_message.map(str::to_owned)
            }
            _ => None,
        },
        _ => None,
    }
    .map(|m| bounded(&m));
    let report = HostReport {
        format: FORMAT,
        fleet,
        host: cfg.hostname.clone(),
        pool,
        wave: r.and_then(|r| r.wave.as_ref()).map_or(0, |w| w.index),
        rollout: r
            .and_then(|r| r.change.clone())
            .or_else(|| previous.and_then(|p| p.rollout.clone())),
        target: r
            .map(|r| r.commit.clone())
            .or_else(|| previous.map(|p| p.target.clone()))
            .unwrap_or_default(),
        applied: applied.map(|a| a.commit.clone()),
        generation: r.map_or(applied.and_then(|a| a.generation), |r| r.generation),
        outcome,
        message,
        health: r.and_then(|r| r.health.clone()),
        drift: r.map(|r| r.drift.clone()).unwrap_or_default(),
        held: r
            .map(|r| r.changeset.held.iter().map(|h| h.to_string()).collect())
            .unwrap_or_default(),
        warnings: r.map(|r| r.notices.warnings.clone()).unwrap_or_default(),
        needs_reboot: r.is_some_and(|r| r.needs_reboot),
        sequence: 0,
        at: Utc::now(),
    };
    Some(report)
}

/// Whether `new` says what `old` said (its time and sequence aside).
fn same(old: &HostReport, new: &HostReport) -> bool {
    let strip = |r: &HostReport| HostReport {
        sequence: 0,
        at: chrono::DateTime::<Utc>::UNIX_EPOCH,
        ..r.clone()
    };
    strip(old) == strip(new)
}

/// Publishes `report` unless the last published one says the same; records what happened in
/// `record` and returns the status line of it.
pub(super) fn publish(
    cfg: &AgentConfig,
    mut report: HostReport,
    record: &mut RolloutRecord,
) -> ReportStatus {
    let status = |record: &RolloutRecord, error: Option<String>| ReportStatus {
        pushed: record.pushed,
        pushed_at: record.pushed_at,
        error,
        push_failures: record.push_failures,
        rejected: record.rejected.clone(),
    };
    let Some(remote) = StatusRemote::from_config(cfg) else {
        return status(record, None);
    };
    if record.pushed
        && let Some(old) = &record.report
        && same(old, &report)
    {
        tracing::debug!("the report says nothing new: not pushed");
        return status(record, None);
    }
    // Higher than any report this host wrote before, even if rollout.json was lost: the
    // time in milliseconds, or one more than the last.
    let last = record.report.as_ref().map_or(0, |r| r.sequence);
    report.sequence = u64::try_from(report.at.timestamp_millis())
        .unwrap_or(0)
        .max(last + 1);
    let pushed = report::load_host_key(&cfg.host_key)
        .map_err(|e| e.to_string())
        .and_then(|key| report::sign(&report, &key).map_err(|e| e.to_string()))
        .and_then(|signed| {
            status_repo::push(
                &remote,
                &cfg.status_dir(),
                &signed,
                &report.pool,
                &report.host,
            )
            .map_err(|e| e.to_string())
        });
    record.report = Some(report);
    match pushed {
        Ok(()) => {
            record.pushed = true;
            record.pushed_at = Some(Utc::now());
            status(record, None)
        }
        Err(e) => {
            tracing::warn!("cannot publish this host's report (the next pass tries again): {e}");
            record.pushed = false;
            record.push_failures += 1;
            status(record, Some(e))
        }
    }
}

/// `message` cut to [`MAX_MESSAGE`] bytes, on a character boundary.
fn bounded(message: &str) -> String {
    if message.len() <= MAX_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &message[..end])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::Hold;

    fn cfg() -> AgentConfig {
        AgentConfig::from_yaml(
            "repo: /srv/fleet\nhostname: ws-01\ntrusted_keys: [/k/ops.pub]\nstatus_repo: /srv/status.git\n",
            std::path::Path::new("/etc/pacfleet/agent.yaml"),
        )
        .unwrap()
    }

    fn pass(verdict: Verdict) -> PassReport {
        // The change is named, no health check ran (what the verdict says is what counts).
        PassReport {
            health: None,
            ..crate::reconcile::tests::report(verdict)
        }
    }

    #[test]
    fn what_a_pass_reports() {
        let record = RolloutRecord::default();
        let build = |r: Result<PassReport, PassError>| build(&cfg(), &r, None, &record, None);
        let converged = build(Ok(pass(Verdict::Converged))).unwrap();
        assert_eq!(converged.outcome, ReportOutcome::Converged);
        assert_eq!(converged.rollout.as_deref(), Some("c".repeat(40).as_str()));
        let waiting = build(Ok(pass(Verdict::Pending {
            hold: Hold::Wave {
                wave: "rest".into(),
                waits: "wave canary to finish".into(),
            },
        })))
        .unwrap();
        assert_eq!(waiting.outcome, ReportOutcome::Pending);
        assert_eq!(
            waiting.message.as_deref(),
            Some("pending (wave rest waits for wave canary to finish)")
        );
        let unhealthy = build(Ok(pass(Verdict::Unhealthy { rolled_back: true }))).unwrap();
        assert_eq!(unhealthy.outcome, ReportOutcome::RolledBack);
        // A pass stopped before it tried anything publishes nothing.
        assert!(build(Err(PassError::Stopped)).is_none());
    }

    #[test]
    fn a_report_that_says_the_same_is_the_same_whatever_its_time() {
        let record = RolloutRecord::default();
        let a = build(&cfg(), &Ok(pass(Verdict::Converged)), None, &record, None).unwrap();
        let mut b = a.clone();
        b.at += chrono::Duration::hours(1);
        b.sequence += 7;
        assert!(same(&a, &b));
        b.outcome = ReportOutcome::Applied;
        assert!(!same(&a, &b));
    }
}
