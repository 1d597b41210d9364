//! `fleetctl diff` end to end: a copy of example-fleet/ in a real git repository, changed
//! through a scripted series of commits (a new package set, a removed package, a generation
//! edited in place, a generation bump up and back down, a host moved by pool globs, an invalid
//! commit), each compared with the one before in text, markdown and JSON against golden files
//! in tests/it/golden/diff/. Also: exit codes, `--pool`/`--host`, the default range (HEAD vs
//! the work tree), `A` alone, `origin/main..HEAD` and `...` in a clone, and a fleet in a
//! subdirectory.
//!
//! Commit ids (full and short) are replaced by `<tag>` in the goldens. To rewrite the goldens
//! after an intended change: `PACFLEET_UPDATE_GOLDEN=1 cargo test --test it diff`, then review
//! `git diff tests/it/golden/`.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::{FleetRepo, fleetctl, run, tempdir};
use crate::harness::{copy_dir, example_fleet};

fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden/diff")
}

/// Compares `actual` with the golden file `name`, or rewrites it under
/// `PACFLEET_UPDATE_GOLDEN=1`.
fn golden(name: &str, actual: &str) {
    let path = golden_dir().join(name);
    if std::env::var_os("PACFLEET_UPDATE_GOLDEN").is_some_and(|v| v != "0") {
        fs::create_dir_all(golden_dir()).expect("create golden dir");
        fs::write(&path, actual).expect("write golden");
        return;
    }
    let expected = fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read golden file {} ({e}); create it with PACFLEET_UPDATE_GOLDEN=1",
            path.display()
        )
    });
    pretty_assertions::assert_eq!(
        expected,
        actual,
        "output differs from {}; if the change is intended, rerun with PACFLEET_UPDATE_GOLDEN=1 and review the golden diff",
        path.display()
    );
}

/// Pins the copy of example-fleet at `dir` to build-servers generation `n` (set-latest's edit).
fn pin_example(dir: &Path, n: u32) {
    let file = "pools/build-servers.yaml";
    let text = fs::read_to_string(dir.join(file)).expect("read pool");
    let pinned = pacfleet::capture::set_pool_generation(file, &text, n).expect("pin pool");
    fs::write(dir.join(file), pinned).expect("write pool");
}

/// The example fleet's history, one tag per step.
struct History {
    _tmp: crate::harness::TempDir,
    repo: FleetRepo,
    /// (tag, commit id), in order.
    tags: Vec<(String, String)>,
}

impl History {
    fn commit(&mut self, tag: &str, message: &str, files: &[(&str, &str)]) {
        let id = self.repo.commit_unsigned(message, files);
        self.repo.git(&["tag", tag]);
        self.tags.push((tag.to_owned(), id));
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.repo.dir.join(path)).expect("read manifest")
    }

    /// `fleetctl diff ARGS` in the fleet work tree: (exit code, stdout with commit ids
    /// replaced by their tags, stderr likewise).
    fn diff(&self, args: &[&str]) -> (i32, String, String) {
        let (code, out, err) = run(fleetctl()
            .arg("diff")
            .args(args)
            .current_dir(&self.repo.dir));
        (code, self.scrub(&out), self.scrub(&err))
    }

    fn scrub(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for (tag, id) in &self.tags {
            text = text.replace(id.as_str(), &format!("<{tag}>"));
            text = text.replace(&id[..12], &format!("<{tag}>"));
        }
        text
    }

    /// Goldens of `range` in all three formats; returns the exit codes (all equal).
    fn goldens(&self, name: &str, range: &str) -> i32 {
        let mut codes = Vec::new();
        for (format, ext) in [("text", "txt"), ("markdown", "md"), ("json", "json")] {
            let (code, out, err) = self.diff(&[range, "--format", format]);
            assert!(
                code == 0 || code == 1,
                "diff {range} --format {format}: exit {code}\n{err}"
            );
            assert!(err.is_empty(), "diff {range}: stderr: {err}");
            golden(&format!("{name}.{ext}"), &out);
            codes.push(code);
        }
        assert!(codes.iter().all(|c| *c == codes[0]), "{codes:?}");
        codes[0]
    }
}

/// Commits the story; tags `step-0` (the example fleet as shipped) to `step-6` (invalid).
fn history() -> History {
    let tmp = tempdir();
    let repo = FleetRepo::new(tmp.path());
    copy_dir(&example_fleet(), &repo.dir);
    // example-fleet ships build-servers floating; the story starts from it pinned to its
    // example generation 2, as `fleetctl set-latest` would have left it.
    pin_example(&repo.dir, 2);
    let mut h = History {
        _tmp: tmp,
        repo,
        tags: Vec::new(),
    };
    h.commit("step-0", "the example fleet", &[]);

    // 1. A new package set, used by the workstations.
    let ws = h.read("pools/workstations.yaml").replace(
        "package_sets: [base, desktop]",
        "package_sets: [base, desktop, monitoring]",
    );
    h.commit(
        "step-1",
        "monitoring on the desks",
        &[
            (
                "packages/monitoring.yaml",
                "kind: PackageSet\nname: monitoring\npackages: [prometheus-node-exporter, smartmontools]\n",
            ),
            ("pools/workstations.yaml", &ws),
        ],
    );

    // 2. A package removed from a set both desk pools use.
    let desktop = h
        .read("packages/desktop.yaml")
        .replace("  - libreoffice-fresh\n", "");
    h.commit(
        "step-2",
        "no office suite",
        &[("packages/desktop.yaml", &desktop)],
    );

    // 3. The pinned generation edited in place: an OpenSSH security update, the kernel held
    //    back, and pacman's checksum replaced for the same version.
    let gen2 = h
        .read("generations/build-servers/2.yaml")
        .replace(
            "openssh: {version: 9.9p2-1, sha256: 6d7bdb5b7ce093aff32d7e2210b3496bb0b51c1035b560c43e2365bcef0214a3}",
            "openssh: {version: 10.0p1-1}",
        )
        .replace(
            "linux: {version: 6.13.5.arch1-1, sha256: 0739022eb574899bff39edafffaea6c3d0a61fcffef78803047f2c183db2f1ee}",
            "linux: {version: 6.13.4.arch1-1}",
        )
        .replace(
            "sha256: f9b8c42b56bbff43553a8e8992ffcef04bd6821dd18fb4251042ffb4e8f742bf",
            &format!("sha256: {}", "0".repeat(64)),
        );
    h.commit(
        "step-3",
        "build-servers: openssh 10.0, hold linux at 6.13.4",
        &[("generations/build-servers/2.yaml", &gen2)],
    );

    // 4. Generation 3: a month of upgrades (enough rows to fold the dependencies in markdown),
    //    one new dependency, one dropped.
    let bumped = [
        ("linux", "6.14.2.arch1-1"),
        ("linux-api-headers", "6.14-1"),
        ("python", "3.13.3-1"),
        ("openssh", "10.0p1-2"),
        ("openssl", "3.5.0-1"),
        ("glibc", "2.41+r48+g5cb575ca9a3d-1"),
        ("gcc", "14.2.1+r1134+gab884fffe3fc-1"),
        ("gcc-libs", "14.2.1+r1134+gab884fffe3fc-1"),
        ("systemd", "257.5-1"),
        ("systemd-libs", "257.5-1"),
        ("systemd-sysvcompat", "257.5-1"),
        ("perl", "5.40.2-1"),
        ("curl", "8.13.0-1"),
        ("git", "2.49.0-1"),
        ("sqlite", "3.49.1-2"),
        ("xz", "5.8.1-1"),
        ("zstd", "1.5.7-2"),
        ("vim", "9.1.1236-1"),
        ("vim-runtime", "9.1.1236-1"),
    ];
    let mut gen3 = String::new();
    for line in gen2.lines() {
        let name = line.trim_start().split(':').next().unwrap_or_default();
        if let Some((_, v)) = bumped.iter().find(|(n, _)| *n == name)
            && line.starts_with("  ")
        {
            gen3.push_str(&format!("  {name}: {{version: {v}}}\n"));
        } else if name == "gnulib-l10n" {
            // dropped
        } else if name == "libuv" {
            gen3.push_str(&format!("{line}\n  liburing: {{version: 2.9-1}}\n"));
        } else {
            gen3.push_str(&format!("{line}\n"));
        }
    }
    let gen3 = gen3
        .replace("number: 2", "number: 3")
        .replace("snapshot: 2025-03-01", "snapshot: 2025-04-05")
        .replace("2025-03-01T03:20:05Z", "2025-04-05T03:10:00Z");
    let gen3 = format!(
        "# Captured from build-01 after a month of upgrades.\n{}",
        gen3.split_once("kind: Generation")
            .map(|(_, rest)| format!("kind: Generation{rest}"))
            .unwrap()
    );
    let build = h.read("pools/build-servers.yaml");
    let build3 = build.replace("generation: 2", "generation: 3");
    h.commit(
        "step-4",
        "build-servers: generation 3",
        &[
            ("generations/build-servers/3.yaml", &gen3),
            ("pools/build-servers.yaml", &build3),
        ],
    );
    // 5. ... and back down (a rollback).
    h.commit(
        "step-5",
        "build-servers: back to generation 2",
        &[("pools/build-servers.yaml", &build)],
    );

    // 6. A host moved by pool globs: canary-02 goes back to the workstations' window.
    let canary = h
        .read("pools/canary.yaml")
        .replace("hosts: [canary-01, canary-02]", "hosts: [canary-01]");
    let ws = h.read("pools/workstations.yaml").replace(
        "hosts: [\"ws-*\", \"laptop-*\"]",
        "hosts: [\"ws-*\", \"laptop-*\", canary-02]",
    );
    h.commit(
        "step-6",
        "canary-02 back to the workstations",
        &[
            ("pools/canary.yaml", &canary),
            ("pools/workstations.yaml", &ws),
        ],
    );
    h
}

#[test]
fn golden_diffs_of_each_step() {
    let h = history();
    let steps = [
        ("01-new-set", "step-0..step-1"),
        ("02-removed-package", "step-1..step-2"),
        ("03-pin-change", "step-2..step-3"),
        ("04-generation-up", "step-3..step-4"),
        ("05-generation-down", "step-4..step-5"),
        ("06-host-moved", "step-5..step-6"),
        ("07-whole-story", "step-0..step-6"),
    ];
    for (name, range) in steps {
        assert_eq!(h.goldens(name, range), 1, "{range} has changes");
    }
    // The same revision on both sides: no change, exit 0, in every format.
    for format in ["text", "markdown", "json"] {
        let (code, out, _) = h.diff(&["step-4..step-4", "--format", format]);
        assert_eq!(code, 0, "{out}");
        if format == "json" {
            let v: serde_json::Value = serde_json::from_str(&out).expect("json");
            assert_eq!(v["summary"]["changed"], false);
            assert_eq!(v["pools"], serde_json::json!([]));
        } else {
            assert!(
                out.to_lowercase().contains("no change to any pool or host"),
                "{out}"
            );
        }
    }
    // Generation 2 → 3 → 2 ends where it started: only step 3's edits remain between 2 and 5.
    let (code, out, _) = h.diff(&["step-3..step-5"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn json_is_structured_and_sorted() {
    let h = history();
    let (code, out, err) = h.diff(&["step-3..step-4", "--format", "json"]);
    assert_eq!(code, 1, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(v["from"], "step-3");
    assert_eq!(v["from_commit"], "<step-3>");
    assert_eq!(v["to_commit"], "<step-4>");
    let pool = &v["pools"][0];
    assert_eq!(pool["pool"], "build-servers");
    assert_eq!(pool["generation"], serde_json::json!({"old": 2, "new": 3}));
    let linux = pool["packages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "linux")
        .expect("linux row");
    assert_eq!(
        *linux,
        serde_json::json!({
            "name": "linux", "change": "upgraded", "old": "6.13.4.arch1-1",
            "new": "6.14.2.arch1-1", "explicit": true, "origins": ["set base"], "excluded_by": []
        })
    );
    assert_eq!(v["summary"]["packages"]["upgraded"], 19);
    assert_eq!(v["summary"]["packages"]["pinned"], 1);
    assert_eq!(v["summary"]["packages"]["unpinned"], 1);
}

#[test]
fn invalid_side_is_an_error_never_an_empty_diff() {
    let mut h = history();
    let canary = h
        .read("pools/canary.yaml")
        .replace("packages: [fwupd]", "packages: [fwupd\nexclude: [nano]");
    h.commit("step-7", "a typo", &[("pools/canary.yaml", &canary)]);
    for format in ["text", "markdown", "json"] {
        let (code, out, err) = h.diff(&["step-6..step-7", "--format", format]);
        assert_eq!(code, 2, "{out}{err}");
        assert!(out.is_empty(), "nothing on stdout: {out}");
        if format == "text" {
            golden("08-invalid-side.stderr", &err);
        }
        assert!(
            err.contains("revision step-7 (<step-7>) is invalid:"),
            "{err}"
        );
        assert!(err.contains("\n  pools/canary.yaml:"), "{err}");
    }
    // The old side being invalid is reported the same way.
    let (code, _, err) = h.diff(&["step-7..step-6"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("revision step-7 (<step-7>) is invalid:"),
        "{err}"
    );
    // HEAD is invalid, the work tree too: both are named.
    let (code, _, err) = h.diff(&[]);
    assert_eq!(code, 2);
    assert!(
        err.contains("revision HEAD (<step-7>) is invalid:"),
        "{err}"
    );
    assert!(err.contains("the work tree (.) is invalid:"), "{err}");
    // An unknown revision is an error too.
    let (code, _, err) = h.diff(&["nope..HEAD"]);
    assert_eq!(code, 2);
    assert!(err.contains("cannot read revision `nope`"), "{err}");
}

#[test]
fn default_range_is_head_against_the_work_tree() {
    let h = history();
    let (code, out, _) = h.diff(&[]);
    assert_eq!(code, 0, "clean work tree: {out}");
    assert_eq!(
        out,
        "diff HEAD (<step-6>) → work tree\n\nno change to any pool or host\n"
    );
    // An uncommitted edit.
    let build = h.read("pools/build-servers.yaml") + "paused: true\n";
    h.repo.write(&[("pools/build-servers.yaml", &build)]);
    let (code, out, err) = h.diff(&[]);
    assert_eq!(code, 1, "{err}");
    assert_eq!(
        out,
        "diff HEAD (<step-6>) → work tree\n\npool build-servers\n    paused  false → true\n\n1 pool changed\n"
    );
    // `A` alone is A against the work tree, like `git diff A`.
    let (code, out, _) = h.diff(&["step-5", "--pool", "build-servers"]);
    assert_eq!(code, 1);
    assert!(
        out.starts_with("diff step-5 (<step-5>) → work tree\n"),
        "{out}"
    );
    assert!(out.contains("paused  false → true"), "{out}");
    // --repo from elsewhere.
    let (code, out, _) = run(fleetctl()
        .args(["diff", "--repo"])
        .arg(&h.repo.dir)
        .current_dir(h.repo.dir.parent().unwrap()));
    assert_eq!(code, 1, "{out}");
}

#[test]
fn pool_and_host_filters() {
    let h = history();
    let names = |out: &str| -> Vec<String> {
        out.lines()
            .filter(|l| l.starts_with("pool ") || l.starts_with("host "))
            .map(|l| l.split(':').next().unwrap().to_owned())
            .collect()
    };
    let (code, out, _) = h.diff(&["step-0..step-6"]);
    assert_eq!(code, 1);
    assert_eq!(
        names(&out),
        [
            "pool build-servers",
            "pool canary",
            "pool workstations",
            "host canary-02"
        ]
    );
    let (_, out, _) = h.diff(&["step-0..step-6", "--pool", "canary"]);
    assert_eq!(names(&out), ["pool canary", "host canary-02"]);
    let (_, out, _) = h.diff(&["step-0..step-6", "--pool", "build-servers"]);
    assert_eq!(names(&out), ["pool build-servers"]);
    // A host: its pools on both sides, and itself.
    let (_, out, _) = h.diff(&["step-0..step-6", "--host", "canary-02"]);
    assert_eq!(
        names(&out),
        ["pool canary", "pool workstations", "host canary-02"]
    );
    // A host known only by a glob has nothing of its own: only its pool.
    let (code, out, _) = h.diff(&["step-0..step-6", "--host", "ws-12"]);
    assert_eq!(code, 1);
    assert_eq!(names(&out), ["pool workstations"]);
    // Filters that select nothing that changed: exit 0.
    let (code, _, _) = h.diff(&["step-0..step-1", "--pool", "build-servers"]);
    assert_eq!(code, 0);
    // Unknown names are errors, with what exists.
    let (code, _, err) = h.diff(&["step-0..step-6", "--pool", "desks"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("no pool `desks`") && err.contains("build-servers, canary, workstations"),
        "{err}"
    );
    let (code, _, err) = h.diff(&["step-0..step-6", "--host", "db-01"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("`db-01` has no Host manifest and no pool selects it"),
        "{err}"
    );
}

#[test]
fn pools_and_hosts_that_come_and_go() {
    let h = history();
    // Uncommitted: a new pool for databases (and db-01's manifest), the canary pool retired,
    // the archive moved, a host's labels and packages edited, and build-servers paused.
    let fleet = h
        .read("fleet.yaml")
        .replace("https://archive.archlinux.org", "file:///srv/archive");
    let build = h.read("pools/build-servers.yaml") + "paused: true\n";
    let ws07 = h
        .read("hosts/ws-07.yaml")
        .replace("room: lab-2", "room: lab-3")
        .replace("exclude: [thunderbird]", "exclude: [thunderbird, kate]");
    h.repo.write(&[
        ("fleet.yaml", &fleet),
        ("pools/build-servers.yaml", &build),
        (
            "pools/db.yaml",
            "kind: Pool\nname: db\nlabels: {role: db}\npackage_sets: [base]\npackages: [postgresql]\nprune: true\nwindow: {cron: \"0 0 3 * * Sun\", duration: 2h}\n",
        ),
        (
            "hosts/db-01.yaml",
            "kind: Host\nname: db-01\nlabels: {role: db}\n",
        ),
        ("hosts/ws-07.yaml", &ws07),
    ]);
    fs::remove_file(h.repo.dir.join("pools/canary.yaml")).unwrap();
    for (format, ext) in [("text", "txt"), ("markdown", "md"), ("json", "json")] {
        let (code, out, err) = h.diff(&["--format", format]);
        assert_eq!(code, 1, "{err}");
        golden(&format!("09-come-and-go.{ext}"), &out);
    }
    let (_, out, _) = h.diff(&["--format", "json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["to"], "work tree");
    assert_eq!(v["to_commit"], serde_json::Value::Null);
    assert_eq!(
        v["summary"]["pools"],
        serde_json::json!({"added": 1, "removed": 1, "changed": 1})
    );
    assert_eq!(
        v["summary"]["hosts"],
        serde_json::json!({"moved": 0, "joined": 1, "left": 1, "changed": 1})
    );
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_NAME", "Reviewer")
        .env("GIT_AUTHOR_EMAIL", "reviewer@example.com")
        .env("GIT_COMMITTER_NAME", "Reviewer")
        .env("GIT_COMMITTER_EMAIL", "reviewer@example.com")
        .env("GIT_AUTHOR_DATE", "2026-11-21T09:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-11-21T09:00:00Z")
        .output()
        .expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pull_request_ranges_in_a_clone() {
    let h = history();
    let clone = h.repo.dir.parent().unwrap().join("clone");
    git(
        h.repo.dir.parent().unwrap(),
        &["clone", "-q", h.repo.dir.to_str().unwrap(), "clone"],
    );
    // A topic branch: ws-07 gets htop; meanwhile main moves on (build-servers paused).
    git(&clone, &["switch", "-q", "-c", "topic"]);
    let host = fs::read_to_string(clone.join("hosts/ws-07.yaml"))
        .unwrap()
        .replace(
            "packages: [nvidia, nvidia-settings]",
            "packages: [nvidia, nvidia-settings, blender]",
        );
    fs::write(clone.join("hosts/ws-07.yaml"), host).unwrap();
    git(&clone, &["commit", "-q", "-am", "blender on ws-07"]);
    let build =
        fs::read_to_string(h.repo.dir.join("pools/build-servers.yaml")).unwrap() + "paused: true\n";
    h.repo.commit_unsigned(
        "pause the builders",
        &[("pools/build-servers.yaml", &build)],
    );
    git(&clone, &["fetch", "-q", "origin"]);

    let diff = |range: &str| {
        run(fleetctl()
            .args(["diff", range, "--format", "markdown"])
            .current_dir(&clone))
    };
    // Two dots: origin/main as it is now vs the topic — main's own change shows, reversed.
    let (code, out, err) = diff("origin/main..HEAD");
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("`blender`") && out.contains("| paused | `true` | `false` |"),
        "{out}"
    );
    // Three dots: what the topic branch changes since it forked, as a pull request shows it.
    let (code, out, err) = diff("origin/main...HEAD");
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("### Fleet diff: `merge-base origin/main HEAD`"),
        "{out}"
    );
    assert!(
        out.contains("##### Host `ws-07`: stays in pool workstations"),
        "{out}"
    );
    assert!(
        out.contains("| `blender` | ➕ added | host ws-07 |"),
        "{out}"
    );
    assert!(!out.contains("paused"), "{out}");
    // And nothing when the topic is what main had.
    let (code, _, _) = diff("HEAD..HEAD");
    assert_eq!(code, 0);
}

#[test]
fn fleet_in_a_subdirectory_of_the_repository() {
    let tmp = tempdir();
    let repo = FleetRepo::new(tmp.path());
    copy_dir(&example_fleet(), &repo.dir.join("fleet"));
    repo.write(&[
        ("README.md", "monorepo\n"),
        ("fleet-notes/pools/x.yaml", "not a manifest\n"),
    ]);
    repo.commit_unsigned("fleet in a subdirectory", &[]);
    let pool =
        fs::read_to_string(repo.dir.join("fleet/pools/canary.yaml")).unwrap() + "paused: true\n";
    repo.commit_unsigned("pause canary", &[("fleet/pools/canary.yaml", &pool)]);
    let (code, out, err) = run(fleetctl()
        .args(["diff", "HEAD~1..HEAD", "--repo", "fleet"])
        .current_dir(&repo.dir));
    assert_eq!(code, 1, "{err}");
    assert!(
        out.contains("pool canary\n    paused  false → true\n"),
        "{out}"
    );
    let (code, out, err) = run(fleetctl()
        .args(["diff"])
        .current_dir(repo.dir.join("fleet")));
    assert_eq!(code, 0, "{out}{err}");
    // Outside a git repository: an error that says so.
    let plain = tmp.path().join("plain");
    copy_dir(&example_fleet(), &plain);
    let (code, _, err) = run(fleetctl().args(["diff", "--repo"]).arg(&plain));
    assert_eq!(code, 2);
    assert!(err.contains("is not in a git repository"), "{err}");
}
