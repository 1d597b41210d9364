//! Where the sync databases on disk came from: `<dbpath>/sync/.pacfleet-source`, and the
//! decision to force a refresh when they came from other servers than the ones about to be
//! used.
//!
//! Why this exists: libalpm refreshes a sync database with `If-Modified-Since` set to the
//! local file's mtime (which it sets to the server's `Last-Modified`). That is right for one
//! mirror that only moves forward, and wrong as soon as the server changes: from the mirrors
//! to an archive snapshot (older than the mirror's database), from one snapshot date to an
//! earlier one, or from a snapshot back to a mirror that is behind it — each answers "not
//! modified" and the host keeps the wrong database. So after every refresh pacfleet records,
//! per database, the servers it was refreshed from and the identity of the file (size and
//! mtime); before the next one it forces the download (`update(true)`) when the servers it
//! will use differ from those the files on disk came from.
//!
//! Why beside the databases and not in pacfleet's state directory: the record describes those
//! files and must travel with them. A lock-free plan refreshes a private copy of the sync
//! directory (`system::private_dbpath` copies every file of it, this one included), so the
//! copy's record is updated with the copy and the real one is untouched; `System` knows its
//! dbpath but not the state directory; and deleting the sync directory deletes the record
//! with it. A database file that does not match its record (pacman -Sy ran since) is taken to
//! come from the servers in pacman.conf, which is what pacman uses. Without any record (the
//! first pass, a damaged record, or `pacman -Sc`, which deletes every file of the sync
//! directory that is not a database) nothing is known and the refresh is forced, once.
//! The record is rewritten only when it changes, so a pass that changes nothing leaves the
//! sync directory — and the plan digest over it — as it was.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The record's file name in the sync directory. libalpm never reads it; `pacman -Sc`
/// deletes it (the next refresh is then forced once).
pub const FILE: &str = ".pacfleet-source";

/// Servers by database name.
pub type Servers = BTreeMap<String, Vec<String>>;

/// What one database file was refreshed from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct DbRecord {
    servers: Vec<String>,
    /// `size:mtime_sec.mtime_nsec` of `<name>.db` right after the refresh.
    file: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
struct Record {
    version: u32,
    dbs: BTreeMap<String, DbRecord>,
}

/// Reading or writing the record failed.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot write {path}, pacfleet's record of where the sync databases came from: {source}; check that the sync database directory is writable"
)]
pub struct SourceError {
    /// The record's path.
    pub path: String,
    /// The io error.
    pub source: std::io::Error,
}

/// `(the servers each sync database of `alpm` uses now, those pacman.conf gives it)`.
pub fn servers(alpm: &alpm::Alpm, conf: &pacmanconf::Config) -> (Servers, Servers) {
    let using = alpm
        .syncdbs()
        .iter()
        .map(|db| {
            let servers = db.servers().iter().map(str::to_owned).collect();
            (db.name().to_owned(), servers)
        })
        .collect();
    let configured = conf
        .repos
        .iter()
        .map(|r| (r.name.clone(), r.servers.clone()))
        .collect();
    (using, configured)
}

fn db_file(sync_dir: &Path, name: &str) -> PathBuf {
    sync_dir.join(format!("{name}.db"))
}

/// The identity of a database file (`None`: there is none): its size and mtime, which a
/// refresh that downloads changes and a copy that keeps mtimes keeps.
fn identity(path: &Path) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some(format!("{}:{}.{:09}", m.size(), m.mtime(), m.mtime_nsec()))
}

/// The record; `None` when there is none, or it is damaged or of another version (then
/// nothing is known about the files, which costs one forced download).
fn load(sync_dir: &Path) -> Option<Record> {
    std::fs::read(sync_dir.join(FILE))
        .ok()
        .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
        .filter(|r| r.version == 1)
}

/// Whether refreshing the databases of `sync_dir` from `servers` must be forced: some
/// database file exists and came from other servers — those recorded when the file is still
/// the one recorded, `configured` (pacman.conf's) when pacman replaced it since — or there is
/// no record to tell.
pub fn must_force(sync_dir: &Path, servers: &Servers, configured: &Servers) -> bool {
    let record = load(sync_dir);
    servers.iter().any(|(name, wanted)| {
        let Some(on_disk) = identity(&db_file(sync_dir, name)) else {
            return false; // nothing on disk: the refresh downloads it whatever the mtime
        };
        let Some(record) = &record else {
            tracing::info!(
                "no record of where sync database {name} came from; refreshing it from {} in full",
                wanted.join(", ")
            );
            return true;
        };
        let came_from = match record.dbs.get(name) {
            Some(r) if r.file == on_disk => Some(&r.servers),
            _ => configured.get(name),
        };
        let differs = came_from != Some(wanted);
        if differs {
            tracing::info!(
                "sync database {name} came from {}; refreshing it from {} in full",
                came_from.map_or_else(|| "unknown servers".to_owned(), |s| s.join(", ")),
                wanted.join(", ")
            );
        }
        differs
    })
}

/// Records that the databases of `sync_dir` were just refreshed from `servers`. Writes only
/// when the record changes (atomically: a temporary file, then a rename).
pub fn record(sync_dir: &Path, servers: &Servers) -> Result<(), SourceError> {
    let dbs: BTreeMap<String, DbRecord> = servers
        .iter()
        .filter_map(|(name, s)| {
            identity(&db_file(sync_dir, name)).map(|file| {
                (
                    name.clone(),
                    DbRecord {
                        servers: s.clone(),
                        file,
                    },
                )
            })
        })
        .collect();
    let new = Record { version: 1, dbs };
    if load(sync_dir).as_ref() == Some(&new) {
        return Ok(());
    }
    let path = sync_dir.join(FILE);
    let err = |source| SourceError {
        path: path.display().to_string(),
        source,
    };
    let mut text = serde_json::to_string_pretty(&new).map_err(|e| err(e.into()))?;
    text.push('\n');
    let tmp = sync_dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(err)?;
    std::fs::rename(&tmp, &path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(list: &[(&str, &str)]) -> Servers {
        list.iter()
            .map(|(n, s)| (n.to_string(), vec![s.to_string()]))
            .collect()
    }

    #[test]
    fn forces_exactly_when_the_files_came_from_elsewhere() {
        let dir = tempfile::tempdir().unwrap();
        let sync = dir.path();
        let mirror = servers(&[("core", "file:///mirror/core")]);
        let snap = servers(&[("core", "file:///ala/repos/2025/03/01/core/os/x86_64")]);
        let snap2 = servers(&[("core", "file:///ala/repos/2025/04/05/core/os/x86_64")]);
        // Nothing on disk: nothing to force, whatever the servers.
        assert!(!must_force(sync, &snap, &mirror));
        // A database and no record (before pacfleet's first pass, after `pacman -Sc`):
        // nobody knows where it came from.
        std::fs::write(sync.join("core.db"), b"mirror").unwrap();
        assert!(must_force(sync, &mirror, &mirror));
        assert!(must_force(sync, &snap, &mirror));
        record(sync, &mirror).unwrap();
        assert!(!must_force(sync, &mirror, &mirror));
        assert!(must_force(sync, &snap, &mirror));
        // Refreshed from the snapshot and recorded: the same snapshot needs no force, the
        // mirrors or another date do.
        record(sync, &snap).unwrap();
        assert!(!must_force(sync, &snap, &mirror));
        assert!(must_force(sync, &mirror, &mirror));
        assert!(must_force(sync, &snap2, &mirror));
        // Recording the same again does not touch the file.
        let before = std::fs::metadata(sync.join(FILE))
            .unwrap()
            .modified()
            .unwrap();
        std::thread::sleep(std::time::Duration::from_millis(10));
        record(sync, &snap).unwrap();
        let after = std::fs::metadata(sync.join(FILE))
            .unwrap()
            .modified()
            .unwrap();
        assert_eq!(before, after);
        // pacman -Sy replaced the file behind pacfleet's back: it is the mirror's again.
        std::fs::write(sync.join("core.db"), b"mirror, newer").unwrap();
        assert!(must_force(sync, &snap, &mirror));
        assert!(!must_force(sync, &mirror, &mirror));
        // A repository pacfleet never refreshed: pacman's, from pacman.conf.
        let both = |a: &Servers| {
            let mut s = a.clone();
            s.insert("extra".into(), vec!["file:///mirror/extra".into()]);
            s
        };
        record(sync, &mirror).unwrap();
        std::fs::write(sync.join("extra.db"), b"mirror").unwrap();
        assert!(!must_force(sync, &both(&mirror), &both(&mirror)));
        // A damaged record is no record.
        std::fs::write(sync.join(FILE), b"{not json").unwrap();
        assert!(must_force(sync, &mirror, &mirror));
    }
}
