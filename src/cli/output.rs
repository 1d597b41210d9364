//! What every command shares: logging setup, the one-line error format, exit codes, and small
//! formatting helpers for human output.

use std::io::IsTerminal;

use crate::reconcile::PassError;

/// Logs go to the journal (with priorities) when systemd runs us with stderr connected to it
/// (`JOURNAL_STREAM`), else to stderr; `RUST_LOG` overrides the level chosen by -v/-q.
pub fn init_logging(verbose: u8, quiet: bool, default_level: &str) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => default_level,
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(format!("{level},libalpm={level}")));
    if std::env::var_os("JOURNAL_STREAM").is_some()
        && let Ok(journald) = tracing_journald::layer()
    {
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journald)
            .try_init();
        return;
    }
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_target(false)
        .without_time()
        .try_init();
}

/// Errors: one line that says what failed and what to do, then the chain of causes.
pub fn print_error(e: &anyhow::Error) {
    eprintln!("error: {e}");
    for cause in e.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
}

/// The exit code for an error: 3 for trust refusals, 2 for everything else (DESIGN.md §3).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    match e.downcast_ref::<PassError>() {
        Some(p) => p.exit_code(),
        None => 2,
    }
}

/// Bytes for humans (`12.3 MiB`).
pub fn bytes(n: u64) -> String {
    indicatif::HumanBytes(n).to_string()
}

/// A signed size change for humans (`+12.3 MiB`, `-1.0 KiB`).
pub fn delta(n: i64) -> String {
    let sign = if n < 0 { "-" } else { "+" };
    format!("{sign}{}", bytes(n.unsigned_abs()))
}

/// Prints `value` as pretty JSON on stdout.
pub fn json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
