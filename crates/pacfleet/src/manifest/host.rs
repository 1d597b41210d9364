//! The part of a fleet one host needs ([`Fleet::for_host`]): fleet.yaml, every pool (to find
//! the ones that select it, which needs only its own labels), its own Host manifest, the
//! package sets its pools reach and their pinned generations — read by exact path, never a
//! walk of `hosts/`, and checked by the same rules as the whole fleet wherever a rule concerns
//! only what was read. Other hosts' files, and what they alone could get wrong (two pools
//! claiming another host, another pool's missing set), are `validate`'s to report in CI.

use std::collections::{BTreeMap, BTreeSet};

use super::load::{Parsed, is_manifest_path, parse_all};
use super::{Doc, Fleet, FleetFiles, Name, Pool, PoolIndex};

/// What stands at a path of the revision being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    /// Nothing (or a directory or submodule where a file was asked for, a file where a
    /// directory was).
    Missing,
    /// A regular file, with its bytes.
    File(Vec<u8>),
    /// A symbolic link at the path, or in place of a directory on the way to it: where it is
    /// and its target. Never followed; reported as [`FleetFiles::from_tree`] reports links.
    Link {
        /// The link's own path.
        at: String,
        /// What it points to.
        target: Vec<u8>,
    },
}

/// One revision of a fleet repository, read by exact path (a git tree, in `source`).
pub trait FleetSource {
    /// Why reading failed (not a manifest problem: those are diagnostics).
    type Error;
    /// What is at `path` (`/`-separated, relative to the fleet root).
    fn read(&mut self, path: &str) -> Result<Entry, Self::Error>;
    /// The names of the entries of directory `dir`; `Err(entry)` with what stands in its
    /// place when it is not a directory (a link, or nothing).
    fn list(&mut self, dir: &str) -> Result<Result<Vec<String>, Entry>, Self::Error>;
}

/// The files read so far, as `FleetFiles::from_tree` takes them.
#[derive(Default)]
struct Read {
    blobs: Vec<(String, Vec<u8>)>,
    links: BTreeMap<String, Vec<u8>>,
    /// Every path read (or looked up) so far: none is read twice.
    done: BTreeSet<String>,
}

impl Read {
    /// Reads `path`, if it is a manifest's and was not read yet.
    fn take<S: FleetSource>(&mut self, source: &mut S, path: String) -> Result<(), S::Error> {
        if !is_manifest_path(&path) || !self.done.insert(path.clone()) {
            return Ok(());
        }
        match source.read(&path)? {
            Entry::Missing => {}
            Entry::File(bytes) => self.blobs.push((path, bytes)),
            Entry::Link { at, target } => {
                self.links.insert(at, target);
            }
        }
        Ok(())
    }

    fn list<S: FleetSource>(&mut self, source: &mut S, dir: &str) -> Result<Vec<String>, S::Error> {
        Ok(match source.list(dir)? {
            Ok(names) => names,
            Err(Entry::Link { at, target }) => {
                self.links.insert(at, target);
                Vec::new()
            }
            Err(_) => Vec::new(),
        })
    }

    /// The files read since the last call, parsed; `files` gets them too.
    fn parse(
        &mut self,
        files: &mut FleetFiles,
        parsed: &mut Parsed,
        diags: &mut Vec<super::Diagnostic>,
    ) {
        let batch = FleetFiles::from_tree(
            std::mem::take(&mut self.blobs),
            std::mem::take(&mut self.links),
        );
        let (more, found) = parse_all(&batch);
        diags.extend(found);
        parsed.extend(more);
        files.files.extend(batch.files);
        files.undecodable.extend(batch.undecodable);
        files.links.extend(batch.links);
    }
}

impl Fleet {
    /// Reads what `hostname` needs of the fleet in `source` (see the [module docs](self)) and
    /// checks the manifest rules on it; `Fleet::for_host` (`crate::validate`) adds the rules
    /// that need resolution.
    pub fn parse_for_host<S: FleetSource>(
        source: &mut S,
        hostname: &str,
    ) -> Result<HostRead, S::Error> {
        let mut read = Read::default();
        let (mut files, mut parsed, mut diags) =
            (FleetFiles::default(), Parsed::default(), Vec::new());
        // fleet.yaml, this host's manifest and every pool.
        let mut paths = vec!["fleet.yaml".to_owned(), "fleet.yml".to_owned()];
        // A hostname that is no valid name has no manifest: the name rule keeps `/` out.
        if Name::new(hostname).is_ok() {
            paths.extend(["yaml", "yml"].map(|ext| format!("hosts/{hostname}.{ext}")));
        }
        for name in read.list(source, "pools")? {
            paths.push(format!("pools/{name}"));
        }
        for path in paths.into_iter().filter(|p| is_manifest_path(p)) {
            read.take(source, path)?;
        }
        read.parse(&mut files, &mut parsed, &mut diags);

        // The pools that select it, as `Fleet::pools_selecting` finds them in the whole fleet.
        let selecting = {
            let mut pools: BTreeMap<Name, Doc<Pool>> = BTreeMap::new();
            for p in &parsed.pools {
                pools
                    .entry(p.spec.name.clone())
                    .or_insert_with(|| p.clone());
            }
            let labels = parsed
                .hosts
                .iter()
                .find(|h| h.spec.name.as_str() == hostname)
                .map(|h| &h.spec.labels);
            let index = PoolIndex::new(&pools);
            super::select(&pools, &index, hostname, labels)
                .into_iter()
                .filter_map(|name| pools.remove(&name))
                .collect::<Vec<_>>()
        };

        // Their package sets (with includes) and pinned generations.
        let mut wanted: Vec<Name> = Vec::new();
        for pool in &selecting {
            wanted.extend(pool.spec.package_sets.iter().cloned());
            if let Some(n) = pool.spec.generation {
                let dir = format!("generations/{}", pool.spec.name);
                for name in read.list(source, &dir)? {
                    let path = format!("{dir}/{name}");
                    let number = name
                        .strip_suffix(".yaml")
                        .or_else(|| name.strip_suffix(".yml"))
                        .and_then(|stem| stem.parse::<u32>().ok());
                    if number == Some(n) && is_manifest_path(&path) {
                        read.take(source, path)?;
                    }
                }
            }
        }
        read.parse(&mut files, &mut parsed, &mut diags);
        let mut seen = BTreeSet::new();
        while !wanted.is_empty() {
            let before = parsed.sets.len();
            for set in std::mem::take(&mut wanted) {
                if seen.insert(set.clone()) {
                    for ext in ["yaml", "yml"] {
                        read.take(source, format!("packages/{set}.{ext}"))?;
                    }
                }
            }
            read.parse(&mut files, &mut parsed, &mut diags);
            for set in &parsed.sets[before..] {
                wanted.extend(set.spec.include.iter().cloned());
            }
        }

        // A set named but not found: the fleet is refused, and the hint names the fleet's sets,
        // so read them all for it (as the whole fleet's check does).
        let found: BTreeSet<&Name> = parsed.sets.iter().map(|s| &s.spec.name).collect();
        if selecting
            .iter()
            .flat_map(|p| &p.spec.package_sets)
            .chain(parsed.sets.iter().flat_map(|s| &s.spec.include))
            .any(|n| !found.contains(n))
        {
            for name in read.list(source, "packages")? {
                read.take(source, format!("packages/{name}"))?;
            }
            read.parse(&mut files, &mut parsed, &mut diags);
        }
        files.files.sort_by(|a, b| a.path.cmp(&b.path));
        files.undecodable.sort();
        files.links.sort_by(|a, b| a.path.cmp(&b.path));
        files.links.dedup();
        parsed.sort();
        let scope = super::check::Scope::Host {
            name: hostname.to_owned(),
            pools: selecting.iter().map(|p| p.spec.name.clone()).collect(),
        };
        let fleet = super::check::check(parsed, &files, &mut diags, &scope);
        Ok(HostRead {
            files,
            fleet,
            diags,
            scope,
        })
    }
}

/// What [`Fleet::parse_for_host`] read and found, for `crate::validate` to finish with the
/// rules that need resolution (`Fleet::for_host`).
#[derive(Debug)]
pub struct HostRead {
    /// The files read.
    pub files: FleetFiles,
    /// The fleet they make, when it could be assembled at all.
    pub fleet: Option<Fleet>,
    /// The manifest rules' problems, unsorted.
    pub diags: Vec<super::Diagnostic>,
    /// What was read.
    pub scope: super::check::Scope,
}

/// The files of a whole fleet read as a [`FleetSource`] (what a work tree or a full read
/// holds), so that a host's read can be compared with the whole fleet's: the same revision,
/// two ways. Undecodable files read back as bytes that are not UTF-8 either.
impl FleetSource for FleetFiles {
    type Error = std::convert::Infallible;

    fn read(&mut self, path: &str) -> Result<Entry, Self::Error> {
        if let Some(link) = self.link_on_the_way(path) {
            return Ok(link);
        }
        Ok(match self.text(path) {
            Some(text) => Entry::File(text.as_bytes().to_vec()),
            None if self.undecodable.iter().any(|p| p == path) => Entry::File(vec![0xff]),
            None => Entry::Missing,
        })
    }

    fn list(&mut self, dir: &str) -> Result<Result<Vec<String>, Entry>, Self::Error> {
        if let Some(link) = self.link_on_the_way(dir) {
            return Ok(Err(link));
        }
        let prefix = format!("{dir}/");
        let names: BTreeSet<String> = self
            .files
            .iter()
            .map(|f| f.path.as_str())
            .chain(self.undecodable.iter().map(String::as_str))
            .chain(self.links.iter().map(|l| l.path.as_str()))
            .filter_map(|p| p.strip_prefix(&prefix))
            .map(|rest| rest.split('/').next().unwrap_or(rest).to_owned())
            .collect();
        Ok(Ok(names.into_iter().collect()))
    }
}

impl FleetFiles {
    /// The link at `path` or at one of its parent directories, as a tree lookup meets it.
    fn link_on_the_way(&self, path: &str) -> Option<Entry> {
        let mut at = String::new();
        for part in path.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if let Some(link) = self.links.iter().find(|l| l.path == at) {
                return Some(Entry::Link {
                    at: at.clone(),
                    target: link.target.clone().unwrap_or_default().into_bytes(),
                });
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::Diagnostics;
    use crate::resolve;

    fn files(list: &[(&str, &str)]) -> FleetFiles {
        crate::manifest::test_files(list)
    }

    fn both(
        files: &FleetFiles,
        host: &str,
    ) -> (Result<Fleet, Diagnostics>, Result<Fleet, Diagnostics>) {
        let Ok(partial) = Fleet::for_host(&mut files.clone(), host);
        (Fleet::from_files(files), partial)
    }

    const FLEET: &[(&str, &str)] = &[
        (
            "packages/base.yaml",
            "kind: PackageSet\nname: base\ninclude: [core]\npackages: [vim]\n",
        ),
        (
            "packages/core.yaml",
            "kind: PackageSet\nname: core\npackages: [bash]\n",
        ),
        (
            "packages/db.yaml",
            "kind: PackageSet\nname: db\npackages: [postgresql]\n",
        ),
        (
            "pools/ws.yaml",
            "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\ngeneration: 2\n",
        ),
        (
            "pools/db.yaml",
            "kind: Pool\nname: db\nlabels: {role: db}\npackage_sets: [db]\n",
        ),
        (
            "generations/ws/1.yaml",
            "kind: Generation\npool: ws\nnumber: 1\npackages: {vim: {version: 1-1}}\n",
        ),
        (
            "generations/ws/2.yaml",
            "kind: Generation\npool: ws\nnumber: 2\npackages: {vim: {version: 1-2}, bash: {version: 5-1}, htop: {version: 3-1}}\n",
        ),
        (
            "hosts/ws-01.yaml",
            "kind: Host\nname: ws-01\npackages: [htop]\n",
        ),
        (
            "hosts/pg-01.yaml",
            "kind: Host\nname: pg-01\nlabels: {role: db}\n",
        ),
        (
            "hosts/pg-02.yaml",
            "kind: Host\nname: pg-02\nlabels: {role: db}\npackages: [pgbouncer]\n",
        ),
    ];

    #[test]
    fn a_host_resolves_as_in_the_whole_fleet() {
        let f = files(FLEET);
        for host in [
            "ws-01",
            "ws-02",
            "pg-01",
            "pg-02",
            "nobody",
            "Not A Name",
            "../x",
        ] {
            let (full, partial) = both(&f, host);
            let (full, partial) = (full.unwrap(), partial.unwrap());
            assert_eq!(
                resolve::resolve(&full, host),
                resolve::resolve(&partial, host),
                "{host}"
            );
        }
        let (_, partial) = both(&f, "ws-01");
        let partial = partial.unwrap();
        // Only what ws-01 needs was read.
        assert_eq!(
            partial.hosts.keys().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["ws-01"]
        );
        assert_eq!(
            partial.sets.keys().map(|n| n.as_str()).collect::<Vec<_>>(),
            ["base", "core"]
        );
        assert_eq!(partial.generations.len(), 1);
        assert_eq!(partial.pools.len(), 2);
    }

    #[test]
    fn another_hosts_broken_file_is_for_validate_not_this_host() {
        let mut list = FLEET.to_vec();
        list.push((
            "hosts/ws-02.yaml",
            "kind: Host\nname: ws-02\npakages: [x]\n",
        ));
        // Claimed by two pools: ws-* and the db labels.
        list.push((
            "hosts/ws-03.yaml",
            "kind: Host\nname: ws-03\nlabels: {role: db}\n",
        ));
        let f = files(&list);
        let (full, partial) = both(&f, "ws-01");
        let full = full.unwrap_err().to_string();
        assert!(
            full.contains("hosts/ws-02.yaml:3:1: unknown field `pakages`"),
            "{full}"
        );
        assert!(
            full.contains("host `ws-03` is matched by 2 pools"),
            "{full}"
        );
        assert!(partial.is_ok());
        // The broken host itself is refused, with the same message.
        for host in ["ws-02", "ws-03"] {
            let (_, partial) = both(&f, host);
            let partial = partial.unwrap_err().to_string();
            assert!(
                full.contains(partial.lines().nth(1).unwrap().trim()),
                "{partial}"
            );
        }
    }

    #[test]
    fn the_files_a_host_reads_are_checked_as_in_the_whole_fleet() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "pools/other.yaml",
                "kind: Pool\nname: other\nprune: maybe\n",
                "pools/other.yaml:3:8: prune",
            ),
            (
                "pools/db.yaml",
                "kind: Pool\nname: db\nhosts: [\"[\"]\n",
                "host glob `[` is invalid",
            ),
            (
                "packages/core.yaml",
                "kind: PackageSet\nname: core\ninclude: [base]\n",
                "include cycle",
            ),
            (
                "packages/core.yaml",
                "kind: PackageSet\nname: core\ninclude: [nope]\n",
                "unknown package set `nope`",
            ),
            (
                "generations/ws/2.yaml",
                "kind: Generation\npool: ws\nnumber: 2\npackages: {vim: {version: 1}}\n",
                "is not a full Arch version",
            ),
            (
                "generations/ws/2.yaml",
                "kind: Generation\npool: ws\nnumber: 2\npackages: {vim: {version: 1-2}}\n",
                "package `bash` (asked for by set core) is not pinned",
            ),
            (
                "fleet.yaml",
                "kind: Fleet\nname: acme\nkeys: [{name: a, key: nope}]\n",
                "fleet.yaml:3",
            ),
            (
                "hosts/ws-01.yaml",
                "kind: Host\nname: ws-01\npackages: [nothere]\n",
                "package `nothere` is not pinned",
            ),
        ];
        for (path, text, want) in cases {
            let mut list: Vec<(&str, &str)> =
                FLEET.iter().filter(|(p, _)| p != path).copied().collect();
            list.push((path, text));
            let f = files(&list);
            let (full, partial) = both(&f, "ws-01");
            let (full, partial) = (
                full.unwrap_err().to_string(),
                partial.unwrap_err().to_string(),
            );
            assert!(partial.contains(want), "{path}: {partial}");
            for line in partial.lines().skip(1) {
                assert!(full.contains(line.trim()), "{path}: {line} not in {full}");
            }
        }
        // Links are never followed, at a file or in place of a directory.
        for link in ["pools", "packages/core.yaml", "generations/ws", "hosts"] {
            let mut f = files(FLEET);
            f.links
                .push(crate::manifest::Link::symlink(link.to_owned(), b"/etc"));
            let (full, partial) = both(&f, "ws-01");
            let partial = partial.unwrap_err().to_string();
            assert!(
                partial.contains(&format!("{link}:0:0: is a symbolic link")),
                "{partial}"
            );
            assert!(
                full.unwrap_err()
                    .to_string()
                    .contains(&format!("{link}:0:0:"))
            );
        }
    }
}
