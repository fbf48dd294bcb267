//! A partner's receiver, for the tests: a real HTTP server on 127.0.0.1
//! that verifies every delivery with the `standardwebhooks` crate (not
//! with Threshold's signing code), deduplicates by `webhook-id`, and fails
//! on purpose as its test tells it to.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::{Request, Response, StatusCode};

/// What the receiver does with a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    /// Accept (200), or acknowledge a duplicate (200).
    None,
    /// Answer this status without accepting.
    Status(u16),
    /// Accept, but answer only after the sender has given up.
    Timeout,
    /// Close the connection without answering, without accepting.
    Reset,
    /// Redirect to `Location` (another receiver).
    Redirect,
}

/// Decides the fault for the `n`th request (from 1) carrying event `id`.
pub(crate) type Faults = Arc<dyn Fn(&str, u32) -> Fault + Send + Sync>;

/// One accepted delivery.
#[derive(Debug, Clone)]
pub(crate) struct Accepted {
    pub(crate) id: String,
    pub(crate) body: serde_json::Value,
}

#[derive(Default)]
pub(crate) struct Seen {
    /// Every request, by `webhook-id`, in arrival order.
    pub(crate) requests: Vec<String>,
    /// Requests by what was answered: "200", "500", "timeout", "reset", ...
    pub(crate) answered: HashMap<String, usize>,
    /// Accepted deliveries, one per id, in the order first accepted.
    pub(crate) accepted: Vec<Accepted>,
    ids: HashSet<String>,
    /// Requests whose signature did not verify.
    pub(crate) unverified: usize,
    /// `webhook-signature` values seen, last first.
    pub(crate) signatures: Vec<String>,
    /// The last request's headers and body.
    pub(crate) last: Option<(http::HeaderMap, Bytes)>,
}

pub(crate) struct Receiver {
    pub(crate) addr: SocketAddr,
    pub(crate) seen: Arc<Mutex<Seen>>,
    /// The secrets it verifies with (any one verifying suffices).
    pub(crate) secrets: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub(crate) fn url(&self) -> String {
        format!("http://{}/hooks", self.addr)
    }

    pub(crate) fn seen(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().expect("seen")
    }

    pub(crate) fn accepted_ids(&self) -> Vec<String> {
        self.seen().accepted.iter().map(|a| a.id.clone()).collect()
    }

    /// Starts a receiver on 127.0.0.1:0. `hold` is how long a timeout
    /// fault waits before answering; `location` where redirects point.
    pub(crate) async fn start(faults: Faults, hold: Duration, location: Option<String>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen: Arc<Mutex<Seen>> = Arc::default();
        let secrets: Arc<Mutex<Vec<String>>> = Arc::default();
        let (s2, k2) = (Arc::clone(&seen), Arc::clone(&secrets));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (seen, secrets, faults, location) = (
                    Arc::clone(&s2),
                    Arc::clone(&k2),
                    Arc::clone(&faults),
                    location.clone(),
                );
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        handle(
                            req,
                            Arc::clone(&seen),
                            Arc::clone(&secrets),
                            Arc::clone(&faults),
                            hold,
                            location.clone(),
                        )
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            seen,
            secrets,
            task,
        }
    }
}

#[derive(Debug)]
struct Reset;

impl std::fmt::Display for Reset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("reset on purpose")
    }
}

impl std::error::Error for Reset {}

async fn handle(
    req: Request<hyper::body::Incoming>,
    seen: Arc<Mutex<Seen>>,
    secrets: Arc<Mutex<Vec<String>>>,
    faults: Faults,
    hold: Duration,
    location: Option<String>,
) -> Result<Response<Full<Bytes>>, Reset> {
    let (parts, body) = req.into_parts();
    let reply = |code: u16| {
        Ok(Response::builder()
            .status(StatusCode::from_u16(code).expect("status"))
            .body(Full::new(Bytes::from(format!("answered {code}"))))
            .expect("response"))
    };
    let Ok(body) = Limited::new(body, 1 << 20).collect().await else {
        return reply(413);
    };
    let body = body.to_bytes();
    let id = parts
        .headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    // The secret comes back from registering the endpoint, and delivery may
    // start before the test has handed it over: wait for it, as a receiver
    // is configured before it serves.
    let configured = Instant::now();
    while secrets.lock().expect("secrets").is_empty()
        && configured.elapsed() < Duration::from_secs(5)
    {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let verified = secrets.lock().expect("secrets").iter().any(|s| {
        standardwebhooks::Webhook::new(s)
            .and_then(|w| w.verify(&body, &parts.headers))
            .is_ok()
    });
    let n = {
        let mut seen = seen.lock().expect("seen");
        if let Some(sig) = parts
            .headers
            .get("webhook-signature")
            .and_then(|v| v.to_str().ok())
        {
            seen.signatures.insert(0, sig.to_owned());
        }
        seen.requests.push(id.clone());
        seen.last = Some((parts.headers.clone(), body.clone()));
        if !verified {
            seen.unverified += 1;
            *seen.answered.entry("401".into()).or_default() += 1;
            return reply(401);
        }
        u32::try_from(seen.requests.iter().filter(|r| **r == id).count()).unwrap_or(u32::MAX)
    };
    let fault = faults(&id, n);
    let count = |what: &str| {
        *seen
            .lock()
            .expect("seen")
            .answered
            .entry(what.to_owned())
            .or_default() += 1;
    };
    let accept = || {
        let mut s = seen.lock().expect("seen");
        if s.ids.insert(id.clone()) {
            let body = serde_json::from_slice(&body).expect("json body");
            s.accepted.push(Accepted {
                id: id.clone(),
                body,
            });
        }
    };
    match fault {
        Fault::None => {
            accept();
            count("200");
            reply(200)
        }
        Fault::Status(code) => {
            count(&code.to_string());
            let mut r = reply(code)?;
            if code == 429 || code == 503 {
                r.headers_mut()
                    .insert("retry-after", http::HeaderValue::from_static("1"));
            }
            Ok(r)
        }
        Fault::Timeout => {
            // Processed, but the answer comes too late: the retry is a
            // duplicate the receiver must recognise.
            accept();
            count("timeout");
            tokio::time::sleep(hold).await;
            reply(200)
        }
        Fault::Reset => {
            count("reset");
            Err(Reset)
        }
        Fault::Redirect => {
            count("302");
            let mut r = reply(302)?;
            if let Some(l) = location {
                r.headers_mut().insert(
                    "location",
                    http::HeaderValue::from_str(&l).expect("location"),
                );
            }
            Ok(r)
        }
    }
}
