//! `peers.discover: mdns` (docs/contract.md §8) on a real network stack: `fleetctl agent`s
//! with `peers: {listen: …, discover: mdns}` announce their peer cache servers, and
//! `pacfleet::peer_discover::discover` called here finds them, with the URL they serve on,
//! never the asking host itself; an agent that stops withdraws its announcement.
//!
//! A test must not announce on the machine's real network, nor hear another mDNS responder
//! there. So each test runs on a thread of its own moved into a fresh network namespace
//! (`unshare(CLONE_NEWNET)`, root only), whose only interface is `lo`; it brings `lo` up with
//! the MULTICAST flag (the host's `lo` lacks it) and a route for 224.0.0.0/4 through it (`ip`),
//! as an mDNS stack expects of an interface. (The kernel loops multicast back to local sockets
//! even without the two, as a run without them shows; they are kept so the namespace looks like
//! a network that has multicast.) Network namespaces belong to a thread: the threads and
//! processes it starts (mdns-sd's daemon thread, the agents) are in the namespace too, the rest
//! of the test binary is not. Without root or `ip` the tests skip, which fails under
//! `PACFLEET_REQUIRE_ALL=1`.

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use pacfleet::peer_discover::{self, Advertiser, DiscoveredPeer};
use pacfleet_support::synth::SynthPackage;

use crate::harness::agent::{Agent, serving_agent};
use crate::harness::world::POOL;
use crate::harness::{World, is_root, skip};

/// Runs `body` on a new thread inside a fresh network namespace whose `lo` carries multicast;
/// skips (`skip`) where that cannot be had, saying why.
fn in_fresh_netns(body: impl FnOnce() + Send + 'static) {
    if !is_root() {
        return skip("a fresh network namespace (for multicast on lo) needs root");
    }
    if Command::new("ip").arg("-V").output().is_err() {
        return skip("no `ip` (iproute2) on this machine, needed to set up multicast on lo");
    }
    let thread = std::thread::spawn(move || {
        // SAFETY: unshare(2) with CLONE_NEWNET changes only this thread's network namespace;
        // it takes no pointers.
        if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
            return Err(format!(
                "cannot make a network namespace (unshare CLONE_NEWNET): {}",
                std::io::Error::last_os_error()
            ));
        }
        for args in [
            &["link", "set", "lo", "up", "multicast", "on"][..],
            &["route", "add", "224.0.0.0/4", "dev", "lo"][..],
        ] {
            let out = Command::new("ip")
                .args(args)
                .output()
                .map_err(|e| e.to_string())?;
            if !out.status.success() {
                return Err(format!(
                    "`ip {}` failed: {}",
                    args.join(" "),
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
        }
        body();
        Ok(())
    });
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(why)) => skip(&why),
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Host `name`'s agent with `peers: {listen: 127.0.0.1:<free port>, discover: mdns}`,
/// serving once this returns; and its port.
fn discoverable_agent(w: &World, name: &str) -> (Agent, u16) {
    serving_agent(w, name, ", discover: mdns", "")
}

/// Browses (2 s at a time) as host `asking` until `done` holds for the peers found, for at most
/// 30 s; returns the last answer.
fn discover_until(asking: &str, done: impl Fn(&[DiscoveredPeer]) -> bool) -> Vec<DiscoveredPeer> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let peers = peer_discover::discover(Duration::from_secs(2), asking);
        if done(&peers) || Instant::now() > deadline {
            return peers;
        }
    }
}

fn peer(host: &str, port: u16) -> DiscoveredPeer {
    DiscoveredPeer {
        host: host.to_owned(),
        url: format!("http://127.0.0.1:{port}"),
    }
}

#[test]
fn agents_with_discover_mdns_are_found_and_a_host_never_finds_itself() {
    in_fresh_netns(|| {
        let w = World::builder()
            .packages(&[SynthPackage::new("app", "1.0-1")])
            .desired(&["app"])
            .pool(POOL)
            .build();
        let (a, port_a) = discoverable_agent(&w, "peer-01");
        let (b, port_b) = discoverable_agent(&w, "peer-02");
        let (log_a, log_b) = (a.log_path().to_path_buf(), b.log_path().to_path_buf());
        let logs = || {
            let read = |p: &Path| fs::read_to_string(p).unwrap_or_default();
            format!(
                "--- peer-01\n{}\n--- peer-02\n{}",
                read(&log_a),
                read(&log_b)
            )
        };

        // A third host sees both, sorted by host, at the URLs they serve on.
        let want = vec![peer("peer-01", port_a), peer("peer-02", port_b)];
        let found = discover_until("ws-01", |p| p.len() >= 2);
        assert_eq!(found, want, "{}", logs());
        assert!(
            a.log().contains("peer cache: announced by mDNS as peer-01"),
            "{}",
            logs()
        );
        // The URL is the peer cache server's.
        for p in &found {
            let addr = p.url.trim_start_matches("http://");
            assert!(std::net::TcpStream::connect(addr).is_ok(), "{p:?}");
        }
        // Each agent's host finds the other one only.
        let found = discover_until("peer-01", |p| !p.is_empty());
        assert_eq!(found, vec![peer("peer-02", port_b)], "{}", logs());
        let found = discover_until("peer-02", |p| !p.is_empty());
        assert_eq!(found, vec![peer("peer-01", port_a)], "{}", logs());

        // An advertiser of the library's own (a port with nothing behind it is still found:
        // whether it serves is the pass's business) joins them.
        let extra = Advertiser::start("cache.site_2", Some("fleet-x"), 1).unwrap();
        let found = discover_until("ws-01", |p| p.len() >= 3);
        assert_eq!(
            found,
            vec![
                peer("cache.site_2", 1),
                peer("peer-01", port_a),
                peer("peer-02", port_b)
            ],
            "{}",
            logs()
        );
        extra.stop();

        // An agent stopped by SIGTERM (withdrawing its announcement on the way out, and
        // exiting cleanly) is no longer found.
        assert_eq!(a.stop(), 0, "{}", logs());
        let found = discover_until("ws-01", |p| p.len() == 1);
        assert_eq!(found, vec![peer("peer-02", port_b)], "{}", logs());
        drop(b);
    });
}

#[test]
fn discover_with_nothing_announced_is_empty_within_its_timeout() {
    in_fresh_netns(|| {
        let start = Instant::now();
        let found = peer_discover::discover(Duration::from_millis(300), "ws-01");
        assert!(found.is_empty(), "{found:?}");
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "{:?}",
            start.elapsed()
        );
    });
}
