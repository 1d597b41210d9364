//! A pool's health check (`health:` in its pool file, docs/contract.md §1.3): the commands a
//! host runs after a pass applied changes, and what they said. Owns running them — `sh -c`,
//! in order, stdin closed, all of them together bounded by the pool's `timeout`, a command
//! still running then killed with its process group — and keeping what they print bounded.
//! The commands come from the signed fleet state; they run as the agent (root), with
//! `PACFLEET_ROOT`, `PACFLEET_HOST`, `PACFLEET_POOL` and `PACFLEET_COMMIT` set, so a check can
//! look at the managed root when it is not `/`.

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::manifest::HealthSpec;
use crate::report::Health;

/// What a failing command's output is cut to, in the report.
const MAX_OUTPUT: usize = 2048;

/// Who is checked: the environment the commands see.
#[derive(Debug, Clone)]
pub struct Subject<'a> {
    /// The managed root (`root:` of agent.yaml).
    pub root: &'a Path,
    /// The hostname.
    pub host: &'a str,
    /// The pool.
    pub pool: &'a str,
    /// The fleet commit just applied.
    pub commit: &'a str,
}

/// Runs the pool's health commands in order; the first failure ends the check.
pub fn check(spec: &HealthSpec, subject: &Subject<'_>) -> Health {
    let deadline = Instant::now() + spec.timeout();
    for command in &spec.commands {
        if let Err(failure) = run_one(command, subject, deadline, spec.timeout()) {
            tracing::warn!("health check failed: {failure}");
            return Health {
                passed: false,
                failure: Some(failure),
            };
        }
    }
    Health {
        passed: true,
        failure: None,
    }
}

fn run_one(
    command: &str,
    subject: &Subject<'_>,
    deadline: Instant,
    timeout: Duration,
) -> Result<(), String> {
    let shown = crate::escape::terminal_safe(command);
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .env("PACFLEET_ROOT", subject.root)
        .env("PACFLEET_HOST", subject.host)
        .env("PACFLEET_POOL", subject.pool)
        .env("PACFLEET_COMMIT", subject.commit)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so a timeout kills what it started too.
        .process_group(0)
        .spawn()
        .map_err(|e| format!("`{shown}` could not start: {e}"))?;
    // Read both pipes on threads, bounded, so a chatty command cannot block on a full pipe.
    let readers: Vec<_> = [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    .map(|pipe| std::thread::spawn(move || bounded_read(pipe)))
    .collect();
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if Instant::now() >= deadline => break None,
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("`{shown}`: cannot wait for it: {e}")),
        }
    };
    if status.is_none() {
        crate::process::kill_group(&mut child);
    }
    let output: String = readers
        .into_iter()
        .filter_map(|r| r.join().ok())
        .collect::<Vec<_>>()
        .join("");
    let output = crate::escape::terminal_safe(output.trim());
    let tail = if output.is_empty() {
        String::new()
    } else {
        format!(": {output}")
    };
    match status {
        None => Err(format!(
            "`{shown}` was still running when the health timeout ({}) ran out, and was killed{tail}",
            humantime::format_duration(timeout)
        )),
        Some(s) if s.success() => Ok(()),
        Some(s) => Err(format!(
            "`{shown}` exited with {}{tail}",
            s.code()
                .map_or_else(|| "a signal".to_owned(), |c| format!("status {c}"))
        )),
    }
}

/// Up to [`MAX_OUTPUT`] bytes of `pipe`, the rest read and dropped (lossy UTF-8).
fn bounded_read(mut pipe: Box<dyn Read + Send>) -> String {
    let mut kept = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = MAX_OUTPUT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
    String::from_utf8_lossy(&kept).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(commands: &[&str], timeout: &str) -> HealthSpec {
        HealthSpec {
            commands: commands.iter().map(|c| c.to_string()).collect(),
            timeout: Some(timeout.to_owned()),
            rollback: false,
        }
    }

    fn subject() -> Subject<'static> {
        Subject {
            root: Path::new("/tmp/root"),
            host: "ws-01",
            pool: "ws",
            commit: "abc",
        }
    }

    #[test]
    fn passing_commands_see_the_subject() {
        let h = check(
            &spec(
                &["true", "test \"$PACFLEET_HOST/$PACFLEET_POOL\" = ws-01/ws"],
                "10s",
            ),
            &subject(),
        );
        assert_eq!(
            h,
            Health {
                passed: true,
                failure: None
            }
        );
    }

    #[test]
    fn the_first_failure_ends_the_check_with_what_it_said() {
        let h = check(
            &spec(
                &[
                    "echo fine",
                    "echo broken >&2; exit 3",
                    "touch /nonexistent/x",
                ],
                "10s",
            ),
            &subject(),
        );
        assert!(!h.passed);
        let f = h.failure.expect("failure");
        assert!(f.contains("exited with status 3: broken"), "{f}");
    }

    #[test]
    fn a_command_outliving_the_timeout_is_killed_with_its_children() {
        let started = Instant::now();
        let h = check(&spec(&["sleep 30 & sleep 30"], "300ms"), &subject());
        assert!(started.elapsed() < Duration::from_secs(10));
        let f = h.failure.expect("failure");
        assert!(
            f.contains("still running when the health timeout (300ms)"),
            "{f}"
        );
    }

    #[test]
    fn output_is_bounded_and_escaped() {
        let h = check(
            &spec(
                &["printf '\\033[31mred'; head -c 100000 /dev/zero | tr '\\0' x; exit 1"],
                "10s",
            ),
            &subject(),
        );
        let f = h.failure.expect("failure");
        assert!(f.len() < MAX_OUTPUT * 2, "{}", f.len());
        assert!(!f.contains('\u{1b}'), "{f}");
    }
}
