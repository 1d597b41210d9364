//! `pacfleet_support::synth` checked against the real tools: packages and repositories it writes must
//! install with pacman and read exactly like repo-add's.

use std::collections::BTreeMap;
use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use pacfleet_support::synth::{self, SynthError, SynthPackage};

use crate::harness::{
    HostDir, Packager, PkgRepo, archive_package, stdout_ok, tempdir, toolchain_bin,
};

fn libfoo(version: &str) -> SynthPackage {
    SynthPackage::new("libfoo", version)
        .description("A   library  with\tspaced description")
        .provides("foo-abi=1")
        .file("usr/lib/libfoo.so.1", format!("libfoo {version}\n"))
}

fn app(version: &str) -> SynthPackage {
    SynthPackage::new("app", version)
        .depends("libfoo>=1.0")
        .depends("foo-abi")
        .conflicts("oldapp")
        .provides("app-api=2")
        .file("usr/bin/app", format!("#!/bin/sh\necho app {version}\n"))
        .file("etc/app.conf", format!("# app {version}\nverbose = no\n"))
        .backup("etc/app.conf")
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

#[test]
fn pacman_installs_upgrades_and_downgrades_synthetic_packages() {
    let tmp = tempdir();
    let mut main = PkgRepo::new(tmp.path(), "main");
    main.add(&[
        libfoo("1.1-1"),
        app("2.0-1"),
        SynthPackage::new("unrelated", "1:0.1-1"),
    ]);

    // A second repo, built elsewhere and handed to write_repo, holding an older app.
    let built = tmp.path().join("built-old");
    let old_app = synth::build_package(&app("1.5-1"), &built).unwrap();
    Packager::default_key().sign(&old_app);
    let old_dir = tmp.path().join("repos/old");
    let db = synth::write_repo(&old_dir, "old", &[&old_app]).unwrap();
    assert_eq!(db, old_dir.join("old.db"));
    assert!(
        old_dir.join("app-1.5-1-any.pkg.tar.zst").is_file(),
        "package copied into repo"
    );
    assert_eq!(
        fs::read(old_dir.join("app-1.5-1-any.pkg.tar.zst.sig")).unwrap(),
        fs::read(synth::signature_path(&old_app)).unwrap(),
        "signature copied into repo"
    );
    let old = PkgRepo::at(&old_dir, "old");

    // And the oldest one only in the archive.
    let archive = tmp.path().join("archive");
    let archived = archive_package(&archive, &app("1.0-1"));
    assert_eq!(
        archived,
        archive.join("packages/a/app/app-1.0-1-any.pkg.tar.zst")
    );
    assert!(
        archive
            .join("packages/a/app/app-1.0-1-any.pkg.tar.zst.sig")
            .is_file()
    );

    let host = HostDir::new(tmp.path(), "h1", &[&main, &old]);
    host.pacman_ok(&["-Sy"]);
    host.pacman_ok(&["-S", "app"]);

    // The first repo wins; the dependency comes along, installed as a dependency.
    let installed = host.installed();
    assert_eq!(
        installed,
        BTreeMap::from([
            ("app".into(), "2.0-1".into()),
            ("libfoo".into(), "1.1-1".into())
        ])
    );
    assert_eq!(host.explicit(), ["app".to_owned()].into());
    assert_eq!(host.dependencies(), ["libfoo".to_owned()].into());

    // Files on disk, with their modes.
    assert_eq!(read(&host.path("usr/share/app/VERSION")), "2.0-1\n");
    assert_eq!(read(&host.path("usr/lib/libfoo.so.1")), "libfoo 1.1-1\n");
    assert_eq!(
        read(&host.path("etc/app.conf")),
        "# app 2.0-1\nverbose = no\n"
    );
    let mode = |p: &str| fs::metadata(host.path(p)).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode("usr/bin/app"), 0o755);
    assert_eq!(mode("etc/app.conf"), 0o644);
    assert_eq!(mode("usr/share/app"), 0o755);

    // The database is consistent, and files match the packages' .MTREE.
    let dk = host.pacman_ok(&["-Dk"]);
    assert!(dk.contains("No database errors have been found!"), "{dk}");
    let qkk = host.pacman_ok(&["-Qkk"]);
    assert!(qkk.contains("app: 8 total files, 0 altered files"), "{qkk}");
    let qii = host.pacman_ok(&["-Qii", "app"]);
    assert!(
        qii.contains("Install Reason  : Explicitly installed"),
        "{qii}"
    );
    assert!(qii.contains("etc/app.conf [unmodified]"), "{qii}");
    assert!(
        qii.contains("Depends On      : libfoo>=1.0  foo-abi"),
        "{qii}"
    );
    assert!(qii.contains("Provides        : app-api=2"), "{qii}");
    assert!(qii.contains("Conflicts With  : oldapp"), "{qii}");

    // Explicitly from the second repo: an older version.
    host.pacman_ok(&["-S", "old/app"]);
    assert_eq!(host.installed()["app"], "1.5-1");
    assert_eq!(read(&host.path("usr/share/app/VERSION")), "1.5-1\n");

    // A locally edited config survives an -U downgrade from the archive; the package's
    // version lands next to it as .pacnew.
    fs::write(host.path("etc/app.conf"), "verbose = yes\n").unwrap();
    host.pacman_ok(&["-U", archived.to_str().unwrap()]);
    assert_eq!(host.installed()["app"], "1.0-1");
    assert_eq!(host.explicit(), ["app".to_owned()].into());
    assert_eq!(read(&host.path("usr/share/app/VERSION")), "1.0-1\n");
    assert_eq!(read(&host.path("etc/app.conf")), "verbose = yes\n");
    assert_eq!(
        read(&host.path("etc/app.conf.pacnew")),
        "# app 1.0-1\nverbose = no\n"
    );

    // A new version published to the repo is an upgrade for -Su.
    main.add(&[libfoo("1.2-1")]);
    host.pacman_ok(&["-Syu"]);
    let installed = host.installed();
    assert_eq!(installed["libfoo"], "1.2-1");
    assert_eq!(
        installed["app"], "2.0-1",
        "-Su also moves app to the first repo's version"
    );

    // -R removes files.
    host.pacman_ok(&["-Rs", "app"]);
    assert!(host.installed().is_empty());
    assert!(!host.path("usr/bin/app").exists());
    assert!(!host.path("usr/lib/libfoo.so.1").exists());
}

/// Regular files of a gzip'ed (or, for `.zst`, zstd'ed) tar archive, path → contents, plus its
/// directory entries.
fn tar_entries(path: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    let file = fs::File::open(path).unwrap();
    let stream: Box<dyn Read> = if path.extension().is_some_and(|e| e == "zst") {
        Box::new(zstd::stream::read::Decoder::new(file).unwrap())
    } else {
        Box::new(flate2::read::GzDecoder::new(file))
    };
    let mut archive = tar::Archive::new(stream);
    let mut files = BTreeMap::new();
    let mut dirs = Vec::new();
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = String::from_utf8(entry.path_bytes().into_owned()).unwrap();
        if entry.header().entry_type().is_dir() {
            dirs.push(name);
        } else {
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(name, data);
        }
    }
    dirs.sort();
    (files, dirs)
}

#[test]
fn write_repo_matches_repo_add() {
    toolchain_bin("bsdtar"); // repo-add's dependency: fail clearly if it is missing.
    let tmp = tempdir();
    let built = tmp.path().join("built");
    let pkgs = [
        libfoo("1.1-1"),
        app("1:2.0-3"),
        SynthPackage::new("tool-x", "0.9.1-2")
            .arch("x86_64")
            .depends("libfoo")
            .file("usr/share/tool-x/data/deep/a b.txt", "spaces in names\n"),
    ];
    let files: Vec<PathBuf> = pkgs
        .iter()
        .map(|p| synth::build_package(p, &built).unwrap())
        .collect();
    // Signed as makepkg --sign signs, all but app: the database has %PGPSIG% for those only.
    for f in &files {
        if !f.to_string_lossy().contains("/app-") {
            Packager::default_key().sign(f);
        }
    }

    let ours_dir = tmp.path().join("repos/ours");
    synth::write_repo(&ours_dir, "ours", &files).unwrap();

    let theirs_dir = tmp.path().join("repos/theirs");
    fs::create_dir_all(&theirs_dir).unwrap();
    let mut copies = Vec::new();
    for f in &files {
        let dest = theirs_dir.join(f.file_name().unwrap());
        fs::copy(f, &dest).unwrap();
        let sig = synth::signature_path(f);
        if sig.is_file() {
            fs::copy(&sig, synth::signature_path(&dest)).unwrap();
        }
        copies.push(dest);
    }
    let out = Command::new(toolchain_bin("repo-add"))
        .arg("--nocolor")
        .arg("--include-sigs")
        .arg(theirs_dir.join("theirs.db.tar.gz"))
        .args(&copies)
        .env("LC_ALL", "C")
        .output()
        .unwrap();
    stdout_ok("repo-add", &out);

    // The same entries with the same contents, in both the db and the files db.
    for kind in ["db", "files"] {
        let ours = tar_entries(&ours_dir.join(format!("ours.{kind}.tar.gz")));
        let theirs = tar_entries(&theirs_dir.join(format!("theirs.{kind}.tar.gz")));
        assert_eq!(ours.1, theirs.1, "{kind}: directory entries");
        assert_eq!(
            ours.0.keys().collect::<Vec<_>>(),
            theirs.0.keys().collect::<Vec<_>>()
        );
        for (name, data) in &ours.0 {
            assert_eq!(
                String::from_utf8_lossy(data),
                String::from_utf8_lossy(&theirs.0[name]),
                "{kind}: {name}"
            );
        }
    }
    let desc = |name: &str| {
        String::from_utf8(tar_entries(&ours_dir.join("ours.db.tar.gz")).0[name].clone()).unwrap()
    };
    assert!(desc("libfoo-1.1-1/desc").contains("%PGPSIG%\n"));
    assert!(!desc("app-1:2.0-3/desc").contains("%PGPSIG%"));
    assert!(ours_dir.join("libfoo-1.1-1-any.pkg.tar.zst.sig").is_file());
    assert!(!ours_dir.join("app-1:2.0-3-any.pkg.tar.zst.sig").exists());

    // The plain .db is a copy, not a symlink.
    let db_meta = fs::symlink_metadata(ours_dir.join("ours.db")).unwrap();
    assert!(db_meta.file_type().is_file());
    assert_eq!(
        fs::read(ours_dir.join("ours.db")).unwrap(),
        fs::read(ours_dir.join("ours.db.tar.gz")).unwrap()
    );

    // And pacman reads the same metadata from both.
    let ours = PkgRepo::at(&ours_dir, "ours");
    let theirs = PkgRepo::at(&theirs_dir, "theirs");
    let host = HostDir::new(tmp.path(), "cmp", &[&ours, &theirs]);
    host.pacman_ok(&["-Sy"]);
    // The signature is in the database (and pacman checks it from there).
    let si = host.pacman_ok(&["-Sii", "ours/libfoo"]);
    let key_id = &Packager::default_key().fingerprint()[24..];
    assert!(
        si.contains(&format!("Signatures      : {key_id}\n")),
        "{si}"
    );
    host.pacman_ok(&["-Fy"]);
    let strip_repo = |text: String, repo: &str| {
        text.lines()
            .filter(|l| !l.starts_with("Repository"))
            .map(|l| l.replace(repo, "REPO"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let listing = host.pacman_ok(&["-Sl", "ours"]);
    assert_eq!(
        strip_repo(listing.clone(), "ours"),
        strip_repo(host.pacman_ok(&["-Sl", "theirs"]), "theirs")
    );
    assert_eq!(listing.lines().count(), 3, "{listing}");
    for pkg in &pkgs {
        let si = |repo: &str| host.pacman_ok(&["-Sii", &format!("{repo}/{}", pkg.name)]);
        let (a, b) = (si("ours"), si("theirs"));
        assert!(
            a.contains(&format!("Version         : {}", pkg.version)),
            "{a}"
        );
        assert_eq!(
            strip_repo(a, "ours"),
            strip_repo(b, "theirs"),
            "{}",
            pkg.name
        );
        let fl = |repo: &str| host.pacman_ok(&["-Fl", &format!("{repo}/{}", pkg.name)]);
        let (a, b) = (fl("ours"), fl("theirs"));
        assert!(!a.is_empty());
        assert_eq!(a, b, "{}", pkg.name);
    }
    let si = host.pacman_ok(&["-Si", "ours/libfoo"]);
    assert!(
        si.contains("Description     : A library with spaced description"),
        "{si}"
    );
    assert!(si.contains("Installed Size  : 19.00 B"), "{si}");

    // Installing from our repo records what the package says.
    host.pacman_ok(&["-S", "ours/tool-x"]);
    assert!(host.path("usr/share/tool-x/data/deep/a b.txt").is_file());
    let qkk = host.pacman_ok(&["-Qkk", "tool-x"]);
    assert!(qkk.contains("0 altered files"), "{qkk}");
}

#[test]
fn builds_are_reproducible() {
    let tmp = tempdir();
    let pkg = app("1:2.0-3");
    let a = synth::build_package(&pkg, &tmp.path().join("a")).unwrap();
    let b = synth::build_package(&pkg, &tmp.path().join("b")).unwrap();
    assert_eq!(a.file_name().unwrap(), "app-1:2.0-3-any.pkg.tar.zst");
    assert_eq!(fs::read(&a).unwrap(), fs::read(&b).unwrap());
    // zstd, as makepkg's default PKGEXT; zstd(1) reads it (with its checksum).
    assert_eq!(fs::read(&a).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    let out = Command::new("zstd").arg("-tq").arg(&a).output().unwrap();
    stdout_ok("zstd -t", &out);
    // Signatures too: ed25519 and a fixed signing date.
    let packager = Packager::default_key();
    assert_eq!(
        fs::read(packager.sign(&a)).unwrap(),
        fs::read(packager.sign(&b)).unwrap()
    );
    // A new build at the same path drops the old signature, which does not sign it.
    synth::build_package(&pkg, &tmp.path().join("b")).unwrap();
    assert!(!synth::signature_path(&b).exists());
    packager.sign(&b);
    assert_eq!(
        synth::sha256_file(&a).unwrap(),
        synth::sha256_file(&b).unwrap()
    );

    // A different payload is a different package.
    let c = synth::build_package(
        &pkg.clone().file("etc/app.conf", "x"),
        &tmp.path().join("c"),
    )
    .unwrap();
    assert_ne!(fs::read(&a).unwrap(), fs::read(&c).unwrap());

    // Repositories too, wherever they are written.
    let ra = synth::write_repo(&tmp.path().join("ra"), "r", &[&a]).unwrap();
    let rb = synth::write_repo(&tmp.path().join("rb"), "r", &[&b]).unwrap();
    assert_eq!(fs::read(&ra).unwrap(), fs::read(&rb).unwrap());

    // Metadata entries come first, as pacman expects, and everything is root-owned.
    let file = fs::File::open(&a).unwrap();
    let mut archive = tar::Archive::new(zstd::stream::read::Decoder::new(file).unwrap());
    let names: Vec<String> = archive
        .entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            assert_eq!(
                (e.header().uid().unwrap(), e.header().gid().unwrap()),
                (0, 0)
            );
            String::from_utf8(e.path_bytes().into_owned()).unwrap()
        })
        .collect();
    assert_eq!(
        names,
        [
            ".PKGINFO",
            ".MTREE",
            "etc/",
            "etc/app.conf",
            "usr/",
            "usr/bin/",
            "usr/bin/app",
            "usr/share/",
            "usr/share/app/",
            "usr/share/app/VERSION"
        ]
    );
}

#[test]
fn sha256_matches_sha256sum() {
    let tmp = tempdir();
    let path = tmp.path().join("f");
    fs::write(&path, "hello\n").unwrap();
    assert_eq!(
        synth::sha256_file(&path).unwrap(),
        "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03"
    );
    assert!(matches!(
        synth::sha256_file(&tmp.path().join("missing")),
        Err(SynthError::Io { .. })
    ));
}

#[test]
fn one_version_per_name_in_a_repo() {
    let tmp = tempdir();
    let v1 = synth::build_package(&app("1.0-1"), &tmp.path().join("v1")).unwrap();
    let v2 = synth::build_package(&app("2.0-1"), &tmp.path().join("v2")).unwrap();
    let repo = tmp.path().join("repo");
    let err = synth::write_repo(&repo, "main", &[&v1, &v2]).unwrap_err();
    assert!(
        matches!(&err, SynthError::DuplicatePackage { name, first, second, .. }
            if name == "app" && first == "1.0-1" && second == "2.0-1"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"app\"") && msg.contains("1.0-1") && msg.contains("2.0-1"),
        "{msg}"
    );
    assert!(!repo.exists(), "nothing written on error");

    // Not a package at all.
    let junk = tmp.path().join("junk.pkg.tar.gz");
    fs::write(&junk, "not gzip").unwrap();
    let err = synth::write_repo(&repo, "main", &[&junk]).unwrap_err();
    assert!(matches!(err, SynthError::BadPackageFile { .. }), "{err:?}");
}

#[test]
fn empty_repo_syncs() {
    let tmp = tempdir();
    let repo = PkgRepo::new(tmp.path(), "empty");
    let host = HostDir::new(tmp.path(), "h", &[&repo]);
    host.pacman_ok(&["-Sy"]);
    assert_eq!(host.pacman_ok(&["-Sl", "empty"]), "");
    assert!(host.installed().is_empty());
    assert!(host.explicit().is_empty());
}

#[test]
fn hosts_are_set_up_as_arch_ships_them() {
    let tmp = tempdir();
    let repo = PkgRepo::new(tmp.path(), "main");
    let host = HostDir::new(tmp.path(), "h", &[&repo]);
    let conf = read(&host.conf);
    assert!(
        conf.contains("\nSigLevel = Required DatabaseOptional\nLocalFileSigLevel = Optional\n"),
        "{conf}"
    );
    assert!(!conf.contains("RemoteFileSigLevel"), "{conf}");
    assert_eq!(host.gpgdir, host.path("etc/pacman.d/gnupg"));
    assert!(
        conf.contains(&format!("GPGDir = {}/\n", host.gpgdir.display())),
        "{conf}"
    );
    // pacman reads it so.
    let out = Command::new(toolchain_bin("pacman-conf"))
        .arg("--config")
        .arg(&host.conf)
        .args([
            "SigLevel",
            "LocalFileSigLevel",
            "RemoteFileSigLevel",
            "GPGDir",
        ])
        .output()
        .unwrap();
    assert_eq!(
        stdout_ok("pacman-conf", &out),
        format!(
            "SigLevel = PackageRequired\nSigLevel = PackageTrustedOnly\n\
             SigLevel = DatabaseOptional\nSigLevel = DatabaseTrustedOnly\n\
             LocalFileSigLevel = PackageOptional\nLocalFileSigLevel = PackageTrustedOnly\n\
             GPGDir = {}\n",
            host.gpgdir.display()
        )
    );
    // The keyring pacman-key made: its master key, and the packager, locally signed by it.
    let keys = Command::new("gpg")
        .arg("--homedir")
        .arg(&host.gpgdir)
        .args(["--batch", "--with-colons", "--check-sigs"])
        .arg(Packager::default_key().fingerprint())
        .output()
        .unwrap();
    let keys = stdout_ok("gpg --check-sigs", &keys);
    assert!(keys.contains("Pacman Keyring Master Key"), "{keys}");
    assert!(keys.contains(Packager::default_key().uid()), "{keys}");
    assert!(
        !fs::read_dir(&host.gpgdir).unwrap().any(|e| e
            .unwrap()
            .file_name()
            .to_string_lossy()
            .starts_with("S.")),
        "no agent sockets copied"
    );
}

#[test]
fn unsigned_and_untrusted_packages_are_refused_by_default() {
    let tmp = tempdir();
    let newcomer = Packager::new(tmp.path(), "newcomer");
    assert_ne!(
        newcomer.fingerprint(),
        Packager::default_key().fingerprint()
    );
    let mut repo = PkgRepo::new(tmp.path(), "main");
    repo.add(&[SynthPackage::new("signed", "1.0-1")]);
    repo.add_unsigned(&[SynthPackage::new("loose", "1.0-1")]);
    repo.add_signed_by(&newcomer, &[SynthPackage::new("fresh", "1.0-1")]);
    let host = HostDir::new(tmp.path(), "h", &[&repo]);
    host.pacman_ok(&["-Sy"]);
    host.pacman_ok(&["-S", "signed"]);

    let out = host.pacman(&["-S", "loose"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // No %PGPSIG% in the database: pacman looks for the .sig beside the package, as on a
    // mirror, and finds none.
    assert!(
        stderr.contains("failed retrieving file 'loose-1.0-1-any.pkg.tar.zst.sig'"),
        "{stderr}"
    );

    let out = host.pacman(&["-S", "fresh"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    // (pacman offers to import the key; the lookup fails: the key is on no keyserver.)
    assert!(
        stderr.contains("required key missing from keyring"),
        "{stderr}"
    );
    assert_eq!(host.installed().keys().collect::<Vec<_>>(), ["signed"]);

    // Once the host trusts the new packager, its packages install.
    host.trust_packager(&newcomer);
    host.pacman_ok(&["-S", "fresh"]);

    // A local file: signed by the packager, or not signed at all (Optional), but never with a
    // bad signature.
    let local =
        synth::build_package(&SynthPackage::new("local", "1.0-1"), &tmp.path().join("l")).unwrap();
    host.pacman_ok(&["-U", local.to_str().unwrap()]);
    fs::write(synth::signature_path(&local), b"not a signature").unwrap();
    let out = host.pacman(&["-U", local.to_str().unwrap()]);
    assert!(!out.status.success(), "a bad .sig beside a local file");
    assert_eq!(host.installed().len(), 3);
}

#[test]
fn write_repo_reads_gzip_and_plain_packages_and_refuses_armored_signatures() {
    let tmp = tempdir();
    let built = synth::build_package(&app("1.0-1"), &tmp.path().join("b")).unwrap();
    let mut tar = Vec::new();
    zstd::stream::read::Decoder::new(fs::File::open(&built).unwrap())
        .unwrap()
        .read_to_end(&mut tar)
        .unwrap();
    let other = tmp.path().join("other");
    fs::create_dir_all(&other).unwrap();
    let gz = other.join("app-1.0-1-any.pkg.tar.gz");
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut enc, &tar).unwrap();
    fs::write(&gz, enc.finish().unwrap()).unwrap();
    let plain = other.join("libfoo-1.0-1-any.pkg.tar");
    let libfoo_zst = synth::build_package(&libfoo("1.0-1"), &tmp.path().join("b")).unwrap();
    let mut libfoo_tar = Vec::new();
    zstd::stream::read::Decoder::new(fs::File::open(&libfoo_zst).unwrap())
        .unwrap()
        .read_to_end(&mut libfoo_tar)
        .unwrap();
    fs::write(&plain, libfoo_tar).unwrap();
    for f in [&gz, &plain] {
        Packager::default_key().sign(f);
    }
    let dir = tmp.path().join("repos/mixed");
    synth::write_repo(&dir, "mixed", &[&gz, &plain]).unwrap();
    let host = HostDir::new(tmp.path(), "h", &[&PkgRepo::at(&dir, "mixed")]);
    host.pacman_ok(&["-Sy"]);
    host.pacman_ok(&["-S", "app"]);
    assert_eq!(host.installed().len(), 2);

    // repo-add refuses armored signatures; so does write_repo.
    fs::write(
        synth::signature_path(&built),
        "-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n",
    )
    .unwrap();
    let err = synth::write_repo(&tmp.path().join("repos/x"), "x", &[&built]).unwrap_err();
    assert!(
        matches!(&err, SynthError::BadPackageFile { reason, .. } if reason.contains("armored")),
        "{err:?}"
    );
}

#[test]
fn a_root_with_a_shell_runs_hooks_in_it() {
    let tmp = tempdir();
    let mut repo = PkgRepo::new(tmp.path(), "main");
    repo.add(&[SynthPackage::new("app", "1.0-1")]);
    let host = HostDir::new(tmp.path(), "h", &[&repo]).with_shell();
    for link in ["bin/sh", "usr/bin/sh", "usr/bin/cp", "usr/bin/["] {
        assert!(host.path(link).is_file(), "{link}");
    }
    // A hook runs chrooted in the root: its /bin/sh and applets are busybox.
    fs::write(
        host.base.join("hooks/shell.hook"),
        "[Trigger]\nOperation = Install\nType = Package\nTarget = app\n\n[Action]\n\
         Description = a shell in the root\nWhen = PostTransaction\n\
         Exec = /bin/sh -c 'mkdir -p /var/lib/hooked && printf \"%s\\n\" ran > /var/lib/hooked/ok \
         && cp /var/lib/hooked/ok /var/lib/hooked/copy && test -s /var/lib/hooked/copy'\n",
    )
    .unwrap();
    host.pacman_ok(&["-Sy"]);
    host.pacman_ok(&["-S", "app"]);
    assert_eq!(read(&host.path("var/lib/hooked/copy")), "ran\n");
}
