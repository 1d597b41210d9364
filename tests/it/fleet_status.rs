//! `fleetctl fleet status` (docs/contract.md §7): the HTML page as a real browser renders it
//! (Debian's headless chromium), with adversarial strings in the reports, and the command
//! through the binary against a real fleet repository.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use pacfleet::fleet_status::{FleetStatus, summarize};
use pacfleet::manifest::{Fleet, FleetFiles};
use pacfleet::report::{FORMAT, Health, HostReport, ReportOutcome};

use crate::harness::{FleetRepo, fleetctl, run, skip, tempdir};

const FLEET: &str = "kind: Fleet\nname: acme\n";
const WS: &str = "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\nrollout:\n  waves:\n    - {name: canary, hosts: [ws-01]}\n    - {name: rest, percent: 100, soak: 1h}\n  failure_budget: 1\n";
const DB: &str = "kind: Pool\nname: db\nhosts: [\"db-*\"]\n";
const HOSTS: [&str; 5] = ["ws-01", "ws-02", "ws-03", "ws-04", "db-01"];

fn t(h: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).expect("a time")
}

fn manifests() -> Vec<(String, String)> {
    let mut files = vec![
        ("fleet.yaml".to_owned(), FLEET.to_owned()),
        ("pools/ws.yaml".to_owned(), WS.to_owned()),
        ("pools/db.yaml".to_owned(), DB.to_owned()),
    ];
    // Every host has a key, or it could not report (the reports here are verified already, or
    // there are none: one key serves them all).
    let key = minisign::KeyPair::generate_unencrypted_keypair()
        .expect("key")
        .pk
        .to_base64();
    for h in HOSTS {
        files.push((
            format!("hosts/{h}.yaml"),
            format!("kind: Host\nname: {h}\nkey: {key}\n"),
        ));
    }
    files
}

fn report(host: &str, pool: &str, outcome: ReportOutcome, at: i64) -> HostReport {
    HostReport {
        format: FORMAT,
        fleet: "acme".into(),
        host: host.into(),
        pool: pool.into(),
        wave: 0,
        rollout: Some("5f1c0de5f1c0de5f1c0de5f1c0de5f1c0de5f1c0".into()),
        target: "5f1c0de5f1c0de5f1c0de5f1c0de5f1c0de5f1c0".into(),
        applied: Some("5f1c0de5f1c0de5f1c0de5f1c0de5f1c0de5f1c0".into()),
        generation: Some(7),
        outcome,
        message: None,
        health: None,
        drift: Vec::new(),
        held: Vec::new(),
        warnings: Vec::new(),
        needs_reboot: false,
        sequence: 1,
        at: t(at),
    }
}

/// A status with a healthy host, a failed one whose report is full of markup and escape
/// sequences, a pending one, a rejected report and a second pool.
fn adversarial_status() -> FleetStatus {
    let fleet = Fleet::from_files(&FleetFiles::from_blobs(
        manifests().into_iter().map(|(p, t)| (p, t.into_bytes())),
    ))
    .expect("the fixture fleet validates");
    let mut failed = report("ws-02", "ws", ReportOutcome::Failed, 2);
    failed.message = Some(
        "<script>document.body.innerHTML='pwned'</script>\u{1b}[2J\u{1b}]0;title\u{7} \u{202e}gnp.exe"
            .into(),
    );
    failed.warnings = vec!["<img src=x onerror=alert(1)>".into()];
    failed.health = Some(Health {
        passed: false,
        failure: Some("</td></tr></table><script>alert(2)</script>".into()),
    });
    failed.target = "<script>alert(3)</script>".into();
    let mut pending = report("ws-03", "ws", ReportOutcome::Pending, 2);
    pending.message = Some("waits for its wave".into());
    let mut reports: BTreeMap<String, BTreeMap<String, HostReport>> = BTreeMap::new();
    for r in [
        report("ws-01", "ws", ReportOutcome::Applied, 1),
        failed,
        pending,
        report("db-01", "db", ReportOutcome::Converged, 2),
    ] {
        reports
            .entry(r.pool.clone())
            .or_default()
            .insert(r.host.clone(), r);
    }
    let rejected = vec![(
        "ws".to_owned(),
        "ws-04".to_owned(),
        "bad-signature: <script>alert(4)</script>\u{1b}[31m".to_owned(),
    )];
    summarize(&fleet, &reports, &rejected, t(3))
}

/// Runs `cmd` for at most a minute; its output.
fn output_within_a_minute(cmd: &mut Command) -> std::process::Output {
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn chromium");
    let id = child.id();
    let deadline = Instant::now() + Duration::from_secs(60);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    loop {
        if let Ok(out) = rx.try_recv() {
            return out.expect("wait for chromium");
        }
        if Instant::now() > deadline {
            // Only the process we started, by its id.
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            panic!("chromium did not finish within a minute");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn chromium(profile: &Path, args: &[&str], page: &Path) -> std::process::Output {
    output_within_a_minute(
        Command::new("chromium")
            .args([
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--window-size=1200,900",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(args)
            .arg(format!("file://{}", page.display()))
            .current_dir(profile),
    )
}

fn have_chromium() -> bool {
    Command::new("chromium")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The pixels of a PNG as RGB triples, and its size.
fn rgb_pixels(file: &Path) -> (u32, u32, Vec<[u8; 3]>) {
    let mut decoder = png::Decoder::new(std::io::BufReader::new(
        fs::File::open(file).expect("open the screenshot"),
    ));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().expect("the screenshot is a PNG");
    let mut buf = vec![0; reader.output_buffer_size().expect("a buffer size")];
    let info = reader.next_frame(&mut buf).expect("decode the screenshot");
    let samples = info.color_type.samples();
    assert!(
        samples >= 3,
        "a colour screenshot, not {:?}",
        info.color_type
    );
    let pixels = buf[..info.buffer_size()]
        .chunks_exact(samples)
        .map(|p| [p[0], p[1], p[2]])
        .collect();
    (info.width, info.height, pixels)
}

#[test]
fn fleet_status_page_renders_in_headless_chromium_with_nothing_of_the_reports_executed() {
    if !have_chromium() {
        skip(
            "chromium is not installed (apt-get install chromium); the fleet status page is not rendered",
        );
        return;
    }
    let tmp = tempdir();
    let page = tmp.path().join("status.html");
    let html = fleetctl::cli::fleet::render_html(&adversarial_status());
    fs::write(&page, &html).expect("write the page");
    let profile = tmp.path().join("chromium");
    fs::create_dir_all(&profile).expect("mkdir");

    let out = chromium(&profile, &["--dump-dom"], &page);
    assert!(out.status.success(), "chromium --dump-dom: {out:?}");
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(dom.contains("<h1>Fleet acme</h1>"), "{dom}");
    assert_eq!(
        dom.matches("<table class=\"hosts\">").count(),
        2,
        "a table per pool: {dom}"
    );
    assert_eq!(
        dom.matches("<tr class=\"host\">").count(),
        HOSTS.len(),
        "a row per host: {dom}"
    );
    for host in HOSTS {
        assert!(
            dom.contains(&format!("<td class=\"mono\">{host}</td>")),
            "no row for {host}: {dom}"
        );
    }
    // The markup in the reports arrived as text: no element of it exists, and the page was
    // not rewritten by a script.
    let lower = dom.to_lowercase();
    assert!(
        !lower.contains("<script"),
        "a script element came through: {dom}"
    );
    assert!(
        !lower.contains("<img"),
        "an img element came through: {dom}"
    );
    assert!(
        !dom.contains("pwned</body>") && dom.contains("Needs attention"),
        "{dom}"
    );
    assert!(
        dom.contains("&lt;script&gt;document.body.innerHTML='pwned'&lt;/script&gt;"),
        "the message is shown as text: {dom}"
    );
    assert!(
        !dom.contains('\u{1b}') && !dom.contains('\u{202e}') && !dom.contains('\u{7}'),
        "control characters and bidi overrides are shown escaped: {dom}"
    );
    assert!(dom.contains("\\u{1b}[2J"), "{dom}");
    assert!(dom.contains("class=\"outcome bad\">failed<"), "{dom}");
    assert!(dom.contains("class=\"outcome ok\">applied<"), "{dom}");
    assert!(dom.contains("class=\"outcome bad\">rejected<"), "{dom}");

    let shot = tmp.path().join("out.png");
    let arg = format!("--screenshot={}", shot.display());
    let out = chromium(&profile, &[&arg], &page);
    assert!(out.status.success(), "chromium --screenshot: {out:?}");
    let bytes = fs::read(&shot).expect("the screenshot was written");
    assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "not a PNG");
    let (w, h, pixels) = rgb_pixels(&shot);
    assert_eq!((w, h), (1200, 900));
    let first = pixels[0];
    assert!(
        pixels.iter().any(|p| *p != first),
        "the screenshot is one colour"
    );
    // The colour-coded cells are there: the stylesheet's green and red backgrounds.
    let near = |p: &[u8; 3], c: [u8; 3]| p.iter().zip(c).all(|(a, b)| a.abs_diff(b) <= 4);
    let count = |c: [u8; 3]| pixels.iter().filter(|p| near(p, c)).count();
    let (green, red) = (count([0xda, 0xfb, 0xe1]), count([0xff, 0xeb, 0xe9]));
    assert!(green > 200, "no green (ok) cells: {green} pixels");
    assert!(red > 200, "no red (bad) cells: {red} pixels");
}

fn fleet_repo(tmp: &Path) -> FleetRepo {
    let fleet = FleetRepo::new(tmp);
    let files = manifests();
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    fleet.commit_unsigned("fleet", &refs);
    // An empty status repository: no host has reported yet.
    fleet.git(&[
        "init",
        "-q",
        "--bare",
        &status_repo(&fleet.dir).display().to_string(),
    ]);
    fleet
}

/// The status repository beside the fleet repository `repo`.
fn status_repo(repo: &Path) -> std::path::PathBuf {
    repo.parent().expect("a parent").join("status.git")
}

fn status_cmd(repo: &Path, extra: &[&str]) -> (i32, String, String) {
    run(fleetctl()
        .args(["fleet", "status", "--status-repo"])
        .arg(status_repo(repo))
        .arg("--repo")
        .arg(repo)
        .env(
            "XDG_CACHE_HOME",
            repo.parent().expect("a parent").join("cache"),
        )
        .args(extra))
}

#[test]
fn fleet_status_reads_the_fleet_at_head_and_renders_every_format() {
    let tmp = tempdir();
    let fleet = fleet_repo(tmp.path());
    // An uncommitted change in the work tree is not what the hosts see: HEAD is read.
    fs::write(
        fleet.dir.join("pools/extra.yaml"),
        "kind: Pool\nname: extra\n",
    )
    .expect("write");

    let (code, out, err) = status_cmd(&fleet.dir, &[]);
    assert_eq!(code, 0, "no reports, nothing needs attention: {out}{err}");
    assert!(out.starts_with("fleet acme: 2 pools, 5 hosts"), "{out}");
    assert!(out.contains("all healthy"), "{out}");
    assert!(out.contains("pool ws  no rollout reported yet"), "{out}");
    assert!(
        out.contains("wave 1 of 2 canary: no rollout reported yet"),
        "{out}"
    );
    assert!(!out.contains("extra") && !out.contains('\u{1b}'), "{out}");

    let (code, out, err) = status_cmd(&fleet.dir, &["--json", "--pool", "ws"]);
    assert_eq!(code, 0, "{err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("--json is JSON");
    assert_eq!(v["fleet"], "acme");
    assert_eq!(v["needs_attention"], false);
    assert_eq!(v["pools"].as_array().map(Vec::len), Some(1));
    assert_eq!(v["pools"][0]["waves"][1]["name"], "rest");
    assert_eq!(v["pools"][0]["waves"][0]["hosts"][0]["report"], "none");

    let page: PathBuf = tmp.path().join("site/status.html");
    fs::create_dir_all(page.parent().expect("parent")).expect("mkdir");
    let (code, out, err) = status_cmd(&fleet.dir, &["--html", page.to_str().expect("UTF-8")]);
    assert_eq!((code, out.as_str()), (0, ""), "{err}");
    let html = fs::read_to_string(&page).expect("the page was written");
    assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<h1>Fleet acme</h1>"));
    let mode = fs::metadata(&page).expect("stat").permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "the page is readable by a web server");
    let leftovers: Vec<_> = fs::read_dir(page.parent().expect("parent"))
        .expect("read dir")
        .collect();
    assert_eq!(leftovers.len(), 1, "no temporary file left: {leftovers:?}");

    let (code, _, err) = status_cmd(&fleet.dir, &["--pool", "nope"]);
    assert_eq!(code, 2);
    assert!(
        err.contains("--pool nope: the fleet has no pool `nope`"),
        "{err}"
    );
    assert!(err.contains("pools: db, ws"), "{err}");

    let (code, _, err) = status_cmd(&fleet.dir, &["--json", "--html", "x.html"]);
    assert_eq!(code, 2, "--json and --html are exclusive: {err}");
}

#[test]
fn fleet_status_refuses_a_fleet_that_does_not_validate_and_a_directory_without_git() {
    let tmp = tempdir();
    let fleet = fleet_repo(tmp.path());
    fleet.commit_unsigned(
        "broken",
        &[("pools/ws.yaml", "kind: Pool\nname: ws\nhostz: []\n")],
    );
    let (code, out, err) = status_cmd(&fleet.dir, &[]);
    assert_eq!((code, out.as_str()), (2, ""), "{err}");
    assert!(err.contains("does not validate"), "{err}");
    assert!(err.contains("pools/ws.yaml"), "{err}");

    let plain = tmp.path().join("plain");
    fs::create_dir_all(&plain).expect("mkdir");
    let (code, _, err) = status_cmd(&plain, &[]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("cannot read the fleet at HEAD of"), "{err}");
}
