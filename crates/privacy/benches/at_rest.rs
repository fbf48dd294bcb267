//! What keeping the vault wrapped at rest costs: the same operations on a
//! vault in the clear and on one wrapped under a key-encryption key,
//! alternated in one run: households made (a key each, one durable commit
//! each), addresses sealed and opened again (a key read each). Prints each
//! round, the medians and the ratios wrapped / clear, and writes
//! `target/bench/vault-at-rest.json`.
//!
//! `cargo bench -p threshold-privacy --bench at_rest` (part of `make
//! bench`); `BENCH_HOUSEHOLDS` (default 2,000), `BENCH_SEALS` (default
//! 50,000), `BENCH_ROUNDS` (default 3).

use std::time::Instant;

use threshold_privacy::{Kek, Keks, Vault};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Operations a second: households made, seals, unseals.
fn round(keks: Option<Keks>, households: usize, seals: usize) -> [f64; 3] {
    let dir = tempfile::tempdir().expect("a directory");
    let vault = Vault::open_with(dir.path(), keks).expect("a vault");
    let start = Instant::now();
    let subjects: Vec<String> = (0..households)
        .map(|i| {
            let street = format!("Gatan {i}");
            vault
                .household(&[&street, "111 51", "Stockholm", "SE"])
                .expect("a household")
                .subject
        })
        .collect();
    let made = households as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    let sealed: Vec<_> = (0..seals)
        .map(|i| {
            let context = format!("parcel/SE-{i}");
            let subject = &subjects[i % subjects.len()];
            vault
                .seal(subject, &context, b"Gatan 1, 111 51 Stockholm, SE")
                .expect("sealed")
        })
        .collect();
    let sealing = seals as f64 / start.elapsed().as_secs_f64();

    let start = Instant::now();
    for (i, s) in sealed.iter().enumerate() {
        let opened = vault.unseal(s, &format!("parcel/SE-{i}")).expect("opened");
        assert!(opened.is_some());
    }
    let unsealing = seals as f64 / start.elapsed().as_secs_f64();
    [made, sealing, unsealing]
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    let households = env("BENCH_HOUSEHOLDS", 2_000).max(1);
    let seals = env("BENCH_SEALS", 50_000).max(1);
    let rounds = env("BENCH_ROUNDS", 3).max(1);
    let keks = Keks::new(
        Kek::from_hex(&Kek::generate_hex(), "bench").expect("a key"),
        [],
    );
    let names = ["households made/s", "seals/s", "unseals/s"];
    let keys = ["households_per_s", "seals_per_s", "unseals_per_s"];
    let (mut clear, mut wrapped) = (vec![Vec::new(); 3], vec![Vec::new(); 3]);
    for r in 1..=rounds {
        let c = round(None, households, seals);
        let w = round(Some(keks.clone()), households, seals);
        for i in 0..3 {
            clear[i].push(c[i]);
            wrapped[i].push(w[i]);
        }
        println!(
            "round {r}: in the clear {:.0} / {:.0} / {:.0}, wrapped {:.0} / {:.0} / {:.0} ({})",
            c[0],
            c[1],
            c[2],
            w[0],
            w[1],
            w[2],
            names.join(" / ")
        );
    }
    let mut json = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let (c, w) = (median(clear[i].clone()), median(wrapped[i].clone()));
        println!(
            "{name:<20} in the clear {c:>10.0}, wrapped {w:>10.0}: wrapped / clear {:.2}",
            w / c
        );
        json.push(format!(
            "\"{}\": {{\"clear\": {c:.1}, \"wrapped\": {w:.1}, \"ratio\": {:.3}}}",
            keys[i],
            w / c
        ));
    }
    let target = std::env::var("CARGO_TARGET_DIR")
        .unwrap_or_else(|_| concat!(env!("CARGO_MANIFEST_DIR"), "/../../target").to_owned());
    let out = std::path::Path::new(&target).join("bench");
    std::fs::create_dir_all(&out).expect("target/bench");
    let file = out.join("vault-at-rest.json");
    std::fs::write(
        &file,
        format!(
            "{{\"households\": {households}, \"seals\": {seals}, \"rounds\": {rounds}, {}}}\n",
            json.join(", ")
        ),
    )
    .expect("write the figures");
    println!("written {}", file.display());
}
