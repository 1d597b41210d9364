//! `fleetctl agent` as a real process against host directories: new commits without a
//! restart, drift made by a real pacman, windows, pause, and a SIGTERM that waits for the
//! running pass.

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pacfleet_support::synth::SynthPackage;

use crate::harness::agent::Agent;
use crate::harness::world::POOL;
use crate::harness::{HostDir, World};

/// Polls `cond` every 100ms for up to `secs` seconds.
fn eventually(secs: u64, what: &str, agent: &Agent, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out waiting for {what}; agent log:\n{}", agent.log());
}

/// The shared world (a repository with `app`, `libfoo`, `tool` and `byhand`, a fleet whose
/// pool `ws`, with `pool_extra`, desires `app`) and host `ws-01`, whose agent.yaml runs every
/// `interval` and writes a textfile.
fn setup(pool_extra: &str, interval: &str) -> (World, HostDir, PathBuf) {
    let w = World::builder()
        .packages(&[
            SynthPackage::new("app", "1.0-1").depends("libfoo"),
            SynthPackage::new("libfoo", "1.0-1"),
            SynthPackage::new("tool", "1.0-1"),
            SynthPackage::new("byhand", "1.0-1"),
        ])
        .shared()
        .desired(&["app"])
        .pool(&format!("{POOL}{pool_extra}"))
        .build();
    let host = w.host_dir("ws-01");
    let textfile = host.base.join("pacfleet.prom");
    let cfg = w.config(
        &host,
        &format!(
            "interval: {interval}\nlock_timeout: 20s\ntextfile: {}\n",
            textfile.display()
        ),
    );
    (w, host, cfg)
}

fn status(host: &HostDir) -> serde_json::Value {
    fs::read(host.state_dir.join("status.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or(serde_json::Value::Null)
}

#[test]
fn applies_new_commits_and_corrects_drift_without_restart() {
    // A long interval: everything below must come from the watches, not the schedule.
    let (w, host, cfg) = setup("", "1h");
    let agent = Agent::start(&cfg, w.tmp.path().join("agent.log"));
    eventually(60, "the first pass to install app", &agent, || {
        host.installed().contains_key("app")
    });

    // A new commit arrives without a restart (the local repo watch or the next slot).
    w.fleet().commit(
        "base: add tool",
        &[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, tool]\n",
        )],
    );
    eventually(60, "tool to be installed", &agent, || {
        host.installed().contains_key("tool")
    });

    // Drift: someone removes a desired package by hand with the real pacman.
    eventually(60, "a converged status", &agent, || {
        status(&host)["outcome"] == "converged" || status(&host)["outcome"] == "applied"
    });
    host.pacman_ok(&["-R", "tool"]);
    eventually(60, "drift to be reported", &agent, || {
        agent
            .log()
            .contains("drift: this host changed outside pacfleet")
    });
    eventually(60, "drift in status.json", &agent, || {
        status(&host)["drift"]
            .as_array()
            .is_some_and(|d| !d.is_empty())
            || host.installed().contains_key("tool")
    });
    assert!(agent.log().contains("install tool"), "{}", agent.log());
    eventually(60, "drift to be corrected", &agent, || {
        host.installed().contains_key("tool")
    });
    assert_eq!(agent.stop(), 0);
}

#[test]
fn closed_window_and_pause_hold_changes_back() {
    // A window that opened long ago for one second: closed now, next opening next year.
    let (w, host, cfg) = setup("window: {cron: \"0 0 0 1 1 *\", duration: 1s}\n", "2s");
    let agent = Agent::start(&cfg, w.tmp.path().join("agent.log"));
    eventually(60, "a pending status", &agent, || {
        status(&host)["outcome"] == "pending"
    });
    let st = status(&host);
    assert!(
        st["message"].as_str().unwrap().contains("pending until"),
        "{st}"
    );
    assert!(
        st["next_window"]
            .as_str()
            .unwrap()
            .contains("-01-01T00:00:00"),
        "{st}"
    );
    assert!(
        !host.installed().contains_key("app"),
        "nothing applied outside the window"
    );

    w.fleet().commit(
        "ws: pause",
        &[(
            "pools/ws.yaml",
            "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\npaused: true\n",
        )],
    );
    eventually(60, "a paused status", &agent, || {
        status(&host)["message"]
            .as_str()
            .is_some_and(|m| m.contains("paused"))
    });
    assert!(!host.installed().contains_key("app"));
    assert_eq!(agent.stop(), 0);
}

#[test]
fn sigterm_waits_for_the_running_pass() {
    let (w, host, cfg) = setup("", "2s");
    // Hold pacman's lock so the first pass waits inside; SIGTERM arrives meanwhile.
    let lock = host.dbpath.join("db.lck");
    fs::write(&lock, "").unwrap();
    let agent = Agent::start(&cfg, w.tmp.path().join("agent.log"));
    eventually(60, "the pass to wait for the lock", &agent, || {
        agent.log().contains("pacman database is locked")
    });
    agent.signal("-TERM");
    std::thread::sleep(Duration::from_millis(500));
    fs::remove_file(&lock).unwrap();
    let code = agent.stop();
    assert_eq!(code, 0);
    assert!(
        host.installed().contains_key("app"),
        "the pass that was running when SIGTERM came must finish"
    );
}

/// Passes are child processes of the agent's own executable: when a pass upgrades pacfleet
/// itself and the file the agent started from is replaced (here: deleted), passes go on.
#[test]
fn passes_go_on_when_the_agents_executable_is_replaced() {
    let (w, host, cfg) = setup("", "1h");
    let bin = w.tmp.path().join("bin/fleetctl");
    fs::create_dir_all(bin.parent().unwrap()).unwrap();
    fs::copy(env!("CARGO_BIN_EXE_fleetctl"), &bin).unwrap();
    let mut cmd = std::process::Command::new(&bin);
    cmd.env("LC_ALL", "C")
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    let agent = Agent::start_with(cmd, &cfg, w.tmp.path().join("agent.log"));
    eventually(60, "the first pass to install app", &agent, || {
        host.installed().contains_key("app")
    });
    fs::remove_file(&bin).unwrap();
    w.fleet().commit(
        "base: add tool",
        &[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, tool]\n",
        )],
    );
    eventually(60, "tool to be installed", &agent, || {
        host.installed().contains_key("tool")
    });
    assert_eq!(agent.stop(), 0);
}
