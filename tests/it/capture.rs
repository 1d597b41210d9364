//! `fleetctl set-latest` and `fleetctl rollback` round-tripping a real fleet: a package repo,
//! a file:// archive, hosts' package caches, a bare `origin` the hosts fetch from and an
//! operator's work tree that pushes to it. A canary is upgraded by hand with pacman, its state
//! is captured as the pool's next generation, the other host converges to exactly that, and a
//! rollback brings every host back to the previous versions.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use pacfleet::manifest::Generation;
use pacfleet_support::synth::{self, SynthPackage};

use crate::harness::world::AGENT_EXTRA;
use crate::harness::{FleetRepo, HostDir, TestCommand, World, fleetctl, run, stdout_ok, tempdir};

const POOL_SRV: &str = "# Servers. Pinned: the canary is upgraded by hand first, then captured.\nkind: Pool\nname: srv\nhosts: [\"srv-*\"]\npackage_sets: [base]\ngeneration: 1   # moved by set-latest and rollback\n# prune what pacfleet installed\nprune: true\n";

/// The shared world (a repository with generation 2's versions, an archive with app 1.0-1,
/// pools `srv`, pinned to generation 1, and `ws`) with a bare `origin` the hosts fetch from
/// and generation 1's other files, which only the hosts' caches hold.
struct Capture {
    world: World,
    origin: PathBuf,
    /// Gen-1 package files only the hosts' caches hold (libfoo 1.0-1, tool 1.0-1).
    cached: Vec<PathBuf>,
}

fn world() -> Capture {
    // Generation 1's versions: app from the archive, libfoo and tool from the hosts' caches.
    let world = World::builder()
        .packages(&[
            SynthPackage::new("app", "2.0-1")
                .depends("libfoo>=2.0")
                .depends("libnew"),
            SynthPackage::new("libfoo", "2.0-1"),
            SynthPackage::new("libnew", "1.0-1"),
            SynthPackage::new("tool", "1.1-1"),
        ])
        .archived(&[SynthPackage::new("app", "1.0-1").depends("libfoo")])
        .desired(&["app", "tool"])
        .pool("kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\n")
        .file("pools/srv.yaml", POOL_SRV)
        .file(
            "generations/srv/1.yaml",
            "kind: Generation\npool: srv\nnumber: 1\npackages:\n  app: {version: 1.0-1}\n  libfoo: {version: 1.0-1}\n  tool: {version: 1.0-1}\n",
        )
        .build();
    let tmp = world.tmp.path();
    let old = tmp.join("old");
    fs::create_dir_all(&old).unwrap();
    let cached = [
        SynthPackage::new("libfoo", "1.0-1"),
        SynthPackage::new("tool", "1.0-1"),
    ]
    .iter()
    .map(|p| synth::build_package(p, &old).unwrap())
    .collect();
    let origin = tmp.join("origin.git");
    git(tmp, &["init", "-q", "--bare", "-b", "main"], &origin);
    let fleet = world.fleet();
    fleet.git(&["remote", "add", "origin", &origin.display().to_string()]);
    fleet.git(&["push", "-q", "-u", "origin", "main", "refs/notes/pacfleet"]);
    Capture {
        world,
        origin,
        cached,
    }
}

/// git with an argument path appended (for `init` of a path), hermetic config.
fn git(dir: &Path, args: &[&str], path: &Path) -> String {
    let out = Command::new("git")
        .args(args)
        .arg(path)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    stdout_ok(&format!("git {}", args.join(" ")), &out)
}

impl Capture {
    /// A host fetching from `origin`, with generation 1's cached files in its cache.
    fn origin_host(&self, name: &str) -> (HostDir, PathBuf) {
        let host = self.world.host_dir(name);
        for f in &self.cached {
            fs::copy(f, host.cache_dir.join(f.file_name().unwrap())).unwrap();
        }
        let cfg = host.agent_yaml(
            &self.origin.display().to_string(),
            &self.world.fleet().public_key,
            AGENT_EXTRA,
        );
        (host, cfg)
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut cmd = fleetctl();
        cmd.args(args)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .env_remove("PACFLEET_KEY_PASSWORD");
        cmd
    }

    fn set_latest(&self, pool: &str, cfg: &Path, extra: &[&str]) -> (i32, String, String) {
        let mut cmd = self.cmd(&["set-latest", "--pool", pool]);
        cmd.arg("--config")
            .arg(cfg)
            .arg("--repo")
            .arg(&self.world.fleet().dir);
        run(cmd.args(extra))
    }

    fn rollback(&self, pool: &str, extra: &[&str]) -> (i32, String, String) {
        let mut cmd = self.cmd(&["rollback", "--pool", pool]);
        cmd.arg("--repo").arg(&self.world.fleet().dir);
        run(cmd.args(extra))
    }

    fn key(&self) -> String {
        self.world.fleet().secret_key.display().to_string()
    }

    fn read(&self, path: &str) -> String {
        fs::read_to_string(self.world.fleet().dir.join(path)).unwrap()
    }

    fn origin_ref(&self, r: &str) -> String {
        let out = Command::new("git")
            .arg("--git-dir")
            .arg(&self.origin)
            .args(["rev-parse", r])
            .output()
            .unwrap();
        stdout_ok("git rev-parse", &out).trim().to_owned()
    }
}

fn versions(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
        .collect()
}

fn sequence_of(fleet: &FleetRepo, rev: &str) -> u64 {
    let note = fleet.git(&["notes", "--ref=pacfleet", "show", rev]);
    note.lines()
        .find_map(|l| l.strip_prefix("sequence "))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no sequence in {note}"))
}

#[test]
fn set_latest_then_rollback_round_trip_a_fleet() {
    let w = world();
    let (canary, canary_cfg) = w.origin_host("srv-canary");
    let (other, _) = w.origin_host("srv-01");
    let gen1 = versions(&[("app", "1.0-1"), ("libfoo", "1.0-1"), ("tool", "1.0-1")]);
    for host in [&canary, &other] {
        w.world.reconcile(host).ok();
    }
    assert_eq!(canary.installed(), gen1);
    assert_eq!(other.installed(), gen1);

    // --- set-latest refusals, before anything is written.
    let head = w.world.fleet().head();
    let (code, _, err) = w.set_latest("ws", &canary_cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("host srv-canary is in pool `srv`, not `ws`"),
        "{err}"
    );
    let (_, never_cfg) = w.origin_host("srv-02");
    let (code, _, err) = w.set_latest("srv", &never_cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("host srv-02 has not applied any fleet state yet")
            && err.contains("fleetctl reconcile")
            && err.contains("unpin the pool (remove `generation:`"),
        "{err}"
    );
    w.world.fleet().write(&[("notes.txt", "draft\n")]);
    let (code, _, err) = w.set_latest("srv", &canary_cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("uncommitted changes (?? notes.txt)") && err.contains("git stash -u"),
        "{err}"
    );
    fs::remove_file(w.world.fleet().dir.join("notes.txt")).unwrap();
    // The branch moved the pool on since the canary's applied commit: its capture would be
    // based on an old state.
    w.world.fleet().commit_unsigned(
        "srv: generation 2 by hand",
        &[
            (
                "generations/srv/2.yaml",
                "kind: Generation\npool: srv\nnumber: 2\npackages:\n  app: {version: 1.0-1}\n  libfoo: {version: 1.0-1}\n  tool: {version: 1.1-1}\n",
            ),
            (
                "pools/srv.yaml",
                &POOL_SRV.replace("generation: 1 ", "generation: 2 "),
            ),
        ],
    );
    let (code, _, err) = w.set_latest("srv", &canary_cfg, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("host srv-canary has not applied the current state of pool `srv`")
            && err.contains("runs commit")
            && err.contains("(generation 1), but the branch now asks it for generation 2")
            && err.contains("srv: generation 2 by hand"),
        "{err}"
    );
    w.world.fleet().git(&["reset", "-q", "--hard", &head]);
    assert_eq!(w.world.fleet().head(), head);
    assert!(!w.world.fleet().dir.join("generations/srv/2.yaml").exists());

    // --- The canary is upgraded by hand and tested: app 2.0 pulls libfoo 2.0 and libnew;
    // a package someone built by hand comes from neither the repo nor the cache.
    canary.pacman_ok(&["-Sy", "app"]);
    let byhand = synth::build_package(
        &SynthPackage::new("byhand", "0.1-1"),
        &w.world.tmp.path().join("elsewhere"),
    )
    .unwrap();
    canary.pacman_ok(&["-U", &byhand.display().to_string()]);
    let captured = versions(&[
        ("app", "2.0-1"),
        ("byhand", "0.1-1"),
        ("libfoo", "2.0-1"),
        ("libnew", "1.0-1"),
        ("tool", "1.0-1"),
    ]);
    assert_eq!(canary.installed(), captured);

    let seq_before = sequence_of(w.world.fleet(), "HEAD");
    let (code, out, err) = w.set_latest("srv", &canary_cfg, &["--key", &w.key(), "--push"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("captured generation 2 of pool srv from srv-canary: 5 packages"),
        "{out}"
    );
    assert!(
        out.contains("pushed main and refs/notes/pacfleet to origin"),
        "{out}"
    );

    // The generation: every installed package at the canary's version, with provenance and
    // the sha256 of the package file where the sync db (or the cache) knows it.
    let text = w.read("generations/srv/2.yaml");
    let g: Generation = serde_yaml::from_str(&text).unwrap();
    assert_eq!(g.number, 2);
    assert_eq!(g.pool.as_str(), "srv");
    assert_eq!(g.captured_from.as_ref().unwrap().as_str(), "srv-canary");
    let at = chrono::DateTime::parse_from_rfc3339(g.captured_at.as_deref().unwrap()).unwrap();
    assert!((chrono::Utc::now() - at.to_utc()).num_minutes() < 10);
    let got: BTreeMap<String, String> = g
        .packages
        .iter()
        .map(|(n, p)| (n.to_string(), p.version.clone()))
        .collect();
    assert_eq!(got, captured);
    for name in ["app", "libfoo", "libnew"] {
        let file = w.world.repo().package_file(name).unwrap();
        assert_eq!(
            g.packages[name].sha256.as_deref(),
            Some(synth::sha256_file(file).unwrap().as_str()),
            "{name}: from the sync db\n{text}"
        );
    }
    let cached_tool = canary.cache_dir.join("tool-1.0-1-any.pkg.tar.zst");
    assert_eq!(
        g.packages["tool"].sha256.as_deref(),
        Some(synth::sha256_file(&cached_tool).unwrap().as_str()),
        "tool 1.0-1 is only in the cache\n{text}"
    );
    assert_eq!(g.packages["byhand"].sha256, None, "{text}");
    assert!(
        text.contains("# Against generation 1: 2 upgraded, 2 added.")
            && text.contains("  app: {version: 2.0-1, sha256: "),
        "{text}"
    );

    // The pool points at it, edited in place: comments and layout kept.
    assert_eq!(
        w.read("pools/srv.yaml"),
        POOL_SRV.replace("generation: 1 ", "generation: 2 ")
    );
    // The commit: summary against generation 1, signed with a new sequence, pushed.
    let message = w.world.fleet().git(&["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with("srv: generation 2 captured from srv-canary (2 upgraded, 2 added)\n\n"),
        "{message}"
    );
    assert!(
        message.contains("Against generation 1: 2 upgraded, 2 added.")
            && message.contains("upgraded:   app 1.0-1 → 2.0-1, libfoo 1.0-1 → 2.0-1")
            && message.contains("added:      byhand 0.1-1, libnew 1.0-1"),
        "{message}"
    );
    let captured_commit = w.world.fleet().head();
    assert_eq!(
        w.world
            .fleet()
            .git(&["show", "--name-only", "--format=", "HEAD"]),
        "generations/srv/2.yaml\npools/srv.yaml\n"
    );
    assert_eq!(sequence_of(w.world.fleet(), "HEAD"), seq_before + 1);
    assert_eq!(w.origin_ref("main"), captured_commit);
    assert_eq!(
        w.origin_ref("refs/notes/pacfleet"),
        w.world
            .fleet()
            .git(&["rev-parse", "refs/notes/pacfleet"])
            .trim()
    );
    assert_eq!(w.world.fleet().git(&["status", "--porcelain"]), "");

    // The other host converges to exactly the captured versions (byhand is not desired, so
    // its pin is unused); the canary has nothing to do.
    w.world.reconcile(&other).ok();
    let mut expected = captured.clone();
    expected.remove("byhand");
    assert_eq!(other.installed(), expected);
    let (code, out, err) = TestCommand::reconcile(&canary_cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(canary.installed(), captured);
    // Captured again with nothing new: refused, nothing written.
    let (code, _, err) = w.set_latest("srv", &canary_cfg, &["--key", &w.key()]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("host srv-canary runs exactly generation 2 of pool `srv`"),
        "{err}"
    );
    assert_eq!(w.world.fleet().head(), captured_commit);
    assert_eq!(w.world.fleet().git(&["status", "--porcelain"]), "");

    // --- rollback: the revert of the capture, signed with the next sequence and pushed.
    let (code, out, err) = w.rollback("srv", &["--key", &w.key(), "--push"]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        out.contains("pool srv: generation 2 → generation 1 in commit"),
        "{out}"
    );
    assert!(
        out.contains("downgraded") && out.contains("app") && out.contains("2.0-1 → 1.0-1"),
        "{out}"
    );
    let message = w.world.fleet().git(&["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with(
            "Revert \"srv: generation 2 captured from srv-canary (2 upgraded, 2 added)\"\n\nThis reverts commit "
        ) && message.contains(&captured_commit)
            && message.contains("srv: roll back from generation 2 to generation 1")
            && message.contains("Generation 2 → 1: 2 downgraded, 2 removed."),
        "{message}"
    );
    assert_eq!(w.read("pools/srv.yaml"), POOL_SRV);
    assert!(!w.world.fleet().dir.join("generations/srv/2.yaml").exists());
    assert_eq!(sequence_of(w.world.fleet(), "HEAD"), seq_before + 2);
    assert_eq!(w.origin_ref("main"), w.world.fleet().head());

    // Every host back on generation 1: app from the archive, libfoo and tool from the cache.
    // The other host's libnew (pacfleet installed it, prune is on) goes once nothing needs it;
    // the canary keeps what was installed by hand.
    w.world.reconcile(&other).ok();
    w.world.reconcile(&other).ok();
    assert_eq!(other.installed(), gen1);
    w.world.reconcile(&canary).ok();
    let canary_now = canary.installed();
    for (name, version) in &gen1 {
        assert_eq!(canary_now.get(name), Some(version), "{canary_now:?}");
    }
    assert_eq!(canary_now.get("byhand").map(String::as_str), Some("0.1-1"));

    // --- rollback refusals.
    // The last generation change was itself a rollback: reverting it would roll forward.
    let (code, _, err) = w.rollback("srv", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("already moved it back from generation 2 to 1")
            && err.contains("git revert")
            && err.contains("`--to N` (its generations: 1)"),
        "{err}"
    );
    let (code, _, err) = w.rollback("srv", &["--to", "9"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("generation 9 of pool `srv` does not exist") && err.contains("it has 1"),
        "{err}"
    );
    let (code, _, err) = w.rollback("srv", &["--to", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("already at generation 1"), "{err}");
    let (code, _, err) = w.rollback("ws", &[]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("pool `ws` has no generation change to roll back"),
        "{err}"
    );
    fs::write(
        w.world.fleet().dir.join("pools/srv.yaml"),
        "# edited\n".to_owned() + POOL_SRV,
    )
    .unwrap();
    let (code, _, err) = w.rollback("srv", &["--to", "1"]);
    assert_eq!(code, 2, "{err}");
    assert!(
        err.contains("uncommitted changes (M pools/srv.yaml)"),
        "{err}"
    );

    w.world
        .fleet()
        .git(&["checkout", "-q", "--", "pools/srv.yaml"]);

    // The next capture gets a fresh number: 2 was reverted (its file is gone) but hosts have
    // applied it, so it is never reused. Without --key/--push the commit waits for review.
    let (code, out, err) = w.set_latest("srv", &canary_cfg, &[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("captured generation 3 of pool srv"), "{out}");
    assert!(
        out.contains("not signed (no --key)") && out.contains("not pushed (no --push)"),
        "{out}"
    );
    assert!(w.world.fleet().dir.join("generations/srv/3.yaml").exists());
    assert!(!w.world.fleet().dir.join("generations/srv/2.yaml").exists());
    assert_ne!(w.origin_ref("main"), w.world.fleet().head());
}

#[test]
fn rollback_to_an_older_generation_edits_the_pool_in_place() {
    let tmp = tempdir();
    let fleet = FleetRepo::new(tmp.path());
    let generation = |n: u32, v: &str| {
        format!(
            "kind: Generation\npool: srv\nnumber: {n}\npackages:\n  app: {{version: {v}}}\n  libfoo: {{version: 1.0-1}}\n"
        )
    };
    let pool = |n: u32| {
        format!(
            "kind: Pool\nname: srv\n# which hosts\nhosts: [\"srv-*\"]\npackages: [app]\ngeneration: {n} # current\nwindow: {{cron: \"0 0 2 * * *\", duration: 1h}}\n"
        )
    };
    fleet.commit(
        "initial",
        &[
            ("fleet.yaml", "kind: Fleet\nname: acme\n"),
            ("generations/srv/1.yaml", &generation(1, "1.0-1")),
            ("generations/srv/2.yaml", &generation(2, "2.0-1")),
            ("generations/srv/3.yaml", &generation(3, "3.0-1")),
            ("pools/srv.yaml", &pool(3)),
        ],
    );
    let cmd = |extra: &[&str]| {
        let mut c = fleetctl();
        c.args(["rollback", "--pool", "srv", "--repo"])
            .arg(&fleet.dir)
            .args(extra)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null");
        run(&mut c)
    };
    // The pool was created at generation 3: there is no earlier generation change to revert.
    let (code, _, err) = cmd(&[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("no generation change to roll back"), "{err}");

    let seq = sequence_of(&fleet, "HEAD");
    let key = fleet.secret_key.display().to_string();
    let (code, out, err) = cmd(&["--to", "1", "--key", &key]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        fs::read_to_string(fleet.dir.join("pools/srv.yaml")).unwrap(),
        pool(1)
    );
    let message = fleet.git(&["log", "-1", "--format=%B"]);
    assert!(
        message.starts_with("srv: roll back to generation 1\n\n")
            && message.contains("Generation 3 → 1: 1 downgraded."),
        "{message}"
    );
    assert!(
        out.contains("downgraded") && out.contains("3.0-1 → 1.0-1"),
        "{out}"
    );
    assert!(out.contains("not pushed (no --push)"), "{out}");
    assert_eq!(sequence_of(&fleet, "HEAD"), seq + 1);

    // An unrelated later commit does not stand in the way of reverting that change, and
    // without --key the commit waits for review.
    fleet.commit(
        "unrelated",
        &[("hosts/srv-07.yaml", "kind: Host\nname: srv-07\n")],
    );
    fleet.commit("srv: to 2", &[("pools/srv.yaml", &pool(2))]);
    fleet.commit(
        "more",
        &[("hosts/srv-08.yaml", "kind: Host\nname: srv-08\n")],
    );
    let (code, out, err) = cmd(&[]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("not signed (no --key)"), "{out}");
    assert_eq!(
        fs::read_to_string(fleet.dir.join("pools/srv.yaml")).unwrap(),
        pool(1)
    );
    assert!(fleet.dir.join("hosts/srv-08.yaml").exists());
    let subject = fleet.git(&["log", "-1", "--format=%s"]);
    assert_eq!(subject.trim(), "Revert \"srv: to 2\"");
    assert!(
        !fleet
            .git(&["notes", "--ref=pacfleet", "list"])
            .contains(&fleet.head()),
        "unsigned"
    );

    // Signing a commit approves the unsigned ones under it: said on stderr.
    fleet.commit_unsigned(
        "draft: srv-09",
        &[("hosts/srv-09.yaml", "kind: Host\nname: srv-09\n")],
    );
    let (code, out, err) = cmd(&["--to", "2", "--key", &key]);
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("also approves 2 unsigned commit(s)")
            && err.contains("draft: srv-09")
            && err.contains("Revert \"srv: to 2\""),
        "{err}"
    );
    assert_eq!(
        fleet.git(&["log", "-1", "--format=%s"]).trim(),
        "srv: move forward to generation 2"
    );
}
