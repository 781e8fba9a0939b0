//! Node protocol messages from arbitrary bytes: errors, never panics; what decodes re-encodes.
#![no_main]

use baton_fabric::node::wire::{LocalRequest, Response, decode, encode};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<LocalRequest>("fuzz", data) {
        let bytes = encode(&request).expect("a decoded request encodes");
        assert_eq!(decode::<LocalRequest>("fuzz", &bytes[4..]).ok(), Some(request));
    }
    let _ = decode::<Response>("fuzz", data);
});
