//! Reading the fleet archive's repositories of one date on an operator's machine, for
//! `fleetctl diff`: which version of each asked-for package `<archive>/repos/YYYY/MM/DD/
//! <repo>/os/<arch>/<repo>.db` holds.
//!
//! libalpm does the reading (as on a host): each repository is registered on a throwaway
//! handle in a temporary directory and refreshed from the snapshot's URL, so `file://` and
//! `http(s)://` work as `pacman -Sy` does, every database format libarchive reads is read,
//! and the reading is bounded as libalpm bounds it (a database over 128 MiB is refused; a
//! connection that takes more than 10 s, or moves less than one byte per second for 10 s, is
//! given up). Nothing is verified: this is a preview, nothing is installed from it (hosts
//! verify with their own SigLevel). What comes back is untrusted text: versions are accepted
//! only in the characters a pacman version uses, and callers escape everything they print.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

/// Versions by package name, by repository.
pub type Versions = BTreeMap<String, BTreeMap<String, String>>;

/// Longest version accepted from an archive.
const MAX_VERSION: usize = 128;

/// Whether `v` looks like a pacman version (`[epoch:]pkgver-pkgrel`): what is printed from an
/// archive is never anything else.
pub fn plausible_version(v: &str) -> bool {
    !v.is_empty()
        && v.len() <= MAX_VERSION
        && v.contains('-')
        && v.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._+:~-".contains(c))
}

/// Reads `repos` of `date` in `archive` for architecture `arch` and returns the versions of
/// `names` each holds (names a repository lacks are absent). Every repository must be read:
/// the first that cannot be is the error (its URL and what libalpm said).
pub fn read(
    archive: &str,
    date: &str,
    repos: &[String],
    arch: &str,
    names: &BTreeSet<String>,
) -> Result<Versions, String> {
    // One repository after the other: libalpm handles initialise and clean up libcurl's
    // global state, which older libcurls do not allow from several threads at once.
    repos
        .iter()
        .map(|repo| Ok((repo.clone(), read_repo(archive, date, repo, arch, names)?)))
        .collect()
}

fn read_repo(
    archive: &str,
    date: &str,
    repo: &str,
    arch: &str,
    names: &BTreeSet<String>,
) -> Result<BTreeMap<String, String>, String> {
    let server =
        crate::snapshot::repo_server(Some(archive), date, repo, arch).map_err(|e| e.to_string())?;
    let url = format!("{server}/{repo}.db");
    let fail = |what: String| format!("{url}: {what}");
    let tmp = tempfile::Builder::new()
        .prefix("pacfleet-archive-")
        .tempdir()
        .map_err(|e| fail(format!("cannot create a temporary directory: {e}")))?;
    let (root, dbpath) = (tmp.path().join("root"), tmp.path().join("db"));
    for d in [&root, &dbpath] {
        std::fs::create_dir_all(d)
            .map_err(|e| fail(format!("cannot create {}: {e}", d.display())))?;
    }
    let mut alpm = alpm::Alpm::new(
        root.to_string_lossy().as_bytes(),
        dbpath.to_string_lossy().as_bytes(),
    )
    .map_err(|e| fail(format!("libalpm: {e}")))?;
    // libalpm says why a download failed only in its log.
    let log: Arc<Mutex<Vec<String>>> = Arc::default();
    let sink = Arc::clone(&log);
    alpm.set_log_cb((), move |level: alpm::LogLevel, msg: &str, _: &mut ()| {
        if level.intersects(alpm::LogLevel::ERROR | alpm::LogLevel::WARNING)
            && let Ok(mut l) = sink.lock()
        {
            l.push(msg.trim().to_owned());
        }
    });
    let logged = || log.lock().map(|l| l.join("; ")).unwrap_or_default();
    let db = alpm
        .register_syncdb_mut(repo, alpm::SigLevel::NONE)
        .map_err(|e| fail(format!("libalpm: {e}")))?;
    db.add_server(server.as_str())
        .map_err(|e| fail(format!("libalpm: {e}")))?;
    if let Err(e) = alpm.syncdbs_mut().update(false) {
        let detail = logged();
        return Err(fail(if detail.is_empty() {
            e.to_string()
        } else {
            detail
        }));
    }
    let Some(db) = alpm.syncdbs().iter().next() else {
        return Err(fail("libalpm lost the database (a bug)".to_owned()));
    };
    let mut out = BTreeMap::new();
    // Reading the first package loads the whole database; a damaged one logs an error.
    let _ = db.pkgs().len();
    let detail = logged();
    if !detail.is_empty() {
        return Err(fail(format!("the database does not read: {detail}")));
    }
    for name in names {
        if let Ok(p) = db.pkg(name.as_str()) {
            let v = p.version().as_str();
            if !plausible_version(v) {
                return Err(fail(format!(
                    "the entry of `{name}` has an invalid version, so the database is refused"
                )));
            }
            out.insert(name.clone(), v.to_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pacman_versions_are_plausible() {
        for ok in [
            "1.0-1",
            "1:2.3.4+r5+gabc-2",
            "2.41+r48+g5cb575ca9a3d-1",
            "1.0rc1-1.1",
        ] {
            assert!(plausible_version(ok), "{ok}");
        }
        for bad in [
            "",
            "1.0",
            "1.0-1\n",
            "1.0-1`",
            "1.0-1|x",
            "\u{1b}[31m-1",
            "1.0-1 a",
        ] {
            assert!(!plausible_version(bad), "{bad:?}");
        }
        assert!(!plausible_version(&format!("{}-1", "1".repeat(200))));
    }
}
