//! The contract lives in the repository: `docs/contract.md` documents every manifest field (as
//! the generated JSON Schemas list them), every `agent.yaml` field (`config::FIELDS`, which
//! the config's unit tests keep equal to what the parser accepts) and every command and flag
//! (the clap definitions), and nothing more; and no tracked file points at a file outside the
//! repository.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use clap::CommandFactory;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn contract() -> String {
    std::fs::read_to_string(root().join("docs/contract.md")).expect("read docs/contract.md")
}

/// The lines under the heading that starts with `heading` (e.g. `"## 2."`, `"### 1.3 "`), up to
/// the next heading of the same or a higher level.
fn section<'a>(doc: &'a str, heading: &str) -> Vec<&'a str> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let is_end = |l: &str| {
        let hashes = l.chars().take_while(|c| *c == '#').count();
        hashes > 0 && hashes <= level && l[hashes..].starts_with(' ')
    };
    let mut lines = doc.lines().skip_while(|l| !l.starts_with(heading));
    assert!(
        lines.next().is_some(),
        "docs/contract.md has no heading `{heading}`"
    );
    lines.take_while(|l| !is_end(l)).collect()
}

/// The names in the first column of the `| field | …` table of `lines` (`` | `name` | … ``).
fn field_rows(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .skip_while(|l| !l.starts_with("| field |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .map(|l| {
            let cell = l.split('|').nth(1).unwrap_or_default().trim();
            cell.trim_matches('`').to_owned()
        })
        .collect()
}

#[test]
fn docs_no_tracked_file_points_outside_the_repository() {
    // Spelled in pieces, so that this file does not match itself.
    let needles = [
        ["DESIGN", ".md"].concat(),
        ["..", "/shared"].concat(),
        ["/work", "/shared"].concat(),
    ];
    let out = Command::new("git")
        .args(["ls-files", "-z"])
        .current_dir(root())
        .output()
        .expect("run git ls-files");
    assert!(out.status.success(), "git ls-files failed: {out:?}");
    let mut found = Vec::new();
    let files = String::from_utf8(out.stdout).expect("file names are UTF-8");
    for file in files.split('\0').filter(|f| !f.is_empty()) {
        let Ok(bytes) = std::fs::read(root().join(file)) else {
            continue; // deleted in the work tree
        };
        let text = String::from_utf8_lossy(&bytes);
        for (n, line) in text.lines().enumerate() {
            for needle in &needles {
                if line.contains(needle.as_str()) {
                    found.push(format!("{file}:{}: mentions `{needle}`", n + 1));
                }
            }
        }
    }
    assert!(
        found.is_empty(),
        "the repository must not point at files outside it; cite docs/contract.md instead:\n{}",
        found.join("\n")
    );
}

#[test]
fn docs_every_agent_yaml_field_is_documented_in_order() {
    let doc = contract();
    let rows = field_rows(&section(&doc, "## 2."));
    assert_eq!(
        rows,
        pacfleet::config::FIELDS,
        "docs/contract.md §2 must have one row per agent.yaml field, in the order of \
         config::FIELDS"
    );
}

#[test]
fn docs_every_manifest_field_is_documented() {
    let doc = contract();
    let kinds = [
        ("fleet", "### 1.2 "),
        ("pool", "### 1.3 "),
        ("package-set", "### 1.4 "),
        ("generation", "### 1.5 "),
        ("host", "### 1.6 "),
    ];
    let mut problems = Vec::new();
    for (kind, heading) in kinds {
        let path = root().join(format!("schemas/{kind}.schema.json"));
        let text = std::fs::read_to_string(&path).expect("read schema");
        let schema: serde_json::Value = serde_json::from_str(&text).expect("schema is JSON");
        let lines = section(&doc, heading);
        let documented: BTreeSet<String> = field_rows(&lines).into_iter().collect();
        let fields: BTreeSet<String> = schema["properties"]
            .as_object()
            .expect("properties")
            .keys()
            .cloned()
            .collect();
        if documented != fields {
            problems.push(format!(
                "{heading}: the table lists {documented:?}, schemas/{kind}.schema.json has {fields:?}"
            ));
        }
        // Fields of nested mappings (window, keys, pins) are named in the section's text.
        let body = lines.join("\n");
        let defs = schema["$defs"].as_object().into_iter().flatten();
        for (def, value) in defs {
            for field in value["properties"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|p| p.0)
            {
                if !body.contains(&format!("`{field}`")) && !body.contains(&format!("{field},")) {
                    problems.push(format!("{heading}: `{field}` of {def} is not mentioned"));
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn docs_every_command_and_flag_is_documented() {
    let doc = contract();
    let lines = section(&doc, "## 3.");
    let text = lines.join("\n");
    // The command cell of each row of the table: "| `fleetctl NAME …` | does | exit |".
    let rows: Vec<&str> = lines
        .iter()
        .filter(|l| l.starts_with("| `fleetctl "))
        .filter_map(|l| l.split('`').nth(1))
        .collect();
    let cli = fleetctl::cli::Cli::command();
    let mut problems = Vec::new();
    for arg in cli.get_arguments() {
        if let Some(long) = arg.get_long()
            && !text.contains(&format!("`--{long}`"))
        {
            problems.push(format!("global flag --{long} is not in §3"));
        }
    }
    // A command group (`fleetctl fleet`) has a row per command in it (`fleetctl fleet status`).
    let mut commands: Vec<(String, &clap::Command)> = Vec::new();
    for sub in cli.get_subcommands() {
        if sub.has_subcommands() {
            for inner in sub.get_subcommands() {
                commands.push((format!("{} {}", sub.get_name(), inner.get_name()), inner));
            }
        } else {
            commands.push((sub.get_name().to_owned(), sub));
        }
    }
    let mut names = BTreeSet::new();
    for (name, sub) in commands {
        names.insert(name.clone());
        let words = name.split(' ').count();
        let mine: Vec<&str> = rows
            .iter()
            .copied()
            .filter(|r| {
                r.split_whitespace()
                    .skip(1)
                    .take(words)
                    .collect::<Vec<_>>()
                    .join(" ")
                    == name
            })
            .collect();
        let [row] = mine[..] else {
            problems.push(format!(
                "`fleetctl {name}` has {} rows in §3, not one",
                mine.len()
            ));
            continue;
        };
        let mut flags = BTreeSet::new();
        for arg in sub.get_arguments() {
            if let Some(long) = arg.get_long() {
                flags.insert(long.to_owned());
                if !row.contains(&format!("--{long}")) {
                    problems.push(format!("`fleetctl {name}`: --{long} is not in its row"));
                }
            } else if arg.is_positional() {
                let value = arg.get_id().as_str().to_uppercase();
                if !row.contains(&value) {
                    problems.push(format!("`fleetctl {name}`: {value} is not in its row"));
                }
            }
            if let Some(env) = arg.get_env().and_then(|e| e.to_str())
                && !text.contains(env)
            {
                problems.push(format!("`fleetctl {name}`: environment {env} is not in §3"));
            }
        }
        for word in row.split(|c: char| !(c.is_ascii_alphanumeric() || c == '-')) {
            if let Some(long) = word.strip_prefix("--")
                && !flags.contains(long)
            {
                problems.push(format!(
                    "`fleetctl {name}`: its row names --{long}, which it does not take"
                ));
            }
        }
    }
    for row in &rows {
        let name = row.split_whitespace().nth(1).unwrap_or_default();
        let two = row
            .split_whitespace()
            .skip(1)
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        if !names.contains(name) && !names.contains(&two) {
            problems.push(format!(
                "§3 documents `fleetctl {name}`, which does not exist"
            ));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
