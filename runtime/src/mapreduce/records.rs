//! The sort benchmark's record format: 100-byte records whose first 10 bytes are the key.
//!
//! [`generate`] writes the records of the sort benchmark's own generator, gensort (version 1.5,
//! binary records): record `n` comes from the `n+1`-th value of its published 128-bit linear
//! congruential generator (`x' = a·x + c mod 2^128`, from 0). The key is the value's high 10
//! bytes; then `00 11`, the record number as 32 hex digits, `88 99 AA BB`, 48 bytes of filler
//! (each of the value's low 12 hex digits four times), `CC DD EE FF`. Seed `s` generates the
//! records from number `s · 2^64` on, so seed 0 is `gensort`'s own file, and `--begin N` its
//! `-bN`.

use std::path::Path;

use crate::error::{Error, Result};

/// Bytes per record.
pub const RECORD: usize = 100;
/// Bytes of a record's key.
pub const KEY: usize = 10;

/// Records [`sort_to`] gathers before checksumming and writing them.
const GATHER: usize = 512;

/// gensort's generator: `x' = A·x + C (mod 2^128)`.
const A: u128 = 0x2360_ed05_1fc6_5da4_4385_df64_9fcc_f645;
const C: u128 = 0x4a69_6d47_7261_7952_4950_2020_2020_2001;

/// The generator's state after `n` steps from 0, by squaring the affine map (what gensort's
/// `skip_ahead_rand` computes), so any range of records can be made without the ones before it.
fn skip_ahead(mut n: u128) -> u128 {
    // `(mul, add)` is the map of the steps taken so far; `(a, c)` that of the next 2^k steps.
    let (mut add, mut a, mut c) = (0u128, A, C);
    while n > 0 {
        if n & 1 == 1 {
            add = a.wrapping_mul(add).wrapping_add(c);
        }
        c = a.wrapping_mul(c).wrapping_add(c);
        a = a.wrapping_mul(a);
        n >>= 1;
    }
    add
}

/// The number of record `i` of `seed`'s stream.
fn record_number(seed: u64, i: u64) -> u128 {
    (u128::from(seed) << 64) + u128::from(i)
}

/// Appends records `first .. first + count` of `seed`'s stream to `out`.
pub fn generate(seed: u64, first: u64, count: u64, out: &mut Vec<u8>) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.reserve(count as usize * RECORD);
    let mut x = skip_ahead(record_number(seed, first));
    for i in first..first + count {
        x = A.wrapping_mul(x).wrapping_add(C);
        let mut r = [0u8; RECORD];
        r[..KEY].copy_from_slice(&x.to_be_bytes()[..KEY]);
        r[10..12].copy_from_slice(&[0x00, 0x11]);
        let n = record_number(seed, i);
        for (j, byte) in r[12..44].iter_mut().enumerate() {
            *byte = HEX[((n >> (4 * (31 - j))) & 0xf) as usize];
        }
        r[44..48].copy_from_slice(&[0x88, 0x99, 0xAA, 0xBB]);
        for (j, byte) in r[48..96].iter_mut().enumerate() {
            *byte = HEX[((x >> (44 - 4 * (j / 4))) & 0xf) as usize];
        }
        r[96..].copy_from_slice(&[0xCC, 0xDD, 0xEE, 0xFF]);
        out.extend_from_slice(&r);
    }
}

/// Writes `records` records for `seed` to the file `path`, generating on every core.
pub fn write_file(path: &Path, seed: u64, records: u64) -> Result<()> {
    write_file_from(path, seed, 0, records)
}

/// Writes records `begin .. begin + records` of `seed`'s stream to the file `path`.
pub fn write_file_from(path: &Path, seed: u64, begin: u64, records: u64) -> Result<()> {
    use std::os::unix::fs::FileExt;
    const CHUNK: u64 = 100_000;
    let file = std::fs::File::create(path).map_err(|e| Error::io("create", path, e))?;
    file.set_len(records * RECORD as u64).map_err(|e| Error::io("size", path, e))?;
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let chunks = records.div_ceil(CHUNK);
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let file = &file;
                scope.spawn(move || -> Result<()> {
                    let mut buf = Vec::new();
                    for c in (t..chunks).step_by(threads as usize) {
                        let first = c * CHUNK;
                        buf.clear();
                        generate(seed, begin + first, CHUNK.min(records - first), &mut buf);
                        file.write_all_at(&buf, first * RECORD as u64).map_err(|e| Error::io("write", path, e))?;
                    }
                    Ok(())
                })
            })
            .collect();
        handles.into_iter().try_for_each(|h| {
            h.join()
                .unwrap_or_else(|_| Err(Error::io("write", path, std::io::Error::other("a generator thread panicked"))))
        })
    })
}

/// An order-independent summary of a set of records: their count and the sum of their
/// CRC32Cs (valsort's checksum, with CRC32C) — equal for any permutation of the same records.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Checksum {
    /// Records.
    pub records: u64,
    /// Sum of each record's CRC32C.
    pub sum: u64,
}

impl Checksum {
    /// Adds every record of `bytes` (a whole number of records).
    pub fn add(&mut self, bytes: &[u8]) {
        self.records += (bytes.len() / RECORD) as u64;
        self.sum = self.sum.wrapping_add(super::crc::sum_of_crcs(bytes));
    }

    /// Adds another summary.
    pub fn merge(&mut self, other: Checksum) {
        self.records += other.records;
        self.sum = self.sum.wrapping_add(other.sum);
    }
}

/// Sorts `records` (a whole number of 100-byte records) by key, ties broken by the rest of the
/// record so that the order is total and the same in every process, and returns them sorted.
pub fn sort(records: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(records.len());
    // Writing to a Vec cannot fail.
    let _ = sort_to(&[records], &mut out);
    out
}

/// Sorts the records of all `runs` together (each a whole number of records, wherever it
/// lies: a reducer's inputs are sorted where they arrived, not gathered first) in the order of
/// [`sort`], writing them to `out` as they are gathered (a file's disk writes overlap the
/// gathering), and returns the checksum of what it wrote.
pub fn sort_to(runs: &[&[u8]], out: &mut impl std::io::Write) -> std::io::Result<Checksum> {
    let total: usize = runs.iter().map(|r| r.len() / RECORD).sum();
    let mut order: Vec<Entry> = Vec::with_capacity(total);
    for (run, records) in runs.iter().enumerate() {
        order.extend(records.chunks_exact(RECORD).enumerate().map(|(i, r)| entry(r, run, i)));
    }
    order.sort_unstable_by(|a, b| compare(runs, a, b));
    // Gathered a few hundred records at a time into a buffer that stays in cache, where they
    // are checksummed and written together.
    let mut checksum = Checksum::default();
    let mut gathered = Vec::with_capacity(GATHER * RECORD);
    for group in order.chunks(GATHER) {
        gather(runs, group, &mut gathered);
        checksum.add(&gathered);
        out.write_all(&gathered)?;
    }
    Ok(checksum)
}

/// [`sort_to`] on every core (Rayon's pool): the index is built and sorted in parallel, and
/// the records are gathered and checksummed in parallel, a window at a time, then written in
/// order. The same bytes as [`sort_to`]; the single-process baseline's sort.
pub fn par_sort_to(runs: &[&[u8]], out: &mut impl std::io::Write) -> std::io::Result<Checksum> {
    use rayon::prelude::*;
    let total: usize = runs.iter().map(|r| r.len() / RECORD).sum();
    let mut order: Vec<Entry> = vec![(0, 0, 0); total];
    let mut rest = &mut order[..];
    for (run, records) in runs.iter().enumerate() {
        let (mine, after) = rest.split_at_mut(records.len() / RECORD);
        rest = after;
        mine.par_iter_mut()
            .zip(records.par_chunks_exact(RECORD))
            .enumerate()
            .for_each(|(i, (slot, r))| *slot = entry(r, run, i));
    }
    order.par_sort_unstable_by(|a, b| compare(runs, a, b));
    let threads = rayon::current_num_threads().max(1);
    let mut checksum = Checksum::default();
    for window in order.chunks(PAR_GATHER * threads) {
        let pieces: Vec<(Vec<u8>, Checksum)> = window
            .par_chunks(PAR_GATHER)
            .map(|group| {
                let mut gathered = Vec::with_capacity(group.len() * RECORD);
                gather(runs, group, &mut gathered);
                let mut sum = Checksum::default();
                sum.add(&gathered);
                (gathered, sum)
            })
            .collect();
        for (bytes, sum) in pieces {
            checksum.merge(sum);
            out.write_all(&bytes)?;
        }
    }
    Ok(checksum)
}

/// Records each of [`par_sort_to`]'s threads gathers at a time (800 KB).
const PAR_GATHER: usize = 8192;

/// A record in the sort's index: its key's first 8 bytes (most comparisons end there), its
/// run and its number in the run.
type Entry = (u64, u32, u32);

fn entry(record: &[u8], run: usize, i: usize) -> Entry {
    let r = record;
    (u64::from_be_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]), run as u32, i as u32)
}

fn record<'a>(runs: &[&'a [u8]], (_, run, i): &Entry) -> &'a [u8] {
    let at = *i as usize * RECORD;
    &runs[*run as usize][at..at + RECORD]
}

/// The sort's order: the key, ties broken by the rest of the record.
fn compare(runs: &[&[u8]], a: &Entry, b: &Entry) -> std::cmp::Ordering {
    a.0.cmp(&b.0).then_with(|| record(runs, a)[8..].cmp(&record(runs, b)[8..]))
}

fn gather(runs: &[&[u8]], group: &[Entry], into: &mut Vec<u8>) {
    into.clear();
    for e in group {
        into.extend_from_slice(record(runs, e));
    }
}

/// Merges sorted runs (each a reader of records in [`sort`]'s order) into `out`, in that order,
/// holding one record of each run at a time; returns the checksum of what it wrote. A run that
/// ends inside a record is an error.
pub fn merge_to(runs: Vec<impl std::io::Read>, out: &mut impl std::io::Write) -> std::io::Result<Checksum> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut runs = runs;
    // A record's order is its bytes' order: the key, then the rest, as `sort` breaks ties.
    let mut heap = BinaryHeap::with_capacity(runs.len());
    for (i, run) in runs.iter_mut().enumerate() {
        if let Some(record) = next_record(run)? {
            heap.push(Reverse((record, i)));
        }
    }
    let mut checksum = Checksum::default();
    let mut gathered = Vec::with_capacity(GATHER * RECORD);
    while let Some(Reverse((record, i))) = heap.pop() {
        gathered.extend_from_slice(&record);
        if gathered.len() == GATHER * RECORD {
            checksum.add(&gathered);
            out.write_all(&gathered)?;
            gathered.clear();
        }
        if let Some(record) = next_record(&mut runs[i])? {
            heap.push(Reverse((record, i)));
        }
    }
    checksum.add(&gathered);
    out.write_all(&gathered)?;
    Ok(checksum)
}

/// The next record of a run, `None` at its end.
fn next_record(run: &mut impl std::io::Read) -> std::io::Result<Option<[u8; RECORD]>> {
    let mut record = [0u8; RECORD];
    let mut filled = 0;
    while filled < RECORD {
        match run.read(&mut record[filled..])? {
            0 if filled == 0 => return Ok(None),
            0 => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "a sorted run ends inside a record",
                ));
            }
            n => filled += n,
        }
    }
    Ok(Some(record))
}

/// Whether `records` are in key order (ties by the rest of the record).
pub fn is_sorted(records: &[u8]) -> bool {
    let mut prev: Option<&[u8]> = None;
    for r in records.chunks_exact(RECORD) {
        if prev.is_some_and(|p| p > r) {
            return false;
        }
        prev = Some(r);
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_are_deterministic_and_well_formed() {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        generate(7, 10, 100, &mut a);
        generate(7, 0, 110, &mut b);
        assert_eq!(a[..], b[10 * RECORD..], "a range of records is the same wherever it is generated");
        let r = &a[..RECORD];
        assert_eq!(&r[10..12], &[0x00, 0x11]);
        assert_eq!(&r[12..44], b"0000000000000007000000000000000A", "seed 7 is the stream from record 7 * 2^64");
        assert_eq!(&r[96..], &[0xCC, 0xDD, 0xEE, 0xFF]);
        let mut c = Vec::new();
        generate(8, 10, 100, &mut c);
        assert_ne!(a, c, "another seed, other keys");
    }

    #[test]
    fn records_follow_gensorts_generator_step_by_step() {
        // Record n is the (n+1)-th value of the generator from 0; skipping ahead agrees with
        // stepping, and the filler repeats the value's low hex digits.
        let mut x = 0u128;
        let mut recs = Vec::new();
        generate(0, 0, 300, &mut recs);
        for (n, r) in recs.chunks_exact(RECORD).enumerate() {
            x = A.wrapping_mul(x).wrapping_add(C);
            assert_eq!(skip_ahead(n as u128 + 1), x, "skip ahead to {}", n + 1);
            assert_eq!(&r[..KEY], &x.to_be_bytes()[..KEY], "key of record {n}");
            let low = format!("{:012X}", x & 0xffff_ffff_ffff);
            let filler: String = low.chars().flat_map(|c| std::iter::repeat_n(c, 4)).collect();
            assert_eq!(&r[48..96], filler.as_bytes(), "filler of record {n}");
            assert_eq!(&r[12..44], format!("{n:032X}").as_bytes());
        }
        // Seed s is the stream from record s·2^64: the record number says so.
        let mut seeded = Vec::new();
        generate(3, 5, 1, &mut seeded);
        assert_eq!(&seeded[12..44], b"00000000000000030000000000000005");
        assert_eq!(&seeded[..KEY], &skip_ahead((3u128 << 64) + 6).to_be_bytes()[..KEY]);
    }

    #[test]
    fn sorting_orders_by_key_and_keeps_every_record() {
        let mut recs = Vec::new();
        generate(1, 0, 5000, &mut recs);
        // Duplicate keys must sort deterministically too.
        let dup = recs[..RECORD].to_vec();
        let mut twin = dup.clone();
        twin[50] ^= 1;
        recs.extend_from_slice(&twin);
        let sorted = sort(&recs);
        assert!(is_sorted(&sorted));
        assert!(!is_sorted(&recs));
        let (mut x, mut y) = (Checksum::default(), Checksum::default());
        x.add(&recs);
        y.add(&sorted);
        assert_eq!(x, y);
        assert_eq!(x.records, 5001);
    }

    #[test]
    fn merging_sorted_runs_matches_sorting_them_together() {
        let mut all = Vec::new();
        generate(3, 0, 5000, &mut all);
        // Duplicated records too: ties between runs keep every copy.
        all.extend_from_within(..RECORD * 10);
        let runs: Vec<Vec<u8>> = all.chunks(RECORD * 700).map(sort).collect();
        let mut merged = Vec::new();
        let checksum = merge_to(runs.iter().map(|r| r.as_slice()).collect(), &mut merged).unwrap();
        assert_eq!(merged, sort(&all));
        let mut expected = Checksum::default();
        expected.add(&all);
        assert_eq!(checksum, expected);
        let torn = &runs[0][..RECORD + 7];
        assert!(merge_to(vec![torn], &mut Vec::new()).is_err());
    }

    #[test]
    fn sorting_runs_in_place_matches_sorting_them_gathered() {
        let mut recs = Vec::new();
        generate(2, 0, 3000, &mut recs);
        let runs = [&recs[..700 * RECORD], &recs[700 * RECORD..700 * RECORD], &recs[700 * RECORD..]];
        let mut out = b"kept".to_vec();
        sort_to(&runs, &mut out).unwrap();
        assert_eq!(&out[..4], b"kept", "appends after what is there");
        assert_eq!(&out[4..], &sort(&recs)[..]);
    }

    #[test]
    fn the_parallel_sort_writes_the_same_bytes_and_checksum() {
        let mut recs = Vec::new();
        generate(5, 0, 40_000, &mut recs);
        // Duplicates across runs, and an empty run.
        recs.extend_from_within(..RECORD * 50);
        let runs = [&recs[..9000 * RECORD], &recs[9000 * RECORD..9000 * RECORD], &recs[9000 * RECORD..]];
        let (mut one, mut all) = (Vec::new(), Vec::new());
        let single = sort_to(&runs, &mut one).unwrap();
        let parallel = par_sort_to(&runs, &mut all).unwrap();
        assert_eq!(all, one);
        assert_eq!(parallel, single);
        assert_eq!(parallel.records, 40_050);
    }
}
