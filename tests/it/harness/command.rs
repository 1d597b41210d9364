//! `fleetctl` as the tests run it: [`TestCommand`] builds one invocation (`reconcile`, `plan`,
//! ... with `--config`, extra arguments and environment), [`Outcome`] is what it did, with
//! assertions that print the whole output when they fail:
//!
//! ```ignore
//! let out = TestCommand::reconcile(&cfg).code(3).stderr_contains("refused").stdout;
//! let plan = TestCommand::plan(&cfg).args(["--json"]).ok().json();
//! ```

use std::ffi::OsStr;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;

use super::fleetctl;

/// One `fleetctl` invocation, not run yet.
#[derive(Debug)]
pub struct TestCommand {
    cmd: Command,
}

impl TestCommand {
    /// `fleetctl <args>`.
    pub fn fleetctl<I, S>(args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = fleetctl();
        cmd.args(args);
        Self { cmd }
    }

    /// `fleetctl <subcommand> --config <cfg>`.
    pub fn with_config(subcommand: &str, cfg: impl AsRef<Path>) -> Self {
        let mut cmd = fleetctl();
        cmd.arg(subcommand).arg("--config").arg(cfg.as_ref());
        Self { cmd }
    }

    /// `fleetctl reconcile --config <cfg>`.
    pub fn reconcile(cfg: impl AsRef<Path>) -> Self {
        Self::with_config("reconcile", cfg)
    }

    /// `fleetctl plan --config <cfg>`.
    pub fn plan(cfg: impl AsRef<Path>) -> Self {
        Self::with_config("plan", cfg)
    }

    /// `fleetctl status --config <cfg>`.
    pub fn status(cfg: impl AsRef<Path>) -> Self {
        Self::with_config("status", cfg)
    }

    /// Appends one argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    /// Appends arguments (`--json`, `--dry-run`, ...).
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.cmd.args(args);
        self
    }

    /// Sets an environment variable for it.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Removes an environment variable for it.
    pub fn env_remove(mut self, key: impl AsRef<OsStr>) -> Self {
        self.cmd.env_remove(key);
        self
    }

    /// Runs it to the end.
    pub fn run(mut self) -> Outcome {
        let out = self
            .cmd
            .output()
            .unwrap_or_else(|e| panic!("run {:?}: {e}", self.cmd));
        Outcome {
            command: format!("{:?}", self.cmd),
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Runs it and asserts it exited `code` (see [`Outcome::code`]).
    #[track_caller]
    pub fn code(self, code: i32) -> Outcome {
        self.run().code(code)
    }

    /// Runs it and asserts it succeeded.
    #[track_caller]
    pub fn ok(self) -> Outcome {
        self.run().code(0)
    }
}

/// What a [`TestCommand`] did.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// The command line, for messages.
    pub command: String,
    /// The exit code (-1 when killed by a signal).
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Outcome {
    /// `(code, stdout, stderr)`, for tests that look at all three.
    pub fn parts(self) -> (i32, String, String) {
        (self.code, self.stdout, self.stderr)
    }

    fn report(&self, what: &str) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            "{what}\n--- command\n{}\n--- exit code {}\n--- stdout\n{}\n--- stderr\n{}",
            self.command, self.code, self.stdout, self.stderr
        );
        s
    }

    /// Asserts the exit code is `code`, printing stdout and stderr when it is not.
    #[track_caller]
    pub fn code(self, code: i32) -> Self {
        assert!(
            self.code == code,
            "{}",
            self.report(&format!("expected exit code {code}, got {}", self.code))
        );
        self
    }

    /// Asserts it succeeded (exit code 0).
    #[track_caller]
    pub fn ok(self) -> Self {
        self.code(0)
    }

    /// Asserts stdout contains `needle`.
    #[track_caller]
    pub fn stdout_contains(self, needle: &str) -> Self {
        assert!(
            self.stdout.contains(needle),
            "{}",
            self.report(&format!("stdout does not contain {needle:?}"))
        );
        self
    }

    /// Asserts stderr contains `needle`.
    #[track_caller]
    pub fn stderr_contains(self, needle: &str) -> Self {
        assert!(
            self.stderr.contains(needle),
            "{}",
            self.report(&format!("stderr does not contain {needle:?}"))
        );
        self
    }

    /// Stdout parsed as JSON.
    #[track_caller]
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{}", self.report(&format!("stdout is not JSON: {e}"))))
    }
}
