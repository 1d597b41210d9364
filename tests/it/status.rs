//! `fleetctl status` (human, `--json`, `--waybar`) and the Prometheus textfile, through a host's
//! story: a first apply, changes held back by a closed window, a refused commit, an unreachable
//! repository.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pacfleet_support::synth::SynthPackage;
use serde_json::Value;

use crate::harness::world::{AGENT_EXTRA, POOL};
use crate::harness::{World, fleetctl, keypair, run};

/// A fleet (set `base` = [app]), a repository with `app`, `libfoo` and `tool`, and host
/// `ws-01` whose agent.yaml fetches the fleet and writes the Prometheus textfile.
fn world() -> World {
    let w = World::builder()
        .packages(&[
            SynthPackage::new("app", "1.0-1").depends("libfoo"),
            SynthPackage::new("libfoo", "1.0-1"),
            SynthPackage::new("tool", "1.0-1"),
        ])
        .shared()
        .desired(&["app"])
        .hosts(&["ws-01"])
        .build();
    fs::create_dir_all(textfile(&w).parent().unwrap()).unwrap();
    config(&w, &w.fleet_url());
    w
}

/// The host's textfile, in a node-exporter directory.
fn textfile(w: &World) -> PathBuf {
    w.tmp.path().join("node-exporter/pacfleet.prom")
}

/// Points the host's agent.yaml at `repo`, with the textfile configured.
fn config(w: &World, repo: &str) -> PathBuf {
    w.hosts[0].agent_yaml(
        repo,
        &w.fleet().public_key,
        &format!("{AGENT_EXTRA}textfile: {}\n", textfile(w).display()),
    )
}

fn cfg(w: &World) -> PathBuf {
    w.hosts[0].base.join("agent.yaml")
}

fn status(w: &World, flag: Option<&str>) -> String {
    let mut cmd = fleetctl();
    cmd.arg("status").arg("--config").arg(cfg(w));
    if let Some(f) = flag {
        cmd.arg(f);
    }
    let (code, out, err) = run(&mut cmd);
    assert_eq!(code, 0, "status always exits 0:\n{out}\n{err}");
    out
}

fn json(w: &World) -> Value {
    let out = status(w, Some("--json"));
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("status --json: {e}:\n{out}"))
}

fn waybar(w: &World) -> Value {
    let out = status(w, Some("--waybar"));
    assert_eq!(out.lines().count(), 1, "waybar wants one line:\n{out}");
    let v: Value = serde_json::from_str(&out).unwrap();
    for key in ["text", "tooltip", "class", "percentage"] {
        assert!(v.get(key).is_some(), "waybar line lacks {key}: {out}");
    }
    v
}

fn metrics(w: &World) -> Metrics {
    Metrics::read(&textfile(w))
}

/// The textfile, parsed: samples by `name{labels}`, and the HELP/TYPE of each family.
struct Metrics {
    text: String,
    samples: BTreeMap<String, f64>,
    types: BTreeMap<String, String>,
}

impl Metrics {
    fn read(path: &Path) -> Metrics {
        let text = fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut samples = BTreeMap::new();
        let mut types = BTreeMap::new();
        let mut helped = Vec::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP name text");
                assert!(!help.is_empty(), "{line}");
                helped.push(name.to_owned());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE name kind");
                assert!(["gauge", "counter"].contains(&kind), "{line}");
                assert_eq!(
                    helped.last().map(String::as_str),
                    Some(name),
                    "HELP before TYPE: {line}"
                );
                types.insert(name.to_owned(), kind.to_owned());
            } else {
                assert!(
                    !line.starts_with('#') && !line.is_empty(),
                    "unexpected line {line:?}"
                );
                let (series, value) = line.rsplit_once(' ').expect("series value");
                let name = series.split('{').next().unwrap();
                assert!(types.contains_key(name), "{name} has no # TYPE before it");
                assert!(name.starts_with("pacfleet_"), "{name}");
                let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
                assert!(
                    samples.insert(series.to_owned(), value).is_none(),
                    "duplicate {series}"
                );
            }
        }
        for (name, kind) in &types {
            if kind == "counter" {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} should end in _total"
                );
            }
        }
        Metrics {
            text,
            samples,
            types,
        }
    }

    fn get(&self, series: &str) -> f64 {
        *self
            .samples
            .get(series)
            .unwrap_or_else(|| panic!("no sample {series} in:\n{}", self.text))
    }
}

fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn status_before_any_pass_and_with_a_bad_config() {
    let w = world();
    let out = status(&w, None);
    assert!(out.contains("no pass has run yet"), "{out}");
    let j = json(&w);
    assert_eq!(j["class"], "unknown");
    assert!(j["last_pass"].is_null() && j["applied"].is_null(), "{j}");
    let wb = waybar(&w);
    assert_eq!(wb["class"], "unknown");
    assert_eq!(wb["text"], "no pass yet");
    assert!(!textfile(&w).exists());

    let (code, _, err) = run(fleetctl()
        .arg("status")
        .arg("--config")
        .arg(w.tmp.path().join("missing.yaml")));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("missing.yaml"), "{err}");
    let (code, _, err) = run(fleetctl()
        .args(["status", "--json", "--waybar", "--config"])
        .arg(cfg(&w)));
    assert_eq!(code, 2, "--json and --waybar conflict: {err}");

    // A damaged state file: status still answers (exit 0), names it, and does not guess.
    fs::write(w.hosts[0].state_dir.join("status.json"), "{ not json").unwrap();
    let j = json(&w);
    assert_eq!(j["class"], "unknown", "{j}");
    let problem = j["problems"][0].as_str().unwrap();
    assert!(
        problem.contains("status.json") && problem.contains("corrupt"),
        "{j}"
    );
    assert!(status(&w, None).contains("problem    "));
    assert_eq!(waybar(&w)["text"], "unknown");
}

#[test]
fn status_and_metrics_through_apply_pending_refused_and_failed_passes() {
    let w = world();

    // 1. A first pass applies: converged.
    let (code, out, err) = w.reconcile(&w.hosts[0]).parts();
    assert_eq!(code, 0, "{out}\n{err}");
    let commit = w.fleet().head();
    let out = status(&w, None);
    for expect in [
        "ws-01",
        "pool ws (floating)",
        "fleet acme",
        &format!("commit {}", &commit[..12]),
        "sequence 1",
        "signed by",
        "converged",
        "last pass",
        "signed     until",
    ] {
        assert!(out.contains(expect), "expected {expect:?} in:\n{out}");
    }
    let j = json(&w);
    assert_eq!(j["class"], "converged", "{j}");
    assert_eq!(j["percentage"], 100);
    assert_eq!(j["applied"]["commit"], commit.as_str());
    assert_eq!(j["applied"]["sequence"], 1);
    assert_eq!(j["applied"]["pool"], "ws");
    assert!(j["applied"]["generation"].is_null());
    assert_eq!(j["last_pass"]["outcome"], "applied");
    assert_eq!(j["signature"], "valid");
    assert!(j["last_error"].is_null());
    assert_eq!(j["pending_changes"], 0);
    let wb = waybar(&w);
    assert_eq!(wb["class"], "converged");
    assert_eq!(wb["percentage"], 100);
    assert_eq!(wb["text"], "converged");
    assert!(wb["tooltip"].as_str().unwrap().contains("pool ws"), "{wb}");

    let m = metrics(&w);
    assert_eq!(m.types["pacfleet_passes_total"], "counter");
    assert_eq!(m.types["pacfleet_pending_changes"], "gauge");
    assert_eq!(m.get("pacfleet_up"), 1.0);
    assert_eq!(m.get("pacfleet_passes_total{outcome=\"applied\"}"), 1.0);
    assert_eq!(m.get("pacfleet_passes_total{outcome=\"failed\"}"), 0.0);
    assert_eq!(m.get("pacfleet_failures_total{reason=\"fetch\"}"), 0.0);
    assert_eq!(m.get("pacfleet_applied_changesets_total"), 1.0);
    assert_eq!(m.get("pacfleet_applied_sequence"), 1.0);
    assert_eq!(m.get("pacfleet_pending_changes"), 0.0);
    assert_eq!(m.get("pacfleet_drift_packages"), 0.0);
    assert_eq!(m.get("pacfleet_last_outcome{outcome=\"applied\"}"), 1.0);
    let info = format!(
        "pacfleet_info{{fleet=\"acme\",pool=\"ws\",generation=\"\",commit=\"{commit}\",version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(m.get(&info), 1.0);
    let success = m.get("pacfleet_last_success_timestamp_seconds");
    assert!((now_secs() - success).abs() < 120.0, "{success}");
    assert!(m.get("pacfleet_signed_until_timestamp_seconds") > now_secs() + 29.0 * 86_400.0);
    assert!(m.get("pacfleet_pass_duration_seconds") >= 0.0);
    // Written atomically: no temporary files left, readable by node_exporter (not root).
    let file = textfile(&w);
    let dir = file.parent().unwrap();
    let names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["pacfleet.prom"]);
    let mode = fs::metadata(textfile(&w)).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert!(w.hosts[0].state_dir.join("counters.json").exists());

    // 2. A change while the pool's window is closed (it opened for one second on January 1st):
    //    pending until the window opens.
    let closed = format!("{POOL}window: {{cron: \"0 0 0 1 1 *\", duration: 1s}}\n");
    w.fleet().commit(
        "base: add tool, in the window",
        &[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [app, tool]\n",
            ),
            ("pools/ws.yaml", &closed),
        ],
    );
    let (code, out, err) = w.reconcile(&w.hosts[0]).parts();
    assert_eq!(code, 0, "{out}\n{err}");
    let out = status(&w, None);
    assert!(
        out.contains("pending until") && out.contains("-01-01T00:00:00"),
        "{out}"
    );
    assert!(
        out.contains("1 change until the pool's window opens at"),
        "{out}"
    );
    let j = json(&w);
    assert_eq!(j["class"], "pending", "{j}");
    assert_eq!(j["pending_changes"], 1);
    assert_eq!(j["percentage"], 90);
    assert!(
        j["next_window"]
            .as_str()
            .unwrap()
            .contains("-01-01T00:00:00"),
        "{j}"
    );
    assert_eq!(j["last_pass"]["outcome"], "pending");
    let wb = waybar(&w);
    assert_eq!(
        (wb["class"].as_str(), wb["text"].as_str()),
        (Some("pending"), Some("1 pending"))
    );
    assert_eq!(wb["percentage"], 90);
    let m = metrics(&w);
    assert_eq!(m.get("pacfleet_pending_changes"), 1.0);
    assert_eq!(m.get("pacfleet_passes_total{outcome=\"pending\"}"), 1.0);
    assert!(m.get("pacfleet_next_window_timestamp_seconds") > now_secs());
    assert_eq!(m.get("pacfleet_up"), 1.0);
    assert_eq!(
        m.get("pacfleet_applied_sequence"),
        1.0,
        "nothing new applied"
    );

    // 3. A commit signed only by a key the host does not trust: refused (exit 3).
    let (_, mallory) = keypair(&w.tmp.path().join("mallory"), "mallory");
    let evil = w.fleet().commit_unsigned(
        "mallory adds a package",
        &[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [app, tool, libfoo]\n",
        )],
    );
    w.fleet().sign_with(&evil, &mallory);
    let (code, out, err) = w.reconcile(&w.hosts[0]).parts();
    assert_eq!(code, 3, "{out}\n{err}");
    let j = json(&w);
    assert_eq!(j["class"], "refused", "{j}");
    assert_eq!(j["percentage"], 0);
    assert_eq!(j["last_pass"]["failure"], "refused");
    assert!(
        j["last_error"].as_str().unwrap().contains("does not trust"),
        "{j}"
    );
    let wb = waybar(&w);
    assert_eq!(wb["class"], "refused");
    let out = status(&w, None);
    assert!(out.contains("refused") && out.contains("error"), "{out}");
    let m = metrics(&w);
    assert_eq!(m.get("pacfleet_failures_total{reason=\"refused\"}"), 1.0);
    assert_eq!(m.get("pacfleet_passes_total{outcome=\"refused\"}"), 1.0);
    assert_eq!(m.get("pacfleet_up"), 0.0);

    // 4. The repository is unreachable: failed, with the error; counted as a fetch failure.
    config(&w, "git://127.0.0.1:9/fleet.git");
    let (code, _, err) = w.reconcile(&w.hosts[0]).parts();
    assert_eq!(code, 2, "{err}");
    let out = status(&w, None);
    assert!(
        out.contains("failed") && out.contains("127.0.0.1:9"),
        "{out}"
    );
    assert!(
        out.contains("last ok"),
        "the last successful pass is shown:\n{out}"
    );
    let j = json(&w);
    assert_eq!(j["class"], "failed", "{j}");
    assert_eq!(j["last_pass"]["outcome"], "failed");
    assert_eq!(j["last_pass"]["failure"], "fetch");
    assert!(
        j["last_error"].as_str().unwrap().contains("127.0.0.1:9"),
        "{j}"
    );
    assert_eq!(
        j["applied"]["commit"],
        commit.as_str(),
        "the applied state is still shown"
    );
    let wb = waybar(&w);
    assert_eq!(
        (wb["class"].as_str(), wb["percentage"].as_u64()),
        (Some("failed"), Some(0))
    );
    assert!(
        wb["tooltip"].as_str().unwrap().contains("127.0.0.1:9"),
        "{wb}"
    );
    let m = metrics(&w);
    assert_eq!(m.get("pacfleet_failures_total{reason=\"fetch\"}"), 1.0);
    assert_eq!(m.get("pacfleet_failures_total{reason=\"refused\"}"), 1.0);
    assert_eq!(m.get("pacfleet_passes_total{outcome=\"failed\"}"), 1.0);
    assert_eq!(m.get("pacfleet_passes_total{outcome=\"applied\"}"), 1.0);
    assert_eq!(m.get("pacfleet_last_outcome{outcome=\"failed\"}"), 1.0);
    assert_eq!(m.get("pacfleet_last_outcome{outcome=\"applied\"}"), 0.0);
    assert_eq!(m.get("pacfleet_up"), 0.0);
    assert!(
        m.get("pacfleet_last_pass_timestamp_seconds")
            >= m.get("pacfleet_last_success_timestamp_seconds")
    );
    assert!(
        !m.samples
            .contains_key("pacfleet_signed_until_timestamp_seconds")
    );
    let counters: Value = serde_json::from_str(
        &fs::read_to_string(w.hosts[0].state_dir.join("counters.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(counters["passes"]["failed"], 1, "{counters}");
}

#[test]
fn drift_shows_in_status_waybar_and_metrics() {
    let w = world();
    let (code, out, err) = w.reconcile(&w.hosts[0]).parts();
    assert_eq!(code, 0, "{out}\n{err}");
    // Someone changes an install reason by hand; a dry run sees it as drift.
    w.hosts[0].pacman_ok(&["-D", "--asdeps", "app"]);
    let (code, out, err) = run(fleetctl()
        .args(["reconcile", "--dry-run", "--config"])
        .arg(cfg(&w)));
    assert_eq!(code, 0, "{out}\n{err}");
    let j = json(&w);
    assert_eq!(j["class"], "drift", "{j}");
    assert_eq!(j["drift"], serde_json::json!(["mark-explicit app"]), "{j}");
    assert_eq!(j["pending_changes"], 1, "{j}");
    assert_eq!(
        j["percentage"], 90,
        "drift is the pending change, counted once: {j}"
    );
    let out = status(&w, None);
    assert!(
        out.contains("1 package changed outside pacfleet: mark-explicit app"),
        "{out}"
    );
    let wb = waybar(&w);
    assert_eq!(
        (wb["class"].as_str(), wb["text"].as_str()),
        (Some("drift"), Some("drift 1"))
    );
    let m = metrics(&w);
    assert_eq!(m.get("pacfleet_drift_packages"), 1.0);
    assert_eq!(m.get("pacfleet_pending_changes"), 1.0);
}
