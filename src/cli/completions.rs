//! `fleetctl completions SHELL` and the hidden `fleetctl manpages DIR`: shell completion
//! scripts and man pages generated from the clap definitions in `cli/mod.rs` (clap_complete,
//! clap_mangen), so they always match the binary. The PKGBUILD installs both.

use std::io::Write as _;

use anyhow::Context as _;
use clap::CommandFactory as _;

use super::{Cli, CompletionsArgs, ManpagesArgs};

pub(super) fn completions(args: CompletionsArgs) -> anyhow::Result<u8> {
    let mut cmd = Cli::command();
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut cmd, "fleetctl", &mut out);
    std::io::stdout().write_all(&out)?;
    Ok(0)
}

pub(super) fn manpages(args: ManpagesArgs) -> anyhow::Result<u8> {
    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("cannot create {}", args.dir.display()))?;
    let cmd = Cli::command();
    let mut pages = vec![(String::from("fleetctl"), cmd.clone())];
    // A command group (`fleetctl fleet`) has a page, and so has each command in it
    // (`fleetctl-fleet-status.1`).
    let mut commands: Vec<(String, clap::Command)> = Vec::new();
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        commands.push((sub.get_name().to_owned(), sub.clone()));
        for inner in sub.get_subcommands().filter(|s| !s.is_hide_set()) {
            commands.push((
                format!("{} {}", sub.get_name(), inner.get_name()),
                inner.clone(),
            ));
        }
    }
    for (words, sub) in commands {
        let name = format!("fleetctl-{}", words.replace(' ', "-"));
        // The page's NAME and SYNOPSIS show the full invocation, `fleetctl-plan` → `fleetctl plan`.
        let sub = sub
            .name(name.clone())
            .bin_name(format!("fleetctl {words}"))
            .version(cmd.get_version().unwrap_or_default().to_owned());
        pages.push((name, sub));
    }
    for (name, page) in pages {
        let path = args.dir.join(format!("{name}.1"));
        let mut text = Vec::new();
        clap_mangen::Man::new(page)
            .render(&mut text)
            .with_context(|| format!("cannot render {}", path.display()))?;
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        println!("{}", path.display());
    }
    Ok(0)
}
