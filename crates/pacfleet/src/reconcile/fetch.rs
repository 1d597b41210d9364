//! A pass's package downloads ahead of libalpm's transaction (docs/contract.md §8): which peers
//! it asks (agent.yaml `peers.static` and those `peers.discover: mdns` finds, less the ones
//! avoided for a while in `peers.json`), whether it downloads at all (peers answered, or
//! `prefetch:` for a pending change), archive pins through the same downloads, and what it
//! reports of it. The downloading itself is `download`'s, the order `peers`'.

use crate::config::AgentConfig;
use crate::download;
use crate::peers::{AvoidList, Downloads};
use crate::state::StateDir;
use crate::system::ArchiveFetch;
use crate::system::System;

/// Why the pass downloads ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// The transaction follows: only with live peers (without, libalpm downloads as always).
    Apply,
    /// The change is pending (`prefetch: true`): download now, peers first, for the window.
    Prefetch,
}

/// How long a pass listens for mDNS answers (`peers.discover: mdns`).
const DISCOVER_FOR: std::time::Duration = std::time::Duration::from_millis(1500);

/// The peers this pass may ask: `peers.static`, then those mDNS found (`peers.discover`);
/// discovery never fails a pass (nothing found is no peer).
pub(super) fn peer_urls(cfg: &AgentConfig) -> Vec<String> {
    let Some(p) = &cfg.peers else {
        return Vec::new();
    };
    let mut urls = p.static_peers.clone();
    if p.discover.is_some() {
        let found = crate::peer_discover::discover(DISCOVER_FOR, &cfg.hostname);
        tracing::debug!(
            "mDNS found {} peer(s): {}",
            found.len(),
            found
                .iter()
                .map(|d| format!("{} at {}", d.host, d.url))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for d in found {
            if !urls.contains(&d.url) {
                urls.push(d.url);
            }
        }
    }
    urls
}

/// Whether agent.yaml names peers to ask (`peers.static` or `peers.discover`).
fn asks_peers(cfg: &AgentConfig) -> bool {
    cfg.peers
        .as_ref()
        .is_some_and(|p| !p.static_peers.is_empty() || p.discover.is_some())
}

/// The peers to ask, less those avoided at `now`, probed: the ones that answered.
fn live_peers(
    cfg: &AgentConfig,
    avoided: &AvoidList,
    clients: &download::Clients,
    now: chrono::DateTime<chrono::Utc>,
) -> Vec<download::Peer> {
    let asked: Vec<String> = peer_urls(cfg)
        .into_iter()
        .filter(|u| match avoided.avoids(u, now) {
            Some(a) => {
                tracing::info!(
                    "peer {u} is avoided until {}: it {} ({})",
                    a.until.to_rfc3339(),
                    a.reason,
                    a.detail
                );
                false
            }
            None => true,
        })
        .collect();
    let peers = download::probe(clients, &asked, &cfg.hostname);
    if peers.is_empty() && !asked.is_empty() {
        tracing::info!(
            "no peer answered ({}): the packages are downloaded from upstream",
            asked.join(", ")
        );
    }
    peers
}

/// How `sys` downloads archive files (generation pins with a sha256 that no sync database
/// has) for this pass: through `download`, the live peers first (asked on the first such
/// file), into the cache. `None` (libalpm downloads them, as without peers) when the
/// transaction follows and agent.yaml names no peer, or the cache dir or HTTP client is
/// missing.
pub(super) fn archive_fetch(
    cfg: &AgentConfig,
    state: &StateDir,
    conf: &pacmanconf::Config,
    purpose: Purpose,
) -> Option<ArchiveFetch> {
    if purpose == Purpose::Apply && !asks_peers(cfg) {
        return None;
    }
    let cache_dir = conf
        .cache_dir
        .iter()
        .map(std::path::PathBuf::from)
        .find(|c| c.is_dir())?;
    let (cfg, state) = (cfg.clone(), state.clone());
    Some(ArchiveFetch::new(
        cfg.hostname.clone(),
        cache_dir,
        Some(cfg.state_dir.join(download::STATUS_FILE)),
        Box::new(move || {
            let clients = download::Clients::new(&download::Limits::default())?;
            let peers = live_peers(&cfg, &state.load_avoided(), &clients, chrono::Utc::now());
            Some((clients, peers))
        }),
    ))
}

/// Downloads the package files of the transaction prepared on `sys` that no cache dir has:
/// from the live peers first, then upstream, each checked against its database's sha256; and
/// reports them with what the archive downloads during the prepare did. `None` when nothing was
/// done ahead (no peer answered and the transaction follows: libalpm downloads as without
/// peers), and the transaction stays prepared. `Some`: the transaction was released (pacman's
/// lock is not held while peers are waited for), so the caller prepares again. Never fails the
/// pass: what it could not download, libalpm downloads.
pub(super) fn ahead(
    cfg: &AgentConfig,
    state: &StateDir,
    sys: &mut System,
    purpose: Purpose,
) -> Option<Downloads> {
    let archive = sys.take_archive_fetch();
    if purpose == Purpose::Apply && !asks_peers(cfg) {
        return None;
    }
    let (wanted, cache) = sys.downloads();
    let Some(cache) = cache else {
        tracing::warn!("no cache dir of pacman.conf exists: nothing is downloaded ahead");
        return None;
    };
    let (connected, mut outcome) = match archive {
        Some(a) => a.into_parts(),
        None => (None, download::Outcome::default()),
    };
    let now = chrono::Utc::now();
    let mut avoided = state.load_avoided();
    let limits = download::Limits::default();
    let total = wanted.len() + outcome.fetched.len() + outcome.failed.len();
    let mut peer_names = Vec::new();
    if !wanted.is_empty() {
        let status_file = cfg.state_dir.join(download::STATUS_FILE);
        // The archive downloads of the prepare may have asked the peers already.
        let (clients, known) = match connected {
            Some((clients, peers)) => (clients, Some(peers)),
            None => (download::Clients::new(&limits)?, None),
        };
        let peers = match known {
            Some(peers) => peers,
            None if asks_peers(cfg) => {
                // Pending first, then a moment for the peers that started with this host to
                // say so too, then the probe: hosts of a site that start together all see each
                // other's pending files, and rendezvous gives each file to one of them
                // (without this, each saw none of the others pending and fetched everything
                // from upstream: a herd).
                download::announce(&status_file, &cfg.hostname, &wanted);
                std::thread::sleep(limits.settle);
                live_peers(cfg, &avoided, &clients, now)
            }
            None => Vec::new(),
        };
        if peers.is_empty() && purpose == Purpose::Apply && outcome.fetched.is_empty() {
            // libalpm downloads them and publishes nothing: no peer may wait for this host.
            download::announce(&status_file, &cfg.hostname, &[]);
            return None;
        }
        peer_names = peers.iter().map(|p| p.url.clone()).collect();
        sys.release();
        if !peers.is_empty() || purpose == Purpose::Prefetch {
            let fetch = download::Fetch {
                me: &cfg.hostname,
                cache_dir: &cache,
                status_file: Some(cfg.state_dir.join(download::STATUS_FILE)),
                limits,
                clients: &clients,
            };
            outcome.merge(download::fetch(&fetch, wanted, peers));
        }
    } else if outcome.fetched.is_empty() && outcome.failed.is_empty() && purpose == Purpose::Apply {
        return None;
    }
    sys.release();
    for (url, reason, detail) in &outcome.avoid {
        avoided.avoid(url, now, *reason, detail.clone());
    }
    if !outcome.avoid.is_empty()
        && let Err(e) = state.save_avoided(&avoided)
    {
        tracing::warn!("cannot record the avoided peers: {e}");
    }
    for (file, why) in &outcome.failed {
        tracing::warn!("{file}: not downloaded ahead ({why}); libalpm downloads it");
    }
    let mut d = Downloads {
        peers: peer_names,
        prefetch: purpose == Purpose::Prefetch,
        left: u32::try_from(outcome.failed.len()).unwrap_or(u32::MAX),
        ..Downloads::default()
    };
    outcome.add_to(&mut d);
    if total > 0 {
        tracing::info!(
            "{} of {total} package file{} downloaded{}: {} bytes from peers ({} files), {} bytes from upstream ({} files)",
            d.peer_files + d.upstream_files,
            if total == 1 { "" } else { "s" },
            if d.prefetch {
                " ahead of the window"
            } else {
                ""
            },
            d.peer_bytes,
            d.peer_files,
            d.upstream_bytes,
            d.upstream_files
        );
    }
    Some(d)
}

/// After libalpm found a corrupt package file or signature in a pass that took files from
/// `peers`: they are avoided for a while (the signature is the one thing not checked against
/// the database before the transaction).
pub(super) fn avoid_after_corrupt(state: &StateDir, peers: &[String], error: &str) {
    let now = chrono::Utc::now();
    let mut avoided = state.load_avoided();
    for p in peers {
        avoided.avoid(
            p,
            now,
            crate::peers::AvoidReason::BadFile,
            format!("a file of a pass that took files from it failed libalpm's check: {error}"),
        );
    }
    if let Err(e) = state.save_avoided(&avoided) {
        tracing::warn!("cannot record the avoided peers: {e}");
    }
}

/// Adds what libalpm downloaded since `before` (`apply::libalpm_downloads`) to `report`.
pub(super) fn add_libalpm(downloads: &mut Option<Downloads>, before: (u64, u32)) {
    let (bytes, files) = crate::apply::libalpm_downloads();
    let (bytes, files) = (bytes - before.0.min(bytes), files - before.1.min(files));
    if files == 0 {
        return;
    }
    let d = downloads.get_or_insert_with(Downloads::default);
    d.upstream_bytes += bytes;
    d.upstream_files += files;
}
