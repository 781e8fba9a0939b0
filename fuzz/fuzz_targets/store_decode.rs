//! The elastic store's protocol messages from arbitrary bytes: errors, never panics; what
//! decodes re-encodes to the same message.
#![no_main]

use baton_fabric::node::wire::{decode, encode};
use baton_store::proto::{Request, Response};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(request) = decode::<Request>("fuzz", data) {
        let bytes = encode(&request).expect("a decoded request encodes");
        assert_eq!(decode::<Request>("fuzz", &bytes[4..]).ok(), Some(request));
    }
    if let Ok(response) = decode::<Response>("fuzz", data) {
        let bytes = encode(&response).expect("a decoded response encodes");
        assert_eq!(decode::<Response>("fuzz", &bytes[4..]).ok(), Some(response));
    }
});
