//! The simulator's connections to the server: where each service is
//! (`--service-url`), a channel per address with the credential of the role
//! played there, and requests stamped with the simulated day's clock.
//!
//! Only how to reach and call the services lives here; it never decides
//! what the day holds nor what is sent.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use threshold_auth::{Authed, LocalTokens, Role};
use tonic::transport::Channel;

use super::BoxError;

/// The services the simulator calls, each of which may be in a process of
/// its own: `--service-url NAME=URL` names them.
pub(crate) const SERVICE_NAMES: [&str; 5] =
    ["manifest", "planning", "attempts", "access", "analytics"];

/// Where each service is: `server` unless `urls` names another URL for it.
pub(crate) fn service_urls(
    server: &str,
    urls: &[String],
) -> Result<BTreeMap<&'static str, String>, BoxError> {
    let mut out: BTreeMap<&'static str, String> = SERVICE_NAMES
        .iter()
        .map(|n| (*n, server.to_owned()))
        .collect();
    for u in urls {
        let (name, url) = u
            .split_once('=')
            .ok_or_else(|| format!("--service-url {u:?} is not NAME=URL"))?;
        let slot = SERVICE_NAMES.iter().find(|n| **n == name).ok_or_else(|| {
            format!(
                "--service-url {u:?}: no service {name:?}; one of {}",
                SERVICE_NAMES.join(", ")
            )
        })?;
        out.insert(slot, url.to_owned());
    }
    Ok(out)
}

/// Connections to the services, each with the credential of the role the
/// simulator plays there: the planner, the drivers' handhelds, the
/// residents, the lock vendor's cloud and the analyst.
#[derive(Clone)]
pub(super) struct Conn {
    /// The planner at ManifestService.
    pub(super) manifest: Authed,
    /// The planner at PlanningService.
    pub(super) planner: Authed,
    /// A handheld at HandheldService.
    pub(super) handheld: Authed,
    /// A handheld at AccessService, asking for unlocks.
    pub(super) unlock: Authed,
    pub(super) resident: Authed,
    pub(super) vendor: Authed,
    pub(super) analyst: Authed,
}

impl Conn {
    pub(super) async fn new(
        urls: &BTreeMap<&'static str, String>,
        ca: Option<&[u8]>,
        tokens: &LocalTokens,
    ) -> Result<Self, BoxError> {
        let mut channels: BTreeMap<&str, Channel> = BTreeMap::new();
        for url in urls.values() {
            if !channels.contains_key(url.as_str()) {
                channels.insert(url, crate::connect(url, ca).await?);
            }
        }
        let at = |service: &str, role: Role| -> Result<Authed, BoxError> {
            let token = tokens
                .token(role)
                .ok_or_else(|| format!("no local {role} token"))?;
            let channel = urls
                .get(service)
                .and_then(|u| channels.get(u.as_str()))
                .ok_or_else(|| format!("no address for {service}"))?;
            Ok(threshold_auth::authed(channel.clone(), Some(token))?)
        };
        Ok(Self {
            manifest: at("manifest", Role::Planner)?,
            planner: at("planning", Role::Planner)?,
            handheld: at("attempts", Role::Handheld)?,
            unlock: at("access", Role::Handheld)?,
            resident: at("access", Role::Resident)?,
            vendor: at("access", Role::LockVendor)?,
            analyst: at("analytics", Role::Analyst)?,
        })
    }
}

/// `request` at `at` on the simulation's clock.
pub(super) fn at<T>(request: T, at: DateTime<Utc>) -> Result<tonic::Request<T>, BoxError> {
    let mut r = tonic::Request::new(request);
    r.metadata_mut().insert(
        threshold_api::SIMULATED_TIME_HEADER,
        at.to_rfc3339().parse()?,
    );
    Ok(r)
}

/// A server refusing the simulation's clock is not running a simulation.
pub(super) fn access_error(what: &str, s: &tonic::Status) -> BoxError {
    if s.code() == tonic::Code::FailedPrecondition
        && s.message().contains(threshold_api::SIMULATED_TIME_HEADER)
    {
        format!(
            "{what}: the server must run as a simulation (threshold serve --simulation) \
             for in-home grants to follow the simulated day: {}",
            s.message()
        )
        .into()
    } else {
        format!("{what}: {}", s.message()).into()
    }
}
