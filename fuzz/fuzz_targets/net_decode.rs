//! QUIC protocol messages from arbitrary bytes: errors, never panics; what decodes re-encodes.
#![no_main]

use baton_fabric::net::protocol::{NetRequest, NetResponse};
use baton_fabric::node::wire::{decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<NetRequest>("fuzz", data) {
        let bytes = encode(&request).expect("a decoded request encodes");
        assert_eq!(decode::<NetRequest>("fuzz", &bytes[4..]).ok(), Some(request));
    }
    let _ = decode::<NetResponse>("fuzz", data);
});
