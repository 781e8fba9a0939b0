//! An object written in pieces (a multipart upload): its chunks are stored as soon as they are
//! whole, so that a writer holds the object's first chunk and the one it is filling, never the
//! whole object; the first chunk, which names the version and the count, is stored last, so the
//! object still appears whole or not at all.
//!
//! A chunk past the first is stored before the object's length is known: it carries its own
//! index, the chunk size and the version, and a count and length that are only lower bounds.
//! Readers take the count and length from the first chunk (as they always have).

use std::future::Future;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};

use crate::client::{Cond, Meta, StoreClient};
use crate::error::{Error, Result};
use crate::proto::{Part, check_key};

/// Chunks of one writer stored at once.
const CHUNKS_AT_ONCE: usize = 4;

/// Cuts bytes that arrive in pieces into chunks of a fixed size: chunk 0 is kept for the end,
/// the others are handed out as soon as they are whole.
#[derive(Debug)]
pub(crate) struct ChunkCutter {
    chunk: usize,
    first: BytesMut,
    current: BytesMut,
    /// The index the chunk being filled will have.
    next: u32,
    total: u64,
}

impl ChunkCutter {
    pub(crate) fn new(chunk: u64) -> Self {
        let chunk = usize::try_from(chunk.max(1)).unwrap_or(usize::MAX);
        Self { chunk, first: BytesMut::new(), current: BytesMut::new(), next: 1, total: 0 }
    }

    /// Adds `bytes`; returns the chunks (index 1 on) they completed.
    pub(crate) fn push(&mut self, mut bytes: &[u8]) -> Vec<(u32, Bytes)> {
        self.total += bytes.len() as u64;
        let room = self.chunk - self.first.len();
        let into_first = room.min(bytes.len());
        self.first.extend_from_slice(&bytes[..into_first]);
        bytes = &bytes[into_first..];
        let mut whole = Vec::new();
        while !bytes.is_empty() {
            let take = (self.chunk - self.current.len()).min(bytes.len());
            self.current.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.current.len() == self.chunk {
                whole.push((self.next, std::mem::take(&mut self.current).freeze()));
                self.next += 1;
            }
        }
        whole
    }

    /// Chunks handed out so far (indices `1..written()`).
    pub(crate) fn handed_out(&self) -> u32 {
        self.next
    }

    /// The last chunk, if one is part-filled; the first chunk; the count of chunks and the
    /// object's length.
    pub(crate) fn finish(&mut self) -> (Option<(u32, Bytes)>, Bytes, u32, u64) {
        let last = (!self.current.is_empty()).then(|| (self.next, std::mem::take(&mut self.current).freeze()));
        let count = self.next + u32::from(last.is_some());
        (last, std::mem::take(&mut self.first).freeze(), count, self.total)
    }
}

/// An object of a job written in pieces ([`StoreClient::put_stream`]).
#[derive(Debug)]
pub struct PutStream {
    client: Arc<StoreClient>,
    key: String,
    version: u64,
    modified_ms: u64,
    chunk: u64,
    cutter: ChunkCutter,
}

impl PutStream {
    pub(crate) fn new(client: Arc<StoreClient>, key: &str, chunk: u64, version: u64, modified_ms: u64) -> Result<Self> {
        check_key(key).map_err(|reason| Error::Invalid { what: "a put".into(), reason })?;
        Ok(Self { client, key: key.to_string(), version, modified_ms, chunk, cutter: ChunkCutter::new(chunk) })
    }

    fn part(&self, index: u32, count: u32, total: u64) -> Part {
        Part { index, count, total, chunk: self.chunk, version: self.version, modified_ms: self.modified_ms }
    }

    /// Adds the next `bytes`; the returned future stores the chunks they completed. The futures
    /// of several writes may run at once (their chunks are already cut, in order).
    pub fn write(&mut self, bytes: &[u8]) -> impl Future<Output = Result<()>> + Send + use<> {
        let chunks: Vec<(Part, Bytes)> = self
            .cutter
            .push(bytes)
            .into_iter()
            .map(|(i, b)| (self.part(i, i + 1, u64::from(i + 1) * self.chunk), b))
            .collect();
        let (client, key) = (self.client.clone(), self.key.clone());
        async move { client.put_chunks(&key, chunks, CHUNKS_AT_ONCE).await }
    }

    /// Stores what is left and then the first chunk, if `cond` holds: the object appears. On an
    /// error, the chunks stored so far are deleted.
    pub async fn finish(&mut self, cond: Cond) -> Result<Meta> {
        let (last, first, count, total) = self.cutter.finish();
        let first_part = self.part(0, count, total);
        if let Some((i, bytes)) = last {
            let part = self.part(i, count, total);
            if let Err(e) = self.client.put_chunks(&self.key, vec![(part, bytes)], 1).await {
                self.client.drop_chunks(&self.key, first_part).await;
                return Err(e);
            }
        }
        self.client.commit(&self.key, first_part, first, cond).await
    }

    /// Deletes the chunks stored so far; the object is not there.
    pub async fn abort(&mut self) {
        let handed_out = self.cutter.handed_out();
        let part = self.part(0, handed_out + 1, 0);
        self.client.drop_chunks(&self.key, part).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_of_any_size_cut_into_the_same_chunks() {
        let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
        for piece in [1, 7, 64, 100, 333, 1000] {
            let mut cutter = ChunkCutter::new(100);
            let mut chunks = Vec::new();
            for p in data.chunks(piece) {
                chunks.extend(cutter.push(p));
            }
            let (last, first, count, total) = cutter.finish();
            chunks.extend(last);
            assert_eq!((count, total), (10, 1000), "pieces of {piece}");
            assert_eq!(&first[..], &data[..100]);
            for (i, bytes) in &chunks {
                let at = *i as usize * 100;
                assert_eq!(&bytes[..], &data[at..(at + 100).min(1000)], "chunk {i}");
            }
            assert_eq!(chunks.iter().map(|c| c.0).collect::<Vec<_>>(), (1..10).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_short_or_empty_object_is_its_first_chunk() {
        let mut cutter = ChunkCutter::new(100);
        assert!(cutter.push(b"abc").is_empty());
        let (last, first, count, total) = cutter.finish();
        assert_eq!((last, &first[..], count, total), (None, &b"abc"[..], 1, 3));
        let (last, first, count, total) = ChunkCutter::new(100).finish();
        assert_eq!((last, first.len(), count, total), (None, 0, 1, 0));
        // A part-filled last chunk after whole ones.
        let mut cutter = ChunkCutter::new(4);
        assert_eq!(cutter.push(b"0123456789").len(), 1);
        let (last, _, count, total) = cutter.finish();
        assert_eq!((last.map(|l| l.0), count, total), (Some(2), 3, 10));
    }
}
