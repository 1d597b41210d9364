//! The hosts' reports as an operator reads them, for `fleetctl fleet status`
//! (docs/contract.md §7): every pool's refs of the status repository fetched into a local copy
//! (the caller's, kept between runs so that a later run fetches only what changed), and each
//! report verified against the key its host's manifest names in the operator's
//! fleet (HEAD of `--repo`), for that fleet's name. Nothing is remembered between runs, so an
//! older report replayed over a newer one cannot be told here (hosts remember what they saw).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::keys::{self, Key};
use crate::manifest::Fleet;
use crate::report::HostReport;
use crate::status_repo::{self, StatusRemote};

/// How long the fetch of every pool's refs may take.
pub const FETCH_TIMEOUT: Duration = Duration::from_secs(60);

/// The most the fetch may bring (a report is a few KiB; 100,000 hosts stay far below it).
pub const MAX_FETCH_BYTES: u64 = 1024 * 1024 * 1024;

/// What the status repository holds, verified.
#[derive(Debug, Default)]
pub struct Reports {
    /// The verified reports, by pool and host.
    pub valid: BTreeMap<String, BTreeMap<String, HostReport>>,
    /// The reports that did not verify: (pool, host, why).
    pub rejected: Vec<(String, String, String)>,
}

/// The status repository could not be read; nothing is shown.
#[derive(Debug, thiserror::Error)]
pub enum FleetReportsError {
    /// Fetching it failed.
    #[error(transparent)]
    Fetch(#[from] status_repo::FetchError),
    /// Reading the fetched copy failed.
    #[error(transparent)]
    Read(#[from] status_repo::ReadError),
}

/// Fetches every pool's reports from `url` into the local copy `scratch` (made when missing,
/// brought up to date when there) and verifies them against `fleet`.
pub fn read(fleet: &Fleet, url: &str, scratch: &Path) -> Result<Reports, FleetReportsError> {
    let remote = StatusRemote {
        url: url.to_owned(),
        // The operator's own git and ssh configuration reach the forge.
        ssh: None,
        timeout: FETCH_TIMEOUT,
        max_fetch_bytes: MAX_FETCH_BYTES,
    };
    status_repo::fetch_all(&remote, scratch)?;
    let key_of = |host: &str| -> Option<Key> {
        let doc = fleet.hosts.get(host)?;
        let text = doc.spec.key.as_deref()?;
        keys::parse_key(&format!("{} key", doc.file), text).ok()
    };
    let pools = status_repo::read_all(scratch, &key_of, fleet.name().as_str(), &BTreeMap::new())?;
    let mut out = Reports::default();
    for (pool, read) in pools {
        for (host, why) in &read.rejected {
            out.rejected
                .push((pool.clone(), host.clone(), why.to_string()));
        }
        out.valid.insert(pool, read.valid);
    }
    Ok(out)
}
