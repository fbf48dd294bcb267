//! Distances on the Earth's surface.

/// Mean Earth radius, metres.
pub const EARTH_RADIUS_M: f64 = 6_371_008.8;

/// A WGS84 position, in degrees.
pub fn point(latitude: f64, longitude: f64) -> crate::pb::GeoPoint {
    crate::pb::GeoPoint {
        latitude,
        longitude,
    }
}

/// The haversine great-circle distance in metres between two WGS84
/// positions, each `(latitude, longitude)` in degrees.
pub fn great_circle_m(a: (f64, f64), b: (f64, f64)) -> f64 {
    let (la1, la2) = (a.0.to_radians(), b.0.to_radians());
    let dla = la2 - la1;
    let dlo = (b.1 - a.1).to_radians();
    let h = (dla / 2.0).sin().powi(2) + la1.cos() * la2.cos() * (dlo / 2.0).sin().powi(2);
    2.0 * EARTH_RADIUS_M * h.sqrt().min(1.0).asin()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thousandth_of_a_degree_of_latitude_is_about_111_m() {
        let d = great_circle_m((59.329, 18.068), (59.330, 18.068));
        assert!((d - 111.2).abs() < 0.5, "{d}");
        assert_eq!(great_circle_m((60.0, 25.0), (60.0, 25.0)), 0.0);
    }
}
