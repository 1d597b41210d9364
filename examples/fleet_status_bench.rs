//! The `fleetctl fleet status` benchmark (BENCHMARKS.md §6): a fleet of `--hosts` hosts in
//! `--pools` pools, each with a three-wave rollout, and one verified report per host (mostly
//! applied, some pending, failed, stale, with drift), generated in memory; then
//! `fleet_status::summarize` and the three renderings are timed over `--runs` runs, and the
//! median, minimum and maximum of each printed. With `--read`, the reports are also signed,
//! each by its host's own key (named in its Host manifest), and stored as the refs of a bare
//! status repository on disk; then what `fleetctl fleet status` does before summarising is
//! timed too: fetching every pool's refs into a fresh scratch copy and verifying every report
//! (`fleet_reports::read`).
//!
//! ```sh
//! cargo run --release --example fleet_status_bench -- --hosts 10000 --runs 20
//! ```

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use clap::Parser;
use pacfleet::fleet_status::{FleetStatus, summarize};
use pacfleet::manifest::{Fleet, FleetFiles};
use pacfleet::report::{FORMAT, HostReport, ReportOutcome};

/// Times fleet status's summary and renderings on a generated fleet.
#[derive(Debug, Parser)]
#[command(name = "fleet_status_bench")]
pub struct Args {
    /// Hosts (each with a Host manifest and a report).
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    /// Pools the hosts are spread over.
    #[arg(long, default_value_t = 20)]
    pub pools: usize,
    /// Timed runs of each step.
    #[arg(long, default_value_t = 10)]
    pub runs: usize,
    /// Also sign the reports into a status repository and time reading it back.
    #[arg(long)]
    pub read: bool,
}

/// One step's times.
#[derive(Debug)]
pub struct Timing {
    /// The step.
    pub name: &'static str,
    /// Each run's wall time, sorted.
    pub runs: Vec<Duration>,
    /// The size of its output (bytes), for the renderings.
    pub bytes: usize,
}

impl Timing {
    fn median(&self) -> Duration {
        self.runs[self.runs.len() / 2]
    }
}

fn now() -> DateTime<Utc> {
    DateTime::from_timestamp(1_800_000_000, 0).expect("a time")
}

/// A host's key pair, when the reports are signed.
type HostKeys = BTreeMap<String, minisign::KeyPair>;

/// The fleet's manifests and the hosts' reports; with `signed`, a key pair per host, its
/// public half in the host's manifest.
pub fn world(
    hosts: usize,
    pools: usize,
    signed: bool,
) -> (
    Fleet,
    BTreeMap<String, BTreeMap<String, HostReport>>,
    HostKeys,
) {
    let mut keys = HostKeys::new();
    let pools = pools.max(1);
    let mut files = vec![(
        "fleet.yaml".to_owned(),
        "kind: Fleet\nname: bench\n".to_owned(),
    )];
    for p in 0..pools {
        files.push((
            format!("pools/p{p:03}.yaml"),
            format!(
                "kind: Pool\nname: p{p:03}\nhosts: [\"h*\"]\nlabels: {{pool: p{p:03}}}\nrollout:\n  waves:\n    - {{name: canary, labels: {{ring: \"0\"}}}}\n    - {{name: early, percent: 10, soak: 2h}}\n    - {{name: rest, percent: 100, soak: 1h}}\n  failure_budget: 5\n  stale_after: 3d\n"
            ),
        ));
    }
    let mut reports: BTreeMap<String, BTreeMap<String, HostReport>> = BTreeMap::new();
    for i in 0..hosts {
        let (host, pool) = (format!("h{i:06}"), format!("p{:03}", i % pools));
        let ring = if i % 50 == 0 { "0" } else { "1" };
        let key = if signed {
            let kp = minisign::KeyPair::generate_unencrypted_keypair().expect("a key pair");
            let line = format!("key: {}\n", kp.pk.to_base64());
            keys.insert(host.clone(), kp);
            line
        } else {
            String::new()
        };
        files.push((
            format!("hosts/{host}.yaml"),
            format!("kind: Host\nname: {host}\nlabels: {{pool: {pool}, ring: \"{ring}\"}}\n{key}"),
        ));
        let outcome = match i % 100 {
            0..=2 => ReportOutcome::Pending,
            3 => ReportOutcome::Failed,
            _ => ReportOutcome::Applied,
        };
        // One host in 200 has been silent for a week; the others reported in the last hours.
        let hours = if i % 200 == 7 {
            24 * 7
        } else {
            (i % 12) as i64
        };
        let commit = format!("{:040x}", i % pools);
        let report = HostReport {
            format: FORMAT,
            fleet: "bench".into(),
            host: host.clone(),
            pool: pool.clone(),
            wave: 0,
            rollout: Some(commit.clone()),
            target: commit.clone(),
            applied: Some(commit),
            generation: Some(3),
            outcome,
            message: (outcome == ReportOutcome::Failed)
                .then(|| "post_install of app 1.2-1 exited 1".to_owned()),
            health: None,
            drift: if i % 97 == 0 {
                vec!["install vim".into()]
            } else {
                Vec::new()
            },
            held: Vec::new(),
            warnings: Vec::new(),
            needs_reboot: i % 10 == 0,
            sequence: 1,
            at: now() - chrono::Duration::hours(hours),
        };
        reports.entry(pool).or_default().insert(host, report);
    }
    let fleet = Fleet::from_files(&FleetFiles::from_blobs(
        files.into_iter().map(|(p, t)| (p, t.into_bytes())),
    ))
    .map_err(|d| d.to_string())
    .expect("the generated fleet validates");
    (fleet, reports, keys)
}

/// Signs every report with its host's key into a new bare status repository under `dir`.
fn status_repository(
    dir: &std::path::Path,
    reports: &BTreeMap<String, BTreeMap<String, HostReport>>,
    keys: &HostKeys,
) -> std::path::PathBuf {
    let repo = dir.join("status.git");
    for (pool, hosts) in reports {
        for (host, report) in hosts {
            let signed = pacfleet::report::sign(report, &keys[host].sk).expect("sign a report");
            pacfleet::status_repo::store(&repo, &signed, pool, host).expect("store a report");
        }
    }
    // Packed, as a forge keeps a repository (refs in packed-refs, objects in a pack).
    let gc = std::process::Command::new("git")
        .arg("--git-dir")
        .arg(&repo)
        .args(["gc", "--quiet"])
        .status()
        .expect("run git gc");
    assert!(gc.success(), "git gc failed");
    repo
}

fn time(name: &'static str, runs: usize, mut f: impl FnMut() -> usize) -> Timing {
    let mut times = Vec::with_capacity(runs);
    let mut bytes = 0;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        bytes = f();
        times.push(start.elapsed());
    }
    times.sort();
    Timing {
        name,
        runs: times,
        bytes,
    }
}

/// Generates the world and times each step; the status of the last summary, and the timings.
pub fn run(args: &Args) -> (FleetStatus, Vec<Timing>) {
    let (fleet, reports, keys) = world(args.hosts, args.pools, args.read);
    let mut timings = Vec::new();
    if args.read {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let repo = status_repository(dir.path(), &reports, &keys);
        let url = repo.display().to_string();
        let mut round = 0;
        timings.push(time("fetch and verify", args.runs, || {
            round += 1;
            let scratch = dir.path().join(format!("scratch-{round}"));
            let read = pacfleet::fleet_reports::read(&fleet, &url, &scratch)
                .expect("read the status repository");
            assert!(read.rejected.is_empty(), "{:?}", &read.rejected[..1]);
            read.valid.values().map(BTreeMap::len).sum()
        }));
        // Again into a copy that has them all: what a later run of `fleet status` pays.
        let warm = dir.path().join(format!("scratch-{round}"));
        timings.push(time("fetch and verify, again", args.runs, || {
            let read = pacfleet::fleet_reports::read(&fleet, &url, &warm)
                .expect("read the status repository");
            read.valid.values().map(BTreeMap::len).sum()
        }));
        // The two halves: the fetch (git) and reading back and verifying (gix, minisign).
        let remote = pacfleet::status_repo::StatusRemote {
            url: url.clone(),
            ssh: None,
            timeout: pacfleet::fleet_reports::FETCH_TIMEOUT,
            max_fetch_bytes: pacfleet::fleet_reports::MAX_FETCH_BYTES,
        };
        timings.push(time("  of which fetch", args.runs, || {
            round += 1;
            let scratch = dir.path().join(format!("scratch-{round}"));
            pacfleet::status_repo::fetch_all(&remote, &scratch).expect("fetch");
            0
        }));
        let scratch = dir.path().join(format!("scratch-{round}"));
        let key_of = |host: &str| -> Option<pacfleet::keys::Key> {
            let text = fleet.hosts.get(host)?.spec.key.as_deref()?;
            pacfleet::keys::parse_key(host, text).ok()
        };
        timings.push(time("  of which read and verify", args.runs, || {
            let pools = pacfleet::status_repo::read_all(
                &scratch,
                &key_of,
                fleet.name().as_str(),
                &BTreeMap::new(),
            )
            .expect("read");
            pools.values().map(|p| p.valid.len()).sum()
        }));
    }
    let rejected = vec![(
        "p000".to_owned(),
        "h999999".to_owned(),
        "bad-signature".to_owned(),
    )];
    let mut status = summarize(&fleet, &reports, &rejected, now());
    timings.push(time("summarize", args.runs, || {
        status = summarize(&fleet, &reports, &rejected, now());
        status.pools.len()
    }));
    timings.push(time("render text", args.runs, || {
        fleetctl::cli::fleet::render_text(&status, false).len()
    }));
    timings.push(time("render JSON", args.runs, || {
        fleetctl::cli::fleet::render_json(&status).len()
    }));
    timings.push(time("render HTML", args.runs, || {
        fleetctl::cli::fleet::render_html(&status).len()
    }));
    (status, timings)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> ExitCode {
    let args = Args::parse();
    let (status, timings) = run(&args);
    println!(
        "fleet status: {} hosts in {} pools, {} runs each; {} need attention",
        status.host_count(),
        status.pools.len(),
        args.runs.max(1),
        status.attention().len()
    );
    println!("| step | median | min … max | output |");
    println!("|:---|---:|---:|---:|");
    for t in &timings {
        println!(
            "| {} | **{}** | {} … {} | {} |",
            t.name,
            ms(t.median()),
            ms(t.runs[0]),
            ms(*t.runs.last().expect("a run")),
            if t.name == "summarize" {
                "-".to_owned()
            } else if t.bytes > 0 && t.name.contains("verify") {
                format!("{} reports", t.bytes)
            } else {
                format!("{:.1} MiB", t.bytes as f64 / 1_048_576.0)
            }
        );
    }
    ExitCode::SUCCESS
}
