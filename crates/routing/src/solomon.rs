//! Solomon-format VRPTW instances: the literature's benchmark files.
//!
//! A name line, a `VEHICLE` block with the fleet size and capacity, then a
//! `CUSTOMER` block, one line per node: number, x, y, demand, ready time,
//! due date, service time. Node 0 is the depot; its window is every van's
//! shift. Travel time equals Euclidean distance, in double precision.

use crate::{Error, Load, Problem, Stop, Table, Van};

/// Reads an instance; errors name the line and what is wrong with it.
pub fn parse(name: &str, text: &str) -> Result<Problem, Error> {
    let invalid = |line: usize, detail: String| Error::Invalid {
        what: format!("{name}, line {line}"),
        detail,
    };
    let mut lines = text.lines().enumerate().map(|(i, l)| (i + 1, l.trim()));
    let instance = lines
        .by_ref()
        .find(|(_, l)| !l.is_empty())
        .map(|(_, l)| l.to_owned())
        .ok_or_else(|| invalid(1, "empty file".into()))?;
    let numbers = |line: usize, l: &str, want: usize| -> Result<Vec<f64>, Error> {
        let v: Vec<f64> = l
            .split_whitespace()
            .map(|x| {
                x.parse::<f64>()
                    .map_err(|_| invalid(line, format!("{x:?} is not a number")))
            })
            .collect::<Result<_, _>>()?;
        if v.len() != want {
            return Err(invalid(line, format!("{} fields, want {want}", v.len())));
        }
        Ok(v)
    };
    // VEHICLE, then a header line, then "number capacity".
    lines
        .by_ref()
        .find(|(_, l)| l.eq_ignore_ascii_case("VEHICLE"))
        .ok_or_else(|| invalid(0, "no VEHICLE block".into()))?;
    let (line, fleet) = lines
        .by_ref()
        .find(|(_, l)| l.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .ok_or_else(|| invalid(0, "no fleet line".into()))?;
    let fleet = numbers(line, fleet, 2)?;
    let (count, capacity) = (fleet[0] as usize, fleet[1] as i32);
    lines
        .by_ref()
        .find(|(_, l)| l.eq_ignore_ascii_case("CUSTOMER"))
        .ok_or_else(|| invalid(line, "no CUSTOMER block".into()))?;
    let mut points = Vec::new();
    let mut nodes = Vec::new();
    for (line, l) in lines {
        if !l.chars().next().is_some_and(|c| c.is_ascii_digit()) {
            continue;
        }
        let v = numbers(line, l, 7)?;
        if v[0] as usize != nodes.len() {
            return Err(invalid(
                line,
                format!("node {} out of order, want {}", v[0], nodes.len()),
            ));
        }
        points.push((v[1], v[2]));
        nodes.push((line, v));
    }
    let Some((_, depot)) = nodes.first() else {
        return Err(invalid(0, "no depot (node 0)".into()));
    };
    let shift = (depot[4], depot[5]);
    let vans = (0..count)
        .map(|i| Van {
            id: format!("v{}", i + 1),
            driver_id: format!("d{}", i + 1),
            capacity: Load {
                weight: capacity,
                volume: 0,
            },
            shift,
            in_home: false,
        })
        .collect();
    let stops = nodes
        .iter()
        .skip(1)
        .map(|(_, v)| Stop {
            id: format!("{}", v[0] as usize),
            location: v[0] as usize,
            load: Load {
                weight: v[3] as i32,
                volume: 0,
            },
            window: Some((v[4], v[5])),
            service: v[6],
            in_home: false,
        })
        .collect();
    let problem = Problem {
        name: instance,
        table: Table::euclidean(&points),
        vans,
        stops,
    };
    problem.validate()?;
    Ok(problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: &str = "TINY

VEHICLE
NUMBER     CAPACITY
  2         10

CUSTOMER
CUST NO.  XCOORD.   YCOORD.    DEMAND   READY TIME  DUE DATE   SERVICE   TIME

    0      0         0          0          0       100          0
    1      3         4          5         0        50         2
    2      0         10         6         20       30         1
";

    #[test]
    fn reads_a_solomon_file() {
        let p = parse("tiny.txt", TINY).unwrap();
        assert_eq!(p.name, "TINY");
        assert_eq!(p.vans.len(), 2);
        assert_eq!(p.vans[0].capacity.weight, 10);
        assert_eq!(p.vans[0].shift, (0.0, 100.0));
        assert_eq!(p.stops.len(), 2);
        assert_eq!(p.stops[1].window, Some((20.0, 30.0)));
        assert_eq!(p.table.distance(0, 1), 5.0);
    }

    #[test]
    fn a_bad_line_is_named() {
        let bad = TINY.replace("0        50         2", "0        fifty      2");
        let e = parse("tiny.txt", &bad).unwrap_err().to_string();
        assert!(
            e.contains("tiny.txt, line 11") && e.contains("fifty"),
            "{e}"
        );
        let short = TINY.replace(
            "   2      0         10         6         20       30         1",
            "   2      0",
        );
        let e = parse("tiny.txt", &short).unwrap_err().to_string();
        assert!(e.contains("line 12") && e.contains("2 fields"), "{e}");
    }
}
