//! AnalyticsService: reports from the attempts projection.
//!
//! The projection is kept up to date from the log by a subscription
//! ([`Analytics::start`]); a report reads its counters, never the log. A
//! caller that needs its own writes reflected passes the position it was
//! acknowledged at, and the report waits (briefly) for the projection.

use std::sync::{Arc, RwLock};
use std::time::Duration;
use threshold_auth::Role;

use threshold_api::v1::analytics_service_server::{AnalyticsService, AnalyticsServiceServer};
use threshold_api::v1::{AttemptsReportRequest, AttemptsReportResponse, AttemptsRow};
use threshold_domain::country::date_from_proto;
use threshold_domain::{Country, pb};
use threshold_log::{EventLog, Position};
use threshold_projections::{Attempts, Dimension, Filter, ReportRow};
use threshold_status::{behind, field, status};
use tonic::{Request, Response, Status};

/// How long a report waits for the projection to reach a requested position.
const CATCH_UP: Duration = Duration::from_secs(5);

/// The service, over a projection it keeps up to date.
#[derive(Clone)]
pub struct Analytics {
    model: Arc<RwLock<Attempts>>,
    log: Arc<dyn EventLog>,
}

impl Analytics {
    /// Builds the projection from `log` and keeps following it.
    pub fn start(log: Arc<dyn EventLog>) -> Self {
        let model = Arc::new(RwLock::new(Attempts::default()));
        let follower = Arc::clone(&model);
        let followed = Arc::clone(&log);
        tokio::spawn(async move {
            if let Some(e) =
                threshold_projections::follow(followed, follower, Position::ORIGIN).await
            {
                // The report then says how far it got; the error is the operator's.
                tracing::error!(error = %e, "analytics: the projection stopped following the log");
            }
        });
        Self { model, log }
    }

    /// As a tonic service, ready to add to a server.
    pub fn into_server(self) -> AnalyticsServiceServer<Self> {
        AnalyticsServiceServer::new(self).max_decoding_message_size(64 * 1024)
    }
}

fn filter(r: &AttemptsReportRequest) -> Result<Filter, Status> {
    let date = |d: &Option<pb::LocalDate>, name: &str| {
        d.as_ref()
            .map(|d| date_from_proto(d).map_err(|e| field(name, e)))
            .transpose()
    };
    Ok(Filter {
        country: (r.country != 0)
            .then(|| Country::from_proto(r.country))
            .transpose()
            .map_err(status)?,
        depot: (!r.depot_id.is_empty()).then(|| r.depot_id.clone()),
        from: date(&r.from, "from")?,
        to: date(&r.to, "to")?,
        service: match r.service {
            0 => None,
            s => Some(
                pb::Service::try_from(s)
                    .map_err(|_| field("service", format!("{s} is not a service")))?,
            ),
        },
    })
}

fn to_row(r: ReportRow) -> AttemptsRow {
    AttemptsRow {
        group: r.group,
        parcels: r.parcels,
        attempted: r.attempted,
        attempts: r.attempts,
        attempts_per_parcel: r.attempts_per_parcel,
        repeat_attempt_rate: r.repeat_attempt_rate,
        first_attempt_success_rate: r.first_attempt_success_rate,
        delivered: r.delivered,
        returned: r.returned,
    }
}

#[tonic::async_trait]
impl AnalyticsService for Analytics {
    async fn attempts_report(
        &self,
        request: Request<AttemptsReportRequest>,
    ) -> Result<Response<AttemptsReportResponse>, Status> {
        let caller = threshold_auth::require(&request, &[Role::Analyst, Role::Planner])?.clone();
        let mut r = request.into_inner();
        // A depot's planner sees its own depot.
        if caller.role == Role::Planner && caller.tenant != threshold_auth::ANY_TENANT {
            if r.depot_id.is_empty() {
                r.depot_id = caller.tenant.clone();
            }
            caller.check_tenant("depot", &r.depot_id)?;
        }
        // A country's analyst sees its own country.
        if let Some(own) = threshold_status::analysts_country(&caller)? {
            if r.country == 0 {
                r.country = own.to_proto() as i32;
            }
            let asked = Country::from_proto(r.country).map_err(status)?;
            caller.check_tenant("country", asked.code())?;
        }
        let by: Dimension = if r.by.is_empty() {
            Dimension::Country
        } else {
            r.by.parse().map_err(|e: String| field("by", e))?
        };
        let filter = filter(&r)?;
        let mut wanted = r.at_least_position;
        if r.up_to_head {
            let head = self.log.head().await.map_err(status)?;
            wanted = wanted.max(head.0);
        }
        threshold_projections::caught_up(&self.model, Position(wanted), CATCH_UP)
            .await
            .map_err(|at| {
                behind(format!(
                    "the projection is at position {at}, not yet {wanted}; retry"
                ))
            })?;
        let model = self.model.read().unwrap_or_else(|p| p.into_inner());
        let report = model.report(by, &filter);
        Ok(Response::new(AttemptsReportResponse {
            by: by.as_str().to_owned(),
            rows: report.rows.into_iter().map(to_row).collect(),
            total: Some(to_row(report.total)),
            position: model.position().0,
        }))
    }
}
