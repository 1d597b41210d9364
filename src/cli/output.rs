//! What every command shares: logging setup, the one-line error format, exit codes, and small
//! formatting helpers for human output.

use std::io::IsTerminal;

use pacfleet::reconcile::{Exit, PassError};

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
    eprint!("{}", error_text(e));
}

/// `error: …` and one `caused by: …` line per cause that says something the lines before did
/// not (a message that already quotes its source, or a transparent wrapper, is not repeated).
/// Every line is [`terminal_safe`] (the line breaks of a multi-line error kept): errors quote
/// untrusted text (a note, a manifest value).
pub fn error_text(e: &anyhow::Error) -> String {
    let lines = |text: &str| -> String {
        text.split('\n')
            .map(terminal_safe)
            .collect::<Vec<_>>()
            .join("\n")
    };
    let mut out = format!("error: {}\n", lines(&e.to_string()));
    let mut said = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if text.is_empty() || said.contains(&text) {
            continue;
        }
        out.push_str(&format!("  caused by: {}\n", lines(&text)));
        said.push_str(&text);
    }
    out
}

/// Whether a panic payload is Rust's "failed printing to stdout: Broken pipe": the reader of
/// our output (`| head`) went away, which is not an error of ours.
pub fn is_broken_pipe(payload: &(dyn std::any::Any + Send)) -> bool {
    let text = payload
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| payload.downcast_ref::<&str>().copied())
        .unwrap_or("");
    text.contains("Broken pipe") || text.contains("os error 32")
}

/// The exit code for an error: 3 for trust refusals, 2 for everything else (docs/contract.md §3).
pub fn exit_code(e: &anyhow::Error) -> u8 {
    let exit = if let Some(e) = e.downcast_ref::<pacfleet::enroll::EnrollError>() {
        e.exit()
    } else if let Some(p) = e.downcast_ref::<PassError>() {
        p.exit()
    } else {
        Exit::Error
    };
    exit.code()
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

pub use pacfleet::escape::{is_unsafe_char, terminal_safe};

/// `1 file`, `3 files`.
pub fn files(n: u32) -> String {
    format!("{n} file{}", if n == 1 { "" } else { "s" })
}

/// What a pass downloaded, as `(label, text)` lines, the same in `status`, `plan`/`reconcile`
/// and `history`: `downloads` (package files by source, when it downloaded any), `prefetched`
/// (downloaded ahead for a pending change, `prefetch: true`) and one `bad peer` per peer that
/// served files failing their sha256. Peer URLs come from the network (mDNS announcements,
/// what a peer answered): they are [`terminal_safe`] here.
pub fn download_lines(d: &pacfleet::peers::Downloads) -> Vec<(&'static str, String)> {
    let from = |n: u32, b: u64, source: &str| match n {
        0 => format!("{} from {source}", files(0)),
        n => format!("{} ({}) from {source}", files(n), bytes(b)),
    };
    let mut out = Vec::new();
    let total = d.peer_files.saturating_add(d.upstream_files);
    if total > 0 {
        out.push((
            "downloads",
            format!(
                "{}, {}",
                from(d.peer_files, d.peer_bytes, "peers"),
                from(d.upstream_files, d.upstream_bytes, "upstream")
            ),
        ));
    }
    if d.prefetch {
        let size = match total {
            0 => String::new(),
            _ => format!(
                " ({})",
                bytes(d.peer_bytes.saturating_add(d.upstream_bytes))
            ),
        };
        let text = match (total, d.left) {
            // A later held pass: an earlier one prefetched everything.
            (0, 0) => {
                "nothing to download for the pending change: its files are in the cache".to_owned()
            }
            _ => format!(
                "{}{size} for the pending change; {} left to download",
                files(total),
                d.left
            ),
        };
        out.push(("prefetched", text));
    }
    for (peer, n) in &d.bad_from {
        out.push((
            "bad peer",
            format!(
                "{} served {} that failed the sha256 check (discarded)",
                terminal_safe(peer),
                files(*n)
            ),
        ));
    }
    out
}

/// Styling for text output: ANSI styles when `on` (a terminal without `NO_COLOR`), plain text
/// otherwise. Shared by `diff` and `fleet status`.
pub struct Paint {
    /// Whether to style at all.
    pub on: bool,
}

impl Paint {
    /// `s` in `style`.
    pub fn style(&self, s: &str, style: clap::builder::styling::Style) -> String {
        if self.on {
            format!("{}{s}{}", style.render(), style.render_reset())
        } else {
            s.to_owned()
        }
    }

    /// `s` in bold.
    pub fn bold(&self, s: &str) -> String {
        self.style(s, clap::builder::styling::Style::new().bold())
    }

    /// `s` in colour `c`.
    pub fn colour(&self, s: &str, c: clap::builder::styling::AnsiColor) -> String {
        self.style(
            s,
            clap::builder::styling::Style::new().fg_color(Some(c.into())),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_safe_shows_controls_and_bidi_overrides() {
        assert_eq!(terminal_safe("5.2-1"), "5.2-1");
        assert_eq!(terminal_safe("a\x1b[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(terminal_safe("x\ry\nz\0"), "x\\u{d}y\\u{a}z\\u{0}");
        assert_eq!(terminal_safe("\u{202e}txt"), "\\u{202e}txt");
        assert_eq!(terminal_safe("ünï€"), "ünï€");
    }

    #[test]
    fn download_lines_say_sources_prefetch_and_bad_peers() {
        use pacfleet::peers::Downloads;
        assert!(download_lines(&Downloads::default()).is_empty());
        let d = Downloads {
            peer_bytes: 1_258_291,
            upstream_bytes: 614_400,
            peer_files: 2,
            upstream_files: 1,
            bad_from: [("http://10.0.0.5:7878\u{1b}[2J".to_owned(), 1)].into(),
            peers: vec!["http://10.0.0.5:7878".into()],
            prefetch: false,
            left: 0,
        };
        assert_eq!(
            download_lines(&d),
            vec![
                (
                    "downloads",
                    "2 files (1.20 MiB) from peers, 1 file (600.00 KiB) from upstream".to_owned()
                ),
                (
                    "bad peer",
                    "http://10.0.0.5:7878\\u{1b}[2J served 1 file that failed the sha256 check (discarded)"
                        .to_owned()
                ),
            ]
        );
        let ahead = Downloads {
            peer_files: 3,
            peer_bytes: 3 * 1024,
            prefetch: true,
            left: 0,
            ..Downloads::default()
        };
        assert_eq!(
            download_lines(&ahead),
            vec![
                (
                    "downloads",
                    "3 files (3.00 KiB) from peers, 0 files from upstream".to_owned()
                ),
                (
                    "prefetched",
                    "3 files (3.00 KiB) for the pending change; 0 left to download".to_owned()
                ),
            ]
        );
        let cached = Downloads {
            prefetch: true,
            ..Downloads::default()
        };
        assert_eq!(
            download_lines(&cached),
            vec![(
                "prefetched",
                "nothing to download for the pending change: its files are in the cache".to_owned()
            )]
        );
        let failed = Downloads {
            prefetch: true,
            left: 2,
            ..Downloads::default()
        };
        assert_eq!(
            download_lines(&failed),
            vec![(
                "prefetched",
                "0 files for the pending change; 2 left to download".to_owned()
            )]
        );
    }
}
