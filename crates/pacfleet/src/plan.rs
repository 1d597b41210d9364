//! Planning: desired − actual. From what one host should have (`resolve::Resolved`) and what it
//! has (plain data read from the local package database), decide the changes a reconcile asks
//! libalpm for: which targets to install or move to a pinned version, whether to run a full
//! system upgrade, what to remove, and which install reasons to correct. Pure: no I/O.
//!
//! The dependency closure, download sizes and the final list of packages come from libalpm
//! itself (`system::prepare`); this module only decides the intent, and defines the plain
//! `Changeset` that the rest of pacfleet shows and records.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::resolve::Resolved;

/// Why a package is on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reason {
    /// Installed on purpose (`pacman -Qe`).
    Explicit,
    /// Installed to satisfy a dependency (`pacman -Qd`).
    Dependency,
}

/// One installed package, as plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Installed {
    /// Full version.
    pub version: String,
    /// Install reason.
    pub reason: Reason,
    /// Installed packages that depend on this one.
    pub required_by: Vec<String>,
    /// Its dependencies that nothing installed satisfies (removed by hand with `-Rdd`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub missing: Vec<String>,
    /// The names it provides (`provides=`, versions dropped): a floating pool's desired name
    /// that an installed package provides is there (a renamed package that `replaces` and
    /// `provides` the old name, as Arch renames them).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub provides: Vec<String>,
}

/// A package to ask libalpm for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    /// Package name.
    pub name: String,
    /// The exact version wanted (pinned pools); `None`: whatever the sync repos offer.
    pub version: Option<String>,
    /// The sync repository it must come from, if the manifest said so.
    pub repo: Option<String>,
    /// sha256 the package file must have (from the generation), if known.
    pub sha256: Option<String>,
    /// Whether the package is desired explicitly (else it is a pinned dependency).
    pub explicit: bool,
}

/// What a reconcile should ask of libalpm.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct Intent {
    /// Floating pool: upgrade everything to the sync repos' versions, in the same transaction.
    pub sysupgrade: bool,
    /// Packages to install or move to a pinned version.
    pub targets: Vec<Target>,
    /// Packages to remove (pacfleet installed them, nothing desired needs them, prune is on).
    pub remove: Vec<String>,
    /// Installed packages that are desired but recorded as dependencies.
    pub mark_explicit: Vec<String>,
    /// Packages pacfleet installed that are no longer desired (kept: prune is off, or
    /// something still needs them), recorded as explicit.
    pub mark_dependency: Vec<String>,
    /// With prune on: packages pacfleet installed that nothing desires but something
    /// installed still needs; `system::prepare` removes those the transaction orphans.
    pub kept: Vec<String>,
}

impl Intent {
    /// Whether nothing at all would be asked for (sysupgrade may still find nothing to do).
    pub fn is_empty(&self) -> bool {
        !self.sysupgrade
            && self.targets.is_empty()
            && self.remove.is_empty()
            && self.mark_explicit.is_empty()
            && self.mark_dependency.is_empty()
    }
}

/// Decides the intent for one host. `inventory` is the set of packages pacfleet installed;
/// nothing outside it is ever removed or demoted.
pub fn intent(
    resolved: &Resolved,
    installed: &BTreeMap<String, Installed>,
    inventory: &BTreeSet<String>,
) -> Intent {
    let pinned = resolved.generation.is_some();
    let mut out = Intent {
        sysupgrade: !pinned,
        ..Intent::default()
    };

    // Names installed packages provide (floating pools only use them).
    let provided: BTreeSet<&str> = if pinned {
        BTreeSet::new()
    } else {
        installed
            .values()
            .flat_map(|p| p.provides.iter().map(String::as_str))
            .collect()
    };
    for (name, desired) in &resolved.explicit {
        let pin = resolved.pins.get(name);
        let have = installed.get(name);
        if have.is_none() && provided.contains(name.as_str()) {
            // Floating: what provides the name is there (a rename the repository made).
            continue;
        }
        let wrong_version = match (pin, have) {
            (Some(p), Some(h)) => p.version != h.version,
            _ => false,
        };
        if have.is_none() || wrong_version {
            out.targets.push(Target {
                name: name.clone(),
                version: pin.map(|p| p.version.clone()),
                repo: desired.repo.clone(),
                sha256: pin.and_then(|p| p.sha256.clone()),
                explicit: true,
            });
        }
        if have.is_some_and(|h| h.reason == Reason::Dependency) {
            out.mark_explicit.push(name.clone());
        }
    }
    if pinned {
        // Every installed package the lock knows ends at exactly the pinned version.
        for (name, pin) in &resolved.pins {
            if resolved.explicit.contains_key(name) {
                continue;
            }
            if installed
                .get(name)
                .is_some_and(|h| h.version != pin.version)
            {
                out.targets.push(Target {
                    name: name.clone(),
                    version: Some(pin.version.clone()),
                    repo: None,
                    sha256: pin.sha256.clone(),
                    explicit: false,
                });
            }
        }
    }

    // Broken dependencies of installed packages are installed again (as dependencies).
    let mut broken: BTreeSet<&str> = installed
        .values()
        .flat_map(|p| p.missing.iter().map(String::as_str))
        .collect();
    for t in &out.targets {
        broken.remove(t.name.as_str());
    }
    for name in broken {
        let pin = resolved.pins.get(name);
        out.targets.push(Target {
            name: name.to_owned(),
            version: pin.map(|p| p.version.clone()),
            repo: None,
            sha256: pin.and_then(|p| p.sha256.clone()),
            explicit: false,
        });
    }

    // Floating: an installed package that provides a desired name not installed itself (a
    // rename) stands for it, and is as desired as the name.
    let stand_ins: BTreeSet<&str> = if pinned {
        BTreeSet::new()
    } else {
        installed
            .iter()
            .filter(|(_, p)| {
                p.provides
                    .iter()
                    .any(|n| resolved.explicit.contains_key(n) && !installed.contains_key(n))
            })
            .map(|(n, _)| n.as_str())
            .collect()
    };
    // No longer desired: only what pacfleet installed, and only when nothing kept needs it.
    let candidates: BTreeSet<&str> = inventory
        .iter()
        .filter(|n| {
            installed.contains_key(*n)
                && !resolved.explicit.contains_key(*n)
                && !stand_ins.contains(n.as_str())
        })
        .map(|n| n.as_str())
        .collect();
    let removable = if resolved.prune {
        removable(&candidates, installed)
    } else {
        BTreeSet::new()
    };
    for name in &candidates {
        if removable.contains(name) {
            out.remove.push((*name).to_owned());
            continue;
        }
        if resolved.prune {
            out.kept.push((*name).to_owned());
        }
        if installed
            .get(*name)
            .is_some_and(|h| h.reason == Reason::Explicit)
        {
            out.mark_dependency.push((*name).to_owned());
        }
    }
    // A package that goes is not first moved to its pinned version: one transaction must not
    // both install and remove it.
    out.targets.retain(|t| !out.remove.contains(&t.name));
    out
}

/// The subset of `candidates` that can go without breaking anything that stays: a candidate
/// that an installed, staying package requires is kept (and so is everything it requires).
fn removable<'a>(
    candidates: &BTreeSet<&'a str>,
    installed: &BTreeMap<String, Installed>,
) -> BTreeSet<&'a str> {
    let mut gone = candidates.clone();
    loop {
        let keep: Vec<&str> = gone
            .iter()
            .copied()
            .filter(|n| {
                installed
                    .get(*n)
                    .is_some_and(|p| p.required_by.iter().any(|r| !gone.contains(r.as_str())))
            })
            .collect();
        if keep.is_empty() {
            return gone;
        }
        for k in keep {
            gone.remove(k);
        }
    }
}

/// What happens to one package.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Not installed before.
    Install,
    /// To a newer version.
    Upgrade,
    /// To an older version.
    Downgrade,
    /// Same version again (e.g. a pinned package file with other contents).
    Reinstall,
    /// Removed.
    Remove,
    /// Install reason set to explicit.
    MarkExplicit,
    /// Install reason set to dependency.
    MarkDependency,
}

impl std::fmt::Display for Action {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(match self {
            Action::Install => "install",
            Action::Upgrade => "upgrade",
            Action::Downgrade => "downgrade",
            Action::Reinstall => "reinstall",
            Action::Remove => "remove",
            Action::MarkExplicit => "mark-explicit",
            Action::MarkDependency => "mark-dependency",
        })
    }
}

/// One change to one package, as shown by `plan` and recorded in history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    /// What happens.
    pub action: Action,
    /// Package name.
    pub name: String,
    /// Version before, if installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub old: Option<String>,
    /// Version after, if installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new: Option<String>,
    /// Install reason after the change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    /// Who asked for it (`set base`, `pool ws`, `host ws-01`, `dependency of X`,
    /// `system upgrade`, `no longer desired`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub why: Vec<String>,
    /// Bytes to download (0 when cached or local).
    #[serde(default)]
    pub download_size: u64,
    /// Change in installed size, in bytes (negative when space is freed).
    #[serde(default)]
    pub size_delta: i64,
    /// Where the package comes from: `repo <name>`, or the path of the package file (from a
    /// cache dir or the fleet's archive).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Installed packages this one replaces (its repository's `replaces`): they are removed in
    /// the same transaction, and this one takes over their install reason and, for those
    /// pacfleet installed, their place in its inventory.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replaces: Vec<String>,
}

impl Change {
    /// A change with only what history needs (no reasons, sizes or sources).
    pub fn new(action: Action, name: &str, old: Option<&str>, new: Option<&str>) -> Change {
        Change {
            action,
            name: name.to_owned(),
            old: old.map(str::to_owned),
            new: new.map(str::to_owned),
            reason: None,
            why: Vec::new(),
            download_size: 0,
            size_delta: 0,
            source: None,
            replaces: Vec::new(),
        }
    }
}

/// Everything one reconcile does, in the order it is shown.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changeset {
    /// The changes, sorted by action then name.
    pub changes: Vec<Change>,
    /// Config files the transaction will probably write as `.pacnew` (files in a package's
    /// `backup` array that exist on disk and differ).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pacnew: Vec<String>,
    /// libalpm's questions while planning (replacements, providers, conflicts) and how
    /// policy answered them, in the order asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub answers: Vec<String>,
    /// Packages the host's `IgnorePkg`/`IgnoreGroup` hold back from what the fleet asks.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<Held>,
}

/// A package the host holds back (`IgnorePkg`/`IgnoreGroup` in pacman.conf) although the
/// fleet wants it changed: never applied, never called converged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Held {
    /// Package name.
    pub name: String,
    /// The installed version, if installed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub installed: Option<String>,
    /// The version the fleet (the generation's pin, or the repositories) asks for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wanted: Option<String>,
    /// The pacman.conf setting that holds it: `IgnorePkg` or `IgnoreGroup = <group>`.
    pub by: String,
}

impl std::fmt::Display for Held {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} -> {} held by {}",
            self.name,
            self.installed.as_deref().unwrap_or("(not installed)"),
            self.wanted.as_deref().unwrap_or("?"),
            self.by
        )
    }
}

/// What happened during a commit that the operator should know about.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notices {
    /// `.pacnew` files written (new config kept aside; merge them).
    #[serde(default)]
    pub pacnew: Vec<String>,
    /// `.pacsave` files written (removed package's modified config kept).
    #[serde(default)]
    pub pacsave: Vec<String>,
    /// Lines printed by install scriptlets.
    #[serde(default)]
    pub scriptlet: Vec<String>,
    /// Questions libalpm asked and how policy answered them.
    #[serde(default)]
    pub answers: Vec<String>,
    /// What went wrong without failing the transaction: a scriptlet that failed (package,
    /// scriptlet, its output), a hook that failed. Any makes the pass "applied with warnings".
    #[serde(default)]
    pub warnings: Vec<String>,
}

impl Notices {
    /// Whether nothing was noticed.
    pub fn is_empty(&self) -> bool {
        self.pacnew.is_empty()
            && self.pacsave.is_empty()
            && self.scriptlet.is_empty()
            && self.answers.is_empty()
            && self.warnings.is_empty()
    }

    /// Appends everything `other` noticed.
    pub fn extend(&mut self, other: Notices) {
        self.pacnew.extend(other.pacnew);
        self.pacsave.extend(other.pacsave);
        self.scriptlet.extend(other.scriptlet);
        self.answers.extend(other.answers);
        self.warnings.extend(other.warnings);
    }
}

impl Changeset {
    /// No package changes (packages may still be held: see [`Changeset::settled`]).
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Nothing to do and nothing held back: the host is at its desired state.
    pub fn settled(&self) -> bool {
        self.changes.is_empty() && self.held.is_empty()
    }

    /// Total bytes to download.
    pub fn download_size(&self) -> u64 {
        self.changes.iter().map(|c| c.download_size).sum()
    }

    /// Net change of installed size in bytes.
    pub fn size_delta(&self) -> i64 {
        self.changes.iter().map(|c| c.size_delta).sum()
    }

    /// Count of changes with `action`.
    pub fn count(&self, action: Action) -> usize {
        self.changes.iter().filter(|c| c.action == action).count()
    }

    /// Every change with its versions, e.g. `upgrade archlinux-keyring 1-1 -> 2-1`.
    pub fn summary_with_versions(&self) -> String {
        let parts: Vec<String> = self
            .changes
            .iter()
            .map(|c| {
                format!(
                    "{} {} {} -> {}",
                    c.action,
                    c.name,
                    c.old.as_deref().unwrap_or("-"),
                    c.new.as_deref().unwrap_or("-")
                )
            })
            .collect();
        parts.join(", ")
    }

    /// A one-line summary, e.g. `2 install, 1 upgrade, 1 remove`.
    pub fn summary(&self) -> String {
        let parts: Vec<String> = [
            (Action::Install, "install"),
            (Action::Upgrade, "upgrade"),
            (Action::Downgrade, "downgrade"),
            (Action::Reinstall, "reinstall"),
            (Action::Remove, "remove"),
            (Action::MarkExplicit, "mark explicit"),
            (Action::MarkDependency, "mark dependency"),
        ]
        .iter()
        .filter_map(|(a, label)| match self.count(*a) {
            0 => None,
            n => Some(format!("{n} {label}")),
        })
        .collect();
        if parts.is_empty() {
            "nothing to do".to_owned()
        } else {
            parts.join(", ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Pin;
    use crate::resolve::{Desired, Origin};

    fn resolved(explicit: &[&str], pins: &[(&str, &str)], prune: bool) -> Resolved {
        Resolved {
            host: "h".into(),
            fleet: "f".into(),
            pool: "p".into(),
            explicit: explicit
                .iter()
                .map(|n| {
                    let origins = [Origin::Pool("p".into())].into_iter().collect();
                    (
                        n.to_string(),
                        Desired {
                            origins,
                            repo: None,
                        },
                    )
                })
                .collect(),
            excluded: BTreeMap::new(),
            generation: if pins.is_empty() { None } else { Some(1) },
            snapshot: None,
            pins: pins
                .iter()
                .map(|(n, v)| {
                    (
                        n.to_string(),
                        Pin {
                            version: v.to_string(),
                            sha256: None,
                        },
                    )
                })
                .collect(),
            prune,
            window: None,
            paused: false,
            archive: None,
            gates: Default::default(),
        }
    }

    fn have(list: &[(&str, &str, Reason, &[&str])]) -> BTreeMap<String, Installed> {
        list.iter()
            .map(|(n, v, r, req)| {
                let required_by = req.iter().map(|s| s.to_string()).collect();
                (
                    n.to_string(),
                    Installed {
                        version: v.to_string(),
                        reason: *r,
                        required_by,
                        missing: Vec::new(),
                        provides: Vec::new(),
                    },
                )
            })
            .collect()
    }

    fn inv(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    use Reason::{Dependency as D, Explicit as E};

    #[test]
    fn floating_installs_missing_and_upgrades_everything() {
        let r = resolved(&["a", "b"], &[], false);
        let i = intent(&r, &have(&[("a", "1-1", E, &[])]), &inv(&[]));
        assert!(i.sysupgrade);
        assert_eq!(
            i.targets
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>(),
            ["b"]
        );
        assert_eq!(i.targets[0].version, None);
        assert!(i.remove.is_empty() && i.mark_explicit.is_empty());
    }

    #[test]
    fn pinned_moves_every_locked_package_to_its_version() {
        let r = resolved(
            &["a"],
            &[("a", "1-1"), ("lib", "2-1"), ("other", "9-1")],
            false,
        );
        let i = intent(
            &r,
            &have(&[("a", "2-1", E, &[]), ("lib", "3-1", D, &["a"])]),
            &inv(&[]),
        );
        assert!(!i.sysupgrade);
        let t: Vec<(&str, Option<&str>, bool)> = i
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.version.as_deref(), t.explicit))
            .collect();
        // `other` is in the lock but not installed and not desired: libalpm pulls it in only
        // if something needs it.
        assert_eq!(t, [("a", Some("1-1"), true), ("lib", Some("2-1"), false)]);
    }

    #[test]
    fn converged_host_has_empty_intent_when_pinned() {
        let r = resolved(&["a"], &[("a", "1-1"), ("lib", "2-1")], true);
        let i = intent(
            &r,
            &have(&[("a", "1-1", E, &[]), ("lib", "2-1", D, &["a"])]),
            &inv(&["a", "lib"]),
        );
        assert!(i.is_empty(), "{i:?}");
    }

    #[test]
    fn reasons_are_corrected() {
        let r = resolved(&["a"], &[], false);
        let i = intent(
            &r,
            &have(&[("a", "1-1", D, &[]), ("old", "1-1", E, &[])]),
            &inv(&["old"]),
        );
        assert_eq!(i.mark_explicit, ["a"]);
        assert_eq!(
            i.mark_dependency,
            ["old"],
            "prune is off: kept, but as a dependency"
        );
        assert!(i.remove.is_empty());
    }

    #[test]
    fn prune_removes_only_inventory_and_never_what_stays_needs() {
        let r = resolved(&["app"], &[], true);
        let installed = have(&[
            ("app", "1-1", E, &[]),
            ("old", "1-1", E, &[]),
            ("oldlib", "1-1", D, &["old"]),
            ("shared", "1-1", D, &["old", "app"]),
            ("byhand", "1-1", E, &[]),
            ("was-ours-now-needed", "1-1", E, &["app"]),
        ]);
        let i = intent(
            &r,
            &installed,
            &inv(&[
                "app",
                "old",
                "oldlib",
                "shared",
                "was-ours-now-needed",
                "gone",
            ]),
        );
        assert_eq!(i.remove, ["old", "oldlib"]);
        assert_eq!(i.mark_dependency, ["was-ours-now-needed"]);
        assert!(
            !i.remove.contains(&"byhand".to_string()),
            "hand-installed packages are never touched"
        );
    }

    #[test]
    fn broken_dependencies_become_targets() {
        let r = resolved(&["a"], &[("a", "1-1"), ("lib", "2-1")], false);
        let mut have = have(&[("a", "1-1", E, &[])]);
        have.get_mut("a").unwrap().missing = vec!["lib".into()];
        let i = intent(&r, &have, &inv(&[]));
        let t: Vec<(&str, Option<&str>, bool)> = i
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t.version.as_deref(), t.explicit))
            .collect();
        assert_eq!(t, [("lib", Some("2-1"), false)]);
    }

    /// A rename the repository made (`newfoo` replaces and provides `oldfoo`): the desired
    /// `oldfoo` is there, and `newfoo`, which stands for it, is neither installed again nor
    /// pruned. A pinned pool pins by name, so there it is not.
    #[test]
    fn a_provider_stands_for_a_desired_name_on_floating_pools() {
        let r = resolved(&["oldfoo"], &[], true);
        let mut have = have(&[("newfoo", "2-1", Reason::Explicit, &[])]);
        have.get_mut("newfoo").unwrap().provides = vec!["oldfoo".into()];
        let i = intent(&r, &have, &inv(&["newfoo"]));
        assert!(i.targets.is_empty() && i.remove.is_empty(), "{i:?}");
        assert!(i.mark_dependency.is_empty(), "{i:?}");
        let pinned = resolved(&["oldfoo"], &[("oldfoo", "1-1")], true);
        let i = intent(&pinned, &have, &inv(&["newfoo"]));
        assert_eq!(i.targets.len(), 1, "{i:?}");
    }

    #[test]
    fn summary_counts_actions() {
        let c = Changeset {
            changes: vec![
                Change {
                    action: Action::Install,
                    name: "a".into(),
                    old: None,
                    new: Some("1-1".into()),
                    reason: Some(Reason::Explicit),
                    why: vec![],
                    download_size: 10,
                    size_delta: 100,
                    source: None,
                    replaces: vec![],
                },
                Change {
                    action: Action::Remove,
                    name: "b".into(),
                    old: Some("1-1".into()),
                    new: None,
                    reason: None,
                    why: vec![],
                    download_size: 0,
                    size_delta: -40,
                    source: None,
                    replaces: vec![],
                },
            ],
            pacnew: vec![],
            ..Changeset::default()
        };
        assert_eq!(c.summary(), "1 install, 1 remove");
        assert_eq!((c.download_size(), c.size_delta()), (10, 60));
        assert_eq!(Changeset::default().summary(), "nothing to do");
    }
}
