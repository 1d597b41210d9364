//! What a real Arch host meets, through `fleetctl` end to end in the harness's Arch world
//! (signed `.pkg.tar.zst` packages, a `pacman-key` keyring, `SigLevel = Required
//! DatabaseOptional`): renames (`replaces`), conflicts, providers, `IgnorePkg`, failing
//! scriptlets, file conflicts, signatures of files pacfleet fetches itself, a package file
//! swapped after its check, a keyring that must go first, corrupt cache files, keys never
//! imported, a mirror that published since the last refresh, and empty roots.
//!
//! Every test asserts the message the operator reads and the packages the host ends with.

use std::fs;
use std::path::Path;

use pacfleet_support::synth::SynthPackage;

use crate::harness::world::{POOL, package_set};
use crate::harness::{
    HostDir, Packager, TestCommand, World, archive_package, archive_package_unsigned, fleetctl,
    run, tempdir,
};

/// One fleet (pool `ws` for hosts `ws-*`, set `base`), one signed repository `core`, an
/// archive directory, and hosts made on demand: the repository holds `pkgs` and set `base`
/// desires `desired`.
fn world(pkgs: &[SynthPackage], desired: &[&str]) -> World {
    World::builder()
        .packages(pkgs)
        .desired(desired)
        .archive()
        .build()
}

/// Pins pool `ws` to generation 1 with `pins` (name, version).
fn pin(w: &World, pins: &[(&str, &str)]) {
    let mut generation = String::from("kind: Generation\npool: ws\nnumber: 1\npackages:\n");
    for (n, v) in pins {
        generation.push_str(&format!("  {n}: {{version: {v}}}\n"));
    }
    w.fleet().commit(
        "ws: pin generation 1",
        &[
            ("generations/ws/1.yaml", &generation),
            ("pools/ws.yaml", &format!("{POOL}generation: 1\n")),
        ],
    );
}

fn json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&fs::read(path).expect("read json")).expect("parse json")
}

fn inventory(host: &HostDir) -> Vec<String> {
    let v = json(&host.state_dir.join("inventory.json"));
    let list = v.get("packages").unwrap_or(&v);
    list.as_array()
        .expect("inventory list")
        .iter()
        .map(|x| x.as_str().expect("name").to_owned())
        .collect()
}

fn names(host: &HostDir) -> Vec<String> {
    host.installed().into_keys().collect()
}

/// A repository package that `replaces` (and conflicts with, and provides) another is taken by
/// a floating pass, as `pacman -Syu` takes it: the old package goes, the new one keeps its
/// install reason and its place in pacfleet's inventory, and the next pass is converged.
#[test]
fn a_renamed_package_is_taken_keeping_its_reason_and_inventory() {
    let mut w = world(&[SynthPackage::new("oldfoo", "1.0-1")], &["oldfoo"]);
    let (host, cfg) = w.host("ws-01");
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(names(&host), ["oldfoo"]);

    w.repo_mut().remove("oldfoo");
    w.repo_mut().add(&[SynthPackage::new("newfoo", "2.0-1")
        .replaces("oldfoo")
        .conflicts("oldfoo")
        .provides("oldfoo")]);
    let (code, out, err) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(
        out.contains("policy: `oldfoo` replaced by `newfoo`"),
        "{out}"
    );
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("replaces oldfoo"), "{out}");
    assert_eq!(names(&host), ["newfoo"]);
    assert!(host.explicit().contains("newfoo"), "the reason is kept");
    assert_eq!(inventory(&host), ["newfoo"]);
    let last = host.history().pop().expect("history");
    assert!(
        last["notices"]["answers"]
            .to_string()
            .contains("replaced by `newfoo`"),
        "{last}"
    );
    // No churn: the desired name is provided by what replaced it.
    let out = TestCommand::reconcile(&cfg)
        .args(["--full-plan"])
        .ok()
        .stdout;
    assert!(out.contains("converged"), "{out}");
}

/// A conflict is resolved by removal only for a package pacfleet installed and no longer
/// desires; a hand-installed one stays, and the error names both and the fix.
#[test]
fn conflicts_remove_only_what_pacfleet_installed_and_no_longer_desires() {
    let mut w = world(
        &[
            SynthPackage::new("byhand", "1.0-1"),
            SynthPackage::new("old", "1.0-1"),
        ],
        &["old"],
    );
    w.repo_mut()
        .add(&[SynthPackage::new("rival", "1.0-1").conflicts("byhand")]);
    let (host, cfg) = w.host("ws-01");
    host.pacman_ok(&["-Sy", "byhand"]);
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(names(&host), ["byhand", "old"]);

    // pacfleet's own `old`, no longer desired (and kept: prune is off), conflicts with the
    // new `new`: removed.
    w.repo_mut()
        .add(&[SynthPackage::new("new", "1.0-1").conflicts("old")]);
    w.fleet().commit(
        "new replaces old",
        &[
            ("packages/base.yaml", &package_set(&["new"])),
            (
                "pools/ws.yaml",
                &POOL.replace("prune: true", "prune: false"),
            ),
        ],
    );
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(
        out.contains("`old` removed: it conflicts with `new`, and pacfleet installed it"),
        "{out}"
    );
    assert_eq!(names(&host), ["byhand", "new"]);

    // A hand-installed package is never removed for a conflict.
    w.fleet().commit(
        "rival",
        &[("packages/base.yaml", &package_set(&["new", "rival"]))],
    );
    let before = host.local_db_snapshot();
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("`rival` conflicts with installed `byhand`, which was installed by hand"),
        "{err}"
    );
    assert!(err.contains("pacman -R byhand"), "{err}");
    assert_eq!(names(&host), ["byhand", "new"]);
    assert_eq!(host.local_db_snapshot(), before);
}

/// The provider a generation locks is the one a new host gets, and a host with another
/// provider is not converged.
#[test]
fn the_provider_the_generation_names_is_installed() {
    let w = world(
        &[
            SynthPackage::new("app", "1.0-1").depends("java-runtime"),
            SynthPackage::new("jre-a", "1.0-1").provides("java-runtime"),
            SynthPackage::new("jre-b", "1.0-1").provides("java-runtime"),
        ],
        &["app"],
    );
    pin(&w, &[("app", "1.0-1"), ("jre-b", "1.0-1")]);
    let (fresh, fresh_cfg) = w.host("ws-01");
    let (code, out, _) = TestCommand::plan(&fresh_cfg).run().parts();
    assert_eq!(code, 1);
    assert!(
        out.contains("`java-runtime` provided by `jre-b` (named by the pool's generation"),
        "{out}"
    );
    TestCommand::reconcile(&fresh_cfg).ok();
    assert_eq!(names(&fresh), ["app", "jre-b"]);

    // A host that got jre-a before: not converged; the lock's provider goes in, jre-a (which
    // pacfleet did not install) stays.
    let (old, old_cfg) = w.host("ws-02");
    old.pacman_ok(&["-Sy", "app", "jre-a"]);
    let (code, out, err) = TestCommand::plan(&old_cfg).run().parts();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("jre-b"), "{out}");
    TestCommand::reconcile(&old_cfg).ok();
    assert!(
        old.installed().contains_key("jre-b"),
        "{:?}",
        old.installed()
    );
}

/// IgnorePkg holds a pinned package at its version: reported as held everywhere, never
/// converged; when holding it makes the transaction impossible, the error names IgnorePkg.
#[test]
fn ignorepkg_holds_packages_on_pinned_pools_and_is_never_converged() {
    let mut w = world(
        &[
            SynthPackage::new("tool", "1.1-1"),
            SynthPackage::new("app", "1.0-1"),
        ],
        &["tool"],
    );
    let (host, cfg) = w.host("ws-01");
    TestCommand::reconcile(&cfg).ok();
    let conf = fs::read_to_string(&host.conf).expect("pacman.conf");
    fs::write(
        &host.conf,
        conf.replacen("[options]\n", "[options]\nIgnorePkg = tool\n", 1),
    )
    .expect("write pacman.conf");
    archive_package(&w.archive, &SynthPackage::new("tool", "1.0-1"));
    w.fleet().commit(
        "app",
        &[("packages/base.yaml", &package_set(&["tool", "app"]))],
    );
    pin(&w, &[("tool", "1.0-1"), ("app", "1.0-1")]);

    let (code, out, _) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("held: tool 1.1-1 -> 1.0-1 held by IgnorePkg"),
        "{out}"
    );
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(
        out.contains("held: tool 1.1-1 -> 1.0-1 held by IgnorePkg"),
        "{out}"
    );
    assert_eq!(host.installed()["tool"], "1.1-1", "held, not downgraded");
    assert_eq!(host.installed()["app"], "1.0-1");
    let entry = host.history().pop().expect("history");
    assert_eq!(entry["held"][0]["name"], "tool", "{entry}");

    // Nothing else to do: held, not converged, in status, status --json, waybar and metrics.
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(
        out.contains("not converged: 1 package(s) held back"),
        "{out}"
    );
    assert_eq!(host.status_json()["outcome"], "held");
    let (_, waybar, _) = run(fleetctl()
        .args(["status", "--waybar", "--config"])
        .arg(&cfg));
    assert!(waybar.contains("\"class\":\"held\""), "{waybar}");
    let (code, out, _) = TestCommand::reconcile(&cfg).arg("--json").run().parts();
    assert_eq!(code, 0);
    let report: serde_json::Value = serde_json::from_str(&out).expect("json");
    assert_eq!(report["verdict"]["outcome"], "held", "{report}");
    assert_eq!(
        report["changeset"]["held"][0]["by"], "IgnorePkg",
        "{report}"
    );

    // A package that needs a newer `tool` than the held one: the error says IgnorePkg.
    w.repo_mut().add(&[
        SynthPackage::new("tool", "1.2-1"),
        SynthPackage::new("needy", "1.0-1").depends("tool>=1.2"),
    ]);
    w.fleet().commit(
        "generation 2",
        &[
            ("packages/base.yaml", &package_set(&["tool", "app", "needy"])),
            (
                "generations/ws/2.yaml",
                "kind: Generation\npool: ws\nnumber: 2\npackages:\n  tool: {version: 1.2-1}\n  app: {version: 1.0-1}\n  needy: {version: 1.0-1}\n",
            ),
            ("pools/ws.yaml", &format!("{POOL}generation: 2\n")),
        ],
    );
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("IgnorePkg"), "{err}");
    assert!(!host.installed().contains_key("needy"));
    assert_eq!(host.installed()["tool"], "1.1-1");
}

/// A scriptlet that fails does not fail the transaction (pacman goes on too), but the pass is
/// "applied with warnings", naming the package, the scriptlet and what it printed.
#[test]
fn a_failed_scriptlet_makes_the_pass_applied_with_warnings() {
    let w = world(
        &[SynthPackage::new("svc", "1.0-1")
            .install_script("post_install() {\n  echo \"creating the svc user\"\n  exit 3\n}\n")],
        &["svc"],
    );
    let (host, cfg) = w.host("ws-01");
    let host = host.with_shell();
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(
        out.contains(
            "warning: scriptlet post_install of `svc` failed; it printed: creating the svc user"
        ),
        "{out}"
    );
    assert!(out.contains("applied with warnings"), "{out}");
    assert_eq!(names(&host), ["svc"]);
    let st = host.status_json();
    assert_eq!(st["outcome"], "applied-with-warnings", "{st}");
    assert!(
        st["warnings"][0]
            .as_str()
            .unwrap_or("")
            .contains("post_install of `svc`")
    );
    let entry = host.history().pop().expect("history");
    assert_eq!(entry["outcome"], "applied-with-warnings", "{entry}");
    let (_, waybar, _) = run(fleetctl()
        .args(["status", "--waybar", "--config"])
        .arg(&cfg));
    assert!(waybar.contains("\"class\":\"warnings\""), "{waybar}");
}

/// File conflicts name every file and both owners: two desired packages with the same file,
/// and a file on disk that no package owns. Nothing is changed.
#[test]
fn file_conflicts_name_every_file_and_both_owners() {
    let w = world(
        &[
            SynthPackage::new("one", "1.0-1").file("usr/share/x", "one\n"),
            SynthPackage::new("two", "1.0-1").file("usr/share/x", "two\n"),
            SynthPackage::new("three", "1.0-1").file("etc/three.conf", "three\n"),
        ],
        &["one", "two"],
    );
    let (host, cfg) = w.host("ws-01");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("/usr/share/x exists in both 'one' and 'two'")
            || err.contains("/usr/share/x exists in both 'two' and 'one'"),
        "{err}"
    );
    assert!(names(&host).is_empty());

    w.fleet()
        .commit("three", &[("packages/base.yaml", &package_set(&["three"]))]);
    fs::write(host.path("etc/three.conf"), "by hand\n").expect("write");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains(
            "/etc/three.conf exists on disk and belongs to no package ('three' installs it)"
        ),
        "{err}"
    );
    assert!(names(&host).is_empty());
    assert_eq!(
        fs::read_to_string(host.path("etc/three.conf")).expect("read"),
        "by hand\n"
    );
}

/// Files pacfleet fetches from the archive are checked as pacman checks a remote file:
/// `RemoteFileSigLevel`, absent here, inherits `SigLevel = Required`. An unsigned archive file
/// and one signed by an unknown key are refused (naming the key and the fix); a signed one
/// installs.
#[test]
fn archive_files_are_verified_at_the_remote_file_signature_level() {
    let w = world(&[SynthPackage::new("app", "1.1-1")], &["app"]);
    let (host, cfg) = w.host("ws-01");
    archive_package_unsigned(&w.archive, &SynthPackage::new("app", "1.0-1"));
    pin(&w, &[("app", "1.0-1")]);
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("package `app` 1.0-1 from"), "{err}");
    assert!(err.contains("RemoteFileSigLevel = Required"), "{err}");
    assert!(err.contains(".sig"), "{err}");
    assert!(names(&host).is_empty());

    // Signed by a key the host does not know.
    let rogue = Packager::new(w.tmp.path(), "rogue");
    let file = archive_package_unsigned(&w.archive, &SynthPackage::new("app", "1.0-1"));
    rogue.sign(&file);
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    let short = &rogue.fingerprint()[rogue.fingerprint().len() - 16..];
    assert!(
        err.contains(short) || err.contains(rogue.fingerprint()),
        "{err}"
    );
    assert!(err.contains("pacman-key --recv-keys"), "{err}");
    assert!(names(&host).is_empty());

    // Signed by the packager the host trusts.
    archive_package(&w.archive, &SynthPackage::new("app", "1.0-1"));
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(host.installed()["app"], "1.0-1");
}

/// The sha256 pin is checked on the very bytes that are installed: whoever can write the
/// archive (or a cache dir) and swaps the file after the check installs nothing of theirs.
/// A PreTransaction hook (run after every check, before extraction) swaps it here.
#[test]
fn a_package_file_swapped_after_its_check_installs_nothing_of_it() {
    let w = world(&[SynthPackage::new("app", "1.1-1")], &["app"]);
    let (host, cfg) = w.host("ws-01");
    let host = host.with_shell();
    // The archive lives inside the host's root, so the chrooted hook can reach it.
    let archive = host.path("srv/archive");
    let genuine = archive_package(
        &archive,
        &SynthPackage::new("app", "1.0-1").file("usr/share/app/WHO", "genuine\n"),
    );
    let rogue_dir = host.path("srv/rogue");
    let rogue = archive_package(
        &rogue_dir,
        &SynthPackage::new("app", "1.0-1").file("usr/share/app/WHO", "rogue\n"),
    );
    let sha = pacfleet_support::synth::sha256_file(&genuine).expect("sha");
    let inside = |p: &Path| Path::new("/").join(p.strip_prefix(&host.root).expect("in root"));
    fs::write(
        host.base.join("hooks/swap.hook"),
        format!(
            "[Trigger]\nOperation = Install\nType = Package\nTarget = app\n\n[Action]\nDescription = swapping the package file\nWhen = PreTransaction\nExec = /usr/bin/cp {} {}\n",
            inside(&rogue).display(),
            inside(&genuine).display()
        ),
    )
    .expect("write hook");
    w.fleet().commit(
        "archive in the root; pin with sha256",
        &[
            (
                "fleet.yaml",
                &format!("kind: Fleet\nname: acme\narchive: file://{}\n", archive.display()),
            ),
            (
                "generations/ws/1.yaml",
                &format!(
                    "kind: Generation\npool: ws\nnumber: 1\npackages:\n  app: {{version: 1.0-1, sha256: \"{sha}\"}}\n"
                ),
            ),
            ("pools/ws.yaml", &format!("{POOL}generation: 1\n")),
        ],
    );
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(
        pacfleet_support::synth::sha256_file(&genuine).expect("sha"),
        pacfleet_support::synth::sha256_file(&rogue).expect("sha"),
        "the hook swapped the archive's file"
    );
    assert_eq!(
        fs::read_to_string(host.path("usr/share/app/WHO")).expect("read"),
        "genuine\n"
    );
}

/// A package signed by a key only the new keyring knows: the keyring goes first in a
/// transaction of its own, then the rest verifies. Both are in history.
#[test]
fn the_keyring_goes_first_so_packages_signed_by_a_new_key_verify() {
    let tmp_key = tempdir();
    let new_packager = Packager::new(tmp_key.path(), "newpackager");
    let mut w = world(&[SynthPackage::new("tool", "1.0-1")], &["tool"]);
    let (host, cfg) = w.host("ws-01");
    // Keyring 1 owns this host's keyring files as they are; keyring 2 ships them with the new
    // packager's key added and signed locally (as `pacman-key --populate` would leave them).
    let keyring_files = |gpgdir: &Path| -> Vec<(String, Vec<u8>)> {
        ["pubring.gpg", "trustdb.gpg"]
            .iter()
            .map(|f| {
                (
                    format!("etc/pacman.d/gnupg/{f}"),
                    fs::read(gpgdir.join(f)).expect("keyring file"),
                )
            })
            .collect()
    };
    let with_files = |mut pkg: SynthPackage, files: Vec<(String, Vec<u8>)>| {
        for (p, data) in files {
            pkg = pkg.file(p, data);
        }
        pkg
    };
    let keyring1 = with_files(
        SynthPackage::new("archlinux-keyring", "1-1"),
        keyring_files(&host.gpgdir),
    );
    let scratch = HostDir::new(w.tmp.path(), "keyring-maker", &[]);
    scratch.trust_packager(&new_packager);
    let keyring2 = with_files(
        SynthPackage::new("archlinux-keyring", "2-1"),
        keyring_files(&scratch.gpgdir),
    );
    let repo = w.repo_mut();
    repo.add(&[keyring1]);
    host.pacman_ok(&[
        "-Sy",
        "--overwrite",
        "etc/pacman.d/gnupg/*",
        "archlinux-keyring",
    ]);
    TestCommand::reconcile(&cfg).ok();

    // The mirror publishes keyring 2 and a tool signed by the new packager.
    repo.add(&[keyring2]);
    repo.add_signed_by(&new_packager, &[SynthPackage::new("tool", "1.1-1")]);
    let (_, out, _) = TestCommand::plan(&cfg).run().parts();
    assert!(
        out.contains("keyring first: archlinux-keyring is applied in a transaction of its own"),
        "{out}"
    );
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("tool"), "{out}");
    assert_eq!(host.installed()["archlinux-keyring"], "2-1");
    assert_eq!(host.installed()["tool"], "1.1-1");
    let h = host.history();
    let last_two: Vec<String> = h[h.len() - 2..]
        .iter()
        .map(|e| {
            e["changes"]
                .as_array()
                .expect("changes")
                .iter()
                .map(|c| c["name"].as_str().unwrap_or("").to_owned())
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    assert_eq!(last_two, ["archlinux-keyring", "tool"], "{h:?}");
}

/// A corrupt package file in the cache is discarded and fetched again, once, in the same pass.
#[test]
fn a_corrupt_cache_file_is_discarded_and_fetched_again() {
    let w = world(&[SynthPackage::new("tool", "1.0-1")], &["tool"]);
    let (host, cfg) = w.host("ws-01");
    fs::write(
        host.cache_dir.join("tool-1.0-1-any.pkg.tar.zst"),
        b"not a package at all, but the right name",
    )
    .expect("write");
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert_eq!(host.installed()["tool"], "1.0-1", "{out}");
    let all = host.history();
    assert!(
        all.iter().any(|e| e["outcome"] == "failed"
            && e["error"]
                .as_str()
                .unwrap_or("")
                .contains("invalid or corrupt")),
        "{all:?}"
    );
    assert_eq!(all.last().expect("history")["outcome"], "applied");
}

/// A package signed by a key the host's keyring lacks: never imported, the error names the
/// key and the fix, nothing is installed.
#[test]
fn a_key_not_in_the_keyring_is_never_imported() {
    let mut w = world(&[SynthPackage::new("tool", "1.0-1")], &["tool"]);
    let tmp_key = tempdir();
    let rogue = Packager::new(tmp_key.path(), "rogue");
    w.repo_mut()
        .add_signed_by(&rogue, &[SynthPackage::new("app", "1.0-1")]);
    w.fleet().commit(
        "app",
        &[("packages/base.yaml", &package_set(&["tool", "app"]))],
    );
    let (host, cfg) = w.host("ws-01");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    let text = format!("{out}\n{err}");
    let short = &rogue.fingerprint()[rogue.fingerprint().len() - 16..];
    assert!(
        text.contains(short) || text.contains(rogue.fingerprint()),
        "{text}"
    );
    assert!(text.contains("pacman-key --recv-keys"), "{text}");
    assert!(!text.contains("unexpected error"), "{text}");
    assert!(names(&host).is_empty());
}

/// `plan` (and a held pass) sees what the mirror published since the last refresh, as the
/// next reconcile will.
#[test]
fn plan_sees_updates_published_since_the_last_refresh() {
    let mut w = world(&[SynthPackage::new("tool", "1.0-1")], &["tool"]);
    let (host, cfg) = w.host("ws-01");
    TestCommand::reconcile(&cfg).ok();
    w.repo_mut().add(&[SynthPackage::new("tool", "1.1-1")]);
    let (code, out, err) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("1.0-1 -> 1.1-1"), "{out}");
    // Still: a second plan, after the first refreshed only its private copy.
    let (code, out, _) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 1, "{out}");
    assert_eq!(host.installed()["tool"], "1.0-1");
    TestCommand::reconcile(&cfg).ok();
    assert_eq!(host.installed()["tool"], "1.1-1");
}

/// An empty root is refused with a message that names `--bootstrap` (also with no dbpath
/// directory at all), and provisioned with it: the keyring first, then the pool's set.
#[test]
fn an_empty_root_is_provisioned_only_with_bootstrap() {
    let w = world(
        &[
            SynthPackage::new("archlinux-keyring", "1-1"),
            SynthPackage::new("base", "1-1").depends("archlinux-keyring"),
        ],
        &["base"],
    );
    let (host, cfg) = w.host("ws-01");
    fs::remove_dir_all(&host.dbpath).expect("remove the db");
    for r in [
        TestCommand::reconcile(&cfg).run().parts(),
        TestCommand::plan(&cfg).run().parts(),
    ] {
        let (code, out, err) = r;
        assert_eq!(code, 2, "{out}\n{err}");
        assert!(err.contains("is not an installed system"), "{err}");
        assert!(err.contains("fleetctl reconcile --bootstrap"), "{err}");
        assert!(!err.contains("pacfleet.lock"), "{err}");
    }
    assert!(!host.dbpath.exists(), "nothing created without --bootstrap");
    assert_eq!(host.status_json()["outcome"], "failed");

    TestCommand::reconcile(&cfg).args(["--bootstrap"]).ok();
    assert_eq!(names(&host), ["archlinux-keyring", "base"]);
    let h = host.history();
    let firsts: Vec<&str> = h
        .iter()
        .filter(|e| e["outcome"] == "applied")
        .map(|e| e["changes"][0]["name"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(firsts, ["archlinux-keyring", "base"], "{h:?}");
    let out = TestCommand::reconcile(&cfg).ok().stdout;
    assert!(out.contains("converged"), "{out}");
}

/// A pinned version found nowhere says which set, pool or generation asked for it.
#[test]
fn a_pinned_version_found_nowhere_names_who_asked_for_it() {
    let w = world(&[SynthPackage::new("app", "1.1-1")], &["app"]);
    pin(&w, &[("app", "0.9-1")]);
    let (host, cfg) = w.host("ws-01");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("package `app` is pinned to version 0.9-1 (asked for by set base"),
        "{err}"
    );
    assert!(names(&host).is_empty());
}

/// `.pacnew` and `.pacsave` files go into history and status, not only the terminal.
#[test]
fn pacnew_and_pacsave_files_are_in_history_and_status() {
    let conf = |v: &str| {
        SynthPackage::new("cfg", v)
            .file("etc/cfg.conf", format!("version {v}\n"))
            .backup("etc/cfg.conf")
    };
    let mut w = world(&[conf("1.0-1")], &["cfg"]);
    let (host, cfg) = w.host("ws-01");
    TestCommand::reconcile(&cfg).ok();
    fs::write(host.path("etc/cfg.conf"), "edited by the admin\n").expect("edit");
    w.repo_mut().add(&[conf("1.1-1")]);
    TestCommand::reconcile(&cfg).ok();
    assert!(host.path("etc/cfg.conf.pacnew").is_file());
    let st = host.status_json();
    assert!(
        st["config_files"]
            .to_string()
            .contains("etc/cfg.conf.pacnew"),
        "{st}"
    );
    let entry = host.history().pop().expect("history");
    assert!(
        entry["notices"]["pacnew"]
            .to_string()
            .contains("etc/cfg.conf.pacnew"),
        "{entry}"
    );
    let (_, out, _) = run(fleetctl().args(["status", "--config"]).arg(&cfg));
    assert!(out.contains("cfg.conf.pacnew: merge it (pacdiff)"), "{out}");

    // Removed (no longer desired, prune on) with the admin's edit: kept as .pacsave.
    w.fleet()
        .commit("drop cfg", &[("packages/base.yaml", &package_set(&[]))]);
    TestCommand::reconcile(&cfg).ok();
    assert!(host.path("etc/cfg.conf.pacsave").is_file());
    let entry = host.history().pop().expect("history");
    assert!(
        entry["notices"]["pacsave"]
            .to_string()
            .contains("etc/cfg.conf.pacsave"),
        "{entry}"
    );
}

/// A directory host in one step: `--bootstrap` of a root that has nothing but its keyring
/// (no dbpath, no cache dir, no hook dir) provisions it in one pass; without the keyring it
/// refuses, naming GPGDir and the pacman-key commands, and creates nothing.
#[test]
fn bootstrap_makes_what_pacman_conf_names_and_needs_a_keyring() {
    let w = world(&[SynthPackage::new("tool", "1.0-1")], &["tool"]);
    let (host, cfg) = w.host("ws-01");
    fs::remove_dir_all(host.root.join("var")).expect("remove var");
    fs::remove_dir_all(host.base.join("hooks")).expect("remove hooks");
    let keyring = host.base.join("keyring-aside");
    fs::rename(&host.gpgdir, &keyring).expect("move the keyring aside");
    let (code, out, err) = TestCommand::reconcile(&cfg)
        .args(["--bootstrap"])
        .run()
        .parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("its keyring (GPGDir"), "{err}");
    assert!(err.contains("pacman-key --gpgdir"), "{err}");
    assert!(!host.root.join("var").exists(), "nothing created");
    fs::rename(&keyring, &host.gpgdir).expect("put the keyring back");
    TestCommand::reconcile(&cfg).args(["--bootstrap"]).ok();
    assert_eq!(names(&host), ["tool"]);
    assert!(host.cache_dir.is_dir() && host.base.join("hooks").is_dir());
}
