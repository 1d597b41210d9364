//! `fleetctl keygen --out PREFIX [--unencrypted]`: a minisign key pair for signing fleet
//! states. `PREFIX.pub` is what hosts trust (agent.yaml `trusted_keys:`) and what fleet.yaml
//! `keys:` lists; `PREFIX.key` is the secret key, password-protected unless `--unencrypted`.
//! Both are in minisign's box format, so the reference `minisign` tool uses them as they are.
//! Exit 0, or 2 on error (nothing is overwritten).

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

use super::KeygenArgs;
use super::signing::{PASSWORD_ENV, can_prompt, env_password};
use pacfleet::trust::Key;

pub(super) fn run(args: KeygenArgs) -> anyhow::Result<u8> {
    let (public, secret) = paths(&args.out)?;
    for p in [&public, &secret] {
        if p.symlink_metadata().is_ok() {
            bail!(
                "{} already exists; pacfleet never overwrites a key: choose another --out or move the old key aside",
                p.display()
            );
        }
    }
    let kp = if args.unencrypted {
        minisign::KeyPair::generate_unencrypted_keypair()
            .map_err(|e| anyhow::anyhow!("generating the key pair failed: {e}"))?
    } else {
        let password = match env_password()? {
            Some(p) if p.is_empty() => bail!(
                "{PASSWORD_ENV} is empty: set a password, or pass --unencrypted for a key without one"
            ),
            Some(p) => Some(p),
            None if can_prompt() => None, // minisign asks twice on the terminal.
            None => bail!(
                "the secret key needs a password and there is no terminal to ask on: set {PASSWORD_ENV}, or pass --unencrypted for a key without one (unattended signing only)"
            ),
        };
        minisign::KeyPair::generate_encrypted_keypair(password)
            .map_err(|e| anyhow::anyhow!("generating the key pair failed: {e}"))?
    };
    let name = args
        .out
        .file_name()
        .map_or_else(|| "key".to_owned(), |n| n.to_string_lossy().into_owned());
    let key = Key {
        name: name.clone(),
        key: kp.pk.clone(),
    };
    let pub_text = kp
        .pk
        .to_box()
        .map_err(|e| anyhow::anyhow!("encoding the public key failed: {e}"))?
        .into_string();
    let comment = if args.unencrypted {
        format!("pacfleet secret key {name} (minisign, NOT password-protected)")
    } else {
        format!("pacfleet secret key {name} (minisign, password-protected)")
    };
    let key_text = kp
        .sk
        .to_box(Some(&comment))
        .map_err(|e| anyhow::anyhow!("encoding the secret key failed: {e}"))?
        .into_string();
    write_new(&secret, key_text.as_bytes(), 0o600)?;
    if let Err(e) = write_new(&public, pub_text.as_bytes(), 0o644) {
        let _ = std::fs::remove_file(&secret);
        return Err(e);
    }

    let b64 = key.to_base64();
    println!("key id {}", key.id());
    println!("public key {b64}");
    println!(
        "  {}  public: give it to hosts and other signers",
        public.display()
    );
    println!(
        "  {}  secret{}: keep it off hosts, back it up",
        secret.display(),
        if args.unencrypted {
            ", NOT password-protected"
        } else {
            ", password-protected"
        }
    );
    println!();
    println!(
        "To make hosts trust it, copy {} to each host and list it in agent.yaml:",
        public.display()
    );
    println!("  trusted_keys: [/etc/pacfleet/keys/{name}.pub]");
    println!(
        "To let it sign for the fleet (key rotation), list it in fleet.yaml and have the current keys sign that commit:"
    );
    println!("  keys:");
    println!("    - {{name: {name}, key: {b64}}}");
    println!(
        "Sign a commit with: fleetctl sign HEAD --key {}",
        secret.display()
    );
    Ok(0)
}

/// `PREFIX.pub` and `PREFIX.key`.
fn paths(prefix: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    let Some(file) = prefix.file_name() else {
        bail!(
            "--out {} must name a file prefix, e.g. --out keys/ops for keys/ops.pub and keys/ops.key",
            prefix.display()
        );
    };
    let with = |ext: &str| {
        let mut f = file.to_os_string();
        f.push(ext);
        prefix.with_file_name(f)
    };
    Ok((with(".pub"), with(".key")))
}

/// Creates `path` with `bytes`; fails if it exists. A missing parent directory is created,
/// private (0700: a secret key goes in it).
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create the directory {}", dir.display()))?;
    }
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| format!("cannot create {}", path.display()))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
