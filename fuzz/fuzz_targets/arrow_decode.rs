//! Arrow objects from arbitrary bytes: errors, never panics.
#![no_main]

use baton_fabric::arrow::read_batches;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = read_batches("fuzz", bytes::Bytes::copy_from_slice(data));
});
