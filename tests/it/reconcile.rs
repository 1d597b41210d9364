//! End to end through `fleetctl`: a fleet git repository, a synthetic package repository and
//! several hosts as directories, reconciled through the real libalpm.

use std::fs;

use pacfleet_support::synth::SynthPackage;

use crate::harness::world::AGENT_EXTRA;
use crate::harness::{TestCommand, World, fleetctl, run};

/// The world of these tests: one package repo, an archive, a fleet repo (pools `ws` and
/// `srv`), hosts made on demand.
fn world() -> World {
    World::builder()
        .packages(&[
            SynthPackage::new("app", "1.1-1").depends("libfoo"),
            SynthPackage::new("libfoo", "2.0-1"),
            SynthPackage::new("tool", "1.0-1"),
            SynthPackage::new("extra", "1.0-1").depends("libbar"),
            SynthPackage::new("libbar", "1.0-1"),
            SynthPackage::new("byhand", "1.0-1"),
        ])
        .archived(&[
            SynthPackage::new("app", "1.0-1").depends("libfoo"),
            SynthPackage::new("libfoo", "1.0-1"),
        ])
        .desired(&["app", "tool"])
        .file(
            "pools/srv.yaml",
            "kind: Pool\nname: srv\nhosts: [\"srv-*\"]\npackage_sets: [base]\nprune: true\n",
        )
        .build()
}

#[test]
fn install_change_prune_pin_revert_and_idempotence() {
    let w = world();
    let (ws1, ws1_cfg) = w.host("ws-01");
    let (ws2, ws2_cfg) = w.host("ws-02");
    let (srv, srv_cfg) = w.host("srv-01");

    // A package installed by hand before pacfleet ever ran.
    ws1.pacman_ok(&["-Sy", "byhand"]);

    // Plan first: shows the install, changes nothing, exit 1 (changes pending).
    let (code, out, err) = TestCommand::plan(&ws1_cfg).run().parts();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("install") && out.contains("app") && out.contains("dependency of app"),
        "{out}"
    );
    assert_eq!(ws1.versions(), ["byhand 1.0-1"]);

    // Install from nothing, on three hosts.
    for cfg in [&ws1_cfg, &ws2_cfg, &srv_cfg] {
        let (code, out, err) = TestCommand::reconcile(cfg).run().parts();
        assert_eq!(code, 0, "{out}\n{err}");
        assert!(
            out.contains("2 install") || out.contains("3 install"),
            "{out}"
        );
    }
    assert_eq!(ws2.versions(), ["app 1.1-1", "libfoo 2.0-1", "tool 1.0-1"]);
    assert_eq!(ws2.explicit(), ["app", "tool"].map(String::from).into());
    assert_eq!(ws2.dependencies(), ["libfoo"].map(String::from).into());

    // Idempotence: a second pass does nothing and says so.
    let (code, out, _) = TestCommand::reconcile(&ws1_cfg).run().parts();
    assert_eq!(code, 0);
    assert!(out.contains("converged: nothing to do"), "{out}");
    let (code, out, _) = TestCommand::plan(&ws2_cfg).run().parts();
    assert_eq!(code, 0, "{out}");

    // A commit adds a package to the set: it arrives with its dependency.
    w.fleet().commit(
        "base: add extra",
        &[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, tool, extra]\n",
        )],
    );
    let (code, out, err) = TestCommand::reconcile(&ws1_cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        ws1.versions(),
        [
            "app 1.1-1",
            "byhand 1.0-1",
            "extra 1.0-1",
            "libbar 1.0-1",
            "libfoo 2.0-1",
            "tool 1.0-1"
        ]
    );

    // A commit drops packages: pruned, with the dependency pacfleet brought; the package
    // installed by hand stays even though nothing desires it.
    w.fleet().commit(
        "base: drop tool and extra",
        &[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app]\n",
        )],
    );
    let (code, out, err) = TestCommand::reconcile(&ws1_cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("remove"), "{out}");
    assert_eq!(
        ws1.versions(),
        ["app 1.1-1", "byhand 1.0-1", "libfoo 2.0-1"]
    );

    // Pin srv to a generation with older versions: a downgrade from the archive.
    let generation = "kind: Generation\npool: srv\nnumber: 1\npackages:\n  app: {version: 1.0-1}\n  libfoo: {version: 1.0-1}\n";
    let pin = w.fleet().commit(
        "srv: pin generation 1",
        &[
            ("generations/srv/1.yaml", generation),
            ("pools/srv.yaml", "kind: Pool\nname: srv\nhosts: [\"srv-*\"]\npackage_sets: [base]\nprune: true\ngeneration: 1\n"),
        ],
    );
    let (code, out, err) = TestCommand::reconcile(&srv_cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("downgrade"), "{out}");
    assert_eq!(srv.versions(), ["app 1.0-1", "libfoo 1.0-1"]);
    assert_eq!(
        srv.dependencies(),
        ["libfoo"].map(String::from).into(),
        "the pinned dependency stays a dependency"
    );
    // ws is floating and unaffected by srv's pin.
    let (code, _, _) = TestCommand::plan(&ws1_cfg).run().parts();
    assert_eq!(code, 0);

    // Revert the pin: back to the repo's versions.
    w.fleet().revert(&pin);
    let (code, out, err) = TestCommand::reconcile(&srv_cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("upgrade"), "{out}");
    assert_eq!(srv.versions(), ["app 1.1-1", "libfoo 2.0-1"]);

    // History has every applied changeset, oldest first.
    let (code, out, _) = run(fleetctl().arg("history").arg("--config").arg(&srv_cfg));
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[1].contains("generation 1"), "{out}");
    let (_, json, _) = run(fleetctl()
        .arg("history")
        .arg("--json")
        .arg("--config")
        .arg(&srv_cfg));
    let entries: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(entries[1]["changes"][0]["action"], "downgrade", "{json}");
    let _ = &w.archive;
    let _ = fs::metadata(&w.repo().dir);
}

#[test]
fn bad_commits_leave_hosts_untouched() {
    let w = world();
    let (host, cfg) = w.host("ws-01");
    TestCommand::reconcile(&cfg).ok();
    let before = host.local_db_snapshot();

    let cases: &[(&str, &str, &str)] = &[
        (
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, tool\n",
            "packages/base.yaml:",
        ),
        (
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npakages: [app]\n",
            "did you mean `packages`?",
        ),
        (
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, nosuchpkg]\n",
            "`nosuchpkg` (asked for by set base) is not in any repository",
        ),
        (
            "packages/base.yaml",
            "kind: PackageSet\nname: base\ninclude: [base]\npackages: [app]\n",
            "include cycle: base → base",
        ),
        (
            "pools/other.yaml",
            "kind: Pool\nname: other\nhosts: [ws-01]\n",
            "host `ws-01` is matched by 2 pools",
        ),
    ];
    for (file, text, expect) in cases {
        w.fleet().commit(&format!("bad: {expect}"), &[(file, text)]);
        let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
        assert_eq!(code, 2, "{expect}: {out}\n{err}");
        assert!(err.contains(expect), "expected {expect:?} in:\n{err}");
        assert!(
            err.contains("nothing was changed")
                || err.contains("libalpm")
                || err.contains("is not in any repository")
                || err.contains("pools"),
            "{err}"
        );
        assert_eq!(
            host.local_db_snapshot(),
            before,
            "{expect}: the host changed"
        );
        w.fleet().git(&["reset", "-q", "--hard", "HEAD~1"]);
    }
    // Back on a good commit, the host converges again.
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("converged"), "{out}");
    let status = fs::read_to_string(host.state_dir.join("status.json")).unwrap();
    assert!(status.contains("converged"), "{status}");
}

#[test]
fn unreachable_repo_lock_held_and_corrupt_state_are_clear_errors() {
    let w = world();
    let (host, cfg) = w.host("ws-01");
    TestCommand::reconcile(&cfg).ok();
    let before = host.local_db_snapshot();

    // Unreachable repository (a closed port on loopback).
    let bad = host.agent_yaml(
        "git://127.0.0.1:9/fleet.git",
        &w.fleet().public_key,
        "lock_timeout: 1s\n",
    );
    let (code, _, err) = TestCommand::reconcile(&bad).run().parts();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("127.0.0.1:9"), "{err}");
    assert_eq!(host.local_db_snapshot(), before);

    // pacman's lock held by someone else: bounded wait, clear message, lock left alone.
    let cfg = w.config(&host, AGENT_EXTRA);
    w.fleet().commit(
        "base: add extra",
        &[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, tool, extra]\n",
        )],
    );
    let lock = host.dbpath.join("db.lck");
    fs::write(&lock, "").unwrap();
    let started = std::time::Instant::now();
    let (code, _, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("locked") && err.contains("never deletes it"),
        "{err}"
    );
    assert!(started.elapsed() >= std::time::Duration::from_secs(1));
    assert!(lock.exists(), "the lock must never be deleted");
    assert_eq!(host.local_db_snapshot(), before);
    fs::remove_file(&lock).unwrap();

    // A corrupt state file: a clear error, and nothing reset behind the operator's back.
    fs::write(host.state_dir.join("inventory.json"), "{ not json").unwrap();
    let (code, _, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("inventory.json") && err.contains("corrupt"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(host.state_dir.join("inventory.json")).unwrap(),
        "{ not json"
    );
    assert_eq!(host.local_db_snapshot(), before);
}

#[test]
fn a_host_pass_reads_its_own_manifest_not_the_others_and_validate_reads_all() {
    let w = world();
    let (host, cfg) = w.host("ws-01");
    w.fleet().commit(
        "ws-01 adds extra; srv-09's manifest is broken",
        &[
            (
                "hosts/ws-01.yaml",
                "kind: Host\nname: ws-01\npackages: [extra]\n",
            ),
            (
                "hosts/srv-09.yaml",
                "kind: Host\nname: srv-09\npakages: [x]\n",
            ),
        ],
    );
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(host.explicit().contains("extra"), "{out}");
    // CI's validate reads every file and reports it; the broken host itself refuses.
    let broken = "hosts/srv-09.yaml:3:1: unknown field `pakages`";
    let (code, out, err) = run(fleetctl().arg("validate").arg(&w.fleet().dir));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains(broken), "{err}");
    let (srv, srv_cfg) = w.host("srv-09");
    let (code, out, err) = TestCommand::reconcile(&srv_cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains(broken) && err.contains("nothing was changed"),
        "{err}"
    );
    assert!(srv.installed().is_empty());
    // A pool file is every host's: broken, it refuses ws-01 too.
    w.fleet().commit(
        "a broken pool",
        &[("pools/db.yaml", "kind: Pool\nname: db\nprune: maybe\n")],
    );
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("pools/db.yaml:3:8: prune"), "{err}");
}

#[test]
fn validate_reports_every_problem_with_locations() {
    let w = world();
    w.fleet().write(&[
        (
            "pools/bad.yaml",
            "kind: Pool\nname: bad\nhosts: [x]\npackage_sets: [nope]\nprune: maybe\n",
        ),
        (
            "packages/c.yaml",
            "kind: PackageSet\nname: c\npackages: [Bad]\n",
        ),
    ]);
    let (code, out, err) = run(fleetctl().arg("validate").arg(&w.fleet().dir));
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("pools/bad.yaml:5:8:"), "{err}");
    assert!(
        err.contains("packages/c.yaml:3:12:") && err.contains("invalid name `Bad`"),
        "{err}"
    );
    assert!(err.contains("2 problems found"), "{err}");
    fs::remove_file(w.fleet().dir.join("pools/bad.yaml")).unwrap();
    fs::remove_file(w.fleet().dir.join("packages/c.yaml")).unwrap();
    let (code, out, err) = run(fleetctl().arg("validate").arg(&w.fleet().dir));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("fleet `acme` is valid: 2 pools"), "{out}");

    let (code, out, _) = run(fleetctl()
        .args(["resolve", "--host", "srv-09"])
        .arg(&w.fleet().dir));
    assert_eq!(code, 0);
    assert!(
        out.contains("pool      srv") && out.contains("app") && out.contains("(set base)"),
        "{out}"
    );
    let (code, out, _) = run(fleetctl()
        .args(["resolve", "--host", "db-01"])
        .arg(&w.fleet().dir));
    assert_eq!(code, 0);
    assert!(out.contains("not in the fleet"), "{out}");
}

#[test]
fn a_dependency_dropped_by_an_upgrade_is_pruned_in_the_same_pass() {
    let mut w = world();
    let (host, cfg) = w.host("ws-01");
    w.repo_mut().add(&[
        SynthPackage::new("tool", "1.0-1").depends("libold"),
        SynthPackage::new("libold", "1.0-1"),
    ]);
    TestCommand::reconcile(&cfg).ok();
    assert!(host.installed().contains_key("libold"));
    // The repository's new tool no longer needs libold: one pass upgrades and prunes.
    w.repo_mut().add(&[SynthPackage::new("tool", "1.1-1")]);
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        host.installed().get("tool").map(String::as_str),
        Some("1.1-1")
    );
    assert!(!host.installed().contains_key("libold"), "{out}");
    assert!(out.contains("remove") && out.contains("libold"), "{out}");
}

#[test]
fn broken_dependencies_are_repaired_without_churn() {
    let w = world();
    let (host, cfg) = w.host("ws-01");
    TestCommand::reconcile(&cfg).ok();

    // A dependency removed by hand with -Rdd: the host is broken; a pass installs it again.
    host.pacman_ok(&["-Rdd", "libfoo"]);
    let (code, out, _) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("install") && out.contains("libfoo"), "{out}");
    TestCommand::reconcile(&cfg).ok();
    assert!(host.installed().contains_key("libfoo"));
    assert!(host.dependencies().contains("libfoo"));

    // A desired package removed by hand with -Rdd: reinstalled, and its dependency (which
    // pacfleet installed and which is no longer required) is kept, not removed and reinstalled.
    host.pacman_ok(&["-Rdd", "app"]);
    let (code, out, _) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("app") && !out.contains("remove"), "{out}");
    TestCommand::reconcile(&cfg).ok();
    TestCommand::plan(&cfg).ok();
}

#[test]
fn one_pass_per_root_even_with_another_state_dir() {
    let w = world();
    let (host, cfg) = w.host("ws-01");
    // Another pass on the same root (say, a second config with its own state_dir) holds the
    // root's pass lock.
    let held = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(host.dbpath.join("pacfleet.lock"))
        .unwrap();
    held.try_lock().unwrap();
    let (code, _, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("another fleetctl pass") && err.contains("pacfleet.lock"),
        "{err}"
    );
    held.unlock().unwrap();
    TestCommand::reconcile(&cfg).ok();
}

/// A pass whose inputs are those of the last pass that planned and found nothing to do skips
/// planning (the no-op fast path, BENCHMARKS.md); every input the plan reads brings the full
/// plan back, and with it the right outcome.
#[test]
fn a_pass_with_nothing_changed_skips_planning_until_any_input_changes() {
    const SKIPPED: &str = "nothing the plan reads changed";
    const REUSED: &str = "resolved this host at this tree: reused";
    let mut w = world();
    let (host, cfg) = w.host("ws-01");
    let pass = |extra: &[&str]| {
        let (code, out, err) = run(fleetctl()
            .env("RUST_LOG", "pacfleet=debug")
            .arg("reconcile")
            .arg("--config")
            .arg(&cfg)
            .args(extra));
        assert_eq!(code, 0, "{out}\n{err}");
        (out, err.contains(SKIPPED), err.contains(REUSED))
    };
    // After a pass that changed the host: one full plan that finds nothing and records its
    // inputs, then a pass that skips planning.
    let settles = || {
        assert!(!pass(&[]).1, "the pass after a change plans in full");
        assert!(pass(&[]).1, "then the next one skips planning");
    };
    // Applies, then plans in full and records, then skips.
    assert!(!pass(&[]).1);
    assert!(!pass(&[]).1);
    let (out, skipped, _) = pass(&[]);
    assert!(skipped, "{out}");
    assert!(out.contains("converged"), "{out}");
    assert!(!pass(&["--full-plan"]).1, "--full-plan plans in full");

    // The local database: a reason changed in place (`desc` rewritten, no entry added).
    host.pacman_ok(&["-D", "--asdeps", "app"]);
    assert!(!pass(&[]).1);
    assert!(host.explicit().contains("app"), "reason restored");
    settles();

    // The local database: an entry removed behind pacfleet's back.
    host.pacman_ok(&["-Rdd", "libfoo"]);
    assert!(!pass(&[]).1);
    assert!(host.installed().contains_key("libfoo"), "repaired");
    settles();

    // The sync databases: the repository publishes an update (floating pool).
    w.repo_mut().add(&[SynthPackage::new("tool", "1.1-1")]);
    assert!(!pass(&[]).1);
    assert_eq!(host.installed()["tool"], "1.1-1");
    settles();

    // pacman's configuration alone: an update held back by IgnorePkg, then released.
    let conf = fs::read_to_string(&host.conf).expect("read pacman.conf");
    let ignoring = conf.replacen("[options]\n", "[options]\nIgnorePkg = tool\n", 1);
    assert_ne!(conf, ignoring);
    fs::write(&host.conf, &ignoring).expect("write pacman.conf");
    w.repo_mut().add(&[SynthPackage::new("tool", "1.2-1")]);
    assert!(!pass(&[]).1);
    assert_eq!(host.installed()["tool"], "1.1-1", "ignored");
    // Held is never converged, so nothing is recorded to skip by: every pass plans in full
    // and says what is held.
    let (out, skipped, _) = pass(&[]);
    assert!(!skipped, "{out}");
    assert!(
        out.contains("held: tool 1.1-1 -> 1.2-1 held by IgnorePkg"),
        "{out}"
    );
    fs::write(&host.conf, &conf).expect("write pacman.conf");
    assert!(!pass(&[]).1);
    assert_eq!(host.installed()["tool"], "1.2-1", "released");
    settles();

    // The fleet: a new signed commit.
    w.fleet().commit(
        "extra for everyone",
        &[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, tool, extra]\n",
        )],
    );
    let (_, skipped, reused) = pass(&[]);
    assert!(!skipped && !reused, "a new tree: its manifests are read");
    assert!(host.installed().contains_key("extra"));
    assert!(!pass(&[]).2, "after an apply nothing is reused");
    let (_, skipped, reused) = pass(&[]);
    assert!(
        skipped && reused,
        "the tree the last converged pass resolved at"
    );
    // A commit that changes nothing this host reads: its manifests are read once, the plan is
    // skipped, and the next pass reuses the resolution at the new tree.
    w.fleet().commit("docs", &[("README.md", "the fleet\n")]);
    let (_, skipped, reused) = pass(&[]);
    assert!(skipped && !reused, "a new tree, the same plan inputs");
    let (_, skipped, reused) = pass(&[]);
    assert!(skipped && reused, "and then reused");

    // A damaged record costs a full plan, nothing else.
    let record = host.state_dir.join("converged.json");
    fs::write(&record, "{ not json").expect("damage converged.json");
    assert!(!pass(&[]).1);
    assert!(pass(&[]).1);
    assert_eq!(
        TestCommand::plan(&cfg).run().code,
        0,
        "and the full plan agrees: nothing to do"
    );
}
