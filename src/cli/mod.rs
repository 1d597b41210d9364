//! The command line: clap types in one place (this file), one file per subcommand, and one
//! place that turns a result into output and an exit code. Commands validate their arguments
//! cheaply first, then build the costly objects (git, libalpm) once.

mod agent;
mod completions;
mod demo;
mod diff;
mod enroll;
pub mod fleet;
mod history;
mod keygen;
pub mod output;
mod plan;
mod progress;
mod reconcile;
mod report;
mod resolve;
mod rollback;
mod set_latest;
mod sign;
mod signing;
mod status;
mod validate;
mod verify;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

/// Default location of the host's agent configuration.
pub const DEFAULT_CONFIG: &str = "/etc/pacfleet/agent.yaml";

/// GitOps for fleets of Arch Linux machines.
#[derive(Debug, Parser)]
#[command(name = "fleetctl", version, about, propagate_version = true)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    /// Only errors in the log.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a fleet repository's work tree; report every problem at once.
    Validate(ValidateArgs),
    /// Print the desired state of one host.
    Resolve(ResolveArgs),
    /// Per pool and host, what changes between two revisions of a fleet repository (default:
    /// HEAD vs the work tree). Exit 0 no change, 1 changes, 2 error.
    Diff(DiffArgs),
    /// On a host: fetch, resolve and show exactly what reconcile would do. Takes no lock.
    Plan(PlanArgs),
    /// On a host: one pass — fetch, resolve, plan, apply, record.
    Reconcile(ReconcileArgs),
    /// Changesets applied on this host.
    History(HistoryArgs),
    /// On a host: write its installed packages and versions as the pool's next generation,
    /// point the pool at it and commit in the fleet work tree; sign with --key, push with --push.
    SetLatest(SetLatestArgs),
    /// Revert the pool's last generation change (or pin `--to N`), commit, sign with --key,
    /// push with --push; prints what it means for the hosts.
    Rollback(RollbackArgs),
    /// On a host: the applied state, last pass, pending changes, drift, signature expiry and
    /// last error, from the state directory (no fetch, no lock).
    Status(StatusArgs),
    /// On a host: run passes on a schedule, watch for drift, until SIGTERM.
    Agent(AgentArgs),
    /// The fleet as its hosts report it (`fleetctl fleet status`).
    Fleet(FleetArgs),
    /// A complete sandbox fleet on this machine: three hosts reconciled through a story of
    /// commits. Touches nothing outside a temporary directory.
    Demo(DemoArgs),
    /// Create a minisign key pair (`PREFIX.pub`, `PREFIX.key`) for signing fleet states.
    Keygen(KeygenArgs),
    /// Sign a commit of the fleet repository: a statement note under refs/notes/pacfleet.
    Sign(SignArgs),
    /// Check a commit's signature statement against public keys, as a host would.
    Verify(VerifyArgs),
    /// On a new host: write a checked agent.yaml and the host's key pair, after checking that
    /// the repository is reachable and its branch signed by the given keys; prints the
    /// `hosts/<hostname>.yaml` to commit. Exit 0, 2 error, 3 not signed by the given keys.
    Enroll(EnrollArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions(CompletionsArgs),
    /// Write man pages (fleetctl.1 and fleetctl-COMMAND.1) into a directory, for packaging.
    #[command(hide = true)]
    Manpages(ManpagesArgs),
}

#[derive(Debug, Args)]
struct CompletionsArgs {
    /// The shell to complete for.
    shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
struct ManpagesArgs {
    /// The directory to write the pages into (created if missing).
    dir: PathBuf,
}

/// `--config` for commands that read agent.yaml.
#[derive(Debug, Args)]
struct ConfigArg {
    /// The host's agent configuration.
    #[arg(long, short = 'c', env = "PACFLEET_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
}

#[derive(Debug, Args)]
struct ValidateArgs {
    /// The fleet repository (the directory with fleet.yaml).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Print the diagnostics as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ResolveArgs {
    /// The hostname to resolve.
    #[arg(long)]
    host: String,
    /// The fleet repository (the directory with fleet.yaml).
    #[arg(default_value = ".")]
    path: PathBuf,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct DiffArgs {
    /// What to compare: `A..B` (A vs B; an empty side is HEAD), `A...B` (the merge base of A
    /// and B vs B), or `A` (A vs the work tree). Default: HEAD vs the work tree.
    #[arg(value_name = "RANGE")]
    range: Option<String>,
    /// The fleet repository: a git work tree, or the directory inside one that holds
    /// fleet.yaml.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Only this pool, and hosts in it on either side; repeat for several.
    #[arg(long, value_name = "POOL")]
    pool: Vec<String>,
    /// Only this host (with or without a Host manifest), and its pool on either side; repeat
    /// for several.
    #[arg(long, value_name = "HOST")]
    host: Vec<String>,
    /// Output: aligned text (coloured on a terminal unless NO_COLOR is set), markdown for a
    /// pull-request comment, or JSON (documented in the README).
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    format: DiffFormat,
    /// The architecture whose archive repositories (`os/<ARCH>`) a floating pool's snapshot
    /// bump is read from.
    #[arg(long, value_name = "ARCH", default_value = "x86_64")]
    arch: String,
}

/// `fleetctl diff --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DiffFormat {
    /// Aligned text for a terminal.
    Text,
    /// A pull-request comment.
    Markdown,
    /// The stable JSON structure.
    Json,
}

#[derive(Debug, Args)]
struct PlanArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ReconcileArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Plan under the same rules, apply nothing.
    #[arg(long)]
    dry_run: bool,
    /// Apply even outside the pool's window (for an operator at the console).
    #[arg(long)]
    ignore_window: bool,
    /// Plan against the package databases even when nothing the plan reads changed since the
    /// last pass that found nothing to do (which otherwise skips planning).
    #[arg(long)]
    full_plan: bool,
    /// Provision an empty root (an image or chroot being built): create its package database,
    /// install the keyring first, then the pool's packages. Without it, a root with no package
    /// database is refused (a live host never gets provisioned by accident).
    #[arg(long)]
    bootstrap: bool,
    /// Print the pass report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct AgentArgs {
    #[command(flatten)]
    config: ConfigArg,
}

#[derive(Debug, Args)]
struct HistoryArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print JSON lines, one changeset per line.
    #[arg(long)]
    json: bool,
    /// Show only the newest N changesets.
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

#[derive(Debug, Args)]
struct StatusArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Print one JSON object (fields documented in README.md).
    #[arg(long, conflicts_with = "waybar")]
    json: bool,
    /// Print one line of JSON for a waybar custom module (`return-type: json`).
    #[arg(long)]
    waybar: bool,
}

#[derive(Debug, Args)]
struct FleetArgs {
    #[command(subcommand)]
    command: FleetCommand,
}

#[derive(Debug, Subcommand)]
enum FleetCommand {
    /// Per pool and wave every host's newest report, hosts silent past the pool's stale_after,
    /// and each rollout's progress (wave k of n, done, waiting for what, halted and why): text,
    /// JSON or one static HTML page. Exit 0 all healthy, 1 something needs attention (failed,
    /// rolled back, refused, halted, stale, drift, a rejected report), 2 error.
    Status(FleetStatusArgs),
}

#[derive(Debug, Args)]
struct FleetStatusArgs {
    /// The status repository the hosts push their signed reports to: a git URL or path.
    #[arg(long, value_name = "URL")]
    status_repo: String,
    /// The fleet repository whose HEAD says which pools, waves and hosts there are: a git work
    /// tree, the directory inside one that holds fleet.yaml, or a bare repository.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Only this pool; repeat for several.
    #[arg(long, value_name = "POOL")]
    pool: Vec<String>,
    /// Print one JSON object (fields documented in docs/contract.md §7).
    #[arg(long, conflicts_with = "html")]
    json: bool,
    /// Write one static HTML page (inline CSS, no JavaScript) to FILE instead of printing.
    #[arg(long, value_name = "FILE")]
    html: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DemoArgs {
    /// Keep the sandbox in this directory instead of a temporary one (must not exist).
    #[arg(long)]
    keep: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct KeygenArgs {
    /// Write `PREFIX.pub` (what hosts trust) and `PREFIX.key` (the secret key); existing files
    /// are never overwritten.
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    /// Do not protect the secret key with a password (for unattended signing only).
    #[arg(long)]
    unencrypted: bool,
}

#[derive(Debug, Args)]
struct SignArgs {
    /// The commit to sign.
    #[arg(default_value = "HEAD")]
    rev: String,
    /// The secret key file (`fleetctl keygen` or `minisign -G`); its password comes from
    /// PACFLEET_KEY_PASSWORD or is asked on the terminal.
    #[arg(long, short = 'k', value_name = "KEY")]
    key: PathBuf,
    /// The fleet repository.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// How long the signed state stays valid (e.g. `30d`, `12h`); sign the tip again before
    /// then, or hosts report the fleet as stale.
    #[arg(long, value_name = "DURATION", default_value = pacfleet::trust::DEFAULT_EXPIRY_ARG, value_parser = humantime::parse_duration)]
    expires_in: std::time::Duration,
    /// The statement's sequence number (default: the highest in the notes + 1). Only for a
    /// new statement.
    #[arg(long, value_name = "N")]
    sequence: Option<u64>,
    /// Make a new statement (new sequence, new expiry) even if the commit has a valid one,
    /// instead of adding this key's signature to it.
    #[arg(long)]
    renew: bool,
    /// Do not fetch the remote's signature notes first (warns: the sequence number then comes
    /// from the local notes only).
    #[arg(long)]
    offline: bool,
}

#[derive(Debug, Args)]
struct EnrollArgs {
    /// The fleet repository: a git URL, or a local path.
    #[arg(long, value_name = "URL")]
    repo: String,
    /// A trusted public key file (`.pub`) for `trusted_keys:`; repeat for several keys.
    #[arg(long, short = 'k', value_name = "PUB", required = true)]
    key: Vec<PathBuf>,
    /// The branch to follow.
    #[arg(long, default_value = "main")]
    branch: String,
    /// The fleet this host belongs to (`fleet:`).
    #[arg(long, value_name = "NAME")]
    fleet: Option<String>,
    /// The agent configuration to write.
    #[arg(long, short = 'c', env = "PACFLEET_CONFIG", default_value = DEFAULT_CONFIG)]
    config: PathBuf,
    /// The host's name in the fleet (default: the machine's hostname).
    #[arg(long, value_name = "H")]
    hostname: Option<String>,
    /// `root:` for agent.yaml.
    #[arg(long)]
    root: Option<PathBuf>,
    /// `dbpath:` for agent.yaml.
    #[arg(long)]
    dbpath: Option<PathBuf>,
    /// `pacman_conf:` for agent.yaml.
    #[arg(long)]
    pacman_conf: Option<PathBuf>,
    /// `state_dir:` for agent.yaml (default /var/lib/pacfleet); the repository is fetched into
    /// its mirror.
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// `ssh_key:` for agent.yaml: the deploy key ssh uses for an ssh:// repository (needed
    /// under the systemd units, which hide /root).
    #[arg(long, value_name = "KEY")]
    ssh_key: Option<PathBuf>,
    /// `ssh_known_hosts:` for agent.yaml (default: known_hosts beside the ssh key).
    #[arg(long, value_name = "FILE")]
    ssh_known_hosts: Option<PathBuf>,
    /// `status_repo:` for agent.yaml: the repository this host pushes its signed reports to
    /// (pools with `rollout:` need them).
    #[arg(long, value_name = "URL")]
    status_repo: Option<String>,
    /// Do not print the first pass's plan after enrolling.
    #[arg(long)]
    no_plan: bool,
    /// Replace a different existing agent.yaml (the host key is never replaced).
    #[arg(long)]
    force: bool,
}

#[derive(Debug, Args)]
struct VerifyArgs {
    /// The commit to verify.
    #[arg(default_value = "HEAD")]
    rev: String,
    /// A trusted public key file (`.pub`); repeat for several keys.
    #[arg(long, short = 'k', value_name = "PUB", required = true)]
    key: Vec<PathBuf>,
    /// The fleet repository.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// How many distinct given keys must have signed.
    #[arg(long, value_name = "N", default_value_t = 1)]
    threshold: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct SetLatestArgs {
    /// The pool this host is in; its next generation is captured from this host.
    #[arg(long)]
    pool: String,
    #[command(flatten)]
    config: ConfigArg,
    /// The operator's fleet work tree (a clone of the fleet repository) to commit in.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Sign the commit with this secret key (as `fleetctl sign`); without it the commit is
    /// left unsigned for review.
    #[arg(long, short = 'k', value_name = "KEY")]
    key: Option<PathBuf>,
    /// Push the branch and refs/notes/pacfleet to the branch's remote (atomically).
    #[arg(long)]
    push: bool,
    /// When signing, do not fetch the remote's signature notes first (warns; not with --push).
    #[arg(long, conflicts_with = "push")]
    offline: bool,
    /// The commit's first line (default: `POOL: generation N captured from HOST (changes)`).
    #[arg(long, short = 'm')]
    message: Option<String>,
}

#[derive(Debug, Args)]
struct RollbackArgs {
    /// The pool to roll back.
    #[arg(long)]
    pool: String,
    /// The operator's fleet work tree (a clone of the fleet repository) to commit in.
    #[arg(long, default_value = ".")]
    repo: PathBuf,
    /// Sign the commit with this secret key (as `fleetctl sign`, with a new sequence number);
    /// without it the commit is left unsigned for review.
    #[arg(long, short = 'k', value_name = "KEY")]
    key: Option<PathBuf>,
    /// Pin this existing generation instead of reverting the last generation change.
    #[arg(long, value_name = "N")]
    to: Option<u32>,
    /// Push the branch and refs/notes/pacfleet to the branch's remote (atomically).
    #[arg(long)]
    push: bool,
    /// When signing, do not fetch the remote's signature notes first (warns; not with --push).
    #[arg(long, conflicts_with = "push")]
    offline: bool,
}

/// Runs `fleetctl` with the process's arguments. A reader that stops reading (`fleetctl
/// history | head -1`) ends the command quietly with exit 0.
pub fn main() -> ExitCode {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if !output::is_broken_pipe(info.payload()) {
            default_hook(info);
        }
    }));
    match std::panic::catch_unwind(run) {
        Ok(code) => code,
        Err(payload) if output::is_broken_pipe(payload.as_ref()) => ExitCode::SUCCESS,
        Err(payload) => std::panic::resume_unwind(payload),
    }
}

fn run() -> ExitCode {
    let cli = Cli::parse();
    let default_level = match &cli.command {
        Command::Reconcile(_) | Command::Agent(_) => "info",
        _ => "warn",
    };
    output::init_logging(cli.verbose, cli.quiet, default_level);
    if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
        pacfleet::progress::set_reporter(std::sync::Arc::new(progress::Bars::default()));
    }
    let result = match cli.command {
        Command::Validate(a) => validate::run(a),
        Command::Resolve(a) => resolve::run(a),
        Command::Diff(a) => diff::run(a),
        Command::Plan(a) => plan::run(a),
        Command::Reconcile(a) => reconcile::run(a),
        Command::History(a) => history::run(a),
        Command::SetLatest(a) => set_latest::run(a),
        Command::Rollback(a) => rollback::run(a),
        Command::Status(a) => status::run(a),
        Command::Agent(a) => agent::run(a),
        Command::Fleet(a) => fleet::run(a),
        Command::Demo(a) => demo::run(a),
        Command::Keygen(a) => keygen::run(a),
        Command::Sign(a) => sign::run(a),
        Command::Verify(a) => verify::run(a),
        Command::Enroll(a) => enroll::run(a),
        Command::Completions(a) => completions::completions(a),
        Command::Manpages(a) => completions::manpages(a),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            output::print_error(&e);
            ExitCode::from(output::exit_code(&e))
        }
    }
}
