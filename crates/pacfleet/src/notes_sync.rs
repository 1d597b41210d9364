//! Before a new statement is signed: bring the remote's signature notes in, so that its
//! sequence number is never lower than one already published and co-signatures land on the
//! published statement.
//!
//! The remote's `refs/notes/pacfleet` is fetched into [`REMOTE_NOTES`] (forced: it mirrors the
//! remote and holds nothing of its own). Then the local notes ref is fast-forwarded to it when
//! it is missing or an ancestor of it; left alone when it already contains it (local
//! signatures not pushed yet); and when the two have diverged (both hold signatures the other
//! lacks) signing is refused with how to merge them: a forced fetch would drop the local
//! signatures, a push of either would be rejected.
//!
//! The remote is the checked-out branch's (`branch.<b>.remote`), else `origin`. No remote at
//! all: a warning, and the local notes are all there is. A fetch that fails (offline, wrong
//! URL) refuses, unless `--offline` says to sign with the local notes only. Nothing here
//! prints: [`sync`] returns what it did, and [`Synced::warning`] what the caller warns of.
//! Used by `fleetctl sign` and by the work tree driver (`worktree`) before set-latest and
//! rollback commit.

use std::path::Path;
use std::process::Command;

use crate::trust::NOTES_REF;

/// Where the remote's notes are fetched to (a mirror, overwritten by every fetch).
pub const REMOTE_NOTES: &str = "refs/pacfleet/remote-notes";

/// Bringing the remote's notes in failed; nothing was signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotesSyncError {
    /// The remote's notes could not be listed or fetched.
    #[error(
        "cannot fetch the signature notes ({NOTES_REF}) from `{remote}`: {detail}\nSigning without them could reuse or go below a published sequence number, which hosts refuse. Fix the connection and try again, or pass --offline to sign with the local notes only"
    )]
    Fetch {
        /// The remote.
        remote: String,
        /// What git said.
        detail: String,
    },
    /// The local notes ref could not be created.
    #[error("cannot write {NOTES_REF}: {0}")]
    Write(String),
    /// The local notes ref could not be fast-forwarded.
    #[error("cannot fast-forward {NOTES_REF}: {0}")]
    FastForward(String),
    /// Both sides hold signatures the other lacks.
    #[error(
        "the signature notes here and on `{remote}` have diverged: each has signatures the other lacks (someone signed and pushed while signatures made here were not pushed yet). Nothing was signed. Merge the remote's notes, fetched to {REMOTE_NOTES}, into yours and publish them, then sign again:\n  git notes --ref=pacfleet merge {REMOTE_NOTES}\n  git push {remote} {NOTES_REF}\nIf both sides signed the same commit, the merge stops with a conflict: `git notes --ref=pacfleet merge --abort`, then `git notes --ref=pacfleet merge -s theirs {REMOTE_NOTES}` keeps {remote}'s statement there (sign that commit again to add this key). Do not fetch with `+{NOTES_REF}:{NOTES_REF}`: that drops the signatures made here"
    )]
    Diverged {
        /// The remote.
        remote: String,
    },
}

/// What [`sync`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Synced {
    /// No remote to fetch from (warned).
    NoRemote,
    /// `--offline`: not fetched from this remote (warned).
    Offline(String),
    /// Fetched from the remote; it has no notes yet.
    RemoteEmpty(String),
    /// Fetched from the remote; the local notes contain the remote's now.
    Current(String),
}

impl Synced {
    /// The remote, when there is one.
    pub fn remote(&self) -> Option<&str> {
        match self {
            Synced::RemoteEmpty(r) | Synced::Current(r) | Synced::Offline(r) => Some(r),
            Synced::NoRemote => None,
        }
    }

    /// What the operator is warned of when the notes were not fetched (`repo` as given to
    /// [`sync`]): the sequence number then comes from the local notes only.
    pub fn warning(&self, repo: &Path) -> Option<String> {
        match self {
            Synced::NoRemote => Some(format!(
                "{} has no git remote: the sequence number comes from the local signature notes only; when the fleet repository has a remote, sign in a clone of it",
                repo.display()
            )),
            Synced::Offline(remote) => Some(format!(
                "--offline: the signature notes were not fetched from `{remote}`; the sequence number comes from the local notes only, and if {remote} has higher ones hosts refuse this statement and the push of the notes is rejected"
            )),
            Synced::RemoteEmpty(_) | Synced::Current(_) => None,
        }
    }
}

/// Fetches the remote's notes and brings the local notes ref up to them (see the module
/// documentation). `repo` is any git repository (work tree or bare). When nothing was
/// fetched, [`Synced::warning`] says so; the caller shows it.
pub fn sync(repo: &Path, offline: bool) -> Result<Synced, NotesSyncError> {
    let git = Git(repo);
    let Some(remote) = git.remote() else {
        return Ok(Synced::NoRemote);
    };
    if offline {
        return Ok(Synced::Offline(remote));
    }
    let refused = |detail: String| NotesSyncError::Fetch {
        remote: remote.clone(),
        detail,
    };
    let listed = git
        .run(&["ls-remote", "--refs", &remote, NOTES_REF])
        .map_err(refused)?;
    if !listed
        .lines()
        .any(|l| l.ends_with(&format!("\t{NOTES_REF}")))
    {
        return Ok(Synced::RemoteEmpty(remote));
    }
    git.run(&[
        "fetch",
        "-q",
        "--no-tags",
        &remote,
        &format!("+{NOTES_REF}:{REMOTE_NOTES}"),
    ])
    .map_err(refused)?;
    let theirs = git.rev(REMOTE_NOTES).ok_or_else(|| {
        refused(format!(
            "the fetch did not write {REMOTE_NOTES} (a bug, or a concurrent git command)"
        ))
    })?;
    match git.rev(NOTES_REF) {
        None => {
            git.run(&["update-ref", NOTES_REF, &theirs])
                .map_err(NotesSyncError::Write)?;
        }
        Some(ours) if ours == theirs || git.is_ancestor(&theirs, &ours) => {}
        Some(ours) if git.is_ancestor(&ours, &theirs) => {
            // The old value guards against a concurrent writer.
            git.run(&["update-ref", NOTES_REF, &theirs, &ours])
                .map_err(NotesSyncError::FastForward)?;
        }
        Some(_) => return Err(NotesSyncError::Diverged { remote }),
    }
    Ok(Synced::Current(remote))
}

struct Git<'a>(&'a Path);

impl Git<'_> {
    /// git's stdout, or its stderr as the error.
    fn run(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new("git")
            .arg("-C")
            .arg(self.0)
            .args(args)
            .env("LC_ALL", "C")
            .env("GIT_TERMINAL_PROMPT", "0")
            .output()
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::NotFound {
                    "the `git` command is not installed (or not on PATH): install git (`pacman -S git`)".to_owned()
                } else {
                    format!("cannot run git: {e}")
                }
            })?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            let err = String::from_utf8_lossy(&out.stderr);
            Err(format!(
                "git {} failed ({}): {}",
                args.join(" "),
                out.status,
                err.trim()
            ))
        }
    }

    fn rev(&self, name: &str) -> Option<String> {
        self.run(&["rev-parse", "--verify", "-q", name])
            .ok()
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
    }

    fn is_ancestor(&self, a: &str, b: &str) -> bool {
        self.run(&["merge-base", "--is-ancestor", a, b]).is_ok()
    }

    /// The checked-out branch's remote, else `origin`, else the only remote.
    fn remote(&self) -> Option<String> {
        let configured = self
            .run(&["symbolic-ref", "--quiet", "--short", "HEAD"])
            .ok()
            .and_then(|b| {
                self.run(&["config", "--get", &format!("branch.{}.remote", b.trim())])
                    .ok()
            })
            .map(|r| r.trim().to_owned())
            .filter(|r| !r.is_empty() && r != ".");
        let remotes = self.run(&["remote"]).ok()?;
        let remotes: Vec<&str> = remotes.lines().map(str::trim).collect();
        configured
            .filter(|r| remotes.contains(&r.as_str()))
            .or_else(|| remotes.contains(&"origin").then(|| "origin".to_owned()))
            .or_else(|| match remotes.as_slice() {
                [only] if !only.is_empty() => Some((*only).to_owned()),
                _ => None,
            })
    }
}
