//! Test-only: the JSON Schemas in `schemas/` (one per manifest kind, for editors and CI), and
//! what keeps them, the Rust types and `example-fleet/` in agreement.
//!
//! - The schemas are generated from the manifest types with schemars, never written by hand:
//!   `schemas_match_the_rust_types` regenerates them and fails on any difference; with
//!   `PACFLEET_UPDATE_SCHEMAS=1` it (and every test here) writes them first instead.
//! - Every manifest of `example-fleet/` validates against the committed schema picked by its
//!   path, and the whole fleet loads with `Fleet::from_dir` without a diagnostic.
//! - The other direction: a maximal fleet (every field of every kind set) is accepted by both
//!   the schemas and the Rust loader, single mutations of it that break a rule (unknown field,
//!   bad name, wrong type) are rejected by both, and names agree character for character.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Once;

use schemars::{JsonSchema, Schema};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::{Fleet, FleetFiles, FleetSpec, Generation, Host, Name, PackageSet, Pool};

/// Set (to anything but empty or `0`) to write the schemas instead of comparing them.
const UPDATE_VAR: &str = "PACFLEET_UPDATE_SCHEMAS";

/// One manifest kind and its schema.
struct Kind {
    /// The `kind:` value, as `load::expected_kind` returns it for the kind's paths.
    kind: &'static str,
    /// File name under `schemas/`.
    file: &'static str,
    /// The schema's `$id`.
    id: &'static str,
    /// The schema's `title`.
    title: &'static str,
    /// schemars' schema for the Rust type.
    generate: fn() -> Schema,
    /// Deserializes a YAML document into the Rust type and serializes it back as JSON: what
    /// the loader reads and what `fleetctl` writes (e.g. `set-latest`).
    round_trip: fn(&str) -> Result<Value, String>,
}

const KINDS: [Kind; 5] = [
    Kind {
        kind: "Fleet",
        file: "fleet.schema.json",
        id: "urn:pacfleet:schema:fleet",
        title: "pacfleet Fleet manifest (fleet.yaml)",
        generate: generate::<FleetSpec>,
        round_trip: round_trip::<FleetSpec>,
    },
    Kind {
        kind: "Pool",
        file: "pool.schema.json",
        id: "urn:pacfleet:schema:pool",
        title: "pacfleet Pool manifest (pools/<name>.yaml)",
        generate: generate::<Pool>,
        round_trip: round_trip::<Pool>,
    },
    Kind {
        kind: "PackageSet",
        file: "package-set.schema.json",
        id: "urn:pacfleet:schema:package-set",
        title: "pacfleet PackageSet manifest (packages/<name>.yaml)",
        generate: generate::<PackageSet>,
        round_trip: round_trip::<PackageSet>,
    },
    Kind {
        kind: "Generation",
        file: "generation.schema.json",
        id: "urn:pacfleet:schema:generation",
        title: "pacfleet Generation manifest (generations/<pool>/<number>.yaml)",
        generate: generate::<Generation>,
        round_trip: round_trip::<Generation>,
    },
    Kind {
        kind: "Host",
        file: "host.schema.json",
        id: "urn:pacfleet:schema:host",
        title: "pacfleet Host manifest (hosts/<hostname>.yaml)",
        generate: generate::<Host>,
        round_trip: round_trip::<Host>,
    },
];

fn generate<T: JsonSchema>() -> Schema {
    schemars::schema_for!(T)
}

fn round_trip<T: DeserializeOwned + Serialize>(yaml: &str) -> Result<Value, String> {
    let spec: T = serde_yaml::from_str(yaml).map_err(|e| e.to_string())?;
    serde_json::to_value(&spec).map_err(|e| e.to_string())
}

/// The repository's root (this crate is crates/pacfleet): schemas/ and example-fleet/.
fn crate_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

fn schema_path(k: &Kind) -> PathBuf {
    crate_dir().join("schemas").join(k.file)
}

/// The schema file's exact text: pretty-printed JSON with a trailing newline.
fn render(k: &Kind) -> String {
    let mut schema = (k.generate)();
    schema.insert("$id".into(), k.id.into());
    schema.insert("title".into(), k.title.into());
    schema.insert(
        "$comment".into(),
        format!(
            "Generated from the Rust type by src/manifest/schema.rs; do not edit. Regenerate with `{UPDATE_VAR}=1 cargo test schema`."
        )
        .into(),
    );
    let mut text = serde_json::to_string_pretty(&schema).expect("a schema serializes");
    text.push('\n');
    text
}

fn update_mode() -> bool {
    std::env::var(UPDATE_VAR).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// In update mode, writes every schema that differs, once per test run and before any test
/// reads them.
fn sync_schemas() {
    static ONCE: Once = Once::new();
    if !update_mode() {
        return;
    }
    ONCE.call_once(|| {
        std::fs::create_dir_all(crate_dir().join("schemas")).expect("create schemas/");
        for k in &KINDS {
            let text = render(k);
            let path = schema_path(k);
            if std::fs::read_to_string(&path).ok().as_deref() != Some(text.as_str()) {
                std::fs::write(&path, text)
                    .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
            }
        }
    });
}

fn drift_message(file: &str) -> String {
    format!(
        "schemas/{file} drifted from the Rust types; run `{UPDATE_VAR}=1 cargo test schema` and commit the result"
    )
}

fn kind(name: &str) -> &'static Kind {
    KINDS
        .iter()
        .find(|k| k.kind == name)
        .unwrap_or_else(|| panic!("no schema for kind {name}"))
}

/// The committed schema of a kind.
fn committed(k: &Kind) -> Value {
    sync_schemas();
    let path = schema_path(k);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "cannot read {}: {e}; {}",
            path.display(),
            drift_message(k.file)
        )
    });
    serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!(
            "schemas/{} is not JSON ({e}); {}",
            k.file,
            drift_message(k.file)
        )
    })
}

fn validator(k: &Kind) -> jsonschema::Validator {
    jsonschema::validator_for(&committed(k))
        .unwrap_or_else(|e| panic!("schemas/{} does not compile as a JSON Schema: {e}", k.file))
}

/// YAML text as the JSON value a schema validator (or an editor) sees.
fn yaml_to_json(path: &str, yaml: &str) -> Value {
    serde_yaml::from_str(yaml).unwrap_or_else(|e| panic!("{path} is not YAML: {e}"))
}

/// The schema's complaints about a document, one line each; empty when it is valid.
fn schema_errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc)
        .map(|e| format!("at `{}`: {e}", e.instance_path()))
        .collect()
}

/// The schema for a manifest at `path` (relative to the fleet root), chosen by the same rule
/// the loader uses; `None` for files that are not manifests.
fn kind_for_path(path: &str) -> Option<&'static Kind> {
    super::load::expected_kind(path).map(kind)
}

/// The loader's verdict on a set of files: every diagnostic as `file:line:column: message`.
fn load(files: &[(String, String)]) -> Vec<(String, String)> {
    let files = FleetFiles::from_blobs(
        files
            .iter()
            .map(|(p, t)| (p.clone(), t.as_bytes().to_vec())),
    );
    match Fleet::from_files(&files) {
        Ok(_) => Vec::new(),
        Err(d) => {
            d.0.into_iter()
                .map(|d| (d.file.clone(), d.to_string()))
                .collect()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The schemas themselves.

#[test]
fn schemas_match_the_rust_types() {
    sync_schemas();
    let mut problems = Vec::new();
    for k in &KINDS {
        let want = render(k);
        match std::fs::read_to_string(schema_path(k)) {
            Ok(have) if have == want => {}
            Ok(have) => {
                let line = have
                    .lines()
                    .zip(want.lines())
                    .position(|(a, b)| a != b)
                    .map_or_else(
                        || have.lines().count().min(want.lines().count()) + 1,
                        |i| i + 1,
                    );
                problems.push(format!(
                    "{} (first difference at line {line})",
                    drift_message(k.file)
                ));
            }
            Err(e) => problems.push(format!("{} (cannot read it: {e})", drift_message(k.file))),
        }
    }
    // A schema file no kind generates any more is stale too.
    let known: BTreeSet<&str> = KINDS.iter().map(|k| k.file).collect();
    if let Ok(dir) = std::fs::read_dir(crate_dir().join("schemas")) {
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".json") && !known.contains(name.as_str()) {
                problems.push(format!(
                    "schemas/{name} is generated by no manifest kind; delete it"
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn schemas_are_valid_draft_2020_12() {
    for k in &KINDS {
        let schema = committed(k);
        assert_eq!(
            schema["$schema"], "https://json-schema.org/draft/2020-12/schema",
            "schemas/{}",
            k.file
        );
        assert_eq!(schema["$id"], k.id, "schemas/{}", k.file);
        if let Err(e) = jsonschema::meta::validate(&schema) {
            panic!("schemas/{} is not a valid JSON Schema: {e}", k.file);
        }
        // The `kind` tag is required and admits exactly the kind's name.
        let v = validator(k);
        assert!(
            schema["required"]
                .as_array()
                .is_some_and(|r| r.contains(&"kind".into())),
            "schemas/{}",
            k.file
        );
        let mut doc = maximal_doc(k);
        doc["kind"] = "Nope".into();
        assert!(!v.is_valid(&doc), "schemas/{} accepts `kind: Nope`", k.file);
    }
}

/// Every object in every schema that has declared properties, as (schema file, JSON pointer).
fn object_schemas() -> Vec<(&'static str, String, Value)> {
    fn walk(v: &Value, at: String, out: &mut Vec<(String, Value)>) {
        match v {
            Value::Object(m) => {
                if m.contains_key("properties") {
                    out.push((at.clone(), v.clone()));
                }
                for (key, child) in m {
                    walk(child, format!("{at}/{key}"), out);
                }
            }
            Value::Array(a) => {
                for (i, child) in a.iter().enumerate() {
                    walk(child, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    for k in &KINDS {
        let mut found = Vec::new();
        walk(&committed(k), String::new(), &mut found);
        out.extend(found.into_iter().map(|(at, v)| (k.file, at, v)));
    }
    out
}

#[test]
fn every_object_schema_denies_unknown_fields() {
    // Every manifest struct (and PackageRef's `{name, repo}` form) rejects unknown fields, so
    // every object schema with properties must say `additionalProperties: false`.
    let open: Vec<String> = object_schemas()
        .into_iter()
        .filter(|(_, _, v)| v.get("additionalProperties") != Some(&Value::Bool(false)))
        .map(|(file, at, _)| format!("schemas/{file}#{at}"))
        .collect();
    assert!(
        open.is_empty(),
        "object schemas that allow unknown fields: {open:?}"
    );
}

#[test]
fn package_ref_is_a_name_or_a_name_repo_mapping() {
    for k in [kind("Pool"), kind("PackageSet"), kind("Host")] {
        let schema = committed(k);
        let defs = &schema["$defs"];
        let any_of = defs["PackageRef"]["anyOf"].as_array().unwrap_or_else(|| {
            panic!(
                "schemas/{}: PackageRef is not an anyOf: {}",
                k.file, defs["PackageRef"]
            )
        });
        assert_eq!(any_of.len(), 2, "schemas/{}: {any_of:?}", k.file);
        assert_eq!(any_of[0]["$ref"], "#/$defs/Name", "schemas/{}", k.file);
        assert_eq!(defs["Name"]["type"], "string", "schemas/{}", k.file);
        let object = &any_of[1];
        assert_eq!(object["type"], "object", "schemas/{}", k.file);
        let props: BTreeSet<&str> = object["properties"]
            .as_object()
            .into_iter()
            .flat_map(|m| m.keys())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(
            props,
            BTreeSet::from(["name", "repo"]),
            "schemas/{}",
            k.file
        );
        assert_eq!(
            object["required"],
            serde_json::json!(["name"]),
            "schemas/{}",
            k.file
        );
    }
    // Both forms are accepted by both sides; a mapping without a name, a number and a list
    // are rejected by both.
    let v = validator(kind("PackageSet"));
    for (item, ok) in [
        ("firefox", true),
        ("{name: openssh, repo: core}", true),
        ("{name: openssh}", true),
        ("{repo: core}", false),
        ("7", false),
        ("[firefox]", false),
        ("{name: Firefox}", false),
    ] {
        let yaml = format!("kind: PackageSet\nname: s\npackages: [{item}]\n");
        let schema_ok = v.is_valid(&yaml_to_json("packages/s.yaml", &yaml));
        let rust = (kind("PackageSet").round_trip)(&yaml);
        assert_eq!(schema_ok, ok, "schema on packages: [{item}]");
        assert_eq!(rust.is_ok(), ok, "Rust on packages: [{item}]: {rust:?}");
    }
}

#[test]
fn names_agree_with_the_rust_rule() {
    let schema = committed(kind("Fleet"));
    assert!(
        schema["$defs"]["Name"]["pattern"].is_string(),
        "the Name schema has no pattern: {}",
        schema["$defs"]["Name"]
    );
    let v = validator(kind("Fleet"));
    let long = |n: usize| "a".repeat(n);
    let candidates: Vec<String> = [
        "acme",
        "a",
        "0ad",
        "a.b",
        "a-b",
        "a_b",
        "a+b",
        "a@b",
        "_a",
        "+a",
        "@a",
        "gtk2+",
        "lib32-glibc",
        "-a",
        ".a",
        "A",
        "aB",
        "a b",
        "",
        "ä",
        "a/b",
        "a:b",
        "a\n",
        "a*",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([long(255), long(256)])
    .collect();
    for name in candidates {
        let rust_ok = Name::new(&name).is_ok();
        let doc = serde_json::json!({"kind": "Fleet", "name": name});
        assert_eq!(
            v.is_valid(&doc),
            rust_ok,
            "name {name:?}: schema and Name::new disagree"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// example-fleet/

fn example_root() -> PathBuf {
    crate_dir().join("example-fleet")
}

/// Every file under `root`, as `/`-separated paths relative to it, sorted.
fn walk_files(root: &Path) -> Vec<String> {
    fn walk(dir: &Path, rel: &str, out: &mut Vec<String>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()));
        for entry in entries {
            let entry = entry.expect("directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            if entry.path().is_dir() {
                walk(&entry.path(), &path, out);
            } else {
                out.push(path);
            }
        }
    }
    let mut out = Vec::new();
    walk(root, "", &mut out);
    out.sort();
    out
}

#[test]
fn example_fleet_manifests_validate_against_the_schemas() {
    let root = example_root();
    let mut per_kind: BTreeMap<&str, usize> = BTreeMap::new();
    let mut problems = Vec::new();
    for path in walk_files(&root) {
        let is_yaml = path.ends_with(".yaml") || path.ends_with(".yml");
        let Some(k) = kind_for_path(&path) else {
            // A YAML file outside the manifest layout would be silently ignored by the loader;
            // only CI configuration may sit elsewhere.
            if is_yaml && !path.starts_with(".github/") {
                problems.push(format!(
                    "example-fleet/{path} is not at a manifest path (docs/contract.md §1.1)"
                ));
            }
            continue;
        };
        let text = std::fs::read_to_string(root.join(&path)).expect("read manifest");
        let errors = schema_errors(&validator(k), &yaml_to_json(&path, &text));
        problems.extend(
            errors
                .into_iter()
                .map(|e| format!("example-fleet/{path}: {e} (schemas/{})", k.file)),
        );
        *per_kind.entry(k.kind).or_default() += 1;
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    for k in &KINDS {
        assert!(
            per_kind.get(k.kind).is_some_and(|n| *n > 0),
            "example-fleet has no {} manifest",
            k.kind
        );
    }
}

#[test]
fn example_fleet_loads_without_diagnostics() {
    if let Err(e) = Fleet::from_dir(&example_root()) {
        panic!("example-fleet does not load:\n{e}");
    }
}

#[test]
fn example_fleet_resolves_as_its_readme_says() {
    use crate::resolve::resolve;
    let fleet = Fleet::from_dir(&example_root()).unwrap_or_else(|e| panic!("{e}"));
    let pool_of = |h: &str| {
        resolve(&fleet, h)
            .unwrap_or_else(|e| panic!("{e}"))
            .map(|r| r.pool)
    };
    assert_eq!(pool_of("ws-01").as_deref(), Some("workstations"));
    assert_eq!(pool_of("laptop-alice").as_deref(), Some("workstations"));
    assert_eq!(pool_of("canary-01").as_deref(), Some("canary"));
    assert_eq!(pool_of("build-03").as_deref(), Some("build-servers"));
    assert_eq!(
        pool_of("db-01"),
        None,
        "a host no pool selects is not in the fleet"
    );

    let ws07 = resolve(&fleet, "ws-07").unwrap().unwrap();
    assert!(
        ws07.explicit.contains_key("nvidia") && ws07.explicit.contains_key("vim"),
        "{:?}",
        ws07.explicit
    );
    assert!(
        ws07.excluded.contains_key("nano") && ws07.excluded.contains_key("thunderbird"),
        "{:?}",
        ws07.excluded
    );
    assert_eq!(ws07.explicit["openssh"].repo.as_deref(), Some("core"));
    assert!(ws07.generation.is_none() && ws07.prune && ws07.window.is_some());
    let ws01 = resolve(&fleet, "ws-01").unwrap().unwrap();
    assert!(ws01.explicit.contains_key("thunderbird") && !ws01.explicit.contains_key("nvidia"));

    // build-servers ships floating, so that a copy of the fleet bootstraps real builders.
    let build = resolve(&fleet, "build-01").unwrap().unwrap();
    assert_eq!(build.generation, None);
    assert_eq!(build.snapshot, None);

    // Pinned to its example generation 2, as `fleetctl set-latest` would pin it, every package a
    // builder asks for is locked.
    let root = example_root();
    let pool_file = "pools/build-servers.yaml";
    let files = FleetFiles::from_blobs(walk_files(&root).into_iter().map(|p| {
        let text = std::fs::read_to_string(root.join(&p)).unwrap();
        let text = if p == pool_file {
            crate::capture::set_pool_generation(pool_file, &text, 2).unwrap()
        } else {
            text
        };
        (p, text.into_bytes())
    }));
    let fleet = Fleet::from_files(&files).unwrap_or_else(|e| panic!("{e}"));
    let build = resolve(&fleet, "build-01").unwrap().unwrap();
    assert_eq!(build.generation, Some(2));
    assert_eq!(build.snapshot.as_deref(), Some("2025-03-01"));
    assert!(build.explicit.contains_key("tmux") && build.explicit.contains_key("nano"));
    for name in build.explicit.keys() {
        assert!(
            build.pins.contains_key(name),
            "{name} is desired on build-01 but not pinned"
        );
    }

    // Generation 2 upgrades some packages and downgrades linux-firmware relative to 1.
    let g = |n: u32| {
        &fleet.generations[&(Name::new("build-servers").unwrap(), n)]
            .spec
            .packages
    };
    let (one, two) = (g(1), g(2));
    assert_eq!(
        one.keys().collect::<Vec<_>>(),
        two.keys().collect::<Vec<_>>()
    );
    let cmp = |p: &str| alpm::vercmp(one[p].version.as_str(), two[p].version.as_str());
    assert_eq!(cmp("linux"), std::cmp::Ordering::Less);
    assert_eq!(cmp("openssh"), std::cmp::Ordering::Less);
    assert_eq!(cmp("linux-firmware"), std::cmp::Ordering::Greater);
    assert_eq!(cmp("bash"), std::cmp::Ordering::Equal);
}

// ---------------------------------------------------------------------------------------------
// Both directions: a maximal fleet, and single mutations of it.

/// A real minisign public key (made with `minisign -G -W`; its secret half was thrown away).
const KEY: &str = "RWQP0hc6U9KmVLCtr4e0Tw/yx7u1W5x0xoQdJj8xRhLiRPcrN70cC1T0";

const SHA: &str = "3f7a0c9d5b1e4a6f8c2d0b9e7a5c3f1d9b7e5a3c1f0d8b6e4a2c0f9d7b5e3a1c";

/// A fleet in which every field of every kind is set, and which loads without a diagnostic.
fn maximal_fleet() -> Vec<(String, String)> {
    [
        (
            "fleet.yaml",
            format!("kind: Fleet\nname: acme\narchive: https://archive.archlinux.org\nkeys:\n  - {{name: ops, key: {KEY}}}\n"),
        ),
        (
            "pools/web.yaml",
            "kind: Pool\n\
             name: web\n\
             hosts: [\"web-*\", web-canary]\n\
             labels: {role: web}\n\
             package_sets: [base]\n\
             packages: [nginx, {name: openssl, repo: core}]\n\
             exclude: [nano]\n\
             generation: 1\n\
             snapshot: 2025-03-01\n\
             prune: true\n\
             window: {cron: \"0 0 2 * * Sat\", duration: 4h}\n\
             paused: false\n\
             rollout:\n\
             \x20 waves:\n\
             \x20   - {name: canary, hosts: [web-canary], labels: {tier: canary}}\n\
             \x20   - {name: rest, percent: 100, soak: 2h}\n\
             \x20 failure_budget: 1\n\
             \x20 stale_after: 3d\n\
             health: {commands: [\"systemctl is-system-running --wait\"], timeout: 5m, rollback: true}\n"
                .to_owned(),
        ),
        (
            "packages/base.yaml",
            "kind: PackageSet\n\
             name: base\n\
             include: [tools]\n\
             packages: [bash, {name: openssh, repo: core}]\n\
             exclude: [vi]\n"
                .to_owned(),
        ),
        (
            "packages/tools.yaml",
            "kind: PackageSet\nname: tools\npackages: [nano, vi, htop]\n".to_owned(),
        ),
        (
            "generations/web/1.yaml",
            format!(
                "kind: Generation\n\
                 pool: web\n\
                 number: 1\n\
                 snapshot: 2025-03-01\n\
                 captured_from: web-01\n\
                 captured_at: 2025-03-01T03:20:05Z\n\
                 packages:\n\
                 \x20 bash: {{version: 5.2.037-1, sha256: {SHA}}}\n\
                 \x20 glibc: {{version: 2.41+r9+ga900dbaf70f0-1}}\n\
                 \x20 htop: {{version: 3.3.0-3}}\n\
                 \x20 iptables: {{version: \"1:1.8.11-2\"}}\n\
                 \x20 nginx: {{version: 1.26.3-1}}\n\
                 \x20 openssh: {{version: 9.9p2-1}}\n\
                 \x20 openssl: {{version: 3.4.1-1}}\n\
                 \x20 strace: {{version: 6.13-1}}\n"
            ),
        ),
        (
            "hosts/web-01.yaml",
            format!(
                "kind: Host\n\
                 name: web-01\n\
                 labels: {{role: web, rack: r2}}\n\
                 packages: [strace, {{name: iptables, repo: core}}]\n\
                 exclude: [htop]\n\
                 key: {KEY}\n"
            ),
        ),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), t))
    .collect()
}

/// The maximal document of a kind, as JSON.
fn maximal_doc(k: &Kind) -> Value {
    let (path, text) = maximal_fleet()
        .into_iter()
        .find(|(p, _)| kind_for_path(p).is_some_and(|pk| pk.kind == k.kind))
        .expect("the maximal fleet has every kind");
    yaml_to_json(&path, &text)
}

#[test]
fn maximal_documents_are_accepted_by_both() {
    let fleet = maximal_fleet();
    let diags = load(&fleet);
    assert!(
        diags.is_empty(),
        "the loader rejects the maximal fleet: {diags:#?}"
    );
    for (path, text) in &fleet {
        let k = kind_for_path(path).expect("manifest path");
        let v = validator(k);
        let doc = yaml_to_json(path, text);
        let errors = schema_errors(&v, &doc);
        assert!(
            errors.is_empty(),
            "schemas/{} rejects {path}: {errors:#?}",
            k.file
        );
        // What the Rust types write back (set-latest, rollback) validates too.
        let written = (k.round_trip)(text).unwrap_or_else(|e| panic!("{path}: {e}"));
        let errors = schema_errors(&v, &written);
        assert!(
            errors.is_empty(),
            "schemas/{} rejects {path} as serialized by Rust: {errors:#?}",
            k.file
        );
    }
    // "Maximal": every property any object of a kind's schema declares is used by its
    // document, so a new field in the types must be added here (and so gets tested).
    for k in &KINDS {
        fn keys(v: &Value, out: &mut BTreeSet<String>) {
            match v {
                Value::Object(m) => {
                    for (key, child) in m {
                        out.insert(key.clone());
                        keys(child, out);
                    }
                }
                Value::Array(a) => a.iter().for_each(|c| keys(c, out)),
                _ => {}
            }
        }
        let mut used = BTreeSet::new();
        keys(&maximal_doc(k), &mut used);
        let missing: Vec<String> = object_schemas()
            .into_iter()
            .filter(|(file, _, _)| *file == k.file)
            .flat_map(|(_, _, v)| {
                v["properties"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(p, _)| p)
            })
            .filter(|p| !used.contains(p))
            .collect();
        assert!(
            missing.is_empty(),
            "the maximal {} document does not set {missing:?}",
            k.kind
        );
    }
}

/// One rule broken in one file of the maximal fleet: replace `from` (which occurs exactly once)
/// with `to`.
struct Mutation {
    path: &'static str,
    from: &'static str,
    to: &'static str,
}

const fn m(path: &'static str, from: &'static str, to: &'static str) -> Mutation {
    Mutation { path, from, to }
}

/// Applies `mutation` to the maximal fleet and returns (schema errors, loader diagnostics for
/// the mutated file).
fn judge(mutation: &Mutation) -> (Vec<String>, Vec<String>) {
    let mut fleet = maximal_fleet();
    let (_, text) = fleet
        .iter_mut()
        .find(|(p, _)| p == mutation.path)
        .unwrap_or_else(|| panic!("the maximal fleet has no {}", mutation.path));
    assert_eq!(
        text.matches(mutation.from).count(),
        1,
        "`{}` must occur once in {}",
        mutation.from,
        mutation.path
    );
    *text = text.replacen(mutation.from, mutation.to, 1);
    let mutated = text.clone();
    let k = kind_for_path(mutation.path).expect("manifest path");
    let schema = schema_errors(&validator(k), &yaml_to_json(mutation.path, &mutated));
    let loader = load(&fleet)
        .into_iter()
        .filter(|(f, _)| f == mutation.path)
        .map(|(_, d)| d)
        .collect();
    (schema, loader)
}

fn assert_rejected_by_both(mutations: &[Mutation]) {
    let mut problems = Vec::new();
    for mutation in mutations {
        let (schema, loader) = judge(mutation);
        let what = format!("{}: `{}` → `{}`", mutation.path, mutation.from, mutation.to);
        match (schema.is_empty(), loader.is_empty()) {
            (false, false) => {}
            (true, true) => problems.push(format!(
                "{what}: accepted by both the schema and the loader"
            )),
            (true, false) => problems.push(format!(
                "{what}: the schema accepts it, the loader says {loader:?}"
            )),
            (false, true) => problems.push(format!(
                "{what}: the loader accepts it, the schema says {schema:?}"
            )),
        }
    }
    assert!(
        problems.is_empty(),
        "schema and Rust loader disagree:\n{}",
        problems.join("\n")
    );
}

#[test]
fn invalid_documents_are_rejected_by_both() {
    assert_rejected_by_both(&[
        // Values the loader checks beyond their type.
        m(
            "generations/web/1.yaml",
            "nginx: {version: 1.26.3-1}",
            "nginx: {version: \"1.26.3\"}",
        ),
        m("fleet.yaml", "archive: https://", "archive: ftp://"),
        m("fleet.yaml", "{name: ops, key: RW", "{name: ops, key: XX"),
        m(
            "generations/web/1.yaml",
            "snapshot: 2025-03-01",
            "snapshot: March 2025",
        ),
        m(
            "pools/web.yaml",
            "snapshot: 2025-03-01",
            "snapshot: 2025-3-1",
        ),
        m(
            "pools/web.yaml",
            "snapshot: 2025-03-01",
            "snapshot: [2025-03-01]",
        ),
        // Unknown fields, at the top and nested.
        m("fleet.yaml", "archive:", "archvie:"),
        m("pools/web.yaml", "hosts: [\"web-*\"", "host: [\"web-*\""),
        m("pools/web.yaml", "rollback: true", "rolback: true"),
        m("pools/web.yaml", "duration: 4h", "length: 4h"),
        m("packages/base.yaml", "exclude:", "excludes:"),
        m("generations/web/1.yaml", "nginx: {version:", "nginx: {ver:"),
        m("hosts/web-01.yaml", "labels:", "label:"),
        // Missing required fields.
        m("fleet.yaml", "name: acme\n", ""),
        m("generations/web/1.yaml", "number: 1\n", ""),
        m(
            "generations/web/1.yaml",
            "htop: {version: 3.3.0-3}",
            "htop: {sha256: null}",
        ),
        // Bad names, wherever a name goes.
        m("fleet.yaml", "name: acme", "name: Acme"),
        m(
            "pools/web.yaml",
            "package_sets: [base]",
            "package_sets: [-base]",
        ),
        m(
            "pools/web.yaml",
            "{name: openssl, repo: core}",
            "{name: openssl, repo: Core}",
        ),
        m(
            "packages/base.yaml",
            "include: [tools]",
            "include: [.tools]",
        ),
        m(
            "packages/base.yaml",
            "packages: [bash,",
            "packages: [\"bash 5\",",
        ),
        m("generations/web/1.yaml", "glibc:", "GLibc:"),
        m(
            "generations/web/1.yaml",
            "captured_from: web-01",
            "captured_from: web_01/a",
        ),
        m("hosts/web-01.yaml", "exclude: [htop]", "exclude: [\"\"]"),
        // Wrong types.
        m("fleet.yaml", "kind: Fleet", "kind: Pool"),
        m(
            "fleet.yaml",
            "archive: https://archive.archlinux.org",
            "archive: [https://archive.archlinux.org]",
        ),
        m("pools/web.yaml", "prune: true", "prune: \"true\""),
        m("pools/web.yaml", "generation: 1", "generation: one"),
        m("pools/web.yaml", "generation: 1", "generation: -1"),
        m("pools/web.yaml", "percent: 100", "percent: 101"),
        m("pools/web.yaml", "percent: 100", "percent: 0"),
        m("pools/web.yaml", "failure_budget: 1", "failure_budget: -1"),
        m("pools/web.yaml", "rollback: true", "rollback: yes please"),
        m(
            "pools/web.yaml",
            "window: {cron: \"0 0 2 * * Sat\", duration: 4h}",
            "window: \"0 0 2 * * Sat\"",
        ),
        m(
            "pools/web.yaml",
            "labels: {role: web}",
            "labels: [role, web]",
        ),
        m("packages/base.yaml", "include: [tools]", "include: tools"),
        m("packages/base.yaml", "packages: [bash,", "packages: [42,"),
        m("generations/web/1.yaml", "number: 1", "number: \"1\""),
        m("generations/web/1.yaml", "number: 1", "number: 1.5"),
        m(
            "generations/web/1.yaml",
            "htop: {version: 3.3.0-3}",
            "htop: 3.3.0-3",
        ),
        m(
            "generations/web/1.yaml",
            "sha256: 3f7a0c9d",
            "sha256: 3F7A0C9D",
        ),
        m(
            "hosts/web-01.yaml",
            "packages: [strace,",
            "packages: [{strace: 1},",
        ),
        m(
            "hosts/web-01.yaml",
            "exclude: [htop]",
            "exclude: {htop: true}",
        ),
    ]);
}

#[test]
fn package_ref_mapping_denies_unknown_fields() {
    assert_rejected_by_both(&[
        m(
            "packages/base.yaml",
            "{name: openssh, repo: core}",
            "{name: openssh, repository: core}",
        ),
        m(
            "hosts/web-01.yaml",
            "{name: iptables, repo: core}",
            "{name: iptables, repo: core, version: 1}",
        ),
    ]);
}

/// Where the two sides knowingly differ today; a case that changes sides fails here, so the
/// list stays true.
///
/// The loader alone checks what a per-file JSON Schema cannot say (references between files,
/// file names, cron and duration syntax, globs) and a few things the schema could but does not
/// yet (a version needs `-pkgrel`, `archive` needs a URL scheme, numbers fit in u32). The
/// schema alone rejects YAML scalars that are not strings where a string goes (serde_yaml hands
/// Rust any plain scalar as a string, so `rack: 2` loads). The schema checks a `snapshot`'s
/// form, the loader also that it is a day of the calendar and that a pinned pool's agrees
/// with its generation's.
#[test]
fn known_differences_between_schema_and_loader() {
    let loader_only = [
        m("packages/base.yaml", "include: [tools]", "include: [tool]"),
        m("generations/web/1.yaml", "number: 1", "number: 2"),
        m("pools/web.yaml", "duration: 4h", "duration: forever"),
        m("pools/web.yaml", "\"0 0 2 * * Sat\"", "\"every saturday\""),
        m("pools/web.yaml", "\"web-*\"", "\"web-[\""),
        m("pools/web.yaml", "generation: 1", "generation: 4294967296"),
        m("pools/web.yaml", "soak: 2h", "soak: soon"),
        m("pools/web.yaml", "stale_after: 3d", "stale_after: 0s"),
        m("pools/web.yaml", "timeout: 5m", "timeout: 100d"),
        m("pools/web.yaml", "name: rest", "name: canary"),
        // Calendar days, and agreement between files.
        m(
            "pools/web.yaml",
            "snapshot: 2025-03-01",
            "snapshot: 2025-02-30",
        ),
        m(
            "pools/web.yaml",
            "snapshot: 2025-03-01",
            "snapshot: 2025-04-05",
        ),
        m(
            "generations/web/1.yaml",
            "snapshot: 2025-03-01",
            "snapshot: 2025-02-29",
        ),
    ];
    let schema_only = [m("hosts/web-01.yaml", "rack: r2", "rack: 2")];
    let expected = loader_only
        .iter()
        .map(|m| (m, (false, true)))
        .chain(schema_only.iter().map(|m| (m, (true, false))));
    let mut moved = Vec::new();
    for (mutation, (schema_rejects, loader_rejects)) in expected {
        let (schema, loader) = judge(mutation);
        if (!schema.is_empty(), !loader.is_empty()) != (schema_rejects, loader_rejects) {
            moved.push(format!(
                "{} `{}`: schema {schema:?}, loader {loader:?}",
                mutation.path, mutation.to
            ));
        }
    }
    assert!(
        moved.is_empty(),
        "these no longer differ as documented; move them to invalid_documents_are_rejected_by_both:\n{}",
        moved.join("\n")
    );
}
