//! Trust: which fleet state a host may apply (docs/contract.md §4). A state is a commit carrying a
//! signature statement as a git note under `refs/notes/pacfleet`: a canonical text naming the
//! fleet, the commit, its tree, a sequence number and an expiry, followed by one or more
//! minisign signatures over exactly that text.
//!
//! This module owns the statement format, keys, verifying one note, and choosing the target
//! commit for a host given what it applied last (anti-rollback, force-push detection, key
//! rotation through fleet.yaml `keys:`). There is no bypass: nothing here can be told to
//! accept an unsigned or untrusted state.
//!
//! Statement format (version 1), one field per line, in this order, each line ending in `\n`:
//!
//! ```text
//! pacfleet-statement 1
//! fleet acme
//! commit 3f1c…(40 hex)
//! tree 9ab2…(40 hex)
//! sequence 12
//! expires 2026-12-23T09:00:00Z
//! ```
//!
//! The note is the statement, then for each signature a blank line and a minisign signature
//! (the four lines of a `.minisig` file). The signature is over the statement's bytes, so
//! `minisign -Vm statement -x sig -p key.pub` verifies it too.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};
use minisign::{PublicKey, SignatureBox};

use crate::escape::quoted;
pub use crate::keys::{Key, KeyError, load_key, parse_key};
use crate::keys::{key_id, sig_key_id};
use crate::manifest::FleetSpec;
use crate::source::{self, ReadError};

/// The notes ref holding signature statements.
pub const NOTES_REF: &str = "refs/notes/pacfleet";
/// Notes larger than this are refused unread.
pub const MAX_NOTE_BYTES: usize = source::MAX_NOTE_BYTES;

/// The most commits (applied state..tip) a pass walks looking for the newest signed one: all
/// of them were written by whoever can push, before anything is verified.
pub const MAX_WALK: usize = 10_000;
const HEADER: &str = "pacfleet-statement 1";

/// A signature statement: what the signers vouch for.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Statement {
    /// The fleet's name (fleet.yaml `name`).
    pub fleet: String,
    /// The commit id.
    pub commit: String,
    /// The commit's tree id.
    pub tree: String,
    /// Monotonic across the fleet's statements; hosts refuse lower than they applied.
    pub sequence: u64,
    /// After this, the statement is stale.
    pub expires: DateTime<Utc>,
}

impl Statement {
    /// The canonical text that is signed.
    pub fn to_text(&self) -> String {
        format!(
            "{HEADER}\nfleet {}\ncommit {}\ntree {}\nsequence {}\nexpires {}\n",
            self.fleet,
            self.commit,
            self.tree,
            self.sequence,
            self.expires.to_rfc3339_opts(SecondsFormat::Secs, true)
        )
    }

    /// Parses the canonical text exactly (no other spacing, order or fields).
    pub fn parse(text: &str) -> Result<Statement, NoteError> {
        let mut lines = text.split_inclusive('\n');
        let mut field = |key: &'static str| -> Result<String, NoteError> {
            let line = lines.next().ok_or(NoteError::EndsBefore { key })?;
            let line = line
                .strip_suffix('\n')
                .ok_or_else(|| NoteError::NoNewline {
                    line: quoted(line, 80),
                })?;
            if key == HEADER {
                return if line == HEADER {
                    Ok(String::new())
                } else {
                    Err(NoteError::Header {
                        found: quoted(line, 80),
                    })
                };
            }
            line.strip_prefix(key)
                .and_then(|v| v.strip_prefix(' '))
                .filter(|v| !v.is_empty() && !v.contains(char::is_whitespace))
                .map(str::to_owned)
                .ok_or_else(|| NoteError::Field {
                    key,
                    found: quoted(line, 80),
                })
        };
        field(HEADER)?;
        let fleet = field("fleet")?;
        let commit = field("commit")?;
        let tree = field("tree")?;
        let sequence = field("sequence")?;
        let expires = field("expires")?;
        if lines.next().is_some() {
            return Err(NoteError::TrailingText);
        }
        let hex = |v: &str| {
            v.len() == 40
                && v.bytes()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        };
        if !hex(&commit) || !hex(&tree) {
            return Err(NoteError::NotHex);
        }
        let statement = Statement {
            fleet,
            commit,
            tree,
            sequence: sequence.parse().map_err(|_| NoteError::Sequence {
                found: quoted(&sequence, 40),
            })?,
            expires: DateTime::parse_from_rfc3339(&expires)
                .map_err(|source| NoteError::Expires {
                    found: quoted(&expires, 40),
                    source,
                })?
                .with_timezone(&Utc),
        };
        if statement.to_text() != text {
            return Err(NoteError::NotCanonical);
        }
        Ok(statement)
    }
}

/// Why a signature note (or its statement) does not parse: the detail of [`Refusal::Corrupt`].
/// Quoted note text is shortened and escaped ([`quoted`]): notes are untrusted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The statement stops before one of its fields.
    #[error("the statement ends before `{key}`")]
    EndsBefore {
        /// The missing field (or the header line).
        key: &'static str,
    },
    /// The last line has no `\n`.
    #[error("line `{line}` does not end in a newline")]
    NoNewline {
        /// The line.
        line: String,
    },
    /// The first line is not the statement header.
    #[error("the statement must start with `{HEADER}`, found `{found}`")]
    Header {
        /// The first line.
        found: String,
    },
    /// A line is not `key value` for the field due there.
    #[error("expected `{key} <value>`, found `{found}`")]
    Field {
        /// The field due.
        key: &'static str,
        /// The line found.
        found: String,
    },
    /// More lines after `expires`.
    #[error("unexpected text after `expires`")]
    TrailingText,
    /// `commit` or `tree` is not a full lowercase object id.
    #[error("commit and tree must be 40 lowercase hex digits")]
    NotHex,
    /// `sequence` is not an unsigned number.
    #[error("sequence `{found}` is not a number")]
    Sequence {
        /// The value.
        found: String,
    },
    /// `expires` is not a time.
    #[error("expires `{found}` is not an RFC 3339 time ({source})")]
    Expires {
        /// The value.
        found: String,
        /// chrono's reason.
        #[source]
        source: chrono::ParseError,
    },
    /// Every field parses, but the text is not exactly what [`Statement::to_text`] writes
    /// (one text per statement: `+7`, `07`, another time zone).
    #[error("the statement is not in canonical form")]
    NotCanonical,
    /// The note is larger than any statement.
    #[error("the note is {size} bytes; statements over 64 KiB are refused{}", if *.unread { " (it was not read)" } else { "" })]
    TooLarge {
        /// Its size in bytes.
        size: u64,
        /// Whether it was refused by its size alone, before it was read.
        unread: bool,
    },
    /// The note is not text.
    #[error("the note is not UTF-8 text")]
    NotUtf8,
    /// A signature block is not a minisign signature.
    #[error("a signature does not parse: {detail}")]
    Signature {
        /// minisign's reason (its error type is neither `Clone` nor `Eq`, as refusals are).
        detail: String,
    },
}

/// A statement and its signatures, as stored in a note.
#[derive(Clone)]
pub struct Note {
    /// The statement's exact text (what was signed).
    pub text: String,
    /// The parsed statement.
    pub statement: Statement,
    /// The signatures, in order.
    pub signatures: Vec<SignatureBox>,
}

impl std::fmt::Debug for Note {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Note")
            .field("statement", &self.statement)
            .field(
                "signatures",
                &self.signatures.iter().map(sig_key_id).collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl Note {
    /// Parses a note: the statement, then blank-line-separated minisign signatures.
    pub fn parse(bytes: &[u8]) -> Result<Note, NoteError> {
        if bytes.len() > MAX_NOTE_BYTES {
            return Err(NoteError::TooLarge {
                size: u64::try_from(bytes.len()).unwrap_or(u64::MAX),
                unread: false,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|_| NoteError::NotUtf8)?;
        let (statement_text, rest) = match text.find("\n\n") {
            Some(i) => (text[..=i].to_owned(), &text[i + 2..]),
            None => (text.to_owned(), ""),
        };
        let statement = Statement::parse(&statement_text)?;
        let mut signatures = Vec::new();
        for block in rest.split("\n\n").map(str::trim).filter(|b| !b.is_empty()) {
            let sig = SignatureBox::from_string(block).map_err(|e| NoteError::Signature {
                detail: e.to_string(),
            })?;
            signatures.push(sig);
        }
        Ok(Note {
            text: statement_text,
            statement,
            signatures,
        })
    }

    /// The note's text: the statement and every signature.
    pub fn render(&self) -> String {
        let mut out = self.text.clone();
        for s in &self.signatures {
            out.push('\n');
            out.push_str(s.to_string().trim_end());
            out.push('\n');
        }
        out
    }
}

/// The keys fleet.yaml lists, if it lists any.
pub fn fleet_keys(spec: &FleetSpec) -> Result<Option<Vec<Key>>, KeyError> {
    if spec.keys.is_empty() {
        return Ok(None);
    }
    spec.keys
        .iter()
        .map(|k| parse_key(k.name.as_str(), &k.key))
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Why a state is not applied. Each message says which rule failed and what to do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// No statement at all.
    #[error(
        "commit {commit} is not signed (no note under refs/notes/pacfleet); sign it with `fleetctl sign {commit} --key KEY` and push the notes: `git push origin refs/notes/pacfleet`"
    )]
    Unsigned {
        /// The commit.
        commit: String,
    },
    /// The note does not parse.
    #[error(
        "the signature note on commit {commit} is corrupt ({detail}); re-sign the commit with `fleetctl sign`"
    )]
    Corrupt {
        /// The commit.
        commit: String,
        /// What is wrong.
        detail: NoteError,
    },
    /// A legacy (non-prehashed) minisign signature.
    #[error(
        "the note on commit {commit} carries a legacy (non-prehashed) minisign signature by key {key}; legacy signatures are refused: sign again with a current minisign or `fleetctl sign`"
    )]
    Legacy {
        /// The commit.
        commit: String,
        /// Key id.
        key: String,
    },
    /// A signature by a trusted key id that does not verify: the note was altered.
    #[error(
        "the signature by key {key} ({name}) on commit {commit} does not verify: the statement was altered after signing; do not apply — find out who changed the note, then re-sign"
    )]
    Tampered {
        /// The commit.
        commit: String,
        /// Key id.
        key: String,
        /// Key name.
        name: String,
    },
    /// Signed, but by no key this host trusts.
    #[error(
        "commit {commit} is signed only by keys this host does not trust ({keys}); it trusts {trusted}. Sign with a trusted key, or rotate keys through fleet.yaml `keys:` signed by the current ones"
    )]
    UntrustedKey {
        /// The commit.
        commit: String,
        /// Key ids that signed.
        keys: String,
        /// Key names the host trusts.
        trusted: String,
    },
    /// Fewer distinct trusted keys than the threshold.
    #[error(
        "commit {commit} is signed by {have} distinct trusted key(s) ({signers}) but this host needs {need}; another trusted key holder must sign it too (`fleetctl sign {commit} --key KEY` appends a signature)"
    )]
    BelowThreshold {
        /// The commit.
        commit: String,
        /// Distinct trusted keys that signed.
        have: usize,
        /// The threshold.
        need: usize,
        /// Their names.
        signers: String,
    },
    /// The statement names another commit, tree or fleet.
    #[error(
        "the statement on commit {commit} is for {field} `{found}`, not `{expected}`: a note copied from elsewhere; sign this commit itself"
    )]
    Mismatch {
        /// The commit the note is attached to.
        commit: String,
        /// `commit`, `tree` or `fleet`.
        field: &'static str,
        /// What the statement says.
        found: String,
        /// What it must say.
        expected: String,
    },
    /// Expired: the signed state is stale (a frozen mirror, or signing stopped).
    #[error(
        "the signed state of commit {commit} expired at {expired}: the fleet's signatures are stale (a frozen mirror or a stopped signing routine); nothing new is applied until a signer runs `fleetctl sign` on the branch tip and pushes the notes"
    )]
    Expired {
        /// The commit.
        commit: String,
        /// When it expired.
        expired: String,
    },
    /// Sequence number lower than what the host applied.
    #[error(
        "commit {commit} is signed with sequence {sequence}, lower than {applied} which this host already applied: a replayed old state; sign the current tip again so it gets a new sequence number"
    )]
    Rollback {
        /// The commit.
        commit: String,
        /// Its sequence.
        sequence: u64,
        /// The applied sequence.
        applied: u64,
    },
    /// History rewritten: the branch no longer contains what the host applied.
    #[error(
        "the branch tip {tip} does not descend from {applied}, which this host applied: the branch was force-pushed; restore the history (push a revert instead of rewriting), or re-enroll the host deliberately"
    )]
    NotDescendant {
        /// The tip.
        tip: String,
        /// The applied commit.
        applied: String,
    },
    /// More commits than a pass walks before verifying anything.
    #[error(
        "the branch has {count} commits since {since}, more than the {MAX_WALK} a pass reads before verifying anything; sign a recent commit of the branch (the newest signed one is the target), or re-enroll the host"
    )]
    TooManyCommits {
        /// Commits between the applied state and the tip (or all, on a fresh host).
        count: usize,
        /// The applied commit.
        since: String,
    },
    /// agent.yaml names another fleet than the one this host applied.
    #[error(
        "{config} says `fleet: {configured}`, but this host applied fleet `{applied}`; pacfleet never moves a host between fleets by itself: fix `fleet:`, or re-enroll the host on purpose"
    )]
    WrongFleet {
        /// The agent.yaml.
        config: String,
        /// Its `fleet:`.
        configured: String,
        /// The fleet of the applied state.
        applied: String,
    },
    /// A signed commit of another line of history, reachable from the tip only through a merge:
    /// it does not contain the state this host applied.
    #[error(
        "commit {commit} is signed but does not descend from {applied}, the state this host applied: it comes from another line of history, merged in by a later commit. It is never applied; sign a commit that descends from {applied} (the merge itself, after review) instead"
    )]
    OffLine {
        /// The signed commit.
        commit: String,
        /// The last accepted commit it does not descend from.
        applied: String,
    },
    /// The state directory lost its record of what was applied.
    #[error(
        "{detail}; pacfleet will not trust anything older than what this host applied. Restore the state directory from backup, or, to re-enroll this host on purpose, delete {anchor} at the console"
    )]
    StateLost {
        /// What is missing or older.
        detail: String,
        /// The anchor file that remembers.
        anchor: String,
    },
    /// The commit's fleet.yaml cannot be read, so its name and keys are unknown.
    #[error("commit {commit} has no readable fleet.yaml ({detail}); fix the fleet repository")]
    NoFleet {
        /// The commit.
        commit: String,
        /// Why.
        detail: String,
    },
}

/// A verified statement.
#[derive(Debug, Clone)]
pub struct Verified {
    /// The statement.
    pub statement: Statement,
    /// Names of the distinct trusted keys that signed.
    pub signers: Vec<String>,
}

/// Checks one note against `keys` and `threshold` for `commit`/`tree`/`fleet` at `now`.
/// Order: the note parses; the signatures are authentic; enough distinct trusted keys signed;
/// the statement names this commit, tree and fleet; it has not expired.
pub fn verify_note(
    bytes: &[u8],
    commit: &str,
    tree: &str,
    fleet: &str,
    keys: &[Key],
    threshold: usize,
    now: DateTime<Utc>,
) -> Result<Verified, Refusal> {
    let note = Note::parse(bytes).map_err(|detail| Refusal::Corrupt {
        commit: commit.to_owned(),
        detail,
    })?;
    let mut signed: BTreeMap<Vec<u8>, String> = BTreeMap::new();
    let mut untrusted = BTreeSet::new();
    for sig in &note.signatures {
        let id = sig_key_id(sig);
        if !sig.is_prehashed() {
            return Err(Refusal::Legacy {
                commit: commit.to_owned(),
                key: id,
            });
        }
        let candidates: Vec<&Key> = keys.iter().filter(|k| k.id() == id).collect();
        if candidates.is_empty() {
            untrusted.insert(id);
            continue;
        }
        let good = candidates.iter().find(|k| {
            minisign::verify(
                &k.key,
                sig,
                std::io::Cursor::new(note.text.as_bytes()),
                true,
                false,
                false,
            )
            .is_ok()
        });
        match good {
            Some(k) => {
                signed.insert(k.identity(), k.name.clone());
            }
            None => {
                return Err(Refusal::Tampered {
                    commit: commit.to_owned(),
                    key: id,
                    name: candidates
                        .iter()
                        .map(|k| k.name.as_str())
                        .collect::<Vec<_>>()
                        .join("/"),
                });
            }
        }
    }
    let names = |keys: &[Key]| {
        keys.iter()
            .map(|k| format!("{} ({})", k.name, k.id()))
            .collect::<Vec<_>>()
            .join(", ")
    };
    if signed.is_empty() {
        if note.signatures.is_empty() {
            return Err(Refusal::Unsigned {
                commit: commit.to_owned(),
            });
        }
        return Err(Refusal::UntrustedKey {
            commit: commit.to_owned(),
            keys: untrusted.into_iter().collect::<Vec<_>>().join(", "),
            trusted: names(keys),
        });
    }
    let signers: Vec<String> = signed.into_values().collect();
    if signers.len() < threshold {
        return Err(Refusal::BelowThreshold {
            commit: commit.to_owned(),
            have: signers.len(),
            need: threshold,
            signers: signers.join(", "),
        });
    }
    let s = &note.statement;
    for (field, found, expected) in [
        ("commit", &s.commit, commit),
        ("tree", &s.tree, tree),
        ("fleet", &s.fleet, fleet),
    ] {
        if found != expected {
            return Err(Refusal::Mismatch {
                commit: commit.to_owned(),
                field,
                found: found.clone(),
                expected: expected.to_owned(),
            });
        }
    }
    if s.expires <= now {
        return Err(Refusal::Expired {
            commit: commit.to_owned(),
            expired: s.expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        });
    }
    Ok(Verified {
        statement: note.statement,
        signers,
    })
}

/// What a host remembers of the last state it applied, for the next verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Anchor {
    /// The applied commit.
    pub commit: String,
    /// Its statement's sequence number.
    pub sequence: u64,
    /// The fleet's name.
    pub fleet: String,
    /// The fleet.yaml keys in force after it (base64 public keys, with names), if it had any;
    /// `None`: the host's own `trusted_keys`.
    pub keys: Option<Vec<(String, String)>>,
    /// The keys that accepted it (in force before it; `None`: the host's `trusted_keys`), so
    /// its own statement still verifies after a hand-over that removed its signer.
    #[serde(default)]
    pub accepted_by: Option<Vec<(String, String)>>,
}

/// The outcome of choosing a target.
#[derive(Debug, Clone)]
pub struct Selection {
    /// The newest acceptable commit, with its verified statement and the keys in force
    /// after it; `None`: nothing newer than the anchor is acceptable (stay).
    pub target: Option<Accepted>,
    /// Unsigned commits newer than the target: they wait for a signature.
    pub waiting: Vec<String>,
    /// The newest commit that carried a statement but was refused, and why.
    pub refused: Option<Refusal>,
}

/// An accepted commit.
#[derive(Debug, Clone)]
pub struct Accepted {
    /// The commit.
    pub commit: String,
    /// Its tree.
    pub tree: String,
    /// The verified statement.
    pub verified: Verified,
    /// The anchor to record once it is applied.
    pub anchor: Anchor,
}

/// Choosing a target failed for a reason other than trust.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// Reading the repository failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// A refusal that stops the whole pass.
    #[error(transparent)]
    Refused(#[from] Refusal),
}

/// Chooses what a host applies: walks the commits after `anchor` up to `tip`, oldest first,
/// accepting each whose statement verifies against the keys in force (the host's
/// `root_keys`, or fleet.yaml `keys:` established by an earlier accepted commit), whose
/// sequence is not lower than the last accepted one. A fleet.yaml `keys:` change therefore
/// takes effect only once a commit carrying it is accepted under the previous keys.
/// Refuses outright if `tip` does not descend from the anchor.
#[allow(clippy::too_many_arguments)]
pub fn select(
    repo: &Path,
    tip: &str,
    anchor: Option<&Anchor>,
    fleet: Option<&str>,
    root_keys: &[Key],
    threshold: usize,
    now: DateTime<Utc>,
) -> Result<Selection, SelectError> {
    // One open repository for the whole walk: every commit since the anchor is asked about.
    let r = source::Repo::open(repo)?;
    if let Some(a) = anchor
        && !r.is_ancestor(&a.commit, tip)?
    {
        return Err(Refusal::NotDescendant {
            tip: tip.to_owned(),
            applied: a.commit.clone(),
        }
        .into());
    }
    let mut keys: Vec<Key> = match anchor.and_then(|a| a.keys.as_ref()) {
        Some(list) => list
            .iter()
            .filter_map(|(name, b64)| parse_key(name, b64).ok())
            .collect(),
        None => root_keys.to_vec(),
    };
    let mut in_force: Option<Vec<(String, String)>> = anchor.and_then(|a| a.keys.clone());
    let mut floor = anchor.map(|a| a.sequence);
    let mut commits = r.commits_between(anchor.map(|a| a.commit.as_str()), tip)?;
    // Newest first here. A fresh host looks at the newest MAX_WALK commits of the history; a
    // host with an applied state must see every commit since it.
    if anchor.is_none() {
        commits.truncate(MAX_WALK);
    }
    commits.reverse();
    let mut selection = Selection {
        target: None,
        waiting: Vec::new(),
        refused: None,
    };
    // Each target must descend from the one before it (the applied state, then every commit
    // accepted on the way): `anchor..tip` also lists commits of a side line merged in.
    let mut line_base: Option<String> = anchor.map(|a| a.commit.clone());
    if commits.len() > MAX_WALK {
        return Err(Refusal::TooManyCommits {
            count: commits.len(),
            since: anchor.map_or_else(|| "the root".to_owned(), |a| a.commit.clone()),
        }
        .into());
    }
    let notes = r.notes()?;
    for commit in commits {
        let note = match notes.note(&commit) {
            Ok(Some(note)) => note,
            Ok(None) => {
                selection.waiting.push(commit);
                continue;
            }
            Err(source::ReadError::NoteTooLarge { size, .. }) => {
                selection.refused = Some(Refusal::Corrupt {
                    commit,
                    detail: NoteError::TooLarge { size, unread: true },
                });
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(base) = &line_base
            && !r.is_ancestor(base, &commit)?
        {
            selection.refused = Some(Refusal::OffLine {
                commit,
                applied: base.clone(),
            });
            continue;
        }
        let tree = r.commit_tree(&commit)?;
        // The host's `fleet:` (agent.yaml), else the fleet it applied before, else (a fresh
        // host without `fleet:`) the one the statement names: checked against fleet.yaml once
        // the signatures verified. Nothing else of the commit is read before that.
        let claimed = Note::parse(&note).ok().map(|n| n.statement.fleet);
        let expected_fleet = fleet
            .or(anchor.map(|a| a.fleet.as_str()))
            .or(claimed.as_deref())
            .unwrap_or_default()
            .to_owned();
        let verified = match verify_note(
            &note,
            &commit,
            &tree,
            &expected_fleet,
            &keys,
            threshold,
            now,
        ) {
            Ok(v) => v,
            Err(r) => {
                selection.refused = Some(r);
                continue;
            }
        };
        let spec = match gix::ObjectId::from_hex(tree.as_bytes())
            .map_err(|e| e.to_string())
            .and_then(|t| fleet_spec_in(&r, t).map_err(|e| e.to_string()))
        {
            Ok(s) => s,
            Err(e) => {
                selection.refused = Some(Refusal::NoFleet {
                    commit,
                    detail: e.to_string(),
                });
                continue;
            }
        };
        if spec.name.as_str() != expected_fleet {
            selection.refused = Some(Refusal::Mismatch {
                commit,
                field: "fleet",
                found: expected_fleet,
                expected: spec.name.to_string(),
            });
            continue;
        }
        let expected_fleet = expected_fleet.as_str();
        if let Some(f) = floor
            && verified.statement.sequence < f
        {
            selection.refused = Some(Refusal::Rollback {
                commit,
                sequence: verified.statement.sequence,
                applied: f,
            });
            continue;
        }
        let next_keys = match fleet_keys(&spec) {
            Ok(k) => k,
            Err(e) => {
                selection.refused = Some(Refusal::NoFleet {
                    commit,
                    detail: e.to_string(),
                });
                continue;
            }
        };
        floor = Some(verified.statement.sequence);
        let anchor = Anchor {
            commit: commit.clone(),
            sequence: verified.statement.sequence,
            fleet: expected_fleet.to_owned(),
            keys: next_keys
                .as_ref()
                .map(|ks| ks.iter().map(|k| (k.name.clone(), k.to_base64())).collect()),
            accepted_by: in_force.clone(),
        };
        in_force = anchor.keys.clone();
        keys = next_keys.unwrap_or_else(|| root_keys.to_vec());
        line_base = Some(commit.clone());
        selection.target = Some(Accepted {
            commit,
            tree,
            verified,
            anchor,
        });
        selection.waiting.clear();
        selection.refused = None;
    }
    Ok(selection)
}

/// Re-verifies the anchor's own commit now (for a host with nothing newer to apply): its
/// statement may have expired (stale) or been replaced by a re-signed one.
pub fn reverify_anchor(
    repo: &Path,
    anchor: &Anchor,
    root_keys: &[Key],
    threshold: usize,
    now: DateTime<Utc>,
) -> Result<Verified, SelectError> {
    // The keys that accepted the anchor are those before it; fleet.yaml at the anchor lists
    // the keys after it. A re-signed statement for the same commit must satisfy the latter.
    let keys: Vec<Key> = match &anchor.keys {
        Some(list) => list
            .iter()
            .filter_map(|(n, b)| parse_key(n, b).ok())
            .collect(),
        None => root_keys.to_vec(),
    };
    let note = source::read_note(repo, &anchor.commit)?.ok_or_else(|| Refusal::Unsigned {
        commit: anchor.commit.clone(),
    })?;
    let tree = source::commit_tree(repo, &anchor.commit)?;
    let v = match verify_note(
        &note,
        &anchor.commit,
        &tree,
        &anchor.fleet,
        &keys,
        threshold,
        now,
    ) {
        Ok(v) => v,
        // The statement that was accepted, signed under the keys before the anchor (a
        // hand-over signed by the outgoing key): it still holds under those keys.
        Err(refusal @ (Refusal::UntrustedKey { .. } | Refusal::BelowThreshold { .. })) => {
            let before: Vec<Key> = match &anchor.accepted_by {
                Some(list) => list
                    .iter()
                    .filter_map(|(n, b)| parse_key(n, b).ok())
                    .collect(),
                None => root_keys.to_vec(),
            };
            match verify_note(
                &note,
                &anchor.commit,
                &tree,
                &anchor.fleet,
                &before,
                threshold,
                now,
            ) {
                Ok(v) if v.statement.sequence == anchor.sequence => v,
                Ok(_) => return Err(refusal.into()),
                Err(e) => return Err(e.into()),
            }
        }
        Err(e) => return Err(e.into()),
    };
    if v.statement.sequence < anchor.sequence {
        return Err(Refusal::Rollback {
            commit: anchor.commit.clone(),
            sequence: v.statement.sequence,
            applied: anchor.sequence,
        }
        .into());
    }
    Ok(v)
}

/// Signing failed.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// Reading the repository failed.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The secret key could not be used.
    #[error("cannot use secret key {path}: {detail}")]
    Key {
        /// The key file.
        path: String,
        /// Why.
        detail: String,
    },
    /// The commit's fleet.yaml is missing or invalid.
    #[error(
        "cannot sign {commit}: {source}; a signed state names its fleet, so fleet.yaml must be valid"
    )]
    NoFleet {
        /// The commit.
        commit: String,
        /// Why.
        #[source]
        source: FleetSpecError,
    },
    /// This key already signed the current statement.
    #[error(
        "key {key} already signed the statement on {commit} (sequence {sequence}); another key holder signs to reach a threshold, or pass --renew for a new statement"
    )]
    AlreadySigned {
        /// Key id.
        key: String,
        /// The commit.
        commit: String,
        /// The statement's sequence.
        sequence: u64,
    },
    /// minisign or git refused.
    #[error("{context}: {detail}")]
    Other {
        /// What we were doing.
        context: String,
        /// Why it failed.
        detail: String,
    },
}

/// How long a new statement stays valid unless its signer says otherwise: `fleetctl sign`'s
/// `--expires-in` default ([`DEFAULT_EXPIRY_ARG`]), and what set-latest and rollback sign
/// with. Hosts call the fleet stale once it passed; sign the tip again before.
pub const DEFAULT_EXPIRY: chrono::Duration = chrono::Duration::days(30);

/// [`DEFAULT_EXPIRY`] as `--expires-in` reads it (a test in `cli` checks they agree).
pub const DEFAULT_EXPIRY_ARG: &str = "30d";

/// Options for `sign`.
#[derive(Debug, Clone)]
pub struct SignOptions {
    /// Sequence number; default: the highest in the notes + 1.
    pub sequence: Option<u64>,
    /// When the statement expires.
    pub expires: DateTime<Utc>,
    /// Start a new statement even if a valid one exists (instead of adding a signature).
    pub renew: bool,
}

/// What `sign` did.
#[derive(Debug, Clone)]
pub struct Signed {
    /// The statement signed.
    pub statement: Statement,
    /// Whether the signature was added to an existing statement (threshold signing).
    pub appended: bool,
    /// Key ids that have signed the statement now.
    pub signers: Vec<String>,
}

/// Reads a secret key file (`fleetctl keygen` or `minisign -G` format). Encrypted keys need
/// `password` (from `PACFLEET_KEY_PASSWORD`, or asked on the terminal by the caller).
pub fn load_secret_key(
    path: &Path,
    password: Option<String>,
) -> Result<minisign::SecretKey, SignError> {
    let err = |detail: String| SignError::Key {
        path: path.display().to_string(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
    let boxed = minisign::SecretKeyBox::from_string(&text).map_err(|e| err(e.to_string()))?;
    match minisign::SecretKey::from_unencrypted_box(boxed.clone()) {
        Ok(sk) => Ok(sk),
        // minisign says "Key might be encrypted" only when the key is; anything else is a
        // corrupt key or not a secret key at all.
        Err(e) if !e.to_string().contains("encrypted") => Err(err(format!(
            "{e}; expected a minisign secret key (`.key` from `fleetctl keygen` or `minisign -G`)"
        ))),
        Err(_) => match password {
            Some(pw) => minisign::SecretKey::from_box(boxed, Some(pw)).map_err(|e| err(e.to_string())),
            None => Err(err(
                "the key is password-protected; set PACFLEET_KEY_PASSWORD or run on a terminal to be asked".into(),
            )),
        },
    }
}

/// The highest sequence number of any statement under refs/notes/pacfleet (0 if none).
pub fn highest_sequence(repo: &Path) -> Result<u64, ReadError> {
    highest_sequence_in(repo, NOTES_REF)
}

/// The highest sequence number of any statement in the notes tree at `notes_ref` (0 if the
/// ref does not exist).
///
/// Reading every note costs time in the length of the history, so the answer is remembered
/// per notes tree in the git directory (`pacfleet-sequences`: `<tree id> <highest>` lines, the
/// last few trees). For a tree not remembered, the blobs that differ from a remembered tree
/// are read (a sign adds or replaces one note; a fetch adds the remote's new ones): the
/// highest is the remembered one or a new note's, unless a note that changed or went away
/// held the remembered highest and no new one reaches it, and then every note is read again. A missing or damaged file only
/// costs that full read.
pub fn highest_sequence_in(repo: &Path, notes_ref: &str) -> Result<u64, ReadError> {
    if source::rev_parse(repo, notes_ref).is_err() {
        return Ok(0);
    }
    let r = source::Repo::open(repo)?;
    let Some(tree) = r.ref_tree(notes_ref)? else {
        return Ok(0);
    };
    let cache_path = r.git_dir().join(SEQUENCE_CACHE);
    let mut known: Vec<(String, u64)> = std::fs::read_to_string(&cache_path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (t, n) = l.split_once(' ')?;
            Some((t.to_owned(), n.parse().ok()?))
        })
        .collect();
    let tree_hex = tree.to_string();
    if let Some((_, n)) = known.iter().find(|(t, _)| *t == tree_hex) {
        return Ok(*n);
    }
    let sequence = |id| -> Result<Option<u64>, ReadError> {
        Ok(Note::parse(&r.blob(id)?).ok().map(|n| n.statement.sequence))
    };
    let mut highest = None;
    for (old, old_highest) in &known {
        let Ok(old) = gix::ObjectId::from_hex(old.as_bytes()) else {
            continue;
        };
        let Ok((gone, came)) = r.changed_blobs(old, tree) else {
            continue; // no longer in the repository
        };
        // Every note left alone holds at most the remembered highest.
        let mut came_highest = None;
        for (_, id) in came {
            came_highest = came_highest.max(sequence(id)?);
        }
        if came_highest < Some(*old_highest) {
            let mut lost_highest = false;
            for (_, id) in gone {
                lost_highest |= sequence(id)? >= Some(*old_highest);
            }
            if lost_highest {
                continue; // what holds the highest now is not known
            }
        }
        highest = Some(came_highest.map_or(*old_highest, |c| c.max(*old_highest)));
        break;
    }
    let highest = match highest {
        Some(h) => h,
        None => {
            let mut h = 0;
            for (_, id) in r.blobs(tree)? {
                h = h.max(sequence(id)?.unwrap_or(0));
            }
            h
        }
    };
    known.insert(0, (tree_hex, highest));
    known.truncate(4);
    let text: String = known.iter().map(|(t, n)| format!("{t} {n}\n")).collect();
    // A hint, rebuilt from the notes when lost: replaced whole (never half-written), no fsync.
    let written = cache_path
        .parent()
        .ok_or_else(|| std::io::Error::other("no directory"))
        .and_then(tempfile::NamedTempFile::new_in)
        .and_then(|mut tmp| {
            std::io::Write::write_all(&mut tmp, text.as_bytes())?;
            tmp.persist(&cache_path).map(drop).map_err(|e| e.error)
        });
    if let Err(e) = written {
        tracing::debug!(
            "cannot remember the highest sequence in {}: {e}",
            cache_path.display()
        );
    }
    Ok(highest)
}

/// Where [`highest_sequence_in`] remembers its answers, in the git directory.
const SEQUENCE_CACHE: &str = "pacfleet-sequences";

/// Signs `rev` in the repository at `repo`: writes (or extends) its statement note under
/// refs/notes/pacfleet. A valid statement by other keys gets this key's signature appended
/// (threshold signing); otherwise a new statement is made with the next sequence number.
pub fn sign_commit(
    repo: &Path,
    rev: &str,
    sk: &minisign::SecretKey,
    opts: &SignOptions,
) -> Result<Signed, SignError> {
    let commit = source::rev_parse(repo, rev)?;
    let tree = source::commit_tree(repo, &commit)?;
    let spec = fleet_spec(repo, &commit).map_err(|source| SignError::NoFleet {
        commit: commit.clone(),
        source,
    })?;
    let pk = PublicKey::from_secret_key(sk).map_err(|e| SignError::Other {
        context: "deriving the public key".into(),
        detail: e.to_string(),
    })?;
    let my_id = key_id(&pk);
    let existing = source::read_note(repo, &commit)?
        .and_then(|bytes| Note::parse(&bytes).ok())
        .filter(|n| {
            !opts.renew
                && n.statement.commit == commit
                && n.statement.tree == tree
                && n.statement.fleet == spec.name.as_str()
                && n.statement.expires > Utc::now()
        });
    let (mut note, appended) = match existing {
        // A co-signer never vouches for a longer validity than it asked for itself.
        Some(n) if n.statement.expires > opts.expires => {
            return Err(SignError::Other {
                context: format!(
                    "co-signing the statement on {commit} (sequence {})",
                    n.statement.sequence
                ),
                detail: format!(
                    "it expires at {}, later than this signature would ({}); pass a longer --expires-in to vouch for that, or --renew for a new statement",
                    n.statement
                        .expires
                        .to_rfc3339_opts(SecondsFormat::Secs, true),
                    opts.expires.to_rfc3339_opts(SecondsFormat::Secs, true)
                ),
            });
        }
        Some(n) => {
            if n.signatures.iter().any(|s| sig_key_id(s) == my_id) {
                return Err(SignError::AlreadySigned {
                    key: my_id,
                    commit,
                    sequence: n.statement.sequence,
                });
            }
            (n, true)
        }
        None => {
            let sequence = match opts.sequence {
                Some(s) => s,
                None => highest_sequence(repo)?
                    .checked_add(1)
                    .ok_or_else(|| SignError::Other {
                        context: "choosing the sequence number".into(),
                        detail: format!(
                            "the notes already hold sequence {}; pass --sequence",
                            u64::MAX
                        ),
                    })?,
            };
            let statement = Statement {
                fleet: spec.name.to_string(),
                commit: commit.clone(),
                tree,
                sequence,
                expires: opts.expires,
            };
            (
                Note {
                    text: statement.to_text(),
                    statement,
                    signatures: Vec::new(),
                },
                false,
            )
        }
    };
    let trusted_comment = format!(
        "pacfleet fleet {} commit {} sequence {}",
        note.statement.fleet, note.statement.commit, note.statement.sequence
    );
    let sig = minisign::sign(
        Some(&pk),
        sk,
        std::io::Cursor::new(note.text.as_bytes()),
        Some(&trusted_comment),
        Some("signature from fleetctl sign"),
    )
    .map_err(|e| SignError::Other {
        context: "signing".into(),
        detail: e.to_string(),
    })?;
    note.signatures.push(sig);
    write_note(repo, &commit, note.render().as_bytes())?;
    Ok(Signed {
        signers: note.signatures.iter().map(sig_key_id).collect(),
        statement: note.statement,
        appended,
    })
}

/// Replaces the note on `commit` under refs/notes/pacfleet ([`source::write_note`]).
fn write_note(repo: &Path, commit: &str, data: &[u8]) -> Result<(), SignError> {
    source::write_note(repo, NOTES_REF, commit, data).map_err(|e| SignError::Other {
        context: e.context,
        detail: e.detail,
    })
}

/// Why a commit's fleet.yaml cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum FleetSpecError {
    /// The commit's tree could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The commit has no fleet.yaml.
    #[error("fleet.yaml is missing")]
    Missing,
    /// fleet.yaml is not a valid Fleet manifest.
    #[error("fleet.yaml: {0}")]
    Invalid(#[source] serde_yaml::Error),
}

/// `commit`'s fleet.yaml (the fleet's name and keys), or why it cannot be read.
pub fn fleet_spec(repo: &Path, commit: &str) -> Result<FleetSpec, FleetSpecError> {
    let path = repo;
    let repo = source::Repo::open(path)?;
    let tree = repo.commit_tree(commit)?;
    let tree =
        gix::ObjectId::from_hex(tree.as_bytes()).map_err(|e| ReadError::UnknownRevision {
            repo: path.to_owned(),
            rev: commit.to_owned(),
            detail: e.to_string(),
        })?;
    fleet_spec_in(&repo, tree)
}

/// The fleet.yaml of the tree `tree` in an open repository, found by its path (not a walk of
/// the tree, which holds every Host manifest).
fn fleet_spec_in(repo: &source::Repo, tree: gix::ObjectId) -> Result<FleetSpec, FleetSpecError> {
    let bytes = repo
        .file_in_tree(tree, "fleet.yaml")?
        .ok_or(FleetSpecError::Missing)?;
    serde_yaml::from_slice(&bytes).map_err(FleetSpecError::Invalid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement() -> Statement {
        Statement {
            fleet: "acme".into(),
            commit: "a".repeat(40),
            tree: "b".repeat(40),
            sequence: 7,
            expires: "2026-12-23T09:00:00Z".parse().unwrap(),
        }
    }

    fn keypair() -> minisign::KeyPair {
        minisign::KeyPair::generate_unencrypted_keypair().unwrap()
    }

    fn sign(kp: &minisign::KeyPair, text: &str) -> SignatureBox {
        minisign::sign(
            Some(&kp.pk),
            &kp.sk,
            std::io::Cursor::new(text.as_bytes()),
            Some("pacfleet"),
            None,
        )
        .unwrap()
    }

    fn key(name: &str, kp: &minisign::KeyPair) -> Key {
        Key {
            name: name.into(),
            key: kp.pk.clone(),
        }
    }

    fn note(st: &Statement, kps: &[&minisign::KeyPair]) -> Vec<u8> {
        let text = st.to_text();
        Note {
            signatures: kps.iter().map(|k| sign(k, &text)).collect(),
            text,
            statement: st.clone(),
        }
        .render()
        .into_bytes()
    }

    fn now() -> DateTime<Utc> {
        "2026-11-23T12:00:00Z".parse().unwrap()
    }

    fn check(bytes: &[u8], keys: &[Key], threshold: usize) -> Result<Verified, Refusal> {
        verify_note(
            bytes,
            &"a".repeat(40),
            &"b".repeat(40),
            "acme",
            keys,
            threshold,
            now(),
        )
    }

    #[test]
    fn statement_round_trips_and_is_canonical() {
        let st = statement();
        let text = st.to_text();
        assert!(text.starts_with("pacfleet-statement 1\nfleet acme\ncommit aaaa"));
        assert_eq!(Statement::parse(&text), Ok(st));
        assert_eq!(
            Statement::parse(&text.replace("sequence 7", "sequence  7")),
            Err(NoteError::Field {
                key: "sequence",
                found: "sequence  7".into()
            })
        );
        assert_eq!(
            Statement::parse(&text.replace(
                "expires 2026-12-23T09:00:00Z",
                "expires 2026-12-23T10:00:00+01:00"
            )),
            Err(NoteError::NotCanonical)
        );
        assert_eq!(
            Statement::parse(&format!("{text}extra 1\n")),
            Err(NoteError::TrailingText)
        );
        assert_eq!(
            Statement::parse(&text.replace("\nfleet ", "\nfleeet ")),
            Err(NoteError::Field {
                key: "fleet",
                found: "fleeet acme".into()
            })
        );
        assert_eq!(
            Statement::parse(&text.replace("pacfleet-statement 1", "pacfleet-statement 2")),
            Err(NoteError::Header {
                found: "pacfleet-statement 2".into()
            })
        );
        assert_eq!(
            Statement::parse(text.trim_end()),
            Err(NoteError::NoNewline {
                line: "expires 2026-12-23T09:00:00Z".into()
            })
        );
        assert_eq!(
            Statement::parse(&text.replace("sequence 7", "sequence x")),
            Err(NoteError::Sequence { found: "x".into() })
        );
        assert!(matches!(
            Statement::parse(&text.replace("2026-12-23T09:00:00Z", "soon")),
            Err(NoteError::Expires { found, .. }) if found == "soon"
        ));
    }

    #[test]
    fn valid_note_names_its_signers() {
        let (a, b) = (keypair(), keypair());
        let keys = [key("alice", &a), key("bob", &b)];
        let v = check(&note(&statement(), &[&a, &b]), &keys, 2).unwrap();
        assert_eq!(v.signers, {
            let mut s = vec!["alice".to_owned(), "bob".to_owned()];
            s.sort_by_key(|n| keys.iter().find(|k| &k.name == n).unwrap().identity());
            s
        });
        assert_eq!(v.statement.sequence, 7);
    }

    #[test]
    fn each_rule_refuses() {
        let (a, b, c) = (keypair(), keypair(), keypair());
        let keys = [key("alice", &a), key("bob", &b)];
        let st = statement();
        assert!(matches!(
            check(&note(&st, &[]), &keys, 1),
            Err(Refusal::Unsigned { .. })
        ));
        assert!(matches!(
            check(&note(&st, &[&c]), &keys, 1),
            Err(Refusal::UntrustedKey { .. })
        ));
        assert!(matches!(
            check(&note(&st, &[&a]), &keys, 2),
            Err(Refusal::BelowThreshold {
                have: 1,
                need: 2,
                ..
            })
        ));
        // The same key twice is one key.
        assert!(matches!(
            check(&note(&st, &[&a, &a]), &keys, 2),
            Err(Refusal::BelowThreshold { have: 1, .. })
        ));
        // Two key files with the same key are one key.
        let dup = [key("alice", &a), key("alice-again", &a)];
        assert!(matches!(
            check(&note(&st, &[&a]), &dup, 2),
            Err(Refusal::BelowThreshold { have: 1, .. })
        ));
        for (field, other) in [
            (
                "commit",
                Statement {
                    commit: "c".repeat(40),
                    ..st.clone()
                },
            ),
            (
                "tree",
                Statement {
                    tree: "c".repeat(40),
                    ..st.clone()
                },
            ),
            (
                "fleet",
                Statement {
                    fleet: "other".into(),
                    ..st.clone()
                },
            ),
        ] {
            match check(&note(&other, &[&a]), &keys, 1) {
                Err(Refusal::Mismatch { field: f, .. }) => assert_eq!(f, field),
                other => panic!("{field}: {other:?}"),
            }
        }
        let expired = Statement {
            expires: "2026-11-01T00:00:00Z".parse().unwrap(),
            ..st.clone()
        };
        assert!(matches!(
            check(&note(&expired, &[&a]), &keys, 1),
            Err(Refusal::Expired { .. })
        ));
        // Tampered: the statement changed after signing.
        let good = String::from_utf8(note(&st, &[&a])).unwrap();
        let tampered = good.replace("sequence 7", "sequence 9");
        assert!(matches!(
            check(tampered.as_bytes(), &keys, 1),
            Err(Refusal::Tampered { .. })
        ));
        // Corrupt.
        assert!(matches!(
            check(b"garbage", &keys, 1),
            Err(Refusal::Corrupt {
                detail: NoteError::NoNewline { .. },
                ..
            })
        ));
        let bad_sig = format!("{}\nuntrusted comment: x\nnot base64\n", st.to_text());
        assert!(matches!(
            check(bad_sig.as_bytes(), &keys, 1),
            Err(Refusal::Corrupt {
                detail: NoteError::Signature { .. },
                ..
            })
        ));
        assert!(matches!(
            check(&[0xff, 0xfe], &keys, 1),
            Err(Refusal::Corrupt {
                detail: NoteError::NotUtf8,
                ..
            })
        ));
        let huge = vec![b'a'; MAX_NOTE_BYTES + 1];
        match check(&huge, &keys, 1) {
            Err(Refusal::Corrupt { detail, .. }) => {
                assert_eq!(
                    detail,
                    NoteError::TooLarge {
                        size: MAX_NOTE_BYTES as u64 + 1,
                        unread: false
                    }
                );
                assert!(detail.to_string().contains("64 KiB"), "{detail}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn keys_parse_from_pub_files_or_base64() {
        let kp = keypair();
        let boxed = kp.pk.to_box().unwrap().into_string();
        let k = parse_key("ops", &boxed).unwrap();
        assert_eq!(k.id(), key("x", &kp).id());
        let line = kp.pk.to_base64();
        assert_eq!(parse_key("ops", &line).unwrap().to_base64(), line);
        let err = parse_key("ops", "nope").unwrap_err().to_string();
        assert!(err.contains("minisign public key"), "{err}");
    }
}
