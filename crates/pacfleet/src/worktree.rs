//! The operator's fleet work tree, driven through the `git` command line, for the flows that
//! commit in it (set-latest, rollback): [`WorkTree`] opens and checks it (top of a git work
//! tree, holds fleet.yaml, clean, on a branch), prepares a push or a signature before anything
//! is written (the remote's branch and signature notes, through `notes_sync`), commits, and
//! pushes the branch with the notes atomically; [`Edits`] writes files and puts them back when
//! a later step refuses; [`check_fleet`] validates the result of an edit.
//!
//! git's own configuration (user, hooks, credentials) applies, as if the operator ran it.
//! Every error says what to do ([`WorkTreeError`]).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::manifest::{Fleet, LoadError};
use crate::notes_sync::{self, NotesSyncError, Synced};
use crate::resolve::{self, ResolveError};
use crate::source;
use crate::trust::NOTES_REF;

/// Driving the work tree failed.
#[derive(Debug, thiserror::Error)]
pub enum WorkTreeError {
    /// `--repo` does not exist.
    #[error("--repo {}: no such directory", path.display())]
    NoDirectory {
        /// The path given.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The directory has no fleet.yaml.
    #[error(
        "{} is not a fleet repository: it has no fleet.yaml; pass the work tree with --repo PATH",
        root.display()
    )]
    NotAFleet {
        /// The directory.
        root: PathBuf,
    },
    /// The directory is not in a git work tree.
    #[error(
        "{} is not a git work tree; clone the fleet repository and pass its work tree with --repo",
        root.display()
    )]
    NotAWorkTree {
        /// The directory.
        root: PathBuf,
        /// What git said.
        #[source]
        source: Box<WorkTreeError>,
    },
    /// The directory is below the top of its work tree.
    #[error(
        "{} is inside the git work tree {}, but hosts read fleet.yaml at the top of the repository; pass --repo {}",
        root.display(),
        top.display(),
        top.display()
    )]
    NotTheTop {
        /// The directory.
        root: PathBuf,
        /// The work tree's top.
        top: PathBuf,
    },
    /// git is not installed.
    #[error(
        "the `git` command is not installed (or not on PATH); set-latest and rollback commit with it: install git (`pacman -S git`)"
    )]
    GitMissing,
    /// git could not be started.
    #[error("cannot run git {args}: {source}")]
    Spawn {
        /// The arguments.
        args: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Talking to git over its standard input failed.
    #[error("{what}")]
    Pipe {
        /// `writing to git`, `waiting for git`.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// git exited with an error.
    #[error("git {args} failed ({status}): {detail}")]
    Failed {
        /// The arguments.
        args: String,
        /// Its exit status.
        status: std::process::ExitStatus,
        /// Its stderr and stdout.
        detail: String,
    },
    /// The work tree has uncommitted changes.
    #[error(
        "the work tree {} has uncommitted changes ({listed}{more}); commit or stash them (`git stash -u`) first, so this commit holds only its own change",
        root.display()
    )]
    Dirty {
        /// The work tree.
        root: PathBuf,
        /// The first changes, as `git status --porcelain` lists them.
        listed: String,
        /// ` and N more`, or nothing.
        more: String,
    },
    /// HEAD is detached.
    #[error(
        "the work tree {} has no branch checked out (detached HEAD); check out the fleet's branch (e.g. `git switch main`)",
        root.display()
    )]
    Detached {
        /// The work tree.
        root: PathBuf,
    },
    /// git could not commit.
    #[error(
        "git could not commit (is user.name/user.email set? `git config user.email you@example.com`)"
    )]
    Commit(#[source] Box<WorkTreeError>),
    /// `--push` without the remote.
    #[error(
        "--push: the work tree has no remote `{remote}`; add it (`git remote add {remote} URL`) or leave out --push"
    )]
    NoRemote {
        /// The remote.
        remote: String,
    },
    /// The remote's branch has commits this one lacks.
    #[error(
        "--push: {remote}/{branch} has commits this work tree lacks; `git pull --rebase {remote} {branch}`, then try again"
    )]
    Behind {
        /// The remote.
        remote: String,
        /// The branch.
        branch: String,
    },
    /// The remote's signature notes could not be brought in.
    #[error(transparent)]
    Notes(#[from] NotesSyncError),
    /// The push failed.
    #[error(
        "pushing to {remote} failed; the commit and its signature are kept here: fix the cause and run `git push --atomic {remote} {branch} {NOTES_REF}`"
    )]
    Push {
        /// The remote.
        remote: String,
        /// The branch.
        branch: String,
        /// What git said.
        #[source]
        source: Box<WorkTreeError>,
    },
    /// A generation file to create exists.
    #[error("{} already exists; refusing to overwrite a generation", path.display())]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// A directory could not be created.
    #[error("cannot create {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file could not be written.
    #[error("cannot write {}", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A file to edit is not text.
    #[error("{} is not UTF-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
    },
    /// The edit of a file's text refused.
    #[error(transparent)]
    Edit(Box<dyn std::error::Error + Send + Sync>),
}

/// The result of an edit does not check.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The work tree's fleet does not load or validate.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The host does not resolve.
    #[error(transparent)]
    Resolve(#[from] ResolveError),
    /// The host resolves to something else than asked.
    #[error("after the edit host {host} resolves to {got}, not pool `{pool}` at {generation:?}")]
    Resolves {
        /// The host.
        host: String,
        /// What it resolves to (`Some(("pool", Some(3)))`, `None`).
        got: String,
        /// The pool it should be in.
        pool: String,
        /// The generation it should get.
        generation: Option<u32>,
    },
}

/// Validates the work tree and checks that `host` resolves to `pool` at `generation` (no
/// host check when `host` is empty).
pub fn check_fleet(
    root: &Path,
    host: &str,
    pool: &str,
    generation: Option<u32>,
) -> Result<Fleet, CheckError> {
    let fleet = Fleet::from_dir(root)?;
    if !host.is_empty() {
        match resolve::resolve(&fleet, host)? {
            Some(r) if r.pool == pool && r.generation == generation => {}
            other => {
                return Err(CheckError::Resolves {
                    host: host.to_owned(),
                    got: format!("{:?}", other.map(|r| (r.pool, r.generation))),
                    pool: pool.to_owned(),
                    generation,
                });
            }
        }
    }
    Ok(fleet)
}

/// Files written in the work tree, and how to put them back.
pub struct Edits {
    root: PathBuf,
    undo: Vec<(PathBuf, Option<Vec<u8>>)>,
}

impl Edits {
    /// No edits yet in the work tree at `root`.
    pub fn new(root: &Path) -> Edits {
        Edits {
            root: root.to_owned(),
            undo: Vec::new(),
        }
    }

    /// Creates `rel`; it must not exist.
    pub fn create(mut self, rel: &str, bytes: &[u8]) -> Result<Edits, WorkTreeError> {
        let path = self.root.join(rel);
        if path.exists() {
            return Err(WorkTreeError::Exists { path });
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|source| WorkTreeError::CreateDir {
                path: dir.to_owned(),
                source,
            })?;
        }
        if let Err(source) = std::fs::write(&path, bytes) {
            return Err(WorkTreeError::Write { path, source });
        }
        self.undo.push((path, None));
        Ok(self)
    }

    /// Rewrites `rel` with `edit` applied to its text; on any error the edits so far are put
    /// back.
    pub fn rewrite<E>(
        mut self,
        rel: &str,
        edit: impl FnOnce(&str) -> Result<String, E>,
    ) -> Result<Edits, WorkTreeError>
    where
        E: std::error::Error + Send + Sync + 'static,
    {
        let path = self.root.join(rel);
        let old = std::fs::read(&path).map_err(|source| WorkTreeError::Read {
            path: path.clone(),
            source,
        })?;
        let text = String::from_utf8(old.clone())
            .map_err(|_| WorkTreeError::NotUtf8 { path: path.clone() });
        let new = match text.and_then(|t| edit(&t).map_err(|e| WorkTreeError::Edit(Box::new(e)))) {
            Ok(n) => n,
            Err(e) => {
                self.undo();
                return Err(e);
            }
        };
        if let Err(source) = std::fs::write(&path, new) {
            self.undo();
            return Err(WorkTreeError::Write { path, source });
        }
        self.undo.push((path, Some(old)));
        Ok(self)
    }

    /// Puts every file back as it was (best effort; the work tree was clean before).
    pub fn undo(self) {
        for (path, old) in self.undo.into_iter().rev() {
            let _ = match old {
                Some(bytes) => std::fs::write(&path, bytes),
                None => std::fs::remove_file(&path),
            };
        }
    }
}

/// What [`WorkTree::prepare`] did before anything was written.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The remote to push to (`--push`).
    pub remote: Option<String>,
    /// The notes sync, when the commit will be signed or pushed.
    pub synced: Option<Synced>,
}

/// The operator's fleet work tree, driven through the `git` command line.
#[derive(Debug, Clone)]
pub struct WorkTree {
    /// The work tree's top directory (holds fleet.yaml).
    pub root: PathBuf,
}

impl WorkTree {
    /// Opens the work tree at `path`: git must be installed, `path` must be the top of a git
    /// work tree and hold fleet.yaml.
    pub fn open(path: &Path) -> Result<WorkTree, WorkTreeError> {
        let root = path
            .canonicalize()
            .map_err(|source| WorkTreeError::NoDirectory {
                path: path.to_owned(),
                source,
            })?;
        if !root.join("fleet.yaml").is_file() && !root.join("fleet.yml").is_file() {
            return Err(WorkTreeError::NotAFleet { root });
        }
        let wt = WorkTree { root };
        let top =
            wt.git(&["rev-parse", "--show-toplevel"])
                .map_err(|e| WorkTreeError::NotAWorkTree {
                    root: wt.root.clone(),
                    source: Box::new(e),
                })?;
        let top = PathBuf::from(top.trim());
        if top.canonicalize().ok().as_deref() != Some(wt.root.as_path()) {
            return Err(WorkTreeError::NotTheTop { root: wt.root, top });
        }
        Ok(wt)
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("git");
        cmd.arg("-C").arg(&self.root).args(args);
        cmd.env("LC_ALL", "C");
        cmd
    }

    fn output(&self, mut cmd: Command, args: &[&str]) -> Result<Output, WorkTreeError> {
        cmd.output().map_err(|e| spawn_error(e, args))
    }

    /// Runs git; stdout, or an error with git's stderr.
    pub fn git(&self, args: &[&str]) -> Result<String, WorkTreeError> {
        let out = self.output(self.command(args), args)?;
        ok(args, &out)
    }

    /// Runs git with `input` on stdin.
    fn git_stdin(&self, args: &[&str], input: &str) -> Result<String, WorkTreeError> {
        let mut cmd = self.command(args);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| spawn_error(e, args))?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin
                .write_all(input.as_bytes())
                .map_err(|source| WorkTreeError::Pipe {
                    what: "writing to git",
                    source,
                })?;
        }
        let out = child
            .wait_with_output()
            .map_err(|source| WorkTreeError::Pipe {
                what: "waiting for git",
                source,
            })?;
        ok(args, &out)
    }

    /// Refuses when `git status --porcelain` lists anything (untracked files included).
    pub fn ensure_clean(&self) -> Result<(), WorkTreeError> {
        let status = self.git(&["status", "--porcelain", "--untracked-files=normal"])?;
        if status.trim().is_empty() {
            return Ok(());
        }
        let lines: Vec<&str> = status.lines().collect();
        Err(WorkTreeError::Dirty {
            root: self.root.clone(),
            listed: lines
                .iter()
                .take(5)
                .map(|l| l.trim())
                .collect::<Vec<_>>()
                .join(", "),
            more: if lines.len() > 5 {
                format!(" and {} more", lines.len() - 5)
            } else {
                String::new()
            },
        })
    }

    /// The checked-out branch; refuses a detached HEAD.
    pub fn branch(&self) -> Result<String, WorkTreeError> {
        match self.git(&["symbolic-ref", "--quiet", "--short", "HEAD"]) {
            Ok(b) if !b.trim().is_empty() => Ok(b.trim().to_owned()),
            _ => Err(WorkTreeError::Detached {
                root: self.root.clone(),
            }),
        }
    }

    /// The HEAD commit id.
    pub fn head(&self) -> Result<String, WorkTreeError> {
        Ok(self
            .git(&["rev-parse", "--verify", "HEAD^{commit}"])?
            .trim()
            .to_owned())
    }

    /// Stages `paths` (additions, edits and deletions) and commits them with `message`.
    pub fn commit(&self, paths: &[&str], message: &str) -> Result<String, WorkTreeError> {
        let mut add = vec!["add", "-A", "--"];
        add.extend_from_slice(paths);
        self.git(&add)?;
        self.commit_staged(message)
    }

    /// Commits what is staged with `message`.
    pub fn commit_staged(&self, message: &str) -> Result<String, WorkTreeError> {
        self.git_stdin(&["commit", "-q", "-F", "-"], message)
            .map_err(|e| WorkTreeError::Commit(Box::new(e)))?;
        self.head()
    }

    /// The remote `branch` pushes to: its configured remote, else `origin`.
    fn remote_of(&self, branch: &str) -> String {
        self.git(&["config", "--get", &format!("branch.{branch}.remote")])
            .ok()
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty() && r != ".")
            .unwrap_or_else(|| "origin".to_owned())
    }

    /// Before anything is written: for `--push`, [`WorkTree::prepare_push`] (returns the
    /// remote); else, when the commit will be signed, the remote's notes fetched as `fleetctl
    /// sign` does (`offline` as its flag), so that a fetch that fails or notes that diverged
    /// refuse before a commit is made, not after.
    pub fn prepare(
        &self,
        branch: &str,
        push: bool,
        sign: bool,
        offline: bool,
    ) -> Result<Prepared, WorkTreeError> {
        if push {
            let (remote, synced) = self.prepare_push(branch)?;
            return Ok(Prepared {
                remote: Some(remote),
                synced: Some(synced),
            });
        }
        let mut prepared = Prepared::default();
        if sign {
            prepared.synced = Some(notes_sync::sync(&self.root, offline)?);
        }
        Ok(prepared)
    }

    /// Before anything is written for `--push`: the remote exists, its branch has nothing this
    /// one lacks, and its signature notes are fetched (so the new statement's sequence number
    /// follows the highest published one; see `notes_sync`). Returns the remote.
    pub fn prepare_push(&self, branch: &str) -> Result<(String, Synced), WorkTreeError> {
        let remote = self.remote_of(branch);
        if self.git(&["remote", "get-url", &remote]).is_err() {
            return Err(WorkTreeError::NoRemote { remote });
        }
        let heads = self.git(&[
            "ls-remote",
            &remote,
            &format!("refs/heads/{branch}"),
            NOTES_REF,
        ])?;
        let has = |r: &str| heads.lines().any(|l| l.ends_with(&format!("\t{r}")));
        if has(&format!("refs/heads/{branch}")) {
            self.git(&["fetch", "-q", &remote, &format!("refs/heads/{branch}")])?;
            if self
                .git(&["merge-base", "--is-ancestor", "FETCH_HEAD", "HEAD"])
                .is_err()
            {
                return Err(WorkTreeError::Behind {
                    remote,
                    branch: branch.to_owned(),
                });
            }
        }
        // The notes: fetched and fast-forwarded as `fleetctl sign` does, refused when they
        // diverged, before anything is written.
        let synced = notes_sync::sync(&self.root, false)?;
        Ok((remote, synced))
    }

    /// Pushes `branch` and, if there are any, the signature notes, atomically.
    pub fn push(&self, remote: &str, branch: &str) -> Result<(), WorkTreeError> {
        let branch_ref = format!("refs/heads/{branch}:refs/heads/{branch}");
        let notes_ref = format!("{NOTES_REF}:{NOTES_REF}");
        let mut args = vec!["push", "-q", "--atomic", remote, branch_ref.as_str()];
        if self
            .git(&["rev-parse", "--verify", "-q", NOTES_REF])
            .is_ok()
        {
            args.push(&notes_ref);
        }
        self.git(&args).map_err(|e| WorkTreeError::Push {
            remote: remote.to_owned(),
            branch: branch.to_owned(),
            source: Box::new(e),
        })?;
        Ok(())
    }

    /// The commits between `commit` and its newest signed ancestor (`%h %s` each, at most 10
    /// shown); empty when the parent is signed or no ancestor is.
    pub fn unsigned_below(&self, commit: &str) -> Vec<String> {
        let Ok(log) = self.git(&[
            "log",
            "--format=%H %h %s",
            "-n",
            "200",
            &format!("{commit}^"),
        ]) else {
            return Vec::new();
        };
        let mut unsigned = Vec::new();
        for line in log.lines() {
            let mut parts = line.splitn(2, ' ');
            let (Some(id), Some(rest)) = (parts.next(), parts.next()) else {
                continue;
            };
            if matches!(source::read_note(&self.root, id), Ok(Some(_))) {
                let more = unsigned.len().saturating_sub(10);
                unsigned.truncate(10);
                if more > 0 {
                    unsigned.push(format!("and {more} more"));
                }
                return unsigned;
            }
            unsigned.push(rest.to_owned());
        }
        Vec::new()
    }
}

fn spawn_error(e: std::io::Error, args: &[&str]) -> WorkTreeError {
    if e.kind() == std::io::ErrorKind::NotFound {
        WorkTreeError::GitMissing
    } else {
        WorkTreeError::Spawn {
            args: args.join(" "),
            source: e,
        }
    }
}

fn ok(args: &[&str], out: &Output) -> Result<String, WorkTreeError> {
    if out.status.success() {
        return Ok(String::from_utf8_lossy(&out.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let detail = [stderr.trim(), stdout.trim()]
        .into_iter()
        .filter(|s| !s.is_empty())
        .collect::<Vec<_>>()
        .join("; ");
    Err(WorkTreeError::Failed {
        args: args.join(" "),
        status: out.status,
        detail,
    })
}
