//! Progress of long work — package downloads and the steps of a transaction — as events for a
//! [`Reporter`]. The library reports; what the user sees is the binary's choice: `fleetctl`
//! installs bars on a terminal (indicatif, in `cli`), and without one the default
//! [`LogReporter`] writes one log line per package step. Process-wide, like `tracing`'s
//! subscriber: set once at start ([`set_reporter`]), read by libalpm's callbacks (`apply`).

use std::sync::{Arc, Mutex, OnceLock};

/// One step of a transaction, as libalpm reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step<'a> {
    /// What is done: `installing`, `upgrading`, `removing`, `checking file conflicts`, …
    pub verb: &'a str,
    /// The package (empty for steps over the whole transaction).
    pub package: &'a str,
    /// 0–100.
    pub percent: u8,
    /// This package's number in the step, from 1.
    pub current: usize,
    /// How many packages the step has.
    pub total: usize,
}

/// Receives progress events. Every method has a default that does nothing, so a reporter
/// implements what it shows. Called on the thread running the transaction.
pub trait Reporter: Send + Sync {
    /// `downloaded` of `total` bytes of `file` have arrived (`total` 0: unknown yet).
    fn download(&self, _file: &str, _downloaded: u64, _total: u64) {}
    /// `file` is complete (or failed, or was up to date: `tracing` says which).
    fn download_done(&self, _file: &str) {}
    /// A transaction step moved on.
    fn step(&self, _step: Step<'_>) {}
}

/// The default: one `info` log line per package step when it completes (libalpm reports 100%
/// several times; each step is logged once), nothing for downloads (`tracing` logs their
/// outcome).
#[derive(Debug, Default)]
pub struct LogReporter {
    logged: Mutex<Option<(String, String, usize)>>,
}

impl Reporter for LogReporter {
    fn step(&self, s: Step<'_>) {
        if s.percent < 100 {
            return;
        }
        let step = (s.verb.to_owned(), s.package.to_owned(), s.current);
        let mut logged = self.logged.lock().unwrap_or_else(|e| e.into_inner());
        if logged.as_ref() == Some(&step) {
            return;
        }
        if s.package.is_empty() {
            tracing::debug!("{}: done", s.verb);
        } else {
            tracing::info!("({}/{}) {} {}", s.current, s.total, s.verb, s.package);
        }
        *logged = Some(step);
    }
}

static REPORTER: OnceLock<Arc<dyn Reporter>> = OnceLock::new();

/// Installs the process's reporter; the first call wins (later ones return `false`).
pub fn set_reporter(reporter: Arc<dyn Reporter>) -> bool {
    REPORTER.set(reporter).is_ok()
}

/// The process's reporter: the one installed, else a [`LogReporter`].
pub fn reporter() -> &'static Arc<dyn Reporter> {
    REPORTER.get_or_init(|| Arc::new(LogReporter::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_reporter_logs_each_completed_step_once() {
        let r = LogReporter::default();
        let step = |percent, current| Step {
            verb: "installing",
            package: "app",
            percent,
            current,
            total: 2,
        };
        r.step(step(50, 1));
        assert_eq!(*r.logged.lock().unwrap(), None);
        r.step(step(100, 1));
        let first = r.logged.lock().unwrap().clone();
        assert_eq!(first, Some(("installing".into(), "app".into(), 1)));
        r.step(step(100, 1));
        assert_eq!(*r.logged.lock().unwrap(), first);
    }
}
