//! Rollout decisions: which wave a host of a pool is in, and whether a host may apply a change
//! now — the pure core of waves (docs/contract.md §5, "Not implemented yet": the manifest's
//! `rollout:`, the status repository that carries the reports, and the pass that asks are to
//! come). Plain data in, a [`Decision`] out, the clock passed in: each host decides alone from
//! the signed change and its peers' reports, with no controller.
//!
//! The rules:
//! - A host is in the first wave whose `hosts:` globs or `labels:` select it, else in the first
//!   wave whose `percent` covers its bucket: a stable hash of (fleet, pool, hostname) in
//!   0..100, so the same host is in the same wave for every change.
//! - Wave 0 applies a change at once. Wave k applies it only when every earlier wave is done
//!   (each of its non-stale hosts reported success on this change), no more than
//!   `failure_budget` hosts of the pool reported failure on it, and the wave's `soak` has passed
//!   since wave k-1 was done.
//! - A host silent for `stale_after` (its newest report, on any change, is older) neither
//!   counts nor blocks.
//! - Failures beyond the budget halt the rollout for every later wave.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use sha2::{Digest, Sha256};

use crate::manifest::RolloutSpec;
use crate::report::HostReport;

/// One wave of a pool's rollout.
#[derive(Debug, Clone)]
pub struct Wave {
    /// Its name (`canary`, `early`, `rest`).
    pub name: String,
    /// Hostname globs that put a host in this wave.
    pub hosts: Vec<globset::GlobMatcher>,
    /// Labels that put a host in this wave (all must match).
    pub labels: BTreeMap<String, String>,
    /// The share of the pool this wave reaches, counted from the pool's first host bucket
    /// (cumulative: `early 10`, `rest 100`).
    pub percent: Option<u8>,
    /// How long after the previous wave is done this one may start.
    pub soak: Duration,
}

impl Wave {
    fn selects(&self, host: &str, labels: &BTreeMap<String, String>) -> bool {
        let by_glob = self.hosts.iter().any(|g| g.is_match(host));
        let by_labels =
            !self.labels.is_empty() && self.labels.iter().all(|(k, v)| labels.get(k) == Some(v));
        by_glob || by_labels
    }
}

/// A wave's `hosts:` glob that does not compile (`validate` reports it first: a checked fleet
/// has none).
#[derive(Debug, thiserror::Error)]
#[error("wave `{wave}`: host glob `{glob}` does not parse: {source}")]
pub struct WavesError {
    /// The wave's name.
    pub wave: String,
    /// The glob as written.
    pub glob: String,
    /// Why.
    #[source]
    pub source: globset::Error,
}

/// A pool's `rollout:` as the [`Wave`]s [`wave_of`] and [`Rollout::decide`] take: globs
/// compiled, `soak` parsed (a soak `validate` would refuse counts as none, as
/// [`crate::manifest::WaveSpec::soak`] says). The hosts and `fleetctl fleet status` both build
/// their waves here, so they agree on who is in which wave.
pub fn waves(spec: &RolloutSpec) -> Result<Vec<Wave>, WavesError> {
    spec.waves
        .iter()
        .map(|w| {
            let hosts = w
                .hosts
                .iter()
                .map(|g| {
                    globset::Glob::new(g)
                        .map(|g| g.compile_matcher())
                        .map_err(|source| WavesError {
                            wave: w.name.to_string(),
                            glob: g.clone(),
                            source,
                        })
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Wave {
                name: w.name.to_string(),
                hosts,
                labels: w.labels.clone(),
                percent: w.percent,
                // At most 90 days (`MAX_ROLLOUT_DURATION`): always representable.
                soak: Duration::from_std(w.soak()).unwrap_or(Duration::days(90)),
            })
        })
        .collect()
}

/// The host's bucket in 0..100: a stable hash of (fleet, pool, hostname).
pub fn bucket(fleet: &str, pool: &str, host: &str) -> u8 {
    let digest = Sha256::digest(format!("{fleet}\0{pool}\0{host}").as_bytes());
    let n = u64::from_be_bytes([
        digest[0], digest[1], digest[2], digest[3], digest[4], digest[5], digest[6], digest[7],
    ]);
    // n % 100 < 100: always fits.
    u8::try_from(n % 100).unwrap_or(99)
}

/// The wave `host` is in: the first that selects it by name or labels, else the first whose
/// percent covers its bucket, else the last.
pub fn wave_of(
    fleet: &str,
    pool: &str,
    host: &str,
    labels: &BTreeMap<String, String>,
    waves: &[Wave],
) -> usize {
    if let Some(i) = waves.iter().position(|w| w.selects(host, labels)) {
        return i;
    }
    let b = bucket(fleet, pool, host);
    waves
        .iter()
        .position(|w| w.percent.is_some_and(|p| b < p))
        .unwrap_or(waves.len().saturating_sub(1))
}

/// What a host's newest report says about one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Applied (and healthy).
    Success,
    /// Applying or the health check failed (rolled back or not).
    Failed,
    /// Not applied yet.
    Pending,
}

/// A host's newest valid report, as the rollout reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The host.
    pub host: String,
    /// Its wave.
    pub wave: usize,
    /// The change the report is about (its rollout id).
    pub change: String,
    /// What happened.
    pub outcome: Outcome,
    /// When it was reported.
    pub at: DateTime<Utc>,
}

impl Report {
    /// What the rollout reads of a host's verified report: its rollout id as the change (a
    /// report without one is about no change), and its outcome — converged or applied is a
    /// success, failed or rolled back a failure, anything else (pending, refused, not in the
    /// fleet) not applied yet.
    pub fn from_host_report(r: &HostReport) -> Report {
        let outcome = if r.outcome.succeeded() {
            Outcome::Success
        } else if r.outcome.failed() {
            Outcome::Failed
        } else {
            Outcome::Pending
        };
        Report {
            host: r.host.clone(),
            wave: r.wave,
            change: r.rollout.clone().unwrap_or_default(),
            outcome,
            at: r.at,
        }
    }
}

/// Why a host waits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wait {
    /// Wave `wave` is not done: these hosts have not reported success on the change.
    WaveNotDone {
        /// The earlier wave.
        wave: usize,
        /// Its hosts still to report success.
        missing: Vec<String>,
    },
    /// The previous wave is done, and its soak ends then.
    Soaking {
        /// When this wave may start.
        until: DateTime<Utc>,
    },
}

/// What a host may do with a change now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Apply it.
    Apply,
    /// Not yet.
    Wait(Wait),
    /// Never, for this change: more hosts failed than the budget allows.
    Halted {
        /// The hosts that reported failure on the change.
        failed: Vec<String>,
    },
}

/// The pool's rollout, as every host of it sees it.
#[derive(Debug, Clone)]
pub struct Rollout<'a> {
    /// The waves, in order.
    pub waves: &'a [Wave],
    /// Each host of the pool and its wave.
    pub members: &'a BTreeMap<String, usize>,
    /// Failed hosts tolerated.
    pub failure_budget: usize,
    /// A host silent this long neither counts nor blocks.
    pub stale_after: Duration,
}

impl Rollout<'_> {
    /// Whether a host in `wave` may apply `change` at `now`, given every host's newest report.
    pub fn decide(
        &self,
        wave: usize,
        change: &str,
        reports: &BTreeMap<String, Report>,
        now: DateTime<Utc>,
    ) -> Decision {
        let live = |host: &str| {
            reports
                .get(host)
                .is_none_or(|r| now - r.at <= self.stale_after)
        };
        let on_change = |host: &str| reports.get(host).filter(|r| r.change == change);
        let failed: Vec<String> = self
            .members
            .keys()
            .filter(|h| live(h) && on_change(h).is_some_and(|r| r.outcome == Outcome::Failed))
            .cloned()
            .collect();
        if failed.len() > self.failure_budget && wave > 0 {
            return Decision::Halted { failed };
        }
        let mut done_at: Option<DateTime<Utc>> = None;
        for earlier in 0..wave {
            let hosts: Vec<&String> = self
                .members
                .iter()
                .filter(|(h, w)| **w == earlier && live(h))
                .map(|(h, _)| h)
                .collect();
            let missing: Vec<String> = hosts
                .iter()
                .filter(|h| !on_change(h).is_some_and(|r| r.outcome == Outcome::Success))
                .map(|h| (*h).clone())
                .collect();
            if !missing.is_empty() {
                return Decision::Wait(Wait::WaveNotDone {
                    wave: earlier,
                    missing,
                });
            }
            done_at = hosts
                .iter()
                .filter_map(|h| on_change(h).map(|r| r.at))
                .max();
        }
        if let (Some(done), Some(w)) = (done_at, self.waves.get(wave)) {
            let until = done + w.soak;
            if now < until {
                return Decision::Wait(Wait::Soaking { until });
            }
        }
        Decision::Apply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn wave(name: &str, percent: Option<u8>, soak_h: i64) -> Wave {
        Wave {
            name: name.into(),
            hosts: Vec::new(),
            labels: BTreeMap::new(),
            percent,
            soak: Duration::hours(soak_h),
        }
    }

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap()
    }

    #[test]
    fn waves_by_name_first_then_by_stable_bucket() {
        let mut canary = wave("canary", None, 0);
        canary.hosts = vec![globset::Glob::new("ws-0[12]").unwrap().compile_matcher()];
        let waves = vec![
            canary,
            wave("early", Some(10), 2),
            wave("rest", Some(100), 24),
        ];
        let none = BTreeMap::new();
        assert_eq!(wave_of("acme", "ws", "ws-01", &none, &waves), 0);
        let w = wave_of("acme", "ws", "ws-77", &none, &waves);
        assert_eq!(w, wave_of("acme", "ws", "ws-77", &none, &waves), "stable");
        let b = bucket("acme", "ws", "ws-77");
        assert_eq!(w, if b < 10 { 1 } else { 2 });
        // About a tenth of many hosts land in `early`.
        let early = (0..1000)
            .filter(|i| wave_of("acme", "ws", &format!("h{i}"), &none, &waves) == 1)
            .count();
        assert!((60..140).contains(&early), "{early}");
    }

    #[test]
    fn a_rollout_through_three_waves() {
        let waves = vec![
            wave("canary", None, 0),
            wave("early", None, 2),
            wave("rest", None, 24),
        ];
        let members: BTreeMap<String, usize> = [("a", 0), ("b", 1), ("c", 2)]
            .map(|(h, w)| (h.to_owned(), w))
            .into();
        let r = Rollout {
            waves: &waves,
            members: &members,
            failure_budget: 0,
            stale_after: Duration::days(3),
        };
        let report = |host: &str, wave, outcome, at| Report {
            host: host.into(),
            wave,
            change: "c1".into(),
            outcome,
            at,
        };
        let mut reports = BTreeMap::new();
        assert_eq!(r.decide(0, "c1", &reports, t(0)), Decision::Apply);
        assert!(matches!(
            r.decide(1, "c1", &reports, t(0)),
            Decision::Wait(Wait::WaveNotDone { wave: 0, .. })
        ));
        reports.insert("a".into(), report("a", 0, Outcome::Success, t(1)));
        assert_eq!(
            r.decide(1, "c1", &reports, t(2)),
            Decision::Wait(Wait::Soaking { until: t(3) })
        );
        assert_eq!(r.decide(1, "c1", &reports, t(3)), Decision::Apply);
        reports.insert("b".into(), report("b", 1, Outcome::Failed, t(4)));
        assert_eq!(
            r.decide(2, "c1", &reports, t(10)),
            Decision::Halted {
                failed: vec!["b".into()]
            }
        );
        // Once b has been silent for stale_after, its failure no longer counts: the rollout
        // waits for wave 1 again (b's success, or a fix).
        assert!(matches!(
            r.decide(2, "c1", &reports, t(100)),
            Decision::Apply | Decision::Wait(_)
        ));
    }

    #[test]
    fn waves_from_the_manifest() {
        let spec: RolloutSpec = serde_yaml::from_str(
            "waves:\n  - {name: canary, hosts: [\"ws-0[12]\"], labels: {ring: \"0\"}}\n  - {name: rest, percent: 100, soak: 2h}\n",
        )
        .unwrap();
        let w = waves(&spec).unwrap();
        assert_eq!(w.len(), 2);
        assert_eq!(
            (w[0].name.as_str(), w[0].soak),
            ("canary", Duration::zero())
        );
        assert_eq!((w[1].percent, w[1].soak), (Some(100), Duration::hours(2)));
        let ring: BTreeMap<String, String> = [("ring".to_owned(), "0".to_owned())].into();
        assert_eq!(wave_of("acme", "ws", "ws-02", &BTreeMap::new(), &w), 0);
        assert_eq!(wave_of("acme", "ws", "ws-77", &ring, &w), 0);
        assert_eq!(wave_of("acme", "ws", "ws-77", &BTreeMap::new(), &w), 1);
        let bad: RolloutSpec =
            serde_yaml::from_str("waves:\n  - {name: canary, hosts: [\"ws-[\"]}\n").unwrap();
        let e = waves(&bad).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("wave `canary`: host glob `ws-[` does not parse"),
            "{e}"
        );
    }

    fn members_strategy() -> impl Strategy<Value = BTreeMap<String, usize>> {
        prop::collection::btree_map("[a-h]", 0usize..3, 1..8)
    }

    fn reports_strategy() -> impl Strategy<Value = Vec<(String, u8, i64, bool)>> {
        prop::collection::vec(("[a-h]", 0u8..3, 0i64..200, any::<bool>()), 0..10)
    }

    fn build(
        members: &BTreeMap<String, usize>,
        raw: &[(String, u8, i64, bool)],
    ) -> BTreeMap<String, Report> {
        raw.iter()
            .filter(|(h, _, _, _)| members.contains_key(h))
            .map(|(h, o, at, other)| {
                let outcome =
                    [Outcome::Success, Outcome::Failed, Outcome::Pending][usize::from(*o)];
                (
                    h.clone(),
                    Report {
                        host: h.clone(),
                        wave: members[h],
                        change: if *other { "old".into() } else { "c1".into() },
                        outcome,
                        at: t(*at),
                    },
                )
            })
            .collect()
    }

    proptest! {
        #[test]
        fn never_applies_before_every_earlier_wave_is_done(
            members in members_strategy(), raw in reports_strategy(), now in 0i64..300,
        ) {
            let waves = vec![wave("w0", None, 0), wave("w1", None, 1), wave("w2", None, 1)];
            let reports = build(&members, &raw);
            let r = Rollout { waves: &waves, members: &members, failure_budget: 8, stale_after: Duration::hours(72) };
            for wave in 0..3 {
                if r.decide(wave, "c1", &reports, t(now)) == Decision::Apply {
                    for (h, w) in &members {
                        let live = reports.get(h).is_none_or(|rep| t(now) - rep.at <= Duration::hours(72));
                        if *w < wave && live {
                            let ok = reports.get(h).is_some_and(|rep| rep.change == "c1" && rep.outcome == Outcome::Success);
                            prop_assert!(ok, "{h} in wave {w} not done, wave {wave} applied");
                        }
                    }
                }
            }
        }

        #[test]
        fn failures_beyond_the_budget_stop_every_later_wave(
            members in members_strategy(), raw in reports_strategy(), now in 0i64..300, budget in 0usize..3,
        ) {
            let waves = vec![wave("w0", None, 0), wave("w1", None, 0), wave("w2", None, 0)];
            let reports = build(&members, &raw);
            let r = Rollout { waves: &waves, members: &members, failure_budget: budget, stale_after: Duration::hours(72) };
            let failed = members.keys().filter(|h| reports.get(*h).is_some_and(|rep|
                rep.change == "c1" && rep.outcome == Outcome::Failed && t(now) - rep.at <= Duration::hours(72))).count();
            if failed > budget {
                for wave in 1..3 {
                    let halted = matches!(r.decide(wave, "c1", &reports, t(now)), Decision::Halted { .. });
                    prop_assert!(halted, "wave {} applied or waited with {} failures", wave, failed);
                }
            }
        }

        #[test]
        fn stale_hosts_neither_count_nor_block(
            members in members_strategy(), raw in reports_strategy(),
        ) {
            let waves = vec![wave("w0", None, 0), wave("w1", None, 0)];
            let reports = build(&members, &raw);
            let r = Rollout { waves: &waves, members: &members, failure_budget: 0, stale_after: Duration::hours(1) };
            // Long after every report: every host with a report is stale; only report-less
            // hosts of wave 0 can block wave 1, and no failure counts.
            let now = t(10_000);
            let blockers = members.iter().any(|(h, w)| *w == 0 && !reports.contains_key(h));
            let d = r.decide(1, "c1", &reports, now);
            let halted = matches!(d, Decision::Halted { .. });
            prop_assert!(!halted, "stale failures halted the rollout");
            prop_assert_eq!(d == Decision::Apply, !blockers);
        }
    }
}
