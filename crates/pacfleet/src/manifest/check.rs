//! Checks across files: unique names, references that resolve, include cycles, generations
//! that match their paths, keys and windows that parse. Each problem becomes a located
//! diagnostic with what to do. The rules that need resolution (no host claimed by two pools,
//! snapshots that agree, pinned pools that cover what they ask for) are `resolve`'s
//! ([`crate::resolve::check_fleet`]); `crate::validate` runs both. For one host's part of a
//! fleet ([`Scope::Host`]) the checks that need files not read are left to `validate` in CI:
//! other pools' sets and generations, other hosts claimed by two pools.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use super::load::Parsed;
use super::locate::{Seg, locate};
use super::{
    Diagnostic, Doc, Fleet, FleetFiles, FleetSpec, Generation, Host, Name, PackageSet, Pool,
};

struct Ctx<'a> {
    files: &'a FleetFiles,
    diags: &'a mut Vec<Diagnostic>,
}

impl Ctx<'_> {
    fn at(&mut self, file: &str, path: &[Seg<'_>], message: String) {
        let (line, column) = self.files.text(file).map_or((0, 0), |t| locate(t, path));
        self.diags.push(Diagnostic {
            file: file.to_owned(),
            line,
            column,
            message,
        });
    }
}

fn stem(path: &str) -> &str {
    let file = path.rsplit('/').next().unwrap_or(path);
    file.strip_suffix(".yaml")
        .or_else(|| file.strip_suffix(".yml"))
        .unwrap_or(file)
}

fn suggest<'a>(unknown: &str, known: impl Iterator<Item = &'a Name>) -> String {
    let known: Vec<&str> = known.map(|n| n.as_str()).collect();
    let nearest = known
        .iter()
        .map(|k| (strsim::levenshtein(unknown, k), *k))
        .filter(|(d, k)| *d <= (k.len() / 3).max(2))
        .min();
    match (nearest, known.is_empty()) {
        (Some((_, k)), _) => format!("did you mean `{k}`?"),
        (None, true) => "none are defined yet".to_owned(),
        (None, false) => format!("defined: {}", known.join(", ")),
    }
}

/// Indexes docs by name, reporting duplicates and names that differ from their file name.
fn index<T>(
    ctx: &mut Ctx<'_>,
    docs: Vec<Doc<T>>,
    what: &str,
    dir: &str,
    name: impl Fn(&T) -> &Name,
) -> BTreeMap<Name, Doc<T>> {
    let mut out: BTreeMap<Name, Doc<T>> = BTreeMap::new();
    for doc in docs {
        let n = name(&doc.spec).clone();
        if stem(&doc.file) != n.as_str() {
            ctx.at(
                &doc.file,
                &[Seg::Key("name")],
                format!(
                    "{what} `{n}` is in {}, but the file name must be the {what}'s name: rename the file to {dir}/{n}.yaml or change `name`",
                    doc.file
                ),
            );
        }
        if let Some(first) = out.get(&n) {
            let first = first.file.clone();
            ctx.at(
                &doc.file,
                &[Seg::Key("name")],
                format!(
                    "duplicate {what} name `{n}`: {first} defines it too; rename or remove one"
                ),
            );
            continue;
        }
        out.insert(n, doc);
    }
    out
}

/// What was read of the fleet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every manifest.
    Full,
    /// What host `name` needs: fleet.yaml, every pool, its own Host manifest, and the sets
    /// and generations of `pools` (the pools that select it).
    Host {
        /// The hostname.
        name: String,
        /// The pools whose sets (with includes) and generation were read.
        pools: BTreeSet<Name>,
    },
}

impl Scope {
    /// Whether the sets and generation of `pool` were read.
    pub fn has_pool(&self, pool: &Name) -> bool {
        match self {
            Scope::Full => true,
            Scope::Host { pools, .. } => pools.contains(pool),
        }
    }

    /// Whether a host called `host` is this read's concern.
    pub fn has_host(&self, host: &str) -> bool {
        match self {
            Scope::Full => true,
            Scope::Host { name, .. } => name == host,
        }
    }
}

pub(super) fn check(
    parsed: Parsed,
    files: &FleetFiles,
    diags: &mut Vec<Diagnostic>,
    scope: &Scope,
) -> Option<Fleet> {
    let mut ctx = Ctx { files, diags };
    let Parsed {
        fleet,
        pools,
        sets,
        generations,
        hosts,
        fleet_file_present,
    } = parsed;

    let fleet = fleet.into_iter().next();
    if fleet.is_none() && !fleet_file_present {
        ctx.diags.push(Diagnostic {
            file: "fleet.yaml".into(),
            line: 0,
            column: 0,
            message: "missing fleet.yaml: every fleet repository has exactly one, e.g. `kind: Fleet` and `name: acme`".into(),
        });
    }
    if let Some(f) = &fleet {
        check_fleet_file(&mut ctx, f);
    }
    let pools = index(&mut ctx, pools, "pool", "pools", |p| &p.name);
    let sets = index(&mut ctx, sets, "package set", "packages", |s| &s.name);
    let hosts = index(&mut ctx, hosts, "host", "hosts", |h| &h.name);
    check_host_keys(&mut ctx, &hosts);
    check_sets(&mut ctx, &sets);
    let generations = check_generations(&mut ctx, generations, &pools);
    check_pools(&mut ctx, &pools, &sets, &generations, scope);
    Some(Fleet {
        fleet: fleet?,
        pools,
        sets,
        generations,
        hosts,
        pool_index: Default::default(),
    })
}

/// fleet.yaml: the archive is a URL; every key parses and is listed once.
fn check_fleet_file(ctx: &mut Ctx<'_>, f: &Doc<FleetSpec>) {
    if let Some(a) = &f.spec.archive
        && !["file://", "https://", "http://"]
            .iter()
            .any(|s| a.starts_with(s))
    {
        ctx.at(
            &f.file,
            &[Seg::Key("archive")],
            format!("archive `{a}` is not a URL; use https://… or file:///absolute/path"),
        );
    }

    {
        let mut seen = BTreeSet::new();
        for (i, k) in f.spec.keys.iter().enumerate() {
            if let Err(e) = crate::keys::parse_key(k.name.as_str(), &k.key) {
                ctx.at(
                    &f.file,
                    &[Seg::Key("keys"), Seg::Index(i), Seg::Key("key")],
                    format!("{e}; paste the second line of the key's .pub file"),
                );
            }
            if !seen.insert(k.key.trim()) {
                ctx.at(
                    &f.file,
                    &[Seg::Key("keys"), Seg::Index(i)],
                    format!(
                        "key `{}` is listed twice; a key counts once towards the threshold",
                        k.name
                    ),
                );
            }
        }
    }
}

/// Host manifests: a `key:` is a minisign public key.
fn check_host_keys(ctx: &mut Ctx<'_>, hosts: &BTreeMap<Name, Doc<Host>>) {
    for host in hosts.values() {
        if let Some(key) = &host.spec.key
            && let Err(e) =
                crate::keys::parse_key(&format!("the `key:` of host {}", host.spec.name), key)
        {
            ctx.at(
                &host.file,
                &[Seg::Key("key")],
                format!("{e}; paste the base64 line of the host's host.pub (`fleetctl enroll` prints it)"),
            );
        }
    }
}

/// Package sets: includes name sets that exist, and form no cycle.
fn check_sets(ctx: &mut Ctx<'_>, sets: &BTreeMap<Name, Doc<PackageSet>>) {
    for set in sets.values() {
        for (i, inc) in set.spec.include.iter().enumerate() {
            if !sets.contains_key(inc) {
                let hint = suggest(inc.as_str(), sets.keys());
                ctx.at(
                    &set.file,
                    &[Seg::Key("include"), Seg::Index(i)],
                    format!("unknown package set `{inc}` in include ({hint}); create packages/{inc}.yaml or fix the name"),
                );
            }
        }
    }
    for cycle in include_cycles(sets) {
        let first = &sets[&cycle[0]];
        let idx = first
            .spec
            .include
            .iter()
            .position(|n| *n == cycle[1])
            .unwrap_or(0);
        let path: Vec<String> = cycle.iter().map(|n| n.to_string()).collect();
        ctx.at(
            &first.file,
            &[Seg::Key("include"), Seg::Index(idx)],
            format!(
                "include cycle: {}; remove one of these includes",
                path.join(" → ")
            ),
        );
    }
}

/// Generations: path, pool and number agree; snapshot dates, versions and sha256s are well
/// formed. Returns the ones that can be indexed by (pool, number).
fn check_generations(
    ctx: &mut Ctx<'_>,
    generations: Vec<Doc<Generation>>,
    pools: &BTreeMap<Name, Doc<Pool>>,
) -> BTreeMap<(Name, u32), Doc<Generation>> {
    let mut gens = BTreeMap::new();
    for g in generations {
        let dir_pool = g.file.split('/').nth(1).unwrap_or_default().to_owned();
        let number = stem(&g.file).parse::<u32>().ok();
        let mut ok = true;
        if g.spec.pool.as_str() != dir_pool {
            ctx.at(
                &g.file,
                &[Seg::Key("pool")],
                format!(
                    "generation says `pool: {}` but lives in generations/{dir_pool}/; move it to generations/{}/ or fix `pool`",
                    g.spec.pool, g.spec.pool
                ),
            );
            ok = false;
        }
        match number {
            None => {
                ctx.at(
                    &g.file,
                    &[],
                    format!(
                        "generation files are named by their number, e.g. generations/{dir_pool}/{}.yaml; rename this file",
                        g.spec.number
                    ),
                );
                ok = false;
            }
            Some(n) if n != g.spec.number => {
                ctx.at(
                    &g.file,
                    &[Seg::Key("number")],
                    format!(
                        "generation says `number: {}` but its file is {n}.yaml; the number must equal the file name",
                        g.spec.number
                    ),
                );
                ok = false;
            }
            Some(_) => {}
        }
        if !pools.contains_key(&g.spec.pool) && g.spec.pool.as_str() == dir_pool {
            let hint = suggest(g.spec.pool.as_str(), pools.keys());
            ctx.at(
                &g.file,
                &[Seg::Key("pool")],
                format!("generation of unknown pool `{}` ({hint}); create pools/{}.yaml or remove this generation", g.spec.pool, g.spec.pool),
            );
        }
        if let Some(date) = &g.spec.snapshot
            && let Err(e) = crate::snapshot::check_date(date)
        {
            ctx.at(&g.file, &[Seg::Key("snapshot")], e.to_string());
        }
        for (name, pin) in &g.spec.packages {
            if let Err(why) = check_version(&pin.version) {
                ctx.at(
                    &g.file,
                    &[Seg::Key("packages"), Seg::Key(name.as_str()), Seg::Key("version")],
                    format!(
                        "version `{}` of `{name}` is not a full Arch version: {why}; write [epoch:]pkgver-pkgrel as pacman shows it, e.g. 1.2.3-1 or 1:2.0-3",
                        pin.version
                    ),
                );
            }
            if let Some(sum) = &pin.sha256
                && (sum.len() != 64
                    || !sum
                        .bytes()
                        .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
            {
                ctx.at(
                        &g.file,
                        &[Seg::Key("packages"), Seg::Key(name.as_str()), Seg::Key("sha256")],
                        format!("sha256 of `{name}` must be 64 lowercase hex digits (the package file's sha256sum)"),
                    );
            }
        }
        if ok {
            gens.insert((g.spec.pool.clone(), g.spec.number), g);
        }
    }

    gens
}

/// Pools: set references, the pinned generation exists, the window and snapshot parse, the
/// host globs are globs.
fn check_pools(
    ctx: &mut Ctx<'_>,
    pools: &BTreeMap<Name, Doc<Pool>>,
    sets: &BTreeMap<Name, Doc<PackageSet>>,
    gens: &BTreeMap<(Name, u32), Doc<Generation>>,
    scope: &Scope,
) {
    for pool in pools.values() {
        let p = &pool.spec;
        let read = scope.has_pool(&p.name);
        for (i, s) in p.package_sets.iter().enumerate() {
            if read && !sets.contains_key(s) {
                let hint = suggest(s.as_str(), sets.keys());
                ctx.at(
                    &pool.file,
                    &[Seg::Key("package_sets"), Seg::Index(i)],
                    format!("unknown package set `{s}` ({hint}); create packages/{s}.yaml or fix the name"),
                );
            }
        }
        if let Some(n) = p.generation
            && read
            && !gens.contains_key(&(p.name.clone(), n))
        {
            ctx.at(
                    &pool.file,
                    &[Seg::Key("generation")],
                    format!(
                        "pool `{}` is pinned to generation {n}, but generations/{}/{n}.yaml does not exist (or is invalid); create it (`fleetctl set-latest`) or change `generation`",
                        p.name, p.name
                    ),
                );
        }
        if let Some(w) = &p.window {
            if let Err(e) = cron::Schedule::from_str(&w.cron) {
                ctx.at(
                    &pool.file,
                    &[Seg::Key("window"), Seg::Key("cron")],
                    format!(
                        "window cron `{}` does not parse ({e}); use six fields: sec min hour day-of-month month day-of-week, e.g. \"0 0 2 * * Sat\"",
                        w.cron
                    ),
                );
            }
            match super::parse_window_duration(&w.duration) {
                Ok(_) => {}
                Err(super::WindowDurationError::Parse(e)) => ctx.at(
                    &pool.file,
                    &[Seg::Key("window"), Seg::Key("duration")],
                    format!(
                        "window duration `{}` does not parse ({e}); write e.g. 4h, 30m or 1h 30m",
                        w.duration
                    ),
                ),
                Err(e @ super::WindowDurationError::TooLong) => ctx.at(
                    &pool.file,
                    &[Seg::Key("window"), Seg::Key("duration")],
                    format!("window.duration `{}` is {e}", w.duration),
                ),
            }
        }
        if let Some(date) = &p.snapshot
            && let Err(e) = crate::snapshot::check_date(date)
        {
            ctx.at(&pool.file, &[Seg::Key("snapshot")], e.to_string());
        }
        for (i, g) in p.hosts.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                ctx.at(
                    &pool.file,
                    &[Seg::Key("hosts"), Seg::Index(i)],
                    format!("host glob `{g}` is invalid ({e}); use *, ? and [abc] patterns"),
                );
            }
        }
        if let Some(r) = &p.rollout {
            check_rollout(ctx, &pool.file, r);
        }
        if let Some(h) = &p.health {
            check_health(ctx, &pool.file, h);
        }
    }
}

/// A pool's `rollout:`: waves with unique names that select hosts, globs that parse, percents
/// that only grow, durations that parse.
fn check_rollout(ctx: &mut Ctx<'_>, file: &str, r: &super::RolloutSpec) {
    let at = |ctx: &mut Ctx<'_>, path: &[Seg<'_>], message: String| {
        let mut full = vec![Seg::Key("rollout")];
        full.extend_from_slice(path);
        ctx.at(file, &full, message);
    };
    if r.waves.is_empty() {
        at(
            ctx,
            &[Seg::Key("waves")],
            "`rollout.waves` is empty; list at least one wave, e.g. `- {name: all, percent: 100}`, or remove `rollout:`".to_owned(),
        );
    }
    let mut names = BTreeSet::new();
    let mut last_percent: Option<(&str, u8)> = None;
    for (i, w) in r.waves.iter().enumerate() {
        if !names.insert(w.name.as_str()) {
            at(
                ctx,
                &[Seg::Key("waves"), Seg::Index(i), Seg::Key("name")],
                format!(
                    "wave name `{}` is used twice; give every wave its own name",
                    w.name
                ),
            );
        }
        if w.hosts.is_empty() && w.labels.is_empty() && w.percent.is_none() {
            at(
                ctx,
                &[Seg::Key("waves"), Seg::Index(i)],
                format!(
                    "wave `{}` selects no host; give it `hosts:`, `labels:` or `percent:`",
                    w.name
                ),
            );
        }
        for (j, g) in w.hosts.iter().enumerate() {
            if let Err(e) = globset::Glob::new(g) {
                at(
                    ctx,
                    &[
                        Seg::Key("waves"),
                        Seg::Index(i),
                        Seg::Key("hosts"),
                        Seg::Index(j),
                    ],
                    format!("host glob `{g}` is invalid ({e}); use *, ? and [abc] patterns"),
                );
            }
        }
        if let Some(pc) = w.percent {
            if !(1..=100).contains(&pc) {
                at(
                    ctx,
                    &[Seg::Key("waves"), Seg::Index(i), Seg::Key("percent")],
                    format!(
                        "wave `{}` has percent {pc}; write 1 to 100 (the share of the pool reached by the end of this wave)",
                        w.name
                    ),
                );
            } else if let Some((k, before)) = last_percent
                && pc < before
            {
                at(
                    ctx,
                    &[Seg::Key("waves"), Seg::Index(i), Seg::Key("percent")],
                    format!(
                        "wave `{}` has percent {pc}, less than wave `{k}`'s {before}; percents are cumulative, so each wave's must be at least the one before",
                        w.name
                    ),
                );
            }
            last_percent = Some((w.name.as_str(), pc));
        }
        if let Some(soak) = &w.soak
            && let Err(e) = super::parse_rollout_duration(soak)
        {
            at(
                ctx,
                &[Seg::Key("waves"), Seg::Index(i), Seg::Key("soak")],
                format!("wave `{}` soak {e}", w.name),
            );
        }
    }
    if let Some(stale) = &r.stale_after {
        match super::parse_rollout_duration(stale) {
            Err(e) => at(
                ctx,
                &[Seg::Key("stale_after")],
                format!("`rollout.stale_after` {e}"),
            ),
            Ok(d) if d.is_zero() => at(
                ctx,
                &[Seg::Key("stale_after")],
                "`rollout.stale_after` is 0: every host would be stale at once; write e.g. 3d"
                    .to_owned(),
            ),
            Ok(_) => {}
        }
    }
}

/// A pool's `health:`: commands that are there, a timeout that parses.
fn check_health(ctx: &mut Ctx<'_>, file: &str, h: &super::HealthSpec) {
    if h.commands.is_empty() {
        ctx.at(
            file,
            &[Seg::Key("health"), Seg::Key("commands")],
            "`health.commands` is empty; list the checks, e.g. [\"systemctl is-system-running --wait\"], or remove `health:`".to_owned(),
        );
    }
    for (i, c) in h.commands.iter().enumerate() {
        if c.trim().is_empty() || c.contains('\0') {
            ctx.at(
                file,
                &[Seg::Key("health"), Seg::Key("commands"), Seg::Index(i)],
                "health command is empty (or holds a NUL byte); write a shell command, or remove the entry".to_owned(),
            );
        }
    }
    if let Some(t) = &h.timeout {
        match super::parse_rollout_duration(t) {
            Err(e) => ctx.at(
                file,
                &[Seg::Key("health"), Seg::Key("timeout")],
                format!("`health.timeout` {e}"),
            ),
            Ok(d) if d.is_zero() => ctx.at(
                file,
                &[Seg::Key("health"), Seg::Key("timeout")],
                "`health.timeout` is 0: no command could finish; write e.g. 5m".to_owned(),
            ),
            Ok(_) => {}
        }
    }
}

/// Checks that `v` is a pacman version, `[epoch:]pkgver-pkgrel`, as makepkg allows it: the
/// epoch digits; pkgver not empty, of ASCII letters, digits and `.`, `_`, `+`, `~` (makepkg
/// refuses `:`, `/`, `-` and whitespace in it; pacfleet also refuses the rest of punctuation
/// and every control character, which no Arch package has and which would reach diffs and
/// terminals); pkgrel digits with an optional `.digits`. `Err` says what is wrong.
pub fn check_version(v: &str) -> Result<(), String> {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    let Some((rest, pkgrel)) = v.rsplit_once('-') else {
        return Err(if v.is_empty() {
            "it is empty".to_owned()
        } else {
            "there is no `-pkgrel`".to_owned()
        });
    };
    let release_ok = match pkgrel.split_once('.') {
        Some((major, minor)) => digits(major) && digits(minor),
        None => digits(pkgrel),
    };
    if !release_ok {
        return Err(
            "the pkgrel (after the last `-`) must be digits, optionally `.digits`, e.g. 1 or 2.1"
                .to_owned(),
        );
    }
    let pkgver = match rest.split_once(':') {
        Some((epoch, pkgver)) if digits(epoch) => pkgver,
        Some(_) => return Err("the epoch (before `:`) must be digits".to_owned()),
        None => rest,
    };
    if pkgver.is_empty() {
        return Err("the pkgver is empty".to_owned());
    }
    if let Some(c) = pkgver
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '+' | '~')))
    {
        let c = match c {
            '-' | ':' => format!("a second `{c}`"),
            c if c.is_control() || c.is_whitespace() => {
                format!("the character {}", c.escape_unicode())
            }
            c => format!("the character '{c}'"),
        };
        return Err(format!(
            "the pkgver has {c}; it may hold only letters, digits and . _ + ~"
        ));
    }
    Ok(())
}

/// Every include cycle once, as the list of set names starting and ending at the same set.
///
/// A depth-first search with an explicit stack, not recursion: an include chain is as long as
/// the fleet makes it, and `fleetctl agent` runs passes on threads with 2 MiB stacks.
fn include_cycles<T: HasIncludes>(sets: &BTreeMap<Name, Doc<T>>) -> Vec<Vec<Name>> {
    #[derive(Clone, Copy, PartialEq)]
    enum Mark {
        Visiting,
        Done,
    }
    let mut marks: BTreeMap<&Name, Mark> = BTreeMap::new();
    let mut out = Vec::new();
    for root in sets.keys() {
        if marks.contains_key(root) {
            continue;
        }
        // The sets on the current path, each with the index of its next include to follow.
        let mut path: Vec<(&Name, usize)> = vec![(root, 0)];
        marks.insert(root, Mark::Visiting);
        while let Some((set, next)) = path.last_mut() {
            let includes = sets.get(*set).map_or(&[][..], |d| d.spec.includes());
            let Some(inc) = includes.get(*next) else {
                marks.insert(*set, Mark::Done);
                path.pop();
                continue;
            };
            *next += 1;
            match marks.get(inc) {
                Some(Mark::Done) => {}
                Some(Mark::Visiting) => {
                    if let Some(start) = path.iter().position(|(p, _)| *p == inc) {
                        let mut cycle: Vec<Name> =
                            path[start..].iter().map(|(p, _)| (*p).clone()).collect();
                        cycle.push(inc.clone());
                        out.push(cycle);
                    }
                }
                None if sets.contains_key(inc) => {
                    marks.insert(inc, Mark::Visiting);
                    path.push((inc, 0));
                }
                None => {} // an unknown set: reported as such
            }
        }
    }
    out
}

trait HasIncludes {
    fn includes(&self) -> &[Name];
}

impl HasIncludes for super::PackageSet {
    fn includes(&self) -> &[Name] {
        &self.include
    }
}

#[cfg(test)]
mod tests {
    use super::super::{Fleet, FleetFiles};

    fn diags(list: &[(&str, &str)]) -> Vec<String> {
        match Fleet::from_files(&super::super::test_files(list)) {
            Ok(_) => Vec::new(),
            Err(d) => d.0.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn valid_fleet_has_no_diagnostics() {
        let d = diags(&[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [bash]\n",
            ),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [\"ws-*\"]\npackage_sets: [base]\n",
            ),
        ]);
        assert!(d.is_empty(), "{d:?}");
    }

    #[test]
    fn versions_are_pacman_versions() {
        for ok in [
            "1.2.3-1",
            "1:2.0-3",
            "5.2.037-2.1",
            "1.0_rc1+r12.g1a2b3c~x-10",
            "20250301-1",
        ] {
            assert_eq!(super::check_version(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "it is empty"),
            ("5", "there is no `-pkgrel`"),
            ("5.2-", "the pkgrel"),
            ("5.2-x", "the pkgrel"),
            ("5.2-1.", "the pkgrel"),
            ("a:5.2-1", "the epoch"),
            (":5.2-1", "the epoch"),
            ("1:-1", "the pkgver is empty"),
            ("5.2-1-2", "a second `-`"),
            ("1:2:3-1", "a second `:`"),
            ("5.2 beta-1", "the character \\u{20}"),
            ("5/2-1", "the character '/'"),
            ("5.2-2`\r\r_Reviewed: routine_\r\r<!--", "the pkgrel"),
            ("5.2`<!---1", "the character '`'"),
            ("5.2\u{1b}[31m-1", "the character \\u{1b}"),
        ] {
            let err = super::check_version(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn missing_fleet_yaml() {
        let files = FleetFiles::from_blobs([(
            "pools/a.yaml".to_string(),
            b"kind: Pool\nname: a\n".to_vec(),
        )]);
        let err = Fleet::from_files(&files).unwrap_err();
        assert!(
            err.0[0]
                .to_string()
                .starts_with("fleet.yaml:0:0: missing fleet.yaml"),
            "{err}"
        );
    }

    #[test]
    fn unknown_sets_are_located_with_suggestions() {
        let d = diags(&[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\ninclude: [tols]\n",
            ),
            ("packages/tools.yaml", "kind: PackageSet\nname: tools\n"),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: [ws]\npackage_sets: [base, desktop]\n",
            ),
        ]);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("packages/base.yaml:3:11: unknown package set `tols` in include (did you mean `tools`?)"), "{d:?}");
        assert!(d[1].starts_with("pools/ws.yaml:4:22: unknown package set `desktop` (defined: base, tools); create packages/desktop.yaml"), "{d:?}");
    }

    #[test]
    fn include_cycles_are_reported_once() {
        let d = diags(&[
            (
                "packages/a.yaml",
                "kind: PackageSet\nname: a\ninclude: [b]\n",
            ),
            (
                "packages/b.yaml",
                "kind: PackageSet\nname: b\ninclude: [c]\n",
            ),
            (
                "packages/c.yaml",
                "kind: PackageSet\nname: c\ninclude: [a]\n",
            ),
            (
                "packages/d.yaml",
                "kind: PackageSet\nname: d\ninclude: [d]\n",
            ),
        ]);
        assert_eq!(
            d,
            [
                "packages/a.yaml:3:11: include cycle: a → b → c → a; remove one of these includes",
                "packages/d.yaml:3:11: include cycle: d → d; remove one of these includes",
            ]
        );
    }

    #[test]
    fn duplicate_and_misnamed_files() {
        let d = diags(&[
            ("pools/ws.yaml", "kind: Pool\nname: ws\n"),
            ("pools/ws.yml", "kind: Pool\nname: ws\n"),
            ("hosts/a.yaml", "kind: Host\nname: b\n"),
        ]);
        assert!(
            d.iter().any(|l| l.starts_with(
                "hosts/a.yaml:2:7: host `b` is in hosts/a.yaml, but the file name must be"
            )),
            "{d:?}"
        );
        assert!(
            d.iter().any(|l| l.starts_with(
                "pools/ws.yml:2:7: duplicate pool name `ws`: pools/ws.yaml defines it too"
            )),
            "{d:?}"
        );
    }

    #[test]
    fn generation_paths_numbers_and_coverage() {
        let d = diags(&[
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [bash, vim]\n",
            ),
            (
                "pools/srv.yaml",
                "kind: Pool\nname: srv\nhosts: [srv-1]\npackage_sets: [base]\ngeneration: 1\n",
            ),
            (
                "hosts/srv-1.yaml",
                "kind: Host\nname: srv-1\npackages: [htop]\n",
            ),
            (
                "generations/srv/1.yaml",
                "kind: Generation\npool: srv\nnumber: 1\npackages:\n  bash: {version: 5.2-1}\n",
            ),
            (
                "generations/srv/2.yaml",
                "kind: Generation\npool: srv\nnumber: 3\npackages: {}\n",
            ),
            (
                "generations/srv/4.yaml",
                "kind: Generation\npool: web\nnumber: 4\npackages:\n  bash: {version: '5', sha256: abc}\n",
            ),
        ]);
        let joined = d.join("\n");
        assert!(
            joined.contains(
                "generations/srv/2.yaml:3:9: generation says `number: 3` but its file is 2.yaml"
            ),
            "{joined}"
        );
        assert!(joined.contains("generations/srv/4.yaml:2:7: generation says `pool: web` but lives in generations/srv/"), "{joined}");
        assert!(
            joined.contains(
                "generations/srv/4.yaml:5:19: version `5` of `bash` is not a full Arch version"
            ),
            "{joined}"
        );
        assert!(
            joined
                .contains("generations/srv/4.yaml:5:32: sha256 of `bash` must be 64 lowercase hex"),
            "{joined}"
        );
        assert!(joined.contains("pools/srv.yaml:5:13: package `vim` (asked for by set base) is not pinned in generation 1"), "{joined}");
        assert!(
            joined.contains(
                "hosts/srv-1.yaml:3:12: package `htop` is not pinned in generation 1 of pool `srv`"
            ),
            "{joined}"
        );
    }

    #[test]
    fn missing_generation_file_and_bad_window() {
        let d = diags(&[(
            "pools/srv.yaml",
            "kind: Pool\nname: srv\nhosts: [\"srv-[\"]\ngeneration: 7\nwindow: {cron: \"every day\", duration: forever}\n",
        )]);
        let joined = d.join("\n");
        assert!(joined.contains("pools/srv.yaml:4:13: pool `srv` is pinned to generation 7, but generations/srv/7.yaml does not exist"), "{joined}");
        assert!(
            joined.contains("pools/srv.yaml:5:16: window cron `every day` does not parse"),
            "{joined}"
        );
        assert!(
            joined.contains("pools/srv.yaml:5:39: window duration `forever` does not parse"),
            "{joined}"
        );
        assert!(
            joined.contains("pools/srv.yaml:3:9: host glob `srv-[` is invalid"),
            "{joined}"
        );
    }

    #[test]
    fn windows_longer_than_a_week_are_refused() {
        for (d, col) in [("300000years", 41), ("60years", 41), ("8d", 41), ("7d", 0)] {
            let d_ = diags(&[(
                "pools/srv.yaml",
                &format!(
                    "kind: Pool\nname: srv\nhosts: [srv]\nwindow: {{cron: \"* * * * * *\", duration: {d}}}\n"
                ),
            )]);
            let joined = d_.join("\n");
            let want = format!(
                "pools/srv.yaml:4:{col}: window.duration `{d}` is longer than 7 days, the longest window pacfleet allows"
            );
            assert_eq!(col != 0, joined.contains(&want), "{d}: {joined}");
            assert_eq!(col == 0, !joined.contains("window"), "{d}: {joined}");
        }
    }

    #[test]
    fn snapshots_are_dates_need_the_archive_and_agree_with_the_generation() {
        let files = |fleet: &str, list: &[(&str, &str)]| {
            let mut all = vec![("fleet.yaml".to_owned(), fleet.as_bytes().to_vec())];
            all.extend(
                list.iter()
                    .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec())),
            );
            match Fleet::from_files(&FleetFiles::from_blobs(all)) {
                Ok(_) => Vec::new(),
                Err(d) => d.0.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
            }
        };
        let with_archive = "kind: Fleet\nname: acme\narchive: file:///srv/ala\n";
        let gen1 = "kind: Generation\npool: srv\nnumber: 1\nsnapshot: 2025-03-01\npackages: {}\n";
        // Bad dates, on a pool and on a generation.
        let d = files(
            with_archive,
            &[
                (
                    "pools/ws.yaml",
                    "kind: Pool\nname: ws\nhosts: [ws]\nsnapshot: 2025-02-30\n",
                ),
                (
                    "pools/db.yaml",
                    "kind: Pool\nname: db\nhosts: [db]\nsnapshot: 2025-3-1\n",
                ),
                (
                    "generations/db/1.yaml",
                    "kind: Generation\npool: db\nnumber: 1\nsnapshot: March 2025\npackages: {}\n",
                ),
            ],
        );
        assert_eq!(
            d,
            [
                "generations/db/1.yaml:4:11: snapshot `March 2025` has the wrong form; write the archive day as YYYY-MM-DD (zero-padded), e.g. 2025-03-01",
                "pools/db.yaml:4:11: snapshot `2025-3-1` has the wrong form; write the archive day as YYYY-MM-DD (zero-padded), e.g. 2025-03-01",
                "pools/ws.yaml:4:11: snapshot `2025-02-30` is not a day of the calendar; write the archive day as YYYY-MM-DD (zero-padded), e.g. 2025-03-01",
            ]
        );
        // No archive: the file that sets the snapshot in effect says so, naming fleet.yaml.
        let d = files(
            "kind: Fleet\nname: acme\n",
            &[
                (
                    "pools/ws.yaml",
                    "kind: Pool\nname: ws\nhosts: [ws]\nsnapshot: 2025-03-01\n",
                ),
                (
                    "pools/srv.yaml",
                    "kind: Pool\nname: srv\nhosts: [srv]\ngeneration: 1\n",
                ),
                ("generations/srv/1.yaml", gen1),
            ],
        );
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("generations/srv/1.yaml:4:11: snapshot 2025-03-01 needs the fleet's archive, but fleet.yaml has no `archive:`; add `archive: https://archive.archlinux.org`"), "{d:?}");
        assert!(
            d[0].ends_with("(pool `srv` is pinned to this generation)"),
            "{d:?}"
        );
        assert!(d[1].starts_with("pools/ws.yaml:4:11: snapshot 2025-03-01 needs the fleet's archive, but fleet.yaml has no `archive:`"), "{d:?}");
        // An unreferenced generation's snapshot changes nothing on a host: no archive needed.
        let d = files(
            "kind: Fleet\nname: acme\n",
            &[
                ("pools/srv.yaml", "kind: Pool\nname: srv\nhosts: [srv]\n"),
                ("generations/srv/1.yaml", gen1),
            ],
        );
        assert!(d.is_empty(), "{d:?}");
        // A pinned pool may repeat its generation's snapshot, not contradict or add one.
        let pool = |snap: &str| {
            format!("kind: Pool\nname: srv\nhosts: [srv]\ngeneration: 1\nsnapshot: {snap}\n")
        };
        let same = pool("2025-03-01");
        assert!(
            files(
                with_archive,
                &[("pools/srv.yaml", &same), ("generations/srv/1.yaml", gen1)]
            )
            .is_empty()
        );
        let other = pool("2025-04-05");
        let d = files(
            with_archive,
            &[("pools/srv.yaml", &other), ("generations/srv/1.yaml", gen1)],
        );
        assert_eq!(
            d,
            [
                "pools/srv.yaml:5:11: pool `srv` says `snapshot: 2025-04-05`, but its generation 1 (generations/srv/1.yaml) says `snapshot: 2025-03-01`; a pinned pool takes its repositories from its generation's snapshot: make the two equal, or remove `snapshot:` from pools/srv.yaml"
            ]
        );
        let d = files(
            with_archive,
            &[
                ("pools/srv.yaml", &other),
                (
                    "generations/srv/1.yaml",
                    "kind: Generation\npool: srv\nnumber: 1\npackages: {}\n",
                ),
            ],
        );
        assert_eq!(d.len(), 1, "{d:?}");
        assert!(
            d[0].contains("(generations/srv/1.yaml) has no `snapshot:`"),
            "{d:?}"
        );
    }

    #[test]
    fn rollouts_and_health_checks_are_checked() {
        let joined = diags(&[
            ("fleet.yaml", "kind: Fleet\nname: acme\n"),
            (
                "pools/srv.yaml",
                "kind: Pool\nname: srv\nhosts: [srv-*]\nrollout:\n  waves:\n    - {name: canary, hosts: [\"srv-[\"]}\n    - {name: canary, percent: 50, soak: soon}\n    - {name: rest, percent: 10}\n    - {name: none}\n  stale_after: 0s\nhealth:\n  commands: [\"\"]\n  timeout: 100d\n",
            ),
        ])
        .join("\n");
        for want in [
            "pools/srv.yaml:6:30: host glob `srv-[` is invalid",
            "pools/srv.yaml:7:14: wave name `canary` is used twice",
            "pools/srv.yaml:7:41: wave `canary` soak `soon` does not parse",
            "pools/srv.yaml:8:29: wave `rest` has percent 10, less than wave `canary`'s 50",
            "pools/srv.yaml:9:7: wave `none` selects no host",
            "pools/srv.yaml:10:16: `rollout.stale_after` is 0",
            "pools/srv.yaml:12:14: health command is empty",
            "pools/srv.yaml:13:12: `health.timeout` `100d` is longer than 90 days",
        ] {
            assert!(joined.contains(want), "{want} missing in:\n{joined}");
        }
        let ok = diags(&[
            ("fleet.yaml", "kind: Fleet\nname: acme\n"),
            (
                "pools/srv.yaml",
                "kind: Pool\nname: srv\nhosts: [srv-*]\nrollout:\n  waves:\n    - {name: canary, hosts: [srv-1]}\n    - {name: early, percent: 10, soak: 2h}\n    - {name: rest, percent: 100, soak: 1d}\n  failure_budget: 1\n  stale_after: 3d\nhealth: {commands: [\"true\"], timeout: 5m, rollback: true}\n",
            ),
        ]);
        assert!(ok.is_empty(), "{ok:?}");
    }

    #[test]
    fn host_in_two_pools() {
        let d = diags(&[
            ("pools/a.yaml", "kind: Pool\nname: a\nhosts: [\"ws-*\"]\n"),
            ("pools/b.yaml", "kind: Pool\nname: b\nlabels: {role: ws}\n"),
            ("pools/c.yaml", "kind: Pool\nname: c\nhosts: [db-1]\n"),
            ("pools/d.yaml", "kind: Pool\nname: d\nhosts: [\"db-?\"]\n"),
            (
                "hosts/ws-01.yaml",
                "kind: Host\nname: ws-01\nlabels: {role: ws}\n",
            ),
        ]);
        assert_eq!(d.len(), 2, "{d:?}");
        assert!(d[0].starts_with("hosts/ws-01.yaml:2:7: host `ws-01` is matched by 2 pools: `a` (pools/a.yaml), `b` (pools/b.yaml)"), "{d:?}");
        assert!(
            d[1].starts_with("pools/c.yaml:3:9: host `db-1` is matched by 2 pools"),
            "{d:?}"
        );
    }

    #[test]
    fn every_problem_at_once() {
        let d = diags(&[
            ("pools/a.yaml", "kind: Pool\nname: a\nhost: [x]\n"),
            (
                "pools/b.yaml",
                "kind: Pool\nname: b\npackage_sets: [nope]\n",
            ),
            (
                "packages/c.yaml",
                "kind: PackageSet\nname: c\npackages: [Bad]\n",
            ),
        ]);
        assert_eq!(d.len(), 3, "{d:?}");
    }
}
