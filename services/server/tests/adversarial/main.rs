//! The adversarial suite: black-box over gRPC against the production
//! server (the testkit's sandbox), an attacker of one party tries every RPC
//! on the other party's tenants, households, homes and routes, and
//! replayed, reordered, future-dated, oversized and malformed inputs; each
//! must be refused and recorded, and the attacked party's day must still
//! go through. `make
//! test-adversarial` runs this target alone; `make test` runs it with
//! every other.
//!
//! # Layout
//!
//! - [`world`]: the two parties and how their day is set up (manifests,
//!   plans, enrolled homes, grants): the one place to adapt when those
//!   change.
//! - [`calls`]: every RPC of the API, called with the other party's
//!   identifiers.
//! - [`matrix`]: actors × RPCs, what each cell must answer, and the check
//!   that the matrix covers every RPC the API declares.
//! - [`replayed`], [`reordered`], [`future_dated`], [`oversized`]: inputs
//!   sent again, out of order, dated ahead, or too large; [`malformed`]:
//!   bytes that do not decode.
//! - [`bindings`]: an actor naming itself on another party's object (its
//!   own driver id on B's grant, its own vendor on B's home, its own
//!   resident ref on B's home or parcel), where what refuses is the
//!   binding of the identity to the object, not the token.
//! - [`countries`]: an analyst of one country on another's reports and
//!   outcomes, and on partners' webhooks.
//! - [`revoked`]: a credential revoked while its stream is open.
//! - [`resources`]: one party's stalled and idle streams held open while
//!   the other's day goes on.
//! - [`recorded`]: the server's metrics, where refusals are counted.
//! - [`owners`]: a party's day, every RPC of it: nothing valid lost.

mod bindings;
mod calls;
mod countries;
mod future_dated;
mod malformed;
mod matrix;
mod oversized;
mod owners;
mod recorded;
mod reordered;
mod replayed;
mod resources;
mod revoked;
mod world;
