//! `fleetctl demo [--keep DIR]`: a complete sandbox fleet on this machine, taken through a
//! story of commits.
//!
//! The sandbox (a temporary directory, or `--keep DIR`) holds synthetic sync repositories and
//! a `file://` archive of older versions (`universe`), a git copy of example-fleet (embedded in
//! the binary, `embedded`; edited as text, `edits`), a status repository, and nine hosts as
//! directories, each with its own key (`sandbox`). The story: reconcile three hosts in two pools;
//! add a package to a set; pin build-servers to a new generation that holds one package back (a
//! downgrade); `git revert` that. Then a pool of six desks in three waves: a generation bump
//! reaches the canary, fails one early desk's health check (which rolls back), halts the rest,
//! and `fleetctl rollback` finishes it. Last, a peer cache: a new workstation takes every
//! package file from the first workstation's cache, served on a loopback port as its agent
//! would serve it, and nothing from upstream. Each step reconciles its hosts wave by wave and prints
//! what each did. Every pass is a real `reconcile::run` through
//! libalpm, with the window ignored as an operator at the console would. Nothing outside the
//! sandbox is touched: every host path is checked to be inside it before the first pass.

mod edits;
mod embedded;
mod packager;
mod sandbox;
mod universe;

use std::path::Path;

use anyhow::Context as _;

use self::sandbox::{FleetRepo, Host, Operator, Sandbox};
use self::universe::{Addition, Built, Universe};
use super::DemoArgs;
use pacfleet::manifest::Fleet;
use pacfleet::plan::{Action, Change, Reason};
use pacfleet::reconcile::{self, PassOptions, PassReport, Verdict, short};

/// The demo's hosts: two workstations (floating) and a build server (pinned).
const HOSTS: &[&str] = &["ws-01", "ws-02", "build-01"];
/// The rollout chapter's pool and its six desks: lab-01 is the canary, lab-02 and lab-03 the
/// early wave, the rest follow.
const LAB_POOL: &str = "lab";
const LAB: &[&str] = &["lab-01", "lab-02", "lab-03", "lab-04", "lab-05", "lab-06"];
/// Step 8's new workstation, and the host whose peer cache it takes its packages from.
const NEWCOMER: &str = "ws-03";
const PEER: &str = "ws-01";
/// The lab desk whose local quirk the new generation breaks: its health check fails.
const FRAGILE: &str = "lab-02";
/// The file that marks it.
const QUIRK: &str = "etc/demo-quirk";
/// Step 2 adds `ADDED` to this set, which the workstations use and build-servers do not.
const ADDED_TO_SET: &str = "desktop";
/// The package step 2 adds (`htop` is in core-tools already, so every host has it).
const ADDED: Addition = Addition {
    name: "gimp",
    depends: &["gegl"],
};
/// Packages the story brings that the fleet does not mention.
const ADDITIONS: &[Addition] = &[
    ADDED,
    Addition {
        name: "gegl",
        depends: &[],
    },
];
/// The pinned pool of step 3.
const PINNED_POOL: &str = embedded::PINNED_POOL;
/// Step 3 holds this package back at this older version (only the archive has it).
const DOWNGRADE: (&str, &str) = ("git", "2.47.1-1");

/// Every pass applies, outside windows too (an operator at the console).
const APPLY: PassOptions = PassOptions {
    apply: true,
    dry_run: false,
    ignore_window: true,
    full_plan: false,
    bootstrap: false,
};

pub(super) fn run(args: DemoArgs) -> anyhow::Result<u8> {
    sandbox::check_git()?;
    let sandbox = Sandbox::create(args.keep.as_deref())?;
    let path = sandbox.path().to_path_buf();
    let kept = sandbox.kept();
    let result = story(&sandbox);
    let removed = sandbox.finish();
    match result {
        Ok(()) => {
            removed?;
            if kept {
                println!("\nThe sandbox is kept in {}. Try:", path.display());
                println!(
                    "  fleetctl plan --config {}",
                    path.join("hosts/ws-01/agent.yaml").display()
                );
            } else {
                println!(
                    "\nThe sandbox was removed; `fleetctl demo --keep DIR` keeps one to explore."
                );
            }
            Ok(0)
        }
        Err(e) => {
            if kept {
                eprintln!(
                    "fleetctl demo: the sandbox is kept in {} for inspection",
                    path.display()
                );
            } else if removed.is_ok() {
                eprintln!(
                    "fleetctl demo: the sandbox was removed; rerun with --keep DIR to inspect it"
                );
            }
            Err(e)
        }
    }
}

fn story(sandbox: &Sandbox) -> anyhow::Result<()> {
    let dir = sandbox.path();

    // Set up: packages, fleet repository, hosts.
    let setup = "setting up the sandbox";
    let fleet = embedded::fleet()?;
    let universe = Universe::plan(&fleet, ADDITIONS, DOWNGRADE).context(setup)?;
    universe.check_locks(&fleet, &[]).context(setup)?;
    let packager = packager::Packager::generate(dir)
        .with_context(|| format!("{setup}: making the packager's signing key"))?;
    let built = universe
        .build(dir, &packager)
        .with_context(|| format!("{setup}: building the synthetic packages"))?;
    let days = built
        .publish_snapshots(&fleet)
        .with_context(|| format!("{setup}: publishing the archive's snapshots"))?;
    let repo = FleetRepo::init(&dir.join("fleet")).context(setup)?;
    let status_repo = dir.join("status.git");
    repo.git(&["init", "-q", "--bare", &status_repo.display().to_string()])
        .context(setup)?;
    let ops = Operator::generate(dir).context(setup)?;
    let archive_url = format!("file://{}", built.archive.display());
    let demo_files = embedded::demo_files().context(setup)?;
    let demo_files: Vec<(&str, &str)> = demo_files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let files = edits::copy(&demo_files, &fleet, &archive_url, &built)
        .with_context(|| format!("{setup}: copying example-fleet"))?;
    let make_host = |name: &str| -> anyhow::Result<Host> {
        let host = sandbox::make_host(
            dir,
            name,
            &built.repos,
            &repo.dir,
            &ops.public,
            &status_repo,
        )
        .with_context(|| format!("{setup}: host {name}"))?;
        let gpgdir = dir.join("hosts").join(name).join("gnupg");
        packager
            .keyring(&gpgdir, &host.config.pacman_conf)
            .with_context(|| format!("{setup}: the keyring of host {name}"))?;
        Ok(host)
    };
    let hosts = HOSTS
        .iter()
        .map(|n| make_host(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let lab = LAB
        .iter()
        .map(|n| make_host(n))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let newcomer = make_host(NEWCOMER)?;
    // Each host's manifest names its key, which its reports are checked against.
    let mut files = files;
    for h in &hosts {
        let path = format!("hosts/{}.yaml", h.name);
        let existing = files.iter().position(|(p, _)| *p == path);
        let text = edits::host_with_key(&h.name, existing.map(|i| files[i].1.as_str()), &h.key);
        match existing {
            Some(i) => files[i].1 = text,
            None => files.push((path, text)),
        }
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (&**p, &**t)).collect();
    repo.write(&files).context(setup)?;
    let fleet = checked(&repo).context(setup)?;

    intro(&universe, &fleet, &hosts)?;

    // 1. The initial commit, reconciled.
    let days: Vec<&str> = days.iter().map(String::as_str).collect();
    commit_signed(
        &repo,
        &ops,
        &format!(
            "acme fleet, copied from example-fleet\n\n\
             Three changes so that it works in the demo's sandbox: fleet.yaml's `archive:` is\n\
             the sandbox's file:// archive (whose snapshots of {} are the sandbox's\n\
             repositories), the sha256 pins in generations/ are those of the synthetic\n\
             packages, and {PINNED_POOL} (shipped floating) is pinned to its last example\n\
             generation, as `fleetctl set-latest` would pin it.",
            days.join(", ")
        ),
    )
    .context("step 1: committing the fleet")?;
    step(
        1,
        "First pass: every host gets what its pool asks for",
        &repo,
        &hosts,
        &built,
    )?;

    // 2. A package added to a set.
    let step2 = "step 2";
    let set = fleet
        .sets
        .get(ADDED_TO_SET)
        .with_context(|| format!("{step2}: the fleet has no set {ADDED_TO_SET} (a bug)"))?;
    let text = edits::add_to_set(&repo.read(&set.file)?, ADDED.name)
        .with_context(|| format!("{step2}: editing {}", set.file))?;
    repo.write(&[(&set.file, &text)]).context(step2)?;
    checked(&repo).context(step2)?;
    commit_signed(&repo, &ops, &format!("{ADDED_TO_SET}: add {}", ADDED.name)).context(step2)?;
    step(
        2,
        &format!(
            "A package added to a set: {} joins {ADDED_TO_SET}",
            ADDED.name
        ),
        &repo,
        &hosts,
        &built,
    )?;

    // 3. A new generation that holds one package back: a downgrade.
    let step3 = "step 3";
    let pool = fleet
        .pools
        .get(PINNED_POOL)
        .with_context(|| format!("{step3}: the fleet has no pool {PINNED_POOL} (a bug)"))?;
    let current = pool
        .spec
        .generation
        .and_then(|n| fleet.generations.get(&(pool.spec.name.clone(), n)))
        .with_context(|| format!("{step3}: pool {PINNED_POOL} pins no generation (a bug)"))?;
    let number = current.spec.number + 1;
    let (name, older) = DOWNGRADE;
    let was = current
        .spec
        .packages
        .get(name)
        .map(|p| p.version.clone())
        .unwrap_or_default();
    let hash = built.sha256(name, older).context(step3)?;
    let text = edits::generation_text(
        &current.spec,
        number,
        (name, older, Some(hash)),
        &format!(
            "Generation {} with {name} held back at {older}: {name} {was} broke the builders'\n\
             submodule checkouts. Written by `fleetctl demo`.",
            current.spec.number
        ),
    );
    let gen_file = format!("generations/{PINNED_POOL}/{number}.yaml");
    let pool_text = edits::set_pool_generation(&repo.read(&pool.file)?, number)
        .with_context(|| format!("{step3}: editing {}", pool.file))?;
    repo.write(&[(&gen_file, &text), (&pool.file, &pool_text)])
        .context(step3)?;
    let pinned = checked(&repo).context(step3)?;
    let lock = pinned
        .generations
        .get(&(pool.spec.name.clone(), number))
        .map(|g| g.spec.packages.keys().map(|k| k.to_string()).collect())
        .unwrap_or_default();
    universe
        .check_locks(&pinned, &[(PINNED_POOL, lock)])
        .context(step3)?;
    let pin_commit = commit_signed(
        &repo,
        &ops,
        &format!("{PINNED_POOL}: generation {number}, {name} held back at {older}"),
    )
    .context(step3)?;
    step(
        3,
        &format!("A downgrade: {PINNED_POOL} pinned to generation {number}"),
        &repo,
        &hosts,
        &built,
    )?;

    // 4. Roll back with git revert.
    repo.git(&["revert", "--no-edit", &pin_commit])
        .context("step 4: git revert")?;
    repo.sign(&repo.head()?, &ops).context("step 4")?;
    checked(&repo).context("step 4")?;
    step(
        4,
        "Rollback: `git revert` of that commit",
        &repo,
        &hosts,
        &built,
    )?;

    rollout_chapter(&repo, &ops, &universe, &built, &lab, &status_repo)?;
    peer_chapter(&repo, &ops, &built, &hosts, newcomer)
}

/// Step 8: a new desk joins the workstations and takes every package file from `PEER`'s
/// cache, served on a free loopback port as `fleetctl agent` with `peers.listen` serves it;
/// its agent.yaml lists that peer (`peers.static`). What its status then says of its
/// downloads is printed: all from the peer, nothing from upstream.
fn peer_chapter(
    repo: &FleetRepo,
    ops: &Operator,
    built: &Built,
    hosts: &[Host],
    newcomer: Host,
) -> anyhow::Result<()> {
    let step8 = "step 8";
    let peer = hosts
        .iter()
        .find(|h| h.name == PEER)
        .with_context(|| format!("{step8}: no host {PEER} (a bug)"))?;
    let manifest = format!("hosts/{}.yaml", newcomer.name);
    repo.write(&[(
        &manifest,
        &edits::host_with_key(&newcomer.name, None, &newcomer.key),
    )])
    .context(step8)?;
    checked(repo).context(step8)?;
    commit_signed(
        repo,
        ops,
        &format!("hosts: {NEWCOMER}, a new desk in workstations"),
    )
    .context(step8)?;
    // PEER's cache, served as its agent would (`peers: {listen: 127.0.0.1:0}`).
    let conf = pacfleet::system::read_conf(&peer.config.host_paths())
        .with_context(|| format!("{step8}: the cache dirs of {PEER}"))?;
    let server = pacfleet::peer_serve::spawn(
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        conf.cache_dir
            .iter()
            .map(std::path::PathBuf::from)
            .collect(),
        pacfleet::peer_serve::Limits::default(),
        pacfleet::peer_serve::Identity {
            host: peer.name.clone(),
            status_file: peer.config.state_dir.join(pacfleet::download::STATUS_FILE),
        },
    )
    .with_context(|| format!("{step8}: serving {PEER}'s cache"))?;
    let url = format!("http://{}", server.addr());
    // The newcomer asks that peer first.
    let text = std::fs::read_to_string(&newcomer.config_path)
        .with_context(|| format!("{step8}: cannot read {}", newcomer.config_path.display()))?;
    std::fs::write(
        &newcomer.config_path,
        format!("{text}peers:\n  static: [{url}]\n"),
    )
    .with_context(|| format!("{step8}: cannot write {}", newcomer.config_path.display()))?;
    let config = pacfleet::config::AgentConfig::load(&newcomer.config_path).context(step8)?;
    let newcomer = Host { config, ..newcomer };
    step(
        8,
        &format!("A peer cache: {NEWCOMER} joins and takes its packages from {PEER}'s cache"),
        repo,
        std::slice::from_ref(&newcomer),
        built,
    )?;
    drop(server);
    let status = pacfleet::state::StateDir::open(&newcomer.config.state_dir)
        .and_then(|s| s.load_status())
        .with_context(|| format!("{step8}: the status of {NEWCOMER}"))?;
    let d = status.and_then(|s| s.downloads).unwrap_or_default();
    println!(
        "   $ fleetctl status --config hosts/{NEWCOMER}/agent.yaml   (peers: static: [{url}])"
    );
    for (label, text) in super::output::download_lines(&d) {
        println!("     {label:<10} {text}");
    }
    println!(
        "   {NEWCOMER} took {} from {PEER}'s cache and {} from upstream",
        super::output::files(d.peer_files),
        super::output::bytes(d.upstream_bytes)
    );
    Ok(())
}

/// Steps 5 to 7: a pool of six desks in three waves with a health check. A generation bump
/// reaches the canary, then the early wave, where one desk fails its check and rolls back; the
/// rollout halts for everyone after it; `fleetctl rollback` starts a new change that every
/// desk converges on. Each step reconciles the desks wave by wave, as their timers would.
fn rollout_chapter(
    repo: &FleetRepo,
    ops: &Operator,
    universe: &Universe,
    built: &Built,
    lab: &[Host],
    status_repo: &Path,
) -> anyhow::Result<()> {
    let step5 = "step 5";
    let (name, older) = DOWNGRADE;
    let newer = universe
        .packages
        .get(name)
        .map(|p| p.version.clone())
        .with_context(|| format!("{step5}: no package {name} (a bug)"))?;
    let generation = |n: u32, version: &str| -> anyhow::Result<String> {
        Ok(format!(
            "kind: Generation\npool: {LAB_POOL}\nnumber: {n}\npackages:\n  {name}: {{version: {version}, sha256: {}}}\n",
            built.sha256(name, version)?
        ))
    };
    let check = format!(
        "! {{ test -e \"$PACFLEET_ROOT/{QUIRK}\" && test -d \"$PACFLEET_ROOT/var/lib/pacman/local/{name}-{newer}\"; }}"
    );
    let pool = |n: u32| {
        format!(
            "# Six lab desks, in three waves: the canary, then two early desks, then the rest.\n\
             # A desk that fails its health check goes back to what it had; any failure halts\n\
             # the waves after it (failure_budget: 0).\n\
             kind: Pool\nname: {LAB_POOL}\nhosts: [\"lab-*\"]\npackages: [{name}]\ngeneration: {n}\n\
             rollout:\n  waves:\n    - {{name: canary, hosts: [lab-01]}}\n    - {{name: early, hosts: [lab-02, lab-03]}}\n    - {{name: rest, percent: 100}}\n  failure_budget: 0\n\
             health:\n  commands: [{}, {}]\n  timeout: 1m\n  rollback: true\n",
            serde_json::to_string(edits::SANDBOX_HEALTH).unwrap_or_default(),
            serde_json::to_string(&check).unwrap_or_default(),
        )
    };
    let mut files = vec![
        (format!("pools/{LAB_POOL}.yaml"), pool(1)),
        (
            format!("generations/{LAB_POOL}/1.yaml"),
            generation(1, older)?,
        ),
    ];
    for h in lab {
        files.push((
            format!("hosts/{}.yaml", h.name),
            edits::host_with_key(&h.name, None, &h.key),
        ));
    }
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (&**p, &**t)).collect();
    repo.write(&files).context(step5)?;
    checked(repo).context(step5)?;
    commit_signed(
        repo,
        ops,
        &format!("{LAB_POOL}: six desks at generation 1 ({name} {older}), in three waves"),
    )
    .context(step5)?;
    // The fragile desk's quirk, which the next generation breaks.
    let fragile = lab
        .iter()
        .find(|h| h.name == FRAGILE)
        .with_context(|| format!("{step5}: no host {FRAGILE} (a bug)"))?;
    let quirk = fragile.config.root.join(QUIRK);
    if let Some(parent) = quirk.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("{step5}: cannot create {}", parent.display()))?;
    }
    std::fs::write(&quirk, "")
        .with_context(|| format!("{step5}: cannot write {}", quirk.display()))?;
    step(
        5,
        &format!("A pool in waves: {LAB_POOL}, six desks (canary, early, rest)"),
        repo,
        lab,
        built,
    )?;

    let step6 = "step 6";
    repo.write(&[
        (&format!("pools/{LAB_POOL}.yaml"), &pool(2)),
        (
            &format!("generations/{LAB_POOL}/2.yaml"),
            &generation(2, &newer)?,
        ),
    ])
    .context(step6)?;
    checked(repo).context(step6)?;
    commit_signed(
        repo,
        ops,
        &format!("{LAB_POOL}: generation 2, {name} {newer}"),
    )
    .context(step6)?;
    step(
        6,
        &format!("A generation bump rolls through the waves; {FRAGILE} fails its health check"),
        repo,
        lab,
        built,
    )?;
    fleet_status(repo, status_repo, step6)?;

    let step7 = "step 7";
    let pool_name = pacfleet::manifest::Name::new(LAB_POOL).context(step7)?;
    let rolled = pacfleet::rollback::rollback(
        &pacfleet::rollback::Rollback {
            pool: &pool_name,
            repo: &repo.dir,
            to: None,
            sign: false,
            push: false,
            offline: true,
        },
        &mut |w| tracing::warn!("{w}"),
    )
    .context(step7)?;
    repo.sign(&rolled.commit, ops).context(step7)?;
    step(
        7,
        "`fleetctl rollback --pool lab`: a new change, and every desk converges",
        repo,
        lab,
        built,
    )?;
    fleet_status(repo, status_repo, step7)
}

/// What `fleetctl fleet status --pool lab` shows now, indented under the step.
fn fleet_status(repo: &FleetRepo, status_repo: &Path, what: &str) -> anyhow::Result<()> {
    // The operator's copy of the status repository, inside the sandbox like everything else.
    let copy = repo
        .dir
        .parent()
        .unwrap_or(&repo.dir)
        .join("status-copy.git");
    let (fleet, reports, rejected) =
        super::fleet::load(&repo.dir, &status_repo.display().to_string(), &copy)
            .with_context(|| format!("{what}: fleet status"))?;
    let mut status =
        pacfleet::fleet_status::summarize(&fleet, &reports, &rejected, chrono::Utc::now());
    status.retain_pools(&[LAB_POOL.to_owned()]);
    println!(
        "   $ fleetctl fleet status --pool {LAB_POOL}   (exit {})",
        u8::from(status.needs_attention)
    );
    for line in super::fleet::render_text(&status, false).lines() {
        println!("     {line}");
    }
    Ok(())
}

/// Commits everything and signs the commit; returns its id.
fn commit_signed(repo: &FleetRepo, ops: &Operator, message: &str) -> anyhow::Result<String> {
    let id = repo.commit_all(message)?;
    repo.sign(&id, ops)?;
    Ok(id)
}

/// The fleet in the work tree, which the demo's own edits must keep valid.
fn checked(repo: &FleetRepo) -> anyhow::Result<Fleet> {
    Fleet::from_dir(&repo.dir).context("the demo's fleet repository is invalid (a bug)")
}

fn intro(universe: &Universe, fleet: &Fleet, hosts: &[Host]) -> anyhow::Result<()> {
    let repos: Vec<String> = universe
        .repos()
        .into_iter()
        .map(|r| format!("[{r}]"))
        .collect();
    let mut pools: Vec<(String, Vec<&str>)> = Vec::new();
    for h in hosts {
        let label = match pacfleet::resolve::resolve(fleet, &h.name)? {
            Some(r) => pool_label(&r.pool, r.generation),
            None => "not in the fleet".to_owned(),
        };
        match pools.iter_mut().find(|(l, _)| *l == label) {
            Some((_, names)) => names.push(&h.name),
            None => pools.push((label, vec![&h.name])),
        }
    }
    let pools: Vec<String> = pools
        .iter()
        .map(|(label, names)| format!("{} ({label})", names.join(", ")))
        .collect();
    println!(
        "pacfleet demo: a fleet of {} hosts in a sandbox; nothing outside it is touched.",
        hosts.len() + LAB.len() + 1
    );
    println!(
        "  packages  {} synthetic packages in {}; {} older versions in a file:// archive",
        universe.packages.len(),
        repos.join(" and "),
        universe.archived_count()
    );
    println!(
        "  signed    by a packager key made in the sandbox; each host's keyring (pacman-key) trusts it, SigLevel = Required DatabaseOptional"
    );
    println!(
        "  fleet     a git copy of example-fleet; its `archive:` and sha256 pins are the sandbox's"
    );
    println!(
        "  hosts     {}; from step 5, {} in pool {LAB_POOL}; in step 8, {NEWCOMER}",
        pools.join("; "),
        LAB.join(", ")
    );
    println!(
        "  reports   each host signs its report with its own key and pushes it to the sandbox's status repository"
    );
    println!("  trust     every commit is signed with keys/ops.key; the hosts trust keys/ops.pub");
    println!(
        "Passes apply outside maintenance windows, like an operator at the console \
         (--ignore-window)."
    );
    Ok(())
}

fn pool_label(pool: &str, generation: Option<u32>) -> String {
    match generation {
        Some(g) => format!("{pool}, generation {g}"),
        None => format!("{pool}, floating"),
    }
}

/// Reconciles every host at the fleet's HEAD and prints what each did.
fn step(
    n: u32,
    title: &str,
    repo: &FleetRepo,
    hosts: &[Host],
    built: &Built,
) -> anyhow::Result<()> {
    let what = format!("step {n} ({title})");
    let head = repo.head().with_context(|| what.clone())?;
    let subject = repo.subject().with_context(|| what.clone())?;
    println!("\n{n}. {title}");
    println!("   commit {}  {subject}", short(&head));
    let width = hosts.iter().map(|h| h.name.len()).max().unwrap_or(0);
    // Wave by wave, as the hosts' timers would take them over time.
    let fleet = checked(repo).with_context(|| what.clone())?;
    let mut ordered: Vec<(usize, &Host)> = Vec::new();
    for h in hosts {
        let wave = match pacfleet::resolve::resolve(&fleet, &h.name)? {
            Some(r) => pacfleet::rollout::place(&r)?.map_or(0, |(p, _)| p.index),
            None => 0,
        };
        ordered.push((wave, h));
    }
    ordered.sort_by_key(|(wave, _)| *wave);
    for (_, h) in ordered {
        let report = reconcile::run(&h.config, APPLY).with_context(|| {
            format!(
                "{what}: reconciling host {} ({}) failed",
                h.name,
                h.config_path.display()
            )
        })?;
        print_host(&report, width, &built.archive);
    }
    Ok(())
}

/// One line per host, and the notable changes under it.
fn print_host(r: &PassReport, width: usize, archive: &Path) {
    let label = match &r.pool {
        Some(p) => pool_label(p, r.generation),
        None => "not in the fleet".to_owned(),
    };
    let cs = &r.changeset;
    let took = took(r.duration);
    let did = match &r.verdict {
        Verdict::NotInFleet => "not in the fleet: nothing to do".to_owned(),
        Verdict::Converged => format!("converged, nothing to do ({took})"),
        Verdict::Pending {
            hold: reconcile::Hold::Halted { failed, budget },
        } => format!(
            "{} held back: the rollout halted ({} failed; failure_budget {budget})",
            cs.summary(),
            failed.join(", ")
        ),
        Verdict::Pending { hold } => format!("{} held back: {hold}", cs.summary()),
        Verdict::Held => format!("{} package(s) held back by IgnorePkg", cs.held.len()),
        Verdict::Unhealthy { rolled_back } => format!(
            "{}; the health check failed{}",
            cs.summary_with_versions(),
            match (&r.rolled_back, rolled_back) {
                (Some(back), true) => format!(", rolled back: {}", back.summary_with_versions()),
                _ => String::new(),
            }
        ),
        Verdict::Applied | Verdict::AppliedWithWarnings => {
            let counts: Vec<String> = [
                (Action::Install, "installed"),
                (Action::Upgrade, "upgraded"),
                (Action::Downgrade, "downgraded"),
                (Action::Reinstall, "reinstalled"),
                (Action::Remove, "removed"),
                (Action::MarkExplicit, "marked explicit"),
                (Action::MarkDependency, "marked as dependency"),
            ]
            .iter()
            .filter_map(|(a, verb)| match cs.count(*a) {
                0 => None,
                k => Some(format!("{verb} {k}")),
            })
            .collect();
            let installs = cs.changes.iter().filter(|c| c.action == Action::Install);
            let deps = installs
                .clone()
                .filter(|c| c.reason == Some(Reason::Dependency))
                .count();
            let explicit = installs.count() - deps;
            // Small changesets are itemised below; say what a big install is made of.
            let split = if deps > 0 && explicit > 0 && cs.changes.len() > 4 {
                let noun = if deps == 1 {
                    "dependency"
                } else {
                    "dependencies"
                };
                format!(" ({explicit} explicit + {deps} {noun})")
            } else {
                String::new()
            };
            format!("{}{split} in {took}", counts.join(", "))
        }
    };
    println!("   {:width$} ({label}): {did}", r.host);
    let notable: Vec<&Change> = if cs.changes.len() <= 4 {
        cs.changes.iter().collect()
    } else {
        cs.changes
            .iter()
            .filter(|c| c.action != Action::Install || from_archive(c, archive))
            .collect()
    };
    if r.verdict != Verdict::Applied || notable.is_empty() {
        return;
    }
    const SHOWN: usize = 4;
    let mut items: Vec<String> = notable
        .iter()
        .take(SHOWN)
        .map(|c| describe(c, archive))
        .collect();
    if notable.len() > SHOWN {
        items.push(format!("and {} more", notable.len() - SHOWN));
    }
    // Wrapped at about 100 columns, never inside an item.
    let indent = " ".repeat(6);
    let mut line = String::new();
    for (i, item) in items.iter().enumerate() {
        let sep = if i + 1 < items.len() { "," } else { "" };
        if !line.is_empty() && indent.len() + line.len() + 1 + item.len() > 100 {
            println!("{indent}{line}");
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(item);
        line.push_str(sep);
    }
    println!("{indent}{line}");
}

/// `45 ms`, `1.3s`.
fn took(d: std::time::Duration) -> String {
    if d.as_millis() < 1000 {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

fn from_archive(c: &Change, archive: &Path) -> bool {
    c.source
        .as_deref()
        .is_some_and(|s| Path::new(s).starts_with(archive))
}

/// `gegl 0.4.62-1 (dependency)`, `git 2.48.1-1 → 2.47.1-1 (downgrade, from the archive)`.
fn describe(c: &Change, archive: &Path) -> String {
    let old = c.old.as_deref().unwrap_or("-");
    let new = c.new.as_deref().unwrap_or("-");
    let mut notes = Vec::new();
    let text = match c.action {
        Action::Install => {
            if c.reason == Some(Reason::Dependency) {
                notes.push("dependency");
            }
            format!("{} {new}", c.name)
        }
        Action::Upgrade | Action::Reinstall => format!("{} {old} → {new}", c.name),
        Action::Downgrade => {
            notes.push("downgrade");
            format!("{} {old} → {new}", c.name)
        }
        Action::Remove => format!("{} {old} removed", c.name),
        Action::MarkExplicit => format!("{} marked explicit", c.name),
        Action::MarkDependency => format!("{} marked as dependency", c.name),
    };
    if from_archive(c, archive) {
        notes.push("from the archive");
    }
    if notes.is_empty() {
        text
    } else {
        format!("{text} ({})", notes.join(", "))
    }
}
