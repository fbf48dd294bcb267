//! The day's parcels: a manifest generated from the seed and the date
//! across the Nordic depots, loaded through ManifestService, and the
//! parcels it accepted as the simulator drives them. A generated parcel's
//! id names its depot and its first day, so every day's parcels are new.
//!
//! Only what is delivered lives here; it never decides what happens to a
//! parcel (that is its fate) nor drives it.

use chrono::{DateTime, Datelike, NaiveDate, Utc};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use threshold_api::v1::manifest_service_client::ManifestServiceClient;
use threshold_domain::{Country, pb};
use threshold_manifest::{ManifestReader, Row};
use threshold_manifest_service::client;

use super::BoxError;
use super::conn::{Conn, at};

/// Depots at real Nordic city coordinates.
const DEPOTS: &[(&str, Country, f64, f64, &str)] = &[
    ("CPH-1", Country::Dk, 55.676, 12.568, "København"),
    ("AAR-1", Country::Dk, 56.162, 10.203, "Aarhus"),
    ("HEL-1", Country::Fi, 60.169, 24.938, "Helsinki"),
    ("TRE-1", Country::Fi, 61.498, 23.761, "Tampere"),
    ("OSL-1", Country::No, 59.913, 10.752, "Oslo"),
    ("BGO-1", Country::No, 60.391, 5.322, "Bergen"),
    ("STO-1", Country::Se, 59.329, 18.068, "Stockholm"),
    ("GOT-1", Country::Se, 57.708, 11.974, "Göteborg"),
];

/// A parcel the day drives, as its manifest row gave it.
#[derive(Debug, Clone)]
pub(super) struct Parcel {
    pub(super) id: String,
    pub(super) country: Country,
    /// The resident's window, for in-home parcels.
    pub(super) window: Option<pb::LocalWindow>,
    pub(super) position: Option<pb::GeoPoint>,
    /// Where it is addressed: the home its in-home grant opens is enrolled
    /// at this address.
    pub(super) address: Option<pb::Address>,
    /// Attempts made on earlier days: its next attempt is this one plus one.
    pub(super) attempts: u32,
}

impl Parcel {
    /// The window's UTC bounds, for in-home parcels.
    pub(super) fn window(&self) -> Option<(DateTime<Utc>, DateTime<Utc>)> {
        self.window
            .as_ref()
            .and_then(|w| threshold_domain::country::window_bounds(w).ok())
    }

    pub(super) fn grant_id(&self) -> String {
        format!("g-{}", self.id)
    }

    pub(super) fn home_id(&self) -> String {
        format!("h-{}", self.id)
    }

    pub(super) fn lock_id(&self) -> String {
        format!("lock-{}", self.id)
    }
}

/// A generated manifest for the day, as CSV: `parcels` parcels, spread
/// over the depots, drawn from `seed` and the date.
pub(super) fn generate(date: NaiveDate, parcels: u32, seed: u64) -> String {
    // Each day its own parcels and addresses, the same for the same seed.
    let day = u64::from(date.num_days_from_ce().unsigned_abs());
    let mut rng = SmallRng::seed_from_u64(seed ^ day.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let stamp = date.format("%y%m%d");
    let mut csv = threshold_manifest::COLUMNS.join(",");
    csv.push('\n');
    for n in 0..parcels {
        let (depot, country, lat, lon, city) = DEPOTS[n as usize % DEPOTS.len()];
        let in_home = rng.random_bool(0.2);
        let (ws, we) = if in_home {
            let h = rng.random_range(9..16);
            (format!("{h:02}:00"), format!("{:02}:00", h + 3))
        } else {
            (String::new(), String::new())
        };
        let service = if in_home {
            "in_home"
        } else if rng.random_bool(0.1) {
            "locker"
        } else {
            "doorstep"
        };
        csv.push_str(&format!(
            "{}-{depot}-{stamp}-{n:05},{},{},{depot},{date},Street {},{:05},{city},{:.5},{:.5},{service},{:.2},{ws},{we}\n",
            country.code(),
            ["nordshop", "fjallgear", "kotimarket", "hemmabutiken"][rng.random_range(0..4)],
            country.code(),
            rng.random_range(1..200),
            rng.random_range(1000..99999),
            lat + rng.random_range(-0.08..0.08),
            lon + rng.random_range(-0.15..0.15),
            rng.random_range(0.2..15.0),
        ));
    }
    csv
}

/// Loads a manifest through the server at `t` on the simulation's clock and
/// returns the parcels it holds.
pub(super) async fn load(
    conn: &Conn,
    name: &str,
    csv: Vec<u8>,
    t: DateTime<Utc>,
) -> Result<(Vec<Parcel>, u64), BoxError> {
    let mut rejected = 0;
    let (metadata, ..) = at((), t)?.into_parts();
    let summary = client::load_with(
        &mut ManifestServiceClient::new(conn.manifest.clone()),
        name,
        std::io::Cursor::new(csv.clone()),
        metadata,
        |r| {
            rejected += 1;
            eprintln!("{name}: line {}, field {}: {}", r.line, r.field, r.message);
        },
    )
    .await
    .map_err(|s| format!("loading {name}: {}", s.message()))?;
    println!(
        "manifest {name}: {} rows, {} accepted, {} already loaded, {} rejected",
        summary.rows, summary.accepted, summary.unchanged, summary.rejected
    );
    let parcels = ManifestReader::new(csv.as_slice(), name)?
        .filter_map(|row| match row {
            Row::Accepted { parcel, .. } => Some(Parcel {
                id: parcel.parcel_id.clone(),
                country: Country::from_proto(parcel.country).ok()?,
                window: (parcel.service == pb::Service::InHome as i32)
                    .then(|| parcel.in_home_window.clone())
                    .flatten(),
                position: parcel.address.as_ref().and_then(|a| a.position),
                address: parcel.address.clone(),
                attempts: 0,
            }),
            Row::Rejected(_) => None,
        })
        .collect();
    Ok((parcels, summary.accepted))
}
