//! Signing a commit as an operator does: `fleetctl sign`, and set-latest and rollback after
//! they commit ([`sign_new`]). [`sign`] decides whether the commit's valid statement gets this
//! key's signature appended or a new statement is made, chooses the new statement's sequence
//! number (the highest in the notes, the fetched remote's included, or a floor the caller
//! gives, + 1), writes it through [`trust::sign_commit`], and returns what to tell the
//! operator ([`SignReport`]: the signers by their fleet.yaml `keys:` names, a key rotation
//! warning). The remote's notes are synced before, by the caller (`notes_sync`); the secret
//! key comes from the caller too, who may ask for its password on a terminal. Nothing here
//! prints.

use std::collections::BTreeMap;
use std::path::Path;

use chrono::Utc;

use crate::manifest::FleetSpec;
use crate::notes_sync;
use crate::reconcile::short;
use crate::source::{self, ReadError};
use crate::trust::{self, Note, SignOptions, Signed};
use crate::worktree::WorkTree;

/// Why the caller could not provide the secret key (shown as is).
pub type KeyError = Box<dyn std::error::Error + Send + Sync>;

/// Signing failed; nothing was written.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// Reading the repository failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// `--sequence` for a commit that keeps its statement.
    #[error(
        "commit {} already has a valid statement with sequence {sequence}; --sequence applies only to a new statement: add --renew to replace it",
        short(commit)
    )]
    SequenceForExisting {
        /// The commit.
        commit: String,
        /// Its statement's sequence.
        sequence: u64,
    },
    /// No sequence number is left above the highest.
    #[error("the notes already hold sequence {}; pass --sequence", u64::MAX)]
    NoSequenceLeft,
    /// The secret key could not be had.
    #[error(transparent)]
    Key(KeyError),
    /// Writing the statement failed.
    #[error(transparent)]
    Sign(#[from] trust::SignError),
}

/// set-latest and rollback made their commit, but signing it failed.
#[derive(Debug, thiserror::Error)]
#[error("the commit is made but not signed; sign it with `fleetctl sign HEAD --key KEY`")]
pub struct NotSigned(#[source] pub SigningError);

/// What to sign, and how.
#[derive(Debug, Clone, Copy)]
pub struct SignRequest<'a> {
    /// The fleet repository.
    pub repo: &'a Path,
    /// The commit id (resolved).
    pub commit: &'a str,
    /// The secret key's file (its stem names the key when fleet.yaml does not).
    pub key_file: &'a Path,
    /// How long a new statement stays valid.
    pub expires_in: chrono::Duration,
    /// A new statement's sequence number (default: the next, see [`sign`]).
    pub sequence: Option<u64>,
    /// A new statement even if the commit has a valid one.
    pub renew: bool,
    /// A new statement's sequence is above this too (set-latest: the host's applied one).
    pub above: u64,
}

/// What [`sign`] did, for the report.
#[derive(Debug, Clone)]
pub struct SignReport {
    /// The statement and its signers.
    pub signed: Signed,
    /// The commit had a valid statement, which a new one replaced or this key co-signed.
    pub had_valid: bool,
    /// The commit had a note (valid or not).
    pub had_note: bool,
    /// The highest sequence in the notes before.
    pub highest: u64,
    /// Key id → name: fleet.yaml `keys:` at the commit and its parent, and the key's file stem.
    pub names: BTreeMap<String, String>,
    /// The key is not among the parent commit's fleet.yaml `keys:`.
    pub rotation_warning: Option<String>,
}

impl SignReport {
    /// The signers so far, `name (id)` where the name is known.
    pub fn signers(&self) -> Vec<String> {
        self.signed
            .signers
            .iter()
            .map(|id| match self.names.get(id) {
                Some(n) => format!("{n} ({id})"),
                None => id.clone(),
            })
            .collect()
    }

    /// A new statement below the highest in the notes: hosts that applied that refuse it.
    pub fn low_sequence_warning(&self) -> Option<String> {
        let st = &self.signed.statement;
        (!self.signed.appended && st.sequence < self.highest).then(|| {
            format!(
                "sequence {} is lower than {}, the highest in the notes: hosts that applied a higher sequence refuse this state",
                st.sequence, self.highest
            )
        })
    }
}

/// Signs `req.commit` (the notes synced already): appends this key's signature to a valid
/// statement, or makes a new one with the next sequence number. `load_key` is called once the
/// request has been checked, before anything is written.
pub fn sign(
    req: &SignRequest<'_>,
    load_key: impl FnOnce() -> Result<minisign::SecretKey, KeyError>,
) -> Result<SignReport, SigningError> {
    let (repo, commit) = (req.repo, req.commit);
    let tree = source::commit_tree(repo, commit)?;
    let note = source::read_note(repo, commit)?;
    let had_note = note.is_some();
    let existing = note.and_then(|b| Note::parse(&b).ok()).filter(|n| {
        n.statement.commit == commit && n.statement.tree == tree && n.statement.expires > Utc::now()
    });
    if let (Some(n), Some(seq), false) = (&existing, req.sequence, req.renew)
        && n.statement.sequence != seq
    {
        return Err(SigningError::SequenceForExisting {
            commit: commit.to_owned(),
            sequence: n.statement.sequence,
        });
    }
    // The fetched remote notes count too (the local ones contain them after a sync; an
    // --offline signature still never goes below a previous fetch).
    let highest = trust::highest_sequence(repo)?
        .max(trust::highest_sequence_in(repo, notes_sync::REMOTE_NOTES)?);
    let sequence = match req.sequence {
        Some(s) => s,
        None => highest
            .max(req.above)
            .checked_add(1)
            .ok_or(SigningError::NoSequenceLeft)?,
    };

    let sk = load_key().map_err(SigningError::Key)?;
    let opts = SignOptions {
        sequence: Some(sequence),
        expires: Utc::now() + req.expires_in,
        renew: req.renew,
    };
    let signed = trust::sign_commit(repo, commit, &sk, &opts)?;
    let names = key_names(repo, commit, req.key_file, &sk);
    let rotation_warning = rotation_warning(repo, commit, &sk);
    Ok(SignReport {
        signed,
        had_valid: existing.is_some(),
        had_note,
        highest,
        names,
        rotation_warning,
    })
}

/// set-latest's and rollback's signature on the commit they made in `wt`: a new statement
/// valid for [`trust::DEFAULT_EXPIRY`], its sequence above `above` and every one in the notes
/// (fetched already, by [`WorkTree::prepare`]). Warns (through `warn`) first when the
/// signature also approves unsigned commits below it.
pub fn sign_new(
    wt: &WorkTree,
    commit: &str,
    key_file: &Path,
    above: u64,
    load_key: impl FnOnce() -> Result<minisign::SecretKey, KeyError>,
    warn: &mut dyn FnMut(String),
) -> Result<SignReport, NotSigned> {
    let below = wt.unsigned_below(commit);
    if !below.is_empty() {
        warn(format!(
            "signing {} also approves {} unsigned commit(s) under it, which hosts have not been allowed to apply yet: {}",
            short(commit),
            below.len(),
            below.join("; ")
        ));
    }
    let commit = source::rev_parse(&wt.root, commit).map_err(|e| NotSigned(e.into()))?;
    sign(
        &SignRequest {
            repo: &wt.root,
            commit: &commit,
            key_file,
            expires_in: trust::DEFAULT_EXPIRY,
            sequence: None,
            renew: false,
            above,
        },
        load_key,
    )
    .map_err(NotSigned)
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
