//! The day's routes: planned by the server through PlanningService (which
//! first carries the previous delivery day's open parcels over to it), then
//! read back driver by driver through HandheldService.GetRoute, as a
//! handheld would.
//!
//! The simulator never plans a route itself: it drives what the server
//! planned.

use chrono::{DateTime, NaiveDate, Utc};
use threshold_api::v1::handheld_service_client::HandheldServiceClient;
use threshold_api::v1::planning_service_client::PlanningServiceClient;
use threshold_api::v1::{GetRouteRequest, PlanDayRequest};
use threshold_domain::country::{date_to_proto, instant};

use super::BoxError;
use super::conn::{Conn, at};
use super::drivers::Drive;
use super::parcels::Parcel;

/// The day's plan: its routes, and what the planner carried over.
pub(super) struct Planned {
    pub(super) drives: Vec<Drive>,
    /// Parcels of the previous delivery day moved to this one.
    pub(super) carried_over: u32,
    /// Parcels returned to their sender instead, their last attempt failed.
    pub(super) returned: u32,
}

/// Plans the day's routes through PlanningService at `t` on the simulation's
/// clock, repeatably (`generations` seeded with `seed`), carrying over the
/// open parcels of `carry_over_from`,
/// and reads each driver's route back through HandheldService.GetRoute, as
/// a handheld would. `parcels` are those the route may name.
pub(super) async fn plan(
    conn: &Conn,
    date: NaiveDate,
    carry_over_from: Option<NaiveDate>,
    seed: u64,
    generations: u32,
    parcels: Vec<Parcel>,
    t: DateTime<Utc>,
) -> Result<Planned, BoxError> {
    let reply = PlanningServiceClient::new(conn.planner.clone())
        .plan_day(at(
            PlanDayRequest {
                date: Some(date_to_proto(date)),
                depot_ids: Vec::new(),
                seconds_per_depot: 0.0,
                objective: String::new(),
                generations,
                seed,
                carry_over_from: carry_over_from.map(date_to_proto),
            },
            t,
        )?)
        .await
        .map_err(|s| format!("planning the day: {}", s.message()))?
        .into_inner();
    let (mut vans, mut unassigned, mut distance) = (0, 0, 0.0);
    let (mut carried_over, mut returned) = (0, 0);
    for d in &reply.depots {
        carried_over += d.carried_over;
        returned += d.returned;
        vans += d.vans_used;
        distance += d.distance_m;
        unassigned += d.unassigned.len();
        for u in &d.unassigned {
            eprintln!("{}: {} not planned: {}", d.depot_id, u.parcel_id, u.reason);
        }
    }
    println!(
        "planned {} depots: {vans} vans, {:.0} km, {unassigned} parcels left unplanned",
        reply.depots.len(),
        distance / 1000.0
    );
    let mut by_id: std::collections::HashMap<String, Parcel> =
        parcels.into_iter().map(|p| (p.id.clone(), p)).collect();
    let mut handheld = HandheldServiceClient::new(conn.handheld.clone());
    let mut drives = Vec::new();
    for d in &reply.depots {
        for van in 0..d.vans_available {
            let driver = threshold_routing::depot::driver_id(&d.depot_id, van as usize);
            let routes = handheld
                .get_route(GetRouteRequest {
                    driver_id: driver.clone(),
                    date: Some(date_to_proto(date)),
                })
                .await
                .map_err(|s| format!("route of {driver}: {}", s.message()))?
                .into_inner()
                .routes;
            for r in routes {
                let mut stops = Vec::new();
                for s in r.stops {
                    let at = s
                        .planned_arrival
                        .as_ref()
                        .ok_or("a planned stop without its time")
                        .and_then(|t| instant(t).map_err(|_| "a planned time out of range"))?;
                    for p in s.parcel_ids {
                        if let Some(parcel) = by_id.remove(&p) {
                            stops.push((parcel, at));
                        }
                    }
                }
                if !stops.is_empty() {
                    drives.push(Drive {
                        driver: driver.clone(),
                        route_id: r.route_id,
                        stops,
                    });
                }
            }
        }
    }
    Ok(Planned {
        drives,
        carried_over,
        returned,
    })
}
