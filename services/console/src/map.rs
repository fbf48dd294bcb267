//! The outlines of Denmark, Finland, Norway and Sweden, from Natural Earth
//! (public domain) by way of world-atlas's TopoJSON, converted once by
//! `assets/map/convert.py` into `assets/map/nordic.txt` and embedded in the
//! binary: no tile server, nothing fetched at run time.

use std::sync::OnceLock;

/// The converted outlines: `CC lon,lat lon,lat …`, one ring a line.
const NORDIC: &str = include_str!("../assets/map/nordic.txt");

/// One closed outline (a coast, an island, a lake shore).
pub(crate) struct Ring {
    /// Its points, longitude and latitude in degrees.
    pub(crate) points: Vec<(f64, f64)>,
    west: f64,
    east: f64,
    south: f64,
    north: f64,
}

impl Ring {
    /// Whether its bounding box meets the box given.
    pub(crate) fn touches(&self, west: f64, east: f64, south: f64, north: f64) -> bool {
        self.west <= east && self.east >= west && self.south <= north && self.north >= south
    }
}

/// Every ring, parsed on first use.
pub(crate) fn rings() -> &'static [Ring] {
    static RINGS: OnceLock<Vec<Ring>> = OnceLock::new();
    RINGS.get_or_init(|| parse(NORDIC))
}

fn parse(text: &str) -> Vec<Ring> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split(' ');
            // The country code; the console draws every country alike.
            words.next()?;
            let points: Vec<(f64, f64)> = words
                .filter_map(|p| {
                    let (lon, lat) = p.split_once(',')?;
                    Some((lon.parse().ok()?, lat.parse().ok()?))
                })
                .collect();
            let fold = |f: fn(f64, f64) -> f64, init: f64, pick: fn(&(f64, f64)) -> f64| {
                points.iter().map(pick).fold(init, f)
            };
            Some(Ring {
                west: fold(f64::min, f64::INFINITY, |p| p.0),
                east: fold(f64::max, f64::NEG_INFINITY, |p| p.0),
                south: fold(f64::min, f64::INFINITY, |p| p.1),
                north: fold(f64::max, f64::NEG_INFINITY, |p| p.1),
                points,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_four_capitals_are_inside_an_outline_s_box_and_the_atlantic_is_not() {
        let rings = super::rings();
        let near = |lon: f64, lat: f64| {
            rings
                .iter()
                .any(|r| r.touches(lon, lon + 0.01, lat, lat + 0.01))
        };
        for (lon, lat) in [
            (12.57, 55.68),
            (24.94, 60.17),
            (10.75, 59.91),
            (18.07, 59.33),
        ] {
            assert!(near(lon, lat), "{lon},{lat}");
        }
        assert!(!near(-30.0, 45.0));
    }
}
