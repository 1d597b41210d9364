//! Test packagers (GnuPG keys that sign synthetic packages, as `makepkg --sign` does) and the
//! host keyring that trusts them (made with the real `pacman-key`, as on Arch).
//!
//! Keys and the keyring template are slow to make (a key ~0.1 s, `pacman-key --init` ~1.5 s),
//! so each is made once and cached, like gitoxide's script-made fixtures: under
//! `$CARGO_TARGET_TMPDIR` (or the system temporary directory outside cargo's tests) in
//! `pacfleet-gpg-<STAMP>/`, behind a lock file, so parallel test threads and processes never
//! race; a half-made entry (a killed run) is made again. Bump [`STAMP`] when the way they are
//! made changes. Delete the directory to start afresh.
//!
//! Signatures are reproducible: ed25519 signatures are deterministic and gpg is told to date
//! them at [`pacfleet_support::synth::BUILD_DATE`] (the key is dated before it), so a package built
//! twice gets the same `.sig` from the same key.
//!
//! Signing needs a gpg-agent: the default packager's runs from its cached home and keeps
//! running after the tests (one idle process; it exits when the cache is deleted, or with
//! `gpgconf --homedir <home> --kill all`). [`Packager::new`] copies its key into the test's
//! temporary directory, whose agent exits when the directory is removed.

use std::fs::{self, File};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

/// Version of the cached keys and keyring: bump it when the way they are made changes, so
/// that caches made the old way are not used.
pub const STAMP: &str = "v1";

/// Creation date of every test key (before [`SIGNATURE_TIME`]).
const KEY_CREATION: &str = "20231101T000000";

/// The date every signature carries: [`pacfleet_support::synth::BUILD_DATE`] (2023-11-14T22:13:20Z),
/// frozen (`!`), so that signatures are reproducible.
const SIGNATURE_TIME: &str = "20231114T221320!";

/// A GnuPG key that signs packages: the test packager.
#[derive(Debug)]
pub struct Packager {
    name: String,
    uid: String,
    /// The GnuPG home holding the secret key.
    home: PathBuf,
    fingerprint: String,
    public_key: PathBuf,
}

impl Packager {
    /// The test packager every [`PkgRepo`](super::PkgRepo) signs with by default and every
    /// host's keyring trusts (`pacfleet test packager <packager@pacfleet.invalid>`). Made once
    /// and cached (see the module docs).
    pub fn default_key() -> &'static Packager {
        static DEFAULT: OnceLock<Packager> = OnceLock::new();
        DEFAULT.get_or_init(|| {
            let dir = cached_key("default");
            Packager::load(&dir, "default", dir.join("gnupg"))
        })
    }

    /// Another packager, distinct from [`default_key`](Self::default_key), that no host trusts
    /// until [`HostDir::trust_packager`](super::HostDir::trust_packager) is called (e.g. a new
    /// packager only a newer keyring knows). `name` is lowercase letters, digits and `-`; the
    /// same name always gives the same key (cached). Its secret key is copied to
    /// `tmp/packagers/<name>/`, so the gpg-agent that signs with it goes away with `tmp`.
    pub fn new(tmp: &Path, name: &str) -> Packager {
        assert!(
            !name.is_empty()
                && name != "default"
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-'),
            "packager name {name:?}: use lowercase letters, digits and -, not `default`"
        );
        let cached = cached_key(name);
        let dir = tmp.join("packagers").join(name);
        copy_gnupg_home(&cached.join("gnupg"), &dir.join("gnupg"));
        for file in ["public.asc", "fingerprint"] {
            fs::copy(cached.join(file), dir.join(file)).expect("copy packager key files");
        }
        Packager::load(&dir, name, dir.join("gnupg"))
    }

    fn load(dir: &Path, name: &str, home: PathBuf) -> Packager {
        let fingerprint = fs::read_to_string(dir.join("fingerprint"))
            .expect("read packager fingerprint")
            .trim()
            .to_owned();
        Packager {
            name: name.to_owned(),
            uid: uid(name),
            home,
            fingerprint,
            public_key: dir.join("public.asc"),
        }
    }

    /// Writes the detached binary signature `<path>.sig` (as `makepkg --sign` and
    /// `gpg --detach-sign --no-armor` do), replacing any, and returns its path.
    pub fn sign(&self, path: &Path) -> PathBuf {
        let sig = pacfleet_support::synth::signature_path(path);
        let out = gpg(&self.home)
            .args([
                "--no-auto-check-trustdb",
                "--faked-system-time",
                SIGNATURE_TIME,
            ])
            .args([
                "--local-user",
                &self.fingerprint,
                "--detach-sign",
                "--no-armor",
            ])
            .arg("--output")
            .arg(&sig)
            .arg(path)
            .output()
            .expect("run gpg --detach-sign");
        ok(&format!("gpg --detach-sign {}", path.display()), &out);
        sig
    }

    /// The key's full fingerprint (40 uppercase hex digits).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The key's user id, e.g. `pacfleet test packager <packager@pacfleet.invalid>`.
    pub fn uid(&self) -> &str {
        &self.uid
    }

    /// The name given to [`new`](Self::new) (`default` for the default packager).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The ASCII-armored public key file (what `pacman-key --add` takes).
    pub fn public_key_path(&self) -> &Path {
        &self.public_key
    }

    /// The ASCII-armored public key.
    pub fn public_key_armored(&self) -> String {
        fs::read_to_string(&self.public_key).expect("read packager public key")
    }
}

fn uid(name: &str) -> String {
    if name == "default" {
        "pacfleet test packager <packager@pacfleet.invalid>".to_owned()
    } else {
        format!("pacfleet test packager {name} <packager-{name}@pacfleet.invalid>")
    }
}

/// The cache directory for keys and keyrings of this [`STAMP`].
pub fn cache_root() -> PathBuf {
    option_env!("CARGO_TARGET_TMPDIR")
        .map(PathBuf::from)
        .unwrap_or_else(std::env::temp_dir)
        .join(format!("pacfleet-gpg-{STAMP}"))
}

/// `cache_root()/<entry>`, made by `make` (into an empty directory) unless a complete one is
/// there. Holds `<entry>.lock` meanwhile, so only one thread or process makes it.
fn cached(entry: &str, make: impl FnOnce(&Path)) -> PathBuf {
    let root = cache_root();
    fs::create_dir_all(&root).expect("create gpg cache dir");
    let dir = root.join(entry);
    let lock = File::create(root.join(format!("{entry}.lock"))).expect("create cache lock");
    lock.lock().expect("lock gpg cache entry");
    if !dir.join("complete").is_file() {
        let partial = root.join(format!("{entry}.partial"));
        let _ = fs::remove_dir_all(&partial);
        fs::create_dir_all(&partial).expect("create cache entry");
        make(&partial);
        fs::write(partial.join("complete"), STAMP).expect("mark cache entry complete");
        let _ = fs::remove_dir_all(&dir);
        fs::rename(&partial, &dir).expect("move cache entry in place");
    }
    drop(lock);
    dir
}

/// The cached key `packager-<name>`: `gnupg/` (its GnuPG home, secret key unprotected),
/// `public.asc`, `fingerprint`.
fn cached_key(name: &str) -> PathBuf {
    cached(&format!("packager-{name}"), |dir| {
        let home = dir.join("gnupg");
        make_private_dir(&home);
        let uid = uid(name);
        let (real, email) = uid
            .strip_suffix('>')
            .and_then(|u| u.split_once(" <"))
            .expect("uid is `name <email>`");
        let params = dir.join("key-params");
        fs::write(
            &params,
            format!(
                "%no-protection\nKey-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\n\
                 Name-Real: {real}\nName-Email: {email}\nCreation-Date: {KEY_CREATION}\n\
                 Expire-Date: 0\n%commit\n"
            ),
        )
        .expect("write key parameters");
        let out = gpg(&home)
            .arg("--gen-key")
            .arg(&params)
            .output()
            .expect("run gpg --gen-key");
        ok("gpg --gen-key", &out);
        // Settle the trust database now: signing then never writes it (parallel signers).
        ok(
            "gpg --check-trustdb",
            &gpg(&home).arg("--check-trustdb").output().expect("run gpg"),
        );
        let out = gpg(&home)
            .args(["--with-colons", "--list-secret-keys"])
            .output()
            .expect("run gpg --list-secret-keys");
        let listing = ok("gpg --list-secret-keys", &out);
        let fingerprint = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .and_then(|l| l.split(':').find(|f| f.len() == 40))
            .unwrap_or_else(|| panic!("no fingerprint in:\n{listing}"))
            .to_owned();
        let out = gpg(&home)
            .args(["--armor", "--export", &fingerprint])
            .output()
            .expect("run gpg --export");
        let armored = ok("gpg --export", &out);
        assert!(armored.contains("BEGIN PGP PUBLIC KEY BLOCK"), "{armored}");
        fs::write(dir.join("public.asc"), armored).expect("write public key");
        fs::write(dir.join("fingerprint"), format!("{fingerprint}\n")).expect("write fpr");
        kill_agents(&home);
    })
}

/// The template host keyring: `pacman-key --init`, then `--add` and `--lsign-key` of the
/// default packager, made once and cached (see the module docs). Copy it with
/// [`copy_gnupg_home`].
pub fn keyring_template() -> &'static Path {
    static TEMPLATE: OnceLock<PathBuf> = OnceLock::new();
    TEMPLATE.get_or_init(|| {
        let packager = Packager::default_key();
        let entry = format!("keyring-{}", &packager.fingerprint()[24..]);
        cached(&entry, |dir| {
            let home = dir.join("gnupg");
            let conf = dir.join("pacman.conf");
            fs::write(&conf, "[options]\n").expect("write pacman.conf");
            pacman_key(&home, &conf, &["--init"]);
            trust_key_file(
                &home,
                &conf,
                packager.public_key_path(),
                packager.fingerprint(),
            );
        })
        .join("gnupg")
    })
}

/// `pacman-key --add` the public key file `key` and `--lsign-key` its `fingerprint` in the
/// keyring `gpgdir` (pacman.conf `conf`), then stop the agents pacman-key started there.
pub fn trust_key_file(gpgdir: &Path, conf: &Path, key: &Path, fingerprint: &str) {
    let key = key.to_str().expect("UTF-8 key path");
    pacman_key(gpgdir, conf, &["--add", key]);
    pacman_key(gpgdir, conf, &["--lsign-key", fingerprint]);
    kill_agents(gpgdir);
}

/// Runs the toolchain's `pacman-key --gpgdir <gpgdir> --config <conf> <args>`.
fn pacman_key(gpgdir: &Path, conf: &Path, args: &[&str]) -> String {
    let out = Command::new(on_path("pacman-key"))
        .arg("--gpgdir")
        .arg(gpgdir)
        .arg("--config")
        .arg(conf)
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .expect("run pacman-key");
    ok(&format!("pacman-key {}", args.join(" ")), &out)
}

/// Copies a GnuPG home (a keyring) from `from` to `to`, keeping modes and leaving out agent
/// sockets (`S.*`) and lock files.
pub fn copy_gnupg_home(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create gnupg dir");
    let mode = fs::metadata(from).expect("stat gnupg dir").permissions();
    fs::set_permissions(to, mode).expect("chmod gnupg dir");
    for entry in fs::read_dir(from).expect("read gnupg dir") {
        let entry = entry.expect("read gnupg dir entry");
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let kind = entry.file_type().expect("file type");
        if name.starts_with("S.") || name.starts_with(".#lk") || name.ends_with(".lock") {
            continue;
        }
        let (src, dst) = (entry.path(), to.join(&*name));
        if kind.is_dir() {
            copy_gnupg_home(&src, &dst);
        } else if kind.is_file() {
            fs::copy(&src, &dst).expect("copy gnupg file");
        }
    }
}

/// Stops every GnuPG daemon of `home`.
pub fn kill_agents(home: &Path) {
    let _ = Command::new("gpgconf")
        .arg("--homedir")
        .arg(home)
        .args(["--kill", "all"])
        .output();
}

fn make_private_dir(dir: &Path) {
    fs::create_dir_all(dir).expect("create gnupg home");
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).expect("chmod gnupg home");
}

/// gpg on `home`, batch mode, no terminal, quiet.
fn gpg(home: &Path) -> Command {
    let mut cmd = Command::new("gpg");
    cmd.arg("--homedir")
        .arg(home)
        .args(["--batch", "--yes", "--no-tty", "--quiet"])
        .env("LC_ALL", "C");
    cmd
}

/// `name` on PATH (the toolchain `scripts/libalpm.sh env` puts there), or a clear panic.
fn on_path(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!("`{name}` is not on PATH; run `eval \"$(scripts/libalpm.sh env)\"`")
        })
}

/// Stdout of a finished command, panicking with its output if it failed. (This module needs
/// nothing else of the harness, so that another program can include it with `#[path]`.)
fn ok(what: &str, out: &Output) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
