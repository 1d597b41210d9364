//! example-fleet/, embedded in the binary so that `fleetctl demo` works from an installed
//! fleetctl, far from the source tree. A unit test walks example-fleet/ on disk and fails when a
//! file is missing here, so the list cannot drift.

use anyhow::Context as _;

use pacfleet::manifest::{Fleet, FleetFiles};

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
    ".github/fleet-ci.sh",
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

/// The pool example-fleet ships floating and the demo pins to its highest example generation
/// (the sandbox's sha256 pins fit it, which real hosts' would not).
pub(super) const PINNED_POOL: &str = "build-servers";

/// example-fleet's files as the demo starts from them: [`PINNED_POOL`] pinned to its
/// highest-numbered generation file, as `fleetctl set-latest` would have pinned it.
pub(super) fn demo_files() -> anyhow::Result<Vec<(&'static str, String)>> {
    let dir = format!("generations/{PINNED_POOL}/");
    let highest = EXAMPLE_FLEET
        .iter()
        .filter_map(|(p, _)| {
            p.strip_prefix(&dir)?
                .strip_suffix(".yaml")?
                .parse::<u32>()
                .ok()
        })
        .max()
        .with_context(|| format!("example-fleet has no {dir}*.yaml (a bug)"))?;
    let pool_file = format!("pools/{PINNED_POOL}.yaml");
    EXAMPLE_FLEET
        .iter()
        .map(|(path, text)| {
            if *path == pool_file && pacfleet::capture::pool_generation(text) == Ok(None) {
                let pinned = pacfleet::capture::set_pool_generation(path, text, highest)
                    .with_context(|| format!("pinning {path} for the demo (a bug)"))?;
                Ok((*path, pinned))
            } else {
                Ok((*path, (*text).to_owned()))
            }
        })
        .collect()
}

/// The embedded fleet as the demo starts from it ([`demo_files`]), parsed and checked.
pub(super) fn fleet() -> anyhow::Result<Fleet> {
    let files = FleetFiles::from_blobs(
        demo_files()?
            .into_iter()
            .map(|(path, text)| (path.to_owned(), text.into_bytes())),
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
