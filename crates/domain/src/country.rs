//! The four countries and their time. Instants are stored in UTC; a delivery
//! day is the depot's local calendar date; a window is entered in local
//! wall-clock time and resolved to UTC here, once, DST included.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;

use crate::error::{DomainError, Result, invalid};
use crate::pb;

/// A country Threshold delivers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Country {
    /// Denmark, Europe/Copenhagen.
    Dk,
    /// Finland, Europe/Helsinki (one hour ahead of the others).
    Fi,
    /// Norway, Europe/Oslo.
    No,
    /// Sweden, Europe/Stockholm.
    Se,
}

impl Country {
    /// All four, in code order.
    pub const ALL: [Country; 4] = [Country::Dk, Country::Fi, Country::No, Country::Se];

    /// The ISO 3166 alpha-2 code.
    pub fn code(self) -> &'static str {
        match self {
            Country::Dk => "DK",
            Country::Fi => "FI",
            Country::No => "NO",
            Country::Se => "SE",
        }
    }

    /// The country's one time zone.
    pub fn tz(self) -> Tz {
        match self {
            Country::Dk => chrono_tz::Europe::Copenhagen,
            Country::Fi => chrono_tz::Europe::Helsinki,
            Country::No => chrono_tz::Europe::Oslo,
            Country::Se => chrono_tz::Europe::Stockholm,
        }
    }

    /// The protobuf value.
    pub fn to_proto(self) -> pb::Country {
        match self {
            Country::Dk => pb::Country::Dk,
            Country::Fi => pb::Country::Fi,
            Country::No => pb::Country::No,
            Country::Se => pb::Country::Se,
        }
    }

    /// From the protobuf value; `Unspecified` (or an unknown number) is an error.
    pub fn from_proto(value: i32) -> Result<Self> {
        match pb::Country::try_from(value) {
            Ok(pb::Country::Dk) => Ok(Country::Dk),
            Ok(pb::Country::Fi) => Ok(Country::Fi),
            Ok(pb::Country::No) => Ok(Country::No),
            Ok(pb::Country::Se) => Ok(Country::Se),
            _ => Err(invalid(
                "country",
                format!("{value} is not one of DK, FI, NO, SE"),
            )),
        }
    }

    /// The local calendar date of an instant.
    pub fn local_date(self, at: DateTime<Utc>) -> NaiveDate {
        at.with_timezone(&self.tz()).date_naive()
    }

    /// The instant a local wall-clock time *starts* a window.
    ///
    /// In the autumn fold (a time that happens twice) the earlier instant is
    /// taken, so a window never starts later than the resident meant. In the
    /// spring gap (a time that never happens) the first instant after the gap
    /// is taken: what the wall clock shows when it jumps.
    pub fn window_start(self, local: NaiveDateTime) -> DateTime<Utc> {
        self.resolve(local, Fold::Earlier)
    }

    /// The instant a local wall-clock time *ends* a window: in the autumn fold
    /// the later instant (a window never ends earlier than the resident
    /// meant); in the spring gap the first instant after it.
    pub fn window_end(self, local: NaiveDateTime) -> DateTime<Utc> {
        self.resolve(local, Fold::Later)
    }

    /// Midnight at the start of a local date, as an instant.
    pub fn start_of_day(self, date: NaiveDate) -> DateTime<Utc> {
        self.window_start(date.and_time(chrono::NaiveTime::MIN))
    }

    fn resolve(self, local: NaiveDateTime, fold: Fold) -> DateTime<Utc> {
        let tz = self.tz();
        match tz.from_local_datetime(&local) {
            LocalResult::Single(t) => t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => match fold {
                Fold::Earlier => a.min(b).with_timezone(&Utc),
                Fold::Later => a.max(b).with_timezone(&Utc),
            },
            LocalResult::None => {
                // A spring-forward gap: the time never happens. Take the first
                // minute the wall clock shows after the jump (every jump here
                // is one hour, so this ends within 60 steps).
                let mut t = local;
                for _ in 0..=120 {
                    t += chrono::Duration::minutes(1);
                    let t = t
                        .with_second(0)
                        .and_then(|t| t.with_nanosecond(0))
                        .unwrap_or(t);
                    if let Some(at) = tz.from_local_datetime(&t).earliest() {
                        return at.with_timezone(&Utc);
                    }
                }
                // No zone has a gap longer than two hours; treat the time as UTC+0
                // rather than panic if tz data ever says otherwise.
                Utc.from_utc_datetime(&local)
            }
        }
    }
}

use chrono::Timelike;

#[derive(Clone, Copy)]
enum Fold {
    Earlier,
    Later,
}

impl fmt::Display for Country {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

impl FromStr for Country {
    type Err = DomainError;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "DK" => Ok(Country::Dk),
            "FI" => Ok(Country::Fi),
            "NO" => Ok(Country::No),
            "SE" => Ok(Country::Se),
            _ => Err(invalid(
                "country",
                format!("{s:?} is not one of DK, FI, NO, SE"),
            )),
        }
    }
}

/// A local date as protobuf.
pub fn date_to_proto(date: NaiveDate) -> pb::LocalDate {
    use chrono::Datelike;
    pb::LocalDate {
        year: date.year(),
        month: date.month(),
        day: date.day(),
    }
}

/// A protobuf local date, checked.
pub fn date_from_proto(date: &pb::LocalDate) -> Result<NaiveDate> {
    NaiveDate::from_ymd_opt(date.year, date.month, date.day).ok_or_else(|| {
        invalid(
            "date",
            format!(
                "{}-{}-{} is not a calendar date",
                date.year, date.month, date.day
            ),
        )
    })
}

/// A protobuf timestamp from an instant.
pub fn timestamp(at: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

/// An instant from a protobuf timestamp, checked.
pub fn instant(ts: &prost_types::Timestamp) -> Result<DateTime<Utc>> {
    u32::try_from(ts.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(ts.seconds, nanos))
        .ok_or_else(|| invalid("timestamp", format!("{ts:?} is out of range")))
}

/// Parses `YYYY-MM-DDTHH:MM` (or with a space instead of `T`) local time.
pub fn parse_local(field: &'static str, s: &str) -> Result<NaiveDateTime> {
    let s = s.trim();
    NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M")
        .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M"))
        .map_err(|_| invalid(field, format!("{s:?} is not a local time YYYY-MM-DDTHH:MM")))
}

/// A window entered in local time in `country`, resolved to UTC.
///
/// Refuses a window that ends before (or when) it starts, after resolution:
/// `02:30–03:15` on a spring-forward night is the 15 minutes from 03:00.
pub fn local_window(
    country: Country,
    start: NaiveDateTime,
    end: NaiveDateTime,
) -> Result<pb::LocalWindow> {
    let start_utc = country.window_start(start);
    let end_utc = country.window_end(end);
    if end_utc <= start_utc {
        return Err(invalid(
            "window",
            format!("{start}–{end} in {} is empty", country.tz().name()),
        ));
    }
    Ok(pb::LocalWindow {
        start_local: start.format("%Y-%m-%dT%H:%M").to_string(),
        end_local: end.format("%Y-%m-%dT%H:%M").to_string(),
        zone: country.tz().name().to_owned(),
        start_utc: Some(timestamp(start_utc)),
        end_utc: Some(timestamp(end_utc)),
    })
}

/// The UTC bounds of a resolved window.
pub fn window_bounds(w: &pb::LocalWindow) -> Result<(DateTime<Utc>, DateTime<Utc>)> {
    let start = w
        .start_utc
        .as_ref()
        .ok_or_else(|| invalid("window.start_utc", "is missing"))?;
    let end = w
        .end_utc
        .as_ref()
        .ok_or_else(|| invalid("window.end_utc", "is missing"))?;
    Ok((instant(start)?, instant(end)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn local(s: &str) -> NaiveDateTime {
        parse_local("t", s).unwrap()
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn finland_is_one_hour_ahead_of_the_others() {
        let t = local("2026-06-15T12:00");
        assert_eq!(Country::Se.window_start(t), utc("2026-06-15T10:00:00Z"));
        assert_eq!(Country::No.window_start(t), utc("2026-06-15T10:00:00Z"));
        assert_eq!(Country::Dk.window_start(t), utc("2026-06-15T10:00:00Z"));
        assert_eq!(Country::Fi.window_start(t), utc("2026-06-15T09:00:00Z"));
    }

    #[test]
    fn spring_forward_gap_resolves_to_the_end_of_the_gap_in_every_zone() {
        // Last Sunday of March 2026 is the 29th. CET zones jump 02:00 -> 03:00,
        // Helsinki jumps 03:00 -> 04:00; both at 01:00 UTC.
        for c in [Country::Dk, Country::No, Country::Se] {
            assert_eq!(
                c.window_start(local("2026-03-29T02:30")),
                utc("2026-03-29T01:00:00Z"),
                "{c}"
            );
            assert_eq!(
                c.window_start(local("2026-03-29T03:00")),
                utc("2026-03-29T01:00:00Z")
            );
        }
        assert_eq!(
            Country::Fi.window_start(local("2026-03-29T03:30")),
            utc("2026-03-29T01:00:00Z")
        );
        // A window that lies wholly in the gap is empty and refused.
        assert!(
            local_window(
                Country::Se,
                local("2026-03-29T02:10"),
                local("2026-03-29T02:50")
            )
            .is_err()
        );
        // One that straddles it keeps only real time: 02:30-03:30 is 30 minutes.
        let w = local_window(
            Country::No,
            local("2026-03-29T02:30"),
            local("2026-03-29T03:30"),
        )
        .unwrap();
        let (s, e) = window_bounds(&w).unwrap();
        assert_eq!(e - s, chrono::Duration::minutes(30));
    }

    #[test]
    fn autumn_fold_widens_windows_in_every_zone() {
        // Last Sunday of October 2026 is the 25th. CET zones repeat 02:00-03:00,
        // Helsinki repeats 03:00-04:00.
        for (c, t) in [
            (Country::Dk, "2026-10-25T02:30"),
            (Country::No, "2026-10-25T02:30"),
            (Country::Se, "2026-10-25T02:30"),
            (Country::Fi, "2026-10-25T03:30"),
        ] {
            let start = c.window_start(local(t));
            let end = c.window_end(local(t));
            assert_eq!(start, utc("2026-10-25T00:30:00Z"), "{c}");
            assert_eq!(end, utc("2026-10-25T01:30:00Z"), "{c}");
        }
        // 01:00-04:00 on the long night is four real hours.
        let w = local_window(
            Country::Dk,
            local("2026-10-25T01:00"),
            local("2026-10-25T04:00"),
        )
        .unwrap();
        let (s, e) = window_bounds(&w).unwrap();
        assert_eq!(e - s, chrono::Duration::hours(4));
    }

    #[test]
    fn local_dates_follow_the_zone_not_utc() {
        let late = utc("2026-06-15T22:30:00Z");
        assert_eq!(Country::Se.local_date(late).to_string(), "2026-06-16");
        assert_eq!(
            Country::Fi
                .local_date(utc("2026-06-15T21:30:00Z"))
                .to_string(),
            "2026-06-16"
        );
        assert_eq!(
            Country::Dk
                .local_date(utc("2026-06-15T21:30:00Z"))
                .to_string(),
            "2026-06-15"
        );
    }

    #[test]
    fn countries_parse_codes_and_reject_others() {
        assert_eq!("se".parse::<Country>().unwrap(), Country::Se);
        assert_eq!(
            Country::from_proto(pb::Country::Fi as i32).unwrap(),
            Country::Fi
        );
        assert!("DE".parse::<Country>().is_err());
        assert!(Country::from_proto(0).is_err());
        assert!(Country::from_proto(99).is_err());
    }
}
