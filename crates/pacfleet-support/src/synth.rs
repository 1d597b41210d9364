//! Synthetic Arch Linux packages and package repositories.
//!
//! This module owns everything pacfleet needs to fabricate pacman-compatible artifacts without
//! makepkg, repo-add or network access: `fleetctl demo` uses it to stage a self-contained fleet,
//! and the integration tests use it to drive the real pacman/libalpm against known packages.
//!
//! - [`SynthPackage`] describes a package (name, version, dependencies, files, backup files);
//!   [`build_package`] writes it as `<name>-<version>-<arch>.pkg.tar.zst` (zstd, pacman's
//!   default `PKGEXT`) in the layout makepkg produces (`.PKGINFO` first, a gzip'ed `.MTREE`,
//!   then directories and files owned by root).
//! - [`write_repo`] turns built package files into a sync repository: `<repo>.db.tar.gz` and
//!   `<repo>.files.tar.gz` with the entries repo-add writes, plus plain copies `<repo>.db` and
//!   `<repo>.files` (copies, not symlinks, so any `file://` or HTTP server can serve them). A
//!   detached signature `<package file>.sig` beside a package goes into its entry as
//!   `%PGPSIG%` and into the repository directory, as `repo-add --include-sigs` does.
//! - [`archive_path`] places a package file in the Arch Linux Archive layout.
//! - [`sha256_file`] hashes a file the way repo-add's `%SHA256SUM%` does.
//!
//! Everything written here is byte-for-byte reproducible: timestamps are fixed to
//! [`BUILD_DATE`], owners are root, and entries are written in sorted order.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

/// The fixed build date (seconds since the epoch, 2023-11-14T22:13:20Z) written as `builddate`
/// and used as the mtime of every archive entry, so that outputs are reproducible.
pub const BUILD_DATE: u64 = 1_700_000_000;

/// The `packager` recorded in synthetic packages.
pub const PACKAGER: &str = "pacfleet synth <synth@pacfleet.invalid>";

/// The `license` recorded in synthetic packages.
const LICENSE: &str = "MIT";

/// zstd level of package files: makepkg's `COMPRESSZST=(zstd -c -T0 -)` uses zstd's default.
const ZSTD_LEVEL: i32 = 3;

/// The largest package signature repo-add accepts (bytes).
const MAX_SIGNATURE: u64 = 16 * 1024;

/// Errors from building packages or writing repositories.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A filesystem operation failed on `path`.
    #[error("cannot {action} {}", path.display())]
    Io {
        /// What was being done, e.g. "write" or "read".
        action: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
    /// A [`SynthPackage`] cannot be turned into a valid pacman package.
    #[error("invalid synthetic package {name:?}: {reason}")]
    InvalidPackage {
        /// The package name as given.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A file given to [`write_repo`] is not a readable package (a `.pkg.tar.zst`, `.pkg.tar.gz`
    /// or plain `.pkg.tar`) with a usable `.PKGINFO`, or its `.sig` is not a usable signature.
    #[error("{} is not a usable package file: {reason}", path.display())]
    BadPackageFile {
        /// The package file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// [`write_repo`] was given two packages with the same name; a repository database holds
    /// exactly one version of each package name.
    #[error(
        "repository {repo:?} was given package {name:?} twice ({first} and {second}); \
         a repository database holds only one version per package name"
    )]
    DuplicatePackage {
        /// The repository being written.
        repo: String,
        /// The package name given twice.
        name: String,
        /// The version seen first.
        first: String,
        /// The version seen second.
        second: String,
    },
}

fn io_err(action: &'static str, path: &Path) -> impl FnOnce(io::Error) -> SynthError + use<> {
    let path = path.to_path_buf();
    move |source| SynthError::Io {
        action,
        path,
        source,
    }
}

/// A synthetic package: the metadata and payload of one pacman package.
///
/// Build one with [`SynthPackage::new`] and the chainable helpers, then write it with
/// [`build_package`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SynthPackage {
    /// Package name (`pkgname`), e.g. `htop`.
    pub name: String,
    /// Full version `[epoch:]pkgver-pkgrel`, e.g. `1.2-1` or `1:2.0-1`.
    pub version: String,
    /// Architecture, `any` by default.
    pub arch: String,
    /// One-line description (`pkgdesc`).
    pub description: String,
    /// Dependencies, e.g. `libfoo>=1.0`.
    pub depends: Vec<String>,
    /// Virtual packages or sonames this package provides, e.g. `foo-abi=1`.
    pub provides: Vec<String>,
    /// Packages this one conflicts with.
    pub conflicts: Vec<String>,
    /// Payload: relative paths (e.g. `usr/share/foo/README`) and their contents. Parent
    /// directories are created implicitly. Files under `usr/bin/` and `usr/sbin/` get mode 0755,
    /// all others 0644.
    pub files: Vec<(String, Vec<u8>)>,
    /// Relative paths of config files pacman must preserve (`backup=`), e.g. `etc/foo.conf`;
    /// each must also be in [`files`](Self::files).
    pub backup: Vec<String>,
    /// Packages this one replaces (`replaces=`: a rename; `pacman -Syu` swaps them).
    pub replaces: Vec<String>,
    /// Package groups (`groups=`), e.g. `base-devel`.
    pub groups: Vec<String>,
    /// The install scriptlet (`.INSTALL`): shell functions such as `post_install() { …; }`.
    pub install: Option<String>,
}

impl SynthPackage {
    /// A package for architecture `any` holding the single file `usr/share/<name>/VERSION`,
    /// whose content is `version` plus a newline.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        let name = name.into();
        let version = version.into();
        Self {
            description: format!("Synthetic package {name}"),
            files: vec![(
                format!("usr/share/{name}/VERSION"),
                format!("{version}\n").into_bytes(),
            )],
            name,
            version,
            arch: "any".to_owned(),
            depends: Vec::new(),
            provides: Vec::new(),
            conflicts: Vec::new(),
            backup: Vec::new(),
            replaces: Vec::new(),
            groups: Vec::new(),
            install: None,
        }
    }

    /// Adds a package this one replaces (`replaces=`).
    pub fn replaces(mut self, old: impl Into<String>) -> Self {
        self.replaces.push(old.into());
        self
    }

    /// Adds the package to a group (`groups=`).
    pub fn group(mut self, group: impl Into<String>) -> Self {
        self.groups.push(group.into());
        self
    }

    /// Sets the install scriptlet (`.INSTALL`), e.g. `post_install() { echo hi; }`.
    pub fn install_script(mut self, script: impl Into<String>) -> Self {
        self.install = Some(script.into());
        self
    }

    /// Sets the architecture (e.g. `x86_64`).
    pub fn arch(mut self, arch: impl Into<String>) -> Self {
        self.arch = arch.into();
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Adds a dependency, e.g. `libfoo` or `libfoo>=1.0`.
    pub fn depends(mut self, dep: impl Into<String>) -> Self {
        self.depends.push(dep.into());
        self
    }

    /// Adds a provision, e.g. `foo-abi=1`.
    pub fn provides(mut self, provision: impl Into<String>) -> Self {
        self.provides.push(provision.into());
        self
    }

    /// Adds a conflict.
    pub fn conflicts(mut self, conflict: impl Into<String>) -> Self {
        self.conflicts.push(conflict.into());
        self
    }

    /// Adds a file, replacing any earlier file at the same path.
    pub fn file(mut self, path: impl Into<String>, contents: impl Into<Vec<u8>>) -> Self {
        let path = path.into();
        let contents = contents.into();
        match self.files.iter_mut().find(|(p, _)| *p == path) {
            Some(entry) => entry.1 = contents,
            None => self.files.push((path, contents)),
        }
        self
    }

    /// Marks an existing file as a config file (`backup=`).
    pub fn backup(mut self, path: impl Into<String>) -> Self {
        self.backup.push(path.into());
        self
    }

    /// The package file name, `<name>-<version>-<arch>.pkg.tar.zst`.
    pub fn file_name(&self) -> String {
        format!("{}-{}-{}.pkg.tar.zst", self.name, self.version, self.arch)
    }

    /// Installed size in bytes: the sum of the file sizes.
    pub fn installed_size(&self) -> u64 {
        self.files.iter().map(|(_, data)| data.len() as u64).sum()
    }
}

/// Writes `pkg` as `out_dir/<name>-<version>-<arch>.pkg.tar.zst` (creating `out_dir` if needed)
/// and returns the path of the package file.
///
/// The archive holds `.PKGINFO` (as makepkg writes it), a gzip'ed `.MTREE` (makepkg gzips it
/// whatever the package's compression), then every directory (0755) and file (0644, or 0755
/// under `usr/bin`/`usr/sbin`) in sorted order, owned by root with mtime [`BUILD_DATE`]. The tar
/// stream is compressed with zstd at makepkg's level (3, with a checksum, as `zstd -c -T0 -`).
/// The same input always gives the same bytes.
///
/// A signature `<package file>.sig` left by an earlier build at that path is removed: it does
/// not sign the new file (sign it again if it should be signed).
pub fn build_package(pkg: &SynthPackage, out_dir: &Path) -> Result<PathBuf, SynthError> {
    validate(pkg)?;
    let entries = payload_entries(pkg);
    let pkginfo = pkginfo_text(pkg);
    let mtree = gzip(mtree_text(&pkginfo, &entries).as_bytes()).map_err(|source| {
        SynthError::InvalidPackage {
            name: pkg.name.clone(),
            reason: format!("cannot compress .MTREE: {source}"),
        }
    })?;

    let archive_err = |source: io::Error| SynthError::InvalidPackage {
        name: pkg.name.clone(),
        reason: format!("cannot assemble archive: {source}"),
    };
    let mut zstd =
        zstd::stream::write::Encoder::new(Vec::new(), ZSTD_LEVEL).map_err(archive_err)?;
    zstd.include_checksum(true).map_err(archive_err)?;
    let mut tar = tar::Builder::new(zstd);
    append_file(&mut tar, ".PKGINFO", pkginfo.as_bytes(), 0o644).map_err(archive_err)?;
    if let Some(script) = &pkg.install {
        append_file(&mut tar, ".INSTALL", script.as_bytes(), 0o644).map_err(archive_err)?;
    }
    append_file(&mut tar, ".MTREE", &mtree, 0o644).map_err(archive_err)?;
    for entry in &entries {
        match entry {
            Entry::Dir(path) => append_dir(&mut tar, &format!("{path}/")),
            Entry::File { path, data, mode } => append_file(&mut tar, path, data, *mode),
        }
        .map_err(archive_err)?;
    }
    let bytes = tar
        .into_inner()
        .and_then(zstd::stream::write::Encoder::finish)
        .map_err(archive_err)?;

    fs::create_dir_all(out_dir).map_err(io_err("create directory", out_dir))?;
    let path = out_dir.join(pkg.file_name());
    write_atomically(&path, &bytes)?;
    remove_if_present(&signature_path(&path))?;
    Ok(path)
}

/// Writes a sync repository named `repo_name` into `repo_dir` from built package files and
/// returns the path of `repo_dir/<repo_name>.db`.
///
/// Writes `<repo_name>.db.tar.gz` and `<repo_name>.files.tar.gz` with the entries repo-add
/// creates (`<name>-<version>/desc`, and `files` in the files database), and copies of them
/// named `<repo_name>.db` and `<repo_name>.files`. Metadata is read back from each package's
/// `.PKGINFO`, as repo-add does, so any `.pkg.tar.zst` or `.pkg.tar.gz` works, not only
/// synthetic ones. Package files outside `repo_dir` are copied into it.
///
/// A package with a detached signature beside it (`<package file>.sig`, binary, as
/// `makepkg --sign` and `gpg --detach-sign` write it) gets `%PGPSIG%` (the signature in
/// base64) in its entry, and the `.sig` is copied into `repo_dir` too, as
/// `repo-add --include-sigs` does; an armored signature or one over 16 KiB is refused, as
/// there. A package without one gets no `%PGPSIG%`, and a stale `.sig` of that file name in
/// `repo_dir` is removed.
///
/// Existing databases are replaced, not merged;
/// the new files are dated at least one second after the old ones, because pacman compares
/// database dates at one-second resolution and would otherwise miss a quick rewrite.
///
/// Fails with [`SynthError::DuplicatePackage`] if two packages share a name.
pub fn write_repo<P: AsRef<Path>>(
    repo_dir: &Path,
    repo_name: &str,
    packages: &[P],
) -> Result<PathBuf, SynthError> {
    // Read and check everything before touching repo_dir.
    let mut read: BTreeMap<String, ReadPackage> = BTreeMap::new();
    for package in packages {
        let source = package.as_ref();
        let (info, listing) = read_package(source)?;
        let signature = read_signature(source)?;
        if let Some(ReadPackage { info: first, .. }) = read.get(&info.pkgname) {
            return Err(SynthError::DuplicatePackage {
                repo: repo_name.to_owned(),
                name: info.pkgname.clone(),
                first: first.pkgver.clone(),
                second: info.pkgver.clone(),
            });
        }
        let file_name = source
            .file_name()
            .and_then(|n| n.to_str())
            .ok_or_else(|| SynthError::BadPackageFile {
                path: source.to_path_buf(),
                reason: "file name is not valid UTF-8".to_owned(),
            })?
            .to_owned();
        read.insert(
            info.pkgname.clone(),
            ReadPackage {
                info,
                listing,
                source,
                file_name,
                signature,
            },
        );
    }

    fs::create_dir_all(repo_dir).map_err(io_err("create directory", repo_dir))?;
    let canonical_repo_dir = repo_dir
        .canonicalize()
        .map_err(io_err("resolve", repo_dir))?;
    // name -> (version, desc, files listing)
    let mut by_name: BTreeMap<String, (String, String, String)> = BTreeMap::new();
    for (name, package) in read {
        let ReadPackage {
            info,
            listing,
            source,
            file_name,
            signature,
        } = package;
        let dest = repo_dir.join(&file_name);
        let source_dir = source
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let already_there = source_dir
            .canonicalize()
            .map_err(io_err("resolve", source_dir))?
            == canonical_repo_dir;
        if !already_there {
            fs::copy(source, &dest).map_err(io_err("copy package to", &dest))?;
            let dest_sig = signature_path(&dest);
            match &signature {
                Some(sig) => write_atomically(&dest_sig, sig)?,
                None => remove_if_present(&dest_sig)?,
            }
        }
        let csize = fs::metadata(&dest).map_err(io_err("stat", &dest))?.len();
        let sha256 = sha256_file(&dest)?;
        let pgpsig = signature.as_deref().map(base64).unwrap_or_default();
        let desc = desc_text(&info, &file_name, csize, &sha256, &pgpsig);
        let mut files = String::from("%FILES%\n");
        for path in &listing {
            files.push_str(path);
            files.push('\n');
        }
        by_name.insert(name, (info.pkgver, desc, files));
    }

    let mut db = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    let mut files_db = tar::Builder::new(GzEncoder::new(Vec::new(), Compression::default()));
    // Entries sorted by directory name, as the shell glob in repo-add orders them.
    let mut entries: Vec<(String, &String, &String)> = by_name
        .iter()
        .map(|(name, (version, desc, files))| (format!("{name}-{version}"), desc, files))
        .collect();
    entries.sort();
    let db_err = |source: io::Error| SynthError::Io {
        action: "assemble database for",
        path: repo_dir.join(format!("{repo_name}.db.tar.gz")),
        source,
    };
    for (dir, desc, files) in &entries {
        for builder in [&mut db, &mut files_db] {
            append_dir(builder, &format!("{dir}/")).map_err(db_err)?;
            append_file(builder, &format!("{dir}/desc"), desc.as_bytes(), 0o644).map_err(db_err)?;
        }
        append_file(
            &mut files_db,
            &format!("{dir}/files"),
            files.as_bytes(),
            0o644,
        )
        .map_err(db_err)?;
    }
    let db_bytes = db
        .into_inner()
        .and_then(GzEncoder::finish)
        .map_err(db_err)?;
    let files_bytes = files_db
        .into_inner()
        .and_then(GzEncoder::finish)
        .map_err(db_err)?;

    // pacman refreshes a sync db only if the server's copy is newer, at one-second
    // resolution (If-Modified-Since, also for file://): a rewrite within the same second as a
    // host's last sync would go unseen. So a rewritten database is always dated at least one
    // whole second after the one it replaces.
    let db_path = repo_dir.join(format!("{repo_name}.db"));
    let mtime = match fs::metadata(&db_path).and_then(|m| m.modified()) {
        Ok(previous) => {
            let next_second = previous
                .duration_since(UNIX_EPOCH)
                .map(|d| UNIX_EPOCH + Duration::from_secs(d.as_secs() + 1))
                .unwrap_or(previous);
            SystemTime::now().max(next_second)
        }
        Err(_) => SystemTime::now(),
    };
    for (kind, bytes) in [("db", &db_bytes), ("files", &files_bytes)] {
        for suffix in [".tar.gz", ""] {
            let path = repo_dir.join(format!("{repo_name}.{kind}{suffix}"));
            write_atomically(&path, bytes)?;
            File::options()
                .write(true)
                .open(&path)
                .and_then(|f| f.set_modified(mtime))
                .map_err(io_err("set the modification time of", &path))?;
        }
    }
    Ok(db_path)
}

/// The detached signature of a package file: `<package file>.sig`, beside it.
pub fn signature_path(package: &Path) -> PathBuf {
    let mut name = package.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// A package read by [`write_repo`], before anything is written.
struct ReadPackage<'a> {
    info: PkgInfo,
    listing: BTreeSet<String>,
    source: &'a Path,
    file_name: String,
    /// The bytes of `<source>.sig`, if there is one.
    signature: Option<Vec<u8>>,
}

/// The detached signature beside `package`, if any, checked as repo-add checks it.
fn read_signature(package: &Path) -> Result<Option<Vec<u8>>, SynthError> {
    let path = signature_path(package);
    let bad = |reason: String| SynthError::BadPackageFile {
        path: path.clone(),
        reason,
    };
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &path)(e)),
    };
    let mut bytes = Vec::new();
    file.take(MAX_SIGNATURE + 1)
        .read_to_end(&mut bytes)
        .map_err(io_err("read", &path))?;
    if bytes.len() as u64 > MAX_SIGNATURE {
        return Err(bad(format!(
            "a package signature is at most {MAX_SIGNATURE} bytes"
        )));
    }
    if bytes
        .windows(b"BEGIN PGP SIGNATURE".len())
        .any(|w| w == b"BEGIN PGP SIGNATURE")
    {
        return Err(bad(
            "an armored signature cannot go into a repository database; sign with              `gpg --detach-sign --no-armor`"
                .to_owned(),
        ));
    }
    Ok(Some(bytes))
}

fn remove_if_present(path: &Path) -> Result<(), SynthError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", path)(e)),
        _ => Ok(()),
    }
}

/// Standard base64 with padding, on one line (what `base64 | tr -d '\n'` prints).
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Where `file_name` lives in an Arch Linux Archive rooted at `archive_root`:
/// `<root>/packages/<first letter of pkgname>/<pkgname>/<file_name>`.
///
/// The package name is `file_name` without `-<pkgver>-<pkgrel>-<arch>.pkg.tar.<ext>`; a name
/// that does not have that shape is used whole (minus any `.pkg.tar.<ext>` suffix).
pub fn archive_path(archive_root: &Path, file_name: &str) -> PathBuf {
    let name = package_name_of_file(file_name);
    let first: String = name.chars().take(1).collect();
    archive_root
        .join("packages")
        .join(first)
        .join(name)
        .join(file_name)
}

/// The pkgname part of a package file name; see [`archive_path`].
fn package_name_of_file(file_name: &str) -> &str {
    let stem = match file_name.rfind(".pkg.tar") {
        Some(i) => &file_name[..i],
        None => file_name,
    };
    // stem = <pkgname>-<pkgver>-<pkgrel>-<arch>; pkgname may itself contain hyphens.
    let mut rest = stem;
    for _ in 0..3 {
        match rest.rfind('-') {
            Some(i) if i > 0 => rest = &rest[..i],
            _ => return stem,
        }
    }
    rest
}

/// `n` bytes zstd cannot shrink (xorshift seeded by `seed`, the same bytes for the same seed),
/// so that a package's size is its payload's: for the peer-cache tests and benchmark.
pub fn incompressible(seed: &str, n: usize) -> Vec<u8> {
    let mut x: u64 = seed.bytes().fold(0x9e37_79b9_7f4a_7c15, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    }) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

/// The SHA-256 of the file at `path`, as lowercase hex.
pub fn sha256_file(path: &Path) -> Result<String, SynthError> {
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut reader = BufReader::new(file);
    let mut hasher = Sha256::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = reader.read(&mut buf).map_err(io_err("read", path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

// ---------------------------------------------------------------------------------------------
// Validation

fn validate(pkg: &SynthPackage) -> Result<(), SynthError> {
    let invalid = |reason: String| SynthError::InvalidPackage {
        name: pkg.name.clone(),
        reason,
    };
    // makepkg's lint_pkgname.
    let name_ok = !pkg.name.is_empty()
        && !pkg.name.starts_with(['-', '.'])
        && pkg
            .name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._+-".contains(&b));
    if !name_ok {
        return Err(invalid(
            "a name is ASCII letters, digits and @._+- and does not start with - or .".into(),
        ));
    }
    if !version_ok(&pkg.version) {
        return Err(invalid(format!(
            "version {:?} is not [epoch:]pkgver-pkgrel",
            pkg.version
        )));
    }
    if pkg.arch.is_empty()
        || !pkg
            .arch
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(invalid(format!("architecture {:?} is not valid", pkg.arch)));
    }
    if pkg.description.contains(['\n', '\r']) {
        return Err(invalid("the description must be one line".into()));
    }
    for (what, list) in [
        ("dependency", &pkg.depends),
        ("provision", &pkg.provides),
        ("conflict", &pkg.conflicts),
    ] {
        if let Some(bad) = list
            .iter()
            .find(|d| d.is_empty() || d.contains(char::is_whitespace))
        {
            return Err(invalid(format!(
                "{what} {bad:?} is empty or has whitespace"
            )));
        }
    }
    let mut seen = BTreeSet::new();
    for (path, _) in &pkg.files {
        let components: Vec<&str> = path.split('/').collect();
        let bad = path.is_empty()
            || path.starts_with('.')
            || path.contains(['\n', '\r', '\0'])
            || components
                .iter()
                .any(|c| c.is_empty() || *c == "." || *c == "..");
        if bad {
            return Err(invalid(format!(
                "file path {path:?} must be relative, normalized and not start with '.'"
            )));
        }
        if !seen.insert(path.as_str()) {
            return Err(invalid(format!("file {path:?} is listed twice")));
        }
    }
    for (path, _) in &pkg.files {
        let as_dir = format!("{path}/");
        if pkg.files.iter().any(|(p, _)| p.starts_with(&as_dir)) {
            return Err(invalid(format!(
                "{path:?} is both a file and the directory of another file"
            )));
        }
    }
    for path in &pkg.backup {
        if !seen.contains(path.as_str()) {
            return Err(invalid(format!(
                "backup file {path:?} is not one of the package's files"
            )));
        }
    }
    Ok(())
}

fn version_ok(version: &str) -> bool {
    let rest = match version.split_once(':') {
        Some((epoch, rest)) => {
            if !all_digits(epoch) {
                return false;
            }
            rest
        }
        None => version,
    };
    let Some((pkgver, pkgrel)) = rest.rsplit_once('-') else {
        return false;
    };
    // makepkg's check_pkgver and check_pkgrel (`integer[.integer]`).
    let pkgver_ok = !pkgver.is_empty()
        && pkgver
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b"/:-".contains(&b));
    let pkgrel_ok = match pkgrel.split_once('.') {
        Some((major, minor)) => all_digits(major) && all_digits(minor),
        None => all_digits(pkgrel),
    };
    pkgver_ok && pkgrel_ok
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------------------------
// Package contents

enum Entry<'a> {
    Dir(String),
    File {
        path: &'a str,
        data: &'a [u8],
        mode: u32,
    },
}

impl Entry<'_> {
    fn path(&self) -> &str {
        match self {
            Entry::Dir(p) => p,
            Entry::File { path, .. } => path,
        }
    }
}

/// Directories and files of the payload, sorted by path (so parents precede children).
fn payload_entries(pkg: &SynthPackage) -> Vec<Entry<'_>> {
    let mut dirs = BTreeSet::new();
    for (path, _) in &pkg.files {
        let mut end = 0;
        while let Some(i) = path[end..].find('/') {
            end += i;
            dirs.insert(path[..end].to_owned());
            end += 1;
        }
    }
    let mut entries: Vec<Entry<'_>> = dirs.into_iter().map(Entry::Dir).collect();
    for (path, data) in &pkg.files {
        let mode = if path.starts_with("usr/bin/") || path.starts_with("usr/sbin/") {
            0o755
        } else {
            0o644
        };
        entries.push(Entry::File { path, data, mode });
    }
    entries.sort_by(|a, b| a.path().cmp(b.path()));
    entries
}

/// `.PKGINFO` as makepkg's `write_pkginfo` writes it.
fn pkginfo_text(pkg: &SynthPackage) -> String {
    let mut out = String::from("# Generated by pacfleet synth\n");
    let mut kv = |key: &str, value: &str| {
        out.push_str(key);
        out.push_str(" = ");
        out.push_str(value);
        out.push('\n');
    };
    kv("pkgname", &pkg.name);
    kv("pkgbase", &pkg.name);
    kv("xdata", "pkgtype=pkg");
    kv("pkgver", &pkg.version);
    kv("pkgdesc", pkg.description.trim());
    kv(
        "url",
        &format!("https://pacfleet.invalid/synth/{}", pkg.name),
    );
    kv("builddate", &BUILD_DATE.to_string());
    kv("packager", PACKAGER);
    kv("size", &pkg.installed_size().to_string());
    kv("arch", &pkg.arch);
    kv("license", LICENSE);
    for g in &pkg.groups {
        kv("group", g);
    }
    for r in &pkg.replaces {
        kv("replaces", r);
    }
    for c in &pkg.conflicts {
        kv("conflict", c);
    }
    for p in &pkg.provides {
        kv("provides", p);
    }
    for b in &pkg.backup {
        kv("backup", b);
    }
    for d in &pkg.depends {
        kv("depend", d);
    }
    out
}

/// The `.MTREE` text bsdtar would write for the package (before gzip).
fn mtree_text(pkginfo: &str, entries: &[Entry<'_>]) -> String {
    let mut out = String::from("#mtree\n/set type=file uid=0 gid=0 mode=644\n");
    let _ = writeln!(
        out,
        "./.PKGINFO time={BUILD_DATE}.0 size={} sha256digest={}",
        pkginfo.len(),
        hex(&Sha256::digest(pkginfo.as_bytes()))
    );
    for entry in entries {
        match entry {
            Entry::Dir(path) => {
                let _ = writeln!(
                    out,
                    "./{} time={BUILD_DATE}.0 mode=755 type=dir",
                    mtree_escape(path)
                );
            }
            Entry::File { path, data, mode } => {
                let mode = if *mode == 0o644 {
                    String::new()
                } else {
                    format!(" mode={mode:o}")
                };
                let _ = writeln!(
                    out,
                    "./{} time={BUILD_DATE}.0{mode} size={} sha256digest={}",
                    mtree_escape(path),
                    data.len(),
                    hex(&Sha256::digest(data))
                );
            }
        }
    }
    out
}

/// mtree(5) path escaping: anything but printable ASCII other than `\`, `#` and `=` as `\ooo`.
fn mtree_escape(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        if b.is_ascii_graphic() && !b"\\#=".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "\\{b:03o}");
        }
    }
    out
}

fn gzip(data: &[u8]) -> io::Result<Vec<u8>> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(data)?;
    enc.finish()
}

fn base_header(entry_type: tar::EntryType, mode: u32, size: u64) -> io::Result<tar::Header> {
    let mut header = tar::Header::new_ustar();
    header.set_entry_type(entry_type);
    header.set_mode(mode);
    header.set_size(size);
    header.set_uid(0);
    header.set_gid(0);
    header.set_username("root")?;
    header.set_groupname("root")?;
    header.set_mtime(BUILD_DATE);
    Ok(header)
}

fn append_file<W: Write>(
    tar: &mut tar::Builder<W>,
    path: &str,
    data: &[u8],
    mode: u32,
) -> io::Result<()> {
    let mut header = base_header(tar::EntryType::Regular, mode, data.len() as u64)?;
    tar.append_data(&mut header, path, data)
}

fn append_dir<W: Write>(tar: &mut tar::Builder<W>, path: &str) -> io::Result<()> {
    let mut header = base_header(tar::EntryType::Directory, 0o755, 0)?;
    tar.append_data(&mut header, path, io::empty())
}

/// Writes `bytes` to a temporary file next to `path` and renames it over `path`, so readers
/// never see a half-written file and an existing symlink at `path` is replaced, not followed.
fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), SynthError> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(io_err("create a file in", dir))?;
    tmp.write_all(bytes).map_err(io_err("write", tmp.path()))?;
    tmp.as_file()
        .set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644))
        .map_err(io_err("set permissions of", path))?;
    tmp.persist(path)
        .map_err(|e| io_err("write", path)(e.error))?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reading packages back (for write_repo)

/// The `.PKGINFO` fields repo-add copies into a `desc` file.
#[derive(Debug, Default)]
struct PkgInfo {
    pkgname: String,
    pkgbase: String,
    pkgver: String,
    pkgdesc: String,
    url: String,
    builddate: String,
    packager: String,
    size: String,
    arch: String,
    groups: Vec<String>,
    licenses: Vec<String>,
    replaces: Vec<String>,
    depends: Vec<String>,
    conflicts: Vec<String>,
    provides: Vec<String>,
    optdepends: Vec<String>,
    makedepends: Vec<String>,
    checkdepends: Vec<String>,
}

/// Reads `.PKGINFO` and the sorted payload listing (what `bsdtar --exclude='^.*' -tf` prints)
/// from a package compressed with zstd or gzip, or not at all (told apart by their magic
/// bytes, as libarchive does, whatever the file is called).
fn read_package(path: &Path) -> Result<(PkgInfo, BTreeSet<String>), SynthError> {
    let bad = |reason: String| SynthError::BadPackageFile {
        path: path.to_path_buf(),
        reason,
    };
    let file = File::open(path).map_err(io_err("open", path))?;
    let mut reader = BufReader::new(file);
    let magic = {
        let buf = io::BufRead::fill_buf(&mut reader).map_err(io_err("read", path))?;
        buf[..buf.len().min(6)].to_vec()
    };
    let stream: Box<dyn Read> = if magic.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(
            zstd::stream::read::Decoder::with_buffer(reader)
                .map_err(|e| bad(format!("cannot start zstd: {e}")))?,
        )
    } else if magic.starts_with(&[0x1f, 0x8b]) {
        Box::new(GzDecoder::new(reader))
    } else if magic.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0]) {
        return Err(bad(
            "xz-compressed packages are not supported here (only zstd, gzip or none)".to_owned(),
        ));
    } else {
        Box::new(reader)
    };
    let mut archive = tar::Archive::new(stream);
    let mut pkginfo = None;
    let mut listing = BTreeSet::new();
    let entries = archive
        .entries()
        .map_err(|e| bad(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(format!("corrupt archive: {e}")))?;
        let name = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        if name == ".PKGINFO" {
            let mut text = String::new();
            entry
                .read_to_string(&mut text)
                .map_err(|e| bad(format!("cannot read .PKGINFO: {e}")))?;
            pkginfo = Some(text);
        } else if !name.starts_with('.') {
            listing.insert(name);
        }
    }
    let text = pkginfo.ok_or_else(|| bad("no .PKGINFO".to_owned()))?;
    let info = parse_pkginfo(&text);
    if info.pkgname.is_empty() || info.pkgver.is_empty() {
        return Err(bad(".PKGINFO lacks pkgname or pkgver".to_owned()));
    }
    Ok((info, listing))
}

fn parse_pkginfo(text: &str) -> PkgInfo {
    let mut info = PkgInfo::default();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let key = key.trim();
        // repo-add collapses runs of whitespace in values.
        let value = value
            .trim_start_matches([' ', '='])
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        match key {
            "pkgname" => info.pkgname = value,
            "pkgbase" => info.pkgbase = value,
            "pkgver" => info.pkgver = value,
            "pkgdesc" => info.pkgdesc = value,
            "url" => info.url = value,
            "builddate" => info.builddate = value,
            "packager" => info.packager = value,
            "size" => info.size = value,
            "arch" => info.arch = value,
            "group" => info.groups.push(value),
            "license" => info.licenses.push(value),
            "replaces" => info.replaces.push(value),
            "depend" => info.depends.push(value),
            "conflict" => info.conflicts.push(value),
            "provides" => info.provides.push(value),
            "optdepend" => info.optdepends.push(value),
            "makedepend" => info.makedepends.push(value),
            "checkdepend" => info.checkdepends.push(value),
            _ => {}
        }
    }
    info
}

/// The `desc` entry, field for field in repo-add's order; empty fields are omitted.
fn desc_text(info: &PkgInfo, file_name: &str, csize: u64, sha256: &str, pgpsig: &str) -> String {
    let mut out = String::new();
    let mut field = |name: &str, values: &[&str]| {
        if values.first().is_some_and(|v| !v.is_empty()) {
            let _ = writeln!(out, "%{name}%");
            for v in values {
                out.push_str(v);
                out.push('\n');
            }
            out.push('\n');
        }
    };
    fn all(v: &[String]) -> Vec<&str> {
        v.iter().map(String::as_str).collect()
    }
    let csize = csize.to_string();
    field("FILENAME", &[file_name]);
    field("NAME", &[&info.pkgname]);
    field("BASE", &[&info.pkgbase]);
    field("VERSION", &[&info.pkgver]);
    field("DESC", &[&info.pkgdesc]);
    field("GROUPS", &all(&info.groups));
    field("CSIZE", &[&csize]);
    field("ISIZE", &[&info.size]);
    field("SHA256SUM", &[sha256]);
    field("PGPSIG", &[pgpsig]);
    field("URL", &[&info.url]);
    field("LICENSE", &all(&info.licenses));
    field("ARCH", &[&info.arch]);
    field("BUILDDATE", &[&info.builddate]);
    field("PACKAGER", &[&info.packager]);
    field("REPLACES", &all(&info.replaces));
    field("CONFLICTS", &all(&info.conflicts));
    field("PROVIDES", &all(&info.provides));
    field("DEPENDS", &all(&info.depends));
    field("OPTDEPENDS", &all(&info.optdepends));
    field("MAKEDEPENDS", &all(&info.makedepends));
    field("CHECKDEPENDS", &all(&info.checkdepends));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn archive_path_strips_version_release_and_arch() {
        let root = Path::new("/ala");
        assert_eq!(
            archive_path(root, "foo-1.2-1-any.pkg.tar.gz"),
            Path::new("/ala/packages/f/foo/foo-1.2-1-any.pkg.tar.gz")
        );
        assert_eq!(
            archive_path(root, "lib32-glibc-2:2.40+r16-1.1-x86_64.pkg.tar.zst"),
            Path::new("/ala/packages/l/lib32-glibc/lib32-glibc-2:2.40+r16-1.1-x86_64.pkg.tar.zst")
        );
        assert_eq!(
            archive_path(root, "odd.pkg.tar.gz"),
            Path::new("/ala/packages/o/odd/odd.pkg.tar.gz")
        );
    }

    #[test]
    fn versions_are_checked() {
        for ok in ["1-1", "1.2.3-4", "1:2.0-1", "2.0rc1-1.1", "1.0+git~x-2"] {
            assert!(version_ok(ok), "{ok}");
        }
        for bad in [
            "1", "-1", "1-", "a:1-1", ":1-1", "1 -1", "1-1.", "1-a", "1/2-1", "1-1.2.3", "1:2:3-1",
            "1-1.a",
        ] {
            assert!(!version_ok(bad), "{bad}");
        }
    }

    #[test]
    fn pkginfo_lists_metadata_in_makepkg_order() {
        let pkg = SynthPackage::new("app", "1:2.0-3")
            .depends("libfoo>=1.0")
            .provides("app-api=2")
            .conflicts("oldapp")
            .file("etc/app.conf", "x=1\n")
            .backup("etc/app.conf");
        let text = pkginfo_text(&pkg);
        let keys: Vec<&str> = text
            .lines()
            .skip(1)
            .filter_map(|l| l.split(" = ").next())
            .collect();
        assert_eq!(
            keys,
            [
                "pkgname",
                "pkgbase",
                "xdata",
                "pkgver",
                "pkgdesc",
                "url",
                "builddate",
                "packager",
                "size",
                "arch",
                "license",
                "conflict",
                "provides",
                "backup",
                "depend"
            ]
        );
        assert!(text.contains("size = 12\n"), "{text}");
        let info = parse_pkginfo(&text);
        assert_eq!(info.pkgver, "1:2.0-3");
        assert_eq!(info.depends, ["libfoo>=1.0"]);
    }

    #[test]
    fn invalid_packages_are_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let cases = [
            SynthPackage::new("-bad", "1-1"),
            SynthPackage::new("bad/name", "1-1"),
            SynthPackage::new("ok", "1"),
            SynthPackage::new("ok", "1-1").file("/abs", ""),
            SynthPackage::new("ok", "1-1").file("a/../b", ""),
            SynthPackage::new("ok", "1-1").file("a", "").file("a/b", ""),
            SynthPackage::new("ok", "1-1").backup("etc/missing.conf"),
            SynthPackage::new("ok", "1-1").depends("two words"),
        ];
        for pkg in cases {
            let err = build_package(&pkg, dir.path()).unwrap_err();
            assert!(matches!(err, SynthError::InvalidPackage { .. }), "{err}");
        }
    }

    #[test]
    fn base64_is_the_standard_alphabet_with_padding() {
        for (raw, encoded) in [
            (&b""[..], ""),
            (b"f", "Zg=="),
            (b"fo", "Zm8="),
            (b"foo", "Zm9v"),
            (b"foob", "Zm9vYg=="),
            (b"\xfb\xff\xfe", "+//+"),
        ] {
            assert_eq!(base64(raw), encoded);
        }
    }

    #[test]
    fn signatures_beside_packages_are_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("a-1-1-any.pkg.tar.zst");
        assert_eq!(
            signature_path(&pkg),
            dir.path().join("a-1-1-any.pkg.tar.zst.sig")
        );
        assert_eq!(read_signature(&pkg).unwrap(), None);
        fs::write(signature_path(&pkg), [0x88, 0x75]).unwrap();
        assert_eq!(read_signature(&pkg).unwrap(), Some(vec![0x88, 0x75]));
        fs::write(signature_path(&pkg), vec![0; 16 * 1024 + 1]).unwrap();
        assert!(read_signature(&pkg).is_err());
    }

    #[test]
    fn mtree_escapes_odd_bytes() {
        assert_eq!(
            mtree_escape("a b#c=d\\é"),
            "a\\040b\\043c\\075d\\134\\303\\251"
        );
    }
}
