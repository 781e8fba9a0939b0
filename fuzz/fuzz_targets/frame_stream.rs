//! Frames from arbitrary bytes arriving in pieces: errors, never panics, and the same verdict as
//! reading the bytes whole. The first byte sets the piece size; the rest are the object.
#![no_main]

use baton_fabric::frame::{PayloadKind, decode_records};
use baton_fabric::frame_stream::FrameAssembler;
use bytes::Bytes;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&size, object)) = data.split_first() else { return };
    let size = usize::from(size).max(1);
    let mut frames = FrameAssembler::new("fuzz");
    let mut records = Vec::new();
    let mut failed = false;
    'pieces: for piece in object.chunks(size) {
        frames.push(Bytes::copy_from_slice(piece));
        loop {
            match frames.next_frame() {
                Ok(Some(frame)) if frame.kind == PayloadKind::End => {}
                Ok(Some(frame)) if frame.kind == PayloadKind::Bytes => records.push(frame.payload),
                // What a reader of records turns down.
                Ok(Some(_)) => {
                    failed = true;
                    break 'pieces;
                }
                Ok(None) => break,
                Err(_) => {
                    failed = true;
                    break 'pieces;
                }
            }
        }
    }
    let streamed = (!failed && frames.finish().is_ok() && frames.objects() == 1).then_some(records);
    // A single object of records reads the same whole or in pieces (several objects back to
    // back are the assembler's alone to accept).
    let whole = decode_records("fuzz", Bytes::copy_from_slice(object)).ok();
    if frames.objects() <= 1 {
        assert_eq!(streamed, whole, "pieces of {size} disagree with the whole object");
    }
});
