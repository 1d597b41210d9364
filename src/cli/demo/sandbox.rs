//! The sandbox on disk: its directory (kept, or temporary), the fleet git repository driven
//! through the `git` CLI with the user's configuration shut out, and the host directories.
//!
//! ```text
//! <sandbox>/repos/<repo>/          synthetic sync repositories (file://)
//! <sandbox>/archive/               older versions, Arch Linux Archive layout (file://)
//! <sandbox>/fleet/                 the fleet repository (a git work tree, signed commits)
//! <sandbox>/keys/ops.{pub,key}      the operator's minisign key pair (unencrypted)
//! <sandbox>/status.git/            the status repository the hosts push their reports to
//! <sandbox>/hosts/<host>/          agent.yaml, host.{key,pub}, pacman.conf, root/, state/,
//!                                  gnupg/, hooks/
//! ```

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

use pacfleet::config::AgentConfig;
use pacfleet::trust;
use pacfleet_support::host::{HostLayout, PacmanConf, SigLevel};

const NEED_GIT: &str = "the demo needs git: install it (pacman -S git / apt install git)";

/// The sandbox directory.
#[derive(Debug)]
pub(super) struct Sandbox {
    root: PathBuf,
    temp: Option<tempfile::TempDir>,
}

impl Sandbox {
    /// `keep`: build there (it must not exist); otherwise a temporary directory.
    pub fn create(keep: Option<&Path>) -> anyhow::Result<Sandbox> {
        match keep {
            Some(dir) => {
                let dir = std::path::absolute(dir)
                    .with_context(|| format!("cannot use {}", dir.display()))?;
                if fs::symlink_metadata(&dir).is_ok() {
                    bail!("{} exists; choose a new directory", dir.display());
                }
                if let Some(parent) = dir.parent() {
                    fs::create_dir_all(parent)
                        .with_context(|| format!("cannot create {}", parent.display()))?;
                }
                fs::create_dir(&dir).map_err(|e| match e.kind() {
                    std::io::ErrorKind::AlreadyExists => {
                        anyhow::anyhow!("{} exists; choose a new directory", dir.display())
                    }
                    _ => anyhow::Error::new(e).context(format!("cannot create {}", dir.display())),
                })?;
                Ok(Sandbox {
                    root: dir,
                    temp: None,
                })
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("pacfleet-demo-")
                    .tempdir()
                    .context(
                        "cannot create a temporary directory for the sandbox (check $TMPDIR)",
                    )?;
                let root = std::path::absolute(temp.path()).unwrap_or(temp.path().to_path_buf());
                Ok(Sandbox {
                    root,
                    temp: Some(temp),
                })
            }
        }
    }

    /// Its absolute path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// Whether it is kept after the demo.
    pub fn kept(&self) -> bool {
        self.temp.is_none()
    }

    /// Removes a temporary sandbox (a kept one stays).
    pub fn finish(self) -> anyhow::Result<()> {
        if let Some(temp) = self.temp {
            temp.close()
                .with_context(|| format!("cannot remove the sandbox {}", self.root.display()))?;
        }
        Ok(())
    }
}

/// Fails with what to do when `git` cannot be run.
pub(super) fn check_git() -> anyhow::Result<()> {
    match git_command().arg("--version").output() {
        Ok(out) if out.status.success() => Ok(()),
        Ok(out) => bail!(
            "{NEED_GIT}; `git --version` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(e) => Err(anyhow::Error::new(e).context(NEED_GIT)),
    }
}

/// `git` with the user's and the system's configuration shut out and no `GIT_*` variable of
/// the caller's environment (such as `GIT_DIR`) leaking in, so that nothing outside the sandbox
/// is read or written.
fn git_command() -> Command {
    let mut cmd = Command::new("git");
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("GIT_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_TERMINAL_PROMPT", "0")
        .args([
            "-c",
            "user.name=pacfleet demo",
            "-c",
            "user.email=demo@pacfleet.invalid",
            "-c",
            "commit.gpgsign=false",
            "-c",
            "core.hooksPath=/dev/null",
        ]);
    cmd
}

/// The fleet repository's work tree.
#[derive(Debug)]
pub(super) struct FleetRepo {
    /// `<sandbox>/fleet`.
    pub dir: PathBuf,
}

impl FleetRepo {
    /// `git init` a repository with branch `main` at `dir` (which must not exist).
    pub fn init(dir: &Path) -> anyhow::Result<FleetRepo> {
        fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let repo = FleetRepo {
            dir: dir.to_path_buf(),
        };
        repo.git(&["init", "-q", "-b", "main"])?;
        // Signing writes notes commits through gix, which reads the identity from here.
        repo.git(&["config", "user.name", "pacfleet demo"])?;
        repo.git(&["config", "user.email", "demo@pacfleet.invalid"])?;
        Ok(repo)
    }

    /// Runs git in the work tree; stdout.
    pub fn git(&self, args: &[&str]) -> anyhow::Result<String> {
        let out = git_command()
            .arg("-C")
            .arg(&self.dir)
            .args(args)
            .output()
            .context(NEED_GIT)?;
        if !out.status.success() {
            bail!(
                "`git {}` failed in {}: {}",
                args.join(" "),
                self.dir.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Writes `files` (path relative to the work tree, contents).
    pub fn write(&self, files: &[(&str, &str)]) -> anyhow::Result<()> {
        for (rel, text) in files {
            let path = self.dir.join(rel);
            if let Some(parent) = path.parent() {
                fs::create_dir_all(parent)
                    .with_context(|| format!("cannot create {}", parent.display()))?;
            }
            fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        }
        Ok(())
    }

    /// Reads a file of the work tree.
    pub fn read(&self, rel: &str) -> anyhow::Result<String> {
        let path = self.dir.join(rel);
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))
    }

    /// Commits everything in the work tree; returns the commit id.
    pub fn commit_all(&self, message: &str) -> anyhow::Result<String> {
        self.git(&["add", "-A"])?;
        self.git(&["commit", "-q", "-m", message])?;
        self.head()
    }

    /// Signs `rev` with `key`: a statement note with the next sequence number, valid for 30
    /// days (long enough to explore a kept sandbox).
    pub fn sign(&self, rev: &str, key: &Operator) -> anyhow::Result<()> {
        let opts = trust::SignOptions {
            sequence: None,
            expires: chrono::Utc::now() + chrono::Duration::days(30),
            renew: false,
        };
        trust::sign_commit(&self.dir, rev, &key.secret, &opts)
            .with_context(|| format!("signing commit {rev}"))?;
        Ok(())
    }

    /// The HEAD commit id.
    pub fn head(&self) -> anyhow::Result<String> {
        Ok(self.git(&["rev-parse", "HEAD"])?.trim().to_owned())
    }

    /// The subject of HEAD's message.
    pub fn subject(&self) -> anyhow::Result<String> {
        Ok(self.git(&["log", "-1", "--format=%s"])?.trim().to_owned())
    }
}

/// The operator's key pair: `<sandbox>/keys/ops.pub` (what hosts trust) and `ops.key`.
pub(super) struct Operator {
    /// The public key file.
    pub public: PathBuf,
    secret: minisign::SecretKey,
}

impl Operator {
    /// Generates a key pair and writes it under `<sandbox>/keys/`.
    pub fn generate(sandbox: &Path) -> anyhow::Result<Operator> {
        let dir = sandbox.join("keys");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let kp = minisign::KeyPair::generate_unencrypted_keypair()
            .context("cannot generate the operator's key pair")?;
        let public = dir.join("ops.pub");
        let secret = dir.join("ops.key");
        let pk_text = kp
            .pk
            .to_box()
            .context("encoding the public key")?
            .into_string();
        let sk_text = kp
            .sk
            .to_box(None)
            .context("encoding the secret key")?
            .into_string();
        fs::write(&public, pk_text)
            .with_context(|| format!("cannot write {}", public.display()))?;
        fs::write(&secret, sk_text)
            .with_context(|| format!("cannot write {}", secret.display()))?;
        fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .with_context(|| format!("cannot restrict {}", secret.display()))?;
        Ok(Operator {
            public,
            secret: kp.sk,
        })
    }
}

/// One demo host.
#[derive(Debug)]
pub(super) struct Host {
    /// Its hostname.
    pub name: String,
    /// Its public key (the base64 line of `host.pub`), for `key:` in its Host manifest.
    pub key: String,
    /// `<sandbox>/hosts/<name>/agent.yaml`.
    pub config_path: PathBuf,
    /// The loaded agent config.
    pub config: AgentConfig,
}

/// Creates host `name` under `<sandbox>/hosts/` with one `[repo]` section per repository
/// (the layout of `pacfleet_support::host`, keyring in `gnupg/`): a root with an empty local
/// database, a cache, pacman.conf (every path inside the host directory, Arch's signature levels — the keyring in `gnupg/` is made by
/// `Packager::keyring` —, no sandboxing, the host's own empty hook directory), a state
/// directory and agent.yaml (relative paths, fetching `fleet` as a local path).
pub(super) fn make_host(
    sandbox: &Path,
    name: &str,
    repos: &BTreeMap<String, PathBuf>,
    fleet: &Path,
    trusted_key: &Path,
    status_repo: &Path,
) -> anyhow::Result<Host> {
    let layout = HostLayout::new(&sandbox.join("hosts").join(name));
    layout.create()?;
    layout.write_pacman_conf(&PacmanConf {
        title: format!("pacman.conf of demo host {name}: every path is inside the sandbox."),
        siglevel: SigLevel::Arch,
        disable_download_timeout: false,
        repos: repos
            .iter()
            .map(|(repo, dir)| (repo.clone(), format!("file://{}", dir.display())))
            .collect(),
    })?;
    let base = &layout.base;
    let write = |path: PathBuf, text: String| {
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))
    };
    let agent = format!(
        "# agent.yaml of demo host {name}; relative paths are relative to this file.\n\
         repo: {fleet}\n\
         branch: main\n\
         hostname: {name}\n\
         root: root\n\
         pacman_conf: pacman.conf\n\
         state_dir: state\n\
         trusted_keys: [{key}]\n\
         lock_timeout: 10s\n\
         status_repo: {status}\n",
        fleet = fleet.display(),
        key = trusted_key.display(),
        status = status_repo.display(),
    );
    let config_path = base.join("agent.yaml");
    write(config_path.clone(), agent)?;
    // The host's own key pair, as `fleetctl enroll` makes it: it signs the host's reports.
    let kp = minisign::KeyPair::generate_unencrypted_keypair()
        .with_context(|| format!("host {name}: cannot generate its key pair"))?;
    let public = kp.pk.to_base64();
    write(
        base.join("host.key"),
        kp.sk
            .to_box(None)
            .context("encoding the host key")?
            .into_string(),
    )?;
    write(
        base.join("host.pub"),
        kp.pk
            .to_box()
            .context("encoding the host key")?
            .into_string(),
    )?;
    let config = AgentConfig::load(&config_path)?;
    // Nothing outside the sandbox: every path the host uses is inside it.
    for (what, path) in [
        ("repo", Path::new(&config.repo)),
        ("root", config.root.as_path()),
        ("dbpath", config.dbpath.as_path()),
        ("pacman_conf", config.pacman_conf.as_path()),
        ("state_dir", config.state_dir.as_path()),
        ("host_key", config.host_key.as_path()),
        (
            "status_repo",
            Path::new(config.status_repo.as_deref().unwrap_or_default()),
        ),
    ]
    .into_iter()
    .chain(
        config
            .trusted_keys
            .iter()
            .map(|k| ("trusted_keys", k.as_path())),
    ) {
        let climbs = path
            .components()
            .any(|c| matches!(c, std::path::Component::ParentDir));
        if climbs || !path.starts_with(sandbox) {
            bail!(
                "host {name}: `{what}` is {}, outside the sandbox {} (a bug)",
                path.display(),
                sandbox.display()
            );
        }
    }
    Ok(Host {
        name: name.to_owned(),
        key: public,
        config_path,
        config,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_refuses_an_existing_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let err = Sandbox::create(Some(tmp.path())).unwrap_err();
        assert!(
            err.to_string().ends_with("exists; choose a new directory"),
            "{err}"
        );
        let s = Sandbox::create(Some(&tmp.path().join("a/b"))).unwrap();
        assert!(s.kept() && s.path().is_dir());
    }

    #[test]
    fn hosts_live_inside_the_sandbox() {
        let tmp = tempfile::tempdir().unwrap();
        let repos = [("core".to_owned(), tmp.path().join("repos/core"))].into();
        let key = Operator::generate(tmp.path()).unwrap();
        let host = make_host(
            tmp.path(),
            "ws-01",
            &repos,
            &tmp.path().join("fleet"),
            &key.public,
            &tmp.path().join("status.git"),
        )
        .unwrap();
        assert_eq!(host.config.trusted_keys, [key.public]);
        assert_eq!(
            host.config.status_repo.as_deref(),
            Some(tmp.path().join("status.git").to_str().unwrap())
        );
        assert_eq!(
            host.config.host_key,
            tmp.path().join("hosts/ws-01/host.key")
        );
        assert!(host.key.starts_with("RW"), "{}", host.key);
        assert_eq!(host.config.hostname, "ws-01");
        assert_eq!(
            host.config.repo,
            tmp.path().join("fleet").display().to_string()
        );
        assert_eq!(
            host.config.dbpath,
            tmp.path().join("hosts/ws-01/root/var/lib/pacman")
        );
        let conf = fs::read_to_string(tmp.path().join("hosts/ws-01/pacman.conf")).unwrap();
        assert!(conf.contains("[core]\nServer = file://"), "{conf}");
    }
}
