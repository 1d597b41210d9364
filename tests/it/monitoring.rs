//! monitoring/: the Prometheus alerting rules pass `promtool check rules` and their unit tests
//! (`promtool test rules`: each alert fires on its input), and the Grafana dashboard and the
//! rules query only series pacfleet writes.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::harness::{skip, tempdir};

/// Series the host side adds with rollouts, health checks and reports (the metrics of the
/// status-report work), on top of what crates/pacfleet/src/metrics.rs writes here.
const HOST_REPORT_SERIES: &[&str] = &[
    "pacfleet_rollout_wave",
    "pacfleet_rollout_waiting",
    "pacfleet_rollout_halted",
    "pacfleet_needs_reboot",
    "pacfleet_health_ok",
    "pacfleet_report_pushed_timestamp_seconds",
    "pacfleet_report_push_failures_total",
    "pacfleet_reports_rejected_total",
];

const ALERTS: &[&str] = &[
    "PacfleetPassFailed",
    "PacfleetRolloutHalted",
    "PacfleetHostStale",
    "PacfleetSignatureExpiring",
    "PacfleetDrift",
    "PacfleetBadPeer",
];

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("read {rel}: {e}"))
}

/// Every `pacfleet_…` name in `text`.
fn series_in(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for (i, _) in text.match_indices("pacfleet_") {
        if text[..i]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            continue;
        }
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        out.insert(name);
    }
    out
}

/// The series metrics.rs writes (its `"pacfleet_…"` string literals), and the host report ones.
fn known_series() -> BTreeSet<String> {
    let source = read("crates/pacfleet/src/metrics.rs");
    let mut known: BTreeSet<String> = source
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|s| {
            s.starts_with("pacfleet_")
                && s.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        })
        .map(str::to_owned)
        .collect();
    assert!(
        known.contains("pacfleet_last_outcome") && known.contains("pacfleet_up"),
        "metrics.rs names no series? {known:?}"
    );
    known.extend(HOST_REPORT_SERIES.iter().map(|s| (*s).to_owned()));
    known
}

/// Every PromQL expression of the dashboard (panel targets and variable queries).
fn dashboard_exprs() -> Vec<String> {
    let text = read("monitoring/grafana/pacfleet.json");
    let dash: serde_json::Value =
        serde_json::from_str(&text).expect("monitoring/grafana/pacfleet.json is JSON");
    assert_eq!(dash["uid"], "pacfleet");
    let mut exprs = Vec::new();
    let mut panels: Vec<&serde_json::Value> =
        dash["panels"].as_array().expect("panels").iter().collect();
    while let Some(p) = panels.pop() {
        panels.extend(p["panels"].as_array().into_iter().flatten());
        if p["type"] != "row" {
            assert!(
                p["title"].as_str().is_some_and(|t| !t.is_empty()),
                "a panel without a title: {p}"
            );
            assert!(
                p["gridPos"]["w"].is_u64(),
                "panel {} has no gridPos",
                p["title"]
            );
        }
        for t in p["targets"].as_array().into_iter().flatten() {
            exprs.push(t["expr"].as_str().expect("a target's expr").to_owned());
        }
    }
    for v in dash["templating"]["list"].as_array().expect("templating") {
        if let Some(q) = v["query"]["query"].as_str() {
            exprs.push(q.to_owned());
        }
    }
    exprs
}

#[test]
fn monitoring_dashboard_and_rules_query_only_series_pacfleet_writes() {
    let known = known_series();
    let exprs = dashboard_exprs();
    assert!(
        exprs.len() >= 15,
        "the dashboard has {} queries",
        exprs.len()
    );
    let mut used = BTreeSet::new();
    for e in &exprs {
        used.extend(series_in(e));
    }
    let rules = read("monitoring/prometheus/pacfleet.rules.yml");
    used.extend(series_in(&rules));
    let unknown: Vec<&String> = used.difference(&known).collect();
    assert!(
        unknown.is_empty(),
        "the dashboard or the rules query series pacfleet does not write: {unknown:?} (known: {known:?})"
    );
    // What the dashboard is for: each of these is queried.
    for series in [
        "pacfleet_last_outcome",
        "pacfleet_rollout_wave",
        "pacfleet_rollout_waiting",
        "pacfleet_rollout_halted",
        "pacfleet_last_pass_timestamp_seconds",
        "pacfleet_signed_until_timestamp_seconds",
        "pacfleet_drift_packages",
        "pacfleet_needs_reboot",
        "pacfleet_pass_duration_seconds",
        "pacfleet_download_bytes",
        "pacfleet_peer_bad_files",
        "pacfleet_prefetched_files",
    ] {
        assert!(
            used.contains(series),
            "the dashboard does not show {series}"
        );
    }
    let values: serde_yaml::Value = serde_yaml::from_str(&rules).expect("the rules are YAML");
    let names: Vec<&str> = values["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .map(|r| {
            let a = &r["annotations"];
            let name = r["alert"].as_str().expect("an alert name");
            assert!(
                a["summary"].is_string() && a["description"].is_string(),
                "{name} lacks a summary or description"
            );
            name
        })
        .collect();
    for alert in ALERTS {
        assert!(names.contains(alert), "no {alert} in the rules");
    }
}

fn promtool() -> Option<PathBuf> {
    Command::new("promtool")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
        .then(|| PathBuf::from("promtool"))
}

fn promtool_ok(args: &[&str], dir: &Path) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run promtool");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {}:\n{text}", args.join(" "));
    text
}

#[test]
fn monitoring_rules_pass_promtool_and_every_alert_fires_on_its_test_input() {
    if promtool().is_none() {
        skip(
            "promtool is not installed (apt-get install prometheus); the alerting rules are not checked",
        );
        return;
    }
    let dir = root().join("monitoring/prometheus");
    let out = promtool_ok(&["check", "rules", "pacfleet.rules.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = promtool_ok(&["test", "rules", "pacfleet.rules.test.yml"], &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    // The unit tests cover every alert, each with an alert expected to fire.
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&read("monitoring/prometheus/pacfleet.rules.test.yml"))
            .expect("the rule tests are YAML");
    let mut firing = BTreeSet::new();
    for t in tests["tests"].as_sequence().expect("tests") {
        for a in t["alert_rule_test"].as_sequence().into_iter().flatten() {
            if a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()) {
                firing.insert(a["alertname"].as_str().expect("alertname").to_owned());
            }
        }
    }
    for alert in ALERTS {
        assert!(firing.contains(*alert), "no test shows {alert} firing");
    }

    // The dashboard's queries are PromQL promtool parses: checked as recording rules, with
    // Grafana's variables given values.
    let tmp = tempdir();
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in dashboard_exprs().iter().enumerate() {
        // `label_values(SERIES, LABEL)` is Grafana's: its SERIES is the PromQL.
        let e = match e.strip_prefix("label_values(") {
            Some(rest) => rest.split(',').next().unwrap_or(rest).to_owned(),
            None => e.clone(),
        };
        let e = e.replace("$pool", ".*").replace("$__all", ".*");
        rules.push_str(&format!(
            "      - record: pacfleet_dashboard_query_{i}\n        expr: {}\n",
            serde_json::to_string(&e).expect("a JSON string is a YAML string")
        ));
    }
    fs::write(tmp.path().join("dashboard.rules.yml"), rules).expect("write");
    promtool_ok(&["check", "rules", "dashboard.rules.yml"], tmp.path());
}
