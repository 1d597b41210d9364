//! The worlds `bench/run.sh` measures (see BENCHMARKS.md), generated deterministically so that
//! anyone can rerun the numbers:
//!
//! ```sh
//! cargo run --release --example bench_world -- host-world --dir W [--installed 1500] [--apply 200]
//! cargo run --release --example bench_world -- fleet --dir W/scale-10000 --hosts 10000
//! ```
//!
//! `host-world` writes, under `--dir`:
//!
//! - `repo/bench/`: a sync repository (`bench.db`) of synthetic packages: `--installed` of them
//!   that the host ends up with (4/5 applications `appNNNN`, each depending on two of the 1/5
//!   libraries `libNNNN`), and `--apply` more for the apply benchmark (4/5 `newappNNNN`, each
//!   depending on one `newlibNNNN` and one base library, so pruning must keep the shared ones).
//!   Every package carries `--files` files (one in `usr/bin`, the rest under `usr/share`).
//! - `git/fleet/`: the fleet repository, every commit signed with `keys/ops.key`
//!   (hosts trust `keys/ops.pub`). Branches: `base` (the base applications in sets of 100, one
//!   floating pool `bench` for `bench-*` with `prune: true`), `install` (`base` plus the set
//!   `apply`, the new applications) and `main` (`install`, then the set dropped again).
//! - `hosts/fleet/` and `hosts/pacman/`: two empty hosts laid out like the integration tests'
//!   `HostDir` (a target root with an empty local database, a pacman.conf for it with the
//!   repository as `file://`, a state dir): one driven by `fleetctl`, one by `pacman`. Unlike
//!   the tests' hosts they check no signatures (`SigLevel = Never`; see `host_dir` for why).
//!
//! `fleet` writes a large fleet repository for `validate` and `diff`: `--hosts` hosts (one Host
//! manifest each) spread over `--pools` pools, `--packages` packages in `--sets` sets (a tenth
//! of the sets include another), `--generations` generations per pool (even pools pinned to the
//! last one, odd pools floating), committed and tagged `a`; then a commit tagged `b` that
//! changes `--touch` sets (each drops one package and adds a spare one).

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context, Result, bail, ensure};
use clap::{Parser, Subcommand};
use pacfleet_support::host::{HostLayout, PacmanConf, SigLevel};
use pacfleet_support::synth::{self, SynthPackage};

#[derive(Debug, Parser)]
#[command(
    name = "bench_world",
    about = "Generate the worlds bench/run.sh measures"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// A package repository, a signed fleet repository and two empty hosts.
    HostWorld(HostWorld),
    /// A large fleet repository with two revisions, for `validate` and `diff`.
    Fleet(ScaleFleet),
}

#[derive(Debug, Clone, clap::Args)]
pub struct HostWorld {
    /// Where to write (created; must be empty or missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Packages the host has after the first reconcile (applications and their libraries).
    #[arg(long, default_value_t = 1500)]
    pub installed: usize,
    /// Packages the apply benchmark installs and removes.
    #[arg(long, default_value_t = 200)]
    pub apply: usize,
    /// Files in each package.
    #[arg(long, default_value_t = 8)]
    pub files: usize,
    /// Size of each file in bytes.
    #[arg(long, default_value_t = 2048)]
    pub file_size: usize,
    /// Bytes of incompressible data each package carries besides (one more file), so that
    /// its package file is about this big (the peers benchmark counts bytes; 0: none).
    #[arg(long, default_value_t = 0)]
    pub random_bytes: usize,
}

#[derive(Debug, Clone, clap::Args)]
pub struct ScaleFleet {
    /// Where to write the fleet repository (created; must be empty or missing).
    #[arg(long)]
    pub dir: PathBuf,
    /// Hosts, each with a Host manifest.
    #[arg(long, default_value_t = 10_000)]
    pub hosts: usize,
    /// Pools (hosts are spread evenly over them).
    #[arg(long, default_value_t = 200)]
    pub pools: usize,
    /// Packages, spread evenly over the sets.
    #[arg(long, default_value_t = 5_000)]
    pub packages: usize,
    /// Package sets.
    #[arg(long, default_value_t = 100)]
    pub sets: usize,
    /// Generations per pool.
    #[arg(long, default_value_t = 2)]
    pub generations: usize,
    /// Sets the second revision changes.
    #[arg(long, default_value_t = 10)]
    pub touch: usize,
    /// Also a host for `fleetctl reconcile` to play: pool `bench` (hosts `bench-*`, floating,
    /// nothing to install) and `hosts/bench-01.yaml`; and a minisign key pair `ops.pub`/`ops.key`
    /// in this directory that signs `a` (sequence 1) and `b` (sequence 2). For the host-pass
    /// benchmarks.
    #[arg(long)]
    pub sign: Option<PathBuf>,
    /// With `--sign`: a branch `chain` of this many more commits after `b`, each changing
    /// `pools/pool001.yaml` (a comment) and signed (sequences 3, 4, …), for catching up.
    #[arg(long, default_value_t = 0)]
    pub chain: usize,
}

fn main() -> ExitCode {
    match run(std::env::args_os()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_world: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Parses `args` (the first is the program name) and generates.
pub fn run<I, T>(args: I) -> Result<()>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    match Cli::try_parse_from(args)?.cmd {
        Cmd::HostWorld(w) => host_world(&w),
        Cmd::Fleet(f) => scale_fleet(&f),
    }
}

// ---------------------------------------------------------------------------------------------
// host-world

/// The name of the host the `fleet` host directory plays.
pub const HOSTNAME: &str = "bench-01";

/// Names of the packages `host_world` makes: (base applications, base libraries, new
/// applications, new libraries).
pub fn package_names(w: &HostWorld) -> (Vec<String>, Vec<String>, Vec<String>, Vec<String>) {
    let libs = (w.installed / 5).max(1);
    let apps = w.installed.saturating_sub(libs).max(1);
    let new_libs = (w.apply / 5).max(1);
    let new_apps = w.apply.saturating_sub(new_libs).max(1);
    let names = |prefix: &str, n: usize| (0..n).map(|i| format!("{prefix}{i:04}")).collect();
    (
        names("app", apps),
        names("lib", libs),
        names("newapp", new_apps),
        names("newlib", new_libs),
    )
}

fn payload(w: &HostWorld, name: &str, version: &str) -> SynthPackage {
    let (files, size) = (w.files, w.file_size);
    let mut pkg = SynthPackage::new(name, version).description(format!("bench package {name}"));
    if w.random_bytes > 0 {
        pkg = pkg.file(
            format!("usr/share/{name}/random"),
            pacfleet_support::synth::incompressible(name, w.random_bytes),
        );
    }
    if files == 0 {
        return pkg;
    }
    let filler = |i: usize| {
        let line = format!("{name} {version} file {i}\n");
        line.repeat(size / line.len() + 1).into_bytes()[..size].to_vec()
    };
    pkg = pkg.file(format!("usr/bin/{name}"), {
        let mut script = format!("#!/bin/sh\necho {name} {version}\n").into_bytes();
        script.resize(size.max(script.len()), b'#');
        script
    });
    for i in 1..files.saturating_sub(1) {
        pkg = pkg.file(format!("usr/share/{name}/data{i:02}"), filler(i));
    }
    pkg
}

/// Writes the host world (see the module docs).
pub fn host_world(w: &HostWorld) -> Result<()> {
    ensure!(w.installed >= 2, "--installed must be at least 2");
    ensure!(w.apply >= 2, "--apply must be at least 2");
    empty_dir(&w.dir)?;
    let dir = w.dir.canonicalize()?;
    let (apps, libs, new_apps, new_libs) = package_names(w);
    const VERSION: &str = "1.0-1";

    // The package repository.
    let repo_dir = dir.join("repo/bench");
    let mut pkgs = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        let mut p = payload(w, app, VERSION);
        let (a, b) = (i % libs.len(), (i * 7 + 1) % libs.len());
        p = p.depends(libs[a].clone());
        if b != a {
            p = p.depends(libs[b].clone());
        }
        pkgs.push(p);
    }
    for lib in libs.iter().chain(&new_libs) {
        pkgs.push(payload(w, lib, VERSION));
    }
    for (i, app) in new_apps.iter().enumerate() {
        pkgs.push(
            payload(w, app, VERSION)
                .depends(new_libs[i % new_libs.len()].clone())
                .depends(libs[(i * 3) % libs.len()].clone()),
        );
    }
    let files = pkgs
        .iter()
        .map(|p| synth::build_package(p, &repo_dir))
        .collect::<Result<Vec<_>, _>>()?;
    synth::write_repo(&repo_dir, "bench", &files)?;

    // The fleet repository: base, install, main.
    let fleet = dir.join("git/fleet");
    let (_public, secret) = keypair(&dir.join("keys"), "ops")?;
    git_init(&fleet)?;
    let mut manifests: Vec<(String, String)> =
        vec![("fleet.yaml".into(), "kind: Fleet\nname: bench\n".into())];
    let mut set_names = Vec::new();
    for (n, chunk) in apps.chunks(100).enumerate() {
        let name = format!("base-{n:02}");
        manifests.push((format!("packages/{name}.yaml"), set_yaml(&name, &[], chunk)));
        set_names.push(name);
    }
    manifests.push(("pools/bench.yaml".into(), pool_yaml("bench", &set_names)));
    write_files(&fleet, &manifests)?;
    let base = commit(&fleet, "base: the host's packages")?;
    sign(&fleet, &base, &secret)?;

    let mut with_apply = set_names.clone();
    with_apply.push("apply".into());
    write_files(
        &fleet,
        &[
            (
                "packages/apply.yaml".into(),
                set_yaml("apply", &[], &new_apps),
            ),
            ("pools/bench.yaml".into(), pool_yaml("bench", &with_apply)),
        ],
    )?;
    let install = commit(&fleet, "apply: install the new applications")?;
    sign(&fleet, &install, &secret)?;

    fs::remove_file(fleet.join("packages/apply.yaml"))?;
    write_files(
        &fleet,
        &[("pools/bench.yaml".into(), pool_yaml("bench", &set_names))],
    )?;
    let remove = commit(&fleet, "apply: drop the new applications again")?;
    sign(&fleet, &remove, &secret)?;
    git(&fleet, &["branch", "base", &base])?;
    git(&fleet, &["branch", "install", &install])?;
    // `window`: `install` with the pool's window closed (open one minute a year), for the
    // peers benchmark's prefetch (the change pending, then applied with --ignore-window).
    git(&fleet, &["checkout", "-q", "-b", "window", &install])?;
    let mut closed = pool_yaml("bench", &with_apply);
    closed.push_str("window: {cron: \"0 0 0 1 1 *\", duration: 1m}\n");
    write_files(&fleet, &[("pools/bench.yaml".into(), closed)])?;
    let window = commit(&fleet, "apply, in a window that is closed now")?;
    sign(&fleet, &window, &secret)?;
    git(&fleet, &["checkout", "-q", "main"])?;

    // The hosts.
    for name in ["fleet", "pacman"] {
        host_dir(&dir.join("hosts").join(name), name, &repo_dir)?;
    }
    println!(
        "host world in {}: {} packages installed ({} applications, {} libraries), {} to apply; fleet commits base {} install {} main {}",
        dir.display(),
        apps.len() + libs.len(),
        apps.len(),
        libs.len(),
        new_apps.len() + new_libs.len(),
        &base[..12],
        &install[..12],
        &remove[..12]
    );
    Ok(())
}

fn set_yaml(name: &str, include: &[String], packages: &[String]) -> String {
    let mut out = format!("kind: PackageSet\nname: {name}\n");
    if !include.is_empty() {
        let _ = writeln!(out, "include: [{}]", include.join(", "));
    }
    out.push_str("packages:\n");
    for p in packages {
        let _ = writeln!(out, "  - {p}");
    }
    out
}

fn pool_yaml(name: &str, sets: &[String]) -> String {
    format!(
        "kind: Pool\nname: {name}\nhosts: [\"bench-*\"]\npackage_sets: [{}]\nprune: true\n",
        sets.join(", ")
    )
}

/// A host directory like the integration tests' `HostDir` (`pacfleet_support::host`'s layout,
/// keyring in `gnupg/`): `root/` with an empty local database, `pacman.conf` for it
/// (repository `bench` as `file://`), `gnupg/`, `hooks/` and `state/`.
fn host_dir(base: &Path, name: &str, repo_dir: &Path) -> Result<()> {
    let layout = HostLayout::new(base);
    layout.create()?;
    // Unlike the integration tests' hosts (Arch's `SigLevel = Required DatabaseOptional`, signed
    // packages), the bench world checks no signatures and its packages are unsigned. Signing
    // would be cheap (one gpg process per package, at most 5.5 ms: under 10 s for the 1,700
    // packages of the full world), but checking is not: libalpm's gpgme check costs about
    // 11 ms per package (`pacman -S` of 300 packages: 3.6 s checked, 0.29 s not), the same for
    // pacman and fleetctl, and would bury the overhead of pacfleet's own that BENCHMARKS.md
    // measures. BENCHMARKS.md compares fleetctl with pacman under this same SigLevel.
    layout.write_pacman_conf(&PacmanConf {
        title: format!("bench host {name}"),
        siglevel: SigLevel::Never {
            why: "bench world: unsigned packages, so that libalpm's gpgme check (about 11 ms a \
                  package, the same for pacman and fleetctl) does not bury what BENCHMARKS.md \
                  measures"
                .into(),
        },
        disable_download_timeout: true,
        repos: vec![("bench".to_owned(), format!("file://{}", repo_dir.display()))],
    })?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// fleet (scale)

/// Writes the scale fleet (see the module docs). Returns nothing; the tags `a` and `b` are the
/// two revisions.
pub fn scale_fleet(f: &ScaleFleet) -> Result<()> {
    ensure!(
        f.pools >= 1 && f.sets >= 3,
        "need at least 1 pool and 3 sets"
    );
    ensure!(f.packages >= f.sets, "need at least one package per set");
    ensure!(f.touch <= f.sets, "--touch must not exceed --sets");
    ensure!(f.generations >= 1, "need at least one generation per pool");
    empty_dir(&f.dir)?;
    git_init(&f.dir)?;
    let dir = f.dir.canonicalize()?;
    let out = ScaleContent::new(f);
    out.write(&dir, false)?;
    let a = commit(&dir, "scale fleet")?;
    git(&dir, &["tag", "a", &a])?;
    out.write(&dir, true)?;
    let b = commit(&dir, &format!("touch {} sets", f.touch))?;
    git(&dir, &["tag", "b", &b])?;
    if let Some(keys) = &f.sign {
        let (_public, secret) = keypair(keys, "ops")?;
        let sk = pacfleet::trust::load_secret_key(&secret, None)?;
        sign_chain(&dir, "scale", &[a.clone(), b.clone()], 1, &sk)?;
        git(&dir, &["branch", "rev-a", &a])?;
        if f.chain > 0 {
            let tips = chain(&dir, &b, f.chain)?;
            sign_chain(&dir, "scale", &tips, 3, &sk)?;
        }
    } else {
        ensure!(f.chain == 0, "--chain needs --sign");
    }
    // Packed, as any clone and any repository `git gc --auto` has run in is: `diff` reads
    // the trees of both revisions, and tens of thousands of loose objects would measure the
    // file system instead.
    git(&dir, &["gc", "--quiet"])?;
    println!(
        "fleet in {}: {} hosts, {} pools, {} packages in {} sets, {} generations per pool; revisions a {} and b {}",
        dir.display(),
        f.hosts,
        f.pools,
        f.packages,
        f.sets,
        f.generations,
        &a[..12],
        &b[..12]
    );
    Ok(())
}

/// Everything of the scale fleet that is computed, not written.
struct ScaleContent<'a> {
    f: &'a ScaleFleet,
    /// Packages per set (before the touch).
    members: Vec<Vec<String>>,
    /// Includes per set.
    includes: Vec<Vec<usize>>,
    /// Spare packages: the first half for hosts, the second half added by the touch; every
    /// generation locks them all.
    spares: Vec<String>,
}

impl<'a> ScaleContent<'a> {
    fn new(f: &'a ScaleFleet) -> Self {
        let per_set = f.packages / f.sets;
        let members = (0..f.sets)
            .map(|s| {
                let end = if s + 1 == f.sets {
                    f.packages
                } else {
                    (s + 1) * per_set
                };
                (s * per_set..end).map(|p| format!("p{p:05}")).collect()
            })
            .collect();
        // Every tenth set includes the one before it: no cycles, includes resolved.
        let includes = (0..f.sets)
            .map(|s| if s % 10 == 9 { vec![s - 1] } else { Vec::new() })
            .collect();
        let spares = (0..(2 * f.touch).max(2))
            .map(|i| format!("spare{i:03}"))
            .collect();
        ScaleContent {
            f,
            members,
            includes,
            spares,
        }
    }

    fn set_name(s: usize) -> String {
        format!("set{s:03}")
    }

    fn pool_name(p: usize) -> String {
        format!("pool{p:03}")
    }

    /// The sets a pool uses directly: three, spread over all sets.
    fn pool_sets(&self, p: usize) -> Vec<usize> {
        let n = self.f.sets;
        let mut sets = vec![p % n, (p + n / 3) % n, (p + 2 * n / 3) % n];
        sets.dedup();
        sets
    }

    /// The touched sets: every (sets / touch)-th.
    fn touched(&self) -> Vec<usize> {
        if self.f.touch == 0 {
            return Vec::new();
        }
        let step = self.f.sets / self.f.touch;
        (0..self.f.touch).map(|i| i * step).collect()
    }

    fn set_members(&self, s: usize, touched: bool) -> Vec<String> {
        let mut m = self.members[s].clone();
        if touched && let Some(i) = self.touched().iter().position(|&t| t == s) {
            m.remove(0);
            m.push(self.spares[self.spares.len() / 2 + i % (self.spares.len() / 2)].clone());
        }
        m
    }

    /// Every package a pool's sets name, with includes, both revisions (so one lock serves
    /// both), plus every spare.
    fn pool_packages(&self, p: usize) -> Vec<String> {
        let mut out = std::collections::BTreeSet::new();
        let mut todo = self.pool_sets(p);
        let mut seen = std::collections::BTreeSet::new();
        while let Some(s) = todo.pop() {
            if !seen.insert(s) {
                continue;
            }
            out.extend(self.members[s].iter().cloned());
            todo.extend(self.includes[s].iter().copied());
        }
        out.extend(self.spares.iter().cloned());
        out.into_iter().collect()
    }

    fn write(&self, dir: &Path, touched: bool) -> Result<()> {
        let f = self.f;
        let mut files: Vec<(String, String)> = vec![(
            "fleet.yaml".into(),
            "kind: Fleet\nname: scale\narchive: https://archive.example.invalid\n".into(),
        )];
        if f.sign.is_some() && !touched {
            files.push((
                "pools/bench.yaml".into(),
                "kind: Pool\nname: bench\nhosts: [\"bench-*\"]\n".into(),
            ));
            files.push((
                format!("hosts/{HOSTNAME}.yaml"),
                format!("kind: Host\nname: {HOSTNAME}\nlabels: {{rack: r0}}\n"),
            ));
        }
        for s in 0..f.sets {
            let include: Vec<String> = self.includes[s]
                .iter()
                .map(|&i| Self::set_name(i))
                .collect();
            files.push((
                format!("packages/{}.yaml", Self::set_name(s)),
                set_yaml(&Self::set_name(s), &include, &self.set_members(s, touched)),
            ));
        }
        for p in 0..f.pools {
            let name = Self::pool_name(p);
            let sets: Vec<String> = self.pool_sets(p).into_iter().map(Self::set_name).collect();
            let mut pool = format!(
                "kind: Pool\nname: {name}\nhosts: [\"h{p:03}-*\"]\npackage_sets: [{}]\nprune: true\n",
                sets.join(", ")
            );
            if p % 2 == 0 {
                let _ = writeln!(pool, "generation: {}", f.generations);
            } else {
                pool.push_str("window: {cron: \"0 0 18 * * Mon-Fri\", duration: 3h}\n");
            }
            files.push((format!("pools/{name}.yaml"), pool));
            if touched {
                continue; // generations do not change
            }
            let packages = self.pool_packages(p);
            for g in 1..=f.generations {
                let mut text = format!(
                    "kind: Generation\npool: {name}\nnumber: {g}\nsnapshot: 2026-11-{:02}\npackages:\n",
                    g.min(28)
                );
                for (i, pkg) in packages.iter().enumerate() {
                    let _ = writeln!(text, "  {pkg}: {{version: 1.{}-{g}}}", i % 7);
                }
                files.push((format!("generations/{name}/{g}.yaml"), text));
            }
        }
        if !touched {
            let half = self.spares.len() / 2;
            for h in 0..f.hosts {
                let pool = h % f.pools;
                let name = format!("h{pool:03}-{:06}", h / f.pools);
                files.push((
                    format!("hosts/{name}.yaml"),
                    format!(
                        "kind: Host\nname: {name}\nlabels: {{rack: r{}, room: lab-{}}}\npackages: [{}]\n",
                        h % 40,
                        h % 7,
                        self.spares[h % half]
                    ),
                ));
            }
        }
        write_files(dir, &files)
    }
}

/// `count` commits on a new branch `chain` after `base`, each appending a comment to
/// `pools/pool001.yaml`, written by `git fast-import` (one pack, seconds for thousands).
/// Returns their ids, oldest first.
fn chain(dir: &Path, base: &str, count: usize) -> Result<Vec<String>> {
    let pool = git(dir, &["show", &format!("{base}:pools/pool001.yaml")])? + "\n";
    let mut stream = String::new();
    let mut text = pool;
    for i in 0..count {
        let _ = writeln!(text, "# change {i}");
        let message = format!("chain commit {i}\n");
        let _ = write!(
            stream,
            "commit refs/heads/chain\ncommitter Bench Operator <bench@example.invalid> {} +0000\ndata {}\n{message}",
            1_795_165_200 + i,
            message.len()
        );
        if i == 0 {
            let _ = writeln!(stream, "from {base}");
        }
        let _ = write!(
            stream,
            "M 100644 inline pools/pool001.yaml\ndata {}\n{text}\n",
            text.len()
        );
    }
    fast_import(dir, &stream)?;
    let ids = git(dir, &["rev-list", "--reverse", &format!("{base}..chain")])?;
    let ids: Vec<String> = ids.lines().map(str::to_owned).collect();
    ensure!(
        ids.len() == count,
        "fast-import wrote {} commits",
        ids.len()
    );
    Ok(ids)
}

/// Signs `commits` with `sk`, sequences `first`, `first + 1`, …, in one notes commit written by
/// `git fast-import` (as `fleetctl sign` would, one by one, for this fleet).
fn sign_chain(
    dir: &Path,
    fleet: &str,
    commits: &[String],
    first: u64,
    sk: &minisign::SecretKey,
) -> Result<()> {
    use pacfleet::trust::{Note, Statement};
    let pk = minisign::PublicKey::from_secret_key(sk)?;
    let expires = chrono::Utc::now() + chrono::Duration::days(365);
    let has_notes = git(dir, &["rev-parse", "-q", "--verify", "refs/notes/pacfleet"]).is_ok();
    let message = "bench: sign\n";
    let mut stream = format!(
        "commit refs/notes/pacfleet\ncommitter Bench Operator <bench@example.invalid> 1795165200 +0000\ndata {}\n{message}",
        message.len()
    );
    if has_notes {
        stream.push_str("from refs/notes/pacfleet^0\n");
    }
    for (i, commit) in commits.iter().enumerate() {
        let tree = git(dir, &["rev-parse", &format!("{commit}^{{tree}}")])?;
        let statement = Statement {
            fleet: fleet.to_owned(),
            commit: commit.clone(),
            tree,
            sequence: first + i as u64,
            expires,
        };
        let text = statement.to_text();
        let sig = minisign::sign(
            Some(&pk),
            sk,
            std::io::Cursor::new(text.as_bytes()),
            Some("bench"),
            None,
        )?;
        let note = Note {
            text,
            statement,
            signatures: vec![sig],
        }
        .render();
        let _ = write!(stream, "N inline {commit}\ndata {}\n{note}\n", note.len());
    }
    fast_import(dir, &stream)
}

fn fast_import(dir: &Path, stream: &str) -> Result<()> {
    use std::io::Write as _;
    let mut child = Command::new("git")
        .args(["fast-import", "--quiet"])
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .stdin(std::process::Stdio::piped())
        .spawn()
        .context("running git fast-import")?;
    child
        .stdin
        .take()
        .context("git fast-import's stdin")?
        .write_all(stream.as_bytes())?;
    ensure!(child.wait()?.success(), "git fast-import failed");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// helpers

fn empty_dir(dir: &Path) -> Result<()> {
    if dir.exists() && fs::read_dir(dir)?.next().is_some() {
        bail!("{} exists and is not empty", dir.display());
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

fn write_files(root: &Path, files: &[(String, String)]) -> Result<()> {
    for (path, text) in files {
        let p = root.join(path);
        if let Some(parent) = p.parent() {
            fs::create_dir_all(parent)?;
        }
        fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    }
    Ok(())
}

/// Writes an unencrypted minisign key pair `<dir>/<name>.pub` and `<dir>/<name>.key`.
fn keypair(dir: &Path, name: &str) -> Result<(PathBuf, PathBuf)> {
    fs::create_dir_all(dir)?;
    let kp = minisign::KeyPair::generate_unencrypted_keypair()?;
    let (public, secret) = (
        dir.join(format!("{name}.pub")),
        dir.join(format!("{name}.key")),
    );
    fs::write(&public, kp.pk.to_box()?.into_string())?;
    fs::write(&secret, kp.sk.to_box(None)?.into_string())?;
    Ok((public, secret))
}

fn sign(repo: &Path, rev: &str, secret: &Path) -> Result<()> {
    let sk = pacfleet::trust::load_secret_key(secret, None)?;
    let opts = pacfleet::trust::SignOptions {
        sequence: None,
        expires: chrono::Utc::now() + chrono::Duration::days(365),
        renew: false,
    };
    pacfleet::trust::sign_commit(repo, rev, &sk, &opts)?;
    Ok(())
}

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_AUTHOR_DATE", "2026-11-20T09:00:00Z")
        .env("GIT_COMMITTER_DATE", "2026-11-20T09:00:00Z")
        .output()
        .context("running git")?;
    if !out.status.success() {
        bail!(
            "git {} failed in {}: {}",
            args.join(" "),
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

fn git_init(dir: &Path) -> Result<()> {
    fs::create_dir_all(dir)?;
    git(dir, &["init", "-q", "-b", "main"])?;
    for (k, v) in [
        ("user.name", "Bench Operator"),
        ("user.email", "bench@example.invalid"),
        ("commit.gpgsign", "false"),
        ("gc.auto", "0"),
    ] {
        git(dir, &["config", k, v])?;
    }
    Ok(())
}

fn commit(dir: &Path, message: &str) -> Result<String> {
    git(dir, &["add", "-A"])?;
    git(dir, &["commit", "-q", "--allow-empty", "-m", message])?;
    git(dir, &["rev-parse", "HEAD"])
}
