//! A request that does not decode is the caller's fault: every RPC of every
//! service answers undecodable bytes with INVALID_ARGUMENT, never INTERNAL.
//! The RPCs are read from the API's descriptor set, so a new one is tried
//! without a change here.

use bytes::{Buf as _, BufMut as _, Bytes};
use prost::Message as _;
use threshold_auth::Role;
use threshold_testkit::Sandbox;
use tonic::Code;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};

/// Bytes as they are, sent and read without protobuf.
#[derive(Default)]
struct Raw;

impl Codec for Raw {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = Raw;
    type Decoder = Raw;
    fn encoder(&mut self) -> Raw {
        Raw
    }
    fn decoder(&mut self) -> Raw {
        Raw
    }
}

impl Encoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn encode(&mut self, item: Bytes, buf: &mut EncodeBuf<'_>) -> Result<(), tonic::Status> {
        buf.put_slice(&item);
        Ok(())
    }
}

impl Decoder for Raw {
    type Item = Bytes;
    type Error = tonic::Status;
    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, tonic::Status> {
        Ok(Some(buf.copy_to_bytes(buf.remaining())))
    }
}

/// A field key of wire type 7, which no protobuf message has: no message
/// decodes from it, whatever its fields.
const UNDECODABLE: &[u8] = &[0x0f];

/// Every method of the API, as its gRPC path.
fn api_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(threshold_api::FILE_DESCRIPTOR_SET)
        .expect("the descriptor set decodes");
    let mut paths = Vec::new();
    for file in set.file {
        let package = file.package();
        for service in &file.service {
            for method in &service.method {
                paths.push(format!("/{package}.{}/{}", service.name(), method.name()));
            }
        }
    }
    paths
}

/// What the server answers `path` called as `role` with [`UNDECODABLE`]
/// (sent as one message, as a unary call's request or a stream's first).
async fn answer(sandbox: &Sandbox, role: Role, path: &str) -> Code {
    let mut grpc = tonic::client::Grpc::new(sandbox.as_role(role));
    grpc.ready().await.expect("the connection is ready");
    let request = tonic::Request::new(tokio_stream::iter([Bytes::from_static(UNDECODABLE)]));
    let path = path.parse().expect("a gRPC path");
    match grpc.streaming(request, path, Raw).await {
        Err(status) => status.code(),
        Ok(reply) => {
            let mut replies = reply.into_inner();
            loop {
                match replies.message().await {
                    Ok(Some(_)) => continue,
                    Ok(None) => return Code::Ok,
                    Err(status) => return status.code(),
                }
            }
        }
    }
}

#[tokio::test]
async fn every_rpc_answers_an_undecodable_request_with_invalid_argument() {
    let sandbox = Sandbox::start().await;
    let methods = api_methods();
    assert!(
        methods.len() >= 13,
        "the descriptor set names too few methods: {methods:?}"
    );
    for path in &methods {
        // A streaming RPC checks its caller's role before it reads a
        // message, so a role it refuses is told PERMISSION_DENIED; some
        // role it serves must be told the request was malformed.
        let mut answers = Vec::new();
        for role in Role::ALL {
            answers.push((role, answer(&sandbox, role, path).await));
        }
        for (role, code) in &answers {
            assert!(
                matches!(code, Code::InvalidArgument | Code::PermissionDenied),
                "{path} as {role}: {code:?}, want INVALID_ARGUMENT (or PERMISSION_DENIED for a role it refuses); all: {answers:?}"
            );
        }
        assert!(
            answers.iter().any(|(_, c)| *c == Code::InvalidArgument),
            "{path}: no role is told INVALID_ARGUMENT: {answers:?}"
        );
    }
}

#[tokio::test]
async fn a_malformed_request_names_what_did_not_decode() {
    let sandbox = Sandbox::start().await;
    let mut grpc = tonic::client::Grpc::new(sandbox.planner());
    grpc.ready().await.expect("ready");
    let status = grpc
        .unary(
            tonic::Request::new(Bytes::from_static(UNDECODABLE)),
            "/threshold.v1.PlanningService/PlanDay"
                .parse()
                .expect("path"),
            Raw,
        )
        .await
        .expect_err("an undecodable request is refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with("malformed request: "),
        "{status:?}"
    );
}
