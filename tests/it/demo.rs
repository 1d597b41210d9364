//! `fleetctl demo`: the whole story runs, the kept sandbox holds what the story says (checked
//! with the real pacman), and nothing is left outside the sandbox.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pacfleet::config::AgentConfig;
use pacfleet::manifest::Fleet;

use crate::harness::{fleetctl, run, stdout_ok, tempdir, toolchain_bin};

const HOSTS: [&str; 3] = ["ws-01", "ws-02", "build-01"];
const LAB: [&str; 6] = ["lab-01", "lab-02", "lab-03", "lab-04", "lab-05", "lab-06"];

/// `fleetctl demo ARGS` with TMPDIR and HOME in test-owned (empty) directories.
fn demo(tmp: &Path, args: &[&str]) -> (i32, String, String) {
    let (tmpdir, home) = (tmp.join("tmpdir"), tmp.join("home"));
    fs::create_dir_all(&tmpdir).unwrap();
    fs::create_dir_all(&home).unwrap();
    run(fleetctl()
        .arg("demo")
        .args(args)
        .env("TMPDIR", &tmpdir)
        .env("HOME", &home))
}

fn entries(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect()
}

/// `pacman --config … --root … --dbpath … ARGS` on a demo host.
fn pacman(host: &Path, args: &[&str]) -> std::process::Output {
    let root = host.join("root");
    Command::new(toolchain_bin("pacman"))
        .arg("--config")
        .arg(host.join("pacman.conf"))
        .arg("--root")
        .arg(&root)
        .arg("--dbpath")
        .arg(root.join("var/lib/pacman"))
        .args(args)
        .env("LC_ALL", "C")
        .output()
        .unwrap()
}

fn installed(host: &Path) -> BTreeMap<String, String> {
    stdout_ok("pacman -Q", &pacman(host, &["-Q"]))
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect()
}

#[test]
fn demo_tells_the_story_and_keeps_a_consistent_sandbox() {
    let tmp = tempdir();
    let sandbox = tmp.path().join("sandbox");
    let started = std::time::Instant::now();
    let (code, out, err) = demo(tmp.path(), &["--keep", sandbox.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}\n{err}");
    eprintln!(
        "fleetctl demo took {:.1}s:\n{out}",
        started.elapsed().as_secs_f64()
    );

    // The story: every step, every host, the commits, the outcomes.
    for needle in [
        "1. First pass",
        "2. A package added to a set",
        "desktop: add gimp",
        "3. A downgrade",
        "git 2.48.1-1 → 2.47.1-1 (downgrade, from the archive)",
        "4. Rollback",
        "Revert \"build-servers: generation 3",
        "git 2.47.1-1 → 2.48.1-1",
        "outside maintenance windows",
        "fleetctl plan --config",
        "5. A pool in waves: lab, six desks",
        "6. A generation bump rolls through the waves; lab-02 fails its health check",
        "lab-02 (lab, generation 2): upgrade git 2.47.1-1 -> 2.48.1-1; the health check failed, rolled back: downgrade git 2.48.1-1 -> 2.47.1-1",
        "lab-06 (lab, generation 2): 1 upgrade held back: the rollout halted (lab-02 failed; failure_budget 0)",
        "7. `fleetctl rollback --pool lab`: a new change, and every desk converges",
        "Revert \"lab: generation 2, git 2.48.1-1\"",
        "$ fleetctl fleet status --pool lab   (exit 1)",
        "halted at wave 2 of 3 (early): host lab-02 failed, beyond the failure budget of 0",
        "$ fleetctl fleet status --pool lab   (exit 0)",
        "all healthy",
        "8. A peer cache: ws-03 joins and takes its packages from ws-01's cache",
        "hosts: ws-03, a new desk in workstations",
        "$ fleetctl status --config hosts/ws-03/agent.yaml   (peers: static: [http://127.0.0.1:",
    ] {
        assert!(out.contains(needle), "{needle:?} missing from:\n{out}");
    }
    for host in HOSTS {
        assert_eq!(
            out.lines()
                .filter(|l| l.split_whitespace().next() == Some(host) && l.contains("): "))
                .count(),
            4,
            "{host} should have one line per step:\n{out}"
        );
    }
    for host in LAB {
        assert_eq!(
            out.lines()
                .filter(|l| l.split_whitespace().next() == Some(host) && l.contains("): "))
                .count(),
            3,
            "{host} should have one line per step of the rollout chapter:\n{out}"
        );
    }
    // Step 6, wave by wave: the canary upgraded, the early desk rolled back, the rest halted.
    let step6 = &out[out.find("\n6. ").expect("step 6")..out.find("\n7. ").expect("step 7")];
    assert!(
        step6.contains("lab-01 (lab, generation 2): upgraded 1"),
        "{step6}"
    );
    assert_eq!(step6.matches("the rollout halted").count(), 4, "{step6}");
    // Step 8: every package file of the new desk came from ws-01's cache, none from upstream,
    // as its status says.
    let step8 = &out[out.find("\n8. ").expect("step 8")..];
    let took = step8
        .lines()
        .find_map(|l| l.trim().strip_prefix("ws-03 took "))
        .unwrap_or_else(|| panic!("no `ws-03 took` line:\n{step8}"));
    let files: u32 = took.split(' ').next().unwrap().parse().unwrap();
    assert!(files > 100, "{took}");
    assert!(
        took.ends_with("from ws-01's cache and 0 B from upstream"),
        "{took}"
    );
    let downloads = step8
        .lines()
        .find_map(|l| l.trim().strip_prefix("downloads  "))
        .unwrap_or_else(|| panic!("no status downloads line:\n{step8}"));
    assert!(
        downloads.starts_with(&format!("{files} files (")),
        "{downloads}"
    );
    assert!(
        downloads.ends_with(" from peers, 0 files from upstream"),
        "{downloads}"
    );
    assert!(out.lines().count() <= 120, "the story is too long:\n{out}");

    // Every host path is inside the sandbox.
    for host in HOSTS.iter().chain(&LAB).chain(&["ws-03"]) {
        let cfg = AgentConfig::load(sandbox.join("hosts").join(host).join("agent.yaml")).unwrap();
        for p in [
            &cfg.root,
            &cfg.dbpath,
            &cfg.pacman_conf,
            &cfg.state_dir,
            &cfg.host_key,
        ] {
            assert!(p.starts_with(&sandbox), "{host}: {}", p.display());
        }
        let status = cfg.status_repo.as_deref().unwrap_or_default();
        assert!(Path::new(status).starts_with(&sandbox), "{host}: {status}");
        assert!(Path::new(&cfg.repo).starts_with(&sandbox), "{}", cfg.repo);
        let conf = stdout_ok(
            "pacman-conf",
            &Command::new(toolchain_bin("pacman-conf"))
                .arg("--config")
                .arg(&cfg.pacman_conf)
                .output()
                .unwrap(),
        );
        for line in conf.lines() {
            let (key, value) = line.split_once(" = ").unwrap_or((line, ""));
            if [
                "RootDir", "DBPath", "CacheDir", "LogFile", "GPGDir", "Server",
            ]
            .contains(&key)
            {
                let path = value.strip_prefix("file://").unwrap_or(value);
                assert!(Path::new(path).starts_with(&sandbox), "{host}: {line}");
            }
        }
    }
    // Nothing in TMPDIR or HOME.
    assert_eq!(entries(&tmp.path().join("tmpdir")), Vec::<PathBuf>::new());
    assert_eq!(entries(&tmp.path().join("home")), Vec::<PathBuf>::new());

    // The hosts, through the real pacman.
    let hosts = sandbox.join("hosts");
    let ws1 = installed(&hosts.join("ws-01"));
    for name in ["htop", "gimp", "gegl", "firefox", "openssh"] {
        assert!(ws1.contains_key(name), "ws-01 lacks {name}: {ws1:?}");
    }
    assert!(!ws1.contains_key("nano"), "workstations exclude nano");
    assert_eq!(installed(&hosts.join("ws-02")), ws1);
    assert_eq!(installed(&hosts.join("ws-03")), ws1);
    let fleet = Fleet::from_dir(&sandbox.join("fleet")).unwrap();
    let pool = &fleet.pools["build-servers"].spec;
    assert_eq!(pool.generation, Some(2), "the revert restores generation 2");
    let lock = &fleet.generations[&(pool.name.clone(), 2)].spec.packages;
    let build = installed(&hosts.join("build-01"));
    assert!(build.len() > 100, "{build:?}");
    for (name, version) in &build {
        let pin = lock
            .get(name.as_str())
            .unwrap_or_else(|| panic!("build-01 has {name}, which generation 2 does not lock"));
        assert_eq!(version, &pin.version, "{name}");
    }
    assert_eq!(build["git"], "2.48.1-1");
    assert_eq!(build["linux-firmware"], "20241210.b00a7f7e-1");
    assert!(!build.contains_key("gimp"));
    for host in HOSTS {
        let out = pacman(&hosts.join(host), &["-Dk"]);
        assert!(out.status.success(), "{host}: pacman -Dk: {out:?}");
    }

    // The fleet repository: the eight commits of the story.
    let log = stdout_ok(
        "git log",
        &Command::new("git")
            .arg("-C")
            .arg(sandbox.join("fleet"))
            .args(["log", "--format=%s"])
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .unwrap(),
    );
    assert_eq!(log.lines().count(), 8, "{log}");

    // The lab desks, through the real pacman: all back on generation 1's git, and each one's
    // report in the status repository, signed, on the rollback's change.
    for host in LAB {
        assert_eq!(installed(&hosts.join(host))["git"], "2.47.1-1", "{host}");
        let report = stdout_ok(
            "git show",
            &Command::new("git")
                .arg("--git-dir")
                .arg(sandbox.join("status.git"))
                .args([
                    "show",
                    &format!("refs/pacfleet/status/lab/{host}:report.json"),
                ])
                .output()
                .unwrap(),
        );
        let report: serde_json::Value = serde_json::from_str(&report).unwrap();
        let head = stdout_ok(
            "git rev-parse",
            &Command::new("git")
                .arg("-C")
                .arg(sandbox.join("fleet"))
                // The rollback of step 7; step 8 only adds a Host manifest.
                .args(["rev-parse", "HEAD~1"])
                .output()
                .unwrap(),
        );
        assert_eq!(report["rollout"], head.trim(), "{host}: {report}");
        assert!(
            report["outcome"] == "converged" || report["outcome"] == "applied",
            "{host}: {report}"
        );
    }

    // What the story suggests next works: the host is converged.
    let (code, out, err) = run(fleetctl()
        .arg("plan")
        .arg("--config")
        .arg(hosts.join("ws-01/agent.yaml"))
        .env("TMPDIR", tmp.path().join("tmpdir")));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("converged"), "{out}");
}

#[test]
fn demo_without_keep_leaves_nothing_behind() {
    let tmp = tempdir();
    let (code, out, err) = demo(tmp.path(), &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("The sandbox was removed"), "{out}");
    assert_eq!(entries(&tmp.path().join("tmpdir")), Vec::<PathBuf>::new());
    assert_eq!(entries(&tmp.path().join("home")), Vec::<PathBuf>::new());
}

#[test]
fn demo_refuses_an_existing_directory() {
    let tmp = tempdir();
    let (code, out, err) = demo(tmp.path(), &["--keep", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("exists; choose a new directory"), "{err}");
    assert_eq!(entries(&tmp.path().join("tmpdir")), Vec::<PathBuf>::new());
}
