//! `fleetctl verify [REV] --key PUB… [--repo PATH] [--threshold N] [--json]`: checks REV's
//! signature statement exactly as a host checks it (`trust::verify_note`: signatures,
//! threshold of distinct keys, commit, tree, fleet name from REV's fleet.yaml, expiry), and
//! shows the statement and who signed it. Host-side history rules (sequence floor, force-push,
//! key rotation) need a host's record and are not checked here. Exit 0 valid, 3 refused (the
//! refusal says which rule failed), 2 on other errors.

use std::path::Path;

use anyhow::bail;
use chrono::{SecondsFormat, Utc};
use serde::Serialize;

use super::VerifyArgs;
use pacfleet::reconcile::Exit;
use pacfleet::source;
use pacfleet::trust::{self, Key, Note, Refusal, Statement};

/// One signature in the note.
#[derive(Debug, Serialize)]
struct Signature {
    /// minisign key id (16 hex digits).
    key_id: String,
    /// The given key with that id, if any.
    name: Option<String>,
    /// The trusted comment (unverified unless the signature is valid).
    trusted_comment: Option<String>,
}

/// The JSON report.
#[derive(Debug, Serialize)]
struct Report {
    commit: String,
    tree: String,
    fleet: Option<String>,
    valid: bool,
    refusal: Option<String>,
    statement: Option<Statement>,
    /// Names of the distinct given keys whose signatures verified (when valid).
    signers: Vec<String>,
    signatures: Vec<Signature>,
    threshold: usize,
    keys: Vec<KeyInfo>,
}

#[derive(Debug, Serialize)]
struct KeyInfo {
    name: String,
    key_id: String,
}

pub(super) fn run(args: VerifyArgs) -> anyhow::Result<u8> {
    if args.threshold == 0 {
        bail!("--threshold must be at least 1");
    }
    let keys = args
        .key
        .iter()
        .map(|p| trust::load_key(p))
        .collect::<Result<Vec<_>, _>>()?;
    let distinct = {
        let mut b64: Vec<String> = keys.iter().map(Key::to_base64).collect();
        b64.sort();
        b64.dedup();
        b64.len()
    };
    if args.threshold > distinct {
        bail!(
            "--threshold {} but only {distinct} distinct key(s) given: give more --key files or lower --threshold",
            args.threshold
        );
    }
    let commit = source::rev_parse(&args.repo, &args.rev)?;
    let tree = source::commit_tree(&args.repo, &commit)?;
    let (note, too_large) = match source::read_note(&args.repo, &commit) {
        Ok(note) => (note, None),
        Err(source::ReadError::NoteTooLarge { size, .. }) => (None, Some(size)),
        Err(e) => return Err(e.into()),
    };
    let fleet = fleet_name(&args.repo, &commit);
    let parsed = note.as_deref().and_then(|b| Note::parse(b).ok());

    let result = match (&note, &fleet) {
        (None, _) if too_large.is_some() => Err(Refusal::Corrupt {
            commit: commit.clone(),
            detail: trust::NoteError::TooLarge {
                size: too_large.unwrap_or_default(),
                unread: true,
            },
        }),
        (None, _) => Err(Refusal::Unsigned {
            commit: commit.clone(),
        }),
        (Some(_), Err(detail)) => Err(Refusal::NoFleet {
            commit: commit.clone(),
            detail: detail.to_string(),
        }),
        (Some(bytes), Ok(name)) => trust::verify_note(
            bytes,
            &commit,
            &tree,
            name,
            &keys,
            args.threshold,
            Utc::now(),
        ),
    };
    let signatures: Vec<Signature> = parsed
        .as_ref()
        .map(|n| {
            n.signatures
                .iter()
                .map(|s| {
                    let id = sig_key_id(s.keynum());
                    Signature {
                        name: keys.iter().find(|k| k.id() == id).map(|k| k.name.clone()),
                        trusted_comment: s.trusted_comment().ok(),
                        key_id: id,
                    }
                })
                .collect()
        })
        .unwrap_or_default();

    if args.json {
        let report = Report {
            commit: commit.clone(),
            tree: tree.clone(),
            fleet: fleet.as_ref().ok().cloned(),
            valid: result.is_ok(),
            refusal: result.as_ref().err().map(ToString::to_string),
            statement: parsed.as_ref().map(|n| n.statement.clone()),
            signers: result
                .as_ref()
                .map(|v| v.signers.clone())
                .unwrap_or_default(),
            signatures,
            threshold: args.threshold,
            keys: keys
                .iter()
                .map(|k| KeyInfo {
                    name: k.name.clone(),
                    key_id: k.id(),
                })
                .collect(),
        };
        super::output::json(&report)?;
    } else {
        if let Some(n) = &parsed {
            let st = &n.statement;
            println!("statement on commit {commit}:");
            println!("  fleet     {}", st.fleet);
            println!("  commit    {}", st.commit);
            println!("  tree      {}", st.tree);
            println!("  sequence  {}", st.sequence);
            println!(
                "  expires   {}",
                st.expires.to_rfc3339_opts(SecondsFormat::Secs, true)
            );
        }
        for s in &signatures {
            match &s.name {
                Some(name) => println!("  signature by {name} ({})", s.key_id),
                None => println!("  signature by {} (not one of the given keys)", s.key_id),
            }
        }
        if let Ok(v) = &result {
            println!(
                "valid: signed by {} of {} required ({}) for fleet `{}`",
                v.signers.len(),
                args.threshold,
                v.signers.join(", "),
                v.statement.fleet
            );
        }
    }
    match result {
        Ok(_) => Ok(Exit::Success.code()),
        Err(r) => {
            eprintln!("error: refused: {r}");
            Ok(Exit::Refused.code())
        }
    }
}

/// The fleet name in `commit`'s fleet.yaml.
fn fleet_name(repo: &Path, commit: &str) -> Result<String, trust::FleetSpecError> {
    pacfleet::trust::fleet_spec(repo, commit).map(|spec| spec.name.to_string())
}

/// minisign's key id of a signature, as its tools print it.
fn sig_key_id(keynum: &[u8]) -> String {
    let mut id = [0u8; 8];
    id.copy_from_slice(&keynum[..8]);
    format!("{:016X}", u64::from_le_bytes(id))
}
