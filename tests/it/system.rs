//! pacfleet's libalpm layer (`system`, `plan::intent`, `apply`) driven against real host
//! directories: synthetic packages in `file://` repositories, a simulated host root, and the
//! real pacman to check the outcome (`pacman -Q`, `-Qe`, `-Qd`, `-Dk`).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pacfleet::apply::{self, ApplyError, Notices};
use pacfleet::manifest::Pin;
use pacfleet::plan::{self, Action, Change, Changeset, Reason};
use pacfleet::resolve::{Desired, Origin, Resolved};
use pacfleet::system::{HostPaths, Mode, System, SystemError};
use pacfleet_support::synth::{self, SynthPackage};

use crate::harness::{
    HostDir, World, archive_package, file_url, pin_gpgme_to_keyring_template, tempdir,
};

// ---------------------------------------------------------------------------------------------
// Driving the library

/// The paths `System::open` takes; first makes gpgme check signatures in the keyring template
/// (libalpm sets gpgme's home once per process: see `pin_gpgme_to_keyring_template`).
fn host_paths(host: &HostDir) -> HostPaths {
    pin_gpgme_to_keyring_template();
    HostPaths {
        root: host.root.clone(),
        dbpath: host.dbpath.clone(),
        pacman_conf: host.conf.clone(),
    }
}

/// Set in the child process [`require_commit`] starts.
const CANARY_ENV: &str = "PACFLEET_IT_COMMIT_CANARY";

/// Checks once, in a child process, that committing a transaction does not abort the process,
/// and panics with the reason if it does — so that a broken commit path fails these tests
/// instead of killing the whole test binary (and every other module's tests with it).
///
/// This happened: alpm 5.0.2's safe event callback reads the type of every event through a
/// `*const alpm_event_t` (8-byte aligned) while libalpm passes simple events as a 4-byte
/// `alpm_event_any_t`; in debug builds the alignment check aborted on the first
/// `TransactionStart` (hence `apply`'s own callback).
fn require_commit() {
    use std::os::unix::process::ExitStatusExt;
    static VERDICT: std::sync::OnceLock<Result<(), String>> = std::sync::OnceLock::new();
    if std::env::var_os(CANARY_ENV).is_some() {
        return;
    }
    let verdict = VERDICT.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "--ignored",
                "--test-threads=1",
                "system::commit_canary",
            ])
            .env(CANARY_ENV, "1")
            .output()
            .map_err(|e| format!("running the commit canary: {e}"))?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() && stdout.contains("1 passed") {
            return Ok(());
        }
        let how = match out.status.signal() {
            Some(6) => "aborted (SIGABRT)".to_owned(),
            Some(sig) => format!("was killed by signal {sig}"),
            None => format!("failed ({})", out.status),
        };
        let panic_line: Vec<&str> = stderr
            .lines()
            .skip_while(|l| !l.contains("panicked"))
            .take(2)
            .collect();
        Err(format!(
            "committing a libalpm transaction {how} in a child process: {}\n\
             (a panic inside a libalpm callback cannot unwind through C: see the callbacks in \
             crates/pacfleet/src/apply.rs, e.g. alpm 5.0.2's misaligned `alpm_event_t` read)\n\
             --- stdout\n{stdout}\n--- stderr\n{stderr}",
            panic_line.join(" ")
        ))
    });
    if let Err(e) = verdict {
        panic!("{e}");
    }
}

/// The child process of [`require_commit`]: one install, committed.
#[test]
#[ignore = "run by require_commit() in a child process"]
fn commit_canary() {
    let w = world(&[libfoo("1.0-1"), app("1.0-1")]);
    reconcile_ok(&w.hosts[0], &floating(&["app"]), &inv(&[]));
    assert_eq!(w.hosts[0].installed().len(), 2);
}

#[test]
fn committing_does_not_abort_the_process() {
    require_commit();
}

/// Held while this test process runs libalpm in-process. libalpm changes process-wide state
/// and puts it back: the working directory (to the root while it extracts) and the umask
/// (`umask(0)` around creating directories and downloads). Two threads doing that at once
/// restore each other's saved values. That left the process in a deleted host root, and
/// once with umask 0, after which every later test wrote world-writable files (state dirs
/// refused, units warned about). One in-process libalpm at a time.
fn one_libalpm_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static LIBALPM: std::sync::Mutex<()> = std::sync::Mutex::new(());
    LIBALPM
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// One reconcile pass as the agent will run it: open (Apply) → refresh → intent → prepare →
/// commit. Returns what was planned and what the commit reported.
fn reconcile(
    host: &HostDir,
    resolved: &Resolved,
    inventory: &BTreeSet<String>,
) -> Result<(Changeset, Notices), ApplyError> {
    require_commit();
    let _one_at_a_time = one_libalpm_at_a_time();
    let mut sys = System::open(&host_paths(host), Mode::Apply)?;
    sys.refresh()?;
    let intent = plan::intent(resolved, &sys.installed(), inventory);
    let changes = sys.prepare(&intent, resolved)?;
    let notices = apply::commit(&mut sys, &changes)?;
    Ok((changes, notices))
}

/// Like [`reconcile`], panicking with the error's message.
fn reconcile_ok(
    host: &HostDir,
    resolved: &Resolved,
    inventory: &BTreeSet<String>,
) -> (Changeset, Notices) {
    reconcile(host, resolved, inventory).unwrap_or_else(|e| panic!("reconcile failed: {e}"))
}

/// `fleetctl plan`: open (Plan) → refresh → intent → prepare → release.
fn plan_only(
    host: &HostDir,
    resolved: &Resolved,
    inventory: &BTreeSet<String>,
) -> Result<Changeset, SystemError> {
    let _one_at_a_time = one_libalpm_at_a_time();
    let mut sys = System::open(&host_paths(host), Mode::Plan)?;
    sys.refresh()?;
    let intent = plan::intent(resolved, &sys.installed(), inventory);
    let changes = sys.prepare(&intent, resolved);
    sys.release();
    changes
}

fn plan_ok(host: &HostDir, resolved: &Resolved, inventory: &BTreeSet<String>) -> Changeset {
    plan_only(host, resolved, inventory).unwrap_or_else(|e| panic!("plan failed: {e}"))
}

// ---------------------------------------------------------------------------------------------
// Fixtures

const POOL: &str = "ws";

fn origins(list: &[Origin]) -> Desired {
    Desired {
        origins: list.iter().cloned().collect(),
        repo: None,
    }
}

/// A floating pool `ws` wanting `explicit` (each asked for by `pool ws`).
fn floating(explicit: &[&str]) -> Resolved {
    Resolved {
        host: "h1".into(),
        fleet: "acme".into(),
        pool: POOL.into(),
        explicit: explicit
            .iter()
            .map(|n| (n.to_string(), origins(&[Origin::Pool(POOL.into())])))
            .collect(),
        excluded: BTreeMap::new(),
        generation: None,
        snapshot: None,
        pins: BTreeMap::new(),
        prune: false,
        window: None,
        paused: false,
        archive: None,
        gates: Default::default(),
    }
}

/// Pool `ws` pinned to generation `number` with `pins` (name, version, sha256).
fn pinned(
    explicit: &[&str],
    number: u32,
    pins: &[(&str, &str, Option<String>)],
    archive: Option<String>,
) -> Resolved {
    Resolved {
        generation: Some(number),
        pins: pins
            .iter()
            .map(|(n, v, sha)| {
                (
                    n.to_string(),
                    Pin {
                        version: v.to_string(),
                        sha256: sha.clone(),
                    },
                )
            })
            .collect(),
        archive,
        ..floating(explicit)
    }
}

fn inv(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    inv(names)
}

fn libfoo(version: &str) -> SynthPackage {
    SynthPackage::new("libfoo", version).file("usr/lib/libfoo.so.1", format!("libfoo {version}\n"))
}

fn app(version: &str) -> SynthPackage {
    SynthPackage::new("app", version)
        .depends("libfoo")
        .file("usr/bin/app", format!("#!/bin/sh\necho app {version}\n"))
        .file("etc/app.conf", format!("# app {version}\nverbose = no\n"))
        .backup("etc/app.conf")
}

/// A repository `main` holding `pkgs` and a host `h1` using it: the shared world without a
/// fleet, since these tests drive the library.
fn world(pkgs: &[SynthPackage]) -> World {
    World::builder()
        .repo("main", pkgs)
        .no_fleet()
        .hosts(&["h1"])
        .build()
}

/// The world's archive directory (made now) and its `file://` URL.
fn archive_dir(w: &World) -> (PathBuf, String) {
    fs::create_dir_all(&w.archive).expect("create archive");
    (w.archive.clone(), file_url(&w.archive))
}

/// Every file under `dir` (recursively) with its contents; symlinks by their target.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(base: &Path, dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            let rel = p.strip_prefix(base).expect("under base").to_path_buf();
            let meta = fs::symlink_metadata(&p).expect("stat");
            if meta.file_type().is_symlink() {
                let target = fs::read_link(&p).expect("readlink");
                out.insert(rel, format!("-> {}", target.display()).into_bytes());
            } else if meta.is_dir() {
                out.insert(rel, b"<dir>".to_vec());
                walk(base, &p, out);
            } else {
                out.insert(rel, fs::read(&p).expect("read"));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn change<'a>(changes: &'a Changeset, name: &str) -> &'a Change {
    changes
        .changes
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no change for `{name}` in {changes:#?}"))
}

/// (action, name, old, new) of every change, for whole-changeset assertions.
fn actions(changes: &Changeset) -> Vec<(Action, &str, Option<&str>, Option<&str>)> {
    changes
        .changes
        .iter()
        .map(|c| {
            (
                c.action,
                c.name.as_str(),
                c.old.as_deref(),
                c.new.as_deref(),
            )
        })
        .collect()
}

fn versions(list: &[(&str, &str)]) -> BTreeMap<String, String> {
    list.iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// `pacman -Dk` finds nothing wrong with the host's database.
fn assert_db_clean(host: &HostDir) {
    let out = host.pacman_ok(&["-Dk"]);
    assert!(
        out.contains("No database errors have been found"),
        "pacman -Dk: {out}"
    );
}

fn assert_unlocked(host: &HostDir) {
    assert!(
        !host.dbpath.join("db.lck").exists(),
        "pacfleet left {} behind",
        host.dbpath.join("db.lck").display()
    );
}

fn sha256(path: &Path) -> String {
    synth::sha256_file(path).expect("hash")
}

// ---------------------------------------------------------------------------------------------
// 1–3: floating pools

#[test]
fn floating_install_idempotence_and_upgrade() {
    let mut w = world(&[libfoo("1.0-1"), app("1.0-1")]);
    let host = &w.hosts[0];
    let want = floating(&["app"]);

    // 1. Install from nothing: app and the dependency libalpm resolves for it.
    let (changes, notices) = reconcile_ok(host, &want, &inv(&[]));
    assert_eq!(
        actions(&changes),
        [
            (Action::Install, "app", None, Some("1.0-1")),
            (Action::Install, "libfoo", None, Some("1.0-1"))
        ]
    );
    let a = change(&changes, "app");
    assert_eq!(a.why, ["pool ws"]);
    assert_eq!(a.reason, Some(Reason::Explicit));
    assert_eq!(a.source.as_deref(), Some("repo main"));
    let l = change(&changes, "libfoo");
    assert_eq!(l.why, ["dependency of app"]);
    assert_eq!(l.reason, Some(Reason::Dependency));
    assert_eq!(l.source.as_deref(), Some("repo main"));
    // libalpm reports the compressed size (%CSIZE%) of packages not yet in the cache as the
    // download size, file:// servers included; the installed size is the payload.
    for (c, name) in [(a, "app"), (l, "libfoo")] {
        let file = w.repo().package_file(name).expect("in repo");
        assert_eq!(
            c.download_size,
            fs::metadata(file).expect("stat").len(),
            "{name}"
        );
        assert!(c.size_delta > 0, "{name}: {c:?}");
    }
    assert_eq!(
        changes.size_delta(),
        (app("1.0-1").installed_size() + libfoo("1.0-1").installed_size()) as i64
    );
    assert!(changes.pacnew.is_empty());
    assert_eq!(notices, Notices::default());

    assert_eq!(
        host.installed(),
        versions(&[("app", "1.0-1"), ("libfoo", "1.0-1")])
    );
    assert_eq!(host.explicit(), set(&["app"]));
    assert_eq!(host.dependencies(), set(&["libfoo"]));
    assert!(host.path("usr/bin/app").is_file() && host.path("etc/app.conf").is_file());
    assert_unlocked(host);
    assert_db_clean(host);

    // 2. Idempotence: the system upgrade finds nothing, in a plan and in a reconcile.
    let again = plan_ok(host, &want, &inv(&["app", "libfoo"]));
    assert!(again.is_empty(), "{again:#?}");
    assert_eq!(again.summary(), "nothing to do");
    let (again, notices) = reconcile_ok(host, &want, &inv(&["app", "libfoo"]));
    assert!(again.is_empty(), "{again:#?}");
    assert_eq!(notices, Notices::default());

    // Now the package files are in the cache: nothing left to download.
    assert!(host.cache_dir.join("app-1.0-1-any.pkg.tar.zst").is_file());

    // 3. Floating upgrade: a new app in the repository.
    w.repo_mut().add(&[app("1.1-1")]);
    let host = &w.hosts[0];
    let planned = plan_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(
        actions(&planned),
        [(Action::Upgrade, "app", Some("1.0-1"), Some("1.1-1"))]
    );
    let up = change(&planned, "app");
    assert_eq!(
        up.why,
        ["pool ws"],
        "desired packages name who desires them, even when upgraded"
    );
    assert_eq!(up.reason, Some(Reason::Explicit));
    assert!(up.download_size > 0);
    assert!(
        planned.pacnew.is_empty(),
        "config unmodified on disk: no .pacnew"
    );
    assert_eq!(planned.summary(), "1 upgrade");

    let (applied, notices) = reconcile_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(applied, planned, "the reconcile does what the plan showed");
    assert!(notices.pacnew.is_empty());
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.1-1"), ("libfoo", "1.0-1")])
    );
    assert_eq!(host.explicit(), set(&["app"]));
    assert_eq!(
        fs::read_to_string(host.path("etc/app.conf")).unwrap(),
        "# app 1.1-1\nverbose = no\n"
    );
    assert!(plan_ok(host, &want, &inv(&["app", "libfoo"])).is_empty());
    assert_unlocked(host);
    assert_db_clean(host);
}

#[test]
fn desired_dependency_is_marked_explicit() {
    let w = world(&[libfoo("1.0-1"), app("1.0-1")]);
    let host = &w.hosts[0];
    reconcile_ok(host, &floating(&["app"]), &inv(&[]));
    assert_eq!(host.dependencies(), set(&["libfoo"]));

    let want = floating(&["app", "libfoo"]);
    let planned = plan_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(
        actions(&planned),
        [(Action::MarkExplicit, "libfoo", Some("1.0-1"), Some("1.0-1"))]
    );
    let (applied, _) = reconcile_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(applied, planned);
    assert_eq!(host.explicit(), set(&["app", "libfoo"]));
    assert!(plan_ok(host, &want, &inv(&["app", "libfoo"])).is_empty());
    assert_db_clean(host);
}

// ---------------------------------------------------------------------------------------------
// 4: planning takes no lock and writes nothing

#[test]
fn plan_is_lock_free_and_changes_nothing() {
    let mut w = world(&[libfoo("1.0-1"), app("1.0-1")]);
    let want = floating(&["app"]);
    reconcile_ok(&w.hosts[0], &want, &inv(&[]));
    // A newer app that a refresh of the real sync database would pick up.
    w.repo_mut()
        .add(&[app("1.1-1"), SynthPackage::new("extra", "1-1")]);
    let host = &w.hosts[0];
    let lock = host.dbpath.join("db.lck");
    fs::write(&lock, "").unwrap();

    let db_before = snapshot(&host.dbpath);
    let cache_before = snapshot(&host.cache_dir);
    let root_etc_before = snapshot(&host.path("etc"));
    let installed_before = host.installed();

    let planned = plan_ok(host, &floating(&["app", "extra"]), &inv(&["app", "libfoo"]));
    assert_eq!(
        actions(&planned),
        [
            (Action::Install, "extra", None, Some("1-1")),
            (Action::Upgrade, "app", Some("1.0-1"), Some("1.1-1"))
        ]
    );

    assert!(lock.exists(), "the lock is someone else's: never touched");
    assert_eq!(
        snapshot(&host.dbpath),
        db_before,
        "local and sync databases are byte-for-byte unchanged"
    );
    assert_eq!(
        snapshot(&host.cache_dir),
        cache_before,
        "nothing downloaded into the host's cache"
    );
    assert_eq!(snapshot(&host.path("etc")), root_etc_before);
    assert_eq!(host.installed(), installed_before);

    // The same plan under the lock in Apply mode is refused.
    // (Which error exactly: see held_lock_is_reported_as_locked_by_prepare_and_refresh.)
    let err = reconcile(host, &want, &inv(&["app", "libfoo"])).expect_err("locked");
    let msg = err.to_string();
    assert!(lock.exists());
    assert!(msg.contains("lock"), "{msg}");
    fs::remove_file(&lock).unwrap();
    assert_eq!(host.installed(), installed_before);
}

// ---------------------------------------------------------------------------------------------
// 5: pinned pools

/// A host that has app 1.1-1 and libfoo 1.1-1, from a repository that only has those.
fn world_at_1_1() -> World {
    let w = world(&[libfoo("1.1-1"), app("1.1-1")]);
    reconcile_ok(&w.hosts[0], &floating(&["app"]), &inv(&[]));
    assert_eq!(
        w.hosts[0].installed(),
        versions(&[("app", "1.1-1"), ("libfoo", "1.1-1")])
    );
    w
}

#[test]
fn pinned_downgrade_from_the_archive() {
    let w = world_at_1_1();
    let host = &w.hosts[0];
    let (archive, url) = archive_dir(&w);
    let old = archive_package(&archive, &app("1.0-1"));
    assert!(old.starts_with(archive.join("packages/a/app")));

    let want = pinned(
        &["app"],
        7,
        &[
            ("app", "1.0-1", Some(sha256(&old))),
            ("libfoo", "1.1-1", None),
        ],
        Some(url.clone()),
    );
    let inventory = inv(&["app", "libfoo"]);
    let planned = plan_ok(host, &want, &inventory);
    assert_eq!(
        actions(&planned),
        [(Action::Downgrade, "app", Some("1.1-1"), Some("1.0-1"))]
    );
    let d = change(&planned, "app");
    assert_eq!(d.why, ["pool ws"]);
    assert_eq!(d.reason, Some(Reason::Explicit));
    // A file:// archive is read in place: nothing to download. The source is the file.
    assert_eq!(d.download_size, 0);
    let source = d.source.as_deref().unwrap_or_default();
    assert!(source.contains(old.to_str().unwrap()), "{source}");
    assert!(
        snapshot(&host.cache_dir)
            .keys()
            .all(|f| !f.to_string_lossy().contains("1.0-1")),
        "plan downloads nothing"
    );

    let (applied, _) = reconcile_ok(host, &want, &inventory);
    assert_eq!(applied, planned);
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.0-1"), ("libfoo", "1.1-1")])
    );
    assert_eq!(host.explicit(), set(&["app"]));
    assert_eq!(host.dependencies(), set(&["libfoo"]));
    assert!(
        plan_ok(host, &want, &inventory).is_empty(),
        "converged on the pins"
    );
    assert_unlocked(host);
    assert_db_clean(host);
}

#[test]
fn pinned_downgrade_from_the_cache_dir() {
    let w = world_at_1_1();
    let host = &w.hosts[0];
    // The old file exists only in the host's CacheDir (no archive configured).
    let built = synth::build_package(&app("1.0-1"), &w.tmp.path().join("elsewhere")).unwrap();
    let cached = host.cache_dir.join(built.file_name().unwrap());
    fs::copy(&built, &cached).unwrap();

    let want = pinned(
        &["app"],
        3,
        &[("app", "1.0-1", None), ("libfoo", "1.1-1", None)],
        None,
    );
    let (changes, _) = reconcile_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(
        actions(&changes),
        [(Action::Downgrade, "app", Some("1.1-1"), Some("1.0-1"))]
    );
    let source = change(&changes, "app").source.clone().unwrap_or_default();
    assert!(source.contains(cached.to_str().unwrap()), "{source}");
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.0-1"), ("libfoo", "1.1-1")])
    );
    assert_eq!(host.explicit(), set(&["app"]));
    assert_db_clean(host);

    // Without the file anywhere, the pin cannot be met: the error says where it looked.
    let want = pinned(&["app"], 4, &[("app", "0.9-1", None)], None);
    let err = plan_only(host, &want, &inv(&["app"])).expect_err("not found");
    assert!(matches!(err, SystemError::PinNotFound { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("`app`") && msg.contains("0.9-1") && msg.contains("archive:"),
        "{msg}"
    );
}

#[test]
fn pinned_dependency_ends_at_its_pinned_version() {
    let w = world_at_1_1();
    let host = &w.hosts[0];
    let (archive, url) = archive_dir(&w);
    archive_package(&archive, &libfoo("1.0-1"));

    // libfoo is not desired, only locked: it moves to 1.0-1 and stays a dependency.
    let want = pinned(
        &["app"],
        2,
        &[("app", "1.1-1", None), ("libfoo", "1.0-1", None)],
        Some(url),
    );
    let (changes, _) = reconcile_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(
        actions(&changes),
        [(Action::Downgrade, "libfoo", Some("1.1-1"), Some("1.0-1"))]
    );
    let l = change(&changes, "libfoo");
    assert_eq!(l.why, ["pinned by generation 2"]);
    assert_eq!(l.reason, Some(Reason::Dependency));
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.1-1"), ("libfoo", "1.0-1")])
    );
    assert_eq!(host.dependencies(), set(&["libfoo"]));
    assert_eq!(host.explicit(), set(&["app"]));
    assert_db_clean(host);
}

#[test]
fn pinned_dependency_pulled_in_by_an_install_comes_at_its_pinned_version() {
    // Fresh host: libalpm would pull libfoo 1.1-1 from the repo; the lock says 1.0-1, which
    // only the archive has.
    let w = world(&[libfoo("1.1-1"), app("1.1-1")]);
    let host = &w.hosts[0];
    let (archive, url) = archive_dir(&w);
    archive_package(&archive, &libfoo("1.0-1"));
    // app comes from the repo, its pinned sha256 checked against the repo's %SHA256SUM%.
    let app_sha = sha256(w.repo().package_file("app").unwrap());
    let want = pinned(
        &["app"],
        5,
        &[("app", "1.1-1", Some(app_sha)), ("libfoo", "1.0-1", None)],
        Some(url),
    );

    let (changes, _) = reconcile_ok(host, &want, &inv(&[]));
    assert_eq!(
        actions(&changes),
        [
            (Action::Install, "app", None, Some("1.1-1")),
            (Action::Install, "libfoo", None, Some("1.0-1"))
        ]
    );
    assert_eq!(change(&changes, "libfoo").reason, Some(Reason::Dependency));
    assert_eq!(change(&changes, "libfoo").why, ["pinned by generation 5"]);
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.1-1"), ("libfoo", "1.0-1")])
    );
    assert_eq!(host.explicit(), set(&["app"]));
    assert_eq!(host.dependencies(), set(&["libfoo"]));
    assert!(plan_ok(host, &want, &inv(&["app", "libfoo"])).is_empty());
    assert_db_clean(host);
}

// ---------------------------------------------------------------------------------------------
// 6: checksums

#[test]
fn sha256_mismatch_is_refused_and_changes_nothing() {
    let w = world_at_1_1();
    let host = &w.hosts[0];
    let (archive, url) = archive_dir(&w);
    let served = archive_package(&archive, &app("1.0-1"));
    // The generation pinned another build of the same version.
    let other = synth::build_package(
        &app("1.0-1").file("usr/share/app/extra", "x"),
        &w.tmp.path().join("other"),
    )
    .unwrap();
    let (actual, expected) = (sha256(&served), sha256(&other));
    assert_ne!(actual, expected);
    let want = pinned(
        &["app"],
        9,
        &[("app", "1.0-1", Some(expected.clone()))],
        Some(url),
    );

    let local_before = snapshot(&host.dbpath.join("local"));
    let err = match reconcile(host, &want, &inv(&["app", "libfoo"])) {
        Err(ApplyError::System(e)) => e,
        other => panic!("expected a checksum error, got {other:?}"),
    };
    assert!(
        matches!(err, SystemError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    for part in [
        "`app`",
        "1.0-1",
        &actual,
        &expected,
        served.to_str().unwrap(),
    ] {
        assert!(msg.contains(part), "message lacks {part}: {msg}");
    }
    assert_eq!(snapshot(&host.dbpath.join("local")), local_before);
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.1-1"), ("libfoo", "1.1-1")])
    );
    assert_unlocked(host);

    // A plan says the same.
    let err = plan_only(host, &want, &inv(&["app", "libfoo"])).expect_err("mismatch");
    assert!(
        matches!(err, SystemError::ChecksumMismatch { .. }),
        "{err:?}"
    );

    // A pin on a sync-repo package is checked against the repo's %SHA256SUM%.
    let want = pinned(
        &["app"],
        10,
        &[("app", "1.1-1", Some("0".repeat(64)))],
        None,
    );
    // app 1.1-1 is installed: nothing to fetch, so nothing to check; a fresh host installs it.
    assert!(plan_ok(host, &want, &inv(&["app", "libfoo"])).is_empty());
    let fresh = w.host_dir("h2");
    let err = plan_only(&fresh, &want, &inv(&[])).expect_err("mismatch");
    let msg = err.to_string();
    assert!(
        matches!(err, SystemError::ChecksumMismatch { .. }),
        "{err:?}"
    );
    assert!(
        msg.contains("repository main") && msg.contains(&"0".repeat(64)),
        "{msg}"
    );
    assert_db_clean(host);
}

// ---------------------------------------------------------------------------------------------
// 7: prune

#[test]
fn prune_removes_only_what_pacfleet_installed() {
    let w = world(&[
        libfoo("1.0-1"),
        app("1.0-1"),
        SynthPackage::new("old", "1.0-1").depends("oldlib"),
        SynthPackage::new("oldlib", "1.0-1"),
        SynthPackage::new("byhand", "1.0-1"),
    ]);
    let host = &w.hosts[0];
    let (first, _) = reconcile_ok(host, &floating(&["app", "old"]), &inv(&[]));
    assert_eq!(first.count(Action::Install), 4);
    assert_eq!(host.explicit(), set(&["app", "old"]));
    host.pacman_ok(&["-S", "byhand"]);
    // What pacfleet installed (the state module records this after each reconcile).
    let inventory = inv(&["app", "libfoo", "old", "oldlib"]);

    // prune off: `old` stays, but is no longer recorded as wanted on purpose.
    let want = floating(&["app"]);
    let (changes, _) = reconcile_ok(host, &want, &inventory);
    assert_eq!(
        actions(&changes),
        [(Action::MarkDependency, "old", Some("1.0-1"), Some("1.0-1"))]
    );
    assert_eq!(change(&changes, "old").why, ["no longer desired"]);
    assert_eq!(host.explicit(), set(&["app", "byhand"]));
    assert_eq!(host.dependencies(), set(&["libfoo", "old", "oldlib"]));
    assert!(
        plan_ok(host, &want, &inventory).is_empty(),
        "prune off: converged"
    );

    // prune on: `old` goes, and so does its dependency, which is in the inventory and which
    // nothing else needs. The hand-installed package stays.
    let want = Resolved {
        prune: true,
        ..floating(&["app"])
    };
    let planned = plan_ok(host, &want, &inventory);
    assert_eq!(
        actions(&planned),
        [
            (Action::Remove, "old", Some("1.0-1"), None),
            (Action::Remove, "oldlib", Some("1.0-1"), None)
        ]
    );
    assert!(
        planned
            .changes
            .iter()
            .all(|c| c.why == ["no longer desired (prune)"] && c.size_delta < 0)
    );
    let (applied, _) = reconcile_ok(host, &want, &inventory);
    assert_eq!(applied, planned);
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.0-1"), ("byhand", "1.0-1"), ("libfoo", "1.0-1")])
    );
    assert_eq!(host.explicit(), set(&["app", "byhand"]));
    assert!(!host.path("usr/share/old").exists());
    assert!(plan_ok(host, &want, &inv(&["app", "libfoo"])).is_empty());
    assert_unlocked(host);
    assert_db_clean(host);
}

#[test]
fn prune_keeps_dependencies_outside_the_inventory_and_what_stays_needs() {
    let w = world(&[
        libfoo("1.0-1"),
        app("1.0-1"),
        SynthPackage::new("old", "1.0-1")
            .depends("theirlib")
            .depends("libfoo"),
        SynthPackage::new("theirlib", "1.0-1"),
    ]);
    let host = &w.hosts[0];
    // The user installed theirlib (as a dependency of something of theirs, say).
    reconcile_ok(host, &floating(&["app", "old"]), &inv(&[]));
    // libfoo is shared by app (staying) and old (going); theirlib is not pacfleet's.
    let inventory = inv(&["app", "libfoo", "old"]);
    let want = Resolved {
        prune: true,
        ..floating(&["app"])
    };
    let (changes, _) = reconcile_ok(host, &want, &inventory);
    assert_eq!(
        actions(&changes),
        [(Action::Remove, "old", Some("1.0-1"), None)]
    );
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.0-1"), ("libfoo", "1.0-1"), ("theirlib", "1.0-1")])
    );
    assert_db_clean(host);
}

#[test]
fn prune_removes_a_package_even_when_its_repo_has_an_update() {
    // Floating pool: the system upgrade and the removal are one transaction. A no-longer-
    // desired package with a newer version in the repo must go, not be upgraded.
    let mut w = world(&[
        libfoo("1.0-1"),
        app("1.0-1"),
        SynthPackage::new("old", "1.0-1"),
    ]);
    reconcile_ok(&w.hosts[0], &floating(&["app", "old"]), &inv(&[]));
    w.repo_mut()
        .add(&[SynthPackage::new("old", "2.0-1"), app("1.1-1")]);
    let host = &w.hosts[0];
    let inventory = inv(&["app", "libfoo", "old"]);
    let want = Resolved {
        prune: true,
        ..floating(&["app"])
    };

    let planned = plan_ok(host, &want, &inventory);
    assert_eq!(
        actions(&planned),
        [
            (Action::Upgrade, "app", Some("1.0-1"), Some("1.1-1")),
            (Action::Remove, "old", Some("1.0-1"), None)
        ]
    );
    let (applied, _) = reconcile_ok(host, &want, &inventory);
    assert_eq!(applied, planned);
    assert_eq!(
        host.installed(),
        versions(&[("app", "1.1-1"), ("libfoo", "1.0-1")])
    );
    assert_db_clean(host);
}

#[test]
fn removing_a_modified_config_file_owner_reports_pacsave() {
    let w = world(&[libfoo("1.0-1"), app("1.0-1")]);
    let host = &w.hosts[0];
    reconcile_ok(host, &floating(&["app"]), &inv(&[]));
    let conf = host.path("etc/app.conf");
    fs::write(&conf, "# mine\n").unwrap();

    let want = Resolved {
        prune: true,
        ..floating(&[])
    };
    let (changes, notices) = reconcile_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(changes.count(Action::Remove), 2, "{changes:#?}");
    assert!(host.installed().is_empty());
    let expected = format!("{}.pacsave", conf.display());
    assert!(
        Path::new(&expected).is_file(),
        "libalpm kept the edited file"
    );
    assert_eq!(fs::read_to_string(&expected).unwrap(), "# mine\n");
    assert_eq!(notices.pacsave.len(), 1, "{notices:?}");
    assert!(
        [expected.as_str(), "/etc/app.conf.pacsave"].contains(&notices.pacsave[0].as_str()),
        "Notices.pacsave is {:?}; libalpm wrote {expected}",
        notices.pacsave
    );
    assert_db_clean(host);
}

// ---------------------------------------------------------------------------------------------
// 8, 10: errors before anything changes

#[test]
fn unknown_package_names_package_origin_and_repos() {
    let w = world(&[
        libfoo("1.0-1"),
        app("1.0-1"),
        SynthPackage::new("tool", "1-1"),
    ]);
    let host = &w.hosts[0];
    reconcile_ok(host, &floating(&["app"]), &inv(&[]));
    let mut want = floating(&["app", "doesnotexist"]);
    want.explicit.insert(
        "doesnotexist".into(),
        origins(&[Origin::Set("base".into()), Origin::Host("h1".into())]),
    );

    let local_before = snapshot(&host.dbpath.join("local"));
    let err = match reconcile(host, &want, &inv(&["app", "libfoo"])) {
        Err(ApplyError::System(e)) => e,
        other => panic!("expected UnknownPackage, got {other:?}"),
    };
    assert!(matches!(err, SystemError::UnknownPackage { .. }), "{err:?}");
    let msg = err.to_string();
    for part in ["`doesnotexist`", "set base", "host h1", "(main)"] {
        assert!(msg.contains(part), "message lacks {part}: {msg}");
    }
    assert_eq!(
        snapshot(&host.dbpath.join("local")),
        local_before,
        "host unchanged"
    );
    assert_unlocked(host);

    let err = plan_only(host, &want, &inv(&["app", "libfoo"])).expect_err("unknown");
    assert!(matches!(err, SystemError::UnknownPackage { .. }), "{err:?}");

    // Asked for from a repository the host does not have (though `main` has it).
    let mut want = floating(&["app", "tool"]);
    want.explicit.get_mut("tool").unwrap().repo = Some("core".into());
    let err = plan_only(host, &want, &inv(&["app", "libfoo"])).expect_err("wrong repo");
    assert!(matches!(err, SystemError::UnknownPackage { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("`tool`") && msg.contains("from `core`; this host has main"),
        "{msg}"
    );
    // Without the repo constraint it is found.
    let planned = plan_ok(host, &floating(&["app", "tool"]), &inv(&["app", "libfoo"]));
    assert_eq!(
        actions(&planned),
        [(Action::Install, "tool", None, Some("1-1"))]
    );
    assert_db_clean(host);
}

#[test]
fn failed_prepare_changes_nothing() {
    let w = world(&[
        libfoo("1.0-1"),
        app("1.0-1"),
        SynthPackage::new("broken", "1-1").depends("missinglib>=2"),
    ]);
    let host = &w.hosts[0];
    reconcile_ok(host, &floating(&["app"]), &inv(&[]));
    let local_before = snapshot(&host.dbpath.join("local"));

    let want = floating(&["app", "broken"]);
    let err = match reconcile(host, &want, &inv(&["app", "libfoo"])) {
        Err(ApplyError::System(e)) => e,
        other => panic!("expected a prepare error, got {other:?}"),
    };
    assert!(matches!(err, SystemError::Prepare { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains("`broken` requires `missinglib>=2`"), "{msg}");
    assert!(msg.contains("nothing was changed"), "{msg}");
    assert_eq!(snapshot(&host.dbpath.join("local")), local_before);
    assert_unlocked(host);
    assert!(!host.path("usr/share/broken").exists());

    let err = plan_only(host, &want, &inv(&["app", "libfoo"])).expect_err("unsatisfiable");
    assert!(err.to_string().contains("missinglib"), "{err}");
    assert_db_clean(host);
}

// ---------------------------------------------------------------------------------------------
// 9: pacman's lock

#[test]
fn waiting_for_a_held_lock_times_out_and_never_deletes_it() {
    let tmp = tempdir();
    let lock = tmp.path().join("db.lck");
    fs::write(&lock, "").unwrap();
    let start = Instant::now();
    let err = apply::wait_for_lock(&lock, Duration::from_secs(1)).expect_err("locked");
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_secs(1) && waited < Duration::from_secs(3),
        "{waited:?}"
    );
    assert!(
        matches!(err, SystemError::Locked { waited_secs: 1, .. }),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(msg.contains("stayed locked for 1s"), "{msg}");
    assert!(msg.contains("pacfleet never deletes it"), "{msg}");
    assert!(msg.contains(lock.to_str().unwrap()), "{msg}");
    assert!(lock.exists(), "the lock is never deleted");
}

#[test]
fn waiting_for_a_lock_ends_when_it_is_released() {
    let tmp = tempdir();
    let lock = tmp.path().join("db.lck");
    fs::write(&lock, "").unwrap();
    let remover = {
        let lock = lock.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            fs::remove_file(&lock).unwrap();
        })
    };
    let start = Instant::now();
    apply::wait_for_lock(&lock, Duration::from_secs(5)).expect("lock released");
    let waited = start.elapsed();
    remover.join().unwrap();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_secs(2),
        "{waited:?}"
    );

    // A free lock: no wait at all.
    let start = Instant::now();
    apply::wait_for_lock(&lock, Duration::from_secs(5)).unwrap();
    assert!(start.elapsed() < Duration::from_millis(100));
}

#[test]
fn held_lock_is_reported_as_locked_by_prepare_and_refresh() {
    let w = world(&[libfoo("1.0-1"), app("1.0-1")]);
    let host = &w.hosts[0];
    // Sync databases present, so prepare can run without a refresh.
    host.pacman_ok(&["-Sy"]);
    let lock = host.dbpath.join("db.lck");
    fs::write(&lock, "").unwrap();
    let want = floating(&["app"]);

    // prepare: trans_init fails with libalpm's HandleLock, reported as Locked.
    let _one_at_a_time = one_libalpm_at_a_time();
    let mut sys = System::open(&host_paths(host), Mode::Apply).unwrap();
    let intent = plan::intent(&want, &sys.installed(), &inv(&[]));
    let err = sys.prepare(&intent, &want).expect_err("locked");
    assert!(matches!(err, SystemError::Locked { .. }), "{err:?}");
    assert!(
        err.to_string().contains("pacfleet never deletes it"),
        "{err}"
    );

    // refresh: libalpm's db update takes the same lock. The lock (not the mirror or the
    // network) is the problem, and the error should say so.
    let err = sys.refresh().expect_err("locked");
    assert!(lock.exists());
    assert!(
        matches!(err, SystemError::Locked { .. }),
        "a held lock during refresh is reported as a mirror/network problem: {err}"
    );
}

// ---------------------------------------------------------------------------------------------
// 11: config files

#[test]
fn modified_config_is_predicted_and_reported_as_pacnew() {
    let mut w = world(&[libfoo("1.0-1"), app("1.0-1")]);
    let want = floating(&["app"]);
    reconcile_ok(&w.hosts[0], &want, &inv(&[]));
    let conf = w.hosts[0].path("etc/app.conf");
    fs::write(&conf, "# edited by the admin\nverbose = yes\n").unwrap();
    w.repo_mut().add(&[app("1.1-1")]);
    let host = &w.hosts[0];

    let planned = plan_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(
        actions(&planned),
        [(Action::Upgrade, "app", Some("1.0-1"), Some("1.1-1"))]
    );
    assert_eq!(planned.pacnew, ["/etc/app.conf"]);

    let (applied, notices) = reconcile_ok(host, &want, &inv(&["app", "libfoo"]));
    assert_eq!(applied.pacnew, ["/etc/app.conf"]);
    // libalpm's event names the file with the target root prefixed (its real location: for
    // root `/`, `/etc/app.conf`). Either that or the root-relative `/etc/app.conf.pacnew` is
    // a useful notice; anything else (e.g. `//tmp/…/etc/app.conf.pacnew`) is not.
    let expected = format!("{}.pacnew", conf.display());
    assert_eq!(notices.pacnew.len(), 1, "{notices:?}");
    assert!(
        [expected.as_str(), "/etc/app.conf.pacnew"].contains(&notices.pacnew[0].as_str()),
        "Notices.pacnew is {:?}; libalpm wrote {expected}",
        notices.pacnew
    );
    assert!(Path::new(&expected).is_file());
    assert_eq!(
        fs::read_to_string(&conf).unwrap(),
        "# edited by the admin\nverbose = yes\n",
        "the admin's file is kept"
    );
    assert_eq!(
        fs::read_to_string(&expected).unwrap(),
        "# app 1.1-1\nverbose = no\n"
    );
    assert!(notices.pacsave.is_empty());
    assert_eq!(host.installed()["app"], "1.1-1");
    assert_db_clean(host);

    // Unmodified config (matching the installed package's hash) predicts nothing.
    fs::write(&conf, "# app 1.1-1\nverbose = no\n").unwrap();
    w.repo_mut().add(&[app("1.2-1")]);
    let planned = plan_ok(&w.hosts[0], &want, &inv(&["app", "libfoo"]));
    assert!(planned.pacnew.is_empty(), "{:?}", planned.pacnew);
}

/// `System::installed` computes "required by" and unsatisfied dependencies with indexes
/// instead of libalpm's quadratic scans; it must agree with libalpm on every kind of
/// dependency: plain, versioned (with and without pkgrel, every operator), met by a versioned
/// or unversioned provision, met twice, and not met at all (after `pacman -Rdd`).
#[test]
fn installed_dependency_graph_agrees_with_libalpm() {
    let pkgs = [
        SynthPackage::new("base", "2.0-3"),
        SynthPackage::new("libv", "1:1.5-2"),
        SynthPackage::new("prov-any", "1-1").provides("virt"),
        SynthPackage::new("prov-ver", "1-1").provides("virtv=3.1"),
        SynthPackage::new("both", "4-1").provides("base=2.0"),
        SynthPackage::new("gone", "1-1"),
        SynthPackage::new("a", "1-1")
            .depends("base")
            .depends("libv>=1:1.0")
            .depends("virt")
            .depends("gone"),
        SynthPackage::new("b", "1-1")
            .depends("base=2.0")
            .depends("libv<1:2")
            .depends("virtv>=3"),
        SynthPackage::new("c", "1-1")
            .depends("base>2.0-3")
            .depends("libv=1:1.5-2")
            .depends("virtv<3")
            .depends("virt>=1"),
        SynthPackage::new("d", "1-1")
            .depends("base<=2.0-3")
            .depends("libv>1:1.5")
            .depends("gone=1-1"),
    ];
    let w = world(&pkgs);
    let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
    let mut args = vec!["-Sy", "--nodeps", "--nodeps"];
    args.extend(&names);
    w.hosts[0].pacman_ok(&args);
    w.hosts[0].pacman_ok(&["-Rdd", "gone"]);

    let _one_at_a_time = one_libalpm_at_a_time();
    let sys = System::open(&host_paths(&w.hosts[0]), Mode::Plan).expect("open");
    let ours = sys.installed();
    let alpm = sys.alpm();
    let local: Vec<&alpm::Pkg> = alpm.localdb().pkgs().iter().map(|p| &**p).collect();
    let mut alpm_missing: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in alpm
        .check_deps(
            local.iter().copied(),
            std::iter::empty::<&alpm::Pkg>(),
            local.iter().copied(),
            false,
        )
        .iter()
    {
        alpm_missing
            .entry(m.target().to_owned())
            .or_default()
            .insert(m.depend().to_string());
    }
    assert_eq!(ours.len(), local.len());
    for p in &local {
        let mine = &ours[p.name()];
        let theirs: Vec<String> = p.required_by().into_iter().collect();
        assert_eq!(mine.required_by, theirs, "required by of {}", p.name());
        let mine_missing: BTreeSet<String> = mine.missing.iter().cloned().collect();
        let theirs_missing: BTreeSet<String> = alpm_missing
            .get(p.name())
            .map(|s| {
                s.iter()
                    .map(|d| d.split(['<', '>', '=']).next().unwrap_or(d).to_owned())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(mine_missing, theirs_missing, "missing of {}", p.name());
    }
    // The cases are not vacuous: each kind shows up.
    assert_eq!(ours["base"].required_by, ["a", "b", "d"]);
    assert_eq!(ours["both"].required_by, ["a", "b", "d"]);
    assert_eq!(ours["prov-any"].required_by, ["a"]);
    assert_eq!(ours["prov-ver"].required_by, ["b"]);
    assert_eq!(ours["libv"].required_by, ["a", "b", "c"]);
    assert_eq!(ours["a"].missing, ["gone"]);
    let c: BTreeSet<&str> = ours["c"].missing.iter().map(String::as_str).collect();
    assert_eq!(c, BTreeSet::from(["base", "virt", "virtv"]));
    let d: BTreeSet<&str> = ours["d"].missing.iter().map(String::as_str).collect();
    assert_eq!(d, BTreeSet::from(["gone", "libv"]));
}

/// The transaction guard: a prepared Apply transaction holds pacman's lock; whatever path
/// drops the handle (an error returning early, here simply the end of the scope) releases the
/// transaction and the lock — `System`'s own Drop does, and libalpm's handle release beneath it
/// would too — and a second transaction can start.
#[test]
fn dropping_a_prepared_handle_releases_pacmans_lock() {
    let w = world(&[libfoo("1.1-1"), app("1.1-1")]);
    let lock = w.hosts[0].dbpath.join("db.lck");
    {
        let _one_at_a_time = one_libalpm_at_a_time();
        let mut sys = System::open(&host_paths(&w.hosts[0]), Mode::Apply).expect("open");
        sys.refresh().expect("refresh");
        let resolved = floating(&["app"]);
        let intent = plan::intent(&resolved, &sys.installed(), &inv(&[]));
        let changes = sys.prepare(&intent, &resolved).expect("prepare");
        assert!(!changes.is_empty());
        assert!(lock.exists(), "a prepared Apply transaction holds the lock");
    }
    assert!(!lock.exists(), "dropping the handle released the lock");
    let (changes, _) = reconcile_ok(&w.hosts[0], &floating(&["app"]), &inv(&[]));
    assert!(!changes.is_empty(), "a new transaction starts and commits");
    assert!(!lock.exists());
}
