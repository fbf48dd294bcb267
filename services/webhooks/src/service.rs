//! WebhookService: the registry over gRPC. The partner acted for is the
//! one the caller's token names; only the carrier (an analyst's token,
//! tenant `*`) names a partner in the request. A partner naming another
//! partner is refused; another partner's endpoint id is not found.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use threshold_api::v1::webhook_service_server::{WebhookService, WebhookServiceServer};
use threshold_api::v1::{
    AddEndpointReply, AddEndpointRequest, DeleteEndpointReply, EndpointRequest, ListAttemptsReply,
    ListAttemptsRequest, ListEndpointsReply, ListEndpointsRequest, ListWebhookAlertsReply,
    ListWebhookAlertsRequest, ReplayReply, ReplayRequest, RotateSecretReply, RotateSecretRequest,
    WebhookAlert, WebhookAttempt, WebhookEndpoint, replay_request,
};
use threshold_auth::Role;
use threshold_status::IntoStatus as _;
use tonic::{Code, Request, Response, Status};

use crate::{Endpoint, Error, MAX_PAGE, Start, State, Verdict, Webhooks};

impl threshold_status::ServiceError for Error {
    fn code(&self) -> Code {
        match self {
            Error::Invalid(_) => Code::InvalidArgument,
            Error::Refused(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::Exhausted(_) => Code::ResourceExhausted,
            Error::Store(_) => Code::Internal,
            Error::Log(e) => threshold_status::ServiceError::code(e),
        }
    }

    fn reply(&self) -> String {
        match self {
            // SQLite's message may name the file: the caller is told what failed.
            Error::Store(_) => "the webhook store failed".into(),
            Error::Log(e) => threshold_status::ServiceError::reply(e),
            other => other.to_string(),
        }
    }
}

/// The gRPC service over a [`Webhooks`] registry.
#[derive(Clone)]
pub struct Service {
    hooks: Arc<Webhooks>,
}

impl Service {
    /// The service over `hooks`.
    pub fn new(hooks: Arc<Webhooks>) -> Self {
        Self { hooks }
    }

    /// As a tonic service, ready to add to a server.
    pub fn into_server(self) -> WebhookServiceServer<Self> {
        WebhookServiceServer::new(self).max_decoding_message_size(16 * 1024)
    }
}

/// The partner a request acts for: the caller's own, or for the carrier
/// the one it names.
fn partner<T>(request: &Request<T>, named: &str) -> Result<String, Status> {
    let caller = threshold_auth::require(request, &[Role::Partner, Role::Analyst])?;
    refuse_country_analyst(caller)?;
    if caller.tenant == threshold_auth::ANY_TENANT {
        if named.is_empty() || named == threshold_auth::ANY_TENANT {
            return Err(threshold_status::field(
                "partner",
                "the carrier names the partner it acts for",
            ));
        }
        return Ok(named.to_owned());
    }
    if !named.is_empty() && named != caller.tenant {
        return Err(Status::permission_denied(format!(
            "partner {:?} manages its own endpoints, not {named:?}'s",
            caller.tenant
        )));
    }
    Ok(caller.tenant.clone())
}

/// An analyst acts for partners only as the carrier's (`*`): one of a
/// country (tenant `SE`) is not the partner of the same name.
fn refuse_country_analyst(caller: &threshold_auth::Principal) -> Result<(), Status> {
    if caller.role == Role::Analyst && caller.tenant != threshold_auth::ANY_TENANT {
        return Err(Status::permission_denied(format!(
            "analyst {:?} acts for country {:?}; partners' endpoints are managed \
             by the partner or by an analyst of every country (*)",
            caller.name, caller.tenant
        )));
    }
    Ok(())
}

/// Whose alerts a request lists: the caller's own partner's, or for the
/// carrier the partner it names (`None`, every partner's, when it names
/// none).
fn alerts_of<T>(request: &Request<T>, named: &str) -> Result<Option<String>, Status> {
    let caller = threshold_auth::require(request, &[Role::Partner, Role::Analyst])?;
    refuse_country_analyst(caller)?;
    if caller.tenant == threshold_auth::ANY_TENANT && named.is_empty() {
        return Ok(None);
    }
    partner(request, named).map(Some)
}

/// A listing's page size: the default and the bound are [`MAX_PAGE`].
fn page(max: u32) -> usize {
    match usize::try_from(max) {
        Ok(0) | Err(_) => MAX_PAGE,
        Ok(n) => n.min(MAX_PAGE),
    }
}

fn endpoint(e: Endpoint) -> WebhookEndpoint {
    WebhookEndpoint {
        id: e.id,
        partner: e.tenant,
        url: e.url,
        kinds: e.kinds,
        state: match e.state {
            State::Active => "active",
            State::Paused => "paused",
            State::Disabled => "disabled",
        }
        .into(),
        reason: e.reason,
        cursor: e.cursor,
    }
}

fn time(t: &prost_types::Timestamp) -> Result<DateTime<Utc>, Status> {
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
        .ok_or_else(|| threshold_status::field("since", "out of range"))
}

#[tonic::async_trait]
impl WebhookService for Service {
    async fn add_endpoint(
        &self,
        request: Request<AddEndpointRequest>,
    ) -> Result<Response<AddEndpointReply>, Status> {
        let tenant = partner(&request, &request.get_ref().partner)?;
        let r = request.into_inner();
        let start = if r.from_start {
            Start::After(0)
        } else {
            Start::Now
        };
        let (ep, secret) = self
            .hooks
            .add(&tenant, &r.url, &r.kinds, start)
            .await
            .map_err(|e| e.into_status())?;
        Ok(Response::new(AddEndpointReply {
            endpoint: Some(endpoint(ep)),
            secret: secret.expose(),
        }))
    }

    async fn list_endpoints(
        &self,
        request: Request<ListEndpointsRequest>,
    ) -> Result<Response<ListEndpointsReply>, Status> {
        let tenant = partner(&request, &request.get_ref().partner)?;
        let endpoints = self.hooks.list(&tenant).map_err(|e| e.into_status())?;
        Ok(Response::new(ListEndpointsReply {
            endpoints: endpoints.into_iter().map(endpoint).collect(),
        }))
    }

    async fn pause_endpoint(
        &self,
        request: Request<EndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        let tenant = partner(&request, &request.get_ref().partner)?;
        let ep = self
            .hooks
            .pause(&tenant, &request.get_ref().id)
            .await
            .map_err(|e| e.into_status())?;
        Ok(Response::new(endpoint(ep)))
    }

    async fn resume_endpoint(
        &self,
        request: Request<EndpointRequest>,
    ) -> Result<Response<WebhookEndpoint>, Status> {
        let tenant = partner(&request, &request.get_ref().partner)?;
        let ep = self
            .hooks
            .resume(&tenant, &request.get_ref().id)
            .await
            .map_err(|e| e.into_status())?;
        Ok(Response::new(endpoint(ep)))
    }

    async fn delete_endpoint(
        &self,
        request: Request<EndpointRequest>,
    ) -> Result<Response<DeleteEndpointReply>, Status> {
        let tenant = partner(&request, &request.get_ref().partner)?;
        self.hooks
            .delete(&tenant, &request.get_ref().id)
            .await
            .map_err(|e| e.into_status())?;
        Ok(Response::new(DeleteEndpointReply {}))
    }

    async fn rotate_secret(
        &self,
        request: Request<RotateSecretRequest>,
    ) -> Result<Response<RotateSecretReply>, Status> {
        let tenant = partner(&request, &request.get_ref().partner)?;
        let r = request.get_ref();
        let secret = self
            .hooks
            .rotate(&tenant, &r.id, Duration::from_secs(r.overlap_seconds))
            .map_err(|e| e.into_status())?;
        Ok(Response::new(RotateSecretReply {
            secret: secret.expose(),
        }))
    }

    async fn replay(
        &self,
        request: Request<ReplayRequest>,
    ) -> Result<Response<ReplayReply>, Status> {
        let tenant = partner(&request, &request.get_ref().partner)?;
        let r = request.into_inner();
        let cursor = match r.from {
            Some(replay_request::From::AfterCursor(c)) => {
                self.hooks.replay_from(&tenant, &r.id, c).await
            }
            Some(replay_request::From::Since(t)) => {
                self.hooks.replay_since(&tenant, &r.id, time(&t)?).await
            }
            None => {
                return Err(threshold_status::field(
                    "from",
                    "give after_cursor or since",
                ));
            }
        }
        .map_err(|e| e.into_status())?;
        Ok(Response::new(ReplayReply { cursor }))
    }

    async fn list_attempts(
        &self,
        request: Request<ListAttemptsRequest>,
    ) -> Result<Response<ListAttemptsReply>, Status> {
        let tenant = partner(&request, &request.get_ref().partner)?;
        let r = request.get_ref();
        let attempts = self
            .hooks
            .attempts(&tenant, &r.id, r.after, page(r.max))
            .map_err(|e| e.into_status())?;
        Ok(Response::new(ListAttemptsReply {
            attempts: attempts
                .into_iter()
                .map(|(seq, a)| WebhookAttempt {
                    seq,
                    event_id: a.event_id,
                    cursor: a.position,
                    parcel_id: a.parcel_id,
                    attempt: a.attempt,
                    at: Some(threshold_domain::country::timestamp(a.at)),
                    status: a.status.map_or(0, u32::from),
                    error: a.error,
                    latency_ms: a.latency_ms,
                    excerpt: a.excerpt,
                    result: match a.verdict {
                        Verdict::Delivered => "delivered",
                        Verdict::Retry => "retry",
                        Verdict::Gone => "gone",
                        Verdict::Exhausted => "exhausted",
                    }
                    .into(),
                })
                .collect(),
        }))
    }

    async fn list_webhook_alerts(
        &self,
        request: Request<ListWebhookAlertsRequest>,
    ) -> Result<Response<ListWebhookAlertsReply>, Status> {
        let tenant = alerts_of(&request, &request.get_ref().partner)?;
        let r = request.get_ref();
        let alerts = self
            .hooks
            .alerts(tenant.as_deref(), r.after, page(r.max))
            .map_err(|e| e.into_status())?;
        let next_after = alerts.last().map_or(r.after, |(seq, _)| *seq);
        Ok(Response::new(ListWebhookAlertsReply {
            alerts: alerts
                .into_iter()
                .map(|(seq, a)| WebhookAlert {
                    seq,
                    endpoint_id: a.endpoint_id,
                    partner: a.tenant,
                    at: Some(threshold_domain::country::timestamp(a.at)),
                    message: a.message,
                })
                .collect(),
            next_after,
        }))
    }
}
