//! The gRPC codec of every generated client and server: prost messages, decoded
//! from one contiguous slice.
//!
//! tonic-prost's codec decodes through tonic's `DecodeBuf`, whose every varint read
//! goes through the `Buf` trait (bounds, chunk and advance per byte near a message's
//! end): about 1,600 instructions for one 60-byte `SessionRequest`, 40% of the
//! control plane's work per AddSession request. A message is always one contiguous
//! run of the receive buffer, so this codec hands prost that run as a `&[u8]`, which
//! prost reads with its slice fast path. Encoding and the errors are tonic-prost's.

use std::marker::PhantomData;

use prost::bytes::Buf;
use prost::Message;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::Status;
use tonic_prost::ProstEncoder;

/// prost messages over gRPC, decoded from a slice.
#[derive(Debug, Clone)]
pub struct SliceCodec<T, U> {
    _pd: PhantomData<(T, U)>,
}

impl<T, U> Default for SliceCodec<T, U> {
    fn default() -> Self {
        SliceCodec { _pd: PhantomData }
    }
}

impl<T, U> Codec for SliceCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = SliceDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::default()
    }

    fn decoder(&mut self) -> Self::Decoder {
        SliceDecoder { _pd: PhantomData }
    }
}

/// Decodes one message from the contiguous bytes tonic hands over.
#[derive(Debug, Clone)]
pub struct SliceDecoder<U> {
    _pd: PhantomData<U>,
}

impl<U: Message + Default> Decoder for SliceDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        if buf.chunk().len() == len {
            let item = decode_slice(buf.chunk());
            buf.advance(len);
            item.map(Some)
        } else {
            // Not one run (tonic does not do this today): prost reads it as it is.
            U::decode(buf).map(Some).map_err(status)
        }
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

/// One message from its bytes.
fn decode_slice<U: Message + Default>(bytes: &[u8]) -> Result<U, Status> {
    U::decode(bytes).map_err(status)
}

/// The status tonic-prost gives a message that does not parse.
fn status(e: prost::DecodeError) -> Status {
    Status::internal(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::v2::{ActionParameters, SessionRequest};

    fn request() -> SessionRequest {
        SessionRequest {
            session_id: 1_000_000_123,
            in_lif: 1,
            out_lif: 2,
            source_ip: 0x0a00_0001,
            source_port: 40_000,
            destination_ip: 0x0a00_0102,
            destination_port: 443,
            protocol_id: 1,
            cache_timeout: 30,
            action: Some(ActionParameters {
                action_type: 3,
                action_next_hop: 0x0a00_01fe,
                ..ActionParameters::default()
            }),
            ..SessionRequest::default()
        }
    }

    fn decode(bytes: &[u8]) -> Result<SessionRequest, Status> {
        decode_slice(bytes)
    }

    #[test]
    fn decodes_what_prost_encodes() {
        let r = request();
        assert_eq!(decode(&r.encode_to_vec()).unwrap(), r);
        // Fields in any order, repeated (the last wins), unknown ones skipped.
        let mut bytes = SessionRequest::default().encode_to_vec();
        bytes.extend([0xf8, 0x07, 0x05]); // field 127, varint 5: unknown
        bytes.extend(r.encode_to_vec());
        assert_eq!(decode(&bytes).unwrap(), r);
    }

    #[test]
    fn a_message_that_does_not_parse_is_internal_as_with_tonic_prost() {
        let mut bytes = request().encode_to_vec();
        bytes.truncate(bytes.len() - 1);
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err.code(), tonic::Code::Internal);
        let want = SessionRequest::decode(&bytes[..]).unwrap_err().to_string();
        assert_eq!(err.message(), want);
    }
}
