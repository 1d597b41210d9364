//! `peers.discover: mdns` (docs/contract.md §8): finding peer caches on the site's network by
//! multicast DNS (DNS-SD over mDNS, RFC 6762/6763), through the `mdns-sd` crate, whose daemon
//! runs on a thread of its own (no async runtime).
//!
//! This module owns both sides of it and nothing else:
//! - [`Advertiser`]: the agent's announcement of its peer cache server, service type
//!   [`SERVICE_TYPE`], instance name the host name, TXT `host=<name>`, `v=1` and, when the host
//!   has one, `fleet=<name>`; on every IPv4 interface, loopback included. Dropping it (or
//!   [`Advertiser::stop`]) withdraws the announcement and stops its daemon.
//! - [`discover`]: one bounded browse for those announcements, returning [`DiscoveredPeer`]s.
//!   It never fails: a network without multicast, or a daemon that cannot start, is a warning
//!   and no peers. Everything in an answer comes from anyone on the network: names are
//!   checked ([`valid_name`]) and the number of peers is capped ([`MAX_PEERS`]); a discovered
//!   peer is as untrusted as a `peers.static` one (every file is checked against its sha256
//!   before it enters the cache, and its signature by libalpm).
//!
//! What a pass does with the peers (asks them first, like `peers.static`) is `reconcile`'s.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use mdns_sd::{IfKind, ResolvedService, ServiceDaemon, ServiceEvent, ServiceInfo};

/// The DNS-SD service type of a pacfleet peer cache server.
pub const SERVICE_TYPE: &str = "_pacfleet-peer._tcp.local.";

/// The TXT `v=` this implementation writes and the only one it accepts.
pub const TXT_VERSION: &str = "1";

/// At most this many peers come out of one [`discover`].
pub const MAX_PEERS: usize = 32;

/// The longest host (or fleet) name advertised or accepted.
pub const MAX_NAME_LEN: usize = 64;

/// How long dropping an [`Advertiser`] waits for its goodbye packets to be sent.
const UNREGISTER_WAIT: Duration = Duration::from_millis(500);

/// mDNS advertising could not start.
#[derive(Debug, thiserror::Error)]
pub enum DiscoverError {
    /// The host name cannot be advertised.
    #[error(
        "cannot advertise the peer cache by mDNS: host name {0:?} is not 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -; give agent.yaml `hostname:` such a name or remove `peers.discover`"
    )]
    BadHost(String),
    /// The fleet name cannot be advertised.
    #[error(
        "cannot advertise the peer cache by mDNS: fleet name {0:?} is not 1 to {MAX_NAME_LEN} characters of A-Z a-z 0-9 . _ -; fix agent.yaml `fleet:` or remove `peers.discover`"
    )]
    BadFleet(String),
    /// The mDNS daemon (its thread, its sockets) could not start.
    #[error(
        "cannot start the mDNS daemon (UDP port 5353, multicast group 224.0.0.251): {source}; check that this host's network allows multicast, or remove `peers.discover`"
    )]
    Daemon {
        /// Why.
        #[source]
        source: mdns_sd::Error,
    },
    /// The service could not be registered with the daemon.
    #[error("cannot advertise the peer cache by mDNS as {SERVICE_TYPE} on port {port}: {source}")]
    Register {
        /// The peer cache server's port.
        port: u16,
        /// Why.
        #[source]
        source: mdns_sd::Error,
    },
    /// The browse could not start.
    #[error("cannot browse for peer caches ({SERVICE_TYPE}) by mDNS: {source}")]
    Browse {
        /// Why.
        #[source]
        source: mdns_sd::Error,
    },
}

/// Whether `name` may be advertised, or accepted from the network, as a host or fleet name:
/// 1 to [`MAX_NAME_LEN`] characters of `A-Z a-z 0-9 . _ -`.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// This host's peer cache server, announced by mDNS for as long as this lives.
pub struct Advertiser {
    /// `None` once stopped.
    daemon: Option<ServiceDaemon>,
    /// The service instance's full name, to unregister.
    fullname: String,
}

impl std::fmt::Debug for Advertiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Advertiser")
            .field("fullname", &self.fullname)
            .field("running", &self.daemon.is_some())
            .finish()
    }
}

impl Advertiser {
    /// Announces the peer cache server of host `host` (of fleet `fleet`, if any) listening on
    /// TCP `port`, with this host's IPv4 addresses, on every IPv4 interface including loopback.
    /// The addresses follow the interfaces' as they change.
    pub fn start(host: &str, fleet: Option<&str>, port: u16) -> Result<Advertiser, DiscoverError> {
        if !valid_name(host) {
            return Err(DiscoverError::BadHost(host.to_owned()));
        }
        if let Some(fleet) = fleet.filter(|f| !valid_name(f)) {
            return Err(DiscoverError::BadFleet(fleet.to_owned()));
        }
        let mut txt = vec![("host", host), ("v", TXT_VERSION)];
        if let Some(fleet) = fleet {
            txt.push(("fleet", fleet));
        }
        // The address records' name: one label of its own, so it cannot clash with the
        // `<hostname>.local.` a system mDNS responder (avahi) announces.
        let server = format!("pacfleet-{}.local.", host.replace('.', "-"));
        let mut info = ServiceInfo::new(SERVICE_TYPE, host, &server, "", port, &txt[..])
            .map_err(|source| DiscoverError::Register { port, source })?
            .enable_addr_auto();
        info.set_interfaces(vec![IfKind::IPv4, IfKind::LoopbackV4]);
        let daemon = ServiceDaemon::new().map_err(|source| DiscoverError::Daemon { source })?;
        let fullname = info.get_fullname().to_owned();
        // IPv4 only: the addresses advertised are IPv4, so IPv6 sockets would only add traffic.
        if let Err(source) = daemon
            .disable_interface(IfKind::IPv6)
            .and_then(|()| daemon.register(info))
        {
            let _ = daemon.shutdown();
            return Err(DiscoverError::Register { port, source });
        }
        Ok(Advertiser {
            daemon: Some(daemon),
            fullname,
        })
    }

    /// Withdraws the announcement (mDNS goodbye packets) and stops the daemon; the same as
    /// dropping it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        let Some(daemon) = self.daemon.take() else {
            return;
        };
        // Waits (bounded) for the goodbyes to go out before the daemon stops.
        if let Ok(done) = daemon.unregister(&self.fullname) {
            let _ = done.recv_timeout(UNREGISTER_WAIT);
        }
        if let Err(e) = daemon.shutdown() {
            tracing::debug!("stopping the mDNS daemon: {e}");
        }
    }
}

impl Drop for Advertiser {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// A peer cache server found by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct DiscoveredPeer {
    /// The host name it announced (checked by [`valid_name`]).
    pub host: String,
    /// Its base URL, `http://ADDR:PORT` (`http://[ADDR]:PORT` for IPv6), no trailing `/`.
    pub url: String,
}

/// Browses the network for peer cache servers for `timeout`, and returns those that were
/// resolved: not `own_host`, one per host (the first answer), at most [`MAX_PEERS`], sorted by
/// host. Never fails: a network or daemon error is a warning and an empty list. Blocks the
/// calling thread for `timeout` (less once [`MAX_PEERS`] answered): from async code, call it in
/// `spawn_blocking`.
pub fn discover(timeout: Duration, own_host: &str) -> Vec<DiscoveredPeer> {
    match browse(timeout, own_host) {
        Ok(peers) => peers,
        Err(e) => {
            tracing::warn!("{e}; no peers discovered");
            Vec::new()
        }
    }
}

fn browse(timeout: Duration, own_host: &str) -> Result<Vec<DiscoveredPeer>, DiscoverError> {
    let deadline = Instant::now() + timeout;
    let daemon = ServiceDaemon::new().map_err(|source| DiscoverError::Daemon { source })?;
    let events = match daemon.browse(SERVICE_TYPE) {
        Ok(events) => events,
        Err(source) => {
            let _ = daemon.shutdown();
            return Err(DiscoverError::Browse { source });
        }
    };
    let mut found: BTreeMap<String, String> = BTreeMap::new();
    while found.len() < MAX_PEERS {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match events.recv_timeout(left) {
            Ok(ServiceEvent::ServiceResolved(service)) => record(&mut found, &service, own_host),
            Ok(_) => {}
            // Timed out, or the daemon went away.
            Err(_) => break,
        }
    }
    let _ = daemon.stop_browse(SERVICE_TYPE);
    if let Err(e) = daemon.shutdown() {
        tracing::debug!("stopping the mDNS daemon: {e}");
    }
    Ok(found
        .into_iter()
        .map(|(host, url)| DiscoveredPeer { host, url })
        .collect())
}

/// Adds the peer `service` announces to `found` (host → URL), unless it is not one
/// ([`peer_of`]), it is `own_host`, its host is in already (the first answer stays), or `found`
/// holds [`MAX_PEERS`].
fn record(found: &mut BTreeMap<String, String>, service: &ResolvedService, own_host: &str) {
    if found.len() >= MAX_PEERS {
        return;
    }
    if let Some(peer) = peer_of(service)
        && peer.host != own_host
    {
        found.entry(peer.host).or_insert(peer.url);
    }
}

/// The peer a resolved announcement describes, or `None` when it is not one this
/// implementation accepts (another TXT version, a bad name, no usable address, port 0).
fn peer_of(service: &ResolvedService) -> Option<DiscoveredPeer> {
    let txt = |key: &str| service.get_property_val_str(key);
    if txt("v") != Some(TXT_VERSION) {
        return None;
    }
    let instance = service
        .get_fullname()
        .strip_suffix(SERVICE_TYPE)
        .and_then(|s| s.strip_suffix('.'))
        .map(|s| s.replace("\\.", "."));
    let host = match txt("host") {
        Some(host) => host.to_owned(),
        None => instance?,
    };
    let addresses: Vec<IpAddr> = service
        .get_addresses()
        .iter()
        .map(|a| a.to_ip_addr())
        .collect();
    let url = peer_url(&host, &addresses, service.get_port())?;
    Some(DiscoveredPeer { host, url })
}

/// `http://ADDR:PORT` for host `host` at one of `addresses`: IPv4 first (a routable one
/// before loopback), then global IPv6; `None` for a bad name, port 0 or no usable address.
fn peer_url(host: &str, addresses: &[IpAddr], port: u16) -> Option<String> {
    if !valid_name(host) || port == 0 {
        return None;
    }
    let rank = |a: &IpAddr| match a {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_multicast() || v4.is_broadcast() => None,
        IpAddr::V4(v4) if v4.is_loopback() => Some(1),
        IpAddr::V4(_) => Some(0),
        // A link-local IPv6 address needs a zone, which a URL cannot carry to libalpm.
        IpAddr::V6(v6)
            if v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80 =>
        {
            None
        }
        IpAddr::V6(v6) if v6.is_loopback() => Some(3),
        IpAddr::V6(_) => Some(2),
    };
    let best = addresses
        .iter()
        .filter_map(|a| rank(a).map(|r| (r, *a)))
        .min()?
        .1;
    Some(match best {
        IpAddr::V4(v4) => format!("http://{v4}:{port}"),
        IpAddr::V6(v6) => format!("http://[{v6}]:{port}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_bounded_and_of_plain_characters() {
        for good in ["ws-01", "a", "db.site_2", &"x".repeat(MAX_NAME_LEN)] {
            assert!(valid_name(good), "{good}");
        }
        for bad in [
            "",
            &"x".repeat(MAX_NAME_LEN + 1),
            "ws 01",
            "ws/01",
            "ws\u{0}",
            "wé",
            "a:b",
            "<script>",
            "ws\n01",
        ] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn a_peer_url_prefers_ipv4_and_skips_junk() {
        let ips =
            |list: &[&str]| -> Vec<IpAddr> { list.iter().map(|s| s.parse().unwrap()).collect() };
        assert_eq!(
            peer_url(
                "ws-01",
                &ips(&["2001:db8::5", "127.0.0.1", "10.0.0.5"]),
                7878
            )
            .as_deref(),
            Some("http://10.0.0.5:7878")
        );
        assert_eq!(
            peer_url("ws-01", &ips(&["2001:db8::5", "127.0.0.1"]), 7878).as_deref(),
            Some("http://127.0.0.1:7878")
        );
        assert_eq!(
            peer_url("ws-01", &ips(&["fe80::1", "2001:db8::5"]), 7878).as_deref(),
            Some("http://[2001:db8::5]:7878")
        );
        assert_eq!(peer_url("ws-01", &ips(&["fe80::1", "0.0.0.0"]), 7878), None);
        assert_eq!(peer_url("ws-01", &ips(&["10.0.0.5"]), 0), None);
        assert_eq!(peer_url("ws-01", &[], 7878), None);
        let long = "h".repeat(MAX_NAME_LEN + 1);
        assert_eq!(peer_url(&long, &ips(&["10.0.0.5"]), 7878), None);
        assert_eq!(peer_url("a/../b", &ips(&["10.0.0.5"]), 7878), None);
    }

    /// A resolved announcement as the daemon would hand it over.
    fn announced(instance: &str, txt: &[(&str, &str)], ip: &str, port: u16) -> ResolvedService {
        ServiceInfo::new(SERVICE_TYPE, instance, "x.local.", ip, port, txt)
            .unwrap()
            .as_resolved_service()
    }

    #[test]
    fn announcements_from_the_network_are_checked_deduplicated_and_capped() {
        fn ok(host: &str) -> [(&str, &str); 2] {
            [("host", host), ("v", "1")]
        }
        let peer = |host: &str, url: &str| {
            Some(DiscoveredPeer {
                host: host.to_owned(),
                url: url.to_owned(),
            })
        };
        assert_eq!(
            peer_of(&announced("ws-01", &ok("ws-01"), "10.0.0.5", 7878)),
            peer("ws-01", "http://10.0.0.5:7878")
        );
        assert_eq!(
            peer_of(&announced("ws-01", &ok("ws-01"), "2001:db8::5", 7878)),
            peer("ws-01", "http://[2001:db8::5]:7878")
        );
        // The TXT host is the name; without one, the instance name (dots unescaped).
        assert_eq!(
            peer_of(&announced("a.b", &[("v", "1")], "10.0.0.5", 7878)),
            peer("a.b", "http://10.0.0.5:7878")
        );
        let long = "h".repeat(MAX_NAME_LEN + 1);
        for junk in [
            announced("ws-01", &[("host", "ws-01"), ("v", "2")], "10.0.0.5", 7878),
            announced("ws-01", &[("host", "ws-01")], "10.0.0.5", 7878),
            announced("ws-01", &ok(&long), "10.0.0.5", 7878),
            announced("ws-01", &ok("../../etc"), "10.0.0.5", 7878),
            announced("ws-01", &ok("a b"), "10.0.0.5", 7878),
            announced("ws-01", &ok(""), "10.0.0.5", 7878),
            announced(&long, &[("v", "1")], "10.0.0.5", 7878),
            announced("ws 01", &[("v", "1")], "10.0.0.5", 7878),
            announced("ws-01", &ok("ws-01"), "", 7878),
            announced("ws-01", &ok("ws-01"), "fe80::1", 7878),
            announced("ws-01", &ok("ws-01"), "10.0.0.5", 0),
        ] {
            assert_eq!(peer_of(&junk), None, "{junk:?}");
        }

        let mut found = BTreeMap::new();
        record(&mut found, &announced("me", &ok("me"), "10.0.0.1", 1), "me");
        assert!(found.is_empty(), "a host does not find itself");
        record(
            &mut found,
            &announced("a", &ok("ws-01"), "10.0.0.5", 1),
            "me",
        );
        record(
            &mut found,
            &announced("b", &ok("ws-01"), "10.0.0.6", 2),
            "me",
        );
        assert_eq!(
            found.get("ws-01").map(String::as_str),
            Some("http://10.0.0.5:1")
        );
        for i in 0..40 {
            let host = format!("h{i:02}");
            record(
                &mut found,
                &announced(&host, &ok(&host), "10.0.1.1", 1),
                "me",
            );
        }
        assert_eq!(found.len(), MAX_PEERS);
        assert!(found.contains_key("ws-01") && found.contains_key("h30"));
        assert!(!found.contains_key("h31"));
    }

    #[test]
    fn advertising_refuses_names_it_would_refuse_to_hear() {
        let e = Advertiser::start("bad host", None, 7878).unwrap_err();
        assert!(matches!(e, DiscoverError::BadHost(_)), "{e:?}");
        assert!(e.to_string().contains("`hostname:`"), "{e}");
        let long = "f".repeat(MAX_NAME_LEN + 1);
        let e = Advertiser::start("ws-01", Some(&long), 7878).unwrap_err();
        assert!(matches!(e, DiscoverError::BadFleet(_)), "{e:?}");
    }

    #[test]
    fn discovering_with_nobody_answering_is_quick_and_empty() {
        let start = Instant::now();
        let peers = discover(Duration::from_millis(50), "ws-01");
        assert!(peers.is_empty(), "{peers:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
        assert!(discover(Duration::ZERO, "ws-01").is_empty());
    }
}
