//! example-fleet/ as a user copies it: it validates, and a fresh host of each pool bootstraps
//! from it (signed, served as a git repository, reconciled from nothing) without a pin error:
//! a shipped pool pinned to example versions and sha256 sums would fail on every real host,
//! and set-latest cannot capture from a host that never applied a state.

use std::fs;

use pacfleet_support::synth::SynthPackage;

use crate::harness::{FleetRepo, HostDir, PkgRepo, fleetctl, run, tempdir};
use crate::harness::{copy_dir, example_fleet};

#[test]
fn example_fleet_validates_as_shipped() {
    let (code, out, err) = run(fleetctl().arg("validate").arg(example_fleet()));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("is valid"), "{out}");
}

#[test]
fn a_copy_bootstraps_a_fresh_host_of_each_pool() {
    let tmp = tempdir();
    let fleet = pacfleet::manifest::Fleet::from_dir(&example_fleet()).expect("example-fleet");
    // One host per pool (build-01 with its Host manifest), and every package they ask for, in
    // the repository their `{name, repo}` entries name (core otherwise).
    let hosts = ["ws-07", "canary-01", "build-01"];
    let mut core = PkgRepo::new(tmp.path(), "core");
    let mut extra = PkgRepo::new(tmp.path(), "extra");
    let mut in_core = std::collections::BTreeSet::new();
    let mut in_extra = std::collections::BTreeSet::new();
    let mut pools = std::collections::BTreeSet::new();
    for host in hosts {
        let r = pacfleet::resolve::resolve(&fleet, host)
            .expect("resolve")
            .unwrap_or_else(|| panic!("{host} is in no pool"));
        assert_eq!(r.generation, None, "{host}: pool {} ships pinned", r.pool);
        pools.insert(r.pool);
        for (name, d) in r.explicit {
            match d.repo.as_deref() {
                Some("extra") => in_extra.insert(name),
                _ => in_core.insert(name),
            };
        }
    }
    assert_eq!(pools.len(), fleet.pools.len(), "one host of every pool");
    let synth = |names: &std::collections::BTreeSet<String>| -> Vec<SynthPackage> {
        names
            .iter()
            .map(|n| SynthPackage::new(n, "1.0-1"))
            .collect()
    };
    core.add(&synth(&in_core));
    extra.add(&synth(&in_extra));

    // The pools' health check asks systemd whether the machine came up clean. These hosts are
    // directories on a build machine that may run no systemd at all: a `systemctl` that
    // answers "running" stands in for the one each real host has (the check itself is
    // tests/it/health.rs's).
    let stubs = tmp.path().join("stub-bin");
    fs::create_dir_all(&stubs).unwrap();
    fs::write(
        stubs.join("systemctl"),
        format!(
            "#!/bin/sh\necho \"$PACFLEET_HOST $*\" >> {}\necho running\n",
            stubs.join("calls").display()
        ),
    )
    .unwrap();
    fs::set_permissions(
        stubs.join("systemctl"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        stubs.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let repo = FleetRepo::new(tmp.path());
    copy_dir(&example_fleet(), &repo.dir);
    repo.commit("acme fleet, copied from example-fleet", &[]);
    for host in hosts {
        let h = HostDir::new(tmp.path(), host, &[&core, &extra]);
        let cfg = h.agent_yaml(
            &repo.dir.display().to_string(),
            &repo.public_key,
            "lock_timeout: 1s\n",
        );
        let (code, out, err) = run(fleetctl()
            .args(["reconcile", "--ignore-window", "--config"])
            .arg(&cfg)
            .env("PATH", &path));
        assert_eq!(code, 0, "{host}:\n{out}\n{err}");
        assert!(!err.contains("error"), "{host}:\n{out}\n{err}");
        let installed = h.installed();
        for name in in_core.iter().chain(&in_extra) {
            let r = pacfleet::resolve::resolve(&fleet, host).unwrap().unwrap();
            if r.explicit.contains_key(name) {
                assert!(installed.contains_key(name), "{host}: {name} not installed");
            }
        }
        if host != "canary-01" {
            let calls = fs::read_to_string(stubs.join("calls")).unwrap_or_default();
            assert!(
                calls.contains(&format!("{host} is-system-running --wait")),
                "{host}'s pool checks health after applying: {calls}"
            );
        }
        // The README's next step: capture the bootstrapped builder as the pool's generation
        // (3: 1 and 2 are the examples), which pins the pool.
        if host == "build-01" {
            let (code, out, err) = run(fleetctl()
                .args(["set-latest", "--pool", "build-servers", "--config"])
                .arg(&cfg)
                .arg("--repo")
                .arg(&repo.dir)
                .arg("--key")
                .arg(&repo.secret_key)
                .env_remove("PACFLEET_KEY_PASSWORD"));
            assert_eq!(code, 0, "set-latest:\n{out}\n{err}");
            let pool = fs::read_to_string(repo.dir.join("pools/build-servers.yaml")).unwrap();
            assert!(pool.contains("\ngeneration: 3\n"), "{pool}");
            assert!(repo.dir.join("generations/build-servers/3.yaml").is_file());
            let (code, out, err) = run(fleetctl()
                .args(["reconcile", "--ignore-window", "--config"])
                .arg(&cfg)
                .env("PATH", &path));
            assert_eq!(code, 0, "pinned:\n{out}\n{err}");
            rollback_signs_with_the_remote_notes_or_offline(&repo);
        }
    }
}

/// The README's last step, with a remote that cannot be reached: `rollback --key` refuses
/// before it commits anything (the notes cannot be fetched), and with `--offline` reverts the
/// first capture (the pool floats again) and signs with a warning.
fn rollback_signs_with_the_remote_notes_or_offline(repo: &FleetRepo) {
    let gone = repo.dir.with_file_name("gone.git");
    repo.git(&["remote", "add", "origin", &gone.display().to_string()]);
    let head = repo.head();
    let rollback = |extra: &[&str]| {
        run(fleetctl()
            .args(["rollback", "--pool", "build-servers", "--repo"])
            .arg(&repo.dir)
            .arg("--key")
            .arg(&repo.secret_key)
            .args(extra)
            .env_remove("PACFLEET_KEY_PASSWORD"))
    };
    let (code, out, err) = rollback(&[]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("cannot fetch the signature notes") && err.contains("--offline"),
        "{err}"
    );
    assert_eq!(repo.head(), head, "nothing committed");
    let (code, out, err) = rollback(&["--offline"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(err.contains("warning: --offline"), "{err}");
    let pool = fs::read_to_string(repo.dir.join("pools/build-servers.yaml")).unwrap();
    assert!(!pool.contains("\ngeneration:"), "{pool}");
    assert_ne!(repo.head(), head);
    repo.git(&["notes", "--ref=pacfleet", "show", "HEAD"]);
}
