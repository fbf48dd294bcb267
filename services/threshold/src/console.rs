//! `--console ADDR` of `threshold serve` and `threshold run`: the web
//! console (`threshold-console`) on its own port, over the node's log and
//! vault, signing in the node's credentials.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use threshold_api::v1::manifest_service_server::ManifestService as _;
use threshold_api::v1::planning_service_server::PlanningService as _;
use threshold_api::v1::{ManifestChunk, PlanDayRequest, load_manifest_reply};
use threshold_auth::{LocalTokens, Role};
use threshold_console::{Console, Models, Replan, Replanned, Upload, Uploaded};
use threshold_domain::country::date_to_proto;
use threshold_manifest_service::Manifests;
use threshold_planning_service::Planning;
use threshold_routing::depot::Fleets;
use threshold_server::Node;

/// The console's replan action: PlanDay on this node's planning service,
/// in-process, as the signed-in principal (the service checks it again).
fn replan(planning: Planning) -> Replan {
    Arc::new(move |principal, depot, date| {
        let planning = planning.clone();
        Box::pin(async move {
            let mut request = tonic::Request::new(PlanDayRequest {
                date: Some(date_to_proto(date)),
                depot_ids: vec![depot.clone()],
                ..Default::default()
            });
            request.extensions_mut().insert(principal);
            let reply = planning
                .plan_day(request)
                .await
                .map_err(|s| s.message().to_owned())?
                .into_inner();
            let plan = reply
                .depots
                .into_iter()
                .find(|p| p.depot_id == depot)
                .ok_or_else(|| format!("no parcels to plan at {depot} on {date}"))?;
            Ok(Replanned {
                vans_used: plan.vans_used,
                vans_available: plan.vans_available,
                routes_changed: plan.routes_changed,
                stops_kept_on_van: plan.stops_kept_on_van,
                stops_moved: plan.stops_moved,
                km: plan.distance_m / 1000.0,
                unassigned: plan
                    .unassigned
                    .into_iter()
                    .map(|u| (u.parcel_id, u.reason))
                    .collect(),
            })
        })
    })
}

/// The console's manifest upload: LoadManifest on this node's manifest
/// service, in-process, as the signed-in principal: the file is framed as
/// the gRPC stream of chunks a client would send.
fn upload(manifests: Manifests) -> Upload {
    Arc::new(move |principal, manifest_id, bytes| {
        let manifests = manifests.clone();
        Box::pin(async move {
            let mut framed = Vec::with_capacity(bytes.len() + 64);
            let chunks: Vec<ManifestChunk> = if bytes.is_empty() {
                vec![ManifestChunk {
                    manifest_id: manifest_id.clone(),
                    data: Vec::new(),
                }]
            } else {
                bytes
                    .chunks(64 * 1024)
                    .enumerate()
                    .map(|(i, c)| ManifestChunk {
                        manifest_id: if i == 0 {
                            manifest_id.clone()
                        } else {
                            String::new()
                        },
                        data: c.to_vec(),
                    })
                    .collect()
            };
            for chunk in chunks {
                let message = prost::Message::encode_to_vec(&chunk);
                framed.push(0);
                framed.extend_from_slice(
                    &u32::try_from(message.len())
                        .map_err(|e| e.to_string())?
                        .to_be_bytes(),
                );
                framed.extend_from_slice(&message);
            }
            let inbound = tonic::Streaming::new_request(
                tonic::codec::Codec::decoder(&mut tonic_prost::ProstCodec::<
                    ManifestChunk,
                    ManifestChunk,
                >::default()),
                http_body_util::Full::new(bytes::Bytes::from(framed)),
                None,
                Some(threshold_console::MAX_UPLOAD + 64 * 1024),
            );
            let mut request = tonic::Request::new(inbound);
            request.extensions_mut().insert(principal);
            let mut replies = manifests
                .load_manifest(request)
                .await
                .map_err(|s| s.message().to_owned())?
                .into_inner();
            let mut done = Uploaded {
                manifest_id,
                ..Uploaded::default()
            };
            while let Some(reply) = tokio_stream::StreamExt::next(&mut replies).await {
                match reply.map_err(|s| s.message().to_owned())?.reply {
                    Some(load_manifest_reply::Reply::Rejected(r)) => {
                        done.refused.push((r.line, r.field, r.message));
                    }
                    Some(load_manifest_reply::Reply::Summary(s)) => {
                        done.manifest_id = s.manifest_id;
                        done.rows = s.rows;
                        done.accepted = s.accepted;
                        done.unchanged = s.unchanged;
                    }
                    None => {}
                }
            }
            Ok(done)
        })
    })
}

/// Refuses a console served in plaintext off loopback without --insecure,
/// before anything is bound: it carries sessions and sign-in codes.
pub(crate) fn check(addr: Option<SocketAddr>, insecure: bool) -> Result<(), crate::BoxError> {
    if let Some(addr) = addr
        && threshold_server::exposure(addr, false, insecure).is_err()
    {
        return Err(format!(
            "refusing to serve the console on {addr} in plaintext: it has no TLS; give it a \
             loopback address (e.g. 127.0.0.1:8080), or --insecure behind a TLS-terminating proxy"
        )
        .into());
    }
    Ok(())
}

/// The console's listener, bound before the node opens so that a taken
/// port fails the start with nothing opened.
pub(crate) async fn bind(
    addr: Option<SocketAddr>,
) -> Result<Option<tokio::net::TcpListener>, crate::BoxError> {
    match addr {
        None => Ok(None),
        Some(addr) => {
            Ok(Some(tokio::net::TcpListener::bind(addr).await.map_err(
                |e| format!("cannot listen on {addr} for the console: {e}"),
            )?))
        }
    }
}

/// Starts the console on `listener` over `node`'s models; prints its address
/// and, when the data directory holds local tokens, a one-time sign-in link
/// for a planner and for an analyst. The task runs until aborted.
pub(crate) fn start(
    listener: tokio::net::TcpListener,
    node: &Node,
    fleets: Fleets,
    data: &Path,
) -> Result<tokio::task::JoinHandle<threshold_console::Result<()>>, crate::BoxError> {
    let mut console = Console::new(
        Models::follow(node.log(), node.vault()),
        fleets,
        node.authenticator(),
    );
    if let Some(manifests) = node.manifests() {
        console = console.with_upload(upload(manifests));
    }
    if let Some(planning) = node.planning() {
        console = console.with_replan(replan(planning));
    }
    if let Some(track) = node.track() {
        console = console.with_track(track);
    }
    let (addr, task) = console.clone().spawn(listener, std::future::pending())?;
    println!("console on http://{addr}/ (sign in with a token, or a one-time link)");
    if let Ok(tokens) = LocalTokens::load(data) {
        for role in [Role::Planner, Role::Analyst] {
            if let Some(path) = tokens
                .token(role)
                .and_then(|t| console.sign_in_path_for_token(t))
            {
                println!(
                    "  {role}: http://{addr}{path} (once, within {} minutes)",
                    threshold_console::CODE_TTL.as_secs() / 60
                );
            }
        }
    }
    Ok(task)
}
