//! A pool's rollout end to end, through `fleetctl reconcile`: six hosts of one pool, the fleet
//! repository and the status repository both served by a real `git daemon` on loopback (the
//! status repository accepting anonymous pushes, the worst case: anyone may write there). A
//! generation bump goes canary → early → rest; a host of the early wave fails its health check
//! and rolls back; every later host halts; `fleetctl rollback` starts a new change and everyone
//! converges. Reports are signed by each host's key, named in its Host manifest; a forged one
//! is ignored and counted. A status repository that is down makes later waves wait, and fails
//! nobody's pass.

use std::fs;
use std::path::PathBuf;

use pacfleet_support::synth::SynthPackage;

use crate::harness::world::{AGENT_EXTRA, World};
use crate::harness::{GitDaemon, HostDir, TestCommand, fleetctl, keypair, run, tempdir};

/// The check: a host whose root has `/etc/unhealthy` is broken by app 2 (which ships
/// `/usr/share/app/v2`).
const CHECK: &str = "! { test -e \"$PACFLEET_ROOT/etc/unhealthy\" && test -e \"$PACFLEET_ROOT/usr/share/app/v2\"; }";

const HOSTS: [&str; 6] = ["ws-01", "ws-02", "ws-03", "ws-04", "ws-05", "ws-06"];

fn pool(generation: u32, budget: u32, early_soak: &str) -> String {
    format!(
        "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackages: [app]\ngeneration: {generation}\n\
         rollout:\n  waves:\n    - {{name: canary, hosts: [ws-01]}}\n    - {{name: early, hosts: [ws-02, ws-03], soak: {early_soak}}}\n    - {{name: rest, percent: 100}}\n  failure_budget: {budget}\n\
         health:\n  commands: [{}]\n  timeout: 30s\n  rollback: true\n",
        serde_json::to_string(CHECK).expect("json")
    )
}

fn generation(n: u32, version: &str) -> String {
    format!("kind: Generation\npool: ws\nnumber: {n}\npackages:\n  app: {{version: {version}}}\n")
}

struct Host {
    dir: HostDir,
    cfg: PathBuf,
}

/// The shared world (package repository, archive, fleet repository), the `git daemon` serving
/// the fleet and the status repository, and six hosts with keys of their own.
struct Rollout {
    w: World,
    daemon: GitDaemon,
    hosts: Vec<Host>,
}

fn world(budget: u32, early_soak: &str) -> Rollout {
    let tmp = tempdir();
    // Each host's key pair first: its public key goes into its Host manifest.
    let keys: Vec<(PathBuf, String)> = HOSTS
        .iter()
        .map(|name| {
            let (public, secret) = keypair(&tmp.path().join("host-keys"), name);
            let public = fs::read_to_string(&public)
                .expect("public key")
                .lines()
                .nth(1)
                .expect("key line")
                .to_owned();
            (secret, public)
        })
        .collect();
    let mut builder = World::builder()
        .tmp(tmp)
        .packages(&[SynthPackage::new("app", "2.0-1").file("usr/share/app/v2", "2")])
        .archive()
        .archived(&[SynthPackage::new("app", "1.0-1")])
        .pool(&pool(1, budget, early_soak))
        .file("generations/ws/1.yaml", &generation(1, "1.0-1"))
        .file("generations/ws/2.yaml", &generation(2, "2.0-1"));
    for (name, (_, public)) in HOSTS.iter().zip(&keys) {
        builder = builder.file(
            &format!("hosts/{name}.yaml"),
            &format!("kind: Host\nname: {name}\nkey: {public}\n"),
        );
    }
    let w = builder.build();
    let status = w.tmp.path().join("status.git");
    w.fleet()
        .git(&["init", "-q", "--bare", &status.display().to_string()]);
    let daemon = GitDaemon::start_writable(w.tmp.path());
    let url = |name: &str| format!("git://127.0.0.1:{}/{name}", daemon.port);
    let hosts = HOSTS
        .iter()
        .zip(&keys)
        .map(|(name, (secret, _))| {
            let dir = w.host_dir(name);
            let cfg = dir.agent_yaml(
                &url("fleet"),
                &w.fleet().public_key,
                &format!(
                    "{AGENT_EXTRA}host_key: {}\nstatus_repo: {}\nstatus_timeout: 10s\n",
                    secret.display(),
                    url("status.git")
                ),
            );
            Host { dir, cfg }
        })
        .collect::<Vec<_>>();
    // ws-02 breaks under app 2.
    fs::create_dir_all(hosts[1].dir.root.join("etc")).expect("etc");
    fs::write(hosts[1].dir.root.join("etc/unhealthy"), "").expect("mark");
    Rollout { w, daemon, hosts }
}

impl Rollout {
    fn reconcile(&self, i: usize) -> (i32, String, String) {
        TestCommand::reconcile(&self.hosts[i].cfg).run().parts()
    }

    fn app(&self, i: usize) -> String {
        self.hosts[i]
            .dir
            .installed()
            .get("app")
            .cloned()
            .unwrap_or_default()
    }

    fn status(&self, i: usize) -> serde_json::Value {
        let text = fs::read_to_string(self.hosts[i].dir.state_dir.join("status.json"))
            .expect("status.json");
        serde_json::from_str(&text).expect("status JSON")
    }

    /// `fleetctl fleet status` of the fleet's work tree, reading the status repository over
    /// the git daemon.
    fn fleet_status(&self, extra: &[&str]) -> (i32, String, String) {
        run(fleetctl()
            .args(["fleet", "status", "--status-repo"])
            .arg(format!("git://127.0.0.1:{}/status.git", self.daemon.port))
            .arg("--repo")
            .arg(&self.w.fleet().dir)
            .args(extra)
            // Its local copy of the status repository, kept between runs: here, not in ~/.cache.
            .env("XDG_CACHE_HOME", self.w.tmp.path().join("cache")))
    }

    /// The report under `refs/pacfleet/status/ws/<host>` of the status repository.
    fn published(&self, host: &str) -> serde_json::Value {
        let status = self.w.tmp.path().join("status.git");
        let out = std::process::Command::new("git")
            .arg("--git-dir")
            .arg(&status)
            .args([
                "show",
                &format!("refs/pacfleet/status/ws/{host}:report.json"),
            ])
            .output()
            .expect("git show");
        assert!(out.status.success(), "no report of {host}: {out:?}");
        serde_json::from_slice(&out.stdout).expect("report JSON")
    }
}

#[test]
fn a_generation_bump_rolls_through_waves_halts_on_a_failure_and_a_rollback_finishes_it() {
    let w = world(0, "0s");
    // Generation 1 goes out in wave order.
    for (i, host) in HOSTS.iter().enumerate() {
        let (code, out, err) = w.reconcile(i);
        assert_eq!(code, 0, "{host}: {out}\n{err}");
        assert_eq!(w.app(i), "1.0-1", "{host}: {out}\n{err}");
    }
    let change1 = w.published("ws-01")["rollout"].clone();
    assert_eq!(w.published("ws-06")["rollout"], change1);
    assert_eq!(w.published("ws-06")["outcome"], "applied");

    // Generation 2: the rest waits for the canary, then for the early wave.
    w.w.fleet()
        .commit("generation 2", &[("pools/ws.yaml", &pool(2, 0, "0s"))]);
    // `plan` says what a reconcile would wait for (exit 1: changes are due).
    let (code, out, err) = TestCommand::plan(&w.hosts[3].cfg).run().parts();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("pending (wave rest waits for wave canary to finish"),
        "{out}"
    );
    let (code, out, err) = w.reconcile(3);
    assert_eq!(code, 0, "a waiting host does not fail: {out}\n{err}");
    assert!(
        out.contains(
            "pending (wave rest waits for wave canary to finish: ws-01 has not reported success"
        ),
        "{out}"
    );
    assert_eq!(w.app(3), "1.0-1");
    assert_eq!(w.status(3)["rollout"]["waiting"], true);
    assert_eq!(w.published("ws-04")["outcome"], "pending");

    // A forged success of the canary, written by someone with write access to the status
    // repository and signed with a key of their own: ignored and counted.
    forge_report(&w, "ws-01");
    let (code, out, err) = w.reconcile(3);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("waits for wave canary"), "{out}");
    assert_eq!(w.app(3), "1.0-1");
    let rejected = &w.status(3)["report"]["rejected"];
    assert!(
        rejected.as_object().is_some_and(|r| !r.is_empty()),
        "the forged report is counted: {}",
        w.status(3)
    );

    // The canary applies and is healthy.
    let (code, out, err) = w.reconcile(0);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(w.app(0), "2.0-1");
    let change2 = w.published("ws-01")["rollout"].clone();
    assert_ne!(change2, change1, "a generation bump is a new change");

    // Early: ws-02 applies, fails its health check, rolls back to exactly what it had.
    let (code, out, err) = w.reconcile(1);
    assert_eq!(code, 2, "an unhealthy host's pass fails: {out}\n{err}");
    assert!(out.contains("the health check failed"), "{out}");
    assert_eq!(w.app(1), "1.0-1");
    assert_eq!(w.published("ws-02")["outcome"], "rolled-back");

    // Beyond the budget (0): the rollout halts for everyone after the canary.
    for (i, host) in HOSTS.iter().enumerate().skip(2) {
        let (code, out, err) = w.reconcile(i);
        assert_eq!(code, 0, "{host}: {out}\n{err}");
        assert!(
            out.contains("rollout halted: 1 host(s) failed this change (ws-02)"),
            "{out}"
        );
        assert_eq!(w.app(i), "1.0-1", "{host}");
        assert_eq!(w.status(i)["rollout"]["halted"], true);
    }
    // ws-02 does not retry the change.
    let (code, out, err) = w.reconcile(1);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("not retried"), "{out}");
    assert_eq!(w.app(1), "1.0-1");

    // The operator sees it: fleet status needs attention (exit 1), and says why.
    let (code, out, err) = w.fleet_status(&[]);
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("halted"), "{out}");
    assert!(
        out.contains("ws-02") && out.contains("rolled-back"),
        "{out}"
    );
    let (code, out, _) = w.fleet_status(&["--json"]);
    assert_eq!(code, 1);
    let status: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(status["pools"][0]["rollout"]["state"], "halted", "{status}");
    assert_eq!(
        status["pools"][0]["rollout"]["failed"][0], "ws-02",
        "{status}"
    );

    // The operator's way out: `fleetctl rollback`, a new change that everyone converges on.
    let key = w.w.fleet().secret_key.display().to_string();
    let (code, out, err) = run(fleetctl()
        .args(["rollback", "--pool", "ws", "--key", &key, "--repo"])
        .arg(&w.w.fleet().dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null"));
    assert_eq!(code, 0, "{out}\n{err}");
    for (i, host) in HOSTS.iter().enumerate() {
        let (code, out, err) = w.reconcile(i);
        assert_eq!(code, 0, "{host}: {out}\n{err}");
        assert_eq!(w.app(i), "1.0-1", "{host}");
    }
    let (code, out, err) = w.fleet_status(&[]);
    assert_eq!(code, 0, "everyone converged on the rollback: {out}\n{err}");
    assert!(out.contains("all healthy"), "{out}");
    let change3 = w.published("ws-06")["rollout"].clone();
    assert_ne!(change3, change2);
    for host in HOSTS {
        let report = w.published(host);
        assert_eq!(report["rollout"], change3, "{host}: {report}");
        assert!(
            report["outcome"] == "applied" || report["outcome"] == "converged",
            "{host}: {report}"
        );
    }
}

/// Pushes a report claiming success on the newest change for `host`, signed by a key that is
/// not the host's.
fn forge_report(w: &Rollout, host: &str) {
    let mut report = w.published(host);
    report["outcome"] = "applied".into();
    report["sequence"] = (report["sequence"].as_u64().unwrap_or(0) + 1_000_000).into();
    let forger = minisign::KeyPair::generate_unencrypted_keypair().expect("key");
    let json = serde_json::to_vec_pretty(&report).expect("json");
    let sig = minisign::sign(
        Some(&forger.pk),
        &forger.sk,
        std::io::Cursor::new(&json),
        None,
        None,
    )
    .expect("sign");
    let work = w.w.tmp.path().join("forger");
    fs::create_dir_all(&work).expect("forger dir");
    fs::write(work.join("report.json"), &json).expect("write");
    fs::write(work.join("report.json.minisig"), sig.to_string()).expect("write");
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(&work)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env("GIT_AUTHOR_NAME", "mallory")
            .env("GIT_AUTHOR_EMAIL", "m@example.com")
            .env("GIT_COMMITTER_NAME", "mallory")
            .env("GIT_COMMITTER_EMAIL", "m@example.com")
            .output()
            .expect("git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "report.json", "report.json.minisig"]);
    git(&["commit", "-q", "-m", "trust me"]);
    git(&[
        "push",
        "-q",
        "--force",
        &format!("git://127.0.0.1:{}/status.git", w.daemon.port),
        &format!("HEAD:refs/pacfleet/status/ws/{host}"),
    ]);
}

#[test]
fn a_status_repository_that_is_down_makes_later_waves_wait_and_fails_no_pass() {
    let w = world(0, "0s");
    // Every host but the canary points at a status repository nobody serves.
    let dead = crate::harness::git_fixtures::free_port();
    for h in &w.hosts[1..] {
        let text = fs::read_to_string(&h.cfg).expect("agent.yaml");
        let text = text.replace(
            &format!("git://127.0.0.1:{}/status.git", w.daemon.port),
            &format!("git://127.0.0.1:{dead}/status.git"),
        );
        fs::write(&h.cfg, text).expect("agent.yaml");
    }
    assert_eq!(w.reconcile(0).0, 0);
    let (code, out, err) = w.reconcile(1);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("pending (wave early waits for the status repository, which cannot be read"),
        "{out}"
    );
    assert_eq!(w.app(1), "", "nothing installed while it waits");
    let status = w.status(1);
    assert_eq!(status["outcome"], "pending", "{status}");
    assert_eq!(status["report"]["pushed"], false, "{status}");
    assert!(status["report"]["error"].is_string(), "{status}");
}

#[test]
fn a_wave_waits_for_its_soak_after_the_previous_one_is_done() {
    let w = world(0, "2h");
    // `resolve --host` shows each host's wave, as its passes will use it.
    let (code, out, err) = run(fleetctl()
        .args(["resolve", "--host", "ws-02"])
        .arg(&w.w.fleet().dir));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("wave      early (2 of 3; bucket "), "{out}");
    assert!(
        out.contains("health    1 command(s) after applying, rollback on failure"),
        "{out}"
    );
    let (code, out, _) = run(fleetctl()
        .args(["resolve", "--json", "--host", "ws-05"])
        .arg(&w.w.fleet().dir));
    assert_eq!(code, 0);
    let json: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(json["wave"]["name"], "rest", "{json}");
    assert_eq!(json["wave"]["index"], 2, "{json}");

    assert_eq!(w.reconcile(0).0, 0);
    let (code, out, err) = w.reconcile(1);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("waits for the soak of wave early: it may start at"),
        "{out}"
    );
    assert_eq!(w.app(1), "");
}

#[test]
fn a_host_whose_wave_waits_prefetches_the_change() {
    let w = world(0, "0s");
    w.w.fleet()
        .commit("generation 2", &[("pools/ws.yaml", &pool(2, 0, "0s"))]);
    // ws-04 (wave rest) with `prefetch: true`: the canary has not reported, so it waits, with
    // app 2's file and signature in its cache, checked, and nothing installed.
    let cfg = &w.hosts[3].cfg;
    let text = fs::read_to_string(cfg).expect("agent.yaml");
    fs::write(cfg, format!("{text}prefetch: true\n")).expect("agent.yaml");
    let (code, out, err) = w.reconcile(3);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("pending (wave rest waits for wave canary"),
        "{out}"
    );
    assert_eq!(w.app(3), "");
    let pkg = w.w.repo().package_file("app").expect("app 2").to_path_buf();
    let name = pkg.file_name().unwrap().to_str().unwrap().to_owned();
    let cache = &w.hosts[3].dir.cache_dir;
    assert!(fs::read(cache.join(&name)).unwrap() == fs::read(&pkg).unwrap());
    assert!(cache.join(format!("{name}.sig")).is_file());
    let status = w.status(3);
    assert_eq!(status["downloads"]["prefetch"], true, "{status}");
    assert_eq!(status["downloads"]["upstream_files"], 1, "{status}");
    assert_eq!(status["downloads"]["left"], 0, "{status}");
    // ws-05, the same wave without `prefetch`, downloads nothing while it waits.
    let (code, out, err) = w.reconcile(4);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(!w.hosts[4].dir.cache_dir.join(&name).exists());
    assert!(w.status(4)["downloads"].is_null(), "{}", w.status(4));
}
