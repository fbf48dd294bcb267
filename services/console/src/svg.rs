//! Charts and the map as inline SVG, written by hand: a few hundred lines
//! give line charts, ranked bars and projected outlines with text the
//! browser renders, where a plotting crate would bring its own font stack
//! for the same pictures. Every number drawn is also on the page as a table
//! and as CSV; the SVG is the picture of them, never the only copy.

use std::fmt::Write as _;

use crate::esc;

/// Colours for series, in order; chosen to stay apart for common colour
/// blindness (Okabe–Ito).
pub(crate) const PALETTE: [&str; 8] = [
    "#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442", "#000000",
];

/// One named series of (x label, value).
pub(crate) struct Series<'a> {
    /// Its name, for the legend.
    pub(crate) name: &'a str,
    /// Its points, x labels in the order of the chart's axis.
    pub(crate) points: Vec<(String, f64)>,
}

/// A line chart of `series` over the x labels `xs` (days), values from 0 to
/// the largest (or to 1 for rates, `unit` = "%").
pub(crate) fn lines(title: &str, xs: &[String], series: &[Series<'_>], percent: bool) -> String {
    let (w, h, left, right, top, bottom) = (720.0, 260.0, 56.0, 150.0, 24.0, 40.0);
    let pw = w - left - right;
    let ph = h - top - bottom;
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0f64, f64::max);
    let max = if percent {
        (max * 1.1).clamp(0.05, 1.0)
    } else {
        (max * 1.1).max(1e-9)
    };
    let x_of = |i: usize| {
        if xs.len() <= 1 {
            left + pw / 2.0
        } else {
            left + pw * i as f64 / (xs.len() - 1) as f64
        }
    };
    let y_of = |v: f64| top + ph * (1.0 - v / max);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    for k in 0..=4 {
        let v = max * k as f64 / 4.0;
        let y = y_of(v);
        let label = if percent {
            format!("{:.0}%", v * 100.0)
        } else {
            format!("{v:.2}")
        };
        let _ = write!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" font-size="11" text-anchor="end">{label}</text>"##,
            left + pw,
            left - 4.0,
            y + 4.0
        );
    }
    // At most ~8 day labels, evenly spread.
    let every = xs.len().div_ceil(8).max(1);
    for (i, x) in xs.iter().enumerate() {
        if i % every == 0 || i + 1 == xs.len() {
            let _ = write!(
                s,
                r#"<text x="{:.1}" y="{}" font-size="10" text-anchor="middle">{}</text>"#,
                x_of(i),
                h - bottom + 16.0,
                esc(x.get(5..).unwrap_or(x))
            );
        }
    }
    for (k, series) in series.iter().enumerate() {
        let colour = PALETTE[k % PALETTE.len()];
        let mut path = String::new();
        // A dot on every point too: a single day is a dot, not nothing.
        let mut dots = String::new();
        for (x, v) in &series.points {
            if let Some(i) = xs.iter().position(|d| d == x) {
                let (px, py) = (x_of(i), y_of(*v));
                let _ = write!(
                    path,
                    "{}{px:.1},{py:.1}",
                    if path.is_empty() { "M" } else { " L" },
                );
                let _ = write!(
                    dots,
                    r#"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="{colour}"><title>{} {}: {}</title></circle>"#,
                    esc(series.name),
                    esc(x),
                    if percent {
                        format!("{:.1}%", v * 100.0)
                    } else {
                        format!("{v:.3}")
                    }
                );
            }
        }
        let _ = write!(
            s,
            r#"<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"/>{dots}"#
        );
        let ly = top + 14.0 * k as f64 + 6.0;
        let _ = write!(
            s,
            r#"<rect x="{}" y="{:.1}" width="10" height="10" fill="{colour}"/><text x="{}" y="{:.1}" font-size="11">{}</text>"#,
            w - right + 10.0,
            ly - 9.0,
            w - right + 24.0,
            ly,
            esc(series.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Horizontal bars, largest first as given, each labelled with its value.
pub(crate) fn bars(title: &str, rows: &[(String, f64)], percent: bool) -> String {
    let (w, left, bar, gap) = (720.0, 170.0, 18.0, 6.0);
    let h = 20.0 + rows.len() as f64 * (bar + gap);
    let max = rows.iter().map(|r| r.1).fold(0.0f64, f64::max).max(1e-9);
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = esc(title)
    );
    for (i, (label, v)) in rows.iter().enumerate() {
        let y = 10.0 + i as f64 * (bar + gap);
        let len = (w - left - 90.0) * v / max;
        let value = if percent {
            format!("{:.1}%", v * 100.0)
        } else {
            format!("{v}")
        };
        let _ = write!(
            s,
            r#"<text x="{}" y="{:.1}" font-size="12" text-anchor="end">{}</text><rect x="{left}" y="{y:.1}" width="{len:.1}" height="{bar}" fill="{}"/><text x="{:.1}" y="{:.1}" font-size="12">{value}</text>"#,
            left - 6.0,
            y + 13.0,
            esc(label),
            PALETTE[0],
            left + len + 4.0,
            y + 13.0,
        );
    }
    s.push_str("</svg>");
    s
}

/// A point on the map, in degrees.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LonLat {
    /// East.
    pub(crate) lon: f64,
    /// North.
    pub(crate) lat: f64,
}

/// An equirectangular view of a bounding box, its longitude scaled by the
/// cosine of its middle latitude so that a depot's few kilometres keep their
/// shape.
pub(crate) struct View {
    west: f64,
    east: f64,
    south: f64,
    north: f64,
    /// Pixels per degree of longitude.
    kx: f64,
    /// Pixels per degree of latitude.
    ky: f64,
    /// Width in pixels.
    pub(crate) w: f64,
    /// Height in pixels.
    pub(crate) h: f64,
}

impl View {
    /// The view of `points` (padded by a tenth, at least ~1 km), at most `w`
    /// pixels wide and `max_h` high.
    pub(crate) fn of(points: &[LonLat], w: f64, max_h: f64) -> Option<View> {
        let first = points.first()?;
        let (mut west, mut east, mut south, mut north) =
            (first.lon, first.lon, first.lat, first.lat);
        for p in points {
            west = west.min(p.lon);
            east = east.max(p.lon);
            south = south.min(p.lat);
            north = north.max(p.lat);
        }
        let pad_lat = ((north - south) * 0.1).max(0.01);
        let pad_lon = ((east - west) * 0.1).max(0.02);
        let (west, east, south, north) = (
            west - pad_lon,
            east + pad_lon,
            south - pad_lat,
            north + pad_lat,
        );
        let cos = ((north + south) / 2.0).to_radians().cos();
        let mut ky = w / ((east - west) * cos);
        if (north - south) * ky > max_h {
            ky = max_h / (north - south);
        }
        let kx = ky * cos;
        Some(View {
            west,
            east,
            south,
            north,
            kx,
            ky,
            w: (east - west) * kx,
            h: (north - south) * ky,
        })
    }

    /// Pixels of a point.
    pub(crate) fn xy(&self, p: LonLat) -> (f64, f64) {
        (
            (p.lon - self.west) * self.kx,
            (self.north - p.lat) * self.ky,
        )
    }

    /// Whether a box meets the view, or comes near it (a quarter of its size).
    fn meets(&self, west: f64, east: f64, south: f64, north: f64) -> bool {
        let (mx, my) = (
            (self.east - self.west) / 4.0,
            (self.north - self.south) / 4.0,
        );
        east >= self.west - mx
            && west <= self.east + mx
            && north >= self.south - my
            && south <= self.north + my
    }

    /// SVG paths of the outlines' parts near the view: a ring is broken
    /// where it leaves the view, so a city's page carries its coast only.
    pub(crate) fn outlines(&self, rings: &[crate::map::Ring]) -> String {
        let mut s = String::new();
        for ring in rings {
            if !ring.touches(self.west, self.east, self.south, self.north) {
                continue;
            }
            // A segment is drawn when its box meets the view (with a
            // margin): coasts at 1:10m have points kilometres apart, so a
            // depot's few kilometres may lie between two of them.
            let mut pen_down = false;
            for pair in ring.points.windows(2) {
                let ((lon0, lat0), (lon1, lat1)) = (pair[0], pair[1]);
                if self.meets(
                    lon0.min(lon1),
                    lon0.max(lon1),
                    lat0.min(lat1),
                    lat0.max(lat1),
                ) {
                    if !pen_down {
                        let (x, y) = self.xy(LonLat {
                            lon: lon0,
                            lat: lat0,
                        });
                        let _ = write!(s, " M{x:.1},{y:.1}");
                    }
                    let (x, y) = self.xy(LonLat {
                        lon: lon1,
                        lat: lat1,
                    });
                    let _ = write!(s, " L{x:.1},{y:.1}");
                    pen_down = true;
                } else {
                    pen_down = false;
                }
            }
        }
        s
    }
}
