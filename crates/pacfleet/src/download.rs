//! Package files pacfleet downloads itself, before libalpm's transaction (docs/contract.md §8):
//! from the peers first, as `peers::plan_file` orders them, then upstream; each file checked
//! against the sha256 its sync database (or the generation) gives before it enters the cache,
//! so a peer's bytes are never trusted. libalpm then commits from the cache and verifies the
//! signatures as always; what this could not download, libalpm downloads itself.
//!
//! This module owns the HTTP side of a peer (its status, [`probe`], the file's `GET`), the
//! bounds (a stalled or slow peer is dropped within [`Limits`]; a waited-for peer at most
//! [`Limits::wait`] per file), this host's published status file (what it needs, fetches and
//! has), and the counts of bytes per source. What to try in which order is `peers`'.

use std::collections::{BTreeSet, VecDeque};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use sha2::{Digest, Sha256};

use crate::peers::{AvoidReason, Downloads, PeerStatus, STATUS_PATH, Try};

/// The status file a pass writes into the state dir and the agent's peer server publishes.
pub const STATUS_FILE: &str = "peer-status.json";
/// The most bytes of a peer's status read.
const STATUS_MAX_BYTES: u64 = 1 << 20;
/// The most bytes read of a file whose size is not known beforehand.
pub const UNKNOWN_SIZE_MAX: u64 = 4 << 30;
/// The most bytes of a package signature read (repo-add's bound).
const SIG_MAX_BYTES: u64 = 16 << 10;

/// One package file to download.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    /// Its file name (one path component, as the sync database names it).
    pub file: String,
    /// Its size in bytes, from the database (`None`: an archive file, known by its sha256
    /// alone; then at most [`UNKNOWN_SIZE_MAX`] bytes are read).
    pub size: Option<u64>,
    /// Its sha256 (hex), from the database or the generation.
    pub sha256: String,
    /// Upstream URLs of the file, in order (mirrors, the archive; file:// too).
    pub upstream: Vec<String>,
    /// Its detached signature `<file>.sig`, which libalpm wants in the cache beside the file
    /// whenever package signatures are checked.
    pub sig: Sig,
}

/// Where a file's `.sig` comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sig {
    /// Signatures are not checked: none is written.
    NotNeeded,
    /// The database carries it (`%PGPSIG%`): written from there, nothing downloaded.
    Embedded(Vec<u8>),
    /// Downloaded from where the file came from.
    Download,
    /// Downloaded from where the file came from if it is there (signatures are optional).
    IfThere,
}

/// How long things may take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connecting to a peer, and its status's answer.
    pub connect: Duration,
    /// The longest a read of a response may wait for bytes: a peer that stalls mid-file is
    /// dropped after this.
    pub stall: Duration,
    /// The slowest a peer may send, after [`Limits::grace`]: bytes per second.
    pub min_rate: u64,
    /// How long a peer may be slower than `min_rate` at the start of a file.
    pub grace: Duration,
    /// The longest this host waits, per file, for a peer that is fetching it (or will).
    pub wait: Duration,
    /// How often a waited-for peer's status is asked again.
    pub poll: Duration,
    /// Downloads at once.
    pub workers: usize,
    /// How long a pass waits between [`announce`] and [`probe`], so that the hosts of a site
    /// that start together (a window opens, a change lands) all see each other's pending files
    /// before they decide who fetches what from upstream.
    pub settle: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            connect: Duration::from_secs(2),
            stall: Duration::from_secs(10),
            min_rate: 64 << 10,
            grace: Duration::from_secs(10),
            wait: Duration::from_secs(60),
            poll: Duration::from_millis(250),
            workers: 4,
            settle: Duration::from_millis(500),
        }
    }
}

/// A live peer: its base URL and what it said last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Base URL, no trailing `/`.
    pub url: String,
    /// Its status as last asked.
    pub status: PeerStatus,
}

/// Where a file came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A peer (its base URL).
    Peer(String),
    /// Upstream (the URL it was downloaded from).
    Upstream(String),
}

/// A file a peer served that was not what the database says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadFile {
    /// The peer's base URL.
    pub peer: String,
    /// The file.
    pub file: String,
    /// What was wrong.
    pub detail: String,
}

/// What [`fetch`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Files now in the cache, where from, and their size.
    pub fetched: Vec<(String, Source, u64)>,
    /// Files no source gave (libalpm downloads them in the transaction), and why.
    pub failed: Vec<(String, String)>,
    /// Files peers served wrong (discarded).
    pub bad: Vec<BadFile>,
    /// Peers to avoid for a while: URL, why, what happened.
    pub avoid: Vec<(String, AvoidReason, String)>,
}

/// The HTTP clients of a fetch: peers (no proxy, no redirect: a peer never sends this host
/// elsewhere) and upstream (the environment's proxy, redirects as a mirror list may use).
#[derive(Clone)]
pub struct Clients {
    peer: reqwest::blocking::Client,
    upstream: reqwest::blocking::Client,
}

impl Clients {
    /// Clients with `limits`' timeouts; `None` when the TLS stack cannot start (then no peer
    /// is asked, and libalpm downloads everything, as without peers).
    pub fn new(limits: &Limits) -> Option<Clients> {
        let ua = concat!("pacfleet/", env!("CARGO_PKG_VERSION"));
        let peer = reqwest::blocking::Client::builder()
            .user_agent(ua)
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(limits.connect)
            .timeout(limits.stall)
            .build();
        let upstream = reqwest::blocking::Client::builder()
            .user_agent(ua)
            .connect_timeout(Duration::from_secs(10))
            .timeout(limits.stall.max(Duration::from_secs(30)))
            .build();
        match (peer, upstream) {
            (Ok(peer), Ok(upstream)) => Some(Clients { peer, upstream }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!("cannot start an HTTP client for the peers: {e}");
                None
            }
        }
    }
}

/// Asks each of `urls` for its status, at once, each bounded by the client's timeouts; the
/// ones that answer with a host name other than `me` are live (a second URL of a host already
/// found is dropped). Never fails: a peer that does not answer is left out, with a debug log.
pub fn probe(clients: &Clients, urls: &[String], me: &str) -> Vec<Peer> {
    let answers: Vec<Option<Peer>> = std::thread::scope(|s| {
        let handles: Vec<_> = urls
            .iter()
            .map(|u| s.spawn(move || status_of(&clients.peer, u).map(|st| (u, st))))
            .collect();
        handles
            .into_iter()
            .map(|h| match h.join() {
                Ok(Ok((u, status))) => Some(Peer {
                    url: u.clone(),
                    status,
                }),
                Ok(Err(e)) => {
                    tracing::debug!("{e}");
                    None
                }
                Err(_) => None,
            })
            .collect()
    });
    let mut hosts = BTreeSet::new();
    answers
        .into_iter()
        .flatten()
        .filter(|p| p.status.host != me && hosts.insert(p.status.host.clone()))
        .collect()
}

/// A host name as a status may give it: 1–64 of `[A-Za-z0-9._-]`.
fn valid_host(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 64
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// `GET <url>/_pacfleet/peer`, bounded.
fn status_of(client: &reqwest::blocking::Client, url: &str) -> Result<PeerStatus, String> {
    let what = format!("peer {url}");
    let resp = client
        .get(format!("{url}{STATUS_PATH}"))
        .send()
        .map_err(|e| format!("{what} did not answer: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("{what} answered {} to its status", resp.status()));
    }
    let mut body = Vec::new();
    resp.take(STATUS_MAX_BYTES)
        .read_to_end(&mut body)
        .map_err(|e| format!("{what}: reading its status: {e}"))?;
    let status: PeerStatus =
        serde_json::from_slice(&body).map_err(|e| format!("{what}: its status: {e}"))?;
    if !valid_host(&status.host) {
        return Err(format!(
            "{what}: its status names no valid host ({:?})",
            crate::escape::terminal_safe(&status.host.chars().take(80).collect::<String>())
        ));
    }
    Ok(status.bounded(Utc::now()))
}

/// Publishes that this host needs `wanted` (its status file lists them pending), before it
/// probes the peers: a peer that probes this host a moment later then knows, and waits for it
/// on the files rendezvous gives this host, instead of fetching them from upstream too. The
/// fetch that follows writes the file again as it moves on.
pub fn announce(status_file: &Path, me: &str, wanted: &[Wanted]) {
    Published {
        status: PeerStatus {
            host: me.to_owned(),
            pending: wanted.iter().map(|w| w.file.clone()).collect(),
            ..PeerStatus::default()
        },
        path: Some(status_file.to_path_buf()),
    }
    .write();
}

/// This host's status, as the fetch moves on, written where the peer server reads it.
struct Published {
    status: PeerStatus,
    path: Option<PathBuf>,
}

impl Published {
    /// How long a written status holds without being written again.
    const HOLD: chrono::Duration = chrono::Duration::minutes(2);

    fn write(&mut self) {
        let Some(path) = &self.path else { return };
        self.status.expires_at = Some(Utc::now() + Self::HOLD);
        let bytes = match serde_json::to_vec(&self.status) {
            Ok(b) => b,
            Err(e) => return tracing::debug!("peer status: {e}"),
        };
        // Replaced whole (a reader never sees half of it), not synced: it lives for minutes,
        // and is written at every step of every file.
        let dir = path.parent().unwrap_or(Path::new("."));
        let written = tempfile::NamedTempFile::new_in(dir).and_then(|mut t| {
            t.write_all(&bytes)?;
            t.persist(path).map(|_| ()).map_err(|e| e.error)
        });
        if let Err(e) = written {
            tracing::debug!("cannot write the peer status {}: {e}", path.display());
        }
    }
}

/// What the workers share.
struct Shared {
    queue: VecDeque<Wanted>,
    me: Published,
    peers: Vec<Peer>,
    /// Peers dropped for the rest of this fetch (dead, slow, or served a bad file).
    dropped: BTreeSet<String>,
    refreshed: Instant,
    outcome: Outcome,
}

/// The settings of one fetch.
pub struct Fetch<'a> {
    /// This host's name: its rendezvous identity.
    pub me: &'a str,
    /// The cache dir files are written to.
    pub cache_dir: &'a Path,
    /// This host's status file (`None`: nothing published).
    pub status_file: Option<PathBuf>,
    /// The bounds.
    pub limits: Limits,
    /// The clients.
    pub clients: &'a Clients,
}

/// Downloads `wanted` into the cache dir: from the live `peers` first, then upstream, each
/// file checked against its sha256 before it is renamed into place. Never fails: what could
/// not be downloaded is in [`Outcome::failed`].
pub fn fetch(f: &Fetch<'_>, mut wanted: Vec<Wanted>, peers: Vec<Peer>) -> Outcome {
    // The files this host fetches from upstream first (it waits for nobody for them): the
    // peers that wait for this host get them soonest.
    let statuses: Vec<PeerStatus> = peers.iter().map(|p| p.status.clone()).collect();
    wanted.sort_by_cached_key(|w| {
        crate::peers::plan_file(&w.file, f.me, &statuses)
            .iter()
            .any(|t| matches!(t, Try::Peer { wait: true, .. }))
    });
    let mut me = Published {
        status: PeerStatus {
            host: f.me.to_owned(),
            pending: wanted.iter().map(|w| w.file.clone()).collect(),
            ..PeerStatus::default()
        },
        path: f.status_file.clone(),
    };
    me.write();
    let shared = Arc::new(Mutex::new(Shared {
        queue: wanted.into(),
        me,
        peers,
        dropped: BTreeSet::new(),
        refreshed: Instant::now(),
        outcome: Outcome::default(),
    }));
    let workers = f.limits.workers.max(1);
    std::thread::scope(|s| {
        for _ in 0..workers {
            let shared = Arc::clone(&shared);
            s.spawn(move || worker(f, &shared));
        }
    });
    let mut shared = lock(&shared);
    // What this host has stays published a while for the peers that are still fetching.
    shared.me.status.pending.clear();
    shared.me.status.fetching.clear();
    shared.me.write();
    std::mem::take(&mut shared.outcome)
}

fn lock(m: &Mutex<Shared>) -> std::sync::MutexGuard<'_, Shared> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn worker(f: &Fetch<'_>, shared: &Mutex<Shared>) {
    loop {
        let (w, peers) = {
            let mut s = lock(shared);
            let Some(w) = s.queue.pop_front() else { return };
            (w, s.peers.clone())
        };
        refresh_if_stale(f, shared, &peers);
        let (peers, dropped) = {
            let s = lock(shared);
            (s.peers.clone(), s.dropped.clone())
        };
        let live: Vec<Peer> = peers
            .into_iter()
            .filter(|p| !dropped.contains(&p.url))
            .collect();
        let statuses: Vec<PeerStatus> = live.iter().map(|p| p.status.clone()).collect();
        let plan = crate::peers::plan_file(&w.file, f.me, &statuses);
        // One wait a file, whoever it is spent on: peers that all claim the file cannot add
        // their waits up.
        let deadline = Instant::now() + f.limits.wait;
        let mut done = false;
        for step in plan {
            let got = match step {
                Try::Peer { index, wait } => from_peer(f, shared, &live[index], &w, wait, deadline),
                Try::Upstream => from_upstream(f, shared, &w),
            };
            if got {
                done = true;
                break;
            }
        }
        let mut s = lock(shared);
        s.me.status.pending.remove(&w.file);
        s.me.status.fetching.remove(&w.file);
        if done {
            s.me.status.done.insert(w.file.clone());
        }
        s.me.write();
    }
}

/// Asks every live peer for its status again when the last time is older than the poll
/// interval: peers that started after this fetch are known then.
fn refresh_if_stale(f: &Fetch<'_>, shared: &Mutex<Shared>, peers: &[Peer]) {
    {
        let mut s = lock(shared);
        if s.refreshed.elapsed() < f.limits.poll.max(Duration::from_millis(500)) {
            return;
        }
        s.refreshed = Instant::now();
    }
    let urls: Vec<String> = peers.iter().map(|p| p.url.clone()).collect();
    let fresh = probe(f.clients, &urls, f.me);
    let mut s = lock(shared);
    for p in fresh {
        if let Some(old) = s.peers.iter_mut().find(|o| o.url == p.url) {
            old.status = p.status;
        }
    }
}

fn set_fetching(shared: &Mutex<Shared>, file: &str) {
    let mut s = lock(shared);
    s.me.status.pending.remove(file);
    s.me.status.fetching.insert(file.to_owned());
    s.me.write();
}

fn drop_peer(shared: &Mutex<Shared>, peer: &str, reason: AvoidReason, detail: String) {
    tracing::warn!("peer {peer} {reason}: {detail}; avoided for a while");
    let mut s = lock(shared);
    s.dropped.insert(peer.to_owned());
    s.outcome.avoid.push((peer.to_owned(), reason, detail));
}

/// Asks `peer` for `w` (waiting for it until `deadline`, the file's, when `wait`); true when
/// the file is in the cache, checked.
fn from_peer(
    f: &Fetch<'_>,
    shared: &Mutex<Shared>,
    peer: &Peer,
    w: &Wanted,
    mut wait: bool,
    deadline: Instant,
) -> bool {
    if lock(shared).dropped.contains(&peer.url) {
        return false;
    }
    loop {
        let url = format!("{}/{}", peer.url, w.file);
        match get(&f.clients.peer, &url) {
            Ok(Some(resp)) => {
                set_fetching(shared, &w.file);
                return match receive(f, resp, w, &url, true) {
                    Ok(bytes) => match sig_from(f, &f.clients.peer, &peer.url, w) {
                        Ok(()) => {
                            record(shared, w, Source::Peer(peer.url.clone()), bytes);
                            true
                        }
                        Err(e) => {
                            discard(f.cache_dir, &w.file);
                            drop_peer(shared, &peer.url, AvoidReason::Slow, e);
                            false
                        }
                    },
                    Err(Received::Bad(detail)) => {
                        let mut s = lock(shared);
                        s.outcome.bad.push(BadFile {
                            peer: peer.url.clone(),
                            file: w.file.clone(),
                            detail: detail.clone(),
                        });
                        drop(s);
                        drop_peer(
                            shared,
                            &peer.url,
                            AvoidReason::BadFile,
                            format!("{}: {detail}", w.file),
                        );
                        false
                    }
                    Err(Received::Failed(detail)) => {
                        drop_peer(shared, &peer.url, AvoidReason::Slow, detail);
                        false
                    }
                };
            }
            Ok(None) if wait && Instant::now() < deadline => {
                std::thread::sleep(f.limits.poll);
                match status_of(&f.clients.peer, &peer.url) {
                    Ok(st)
                        if st.done.contains(&w.file)
                            || st.fetching.contains(&w.file)
                            || st.pending.contains(&w.file) => {}
                    // It finished without the file: ask it once more, then move on.
                    Ok(_) => wait = false,
                    Err(e) => {
                        drop_peer(shared, &peer.url, AvoidReason::Slow, e);
                        return false;
                    }
                }
            }
            Ok(None) => {
                if wait && Instant::now() >= deadline {
                    // It said it would have the file and did not: a peer that says so of
                    // every file would hold each of them for the whole wait.
                    drop_peer(
                        shared,
                        &peer.url,
                        AvoidReason::Slow,
                        format!(
                            "said it was fetching {} and did not have it after {}s",
                            w.file,
                            f.limits.wait.as_secs()
                        ),
                    );
                }
                return false;
            }
            Err(e) => {
                drop_peer(shared, &peer.url, AvoidReason::Slow, e);
                return false;
            }
        }
    }
}

fn record(shared: &Mutex<Shared>, w: &Wanted, source: Source, bytes: u64) {
    lock(shared)
        .outcome
        .fetched
        .push((w.file.clone(), source, bytes));
}

/// `GET url`: `Some` response on 200, `None` on 404, else an error.
fn get(
    client: &reqwest::blocking::Client,
    url: &str,
) -> Result<Option<reqwest::blocking::Response>, String> {
    let resp = client
        .get(url)
        .send()
        .map_err(|e| format!("{}: {e}", crate::escape::terminal_safe(url)))?;
    match resp.status() {
        reqwest::StatusCode::OK => Ok(Some(resp)),
        reqwest::StatusCode::NOT_FOUND => Ok(None),
        s => Err(format!(
            "{} answered {s}",
            crate::escape::terminal_safe(url)
        )),
    }
}

/// Why a download did not land.
enum Received {
    /// The bytes are not the file's (too many, too few, another sha256).
    Bad(String),
    /// The transfer failed (stall, too slow, I/O).
    Failed(String),
}

/// Streams `body` into `<file>.part` in the cache dir, hashing it, at most `w.size` bytes, no
/// slower than the limits allow (`rate_bound`: for a peer); renames it into place when size
/// and sha256 match.
fn receive(
    f: &Fetch<'_>,
    mut body: impl Read,
    w: &Wanted,
    url: &str,
    rate_bound: bool,
) -> Result<u64, Received> {
    let part = f.cache_dir.join(format!("{}.part", w.file));
    let fail = |e: String| {
        let _ = std::fs::remove_file(&part);
        e
    };
    let mut out = std::fs::File::create(&part)
        .map_err(|e| Received::Failed(fail(format!("cannot write {}: {e}", part.display()))))?;
    let mut hash = Sha256::new();
    let mut got: u64 = 0;
    let mut buf = vec![0u8; 64 << 10];
    let started = Instant::now();
    let reporter = crate::progress::reporter();
    loop {
        let n = match body.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                reporter.download_done(&w.file);
                return Err(Received::Failed(fail(format!(
                    "{} after {got} bytes: {e}",
                    crate::escape::terminal_safe(url)
                ))));
            }
        };
        got += n as u64;
        if got > w.size.unwrap_or(UNKNOWN_SIZE_MAX) {
            reporter.download_done(&w.file);
            return Err(Received::Bad(fail(match w.size {
                Some(size) => format!("more than the {size} bytes the database gives"),
                None => format!("more than {UNKNOWN_SIZE_MAX} bytes"),
            })));
        }
        hash.update(&buf[..n]);
        if let Err(e) = out.write_all(&buf[..n]) {
            reporter.download_done(&w.file);
            return Err(Received::Failed(fail(format!(
                "cannot write {}: {e}",
                part.display()
            ))));
        }
        reporter.download(&w.file, got, w.size.unwrap_or(0));
        let elapsed = started.elapsed();
        if rate_bound
            && elapsed > f.limits.grace
            && (got as f64) < f.limits.min_rate as f64 * elapsed.as_secs_f64()
        {
            reporter.download_done(&w.file);
            return Err(Received::Failed(fail(format!(
                "{}: {got} bytes in {}s, slower than {} bytes/s",
                crate::escape::terminal_safe(url),
                elapsed.as_secs(),
                f.limits.min_rate
            ))));
        }
    }
    reporter.download_done(&w.file);
    let sha = format!("{:x}", hash.finalize());
    if w.size.is_some_and(|size| got != size) || sha != w.sha256 {
        return Err(Received::Bad(fail(match w.size {
            Some(size) => format!(
                "{got} bytes with sha256 {sha}; the database says {size} bytes with sha256 {}",
                w.sha256
            ),
            None => format!(
                "{got} bytes with sha256 {sha}; the generation says sha256 {}",
                w.sha256
            ),
        })));
    }
    if let Err(e) = out.sync_all() {
        return Err(Received::Failed(fail(format!(
            "cannot write {}: {e}",
            part.display()
        ))));
    }
    drop(out);
    std::fs::rename(&part, f.cache_dir.join(&w.file))
        .map(|()| got)
        .map_err(|e| Received::Failed(fail(format!("cannot rename {}: {e}", part.display()))))
}

/// Removes a file and its signature from the cache again.
fn discard(cache: &Path, file: &str) {
    let _ = std::fs::remove_file(cache.join(file));
    let _ = std::fs::remove_file(cache.join(format!("{file}.sig")));
}

/// The detached signature of `w` from `base`, when needed: at most 16 KiB, written beside the
/// file (libalpm verifies the package against it).
fn sig_from(
    f: &Fetch<'_>,
    client: &reqwest::blocking::Client,
    base: &str,
    w: &Wanted,
) -> Result<(), String> {
    let url = format!("{base}/{}.sig", w.file);
    let bytes = match &w.sig {
        Sig::NotNeeded => return Ok(()),
        Sig::Embedded(b) => b.clone(),
        Sig::Download => fetch_sig(client, &url)?,
        Sig::IfThere => match fetch_sig(client, &url) {
            Ok(b) => b,
            Err(_) => return Ok(()),
        },
    };
    crate::state::write_atomic(&f.cache_dir.join(format!("{}.sig", w.file)), &bytes)
        .map_err(|e| e.to_string())
}

/// `url`'s bytes, at most 16 KiB (file:// read in place).
fn fetch_sig(client: &reqwest::blocking::Client, url: &str) -> Result<Vec<u8>, String> {
    Ok(if let Some(path) = url.strip_prefix("file://") {
        let mut b = Vec::new();
        std::fs::File::open(path)
            .and_then(|file| file.take(SIG_MAX_BYTES).read_to_end(&mut b))
            .map_err(|e| format!("{url}: {e}"))?;
        b
    } else {
        let resp = get(client, url)?.ok_or_else(|| format!("{url}: not found"))?;
        let mut b = Vec::new();
        resp.take(SIG_MAX_BYTES)
            .read_to_end(&mut b)
            .map_err(|e| format!("{url}: {e}"))?;
        b
    })
}

/// Downloads `w` from its upstream URLs in turn (file:// is read in place).
fn from_upstream(f: &Fetch<'_>, shared: &Mutex<Shared>, w: &Wanted) -> bool {
    set_fetching(shared, &w.file);
    let mut why = Vec::new();
    for url in &w.upstream {
        let base = url.rsplit_once('/').map_or(url.as_str(), |(b, _)| b);
        let received = if let Some(path) = url.strip_prefix("file://") {
            match std::fs::File::open(path) {
                Ok(file) => receive(f, file, w, url, false),
                Err(e) => Err(Received::Failed(format!("{url}: {e}"))),
            }
        } else {
            match get(&f.clients.upstream, url) {
                Ok(Some(resp)) => receive(f, resp, w, url, false),
                Ok(None) => Err(Received::Failed(format!("{url}: not found"))),
                Err(e) => Err(Received::Failed(e)),
            }
        };
        match received.map(|bytes| (bytes, sig_from(f, &f.clients.upstream, base, w))) {
            Ok((bytes, Ok(()))) => {
                record(shared, w, Source::Upstream(url.clone()), bytes);
                return true;
            }
            Ok((_, Err(e))) => {
                discard(f.cache_dir, &w.file);
                why.push(e);
            }
            Err(Received::Bad(e) | Received::Failed(e)) => why.push(e),
        }
    }
    lock(shared)
        .outcome
        .failed
        .push((w.file.clone(), why.join("; ")));
    false
}

impl Outcome {
    /// Appends `other`'s files, failures, bad files and avoided peers.
    pub fn merge(&mut self, other: Outcome) {
        self.fetched.extend(other.fetched);
        self.failed.extend(other.failed);
        self.bad.extend(other.bad);
        self.avoid.extend(other.avoid);
    }

    /// Adds this fetch's files to `d`'s counts.
    pub fn add_to(&self, d: &mut Downloads) {
        for (_, s, n) in &self.fetched {
            match s {
                Source::Peer(_) => {
                    d.peer_bytes += n;
                    d.peer_files += 1;
                }
                Source::Upstream(_) => {
                    d.upstream_bytes += n;
                    d.upstream_files += 1;
                }
            }
        }
        for b in &self.bad {
            *d.bad_from.entry(b.peer.clone()).or_default() += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_from_a_peer_are_bounded() {
        assert!(valid_host("build-07.lan"));
        assert!(!valid_host(""));
        assert!(!valid_host("a b"));
        assert!(!valid_host("\u{1b}[31m"));
        assert!(!valid_host(&"x".repeat(65)));
    }

    #[test]
    fn downloads_count_bytes_per_source() {
        let mut d = Downloads::default();
        Outcome {
            fetched: vec![
                ("a".into(), Source::Peer("http://p".into()), 10),
                ("b".into(), Source::Upstream("file:///r/b".into()), 5),
                ("c".into(), Source::Peer("http://q".into()), 1),
            ],
            bad: vec![BadFile {
                peer: "http://p".into(),
                file: "d".into(),
                detail: String::new(),
            }],
            ..Outcome::default()
        }
        .add_to(&mut d);
        assert_eq!((d.peer_bytes, d.peer_files), (11, 2));
        assert_eq!((d.upstream_bytes, d.upstream_files), (5, 1));
        assert_eq!(d.bad_from.get("http://p"), Some(&1));
    }
}
