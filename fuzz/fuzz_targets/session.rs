//! Whole client sessions (CONNECT, then packets pipelined and split at random
//! boundaries) through the broker's real connection handler against an in-process
//! broker. See `tandem_broker_fuzz::session`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandem_broker_fuzz::session(data);
});
