//! The peer cache's server (docs/contract.md §8) through the binary: `fleetctl agent` with
//! `peers: {listen: …}` serves its cache dir's package files and signatures to a real HTTP
//! client (curl) and nothing else, and a plain pacman with `CacheServer =` installs from it
//! while its repository's server is unreachable. `peers.static`: a pass asks the listed peers
//! for package files first, discards a tampered one for upstream's, and survives a dead peer.

use std::fs;
use std::io::Read;
use std::net::TcpListener;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use pacfleet_support::synth::SynthPackage;

use crate::harness::agent::{Agent, free_port, serving_agent};
use crate::harness::world::POOL;
use crate::harness::{HostDir, TestCommand, World, fleetctl, skip};

/// `curl` with `args` and the URL: (HTTP status, body, response headers), status 0 when
/// nothing answered.
fn curl(args: &[&str], url: &str) -> (u16, Vec<u8>, String) {
    let body = tempfile::NamedTempFile::new().unwrap();
    let out = Command::new("curl")
        .args([
            "-s",
            "--path-as-is",
            "-D",
            "/dev/stderr",
            "-w",
            "%{http_code}",
        ])
        .arg("-o")
        .arg(body.path())
        .args(args)
        .arg(url)
        .output()
        .expect("run curl");
    let code = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0);
    (
        code,
        fs::read(body.path()).unwrap_or_default(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_agent_serves_its_cache_to_curl_and_to_pacman_through_cache_server() {
    if Command::new("curl").arg("--version").output().is_err() {
        return skip("no curl on this machine");
    }
    let w = World::builder()
        .packages(&[
            SynthPackage::new("app", "1.0-1"),
            SynthPackage::new("tool", "2.0-1"),
        ])
        .desired(&["app"])
        .pool(POOL)
        .build();
    let host = w.host_dir("ws-01");
    // The cache holds `tool` (as a pass that installed it leaves it) and its signature.
    let pkg = w.repo().package_file("tool").unwrap().to_path_buf();
    let name = pkg.file_name().unwrap().to_str().unwrap().to_owned();
    let sig_src = PathBuf::from(format!("{}.sig", pkg.display()));
    fs::copy(&pkg, host.cache_dir.join(&name)).unwrap();
    fs::copy(&sig_src, host.cache_dir.join(format!("{name}.sig"))).unwrap();
    let bytes = fs::read(&pkg).unwrap();
    let sig = fs::read(&sig_src).unwrap();
    // What must never be served, though it is in (or reachable from) the cache dir.
    fs::write(host.cache_dir.join("core.db"), b"a database").unwrap();
    fs::write(host.cache_dir.join(format!("{name}.part")), b"half").unwrap();
    let outside = w.tmp.path().join("secret-1-1-any.pkg.tar.zst");
    fs::write(&outside, b"outside the cache").unwrap();
    symlink(&outside, host.cache_dir.join("secret-1-1-any.pkg.tar.zst")).unwrap();
    symlink(&pkg, host.cache_dir.join("inside-1-1-any.pkg.tar.zst")).unwrap();
    fs::create_dir(host.cache_dir.join("dir-1-1-any.pkg.tar.zst")).unwrap();

    let port = free_port();
    let cfg = w.config(
        &host,
        &format!("interval: 1h\npeers: {{listen: 127.0.0.1:{port}}}\n"),
    );
    let agent = Agent::start(&cfg, w.tmp.path().join("agent.log"));
    let base = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while curl(&[], &format!("{base}/")).0 == 0 {
        assert!(
            Instant::now() < deadline,
            "the peer cache did not answer:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        agent.log().contains("peer cache: serving"),
        "{}",
        agent.log()
    );

    // The package, whole and resumed, its signature, HEAD.
    let (code, body, headers) = curl(&[], &format!("{base}/{name}"));
    assert_eq!(code, 200, "{headers}\n{}", agent.log());
    assert!(body == bytes, "the package's bytes differ");
    let (code, body, headers) = curl(&["-H", "Range: bytes=10-"], &format!("{base}/{name}"));
    assert_eq!(code, 206, "{headers}");
    assert!(body == bytes[10..], "the resumed bytes differ");
    assert!(
        headers.contains(&format!(
            "content-range: bytes 10-{}/{}",
            bytes.len() - 1,
            bytes.len()
        )),
        "{headers}"
    );
    let (code, body, _) = curl(&[], &format!("{base}/{name}.sig"));
    assert_eq!((code, body), (200, sig));
    let (code, _, headers) = curl(&["-I"], &format!("{base}/{name}"));
    assert_eq!(code, 200, "{headers}");
    assert!(
        headers.contains(&format!("content-length: {}", bytes.len())),
        "{headers}"
    );

    // Refused: traversal (raw and encoded), databases, partial downloads, symlinks (out of
    // the cache dir or into it), directories, other methods.
    for path in [
        "/../etc/passwd".to_owned(),
        "/%2e%2e/etc/passwd".to_owned(),
        "/%2E%2E%2Fetc%2Fpasswd".to_owned(),
        format!("/..%2f{name}"),
        format!("/./{name}"),
        format!("/sub/../{name}"),
        "/core.db".to_owned(),
        format!("/{name}.part"),
        "/secret-1-1-any.pkg.tar.zst".to_owned(),
        "/inside-1-1-any.pkg.tar.zst".to_owned(),
        "/dir-1-1-any.pkg.tar.zst".to_owned(),
        "/".to_owned(),
        "/missing-1-1-any.pkg.tar.zst".to_owned(),
    ] {
        let (code, body, _) = curl(&[], &format!("{base}{path}"));
        assert_eq!(code, 404, "{path}: {}", String::from_utf8_lossy(&body));
        assert_eq!(body, b"not found\n", "{path}");
    }
    let (code, _, _) = curl(&["-X", "PUT", "--data", "x"], &format!("{base}/{name}"));
    assert_eq!(code, 405);

    // Bounded: 32 connections at once, the 33rd is closed unanswered; a connection that sends
    // no request head is closed after 10 s, and its place is free again.
    let connect = || {
        let c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        c
    };
    let mut idle: Vec<_> = (0..32).map(|_| connect()).collect();
    let mut over = connect();
    let mut buf = [0u8; 64];
    let read = over.read(&mut buf);
    assert!(
        matches!(read, Ok(0))
            || read.is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionReset),
        "the 33rd connection was not closed"
    );
    let waited = Instant::now();
    for c in &mut idle {
        assert!(
            matches!(c.read(&mut buf), Ok(0)),
            "an idle connection stayed open"
        );
    }
    let waited = waited.elapsed();
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    assert_eq!(curl(&[], &format!("{base}/{name}.sig")).0, 200);

    // Plain pacman on another host: its repository's server is a closed port, the peer its
    // CacheServer; it installs `tool` from the peer. Its sync database came from the
    // repository before the server went away.
    let other = HostDir::new(w.tmp.path(), "peer-02", &w.repos());
    other.pacman_ok(&["-Sy"]);
    let closed = free_port();
    let conf = fs::read_to_string(&other.conf).unwrap();
    let repo_url = &w.repo().url;
    let conf = conf.replace(
        &format!("Server = {repo_url}\n"),
        &format!("CacheServer = {base}\nServer = http://127.0.0.1:{closed}\n"),
    );
    assert!(
        conf.contains("CacheServer") && !conf.contains(repo_url.as_str()),
        "{conf}"
    );
    fs::write(&other.conf, conf).unwrap();
    other.pacman_ok(&["-S", "tool"]);
    assert_eq!(
        other.installed().get("tool").map(String::as_str),
        Some("2.0-1")
    );
    let cached = fs::read(other.cache_dir.join(&name)).unwrap();
    assert!(
        cached == bytes,
        "pacman's download differs from the peer's file"
    );
    drop(agent);
}

#[test]
fn the_agent_does_not_start_when_peers_listen_cannot_be_bound() {
    let w = World::builder()
        .packages(&[SynthPackage::new("app", "1.0-1")])
        .desired(&["app"])
        .pool(POOL)
        .build();
    let host = w.host_dir("ws-01");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = w.config(&host, &format!("peers: {{listen: {addr}}}\n"));
    let out = fleetctl()
        .arg("agent")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`peers.listen`")
            && stderr.contains(&format!("cannot listen on {addr}"))
            && stderr.contains(&cfg.display().to_string()),
        "{stderr}"
    );
    // A bad `peers.discover` is refused, naming the file, the field and the fix.
    let cfg = w.config(&host, "peers: {listen: 127.0.0.1:0, discover: true}\n");
    let out = fleetctl()
        .arg("agent")
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&cfg.display().to_string())
            && stderr.contains("`peers.discover` takes `mdns`")
            && stderr.contains("write `discover: mdns` or remove it"),
        "{stderr}"
    );
}

/// Host `peer-01`'s agent serving its cache dir (which holds `app`'s package file as `bytes`,
/// and its real signature) on a free port of 127.0.0.1, answering when this returns. The
/// host is in no pool, so the agent's own passes leave its cache alone.
fn serving_peer(w: &World, bytes: &[u8]) -> (Agent, String) {
    let a = w.host_dir("peer-01");
    let pkg = w.repo().package_file("app").unwrap().to_path_buf();
    let name = pkg.file_name().unwrap().to_str().unwrap().to_owned();
    fs::write(a.cache_dir.join(&name), bytes).unwrap();
    fs::copy(
        format!("{}.sig", pkg.display()),
        a.cache_dir.join(format!("{name}.sig")),
    )
    .unwrap();
    let (agent, port) = serving_agent(w, "peer-01", "", "");
    (agent, format!("http://127.0.0.1:{port}"))
}

fn app_world() -> World {
    World::builder()
        .packages(&[SynthPackage::new("app", "1.0-1")])
        .desired(&["app"])
        .pool(POOL)
        .build()
}

/// `app`'s file name and bytes as the repository built them.
fn app_file(w: &World) -> (PathBuf, String, Vec<u8>) {
    let pkg = w.repo().package_file("app").unwrap().to_path_buf();
    let name = pkg.file_name().unwrap().to_str().unwrap().to_owned();
    let bytes = fs::read(&pkg).unwrap();
    (pkg, name, bytes)
}

#[test]
fn a_pass_downloads_package_files_from_a_static_peer_first() {
    let w = app_world();
    let (pkg, name, bytes) = app_file(&w);
    let (agent, peer) = serving_peer(&w, &bytes);
    // Upstream keeps its database but loses the package files: only the peer has them.
    fs::remove_file(&pkg).unwrap();
    fs::remove_file(format!("{}.sig", pkg.display())).unwrap();
    let b = w.host_dir("ws-02");
    w.config(
        &b,
        &format!("lock_timeout: 1s\npeers: {{static: [{peer}/]}}\n"),
    );
    let out = w.reconcile(&b);
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        agent.log()
    );
    assert_eq!(b.installed().get("app").map(String::as_str), Some("1.0-1"));
    assert!(
        fs::read(b.cache_dir.join(&name)).unwrap() == bytes,
        "the peer's download differs from the package file"
    );
    // Where the bytes came from, in the pass's summary, status, history and metrics alike.
    assert!(
        out.stdout.contains("downloads: 1 file (")
            && out.stdout.contains(") from peers, 0 files from upstream\n"),
        "{}",
        out.stdout
    );
    let cfg = b.base.join("agent.yaml");
    let status = TestCommand::status(&cfg).run();
    assert!(
        status
            .stdout
            .lines()
            .any(|l| l.starts_with("downloads  1 file (")
                && l.ends_with(") from peers, 0 files from upstream")),
        "{}",
        status.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&TestCommand::status(&cfg).arg("--json").run().stdout).unwrap();
    let d = &json["last_pass"]["downloads"];
    assert_eq!(
        (d["peer_files"].as_u64(), d["upstream_files"].as_u64()),
        (Some(1), Some(0)),
        "{json}"
    );
    assert_eq!(d["peer_bytes"].as_u64(), Some(bytes.len() as u64), "{json}");
    let entry = b.history().pop().expect("history");
    assert_eq!(entry["downloads"]["peer_files"], 1, "{entry}");
    let history = TestCommand::with_config("history", &cfg).run();
    assert!(
        history.stdout.contains("    downloads: 1 file ("),
        "{}",
        history.stdout
    );
    drop(agent);
}

#[test]
fn a_tampered_file_from_a_peer_is_discarded_and_upstream_is_used() {
    let w = app_world();
    let (_pkg, name, bytes) = app_file(&w);
    // Same name and size, other bytes: the signature cannot match.
    let mut tampered = bytes.clone();
    let mid = tampered.len() / 2;
    tampered[mid] ^= 0xff;
    tampered[mid + 1] ^= 0xff;
    let (agent, peer) = serving_peer(&w, &tampered);
    let b = w.host_dir("ws-02");
    w.config(
        &b,
        &format!("lock_timeout: 1s\npeers: {{static: [{peer}]}}\n"),
    );
    let out = w.reconcile(&b);
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        agent.log()
    );
    // The peer that served it is named, and the file never reached the cache.
    assert!(
        out.stderr.contains(&format!(
            "peer {peer} served a file that failed its checksum: {name}"
        )) && out.stderr.contains("avoided for a while"),
        "{}",
        out.stderr
    );
    assert_eq!(b.installed().get("app").map(String::as_str), Some("1.0-1"));
    assert!(
        fs::read(b.cache_dir.join(&name)).unwrap() == bytes,
        "the cached file is not upstream's"
    );
    let report = b.status_json();
    let downloads = &report["downloads"];
    assert_eq!(downloads["bad_from"][&peer], 1, "{report}");
    assert_eq!(downloads["peer_files"], 0, "{report}");
    assert_eq!(downloads["upstream_files"], 1, "{report}");
    let bad = format!("bad peer: {peer} served 1 file that failed the sha256 check (discarded)");
    assert!(
        out.stdout.contains(&bad),
        "{bad:?} missing:\n{}",
        out.stdout
    );
    let status = TestCommand::status(b.base.join("agent.yaml")).run();
    assert!(
        status
            .stdout
            .contains(&bad.replacen("bad peer: ", "bad peer   ", 1)),
        "{}",
        status.stdout
    );
    // Avoided for a while: the next pass does not ask it.
    fs::remove_file(b.cache_dir.join(&name)).unwrap();
    b.pacman_ok(&["-R", "app"]);
    let out = w.reconcile(&b);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("peer {peer} is avoided until"))
            && !out.stderr.contains("avoided for a while"),
        "{}",
        out.stderr
    );
    assert!(fs::read(b.cache_dir.join(&name)).unwrap() == bytes);
    drop(agent);
}

#[test]
fn prefetch_downloads_a_pending_change_from_a_peer_and_says_so_everywhere() {
    // The pool's window opens for one second a year: the change is pending.
    let w = World::builder()
        .packages(&[SynthPackage::new("app", "1.0-1")])
        .desired(&["app"])
        .pool(&format!(
            "{POOL}window: {{cron: \"0 0 0 1 1 *\", duration: 1s}}\n"
        ))
        .build();
    let (_pkg, name, bytes) = app_file(&w);
    let (agent, peer) = serving_peer(&w, &bytes);
    let b = w.host_dir("ws-02");
    let prom = w.tmp.path().join("ws-02.prom");
    let cfg = w.config(
        &b,
        &format!(
            "lock_timeout: 1s\nprefetch: true\ntextfile: {}\npeers: {{static: [{peer}]}}\n",
            prom.display()
        ),
    );
    let out = w.reconcile(&b);
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        agent.log()
    );
    assert!(
        !b.installed().contains_key("app"),
        "applied outside the window"
    );
    assert!(fs::read(b.cache_dir.join(&name)).unwrap() == bytes);
    let prefetched = "1 file (";
    let line = out
        .stdout
        .lines()
        .find_map(|l| l.strip_prefix("prefetched: "))
        .unwrap_or_else(|| panic!("no prefetched line:\n{}", out.stdout));
    assert!(
        line.starts_with(prefetched)
            && line.ends_with(") for the pending change; 0 left to download"),
        "{line}"
    );
    let status = TestCommand::status(&cfg).run();
    assert!(
        status.stdout.contains(&format!("prefetched {line}\n")),
        "{}",
        status.stdout
    );
    let json: serde_json::Value =
        serde_json::from_str(&TestCommand::status(&cfg).arg("--json").run().stdout).unwrap();
    let d = &json["last_pass"]["downloads"];
    assert_eq!(
        (
            d["prefetch"].as_bool(),
            d["peer_files"].as_u64(),
            d["left"].as_u64()
        ),
        (Some(true), Some(1), Some(0)),
        "{json}"
    );
    assert_eq!(d["peers"][0], peer.as_str(), "{json}");
    let metrics = fs::read_to_string(&prom).unwrap();
    for want in [
        "pacfleet_prefetched_files 1\n",
        "pacfleet_prefetch_left_files 0\n",
        "pacfleet_download_files{source=\"peer\"} 1\n",
        "pacfleet_download_files{source=\"upstream\"} 0\n",
        &format!(
            "pacfleet_download_bytes{{source=\"peer\"}} {}\n",
            bytes.len()
        ),
    ] {
        assert!(metrics.contains(want), "{want} missing:\n{metrics}");
    }
    drop(agent);
}

#[test]
fn a_dead_static_peer_does_not_fail_the_pass() {
    let w = app_world();
    let (_pkg, name, bytes) = app_file(&w);
    let b = w.host_dir("ws-02");
    let closed = free_port();
    w.config(
        &b,
        &format!("lock_timeout: 1s\npeers: {{static: [http://127.0.0.1:{closed}]}}\n"),
    );
    let started = Instant::now();
    let out = w.reconcile(&b);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(b.installed().get("app").map(String::as_str), Some("1.0-1"));
    assert!(fs::read(b.cache_dir.join(&name)).unwrap() == bytes);
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn peers_static_takes_http_urls_only() {
    let w = app_world();
    let b = w.host_dir("ws-02");
    for entry in ["file:///x", "not a url"] {
        let cfg = w.config(&b, &format!("peers: {{static: [{entry}]}}\n"));
        let out = w.reconcile(&b);
        assert_eq!(out.code, 2, "{entry}: {}\n{}", out.stdout, out.stderr);
        assert!(
            out.stderr.contains(&cfg.display().to_string())
                && out
                    .stderr
                    .contains(&format!("`peers.static` entry {entry:?}"))
                && out.stderr.contains("is not an http:// or https:// URL"),
            "{entry}: {}",
            out.stderr
        );
        assert!(!b.installed().contains_key("app"));
    }
}

/// The pool of [`app_world`] with a window that opened long ago for one second: closed now.
const CLOSED_POOL: &str = "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\nprune: true\nwindow: {cron: \"0 0 0 1 1 *\", duration: 1s}\n";

#[test]
fn prefetch_downloads_a_pending_change_outside_the_window_and_the_apply_downloads_nothing() {
    let w = World::builder()
        .packages(&[SynthPackage::new("app", "1.0-1")])
        .desired(&["app"])
        .pool(CLOSED_POOL)
        .build();
    let (pkg, name, bytes) = app_file(&w);
    let b = w.host_dir("ws-02");
    let cfg = w.config(&b, "lock_timeout: 1s\nprefetch: true\n");
    // Outside the window: nothing is installed, the change's file and its signature are in
    // the cache, checked, and the status says so.
    let out = w.reconcile(&b);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(!b.installed().contains_key("app"));
    assert!(fs::read(b.cache_dir.join(&name)).unwrap() == bytes);
    assert!(b.cache_dir.join(format!("{name}.sig")).is_file());
    assert!(
        out.stderr
            .contains("1 of 1 package file downloaded ahead of the window"),
        "{}",
        out.stderr
    );
    let status = b.status_json();
    let d = &status["downloads"];
    assert_eq!(d["prefetch"], true, "{status}");
    assert_eq!(d["upstream_files"], 1, "{status}");
    assert_eq!(d["upstream_bytes"], bytes.len() as u64, "{status}");
    assert_eq!(d["left"], 0, "{status}");
    // `plan` downloads nothing (it never writes the cache) and says there is nothing to.
    let plan = crate::harness::TestCommand::plan(&cfg).arg("--json").run();
    let plan_json: serde_json::Value = serde_json::from_str(&plan.stdout).unwrap();
    assert!(plan_json["downloads"].is_null(), "{}", plan.stdout);
    let plan = crate::harness::TestCommand::plan(&cfg).run();
    assert!(
        plan.stdout
            .contains("download 0 B (every package file is in the cache)"),
        "{}",
        plan.stdout
    );
    // Prefetching again finds everything cached.
    let out = w.reconcile(&b);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    let status = b.status_json();
    assert_eq!(status["downloads"]["upstream_files"], 0, "{status}");
    assert_eq!(status["downloads"]["left"], 0, "{status}");
    // Inside the window (ignored here) upstream is gone: the transaction downloads nothing.
    fs::remove_file(&pkg).unwrap();
    fs::remove_file(format!("{}.sig", pkg.display())).unwrap();
    let out = crate::harness::TestCommand::reconcile(&cfg)
        .arg("--ignore-window")
        .run();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(b.installed().get("app").map(String::as_str), Some("1.0-1"));
    let status = b.status_json();
    assert!(status["downloads"].is_null(), "{status}");
}

#[test]
fn a_peer_publishes_its_pass_status_under_its_own_name_until_it_expires() {
    let w = app_world();
    let (_pkg, name, bytes) = app_file(&w);
    let (agent, peer) = serving_peer(&w, &bytes);
    let status = || {
        let (code, body, _) = curl(&[], &format!("{peer}/_pacfleet/peer"));
        assert_eq!(code, 200);
        serde_json::from_slice::<serde_json::Value>(&body).unwrap()
    };
    // No pass has written a status: the host's name, nothing pending.
    let s = status();
    assert_eq!(s["host"], "peer-01", "{s}");
    assert_eq!(s["pending"], serde_json::json!([]), "{s}");
    // What the pass wrote (another name in it is not taken: the server says who it is).
    let file = w.tmp.path().join("hosts/peer-01/state/peer-status.json");
    assert!(file.parent().unwrap().is_dir());
    let write = |expires: chrono::DateTime<chrono::Utc>| {
        let text = serde_json::json!({
            "host": "someone-else",
            "pending": [name],
            "expires_at": expires.to_rfc3339(),
        });
        fs::write(&file, text.to_string()).unwrap();
    };
    write(chrono::Utc::now() + chrono::Duration::minutes(2));
    let s = status();
    assert_eq!(s["host"], "peer-01", "{s}");
    assert_eq!(s["pending"], serde_json::json!([name]), "{s}");
    // A pass that died leaves its status: once expired, it says nothing.
    write(chrono::Utc::now() - chrono::Duration::seconds(1));
    assert_eq!(status()["pending"], serde_json::json!([]));
    // Only that exact path; the status file is no package file.
    for path in ["/_pacfleet/peer/x", "/peer-status.json"] {
        let (code, _, _) = curl(&[], &format!("{peer}{path}"));
        assert_eq!(code, 404, "{path}");
    }
    drop(agent);
}

/// `python3 -m http.server` serving `dir` on a free port of 127.0.0.1, its request log in
/// `log`; answering when this returns.
struct HttpDir {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl HttpDir {
    fn start(dir: &Path, log: PathBuf) -> HttpDir {
        let port = free_port();
        let child = Command::new("python3")
            .args(["-m", "http.server", "--bind", "127.0.0.1"])
            .arg(port.to_string())
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("python3 (scripts/deps.sh installs it)");
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "http.server did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        HttpDir { child, port, log }
    }

    /// The successful GETs of `file` so far.
    fn served(&self, file: &str) -> usize {
        fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&format!("GET /{file} ")) && l.contains("\" 200 "))
            .count()
    }
}

impl Drop for HttpDir {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_pinned_version_from_the_archive_is_taken_from_a_peer_and_checked_by_its_sha256() {
    let tmp = crate::harness::tempdir();
    let archive = tmp.path().join("archive");
    fs::create_dir_all(&archive).unwrap();
    let server = HttpDir::start(&archive, tmp.path().join("archive.log"));
    let old = SynthPackage::new("app", "1.0-1");
    let built = crate::harness::archive_package(&archive, &old);
    let sha = pacfleet_support::synth::sha256_file(&built).unwrap();
    let rel = built.strip_prefix(&archive).unwrap().display().to_string();
    let name = built.file_name().unwrap().to_str().unwrap().to_owned();
    let w = World::builder()
        .tmp(tmp)
        .packages(&[SynthPackage::new("app", "2.0-1")])
        .fleet_yaml(&format!(
            "{}archive: http://127.0.0.1:{}\n",
            crate::harness::world::FLEET,
            server.port
        ))
        .pool("kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackages: [app]\ngeneration: 1\n")
        .file(
            "generations/ws/1.yaml",
            &format!(
                "kind: Generation\npool: ws\nnumber: 1\npackages:\n  app: {{version: 1.0-1, sha256: {sha}}}\n"
            ),
        )
        .build();
    // The peer has the archived file in its cache, as a host of the pool that took it leaves it.
    let a = w.host_dir("peer-01");
    fs::copy(&built, a.cache_dir.join(&name)).unwrap();
    fs::copy(
        format!("{}.sig", built.display()),
        a.cache_dir.join(format!("{name}.sig")),
    )
    .unwrap();
    let (agent, port) = serving_agent(&w, "peer-01", "", "");
    let peer = format!("http://127.0.0.1:{port}");

    // With the peer: the archive serves nothing of the package.
    let b = w.host_dir("ws-02");
    w.config(
        &b,
        &format!("lock_timeout: 1s\npeers: {{static: [{peer}]}}\n"),
    );
    let out = w.reconcile(&b);
    assert_eq!(
        out.code,
        0,
        "{}\n{}\n{}",
        out.stdout,
        out.stderr,
        agent.log()
    );
    assert_eq!(b.installed().get("app").map(String::as_str), Some("1.0-1"));
    assert_eq!(
        server.served(&rel),
        0,
        "{}",
        fs::read_to_string(&server.log).unwrap()
    );
    let status = b.status_json();
    assert_eq!(status["downloads"]["peer_files"], 1, "{status}");
    assert_eq!(status["downloads"]["upstream_files"], 0, "{status}");

    // A peer serving other bytes under that name: discarded by the pin's sha256, the archive's
    // file is installed.
    fs::write(a.cache_dir.join(&name), b"not the package").unwrap();
    let c = w.host_dir("ws-03");
    w.config(
        &c,
        &format!("lock_timeout: 1s\npeers: {{static: [{peer}]}}\n"),
    );
    let out = w.reconcile(&c);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(c.installed().get("app").map(String::as_str), Some("1.0-1"));
    assert!(
        out.stderr.contains(&format!(
            "peer {peer} served a file that failed its checksum: {name}"
        )),
        "{}",
        out.stderr
    );
    assert_eq!(server.served(&rel), 1);

    // Without peers, as before: libalpm downloads it from the archive.
    let d = w.host_dir("ws-04");
    w.config(&d, "lock_timeout: 1s\n");
    let out = w.reconcile(&d);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(d.installed().get("app").map(String::as_str), Some("1.0-1"));
    assert_eq!(server.served(&rel), 2);
    drop(agent);
}
