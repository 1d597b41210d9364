//! Enrolling a new host (`fleetctl enroll`): everything between "a machine with pacfleet
//! installed" and "a host whose next pass applies the fleet's state".
//!
//! This module owns the order of that work and its guarantees: the trusted keys are read
//! first; the agent.yaml to write is rendered and checked by the same parser every pass uses
//! ([`AgentConfig::from_yaml`]); a different existing agent.yaml is refused unless forced; the
//! repository is fetched into the state directory's mirror and its branch put through the
//! pass's own trust selection ([`reconcile::check_trust`]); only then are the host key pair
//! (never overwritten) and agent.yaml (atomically, 0644) written. Running it again with the
//! same arguments writes nothing. Printing is the command line's business
//! (`src/cli/enroll.rs`).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::config::{AgentConfig, ConfigError, DEFAULT_BRANCH};
use crate::reconcile::{self, PassError, TrustCheck};
use crate::trust::{self, KeyError};

/// What to enroll: the command's arguments.
#[derive(Debug, Clone)]
pub struct EnrollOptions {
    /// The agent.yaml to write.
    pub config: PathBuf,
    /// The fleet repository (URL or local path; a relative path is taken from the current
    /// directory).
    pub repo: String,
    /// The branch to follow (default `main`).
    pub branch: Option<String>,
    /// The trusted public key files.
    pub keys: Vec<PathBuf>,
    /// `fleet:`.
    pub fleet: Option<String>,
    /// `hostname:` (default: the machine's hostname).
    pub hostname: Option<String>,
    /// `root:`, written only when given.
    pub root: Option<PathBuf>,
    /// `dbpath:`, written only when given.
    pub dbpath: Option<PathBuf>,
    /// `pacman_conf:`, written only when given.
    pub pacman_conf: Option<PathBuf>,
    /// `state_dir:`, written only when given.
    pub state_dir: Option<PathBuf>,
    /// `ssh_key:`, written only when given.
    pub ssh_key: Option<PathBuf>,
    /// `ssh_known_hosts:`, written only when given.
    pub ssh_known_hosts: Option<PathBuf>,
    /// `status_repo:` (the status repository the host's reports go to), written only when
    /// given.
    pub status_repo: Option<String>,
    /// Replace a different existing agent.yaml.
    pub force: bool,
}

/// What enrolling did.
#[derive(Debug, Clone)]
pub struct Enrolled {
    /// The agent.yaml, as loaded back.
    pub config: AgentConfig,
    /// Whether agent.yaml was written (false: it already had exactly these bytes).
    pub config_written: bool,
    /// Whether the host key pair was made now (false: the existing one was kept).
    pub host_key_created: bool,
    /// The host's public key file.
    pub host_pub: PathBuf,
    /// The host's public key, as the base64 line of its `.pub` file.
    pub host_public_key: String,
    /// What the trust check accepted.
    pub trust: TrustCheck,
    /// `hosts/<hostname>.yaml` to commit into the fleet repository.
    pub host_manifest: String,
}

/// Why enrolling failed. Nothing is written unless the error says so.
#[derive(Debug, thiserror::Error)]
pub enum EnrollError {
    /// A `--key` file is not a usable public key.
    #[error("--key: {0}")]
    Key(#[from] KeyError),
    /// No key was given.
    #[error(
        "no trusted key given: a host applies only states signed by keys it trusts; pass the fleet's public key(s) with --key PUB"
    )]
    NoKeys,
    /// A path given cannot be made absolute.
    #[error("cannot make {} absolute: {source}", path.display())]
    Path {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// No `--hostname` and the machine's cannot be read.
    #[error(
        "the machine's hostname could not be read from /proc/sys/kernel/hostname or /etc/hostname; pass --hostname NAME"
    )]
    NoHostname,
    /// The hostname cannot name a Host manifest.
    #[error(
        "hostname {hostname:?} cannot name the host's manifest hosts/{hostname}.yaml: {source}; pass --hostname NAME"
    )]
    Hostname {
        hostname: String,
        #[source]
        source: crate::manifest::NameError,
    },
    /// The agent.yaml these arguments make does not load.
    #[error("the arguments do not make a valid agent.yaml: {0}")]
    Config(#[source] ConfigError),
    /// Rendering agent.yaml failed.
    #[error("cannot render agent.yaml: {0}")]
    Render(String),
    /// A different agent.yaml is already there.
    #[error(
        "{} already exists and differs from what these arguments make ({}); nothing was changed: pass --force to replace it (the host key is kept either way)",
        path.display(),
        fields.join(", ")
    )]
    Differs { path: PathBuf, fields: Vec<String> },
    /// The repository cannot be fetched, or the state directory used.
    #[error("cannot check the fleet repository {url}: {source}")]
    Fetch {
        url: String,
        #[source]
        source: Box<PassError>,
    },
    /// Nothing on the branch is signed by the given keys.
    #[error(
        "refusing to enroll: nothing on branch {branch} of {url} is acceptable to the given keys: {refusal}; nothing was written. Sign the branch's tip (`fleetctl sign`) or pass the fleet's public key(s) with --key"
    )]
    Refused {
        url: String,
        branch: String,
        refusal: String,
    },
    /// Reading or writing the host key failed.
    #[error("host key {}: {detail}", path.display())]
    HostKey { path: PathBuf, detail: String },
    /// Reading the existing agent.yaml failed.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Writing agent.yaml failed.
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: crate::state::StateError,
    },
}

impl EnrollError {
    /// The exit status: refused when the repository's target is not signed by the given
    /// keys, else an error.
    pub fn exit(&self) -> crate::reconcile::Exit {
        match self {
            EnrollError::Refused { .. } => crate::reconcile::Exit::Refused,
            _ => crate::reconcile::Exit::Error,
        }
    }
}

fn absolute(path: &Path) -> Result<PathBuf, EnrollError> {
    std::path::absolute(path).map_err(|source| EnrollError::Path {
        path: path.to_path_buf(),
        source,
    })
}

/// The host's public key file beside its secret key: `host.key` → `host.pub`.
pub fn public_key_path(host_key: &Path) -> PathBuf {
    host_key.with_extension("pub")
}

/// The agent.yaml text `opts` make, with every path absolute (relative ones are taken from
/// the current directory, as the user typed them), fields in agent.yaml's documented order.
pub fn render_config(opts: &EnrollOptions, hostname: &str) -> Result<String, EnrollError> {
    use serde_yaml::Value;
    let path_value = |p: &Path| -> Result<Value, EnrollError> {
        Ok(Value::String(absolute(p)?.to_string_lossy().into_owned()))
    };
    let mut map = serde_yaml::Mapping::new();
    let mut put = |k: &str, v: Value| {
        map.insert(Value::String(k.to_owned()), v);
    };
    let repo = if crate::config::repo_is_local_path(&opts.repo) {
        absolute(Path::new(&opts.repo))?
            .to_string_lossy()
            .into_owned()
    } else {
        opts.repo.clone()
    };
    put("repo", Value::String(repo));
    put(
        "branch",
        Value::String(
            opts.branch
                .clone()
                .unwrap_or_else(|| DEFAULT_BRANCH.to_owned()),
        ),
    );
    put("hostname", Value::String(hostname.to_owned()));
    for (field, value) in [
        ("root", &opts.root),
        ("dbpath", &opts.dbpath),
        ("pacman_conf", &opts.pacman_conf),
        ("state_dir", &opts.state_dir),
        ("ssh_key", &opts.ssh_key),
        ("ssh_known_hosts", &opts.ssh_known_hosts),
    ] {
        if let Some(p) = value {
            put(field, path_value(p)?);
        }
    }
    let keys = opts
        .keys
        .iter()
        .map(|k| path_value(k))
        .collect::<Result<Vec<_>, _>>()?;
    put("trusted_keys", Value::Sequence(keys));
    if let Some(f) = &opts.fleet {
        put("fleet", Value::String(f.clone()));
    }
    if let Some(url) = &opts.status_repo {
        put("status_repo", Value::String(url.clone()));
    }
    let body = serde_yaml::to_string(&Value::Mapping(map))
        .map_err(|e| EnrollError::Render(e.to_string()))?;
    Ok(format!(
        "# pacfleet host configuration, written by `fleetctl enroll` (README.md, \"A host\").\n{body}"
    ))
}

/// Each agent.yaml field with its effective value, for naming what differs.
fn field_values(c: &AgentConfig) -> Vec<(&'static str, String)> {
    vec![
        ("repo", c.repo.clone()),
        ("branch", c.branch.clone()),
        ("hostname", c.hostname.clone()),
        ("root", format!("{:?}", c.root)),
        ("dbpath", format!("{:?}", c.dbpath)),
        ("pacman_conf", format!("{:?}", c.pacman_conf)),
        ("state_dir", format!("{:?}", c.state_dir)),
        ("trusted_keys", format!("{:?}", c.trusted_keys)),
        ("threshold", c.threshold.to_string()),
        ("interval", format!("{:?}", c.interval)),
        ("lock_timeout", format!("{:?}", c.lock_timeout)),
        ("textfile", format!("{:?}", c.textfile)),
        ("keyring_packages", format!("{:?}", c.keyring_packages)),
        ("fleet", format!("{:?}", c.fleet)),
        ("host_key", format!("{:?}", c.host_key)),
        ("ssh_key", format!("{:?}", c.ssh.as_ref().map(|s| &s.key))),
        (
            "ssh_known_hosts",
            format!("{:?}", c.ssh.as_ref().map(|s| &s.known_hosts)),
        ),
        ("status_repo", format!("{:?}", c.status_repo)),
        ("status_timeout", format!("{:?}", c.status_timeout)),
    ]
}

/// The fields whose values differ between the existing agent.yaml text and the new config.
fn differing_fields(existing: &str, path: &Path, new: &AgentConfig) -> Vec<String> {
    match AgentConfig::from_yaml(existing, path) {
        Ok(old) => {
            let fields: Vec<String> = field_values(&old)
                .into_iter()
                .zip(field_values(new))
                .filter(|(a, b)| a.1 != b.1)
                .map(|(a, _)| format!("`{}`", a.0))
                .collect();
            if fields.is_empty() {
                // Same values, other bytes (comments, order, defaults written out).
                vec!["the same values written differently".to_owned()]
            } else {
                fields
            }
        }
        Err(e) => vec![format!("the existing file does not load: {e}")],
    }
}

/// Enrolls this host: see the module documentation for the order and the guarantees.
pub fn enroll(opts: &EnrollOptions) -> Result<Enrolled, EnrollError> {
    // 1. The keys, each named in its error.
    if opts.keys.is_empty() {
        return Err(EnrollError::NoKeys);
    }
    for k in &opts.keys {
        trust::load_key(k)?;
    }
    // 2. agent.yaml, checked by the parser every pass uses.
    let hostname = match &opts.hostname {
        Some(h) => h.clone(),
        None => crate::config::machine_hostname().ok_or(EnrollError::NoHostname)?,
    };
    crate::manifest::Name::new(&hostname).map_err(|source| EnrollError::Hostname {
        hostname: hostname.clone(),
        source,
    })?;
    let config_path = absolute(&opts.config)?;
    let text = render_config(opts, &hostname)?;
    let cfg = AgentConfig::from_yaml(&text, &config_path).map_err(EnrollError::Config)?;
    // 3. What is there already.
    let existing = match std::fs::read(&config_path) {
        Ok(bytes) => Some(bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(EnrollError::Read {
                path: config_path,
                source,
            });
        }
    };
    let unchanged = existing.as_deref() == Some(text.as_bytes());
    if let Some(old) = &existing
        && !unchanged
        && !opts.force
    {
        return Err(EnrollError::Differs {
            fields: differing_fields(&String::from_utf8_lossy(old), &config_path, &cfg),
            path: config_path,
        });
    }
    // 4. The repository: reachable, and its branch signed by the given keys.
    let trust = reconcile::check_trust(&cfg).map_err(|e| match e {
        PassError::Refused(r) => EnrollError::Refused {
            url: crate::source::redact_url(&cfg.repo),
            branch: cfg.branch.clone(),
            refusal: r.to_string(),
        },
        other => EnrollError::Fetch {
            url: crate::source::redact_url(&cfg.repo),
            source: Box::new(other),
        },
    })?;
    // 5. The host key pair (kept when there), then agent.yaml.
    let (host_public_key, host_key_created) = host_key(&cfg.host_key)?;
    let config_written = !unchanged;
    if config_written {
        ensure_dir(&config_path)?;
        crate::state::write_atomic_mode(&config_path, text.as_bytes(), 0o644).map_err(
            |source| EnrollError::Write {
                path: config_path.clone(),
                source,
            },
        )?;
    }
    let host_manifest = format!(
        "kind: Host\nname: {}\nkey: {host_public_key}\n",
        serde_yaml::to_string(&hostname)
            .map_err(|e| EnrollError::Render(e.to_string()))?
            .trim_end()
    );
    Ok(Enrolled {
        host_pub: public_key_path(&cfg.host_key),
        config: cfg,
        config_written,
        host_key_created,
        host_public_key,
        trust,
        host_manifest,
    })
}

/// Creates `path`'s directory, 0700, if it is missing.
fn ensure_dir(path: &Path) -> Result<(), EnrollError> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| EnrollError::HostKey {
                path: dir.to_path_buf(),
                detail: format!("cannot create the directory: {e}"),
            })?;
    }
    Ok(())
}

/// The host's public key (base64), making the pair when there is none. An existing secret key
/// is never overwritten; a missing `.pub` beside it is derived from it.
fn host_key(secret: &Path) -> Result<(String, bool), EnrollError> {
    let public = public_key_path(secret);
    let err = |path: &Path, detail: String| EnrollError::HostKey {
        path: path.to_path_buf(),
        detail,
    };
    if secret.symlink_metadata().is_ok() {
        if public.symlink_metadata().is_ok() {
            return Ok((trust::load_key(&public)?.to_base64(), false));
        }
        let sk = crate::report::load_host_key(secret).map_err(|e| match e {
            crate::report::HostKeyError::Read { source, .. } => err(secret, source.to_string()),
            crate::report::HostKeyError::Invalid { detail, .. } => err(secret, format!("exists but is not an unencrypted minisign secret key ({detail}); it was kept: move it aside to make a new one")),
        })?;
        let pk =
            minisign::PublicKey::from_secret_key(&sk).map_err(|e| err(secret, e.to_string()))?;
        let pub_text = pk
            .to_box()
            .map_err(|e| err(&public, e.to_string()))?
            .into_string();
        write_new(&public, pub_text.as_bytes(), 0o644)?;
        return Ok((pk.to_base64(), false));
    }
    if public.symlink_metadata().is_ok() {
        return Err(err(
            &public,
            format!(
                "exists without its secret key {}; move it aside so enroll can make the pair",
                secret.display()
            ),
        ));
    }
    // Unencrypted: the agent signs its reports unattended, with no one to type a password.
    let kp = minisign::KeyPair::generate_unencrypted_keypair()
        .map_err(|e| err(secret, format!("generating the key pair failed: {e}")))?;
    let key_text = kp
        .sk
        .to_box(Some(
            "pacfleet host key (minisign, NOT password-protected: the agent signs with it)",
        ))
        .map_err(|e| err(secret, e.to_string()))?
        .into_string();
    let pub_text = kp
        .pk
        .to_box()
        .map_err(|e| err(&public, e.to_string()))?
        .into_string();
    write_new(secret, key_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, pub_text.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(secret);
        return Err(e);
    }
    Ok((kp.pk.to_base64(), true))
}

/// Creates `path` with `bytes` and `mode`; fails if it exists (its directory is made 0700 when
/// missing: a secret key goes in it).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), EnrollError> {
    ensure_dir(path)?;
    let err = |e: std::io::Error| EnrollError::HostKey {
        path: path.to_path_buf(),
        detail: e.to_string(),
    };
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(err)?;
    f.write_all(bytes).and_then(|()| f.sync_all()).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(dir: &Path) -> EnrollOptions {
        EnrollOptions {
            config: dir.join("agent.yaml"),
            repo: "https://git.example.com/ops/fleet.git".to_owned(),
            branch: None,
            keys: vec![dir.join("ops.pub")],
            fleet: Some("acme".to_owned()),
            hostname: Some("ws-01".to_owned()),
            root: None,
            dbpath: None,
            pacman_conf: Some(PathBuf::from("pacman.conf")),
            state_dir: None,
            ssh_key: None,
            ssh_known_hosts: None,
            status_repo: None,
            force: false,
        }
    }

    #[test]
    fn rendered_config_loads_with_absolute_paths_and_only_given_fields() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let text = render_config(&o, "ws-01").unwrap();
        assert!(!text.contains("root:"), "{text}");
        assert!(!text.contains("state_dir:"), "{text}");
        let cfg = AgentConfig::from_yaml(&text, &o.config).unwrap();
        assert_eq!(cfg.repo, o.repo);
        assert_eq!(cfg.branch, "main");
        assert_eq!(cfg.fleet.as_deref(), Some("acme"));
        assert_eq!(cfg.trusted_keys, o.keys);
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(cfg.pacman_conf, cwd.join("pacman.conf"));
        assert_eq!(cfg.host_key, dir.path().join("host.key"));
        // The same arguments make the same bytes.
        assert_eq!(render_config(&o, "ws-01").unwrap(), text);
    }

    #[test]
    fn differing_fields_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(dir.path());
        let new = AgentConfig::from_yaml(&render_config(&o, "ws-01").unwrap(), &o.config).unwrap();
        let mut other = o.clone();
        other.fleet = None;
        other.branch = Some("prod".to_owned());
        let old = render_config(&other, "ws-01").unwrap();
        assert_eq!(
            differing_fields(&old, &o.config, &new),
            ["`branch`", "`fleet`"]
        );
        let d = differing_fields("repo: [", &o.config, &new);
        assert!(d[0].contains("does not load"), "{d:?}");
    }

    #[test]
    fn a_hostname_that_cannot_name_a_manifest_is_refused_first() {
        let dir = tempfile::tempdir().unwrap();
        let mut o = opts(dir.path());
        o.keys.clear();
        assert!(matches!(enroll(&o), Err(EnrollError::NoKeys)));
        let mut o = opts(dir.path());
        std::fs::write(
            &o.keys[0],
            "untrusted comment: x\nRWQBTTOawjnZLWS4od8ccmnUY2QTMiFi+MtjgqO6J+11zKG641ipcqR5\n",
        )
        .unwrap();
        o.hostname = Some("WS 01".to_owned());
        let e = enroll(&o).unwrap_err();
        assert!(
            matches!(
                e,
                EnrollError::Hostname {
                    source: crate::manifest::NameError::BadChar { c: 'W', .. },
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(e.exit(), crate::reconcile::Exit::Error);
        assert!(!o.config.exists());
    }
}
