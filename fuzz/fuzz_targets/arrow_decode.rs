//! Arrow IPC from arbitrary bytes, wrapped in valid frames so that the fuzzer reaches the IPC
//! decoder behind the checksums: errors, never panics. (Arrow's own panics on malformed IPC are
//! caught and reported as corruption by `read_batches`; the quiet hook keeps libFuzzer from
//! treating those caught panics as crashes.)
#![no_main]

use baton_fabric::arrow::read_batches;
use baton_fabric::frame::{PayloadKind, encode_end, encode_frame};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    static QUIET: std::sync::Once = std::sync::Once::new();
    QUIET.call_once(|| std::panic::set_hook(Box::new(|_| {})));
    let mut object = Vec::with_capacity(data.len() + 64);
    encode_frame(PayloadKind::ArrowIpc, data, &mut object);
    encode_end(1, &mut object);
    let _ = read_batches("fuzz", bytes::Bytes::from(object));
});
