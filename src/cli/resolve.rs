//! `fleetctl resolve --host NAME [PATH]`: the desired state of one host.

use super::ResolveArgs;
use pacfleet::manifest::Fleet;
use pacfleet::resolve;

pub(super) fn run(args: ResolveArgs) -> anyhow::Result<u8> {
    let fleet = Fleet::from_dir(&args.path)?;
    let resolved = resolve::resolve(&fleet, &args.host)?;
    let wave = match &resolved {
        Some(r) => pacfleet::rollout::place(r)?.map(|(p, _)| p),
        None => None,
    };
    if args.json {
        super::output::json(&serde_json::json!({
            "host": args.host,
            "in_fleet": resolved.is_some(),
            "resolved": resolved,
            "wave": wave,
        }))?;
        return Ok(0);
    }
    let Some(r) = resolved else {
        println!(
            "host {} is not in the fleet: no pool selects it, so pacfleet does nothing there",
            args.host
        );
        return Ok(0);
    };
    println!("host      {}", r.host);
    println!("fleet     {}", r.fleet);
    println!("pool      {}", r.pool);
    match (r.generation, &r.snapshot) {
        (Some(g), _) => println!(
            "pinned    generation {g} ({} packages locked)",
            r.pins.len()
        ),
        (None, None) => println!("floating  full system upgrade against the host's repositories"),
        (None, Some(s)) => {
            println!("floating  full system upgrade against the archive's repositories of {s}")
        }
    }
    if let Some(date) = &r.snapshot {
        // Validation guarantees the archive; say so plainly if a caller bypassed it.
        let servers = pacfleet::snapshot::server(r.archive.as_deref(), date)
            .unwrap_or_else(|e| format!("unusable: {e}"));
        println!("snapshot  {date}: every repository from {servers}");
    }
    println!(
        "prune     {}",
        if r.prune {
            "yes: packages pacfleet installed and no longer desired are removed"
        } else {
            "no"
        }
    );
    match &r.window {
        Some(w) => println!("window    {} for {}", w.cron, w.duration),
        None => println!("window    any time"),
    }
    if r.paused {
        println!("paused    yes: hosts plan and report but apply nothing");
    }
    if let Some(w) = &wave {
        println!(
            "wave      {} ({} of {}; bucket {})",
            w.name,
            w.index + 1,
            w.of,
            w.bucket
        );
    }
    if let Some(h) = &r.gates.health {
        println!(
            "health    {} command(s) after applying{}",
            h.commands.len(),
            if h.rollback {
                ", rollback on failure"
            } else {
                ""
            }
        );
    }
    println!("\ndesired explicit packages ({}):", r.explicit.len());
    let width = r.explicit.keys().map(|k| k.len()).max().unwrap_or(0);
    for (name, d) in &r.explicit {
        let pin = r
            .pins
            .get(name)
            .map(|p| format!(" = {}", p.version))
            .unwrap_or_default();
        let repo = d
            .repo
            .as_ref()
            .map(|r| format!(" [{r}]"))
            .unwrap_or_default();
        let who: Vec<String> = d.origins.iter().map(|o| o.to_string()).collect();
        println!("  {name:width$}{pin}{repo}  ({})", who.join(", "));
    }
    if !r.excluded.is_empty() {
        println!("\nexcluded:");
        for (name, by) in &r.excluded {
            let who: Vec<String> = by.iter().map(|o| o.to_string()).collect();
            println!("  {name}  (by {})", who.join(", "));
        }
    }
    Ok(0)
}
