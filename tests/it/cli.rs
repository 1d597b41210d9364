//! Output that tells the truth, through the real binary: a reader that stops reading, errors
//! said once, keygen's directory, a host in no pool, plan's window line and exit codes, and
//! reconcile without root.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use pacfleet_support::synth::SynthPackage;

use crate::harness::world::FLEET;
use crate::harness::{HostDir, TestCommand, World, fleetctl, keypair, run, tempdir};

const POOL: &str = "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\n";

/// A fleet with pool `ws` desiring `tool`, a repository with it, and host `name`.
fn world(name: &str, pool: &str) -> (World, HostDir, PathBuf) {
    let w = World::builder()
        .packages(&[SynthPackage::new("tool", "1.0-1")])
        .desired(&["tool"])
        .pool(pool)
        .build();
    let (host, cfg) = w.host(name);
    (w, host, cfg)
}

#[test]
fn a_reader_that_stops_reading_ends_the_command_quietly() {
    let tmp = tempdir();
    let dir = tmp.path().join("fleet");
    let names: Vec<String> = (0..6000).map(|i| format!("package-{i:05}")).collect();
    for (path, text) in [
        ("fleet.yaml", FLEET.to_owned()),
        ("pools/ws.yaml", POOL.to_owned()),
        (
            "packages/base.yaml",
            format!(
                "kind: PackageSet\nname: base\npackages: [{}]\n",
                names.join(", ")
            ),
        ),
    ] {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
        fs::write(p, text).expect("write");
    }
    // `fleetctl resolve … | head -c 16`: the output is far larger than a pipe holds.
    let mut child = fleetctl()
        .args(["resolve", "--host", "ws-01"])
        .arg(&dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut stdout = child.stdout.take().expect("stdout");
    let mut first = [0u8; 16];
    stdout.read_exact(&mut first).expect("read the start");
    drop(stdout);
    let out = child.wait_with_output().expect("wait");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.is_empty(), "{err}");
}

#[test]
fn an_error_is_said_once() {
    let (w, host, cfg) = world("ws-01", POOL);
    let (other, _) = keypair(&w.tmp.path().join("other"), "other");
    let text = fs::read_to_string(&cfg).expect("agent.yaml");
    let pub_line = format!("trusted_keys: [{}]", other.display());
    let text: String = text
        .lines()
        .map(|l| {
            if l.starts_with("trusted_keys:") {
                pub_line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    fs::write(&cfg, text + "\n").expect("write");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 3, "{out}\n{err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.starts_with(' ')).collect();
    let error = lines
        .iter()
        .find(|l| l.starts_with("error: "))
        .expect("an error line");
    let said = error.trim_start_matches("error: refused: ");
    assert!(
        !err.lines().any(|l| l.trim_start().starts_with("caused by:")
            && said.contains(l.trim_start().trim_start_matches("caused by: "))),
        "said twice:\n{err}"
    );
    assert!(host.installed().is_empty());
}

#[test]
fn keygen_makes_a_missing_directory_private() {
    let tmp = tempdir();
    let prefix = tmp.path().join("config/pacfleet/ops");
    let (code, out, err) = run(fleetctl()
        .args(["keygen", "--unencrypted", "--out"])
        .arg(&prefix));
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(prefix.with_extension("pub").is_file() && prefix.with_extension("key").is_file());
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(prefix.parent().expect("dir"))
        .expect("stat")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700, "{mode:o}");
}

/// A hostname no pool selects (a typo): the pass works and exits 0, but says so, and status,
/// waybar and metrics show it as its own, non-green state.
#[test]
fn a_host_in_no_pool_is_not_shown_as_healthy() {
    let (w, host, cfg) = world("wss-01", POOL);
    let textfile = w.tmp.path().join("pacfleet.prom");
    let text = fs::read_to_string(&cfg).expect("agent.yaml");
    fs::write(&cfg, format!("{text}textfile: {}\n", textfile.display())).expect("write");
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    assert!(
        err.contains("warning: no pool of the fleet selects host wss-01"),
        "{err}"
    );
    let st: serde_json::Value =
        serde_json::from_slice(&fs::read(host.state_dir.join("status.json")).expect("status"))
            .expect("json");
    assert_eq!(st["outcome"], "not-in-fleet", "{st}");
    let (_, waybar, _) = run(fleetctl()
        .args(["status", "--waybar", "--config"])
        .arg(&cfg));
    assert!(waybar.contains("\"class\":\"not-in-fleet\""), "{waybar}");
    assert!(waybar.contains("\"percentage\":0"), "{waybar}");
    let metrics = fs::read_to_string(&textfile).expect("metrics");
    assert!(metrics.contains("pacfleet_in_fleet 0\n"), "{metrics}");
    assert!(host.installed().is_empty());
}

/// `plan` tells the window as it is, not "open (no window)", and exits 3 (printing its report,
/// `--json` too) when the trust rules refused a newer commit.
#[test]
fn plan_shows_the_window_and_exits_3_on_a_refusal() {
    let pool = format!("{POOL}window: {{cron: \"0 0 3 1 1 *\", duration: 1h}}\n");
    let (w, _host, cfg) = world("ws-01", &pool);
    let (code, out, err) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 1, "{out}\n{err}");
    assert!(out.contains("window: closed; opens "), "{out}");
    assert!(!out.contains("no window"), "{out}");

    let (_, other_secret) = keypair(&w.tmp.path().join("other"), "other");
    let c = w.fleet().commit_unsigned(
        "by someone else",
        &[(
            "packages/extra.yaml",
            "kind: PackageSet\nname: extra\npackages: []\n",
        )],
    );
    w.fleet().sign_with(&c, &other_secret);
    let (code, out, err) = TestCommand::plan(&cfg).run().parts();
    assert_eq!(code, 3, "{out}\n{err}");
    assert!(
        out.contains("window: closed"),
        "the report is printed: {out}"
    );
    assert!(err.contains("error: refused:"), "{err}");
    let (code, out, err) = run(fleetctl().args(["plan", "--json", "--config"]).arg(&cfg));
    assert_eq!(code, 3, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).expect("a JSON report");
    assert!(report["refused"].is_string(), "{report}");
    assert_eq!(report["window"]["state"], "closed", "{report}");
}

/// A copy of the toolchain's libalpm that `nobody` can load (where scripts/libalpm.sh built it,
/// under root's home, it cannot).
fn libalpm_for_nobody() -> tempfile::TempDir {
    let libs = tempfile::Builder::new()
        .prefix("pacfleet-libs-")
        .tempdir_in("/tmp")
        .expect("tempdir");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(libs.path(), fs::Permissions::from_mode(0o755)).expect("chmod");
    for dir in std::env::split_paths(&std::env::var_os("LD_LIBRARY_PATH").unwrap_or_default()) {
        for e in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name.to_string_lossy().starts_with("libalpm.so") {
                let dest = libs.path().join(&name);
                fs::copy(e.path(), &dest).expect("copy libalpm");
                fs::set_permissions(&dest, fs::Permissions::from_mode(0o755)).expect("chmod");
            }
        }
    }
    libs
}

/// `fleetctl ARGS…` as `nobody`.
fn as_nobody(libs: &Path, args: &[&str], cfg: &Path) -> (i32, String, String) {
    run(std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(env!("CARGO_BIN_EXE_fleetctl"))
        .args(args)
        .arg("--config")
        .arg(cfg)
        .env("LD_LIBRARY_PATH", libs)
        .env("LC_ALL", "C"))
}

#[test]
fn reconcile_without_root_says_to_run_it_as_root() {
    let (_w, host, cfg) = world("ws-01", POOL);
    let libs = libalpm_for_nobody();
    let (code, out, err) = as_nobody(libs.path(), &["reconcile"], &cfg);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("run it as root"), "{err}");
    assert!(!err.contains("Permission denied"), "{err}");
    assert!(host.installed().is_empty());
}

#[test]
fn plan_without_root_says_to_run_it_as_root_and_never_to_delete_the_mirror() {
    let (_w, host, cfg) = world("ws-01", POOL);
    // The host's first pass made the state directory and the mirror, as root.
    let (code, out, err) = TestCommand::plan(&cfg).run().parts();
    assert!(code == 0 || code == 1, "{out}\n{err}");
    let libs = libalpm_for_nobody();
    let (code, out, err) = as_nobody(libs.path(), &["plan"], &cfg);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("as root"), "{err}");
    assert!(!err.contains("delete") && !err.contains("remove"), "{err}");
    assert!(host.state_dir.join("fleet.git").is_dir());
}

/// `history --limit N` shows the newest N changesets; outcomes read as the contract names them.
#[test]
fn history_limit_shows_the_newest() {
    let (w, _host, cfg) = world("ws-01", POOL);
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 0, "{out}\n{err}");
    let (_, other_secret) = keypair(&w.tmp.path().join("other"), "other");
    let c = w.fleet().commit_unsigned(
        "by someone else",
        &[(
            "packages/extra.yaml",
            "kind: PackageSet\nname: extra\npackages: []\n",
        )],
    );
    w.fleet().sign_with(&c, &other_secret);
    let (code, _, _) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 3);
    let (code, all, _) = run(fleetctl().args(["history", "--config"]).arg(&cfg));
    assert_eq!(code, 0, "{all}");
    assert!(
        all.contains("  applied  ") && all.contains("  refused  "),
        "{all}"
    );
    let (code, last, _) = run(fleetctl()
        .args(["history", "--limit", "1", "--config"])
        .arg(&cfg));
    assert_eq!(code, 0, "{last}");
    assert!(
        last.contains("  refused  ") && !last.contains("  applied  "),
        "{last}"
    );
    let (_, json, _) = run(fleetctl()
        .args(["history", "--json", "--limit", "1", "--config"])
        .arg(&cfg));
    assert_eq!(json.lines().count(), 1, "{json}");
}
