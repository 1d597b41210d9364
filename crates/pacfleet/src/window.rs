//! Maintenance windows: whether a pool's `window` (a cron expression for the start, in the
//! host's local time, and a duration) is open at a given moment, and when it next opens.
//! Pure: the caller passes the time.
//!
//! DST: starts are computed by the `cron` crate in the host's time zone. A start that falls in
//! the hour skipped in spring does not happen that day; a start in the hour repeated in autumn
//! happens twice (once in each UTC offset), so that night's window is open for both. The
//! duration is real elapsed time. Windows that should never meet a DST change start outside
//! 02:00–03:00.
//!
//! Bounds: a window lasts at most [`MAX_DURATION`] (7 days; `validate` refuses longer ones,
//! naming `window.duration`), the clock must be within the years the cron crate computes
//! (1971–2100), and at most [`MAX_STARTS`] cron starts are examined per evaluation. All date
//! arithmetic is checked: [`gate`] returns a [`WindowError`] rather than panicking or spinning.

use std::str::FromStr;

use chrono::{DateTime, Datelike, TimeZone};

use crate::manifest::Window;

/// Whether changes may be applied now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Gate<Tz: TimeZone> {
    /// No window, or inside one (until the given time, if any).
    Open {
        /// When the current window closes (`None`: no window at all).
        until: Option<DateTime<Tz>>,
    },
    /// Outside the window; it next opens at this time (`None`: never again).
    Closed {
        /// The next start.
        next: Option<DateTime<Tz>>,
    },
}

// The duration rule is the manifest's (validate checks it there); the gate uses the same.
pub use crate::manifest::{
    MAX_WINDOW_DURATION as MAX_DURATION, WindowDurationError as DurationError,
    parse_window_duration as parse_duration,
};

/// How much earlier than the earliest start that could matter the starts are walked, so a start
/// repeated by a DST change (or moved by any offset change, at most a few hours in every time
/// zone) is seen in both of its offsets.
const DST_MARGIN: chrono::TimeDelta = chrono::TimeDelta::hours(3);

/// The starts are searched backwards from `now`, one stretch of this length at a time, each
/// walked forward from `DST_MARGIN` before it: a dense cron (every second) costs one stretch,
/// a sparse one a few cheap steps per stretch.
const STRETCH: chrono::TimeDelta = chrono::TimeDelta::hours(6);

/// At most this many cron starts are examined in one evaluation (one stretch of a cron firing
/// every second is 32 400); more is an error, never a spin.
pub const MAX_STARTS: usize = 100_000;

/// The window could not be evaluated (validate reports these earlier).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("window {what} `{value}` is invalid: {detail}")]
pub struct WindowError {
    what: &'static str,
    value: String,
    detail: String,
}

/// Evaluates `window` at `now`. Total: every input gives a [`Gate`] or a [`WindowError`],
/// within [`MAX_STARTS`] cron steps.
pub fn gate<Tz: TimeZone>(
    window: Option<&Window>,
    now: &DateTime<Tz>,
) -> Result<Gate<Tz>, WindowError> {
    let Some(w) = window else {
        return Ok(Gate::Open { until: None });
    };
    let schedule = cron::Schedule::from_str(&w.cron).map_err(|e| WindowError {
        what: "cron",
        value: w.cron.clone(),
        detail: e.to_string(),
    })?;
    let duration = parse_duration(&w.duration).map_err(|e| WindowError {
        what: "duration",
        value: w.duration.clone(),
        detail: e.to_string(),
    })?;
    let out_of_range = || WindowError {
        what: "duration",
        value: w.duration.clone(),
        detail: format!(
            "the window around {} reaches beyond the dates this host can represent",
            now.to_rfc3339()
        ),
    };
    let too_dense = || WindowError {
        what: "cron",
        value: w.cron.clone(),
        detail: format!(
            "more than {MAX_STARTS} starts to examine; use a cron that fires less often"
        ),
    };
    // The cron crate computes starts in the years 1970–2100 (and panics at the ends of time).
    if !(1971..=2100).contains(&now.year()) {
        return Err(WindowError {
            what: "cron",
            value: w.cron.clone(),
            detail: format!(
                "the clock says {}, outside the years 1971–2100 window starts are computed for; set the host's clock",
                now.to_rfc3339()
            ),
        });
    }
    // A window [start, start + duration) is open now if the latest start at or before `now`
    // ends after it. That start is searched backwards from `now` in stretches, each walked
    // forward from a margin before it (see `DST_MARGIN`), down to the earliest start that could
    // still be open.
    let earliest = now
        .clone()
        .checked_sub_signed(duration)
        .ok_or_else(out_of_range)?;
    let mut examined = 0usize;
    let mut upper = now.clone();
    let latest = loop {
        let lower = upper
            .clone()
            .checked_sub_signed(STRETCH)
            .ok_or_else(out_of_range)?;
        let from = lower
            .clone()
            .checked_sub_signed(DST_MARGIN)
            .ok_or_else(out_of_range)?;
        let mut found = None;
        for start in schedule.after(&from) {
            examined += 1;
            if examined > MAX_STARTS {
                return Err(too_dense());
            }
            if start > upper {
                break;
            }
            if found.as_ref().is_none_or(|f| &start > f) {
                found = Some(start);
            }
        }
        if found.is_some() || lower <= earliest {
            break found;
        }
        upper = lower;
    };
    if let Some(start) = latest {
        let end = start
            .checked_add_signed(duration)
            .ok_or_else(out_of_range)?;
        if &end > now {
            return Ok(Gate::Open { until: Some(end) });
        }
    }
    Ok(Gate::Closed {
        next: schedule.after(now).next(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{FixedOffset, Utc};

    fn w(cron: &str, duration: &str) -> Window {
        Window {
            cron: cron.into(),
            duration: duration.into(),
        }
    }

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn no_window_is_always_open() {
        assert_eq!(
            gate(None, &at("2026-11-23T12:00:00Z")),
            Ok(Gate::Open { until: None })
        );
    }

    #[test]
    fn saturday_night_window() {
        let win = w("0 0 2 * * Sat", "4h");
        // 2026-11-28 is a Saturday.
        assert_eq!(
            gate(Some(&win), &at("2026-11-28T03:00:00Z")),
            Ok(Gate::Open {
                until: Some(at("2026-11-28T06:00:00Z"))
            })
        );
        assert_eq!(
            gate(Some(&win), &at("2026-11-28T02:00:00Z")),
            Ok(Gate::Open {
                until: Some(at("2026-11-28T06:00:00Z"))
            })
        );
        assert_eq!(
            gate(Some(&win), &at("2026-11-28T06:00:00Z")),
            Ok(Gate::Closed {
                next: Some(at("2026-12-05T02:00:00Z"))
            })
        );
        assert_eq!(
            gate(Some(&win), &at("2026-11-23T12:00:00Z")),
            Ok(Gate::Closed {
                next: Some(at("2026-11-28T02:00:00Z"))
            })
        );
    }

    #[test]
    fn window_across_midnight_and_month_end() {
        let win = w("0 0 23 * * *", "3h");
        assert_eq!(
            gate(Some(&win), &at("2026-12-01T01:30:00Z")),
            Ok(Gate::Open {
                until: Some(at("2026-12-01T02:00:00Z"))
            })
        );
        assert_eq!(
            gate(Some(&win), &at("2026-12-01T02:00:01Z")),
            Ok(Gate::Closed {
                next: Some(at("2026-12-01T23:00:00Z"))
            })
        );
    }

    #[test]
    fn local_offsets_are_honoured() {
        let tz = FixedOffset::east_opt(2 * 3600).unwrap();
        let now = tz.with_ymd_and_hms(2026, 11, 28, 2, 30, 0).unwrap(); // 00:30 UTC
        let win = w("0 0 2 * * Sat", "1h");
        assert!(matches!(gate(Some(&win), &now), Ok(Gate::Open { .. })));
    }

    #[test]
    fn invalid_window_is_an_error() {
        assert!(gate(Some(&w("nope", "1h")), &at("2026-11-23T12:00:00Z")).is_err());
        assert!(
            gate(
                Some(&w("0 0 2 * * Sat", "soon")),
                &at("2026-11-23T12:00:00Z")
            )
            .is_err()
        );
    }
}

#[cfg(test)]
mod extremes {
    use super::*;
    use chrono::Utc;
    use proptest::prelude::*;

    fn w(cron: &str, duration: &str) -> Window {
        Window {
            cron: cron.into(),
            duration: duration.into(),
        }
    }

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 28, 3, 0, 0).unwrap()
    }

    #[test]
    fn durations_over_a_week_are_errors_not_panics() {
        for d in [
            "300000years",
            "60years",
            "8days",
            "7days 1s",
            "292000000years",
        ] {
            for cron in ["* * * * * *", "0 0 2 * * Sat"] {
                let e = gate(Some(&w(cron, d)), &now()).unwrap_err();
                assert!(
                    e.to_string().contains("longer than 7 days"),
                    "{cron} {d}: {e}"
                );
            }
        }
        assert_eq!(
            parse_duration("7d"),
            Ok(chrono::TimeDelta::days(7)),
            "a week is allowed"
        );
        assert!(matches!(
            parse_duration("soon"),
            Err(DurationError::Parse(_))
        ));
    }

    #[test]
    fn a_week_long_window_of_a_cron_firing_every_second_is_quick() {
        let started = std::time::Instant::now();
        assert_eq!(
            gate(Some(&w("* * * * * *", "7d")), &now()),
            Ok(Gate::Open {
                until: Some(now() + chrono::TimeDelta::days(7))
            })
        );
        // A weekly cron with a week-long window: always open, from the last start.
        assert_eq!(
            gate(
                Some(&w("0 0 2 * * Sat", "7d")),
                &(now() + chrono::TimeDelta::days(6))
            ),
            Ok(Gate::Open {
                until: Some(now() - chrono::TimeDelta::hours(1) + chrono::TimeDelta::days(7))
            })
        );
        // A cron that never fires again: closed for good.
        assert_eq!(
            gate(Some(&w("0 0 0 1 1 * 2020", "7d")), &now()),
            Ok(Gate::Closed { next: None })
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn the_ends_of_time_are_errors_or_gates_never_panics() {
        for t in [
            DateTime::<Utc>::MIN_UTC,
            DateTime::<Utc>::MIN_UTC + chrono::TimeDelta::hours(1),
            DateTime::<Utc>::MAX_UTC,
            DateTime::<Utc>::MAX_UTC - chrono::TimeDelta::hours(1),
            DateTime::<Utc>::UNIX_EPOCH,
        ] {
            for (cron, d) in [
                ("* * * * * *", "7d"),
                ("0 0 2 * * Sat", "4h"),
                ("0 0 0 29 2 *", "1s"),
            ] {
                let _ = gate(Some(&w(cron, d)), &t);
            }
        }
        let e = gate(Some(&w("* * * * * *", "1h")), &DateTime::<Utc>::MAX_UTC).unwrap_err();
        assert!(e.to_string().contains("set the host's clock"), "{e}");
        let last = Utc.with_ymd_and_hms(2100, 12, 31, 23, 59, 59).unwrap();
        assert_eq!(
            gate(Some(&w("0 0 2 * * Sat", "1h")), &last),
            Ok(Gate::Closed { next: None })
        );
    }

    /// The old forward walk (from a day before the earliest start that could still be open),
    /// which is right but unbounded: the stretched search must agree with it.
    fn reference<Tz: TimeZone>(w: &Window, now: &DateTime<Tz>) -> Gate<Tz> {
        let schedule = cron::Schedule::from_str(&w.cron).unwrap();
        let duration = parse_duration(&w.duration).unwrap();
        let from = now.clone() - duration - chrono::TimeDelta::days(1);
        let until = schedule
            .after(&from)
            .take_while(|start| start <= now)
            .map(|start| start + duration)
            .filter(|end| end > now)
            .max();
        match until {
            Some(_) => Gate::Open { until },
            None => Gate::Closed {
                next: schedule.after(now).next(),
            },
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]
        #[test]
        fn agrees_with_the_unbounded_walk(
            cron in prop::sample::select(vec![
                "0 0 2 * * Sat", "0 30 2 * * *", "0 0 */6 * * *", "0 */15 * * * *",
                "0 0 0 1 * *", "0 0 9 * * Mon-Fri", "0 0 0 29 2 *",
            ]),
            duration in prop::sample::select(vec!["1s", "30m", "1h", "4h", "23h", "1d", "3d", "7d"]),
            // Any time, and times within two days of Berlin's DST changes of 2026.
            secs in prop_oneof![
                1_500_000_000i64..2_500_000_000i64,
                1_774_746_000i64 - 172_800..1_774_746_000 + 172_800,
                1_792_890_000i64 - 172_800..1_792_890_000 + 172_800,
            ],
        ) {
            let now = DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
            let win = w(cron, duration);
            let got = gate(Some(&win), &now).unwrap();
            prop_assert_eq!(&got, &reference(&win, &now));
            let berlin = now.with_timezone(&chrono_tz::Europe::Berlin);
            prop_assert_eq!(gate(Some(&win), &berlin).unwrap(), reference(&win, &berlin));
            match got {
                Gate::Open { until: Some(u) } => {
                    prop_assert!(u > now && u - now <= parse_duration(duration).unwrap());
                }
                Gate::Open { until: None } => prop_assert!(false, "a window has an end"),
                Gate::Closed { next } => prop_assert!(next.is_none_or(|n| n > now)),
            }
        }
    }
}

#[cfg(test)]
mod dst {
    use super::*;
    use chrono_tz::Europe::Berlin;

    fn nightly() -> Window {
        Window {
            cron: "0 30 2 * * *".into(),
            duration: "1h".into(),
        }
    }

    #[test]
    fn a_start_in_the_skipped_hour_does_not_happen_that_day() {
        // 2026-03-29: Berlin skips 02:00–03:00 (CET → CEST).
        let after_midnight = Berlin.with_ymd_and_hms(2026, 3, 29, 1, 0, 0).unwrap();
        match gate(Some(&nightly()), &after_midnight) {
            Ok(Gate::Closed { next: Some(n) }) => {
                assert_eq!(n, Berlin.with_ymd_and_hms(2026, 3, 30, 2, 30, 0).unwrap());
            }
            other => panic!("{other:?}"),
        }
        let at_three = Berlin.with_ymd_and_hms(2026, 3, 29, 3, 15, 0).unwrap();
        assert!(matches!(
            gate(Some(&nightly()), &at_three),
            Ok(Gate::Closed { .. })
        ));
    }

    #[test]
    fn a_start_in_the_repeated_hour_happens_in_both_offsets() {
        // 2026-10-25: Berlin repeats 02:00–03:00 (CEST → CET); 02:30 happens twice.
        let first = Berlin
            .with_ymd_and_hms(2026, 10, 25, 2, 30, 0)
            .earliest()
            .unwrap();
        let second = Berlin
            .with_ymd_and_hms(2026, 10, 25, 2, 30, 0)
            .latest()
            .unwrap();
        assert_eq!(second - first, chrono::Duration::hours(1));
        // Open from the first 02:30 for an hour (real time), i.e. until the second 02:30 …
        let in_first = first + chrono::Duration::minutes(40);
        assert_eq!(
            gate(Some(&nightly()), &in_first),
            Ok(Gate::Open {
                until: Some(second)
            })
        );
        // … and again for an hour from the second: two hours in all that night.
        let in_second = second + chrono::Duration::minutes(40);
        assert_eq!(
            gate(Some(&nightly()), &in_second),
            Ok(Gate::Open {
                until: Some(second + chrono::Duration::hours(1))
            })
        );
    }
}
