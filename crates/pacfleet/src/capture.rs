//! Capturing generations: turning what one host has installed into the next `Generation` of
//! its pool (`fleetctl set-latest`), and the text edits and summaries that `set-latest` and
//! `fleetctl rollback` commit.
//!
//! The pure part works on plain data: [`build_generation`] makes the lock from the installed
//! packages (every one, explicit and dependency) and the sha256 sums found for them;
//! [`render_generation`] writes it as YAML in a stable, readable order (one package per line,
//! sorted by name, behind a header comment); [`compare`] and [`Summary`] say what changed
//! against the previous generation (added, removed, upgraded, downgraded, ordered with
//! `alpm::vercmp`) for commit messages and the rollback report; [`set_pool_generation`]
//! points a pool file at a generation by editing its `generation:` line in place, so the
//! operator's comments and layout survive.
//!
//! The I/O part, [`read_host`], reads the host's local package database through libalpm and
//! finds each package file's sha256: from the sync databases when they hold that exact version
//! (`%SHA256SUM%`), else by hashing the package file in a cache dir
//! (`<cachedir>/<name>-<version>-<arch>.pkg.tar.*`). Packages found in neither are pinned by
//! version only.

use std::cmp::Ordering;
use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use crate::manifest::{Generation, GenerationKind, Name, Pin};
use crate::plan::{Installed, Reason};
use crate::system::{System, SystemError};

/// Building or editing a capture failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CaptureError {
    /// An installed package's name is not a valid fleet name.
    #[error(
        "installed package `{name}` cannot be pinned: {detail}; remove or rename it on the host before capturing"
    )]
    BadName {
        /// The package name.
        name: String,
        /// Why it is invalid.
        detail: String,
    },
    /// The pool name is invalid.
    #[error("invalid pool name: {0}")]
    BadPool(#[source] crate::manifest::NameError),
    /// The pool file could not be edited safely in place.
    #[error(
        "cannot set `generation: {number}` in {file} by editing it in place ({detail}); edit the file by hand"
    )]
    PoolEdit {
        /// The pool file.
        file: String,
        /// The generation wanted.
        number: u32,
        /// What stood in the way.
        detail: String,
    },
}

/// Where a captured package's sha256 came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShaSource {
    /// The sync database's `%SHA256SUM%` for that exact version.
    SyncDb,
    /// Hashing the package file in a cache dir.
    Cache,
}

/// What [`read_host`] found on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostPackages {
    /// Every installed package.
    pub installed: BTreeMap<String, Installed>,
    /// sha256 of the package file of each installed version, where it could be found.
    pub sha256: BTreeMap<String, (String, ShaSource)>,
}

impl HostPackages {
    /// Just the sums, for [`build_generation`].
    pub fn sums(&self) -> BTreeMap<String, String> {
        self.sha256
            .iter()
            .map(|(n, (s, _))| (n.clone(), s.clone()))
            .collect()
    }

    /// How many sums came from `source`.
    pub fn count(&self, source: ShaSource) -> usize {
        self.sha256.values().filter(|(_, s)| *s == source).count()
    }
}

/// Who captured a generation, from where and when.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provenance {
    /// The pool.
    pub pool: String,
    /// The new generation's number.
    pub number: u32,
    /// The host it was captured from.
    pub host: String,
    /// When (RFC 3339, UTC, seconds).
    pub at: String,
}

/// The lock of a new generation: every installed package at its installed version, with the
/// sha256 from `sums` when known. When a sum is unknown but `previous` pins the same version
/// with a sum, that sum is kept (the file is the same release). No `snapshot`: a captured host
/// is not an archive date.
pub fn build_generation(
    prov: &Provenance,
    installed: &BTreeMap<String, Installed>,
    sums: &BTreeMap<String, String>,
    previous: Option<&Generation>,
) -> Result<Generation, CaptureError> {
    let pool = Name::new(&prov.pool).map_err(CaptureError::BadPool)?;
    let host = Name::new(&prov.host).map_err(|e| CaptureError::BadName {
        name: prov.host.clone(),
        detail: format!("the hostname is not a valid fleet name: {e}"),
    })?;
    let mut packages = BTreeMap::new();
    for (name, inst) in installed {
        let key = Name::new(name).map_err(|e| CaptureError::BadName {
            name: name.clone(),
            detail: e.to_string(),
        })?;
        let sha256 = sums.get(name).cloned().or_else(|| {
            previous
                .and_then(|g| g.packages.get(name.as_str()))
                .filter(|p| p.version == inst.version)
                .and_then(|p| p.sha256.clone())
        });
        packages.insert(
            key,
            Pin {
                version: inst.version.clone(),
                sha256,
            },
        );
    }
    Ok(Generation {
        kind: GenerationKind::Generation,
        pool,
        number: prov.number,
        snapshot: None,
        captured_from: Some(host),
        captured_at: Some(prov.at.clone()),
        packages,
    })
}

/// A scalar as YAML: plain when it reads back as exactly this string inside a flow mapping,
/// else double-quoted (a JSON string is a valid YAML double-quoted scalar).
fn yaml_scalar(s: &str) -> String {
    let special = s.is_empty()
        || s.starts_with(|c: char| "-?:,[]{}#&*!|>'\"%@`~ ".contains(c))
        || s.ends_with(':')
        || s.contains(|c: char| ",[]{}#\"'".contains(c) || c.is_whitespace() || c.is_control());
    let reads_back = || {
        let doc = format!("{{k: {s}}}");
        match serde_yaml::from_str::<serde_yaml::Value>(&doc) {
            Ok(serde_yaml::Value::Mapping(m)) => {
                m.get("k") == Some(&serde_yaml::Value::String(s.to_owned()))
            }
            _ => false,
        }
    };
    if !special && reads_back() {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
    }
}

/// The generation as YAML: `header` lines as `# ` comments, then the fields in the order of
/// docs/contract.md §1.5, then one `name: {version: …, sha256: …}` line per package, sorted by
/// name.
pub fn render_generation(g: &Generation, header: &[String]) -> String {
    let mut out = String::new();
    for line in header {
        if line.is_empty() {
            out.push_str("#\n");
        } else {
            out.push_str("# ");
            out.push_str(line);
            out.push('\n');
        }
    }
    out.push_str("kind: Generation\n");
    out.push_str(&format!("pool: {}\n", yaml_scalar(g.pool.as_str())));
    out.push_str(&format!("number: {}\n", g.number));
    if let Some(s) = &g.snapshot {
        out.push_str(&format!("snapshot: {}\n", yaml_scalar(s)));
    }
    if let Some(h) = &g.captured_from {
        out.push_str(&format!("captured_from: {}\n", yaml_scalar(h.as_str())));
    }
    if let Some(t) = &g.captured_at {
        out.push_str(&format!("captured_at: {}\n", yaml_scalar(t)));
    }
    if g.packages.is_empty() {
        out.push_str("packages: {}\n");
        return out;
    }
    out.push_str("packages:\n");
    for (name, pin) in &g.packages {
        out.push_str(&format!(
            "  {}: {{version: {}",
            yaml_scalar(name.as_str()),
            yaml_scalar(&pin.version)
        ));
        if let Some(s) = &pin.sha256 {
            out.push_str(&format!(", sha256: {}", yaml_scalar(s)));
        }
        out.push_str("}\n");
    }
    out
}

/// How one package's pin changes between two generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum ChangeKind {
    /// Pinned now, not before.
    Added,
    /// Pinned before, not now.
    Removed,
    /// To a newer version (`alpm::vercmp`).
    Upgraded,
    /// To an older version.
    Downgraded,
}

impl ChangeKind {
    fn word(self) -> &'static str {
        match self {
            ChangeKind::Added => "added",
            ChangeKind::Removed => "removed",
            ChangeKind::Upgraded => "upgraded",
            ChangeKind::Downgraded => "downgraded",
        }
    }
}

/// One package whose pin changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinChange {
    /// What happens.
    pub kind: ChangeKind,
    /// Package name.
    pub name: String,
    /// Version before (not for `Added`).
    pub old: Option<String>,
    /// Version after (not for `Removed`).
    pub new: Option<String>,
}

impl fmt::Display for PinChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.old, &self.new) {
            (Some(o), Some(n)) => write!(f, "{} {o} → {n}", self.name),
            (None, Some(n)) => write!(f, "{} {n}", self.name),
            (Some(o), None) => write!(f, "{} {o}", self.name),
            (None, None) => write!(f, "{}", self.name),
        }
    }
}

/// Every pin that differs in version between `old` and `new`, by kind then name.
pub fn compare(old: &BTreeMap<Name, Pin>, new: &BTreeMap<Name, Pin>) -> Summary {
    let mut changes = Vec::new();
    for (name, pin) in new {
        match old.get(name) {
            None => changes.push(PinChange {
                kind: ChangeKind::Added,
                name: name.to_string(),
                old: None,
                new: Some(pin.version.clone()),
            }),
            Some(before) => {
                let kind = match alpm::vercmp(before.version.as_str(), pin.version.as_str()) {
                    Ordering::Less => ChangeKind::Upgraded,
                    Ordering::Greater => ChangeKind::Downgraded,
                    Ordering::Equal => continue,
                };
                changes.push(PinChange {
                    kind,
                    name: name.to_string(),
                    old: Some(before.version.clone()),
                    new: Some(pin.version.clone()),
                });
            }
        }
    }
    for (name, pin) in old {
        if !new.contains_key(name) {
            changes.push(PinChange {
                kind: ChangeKind::Removed,
                name: name.to_string(),
                old: Some(pin.version.clone()),
                new: None,
            });
        }
    }
    changes.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Summary { changes }
}

/// What changes between two locks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Every change, by kind (upgraded, downgraded, added, removed) then name.
    pub changes: Vec<PinChange>,
}

impl Summary {
    /// How many changes of `kind`.
    pub fn count(&self, kind: ChangeKind) -> usize {
        self.changes.iter().filter(|c| c.kind == kind).count()
    }

    /// Whether no pin changes.
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// `2 upgraded, 1 added` (kinds with none left out); `no package changes` when empty.
    pub fn counts(&self) -> String {
        let parts: Vec<String> = ORDER
            .iter()
            .map(|k| (k, self.count(*k)))
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| format!("{n} {}", k.word()))
            .collect();
        if parts.is_empty() {
            "no package changes".to_owned()
        } else {
            parts.join(", ")
        }
    }

    /// One line per kind with the first `limit` changes of that kind and how many more:
    /// `upgraded:   app 1.0-1 → 2.0-1, libfoo 1.0-1 → 2.0-1 (and 3 more)`.
    pub fn lines(&self, limit: usize) -> Vec<String> {
        let mut out = Vec::new();
        for kind in ORDER {
            let of: Vec<&PinChange> = self.changes.iter().filter(|c| c.kind == kind).collect();
            if of.is_empty() {
                continue;
            }
            let shown: Vec<String> = of.iter().take(limit).map(|c| c.to_string()).collect();
            let more = of.len().saturating_sub(limit);
            let label = format!("{}:", kind.word());
            out.push(format!(
                "{label:<12}{}{}",
                shown.join(", "),
                if more > 0 {
                    format!(" (and {more} more)")
                } else {
                    String::new()
                }
            ));
        }
        out
    }
}

/// Kinds in the order summaries show them.
const ORDER: [ChangeKind; 4] = [
    ChangeKind::Upgraded,
    ChangeKind::Downgraded,
    ChangeKind::Added,
    ChangeKind::Removed,
];

/// How many names per kind a commit message shows.
pub const MESSAGE_NAMES: usize = 5;

/// The commit message of a capture:
///
/// ```text
/// srv: generation 2 captured from srv-canary (2 upgraded, 1 added)
///
/// Captured with `fleetctl set-latest --pool srv` on srv-canary at 2026-11-20T09:00:00Z:
/// 5 packages (2 explicit, 3 dependencies), sha256 known for 4.
/// Against generation 1: 2 upgraded, 1 added.
///
///   upgraded:   app 1.0-1 → 2.0-1, libfoo 1.0-1 → 2.0-1
///   added:      libnew 1.0-1
/// ```
///
/// `subject` replaces the first line (`--message`). With no previous generation (the pool
/// floated), the body says so instead of a comparison.
pub fn commit_message(
    g: &Generation,
    installed: &BTreeMap<String, Installed>,
    previous: Option<&Generation>,
    subject: Option<&str>,
) -> String {
    let host = g.captured_from.as_ref().map_or("?", |h| h.as_str());
    let summary = previous.map(|p| compare(&p.packages, &g.packages));
    let default_subject = match (&summary, previous) {
        (Some(s), Some(p)) if s.is_empty() => format!(
            "{}: generation {} captured from {host} (same versions as generation {})",
            g.pool, g.number, p.number
        ),
        (Some(s), _) => format!(
            "{}: generation {} captured from {host} ({})",
            g.pool,
            g.number,
            s.counts()
        ),
        (None, _) => format!(
            "{}: generation {} captured from {host} (first pin, {} packages)",
            g.pool,
            g.number,
            g.packages.len()
        ),
    };
    let mut msg = subject
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map_or(default_subject, str::to_owned);
    msg.push_str("\n\n");
    msg.push_str(&describe(g, installed));
    msg.push('\n');
    match (&summary, previous) {
        (Some(s), Some(p)) => {
            msg.push_str(&format!("Against generation {}: {}.\n", p.number, s.counts()));
            if !s.is_empty() {
                msg.push('\n');
                for line in s.lines(MESSAGE_NAMES) {
                    msg.push_str(&format!("  {line}\n"));
                }
            }
        }
        _ => msg.push_str(
            "The pool floated until now; from this commit its hosts are pinned to these versions.\n",
        ),
    }
    msg
}

/// `Captured with … at …: N packages (E explicit, D dependencies), sha256 known for K.`
fn describe(g: &Generation, installed: &BTreeMap<String, Installed>) -> String {
    let host = g.captured_from.as_ref().map_or("?", |h| h.as_str());
    let explicit = installed
        .values()
        .filter(|i| i.reason == Reason::Explicit)
        .count();
    let with_sum = g.packages.values().filter(|p| p.sha256.is_some()).count();
    format!(
        "Captured with `fleetctl set-latest --pool {}` on {host} at {}:\n{} packages ({explicit} explicit, {} dependencies), sha256 known for {with_sum}.",
        g.pool,
        g.captured_at.as_deref().unwrap_or("?"),
        g.packages.len(),
        installed.len() - explicit,
    )
}

/// The header comment of a captured generation file.
pub fn header(
    g: &Generation,
    installed: &BTreeMap<String, Installed>,
    previous: Option<&Generation>,
) -> Vec<String> {
    let mut lines: Vec<String> = describe(g, installed).lines().map(str::to_owned).collect();
    match previous {
        Some(p) => {
            let s = compare(&p.packages, &g.packages);
            lines.push(format!("Against generation {}: {}.", p.number, s.counts()));
            for l in s.lines(MESSAGE_NAMES) {
                lines.push(format!("  {l}"));
            }
        }
        None => lines.push("The pool floated before this generation.".to_owned()),
    }
    lines.push(format!(
        "Point the pool elsewhere with `fleetctl rollback --pool {}` (or edit `generation:`).",
        g.pool
    ));
    lines
}

/// The `generation:` of a pool file's text, read leniently (any other field may be wrong):
/// `Ok(None)` when the pool floats, an error when the text is not a YAML mapping or the value
/// is not a number.
pub fn pool_generation(text: &str) -> Result<Option<u32>, String> {
    let v: serde_yaml::Value = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    let serde_yaml::Value::Mapping(m) = v else {
        return Err("the file is not a YAML mapping".into());
    };
    match m.get("generation") {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| format!("`generation: {n}` is not a generation number")),
        Some(other) => Err(format!("`generation:` is {other:?}, not a number")),
    }
}

/// Top-level keys that come after `generation:` in the order of docs/contract.md §1.3: a missing
/// `generation:` line goes before the first of them (and before its comment lines).
const AFTER_GENERATION: [&str; 3] = ["prune", "window", "paused"];

/// Points the pool file `text` (named `file` in errors) at generation `number` by editing its
/// top-level `generation:` line in place — the value only, keeping its spacing and trailing comment
/// — or, without one, inserting `generation: N` where docs/contract.md §1.3 puts it (before
/// `prune:`, `window:` or `paused:` and their leading comments, else at the end). Every other byte
/// is kept. The result is checked: it must parse to the same mapping with only `generation`
/// changed, else the edit is refused (edit such files by hand).
pub fn set_pool_generation(file: &str, text: &str, number: u32) -> Result<String, CaptureError> {
    let fail = |detail: String| CaptureError::PoolEdit {
        file: file.to_owned(),
        number,
        detail,
    };
    let before: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| fail(format!("it does not parse: {e}")))?;
    let mut lines: Vec<String> = text.split_inclusive('\n').map(str::to_owned).collect();
    let is_key = |line: &str, key: &str| {
        line.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with(':'))
    };
    if let Some(i) = lines.iter().position(|l| is_key(l, "generation")) {
        let line = &lines[i];
        let rest = &line["generation:".len()..];
        let (body, eol) = match rest.strip_suffix("\r\n") {
            Some(b) => (b, "\r\n"),
            None => match rest.strip_suffix('\n') {
                Some(b) => (b, "\n"),
                None => (rest, ""),
            },
        };
        let space_len = body.len() - body.trim_start().len();
        let (space, value_and_more) = body.split_at(space_len);
        let value_len = value_and_more
            .find(|c: char| c.is_whitespace() || c == '#')
            .unwrap_or(value_and_more.len());
        let tail = &value_and_more[value_len..];
        let space = if space.is_empty() { " " } else { space };
        lines[i] = format!("generation:{space}{number}{tail}{eol}");
    } else {
        let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
        let new_line = format!("generation: {number}{eol}");
        let anchor = lines
            .iter()
            .position(|l| AFTER_GENERATION.iter().any(|k| is_key(l, k)));
        match anchor {
            Some(mut at) => {
                while at > 0 && lines[at - 1].starts_with('#') {
                    at -= 1;
                }
                lines.insert(at, new_line);
            }
            None => {
                if let Some(last) = lines.last_mut()
                    && !last.ends_with('\n')
                {
                    last.push_str(eol);
                }
                lines.push(new_line);
            }
        }
    }
    let edited = lines.concat();
    let after: serde_yaml::Value = serde_yaml::from_str(&edited)
        .map_err(|e| fail(format!("the edited file would not parse: {e}")))?;
    let strip = |v: &serde_yaml::Value| -> Option<serde_yaml::Mapping> {
        let serde_yaml::Value::Mapping(m) = v else {
            return None;
        };
        let mut m = m.clone();
        m.remove("generation");
        Some(m)
    };
    let same_rest = strip(&before).is_some() && strip(&before) == strip(&after);
    let set = pool_generation(&edited).ok().flatten() == Some(number);
    if !same_rest || !set {
        return Err(fail(
            "its `generation:` is not a plain top-level line this edit understands".to_owned(),
        ));
    }
    Ok(edited)
}

/// Reads every installed package of the host and the sha256 of its package file where it can
/// be found: the sync database's sum when a sync database holds exactly that version, else
/// the hash of `<name>-<version>-<arch>.pkg.tar.*` in a cache dir.
pub fn read_host(sys: &System) -> Result<HostPackages, SystemError> {
    let alpm = sys.alpm();
    let installed = sys.installed();
    let caches: Vec<PathBuf> = alpm.cachedirs().iter().map(PathBuf::from).collect();
    let mut sha256 = BTreeMap::new();
    for pkg in alpm.localdb().pkgs().iter() {
        let (name, version) = (pkg.name(), pkg.version().as_str());
        let synced = alpm.syncdbs().iter().find_map(|db| {
            let p = db.pkg(name).ok()?;
            (p.version().as_str() == version)
                .then(|| p.sha256sum().map(str::to_owned))
                .flatten()
        });
        if let Some(sum) = synced {
            sha256.insert(name.to_owned(), (sum, ShaSource::SyncDb));
            continue;
        }
        let arch = pkg.arch().unwrap_or("any");
        if let Some(file) = cached_file(&caches, name, version, arch) {
            let sum = crate::system::sha256_file(&file)?;
            sha256.insert(name.to_owned(), (sum, ShaSource::Cache));
        }
    }
    Ok(HostPackages { installed, sha256 })
}

/// `<dir>/<name>-<version>-<arch>.pkg.tar.*` (not `.sig`, not `.part`) in the first cache dir
/// that has one.
fn cached_file(caches: &[PathBuf], name: &str, version: &str, arch: &str) -> Option<PathBuf> {
    let prefix = format!("{name}-{version}-{arch}.pkg.tar");
    for dir in caches {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        let mut hits: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                    n.starts_with(&prefix) && !n.ends_with(".sig") && !n.ends_with(".part")
                })
            })
            .filter(|p| p.is_file())
            .collect();
        hits.sort();
        if let Some(f) = hits.into_iter().next() {
            return Some(f);
        }
    }
    None
}

/// The path of generation `number` of `pool`, relative to the fleet root.
pub fn generation_path(pool: &str, number: u32) -> String {
    format!("generations/{pool}/{number}.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(v: &str, explicit: bool) -> Installed {
        Installed {
            version: v.to_owned(),
            reason: if explicit {
                Reason::Explicit
            } else {
                Reason::Dependency
            },
            required_by: Vec::new(),
            missing: Vec::new(),
            provides: Vec::new(),
        }
    }

    fn prov(number: u32) -> Provenance {
        Provenance {
            pool: "srv".into(),
            number,
            host: "srv-canary".into(),
            at: "2026-11-20T09:00:00Z".into(),
        }
    }

    fn parse(text: &str) -> Generation {
        serde_yaml::from_str(text).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    const SUM_A: &str = "0739022eb574899bff39edafffaea6c3d0a61fcffef78803047f2c183db2f1ee";
    const SUM_B: &str = "42bd4df712663239cea7b6e0d2a9155718d5d7ff808f95f1731b6125f8558c11";

    fn gen1() -> Generation {
        parse(&format!(
            "kind: Generation\npool: srv\nnumber: 1\npackages:\n  app: {{version: 1.0-1}}\n  libfoo: {{version: 1.0-1}}\n  old: {{version: 3-1}}\n  tool: {{version: 1.0-1, sha256: {SUM_B}}}\n  zlib: {{version: 1:1.3.1-2}}\n"
        ))
    }

    fn canary() -> BTreeMap<String, Installed> {
        [
            ("app", inst("2.0-1", true)),
            ("libfoo", inst("2.0-1", false)),
            ("libnew", inst("1.0-1", false)),
            ("tool", inst("1.0-1", true)),
            ("zlib", inst("1:1.3.1-1", false)),
        ]
        .into_iter()
        .map(|(n, i)| (n.to_owned(), i))
        .collect()
    }

    #[test]
    fn builds_renders_and_reads_back_the_lock() {
        let sums: BTreeMap<String, String> = [("app".to_owned(), SUM_A.to_owned())].into();
        let g = build_generation(&prov(2), &canary(), &sums, Some(&gen1())).unwrap();
        assert_eq!(g.packages.len(), 5);
        assert_eq!(g.packages["app"].sha256.as_deref(), Some(SUM_A));
        // Same version as the previous pin: its sum is kept; another version: none.
        assert_eq!(g.packages["tool"].sha256.as_deref(), Some(SUM_B));
        assert_eq!(g.packages["libfoo"].sha256, None);
        assert_eq!(g.snapshot, None);
        assert_eq!(g.captured_from.as_ref().unwrap().as_str(), "srv-canary");

        let text = render_generation(&g, &header(&g, &canary(), Some(&gen1())));
        assert_eq!(parse(&text), g, "{text}");
        let expected_tail = format!(
            "kind: Generation\npool: srv\nnumber: 2\ncaptured_from: srv-canary\ncaptured_at: 2026-11-20T09:00:00Z\npackages:\n  app: {{version: 2.0-1, sha256: {SUM_A}}}\n  libfoo: {{version: 2.0-1}}\n  libnew: {{version: 1.0-1}}\n  tool: {{version: 1.0-1, sha256: {SUM_B}}}\n  zlib: {{version: 1:1.3.1-1}}\n"
        );
        assert!(text.ends_with(&expected_tail), "{text}");
        assert!(
            text.starts_with("# Captured with `fleetctl set-latest --pool srv` on srv-canary"),
            "{text}"
        );
        assert!(
            text.contains("# Against generation 1: 2 upgraded, 1 downgraded, 1 added, 1 removed."),
            "{text}"
        );
        // The same input renders the same bytes.
        assert_eq!(
            text,
            render_generation(&g, &header(&g, &canary(), Some(&gen1())))
        );
    }

    #[test]
    fn awkward_scalars_are_quoted_and_read_back() {
        let mut installed = BTreeMap::new();
        for (n, v) in [
            ("@scope", "1.0-1"),
            ("true", "1-1"),
            ("null", "2:0.1~rc1-3"),
            ("1234", "1234-1"),
            ("c++", "1.0+r3_g1-1"),
        ] {
            installed.insert(n.to_owned(), inst(v, true));
        }
        let g = build_generation(&prov(1), &installed, &BTreeMap::new(), None).unwrap();
        let text = render_generation(&g, &[]);
        assert_eq!(parse(&text), g, "{text}");
        assert!(text.contains("\"@scope\""), "{text}");
        assert!(text.contains("\"true\""), "{text}");
        assert!(text.contains("  c++: {version: 1.0+r3_g1-1}"), "{text}");
        assert_eq!(yaml_scalar("1:1.8.11-2"), "1:1.8.11-2");
        assert_eq!(yaml_scalar("2026-11-20T09:00:00Z"), "2026-11-20T09:00:00Z");
    }

    #[test]
    fn invalid_package_names_are_refused() {
        let installed = [("Bad".to_owned(), inst("1-1", true))].into();
        let err = build_generation(&prov(1), &installed, &BTreeMap::new(), None).unwrap_err();
        assert!(err.to_string().contains("`Bad`"), "{err}");
    }

    #[test]
    fn summary_counts_and_names_with_vercmp() {
        let g = build_generation(&prov(2), &canary(), &BTreeMap::new(), None).unwrap();
        let s = compare(&gen1().packages, &g.packages);
        assert_eq!(s.count(ChangeKind::Upgraded), 2, "{s:?}");
        // 1:1.3.1-2 → 1:1.3.1-1 is older by pkgrel; `old` is gone; libnew is new.
        assert_eq!(s.count(ChangeKind::Downgraded), 1);
        assert_eq!(s.counts(), "2 upgraded, 1 downgraded, 1 added, 1 removed");
        assert_eq!(
            s.lines(1),
            [
                "upgraded:   app 1.0-1 → 2.0-1 (and 1 more)",
                "downgraded: zlib 1:1.3.1-2 → 1:1.3.1-1",
                "added:      libnew 1.0-1",
                "removed:    old 3-1",
            ]
        );
        // vercmp, not string order: 1.10 is newer than 1.9.
        let a = parse("kind: Generation\npool: p\nnumber: 1\npackages:\n  x: {version: 1.9-1}\n");
        let b = parse("kind: Generation\npool: p\nnumber: 2\npackages:\n  x: {version: 1.10-1}\n");
        assert_eq!(compare(&a.packages, &b.packages).counts(), "1 upgraded");
        assert_eq!(
            compare(&a.packages, &a.packages).counts(),
            "no package changes"
        );
    }

    #[test]
    fn commit_message_format() {
        let sums: BTreeMap<String, String> = [("app".to_owned(), SUM_A.to_owned())].into();
        let g = build_generation(&prov(2), &canary(), &sums, Some(&gen1())).unwrap();
        let msg = commit_message(&g, &canary(), Some(&gen1()), None);
        let expected = [
            "srv: generation 2 captured from srv-canary (2 upgraded, 1 downgraded, 1 added, 1 removed)",
            "",
            "Captured with `fleetctl set-latest --pool srv` on srv-canary at 2026-11-20T09:00:00Z:",
            "5 packages (2 explicit, 3 dependencies), sha256 known for 2.",
            "Against generation 1: 2 upgraded, 1 downgraded, 1 added, 1 removed.",
            "",
            "  upgraded:   app 1.0-1 → 2.0-1, libfoo 1.0-1 → 2.0-1",
            "  downgraded: zlib 1:1.3.1-2 → 1:1.3.1-1",
            "  added:      libnew 1.0-1",
            "  removed:    old 3-1",
            "",
        ]
        .join("\n");
        assert_eq!(msg, expected);
        let msg = commit_message(
            &g,
            &canary(),
            None,
            Some("srv: kernel 6.13 tested on the canary"),
        );
        assert!(
            msg.starts_with("srv: kernel 6.13 tested on the canary\n\nCaptured with"),
            "{msg}"
        );
        assert!(msg.contains("The pool floated until now"), "{msg}");
    }

    fn example(path: &str) -> String {
        let p = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
            .join("example-fleet")
            .join(path);
        std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
    }

    #[test]
    fn pool_edit_replaces_the_generation_line_in_place() {
        // build-servers ships floating: set-latest's first capture inserts the line, the next
        // one replaces it.
        let floating = example("pools/build-servers.yaml");
        let text = set_pool_generation("pools/build-servers.yaml", &floating, 2).unwrap();
        assert_eq!(
            text,
            floating.replace("\nprune: true\n", "\ngeneration: 2\nprune: true\n")
        );
        let edited = set_pool_generation("pools/build-servers.yaml", &text, 3).unwrap();
        assert_eq!(
            edited,
            text.replace("\ngeneration: 2\n", "\ngeneration: 3\n")
        );
        assert!(
            edited.starts_with("# CI builders. Shipped floating"),
            "{edited}"
        );
        assert_eq!(pool_generation(&edited), Ok(Some(3)));
        // Its trailing comment and spacing stay.
        let t = "kind: Pool\nname: p\nhosts: [a]\ngeneration:   7   # the good one\nprune: true\n";
        assert_eq!(
            set_pool_generation("p", t, 12).unwrap(),
            "kind: Pool\nname: p\nhosts: [a]\ngeneration:   12   # the good one\nprune: true\n"
        );
        // `generation:` with no value (null) gets one.
        let t = "kind: Pool\nname: p\nhosts: [a]\ngeneration:\n";
        assert_eq!(
            set_pool_generation("p", t, 1).unwrap(),
            "kind: Pool\nname: p\nhosts: [a]\ngeneration: 1\n"
        );
    }

    #[test]
    fn pool_edit_inserts_before_prune_and_its_comments() {
        // workstations: `prune: true` then a comment block, then `window:`.
        let text = example("pools/workstations.yaml");
        let edited = set_pool_generation("pools/workstations.yaml", &text, 1).unwrap();
        assert_eq!(
            edited,
            text.replace("\nprune: true\n", "\ngeneration: 1\nprune: true\n")
        );
        assert_eq!(pool_generation(&edited), Ok(Some(1)));
        // Every comment line survives, in order.
        let comments = |t: &str| {
            t.lines()
                .filter(|l| l.trim_start().starts_with('#'))
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        assert_eq!(comments(&edited), comments(&text));
        let text = example("pools/canary.yaml");
        let edited = set_pool_generation("pools/canary.yaml", &text, 4).unwrap();
        assert_eq!(
            edited,
            text.replace("\nprune: true", "\ngeneration: 4\nprune: true")
        );
        assert_eq!(comments(&edited), comments(&text));
        // A comment directly above `window:` stays attached to it.
        let t = "kind: Pool\nname: p\nhosts: [a]\n# nights only\nwindow: {cron: \"0 0 2 * * *\", duration: 1h}\n";
        assert_eq!(
            set_pool_generation("p", t, 2).unwrap(),
            "kind: Pool\nname: p\nhosts: [a]\ngeneration: 2\n# nights only\nwindow: {cron: \"0 0 2 * * *\", duration: 1h}\n"
        );
        // Nothing after it: appended, with the missing newline added.
        assert_eq!(
            set_pool_generation("p", "kind: Pool\nname: p\nhosts: [a]", 5).unwrap(),
            "kind: Pool\nname: p\nhosts: [a]\ngeneration: 5\n"
        );
    }

    #[test]
    fn pool_edit_refuses_what_it_cannot_do_safely() {
        let flow = "{kind: Pool, name: p, hosts: [a], generation: 2}\n";
        let err = set_pool_generation("pools/p.yaml", flow, 3).unwrap_err();
        assert!(err.to_string().contains("edit the file by hand"), "{err}");
        let block = "kind: Pool\nname: p\ngeneration:\n  2\n";
        assert!(set_pool_generation("pools/p.yaml", block, 3).is_err());
        assert!(set_pool_generation("pools/p.yaml", "kind: [", 3).is_err());
    }

    #[test]
    fn paths() {
        assert_eq!(generation_path("srv", 3), "generations/srv/3.yaml");
    }
}
