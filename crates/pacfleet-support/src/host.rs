//! The directory layout of a simulated host, shared by the integration tests' `HostDir`, the
//! demo sandbox's hosts and the bench world's: a target root holding an empty local database,
//! a package cache and a log directory; a keyring directory; a hook directory of the host's
//! own (so the machine's hooks never run); a state directory for pacfleet; and a pacman.conf
//! pointing at all of it.
//!
//! ```text
//! <base>/root/                        RootDir
//! <base>/root/var/lib/pacman/         DBPath: local/ALPM_DB_VERSION, sync/
//! <base>/root/var/cache/pacman/pkg/   CacheDir
//! <base>/root/var/log/pacman.log      LogFile
//! <base>/gnupg/                       GPGDir (or root/etc/pacman.d/gnupg: keyring_in_root)
//! <base>/hooks/                       HookDir
//! <base>/pacman.conf
//! <base>/state/
//! ```
//!
//! Each user keeps its own specifics on top (the keyring's contents, agent.yaml, ...).

use std::fmt::Write as _;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// Where a host's files go; nothing is created until [`create`](Self::create).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostLayout {
    /// The host directory.
    pub base: PathBuf,
    /// `base/root` (`RootDir`).
    pub root: PathBuf,
    /// `root/var/lib/pacman` (`DBPath`).
    pub dbpath: PathBuf,
    /// `root/var/cache/pacman/pkg` (`CacheDir`).
    pub cache_dir: PathBuf,
    /// `root/var/log/pacman.log` (`LogFile`).
    pub log_file: PathBuf,
    /// `base/gnupg` (`GPGDir`), or `root/etc/pacman.d/gnupg` with
    /// [`keyring_in_root`](Self::keyring_in_root).
    pub gpgdir: PathBuf,
    /// `base/hooks` (`HookDir`).
    pub hooks: PathBuf,
    /// `base/pacman.conf`.
    pub conf: PathBuf,
    /// `base/state`, for pacfleet's own records.
    pub state_dir: PathBuf,
}

/// The signature levels a host's pacman.conf sets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SigLevel {
    /// Arch's defaults: `SigLevel = Required DatabaseOptional`, `LocalFileSigLevel = Optional`.
    Arch,
    /// `SigLevel = Never`, `LocalFileSigLevel = Never`, for a host that cannot have signatures;
    /// `why` is required and written above them as a comment, so the file says it too.
    Never { why: String },
}

/// What a host's pacman.conf says besides the layout's paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PacmanConf {
    /// The first line, a comment (without `# `), e.g. `Test host ws-01`.
    pub title: String,
    pub siglevel: SigLevel,
    /// Whether to write `DisableDownloadTimeout`.
    pub disable_download_timeout: bool,
    /// `[name]` sections with `Server = url`, in order.
    pub repos: Vec<(String, String)>,
}

fn create_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot create {}: {e}", dir.display())))
}

fn write_file(path: &Path, text: &str) -> io::Result<()> {
    fs::write(path, text)
        .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", path.display())))
}

impl HostLayout {
    /// The layout of a host in `base`, with its keyring in `base/gnupg`.
    pub fn new(base: &Path) -> Self {
        let root = base.join("root");
        let dbpath = root.join("var/lib/pacman");
        Self {
            cache_dir: root.join("var/cache/pacman/pkg"),
            log_file: root.join("var/log/pacman.log"),
            gpgdir: base.join("gnupg"),
            hooks: base.join("hooks"),
            conf: base.join("pacman.conf"),
            state_dir: base.join("state"),
            base: base.to_path_buf(),
            root,
            dbpath,
        }
    }

    /// The keyring where Arch keeps it, `root/etc/pacman.d/gnupg`, instead of `base/gnupg`.
    pub fn keyring_in_root(mut self) -> Self {
        self.gpgdir = self.root.join("etc/pacman.d/gnupg");
        self
    }

    /// Creates the directories (the keyring's empty) and an empty local database of the
    /// current schema version, which libalpm accepts as is.
    pub fn create(&self) -> io::Result<()> {
        for dir in [
            self.dbpath.join("local"),
            self.dbpath.join("sync"),
            self.cache_dir.clone(),
            self.root.join("var/log"),
            self.root.join("etc"),
            self.gpgdir.clone(),
            self.hooks.clone(),
            self.state_dir.clone(),
        ] {
            create_dir(&dir)?;
        }
        write_file(&self.dbpath.join("local/ALPM_DB_VERSION"), "9\n")
    }

    /// The text of this host's pacman.conf: every path in the layout, no sandboxing, then
    /// `conf`'s repositories.
    pub fn pacman_conf(&self, conf: &PacmanConf) -> String {
        let mut text = format!(
            "# {title}\n\
             [options]\n\
             RootDir = {root}\n\
             DBPath = {dbpath}/\n\
             CacheDir = {cache}/\n\
             LogFile = {log}\n\
             GPGDir = {gpgdir}/\n\
             HookDir = {hooks}/\n\
             Architecture = auto\n",
            title = conf.title,
            root = self.root.display(),
            dbpath = self.dbpath.display(),
            cache = self.cache_dir.display(),
            log = self.log_file.display(),
            gpgdir = self.gpgdir.display(),
            hooks = self.hooks.display(),
        );
        match &conf.siglevel {
            SigLevel::Arch => text
                .push_str("SigLevel = Required DatabaseOptional\nLocalFileSigLevel = Optional\n"),
            SigLevel::Never { why } => {
                let _ = writeln!(
                    text,
                    "# Signatures are not checked on this host: {}",
                    why.replace('\n', " ")
                );
                text.push_str("SigLevel = Never\nLocalFileSigLevel = Never\n");
            }
        }
        text.push_str("DisableSandbox\n");
        if conf.disable_download_timeout {
            text.push_str("DisableDownloadTimeout\n");
        }
        for (name, url) in &conf.repos {
            let _ = write!(text, "\n[{name}]\nServer = {url}\n");
        }
        text
    }

    /// Writes [`pacman_conf`](Self::pacman_conf) to [`conf`](Self::conf).
    pub fn write_pacman_conf(&self, conf: &PacmanConf) -> io::Result<()> {
        write_file(&self.conf, &self.pacman_conf(conf))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_the_directories_and_an_empty_local_database() {
        let tmp = tempfile::tempdir().unwrap();
        let host = HostLayout::new(&tmp.path().join("h"));
        host.create().unwrap();
        for dir in [
            &host.cache_dir,
            &host.gpgdir,
            &host.hooks,
            &host.state_dir,
            &host.dbpath.join("sync"),
        ] {
            assert!(dir.is_dir(), "{}", dir.display());
        }
        assert_eq!(
            fs::read_to_string(host.dbpath.join("local/ALPM_DB_VERSION")).unwrap(),
            "9\n"
        );
        // Again: nothing to do, no error.
        host.create().unwrap();
    }

    #[test]
    fn pacman_conf_lists_the_paths_the_siglevel_and_the_repositories() {
        let host = HostLayout::new(Path::new("/h")).keyring_in_root();
        let text = host.pacman_conf(&PacmanConf {
            title: "Test host h".into(),
            siglevel: SigLevel::Never {
                why: "no\nkeys".into(),
            },
            disable_download_timeout: true,
            repos: vec![("core".into(), "file:///r".into())],
        });
        assert_eq!(
            text,
            "# Test host h\n[options]\nRootDir = /h/root\nDBPath = /h/root/var/lib/pacman/\n\
             CacheDir = /h/root/var/cache/pacman/pkg/\nLogFile = /h/root/var/log/pacman.log\n\
             GPGDir = /h/root/etc/pacman.d/gnupg/\nHookDir = /h/hooks/\nArchitecture = auto\n\
             # Signatures are not checked on this host: no keys\nSigLevel = Never\n\
             LocalFileSigLevel = Never\nDisableSandbox\nDisableDownloadTimeout\n\
             \n[core]\nServer = file:///r\n"
        );
    }
}
