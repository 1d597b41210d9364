//! Property tests (issue 6), with proptest: the manifest loader and the signature statement
//! parser never panic on arbitrary input (the stand-in for a `cargo fuzz` target, which needs a
//! nightly toolchain CI does not have), statements round-trip through their canonical text, and
//! the pure logic of `resolve` and `plan` keeps its promises on random fleets and hosts.
//!
//! Case counts are bounded so the whole module runs in seconds: 256 random fleets, 1000–2000
//! parser inputs. A failing case is shrunk and printed; nothing is written to the tree.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::Config;

use pacfleet::manifest::{Fleet, FleetFiles};
use pacfleet::plan::{self, Installed, Reason};
use pacfleet::resolve::{self, Desired, Origin, ResolveError, Resolved};
use pacfleet::trust::{Note, Statement};

fn config(cases: u32) -> Config {
    Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    }
}

// ---------------------------------------------------------------------------------------------
// Random fleets

/// A package set as generated: packages, includes (only of later sets, so the include graph is
/// acyclic and the fleet valid) and excludes, as indices into small universes.
#[derive(Debug, Clone)]
struct GenSet {
    packages: Vec<usize>,
    includes: Vec<usize>,
    excludes: Vec<usize>,
}

#[derive(Debug, Clone)]
struct GenFleet {
    sets: Vec<GenSet>,
    /// The pool's sets, in the order the pool lists them.
    pool_sets: Vec<usize>,
    pool_packages: Vec<usize>,
    pool_excludes: Vec<usize>,
    host_packages: Vec<usize>,
    host_excludes: Vec<usize>,
}

const PACKAGES: usize = 12;
const SETS: usize = 6;

fn pkg(i: usize) -> String {
    format!("p{i}")
}

fn list(names: impl IntoIterator<Item = String>) -> String {
    format!("[{}]", names.into_iter().collect::<Vec<_>>().join(", "))
}

fn gen_fleet() -> impl Strategy<Value = GenFleet> {
    let idx = |n: usize| prop::collection::vec(0..n, 0..5);
    let set = (
        idx(PACKAGES),
        prop::collection::vec(0..SETS, 0..3),
        idx(PACKAGES),
    )
        .prop_map(|(packages, includes, excludes)| GenSet {
            packages,
            includes,
            excludes,
        });
    (
        prop::collection::vec(set, SETS),
        prop::collection::vec(0..SETS, 0..4),
        idx(PACKAGES),
        idx(PACKAGES),
        idx(PACKAGES),
        idx(PACKAGES),
    )
        .prop_map(
            |(mut sets, pool_sets, pool_packages, pool_excludes, host_packages, host_excludes)| {
                // Set i may include only sets after it: no cycles.
                for (i, s) in sets.iter_mut().enumerate() {
                    s.includes.retain(|j| *j > i);
                }
                GenFleet {
                    sets,
                    pool_sets,
                    pool_packages,
                    pool_excludes,
                    host_packages,
                    host_excludes,
                }
            },
        )
}

impl GenFleet {
    fn files(&self, pool_sets: &[usize]) -> FleetFiles {
        let mut blobs = vec![(
            "fleet.yaml".to_owned(),
            b"kind: Fleet\nname: acme\n".to_vec(),
        )];
        for (i, s) in self.sets.iter().enumerate() {
            let text = format!(
                "kind: PackageSet\nname: s{i}\npackages: {}\ninclude: {}\nexclude: {}\n",
                list(s.packages.iter().map(|p| pkg(*p))),
                list(s.includes.iter().map(|j| format!("s{j}"))),
                list(s.excludes.iter().map(|p| pkg(*p))),
            );
            blobs.push((format!("packages/s{i}.yaml"), text.into_bytes()));
        }
        let pool = format!(
            "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: {}\npackages: {}\nexclude: {}\n",
            list(pool_sets.iter().map(|j| format!("s{j}"))),
            list(self.pool_packages.iter().map(|p| pkg(*p))),
            list(self.pool_excludes.iter().map(|p| pkg(*p))),
        );
        blobs.push(("pools/ws.yaml".to_owned(), pool.into_bytes()));
        let host = format!(
            "kind: Host\nname: ws-01\npackages: {}\nexclude: {}\n",
            list(self.host_packages.iter().map(|p| pkg(*p))),
            list(self.host_excludes.iter().map(|p| pkg(*p))),
        );
        blobs.push(("hosts/ws-01.yaml".to_owned(), host.into_bytes()));
        FleetFiles::from_blobs(blobs)
    }

    fn load(&self, pool_sets: &[usize]) -> Fleet {
        match Fleet::from_files(&self.files(pool_sets)) {
            Ok(f) => f,
            Err(d) => panic!("generated fleet is invalid: {d}\n{self:?}"),
        }
    }

    /// The sets reachable from the pool's sets through includes.
    fn reachable(&self) -> BTreeSet<usize> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<usize> = self.pool_sets.clone();
        while let Some(s) = todo.pop() {
            if seen.insert(s) {
                todo.extend(self.sets[s].includes.iter().copied());
            }
        }
        seen
    }

    /// The rule, written out: everything asked for by a reachable set, the pool or the host,
    /// minus everything any of them excludes.
    fn expected(&self, with_host: bool) -> BTreeSet<String> {
        let reach = self.reachable();
        let mut asked: BTreeSet<usize> = reach
            .iter()
            .flat_map(|s| self.sets[*s].packages.clone())
            .collect();
        let mut excluded: BTreeSet<usize> = reach
            .iter()
            .flat_map(|s| self.sets[*s].excludes.clone())
            .collect();
        asked.extend(&self.pool_packages);
        excluded.extend(&self.pool_excludes);
        if with_host {
            asked.extend(&self.host_packages);
            excluded.extend(&self.host_excludes);
        }
        asked.difference(&excluded).map(|p| pkg(*p)).collect()
    }

    fn all_excludes(&self, with_host: bool) -> BTreeSet<String> {
        let reach = self.reachable();
        let mut out: BTreeSet<String> = reach
            .iter()
            .flat_map(|s| self.sets[*s].excludes.iter().map(|p| pkg(*p)))
            .collect();
        out.extend(self.pool_excludes.iter().map(|p| pkg(*p)));
        if with_host {
            out.extend(self.host_excludes.iter().map(|p| pkg(*p)));
        }
        out
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// Desired = union of everything asked for − every exclude; no excluded name is ever
    /// desired, whoever asked for it; and a host without a manifest gets the pool's share.
    #[test]
    fn resolve_is_union_minus_excludes(f in gen_fleet()) {
        let fleet = f.load(&f.pool_sets);
        for (host, with_host) in [("ws-01", true), ("ws-02", false)] {
            let r = resolve::resolve(&fleet, host).unwrap().expect("the pool selects ws-*");
            let got: BTreeSet<String> = r.explicit.keys().cloned().collect();
            prop_assert_eq!(&got, &f.expected(with_host), "host {}", host);
            for e in f.all_excludes(with_host) {
                prop_assert!(!r.explicit.contains_key(&e), "excluded {} is desired on {}", e, host);
            }
            // Everything asked for but excluded is reported as excluded, with who excluded it.
            for name in r.excluded.keys() {
                prop_assert!(f.all_excludes(with_host).contains(name));
            }
        }
    }

    /// Resolving only some names gives exactly what resolving everything gives for those
    /// names (what `diff` relies on to resolve only what a Host manifest names).
    #[test]
    fn resolving_some_names_is_resolving_all_restricted(
        f in gen_fleet(),
        only in prop::collection::btree_set(0..PACKAGES, 0..4),
    ) {
        let fleet = f.load(&f.pool_sets);
        let pool = &fleet.pools.values().next().expect("one pool").spec;
        let names: Vec<String> = only.iter().map(|p| pkg(*p)).collect();
        let only: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        for host in [None, fleet.hosts.values().next().map(|h| &h.spec)] {
            let (all_wanted, all_excluded) = resolve::desired(&fleet, pool, host);
            let (wanted, excluded) = resolve::desired_only(&fleet, pool, host, Some(&only));
            let restrict = |keys: Vec<&String>| -> Vec<String> {
                keys.into_iter().filter(|k| only.contains(k.as_str())).cloned().collect()
            };
            prop_assert_eq!(
                wanted.keys().cloned().collect::<Vec<_>>(),
                restrict(all_wanted.keys().collect())
            );
            prop_assert_eq!(
                excluded.keys().cloned().collect::<Vec<_>>(),
                restrict(all_excluded.keys().collect())
            );
            for (k, d) in &wanted {
                prop_assert_eq!(d, &all_wanted[k]);
            }
            for (k, o) in &excluded {
                prop_assert_eq!(o, &all_excluded[k]);
            }
        }
    }

    /// The order of a pool's package sets (and duplicates in it) changes nothing.
    #[test]
    fn resolve_ignores_set_order(f in gen_fleet(), seed in any::<u64>()) {
        let mut shuffled = f.pool_sets.clone();
        // A deterministic shuffle from the seed, plus a duplicate.
        let n = shuffled.len();
        for i in (1..n).rev() {
            let j = (seed.rotate_left(i as u32) as usize) % (i + 1);
            shuffled.swap(i, j);
        }
        if let Some(first) = shuffled.first().copied() {
            shuffled.push(first);
        }
        let a = resolve::resolve(&f.load(&f.pool_sets), "ws-01").unwrap().unwrap();
        let b = resolve::resolve(&f.load(&shuffled), "ws-01").unwrap().unwrap();
        prop_assert_eq!(a.explicit, b.explicit);
        prop_assert_eq!(a.excluded, b.excluded);
    }
}

// ---------------------------------------------------------------------------------------------
// A host is in at most one pool

const GLOBS: &[&str] = &["ws-*", "*-01", "ws-0[12]", "db-*", "*", "ws-0?", "[wd]*-02"];
const HOSTS: &[&str] = &["ws-01", "ws-02", "ws-10", "db-01", "db-02", "x"];

proptest! {
    #![proptest_config(config(256))]

    /// With pools of random (overlapping) globs: a host selected by no pool is not in the
    /// fleet, by exactly one is in that pool, by two or more is an error naming all of them.
    #[test]
    fn a_host_is_in_at_most_one_pool(pools in prop::collection::vec(prop::collection::vec(0..GLOBS.len(), 0..3), 1..5)) {
        let mut blobs = vec![("fleet.yaml".to_owned(), b"kind: Fleet\nname: acme\n".to_vec())];
        for (i, globs) in pools.iter().enumerate() {
            let hosts = list(globs.iter().map(|g| format!("\"{}\"", GLOBS[*g])));
            blobs.push((format!("pools/p{i}.yaml"), format!("kind: Pool\nname: p{i}\nhosts: {hosts}\n").into_bytes()));
        }
        let fleet = Fleet::from_files(&FleetFiles::from_blobs(blobs)).unwrap();
        for host in HOSTS {
            let selecting: Vec<String> = pools
                .iter()
                .enumerate()
                .filter(|(_, globs)| globs.iter().any(|g| globset::Glob::new(GLOBS[*g]).unwrap().compile_matcher().is_match(host)))
                .map(|(i, _)| format!("p{i}"))
                .collect();
            match resolve::resolve(&fleet, host) {
                Ok(None) => prop_assert!(selecting.is_empty(), "{} selected by {:?}", host, selecting),
                Ok(Some(r)) => prop_assert_eq!(vec![r.pool], selecting),
                Err(ResolveError::TwoPools { pools: named, .. }) => {
                    let named: Vec<String> = named.into_iter().map(|(p, _)| p).collect();
                    prop_assert!(selecting.len() >= 2);
                    prop_assert_eq!(named, selecting);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// plan::intent

#[derive(Debug, Clone)]
struct GenHost {
    resolved: Resolved,
    installed: BTreeMap<String, Installed>,
    inventory: BTreeSet<String>,
}

const VERSIONS: &[&str] = &["1.0-1", "1.1-1", "2.0-1"];

fn gen_host(pinned: bool) -> impl Strategy<Value = GenHost> {
    let universe = 10usize;
    (
        prop::collection::btree_set(0..universe, 0..6),
        prop::collection::btree_map(
            0..universe,
            (
                0..VERSIONS.len(),
                any::<bool>(),
                prop::collection::vec(0..universe, 0..3),
            ),
            0..8,
        ),
        prop::collection::btree_set(0..universe, 0..8),
        prop::collection::btree_map(0..universe, 0..VERSIONS.len(), 0..universe),
        any::<bool>(),
    )
        .prop_map(move |(explicit, installed, inventory, pins, prune)| {
            let installed: BTreeMap<usize, (usize, bool, Vec<usize>)> = installed;
            // required_by lists only installed packages, never the package itself.
            let installed: BTreeMap<String, Installed> = installed
                .iter()
                .map(|(n, (v, explicit, req))| {
                    let required_by = req
                        .iter()
                        .filter(|r| *r != n && installed.contains_key(*r))
                        .map(|r| pkg(*r))
                        .collect::<BTreeSet<_>>()
                        .into_iter()
                        .collect();
                    let reason = if *explicit {
                        Reason::Explicit
                    } else {
                        Reason::Dependency
                    };
                    (
                        pkg(*n),
                        Installed {
                            version: VERSIONS[*v].to_owned(),
                            reason,
                            required_by,
                            missing: Vec::new(),
                            provides: Vec::new(),
                        },
                    )
                })
                .collect();
            let explicit: BTreeMap<String, Desired> = explicit
                .iter()
                .map(|p| {
                    (
                        pkg(*p),
                        Desired {
                            origins: [Origin::Pool("ws".into())].into(),
                            repo: None,
                        },
                    )
                })
                .collect();
            let mut pin_map: BTreeMap<String, pacfleet::manifest::Pin> = BTreeMap::new();
            if pinned {
                // A generation locks every desired package, and some others.
                for name in explicit.keys() {
                    pin_map.insert(
                        name.clone(),
                        pacfleet::manifest::Pin {
                            version: VERSIONS[name.len() % VERSIONS.len()].to_owned(),
                            sha256: None,
                        },
                    );
                }
                for (p, v) in pins {
                    pin_map.insert(
                        pkg(p),
                        pacfleet::manifest::Pin {
                            version: VERSIONS[v].to_owned(),
                            sha256: None,
                        },
                    );
                }
            }
            let resolved = Resolved {
                host: "ws-01".into(),
                fleet: "acme".into(),
                pool: "ws".into(),
                explicit,
                excluded: BTreeMap::new(),
                generation: pinned.then_some(1),
                snapshot: None,
                pins: pin_map,
                prune,
                window: None,
                paused: false,
                archive: None,
                gates: Default::default(),
            };
            GenHost {
                resolved,
                installed,
                inventory: inventory.into_iter().map(pkg).collect(),
            }
        })
}

/// What libalpm and pacfleet make of an intent, as far as `intent` can see: targets installed
/// at their version (desired ones explicit, others keep their reason or become dependencies),
/// removals gone (and from every `required_by`), reasons set, the inventory updated as
/// `reconcile::next_inventory` does.
fn apply(h: &GenHost, intent: &plan::Intent) -> (BTreeMap<String, Installed>, BTreeSet<String>) {
    let mut installed = h.installed.clone();
    let mut inventory = h.inventory.clone();
    for t in &intent.targets {
        let version = t.version.clone().unwrap_or_else(|| "9.9-1".to_owned());
        let reason = if t.explicit {
            Reason::Explicit
        } else {
            installed
                .get(&t.name)
                .map_or(Reason::Dependency, |i| i.reason)
        };
        let required_by = installed
            .get(&t.name)
            .map(|i| i.required_by.clone())
            .unwrap_or_default();
        if !installed.contains_key(&t.name) {
            inventory.insert(t.name.clone());
        }
        installed.insert(
            t.name.clone(),
            Installed {
                version,
                reason,
                required_by,
                missing: Vec::new(),
                provides: Vec::new(),
            },
        );
    }
    for r in &intent.remove {
        installed.remove(r);
        inventory.remove(r);
    }
    for i in installed.values_mut() {
        i.required_by.retain(|r| !intent.remove.contains(r));
    }
    for n in &intent.mark_explicit {
        installed.get_mut(n).unwrap().reason = Reason::Explicit;
    }
    for n in &intent.mark_dependency {
        installed.get_mut(n).unwrap().reason = Reason::Dependency;
    }
    (installed, inventory)
}

proptest! {
    #![proptest_config(config(1000))]

    /// Pinned pools: applying the intent and planning again yields nothing.
    #[test]
    fn pinned_intent_is_idempotent(h in gen_host(true)) {
        let first = plan::intent(&h.resolved, &h.installed, &h.inventory);
        let (installed, inventory) = apply(&h, &first);
        let second = plan::intent(&h.resolved, &installed, &inventory);
        prop_assert!(second.is_empty(), "first {:?}\nsecond {:?}", first, second);
    }

    /// Floating pools: after applying, only the system upgrade is asked for again.
    #[test]
    fn floating_intent_is_idempotent_but_for_the_upgrade(h in gen_host(false)) {
        let first = plan::intent(&h.resolved, &h.installed, &h.inventory);
        prop_assert!(first.sysupgrade);
        let (installed, inventory) = apply(&h, &first);
        let second = plan::intent(&h.resolved, &installed, &inventory);
        prop_assert!(second.sysupgrade);
        prop_assert!(second.targets.is_empty() && second.remove.is_empty(), "{:?}", second);
        prop_assert!(second.mark_explicit.is_empty() && second.mark_dependency.is_empty(), "{:?}", second);
    }

    /// Nothing outside the inventory is ever removed or demoted, nothing desired is removed,
    /// nothing is removed without `prune`, and what is removed is needed by nothing that stays.
    #[test]
    fn intent_removes_only_what_pacfleet_installed(h in gen_host(true), floating in gen_host(false)) {
        for h in [h, floating] {
            let i = plan::intent(&h.resolved, &h.installed, &h.inventory);
            for r in &i.remove {
                prop_assert!(h.inventory.contains(r) && h.installed.contains_key(r), "removes {}", r);
                prop_assert!(!h.resolved.explicit.contains_key(r), "removes desired {}", r);
                prop_assert!(h.resolved.prune, "removes {} without prune", r);
                let needed = h.installed[r].required_by.iter().any(|by| !i.remove.contains(by));
                prop_assert!(!needed, "removes {} which a staying package needs", r);
            }
            for d in &i.mark_dependency {
                prop_assert!(h.inventory.contains(d), "demotes {}", d);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(1000))]

    /// One transaction never both installs (at a pinned version) and removes a package. Today
    /// a package the generation pins, that pacfleet installed and nothing desires or needs, is
    /// both a target and a removal when `prune` is on.
    #[test]
    fn no_package_is_both_targeted_and_removed(h in gen_host(true)) {
        let i = plan::intent(&h.resolved, &h.installed, &h.inventory);
        for t in &i.targets {
            prop_assert!(!i.remove.contains(&t.name), "{} is both a target and removed: {:?}", t.name, i);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Parsers never panic

fn manifest_path() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "fleet.yaml",
        "pools/ws.yaml",
        "packages/base.yaml",
        "generations/ws/1.yaml",
        "hosts/ws-01.yaml",
    ])
    .prop_map(str::to_owned)
}

/// YAML-shaped text: manifest keys, brackets, anchors, tags, quotes and odd characters.
fn yamlish() -> impl Strategy<Value = String> {
    let token = prop::sample::select(vec![
        "kind: ",
        "Pool",
        "PackageSet",
        "Generation",
        "Host",
        "Fleet",
        "name: ",
        "ws",
        "base",
        "packages: ",
        "include: ",
        "exclude: ",
        "hosts: ",
        "labels: ",
        "generation: ",
        "number: ",
        "pool: ",
        "version: ",
        "sha256: ",
        "window: ",
        "cron: ",
        "duration: ",
        "prune: ",
        "true",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "\n",
        "\n  ",
        "- ",
        "&a ",
        "*a",
        "!!str ",
        "\"",
        "'",
        "#",
        "---\n",
        "é",
        "€",
        "-",
        ".",
        "0",
        "99999999999999999999",
        "1.0-1",
        "\t",
        "\0",
        "\\",
        "~",
        "null",
        "? ",
        ": ",
    ]);
    prop::collection::vec(token, 0..60).prop_map(|t| t.concat())
}

fn load(path: String, bytes: Vec<u8>) {
    let mut blobs = vec![(path.clone(), bytes)];
    if path != "fleet.yaml" {
        blobs.push((
            "fleet.yaml".to_owned(),
            b"kind: Fleet\nname: acme\n".to_vec(),
        ));
    }
    let files = FleetFiles::from_blobs(blobs);
    if let Ok(fleet) = Fleet::from_files(&files) {
        let _ = resolve::resolve(&fleet, "ws-01");
    }
}

proptest! {
    #![proptest_config(config(2000))]

    #[test]
    fn manifest_loader_never_panics_on_bytes(path in manifest_path(), bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        load(path, bytes);
    }

    #[test]
    fn manifest_loader_never_panics_on_yamlish_text(path in manifest_path(), text in yamlish()) {
        load(path, text.into_bytes());
    }

    #[test]
    fn note_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = Note::parse(&bytes);
    }

    /// Statement-shaped text with random damage: never a panic, and whatever is accepted is
    /// exactly the canonical text of what was parsed (one text per statement).
    #[test]
    fn statement_parser_accepts_only_canonical_text(s in statement(), cut in any::<prop::sample::Index>(), insert in "\\PC{0,3}") {
        let text = s.to_text();
        let at = cut.index(text.len() + 1);
        let at = (0..=at).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let damaged = format!("{}{insert}{}", &text[..at], &text[at..]);
        if let Ok(parsed) = Statement::parse(&damaged) {
            prop_assert_eq!(parsed.to_text(), damaged.clone());
        }
        let _ = Note::parse(damaged.as_bytes());
    }
}

/// Long names of multi-byte characters: today `Name::new` panics on them (see the report).
#[test]
fn manifest_loader_never_panics_on_long_unicode_names() {
    let mut runner = proptest::test_runner::TestRunner::new(config(500));
    runner
        .run(&"\\PC{200,300}", |name| {
            let text = format!(
                "kind: PackageSet\nname: base\npackages: [\"{}\"]\n",
                name.replace(['"', '\\'], "")
            );
            load("packages/base.yaml".into(), text.into_bytes());
            Ok(())
        })
        .unwrap();
}

// ---------------------------------------------------------------------------------------------
// Statements round-trip

fn statement() -> impl Strategy<Value = Statement> {
    (
        "[a-z0-9@_+][a-z0-9@._+-]{0,40}",
        "[0-9a-f]{40}",
        "[0-9a-f]{40}",
        any::<u64>(),
        // 1970 … 2200, whole seconds (the canonical text has no fractions).
        0i64..7_258_118_400,
    )
        .prop_map(|(fleet, commit, tree, sequence, secs)| Statement {
            fleet,
            commit,
            tree,
            sequence,
            expires: chrono::DateTime::from_timestamp(secs, 0).unwrap(),
        })
}

proptest! {
    #![proptest_config(config(1000))]

    #[test]
    fn statement_round_trips_through_its_text(s in statement()) {
        prop_assert_eq!(Statement::parse(&s.to_text()), Ok(s.clone()));
        let note = Note::parse(s.to_text().as_bytes()).unwrap();
        prop_assert_eq!(&note.statement, &s);
        prop_assert_eq!(note.render(), s.to_text());
    }
}

// ---------------------------------------------------------------------------------------------
// A host's read of the fleet (`Fleet::for_host`) against the whole fleet's

/// A random fleet of several pools (globs or labels, pinned or floating), sets with includes,
/// generations and Host manifests; `broken` replaces one file with a broken one.
#[derive(Debug, Clone)]
struct GenWide {
    files: Vec<(String, String)>,
    broken: Option<(usize, u8)>,
}

fn gen_wide() -> impl Strategy<Value = GenWide> {
    let idx = |n: usize, max: usize| prop::collection::vec(0..n, 0..max);
    let pool = (
        idx(GLOBS.len(), 2),
        prop::option::of(0..2usize),
        idx(SETS, 3),
        idx(PACKAGES, 2),
        prop::option::of(1..3u32),
    );
    let host = (
        0..HOSTS.len(),
        prop::option::of(0..2usize),
        idx(PACKAGES, 3),
        idx(PACKAGES, 2),
    );
    (
        prop::collection::vec((idx(PACKAGES, 4), idx(SETS, 2), idx(PACKAGES, 2)), SETS),
        prop::collection::vec(pool, 1..4),
        prop::collection::vec(host, 0..5),
        prop::option::of((any::<usize>(), 0..4u8)),
    )
        .prop_map(|(sets, pools, hosts, broken)| {
            let mut files = vec![(
                "fleet.yaml".to_owned(),
                "kind: Fleet\nname: acme\n".to_owned(),
            )];
            for (i, (packages, includes, excludes)) in sets.iter().enumerate() {
                files.push((
                    format!("packages/s{i}.yaml"),
                    format!(
                        "kind: PackageSet\nname: s{i}\npackages: {}\ninclude: {}\nexclude: {}\n",
                        list(packages.iter().map(|p| pkg(*p))),
                        list(includes.iter().filter(|j| **j > i).map(|j| format!("s{j}"))),
                        list(excludes.iter().map(|p| pkg(*p))),
                    ),
                ));
            }
            for (i, (globs, label, sets, packages, generation)) in pools.iter().enumerate() {
                let mut text = format!(
                    "kind: Pool\nname: p{i}\nhosts: {}\npackage_sets: {}\npackages: {}\n",
                    list(globs.iter().map(|g| format!("\"{}\"", GLOBS[*g]))),
                    list(sets.iter().map(|j| format!("s{j}"))),
                    list(packages.iter().map(|p| pkg(*p))),
                );
                if let Some(l) = label {
                    text.push_str(&format!("labels: {{rack: r{l}}}\n"));
                }
                if let Some(g) = generation {
                    text.push_str(&format!("generation: {g}\n"));
                    // Every package pinned, in each generation up to the pool's.
                    for n in 1..=*g {
                        let pins: Vec<String> = (0..PACKAGES)
                            .map(|p| format!("{}: {{version: {n}.0-1}}", pkg(p)))
                            .collect();
                        files.push((
                            format!("generations/p{i}/{n}.yaml"),
                            format!(
                                "kind: Generation\npool: p{i}\nnumber: {n}\npackages: {{{}}}\n",
                                pins.join(", ")
                            ),
                        ));
                    }
                }
                files.push((format!("pools/p{i}.yaml"), text));
            }
            for (name, label, packages, excludes) in &hosts {
                let name = HOSTS[*name];
                let mut text = format!(
                    "kind: Host\nname: {name}\npackages: {}\nexclude: {}\n",
                    list(packages.iter().map(|p| pkg(*p))),
                    list(excludes.iter().map(|p| pkg(*p))),
                );
                if let Some(l) = label {
                    text.push_str(&format!("labels: {{rack: r{l}}}\n"));
                }
                files.push((format!("hosts/{name}.yaml"), text));
            }
            files.sort();
            files.dedup_by(|a, b| a.0 == b.0);
            GenWide { files, broken }
        })
}

impl GenWide {
    fn fleet_files(&self) -> FleetFiles {
        let mut files = self.files.clone();
        if let Some((which, how)) = self.broken {
            let i = which % files.len();
            files[i].1 = match how {
                0 => format!("{}unknown: 1\n", files[i].1),
                1 => "kind: Pool\n".to_owned(),
                2 => files[i].1.replace("name: ", "name: X"),
                _ => String::new(),
            };
        }
        FleetFiles::from_blobs(files.into_iter().map(|(p, t)| (p, t.into_bytes())))
    }
}

proptest! {
    #![proptest_config(config(256))]

    /// A host reads only what it needs, and resolves exactly as against the whole fleet
    /// whenever the whole fleet is valid; what it refuses, the whole fleet refuses too. And the
    /// resolution a host keeps between passes reads back equal.
    #[test]
    fn a_hosts_read_resolves_as_the_whole_fleet(f in gen_wide()) {
        let files = f.fleet_files();
        let full = Fleet::from_files(&files);
        for host in HOSTS.iter().chain(&["nobody"]) {
            let partial = match Fleet::for_host(&mut files.clone(), host) {
                Ok(p) => p,
                Err(never) => match never {},
            };
            match (&full, &partial) {
                (Ok(full), Ok(partial)) => {
                    let (a, b) = (resolve::resolve(full, host), resolve::resolve(partial, host));
                    prop_assert_eq!(&a, &b, "{}", host);
                    if let Ok(Some(r)) = a {
                        let json = serde_json::to_string(&r).unwrap();
                        let back: Resolved = serde_json::from_str(&json).unwrap();
                        prop_assert_eq!(back, r);
                    }
                }
                (Ok(_), Err(d)) => prop_assert!(false, "{} refused a valid fleet: {}", host, d),
                (Err(_), Ok(_)) => {} // another host's problem: validate's
                (Err(full), Err(partial)) => {
                    for d in &partial.0 {
                        prop_assert!(full.0.contains(d), "{}: {} not in the whole fleet's {}", host, d, full);
                    }
                }
            }
        }
    }
}
