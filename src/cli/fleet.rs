//! `fleetctl fleet status --status-repo URL [--repo PATH] [--pool P]… [--json|--html FILE]`: the
//! fleet as its hosts report it (docs/contract.md §7).
//!
//! [`load`] gathers the fleet (HEAD of `--repo`) and the hosts' reports,
//! `pacfleet::fleet_status::summarize` decides what they mean, and one of three renderings shows
//! it: [`render_text`] (aligned columns, coloured on a terminal), [`render_json`] (the
//! `FleetStatus` as is) and [`render_html`] (one static page, inline CSS, no JavaScript, for an
//! operator to publish anywhere). Exit 0 all healthy, 1 something needs attention, 2 error.
//!
//! Reports are an adversary's input until verified, and their text (messages, warnings, package
//! names) stays untrusted after: every string from them is [`terminal_safe`] in text, and
//! terminal-safe then HTML-escaped in the page. JSON needs nothing (serde escapes).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{IsTerminal, Write as _};
use std::path::Path;

use anyhow::{Context as _, bail};
use chrono::{DateTime, SecondsFormat, Utc};
use clap::builder::styling::{AnsiColor, Style};

use super::output::{Paint, terminal_safe};
use super::{FleetArgs, FleetCommand, FleetStatusArgs};
use pacfleet::fleet_read::{FleetRepo, Rev};
use pacfleet::fleet_status::{
    self, AttentionKind, FleetStatus, HostStatus, PoolStatus, ReportState, RolloutState,
    WaveProgress, WaveStatus, duration, host_list, short,
};
use pacfleet::manifest::Fleet;
use pacfleet::report::{HostReport, ReportOutcome};

/// The verified reports, by pool and host.
pub type Reports = BTreeMap<String, BTreeMap<String, HostReport>>;
/// The reports that did not verify: (pool, host, why).
pub type Rejections = Vec<(String, String, String)>;

pub(super) fn run(args: FleetArgs) -> anyhow::Result<u8> {
    match args.command {
        FleetCommand::Status(a) => status(a),
    }
}

fn status(args: FleetStatusArgs) -> anyhow::Result<u8> {
    // The local copy of the status repository is kept between runs (a later run fetches only
    // what changed), in the user's cache directory; without one, in a temporary directory.
    let temp;
    let copy = match cache_dir(&args.status_repo) {
        Some(dir) => dir,
        None => {
            temp = tempfile::Builder::new()
                .prefix("pacfleet-status-")
                .tempdir()
                .context(
                    "cannot create a scratch directory for the status repository (check $TMPDIR)",
                )?;
            temp.path().to_path_buf()
        }
    };
    let (fleet, reports, rejected) = load(&args.repo, &args.status_repo, &copy)?;
    for p in &args.pool {
        if !fleet.pools.contains_key(p.as_str()) && !reports.contains_key(p) {
            let known: Vec<&str> = fleet.pools.keys().map(|n| n.as_str()).collect();
            bail!(
                "--pool {}: the fleet has no pool `{}` and no report is filed under it; pools: {}",
                terminal_safe(p),
                terminal_safe(p),
                known.join(", ")
            );
        }
    }
    let mut status = fleet_status::summarize(&fleet, &reports, &rejected, Utc::now());
    status.retain_pools(&args.pool);
    if args.json {
        print!("{}", render_json(&status));
    } else if let Some(file) = &args.html {
        write_page(file, &render_html(&status))?;
        tracing::info!("wrote {}", file.display());
    } else {
        let colour = std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
        print!("{}", render_text(&status, colour));
    }
    Ok(u8::from(status.needs_attention))
}

/// `$XDG_CACHE_HOME/pacfleet/status/<digest of the URL>` (or `~/.cache/…`), when there is
/// such a directory to use.
fn cache_dir(url: &str) -> Option<std::path::PathBuf> {
    use sha2::Digest as _;
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(std::path::PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| Path::new(&h).join(".cache"))
        })?;
    let digest = sha2::Sha256::digest(url.as_bytes());
    let name: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
    let dir = base.join("pacfleet/status").join(name);
    std::fs::create_dir_all(&dir).ok()?;
    Some(dir)
}

/// The fleet at HEAD of `--repo` (checked as `validate` checks it), and the hosts' reports from
/// `--status-repo`, fetched into the local copy `copy` (made when missing, brought up to date
/// when there): the verified ones by pool and host, and the rejected ones with why.
pub(super) fn load(
    repo_dir: &Path,
    status_repo: &str,
    copy: &Path,
) -> anyhow::Result<(Fleet, Reports, Rejections)> {
    let what = || {
        format!(
            "cannot read the fleet at HEAD of {} (--repo: the fleet repository whose pools and hosts the reports are about)",
            repo_dir.display()
        )
    };
    let repo = FleetRepo::open(repo_dir).with_context(what)?;
    let side = repo.load(&Rev::Commit("HEAD".into())).with_context(what)?;
    let fleet = match side.fleet {
        Ok(f) => f,
        Err(diags) => bail!(
            "the fleet at HEAD of {} does not validate; fleet status needs a valid fleet to place the reports in:\n{diags}",
            repo_dir.display()
        ),
    };
    let read = pacfleet::fleet_reports::read(&fleet, status_repo, copy).with_context(|| {
        format!(
            "cannot read the hosts' reports from {} (--status-repo)",
            pacfleet::source::redact_url(status_repo)
        )
    })?;
    Ok((fleet, read.valid, read.rejected))
}

/// Writes the page atomically (a temporary file beside it, renamed over it), readable by all:
/// a web server may read it at any moment.
fn write_page(file: &Path, page: &str) -> anyhow::Result<()> {
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let fail = || format!("cannot write the page to {} (--html)", file.display());
    let mut tmp = tempfile::Builder::new()
        .prefix(".fleet-status")
        .tempfile_in(dir)
        .with_context(fail)?;
    tmp.write_all(page.as_bytes()).with_context(fail)?;
    tmp.as_file().sync_all().with_context(fail)?;
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .with_context(fail)?;
    tmp.persist(file).map_err(|e| e.error).with_context(fail)?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Shared words.

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// What a host's row says it is: its outcome, or why there is none.
fn outcome_word(h: &HostStatus) -> &'static str {
    match (h.outcome, h.report) {
        (Some(o), _) => o.label(),
        (None, ReportState::Rejected) => "rejected",
        (None, _) => "no report",
    }
}

/// The colour class of an outcome: `ok`, `wait`, `bad`, `off`.
fn tone(h: &HostStatus) -> &'static str {
    match h.outcome {
        _ if h.stale => "off",
        Some(ReportOutcome::Converged | ReportOutcome::Applied) => "ok",
        Some(ReportOutcome::Pending) => "wait",
        Some(ReportOutcome::Failed | ReportOutcome::RolledBack | ReportOutcome::Refused) => "bad",
        Some(ReportOutcome::NotInFleet) | None if h.report == ReportState::Rejected => "bad",
        Some(ReportOutcome::NotInFleet) | None => "off",
    }
}

fn health_word(h: &HostStatus) -> &'static str {
    match &h.health {
        Some(x) if x.passed => "ok",
        Some(_) => "failed",
        None => "-",
    }
}

/// The note column: why it failed or waits, why its report was rejected, its health failure.
fn note(h: &HostStatus) -> String {
    let first = |s: &str| s.lines().next().unwrap_or_default().to_owned();
    let mut parts = Vec::new();
    if let Some(r) = &h.rejected {
        parts.push(format!("report rejected: {}", first(r)));
    }
    if let Some(m) = &h.message {
        parts.push(first(m));
    }
    if let Some(f) = h.health.as_ref().and_then(|x| x.failure.as_deref()) {
        parts.push(format!("health: {}", first(f)));
    }
    parts.join("; ")
}

/// A wave's progress in a few words.
fn wave_words(w: &WaveStatus) -> String {
    let c = &w.counts;
    let live = c.hosts - c.stale;
    match &w.progress {
        WaveProgress::Idle => "no rollout reported yet".to_owned(),
        WaveProgress::Done => "done".to_owned(),
        WaveProgress::InProgress => {
            let mut s = format!("in progress: {} of {live} succeeded", c.succeeded);
            if c.failed > 0 {
                let _ = write!(s, ", {} failed", c.failed);
            }
            s
        }
        WaveProgress::Waiting {
            wave_name, hosts, ..
        } => format!("waiting for wave {wave_name}: {}", host_list(hosts)),
        WaveProgress::Soaking { until } => format!("soaking until {}", time(*until)),
        WaveProgress::Halted { failed, budget } => format!(
            "halted: {} failed, beyond the failure budget of {budget}",
            host_list(failed)
        ),
    }
}

fn wave_tone(p: &WaveProgress) -> &'static str {
    match p {
        WaveProgress::Done => "ok",
        WaveProgress::Halted { .. } => "bad",
        WaveProgress::Idle => "off",
        _ => "wait",
    }
}

fn rollout_line(p: &PoolStatus) -> String {
    match &p.rollout {
        Some(r) => format!("rollout {}: {}", short(&r.id), r.summary),
        None => "no rollout reported yet".to_owned(),
    }
}

fn rollout_tone(p: &PoolStatus) -> &'static str {
    match p.rollout.as_ref().map(|r| r.state) {
        Some(RolloutState::Done) => "ok",
        Some(RolloutState::Halted) => "bad",
        Some(RolloutState::InProgress) => "wait",
        None => "off",
    }
}

/// `3 hosts: 2 succeeded, 1 stale` over a pool.
fn counts_line(p: &PoolStatus) -> String {
    let c = &p.counts;
    let mut parts = Vec::new();
    for (n, word) in [
        (c.succeeded, "succeeded"),
        (c.failed, "failed"),
        (c.pending, "pending"),
        (c.stale, "stale"),
        (c.no_report, "no report"),
    ] {
        if n > 0 {
            parts.push(format!("{n} {word}"));
        }
    }
    let hosts = format!("{} host{}", c.hosts, if c.hosts == 1 { "" } else { "s" });
    if parts.is_empty() {
        hosts
    } else {
        format!("{hosts}: {}", parts.join(", "))
    }
}

fn pool_facts(p: &PoolStatus) -> String {
    let mut s = format!(
        "failure budget {}, stale after {}",
        p.failure_budget,
        duration(p.stale_after_seconds)
    );
    if !p.in_fleet {
        s.push_str(", not a pool of the fleet (only reports are filed under it)");
    }
    s
}

fn list_count(v: &[String]) -> String {
    if v.is_empty() {
        "-".to_owned()
    } else {
        v.len().to_string()
    }
}

/// The cells of a host's row, unescaped: wave, host, outcome, last report, target, applied,
/// generation, health, drift, held, warnings, reboot, note.
fn cells(w: &WaveStatus, h: &HostStatus, now: DateTime<Utc>) -> [String; 13] {
    let at = match h.at {
        Some(t) if h.stale => format!("{} STALE", super::status::relative(t, now)),
        Some(t) => super::status::relative(t, now),
        None => "-".to_owned(),
    };
    let commit = |c: &Option<String>| c.as_deref().map_or("-".to_owned(), |c| short(c).to_owned());
    [
        w.name.clone(),
        h.host.clone(),
        outcome_word(h).to_owned(),
        at,
        commit(&h.target),
        commit(&h.applied),
        h.generation.map_or("-".to_owned(), |g| g.to_string()),
        health_word(h).to_owned(),
        list_count(&h.drift),
        list_count(&h.held),
        list_count(&h.warnings),
        if h.needs_reboot { "yes" } else { "-" }.to_owned(),
        note(h),
    ]
}

const HEADERS: [&str; 13] = [
    "WAVE", "HOST", "OUTCOME", "REPORTED", "TARGET", "APPLIED", "GEN", "HEALTH", "DRIFT", "HELD",
    "WARN", "REBOOT", "NOTE",
];

// ---------------------------------------------------------------------------------------------
// Text.

/// A tone of the status: `ok` green, `wait` yellow, `bad` red, else dimmed.
fn toned(p: &Paint, s: &str, tone: &str) -> String {
    match tone {
        "ok" => p.colour(s, AnsiColor::Green),
        "wait" => p.colour(s, AnsiColor::Yellow),
        "bad" => p.colour(s, AnsiColor::Red),
        _ => p.style(s, Style::new().dimmed()),
    }
}

/// The text rendering: a verdict, what needs attention, then per pool its rollout line, a
/// line per wave and an aligned table of its hosts; colour only when `colour`.
pub fn render_text(status: &FleetStatus, colour: bool) -> String {
    let p = Paint { on: colour };
    let esc = |s: &str| terminal_safe(s);
    let now = status.generated_at;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}: {} pool{}, {} host{}, reports as of {}",
        p.bold(&format!("fleet {}", esc(&status.fleet))),
        status.pools.len(),
        if status.pools.len() == 1 { "" } else { "s" },
        status.host_count(),
        if status.host_count() == 1 { "" } else { "s" },
        time(now)
    );
    if status.attention.is_empty() {
        let _ = writeln!(out, "{}", toned(&p, "all healthy", "ok"));
    } else {
        let _ = writeln!(
            out,
            "{}",
            toned(
                &p,
                &format!("needs attention ({}):", status.attention.len()),
                "bad"
            )
        );
        let kw = status
            .attention
            .iter()
            .map(|a| a.kind.label().len())
            .max()
            .unwrap_or(0);
        for a in &status.attention {
            let tone = match a.kind {
                AttentionKind::Stale | AttentionKind::Drift => "wait",
                _ => "bad",
            };
            let _ = writeln!(
                out,
                "  {} {}",
                toned(&p, &format!("{:<kw$}", a.kind.label()), tone),
                esc(&a.message)
            );
        }
    }
    for pool in &status.pools {
        out.push('\n');
        let _ = writeln!(
            out,
            "{}  {}",
            p.bold(&format!("pool {}", esc(&pool.pool))),
            toned(&p, &esc(&rollout_line(pool)), rollout_tone(pool))
        );
        let _ = writeln!(out, "  {}; {}", counts_line(pool), pool_facts(pool));
        for problem in &pool.problems {
            let _ = writeln!(out, "  {} {}", toned(&p, "problem:", "bad"), esc(problem));
        }
        let n = pool.waves.len();
        for w in &pool.waves {
            let _ = writeln!(
                out,
                "  wave {} of {n} {}: {}",
                w.index + 1,
                esc(&w.name),
                toned(&p, &esc(&wave_words(w)), wave_tone(&w.progress))
            );
        }
        let rows: Vec<(&HostStatus, [String; 13])> = pool
            .waves
            .iter()
            .flat_map(|w| w.hosts.iter().map(move |h| (w, h)))
            .map(|(w, h)| (h, cells(w, h, now).map(|c| esc(&c))))
            .collect();
        if rows.is_empty() {
            let _ = writeln!(out, "  no hosts");
            continue;
        }
        let mut widths = HEADERS.map(str::len);
        for (_, row) in &rows {
            for (w, c) in widths.iter_mut().zip(row) {
                *w = (*w).max(c.chars().count());
            }
        }
        let line = |cells: &[String; 13], outcome_tone: Option<&str>| {
            let mut s = String::from("  ");
            for (i, (c, w)) in cells.iter().zip(widths).enumerate() {
                let last = i == cells.len() - 1;
                let padded = if last { c.clone() } else { format!("{c:<w$}") };
                s.push_str("  ");
                match (i, outcome_tone) {
                    (2, Some(t)) => s.push_str(&toned(&p, &padded, t)),
                    _ => s.push_str(&padded),
                }
            }
            s.trim_end().to_owned()
        };
        let _ = writeln!(out, "{}", line(&HEADERS.map(str::to_owned), None));
        for (h, row) in &rows {
            let _ = writeln!(out, "{}", line(row, Some(tone(h))));
        }
    }
    if !status.rejected.is_empty() {
        out.push('\n');
        let _ = writeln!(
            out,
            "{}",
            toned(
                &p,
                &format!(
                    "rejected reports ({}): the status repository holds reports that did not verify",
                    status.rejected.len()
                ),
                "bad"
            )
        );
        for r in &status.rejected {
            let _ = writeln!(
                out,
                "  {}/{}: {}",
                esc(&r.pool),
                esc(&r.host),
                esc(&r.reason)
            );
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// JSON.

/// The JSON rendering: the [`FleetStatus`] as pretty JSON and a newline (docs/contract.md §7).
pub fn render_json(status: &FleetStatus) -> String {
    let mut s = serde_json::to_string_pretty(status).expect("the fleet status serializes");
    s.push('\n');
    s
}

// ---------------------------------------------------------------------------------------------
// HTML.

/// Text from anywhere for the page: terminal-safe (control characters and bidirectional
/// overrides shown as `\u{..}`, never reordering what a reader sees), then HTML-escaped
/// (`& < > " ' /`, safe in text and in quoted attributes alike).
fn h(s: &str) -> String {
    html_escape::encode_safe(&terminal_safe(s)).into_owned()
}

const CSS: &str = "
:root { color-scheme: light; }
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1f2328; background: #ffffff; }
h1 { font-size: 1.5rem; margin: 0 0 .25rem; }
h2 { font-size: 1.2rem; margin: 1.5rem 0 .25rem; }
.meta { color: #59636e; margin: 0 0 1rem; }
.verdict { display: inline-block; padding: .3rem .7rem; border-radius: .3rem; font-weight: 600; }
.attention li { margin: .15rem 0; }
.progress { margin: .25rem 0; padding: .3rem .6rem; border-left: .3rem solid; }
.waves { margin: .25rem 0 .5rem; padding-left: 1.5rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; }
th, td { border: 1px solid #d1d9e0; padding: .2rem .5rem; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
td.num { text-align: right; }
code, .mono { font-family: ui-monospace, monospace; font-size: 12px; }
details summary { cursor: pointer; }
.ok { background: #dafbe1; color: #116329; }
.wait { background: #fff8c5; color: #7d4e00; }
.bad { background: #ffebe9; color: #a40e26; }
.off { background: #eff2f5; color: #59636e; }
.progress.ok { border-color: #1a7f37; }
.progress.wait { border-color: #bf8700; }
.progress.bad { border-color: #cf222e; }
.progress.off { border-color: #818b98; }
footer { color: #59636e; margin-top: 2rem; font-size: 12px; }
";

/// A list cell: `-`, or the count with the items folded under it.
fn list_cell(v: &[String]) -> String {
    if v.is_empty() {
        return "<td class=\"num\">-</td>".to_owned();
    }
    let items: Vec<String> = v.iter().map(|x| format!("<li>{}</li>", h(x))).collect();
    format!(
        "<td><details><summary>{}</summary><ul>{}</ul></details></td>",
        v.len(),
        items.concat()
    )
}

/// The HTML rendering: one self-contained page (inline CSS, no script, no external resource),
/// every string escaped. A table per pool with a row per host, the outcome colour-coded, a
/// progress line per rollout and the time it was generated.
pub fn render_html(status: &FleetStatus) -> String {
    let now = status.generated_at;
    let mut o = String::new();
    let _ = write!(
        o,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"generator\" content=\"fleetctl {}\">\n\
         <title>pacfleet: fleet {} status</title>\n<style>{CSS}</style>\n</head>\n<body>\n",
        env!("CARGO_PKG_VERSION"),
        h(&status.fleet)
    );
    let _ = writeln!(o, "<header>\n<h1>Fleet {}</h1>", h(&status.fleet));
    let _ = writeln!(
        o,
        "<p class=\"meta\">Generated at <time datetime=\"{t}\">{t}</time> · {} pool{} · {} host{}</p>",
        status.pools.len(),
        if status.pools.len() == 1 { "" } else { "s" },
        status.host_count(),
        if status.host_count() == 1 { "" } else { "s" },
        t = time(now),
    );
    if status.attention.is_empty() {
        let _ = writeln!(o, "<p class=\"verdict ok\">All healthy</p>\n</header>");
    } else {
        let _ = writeln!(
            o,
            "<p class=\"verdict bad\">Needs attention: {}</p>\n</header>",
            status.attention.len()
        );
        let _ = writeln!(
            o,
            "<section class=\"attention\">\n<h2>Needs attention</h2>\n<ul>"
        );
        for a in &status.attention {
            let _ = writeln!(
                o,
                "<li><strong>{}</strong> {}</li>",
                a.kind.label(),
                h(&a.message)
            );
        }
        let _ = writeln!(o, "</ul>\n</section>");
    }
    for (i, pool) in status.pools.iter().enumerate() {
        let _ = writeln!(
            o,
            "<section class=\"pool\" id=\"pool-{}\">\n<h2>Pool {}</h2>",
            i + 1,
            h(&pool.pool)
        );
        let _ = writeln!(
            o,
            "<p class=\"progress {}\">{}</p>",
            rollout_tone(pool),
            h(&rollout_line(pool))
        );
        let _ = writeln!(
            o,
            "<p class=\"meta\">{}; {}</p>",
            h(&counts_line(pool)),
            h(&pool_facts(pool))
        );
        for problem in &pool.problems {
            let _ = writeln!(o, "<p class=\"progress bad\">{}</p>", h(problem));
        }
        let _ = writeln!(o, "<ol class=\"waves\">");
        for w in &pool.waves {
            let _ = writeln!(
                o,
                "<li><strong>{}</strong>: <span class=\"{}\">{}</span></li>",
                h(&w.name),
                wave_tone(&w.progress),
                h(&wave_words(w))
            );
        }
        let _ = writeln!(o, "</ol>");
        let _ = writeln!(o, "<table class=\"hosts\">\n<thead><tr>");
        for head in [
            "Wave",
            "Host",
            "Outcome",
            "Last report",
            "Target",
            "Applied",
            "Generation",
            "Health",
            "Drift",
            "Held",
            "Warnings",
            "Reboot",
            "Note",
        ] {
            let _ = write!(o, "<th>{head}</th>");
        }
        let _ = writeln!(o, "</tr></thead>\n<tbody>");
        for w in &pool.waves {
            for host in &w.hosts {
                let c = cells(w, host, now);
                let at = match host.at {
                    Some(t) => format!("<time datetime=\"{}\">{}</time>", time(t), h(&c[3])),
                    None => "-".to_owned(),
                };
                let _ = writeln!(
                    o,
                    "<tr class=\"host\"><td>{}</td><td class=\"mono\">{}</td><td class=\"outcome {}\">{}</td>\
                     <td>{at}</td><td class=\"mono\">{}</td><td class=\"mono\">{}</td><td class=\"num\">{}</td>\
                     <td>{}</td>{}{}{}<td>{}</td><td>{}</td></tr>",
                    h(&c[0]),
                    h(&c[1]),
                    tone(host),
                    h(&c[2]),
                    h(&c[4]),
                    h(&c[5]),
                    h(&c[6]),
                    h(&c[7]),
                    list_cell(&host.drift),
                    list_cell(&host.held),
                    list_cell(&host.warnings),
                    h(&c[11]),
                    h(&c[12]),
                );
            }
        }
        let _ = writeln!(o, "</tbody>\n</table>\n</section>");
    }
    if !status.rejected.is_empty() {
        let _ = writeln!(
            o,
            "<section class=\"rejected\">\n<h2>Rejected reports</h2>\n\
             <p class=\"meta\">The status repository holds these reports, and they did not verify.</p>\n\
             <table>\n<thead><tr><th>Pool</th><th>Host</th><th>Reason</th></tr></thead>\n<tbody>"
        );
        for r in &status.rejected {
            let _ = writeln!(
                o,
                "<tr><td>{}</td><td class=\"mono\">{}</td><td class=\"bad\">{}</td></tr>",
                h(&r.pool),
                h(&r.host),
                h(&r.reason)
            );
        }
        let _ = writeln!(o, "</tbody>\n</table>\n</section>");
    }
    let _ = writeln!(
        o,
        "<footer>Written by <code>fleetctl fleet status</code> {}; a static page, generated at {}.</footer>\n</body>\n</html>",
        env!("CARGO_PKG_VERSION"),
        time(now)
    );
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use pacfleet::manifest::FleetFiles;
    use pacfleet::report::FORMAT;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + h * 3600, 0).unwrap()
    }

    fn fixture() -> FleetStatus {
        // Hosts with a key (or they could not report); one serves both, the reports here are
        // verified already.
        let key = minisign::KeyPair::generate_unencrypted_keypair()
            .unwrap()
            .pk
            .to_base64();
        let host = |h: &str| format!("kind: Host\nname: {h}\nkey: {key}\n");
        let files = [
            ("fleet.yaml", "kind: Fleet\nname: acme\n".to_owned()),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\nrollout:\n  waves:\n    - {name: canary, hosts: [ws-01]}\n    - {name: rest, percent: 100}\n".to_owned(),
            ),
            ("hosts/ws-01.yaml", host("ws-01")),
            ("hosts/ws-02.yaml", host("ws-02")),
        ];
        let fleet = Fleet::from_files(&FleetFiles::from_blobs(
            files.map(|(p, t)| (p.to_owned(), t.into_bytes())),
        ))
        .unwrap();
        let report = HostReport {
            format: FORMAT,
            fleet: "acme".into(),
            host: "ws-01".into(),
            pool: "ws".into(),
            wave: 0,
            rollout: Some("c0ffee\u{1b}[2J".into()),
            target: "<script>alert(1)</script>".into(),
            applied: None,
            generation: Some(3),
            outcome: ReportOutcome::Failed,
            message: Some("boom \u{1b}]0;pwned\u{7} <b>x</b> \u{202e}txt\nsecond line".into()),
            health: None,
            drift: vec!["install <img src=x onerror=alert(1)>".into()],
            held: Vec::new(),
            warnings: Vec::new(),
            needs_reboot: true,
            sequence: 1,
            at: t(0),
        };
        let reports: Reports = [(
            "ws".to_owned(),
            [("ws-01".to_owned(), report)].into_iter().collect(),
        )]
        .into_iter()
        .collect();
        let rejected = vec![(
            "ws".to_owned(),
            "ws-02".to_owned(),
            "forged \u{1b}[31m</td><script>".to_owned(),
        )];
        fleet_status::summarize(&fleet, &reports, &rejected, t(1))
    }

    #[test]
    fn text_escapes_every_reported_string_and_colours_only_when_asked() {
        let s = fixture();
        let plain = render_text(&s, false);
        assert!(
            !plain.contains('\u{1b}') && !plain.contains('\u{7}') && !plain.contains('\u{202e}'),
            "{plain}"
        );
        assert!(
            plain.contains("boom \\u{1b}]0;pwned\\u{7} <b>x</b> \\u{202e}txt"),
            "{plain}"
        );
        assert!(!plain.contains("second line"), "one line per host: {plain}");
        assert!(plain.contains("needs attention (4):"), "{plain}");
        assert!(
            plain.contains("ws/ws-02: forged \\u{1b}[31m</td><script>"),
            "{plain}"
        );
        // The columns line up: OUTCOME starts at the same place on the header and every row.
        let table: Vec<&str> = plain.lines().filter(|l| l.starts_with("    ")).collect();
        let col = |l: &str| l.find("failed").or_else(|| l.find("rejected"));
        assert_eq!(table[0].find("OUTCOME"), col(table[1]), "{plain}");
        assert_eq!(table[0].find("OUTCOME"), col(table[2]), "{plain}");
        let coloured = render_text(&s, true);
        assert!(coloured.contains("\u{1b}["), "colour on");
        // Colour codes are ours alone: strip them and the text is the plain one.
        let stripped: String = {
            let mut out = String::new();
            let mut chars = coloured.chars();
            while let Some(c) = chars.next() {
                if c == '\u{1b}' {
                    for d in chars.by_ref() {
                        if d == 'm' {
                            break;
                        }
                    }
                } else {
                    out.push(c);
                }
            }
            out
        };
        assert_eq!(stripped, plain);
    }

    #[test]
    fn html_escapes_every_reported_string_and_has_no_script() {
        let page = render_html(&fixture());
        assert!(page.starts_with("<!DOCTYPE html>"));
        assert!(!page.to_lowercase().contains("<script"), "{page}");
        assert!(!page.contains("<img"), "{page}");
        assert!(
            !page.contains('\u{1b}') && !page.contains('\u{202e}'),
            "{page}"
        );
        // The target, cut to 12 characters as commits are, then escaped.
        assert!(
            page.contains("<td class=\"mono\">&lt;script&gt;aler</td>"),
            "{page}"
        );
        assert!(
            page.contains("&lt;b&gt;x&lt;&#x2F;b&gt; \\u{202e}txt"),
            "{page}"
        );
        assert!(page.contains("class=\"outcome bad\">failed<"), "{page}");
        assert!(page.contains("class=\"outcome bad\">rejected<"), "{page}");
        assert!(
            page.contains("<time datetime=\"2027-01-15T09:00:00Z\">"),
            "{page}"
        );
        assert_eq!(page.matches("<tr class=\"host\">").count(), 2);
    }

    #[test]
    fn json_is_the_status() {
        let s = fixture();
        let v: serde_json::Value = serde_json::from_str(&render_json(&s)).unwrap();
        assert_eq!(v["needs_attention"], true);
        assert_eq!(v["rejected"][0]["host"], "ws-02");
        assert_eq!(v["pools"][0]["waves"][0]["hosts"][0]["needs_reboot"], true);
    }
}
