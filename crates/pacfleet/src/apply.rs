//! Applying: committing one prepared libalpm transaction under pacman's lock (its questions
//! are answered by `system`'s policy), reporting progress to the process's
//! [`crate::progress::Reporter`] (bars on a terminal, drawn by the binary; log lines otherwise),
//! collecting .pacnew/.pacsave, scriptlet output and the failures of scriptlets and
//! hooks that do not stop the transaction (warnings), and setting install reasons afterwards.
//! Waiting for a lock held by someone else is bounded and never deletes it.

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alpm::Progress;

use crate::plan::Changeset;
pub use crate::plan::Notices;
use crate::system::{System, SystemError, lock_holder};

/// Committing failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Preparing, locking or another libalpm step failed before anything changed.
    #[error(transparent)]
    System(#[from] SystemError),
    /// libalpm's commit failed.
    #[error("the package transaction failed: {source}")]
    Commit {
        /// libalpm's reasons (conflicting files and their owners, invalid package files).
        #[source]
        source: Box<crate::system::CommitError>,
    },
}

impl ApplyError {
    /// Whether the commit failed because package files were corrupt (libalpm deleted them
    /// from the cache, so preparing again downloads them anew).
    pub fn corrupt_files(&self) -> bool {
        matches!(
            self,
            ApplyError::Commit { source }
                if matches!(
                    **source,
                    crate::system::CommitError::InvalidPackages { corrupt: true, .. }
                )
        )
    }
}

/// Waits until pacman's lock file is gone, up to `timeout`. Never deletes the lock.
pub fn wait_for_lock(lockfile: &Path, timeout: Duration) -> Result<(), SystemError> {
    let start = Instant::now();
    let mut told = false;
    while lockfile.exists() {
        if start.elapsed() >= timeout {
            return Err(SystemError::Locked {
                lockfile: lockfile.display().to_string(),
                waited_secs: timeout.as_secs(),
                holder: lock_holder(),
            });
        }
        if !told {
            tracing::warn!(
                "pacman database is locked ({}){}; waiting up to {}s",
                lockfile.display(),
                lock_holder(),
                timeout.as_secs()
            );
            told = true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// Installs the callbacks that answer questions, report events and show progress.
pub fn install_callbacks(sys: &System, notices: Rc<RefCell<Notices>>) {
    let alpm = sys.alpm();
    set_event_cb(sys, notices);
    alpm.set_log_cb((), |level: alpm::LogLevel, msg: &str, _: &mut ()| {
        crate::system::log_line(level, msg);
        on_log(level, msg);
    });
    alpm.set_progress_cb((), on_progress);
    alpm.set_dl_cb((), on_download);
}

/// Bytes and package files libalpm downloaded in this process's commits (upstream: peers are
/// asked by `download`, before the transaction).
static LIBALPM_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
static LIBALPM_FILES: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// What libalpm downloaded in this process's commits so far: bytes and package files.
pub fn libalpm_downloads() -> (u64, u32) {
    use std::sync::atomic::Ordering::Relaxed;
    (LIBALPM_BYTES.load(Relaxed), LIBALPM_FILES.load(Relaxed))
}

fn on_download(file: &str, ev: alpm::AnyDownloadEvent, _: &mut ()) {
    use alpm::DownloadEvent;
    let reporter = crate::progress::reporter();
    match ev.event() {
        DownloadEvent::Progress(p) => reporter.download(
            file,
            u64::try_from(p.downloaded).unwrap_or(0),
            u64::try_from(p.total).unwrap_or(0),
        ),
        DownloadEvent::Completed(c) => {
            reporter.download_done(file);
            match c.result {
                alpm::DownloadResult::Failed => tracing::warn!("download of {file} failed"),
                alpm::DownloadResult::UpToDate => tracing::debug!("{file} is up to date"),
                alpm::DownloadResult::Success => {
                    tracing::debug!("downloaded {file} ({} bytes)", c.total);
                    let package = crate::peer_serve::PACKAGE_EXTENSIONS
                        .iter()
                        .any(|e| file.ends_with(e));
                    if package {
                        LIBALPM_BYTES.fetch_add(
                            u64::try_from(c.total).unwrap_or(0),
                            std::sync::atomic::Ordering::Relaxed,
                        );
                        LIBALPM_FILES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
        }
        DownloadEvent::Retry(_) => tracing::warn!("retrying download of {file}"),
        _ => {}
    }
}

fn on_progress(
    kind: Progress,
    pkg: &str,
    percent: i32,
    howmany: usize,
    current: usize,
    _: &mut (),
) {
    let verb = match kind {
        Progress::AddStart => "installing",
        Progress::UpgradeStart => "upgrading",
        Progress::DowngradeStart => "downgrading",
        Progress::ReinstallStart => "reinstalling",
        Progress::RemoveStart => "removing",
        Progress::ConflictsStart => "checking file conflicts",
        Progress::DiskspaceStart => "checking disk space",
        Progress::IntegrityStart => "checking package integrity",
        Progress::LoadStart => "loading package files",
        Progress::KeyringStart => "checking keys",
    };
    crate::progress::reporter().step(crate::progress::Step {
        verb,
        package: pkg,
        percent: u8::try_from(percent.clamp(0, 100)).unwrap_or(100),
        current,
        total: howmany,
    });
}

thread_local! {
    /// Where the event callback records notices; set by `set_event_cb` for the thread that
    /// commits (libalpm calls back on the calling thread).
    static EVENT_SINK: RefCell<Option<Rc<RefCell<Notices>>>> = const { RefCell::new(None) };
    /// What the commit is running now, for warnings: the package being changed, the scriptlet
    /// or hook running (`scriptlet post_install of \`foo\``), and what it printed so far.
    static RUNNING: RefCell<Running> = const { RefCell::new(Running { package: None, task: None, output: Vec::new() }) };
}

/// See `RUNNING`.
struct Running {
    package: Option<String>,
    task: Option<String>,
    output: Vec<String>,
}

/// Error lines libalpm logs during a commit that goes on (a scriptlet or hook that failed)
/// become warnings naming what failed and what it printed.
fn on_log(level: alpm::LogLevel, msg: &str) {
    let msg = msg.trim_end();
    if level.contains(alpm::LogLevel::DEBUG) {
        // `_alpm_runscriptlet` logs `executing ". /tmp/alpm_XXXXXX/.INSTALL; post_install 1.0-1"`.
        if let Some(cmd) = msg.strip_prefix("executing \"")
            && let Some((_, call)) = cmd.split_once(".INSTALL; ")
        {
            let script = call
                .split_whitespace()
                .next()
                .unwrap_or("scriptlet")
                .to_owned();
            RUNNING.with(|r| {
                let mut r = r.borrow_mut();
                let pkg = r.package.clone().unwrap_or_else(|| "?".to_owned());
                r.task = Some(format!("scriptlet {script} of `{pkg}`"));
                r.output.clear();
            });
        }
        return;
    }
    if !level.contains(alpm::LogLevel::ERROR) {
        return;
    }
    let warning = RUNNING.with(|r| {
        let r = r.borrow();
        let output = if r.output.is_empty() {
            String::new()
        } else {
            format!("; it printed: {}", r.output.join(" | "))
        };
        match (&r.task, msg.contains("command failed to execute correctly")) {
            (Some(task), true) => format!("{task} failed{output}"),
            (Some(task), false) => format!("{task}: {msg}{output}"),
            (None, _) => msg.to_owned(),
        }
    });
    EVENT_SINK.with(|s| {
        if let Some(n) = s.borrow().as_ref() {
            n.borrow_mut().warnings.push(warning);
        }
    });
}

/// Installs libalpm's event callback directly. The `alpm` crate's safe wrapper reads the
/// event type through a `*const alpm_event_t`, but libalpm passes 4-byte-aligned
/// `alpm_event_any_t`s for simple events, which Rust's debug checks reject (an abort inside
/// the callback). Here the type is read unaligned, and only events whose structs hold pointers
/// (and so are pointer-aligned) are read as such.
fn set_event_cb(sys: &System, notices: Rc<RefCell<Notices>>) {
    EVENT_SINK.with(|s| *s.borrow_mut() = Some(notices));
    // SAFETY: the handle is valid for the lifetime of `sys`; the callback uses no context
    // pointer (the sink is thread-local) and libalpm calls it only on this thread.
    unsafe {
        alpm_sys::alpm_option_set_eventcb(
            sys.alpm().as_alpm_handle_t(),
            Some(on_event),
            std::ptr::null_mut(),
        )
    };
}

unsafe extern "C" fn on_event(_ctx: *mut std::ffi::c_void, event: *mut alpm_sys::alpm_event_t) {
    use alpm_sys::_alpm_event_type_t as T;
    if event.is_null() {
        return;
    }
    // SAFETY: every libalpm event starts with its type; it may be only 4-byte aligned.
    let kind = unsafe { std::ptr::read_unaligned(event as *const u32) };
    // SAFETY: libalpm passes NUL-terminated strings valid for the callback's duration.
    let text = |p| unsafe { crate::system::c_text(p) };
    let record = |f: &dyn Fn(&mut Notices)| {
        EVENT_SINK.with(|s| {
            if let Some(n) = s.borrow().as_ref() {
                f(&mut n.borrow_mut());
            }
        });
    };
    // SAFETY (each cast below): the type says which struct libalpm passed; these structs hold
    // pointers, so libalpm allocated them pointer-aligned.
    if kind == T::ALPM_EVENT_PACNEW_CREATED as u32 {
        let file = text(unsafe { (*(event as *const alpm_sys::alpm_event_pacnew_created_t)).file });
        tracing::warn!("{file} installed as {file}.pacnew: merge it (pacdiff)");
        record(&|n| n.pacnew.push(format!("{file}.pacnew")));
    } else if kind == T::ALPM_EVENT_PACSAVE_CREATED as u32 {
        let file =
            text(unsafe { (*(event as *const alpm_sys::alpm_event_pacsave_created_t)).file });
        tracing::warn!("{file} saved as {file}.pacsave");
        record(&|n| n.pacsave.push(format!("{file}.pacsave")));
    } else if kind == T::ALPM_EVENT_SCRIPTLET_INFO as u32 {
        let line = text(unsafe { (*(event as *const alpm_sys::alpm_event_scriptlet_info_t)).line });
        let line = line.trim_end().to_owned();
        tracing::info!("scriptlet: {line}");
        RUNNING.with(|r| r.borrow_mut().output.push(line.clone()));
        record(&|n| n.scriptlet.push(line.clone()));
    } else if kind == T::ALPM_EVENT_PACKAGE_OPERATION_START as u32 {
        let op = unsafe { &*(event as *const alpm_sys::alpm_event_package_operation_t) };
        let pkg = if op.newpkg.is_null() {
            op.oldpkg
        } else {
            op.newpkg
        };
        // SAFETY: libalpm's package, alive for the callback; its name is NUL-terminated.
        let name = if pkg.is_null() {
            String::new()
        } else {
            text(unsafe { alpm_sys::alpm_pkg_get_name(pkg) })
        };
        RUNNING.with(|r| {
            let mut r = r.borrow_mut();
            r.package = Some(name);
            r.task = None;
            r.output.clear();
        });
    } else if kind == T::ALPM_EVENT_HOOK_RUN_START as u32 {
        let hook = unsafe { &*(event as *const alpm_sys::alpm_event_hook_run_t) };
        let desc = if hook.desc.is_null() {
            text(hook.name)
        } else {
            text(hook.desc)
        };
        tracing::info!("running hook: {desc}");
        let name = text(hook.name);
        RUNNING.with(|r| {
            let mut r = r.borrow_mut();
            r.task = Some(format!("hook `{name}`"));
            r.output.clear();
        });
    } else if kind == T::ALPM_EVENT_TRANSACTION_START as u32 {
        tracing::info!("transaction started");
    } else if kind == T::ALPM_EVENT_TRANSACTION_DONE as u32 {
        tracing::info!("transaction done");
    }
}

/// Commits the transaction prepared on `sys` (`System::prepare` in `Mode::Apply`), sets install
/// reasons and releases the lock. On error nothing more is done and the lock is released.
pub fn commit(sys: &mut System, changes: &Changeset) -> Result<Notices, ApplyError> {
    let notices = Rc::new(RefCell::new(Notices::default()));
    install_callbacks(sys, notices.clone());
    RUNNING.with(|r| {
        let mut r = r.borrow_mut();
        r.package = None;
        r.task = None;
        r.output.clear();
    });
    // The plan's answers are in the changeset; from here on, the commit's own.
    let _ = sys.take_answers();
    let has_transaction =
        !sys.alpm().trans_add().is_empty() || !sys.alpm().trans_remove().is_empty();
    let result = (|| -> Result<(), ApplyError> {
        if has_transaction {
            sys.commit_transaction()
                .map_err(|source| ApplyError::Commit {
                    source: Box::new(source),
                })?;
        }
        sys.set_reasons(changes)?;
        Ok(())
    })();
    sys.release();
    EVENT_SINK.with(|s| *s.borrow_mut() = None);
    let answers = sys.take_answers();
    result?;
    let mut out = notices.borrow().clone();
    out.answers = answers;
    Ok(out)
}
