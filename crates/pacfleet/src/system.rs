//! The host's package system, through libalpm (the `alpm` crate): opening a handle configured
//! from the host's pacman.conf with pacfleet's root and dbpath, reading the local database as
//! plain data, refreshing sync databases, and turning a `plan::Intent` into a prepared libalpm
//! transaction whose contents (dependency closure, sizes, sources) become a `plan::Changeset`.
//!
//! libalpm's questions are answered here, by policy, for the handle's whole life (system
//! upgrade, prepare and commit alike); package files pacfleet loads itself (cache, archive)
//! are verified as pacman verifies them, from a private copy whose bytes carry the sha256 check.
//!
//! Planning is lock-free (as paru does it): `Mode::Plan` refreshes the sync databases into a
//! private copy of the db directory and prepares with `NO_LOCK`, so `fleetctl plan` never
//! blocks or disturbs pacman. `Mode::Apply` works on the real databases under pacman's lock;
//! committing is `apply`'s job.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use alpm::{Alpm, AnyQuestion, PackageReason, Question, SigLevel, TransFlag};

use crate::plan::{Action, Change, Changeset, Held, Installed, Intent, Reason, Target};
use crate::resolve::Resolved;

pub use crate::config::HostPaths;

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
    /// `--bootstrap` of a root whose keyring does not exist, while packages must be signed.
    #[error(
        "cannot provision this root: its keyring (GPGDir {gpgdir}) does not exist, and its pacman.conf checks package signatures. Make it first, as for pacstrap: `pacman-key --gpgdir {gpgdir} --init && pacman-key --gpgdir {gpgdir} --populate`, or point GPGDir at the build machine's keyring; nothing was created"
    )]
    NoKeyring {
        /// The GPGDir.
        gpgdir: String,
    },
    /// The root has no package database: not an installed system.
    #[error(
        "no package database at {dbpath} (root {root}): this root is not an installed system. To provision an empty root (an image or chroot being built), run `fleetctl reconcile --bootstrap`; otherwise check `root:` and `dbpath:` in agent.yaml"
    )]
    NoDatabase {
        /// The db path.
        dbpath: String,
        /// The root.
        root: String,
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
        "package `{name}` is pinned to version {version} (asked for by {why}), which is in no sync repository, {searched}; put the package file in the cache or the fleet's archive, or pin a version that exists"
    )]
    PinNotFound {
        /// Package name.
        name: String,
        /// Who asked for it: the sets, pool, host or generation.
        why: String,
        /// The pinned version.
        version: String,
        /// Where else it was looked for: the cache dirs and the archive.
        searched: String,
    },
    /// A package file's checksum differs from the pin.
    #[error(
        "package `{name}` {version} from {source_desc} has sha256 {actual}, but the generation pins {expected}; refusing it. Someone changed the package file, or the pin is wrong: check the archive and the cache. If the generation was not captured from this fleet's hosts (copied from an example, written for other machines), remove `generation:` from the pool so it floats, sign, reconcile, and capture the pool's first real generation on a host with `fleetctl set-latest`; a host that has applied a state can capture a new generation directly"
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
    /// A package file's signature does not verify under the host's signature level.
    #[error("{0}")]
    Signature(Box<SignatureProblem>),
    /// Installing a package would need removing a conflicting one that policy keeps.
    #[error(
        "`{new}` conflicts with installed `{installed}`, which {owner}; pacfleet removes only packages it installed and no longer desires, so nothing was changed. {fix}"
    )]
    Conflict {
        /// The package to install.
        new: String,
        /// The installed package it conflicts with.
        installed: String,
        /// Why it stays (`was installed by hand`, `is desired by …`).
        owner: String,
        /// What to do.
        fix: String,
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

/// libalpm's commit failed. Nothing was changed for the file-conflict and invalid-package
/// cases: libalpm checks both before it touches the system.
#[derive(Debug, thiserror::Error)]
pub enum CommitError {
    /// Files the transaction would write exist already: in two packages of the transaction,
    /// or on disk (owned by another package, or by none).
    #[error(
        "file conflicts, nothing was changed: {}. Move the files on disk away, or stop desiring one of two packages that own the same file (`exclude:` in the manifests)",
        conflicts.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    FileConflicts {
        /// libalpm's list: one entry per file, with both owners.
        conflicts: Vec<FileConflict>,
    },
    /// Package files failed their integrity or signature check.
    #[error("{problem}: {}; nothing was changed. {fix}", files.join(", "))]
    InvalidPackages {
        /// Whether libalpm found them corrupt and deleted them (fetched again by the next
        /// prepare), rather than signed by a key the host does not trust.
        corrupt: bool,
        /// libalpm's error in words.
        problem: String,
        /// The package files.
        files: Vec<String>,
        /// What to do.
        fix: String,
    },
    /// Anything else libalpm reported.
    #[error("{0}")]
    Alpm(#[source] alpm::Error),
}

/// A file a transaction would write that exists already: libalpm's `alpm_fileconflict_t`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConflict {
    /// The file, shown relative to the host's root (`/usr/bin/tool`) when it is under it.
    pub file: String,
    /// The package of the transaction that installs it.
    pub target: String,
    /// What has the file already.
    pub with: ConflictWith,
}

/// Who else has a conflicting file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConflictWith {
    /// Another package of the same transaction installs it too.
    Target(String),
    /// It exists on disk, owned by this installed package.
    Owner(String),
    /// It exists on disk and belongs to no package.
    Unowned,
}

impl std::fmt::Display for FileConflict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let FileConflict { file, target, with } = self;
        match with {
            ConflictWith::Target(other) => {
                write!(f, "{file} exists in both '{target}' and '{other}'")
            }
            ConflictWith::Owner(other) => write!(
                f,
                "{file} exists on disk, owned by '{other}' ('{target}' installs it)"
            ),
            ConflictWith::Unowned => write!(
                f,
                "{file} exists on disk and belongs to no package ('{target}' installs it)"
            ),
        }
    }
}

/// libalpm's log line to `tracing` (the level mapped, pinned downgrades not warned about).
pub fn log_line(level: alpm::LogLevel, msg: &str) {
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
}

/// A package file whose signature does not verify, in words.
#[derive(Debug, thiserror::Error)]
#[error(
    "package `{name}` {version} from {source_desc} is refused: {problem} (checked at {level}){key}; nothing was changed. {fix}"
)]
pub struct SignatureProblem {
    /// Package name.
    pub name: String,
    /// Version.
    pub version: String,
    /// Where the file came from.
    pub source_desc: String,
    /// What libalpm said.
    pub problem: String,
    /// Which signature level applied (`RemoteFileSigLevel = Required`, …).
    pub level: String,
    /// `; signed by key …` when the signature names a key.
    pub key: String,
    /// What to do.
    pub fix: String,
}

/// A `map_err` for file operations on `path`.
fn io(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SystemError + use<> {
    let path = path.display().to_string();
    move |source| SystemError::Io {
        context,
        path,
        source,
    }
}

/// A C string from libalpm as an owned `String` (lossy), or empty for NULL.
///
/// # Safety
/// `p` is NULL or points to a NUL-terminated string that stays valid for the call.
pub(crate) unsafe fn c_text(p: *const std::ffi::c_char) -> String {
    if p.is_null() {
        String::new()
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_string_lossy()
            .into_owned()
    }
}

fn alpm_err(context: impl Into<String>) -> impl FnOnce(alpm::Error) -> SystemError {
    let context = context.into();
    move |source| SystemError::Alpm { context, source }
}

/// What policy needs to answer libalpm's questions for this host: plain data, set before
/// planning (`System::set_policy`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    /// Packages the fleet desires explicitly on this host.
    pub desired: BTreeSet<String>,
    /// Packages the pool's generation locks.
    pub locked: BTreeSet<String>,
    /// Packages pacfleet installed (its inventory): the only ones a conflict may remove.
    pub inventory: BTreeSet<String>,
}

/// The question callback's state: the policy and what it answered. Shared between the handle's
/// callback (installed once, when the handle opens, so questions libalpm asks during the
/// system upgrade and prepare are answered as well as those of the commit) and `System`.
#[derive(Debug, Default)]
struct Answers {
    policy: Policy,
    /// Each answer in words, in the order asked.
    said: Vec<String>,
    /// (new, old): replacements taken.
    replaced: Vec<(String, String)>,
    /// Conflicts policy refused to resolve by removal: (new, installed, why it stays).
    refused: Vec<(String, String, String)>,
    /// Package files libalpm found corrupt (deleted, to be fetched again).
    corrupted: Vec<String>,
    /// Ignored packages libalpm asked to install (answered no).
    ignored: Vec<(String, String)>,
    /// Keys a signature needs that the host's keyring lacks (libalpm asked to import them).
    missing_keys: Vec<String>,
}

/// An open libalpm handle for one host.
pub struct System {
    alpm: Alpm,
    conf: pacmanconf::Config,
    paths: HostPaths,
    mode: Mode,
    /// For `Mode::Plan`: the private db directory (and cache for archive downloads).
    _scratch: Option<tempfile::TempDir>,
    /// The question callback's policy and answers.
    answers: Rc<RefCell<Answers>>,
    /// Packages IgnorePkg/IgnoreGroup hold back in the transaction being prepared.
    held: Vec<Held>,
    /// Private, root-owned copies of package files loaded from a cache dir or the archive:
    /// the sha256 pin is checked on these very bytes, which libalpm then installs.
    private: Option<tempfile::TempDir>,
    /// Private copy → the file it was copied from (what plans and history show).
    copied_from: BTreeMap<PathBuf, PathBuf>,
    /// Downloads of archive files through pacfleet (peers first), when the pass set it
    /// ([`System::fetch_archive_through`]); what they did, for the pass's report.
    archive_fetch: Option<ArchiveFetch>,
    /// Whether a libalpm transaction is initialized (in `Mode::Apply`, holding pacman's lock):
    /// [`System::release`] ends it, and so does dropping the `System`, on every path — an
    /// error that returns early never leaves the transaction, or the lock, behind.
    in_transaction: bool,
}

impl Drop for System {
    fn drop(&mut self) {
        self.release();
    }
}

/// The HTTP clients and the live peers of a pass's downloads.
pub type Connected = (crate::download::Clients, Vec<crate::download::Peer>);

/// How a pass has archive files (generation pins no sync database has) downloaded: by
/// `download::fetch`, peers first, into the real cache; and what those downloads did.
pub struct ArchiveFetch {
    me: String,
    cache_dir: PathBuf,
    status_file: Option<PathBuf>,
    /// Makes the clients and finds the live peers, on the first archive file only (a pass
    /// that needs none pays nothing); then kept in `connected`.
    connect: Option<Box<dyn FnOnce() -> Option<Connected>>>,
    connected: Option<Connected>,
    outcome: crate::download::Outcome,
}

impl ArchiveFetch {
    /// Downloads as host `me` into `cache_dir`, publishing to `status_file`, with the clients
    /// and peers `connect` gives when the first archive file is needed (`None`: libalpm
    /// downloads it, as without peers).
    pub fn new(
        me: String,
        cache_dir: PathBuf,
        status_file: Option<PathBuf>,
        connect: Box<dyn FnOnce() -> Option<Connected>>,
    ) -> ArchiveFetch {
        ArchiveFetch {
            me,
            cache_dir,
            status_file,
            connect: Some(connect),
            connected: None,
            outcome: crate::download::Outcome::default(),
        }
    }

    /// The clients and live peers if an archive file needed them, and what the downloads did.
    pub fn into_parts(self) -> (Option<Connected>, crate::download::Outcome) {
        (self.connected, self.outcome)
    }

    /// Downloads `wanted` (peers first, then the archive); whether it is in the cache now.
    fn fetch(&mut self, wanted: crate::download::Wanted) -> bool {
        if let Some(connect) = self.connect.take() {
            self.connected = connect();
        }
        let Some((clients, peers)) = &self.connected else {
            return false;
        };
        let f = crate::download::Fetch {
            me: &self.me,
            cache_dir: &self.cache_dir,
            status_file: self.status_file.clone(),
            limits: crate::download::Limits::default(),
            clients,
        };
        let outcome = crate::download::fetch(&f, vec![wanted], peers.clone());
        let got = !outcome.fetched.is_empty();
        self.outcome.merge(outcome);
        got
    }
}

/// Where a package file that pacfleet loads itself came from, which decides how its
/// signature is checked (as pacman checks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileOrigin {
    /// A cache dir: a local file (`LocalFileSigLevel`, as `pacman -U` of that file).
    Cache,
    /// The fleet's archive (any scheme, file:// too) or a peer: a remote file
    /// (`RemoteFileSigLevel`, which inherits `SigLevel` where unset).
    Remote,
}

/// pacman's signature-level words applied in order onto `base`: how pacman merges
/// `LocalFileSigLevel`/`RemoteFileSigLevel` over `SigLevel` (each word overrides only the part
/// it names: `PackageRequired` leaves the database part as `SigLevel` set it).
pub fn merge_sig_level(base: SigLevel, words: &[String]) -> SigLevel {
    let mut sig = base;
    for word in words {
        let (pkg, db, rest) = if let Some(r) = word.strip_prefix("Package") {
            (true, false, r)
        } else if let Some(r) = word.strip_prefix("Database") {
            (false, true, r)
        } else {
            (true, true, word.as_str())
        };
        let parts = [
            (
                pkg,
                SigLevel::PACKAGE,
                SigLevel::PACKAGE_OPTIONAL,
                SigLevel::PACKAGE_MARGINAL_OK | SigLevel::PACKAGE_UNKNOWN_OK,
            ),
            (
                db,
                SigLevel::DATABASE,
                SigLevel::DATABASE_OPTIONAL,
                SigLevel::DATABASE_MARGINAL_OK | SigLevel::DATABASE_UNKNOWN_OK,
            ),
        ];
        for (on, check, optional, trust_all) in parts {
            if !on {
                continue;
            }
            match rest {
                "Never" => sig.remove(check | optional),
                "Optional" => sig.insert(check | optional),
                "Required" => {
                    sig.insert(check);
                    sig.remove(optional);
                }
                "TrustedOnly" => sig.remove(trust_all),
                "TrustAll" => sig.insert(trust_all),
                _ => {}
            }
        }
    }
    sig
}

/// A signature level in pacman.conf's words, for messages.
fn sig_level_words(level: SigLevel) -> &'static str {
    if !level.contains(SigLevel::PACKAGE) {
        "Never"
    } else if level.contains(SigLevel::PACKAGE_OPTIONAL) {
        "Optional"
    } else {
        "Required"
    }
}

impl std::fmt::Debug for System {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("System")
            .field("paths", &self.paths)
            .field("mode", &self.mode)
            .finish()
    }
}

/// The directories pacman.conf names (the `[options]` lines `CacheDir`, `HookDir`, `GPGDir`)
/// and its `SigLevel`,
/// read from the file itself rather than through `pacman-conf`, which refuses any of them that
/// does not exist yet: what `reconcile --bootstrap` creates (or checks) before it can read the
/// configuration. Unset ones are pacman's defaults under `root`. `Include`d files are not read.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ConfDirs {
    /// `CacheDir` values.
    pub cache: Vec<PathBuf>,
    /// `HookDir` values.
    pub hook: Vec<PathBuf>,
    /// `GPGDir`.
    pub gpg: PathBuf,
    /// The words of `SigLevel` (pacman's default, `Optional`, when there is none).
    pub sig_level: Vec<String>,
}

/// See [`ConfDirs`].
pub fn conf_dirs(pacman_conf: &Path, root: &Path) -> Result<ConfDirs, SystemError> {
    let text = std::fs::read_to_string(pacman_conf).map_err(|e| SystemError::Config {
        path: pacman_conf.display().to_string(),
        detail: e.to_string(),
    })?;
    let mut dirs = ConfDirs::default();
    let mut gpg = None;
    let mut in_options = false;
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_options = section == "options";
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !in_options {
            continue;
        }
        let value = PathBuf::from(value.trim());
        match key.trim() {
            "CacheDir" => dirs.cache.push(value),
            "HookDir" => dirs.hook.push(value),
            "GPGDir" => gpg = Some(value),
            "SigLevel" => dirs.sig_level.extend(
                value
                    .to_string_lossy()
                    .split_whitespace()
                    .map(str::to_owned),
            ),
            _ => {}
        }
    }
    if dirs.cache.is_empty() {
        dirs.cache.push(root.join("var/cache/pacman/pkg"));
    }
    if dirs.hook.is_empty() {
        dirs.hook.push(root.join("etc/pacman.d/hooks"));
    }
    dirs.gpg = gpg.unwrap_or_else(|| root.join("etc/pacman.d/gnupg"));
    if dirs.sig_level.is_empty() {
        dirs.sig_level.push("Optional".to_owned());
    }
    Ok(dirs)
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
        if !paths.dbpath.join("local").is_dir() {
            return Err(SystemError::NoDatabase {
                dbpath: paths.dbpath.display().to_string(),
                root: paths.root.display().to_string(),
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
        // pacman-conf prints the file levels unmerged, and nothing at all for an absent
        // `RemoteFileSigLevel`; pacman merges each over `SigLevel`. Do as pacman does.
        let default = merge_sig_level(SigLevel::NONE, &conf.sig_level);
        let local = merge_sig_level(default, &conf.local_file_sig_level);
        let remote = merge_sig_level(default, &conf.remote_file_sig_level);
        alpm.set_default_siglevel(default).map_err(cfg_err)?;
        alpm.set_local_file_siglevel(local).map_err(cfg_err)?;
        alpm.set_remote_file_siglevel(remote).map_err(cfg_err)?;
        let answers = Rc::new(RefCell::new(Answers::default()));
        alpm.set_question_cb(
            answers.clone(),
            |q: AnyQuestion, a: &mut Rc<RefCell<Answers>>| answer(q, &mut a.borrow_mut()),
        );
        alpm.set_log_cb((), |level: alpm::LogLevel, msg: &str, _: &mut ()| {
            log_line(level, msg)
        });
        Ok(System {
            alpm,
            conf,
            paths: paths.clone(),
            mode,
            _scratch: scratch,
            answers,
            held: Vec::new(),
            private: None,
            copied_from: BTreeMap::new(),
            archive_fetch: None,
            in_transaction: false,
        })
    }

    /// Sets what the question policy decides by (desired, locked, pacfleet's inventory).
    pub fn set_policy(&mut self, policy: Policy) {
        self.answers.borrow_mut().policy = policy;
    }

    /// Every answer policy gave so far on this handle, in words, and forgets them.
    pub fn take_answers(&mut self) -> Vec<String> {
        std::mem::take(&mut self.answers.borrow_mut().said)
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
                    provides: p.provides().iter().map(|d| d.name().to_owned()).collect(),
                };
                (p.name().to_owned(), inst)
            })
            .collect()
    }

    /// Makes libalpm read every sync database now (it reads them on first use): a pass does
    /// this while its fetch waits on the network. A refresh that changes one reads it again.
    pub fn load_sync_databases(&self) {
        let packages: usize = self.alpm.syncdbs().iter().map(|db| db.pkgs().len()).sum();
        tracing::trace!("{packages} packages in the sync databases");
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
        {
            let mut a = self.answers.borrow_mut();
            a.policy.desired = resolved.explicit.keys().cloned().collect();
            a.policy.locked = resolved.pins.keys().cloned().collect();
        }
        let mut targets = intent.targets.clone();
        let mut remove = intent.remove.clone();
        if resolved.generation.is_some() {
            targets.extend(self.lock_substitutes(&targets, resolved));
        }
        for _round in 0..6 {
            {
                // Each round asks libalpm afresh: only the last round's answers stand.
                let mut a = self.answers.borrow_mut();
                a.said.clear();
                a.replaced.clear();
                a.refused.clear();
                a.ignored.clear();
                a.missing_keys.clear();
                a.corrupted.clear();
            }
            self.held.clear();
            self.init_transaction()?;
            let result = self.try_prepare(intent, &targets, &remove, resolved);
            let extra = match result {
                Ok(extra) => extra,
                Err(e) => {
                    // Released now rather than when the handle goes: the caller may go on.
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

    /// Pinned pools: installed packages the lock does not know that provide what a package
    /// the lock does name provides (the host got `jre-a` for `java-runtime` where the lock
    /// says `jre-b`): the lock's package becomes a target, so the host ends at the lock.
    fn lock_substitutes(&self, targets: &[Target], resolved: &Resolved) -> Vec<Target> {
        let local = self.alpm.localdb();
        let targeted: BTreeSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        // provision or name -> the lock's package, for locked packages not installed.
        let mut offered: BTreeMap<String, &str> = BTreeMap::new();
        for name in resolved.pins.keys() {
            if local.pkg(name.as_str()).is_ok() || targeted.contains(name.as_str()) {
                continue;
            }
            let Some(p) = self
                .alpm
                .syncdbs()
                .iter()
                .find_map(|db| db.pkg(name.as_str()).ok())
            else {
                continue;
            };
            for prov in p.provides() {
                offered.entry(prov.name().to_owned()).or_insert(name);
            }
        }
        if offered.is_empty() {
            return Vec::new();
        }
        let mut out: BTreeMap<&str, Target> = BTreeMap::new();
        for p in local.pkgs() {
            if resolved.pins.contains_key(p.name()) || resolved.explicit.contains_key(p.name()) {
                continue;
            }
            let names = std::iter::once(p.name()).chain(p.provides().iter().map(|d| d.name()));
            for n in names {
                if let Some(lock) = offered.get(n)
                    && let Some(pin) = resolved.pins.get(*lock)
                {
                    tracing::info!(
                        "installed `{}` provides `{n}`, for which the generation names `{lock}`: installing `{lock}`",
                        p.name()
                    );
                    out.entry(lock).or_insert_with(|| Target {
                        name: (*lock).to_owned(),
                        version: Some(pin.version.clone()),
                        repo: None,
                        sha256: pin.sha256.clone(),
                        explicit: false,
                    });
                }
            }
        }
        out.into_values().collect()
    }

    /// Of `kept` (pacfleet-installed, undesired, still needed before this transaction), those
    /// nothing needs once the prepared transaction is done: a dependency that a staying package
    /// (installed, or coming in this transaction) satisfies needs none of them. Linear in the
    /// dependencies of the packages that stay: candidates for each dependency come from a name
    /// and provision index.
    fn orphaned(&self, kept: &[String]) -> Vec<String> {
        use alpm_utils::depends::{satisfies_dep, satisfies_provide};
        let local = self.alpm.localdb();
        let added: BTreeSet<&str> = self.alpm.trans_add().iter().map(|p| p.name()).collect();
        let removed: BTreeSet<&str> = self.alpm.trans_remove().iter().map(|p| p.name()).collect();
        let mut gone: BTreeSet<&str> = kept
            .iter()
            .map(String::as_str)
            .filter(|k| !removed.contains(k) && local.pkg(*k).is_ok())
            .collect();
        if gone.is_empty() {
            return Vec::new();
        }
        let satisfies = |p: &alpm::Package, dep: &alpm::Dep| {
            satisfies_dep(dep, p.name(), p.version())
                || p.provides().iter().any(|pr| satisfies_provide(dep, pr))
        };
        let after: Vec<&alpm::Package> = self
            .alpm
            .trans_add()
            .iter()
            .chain(
                local
                    .pkgs()
                    .iter()
                    .filter(|p| !added.contains(p.name()) && !removed.contains(p.name())),
            )
            .collect();
        // Name or provision → the packages after the transaction that carry it.
        let mut by_name: std::collections::HashMap<&str, Vec<&alpm::Package>> =
            std::collections::HashMap::new();
        for p in &after {
            by_name.entry(p.name()).or_default().push(p);
            for pr in p.provides() {
                by_name.entry(pr.name()).or_default().push(p);
            }
        }
        loop {
            let mut needed: BTreeSet<&str> = BTreeSet::new();
            for p in after.iter().filter(|p| !gone.contains(p.name())) {
                for d in p.depends() {
                    let candidates = by_name.get(d.name()).map(Vec::as_slice).unwrap_or(&[]);
                    let fits: Vec<&&alpm::Package> =
                        candidates.iter().filter(|q| satisfies(q, d)).collect();
                    if fits.iter().any(|q| !gone.contains(q.name())) {
                        continue;
                    }
                    needed.extend(fits.iter().map(|q| q.name()));
                }
            }
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
        self.alpm
            .trans_init(flags)
            .map(|()| self.in_transaction = true)
            .map_err(|e| match e {
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

    /// Releases the transaction (and pacman's lock in `Mode::Apply`), if one is initialized;
    /// dropping the `System` does the same.
    pub fn release(&mut self) {
        if !std::mem::take(&mut self.in_transaction) {
            return;
        }
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
            // What the host's own IgnorePkg/IgnoreGroup hold back from the upgrade.
            for p in self.alpm.localdb().pkgs() {
                if held.iter().any(|h| h == p.name()) || !p.should_ignore() {
                    continue;
                }
                if let Some(newer) = p.sync_new_version(self.alpm.syncdbs()) {
                    let by = self.held_by(p);
                    self.held.push(Held {
                        name: p.name().to_owned(),
                        installed: Some(p.version().to_string()),
                        wanted: Some(newer.version().to_string()),
                        by,
                    });
                }
            }
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
        let failed = self.alpm.trans_prepare().err().map(|e| prepare_detail(&e));
        if let Some(detail) = failed {
            return Err(self.prepare_error(detail));
        }
        if resolved.generation.is_none() {
            return Ok(Vec::new());
        }
        let targeted: BTreeSet<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        let held: BTreeSet<&str> = self.held.iter().map(|h| h.name.as_str()).collect();
        Ok(self
            .alpm
            .trans_add()
            .iter()
            .filter(|p| !targeted.contains(p.name()) && !held.contains(p.name()))
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

    /// The error of a failed prepare, with what policy decided that led to it: a conflict it
    /// refused to resolve by removal, or a package the host's IgnorePkg holds.
    fn prepare_error(&self, detail: String) -> SystemError {
        let a = self.answers.borrow();
        if let Some((new, installed, owner)) = a.refused.first() {
            let fix = if owner.contains("by hand") {
                format!(
                    "Remove it yourself if `{new}` should take its place (`pacman -R {installed}`), or add `{new}` to `exclude:` for this host"
                )
            } else {
                format!(
                    "Stop desiring one of them: `exclude:` `{new}` or `{installed}` in the manifests"
                )
            };
            return SystemError::Conflict {
                new: new.clone(),
                installed: installed.clone(),
                owner: owner.clone(),
                fix,
            };
        }
        let mut held: Vec<String> = self.held.iter().map(|h| h.to_string()).collect();
        held.extend(
            a.ignored
                .iter()
                .map(|(n, v)| format!("{n} {v} held by IgnorePkg/IgnoreGroup")),
        );
        if held.is_empty() {
            return SystemError::Prepare { detail };
        }
        SystemError::Prepare {
            detail: format!(
                "{detail}; this host holds packages back ({}): remove them from the `IgnorePkg`/`IgnoreGroup` lines of {}, or change the fleet so nothing needs them",
                held.join("; "),
                self.paths.pacman_conf.display()
            ),
        }
    }

    /// Which pacman.conf setting ignores `p`.
    fn held_by(&self, p: &alpm::Pkg) -> String {
        let groups: Vec<&str> = self.alpm.ignoregroups().iter().collect();
        match p.groups().iter().find(|g| groups.contains(g)) {
            Some(g)
                if !self
                    .alpm
                    .ignorepkgs()
                    .iter()
                    .any(|i| glob_match(i, p.name())) =>
            {
                format!("IgnoreGroup = {g}")
            }
            _ => "IgnorePkg".to_owned(),
        }
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
        let installed = self
            .alpm
            .localdb()
            .pkg(t.name.as_str())
            .ok()
            .map(|p| p.version().to_string());
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
            if p.should_ignore() {
                let by = self.held_by(p);
                self.held.push(Held {
                    name: t.name.clone(),
                    installed,
                    wanted: Some(p.version().to_string()),
                    by,
                });
                return Ok(());
            }
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
        let (file, origin) = match self.find_cached(&t.name, version) {
            Some(f) => (f, FileOrigin::Cache),
            None => (
                self.fetch_archived(
                    &t.name,
                    version,
                    t.sha256.as_deref(),
                    resolved.archive.as_deref(),
                    &why(),
                )?,
                FileOrigin::Remote,
            ),
        };
        // The bytes libalpm installs are the private copy's, checked here: whoever can write
        // the cache dir or the archive gains nothing by swapping the file after the check.
        let copy = self.private_copy(&file)?;
        if let Some(expected) = &t.sha256
            && &copy.sha256 != expected
        {
            return Err(SystemError::ChecksumMismatch {
                name: t.name.clone(),
                version: version.clone(),
                source_desc: file.display().to_string(),
                actual: copy.sha256.clone(),
                expected: expected.clone(),
            });
        }
        let (level, level_name) = match origin {
            FileOrigin::Cache => (self.alpm.local_file_siglevel(), "LocalFileSigLevel"),
            FileOrigin::Remote => (self.alpm.remote_file_siglevel(), "RemoteFileSigLevel"),
        };
        let pkg = match self
            .alpm
            .pkg_load(copy.path.to_string_lossy().as_bytes(), true, level)
        {
            Ok(pkg) => pkg,
            Err(e) => {
                return Err(self.load_error(t, version, &file, &copy.path, e, level, level_name));
            }
        };
        if pkg.should_ignore() {
            let by = self.held_by(&pkg);
            drop(pkg);
            self.held.push(Held {
                name: t.name.clone(),
                installed,
                wanted: Some(version.clone()),
                by,
            });
            return Ok(());
        }
        self.alpm.trans_add_pkg(pkg).map_err(|e| SystemError::Alpm {
            context: format!("adding {}", file.display()),
            source: e.error,
        })
    }

    /// The error of a package file libalpm would not load: a signature problem in words
    /// (the key when the signature names one, and the fix), or libalpm's error.
    #[allow(clippy::too_many_arguments)]
    fn load_error(
        &self,
        t: &Target,
        version: &str,
        file: &Path,
        copy: &Path,
        e: alpm::Error,
        level: SigLevel,
        level_name: &str,
    ) -> SystemError {
        use alpm::Error as E;
        let missing_keys = self.answers.borrow().missing_keys.clone();
        let signature = !missing_keys.is_empty()
            || matches!(
                e,
                E::SigMissing | E::SigInvalid | E::PkgInvalidSig | E::PkgMissingSig | E::Gpgme
            );
        if !signature {
            return SystemError::Alpm {
                context: format!("loading {}", file.display()),
                source: e,
            };
        }
        let sig_path = PathBuf::from(format!("{}.sig", copy.display()));
        let mut keys: Vec<String> = std::fs::read(&sig_path)
            .ok()
            .and_then(|sig| self.alpm.extract_keyid(t.name.as_str(), &sig).ok())
            .map(|ks| ks.iter().map(|k| k.to_string()).collect())
            .unwrap_or_default();
        if keys.is_empty() {
            keys = missing_keys.clone();
        }
        // libalpm's own word for a key missing from the keyring is "unexpected error".
        let problem = if missing_keys.is_empty() {
            e.to_string()
        } else {
            "required key missing from this host's keyring".to_owned()
        };
        let key = if keys.is_empty() {
            String::new()
        } else {
            format!("; signed by key {}", keys.join(", "))
        };
        let fix = match (e, keys.first()) {
            (E::SigMissing | E::PkgMissingSig, _) => format!(
                "The file has no signature: put its `.sig` beside it ({}.sig), as the Arch Linux Archive and makepkg --sign provide",
                file.display()
            ),
            (_, Some(k)) => format!(
                "If key {k} is a packager you trust, import it: `pacman-key --recv-keys {k} && pacman-key --lsign-key {k}` (or upgrade archlinux-keyring); otherwise the file or its .sig was tampered with: replace both from a trusted mirror"
            ),
            _ => "The signature does not verify: replace the file and its .sig from a trusted mirror, or import the packager's key with pacman-key".to_owned(),
        };
        SystemError::Signature(Box::new(SignatureProblem {
            name: t.name.clone(),
            version: version.to_owned(),
            source_desc: file.display().to_string(),
            problem,
            level: format!("{level_name} = {}", sig_level_words(level)),
            key,
            fix,
        }))
    }

    /// Copies `file` (and its `.sig`, if beside it) into this handle's private directory,
    /// hashing the bytes as they are written. libalpm loads and installs the copy.
    fn private_copy(&mut self, file: &Path) -> Result<PrivateCopy, SystemError> {
        use sha2::Digest;
        use std::io::{Read, Write};
        let dir = match &self.private {
            Some(dir) => dir,
            None => {
                let dir = match &self._scratch {
                    Some(s) => tempfile::Builder::new()
                        .prefix("pkgs-")
                        .tempdir_in(s.path()),
                    None => tempfile::Builder::new()
                        .prefix(".pacfleet-pkgs-")
                        .tempdir_in(&self.paths.dbpath),
                }
                .map_err(|source| SystemError::Scratch {
                    path: self.paths.dbpath.display().to_string(),
                    source,
                })?;
                self.private.insert(dir)
            }
        };
        let name = file
            .file_name()
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("package.pkg.tar"));
        let dest = dir.path().join(&name);
        let mut from = std::fs::File::open(file).map_err(io("cannot read", file))?;
        let mut to = std::fs::File::create(&dest).map_err(io("cannot write", &dest))?;
        let mut hash = sha2::Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        loop {
            let n = from.read(&mut buf).map_err(io("cannot read", file))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
            to.write_all(&buf[..n]).map_err(io("cannot write", &dest))?;
        }
        let sig = PathBuf::from(format!("{}.sig", file.display()));
        if sig.is_file() {
            let sig_dest = PathBuf::from(format!("{}.sig", dest.display()));
            std::fs::copy(&sig, &sig_dest).map_err(io("cannot copy", &sig))?;
        }
        self.copied_from.insert(dest.clone(), file.to_path_buf());
        Ok(PrivateCopy {
            path: dest,
            sha256: format!("{:x}", hash.finalize()),
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
        &mut self,
        name: &str,
        version: &str,
        sha256: Option<&str>,
        archive: Option<&str>,
        why: &str,
    ) -> Result<PathBuf, SystemError> {
        let caches: Vec<&str> = self.alpm.cachedirs().iter().collect();
        let not_found = |archive: String| SystemError::PinNotFound {
            name: name.to_owned(),
            version: version.to_owned(),
            why: why.to_owned(),
            searched: format!("no cache dir ({}) and {archive}", caches.join(", ")),
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
        let required = self.alpm.remote_file_siglevel();
        let sig = if required.contains(SigLevel::PACKAGE)
            && !required.contains(SigLevel::PACKAGE_OPTIONAL)
        {
            crate::download::Sig::Download
        } else {
            crate::download::Sig::IfThere
        };
        if let (Some(sha256), Some(fetch)) = (sha256, self.archive_fetch.as_mut()) {
            // The pin's sha256 checks whatever a peer or the archive serves before the cache.
            for arch in &arches {
                for ext in ["zst", "xz"] {
                    let file = format!("{name}-{version}-{arch}.pkg.tar.{ext}");
                    let cached = fetch.cache_dir.join(&file);
                    let wanted = crate::download::Wanted {
                        upstream: vec![format!("{base}/{file}")],
                        file,
                        size: None,
                        sha256: sha256.to_owned(),
                        sig: sig.clone(),
                    };
                    let got = fetch.fetch(wanted);
                    if got {
                        return Ok(cached);
                    }
                }
            }
            tried.push("the peers and the archive, by pacfleet".to_owned());
        }
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
        let answers = self.answers.borrow();
        let replaced_by = |new: &str| -> Vec<String> {
            answers
                .replaced
                .iter()
                .filter(|(n, _)| n == new)
                .map(|(_, old)| old.clone())
                .collect()
        };
        let replacer_of = |old: &str| {
            answers
                .replaced
                .iter()
                .find(|(_, o)| o == old)
                .map(|(n, _)| n.clone())
        };
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
            let replaces = replaced_by(p.name());
            let why = if replaces.is_empty() {
                why
            } else {
                let mut why = why;
                why.insert(0, format!("replaces {}", replaces.join(", ")));
                why
            };
            // A replacement takes over the install reason of what it replaces.
            let replaced_explicit = replaces.iter().any(|r| {
                local
                    .pkg(r.as_str())
                    .is_ok_and(|o| o.reason() == PackageReason::Explicit)
            });
            let reason = if desired.is_some() || replaced_explicit {
                Reason::Explicit
            } else {
                match old.map(|o| o.reason()) {
                    Some(PackageReason::Explicit) => Reason::Explicit,
                    _ => Reason::Dependency,
                }
            };
            let source = match p.db() {
                Some(db) => Some(format!("repo {}", db.name())),
                None => p
                    .filename()
                    .map(|f| match self.copied_from.get(Path::new(f)) {
                        Some(original) => original.display().to_string(),
                        None => f.to_owned(),
                    }),
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
                replaces,
            });
        }
        for p in self.alpm.trans_remove().iter() {
            let why = match replacer_of(p.name()) {
                Some(n) => format!("replaced by {n}"),
                None if intent.remove.iter().any(|r| r == p.name()) => {
                    "no longer desired (prune)".to_owned()
                }
                None if intent.kept.iter().any(|r| r == p.name()) => {
                    "no longer needed (prune)".to_owned()
                }
                None => "conflicts with a package being installed".to_owned(),
            };
            changes.push(Change {
                action: Action::Remove,
                name: p.name().to_owned(),
                old: Some(p.version().to_string()),
                new: None,
                reason: None,
                why: vec![why],
                download_size: 0,
                size_delta: -p.isize(),
                source: None,
                replaces: Vec::new(),
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
                    replaces: Vec::new(),
                });
            }
        }
        changes.sort_by(|a, b| (a.action, &a.name).cmp(&(b.action, &b.name)));
        pacnew.sort();
        pacnew.dedup();
        let mut held = self.held.clone();
        for (name, version) in &answers.ignored {
            if !held.iter().any(|h| &h.name == name) {
                held.push(Held {
                    name: name.clone(),
                    installed: local
                        .pkg(name.as_str())
                        .ok()
                        .map(|p| p.version().to_string()),
                    wanted: Some(version.clone()),
                    by: "IgnorePkg".to_owned(),
                });
            }
        }
        held.sort_by(|a, b| a.name.cmp(&b.name));
        held.dedup_by(|a, b| a.name == b.name);
        Changeset {
            changes,
            pacnew,
            answers: answers.said.clone(),
            held,
        }
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

    /// Commits the prepared transaction; a failure says which files conflict (both owners) or
    /// which package files are invalid (and the signing key, when the signature names one).
    pub fn commit_transaction(&mut self) -> Result<(), CommitError> {
        let root = self
            .paths
            .root
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        let shown = |file: &str| -> String {
            match file.strip_prefix(root.as_str()) {
                Some(rest) if !root.is_empty() && rest.starts_with('/') => rest.to_owned(),
                _ => file.to_owned(),
            }
        };
        let err = match self.alpm.trans_commit() {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        let kind = err.error();
        match err.data() {
            Some(alpm::CommitData::FileConflict(list)) => {
                let mut conflicts = Vec::new();
                for c in list.iter() {
                    // The alpm crate types this list as `Conflict`s, but libalpm fills it with
                    // `alpm_fileconflict_t`s (and the crate's `FileConflict::conflicting_target`
                    // reads the wrong field): read the C struct itself.
                    let raw = c as *const alpm::Conflict as *const alpm_sys::alpm_fileconflict_t;
                    // SAFETY: libalpm's NUL-terminated strings, alive with the list.
                    let text = |p| unsafe { c_text(p) };
                    // SAFETY: every element of the FileConflicts list is an
                    // alpm_fileconflict_t that lives until `err` is dropped.
                    let (target, kind, file, other) = unsafe {
                        (
                            text((*raw).target),
                            (*raw).type_,
                            text((*raw).file),
                            text((*raw).ctarget),
                        )
                    };
                    let with =
                        if kind == alpm_sys::_alpm_fileconflicttype_t::ALPM_FILECONFLICT_TARGET {
                            ConflictWith::Target(other)
                        } else if other.is_empty() {
                            ConflictWith::Unowned
                        } else {
                            ConflictWith::Owner(other)
                        };
                    conflicts.push(FileConflict {
                        file: shown(&file),
                        target,
                        with,
                    });
                }
                Err(CommitError::FileConflicts { conflicts })
            }
            Some(alpm::CommitData::PkgInvalid(list)) => {
                let files: Vec<String> = list.iter().map(str::to_owned).collect();
                let keys = self.signing_keys(&files);
                let corrupted = !self.answers.borrow().corrupted.is_empty();
                let (problem, fix) = match kind {
                    alpm::Error::PkgInvalidSig if !corrupted => (
                        format!("package signatures do not verify ({kind}){}", if keys.is_empty() { String::new() } else { format!("; signed by key {}", keys.join(", ")) }),
                        match keys.first() {
                            Some(k) => format!("If {k} is a packager you trust: `pacman-key --recv-keys {k} && pacman-key --lsign-key {k}`, or upgrade archlinux-keyring; otherwise the mirror served tampered files: remove them from the cache and use another mirror"),
                            None => "Upgrade archlinux-keyring, or remove the files from the cache and use another mirror".to_owned(),
                        },
                    ),
                    _ => (
                        format!("package files are invalid or corrupt ({kind})"),
                        "They were deleted from the cache; the next pass downloads them again".to_owned(),
                    ),
                };
                Err(CommitError::InvalidPackages {
                    corrupt: corrupted,
                    problem,
                    files,
                    fix,
                })
            }
            _ => {
                let missing = self.answers.borrow().missing_keys.clone();
                if missing.is_empty() {
                    return Err(CommitError::Alpm(kind));
                }
                let k = &missing[0];
                let files = self
                    .alpm
                    .trans_add()
                    .iter()
                    .filter(|p| {
                        p.filename().is_some_and(|f| {
                            self.signing_keys(&[f.to_owned()]).iter().any(|k| {
                                missing
                                    .iter()
                                    .any(|m| m.ends_with(k.as_str()) || k.ends_with(m.as_str()))
                            })
                        })
                    })
                    .filter_map(|p| p.filename().map(str::to_owned))
                    .collect();
                Err(CommitError::InvalidPackages {
                    corrupt: false,
                    problem: format!(
                        "required key missing from this host's keyring: {}",
                        missing.join(", ")
                    ),
                    files,
                    fix: format!(
                        "The packages are signed by key {k}, which this host does not trust (pacfleet never imports keys). If it is a packager you trust: `pacman-key --recv-keys {k} && pacman-key --lsign-key {k}`, or upgrade archlinux-keyring first; otherwise the mirror serves packages signed by someone else: use another mirror"
                    ),
                })
            }
        }
    }

    /// The key ids that signed the transaction's packages whose files are `files`.
    fn signing_keys(&self, files: &[String]) -> Vec<String> {
        let mut keys = Vec::new();
        for p in self.alpm.trans_add().iter() {
            let Some(fname) = p.filename() else { continue };
            if !files.iter().any(|f| f.ends_with(fname)) {
                continue;
            }
            let Some(sig) = p.base64_sig().and_then(|b| alpm::decode_signature(b).ok()) else {
                continue;
            };
            if let Ok(ids) = self.alpm.extract_keyid(p.name(), &sig) {
                keys.extend(ids.iter().map(|k| k.to_string()));
            }
        }
        keys.sort();
        keys.dedup();
        keys
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

    /// From now on, archive files of pins with a sha256 are downloaded by `download::fetch`
    /// (the live peers first) instead of libalpm.
    pub fn fetch_archive_through(&mut self, fetch: ArchiveFetch) {
        self.archive_fetch = Some(fetch);
    }

    /// The archive downloads through pacfleet, with what they did; later archive files are
    /// libalpm's again.
    pub fn take_archive_fetch(&mut self) -> Option<ArchiveFetch> {
        self.archive_fetch.take()
    }

    /// The package files the prepared transaction will download: packages from a sync
    /// database whose file (or, when package signatures are checked, its `.sig`: libalpm 16
    /// downloads both again without it) is in no cache dir, with the size and sha256 the database gives and
    /// the URL of the file on each of its servers. A package the database gives no sha256 is
    /// left out (libalpm downloads it, checked by its signature alone). Also the cache dir
    /// pacman downloads into (the first of pacman.conf's that is a directory).
    pub fn downloads(&self) -> (Vec<crate::download::Wanted>, Option<PathBuf>) {
        let caches: Vec<PathBuf> = self.conf.cache_dir.iter().map(PathBuf::from).collect();
        let package_sigs = self.alpm.default_siglevel().contains(SigLevel::PACKAGE);
        let mut out = Vec::new();
        for p in self.alpm.trans_add().iter() {
            if p.origin() != alpm::PackageFrom::SyncDb {
                continue;
            }
            let (Some(file), Some(sha256), Some(db)) = (p.filename(), p.sha256sum(), p.db()) else {
                continue;
            };
            let db_sigs = db.siglevel();
            let sig_needed = if db_sigs.contains(SigLevel::USE_DEFAULT) {
                package_sigs
            } else {
                db_sigs.contains(SigLevel::PACKAGE)
            };
            let cached = |name: &str| caches.iter().any(|c| c.join(name).is_file());
            if file.contains('/') || cached(file) && (!sig_needed || cached(&format!("{file}.sig")))
            {
                continue;
            }
            out.push(crate::download::Wanted {
                file: file.to_owned(),
                size: u64::try_from(p.size()).ok(),
                sha256: sha256.to_owned(),
                upstream: db
                    .servers()
                    .iter()
                    .map(|s| format!("{}/{file}", s.trim_end_matches('/')))
                    .collect(),
                sig: match p.base64_sig() {
                    _ if !sig_needed => crate::download::Sig::NotNeeded,
                    Some(b64) => {
                        use base64::Engine as _;
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .map_or(
                                crate::download::Sig::Download,
                                crate::download::Sig::Embedded,
                            )
                    }
                    None => crate::download::Sig::Download,
                },
            });
        }
        (out, caches.into_iter().find(|c| c.is_dir()))
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

/// libalpm's questions, answered by policy wherever libalpm asks them (system upgrade,
/// prepare, commit), never interactively; every answer is recorded in words.
fn answer(q: AnyQuestion, a: &mut Answers) {
    let said = match q.question() {
        Question::InstallIgnorepkg(mut x) => {
            x.set_install(false);
            let (name, version) = (x.pkg().name().to_owned(), x.pkg().version().to_string());
            a.ignored.push((name.clone(), version));
            format!(
                "`{name}` is held by IgnorePkg/IgnoreGroup on this host: not installed (remove it from IgnorePkg to let pacfleet manage it)"
            )
        }
        Question::Replace(x) => {
            x.set_replace(true);
            let (old, new) = (x.oldpkg().name().to_owned(), x.newpkg().name().to_owned());
            a.replaced.push((new.clone(), old.clone()));
            format!(
                "`{old}` replaced by `{new}` (repository {} says `{new}` replaces it); the install reason is kept",
                x.newdb().name()
            )
        }
        Question::Conflict(mut x) => {
            let c = x.conflict();
            let (new, old) = (
                c.package1().name().to_owned(),
                c.package2().name().to_owned(),
            );
            let ours = a.policy.inventory.contains(&old);
            let desired = a.policy.desired.contains(&old);
            if ours && !desired {
                x.set_remove(true);
                format!(
                    "`{old}` removed: it conflicts with `{new}`, and pacfleet installed it and no longer desires it"
                )
            } else {
                x.set_remove(false);
                let owner = if desired {
                    "is still desired by the fleet".to_owned()
                } else {
                    "was installed by hand, not by pacfleet".to_owned()
                };
                let said =
                    format!("`{new}` conflicts with installed `{old}`, which {owner}: not removed");
                a.refused.push((new, old, owner));
                said
            }
        }
        Question::Corrupted(mut x) => {
            x.set_remove(true);
            a.corrupted.push(x.filepath().to_owned());
            format!(
                "corrupted package file {} deleted ({}); it is fetched again",
                x.filepath(),
                x.reason()
            )
        }
        Question::RemovePkgs(mut x) => {
            x.set_skip(false);
            let names: Vec<&str> = x.packages().iter().map(|p| p.name()).collect();
            format!(
                "packages with unresolvable dependencies not skipped: {}",
                names.join(", ")
            )
        }
        Question::SelectProvider(mut x) => {
            let providers: Vec<String> =
                x.providers().iter().map(|p| p.name().to_owned()).collect();
            let pick = |set: &BTreeSet<String>| providers.iter().position(|p| set.contains(p));
            let (index, by) = if let Some(i) = pick(&a.policy.desired) {
                (i, "desired by the fleet")
            } else if let Some(i) = pick(&a.policy.locked) {
                (i, "named by the pool's generation")
            } else {
                (0, "libalpm's default: the first provider")
            };
            x.set_index(i32::try_from(index).unwrap_or(0));
            format!(
                "`{}` provided by `{}` ({by}; candidates: {})",
                x.depend(),
                providers.get(index).map_or("", String::as_str),
                providers.join(", ")
            )
        }
        Question::ImportKey(mut x) => {
            x.set_import(false);
            // Not `uid()`: libalpm passes NULL when the key could not be looked up, and the
            // crate's accessor panics on NULL.
            let fpr = x.fingerprint().to_owned();
            a.missing_keys.push(fpr.clone());
            format!(
                "PGP key {fpr} is not in this host's keyring and was not imported: pacfleet never imports keys. If you trust it: `pacman-key --recv-keys {fpr} && pacman-key --lsign-key {fpr}`, or upgrade the keyring package (archlinux-keyring)"
            )
        }
    };
    tracing::info!("{said}");
    a.said.push(said);
}

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

/// `path` as a libalpm overwrite pattern matching only itself: fnmatch's special characters
/// escaped, and a leading `!` or `\\` (which libalpm reads as negation or strips) escaped too.
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
/// Each copy keeps its original's modification time: libalpm asks the mirror for a database
/// only if it changed since that time (If-Modified-Since), so a copy dated "now" would hide
/// everything the mirror published since the last real refresh.
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

/// A package file copied into the handle's private directory, and the sha256 of the copy.
struct PrivateCopy {
    path: PathBuf,
    sha256: String,
}

/// Whether an `IgnorePkg` pattern (fnmatch, as libalpm reads it) matches `name`.
fn glob_match(pattern: &str, name: &str) -> bool {
    globset::Glob::new(pattern)
        .map(|g| g.compile_matcher().is_match(name))
        .unwrap_or(pattern == name)
}

/// md5 of bytes, lowercase hex: libalpm records backup files' hashes as md5.
fn md5_hex(bytes: &[u8]) -> String {
    use md5::Digest;
    format!("{:x}", md5::Md5::digest(bytes))
}

/// Whether the running kernel's modules are gone from `root`: the kernel package was upgraded
/// or removed since boot, so loading a module fails until the host reboots. A root holding no
/// kernel modules at all (a container, an image being built) never needs one.
pub fn needs_reboot(root: &Path) -> bool {
    let Ok(release) = std::fs::read_to_string("/proc/sys/kernel/osrelease") else {
        return false;
    };
    let modules = root.join("usr/lib/modules");
    let has_kernels = std::fs::read_dir(&modules).is_ok_and(|mut d| d.next().is_some());
    has_kernels && !modules.join(release.trim()).is_dir()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reboot_is_needed_when_the_running_kernels_modules_are_gone() {
        let root = tempfile::tempdir().unwrap();
        assert!(!needs_reboot(root.path()), "no kernels: a container");
        let modules = root.path().join("usr/lib/modules");
        std::fs::create_dir_all(modules.join("0.0.1-upgraded")).unwrap();
        assert!(needs_reboot(root.path()), "only another kernel's modules");
        let running = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        std::fs::create_dir_all(modules.join(running.trim())).unwrap();
        assert!(
            !needs_reboot(root.path()),
            "the running kernel's modules are there"
        );
    }

    #[test]
    fn file_conflicts_say_who_has_the_file() {
        let c = |with| FileConflict {
            file: "/usr/bin/tool".into(),
            target: "tool".into(),
            with,
        };
        let e = CommitError::FileConflicts {
            conflicts: vec![
                c(ConflictWith::Target("tool-git".into())),
                c(ConflictWith::Owner("oldtool".into())),
                c(ConflictWith::Unowned),
            ],
        };
        assert_eq!(
            e.to_string(),
            "file conflicts, nothing was changed: /usr/bin/tool exists in both 'tool' and 'tool-git'; \
             /usr/bin/tool exists on disk, owned by 'oldtool' ('tool' installs it); \
             /usr/bin/tool exists on disk and belongs to no package ('tool' installs it). \
             Move the files on disk away, or stop desiring one of two packages that own the same file (`exclude:` in the manifests)"
        );
    }

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
