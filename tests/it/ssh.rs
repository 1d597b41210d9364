//! Fetching over ssh the way the systemd units allow it: agent.yaml `ssh_key:` and
//! `ssh_known_hosts:` (under /etc/pacfleet, since the units set `ProtectHome=yes`), against a
//! real OpenSSH server on loopback. The server lets in only the configured deploy key, and
//! nothing is read from or written to `~/.ssh`; a known_hosts file holding another server's key
//! is refused (no trust on first use), as is a missing key, with messages that say how to make
//! them.

use std::fs;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::harness::{TestCommand, World, fleetctl, run};
use pacfleet_support::synth::SynthPackage;

/// `ssh-keygen -t ed25519 -N '' -f PATH -C COMMENT`.
pub(crate) fn keygen(path: &Path, comment: &str) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .expect("run ssh-keygen (Debian: openssh-client)");
    assert!(out.status.success(), "ssh-keygen: {out:?}");
}

/// An OpenSSH server on a free loopback port that lets the holder of `client_pub` in as the
/// user running the tests, killed on drop.
pub(crate) struct Sshd {
    child: Child,
    /// The port it listens on.
    pub(crate) port: u16,
    /// The server's public host key, as a known_hosts line for `[127.0.0.1]:port`.
    pub(crate) known_hosts_line: String,
}

impl Sshd {
    /// Start it with a new host key in `dir`, letting in the holder of `client_pub`.
    pub(crate) fn start(dir: &Path, client_pub: &Path) -> Sshd {
        let sshd = Path::new("/usr/sbin/sshd");
        assert!(
            sshd.exists(),
            "/usr/sbin/sshd is missing: install openssh-server (scripts/deps.sh does)"
        );
        fs::create_dir_all(dir).unwrap();
        let host_key = dir.join("host_ed25519");
        keygen(&host_key, "test-sshd");
        // sshd's privilege separation directory (the package makes it at boot only).
        fs::create_dir_all("/run/sshd").expect("create /run/sshd (run the tests as root)");
        let authorized = dir.join("authorized_keys");
        fs::copy(client_pub, &authorized).unwrap();
        for _ in 0..5 {
            let port = TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port();
            let config = dir.join("sshd_config");
            fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {}\nAuthorizedKeysFile {}\n\
                     PidFile {}\nPermitRootLogin prohibit-password\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n",
                    host_key.display(),
                    authorized.display(),
                    dir.join("sshd.pid").display(),
                ),
            )
            .unwrap();
            let mut child = Command::new(sshd)
                .arg("-D")
                .arg("-e")
                .arg("-f")
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .expect("spawn sshd");
            let deadline = Instant::now() + Duration::from_secs(15);
            loop {
                if TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let public = fs::read_to_string(host_key.with_extension("pub")).unwrap();
                    let mut fields = public.split_whitespace();
                    let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
                    return Sshd {
                        child,
                        port,
                        known_hosts_line: format!("[127.0.0.1]:{port} {kind} {key}\n"),
                    };
                }
                if let Ok(Some(_)) = child.try_wait() {
                    break; // Port taken: try another.
                }
                assert!(Instant::now() < deadline, "sshd did not listen on {port}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("could not start sshd");
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shared world (a repository with `app`, a signed fleet installing it on `ws-*`, host
/// `ws-01`), served over ssh from a bare mirror.
struct SshWorld {
    world: World,
    sshd: Sshd,
    bare: PathBuf,
    /// `/etc/pacfleet/ssh` of the host: the deploy key and known_hosts.
    ssh_dir: PathBuf,
    /// The host's HOME: empty, as `ProtectHome=yes` makes it.
    home: PathBuf,
}

fn world() -> SshWorld {
    let world = World::builder()
        .packages(&[SynthPackage::new("app", "1.0-1")])
        .shared()
        .desired(&["app"])
        .pool("kind: Pool\nname: ws\nhosts: ['ws-*']\npackage_sets: [base]\n")
        .hosts(&["ws-01"])
        .build();
    let tmp = world.tmp.path();
    let bare = tmp.join("served/fleet.git");
    world
        .fleet()
        .git(&["clone", "-q", "--mirror", ".", &bare.display().to_string()]);
    let ssh_dir = tmp.join("etc-pacfleet/ssh");
    fs::create_dir_all(&ssh_dir).unwrap();
    keygen(&ssh_dir.join("id_ed25519"), "ws-01 deploy key");
    let sshd = Sshd::start(&tmp.join("sshd"), &ssh_dir.join("id_ed25519.pub"));
    fs::write(ssh_dir.join("known_hosts"), &sshd.known_hosts_line).unwrap();
    let home = tmp.join("home");
    fs::create_dir_all(&home).unwrap();
    SshWorld {
        world,
        sshd,
        bare,
        ssh_dir,
        home,
    }
}

impl SshWorld {
    /// agent.yaml for the host, fetching over ssh, with `extra` fields.
    fn config(&self, extra: &str) -> PathBuf {
        self.world.hosts[0].agent_yaml(&self.url(), &self.world.fleet().public_key, extra)
    }

    fn url(&self) -> String {
        format!(
            "ssh://root@127.0.0.1:{}{}",
            self.sshd.port,
            self.bare.display()
        )
    }

    /// `fleetctl plan --config agent.yaml` with an empty HOME and no ssh agent (ssh itself reads
    /// `~/.ssh` of the passwd entry, not `$HOME`; `IdentitiesOnly` and the known_hosts options
    /// are what keep it to the configured files).
    fn plan(&self, cfg: &Path) -> (i32, String, String) {
        TestCommand::plan(cfg)
            .env("HOME", &self.home)
            .env_remove("SSH_AUTH_SOCK")
            .run()
            .parts()
    }
}

#[test]
fn fetches_with_the_configured_key_and_known_hosts_only() {
    let w = world();
    let key = w.ssh_dir.join("id_ed25519");
    let cfg = w.config(&format!("ssh_key: {}\n", key.display()));
    let (code, out, err) = w.plan(&cfg);
    assert_eq!(code, 1, "the plan installs app:\n{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("install") && l.contains("app")),
        "{out}"
    );
    assert!(
        fs::read_dir(&w.home).unwrap().next().is_none(),
        "nothing is written into HOME"
    );
    // ssh's own ~/.ssh (from the passwd entry) did not learn this server either.
    // SAFETY: getpwuid returns a pointer to a static passwd entry (checked for null), read at
    // once in this thread before anything else could call getpw* again.
    let pw_home = unsafe {
        let pw = libc::getpwuid(libc::getuid());
        assert!(!pw.is_null());
        PathBuf::from(
            std::ffi::CStr::from_ptr((*pw).pw_dir)
                .to_string_lossy()
                .into_owned(),
        )
    };
    let learnt = format!("[127.0.0.1]:{}", w.sshd.port);
    for name in ["known_hosts", "known_hosts2"] {
        let text = fs::read_to_string(pw_home.join(".ssh").join(name)).unwrap_or_default();
        assert!(!text.contains(&learnt), "{name} learnt the test server");
    }

    // A second pass fetches again over ssh (the mirror exists now): still fine.
    let (code, out, err) = w.plan(&cfg);
    assert_eq!(code, 1, "{out}\n{err}");
}

#[test]
fn a_server_key_not_in_known_hosts_is_refused() {
    let w = world();
    // known_hosts holds some other server's key for this address: ssh refuses, nothing is
    // fetched, and nothing is learnt either (StrictHostKeyChecking=yes, no TOFU).
    let other = w.world.tmp.path().join("other_host_key");
    keygen(&other, "other");
    let public = fs::read_to_string(other.with_extension("pub")).unwrap();
    let mut fields = public.split_whitespace();
    let (kind, key) = (fields.next().unwrap(), fields.next().unwrap());
    let known = w.world.tmp.path().join("wrong_known_hosts");
    let wrong = format!("[127.0.0.1]:{} {kind} {key}\n", w.sshd.port);
    fs::write(&known, &wrong).unwrap();
    let cfg = w.config(&format!(
        "ssh_key: {}\nssh_known_hosts: {}\n",
        w.ssh_dir.join("id_ed25519").display(),
        known.display()
    ));
    let (code, out, err) = w.plan(&cfg);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.to_lowercase().contains("host key"),
        "ssh's reason is shown: {err}"
    );
    assert_eq!(
        fs::read_to_string(&known).unwrap(),
        wrong,
        "known_hosts unchanged"
    );
    assert!(
        !w.world.hosts[0]
            .state_dir
            .join("fleet.git/refs/remotes/origin/main")
            .exists(),
        "nothing was fetched"
    );

    // An empty known_hosts: refused the same way, not accepted on first use.
    fs::write(&known, "").unwrap();
    let (code, _, err) = w.plan(&cfg);
    assert_eq!(code, 2, "{err}");
    assert_eq!(fs::read_to_string(&known).unwrap(), "", "no key was learnt");
}

#[test]
fn a_missing_key_or_known_hosts_file_says_how_to_make_it() {
    let w = world();
    let missing = w.ssh_dir.join("nope");
    let cfg = w.config(&format!("ssh_key: {}\n", missing.display()));
    let (code, out, err) = w.plan(&cfg);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("ssh-keygen -t ed25519"), "{err}");
    assert!(err.contains(&missing.display().to_string()), "{err}");

    let cfg = w.config(&format!(
        "ssh_key: {}\nssh_known_hosts: {}\n",
        w.ssh_dir.join("id_ed25519").display(),
        missing.display()
    ));
    let (code, out, err) = w.plan(&cfg);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("ssh-keyscan"), "{err}");
}

#[test]
fn ssh_fields_that_would_do_nothing_are_refused() {
    let w = world();
    let cfg = w
        .world
        .config(&w.world.hosts[0], "ssh_key: /etc/pacfleet/ssh/id_ed25519\n");
    let (code, out, err) = w.plan(&cfg);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(
        err.contains("`ssh_key`") && err.contains("reached over ssh"),
        "{err}"
    );
    let cfg = w.config("ssh_known_hosts: /etc/pacfleet/ssh/known_hosts\n");
    let (code, out, err) = w.plan(&cfg);
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("only with `ssh_key:`"), "{err}");
}

#[test]
fn enroll_over_ssh_writes_the_key_into_agent_yaml_and_plans() {
    let w = world();
    let config = w.world.tmp.path().join("etc-pacfleet/agent.yaml");
    let key = w.ssh_dir.join("id_ed25519");
    let (code, out, err) = run(fleetctl()
        .arg("enroll")
        .args(w.world.hosts[0].enroll_args(&w.url(), &w.world.fleet().public_key, &config))
        .arg("--ssh-key")
        .arg(&key)
        .env("HOME", &w.home)
        .env_remove("SSH_AUTH_SOCK"));
    assert_eq!(code, 0, "{out}\n{err}");
    let text = fs::read_to_string(&config).unwrap();
    assert!(
        text.contains(&format!("ssh_key: {}", key.display())),
        "{text}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("install") && l.contains(" app ")),
        "the first pass's plan is printed: {out}"
    );
    // The written agent.yaml fetches over ssh as it is.
    let (code, out, err) = w.plan(&config);
    assert_eq!(code, 1, "{out}\n{err}");
}
