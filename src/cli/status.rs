//! `fleetctl status`: what this host applied and how its last pass went, read from the state
//! directory (`state.json`, `status.json`, `counters.json`). No fetch, no lock, no writes: fast
//! enough for a status bar, and safe to run during a pass.
//!
//! Three renderings of one [`View`]: human lines (default), `--json` (the `View` itself, a
//! stable object documented in README.md) and `--waybar` (one line of JSON for a waybar custom
//! module: `text`, `tooltip`, `class`, `percentage`).
//!
//! The class is the one word that sums the host up, most urgent first: `unknown` (no pass yet,
//! or the state cannot be read), `failed`, `refused`, `stale` (the signed state has expired or
//! expires within [`EXPIRY_WARNING_DAYS`] days), `drift`, `pending`, `converged`.
//!
//! Exit 0 whatever the host's state (a status bar must always get its line); 2 only when
//! agent.yaml cannot be read.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::StatusArgs;
use pacfleet::config::AgentConfig;
use pacfleet::metrics::{self, MetricsError};
use pacfleet::peers::Downloads;
use pacfleet::reconcile::short;
use pacfleet::state::{AppliedState, FailureReason, PassOutcome, PassStatus, StateDir, StateError};

/// A signed state that expires within this many days is reported as stale ahead of time, so
/// someone signs the fleet again before hosts start refusing it.
pub const EXPIRY_WARNING_DAYS: i64 = 3;

/// The one-word summary (`class` in JSON and waybar).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Class {
    Converged,
    /// Applied, but a scriptlet or hook failed on the way.
    Warnings,
    /// IgnorePkg/IgnoreGroup hold packages back from what the fleet asks.
    Held,
    /// No pool selects this host: nothing is managed.
    NotInFleet,
    Pending,
    Drift,
    Stale,
    Failed,
    Refused,
    Unknown,
}

/// Whether the target's signature statement still holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Signature {
    /// Valid for more than [`EXPIRY_WARNING_DAYS`] days.
    Valid,
    /// Valid, but expires within [`EXPIRY_WARNING_DAYS`] days.
    Expiring,
    /// Expired: passes refuse it.
    Expired,
    /// The last pass did not get as far as verifying.
    Unknown,
}

/// The state this host last applied (`state.json`).
#[derive(Debug, Serialize)]
struct Applied {
    fleet: String,
    pool: String,
    generation: Option<u32>,
    commit: String,
    sequence: u64,
    signers: Vec<String>,
    at: DateTime<Utc>,
}

/// The last pass (`status.json`).
#[derive(Debug, Serialize)]
struct LastPass {
    at: DateTime<Utc>,
    outcome: PassOutcome,
    message: Option<String>,
    failure: Option<FailureReason>,
    target_commit: Option<String>,
    duration_ms: u64,
    /// Packages IgnorePkg/IgnoreGroup hold back.
    held: Vec<String>,
    /// Failed scriptlets or hooks of the last transaction.
    warnings: Vec<String>,
    /// `.pacnew`/`.pacsave` files the last transaction wrote.
    config_files: Vec<String>,
    /// Package files the last pass downloaded, by source; `null` when it downloaded none
    /// and prefetched nothing.
    downloads: Option<DownloadsView>,
}

/// `last_pass.downloads`: every field always present, whatever `status.json` left out.
#[derive(Debug, Serialize)]
struct DownloadsView {
    peer_files: u32,
    peer_bytes: u64,
    upstream_files: u32,
    upstream_bytes: u64,
    /// Files that failed their sha256, by the peer that served them.
    bad_from: std::collections::BTreeMap<String, u32>,
    /// The peers the pass asked.
    peers: Vec<String>,
    /// Downloaded ahead for a pending change (`prefetch: true`).
    prefetch: bool,
    /// Files of the change still to download.
    left: u32,
    /// The library's form, for the human lines.
    #[serde(skip)]
    raw: Downloads,
}

impl From<Downloads> for DownloadsView {
    fn from(d: Downloads) -> Self {
        DownloadsView {
            peer_files: d.peer_files,
            peer_bytes: d.peer_bytes,
            upstream_files: d.upstream_files,
            upstream_bytes: d.upstream_bytes,
            bad_from: d.bad_from.clone(),
            peers: d.peers.clone(),
            prefetch: d.prefetch,
            left: d.left,
            raw: d,
        }
    }
}

/// Everything `status` shows; `--json` prints it as is.
#[derive(Debug, Serialize)]
struct View {
    host: String,
    state_dir: String,
    class: Class,
    percentage: u8,
    summary: String,
    applied: Option<Applied>,
    last_pass: Option<LastPass>,
    last_success: Option<DateTime<Utc>>,
    pending_changes: usize,
    next_window: Option<String>,
    drift: Vec<String>,
    waiting_for_signature: usize,
    signed_until: Option<DateTime<Utc>>,
    signature: Signature,
    last_error: Option<String>,
    problems: Vec<String>,
}

pub(super) fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let cfg = AgentConfig::load(&args.config.config)?;
    let now = Utc::now();
    let view = gather(&cfg, now);
    if args.json {
        super::output::json(&view)?;
    } else if args.waybar {
        println!("{}", waybar(&view, now));
    } else {
        print!("{}", human(&view, now));
    }
    Ok(0)
}

/// Reads the state directory. Unreadable files become `problems`, never an error: status
/// always answers.
fn gather(cfg: &AgentConfig, now: DateTime<Utc>) -> View {
    let mut problems = Vec::new();
    // Whether state.json or status.json could not be read (counters.json only feeds `last ok`).
    let mut unreadable = false;
    let mut applied: Option<AppliedState> = None;
    let mut status: Option<PassStatus> = None;
    let mut last_success = None;
    // Never create the state directory: status only reads.
    if cfg.state_dir.is_dir() {
        match StateDir::open(&cfg.state_dir) {
            Ok(state) => {
                let mut note = |e: &StateError| {
                    unreadable = true;
                    problems.push(problem(e));
                };
                applied = state.load_applied().map_err(|e| note(&e)).ok().flatten();
                status = state.load_status().map_err(|e| note(&e)).ok().flatten();
                last_success = match metrics::load_counters(&state) {
                    Ok(c) => c.last_success,
                    Err(MetricsError::State(e)) => {
                        problems.push(problem(&e));
                        None
                    }
                    Err(e) => {
                        problems.push(e.to_string());
                        None
                    }
                };
            }
            Err(e) => {
                unreadable = true;
                problems.push(problem(&e));
            }
        }
    } else if cfg.state_dir.exists() {
        unreadable = true;
        problems.push(format!(
            "{} is not a directory; it is this host's state_dir in {}",
            cfg.state_dir.display(),
            cfg.source.display()
        ));
    }
    build(
        cfg,
        applied,
        status,
        last_success,
        (problems, unreadable),
        now,
    )
}

/// An unreadable state file, with the usual reason spelled out.
fn problem(e: &StateError) -> String {
    match e {
        StateError::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            format!("{e} (the state directory is readable by root only: run as root)")
        }
        _ => e.to_string(),
    }
}

fn build(
    cfg: &AgentConfig,
    applied: Option<AppliedState>,
    status: Option<PassStatus>,
    last_success: Option<DateTime<Utc>>,
    (problems, unreadable): (Vec<String>, bool),
    now: DateTime<Utc>,
) -> View {
    let signed_until = status.as_ref().and_then(|s| s.signed_until);
    let signature = match signed_until {
        None => Signature::Unknown,
        Some(t) if t <= now => Signature::Expired,
        Some(t) if t - now <= chrono::Duration::days(EXPIRY_WARNING_DAYS) => Signature::Expiring,
        Some(_) => Signature::Valid,
    };
    let outcome = status.as_ref().map(|s| s.outcome);
    let pending_changes = status.as_ref().map_or(0, |s| s.pending_changes);
    let drift = status.as_ref().map(|s| s.drift.clone()).unwrap_or_default();
    let class = match outcome {
        _ if unreadable => Class::Unknown,
        None => Class::Unknown,
        Some(PassOutcome::Failed) => Class::Failed,
        Some(PassOutcome::Refused) => Class::Refused,
        Some(_) if matches!(signature, Signature::Expired | Signature::Expiring) => Class::Stale,
        Some(_) if !drift.is_empty() => Class::Drift,
        Some(PassOutcome::NotInFleet) => Class::NotInFleet,
        Some(PassOutcome::Pending) => Class::Pending,
        Some(_) if pending_changes > 0 => Class::Pending,
        Some(PassOutcome::AppliedWithWarnings) => Class::Warnings,
        Some(_) if status.as_ref().is_some_and(|s| !s.held.is_empty()) => Class::Held,
        Some(_) => Class::Converged,
    };
    let percentage = match class {
        Class::Failed | Class::Refused | Class::Unknown | Class::NotInFleet => 0,
        _ => {
            // Drift is usually the pending changeset itself: count it once.
            let owed = pending_changes.max(drift.len());
            let owed = u8::try_from(owed.min(9)).unwrap_or(9);
            if owed == 0 { 100 } else { 100 - 10 * owed }
        }
    };
    let last_error = status
        .as_ref()
        .filter(|s| !s.outcome.succeeded())
        .and_then(|s| s.message.clone());
    let summary = summary(class, status.as_ref(), signed_until, &problems, now);
    View {
        host: cfg.hostname.clone(),
        state_dir: cfg.state_dir.display().to_string(),
        class,
        percentage,
        summary,
        applied: applied.map(|a| Applied {
            fleet: a.fleet,
            pool: a.pool,
            generation: a.generation,
            commit: a.commit,
            sequence: a.sequence,
            signers: a.signers,
            at: a.applied_at,
        }),
        last_success,
        pending_changes,
        next_window: status.as_ref().and_then(|s| s.next_window.clone()),
        drift,
        waiting_for_signature: status.as_ref().map_or(0, |s| s.waiting_for_signature),
        signed_until,
        signature,
        last_error,
        last_pass: status.map(|s| LastPass {
            at: s.at,
            outcome: s.outcome,
            message: s.message,
            failure: s.failure,
            target_commit: s.target_commit,
            duration_ms: s.duration_ms,
            held: s.held,
            warnings: s.warnings,
            config_files: s.config_files,
            downloads: s
                .downloads
                .filter(|d| !d.is_empty() || d.prefetch)
                .map(DownloadsView::from),
        }),
        problems,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// The first line of a possibly multi-line message.
fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("")
}

/// The host in a few words (`summary`): the class and why.
fn summary(
    class: Class,
    status: Option<&PassStatus>,
    signed_until: Option<DateTime<Utc>>,
    problems: &[String],
    now: DateTime<Utc>,
) -> String {
    let Some(s) = status else {
        return match problems.first() {
            Some(p) => format!("unknown: {}", first_line(p)),
            None => "no pass has run yet".to_owned(),
        };
    };
    let changes = plural(s.pending_changes, "change", "changes");
    let why = s.message.as_deref().map(first_line).unwrap_or_default();
    match class {
        Class::Unknown => format!(
            "unknown: {}",
            problems.first().map_or("", |p| first_line(p))
        ),
        Class::Failed => format!("failed: {why}"),
        Class::Refused => format!("refused: {}", why.trim_start_matches("refused: ")),
        Class::Stale => match signed_until {
            Some(t) if t <= now => {
                format!("stale: the signed fleet state expired {}", relative(t, now))
            }
            Some(t) => format!("stale: the signed fleet state expires {}", relative(t, now)),
            None => "stale".to_owned(),
        },
        Class::Drift => format!(
            "drift: {} changed outside pacfleet",
            plural(s.drift.len(), "package", "packages")
        ),
        Class::Pending => match &s.next_window {
            Some(next) => format!("{changes} pending until {next} (outside the pool's window)"),
            None => format!("{changes} pending: {why}"),
        },
        Class::Converged => match why {
            "" => "converged".to_owned(),
            why => format!("converged ({why})"),
        },
        Class::NotInFleet => format!("not in the fleet: {why}"),
        Class::Warnings => format!(
            "applied with warnings: {}",
            s.warnings.first().map_or("", |w| first_line(w))
        ),
        Class::Held => format!(
            "held: {} held back by IgnorePkg/IgnoreGroup ({})",
            plural(s.held.len(), "package", "packages"),
            s.held.join("; ")
        ),
    }
}

/// `3m ago` / `in 2d` for a moment relative to now.
pub(super) fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let n = secs.unsigned_abs();
    let span = match n {
        0 => return "just now".to_owned(),
        1..60 => format!("{n}s"),
        60..3600 => format!("{}m", n / 60),
        3600..172_800 => format!("{}h", n / 3600),
        _ => format!("{}d", n / 86_400),
    };
    if secs < 0 {
        format!("{span} ago")
    } else {
        format!("in {span}")
    }
}

fn when(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    format!(
        "{} ({})",
        t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
        relative(t, now)
    )
}

/// The human rendering: `label  value` lines, continuation lines indented.
fn human(v: &View, now: DateTime<Utc>) -> String {
    let mut lines: Vec<(&str, String)> = Vec::new();
    let mut pool_line = v.host.clone();
    if let Some(a) = &v.applied {
        let generation = match a.generation {
            Some(g) => format!("generation {g}"),
            None => "floating".to_owned(),
        };
        pool_line = format!(
            "{} · fleet {} · pool {} ({generation})",
            v.host, a.fleet, a.pool
        );
    }
    lines.push(("host", pool_line));
    // The error has its own line; the state line stays short.
    let state = match (&v.last_pass, v.class) {
        (Some(p), Class::Failed) => format!(
            "failed ({}), see error below",
            p.failure.map_or("unknown", |r| r.as_str())
        ),
        (Some(_), Class::Refused) => "refused by the trust rules, see error below".to_owned(),
        _ => v.summary.clone(),
    };
    lines.push(("state", state));
    if v.last_pass.is_none() && v.applied.is_none() && v.problems.is_empty() {
        lines.push((
            "",
            format!(
                "nothing recorded in {}: run `fleetctl reconcile`, or enable pacfleet-reconcile.timer or pacfleet-agent.service",
                v.state_dir
            ),
        ));
    }
    match &v.applied {
        Some(a) => {
            let signers = if a.signers.is_empty() {
                String::new()
            } else {
                format!(", signed by {}", a.signers.join(", "))
            };
            lines.push((
                "applied",
                format!(
                    "commit {}, sequence {}{signers}, {}",
                    short(&a.commit),
                    a.sequence,
                    when(a.at, now)
                ),
            ));
        }
        None if v.last_pass.is_some() => lines.push(("applied", "nothing yet".to_owned())),
        None => {}
    }
    if let Some(p) = &v.last_pass {
        let target = p
            .target_commit
            .as_deref()
            .map(|c| format!(" at commit {}", short(c)))
            .unwrap_or_default();
        lines.push((
            "last pass",
            format!(
                "{}{target}, {}, took {:.1}s",
                p.outcome.as_str(),
                when(p.at, now),
                p.duration_ms as f64 / 1000.0
            ),
        ));
        if let Some(t) = v.last_success
            && !matches!(
                p.outcome,
                PassOutcome::Converged | PassOutcome::Applied | PassOutcome::Pending
            )
        {
            lines.push(("last ok", when(t, now)));
        }
        let pending = match (v.pending_changes, &v.next_window) {
            (0, _) => "none".to_owned(),
            (n, Some(next)) => format!(
                "{} until the pool's window opens at {next}",
                plural(n, "change", "changes")
            ),
            (n, None) => format!(
                "{}: {}",
                plural(n, "change", "changes"),
                p.message.as_deref().map(first_line).unwrap_or("held back")
            ),
        };
        lines.push(("pending", pending));
        let drift = if v.drift.is_empty() {
            "none".to_owned()
        } else {
            format!(
                "{} changed outside pacfleet: {}",
                plural(v.drift.len(), "package", "packages"),
                v.drift.join(", ")
            )
        };
        lines.push(("drift", drift));
        if let Some(p) = &v.last_pass {
            for h in &p.held {
                lines.push(("held", h.clone()));
            }
            for w in &p.warnings {
                lines.push(("warning", w.clone()));
            }
            for f in &p.config_files {
                lines.push(("config", format!("{f}: merge it (pacdiff)")));
            }
            if let Some(d) = &p.downloads {
                lines.extend(super::output::download_lines(&d.raw));
            }
        }
        if v.waiting_for_signature > 0 {
            lines.push((
                "waiting",
                format!(
                    "{} newer than the target wait for a signature",
                    plural(v.waiting_for_signature, "commit", "commits")
                ),
            ));
        }
    }
    if let Some(t) = v.signed_until {
        let text = match v.signature {
            Signature::Expired => format!(
                "EXPIRED {}: the signed fleet state is stale and hosts refuse it; sign the fleet again (`fleetctl sign --renew --key KEY`)",
                when(t, now)
            ),
            Signature::Expiring => format!(
                "until {} — expires soon: sign the fleet again (`fleetctl sign --renew --key KEY`) before then",
                when(t, now)
            ),
            _ => format!("until {}", when(t, now)),
        };
        lines.push(("signed", text));
    }
    if let Some(e) = &v.last_error {
        lines.push(("error", e.clone()));
    }
    for p in &v.problems {
        lines.push(("problem", p.clone()));
    }
    // Messages, warnings and package names come from packages, the fleet repository and its
    // notes: every line is shown with control characters escaped (`\u{1b}`), never
    // interpreted by the terminal.
    let mut out = String::new();
    for (label, value) in lines {
        for (i, line) in value.lines().enumerate() {
            let label = if i == 0 { label } else { "" };
            out.push_str(&format!(
                "{label:<10} {}\n",
                super::output::terminal_safe(line)
            ));
        }
    }
    out
}

/// Escapes text for Pango markup, which waybar applies to `text` and `tooltip`.
///
/// Control characters other than the newline (which the tooltip's lines need) are shown as
/// `\u{..}`: Pango refuses markup with most of them and shows nothing at all.
fn pango(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\n' => out.push('\n'),
            c if super::output::is_unsafe_char(c) => out.extend(c.escape_unicode()),
            c => out.push(c),
        }
    }
    out
}

/// The waybar line: `{"text", "tooltip", "class", "percentage"}`.
fn waybar(v: &View, now: DateTime<Utc>) -> String {
    let text = match v.class {
        Class::Converged => "converged".to_owned(),
        Class::NotInFleet => "not in fleet".to_owned(),
        Class::Warnings => "warnings".to_owned(),
        Class::Held => "held".to_owned(),
        Class::Pending => format!("{} pending", v.pending_changes),
        Class::Drift => format!("drift {}", v.drift.len()),
        Class::Stale => "stale".to_owned(),
        Class::Failed => "failed".to_owned(),
        Class::Refused => "refused".to_owned(),
        Class::Unknown if v.last_pass.is_none() && v.problems.is_empty() => {
            "no pass yet".to_owned()
        }
        Class::Unknown => "unknown".to_owned(),
    };
    let line = Waybar {
        text: pango(&text),
        tooltip: pango(human(v, now).trim_end()),
        class: v.class,
        percentage: v.percentage,
    };
    serde_json::to_string(&line).expect("the waybar line serializes")
}

/// What a waybar custom module with `return-type: json` reads.
#[derive(Serialize)]
struct Waybar {
    text: String,
    tooltip: String,
    class: Class,
    percentage: u8,
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    fn cfg() -> AgentConfig {
        AgentConfig::from_yaml(
            "repo: /srv/fleet\nhostname: ws-01\nstate_dir: /nonexistent/state\n",
            Path::new("/etc/pacfleet/agent.yaml"),
        )
        .unwrap()
    }

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    fn pass(outcome: PassOutcome) -> PassStatus {
        PassStatus {
            at: t("2026-11-20T09:00:00Z"),
            outcome,
            message: None,
            pending_changes: 0,
            target_commit: Some("0123456789abcdef".to_owned()),
            signed_until: Some(t("2026-12-20T09:00:00Z")),
            next_window: None,
            drift: Vec::new(),
            waiting_for_signature: 0,
            duration_ms: 1500,
            failure: None,
            last_success: None,
            held: Vec::new(),
            warnings: Vec::new(),
            config_files: Vec::new(),
            rollout: None,
            needs_reboot: false,
            health_ok: None,
            report: None,
            downloads: None,
        }
    }

    #[test]
    fn classes_and_percentages() {
        let now = t("2026-11-20T10:00:00Z");
        let v = build(
            &cfg(),
            None,
            Some(pass(PassOutcome::Applied)),
            None,
            (vec![], false),
            now,
        );
        assert_eq!((v.class, v.percentage), (Class::Converged, 100));

        let mut p = pass(PassOutcome::Pending);
        p.pending_changes = 3;
        p.next_window = Some("2027-01-01T00:00:00+00:00".to_owned());
        let v = build(&cfg(), None, Some(p), None, (vec![], false), now);
        assert_eq!((v.class, v.percentage), (Class::Pending, 70));
        assert!(
            v.summary.contains("3 changes pending until 2027-01-01"),
            "{}",
            v.summary
        );

        let mut p = pass(PassOutcome::Pending);
        p.pending_changes = 20;
        p.drift = vec!["install x".to_owned()];
        let v = build(&cfg(), None, Some(p), None, (vec![], false), now);
        assert_eq!((v.class, v.percentage), (Class::Drift, 10));
        let mut p = pass(PassOutcome::Pending);
        p.pending_changes = 2;
        p.drift = vec!["install x".to_owned(), "remove y".to_owned()];
        let v = build(&cfg(), None, Some(p), None, (vec![], false), now);
        assert_eq!((v.class, v.percentage), (Class::Drift, 80));

        let soon = build(
            &cfg(),
            None,
            Some(pass(PassOutcome::Converged)),
            None,
            (vec![], false),
            t("2026-12-18T09:00:00Z"),
        );
        assert_eq!(
            (soon.class, soon.signature),
            (Class::Stale, Signature::Expiring)
        );
        let late = build(
            &cfg(),
            None,
            Some(pass(PassOutcome::Converged)),
            None,
            (vec![], false),
            t("2026-12-21T09:00:00Z"),
        );
        assert_eq!(late.signature, Signature::Expired);
        assert!(human(&late, t("2026-12-21T09:00:00Z")).contains("EXPIRED"));

        let mut p = pass(PassOutcome::Failed);
        p.message = Some("cannot fetch <repo>\ndetail".to_owned());
        let v = build(&cfg(), None, Some(p), None, (vec![], false), now);
        assert_eq!((v.class, v.percentage), (Class::Failed, 0));
        assert_eq!(v.summary, "failed: cannot fetch <repo>");
        let line = waybar(&v, now);
        assert!(
            !line.contains('\n') && line.contains("&lt;repo&gt;"),
            "{line}"
        );

        let none = build(&cfg(), None, None, None, (vec![], false), now);
        assert_eq!(
            (none.class, none.summary.as_str()),
            (Class::Unknown, "no pass has run yet")
        );
    }

    #[test]
    fn untrusted_text_is_escaped_in_human_and_waybar_output() {
        let now = t("2026-11-20T10:00:00Z");
        let mut p = pass(PassOutcome::Failed);
        // A junk note's first line, as the refusal quotes it, and a scriptlet's warning.
        p.message =
            Some("note is corrupt: \u{1b}]0;pwned\u{7}\u{1b}[2Jhi\rover\ndetail".to_owned());
        p.warnings = vec!["app 5.2-1\u{1b}[31m: post_install said \u{202e}txt".to_owned()];
        let v = build(&cfg(), None, Some(p), None, (vec![], false), now);
        let text = human(&v, now);
        assert!(!text.contains('\u{1b}') && !text.contains('\r') && !text.contains('\u{202e}'));
        assert!(
            text.contains("note is corrupt: \\u{1b}]0;pwned\\u{7}\\u{1b}[2Jhi\\u{d}over"),
            "{text}"
        );
        assert!(
            text.contains("app 5.2-1\\u{1b}[31m: post_install said \\u{202e}txt"),
            "{text}"
        );
        let line = waybar(&v, now);
        let tooltip: serde_json::Value = serde_json::from_str(&line).unwrap();
        let tooltip = tooltip["tooltip"].as_str().unwrap();
        assert!(
            !tooltip.chars().any(|c| c.is_control() && c != '\n'),
            "{tooltip:?}"
        );
        assert_eq!(pango("a\u{1b}<b>&\n"), "a\\u{1b}&lt;b&gt;&amp;\n");
    }

    #[test]
    fn downloads_in_human_and_json() {
        let now = t("2026-11-20T10:00:00Z");
        let mut p = pass(PassOutcome::Pending);
        p.pending_changes = 3;
        p.downloads = Some(Downloads {
            peer_files: 2,
            peer_bytes: 2048,
            upstream_files: 1,
            upstream_bytes: 1024,
            bad_from: [("http://10.0.0.5:7878/\u{1b}]0;x\u{7}".to_owned(), 1)].into(),
            peers: vec!["http://10.0.0.5:7878/\u{1b}]0;x\u{7}".to_owned()],
            prefetch: true,
            left: 1,
        });
        let v = build(&cfg(), None, Some(p), None, (vec![], false), now);
        let text = human(&v, now);
        for want in [
            "downloads  2 files (2.00 KiB) from peers, 1 file (1.00 KiB) from upstream\n",
            "prefetched 3 files (3.00 KiB) for the pending change; 1 left to download\n",
            "bad peer   http://10.0.0.5:7878/\\u{1b}]0;x\\u{7} served 1 file that failed the sha256 check (discarded)\n",
        ] {
            assert!(text.contains(want), "{want:?} missing from:\n{text}");
        }
        assert!(!text.contains('\u{1b}'));
        let json = serde_json::to_value(&v).unwrap();
        let d = &json["last_pass"]["downloads"];
        assert_eq!(d["peer_files"], 2);
        assert_eq!(d["upstream_bytes"], 1024);
        assert_eq!(d["prefetch"], true);
        assert_eq!(d["left"], 1);
        assert_eq!(d["bad_from"].as_object().map(|o| o.len()), Some(1));
        assert!(d.get("raw").is_none());

        // Nothing downloaded: `null`, and no line.
        let mut p = pass(PassOutcome::Converged);
        p.downloads = Some(Downloads::default());
        let v = build(&cfg(), None, Some(p), None, (vec![], false), now);
        assert!(!human(&v, now).contains("downloads"));
        let json = serde_json::to_value(&v).unwrap();
        assert!(json["last_pass"]["downloads"].is_null());
        // Same object keys every time: a script can rely on them.
        let mut p = pass(PassOutcome::Applied);
        p.downloads = Some(Downloads {
            upstream_files: 1,
            upstream_bytes: 10,
            ..Downloads::default()
        });
        let v = build(&cfg(), None, Some(p), None, (vec![], false), now);
        let json = serde_json::to_value(&v).unwrap();
        let keys: Vec<&String> = json["last_pass"]["downloads"]
            .as_object()
            .unwrap()
            .keys()
            .collect();
        assert_eq!(
            keys,
            [
                "bad_from",
                "left",
                "peer_bytes",
                "peer_files",
                "peers",
                "prefetch",
                "upstream_bytes",
                "upstream_files"
            ]
        );
    }

    #[test]
    fn relative_times() {
        let now = t("2026-11-20T10:00:00Z");
        assert_eq!(relative(t("2026-11-20T09:57:00Z"), now), "3m ago");
        assert_eq!(relative(t("2026-11-23T10:00:00Z"), now), "in 3d");
        assert_eq!(relative(t("2026-11-20T10:00:05Z"), now), "in 5s");
    }
}
