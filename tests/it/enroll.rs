//! `fleetctl enroll` through the real binary: a fresh host enrolled against a signed fleet
//! then plans and reconciles with the agent.yaml it wrote, and the Host manifest it printed
//! validates in the fleet; a second run changes nothing; a different existing agent.yaml is
//! refused without `--force`; an unsigned or otherwise-signed repository is refused with exit
//! 3, an unreachable one and a bad key file with exit 2, and none of those write anything.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pacfleet_support::synth::SynthPackage;

use crate::harness::{TestCommand, World, fleetctl, keypair, run};

/// A package repository with `app` (and its dependency), a fleet repository whose first
/// commit (signed with the operator key unless `signed` is false) installs it, and a fresh
/// host `ws-01` with no agent.yaml yet.
struct Enrollee {
    world: World,
    /// Where enroll writes agent.yaml: `<host>/etc/pacfleet/agent.yaml` (the directory does
    /// not exist yet).
    config: PathBuf,
}

fn world(signed: bool) -> Enrollee {
    let world = World::builder()
        .packages(&[
            SynthPackage::new("app", "1.0-1").depends("libfoo"),
            SynthPackage::new("libfoo", "1.0-1"),
        ])
        .shared()
        .desired(&["app"])
        .signed(signed)
        .hosts(&["ws-01"])
        .build();
    let config = world.hosts[0].base.join("etc/pacfleet/agent.yaml");
    Enrollee { world, config }
}

impl Enrollee {
    /// `fleetctl enroll` for the host against `repo`, trusting `key`, with `extra` arguments.
    fn enroll_with(&self, repo: &str, key: &Path, extra: &[&str]) -> (i32, String, String) {
        let mut cmd: Command = fleetctl();
        cmd.arg("enroll")
            .args(self.world.hosts[0].enroll_args(repo, key, &self.config))
            .args(extra);
        run(&mut cmd)
    }

    fn enroll(&self, extra: &[&str]) -> (i32, String, String) {
        self.enroll_with(
            &self.world.fleet_url(),
            &self.world.fleet().public_key,
            extra,
        )
    }

    fn host_key(&self) -> PathBuf {
        self.config.with_file_name("host.key")
    }

    fn host_pub(&self) -> PathBuf {
        self.config.with_file_name("host.pub")
    }

    /// Nothing enroll writes is there.
    fn assert_nothing_written(&self) {
        for p in [self.config.clone(), self.host_key(), self.host_pub()] {
            assert!(!p.exists(), "{} was written", p.display());
        }
    }
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").permissions().mode() & 0o7777
}

/// The `kind: Host` manifest in enroll's output: from its first line to the blank line.
fn host_manifest(stdout: &str) -> String {
    let start = stdout
        .find("kind: Host")
        .expect("a Host manifest in the output");
    let rest = &stdout[start..];
    let end = rest.find("\n\n").map_or(rest.len(), |e| e + 1);
    rest[..end].to_owned()
}

#[test]
fn a_fresh_host_enrolls_plans_reconciles_and_its_manifest_validates() {
    let w = world(true);
    let (code, out, err) = w.enroll(&[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    // agent.yaml, checked, 0644, in a directory made 0700; the key pair 0600/0644.
    assert_eq!(mode(&w.config), 0o644);
    assert_eq!(mode(w.config.parent().unwrap()), 0o700);
    assert_eq!(mode(&w.host_key()), 0o600);
    assert_eq!(mode(&w.host_pub()), 0o644);
    let cfg = pacfleet::config::AgentConfig::load(&w.config).expect("agent.yaml loads");
    assert_eq!(cfg.trusted_keys, vec![w.world.fleet().public_key.clone()]);
    assert_eq!(cfg.host_key, w.host_key());
    assert_eq!(cfg.hostname, "ws-01");
    assert_eq!(cfg.state_dir, w.world.hosts[0].state_dir);
    let public = pacfleet::trust::load_key(&w.host_pub()).expect("host.pub is a key");
    assert!(
        out.contains("systemctl enable --now pacfleet-reconcile.timer"),
        "{out}"
    );
    assert!(out.contains("fleetctl plan"), "{out}");
    // The first pass's plan, as `fleetctl plan` prints it: app and its dependency.
    assert!(
        out.contains("The first pass, as the fleet stands now:"),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("install") && l.contains(" app ")),
        "{out}"
    );
    assert!(out.contains("host ws-01 · pool"), "{out}");
    let manifest = host_manifest(&out);
    // The README's fifty-host loop cuts the manifest out of the output with sed.
    let mut sed = Command::new("sed")
        .args(["-n", "/^kind: Host$/,/^key: /p"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("sed");
    use std::io::Write as _;
    sed.stdin.take().unwrap().write_all(out.as_bytes()).unwrap();
    let cut = sed.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&cut.stdout), manifest);
    assert_eq!(
        manifest,
        format!("kind: Host\nname: ws-01\nkey: {}\n", public.to_base64())
    );

    // The agent.yaml works as it is.
    let (code, out, err) = TestCommand::plan(&w.config).run().parts();
    assert!(
        code == 0 || code == 1,
        "plan: {code}\nstdout:\n{out}\nstderr:\n{err}"
    );
    let (code, out, err) = TestCommand::reconcile(&w.config).run().parts();
    assert_eq!(code, 0, "reconcile\nstdout:\n{out}\nstderr:\n{err}");
    let installed = w.world.hosts[0].installed();
    assert!(installed.contains_key("app"), "{installed:?}");
    assert!(installed.contains_key("libfoo"), "{installed:?}");

    // The printed manifest, committed, validates.
    w.world
        .fleet()
        .commit("enroll ws-01", &[("hosts/ws-01.yaml", manifest.as_str())]);
    let (code, out, err) = run(fleetctl().arg("validate").arg(&w.world.fleet().dir));
    assert_eq!(code, 0, "validate\nstdout:\n{out}\nstderr:\n{err}");
    // A damaged key there does not.
    w.world.fleet().write(&[(
        "hosts/ws-01.yaml",
        "kind: Host\nname: ws-01\nkey: RWnotakey\n",
    )]);
    let (code, out, err) = run(fleetctl().arg("validate").arg(&w.world.fleet().dir));
    assert_eq!(code, 2, "validate\nstdout:\n{out}\nstderr:\n{err}");
    let text = format!("{out}{err}");
    assert!(text.contains("hosts/ws-01.yaml:3:"), "{text}");
    assert!(text.contains("`key:` of host ws-01"), "{text}");
}

#[test]
fn enrolling_again_changes_nothing_and_a_different_config_needs_force() {
    let w = world(true);
    let (code, out, err) = w.enroll(&[]);
    assert_eq!(code, 0, "stdout:\n{out}\nstderr:\n{err}");
    let read = |p: PathBuf| fs::read(p).expect("read");
    let (config, key, public) = (
        read(w.config.clone()),
        read(w.host_key()),
        read(w.host_pub()),
    );

    let (code, out, err) = w.enroll(&[]);
    assert_eq!(code, 0, "again\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("unchanged"), "{out}");
    assert!(out.contains("kept"), "{out}");
    assert_eq!(read(w.config.clone()), config);
    assert_eq!(read(w.host_key()), key);
    assert_eq!(read(w.host_pub()), public);

    // Other arguments: refused, naming the file and the field.
    let (code, out, err) = w.enroll(&["--fleet", "acme"]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&w.config.display().to_string()), "{err}");
    assert!(err.contains("`fleet`"), "{err}");
    assert!(err.contains("--force"), "{err}");
    assert_eq!(read(w.config.clone()), config);

    let (code, out, err) = w.enroll(&["--fleet", "acme", "--force"]);
    assert_eq!(code, 0, "forced\nstdout:\n{out}\nstderr:\n{err}");
    let now = fs::read_to_string(&w.config).expect("read");
    assert!(now.contains("fleet: acme"), "{now}");
    // A status repository for the host's reports: named in agent.yaml, which loads.
    let status = "git://git.example.com/acme/fleet-status.git";
    let (code, out, err) = w.enroll(&["--fleet", "acme", "--status-repo", status, "--force"]);
    assert_eq!(code, 0, "status repo\nstdout:\n{out}\nstderr:\n{err}");
    let now = fs::read_to_string(&w.config).expect("read");
    assert!(now.contains(&format!("status_repo: {status}")), "{now}");
    let loaded = pacfleet::config::AgentConfig::load(&w.config).expect("agent.yaml loads");
    assert_eq!(loaded.status_repo.as_deref(), Some(status));
    assert_eq!(read(w.host_key()), key, "the host key is never replaced");
    assert_eq!(read(w.host_pub()), public);
}

#[test]
fn an_unsigned_repository_is_refused_with_exit_3() {
    let w = world(false);
    let (code, out, err) = w.enroll(&[]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("refusing to enroll"), "{err}");
    assert!(err.contains("is not signed"), "{err}");
    w.assert_nothing_written();
}

#[test]
fn a_repository_signed_by_another_key_is_refused_with_exit_3() {
    let w = world(true);
    let (other, _) = keypair(&w.world.tmp.path().join("keys"), "other");
    let (code, out, err) = w.enroll_with(&w.world.fleet_url(), &other, &[]);
    assert_eq!(code, 3, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains("refusing to enroll"), "{err}");
    assert!(err.contains("does not trust"), "{err}");
    w.assert_nothing_written();
}

#[test]
fn an_unreachable_repository_is_exit_2_naming_the_url() {
    let w = world(true);
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").port()
    };
    let url = format!("git://127.0.0.1:{port}/x");
    let (code, out, err) = w.enroll_with(&url, &w.world.fleet().public_key, &[]);
    assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
    assert!(err.contains(&url), "{err}");
    w.assert_nothing_written();
}

#[test]
fn a_bad_key_file_is_exit_2_naming_it() {
    let w = world(true);
    let bad = w.world.tmp.path().join("keys/bad.pub");
    fs::write(&bad, "not a key\n").expect("write");
    let missing = w.world.tmp.path().join("keys/missing.pub");
    for key in [&bad, &missing] {
        let (code, out, err) = w.enroll_with(&w.world.fleet_url(), key, &[]);
        assert_eq!(code, 2, "stdout:\n{out}\nstderr:\n{err}");
        assert!(err.contains(&key.display().to_string()), "{err}");
        w.assert_nothing_written();
    }
}
