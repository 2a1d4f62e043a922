//! Messages with fields the contract does not define, as a newer broker would send them:
//! a prepared encoding sent through the ordinary prost codec by [`Encoded`].

use bytes::{BufMut, Bytes, BytesMut};
use prost::Message;
use prost::encoding::{WireType, encode_key, encode_varint};

/// A field number no message of `plugin.proto` uses (fields are added from low numbers
/// up; this one is far beyond any of them).
pub(super) const UNKNOWN_FIELD: u32 = 4242;

/// A message already encoded: sent as its bytes. Only ever encoded (the check never
/// decodes one), so decoding skips everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct Encoded(pub(super) Bytes);

impl Encoded {
    /// `message` as the generated code encodes it.
    pub(super) fn plain(message: &impl Message) -> Self {
        Self(message.encode_to_vec().into())
    }

    /// `message` followed by two fields it does not define: a string and a varint.
    pub(super) fn with_unknown_fields(message: &impl Message) -> Self {
        let mut buf = BytesMut::from(&message.encode_to_vec()[..]);
        append_unknown_fields(&mut buf);
        Self(buf.freeze())
    }
}

/// Appends field [`UNKNOWN_FIELD`] (a string) and the next one (a varint) to an encoding.
pub(super) fn append_unknown_fields(buf: &mut impl BufMut) {
    let text = b"a field from a newer broker";
    encode_key(UNKNOWN_FIELD, WireType::LengthDelimited, buf);
    encode_varint(text.len() as u64, buf);
    buf.put_slice(text);
    encode_key(UNKNOWN_FIELD + 1, WireType::Varint, buf);
    encode_varint(7, buf);
}

impl Message for Encoded {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        buf.put_slice(&self.0);
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0 = Bytes::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tandem_proto::v1 as pb;

    #[test]
    fn the_generated_code_reads_past_the_unknown_fields() {
        let request = pb::TopicFilterRequest {
            topic: "a/b".into(),
            action: pb::Action::Publish as i32,
            ..Default::default()
        };
        let sent = Encoded::with_unknown_fields(&request);
        assert!(sent.0.len() > request.encoded_len());
        assert_eq!(pb::TopicFilterRequest::decode(sent.0).unwrap(), request);
        assert_eq!(
            Encoded::plain(&request).encode_to_vec(),
            request.encode_to_vec()
        );
    }
}
