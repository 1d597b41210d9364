//! The peer cache's decisions (docs/contract.md §8), on plain data: which host of a site
//! fetches a package file from upstream and who waits for whom (rendezvous hashing over the
//! live hosts), what a peer's published fetch status says, and which peers are avoided for a
//! while and until when (the clock is passed in). No I/O: `download` asks the peers and
//! upstream as these functions decide, `peer_serve` publishes this host's status.
//!
//! **No herd on upstream.** Every host of a site ranks the hosts (itself and the peers it can
//! reach) for each file by the same hash of (host name, file name), so they agree without
//! talking. A file is taken from a peer that has it; else one that is fetching it is waited
//! for (bounded); else one ranked before this host that said it needs the file is waited for,
//! since by the same rule that peer fetches it from upstream; only when none of these is true
//! does this host fetch the file from upstream itself. Peers this host cannot know about yet
//! (they started a moment later) learn of its fetch from its status and wait for it.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The path of a peer's status (`GET`, JSON [`PeerStatus`]); not a package file name, so it
/// never names a file of the cache.
pub const STATUS_PATH: &str = "/_pacfleet/peer";

/// The most files a status lists per state; a longer list is cut (the rest are decided as if
/// the peer had not said).
pub const STATUS_MAX_FILES: usize = 4096;

/// What a host says of itself on [`STATUS_PATH`]: its name (the rendezvous identity) and the
/// files of its current fetch, by state. Written by the pass (`download`), served by the agent.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerStatus {
    /// The host's name (agent.yaml `hostname`).
    pub host: String,
    /// Files it needs and has not started on.
    #[serde(default)]
    pub pending: BTreeSet<String>,
    /// Files it is downloading now.
    #[serde(default)]
    pub fetching: BTreeSet<String>,
    /// Files of this fetch that are complete and verified in its cache.
    #[serde(default)]
    pub done: BTreeSet<String>,
    /// Until when the lists hold: a pass that died leaves them, and the server stops
    /// publishing them at this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

impl PeerStatus {
    /// The status with the lists cut to [`STATUS_MAX_FILES`] and emptied when expired at `now`.
    pub fn bounded(mut self, now: DateTime<Utc>) -> PeerStatus {
        if self.expires_at.is_some_and(|e| e <= now) {
            self.pending.clear();
            self.fetching.clear();
            self.done.clear();
        }
        for set in [&mut self.pending, &mut self.fetching, &mut self.done] {
            while set.len() > STATUS_MAX_FILES {
                set.pop_last();
            }
        }
        self
    }
}

/// The rendezvous score of `host` for `file`: the first 8 bytes of sha256(host, NUL, file).
pub fn score(host: &str, file: &str) -> u64 {
    let mut h = Sha256::new();
    h.update(host.as_bytes());
    h.update([0u8]);
    h.update(file.as_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    u64::from_be_bytes(b)
}

/// One way to get a file, in the order to try them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Try {
    /// Ask peer `index` (of the slice given to [`plan_file`]); `wait`: it has not got the file
    /// yet but will (it is fetching it, or ranked before this host and needs it), so wait for
    /// it, bounded, rather than move on at its first "not found".
    Peer {
        /// The peer's index.
        index: usize,
        /// Whether to wait for it.
        wait: bool,
    },
    /// The upstream mirrors (or the archive).
    Upstream,
}

/// Where to get `file`, for host `me`, given what the live peers said (`peers[i]`; the name
/// of each is `peers[i].host`). Always ends with [`Try::Upstream`].
pub fn plan_file(file: &str, me: &str, peers: &[PeerStatus]) -> Vec<Try> {
    let mine = score(me, file);
    // Highest score first; the name breaks a tie, so every host orders alike.
    let mut ranked: Vec<(u64, &str, usize)> = peers
        .iter()
        .enumerate()
        .map(|(i, p)| (score(&p.host, file), p.host.as_str(), i))
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    let before_me = |s: u64, host: &str| s > mine || (s == mine && host < me);
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    let mut push = |out: &mut Vec<Try>, index: usize, wait: bool| {
        if seen.insert(index) {
            out.push(Try::Peer { index, wait });
        }
    };
    // 1. Peers that have it from this fetch, 2. peers fetching it, 3. peers before this host
    // that need it: they will fetch it.
    for &(_, _, i) in &ranked {
        if peers[i].done.contains(file) {
            push(&mut out, i, false);
        }
    }
    for &(_, _, i) in &ranked {
        if peers[i].fetching.contains(file) {
            push(&mut out, i, true);
        }
    }
    for &(s, host, i) in &ranked {
        if peers[i].pending.contains(file) && before_me(s, host) {
            push(&mut out, i, true);
        }
    }
    // 4. Any other peer may have it from an earlier change.
    for &(_, _, i) in &ranked {
        push(&mut out, i, false);
    }
    out.push(Try::Upstream);
    out
}

/// Why a peer is avoided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AvoidReason {
    /// It served a file whose bytes did not match the checksum.
    BadFile,
    /// It was too slow, stalled, or failed mid-file.
    Slow,
}

impl AvoidReason {
    /// How long a peer is avoided for this.
    pub fn duration(self) -> chrono::Duration {
        match self {
            AvoidReason::BadFile => chrono::Duration::hours(6),
            AvoidReason::Slow => chrono::Duration::minutes(10),
        }
    }
}

impl std::fmt::Display for AvoidReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AvoidReason::BadFile => "served a file that failed its checksum",
            AvoidReason::Slow => "was too slow or stalled",
        })
    }
}

/// One avoided peer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Avoided {
    /// Until when.
    pub until: DateTime<Utc>,
    /// Why.
    pub reason: AvoidReason,
    /// What happened (the file, the error).
    pub detail: String,
}

/// The peers avoided for a while, by base URL (state `peers.json`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AvoidList {
    /// Base URL → why and until when.
    #[serde(default)]
    pub peers: BTreeMap<String, Avoided>,
}

/// The most peers the list keeps (a peer list from mDNS is bounded too).
const AVOID_MAX: usize = 256;

impl AvoidList {
    /// Whether `url` is avoided at `now`.
    pub fn avoids(&self, url: &str, now: DateTime<Utc>) -> Option<&Avoided> {
        self.peers.get(url).filter(|a| a.until > now)
    }

    /// Avoids `url` from `now` for `reason`'s duration; the entries that ran out are dropped.
    pub fn avoid(&mut self, url: &str, now: DateTime<Utc>, reason: AvoidReason, detail: String) {
        self.expire(now);
        let until = now + reason.duration();
        // A bad file outweighs slowness: the longer avoidance stands.
        match self.peers.get(url) {
            Some(a) if a.until >= until => {}
            _ => {
                self.peers.insert(
                    url.to_owned(),
                    Avoided {
                        until,
                        reason,
                        detail,
                    },
                );
            }
        }
        while self.peers.len() > AVOID_MAX {
            let soonest = self
                .peers
                .iter()
                .min_by_key(|(_, a)| a.until)
                .map(|(u, _)| u.clone());
            match soonest {
                Some(u) => self.peers.remove(&u),
                None => break,
            };
        }
    }

    /// Drops the entries that ran out at `now`.
    pub fn expire(&mut self, now: DateTime<Utc>) {
        self.peers.retain(|_, a| a.until > now);
    }
}

/// The per-source byte counts of one pass, as reports, history and metrics show them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Downloads {
    /// Bytes of package files from peers.
    pub peer_bytes: u64,
    /// Bytes of package files from upstream (pacfleet's downloads and libalpm's).
    pub upstream_bytes: u64,
    /// Package files from peers.
    pub peer_files: u32,
    /// Package files from upstream.
    pub upstream_files: u32,
    /// Files peers served that failed their checksum (discarded), by peer.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub bad_from: BTreeMap<String, u32>,
    /// The live peers asked.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub peers: Vec<String>,
    /// Downloaded ahead of the window for a pending change (`prefetch: true`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub prefetch: bool,
    /// Package files of the change still to download (none: the transaction downloads
    /// nothing).
    #[serde(default)]
    pub left: u32,
}

impl Downloads {
    /// Whether nothing was downloaded.
    pub fn is_empty(&self) -> bool {
        self.peer_files == 0 && self.upstream_files == 0 && self.bad_from.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(host: &str) -> PeerStatus {
        PeerStatus {
            host: host.into(),
            ..PeerStatus::default()
        }
    }

    fn files(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| format!("pkg{i}-1.0-1-x86_64.pkg.tar.zst"))
            .collect()
    }

    /// Every host's first choice for a file when all need it and none has started: the one
    /// host that ranks first waits for nobody (it asks, then fetches upstream), everyone else
    /// waits for a peer.
    fn first_hop(file: &str, me: &str, hosts: &[&str]) -> Try {
        let peers: Vec<PeerStatus> = hosts
            .iter()
            .filter(|h| **h != me)
            .map(|h| PeerStatus {
                pending: [file.to_owned()].into(),
                ..status(h)
            })
            .collect();
        plan_file(file, me, &peers)[0]
    }

    #[test]
    fn exactly_one_host_fetches_each_file_from_upstream_when_all_need_it() {
        let hosts = ["b01", "b02", "b03", "b04", "b05", "b06", "b07", "b08"];
        let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
        for f in files(400) {
            let upstream: Vec<&str> = hosts
                .iter()
                .copied()
                .filter(|me| !matches!(first_hop(&f, me, &hosts), Try::Peer { wait: true, .. }))
                .collect();
            assert_eq!(upstream.len(), 1, "{f}: {upstream:?}");
            *per_host.entry(upstream[0]).or_default() += 1;
            // Everyone else waits for that one host.
            for me in hosts.iter().filter(|h| **h != upstream[0]) {
                let peers: Vec<PeerStatus> = hosts
                    .iter()
                    .filter(|h| *h != me)
                    .map(|h| PeerStatus {
                        pending: [f.clone()].into(),
                        ..status(h)
                    })
                    .collect();
                match plan_file(&f, me, &peers)[0] {
                    Try::Peer { index, wait: true } => assert_eq!(peers[index].host, upstream[0]),
                    other => panic!("{me} {f}: {other:?}"),
                }
            }
        }
        // Spread over the hosts: each fetches about an eighth.
        for (h, n) in &per_host {
            assert!((25..=80).contains(n), "{h}: {n} of 400");
        }
        assert_eq!(per_host.len(), hosts.len());
    }

    #[test]
    fn a_peer_that_has_or_fetches_the_file_comes_before_the_rendezvous_order() {
        let f = "app-1.0-1-any.pkg.tar.zst";
        let mut a = status("a");
        a.fetching.insert(f.into());
        let mut b = status("b");
        b.done.insert(f.into());
        let c = status("c");
        let plan = plan_file(f, "me", &[a, b, c]);
        assert_eq!(
            plan,
            vec![
                Try::Peer {
                    index: 1,
                    wait: false
                },
                Try::Peer {
                    index: 0,
                    wait: true
                },
                plan[2],
                Try::Upstream
            ]
        );
        assert_eq!(
            plan[2],
            Try::Peer {
                index: 2,
                wait: false
            }
        );
    }

    #[test]
    fn no_peers_means_upstream_and_a_peer_after_me_is_only_asked() {
        assert_eq!(plan_file("x", "me", &[]), vec![Try::Upstream]);
        // Find a file where the peer ranks after me: it needs the file, but I fetch it.
        let f = files(50)
            .into_iter()
            .find(|f| score("peer", f) < score("me", f))
            .unwrap();
        let mut p = status("peer");
        p.pending.insert(f.clone());
        assert_eq!(
            plan_file(&f, "me", &[p]),
            vec![
                Try::Peer {
                    index: 0,
                    wait: false
                },
                Try::Upstream
            ]
        );
    }

    #[test]
    fn an_expired_status_says_nothing_and_lists_are_bounded() {
        let now = Utc::now();
        let mut s = status("a");
        s.fetching.insert("x".into());
        s.expires_at = Some(now - chrono::Duration::seconds(1));
        assert!(s.clone().bounded(now).fetching.is_empty());
        s.expires_at = Some(now + chrono::Duration::seconds(60));
        assert_eq!(s.clone().bounded(now).fetching.len(), 1);
        s.pending = files(STATUS_MAX_FILES + 10).into_iter().collect();
        assert_eq!(s.bounded(now).pending.len(), STATUS_MAX_FILES);
    }

    #[test]
    fn avoidance_runs_out_and_a_bad_file_outweighs_slowness() {
        let now = Utc::now();
        let mut l = AvoidList::default();
        l.avoid("http://p", now, AvoidReason::BadFile, "x".into());
        l.avoid("http://p", now, AvoidReason::Slow, "y".into());
        let a = l.avoids("http://p", now).unwrap();
        assert_eq!(a.reason, AvoidReason::BadFile);
        assert!(
            l.avoids("http://p", now + chrono::Duration::hours(7))
                .is_none()
        );
        l.avoid("http://q", now, AvoidReason::Slow, "z".into());
        assert!(
            l.avoids("http://q", now + chrono::Duration::minutes(9))
                .is_some()
        );
        assert!(
            l.avoids("http://q", now + chrono::Duration::minutes(11))
                .is_none()
        );
        l.expire(now + chrono::Duration::hours(7));
        assert!(l.peers.is_empty());
        for i in 0..(AVOID_MAX + 5) {
            l.avoid(
                &format!("http://{i}"),
                now,
                AvoidReason::Slow,
                String::new(),
            );
        }
        assert_eq!(l.peers.len(), AVOID_MAX);
    }
}
