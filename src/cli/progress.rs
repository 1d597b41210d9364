//! Progress bars on a terminal: the indicatif [`Reporter`] the binary installs for the process
//! when stderr is a terminal (`cli::run`). One bar per download (name, bytes, rate), one bar
//! for the transaction step running (`(3/12) upgrading linux`).

use std::collections::HashMap;
use std::sync::Mutex;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use pacfleet::progress::{Reporter, Step};

/// Bars on stderr.
#[derive(Default)]
pub struct Bars {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    multi: MultiProgress,
    downloads: HashMap<String, ProgressBar>,
    step: Option<ProgressBar>,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

impl Bars {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Reporter for Bars {
    fn download(&self, file: &str, downloaded: u64, total: u64) {
        let mut st = self.state();
        let State {
            multi, downloads, ..
        } = &mut *st;
        let bar = downloads.entry(file.to_owned()).or_insert_with(|| {
            let bar = ProgressBar::new(total).with_style(style(
                "{msg:48} {bytes:>10}/{total_bytes:<10} {bytes_per_sec:>12}",
            ));
            bar.set_message(super::output::terminal_safe(file));
            multi.add(bar)
        });
        bar.set_length(total);
        bar.set_position(downloaded);
    }

    fn download_done(&self, file: &str) {
        if let Some(bar) = self.state().downloads.remove(file) {
            bar.finish_and_clear();
        }
    }

    fn step(&self, s: Step<'_>) {
        let mut st = self.state();
        let bar = st.step.get_or_insert_with(|| {
            ProgressBar::new(100).with_style(style("{msg:48} [{bar:30}] {percent:>3}%"))
        });
        bar.set_message(format!(
            "({}/{}) {} {}",
            s.current,
            s.total,
            s.verb,
            super::output::terminal_safe(s.package)
        ));
        bar.set_position(u64::from(s.percent));
        if s.percent >= 100 && s.current == s.total {
            bar.finish_and_clear();
            st.step = None;
        }
    }
}
