//! The pool's rollout as one pass asks it (docs/contract.md §5): which wave this host is in,
//! and whether it may apply the pool's current change now. The decision is `rollout`'s, a pure
//! function of the waves, the reports and the clock; this file gathers its inputs: the pool's
//! refs of the status repository (a ref-prefix fetch, bounded in time), each reporting host's
//! key and labels from its manifest at this host's own target commit, and the reports those
//! keys verify. Anything that cannot be read makes a later wave wait, never apply: a rollout
//! fails safe.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::{DateTime, Utc};

use super::{Hold, WaveInfo};
use crate::config::AgentConfig;
use crate::keys::Key;
use crate::manifest::{Host, RolloutSpec};
use crate::resolve::Resolved;
use crate::rollout::{self, Decision, Wait};
use crate::state::RolloutRecord;
use crate::status_repo::{self, StatusRemote};

/// A Host manifest larger than this is not read for its key (a real one is a few hundred bytes).
const MAX_HOST_MANIFEST: usize = 64 * 1024;

/// This host's wave, and the pool's waves as the decision takes them; `None` without
/// `rollout:` (or with waves `validate` refuses: then the pool is one wave, and says so).
pub(super) fn place(resolved: &Resolved) -> Option<(WaveInfo, Vec<rollout::Wave>)> {
    match rollout::place(resolved) {
        Ok(p) => p.map(|(p, waves)| {
            let info = WaveInfo {
                index: p.index,
                name: p.name,
                of: p.of,
            };
            (info, waves)
        }),
        Err(e) => {
            tracing::warn!("the pool's rollout is invalid ({e}); treating the pool as one wave");
            None
        }
    }
}

/// What the status repository says of the pool's current change.
pub(super) struct Peers {
    /// Hostname → its wave and its newest valid report, as the decision reads it.
    pub reports: BTreeMap<String, rollout::Report>,
    /// Each host of the pool that reported, and its wave.
    pub members: BTreeMap<String, usize>,
}

/// Whether a host in wave `info` may apply `change` now: `None` when it may, else the hold.
/// Wave 0 never asks anyone.
#[allow(clippy::too_many_arguments)]
pub(super) fn hold(
    cfg: &AgentConfig,
    fleet_repo: &Path,
    tree: &str,
    resolved: &Resolved,
    info: &WaveInfo,
    waves: &[rollout::Wave],
    change: &str,
    record: &mut RolloutRecord,
    now: DateTime<Utc>,
) -> Option<Hold> {
    if info.index == 0 {
        return None;
    }
    let waiting = |waits: String| {
        Some(Hold::Wave {
            wave: info.name.clone(),
            waits,
        })
    };
    let Some(remote) = StatusRemote::from_config(cfg) else {
        return waiting(format!(
            "the reports of wave {}, which this host cannot read: agent.yaml has no `status_repo:`",
            waves[info.index - 1].name
        ));
    };
    let peers = match read_peers(cfg, &remote, fleet_repo, tree, resolved, waves, record) {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!("{e}");
            return waiting(format!(
                "the status repository, which cannot be read ({e}); later waves wait until it can"
            ));
        }
    };
    let spec = resolved.gates.rollout.as_ref()?;
    decide(spec, waves, info, change, &peers, now)
}

/// The decision, from what was read.
fn decide(
    spec: &RolloutSpec,
    waves: &[rollout::Wave],
    info: &WaveInfo,
    change: &str,
    peers: &Peers,
    now: DateTime<Utc>,
) -> Option<Hold> {
    let decision = rollout::Rollout {
        waves,
        members: &peers.members,
        failure_budget: usize::try_from(spec.failure_budget).unwrap_or(usize::MAX),
        stale_after: chrono::Duration::from_std(spec.stale_after())
            .unwrap_or(chrono::Duration::MAX),
    }
    .decide(info.index, change, &peers.reports, now);
    match decision {
        Decision::Apply => None,
        Decision::Halted { failed } => Some(Hold::Halted {
            failed,
            budget: spec.failure_budget,
        }),
        Decision::Wait(Wait::WaveNotDone { wave, missing }) => Some(Hold::Wave {
            wave: info.name.clone(),
            waits: format!(
                "wave {} to finish: {} not reported success on change {} yet",
                waves.get(wave).map_or("?", |w| w.name.as_str()),
                listed(&missing),
                super::short(change)
            ),
        }),
        Decision::Wait(Wait::Soaking { until }) => Some(Hold::Wave {
            wave: info.name.clone(),
            waits: format!(
                "the soak of wave {}: it may start at {}",
                info.name,
                until.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
            ),
        }),
    }
}

/// At most five names, then how many more.
fn listed(hosts: &[String]) -> String {
    let shown: Vec<&str> = hosts.iter().take(5).map(String::as_str).collect();
    match hosts.len() {
        n if n > 5 => format!("{} and {} more have", shown.join(", "), n - 5),
        1 => format!("{} has", shown.join(", ")),
        _ => format!("{} have", shown.join(", ")),
    }
}

/// Fetches the pool's refs, and keeps the reports the reporting hosts' keys verify.
fn read_peers(
    cfg: &AgentConfig,
    remote: &StatusRemote,
    fleet_repo: &Path,
    tree: &str,
    resolved: &Resolved,
    waves: &[rollout::Wave],
    record: &mut RolloutRecord,
) -> Result<Peers, String> {
    let local = cfg.status_dir();
    status_repo::fetch_pool(remote, &local, &resolved.pool).map_err(|e| e.to_string())?;
    let manifests = HostManifests::open(fleet_repo, tree)?;
    let members = members(&manifests, resolved, waves)?;
    // Asked by the verifying threads one at a time (a repository handle is not shared).
    let shared = std::sync::Mutex::new(manifests);
    let keys = |host: &str| shared.lock().ok().and_then(|m| m.key(host));
    let read = status_repo::read_pool(&local, &resolved.pool, &keys, &resolved.fleet, &record.seen)
        .map_err(|e| e.to_string())?;
    for (host, why) in &read.rejected {
        tracing::warn!("ignoring the report under host {host}: {why}");
        *record.rejected.entry(why.label().to_owned()).or_insert(0) += 1;
    }
    let mut peers = Peers {
        reports: BTreeMap::new(),
        members,
    };
    for (host, r) in read.valid {
        record.seen.insert(host.clone(), r.sequence);
        // A report under the pool's prefix from a host the pool does not hold is not counted.
        let Some(&wave) = peers.members.get(&host) else {
            continue;
        };
        if r.rollout.is_none() {
            continue;
        }
        // The wave this host computes from the manifest, not the one the report claims.
        let report = rollout::Report {
            wave,
            ..rollout::Report::from_host_report(&r)
        };
        peers.reports.insert(host, report);
    }
    Ok(peers)
}

/// The most Host manifests a rollout looks at.
const MAX_MEMBERS: usize = 100_000;

/// The hosts of the pool at this host's target, each with its wave: every Host manifest the
/// pool selects that names a `key:` (without one a host cannot report, and does not count).
/// From the manifests, not from the status repository: a host whose report is missing, forged
/// or unreadable still counts, and blocks later waves until it reports success (or goes stale).
fn members(
    manifests: &HostManifests,
    resolved: &Resolved,
    waves: &[rollout::Wave],
) -> Result<BTreeMap<String, usize>, String> {
    let Some(selector) = &resolved.gates.selector else {
        return Ok(BTreeMap::new());
    };
    if selector.hosts.is_empty() && selector.labels.is_empty() {
        return Ok(BTreeMap::new());
    }
    let mut globs = globset::GlobSetBuilder::new();
    for g in &selector.hosts {
        globs.add(globset::Glob::new(g).map_err(|e| format!("the pool's glob `{g}`: {e}"))?);
    }
    let globs = globs.build().map_err(|e| e.to_string())?;
    let names = manifests.host_files()?;
    if names.len() > MAX_MEMBERS {
        return Err(format!(
            "hosts/ holds {} files, more than the {MAX_MEMBERS} a rollout reads",
            names.len()
        ));
    }
    let mut members = BTreeMap::new();
    for host in names {
        if !selector.hosts.is_empty() && !globs.is_match(&host) {
            continue;
        }
        let Some(manifest) = manifests.manifest(&host) else {
            continue;
        };
        let selected = selector
            .labels
            .iter()
            .all(|(k, v)| manifest.labels.get(k) == Some(v));
        if selected && manifest.key.is_some() {
            let wave = rollout::wave_of(
                &resolved.fleet,
                &resolved.pool,
                &host,
                &manifest.labels,
                waves,
            );
            members.insert(host, wave);
        }
    }
    Ok(members)
}

/// Other hosts' manifests at this host's target: their keys and labels, read one file each.
struct HostManifests {
    repo: crate::source::Repo,
    tree: gix::ObjectId,
    cache: std::cell::RefCell<BTreeMap<String, Option<Host>>>,
}

impl HostManifests {
    fn open(fleet_repo: &Path, tree: &str) -> Result<HostManifests, String> {
        let repo = crate::source::Repo::open(fleet_repo).map_err(|e| e.to_string())?;
        let tree = gix::ObjectId::from_hex(tree.as_bytes()).map_err(|e| e.to_string())?;
        Ok(HostManifests {
            repo,
            tree,
            cache: std::cell::RefCell::new(BTreeMap::new()),
        })
    }

    fn manifest(&self, host: &str) -> Option<Host> {
        if let Some(m) = self.cache.borrow().get(host) {
            return m.clone();
        }
        let found = ["yaml", "yml"].iter().find_map(|ext| {
            let bytes = self
                .repo
                .file_in_tree(self.tree, &format!("hosts/{host}.{ext}"))
                .ok()
                .flatten()?;
            if bytes.len() > MAX_HOST_MANIFEST {
                return None;
            }
            serde_yaml::from_slice::<Host>(&bytes)
                .ok()
                .filter(|h| h.name.as_str() == host)
        });
        self.cache
            .borrow_mut()
            .insert(host.to_owned(), found.clone());
        found
    }

    /// The hostnames of `hosts/*.yaml` (and `.yml`).
    fn host_files(&self) -> Result<Vec<String>, String> {
        let listed = self
            .repo
            .tree_files(self.tree)
            .list("hosts")
            .map_err(|e| e.to_string())?;
        let Ok(names) = listed else {
            return Ok(Vec::new());
        };
        Ok(names
            .iter()
            .filter_map(|n| n.strip_suffix(".yaml").or_else(|| n.strip_suffix(".yml")))
            .map(str::to_owned)
            .collect())
    }

    fn key(&self, host: &str) -> Option<Key> {
        let text = self.manifest(host)?.key?;
        crate::keys::parse_key(&format!("hosts/{host}.yaml key"), &text).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> RolloutSpec {
        serde_yaml::from_str(
            "waves:\n  - {name: canary, hosts: [ws-01]}\n  - {name: rest, percent: 100, soak: 1h}\nfailure_budget: 0\n",
        )
        .unwrap()
    }

    fn report(host: &str, outcome: rollout::Outcome, at: DateTime<Utc>) -> rollout::Report {
        rollout::Report {
            host: host.into(),
            wave: 0,
            change: "c".repeat(40),
            outcome,
            at,
        }
    }

    #[test]
    fn what_a_later_wave_waits_for_in_words() {
        let spec = spec();
        let waves = rollout::waves(&spec).unwrap();
        let info = WaveInfo {
            index: 1,
            name: "rest".into(),
            of: 2,
        };
        let now = Utc::now();
        let change = "c".repeat(40);
        let mut peers = Peers {
            reports: BTreeMap::new(),
            members: [("ws-01".to_owned(), 0), ("ws-02".to_owned(), 1)].into(),
        };
        let words = |peers: &Peers| match decide(&spec, &waves, &info, &change, peers, now) {
            Some(Hold::Wave { waits, .. }) => waits,
            other => format!("{other:?}"),
        };
        assert_eq!(
            words(&peers),
            "wave canary to finish: ws-01 has not reported success on change cccccccccccc yet"
        );
        let done = now - chrono::Duration::minutes(10);
        peers.reports.insert(
            "ws-01".into(),
            report("ws-01", rollout::Outcome::Success, done),
        );
        assert!(words(&peers).starts_with("the soak of wave rest: it may start at "));
        peers.reports.insert(
            "ws-01".into(),
            report(
                "ws-01",
                rollout::Outcome::Success,
                done - chrono::Duration::hours(1),
            ),
        );
        assert_eq!(decide(&spec, &waves, &info, &change, &peers, now), None);
        peers.reports.insert(
            "ws-01".into(),
            report("ws-01", rollout::Outcome::Failed, done),
        );
        assert_eq!(
            decide(&spec, &waves, &info, &change, &peers, now),
            Some(Hold::Halted {
                failed: vec!["ws-01".into()],
                budget: 0
            })
        );
    }

    #[test]
    fn long_lists_are_cut() {
        let hosts: Vec<String> = (1..=7).map(|i| format!("ws-0{i}")).collect();
        assert_eq!(
            listed(&hosts),
            "ws-01, ws-02, ws-03, ws-04, ws-05 and 2 more have"
        );
        assert_eq!(listed(&hosts[..2]), "ws-01, ws-02 have");
    }
}
