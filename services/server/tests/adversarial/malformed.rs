//! Requests whose bytes do not decode as the RPC's message: the server
//! must say the request is malformed (INVALID_ARGUMENT), not that it
//! failed (INTERNAL), and store nothing.

use threshold_api::v1::GrantReply;
use tonic::Code;
use tonic::codegen::http::uri::PathAndQuery;

use crate::owners::bs_day_goes_on;
use crate::world::World;

/// Not an `IssueGrantRequest`: its field 1 is a number where the request
/// has a string.
#[derive(Clone, PartialEq, prost::Message)]
struct Garbled {
    #[prost(uint64, tag = "1")]
    grant_id: u64,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_that_does_not_decode_is_invalid_argument_and_stores_nothing() {
    let w = World::build().await;
    let b = &w.b;
    let head = w.head().await;
    let mut grpc = tonic::client::Grpc::new(w.resident_of(b));
    grpc.ready().await.expect("the connection is ready");
    let refused = grpc
        .unary(
            tonic::Request::new(Garbled { grant_id: 7 }),
            PathAndQuery::from_static("/threshold.v1.AccessService/IssueGrant"),
            tonic_prost::ProstCodec::<Garbled, GrantReply>::default(),
        )
        .await
        .expect_err("does not decode");
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(w.stored_since(head).await, []);
    bs_day_goes_on(&w).await;
}
