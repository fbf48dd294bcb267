//! Travel between locations: a [`Table`] of durations and distances, and
//! the [`TravelMatrix`] trait that makes one from positions.
//!
//! The default, [`GreatCircle`], is the great-circle distance times a road
//! factor, driven at a fixed speed. A road-network matrix (an OSRM-style
//! `table` service, say) plugs in by implementing [`TravelMatrix`].

/// A WGS84 position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    /// Degrees north.
    pub latitude: f64,
    /// Degrees east.
    pub longitude: f64,
}

/// Durations (seconds) and distances (metres) between every pair of `n`
/// locations, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Table {
    n: usize,
    durations: Vec<f64>,
    distances: Vec<f64>,
}

impl Table {
    /// A table from row-major `n × n` durations and distances.
    pub fn new(n: usize, durations: Vec<f64>, distances: Vec<f64>) -> Result<Self, crate::Error> {
        if durations.len() != n * n || distances.len() != n * n {
            return Err(crate::Error::Invalid {
                what: "travel table".into(),
                detail: format!(
                    "{} durations and {} distances for {n} locations (want {})",
                    durations.len(),
                    distances.len(),
                    n * n
                ),
            });
        }
        if let Some(bad) = durations
            .iter()
            .chain(&distances)
            .find(|x| !x.is_finite() || **x < 0.0)
        {
            return Err(crate::Error::Invalid {
                what: "travel table".into(),
                detail: format!("{bad} is not a travel time or distance"),
            });
        }
        Ok(Self {
            n,
            durations,
            distances,
        })
    }

    /// Plane coordinates, travel time equal to Euclidean distance, in double
    /// precision: the Solomon convention.
    pub fn euclidean(points: &[(f64, f64)]) -> Self {
        let n = points.len();
        let mut d = Vec::with_capacity(n * n);
        for a in points {
            for b in points {
                d.push(((a.0 - b.0).powi(2) + (a.1 - b.1).powi(2)).sqrt());
            }
        }
        Self {
            n,
            durations: d.clone(),
            distances: d,
        }
    }

    /// Locations in the table.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Whether it has no location at all.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// Seconds from `a` to `b`.
    pub fn duration(&self, a: usize, b: usize) -> f64 {
        self.durations[a * self.n + b]
    }

    /// Metres from `a` to `b`.
    pub fn distance(&self, a: usize, b: usize) -> f64 {
        self.distances[a * self.n + b]
    }

    pub(crate) fn durations(&self) -> &[f64] {
        &self.durations
    }

    pub(crate) fn distances(&self) -> &[f64] {
        &self.distances
    }
}

/// Makes a [`Table`] for positions.
pub trait TravelMatrix: Send + Sync {
    /// Travel between every pair of `points`.
    fn table(&self, points: &[Point]) -> Result<Table, crate::Error>;
}

/// Great-circle distance times a road factor, at a fixed speed.
///
/// The defaults describe a delivery van in and around a Nordic city: roads
/// are about 1.3 times longer than the straight line (typical circuity of
/// urban and suburban networks), and a van averages 30 km/h door to door
/// (traffic, parking and turning included, stops excluded).
#[derive(Debug, Clone, Copy)]
pub struct GreatCircle {
    /// Road distance over straight-line distance.
    pub road_factor: f64,
    /// Average driving speed, km/h.
    pub speed_kmh: f64,
}

impl Default for GreatCircle {
    fn default() -> Self {
        Self {
            road_factor: 1.3,
            speed_kmh: 30.0,
        }
    }
}

/// The haversine great-circle distance in metres.
pub fn great_circle_m(a: Point, b: Point) -> f64 {
    threshold_domain::geo::great_circle_m((a.latitude, a.longitude), (b.latitude, b.longitude))
}

impl TravelMatrix for GreatCircle {
    fn table(&self, points: &[Point]) -> Result<Table, crate::Error> {
        if self.road_factor.is_nan()
            || self.road_factor < 1.0
            || self.speed_kmh.is_nan()
            || self.speed_kmh <= 0.0
        {
            return Err(crate::Error::Invalid {
                what: "great-circle matrix".into(),
                detail: format!(
                    "road factor {} (at least 1) and speed {} km/h (above 0)",
                    self.road_factor, self.speed_kmh
                ),
            });
        }
        let n = points.len();
        let metres_per_second = self.speed_kmh / 3.6;
        let mut distances = Vec::with_capacity(n * n);
        for a in points {
            for b in points {
                distances.push(great_circle_m(*a, *b) * self.road_factor);
            }
        }
        let durations = distances.iter().map(|d| d / metres_per_second).collect();
        Table::new(n, durations, distances)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn great_circle_matches_known_distances() {
        // Copenhagen to Stockholm, about 522 km as the crow flies.
        let cph = Point {
            latitude: 55.676,
            longitude: 12.568,
        };
        let sto = Point {
            latitude: 59.329,
            longitude: 18.068,
        };
        let d = great_circle_m(cph, sto);
        assert!((d - 522_000.0).abs() < 5_000.0, "{d}");
        let t = GreatCircle::default().table(&[cph, sto]).unwrap();
        assert_eq!(t.distance(0, 0), 0.0);
        assert!((t.distance(0, 1) - d * 1.3).abs() < 1e-6);
        // 30 km/h: 3.6 s... per 30 m.
        assert!((t.duration(0, 1) - t.distance(0, 1) / (30.0 / 3.6)).abs() < 1e-6);
    }

    #[test]
    fn tables_refuse_wrong_shapes_and_values() {
        assert!(Table::new(2, vec![0.0; 4], vec![0.0; 3]).is_err());
        assert!(Table::new(1, vec![f64::NAN], vec![0.0]).is_err());
        assert!(
            GreatCircle {
                road_factor: 0.5,
                speed_kmh: 30.0
            }
            .table(&[])
            .is_err()
        );
        let e = Table::euclidean(&[(0.0, 0.0), (3.0, 4.0)]);
        assert_eq!(e.distance(1, 0), 5.0);
        assert_eq!(e.duration(0, 1), 5.0);
    }
}
