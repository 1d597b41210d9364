//! The `fleetctl fleet status` benchmark (BENCHMARKS.md §6): a fleet of `--hosts` hosts in
//! `--pools` pools, each with a three-wave rollout, and one verified report per host (mostly
//! applied, some pending, failed, stale, with drift), generated in memory; then
//! `fleet_status::summarize` and the three renderings are timed over `--runs` runs, and the
//! median, minimum and maximum of each printed. What fetching and verifying the reports costs
//! is `status_repo`'s, not measured here.
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

/// The fleet's manifests and the hosts' reports.
pub fn world(
    hosts: usize,
    pools: usize,
) -> (Fleet, BTreeMap<String, BTreeMap<String, HostReport>>) {
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
        files.push((
            format!("hosts/{host}.yaml"),
            format!("kind: Host\nname: {host}\nlabels: {{pool: {pool}, ring: \"{ring}\"}}\n"),
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
    (fleet, reports)
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
    let (fleet, reports) = world(args.hosts, args.pools);
    let rejected = vec![(
        "p000".to_owned(),
        "h999999".to_owned(),
        "bad-signature".to_owned(),
    )];
    let mut status = summarize(&fleet, &reports, &rejected, now());
    let mut timings = vec![time("summarize", args.runs, || {
        status = summarize(&fleet, &reports, &rejected, now());
        status.pools.len()
    })];
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
            } else {
                format!("{:.1} MiB", t.bytes as f64 / 1_048_576.0)
            }
        );
    }
    ExitCode::SUCCESS
}
