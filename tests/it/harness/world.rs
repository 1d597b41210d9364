//! The world the end-to-end tests start from, built in one place: a temporary directory, the
//! package repositories the hosts install from (the test's own [`PkgRepo`]s, or read-only
//! [`shared_repo`]s), an archive directory, a fleet repository ([`FleetRepo`]) whose first
//! commit (signed by the operator key unless asked otherwise) names fleet `acme`, package set
//! `base` and pool `ws`, and hosts ([`HostDir`]) using those repositories, with an agent.yaml
//! that fetches the fleet's work tree.
//!
//! [`World::builder`] says which of those a test wants; a module whose world has more around it
//! (an ssh server, a bare mirror, a metrics file) keeps a thin wrapper holding a [`World`]:
//!
//! ```ignore
//! let w = World::builder()
//!     .packages(&[SynthPackage::new("app", "1.0-1")])
//!     .desired(&["app"])
//!     .build();
//! let (host, _cfg) = w.host("ws-01");
//! w.reconcile(&host).code(0);
//! ```

use std::fs;
use std::path::PathBuf;

use pacfleet_support::synth::SynthPackage;

use super::command::{Outcome, TestCommand};
use super::{FleetRepo, HostDir, PkgRepo, TempDir, archive_package, shared_repo, tempdir};

/// `fleet.yaml` of the world: fleet `acme`, no keys, no archive.
pub const FLEET: &str = "kind: Fleet\nname: acme\n";

/// `pools/ws.yaml` unless [`WorldBuilder::pool`] says otherwise: hosts `ws-*`, set `base`,
/// floating, pruning what pacfleet installed.
pub const POOL: &str =
    "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\nprune: true\n";

/// What [`World::host`] puts at the end of agent.yaml.
pub const AGENT_EXTRA: &str = "lock_timeout: 1s\n";

/// `packages/base.yaml` desiring `packages`.
pub fn package_set(packages: &[&str]) -> String {
    format!(
        "kind: PackageSet\nname: base\npackages: [{}]\n",
        packages.join(", ")
    )
}

/// A package repository of the world: the test's own, or one shared by the test process.
#[derive(Debug)]
enum Repo {
    Own(PkgRepo),
    Shared(&'static PkgRepo),
}

impl Repo {
    fn get(&self) -> &PkgRepo {
        match self {
            Repo::Own(repo) => repo,
            Repo::Shared(repo) => repo,
        }
    }
}

/// A temporary directory with package repositories, an archive, a fleet repository and hosts
/// (see the module's head comment). Made by [`World::builder`].
#[derive(Debug)]
pub struct World {
    /// Everything lives below it (`repos/`, `archive/`, `fleet/`, `keys/`, `hosts/`).
    pub tmp: TempDir,
    repos: Vec<Repo>,
    /// `tmp/archive`: the fleet's `archive:` when [`WorldBuilder::archive`] asked for it
    /// (otherwise not made).
    pub archive: PathBuf,
    fleet: Option<FleetRepo>,
    first: Option<String>,
    /// The hosts [`WorldBuilder::hosts`] named, in order, without an agent.yaml.
    pub hosts: Vec<HostDir>,
}

impl World {
    /// An empty builder: no package repository, no archive, a signed fleet repository with
    /// `fleet.yaml` and `pools/ws.yaml` ([`FLEET`], [`POOL`]), no hosts.
    pub fn builder() -> WorldBuilder {
        WorldBuilder::default()
    }

    /// The first package repository (`core`, unless named otherwise).
    pub fn repo(&self) -> &PkgRepo {
        self.repos
            .first()
            .expect("this world has no package repository (WorldBuilder::packages)")
            .get()
    }

    /// The first package repository, to add packages to or remove them from; panics when it is
    /// a shared one ([`WorldBuilder::shared`]), which must stay as it was built.
    pub fn repo_mut(&mut self) -> &mut PkgRepo {
        match self.repos.first_mut() {
            Some(Repo::Own(repo)) => repo,
            Some(Repo::Shared(repo)) => panic!(
                "repository {} is shared by every test that asks for it: it cannot change",
                repo.name
            ),
            None => panic!("this world has no package repository (WorldBuilder::packages)"),
        }
    }

    /// Every package repository, in the order pacman.conf lists them.
    pub fn repos(&self) -> Vec<&PkgRepo> {
        self.repos.iter().map(Repo::get).collect()
    }

    /// The world's own package repositories (not the shared ones), e.g. to serve them elsewhere
    /// before the first host is made.
    pub fn repos_mut(&mut self) -> impl Iterator<Item = &mut PkgRepo> {
        self.repos.iter_mut().filter_map(|r| match r {
            Repo::Own(repo) => Some(repo),
            Repo::Shared(_) => None,
        })
    }

    /// The fleet repository.
    pub fn fleet(&self) -> &FleetRepo {
        self.fleet
            .as_ref()
            .expect("this world has no fleet repository (WorldBuilder::no_fleet)")
    }

    /// The fleet repository's first commit.
    pub fn first(&self) -> &str {
        self.first
            .as_deref()
            .expect("this world has no fleet repository (WorldBuilder::no_fleet)")
    }

    /// The fleet's work tree as agent.yaml's `repo:`.
    pub fn fleet_url(&self) -> String {
        self.fleet().dir.display().to_string()
    }

    /// A new host `name` using the world's package repositories, with no agent.yaml yet.
    pub fn host_dir(&self, name: &str) -> HostDir {
        HostDir::new(self.tmp.path(), name, &self.repos())
    }

    /// Writes `host`'s agent.yaml fetching the fleet's work tree, trusting the operator key,
    /// with `extra` appended (see [`HostDir::agent_yaml`]); returns its path.
    pub fn config(&self, host: &HostDir, extra: &str) -> PathBuf {
        host.agent_yaml(&self.fleet_url(), &self.fleet().public_key, extra)
    }

    /// A new host `name` and its agent.yaml ([`config`](Self::config) with [`AGENT_EXTRA`]).
    pub fn host(&self, name: &str) -> (HostDir, PathBuf) {
        let host = self.host_dir(name);
        let cfg = self.config(&host, AGENT_EXTRA);
        (host, cfg)
    }

    /// `fleetctl reconcile` with `host`'s agent.yaml (`base/agent.yaml`), run to the end.
    pub fn reconcile(&self, host: &HostDir) -> Outcome {
        TestCommand::reconcile(host.base.join("agent.yaml")).run()
    }
}

/// The options of a [`World`], set one by one before [`build`](Self::build); what is not set
/// is as [`World::builder`] says.
#[derive(Debug, Default)]
pub struct WorldBuilder {
    tmp: Option<TempDir>,
    repos: Vec<(String, Vec<SynthPackage>)>,
    shared: bool,
    archive: bool,
    archived: Vec<SynthPackage>,
    no_fleet: bool,
    fleet_yaml: Option<String>,
    desired: Option<Vec<String>>,
    pool: Option<String>,
    files: Vec<(String, String)>,
    unsigned: bool,
    hosts: Vec<String>,
}

impl WorldBuilder {
    /// Builds the world in `tmp` (made beforehand, e.g. for a server that must be running
    /// before the fleet's first commit names its URL) instead of a new temporary directory.
    pub fn tmp(mut self, tmp: TempDir) -> Self {
        self.tmp = Some(tmp);
        self
    }

    /// A repository `core` holding `pkgs` (signed by the default test packager).
    pub fn packages(self, pkgs: &[SynthPackage]) -> Self {
        self.repo("core", pkgs)
    }

    /// Another repository `name` holding `pkgs`, listed after the ones before it.
    pub fn repo(mut self, name: &str, pkgs: &[SynthPackage]) -> Self {
        self.repos.push((name.to_owned(), pkgs.to_vec()));
        self
    }

    /// The repositories are [`shared_repo`]s, built once per test process, for a test that
    /// never changes them; otherwise each is the test's own, in `tmp/repos/<name>/`.
    pub fn shared(mut self) -> Self {
        self.shared = true;
        self
    }

    /// Makes `tmp/archive` and names it in `fleet.yaml` (`archive: file://…`).
    pub fn archive(mut self) -> Self {
        self.archive = true;
        self
    }

    /// Builds `pkgs` into the archive ([`archive_package`]); implies [`archive`](Self::archive).
    pub fn archived(mut self, pkgs: &[SynthPackage]) -> Self {
        self.archive = true;
        self.archived.extend(pkgs.iter().cloned());
        self
    }

    /// No fleet repository at all (for tests that drive the library, not `fleetctl`).
    pub fn no_fleet(mut self) -> Self {
        self.no_fleet = true;
        self
    }

    /// `fleet.yaml` is `text` instead of [`FLEET`] (and the archive line).
    pub fn fleet_yaml(mut self, text: &str) -> Self {
        self.fleet_yaml = Some(text.to_owned());
        self
    }

    /// `packages/base.yaml` desires `packages` ([`package_set`]); without it there is none.
    pub fn desired(mut self, packages: &[&str]) -> Self {
        self.desired = Some(packages.iter().map(|p| p.to_string()).collect());
        self
    }

    /// `pools/ws.yaml` is `text` instead of [`POOL`].
    pub fn pool(mut self, text: &str) -> Self {
        self.pool = Some(text.to_owned());
        self
    }

    /// Another file of the first commit (a second pool, a generation, ...).
    pub fn file(mut self, path: &str, text: &str) -> Self {
        self.files.push((path.to_owned(), text.to_owned()));
        self
    }

    /// Whether the first commit is signed with the operator key (it is unless told `false`).
    pub fn signed(mut self, signed: bool) -> Self {
        self.unsigned = !signed;
        self
    }

    /// Hosts made with the world, in [`World::hosts`] (no agent.yaml yet).
    pub fn hosts(mut self, names: &[&str]) -> Self {
        self.hosts.extend(names.iter().map(|n| n.to_string()));
        self
    }

    /// Makes the world: the repositories, the archive, the fleet repository and its first
    /// commit ("initial fleet"), then the hosts.
    pub fn build(self) -> World {
        let tmp = self.tmp.unwrap_or_else(tempdir);
        let repos = self
            .repos
            .iter()
            .map(|(name, pkgs)| {
                if self.shared {
                    Repo::Shared(shared_repo(name, pkgs))
                } else {
                    let mut repo = PkgRepo::new(tmp.path(), name);
                    repo.add(pkgs);
                    Repo::Own(repo)
                }
            })
            .collect();
        let archive = tmp.path().join("archive");
        if self.archive {
            fs::create_dir_all(&archive).expect("create archive dir");
        }
        for pkg in &self.archived {
            archive_package(&archive, pkg);
        }
        let (fleet, first) = if self.no_fleet {
            (None, None)
        } else {
            let fleet = FleetRepo::new(tmp.path());
            let fleet_yaml = self.fleet_yaml.clone().unwrap_or_else(|| {
                if self.archive {
                    format!("{FLEET}archive: file://{}\n", archive.display())
                } else {
                    FLEET.to_owned()
                }
            });
            let mut files = vec![("fleet.yaml".to_owned(), fleet_yaml)];
            if let Some(desired) = &self.desired {
                let desired: Vec<&str> = desired.iter().map(String::as_str).collect();
                files.push(("packages/base.yaml".to_owned(), package_set(&desired)));
            }
            files.push((
                "pools/ws.yaml".to_owned(),
                self.pool.clone().unwrap_or_else(|| POOL.to_owned()),
            ));
            files.extend(self.files.iter().cloned());
            let files: Vec<(&str, &str)> = files
                .iter()
                .map(|(p, t)| (p.as_str(), t.as_str()))
                .collect();
            let first = if self.unsigned {
                fleet.commit_unsigned("initial fleet", &files)
            } else {
                fleet.commit("initial fleet", &files)
            };
            (Some(fleet), Some(first))
        };
        let mut world = World {
            tmp,
            repos,
            archive,
            fleet,
            first,
            hosts: Vec::new(),
        };
        world.hosts = self.hosts.iter().map(|n| world.host_dir(n)).collect();
        world
    }
}
