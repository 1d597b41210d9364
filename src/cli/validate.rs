//! `fleetctl validate [PATH]`: every problem of a fleet work tree at once; exit 0 valid, 2 not.

use anyhow::Context;

use super::ValidateArgs;
use pacfleet::manifest::{Fleet, FleetFiles};

pub(super) fn run(args: ValidateArgs) -> anyhow::Result<u8> {
    let files = FleetFiles::from_dir(&args.path)?;
    let result = Fleet::from_files(&files);
    if args.json {
        let diags = match &result {
            Ok(_) => Vec::new(),
            Err(d) => d.0.clone(),
        };
        super::output::json(
            &serde_json::json!({ "valid": diags.is_empty(), "diagnostics": diags }),
        )?;
        return Ok(if diags.is_empty() { 0 } else { 2 });
    }
    match result {
        Ok(fleet) => {
            println!(
                "{}: fleet `{}` is valid: {} pools, {} package sets, {} generations, {} host manifests",
                args.path.display(),
                fleet.name(),
                fleet.pools.len(),
                fleet.sets.len(),
                fleet.generations.len(),
                fleet.hosts.len()
            );
            Ok(0)
        }
        Err(diags) => {
            let root = args
                .path
                .canonicalize()
                .with_context(|| format!("reading {}", args.path.display()))?;
            for d in &diags.0 {
                // Paths relative to the current directory when possible, so editors can jump.
                let file = root.join(&d.file);
                let shown = std::env::current_dir()
                    .ok()
                    .and_then(|cwd| file.strip_prefix(cwd).ok().map(|p| p.display().to_string()))
                    .unwrap_or_else(|| file.display().to_string());
                eprintln!(
                    "{}:{}:{}: {}",
                    super::output::terminal_safe(&shown),
                    d.line,
                    d.column,
                    super::output::terminal_safe(&d.message)
                );
            }
            let n = diags.0.len();
            eprintln!(
                "{n} problem{} found; nothing is valid until all are fixed",
                if n == 1 { "" } else { "s" }
            );
            Ok(2)
        }
    }
}
