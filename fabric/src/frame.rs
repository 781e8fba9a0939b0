//! Frames: the unit of integrity of every object.
//!
//! An object is a sequence of frames. Each frame is a 24-byte header followed by its payload,
//! padded with zeros to a multiple of 8 bytes so that the next header — and any Arrow buffer in
//! the next payload — stays 8-byte aligned for zero-copy reads:
//!
//! ```text
//! 0      4   5    6      8         16       20          24
//! | BTNF | v | kind | 0 0 | len u64 | crc32c | hdr crc32c | payload ... | pad to 8 |
//! ```
//!
//! The last frame of every object is an `End` frame whose payload is the number of frames before
//! it, so an object cut short at a frame boundary is caught too. `crc32c` covers the payload; `hdr crc32c` covers the first 20 header bytes, so a corrupt
//! length is caught before it is trusted. Integers are little-endian. A reader that finds any
//! check failing returns [`Error::Corrupt`] and never the bytes.
//!
//! ```
//! use baton_fabric::frame::{decode_records, encode_records};
//!
//! let object = encode_records([&b"one"[..], b"two"]);
//! let records = decode_records("example", object.clone()).unwrap();
//! assert_eq!(records, [&b"one"[..], b"two"]);
//!
//! let mut bad = object.to_vec();
//! bad[25] ^= 1; // a bit of the first payload
//! assert!(decode_records("example", bad.into()).is_err());
//! ```

use std::io::{self, Seek, SeekFrom, Write};

use bytes::Bytes;

use crate::error::{Corruption, Error, Result};

/// Bytes of a frame header.
pub const HEADER_LEN: usize = 24;
const MAGIC: u32 = u32::from_le_bytes(*b"BTNF");
const VERSION: u8 = 1;
const PAD: [u8; 8] = [0; 8];

/// What a frame's payload holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PayloadKind {
    /// A piece of an Arrow IPC stream that ends on a message boundary.
    ArrowIpc,
    /// Opaque bytes: one record of a framed-bytes object.
    Bytes,
    /// The terminating frame; never yielded by [`FrameReader`].
    End,
}

impl PayloadKind {
    fn to_byte(self) -> u8 {
        match self {
            PayloadKind::ArrowIpc => 1,
            PayloadKind::Bytes => 2,
            PayloadKind::End => 3,
        }
    }

    fn from_byte(byte: u8) -> Option<Self> {
        match byte {
            1 => Some(PayloadKind::ArrowIpc),
            2 => Some(PayloadKind::Bytes),
            3 => Some(PayloadKind::End),
            _ => None,
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            PayloadKind::ArrowIpc => "arrow-ipc",
            PayloadKind::Bytes => "bytes",
            PayloadKind::End => "end",
        }
    }
}

/// One checked frame: its kind and its payload (a zero-copy slice of the object).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// What the payload holds.
    pub kind: PayloadKind,
    /// The payload, checksum verified.
    pub payload: Bytes,
}

fn padding(len: u64) -> usize {
    ((8 - (len % 8)) % 8) as usize
}

fn encode_header(kind: PayloadKind, len: u64, crc: u32) -> [u8; HEADER_LEN] {
    let mut h = [0u8; HEADER_LEN];
    h[0..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4] = VERSION;
    h[5] = kind.to_byte();
    h[8..16].copy_from_slice(&len.to_le_bytes());
    h[16..20].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32c::crc32c(&h[0..20]);
    h[20..24].copy_from_slice(&hcrc.to_le_bytes());
    h
}

/// Appends one frame holding `payload` to `out`.
pub fn encode_frame(kind: PayloadKind, payload: &[u8], out: &mut Vec<u8>) {
    let len = payload.len() as u64;
    out.extend_from_slice(&encode_header(kind, len, crc32c::crc32c(payload)));
    out.extend_from_slice(payload);
    out.extend_from_slice(&PAD[..padding(len)]);
}

/// Appends the `End` frame of an object of `frames` frames to `out`.
pub fn encode_end(frames: u64, out: &mut Vec<u8>) {
    encode_frame(PayloadKind::End, &frames.to_le_bytes(), out);
}

/// An object of framed bytes: one frame per record, then the `End` frame.
pub fn encode_records<'a>(records: impl IntoIterator<Item = &'a [u8]>) -> Bytes {
    let mut out = Vec::new();
    let mut frames = 0;
    for record in records {
        encode_frame(PayloadKind::Bytes, record, &mut out);
        frames += 1;
    }
    encode_end(frames, &mut out);
    out.into()
}

/// A frame header, checked: its magic, its own checksum, its version and its kind.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub(crate) kind: PayloadKind,
    /// Payload bytes.
    pub(crate) len: u64,
    /// Payload bytes with their padding: what follows the header up to the next frame.
    pub(crate) padded: u64,
    /// The payload's CRC32C.
    pub(crate) crc: u32,
}

impl Header {
    pub(crate) fn parse(h: &[u8; HEADER_LEN]) -> std::result::Result<Header, Corruption> {
        let word = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
        let magic = word(0);
        if magic != MAGIC {
            return Err(Corruption::BadMagic { found: magic });
        }
        let (expected, actual) = (word(20), crc32c::crc32c(&h[0..20]));
        if expected != actual {
            return Err(Corruption::Checksum { expected, actual });
        }
        if h[4] != VERSION {
            return Err(Corruption::UnsupportedVersion { version: h[4] });
        }
        let Some(kind) = PayloadKind::from_byte(h[5]) else {
            return Err(Corruption::UnknownKind { kind: h[5] });
        };
        let mut len8 = [0u8; 8];
        len8.copy_from_slice(&h[8..16]);
        let len = u64::from_le_bytes(len8);
        Ok(Header { kind, len, padded: len.saturating_add(padding(len) as u64), crc: word(16) })
    }
}

/// Reads an object's frames in order, checking each before yielding it.
///
/// `what` names the object in errors. After the first error the reader yields nothing more.
#[derive(Debug)]
pub struct FrameReader {
    what: String,
    data: Bytes,
    offset: usize,
    frames: u64,
    done: bool,
}

impl FrameReader {
    /// A reader over a whole object.
    pub fn new(what: impl std::fmt::Display, data: Bytes) -> Self {
        Self { what: what.to_string(), data, offset: 0, frames: 0, done: false }
    }

    fn corrupt(&mut self, corruption: Corruption) -> Error {
        self.done = true;
        Error::corrupt(&self.what, self.offset as u64, corruption)
    }

    /// Checks the header at the current offset; returns the kind, payload length, padded
    /// length and payload CRC.
    fn next_header(&mut self) -> Result<(PayloadKind, u64, u64, u32)> {
        if self.offset == self.data.len() {
            return Err(self.corrupt(Corruption::MissingEnd));
        }
        let rest = &self.data[self.offset..];
        if rest.len() < HEADER_LEN {
            let available = rest.len() as u64;
            return Err(self.corrupt(Corruption::Truncated { needed: HEADER_LEN as u64, available }));
        }
        let header = match Header::parse(rest[..HEADER_LEN].try_into().expect("HEADER_LEN bytes")) {
            Ok(header) => header,
            Err(corruption) => return Err(self.corrupt(corruption)),
        };
        let available = (rest.len() - HEADER_LEN) as u64;
        if header.padded > available {
            return Err(self.corrupt(Corruption::Truncated { needed: header.padded, available }));
        }
        Ok((header.kind, header.len, header.padded, header.crc))
    }

    fn next_frame(&mut self) -> Result<Frame> {
        let (kind, len, padded, crc) = self.next_header()?;
        // `padded <= available <= usize::MAX`, so these conversions are exact.
        let start = self.offset + HEADER_LEN;
        let payload = self.data.slice(start..start + len as usize);
        let actual = crc32c::crc32c(&payload);
        if actual != crc {
            return Err(self.corrupt(Corruption::Checksum { expected: crc, actual }));
        }
        self.offset = start + padded as usize;
        self.frames += 1;
        Ok(Frame { kind, payload })
    }

    /// Checks an `End` frame: it counts the frames before it and nothing follows it.
    fn check_end(&mut self, payload: &[u8]) -> Result<()> {
        let count = <[u8; 8]>::try_from(payload).ok().map(u64::from_le_bytes);
        let before = self.frames - 1;
        if count != Some(before) {
            return Err(self.corrupt(Corruption::BadEnd { frames: before }));
        }
        if self.offset != self.data.len() {
            return Err(self.corrupt(Corruption::TrailingBytes));
        }
        self.done = true;
        Ok(())
    }
}

impl Iterator for FrameReader {
    type Item = Result<Frame>;

    fn next(&mut self) -> Option<Result<Frame>> {
        if self.done {
            return None;
        }
        match self.next_frame() {
            Ok(frame) if frame.kind == PayloadKind::End => self.check_end(&frame.payload).err().map(Err),
            other => Some(other),
        }
    }
}

/// Cuts bytes holding several whole objects back to back into the objects, by their headers
/// and end frames (payload checksums are left to whoever reads each object).
pub fn split_objects(what: impl std::fmt::Display, data: Bytes) -> Result<Vec<Bytes>> {
    let mut reader = FrameReader::new(what, data.clone());
    let mut objects = Vec::new();
    let mut start = 0;
    while reader.offset < data.len() {
        let (kind, _, padded, _) = reader.next_header()?;
        reader.offset += HEADER_LEN + padded as usize;
        if kind == PayloadKind::End {
            objects.push(data.slice(start..reader.offset));
            start = reader.offset;
        }
    }
    if start != data.len() {
        return Err(reader.corrupt(Corruption::MissingEnd));
    }
    Ok(objects)
}

/// Checks every frame of an object and returns the payloads of a framed-bytes object.
pub fn decode_records(what: impl std::fmt::Display, data: Bytes) -> Result<Vec<Bytes>> {
    let what = what.to_string();
    FrameReader::new(&what, data)
        .map(|frame| {
            let frame = frame?;
            match frame.kind {
                PayloadKind::Bytes => Ok(frame.payload),
                other => {
                    Err(Error::corrupt(&what, 0, Corruption::WrongKind { expected: "bytes", found: other.name() }))
                }
            }
        })
        .collect()
}

/// A writer that wraps what is written into frames, computing each frame's checksum as the
/// bytes pass and patching the header in place when the frame ends (so it needs `Seek`).
///
/// Call [`FrameSink::begin_frame`], write the payload, call [`FrameSink::end_frame`].
#[derive(Debug)]
pub struct FrameSink<W: Write + Seek> {
    inner: W,
    open: Option<OpenFrame>,
    written: u64,
    frames: u64,
}

#[derive(Debug)]
struct OpenFrame {
    kind: PayloadKind,
    header_at: u64,
    len: u64,
    crc: u32,
}

impl<W: Write + Seek> FrameSink<W> {
    /// A sink writing frames to `inner` from its current position.
    pub fn new(inner: W) -> Self {
        Self { inner, open: None, written: 0, frames: 0 }
    }

    /// Starts a frame; a frame already open is ended first.
    pub fn begin_frame(&mut self, kind: PayloadKind) -> io::Result<()> {
        self.end_frame()?;
        let header_at = self.inner.stream_position()?;
        self.inner.write_all(&[0u8; HEADER_LEN])?;
        self.open = Some(OpenFrame { kind, header_at, len: 0, crc: 0 });
        Ok(())
    }

    /// Ends the open frame, if any: pads it and writes its header.
    pub fn end_frame(&mut self) -> io::Result<()> {
        let Some(frame) = self.open.take() else { return Ok(()) };
        self.frames += 1;
        self.inner.write_all(&PAD[..padding(frame.len)])?;
        let end = self.inner.stream_position()?;
        self.inner.seek(SeekFrom::Start(frame.header_at))?;
        self.inner.write_all(&encode_header(frame.kind, frame.len, frame.crc))?;
        self.inner.seek(SeekFrom::Start(end))?;
        self.written += HEADER_LEN as u64 + frame.len + padding(frame.len) as u64;
        Ok(())
    }

    /// Bytes of complete frames written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Ends any open frame, writes the `End` frame, and returns the inner writer and the
    /// object's length in bytes.
    pub fn finish(mut self) -> io::Result<(W, u64)> {
        self.end_frame()?;
        let mut end = Vec::with_capacity(HEADER_LEN + 8);
        encode_end(self.frames, &mut end);
        self.inner.write_all(&end)?;
        Ok((self.inner, self.written + end.len() as u64))
    }
}

impl<W: Write + Seek> Write for FrameSink<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(frame) = self.open.as_mut() else {
            return Err(io::Error::other("FrameSink: write outside a frame"));
        };
        let n = self.inner.write(buf)?;
        frame.crc = crc32c::crc32c_append(frame.crc, &buf[..n]);
        frame.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    #[test]
    fn records_round_trip() {
        let records: Vec<&[u8]> = vec![b"", b"a", b"hello world", &[7u8; 1000]];
        let object = encode_records(records.iter().copied());
        assert_eq!(object.len() % 8, 0);
        let back = decode_records("test", object).unwrap();
        assert_eq!(back.iter().map(|b| &b[..]).collect::<Vec<_>>(), records);
    }

    #[test]
    fn sink_writes_the_same_bytes_as_encode() {
        let mut sink = FrameSink::new(Cursor::new(Vec::new()));
        for part in [&b"abc"[..], b"", b"0123456789"] {
            sink.begin_frame(PayloadKind::Bytes).unwrap();
            sink.write_all(part).unwrap();
        }
        let written = sink.finish().unwrap().0.into_inner();
        assert_eq!(written, encode_records([&b"abc"[..], b"", b"0123456789"]).to_vec());
    }

    #[test]
    fn every_flipped_bit_is_caught() {
        let object = encode_records([&b"payload that matters"[..]]).to_vec();
        for bit in 0..object.len() * 8 {
            let mut bad = object.clone();
            bad[bit / 8] ^= 1 << (bit % 8);
            let res = decode_records("flip", bad.into());
            // Flips in the zero padding after the payload are harmless; everything else fails.
            let in_padding = (HEADER_LEN + 20..HEADER_LEN + 24).contains(&(bit / 8));
            assert_eq!(res.is_err(), !in_padding, "bit {bit}");
        }
    }

    #[test]
    fn an_object_cut_at_a_frame_boundary_is_caught() {
        let object = encode_records([&b"one"[..], b"two"]);
        let second = 2 * (HEADER_LEN + 8);
        let err = decode_records("cut", object.slice(..second)).unwrap_err();
        assert!(matches!(err, Error::Corrupt { corruption: Corruption::MissingEnd, .. }), "{err}");
        let mut longer = object.to_vec();
        longer.extend_from_slice(&object);
        let err = decode_records("twice", longer.into()).unwrap_err();
        assert!(matches!(err, Error::Corrupt { corruption: Corruption::TrailingBytes, .. }), "{err}");
    }

    #[test]
    fn objects_back_to_back_split_apart() {
        let a = encode_records([&b"a"[..], b"bb"]);
        let b = encode_records([&b"ccc"[..]]);
        let both: Bytes = [a.to_vec(), b.to_vec()].concat().into();
        assert_eq!(split_objects("two", both.clone()).unwrap(), vec![a.clone(), b]);
        assert!(split_objects("none", Bytes::new()).unwrap().is_empty());
        let cut = both.slice(..both.len() - 8);
        assert!(matches!(split_objects("cut", cut), Err(Error::Corrupt { .. })));
    }

    #[test]
    fn truncation_is_reported_not_returned() {
        let object = encode_records([&b"0123456789abcdef"[..]]);
        for cut in 1..object.len() {
            let err = decode_records("cut", object.slice(..cut)).unwrap_err();
            assert!(matches!(err, Error::Corrupt { .. }), "cut at {cut}: {err}");
        }
    }
}
