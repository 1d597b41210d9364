//! Bad input (issue 6): every class of bad input pacfleet takes — manifests, agent.yaml, command
//! line arguments, signature notes, package names with shell metacharacters, huge files, deep
//! include chains — with the exact error (a stable substring) each gives. TESTING.md has the
//! same table in prose; this file is that table made executable.
//!
//! Manifests go through `fleetctl validate` (what CI and operators run) and, for a sample,
//! through `fleetctl reconcile` on a host (what hosts run), which must change nothing.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use pacfleet::trust::{Note, Statement};
use pacfleet_support::synth::SynthPackage;

use crate::harness::{HostDir, TestCommand, World, fleetctl, run, tempdir};

/// A fleet work tree: `fleet.yaml`, `pools/ws.yaml` (host ws-01, set base) and
/// `packages/base.yaml` ([app]), with `files` written over or beside them.
struct Tree {
    tmp: tempfile::TempDir,
}

impl Tree {
    fn new(files: &[(&str, &[u8])]) -> Tree {
        let tree = Tree { tmp: tempdir() };
        tree.write(&[
            ("fleet.yaml", b"kind: Fleet\nname: acme\n"),
            (
                "pools/ws.yaml",
                b"kind: Pool\nname: ws\nhosts: [ws-01]\npackage_sets: [base]\n",
            ),
            (
                "packages/base.yaml",
                b"kind: PackageSet\nname: base\npackages: [app]\n",
            ),
        ]);
        tree.write(files);
        tree
    }

    fn dir(&self) -> &Path {
        self.tmp.path()
    }

    fn write(&self, files: &[(&str, &[u8])]) {
        for (path, bytes) in files {
            let p = self.dir().join(path);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, bytes).unwrap();
        }
    }

    /// `fleetctl validate` on the tree: (exit code, stdout, stderr, wall time).
    fn validate(&self) -> (i32, String, String, Duration) {
        let started = Instant::now();
        let (code, out, err) = run(fleetctl().arg("validate").arg(self.dir()));
        (code, out, err, started.elapsed())
    }

    /// `fleetctl resolve --host ws-01` on the tree.
    fn resolve(&self) -> (i32, String, String, Duration) {
        let started = Instant::now();
        let (code, out, err) = run(fleetctl()
            .args(["resolve", "--host", "ws-01"])
            .arg(self.dir()));
        (code, out, err, started.elapsed())
    }
}

/// `fleetctl validate` rejects the tree (exit 2) with every `expect` in stderr.
fn assert_invalid(label: &str, files: &[(&str, &[u8])], expect: &[&str]) {
    let tree = Tree::new(files);
    let (code, out, err, took) = tree.validate();
    assert_eq!(code, 2, "{label}: exit code\n{out}\n{err}");
    for e in expect {
        assert!(err.contains(e), "{label}: expected {e:?} in:\n{err}");
    }
    assert!(
        took < Duration::from_secs(20),
        "{label}: validate took {took:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Manifests

#[test]
fn manifest_errors_are_located_and_explained() {
    let long = format!(
        "kind: PackageSet\nname: base\npackages: [{}]\n",
        "a".repeat(256)
    );
    #[rustfmt::skip]
    let cases: &[(&str, &str, &[u8], &[&str])] = &[
        ("YAML syntax", "packages/base.yaml", b"kind: PackageSet\nname: base\npackages: [a, b\n",
            &["packages/base.yaml:4:1:", "did not find expected ',' or ']'"]),
        ("tab indentation", "packages/base.yaml", b"kind: PackageSet\nname: base\npackages:\n\t- a\n",
            &["packages/base.yaml:4:1:", "found character that cannot start any token"]),
        ("NUL byte", "packages/base.yaml", b"kind: PackageSet\nname: base\npackages: [a]\n\0\n",
            &["packages/base.yaml:", "control characters are not allowed"]),
        ("not UTF-8", "packages/base.yaml", b"kind: PackageSet\nname: base\npackages: [caf\xe9]\n",
            &["packages/base.yaml:0:0: the file is not valid UTF-8"]),
        ("empty file", "packages/base.yaml", b"",
            &["packages/base.yaml:0:0: the file is empty; a manifest here starts with `kind: PackageSet`"]),
        ("several documents", "packages/base.yaml", b"kind: PackageSet\nname: base\n---\nkind: PackageSet\nname: other\n",
            &["more than one document", "no `---` separators"]),
        ("unknown field", "packages/base.yaml", b"kind: PackageSet\nname: base\npakages: [app]\n",
            &["packages/base.yaml:3:1: unknown field `pakages`; did you mean `packages`?"]),
        ("field of another kind", "packages/base.yaml", b"kind: PackageSet\nname: base\nprune: true\n",
            &["unknown field `prune`; remove it (valid fields: kind, name, include, packages, exclude)"]),
        ("wrong type", "pools/ws.yaml", b"kind: Pool\nname: ws\nhosts: [ws-01]\nprune: maybe\n",
            &["pools/ws.yaml:4:8: prune: invalid type: string \"maybe\", expected a boolean"]),
        ("mapping for a list", "packages/base.yaml", b"kind: PackageSet\nname: base\npackages: {a: b}\n",
            &["packages/base.yaml:3:11: packages: invalid type: map, expected a sequence"]),
        ("YAML tag", "packages/base.yaml", b"kind: PackageSet\nname: base\npackages: !!binary aGVsbG8=\n",
            &["packages: invalid type: string \"aGVsbG8=\", expected a sequence"]),
        ("unknown anchor", "packages/base.yaml", b"kind: PackageSet\nname: base\npackages: [*a]\n",
            &["packages/base.yaml:3:12: unknown anchor"]),
        ("missing kind", "packages/base.yaml", b"name: base\n",
            &["missing field `kind`; add `kind: PackageSet` as the first line"]),
        ("unknown kind", "packages/base.yaml", b"kind: Widget\nname: base\n",
            &["packages/base.yaml:1:7: unknown kind `Widget`"]),
        ("kind in the wrong place", "packages/base.yaml", b"kind: Pool\nname: base\n",
            &["`kind: Pool` does not belong here", "move the file to pools/"]),
        ("uppercase name", "packages/base.yaml", b"kind: PackageSet\nname: base\npackages: [Firefox]\n",
            &["packages/base.yaml:3:12:", "invalid name `Firefox`: character 'F' is not allowed"]),
        ("name over 255 bytes", "packages/base.yaml", long.as_bytes(),
            &["packages/base.yaml:3:12:", "is longer than 255 characters"]),
        ("name that is not its file", "packages/other.yaml", b"kind: PackageSet\nname: base\n",
            &["package set `base` is in packages/other.yaml, but the file name must be the package set's name"]),
        ("unknown set", "pools/ws.yaml", b"kind: Pool\nname: ws\nhosts: [ws-01]\npackage_sets: [bsae]\n",
            &["pools/ws.yaml:4:16: unknown package set `bsae` (did you mean `base`?)"]),
        ("include cycle", "packages/base.yaml", b"kind: PackageSet\nname: base\ninclude: [base]\n",
            &["include cycle: base \u{2192} base"]),
        ("two pools claim a host", "pools/other.yaml", b"kind: Pool\nname: other\nhosts: [\"ws-*\"]\n",
            &["host `ws-01` is matched by 2 pools"]),
        ("bad host glob", "pools/ws.yaml", b"kind: Pool\nname: ws\nhosts: [\"ws-[\"]\n",
            &["host glob `ws-[` is invalid"]),
        ("bad window", "pools/ws.yaml", b"kind: Pool\nname: ws\nhosts: [ws-01]\nwindow: {cron: \"every sunday\", duration: 4h}\n",
            &["window cron `every sunday` does not parse"]),
        ("bad window duration", "pools/ws.yaml", b"kind: Pool\nname: ws\nhosts: [ws-01]\nwindow: {cron: \"0 0 2 * * Sat\", duration: forever}\n",
            &["window duration `forever` does not parse"]),
        ("missing generation", "pools/ws.yaml", b"kind: Pool\nname: ws\nhosts: [ws-01]\ngeneration: 3\n",
            &["generations/ws/3.yaml does not exist"]),
        ("generation number", "generations/ws/2.yaml", b"kind: Generation\npool: ws\nnumber: 3\npackages: {}\n",
            &["the number must equal the file name"]),
        ("generation version", "generations/ws/1.yaml", b"kind: Generation\npool: ws\nnumber: 1\npackages:\n  app: {version: \"1.0\"}\n",
            &["version `1.0` of `app` is not a full Arch version"]),
        ("generation sha256", "generations/ws/1.yaml", b"kind: Generation\npool: ws\nnumber: 1\npackages:\n  app: {version: 1.0-1, sha256: XYZ}\n",
            &["sha256 of `app` must be 64 lowercase hex digits"]),
        ("archive not a URL", "fleet.yaml", b"kind: Fleet\nname: acme\narchive: ftp://mirror\n",
            &["fleet.yaml:3:10: archive `ftp://mirror` is not a URL"]),
        ("fleet key not a key", "fleet.yaml", b"kind: Fleet\nname: acme\nkeys: [{name: k, key: RWnotakey}]\n",
            &["cannot use k as a minisign public key"]),
    ];
    for (label, path, text, expect) in cases {
        assert_invalid(label, &[(path, text)], expect);
    }
    // No fleet.yaml at all: `validate` says the directory is not a fleet.
    let tree = Tree::new(&[]);
    fs::remove_file(tree.dir().join("fleet.yaml")).unwrap();
    let (code, _, err, _) = tree.validate();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("fleet.yaml"), "{err}");
}

/// Package (and set, pool, repo) names are checked against `[a-z0-9@._+-]`, not starting with
/// `-` or `.`, before anything uses them: a name that would mean something to a shell never
/// gets past the loader, on `validate` and on a host.
#[test]
fn package_names_with_shell_metacharacters_are_rejected() {
    let tree_dir = tempdir();
    let canary = tree_dir.path().join("pwned");
    let c = canary.display().to_string();
    let evil: Vec<String> = vec![
        "foo;rm -rf /".into(),
        "$(id)".into(),
        "`id`".into(),
        "a|b".into(),
        "a&&b".into(),
        "a>b".into(),
        "../../etc/passwd".into(),
        "a b".into(),
        "a\\nb".into(),
        "*".into(),
        "a'b".into(),
        "ü".into(),
        format!("$(touch {c})"),
        format!("`touch {c}`"),
        format!(";touch {c}"),
    ];
    for name in &evil {
        let quoted = format!("\"{}\"", name.replace('"', "\\\""));
        let places: Vec<(String, String)> = vec![
            (
                "packages/base.yaml".into(),
                format!("kind: PackageSet\nname: base\npackages: [{quoted}]\n"),
            ),
            (
                "packages/base.yaml".into(),
                format!(
                    "kind: PackageSet\nname: base\npackages: [{{name: app, repo: {quoted}}}]\n"
                ),
            ),
            (
                "packages/base.yaml".into(),
                format!("kind: PackageSet\nname: base\nexclude: [{quoted}]\n"),
            ),
            (
                "packages/base.yaml".into(),
                format!("kind: PackageSet\nname: base\ninclude: [{quoted}]\n"),
            ),
            (
                "pools/ws.yaml".into(),
                format!("kind: Pool\nname: ws\nhosts: [ws-01]\npackages: [{quoted}]\n"),
            ),
            (
                "hosts/ws-01.yaml".into(),
                format!("kind: Host\nname: ws-01\npackages: [{quoted}]\n"),
            ),
            (
                "generations/ws/1.yaml".into(),
                format!(
                    "kind: Generation\npool: ws\nnumber: 1\npackages:\n  {quoted}: {{version: 1.0-1}}\n"
                ),
            ),
            (
                "fleet.yaml".into(),
                format!("kind: Fleet\nname: {quoted}\n"),
            ),
        ];
        for (path, text) in &places {
            let label = format!("{name:?} in {path}");
            assert_invalid(
                &label,
                &[(path, text.as_bytes())],
                &[&format!("{path}:"), "invalid name"],
            );
        }
    }
    for (name, why) in [
        ("-rf", "must not start with `-` or `.`"),
        (".hidden", "must not start with `-` or `.`"),
        ("", "must not be empty"),
    ] {
        let text = format!("kind: PackageSet\nname: base\npackages: [\"{name}\"]\n");
        assert_invalid(name, &[("packages/base.yaml", text.as_bytes())], &[why]);
    }
    // A host name given on the command line is only ever matched against globs.
    let tree = Tree::new(&[]);
    let (code, out, _) = run(fleetctl()
        .args(["resolve", "--host", &format!("$(touch {c})")])
        .arg(tree.dir()));
    assert_eq!(code, 0);
    assert!(out.contains("is not in the fleet"), "{out}");
    assert!(!canary.exists(), "a name reached a shell");

    // On a host: the commit is refused by the loader, nothing changes, no shell runs.
    let (w, host, cfg) = converged_host(&[SynthPackage::new("app", "1.0-1")]);
    let before = host.local_db_snapshot();
    w.fleet().commit("evil", &[("packages/base.yaml", &format!("kind: PackageSet\nname: base\npackages: [app, \"$(touch {c})\", \"foo;rm -rf /\"]\n"))]);
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("is invalid; nothing was changed") && err.contains("invalid name"),
        "{err}"
    );
    assert_eq!(host.local_db_snapshot(), before);
    assert!(!canary.exists(), "a name reached a shell");
}

/// `Name::new` shortens an over-long name for its message by slicing at byte 32, which panics
/// when byte 32 falls inside a multi-byte character (exit 101 instead of a diagnostic).
#[test]
fn over_long_multibyte_name_is_an_error_not_a_panic() {
    let text = format!(
        "kind: PackageSet\nname: base\npackages: [\"{}\"]\n",
        "€".repeat(100)
    );
    assert_invalid(
        "300 bytes of €",
        &[("packages/base.yaml", text.as_bytes())],
        &["is longer than 255 characters"],
    );
}

// ---------------------------------------------------------------------------------------------
// Huge files and deep structures

/// A 10 MiB manifest and a package list of 100 000 entries load in seconds (the times are
/// printed; the bounds are generous for debug builds on two cores).
#[test]
fn huge_manifests_do_not_hang() {
    // 10 MiB: a valid set whose bulk is one comment line.
    let mut big = b"kind: PackageSet\nname: base\npackages: [app]\n# ".to_vec();
    big.resize(10 << 20, b'x');
    big.push(b'\n');
    let tree = Tree::new(&[("packages/base.yaml", &big)]);
    let (code, out, err, took) = tree.validate();
    eprintln!("badinput: validate of a 10 MiB manifest: {took:?}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");

    // 100 000 packages in one set.
    let names: Vec<String> = (0..100_000).map(|i| format!("pkg{i}")).collect();
    let list = format!(
        "kind: PackageSet\nname: base\npackages: [{}]\n",
        names.join(", ")
    );
    let tree = Tree::new(&[("packages/base.yaml", list.as_bytes())]);
    let (code, out, err, took) = tree.validate();
    eprintln!(
        "badinput: validate of a 100k-entry package list ({} bytes): {took:?}",
        list.len()
    );
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(took < Duration::from_secs(60), "{took:?}");
    let (code, out, err, took) = tree.resolve();
    eprintln!("badinput: resolve of a 100k-entry package list: {took:?}");
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pkg99999"), "{}", &out[..out.len().min(500)]);
    assert!(took < Duration::from_secs(60), "{took:?}");

    // The same list, one name wrong in the middle: found and located.
    let mut bad = names.clone();
    bad[54_321] = "Pkg54321".into();
    let list = format!(
        "kind: PackageSet\nname: base\npackages: [{}]\n",
        bad.join(", ")
    );
    assert_invalid(
        "100k list with one bad name",
        &[("packages/base.yaml", list.as_bytes())],
        &["invalid name `Pkg54321`"],
    );
}

fn chain(n: usize, cycle: bool) -> Vec<(String, Vec<u8>)> {
    (0..n)
        .map(|i| {
            let next = if i + 1 < n {
                format!("include: [s{}]\n", i + 1)
            } else if cycle {
                "include: [s0]\n".to_owned()
            } else {
                String::new()
            };
            (
                format!("packages/s{i}.yaml"),
                format!("kind: PackageSet\nname: s{i}\n{next}packages: [p{i}]\n").into_bytes(),
            )
        })
        .collect()
}

fn chain_tree(n: usize, cycle: bool) -> Tree {
    let files = chain(n, cycle);
    let refs: Vec<(&str, &[u8])> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_slice()))
        .collect();
    let tree = Tree::new(&refs);
    fs::remove_file(tree.dir().join("packages/base.yaml")).unwrap();
    tree.write(&[(
        "pools/ws.yaml",
        b"kind: Pool\nname: ws\nhosts: [ws-01]\npackage_sets: [s0]\n",
    )]);
    tree
}

/// 1000 package sets each including the next: valid, and resolved to all 1000 packages; the
/// same chain closed into a cycle is reported once, naming every set on it.
#[test]
fn deep_include_chains_and_long_cycles() {
    let tree = chain_tree(1000, false);
    let (code, out, err, took) = tree.validate();
    eprintln!("badinput: validate of a 1000-set include chain: {took:?}");
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(out.contains("1000 package sets"), "{out}");
    let (code, out, err, _) = tree.resolve();
    assert_eq!(code, 0, "{err}");
    assert!(
        out.contains("p0") && out.contains("p999") && out.contains("(set s999)"),
        "{}",
        &out[..out.len().min(400)]
    );

    let tree = chain_tree(1000, true);
    let (code, _, err, _) = tree.validate();
    assert_eq!(code, 2, "{err}");
    assert_eq!(
        err.matches("include cycle:").count(),
        1,
        "{}",
        &err[..err.len().min(400)]
    );
    assert!(
        err.contains("s0 \u{2192} s1 \u{2192} s2") && err.contains("s999 \u{2192} s0;"),
        "{}",
        &err[..err.len().min(400)]
    );
}

/// Include-cycle detection (`manifest::check::include_cycles`) recurses once per set on the
/// chain. `fleetctl agent` runs passes on tokio's blocking threads (2 MiB stacks): a chain of
/// 12 000 sets overflows that stack and aborts the process (SIGABRT), where it must be a
/// clear result. Run here as `validate` with the main thread's stack limited to 2 MiB.
#[test]
fn long_include_chain_does_not_overflow_a_2_mib_stack() {
    let tree = chain_tree(12_000, false);
    let out = Command::new("sh")
        .arg("-c")
        .arg("ulimit -s 2048 && exec \"$0\" validate \"$1\"")
        .arg(env!("CARGO_BIN_EXE_fleetctl"))
        .arg(tree.dir())
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}\n{stderr}", out.status);
}

/// Deeply nested YAML is an error, never a crash: serde_yaml's recursion limit stops it.
#[test]
fn deeply_nested_yaml_is_an_error() {
    let depth = 1000;
    let text = format!(
        "kind: PackageSet\nname: base\npackages: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert_invalid(
        "1000 nested lists",
        &[("packages/base.yaml", text.as_bytes())],
        &["packages/base.yaml:3:"],
    );
    let text = format!(
        "kind: PackageSet\nname: base\npackages: {}\n",
        "[".repeat(depth)
    );
    assert_invalid(
        "1000 unclosed lists",
        &[("packages/base.yaml", text.as_bytes())],
        &["packages/base.yaml:"],
    );
    // Nested aliases (a "billion laughs"): rejected without expanding them.
    let mut laughs = String::from(
        "kind: PackageSet\nname: base\nx: {a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]",
    );
    for i in 1..9 {
        laughs.push_str(&format!(
            ", a{i}: &a{i} [{}]",
            vec![format!("*a{}", i - 1); 9].join(", ")
        ));
    }
    laughs.push_str("}\npackages: *a8\n");
    assert_invalid(
        "billion laughs",
        &[("packages/base.yaml", laughs.as_bytes())],
        &["packages/base.yaml:"],
    );
}

/// The YAML parser is quadratic in flow nesting depth: 20 000 nested `[` (a 40 KB file) take
/// ~11 s, 100 000 (200 KB) ~4.5 min of a pass. Manifests are flat: a nesting bound checked
/// before parsing makes this a quick error.
#[test]
fn deeply_nested_yaml_is_rejected_quickly() {
    let depth = 50_000;
    let text = format!(
        "kind: PackageSet\nname: base\npackages: {}{}\n",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let tree = Tree::new(&[("packages/base.yaml", text.as_bytes())]);
    let (code, _, err, took) = tree.validate();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("nested"), "{err}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

// ---------------------------------------------------------------------------------------------
// agent.yaml

#[test]
fn agent_config_errors_name_the_file_and_field() {
    let tmp = tempdir();
    let cfg = tmp.path().join("agent.yaml");
    #[rustfmt::skip]
    let cases: &[(&[u8], &[&str])] = &[
        (b"repoo: /srv/fleet\n", &["agent.yaml:1:1: unknown field `repoo` in agent config, did you mean `repo`?"]),
        (b"branch: main\n", &["`repo` is required"]),
        (b"", &["`repo` is required"]),
        (b"- a\n- b\n", &["agent.yaml", "agent.yaml is a YAML mapping"]),
        (b"repo: [/srv/fleet]\n", &["agent.yaml:1:7: repo: invalid type: sequence, expected a string"]),
        (b"repo: /srv/fleet\nrepo: /srv/other\n", &["agent.yaml:2:7: `repo` is given twice"]),
        (b"repo: /srv/fleet\nthreshold: two\n", &["agent.yaml:2:12: threshold: invalid type: string \"two\""]),
        (b"repo: /srv/fleet\nthreshold: 0\n", &["agent.yaml:2:12: `threshold`: must be at least 1"]),
        (b"repo: /srv/fleet\nthreshold: 3\ntrusted_keys: [a.pub]\n", &["`threshold`: 3 distinct signers required but only 1 trusted key(s) listed"]),
        (b"repo: /srv/fleet\ninterval: 5 parsecs\n", &["agent.yaml:2:11: `interval`: invalid duration \"5 parsecs\""]),
        (b"repo: /srv/fleet\nlock_timeout: -1s\n", &["agent.yaml:2:15: `lock_timeout`: invalid duration \"-1s\""]),
        (b"repo: /srv/fleet\nhostname: \"ws 01\"\n", &["agent.yaml:2:11: `hostname`: \"ws 01\" contains whitespace or '/'"]),
        (b"repo: /srv/fleet\nhostname: \"../x\"\n", &["contains whitespace or '/'"]),
        (b"repo: \xff\n", &["cannot read agent config", "stream did not contain valid UTF-8"]),
        (b"repo: /srv/fleet\n\0\n", &["agent.yaml"]),
    ];
    for (text, expect) in cases {
        fs::write(&cfg, text).unwrap();
        let (code, out, err) = TestCommand::plan(&cfg).run().parts();
        let shown = String::from_utf8_lossy(text);
        assert_eq!(code, 2, "{shown:?}: {out}\n{err}");
        for e in *expect {
            assert!(err.contains(e), "{shown:?}: expected {e:?} in:\n{err}");
        }
    }
    let (code, _, err) = run(fleetctl()
        .arg("plan")
        .arg("--config")
        .arg(tmp.path().join("missing.yaml")));
    assert_eq!(code, 2);
    assert!(
        err.contains("cannot read agent config") && err.contains("missing.yaml"),
        "{err}"
    );
    // A huge config (10 MiB of comment) is read, not choked on.
    let mut huge = b"repoo: x\n# ".to_vec();
    huge.resize(10 << 20, b'x');
    fs::write(&cfg, &huge).unwrap();
    let started = Instant::now();
    let (code, _, err) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 2);
    assert!(
        err.contains("unknown field `repoo`"),
        "{}",
        &err[..err.len().min(300)]
    );
    assert!(started.elapsed() < Duration::from_secs(30));
}

/// Keys and settings that are only checked once the fleet is fetched.
#[test]
fn trusted_key_errors_are_clear_and_nothing_is_applied() {
    let w = fleet_of_one(&[SynthPackage::new("app", "1.0-1")]);
    let (tmp, fleet) = (&w.tmp, w.fleet());
    let host = w.host_dir("ws-01");
    let garbage = tmp.path().join("garbage.pub");
    fs::write(&garbage, "untrusted comment: x\nnot a key at all\n").unwrap();
    let secret = fleet.secret_key.clone();
    let missing = tmp.path().join("missing.pub");
    let before = host.local_db_snapshot();
    let cases: Vec<(PathBuf, Vec<String>)> = vec![
        (
            garbage.clone(),
            vec![
                garbage.display().to_string(),
                "is not a minisign Ed25519 public key".into(),
            ],
        ),
        (
            missing.clone(),
            vec![missing.display().to_string(), "No such file".into()],
        ),
        (
            secret.clone(),
            vec![secret.display().to_string(), "minisign public key".into()],
        ),
    ];
    for (key, expect) in cases {
        let cfg = host.agent_yaml(&fleet.dir.display().to_string(), &key, "");
        let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
        assert_eq!(code, 2, "{out}\n{err}");
        for e in expect {
            assert!(err.contains(&e), "expected {e:?} in:\n{err}");
        }
        assert_eq!(host.local_db_snapshot(), before);
    }
    let cfg = host.agent_yaml(&fleet.dir.display().to_string(), &fleet.public_key, "");
    let text = fs::read_to_string(&cfg).unwrap();
    let without: String = text
        .lines()
        .filter(|l| !l.starts_with("trusted_keys"))
        .map(|l| format!("{l}\n"))
        .collect();
    fs::write(&cfg, without).unwrap();
    let (code, _, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("lists no `trusted_keys`"), "{err}");
    assert_eq!(host.local_db_snapshot(), before);
}

// ---------------------------------------------------------------------------------------------
// Command line

#[test]
fn cli_argument_errors_exit_2_with_clap_messages() {
    #[rustfmt::skip]
    let cases: &[(&[&str], &str)] = &[
        (&["frobnicate"], "unrecognized subcommand 'frobnicate'"),
        (&["resolve"], "the following required arguments were not provided:\n  --host <HOST>"),
        (&["resolve", "--host"], "a value is required for '--host <HOST>' but none was supplied"),
        (&["plan", "--bogus"], "unexpected argument '--bogus' found"),
        (&["verify"], "the following required arguments were not provided:\n  --key <PUB>"),
        (&["verify", "--key", "k.pub", "--threshold", "x"], "invalid value 'x' for '--threshold <N>'"),
        (&["verify", "--key", "k.pub", "--threshold", "-1"], "unexpected argument '-1' found"),
        (&["sign", "--key", "k.key", "--expires-in", "forever"], "invalid value 'forever' for '--expires-in <DURATION>'"),
        (&["sign", "--key", "k.key", "--sequence", "18446744073709551616"], "invalid value '18446744073709551616' for '--sequence <N>'"),
        (&["-q", "-v", "validate"], "the argument '--quiet' cannot be used with '--verbose...'"),
        (&["history", "--json", "--json"], "the argument '--json' cannot be used multiple times"),
        (&["reconcile", "--dry-run", "extra"], "unexpected argument 'extra' found"),
    ];
    for (args, expect) in cases {
        let (code, out, err) = run(fleetctl().args(*args));
        assert_eq!(code, 2, "{args:?}: {out}\n{err}");
        assert!(
            err.contains(expect),
            "{args:?}: expected {expect:?} in:\n{err}"
        );
        assert!(out.is_empty(), "{args:?}: {out}");
    }
    // Arguments that are not UTF-8.
    use std::os::unix::ffi::OsStrExt;
    let bad = std::ffi::OsStr::from_bytes(b"\xff");
    let (code, _, err) = run(fleetctl().args(["resolve", "--host"]).arg(bad));
    assert_eq!(code, 2);
    assert!(err.contains("invalid UTF-8 was detected"), "{err}");
}

// ---------------------------------------------------------------------------------------------
// Signature notes

fn statement() -> Statement {
    Statement {
        fleet: "acme".into(),
        commit: "0123456789abcdef0123456789abcdef01234567".into(),
        tree: "89abcdef0123456789abcdef0123456789abcdef".into(),
        sequence: 7,
        expires: "2026-12-23T09:00:00Z".parse().unwrap(),
    }
}

/// Garbage in every part of a note is refused by the parser with a reason.
#[test]
fn signature_note_garbage_is_refused_by_the_parser() {
    let good = statement().to_text();
    assert_eq!(Note::parse(good.as_bytes()).unwrap().statement, statement());
    let sub = |from: &str, to: &str| good.replacen(from, to, 1);
    #[rustfmt::skip]
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", Vec::new(), "the statement ends before `pacfleet-statement 1`"),
        ("garbage", b"garbage\n".to_vec(), "must start with `pacfleet-statement 1`"),
        ("not UTF-8", b"pacfleet-statement 1\n\xff\n".to_vec(), "not UTF-8"),
        ("NUL", sub("pacfleet-statement 1", "pacfleet-statement 1\0").into_bytes(), "must start with"),
        ("CRLF", good.replace('\n', "\r\n").into_bytes(), "must start with"),
        ("no final newline", good.trim_end().as_bytes().to_vec(), "does not end in a newline"),
        ("missing field", sub("sequence 7\n", "").into_bytes(), "expected `sequence <value>`"),
        ("fields reordered", sub("fleet acme\n", "").replacen("expires", "fleet acme\nexpires", 1).into_bytes(), "expected `fleet <value>`"),
        ("extra field", format!("{good}signer ops\n").into_bytes(), "unexpected text after `expires`"),
        ("two spaces", sub("fleet acme", "fleet  acme").into_bytes(), "expected `fleet <value>`"),
        ("value with a space", sub("fleet acme", "fleet ac me").into_bytes(), "expected `fleet <value>`"),
        ("uppercase hex", sub("commit 0123456789abcdef", "commit 0123456789ABCDEF").into_bytes(), "40 lowercase hex digits"),
        ("short commit", sub("commit 0123456789abcdef0123456789abcdef01234567", "commit 0123").into_bytes(), "40 lowercase hex digits"),
        ("negative sequence", sub("sequence 7", "sequence -7").into_bytes(), "is not a number"),
        ("sequence overflow", sub("sequence 7", "sequence 18446744073709551616").into_bytes(), "is not a number"),
        ("sequence with +", sub("sequence 7", "sequence +7").into_bytes(), "canonical form"),
        ("sequence with leading zero", sub("sequence 7", "sequence 07").into_bytes(), "canonical form"),
        ("expires not a time", sub("2026-12-23T09:00:00Z", "tomorrow").into_bytes(), "is not an RFC 3339 time"),
        ("expires in another zone", sub("2026-12-23T09:00:00Z", "2026-12-23T10:00:00+01:00").into_bytes(), "canonical form"),
        ("signature garbage", format!("{good}\nnot a signature\n").into_bytes(), "a signature does not parse"),
        ("over 64 KiB", format!("{good}\n{}\n", "x".repeat(70 * 1024)).into_bytes(), "statements over 64 KiB are refused"),
    ];
    for (label, bytes, expect) in cases {
        match Note::parse(&bytes) {
            Ok(n) => panic!("{label}: accepted {n:?}"),
            Err(e) => assert!(
                e.to_string().contains(expect),
                "{label}: expected {expect:?} in {e:?}"
            ),
        }
    }
}

/// On a host, a note that is not text or is oversized is a refusal (exit 3) that names the
/// commit; nothing is applied. (`trust.rs` covers text garbage and altered statements.)
#[test]
fn binary_and_oversized_notes_are_refused_by_hosts() {
    let (w, host, cfg) = converged_host(&[
        SynthPackage::new("app", "1.0-1"),
        SynthPackage::new("tool", "1.0-1"),
    ]);
    let before = host.local_db_snapshot();
    let state_before = fs::read(host.state_dir.join("state.json")).unwrap();
    let commit = w.fleet().commit_unsigned(
        "add tool",
        &[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, tool]\n",
        )],
    );
    let big = format!("{}\n{}\n", statement().to_text(), "x".repeat(70 * 1024));
    for (label, bytes, expect) in [
        ("binary", b"\x00\xff\xfe binary \x00".to_vec(), "not UTF-8"),
        ("oversized", big.into_bytes(), "over 64 KiB"),
    ] {
        let blob = w.tmp.path().join("note");
        fs::write(&blob, &bytes).unwrap();
        let id = w
            .fleet()
            .git(&["hash-object", "-w", &blob.display().to_string()]);
        w.fleet().git(&[
            "notes",
            "--ref=pacfleet",
            "add",
            "-f",
            "-C",
            id.trim(),
            &commit,
        ]);
        let (code, out, err) = run(fleetctl()
            .args(["verify", &commit, "--key"])
            .arg(&w.fleet().public_key)
            .arg("--repo")
            .arg(&w.fleet().dir));
        assert_eq!(code, 3, "{label}: {out}\n{err}");
        assert!(
            err.contains(expect) || out.contains(expect),
            "{label}: expected {expect:?} in:\n{out}\n{err}"
        );
        let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
        assert_eq!(code, 3, "{label}: {out}\n{err}");
        assert!(
            err.contains(&commit) && err.contains(expect),
            "{label}: {err}"
        );
        assert_eq!(host.local_db_snapshot(), before, "{label}");
        assert_eq!(
            fs::read(host.state_dir.join("state.json")).unwrap(),
            state_before,
            "{label}"
        );
    }
}

/// A signed fleet (pool `ws` of host `ws-01`, set `base` = `[app]`) whose repository `core`
/// has `pkgs`.
fn fleet_of_one(pkgs: &[SynthPackage]) -> World {
    World::builder()
        .packages(pkgs)
        .desired(&["app"])
        .pool("kind: Pool\nname: ws\nhosts: [ws-01]\npackage_sets: [base]\n")
        .build()
}

/// A host `ws-01` converged on [`fleet_of_one`]: (the world, host, agent.yaml).
fn converged_host(pkgs: &[SynthPackage]) -> (World, HostDir, PathBuf) {
    let w = fleet_of_one(pkgs);
    let (host, cfg) = w.host("ws-01");
    assert_eq!(TestCommand::reconcile(&cfg).run().parts().0, 0);
    (w, host, cfg)
}

// ---------------------------------------------------------------------------------------------
// Windows a host cannot compute with

/// A window longer than a week (`300000years` overflowed the date arithmetic and panicked, even
/// with `--ignore-window`; `60years` of a cron firing every second spun for minutes) is refused
/// by `validate` with its location, and a host whose fleet carries one fails the pass as
/// invalid, promptly: exit 2, `status.json` says so, nothing installed.
#[test]
fn windows_longer_than_a_week_are_refused_and_never_panic_a_host() {
    let windows = [("0 0 2 * * Sat", "300000years"), ("* * * * * *", "60years")];
    for (cron, duration) in windows {
        let pool = format!(
            "kind: Pool\nname: ws\nhosts: [ws-01]\npackage_sets: [base]\nwindow: {{cron: \"{cron}\", duration: {duration}}}\n"
        );
        assert_invalid(
            duration,
            &[("pools/ws.yaml", pool.as_bytes())],
            &[
                "pools/ws.yaml:5:",
                &format!("window.duration `{duration}` is longer than 7 days"),
            ],
        );
    }

    let (w, host, cfg) = converged_host(&[
        SynthPackage::new("app", "1.0-1"),
        SynthPackage::new("tool", "1.0-1"),
    ]);
    let before = host.local_db_snapshot();
    for (cron, duration) in windows {
        w.fleet().commit(
            duration,
            &[
                (
                    "pools/ws.yaml",
                    &format!("kind: Pool\nname: ws\nhosts: [ws-01]\npackage_sets: [base]\nwindow: {{cron: \"{cron}\", duration: {duration}}}\n"),
                ),
                (
                    "packages/base.yaml",
                    "kind: PackageSet\nname: base\npackages: [app, tool]\n",
                ),
            ],
        );
        for extra in [&[][..], &["--ignore-window"][..]] {
            let _ = fs::remove_file(host.state_dir.join("status.json"));
            let started = Instant::now();
            let (code, out, err) = run(fleetctl()
                .arg("reconcile")
                .args(extra)
                .arg("--config")
                .arg(&cfg));
            let took = started.elapsed();
            assert_eq!(code, 2, "{duration} {extra:?}: {out}\n{err}");
            assert!(!err.contains("panicked"), "{err}");
            assert!(
                err.contains("is invalid; nothing was changed") && err.contains("window.duration"),
                "{err}"
            );
            assert!(took < Duration::from_secs(30), "{duration}: took {took:?}");
            let status: serde_json::Value = serde_json::from_slice(
                &fs::read(host.state_dir.join("status.json")).expect("status.json written"),
            )
            .unwrap();
            assert_eq!(status["outcome"], "failed", "{status}");
            assert_eq!(status["failure"], "invalid", "{status}");
            assert!(
                status["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("longer than 7 days"),
                "{status}"
            );
            assert_eq!(host.local_db_snapshot(), before, "nothing installed");
        }
    }
}
