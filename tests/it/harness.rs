//! Shared fixtures for the integration tests: package repositories served over `file://`,
//! simulated hosts (a target root plus a pacman.conf pointing at it) and the real pacman
//! toolchain that `scripts/libalpm.sh env` puts on PATH.
//!
//! The world is the one Arch ships: packages are `.pkg.tar.zst`, signed by a test packager
//! ([`Packager::default_key`], a GnuPG key made once and cached) with a detached `.sig`
//! beside each and `%PGPSIG%` in the repository database; every host has a keyring in
//! `root/etc/pacman.d/gnupg/` made by the real `pacman-key` (`--init`, then `--add` and
//! `--lsign-key` of the packager), and a pacman.conf with Arch's defaults, `SigLevel = Required
//! DatabaseOptional` and `LocalFileSigLevel = Optional` (no `RemoteFileSigLevel`, so it is
//! `Required` too), and no test host checks less. A test of what hosts refuse has
//! [`PkgRepo::add_unsigned`]. Another key
//! is [`Packager::new`], trusted by a host with [`HostDir::trust_packager`]. A root has no
//! shell unless [`HostDir::with_shell`] gives it busybox.
//!
//! Most end-to-end tests start from a [`World`] (`world`: repositories, a fleet repository
//! and hosts, made by one builder); `command` runs `fleetctl` and checks what it did.
//!
//! Everything lives under a caller-provided temporary directory, so tests can run in parallel
//! (the keys and the keyring template are cached once for all: see [`packager`]).
//! Running pacman transactions (`-S`, `-U`, `-R`, `-Sy`) needs root, as on a real host.

#![allow(dead_code)] // Not every test module uses every helper.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pacfleet_support::host::{HostLayout, PacmanConf, SigLevel};
use pacfleet_support::synth::{self, SynthPackage};

pub mod agent;
pub mod command;
pub mod git_fixtures;
pub mod packager;
pub mod world;
pub use command::TestCommand;
pub use packager::Packager;
pub use tempfile::TempDir;
pub use world::World;

/// A fresh temporary directory, removed when dropped.
pub fn tempdir() -> TempDir {
    tempfile::tempdir().expect("create temporary directory")
}

/// The path of toolchain program `name` (`pacman`, `repo-add`, `vercmp`, `pacman-conf`,
/// `bsdtar`, ...), searched on PATH. Panics with a hint when it is missing.
pub fn toolchain_bin(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "`{name}` is not on PATH; run `eval \"$(scripts/libalpm.sh env)\"` first \
                 (repo-add also needs bsdtar: `apt-get install libarchive-tools`)"
            )
        })
}

/// Whether the tests run as root (pacman refuses transactions otherwise).
/// A test that cannot run here (root or a tool missing) says why on stderr; where every test
/// must run (`PACFLEET_REQUIRE_ALL=1`, which `.ci/run` sets) that is a failure instead, so a
/// machine missing a tool cannot pass by skipping.
pub fn skip(why: &str) {
    if std::env::var_os("PACFLEET_REQUIRE_ALL").is_some_and(|v| v != "0") {
        panic!(
            "{why}; PACFLEET_REQUIRE_ALL is set: every test must run here (scripts/deps.sh installs the tools)"
        );
    }
    eprintln!("SKIPPED: {why}");
}

/// The repository's `example-fleet/`.
pub fn example_fleet() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("example-fleet")
}

/// Copies the directory tree `from` into `to` (regular files and directories).
pub fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("mkdir");
    for entry in fs::read_dir(from).expect("read a directory to copy") {
        let entry = entry.expect("entry");
        let dest = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &dest);
        } else {
            fs::copy(entry.path(), dest).expect("copy");
        }
    }
}

pub fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    fs::metadata("/proc/self")
        .map(|m| m.uid() == 0)
        .unwrap_or(false)
}

/// `file://` URL of an absolute directory.
pub fn file_url(dir: &Path) -> String {
    assert!(dir.is_absolute(), "{} is not absolute", dir.display());
    format!("file://{}", dir.display())
}

/// Stdout of a finished command, panicking with its stderr if it failed.
pub fn stdout_ok(what: &str, output: &Output) -> String {
    assert!(
        output.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A sync repository in a directory, served to pacman as `Server = file://<dir>`.
///
/// The database always holds exactly one version per package name: adding a package replaces
/// the entry for its name (older package files stay in the directory).
#[derive(Debug)]
pub struct PkgRepo {
    /// The directory holding the package files and `<name>.db[.tar.gz]`.
    pub dir: PathBuf,
    /// The repository name, i.e. the `[section]` in pacman.conf.
    pub name: String,
    /// `file://` URL of `dir`, for `Server =`.
    pub url: String,
    /// Current package file per package name.
    packages: BTreeMap<String, PathBuf>,
}

impl PkgRepo {
    /// An empty repository `name` in `tmp/repos/<name>/` (with an empty database already
    /// written, so `pacman -Sy` works at once).
    pub fn new(tmp: &Path, name: &str) -> Self {
        let dir = tmp.join("repos").join(name);
        fs::create_dir_all(&dir).expect("create repo dir");
        let repo = Self {
            url: file_url(&dir),
            dir,
            name: name.to_owned(),
            packages: BTreeMap::new(),
        };
        repo.write_db();
        repo
    }

    /// An empty repository `name` in `dir` itself (created if missing), e.g. a dated
    /// repository of an archive (`<archive>/repos/YYYY/MM/DD/<name>/os/<arch>`).
    pub fn new_in(dir: &Path, name: &str) -> Self {
        fs::create_dir_all(dir).expect("create repo dir");
        let repo = Self {
            url: file_url(dir),
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            packages: BTreeMap::new(),
        };
        repo.write_db();
        repo
    }

    /// Wraps `dir`, whose database `<name>.db` something else writes (e.g. repo-add or
    /// [`synth::write_repo`] directly). Do not call [`add`](Self::add) or
    /// [`remove`](Self::remove) on it: they would rewrite the database from scratch.
    pub fn at(dir: &Path, name: &str) -> Self {
        Self {
            url: file_url(dir),
            dir: dir.to_path_buf(),
            name: name.to_owned(),
            packages: BTreeMap::new(),
        }
    }

    /// Builds `pkgs` into the repository directory, signs each with the default test packager
    /// ([`Packager::default_key`], which every host trusts: `<file>.sig` beside it and
    /// `%PGPSIG%` in the database), replaces the entries of their names and rewrites the
    /// database. Returns the built package files, in the order given.
    pub fn add(&mut self, pkgs: &[SynthPackage]) -> Vec<PathBuf> {
        self.add_with(Some(Packager::default_key()), pkgs)
    }

    /// Like [`add`](Self::add), but signed by `packager` instead (e.g. a key the hosts do not
    /// trust yet, or not any more).
    pub fn add_signed_by(&mut self, packager: &Packager, pkgs: &[SynthPackage]) -> Vec<PathBuf> {
        self.add_with(Some(packager), pkgs)
    }

    /// Like [`add`](Self::add), but the packages are not signed: no `.sig`, no `%PGPSIG%`.
    /// Hosts (`SigLevel = Required`) refuse them: for tests of exactly that.
    pub fn add_unsigned(&mut self, pkgs: &[SynthPackage]) -> Vec<PathBuf> {
        self.add_with(None, pkgs)
    }

    fn add_with(&mut self, signer: Option<&Packager>, pkgs: &[SynthPackage]) -> Vec<PathBuf> {
        let paths: Vec<PathBuf> = pkgs
            .iter()
            .map(|pkg| {
                let path = synth::build_package(pkg, &self.dir).expect("build package");
                if let Some(signer) = signer {
                    signer.sign(&path);
                }
                path
            })
            .collect();
        for (pkg, path) in pkgs.iter().zip(&paths) {
            self.packages.insert(pkg.name.clone(), path.clone());
        }
        self.write_db();
        paths
    }

    /// Copies a package file built elsewhere (by makepkg) into the repository, signs it with
    /// the default test packager, makes it the entry of package `name` and rewrites the
    /// database. Returns the copy.
    pub fn add_file(&mut self, name: &str, file: &Path) -> PathBuf {
        let copy = self
            .dir
            .join(file.file_name().expect("a package file name"));
        fs::copy(file, &copy).expect("copy package into repo");
        Packager::default_key().sign(&copy);
        self.packages.insert(name.to_owned(), copy.clone());
        self.write_db();
        copy
    }

    /// Drops package `name` from the database (its file stays on disk).
    pub fn remove(&mut self, name: &str) {
        self.packages.remove(name);
        self.write_db();
    }

    /// The current package file of `name`, if the repository has that package.
    pub fn package_file(&self, name: &str) -> Option<&Path> {
        self.packages.get(name).map(PathBuf::as_path)
    }

    /// Copies the current package file of `name`, and its `.sig` if it has one, into the Arch
    /// Linux Archive layout under `archive_root` and returns where the package went.
    pub fn archive(&self, archive_root: &Path, name: &str) -> PathBuf {
        let file = self
            .package_file(name)
            .unwrap_or_else(|| panic!("repo {} has no package {name}", self.name));
        let file_name = file
            .file_name()
            .and_then(|n| n.to_str())
            .expect("file name");
        let dest = synth::archive_path(archive_root, file_name);
        fs::create_dir_all(dest.parent().expect("parent")).expect("create archive dir");
        fs::copy(file, &dest).expect("copy package into archive");
        let sig = synth::signature_path(file);
        if sig.is_file() {
            fs::copy(&sig, synth::signature_path(&dest)).expect("copy signature into archive");
        }
        dest
    }

    fn write_db(&self) {
        let files: Vec<&PathBuf> = self.packages.values().collect();
        synth::write_repo(&self.dir, &self.name, &files).expect("write repo db");
    }
}

/// A read-only repository `name` holding `pkgs` (signed by the default test packager), built
/// once per test process and shared by every test that asks for the same name and packages:
/// for the tests that only read their repository (hosts install from it), so each does not
/// rebuild and re-sign the same packages. It lives in
/// `<CARGO_TARGET_TMPDIR>/pacfleet-shared-repos/<pid>/`; directories of test processes that
/// are gone are removed when the first one is made. A test that adds to, removes from or
/// writes into its repository makes its own [`PkgRepo::new`].
pub fn shared_repo(name: &str, pkgs: &[SynthPackage]) -> &'static PkgRepo {
    use std::sync::{Mutex, OnceLock};
    type Entry = (String, Vec<SynthPackage>, &'static OnceLock<PkgRepo>);
    static REPOS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let (index, cell) = {
        let mut repos = REPOS
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match repos
            .iter()
            .position(|(n, p, _)| n == name && p.as_slice() == pkgs)
        {
            Some(i) => (i, repos[i].2),
            None => {
                let cell: &'static OnceLock<PkgRepo> = Box::leak(Box::new(OnceLock::new()));
                repos.push((name.to_owned(), pkgs.to_vec(), cell));
                (repos.len() - 1, cell)
            }
        }
    };
    cell.get_or_init(|| {
        let mut repo = PkgRepo::new_in(&shared_repos_dir().join(format!("{index}-{name}")), name);
        repo.add(pkgs);
        repo
    })
}

/// This process's directory of [`shared_repo`]s (made empty on first use, removing those of
/// test processes that have exited).
fn shared_repos_dir() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let parent = option_env!("CARGO_TARGET_TMPDIR")
            .map(PathBuf::from)
            .unwrap_or_else(std::env::temp_dir)
            .join("pacfleet-shared-repos");
        fs::create_dir_all(&parent).expect("create shared repos dir");
        for entry in fs::read_dir(&parent)
            .expect("read shared repos dir")
            .flatten()
        {
            let pid = entry.file_name().to_string_lossy().into_owned();
            if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(&pid).exists() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        let dir = parent.join(std::process::id().to_string());
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("create shared repos dir");
        dir
    })
}

/// Builds `pkg` straight into the Arch Linux Archive layout under `archive_root`, signed by
/// the default test packager (`<file>.sig` beside it, as the archive keeps them), and returns
/// the package file's path.
pub fn archive_package(archive_root: &Path, pkg: &SynthPackage) -> PathBuf {
    let path = archive_package_unsigned(archive_root, pkg);
    Packager::default_key().sign(&path);
    path
}

/// Like [`archive_package`], without a signature.
pub fn archive_package_unsigned(archive_root: &Path, pkg: &SynthPackage) -> PathBuf {
    let dest = synth::archive_path(archive_root, &pkg.file_name());
    synth::build_package(pkg, dest.parent().expect("parent")).expect("build package")
}

/// Points gpgme, in this process, at the keyring template that every host's keyring is a copy
/// of; call it before running libalpm in-process (as `system.rs` does) rather than in a
/// `pacman` or `fleetctl` process.
///
/// libalpm initialises gpgme once per process, with the `GPGDir` of the first handle that
/// checks a signature, and never again (`init_gpgme` in libalpm's `signing.c`): in a test
/// process with many hosts every later host would check signatures in the first host's
/// keyring, which goes away with that host's test. With this, they all check in the template,
/// which trusts exactly what a fresh host's keyring trusts (a key added with
/// [`HostDir::trust_packager`] is not seen by in-process libalpm: use `fleetctl` for that).
/// `fleetctl` opens one host per process, so it never meets this.
pub fn pin_gpgme_to_keyring_template() {
    static PINNED: std::sync::OnceLock<()> = std::sync::OnceLock::new();
    PINNED.get_or_init(|| {
        let tmp = tempdir();
        let layout = HostLayout::new(tmp.path());
        layout.create().expect("create host dirs");
        let (root, dbpath) = (layout.root, layout.dbpath);
        let pkg = synth::build_package(&SynthPackage::new("gpgme-pin", "1-1"), tmp.path())
            .expect("build package");
        Packager::default_key().sign(&pkg);
        let mut handle = alpm::Alpm::new(
            root.to_str().expect("UTF-8 path"),
            dbpath.to_str().expect("UTF-8 path"),
        )
        .expect("open libalpm");
        let template = packager::keyring_template().to_str().expect("UTF-8 path");
        handle.set_gpgdir(template).expect("set GPGDir");
        // Checking a signature is what initialises gpgme (with this handle's GPGDir).
        handle
            .pkg_load(
                pkg.to_str().expect("UTF-8 path"),
                true,
                alpm::SigLevel::PACKAGE,
            )
            .expect("the default packager's signature checks in the keyring template");
    });
}

/// A simulated host: a directory `base` holding the target root, a pacman.conf and a state dir.
///
/// Layout ([`HostLayout`], with the keyring in the root): `base/root/` (RootDir, with `var/lib/pacman/` as DBPath holding an empty local
/// database, `var/cache/pacman/pkg/`, `var/log/`, `etc/pacman.d/gnupg/` as GPGDir: the
/// keyring, trusting the default test packager), `base/pacman.conf` (Arch's signature
/// defaults), `base/hooks/` (HookDir, so the machine's own hooks never run) and `base/state/`.
#[derive(Debug)]
pub struct HostDir {
    /// The host name.
    pub hostname: String,
    /// `tmp/hosts/<hostname>`.
    pub base: PathBuf,
    /// The target root (`RootDir`).
    pub root: PathBuf,
    /// `root/var/lib/pacman` (`DBPath`).
    pub dbpath: PathBuf,
    /// `root/var/cache/pacman/pkg` (`CacheDir`).
    pub cache_dir: PathBuf,
    /// `base/pacman.conf`.
    pub conf: PathBuf,
    /// `base/state`, for pacfleet's own records.
    pub state_dir: PathBuf,
    /// `root/etc/pacman.d/gnupg` (`GPGDir`), the host's keyring.
    pub gpgdir: PathBuf,
    /// The repositories pacman.conf lists, as `(name, url)`.
    repos: RefCell<Vec<(String, String)>>,
    /// The layout the paths above come from (`pacfleet_support::host`).
    layout: HostLayout,
}

impl HostDir {
    /// Creates host `hostname` under `tmp/hosts/` with one `[repo]` section per repo, in order.
    pub fn new(tmp: &Path, hostname: &str, repos: &[&PkgRepo]) -> Self {
        let layout = HostLayout::new(&tmp.join("hosts").join(hostname)).keyring_in_root();
        layout.create().expect("create host dirs");
        let host = Self {
            hostname: hostname.to_owned(),
            conf: layout.conf.clone(),
            state_dir: layout.state_dir.clone(),
            gpgdir: layout.gpgdir.clone(),
            base: layout.base.clone(),
            root: layout.root.clone(),
            dbpath: layout.dbpath.clone(),
            cache_dir: layout.cache_dir.clone(),
            layout,
            repos: RefCell::new(Vec::new()),
        };
        // The keyring pacman-key made (once per cache; see `packager`), trusting the packager.
        packager::copy_gnupg_home(packager::keyring_template(), &host.gpgdir);
        host.set_repos(repos);
        host
    }

    /// Rewrites pacman.conf to use exactly `repos`, in order.
    pub fn set_repos(&self, repos: &[&PkgRepo]) {
        *self.repos.borrow_mut() = repos
            .iter()
            .map(|r| (r.name.clone(), r.url.clone()))
            .collect();
        self.write_conf();
    }

    /// Adds `packager`'s public key to this host's keyring and signs it locally, as an
    /// administrator does for a new packager key: copies the key to `base/keys/<name>.asc`,
    /// then `pacman-key --add` and `--lsign-key` (with this host's `--gpgdir` and `--config`).
    pub fn trust_packager(&self, packager: &Packager) {
        let keys = self.base.join("keys");
        fs::create_dir_all(&keys).expect("create host key dir");
        let copy = keys.join(format!("{}.asc", packager.name()));
        fs::write(&copy, packager.public_key_armored()).expect("copy packager key in");
        packager::trust_key_file(&self.gpgdir, &self.conf, &copy, packager.fingerprint());
    }

    /// Gives the root a shell, for scriptlets and hooks that need one: Debian's static busybox
    /// (`busybox-static`, `/bin/busybox`) as `usr/bin/busybox`, with `bin/sh`, `usr/bin/sh`
    /// and the applets a scriptlet needs (`cp`, `cat`, `echo`, `mkdir`, `rm`, `ln`, `true`,
    /// `false`, `test`, `[`, `printf`, `sleep`) as symlinks to it in `usr/bin/`. Returns `self`.
    ///
    /// libalpm runs install scriptlets with the shell it was built with (`scriptlet-shell`:
    /// `/bin/bash` in `scripts/libalpm.sh`'s build, `/usr/bin/bash` on Arch), not `/bin/sh`.
    pub fn with_shell(self) -> Self {
        use std::os::unix::fs::symlink;
        let busybox = Path::new("/bin/busybox");
        assert!(
            busybox.is_file(),
            "no /bin/busybox: install Debian's busybox-static (scripts/deps.sh)"
        );
        let bin = self.root.join("usr/bin");
        fs::create_dir_all(&bin).expect("create usr/bin");
        fs::create_dir_all(self.root.join("bin")).expect("create bin");
        fs::copy(busybox, bin.join("busybox")).expect("copy busybox into the root");
        for applet in [
            "sh", "cp", "cat", "echo", "mkdir", "rm", "ln", "true", "false", "test", "[", "printf",
            "sleep",
        ] {
            symlink("busybox", bin.join(applet)).expect("link a busybox applet");
        }
        symlink("../usr/bin/busybox", self.root.join("bin/sh")).expect("link bin/sh");
        // libalpm runs install scriptlets with the shell it was built with (bash): give the
        // root the machine's bash and the libraries it links.
        copy_program_into(&self.root, Path::new("/bin/bash"));
        self
    }

    fn write_conf(&self) {
        let conf = PacmanConf {
            title: format!("Test host {}", self.hostname),
            siglevel: SigLevel::Arch,
            disable_download_timeout: true,
            repos: self.repos.borrow().clone(),
        };
        self.layout
            .write_pacman_conf(&conf)
            .expect("write pacman.conf");
    }

    /// Runs the real pacman on this host: `pacman --config <conf> --root <root> --dbpath
    /// <dbpath> --noconfirm <args>`, in the C locale.
    pub fn pacman(&self, args: &[&str]) -> Output {
        Command::new(toolchain_bin("pacman"))
            .arg("--config")
            .arg(&self.conf)
            .arg("--root")
            .arg(&self.root)
            .arg("--dbpath")
            .arg(&self.dbpath)
            .arg("--noconfirm")
            .args(args)
            .env("LC_ALL", "C")
            .output()
            .expect("run pacman")
    }

    /// Like [`pacman`](Self::pacman), but panics (with pacman's output) unless it succeeds;
    /// returns stdout.
    pub fn pacman_ok(&self, args: &[&str]) -> String {
        stdout_ok(&format!("pacman {}", args.join(" ")), &self.pacman(args))
    }

    /// Installed packages, name → version (`pacman -Q`).
    pub fn installed(&self) -> BTreeMap<String, String> {
        self.query(&["-Q"])
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(name, version)| (name.to_owned(), version.to_owned()))
            .collect()
    }

    /// Explicitly installed packages (`pacman -Qqe`).
    pub fn explicit(&self) -> BTreeSet<String> {
        self.query(&["-Qqe"]).lines().map(str::to_owned).collect()
    }

    /// Packages installed as dependencies (`pacman -Qqd`).
    pub fn dependencies(&self) -> BTreeSet<String> {
        self.query(&["-Qqd"]).lines().map(str::to_owned).collect()
    }

    /// Installed packages as `name version` lines, sorted by name.
    pub fn versions(&self) -> Vec<String> {
        self.installed()
            .into_iter()
            .map(|(name, version)| format!("{name} {version}"))
            .collect()
    }

    /// pacfleet's `status.json` of this host, parsed (panics when there is none).
    pub fn status_json(&self) -> serde_json::Value {
        let text = fs::read_to_string(self.state_dir.join("status.json")).expect("status.json");
        serde_json::from_str(&text).expect("parse status.json")
    }

    /// pacfleet's `history.jsonl` of this host, one value a pass (empty when there is none).
    pub fn history(&self) -> Vec<serde_json::Value> {
        fs::read_to_string(self.state_dir.join("history.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("history line"))
            .collect()
    }

    /// A path inside the target root, e.g. `host.path("etc/foo.conf")`.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.root.join(relative)
    }

    /// Runs a query; pacman exits 1 with no output when nothing matches, which is an empty
    /// answer rather than a failure.
    fn query(&self, args: &[&str]) -> String {
        let output = self.pacman(args);
        // Exit 1 with no output (warnings about sync databases aside) is "nothing matched".
        let only_warnings = String::from_utf8_lossy(&output.stderr)
            .lines()
            .all(|l| l.starts_with("warning:"));
        if output.status.code() == Some(1) && output.stdout.is_empty() && only_warnings {
            return String::new();
        }
        stdout_ok(&format!("pacman {}", args.join(" ")), &output)
    }
}

/// Copies the program at `path` and every library `ldd` says it links into `root` at the same
/// paths, so that it runs chrooted there (as libalpm runs scriptlets and hooks).
pub fn copy_program_into(root: &Path, path: &Path) {
    let path = fs::canonicalize(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let ldd = Command::new("ldd").arg(&path).output().expect("run ldd");
    let mut files = vec![path.clone()];
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        let lib = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = lib.filter(|p| p.starts_with('/')) {
            files.push(PathBuf::from(p));
        }
    }
    for f in &files {
        let rel = f.strip_prefix("/").expect("absolute");
        for dest in [
            root.join(rel),
            root.join("bin").join(f.file_name().expect("name")),
        ] {
            if dest.exists() || (dest != root.join(rel) && f != &path) {
                continue;
            }
            fs::create_dir_all(dest.parent().expect("parent")).expect("create dir in root");
            fs::copy(f, &dest)
                .unwrap_or_else(|e| panic!("copy {} into the root: {e}", f.display()));
        }
    }
}

/// A fleet repository: a real git work tree whose commits the hosts fetch, with an operator
/// key (`keys/ops.pub`, `keys/ops.key`, unencrypted) that signs them.
#[derive(Debug)]
pub struct FleetRepo {
    /// The work tree.
    pub dir: PathBuf,
    /// The operator's public key file (what hosts trust).
    pub public_key: PathBuf,
    /// The operator's secret key file.
    pub secret_key: PathBuf,
}

/// Writes an unencrypted minisign key pair `<dir>/<name>.pub` and `<dir>/<name>.key`.
pub fn keypair(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    fs::create_dir_all(dir).expect("create key dir");
    let kp = minisign::KeyPair::generate_unencrypted_keypair().expect("generate key");
    let (public, secret) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    fs::write(&public, kp.pk.to_box().expect("pk box").into_string()).expect("write pub");
    fs::write(&secret, kp.sk.to_box(None).expect("sk box").into_string()).expect("write key");
    (public, secret)
}

impl FleetRepo {
    /// `git init` a new repository at `tmp/fleet` with branch `main`.
    pub fn new(tmp: &Path) -> Self {
        let dir = tmp.join("fleet");
        fs::create_dir_all(&dir).expect("create fleet dir");
        let (public_key, secret_key) = keypair(&tmp.join("keys"), "ops");
        let repo = Self {
            dir,
            public_key,
            secret_key,
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.name", "Fleet Operator"]);
        repo.git(&["config", "user.email", "ops@example.com"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    /// Runs git in the work tree (no system or global config), panicking on failure; stdout.
    pub fn git(&self, args: &[&str]) -> String {
        let out = Command::new("git")
            .args(args)
            .current_dir(&self.dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_DATE", "2026-11-20T09:00:00Z")
            .env("GIT_COMMITTER_DATE", "2026-11-20T09:00:00Z")
            .output()
            .expect("run git");
        stdout_ok(&format!("git {}", args.join(" ")), &out)
    }

    /// Writes `files` (relative path, contents) into the work tree.
    pub fn write(&self, files: &[(&str, &str)]) {
        for (path, text) in files {
            let p = self.dir.join(path);
            fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
            fs::write(p, text).expect("write manifest");
        }
    }

    /// Writes `files`, commits them all and signs the commit with the operator key; returns
    /// the new commit id.
    pub fn commit(&self, message: &str, files: &[(&str, &str)]) -> String {
        let id = self.commit_unsigned(message, files);
        self.sign(&id);
        id
    }

    /// Writes `files` and commits them all without signing; returns the new commit id.
    pub fn commit_unsigned(&self, message: &str, files: &[(&str, &str)]) -> String {
        self.write(files);
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "--allow-empty", "-m", message]);
        self.head()
    }

    /// Signs `rev` with the operator key (a new statement, next sequence, 30 days).
    pub fn sign(&self, rev: &str) {
        self.sign_with(rev, &self.secret_key);
    }

    /// Signs `rev` with the given secret key file (appending to a valid statement).
    pub fn sign_with(&self, rev: &str, secret_key: &Path) {
        let sk = pacfleet::trust::load_secret_key(secret_key, None).expect("load key");
        let opts = pacfleet::trust::SignOptions {
            sequence: None,
            expires: chrono::Utc::now() + chrono::Duration::days(30),
            renew: false,
        };
        pacfleet::trust::sign_commit(&self.dir, rev, &sk, &opts).expect("sign commit");
    }

    /// `git revert` of `commit`, signed; returns the new commit id.
    pub fn revert(&self, commit: &str) -> String {
        self.git(&["revert", "--no-edit", commit]);
        let id = self.head();
        self.sign(&id);
        id
    }

    /// The HEAD commit id.
    pub fn head(&self) -> String {
        self.git(&["rev-parse", "HEAD"]).trim().to_owned()
    }
}

/// The `fleetctl` binary built for these tests.
pub fn fleetctl() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fleetctl"));
    cmd.env("LC_ALL", "C")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// Output of a command as (exit code, stdout, stderr).
pub fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run command");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

impl HostDir {
    /// Writes `base/agent.yaml` pointing at `repo` (a path or URL) with this host's paths,
    /// trusting `key` (a `.pub` file); `extra` is appended verbatim (more YAML keys). Returns
    /// its path.
    pub fn agent_yaml(&self, repo: &str, key: &Path, extra: &str) -> PathBuf {
        let path = self.base.join("agent.yaml");
        let text = format!(
            "repo: {repo}\nbranch: main\nhostname: {}\nroot: {}\ndbpath: {}\npacman_conf: {}\nstate_dir: {}\ntrusted_keys: [{}]\n{extra}",
            self.hostname,
            self.root.display(),
            self.dbpath.display(),
            self.conf.display(),
            self.state_dir.display(),
            key.display(),
        );
        fs::write(&path, text).expect("write agent.yaml");
        path
    }

    /// The arguments of `fleetctl enroll` for this host: `--repo repo --key key --config config
    /// --hostname <its name>` and its root, dbpath, pacman.conf and state dir.
    pub fn enroll_args(&self, repo: &str, key: &Path, config: &Path) -> Vec<std::ffi::OsString> {
        let mut args: Vec<std::ffi::OsString> = Vec::new();
        for (flag, value) in [
            ("--repo", Path::new(repo)),
            ("--key", key),
            ("--config", config),
            ("--hostname", Path::new(&self.hostname)),
            ("--root", &self.root),
            ("--dbpath", &self.dbpath),
            ("--pacman-conf", &self.conf),
            ("--state-dir", &self.state_dir),
        ] {
            args.push(flag.into());
            args.push(value.into());
        }
        args
    }

    /// Every file under the host's local database, with contents, to show it is unchanged.
    pub fn local_db_snapshot(&self) -> BTreeMap<PathBuf, Vec<u8>> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
            for e in fs::read_dir(dir).expect("read dir").flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else {
                    out.insert(p.clone(), fs::read(&p).unwrap_or_default());
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.dbpath.join("local"), &mut out);
        out
    }
}

/// A `git daemon` serving every repository under a base directory on a free loopback port,
/// killed on drop. URLs are `git://127.0.0.1:<port>/<path below base>`. Read-only, unless
/// started with [`GitDaemon::start_writable`].
///
/// Started as `<exec-path>/git-daemon`, not `git daemon`: the `git` wrapper runs the daemon as
/// its child, and killing the wrapper (SIGKILL, which it cannot pass on) left the daemon
/// running after the tests.
pub struct GitDaemon {
    child: std::process::Child,
    /// The port it listens on.
    pub port: u16,
}

impl GitDaemon {
    /// Start it and wait until it accepts connections.
    pub fn start(base: &Path) -> GitDaemon {
        Self::start_with(base, &[])
    }

    /// [`GitDaemon::start`], also accepting anonymous pushes (`--enable=receive-pack`), as a
    /// status repository everyone may write to.
    pub fn start_writable(base: &Path) -> GitDaemon {
        Self::start_with(base, &["--enable=receive-pack"])
    }

    fn start_with(base: &Path, extra: &[&str]) -> GitDaemon {
        use std::net::{TcpListener, TcpStream};
        use std::process::Stdio;
        use std::time::{Duration, Instant};
        let exec_path = stdout_ok(
            "git --exec-path",
            &Command::new("git")
                .arg("--exec-path")
                .output()
                .expect("run git"),
        );
        let daemon = Path::new(exec_path.trim()).join("git-daemon");
        // The port is free now; if someone grabs it before the daemon binds, retry.
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .expect("a free port")
                .port();
            let mut child = Command::new(&daemon)
                .arg("--export-all")
                .arg(format!("--base-path={}", base.display()))
                .arg("--reuseaddr")
                .arg("--informative-errors")
                .arg("--listen=127.0.0.1")
                .arg(format!("--port={port}"))
                .args(extra)
                .arg(base)
                .env("GIT_CONFIG_NOSYSTEM", "1")
                .env("GIT_CONFIG_GLOBAL", "/dev/null")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("spawn {}: {e}", daemon.display()));
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return GitDaemon { child, port };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // Port taken: try another.
                }
                assert!(
                    Instant::now() < deadline,
                    "git daemon did not listen on {port}"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start git daemon");
    }
}

impl Drop for GitDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
