//! Applying: committing one prepared libalpm transaction under pacman's lock, answering
//! libalpm's questions by policy (never interactively), showing progress (bars on a terminal,
//! log lines otherwise), collecting .pacnew/.pacsave and scriptlet events, and setting install
//! reasons afterwards. Waiting for a lock held by someone else is bounded and never deletes it.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::Path;
use std::rc::Rc;
use std::time::{Duration, Instant};

use alpm::{AnyQuestion, Progress, Question};

use crate::plan::Changeset;
use crate::system::{System, SystemError, lock_holder};

/// Committing failed.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// Preparing, locking or another libalpm step failed before anything changed.
    #[error(transparent)]
    System(#[from] SystemError),
    /// libalpm's commit failed.
    #[error(
        "the package transaction failed: {detail}; see the log above and `pacman -Dk` for the database state"
    )]
    Commit {
        /// libalpm's reasons.
        detail: String,
    },
}

/// What happened during a commit that the operator should know about.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Notices {
    /// `.pacnew` files written (new config kept aside; merge them).
    pub pacnew: Vec<String>,
    /// `.pacsave` files written (removed package's modified config kept).
    pub pacsave: Vec<String>,
    /// Lines printed by install scriptlets.
    pub scriptlet: Vec<String>,
    /// Questions libalpm asked and how policy answered them.
    pub answers: Vec<String>,
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
    let terminal = std::io::stderr().is_terminal();
    alpm.set_question_cb(
        notices.clone(),
        |q: AnyQuestion, n: &mut Rc<RefCell<Notices>>| answer(q, &mut n.borrow_mut()),
    );
    set_event_cb(sys, notices);
    alpm.set_progress_cb(
        ProgressState {
            bar: None,
            terminal,
            logged: None,
        },
        on_progress,
    );
    alpm.set_dl_cb(
        Downloads {
            terminal,
            bars: indicatif::MultiProgress::new(),
            active: Default::default(),
        },
        on_download,
    );
}

/// Download bars on a terminal, one per file.
struct Downloads {
    terminal: bool,
    bars: indicatif::MultiProgress,
    active: std::collections::HashMap<String, indicatif::ProgressBar>,
}

fn on_download(file: &str, ev: alpm::AnyDownloadEvent, st: &mut Downloads) {
    use alpm::DownloadEvent;
    match ev.event() {
        DownloadEvent::Progress(p) if st.terminal => {
            let bar = st.active.entry(file.to_owned()).or_insert_with(|| {
                let bar = indicatif::ProgressBar::new(u64::try_from(p.total).unwrap_or(0))
                    .with_style(
                        indicatif::ProgressStyle::with_template(
                            "{msg:48} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
                        )
                        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
                    );
                bar.set_message(file.to_owned());
                st.bars.add(bar)
            });
            bar.set_length(u64::try_from(p.total).unwrap_or(0));
            bar.set_position(u64::try_from(p.downloaded).unwrap_or(0));
        }
        DownloadEvent::Completed(c) => {
            if let Some(bar) = st.active.remove(file) {
                bar.finish_and_clear();
            }
            match c.result {
                alpm::DownloadResult::Failed => tracing::warn!("download of {file} failed"),
                alpm::DownloadResult::UpToDate => tracing::debug!("{file} is up to date"),
                alpm::DownloadResult::Success => {
                    tracing::debug!("downloaded {file} ({} bytes)", c.total)
                }
            }
        }
        DownloadEvent::Retry(_) => tracing::warn!("retrying download of {file}"),
        _ => {}
    }
}

/// What the progress callback remembers between calls.
struct ProgressState {
    /// The bar on a terminal.
    bar: Option<indicatif::ProgressBar>,
    /// Whether stderr is a terminal (bars) or not (one log line per package).
    terminal: bool,
    /// The last step logged, so each package is logged once (libalpm reports 100% repeatedly).
    logged: Option<(Progress, String, usize)>,
}

fn on_progress(
    kind: Progress,
    pkg: &str,
    percent: i32,
    howmany: usize,
    current: usize,
    st: &mut ProgressState,
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
    if st.terminal {
        let bar = st.bar.get_or_insert_with(|| {
            indicatif::ProgressBar::new(100).with_style(
                indicatif::ProgressStyle::with_template("{msg:48} [{bar:30}] {percent:>3}%")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            )
        });
        bar.set_message(format!("({current}/{howmany}) {verb} {pkg}"));
        bar.set_position(u64::try_from(percent.clamp(0, 100)).unwrap_or(0));
        if percent >= 100 && current == howmany {
            bar.finish_and_clear();
            st.bar = None;
        }
        return;
    }
    let step = (kind, pkg.to_owned(), current);
    if percent >= 100 && st.logged.as_ref() != Some(&step) {
        if pkg.is_empty() {
            tracing::debug!("{verb}: done");
        } else {
            tracing::info!("({current}/{howmany}) {verb} {pkg}");
        }
        st.logged = Some(step);
    }
}

thread_local! {
    /// Where the event callback records notices; set by `set_event_cb` for the thread that
    /// commits (libalpm calls back on the calling thread).
    static EVENT_SINK: RefCell<Option<Rc<RefCell<Notices>>>> = const { RefCell::new(None) };
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
    let text = |p: *const std::ffi::c_char| {
        if p.is_null() {
            String::new()
        } else {
            // SAFETY: libalpm passes NUL-terminated strings valid for the callback's duration.
            unsafe { std::ffi::CStr::from_ptr(p) }
                .to_string_lossy()
                .into_owned()
        }
    };
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
        record(&|n| n.scriptlet.push(line.clone()));
    } else if kind == T::ALPM_EVENT_HOOK_RUN_START as u32 {
        let hook = unsafe { &*(event as *const alpm_sys::alpm_event_hook_run_t) };
        let desc = if hook.desc.is_null() {
            text(hook.name)
        } else {
            text(hook.desc)
        };
        tracing::info!("running hook: {desc}");
    } else if kind == T::ALPM_EVENT_TRANSACTION_START as u32 {
        tracing::info!("transaction started");
    } else if kind == T::ALPM_EVENT_TRANSACTION_DONE as u32 {
        tracing::info!("transaction done");
    }
}

/// libalpm's questions, answered by policy. Recorded so the history says what was decided.
fn answer(q: AnyQuestion, n: &mut Notices) {
    let said = match q.question() {
        Question::InstallIgnorepkg(mut x) => {
            x.set_install(false);
            format!(
                "`{}` is in IgnorePkg on this host: not installed (remove it from IgnorePkg to let pacfleet manage it)",
                x.pkg().name()
            )
        }
        Question::Replace(x) => {
            x.set_replace(true);
            format!(
                "`{}` replaced by `{}` as its repository says",
                x.oldpkg().name(),
                x.newpkg().name()
            )
        }
        Question::Conflict(mut x) => {
            x.set_remove(false);
            let c = x.conflict();
            format!(
                "`{}` conflicts with installed `{}`: not removed automatically; resolve the conflict in the manifests",
                c.package1().name(),
                c.package2().name()
            )
        }
        Question::Corrupted(mut x) => {
            x.set_remove(true);
            format!(
                "corrupted package file {} deleted ({})",
                x.filepath(),
                x.reason()
            )
        }
        Question::RemovePkgs(mut x) => {
            x.set_skip(false);
            let names: Vec<&str> = x.packages().iter().map(|p| p.name()).collect();
            format!(
                "packages with unresolvable dependencies not skipped: {}",
                names.join(", ")
            )
        }
        Question::SelectProvider(mut x) => {
            x.set_index(0);
            let first = x
                .providers()
                .iter()
                .next()
                .map(|p| p.name().to_owned())
                .unwrap_or_default();
            format!(
                "`{}` provided by `{first}` (the first provider, as pacman's default)",
                x.depend()
            )
        }
        Question::ImportKey(mut x) => {
            x.set_import(false);
            format!(
                "PGP key {} ({}) not imported: keys are managed by the host's keyring, not by pacfleet",
                x.fingerprint(),
                x.uid()
            )
        }
    };
    tracing::info!("{said}");
    n.answers.push(said);
}

/// Commits the transaction prepared on `sys` (`System::prepare` in `Mode::Apply`), sets install
/// reasons and releases the lock. On error nothing more is done and the lock is released.
pub fn commit(sys: &mut System, changes: &Changeset) -> Result<Notices, ApplyError> {
    let notices = Rc::new(RefCell::new(Notices::default()));
    install_callbacks(sys, notices.clone());
    let has_transaction =
        !sys.alpm().trans_add().is_empty() || !sys.alpm().trans_remove().is_empty();
    let result = (|| -> Result<(), ApplyError> {
        if has_transaction {
            sys.commit_transaction()
                .map_err(|detail| ApplyError::Commit { detail })?;
        }
        sys.set_reasons(changes)?;
        Ok(())
    })();
    sys.release();
    result?;
    let out = notices.borrow().clone();
    Ok(out)
}
