//! `threshold simulate --days N`: consecutive delivery days, from the
//! Saturday before summer time ends (2026-10-25) to the Thursday after.
//! A parcel that failed is attempted again on the next delivery day under
//! the same id, nobody delivers on the Sunday, every attempt is within the
//! depots' local shift on both sides of the DST change, a parcel whose
//! third attempt failed goes back to its sender, every event is stamped on
//! the simulation's clock (so each stream's history reads in order), and
//! the same seed gives the same days.

mod common;

use std::collections::BTreeMap;

use chrono::{DateTime, Datelike, NaiveDate, Utc, Weekday};
use common::*;

/// The first day: Saturday, summer time (UTC+2 in DK, NO, SE; +3 in FI).
const FIRST: &str = "2026-10-24";
/// The day summer time ends.
const DST_END: &str = "2026-10-25";

/// A fresh simulation server with six days of seed `seed` played on it;
/// returns it and what the simulation printed.
fn played(dir: &Path, seed: u64) -> (Served, String) {
    let served = Served::start(&dir.join("data"));
    let out = threshold(&[
        "simulate",
        "--date",
        FIRST,
        "--days",
        "6",
        "--parcels",
        "80",
        "--plan-generations",
        "100",
        "--seed",
        &seed.to_string(),
        "--server",
        &served.url,
        "--data",
        served.data(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (served, String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `threshold report attempts --by BY --json` of `served`.
fn report(served: &Served, by: &str) -> serde_json::Value {
    let out = threshold(&[
        "report",
        "attempts",
        "--by",
        by,
        "--json",
        "--server",
        &served.url,
        "--data",
        served.data(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    // Where the log stood says nothing about the days.
    r.as_object_mut().expect("an object").remove("position");
    r
}

/// One exported attempt.
struct Attempt {
    parcel: String,
    attempt: u32,
    started_on: NaiveDate,
    local_hour: u32,
    outcome: String,
}

/// The attempts table of `served`'s log, exported as CSV.
fn attempts(served: &Served, dir: &Path) -> Vec<Attempt> {
    let out_dir = dir.join("facts");
    let said = threshold(&[
        "export",
        "attempts",
        "--data",
        served.data(),
        "--format",
        "csv",
        "--out",
        out_dir.to_str().expect("path"),
    ]);
    assert!(said.status.success(), "{said:?}");
    let csv = std::fs::read_to_string(out_dir.join("attempts.csv")).expect("csv");
    let mut lines = csv.lines();
    let header: Vec<&str> = lines.next().expect("header").split(',').collect();
    let col = |name: &str| {
        header
            .iter()
            .position(|h| *h == name)
            .unwrap_or_else(|| panic!("no {name} in {header:?}"))
    };
    let (parcel, attempt, started_on, local_hour, outcome) = (
        col("parcel_id"),
        col("attempt"),
        col("started_on"),
        col("local_hour"),
        col("outcome"),
    );
    lines
        .map(|l| {
            let f: Vec<&str> = l.split(',').collect();
            Attempt {
                parcel: f[parcel].to_owned(),
                attempt: f[attempt].parse().expect("attempt"),
                started_on: f[started_on].parse().expect("started_on"),
                local_hour: f[local_hour].parse().expect("local_hour"),
                outcome: f[outcome].to_owned(),
            }
        })
        .collect()
}

/// Every event of `served`'s log: (stream, type, occurred_at), in log order.
fn events(served: &Served) -> Vec<(String, String, DateTime<Utc>)> {
    let out = threshold(&["log", "tail", "--data", served.data(), "--limit", "1000000"]);
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .lines()
        .map(|l| {
            // POSITION STREAM vVERSION TYPE OCCURRED_AT
            let f: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(f.len(), 5, "{l}");
            let at = DateTime::parse_from_rfc3339(f[4])
                .expect("an instant")
                .to_utc();
            (f[1].to_owned(), f[3].to_owned(), at)
        })
        .collect()
}

#[test]
fn failed_parcels_are_tried_again_on_the_next_delivery_day_across_a_weekend_and_a_dst_change() {
    let dir = tempfile::tempdir().expect("dir");
    let (served, printed) = played(dir.path(), 3);
    assert!(
        printed.contains(&format!("{DST_END} Sun: no deliveries on Sundays")),
        "{printed}"
    );

    let all = attempts(&served, dir.path());
    assert!(all.len() > 100, "{} attempts", all.len());
    let mut by_parcel: BTreeMap<&str, Vec<&Attempt>> = BTreeMap::new();
    for a in &all {
        // Nobody delivers on a Sunday; every attempt is within the depots'
        // 08:00–18:00 shift in local time, summer time or not.
        assert_ne!(
            a.started_on.weekday(),
            Weekday::Sun,
            "{} on a Sunday",
            a.parcel
        );
        assert!(
            (8..18).contains(&a.local_hour),
            "{} attempt {} at {}:00 local on {}",
            a.parcel,
            a.attempt,
            a.local_hour,
            a.started_on
        );
        by_parcel.entry(&a.parcel).or_default().push(a);
    }
    // Both sides of the change have attempts: Saturday in summer time,
    // Monday in winter time.
    let first: NaiveDate = FIRST.parse().expect("date");
    let monday = first + chrono::Days::new(2);
    for day in [first, monday] {
        assert!(all.iter().any(|a| a.started_on == day), "none on {day}");
    }

    let mut again_monday = 0;
    let mut thrice = 0;
    for (parcel, tries) in &by_parcel {
        let mut tries = tries.clone();
        tries.sort_by_key(|a| a.attempt);
        // One attempt a day, numbered on: a later attempt on a later day,
        // after a failed one.
        for pair in tries.windows(2) {
            assert_eq!(pair[1].attempt, pair[0].attempt + 1, "{parcel}");
            assert!(pair[0].started_on < pair[1].started_on, "{parcel}");
            assert_eq!(pair[0].outcome, "failed", "{parcel}");
        }
        assert!(tries.len() <= 3, "{parcel} tried {} times", tries.len());
        if tries.len() > 1 && tries[0].started_on == first && tries[1].started_on == monday {
            again_monday += 1;
        }
        thrice += usize::from(tries.len() == 3);
    }
    assert!(again_monday > 0, "no Saturday parcel tried again on Monday");
    assert!(thrice > 0, "no parcel tried three times");

    // Every event is stamped on the simulation's clock, manifests and plans
    // included (the evening before each day, at 20:00 and 20:30 UTC), never
    // on the machine's: each stream's history reads in order.
    let log = events(&served);
    let eve = |d: NaiveDate| {
        (d - chrono::Days::new(1))
            .and_hms_opt(20, 0, 0)
            .expect("time")
            .and_utc()
    };
    let (start, end) = (eve(first), eve(first + chrono::Days::new(6)));
    let mut last: BTreeMap<&str, DateTime<Utc>> = BTreeMap::new();
    let mut manifested = 0;
    for (stream, kind, at) in &log {
        assert!(
            (start..end).contains(at),
            "{stream} {kind} at {at}, outside the simulated days"
        );
        if let Some(before) = last.insert(stream, *at) {
            assert!(
                before <= *at,
                "{stream}: {kind} at {at} after an event at {before}"
            );
        }
        if kind == "parcel.manifested" {
            manifested += 1;
            assert_eq!(
                at.time(),
                chrono::NaiveTime::from_hms_opt(20, 0, 0).expect("time"),
                "{stream}"
            );
        }
    }
    assert!(manifested >= 80, "{manifested} parcels manifested");
    // Every attempt on a parcel follows a plan that put it on a route and
    // a scan into that route's van, each time it is tried (after a failed
    // attempt, the next day's plan and scan again).
    let mut since_attempt: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    let mut attempted = 0;
    for (stream, kind, _) in &log {
        let steps = since_attempt.entry(stream).or_default();
        match kind.as_str() {
            "parcel.attempt_started" => {
                assert!(
                    steps.ends_with(&["parcel.assigned_to_route", "parcel.out_for_delivery"]),
                    "{stream}: attempted after {steps:?}"
                );
                attempted += 1;
                steps.clear();
            }
            "parcel.assigned_to_route" | "parcel.out_for_delivery" => steps.push(kind),
            _ => {}
        }
    }
    assert!(attempted > 100, "{attempted} attempts");
    // And the handhelds' loads and reports were all taken.
    let driven: Vec<&str> = printed
        .lines()
        .filter(|l| l.contains("routes driven"))
        .collect();
    assert!(!driven.is_empty(), "{printed}");
    for l in driven {
        assert!(l.contains(", 0 rejected,"), "{l}");
    }

    // The report counts them: more attempts than parcels, and parcels
    // returned after their third failed attempt.
    let total = &report(&served, "country")["total"];
    assert!(
        total["attempts_per_parcel"].as_f64().expect("ratio") > 1.0,
        "{total}"
    );
    assert!(
        total["repeat_attempt_rate"].as_f64().expect("rate") > 0.0,
        "{total}"
    );
    assert!(total["returned"].as_u64().expect("count") > 0, "{total}");
    // Parcels are filed on the day they were last due; no day is a Sunday.
    let by_day = report(&served, "day");
    for row in by_day["rows"].as_array().expect("rows") {
        let day: NaiveDate = row["day"].as_str().expect("day").parse().expect("date");
        assert_ne!(day.weekday(), Weekday::Sun, "{by_day}");
    }

    // The same seed, the same days.
    let again = tempfile::tempdir().expect("dir");
    let (second, printed_again) = played(again.path(), 3);
    let days = |s: &str| {
        s.lines()
            .filter(|l| l.starts_with("2026-"))
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(days(&printed_again), days(&printed));
    assert_eq!(report(&second, "day"), by_day);
    assert_eq!(report(&second, "country")["total"], *total);
}
