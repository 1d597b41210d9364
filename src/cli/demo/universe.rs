//! The demo's package world: one synthetic package for every name the fleet mentions (sets,
//! pools, hosts, excludes, every generation's pins) plus the few the story adds; which version
//! the sync repositories carry and which older ones only the archive has; the dependencies that
//! make the generation locks consistent; and which repository (`core`, `extra`, or one a
//! `{name, repo}` entry names) each package is in.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};

use super::packager::Packager;
use pacfleet::manifest::{Fleet, PackageRef};
use pacfleet::resolve;
use pacfleet_support::synth::{self, SynthPackage};

/// Versions for the names no generation pins (the desks' packages): plausible ones, so the
/// story reads like a real fleet. Names missing here get `1.0-1`.
const PLAUSIBLE: &[(&str, &str)] = &[
    ("bluez", "5.80-1"),
    ("bluez-utils", "5.80-1"),
    ("cups", "2:2.4.11-2"),
    ("dolphin", "24.12.3-1"),
    ("firefox", "136.0-1"),
    ("flatpak", "1:1.16.0-1"),
    ("fwupd", "2.0.6-1"),
    ("gegl", "0.4.62-1"),
    ("gimp", "3.0.2-1"),
    ("kate", "24.12.3-1"),
    ("konsole", "24.12.3-1"),
    ("libreoffice-fresh", "25.2.1-1"),
    ("networkmanager", "1.50.2-1"),
    ("noto-fonts", "1:2025.03.01-1"),
    ("noto-fonts-emoji", "1:2.047-1"),
    ("nvidia", "570.124.04-1"),
    ("nvidia-settings", "570.124.04-1"),
    ("pipewire", "1:1.4.0-1"),
    ("pipewire-pulse", "1:1.4.0-1"),
    ("plasma-meta", "6.3-2"),
    ("sddm", "0.21.0-6"),
    ("thunderbird", "128.8.0-1"),
    ("wireplumber", "0.5.8-1"),
];

/// The repository for packages no `{name, repo}` entry places and that are not part of every
/// host's base system.
const EXTRA: &str = "extra";
/// The repository for the base system (the `base` set with its includes) and the locks'
/// dependencies.
const CORE: &str = "core";

/// A package the story adds to the fleet (it is in the repositories from the start).
#[derive(Debug, Clone, Copy)]
pub(super) struct Addition {
    /// Its name.
    pub name: &'static str,
    /// What it depends on (other additions or fleet packages).
    pub depends: &'static [&'static str],
}

/// One package name of the sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Package {
    /// The sync repository that carries it.
    pub repo: String,
    /// The version in that repository: the newest one mentioned anywhere.
    pub version: String,
    /// Older versions, only in the archive.
    pub archived: BTreeSet<String>,
    /// Its dependencies (names).
    pub depends: Vec<String>,
}

/// Every package of the sandbox, by name.
#[derive(Debug, Clone)]
pub(super) struct Universe {
    /// The packages.
    pub packages: BTreeMap<String, Package>,
}

/// Where the built packages went.
#[derive(Debug)]
pub(super) struct Built {
    /// Sync repositories: name → directory (holding `<name>.db` and the package files).
    pub repos: BTreeMap<String, PathBuf>,
    /// The archive root (Arch Linux Archive layout).
    pub archive: PathBuf,
    /// Every package file: (name, version) → path.
    pub files: BTreeMap<(String, String), PathBuf>,
}

impl Built {
    /// Publishes the sandbox's repositories as the archive's snapshot of every day `fleet`'s
    /// pools and generations name (`<archive>/repos/YYYY/MM/DD/<repo>/os/<arch>`, symlinks to
    /// the repositories, for the machine's architecture: the demo hosts say `auto`), so that a
    /// pool on a snapshot finds its repositories there. Returns the days.
    pub fn publish_snapshots(&self, fleet: &Fleet) -> anyhow::Result<BTreeSet<String>> {
        let days: BTreeSet<String> = fleet
            .pools
            .values()
            .filter_map(|p| resolve::snapshot(fleet, &p.spec))
            .chain(
                fleet
                    .generations
                    .values()
                    .filter_map(|g| g.spec.snapshot.as_deref()),
            )
            .map(str::to_owned)
            .collect();
        let arch = pacfleet::snapshot::handle_arch(["auto"]);
        for day in &days {
            pacfleet::snapshot::check_date(day)?;
            for (repo, dir) in &self.repos {
                let at = self
                    .archive
                    .join("repos")
                    .join(day.replace('-', "/"))
                    .join(repo)
                    .join("os");
                std::fs::create_dir_all(&at)
                    .with_context(|| format!("creating {}", at.display()))?;
                std::os::unix::fs::symlink(dir, at.join(&arch))
                    .with_context(|| format!("linking {} into the archive", dir.display()))?;
            }
        }
        Ok(days)
    }

    /// The sha256 of package `name` at `version`.
    pub fn sha256(&self, name: &str, version: &str) -> anyhow::Result<String> {
        let file = self
            .files
            .get(&(name.to_owned(), version.to_owned()))
            .with_context(|| format!("no synthetic package {name} {version} was built (a bug)"))?;
        Ok(synth::sha256_file(file)?)
    }
}

fn refs_of(fleet: &Fleet) -> impl Iterator<Item = &PackageRef> {
    let sets = fleet.sets.values().flat_map(|s| &s.spec.packages);
    let pools = fleet.pools.values().flat_map(|p| &p.spec.packages);
    let hosts = fleet.hosts.values().flat_map(|h| &h.spec.packages);
    sets.chain(pools).chain(hosts)
}

fn newest<'a>(versions: impl IntoIterator<Item = &'a String>) -> Option<&'a String> {
    versions
        .into_iter()
        .max_by(|a, b| alpm::vercmp(a.as_str(), b.as_str()))
}

impl Universe {
    /// Plans the packages for `fleet`, the story's `additions` and its `downgrade` (a name and
    /// an older version that only the archive has).
    pub fn plan(
        fleet: &Fleet,
        additions: &[Addition],
        downgrade: (&str, &str),
    ) -> anyhow::Result<Universe> {
        // Every version any generation mentions, by name.
        let mut pinned: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for g in fleet.generations.values() {
            for (name, pin) in &g.spec.packages {
                pinned
                    .entry(name.to_string())
                    .or_default()
                    .insert(pin.version.clone());
            }
        }
        // Every name sets, pools and hosts ask for (or exclude), and repositories they name.
        let mut desired: BTreeSet<String> = BTreeSet::new();
        let mut placed: BTreeMap<String, String> = BTreeMap::new();
        for r in refs_of(fleet) {
            desired.insert(r.name().to_string());
            if let Some(repo) = r.repo() {
                placed
                    .entry(r.name().to_string())
                    .or_insert_with(|| repo.to_string());
            }
        }
        let excluded = fleet
            .sets
            .values()
            .flat_map(|s| &s.spec.exclude)
            .chain(fleet.pools.values().flat_map(|p| &p.spec.exclude))
            .chain(fleet.hosts.values().flat_map(|h| &h.spec.exclude));
        let mut names: BTreeSet<String> = excluded.map(|n| n.to_string()).collect();
        names.extend(desired.iter().cloned());
        names.extend(pinned.keys().cloned());
        names.extend(additions.iter().map(|a| a.name.to_owned()));
        for a in additions {
            for d in a.depends {
                if !names.contains(*d) {
                    bail!(
                        "the story's package {} depends on unknown {d} (a bug)",
                        a.name
                    );
                }
            }
        }

        // The base system every host has: the `base` set with its includes.
        let mut base: BTreeSet<String> = BTreeSet::new();
        let mut sets = vec!["base"];
        let mut seen_sets = BTreeSet::new();
        while let Some(set) = sets.pop() {
            if !seen_sets.insert(set) {
                continue;
            }
            if let Some(s) = fleet.sets.get(set) {
                base.extend(s.spec.packages.iter().map(|r| r.name().to_string()));
                sets.extend(s.spec.include.iter().map(|n| n.as_str()));
            }
        }

        // Dependencies: a package some lock has but nothing desires is a dependency. Each is
        // attached, round-robin over sorted names, to a desired package that every lock holding
        // the parent also holds it in, so a pinned pool's closure stays inside its lock.
        let locks: Vec<BTreeSet<&str>> = fleet
            .generations
            .values()
            .map(|g| g.spec.packages.keys().map(|n| n.as_str()).collect())
            .collect();
        let in_some_lock: BTreeSet<&str> = locks.iter().flatten().copied().collect();
        let mut depends: BTreeMap<String, Vec<String>> = BTreeMap::new();
        let mut turn = 0usize;
        for dep in in_some_lock.iter().filter(|n| !desired.contains(**n)) {
            let parents: Vec<&str> = desired
                .iter()
                .map(String::as_str)
                .filter(|p| in_some_lock.contains(p))
                .filter(|p| locks.iter().all(|l| !l.contains(p) || l.contains(dep)))
                .collect();
            if parents.is_empty() {
                continue;
            }
            let parent = parents[turn % parents.len()];
            turn += 1;
            depends
                .entry(parent.to_owned())
                .or_default()
                .push((*dep).to_owned());
        }
        for a in additions {
            depends
                .entry(a.name.to_owned())
                .or_default()
                .extend(a.depends.iter().map(|d| (*d).to_owned()));
        }

        let mut packages = BTreeMap::new();
        for name in names {
            let mut versions = pinned.remove(&name).unwrap_or_default();
            if versions.is_empty() {
                let v = PLAUSIBLE
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map_or("1.0-1", |(_, v)| *v);
                versions.insert(v.to_owned());
            }
            if name == downgrade.0 {
                versions.insert(downgrade.1.to_owned());
            }
            let version = newest(&versions).cloned().unwrap_or_default();
            versions.remove(&version);
            let dependency = in_some_lock.contains(name.as_str()) && !desired.contains(&name);
            let repo = match placed.get(&name) {
                Some(r) => r.clone(),
                None if base.contains(&name) || dependency => CORE.to_owned(),
                None => EXTRA.to_owned(),
            };
            packages.insert(
                name.clone(),
                Package {
                    repo,
                    version,
                    archived: versions,
                    depends: depends.remove(&name).unwrap_or_default(),
                },
            );
        }
        match packages.get(downgrade.0) {
            Some(p) if p.archived.contains(downgrade.1) => {}
            _ => bail!(
                "the story downgrades {} to {}, which is not older than every version the fleet pins (a bug)",
                downgrade.0,
                downgrade.1
            ),
        }
        Ok(Universe { packages })
    }

    /// Every sync repository the packages are in.
    pub fn repos(&self) -> BTreeSet<&str> {
        let mut repos: BTreeSet<&str> = [CORE, EXTRA].into();
        repos.extend(self.packages.values().map(|p| p.repo.as_str()));
        repos
    }

    /// Checks that every pinned pool's dependency closure (for the pool itself and for each of
    /// its Host manifests) stays inside the generation it pins; `extra_locks` are more
    /// (pool, lock) pairs to check, such as the story's own generation.
    pub fn check_locks(
        &self,
        fleet: &Fleet,
        extra_locks: &[(&str, BTreeSet<String>)],
    ) -> anyhow::Result<()> {
        let mut checks: Vec<(&str, BTreeSet<String>)> = extra_locks.to_vec();
        for pool in fleet.pools.values() {
            let Some(n) = pool.spec.generation else {
                continue;
            };
            if let Some(g) = fleet.generations.get(&(pool.spec.name.clone(), n)) {
                let lock = g.spec.packages.keys().map(|k| k.to_string()).collect();
                checks.push((pool.spec.name.as_str(), lock));
            }
        }
        for (pool_name, lock) in &checks {
            let Some(pool) = fleet.pools.get(*pool_name) else {
                bail!("no pool {pool_name} in the fleet (a bug)");
            };
            let mut roots: Vec<String> = resolve::desired(fleet, &pool.spec, None)
                .0
                .into_keys()
                .collect();
            for host in fleet.hosts.values() {
                if fleet
                    .pools_selecting(host.spec.name.as_str())
                    .iter()
                    .any(|p| p.spec.name == pool.spec.name)
                {
                    roots.extend(
                        resolve::desired(fleet, &pool.spec, Some(&host.spec))
                            .0
                            .into_keys(),
                    );
                }
            }
            let mut seen = BTreeSet::new();
            while let Some(name) = roots.pop() {
                if !seen.insert(name.clone()) {
                    continue;
                }
                if !lock.contains(&name) {
                    bail!(
                        "the demo's synthetic packages do not fit the lock of pool {pool_name}: {name} is needed but not locked (a bug)"
                    );
                }
                if let Some(p) = self.packages.get(&name) {
                    roots.extend(p.depends.iter().cloned());
                }
            }
        }
        Ok(())
    }

    /// Builds every package: the repositories' versions into `<dir>/repos/<repo>/` with their
    /// databases, older versions into the archive at `<dir>/archive`.
    pub fn build(&self, dir: &Path, packager: &Packager) -> anyhow::Result<Built> {
        let archive = dir.join("archive");
        let mut built = Built {
            repos: BTreeMap::new(),
            archive: archive.clone(),
            files: BTreeMap::new(),
        };
        let mut repo_files: BTreeMap<&str, Vec<PathBuf>> = BTreeMap::new();
        for repo in self.repos() {
            let repo_dir = dir.join("repos").join(repo);
            built.repos.insert(repo.to_owned(), repo_dir);
            repo_files.insert(repo, Vec::new());
        }
        for (name, p) in &self.packages {
            let synth = |version: &str| {
                let mut pkg = SynthPackage::new(name.as_str(), version).description(format!(
                    "Synthetic stand-in for {name}, built by fleetctl demo"
                ));
                for d in &p.depends {
                    pkg = pkg.depends(d.as_str());
                }
                pkg
            };
            let pkg = synth(&p.version);
            let file = synth::build_package(&pkg, &built.repos[&p.repo])
                .with_context(|| format!("building package {name} {}", p.version))?;
            packager.sign(&file)?;
            built
                .files
                .insert((name.clone(), p.version.clone()), file.clone());
            repo_files.entry(p.repo.as_str()).or_default().push(file);
            for old in &p.archived {
                let pkg = synth(old);
                let dest = synth::archive_path(&archive, &pkg.file_name());
                let parent = dest.parent().unwrap_or(&archive);
                let file = synth::build_package(&pkg, parent)
                    .with_context(|| format!("building package {name} {old} for the archive"))?;
                packager.sign(&file)?;
                built.files.insert((name.clone(), old.clone()), file);
            }
        }
        for (repo, files) in &repo_files {
            synth::write_repo(&built.repos[*repo], repo, files)
                .with_context(|| format!("writing the database of repository {repo}"))?;
        }
        Ok(built)
    }

    /// How many package files go to the archive.
    pub fn archived_count(&self) -> usize {
        self.packages.values().map(|p| p.archived.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ADDITIONS: &[Addition] = &[
        Addition {
            name: "gimp",
            depends: &["gegl"],
        },
        Addition {
            name: "gegl",
            depends: &[],
        },
    ];

    fn universe() -> (Fleet, Universe) {
        let fleet = super::super::embedded::fleet().unwrap();
        let u = Universe::plan(&fleet, ADDITIONS, ("git", "2.47.1-1")).unwrap();
        (fleet, u)
    }

    #[test]
    fn every_name_the_fleet_mentions_has_a_package() {
        let (fleet, u) = universe();
        for r in refs_of(&fleet) {
            assert!(u.packages.contains_key(r.name().as_str()), "{}", r.name());
        }
        for g in fleet.generations.values() {
            for (name, pin) in &g.spec.packages {
                let p = &u.packages[name.as_str()];
                assert!(
                    p.version == pin.version || p.archived.contains(&pin.version),
                    "{name} {}",
                    pin.version
                );
            }
        }
        assert!(u.packages.contains_key("gimp") && u.packages.contains_key("gegl"));
        assert!(u.packages["git"].archived.contains("2.47.1-1"));
        assert_eq!(u.packages["git"].version, "2.48.1-1");
        // The newest version mentioned is the repositories' (1.yaml's firmware is newer).
        assert_eq!(u.packages["linux-firmware"].version, "20250109.7673dffd-1");
    }

    #[test]
    fn repositories_follow_the_manifests() {
        let (fleet, u) = universe();
        for r in refs_of(&fleet) {
            if let Some(repo) = r.repo() {
                assert_eq!(u.packages[r.name().as_str()].repo, repo.as_str());
            }
        }
        assert_eq!(u.packages["openssh"].repo, "core");
        assert_eq!(u.packages["firefox"].repo, "extra");
        assert_eq!(u.packages["glibc"].repo, "core");
        assert_eq!(u.packages["plasma-meta"].repo, "extra");
        assert_eq!(u.repos(), ["core", "extra"].into());
    }

    #[test]
    fn pinned_closures_stay_inside_their_locks() {
        let (fleet, u) = universe();
        u.check_locks(&fleet, &[]).unwrap();
        // Every lock-only package is some desired package's dependency.
        let deps: BTreeSet<&str> = u
            .packages
            .values()
            .flat_map(|p| p.depends.iter().map(String::as_str))
            .collect();
        assert!(deps.contains("glibc") && deps.contains("linux-firmware-whence"));
        // A lock that lacks a dependency is caught.
        let mut lock: BTreeSet<String> = fleet
            .generations
            .values()
            .last()
            .unwrap()
            .spec
            .packages
            .keys()
            .map(|k| k.to_string())
            .collect();
        lock.remove("glibc");
        let err = u
            .check_locks(&fleet, &[("build-servers", lock)])
            .unwrap_err();
        assert!(err.to_string().contains("glibc"), "{err}");
    }

    #[test]
    fn planning_is_deterministic() {
        let (_, a) = universe();
        let (_, b) = universe();
        assert_eq!(a.packages, b.packages);
    }
}
