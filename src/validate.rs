//! Validation: the one place that loads and checks a whole fleet, as `fleetctl validate` and
//! `fleetctl diff` (CI) and every other reader of a fleet revision see it. It runs the manifest
//! rules ([`Fleet::parse`]) and then the fleet-wide rules that need resolution
//! ([`resolve::check_fleet`]), and reports every problem at once, sorted.
//!
//! The entry points are [`Fleet::from_files`] and [`Fleet::from_dir`], defined here rather than
//! in `manifest` because they need `resolve`, which sits above `manifest`.

use std::path::Path;

use crate::manifest::{Diagnostics, Fleet, FleetFiles, LoadError};
use crate::resolve;

impl Fleet {
    /// Loads and checks every manifest in `files` — the manifest rules and the fleet-wide
    /// ones — reporting every problem at once.
    pub fn from_files(files: &FleetFiles) -> Result<Fleet, Diagnostics> {
        let mut diags = Vec::new();
        let fleet = Fleet::parse(files, &mut diags);
        if let Some(f) = &fleet {
            resolve::check_fleet(f, files, &mut diags);
        }
        diags.sort();
        diags.dedup();
        match fleet {
            Some(f) if diags.is_empty() => Ok(f),
            _ => Err(Diagnostics(diags)),
        }
    }

    /// Reads a fleet work tree (the directory holding `fleet.yaml`) and checks it.
    pub fn from_dir(root: &Path) -> Result<Fleet, LoadError> {
        let files = FleetFiles::from_dir(root)?;
        Fleet::from_files(&files).map_err(LoadError::Invalid)
    }
}
