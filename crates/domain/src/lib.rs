//! Threshold's domain: what a parcel, a route, an in-home grant and a home
//! are, and the rules that move them. Pure and synchronous: nothing here
//! touches a file, a socket or a clock. Time comes in as an argument.
//!
//! # Layout
//!
//! - [`ids`]: typed identifiers (parcel, partner, depot, ...) and [`StreamId`],
//!   the `category/id` name of one aggregate's stream.
//! - [`country`]: the four countries, their IANA zones and the local-time
//!   conversions every window and delivery day goes through.
//! - [`geo`]: great-circle distances (geofences, travel estimates).
//! - [`event`]: [`DomainEvent`], the payload of one log entry, its dotted type
//!   name and its protobuf encoding (with upcasting of old schema versions).
//! - [`aggregate`]: the [`Aggregate`] trait: `decide(state, command)` holds
//!   all business logic and returns events; `evolve(state, event)` holds none.
//! - [`parcel`], [`route`], [`grant`], [`home`]: the four aggregates.
//! - [`custody`]: which driver may report on a parcel (the driver of the
//!   route whose latest plan names it).
//! - [`enrolment`]: who a home belongs to: its enrolment by the lock's
//!   vendor at the household's address, the household's claim with a
//!   one-time code, and the binding a grant must hold (home claimed by its
//!   resident, parcels of the home's household).
//! - [`entry`]: the rules of an in-home entry that span them (an unlock
//!   refused for a reason outside the grant; an in-home delivery closing).
//!
//! Event payload types are the generated protobuf messages from
//! `threshold-api`, re-exported as [`pb`]: the proto files are the schema.

pub mod aggregate;
pub mod country;
pub mod custody;
pub mod enrolment;
pub mod entry;
pub mod error;
pub mod event;
pub mod geo;
pub mod grant;
pub mod home;
pub mod ids;
pub mod parcel;
pub mod route;

pub use aggregate::{Aggregate, fold};
pub use country::Country;
pub use error::{DomainError, Result};
pub use event::{Category, DomainEvent};
pub use ids::{
    DepotId, DeviceId, DriverId, EventId, GrantId, HomeId, ParcelId, PartnerId, RouteId, StreamId,
    VehicleId,
};

/// The generated protobuf messages of package `threshold.v1`.
pub use threshold_api::v1 as pb;
