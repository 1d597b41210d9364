//! Reading a whole fleet out of git: at a revision, at the merge base of two, or from a work
//! tree, checked as `validate` checks it. `fleetctl diff` reads its two sides here (a fleet in
//! a subdirectory of the repository, a bare repository); set-latest reads the fleet at the
//! commit a host applied ([`fleet_at`], [`fleet_at_either`]).
//!
//! Blobs come through `source` (`read_tree_with_links`, `rev_parse`); the repository
//! discovery and the merge base through gix. A side that does not validate is returned as its
//! [`Diagnostics`], for the caller to report; only reading fails with [`FleetReadError`].

use std::path::{Path, PathBuf};

use crate::manifest::{
    Diagnostics, Fleet, FleetFiles, LoadError, is_manifest_dir, is_manifest_path,
};
use crate::reconcile::short;
use crate::source::{self, ReadError};

/// Reading a fleet out of git failed.
#[derive(Debug, thiserror::Error)]
pub enum FleetReadError {
    /// The directory is in no git repository.
    #[error(
        "{} is not in a git repository ({detail}); `fleetctl diff` compares revisions of a fleet repository: run it in a clone, or pass --repo",
        dir.display()
    )]
    NotARepository {
        /// The directory given.
        dir: PathBuf,
        /// What gix said.
        detail: String,
    },
    /// A directory could not be resolved.
    #[error("reading {}", path.display())]
    Canonicalize {
        /// The directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A revision did not resolve.
    #[error(
        "cannot read revision `{rev}`; check it with `git rev-parse {rev}` (a remote branch needs `git fetch` first)"
    )]
    Revision {
        /// The revision as given.
        rev: String,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// The work tree side of a bare repository.
    #[error(
        "{} is a bare repository: there is no work tree to compare with; give a range such as `main~1..main`",
        root.display()
    )]
    Bare {
        /// The repository.
        root: PathBuf,
    },
    /// The work tree's files could not be read.
    #[error(transparent)]
    WorkTree(#[from] LoadError),
    /// A revision's manifests could not be read.
    #[error("reading the manifests of {label}")]
    Manifests {
        /// The side's label.
        label: String,
        /// Why.
        #[source]
        source: ReadError,
    },
    /// Reading the manifests of a side panicked.
    #[error("reading the old side panicked (a bug)")]
    Panicked,
    /// The repository could not be opened for the merge base.
    #[error("opening {}", root.display())]
    Open {
        /// The repository.
        root: PathBuf,
        /// Why.
        #[source]
        source: Box<gix::Error>,
    },
    /// A commit id is not an id.
    #[error(transparent)]
    Id(#[from] gix::Error),
    /// The merge base could not be computed.
    #[error("finding the merge base of {a} and {b}")]
    MergeBase {
        /// The first revision, as given.
        a: String,
        /// The second revision, as given.
        b: String,
        /// Why.
        #[source]
        source: Box<gix::Error>,
    },
    /// Two revisions without a common ancestor.
    #[error("{a} and {b} have no common ancestor; compare them with `{a}..{b}`")]
    NoMergeBase {
        /// The first revision, as given.
        a: String,
        /// The second revision, as given.
        b: String,
    },
    /// A commit's blobs could not be read.
    #[error(transparent)]
    Read(#[from] ReadError),
    /// The fleet at a commit does not validate.
    #[error("the fleet at commit {} of {} does not validate:\n{diagnostics}", short(commit), repo.display())]
    Invalid {
        /// The commit.
        commit: String,
        /// The repository.
        repo: PathBuf,
        /// The problems.
        diagnostics: Diagnostics,
    },
    /// No repository was given to read from.
    #[error("no repository to read from")]
    NoRepository,
}

/// One side of a comparison, as given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rev {
    /// A revision git understands (`HEAD`, `origin/main`, `v1^`, an id).
    Commit(String),
    /// The merge base of two revisions (`A...B`).
    MergeBase(String, String),
    /// The work tree, as `fleetctl validate` reads it.
    WorkTree,
}

/// The git repository holding a fleet, and where in it the fleet is.
#[derive(Debug, Clone)]
pub struct FleetRepo {
    /// The fleet directory as given (the work tree side reads it).
    dir: PathBuf,
    /// What `source` opens: the work tree root, or the git dir of a bare repository.
    root: PathBuf,
    /// The fleet's directory relative to the work tree root, `/`-separated, `""` at the root.
    prefix: String,
    bare: bool,
}

/// One side, read and checked.
#[derive(Debug)]
pub struct Side {
    /// The revision as given (`HEAD`, `merge-base A B`, `work tree`).
    pub label: String,
    /// The commit read; `None` for the work tree.
    pub commit: Option<String>,
    /// The fleet, or why it does not validate.
    pub fleet: Result<Fleet, Diagnostics>,
}

impl FleetRepo {
    /// The repository that holds the fleet directory `dir` (a work tree, a directory inside
    /// one, or a bare repository).
    pub fn open(dir: &Path) -> Result<FleetRepo, FleetReadError> {
        let (git_dir, workdir) =
            source::discover(dir).map_err(|detail| FleetReadError::NotARepository {
                dir: dir.to_owned(),
                detail,
            })?;
        let Some(workdir) = workdir else {
            return Ok(FleetRepo {
                dir: dir.to_owned(),
                root: git_dir,
                prefix: String::new(),
                bare: true,
            });
        };
        let canon = |p: &Path| {
            p.canonicalize()
                .map_err(|source| FleetReadError::Canonicalize {
                    path: p.to_owned(),
                    source,
                })
        };
        let (here, top) = (canon(dir)?, canon(&workdir)?);
        let prefix = here
            .strip_prefix(&top)
            .map(|rel| {
                rel.components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
                    .join("/")
            })
            .unwrap_or_default();
        Ok(FleetRepo {
            dir: dir.to_owned(),
            root: workdir,
            prefix,
            bare: false,
        })
    }

    /// Reads and checks both sides, side by side (they are independent).
    pub fn load_both(&self, old: &Rev, new: &Rev) -> Result<(Side, Side), FleetReadError> {
        let (old, new) = std::thread::scope(|scope| {
            let old = scope.spawn(|| self.load(old));
            let new = self.load(new);
            (old.join(), new)
        });
        let old = old.map_err(|_| FleetReadError::Panicked)??;
        Ok((old, new?))
    }

    fn commit(&self, rev: &str) -> Result<String, FleetReadError> {
        source::rev_parse(&self.root, rev).map_err(|source| FleetReadError::Revision {
            rev: rev.to_owned(),
            source,
        })
    }

    /// Reads and checks one side.
    pub fn load(&self, rev: &Rev) -> Result<Side, FleetReadError> {
        let (label, commit) = match rev {
            Rev::WorkTree => {
                if self.bare {
                    return Err(FleetReadError::Bare {
                        root: self.root.clone(),
                    });
                }
                let files = FleetFiles::from_dir(&self.dir)?;
                return Ok(Side {
                    label: "work tree".into(),
                    commit: None,
                    fleet: Fleet::from_files(&files),
                });
            }
            Rev::Commit(r) => (r.clone(), self.commit(r)?),
            Rev::MergeBase(a, b) => {
                let (ia, ib) = (self.commit(a)?, self.commit(b)?);
                (
                    format!("merge-base {a} {b}"),
                    self.merge_base(&ia, &ib, a, b)?,
                )
            }
        };
        let prefix = if self.prefix.is_empty() {
            String::new()
        } else {
            format!("{}/", self.prefix)
        };
        let (blobs, links) = source::read_tree_with_links(
            &self.root,
            &commit,
            |p| {
                p.strip_prefix(prefix.as_str())
                    .is_some_and(is_manifest_path)
            },
            |p| {
                p.strip_prefix(prefix.as_str())
                    .is_some_and(|p| is_manifest_path(p) || is_manifest_dir(p))
            },
        )
        .map_err(|source| FleetReadError::Manifests {
            label: label.clone(),
            source,
        })?;
        let strip = |(p, b): (String, Vec<u8>)| (p[prefix.len()..].to_owned(), b);
        let files =
            FleetFiles::from_tree(blobs.into_iter().map(strip), links.into_iter().map(strip));
        Ok(Side {
            label,
            commit: Some(commit),
            fleet: Fleet::from_files(&files),
        })
    }

    fn merge_base(&self, a: &str, b: &str, an: &str, bn: &str) -> Result<String, FleetReadError> {
        let base = source::merge_base(&self.root, a, b).map_err(|e| match e {
            source::MergeBaseError::Open(root, source) => FleetReadError::Open { root, source },
            source::MergeBaseError::Id(e) => FleetReadError::Id(e),
            source::MergeBaseError::Compute(source) => FleetReadError::MergeBase {
                a: an.to_owned(),
                b: bn.to_owned(),
                source,
            },
        })?;
        base.ok_or_else(|| FleetReadError::NoMergeBase {
            a: an.to_owned(),
            b: bn.to_owned(),
        })
    }
}

/// The checked fleet at `commit`, read from the first of `repos` that has the commit.
pub fn fleet_at_either(repos: &[PathBuf], commit: &str) -> Result<Fleet, FleetReadError> {
    let mut last = None;
    for repo in repos {
        match fleet_at(repo, commit) {
            Ok(f) => return Ok(f),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or(FleetReadError::NoRepository))
}

/// The checked fleet at `commit` of the repository `repo` (bare or work tree).
pub fn fleet_at(repo: &Path, commit: &str) -> Result<Fleet, FleetReadError> {
    let (blobs, links) = source::read_tree_with_links(repo, commit, is_manifest_path, |p| {
        is_manifest_path(p) || is_manifest_dir(p)
    })?;
    Fleet::from_files(&FleetFiles::from_tree(blobs, links)).map_err(|diagnostics| {
        FleetReadError::Invalid {
            commit: commit.to_owned(),
            repo: repo.to_owned(),
            diagnostics,
        }
    })
}
