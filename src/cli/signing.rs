//! What the commands that sign share (sign, keygen, set-latest, rollback): the secret key's
//! password (from `PACFLEET_KEY_PASSWORD` or asked on the terminal), the printed report of a
//! signature, and set-latest's and rollback's ending — sign the new commit through
//! `pacfleet::signing`, push it through `pacfleet::worktree`, and say what was (not) done.

use std::io::IsTerminal;
use std::path::Path;

use anyhow::{Context, bail};
use chrono::{SecondsFormat, Utc};

use pacfleet::notes_sync::Synced;
use pacfleet::reconcile::short;
use pacfleet::signing::{self, KeyError, SignReport};
use pacfleet::trust::{self, NOTES_REF};
use pacfleet::worktree::WorkTree;

/// Where a secret key's password comes from when there is no terminal to ask on.
pub(super) const PASSWORD_ENV: &str = "PACFLEET_KEY_PASSWORD";

/// The password from `PACFLEET_KEY_PASSWORD`, if it is set.
pub(super) fn env_password() -> anyhow::Result<Option<String>> {
    match std::env::var_os(PASSWORD_ENV) {
        None => Ok(None),
        Some(v) => v
            .into_string()
            .map(Some)
            .map_err(|_| anyhow::anyhow!("{PASSWORD_ENV} is not valid UTF-8")),
    }
}

/// Whether a password may be asked for: the user is at a terminal.
pub(super) fn can_prompt() -> bool {
    std::io::stdin().is_terminal()
}

/// Reads the secret key: unencrypted as is; encrypted with the password from
/// `PACFLEET_KEY_PASSWORD`, or asked on the terminal; without either, a clear error.
pub(super) fn secret_key(path: &Path) -> anyhow::Result<minisign::SecretKey> {
    if let Ok(text) = std::fs::read_to_string(path)
        && trust::parse_key("", &text).is_ok()
    {
        bail!(
            "{} is a public key; --key takes the secret key (the `.key` file made with it)",
            path.display()
        );
    }
    if let Some(password) = env_password()? {
        return trust::load_secret_key(path, Some(password)).with_context(|| {
            format!(
                "cannot unlock secret key {} with the password in {PASSWORD_ENV} (wrong password?)",
                path.display()
            )
        });
    }
    match trust::load_secret_key(path, None) {
        Ok(sk) => Ok(sk),
        Err(e) if can_prompt() => {
            // minisign's own prompt, on the terminal, without echo; it asks only if the key is
            // encrypted, and reports a corrupt key as such.
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read secret key {}", path.display()))?;
            let boxed = minisign::SecretKeyBox::from_string(&text).map_err(|_| e)?;
            eprintln!("secret key {} is password-protected", path.display());
            minisign::SecretKey::from_box(boxed, None).map_err(|err| {
                anyhow::anyhow!("cannot unlock secret key {}: {err}", path.display())
            })
        }
        Err(e) => Err(e.into()),
    }
}

/// [`secret_key`] as `pacfleet::signing` asks for it.
pub(super) fn key_loader(path: &Path) -> impl FnOnce() -> Result<minisign::SecretKey, KeyError> {
    move || secret_key(path).map_err(Into::into)
}

/// Warns when the signature notes were not fetched (no remote, `--offline`).
pub(super) fn warn_synced(synced: &Synced, repo: &Path) {
    if let Some(w) = synced.warning(repo) {
        eprintln!("warning: {w}");
    }
}

/// Prints `warning: …` on stderr.
pub(super) fn warn(text: String) {
    eprintln!("warning: {text}");
}

/// The report of a signature: the statement, what happened to an earlier one, the signers;
/// warnings on stderr.
pub(super) fn print_signed(report: &SignReport) {
    let st = &report.signed.statement;
    println!("signed commit {} of fleet `{}`", st.commit, st.fleet);
    println!("  tree      {}", st.tree);
    println!("  sequence  {}", st.sequence);
    println!(
        "  expires   {} ({})",
        st.expires.to_rfc3339_opts(SecondsFormat::Secs, true),
        rough(
            (st.expires - Utc::now())
                .num_seconds()
                .max(0)
                .unsigned_abs()
        )
    );
    println!(
        "  {}",
        if report.signed.appended {
            "added this key's signature to the existing statement (threshold signing)"
        } else if report.had_valid {
            "replaced the existing statement with a new one"
        } else if report.had_note {
            "new statement, replacing an expired or unusable note"
        } else {
            "new statement"
        }
    );
    let signers = report.signers();
    println!(
        "  signers   {} so far: {}",
        signers.len(),
        signers.join(", ")
    );
    if let Some(w) = report.low_sequence_warning() {
        warn(w);
    }
    if let Some(w) = &report.rotation_warning {
        eprintln!("warning: {w}");
    }
}

/// A duration for people: `in 30 days`, `in 12 hours`, `in 5 minutes` (rounded to the nearest
/// unit; a statement signed for 30 days says 30 days, not `29days 23h 59m 59s`).
fn rough(secs: u64) -> String {
    let (n, unit) = match secs {
        s if s >= 86_400 => ((s + 43_200) / 86_400, "day"),
        s if s >= 3_600 => ((s + 1_800) / 3_600, "hour"),
        s => ((s + 30) / 60, "minute"),
    };
    format!("in {n} {unit}{}", if n == 1 { "" } else { "s" })
}

/// set-latest's and rollback's ending: signs `commit` with `key` (a new statement above
/// `above`, see `signing::sign_new`) and prints the report, or says how to sign; then pushes
/// to `remote` if given, or says how to.
pub(super) fn finish(
    wt: &WorkTree,
    commit: &str,
    branch: &str,
    key: Option<&Path>,
    above: u64,
    remote: Option<&str>,
) -> anyhow::Result<()> {
    match key {
        Some(key) => {
            let report = signing::sign_new(wt, commit, key, above, key_loader(key), &mut warn)?;
            print_signed(&report);
        }
        None => println!(
            "not signed (no --key): review it, then `fleetctl sign {} --key KEY` to let hosts apply it",
            short(commit)
        ),
    }
    match remote {
        Some(remote) => {
            wt.push(remote, branch)?;
            println!("pushed {branch} and {NOTES_REF} to {remote}");
        }
        None => println!(
            "not pushed (no --push): `git push --atomic origin {branch} {NOTES_REF}` publishes it"
        ),
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_expiry_argument_is_the_default_expiry() {
        let arg = humantime::parse_duration(trust::DEFAULT_EXPIRY_ARG).unwrap();
        assert_eq!(
            chrono::Duration::from_std(arg).unwrap(),
            trust::DEFAULT_EXPIRY
        );
    }

    #[test]
    fn rough_durations_round_to_the_unit() {
        assert_eq!(rough(30 * 86_400 - 1), "in 30 days");
        assert_eq!(rough(3_600), "in 1 hour");
        assert_eq!(rough(90), "in 2 minutes");
    }
}
