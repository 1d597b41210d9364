//! `fleetctl diff [--repo PATH] [RANGE] [--pool P] [--host H] [--format text|markdown|json]`: per
//! pool and host, what changes between two revisions of a fleet repository (docs/contract.md §3).
//!
//! Parses the range, reads both sides (a commit, a merge base, or the work tree as `validate`
//! sees it) through `pacfleet::fleet_read`, refuses a side that does not validate — an error that
//! lists its problems, never an empty diff — compares them with `pacfleet::diff`, and renders the
//! result. Exit 0 no change, 1 changes, 2 error.

use std::fmt::Write as _;
use std::io::IsTerminal;

use anyhow::bail;
use clap::builder::styling::AnsiColor;
use serde::Serialize;

use super::output::Paint;
use super::{DiffArgs, DiffFormat};
use pacfleet::diff::{
    self, Change, Filter, FleetDiff, HostDiff, HostStatus, ManifestStatus, PackageChange,
    PackageCounts, PoolDiff, PoolStatus, Setting, SnapshotRow, SnapshotVersions,
};
use pacfleet::fleet_read::{FleetRepo, Rev};
use pacfleet::manifest::Fleet;

/// Package lists longer than this are folded into a `<details>` section in markdown.
const FOLD_AFTER: usize = 15;

pub(super) fn run(args: DiffArgs) -> anyhow::Result<u8> {
    let (from, to) = parse_range(args.range.as_deref())?;
    let repo = FleetRepo::open(&args.repo)?;
    let (old, new) = repo.load_both(&from, &to)?;

    let mut problems = String::new();
    for side in [&old, &new] {
        if let Err(diags) = &side.fleet {
            let what = match &side.commit {
                Some(c) => format!("revision {} ({}) is invalid:", side.label, short(c)),
                None => format!("the work tree ({}) is invalid:", args.repo.display()),
            };
            let _ = writeln!(problems, "{what}");
            for d in &diags.0 {
                let _ = writeln!(problems, "  {d}");
            }
        }
    }
    let (Ok(old_fleet), Ok(new_fleet)) = (&old.fleet, &new.fleet) else {
        bail!(
            "{problems}a diff compares two valid fleets: fix these problems (`fleetctl validate` on a checkout), or compare other revisions"
        );
    };

    for p in &args.pool {
        if !old_fleet.pools.contains_key(p.as_str()) && !new_fleet.pools.contains_key(p.as_str()) {
            let known: Vec<&str> = old_fleet
                .pools
                .keys()
                .chain(new_fleet.pools.keys())
                .map(|n| n.as_str())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            bail!(
                "--pool {p}: no pool `{p}` in {} or {}; pools: {}",
                old.label,
                new.label,
                known.join(", ")
            );
        }
    }
    for h in &args.host {
        let known =
            |f: &Fleet| diff::single_pool(f, h).is_some() || f.hosts.contains_key(h.as_str());
        if !known(old_fleet) && !known(new_fleet) {
            bail!(
                "--host {h}: `{h}` has no Host manifest and no pool selects it in {} or {}; check the hostname",
                old.label,
                new.label
            );
        }
    }

    if pacfleet::snapshot::repo_server(Some("https://a"), "2025-01-01", "core", &args.arch).is_err()
    {
        bail!(
            "--arch {}: not an architecture name; give one such as x86_64 or aarch64",
            args.arch
        );
    }

    let filter = Filter {
        pools: args.pool.clone(),
        hosts: args.host.clone(),
    };
    let mut d = diff::diff(old_fleet, new_fleet, &filter);
    for pool in &mut d.pools {
        pool.snapshot_versions = snapshot_versions(old_fleet, new_fleet, &pool.pool, &args.arch);
    }
    let report = Report {
        from: old.label.clone(),
        from_commit: old.commit.clone(),
        to: new.label.clone(),
        to_commit: new.commit.clone(),
        diff: &d,
    };
    match args.format {
        DiffFormat::Json => super::output::json(&report)?,
        DiffFormat::Markdown => print!("{}", markdown(&report)),
        DiffFormat::Text => {
            let colour = std::io::stdout().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            print!("{}", text(&report, colour));
        }
    }
    Ok(if d.is_empty() { 0 } else { 1 })
}

/// For a floating pool whose snapshot moves: what the archive's repositories hold on both
/// dates, read now (an archive that cannot be read is said so, never an error).
fn snapshot_versions(
    old: &Fleet,
    new: &Fleet,
    pool: &str,
    arch: &str,
) -> Option<diff::SnapshotVersions> {
    let bump = diff::snapshot_bump(old, new, pool)?;
    let names = bump.desired.keys().cloned().collect();
    let read = |(date, archive): &(String, Option<String>)| match archive {
        Some(archive) => pacfleet::archive::read(archive, date, &bump.repos, arch, &names),
        None => Err("the fleet has no `archive:`".to_owned()),
    };
    let (a, b) = (read(&bump.old), read(&bump.new));
    Some(diff::snapshot_versions(
        &bump,
        arch,
        a.as_ref().map_err(String::as_str),
        b.as_ref().map_err(String::as_str),
    ))
}

/// Text from an archive (or anything else untrusted) for a terminal: control characters and
/// bidirectional overrides are shown escaped, never interpreted.
fn esc(s: &str) -> String {
    super::output::terminal_safe(s)
}

/// The JSON document (README: "Reviewing changes: fleetctl diff").
#[derive(Debug, Serialize)]
struct Report<'a> {
    from: String,
    from_commit: Option<String>,
    to: String,
    to_commit: Option<String>,
    #[serde(flatten)]
    diff: &'a FleetDiff,
}

// ---------------------------------------------------------------------------------------------
// Revisions.

/// `A..B`, `A...B`, `A`, or nothing, as `git diff` reads them.
fn parse_range(range: Option<&str>) -> anyhow::Result<(Rev, Rev)> {
    let side = |s: &str| if s.is_empty() { "HEAD" } else { s }.to_owned();
    let Some(range) = range.map(str::trim) else {
        return Ok((Rev::Commit("HEAD".into()), Rev::WorkTree));
    };
    if range.is_empty() {
        bail!(
            "empty range; give `A..B`, `A...B` or a single revision (default: HEAD vs the work tree)"
        );
    }
    if let Some((a, b)) = range.split_once("...") {
        if b.contains("..") {
            bail!("range `{range}` has more than one `..`; give `A..B` or `A...B`");
        }
        return Ok((Rev::MergeBase(side(a), side(b)), Rev::Commit(side(b))));
    }
    if let Some((a, b)) = range.split_once("..") {
        if b.contains("..") {
            bail!("range `{range}` has more than one `..`; give `A..B` or `A...B`");
        }
        return Ok((Rev::Commit(side(a)), Rev::Commit(side(b))));
    }
    Ok((Rev::Commit(range.to_owned()), Rev::WorkTree))
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn side_label(label: &str, commit: Option<&str>) -> String {
    match commit {
        Some(c) => format!("{label} ({})", short(c)),
        None => label.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// Words shared by text and markdown.

fn generation(g: Option<u32>) -> String {
    g.map_or_else(|| "floating".to_owned(), |n| format!("generation {n}"))
}

/// The pool's generation as a phrase for its heading, if there is something to say.
fn pool_generation(p: &PoolDiff) -> Option<String> {
    let (o, n) = (p.generation.old, p.generation.new);
    match p.status {
        PoolStatus::Added => Some(generation(n)),
        PoolStatus::Removed => None,
        PoolStatus::Changed => match (o, n) {
            (Some(o), Some(n)) if o != n => Some(format!("generation {o} → {n}")),
            _ if o != n => Some(format!("{} → {}", generation(o), generation(n))),
            _ => {
                let lock_edited = p
                    .packages
                    .iter()
                    .any(|r| !matches!(r.change, Change::Added | Change::Removed | Change::Repo));
                (lock_edited && n.is_some()).then(|| format!("{}, edited in place", generation(n)))
            }
        },
    }
}

fn unset(field: &str) -> &'static str {
    match field {
        "window" => "any time",
        _ => "(none)",
    }
}

/// `(old, new)` cells of a package row, for humans.
fn cells(r: &PackageChange) -> (String, String) {
    let sha = |s: &Option<String>| match s {
        Some(s) => format!("sha256 {}…", &s[..s.len().min(12)]),
        None => "(no sha256)".into(),
    };
    let repo = |s: &Option<String>| match s {
        Some(s) => format!("[{s}]"),
        None => "(any repo)".into(),
    };
    let version = |s: &Option<String>| s.clone().unwrap_or_default();
    match r.change {
        Change::Sha256 => (sha(&r.old), sha(&r.new)),
        Change::Repo => (repo(&r.old), repo(&r.new)),
        Change::Pinned => ("(unpinned)".into(), version(&r.new)),
        Change::Unpinned => (version(&r.old), "(unpinned)".into()),
        // The version it gets, or had; the other side may list it as a locked dependency.
        Change::Added => (String::new(), version(&r.new)),
        Change::Removed => (version(&r.old), String::new()),
        Change::Upgraded | Change::Downgraded => (version(&r.old), version(&r.new)),
    }
}

/// Who asks for a package, or why it goes.
fn why(r: &PackageChange) -> String {
    let origins = r.origins.join(", ");
    match r.change {
        Change::Removed if !r.excluded_by.is_empty() => {
            format!("excluded by {} (was: {origins})", r.excluded_by.join(", "))
        }
        Change::Removed => format!("was: {origins}"),
        _ if !r.explicit => "dependency".into(),
        _ => origins,
    }
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `(3, "added"), (1, "removed")`: the kinds that occur, in listing order.
fn kind_counts(c: &PackageCounts) -> Vec<(usize, &'static str)> {
    Change::ALL
        .into_iter()
        .filter(|k| c.get(*k) > 0)
        .map(|k| {
            let word = match k {
                Change::Repo => "repo changed",
                Change::Sha256 => "sha256 changed",
                k => k.as_str(),
            };
            (c.get(k), word)
        })
        .collect()
}

/// `3 packages added, 1 removed, 2 upgraded`.
fn package_counts(c: &PackageCounts) -> String {
    kind_counts(c)
        .into_iter()
        .enumerate()
        .map(|(i, (n, word))| match i {
            0 => format!("{} {word}", plural(n, "package", "packages")),
            _ => format!("{n} {word}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// `2 pools changed, 1 host moved: 3 packages added, 1 removed`.
fn summary_line(d: &FleetDiff) -> String {
    let s = &d.summary;
    if !s.changed {
        return "no change to any pool or host".into();
    }
    let mut scope = Vec::new();
    if s.fleet > 0 {
        scope.push("fleet.yaml changed".to_owned());
    }
    for (n, what) in [
        (s.pools.changed, "changed"),
        (s.pools.added, "added"),
        (s.pools.removed, "removed"),
    ] {
        if n > 0 {
            scope.push(format!("{} {what}", plural(n, "pool", "pools")));
        }
    }
    for (n, what) in [
        (s.hosts.moved, "moved"),
        (s.hosts.joined, "joined"),
        (s.hosts.left, "left"),
        (s.hosts.changed, "changed"),
    ] {
        if n > 0 {
            scope.push(format!("{} {what}", plural(n, "host", "hosts")));
        }
    }
    let counts = package_counts(&s.packages);
    if counts.is_empty() {
        scope.join(", ")
    } else {
        format!("{}: {counts}", scope.join(", "))
    }
}

fn host_heading(h: &HostDiff) -> String {
    let pool = |p: &Option<String>| p.clone().unwrap_or_default();
    match h.status {
        HostStatus::Moved => format!("{} → {}", pool(&h.pool.old), pool(&h.pool.new)),
        HostStatus::Joined => format!("joins the fleet in pool {}", pool(&h.pool.new)),
        HostStatus::Left => format!(
            "leaves the fleet (was in pool {}): pacfleet stops managing it, nothing is uninstalled",
            pool(&h.pool.old)
        ),
        HostStatus::Changed => format!("stays in pool {}", pool(&h.pool.new)),
    }
}

// ---------------------------------------------------------------------------------------------
// Text.

fn symbol(c: Change) -> (&'static str, AnsiColor) {
    match c {
        Change::Added => ("+", AnsiColor::Green),
        Change::Removed => ("-", AnsiColor::Red),
        Change::Upgraded => ("↑", AnsiColor::Cyan),
        Change::Downgraded => ("↓", AnsiColor::Yellow),
        _ => ("~", AnsiColor::Magenta),
    }
}

/// Settings and package rows of one section, in aligned columns.
fn text_rows(
    out: &mut String,
    settings: &[Setting],
    show_old: bool,
    rows: &[PackageChange],
    p: &Paint,
) {
    let fw = settings
        .iter()
        .map(|s| s.field.chars().count())
        .max()
        .unwrap_or(0);
    for s in settings {
        let value = match (&s.old, &s.new, show_old) {
            (_, Some(n), false) => esc(n),
            (o, n, _) => format!(
                "{} → {}",
                o.as_deref().map_or_else(|| unset(&s.field).to_owned(), esc),
                n.as_deref().map_or_else(|| unset(&s.field).to_owned(), esc)
            ),
        };
        let _ = writeln!(out, "    {:<fw$}  {value}", s.field);
    }
    // A pool that becomes pinned or floating pins or unpins its whole lock: past a screenful,
    // the dependencies among those rows are counted rather than listed.
    let bulk =
        |r: &&PackageChange| !r.explicit && matches!(r.change, Change::Pinned | Change::Unpinned);
    let folded: Vec<&PackageChange> = rows.iter().filter(bulk).collect();
    let fold = folded.len() > FOLD_AFTER;
    let rows: Vec<&PackageChange> = rows.iter().filter(|r| !fold || !bulk(r)).collect();
    // Versions and settings come from the manifests: shown escaped, never interpreted.
    let cells: Vec<(String, String)> = rows
        .iter()
        .map(|r| {
            let (old, new) = cells(r);
            (esc(&old), esc(&new))
        })
        .collect();
    let (nw, ow, vw) = widths(rows.iter().map(|r| r.name.as_str()), &cells);
    for (r, (old, new)) in rows.iter().zip(&cells) {
        let (sym, colour) = symbol(r.change);
        let mut line = format!("  {} {:<nw$}", p.colour(sym, colour), r.name);
        if ow + vw > 0 {
            let arrow = if old.is_empty() || new.is_empty() {
                " "
            } else {
                "→"
            };
            let _ = write!(line, "  {old:<ow$} {arrow} {new:<vw$}");
        }
        let _ = write!(line, "  {}", esc(&why(r)));
        let _ = writeln!(out, "{}", line.trim_end());
    }
    if fold {
        for kind in [Change::Pinned, Change::Unpinned] {
            let n = folded.iter().filter(|r| r.change == kind).count();
            if n > 0 {
                let _ = writeln!(
                    out,
                    "  {} {n} locked dependencies {} (listed by --format markdown or json)",
                    p.colour("~", AnsiColor::Magenta),
                    kind.as_str()
                );
            }
        }
    }
}

/// Column widths (in characters) of aligned rows: the names, the old cells, the new cells.
fn widths<'a>(
    names: impl Iterator<Item = &'a str>,
    cells: &[(String, String)],
) -> (usize, usize, usize) {
    let max = |it: &mut dyn Iterator<Item = usize>| it.max().unwrap_or(0);
    (
        max(&mut names.map(|n| n.chars().count())),
        max(&mut cells.iter().map(|c| c.0.chars().count())),
        max(&mut cells.iter().map(|c| c.1.chars().count())),
    )
}

/// `(old, new)` cells of a snapshot row.
fn snapshot_cells(r: &SnapshotRow) -> (String, String) {
    let cell = |v: &Option<String>| v.as_deref().map_or_else(|| "(none)".to_owned(), esc);
    match r.change {
        Change::Repo => (format!("[{}]", cell(&r.old)), format!("[{}]", cell(&r.new))),
        _ => (cell(&r.old), cell(&r.new)),
    }
}

/// A floating pool's snapshot bump: the versions each date's repositories hold, or why they
/// are not shown.
fn text_snapshot(out: &mut String, s: &SnapshotVersions, p: &Paint) {
    let source = format!("{}, {}, {}", esc(&s.archive), s.repos.join(", "), s.arch);
    if !s.reachable {
        let _ = writeln!(
            out,
            "  {} the archive's repositories could not be read ({source}), so the versions of {} and {} are not shown:",
            p.colour("!", AnsiColor::Red),
            s.old,
            s.new
        );
        for e in s.error.as_deref().unwrap_or("unknown error").lines() {
            let _ = writeln!(out, "      {}", esc(e));
        }
        return;
    }
    let _ = writeln!(
        out,
        "  repositories of the archive on each date ({source}):"
    );
    if s.packages.is_empty() && s.missing.is_empty() {
        let _ = writeln!(out, "    every package has the same version on both dates");
    }
    let cells: Vec<(String, String)> = s.packages.iter().map(snapshot_cells).collect();
    let (nw, ow, vw) = widths(s.packages.iter().map(|r| r.name.as_str()), &cells);
    for (r, (old, new)) in s.packages.iter().zip(&cells) {
        let (sym, colour) = symbol(r.change);
        let line = format!(
            "  {} {:<nw$}  {old:<ow$} → {new:<vw$}  {}",
            p.colour(sym, colour),
            r.name,
            r.origins.join(", ")
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    for m in &s.missing {
        let _ = writeln!(
            out,
            "  {} {m}: in no repository of the archive on either date",
            p.colour("?", AnsiColor::Red)
        );
    }
}

fn text(r: &Report<'_>, colour: bool) -> String {
    let p = Paint { on: colour };
    let d = r.diff;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{}",
        p.bold(&format!(
            "diff {} → {}",
            side_label(&r.from, r.from_commit.as_deref()),
            side_label(&r.to, r.to_commit.as_deref())
        ))
    );
    if !d.fleet.is_empty() {
        let _ = writeln!(out, "\n{}", p.bold("fleet.yaml"));
        text_rows(&mut out, &d.fleet, true, &[], &p);
    }
    for pool in &d.pools {
        let mut head = format!("pool {}", pool.pool);
        match pool.status {
            PoolStatus::Added => head.push_str(" (new)"),
            PoolStatus::Removed => head.push_str(" (removed)"),
            PoolStatus::Changed => {}
        }
        let _ = write!(out, "\n{}", p.bold(&head));
        if let Some(g) = pool_generation(pool) {
            let _ = write!(out, ": {g}");
        }
        out.push('\n');
        if pool.status == PoolStatus::Removed {
            let _ = writeln!(
                out,
                "    its hosts leave the fleet: pacfleet stops managing them, nothing is uninstalled"
            );
        }
        text_rows(
            &mut out,
            &pool.settings,
            pool.status != PoolStatus::Added,
            &pool.packages,
            &p,
        );
        if let Some(s) = &pool.snapshot_versions {
            text_snapshot(&mut out, s, &p);
        }
    }
    for h in &d.hosts {
        let _ = writeln!(
            out,
            "\n{}: {}",
            p.bold(&format!("host {}", h.host)),
            host_heading(h)
        );
        text_rows(&mut out, &h.settings, true, &h.packages, &p);
    }
    let _ = writeln!(out, "\n{}", p.bold(&summary_line(d)));
    out
}

// ---------------------------------------------------------------------------------------------
// Markdown.

/// Text in a table cell or a line, from anywhere (manifests are a pull request's text): every
/// character markdown or HTML acts on (`\\ | ` * _ [ ] & ~`) is backslash-escaped (`<` and `>`
/// become `&lt;` and `&gt;`), so no
/// value can end the table, open a link or an HTML comment, or emphasise; line breaks (LF and
/// CR, both end a line in markdown) become spaces; control characters and bidirectional
/// overrides are shown as `\u{..}`.
fn md(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            // As entities, so no `<` of the text is left for an HTML parser to see at all.
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '\\' | '|' | '`' | '*' | '_' | '[' | ']' | '&' | '~' => {
                out.push('\\');
                out.push(c);
            }
            c if super::output::is_unsafe_char(c) => {
                // `\u{1b}`: the backslash escaped, so it shows as written.
                out.push('\\');
                out.extend(c.escape_unicode());
            }
            c => out.push(c),
        }
    }
    out
}

/// Code in a table cell; empty stays empty. Only text with nothing a code span cannot hold
/// (backticks end it, escapes do not work inside it, line breaks end the row) is put in one;
/// anything else is shown as escaped text ([`md`]), so no value can break out of the cell.
fn code(s: &str) -> String {
    let plain = |c: char| !matches!(c, '`' | '<' | '>') && !super::output::is_unsafe_char(c);
    // `\|` is how a table cell holds a pipe; a backslash before it would make that ambiguous.
    let pipe_after_backslash = s.contains("\\|");
    if s.is_empty() {
        String::new()
    } else if s.chars().all(plain) && !pipe_after_backslash {
        format!("`{}`", s.replace('|', "\\|"))
    } else {
        md(s)
    }
}

fn md_change(c: Change) -> &'static str {
    match c {
        Change::Added => "➕ added",
        Change::Removed => "➖ removed",
        Change::Upgraded => "⬆️ upgraded",
        Change::Downgraded => "⬇️ **downgraded**",
        Change::Pinned => "📌 pinned",
        Change::Unpinned => "🔓 unpinned",
        Change::Repo => "🔀 repo",
        Change::Sha256 => "⚠️ **sha256**",
    }
}

/// A settings table; `show_old: false` (a new pool) has only the new values.
fn md_settings(out: &mut String, settings: &[Setting], show_old: bool) {
    if settings.is_empty() {
        return;
    }
    if show_old {
        out.push_str("| setting | old | new |\n|---|---|---|\n");
    } else {
        out.push_str("| setting | value |\n|---|---|\n");
    }
    for s in settings {
        let v = |v: &Option<String>| {
            v.as_deref()
                .map_or_else(|| unset(&s.field).to_owned(), code)
        };
        if show_old {
            let _ = writeln!(out, "| {} | {} | {} |", s.field, v(&s.old), v(&s.new));
        } else {
            let _ = writeln!(out, "| {} | {} |", s.field, v(&s.new));
        }
    }
    out.push('\n');
}

/// A package table; without the old/new columns when no row has a version (floating pools).
fn md_table(out: &mut String, rows: &[PackageChange]) {
    let cells: Vec<(String, String)> = rows
        .iter()
        .map(|r| match r.change {
            // The change column already says it; an empty cell reads better than "(unpinned)".
            Change::Pinned => (String::new(), cells(r).1),
            Change::Unpinned => (cells(r).0, String::new()),
            _ => cells(r),
        })
        .collect();
    let versions = cells.iter().any(|(o, n)| !o.is_empty() || !n.is_empty());
    if versions {
        out.push_str("| package | change | old | new | why |\n|---|---|---|---|---|\n");
    } else {
        out.push_str("| package | change | why |\n|---|---|---|\n");
    }
    for (r, (old, new)) in rows.iter().zip(&cells) {
        let _ = write!(out, "| {} | {} |", code(&r.name), md_change(r.change));
        if versions {
            let _ = write!(out, " {} | {} |", code(old), code(new));
        }
        let _ = writeln!(out, " {} |", md(&why(r)));
    }
    out.push('\n');
}

fn md_folded(out: &mut String, what: &str, rows: &[PackageChange]) {
    let counts: Vec<String> = kind_counts(&PackageCounts::of(rows))
        .into_iter()
        .map(|(n, word)| format!("{n} {word}"))
        .collect();
    let _ = writeln!(
        out,
        "<details>\n<summary>{} {what}: {}</summary>\n",
        rows.len(),
        counts.join(", ")
    );
    md_table(out, rows);
    out.push_str("</details>\n\n");
}

/// Package rows: one table when short; when long, explicit packages first (folded only if
/// they are long too) and the lock's dependencies folded.
fn md_packages(out: &mut String, rows: &[PackageChange]) {
    if rows.is_empty() {
        return;
    }
    if rows.len() <= FOLD_AFTER {
        md_table(out, rows);
        return;
    }
    let (explicit, deps): (Vec<PackageChange>, Vec<PackageChange>) =
        rows.iter().cloned().partition(|r| r.explicit);
    if !explicit.is_empty() {
        if explicit.len() <= FOLD_AFTER {
            md_table(out, &explicit);
        } else {
            md_folded(out, "explicit packages", &explicit);
        }
    }
    if !deps.is_empty() {
        md_folded(out, "locked dependencies", &deps);
    }
}

/// Untrusted text as a code span in a table cell: no backtick can end it early.
fn md_untrusted(s: &str) -> String {
    code(&esc(s).replace('`', "'"))
}

fn md_snapshot(out: &mut String, s: &SnapshotVersions) {
    let source = format!(
        "{}, {}, {}",
        md_untrusted(&s.archive),
        s.repos.join(", "),
        s.arch
    );
    if !s.reachable {
        let _ = writeln!(
            out,
            "> **The archive's repositories could not be read** ({source}): {}. The versions of {} and {} are not shown.\n",
            md_untrusted(
                &s.error
                    .as_deref()
                    .unwrap_or("unknown error")
                    .replace('\n', "; ")
            ),
            s.old,
            s.new
        );
        return;
    }
    let _ = writeln!(
        out,
        "Repositories of the archive on {} → {} ({source}):\n",
        s.old, s.new
    );
    if s.packages.is_empty() && s.missing.is_empty() {
        out.push_str("Every package has the same version on both dates.\n\n");
    }
    if !s.packages.is_empty() {
        out.push_str("| package | change | old | new | why |\n|---|---|---|---|---|\n");
        for r in &s.packages {
            let cell = |v: &Option<String>| v.as_deref().map_or_else(String::new, md_untrusted);
            let (old, new) = (cell(&r.old), cell(&r.new));
            let _ = writeln!(
                out,
                "| {} | {} | {old} | {new} | {} |",
                code(&r.name),
                md_change(r.change),
                md(&r.origins.join(", "))
            );
        }
        out.push('\n');
    }
    if !s.missing.is_empty() {
        let names: Vec<String> = s.missing.iter().map(|m| code(m)).collect();
        let _ = writeln!(
            out,
            "In no repository of the archive on either date: {}.\n",
            names.join(", ")
        );
    }
}

fn markdown(r: &Report<'_>) -> String {
    let d = r.diff;
    let mut out = String::new();
    let side = |label: &str, commit: Option<&str>| match commit {
        Some(c) => format!("`{label}` (`{}`)", short(c)),
        None => format!("the {label}"),
    };
    let _ = writeln!(
        out,
        "### Fleet diff: {} → {}\n",
        side(&r.from, r.from_commit.as_deref()),
        side(&r.to, r.to_commit.as_deref())
    );
    if !d.summary.changed {
        out.push_str("No change to any pool or host.\n");
        return out;
    }
    let line = summary_line(d);
    match line.split_once(": ") {
        Some((scope, counts)) => {
            let _ = writeln!(out, "**{scope}:** {counts}\n");
        }
        None => {
            let _ = writeln!(out, "**{line}**\n");
        }
    }
    if !d.fleet.is_empty() {
        out.push_str("#### `fleet.yaml`\n\nThese settings concern every pool and host.\n\n");
        md_settings(&mut out, &d.fleet, true);
    }
    for pool in &d.pools {
        let _ = write!(out, "#### Pool `{}`", pool.pool);
        match pool.status {
            PoolStatus::Added => out.push_str(" (new)"),
            PoolStatus::Removed => out.push_str(" (removed)"),
            PoolStatus::Changed => {}
        }
        if let Some(g) = pool_generation(pool) {
            let _ = write!(out, ": {g}");
        }
        out.push_str("\n\n");
        if pool.status == PoolStatus::Removed {
            out.push_str(
                "Its hosts leave the fleet: pacfleet stops managing them, nothing is uninstalled.\n\n",
            );
        }
        md_settings(&mut out, &pool.settings, pool.status != PoolStatus::Added);
        md_packages(&mut out, &pool.packages);
        if let Some(s) = &pool.snapshot_versions {
            md_snapshot(&mut out, s);
        }
    }
    if !d.hosts.is_empty() {
        out.push_str("#### Hosts\n\n| host | change | old pool | new pool | Host manifest |\n|---|---|---|---|---|\n");
        for h in &d.hosts {
            let pool = |p: &Option<String>| p.as_deref().map_or_else(|| "—".to_owned(), code);
            let manifest = match h.manifest {
                ManifestStatus::None => "—".to_owned(),
                m => serde_json::to_value(m)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
            };
            let status = serde_json::to_value(h.status)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let _ = writeln!(
                out,
                "| {} | {status} | {} | {} | {manifest} |",
                code(&h.host),
                pool(&h.pool.old),
                pool(&h.pool.new)
            );
        }
        out.push('\n');
        for h in d
            .hosts
            .iter()
            .filter(|h| !h.settings.is_empty() || !h.packages.is_empty())
        {
            let _ = writeln!(out, "##### Host `{}`: {}\n", h.host, host_heading(h));
            md_settings(&mut out, &h.settings, true);
            md_packages(&mut out, &h.packages);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_cells_hold_any_text() {
        assert_eq!(code("5.2-1"), "`5.2-1`");
        assert_eq!(code("a|b"), "`a\\|b`");
        assert_eq!(
            code("5.2-2`\r\r_Reviewed: routine_\r\r<!--"),
            "5.2-2\\`  \\_Reviewed: routine\\_  &lt;!--"
        );
        assert_eq!(
            md("[x](javascript:1) *b* a\\|b\u{1b}"),
            "\\[x\\](javascript:1) \\*b\\* a\\\\\\|b\\\\u{1b}"
        );
        assert_eq!(code(""), "");
    }

    #[test]
    fn ranges_read_like_git() {
        let c = |s: &str| Rev::Commit(s.into());
        assert_eq!(parse_range(None).unwrap(), (c("HEAD"), Rev::WorkTree));
        assert_eq!(parse_range(Some("v1")).unwrap(), (c("v1"), Rev::WorkTree));
        assert_eq!(
            parse_range(Some("origin/main..HEAD")).unwrap(),
            (c("origin/main"), c("HEAD"))
        );
        assert_eq!(parse_range(Some("main..")).unwrap(), (c("main"), c("HEAD")));
        assert_eq!(
            parse_range(Some("..topic")).unwrap(),
            (c("HEAD"), c("topic"))
        );
        assert_eq!(
            parse_range(Some("main...topic")).unwrap(),
            (Rev::MergeBase("main".into(), "topic".into()), c("topic"))
        );
        assert!(parse_range(Some("a..b..c")).is_err());
        assert!(parse_range(Some("")).is_err());
    }

    fn row(
        name: &str,
        change: Change,
        old: Option<&str>,
        new: Option<&str>,
        explicit: bool,
    ) -> PackageChange {
        PackageChange {
            name: name.into(),
            change,
            old: old.map(Into::into),
            new: new.map(Into::into),
            explicit,
            origins: if explicit {
                vec!["set base".into()]
            } else {
                vec![]
            },
            excluded_by: vec![],
        }
    }

    #[test]
    fn untrusted_text_is_escaped_for_terminals_and_markdown() {
        assert_eq!(esc("1.0-1"), "1.0-1");
        assert_eq!(esc("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\u{a}");
        assert_eq!(esc("x\u{202e}y"), "x\\u{202e}y");
        assert_eq!(md_untrusted("a`|b\nc"), "`a'\\|b\\u{a}c`");
    }

    #[test]
    fn long_lists_fold_dependencies() {
        let mut rows = vec![row(
            "linux",
            Change::Upgraded,
            Some("6.1-1"),
            Some("6.2-1"),
            true,
        )];
        for i in 0..20 {
            rows.push(row(
                &format!("lib{i:02}"),
                Change::Upgraded,
                Some("1-1"),
                Some("2-1"),
                false,
            ));
        }
        let mut out = String::new();
        md_packages(&mut out, &rows);
        let (visible, folded) = out.split_once("<details>").unwrap();
        assert!(
            visible.contains("`linux`") && !visible.contains("lib00"),
            "{out}"
        );
        assert!(
            folded.contains("<summary>20 locked dependencies: 20 upgraded</summary>"),
            "{out}"
        );
        // Short lists are one plain table.
        let mut out = String::new();
        md_packages(&mut out, &rows[..3]);
        assert!(!out.contains("<details>") && out.contains("lib01"), "{out}");
    }

    #[test]
    fn text_rows_align() {
        let rows = [
            row(
                "linux",
                Change::Upgraded,
                Some("6.1-1"),
                Some("6.12-1"),
                true,
            ),
            row("htop", Change::Added, None, Some("3.3-1"), true),
            row("readline", Change::Pinned, None, Some("8.2-1"), false),
        ];
        let mut out = String::new();
        text_rows(&mut out, &[], true, &rows, &Paint { on: false });
        assert_eq!(
            out,
            "  ↑ linux     6.1-1      → 6.12-1  set base\n  + htop                   3.3-1   set base\n  ~ readline  (unpinned) → 8.2-1   dependency\n"
        );
        // A whole lock pinned at once: the dependencies are counted.
        let mut rows = vec![row("bash", Change::Pinned, None, Some("5.2-1"), true)];
        for i in 0..16 {
            rows.push(row(
                &format!("lib{i:02}"),
                Change::Pinned,
                None,
                Some("1-1"),
                false,
            ));
        }
        let mut out = String::new();
        text_rows(&mut out, &[], true, &rows, &Paint { on: false });
        assert_eq!(
            out,
            "  ~ bash  (unpinned) → 5.2-1  set base\n  ~ 16 locked dependencies pinned (listed by --format markdown or json)\n"
        );
    }
}
