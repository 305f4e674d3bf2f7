//! CronJob schedules: parsing (`croner`, held to robfig/cron's `ParseStandard` subset by the API's
//! validation) and upstream's `mostRecentScheduleTime` / `nextScheduleTimeDuration` arithmetic.
//! Pure: no I/O, `now` is always a parameter.
//!
//! Times are computed in the schedule's zone (`spec.timeZone`, else a `TZ=`/`CRON_TZ=` prefix of a
//! legacy schedule, else the controller-manager's own zone, as upstream uses its process's local
//! zone). Daylight saving follows croner (OCPS 1.4): a wall-clock time skipped by a spring-forward
//! jump fires once at the end of the gap; a repeated wall-clock time fires once (the first) for a
//! fixed-time schedule, and in both halves for a schedule with a wildcard/stepped hour.

use std::str::FromStr;

use croner::parser::{CronParser, Seconds, Year};
use croner::Cron;
use jiff::tz::TimeZone;
use jiff::{SignedDuration, Timestamp, Zoned};

/// Upstream's threshold: more missed start times than this is a warning (TooManyMissedTimes).
pub const TOO_MANY_MISSED: i64 = 100;

/// Upstream's `nextScheduleDelta`: requeue a little after the schedule time, never just before it.
pub const NEXT_SCHEDULE_DELTA: SignedDuration = SignedDuration::from_millis(100);

/// A parsed schedule in its zone.
#[derive(Debug, Clone)]
pub enum Schedule {
    Cron {
        cron: Box<Cron>,
        tz: TimeZone,
    },
    /// robfig's `@every <duration>` (ConstantDelaySchedule): at least one second.
    Every(SignedDuration),
}

/// How the schedule names its zone, for the UnsupportedSchedule warning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed {
    pub schedule_has_tz: bool,
}

/// Looks an IANA zone up (system database first, then jiff's bundled copy). "Local" and "" are
/// refused as upstream's validation does; the caller maps the error to an event.
pub fn zone(name: &str) -> Result<TimeZone, String> {
    if name.is_empty() || name.eq_ignore_ascii_case("local") {
        return Err(format!("unknown time zone {name}"));
    }
    TimeZone::get(name).map_err(|_| format!("unknown time zone {name}"))
}

/// Parses `schedule` (with `spec.timeZone` if set) as upstream's `formatSchedule` +
/// `cron.ParseStandard` would: a `TZ=`/`CRON_TZ=` prefix names the zone when `timeZone` is unset.
pub fn parse(schedule: &str, time_zone: Option<&str>) -> Result<(Schedule, Parsed), String> {
    let mut spec = schedule.trim();
    let mut tz: Option<TimeZone> = match time_zone {
        Some(z) => Some(zone(z)?),
        None => None,
    };
    let schedule_has_tz = spec.contains("TZ");
    if let Some(rest) = spec.strip_prefix("TZ=").or_else(|| spec.strip_prefix("CRON_TZ=")) {
        let (name, tail) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        let z = zone(name).map_err(|e| format!("provided bad location {name}: {e}"))?;
        if tz.is_none() {
            tz = Some(z);
        }
        spec = tail.trim();
    }
    let tz = tz.unwrap_or_else(TimeZone::system);
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    if let Some(d) = spec.strip_prefix("@every ") {
        let d = parse_go_duration(d.trim()).ok_or_else(|| format!("failed to parse duration {spec}"))?;
        // robfig: anything under a second becomes a second.
        let d = d.max(SignedDuration::from_secs(1));
        return Ok((Schedule::Every(SignedDuration::from_secs(d.as_secs())), Parsed { schedule_has_tz }));
    }
    let parser = CronParser::builder()
        .seconds(Seconds::Disallowed)
        .year(Year::Disallowed)
        // robfig's "N/step" means "N-max/step".
        .sloppy_ranges(true)
        .build();
    let cron = match spec {
        // croner's @weekly etc. are robfig's; spelled out to keep them 5-field.
        "@yearly" | "@annually" => Cron::from_str("0 0 1 1 *"),
        "@monthly" => Cron::from_str("0 0 1 * *"),
        "@weekly" => Cron::from_str("0 0 * * 0"),
        "@daily" | "@midnight" => Cron::from_str("0 0 * * *"),
        "@hourly" => Cron::from_str("0 * * * *"),
        s if s.starts_with('@') => return Err(format!("unrecognized descriptor: {s}")),
        s => parser.parse(s),
    }
    .map_err(|e| e.to_string())?;
    Ok((Schedule::Cron { cron: Box::new(cron), tz }, Parsed { schedule_has_tz }))
}

/// Go's `time.ParseDuration` for the units a schedule uses (h, m, s, ms; decimals allowed).
fn parse_go_duration(s: &str) -> Option<SignedDuration> {
    if s.is_empty() {
        return None;
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let mult = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 0.001,
            "us" | "µs" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        total += n * mult;
        rest = &rest[unit_len..];
    }
    SignedDuration::try_from_secs_f64(total).ok()
}

impl Schedule {
    /// robfig's `Schedule.Next`: the first activation strictly after `t` (whole seconds), or None
    /// if there is none within croner's search limit.
    pub fn next(&self, t: Timestamp) -> Option<Timestamp> {
        match self {
            Schedule::Every(d) => {
                // robfig: t + delay - t's sub-second part.
                let base = Timestamp::from_second(t.as_second()).ok()?;
                base.checked_add(*d).ok()
            }
            Schedule::Cron { cron, tz } => {
                let z: Zoned = t.to_zoned(tz.clone());
                cron.find_next_occurrence(&z, false).ok().map(|z| z.timestamp())
            }
        }
    }
}

/// Upstream's `missedSchedulesType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Missed {
    None,
    Few,
    Many,
}

/// The inputs of upstream's schedule arithmetic, from the CronJob.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub created: Timestamp,
    pub last_schedule: Option<Timestamp>,
    pub starting_deadline_seconds: Option<i64>,
}

/// Upstream's `mostRecentScheduleTime`: (earliest time considered, the most recent schedule time
/// in (earliest, now], how many were missed). An Err for a schedule whose two consecutive times are
/// less than a second apart (or that never fires again), as upstream's "invalid schedule".
pub fn most_recent(
    s: &Schedule,
    times: Times,
    now: Timestamp,
    include_deadline: bool,
) -> Result<(Timestamp, Option<Timestamp>, Missed), String> {
    let mut earliest = times.last_schedule.unwrap_or(times.created);
    if include_deadline {
        if let Some(d) = times.starting_deadline_seconds {
            let deadline = now - SignedDuration::from_secs(d);
            if deadline > earliest {
                earliest = deadline;
            }
        }
    }
    let Some(t1) = s.next(earliest) else { return Ok((earliest, None, Missed::None)) };
    if now < t1 {
        return Ok((earliest, None, Missed::None));
    }
    let Some(t2) = s.next(t1) else { return Ok((earliest, Some(t1), Missed::None)) };
    if now < t2 {
        return Ok((earliest, Some(t1), Missed::None));
    }
    let between = (t2 - t1).get_seconds() + i64::from((t2 - t1).get_milliseconds() >= 500);
    if between < 1 {
        return Err("time difference between two schedules is less than 1 second".into());
    }
    let elapsed = (now - t1).get_seconds();
    let missed = elapsed / between + 1;
    // Start two intervals before the estimated last one and walk forward (upstream's way of
    // staying exact for irregular schedules like `30 6-16/4 * * 1-5`).
    let start = t1 + SignedDuration::from_secs((missed - 2) * between);
    let mut most_recent = None;
    let mut t = s.next(start);
    while let Some(x) = t {
        if x > now {
            break;
        }
        most_recent = Some(x);
        t = s.next(x);
    }
    let kind = if missed > TOO_MANY_MISSED { Missed::Many } else { Missed::Few };
    Ok((earliest, most_recent, kind))
}

/// Upstream's `nextScheduleTimeDuration`: how long from `now` until the schedule after the most
/// recent one (plus [`NEXT_SCHEDULE_DELTA`]).
pub fn next_requeue(s: &Schedule, times: Times, now: Timestamp) -> Option<std::time::Duration> {
    let from = match most_recent(s, times, now, false) {
        Err(_) => now,
        Ok((earliest, None, _)) => earliest,
        Ok((_, Some(t), _)) => t,
    };
    let next = s.next(from)?;
    let wait = (next + NEXT_SCHEDULE_DELTA) - now;
    Some(std::time::Duration::try_from(wait).unwrap_or(std::time::Duration::ZERO))
}

/// Upstream's `getTimeHashInMinutes`: the Job name suffix.
pub fn job_name(cronjob: &str, scheduled: Timestamp) -> String {
    format!("{cronjob}-{}", scheduled.as_second().div_euclid(60))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn utc(s: &str) -> Schedule {
        parse(s, Some("UTC")).unwrap().0
    }

    #[test]
    fn next_times_in_utc_with_ranges_steps_lists_names_and_macros() {
        let t = ts("2026-12-07T13:05:30Z");
        assert_eq!(utc("* * * * *").next(t), Some(ts("2026-12-07T13:06:00Z")));
        assert_eq!(utc("*/15 * * * *").next(t), Some(ts("2026-12-07T13:15:00Z")));
        assert_eq!(utc("5/20 * * * *").next(t), Some(ts("2026-12-07T13:25:00Z")), "N/step is N-max/step");
        assert_eq!(utc("0,30 9-17 * * *").next(t), Some(ts("2026-12-07T13:30:00Z")));
        // 2026-12-07 is a Monday.
        assert_eq!(utc("0 9 * * FRI").next(t), Some(ts("2026-12-11T09:00:00Z")));
        assert_eq!(utc("0 9 * JAN mon-wed").next(t), Some(ts("2027-01-04T09:00:00Z")));
        assert_eq!(utc("@hourly").next(t), Some(ts("2026-12-07T14:00:00Z")));
        assert_eq!(utc("@daily").next(t), Some(ts("2026-12-08T00:00:00Z")));
        assert_eq!(utc("@weekly").next(t), Some(ts("2026-12-13T00:00:00Z")));
        assert_eq!(utc("@monthly").next(t), Some(ts("2027-01-01T00:00:00Z")));
        assert_eq!(utc("@yearly").next(t), Some(ts("2027-01-01T00:00:00Z")));
        assert_eq!(utc("@every 90s").next(t), Some(ts("2026-12-07T13:07:00Z")));
        // Both day fields restricted: either matches (Vixie/robfig).
        assert_eq!(utc("0 0 1 * MON").next(t), Some(ts("2026-12-14T00:00:00Z")));
    }

    #[test]
    fn bad_schedules_and_zones_are_errors() {
        assert!(parse("* * * *", Some("UTC")).is_err());
        assert!(parse("61 * * * *", Some("UTC")).is_err());
        assert!(parse("@sometimes", Some("UTC")).is_err());
        assert!(parse("* * * * *", Some("Mars/Olympus")).is_err());
        assert!(parse("* * * * *", Some("Local")).is_err());
        assert!(parse("", None).is_err());
    }

    #[test]
    fn a_time_zone_moves_the_schedule() {
        let t = ts("2026-12-07T12:00:00Z");
        // 09:00 in New York (EST, -05:00) is 14:00 UTC.
        let ny = parse("0 9 * * *", Some("America/New_York")).unwrap().0;
        assert_eq!(ny.next(t), Some(ts("2026-12-07T14:00:00Z")));
        let tokyo = parse("0 9 * * *", Some("Asia/Tokyo")).unwrap().0;
        assert_eq!(tokyo.next(t), Some(ts("2026-12-08T00:00:00Z")));
        // A legacy TZ= prefix names the zone when timeZone is unset.
        let (legacy, p) = parse("TZ=America/New_York 0 9 * * *", None).unwrap();
        assert!(p.schedule_has_tz);
        assert_eq!(legacy.next(t), Some(ts("2026-12-07T14:00:00Z")));
    }

    #[test]
    fn daylight_saving_in_new_york() {
        let ny = parse("0 9 * * *", Some("America/New_York")).unwrap().0;
        // Summer time (EDT, -04:00) starts 2027-03-14: 09:00 local moves from 14:00 to 13:00 UTC.
        assert_eq!(ny.next(ts("2027-03-13T15:00:00Z")), Some(ts("2027-03-14T13:00:00Z")));
        assert_eq!(ny.next(ts("2027-03-12T15:00:00Z")), Some(ts("2027-03-13T14:00:00Z")));
        // 02:30 does not exist on 2027-03-14 (02:00 → 03:00): fired once at the gap's end.
        let gap = parse("30 2 * * *", Some("America/New_York")).unwrap().0;
        let after_gap = gap.next(ts("2027-03-14T05:00:00Z")).unwrap();
        assert_eq!(after_gap, ts("2027-03-14T07:00:00Z"), "03:00 EDT");
        assert_eq!(gap.next(after_gap), Some(ts("2027-03-15T06:30:00Z")));
        // 01:30 happens twice on 2027-11-07 (EDT then EST): a fixed-time schedule fires once.
        let fold = parse("30 1 * * *", Some("America/New_York")).unwrap().0;
        let first = fold.next(ts("2027-11-07T04:00:00Z")).unwrap();
        assert_eq!(first, ts("2027-11-07T05:30:00Z"), "01:30 EDT");
        assert_eq!(fold.next(first), Some(ts("2027-11-08T06:30:00Z")));
        // An hourly schedule runs every real hour through both changes.
        let hourly = parse("0 * * * *", Some("America/New_York")).unwrap().0;
        let mut t = ts("2027-11-07T04:30:00Z");
        let mut seen = Vec::new();
        for _ in 0..4 {
            t = hourly.next(t).unwrap();
            seen.push(t);
        }
        let gaps: Vec<i64> = seen.windows(2).map(|w| (w[1] - w[0]).get_seconds()).collect();
        assert_eq!(gaps, [3600, 3600, 3600]);
    }

    #[test]
    fn most_recent_and_missed_counts_follow_upstream() {
        let s = utc("*/5 * * * *");
        let created = ts("2026-12-07T10:00:00Z");
        let times = Times { created, last_schedule: None, starting_deadline_seconds: None };
        // Nothing due yet.
        let (_, t, m) = most_recent(&s, times, ts("2026-12-07T10:04:59Z"), true).unwrap();
        assert_eq!((t, m), (None, Missed::None));
        // Exactly one due.
        let (_, t, m) = most_recent(&s, times, ts("2026-12-07T10:06:00Z"), true).unwrap();
        assert_eq!((t, m), (Some(ts("2026-12-07T10:05:00Z")), Missed::None));
        // Several missed: only the most recent is returned.
        let (_, t, m) = most_recent(&s, times, ts("2026-12-07T11:02:00Z"), true).unwrap();
        assert_eq!((t, m), (Some(ts("2026-12-07T11:00:00Z")), Missed::Few));
        // More than 100 missed.
        let (_, t, m) = most_recent(&s, times, ts("2026-12-08T10:02:00Z"), true).unwrap();
        assert_eq!((t, m), (Some(ts("2026-12-08T10:00:00Z")), Missed::Many));
        // startingDeadlineSeconds bounds how far back we look: 200 missed, but within the last 600s
        // only two, so not "too many".
        let dl = Times { starting_deadline_seconds: Some(600), ..times };
        let (_, t, m) = most_recent(&s, dl, ts("2026-12-08T02:41:00Z"), true).unwrap();
        assert_eq!((t, m), (Some(ts("2026-12-08T02:40:00Z")), Missed::Few));
        // lastScheduleTime is the starting point once set.
        let last = Times { last_schedule: Some(ts("2026-12-07T11:00:00Z")), ..times };
        let (_, t, _) = most_recent(&s, last, ts("2026-12-07T11:04:00Z"), true).unwrap();
        assert_eq!(t, None);
        // An impossible date never fires: no time, no error.
        let never = utc("0 0 30 2 *");
        let (_, t, _) = most_recent(&never, times, ts("2026-12-08T00:00:00Z"), true).unwrap();
        assert_eq!(t, None);
    }

    #[test]
    fn requeue_is_at_the_next_schedule_time() {
        let s = utc("*/5 * * * *");
        let times =
            Times { created: ts("2026-12-07T10:00:00Z"), last_schedule: None, starting_deadline_seconds: None };
        let d = next_requeue(&s, times, ts("2026-12-07T10:03:00Z")).unwrap();
        assert_eq!(d, std::time::Duration::from_millis(120_100));
        let last = Times { last_schedule: Some(ts("2026-12-07T10:05:00Z")), ..times };
        let d = next_requeue(&s, last, ts("2026-12-07T10:05:00.500Z")).unwrap();
        assert_eq!(d, std::time::Duration::from_millis(299_600));
    }

    #[test]
    fn job_names_are_minutes_since_the_epoch() {
        assert_eq!(job_name("x", ts("2026-12-07T13:05:00Z")), "x-29944145");
    }
}
