//! `threshold run --demo`: the sample day simulated, the same for the same
//! seed, every in-home grant and entry accounted for.

mod common;

use common::*;

/// The number before `what` in `line`, e.g. 3 in "(3 revoked, ...)".
fn count(line: &str, what: &str) -> u64 {
    line.split([',', '(', ')', ';', ':'])
        .map(str::trim)
        .find_map(|part| {
            let (n, rest) = part.split_once(' ')?;
            (rest == what).then(|| n.parse().ok()).flatten()
        })
        .unwrap_or(0)
}

#[test]
fn the_main_job_gives_the_same_day_for_the_same_seed() {
    let first = demo_report(12);
    assert!(first.contains("in_home"), "{first}");
    let line = |prefix: &str| {
        first
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix} line in {first}"))
            .to_owned()
    };
    // "in-home: G grants issued, R revoked by their resident; A unlocks
    // authorized, D refused (n reason, ...)".
    let asked = line("in-home:");
    let numbers: Vec<u64> = asked
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse().ok())
        .collect();
    let [grants, revoked, authorized, refused, ..] = numbers[..] else {
        panic!("unexpected in-home line in {first}");
    };
    assert!(revoked > 0 && grants > 20, "{first}");
    // Every granted home was enrolled by its lock's vendor and claimed by
    // its household first.
    let homes = line("in-home homes:");
    assert_eq!(
        count(&homes, "enrolled by their lock's vendor"),
        grants,
        "{first}"
    );
    assert_eq!(
        count(&homes, "claimed by their household"),
        grants,
        "{first}"
    );
    assert_eq!(
        authorized + refused,
        grants,
        "every grant asked once: {first}"
    );
    // Every revoked grant refused its unlock, before any other reason.
    assert_eq!(count(&asked, "revoked"), revoked, "{first}");
    // The day's trouble shows as refusals by reason...
    for reason in ["camera_offline", "outside_geofence", "household_condition"] {
        assert!(count(&asked, reason) > 0, "no {reason} in {first}");
    }
    // ...every refusal became the grant's fallback...
    let fallbacks = line("in-home refusals");
    let fell_back: u64 = ["doorstep", "locker", "neighbour", "return"]
        .iter()
        .map(|f| count(&fallbacks, f))
        .sum();
    assert_eq!(fell_back, refused, "{first}");
    // ...every authorized entry was redeemed, relocked and receipted...
    let entries = line("in-home entries");
    assert_eq!(
        count(&entries, "redeemed by the lock"),
        authorized,
        "{first}"
    );
    assert_eq!(count(&entries, "receipts"), authorized, "{first}");
    assert!(
        count(&entries, "replayed unlock requests refused") > 0,
        "{first}"
    );
    // ...and each door left open was refused its closing and alerted.
    let closings = count(&entries, "closings refused until the relock");
    let alerts = line("alerts raised");
    assert!(closings > 0, "{first}");
    assert_eq!(count(&alerts, "door_left_open"), closings, "{first}");
    assert!(count(&alerts, "camera_offline_while_open") > 0, "{first}");
    assert!(first.contains("total"), "{first}");
    // The day's plan is repeatable too: three runs, one report.
    for _ in 0..2 {
        assert_eq!(
            demo_report(12),
            first,
            "same seed, same report, whatever the timing"
        );
    }
    assert_ne!(demo_report(11), first, "another seed, another day");
}
