//! `fleetctl sign [REV] --key K [--repo PATH] [--expires-in DURATION] [--sequence N] [--renew] [--offline]`:
//! writes (or extends) REV's signature statement under refs/notes/pacfleet. A commit with a
//! valid statement by other keys gets this key's signature appended (threshold signing);
//! otherwise a new statement is made with the next sequence number. `--renew` on the branch
//! tip (or plain `sign` once its statement expired) renews the fleet's signed state before
//! hosts call it stale. First the remote's notes are fetched and the local ones fast-forwarded
//! to them (`notes_sync`; refused when they diverged or the fetch fails, unless `--offline`),
//! so the sequence continues the published one. The signing itself is `pacfleet::signing`'s; the
//! key's password and the report are `cli/signing.rs`'s. Exit 0, or 2 on error.

use anyhow::bail;

use super::SignArgs;
use super::signing::{key_loader, print_signed, warn_synced};
use pacfleet::notes_sync;
use pacfleet::signing::{self, SignRequest};
use pacfleet::source;

pub(super) fn run(args: SignArgs) -> anyhow::Result<u8> {
    if args.expires_in.is_zero() {
        bail!("--expires-in must be longer than 0s");
    }
    let expires_in = chrono::Duration::from_std(args.expires_in)
        .ok()
        .filter(|d| *d <= chrono::Duration::days(3650))
        .ok_or_else(|| anyhow::anyhow!("--expires-in must be at most 10 years"))?;
    // The commit first (a typo fails before the network), then the remote's notes, so that
    // what the commit carries and the next sequence number are current.
    let commit = source::rev_parse(&args.repo, &args.rev)?;
    let synced = notes_sync::sync(&args.repo, args.offline)?;
    warn_synced(&synced, &args.repo);
    let report = signing::sign(
        &SignRequest {
            repo: &args.repo,
            commit: &commit,
            key_file: &args.key,
            expires_in,
            sequence: args.sequence,
            renew: args.renew,
            above: 0,
        },
        key_loader(&args.key),
    )?;
    print_signed(&report);
    println!(
        "Publish it: git push {} refs/notes/pacfleet",
        synced.remote().unwrap_or("origin")
    );
    Ok(0)
}
