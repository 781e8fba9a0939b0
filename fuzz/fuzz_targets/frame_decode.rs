//! Frames from arbitrary bytes: errors, never panics; what checks out re-encodes the same.
#![no_main]

use baton_fabric::frame::{decode_records, encode_records};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(records) = decode_records("fuzz", bytes::Bytes::copy_from_slice(data)) {
        let again = encode_records(records.iter().map(|r| &r[..]));
        assert_eq!(&again[..], data, "a decodable object must be the encoding of its records");
    }
});
