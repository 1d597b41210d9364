//! `fleetctl enroll --repo URL --key PUB… [--fleet NAME] [--config F] [--hostname H]
//! [--ssh-key KEY] [--no-plan] [--force]`: parses the arguments, calls [`pacfleet::enroll::enroll`]
//! and prints what was done, the `hosts/<hostname>.yaml` to commit, the first pass's plan and
//! the next steps. Exit 0 enrolled, 2 error, 3 the
//! repository's target is not signed by the given keys.

use super::EnrollArgs;
use super::output::terminal_safe;
use pacfleet::enroll::{self, EnrollOptions};

pub(super) fn run(args: EnrollArgs) -> anyhow::Result<u8> {
    let opts = EnrollOptions {
        config: args.config,
        repo: args.repo,
        branch: Some(args.branch),
        keys: args.key,
        fleet: args.fleet,
        hostname: args.hostname,
        root: args.root,
        dbpath: args.dbpath,
        pacman_conf: args.pacman_conf,
        state_dir: args.state_dir,
        ssh_key: args.ssh_key,
        status_repo: args.status_repo,
        ssh_known_hosts: args.ssh_known_hosts,
        force: args.force,
    };
    let done = enroll::enroll(&opts)?;
    let cfg = &done.config;
    let t = &done.trust;
    println!(
        "fleet `{}` at {} on branch {}: signed by {} (expires {})",
        terminal_safe(&t.fleet),
        &t.commit[..t.commit.len().min(12)],
        terminal_safe(&cfg.branch),
        t.signers.join(", "),
        t.expires.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    );
    println!(
        "  {}  {}",
        cfg.source.display(),
        if done.config_written {
            "written"
        } else {
            "unchanged"
        }
    );
    println!(
        "  {}  host secret key, {} (NOT password-protected: the agent signs its reports with it unattended)",
        cfg.host_key.display(),
        if done.host_key_created {
            "created"
        } else {
            "kept"
        }
    );
    println!("  {}  host public key", done.host_pub.display());
    println!();
    println!(
        "Commit this as hosts/{}.yaml in the fleet repository (and sign it):",
        terminal_safe(&cfg.hostname)
    );
    println!();
    print!("{}", terminal_safe_lines(&done.host_manifest));
    println!();
    if !args.no_plan {
        // What the first pass would do, as `fleetctl plan` shows it. Enrolling succeeded
        // either way: a plan that cannot be made yet (the host's manifest not committed, an
        // empty root to bootstrap) is shown as the reason.
        println!("The first pass, as the fleet stands now:");
        println!();
        match pacfleet::reconcile::run(cfg, pacfleet::reconcile::PassOptions::default()) {
            Ok(report) => super::report::print_report(&report),
            Err(e) => {
                let text = super::output::error_text(&anyhow::Error::new(e));
                let text = text.strip_prefix("error: ").unwrap_or(&text);
                print!("  cannot plan yet: {text}");
            }
        }
        println!();
    }
    println!("Then, on this host:");
    println!(
        "  fleetctl plan --config {}    # what the next pass would do",
        cfg.source.display()
    );
    println!("  systemctl enable --now pacfleet-reconcile.timer");
    Ok(0)
}

/// `text` line by line through [`terminal_safe`], keeping the newlines.
fn terminal_safe_lines(text: &str) -> String {
    text.lines().map(|l| terminal_safe(l) + "\n").collect()
}
