//! A message over the receiver's size limit is RESOURCE_EXHAUSTED in gRPC's
//! status codes. tonic refuses a unary request's oversized message before
//! the service sees it and answers OUT_OF_RANGE; the streaming services
//! already correct their own answers ([`threshold_api::status::oversized`]),
//! and this layer corrects the rest, so a client gets one code for one
//! cause whichever RPC it called.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{HeaderMap, HeaderValue};

/// Wraps the server's services so a refusal of an oversized request answers
/// RESOURCE_EXHAUSTED.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct OversizedLayer;

impl<S> tower::Layer<S> for OversizedLayer {
    type Service = Oversized<S>;
    fn layer(&self, inner: S) -> Oversized<S> {
        Oversized { inner }
    }
}

/// A service whose oversized-request refusals say RESOURCE_EXHAUSTED.
#[derive(Debug, Clone)]
pub(crate) struct Oversized<S> {
    inner: S,
}

impl<S, B, R> tower::Service<http::Request<B>> for Oversized<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let call = self.inner.call(request);
        Box::pin(async move {
            let mut response = call.await?;
            relabel(response.headers_mut());
            Ok(response)
        })
    }
}

/// `grpc-status: 11` (OUT_OF_RANGE) for a message over the limit becomes
/// 8 (RESOURCE_EXHAUSTED). The refusal is a trailers-only answer, so its
/// status is in the headers; any other status, and every status a service
/// sends in trailers, is left as it is.
fn relabel(headers: &mut HeaderMap) {
    let out_of_range = headers
        .get("grpc-status")
        .is_some_and(|s| s.as_bytes() == b"11");
    // The message is percent-encoded on the wire.
    let too_large = headers.get("grpc-message").is_some_and(|m| {
        let m = String::from_utf8_lossy(m.as_bytes());
        m.contains("too large") || m.contains("too%20large")
    });
    if out_of_range && too_large {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(status: &'static str, message: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("grpc-status", HeaderValue::from_static(status));
        h.insert("grpc-message", HeaderValue::from_static(message));
        h
    }

    #[test]
    fn only_an_oversized_out_of_range_becomes_resource_exhausted() {
        let mut h = headers(
            "11",
            "Error,%20decoded%20message%20length%20too%20large:%20found%20100%20bytes",
        );
        relabel(&mut h);
        assert_eq!(h["grpc-status"], "8");
        // Another OUT_OF_RANGE, and another code with the words, stay.
        let mut h = headers("11", "page%20beyond%20the%20end");
        relabel(&mut h);
        assert_eq!(h["grpc-status"], "11");
        let mut h = headers("3", "too%20large");
        relabel(&mut h);
        assert_eq!(h["grpc-status"], "3");
    }
}
