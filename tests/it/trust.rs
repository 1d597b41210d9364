//! Trust end to end (docs/contract.md §4.3): every refusal rule through `fleetctl reconcile` (exit
//! 3, the rule named, the host's packages and `state.json` untouched, `status.json` and
//! `history.jsonl` saying refused), the happy paths (threshold signing, unsigned commits that wait,
//! key rotation, git:// and http:// transports carrying the notes), `fleetctl keygen`, `sign` and
//! `verify`, and interoperability with the reference `minisign` tool.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pacfleet_support::synth::SynthPackage;

use crate::harness::GitDaemon;
use crate::harness::git_fixtures::{Fixture, HttpServer};
use crate::harness::world::{AGENT_EXTRA, package_set};
use crate::harness::{FleetRepo, HostDir, TestCommand, World, fleetctl, keypair, run, tempdir};

/// One package repository, a fleet repository (operator key `keys/ops`) whose first commit
/// installs `app`, and hosts made on demand.
fn world() -> World {
    world_with(true)
}

fn world_with(signed: bool) -> World {
    World::builder()
        .packages(&[
            SynthPackage::new("app", "1.0-1").depends("libfoo"),
            SynthPackage::new("libfoo", "1.0-1"),
            SynthPackage::new("tool", "1.0-1"),
            SynthPackage::new("extra", "1.0-1"),
        ])
        .shared()
        .desired(&["app"])
        .signed(signed)
        .build()
}

/// A host trusting the operator key.
fn ops_host(w: &World, name: &str) -> (HostDir, PathBuf) {
    host_trusting(w, name, &[&w.fleet().public_key], 1)
}

/// A host trusting `keys` with `threshold`.
fn host_trusting(w: &World, name: &str, keys: &[&Path], threshold: usize) -> (HostDir, PathBuf) {
    let host = w.host_dir(name);
    let cfg = w.config(&host, &format!("{AGENT_EXTRA}threshold: {threshold}\n"));
    set_trusted_keys(&cfg, keys);
    (host, cfg)
}

/// A new key pair `<tmp>/keys/<name>.{pub,key}`.
fn key(w: &World, name: &str) -> (PathBuf, PathBuf) {
    keypair(&w.tmp.path().join("keys"), name)
}

/// Commits `packages/base.yaml` with `packages`, unsigned.
fn commit_set(w: &World, message: &str, packages: &[&str]) -> String {
    w.fleet()
        .commit_unsigned(message, &[("packages/base.yaml", &package_set(packages))])
}

/// The note on `rev`.
fn note_on(w: &World, rev: &str) -> String {
    w.fleet().git(&["notes", "--ref=pacfleet", "show", rev])
}

/// Replaces the note on `rev` with `text`, the way a person with push access could.
fn put_note(w: &World, rev: &str, text: &str) {
    let file = w.tmp.path().join("note.txt");
    fs::write(&file, text).expect("write note");
    w.fleet().git(&[
        "notes",
        "--ref=pacfleet",
        "add",
        "-f",
        "-F",
        &file.display().to_string(),
        rev,
    ]);
}

fn tree(w: &World, rev: &str) -> String {
    w.fleet()
        .git(&["rev-parse", &format!("{rev}^{{tree}}")])
        .trim()
        .to_owned()
}

/// `fleetctl sign` in the fleet repository.
fn sign_cli(w: &World, rev: &str, key: &Path, extra: &[&str]) -> (i32, String, String) {
    run(fleetctl()
        .arg("sign")
        .arg(rev)
        .arg("--repo")
        .arg(&w.fleet().dir)
        .arg("--key")
        .arg(key)
        .args(extra)
        .env_remove("PACFLEET_KEY_PASSWORD"))
}

/// Rewrites agent.yaml's `trusted_keys:` line to list `keys`.
fn set_trusted_keys(cfg: &Path, keys: &[&Path]) {
    let text = fs::read_to_string(cfg).expect("read agent.yaml");
    let list = keys
        .iter()
        .map(|k| k.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let text = text
        .lines()
        .map(|l| {
            if l.starts_with("trusted_keys:") {
                format!("trusted_keys: [{list}]")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(cfg, text + "\n").expect("write agent.yaml");
}

/// The base64 line of a `.pub` file.
fn pub_line(public: &Path) -> String {
    fs::read_to_string(public)
        .expect("read pub")
        .lines()
        .nth(1)
        .expect("key line")
        .trim()
        .to_owned()
}

/// minisign's key id of a `.pub` file, as `fleetctl` prints it.
fn key_id(public: &Path) -> String {
    pacfleet::trust::load_key(public).expect("key").id()
}

fn fleet_yaml(name: &str, keys: &[(&str, &Path)]) -> String {
    let mut s = format!("kind: Fleet\nname: {name}\n");
    if !keys.is_empty() {
        s.push_str("keys:\n");
        for (n, k) in keys {
            s.push_str(&format!("  - {{name: {n}, key: {}}}\n", pub_line(k)));
        }
    }
    s
}

fn packages(host: &HostDir) -> Vec<String> {
    host.installed().into_keys().collect()
}

fn state_json(host: &HostDir) -> Option<Vec<u8>> {
    fs::read(host.state_dir.join("state.json")).ok()
}

fn applied_commit(host: &HostDir) -> String {
    let v: serde_json::Value =
        serde_json::from_slice(&state_json(host).expect("state.json")).expect("parse state.json");
    v["commit"].as_str().expect("commit").to_owned()
}

/// A reconcile pass that must be refused: exit 3, every `expect` in the message, the host's
/// packages and state.json unchanged, status.json `refused`, one `refused` history entry.
/// Returns stderr.
fn assert_refused(host: &HostDir, cfg: &Path, expect: &[&str]) -> String {
    let db: BTreeMap<PathBuf, Vec<u8>> = host.local_db_snapshot();
    let state = state_json(host);
    let entries = host.history().len();
    let (code, out, err) = TestCommand::reconcile(cfg).run().parts();
    assert_eq!(
        code, 3,
        "expected a refusal ({expect:?})\n--- stdout\n{out}\n--- stderr\n{err}"
    );
    for e in expect {
        assert!(err.contains(e), "expected {e:?} in stderr:\n{err}");
    }
    assert!(
        host.local_db_snapshot() == db,
        "the host's packages changed on a refusal"
    );
    let after = state_json(host);
    assert!(
        after == state,
        "state.json changed on a refusal\n--- before\n{}\n--- after\n{}",
        String::from_utf8_lossy(state.as_deref().unwrap_or(b"(none)")),
        String::from_utf8_lossy(after.as_deref().unwrap_or(b"(none)"))
    );
    let st = host.status_json();
    assert_eq!(st["outcome"], "refused", "{st}");
    let message = st["message"].as_str().unwrap_or_default();
    for e in expect {
        assert!(message.contains(e), "expected {e:?} in status.json: {st}");
    }
    let h = host.history();
    assert_eq!(h.len(), entries + 1, "one history entry per refusal: {h:?}");
    let last = h.last().expect("history entry");
    assert_eq!(last["outcome"], "refused", "{last}");
    assert!(
        last["error"]
            .as_str()
            .unwrap_or_default()
            .contains(expect[0]),
        "expected {:?} in the history entry: {last}",
        expect[0]
    );
    err
}

/// Signs `text` with an unencrypted secret key through the minisign library (not through
/// pacfleet), as a block to append to a note.
fn sign_text(secret: &Path, text: &str) -> String {
    let sk = pacfleet::trust::load_secret_key(secret, None).expect("load key");
    minisign::sign(
        None,
        &sk,
        std::io::Cursor::new(text.as_bytes()),
        Some("crafted"),
        None,
    )
    .expect("sign")
    .to_string()
}

/// The reference `minisign` tool, if installed.
fn minisign_bin() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join("minisign"))
        .find(|p| p.is_file())
}

/// Signs `text` with the reference `minisign -S` (`-l`: legacy format); the `.minisig` text.
fn minisign_cli_sign(minisign: &Path, secret: &Path, text: &str, legacy: bool) -> String {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("statement");
    fs::write(&file, text).expect("write statement");
    let sig = dir.path().join("statement.minisig");
    let mut cmd = Command::new(minisign);
    cmd.arg("-S")
        .arg("-s")
        .arg(secret)
        .arg("-m")
        .arg(&file)
        .arg("-x")
        .arg(&sig)
        .arg("-t")
        .arg("signed with the reference minisign")
        .stdin(Stdio::null());
    if legacy {
        cmd.arg("-l");
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "minisign -S failed:\n{out}\n{err}");
    fs::read_to_string(&sig).expect("read signature")
}

fn statement(fleet: &str, commit: &str, tree: &str, sequence: u64) -> String {
    pacfleet::trust::Statement {
        fleet: fleet.into(),
        commit: commit.into(),
        tree: tree.into(),
        sequence,
        expires: chrono::Utc::now() + chrono::Duration::days(1),
    }
    .to_text()
}

/// A note: the statement, then each signature after a blank line.
fn note_of(statement: &str, sigs: &[&str]) -> String {
    let mut s = statement.to_owned();
    for sig in sigs {
        s.push('\n');
        s.push_str(sig.trim_end());
        s.push('\n');
    }
    s
}

// ---------------------------------------------------------------------------------------------
// Every refusal rule through `fleetctl reconcile`.
// ---------------------------------------------------------------------------------------------

#[test]
fn unsigned_fresh_host_applies_nothing() {
    let w = world_with(false);
    let (host, cfg) = ops_host(&w, "ws-01");
    let err = assert_refused(&host, &cfg, &["is not signed", w.first(), "fleetctl sign"]);
    assert!(err.contains("git push origin refs/notes/pacfleet"), "{err}");
    assert!(packages(&host).is_empty());
    assert!(state_json(&host).is_none());
}

#[test]
fn untrusted_key() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let (mallory_pub, mallory_key) = key(&w, "mallory");
    let c = commit_set(&w, "mallory adds extra", &["app", "extra"]);
    w.fleet().sign_with(&c, &mallory_key);
    assert_refused(
        &host,
        &cfg,
        &[
            "signed only by keys this host does not trust",
            &key_id(&mallory_pub),
        ],
    );
    assert!(!packages(&host).contains(&"extra".to_owned()));
}

#[test]
fn untrusted_key_on_a_fresh_host() {
    let w = world_with(false);
    let (_, mallory_key) = key(&w, "mallory");
    w.fleet().sign_with(w.first(), &mallory_key);
    let (host, cfg) = ops_host(&w, "ws-01");
    assert_refused(&host, &cfg, &["does not trust", "it trusts ops"]);
}

/// A host trusting `ops` and `second` with threshold 2, that applied the first commit signed
/// by both.
fn threshold_world() -> (World, HostDir, PathBuf, PathBuf) {
    let w = world();
    let (second_pub, second_key) = key(&w, "second");
    w.fleet().sign_with(w.first(), &second_key);
    let (host, cfg) = host_trusting(&w, "ws-01", &[&w.fleet().public_key, &second_pub], 2);
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("ops") && out.contains("second"), "{out}");
    (w, host, cfg, second_key)
}

#[test]
fn below_threshold() {
    let (w, host, cfg, _) = threshold_world();
    let c = commit_set(&w, "only ops signs", &["app", "extra"]);
    w.fleet().sign(&c);
    assert_refused(
        &host,
        &cfg,
        &[
            "signed by 1 distinct trusted key(s)",
            "needs 2",
            "appends a signature",
        ],
    );
}

#[test]
fn same_key_signing_twice_counts_once() {
    let (w, host, cfg, _) = threshold_world();
    let c = commit_set(&w, "ops signs twice", &["app", "extra"]);
    w.fleet().sign(&c);
    let note = note_on(&w, &c);
    let (st, sig) = note.split_once("\n\n").expect("a signature");
    put_note(&w, &c, &note_of(&format!("{st}\n"), &[sig, sig]));
    assert_eq!(note_on(&w, &c).matches("untrusted comment").count(), 2);
    assert_refused(
        &host,
        &cfg,
        &["signed by 1 distinct trusted key(s) (ops)", "needs 2"],
    );
}

#[test]
fn statement_for_another_commit() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = commit_set(&w, "reuses the first commit's note", &["app", "extra"]);
    put_note(&w, &c, &note_on(&w, w.first()));
    assert_refused(
        &host,
        &cfg,
        &[
            &format!("is for commit `{}`, not `{c}`", w.first()),
            "copied",
        ],
    );
}

#[test]
fn statement_for_another_tree() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = commit_set(&w, "statement names the old tree", &["app", "extra"]);
    let old_tree = tree(&w, w.first());
    let st = statement("acme", &c, &old_tree, 9);
    put_note(
        &w,
        &c,
        &note_of(&st, &[&sign_text(&w.fleet().secret_key, &st)]),
    );
    assert_refused(
        &host,
        &cfg,
        &[&format!("is for tree `{old_tree}`, not `{}`", tree(&w, &c))],
    );
}

#[test]
fn statement_for_another_fleet() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    // A statement for fleet `other`, crafted by hand and signed by the trusted key with the
    // reference minisign tool (or the library when it is not installed).
    let c = commit_set(&w, "statement for another fleet", &["app", "extra"]);
    let st = statement("other", &c, &tree(&w, &c), 9);
    let sig = match minisign_bin() {
        Some(m) => minisign_cli_sign(&m, &w.fleet().secret_key, &st, false),
        None => sign_text(&w.fleet().secret_key, &st),
    };
    put_note(&w, &c, &note_of(&st, &[&sig]));
    assert_refused(&host, &cfg, &["is for fleet `other`, not `acme`"]);
    // The fleet renamed and signed for its new name: the host still expects `acme`.
    let renamed = w.fleet().commit(
        "rename the fleet",
        &[("fleet.yaml", &fleet_yaml("other", &[]))],
    );
    assert!(note_on(&w, &renamed).contains("fleet other\n"));
    assert_refused(&host, &cfg, &["is for fleet `other`, not `acme`", &renamed]);
}

/// agent.yaml's `fleet:` binds a fresh host to its fleet from the first pass: a repository
/// signed for another fleet (by a key the host trusts) is refused, the right one applies, and
/// a `fleet:` changed later is refused too.
#[test]
fn a_fresh_host_with_fleet_set_refuses_another_fleet() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    let text = fs::read_to_string(&cfg).expect("agent.yaml");
    fs::write(&cfg, format!("{text}fleet: other\n")).expect("write agent.yaml");
    let err = assert_refused(&host, &cfg, &["is for fleet `acme`, not `other`"]);
    assert!(packages(&host).is_empty(), "{err}");
    fs::write(&cfg, format!("{text}fleet: acme\n")).expect("write agent.yaml");
    TestCommand::reconcile(&cfg).ok();
    assert!(!packages(&host).is_empty());
    fs::write(&cfg, format!("{text}fleet: other\n")).expect("write agent.yaml");
    assert_refused(
        &host,
        &cfg,
        &["says `fleet: other`, but this host applied fleet `acme`"],
    );
}

#[test]
fn expired_newer_statement_is_stale() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = commit_set(&w, "signed long ago", &["app", "extra"]);
    let sk = pacfleet::trust::load_secret_key(&w.fleet().secret_key, None).unwrap();
    let opts = pacfleet::trust::SignOptions {
        sequence: None,
        expires: chrono::Utc::now() - chrono::Duration::hours(1),
        renew: false,
    };
    pacfleet::trust::sign_commit(&w.fleet().dir, &c, &sk, &opts).unwrap();
    assert_refused(&host, &cfg, &["expired at", "stale", "fleetctl sign"]);
    assert_eq!(applied_commit(&host), w.first());
}

#[test]
fn expired_applied_statement_is_stale() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    // Nothing newer; the applied commit's statement is renewed into one that has expired
    // (as a frozen mirror would serve once the real one ran out).
    let sk = pacfleet::trust::load_secret_key(&w.fleet().secret_key, None).unwrap();
    let opts = pacfleet::trust::SignOptions {
        sequence: None,
        expires: chrono::Utc::now() - chrono::Duration::minutes(5),
        renew: true,
    };
    pacfleet::trust::sign_commit(&w.fleet().dir, w.first(), &sk, &opts).unwrap();
    assert_refused(&host, &cfg, &["expired at", "stale"]);
    // Signing the tip again (the routine renewal) makes the host converge again.
    let (code, out, err) = sign_cli(&w, "HEAD", &w.fleet().secret_key, &["--renew"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("converged"), "{out}");
}

#[test]
fn lower_sequence_is_a_rollback() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    let a = commit_set(&w, "sequence 5", &["app", "tool"]);
    let (code, out, err) = sign_cli(&w, &a, &w.fleet().secret_key, &["--sequence", "5"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("sequence  5"), "{out}");
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(applied_commit(&host), a);
    let b = commit_set(&w, "sequence 3", &["app", "tool", "extra"]);
    let (code, out, err) = sign_cli(&w, &b, &w.fleet().secret_key, &["--sequence", "3"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("lower than 5"), "fleetctl sign warns: {err}");
    assert_refused(
        &host,
        &cfg,
        &["signed with sequence 3, lower than 5", "replayed"],
    );
}

#[test]
fn force_pushed_history() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    let a = commit_set(&w, "add tool", &["app", "tool"]);
    w.fleet().sign(&a);
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(applied_commit(&host), a);
    w.fleet().git(&["reset", "-q", "--hard", "HEAD~1"]);
    let b = commit_set(&w, "rewritten: add extra", &["app", "extra"]);
    w.fleet().sign(&b);
    assert_refused(
        &host,
        &cfg,
        &[
            &format!("the branch tip {b} does not descend from {a}"),
            "force-pushed",
        ],
    );
}

/// An unsigned merge is no way in for a signed commit of another line of history: the signed
/// side commit (forked before what the host applied, signed later with a higher sequence) does
/// not descend from the applied state, so it is never the target, even though it is reachable
/// from the tip through the merge. Legitimate commits after the merge still apply.
#[test]
fn a_signed_side_commit_merged_in_unsigned_is_refused() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    let a = commit_set(&w, "add tool", &["app", "tool"]);
    w.fleet().sign(&a);
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(applied_commit(&host), a);
    w.fleet().git(&["checkout", "-q", "-b", "side", "HEAD~1"]);
    let side = commit_set(&w, "side: add extra", &["app", "extra"]);
    w.fleet().sign(&side);
    w.fleet().git(&["checkout", "-q", "main"]);
    // `-s ours`: the merge keeps main's tree; only the side commit carries `extra`.
    w.fleet().git(&[
        "merge",
        "-q",
        "-s",
        "ours",
        "--no-edit",
        "-m",
        "merge side",
        "side",
    ]);
    assert_refused(
        &host,
        &cfg,
        &[
            &format!("commit {side} is signed but does not descend from {a}"),
            "another line of history",
        ],
    );
    assert!(!packages(&host).contains(&"extra".to_owned()));
    assert_eq!(applied_commit(&host), a);
    // A reviewed, signed commit on the line goes in as usual.
    let next = commit_set(&w, "add tool2", &["app", "tool"]);
    w.fleet().sign(&next);
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(applied_commit(&host), next);
    assert!(!packages(&host).contains(&"extra".to_owned()));
}

/// Nothing of a commit is parsed before its statement verifies: a junk note on a commit whose
/// fleet.yaml is hostile (here: broken YAML; a YAML bomb costs the same path) is refused for
/// the note, and fleet.yaml is never read.
#[test]
fn a_commit_is_not_parsed_before_its_statement_verifies() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = w
        .fleet()
        .commit_unsigned("hostile", &[("fleet.yaml", "kind: [Fleet\nname: [[[[\n")]);
    put_note(&w, &c, "junk, not a statement\n");
    let err = assert_refused(&host, &cfg, &["signature note on commit", "is corrupt"]);
    assert!(!err.contains("fleet.yaml"), "{err}");
}

#[test]
fn tampered_note() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = commit_set(&w, "add extra", &["app", "extra"]);
    w.fleet().sign(&c);
    let note = note_on(&w, &c);
    assert!(note.contains("sequence 2\n"), "{note}");
    put_note(&w, &c, &note.replace("sequence 2\n", "sequence 999\n"));
    assert_refused(
        &host,
        &cfg,
        &[
            "does not verify: the statement was altered after signing",
            "(ops)",
        ],
    );
}

/// A junk note whose first line carries terminal escape sequences: the refusal reaches
/// stderr, status.json and `fleetctl status` escaped, never as raw control characters.
#[test]
fn escape_sequences_in_a_junk_note_never_reach_the_terminal() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = commit_set(&w, "add extra", &["app", "extra"]);
    put_note(
        &w,
        &c,
        "pacfleet-statement 1\x1b[2J\x1b]0;owned\x07\rlooks fine\n",
    );
    let err = assert_refused(&host, &cfg, &["signature note on commit", "is corrupt"]);
    for (what, text) in [
        ("reconcile", err),
        (
            "status",
            run(fleetctl().args(["status", "--config"]).arg(&cfg)).1,
        ),
        (
            "status --waybar",
            run(fleetctl()
                .args(["status", "--waybar", "--config"])
                .arg(&cfg))
            .1,
        ),
    ] {
        assert!(
            !text.contains('\x1b') && !text.contains('\x07') && !text.contains('\r'),
            "{what}: raw control characters in {text:?}"
        );
    }
}

/// More commits since the applied state than a pass walks before verifying anything: refused
/// with a message that says so and what to do, nothing applied.
#[test]
fn too_many_unsigned_commits_are_refused_with_a_report() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    // 10,001 empty commits on main, made at once with git fast-import.
    let head = w.fleet().head();
    let mut stream = String::new();
    for i in 0..=pacfleet::trust::MAX_WALK {
        stream.push_str(&format!(
            "commit refs/heads/main\ncommitter Pusher <p@example.com> 1700000000 +0000\ndata 4\nc{:03}\n{}\n",
            i % 1000,
            if i == 0 { format!("from {head}\n") } else { String::new() }
        ));
    }
    let mut child = std::process::Command::new("git")
        .args(["fast-import", "--quiet", "--force"])
        .current_dir(&w.fleet().dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("git fast-import");
    use std::io::Write;
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(stream.as_bytes())
        .expect("feed fast-import");
    assert!(child.wait().expect("wait").success());
    assert_refused(
        &host,
        &cfg,
        &[
            "commits since",
            "more than the 10000 a pass reads before verifying anything",
        ],
    );
}

#[test]
fn corrupt_note() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = commit_set(&w, "add extra", &["app", "extra"]);
    put_note(&w, &c, "garbage\n");
    assert_refused(&host, &cfg, &["signature note on commit", "is corrupt"]);
}

#[test]
fn deleted_state_dir_is_noticed() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    fs::remove_dir_all(&host.state_dir).unwrap();
    let anchor = host.dbpath.join("pacfleet.anchor");
    assert!(anchor.exists());
    assert_refused(
        &host,
        &cfg,
        &[
            "has no record of an applied state",
            "fleet `acme` sequence 1",
            &anchor.display().to_string(),
        ],
    );
}

#[test]
fn state_restored_from_an_old_copy_is_noticed() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let old = state_json(&host).unwrap();
    let c = commit_set(&w, "add tool", &["app", "tool"]);
    w.fleet().sign(&c);
    TestCommand::reconcile(&cfg).ok();
    fs::write(host.state_dir.join("state.json"), &old).unwrap();
    assert_refused(
        &host,
        &cfg,
        &[
            "restored from an old copy",
            &host.dbpath.join("pacfleet.anchor").display().to_string(),
        ],
    );
}

#[test]
fn rotated_out_and_self_signed_keys() {
    let w = world();
    let a = w.fleet().public_key.clone();
    let (b_pub, b_key) = key(&w, "bob");
    let (c_pub, c_key) = key(&w, "carol");
    let (d_pub, d_key) = key(&w, "dave");
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();

    // A (the host's root key) adds B; B hands over to C; C drops everyone else.
    let c1 = w.fleet().commit(
        "keys: alice, bob",
        &[(
            "fleet.yaml",
            &fleet_yaml("acme", &[("alice", &a), ("bob", &b_pub)]),
        )],
    );
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(applied_commit(&host), c1);
    let c2 = w.fleet().commit_unsigned(
        "keys: bob, carol",
        &[(
            "fleet.yaml",
            &fleet_yaml("acme", &[("bob", &b_pub), ("carol", &c_pub)]),
        )],
    );
    w.fleet().sign_with(&c2, &b_key);
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("by bob"), "{out}");
    assert_eq!(applied_commit(&host), c2);
    let c3 = w.fleet().commit_unsigned(
        "keys: carol",
        &[("fleet.yaml", &fleet_yaml("acme", &[("carol", &c_pub)]))],
    );
    w.fleet().sign_with(&c3, &c_key);
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("by carol"), "{out}");
    assert_eq!(applied_commit(&host), c3);

    // The rotated-out root key alone no longer counts, although the host's agent.yaml still
    // lists it; `fleetctl sign` warns its user.
    let c4 = commit_set(&w, "signed by the old key", &["app", "extra"]);
    let (code, out, err) = sign_cli(&w, &c4, &w.fleet().secret_key, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("not in fleet.yaml `keys:` of the parent commit") && err.contains("carol"),
        "{err}"
    );
    assert_refused(
        &host,
        &cfg,
        &[
            "does not trust",
            &key_id(&a),
            &format!("carol ({})", key_id(&c_pub)),
        ],
    );

    // A commit adding a new key, signed only by that key, does not let it in.
    let c5 = w.fleet().commit_unsigned(
        "dave adds himself",
        &[(
            "fleet.yaml",
            &fleet_yaml("acme", &[("carol", &c_pub), ("dave", &d_pub)]),
        )],
    );
    w.fleet().sign_with(&c5, &d_key);
    assert_refused(&host, &cfg, &["does not trust", &key_id(&d_pub), &c5]);
    assert_eq!(applied_commit(&host), c3);

    // Carol signing the tip accepts both commits after her last one (c4 stays refused, c5's
    // change is carried by the tip).
    w.fleet().sign_with(&c5, &c_key);
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("by carol"), "{out}");
    assert_eq!(applied_commit(&host), c5);
    assert!(packages(&host).contains(&"extra".to_owned()));
}

// ---------------------------------------------------------------------------------------------
// Happy paths.
// ---------------------------------------------------------------------------------------------

#[test]
fn threshold_two_with_a_second_signer() {
    let (w, host, cfg, second_key) = threshold_world();
    let c = commit_set(&w, "two signers", &["app", "extra"]);
    let (code, out, err) = sign_cli(&w, &c, &w.fleet().secret_key, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("new statement") && out.contains("1 so far"),
        "{out}"
    );
    // One signature is not enough yet: the host stays where it is and says why.
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("needs 2"), "{err}");
    assert!(!packages(&host).contains(&"extra".to_owned()));

    let (code, out, err) = sign_cli(&w, &c, &second_key, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("added this key's signature to the existing statement")
            && out.contains("2 so far")
            && out.contains("second (")
            && out.contains("git push origin refs/notes/pacfleet"),
        "{out}"
    );
    // The same key again is an error, not a second signature.
    let (code, _, err) = sign_cli(&w, &c, &second_key, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already signed"), "{err}");

    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("signed: sequence 2 by"), "{out}");
    assert!(out.contains("ops") && out.contains("second"), "{out}");
    assert_eq!(applied_commit(&host), c);
    assert!(packages(&host).contains(&"extra".to_owned()));
    let st = host.status_json();
    assert_eq!(st["outcome"], "applied", "{st}");
}

#[test]
fn unsigned_newer_commits_wait() {
    let w = world();
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = commit_set(&w, "not signed yet", &["app", "extra"]);
    let (code, out, err) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("waiting for a signature: 1 newer commit,"),
        "{out}"
    );
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("waiting for a signature"), "{out}");
    assert!(out.contains(&c[..12]), "{out}");
    assert!(!packages(&host).contains(&"extra".to_owned()));
    assert_eq!(applied_commit(&host), w.first());
    let st = host.status_json();
    assert_eq!(st["outcome"], "converged", "{st}");

    let (code, out, err) = sign_cli(&w, "HEAD", &w.fleet().secret_key, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(!out.contains("waiting for a signature"), "{out}");
    assert_eq!(applied_commit(&host), c);
    assert!(packages(&host).contains(&"extra".to_owned()));
}

#[test]
fn refused_newer_commit_while_an_older_one_is_applied() {
    let w = world();
    let (_, mallory_key) = key(&w, "mallory");
    let c = commit_set(&w, "mallory adds extra", &["app", "extra"]);
    w.fleet().sign_with(&c, &mallory_key);
    let (host, cfg) = ops_host(&w, "ws-01");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("does not trust"), "{err}");
    // The older, validly signed commit was applied; the refused one was not.
    assert_eq!(applied_commit(&host), w.first());
    assert_eq!(packages(&host), ["app", "libfoo"]);
    let st = host.status_json();
    assert_eq!(st["outcome"], "refused", "{st}");
    let h = host.history();
    let outcomes: Vec<&str> = h.iter().map(|e| e["outcome"].as_str().unwrap()).collect();
    assert_eq!(outcomes, ["applied", "refused"], "{h:?}");
}

/// Over a real transport: the first signed commit applies, an unsigned one waits, and once
/// it is signed and the notes pushed, it applies; each time the notes arrive with the branch.
fn transport_round_trip(w: &World, url: &str, publish: &dyn Fn()) {
    let (host, cfg) = {
        let host = w.host_dir("ws-01");
        let cfg = host.agent_yaml(url, &w.fleet().public_key, AGENT_EXTRA);
        (host, cfg)
    };
    publish();
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("signed: sequence 1 by ops"), "{out}");
    assert_eq!(packages(&host), ["app", "libfoo"]);
    let mirror = host.state_dir.join("fleet.git");
    let note = pacfleet::source::read_note(&mirror, w.first())
        .unwrap()
        .expect("note fetched");
    assert!(note.starts_with(b"pacfleet-statement 1\n"));

    let c = commit_set(w, "add extra", &["app", "extra"]);
    publish();
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("waiting for a signature"), "{out}");
    assert_eq!(packages(&host), ["app", "libfoo"]);

    let (code, out, err) = sign_cli(w, &c, &w.fleet().secret_key, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    publish();
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("signed: sequence 2 by ops"), "{out}");
    assert_eq!(packages(&host), ["app", "extra", "libfoo"]);
    assert!(pacfleet::source::read_note(&mirror, &c).unwrap().is_some());
}

#[test]
fn signed_state_over_git_daemon() {
    let w = world();
    let daemon = GitDaemon::start(w.tmp.path());
    let url = format!("git://127.0.0.1:{}/fleet", daemon.port);
    transport_round_trip(&w, &url, &|| {});
}

#[test]
fn signed_state_over_smart_http() {
    let w = world();
    let fx = Fixture::new();
    let srv = w.tmp.path().join("srv");
    fs::create_dir_all(&srv).unwrap();
    let bare = srv.join("fleet.git");
    w.fleet()
        .git(&["init", "-q", "--bare", &bare.display().to_string()]);
    let Some(server) = HttpServer::start(&fx, &srv) else {
        crate::harness::skip("signed_state_over_smart_http: python3 is not available");
        return;
    };
    let url = format!("http://127.0.0.1:{}/fleet.git", server.port);
    let bare = bare.display().to_string();
    transport_round_trip(&w, &url, &|| {
        w.fleet().git(&[
            "push",
            "-q",
            "--force",
            &bare,
            "main",
            "refs/notes/pacfleet",
        ]);
    });
}

// ---------------------------------------------------------------------------------------------
// `fleetctl verify` and interoperability with the reference minisign tool.
// ---------------------------------------------------------------------------------------------

fn verify(w: &World, rev: &str, keys: &[&Path], extra: &[&str]) -> (i32, String, String) {
    let mut cmd = fleetctl();
    cmd.arg("verify").arg(rev).arg("--repo").arg(&w.fleet().dir);
    for k in keys {
        cmd.arg("--key").arg(k);
    }
    run(cmd.args(extra))
}

#[test]
fn verify_reports_statement_and_signers() {
    let w = world();
    let ops = w.fleet().public_key.clone();
    let (code, out, err) = verify(&w, "HEAD", &[&ops], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    for want in [
        format!("commit    {}", w.first()),
        format!("tree      {}", tree(&w, "HEAD")),
        "fleet     acme".to_owned(),
        "sequence  1".to_owned(),
        format!("signature by ops ({})", key_id(&ops)),
        "valid: signed by 1 of 1 required (ops)".to_owned(),
    ] {
        assert!(out.contains(&want), "expected {want:?} in:\n{out}");
    }

    // A key that did not sign: refused, and the signature by the key not given is shown.
    let (other, _) = key(&w, "other");
    let (code, out, err) = verify(&w, "HEAD", &[&other], &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("does not trust"), "{err}");
    assert!(
        out.contains(&format!(
            "signature by {} (not one of the given keys)",
            key_id(&ops)
        )),
        "{out}"
    );
    let (code, _, err) = verify(&w, "HEAD", &[&ops, &other], &["--threshold", "2"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("needs 2"), "{err}");
    let (code, _, err) = verify(&w, "HEAD", &[&ops], &["--threshold", "2"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("only 1 distinct key(s) given"), "{err}");

    // JSON.
    let (code, out, _) = verify(&w, "HEAD", &[&ops], &["--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], true, "{v}");
    assert_eq!(v["statement"]["sequence"], 1, "{v}");
    assert_eq!(v["signers"][0], "ops", "{v}");
    assert_eq!(v["signatures"][0]["key_id"], key_id(&ops), "{v}");

    // Unsigned, and errors that are not refusals.
    let c = commit_set(&w, "unsigned", &["app", "extra"]);
    let (code, out, err) = verify(&w, &c, &[&ops], &["--json"]);
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("is not signed"), "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["valid"], false, "{v}");
    let (code, _, err) = verify(&w, "no-such-rev", &[&ops], &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = verify(&w, "HEAD", &[&w.tmp.path().join("missing.pub")], &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.pub"), "{err}");
}

#[test]
fn minisign_interop() {
    let Some(minisign) = minisign_bin() else {
        crate::harness::skip("minisign_interop: the reference minisign tool is not installed");
        return;
    };
    let w = world();
    let ops = w.fleet().public_key.clone();
    let (second_pub, second_key) = key(&w, "second");

    // fleetctl's signature verifies with the reference tool: the statement is the note up to
    // the first blank line, the signature block follows.
    let (code, out, err) = sign_cli(&w, "HEAD", &w.fleet().secret_key, &["--renew"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let note = note_on(&w, "HEAD");
    let (st, sig) = note.split_once("\n\n").expect("statement and signature");
    let st = format!("{st}\n");
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("statement"), &st).unwrap();
    fs::write(dir.path().join("sig"), sig).unwrap();
    let (code, out, err) = run(Command::new(&minisign)
        .arg("-Vm")
        .arg(dir.path().join("statement"))
        .arg("-x")
        .arg(dir.path().join("sig"))
        .arg("-p")
        .arg(&ops));
    assert_eq!(code, 0, "minisign -V failed:\n{out}\n{err}");
    assert!(
        format!("{out}{err}").contains("pacfleet fleet acme commit"),
        "trusted comment: {out}{err}"
    );

    // A signature made by the reference tool, appended to the note, counts.
    let ref_sig = minisign_cli_sign(&minisign, &second_key, &st, false);
    put_note(&w, "HEAD", &note_of(&st, &[sig, &ref_sig]));
    let (code, out, err) = verify(&w, "HEAD", &[&ops, &second_pub], &["--threshold", "2"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("valid: signed by 2 of 2"), "{out}");
    assert!(
        out.contains(&format!("signature by second ({})", key_id(&second_pub))),
        "{out}"
    );

    // A legacy (non-prehashed) signature is refused, whoever made it.
    let legacy = minisign_cli_sign(&minisign, &second_key, &st, true);
    assert!(
        legacy.lines().nth(1).unwrap().starts_with("RW"),
        "legacy: {legacy}"
    );
    assert!(
        ref_sig.lines().nth(1).unwrap().starts_with("RU"),
        "prehashed: {ref_sig}"
    );
    put_note(&w, "HEAD", &note_of(&st, &[&legacy]));
    let (code, out, err) = verify(&w, "HEAD", &[&ops, &second_pub], &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        err.contains("legacy (non-prehashed) minisign signature"),
        "{err}"
    );

    // A note over 64 KiB is refused unread.
    let mut big = note_of(&st, &[sig]);
    while big.len() <= 64 * 1024 {
        big.push_str(&note_of("", &[sig]));
    }
    put_note(&w, "HEAD", &big);
    let (code, out, err) = verify(&w, "HEAD", &[&ops], &[]);
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(err.contains("over 64 KiB are refused"), "{err}");
    // ... and by a host.
    let (host, cfg) = ops_host(&w, "ws-01");
    assert_refused(&host, &cfg, &["over 64 KiB are refused"]);
}

// ---------------------------------------------------------------------------------------------
// `fleetctl keygen` and `fleetctl sign`.
// ---------------------------------------------------------------------------------------------

fn keygen(prefix: &Path, extra: &[&str], password: Option<&str>) -> (i32, String, String) {
    let mut cmd = fleetctl();
    cmd.arg("keygen").arg("--out").arg(prefix).args(extra);
    match password {
        Some(p) => cmd.env("PACFLEET_KEY_PASSWORD", p),
        None => cmd.env_remove("PACFLEET_KEY_PASSWORD"),
    };
    run(&mut cmd)
}

#[test]
fn keygen_unencrypted_and_overwrite() {
    let w = world();
    let prefix = w.tmp.path().join("newkeys/signer");
    fs::create_dir_all(prefix.parent().unwrap()).unwrap();
    let (code, out, err) = keygen(&prefix, &["--unencrypted"], None);
    assert_eq!(code, 0, "{out}\n{err}");
    let (public, secret) = (prefix.with_extension("pub"), prefix.with_extension("key"));
    let id = key_id(&public);
    for want in [
        format!("key id {id}"),
        format!("public key {}", pub_line(&public)),
        "trusted_keys: [/etc/pacfleet/keys/signer.pub]".to_owned(),
        format!("- {{name: signer, key: {}}}", pub_line(&public)),
    ] {
        assert!(out.contains(&want), "expected {want:?} in:\n{out}");
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        fs::metadata(&secret).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert!(
        fs::read_to_string(&public)
            .unwrap()
            .starts_with("untrusted comment: minisign public key")
    );

    // Never overwritten.
    let (pub_before, key_before) = (fs::read(&public).unwrap(), fs::read(&secret).unwrap());
    let (code, _, err) = keygen(&prefix, &["--unencrypted"], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already exists") && err.contains("signer.pub"),
        "{err}"
    );
    fs::remove_file(&public).unwrap();
    let (code, _, err) = keygen(&prefix, &["--unencrypted"], None);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("signer.key"), "{err}");
    assert_eq!(fs::read(&secret).unwrap(), key_before);
    fs::write(&public, &pub_before).unwrap();

    // The key signs commits that hosts trusting the .pub apply.
    let c = commit_set(&w, "signed by a keygen key", &["app", "tool"]);
    let (code, out, err) = sign_cli(&w, &c, &secret, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains(&format!("signer ({id})")), "{out}");
    let (host, cfg) = host_trusting(&w, "ws-01", &[&public], 1);
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("by signer"), "{out}");
    assert_eq!(applied_commit(&host), c);

    // The reference tool uses both files as they are.
    if let Some(minisign) = minisign_bin() {
        let file = w.tmp.path().join("data");
        fs::write(&file, "data\n").unwrap();
        let (code, out, err) = run(Command::new(&minisign)
            .arg("-S")
            .arg("-s")
            .arg(&secret)
            .arg("-m")
            .arg(&file));
        assert_eq!(code, 0, "minisign -S with a keygen key:\n{out}\n{err}");
        let (code, out, err) = run(Command::new(&minisign)
            .arg("-V")
            .arg("-p")
            .arg(&public)
            .arg("-m")
            .arg(&file));
        assert_eq!(code, 0, "minisign -V with a keygen key:\n{out}\n{err}");
    }
}

#[test]
fn keygen_encrypted_and_passwords() {
    let w = world();
    let prefix = w.tmp.path().join("enc");
    // No password and no terminal: a clear error, no files.
    let (code, _, err) = keygen(&prefix, &[], None);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("PACFLEET_KEY_PASSWORD") && err.contains("--unencrypted"),
        "{err}"
    );
    assert!(!prefix.with_extension("key").exists() && !prefix.with_extension("pub").exists());

    let (code, out, err) = keygen(&prefix, &[], Some("correct horse"));
    assert_eq!(code, 0, "{out}\n{err}");
    let (public, secret) = (prefix.with_extension("pub"), prefix.with_extension("key"));
    assert!(
        fs::read_to_string(&secret)
            .unwrap()
            .contains("password-protected")
    );

    // Sign without a password and without a terminal: a clear error, nothing signed.
    let c = commit_set(&w, "signed with an encrypted key", &["app", "tool"]);
    let (code, _, err) = sign_cli(&w, &c, &secret, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("password-protected") && err.contains("PACFLEET_KEY_PASSWORD"),
        "{err}"
    );
    // A wrong password.
    let (code, _, err) = run(fleetctl()
        .args(["sign", &c, "--repo"])
        .arg(&w.fleet().dir)
        .arg("--key")
        .arg(&secret)
        .env("PACFLEET_KEY_PASSWORD", "wrong"));
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("wrong password") || err.contains("Wrong password"),
        "{err}"
    );
    let (code, _, _) = verify(&w, &c, &[&public], &[]);
    assert_eq!(code, 3, "nothing was signed");
    // The right one.
    let (code, out, err) = run(fleetctl()
        .args(["sign", &c, "--repo"])
        .arg(&w.fleet().dir)
        .arg("--key")
        .arg(&secret)
        .env("PACFLEET_KEY_PASSWORD", "correct horse"));
    assert_eq!(code, 0, "{out}\n{err}");
    let (code, out, err) = verify(&w, &c, &[&public], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("signature by enc ("), "{out}");

    // The reference tool decrypts it with the same password (it reads it from stdin when
    // there is no terminal).
    if let Some(minisign) = minisign_bin() {
        let file = w.tmp.path().join("data");
        fs::write(&file, "data\n").unwrap();
        let mut child = Command::new(&minisign)
            .arg("-S")
            .arg("-s")
            .arg(&secret)
            .arg("-m")
            .arg(&file)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"correct horse\n")
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "minisign -S with an encrypted keygen key: {out:?}"
        );
        let (code, out, err) = run(Command::new(&minisign)
            .arg("-V")
            .arg("-p")
            .arg(&public)
            .arg("-m")
            .arg(&file));
        assert_eq!(code, 0, "{out}\n{err}");
    }
}

#[test]
fn sign_options_and_errors() {
    let w = world();
    let key = w.fleet().secret_key.clone();
    // Renewing the tip: a new statement with the next sequence and the given expiry.
    let (code, out, err) = sign_cli(&w, "HEAD", &key, &["--renew", "--expires-in", "7d"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("sequence  2") && out.contains("replaced the existing statement"),
        "{out}"
    );
    assert!(out.contains("(in 7 days)"), "{out}");
    let expires = note_on(&w, "HEAD")
        .lines()
        .find_map(|l| l.strip_prefix("expires ").map(str::to_owned))
        .unwrap();
    let expires: chrono::DateTime<chrono::Utc> = expires.parse().unwrap();
    let left = expires - chrono::Utc::now();
    assert!(
        left > chrono::Duration::days(6) && left <= chrono::Duration::days(7),
        "{left}"
    );
    // --sequence against an existing valid statement needs --renew.
    let (code, _, err) = sign_cli(&w, "HEAD", &key, &["--sequence", "9"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("add --renew"), "{err}");
    // Bad arguments and repositories: exit 2 with the reason.
    let (code, _, err) = sign_cli(&w, "HEAD", &key, &["--renew", "--expires-in", "soon"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--expires-in"), "{err}");
    let (code, _, err) = sign_cli(&w, "HEAD", &key, &["--renew", "--expires-in", "0s"]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = sign_cli(&w, "nope", &key, &[]);
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = sign_cli(&w, "HEAD", &w.fleet().public_key, &["--renew"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("ops.pub is a public key"), "{err}");
    // A commit without a valid fleet.yaml cannot be signed: the statement names the fleet.
    fs::remove_file(w.fleet().dir.join("fleet.yaml")).unwrap();
    let c = w.fleet().commit_unsigned("no fleet.yaml", &[]);
    let (code, _, err) = sign_cli(&w, &c, &key, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("fleet.yaml is missing"), "{err}");
}

/// `fleetctl keygen` and `sign` ask for the password on a terminal (minisign's prompt), here a
/// pseudo-terminal made by util-linux `script`.
#[test]
fn passwords_asked_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        crate::harness::skip("passwords_asked_on_a_terminal: util-linux `script` is not installed");
        return;
    }
    let w = world();
    let prefix = w.tmp.path().join("tty");
    let on_tty = |args: &str, input: &str| {
        let cmd = format!("{} {args}", env!("CARGO_BIN_EXE_fleetctl"));
        let mut child = Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("PACFLEET_KEY_PASSWORD")
            .env("LC_ALL", "C")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("run script");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    // Asked twice; different answers are an error and write nothing.
    let (code, out) = on_tty(&format!("keygen --out {}", prefix.display()), "one\ntwo\n");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("passwords don't match"), "{out}");
    assert!(!prefix.with_extension("key").exists());
    let (code, out) = on_tty(&format!("keygen --out {}", prefix.display()), "pw\npw\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Password (one more time)"), "{out}");
    let c = commit_set(&w, "signed on a terminal", &["app", "tool"]);
    let sign = format!(
        "sign {c} --repo {} --key {}",
        w.fleet().dir.display(),
        prefix.with_extension("key").display()
    );
    let (code, out) = on_tty(&sign, "wrong\n");
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("Wrong password"), "{out}");
    let (code, out) = on_tty(&sign, "pw\n");
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("new statement"), "{out}");
    let (code, out, err) = verify(&w, &c, &[&prefix.with_extension("pub")], &[]);
    assert_eq!(code, 0, "{out}\n{err}");
}

// ---------------------------------------------------------------------------------------------
// Edge cases found while writing these tests (see the report; they fail until trust.rs is
// fixed).
// ---------------------------------------------------------------------------------------------

/// The natural hand-over: the outgoing key signs the commit that replaces it. The host applies
/// it, and must stay converged on it on the next pass (nothing newer), not refuse its own
/// applied state because the statement was signed under the keys before it.
#[test]
fn handover_signed_by_the_outgoing_key_stays_applied() {
    let w = world();
    let (b_pub, _) = key(&w, "bob");
    let (host, cfg) = ops_host(&w, "ws-01");
    TestCommand::reconcile(&cfg).ok();
    let c = w.fleet().commit(
        "hand over from ops to bob",
        &[("fleet.yaml", &fleet_yaml("acme", &[("bob", &b_pub)]))],
    );
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(applied_commit(&host), c);
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(
        code, 0,
        "the applied hand-over commit is refused on the next pass\n--- stdout\n{out}\n--- stderr\n{err}"
    );
}

/// A co-signer adds a signature to an existing statement whose expiry (and sequence) someone
/// else chose. A statement planted with a ten-year expiry (signed by an untrusted key, so no
/// host accepts it as is) must not become valid by a trusted key's routine `fleetctl sign`:
/// that would defeat the expiry bound on frozen mirrors.
#[test]
fn cosigning_does_not_adopt_a_planted_statement() {
    let w = world();
    let (_, mallory_key) = key(&w, "mallory");
    let c = commit_set(&w, "planted", &["app", "extra"]);
    let planted = pacfleet::trust::Statement {
        fleet: "acme".into(),
        commit: c.clone(),
        tree: tree(&w, &c),
        sequence: 2,
        expires: chrono::Utc::now() + chrono::Duration::days(3650),
    }
    .to_text();
    put_note(
        &w,
        &c,
        &note_of(&planted, &[&sign_text(&mallory_key, &planted)]),
    );
    // `fleetctl sign` may refuse to co-sign it (exit 2, saying why) or make a new statement;
    // either way no host may accept a statement valid for years.
    let (code, out, err) = sign_cli(&w, &c, &w.fleet().secret_key, &[]);
    assert!(code == 0 || code == 2, "{out}\n{err}");
    if code == 2 {
        assert!(err.contains("expires"), "{err}");
    }
    let (code, out, err) = verify(&w, &c, &[&w.fleet().public_key], &["--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("verify --json");
    if code == 0 {
        let expires: chrono::DateTime<chrono::Utc> =
            v["statement"]["expires"].as_str().unwrap().parse().unwrap();
        assert!(
            expires < chrono::Utc::now() + chrono::Duration::days(31),
            "fleetctl sign co-signed a planted statement valid until {expires}:\n{}",
            note_on(&w, &c)
        );
    } else {
        assert_eq!(code, 3, "{out}\n{err}");
    }
}

/// A note with the largest sequence number (anyone who can push notes can write one) must not
/// crash `fleetctl sign`, which picks the highest sequence + 1.
#[test]
fn a_huge_sequence_in_the_notes_does_not_crash_sign() {
    let w = world();
    let st = statement("acme", w.first(), &tree(&w, w.first()), u64::MAX);
    put_note(&w, w.first(), &note_of(&st, &[]));
    let c = commit_set(&w, "next", &["app", "extra"]);
    let (code, out, err) = sign_cli(&w, &c, &w.fleet().secret_key, &[]);
    assert!(
        code == 0 || code == 2,
        "fleetctl sign crashed (exit {code}):\n{out}\n{err}"
    );
    if code == 2 {
        assert!(err.contains("--sequence"), "{err}");
    }
}

#[test]
fn the_next_sequence_is_the_highest_notes_hold_remembered_or_not() {
    let tmp = tempdir();
    let fleet = FleetRepo::new(tmp.path());
    fleet.commit("one", &[("fleet.yaml", "kind: Fleet\nname: acme\n")]);
    let highest = || pacfleet::trust::highest_sequence(&fleet.dir).expect("highest sequence");
    let cache = fleet.dir.join(".git/pacfleet-sequences");
    for i in 2..=4 {
        fleet.commit(&format!("commit {i}"), &[("README", &format!("{i}\n"))]);
        assert_eq!(highest(), i, "each sign takes the next");
    }
    assert!(cache.exists(), "remembered in the git directory");
    // A note removed that held the highest: every note is read again.
    let tip = fleet.head();
    fleet.git(&["notes", "--ref=pacfleet", "remove", &tip]);
    assert_eq!(highest(), 3);
    // A note rewritten with a higher sequence by another tool.
    let text = fleet.git(&["notes", "--ref=pacfleet", "show", "HEAD~1"]);
    let higher = text.replace("sequence 3\n", "sequence 9\n");
    assert_ne!(text, higher);
    fleet.git(&[
        "notes",
        "--ref=pacfleet",
        "add",
        "-f",
        "-m",
        &higher,
        "HEAD~1",
    ]);
    assert_eq!(highest(), 9);
    // A damaged memory costs a full read, never a wrong answer.
    std::fs::write(
        &cache,
        "garbage\n0000000000000000000000000000000000000000 99\n",
    )
    .unwrap();
    assert_eq!(highest(), 9);
}
