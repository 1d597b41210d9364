//! example-fleet/, embedded in the binary so that `fleetctl demo` works from an installed
//! fleetctl, far from the source tree. A unit test walks example-fleet/ on disk and fails when a
//! file is missing here, so the list cannot drift.

use anyhow::Context as _;

use crate::manifest::{Fleet, FleetFiles};

macro_rules! embed {
    ($($path:literal),* $(,)?) => {
        &[$((
            $path,
            include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/example-fleet/", $path)),
        )),*]
    };
}

/// Every file of example-fleet/: (path relative to it, `/`-separated; contents).
pub(super) const EXAMPLE_FLEET: &[(&str, &str)] = embed!(
    ".github/workflows/fleet.yaml",
    "README.md",
    "fleet.yaml",
    "generations/build-servers/1.yaml",
    "generations/build-servers/2.yaml",
    "hosts/build-01.yaml",
    "hosts/ws-07.yaml",
    "packages/base.yaml",
    "packages/build.yaml",
    "packages/core-tools.yaml",
    "packages/desktop.yaml",
    "pools/build-servers.yaml",
    "pools/canary.yaml",
    "pools/workstations.yaml",
);

/// The embedded fleet, parsed and checked.
pub(super) fn fleet() -> anyhow::Result<Fleet> {
    let files = FleetFiles::from_blobs(
        EXAMPLE_FLEET
            .iter()
            .map(|(path, text)| ((*path).to_owned(), text.as_bytes().to_vec())),
    );
    Fleet::from_files(&files).context("the example fleet built into fleetctl is invalid (a bug)")
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::Path;

    use super::*;

    fn walk(root: &Path, dir: &Path, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).unwrap();
                let rel: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                out.insert(rel.join("/"));
            }
        }
    }

    #[test]
    fn every_file_of_example_fleet_is_embedded() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("example-fleet");
        let mut on_disk = BTreeSet::new();
        walk(&root, &root, &mut on_disk);
        let embedded: BTreeSet<String> =
            EXAMPLE_FLEET.iter().map(|(p, _)| (*p).to_owned()).collect();
        assert_eq!(
            embedded.len(),
            EXAMPLE_FLEET.len(),
            "a file is listed twice"
        );
        let missing: Vec<&String> = on_disk.difference(&embedded).collect();
        let gone: Vec<&String> = embedded.difference(&on_disk).collect();
        assert!(
            missing.is_empty() && gone.is_empty(),
            "update EXAMPLE_FLEET in src/cli/demo/embedded.rs: not embedded {missing:?}, no longer on disk {gone:?}"
        );
    }

    #[test]
    fn the_embedded_fleet_is_valid() {
        let fleet = fleet().unwrap();
        assert!(fleet.pools.contains_key("workstations"));
        assert!(fleet.pools.contains_key("build-servers"));
    }
}
