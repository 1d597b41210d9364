//! A pool's `health:` through `fleetctl reconcile`: the commands run after applying, a failure
//! fails the pass (exit 2, status and history say so), `rollback: true` puts back the exact
//! package versions the host had, from its package cache, and the failed change is not
//! applied again until a new change arrives.

use pacfleet_support::synth::SynthPackage;

use crate::harness::TestCommand;
use crate::harness::world::World;

/// The health check of these tests: the managed root must not hold the file app 2.0 ships.
const CHECK: &str = "test ! -e \"$PACFLEET_ROOT/usr/share/app/broken\"";

fn pool(health: &str) -> String {
    pool_checking(CHECK, health)
}

fn pool_checking(check: &str, health: &str) -> String {
    format!(
        "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackages: [app]\nprune: true\nhealth:\n  commands: [\"true\", {}]\n  timeout: 30s\n{health}",
        serde_json::to_string(check).expect("json string")
    )
}

/// app 1.0 and libfoo 1.0, the versions a rollback goes back to.
fn first_versions() -> [SynthPackage; 2] {
    [
        SynthPackage::new("app", "1.0-1").depends("libfoo"),
        SynthPackage::new("libfoo", "1.0-1"),
    ]
}

fn world(health: &str) -> World {
    World::builder()
        .packages(&first_versions())
        .pool(&pool(health))
        .build()
}

/// The upstream repository moves on: app 2.0 (which breaks the health check) needs a new
/// libfoo and a new libbar.
fn publish_broken_app(w: &mut World) {
    w.repo_mut().add(&[
        SynthPackage::new("app", "2.0-1")
            .depends("libfoo>=2")
            .depends("libbar")
            .file("usr/share/app/broken", "yes"),
        SynthPackage::new("libfoo", "2.0-1"),
        SynthPackage::new("libbar", "1.0-1"),
    ]);
}

#[test]
fn a_failed_health_check_rolls_back_to_the_exact_versions_and_is_not_retried() {
    let mut w = world("  rollback: true\n");
    let (ws, cfg) = w.host("ws-01");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "a healthy first install: {out}\n{err}");
    assert_eq!(ws.versions(), ["app 1.0-1", "libfoo 1.0-1"]);

    publish_broken_app(&mut w);
    let (code, out, err) = TestCommand::reconcile(&cfg).arg("--json").run().parts();
    assert_eq!(code, 2, "an unhealthy apply fails the pass: {out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("report JSON");
    assert_eq!(report["verdict"]["outcome"], "unhealthy", "{out}");
    assert_eq!(report["verdict"]["rolled_back"], true, "{out}");
    let failure = report["health"]["failure"].as_str().expect("failure");
    assert!(failure.contains("exited with status 1"), "{failure}");
    // Back on exactly what it had: app and libfoo downgraded from the cache, libbar gone.
    assert_eq!(ws.versions(), ["app 1.0-1", "libfoo 1.0-1"]);
    let outcomes: Vec<String> = ws
        .history()
        .iter()
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(outcomes, ["applied", "applied", "rolled-back"]);
    assert_eq!(ws.status_json()["failure"], "health");

    // The same change again: not retried, and said why.
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("not retried"), "{out}");
    // The metrics keep saying the health check failed on the passes that do not retry it.
    assert_eq!(ws.status_json()["health_ok"], false);
    assert_eq!(ws.versions(), ["app 1.0-1", "libfoo 1.0-1"]);

    // A new change of the pool (here: the check fixed) is applied.
    w.fleet().commit(
        "health: tolerate the new file",
        &[(
            "pools/ws.yaml",
            &pool_checking("true", "  rollback: true\n"),
        )],
    );
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        ws.versions(),
        ["app 2.0-1", "libbar 1.0-1", "libfoo 2.0-1"],
        "{out}\n{err}"
    );
}

#[test]
fn without_rollback_a_failed_check_leaves_the_new_packages_and_fails_the_pass() {
    let mut w = world("");
    let (ws, cfg) = w.host("ws-01");
    assert_eq!(TestCommand::reconcile(&cfg).run().parts().0, 0);
    publish_broken_app(&mut w);
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("the health check failed"), "{out}");
    assert_eq!(ws.versions(), ["app 2.0-1", "libbar 1.0-1", "libfoo 2.0-1"]);
}

/// A check that first empties the host's package cache of app 1.0 and libfoo 1.0 (as
/// `paccache -r` would), then fails.
fn pool_that_cleans_the_cache() -> String {
    let clean = "rm -f \"$PACFLEET_ROOT\"/var/cache/pacman/pkg/*-1.0-1-*";
    pool_checking(&format!("{clean}; false"), "  rollback: true\n")
}

/// ws-01 installs the first versions; then the pool's check becomes one that cleans the cache
/// and fails, and app 2.0 is published: the pass applies it, fails its check (exit 2) and has
/// no cached copy of what it had. Its `--json` report.
fn fail_after_the_cache_was_cleaned(w: &mut World, cfg: &std::path::Path) -> serde_json::Value {
    assert_eq!(TestCommand::reconcile(cfg).run().parts().0, 0);
    w.fleet().commit(
        "health: a check that cleans the cache first",
        &[("pools/ws.yaml", &pool_that_cleans_the_cache())],
    );
    publish_broken_app(w);
    let (code, out, err) = TestCommand::reconcile(cfg).arg("--json").run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    serde_json::from_str(&out).expect("report JSON")
}

#[test]
fn a_rollback_takes_the_old_versions_from_the_archive_when_the_cache_lost_them() {
    let mut w = World::builder()
        .packages(&first_versions())
        .archived(&first_versions())
        .pool(&pool("  rollback: true\n"))
        .build();
    let (ws, cfg) = w.host("ws-01");
    let report = fail_after_the_cache_was_cleaned(&mut w, &cfg);
    assert_eq!(report["verdict"]["rolled_back"], true, "{report}");
    let archive = w.archive.display().to_string();
    let downgrades: Vec<&serde_json::Value> = report["rolled_back"]["changes"]
        .as_array()
        .expect("changes")
        .iter()
        .filter(|c| c["action"] == "downgrade")
        .collect();
    assert_eq!(downgrades.len(), 2, "{report}");
    for c in downgrades {
        let source = c["source"].as_str().unwrap_or_default();
        assert!(source.starts_with(&archive), "{} from {source}", c["name"]);
    }
    assert_eq!(ws.versions(), ["app 1.0-1", "libfoo 1.0-1"]);
}

#[test]
fn a_rollback_that_cannot_be_made_leaves_the_host_failed_on_the_new_packages() {
    let mut w = world("  rollback: true\n");
    let (ws, cfg) = w.host("ws-01");
    let report = fail_after_the_cache_was_cleaned(&mut w, &cfg);
    assert_eq!(report["verdict"]["rolled_back"], false, "{report}");
    let warnings = report["notices"]["warnings"].to_string();
    assert!(
        warnings.contains("the rollback after the failed health check failed"),
        "{warnings}"
    );
    // Still on the new packages (there is nothing to go back to), and failed on this change.
    assert_eq!(ws.versions(), ["app 2.0-1", "libbar 1.0-1", "libfoo 2.0-1"]);
    assert_eq!(ws.status_json()["failure"], "health");
}
