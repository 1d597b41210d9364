//! The demo's package signatures, as on Arch: a GnuPG packager key made in the sandbox signs
//! every synthetic package (a detached `.sig`, put into the repository databases as
//! `%PGPSIG%` by `synth::write_repo`), and each demo host gets a keyring made with
//! `pacman-key` that trusts that key, so the hosts run with Arch's `SigLevel = Required
//! DatabaseOptional`. The gpg-agents started for the sandbox are stopped when this is dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The sandbox's packager key.
pub struct Packager {
    home: PathBuf,
    fingerprint: String,
    public: PathBuf,
    /// Every GnuPG home made here (the packager's and the hosts' keyrings).
    homes: std::cell::RefCell<Vec<PathBuf>>,
}

/// Runs `cmd`, failing with its stderr.
fn run(what: &str, cmd: &mut Command) -> anyhow::Result<String> {
    let out = cmd
        .env("LC_ALL", "C")
        .output()
        .with_context(|| format!("cannot run {what} (install GnuPG and pacman's pacman-key)"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

impl Packager {
    /// Makes an unprotected ed25519 signing key in `<sandbox>/packager/` and exports its public
    /// key.
    pub fn generate(sandbox: &Path) -> anyhow::Result<Packager> {
        use std::os::unix::fs::DirBuilderExt;
        let home = sandbox.join("packager");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&home)
            .with_context(|| format!("cannot create {}", home.display()))?;
        let gpg = |args: &[&str]| {
            let mut cmd = Command::new("gpg");
            cmd.arg("--homedir").arg(&home).arg("--batch").args(args);
            cmd
        };
        run(
            "gpg --quick-gen-key",
            &mut gpg(&[
                "--pinentry-mode",
                "loopback",
                "--passphrase",
                "",
                "--quick-gen-key",
                "pacfleet demo packager <demo@pacfleet.invalid>",
                "ed25519",
                "sign",
                "never",
            ]),
        )?;
        let listing = run(
            "gpg --list-secret-keys",
            &mut gpg(&["--with-colons", "--list-secret-keys"]),
        )?;
        let Some(fingerprint) = listing
            .lines()
            .find_map(|l| l.strip_prefix("fpr:"))
            .map(|rest| rest.trim_matches(':').to_owned())
        else {
            bail!("gpg made no key in {}", home.display());
        };
        let armored = run(
            "gpg --export",
            &mut gpg(&["--armor", "--export", &fingerprint]),
        )?;
        let public = sandbox.join("packager.asc");
        std::fs::write(&public, armored)
            .with_context(|| format!("cannot write {}", public.display()))?;
        Ok(Packager {
            homes: std::cell::RefCell::new(vec![home.clone()]),
            home,
            fingerprint,
            public,
        })
    }

    /// Signs `file` (`<file>.sig`, binary, detached), as `makepkg --sign` does.
    pub fn sign(&self, file: &Path) -> anyhow::Result<()> {
        let sig = PathBuf::from(format!("{}.sig", file.display()));
        run(
            "gpg --detach-sign",
            Command::new("gpg")
                .arg("--homedir")
                .arg(&self.home)
                .args(["--batch", "--yes", "--no-armor", "--detach-sign", "-u"])
                .arg(&self.fingerprint)
                .arg("-o")
                .arg(&sig)
                .arg(file),
        )?;
        Ok(())
    }

    /// Makes a host's keyring in `gpgdir` with pacman-key, trusting this packager, as an
    /// administrator does: `--init`, `--add`, `--lsign-key`.
    pub fn keyring(&self, gpgdir: &Path, pacman_conf: &Path) -> anyhow::Result<()> {
        self.homes.borrow_mut().push(gpgdir.to_path_buf());
        let pacman_key = |args: &[&std::ffi::OsStr]| {
            let mut cmd = Command::new("pacman-key");
            cmd.arg("--gpgdir")
                .arg(gpgdir)
                .arg("--config")
                .arg(pacman_conf)
                .args(args);
            cmd
        };
        run("pacman-key --init", &mut pacman_key(&["--init".as_ref()]))?;
        run(
            "pacman-key --add",
            &mut pacman_key(&["--add".as_ref(), self.public.as_os_str()]),
        )?;
        run(
            "pacman-key --lsign-key",
            &mut pacman_key(&["--lsign-key".as_ref(), self.fingerprint.as_ref()]),
        )?;
        Ok(())
    }
}

impl Drop for Packager {
    fn drop(&mut self) {
        for home in self.homes.borrow().iter() {
            let _ = Command::new("gpgconf")
                .arg("--homedir")
                .arg(home)
                .args(["--kill", "all"])
                .output();
        }
    }
}
