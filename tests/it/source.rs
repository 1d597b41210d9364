//! `pacfleet::source` against real repositories made with the `git` CLI, served over local
//! paths, `file://`, a real `git daemon` (`git://`) and a real smart-HTTP server
//! (`git http-backend` behind a tiny Python CGI wrapper), all on loopback.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pacfleet::source::{self, FetchError, FetchOptions, Fetched, NOTES_REF, ReadError, RepoSpec};

use crate::harness::git_fixtures::{Fixture, HttpServer, free_port};

use crate::harness::GitDaemon;

fn spec(url: impl Into<String>) -> RepoSpec {
    RepoSpec {
        url: url.into(),
        branch: "main".into(),
    }
}

fn yaml_only(path: &str) -> bool {
    path.ends_with(".yaml")
}

/// A fleet repository with a few manifests and one non-manifest file.
fn fleet_source(fx: &Fixture, name: &str) -> (PathBuf, String) {
    let src = fx.init(name);
    let head = fx.commit(
        &src,
        &[
            ("fleet.yaml", "name: test-fleet\n"),
            ("pools/web.yaml", "packages: [nginx]\n"),
            ("pools/db.yaml", "packages: [postgresql]\n"),
            ("README.md", "not a manifest\n"),
        ],
        "initial fleet",
    );
    (src, head)
}

/// Refs of a repository as `git for-each-ref` prints them.
fn refs_of(fx: &Fixture, repo: &Path) -> String {
    fx.git(repo, &["for-each-ref", "--format=%(refname) %(objectname)"])
}

/// Initial fetch, read_tree, no-op fetch, fetch of a new commit, against `url`.
fn check_fetch_cycle(fx: &Fixture, src: &Path, first: &str, url: &str) {
    let dest = fx.path("mirror.git");
    let refs_before = refs_of(fx, src);

    let fetched = source::fetch(&spec(url), &dest).expect("initial fetch");
    assert_eq!(
        fetched,
        Fetched {
            commit: first.to_owned(),
            tree: fx.git(src, &["rev-parse", "HEAD^{tree}"]),
            updated: true,
        }
    );
    assert_eq!(
        fx.git(&dest, &["rev-parse", "--is-bare-repository"]),
        "true"
    );
    assert_eq!(
        fx.git(&dest, &["rev-parse", "refs/remotes/origin/main"]),
        first
    );
    assert!(!dest.join("fleet.yaml").exists(), "mirror has no work tree");

    let files = source::read_tree(&dest, &fetched.commit, yaml_only).expect("read_tree");
    let files: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, b)| (p.as_str(), std::str::from_utf8(b).expect("utf-8")))
        .collect();
    assert_eq!(
        files,
        [
            ("fleet.yaml", "name: test-fleet\n"),
            ("pools/db.yaml", "packages: [postgresql]\n"),
            ("pools/web.yaml", "packages: [nginx]\n"),
        ]
    );

    let packs = pack_files(&dest);
    let again = source::fetch(&spec(url), &dest).expect("no-op fetch");
    assert_eq!(again.commit, first);
    assert!(!again.updated, "nothing new: {again:?}");
    assert_eq!(pack_files(&dest), packs, "a no-op fetch writes no pack");

    let second = fx.commit(
        src,
        &[("pools/web.yaml", "packages: [nginx, certbot]\n")],
        "add certbot",
    );
    let refs_mid = refs_of(fx, src);
    let next = source::fetch(&spec(url), &dest).expect("incremental fetch");
    assert_eq!(next.commit, second);
    assert!(next.updated);
    let web = source::read_tree(&dest, &next.commit, |p| p == "pools/web.yaml").expect("read_tree");
    assert_eq!(
        web,
        [(
            "pools/web.yaml".to_owned(),
            b"packages: [nginx, certbot]\n".to_vec()
        )]
    );
    // The old commit is still readable.
    assert_eq!(
        source::read_tree(&dest, first, yaml_only)
            .expect("old tree")
            .len(),
        3
    );

    // Fetching never touches the source.
    assert_ne!(refs_before, refs_mid);
    assert_eq!(refs_mid, refs_of(fx, src));
}

#[test]
fn local_path_to_non_bare_repo() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    check_fetch_cycle(&fx, &src, &first, &src.display().to_string());
    assert!(
        fx.git(&src, &["status", "--porcelain"]).is_empty(),
        "source work tree untouched"
    );
}

#[test]
fn file_url_to_bare_repo() {
    let fx = Fixture::new();
    let (work, first) = fleet_source(&fx, "work");
    let bare = fx.path("fleet.git");
    fx.git(
        &fx.root(),
        &["clone", "--bare", "-q", &path_str(&work), &path_str(&bare)],
    );
    // Commits made later in `work` reach the bare repo by pushing.
    let url = format!("file://{}", bare.display());
    let dest = fx.path("mirror.git");
    let fetched = source::fetch(&spec(&url), &dest).expect("fetch");
    assert_eq!(fetched.commit, first);
    assert!(fetched.updated);
    let second = fx.commit(&work, &[("fleet.yaml", "name: renamed\n")], "rename");
    fx.git(&work, &["push", "-q", &path_str(&bare), "main"]);
    let next = source::fetch(&spec(&url), &dest).expect("fetch");
    assert_eq!(
        (next.commit.as_str(), next.updated),
        (second.as_str(), true)
    );
    let again = source::fetch(&spec(&url), &dest).expect("fetch");
    assert!(!again.updated);
}

#[test]
fn relative_local_path() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    let relative = relative_to_cwd(&src);
    assert!(relative.is_relative());
    let fetched = source::fetch(&spec(path_str(&relative)), &fx.path("mirror.git")).expect("fetch");
    assert_eq!(fetched.commit, first);
}

#[test]
fn existing_empty_dest_directory_is_initialised() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    let dest = fx.path("cache/deep/mirror.git");
    std::fs::create_dir_all(&dest).expect("mkdir");
    let fetched = source::fetch(&spec(path_str(&src)), &dest).expect("fetch");
    assert_eq!(fetched.commit, first);
}

#[test]
fn git_daemon() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    let daemon = GitDaemon::start(&fx.root());
    let url = format!("git://127.0.0.1:{}/fleet", daemon.port);
    check_fetch_cycle(&fx, &src, &first, &url);
}

/// A pack larger than `max_pack_bytes` is stopped while it arrives, with an error that names
/// the limit and the fix; the mirror keeps what it had, and a fetch within the limit works.
#[test]
fn a_pack_over_the_limit_is_stopped() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    let daemon = GitDaemon::start(&fx.root());
    let url = format!("git://127.0.0.1:{}/fleet", daemon.port);
    let dest = fx.path("mirror.git");
    source::fetch(&spec(&url), &dest).expect("initial fetch");
    // 16 MiB that do not compress, pushed by someone with write access.
    let mut noise = vec![0u8; 16 << 20];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    for b in noise.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    std::fs::write(src.join("blob.bin"), &noise).expect("write noise");
    fx.git(&src, &["add", "blob.bin"]);
    fx.git(&src, &["commit", "-q", "-m", "huge"]);
    let options = FetchOptions {
        max_pack_bytes: 1 << 20,
        ..FetchOptions::default()
    };
    let err = source::fetch_with(&spec(&url), &dest, &options).expect_err("over the limit");
    assert!(matches!(err, FetchError::TooLarge { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("more than 1048576 bytes") && msg.contains("max_pack_size"),
        "{msg}"
    );
    let tip = fx.git(&dest, &["rev-parse", "refs/remotes/origin/main"]);
    assert_eq!(tip.trim(), first, "the mirror keeps what it had");
    fx.git(&dest, &["fsck", "--no-progress"]);
    source::fetch(&spec(&url), &dest).expect("within the default limit");
}

/// A pass told to stop (SIGTERM, as systemd stops the unit) while its fetch waits on a server
/// that never answers stops at once, not after the fetch's 10-minute limit; nothing changed.
#[test]
fn a_stop_signal_ends_a_pass_waiting_on_its_fetch() {
    let tmp = crate::harness::tempdir();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        let held: Vec<_> = listener.incoming().take(1).collect();
        std::thread::sleep(Duration::from_secs(20));
        drop(held);
    });
    let host = crate::harness::HostDir::new(tmp.path(), "ws-01", &[]);
    let (public, _) = crate::harness::keypair(&tmp.path().join("keys"), "ops");
    let cfg = host.agent_yaml(&format!("git://127.0.0.1:{port}/fleet"), &public, "");
    let child = crate::harness::fleetctl()
        .arg("reconcile")
        .arg("--config")
        .arg(&cfg)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn");
    std::thread::sleep(Duration::from_millis(800));
    let pid = child.id().to_string();
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    assert!(kill.success());
    let start = Instant::now();
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("was stopped by a signal"), "{err}");
    let status = std::fs::read_to_string(host.state_dir.join("status.json")).expect("status");
    assert!(status.contains("\"failure\": \"stopped\""), "{status}");
    drop(holder);
}

#[test]
fn smart_http() {
    let fx = Fixture::new();
    let (work, first) = fleet_source(&fx, "work");
    let bare = fx.path("srv/fleet.git");
    fx.git(
        &fx.root(),
        &["clone", "--bare", "-q", &path_str(&work), &path_str(&bare)],
    );
    let Some(server) = HttpServer::start(&fx, &fx.path("srv")) else {
        crate::harness::skip("smart_http: python3 is not available");
        return;
    };
    let url = format!("http://127.0.0.1:{}/fleet.git", server.port);
    let dest = fx.path("mirror.git");
    let fetched = source::fetch(&spec(&url), &dest).expect("fetch over http");
    assert_eq!(
        (fetched.commit.as_str(), fetched.updated),
        (first.as_str(), true)
    );
    assert_eq!(
        source::read_tree(&dest, &first, yaml_only)
            .expect("read")
            .len(),
        3
    );

    let start = Instant::now();
    let again = source::fetch(&spec(&url), &dest).expect("no-op fetch over http");
    eprintln!("no-op fetch over http://: {:?}", start.elapsed());
    assert!(!again.updated);

    fx.git(
        &work,
        &[
            "notes",
            "--ref=pacfleet",
            "add",
            "-m",
            "sig-over-http",
            "HEAD",
        ],
    );
    let second = fx.commit(&work, &[("pools/new.yaml", "packages: []\n")], "new pool");
    fx.git(
        &work,
        &[
            "push",
            "-q",
            &path_str(&bare),
            "main",
            "refs/notes/pacfleet",
        ],
    );
    let next = source::fetch(&spec(&url), &dest).expect("incremental fetch over http");
    assert_eq!(
        (next.commit.as_str(), next.updated),
        (second.as_str(), true)
    );
    assert_eq!(
        source::read_note(&dest, &first).expect("note"),
        Some(b"sig-over-http\n".to_vec())
    );
}

#[test]
fn notes_are_fetched_updated_and_removed() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    fx.git(
        &src,
        &[
            "notes",
            "--ref=pacfleet",
            "add",
            "-m",
            "signature-1",
            &first,
        ],
    );
    let second = fx.commit(&src, &[("pools/x.yaml", "packages: []\n")], "unsigned");
    let dest = fx.path("mirror.git");
    let url = path_str(&src);

    source::fetch(&spec(&url), &dest).expect("fetch");
    assert_eq!(
        source::read_note(&dest, &first).expect("read note"),
        Some(b"signature-1\n".to_vec())
    );
    assert_eq!(source::read_note(&dest, &second).expect("read note"), None);
    // Revisions work too, not only hex ids.
    assert_eq!(
        source::read_note(&dest, "origin/main~1").expect("read note"),
        Some(b"signature-1\n".to_vec())
    );

    // A note added later arrives even though the branch did not move.
    fx.git(
        &src,
        &[
            "notes",
            "--ref=pacfleet",
            "add",
            "-m",
            "signature-2",
            &second,
        ],
    );
    let fetched = source::fetch(&spec(&url), &dest).expect("fetch");
    assert!(!fetched.updated, "branch unchanged");
    assert_eq!(
        source::read_note(&dest, &second).expect("read note"),
        Some(b"signature-2\n".to_vec())
    );

    // The remote drops its notes: so does the mirror.
    fx.git(&src, &["update-ref", "-d", NOTES_REF]);
    source::fetch(&spec(&url), &dest).expect("fetch");
    assert_eq!(source::read_note(&dest, &first).expect("read note"), None);
    assert_eq!(fx.git(&dest, &["for-each-ref", NOTES_REF]), "");
}

#[test]
fn no_notes_ref_anywhere_is_fine() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    let dest = fx.path("mirror.git");
    source::fetch(&spec(path_str(&src)), &dest).expect("fetch without notes");
    assert_eq!(source::read_note(&dest, &first).expect("read note"), None);
}

#[test]
fn fanned_out_notes() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    let second = fx.commit(&src, &[("a.yaml", "a: 1\n")], "second");
    let third = fx.commit(&src, &[("b.yaml", "b: 1\n")], "third");
    // Build the notes tree by hand: `first` two levels deep (ab/cd/ef…), `second` one level
    // deep (ab/cdef…), `third` flat. git itself reads all of these forms.
    let blob = |text: &str| fx.git_stdin(&src, &["hash-object", "-w", "--stdin"], text);
    let tree = |entries: &[(&str, &str, &str)]| {
        let listing: String = entries
            .iter()
            .map(|(mode, id, name)| {
                let kind = if *mode == "040000" { "tree" } else { "blob" };
                format!("{mode} {kind} {id}\t{name}\n")
            })
            .collect();
        fx.git_stdin(&src, &["mktree"], &listing)
    };
    let (f1, f2, f3) = (&first[..2], &first[2..4], &first[4..]);
    let first_inner = tree(&[("100644", &blob("deep-note"), f3)]);
    let first_mid = tree(&[("040000", &first_inner, f2)]);
    let second_dir = tree(&[("100644", &blob("fanout-note"), &second[2..])]);
    let mut root_entries = vec![
        ("040000".to_owned(), first_mid, f1.to_owned()),
        ("100644".to_owned(), blob("flat-note"), third.clone()),
    ];
    if &second[..2] == f1 {
        // 1 in 256: the directory name is taken by `first`; store `second` flat instead.
        root_entries.push(("100644".to_owned(), blob("fanout-note"), second.clone()));
    } else {
        root_entries.push(("040000".to_owned(), second_dir, second[..2].to_owned()));
    }
    let root_entries: Vec<(&str, &str, &str)> = root_entries
        .iter()
        .map(|(m, i, n)| (m.as_str(), i.as_str(), n.as_str()))
        .collect();
    let root = tree(&root_entries);
    let notes_commit = fx.git(&src, &["commit-tree", &root, "-m", "notes"]);
    fx.git(&src, &["update-ref", NOTES_REF, &notes_commit]);
    // Sanity check: git agrees with the layout.
    assert_eq!(
        fx.git(&src, &["notes", "--ref=pacfleet", "show", &first]),
        "deep-note"
    );
    assert_eq!(
        fx.git(&src, &["notes", "--ref=pacfleet", "show", &second]),
        "fanout-note"
    );

    let dest = fx.path("mirror.git");
    source::fetch(&spec(path_str(&src)), &dest).expect("fetch");
    let note = |c: &str| source::read_note(&dest, c).expect("read note");
    assert_eq!(note(&first), Some(b"deep-note".to_vec()));
    assert_eq!(note(&second), Some(b"fanout-note".to_vec()));
    assert_eq!(note(&third), Some(b"flat-note".to_vec()));
}

#[test]
fn force_push_and_history() {
    let fx = Fixture::new();
    let (src, a) = fleet_source(&fx, "fleet");
    let b = fx.commit(&src, &[("pools/b.yaml", "b: 1\n")], "b");
    let dest = fx.path("mirror.git");
    let url = path_str(&src);
    assert_eq!(source::fetch(&spec(&url), &dest).expect("fetch").commit, b);

    // Rewrite history: drop b, commit c on top of a.
    fx.git(&src, &["reset", "-q", "--hard", "HEAD~1"]);
    let c = fx.commit(&src, &[("pools/c.yaml", "c: 1\n")], "c");
    let fetched = source::fetch(&spec(&url), &dest).expect("fetch after force push");
    assert_eq!(
        (fetched.commit.as_str(), fetched.updated),
        (c.as_str(), true)
    );

    assert!(!source::is_ancestor(&dest, &b, &c).expect("is_ancestor"));
    assert!(source::is_ancestor(&dest, &a, &c).expect("is_ancestor"));
    assert!(source::is_ancestor(&dest, &a, &b).expect("is_ancestor"));
    assert!(source::is_ancestor(&dest, &c, &c).expect("is_ancestor"));
    assert!(!source::is_ancestor(&dest, &c, &a).expect("is_ancestor"));
    // The dropped commit is still readable from the mirror.
    assert_eq!(
        source::read_tree(&dest, &b, |p| p == "pools/b.yaml")
            .expect("read")
            .len(),
        1
    );

    assert_eq!(
        source::commits_between(&dest, Some(&a), &c).expect("walk"),
        [c.as_str()]
    );
    assert_eq!(
        source::commits_between(&dest, None, &c).expect("walk"),
        [c.as_str(), a.as_str()]
    );
    assert_eq!(
        source::commits_between(&dest, Some(&b), &c).expect("walk"),
        [c.as_str()]
    );
    assert!(
        source::commits_between(&dest, Some(&c), &c)
            .expect("walk")
            .is_empty()
    );

    let d = fx.commit(&src, &[("d.yaml", "d: 1\n")], "d");
    let e = fx.commit(&src, &[("e.yaml", "e: 1\n")], "e");
    source::fetch(&spec(&url), &dest).expect("fetch");
    assert_eq!(
        source::commits_between(&dest, Some(&a), &e).expect("walk"),
        [e.as_str(), d.as_str(), c.as_str()]
    );
}

#[test]
fn rev_parse_in_source_and_mirror() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    let second = fx.commit(&src, &[("x.yaml", "x: 1\n")], "second");
    fx.git(&src, &["tag", "-a", "-m", "release", "v1", &first]);
    assert_eq!(source::rev_parse(&src, "HEAD").expect("HEAD"), second);
    assert_eq!(source::rev_parse(&src, "main").expect("main"), second);
    assert_eq!(
        source::rev_parse(&src, "v1").expect("annotated tag peeled"),
        first
    );
    assert_eq!(
        source::rev_parse(&src, &second[..10]).expect("short id"),
        second
    );
    assert_eq!(
        source::rev_parse(&src.join(".git"), "HEAD~1").expect("git dir"),
        first
    );

    let dest = fx.path("mirror.git");
    source::fetch(&spec(path_str(&src)), &dest).expect("fetch");
    assert_eq!(
        source::rev_parse(&dest, "origin/main").expect("origin/main"),
        second
    );
    assert_eq!(source::rev_parse(&dest, &first).expect("hex"), first);

    let err = source::rev_parse(&dest, "no-such-branch").expect_err("unknown revision");
    assert!(matches!(err, ReadError::UnknownRevision { .. }), "{err:?}");
    assert!(err.to_string().contains("no-such-branch"), "{err}");

    let err = source::rev_parse(&dest, "origin/main^{tree}").expect_err("tree is no commit");
    assert!(matches!(err, ReadError::NotACommit { .. }), "{err:?}");

    let missing = "0123456789012345678901234567890123456789";
    let err = source::read_tree(&dest, missing, |_| true).expect_err("missing commit");
    assert!(err.to_string().contains(missing), "{err}");

    let not_a_repo = fx.path("plain-dir");
    std::fs::create_dir_all(&not_a_repo).expect("mkdir");
    let err = source::rev_parse(&not_a_repo, "HEAD").expect_err("not a repository");
    assert!(matches!(err, ReadError::Open { .. }), "{err:?}");
    assert!(err.to_string().contains("plain-dir"), "{err}");
}

#[test]
fn unreachable_git_port_names_the_url() {
    let fx = Fixture::new();
    let url = format!("git://127.0.0.1:{}/fleet", free_port());
    let err = source::fetch(&spec(&url), &fx.path("mirror.git")).expect_err("closed port");
    assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.contains(&url), "{msg}");
    assert!(msg.contains("agent.yaml"), "{msg}");
}

#[test]
fn passwords_in_urls_are_not_shown() {
    let fx = Fixture::new();
    // A password, and a token as the user name (as forges hand them out).
    for url in [
        format!(
            "http://fleet:s3cr3t-t0ken@127.0.0.1:{}/fleet.git",
            free_port()
        ),
        format!("http://s3cr3t-t0ken@127.0.0.1:{}/fleet.git", free_port()),
    ] {
        let err = source::fetch(&spec(&url), &fx.path("mirror.git")).expect_err("closed port");
        for text in [err.to_string(), format!("{err:?}")] {
            assert!(!text.contains("s3cr3t-t0ken"), "{text}");
            assert!(text.contains("http://<redacted>@127.0.0.1"), "{text}");
        }
    }
}

/// A pass fetching over http with a token as the user name: its log line, its output and its
/// status never show the token (nor does a failed pass's error).
#[test]
fn tokens_in_repo_urls_are_not_logged_by_a_pass() {
    let fx = Fixture::new();
    let tmp = crate::harness::tempdir();
    let fleet = crate::harness::FleetRepo::new(tmp.path());
    fleet.commit(
        "fleet",
        &[
            ("fleet.yaml", "kind: Fleet\nname: acme\n"),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackages: []\n",
            ),
        ],
    );
    let served = fx.path("srv/fleet.git");
    fx.git(
        &fx.root(),
        &[
            "clone",
            "--mirror",
            "-q",
            &path_str(&fleet.dir),
            &path_str(&served),
        ],
    );
    let Some(server) = HttpServer::start(&fx, &fx.path("srv")) else {
        panic!("python3 is needed for the smart-HTTP server (scripts/deps.sh installs it)");
    };
    let host = crate::harness::HostDir::new(tmp.path(), "ws-01", &[]);
    for (url, code) in [
        (
            format!("http://ghp_s3cr3tT0ken@127.0.0.1:{}/fleet.git", server.port),
            0,
        ),
        (
            format!("http://ghp_s3cr3tT0ken@127.0.0.1:{}/fleet.git", free_port()),
            2,
        ),
    ] {
        let cfg = host.agent_yaml(&url, &fleet.public_key, "");
        let (got, out, err) = crate::harness::run(
            crate::harness::fleetctl()
                .args(["-v", "reconcile", "--config"])
                .arg(&cfg),
        );
        assert_eq!(got, code, "{out}\n{err}");
        let status = std::fs::read_to_string(host.state_dir.join("status.json")).expect("status");
        for text in [&out, &err, &status] {
            assert!(!text.contains("s3cr3tT0ken"), "{text}");
        }
        assert!(err.contains("http://<redacted>@127.0.0.1"), "{err}");
    }
}

#[test]
fn missing_path_names_the_path() {
    let fx = Fixture::new();
    let missing = fx.path("does-not-exist");
    for url in [path_str(&missing), format!("file://{}", missing.display())] {
        let err = source::fetch(&spec(&url), &fx.path("mirror.git")).expect_err("missing path");
        let msg = err.to_string();
        assert!(msg.contains(&url), "{msg}");
        assert!(matches!(err, FetchError::Connect { .. }), "{err:?}");
    }
}

#[test]
fn missing_branch_names_the_branch() {
    let fx = Fixture::new();
    let (src, _) = fleet_source(&fx, "fleet");
    fx.git(&src, &["branch", "staging"]);
    let mut wrong = spec(path_str(&src));
    wrong.branch = "production".into();
    let err = source::fetch(&wrong, &fx.path("mirror.git")).expect_err("missing branch");
    let msg = err.to_string();
    assert!(
        matches!(&err, FetchError::MissingBranch { branch, available, .. }
            if branch == "production" && available == &["main", "staging"]),
        "{err:?}"
    );
    assert!(msg.contains("\"production\""), "{msg}");
    assert!(msg.contains("pushed"), "{msg}");
}

#[test]
fn missing_branch_is_detected_even_when_notes_exist() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    fx.git(
        &src,
        &["notes", "--ref=pacfleet", "add", "-m", "sig", &first],
    );
    let mut wrong = spec(path_str(&src));
    wrong.branch = "nope".into();
    let err = source::fetch(&wrong, &fx.path("mirror.git")).expect_err("missing branch");
    assert!(matches!(err, FetchError::MissingBranch { .. }), "{err:?}");
}

#[test]
fn invalid_branch_names_are_rejected() {
    let fx = Fixture::new();
    for branch in [
        "",
        "a:b",
        "*",
        "refs/heads/main",
        "with space",
        "-x",
        "a..b",
    ] {
        let s = RepoSpec {
            url: "/nowhere".into(),
            branch: branch.into(),
        };
        let err = source::fetch(&s, &fx.path("mirror.git")).expect_err(branch);
        assert!(
            matches!(err, FetchError::InvalidBranch { .. }),
            "{branch}: {err:?}"
        );
    }
    assert!(
        !fx.path("mirror.git").exists(),
        "nothing created for invalid input"
    );
}

#[test]
fn failed_fetches_leave_the_mirror_intact() {
    let fx = Fixture::new();
    let (src, first) = fleet_source(&fx, "fleet");
    fx.git(
        &src,
        &["notes", "--ref=pacfleet", "add", "-m", "sig", &first],
    );
    let dest = fx.path("mirror.git");
    source::fetch(&spec(path_str(&src)), &dest).expect("fetch");
    let refs = refs_of(&fx, &dest);
    assert!(
        refs.contains("refs/remotes/origin/main") && refs.contains(NOTES_REF),
        "{refs}"
    );

    // New commits exist upstream, but every fetch below fails.
    fx.commit(&src, &[("new.yaml", "n: 1\n")], "new");
    let failing = [
        spec(format!("git://127.0.0.1:{}/fleet", free_port())),
        spec(path_str(&fx.path("gone"))),
        RepoSpec {
            url: path_str(&src),
            branch: "gone".into(),
        },
    ];
    for s in &failing {
        source::fetch(s, &dest).expect_err("must fail");
        assert_eq!(refs_of(&fx, &dest), refs, "after failed fetch of {s:?}");
    }
    let files = source::read_tree(&dest, "origin/main", yaml_only).expect("still readable");
    assert_eq!(files.len(), 3);
    assert_eq!(
        source::read_note(&dest, &first).expect("note"),
        Some(b"sig\n".to_vec())
    );
}

#[test]
fn dest_that_is_not_a_repository_is_reported() {
    let fx = Fixture::new();
    let (src, _) = fleet_source(&fx, "fleet");
    let dest = fx.path("junk");
    std::fs::create_dir_all(&dest).expect("mkdir");
    std::fs::write(dest.join("file"), "x").expect("write");
    let err = source::fetch(&spec(path_str(&src)), &dest).expect_err("junk dest");
    assert!(matches!(err, FetchError::Mirror { .. }), "{err:?}");
    assert!(err.to_string().contains("junk"), "{err}");
}

#[test]
fn silent_server_times_out() {
    let fx = Fixture::new();
    // Accepts connections and never says a word.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let holder = std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in listener.incoming().take(2) {
            held.push(stream);
            std::thread::sleep(Duration::from_secs(6));
        }
    });
    let options = FetchOptions {
        timeout: Duration::from_secs(2),
        ..FetchOptions::default()
    };
    for url in [
        format!("git://127.0.0.1:{port}/fleet"),
        format!("http://127.0.0.1:{port}/fleet.git"),
    ] {
        let start = Instant::now();
        let err = source::fetch_with(&spec(&url), &fx.path("mirror.git"), &options)
            .expect_err("silent server");
        let took = start.elapsed();
        assert!(took < Duration::from_secs(5), "{url} took {took:?}");
        assert!(matches!(err, FetchError::TimedOut { .. }), "{url}: {err:?}");
        assert!(err.to_string().contains(&url), "{err}");
    }
    drop(holder);
}

#[test]
fn no_op_fetch_is_fast() {
    let fx = Fixture::new();
    let (src, _) = fleet_source(&fx, "fleet");
    let daemon = GitDaemon::start(&fx.root());
    let dest_local = fx.path("local.git");
    let dest_git = fx.path("daemon.git");
    let local = spec(path_str(&src));
    let git = spec(format!("git://127.0.0.1:{}/fleet", daemon.port));
    source::fetch(&local, &dest_local).expect("fetch");
    source::fetch(&git, &dest_git).expect("fetch");
    for (what, s, dest) in [
        ("local path", &local, &dest_local),
        ("git://", &git, &dest_git),
    ] {
        let start = Instant::now();
        const RUNS: u32 = 5;
        for _ in 0..RUNS {
            assert!(!source::fetch(s, dest).expect("no-op fetch").updated);
        }
        let each = start.elapsed() / RUNS;
        eprintln!("no-op fetch over {what}: {each:?}");
        assert!(
            each < Duration::from_secs(3),
            "no-op fetch over {what} took {each:?}"
        );
    }
}

/// The files in a repository's pack directory, sorted.
fn pack_files(repo: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(repo.join("objects/pack"))
        .expect("pack dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

fn path_str(path: &Path) -> String {
    path.to_str().expect("UTF-8 temp path").to_owned()
}

/// `path` (absolute) relative to the current directory, via `..` components.
fn relative_to_cwd(path: &Path) -> PathBuf {
    let cwd = std::env::current_dir().expect("cwd");
    let mut rel = PathBuf::new();
    for _ in cwd.components().skip(1) {
        rel.push("..");
    }
    rel.push(path.strip_prefix("/").expect("absolute path"));
    rel
}
