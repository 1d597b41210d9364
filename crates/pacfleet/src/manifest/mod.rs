//! The fleet repository: the five manifest kinds of docs/contract.md §1 as typed Rust, and loading
//! a whole fleet (from a directory or from files read out of a git tree) with every problem
//! reported at once as `file:line:column: message` — or only the part one host needs
//! ([`Fleet::for_host`], from exact paths a [`FleetSource`] reads).
//!
//! Owns: the manifest types (`FleetSpec`, `Pool`, `PackageSet`, `Generation`, `Host`), names,
//! the `Fleet` (all manifests of one revision, checked, or a host's part of them), and
//! `Diagnostic`s. It does no resolution (see `resolve`) and no git (see `source`).

mod check;
mod host;
mod load;
mod locate;
#[cfg(test)]
mod schema;

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

use crate::escape::terminal_safe;
pub use check::Scope;
pub use check::check_version;
pub use host::{Entry, FleetSource, HostRead};
pub use load::{FleetFiles, Link, SourceFile, is_manifest_dir, is_manifest_path};
pub use locate::Seg;

/// One problem in one manifest file, located as precisely as we can.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Diagnostic {
    /// Path of the file relative to the fleet root, with `/` separators.
    pub file: String,
    /// 1-based line; 0 when the problem concerns the file as a whole.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What is wrong and what to do about it.
    pub message: String,
}

/// Shown with control characters escaped: messages quote the manifests, which are untrusted.
impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            terminal_safe(&self.file),
            self.line,
            self.column,
            terminal_safe(&self.message)
        )
    }
}

/// Every problem found in a fleet; never empty.
#[derive(Debug, Clone, thiserror::Error)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        writeln!(
            f,
            "the fleet repository has {n} problem{}; fix {} and run `fleetctl validate`:",
            if n == 1 { "" } else { "s" },
            if n == 1 { "it" } else { "them" }
        )?;
        for d in &self.0 {
            writeln!(f, "  {d}")?;
        }
        Ok(())
    }
}

/// An Arch package-name-safe name: `[a-z0-9@._+-]`, not starting with `-` or `.`.
/// Pool, package set and host names follow the same rule.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(transparent)]
#[cfg_attr(test, schemars(transparent))]
pub struct Name(
    #[cfg_attr(
        test,
        schemars(
            regex(pattern = r"^[a-z0-9@_+][a-z0-9@._+-]*$"),
            length(min = 1, max = 255)
        )
    )]
    String,
);

/// Why a string is not a [`Name`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The empty string.
    #[error("a name must not be empty")]
    Empty,
    /// Over 255 bytes.
    #[error("name `{head}…` is longer than 255 characters")]
    TooLong {
        /// Its first 32 characters.
        head: String,
    },
    /// Starts with `-` or `.`.
    #[error("invalid name `{name}`: names must not start with `-` or `.`")]
    BadStart {
        /// The name.
        name: String,
    },
    /// A character outside `a-z0-9@._+-`.
    #[error(
        "invalid name `{name}`: character {c:?} is not allowed; names use only a-z, 0-9 and @._+-"
    )]
    BadChar {
        /// The name.
        name: String,
        /// The first character not allowed.
        c: char,
    },
}

impl Name {
    /// Checks `s` against the naming rule; the error says what is wrong.
    pub fn new(s: &str) -> Result<Name, NameError> {
        if s.is_empty() {
            return Err(NameError::Empty);
        }
        if s.len() > 255 {
            // The first 32 characters (not bytes: a byte index may fall inside a character).
            let head: String = s.chars().take(32).collect();
            return Err(NameError::TooLong { head });
        }
        if s.starts_with('-') || s.starts_with('.') {
            return Err(NameError::BadStart { name: s.to_owned() });
        }
        if let Some(c) = s
            .chars()
            .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || "@._+-".contains(*c)))
        {
            return Err(NameError::BadChar {
                name: s.to_owned(),
                c,
            });
        }
        Ok(Name(s.to_owned()))
    }

    /// The name as a string slice.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Name::new(&s).map_err(serde::de::Error::custom)
    }
}

macro_rules! kind_tag {
    ($ty:ident, $variant:ident) => {
        #[doc = concat!("The `kind: ", stringify!($variant), "` tag.")]
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
        #[cfg_attr(test, derive(schemars::JsonSchema))]
        pub enum $ty {
            #[doc = concat!("`", stringify!($variant), "`")]
            $variant,
        }
    };
}
kind_tag!(FleetKind, Fleet);
kind_tag!(PoolKind, Pool);
kind_tag!(PackageSetKind, PackageSet);
kind_tag!(GenerationKind, Generation);
kind_tag!(HostKind, Host);

/// `fleet.yaml`: the fleet as a whole. Exactly one per repository.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FleetSpec {
    /// Always `Fleet`.
    pub kind: FleetKind,
    /// The fleet's name; bound into every signature, hosts check it.
    pub name: Name,
    /// Where exact old versions and dated repository snapshots come from, laid out like the
    /// Arch Linux Archive (`packages/<first letter>/<name>/<file>`,
    /// `repos/YYYY/MM/DD/<repo>/os/<arch>`); https:// or file://.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(regex(pattern = r"^(https?|file)://")))]
    pub archive: Option<String>,
    /// Keys allowed to sign this fleet's states. A change to this list takes effect on a host
    /// only once a commit carrying it is signed by the keys the host already trusts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys: Vec<FleetKey>,
}

/// A signing key listed in fleet.yaml.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct FleetKey {
    /// Who holds it (shown in `verify` output and refusals).
    pub name: Name,
    /// The minisign public key: the base64 line of its `.pub` file (`RW…`).
    #[cfg_attr(test, schemars(regex(pattern = r"^RW[A-Za-z0-9+/=]{54}$")))]
    pub key: String,
}

/// A package named by a set, pool or host: a bare name, or `{name, repo}` to say which sync
/// repository it must come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(untagged)]
#[cfg_attr(test, schemars(deny_unknown_fields))]
pub enum PackageRef {
    /// `firefox`
    Name(Name),
    /// `{name: openssh, repo: core}`
    Detailed {
        /// Package name.
        name: Name,
        /// Sync repository (a section of the host's pacman.conf) it must come from.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        repo: Option<Name>,
    },
}

impl PackageRef {
    /// The package name.
    pub fn name(&self) -> &Name {
        match self {
            PackageRef::Name(n) | PackageRef::Detailed { name: n, .. } => n,
        }
    }

    /// The repository the package must come from, if one is given.
    pub fn repo(&self) -> Option<&Name> {
        match self {
            PackageRef::Name(_) => None,
            PackageRef::Detailed { repo, .. } => repo.as_ref(),
        }
    }
}

impl<'de> Deserialize<'de> for PackageRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Detailed {
            name: Name,
            #[serde(default)]
            repo: Option<Name>,
        }
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = PackageRef;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a package name, or a mapping `{name: NAME, repo: REPO}`")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PackageRef, E> {
                Name::new(v).map(PackageRef::Name).map_err(E::custom)
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                map: A,
            ) -> Result<PackageRef, A::Error> {
                let d = Detailed::deserialize(serde::de::value::MapAccessDeserializer::new(map))?;
                Ok(PackageRef::Detailed {
                    name: d.name,
                    repo: d.repo,
                })
            }
        }
        d.deserialize_any(Visitor)
    }
}

/// When a pool's hosts may apply changes: a cron expression for the start (six fields, with
/// seconds, as the `cron` crate reads it; the host's local time) and how long it stays open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Window {
    /// Start times, e.g. `"0 0 2 * * Sat"` (sec min hour day-of-month month day-of-week).
    pub cron: String,
    /// How long the window stays open after each start, e.g. `4h`, `30m`, `1h 30m`; at most 7
    /// days (`7d`).
    pub duration: String,
}

/// The longest window pacfleet accepts: a week. A window longer than the time between its
/// starts is simply always open, and anything longer than a week is a typo or a way to say
/// "no window" (leave `window:` out for that). `validate` refuses longer windows; the window gate
/// (`crate::window::gate`) refuses them too, so a host never computes with them.
pub const MAX_WINDOW_DURATION: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// Parses a window's duration and checks it against [`MAX_WINDOW_DURATION`]; the error says what is
/// wrong (for `validate`'s message and the window gate's error).
pub fn parse_window_duration(text: &str) -> Result<chrono::TimeDelta, WindowDurationError> {
    let d = humantime::parse_duration(text).map_err(WindowDurationError::Parse)?;
    if d > MAX_WINDOW_DURATION {
        return Err(WindowDurationError::TooLong);
    }
    // At most a week: always representable.
    chrono::TimeDelta::from_std(d).map_err(|_| WindowDurationError::TooLong)
}

/// Why a window's duration is refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum WindowDurationError {
    /// It does not parse (humantime's reason).
    #[error("{0}")]
    Parse(#[source] humantime::DurationError),
    #[error(
        "longer than 7 days, the longest window pacfleet allows; write at most 7d (e.g. 4h), or remove `window:` for no window"
    )]
    TooLong,
}

/// `pools/<name>.yaml`: which hosts, which package sets, which generation, when.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Pool {
    /// Always `Pool`.
    pub kind: PoolKind,
    /// The pool's name.
    pub name: Name,
    /// Hostname globs (`*`, `?`, `[...]`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Every label here must equal the Host manifest's label. If `hosts` is given too, a host
    /// must match both.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Package sets this pool installs (with their includes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub package_sets: Vec<Name>,
    /// Inline additions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageRef>,
    /// Removed from the desired set whatever includes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Name>,
    /// Pin to `generations/<pool>/<generation>.yaml`; absent: the pool floats.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// Archive date (`YYYY-MM-DD`): the pool's hosts plan and download against the fleet
    /// archive's repositories of that day (`<archive>/repos/YYYY/MM/DD/$repo/os/$arch`)
    /// instead of their mirrors, so every host sees the same repository state. Needs
    /// `archive:` in fleet.yaml. With `generation:`, the generation's `snapshot:` is the one
    /// that counts and this must equal it (or be left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")))]
    pub snapshot: Option<String>,
    /// Remove packages pacfleet installed that are no longer desired.
    #[serde(default)]
    pub prune: bool,
    /// When changes may be applied; absent: any time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<Window>,
    /// Hosts plan and report but apply nothing.
    #[serde(default)]
    pub paused: bool,
    /// How a change reaches the pool's hosts: in waves, each waiting for the earlier ones
    /// (docs/contract.md §1.3, "Rollouts"); absent: every host applies on its own next pass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<RolloutSpec>,
    /// Commands that must succeed after a pass applied changes; absent: no check.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<HealthSpec>,
}

/// A pool's `rollout:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct RolloutSpec {
    /// The waves, in order; a host is in the first wave that selects it by `hosts:` or
    /// `labels:`, else in the first whose `percent` covers its bucket, else in the last.
    pub waves: Vec<WaveSpec>,
    /// Hosts of the pool that may report failure on a change before the rollout halts.
    #[serde(default)]
    pub failure_budget: u32,
    /// A host silent this long (e.g. `3d`) neither counts nor blocks a wave; default 3 days.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stale_after: Option<String>,
}

/// One wave of a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct WaveSpec {
    /// The wave's name (`canary`, `early`, `rest`).
    pub name: Name,
    /// Hostname globs that put a host in this wave.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Labels that put a host in this wave (every one must match the Host manifest's).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// The share of the pool this wave reaches, cumulative over the waves (1–100): a
    /// deterministic hash of (fleet, pool, hostname) decides.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(range(min = 1, max = 100)))]
    pub percent: Option<u8>,
    /// How long after the previous wave is done this one may start (e.g. `2h`); default 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub soak: Option<String>,
}

/// A pool's `health:`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct HealthSpec {
    /// Shell commands (`sh -c`), run in order after a pass applied changes; any one failing
    /// or outliving `timeout` fails the host.
    pub commands: Vec<String>,
    /// How long all the commands together may take (e.g. `5m`); default 5 minutes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// On failure, return to the package versions the host had before the pass.
    #[serde(default)]
    pub rollback: bool,
}

/// `stale_after:` when a rollout leaves it out.
pub const DEFAULT_STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(3 * 24 * 3600);
/// `health.timeout:` when left out.
pub const DEFAULT_HEALTH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5 * 60);
/// The longest `soak`, `stale_after` or health `timeout` pacfleet accepts: 90 days.
pub const MAX_ROLLOUT_DURATION: std::time::Duration =
    std::time::Duration::from_secs(90 * 24 * 3600);

/// Parses a rollout or health duration (`2h`, `3d`, `0s`), at most [`MAX_ROLLOUT_DURATION`].
pub fn parse_rollout_duration(text: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(text.trim())
        .map_err(|e| format!("`{text}` does not parse ({e}); write e.g. 30m, 2h or 3d"))?;
    if d > MAX_ROLLOUT_DURATION {
        return Err(format!(
            "`{text}` is longer than 90 days, the longest pacfleet allows"
        ));
    }
    Ok(d)
}

impl RolloutSpec {
    /// `stale_after`, parsed (checked by `validate`; a bad one falls back to the default).
    pub fn stale_after(&self) -> std::time::Duration {
        self.stale_after
            .as_deref()
            .and_then(|t| parse_rollout_duration(t).ok())
            .unwrap_or(DEFAULT_STALE_AFTER)
    }
}

impl WaveSpec {
    /// `soak`, parsed (checked by `validate`; a bad one counts as none).
    pub fn soak(&self) -> std::time::Duration {
        self.soak
            .as_deref()
            .and_then(|t| parse_rollout_duration(t).ok())
            .unwrap_or_default()
    }
}

impl HealthSpec {
    /// `timeout`, parsed (checked by `validate`; a bad one falls back to the default).
    pub fn timeout(&self) -> std::time::Duration {
        self.timeout
            .as_deref()
            .and_then(|t| parse_rollout_duration(t).ok())
            .filter(|d| !d.is_zero())
            .unwrap_or(DEFAULT_HEALTH_TIMEOUT)
    }
}

/// `packages/<name>.yaml`: a named list of packages.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct PackageSet {
    /// Always `PackageSet`.
    pub kind: PackageSetKind,
    /// The set's name.
    pub name: Name,
    /// Other sets whose packages this one includes; cycles are errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub include: Vec<Name>,
    /// The packages.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageRef>,
    /// Removed from the host's desired set whatever includes them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Name>,
}

/// One pinned package of a generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Pin {
    /// Full version, `[epoch:]pkgver-pkgrel`.
    #[cfg_attr(test, schemars(regex(pattern = "-")))]
    pub version: String,
    /// sha256 of the package file, when known (lowercase hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(regex(pattern = r"^[0-9a-f]{64}$")))]
    pub sha256: Option<String>,
}

/// `generations/<pool>/<number>.yaml`: an exact snapshot of package versions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Generation {
    /// Always `Generation`.
    pub kind: GenerationKind,
    /// The pool it belongs to; equals the directory name.
    pub pool: Name,
    /// Its number; equals the file name.
    pub number: u32,
    /// Archive date (`YYYY-MM-DD`) the pool's repositories are pinned to while it runs this
    /// generation: hosts take the fleet archive's repositories of that day instead of their
    /// mirrors (needs `archive:` in fleet.yaml).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$")))]
    pub snapshot: Option<String>,
    /// Host this generation was captured from by `set-latest`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_from: Option<Name>,
    /// When it was captured (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured_at: Option<String>,
    /// The whole lock: explicit packages and their dependencies.
    #[serde(default)]
    pub packages: BTreeMap<Name, Pin>,
}

/// `hosts/<hostname>.yaml`: per-host labels and additions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Host {
    /// Always `Host`.
    pub kind: HostKind,
    /// The hostname.
    pub name: Name,
    /// Labels pools select on.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Packages this host adds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<PackageRef>,
    /// Packages removed from this host's desired set.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<Name>,
    /// The host's minisign public key (the base64 line of its `host.pub`, which `fleetctl
    /// enroll` prints): its status reports are valid only under this key (docs/contract.md §6),
    /// and a host without one takes no part in its pool's rollout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

/// A manifest together with the file it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Doc<T> {
    /// Path relative to the fleet root.
    pub file: String,
    /// The parsed manifest.
    pub spec: T,
}

/// Every manifest of one revision of a fleet repository, checked: names are unique, every
/// reference resolves, includes have no cycles, generations match their paths and cover what
/// their pool asks for, and no Host manifest is matched by two pools. [`Fleet::for_host`]
/// holds only what one host needs (every pool, that host's manifest, its pools' sets and
/// generations), checked as far as those files go.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// `fleet.yaml`.
    pub fleet: Doc<FleetSpec>,
    /// Pools by name.
    pub pools: BTreeMap<Name, Doc<Pool>>,
    /// Package sets by name.
    pub sets: BTreeMap<Name, Doc<PackageSet>>,
    /// Generations by (pool, number).
    pub generations: BTreeMap<(Name, u32), Doc<Generation>>,
    /// Host manifests by hostname.
    pub hosts: BTreeMap<Name, Doc<Host>>,
    /// Built on first use by [`Fleet::pools_selecting`].
    pool_index: PoolIndexCell,
}

/// Which pools select which hostname: every pool's `hosts:` globs compiled once into one
/// `GlobSet`, so that finding a host's pool is one match however many pools there are
/// (compiling each pool's globs for every host made `validate` and `diff` quadratic).
#[derive(Debug, Clone)]
struct PoolIndex {
    /// Every valid glob of every pool.
    globs: globset::GlobSet,
    /// The pool each glob of `globs` belongs to, by index.
    owner: Vec<Name>,
    /// Pools with `labels:` and no `hosts:`: they select by labels alone.
    by_labels_only: Vec<Name>,
}

impl PoolIndex {
    fn new(pools: &BTreeMap<Name, Doc<Pool>>) -> PoolIndex {
        let mut builder = globset::GlobSetBuilder::new();
        let mut owner = Vec::new();
        let mut by_labels_only = Vec::new();
        for (name, pool) in pools {
            if pool.spec.hosts.is_empty() && !pool.spec.labels.is_empty() {
                by_labels_only.push(name.clone());
            }
            // Invalid globs are reported by validation; they select nothing.
            for glob in pool
                .spec
                .hosts
                .iter()
                .filter_map(|g| globset::Glob::new(g).ok())
            {
                builder.add(glob);
                owner.push(name.clone());
            }
        }
        let globs = builder.build().unwrap_or_else(|e| {
            // Each glob compiled on its own; a set of them failing (a size limit) selects
            // nothing rather than guessing.
            tracing::error!("cannot compile the pools' host globs together: {e}");
            owner.clear();
            globset::GlobSet::empty()
        });
        PoolIndex {
            globs,
            owner,
            by_labels_only,
        }
    }
}

/// The index, derived from the pools: equal whenever the pools are.
#[derive(Debug, Clone, Default)]
struct PoolIndexCell(std::sync::OnceLock<PoolIndex>);

impl PartialEq for PoolIndexCell {
    fn eq(&self, _: &PoolIndexCell) -> bool {
        true
    }
}

/// A diagnostic for `file` at the YAML `path` in it (line and column found in `files`).
pub fn diagnostic_at(
    files: &FleetFiles,
    file: &str,
    path: &[Seg<'_>],
    message: String,
) -> Diagnostic {
    let (line, column) = files.text(file).map_or((0, 0), |t| locate::locate(t, path));
    Diagnostic {
        file: file.to_owned(),
        line,
        column,
        message,
    }
}

impl Fleet {
    /// Parses every manifest in `files` and checks the manifest rules (each file, references,
    /// include cycles, generation paths, keys, windows), reporting every problem at once;
    /// `diags` gets them, and the fleet is returned when it could be assembled at all. The
    /// checked load, with the rules that need resolution too, is `Fleet::from_files`
    /// (`crate::validate`).
    pub fn parse(files: &FleetFiles, diags: &mut Vec<Diagnostic>) -> Option<Fleet> {
        let (parsed, parse_diags) = load::parse_all(files);
        diags.extend(parse_diags);
        check::check(parsed, files, diags, &Scope::Full)
    }

    /// The fleet's name.
    pub fn name(&self) -> &Name {
        &self.fleet.spec.name
    }

    /// The pools that select `hostname`, in name order. A pool with `hosts:` globs needs one to
    /// match; a pool with `labels:` needs every label to equal the Host manifest's; a pool
    /// with both needs both; a pool with neither selects nothing. More than one is an error
    /// the caller reports.
    pub fn pools_selecting(&self, hostname: &str) -> Vec<&Doc<Pool>> {
        let index = self
            .pool_index
            .0
            .get_or_init(|| PoolIndex::new(&self.pools));
        let labels = self.hosts.get(hostname).map(|h| &h.spec.labels);
        select(&self.pools, index, hostname, labels)
            .iter()
            .filter_map(|name| self.pools.get(name))
            .collect()
    }
}

/// The names of the pools of `pools` that select `hostname`, whose Host manifest has `labels`
/// (`None`: it has none), in name order (see [`Fleet::pools_selecting`]).
fn select(
    pools: &BTreeMap<Name, Doc<Pool>>,
    index: &PoolIndex,
    hostname: &str,
    labels: Option<&BTreeMap<String, String>>,
) -> Vec<Name> {
    let mut names: std::collections::BTreeSet<&Name> = index
        .globs
        .matches(hostname)
        .into_iter()
        .map(|i| &index.owner[i])
        .collect();
    names.extend(index.by_labels_only.iter());
    names
        .into_iter()
        .filter(|name| {
            pools.get(*name).is_some_and(|pool| {
                pool.spec.labels.is_empty()
                    || labels.is_some_and(|have| {
                        pool.spec.labels.iter().all(|(k, v)| have.get(k) == Some(v))
                    })
            })
        })
        .cloned()
        .collect()
}

/// Test fixture: `list` plus a `fleet.yaml` naming the fleet `acme` (unless `list` has one).
#[cfg(test)]
pub(crate) fn test_files(list: &[(&str, &str)]) -> FleetFiles {
    let mut all = vec![("fleet.yaml", "kind: Fleet\nname: acme\n")];
    if list.iter().any(|(p, _)| *p == "fleet.yaml") {
        all.clear();
    }
    all.extend_from_slice(list);
    FleetFiles::from_blobs(
        all.iter()
            .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec())),
    )
}

/// Reading a fleet from disk failed.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A directory or file could not be read.
    #[error(
        "cannot read fleet repository file {path}: {source}; check the path and its permissions"
    )]
    Io {
        /// The path that failed.
        path: String,
        /// The io error.
        source: std::io::Error,
    },
    /// The directory holds no `fleet.yaml`.
    #[error(
        "{0} is not a fleet repository: it has no fleet.yaml; pass the directory that holds fleet.yaml (see example-fleet/)"
    )]
    NotAFleet(String),
    /// The manifests have problems.
    #[error("{0}")]
    Invalid(Diagnostics),
}
