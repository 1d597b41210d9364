//! The demo's edits to fleet files, as text (so the commits read like an operator's): the copy
//! of example-fleet with its archive and sha256 pins made to fit the sandbox, a package added
//! to a set, a new generation, and a pool pointed at it.

use std::fmt::Write as _;

use anyhow::{Context as _, bail};

use super::universe::Built;
use pacfleet::manifest::{Fleet, Generation};

/// The copy of example-fleet for the sandbox: (path, contents). `fleet.yaml`'s `archive:`
/// becomes `archive_url`; every `sha256:` pin in `generations/` becomes the hash of the
/// synthetic package of that name and version.
pub(super) fn copy(
    files: &[(&str, &str)],
    fleet: &Fleet,
    archive_url: &str,
    built: &Built,
) -> anyhow::Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for (path, text) in files {
        let text = if *path == fleet.fleet.file {
            set_archive(text, archive_url)
        } else if let Some(g) = fleet.generations.values().find(|g| g.file == *path) {
            rewrite_sha256(text, &g.spec, built).with_context(|| format!("copying {path}"))?
        } else if fleet.pools.values().any(|p| p.file == *path) {
            pool_for_sandbox(text)
        } else {
            (*text).to_owned()
        };
        out.push(((*path).to_owned(), text));
    }
    Ok(out)
}

/// What a sandbox host's health check asks instead of systemd (the demo's hosts are
/// directories, not machines): that the package database is there.
pub(super) const SANDBOX_HEALTH: &str =
    "test -s \"$PACFLEET_ROOT/var/lib/pacman/local/ALPM_DB_VERSION\"";

/// A pool file for the sandbox: its health check asks the sandbox root instead of systemd,
/// and its waves soak for no time (the story's passes follow each other within seconds).
fn pool_for_sandbox(text: &str) -> String {
    let systemd = "\"systemctl is-system-running --wait\"";
    let check = serde_json::to_string(SANDBOX_HEALTH).unwrap_or_default();
    text.lines()
        .map(|l| {
            let l = l.replace(systemd, &check);
            match l.find("soak: ") {
                Some(at) => {
                    let end = l[at..].find('}').map_or(l.len(), |e| at + e);
                    format!("{}soak: 0s{}", &l[..at], &l[end..])
                }
                None => l,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// A Host manifest with `key:` set to `key`: `existing` with the line added (or replaced), or
/// a new manifest naming only the host and its key.
pub(super) fn host_with_key(name: &str, existing: Option<&str>, key: &str) -> String {
    match existing {
        Some(text) => {
            let kept: Vec<&str> = text.lines().filter(|l| !l.starts_with("key:")).collect();
            format!("{}\nkey: {key}\n", kept.join("\n"))
        }
        None => format!("kind: Host\nname: {name}\nkey: {key}\n"),
    }
}

/// `fleet.yaml` with its `archive:` line replaced (or added).
fn set_archive(text: &str, url: &str) -> String {
    let line = format!(
        "# fleetctl demo: the archive is the sandbox's own (older versions of its synthetic packages).\narchive: {url}"
    );
    let mut found = false;
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if !found && l.starts_with("archive:") {
                found = true;
                line.clone()
            } else {
                l.to_owned()
            }
        })
        .collect();
    if !found {
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// A generation's text with every `sha256:` value replaced by the synthetic package's.
fn rewrite_sha256(text: &str, generation: &Generation, built: &Built) -> anyhow::Result<String> {
    let mut out = String::with_capacity(text.len());
    for (i, line) in text.lines().enumerate() {
        let Some(at) = line.find("sha256:") else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let name = line.trim_start().split(':').next().unwrap_or("").trim();
        let pin = generation
            .packages
            .get(name)
            .with_context(|| format!("line {}: no pin for `{name}`", i + 1))?;
        let hash = built.sha256(name, &pin.version)?;
        let value_start = at + "sha256:".len();
        let rest = &line[value_start..];
        let skip = rest.len() - rest.trim_start_matches([' ', '"', '\'']).len();
        let start = value_start + skip;
        let old = line.get(start..start + 64).unwrap_or("");
        if old.len() != 64 || !old.bytes().all(|b| b.is_ascii_hexdigit()) {
            bail!("line {}: cannot find the sha256 value of `{name}`", i + 1);
        }
        out.push_str(&line[..start]);
        out.push_str(&hash);
        out.push_str(&line[start + 64..]);
        out.push('\n');
    }
    Ok(out)
}

/// A package set's text with `package` appended to its block-style `packages:` list.
pub(super) fn add_to_set(text: &str, package: &str) -> anyhow::Result<String> {
    let lines: Vec<&str> = text.lines().collect();
    let Some(start) = lines.iter().position(|l| l.trim_end() == "packages:") else {
        bail!("the set has no block-style `packages:` list");
    };
    let mut last = start;
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        if l.trim_start().starts_with("- ") {
            last = i;
        } else if !(l.trim().is_empty() || l.starts_with(' ') || l.starts_with('#')) {
            break;
        }
    }
    let indent = match lines.get(last) {
        Some(l) if last > start => &l[..l.len() - l.trim_start().len()],
        _ => "  ",
    };
    let mut out: Vec<String> = lines.iter().map(|l| (*l).to_owned()).collect();
    out.insert(last + 1, format!("{indent}- {package}"));
    Ok(out.join("\n") + "\n")
}

/// The text of generation `number` of `generation.pool`: `generation` with `name` at `version`
/// (sha256 `hash`, if the old pin had one), headed by `comment`.
pub(super) fn generation_text(
    generation: &Generation,
    number: u32,
    (name, version, hash): (&str, &str, Option<String>),
    comment: &str,
) -> String {
    let mut out = String::new();
    for l in comment.lines() {
        let _ = writeln!(out, "# {l}");
    }
    let _ = writeln!(out, "kind: Generation");
    let _ = writeln!(out, "pool: {}", generation.pool);
    let _ = writeln!(out, "number: {number}");
    if let Some(s) = &generation.snapshot {
        let _ = writeln!(out, "snapshot: {s}");
    }
    let _ = writeln!(out, "packages:");
    for (n, pin) in &generation.packages {
        let (v, sha) = if n.as_str() == name {
            (
                version.to_owned(),
                hash.clone().filter(|_| pin.sha256.is_some()),
            )
        } else {
            (pin.version.clone(), pin.sha256.clone())
        };
        match sha {
            Some(h) => {
                let _ = writeln!(out, "  {n}: {{version: {v}, sha256: {h}}}");
            }
            None => {
                let _ = writeln!(out, "  {n}: {{version: {v}}}");
            }
        }
    }
    out
}

/// A pool's text with its `generation:` line set to `number`.
pub(super) fn set_pool_generation(text: &str, number: u32) -> anyhow::Result<String> {
    let mut found = 0;
    let out: Vec<String> = text
        .lines()
        .map(|l| {
            if l.starts_with("generation:") {
                found += 1;
                format!("generation: {number}")
            } else {
                l.to_owned()
            }
        })
        .collect();
    if found != 1 {
        bail!("expected one `generation:` line in the pool, found {found}");
    }
    Ok(out.join("\n") + "\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_is_replaced_or_added() {
        let t = set_archive("kind: Fleet\nname: acme\narchive: https://a\n", "file:///x");
        assert!(
            t.ends_with("\narchive: file:///x\n") && !t.contains("https://a"),
            "{t}"
        );
        let t = set_archive("kind: Fleet\nname: acme\n", "file:///x");
        assert!(t.ends_with("\narchive: file:///x\n"), "{t}");
    }

    #[test]
    fn a_package_is_appended_to_the_list() {
        let t =
            "# c\nkind: PackageSet\nname: d\npackages:\n  - a\n  # x\n  - {name: b, repo: extra}\n";
        assert_eq!(
            add_to_set(t, "gimp").unwrap(),
            "# c\nkind: PackageSet\nname: d\npackages:\n  - a\n  # x\n  - {name: b, repo: extra}\n  - gimp\n"
        );
        let t = "kind: PackageSet\nname: d\npackages:\n- a\nexclude: [c]\n";
        assert_eq!(
            add_to_set(t, "g").unwrap(),
            "kind: PackageSet\nname: d\npackages:\n- a\n- g\nexclude: [c]\n"
        );
        assert!(add_to_set("packages: [a]\n", "g").is_err());
    }

    #[test]
    fn pool_generation_is_set() {
        assert_eq!(
            set_pool_generation("kind: Pool\ngeneration: 2\nprune: true\n", 3).unwrap(),
            "kind: Pool\ngeneration: 3\nprune: true\n"
        );
        assert!(set_pool_generation("kind: Pool\n", 3).is_err());
    }
}
