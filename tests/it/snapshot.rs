//! Archive snapshots end to end: an Arch-Linux-Archive-layout archive under a temporary
//! directory with two dates whose repositories hold different versions of the same packages,
//! and a host whose pacman.conf mirrors hold yet other versions. A pool's (or its generation's)
//! `snapshot:` makes the host plan and install against that date's repositories; moving the
//! date, or dropping it, moves the host — across libalpm's If-Modified-Since, which would
//! otherwise keep the databases of the other servers (the forced refresh). Also `validate`'s
//! errors, `resolve`, and `fleetctl diff` listing what a snapshot bump changes.
//!
//! The mirrors and the archive are served over HTTP on loopback ([`HttpFiles`]: Last-Modified
//! and If-Modified-Since, as the Arch Linux Archive and mirrors do; curl's `file://` ignores
//! If-Modified-Since, so it cannot show the problem). The database files' mtimes are set so
//! that every switch needs the forced refresh: D1 (2021-01-01) is older than the mirror
//! (2021-06-01), which is older than D2 (2021-12-01). Going mirror → D1 or D2 → mirror without
//! forcing keeps the wrong database.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use pacfleet_support::synth::SynthPackage;
use serde_json::Value;

use crate::harness::{FleetRepo, HostDir, PkgRepo, World, fleetctl, run, tempdir};

const D1: &str = "2025-03-01";
const D2: &str = "2025-04-05";
const D1_MTIME: u64 = 1_609_459_200; // 2021-01-01
const MIRROR_MTIME: u64 = 1_622_505_600; // 2021-06-01
const D2_MTIME: u64 = 1_638_316_800; // 2021-12-01

/// One request an [`HttpFiles`] answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Request {
    path: String,
    /// Whether it carried If-Modified-Since (libalpm sends it unless the refresh is forced).
    conditional: bool,
    status: u16,
}

/// A static file server on loopback with just enough HTTP/1.1 for libalpm's curl: GET of a
/// file under `root`, `Last-Modified` from its mtime, `304 Not Modified` when
/// `If-Modified-Since` is not older than it, 404 otherwise. Every request is logged. Stopped
/// on drop.
struct HttpFiles {
    port: u16,
    log: Arc<Mutex<Vec<Request>>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpFiles {
    fn start(root: &Path) -> HttpFiles {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let log: Arc<Mutex<Vec<Request>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::spawn({
            let (root, log, stop) = (root.to_path_buf(), Arc::clone(&log), Arc::clone(&stop));
            move || {
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        break;
                    }
                    if let Ok(conn) = conn {
                        let _ = Self::answer(&root, conn, &log);
                    }
                }
            }
        });
        HttpFiles {
            port,
            log,
            stop,
            thread: Some(thread),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    fn answer(root: &Path, conn: TcpStream, log: &Mutex<Vec<Request>>) -> std::io::Result<()> {
        let mut reader = BufReader::new(conn.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let path = line.split(' ').nth(1).unwrap_or("/").to_owned();
        let mut since = None;
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h)? == 0 || h.trim().is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':')
                && k.eq_ignore_ascii_case("if-modified-since")
            {
                since = chrono::DateTime::parse_from_rfc2822(v.trim()).ok();
            }
        }
        let file = root.join(path.trim_start_matches('/'));
        let meta = fs::metadata(&file)
            .ok()
            .filter(|m| m.is_file() && !path.contains(".."));
        let mut conn = conn;
        let status = match &meta {
            None => {
                conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )?;
                404
            }
            Some(m) => {
                let mtime: chrono::DateTime<chrono::Utc> = m.modified()?.into();
                if since.is_some_and(|s| mtime.timestamp() <= s.timestamp()) {
                    conn.write_all(b"HTTP/1.1 304 Not Modified\r\nConnection: close\r\n\r\n")?;
                    304
                } else {
                    let body = fs::read(&file)?;
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nLast-Modified: {}\r\nConnection: close\r\n\r\n",
                        body.len(),
                        mtime.format("%a, %d %b %Y %H:%M:%S GMT")
                    );
                    conn.write_all(head.as_bytes())?;
                    conn.write_all(&body)?;
                    200
                }
            }
        };
        if let Ok(mut l) = log.lock() {
            l.push(Request {
                path,
                conditional: since.is_some(),
                status,
            });
        }
        Ok(())
    }

    /// The requests for database files since the last call, as `<where> <repo> <status>`
    /// (`mirror core 200`, `2025-03-01 extra 304`), with ` if-modified-since` when they
    /// carried that header — i.e. when the refresh was not forced and a file was on disk.
    fn db_requests(&self) -> Vec<String> {
        let mut log = self.log.lock().expect("log");
        let out = log
            .iter()
            .filter_map(|r| {
                let file = r.path.rsplit('/').next()?.strip_suffix(".db")?;
                let from = match r.path.strip_prefix("/archive/repos/") {
                    Some(rest) => rest.get(..10)?.replace('/', "-"),
                    None => "mirror".to_owned(),
                };
                let ims = if r.conditional {
                    " if-modified-since"
                } else {
                    ""
                };
                Some(format!("{from} {file} {}{ims}", r.status))
            })
            .collect();
        log.clear();
        out
    }
}

impl Drop for HttpFiles {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Sets the mtime of `repo`'s database file (what libalpm downloads and compares).
fn age(repo: &PkgRepo, unix: u64) {
    let db = repo.dir.join(format!("{}.db", repo.name));
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(unix);
    fs::File::options()
        .write(true)
        .open(&db)
        .and_then(|f| f.set_modified(t))
        .unwrap_or_else(|e| panic!("set the mtime of {}: {e}", db.display()));
}

/// The packages of the world at `version`: `app` (needs `libfoo`) in core, `tool` in extra.
fn packages(version: &str) -> (Vec<SynthPackage>, Vec<SynthPackage>) {
    (
        vec![
            SynthPackage::new("app", version).depends("libfoo"),
            SynthPackage::new("libfoo", version),
        ],
        vec![SynthPackage::new("tool", version)],
    )
}

/// `<archive>/repos/YYYY/MM/DD/<repo>/os/<arch>` with core and extra at `version`.
fn dated(archive: &Path, date: &str, version: &str, mtime: u64) -> Vec<PkgRepo> {
    let arch = std::env::consts::ARCH;
    let (core, extra) = packages(version);
    let day = date.replace('-', "/");
    [("core", core), ("extra", extra)]
        .into_iter()
        .map(|(name, pkgs)| {
            let dir = archive.join(format!("repos/{day}/{name}/os/{arch}"));
            let mut repo = PkgRepo::new_in(&dir, name);
            repo.add(&pkgs);
            age(&repo, mtime);
            repo
        })
        .collect()
}

/// The shared world, served over HTTP: its repositories are the host's mirrors (core and
/// extra at version 3.0-1), beside an archive with two dates.
struct Snapshots {
    // Dropped first: the server, then the directories it serves.
    http: HttpFiles,
    world: World,
    /// The archive's URL (served over HTTP).
    archive_url: String,
}

fn fleet_yaml(archive: &str) -> String {
    format!("kind: Fleet\nname: acme\narchive: {archive}\n")
}

const BASE: &str = "kind: PackageSet\nname: base\npackages: [app, tool]\n";

/// A floating pool `ws`, with `snapshot:` when given.
fn ws_pool(snapshot: Option<&str>) -> String {
    let snap = snapshot.map_or_else(String::new, |d| format!("snapshot: {d}\n"));
    format!("kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\n{snap}prune: true\n")
}

fn world() -> Snapshots {
    let tmp = tempdir();
    let http = HttpFiles::start(tmp.path());
    dated(&tmp.path().join("archive"), D1, "1.0-1", D1_MTIME);
    dated(&tmp.path().join("archive"), D2, "2.0-1", D2_MTIME);
    let archive_url = http.url("archive");
    let (core, extra) = packages("3.0-1");
    let mut world = World::builder()
        .tmp(tmp)
        .repo("core", &core)
        .repo("extra", &extra)
        .fleet_yaml(&fleet_yaml(&archive_url))
        .desired(&["app", "tool"])
        .build();
    for repo in world.repos_mut() {
        age(repo, MIRROR_MTIME);
        repo.url = http.url(&format!("repos/{}", repo.name));
    }
    Snapshots {
        http,
        world,
        archive_url,
    }
}

fn at(version: &str) -> Vec<String> {
    ["app", "libfoo", "tool"]
        .iter()
        .map(|n| format!("{n} {version}"))
        .collect()
}

/// `(action, name, old, new)` of every change in a pass report.
fn changes(report: &Value) -> Vec<String> {
    report["changeset"]["changes"]
        .as_array()
        .unwrap_or_else(|| panic!("no changeset in {report}"))
        .iter()
        .map(|c| {
            format!(
                "{} {} {} → {}",
                c["action"].as_str().unwrap_or("?"),
                c["name"].as_str().unwrap_or("?"),
                c["old"].as_str().unwrap_or("-"),
                c["new"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

fn json(what: &str, (code, out, err): (i32, String, String)) -> (i32, Value) {
    let v = serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("{what}: not JSON ({e}), exit {code}:\n{out}\n{err}"));
    (code, v)
}

/// `fleetctl plan --json`, then `fleetctl reconcile --json`: the plan must be exactly what
/// the reconcile then does. Returns the changes.
fn plan_then_reconcile(cfg: &Path) -> Vec<String> {
    let (code, plan) = json(
        "plan",
        run(fleetctl().args(["plan", "--json", "--config"]).arg(cfg)),
    );
    let planned = changes(&plan);
    assert_eq!(code, i32::from(!planned.is_empty()), "{plan}");
    let (code, done) = json(
        "reconcile",
        run(fleetctl()
            .args(["reconcile", "--json", "--config"])
            .arg(cfg)),
    );
    assert_eq!(code, 0, "{done}");
    assert_eq!(changes(&done), planned, "plan and reconcile differ");
    planned
}

fn source_record(host: &HostDir) -> String {
    fs::read_to_string(host.dbpath.join("sync/.pacfleet-source")).unwrap_or_default()
}

/// What the host's own pacman sees in its sync database for `name` (`pacman -Si`).
fn sync_version(host: &HostDir, name: &str) -> String {
    let out = host.pacman_ok(&["-Si", name]);
    out.lines()
        .find_map(|l| l.strip_prefix("Version"))
        .map(|v| v.trim_start_matches([' ', ':']).to_owned())
        .unwrap_or_default()
}

#[test]
fn a_floating_pool_follows_its_snapshot_and_back_to_the_mirrors() {
    if !crate::harness::is_root() {
        crate::harness::skip("needs root");
        return;
    }
    let w = world();
    let (host, cfg) = w.world.host("ws-01");

    // No snapshot: the mirrors' versions.
    assert_eq!(
        plan_then_reconcile(&cfg),
        [
            "install app - → 3.0-1",
            "install libfoo - → 3.0-1",
            "install tool - → 3.0-1"
        ]
    );
    assert_eq!(host.versions(), at("3.0-1"));
    let record = source_record(&host);
    assert!(record.contains(&w.world.repos()[0].url), "{record}");
    // Twice each (the plan's private copy, then the pass); nothing on disk yet.
    assert_eq!(
        w.http.db_requests(),
        [
            "mirror core 200",
            "mirror extra 200",
            "mirror core 200",
            "mirror extra 200"
        ]
    );

    // snapshot: D1 — older than the mirror's databases, so only a forced refresh gets its
    // databases, and the floating pool goes back to the snapshot's versions (pacman -Syuu).
    w.world
        .fleet()
        .commit("ws: snapshot D1", &[("pools/ws.yaml", &ws_pool(Some(D1)))]);
    let (code, out, err) = run(fleetctl()
        .args(["resolve", "--host", "ws-01"])
        .arg(&w.world.fleet().dir));
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains(&format!(
            "floating  full system upgrade against the archive's repositories of {D1}"
        )) && out.contains(&format!(
            "snapshot  {D1}: every repository from {}/repos/2025/03/01/$repo/os/$arch",
            w.archive_url
        )),
        "{out}"
    );
    assert_eq!(
        plan_then_reconcile(&cfg),
        [
            "downgrade app 3.0-1 → 1.0-1",
            "downgrade libfoo 3.0-1 → 1.0-1",
            "downgrade tool 3.0-1 → 1.0-1"
        ]
    );
    assert_eq!(host.versions(), at("1.0-1"));
    assert!(source_record(&host).contains("repos/2025/03/01/core/os"));
    assert!(source_record(&host).contains("repos/2025/03/01/extra/os"));
    // Forced: no If-Modified-Since (with it, D1 would be "not modified" since the mirror's).
    let d1_forced = [
        "2025-03-01 core 200",
        "2025-03-01 extra 200",
        "2025-03-01 core 200",
        "2025-03-01 extra 200",
    ];
    assert_eq!(w.http.db_requests(), d1_forced);
    // Converged at D1: nothing more to do, and nothing forced any more (the plan's copy
    // keeps the files' mtimes, so it is recognised too).
    assert!(plan_then_reconcile(&cfg).is_empty());
    let d1_unchanged = [
        "2025-03-01 core 304 if-modified-since",
        "2025-03-01 extra 304 if-modified-since",
        "2025-03-01 core 304 if-modified-since",
        "2025-03-01 extra 304 if-modified-since",
    ];
    assert_eq!(w.http.db_requests(), d1_unchanged);

    // Someone runs `pacman -Syy` on the host: its databases are the mirrors' again. The next
    // pass notices (the files are not the ones it recorded) and gets D1's back.
    host.pacman_ok(&["-Syy"]);
    assert_eq!(sync_version(&host, "app"), "3.0-1");
    assert_eq!(
        w.http.db_requests(),
        ["mirror core 200", "mirror extra 200"]
    );
    assert!(plan_then_reconcile(&cfg).is_empty());
    assert_eq!(w.http.db_requests(), d1_forced);
    assert_eq!(sync_version(&host, "app"), "1.0-1");
    assert_eq!(host.versions(), at("1.0-1"));

    // Bump to D2.
    w.world
        .fleet()
        .commit("ws: snapshot D2", &[("pools/ws.yaml", &ws_pool(Some(D2)))]);
    assert_eq!(
        plan_then_reconcile(&cfg),
        [
            "upgrade app 1.0-1 → 2.0-1",
            "upgrade libfoo 1.0-1 → 2.0-1",
            "upgrade tool 1.0-1 → 2.0-1"
        ]
    );
    assert_eq!(host.versions(), at("2.0-1"));

    w.http.db_requests();

    // libalpm alone would now keep D2's databases against the (older) mirror: pacman -Sy
    // from pacman.conf's servers is told "not modified".
    host.pacman_ok(&["-Sy"]);
    assert_eq!(
        w.http.db_requests(),
        [
            "mirror core 304 if-modified-since",
            "mirror extra 304 if-modified-since"
        ]
    );
    assert_eq!(sync_version(&host, "app"), "2.0-1");

    // Drop the snapshot: back to the mirrors (a forced refresh), upgrading to their versions.
    w.world
        .fleet()
        .commit("ws: no snapshot", &[("pools/ws.yaml", &ws_pool(None))]);
    assert_eq!(
        plan_then_reconcile(&cfg),
        [
            "upgrade app 2.0-1 → 3.0-1",
            "upgrade libfoo 2.0-1 → 3.0-1",
            "upgrade tool 2.0-1 → 3.0-1"
        ]
    );
    assert_eq!(host.versions(), at("3.0-1"));
    assert!(!source_record(&host).contains("repos/2025"));
    assert_eq!(
        w.http.db_requests(),
        [
            "mirror core 200",
            "mirror extra 200",
            "mirror core 200",
            "mirror extra 200"
        ]
    );
    assert!(plan_then_reconcile(&cfg).is_empty());
    let check = host.pacman(&["-Dk"]);
    assert!(check.status.success(), "{check:?}");
}

#[test]
fn a_generation_with_a_snapshot_takes_its_pins_from_that_dates_repositories() {
    if !crate::harness::is_root() {
        crate::harness::skip("needs root");
        return;
    }
    let w = world();
    let (host, cfg) = w.world.host("ws-01");
    assert_eq!(plan_then_reconcile(&cfg).len(), 3);
    assert_eq!(host.versions(), at("3.0-1"));

    // Pinned to generation 1 of D1: versions that are in no mirror, no cache and not in the
    // archive's packages/ tree — only in D1's repositories.
    let generation = |n: u32, date: &str, v: &str| {
        format!(
            "kind: Generation\npool: ws\nnumber: {n}\nsnapshot: {date}\npackages:\n  app: {{version: {v}}}\n  libfoo: {{version: {v}}}\n  tool: {{version: {v}}}\n"
        )
    };
    let pinned = |n: u32| ws_pool(None).replace("prune:", &format!("generation: {n}\nprune:"));
    w.world.fleet().commit(
        "ws: generation 1",
        &[
            ("generations/ws/1.yaml", &generation(1, D1, "1.0-1")),
            ("pools/ws.yaml", &pinned(1)),
        ],
    );
    let (code, out, _) = run(fleetctl()
        .args(["resolve", "--host", "ws-01"])
        .arg(&w.world.fleet().dir));
    assert_eq!(code, 0);
    assert!(
        out.contains("pinned    generation 1 (3 packages locked)")
            && out.contains(&format!("snapshot  {D1}: every repository from")),
        "{out}"
    );
    let (_, plan) = json(
        "plan",
        run(fleetctl().args(["plan", "--json", "--config"]).arg(&cfg)),
    );
    let sources: Vec<&str> = plan["changeset"]["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["source"].as_str())
        .collect();
    assert_eq!(sources, ["repo core", "repo core", "repo extra"], "{plan}");
    assert_eq!(
        plan_then_reconcile(&cfg),
        [
            "downgrade app 3.0-1 → 1.0-1",
            "downgrade libfoo 3.0-1 → 1.0-1",
            "downgrade tool 3.0-1 → 1.0-1"
        ]
    );
    assert_eq!(host.versions(), at("1.0-1"));

    // Generation 2 of D2.
    w.world.fleet().commit(
        "ws: generation 2",
        &[
            ("generations/ws/2.yaml", &generation(2, D2, "2.0-1")),
            ("pools/ws.yaml", &pinned(2)),
        ],
    );
    assert_eq!(plan_then_reconcile(&cfg).len(), 3);
    assert_eq!(host.versions(), at("2.0-1"));
    assert!(source_record(&host).contains("repos/2025/04/05/core/os"));

    // A pool snapshot beside the generation must agree with it: a contradicting one is an
    // invalid commit, and the host changes nothing.
    let contradicting = pinned(2).replace("prune:", &format!("snapshot: {D1}\nprune:"));
    w.world.fleet().commit(
        "ws: contradicting snapshot",
        &[("pools/ws.yaml", &contradicting)],
    );
    let (code, out, err) = run(fleetctl().args(["reconcile", "--config"]).arg(&cfg));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("is invalid; nothing was changed")
            && err.contains(&format!("pool `ws` says `snapshot: {D1}`, but its generation 2 (generations/ws/2.yaml) says `snapshot: {D2}`")),
        "{err}"
    );
    assert_eq!(host.versions(), at("2.0-1"));
}

#[test]
fn validate_rejects_bad_dates_and_snapshots_without_an_archive() {
    let tmp = tempdir();
    let dir = tmp.path();
    let write = |files: &[(&str, &str)]| {
        for (p, t) in files {
            let p = dir.join(p);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, t).unwrap();
        }
    };
    write(&[
        (
            "fleet.yaml",
            "kind: Fleet\nname: acme\narchive: file:///srv/ala\n",
        ),
        ("packages/base.yaml", BASE),
        ("pools/ws.yaml", &ws_pool(Some("2025-02-29"))),
    ]);
    // Problems go to stderr, as `file:line:column: message` lines.
    let validate = || {
        let (code, out, err) = run(fleetctl().arg("validate").arg(dir));
        (code, format!("{out}{err}"), String::new())
    };
    let (code, out, err) = validate();
    assert_eq!(code, 2, "{out}{err}");
    assert!(
        out.contains("pools/ws.yaml:5:11: snapshot `2025-02-29` is not a day of the calendar; write the archive day as YYYY-MM-DD (zero-padded), e.g. 2025-03-01"),
        "{out}{err}"
    );
    write(&[("pools/ws.yaml", &ws_pool(Some("2025-3-1")))]);
    let (code, out, _) = validate();
    assert_eq!(code, 2);
    assert!(
        out.contains("pools/ws.yaml:5:11: snapshot `2025-3-1` has the wrong form"),
        "{out}"
    );
    // A good date, but no archive to take it from.
    write(&[
        ("fleet.yaml", "kind: Fleet\nname: acme\n"),
        ("pools/ws.yaml", &ws_pool(Some(D1))),
    ]);
    let (code, out, _) = validate();
    assert_eq!(code, 2);
    assert!(
        out.contains("pools/ws.yaml:5:11: snapshot 2025-03-01 needs the fleet's archive, but fleet.yaml has no `archive:`; add `archive: https://archive.archlinux.org` (or file:///path/to/a/mirror of it) to fleet.yaml, or remove `snapshot:`"),
        "{out}"
    );
    write(&[(
        "fleet.yaml",
        "kind: Fleet\nname: acme\narchive: file:///srv/ala\n",
    )]);
    let (code, out, err) = validate();
    assert_eq!(code, 0, "{out}{err}");
}

/// A fleet repository (unsigned commits are enough for `diff`) whose pool `ws` moves from
/// `from` to `to`.
fn bump(tmp: &Path, archive: &str, from: &str, to: &str) -> FleetRepo {
    let fleet = FleetRepo::new(tmp);
    let yaml = format!("kind: Fleet\nname: acme\narchive: {archive}\n");
    let base =
        "kind: PackageSet\nname: base\npackages: [app, tool, {name: gone, repo: extra}, nowhere]\n";
    fleet.commit_unsigned(
        "D1",
        &[
            ("fleet.yaml", &yaml),
            ("packages/base.yaml", base),
            ("pools/ws.yaml", &ws_pool(Some(from))),
        ],
    );
    fleet.commit_unsigned("D2", &[("pools/ws.yaml", &ws_pool(Some(to)))]);
    fleet
}

fn diff(fleet: &FleetRepo, format: &str) -> (i32, String, String) {
    run(fleetctl()
        .args(["diff", "HEAD~1..HEAD", "--format", format])
        .current_dir(&fleet.dir))
}

#[test]
fn diff_of_a_snapshot_bump_lists_the_versions_of_both_dates() {
    let tmp = tempdir();
    let archive = tmp.path().join("archive");
    let repo = |date: &str, name: &str, pkgs: &[SynthPackage]| {
        // `fleetctl diff` reads x86_64 unless told `--arch`.
        let dir = archive.join(format!("repos/{}/{name}/os/x86_64", date.replace('-', "/")));
        PkgRepo::new_in(&dir, name).add(pkgs);
    };
    // `gone` is in D1's extra only; libfoo is in both but nobody asks for it (not listed).
    let (core1, _) = packages("1.0-1");
    let (core2, _) = packages("2.0-1");
    repo(D1, "core", &core1);
    repo(
        D1,
        "extra",
        &[
            SynthPackage::new("tool", "1.0-1"),
            SynthPackage::new("gone", "0.9-1"),
        ],
    );
    repo(D2, "core", &core2);
    repo(D2, "extra", &[SynthPackage::new("tool", "2.0-1")]);
    let fleet = bump(tmp.path(), &format!("file://{}", archive.display()), D1, D2);

    let (code, out, err) = diff(&fleet, "text");
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(err.is_empty(), "{err}");
    assert!(out.contains("snapshot  2025-03-01 → 2025-04-05"), "{out}");
    assert!(
        out.contains(&format!(
            "  repositories of the archive on each date (file://{}, core, extra, x86_64):",
            archive.display(),
        )),
        "{out}"
    );
    let rows: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("  ↑") || l.starts_with("  -") || l.starts_with("  ?"))
        .collect();
    assert_eq!(
        rows,
        [
            "  - gone  0.9-1 → (none)  set base",
            "  ↑ app   1.0-1 → 2.0-1   set base",
            "  ↑ tool  1.0-1 → 2.0-1   set base",
            "  ? nowhere: in no repository of the archive on either date",
        ],
        "{out}"
    );

    let (code, md, _) = diff(&fleet, "markdown");
    assert_eq!(code, 1);
    assert!(
        md.contains("| `app` | ⬆️ upgraded | `1.0-1` | `2.0-1` | set base |")
            && md.contains("| `gone` | ➖ removed | `0.9-1` |  | set base |"),
        "{md}"
    );
    assert!(md.contains("Repositories of the archive"), "{md}");

    let (code, j, _) = diff(&fleet, "json");
    assert_eq!(code, 1);
    let j: Value = serde_json::from_str(&j).unwrap();
    let s = &j["pools"][0]["snapshot_versions"];
    assert_eq!(s["old"], D1);
    assert_eq!(s["new"], D2);
    assert_eq!(s["reachable"], true);
    assert_eq!(s["missing"], serde_json::json!(["nowhere"]));
    let rows: Vec<String> = s["packages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{} {} {} {}", r["change"], r["name"], r["old"], r["new"]))
        .collect();
    assert_eq!(
        rows,
        [
            "\"removed\" \"gone\" \"0.9-1\" null",
            "\"upgraded\" \"app\" \"1.0-1\" \"2.0-1\"",
            "\"upgraded\" \"tool\" \"1.0-1\" \"2.0-1\"",
        ]
    );
    // The snapshot rows are what the archive says, not manifest changes: not in the counts.
    assert_eq!(j["summary"]["packages"]["upgraded"], 0, "{j}");
}

#[test]
fn diff_says_clearly_when_the_archive_cannot_be_read() {
    let tmp = tempdir();
    let missing = tmp.path().join("no-archive-here");
    // A port nothing listens on (it was free a moment ago).
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    for archive in [
        format!("file://{}", missing.display()),
        format!("http://127.0.0.1:{port}/archive"),
    ] {
        let fleet_dir = tmp.path().join(archive.len().to_string());
        fs::create_dir_all(&fleet_dir).unwrap();
        let fleet = bump(&fleet_dir, &archive, D1, D2);
        let (code, out, err) = diff(&fleet, "text");
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(out.contains("snapshot  2025-03-01 → 2025-04-05"), "{out}");
        assert!(
            out.contains(&format!(
                "  ! the archive's repositories could not be read ({archive}, core, extra, x86_64), so the versions of 2025-03-01 and 2025-04-05 are not shown:\n      2025-03-01: {archive}/repos/2025/03/01/core/os/x86_64/core.db: "
            )) && out.contains(&format!("\n      2025-04-05: {archive}/repos/2025/04/05/core/os/x86_64/core.db: ")),
            "{out}"
        );
        let (code, md, _) = diff(&fleet, "markdown");
        assert_eq!(code, 1);
        assert!(
            md.contains("> **The archive's repositories could not be read**"),
            "{md}"
        );
        let (code, j, _) = diff(&fleet, "json");
        assert_eq!(code, 1);
        let j: Value = serde_json::from_str(&j).unwrap();
        let s = &j["pools"][0]["snapshot_versions"];
        assert_eq!(s["reachable"], false, "{j}");
        assert!(s["error"].as_str().is_some_and(|e| !e.is_empty()), "{j}");
        assert_eq!(s["packages"], serde_json::json!([]));
    }
}

#[test]
fn diff_refuses_an_archive_database_with_a_hostile_version() {
    let tmp = tempdir();
    let archive = tmp.path().join("archive");
    let repo = |date: &str, name: &str, pkgs: &[SynthPackage]| {
        let dir = archive.join(format!("repos/{}/{name}/os/x86_64", date.replace('-', "/")));
        PkgRepo::new_in(&dir, name).add(pkgs);
    };
    for date in [D1, D2] {
        repo(date, "extra", &[SynthPackage::new("tool", "1.0-1")]);
    }
    repo(D1, "core", &[SynthPackage::new("app", "1.0-1")]);
    // A version that would clear the terminal, break out of a markdown code span and a table,
    // in a database written by hand (nothing that builds packages accepts it).
    let hostile = "2.0-1\u{1b}[2J`|<b>";
    let dir = archive.join("repos/2025/04/05/core/os/x86_64");
    fs::create_dir_all(&dir).unwrap();
    let gz = flate2::write::GzEncoder::new(
        fs::File::create(dir.join("core.db")).unwrap(),
        flate2::Compression::default(),
    );
    let mut tar = tar::Builder::new(gz);
    let desc = format!(
        "%FILENAME%\napp-2.0-1-any.pkg.tar.gz\n\n%NAME%\napp\n\n%VERSION%\n{hostile}\n\n%ARCH%\nany\n\n"
    );
    let mut header = tar::Header::new_gnu();
    header.set_size(desc.len() as u64);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, format!("app-{hostile}/desc"), desc.as_bytes())
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let fleet = bump(tmp.path(), &format!("file://{}", archive.display()), D1, D2);
    for format in ["text", "markdown", "json"] {
        let (code, out, err) = diff(&fleet, format);
        assert_eq!(code, 1, "{out}\n{err}");
        assert!(
            !out.contains('\u{1b}') && !out.contains("<b>"),
            "{format}: {out}"
        );
        assert!(
            out.contains("has an invalid version, so the database is refused"),
            "{format}: {out}"
        );
    }
}
