//! The codec every generated client and server uses: prost's, except that
//! a message which does not decode is the caller's fault.
//!
//! tonic's prost codec answers an undecodable message with INTERNAL, which
//! tells a client the server is broken and hides what it sent wrong. Here
//! it is INVALID_ARGUMENT, "malformed request: …", so INTERNAL stays for
//! the server's own bugs. Encoding is prost's, unchanged.
//!
//! Generated clients use it too: there a reply that does not decode is
//! INVALID_ARGUMENT as well, which only a broken server can cause. Errors
//! of gRPC's framing (a compressed flag without `grpc-encoding`, a frame
//! cut short) are tonic's, before any codec, and stay INTERNAL as gRPC
//! specifies.

use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::{ProstCodec, ProstDecoder, ProstEncoder};

/// prost's codec, with decode errors answered as INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ApiCodec<T, U>(ProstCodec<T, U>);

// By hand: a derive would ask `T` and `U` to be `Default`.
impl<T, U> Default for ApiCodec<T, U> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T, U> ApiCodec<T, U> {
    /// A codec with tonic's default buffer settings, as generated code
    /// asks for it.
    pub fn new() -> Self {
        Self(ProstCodec::new())
    }
}

impl<T, U> Codec for ApiCodec<T, U>
where
    T: prost::Message + Send + 'static,
    U: prost::Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ApiDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ApiDecoder(self.0.decoder())
    }
}

/// prost's decoder, whose decode errors are INVALID_ARGUMENT.
#[derive(Debug, Clone)]
pub struct ApiDecoder<U>(ProstDecoder<U>);

impl<U: prost::Message + Default> Decoder for ApiDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // prost's decoder fails only on the bytes it was given.
        self.0.decode(buf).map_err(|s| malformed(s.message()))
    }

    fn buffer_settings(&self) -> BufferSettings {
        self.0.buffer_settings()
    }
}

/// The status of a message that does not decode, naming prost's reason
/// (a field and wire type, never data of the server's).
pub fn malformed(why: &str) -> Status {
    Status::invalid_argument(format!("malformed request: {why}"))
}
