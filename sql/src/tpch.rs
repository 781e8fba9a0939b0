//! TPC-H data: the eight tables at a scale factor, generated with the tpchgen crates and
//! written as Parquet files (`<table>.parquet`), and the 22 queries.

use std::fs::File;
use std::path::{Path, PathBuf};

use arrow_array::RecordBatchReader;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use tpchgen::generators::{
    CustomerGenerator, LineItemGenerator, NationGenerator, OrderGenerator, PartGenerator, PartSuppGenerator,
    RegionGenerator, SupplierGenerator,
};
use tpchgen_arrow::{
    CustomerArrow, LineItemArrow, NationArrow, OrderArrow, PartArrow, PartSuppArrow, RegionArrow, SupplierArrow,
};

use crate::error::{Error, Result};

/// The tables, smallest first.
pub const TABLES: [&str; 8] = ["region", "nation", "supplier", "customer", "part", "partsupp", "orders", "lineitem"];

/// The 22 queries, as `(name, SQL)`.
pub const QUERIES: [(&str, &str); 22] = [
    ("q01", include_str!("../queries/q01.sql")),
    ("q02", include_str!("../queries/q02.sql")),
    ("q03", include_str!("../queries/q03.sql")),
    ("q04", include_str!("../queries/q04.sql")),
    ("q05", include_str!("../queries/q05.sql")),
    ("q06", include_str!("../queries/q06.sql")),
    ("q07", include_str!("../queries/q07.sql")),
    ("q08", include_str!("../queries/q08.sql")),
    ("q09", include_str!("../queries/q09.sql")),
    ("q10", include_str!("../queries/q10.sql")),
    ("q11", include_str!("../queries/q11.sql")),
    ("q12", include_str!("../queries/q12.sql")),
    ("q13", include_str!("../queries/q13.sql")),
    ("q14", include_str!("../queries/q14.sql")),
    ("q15", include_str!("../queries/q15.sql")),
    ("q16", include_str!("../queries/q16.sql")),
    ("q17", include_str!("../queries/q17.sql")),
    ("q18", include_str!("../queries/q18.sql")),
    ("q19", include_str!("../queries/q19.sql")),
    ("q20", include_str!("../queries/q20.sql")),
    ("q21", include_str!("../queries/q21.sql")),
    ("q22", include_str!("../queries/q22.sql")),
];

/// Rows per generated batch.
const BATCH: usize = 64 * 1024;

/// One table written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TableFile {
    /// The table.
    pub table: &'static str,
    /// Its Parquet file.
    pub path: PathBuf,
    /// Rows.
    pub rows: u64,
    /// Bytes of the file.
    pub bytes: u64,
}

/// Writes the eight tables at scale factor `sf` into `out` as `<table>.parquet`.
pub fn generate(sf: f64, out: &Path) -> Result<Vec<TableFile>> {
    check_scale(sf)?;
    std::fs::create_dir_all(out).map_err(|e| Error::io("create", out, e))?;
    let mut written = Vec::new();
    for table in TABLES {
        let path = out.join(format!("{table}.parquet"));
        let rows = match table {
            "region" => write(RegionArrow::new(RegionGenerator::new(sf, 1, 1)).with_batch_size(BATCH), &path)?,
            "nation" => write(NationArrow::new(NationGenerator::new(sf, 1, 1)).with_batch_size(BATCH), &path)?,
            "supplier" => write(SupplierArrow::new(SupplierGenerator::new(sf, 1, 1)).with_batch_size(BATCH), &path)?,
            "customer" => write(CustomerArrow::new(CustomerGenerator::new(sf, 1, 1)).with_batch_size(BATCH), &path)?,
            "part" => write(PartArrow::new(PartGenerator::new(sf, 1, 1)).with_batch_size(BATCH), &path)?,
            "partsupp" => write(PartSuppArrow::new(PartSuppGenerator::new(sf, 1, 1)).with_batch_size(BATCH), &path)?,
            "orders" => write(OrderArrow::new(OrderGenerator::new(sf, 1, 1)).with_batch_size(BATCH), &path)?,
            _ => write(LineItemArrow::new(LineItemGenerator::new(sf, 1, 1)).with_batch_size(BATCH), &path)?,
        };
        let bytes = std::fs::metadata(&path).map_err(|e| Error::io("read", &path, e))?.len();
        written.push(TableFile { table, path, rows, bytes });
    }
    Ok(written)
}

/// Makes sure `dir` holds the tables at scale factor `sf`, generating them unless all eight are
/// there; returns whether it generated them. Processes that call it at once for one `dir` take
/// turns on a lock file in it: one generates, the others then find the tables.
pub fn ensure(sf: f64, dir: &Path) -> Result<bool> {
    check_scale(sf)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io("create", dir, e))?;
    let lock_path = dir.join(".lock");
    let lock = File::create(&lock_path).map_err(|e| Error::io("create", &lock_path, e))?;
    lock.lock().map_err(|e| Error::io("lock", &lock_path, e))?;
    // Tables are renamed into place when complete, so present means whole.
    let have = TABLES.iter().all(|t| dir.join(format!("{t}.parquet")).is_file());
    if !have {
        generate(sf, dir)?;
    }
    Ok(!have)
}

fn check_scale(sf: f64) -> Result<()> {
    if sf.is_finite() && sf > 0.0 && sf <= 1000.0 { Ok(()) } else { Err(Error::BadScale { sf }) }
}

/// Rows per Parquet row group.
const ROW_GROUP_ROWS: usize = 128 * 1024;

/// Writes every batch of `reader` to a Parquet file at `path`; returns the rows.
fn write(reader: impl RecordBatchReader, path: &Path) -> Result<u64> {
    // Write beside, then rename: a half-written table is never left under the table's name.
    let partial = path.with_extension("parquet.partial");
    let file = File::create(&partial).map_err(|e| Error::io("create", &partial, e))?;
    // Row groups of 128 Ki rows: a scan splits over tasks by row group.
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(ROW_GROUP_ROWS))
        .build();
    let mut writer = ArrowWriter::try_new(file, reader.schema(), Some(props))?;
    let mut rows = 0;
    for batch in reader {
        let batch = batch?;
        rows += batch.num_rows() as u64;
        writer.write(&batch)?;
    }
    writer.close()?;
    std::fs::rename(&partial, path).map_err(|e| Error::io("rename", path, e))?;
    Ok(rows)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests fail loudly on purpose

    use super::*;

    #[test]
    fn ensure_generates_once_then_reuses_and_fills_in_a_missing_table() {
        let dir = tempfile::tempdir().unwrap();
        assert!(ensure(0.001, dir.path()).unwrap(), "an empty directory must be filled");
        let lineitem = dir.path().join("lineitem.parquet");
        let written = std::fs::metadata(&lineitem).unwrap().modified().unwrap();
        assert!(!ensure(0.001, dir.path()).unwrap(), "a complete set must be reused");
        assert_eq!(std::fs::metadata(&lineitem).unwrap().modified().unwrap(), written);
        std::fs::remove_file(dir.path().join("nation.parquet")).unwrap();
        assert!(ensure(0.001, dir.path()).unwrap(), "a missing table must be made again");
        assert!(TABLES.iter().all(|t| dir.path().join(format!("{t}.parquet")).is_file()));
        assert!(matches!(ensure(-1.0, dir.path()), Err(Error::BadScale { .. })));
    }
}
