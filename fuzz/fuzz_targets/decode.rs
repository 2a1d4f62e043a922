//! Arbitrary bytes through the decoder; every decoded packet must survive
//! encode -> decode unchanged. See `tandem_broker_fuzz::decode_round_trip`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandem_broker_fuzz::decode_round_trip(data);
});
