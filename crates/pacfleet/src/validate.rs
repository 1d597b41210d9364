//! Validation: the one place that loads and checks a whole fleet, as `fleetctl validate` and
//! `fleetctl diff` (CI) and every other reader of a fleet revision see it. It runs the manifest
//! rules ([`Fleet::parse`]) and then the fleet-wide rules that need resolution
//! ([`resolve::check_fleet`]), and reports every problem at once, sorted.
//!
//! The entry points are [`Fleet::from_files`] and [`Fleet::from_dir`] (the whole fleet: CI,
//! `validate`, `diff`, operators' commands) and [`Fleet::for_host`] (what one host's pass needs,
//! read by exact path), defined here rather than in `manifest` because they need `resolve`,
//! which sits above `manifest`.

use std::path::Path;

use gix::hash::ObjectId;

use crate::manifest::{Diagnostics, Fleet, FleetFiles, FleetSource, LoadError, Scope};
use crate::resolve;
use crate::source::{ReadError, Repo};

/// The rules that need resolution on what was read, then every problem sorted, once.
fn finish(
    fleet: Option<Fleet>,
    files: &FleetFiles,
    mut diags: Vec<crate::manifest::Diagnostic>,
    scope: &Scope,
) -> Result<Fleet, Diagnostics> {
    if let Some(f) = &fleet {
        resolve::check_fleet(f, files, &mut diags, scope);
    }
    diags.sort();
    diags.dedup();
    match fleet {
        Some(f) if diags.is_empty() => Ok(f),
        _ => Err(Diagnostics(diags)),
    }
}

impl Fleet {
    /// Loads and checks every manifest in `files` — the manifest rules and the fleet-wide
    /// ones — reporting every problem at once.
    pub fn from_files(files: &FleetFiles) -> Result<Fleet, Diagnostics> {
        let mut diags = Vec::new();
        let fleet = Fleet::parse(files, &mut diags);
        finish(fleet, files, diags, &Scope::Full)
    }

    /// Reads and checks what `hostname` needs of the fleet in `source`, by exact paths
    /// ([`Fleet::parse_for_host`]): resolving `hostname` against the result gives exactly what
    /// it gives against the whole fleet whenever the whole fleet is valid; a problem in a file
    /// read here is reported as the whole fleet's load reports it. Other hosts' files, and what
    /// only they could get wrong, are left to the whole fleet's check (CI).
    pub fn for_host<S: FleetSource>(
        source: &mut S,
        hostname: &str,
    ) -> Result<Result<Fleet, Diagnostics>, S::Error> {
        let read = Fleet::parse_for_host(source, hostname)?;
        Ok(finish(read.fleet, &read.files, read.diags, &read.scope))
    }

    /// Reads a fleet work tree (the directory holding `fleet.yaml`) and checks it.
    pub fn from_dir(root: &Path) -> Result<Fleet, LoadError> {
        let files = FleetFiles::from_dir(root)?;
        Fleet::from_files(&files).map_err(LoadError::Invalid)
    }
}

/// What host `hostname` needs of the fleet at `tree` (a tree id, hex) of the repository at
/// `repo`, read by exact path and checked ([`Fleet::for_host`]): `Err` inside
/// for a problem in the manifests it read.
pub fn fleet_for_host(
    repo: &Path,
    tree: &str,
    hostname: &str,
) -> Result<Result<Fleet, Diagnostics>, ReadError> {
    let r = Repo::open(repo)?;
    let id = ObjectId::from_hex(tree.as_bytes()).map_err(|e| ReadError::UnknownRevision {
        repo: repo.to_owned(),
        rev: tree.to_owned(),
        detail: e.to_string(),
    })?;
    let mut files = r.tree_files(id);
    Fleet::for_host(&mut files, hostname)
}
