//! What a pull request can put in front of CI (`fleetctl validate .`, `fleetctl diff` of the
//! work tree or of `A..B`), end to end against the real binary:
//!
//! - symbolic links at manifest paths or in place of manifest directories, pointing out of
//!   the repository (at credentials, keys, `/etc`): never followed, an error naming the link,
//!   and the target's contents (a canary) nowhere in the output;
//! - untrusted text in output: a version that would end a markdown table and hide the rows
//!   after it in an HTML comment, escape sequences in versions.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{World, fleetctl, run};

/// A secret that must never appear in any output.
const CANARY: &str = "CANARY-7f3a9c1e-never-print-me";

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Contributor")
        .env("GIT_AUTHOR_EMAIL", "pr@example.com")
        .env("GIT_COMMITTER_NAME", "Contributor")
        .env("GIT_COMMITTER_EMAIL", "pr@example.com")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The shared world's fleet repository with one valid (unsigned) commit, and secrets outside
/// it.
struct PullRequest {
    world: World,
}

impl PullRequest {
    fn new() -> PullRequest {
        let world = World::builder()
            .desired(&["app"])
            .pool("kind: Pool\nname: ws\nhosts: [ws-01]\npackage_sets: [base]\n")
            .signed(false)
            .build();
        let w = PullRequest { world };
        // What the attacker wants: files outside the repository, in YAML-ish shapes so a parse
        // error would quote them.
        let secrets = w.secrets();
        fs::create_dir_all(secrets.join("etc")).expect("mkdir");
        fs::write(
            secrets.join("git-credentials"),
            format!("https://user:{CANARY}@example.com\n"),
        )
        .expect("write");
        fs::write(
            secrets.join("id_ed25519"),
            format!("-----BEGIN OPENSSH PRIVATE KEY-----\n{CANARY}\n"),
        )
        .expect("write");
        fs::write(
            secrets.join("etc/1.yaml"),
            format!("kind: {CANARY}\nshadow: [{CANARY}\n"),
        )
        .expect("write");
        w
    }

    fn repo(&self) -> PathBuf {
        self.world.fleet().dir.clone()
    }

    fn secrets(&self) -> PathBuf {
        self.world.tmp.path().join("secrets")
    }

    fn write(&self, rel: &str, text: &str) {
        let p = self.repo().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }

    fn link(&self, rel: &str, target: &Path) {
        let p = self.repo().join(rel);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        std::os::unix::fs::symlink(target, p).expect("symlink");
    }

    /// The three attacks; returns (link path, what its error says).
    fn attack(&self, which: &[usize]) -> Vec<(String, String)> {
        let s = self.secrets();
        let all = [
            ("hosts/creds.yaml", s.join("git-credentials")),
            ("pools/key.yaml", s.join("id_ed25519")),
            ("generations/x", s.join("etc")),
        ];
        which
            .iter()
            .map(|&i| {
                let (rel, target) = &all[i];
                self.link(rel, target);
                let expect = if i == 2 {
                    format!(
                        "generations/x:0:0: is a symbolic link (to {}); pacfleet never follows links out of the repository",
                        target.display()
                    )
                } else {
                    format!(
                        "{rel}:0:0: is a symbolic link (to {}); manifests must be regular files in the repository — commit the file itself",
                        target.display()
                    )
                };
                (rel.to_string(), expect)
            })
            .collect()
    }

    fn fleetctl(&self, args: &[&str]) -> (i32, String, String) {
        run(fleetctl().args(args).current_dir(self.repo()))
    }
}

fn assert_no_canary(label: &str, out: &str, err: &str) {
    assert!(
        !out.contains(CANARY) && !err.contains(CANARY),
        "{label}: the secret reached the output:\n{out}\n{err}"
    );
}

#[test]
fn validate_never_follows_a_symlink_out_of_the_repository() {
    for which in [&[0usize][..], &[1], &[2], &[0, 1, 2]] {
        let w = PullRequest::new();
        let expect = w.attack(which);
        let (code, out, err) = w.fleetctl(&["validate", "."]);
        let label = format!("validate with links {which:?}");
        assert_eq!(code, 2, "{label}\n{out}\n{err}");
        for (_, e) in &expect {
            assert!(
                err.contains(e.as_str()),
                "{label}: expected {e:?} in:\n{err}"
            );
        }
        assert!(
            err.contains(&format!("{} problem", expect.len())),
            "{label}: one problem per link, nothing else:\n{err}"
        );
        assert_no_canary(&label, &out, &err);
        // --json says the same, and leaks nothing either.
        let (code, out, err) = w.fleetctl(&["validate", "--json", "."]);
        assert_eq!(code, 2, "{label} --json\n{out}\n{err}");
        assert!(out.contains("is a symbolic link"), "{label} --json:\n{out}");
        assert_no_canary(&label, &out, &err);
    }
}

#[test]
fn a_symlinked_manifest_directory_is_not_descended_into() {
    let w = PullRequest::new();
    // pools/ itself a link to a directory of manifests outside the repository.
    fs::remove_dir_all(w.repo().join("pools")).expect("rm pools");
    w.link("pools", &w.secrets().join("etc"));
    let (code, out, err) = w.fleetctl(&["validate", "."]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains(&format!(
            "pools:0:0: is a symbolic link (to {}); pacfleet never follows links out of the repository and did not read anything in it: make pools/ a real directory and commit its manifests",
            w.secrets().join("etc").display()
        )),
        "{err}"
    );
    assert_no_canary("pools -> dir", &out, &err);
    // A link to a file inside the repository is refused too: the rule is about the entry, not
    // where it points (git stores only the link, so a checkout elsewhere differs).
    let w = PullRequest::new();
    w.link("hosts/ws-01.yaml", Path::new("../packages/base.yaml"));
    let (code, _, err) = w.fleetctl(&["validate", "."]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("hosts/ws-01.yaml:0:0: is a symbolic link (to ../packages/base.yaml)"),
        "{err}"
    );
}

#[test]
fn work_tree_diff_never_follows_a_symlink() {
    let w = PullRequest::new();
    let expect = w.attack(&[0, 1, 2]);
    for format in ["text", "markdown", "json"] {
        let (code, out, err) = w.fleetctl(&["diff", "--format", format]);
        let label = format!("diff --format {format} of the work tree");
        assert_eq!(code, 2, "{label}\n{out}\n{err}");
        assert!(err.contains("the work tree ("), "{label}:\n{err}");
        for (_, e) in &expect {
            assert!(
                err.contains(e.as_str()),
                "{label}: expected {e:?} in:\n{err}"
            );
        }
        assert_no_canary(&label, &out, &err);
    }
}

#[test]
fn a_committed_symlink_is_an_error_in_a_range_diff() {
    let w = PullRequest::new();
    let expect = w.attack(&[0, 1, 2]);
    git(&w.repo(), &["add", "-A"]);
    git(&w.repo(), &["commit", "-q", "-m", "links"]);
    // git stored them as links (mode 120000), not as the files they point to.
    let tree = git(&w.repo(), &["ls-tree", "-r", "HEAD"]);
    for (rel, _) in &expect {
        assert!(
            tree.lines()
                .any(|l| l.starts_with("120000 ") && l.ends_with(rel.as_str())),
            "{rel} is not a link in git:\n{tree}"
        );
    }
    // The checkout CI makes may not even have the links' targets: remove them, and the work
    // tree's links, so only git is read.
    for (rel, _) in &expect {
        fs::remove_file(w.repo().join(rel)).expect("rm link");
    }
    fs::remove_dir_all(w.secrets()).expect("rm secrets");
    let (code, out, err) = w.fleetctl(&["diff", "HEAD~1..HEAD", "--format", "markdown"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("revision HEAD ("), "{err}");
    for (_, e) in &expect {
        assert!(err.contains(e.as_str()), "expected {e:?} in:\n{err}");
    }
    assert_no_canary("A..B", &out, &err);
    // With the secrets in place, the commit still reads only the links' text.
    let w = PullRequest::new();
    let expect = w.attack(&[0, 1, 2]);
    git(&w.repo(), &["add", "-A"]);
    git(&w.repo(), &["commit", "-q", "-m", "links"]);
    let (code, out, err) = w.fleetctl(&["diff", "HEAD~1..HEAD"]);
    assert_eq!(code, 2, "{out}\n{err}");
    for (_, e) in &expect {
        assert!(err.contains(e.as_str()), "expected {e:?} in:\n{err}");
    }
    assert_no_canary("A..B with secrets present", &out, &err);
}

/// The markdown attack: text that ends the table (CR, CR), forges a line and opens an HTML
/// comment that hides every row after it in the rendered PR comment.
const HIDE: &str = "`\r\r_Reviewed: routine_\r\r<!--";

#[test]
fn validate_rejects_a_version_that_is_not_a_pacman_version() {
    let w = PullRequest::new();
    w.write(
        "pools/ws.yaml",
        "kind: Pool\nname: ws\nhosts: [ws-01]\npackage_sets: [base]\ngeneration: 1\n",
    );
    w.write(
        "generations/ws/1.yaml",
        "kind: Generation\npool: ws\nnumber: 1\npackages:\n  app: {version: \"5.2-2`\\r\\r_Reviewed: routine_\\r\\r<!--\"}\n  lib: {version: \"1.0\\e[31m-1\"}\n",
    );
    let (code, out, err) = w.fleetctl(&["validate", "."]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("generations/ws/1.yaml:5:18: version `5.2-2`\\u{d}\\u{d}_Reviewed: routine_\\u{d}\\u{d}<!--` of `app` is not a full Arch version: the pkgrel (after the last `-`) must be digits"),
        "{err}"
    );
    assert!(
        err.contains("generations/ws/1.yaml:6:18: version `1.0\\u{1b}[31m-1` of `lib` is not a full Arch version: the pkgver has the character \\u{1b}; it may hold only letters, digits and . _ + ~"),
        "{err}"
    );
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
    // diff of the work tree refuses it the same way, escaped.
    let (code, out, err) = w.fleetctl(&["diff", "--format", "markdown"]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("is not a full Arch version"), "{err}");
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "{err:?}");
}

#[test]
fn markdown_diff_escapes_untrusted_text_and_keeps_every_row() {
    let w = PullRequest::new();
    // A value validate accepts (an archive URL) carrying the attack, then rows after it.
    w.write(
        "fleet.yaml",
        &format!(
            "kind: Fleet\nname: acme\narchive: {:?}\n",
            format!("https://archive.example/{HIDE}")
        ),
    );
    w.write(
        "packages/base.yaml",
        "kind: PackageSet\nname: base\npackages: [app, zzz-after-the-comment]\n",
    );
    let (code, md, err) = w.fleetctl(&["diff", "--format", "markdown"]);
    assert_eq!(code, 1, "{md}\n{err}");
    assert!(!md.contains("<!--"), "raw HTML comment opener:\n{md}");
    assert!(!md.contains('\r'), "raw CR:\n{md:?}");
    assert!(
        md.contains(
            "| archive | (none) | https://archive.example/\\`  \\_Reviewed: routine\\_  &lt;!--"
        ),
        "the value is shown escaped in its cell:\n{md}"
    );
    // Every table line is a whole row, and the row after the attack is there.
    for line in md.lines().filter(|l| l.starts_with('|')) {
        assert!(line.ends_with('|'), "broken row {line:?} in:\n{md}");
    }
    assert!(
        md.contains("| `zzz-after-the-comment` | ➕ added |"),
        "row hidden:\n{md}"
    );
    // JSON carries it as data.
    let (code, json, _) = w.fleetctl(&["diff", "--format", "json"]);
    assert_eq!(code, 1);
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert!(json.contains("\\r\\r_Reviewed"), "{json}");
    assert!(v.is_object());
}

#[test]
fn text_diff_shows_escape_sequences_escaped() {
    let w = PullRequest::new();
    // YAML's "\e" is ESC: validate takes it in a URL, so diff must not print it raw.
    w.write(
        "fleet.yaml",
        "kind: Fleet\nname: acme\narchive: \"https://archive.example/\\e]0;owned\\a\\e[2J\"\n",
    );
    let (code, out, err) = w.fleetctl(&["diff"]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}'),
        "raw escape sequence:\n{out:?}"
    );
    assert!(
        out.contains("https://archive.example/\\u{1b}]0;owned\\u{7}\\u{1b}[2J"),
        "{out}"
    );
}
