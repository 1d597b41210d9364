//! A host's signed status report (docs/contract.md §6): what one host tells the fleet about its
//! last pass that changed its state. Owns the report's shape (the JSON every reader parses),
//! its bounds, and signing and verifying it with the host's minisign key. Where reports live
//! (the status repository's refs) is `status_repo`'s.
//!
//! A report is written by the host it names, and read by every other host of its pool (later
//! waves decide from it) and by `fleetctl fleet status`. Until verified it is an adversary's:
//! anyone with write access to the status repository can put bytes under any ref. So a reader
//! bounds what it reads ([`MAX_REPORT_BYTES`]), parses strictly (unknown fields refused), and
//! accepts a report only when it is signed by the key the host's manifest names (`key:` in
//! `hosts/<name>.yaml`) at the reader's own target commit, names this fleet, the ref's host
//! and pool, and is not older than one the reader already saw.

use std::io::Read as _;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use minisign::SignatureBox;
use serde::{Deserialize, Serialize};

use crate::keys::{Key, sig_key_id};

/// The report format this pacfleet writes and reads.
pub const FORMAT: u32 = 1;

/// Reports larger than this are not read (a real one is a few KiB).
pub const MAX_REPORT_BYTES: usize = 256 * 1024;

/// Signatures larger than this are not read (a minisign signature is about 300 bytes).
pub const MAX_SIGNATURE_BYTES: usize = 4 * 1024;

/// Host key files larger than this are not read (a minisign secret key is about 350 bytes).
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// What a host's pass left it as (docs/contract.md §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReportOutcome {
    /// The host matches its desired state.
    Converged,
    /// The change was applied (and, with `health:`, found healthy).
    Applied,
    /// A change is due and waits: a window, a pause, or the host's rollout wave.
    Pending,
    /// Applying or the health check failed.
    Failed,
    /// The health check failed and the host went back to the packages it had before.
    RolledBack,
    /// The trust rules refused the fleet state.
    Refused,
    /// No pool selects the host.
    NotInFleet,
}

impl ReportOutcome {
    /// The word the report and `fleet status` use.
    pub fn label(self) -> &'static str {
        match self {
            ReportOutcome::Converged => "converged",
            ReportOutcome::Applied => "applied",
            ReportOutcome::Pending => "pending",
            ReportOutcome::Failed => "failed",
            ReportOutcome::RolledBack => "rolled-back",
            ReportOutcome::Refused => "refused",
            ReportOutcome::NotInFleet => "not-in-fleet",
        }
    }

    /// Whether the host succeeded on its change (what a later wave waits for).
    pub fn succeeded(self) -> bool {
        matches!(self, ReportOutcome::Converged | ReportOutcome::Applied)
    }

    /// Whether the host failed its change (what the failure budget counts).
    pub fn failed(self) -> bool {
        matches!(self, ReportOutcome::Failed | ReportOutcome::RolledBack)
    }
}

/// The result of the pool's `health.commands` after applying.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Health {
    /// Every command exited 0 within the timeout.
    pub passed: bool,
    /// The first failing command and what it said (bounded), when one failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<String>,
}

/// One host's report of its last pass that changed its state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostReport {
    /// [`FORMAT`].
    pub format: u32,
    /// The fleet (fleet.yaml `name:`).
    pub fleet: String,
    /// The reporting host.
    pub host: String,
    /// Its pool.
    pub pool: String,
    /// Its wave in the pool's rollout (0 without `rollout:`).
    pub wave: usize,
    /// The change the host worked on: the commit that made the pool's desired state what it is
    /// at `target` (the rollout id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<String>,
    /// The signed commit the pass aimed at.
    pub target: String,
    /// The commit whose state the host has applied, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied: Option<String>,
    /// The pool's generation at `target`, if pinned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generation: Option<u32>,
    /// What the pass left the host as.
    pub outcome: ReportOutcome,
    /// Why a pending host waits, or why it failed (plain text, bounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// The health check after applying, when the pool has `health:` and the pass applied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health: Option<Health>,
    /// Changes made outside pacfleet (`action name`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub drift: Vec<String>,
    /// Packages this host's IgnorePkg/IgnoreGroup hold back.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub held: Vec<String>,
    /// Scriptlet and hook warnings of the pass.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// The running kernel's modules are gone (a kernel upgrade): the host needs a reboot.
    #[serde(default)]
    pub needs_reboot: bool,
    /// Rises with every report this host writes: a reader refuses one lower than a report of
    /// this host it already saw (a replay).
    pub sequence: u64,
    /// When the pass ended.
    pub at: DateTime<Utc>,
}

/// A report as published: its JSON and a minisign signature over exactly those bytes (the
/// text of a `.minisig` file, so `minisign -Vm report.json -P KEY` checks it too).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedReport {
    /// The report, as JSON (pretty-printed, ending in a newline).
    pub json: Vec<u8>,
    /// The signature, prehashed, by the host's key.
    pub signature: String,
}

/// Signing a report failed; nothing is published.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    /// The report does not serialize (a bug).
    #[error("cannot write the report of host {host} as JSON: {source}")]
    Json {
        /// The report's host.
        host: String,
        /// serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// The report is larger than readers accept.
    #[error(
        "the report of host {host} is {size} bytes, over the {MAX_REPORT_BYTES} bytes readers accept; shorten its message, drift, held or warnings lists"
    )]
    TooLarge {
        /// The report's host.
        host: String,
        /// Its size in bytes.
        size: usize,
    },
    /// minisign refused to sign.
    #[error("cannot sign the report of host {host}: {detail}")]
    Sign {
        /// The report's host.
        host: String,
        /// minisign's reason.
        detail: String,
    },
}

/// Signs `report` with the host's secret key (`host_key:`, read by [`load_host_key`]). The
/// trusted comment names fleet, pool, host and sequence, for whoever checks it with minisign.
pub fn sign(report: &HostReport, key: &minisign::SecretKey) -> Result<SignedReport, SignError> {
    let host = || report.host.clone();
    let mut json = serde_json::to_vec_pretty(report).map_err(|source| SignError::Json {
        host: host(),
        source,
    })?;
    json.push(b'\n');
    if json.len() > MAX_REPORT_BYTES {
        return Err(SignError::TooLarge {
            host: host(),
            size: json.len(),
        });
    }
    let sign_err = |e: minisign::PError| SignError::Sign {
        host: host(),
        detail: e.to_string(),
    };
    let public = minisign::PublicKey::from_secret_key(key).map_err(sign_err)?;
    // A comment is one line: names cannot hold control characters, but the fields are Strings.
    let trusted: String = format!(
        "pacfleet report fleet {} pool {} host {} sequence {}",
        report.fleet, report.pool, report.host, report.sequence
    )
    .chars()
    .filter(|c| !c.is_control())
    .collect();
    let signature = minisign::sign(
        Some(&public),
        key,
        std::io::Cursor::new(&json),
        Some(&trusted),
        Some("signature from pacfleet host key"),
    )
    .map_err(sign_err)?;
    Ok(SignedReport {
        json,
        signature: signature.into_string(),
    })
}

/// What a reader expects of the report under one ref of the status repository.
#[derive(Debug, Clone, Copy)]
pub struct Expect<'a> {
    /// The reader's fleet (fleet.yaml `name:` at its target).
    pub fleet: &'a str,
    /// The pool the ref is under (`refs/pacfleet/status/<pool>/<host>`).
    pub pool: &'a str,
    /// The host the ref names.
    pub host: &'a str,
    /// That host's public key: `key:` of `hosts/<host>.yaml` at the reader's target commit
    /// (`None`: no manifest, or no `key:` in it).
    pub key: Option<&'a Key>,
    /// The highest sequence of this host's reports the reader accepted before, if any.
    pub seen: Option<u64>,
}

/// Why a report is not accepted. Every reason is counted by the reader ([`Self::label`]); the
/// report is ignored, never an error of the reader's own work.
#[derive(Debug, thiserror::Error)]
pub enum ReportRejection {
    /// A file of the report is over its bound; it was not read.
    #[error(
        "the report of host {host} is not read: its {file} is {size} bytes, over the {limit} bytes a report may have; pacfleet never writes that, so someone else wrote it: delete the host's ref in the status repository (the host writes it again after its next pass that changes it)"
    )]
    TooLarge {
        /// The ref's host.
        host: String,
        /// `report.json` or `report.json.minisig`.
        file: &'static str,
        /// Its size in bytes.
        size: u64,
        /// The bound.
        limit: u64,
    },
    /// The ref does not hold a report commit (`report.json` and its signature).
    #[error(
        "the status ref of host {host} holds no report: {detail}; pacfleet never writes that, so someone else wrote it: delete the ref in the status repository"
    )]
    NotAReport {
        /// The ref's host (or what stands in the ref's place of one).
        host: String,
        /// What is wrong.
        detail: String,
    },
    /// The host's manifest names no key, so nothing it wrote can be verified.
    #[error(
        "the report of host {host} cannot be verified: hosts/{host}.yaml has no `key:` at this target commit (or there is no such file); commit the host's public key (the `key:` line `fleetctl enroll` printed, the base64 line of its host.pub) and sign the commit"
    )]
    NoKey {
        /// The ref's host.
        host: String,
    },
    /// The report has no signature.
    #[error(
        "the report of host {host} is not signed (no report.json.minisig, or an empty one); pacfleet always signs its reports, so someone else wrote it: delete the ref in the status repository"
    )]
    Unsigned {
        /// The ref's host.
        host: String,
    },
    /// The signature does not parse, is legacy, or does not verify under the host's key.
    #[error(
        "the report of host {host} has a bad signature: {detail}; it is ignored. If nobody else can write the status repository, check the host's key in hosts/{host}.yaml against its host.pub"
    )]
    BadSignature {
        /// The ref's host.
        host: String,
        /// What is wrong with it.
        detail: String,
    },
    /// Signed by another key than the one the host's manifest names.
    #[error(
        "the report of host {host} is signed by key {signed_by}, not by the key hosts/{host}.yaml names ({expected}): another host or someone else wrote it, or the host has a new key whose `key:` is not in the target commit yet (commit and sign it)"
    )]
    WrongKey {
        /// The ref's host.
        host: String,
        /// The key id of the signature.
        signed_by: String,
        /// The key id of the host's manifest.
        expected: String,
    },
    /// A report format this pacfleet does not read.
    #[error(
        "the report of host {host} has format {format}, and this pacfleet reads format {FORMAT}: the host runs a newer pacfleet; upgrade pacfleet here"
    )]
    UnknownFormat {
        /// The ref's host.
        host: String,
        /// The report's `format`.
        format: u32,
    },
    /// The signed bytes are not a report of this format.
    #[error(
        "the report of host {host} is signed by its key but is not a valid report ({source}); the host's pacfleet wrote something this one cannot read: run the same pacfleet version on both"
    )]
    Malformed {
        /// The ref's host.
        host: String,
        /// serde's reason.
        #[source]
        source: serde_json::Error,
    },
    /// The report names another fleet.
    #[error(
        "the report of host {host} is for fleet {}, not {expected}: the host is enrolled in another fleet and shares this status repository, or its report was copied here; give each fleet its own status repository",
        crate::escape::quoted(fleet, 64)
    )]
    WrongFleet {
        /// The ref's host.
        host: String,
        /// The fleet the report names.
        fleet: String,
        /// The reader's fleet.
        expected: String,
    },
    /// The report names another host than its ref.
    #[error(
        "the report under host {host}'s ref names host {}: a report copied to another host's ref; it is ignored (delete the ref in the status repository)",
        crate::escape::quoted(named, 64)
    )]
    WrongHost {
        /// The ref's host.
        host: String,
        /// The host the report names.
        named: String,
    },
    /// The report names another pool than its ref.
    #[error(
        "the report of host {host} under pool {expected}'s refs names pool {}: a report copied between pools; it is ignored (delete the ref in the status repository)",
        crate::escape::quoted(pool, 64)
    )]
    WrongPool {
        /// The ref's host.
        host: String,
        /// The pool the report names.
        pool: String,
        /// The ref's pool.
        expected: String,
    },
    /// Older than a report of this host the reader already accepted.
    #[error(
        "the report of host {host} has sequence {got}, older than {seen} already seen: an old report pushed again (a replay), or the host lost its state directory; it is ignored until the host reports above {seen}"
    )]
    Replayed {
        /// The ref's host.
        host: String,
        /// The highest sequence seen before.
        seen: u64,
        /// The report's sequence.
        got: u64,
    },
}

impl ReportRejection {
    /// The kind of rejection, for counting (`too-large`, `not-a-report`, `no-key`, `unsigned`,
    /// `bad-signature`, `wrong-key`, `unknown-format`, `malformed`, `wrong-fleet`,
    /// `wrong-host`, `wrong-pool`, `replayed`).
    pub fn label(&self) -> &'static str {
        match self {
            ReportRejection::TooLarge { .. } => "too-large",
            ReportRejection::NotAReport { .. } => "not-a-report",
            ReportRejection::NoKey { .. } => "no-key",
            ReportRejection::Unsigned { .. } => "unsigned",
            ReportRejection::BadSignature { .. } => "bad-signature",
            ReportRejection::WrongKey { .. } => "wrong-key",
            ReportRejection::UnknownFormat { .. } => "unknown-format",
            ReportRejection::Malformed { .. } => "malformed",
            ReportRejection::WrongFleet { .. } => "wrong-fleet",
            ReportRejection::WrongHost { .. } => "wrong-host",
            ReportRejection::WrongPool { .. } => "wrong-pool",
            ReportRejection::Replayed { .. } => "replayed",
        }
    }

    /// The host of the ref the report was under.
    pub fn host(&self) -> &str {
        match self {
            ReportRejection::TooLarge { host, .. }
            | ReportRejection::NotAReport { host, .. }
            | ReportRejection::NoKey { host }
            | ReportRejection::Unsigned { host }
            | ReportRejection::BadSignature { host, .. }
            | ReportRejection::WrongKey { host, .. }
            | ReportRejection::UnknownFormat { host, .. }
            | ReportRejection::Malformed { host, .. }
            | ReportRejection::WrongFleet { host, .. }
            | ReportRejection::WrongHost { host, .. }
            | ReportRejection::WrongPool { host, .. }
            | ReportRejection::Replayed { host, .. } => host,
        }
    }
}

/// The part of a report read before the rest: which format it is.
#[derive(Deserialize)]
struct FormatOnly {
    format: u32,
}

/// Checks one report read from the status repository: `json` (`report.json`) and `signature`
/// (`report.json.minisig`, `None` when there is none) against what the reader expects. Order:
/// the bounds; the host has a key; the signature is there, parses, is prehashed, is by that
/// key and verifies over exactly `json`; then the JSON is a report of [`FORMAT`] naming
/// `expect`'s fleet, host and pool, with a sequence not below `expect.seen`. Nothing of the
/// report is parsed before its signature verifies.
pub fn verify(
    json: &[u8],
    signature: Option<&[u8]>,
    expect: &Expect<'_>,
) -> Result<HostReport, ReportRejection> {
    let host = || expect.host.to_owned();
    let too_large = |file, size: usize, limit: usize| ReportRejection::TooLarge {
        host: host(),
        file,
        size: size as u64,
        limit: limit as u64,
    };
    if json.len() > MAX_REPORT_BYTES {
        return Err(too_large("report.json", json.len(), MAX_REPORT_BYTES));
    }
    if let Some(sig) = signature
        && sig.len() > MAX_SIGNATURE_BYTES
    {
        return Err(too_large(
            "report.json.minisig",
            sig.len(),
            MAX_SIGNATURE_BYTES,
        ));
    }
    let key = expect
        .key
        .ok_or_else(|| ReportRejection::NoKey { host: host() })?;
    let signature = signature
        .filter(|s| !s.trim_ascii().is_empty())
        .ok_or_else(|| ReportRejection::Unsigned { host: host() })?;
    let bad = |detail: String| ReportRejection::BadSignature {
        host: host(),
        detail,
    };
    let text = std::str::from_utf8(signature)
        .map_err(|_| bad("report.json.minisig is not text".to_owned()))?;
    let sig = SignatureBox::from_string(text)
        .map_err(|e| bad(format!("report.json.minisig does not parse ({e})")))?;
    if !sig.is_prehashed() {
        return Err(bad(
            "it is a legacy (non-prehashed) minisign signature, which pacfleet never writes"
                .to_owned(),
        ));
    }
    let signed_by = sig_key_id(&sig);
    if signed_by != key.id() {
        return Err(ReportRejection::WrongKey {
            host: host(),
            signed_by,
            expected: key.id(),
        });
    }
    minisign::verify(&key.key, &sig, std::io::Cursor::new(json), true, false, false).map_err(
        |e| {
            bad(format!(
                "it does not verify under the host's key {} ({e}): the report was altered after signing",
                key.id()
            ))
        },
    )?;
    // Signed by the host: now its bytes may be parsed.
    let malformed = |source| ReportRejection::Malformed {
        host: host(),
        source,
    };
    let format = serde_json::from_slice::<FormatOnly>(json)
        .map_err(malformed)?
        .format;
    if format != FORMAT {
        return Err(ReportRejection::UnknownFormat {
            host: host(),
            format,
        });
    }
    let report: HostReport = serde_json::from_slice(json).map_err(malformed)?;
    if report.fleet != expect.fleet {
        return Err(ReportRejection::WrongFleet {
            host: host(),
            fleet: report.fleet,
            expected: expect.fleet.to_owned(),
        });
    }
    if report.host != expect.host {
        return Err(ReportRejection::WrongHost {
            host: host(),
            named: report.host,
        });
    }
    if report.pool != expect.pool {
        return Err(ReportRejection::WrongPool {
            host: host(),
            pool: report.pool,
            expected: expect.pool.to_owned(),
        });
    }
    if let Some(seen) = expect.seen
        && report.sequence < seen
    {
        return Err(ReportRejection::Replayed {
            host: host(),
            seen,
            got: report.sequence,
        });
    }
    Ok(report)
}

/// The host's secret key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// The file cannot be read.
    #[error(
        "cannot read the host key {}: {source}; `fleetctl enroll` makes it (agent.yaml `host_key:` says where it is)",
        path.display()
    )]
    Read {
        /// The key file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The file is not an unencrypted minisign secret key.
    #[error(
        "the host key {} is not an unencrypted minisign secret key ({detail}); the agent signs unattended, so it needs the key `fleetctl enroll` makes: move this one aside and enroll again",
        path.display()
    )]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        detail: String,
    },
}

/// Reads the host's secret key (agent.yaml `host_key:`, made by `fleetctl enroll`): an
/// unencrypted minisign secret key, since the agent signs with it unattended. The one reader of
/// that file: `enroll` uses it too.
pub fn load_host_key(path: &Path) -> Result<minisign::SecretKey, HostKeyError> {
    let read_err = |source| HostKeyError::Read {
        path: path.to_owned(),
        source,
    };
    let invalid = |detail: String| HostKeyError::Invalid {
        path: path.to_owned(),
        detail,
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_KEY_FILE_BYTES + 1).read_to_string(&mut text))
        .map_err(read_err)?;
    if text.len() as u64 > MAX_KEY_FILE_BYTES {
        return Err(invalid(format!(
            "it is over {MAX_KEY_FILE_BYTES} bytes, and a key file is a few hundred"
        )));
    }
    minisign::SecretKeyBox::from_string(&text)
        .and_then(minisign::SecretKeyBox::into_unencrypted_secret_key)
        .map_err(|e| invalid(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keypair() -> minisign::KeyPair {
        minisign::KeyPair::generate_unencrypted_keypair().unwrap()
    }

    fn key(kp: &minisign::KeyPair) -> Key {
        Key {
            name: "host".to_owned(),
            key: kp.pk.clone(),
        }
    }

    fn report(host: &str, sequence: u64) -> HostReport {
        HostReport {
            format: FORMAT,
            fleet: "acme".to_owned(),
            host: host.to_owned(),
            pool: "ws".to_owned(),
            wave: 1,
            rollout: Some("a".repeat(40)),
            target: "b".repeat(40),
            applied: Some("b".repeat(40)),
            generation: Some(3),
            outcome: ReportOutcome::Applied,
            message: None,
            health: Some(Health {
                passed: true,
                failure: None,
            }),
            drift: vec!["installed vim".to_owned()],
            held: Vec::new(),
            warnings: Vec::new(),
            needs_reboot: true,
            sequence,
            at: "2026-01-02T03:04:05Z".parse().unwrap(),
        }
    }

    fn expect<'a>(host: &'a str, key: &'a Key, seen: Option<u64>) -> Expect<'a> {
        Expect {
            fleet: "acme",
            pool: "ws",
            host,
            key: Some(key),
            seen,
        }
    }

    /// A signature over any bytes, as a writer other than pacfleet could make it.
    fn sign_bytes(kp: &minisign::KeyPair, bytes: &[u8]) -> Vec<u8> {
        minisign::sign(
            Some(&kp.pk),
            &kp.sk,
            std::io::Cursor::new(bytes),
            None,
            None,
        )
        .unwrap()
        .into_string()
        .into_bytes()
    }

    fn check(signed: &SignedReport, expect: &Expect<'_>) -> Result<HostReport, ReportRejection> {
        verify(&signed.json, Some(signed.signature.as_bytes()), expect)
    }

    #[test]
    fn a_signed_report_verifies_as_it_was_written() {
        let kp = keypair();
        let r = report("ws-01", 7);
        let signed = sign(&r, &kp.sk).unwrap();
        assert!(signed.json.ends_with(b"}\n"));
        assert!(
            signed
                .signature
                .contains("pacfleet report fleet acme pool ws host ws-01 sequence 7")
        );
        let k = key(&kp);
        assert_eq!(check(&signed, &expect("ws-01", &k, None)).unwrap(), r);
        // The same sequence again (a re-read) and a newer one are fine.
        assert_eq!(check(&signed, &expect("ws-01", &k, Some(7))).unwrap(), r);
        assert_eq!(check(&signed, &expect("ws-01", &k, Some(6))).unwrap(), r);
        // The optional fields are left out, and read back as their defaults.
        let mut bare = report("ws-01", 8);
        (bare.rollout, bare.applied, bare.generation, bare.health) = (None, None, None, None);
        (bare.drift, bare.needs_reboot) = (Vec::new(), false);
        let signed = sign(&bare, &kp.sk).unwrap();
        let text = String::from_utf8(signed.json.clone()).unwrap();
        assert!(
            !text.contains("rollout") && !text.contains("drift"),
            "{text}"
        );
        assert_eq!(check(&signed, &expect("ws-01", &k, None)).unwrap(), bare);
    }

    #[test]
    fn reports_not_signed_by_the_refs_host_are_rejected() {
        let (a, b) = (keypair(), keypair());
        let (ka, kb) = (key(&a), key(&b));
        // Another host's key signing a report that names the ref's host.
        let forged = sign(&report("ws-01", 9), &b.sk).unwrap();
        let e = check(&forged, &expect("ws-01", &ka, None)).unwrap_err();
        assert!(
            matches!(&e, ReportRejection::WrongKey { host, signed_by, expected }
                if host == "ws-01" && *signed_by == kb.id() && *expected == ka.id()),
            "{e:?}"
        );
        assert!(e.to_string().contains("hosts/ws-01.yaml"), "{e}");
        // Host b's own, genuine report copied under a's ref: checked under a's key.
        let copied = sign(&report("ws-02", 9), &b.sk).unwrap();
        let e = check(&copied, &expect("ws-01", &ka, None)).unwrap_err();
        assert_eq!(e.label(), "wrong-key", "{e}");
        // Signed by the ref's host, naming another: a copy the other way round.
        let named = sign(&report("ws-02", 9), &a.sk).unwrap();
        let e = check(&named, &expect("ws-01", &ka, None)).unwrap_err();
        assert!(
            matches!(&e, ReportRejection::WrongHost { host, named } if host == "ws-01" && named == "ws-02"),
            "{e:?}"
        );
        // Altered after signing, same key id.
        let mut altered = sign(&report("ws-01", 9), &a.sk).unwrap();
        let text = String::from_utf8(altered.json)
            .unwrap()
            .replace("applied", "failed");
        altered.json = text.into_bytes();
        let e = check(&altered, &expect("ws-01", &ka, None)).unwrap_err();
        assert!(matches!(e, ReportRejection::BadSignature { .. }), "{e:?}");
        assert!(e.to_string().contains("altered"), "{e}");
        // A signature that is not one.
        let good = sign(&report("ws-01", 9), &a.sk).unwrap();
        let e = verify(
            &good.json,
            Some(b"untrusted comment: x\nnot base64\n"),
            &expect("ws-01", &ka, None),
        )
        .unwrap_err();
        assert_eq!(e.label(), "bad-signature", "{e}");
        let e = verify(&good.json, Some(&[0xff, 0xfe]), &expect("ws-01", &ka, None)).unwrap_err();
        assert_eq!(e.label(), "bad-signature", "{e}");
    }

    #[test]
    fn unsigned_and_keyless_reports_are_rejected() {
        let a = keypair();
        let ka = key(&a);
        let signed = sign(&report("ws-01", 1), &a.sk).unwrap();
        for sig in [None, Some(&b""[..]), Some(&b" \n"[..])] {
            let e = verify(&signed.json, sig, &expect("ws-01", &ka, None)).unwrap_err();
            assert!(
                matches!(&e, ReportRejection::Unsigned { host } if host == "ws-01"),
                "{e:?}"
            );
        }
        let mut no_key = expect("ws-01", &ka, None);
        no_key.key = None;
        let e = check(&signed, &no_key).unwrap_err();
        assert!(matches!(e, ReportRejection::NoKey { .. }), "{e:?}");
        assert!(e.to_string().contains("no `key:`"), "{e}");
    }

    #[test]
    fn reports_for_another_fleet_or_pool_or_older_are_rejected() {
        let a = keypair();
        let ka = key(&a);
        let mut other_fleet = report("ws-01", 4);
        other_fleet.fleet = "globex".to_owned();
        let e = check(
            &sign(&other_fleet, &a.sk).unwrap(),
            &expect("ws-01", &ka, None),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ReportRejection::WrongFleet { fleet, expected, .. } if fleet == "globex" && expected == "acme"),
            "{e:?}"
        );
        let mut other_pool = report("ws-01", 4);
        other_pool.pool = "db".to_owned();
        let e = check(
            &sign(&other_pool, &a.sk).unwrap(),
            &expect("ws-01", &ka, None),
        )
        .unwrap_err();
        assert!(
            matches!(&e, ReportRejection::WrongPool { pool, expected, .. } if pool == "db" && expected == "ws"),
            "{e:?}"
        );
        let old = sign(&report("ws-01", 4), &a.sk).unwrap();
        let e = check(&old, &expect("ws-01", &ka, Some(5))).unwrap_err();
        assert!(
            matches!(
                e,
                ReportRejection::Replayed {
                    seen: 5,
                    got: 4,
                    ..
                }
            ),
            "{e:?}"
        );
        assert!(e.to_string().contains("replay"), "{e}");
    }

    #[test]
    fn oversized_malformed_and_unknown_format_reports_are_rejected() {
        let a = keypair();
        let ka = key(&a);
        let huge = vec![b' '; MAX_REPORT_BYTES + 1];
        let e = verify(
            &huge,
            Some(&sign_bytes(&a, &huge)),
            &expect("ws-01", &ka, None),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ReportRejection::TooLarge {
                    file: "report.json",
                    ..
                }
            ),
            "{e:?}"
        );
        let signed = sign(&report("ws-01", 1), &a.sk).unwrap();
        let e = verify(
            &signed.json,
            Some(&vec![b'x'; MAX_SIGNATURE_BYTES + 1]),
            &expect("ws-01", &ka, None),
        )
        .unwrap_err();
        assert!(
            matches!(
                e,
                ReportRejection::TooLarge {
                    file: "report.json.minisig",
                    ..
                }
            ),
            "{e:?}"
        );
        // The writer refuses to make what readers refuse.
        let mut long = report("ws-01", 1);
        long.message = Some("x".repeat(MAX_REPORT_BYTES));
        assert!(matches!(
            sign(&long, &a.sk),
            Err(SignError::TooLarge { .. })
        ));

        for bytes in [&b"not json"[..], br#"{"format": 1}"#] {
            let e = verify(
                bytes,
                Some(&sign_bytes(&a, bytes)),
                &expect("ws-01", &ka, None),
            )
            .unwrap_err();
            assert!(matches!(e, ReportRejection::Malformed { .. }), "{e:?}");
            assert!(std::error::Error::source(&e).is_some());
        }
        // An unknown field is malformed in format 1 ...
        let mut value = serde_json::to_value(report("ws-01", 1)).unwrap();
        value["surprise"] = serde_json::json!(true);
        let bytes = serde_json::to_vec(&value).unwrap();
        let e = verify(
            &bytes,
            Some(&sign_bytes(&a, &bytes)),
            &expect("ws-01", &ka, None),
        )
        .unwrap_err();
        assert_eq!(e.label(), "malformed", "{e}");
        // ... and a newer format is told apart, whatever its fields.
        value["format"] = serde_json::json!(2);
        let bytes = serde_json::to_vec(&value).unwrap();
        let e = verify(
            &bytes,
            Some(&sign_bytes(&a, &bytes)),
            &expect("ws-01", &ka, None),
        )
        .unwrap_err();
        assert!(
            matches!(e, ReportRejection::UnknownFormat { format: 2, .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("upgrade pacfleet"), "{e}");
    }

    #[test]
    fn the_host_key_loads_from_enrolls_file_and_is_refused_encrypted() {
        let dir = tempfile::tempdir().unwrap();
        let kp = keypair();
        let path = dir.path().join("host.key");
        std::fs::write(
            &path,
            kp.sk
                .to_box(Some("pacfleet host key"))
                .unwrap()
                .into_string(),
        )
        .unwrap();
        let sk = load_host_key(&path).unwrap();
        let signed = sign(&report("ws-01", 1), &sk).unwrap();
        assert!(check(&signed, &expect("ws-01", &key(&kp), None)).is_ok());

        let missing = dir.path().join("nope.key");
        let e = load_host_key(&missing).unwrap_err();
        assert!(matches!(e, HostKeyError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains("fleetctl enroll"), "{e}");
        let encrypted =
            minisign::KeyPair::generate_encrypted_keypair(Some("pw".to_owned())).unwrap();
        std::fs::write(&path, encrypted.sk.to_box(None).unwrap().into_string()).unwrap();
        let e = load_host_key(&path).unwrap_err();
        assert!(matches!(e, HostKeyError::Invalid { .. }), "{e:?}");
        std::fs::write(&path, "x".repeat(MAX_KEY_FILE_BYTES as usize + 10)).unwrap();
        assert!(
            load_host_key(&path)
                .unwrap_err()
                .to_string()
                .contains("over")
        );
    }
}
