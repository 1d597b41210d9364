//! The package a fleet installs pacfleet from: packaging/arch/PKGBUILD built by makepkg
//! (scripts/package.sh, once per test run, with the `release` profile: the packaging is under
//! test here, not fat LTO), signed into a private repository, and installed into a test root
//! by the real pacman at `SigLevel = Required`. Then what the README's first run does, with the
//! installed fleetctl: enroll, first reconcile. And the libalpm guard: the next pacman release
//! (another libalpm soname) is refused by pacman itself, and by a pass, while pacfleet needs
//! this one.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use pacfleet_support::synth::SynthPackage;

use crate::harness::{FleetRepo, HostDir, PkgRepo, TestCommand, run, stdout_ok, tempdir};

/// The test toolchain's pacman version, `major.minor` (what the PKGBUILD pins the package to).
fn pacman_minor() -> (u32, u32) {
    let out = Command::new(crate::harness::toolchain_bin("pacman"))
        .arg("--version")
        .output()
        .expect("run pacman --version");
    let text = stdout_ok("pacman --version", &out);
    let version = text
        .split("Pacman v")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect("a version in pacman --version");
    let mut parts = version
        .split('.')
        .map(|p| p.parse::<u32>().expect("a number"));
    (parts.next().unwrap(), parts.next().unwrap())
}

/// scripts/package.sh's package, built once per test run into `<target>/pkg-test`.
fn built_package() -> &'static Path {
    static PACKAGE: OnceLock<PathBuf> = OnceLock::new();
    PACKAGE.get_or_init(|| {
        let top = Path::new(env!("CARGO_MANIFEST_DIR"));
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| top.join("target"));
        let out = target.join("pkg-test");
        let _ = fs::remove_dir_all(&out);
        let output = Command::new(top.join("scripts/package.sh"))
            .arg(&out)
            .env("PACFLEET_CARGO_PROFILE", "release")
            .env("PACFLEET_CARGO_TARGET_DIR", target.join("pkg-build"))
            .output()
            .expect("run scripts/package.sh");
        let printed = stdout_ok("scripts/package.sh", &output);
        let path = PathBuf::from(printed.lines().last().expect("the package's path").trim());
        assert!(path.is_file(), "{} was not built", path.display());
        path
    })
}

/// What the package needs, as an Arch system has it: the toolchain's `pacman` (providing its
/// libalpm soname, as Arch's does) and the rest of its depends.
fn base_packages() -> Vec<SynthPackage> {
    let (major, minor) = pacman_minor();
    vec![
        SynthPackage::new("glibc", "2.42-1"),
        SynthPackage::new("gcc-libs", "15.2.1-1"),
        SynthPackage::new("git", "2.52.0-1"),
        SynthPackage::new("openssh", "10.2p1-1"),
        SynthPackage::new("pacman", format!("{major}.{minor}.0-1")).provides("lib:libalpm.so.16"),
    ]
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn the_package_installs_with_pacman_and_its_fleetctl_enrolls_and_reconciles() {
    let package = built_package();
    let (major, minor) = pacman_minor();
    let tmp = tempdir();
    let mut core = PkgRepo::new(tmp.path(), "core");
    core.add(&base_packages());
    core.add(&[SynthPackage::new("app", "1.0-1")]);
    // The operator's private repository, where the fleet gets pacfleet from.
    let mut acme = PkgRepo::new(tmp.path(), "acme");
    acme.add_file("pacfleet", package);
    let host = HostDir::new(tmp.path(), "ws-01", &[&core, &acme]);

    // Installed as README's Install says: from the private repository, signatures required.
    host.pacman_ok(&["-Sy", "pacfleet"]);
    let installed = host.installed();
    assert_eq!(
        installed.get("pacfleet").map(String::as_str),
        Some("0.1.0-1")
    );
    assert!(installed.contains_key("pacman"), "{installed:?}");
    let info = host.pacman_ok(&["-Qi", "pacfleet"]);
    let pin = format!("pacman>={major}.{minor}  pacman<{major}.{}", minor + 1);
    assert!(
        info.lines()
            .any(|l| l.starts_with("Depends On") && l.contains(&pin)),
        "the pacman release it was built against ({pin}):\n{info}"
    );
    let r = &host.root;
    let bin = r.join("usr/bin/fleetctl");
    assert_eq!(mode(&bin), 0o755);
    for unit in [
        "pacfleet-reconcile.service",
        "pacfleet-reconcile.timer",
        "pacfleet-agent.service",
    ] {
        let shipped = fs::read(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("systemd")
                .join(unit),
        );
        assert_eq!(
            fs::read(r.join("usr/lib/systemd/system").join(unit)).ok(),
            shipped.ok(),
            "{unit}"
        );
    }
    for f in [
        "usr/share/bash-completion/completions/fleetctl",
        "usr/share/zsh/site-functions/_fleetctl",
        "usr/share/fish/vendor_completions.d/fleetctl.fish",
        "usr/share/man/man1/fleetctl.1.gz",
        "usr/share/man/man1/fleetctl-reconcile.1.gz",
        "usr/share/doc/pacfleet/agent.yaml.example",
        "usr/share/doc/pacfleet/contract.md",
    ] {
        assert!(r.join(f).is_file(), "{f} is not in the package");
    }
    let bash =
        fs::read_to_string(r.join("usr/share/bash-completion/completions/fleetctl")).unwrap();
    assert!(
        bash.contains("enroll") && bash.contains("reconcile"),
        "{bash}"
    );
    assert_eq!(mode(&r.join("etc/pacfleet")), 0o755);
    assert_eq!(mode(&r.join("etc/pacfleet/keys")), 0o755);
    assert_eq!(mode(&r.join("etc/pacfleet/ssh")), 0o700);

    // The installed fleetctl runs (against the toolchain's libalpm of that soname) and does
    // the README's first run: enroll this host, then its first pass.
    let (code, out, err) = run(Command::new(&bin).arg("--version"));
    assert_eq!(code, 0, "{out}\n{err}");
    assert_eq!(
        out.trim(),
        format!("fleetctl {}", env!("CARGO_PKG_VERSION"))
    );
    let fleet = FleetRepo::new(tmp.path());
    fleet.commit(
        "initial fleet",
        &[
            ("fleet.yaml", "kind: Fleet\nname: acme\n"),
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [app, pacfleet]\n",
            ),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: ['ws-*']\npackage_sets: [base]\n",
            ),
        ],
    );
    let config = host.base.join("etc-pacfleet/agent.yaml");
    let (code, out, err) = run(Command::new(&bin)
        .arg("enroll")
        .args(host.enroll_args(&fleet.dir.display().to_string(), &fleet.public_key, &config))
        .args(["--fleet", "acme"])
        .env("LC_ALL", "C"));
    assert_eq!(code, 0, "enroll:\n{out}\n{err}");
    assert!(
        out.lines()
            .any(|l| l.contains("install") && l.contains(" app ")),
        "enroll prints the first pass's plan:\n{out}"
    );
    let (code, out, err) = run(Command::new(&bin)
        .arg("reconcile")
        .arg("--config")
        .arg(&config)
        .env("LC_ALL", "C"));
    assert_eq!(code, 0, "first reconcile:\n{out}\n{err}");
    assert!(host.installed().contains_key("app"));
    // pacfleet was installed by hand first; the pool wanting it changes nothing about it.
    assert!(host.explicit().contains("pacfleet"));
}

#[test]
fn a_pacman_with_another_libalpm_soname_is_refused_while_pacfleet_needs_this_one() {
    let package = built_package();
    let (major, minor) = pacman_minor();
    let tmp = tempdir();
    let mut core = PkgRepo::new(tmp.path(), "core");
    core.add(&base_packages());
    let mut acme = PkgRepo::new(tmp.path(), "acme");
    acme.add_file("pacfleet", package);
    let host = HostDir::new(tmp.path(), "ws-01", &[&core, &acme]);
    host.pacman_ok(&["-Sy", "pacfleet"]);

    // The next pacman release links a libalpm with another soname.
    let next = format!("{major}.{}.0-1", minor + 1);
    core.add(&[SynthPackage::new("pacman", next).provides("lib:libalpm.so.17")]);
    let pin = format!("pacman<{major}.{}", minor + 1);

    // pacman -Syu by hand: refused by pacman itself, naming pacfleet's dependency.
    let out = host.pacman(&["-Syu"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&format!("breaks dependency '{pin}' required by pacfleet")),
        "{text}"
    );
    assert_eq!(host.installed()["pacman"], format!("{major}.{minor}.0-1"));

    // A floating pool's pass (the same -Syu, through libalpm): refused too, nothing changed,
    // and the error names the package that holds it back.
    let fleet = FleetRepo::new(tmp.path());
    fleet.commit(
        "initial fleet",
        &[
            ("fleet.yaml", "kind: Fleet\nname: acme\n"),
            (
                "packages/base.yaml",
                "kind: PackageSet\nname: base\npackages: [pacfleet]\n",
            ),
            (
                "pools/ws.yaml",
                "kind: Pool\nname: ws\nhosts: ['ws-*']\npackage_sets: [base]\n",
            ),
        ],
    );
    let cfg = host.agent_yaml(
        &fleet.dir.display().to_string(),
        &fleet.public_key,
        "lock_timeout: 1s\n",
    );
    let before = host.local_db_snapshot();
    let (code, out, err) = TestCommand::reconcile(&cfg).run().parts();
    assert_eq!(code, 2, "{out}\n{err}");
    assert!(err.contains("pacfleet") && err.contains(&pin), "{err}");
    assert_eq!(host.local_db_snapshot(), before, "nothing was changed");
}
