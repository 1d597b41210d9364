//! The host's package system, through libalpm (the `alpm` crate): opening a handle configured
//! from the host's pacman.conf with pacfleet's root and dbpath, reading the local database as
//! plain data, refreshing sync databases, and turning a `plan::Intent` into a prepared libalpm
//! transaction whose contents (dependency closure, sizes, sources) become a `plan::Changeset`.
//!
//! Planning is lock-free (as paru does it): `Mode::Plan` refreshes the sync databases into a
//! private copy of the db directory and prepares with `NO_LOCK`, so `fleetctl plan` never
//! blocks or disturbs pacman. `Mode::Apply` works on the real databases under pacman's lock;
//! committing is `apply`'s job.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use alpm::{Alpm, PackageReason, TransFlag};

use crate::plan::{Action, Change, Changeset, Installed, Intent, Reason, Target};
use crate::resolve::Resolved;

/// Where the host's package system lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// Target root (`/`, or a directory for a chroot, image or test host).
    pub root: PathBuf,
    /// The pacman database directory.
    pub dbpath: PathBuf,
    /// The pacman.conf with repositories, cache dirs and signature levels.
    pub pacman_conf: PathBuf,
}

/// How a handle will be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Look only: sync databases refreshed into a private copy, transactions with NO_LOCK.
    Plan,
    /// Change the system: real databases, pacman's lock.
    Apply,
}

/// Working with libalpm failed.
#[derive(Debug, thiserror::Error)]
pub enum SystemError {
    /// pacman.conf could not be read.
    #[error(
        "cannot read pacman configuration {path}: {detail}; check `pacman_conf:` in agent.yaml and that `pacman-conf` (from pacman) is installed"
    )]
    Config {
        /// The pacman.conf path.
        path: String,
        /// What pacman-conf said.
        detail: String,
    },
    /// libalpm refused to open the root or database.
    #[error(
        "cannot open the package database at {dbpath} (root {root}): {source}; check `root:` and `dbpath:` in agent.yaml"
    )]
    Open {
        /// The root.
        root: String,
        /// The db path.
        dbpath: String,
        /// libalpm's error.
        source: alpm::Error,
    },
    /// Setting up the handle from pacman.conf failed.
    #[error("cannot configure libalpm from {path}: {source}")]
    Configure {
        /// The pacman.conf path.
        path: String,
        /// libalpm's error.
        source: alpm::Error,
    },
    /// Copying the databases for a lock-free plan failed.
    #[error("cannot prepare a private copy of the sync databases in {path}: {source}")]
    Scratch {
        /// The directory.
        path: String,
        /// The io error.
        source: std::io::Error,
    },
    /// A sync database could not be refreshed.
    #[error(
        "cannot refresh the sync databases ({repo}) from {servers}: {source}; check the mirror (Server= in pacman.conf) and the network"
    )]
    Refresh {
        /// The repository.
        repo: String,
        /// Its servers.
        servers: String,
        /// libalpm's error.
        source: alpm::Error,
    },
    /// pacman's database lock is held by someone else.
    #[error(
        "the pacman database is locked ({lockfile}) and stayed locked for {waited_secs}s{holder}; wait for that pacman to finish and retry. If no package manager is running, the lock is stale: check `fuser {lockfile}` and remove it yourself — pacfleet never deletes it"
    )]
    Locked {
        /// The lock file.
        lockfile: String,
        /// How long we waited.
        waited_secs: u64,
        /// ", held by …" when a process could be named.
        holder: String,
    },
    /// A desired package is in no repository.
    #[error(
        "package `{name}` (asked for by {why}) is not in any repository of this host ({repos}); check the name in the manifests, or add its repository to pacman.conf"
    )]
    UnknownPackage {
        /// Package name.
        name: String,
        /// Who asked for it.
        why: String,
        /// The host's sync repositories.
        repos: String,
    },
    /// A pinned version was found nowhere.
    #[error(
        "package `{name}` is pinned to version {version}, which is in no sync repository, no cache dir ({caches}) and {archive}; put the package file in the cache or the fleet's archive, or pin a version that exists"
    )]
    PinNotFound {
        /// Package name.
        name: String,
        /// The pinned version.
        version: String,
        /// Cache dirs searched.
        caches: String,
        /// What was tried in the archive.
        archive: String,
    },
    /// A package file's checksum differs from the pin.
    #[error(
        "package `{name}` {version} from {source_desc} has sha256 {actual}, but the generation pins {expected}; refusing it. Someone changed the package file or the pin is wrong: check the archive/cache, or capture the generation again"
    )]
    ChecksumMismatch {
        /// Package name.
        name: String,
        /// Version.
        version: String,
        /// Where the file came from.
        source_desc: String,
        /// Its sha256.
        actual: String,
        /// The pinned sha256.
        expected: String,
    },
    /// libalpm could not resolve the transaction.
    #[error("libalpm cannot prepare the transaction: {detail}; nothing was changed")]
    Prepare {
        /// libalpm's reasons, one per problem.
        detail: String,
    },
    /// Any other libalpm call failed.
    #[error("libalpm: {context}: {source}")]
    Alpm {
        /// What we were doing.
        context: String,
        /// libalpm's error.
        source: alpm::Error,
    },
    /// A snapshot's servers could not be made (`System::use_snapshot`).
    #[error(transparent)]
    Snapshot(#[from] crate::snapshot::SnapshotError),
    /// Where the sync databases came from could not be recorded (`System::refresh`).
    #[error(transparent)]
    SyncSource(#[from] crate::sync_source::SourceError),
    /// A file operation failed.
    #[error("{context} {path}: {source}")]
    Io {
        /// What we were doing.
        context: &'static str,
        /// The path.
        path: String,
        /// The io error.
        source: std::io::Error,
    },
}

fn alpm_err(context: impl Into<String>) -> impl FnOnce(alpm::Error) -> SystemError {
    let context = context.into();
    move |source| SystemError::Alpm { context, source }
}

/// An open libalpm handle for one host.
pub struct System {
    alpm: Alpm,
    conf: pacmanconf::Config,
    paths: HostPaths,
    mode: Mode,
    /// For `Mode::Plan`: the private db directory (and cache for archive downloads).
    _scratch: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("paths", &self.paths)
            .field("mode", &self.mode)
            .finish()
    }
}

/// The host's effective pacman configuration: pacman.conf read by `pacman-conf` (Includes
/// expanded, defaults filled in as pacman would), relative to `root`. A subprocess: a pass
/// starts it early, beside the fetch.
pub fn read_conf(paths: &HostPaths) -> Result<pacmanconf::Config, SystemError> {
    let conf_err = |detail: String| SystemError::Config {
        path: paths.pacman_conf.display().to_string(),
        detail,
    };
    if !paths.pacman_conf.is_file() {
        return Err(conf_err("no such file".into()));
    }
    pacmanconf::Config::options()
        .pacman_conf(paths.pacman_conf.to_string_lossy())
        .root_dir(paths.root.to_string_lossy())
        .read()
        .map_err(|e| conf_err(e.to_string()))
}

impl System {
    /// Opens the host's package system. In `Mode::Plan` the sync databases are copied to a
    /// private directory so that refreshing them takes no lock and changes nothing.
    pub fn open(paths: &HostPaths, mode: Mode) -> Result<System, SystemError> {
        Self::open_with(paths, mode, read_conf(paths)?)
    }

    /// `open` with the configuration `read_conf` returned for the same paths.
    pub fn open_with(
        paths: &HostPaths,
        mode: Mode,
        conf: pacmanconf::Config,
    ) -> Result<System, SystemError> {
        let (dbpath, scratch) = match mode {
            Mode::Apply => (paths.dbpath.clone(), None),
            Mode::Plan => {
                let scratch = private_dbpath(&paths.dbpath)?;
                (scratch.path().join("db"), Some(scratch))
            }
        };
        let open_err = |source| SystemError::Open {
            root: paths.root.display().to_string(),
            dbpath: paths.dbpath.display().to_string(),
            source,
        };
        let local = paths.dbpath.join("local");
        if !local.is_dir() {
            return Err(SystemError::Io {
                context: "no local package database at",
                path: local.display().to_string(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "check `root:`/`dbpath:` in agent.yaml",
                ),
            });
        }
        let mut alpm = Alpm::new(
            paths.root.to_string_lossy().as_bytes(),
            dbpath.to_string_lossy().as_bytes(),
        )
        .map_err(open_err)?;
        let cfg_err = |source| SystemError::Configure {
            path: paths.pacman_conf.display().to_string(),
            source,
        };
        if let Some(s) = &scratch {
            // Archive downloads made while planning land here, never in the real cache.
            let cache = s.path().join("cache");
            std::fs::create_dir_all(&cache).map_err(|source| SystemError::Scratch {
                path: cache.display().to_string(),
                source,
            })?;
            let mut dirs = vec![cache.to_string_lossy().into_owned()];
            dirs.extend(conf.cache_dir.iter().cloned());
            let mut conf = conf.clone();
            conf.cache_dir = dirs;
            alpm_utils::configure_alpm(&mut alpm, &conf).map_err(cfg_err)?;
        } else {
            alpm_utils::configure_alpm(&mut alpm, &conf).map_err(cfg_err)?;
        }
        alpm.set_log_cb((), |level: alpm::LogLevel, msg: &str, _: &mut ()| {
            let msg = msg.trim_end();
            if level.contains(alpm::LogLevel::ERROR) {
                tracing::error!(target: "libalpm", "{msg}");
            } else if level.contains(alpm::LogLevel::WARNING) {
                // Pinned pools downgrade on purpose; libalpm's warning about it is expected.
                if msg.starts_with("downgrading package") {
                    tracing::info!(target: "libalpm", "{msg}");
                } else {
                    tracing::warn!(target: "libalpm", "{msg}");
                }
            } else if level.contains(alpm::LogLevel::DEBUG) {
                tracing::trace!(target: "libalpm", "{msg}");
            }
        });
        Ok(System {
            alpm,
            conf,
            paths: paths.clone(),
            mode,
            _scratch: scratch,
        })
    }

    /// The underlying handle (for `apply`).
    pub fn alpm(&self) -> &Alpm {
        &self.alpm
    }

    /// The host paths.
    pub fn paths(&self) -> &HostPaths {
        &self.paths
    }

    /// The lock file libalpm uses.
    pub fn lockfile(&self) -> PathBuf {
        self.paths.dbpath.join("db.lck")
    }

    /// Every installed package as plain data.
    pub fn installed(&self) -> BTreeMap<String, Installed> {
        let local: Vec<&alpm::Package> = self.alpm.localdb().pkgs().iter().collect();
        let graph = DependencyGraph::of(&local);
        local
            .iter()
            .map(|p| {
                let reason = match p.reason() {
                    PackageReason::Explicit => Reason::Explicit,
                    PackageReason::Depend => Reason::Dependency,
                };
                let inst = Installed {
                    version: p.version().to_string(),
                    reason,
                    required_by: graph
                        .required_by
                        .get(p.name())
                        .map(|r| r.iter().map(|s| (*s).to_owned()).collect())
                        .unwrap_or_default(),
                    missing: graph.missing.get(p.name()).cloned().unwrap_or_default(),
                };
                (p.name().to_owned(), inst)
            })
            .collect()
    }

    /// A fingerprint of the sync databases as they are on disk (name, inode, size, mtime of
    /// every file under `<dbpath>/sync`): after `refresh`, it changes exactly when a
    /// repository published something new.
    pub fn sync_fingerprint(&self) -> Result<String, SystemError> {
        use sha2::Digest;
        use std::os::unix::fs::MetadataExt;
        let dir = Path::new(self.alpm.dbpath()).join("sync");
        let io = |source| SystemError::Io {
            context: "cannot read",
            path: dir.display().to_string(),
            source,
        };
        let mut files: Vec<(std::ffi::OsString, std::fs::Metadata)> = Vec::new();
        match std::fs::read_dir(&dir) {
            Ok(entries) => {
                for e in entries {
                    let e = e.map_err(io)?;
                    files.push((e.file_name(), e.metadata().map_err(io)?));
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        files.sort_by(|a, b| a.0.cmp(&b.0));
        let mut hash = sha2::Sha256::new();
        for (name, m) in &files {
            hash.update(name.as_encoded_bytes());
            for n in [m.ino(), m.size(), m.mtime() as u64, m.mtime_nsec() as u64] {
                hash.update(n.to_le_bytes());
            }
            hash.update([0]);
        }
        Ok(format!("{:x}", hash.finalize()))
    }

    /// Refreshes every sync database (like `pacman -Sy`). In `Mode::Apply` libalpm takes the
    /// lock for the duration; call after the lock is known to be free.
    pub fn refresh(&mut self) -> Result<(), SystemError> {
        let repo = self.repo_names();
        let servers: Vec<String> = self
            .alpm
            .syncdbs()
            .iter()
            .flat_map(|db| db.servers().iter().map(str::to_owned).collect::<Vec<_>>())
            .collect();
        let lockfile = self.lockfile().display().to_string();
        // Databases from other servers than these (another snapshot, the mirrors) are
        // downloaded in full: libalpm's If-Modified-Since would keep them (sync_source).
        let sync_dir = Path::new(self.alpm.dbpath()).join("sync");
        let (using, configured) = crate::sync_source::servers(&self.alpm, &self.conf);
        let force = crate::sync_source::must_force(&sync_dir, &using, &configured);
        let dbs = self.alpm.syncdbs_mut();
        if dbs.is_empty() {
            return Ok(());
        }
        dbs.update(force).map_err(|source| match source {
            // libalpm takes pacman's lock to write the sync databases.
            alpm::Error::HandleLock => SystemError::Locked {
                lockfile,
                waited_secs: 0,
                holder: lock_holder(),
            },
            source => SystemError::Refresh {
                repo,
                servers: servers.join(", "),
                source,
            },
        })?;
        Ok(crate::sync_source::record(&sync_dir, &using)?)
    }

    fn repo_names(&self) -> String {
        let names: Vec<&str> = self.alpm.syncdbs().iter().map(|d| d.name()).collect();
        if names.is_empty() {
            "none configured".into()
        } else {
            names.join(", ")
        }
    }

    /// Builds the transaction for `intent`, lets libalpm resolve it (dependencies, conflicts,
    /// the upgrade set) and returns what it would do. The transaction stays initialised on the
    /// handle for `apply::commit` (in `Mode::Apply`); `release` drops it.
    ///
    /// Pinned dependencies: when libalpm pulls in a package the lock pins at another version,
    /// the pinned version is added as a target and the transaction prepared again.
    pub fn prepare(
        &mut self,
        intent: &Intent,
        resolved: &Resolved,
    ) -> Result<Changeset, SystemError> {
        let mut targets = intent.targets.clone();
        let mut remove = intent.remove.clone();
        for _round in 0..6 {
            self.init_transaction()?;
            let result = self.try_prepare(intent, &targets, &remove, resolved);
            let extra = match result {
                Ok(extra) => extra,
                Err(e) => {
                    self.release();
                    return Err(e);
                }
            };
            if !extra.is_empty() {
                self.release();
                targets.extend(extra);
                continue;
            }
            // A removal the transaction installs again (a desired package still needs it) is
            // churn: keep it instead.
            let readded: Vec<String> = {
                let added: BTreeSet<&str> =
                    self.alpm.trans_add().iter().map(|p| p.name()).collect();
                remove
                    .iter()
                    .filter(|r| added.contains(r.as_str()))
                    .cloned()
                    .collect()
            };
            if !readded.is_empty() {
                self.release();
                remove.retain(|r| !readded.contains(r));
                continue;
            }
            // Packages kept only because something installed needed them may be orphaned by
            // this very transaction (an upgrade or downgrade drops a dependency): remove them
            // now rather than on the next pass.
            let orphaned = if resolved.prune {
                self.orphaned(&intent.kept)
            } else {
                Vec::new()
            };
            if orphaned.is_empty() {
                return Ok(self.changeset(intent, &targets, resolved));
            }
            self.release();
            remove.extend(orphaned);
        }
        self.release();
        Err(SystemError::Prepare {
            detail: "pinned dependencies and removals did not settle after 6 rounds".into(),
        })
    }

    /// Of `kept` (pacfleet-installed, undesired, still needed before this transaction), those
    /// nothing needs once the prepared transaction is done.
    fn orphaned(&self, kept: &[String]) -> Vec<String> {
        let local = self.alpm.localdb();
        let added: BTreeSet<&str> = self.alpm.trans_add().iter().map(|p| p.name()).collect();
        let removed: BTreeSet<&str> = self.alpm.trans_remove().iter().map(|p| p.name()).collect();
        let mut gone: BTreeSet<&str> = kept
            .iter()
            .map(String::as_str)
            .filter(|k| !removed.contains(k) && local.pkg(*k).is_ok())
            .collect();
        let satisfies = |name: &str, dep: &alpm::Dep| {
            dep.name() == name
                || local
                    .pkg(name)
                    .is_ok_and(|p| p.provides().iter().any(|pr| pr.name() == dep.name()))
        };
        loop {
            let staying: Vec<&alpm::Package> = self
                .alpm
                .trans_add()
                .iter()
                .chain(
                    local
                        .pkgs()
                        .iter()
                        .filter(|p| !added.contains(p.name()) && !removed.contains(p.name())),
                )
                .filter(|p| !gone.contains(p.name()))
                .collect();
            let needed: Vec<&str> = gone
                .iter()
                .copied()
                .filter(|k| {
                    staying
                        .iter()
                        .any(|p| p.depends().iter().any(|d| satisfies(k, d)))
                })
                .collect();
            if needed.is_empty() {
                return gone.into_iter().map(str::to_owned).collect();
            }
            for n in needed {
                gone.remove(n);
            }
        }
    }

    fn init_transaction(&mut self) -> Result<(), SystemError> {
        let flags = match self.mode {
            Mode::Plan => TransFlag::NO_LOCK,
            Mode::Apply => TransFlag::NONE,
        };
        self.alpm.trans_init(flags).map_err(|e| match e {
            alpm::Error::HandleLock => SystemError::Locked {
                lockfile: self.lockfile().display().to_string(),
                waited_secs: 0,
                holder: lock_holder(),
            },
            e => SystemError::Alpm {
                context: "starting a transaction".into(),
                source: e,
            },
        })
    }

    /// Releases the transaction (and pacman's lock in `Mode::Apply`).
    pub fn release(&mut self) {
        if let Err(e) = self.alpm.trans_release() {
            tracing::debug!("releasing the transaction: {e}");
        }
    }

    /// Adds everything and prepares; returns pinned dependencies that need another round.
    fn try_prepare(
        &mut self,
        intent: &Intent,
        targets: &[Target],
        remove: &[String],
        resolved: &Resolved,
    ) -> Result<Vec<Target>, SystemError> {
        if intent.sysupgrade {
            // A package about to be removed must not be upgraded in the same transaction:
            // libalpm would remove the old version and then install the new one. Hold it
            // back from the upgrade (only for this call; the host's IgnorePkg is kept).
            let held: Vec<String> = remove
                .iter()
                .filter(|n| !self.alpm.ignorepkgs().iter().any(|i| i == n.as_str()))
                .cloned()
                .collect();
            for name in &held {
                self.alpm
                    .add_ignorepkg(name.as_str())
                    .map_err(alpm_err(format!("holding `{name}` back from the upgrade")))?;
            }
            // On a snapshot the repositories are the state to converge to, as `pacman -Syuu`
            // after pointing at the archive: newer local versions go back to the snapshot's.
            let upgraded = self.alpm.sync_sysupgrade(resolved.snapshot.is_some());
            for name in &held {
                let _ = self.alpm.remove_ignorepkg(name.as_str());
            }
            upgraded.map_err(alpm_err("starting the system upgrade"))?;
        }
        for t in targets {
            self.add_target(t, resolved)?;
        }
        for name in remove {
            let pkg = self
                .alpm
                .localdb()
                .pkg(name.as_str())
                .map_err(alpm_err(format!("finding installed `{name}`")))?;
            self.alpm
                .trans_remove_pkg(pkg)
                .map_err(alpm_err(format!("removing `{name}`")))?;
        }
        if self.alpm.trans_add().is_empty() && self.alpm.trans_remove().is_empty() {
            return Ok(Vec::new());
        }
        if let Err(e) = self.alpm.trans_prepare() {
            return Err(SystemError::Prepare {
                detail: prepare_detail(&e),
            });
        }
        if resolved.generation.is_none() {
            return Ok(Vec::new());
        }
        let targeted: BTreeSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        Ok(self
            .alpm
            .trans_add()
            .iter()
            .filter(|p| !targeted.contains(p.name()))
            .filter_map(|p| {
                let pin = resolved.pins.get(p.name())?;
                (p.version().as_str() != pin.version).then(|| Target {
                    name: p.name().to_owned(),
                    version: Some(pin.version.clone()),
                    repo: None,
                    sha256: pin.sha256.clone(),
                    explicit: false,
                })
            })
            .collect())
    }

    fn add_target(&mut self, t: &Target, resolved: &Resolved) -> Result<(), SystemError> {
        let why = || {
            resolved
                .explicit
                .get(&t.name)
                .map(|d| {
                    d.origins
                        .iter()
                        .map(|o| o.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                })
                .unwrap_or_else(|| {
                    format!(
                        "generation {} of pool {}",
                        resolved.generation.unwrap_or(0),
                        resolved.pool
                    )
                })
        };
        // 1. The sync repositories (the named one, if the manifest said which).
        let found = self.alpm.syncdbs().iter().find_map(|db| {
            if t.repo.as_deref().is_some_and(|r| r != db.name()) {
                return None;
            }
            let p = db.pkg(t.name.as_str()).ok()?;
            match &t.version {
                Some(v) if p.version().as_str() != v => None,
                _ => Some(p),
            }
        });
        if let Some(p) = found {
            if let (Some(expected), Some(actual)) = (&t.sha256, p.sha256sum())
                && expected != actual
            {
                return Err(SystemError::ChecksumMismatch {
                    name: t.name.clone(),
                    version: p.version().to_string(),
                    source_desc: format!("repository {}", p.db().map(|d| d.name()).unwrap_or("?")),
                    actual: actual.to_owned(),
                    expected: expected.clone(),
                });
            }
            return self.alpm.trans_add_pkg(p).map_err(|e| SystemError::Alpm {
                context: format!("adding `{}`", t.name),
                source: e.error,
            });
        }
        let Some(version) = &t.version else {
            // Floating: maybe a provider or a repository we were not told about.
            if t.repo.is_none()
                && let Some(p) = self.alpm.syncdbs().find_satisfier(t.name.as_str())
            {
                return self.alpm.trans_add_pkg(p).map_err(|e| SystemError::Alpm {
                    context: format!("adding `{}`", t.name),
                    source: e.error,
                });
            }
            return Err(SystemError::UnknownPackage {
                name: t.name.clone(),
                why: why(),
                repos: match &t.repo {
                    Some(r) => format!(
                        "it was asked for from `{r}`; this host has {}",
                        self.repo_names()
                    ),
                    None => self.repo_names(),
                },
            });
        };
        // 2. A cache dir, 3. the fleet's archive.
        let file = match self.find_cached(&t.name, version) {
            Some(f) => f,
            None => self.fetch_archived(&t.name, version, resolved.archive.as_deref())?,
        };
        if let Some(expected) = &t.sha256 {
            let actual = sha256_file(&file)?;
            if &actual != expected {
                return Err(SystemError::ChecksumMismatch {
                    name: t.name.clone(),
                    version: version.clone(),
                    source_desc: file.display().to_string(),
                    actual,
                    expected: expected.clone(),
                });
            }
        }
        let level = self.alpm.local_file_siglevel();
        let pkg = self
            .alpm
            .pkg_load(file.to_string_lossy().as_bytes(), true, level)
            .map_err(alpm_err(format!("loading {}", file.display())))?;
        self.alpm.trans_add_pkg(pkg).map_err(|e| SystemError::Alpm {
            context: format!("adding {}", file.display()),
            source: e.error,
        })
    }

    fn arches(&self) -> Vec<String> {
        let mut arches: Vec<String> = self
            .alpm
            .architectures()
            .iter()
            .map(str::to_owned)
            .collect();
        if arches.is_empty() || arches.iter().any(|a| a == "auto") {
            arches.retain(|a| a != "auto");
            arches.push(std::env::consts::ARCH.to_owned());
        }
        arches.push("any".to_owned());
        arches
    }

    /// `<name>-<version>-<arch>.pkg.tar.*` in any cache dir.
    fn find_cached(&self, name: &str, version: &str) -> Option<PathBuf> {
        let arches = self.arches();
        for dir in self.alpm.cachedirs().iter() {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> =
                entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
            files.sort();
            for f in files {
                let Some(fname) = f.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                if is_package_file(fname, name, version, &arches) {
                    return Some(f);
                }
            }
        }
        None
    }

    /// The package from the fleet's archive (Arch Linux Archive layout); file:// is read in
    /// place, http(s):// is downloaded into the cache by libalpm.
    fn fetch_archived(
        &self,
        name: &str,
        version: &str,
        archive: Option<&str>,
    ) -> Result<PathBuf, SystemError> {
        let caches: Vec<&str> = self.alpm.cachedirs().iter().collect();
        let not_found = |archive: String| SystemError::PinNotFound {
            name: name.to_owned(),
            version: version.to_owned(),
            caches: caches.join(", "),
            archive,
        };
        let Some(archive) = archive else {
            return Err(not_found(
                "the fleet has no `archive:` in fleet.yaml".into(),
            ));
        };
        let first = name.chars().next().unwrap_or('_');
        let base = format!("{}/packages/{first}/{name}", archive.trim_end_matches('/'));
        let arches = self.arches();
        if let Some(dir) = base.strip_prefix("file://") {
            let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
                .map(|rd| rd.filter_map(|e| e.ok().map(|e| e.path())).collect())
                .unwrap_or_default();
            files.sort();
            return files
                .into_iter()
                .find(|f| {
                    f.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| is_package_file(n, name, version, &arches))
                })
                .ok_or_else(|| not_found(format!("not in the archive at {base}/")));
        }
        let mut tried = Vec::new();
        for arch in &arches {
            for ext in ["zst", "xz"] {
                let url = format!("{base}/{name}-{version}-{arch}.pkg.tar.{ext}");
                match self.alpm.fetch_pkgurl([url.as_str()].to_vec().iter()) {
                    Ok(paths) => {
                        if let Some(p) = paths.iter().next() {
                            return Ok(PathBuf::from(p));
                        }
                    }
                    Err(e) => tried.push(format!("{url} ({e})")),
                }
            }
        }
        Err(not_found(format!(
            "not downloadable from the archive: tried {}",
            tried.join(", ")
        )))
    }

    /// Reads the prepared transaction into a changeset.
    fn changeset(&self, intent: &Intent, targets: &[Target], resolved: &Resolved) -> Changeset {
        let local = self.alpm.localdb();
        let by_target: BTreeMap<&str, &Target> =
            targets.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut changes = Vec::new();
        let mut pacnew = Vec::new();
        for p in self.alpm.trans_add().iter() {
            let old = local.pkg(p.name()).ok();
            let new_v = p.version().to_string();
            let action = match old {
                None => Action::Install,
                Some(o) => match alpm::vercmp(o.version().as_str(), new_v.as_str()) {
                    std::cmp::Ordering::Less => Action::Upgrade,
                    std::cmp::Ordering::Greater => Action::Downgrade,
                    std::cmp::Ordering::Equal => Action::Reinstall,
                },
            };
            let desired = resolved.explicit.get(p.name());
            let why = match (desired, by_target.get(p.name())) {
                (Some(d), _) => d.origins.iter().map(|o| o.to_string()).collect(),
                (None, Some(_)) => vec![format!(
                    "pinned by generation {}",
                    resolved.generation.unwrap_or(0)
                )],
                (None, None) if old.is_some() => vec!["system upgrade".to_owned()],
                (None, None) => {
                    let needed_by: Vec<String> = self
                        .alpm
                        .trans_add()
                        .iter()
                        .filter(|q| q.depends().iter().any(|d| d.name() == p.name()))
                        .map(|q| q.name().to_owned())
                        .collect();
                    if needed_by.is_empty() {
                        vec!["dependency".to_owned()]
                    } else {
                        vec![format!("dependency of {}", needed_by.join(", "))]
                    }
                }
            };
            let reason = if desired.is_some() {
                Reason::Explicit
            } else {
                match old.map(|o| o.reason()) {
                    Some(PackageReason::Explicit) => Reason::Explicit,
                    _ => Reason::Dependency,
                }
            };
            let source = match p.db() {
                Some(db) => Some(format!("repo {}", db.name())),
                None => p.filename().map(|f| f.to_owned()),
            };
            if let Some(o) = old {
                for b in o.backup().iter() {
                    let on_disk = self.paths.root.join(b.name());
                    if let Ok(bytes) = std::fs::read(&on_disk)
                        && md5_hex(&bytes) != b.hash()
                    {
                        pacnew.push(format!("/{}", b.name()));
                    }
                }
            }
            changes.push(Change {
                action,
                name: p.name().to_owned(),
                old: old.map(|o| o.version().to_string()),
                new: Some(new_v),
                reason: Some(reason),
                why,
                download_size: u64::try_from(p.download_size()).unwrap_or(0),
                size_delta: p.isize() - old.map_or(0, |o| o.isize()),
                source,
            });
        }
        for p in self.alpm.trans_remove().iter() {
            changes.push(Change {
                action: Action::Remove,
                name: p.name().to_owned(),
                old: Some(p.version().to_string()),
                new: None,
                reason: None,
                why: vec!["no longer desired (prune)".to_owned()],
                download_size: 0,
                size_delta: -p.isize(),
                source: None,
            });
        }
        let touched: BTreeSet<String> = changes.iter().map(|c| c.name.clone()).collect();
        for (names, action, reason, why) in [
            (
                &intent.mark_explicit,
                Action::MarkExplicit,
                Reason::Explicit,
                "desired",
            ),
            (
                &intent.mark_dependency,
                Action::MarkDependency,
                Reason::Dependency,
                "no longer desired",
            ),
        ] {
            for n in names.iter().filter(|n| !touched.contains(*n)) {
                let v = local.pkg(n.as_str()).ok().map(|p| p.version().to_string());
                changes.push(Change {
                    action,
                    name: n.clone(),
                    old: v.clone(),
                    new: v,
                    reason: Some(reason),
                    why: vec![why.to_owned()],
                    download_size: 0,
                    size_delta: 0,
                    source: None,
                });
            }
        }
        changes.sort_by(|a, b| (a.action, &a.name).cmp(&(b.action, &b.name)));
        pacnew.sort();
        pacnew.dedup();
        Changeset { changes, pacnew }
    }

    /// Lets the next commit overwrite the files of `packages` (name, version, package file if
    /// known) that exist on disk: an interrupted pacfleet transaction left them there, owned by
    /// no package, and libalpm would otherwise refuse them as file conflicts. The package file
    /// is the given one, else the one in a cache dir (where libalpm downloaded it); without
    /// either nothing is allowed. Returns the files allowed, relative to the root.
    pub fn allow_overwrite(
        &mut self,
        packages: &[(String, String, Option<PathBuf>)],
    ) -> Result<Vec<String>, SystemError> {
        let mut allowed = Vec::new();
        for (name, version, file) in packages {
            let Some(file) = file
                .clone()
                .filter(|f| f.is_file())
                .or_else(|| self.find_cached(name, version))
            else {
                continue;
            };
            let level = self.alpm.local_file_siglevel();
            let pkg = self
                .alpm
                .pkg_load(file.to_string_lossy().as_bytes(), true, level)
                .map_err(alpm_err(format!("loading {}", file.display())))?;
            let names: Vec<String> = pkg
                .files()
                .files()
                .iter()
                .filter_map(|f| std::str::from_utf8(f.name()).ok().map(str::to_owned))
                .filter(|n| !n.ends_with('/'))
                .filter(|n| std::fs::symlink_metadata(self.paths.root.join(n)).is_ok())
                .collect();
            drop(pkg);
            for n in names {
                self.alpm
                    .add_overwrite_file(glob_escape(&n))
                    .map_err(alpm_err(format!("allowing `{n}` to be overwritten")))?;
                allowed.push(n);
            }
        }
        Ok(allowed)
    }

    /// Commits the prepared transaction; the error is libalpm's reason in words.
    pub fn commit_transaction(&mut self) -> Result<(), String> {
        self.alpm.trans_commit().map_err(|e| match e.error() {
            alpm::Error::FileConflicts => {
                "files in the packages already exist on disk and belong to no package (file conflicts); remove or move them, or find which package should own them".to_owned()
            }
            alpm::Error::PkgInvalid | alpm::Error::PkgInvalidChecksum | alpm::Error::PkgInvalidSig => format!(
                "{}: a package file is invalid or corrupt; clear it from the cache and retry",
                e.error()
            ),
            other => other.to_string(),
        })
    }

    /// The pacman.conf as read.
    pub fn conf(&self) -> &pacmanconf::Config {
        &self.conf
    }

    /// Sets install reasons after a commit (needs the lock, which an initialised transaction
    /// holds in `Mode::Apply`).
    pub fn set_reasons(&self, changes: &Changeset) -> Result<(), SystemError> {
        for c in &changes.changes {
            let Some(reason) = c.reason else { continue };
            let Ok(pkg) = self.alpm.localdb().pkg(c.name.as_str()) else {
                continue;
            };
            let want = match reason {
                Reason::Explicit => PackageReason::Explicit,
                Reason::Dependency => PackageReason::Depend,
            };
            if pkg.reason() != want {
                pkg.set_reason(want).map_err(alpm_err(format!(
                    "setting the install reason of `{}`",
                    c.name
                )))?;
            }
        }
        Ok(())
    }

    /// Points every sync database of this handle at the fleet archive's repositories of
    /// `date` (`<archive>/repos/YYYY/MM/DD/<repo>/os/<arch>`, `$arch` being the handle's first
    /// architecture, as pacman expands it), replacing pacman.conf's servers for this handle
    /// only; signature levels stay pacman.conf's. Call before `refresh`, which then downloads
    /// the snapshot's databases in full when those on disk came from elsewhere.
    pub fn use_snapshot(&mut self, archive: Option<&str>, date: &str) -> Result<(), SystemError> {
        let arch = crate::snapshot::handle_arch(self.alpm.architectures().iter());
        for db in self.alpm.syncdbs_mut() {
            let url = crate::snapshot::repo_server(archive, date, db.name(), &arch)?;
            db.set_servers([url.as_str()].iter().copied())
                .map_err(alpm_err(format!(
                    "using the snapshot {date} ({url}) for `{}`",
                    db.name()
                )))?;
        }
        tracing::info!(
            "repositories from the archive snapshot of {date}: {}",
            crate::snapshot::server(archive, date).unwrap_or_default()
        );
        Ok(())
    }
}

/// `path` as a libalpm overwrite pattern matching only itself: fnmatch's special characters
/// escaped, and a leading `!` or `\\` (which libalpm reads as negation or strips) escaped too.
/// The local package database as files, read without libalpm: the entries an interrupted
/// transaction left half-written, and a fingerprint that changes whenever pacman installs,
/// removes, upgrades or re-marks a package (every entry's name, and its `desc` file's inode,
/// size, mtime and ctime: `pacman -D` rewrites `desc` in place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalScan {
    /// Entries (`name-version`) missing `desc` or `files`; what `pacman -Dk` reports.
    pub incomplete: Vec<String>,
    /// sha256 over every entry's metadata, lowercase hex.
    pub fingerprint: String,
}

/// Scans `<dbpath>/local`. A missing directory is an error naming agent.yaml's fields.
pub fn scan_local(dbpath: &Path) -> Result<LocalScan, SystemError> {
    use sha2::Digest;
    let local = dbpath.join("local");
    let io = |context: &'static str, path: &Path| {
        let path = path.display().to_string();
        move |source| SystemError::Io {
            context,
            path,
            source,
        }
    };
    let mut names: Vec<std::ffi::OsString> = Vec::new();
    for entry in std::fs::read_dir(&local).map_err(io(
        "cannot read the local package database (check `root:`/`dbpath:` in agent.yaml)",
        &local,
    ))? {
        let entry = entry.map_err(io("cannot read", &local))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            names.push(entry.file_name());
        }
    }
    names.sort();
    let mut hash = sha2::Sha256::new();
    let mut incomplete = Vec::new();
    for name in &names {
        let dir = local.join(name);
        let desc = std::fs::symlink_metadata(dir.join("desc")).ok();
        let files = dir.join("files").is_file();
        hash.update(name.as_encoded_bytes());
        match &desc {
            Some(m) if m.is_file() && files => {
                use std::os::unix::fs::MetadataExt;
                for n in [
                    m.ino(),
                    m.size(),
                    m.mtime() as u64,
                    m.mtime_nsec() as u64,
                    m.ctime() as u64,
                    m.ctime_nsec() as u64,
                ] {
                    hash.update(n.to_le_bytes());
                }
            }
            _ => incomplete.push(name.to_string_lossy().into_owned()),
        }
        hash.update([0]);
    }
    Ok(LocalScan {
        incomplete,
        fingerprint: format!("{:x}", hash.finalize()),
    })
}

/// Who needs whom among a set of installed packages, by libalpm's rules (a dependency is met
/// by a package of that name and a fitting version, or by a versioned provision that fits, or
/// by any provision when unversioned), computed in one pass over every dependency through
/// name and provision indexes. libalpm's own `alpm_pkg_compute_requiredby` and
/// `alpm_checkdeps` scan the whole database for every package: quadratic, most of a no-op
/// pass on a host with a thousand packages.
struct DependencyGraph<'a> {
    /// Package name → the packages depending on it, sorted (as `pacman -Qi` "Required By").
    required_by: BTreeMap<&'a str, BTreeSet<&'a str>>,
    /// Package name → its dependencies nothing satisfies (someone ran `pacman -Rdd`; what
    /// `pacman -Dk` reports): planning installs them again.
    missing: BTreeMap<&'a str, Vec<String>>,
}

impl<'a> DependencyGraph<'a> {
    fn of(pkgs: &[&'a alpm::Package]) -> Self {
        use alpm_utils::depends::{satisfies_dep, satisfies_provide};
        let mut by_name: std::collections::HashMap<&str, &alpm::Package> =
            std::collections::HashMap::with_capacity(pkgs.len());
        let mut providers: std::collections::HashMap<&str, Vec<(&str, &alpm::Dep)>> =
            std::collections::HashMap::new();
        for p in pkgs {
            by_name.insert(p.name(), p);
            for prov in p.provides() {
                providers
                    .entry(prov.name())
                    .or_default()
                    .push((p.name(), prov));
            }
        }
        let mut graph = DependencyGraph {
            required_by: BTreeMap::new(),
            missing: BTreeMap::new(),
        };
        for p in pkgs {
            for dep in p.depends() {
                let mut met = false;
                if let Some(q) = by_name.get(dep.name())
                    && satisfies_dep(dep, q.name(), q.version())
                {
                    graph
                        .required_by
                        .entry(q.name())
                        .or_default()
                        .insert(p.name());
                    met = true;
                }
                for (q, prov) in providers.get(dep.name()).into_iter().flatten() {
                    if satisfies_provide(dep, prov) {
                        graph.required_by.entry(q).or_default().insert(p.name());
                        met = true;
                    }
                }
                if !met {
                    graph
                        .missing
                        .entry(p.name())
                        .or_default()
                        .push(dep.name().to_owned());
                }
            }
        }
        graph
    }
}

fn glob_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 1);
    if path.starts_with(['!', '\\']) {
        out.push('\\');
    }
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Whether `file` is `<name>-<version>-<arch>.pkg.tar.<ext>` for one of `arches`.
fn is_package_file(file: &str, name: &str, version: &str, arches: &[String]) -> bool {
    let Some(rest) = file.strip_prefix(&format!("{name}-{version}-")) else {
        return false;
    };
    if file.ends_with(".sig") || file.ends_with(".part") {
        return false;
    }
    arches.iter().any(|a| {
        rest.strip_prefix(a.as_str())
            .is_some_and(|r| r.starts_with(".pkg.tar"))
    })
}

/// Copies the db directory's sync databases to a private directory whose `local` is a symlink
/// to the real one, so a plan can refresh them without the lock (the `checkupdates` approach).
fn private_dbpath(dbpath: &Path) -> Result<tempfile::TempDir, SystemError> {
    let scratch_err = |path: &Path| {
        let path = path.display().to_string();
        move |source| SystemError::Scratch { path, source }
    };
    let tmp = tempfile::Builder::new()
        .prefix("pacfleet-plan-")
        .tempdir()
        .map_err(scratch_err(Path::new("$TMPDIR")))?;
    let db = tmp.path().join("db");
    let sync = db.join("sync");
    std::fs::create_dir_all(&sync).map_err(scratch_err(&sync))?;
    std::os::unix::fs::symlink(dbpath.join("local"), db.join("local")).map_err(scratch_err(&db))?;
    if let Ok(entries) = std::fs::read_dir(dbpath.join("sync")) {
        for e in entries.flatten() {
            let p = e.path();
            if p.is_file() {
                let dest = sync.join(e.file_name());
                std::fs::copy(&p, &dest).map_err(scratch_err(&p))?;
                // With the original's mtime: libalpm refreshes with If-Modified-Since that
                // mtime (a copy dated now is never refreshed from an HTTP mirror), and
                // sync_source recognises the files by it.
                std::fs::metadata(&p)
                    .and_then(|m| m.modified())
                    .and_then(|t| {
                        std::fs::File::options()
                            .write(true)
                            .open(&dest)?
                            .set_modified(t)
                    })
                    .map_err(scratch_err(&dest))?;
            }
        }
    }
    Ok(tmp)
}

fn prepare_detail(e: &alpm::PrepareError<'_>) -> String {
    use alpm::PrepareData;
    let mut lines = vec![e.error().to_string()];
    match e.data() {
        Some(PrepareData::UnsatisfiedDeps(list)) => {
            for m in list.iter() {
                lines.push(format!(
                    "`{}` requires `{}`, which nothing provides",
                    m.target(),
                    m.depend()
                ));
            }
        }
        Some(PrepareData::ConflictingDeps(list)) => {
            for c in list.iter() {
                lines.push(format!(
                    "`{}` and `{}` conflict ({})",
                    c.package1().name(),
                    c.package2().name(),
                    c.reason()
                ));
            }
        }
        Some(PrepareData::PkgInvalidArch(list)) => {
            for p in list.iter() {
                lines.push(format!("`{}` is built for another architecture", p.name()));
            }
        }
        None => {}
    }
    lines.join("; ")
}

/// Names processes that look like package managers, to say who holds the lock.
pub fn lock_holder() -> String {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return String::new();
    };
    let me = std::process::id().to_string();
    let mut who = Vec::new();
    for e in entries.flatten() {
        let pid = e.file_name().to_string_lossy().into_owned();
        if pid == me || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(comm) = std::fs::read_to_string(e.path().join("comm")) else {
            continue;
        };
        let comm = comm.trim();
        if [
            "pacman",
            "yay",
            "paru",
            "pamac",
            "pikaur",
            "fleetctl",
            "packagekitd",
        ]
        .contains(&comm)
        {
            who.push(format!("{comm} (pid {pid})"));
        }
    }
    if who.is_empty() {
        String::new()
    } else {
        format!(", held by {}", who.join(", "))
    }
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, SystemError> {
    use sha2::Digest;
    let mut f = std::fs::File::open(path).map_err(|source| SystemError::Io {
        context: "cannot read",
        path: path.display().to_string(),
        source,
    })?;
    let mut h = sha2::Sha256::new();
    std::io::copy(&mut f, &mut h).map_err(|source| SystemError::Io {
        context: "cannot read",
        path: path.display().to_string(),
        source,
    })?;
    Ok(format!("{:x}", h.finalize()))
}

/// md5 of bytes, lowercase hex: libalpm records backup files' hashes as md5.
fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("{:x}", md5::Md5::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_file_names() {
        let arches = vec!["x86_64".to_owned(), "any".to_owned()];
        assert!(is_package_file(
            "bash-5.2-1-x86_64.pkg.tar.zst",
            "bash",
            "5.2-1",
            &arches
        ));
        assert!(is_package_file(
            "bash-5.2-1-any.pkg.tar.gz",
            "bash",
            "5.2-1",
            &arches
        ));
        assert!(!is_package_file(
            "bash-5.2-1-x86_64.pkg.tar.zst.sig",
            "bash",
            "5.2-1",
            &arches
        ));
        assert!(!is_package_file(
            "bash-5.2-10-x86_64.pkg.tar.zst",
            "bash",
            "5.2-1",
            &arches
        ));
        assert!(!is_package_file(
            "bash-completion-2-1-any.pkg.tar.zst",
            "bash",
            "2-1",
            &arches
        ));
        assert!(!is_package_file(
            "bash-5.2-1-aarch64.pkg.tar.zst",
            "bash",
            "5.2-1",
            &arches
        ));
    }
}
