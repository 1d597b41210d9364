//! The host agent: `fleetctl agent`, a long-running loop that runs reconcile passes on a
//! per-host jittered schedule, backs off on failure, notices drift (someone ran pacman by
//! hand) within seconds through a watch on the local package database, reconciles at once
//! when a local-path fleet repository changes, reloads its config on SIGHUP and stops on
//! SIGTERM/SIGINT — never in the middle of a pass. Windows and `paused` are the passes' own
//! business (`reconcile`): outside a window a pass plans and reports "pending until".
//!
//! Each pass runs in a child process (`fleetctl reconcile --json`, or `plan --json` to check
//! drift) whose report the agent reads: what libalpm and the fetch allocate is given back when
//! the pass ends, so the agent idles at its own small size all day (BENCHMARKS.md), and a crash
//! inside a pass cannot take the agent down.
//!
//! With agent.yaml `peers: {listen: ADDR}` the agent also serves its package cache dirs to
//! peers (`peer_serve`, docs/contract.md §8) on the same runtime, from its start until it stops;
//! a socket that cannot be bound stops the start. `peers:` is read at start: a SIGHUP that
//! changes it is logged and takes effect at the next restart. With `peers.discover: mdns` as
//! well, the bound server is announced by mDNS (`peer_discover::Advertiser`) for as long as it
//! serves; an announcement that cannot start is a warning, never a stop.
//!
mod schedule;

use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::{AgentConfig, ConfigError, repo_is_local_path};

use crate::reconcile::{self, Exit, PassReport, Verdict};
use crate::state::StateDir;

/// The agent could not start or keep running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// agent.yaml is unusable.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The async runtime could not be built.
    #[error("cannot start the agent: {0}")]
    Runtime(#[source] std::io::Error),
    /// A signal handler could not be installed.
    #[error("cannot start the agent: signal handler: {0}")]
    Signal(#[source] std::io::Error),
    /// The peer cache server could not start (`peers.listen`).
    #[error("cannot start the agent: {source} (in {})", path.display())]
    PeerServe {
        /// agent.yaml.
        path: PathBuf,
        /// Why.
        #[source]
        source: crate::peer_serve::PeerServeError,
    },
    /// The cache dirs to serve to peers could not be read from pacman.conf.
    #[error("cannot start the agent: `peers.listen` serves pacman.conf's CacheDir, but {0}")]
    CacheDirs(#[source] crate::system::SystemError),
    /// A file watch could not be set up.
    #[error("cannot start the agent: watching {}: {source}", path.display())]
    Watch {
        /// The watched path.
        path: PathBuf,
        /// notify's reason.
        #[source]
        source: notify::Error,
    },
}

/// Why the loop woke up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Trigger {
    /// Something changed in the local package database.
    LocalDb,
    /// The local-path fleet repository changed.
    Repo,
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(config_path: &Path) -> Result<(), AgentError> {
    let cfg = AgentConfig::load(config_path)?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(AgentError::Runtime)?;
    rt.block_on(main_loop(config_path.to_owned(), cfg))
}

/// File watches; dropping them stops the events.
struct Watches {
    _watchers: Vec<notify::RecommendedWatcher>,
}

fn watch(cfg: &AgentConfig, tx: &mpsc::UnboundedSender<Trigger>) -> Result<Watches, AgentError> {
    let mut watchers = Vec::new();
    let mut add =
        |path: PathBuf, trigger: Trigger, mode: RecursiveMode| -> Result<(), AgentError> {
            if !path.exists() {
                tracing::warn!("not watching {} (it does not exist)", path.display());
                return Ok(());
            }
            let tx = tx.clone();
            let mut w = notify::recommended_watcher(move |ev: notify::Result<notify::Event>| {
                if let Ok(ev) = ev
                    && !matches!(ev.kind, notify::EventKind::Access(_))
                {
                    let _ = tx.send(trigger);
                }
            })
            .map_err(|source| AgentError::Watch {
                path: path.clone(),
                source,
            })?;
            w.watch(&path, mode).map_err(|source| AgentError::Watch {
                path: path.clone(),
                source,
            })?;
            tracing::info!(
                "watching {} for {}",
                path.display(),
                match trigger {
                    Trigger::LocalDb => "drift",
                    Trigger::Repo => "new commits",
                }
            );
            watchers.push(w);
            Ok(())
        };
    add(
        cfg.dbpath.join("local"),
        Trigger::LocalDb,
        RecursiveMode::NonRecursive,
    )?;
    if repo_is_local_path(&cfg.repo) {
        let repo = PathBuf::from(&cfg.repo);
        let git_dir = if repo.join(".git").is_dir() {
            repo.join(".git")
        } else {
            repo
        };
        add(
            git_dir.join("refs"),
            Trigger::Repo,
            RecursiveMode::Recursive,
        )?;
    }
    Ok(Watches {
        _watchers: watchers,
    })
}

async fn main_loop(config_path: PathBuf, mut cfg: AgentConfig) -> Result<(), AgentError> {
    let sig = |kind| signal(kind).map_err(AgentError::Signal);
    let (mut term, mut int, mut hup) = (
        sig(SignalKind::terminate())?,
        sig(SignalKind::interrupt())?,
        sig(SignalKind::hangup())?,
    );
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut watches = watch(&cfg, &tx)?;
    // Aborted when the agent stops (dropping the task closes its connections).
    let peer_server = start_peer_server(&cfg).await?;
    let mut failures: u32 = 0;
    let mut drift: Vec<String> = Vec::new();
    // One pass at once on start (a host that boots converges promptly), then on its slot.
    let mut next = Instant::now();
    let mut drift_check: Option<Instant> = None;
    tracing::info!(
        "agent for host {} started: a pass now, then every {} at +{:.0}s into each interval",
        cfg.hostname,
        humantime::format_duration(cfg.interval),
        schedule::offset(&cfg.hostname, cfg.interval).as_secs_f64()
    );
    loop {
        let drift_at =
            drift_check.unwrap_or_else(|| Instant::now() + Duration::from_secs(86_400 * 365));
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {
                let result = pass(&config_path, true).await;
                // Events from our own transaction lead to one drift check that finds nothing;
                // discarding them could also discard a change made by hand just after the pass.
                match result {
                    Ok(report) => {
                        failures = 0;
                        if report.verdict.settled() {
                            drift.clear();
                        } else if !drift.is_empty() {
                            record_drift(&cfg, &drift);
                        }
                        next = Instant::now() + schedule::until_slot(std::time::SystemTime::now(), &cfg.hostname, cfg.interval);
                    }
                    Err(e) => {
                        failures += 1;
                        let delay = schedule::backoff(cfg.interval, failures);
                        tracing::error!("pass failed ({failures} in a row); retrying in {}: {e}", humantime::format_duration(delay));
                        next = Instant::now() + delay;
                    }
                }
            }
            Some(trigger) = rx.recv() => match trigger {
                Trigger::LocalDb => {
                    // Debounce: pacman writes many files; check once it has been quiet.
                    drift_check = Some(Instant::now() + Duration::from_millis(1500));
                }
                Trigger::Repo => {
                    let soon = Instant::now() + Duration::from_millis(500);
                    if next > soon {
                        tracing::info!("the fleet repository changed; reconciling");
                        next = soon;
                    }
                }
            },
            _ = tokio::time::sleep_until(drift_at), if drift_check.is_some() => {
                drift_check = None;
                if cfg.dbpath.join("db.lck").exists() {
                    drift_check = Some(Instant::now() + Duration::from_secs(1));
                    continue;
                }
                let settled = StateDir::open(&cfg.state_dir).ok().and_then(|s| {
                    let applied = s.load_applied().ok().flatten()?;
                    let status = s.load_status().ok().flatten()?;
                    status.outcome.settled().then_some(applied.commit)
                });
                match pass(&config_path, false).await {
                    Ok(report) if settled.as_deref() != Some(report.commit.as_str()) => {
                        tracing::info!("the fleet moved on; reconciling");
                        next = next.min(Instant::now());
                    }
                    Ok(report) if !report.drift.is_empty() => {
                        drift = report.drift;
                        tracing::warn!("correcting the drift at the next allowed time");
                        record_drift(&cfg, &drift);
                        next = next.min(Instant::now());
                    }
                    Ok(_) => tracing::debug!("the local package database changed, but the host still matches its desired state"),
                    Err(e) => tracing::warn!("drift check failed: {e}"),
                }
            }
            _ = hup.recv() => {
                match AgentConfig::load(&config_path) {
                    Ok(new) => {
                        tracing::info!("reloaded {}", config_path.display());
                        if new.peers != cfg.peers {
                            tracing::warn!("`peers:` changed; the peer cache server changes when the agent restarts");
                        }
                        cfg = new;
                        watches = watch(&cfg, &tx)?;
                        next = Instant::now() + schedule::until_slot(std::time::SystemTime::now(), &cfg.hostname, cfg.interval);
                    }
                    Err(e) => tracing::error!(
                        "cannot reload {}: {e}; the schedule and watches stay as they were, and passes (which read the file) fail until it is fixed",
                        config_path.display()
                    ),
                }
            }
            _ = term.recv() => { tracing::info!("SIGTERM: stopping"); break; }
            _ = int.recv() => { tracing::info!("SIGINT: stopping"); break; }
        }
    }
    drop(watches);
    if let Some(server) = peer_server {
        // The announcement goes first: no peer should be sent to a server that is stopping.
        if let Some(advertiser) = server.advertiser {
            advertiser.stop();
        }
        server.task.abort();
    }
    Ok(())
}

/// The running peer cache server.
struct PeerServer {
    /// The server's task.
    task: tokio::task::JoinHandle<()>,
    /// Its mDNS announcement (`peers.discover: mdns`), if it started.
    advertiser: Option<crate::peer_discover::Advertiser>,
}

/// Binds and spawns the peer cache server when agent.yaml has `peers.listen`: it serves the
/// `CacheDir`s pacman.conf names (through pacman-conf, as a pass reads them). With
/// `peers.discover: mdns` it is announced by mDNS too, on the port it was bound to.
async fn start_peer_server(cfg: &AgentConfig) -> Result<Option<PeerServer>, AgentError> {
    let Some(listen) = cfg.peers.as_ref().and_then(|p| p.listen) else {
        return Ok(None);
    };
    let conf = crate::system::read_conf(&cfg.host_paths()).map_err(AgentError::CacheDirs)?;
    let dirs: Vec<PathBuf> = conf.cache_dir.iter().map(PathBuf::from).collect();
    let limits = crate::peer_serve::Limits::default();
    let identity = crate::peer_serve::Identity {
        host: cfg.hostname.clone(),
        status_file: cfg.state_dir.join(crate::download::STATUS_FILE),
    };
    let server = crate::peer_serve::bind(listen, dirs.clone(), limits, identity)
        .await
        .map_err(|source| AgentError::PeerServe {
            path: cfg.source.clone(),
            source,
        })?;
    let addr = server.local_addr().unwrap_or(listen);
    tracing::info!(
        "peer cache: serving {} on http://{addr}/ (at most {} connections, {}/s each)",
        dirs.iter()
            .map(|d| d.display().to_string())
            .collect::<Vec<_>>()
            .join(", "),
        limits.max_connections,
        humanize_rate(limits.bytes_per_second)
    );
    let task = tokio::spawn(server.run());
    let advertiser =
        cfg.peers
            .as_ref()
            .and_then(|p| p.discover)
            .and_then(
                |crate::config::Discover::Mdns| match crate::peer_discover::Advertiser::start(
                    &cfg.hostname,
                    cfg.fleet.as_deref(),
                    addr.port(),
                ) {
                    Ok(advertiser) => {
                        tracing::info!(
                            "peer cache: announced by mDNS as {} ({}) on port {}",
                            cfg.hostname,
                            crate::peer_discover::SERVICE_TYPE,
                            addr.port()
                        );
                        Some(advertiser)
                    }
                    Err(e) => {
                        tracing::warn!("{e}; peers will not discover this host's cache");
                        None
                    }
                },
            );
    Ok(Some(PeerServer { task, advertiser }))
}

fn humanize_rate(bytes: u64) -> String {
    if bytes.is_multiple_of(1 << 20) {
        format!("{} MiB", bytes >> 20)
    } else {
        format!("{bytes} bytes")
    }
}

/// Runs one pass in a child process: `fleetctl reconcile` (`apply`) or `fleetctl plan` with
/// this agent's config and `--json`. The child logs and reports its errors on the agent's
/// stderr (the journal); a stop signal waits for it to finish. Err: why there is no report.
async fn pass(config: &Path, apply: bool) -> Result<PassReport, String> {
    // The running executable itself, even when a pass has just upgraded pacfleet and the path
    // now names another file (or none): passes stay the agent's version until it restarts.
    let exe = Path::new("/proc/self/exe");
    let command = if apply { "reconcile" } else { "plan" };
    let output = tokio::process::Command::new(exe)
        .arg(command)
        .arg("--config")
        .arg(config)
        .arg("--json")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        // Not `output()`: tokio's captures stderr too, and the pass's log would be lost.
        .spawn()
        .map_err(|e| format!("cannot run `{} {command}`: {e}", exe.display()))?
        .wait_with_output()
        .await
        .map_err(|e| format!("`fleetctl {command}`: {e}"))?;
    // reconcile: 0, or 3 when a newer commit was refused (the report says which); plan: 0, or
    // 1 when changes are pending. Anything else printed its error already.
    let reported = matches!(
        (apply, output.status.code().and_then(Exit::from_code)),
        (true, Some(Exit::Success | Exit::Refused)) | (false, Some(Exit::Success | Exit::Changes))
    );
    if !reported {
        return Err(format!(
            "`fleetctl {command}` ended with {} (its error is logged above)",
            output.status
        ));
    }
    let report: PassReport = serde_json::from_slice(&output.stdout)
        .map_err(|e| format!("cannot read the report of `fleetctl {command}`: {e}"))?;
    if apply {
        let what = match report.verdict {
            Verdict::NotInFleet => "not in the fleet".to_owned(),
            Verdict::Converged => "converged".to_owned(),
            _ => format!(
                "{}, {} changes",
                report.verdict.outcome(),
                report.changeset.changes.len()
            ),
        };
        tracing::info!("pass at {}: {what}", reconcile::short(&report.commit));
    }
    Ok(report)
}

/// Adds the drift to status.json (and the metrics textfile) so `status`, waybar and
/// Prometheus show it.
fn record_drift(cfg: &AgentConfig, drift: &[String]) {
    let Ok(state) = StateDir::open_private(&cfg.state_dir) else {
        return;
    };
    match state.load_status() {
        Ok(Some(mut status)) => {
            status.drift = drift.to_vec();
            if let Err(e) = state.save_status(&status) {
                tracing::error!("cannot record drift: {e}");
            }
            if let Some(textfile) = &cfg.textfile
                && let Err(e) = crate::metrics::refresh_textfile(&state, textfile)
            {
                tracing::error!("cannot refresh {}: {e}", textfile.display());
            }
        }
        Ok(None) => {}
        Err(e) => tracing::error!("cannot record drift: {e}"),
    }
}
