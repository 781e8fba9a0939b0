//! CRC32C of 100-byte records, for [`super::records::Checksum`].
//!
//! The `crc32c` crate is fast over long buffers but slow over short ones at odd addresses: it
//! feeds the unaligned head and tail a byte at a time, and one record's CRC is a chain of
//! dependent instructions. A sort checksums every record twice (as mappers read it and as
//! reducers write it), so that cost was a quarter of a sort's CPU. Here a record is 12
//! unaligned 8-byte words and one 4-byte word, and four records are summed at once so their
//! chains overlap. The values are CRC32C's (the same as the crate's).

use super::records::RECORD;

/// The sum of the CRC32Cs of the whole records in `records` (a tail shorter than a record is
/// ignored).
pub fn sum_of_crcs(records: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("sse4.2") {
        // SAFETY: the CPU has SSE4.2, checked just above.
        return unsafe { sse42::sum_of_crcs(records) };
    }
    records.chunks_exact(RECORD).fold(0u64, |sum, r| sum.wrapping_add(u64::from(crc32c::crc32c(r))))
}

#[cfg(target_arch = "x86_64")]
mod sse42 {
    use std::arch::x86_64::{_mm_crc32_u32, _mm_crc32_u64};

    use super::RECORD;

    /// Records per group whose CRCs are computed together.
    const LANES: usize = 4;
    /// 8-byte words per record, before its last 4 bytes.
    const WORDS: usize = RECORD / 8;

    fn word(bytes: &[u8; RECORD], i: usize) -> u64 {
        let mut w = [0u8; 8];
        w.copy_from_slice(&bytes[8 * i..8 * i + 8]);
        u64::from_le_bytes(w)
    }

    fn tail(bytes: &[u8; RECORD]) -> u32 {
        let mut w = [0u8; 4];
        w.copy_from_slice(&bytes[8 * WORDS..]);
        u32::from_le_bytes(w)
    }

    #[target_feature(enable = "sse4.2")]
    pub(super) fn sum_of_crcs(records: &[u8]) -> u64 {
        let mut sum = 0u64;
        let mut groups = records.chunks_exact(RECORD * LANES);
        for group in &mut groups {
            let lane = |l: usize| -> &[u8; RECORD] {
                group[l * RECORD..(l + 1) * RECORD].try_into().expect("a group holds LANES records")
            };
            let recs = [lane(0), lane(1), lane(2), lane(3)];
            let mut crcs = [u64::from(u32::MAX); LANES];
            for i in 0..WORDS {
                for (crc, r) in crcs.iter_mut().zip(recs) {
                    *crc = _mm_crc32_u64(*crc, word(r, i));
                }
            }
            for (crc, r) in crcs.iter().zip(recs) {
                sum = sum.wrapping_add(u64::from(!_mm_crc32_u32(*crc as u32, tail(r))));
            }
        }
        for r in groups.remainder().chunks_exact(RECORD) {
            let r: &[u8; RECORD] = r.try_into().expect("chunks_exact gives whole records");
            let mut crc = u64::from(u32::MAX);
            for i in 0..WORDS {
                crc = _mm_crc32_u64(crc, word(r, i));
            }
            sum = sum.wrapping_add(u64::from(!_mm_crc32_u32(crc as u32, tail(r))));
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_match_the_crate_at_every_alignment_and_count() {
        let bytes: Vec<u8> = (0..RECORD * 11 + 64).map(|i| (i as u32).wrapping_mul(2_654_435_761) as u8).collect();
        for offset in 0..8 {
            for records in 0..=11 {
                let slice = &bytes[offset..offset + records * RECORD + 37];
                let want: u64 = slice.chunks_exact(RECORD).map(|r| u64::from(crc32c::crc32c(r))).sum();
                assert_eq!(sum_of_crcs(slice), want, "offset {offset}, {records} records");
            }
        }
    }
}
