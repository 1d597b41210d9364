//! The peer cache against a real upstream (docs/contract.md §8): a site of six hosts, each
//! with its agent serving its cache to the others (`peers.listen` + `peers.static`), takes a
//! change of 20 packages at the same moment from a counting HTTP mirror
//! (`pacfleet_support::mirror`), and the mirror serves each package file about once; a host
//! without peers downloads everything from the mirror through libalpm, as before; a peer that
//! stalls mid-file (a fake: no real agent does that) costs a pass at most the stall timeout,
//! and is avoided by the next pass.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Barrier, Mutex};
use std::time::{Duration, Instant};

use pacfleet_support::mirror::Mirror;
use pacfleet_support::synth::SynthPackage;

use crate::harness::agent::{Agent, free_port};
use crate::harness::command::TestCommand;
use crate::harness::world::POOL;
use crate::harness::{HostDir, World};

/// Package `name` 1.0-1 carrying `kib` KiB of incompressible data.
fn big(name: &str, kib: usize) -> SynthPackage {
    SynthPackage::new(name, "1.0-1").file(
        format!("usr/share/{name}/data"),
        pacfleet_support::synth::incompressible(name, kib << 10),
    )
}

/// A pool that selects no host yet: the agents' first passes (on start) leave the hosts alone.
const NO_HOSTS_YET: &str =
    "kind: Pool\nname: ws\nhosts: [\"none-*\"]\npackage_sets: [base]\nprune: true\n";

/// A world of `pkgs` whose repository `core` is served by a counting mirror (the hosts'
/// `Server =`), and whose pool selects no host until [`POOL`] is committed.
fn mirrored_world(pkgs: &[SynthPackage], desired: &[&str], pool: &str) -> (World, Mirror) {
    let mut w = World::builder()
        .packages(pkgs)
        .desired(desired)
        .pool(pool)
        .build();
    let mirror = Mirror::start(&w.repo().dir).unwrap();
    w.repos_mut().next().unwrap().url = mirror.url.clone();
    (w, mirror)
}

#[test]
fn a_site_that_takes_a_change_at_once_downloads_each_package_from_upstream_once() {
    let names: Vec<String> = (0..20).map(|i| format!("pkg{i:02}")).collect();
    let pkgs: Vec<SynthPackage> = names.iter().map(|n| big(n, 256)).collect();
    let desired: Vec<&str> = names.iter().map(String::as_str).collect();
    let (w, mirror) = mirrored_world(&pkgs, &desired, NO_HOSTS_YET);
    let sizes: BTreeMap<String, u64> = names
        .iter()
        .map(|n| {
            let p = w.repo().package_file(n).unwrap();
            (
                p.file_name().unwrap().to_str().unwrap().to_owned(),
                fs::metadata(p).unwrap().len(),
            )
        })
        .collect();
    let total: u64 = sizes.values().sum();
    assert!(total > 20 * 250 * 1024, "{total}");

    // Six hosts, each with an agent serving its cache to the other five.
    let hosts: Vec<HostDir> = (1..=6).map(|i| w.host_dir(&format!("ws-0{i}"))).collect();
    let ports: Vec<u16> = hosts.iter().map(|_| free_port()).collect();
    let mut cfgs = Vec::new();
    let mut agents = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        let others: Vec<String> = ports
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, p)| format!("http://127.0.0.1:{p}"))
            .collect();
        let cfg = w.config(
            h,
            &format!(
                "lock_timeout: 5s\ninterval: 1h\npeers: {{listen: 127.0.0.1:{}, static: [{}]}}\n",
                ports[i],
                others.join(", ")
            ),
        );
        agents.push(Agent::start(
            &cfg,
            w.tmp.path().join(format!("agent-{}.log", h.hostname)),
        ));
        cfgs.push(cfg);
    }
    // Each agent serves, and its first pass (the host is in no pool yet) is over.
    let deadline = Instant::now() + Duration::from_secs(60);
    for (a, port) in agents.iter().zip(&ports) {
        while TcpStream::connect(("127.0.0.1", *port)).is_err() || !a.log().contains("in no pool") {
            assert!(
                Instant::now() < deadline,
                "the agent did not start:\n{}",
                a.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    // The change: the pool selects them. All six passes start at once.
    w.fleet()
        .commit("ws-* take the packages", &[("pools/ws.yaml", POOL)]);
    mirror.reset();
    let barrier = Arc::new(Barrier::new(cfgs.len()));
    let outs = Arc::new(Mutex::new(BTreeMap::new()));
    std::thread::scope(|s| {
        for (i, cfg) in cfgs.iter().enumerate() {
            let (barrier, outs) = (Arc::clone(&barrier), Arc::clone(&outs));
            s.spawn(move || {
                barrier.wait();
                let out = TestCommand::reconcile(cfg).run();
                outs.lock().unwrap().insert(i, out);
            });
        }
    });
    let outs = outs.lock().unwrap();
    let logs = || {
        let mut all = String::new();
        for (i, o) in outs.iter() {
            all += &format!("--- ws-0{} (exit {})\n{}\n", i + 1, o.code, o.stderr);
        }
        all
    };
    let mut from_peers = 0;
    for (i, h) in hosts.iter().enumerate() {
        assert_eq!(outs[&i].code, 0, "{}", logs());
        let installed = h.installed();
        for n in &names {
            assert_eq!(
                installed.get(n).map(String::as_str),
                Some("1.0-1"),
                "{}: {n}\n{}",
                h.hostname,
                logs()
            );
        }
        let report = h.status_json();
        let d = &report["downloads"];
        let (peer, up) = (
            d["peer_bytes"].as_u64().unwrap(),
            d["upstream_bytes"].as_u64().unwrap(),
        );
        assert_eq!(peer + up, total, "{}: {report}\n{}", h.hostname, logs());
        if d["peer_files"].as_u64().unwrap() > 10 {
            from_peers += 1;
        }
    }
    let served = mirror.package_bytes();
    eprintln!(
        "herd: the mirror served {served} package bytes for {total} per host ({:.2}×), {from_peers} of 6 hosts took most files from peers",
        served as f64 / total as f64
    );
    assert!(
        served as f64 <= 1.1 * total as f64,
        "the mirror served {served} package bytes, one host needs {total}: {:?}\n{}",
        mirror.counts(),
        logs()
    );
    assert!(from_peers >= 4, "{from_peers}\n{}", logs());
    drop(agents);

    // A host without peers: libalpm downloads everything from the mirror, as before.
    let lone = w.host_dir("ws-07");
    w.config(&lone, "lock_timeout: 5s\n");
    mirror.reset();
    let out = w.reconcile(&lone);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(lone.installed().len(), names.len());
    assert_eq!(mirror.package_bytes(), total, "{:?}", mirror.counts());
    let report = lone.status_json();
    let d = &report["downloads"];
    assert_eq!(d["upstream_bytes"], total, "{report}");
    assert_eq!(d["peer_bytes"].as_u64().unwrap_or(0), 0, "{report}");
    assert_eq!(d["peer_files"].as_u64().unwrap_or(0), 0, "{report}");
}

/// A fake peer on a free port: answers its status as host `stall-01`, and for any package file
/// sends the head with the file's real length and half of `bytes`, then nothing, keeping the
/// connection open until the test ends. Everything else is 404.
fn stalling_peer(bytes: Vec<u8>) -> String {
    fake_peer(r#"{"host":"stall-01"}"#.to_owned(), Some(bytes))
}

/// A fake peer on a free port of 127.0.0.1: its status answers `status`; a package file is
/// half of `bytes`, then the connection is held open with nothing more sent, or (`None`) not
/// found. Returns its base URL.
fn fake_peer(status: String, bytes: Option<Vec<u8>>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let path = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            if path == "/_pacfleet/peer" {
                let body = status.as_bytes();
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                    body.len()
                );
                let _ = stream.write_all(body);
            } else if let (true, Some(bytes)) = (path.ends_with(".pkg.tar.zst"), &bytes) {
                let _ = write!(
                    stream,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n",
                    bytes.len()
                );
                let _ = stream.write_all(&bytes[..bytes.len() / 2]);
                let _ = stream.flush();
                held.push(stream);
            } else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            }
        }
    });
    url
}

#[test]
fn a_peer_that_stalls_mid_file_is_dropped_and_avoided_by_the_next_pass() {
    let (w, mirror) = mirrored_world(&[big("app", 512)], &["app"], POOL);
    let pkg = w.repo().package_file("app").unwrap().to_path_buf();
    let name = pkg.file_name().unwrap().to_str().unwrap().to_owned();
    let bytes = fs::read(&pkg).unwrap();
    let peer = stalling_peer(bytes.clone());
    let host = w.host_dir("ws-01");
    w.config(
        &host,
        &format!("lock_timeout: 5s\npeers: {{static: [{peer}]}}\n"),
    );
    let started = Instant::now();
    let out = w.reconcile(&host);
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(took < Duration::from_secs(40), "{took:?}\n{}", out.stderr);
    assert_eq!(
        host.installed().get("app").map(String::as_str),
        Some("1.0-1")
    );
    assert!(fs::read(host.cache_dir.join(&name)).unwrap() == bytes);
    assert!(
        out.stderr.contains(&format!("peer {peer} ")) && out.stderr.contains("avoided for a while"),
        "{}",
        out.stderr
    );
    // Upstream gave the file once, whole.
    assert_eq!(
        mirror.bytes_for(&name),
        bytes.len() as u64,
        "{:?}",
        mirror.counts()
    );
    let report = host.status_json();
    assert_eq!(
        report["downloads"]["upstream_bytes"],
        bytes.len(),
        "{report}"
    );
    assert_eq!(
        report["downloads"]["peer_bytes"].as_u64().unwrap_or(0),
        0,
        "{report}"
    );

    // The next pass does not ask it.
    fs::remove_file(host.cache_dir.join(&name)).unwrap();
    host.pacman_ok(&["-R", "app"]);
    let started = Instant::now();
    let out = w.reconcile(&host);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("peer {peer} is avoided until"))
            && !out.stderr.contains("avoided for a while"),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        host.installed().get("app").map(String::as_str),
        Some("1.0-1")
    );
}

#[test]
fn a_peer_that_says_it_is_fetching_a_file_it_never_serves_is_waited_for_once() {
    let (w, _mirror) = mirrored_world(&[big("app", 64)], &["app"], POOL);
    let pkg = w.repo().package_file("app").unwrap().to_path_buf();
    let name = pkg.file_name().unwrap().to_str().unwrap().to_owned();
    // It says it is fetching the file, and never has it.
    let peer = fake_peer(
        format!(r#"{{"host":"liar-01","fetching":["{name}"]}}"#),
        None,
    );
    let host = w.host_dir("ws-01");
    w.config(
        &host,
        &format!("lock_timeout: 5s\npeers: {{static: [{peer}]}}\n"),
    );
    let started = Instant::now();
    let out = w.reconcile(&host);
    let took = started.elapsed();
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert_eq!(
        host.installed().get("app").map(String::as_str),
        Some("1.0-1")
    );
    // Waited for once (60 s), then dropped and avoided, the file from upstream.
    assert!(took < Duration::from_secs(100), "{took:?}");
    assert!(
        out.stderr.contains(&format!(
            "peer {peer} was too slow or stalled: said it was fetching {name} and did not have it after 60s"
        )),
        "{}",
        out.stderr
    );
    // The next pass does not wait for it.
    fs::remove_file(host.cache_dir.join(&name)).unwrap();
    host.pacman_ok(&["-R", "app"]);
    let started = Instant::now();
    let out = w.reconcile(&host);
    assert_eq!(out.code, 0, "{}\n{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains(&format!("peer {peer} is avoided until")),
        "{}",
        out.stderr
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}
