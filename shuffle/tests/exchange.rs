//! Mappers write through a path in each layout; reducers read back exactly their partitions.

#![allow(clippy::unwrap_used)] // tests fail loudly on purpose

use std::sync::Arc;

use arrow_array::{Array, Int64Array, RecordBatch, StringArray, StringViewArray};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use baton_fabric::path::object_store::ObjectStorePath;
use baton_fabric::tier::MemoryTier;
use baton_fabric::{DataPath, EdgeId, JobId, KeyPrefix};
use baton_shuffle::{
    HashPartitioner, Layout, MapOutput, Partitioner, RangePartitioner, ShuffleReader, ShuffleWriter, Target,
};

const MAPPERS: u32 = 4;
const REDUCERS: u32 = 3;

fn schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new("key", DataType::Int64, false), Field::new("value", DataType::Utf8, false)]))
}

fn batch(keys: Vec<i64>) -> RecordBatch {
    let values: Vec<String> = keys.iter().map(|k| format!("v{k}")).collect();
    RecordBatch::try_new(schema(), vec![Arc::new(Int64Array::from(keys)), Arc::new(StringArray::from(values))]).unwrap()
}

fn keys(batches: &[RecordBatch]) -> Vec<i64> {
    let mut out = Vec::new();
    for b in batches {
        let k = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
        let v = b.column(1).as_any().downcast_ref::<StringArray>().unwrap();
        for i in 0..b.num_rows() {
            assert_eq!(v.value(i), format!("v{}", k.value(i)), "a row lost its value");
            out.push(k.value(i));
        }
    }
    out
}

/// Mapper m holds keys m, m + MAPPERS, m + 2·MAPPERS, ... below 4000, in two batches.
fn mapper_input(m: u32) -> Vec<RecordBatch> {
    let all: Vec<i64> = (0..4000).filter(|k| k % i64::from(MAPPERS) == i64::from(m)).collect();
    let (a, b) = all.split_at(all.len() / 3);
    vec![batch(a.to_vec()), batch(b.to_vec())]
}

async fn shuffle(
    path: Arc<dyn DataPath>,
    layout: Layout,
    partitioner: impl Fn() -> Box<dyn Partitioner>,
) -> (Vec<Vec<i64>>, usize) {
    let target = Target { path: path.clone(), job: JobId(1), edge: EdgeId(layout as u32) };
    let mut outputs: Vec<MapOutput> = Vec::new();
    for m in 0..MAPPERS {
        let mut writer = ShuffleWriter::new(target.clone(), m, schema(), partitioner(), layout);
        for b in mapper_input(m) {
            writer.write(&b).unwrap();
        }
        outputs.push(writer.finish().await.unwrap());
    }
    let objects = path.list(&KeyPrefix::edge(target.job, target.edge)).await.unwrap().len();
    let mut per_reducer = Vec::new();
    for r in 0..REDUCERS {
        let batches = ShuffleReader::new(target.clone(), r).read_all(&outputs).await.unwrap();
        per_reducer.push(keys(&batches));
    }
    (per_reducer, objects)
}

fn paths() -> Vec<Arc<dyn DataPath>> {
    vec![
        Arc::new(MemoryTier::new(1 << 30)),
        Arc::new(ObjectStorePath::new(Arc::new(object_store::memory::InMemory::new()), Default::default())),
    ]
}

#[tokio::test]
async fn every_row_reaches_exactly_its_reducer_in_both_layouts() {
    for path in paths() {
        for (layout, expected_objects) in
            [(Layout::AllToAll, (MAPPERS * REDUCERS) as usize), (Layout::Coalesced, MAPPERS as usize)]
        {
            let hash = || Box::new(HashPartitioner::new(&schema(), &[0], REDUCERS).unwrap()) as Box<dyn Partitioner>;
            let (per_reducer, objects) = shuffle(path.clone(), layout, hash).await;
            assert_eq!(objects, expected_objects, "{layout:?} over {path:?}");
            let checker = HashPartitioner::new(&schema(), &[0], REDUCERS).unwrap();
            for (r, keys) in per_reducer.iter().enumerate() {
                let assigned = checker.assign(&batch(keys.clone())).unwrap();
                assert!(assigned.iter().all(|&p| p == r as u32), "reducer {r} got another's rows");
            }
            let mut all: Vec<i64> = per_reducer.concat();
            all.sort();
            assert_eq!(all, (0..4000).collect::<Vec<_>>(), "{layout:?}: rows lost or duplicated");
        }
    }
}

#[tokio::test]
async fn a_range_partitioned_coalesced_shuffle_sorts_globally() {
    let sample: Vec<RecordBatch> = (0..MAPPERS).map(|m| mapper_input(m).remove(0)).collect();
    let range =
        || Box::new(RangePartitioner::from_sample(&schema(), &[0], &sample, REDUCERS).unwrap()) as Box<dyn Partitioner>;
    let (per_reducer, _) = shuffle(Arc::new(MemoryTier::new(1 << 30)), Layout::Coalesced, range).await;
    let sorted: Vec<i64> = per_reducer
        .into_iter()
        .flat_map(|mut keys| {
            keys.sort();
            keys
        })
        .collect();
    assert_eq!(sorted, (0..4000).collect::<Vec<_>>(), "concatenated reducer outputs are not globally sorted");
}

#[tokio::test]
async fn a_writer_over_its_budget_spills_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    for layout in [Layout::AllToAll, Layout::Coalesced] {
        let path: Arc<dyn DataPath> = Arc::new(MemoryTier::new(1 << 30));
        let target = Target { path, job: JobId(2), edge: EdgeId(0) };
        let partitioner = Box::new(HashPartitioner::new(&schema(), &[0], REDUCERS).unwrap());
        let mut writer = ShuffleWriter::new(target.clone(), 0, schema(), partitioner, layout)
            .with_memory_budget(16 << 10, dir.path());
        for chunk in (0..20_000).collect::<Vec<i64>>().chunks(1000) {
            writer.write(&batch(chunk.to_vec())).unwrap();
        }
        let output = writer.finish().await.unwrap();
        assert!(output.spilled_bytes > 0, "{layout:?}: a 16 KiB budget must spill");
        let mut all = Vec::new();
        for r in 0..REDUCERS {
            all.extend(keys(
                &ShuffleReader::new(target.clone(), r).read_all(std::slice::from_ref(&output)).await.unwrap(),
            ));
        }
        all.sort();
        assert_eq!(all, (0..20_000).collect::<Vec<_>>(), "{layout:?}: rows lost in the spill");
    }
    // The spill files were unnamed: nothing is left in the directory.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}

/// String views that point into one large shared buffer (what a join's output holds when its
/// build side is broadcast): each partition must carry only its own strings, gathered into a
/// few full batches, and not the shared buffer once per small piece.
#[tokio::test]
async fn partitions_of_string_views_carry_only_their_own_strings() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("name", DataType::Utf8View, false),
    ]));
    let names: Vec<String> = (0..100_000).map(|i| format!("a name long enough to be out of line {i:08}")).collect();
    let shared = StringViewArray::from_iter_values(names.iter());
    let path: Arc<dyn DataPath> = Arc::new(MemoryTier::new(1 << 30));
    let target = Target { path, job: JobId(3), edge: EdgeId(0) };
    let partitioner = Box::new(HashPartitioner::new(&schema, &[0], REDUCERS).unwrap());
    let mut writer = ShuffleWriter::new(target.clone(), 0, schema.clone(), partitioner, Layout::AllToAll);
    // 200 batches of 100 rows, each a slice of the shared array (so each holds all its bytes).
    for b in 0..200 {
        let keys = Int64Array::from_iter_values((b * 100)..(b * 100 + 100));
        let names = shared.slice(b as usize * 100, 100);
        writer.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(keys), Arc::new(names)]).unwrap()).unwrap();
    }
    let output = writer.finish().await.unwrap();
    let own_bytes = 20_000 * (16 + names[0].len() + 8) as u64;
    let written: u64 = output.partitions.iter().map(|p| p.bytes).sum();
    assert!(written < own_bytes * 2, "wrote {written} bytes for {own_bytes} bytes of rows: shared buffers came along");
    let mut seen = 0;
    for r in 0..REDUCERS {
        let batches = ShuffleReader::new(target.clone(), r).read_all(std::slice::from_ref(&output)).await.unwrap();
        assert!(batches.len() <= 2, "reducer {r}: {} batches where one or two full ones would do", batches.len());
        for b in &batches {
            let keys = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let names = b.column(1).as_any().downcast_ref::<StringViewArray>().unwrap();
            for i in 0..b.num_rows() {
                assert_eq!(names.value(i), format!("a name long enough to be out of line {:08}", keys.value(i)));
            }
            seen += b.num_rows();
        }
    }
    assert_eq!(seen, 20_000);
}

/// A batch far bigger than a partition's batch size, of string views: its pieces are big enough
/// to pass the coalescer by, but must still be compacted, or each partition would carry the
/// strings of all of them.
#[tokio::test]
async fn big_pieces_of_string_views_are_still_compacted() {
    let schema = Arc::new(Schema::new(vec![
        Field::new("key", DataType::Int64, false),
        Field::new("name", DataType::Utf8View, false),
    ]));
    let rows = 200_000;
    let names =
        StringViewArray::from_iter_values((0..rows).map(|i| format!("a name long enough to be out of line {i:08}")));
    let own_bytes = names.get_buffer_memory_size() as u64;
    let keys = Int64Array::from_iter_values(0..rows);
    let path: Arc<dyn DataPath> = Arc::new(MemoryTier::new(1 << 30));
    let target = Target { path, job: JobId(4), edge: EdgeId(0) };
    let partitioner = Box::new(HashPartitioner::new(&schema, &[0], REDUCERS).unwrap());
    let mut writer = ShuffleWriter::new(target.clone(), 0, schema.clone(), partitioner, Layout::Coalesced);
    writer.write(&RecordBatch::try_new(schema.clone(), vec![Arc::new(keys), Arc::new(names)]).unwrap()).unwrap();
    let output = writer.finish().await.unwrap();
    let written: u64 = output.partitions.iter().map(|p| p.bytes).sum();
    assert!(written < own_bytes * 2, "wrote {written} bytes for {own_bytes} bytes of rows: shared buffers came along");
    let mut seen = 0;
    for r in 0..REDUCERS {
        for b in ShuffleReader::new(target.clone(), r).read_all(std::slice::from_ref(&output)).await.unwrap() {
            let keys = b.column(0).as_any().downcast_ref::<Int64Array>().unwrap();
            let names = b.column(1).as_any().downcast_ref::<StringViewArray>().unwrap();
            for i in 0..b.num_rows() {
                assert_eq!(names.value(i), format!("a name long enough to be out of line {:08}", keys.value(i)));
            }
            seen += b.num_rows();
        }
    }
    assert_eq!(seen, rows as usize);
}

/// A partition larger than a read piece is read in ranges of that size, each decoded as it
/// comes (the objects of a spilled writer straddling the pieces), and a corrupt byte in the
/// middle of it is an error, not fewer rows.
#[tokio::test]
async fn a_large_partition_is_read_in_pieces() {
    use baton_fabric::path::counted::{Counted, RequestCounter};
    use futures::TryStreamExt;

    let dir = tempfile::tempdir().unwrap();
    const PIECE: u64 = 2 << 20;
    let rows: i64 = 500_000;
    for layout in [Layout::AllToAll, Layout::Coalesced] {
        let counter = Arc::new(RequestCounter::default());
        let tier: Arc<dyn DataPath> = Arc::new(MemoryTier::new(1 << 30));
        let path: Arc<dyn DataPath> = Arc::new(Counted::new(tier.clone(), counter.clone(), "memory"));
        let target = Target { path, job: JobId(3), edge: EdgeId(0) };
        let partitioner = Box::new(HashPartitioner::new(&schema(), &[0], 1).unwrap());
        let mut writer = ShuffleWriter::new(target.clone(), 0, schema(), partitioner, layout)
            .with_memory_budget(1 << 20, dir.path());
        for chunk in (0..rows).collect::<Vec<i64>>().chunks(50_000) {
            writer.write(&batch(chunk.to_vec())).unwrap();
        }
        let output = writer.finish().await.unwrap();
        assert!(output.spilled_bytes > 0, "{layout:?}: a 1 MiB budget must spill");
        let bytes = output.partitions[0].bytes;
        assert!(bytes > 2 * PIECE, "{layout:?}: the partition is only {bytes} bytes");
        let before = counter.snapshot();
        let reader = ShuffleReader::new(target.clone(), 0).with_read_piece(PIECE);
        let batches: Vec<RecordBatch> = reader.stream_mapper(&output).unwrap().try_collect().await.unwrap();
        let got = counter.snapshot();
        assert_eq!(got.gets - before.gets, bytes.div_ceil(PIECE), "{layout:?}: one request per piece");
        assert_eq!(got.bytes_got - before.bytes_got, bytes, "{layout:?}: every byte read once");
        assert_eq!(keys(&batches), (0..rows).collect::<Vec<_>>(), "{layout:?}: rows lost or reordered");

        // One flipped byte well inside the second piece.
        let meta = tier.list(&KeyPrefix::edge(target.job, target.edge)).await.unwrap().remove(0);
        let mut object = tier.get(&meta.key).await.unwrap().to_vec();
        let at = output.partitions[0].range.as_ref().map_or(0, |r| r.start) + PIECE + 1000;
        object[at as usize] ^= 0x40;
        tier.delete(&meta.key).await.unwrap();
        tier.put(&meta.key, object.into()).await.unwrap();
        let read: Result<Vec<RecordBatch>, _> = reader.stream_mapper(&output).unwrap().try_collect().await;
        let err = read.unwrap_err();
        assert!(err.to_string().contains("corrupt"), "{layout:?}: {err}");
    }
}
