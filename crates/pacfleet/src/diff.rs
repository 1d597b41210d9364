//! What changes between two revisions of a fleet, per pool and per host: the data behind `fleetctl
//! diff` (docs/contract.md §3). Pure: two checked [`Fleet`]s in, a [`FleetDiff`] out; reading
//! revisions and rendering text, markdown or JSON is the command's business (src/cli/diff.rs).
//!
//! Per pool, the pool's own desired state (its sets with includes, its `packages`, minus every
//! exclude, no host manifest) and, when pinned, its generation's whole lock are compared:
//! explicit packages added or removed (with who asks, or who excludes), pinned versions
//! upgraded or downgraded (`alpm::vercmp`), pins added or dropped (a pool that becomes pinned or
//! floating, a dependency entering or leaving the lock), a `{name, repo}` repository or a pinned
//! sha256 that changes, the generation number, and the pool's settings (hosts globs, labels,
//! package sets, prune, window, paused, snapshot).
//!
//! Per host that has a Host manifest on either side, is named literally in a pool's `hosts:`,
//! or is asked for by name: its pool on each side (moved, joined, left the fleet), label
//! changes, and its own desired-state changes. A host that stays in its pool shows only what
//! its pool's section does not already say (its Host manifest's packages and excludes); a host
//! that moves shows its whole desired state old pool → new pool.
//!
//! Everything is sorted (pools and hosts by name; package rows by kind, explicit packages before
//! dependencies, then name), so the same two fleets always give the same diff.

use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use crate::manifest::{Fleet, Host, Name, Pin, Pool};
use crate::resolve::{self, Desired, Origin};

/// What happened to one package of a desired state. The order is the order rows are listed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Newly desired explicitly.
    Added,
    /// No longer desired explicitly (no longer asked for, or excluded).
    Removed,
    /// Pinned to a newer version.
    Upgraded,
    /// Pinned to an older version.
    Downgraded,
    /// Now pinned (the pool became pinned, or the package entered the lock).
    Pinned,
    /// No longer pinned (the pool floats now, or the package left the lock).
    Unpinned,
    /// The sync repository a `{name, repo}` entry names changed; `old`/`new` are repositories.
    Repo,
    /// Same pinned version, different sha256; `old`/`new` are the checksums.
    Sha256,
}

impl Change {
    /// Every kind, in listing order.
    pub const ALL: [Change; 8] = [
        Change::Added,
        Change::Removed,
        Change::Upgraded,
        Change::Downgraded,
        Change::Pinned,
        Change::Unpinned,
        Change::Repo,
        Change::Sha256,
    ];

    /// The word used in JSON and human output.
    pub fn as_str(self) -> &'static str {
        match self {
            Change::Added => "added",
            Change::Removed => "removed",
            Change::Upgraded => "upgraded",
            Change::Downgraded => "downgraded",
            Change::Pinned => "pinned",
            Change::Unpinned => "unpinned",
            Change::Repo => "repo",
            Change::Sha256 => "sha256",
        }
    }
}

/// One row of a pool's or host's package changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PackageChange {
    /// Package name.
    pub name: String,
    /// What happened.
    pub change: Change,
    /// Before: the pinned version (`None`: not pinned); for `repo` rows the repository, for
    /// `sha256` rows the checksum.
    pub old: Option<String>,
    /// After, like `old`.
    pub new: Option<String>,
    /// Whether the package is desired explicitly (on either side); `false`: a dependency that
    /// only the generation's lock names.
    pub explicit: bool,
    /// Who asks for it (`set base`, `pool ws`, `host ws-07`): on the new side, or on the old
    /// side for `removed` rows.
    pub origins: Vec<String>,
    /// For `removed` rows: who excludes it on the new side (empty when it is simply no longer
    /// asked for).
    pub excluded_by: Vec<String>,
}

/// One setting that changed; values are rendered as text, `None` when unset or absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Setting {
    /// The field: `hosts`, `labels`, `package_sets`, `prune`, `window`, `paused`, `snapshot`
    /// (pools); `labels` (hosts); `name`, `archive`, `keys` (fleet.yaml).
    pub field: String,
    /// Before.
    pub old: Option<String>,
    /// After.
    pub new: Option<String>,
}

/// A value before and after.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Pair<T> {
    /// Before.
    pub old: Option<T>,
    /// After.
    pub new: Option<T>,
}

/// Whether a pool exists on both sides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PoolStatus {
    /// Only in the new revision.
    Added,
    /// Only in the old revision.
    Removed,
    /// In both, with changes.
    Changed,
}

/// What changes for one pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PoolDiff {
    /// The pool's name.
    pub pool: String,
    /// Added, removed or changed.
    pub status: PoolStatus,
    /// The pinned generation on each side; `None`: floating (or the pool is absent).
    pub generation: Pair<u32>,
    /// Settings that changed.
    pub settings: Vec<Setting>,
    /// Package rows, by kind, then explicit packages before dependencies, then name; none for a removed pool (its hosts leave the fleet,
    /// nothing is uninstalled).
    pub packages: Vec<PackageChange>,
    /// For a floating pool whose snapshot moves from one date to another: what the archive's
    /// repositories hold on each date for its packages. `diff` leaves it `None` (it reads no
    /// archive); `fleetctl diff` fills it ([`snapshot_bump`], [`snapshot_versions`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_versions: Option<SnapshotVersions>,
}

/// What the fleet archive's repositories hold for a floating pool's desired packages on its
/// old and its new snapshot date. Not manifest changes (a pinned pool's lock rows say those):
/// these rows are not in the summary's counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotVersions {
    /// The snapshot before.
    pub old: String,
    /// The snapshot after.
    pub new: String,
    /// The archive read (the new side's `archive:`; the old date is read from the old
    /// side's).
    pub archive: String,
    /// The architecture read (`os/<arch>`).
    pub arch: String,
    /// The repositories read, in the order a package is looked for: core, extra, then those
    /// `{name, repo}` entries name.
    pub repos: Vec<String>,
    /// Whether every repository of both dates could be read. When not, `packages` and
    /// `missing` are empty and `error` says what failed.
    pub reachable: bool,
    /// What failed, when something did: per date, `DATE: URL: what libalpm said`, one line
    /// each.
    pub error: Option<String>,
    /// The desired packages whose version differs between the dates, by change then name.
    pub packages: Vec<SnapshotRow>,
    /// Desired packages in no repository read, on either date.
    pub missing: Vec<String>,
}

/// One desired package whose repository state differs between two snapshot dates.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnapshotRow {
    /// Package name.
    pub name: String,
    /// `upgraded` / `downgraded` (both dates have it), `added` (only the new date has it),
    /// `removed` (only the old date has it), `repo` (the same version in another repository;
    /// `old`/`new` are the repositories).
    pub change: Change,
    /// The version on the old date (`None`: not there).
    pub old: Option<String>,
    /// The version on the new date (`None`: not there).
    pub new: Option<String>,
    /// The repository it is in on the new date (the old date's for `removed` rows).
    pub repo: String,
    /// Who asks for it (the new side).
    pub origins: Vec<String>,
}

/// A floating pool whose snapshot moves from one date to another: the archive read for each
/// date, and the packages to look up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotBump {
    /// The old date and the old side's archive.
    pub old: (String, Option<String>),
    /// The new date and the new side's archive.
    pub new: (String, Option<String>),
    /// The pool's desired explicit packages on the new side.
    pub desired: BTreeMap<String, Desired>,
    /// core, extra, then the repositories `{name, repo}` entries name, each once.
    pub repos: Vec<String>,
}

/// The snapshot bump of pool `name` between `old` and `new`, when it floats on both sides and
/// its snapshot moves from one date to another. A pinned pool's snapshot bump needs no
/// archive: its lock lists every version, and its rows already say how they change.
pub fn snapshot_bump(old: &Fleet, new: &Fleet, name: &str) -> Option<SnapshotBump> {
    let a = &old.pools.get(name)?.spec;
    let b = &new.pools.get(name)?.spec;
    if a.generation.is_some() || b.generation.is_some() {
        return None;
    }
    let (da, db) = (resolve::snapshot(old, a)?, resolve::snapshot(new, b)?);
    if da == db {
        return None;
    }
    let (desired, _) = resolve::desired(new, b, None);
    let mut repos: Vec<String> = vec!["core".into(), "extra".into()];
    for d in desired.values() {
        if let Some(r) = &d.repo
            && !repos.contains(r)
        {
            repos.push(r.clone());
        }
    }
    Some(SnapshotBump {
        old: (da.to_owned(), old.fleet.spec.archive.clone()),
        new: (db.to_owned(), new.fleet.spec.archive.clone()),
        desired,
        repos,
    })
}

/// Where `name` is on one date: the repository its `{name, repo}` entry names, else the first
/// of `repos` that has it.
fn locate<'a>(
    versions: &'a crate::archive::Versions,
    repos: &'a [String],
    name: &str,
    want: &Desired,
) -> Option<(&'a str, &'a str)> {
    repos
        .iter()
        .filter(|r| want.repo.as_ref().is_none_or(|w| w == *r))
        .find_map(|r| {
            versions
                .get(r)
                .and_then(|v| v.get(name))
                .map(|v| (r.as_str(), v.as_str()))
        })
}

/// The rows of `bump` given what each date's repositories hold (`Err`: they could not be
/// read, and why), for `arch`.
pub fn snapshot_versions(
    bump: &SnapshotBump,
    arch: &str,
    old: Result<&crate::archive::Versions, &str>,
    new: Result<&crate::archive::Versions, &str>,
) -> SnapshotVersions {
    let mut out = SnapshotVersions {
        old: bump.old.0.clone(),
        new: bump.new.0.clone(),
        archive: bump.new.1.clone().unwrap_or_default(),
        arch: arch.to_owned(),
        repos: bump.repos.clone(),
        reachable: false,
        error: None,
        packages: Vec::new(),
        missing: Vec::new(),
    };
    let (va, vb) = match (old, new) {
        (Ok(a), Ok(b)) => (a, b),
        (a, b) => {
            let errors: Vec<String> = [(&bump.old.0, a.err()), (&bump.new.0, b.err())]
                .into_iter()
                .filter_map(|(d, e)| e.map(|e| format!("{d}: {e}")))
                .collect();
            out.error = Some(errors.join("\n"));
            return out;
        }
    };
    out.reachable = true;
    for (name, want) in &bump.desired {
        let (a, b) = (
            locate(va, &bump.repos, name, want),
            locate(vb, &bump.repos, name, want),
        );
        let row = |change, old: Option<&str>, new: Option<&str>, repo: &str| SnapshotRow {
            name: name.clone(),
            change,
            old: old.map(str::to_owned),
            new: new.map(str::to_owned),
            repo: repo.to_owned(),
            origins: origins(Some(want)),
        };
        let r = match (a, b) {
            (None, None) => {
                out.missing.push(name.clone());
                continue;
            }
            (None, Some((repo, v))) => row(Change::Added, None, Some(v), repo),
            (Some((repo, v)), None) => row(Change::Removed, Some(v), None, repo),
            (Some((ra, a)), Some((rb, b))) => match alpm::vercmp(a, b) {
                Ordering::Less => row(Change::Upgraded, Some(a), Some(b), rb),
                Ordering::Greater => row(Change::Downgraded, Some(a), Some(b), rb),
                Ordering::Equal if ra != rb => row(Change::Repo, Some(ra), Some(rb), rb),
                Ordering::Equal => continue,
            },
        };
        out.packages.push(r);
    }
    out.packages
        .sort_by(|a, b| (a.change, &a.name).cmp(&(b.change, &b.name)));
    out
}

/// How a host's membership changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// In a different pool.
    Moved,
    /// In no pool before, in one now.
    Joined,
    /// In a pool before, in none now ("not in the fleet": pacfleet does nothing on it).
    Left,
    /// Same pool, with changes of its own.
    Changed,
}

/// What happened to a host's `hosts/<name>.yaml`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ManifestStatus {
    /// Created.
    Added,
    /// Deleted.
    Removed,
    /// Edited.
    Changed,
    /// The same on both sides.
    Unchanged,
    /// The host has no Host manifest on either side.
    None,
}

/// What changes for one host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HostDiff {
    /// The hostname.
    pub host: String,
    /// Moved, joined, left, or changed.
    pub status: HostStatus,
    /// Its pool on each side; `None`: not in the fleet.
    pub pool: Pair<String>,
    /// Its Host manifest.
    pub manifest: ManifestStatus,
    /// Settings that changed (`labels`).
    pub settings: Vec<Setting>,
    /// Package rows: the host's own changes beyond its pool's when it stays, its whole
    /// desired state old pool → new pool when it moves, none when it joins or leaves.
    pub packages: Vec<PackageChange>,
}

/// Counts of pools by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PoolCounts {
    /// Pools only in the new revision.
    pub added: usize,
    /// Pools only in the old revision.
    pub removed: usize,
    /// Pools in both, with changes.
    pub changed: usize,
}

/// Counts of hosts by status.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct HostCounts {
    /// Hosts in another pool.
    pub moved: usize,
    /// Hosts that joined the fleet.
    pub joined: usize,
    /// Hosts that left the fleet.
    pub left: usize,
    /// Hosts with changes of their own in the same pool.
    pub changed: usize,
}

/// Counts of package rows by kind, over every pool and host listed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct PackageCounts {
    /// `added` rows.
    pub added: usize,
    /// `removed` rows.
    pub removed: usize,
    /// `upgraded` rows.
    pub upgraded: usize,
    /// `downgraded` rows.
    pub downgraded: usize,
    /// `pinned` rows.
    pub pinned: usize,
    /// `unpinned` rows.
    pub unpinned: usize,
    /// `repo` rows.
    pub repo: usize,
    /// `sha256` rows.
    pub sha256: usize,
}

impl PackageCounts {
    /// The count of one kind.
    pub fn get(&self, change: Change) -> usize {
        match change {
            Change::Added => self.added,
            Change::Removed => self.removed,
            Change::Upgraded => self.upgraded,
            Change::Downgraded => self.downgraded,
            Change::Pinned => self.pinned,
            Change::Unpinned => self.unpinned,
            Change::Repo => self.repo,
            Change::Sha256 => self.sha256,
        }
    }

    fn bump(&mut self, change: Change) {
        let n = match change {
            Change::Added => &mut self.added,
            Change::Removed => &mut self.removed,
            Change::Upgraded => &mut self.upgraded,
            Change::Downgraded => &mut self.downgraded,
            Change::Pinned => &mut self.pinned,
            Change::Unpinned => &mut self.unpinned,
            Change::Repo => &mut self.repo,
            Change::Sha256 => &mut self.sha256,
        };
        *n += 1;
    }

    /// Counts of `rows`.
    pub fn of(rows: &[PackageChange]) -> PackageCounts {
        let mut c = PackageCounts::default();
        for r in rows {
            c.bump(r.change);
        }
        c
    }

    /// The total number of rows.
    pub fn total(&self) -> usize {
        Change::ALL.iter().map(|c| self.get(*c)).sum()
    }
}

/// Totals of a diff.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Whether anything changes (`fleetctl diff` exits 1 then).
    pub changed: bool,
    /// Settings of fleet.yaml that changed.
    pub fleet: usize,
    /// Pools by status.
    pub pools: PoolCounts,
    /// Hosts by status.
    pub hosts: HostCounts,
    /// Package rows by kind.
    pub packages: PackageCounts,
}

/// Everything that changes between two fleets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetDiff {
    /// Changes to fleet.yaml (`name`, `archive`, `keys`); they concern every pool.
    pub fleet: Vec<Setting>,
    /// Pools that change, by name.
    pub pools: Vec<PoolDiff>,
    /// Hosts that change, by name.
    pub hosts: Vec<HostDiff>,
    /// Totals.
    pub summary: Summary,
}

impl FleetDiff {
    /// Whether nothing changes.
    pub fn is_empty(&self) -> bool {
        self.fleet.is_empty() && self.pools.is_empty() && self.hosts.is_empty()
    }
}

/// Which pools and hosts to report; empty: all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    /// Pools by name: these pools, and hosts in one of them on either side.
    pub pools: Vec<String>,
    /// Hosts by name (considered even without a Host manifest): these hosts, and the pools
    /// they are in on either side.
    pub hosts: Vec<String>,
}

impl Filter {
    fn is_empty(&self) -> bool {
        self.pools.is_empty() && self.hosts.is_empty()
    }
}

/// What `old` → `new` changes, restricted by `filter`.
pub fn diff(old: &Fleet, new: &Fleet, filter: &Filter) -> FleetDiff {
    let fleet = fleet_settings(old, new);

    let pool_names: BTreeSet<&str> = old
        .pools
        .keys()
        .chain(new.pools.keys())
        .map(Name::as_str)
        .collect();
    // Pools the filter's hosts are in, on either side.
    let host_pools: BTreeSet<String> = filter
        .hosts
        .iter()
        .flat_map(|h| [single_pool(old, h), single_pool(new, h)])
        .flatten()
        .collect();
    let pools: Vec<PoolDiff> = pool_names
        .into_iter()
        .filter(|p| {
            filter.is_empty() || filter.pools.iter().any(|f| f == p) || host_pools.contains(*p)
        })
        .filter_map(|p| pool_diff(old, new, p))
        .collect();

    let mut pool_rows = BTreeMap::new();
    let hosts: Vec<HostDiff> = host_candidates(old, new, filter)
        .into_iter()
        .filter_map(|h| host_diff(old, new, &h, &mut pool_rows))
        .filter(|h| {
            filter.is_empty()
                || filter.hosts.contains(&h.host)
                || [&h.pool.old, &h.pool.new]
                    .into_iter()
                    .flatten()
                    .any(|p| filter.pools.contains(p))
        })
        .collect();

    let mut summary = Summary {
        fleet: fleet.len(),
        ..Summary::default()
    };
    for p in &pools {
        match p.status {
            PoolStatus::Added => summary.pools.added += 1,
            PoolStatus::Removed => summary.pools.removed += 1,
            PoolStatus::Changed => summary.pools.changed += 1,
        }
        for r in &p.packages {
            summary.packages.bump(r.change);
        }
    }
    for h in &hosts {
        match h.status {
            HostStatus::Moved => summary.hosts.moved += 1,
            HostStatus::Joined => summary.hosts.joined += 1,
            HostStatus::Left => summary.hosts.left += 1,
            HostStatus::Changed => summary.hosts.changed += 1,
        }
        for r in &h.packages {
            summary.packages.bump(r.change);
        }
    }
    let mut out = FleetDiff {
        fleet,
        pools,
        hosts,
        summary,
    };
    out.summary.changed = !out.is_empty();
    out
}

/// The one pool that selects `host` in `fleet`; `None` for none (or, in a fleet that would not
/// validate, several).
pub fn single_pool(fleet: &Fleet, host: &str) -> Option<String> {
    let mut pools = resolve::matching_pools(fleet, host);
    if pools.len() == 1 {
        pools.pop().map(|(name, _)| name)
    } else {
        None
    }
}

fn fleet_settings(old: &Fleet, new: &Fleet) -> Vec<Setting> {
    let keys = |f: &Fleet| {
        let keys: Vec<String> = f
            .fleet
            .spec
            .keys
            .iter()
            .map(|k| {
                let key: Vec<char> = k.key.trim().chars().collect();
                let tail: String = key[key.len().saturating_sub(8)..].iter().collect();
                format!("{} (…{tail})", k.name)
            })
            .collect();
        (!keys.is_empty()).then(|| keys.join(", "))
    };
    let mut out = Vec::new();
    setting(
        &mut out,
        "name",
        Some(old.name().to_string()),
        Some(new.name().to_string()),
    );
    setting(
        &mut out,
        "archive",
        old.fleet.spec.archive.clone(),
        new.fleet.spec.archive.clone(),
    );
    setting(&mut out, "keys", keys(old), keys(new));
    out
}

fn setting(out: &mut Vec<Setting>, field: &str, old: Option<String>, new: Option<String>) {
    if old != new {
        out.push(Setting {
            field: field.to_owned(),
            old,
            new,
        });
    }
}

fn list<T: std::fmt::Display>(items: &[T]) -> Option<String> {
    (!items.is_empty()).then(|| {
        items
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    })
}

fn labels(map: &BTreeMap<String, String>) -> Option<String> {
    (!map.is_empty()).then(|| {
        map.iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(", ")
    })
}

/// One side of a comparison: a desired state and, when pinned, the lock.
struct Side<'a> {
    explicit: BTreeMap<String, Desired>,
    excluded: BTreeMap<String, BTreeSet<Origin>>,
    pins: Option<&'a BTreeMap<Name, Pin>>,
}

fn side<'a>(
    fleet: &'a Fleet,
    pool: &Pool,
    host: Option<&Host>,
    only: Option<&BTreeSet<&str>>,
) -> Side<'a> {
    let (explicit, excluded) = resolve::desired_only(fleet, pool, host, only);
    let pins = pool
        .generation
        .and_then(|n| fleet.generations.get(&(pool.name.clone(), n)))
        .map(|g| &g.spec.packages);
    Side {
        explicit,
        excluded,
        pins,
    }
}

fn origins(d: Option<&Desired>) -> Vec<String> {
    d.map(|d| d.origins.iter().map(ToString::to_string).collect())
        .unwrap_or_default()
}

/// How package rows are listed: by kind of change, explicit packages first, then by name.
fn row_order(a: &PackageChange, b: &PackageChange) -> Ordering {
    (a.change, !a.explicit, &a.name).cmp(&(b.change, !b.explicit, &b.name))
}

/// The package rows of `old` → `new` (`None`: the pool is absent on that side), in name
/// order; only for the packages in `only` when given.
fn package_changes(
    old: Option<&Side<'_>>,
    new: Option<&Side<'_>>,
    only: Option<&BTreeSet<&str>>,
) -> Vec<PackageChange> {
    let mut names: BTreeSet<&str> = BTreeSet::new();
    for s in [old, new].into_iter().flatten() {
        names.extend(s.explicit.keys().map(String::as_str));
        names.extend(s.pins.into_iter().flat_map(|p| p.keys().map(Name::as_str)));
    }
    if let Some(only) = only {
        names.retain(|n| only.contains(n));
    }
    let mut out = Vec::new();
    for name in names {
        let oe = old.and_then(|s| s.explicit.get(name));
        let ne = new.and_then(|s| s.explicit.get(name));
        let op = old.and_then(|s| s.pins).and_then(|p| p.get(name));
        let np = new.and_then(|s| s.pins).and_then(|p| p.get(name));
        let version = |p: Option<&Pin>| p.map(|p| p.version.clone());
        let mut row = |change, old: Option<String>, new: Option<String>, explicit, origins| {
            out.push(PackageChange {
                name: name.to_owned(),
                change,
                old,
                new,
                explicit,
                origins,
                excluded_by: Vec::new(),
            });
        };
        match (oe, ne) {
            (None, Some(d)) => row(
                Change::Added,
                version(op),
                version(np),
                true,
                origins(Some(d)),
            ),
            (Some(d), None) => {
                row(
                    Change::Removed,
                    version(op),
                    version(np),
                    true,
                    origins(Some(d)),
                );
                let excluded_by = new
                    .and_then(|s| s.excluded.get(name))
                    .map(|o| o.iter().map(ToString::to_string).collect())
                    .unwrap_or_default();
                if let Some(last) = out.last_mut() {
                    last.excluded_by = excluded_by;
                }
            }
            _ => {
                let explicit = ne.is_some();
                match (op, np) {
                    (Some(a), Some(b)) => {
                        match alpm::vercmp(a.version.as_str(), b.version.as_str()) {
                            Ordering::Less => row(
                                Change::Upgraded,
                                version(op),
                                version(np),
                                explicit,
                                origins(ne),
                            ),
                            Ordering::Greater => row(
                                Change::Downgraded,
                                version(op),
                                version(np),
                                explicit,
                                origins(ne),
                            ),
                            Ordering::Equal if a.sha256 != b.sha256 => row(
                                Change::Sha256,
                                a.sha256.clone(),
                                b.sha256.clone(),
                                explicit,
                                origins(ne),
                            ),
                            Ordering::Equal => {}
                        }
                    }
                    (None, Some(_)) => {
                        row(Change::Pinned, None, version(np), explicit, origins(ne));
                    }
                    (Some(_), None) => {
                        row(Change::Unpinned, version(op), None, explicit, origins(ne));
                    }
                    (None, None) => {}
                }
                if let (Some(a), Some(b)) = (oe, ne)
                    && a.repo != b.repo
                {
                    row(
                        Change::Repo,
                        a.repo.clone(),
                        b.repo.clone(),
                        true,
                        origins(ne),
                    );
                }
            }
        }
    }
    out.sort_by(row_order);
    out
}

fn pool_settings(old: Option<(&Fleet, &Pool)>, new: Option<(&Fleet, &Pool)>) -> Vec<Setting> {
    type Get = fn(&Fleet, &Pool) -> Option<String>;
    let fields: [(&str, Get); 7] = [
        ("snapshot", |f, p| {
            resolve::snapshot(f, p).map(str::to_owned)
        }),
        ("hosts", |_, p| list(&p.hosts)),
        ("labels", |_, p| labels(&p.labels)),
        ("package_sets", |_, p| list(&p.package_sets)),
        ("prune", |_, p| Some(p.prune.to_string())),
        ("window", |_, p| {
            p.window
                .as_ref()
                .map(|w| format!("{} for {}", w.cron, w.duration))
        }),
        ("paused", |_, p| Some(p.paused.to_string())),
    ];
    let mut out = Vec::new();
    for (field, get) in fields {
        let o = old.and_then(|(f, p)| get(f, p));
        let n = new.and_then(|(f, p)| get(f, p));
        // A pool that appears or disappears: only the settings it really has.
        let default = |v: &Option<String>| v.is_none() || v.as_deref() == Some("false");
        if (old.is_none() && default(&n)) || (new.is_none() && default(&o)) {
            continue;
        }
        setting(&mut out, field, o, n);
    }
    out
}

fn pool_diff(old: &Fleet, new: &Fleet, name: &str) -> Option<PoolDiff> {
    let a = old.pools.get(name).map(|d| &d.spec);
    let b = new.pools.get(name).map(|d| &d.spec);
    let status = match (a, b) {
        (None, None) => return None,
        (None, Some(_)) => PoolStatus::Added,
        (Some(_), None) => PoolStatus::Removed,
        (Some(_), Some(_)) => PoolStatus::Changed,
    };
    let generation = Pair {
        old: a.and_then(|p| p.generation),
        new: b.and_then(|p| p.generation),
    };
    // A pool that disappears takes its hosts out of the fleet: pacfleet stops managing them and
    // uninstalls nothing, so there are no package rows or settings to show.
    let (settings, packages) = match (a, b) {
        (Some(_), None) => (Vec::new(), Vec::new()),
        _ => {
            let sa = a.map(|p| side(old, p, None, None));
            let sb = b.map(|p| side(new, p, None, None));
            (
                pool_settings(a.map(|p| (old, p)), b.map(|p| (new, p))),
                package_changes(sa.as_ref(), sb.as_ref(), None),
            )
        }
    };
    if status == PoolStatus::Changed
        && packages.is_empty()
        && settings.is_empty()
        && generation.old == generation.new
    {
        return None;
    }
    Some(PoolDiff {
        pool: name.to_owned(),
        status,
        generation,
        settings,
        packages,
        snapshot_versions: None,
    })
}

/// Hosts whose pool or own state can be known from the manifests: every Host manifest, every
/// literal hostname in a pool's `hosts:` (both sides), and the hosts the filter names.
fn host_candidates(old: &Fleet, new: &Fleet, filter: &Filter) -> BTreeSet<String> {
    let mut out: BTreeSet<String> = filter.hosts.iter().cloned().collect();
    for f in [old, new] {
        out.extend(f.hosts.keys().map(ToString::to_string));
        for p in f.pools.values() {
            out.extend(
                p.spec
                    .hosts
                    .iter()
                    .filter(|g| !g.contains(['*', '?', '[', '{']))
                    .cloned(),
            );
        }
    }
    out
}

/// The package rows of pool (old side) → pool (new side), computed once per pair of pools
/// rather than once per host.
type PoolRows = BTreeMap<(String, String), Vec<PackageChange>>;

/// Whether a Host manifest changes its host's desired packages (most only carry labels).
fn contributes(host: Option<&Host>) -> bool {
    host.is_some_and(|h| !h.packages.is_empty() || !h.exclude.is_empty())
}

fn host_diff(old: &Fleet, new: &Fleet, name: &str, pool_rows: &mut PoolRows) -> Option<HostDiff> {
    let pa = single_pool(old, name);
    let pb = single_pool(new, name);
    let ha = old.hosts.get(name).map(|d| &d.spec);
    let hb = new.hosts.get(name).map(|d| &d.spec);
    let manifest = match (ha, hb) {
        (None, None) => ManifestStatus::None,
        (None, Some(_)) => ManifestStatus::Added,
        (Some(_), None) => ManifestStatus::Removed,
        (Some(a), Some(b)) if a == b => ManifestStatus::Unchanged,
        (Some(_), Some(_)) => ManifestStatus::Changed,
    };
    let mut settings = Vec::new();
    setting(
        &mut settings,
        "labels",
        ha.and_then(|h| labels(&h.labels)),
        hb.and_then(|h| labels(&h.labels)),
    );
    let pool_a = pa.as_deref().and_then(|p| old.pools.get(p));
    let pool_b = pb.as_deref().and_then(|p| new.pools.get(p));
    let (status, packages) = match (pool_a, pool_b) {
        (None, None) => return None,
        (None, Some(_)) => (HostStatus::Joined, Vec::new()),
        (Some(_), None) => (HostStatus::Left, Vec::new()),
        // A host that adds nothing of its own has exactly its pool's rows: none of its own when
        // it stays, the pools' when it moves.
        (Some(_), Some(_)) if pa == pb && !contributes(ha) && !contributes(hb) => {
            if settings.is_empty() {
                return None;
            }
            (HostStatus::Changed, Vec::new())
        }
        (Some(p), Some(q)) => {
            // What a package resolves to depends only on what names it, so the host's rows
            // differ from its pools' only for the packages its manifests name: resolve those
            // for the host, take every other row from the pools' (once per pair of pools).
            let pool_rows = pool_rows
                .entry((p.spec.name.to_string(), q.spec.name.to_string()))
                .or_insert_with(|| {
                    package_changes(
                        Some(&side(old, &p.spec, None, None)),
                        Some(&side(new, &q.spec, None, None)),
                        None,
                    )
                });
            let named: BTreeSet<&str> = [ha, hb]
                .into_iter()
                .flatten()
                .flat_map(|h| {
                    h.packages
                        .iter()
                        .map(|r| r.name().as_str())
                        .chain(h.exclude.iter().map(Name::as_str))
                })
                .collect();
            let host_rows = package_changes(
                Some(&side(old, &p.spec, ha, Some(&named))),
                Some(&side(new, &q.spec, hb, Some(&named))),
                Some(&named),
            );
            if pa != pb {
                let mut rows: Vec<PackageChange> = pool_rows
                    .iter()
                    .filter(|r| !named.contains(r.name.as_str()))
                    .cloned()
                    .chain(host_rows)
                    .collect();
                rows.sort_by(row_order);
                (HostStatus::Moved, rows)
            } else {
                let key =
                    |r: &PackageChange| (r.name.clone(), r.change, r.old.clone(), r.new.clone());
                let in_pool: BTreeSet<_> = pool_rows
                    .iter()
                    .filter(|r| named.contains(r.name.as_str()))
                    .map(key)
                    .collect();
                let own: Vec<PackageChange> = host_rows
                    .into_iter()
                    .filter(|r| !in_pool.contains(&key(r)))
                    .collect();
                if own.is_empty() && settings.is_empty() {
                    return None;
                }
                (HostStatus::Changed, own)
            }
        }
    };
    Some(HostDiff {
        host: name.to_owned(),
        status,
        pool: Pair { old: pa, new: pb },
        manifest,
        settings,
        packages,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::FleetFiles;

    const FLEET: &str = "kind: Fleet\nname: acme\narchive: https://archive.example\n";
    const BASE: &str =
        "kind: PackageSet\nname: base\npackages: [bash, vim, {name: openssh, repo: core}]\n";
    const WS: &str = "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\n";
    const SRV: &str = "kind: Pool\nname: srv\nhosts: [\"srv-*\"]\npackage_sets: [base]\ngeneration: 1\nprune: true\n";
    const GEN1: &str = "kind: Generation\npool: srv\nnumber: 1\nsnapshot: 2026-01-01\npackages:\n  bash: {version: 5.2-1}\n  vim: {version: 9.1-1}\n  openssh: {version: 9.9p1-1}\n  glibc: {version: 2.40-1}\n  ncurses: {version: 6.5-1}\n";
    const GEN2: &str = "kind: Generation\npool: srv\nnumber: 2\nsnapshot: 2026-02-01\npackages:\n  bash: {version: 5.2-2}\n  vim: {version: 9.0-1}\n  openssh: {version: 9.9p1-1}\n  glibc: {version: 2.41-1}\n  readline: {version: 8.2-1}\n  tmux: {version: 3.5-1}\n";

    fn fleet(extra: &[(&str, &str)]) -> Fleet {
        let mut all: BTreeMap<&str, &str> = [
            ("fleet.yaml", FLEET),
            ("packages/base.yaml", BASE),
            ("pools/ws.yaml", WS),
            ("pools/srv.yaml", SRV),
            ("generations/srv/1.yaml", GEN1),
            ("generations/srv/2.yaml", GEN2),
        ]
        .into_iter()
        .collect();
        for (p, t) in extra {
            if t.is_empty() {
                all.remove(p);
            } else {
                all.insert(p, t);
            }
        }
        let files = FleetFiles::from_blobs(
            all.iter()
                .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec())),
        );
        match Fleet::from_files(&files) {
            Ok(f) => f,
            Err(e) => panic!("{e}"),
        }
    }

    fn all(old: &Fleet, new: &Fleet) -> FleetDiff {
        diff(old, new, &Filter::default())
    }

    fn rows(rows: &[PackageChange]) -> Vec<String> {
        rows.iter()
            .map(|r| {
                format!(
                    "{} {} {}→{}",
                    r.change.as_str(),
                    r.name,
                    r.old.as_deref().unwrap_or("-"),
                    r.new.as_deref().unwrap_or("-")
                )
            })
            .collect()
    }

    #[test]
    fn same_fleet_is_no_change() {
        let f = fleet(&[]);
        let d = all(&f, &f);
        assert!(d.is_empty() && !d.summary.changed, "{d:#?}");
        assert_eq!(d.summary.packages.total(), 0);
    }

    #[test]
    fn package_added_to_a_set_shows_in_every_pool_using_it() {
        let old = fleet(&[]);
        let new = fleet(&[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [bash, vim, htop, {name: openssh, repo: core}]\n",
            ),
            (
                "generations/srv/1.yaml",
                &format!("{GEN1}  htop: {{version: 3.3-1}}\n"),
            ),
        ]);
        let d = all(&old, &new);
        assert_eq!(d.pools.len(), 2);
        let srv = &d.pools[0];
        assert_eq!(srv.pool, "srv");
        assert_eq!(rows(&srv.packages), ["added htop -→3.3-1"]);
        assert_eq!(srv.packages[0].origins, ["set base"]);
        let ws = &d.pools[1];
        assert_eq!(rows(&ws.packages), ["added htop -→-"]);
        assert_eq!(d.summary.packages.added, 2);
        assert_eq!(d.summary.pools.changed, 2);
        assert!(d.hosts.is_empty());
    }

    #[test]
    fn removed_and_excluded_packages_say_why() {
        let old = fleet(&[]);
        let new = fleet(&[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [bash, {name: openssh, repo: core}]\n",
            ),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\nexclude: [bash]\n",
            ),
        ]);
        let d = all(&old, &new);
        let ws = d.pools.iter().find(|p| p.pool == "ws").unwrap();
        assert_eq!(rows(&ws.packages), ["removed bash -→-", "removed vim -→-"]);
        assert_eq!(ws.packages[0].excluded_by, ["pool ws"]);
        assert_eq!(ws.packages[0].origins, ["set base"]);
        assert!(ws.packages[1].excluded_by.is_empty());
        // In the pinned pool vim stays in the lock: the row shows its pinned version.
        let srv = d.pools.iter().find(|p| p.pool == "srv").unwrap();
        assert_eq!(rows(&srv.packages), ["removed vim 9.1-1→9.1-1"]);
    }

    #[test]
    fn a_floating_pools_snapshot_is_a_setting() {
        let old = fleet(&[]);
        let on = |d: &str| WS.replace("package_sets:", &format!("snapshot: {d}\npackage_sets:"));
        let d1 = fleet(&[("pools/ws.yaml", &on("2026-01-01"))]);
        let d2 = fleet(&[("pools/ws.yaml", &on("2026-02-01"))]);
        let setting = |o: Option<&str>, n: Option<&str>| Setting {
            field: "snapshot".into(),
            old: o.map(Into::into),
            new: n.map(Into::into),
        };
        let d = all(&old, &d1);
        assert_eq!(d.pools.len(), 1);
        assert_eq!(d.pools[0].settings, [setting(None, Some("2026-01-01"))]);
        assert!(d.pools[0].packages.is_empty() && d.summary.changed);
        let d = all(&d1, &d2);
        assert_eq!(
            d.pools[0].settings,
            [setting(Some("2026-01-01"), Some("2026-02-01"))]
        );
        let d = all(&d2, &old);
        assert_eq!(d.pools[0].settings, [setting(Some("2026-02-01"), None)]);
    }

    #[test]
    fn snapshot_bumps_of_floating_pools_compare_the_archives_versions() {
        let on = |d: &str| {
            WS.replace("package_sets:", &format!("snapshot: {d}\npackage_sets:"))
                .replace(
                    "[base]",
                    "[base]\npackages: [tmux, {name: vim, repo: extra}]",
                )
        };
        let (d1, d2) = (on("2026-01-01"), on("2026-02-01"));
        let old = fleet(&[("pools/ws.yaml", &d1)]);
        let new = fleet(&[("pools/ws.yaml", &d2)]);
        // Pinned pools (srv) and unmoved snapshots need no archive.
        assert_eq!(snapshot_bump(&old, &new, "srv"), None);
        assert_eq!(snapshot_bump(&old, &old, "ws"), None);
        assert_eq!(snapshot_bump(&fleet(&[]), &new, "ws"), None);
        let bump = snapshot_bump(&old, &new, "ws").expect("a bump");
        assert_eq!(bump.repos, ["core", "extra"]);
        assert_eq!(bump.old.0, "2026-01-01");
        assert_eq!(bump.new.1.as_deref(), Some("https://archive.example"));
        let versions = |list: &[(&str, &str, &str)]| {
            let mut v = crate::archive::Versions::new();
            for (repo, name, version) in list {
                v.entry(repo.to_string())
                    .or_default()
                    .insert(name.to_string(), version.to_string());
            }
            v
        };
        let a = versions(&[
            ("core", "bash", "5.2-1"),
            ("core", "openssh", "9.9p1-1"),
            ("core", "vim", "9.1-1"),
            ("extra", "vim", "9.0-1"),
            ("extra", "tmux", "3.5-1"),
        ]);
        let b = versions(&[
            ("core", "bash", "5.2-2"),
            ("extra", "openssh", "9.9p1-1"),
            ("core", "vim", "9.2-1"),
            ("extra", "vim", "8.9-1"),
            ("core", "tmux", "3.5-1"),
        ]);
        let s = snapshot_versions(&bump, "x86_64", Ok(&a), Ok(&b));
        assert!(s.reachable && s.error.is_none());
        let rows: Vec<String> = s
            .packages
            .iter()
            .map(|r| {
                format!(
                    "{} {} {}→{} [{}]",
                    r.change.as_str(),
                    r.name,
                    r.old.as_deref().unwrap_or("-"),
                    r.new.as_deref().unwrap_or("-"),
                    r.repo
                )
            })
            .collect();
        // openssh must come from core and vim from extra ({name, repo} entries), whatever
        // the other repositories hold; tmux moved from extra to core.
        assert_eq!(
            rows,
            [
                "removed openssh 9.9p1-1→- [core]",
                "upgraded bash 5.2-1→5.2-2 [core]",
                "downgraded vim 9.0-1→8.9-1 [extra]",
                "repo tmux extra→core [core]",
            ]
        );
        assert!(s.missing.is_empty());
        let s = snapshot_versions(&bump, "x86_64", Err("gone"), Ok(&b));
        assert!(!s.reachable && s.packages.is_empty());
        assert_eq!(s.error.as_deref(), Some("2026-01-01: gone"));
    }

    #[test]
    fn generation_bump_up_and_down() {
        let old = fleet(&[]);
        let new = fleet(&[(
            "pools/srv.yaml",
            &SRV.replace("generation: 1", "generation: 2"),
        )]);
        let d = all(&old, &new);
        assert_eq!(d.pools.len(), 1);
        let srv = &d.pools[0];
        assert_eq!(
            srv.generation,
            Pair {
                old: Some(1),
                new: Some(2)
            }
        );
        assert_eq!(
            rows(&srv.packages),
            [
                "upgraded bash 5.2-1→5.2-2",
                "upgraded glibc 2.40-1→2.41-1",
                "downgraded vim 9.1-1→9.0-1",
                "pinned readline -→8.2-1",
                "pinned tmux -→3.5-1",
                "unpinned ncurses 6.5-1→-",
            ]
        );
        assert!(srv.packages[0].explicit && !srv.packages[1].explicit);
        assert_eq!(
            srv.settings,
            [Setting {
                field: "snapshot".into(),
                old: Some("2026-01-01".into()),
                new: Some("2026-02-01".into())
            }]
        );
        // And back down: the mirror image.
        let back = all(&new, &old);
        assert_eq!(
            rows(&back.pools[0].packages),
            [
                "upgraded vim 9.0-1→9.1-1",
                "downgraded bash 5.2-2→5.2-1",
                "downgraded glibc 2.41-1→2.40-1",
                "pinned ncurses -→6.5-1",
                "unpinned readline 8.2-1→-",
                "unpinned tmux 3.5-1→-",
            ]
        );
        let s = &back.summary.packages;
        assert_eq!(
            (s.upgraded, s.downgraded, s.pinned, s.unpinned),
            (1, 2, 1, 2)
        );
    }

    #[test]
    fn epochs_and_pkgrel_compare_like_pacman() {
        let old = fleet(&[(
            "generations/srv/1.yaml",
            &GEN1.replace("glibc: {version: 2.40-1}", "glibc: {version: 1:2.0-1}"),
        )]);
        let new = fleet(&[(
            "generations/srv/1.yaml",
            &GEN1.replace("glibc: {version: 2.40-1}", "glibc: {version: 2.99-1}"),
        )]);
        let d = all(&old, &new);
        assert_eq!(
            rows(&d.pools[0].packages),
            ["downgraded glibc 1:2.0-1→2.99-1"]
        );
        assert_eq!(d.pools[0].generation.old, d.pools[0].generation.new);
    }

    #[test]
    fn pool_becomes_floating_then_pinned() {
        let pinned = fleet(&[]);
        let floating = fleet(&[("pools/srv.yaml", &SRV.replace("generation: 1\n", ""))]);
        let d = all(&pinned, &floating);
        let srv = &d.pools[0];
        assert_eq!((srv.generation.old, srv.generation.new), (Some(1), None));
        assert_eq!(d.summary.packages.unpinned, 5);
        assert_eq!(
            srv.settings
                .iter()
                .map(|s| s.field.as_str())
                .collect::<Vec<_>>(),
            ["snapshot"]
        );
        let d = all(&floating, &pinned);
        assert_eq!(d.summary.packages.pinned, 5);
        assert!(d.pools[0].packages.iter().all(|r| r.new.is_some()));
    }

    #[test]
    fn settings_repo_and_sha256() {
        let old = fleet(&[]);
        let new = fleet(&[
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [\"ws-*\", laptop-1]\nlabels: {site: lab}\npackage_sets: [base]\nprune: true\npaused: true\nwindow: {cron: \"0 0 2 * * Sat\", duration: 4h}\n",
            ),
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [bash, vim, {name: openssh, repo: extra}]\n",
            ),
            (
                "generations/srv/1.yaml",
                &GEN1.replace(
                    "ncurses: {version: 6.5-1}",
                    &format!("ncurses: {{version: 6.5-1, sha256: {}}}", "a".repeat(64)),
                ),
            ),
        ]);
        let d = all(&old, &new);
        let ws = d.pools.iter().find(|p| p.pool == "ws").unwrap();
        let fields: Vec<String> = ws
            .settings
            .iter()
            .map(|s| format!("{}: {:?} → {:?}", s.field, s.old, s.new))
            .collect();
        assert_eq!(
            fields,
            [
                "hosts: Some(\"ws-*\") → Some(\"ws-*, laptop-1\")",
                "labels: None → Some(\"site=lab\")",
                "prune: Some(\"false\") → Some(\"true\")",
                "window: None → Some(\"0 0 2 * * Sat for 4h\")",
                "paused: Some(\"false\") → Some(\"true\")",
            ]
        );
        assert_eq!(rows(&ws.packages), ["repo openssh core→extra"]);
        let srv = d.pools.iter().find(|p| p.pool == "srv").unwrap();
        assert_eq!(rows(&srv.packages)[0], "repo openssh core→extra");
        assert_eq!(srv.packages[1].change, Change::Sha256);
        assert_eq!(srv.packages[1].old, None);
        // laptop-1 is named literally, but the pool also wants labels, which only a Host
        // manifest has: it does not join.
        assert!(d.hosts.is_empty(), "{:#?}", d.hosts);
        let new = fleet(&[(
            "pools/ws.yaml",
            "kind: Pool\nname: ws\nhosts: [\"ws-*\", laptop-1]\npackage_sets: [base]\n",
        )]);
        let d = all(&old, &new);
        assert_eq!(d.hosts.len(), 1);
        assert_eq!(d.hosts[0].host, "laptop-1");
        assert_eq!(d.hosts[0].status, HostStatus::Joined);
        assert_eq!(d.hosts[0].manifest, ManifestStatus::None);
        assert!(d.hosts[0].packages.is_empty());
    }

    #[test]
    fn pools_added_and_removed() {
        let old = fleet(&[]);
        let new = fleet(&[
            ("pools/ws.yaml", ""),
            (
                "pools/db.yaml",
                "kind: Pool\nname: db\nhosts: [\"db-*\"]\npackages: [postgresql]\nprune: true\n",
            ),
        ]);
        let d = all(&old, &new);
        let status: Vec<(&str, PoolStatus)> = d
            .pools
            .iter()
            .map(|p| (p.pool.as_str(), p.status))
            .collect();
        assert_eq!(
            status,
            [("db", PoolStatus::Added), ("ws", PoolStatus::Removed)]
        );
        assert_eq!(rows(&d.pools[0].packages), ["added postgresql -→-"]);
        assert_eq!(d.pools[0].packages[0].origins, ["pool db"]);
        // Only the settings the new pool has; false and unset ones are left out.
        assert_eq!(
            d.pools[0]
                .settings
                .iter()
                .map(|s| s.field.as_str())
                .collect::<Vec<_>>(),
            ["hosts", "prune"]
        );
        // A removed pool's hosts leave the fleet; nothing is uninstalled, so no rows.
        assert!(d.pools[1].packages.is_empty() && d.pools[1].settings.is_empty());
        assert_eq!((d.summary.pools.added, d.summary.pools.removed), (1, 1));
    }

    #[test]
    fn hosts_move_by_labels_and_globs() {
        let gpu = "kind: Pool\nname: gpu\nlabels: {gpu: nvidia}\npackages: [cuda]\n";
        let ws_not_gpu =
            "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\nlabels: {gpu: none}\npackage_sets: [base]\n";
        let old = fleet(&[
            ("pools/gpu.yaml", gpu),
            ("pools/ws.yaml", ws_not_gpu),
            (
                "hosts/ws-07.yaml",
                "kind: Host\nname: ws-07\nlabels: {gpu: none}\n",
            ),
        ]);
        let new = fleet(&[
            ("pools/gpu.yaml", gpu),
            ("pools/ws.yaml", ws_not_gpu),
            (
                "hosts/ws-07.yaml",
                "kind: Host\nname: ws-07\nlabels: {gpu: nvidia}\n",
            ),
        ]);
        let d = all(&old, &new);
        assert!(d.pools.is_empty(), "{:#?}", d.pools);
        let h = &d.hosts[0];
        assert_eq!(h.status, HostStatus::Moved);
        assert_eq!(
            (h.pool.old.as_deref(), h.pool.new.as_deref()),
            (Some("ws"), Some("gpu"))
        );
        assert_eq!(h.manifest, ManifestStatus::Changed);
        assert_eq!(h.settings[0].field, "labels");
        // A move shows the whole desired state, old pool → new pool.
        assert_eq!(
            rows(&h.packages),
            [
                "added cuda -→-",
                "removed bash -→-",
                "removed openssh -→-",
                "removed vim -→-"
            ]
        );
        assert_eq!(d.summary.hosts.moved, 1);

        // A glob change moves a host named by its manifest, and a literal name leaves.
        let old = fleet(&[
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [\"ws-*\", kiosk-1]\n",
            ),
            ("hosts/build-9.yaml", "kind: Host\nname: build-9\n"),
        ]);
        let new = fleet(&[
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [\"ws-*\", build-9]\n",
            ),
            ("hosts/build-9.yaml", "kind: Host\nname: build-9\n"),
        ]);
        let d = all(&old, &new);
        let hosts: Vec<(&str, HostStatus)> = d
            .hosts
            .iter()
            .map(|h| (h.host.as_str(), h.status))
            .collect();
        assert_eq!(
            hosts,
            [
                ("build-9", HostStatus::Joined),
                ("kiosk-1", HostStatus::Left)
            ]
        );
    }

    #[test]
    fn host_in_same_pool_shows_only_its_own_changes() {
        let with_tmux: String = GEN1.to_owned() + "  tmux: {version: 3.4-1}\n";
        let old = fleet(&[
            ("hosts/srv-01.yaml", "kind: Host\nname: srv-01\n"),
            ("generations/srv/1.yaml", &with_tmux),
        ]);
        // The pool moves to generation 2 and the host adds tmux and drops vim.
        let new = fleet(&[
            (
                "pools/srv.yaml",
                &SRV.replace("generation: 1", "generation: 2"),
            ),
            (
                "hosts/srv-01.yaml",
                "kind: Host\nname: srv-01\npackages: [tmux]\nexclude: [vim]\n",
            ),
        ]);
        let d = all(&old, &new);
        let h = &d.hosts[0];
        assert_eq!(h.status, HostStatus::Changed);
        assert_eq!(h.manifest, ManifestStatus::Changed);
        assert_eq!(
            rows(&h.packages),
            ["added tmux 3.4-1→3.5-1", "removed vim 9.1-1→9.0-1"],
            "the pool's own upgrades are not repeated"
        );
        assert_eq!(h.packages[0].origins, ["host srv-01"]);
        assert_eq!(h.packages[1].excluded_by, ["host srv-01"]);

        // A host whose pool changes but that has nothing of its own is not listed.
        let new = fleet(&[
            (
                "pools/srv.yaml",
                &SRV.replace("generation: 1", "generation: 2"),
            ),
            ("hosts/srv-01.yaml", "kind: Host\nname: srv-01\n"),
        ]);
        let d = all(&old, &new);
        assert!(d.hosts.is_empty(), "{:#?}", d.hosts);
    }

    #[test]
    fn filters_select_pools_and_hosts() {
        let old = fleet(&[("hosts/ws-07.yaml", "kind: Host\nname: ws-07\n")]);
        let new = fleet(&[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [bash, {name: openssh, repo: core}]\n",
            ),
            (
                "hosts/ws-07.yaml",
                "kind: Host\nname: ws-07\npackages: [nvidia]\n",
            ),
        ]);
        let only = |pools: &[&str], hosts: &[&str]| {
            let f = Filter {
                pools: pools.iter().map(|s| s.to_string()).collect(),
                hosts: hosts.iter().map(|s| s.to_string()).collect(),
            };
            let d = diff(&old, &new, &f);
            (
                d.pools.iter().map(|p| p.pool.clone()).collect::<Vec<_>>(),
                d.hosts.iter().map(|h| h.host.clone()).collect::<Vec<_>>(),
            )
        };
        assert_eq!(
            only(&[], &[]),
            (vec!["srv".into(), "ws".into()], vec!["ws-07".into()])
        );
        assert_eq!(only(&["srv"], &[]), (vec!["srv".into()], vec![]));
        assert_eq!(
            only(&["ws"], &[]),
            (vec!["ws".into()], vec!["ws-07".into()])
        );
        assert_eq!(
            only(&[], &["ws-07"]),
            (vec!["ws".into()], vec!["ws-07".into()])
        );
        // A host without a manifest: its pool, and nothing of its own.
        assert_eq!(only(&[], &["srv-3"]), (vec!["srv".into()], vec![]));
        let d = diff(
            &old,
            &new,
            &Filter {
                pools: vec!["srv".into()],
                hosts: vec![],
            },
        );
        assert_eq!(d.summary.packages.total(), 1);
        assert_eq!(d.summary.pools.changed, 1);
    }

    #[test]
    fn fleet_settings_change() {
        let old = fleet(&[]);
        let new = fleet(&[(
            "fleet.yaml",
            "kind: Fleet\nname: acme\narchive: file:///srv/archive\n",
        )]);
        let d = all(&old, &new);
        assert_eq!(
            d.fleet,
            [Setting {
                field: "archive".into(),
                old: Some("https://archive.example".into()),
                new: Some("file:///srv/archive".into())
            }]
        );
        assert!(d.summary.changed);
        assert_eq!(d.summary.fleet, 1);
    }
}
