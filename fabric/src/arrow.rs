//! Arrow IPC payloads: record batches written as frames, read back without copying.
//!
//! An Arrow object is an Arrow IPC stream cut into frames at message boundaries — one frame per
//! record batch (the first also holds the schema, the last the end-of-stream marker). Because a
//! frame never splits a message and frames are 8-byte aligned, [`read_batches`] hands Arrow
//! slices of the object's own bytes: when those bytes are a memory mapping, the arrays point
//! straight into it.

use std::io::{BufWriter, Seek, Write};

use arrow_array::RecordBatch;
use arrow_buffer::Buffer;
use arrow_ipc::reader::StreamDecoder;
use arrow_ipc::writer::StreamWriter;
use arrow_schema::{ArrowError, Schema, SchemaRef};
use bytes::Bytes;

use crate::buffers::Pool;
use crate::error::{Corruption, Error, Result, panic_message};
use crate::frame::{Frame, FrameReader, FrameSink, PayloadKind};
use crate::frame_stream::FrameAssembler;

const WRITE_BUFFER: usize = 1 << 20;

/// Writes record batches as an Arrow object into any seekable writer (a file, a shared-memory
/// segment, a `Cursor<Vec<u8>>`).
pub struct ArrowFrameWriter<W: Write + Seek> {
    writer: StreamWriter<BufWriter<FrameSink<W>>>,
}

impl<W: Write + Seek> std::fmt::Debug for ArrowFrameWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArrowFrameWriter").finish_non_exhaustive()
    }
}

fn write_error(e: ArrowError) -> Error {
    match e {
        ArrowError::IoError(_, source) => Error::io("write", "arrow object", source),
        other => Error::Arrow { source: other },
    }
}

fn io_error(source: std::io::Error) -> Error {
    Error::io("write", "arrow object", source)
}

impl<W: Write + Seek> ArrowFrameWriter<W> {
    /// Starts an object with `schema` at the writer's current position.
    pub fn try_new(inner: W, schema: &Schema) -> Result<Self> {
        let mut sink = FrameSink::new(inner);
        sink.begin_frame(PayloadKind::ArrowIpc).map_err(io_error)?;
        let buffered = BufWriter::with_capacity(WRITE_BUFFER, sink);
        let writer = StreamWriter::try_new(buffered, schema).map_err(write_error)?;
        Ok(Self { writer })
    }

    /// Appends one batch, as one frame.
    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.writer.write(batch).map_err(write_error)?;
        let buffered = self.writer.get_mut();
        buffered.flush().map_err(io_error)?;
        buffered.get_mut().begin_frame(PayloadKind::ArrowIpc).map_err(io_error)
    }

    /// Ends the stream and returns the inner writer and the object's length in bytes.
    pub fn finish(mut self) -> Result<(W, u64)> {
        self.writer.finish().map_err(write_error)?;
        let buffered = self.writer.into_inner().map_err(write_error)?;
        let sink = buffered.into_inner().map_err(|e| io_error(e.into_error()))?;
        sink.finish().map_err(io_error)
    }
}

/// Encodes batches as an Arrow object in memory (a buffer from the [`Pool`]).
pub fn encode_batches(schema: &Schema, batches: &[RecordBatch]) -> Result<Bytes> {
    let mut object = Pool::global().take(encoded_len_estimate(batches));
    append_batches(schema, batches, object.vec())?;
    Ok(object.freeze())
}

/// Appends batches as an Arrow object to `out`, after whatever it holds (other objects, say:
/// a coalesced shuffle object is several back to back); returns the object's length.
pub fn append_batches(schema: &Schema, batches: &[RecordBatch], out: &mut Vec<u8>) -> Result<u64> {
    let start = out.len() as u64;
    let mut cursor = std::io::Cursor::new(out);
    cursor.set_position(start);
    let mut writer = ArrowFrameWriter::try_new(cursor, schema)?;
    for batch in batches {
        writer.write(batch)?;
    }
    let (_, len) = writer.finish()?;
    Ok(len)
}

/// About how many bytes [`encode_batches`] makes of `batches`: the rows' own bytes plus
/// headers (capped at 1 GiB: it sizes a first allocation, so the object is written once
/// rather than regrown).
pub fn encoded_len_estimate(batches: &[RecordBatch]) -> usize {
    let rows: usize =
        batches.iter().flat_map(|b| b.columns()).map(|c| c.to_data().get_slice_memory_size().unwrap_or(0) + 64).sum();
    (rows + batches.len() * 512 + 4096).min(1 << 30)
}

/// Checks and decodes an Arrow object. The batches' buffers are slices of `data` wherever
/// alignment allows (always, for objects this module wrote), so no payload bytes are copied.
///
/// Bytes that pass their checksums but are not valid Arrow IPC are [`Error::Corrupt`]: Arrow's
/// decoder can panic on some malformed messages, and such a panic is caught and reported too.
pub fn read_batches(what: impl std::fmt::Display, data: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let what = what.to_string();
    let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| decode_frames(&what, data)));
    decoded.unwrap_or_else(|panic| {
        let message = format!("decoder panicked: {}", panic_message(panic.as_ref()));
        Err(Error::corrupt(&what, 0, Corruption::Arrow { message }))
    })
}

fn decode_frames(what: &str, data: Bytes) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let mut decoder = StreamDecoder::new();
    let mut batches = Vec::new();
    for frame in FrameReader::new(what, data) {
        decode_frame(what, &mut decoder, frame?, &mut batches)?;
    }
    Ok((end_stream(what, &mut decoder)?, batches))
}

fn arrow_error(what: &str, e: ArrowError) -> Error {
    Error::corrupt(what, 0, Corruption::Arrow { message: e.to_string() })
}

/// Feeds one frame of an Arrow object to `decoder`, adding the batches it completes to `out`.
fn decode_frame(what: &str, decoder: &mut StreamDecoder, frame: Frame, out: &mut Vec<RecordBatch>) -> Result<()> {
    if frame.kind != PayloadKind::ArrowIpc {
        let found = frame.kind.name();
        return Err(Error::corrupt(what, 0, Corruption::WrongKind { expected: "arrow-ipc", found }));
    }
    let mut buffer = Buffer::from(frame.payload);
    while !buffer.is_empty() {
        if let Some(batch) = decoder.decode(&mut buffer).map_err(|e| arrow_error(what, e))? {
            out.push(batch);
        }
    }
    Ok(())
}

/// Checks that `decoder`'s stream ended whole and had a schema.
fn end_stream(what: &str, decoder: &mut StreamDecoder) -> Result<SchemaRef> {
    decoder.finish().map_err(|e| arrow_error(what, e))?;
    decoder.schema().ok_or_else(|| arrow_error(what, ArrowError::IpcError("stream has no schema".into())))
}

/// Decodes Arrow objects (back to back, as a spilled writer leaves them) that arrive in pieces —
/// ranged reads of a large object — so that a reader holds a piece and the batches it has not yet
/// passed on, never the whole object. Checks are those of [`read_batches`].
#[derive(Debug)]
pub struct BatchAssembler {
    what: String,
    frames: FrameAssembler,
    decoder: StreamDecoder,
}

impl BatchAssembler {
    /// An assembler for the object(s) named `what` in errors.
    pub fn new(what: impl std::fmt::Display) -> Self {
        let what = what.to_string();
        Self { frames: FrameAssembler::new(&what), what, decoder: StreamDecoder::new() }
    }

    /// Adds the next piece of bytes; returns the batches it completed.
    pub fn push(&mut self, piece: Bytes) -> Result<Vec<RecordBatch>> {
        self.frames.push(piece);
        let mut batches = Vec::new();
        let decoded = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> Result<()> {
            while let Some(frame) = self.frames.next_frame()? {
                if frame.kind == PayloadKind::End {
                    end_stream(&self.what, &mut self.decoder)?;
                    self.decoder = StreamDecoder::new();
                } else {
                    decode_frame(&self.what, &mut self.decoder, frame, &mut batches)?;
                }
            }
            Ok(())
        }));
        match decoded {
            Ok(Ok(())) => Ok(batches),
            Ok(Err(e)) => Err(e),
            Err(panic) => {
                let message = format!("decoder panicked: {}", panic_message(panic.as_ref()));
                Err(Error::corrupt(&self.what, 0, Corruption::Arrow { message }))
            }
        }
    }

    /// Checks that the bytes ended where an object ends.
    pub fn finish(mut self) -> Result<()> {
        self.frames.finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{Array, Int64Array, StringArray};
    use arrow_schema::{DataType, Field};

    use super::*;

    fn batch(start: i64, n: i64) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let ids = Int64Array::from_iter_values(start..start + n);
        let names = StringArray::from_iter((start..start + n).map(|i| (i % 3 != 0).then(|| format!("n{i}"))));
        RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(names)]).unwrap()
    }

    #[test]
    fn batches_round_trip() {
        let batches = vec![batch(0, 100), batch(100, 0), batch(100, 1000)];
        let object = encode_batches(&batches[0].schema(), &batches).unwrap();
        let (schema, back) = read_batches("t", object).unwrap();
        assert_eq!(schema, batches[0].schema());
        assert_eq!(back, batches);
    }

    #[test]
    fn objects_appended_back_to_back_each_read_alone() {
        let (first, second) = (vec![batch(0, 10)], vec![batch(10, 300), batch(310, 5)]);
        let mut out = Vec::new();
        let a = append_batches(&first[0].schema(), &first, &mut out).unwrap() as usize;
        let b = append_batches(&second[0].schema(), &second, &mut out).unwrap() as usize;
        assert_eq!(out.len(), a + b);
        assert_eq!(a % 8, 0, "the next object starts aligned");
        let out = Bytes::from(out);
        assert_eq!(read_batches("a", out.slice(..a)).unwrap().1, first);
        assert_eq!(read_batches("b", out.slice(a..)).unwrap().1, second);
        let alone = encode_batches(&second[0].schema(), &second).unwrap();
        assert_eq!(alone, out.slice(a..), "the same bytes as an object of its own");
    }

    #[test]
    fn decoded_arrays_point_into_the_object() {
        let batches = vec![batch(0, 4096)];
        let object = encode_batches(&batches[0].schema(), &batches).unwrap();
        let range = object.as_ptr() as usize..object.as_ptr() as usize + object.len();
        let (_, back) = read_batches("t", object.clone()).unwrap();
        let values = back[0].column(0).to_data().buffers()[0].as_ptr() as usize;
        assert!(range.contains(&values), "values were copied out of the object");
    }

    #[test]
    fn empty_or_foreign_objects_are_corrupt() {
        assert!(matches!(read_batches("t", Bytes::new()), Err(Error::Corrupt { .. })));
        let records = crate::frame::encode_records([&b"not arrow"[..]]);
        assert!(matches!(read_batches("t", records), Err(Error::Corrupt { .. })));
        // Frames that check but hold no IPC stream.
        let mut no_stream = Vec::new();
        crate::frame::encode_end(0, &mut no_stream);
        assert!(matches!(read_batches("t", no_stream.into()), Err(Error::Corrupt { .. })));
    }
    /// Every batch of `data` pushed in pieces of `size`, and how the bytes ended.
    fn assemble(data: &Bytes, size: usize) -> Result<Vec<RecordBatch>> {
        let mut assembler = BatchAssembler::new("pieces");
        let mut out = Vec::new();
        let mut at = 0;
        while at < data.len() {
            let end = (at + size).min(data.len());
            out.extend(assembler.push(data.slice(at..end))?);
            at = end;
        }
        assembler.finish()?;
        Ok(out)
    }

    #[test]
    fn objects_in_pieces_decode_as_whole_ones() {
        let (first, second) = (vec![batch(0, 10)], vec![batch(10, 300), batch(310, 5)]);
        let mut out = Vec::new();
        append_batches(&first[0].schema(), &first, &mut out).unwrap();
        append_batches(&second[0].schema(), &second, &mut out).unwrap();
        let out = Bytes::from(out);
        let all: Vec<RecordBatch> = first.iter().chain(&second).cloned().collect();
        for size in [1, 8, 100, 1000, out.len()] {
            assert_eq!(assemble(&out, size).unwrap(), all, "pieces of {size}");
        }
        // Cut anywhere short of an object's end: an error, never batches passed off as all.
        for cut in [1, 24, out.len() / 2, out.len() - 8] {
            assert!(matches!(assemble(&out.slice(..cut), 64), Err(Error::Corrupt { .. })), "cut at {cut}");
        }
        let records = crate::frame::encode_records([&b"not arrow"[..]]);
        assert!(matches!(assemble(&records, 16), Err(Error::Corrupt { .. })));
        let mut no_stream = Vec::new();
        crate::frame::encode_end(0, &mut no_stream);
        assert!(matches!(assemble(&no_stream.into(), 16), Err(Error::Corrupt { .. })));
    }
}
