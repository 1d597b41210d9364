//! `fleetctl agent` as the peer-cache tests run it: a child process whose log is a file, killed
//! when dropped, and a host's agent serving its package cache on a free port of 127.0.0.1.

use std::fs;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::{World, fleetctl};

/// A free TCP port on 127.0.0.1 of the calling thread's network namespace (free when this
/// returns).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `fleetctl agent`, its stderr in a file.
pub struct Agent {
    child: Child,
    log: PathBuf,
}

impl Agent {
    /// `fleetctl agent --config cfg`, its stderr into `log`.
    pub fn start(cfg: &Path, log: PathBuf) -> Agent {
        Agent::start_with(fleetctl(), cfg, log)
    }

    /// [`start`](Self::start) with another `fleetctl` command (e.g. a copy of the binary).
    pub fn start_with(mut fleetctl: std::process::Command, cfg: &Path, log: PathBuf) -> Agent {
        let out = fs::File::create(&log).unwrap();
        let child = fleetctl
            .arg("agent")
            .arg("--config")
            .arg(cfg)
            .stdout(Stdio::null())
            .stderr(out)
            .spawn()
            .unwrap();
        Agent { child, log }
    }

    /// Sends `sig` (`kill`'s spelling: `-TERM`, `-HUP`).
    pub fn signal(&self, sig: &str) {
        let ok = std::process::Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(ok.success());
    }

    /// SIGTERM, and waits (at most 30 s) for the agent to exit; its exit code.
    pub fn stop(mut self) -> i32 {
        self.signal("-TERM");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code().unwrap_or(-1);
            }
            assert!(
                Instant::now() < deadline,
                "agent did not stop:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Where it logs.
    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it logged so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (at most 30 s) until something accepts connections on 127.0.0.1:`port`.
    pub fn wait_for_port(&self, port: u16) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "the agent's peer cache did not answer on port {port}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host `name`'s agent with `peers: {listen: 127.0.0.1:<free port><peers_extra>}` (e.g.
/// `, discover: mdns`), `interval: 1h` and agent.yaml lines `extra`, answering when this
/// returns; and its port.
pub fn serving_agent(w: &World, name: &str, peers_extra: &str, extra: &str) -> (Agent, u16) {
    let host = w.host_dir(name);
    let port = free_port();
    let cfg = w.config(
        &host,
        &format!(
            "interval: 1h\nlock_timeout: 1s\n{extra}peers: {{listen: 127.0.0.1:{port}{peers_extra}}}\n"
        ),
    );
    let agent = Agent::start(&cfg, w.tmp.path().join(format!("agent-{name}.log")));
    agent.wait_for_port(port);
    (agent, port)
}
