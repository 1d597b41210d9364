//! The systemd units in `systemd/`: `systemd-analyze verify` accepts them (when systemd-analyze
//! is installed, as in CI: Debian package `systemd`), and they carry the settings README.md and
//! the timer's purpose rely on.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::harness::tempdir;

const UNITS: &[&str] = &[
    "pacfleet-reconcile.service",
    "pacfleet-reconcile.timer",
    "pacfleet-agent.service",
];

fn unit_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd")
}

fn read_unit(name: &str) -> String {
    let path = unit_dir().join(name);
    fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// `section -> key -> values` (a key may repeat), comments and blank lines skipped.
fn parse(text: &str) -> BTreeMap<String, BTreeMap<String, Vec<String>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Vec<String>>> = BTreeMap::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_owned();
            continue;
        }
        let (key, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("not a key=value line: {line}"));
        out.entry(section.clone())
            .or_default()
            .entry(key.trim().to_owned())
            .or_default()
            .push(value.trim().to_owned());
    }
    out
}

fn one<'a>(
    unit: &'a BTreeMap<String, BTreeMap<String, Vec<String>>>,
    section: &str,
    key: &str,
) -> &'a str {
    let values = unit
        .get(section)
        .and_then(|s| s.get(key))
        .unwrap_or_else(|| panic!("[{section}] {key}= is missing"));
    values.last().expect("a value")
}

fn systemd_analyze() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/bin")])
        .map(|d| d.join("systemd-analyze"))
        .find(|p| p.is_file())
}

#[test]
fn units_pass_systemd_analyze_verify() {
    let Some(analyze) = systemd_analyze() else {
        crate::harness::skip(
            "systemd-analyze is not installed, so `systemd-analyze verify` of systemd/* cannot run (Debian: `apt-get install systemd`)",
        );
        return;
    };
    // /usr/bin/fleetctl does not exist here, and verify checks that ExecStart= is executable:
    // point the copies at the binary under test.
    let tmp = tempdir();
    let fleetctl = env!("CARGO_BIN_EXE_fleetctl");
    let mut paths = Vec::new();
    for name in UNITS {
        let text = read_unit(name).replace("/usr/bin/fleetctl", fleetctl);
        let path = tmp.path().join(name);
        fs::write(&path, text).unwrap();
        paths.push(path);
    }
    let out = Command::new(&analyze)
        .arg("verify")
        .args(&paths)
        .env("SYSTEMD_LOG_COLOR", "0")
        .output()
        .expect("run systemd-analyze");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    // verify exits 0 even for unknown keys; those are warnings naming our files.
    let ours: Vec<&str> = stderr
        .lines()
        .chain(stdout.lines())
        .filter(|l| {
            l.contains(&*tmp.path().to_string_lossy()) || UNITS.iter().any(|u| l.contains(u))
        })
        .collect();
    assert!(
        out.status.success() && ours.is_empty(),
        "systemd-analyze verify ({}) complained:\n{stderr}\n{stdout}",
        out.status
    );
    if !stderr.trim().is_empty() {
        eprintln!("systemd-analyze verify, about other units:\n{stderr}");
    }
}

#[test]
fn timer_spreads_the_fleet_and_catches_up() {
    let timer = parse(&read_unit("pacfleet-reconcile.timer"));
    let t = &timer["Timer"];
    assert!(
        t.contains_key("OnCalendar") || t.contains_key("OnUnitActiveSec"),
        "the timer needs OnCalendar= or OnUnitActiveSec="
    );
    assert!(!one(&timer, "Timer", "RandomizedDelaySec").is_empty());
    assert_eq!(one(&timer, "Timer", "FixedRandomDelay"), "true");
    assert_eq!(one(&timer, "Timer", "AccuracySec"), "1us");
    assert_eq!(one(&timer, "Timer", "Persistent"), "true");
    assert_eq!(one(&timer, "Timer", "Unit"), "pacfleet-reconcile.service");
    assert_eq!(one(&timer, "Install", "WantedBy"), "timers.target");
}

#[test]
fn services_run_fleetctl_hardened() {
    let reconcile = parse(&read_unit("pacfleet-reconcile.service"));
    assert_eq!(one(&reconcile, "Service", "Type"), "oneshot");
    assert_eq!(
        one(&reconcile, "Service", "ExecStart"),
        "/usr/bin/fleetctl reconcile --config /etc/pacfleet/agent.yaml"
    );
    // Exit 3 (refused) must show as a failed unit.
    assert!(!reconcile["Service"].contains_key("SuccessExitStatus"));
    assert!(
        !reconcile.contains_key("Install"),
        "the timer starts the service; it is not enabled itself"
    );

    let agent = parse(&read_unit("pacfleet-agent.service"));
    assert_eq!(
        one(&agent, "Service", "ExecStart"),
        "/usr/bin/fleetctl agent --config /etc/pacfleet/agent.yaml"
    );
    assert_eq!(
        one(&agent, "Service", "ExecReload"),
        "/bin/kill -HUP $MAINPID"
    );
    assert_eq!(one(&agent, "Unit", "Conflicts"), "pacfleet-reconcile.timer");
    assert_eq!(one(&agent, "Install", "WantedBy"), "multi-user.target");

    for (name, unit) in [("reconcile", &reconcile), ("agent", &agent)] {
        for (key, value) in [
            ("ProtectHome", "yes"),
            ("PrivateTmp", "yes"),
            ("NoNewPrivileges", "yes"),
            ("ProtectControlGroups", "yes"),
            ("RestrictRealtime", "yes"),
            ("LockPersonality", "yes"),
            ("KillMode", "mixed"),
        ] {
            assert_eq!(one(unit, "Service", key), value, "{name}: {key}");
        }
        let service = &unit["Service"];
        // Settings that would break a package transaction (see the comments in the units).
        for forbidden in [
            "ProtectSystem",
            "ProtectKernelModules",
            "ProtectKernelTunables",
            "RestrictSUIDSGID",
            "PrivateDevices",
            "SystemCallArchitectures",
            "MemoryDenyWriteExecute",
            "User",
        ] {
            assert!(
                !service.contains_key(forbidden),
                "{name}: {forbidden}= breaks transactions"
            );
        }
        // An unexpected system call must fail, not kill a transaction halfway.
        assert_eq!(
            one(unit, "Service", "SystemCallErrorNumber"),
            "EPERM",
            "{name}"
        );
        assert_eq!(
            one(unit, "Unit", "After"),
            "network-online.target",
            "{name}"
        );
    }
}
