//! `threshold routing solve`: the planner on a benchmark instance, so it can
//! be measured against the literature.

use std::path::PathBuf;
use std::time::Instant;

use threshold_routing::{Objective, Options, check, solomon, solve};

/// Options of `threshold routing solve`.
#[derive(clap::Args)]
pub(crate) struct SolveArgs {
    /// The instance file.
    file: PathBuf,
    /// Its format (only `solomon`: Solomon and Gehring & Homberger VRPTW).
    #[arg(long, default_value = "solomon")]
    format: String,
    /// Seconds of search.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// `distance` (total distance, as best-known solutions are) or
    /// `business` (fewest vans, then driving time, then distance).
    #[arg(long, default_value = "distance")]
    objective: Objective,
    /// Print JSON: {"instance", "vehicles", "distance", "seconds", "routes": [[customer, ...], ...]}.
    #[arg(long)]
    json: bool,
}

pub(crate) fn solve_file(args: SolveArgs) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if args.format != "solomon" {
        return Err(format!("--format {}: only solomon is supported", args.format).into());
    }
    if !(args.seconds.is_finite() && args.seconds >= 0.0) {
        return Err(format!("--seconds {}: not a number of seconds", args.seconds).into());
    }
    let text = std::fs::read_to_string(&args.file)
        .map_err(|e| format!("cannot read {}: {e}", args.file.display()))?;
    let problem = solomon::parse(&args.file.display().to_string(), &text)?;
    let started = Instant::now();
    let plan = solve(
        &problem,
        Options {
            objective: args.objective,
            seconds: args.seconds,
            repeatable: false,
        },
    )?;
    let seconds = started.elapsed().as_secs_f64();
    let violations = check(&problem, &plan);
    if let Some(v) = violations.first() {
        return Err(format!(
            "the plan breaks its problem ({} violations), first: {v}",
            violations.len()
        )
        .into());
    }
    let routes: Vec<Vec<u64>> = plan
        .routes
        .iter()
        .map(|r| {
            r.visits
                .iter()
                .map(|v| problem.stops[v.stop].id.parse().unwrap_or(0))
                .collect()
        })
        .collect();
    let distance = plan.distance(&problem);
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "instance": problem.name,
                "vehicles": routes.len(),
                "distance": distance,
                "seconds": seconds,
                "routes": routes,
                "unassigned": plan.unassigned.iter().map(|u| serde_json::json!({
                    "customer": problem.stops[u.stop].id, "reason": u.reason,
                })).collect::<Vec<_>>(),
            })
        );
    } else {
        println!(
            "{}: {} vehicles, distance {distance:.2}, {seconds:.1} s, {} unassigned",
            problem.name,
            routes.len(),
            plan.unassigned.len()
        );
        for (i, r) in routes.iter().enumerate() {
            let list: Vec<String> = r.iter().map(u64::to_string).collect();
            println!("route {}: {}", i + 1, list.join(" "));
        }
        for u in &plan.unassigned {
            println!("unassigned {}: {}", problem.stops[u.stop].id, u.reason);
        }
    }
    Ok(())
}
