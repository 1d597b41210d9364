//! Shared fixtures for the integration tests: package repositories served over `file://`,
//! simulated hosts (a target root plus a pacman.conf pointing at it) and the real pacman
//! toolchain that `scripts/libalpm.sh env` puts on PATH.
//!
//! Everything lives under a caller-provided temporary directory, so tests can run in parallel.
//! Running pacman transactions (`-S`, `-U`, `-R`, `-Sy`) needs root, as on a real host.

#![allow(dead_code)] // Not every test module uses every helper.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use pacfleet::synth::{self, SynthPackage};

pub use tempfile::TempDir;

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

    /// Builds `pkgs` into the repository directory, replaces the entries of their names and
    /// rewrites the database. Returns the built package files, in the order given.
    pub fn add(&mut self, pkgs: &[SynthPackage]) -> Vec<PathBuf> {
        let paths: Vec<PathBuf> = pkgs
            .iter()
            .map(|pkg| synth::build_package(pkg, &self.dir).expect("build package"))
            .collect();
        for (pkg, path) in pkgs.iter().zip(&paths) {
            self.packages.insert(pkg.name.clone(), path.clone());
        }
        self.write_db();
        paths
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

    /// Copies the current package file of `name` into the Arch Linux Archive layout under
    /// `archive_root` and returns where it went.
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
        dest
    }

    fn write_db(&self) {
        let files: Vec<&PathBuf> = self.packages.values().collect();
        synth::write_repo(&self.dir, &self.name, &files).expect("write repo db");
    }
}

/// Builds `pkg` straight into the Arch Linux Archive layout under `archive_root` and returns
/// the package file's path.
pub fn archive_package(archive_root: &Path, pkg: &SynthPackage) -> PathBuf {
    let dest = synth::archive_path(archive_root, &pkg.file_name());
    synth::build_package(pkg, dest.parent().expect("parent")).expect("build package")
}

/// A simulated host: a directory `base` holding the target root, a pacman.conf and a state dir.
///
/// Layout: `base/root/` (RootDir, with `var/lib/pacman/` as DBPath holding an empty local
/// database, `var/cache/pacman/pkg/`, `var/log/`, `etc/`), `base/pacman.conf`, `base/gnupg/`
/// (GPGDir), `base/hooks/` (HookDir, so the machine's own hooks never run) and `base/state/`.
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
}

impl HostDir {
    /// Creates host `hostname` under `tmp/hosts/` with one `[repo]` section per repo, in order.
    pub fn new(tmp: &Path, hostname: &str, repos: &[&PkgRepo]) -> Self {
        let base = tmp.join("hosts").join(hostname);
        let root = base.join("root");
        let dbpath = root.join("var/lib/pacman");
        let cache_dir = root.join("var/cache/pacman/pkg");
        let host = Self {
            hostname: hostname.to_owned(),
            conf: base.join("pacman.conf"),
            state_dir: base.join("state"),
            base,
            root,
            dbpath,
            cache_dir,
        };
        for dir in [
            host.dbpath.join("local"),
            host.dbpath.join("sync"),
            host.cache_dir.clone(),
            host.root.join("var/log"),
            host.root.join("etc"),
            host.base.join("gnupg"),
            host.base.join("hooks"),
            host.state_dir.clone(),
        ] {
            fs::create_dir_all(&dir).expect("create host dir");
        }
        // An empty local database of the current schema version; libalpm accepts it as is.
        fs::write(host.dbpath.join("local/ALPM_DB_VERSION"), "9\n").expect("write db version");
        host.set_repos(repos);
        host
    }

    /// Rewrites pacman.conf to use exactly `repos`, in order.
    pub fn set_repos(&self, repos: &[&PkgRepo]) {
        let mut conf = format!(
            "# Test host {hostname}\n\
             [options]\n\
             RootDir = {root}\n\
             DBPath = {dbpath}/\n\
             CacheDir = {cache}/\n\
             LogFile = {root}/var/log/pacman.log\n\
             GPGDir = {base}/gnupg/\n\
             HookDir = {base}/hooks/\n\
             Architecture = auto\n\
             SigLevel = Never\n\
             LocalFileSigLevel = Never\n\
             DisableSandbox\n\
             DisableDownloadTimeout\n",
            hostname = self.hostname,
            root = self.root.display(),
            dbpath = self.dbpath.display(),
            cache = self.cache_dir.display(),
            base = self.base.display(),
        );
        for repo in repos {
            conf.push_str(&format!("\n[{}]\nServer = {}\n", repo.name, repo.url));
        }
        fs::write(&self.conf, conf).expect("write pacman.conf");
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
/// killed on drop. URLs are `git://127.0.0.1:<port>/<path below base>`.
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
