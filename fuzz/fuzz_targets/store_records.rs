//! Arbitrary bytes through the store's record decoders (`tandem_broker::storage::record`),
//! which read what a file on disk says: a damaged or hostile store must be refused, never
//! panic. `data[0]` picks the record kind, the rest is the record. Checked: nothing
//! panics; what decodes encodes again and decodes again to the same record (byte for
//! byte for the kinds without a clock in them: sessions and inflight states).
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_broker::storage::record::{
    decode_delivery, decode_retained, decode_sent, decode_session, decode_will, encode_delivery,
    encode_retained, encode_sent, encode_session, encode_will,
};

fuzz_target!(|data: &[u8]| {
    let Some((&kind, bytes)) = data.split_first() else {
        return;
    };
    match kind % 5 {
        0 => {
            if let Ok(r) = decode_session(bytes) {
                let again = encode_session(&r);
                assert_eq!(decode_session(&again).as_ref(), Ok(&r));
                assert_eq!(again, bytes, "a session record has one encoding");
            }
        }
        1 => {
            if let Ok(d) = decode_delivery(bytes) {
                let back = decode_delivery(&encode_delivery(&d)).expect("re-encoded delivery");
                assert_eq!((back.qos, back.retain), (d.qos, d.retain));
                assert_eq!(back.subscription_ids, d.subscription_ids);
                assert_eq!(back.message.topic, d.message.topic);
                assert_eq!(back.message.payload, d.message.payload);
                assert_eq!(back.message.properties, d.message.properties);
            }
        }
        2 => {
            if let Ok(m) = decode_retained(bytes) {
                let back = decode_retained(&encode_retained(&m)).expect("re-encoded retained");
                assert_eq!((back.topic, back.payload), (m.topic, m.payload));
            }
        }
        3 => {
            if let Ok(s) = decode_sent(bytes) {
                assert_eq!(&encode_sent(s)[..], bytes);
            }
        }
        _ => {
            if let Ok(w) = decode_will(bytes) {
                let back = decode_will(&encode_will(&w)).expect("re-encoded will");
                assert_eq!(back.attributes, w.attributes);
                assert_eq!(back.will.payload, w.will.payload);
            }
        }
    }
});
