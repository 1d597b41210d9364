//! The library's dependencies point one way. Every top-level module of `crates/pacfleet/src/`
//! has a layer below; a module may use modules of its own layer or lower ones, never higher,
//! and the module graph has no cycle. Read from the source (`crate::x` paths outside comments
//! and test code), so a new `use` that points the wrong way fails here with the edge and what to
//! do. A new module must be given its layer in `LAYERS`. The command line is another crate on
//! top (`fleetctl`, src/cli), and the library depends on no command-line crate.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

/// Bottom to top (README, "Development", says what each layer is for).
const LAYERS: &[(&str, &[&str])] = &[
    // Leaves: no pacfleet module below them.
    (
        "leaves",
        &[
            "escape",
            "keys",
            "process",
            "progress",
            "snapshot",
            "sync_source",
        ],
    ),
    // The fleet repository's manifests, read out of git by exact path or whole (`source`),
    // and the host's agent.yaml.
    ("data", &["manifest", "source", "config"]),
    // Pure rules on that data.
    (
        "rules",
        &["trust", "window", "resolve", "rollout", "report", "peers"],
    ),
    (
        "planning",
        &["plan", "diff", "archive", "validate", "fleet_status"],
    ),
    // I/O at the edges: libalpm, state files, metrics, health checks, the status repository.
    (
        "edges",
        &[
            "system",
            "state",
            "apply",
            "capture",
            "metrics",
            "health",
            "status_repo",
            "peer_serve",
            "download",
            "peer_discover",
        ],
    ),
    // One pass, then what runs passes.
    ("pass", &["reconcile"]),
    ("agent", &["agent", "enroll"]),
    // The operator's workflows in a fleet repository: reading a fleet out of git, the work
    // tree, the signature notes, signing, set-latest, rollback.
    (
        "operator",
        &[
            "fleet_read",
            "fleet_reports",
            "notes_sync",
            "worktree",
            "signing",
            "set_latest",
            "rollback",
        ],
    ),
];

/// The text of `file` without comment lines and without test code (from the first
/// `#[cfg(test)]` on: test modules sit at the end of each file).
fn product_code(file: &Path) -> String {
    let text = fs::read_to_string(file).expect("read source");
    let text = match text.find("#[cfg(test)]") {
        Some(i) => &text[..i],
        None => &text[..],
    };
    text.lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Files of `dir` (recursively), skipping `mod` files a parent includes only under
/// `#[cfg(test)]`.
fn source_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    let mut test_only = BTreeSet::new();
    for e in fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        if p.extension().is_some_and(|x| x == "rs") {
            let text = fs::read_to_string(&p).expect("read source");
            let lines: Vec<&str> = text.lines().collect();
            for w in lines.windows(2) {
                if w[0].trim() == "#[cfg(test)]"
                    && let Some(name) = w[1]
                        .trim()
                        .strip_prefix("mod ")
                        .and_then(|r| r.strip_suffix(';'))
                {
                    test_only.insert(name.to_owned());
                }
            }
        }
    }
    for e in fs::read_dir(dir).expect("read src").flatten() {
        let p = e.path();
        let stem = p
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        if test_only.contains(&stem) {
            continue;
        }
        if p.is_dir() {
            source_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// Top-level module → the top-level modules it uses.
fn module_graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/pacfleet/src");
    let mut files = Vec::new();
    source_files(&src, &mut files);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for file in files {
        let rel = file.strip_prefix(&src).expect("under src");
        let first = rel
            .components()
            .next()
            .expect("a component")
            .as_os_str()
            .to_string_lossy()
            .into_owned();
        let module = first.trim_end_matches(".rs").to_owned();
        if module == "lib" || module == "main" {
            continue;
        }
        let code = product_code(&file);
        let deps = graph.entry(module.clone()).or_default();
        for (i, _) in code.match_indices("crate::") {
            let rest = &code[i + "crate::".len()..];
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                .collect();
            if !name.is_empty() && name != module {
                deps.insert(name);
            }
        }
    }
    graph
}

fn layer_of(module: &str) -> Option<(usize, &'static str)> {
    LAYERS
        .iter()
        .enumerate()
        .find(|(_, (_, mods))| mods.contains(&module))
        .map(|(i, (name, _))| (i, *name))
}

#[test]
fn every_module_has_a_layer_and_uses_only_its_own_or_lower_ones() {
    let graph = module_graph();
    let mut problems = Vec::new();
    for (module, deps) in &graph {
        let Some((mine, my_layer)) = layer_of(module) else {
            problems.push(format!(
                "src/{module}: no layer; add it to LAYERS in tests/it/layers.rs"
            ));
            continue;
        };
        for dep in deps {
            match layer_of(dep) {
                Some((theirs, their_layer)) if theirs > mine => problems.push(format!(
                    "{module} ({my_layer}) uses {dep} ({their_layer}), a higher layer: move the code it needs down, or pass it in"
                )),
                Some(_) => {}
                None if graph.contains_key(dep) => {}
                None => problems.push(format!("{module} uses crate::{dep}, which is no module")),
            }
        }
    }
    for (_, mods) in LAYERS {
        for m in *mods {
            if !graph.contains_key(*m) {
                problems.push(format!(
                    "LAYERS names {m}, which is no module of crates/pacfleet/src/"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn the_module_graph_has_no_cycle() {
    let graph = module_graph();
    // Depth-first search; a back edge is a cycle, reported with its path.
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == m) {
            let mut cycle = path[i..].to_vec();
            cycle.push(m.to_owned());
            return Some(cycle);
        }
        if done.contains(m) {
            return None;
        }
        path.push(m.to_owned());
        for dep in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(dep, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    for m in graph.keys() {
        if let Some(cycle) = visit(m, &graph, &mut Vec::new(), &mut done) {
            panic!("module cycle: {}", cycle.join(" -> "));
        }
    }
}

#[test]
fn the_library_depends_on_no_command_line_crate() {
    let toml = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/pacfleet/Cargo.toml"),
    )
    .expect("read crates/pacfleet/Cargo.toml");
    let normal = toml
        .split("[dev-dependencies]")
        .next()
        .expect("the text before dev-dependencies");
    for forbidden in [
        "clap",
        "anyhow",
        "indicatif",
        "tracing-subscriber",
        "tracing-journald",
        "schemars",
        "pacfleet-support",
    ] {
        assert!(
            !normal
                .lines()
                .any(|l| l.trim_start().starts_with(forbidden)),
            "crates/pacfleet depends on {forbidden}: that belongs to the fleetctl crate (or the tests)"
        );
    }
}
