//! Frames of objects that arrive in pieces: a large object read in ranges, so that a reader holds
//! a piece and a frame at a time instead of the whole object.
//!
//! [`FrameAssembler`] takes the bytes in order, in pieces of any size, and yields each frame once
//! it is whole, checked as [`FrameReader`](crate::frame::FrameReader) checks it; objects may follow
//! each other back to back (a writer that spilled leaves several). A frame that lies within one
//! piece is a zero-copy slice of it; one that straddles pieces is copied once.
//!
//! ```
//! use baton_fabric::frame::{PayloadKind, encode_records};
//! use baton_fabric::frame_stream::FrameAssembler;
//!
//! let object = encode_records([&b"one"[..], b"two"]);
//! let mut frames = FrameAssembler::new("example");
//! let mut records = Vec::new();
//! for piece in object.chunks(5) {
//!     frames.push(bytes::Bytes::copy_from_slice(piece));
//!     while let Some(frame) = frames.next_frame().unwrap() {
//!         if frame.kind == PayloadKind::Bytes {
//!             records.push(frame.payload);
//!         }
//!     }
//! }
//! frames.finish().unwrap();
//! assert_eq!(records, [&b"one"[..], b"two"]);
//! ```

use std::collections::VecDeque;

use bytes::Bytes;

use crate::error::{Corruption, Error, Result};
use crate::frame::{Frame, HEADER_LEN, Header, PayloadKind};

/// Cuts checked frames out of bytes pushed in pieces. `End` frames are yielded too (their count
/// checked), so that a caller knows where each object ends. After an error it yields nothing.
#[derive(Debug)]
pub struct FrameAssembler {
    what: String,
    pieces: VecDeque<Bytes>,
    buffered: usize,
    /// Offset of the first buffered byte in the whole stream (for error messages).
    offset: u64,
    /// The header of the frame being waited for, once read.
    header: Option<Header>,
    /// Frames of the current object so far.
    frames: u64,
    /// Objects ended so far.
    objects: u64,
    failed: bool,
}

impl FrameAssembler {
    /// An assembler for the object(s) named `what` in errors.
    pub fn new(what: impl std::fmt::Display) -> Self {
        Self {
            what: what.to_string(),
            pieces: VecDeque::new(),
            buffered: 0,
            offset: 0,
            header: None,
            frames: 0,
            objects: 0,
            failed: false,
        }
    }

    /// Adds the next piece of bytes.
    pub fn push(&mut self, piece: Bytes) {
        if !piece.is_empty() {
            self.buffered += piece.len();
            self.pieces.push_back(piece);
        }
    }

    /// Objects whose `End` frame has been yielded.
    pub fn objects(&self) -> u64 {
        self.objects
    }

    fn corrupt(&mut self, corruption: Corruption) -> Error {
        self.failed = true;
        self.pieces.clear();
        self.buffered = 0;
        Error::corrupt(&self.what, self.offset, corruption)
    }

    /// The next whole frame, or `None` until more bytes are pushed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>> {
        if self.failed {
            return Err(Error::corrupt(&self.what, self.offset, Corruption::MissingEnd));
        }
        let header = match self.header {
            Some(header) => header,
            None => {
                if self.buffered < HEADER_LEN {
                    return Ok(None);
                }
                let bytes = self.take(HEADER_LEN);
                let header = match Header::parse(bytes[..].try_into().expect("HEADER_LEN bytes")) {
                    Ok(header) => header,
                    Err(corruption) => return Err(self.corrupt(corruption)),
                };
                self.offset += HEADER_LEN as u64;
                self.header = Some(header);
                header
            }
        };
        if (self.buffered as u64) < header.padded {
            return Ok(None);
        }
        // `padded <= buffered`, so it fits in usize.
        let framed = self.take(header.padded as usize);
        let payload = framed.slice(..header.len as usize);
        let actual = crc32c::crc32c(&payload);
        if actual != header.crc {
            return Err(self.corrupt(Corruption::Checksum { expected: header.crc, actual }));
        }
        self.offset += header.padded;
        self.header = None;
        if header.kind == PayloadKind::End {
            let count = <[u8; 8]>::try_from(&payload[..]).ok().map(u64::from_le_bytes);
            if count != Some(self.frames) {
                let frames = self.frames;
                return Err(self.corrupt(Corruption::BadEnd { frames }));
            }
            self.frames = 0;
            self.objects += 1;
        } else {
            self.frames += 1;
        }
        Ok(Some(Frame { kind: header.kind, payload }))
    }

    /// Checks that the bytes ended where an object ends (and that there was at least one).
    pub fn finish(&mut self) -> Result<()> {
        if self.failed {
            return Err(Error::corrupt(&self.what, self.offset, Corruption::MissingEnd));
        }
        if let Some(header) = self.header {
            let (needed, available) = (header.padded, self.buffered as u64);
            return Err(self.corrupt(Corruption::Truncated { needed, available }));
        }
        if self.buffered > 0 {
            let available = self.buffered as u64;
            let corruption = match self.buffered < HEADER_LEN {
                true => Corruption::Truncated { needed: HEADER_LEN as u64, available },
                false => Corruption::TrailingBytes,
            };
            return Err(self.corrupt(corruption));
        }
        if self.frames > 0 || self.objects == 0 {
            return Err(self.corrupt(Corruption::MissingEnd));
        }
        Ok(())
    }

    /// The first `n` buffered bytes (`n <= buffered`): a slice of the first piece when it holds
    /// them all, else a copy.
    fn take(&mut self, n: usize) -> Bytes {
        if n == 0 {
            return Bytes::new();
        }
        self.buffered -= n;
        let first = self.pieces.front_mut().expect("n <= buffered, so a piece is buffered");
        if first.len() >= n {
            let out = first.split_to(n);
            if first.is_empty() {
                self.pieces.pop_front();
            }
            return out;
        }
        let mut out = Vec::with_capacity(n);
        while out.len() < n {
            let piece = self.pieces.front_mut().expect("n <= buffered");
            let want = (n - out.len()).min(piece.len());
            out.extend_from_slice(&piece.split_to(want));
            if piece.is_empty() {
                self.pieces.pop_front();
            }
        }
        out.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::{decode_records, encode_records};

    /// Every frame of `data` pushed in pieces of `size`, and how the stream ended.
    fn assemble(data: &[u8], size: usize) -> (Vec<Frame>, Result<()>) {
        let mut frames = FrameAssembler::new("test");
        let mut out = Vec::new();
        for piece in data.chunks(size) {
            frames.push(Bytes::copy_from_slice(piece));
            loop {
                match frames.next_frame() {
                    Ok(Some(frame)) => out.push(frame),
                    Ok(None) => break,
                    Err(e) => return (out, Err(e)),
                }
            }
        }
        let end = frames.finish();
        (out, end)
    }

    #[test]
    fn any_piece_size_gives_the_same_frames() {
        let records: Vec<&[u8]> = vec![b"", b"a", b"hello world", &[7u8; 1000]];
        let object = encode_records(records.iter().copied());
        for size in [1, 3, 8, 23, 24, 25, 100, object.len()] {
            let (frames, end) = assemble(&object, size);
            end.unwrap();
            let payloads: Vec<&[u8]> =
                frames.iter().filter(|f| f.kind == PayloadKind::Bytes).map(|f| &f.payload[..]).collect();
            assert_eq!(payloads, records, "pieces of {size}");
            assert_eq!(frames.last().unwrap().kind, PayloadKind::End);
        }
    }

    #[test]
    fn objects_back_to_back_each_end() {
        let both = [encode_records([&b"a"[..]]).to_vec(), encode_records([&b"b"[..], b"c"]).to_vec()].concat();
        let mut frames = FrameAssembler::new("two");
        frames.push(both.into());
        let mut kinds = Vec::new();
        while let Some(frame) = frames.next_frame().unwrap() {
            kinds.push(frame.kind);
        }
        frames.finish().unwrap();
        assert_eq!(frames.objects(), 2);
        use PayloadKind::*;
        assert_eq!(kinds, [Bytes, End, Bytes, Bytes, End]);
    }

    #[test]
    fn a_frame_within_one_piece_is_not_copied() {
        let object = encode_records([&[1u8; 64][..]]);
        let mut frames = FrameAssembler::new("zero-copy");
        frames.push(object.clone());
        let frame = frames.next_frame().unwrap().unwrap();
        assert_eq!(frame.payload.as_ptr(), object[HEADER_LEN..].as_ptr());
    }

    #[test]
    fn cuts_and_flips_are_errors_as_for_a_whole_object() {
        let object = encode_records([&b"0123456789abcdef"[..], b"xyz"]).to_vec();
        for cut in 0..object.len() {
            for size in [1, 7, 64] {
                let (_, end) = assemble(&object[..cut], size);
                assert!(matches!(end, Err(Error::Corrupt { .. })), "cut at {cut}, pieces of {size}");
            }
        }
        for bit in 0..object.len() * 8 {
            let mut bad = object.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let whole = decode_records("flip", bad.clone().into()).is_ok();
            let (_, end) = assemble(&bad, 5);
            assert_eq!(end.is_ok(), whole, "bit {bit}");
        }
    }

    #[test]
    fn trailing_bytes_are_caught() {
        let mut object = encode_records([&b"a"[..]]).to_vec();
        object.extend_from_slice(&[0; 30]);
        let (_, end) = assemble(&object, 16);
        assert!(matches!(end, Err(Error::Corrupt { .. })), "{end:?}");
    }
}
