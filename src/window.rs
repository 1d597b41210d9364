//! Maintenance windows: whether a pool's `window` (a cron expression for the start, in the
//! host's local time, and a duration) is open at a given moment, and when it next opens.
//! Pure: the caller passes the time.
//!
//! DST: starts are computed by the `cron` crate in the host's time zone. A start that falls in
//! the hour skipped in spring does not happen that day; a start in the hour repeated in autumn
//! happens twice (once in each UTC offset), so that night's window is open for both. The
//! duration is real elapsed time. Windows that should never meet a DST change start outside
//! 02:00–03:00.

use std::str::FromStr;

use chrono::{DateTime, TimeZone};

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

/// The window could not be evaluated (validate reports these earlier).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("window {what} `{value}` is invalid: {detail}")]
pub struct WindowError {
    what: &'static str,
    value: String,
    detail: String,
}

/// Evaluates `window` at `now`.
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
    let duration = humantime::parse_duration(&w.duration).map_err(|e| WindowError {
        what: "duration",
        value: w.duration.clone(),
        detail: e.to_string(),
    })?;
    let duration = chrono::Duration::from_std(duration).map_err(|e| WindowError {
        what: "duration",
        value: w.duration.clone(),
        detail: e.to_string(),
    })?;
    // A window [start, start + duration) is open now if some start is at or before `now` and
    // ends after it. Starts are walked from a day before the earliest that could still be
    // open, so a start repeated by a DST change is seen in both of its offsets.
    let from = now.clone() - duration - chrono::Duration::days(1);
    let until = schedule
        .after(&from)
        .take_while(|start| start <= now)
        .map(|start| start + duration)
        .filter(|end| end > now)
        .max();
    if until.is_some() {
        return Ok(Gate::Open { until });
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
