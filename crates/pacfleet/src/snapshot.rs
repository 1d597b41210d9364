//! Dated repository snapshots: what a `snapshot: YYYY-MM-DD` means as a place to download
//! from. Pure: strings in, strings out.
//!
//! Owns: the date rule (a real calendar date written exactly `YYYY-MM-DD`), the URL of a
//! repository in the fleet's archive on that date — the Arch Linux Archive layout,
//! `<archive>/repos/YYYY/MM/DD/<repo>/os/<arch>` — and which architecture `$arch` stands for
//! on a libalpm handle. It does no I/O: pointing a handle's sync databases at these URLs is
//! `System::use_snapshot`, remembering where the databases on disk came from is
//! `sync_source`, and reading an archive's databases for `fleetctl diff` is `archive`.

/// A snapshot that cannot be turned into a server URL.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    /// The date is not `YYYY-MM-DD` or not a day of the calendar.
    #[error(
        "snapshot `{date}` {reason}; write the archive day as YYYY-MM-DD (zero-padded), e.g. 2025-03-01"
    )]
    BadDate {
        /// The date as written.
        date: String,
        /// What is wrong with it.
        reason: String,
    },
    /// There is a snapshot but the fleet has no archive to take it from.
    #[error(
        "snapshot {date} needs the fleet's archive, but fleet.yaml has no `archive:`; add `archive: https://archive.archlinux.org` (or file:///path/to/a/mirror of it) to fleet.yaml, or remove `snapshot:`"
    )]
    NoArchive {
        /// The date.
        date: String,
    },
    /// The archive is not a `file://`, `http://` or `https://` URL, or holds characters no URL
    /// may (whitespace, control characters).
    #[error(
        "archive `{archive}` is not a usable URL; write https://… or file:///absolute/path in fleet.yaml `archive:`"
    )]
    BadArchive {
        /// The archive as written.
        archive: String,
    },
    /// A repository or architecture name that cannot be part of a URL path.
    #[error(
        "`{name}` cannot be part of an archive URL (only a-z, A-Z, 0-9 and @._+- are allowed); check the repository names in pacman.conf and `Architecture`"
    )]
    BadComponent {
        /// The repository or architecture.
        name: String,
    },
}

/// Checks that `date` is a snapshot date: exactly `YYYY-MM-DD` (ten characters, zero-padded)
/// and a real calendar day (no 2025-02-30). `Err` says what is wrong, in words.
pub fn check_date(date: &str) -> Result<(), SnapshotError> {
    let bad = |reason: &str| SnapshotError::BadDate {
        date: date.to_owned(),
        reason: reason.to_owned(),
    };
    let b = date.as_bytes();
    let shape = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape {
        return Err(bad("has the wrong form"));
    }
    if chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").is_err() {
        return Err(bad("is not a day of the calendar"));
    }
    Ok(())
}

fn check_archive(archive: &str) -> Result<&str, SnapshotError> {
    let ok = ["file://", "http://", "https://"]
        .iter()
        .any(|s| archive.starts_with(s))
        && !archive.chars().any(|c| c.is_whitespace() || c.is_control());
    if !ok {
        return Err(SnapshotError::BadArchive {
            archive: archive.to_owned(),
        });
    }
    Ok(archive.trim_end_matches('/'))
}

fn check_component(name: &str) -> Result<&str, SnapshotError> {
    let ok = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "@._+-".contains(c));
    if ok {
        Ok(name)
    } else {
        Err(SnapshotError::BadComponent {
            name: name.to_owned(),
        })
    }
}

/// `<archive>/repos/YYYY/MM/DD/$repo/os/$arch`: the `Server =` line a pacman.conf would carry
/// for the snapshot, with pacman's variables left in (for messages and docs).
pub fn server(archive: Option<&str>, date: &str) -> Result<String, SnapshotError> {
    check_date(date)?;
    let archive = archive.ok_or_else(|| SnapshotError::NoArchive {
        date: date.to_owned(),
    })?;
    let archive = check_archive(archive)?;
    // check_date proved the shape: ten ASCII characters.
    let (y, m, d) = (&date[0..4], &date[5..7], &date[8..10]);
    Ok(format!("{archive}/repos/{y}/{m}/{d}/$repo/os/$arch"))
}

/// The server of repository `repo` for architecture `arch` on `date`: [`server`] with `$repo`
/// and `$arch` expanded, as pacman expands them.
pub fn repo_server(
    archive: Option<&str>,
    date: &str,
    repo: &str,
    arch: &str,
) -> Result<String, SnapshotError> {
    let template = server(archive, date)?;
    let repo = check_component(repo)?;
    let arch = check_component(arch)?;
    Ok(template.replace("$repo", repo).replace("$arch", arch))
}

/// The database file of `repo` on `date`: `<repo_server>/<repo>.db`, what libalpm downloads.
pub fn db_url(
    archive: Option<&str>,
    date: &str,
    repo: &str,
    arch: &str,
) -> Result<String, SnapshotError> {
    Ok(format!(
        "{}/{repo}.db",
        repo_server(archive, date, repo, arch)?
    ))
}

/// What `$arch` stands for on a handle configured with `architectures`: the first one, as
/// pacman expands `$arch` in `Server =` lines; `auto` (or none at all) is the machine's own.
pub fn handle_arch<'a>(architectures: impl IntoIterator<Item = &'a str>) -> String {
    match architectures.into_iter().next() {
        Some(a) if a != "auto" => a.to_owned(),
        _ => std::env::consts::ARCH.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_exact_calendar_days() {
        for ok in ["2025-03-01", "2024-02-29", "1999-12-31"] {
            assert_eq!(check_date(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("2025-3-1", "form"),
            ("2025-03-1", "form"),
            ("20250301", "form"),
            ("2025/03/01", "form"),
            ("March 2025", "form"),
            ("+2025-03-01", "form"),
            ("2025-03-01 ", "form"),
            ("", "form"),
            ("2025-02-29", "calendar"),
            ("2025-13-01", "calendar"),
            ("2025-00-10", "calendar"),
            ("2025-04-31", "calendar"),
        ] {
            let err = check_date(bad).expect_err(bad).to_string();
            assert!(err.contains(why), "{bad}: {err}");
            assert!(err.contains("write the archive day as YYYY-MM-DD"), "{err}");
        }
    }

    #[test]
    fn urls_follow_the_arch_linux_archive() {
        assert_eq!(
            server(Some("https://archive.archlinux.org/"), "2025-03-01").unwrap(),
            "https://archive.archlinux.org/repos/2025/03/01/$repo/os/$arch"
        );
        assert_eq!(
            repo_server(Some("file:///srv/ala"), "2024-12-31", "core", "x86_64").unwrap(),
            "file:///srv/ala/repos/2024/12/31/core/os/x86_64"
        );
        assert_eq!(
            db_url(Some("http://a.example"), "2025-04-05", "extra", "aarch64").unwrap(),
            "http://a.example/repos/2025/04/05/extra/os/aarch64/extra.db"
        );
    }

    #[test]
    fn bad_inputs_are_errors_that_say_what_to_do() {
        let no_archive = server(None, "2025-03-01").unwrap_err().to_string();
        assert!(
            no_archive.contains("fleet.yaml has no `archive:`")
                && no_archive.contains("remove `snapshot:`"),
            "{no_archive}"
        );
        assert!(matches!(
            server(Some("ftp://x"), "2025-03-01"),
            Err(SnapshotError::BadArchive { .. })
        ));
        assert!(matches!(
            server(Some("https://a b"), "2025-03-01"),
            Err(SnapshotError::BadArchive { .. })
        ));
        assert!(matches!(
            server(Some("https://a"), "2025-02-30"),
            Err(SnapshotError::BadDate { .. })
        ));
        for bad in ["../etc", "a/b", "", "a?b", "a b"] {
            assert!(
                matches!(
                    repo_server(Some("https://a"), "2025-03-01", bad, "x86_64"),
                    Err(SnapshotError::BadComponent { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn arch_is_the_first_or_the_machines() {
        assert_eq!(handle_arch(["aarch64", "x86_64"]), "aarch64");
        assert_eq!(handle_arch(["auto"]), std::env::consts::ARCH);
        assert_eq!(handle_arch([]), std::env::consts::ARCH);
    }
}
