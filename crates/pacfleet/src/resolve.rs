//! Resolution: for one host, which pool it belongs to and exactly what it should have —
//! the desired explicit packages (with who asked for each), the pins of the pool's generation,
//! and the pool's policy (prune, window, paused). Pure: plain data in, plain data out.
//!
//! The rules are docs/contract.md §1.7: a host is in exactly one pool; desired = the pool's sets
//! (with includes) + pool packages + host packages, minus every exclude (from any of those).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::manifest::{Fleet, Host, PackageRef, Pin, Pool, Window};

/// Who asked for a package.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Origin {
    /// A package set (possibly reached through includes).
    Set(String),
    /// The pool's inline `packages`.
    Pool(String),
    /// The Host manifest.
    Host(String),
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Set(s) => write!(f, "set {s}"),
            Origin::Pool(p) => write!(f, "pool {p}"),
            Origin::Host(h) => write!(f, "host {h}"),
        }
    }
}

impl Serialize for Origin {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Reads back what [`Serialize`] wrote (`set base`, `pool web`, `host ws-01`): a resolution a
/// host keeps for its next passes (`state::ConvergedInputs`).
impl<'de> Deserialize<'de> for Origin {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        match text.split_once(' ') {
            Some(("set", name)) => Ok(Origin::Set(name.to_owned())),
            Some(("pool", name)) => Ok(Origin::Pool(name.to_owned())),
            Some(("host", name)) => Ok(Origin::Host(name.to_owned())),
            _ => Err(serde::de::Error::custom(format!(
                "`{text}` is not `set NAME`, `pool NAME` or `host NAME`"
            ))),
        }
    }
}

/// One desired explicit package.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Desired {
    /// Everyone who asked for it.
    pub origins: BTreeSet<Origin>,
    /// The sync repository it must come from, when a `{name, repo}` entry said so.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repo: Option<String>,
}

/// What one host should have.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resolved {
    /// The hostname resolved for.
    pub host: String,
    /// The fleet's name.
    pub fleet: String,
    /// The pool the host belongs to.
    pub pool: String,
    /// Desired explicit packages by name.
    pub explicit: BTreeMap<String, Desired>,
    /// Packages some set, pool or host asked for but an exclude removed, with who excluded.
    pub excluded: BTreeMap<String, BTreeSet<Origin>>,
    /// The pinned generation; `None`: the pool floats.
    pub generation: Option<u32>,
    /// The archive date the host's repositories come from ([`snapshot`]: the generation's
    /// for a pinned pool, the pool's own for a floating one); `None`: the host's mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// Every pinned version (the whole lock, dependencies included); empty when floating.
    pub pins: BTreeMap<String, Pin>,
    /// Remove pacfleet-installed packages that are no longer desired.
    pub prune: bool,
    /// When changes may be applied.
    pub window: Option<Window>,
    /// Plan and report only.
    pub paused: bool,
    /// The fleet's archive: where exact old versions and the snapshot's repositories come
    /// from.
    pub archive: Option<String>,
    /// The pool's rollout and health check, and the labels its waves select this host by.
    #[serde(default)]
    pub gates: Gates,
}

/// What stands between a resolved change and this host, beyond the window: the pool's waves
/// and its health check.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gates {
    /// The pool's `rollout:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<crate::manifest::RolloutSpec>,
    /// The pool's `health:`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<crate::manifest::HealthSpec>,
    /// This host's labels (its Host manifest's), which waves may select on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Who the pool selects (its `hosts:` globs and `labels:`), with `rollout:`: a rollout
    /// waits for every host of the pool that has a key, whether or not it has reported.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<Selector>,
    /// The files the pool's desired state is made of — its pool file, the package sets it
    /// reaches, its generation — whose history names the current change (its rollout id).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<String>,
}

/// The hosts a pool selects: a hostname matching one of `hosts` (when there are any) and a
/// Host manifest with every one of `labels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Selector {
    /// The pool's `hosts:` globs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// The pool's `labels:`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

/// The files of `fleet` that make up `pool`'s desired state: the pool file, every package set
/// it reaches through includes, and its pinned generation, in that order.
pub fn pool_files(
    fleet: &Fleet,
    pool: &crate::manifest::Doc<crate::manifest::Pool>,
) -> Vec<String> {
    let mut files = vec![pool.file.clone()];
    let mut seen = BTreeSet::new();
    let mut todo: Vec<&crate::manifest::Name> = pool.spec.package_sets.iter().collect();
    while let Some(name) = todo.pop() {
        if !seen.insert(name.as_str().to_owned()) {
            continue;
        }
        if let Some(set) = fleet.sets.get(name) {
            files.push(set.file.clone());
            todo.extend(set.spec.include.iter());
        }
    }
    files[1..].sort();
    if let Some(g) = pool
        .spec
        .generation
        .and_then(|n| fleet.generations.get(&(pool.spec.name.clone(), n)))
    {
        files.push(g.file.clone());
    }
    files
}

/// Resolution failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResolveError {
    /// More than one pool matches the host.
    #[error(
        "host `{host}` is matched by {} pools: {}; a host belongs to exactly one pool, so narrow the `hosts:` globs or `labels:` of all but one",
        .pools.len(),
        .pools.iter().map(|(p, f)| format!("`{p}` ({f})")).collect::<Vec<_>>().join(", ")
    )]
    TwoPools {
        /// The host.
        host: String,
        /// (pool name, file) of every matching pool.
        pools: Vec<(String, String)>,
    },
}

/// The pools (name, file) that select `hostname` (see [`Fleet::pools_selecting`]).
pub fn matching_pools(fleet: &Fleet, hostname: &str) -> Vec<(String, String)> {
    fleet
        .pools_selecting(hostname)
        .into_iter()
        .map(|p| (p.spec.name.to_string(), p.file.clone()))
        .collect()
}

/// The desired explicit packages of `pool` (and `host`, if given), and what excludes removed.
pub fn desired(
    fleet: &Fleet,
    pool: &Pool,
    host: Option<&Host>,
) -> (
    BTreeMap<String, Desired>,
    BTreeMap<String, BTreeSet<Origin>>,
) {
    desired_only(fleet, pool, host, None)
}

/// [`desired`], for the packages named in `only` (all when `None`). What a package resolves to
/// depends only on the references and excludes that name it, so this is exactly `desired`
/// restricted to those names; `diff` uses it for the few packages a Host manifest names.
pub fn desired_only(
    fleet: &Fleet,
    pool: &Pool,
    host: Option<&Host>,
    only: Option<&BTreeSet<&str>>,
) -> (
    BTreeMap<String, Desired>,
    BTreeMap<String, BTreeSet<Origin>>,
) {
    let wanted_name = |name: &str| only.is_none_or(|o| o.contains(name));
    let mut wanted: BTreeMap<String, Desired> = BTreeMap::new();
    let mut excludes: BTreeMap<String, BTreeSet<Origin>> = BTreeMap::new();
    let mut add = |refs: &[PackageRef], origin: &Origin| {
        for r in refs.iter().filter(|r| wanted_name(r.name().as_str())) {
            let d = wanted
                .entry(r.name().to_string())
                .or_insert_with(|| Desired {
                    origins: BTreeSet::new(),
                    repo: None,
                });
            d.origins.insert(origin.clone());
            if let Some(repo) = r.repo() {
                d.repo = Some(repo.to_string());
            }
        }
    };
    let mut seen = BTreeSet::new();
    let mut stack: Vec<&str> = pool.package_sets.iter().rev().map(|n| n.as_str()).collect();
    let mut set_excludes = Vec::new();
    while let Some(name) = stack.pop() {
        if !seen.insert(name) {
            continue; // already expanded (diamond includes) or a cycle, which `validate` reports
        }
        let Some(set) = fleet.sets.get(name) else {
            continue;
        };
        let origin = Origin::Set(name.to_owned());
        add(&set.spec.packages, &origin);
        set_excludes.push((origin, &set.spec.exclude));
        stack.extend(set.spec.include.iter().rev().map(|n| n.as_str()));
    }
    let pool_origin = Origin::Pool(pool.name.to_string());
    add(&pool.packages, &pool_origin);
    set_excludes.push((pool_origin, &pool.exclude));
    if let Some(h) = host {
        let origin = Origin::Host(h.name.to_string());
        add(&h.packages, &origin);
        set_excludes.push((origin, &h.exclude));
    }
    for (origin, names) in set_excludes {
        for n in names.iter().filter(|n| wanted_name(n.as_str())) {
            if wanted.remove(n.as_str()).is_some() || excludes.contains_key(n.as_str()) {
                excludes
                    .entry(n.to_string())
                    .or_default()
                    .insert(origin.clone());
            }
        }
    }
    (wanted, excludes)
}

/// The archive date `pool`'s hosts take their repositories from: a pinned pool's is its
/// generation's `snapshot:` (a lock says where its versions came from; `validate` allows the
/// pool's own `snapshot:` beside it only when equal), a floating pool's is its own. `None`:
/// the hosts' mirrors.
pub fn snapshot<'a>(fleet: &'a Fleet, pool: &'a Pool) -> Option<&'a str> {
    match pool.generation {
        Some(n) => fleet
            .generations
            .get(&(pool.name.clone(), n))
            .and_then(|g| g.spec.snapshot.as_deref()),
        None => pool.snapshot.as_deref(),
    }
}

/// Resolves `hostname` against `fleet`: `Ok(None)` when no pool selects it ("not in the
/// fleet": nothing is done), an error when two or more do.
pub fn resolve(fleet: &Fleet, hostname: &str) -> Result<Option<Resolved>, ResolveError> {
    let pools = matching_pools(fleet, hostname);
    let pool_name = match pools.as_slice() {
        [] => return Ok(None),
        [(p, _)] => p.clone(),
        _ => {
            return Err(ResolveError::TwoPools {
                host: hostname.to_owned(),
                pools,
            });
        }
    };
    let Some(pool) = fleet.pools.get(pool_name.as_str()) else {
        return Ok(None); // unreachable: the name came from this map
    };
    let files = pool_files(fleet, pool);
    let pool = &pool.spec;
    let host = fleet.hosts.get(hostname).map(|h| &h.spec);
    let (explicit, excluded) = desired(fleet, pool, host);
    let generation = pool
        .generation
        .and_then(|n| fleet.generations.get(&(pool.name.clone(), n)))
        .map(|g| &g.spec);
    Ok(Some(Resolved {
        host: hostname.to_owned(),
        fleet: fleet.name().to_string(),
        pool: pool_name,
        explicit,
        excluded,
        generation: pool.generation,
        snapshot: snapshot(fleet, pool).map(str::to_owned),
        pins: generation
            .map(|g| {
                g.packages
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.clone()))
                    .collect()
            })
            .unwrap_or_default(),
        prune: pool.prune,
        window: pool.window.clone(),
        paused: pool.paused,
        archive: fleet.fleet.spec.archive.clone(),
        gates: Gates {
            rollout: pool.rollout.clone(),
            health: pool.health.clone(),
            labels: host.map(|h| h.labels.clone()).unwrap_or_default(),
            selector: pool.rollout.as_ref().map(|_| Selector {
                hosts: pool.hosts.clone(),
                labels: pool.labels.clone(),
            }),
            files,
        },
    }))
}

/// The fleet-wide rules that need resolution, for `validate` (every host of the fleet; a host's
/// own pass resolves only itself): no host is claimed by two pools; a pinned pool's snapshot
/// agrees with its generation's, and a snapshot in effect has the fleet's archive; a pinned
/// pool's generation pins every package its pool asks for, and every package a Host manifest
/// adds. Each problem is pushed to `diags`, located in `files`. For one host's read
/// (`Scope::Host`) only that host can be claimed by two pools here.
pub fn check_fleet(
    fleet: &Fleet,
    files: &crate::manifest::FleetFiles,
    diags: &mut Vec<crate::manifest::Diagnostic>,
    scope: &crate::manifest::Scope,
) {
    use crate::manifest::Seg;
    use std::collections::{BTreeMap, BTreeSet};
    let mut at = |file: &str, path: &[Seg<'_>], message: String| {
        diags.push(crate::manifest::diagnostic_at(files, file, path, message));
    };
    // Hosts claimed by two pools: every Host manifest, and every literal hostname in a pool.
    let mut candidates: Vec<(String, String, Option<usize>)> = fleet
        .hosts
        .values()
        .map(|h| (h.spec.name.to_string(), h.file.clone(), None))
        .collect();
    for pool in fleet.pools.values() {
        for (i, g) in pool.spec.hosts.iter().enumerate() {
            if !g.contains(['*', '?', '[', '{']) && !fleet.hosts.contains_key(g.as_str()) {
                candidates.push((g.clone(), pool.file.clone(), Some(i)));
            }
        }
    }
    let mut reported = BTreeSet::new();
    for (host, file, idx) in candidates
        .into_iter()
        .filter(|(host, _, _)| scope.has_host(host))
    {
        let matching = matching_pools(fleet, &host);
        if matching.len() > 1 && reported.insert(host.clone()) {
            let err = ResolveError::TwoPools {
                host,
                pools: matching,
            };
            match idx {
                None => at(&file, &[Seg::Key("name")], err.to_string()),
                Some(i) => at(&file, &[Seg::Key("hosts"), Seg::Index(i)], err.to_string()),
            }
        }
    }

    // Snapshots: a pinned pool's is its generation's, so the pool may repeat it but not
    // contradict it; and whichever is in effect needs the fleet's archive.
    for pool in fleet.pools.values() {
        let p = &pool.spec;
        let generation = p
            .generation
            .and_then(|n| fleet.generations.get(&(p.name.clone(), n)));
        if let (Some(own), Some(g)) = (&p.snapshot, generation)
            && g.spec.snapshot.as_ref() != Some(own)
        {
            let theirs = match &g.spec.snapshot {
                Some(d) => format!("says `snapshot: {d}`"),
                None => "has no `snapshot:`".to_owned(),
            };
            at(
                &pool.file,
                &[Seg::Key("snapshot")],
                format!(
                    "pool `{}` says `snapshot: {own}`, but its generation {} ({}) {theirs}; a pinned pool takes its repositories from its generation's snapshot: make the two equal, or remove `snapshot:` from {}",
                    p.name, g.spec.number, g.file, pool.file
                ),
            );
        }
        if fleet.fleet.spec.archive.is_none()
            && let Some(date) = snapshot(fleet, p)
        {
            let e = crate::snapshot::SnapshotError::NoArchive {
                date: date.to_owned(),
            };
            match generation {
                Some(g) => at(
                    &g.file,
                    &[Seg::Key("snapshot")],
                    format!("{e} (pool `{}` is pinned to this generation)", p.name),
                ),
                None => at(&pool.file, &[Seg::Key("snapshot")], e.to_string()),
            }
        }
    }

    // Pinned pools: every desired package must be in the lock.
    let mut pinned = BTreeMap::new();
    for pool in fleet.pools.values() {
        let Some(n) = pool.spec.generation else {
            continue;
        };
        let Some(generation) = fleet.generations.get(&(pool.spec.name.clone(), n)) else {
            continue;
        };
        let (wanted, _) = desired(fleet, &pool.spec, None);
        for (name, d) in &wanted {
            if !generation.spec.packages.contains_key(name.as_str()) {
                let who: Vec<String> = d.origins.iter().map(|o| o.to_string()).collect();
                at(
                    &pool.file,
                    &[Seg::Key("generation")],
                    format!(
                        "package `{name}` (asked for by {}) is not pinned in generation {n} ({}); add it to that generation (`fleetctl set-latest` captures one) or stop asking for it",
                        who.join(", "),
                        generation.file
                    ),
                );
            }
        }
        pinned.insert(pool.spec.name.clone(), (pool, n, generation, wanted));
    }
    // ... and so must every package a Host manifest adds in a pinned pool.
    for host in fleet.hosts.values() {
        if host.spec.packages.is_empty() {
            continue;
        }
        for selecting in fleet.pools_selecting(host.spec.name.as_str()) {
            let Some((pool, n, generation, wanted)) = pinned.get(&selecting.spec.name) else {
                continue;
            };
            // Only the packages the host names can differ from the pool's.
            let named = host
                .spec
                .packages
                .iter()
                .map(|r| r.name().as_str())
                .collect();
            let (with_host, _) = desired_only(fleet, &pool.spec, Some(&host.spec), Some(&named));
            for (i, r) in host.spec.packages.iter().enumerate() {
                let name = r.name().as_str();
                if with_host.contains_key(name)
                    && !wanted.contains_key(name)
                    && !generation.spec.packages.contains_key(name)
                {
                    at(
                        &host.file,
                        &[Seg::Key("packages"), Seg::Index(i)],
                        format!(
                            "package `{name}` is not pinned in generation {n} of pool `{}` ({}); pinned pools install only what their generation locks: add it there or remove it here",
                            pool.spec.name, generation.file
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Fleet;

    fn fleet(list: &[(&str, &str)]) -> Fleet {
        match Fleet::from_files(&crate::manifest::test_files(list)) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    fn names(r: &Resolved) -> Vec<&str> {
        r.explicit.keys().map(|s| s.as_str()).collect()
    }

    #[test]
    fn sets_includes_pool_and_host_packages_union() {
        let f = fleet(&[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\ninclude: [tools]\npackages: [bash, {name: openssh, repo: core}]\n",
            ),
            (
                "packages/tools.yaml",
                "kind: PackageSet\nname: tools\npackages: [vim, bash]\n",
            ),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\npackages: [firefox]\n",
            ),
            (
                "hosts/ws-01.yaml",
                "kind: Host\nname: ws-01\npackages: [nvidia]\n",
            ),
        ]);
        let r = resolve(&f, "ws-01").unwrap().unwrap();
        assert_eq!(r.pool, "ws");
        assert_eq!(names(&r), ["bash", "firefox", "nvidia", "openssh", "vim"]);
        let bash: Vec<String> = r.explicit["bash"]
            .origins
            .iter()
            .map(|o| o.to_string())
            .collect();
        assert_eq!(bash, ["set base", "set tools"]);
        assert_eq!(r.explicit["openssh"].repo.as_deref(), Some("core"));
        assert_eq!(
            r.explicit["nvidia"].origins.iter().next(),
            Some(&Origin::Host("ws-01".into()))
        );
        // Another host of the pool does not get ws-01's additions.
        let r2 = resolve(&f, "ws-02").unwrap().unwrap();
        assert_eq!(names(&r2), ["bash", "firefox", "openssh", "vim"]);
        assert!(r2.pins.is_empty() && r2.generation.is_none());
    }

    #[test]
    fn excludes_win_over_every_include() {
        let f = fleet(&[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [nano, vim, less]\nexclude: [less]\n",
            ),
            (
                "packages/more.yaml",
                "kind: PackageSet\nname: more\npackages: [less, nano]\n",
            ),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [ws-01, ws-02]\npackage_sets: [base, more]\npackages: [vim]\nexclude: [nano]\n",
            ),
            (
                "hosts/ws-02.yaml",
                "kind: Host\nname: ws-02\npackages: [nano]\nexclude: [vim]\n",
            ),
        ]);
        let r = resolve(&f, "ws-01").unwrap().unwrap();
        assert_eq!(names(&r), ["vim"]);
        assert_eq!(
            r.excluded.keys().map(|s| s.as_str()).collect::<Vec<_>>(),
            ["less", "nano"]
        );
        // The host's own package is excluded by the pool; the host's exclude beats the pool.
        let r = resolve(&f, "ws-02").unwrap().unwrap();
        assert!(r.explicit.is_empty(), "{:?}", r.explicit);
    }

    #[test]
    fn no_pool_means_not_in_fleet() {
        let f = fleet(&[("pools/ws.yaml", "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\n")]);
        assert_eq!(resolve(&f, "db-01"), Ok(None));
    }

    #[test]
    fn two_pools_is_an_error_naming_both() {
        // Globs can overlap for hosts validate cannot know about; resolve catches them.
        let f = fleet(&[
            ("pools/a.yaml", "kind: Pool\nname: a\nhosts: [\"ws-*\"]\n"),
            ("pools/b.yaml", "kind: Pool\nname: b\nhosts: [\"*-01\"]\n"),
        ]);
        let err = resolve(&f, "ws-01").unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("`a` (pools/a.yaml)") && msg.contains("`b` (pools/b.yaml)"),
            "{msg}"
        );
        assert!(resolve(&f, "ws-02").unwrap().is_some());
    }

    #[test]
    fn labels_select_hosts_with_manifests() {
        let f = fleet(&[
            (
                "pools/gpu.yaml",
                "kind: Pool\nname: gpu\nlabels: {gpu: nvidia}\n",
            ),
            (
                "pools/both.yaml",
                "kind: Pool\nname: both\nhosts: [\"db-*\"]\nlabels: {role: db}\n",
            ),
            (
                "hosts/ws-01.yaml",
                "kind: Host\nname: ws-01\nlabels: {gpu: nvidia}\n",
            ),
            (
                "hosts/db-01.yaml",
                "kind: Host\nname: db-01\nlabels: {role: db}\n",
            ),
            ("hosts/db-02.yaml", "kind: Host\nname: db-02\n"),
        ]);
        assert_eq!(resolve(&f, "ws-01").unwrap().unwrap().pool, "gpu");
        assert_eq!(resolve(&f, "db-01").unwrap().unwrap().pool, "both");
        assert_eq!(
            resolve(&f, "db-02"),
            Ok(None),
            "globs and labels must both match"
        );
        assert_eq!(resolve(&f, "ws-02"), Ok(None), "no manifest, no labels");
    }

    #[test]
    fn generation_pins_and_policy() {
        let f = fleet(&[
            (
                "fleet.yaml",
                "kind: Fleet\nname: acme\narchive: https://archive.archlinux.org\n",
            ),
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [bash]\n",
            ),
            (
                "pools/srv.yaml",
                "kind: Pool\nname: srv\nhosts: [srv-1]\npackage_sets: [base]\ngeneration: 2\nprune: true\npaused: true\nwindow: {cron: \"0 0 2 * * Sat\", duration: 4h}\n",
            ),
            (
                "generations/srv/2.yaml",
                "kind: Generation\npool: srv\nnumber: 2\nsnapshot: 2026-11-20\npackages:\n  bash: {version: 5.2.037-1}\n  readline: {version: 8.2.013-1}\n",
            ),
        ]);
        let r = resolve(&f, "srv-1").unwrap().unwrap();
        assert_eq!(r.generation, Some(2));
        assert_eq!(r.snapshot.as_deref(), Some("2026-11-20"));
        assert_eq!(r.pins["readline"].version, "8.2.013-1");
        assert!(r.prune && r.paused);
        assert_eq!(r.window.as_ref().map(|w| w.duration.as_str()), Some("4h"));
    }

    #[test]
    fn snapshot_is_the_generations_when_pinned_and_the_pools_when_floating() {
        let f = fleet(&[
            (
                "fleet.yaml",
                "kind: Fleet\nname: acme\narchive: file:///srv/ala\n",
            ),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [ws-1]\nsnapshot: 2025-03-01\n",
            ),
            (
                "pools/srv.yaml",
                "kind: Pool\nname: srv\nhosts: [srv-1]\ngeneration: 1\nsnapshot: 2025-04-05\n",
            ),
            (
                "generations/srv/1.yaml",
                "kind: Generation\npool: srv\nnumber: 1\nsnapshot: 2025-04-05\npackages: {}\n",
            ),
            ("pools/db.yaml", "kind: Pool\nname: db\nhosts: [db-1]\n"),
        ]);
        let ws = resolve(&f, "ws-1").unwrap().unwrap();
        assert_eq!(ws.snapshot.as_deref(), Some("2025-03-01"));
        assert_eq!(ws.archive.as_deref(), Some("file:///srv/ala"));
        let srv = resolve(&f, "srv-1").unwrap().unwrap();
        assert_eq!(srv.snapshot.as_deref(), Some("2025-04-05"));
        assert_eq!(resolve(&f, "db-1").unwrap().unwrap().snapshot, None);
    }
}
