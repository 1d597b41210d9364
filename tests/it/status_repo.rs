//! The status repository against real git servers on loopback: `git daemon` with pushes
//! enabled (so anyone may write, the worst case the trust rules assume), a real OpenSSH server,
//! a server that is down and one that accepts and never answers. Hosts push signed reports
//! (`status_repo::push`), another host of the pool fetches its pool's refs and reads them
//! (`fetch_pool`, `read_pool`); forged, copied, replayed and oversized reports written by
//! someone with write access are rejected and counted, never read as valid.

use std::collections::BTreeMap;
use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pacfleet::keys::Key;
use pacfleet::report::{self, FORMAT, HostReport, ReportOutcome, ReportRejection, SignedReport};
use pacfleet::source::SshIdentity;
use pacfleet::status_repo::{self, FetchError, GitError, PoolReports, PushError, StatusRemote};

use crate::harness::git_fixtures::{Fixture, free_port};
use crate::harness::{GitDaemon, tempdir};

/// A host: its key pair and its local copy of the status repository.
struct Host {
    name: String,
    pool: String,
    keys: minisign::KeyPair,
    local: PathBuf,
}

impl Host {
    fn key(&self) -> Key {
        Key {
            name: self.name.clone(),
            key: self.keys.pk.clone(),
        }
    }

    fn report(&self, sequence: u64) -> HostReport {
        HostReport {
            format: FORMAT,
            fleet: "acme".to_owned(),
            host: self.name.clone(),
            pool: self.pool.clone(),
            wave: 0,
            rollout: None,
            target: "c".repeat(40),
            applied: Some("c".repeat(40)),
            generation: None,
            outcome: ReportOutcome::Applied,
            message: None,
            health: None,
            drift: Vec::new(),
            held: Vec::new(),
            warnings: Vec::new(),
            needs_reboot: false,
            sequence,
            at: chrono::Utc::now(),
        }
    }

    fn signed(&self, sequence: u64) -> SignedReport {
        report::sign(&self.report(sequence), &self.keys.sk).expect("sign")
    }
}

/// A status repository served by `git daemon --enable=receive-pack`, and hosts.
struct World {
    tmp: tempfile::TempDir,
    fx: Fixture,
    _daemon: GitDaemon,
    remote: StatusRemote,
    hosts: BTreeMap<String, Host>,
}

fn world(hosts: &[(&str, &str)]) -> World {
    let tmp = tempdir();
    let fx = Fixture::new();
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    fx.git(
        &served,
        &[
            "init",
            "-q",
            "--bare",
            &served.join("status.git").display().to_string(),
        ],
    );
    let daemon = GitDaemon::start_writable(&served);
    let remote = StatusRemote {
        url: format!("git://127.0.0.1:{}/status.git", daemon.port),
        ssh: None,
        timeout: Duration::from_secs(20),
        max_fetch_bytes: 256 << 20,
    };
    let hosts = hosts
        .iter()
        .map(|(name, pool)| {
            let host = Host {
                name: (*name).to_owned(),
                pool: (*pool).to_owned(),
                keys: minisign::KeyPair::generate_unencrypted_keypair().unwrap(),
                local: tmp.path().join(name).join("status.git"),
            };
            ((*name).to_owned(), host)
        })
        .collect();
    World {
        tmp,
        fx,
        _daemon: daemon,
        remote,
        hosts,
    }
}

impl World {
    fn host(&self, name: &str) -> &Host {
        &self.hosts[name]
    }

    fn served(&self) -> PathBuf {
        self.tmp.path().join("served/status.git")
    }

    /// `host` pushes `signed` as its report (or as anyone's: `pool`/`name` of the ref).
    fn push_as(&self, from: &str, signed: &SignedReport, pool: &str, name: &str) {
        status_repo::push(&self.remote, &self.host(from).local, signed, pool, name)
            .unwrap_or_else(|e| panic!("push to {pool}/{name}: {e}"));
    }

    /// `reader` fetches `pool` and reads it, every host's manifest key known.
    fn read(&self, reader: &str, pool: &str, seen: &BTreeMap<String, u64>) -> PoolReports {
        let local = &self.host(reader).local;
        status_repo::fetch_pool(&self.remote, local, pool).expect("fetch the pool");
        let keys = |h: &str| self.hosts.get(h).map(Host::key);
        status_repo::read_pool(local, pool, &keys, "acme", seen).expect("read the pool")
    }

    /// The refs of a local copy, as `git for-each-ref` lists them.
    fn local_refs(&self, host: &str) -> Vec<String> {
        let out = self.fx.git(
            &self.host(host).local,
            &["for-each-ref", "--format=%(refname)"],
        );
        out.lines().map(str::to_owned).collect()
    }

    /// Writes a commit of `files` (name, bytes) into the served repository at `reference`, as
    /// someone with write access who does not use pacfleet.
    fn write_raw(&self, reference: &str, files: &[(&str, &[u8])]) {
        let _ = fs::remove_dir_all(self.fx.path("raw"));
        let repo = self.fx.init("raw");
        for (name, bytes) in files {
            fs::write(repo.join(name), bytes).unwrap();
        }
        self.fx.git(&repo, &["add", "-A"]);
        self.fx.git(&repo, &["commit", "-q", "-m", "raw"]);
        self.fx.git(
            &repo,
            &[
                "push",
                "-q",
                "--force",
                &self.served().display().to_string(),
                &format!("HEAD:{reference}"),
            ],
        );
    }
}

fn rejection<'a>(reports: &'a PoolReports, host: &str) -> &'a ReportRejection {
    let found: Vec<_> = reports.rejected.iter().filter(|(h, _)| h == host).collect();
    assert_eq!(found.len(), 1, "{host}: {:?}", reports.rejected);
    &found[0].1
}

#[test]
fn two_hosts_push_and_a_third_of_the_pool_reads_both() {
    let w = world(&[
        ("ws-01", "ws"),
        ("ws-02", "ws"),
        ("ws-03", "ws"),
        ("db-01", "db"),
    ]);
    let (a, b) = (w.host("ws-01"), w.host("ws-02"));
    w.push_as("ws-01", &a.signed(1), "ws", "ws-01");
    w.push_as("ws-02", &b.signed(7), "ws", "ws-02");
    w.push_as("db-01", &w.host("db-01").signed(3), "db", "db-01");

    let seen = BTreeMap::new();
    let reports = w.read("ws-03", "ws", &seen);
    assert!(reports.rejected.is_empty(), "{:?}", reports.rejected);
    assert_eq!(reports.valid.keys().collect::<Vec<_>>(), ["ws-01", "ws-02"]);
    assert_eq!(reports.valid["ws-01"].sequence, 1);
    assert_eq!(reports.valid["ws-02"].sequence, 7);
    assert_eq!(reports.valid["ws-02"].host, "ws-02");

    // The ref-prefix fetch brought the pool's refs only: nothing of pool db is in the copy.
    assert_eq!(
        w.local_refs("ws-03"),
        [
            "refs/pacfleet/status/ws/ws-01",
            "refs/pacfleet/status/ws/ws-02"
        ]
    );
    let keys = |h: &str| w.hosts.get(h).map(Host::key);
    let all = status_repo::read_all(&w.host("ws-03").local, &keys, "acme", &seen).unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["ws"]);

    // A host's next report replaces its last (a parentless commit, force-pushed); the pusher's
    // own copy keeps it under refs/pacfleet/outgoing, outside the fetched refs.
    w.push_as("ws-01", &a.signed(2), "ws", "ws-01");
    let reports = w.read("ws-03", "ws", &seen);
    assert_eq!(reports.valid["ws-01"].sequence, 2);
    let parents = w.fx.git(
        &w.served(),
        &["rev-list", "--count", "refs/pacfleet/status/ws/ws-01"],
    );
    assert_eq!(parents, "1", "the report commit has no history");
    let tree = w.fx.git(
        &w.served(),
        &["ls-tree", "--name-only", "refs/pacfleet/status/ws/ws-01"],
    );
    assert_eq!(tree, "report.json\nreport.json.minisig");
    assert!(
        w.local_refs("ws-01")
            .contains(&"refs/pacfleet/outgoing".to_owned())
    );

    // fleet status reads every pool; a deleted ref is pruned from the copy.
    let everything = w.tmp.path().join("operator/status.git");
    status_repo::fetch_all(&w.remote, &everything).unwrap();
    let all = status_repo::read_all(&everything, &keys, "acme", &seen).unwrap();
    assert_eq!(all.keys().collect::<Vec<_>>(), ["db", "ws"]);
    assert_eq!(all["db"].valid["db-01"].sequence, 3);
    w.fx.git(
        &w.served(),
        &["update-ref", "-d", "refs/pacfleet/status/ws/ws-02"],
    );
    let reports = w.read("ws-03", "ws", &seen);
    assert_eq!(reports.valid.keys().collect::<Vec<_>>(), ["ws-01"]);
}

#[test]
fn forged_copied_replayed_and_foreign_reports_are_rejected_and_counted() {
    let w = world(&[
        ("ws-01", "ws"),
        ("ws-02", "ws"),
        ("ws-03", "ws"),
        ("ws-04", "ws"),
        ("ws-05", "ws"),
        ("ws-06", "ws"),
        ("ws-07", "ws"),
        ("reader", "ws"),
    ]);
    let (a, b) = (w.host("ws-01"), w.host("ws-02"));
    let old = a.signed(4);
    w.push_as("ws-01", &old, "ws", "ws-01");
    w.push_as("ws-01", &a.signed(5), "ws", "ws-01");
    let reports = w.read("reader", "ws", &BTreeMap::new());
    assert_eq!(reports.valid["ws-01"].sequence, 5);
    let seen: BTreeMap<String, u64> = reports
        .valid
        .iter()
        .map(|(h, r)| (h.clone(), r.sequence))
        .collect();

    // Everyone may push here. Someone with a key of their own signs a report naming ws-02.
    let attacker = minisign::KeyPair::generate_unencrypted_keypair().unwrap();
    let forged = report::sign(&b.report(9), &attacker.sk).unwrap();
    w.push_as("reader", &forged, "ws", "ws-02");
    // ws-01's genuine report, copied under ws-03's ref.
    w.push_as("reader", &a.signed(6), "ws", "ws-03");
    // ws-04 signs, with its own key, a report naming ws-01.
    let mut naming = w.host("ws-04").report(1);
    naming.host = "ws-01".to_owned();
    let naming = report::sign(&naming, &w.host("ws-04").keys.sk).unwrap();
    w.push_as("reader", &naming, "ws", "ws-04");
    // ws-05's report for another fleet sharing the status repository.
    let mut foreign = w.host("ws-05").report(1);
    foreign.fleet = "globex".to_owned();
    let foreign = report::sign(&foreign, &w.host("ws-05").keys.sk).unwrap();
    w.push_as("ws-05", &foreign, "ws", "ws-05");
    // An unsigned one under ws-06's ref.
    let mut unsigned = w.host("ws-06").signed(1);
    unsigned.signature.clear();
    w.push_as("reader", &unsigned, "ws", "ws-06");
    // ws-01's older report, pushed again over its newer one.
    w.push_as("reader", &old, "ws", "ws-01");
    // And one host reports as it should.
    w.push_as("ws-07", &w.host("ws-07").signed(1), "ws", "ws-07");

    let reports = w.read("reader", "ws", &seen);
    assert_eq!(reports.valid.keys().collect::<Vec<_>>(), ["ws-07"]);
    assert!(matches!(
        rejection(&reports, "ws-01"),
        ReportRejection::Replayed {
            seen: 5,
            got: 4,
            ..
        }
    ));
    assert!(matches!(
        rejection(&reports, "ws-02"),
        ReportRejection::WrongKey { .. }
    ));
    assert!(matches!(
        rejection(&reports, "ws-03"),
        ReportRejection::WrongKey { .. }
    ));
    assert!(matches!(
        rejection(&reports, "ws-04"),
        ReportRejection::WrongHost { named, .. } if named == "ws-01"
    ));
    assert!(matches!(
        rejection(&reports, "ws-05"),
        ReportRejection::WrongFleet { fleet, .. } if fleet == "globex"
    ));
    assert!(matches!(
        rejection(&reports, "ws-06"),
        ReportRejection::Unsigned { .. }
    ));
    assert_eq!(
        reports.rejected_by_kind(),
        BTreeMap::from([
            ("replayed", 1),
            ("unsigned", 1),
            ("wrong-fleet", 1),
            ("wrong-host", 1),
            ("wrong-key", 2),
        ])
    );
    let message = rejection(&reports, "ws-02").to_string();
    assert!(message.contains("hosts/ws-02.yaml"), "{message}");

    // A host whose manifest names no key: nothing it writes counts.
    let local = &w.host("reader").local;
    let no_keys = |_: &str| None;
    let reports = status_repo::read_pool(local, "ws", &no_keys, "acme", &seen).unwrap();
    assert!(reports.valid.is_empty());
    assert_eq!(reports.rejected_by_kind()["no-key"], 7);
}

#[test]
fn oversized_and_malformed_refs_are_not_read() {
    let w = world(&[("ws-01", "ws"), ("reader", "ws")]);
    let a = w.host("ws-01");
    // A 2 MiB report.json (zeros: the pack is small, the blob is not).
    let huge = vec![b'0'; 2 << 20];
    let sig = a.signed(1).signature;
    w.write_raw(
        "refs/pacfleet/status/ws/ws-01",
        &[
            ("report.json", &huge),
            ("report.json.minisig", sig.as_bytes()),
        ],
    );
    // A ref whose commit has no report.json, and one too deep to name a host.
    w.write_raw("refs/pacfleet/status/ws/reader", &[("README", b"hello")]);
    w.write_raw("refs/pacfleet/status/ws/x/y", &[("report.json", b"{}")]);
    let reports = w.read("reader", "ws", &BTreeMap::new());
    assert!(reports.valid.is_empty());
    match rejection(&reports, "ws-01") {
        ReportRejection::TooLarge {
            file, size, limit, ..
        } => {
            assert_eq!((*file, *size), ("report.json", 2 << 20));
            assert_eq!(*limit, report::MAX_REPORT_BYTES as u64);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        rejection(&reports, "reader"),
        ReportRejection::NotAReport { detail, .. } if detail.contains("no report.json")
    ));
    assert!(matches!(
        rejection(&reports, "x/y"),
        ReportRejection::NotAReport { .. }
    ));

    // A fetch stops when what arrives passes its bound, and says so.
    let mut noise = Vec::with_capacity(1 << 20);
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    while noise.len() < 1 << 20 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        noise.extend_from_slice(&x.to_le_bytes());
    }
    w.write_raw("refs/pacfleet/status/ws/ws-01", &[("report.json", &noise)]);
    let remote = StatusRemote {
        max_fetch_bytes: 256 << 10,
        ..w.remote.clone()
    };
    let fresh = w.tmp.path().join("fresh/status.git");
    let e = status_repo::fetch_pool(&remote, &fresh, "ws").unwrap_err();
    assert!(
        matches!(
            &e,
            FetchError::Fetch {
                source: GitError::TooLarge { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("max_pack_size"), "{e}");
}

/// A TCP server that accepts connections and never answers (a hung git daemon or ssh).
fn silent_server() -> (TcpListener, u16) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    (listener, port)
}

/// The command lines of running processes that hold `needle` as an argument (or in one).
fn processes_mentioning(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let state = fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let zombie = state
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z'));
        if !zombie
            && args
                .first()
                .is_some_and(|a| a.ends_with("ssh") || a.ends_with("git"))
            && args.iter().any(|a| a.contains(needle))
        {
            found.push(args.join(" "));
        }
    }
    found
}

#[test]
fn a_server_that_is_down_or_hangs_fails_within_the_bound() {
    let w = world(&[("ws-01", "ws")]);
    let a = w.host("ws-01");
    let down = StatusRemote {
        url: format!("git://127.0.0.1:{}/status.git", free_port()),
        timeout: Duration::from_secs(10),
        ..w.remote.clone()
    };
    let started = Instant::now();
    let e = status_repo::fetch_pool(&down, &a.local, "ws").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(10), "{e}");
    assert!(
        matches!(
            &e,
            FetchError::Fetch {
                source: GitError::Failed { .. },
                ..
            }
        ),
        "{e:?}"
    );
    let message = e.to_string();
    assert!(
        message.contains("cannot fetch refs/pacfleet/status/ws/")
            && message.contains(&down.url)
            && message.contains("status_repo"),
        "{message}"
    );
    let e = status_repo::push(&down, &a.local, &a.signed(1), "ws", "ws-01").unwrap_err();
    assert!(
        matches!(
            &e,
            PushError::Push {
                source: GitError::Failed { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("refs/pacfleet/status/ws/ws-01"),
        "{e}"
    );

    // Accepts, then says nothing: git is stopped at the bound, with its children.
    let (_listener, port) = silent_server();
    let hung = StatusRemote {
        url: format!("git://127.0.0.1:{port}/status.git"),
        timeout: Duration::from_secs(2),
        ..w.remote.clone()
    };
    let started = Instant::now();
    let e = status_repo::fetch_pool(&hung, &a.local, "ws").unwrap_err();
    let took = started.elapsed();
    assert!(
        took >= Duration::from_secs(2) && took < Duration::from_secs(5),
        "{took:?}: {e}"
    );
    assert!(
        matches!(
            &e,
            FetchError::Fetch {
                source: GitError::TimedOut { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(e.to_string().contains("did not finish within 2s"), "{e}");
    let started = Instant::now();
    let e = status_repo::push(&hung, &a.local, &a.signed(1), "ws", "ws-01").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(
        matches!(
            &e,
            PushError::Push {
                source: GitError::TimedOut { .. },
                ..
            }
        ),
        "{e:?}"
    );
    // Over ssh the same: ssh (git's child) waits for the server's banner forever, and is
    // stopped with git.
    let hung_ssh = StatusRemote {
        url: format!("ssh://root@127.0.0.1:{port}/status.git"),
        ssh: Some(SshIdentity {
            key: w.tmp.path().join("no-such-key"),
            known_hosts: w.tmp.path().join("no-such-known-hosts"),
        }),
        ..hung
    };
    let started = Instant::now();
    let e = status_repo::push(&hung_ssh, &a.local, &a.signed(1), "ws", "ws-01").unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "{e}");
    assert!(e.to_string().contains("did not finish within 2s"), "{e}");
    let left = processes_mentioning(&format!("{port}"));
    assert!(left.is_empty(), "left running: {left:?}");
    // The bad names a caller could pass are refused before anything runs.
    let e = status_repo::push(&w.remote, &a.local, &a.signed(1), "ws", "../x").unwrap_err();
    assert!(matches!(e, PushError::RefName(_)), "{e:?}");
}

#[test]
fn reports_go_over_ssh_with_the_configured_key_and_known_hosts_only() {
    if !Path::new("/usr/sbin/sshd").exists() || !crate::harness::is_root() {
        crate::harness::skip("the ssh status repository test needs /usr/sbin/sshd and root");
        return;
    }
    let w = world(&[("ws-01", "ws"), ("ws-02", "ws")]);
    let ssh_dir = w.tmp.path().join("ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    let key = ssh_dir.join("id_ed25519");
    crate::ssh::keygen(&key, "status deploy key");
    let sshd = crate::ssh::Sshd::start(&w.tmp.path().join("sshd"), &key.with_extension("pub"));
    let known_hosts = ssh_dir.join("known_hosts");
    fs::write(&known_hosts, &sshd.known_hosts_line).unwrap();
    let remote = StatusRemote {
        url: format!("ssh://root@127.0.0.1:{}{}", sshd.port, w.served().display()),
        ssh: Some(SshIdentity {
            key: key.clone(),
            known_hosts: known_hosts.clone(),
        }),
        timeout: Duration::from_secs(20),
        max_fetch_bytes: 256 << 20,
    };
    let a = w.host("ws-01");
    status_repo::push(&remote, &a.local, &a.signed(3), "ws", "ws-01").expect("push over ssh");
    let reader = &w.host("ws-02").local;
    status_repo::fetch_pool(&remote, reader, "ws").expect("fetch over ssh");
    let keys = |h: &str| w.hosts.get(h).map(Host::key);
    let reports = status_repo::read_pool(reader, "ws", &keys, "acme", &BTreeMap::new()).unwrap();
    assert_eq!(reports.valid["ws-01"].sequence, 3);

    // A known_hosts file with another server's key: refused, not learnt, no prompt.
    let other = ssh_dir.join("other_known_hosts");
    let line = sshd.known_hosts_line.clone();
    let mut fields: Vec<&str> = line.split_whitespace().collect();
    let fake = w.tmp.path().join("fake_host_key");
    crate::ssh::keygen(&fake, "another server");
    let fake_pub = fs::read_to_string(fake.with_extension("pub")).unwrap();
    fields[2] = fake_pub.split_whitespace().nth(1).unwrap();
    fs::write(&other, format!("{}\n", fields.join(" "))).unwrap();
    let wrong = StatusRemote {
        ssh: Some(SshIdentity {
            key,
            known_hosts: other.clone(),
        }),
        ..remote
    };
    let e = status_repo::push(&wrong, &a.local, &a.signed(4), "ws", "ws-01").unwrap_err();
    assert!(
        matches!(
            &e,
            PushError::Push {
                source: GitError::Failed { .. },
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().to_lowercase().contains("host key"),
        "ssh names the host key: {e}"
    );
    assert_eq!(fs::read_to_string(&other).unwrap().lines().count(), 1);
}
