//! The HTTP side of a delivery: one signed POST, its outcome, bounded.
//!
//! One client for every endpoint: no proxy (an environment proxy would
//! bypass the address check), no redirects, names resolved through the
//! [`Policy`] so the connection goes only to an address that passed it,
//! a timeout per request, and at most [`EXCERPT`](crate::store::EXCERPT)
//! bytes of any response read, so a slow or huge response costs a bounded
//! amount of time and memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use crate::guard::Policy;
use crate::payload::MAX_BODY;
use crate::signature::{Secret, signature_header};
use crate::store::EXCERPT;
use crate::{Error, Result};

/// Resolves names and keeps only the addresses the policy admits.
struct Guarded(Policy);

impl Resolve for Guarded {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.0;
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = match tokio::net::lookup_host((host.as_str(), 0)).await {
                Ok(found) => found.collect(),
                Err(e) => {
                    tracing::debug!(host, error = %e, "webhooks: an endpoint's name does not resolve");
                    Vec::new()
                }
            };
            let ok = policy
                .admit(&host, found)
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            Ok(Box::new(ok.into_iter()) as Addrs)
        })
    }
}

/// What one request came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status, when a response came.
    pub status: Option<u16>,
    /// `Retry-After` in seconds, when the response said so.
    pub retry_after: Option<u64>,
    /// Why no response came.
    pub error: String,
    /// Request to response, or to the failure.
    pub latency: Duration,
    /// The response body's start.
    pub excerpt: String,
}

/// Sends deliveries.
#[derive(Clone)]
pub struct Sender {
    client: reqwest::Client,
    policy: Policy,
}

impl Sender {
    /// A sender under `policy`, giving up on a request after `timeout`.
    pub fn new(policy: Policy, timeout: Duration) -> Result<Self> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(Guarded(policy)))
            .timeout(timeout)
            .connect_timeout(timeout)
            .pool_max_idle_per_host(2)
            .user_agent("Threshold-Webhooks/1")
            .build()
            .map_err(|e| Error::Invalid(format!("http client: {e}")))?;
        Ok(Self { client, policy })
    }

    /// The policy endpoints are checked against.
    pub fn policy(&self) -> Policy {
        self.policy
    }

    /// POSTs `body` to `url` as event `id`, signed with `secrets`.
    pub async fn send(&self, url: &str, id: &str, body: Vec<u8>, secrets: &[Secret]) -> Response {
        let started = Instant::now();
        let fail = |error: String| Response {
            status: None,
            retry_after: None,
            error,
            latency: started.elapsed(),
            excerpt: String::new(),
        };
        if body.len() > MAX_BODY {
            return fail(format!("payload of {} bytes over {MAX_BODY}", body.len()));
        }
        // Checked again at every send: an IP literal is never resolved, so
        // the resolver's check would not see it.
        let url = match self.policy.check_url(url) {
            Ok(u) => u,
            Err(e) => return fail(e.to_string()),
        };
        let timestamp = Utc::now().timestamp();
        let signature = signature_header(secrets, id, timestamp, &body);
        let sent = self
            .client
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return fail(describe(&e)),
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        // Read only the first bytes: a huge or endless body is cut off.
        let mut excerpt = Vec::new();
        while excerpt.len() < EXCERPT {
            match response.chunk().await {
                Ok(Some(c)) => {
                    excerpt.extend_from_slice(&c[..c.len().min(EXCERPT - excerpt.len())])
                }
                Ok(None) | Err(_) => break,
            }
        }
        Response {
            status: Some(status),
            retry_after,
            error: String::new(),
            latency: started.elapsed(),
            excerpt: String::from_utf8_lossy(&excerpt).into_owned(),
        }
    }
}

/// A transport error in a few words, its cause included (a refused address
/// says why).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timeout"
    } else if e.is_connect() {
        "connect"
    } else {
        "request"
    };
    let mut s = format!("{kind}: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s.chars().take(EXCERPT).collect()
}
