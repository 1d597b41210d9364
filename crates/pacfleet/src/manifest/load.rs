//! Reading manifest files (from a work tree or from blobs of a git tree) and parsing each into
//! its typed kind, turning serde_yaml's errors into located, actionable diagnostics.

use std::path::Path;

use serde::Deserialize;
use serde::de::DeserializeOwned;

use super::{Diagnostic, Doc, FleetSpec, Generation, Host, LoadError, PackageSet, Pool};

/// One manifest file's text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// Path relative to the fleet root, `/`-separated.
    pub path: String,
    /// Its contents.
    pub text: String,
}

/// The manifest files of one revision of a fleet repository, sorted by path.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetFiles {
    /// The files.
    pub files: Vec<SourceFile>,
    /// Files that could not be decoded as UTF-8 (reported as diagnostics when loading).
    pub undecodable: Vec<String>,
    /// Symbolic links (and other entries that are not regular files) at manifest paths or in
    /// place of a manifest directory: never followed, never read, reported as diagnostics.
    pub links: Vec<Link>,
}

/// Something at a manifest path (or in place of a manifest directory) that is not a regular
/// file: a symbolic link in the work tree or a git tree (mode 120000), or a FIFO, socket or
/// device in the work tree. Its target is never opened: a pull request that links
/// `hosts/x.yaml` to `~/.git-credentials` must not get CI to print the credentials.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Path relative to the fleet root, `/`-separated.
    pub path: String,
    /// Where the link points (as written in the link, shown escaped and shortened); `None`
    /// for an entry that is not a link at all.
    pub target: Option<String>,
}

impl Link {
    /// A link at `path` whose target is the bytes `target` (a git blob of mode 120000, or
    /// `readlink`'s answer).
    pub fn symlink(path: String, target: &[u8]) -> Link {
        /// Longer targets are cut: a link's "target" in git is a blob of any size.
        const SHOWN: usize = 200;
        let text = String::from_utf8_lossy(target);
        let mut shown: String = text.chars().take(SHOWN).collect();
        if text.chars().nth(SHOWN).is_some() {
            shown.push('…');
        }
        Link {
            path,
            target: Some(crate::escape::terminal_safe(&shown)),
        }
    }

    fn diagnostic(&self) -> Diagnostic {
        let what = match &self.target {
            Some(t) => format!("is a symbolic link (to {t})"),
            None => "is not a regular file (a FIFO, socket or device)".to_owned(),
        };
        let message = if is_manifest_dir(&self.path) {
            format!(
                "{what}; pacfleet never follows links out of the repository and did not read anything in it: make {}/ a real directory and commit its manifests",
                self.path
            )
        } else {
            format!(
                "{what}; manifests must be regular files in the repository — commit the file itself"
            )
        };
        Diagnostic {
            file: self.path.clone(),
            line: 0,
            column: 0,
            message,
        }
    }
}

/// The kind a manifest file must have, judged by its path; `None` for files that are not
/// manifests (READMEs, CI workflows, anything else in the repository).
pub(super) fn expected_kind(path: &str) -> Option<&'static str> {
    let parts: Vec<&str> = path.split('/').collect();
    let is_yaml = |p: &str| p.ends_with(".yaml") || p.ends_with(".yml");
    match parts.as_slice() {
        ["fleet.yaml"] | ["fleet.yml"] => Some("Fleet"),
        ["pools", f] if is_yaml(f) => Some("Pool"),
        ["packages", f] if is_yaml(f) => Some("PackageSet"),
        ["generations", _, f] if is_yaml(f) => Some("Generation"),
        ["hosts", f] if is_yaml(f) => Some("Host"),
        _ => None,
    }
}

/// Whether `path` (relative, `/`-separated) is a manifest file that `FleetFiles` should hold.
pub fn is_manifest_path(path: &str) -> bool {
    expected_kind(path).is_some()
}

/// Whether `path` is a directory manifests are read from: `pools`, `packages`, `hosts`,
/// `generations` and `generations/<pool>`. A symbolic link there is reported, not followed.
pub fn is_manifest_dir(path: &str) -> bool {
    match path.split('/').collect::<Vec<_>>().as_slice() {
        ["pools" | "packages" | "hosts" | "generations"] => true,
        ["generations", pool] => !pool.is_empty(),
        _ => false,
    }
}

impl FleetFiles {
    /// Builds from (path, bytes) pairs, e.g. blobs read from a git tree; non-manifest paths
    /// are dropped.
    pub fn from_blobs(blobs: impl IntoIterator<Item = (String, Vec<u8>)>) -> FleetFiles {
        let mut out = FleetFiles::default();
        for (path, bytes) in blobs {
            if !is_manifest_path(&path) {
                continue;
            }
            match String::from_utf8(bytes) {
                Ok(text) => out.files.push(SourceFile { path, text }),
                Err(_) => out.undecodable.push(path),
            }
        }
        out.files.sort_by(|a, b| a.path.cmp(&b.path));
        out.undecodable.sort();
        out
    }

    /// Like [`FleetFiles::from_blobs`], with the symbolic links a git tree has at manifest
    /// paths or in place of manifest directories (`(path, target)`, the blob of a mode-120000
    /// entry): they are reported, never read as manifests.
    pub fn from_tree(
        blobs: impl IntoIterator<Item = (String, Vec<u8>)>,
        links: impl IntoIterator<Item = (String, Vec<u8>)>,
    ) -> FleetFiles {
        let mut out = FleetFiles::from_blobs(blobs);
        out.links = links
            .into_iter()
            .filter(|(p, _)| is_manifest_path(p) || is_manifest_dir(p))
            .map(|(p, t)| Link::symlink(p, &t))
            .collect();
        out.links.sort_by(|a, b| a.path.cmp(&b.path));
        out
    }

    /// Reads the manifest files of a work tree rooted at `root` (the directory with
    /// fleet.yaml).
    ///
    /// Nothing is read through a symbolic link: a link at a manifest path or in place of a
    /// manifest directory is recorded in [`FleetFiles::links`] (an error when loading) and
    /// neither its target nor anything under it is opened; so are FIFOs, sockets and devices.
    /// Entries are judged by `symlink_metadata`/`file_type`, which never follow links.
    pub fn from_dir(root: &Path) -> Result<FleetFiles, LoadError> {
        let io = |path: &Path| {
            let path = path.display().to_string();
            move |source| LoadError::Io { path, source }
        };
        let kind_of = |p: &Path| std::fs::symlink_metadata(p).ok().map(|m| m.file_type());
        if !["fleet.yaml", "fleet.yml"]
            .iter()
            .any(|n| kind_of(&root.join(n)).is_some())
        {
            return Err(LoadError::NotAFleet(root.display().to_string()));
        }
        let mut blobs = Vec::new();
        let mut links = Vec::new();
        // Reads `rel` if it is a regular file; records it if it is anything else but a
        // directory. Returns whether it is a real directory (to descend into).
        let mut visit = |rel: String, ft: std::fs::FileType| -> Result<bool, LoadError> {
            let p = root.join(&rel);
            if ft.is_symlink() {
                let target = std::fs::read_link(&p).map_err(io(&p))?;
                links.push(Link::symlink(rel, target.as_os_str().as_encoded_bytes()));
                Ok(false)
            } else if ft.is_dir() {
                Ok(true)
            } else if ft.is_file() {
                if is_manifest_path(&rel) {
                    blobs.push((rel, std::fs::read(&p).map_err(io(&p))?));
                }
                Ok(false)
            } else {
                links.push(Link {
                    path: rel,
                    target: None,
                });
                Ok(false)
            }
        };
        for name in ["fleet.yaml", "fleet.yml"] {
            if let Some(ft) = kind_of(&root.join(name)) {
                visit(name.to_owned(), ft)?;
            }
        }
        for dir in ["pools", "packages", "hosts", "generations"] {
            let d = root.join(dir);
            match kind_of(&d) {
                Some(ft) if ft.is_dir() => {}
                Some(ft) if ft.is_symlink() => {
                    visit(dir.to_owned(), ft)?;
                    continue;
                }
                _ => continue,
            }
            for entry in std::fs::read_dir(&d).map_err(io(&d))? {
                let entry = entry.map_err(io(&d))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                let ft = entry.file_type().map_err(io(&entry.path()))?;
                let rel = format!("{dir}/{name}");
                if dir != "generations" {
                    if is_manifest_path(&rel) {
                        visit(rel, ft)?;
                    }
                    continue;
                }
                if !(ft.is_dir() || ft.is_symlink()) || !visit(rel, ft)? {
                    continue;
                }
                let sub = entry.path();
                for g in std::fs::read_dir(&sub).map_err(io(&sub))? {
                    let g = g.map_err(io(&sub))?;
                    let rel = format!("generations/{name}/{}", g.file_name().to_string_lossy());
                    if is_manifest_path(&rel) {
                        let ft = g.file_type().map_err(io(&g.path()))?;
                        visit(rel, ft)?;
                    }
                }
            }
        }
        let mut files = FleetFiles::from_blobs(blobs);
        links.sort_by(|a, b| a.path.cmp(&b.path));
        files.links = links;
        Ok(files)
    }

    /// The text of the file at `path`, if it is one of these files.
    pub fn text(&self, path: &str) -> Option<&str> {
        self.files
            .binary_search_by(|f| f.path.as_str().cmp(path))
            .ok()
            .map(|i| self.files[i].text.as_str())
    }
}

/// Every manifest that parsed, by kind, in path order.
#[derive(Debug, Default)]
pub(super) struct Parsed {
    pub fleet: Vec<Doc<FleetSpec>>,
    pub pools: Vec<Doc<Pool>>,
    pub sets: Vec<Doc<PackageSet>>,
    pub generations: Vec<Doc<Generation>>,
    pub hosts: Vec<Doc<Host>>,
    /// Whether a fleet.yaml file exists at all (parsed or not).
    pub fleet_file_present: bool,
}

impl Parsed {
    /// Adds `other`'s manifests (of other files) to these.
    pub fn extend(&mut self, other: Parsed) {
        self.fleet.extend(other.fleet);
        self.pools.extend(other.pools);
        self.sets.extend(other.sets);
        self.generations.extend(other.generations);
        self.hosts.extend(other.hosts);
        self.fleet_file_present |= other.fleet_file_present;
    }

    /// Puts every kind in path order, as [`parse_all`] leaves them.
    pub fn sort(&mut self) {
        self.fleet.sort_by(|a, b| a.file.cmp(&b.file));
        self.pools.sort_by(|a, b| a.file.cmp(&b.file));
        self.sets.sort_by(|a, b| a.file.cmp(&b.file));
        self.generations.sort_by(|a, b| a.file.cmp(&b.file));
        self.hosts.sort_by(|a, b| a.file.cmp(&b.file));
    }
}

/// Parses every file into its kind; files that fail are reported and left out.
pub(super) fn parse_all(files: &FleetFiles) -> (Parsed, Vec<Diagnostic>) {
    let mut parsed = Parsed::default();
    let mut diags = Vec::new();
    for path in &files.undecodable {
        diags.push(Diagnostic {
            file: path.clone(),
            line: 0,
            column: 0,
            message: "the file is not valid UTF-8; save it as UTF-8 text".into(),
        });
    }
    for link in &files.links {
        if expected_kind(&link.path) == Some("Fleet") {
            parsed.fleet_file_present = true;
        }
        diags.push(link.diagnostic());
    }
    for file in &files.files {
        let Some(kind) = expected_kind(&file.path) else {
            continue;
        };
        if kind == "Fleet" {
            parsed.fleet_file_present = true;
        }
        match precheck(file, kind) {
            Err(d) => diags.push(d),
            Ok(()) => match kind {
                "Fleet" => push(&mut parsed.fleet, file, kind, &mut diags),
                "Pool" => push(&mut parsed.pools, file, kind, &mut diags),
                "PackageSet" => push(&mut parsed.sets, file, kind, &mut diags),
                "Generation" => push(&mut parsed.generations, file, kind, &mut diags),
                _ => push(&mut parsed.hosts, file, kind, &mut diags),
            },
        }
    }
    (parsed, diags)
}

/// Parses `file` as its kind (one parse: a manifest's `kind` field only accepts the right
/// kind). Only when that fails is the file looked at again, to say the more useful thing when
/// `kind:` itself is wrong.
fn push<T: DeserializeOwned>(
    out: &mut Vec<Doc<T>>,
    file: &SourceFile,
    expected: &str,
    diags: &mut Vec<Diagnostic>,
) {
    match serde_yaml::from_str::<T>(&file.text) {
        Ok(spec) => out.push(Doc {
            file: file.path.clone(),
            spec,
        }),
        Err(_) if let Err(d) = check_kind(file, expected) => diags.push(d),
        Err(e) => {
            let mut d = yaml_diagnostic(&file.path, &e);
            // serde_yaml places errors raised by our own validation (names) at the document
            // start; find the offending value instead.
            if let Some(bad) = d
                .message
                .split("invalid name `")
                .nth(1)
                .and_then(|r| r.split('`').next())
                && let Some((line, column)) = super::locate::find_scalar(&file.text, bad)
            {
                (d.line, d.column) = (line, column);
            }
            diags.push(d);
        }
    }
}

/// How deep flow collections (`[…]`, `{…}`) may nest in a manifest. The YAML parser takes time
/// quadratic in the depth (20 000 levels: 11 s), so deeper files are refused before parsing;
/// serde_yaml refuses more than 128 levels anyway.
const MAX_FLOW_DEPTH: usize = 64;

/// Where (1-based line, column) flow collections in `text` first nest deeper than `limit`,
/// counting `[` and `{` outside quoted scalars and comments. Brackets inside plain scalars are
/// counted too, which only ever makes the count higher.
fn too_deeply_nested(text: &str, limit: usize) -> Option<(usize, usize)> {
    let (mut depth, mut line, mut column) = (0usize, 1usize, 0usize);
    let (mut single, mut double, mut comment, mut escaped) = (false, false, false, false);
    let mut previous = '\n';
    for c in text.chars() {
        column += 1;
        if c == '\n' {
            (line, column, comment) = (line + 1, 0, false);
        } else if comment {
        } else if double {
            if escaped {
                escaped = false;
            } else if c == '\\' {
                escaped = true;
            } else if c == '"' {
                double = false;
            }
        } else if single {
            if c == '\'' {
                single = false;
            }
        } else {
            match c {
                '#' if previous.is_whitespace() => comment = true,
                '"' => double = true,
                '\'' => single = true,
                '[' | '{' => {
                    depth += 1;
                    if depth > limit {
                        return Some((line, column));
                    }
                }
                ']' | '}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        previous = c;
    }
    None
}

/// What is checked before any YAML parser sees a file: that it is not empty, and that it does
/// not nest deep enough to make parsing slow.
fn precheck(file: &SourceFile, expected: &str) -> Result<(), Diagnostic> {
    if file.text.trim().is_empty() {
        return Err(Diagnostic {
            file: file.path.clone(),
            line: 0,
            column: 0,
            message: format!("the file is empty; a manifest here starts with `kind: {expected}`"),
        });
    }
    if let Some((line, column)) = too_deeply_nested(&file.text, MAX_FLOW_DEPTH) {
        return Err(Diagnostic {
            file: file.path.clone(),
            line,
            column,
            message: format!(
                "lists and mappings are nested more than {MAX_FLOW_DEPTH} levels deep here; manifests are flat (a few levels at most): fix the brackets"
            ),
        });
    }
    Ok(())
}

/// Checks the YAML syntax and the `kind:` of a file against the kind its path requires.
fn check_kind(file: &SourceFile, expected: &str) -> Result<(), Diagnostic> {
    #[derive(Deserialize)]
    struct Peek {
        kind: Option<serde_yaml::Value>,
    }
    let peek: Peek =
        serde_yaml::from_str(&file.text).map_err(|e| yaml_diagnostic(&file.path, &e))?;
    let at = |message: String| {
        let (line, column) = super::locate::locate(&file.text, &[super::locate::Seg::Key("kind")]);
        Diagnostic {
            file: file.path.clone(),
            line,
            column,
            message,
        }
    };
    match peek.kind {
        None => Err(at(format!(
            "missing field `kind`; add `kind: {expected}` as the first line"
        ))),
        Some(serde_yaml::Value::String(k)) if k == expected => Ok(()),
        Some(serde_yaml::Value::String(k)) => {
            let place = match k.as_str() {
                "Fleet" => Some("fleet.yaml"),
                "Pool" => Some("pools/"),
                "PackageSet" => Some("packages/"),
                "Generation" => Some("generations/<pool>/"),
                "Host" => Some("hosts/"),
                _ => None,
            };
            Err(at(match place {
                Some(place) => format!(
                    "`kind: {k}` does not belong here: files at this path must be `kind: {expected}`; move the file to {place} or fix `kind`"
                ),
                None => format!(
                    "unknown kind `{k}`; this file's path requires `kind: {expected}` (kinds: Fleet, Pool, PackageSet, Generation, Host)"
                ),
            }))
        }
        Some(_) => Err(at(format!(
            "`kind` must be a string; write `kind: {expected}`"
        ))),
    }
}

/// A serde_yaml error as a located diagnostic, with the nearest valid field named for unknown
/// fields.
pub(super) fn yaml_diagnostic(path: &str, e: &serde_yaml::Error) -> Diagnostic {
    let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
    let mut message = e.to_string();
    if let Some(l) = e.location() {
        let suffix = format!(" at line {} column {}", l.line(), l.column());
        if let Some(stripped) = message.strip_suffix(&suffix) {
            message = stripped.to_owned();
        }
    }
    if message.contains("more than one document") {
        message.push_str("; put each manifest in its own file (no `---` separators)");
    }
    Diagnostic {
        file: path.to_owned(),
        line,
        column,
        message: improve_unknown_field(message),
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" becomes "unknown field `x`; did you
/// mean `a`? valid fields: a, b".
fn improve_unknown_field(message: String) -> String {
    let Some(pos) = message.find("unknown field `") else {
        return message;
    };
    let prefix = &message[..pos];
    let ticks: Vec<&str> = message[pos..].split('`').skip(1).step_by(2).collect();
    let Some((unknown, expected)) = ticks.split_first() else {
        return message;
    };
    let nearest = expected
        .iter()
        .map(|f| (strsim::levenshtein(unknown, f), *f))
        .filter(|(d, f)| *d <= (f.len() / 3).max(2))
        .min();
    let valid = expected.join(", ");
    match nearest {
        Some((_, f)) => format!(
            "{prefix}unknown field `{unknown}`; did you mean `{f}`? (valid fields: {valid})"
        ),
        None if expected.is_empty() => {
            format!("{prefix}unknown field `{unknown}`; this mapping takes no fields")
        }
        None => format!("{prefix}unknown field `{unknown}`; remove it (valid fields: {valid})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(list: &[(&str, &str)]) -> FleetFiles {
        FleetFiles::from_blobs(
            list.iter()
                .map(|(p, t)| (p.to_string(), t.as_bytes().to_vec())),
        )
    }

    #[test]
    fn paths_decide_kinds() {
        assert_eq!(expected_kind("fleet.yaml"), Some("Fleet"));
        assert_eq!(expected_kind("pools/ws.yaml"), Some("Pool"));
        assert_eq!(expected_kind("generations/ws/3.yaml"), Some("Generation"));
        assert_eq!(expected_kind("README.md"), None);
        assert_eq!(expected_kind(".github/workflows/ci.yaml"), None);
        assert_eq!(expected_kind("pools/sub/ws.yaml"), None);
    }

    #[test]
    fn unknown_field_names_the_nearest() {
        let f = files(&[("pools/ws.yaml", "kind: Pool\nname: ws\npakages: [a]\n")]);
        let (_, diags) = parse_all(&f);
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert_eq!((d.line, d.column), (3, 1), "{d}");
        assert!(
            d.message
                .contains("unknown field `pakages`; did you mean `packages`?"),
            "{d}"
        );
        assert!(!d.message.contains("at line"), "{d}");
    }

    #[test]
    fn wrong_kind_and_missing_kind() {
        let f = files(&[
            ("pools/a.yaml", "kind: PackageSet\nname: a\n"),
            ("pools/b.yaml", "name: b\n"),
            ("hosts/c.yaml", ""),
        ]);
        let (_, diags) = parse_all(&f);
        let text: Vec<String> = diags.iter().map(|d| d.to_string()).collect();
        assert!(
            text[0].starts_with("hosts/c.yaml:0:0: the file is empty"),
            "{text:?}"
        );
        assert!(
            text[1].starts_with("pools/a.yaml:1:7: `kind: PackageSet` does not belong here"),
            "{text:?}"
        );
        assert!(text[1].contains("move the file to packages/"), "{text:?}");
        assert!(
            text[2].starts_with("pools/b.yaml:1:1: missing field `kind`"),
            "{text:?}"
        );
    }

    #[test]
    fn syntax_and_type_errors_are_located() {
        let f = files(&[
            ("pools/a.yaml", "kind: Pool\nname: a\npackages: [a, b\n"),
            ("pools/b.yaml", "kind: Pool\nname: b\nprune: maybe\n"),
            ("pools/c.yaml", "kind: Pool\nname: C\n"),
        ]);
        let (_, diags) = parse_all(&f);
        assert_eq!(diags.len(), 3, "{diags:?}");
        assert!(diags[0].line >= 3, "{}", diags[0]);
        assert_eq!((diags[1].line, diags[1].column), (3, 8), "{}", diags[1]);
        assert!(diags[1].message.contains("prune"), "{}", diags[1]);
        assert!(
            diags[2].message.contains("invalid name `C`"),
            "{}",
            diags[2]
        );
        assert_eq!(diags[2].line, 2, "{}", diags[2]);
    }

    #[test]
    fn package_refs_take_both_forms() {
        let f = files(&[(
            "packages/base.yaml",
            "kind: PackageSet\nname: base\npackages: [bash, {name: openssh, repo: core}]\n",
        )]);
        let (parsed, diags) = parse_all(&f);
        assert!(diags.is_empty(), "{diags:?}");
        let set = &parsed.sets[0].spec;
        assert_eq!(set.packages[1].name().as_str(), "openssh");
        assert_eq!(set.packages[1].repo().map(|r| r.as_str()), Some("core"));
        let bad = files(&[(
            "packages/x.yaml",
            "kind: PackageSet\nname: x\npackages: [{name: a, rep: core}]\n",
        )]);
        let (_, diags) = parse_all(&bad);
        assert!(
            diags[0].message.contains("did you mean `repo`"),
            "{:?}",
            diags
        );
        let nested = files(&[(
            "packages/y.yaml",
            "kind: PackageSet\nname: y\npackages:\n  - ok\n  - Bad\n",
        )]);
        let (_, diags) = parse_all(&nested);
        assert_eq!((diags[0].line, diags[0].column), (5, 5), "{:?}", diags);
    }
}
