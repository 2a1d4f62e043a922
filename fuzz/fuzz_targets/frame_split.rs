//! The same stream fed whole and in two chunks must decode to the same packets.
//! See `tandem_broker_fuzz::frame_split`.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    tandem_broker_fuzz::frame_split(data);
});
