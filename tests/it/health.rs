//! A pool's `health:` through `fleetctl reconcile`: the commands run after applying, a failure
//! fails the pass (exit 2, status and history say so), `rollback: true` puts back the exact
//! package versions the host had, from its package cache, and the failed change is not
//! applied again until a new change arrives.

use pacfleet_support::synth::SynthPackage;

use crate::harness::{FleetRepo, HostDir, PkgRepo, TestCommand, tempdir};

const FLEET: &str = "kind: Fleet\nname: acme\n";

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

struct World {
    tmp: tempfile::TempDir,
    repo: PkgRepo,
    fleet: FleetRepo,
}

fn world(health: &str) -> World {
    let tmp = tempdir();
    let mut repo = PkgRepo::new(tmp.path(), "core");
    repo.add(&[
        SynthPackage::new("app", "1.0-1").depends("libfoo"),
        SynthPackage::new("libfoo", "1.0-1"),
    ]);
    let fleet = FleetRepo::new(tmp.path());
    fleet.commit(
        "initial fleet",
        &[("fleet.yaml", FLEET), ("pools/ws.yaml", &pool(health))],
    );
    World { tmp, repo, fleet }
}

impl World {
    fn host(&self, name: &str) -> (HostDir, std::path::PathBuf) {
        let host = HostDir::new(self.tmp.path(), name, &[&self.repo]);
        let cfg = host.agent_yaml(
            &self.fleet.dir.display().to_string(),
            &self.fleet.public_key,
            "lock_timeout: 1s\n",
        );
        (host, cfg)
    }

    /// The upstream repository moves on: app 2.0 (which breaks the health check) needs a new
    /// libfoo and a new libbar.
    fn publish_broken_app(&mut self) {
        self.repo.add(&[
            SynthPackage::new("app", "2.0-1")
                .depends("libfoo>=2")
                .depends("libbar")
                .file("usr/share/app/broken", "yes"),
            SynthPackage::new("libfoo", "2.0-1"),
            SynthPackage::new("libbar", "1.0-1"),
        ]);
    }
}

fn versions(host: &HostDir) -> Vec<String> {
    host.installed()
        .into_iter()
        .map(|(n, v)| format!("{n} {v}"))
        .collect()
}

#[test]
fn a_failed_health_check_rolls_back_to_the_exact_versions_and_is_not_retried() {
    let mut w = world("  rollback: true\n");
    let (ws, cfg) = w.host("ws-01");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "a healthy first install: {out}\n{err}");
    assert_eq!(versions(&ws), ["app 1.0-1", "libfoo 1.0-1"]);

    w.publish_broken_app();
    let (code, out, err) = TestCommand::reconcile(&cfg).arg("--json").run().parts();
    assert_eq!(code, 2, "an unhealthy apply fails the pass: {out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("report JSON");
    assert_eq!(report["verdict"]["outcome"], "unhealthy", "{out}");
    assert_eq!(report["verdict"]["rolled_back"], true, "{out}");
    let failure = report["health"]["failure"].as_str().expect("failure");
    assert!(failure.contains("exited with status 1"), "{failure}");
    // Back on exactly what it had: app and libfoo downgraded from the cache, libbar gone.
    assert_eq!(versions(&ws), ["app 1.0-1", "libfoo 1.0-1"]);
    let history = std::fs::read_to_string(ws.state_dir.join("history.jsonl")).expect("history");
    let outcomes: Vec<String> = history
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("history line"))
        .map(|e| e["outcome"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(outcomes, ["applied", "applied", "rolled-back"], "{history}");
    let status = std::fs::read_to_string(ws.state_dir.join("status.json")).expect("status");
    assert!(status.contains("\"failure\": \"health\""), "{status}");

    // The same change again: not retried, and said why.
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("not retried"), "{out}");
    assert_eq!(versions(&ws), ["app 1.0-1", "libfoo 1.0-1"]);

    // A new change of the pool (here: the check fixed) is applied.
    w.fleet.commit(
        "health: tolerate the new file",
        &[(
            "pools/ws.yaml",
            &pool_checking("true", "  rollback: true\n"),
        )],
    );
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        versions(&ws),
        ["app 2.0-1", "libbar 1.0-1", "libfoo 2.0-1"],
        "{out}\n{err}"
    );
}

#[test]
fn without_rollback_a_failed_check_leaves_the_new_packages_and_fails_the_pass() {
    let mut w = world("");
    let (ws, cfg) = w.host("ws-01");
    assert_eq!(TestCommand::reconcile(&cfg).run().parts().0, 0);
    w.publish_broken_app();
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(out.contains("the health check failed"), "{out}");
    assert_eq!(versions(&ws), ["app 2.0-1", "libbar 1.0-1", "libfoo 2.0-1"]);
}
