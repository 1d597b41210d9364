//! `fleetctl sign` against a remote (a bare repository on disk, and git daemon): it fetches
//! the remote's signature notes first, so a second operator's first signature in a fresh clone
//! continues the published sequence and its push is accepted; diverged notes are refused with
//! how to merge them; an unreachable remote is refused unless `--offline`, which warns.

use std::fs;
use std::path::{Path, PathBuf};

use crate::harness::{FleetRepo, GitDaemon, fleetctl, run, tempdir};

const FLEET: &str = "kind: Fleet\nname: acme\n";

/// `fleetctl sign REV --repo DIR --key KEY EXTRA…`.
fn sign(repo: &FleetRepo, rev: &str, extra: &[&str]) -> (i32, String, String) {
    run(fleetctl()
        .arg("sign")
        .arg(rev)
        .arg("--repo")
        .arg(&repo.dir)
        .arg("--key")
        .arg(&repo.secret_key)
        .args(extra)
        .env_remove("PACFLEET_KEY_PASSWORD"))
}

fn sign_ok(repo: &FleetRepo, rev: &str, extra: &[&str]) -> (String, String) {
    let (code, out, err) = sign(repo, rev, extra);
    assert_eq!(code, 0, "sign {rev}:\n{out}\n{err}");
    (out, err)
}

/// The sequence in the statement on `rev`.
fn sequence(repo: &FleetRepo, rev: &str) -> u64 {
    repo.git(&["notes", "--ref=pacfleet", "show", rev])
        .lines()
        .find_map(|l| l.strip_prefix("sequence "))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no statement on {rev}"))
}

/// A bare remote `remote.git` under `base`, and operator A's repository pushed to it with
/// `n` signed commits (sequences 1..=n).
fn published(tmp: &Path, base: &Path, n: u64) -> (PathBuf, FleetRepo) {
    let remote = base.join("remote.git");
    let out = std::process::Command::new("git")
        .args(["init", "-q", "--bare", "-b", "main"])
        .arg(&remote)
        .output()
        .expect("git init --bare");
    assert!(out.status.success(), "{out:?}");
    let a = FleetRepo::new(&tmp.join("a"));
    a.git(&["remote", "add", "origin", &remote.display().to_string()]);
    for i in 1..=n {
        let c = a.commit_unsigned(&format!("change {i}"), &[("fleet.yaml", FLEET)]);
        let (out, _) = sign_ok(&a, &c, &[]);
        assert!(out.contains(&format!("sequence  {i}")), "{out}");
    }
    a.git(&["push", "-q", "-u", "origin", "main", "refs/notes/pacfleet"]);
    (remote, a)
}

/// Operator B: a fresh clone of `url` (no local notes), with its own identity and key.
fn clone(tmp: &Path, url: &str, name: &str) -> FleetRepo {
    let dir = tmp.join(name);
    let out = std::process::Command::new("git")
        .args(["clone", "-q", url])
        .arg(&dir)
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .expect("git clone");
    assert!(out.status.success(), "{out:?}");
    let (public_key, secret_key) = crate::harness::keypair(&tmp.join(format!("{name}-keys")), name);
    let repo = FleetRepo {
        dir,
        public_key,
        secret_key,
    };
    repo.git(&["config", "user.name", "Second Operator"]);
    repo.git(&["config", "user.email", "two@example.com"]);
    repo.git(&["config", "commit.gpgsign", "false"]);
    repo
}

#[test]
fn a_second_operator_continues_the_published_sequence() {
    let tmp = tempdir();
    let (remote, _a) = published(tmp.path(), tmp.path(), 3);
    let b = clone(tmp.path(), &remote.display().to_string(), "b");
    assert!(
        b.git(&["for-each-ref", "refs/notes/"]).trim().is_empty(),
        "a fresh clone has no notes"
    );
    let c = b.commit_unsigned("change by b", &[("fleet.yaml", FLEET)]);
    sign_ok(&b, &c, &[]);
    assert_eq!(sequence(&b, &c), 4);
    // The plain push the README shows is accepted: the notes fast-forward the remote's.
    b.git(&["push", "-q", "origin", "main", "refs/notes/pacfleet"]);
    let remote_notes = b.git(&["ls-remote", "origin", "refs/notes/pacfleet"]);
    let local_notes = b.git(&["rev-parse", "refs/notes/pacfleet"]);
    assert!(
        remote_notes.starts_with(local_notes.trim()),
        "{remote_notes}"
    );
}

#[test]
fn over_git_daemon_too() {
    let tmp = tempdir();
    let served = tmp.path().join("served");
    fs::create_dir_all(&served).unwrap();
    let (remote, a) = published(tmp.path(), &served, 2);
    let daemon = GitDaemon::start(&served);
    let url = format!("git://127.0.0.1:{}/remote.git", daemon.port);
    // B reads over git:// and pushes to the same repository on disk (git daemon is read-only).
    let b = clone(tmp.path(), &url, "b");
    b.git(&[
        "remote",
        "set-url",
        "--push",
        "origin",
        &remote.display().to_string(),
    ]);
    let c = b.commit_unsigned("change by b", &[("fleet.yaml", FLEET)]);
    sign_ok(&b, &c, &[]);
    assert_eq!(sequence(&b, &c), 3);
    b.git(&["push", "-q", "origin", "main", "refs/notes/pacfleet"]);
    // A, whose notes are behind now, is fast-forwarded before its next signature.
    a.git(&["pull", "-q", "--ff-only", "origin", "main"]);
    let d = a.commit_unsigned("change by a", &[("fleet.yaml", FLEET)]);
    sign_ok(&a, &d, &[]);
    assert_eq!(sequence(&a, &d), 4);
    a.git(&["push", "-q", "origin", "main", "refs/notes/pacfleet"]);
}

#[test]
fn diverged_notes_are_refused_with_how_to_merge() {
    let tmp = tempdir();
    let (remote, a) = published(tmp.path(), tmp.path(), 1);
    let b = clone(tmp.path(), &remote.display().to_string(), "b");
    // A signs a commit and does not push the notes; B signs another and pushes.
    let ca = a.commit_unsigned("a's change", &[("fleet.yaml", FLEET)]);
    sign_ok(&a, &ca, &[]);
    let cb = b.commit_unsigned("b's change", &[("fleet.yaml", FLEET)]);
    sign_ok(&b, &cb, &[]);
    b.git(&["push", "-q", "origin", "main", "refs/notes/pacfleet"]);
    let before = a.git(&["rev-parse", "refs/notes/pacfleet"]);
    let (code, out, err) = sign(&a, &ca, &["--renew"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("have diverged")
            && err.contains("git notes --ref=pacfleet merge refs/pacfleet/remote-notes")
            && err.contains("Nothing was signed"),
        "{err}"
    );
    assert_eq!(
        a.git(&["rev-parse", "refs/notes/pacfleet"]),
        before,
        "notes untouched"
    );
    // Following the message: merge, publish, sign again; the sequence is above both sides.
    a.git(&[
        "notes",
        "--ref=pacfleet",
        "merge",
        "-q",
        "refs/pacfleet/remote-notes",
    ]);
    a.git(&["push", "-q", "origin", "refs/notes/pacfleet"]);
    sign_ok(&a, &ca, &["--renew"]);
    assert_eq!(sequence(&a, &ca), 3);
    assert_eq!(sequence(&a, &cb), 2, "b's statement kept");
    a.git(&["push", "-q", "origin", "refs/notes/pacfleet"]);
}

#[test]
fn an_unreachable_remote_is_refused_unless_offline() {
    let tmp = tempdir();
    let (_remote, a) = published(tmp.path(), tmp.path(), 2);
    a.git(&[
        "remote",
        "set-url",
        "origin",
        &tmp.path().join("gone.git").display().to_string(),
    ]);
    let c = a.commit_unsigned("change", &[("fleet.yaml", FLEET)]);
    let (code, out, err) = sign(&a, &c, &[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("cannot fetch the signature notes") && err.contains("--offline"),
        "{err}"
    );
    assert!(
        !a.git(&["notes", "--ref=pacfleet", "list"]).contains(&c),
        "nothing signed"
    );
    let (out, err) = sign_ok(&a, &c, &["--offline"]);
    assert!(err.contains("warning: --offline"), "{err}");
    assert!(out.contains("sequence  3"), "{out}");
}

#[test]
fn no_remote_warns_and_signs() {
    let tmp = tempdir();
    let a = FleetRepo::new(tmp.path());
    let c = a.commit_unsigned("first", &[("fleet.yaml", FLEET)]);
    let (out, err) = sign_ok(&a, &c, &[]);
    assert!(out.contains("sequence  1"), "{out}");
    assert!(err.contains("has no git remote"), "{err}");
}
