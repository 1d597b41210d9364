//! The benchmarks' smoke run: every benchmark of `bench/run.sh` (see BENCHMARKS.md) at toy
//! size, each command once, so CI knows the generator and the driver still work and that each
//! benchmarked operation ends where it should. No timing is asserted here: speed targets are
//! measured by the full run and recorded in BENCHMARKS.md.

use std::path::Path;
use std::process::Command;

use crate::harness::tempdir;

// The generator is an example binary (`cargo run --example bench_world`); its code is compiled
// in here too, so this test needs no second build.
#[allow(dead_code)]
#[path = "../../examples/bench_world.rs"]
mod bench_world;

// The fleet status benchmark (BENCHMARKS.md §6) is an example binary too.
#[allow(dead_code)]
#[path = "../../examples/fleet_status_bench.rs"]
mod fleet_status_bench;

#[test]
fn fleet_status_bench_runs_at_toy_size() {
    let (status, timings) = fleet_status_bench::run(&fleet_status_bench::Args {
        hosts: 120,
        pools: 3,
        runs: 1,
        read: true,
    });
    assert_eq!((status.host_count(), status.pools.len()), (120, 3));
    let steps: Vec<&str> = timings.iter().map(|t| t.name).collect();
    assert_eq!(
        steps,
        [
            "fetch and verify",
            "fetch and verify, again",
            "  of which fetch",
            "  of which read and verify",
            "summarize",
            "render text",
            "render JSON",
            "render HTML"
        ]
    );
    // Every signed report came back verified.
    assert_eq!(timings[0].bytes, 120);
    // The world is what BENCHMARKS.md says: every wave has hosts, a few fail, a few are stale.
    let pool = &status.pools[0];
    assert!(
        pool.waves.iter().all(|w| !w.hosts.is_empty()),
        "{:?}",
        pool.waves
    );
    assert!(
        status
            .attention()
            .iter()
            .any(|a| a.kind == pacfleet::fleet_status::AttentionKind::Stale)
    );
    assert!(
        status
            .attention()
            .iter()
            .any(|a| a.kind == pacfleet::fleet_status::AttentionKind::Failed)
    );
}

fn arg(p: &Path) -> &str {
    p.to_str().expect("UTF-8 path")
}

#[test]
fn bench_driver_runs_every_benchmark_at_toy_size() {
    let tmp = tempdir();
    let world = tmp.path().join("world");
    let host = world.join("host");
    bench_world::run([
        "bench_world",
        "host-world",
        "--dir",
        arg(&host),
        "--installed",
        "30",
        "--apply",
        "10",
        "--files",
        "3",
    ])
    .expect("generate the host world");
    let scale = world.join("scale-60");
    bench_world::run([
        "bench_world",
        "fleet",
        "--dir",
        arg(&scale),
        "--hosts",
        "60",
        "--pools",
        "6",
        "--packages",
        "300",
        "--sets",
        "10",
        "--touch",
        "2",
    ])
    .expect("generate the scale fleet");
    let pass = world.join("pass-60");
    bench_world::run([
        "bench_world",
        "fleet",
        "--dir",
        arg(&pass.join("fleet")),
        "--hosts",
        "60",
        "--pools",
        "6",
        "--packages",
        "300",
        "--sets",
        "10",
        "--touch",
        "2",
        "--sign",
        arg(&pass.join("keys")),
        "--chain",
        "5",
    ])
    .expect("generate the signed fleet");

    // The peers benchmark's world, served by a counting mirror (in this process: the
    // example binary bench/run.sh starts otherwise is not built for the tests).
    let peers = world.join("peers");
    bench_world::run([
        "bench_world",
        "host-world",
        "--dir",
        arg(&peers),
        "--installed",
        "2",
        "--apply",
        "10",
        "--files",
        "1",
        "--random-bytes",
        "32768",
    ])
    .expect("generate the peers world");
    let mirror = pacfleet_support::mirror::Mirror::start(&peers.join("repo/bench")).unwrap();

    // The generated worlds are what the benchmarks claim.
    let repo = host.join("repo/bench");
    let packages = std::fs::read_dir(&repo)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".pkg.tar.zst")
        })
        .count();
    assert_eq!(packages, 40, "30 installed + 10 to apply");
    assert_eq!(std::fs::read_dir(scale.join("hosts")).unwrap().count(), 60);

    let out = tmp.path().join("out");
    let output = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/run.sh"))
        .args(["--smoke", "--world", arg(&world), "--out", arg(&out)])
        .args([
            "--fleetctl",
            env!("CARGO_BIN_EXE_fleetctl"),
            "--hosts",
            "60",
        ])
        .args(["--passes", "2", "--interval", "200ms"])
        .args(["--mirror", &mirror.url])
        .env_remove("RUST_LOG")
        .output()
        .expect("run bench/run.sh");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "bench/run.sh --smoke failed ({}):\n{stderr}",
        output.status
    );
    let summary = std::fs::read_to_string(out.join("summary.md")).expect("summary.md");
    for section in [
        "### noop",
        "### apply",
        "### scale",
        "### pass-60",
        "### agent",
        "### peers",
    ] {
        assert!(summary.contains(section), "no {section} in:\n{summary}");
    }
    for command in [
        "`fleetctl reconcile`: exit 0",
        "`floor: git fetch + pacman -Q`: exit 0",
        "`fleetctl reconcile (install)`: exit 0",
        "`fleetctl reconcile (remove)`: exit 0",
        "`pacman -Rs (remove)`: exit 0",
        "`validate (60 hosts)`: exit 0",
        "`diff a..b (60 hosts)`: exit 1",
        "`no-op pass (60 hosts)`: exit 0",
        "`pass after a change, a..b (60 hosts)`: exit 0",
        "`new host's first pass (60 hosts)`: exit 0",
        "`catch up 5 signed commits (60 hosts)`: exit 0",
        "`fleetctl sign --renew, 7 notes (60 hosts)`: exit 0",
    ] {
        assert!(summary.contains(command), "no {command:?} in:\n{summary}");
    }
    // The site's change took each package file from the mirror once.
    assert!(summary.contains("with = 1.00 × one host's"), "{summary}");
    // Two agent passes, each sampled.
    assert!(summary.contains("\n| 2 | "), "{summary}");
}
