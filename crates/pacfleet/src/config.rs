//! The host's agent configuration: `/etc/pacfleet/agent.yaml` (docs/contract.md §2).
//!
//! Every command that runs on a host (`plan`, `reconcile`, `agent`, `status`, `history`,
//! `set-latest`) starts with [`AgentConfig::load`]. Loading parses the file strictly (unknown
//! fields are errors that list the valid fields and suggest the nearest one), fills in the
//! defaults, and resolves every relative path — including a `repo:` that is a local path — against
//! the directory that holds the config file, so a test host can be a directory carrying
//! `agent.yaml` with `root: root` and `repo: ../fleet`.
//!
//! The result is a plain value with every default applied: callers never see an `Option` for a
//! setting that has a default. The paths a host derives from it — libalpm's ([`HostPaths`]),
//! the fleet repository's mirror and the anchor beside the package database — are its methods.
//! Below every module that runs on a host (the pass, the agent, enroll).

use std::fmt::Write as _;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Where `--config` points when it is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/pacfleet/agent.yaml";
/// Default `branch:`.
pub const DEFAULT_BRANCH: &str = "main";
/// Default `root:`.
pub const DEFAULT_ROOT: &str = "/";
/// `dbpath:` defaults to this, below `root`.
pub const DEFAULT_DBPATH_IN_ROOT: &str = "var/lib/pacman";
/// Default `pacman_conf:`.
pub const DEFAULT_PACMAN_CONF: &str = "/etc/pacman.conf";
/// Default `state_dir:`.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/pacfleet";
/// `host_key:` defaults to this file beside agent.yaml.
pub const DEFAULT_HOST_KEY_NAME: &str = "host.key";
/// Default `threshold:`.
pub const DEFAULT_THRESHOLD: usize = 1;
/// Default `interval:` (5m).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(5 * 60);
/// Default `lock_timeout:` (60s).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(60);
/// Default `status_timeout:` (20s).
pub const DEFAULT_STATUS_TIMEOUT: Duration = Duration::from_secs(20);

/// Every field `agent.yaml` accepts, in the order docs/contract.md §2 documents them.
pub const FIELDS: &[&str] = &[
    "repo",
    "branch",
    "hostname",
    "root",
    "dbpath",
    "pacman_conf",
    "state_dir",
    "trusted_keys",
    "threshold",
    "interval",
    "lock_timeout",
    "textfile",
    "keyring_packages",
    "fleet",
    "max_pack_size",
    "host_key",
    "ssh_key",
    "ssh_known_hosts",
    "status_repo",
    "status_timeout",
    "peers",
    "prefetch",
];

/// The keyring package every Arch host has; upgraded in a transaction of its own, first.
pub const DEFAULT_KEYRING_PACKAGES: &[&str] = &["archlinux-keyring"];

const REPO_EXAMPLE: &str = "repo: https://git.example.com/ops/fleet.git";

/// A host's agent configuration with every default applied and every path resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AgentConfig {
    /// The file this was loaded from (empty for configs built with [`AgentConfig::new`]).
    pub source: PathBuf,
    /// Git URL of the fleet repository, or an absolute local path.
    pub repo: String,
    /// Branch whose newest signed commit is the target.
    pub branch: String,
    /// The name this host has in the fleet (`hosts:` globs, `hosts/<name>.yaml`).
    pub hostname: String,
    /// Target root of the managed system.
    pub root: PathBuf,
    /// pacman database directory.
    pub dbpath: PathBuf,
    /// pacman.conf: repositories, mirrors, CacheDir, SigLevel.
    pub pacman_conf: PathBuf,
    /// Where pacfleet keeps the fetched repo, applied state, inventory and history.
    pub state_dir: PathBuf,
    /// minisign public keys allowed to sign states; never read from the repo.
    pub trusted_keys: Vec<PathBuf>,
    /// Distinct trusted keys that must sign a state; at least 1.
    pub threshold: usize,
    /// Time between passes of `fleetctl agent`.
    pub interval: Duration,
    /// How long to wait for the pacman database lock before giving up.
    pub lock_timeout: Duration,
    /// Where to write Prometheus textfile-collector metrics, if anywhere.
    pub textfile: Option<PathBuf>,
    /// Packages that carry signing keys (`archlinux-keyring`, plus any agent.yaml
    /// `keyring_packages` names): a pass installs or upgrades them in a transaction of their
    /// own before the rest, so packages signed by a new key verify.
    pub keyring_packages: Vec<String>,
    /// The fleet this host belongs to: a repository whose signed statements name another fleet
    /// is refused, from the very first pass (without it a fresh host takes the fleet name of
    /// the first state it verifies).
    pub fleet: Option<String>,
    /// The largest pack a fetch of the fleet repository accepts, in bytes (`max_pack_size:
    /// 256MiB` by default): the repository's content is untrusted until verified.
    pub max_pack_bytes: u64,
    /// The host's own minisign secret key (`host_key:`, default `host.key` beside agent.yaml;
    /// its public key is the same path with `.pub` for the extension, `host.pub`, as `fleetctl
    /// enroll` writes them). It signs the host's status reports (`report::sign`).
    pub host_key: PathBuf,
    /// For a repository reached over ssh (the fleet's or the status repository): the private
    /// key and known_hosts file ssh must use (`ssh_key:`, `ssh_known_hosts:`, default
    /// `known_hosts` beside the key), so fetching works under the units' `ProtectHome=yes`.
    /// `None`: ssh as configured for root.
    pub ssh: Option<crate::source::SshIdentity>,
    /// The status repository hosts publish their signed reports to (`status_repo:`; a URL, or
    /// an absolute local path): `None`, no reports are written or read.
    pub status_repo: Option<String>,
    /// How long one push to or fetch from the status repository may take (`status_timeout:`,
    /// default 20s).
    pub status_timeout: Duration,
    /// The peer cache (`peers:`, docs/contract.md §8): `None`, the agent serves nothing.
    pub peers: Option<PeersConfig>,
    /// `prefetch: true`: a pass whose change is pending (its window closed, or its wave not
    /// due) downloads the change's package files into the cache, peers first (docs/contract.md
    /// §8), so that inside the window only the transaction runs.
    pub prefetch: bool,
}

/// agent.yaml `peers:`: what the agent does for the peer cache.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeersConfig {
    /// `peers.listen`: the address the agent serves its package cache dirs on
    /// (`crate::peer_serve`); `None`, it serves nothing.
    pub listen: Option<std::net::SocketAddr>,
    /// `peers.static`: base URLs (http:// or https://, no trailing `/`) a pass asks for package
    /// files before the upstream mirrors (`crate::download`, in `crate::peers`' order).
    pub static_peers: Vec<String>,
    /// `peers.discover: mdns`: the agent announces its peer cache server (with `listen`) by
    /// mDNS, and peers are found by mDNS (`crate::peer_discover`).
    pub discover: Option<Discover>,
}

/// agent.yaml `peers.discover`: how peers are found on the site's network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Discover {
    /// `mdns`: multicast DNS, service type `_pacfleet-peer._tcp.local.` (`crate::peer_discover`).
    Mdns,
}

/// At most this many `peers.static` entries.
pub const PEERS_STATIC_MAX: usize = 16;

/// The fields `peers:` accepts.
pub const PEERS_FIELDS: &[&str] = &["listen", "static", "discover"];

/// Where the host's package system lives: the part of agent.yaml libalpm is opened with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPaths {
    /// Target root (`/`, or a directory for a chroot, image or test host).
    pub root: PathBuf,
    /// The pacman database directory.
    pub dbpath: PathBuf,
    /// The pacman.conf with repositories, cache dirs and signature levels.
    pub pacman_conf: PathBuf,
}

/// Why `agent.yaml` could not be loaded. Every message names the file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "cannot read agent config {}: {source}; check the path and its permissions, or pass --config PATH (default {DEFAULT_CONFIG_PATH})",
        path.display()
    )]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error(
        "{}: unknown field `{field}` in agent config{}; valid fields: {}",
        at(path, *line, *column),
        nearest.as_ref().map(|n| format!(", did you mean `{n}`?")).unwrap_or_default(),
        FIELDS.join(", ")
    )]
    UnknownField {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        field: String,
        nearest: Option<String>,
    },

    #[error(
        "{}: `repo` is required: the git URL or local path of the fleet repository; add a line like `{REPO_EXAMPLE}`",
        path.display()
    )]
    MissingRepo { path: PathBuf },

    #[error(
        "{}: {message}; agent.yaml is a YAML mapping with the fields {}",
        at(path, *line, *column),
        FIELDS.join(", ")
    )]
    Parse {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        message: String,
    },

    #[error("{}: `{field}`: {message}", at(path, *line, *column))]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        field: &'static str,
        message: String,
    },

    #[error(
        "{}: no `hostname:` set and the machine's hostname could not be read from /proc/sys/kernel/hostname or /etc/hostname; set `hostname: NAME` in the config",
        path.display()
    )]
    NoHostname { path: PathBuf },
}

fn at(path: &Path, line: Option<usize>, column: Option<usize>) -> String {
    let mut s = path.display().to_string();
    if let Some(line) = line {
        let _ = write!(s, ":{line}");
        if let Some(column) = column {
            let _ = write!(s, ":{column}");
        }
    }
    s
}

/// The file as written; `None` means "use the default". Values are checked after parsing
/// (`AgentConfig::check_raw`), so errors can say which field is wrong and where.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename = "AgentConfig")]
struct RawConfig {
    repo: String,
    branch: Option<String>,
    hostname: Option<String>,
    root: Option<String>,
    dbpath: Option<String>,
    pacman_conf: Option<String>,
    state_dir: Option<String>,
    trusted_keys: Option<Vec<String>>,
    threshold: Option<usize>,
    interval: Option<serde_yaml::Value>,
    lock_timeout: Option<serde_yaml::Value>,
    textfile: Option<String>,
    keyring_packages: Option<Vec<String>>,
    fleet: Option<String>,
    max_pack_size: Option<serde_yaml::Value>,
    host_key: Option<String>,
    ssh_key: Option<String>,
    ssh_known_hosts: Option<String>,
    status_repo: Option<String>,
    status_timeout: Option<serde_yaml::Value>,
    peers: Option<serde_yaml::Value>,
    prefetch: Option<bool>,
}

/// Line and column (1-based) of the value of each occurrence of top-level `field` in `text`,
/// for errors about values that parsed but are not acceptable (serde_yaml reports those at the
/// start of the mapping). agent.yaml is a flat mapping, so a line starting with `field:` is the
/// field.
fn value_locations(text: &str, field: &str) -> Vec<(usize, usize)> {
    let keys = [
        field.to_owned(),
        format!("\"{field}\""),
        format!("'{field}'"),
    ];
    let mut found = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let rest = keys
            .iter()
            .find_map(|k| line.strip_prefix(k.as_str()))
            .map(str::trim_start)
            .and_then(|r| r.strip_prefix(':'));
        if let Some(rest) = rest {
            let value = rest.trim_start();
            let column = if value.is_empty() || value.starts_with('#') {
                line.len() - rest.len()
            } else {
                line.len() - value.len() + 1
            };
            found.push((i + 1, column));
        }
    }
    found
}

fn check_string(field: &'static str, s: String) -> Result<String, (&'static str, String)> {
    if s.trim().is_empty() {
        return Err((
            field,
            "must not be empty (leave the field out for the default)".to_owned(),
        ));
    }
    Ok(s.trim().to_owned())
}

fn check_path(field: &'static str, s: String) -> Result<PathBuf, (&'static str, String)> {
    if s.is_empty() {
        return Err((
            field,
            "path must not be empty (leave the field out for the default)".to_owned(),
        ));
    }
    if s.starts_with('~') {
        return Err((
            field,
            format!("path {s:?} starts with '~', which is not expanded; write the absolute path"),
        ));
    }
    Ok(PathBuf::from(s))
}

fn check_duration(
    field: &'static str,
    v: serde_yaml::Value,
) -> Result<Duration, (&'static str, String)> {
    match v {
        serde_yaml::Value::String(s) => parse_duration(&s).map_err(|e| (field, e.to_string())),
        serde_yaml::Value::Number(n) => Err((
            field,
            format!("duration {n} has no unit; write e.g. `{n}s` or `{n}m`"),
        )),
        other => Err((
            field,
            format!(
                "expected a duration such as 30s, 5m or 1h30m, found {}",
                serde_yaml::to_string(&other).unwrap_or_default().trim()
            ),
        )),
    }
}

/// `peers:`: a mapping with `listen: ADDRESS:PORT` and/or `static: [URL, …]`.
fn check_peers(v: serde_yaml::Value) -> Result<PeersConfig, (&'static str, String)> {
    const EXAMPLE: &str =
        "write e.g. `peers: {listen: 0.0.0.0:7878}` or `peers: {static: [http://10.0.0.5:7878]}`";
    let serde_yaml::Value::Mapping(map) = v else {
        return Err(("peers", format!("expected a mapping; {EXAMPLE}")));
    };
    let mut listen = None;
    let mut static_peers = Vec::new();
    let mut discover = None;
    for (key, value) in map {
        let Some(key) = key.as_str() else {
            return Err(("peers", format!("field names are words; {EXAMPLE}")));
        };
        if key == "prefetch" {
            return Err((
                "peers",
                "`prefetch` is a field of agent.yaml itself, not of `peers:`: write `prefetch: true` on a line of its own".to_owned(),
            ));
        }
        if key == "static" {
            static_peers = check_static_peers(value)?;
            continue;
        }
        if key == "discover" {
            discover = Some(check_discover(value)?);
            continue;
        }
        if key != "listen" {
            return Err((
                "peers",
                format!(
                    "unknown field `peers.{key}`; valid fields: {}",
                    PEERS_FIELDS.join(", ")
                ),
            ));
        }
        let text = match value {
            serde_yaml::Value::String(s) => s,
            other => {
                return Err((
                    "peers",
                    format!(
                        "`peers.listen` is an address and port such as 0.0.0.0:7878 or [::]:7878, found {}",
                        serde_yaml::to_string(&other).unwrap_or_default().trim()
                    ),
                ));
            }
        };
        let addr = text.trim().parse::<std::net::SocketAddr>().map_err(|e| {
            (
                "peers",
                format!(
                    "`peers.listen` {text:?} is not an address and port such as 0.0.0.0:7878 or [::]:7878 ({e})"
                ),
            )
        })?;
        listen = Some(addr);
    }
    if listen.is_none() && static_peers.is_empty() && discover.is_none() {
        return Err((
            "peers",
            format!("`peers` needs `listen`, a non-empty `static` or `discover: mdns`; {EXAMPLE}"),
        ));
    }
    Ok(PeersConfig {
        listen,
        static_peers,
        discover,
    })
}

/// `peers.discover`: `mdns`, the only way of discovery there is.
fn check_discover(v: serde_yaml::Value) -> Result<Discover, (&'static str, String)> {
    match v {
        serde_yaml::Value::String(s) if s.trim() == "mdns" => Ok(Discover::Mdns),
        other => Err((
            "peers",
            format!(
                "`peers.discover` takes `mdns` (peers found by multicast DNS, the only discovery there is), found {}; write `discover: mdns` or remove it",
                serde_yaml::to_string(&other).unwrap_or_default().trim()
            ),
        )),
    }
}

/// `peers.static`: a list of at most `PEERS_STATIC_MAX` http:// or https:// base URLs with a
/// host, no credentials, query or fragment; returned without a trailing `/`.
fn check_static_peers(v: serde_yaml::Value) -> Result<Vec<String>, (&'static str, String)> {
    const EXAMPLE: &str = "write e.g. `static: [http://10.0.0.5:7878]`";
    let serde_yaml::Value::Sequence(items) = v else {
        return Err((
            "peers",
            format!("`peers.static` is a list of URLs; {EXAMPLE}"),
        ));
    };
    if items.len() > PEERS_STATIC_MAX {
        return Err((
            "peers",
            format!(
                "`peers.static` has {} entries, at most {PEERS_STATIC_MAX} are allowed",
                items.len()
            ),
        ));
    }
    let mut out: Vec<String> = Vec::new();
    for item in items {
        let serde_yaml::Value::String(text) = item else {
            return Err((
                "peers",
                format!(
                    "`peers.static` entry {} is not a URL; {EXAMPLE}",
                    serde_yaml::to_string(&item).unwrap_or_default().trim()
                ),
            ));
        };
        let bad = |why: &str| {
            (
                "peers",
                format!("`peers.static` entry {text:?} {why}; {EXAMPLE}"),
            )
        };
        let trimmed = text.trim();
        let (scheme, rest) = ["http://", "https://"]
            .iter()
            .find_map(|s| trimmed.strip_prefix(s).map(|r| (*s, r)))
            .ok_or_else(|| bad("is not an http:// or https:// URL"))?;
        let rest = rest.trim_end_matches('/');
        let url = format!("{scheme}{rest}");
        let host = rest.split('/').next().unwrap_or("");
        if host.is_empty() {
            return Err(bad("has no host"));
        }
        if host.contains('@') {
            return Err(bad("has credentials; peers need none"));
        }
        if rest.contains(['?', '#']) || rest.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad(
                "is not a plain base URL (no query, fragment or spaces)",
            ));
        }
        if !out.contains(&url) {
            out.push(url);
        }
    }
    Ok(out)
}

fn check_size(field: &'static str, v: serde_yaml::Value) -> Result<u64, (&'static str, String)> {
    let text = match v {
        serde_yaml::Value::String(s) => s,
        serde_yaml::Value::Number(n) => n.to_string(),
        other => {
            return Err((
                field,
                format!(
                    "expected a size such as 256MiB or 1GiB, found {}",
                    serde_yaml::to_string(&other).unwrap_or_default().trim()
                ),
            ));
        }
    };
    parse_size(&text).map_err(|e| (field, e))
}

/// Parse a size: bytes, or a number with `KiB`, `MiB` or `GiB` (e.g. `256MiB`); at least 1 KiB.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, unit) = t.split_at(t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len()));
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" => 1 << 10,
        "MiB" => 1 << 20,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size {s:?}: unknown unit {other:?}; write e.g. 256MiB or 1GiB"
            ));
        }
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("invalid size {s:?}; write e.g. 256MiB or 1GiB"))?;
    match n.checked_mul(factor) {
        Some(b) if b >= 1024 => Ok(b),
        Some(_) => Err(format!("size {s:?} is below 1 KiB")),
        None => Err(format!("size {s:?} is too large")),
    }
}

/// A duration of agent.yaml that does not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("invalid duration {text:?} ({source}); write a number with a unit, e.g. 30s, 5m, 1h30m")]
pub struct DurationError {
    /// The text as written.
    pub text: String,
    /// humantime's reason.
    #[source]
    pub source: humantime::DurationError,
}

/// Parse a duration such as `30s`, `5m`, `1h`, `1h30m` or `2d`.
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    humantime::parse_duration(s.trim()).map_err(|source| DurationError {
        text: s.to_owned(),
        source,
    })
}

/// The machine's hostname: `/proc/sys/kernel/hostname`, else `/etc/hostname`, trimmed.
pub fn machine_hostname() -> Option<String> {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .map(|s| s.trim().to_owned())
        .find(|s| !s.is_empty())
}

/// Whether `repo:` names a local path rather than a URL (`scheme://…`) or an scp-like
/// `[user@]host:path`. As in git, a colon before the first slash makes it scp-like.
pub fn repo_is_local_path(repo: &str) -> bool {
    if repo.contains("://") {
        return false;
    }
    match (repo.find(':'), repo.find('/')) {
        (Some(colon), Some(slash)) => slash < colon,
        (Some(_), None) => false,
        (None, _) => true,
    }
}

/// Whether a `repo:` or `status_repo:` is reached over ssh: an `ssh://` URL (or git's
/// `git+ssh://`, `ssh+git://`) or an scp-like `[user@]host:path`.
pub fn repo_is_over_ssh(repo: &str) -> bool {
    repo.starts_with("ssh://")
        || repo.starts_with("git+ssh://")
        || repo.starts_with("ssh+git://")
        || (!repo.contains("://") && !repo_is_local_path(repo))
}

/// The URL schemes `status_repo:` may use (the `git` command pushes there: no `ext::` or
/// other remote helpers).
const STATUS_REPO_SCHEMES: &[&str] = &["file", "git", "http", "https", "ssh", "git+ssh", "ssh+git"];

/// `status_repo:`: a URL of a known scheme, an scp-like `[user@]host:path`, or a local path
/// (resolved against `base`, as `repo:` is).
fn check_status_repo(base: &Path, value: String) -> Result<String, (&'static str, String)> {
    let value = check_string("status_repo", value)?;
    if let Some((scheme, _)) = value.split_once("://") {
        if !STATUS_REPO_SCHEMES.contains(&scheme.to_ascii_lowercase().as_str()) {
            return Err((
                "status_repo",
                format!(
                    "URL scheme {scheme:?} is not one pacfleet pushes to; use one of {}",
                    STATUS_REPO_SCHEMES.join(", ")
                ),
            ));
        }
        return Ok(value);
    }
    if value.starts_with('-') || value.contains("::") {
        return Err((
            "status_repo",
            format!(
                "{value:?} is neither a URL, a user@host:path nor a path; write e.g. `status_repo: ssh://git@git.example.com/ops/status.git`"
            ),
        ));
    }
    if repo_is_local_path(&value) {
        return Ok(resolve(base, Path::new(&value))
            .to_string_lossy()
            .into_owned());
    }
    Ok(value)
}

/// `base.join(p)` for relative `p`, with `.` dropped and `..` folded lexically (so logs and
/// checks see `/srv/fleet`, not `/etc/pacfleet/../../srv/fleet`); absolute `p` is kept as
/// written.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        return p.to_path_buf();
    }
    let mut out = PathBuf::new();
    for c in base.join(p).components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir
                if matches!(out.components().next_back(), Some(Component::Normal(_))) =>
            {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}

/// Nearest valid field name to `field`, if any is reasonably close.
fn nearest_field(field: &str) -> Option<String> {
    let norm = field.trim().to_lowercase().replace('-', "_");
    if let Some(exact) = FIELDS.iter().find(|f| **f == norm) {
        return Some((*exact).to_owned());
    }
    let (best, dist) = FIELDS
        .iter()
        .map(|f| (*f, strsim::levenshtein(&norm, f)))
        .min_by_key(|(_, d)| *d)?;
    let limit = (best.len().max(norm.len()) / 3).max(2);
    (dist <= limit).then(|| best.to_owned())
}

/// `"unknown field `x`, expected …"` → `x`.
fn unknown_field_name(message: &str) -> Option<&str> {
    let rest = message.strip_prefix("unknown field `")?;
    rest.find('`').map(|end| &rest[..end])
}

impl AgentConfig {
    /// A config with every default applied (hostname as given, paths as given), for callers that
    /// build one in code rather than from a file.
    pub fn new(repo: impl Into<String>, hostname: impl Into<String>) -> AgentConfig {
        let root = PathBuf::from(DEFAULT_ROOT);
        AgentConfig {
            source: PathBuf::new(),
            repo: repo.into(),
            branch: DEFAULT_BRANCH.to_owned(),
            hostname: hostname.into(),
            dbpath: root.join(DEFAULT_DBPATH_IN_ROOT),
            root,
            pacman_conf: PathBuf::from(DEFAULT_PACMAN_CONF),
            state_dir: PathBuf::from(DEFAULT_STATE_DIR),
            trusted_keys: Vec::new(),
            threshold: DEFAULT_THRESHOLD,
            interval: DEFAULT_INTERVAL,
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            textfile: None,
            keyring_packages: DEFAULT_KEYRING_PACKAGES
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            fleet: None,
            max_pack_bytes: crate::source::DEFAULT_MAX_PACK_BYTES,
            host_key: Path::new(DEFAULT_CONFIG_PATH).with_file_name(DEFAULT_HOST_KEY_NAME),
            ssh: None,
            status_repo: None,
            status_timeout: DEFAULT_STATUS_TIMEOUT,
            prefetch: false,
            peers: None,
        }
    }

    /// The host's package system: root, dbpath and pacman.conf.
    pub fn host_paths(&self) -> HostPaths {
        HostPaths {
            root: self.root.clone(),
            dbpath: self.dbpath.clone(),
            pacman_conf: self.pacman_conf.clone(),
        }
    }

    /// Where the fetched fleet repository lives: `state_dir/fleet.git` (bare, no work tree).
    pub fn mirror_dir(&self) -> PathBuf {
        self.state_dir.join("fleet.git")
    }

    /// The host's copy of the status repository: `state_dir/status.git` (bare; its own
    /// report's commit before it is pushed, and the pools' reports fetched).
    pub fn status_dir(&self) -> PathBuf {
        self.state_dir.join("status.git")
    }

    /// Where the host remembers, beside its package database, the last state it applied
    /// (`dbpath/pacfleet.anchor`); it outlives a deleted or restored state directory, which is
    /// how those are noticed.
    pub fn anchor_path(&self) -> PathBuf {
        self.dbpath.join("pacfleet.anchor")
    }

    /// Read and check `path` (normally `/etc/pacfleet/agent.yaml`, or `--config`).
    pub fn load(path: impl AsRef<Path>) -> Result<AgentConfig, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_yaml(&text, path)
    }

    /// Parse config `text` as if read from `path`: errors name `path`, and relative paths in
    /// the text are resolved against `path`'s directory (made absolute from the current
    /// directory).
    pub fn from_yaml(text: &str, path: &Path) -> Result<AgentConfig, ConfigError> {
        let raw: RawConfig =
            serde_yaml::from_str(text).map_err(|e| Self::classify(e, text, path))?;
        let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let base = abs.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_raw(raw, text, path, &base)
    }

    fn from_raw(
        raw: RawConfig,
        text: &str,
        path: &Path,
        base: &Path,
    ) -> Result<AgentConfig, ConfigError> {
        let machine_hostname = match raw.hostname {
            Some(_) => None,
            None => Some(machine_hostname().ok_or_else(|| ConfigError::NoHostname {
                path: path.to_path_buf(),
            })?),
        };
        Self::check_raw(raw, machine_hostname, path, base).map_err(|(field, message)| {
            let loc = value_locations(text, field).first().copied();
            let (line, column) = (loc.map(|l| l.0), loc.map(|l| l.1));
            ConfigError::Invalid {
                path: path.to_path_buf(),
                line,
                column,
                field,
                message,
            }
        })
    }

    fn check_raw(
        raw: RawConfig,
        machine_hostname: Option<String>,
        path: &Path,
        base: &Path,
    ) -> Result<AgentConfig, (&'static str, String)> {
        let path_of = |field, value: Option<String>| -> Result<Option<PathBuf>, _> {
            value
                .map(|v| check_path(field, v).map(|p| resolve(base, &p)))
                .transpose()
        };
        let repo = check_string("repo", raw.repo)?;
        let repo = if repo_is_local_path(&repo) {
            resolve(base, Path::new(&repo))
                .to_string_lossy()
                .into_owned()
        } else {
            repo
        };
        let branch = match raw.branch {
            Some(b) => check_string("branch", b)?,
            None => DEFAULT_BRANCH.to_owned(),
        };
        let hostname = match raw.hostname {
            Some(h) => {
                let h = check_string("hostname", h)?;
                if h.chars().any(|c| c.is_whitespace() || c == '/') {
                    return Err(("hostname", format!("{h:?} contains whitespace or '/'")));
                }
                h
            }
            None => machine_hostname.unwrap_or_default(),
        };
        let root = path_of("root", raw.root)?.unwrap_or_else(|| PathBuf::from(DEFAULT_ROOT));
        let dbpath =
            path_of("dbpath", raw.dbpath)?.unwrap_or_else(|| root.join(DEFAULT_DBPATH_IN_ROOT));
        let pacman_conf = path_of("pacman_conf", raw.pacman_conf)?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_PACMAN_CONF));
        let state_dir = path_of("state_dir", raw.state_dir)?
            .unwrap_or_else(|| PathBuf::from(DEFAULT_STATE_DIR));
        let trusted_keys = raw
            .trusted_keys
            .unwrap_or_default()
            .into_iter()
            .map(|k| check_path("trusted_keys", k).map(|p| resolve(base, &p)))
            .collect::<Result<Vec<_>, _>>()?;
        let threshold = raw.threshold.unwrap_or(DEFAULT_THRESHOLD);
        if threshold == 0 {
            return Err((
                "threshold",
                "must be at least 1 (the number of distinct trusted keys that must sign a state)"
                    .to_owned(),
            ));
        }
        if !trusted_keys.is_empty() && threshold > trusted_keys.len() {
            return Err((
                "threshold",
                format!(
                    "{threshold} distinct signers required but only {} trusted key(s) listed; lower `threshold` or add keys to `trusted_keys`",
                    trusted_keys.len()
                ),
            ));
        }
        let interval = match raw.interval {
            Some(v) => check_duration("interval", v)?,
            None => DEFAULT_INTERVAL,
        };
        if interval.is_zero() {
            return Err(("interval", "must be longer than 0s".to_owned()));
        }
        let lock_timeout = match raw.lock_timeout {
            Some(v) => check_duration("lock_timeout", v)?,
            None => DEFAULT_LOCK_TIMEOUT,
        };
        let mut keyring_packages: Vec<String> = DEFAULT_KEYRING_PACKAGES
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        for name in raw.keyring_packages.unwrap_or_default() {
            if let Err(e) = crate::manifest::Name::new(&name) {
                return Err(("keyring_packages", e.to_string()));
            }
            if !keyring_packages.contains(&name) {
                keyring_packages.push(name);
            }
        }
        let fleet = match raw.fleet {
            Some(f) => {
                let f = check_string("fleet", f)?;
                crate::manifest::Name::new(&f).map_err(|e| ("fleet", e.to_string()))?;
                Some(f)
            }
            None => None,
        };
        let status_repo = match raw.status_repo {
            Some(r) => Some(check_status_repo(base, r)?),
            None => None,
        };
        let status_timeout = match raw.status_timeout {
            Some(v) => check_duration("status_timeout", v)?,
            None => DEFAULT_STATUS_TIMEOUT,
        };
        if status_timeout.is_zero() {
            return Err(("status_timeout", "must be longer than 0s".to_owned()));
        }
        let peers = raw.peers.map(check_peers).transpose()?;
        let ssh = Self::check_ssh(
            &repo,
            status_repo.as_deref(),
            path_of("ssh_key", raw.ssh_key)?,
            path_of("ssh_known_hosts", raw.ssh_known_hosts)?,
        )?;
        Ok(AgentConfig {
            source: path.to_path_buf(),
            repo,
            branch,
            hostname,
            root,
            dbpath,
            pacman_conf,
            state_dir,
            trusted_keys,
            threshold,
            interval,
            lock_timeout,
            textfile: path_of("textfile", raw.textfile)?,
            keyring_packages,
            fleet,
            max_pack_bytes: match raw.max_pack_size {
                Some(v) => check_size("max_pack_size", v)?,
                None => crate::source::DEFAULT_MAX_PACK_BYTES,
            },
            host_key: path_of("host_key", raw.host_key)?
                .unwrap_or_else(|| base.join(DEFAULT_HOST_KEY_NAME)),
            ssh,
            status_repo,
            status_timeout,
            prefetch: raw.prefetch.unwrap_or(false),
            peers,
        })
    }

    /// `ssh_key:` and `ssh_known_hosts:`: only when the fleet repository or the status
    /// repository is reached over ssh (elsewhere they would do nothing), and the known_hosts
    /// file only with a key.
    fn check_ssh(
        repo: &str,
        status_repo: Option<&str>,
        key: Option<PathBuf>,
        known_hosts: Option<PathBuf>,
    ) -> Result<Option<crate::source::SshIdentity>, (&'static str, String)> {
        let Some(key) = key else {
            return match known_hosts {
                Some(_) => Err((
                    "ssh_known_hosts",
                    "is used only with `ssh_key:`; add `ssh_key: /etc/pacfleet/ssh/id_ed25519` or remove it".to_owned(),
                )),
                None => Ok(None),
            };
        };
        if !repo_is_over_ssh(repo) && !status_repo.is_some_and(repo_is_over_ssh) {
            return Err((
                "ssh_key",
                format!(
                    "applies to a repository reached over ssh, but `repo:` is {}{}; use an ssh:// (or user@host:path) URL, or remove `ssh_key`",
                    crate::source::redact_url(repo),
                    status_repo
                        .map(|s| format!(" and `status_repo:` {}", crate::source::redact_url(s)))
                        .unwrap_or_default()
                ),
            ));
        }
        let known_hosts = known_hosts.unwrap_or_else(|| key.with_file_name("known_hosts"));
        Ok(Some(crate::source::SshIdentity { key, known_hosts }))
    }

    fn classify(e: serde_yaml::Error, text: &str, path: &Path) -> ConfigError {
        let path = path.to_path_buf();
        let loc = e.location();
        let mut line = loc.as_ref().map(|l| l.line());
        let mut column = loc.as_ref().map(|l| l.column());
        let mut message = e.to_string();
        if let (Some(l), Some(c)) = (line, column)
            && let Some(m) = message.strip_suffix(&format!(" at line {l} column {c}"))
        {
            message = m.to_owned();
        }
        if let Some(field) = unknown_field_name(&message) {
            return ConfigError::UnknownField {
                nearest: nearest_field(field),
                field: field.to_owned(),
                path,
                line,
                column,
            };
        }
        if let Some(field) = message
            .strip_prefix("duplicate field `")
            .and_then(|r| r.split('`').next())
            && let Some(&(l, c)) = value_locations(text, field).get(1)
        {
            (line, column) = (Some(l), Some(c));
            message = format!("`{field}` is given twice; keep one");
        }
        let empty_document = matches!(
            serde_yaml::from_str::<serde_yaml::Value>(text),
            Ok(serde_yaml::Value::Null)
        );
        if message.starts_with("missing field `repo`") || empty_document {
            return ConfigError::MissingRepo { path };
        }
        // serde's Rust type names mean nothing to someone editing YAML.
        let message = message
            .replace("expected usize", "expected a whole number, e.g. 2")
            .replace("expected u64", "expected a whole number");
        ConfigError::Parse {
            path,
            line,
            column,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("agent.yaml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn load(text: &str) -> (tempfile::TempDir, Result<AgentConfig, ConfigError>) {
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), text);
        let r = AgentConfig::load(&p);
        (dir, r)
    }

    #[test]
    fn defaults() {
        let (_d, r) = load("repo: https://git.example.com/ops/fleet.git\nhostname: ws-01\n");
        let c = r.unwrap();
        assert_eq!(c.repo, "https://git.example.com/ops/fleet.git");
        assert_eq!(c.branch, "main");
        assert_eq!(c.hostname, "ws-01");
        assert_eq!(c.root, PathBuf::from("/"));
        assert_eq!(c.dbpath, PathBuf::from("/var/lib/pacman"));
        assert_eq!(c.pacman_conf, PathBuf::from("/etc/pacman.conf"));
        assert_eq!(c.state_dir, PathBuf::from("/var/lib/pacfleet"));
        assert!(c.trusted_keys.is_empty());
        assert_eq!(c.threshold, 1);
        assert_eq!(c.interval, Duration::from_secs(300));
        assert_eq!(c.lock_timeout, Duration::from_secs(60));
        assert_eq!(c.textfile, None);
        let mut expected = AgentConfig::new("https://git.example.com/ops/fleet.git", "ws-01");
        expected.source = c.source.clone();
        expected.host_key = c.source.with_file_name("host.key");
        assert_eq!(c, expected);
    }

    #[test]
    fn hostname_defaults_to_machine() {
        let (_d, r) = load("repo: git@example.com:ops/fleet.git\n");
        match machine_hostname() {
            Some(h) => assert_eq!(r.unwrap().hostname, h),
            None => assert!(matches!(r, Err(ConfigError::NoHostname { .. }))),
        }
    }

    #[test]
    fn ssh_known_hosts_defaults_beside_the_key_and_scp_urls_count_as_ssh() {
        let (_d, r) = load("repo: git@git.example.com:ops/fleet.git\nssh_key: /k/ssh/id\n");
        assert_eq!(
            r.unwrap().ssh.unwrap().known_hosts,
            PathBuf::from("/k/ssh/known_hosts")
        );
    }

    #[test]
    fn every_field_parses() {
        let (d, r) = load(
            "repo: ssh://git@git.example.com/ops/fleet.git\nbranch: prod\nhostname: ws-01\nroot: /mnt\ndbpath: /mnt/db\n\
             pacman_conf: /mnt/pacman.conf\nstate_dir: /mnt/state\n\
             trusted_keys: [/k/a.pub, /k/b.pub]\nthreshold: 2\ninterval: 1h30m\n\
             lock_timeout: 30s\ntextfile: /metrics/pacfleet.prom\n\
             keyring_packages: [acme-keyring]\nfleet: acme\nmax_pack_size: 64MiB\n\
             host_key: /k/host.key\nssh_key: /k/ssh/id_ed25519\n\
             ssh_known_hosts: /k/ssh/hosts\n\
             status_repo: ssh://git@git.example.com/ops/status.git\nstatus_timeout: 45s\n\
             peers: {listen: 0.0.0.0:7878}\nprefetch: true\n",
        );
        let c = r.unwrap();
        assert_eq!(c.source, d.path().join("agent.yaml"));
        assert_eq!(c.repo, "ssh://git@git.example.com/ops/fleet.git");
        assert_eq!(c.branch, "prod");
        assert_eq!(c.root, PathBuf::from("/mnt"));
        assert_eq!(c.dbpath, PathBuf::from("/mnt/db"));
        assert_eq!(c.pacman_conf, PathBuf::from("/mnt/pacman.conf"));
        assert_eq!(c.state_dir, PathBuf::from("/mnt/state"));
        assert_eq!(
            c.trusted_keys,
            vec![PathBuf::from("/k/a.pub"), "/k/b.pub".into()]
        );
        assert_eq!(c.threshold, 2);
        assert_eq!(c.interval, Duration::from_secs(5400));
        assert_eq!(c.lock_timeout, Duration::from_secs(30));
        assert_eq!(c.textfile, Some(PathBuf::from("/metrics/pacfleet.prom")));
        assert_eq!(c.keyring_packages, ["archlinux-keyring", "acme-keyring"]);
        assert_eq!(c.fleet.as_deref(), Some("acme"));
        assert_eq!(c.max_pack_bytes, 64 << 20);
        assert_eq!(c.host_key, PathBuf::from("/k/host.key"));
        assert_eq!(
            c.ssh,
            Some(crate::source::SshIdentity {
                key: "/k/ssh/id_ed25519".into(),
                known_hosts: "/k/ssh/hosts".into()
            })
        );
        assert_eq!(
            c.status_repo.as_deref(),
            Some("ssh://git@git.example.com/ops/status.git")
        );
        assert_eq!(c.status_timeout, Duration::from_secs(45));
        assert_eq!(c.status_dir(), PathBuf::from("/mnt/state/status.git"));
        assert_eq!(
            c.peers,
            Some(PeersConfig {
                listen: Some("0.0.0.0:7878".parse().unwrap()),
                static_peers: Vec::new(),
                discover: None,
            })
        );
        assert!(c.prefetch);
        // FIELDS lists exactly what the struct accepts.
        let text = std::fs::read_to_string(&c.source).unwrap();
        let keys: Vec<&str> = text.lines().map(|l| l.split(':').next().unwrap()).collect();
        assert_eq!(keys, FIELDS);
    }

    #[test]
    fn status_repo_is_optional_and_checked() {
        let (_d, r) = load("repo: /f\nhostname: h\n");
        let c = r.unwrap();
        assert_eq!(c.status_repo, None);
        assert_eq!(c.status_timeout, DEFAULT_STATUS_TIMEOUT);

        // A local path is taken from the config's directory, as `repo:` is.
        let (d, r) = load("repo: /f\nhostname: h\nstatus_repo: ../status.git\n");
        let beside = d.path().parent().unwrap().join("status.git");
        assert_eq!(r.unwrap().status_repo.as_deref(), beside.to_str());
        for url in [
            "https://git.example.com/ops/status.git",
            "git://git.example.com/status",
            "file:///srv/status.git",
            "git@git.example.com:ops/status.git",
        ] {
            let (_d, r) = load(&format!("repo: /f\nhostname: h\nstatus_repo: {url}\n"));
            assert_eq!(r.unwrap().status_repo.as_deref(), Some(url));
        }

        let invalid = |text: &str| match load(text).1 {
            Err(ConfigError::Invalid { field, message, .. }) => (field, message),
            other => panic!("{text:?}: {other:?}"),
        };
        let (field, message) = invalid("repo: /f\nhostname: h\nstatus_repo: ext::sh -c x\n");
        assert_eq!(field, "status_repo");
        assert!(message.contains("neither a URL"), "{message}");
        let (field, message) =
            invalid("repo: /f\nhostname: h\nstatus_repo: gopher://example.com/s\n");
        assert_eq!(field, "status_repo");
        assert!(
            message.contains("\"gopher\"") && message.contains("https"),
            "{message}"
        );
        let (field, _) = invalid("repo: /f\nhostname: h\nstatus_repo: ''\n");
        assert_eq!(field, "status_repo");
        let (field, message) = invalid("repo: /f\nhostname: h\nstatus_timeout: 0s\n");
        assert_eq!(field, "status_timeout");
        assert!(message.contains("longer than 0s"), "{message}");
        let (field, message) = invalid("repo: /f\nhostname: h\nstatus_timeout: 20\n");
        assert_eq!(field, "status_timeout");
        assert!(message.contains("no unit"), "{message}");
    }

    #[test]
    fn peers_listen_static_and_discover_parse_and_the_unbuilt_peer_fields_are_refused() {
        let (_d, r) = load("repo: /f\nhostname: h\npeers:\n  listen: '[::1]:7878'\n");
        assert_eq!(
            r.unwrap().peers.unwrap().listen,
            Some("[::1]:7878".parse().unwrap())
        );
        let (_d, r) = load(
            "repo: /f\nhostname: h\npeers:\n  static: [http://10.0.0.5:7878/, 'https://[::1]:7878/c', http://10.0.0.5:7878]\n",
        );
        assert_eq!(
            r.unwrap().peers.unwrap(),
            PeersConfig {
                listen: None,
                static_peers: vec![
                    "http://10.0.0.5:7878".to_owned(),
                    "https://[::1]:7878/c".to_owned()
                ],
                discover: None,
            }
        );
        let (_d, r) =
            load("repo: /f\nhostname: h\npeers: {listen: 0.0.0.0:7878, discover: mdns}\n");
        let peers = r.unwrap().peers.unwrap();
        assert_eq!(peers.discover, Some(Discover::Mdns));
        assert_eq!(peers.listen, Some("0.0.0.0:7878".parse().unwrap()));
        // Discovery alone (a host that asks peers but serves nothing) is enough.
        let (_d, r) = load("repo: /f\nhostname: h\npeers: {discover: mdns}\n");
        assert_eq!(
            r.unwrap().peers.unwrap(),
            PeersConfig {
                listen: None,
                static_peers: Vec::new(),
                discover: Some(Discover::Mdns),
            }
        );
        let seventeen = (0..17)
            .map(|i| format!("http://10.0.0.{i}:7878"))
            .collect::<Vec<_>>()
            .join(", ");
        let seventeen = format!("peers: {{static: [{seventeen}]}}");
        let (_d, r) = load("repo: /f\nhostname: h\n");
        assert_eq!(r.unwrap().peers, None);
        for (text, wanted) in [
            ("peers: {listen: 7878}", "is an address and port"),
            (
                "peers: {listen: localhost:7878}",
                "\"localhost:7878\" is not an address",
            ),
            ("peers: {listen: 0.0.0.0}", "is not an address"),
            (
                "peers: {}",
                "`peers` needs `listen`, a non-empty `static` or `discover: mdns`",
            ),
            (
                "peers: {static: []}",
                "needs `listen`, a non-empty `static` or `discover: mdns`",
            ),
            (
                "peers: {static: [file:///x]}",
                "`peers.static` entry \"file:///x\" is not an http:// or https:// URL",
            ),
            (
                "peers: {static: [not a url]}",
                "`peers.static` entry \"not a url\" is not an http",
            ),
            ("peers: {static: ['http://']}", "has no host"),
            ("peers: {static: ['http://u:p@h:1']}", "has credentials"),
            ("peers: {static: ['http://h:1/?x']}", "not a plain base URL"),
            (
                "peers: {static: http://h:1}",
                "`peers.static` is a list of URLs",
            ),
            (
                "peers: {static: [1]}",
                "`peers.static` entry 1 is not a URL",
            ),
            (seventeen.as_str(), "has 17 entries, at most 16"),
            ("peers: 0.0.0.0:7878", "expected a mapping"),
            (
                "peers: {listen: 0.0.0.0:7878, port: 1}",
                "unknown field `peers.port`",
            ),
            (
                "peers: {listen: 0.0.0.0:7878, discover: foo}",
                "`peers.discover` takes `mdns` (peers found by multicast DNS, the only discovery there is), found foo; write `discover: mdns` or remove it",
            ),
            (
                "peers: {listen: 0.0.0.0:7878, discover: true}",
                "`peers.discover` takes `mdns`",
            ),
            ("peers: {discover: [mdns]}", "`peers.discover` takes `mdns`"),
            (
                "peers: {prefetch: true}",
                "`prefetch` is a field of agent.yaml itself",
            ),
        ] {
            let (d, r) = load(&format!("repo: /f\nhostname: h\n{text}\n"));
            let e = r.unwrap_err();
            assert!(
                matches!(e, ConfigError::Invalid { field: "peers", .. }),
                "{text}: {e:?}"
            );
            let shown = e.to_string();
            let file = d.path().join("agent.yaml").display().to_string();
            assert!(shown.starts_with(&format!("{file}:3:")), "{shown}");
            assert!(
                shown.contains("`peers`") && shown.contains(wanted),
                "{text}: {shown}"
            );
        }
    }

    #[test]
    fn ssh_key_serves_a_status_repo_over_ssh_too() {
        let (_d, r) = load(
            "repo: https://git.example.com/ops/fleet.git\nhostname: h\n\
             status_repo: ssh://git@git.example.com/ops/status.git\nssh_key: /k/id\n",
        );
        assert_eq!(r.unwrap().ssh.unwrap().key, PathBuf::from("/k/id"));
        // Neither over ssh: refused, naming both.
        let (_d, r) = load(
            "repo: https://git.example.com/ops/fleet.git\nhostname: h\n\
             status_repo: https://git.example.com/ops/status.git\nssh_key: /k/id\n",
        );
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Invalid {
                    field: "ssh_key",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("`status_repo:`"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("256MiB"), Ok(256 << 20));
        assert_eq!(parse_size("1GiB"), Ok(1 << 30));
        assert_eq!(parse_size("4096"), Ok(4096));
        for bad in ["", "12", "1MB", "MiB", "-1MiB", "99999999999999GiB"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse_duration("1h").unwrap(), Duration::from_secs(3600));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert!(matches!(
            parse_duration("5 parsecs"),
            Err(DurationError { text, source: humantime::DurationError::UnknownUnit { .. } }) if text == "5 parsecs"
        ));
        assert_eq!(
            parse_duration("").map_err(|e| e.source),
            Err(humantime::DurationError::Empty)
        );
    }

    #[test]
    fn relative_paths_resolve_against_config_dir() {
        let (d, r) = load(
            "repo: ../fleet\nhostname: ws-01\nroot: root\nstate_dir: ./state\n\
             trusted_keys: [keys/ops.pub]\npacman_conf: root/etc/pacman.conf\ntextfile: m.prom\n",
        );
        let c = r.unwrap();
        let base = d.path();
        // `..` is folded: the repo sits beside the config's directory.
        let beside = base.parent().unwrap().join("fleet");
        assert_eq!(c.repo, beside.to_string_lossy());
        assert_eq!(c.root, base.join("root"));
        assert_eq!(c.dbpath, base.join("root/var/lib/pacman"));
        assert_eq!(c.state_dir, base.join("state"));
        assert_eq!(c.pacman_conf, base.join("root/etc/pacman.conf"));
        assert_eq!(c.trusted_keys, vec![base.join("keys/ops.pub")]);
        assert_eq!(c.textfile, Some(base.join("m.prom")));
    }

    #[test]
    fn relative_config_path_gives_absolute_paths() {
        let c = AgentConfig::from_yaml(
            "repo: fleet\nhostname: h\nroot: root\n",
            Path::new("hosts/ws-01/agent.yaml"),
        )
        .unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(c.root, cwd.join("hosts/ws-01/root"));
        assert_eq!(c.repo, cwd.join("hosts/ws-01/fleet").to_string_lossy());
        assert_eq!(c.source, PathBuf::from("hosts/ws-01/agent.yaml"));
    }

    #[test]
    fn repo_kinds() {
        assert!(!repo_is_local_path("https://git.example.com/ops/fleet.git"));
        assert!(!repo_is_local_path("file:///srv/fleet"));
        assert!(!repo_is_local_path("git@git.example.com:ops/fleet.git"));
        assert!(!repo_is_local_path("host:fleet"));
        assert!(repo_is_local_path("/srv/fleet"));
        assert!(repo_is_local_path("../fleet"));
        assert!(repo_is_local_path("fleet"));
        assert!(repo_is_local_path("./odd:name"));
        let (_d, r) = load("repo: git@example.com:ops/fleet.git\nhostname: h\n");
        assert_eq!(r.unwrap().repo, "git@example.com:ops/fleet.git");
    }

    #[test]
    fn unknown_field_names_nearest_and_lists_valid() {
        let (_d, r) = load("repo: /srv/fleet\nhostname: h\nintervall: 5m\n");
        let e = r.unwrap_err();
        match &e {
            ConfigError::UnknownField {
                field,
                nearest,
                line,
                column,
                ..
            } => {
                assert_eq!(field, "intervall");
                assert_eq!(nearest.as_deref(), Some("interval"));
                assert_eq!(*line, Some(3));
                assert_eq!(*column, Some(1));
            }
            other => panic!("unexpected {other:?}"),
        }
        let msg = e.to_string();
        assert!(msg.contains("agent.yaml:3:1"), "{msg}");
        assert!(msg.contains("did you mean `interval`?"), "{msg}");
        assert!(msg.contains("repo, branch, hostname"), "{msg}");

        let (_d, r) = load("repo: /srv/fleet\nhostname: h\nstate-dir: /x\n");
        match r.unwrap_err() {
            ConfigError::UnknownField { nearest, .. } => {
                assert_eq!(nearest.as_deref(), Some("state_dir"))
            }
            other => panic!("unexpected {other:?}"),
        }
        let (_d, r) = load("repo: /srv/fleet\nhostname: h\nzzzzzzzzzzzzzzzz: 1\n");
        match r.unwrap_err() {
            ConfigError::UnknownField { nearest, .. } => assert_eq!(nearest, None),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn missing_repo() {
        for text in ["hostname: h\n", "", "# only a comment\n"] {
            let (_d, r) = load(text);
            let e = r.unwrap_err();
            assert!(
                matches!(e, ConfigError::MissingRepo { .. }),
                "{text:?}: {e:?}"
            );
            let msg = e.to_string();
            assert!(msg.contains("agent.yaml"), "{msg}");
            assert!(msg.contains("`repo` is required"), "{msg}");
            assert!(msg.contains(REPO_EXAMPLE), "{msg}");
        }
    }

    #[test]
    fn unreadable_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("nope.yaml");
        let e = AgentConfig::load(&p).unwrap_err();
        assert!(
            matches!(&e, ConfigError::Read { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
        );
        let msg = e.to_string();
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(msg.contains("--config"), "{msg}");
    }

    #[test]
    fn invalid_values_name_field_and_location() {
        let cases = [
            (
                "repo: /f\nhostname: h\nthreshold: 0\n",
                "threshold",
                3,
                12,
                "at least 1",
            ),
            (
                "repo: /f\nhostname: h\ninterval: soon\n",
                "interval",
                3,
                11,
                "invalid duration",
            ),
            (
                "repo: /f\nhostname: h\ninterval: 300\n",
                "interval",
                3,
                11,
                "no unit",
            ),
            (
                "repo: /f\nhostname: h\ninterval: 0s\n",
                "interval",
                3,
                11,
                "longer than 0s",
            ),
            (
                "repo: /f\nhostname: h\ninterval: [1]\n",
                "interval",
                3,
                11,
                "expected a duration",
            ),
            (
                "repo: /f\nhostname: h\nlock_timeout: x\n",
                "lock_timeout",
                3,
                15,
                "invalid duration",
            ),
            (
                "repo: /f\nhostname: h\nstate_dir:   ~/s\n",
                "state_dir",
                3,
                14,
                "'~'",
            ),
            (
                "repo: /f\nhostname: h\ntrusted_keys:\n  - ''\n",
                "trusted_keys",
                3,
                13,
                "empty",
            ),
            ("repo: ''\nhostname: h\n", "repo", 1, 7, "must not be empty"),
            (
                "repo: /f\nhostname: h\nbranch: ' '\n",
                "branch",
                3,
                9,
                "must not be empty",
            ),
            ("repo: /f\nhostname: a b\n", "hostname", 2, 11, "whitespace"),
        ];
        for (text, want_field, want_line, want_col, want_msg) in cases {
            let (_d, r) = load(text);
            let e = r.unwrap_err();
            let ConfigError::Invalid {
                field,
                line,
                column,
                message,
                ..
            } = &e
            else {
                panic!("{text:?}: unexpected {e:?}");
            };
            assert_eq!(*field, want_field, "{text:?}: {e}");
            assert_eq!(
                (*line, *column),
                (Some(want_line), Some(want_col)),
                "{text:?}: {e}"
            );
            assert!(message.contains(want_msg), "{text:?}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains(&format!(
                    "agent.yaml:{want_line}:{want_col}: `{want_field}`"
                )),
                "{msg}"
            );
        }
    }

    #[test]
    fn yaml_errors_have_locations() {
        let cases = [
            ("repo: /f\nhostname: h\nthreshold: [1]\n", 3, "invalid type"),
            (
                "repo: /f\nhostname: h\nthreshold: -1\n",
                3,
                "expected a whole number, e.g. 2",
            ),
            ("repo: /f\nhostname: h\n  bad: indent\n", 3, ""),
            ("repo: /f\nrepo: /g\n", 2, "given twice"),
            ("- repo: /f\n", 1, "invalid type"),
        ];
        for (text, want_line, want_msg) in cases {
            let (_d, r) = load(text);
            let e = r.unwrap_err();
            let ConfigError::Parse { line, message, .. } = &e else {
                panic!("{text:?}: unexpected {e:?}");
            };
            assert_eq!(*line, Some(want_line), "{text:?}: {e}");
            assert!(message.contains(want_msg), "{text:?}: {e}");
            assert!(
                e.to_string().contains(&format!("agent.yaml:{want_line}:")),
                "{e}"
            );
        }
    }

    #[test]
    fn threshold_above_key_count() {
        let (_d, r) = load("repo: /f\nhostname: h\ntrusted_keys: [/a.pub]\nthreshold: 2\n");
        let e = r.unwrap_err();
        assert!(
            matches!(
                e,
                ConfigError::Invalid {
                    field: "threshold",
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("only 1 trusted key"), "{e}");
        assert!(
            e.to_string().contains("agent.yaml:4:12: `threshold`"),
            "{e}"
        );
    }
}
