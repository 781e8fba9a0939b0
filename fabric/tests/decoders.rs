//! Decoders of bytes from outside the process, fed garbage and mutations: they return errors,
//! never panic, and never return bytes that differ from what was written. (The fuzz targets in
//! `fuzz/` explore the same properties without bounds.)

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use arrow_array::{Int64Array, RecordBatch};
use arrow_schema::{DataType, Field, Schema};
use baton_fabric::arrow::{encode_batches, read_batches};
use baton_fabric::frame::{decode_records, encode_records};
use baton_fabric::node::wire::{Request, decode};
use bytes::Bytes;

/// A small deterministic generator, so failures replay.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

fn mutate(rng: &mut XorShift, original: &[u8]) -> Vec<u8> {
    let mut out = original.to_vec();
    match rng.below(4) {
        0 if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] ^= 1 << rng.below(8);
        }
        1 if !out.is_empty() => out.truncate(rng.below(out.len())),
        2 => {
            let at = rng.below(out.len() + 1);
            let n = 1 + rng.below(16);
            let extra = rng.bytes(n);
            out.splice(at..at, extra);
        }
        _ if !out.is_empty() => {
            let i = rng.below(out.len());
            out[i] = rng.next() as u8;
        }
        _ => {}
    }
    out
}

#[test]
fn mutated_record_objects_never_decode_to_other_records() {
    let records: Vec<&[u8]> = vec![b"first record", b"", b"third, a little longer than the rest"];
    let object = encode_records(records.iter().copied());
    let mut rng = XorShift(0x5eed_1234);
    for round in 0..20_000 {
        let bad = mutate(&mut rng, &object);
        if let Ok(decoded) = decode_records("mutant", Bytes::from(bad.clone())) {
            // Only a mutation in padding may leave the object decodable, and then intact.
            assert_eq!(decoded.iter().map(|b| &b[..]).collect::<Vec<_>>(), records, "round {round}: {bad:?}");
        }
    }
}

#[test]
fn mutated_arrow_objects_error_or_decode_the_original() {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..64))]).unwrap();
    let object = encode_batches(&schema, std::slice::from_ref(&batch)).unwrap();
    let mut rng = XorShift(0xa770);
    for round in 0..5_000 {
        let bad = mutate(&mut rng, &object);
        if let Ok((_, batches)) = read_batches("mutant", Bytes::from(bad)) {
            assert_eq!(batches, vec![batch.clone()], "round {round}");
        }
    }
}

#[test]
fn random_bytes_never_panic_any_decoder() {
    let mut rng = XorShift(0xdead_beef);
    for _ in 0..20_000 {
        let len = rng.below(200);
        let data = rng.bytes(len);
        let _ = decode_records("random", Bytes::from(data.clone()));
        let _ = read_batches("random", Bytes::from(data.clone()));
        let _ = decode::<Request>("random", &data);
        let _ = decode::<baton_fabric::node::wire::LocalRequest>("random", &data);
    }
}

#[test]
fn garbage_inside_valid_frames_never_panics_the_arrow_reader() {
    use baton_fabric::frame::{PayloadKind, encode_end, encode_frame};
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, true)]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(vec![Some(1), None, Some(3)]))]).unwrap();
    let object = encode_batches(&schema, std::slice::from_ref(&batch)).unwrap();
    // The IPC stream inside the frames, concatenated.
    let ipc: Vec<u8> =
        baton_fabric::frame::FrameReader::new("ok", object).flat_map(|f| f.unwrap().payload.to_vec()).collect();
    let mut rng = XorShift(0xf00d);
    for _ in 0..20_000 {
        let payload = if rng.below(2) == 0 {
            mutate(&mut rng, &ipc)
        } else {
            let n = rng.below(300);
            rng.bytes(n)
        };
        let mut framed = Vec::new();
        encode_frame(PayloadKind::ArrowIpc, &payload, &mut framed);
        encode_end(1, &mut framed);
        let _ = read_batches("garbage", Bytes::from(framed));
    }
}
