//! `fleetctl sign [REV] --key K [--repo PATH] [--expires-in DURATION] [--sequence N] [--renew] [--offline]`:
//! writes (or extends) REV's signature statement under refs/notes/pacfleet. A commit with a
//! valid statement by other keys gets this key's signature appended (threshold signing);
//! otherwise a new statement is made with the next sequence number. `--renew` on the branch
//! tip (or plain `sign` once its statement expired) renews the fleet's signed state before
//! hosts call it stale. First the remote's notes are fetched and the local ones fast-forwarded
//! to them (`notes_sync`; refused when they diverged or the fetch fails, unless `--offline`),
//! so the sequence continues the published one. Exit 0, or 2 on error.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{SecondsFormat, Utc};

use super::SignArgs;
use super::keygen::{PASSWORD_ENV, can_prompt, env_password};
use super::notes_sync;
use crate::manifest::FleetSpec;
use crate::reconcile::short;
use crate::source;
use crate::trust::{self, Note, SignOptions};

pub(super) fn run(args: SignArgs) -> anyhow::Result<u8> {
    if args.expires_in.is_zero() {
        bail!("--expires-in must be longer than 0s");
    }
    let expires_in = chrono::Duration::from_std(args.expires_in)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(3650))
        .ok_or_else(|| anyhow::anyhow!("--expires-in must be at most 10 years"))?;
    // The commit first (a typo fails before the network), then the remote's notes, so that
    // what the commit carries and the next sequence number are current.
    let commit = source::rev_parse(&args.repo, &args.rev)?;
    let synced = if args.synced {
        None
    } else {
        Some(notes_sync::sync(&args.repo, args.offline)?)
    };
    let tree = source::commit_tree(&args.repo, &commit)?;
    let note = source::read_note(&args.repo, &commit)?;
    let had_note = note.is_some();
    let existing = note.and_then(|b| Note::parse(&b).ok()).filter(|n| {
        n.statement.commit == commit && n.statement.tree == tree && n.statement.expires > Utc::now()
    });
    if let (Some(n), Some(seq), false) = (&existing, args.sequence, args.renew)
        && n.statement.sequence != seq
    {
        bail!(
            "commit {} already has a valid statement with sequence {}; --sequence applies only to a new statement: add --renew to replace it",
            short(&commit),
            n.statement.sequence
        );
    }
    // The fetched remote notes count too (the local ones contain them after a sync; an
    // --offline signature still never goes below a previous fetch).
    let highest = trust::highest_sequence(&args.repo)?.max(trust::highest_sequence_in(
        &args.repo,
        notes_sync::REMOTE_NOTES,
    )?);
    let sequence = match args.sequence {
        Some(s) => s,
        None => highest.max(args.above).checked_add(1).ok_or_else(|| {
            anyhow::anyhow!(
                "the notes already hold sequence {}; pass --sequence",
                u64::MAX
            )
        })?,
    };

    let sk = secret_key(&args.key)?;
    let opts = SignOptions {
        sequence: Some(sequence),
        expires: Utc::now() + expires_in,
        renew: args.renew,
    };
    let signed = trust::sign_commit(&args.repo, &commit, &sk, &opts)?;

    let names = key_names(&args.repo, &commit, &args.key, &sk);
    let st = &signed.statement;
    println!("signed commit {} of fleet `{}`", st.commit, st.fleet);
    println!("  tree      {}", st.tree);
    println!("  sequence  {}", st.sequence);
    println!(
        "  expires   {} ({})",
        st.expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        rough(
            (st.expires - Utc::now())
                .num_seconds()
                .max(0)
                .unsigned_abs()
        )
    );
    println!(
        "  {}",
        if signed.appended {
            "added this key's signature to the existing statement (threshold signing)"
        } else if existing.is_some() {
            "replaced the existing statement with a new one"
        } else if had_note {
            "new statement, replacing an expired or unusable note"
        } else {
            "new statement"
        }
    );
    let signers: Vec<String> = signed
        .signers
        .iter()
        .map(|id| match names.get(id) {
            Some(n) => format!("{n} ({id})"),
            None => id.clone(),
        })
        .collect();
    println!(
        "  signers   {} so far: {}",
        signers.len(),
        signers.join(", ")
    );
    if !signed.appended && st.sequence < highest {
        eprintln!(
            "warning: sequence {} is lower than {highest}, the highest in the notes: hosts that applied a higher sequence refuse this state",
            st.sequence
        );
    }
    if let Some(w) = rotation_warning(&args.repo, &commit, &sk) {
        eprintln!("warning: {w}");
    }
    // set-latest and rollback say themselves whether they pushed.
    if !args.synced {
        println!(
            "Publish it: git push {} refs/notes/pacfleet",
            synced
                .as_ref()
                .and_then(notes_sync::Synced::remote)
                .unwrap_or("origin")
        );
    }
    Ok(0)
}

/// A duration for people: `in 30 days`, `in 12 hours`, `in 5 minutes` (rounded to the nearest
/// unit; a statement signed for 30 days says 30 days, not `29days 23h 59m 59s`).
fn rough(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s >= 86_400 => ((s + 43_200) / 86_400, "day"),
        s if s >= 3_600 => ((s + 1_800) / 3_600, "hour"),
        s => ((s + 30) / 60, "minute"),
    };
    format!("in {n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// Reads the secret key: unencrypted as is; encrypted with the password from
/// `PACFLEET_KEY_PASSWORD`, or asked on the terminal; without either, a clear error.
fn secret_key(path: &Path) -> anyhow::Result<minisign::SecretKey> {
    if let Ok(text) = std::fs::read_to_string(path)
        && trust::parse_key("", &text).is_ok()
    {
        bail!(
            "{} is a public key; --key takes the secret key (the `.key` file made with it)",
            path.display()
        );
    }
    if let Some(password) = env_password()? {
        return trust::load_secret_key(path, Some(password)).with_context(|| {
            format!(
                "cannot unlock secret key {} with the password in {PASSWORD_ENV} (wrong password?)",
                path.display()
            )
        });
    }
    match trust::load_secret_key(path, None) {
        Ok(sk) => Ok(sk),
        Err(e) if can_prompt() => {
            // minisign's own prompt, on the terminal, without echo; it asks only if the key is
            // encrypted, and reports a corrupt key as such.
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read secret key {}", path.display()))?;
            let boxed = minisign::SecretKeyBox::from_string(&text).map_err(|_| e)?;
            eprintln!("secret key {} is password-protected", path.display());
            minisign::SecretKey::from_box(boxed, None).map_err(|err| {
                anyhow::anyhow!("cannot unlock secret key {}: {err}", path.display())
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// Key id → name, for the signers: fleet.yaml `keys:` at the commit and its parent, and the
/// signing key's file stem.
fn key_names(
    repo: &Path,
    commit: &str,
    key_file: &Path,
    sk: &minisign::SecretKey,
) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    for rev in [format!("{commit}^"), commit.to_owned()] {
        if let Some(keys) = fleet_keys_at(repo, &rev) {
            for k in keys {
                names.insert(k.id(), k.name);
            }
        }
    }
    if let Ok(pk) = minisign::PublicKey::from_secret_key(sk) {
        let stem = key_file.file_stem().map_or_else(
            || key_file.display().to_string(),
            |s| s.to_string_lossy().into_owned(),
        );
        names
            .entry(
                trust::Key {
                    name: String::new(),
                    key: pk,
                }
                .id(),
            )
            .or_insert(stem);
    }
    names
}

/// The fleet.yaml `keys:` at `rev`, if it lists any and they parse.
fn fleet_keys_at(repo: &Path, rev: &str) -> Option<Vec<trust::Key>> {
    let commit = source::rev_parse(repo, rev).ok()?;
    let bytes = source::read_file(repo, &commit, "fleet.yaml").ok()??;
    let spec: FleetSpec = serde_yaml::from_slice(&bytes).ok()?;
    trust::fleet_keys(&spec).ok().flatten()
}

/// A warning when the parent commit's fleet.yaml lists keys and this key is not among them:
/// hosts that applied the parent (or anything after a commit listing those keys) do not
/// count this signature.
fn rotation_warning(repo: &Path, commit: &str, sk: &minisign::SecretKey) -> Option<String> {
    let keys = fleet_keys_at(repo, &format!("{commit}^"))?;
    let id = trust::Key {
        name: String::new(),
        key: minisign::PublicKey::from_secret_key(sk).ok()?,
    }
    .id();
    if keys.iter().any(|k| k.id() == id) {
        return None;
    }
    Some(format!(
        "key {id} is not in fleet.yaml `keys:` of the parent commit ({}): hosts that follow the fleet's keys do not count this signature; add the key in a commit signed by a listed key first",
        keys.iter()
            .map(|k| format!("{} ({})", k.name, k.id()))
            .collect::<Vec<_>>()
            .join(", ")
    ))
}
