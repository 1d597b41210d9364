//! The demo: a complete sandbox fleet on this machine (synthetic packages, a fleet git repo
//! copied from example-fleet, three hosts as directories) taken through a story of commits.

use std::path::Path;

/// Runs the demo in `keep` (or a temporary directory) and prints the story.
pub fn run(keep: Option<&Path>) -> anyhow::Result<()> {
    let _ = keep;
    anyhow::bail!("the demo is not built yet")
}
