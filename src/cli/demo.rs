//! `fleetctl demo [--keep DIR]`: a complete sandbox fleet on this machine, taken through a
//! story of commits.
//!
//! The sandbox (a temporary directory, or `--keep DIR`) holds synthetic sync repositories and
//! a `file://` archive of older versions (`universe`), a git copy of example-fleet (embedded in
//! the binary, `embedded`; edited as text, `edits`) and three hosts as directories in two pools
//! (`sandbox`). The story: reconcile all hosts; add a package to a set; pin build-servers to a
//! new generation that holds one package back (a downgrade); `git revert` that; reconcile after
//! each commit and print what each host did. Every pass is a real `reconcile::run` through
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
    let ops = Operator::generate(dir).context(setup)?;
    let archive_url = format!("file://{}", built.archive.display());
    let demo_files = embedded::demo_files().context(setup)?;
    let demo_files: Vec<(&str, &str)> = demo_files.iter().map(|(p, t)| (*p, t.as_str())).collect();
    let files = edits::copy(&demo_files, &fleet, &archive_url, &built)
        .with_context(|| format!("{setup}: copying example-fleet"))?;
    let files: Vec<(&str, &str)> = files.iter().map(|(p, t)| (&**p, &**t)).collect();
    repo.write(&files).context(setup)?;
    let fleet = checked(&repo).context(setup)?;
    let mut hosts = Vec::new();
    for name in HOSTS {
        let host = sandbox::make_host(dir, name, &built.repos, &repo.dir, &ops.public)
            .with_context(|| format!("{setup}: host {name}"))?;
        let gpgdir = dir.join("hosts").join(name).join("gnupg");
        packager
            .keyring(&gpgdir, &host.config.pacman_conf)
            .with_context(|| format!("{setup}: the keyring of host {name}"))?;
        hosts.push(host);
    }

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
        hosts.len()
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
    println!("  hosts     {}", pools.join("; "));
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
    for h in hosts {
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
        Verdict::Pending { hold } => format!("{} held back: {hold}", cs.summary()),
        Verdict::Held => format!("{} package(s) held back by IgnorePkg", cs.held.len()),
        Verdict::Unhealthy { rolled_back } => format!(
            "applied; the health check failed{}",
            if *rolled_back { ", rolled back" } else { "" }
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
