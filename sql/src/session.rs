//! DataFusion sessions for Baton: planned for stages, with tables on `file://` or `s3://`.
//!
//! Tables come from `--table NAME=LOCATION` flags or a catalog file:
//!
//! ```toml
//! [tables]
//! lineitem = "s3://bucket/tpch/lineitem.parquet"
//! nation = { location = "/data/nation.csv", format = "csv" }
//! ```
//!
//! A location is a local path, a `file://` URL or an `s3://` URL (credentials and endpoint
//! from the usual `AWS_*` environment variables), naming one file or a directory of them. The
//! format is Parquet unless the location ends in `.csv` or one is given.

use std::collections::BTreeMap;
use std::path::Path;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::context::SessionContext;
use datafusion::prelude::{CsvReadOptions, ParquetReadOptions, SessionConfig};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// The largest build side (estimated bytes) a hash join broadcasts rather than partitions.
pub const BROADCAST_BYTES: usize = 10 << 20;

/// The largest build side in rows, where only a row count is estimated.
pub const BROADCAST_ROWS: usize = 1 << 20;

/// The session settings a stage's plan is made under (and run under, in a task).
pub fn config(partitions: usize) -> SessionConfig {
    let mut config = SessionConfig::new().with_target_partitions(partitions.max(1)).with_information_schema(true);
    let options = config.options_mut();
    // Exchanges are Baton's: no round-robin fan-out inside a stage, no order-preserving
    // repartitions. Dynamic filters stay on: within a stage a task runs its plan narrowed to
    // its partition (`narrow`), where a join's filter prunes the scan beside it as in one
    // process; a filter whose scan is in another stage stays empty there (`--explain` says so).
    options.optimizer.enable_round_robin_repartition = false;
    options.optimizer.prefer_existing_sort = false;
    // A task runs one partition of a scan: it must read that partition's files only, not take
    // over those of sibling partitions (which run in other tasks).
    options.execution.enable_file_stream_work_stealing = false;
    // Across processes a partitioned join moves both sides; a broadcast join moves only the
    // build side, once to each task. Broadcast build sides up to Spark's usual threshold
    // (DataFusion's in-process default, 1 MB, weighs in-memory repartitions, which are cheap).
    options.optimizer.hash_join_single_partition_threshold = BROADCAST_BYTES;
    options.optimizer.hash_join_single_partition_threshold_rows = BROADCAST_ROWS;
    config
}

/// A table's file format.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Apache Parquet.
    #[default]
    Parquet,
    /// CSV with a header line.
    Csv,
}

/// A table to register.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Table {
    /// Its name in queries.
    pub name: String,
    /// Where it is, as a URL (`file:///…`, `s3://…`).
    pub url: String,
    /// Its format.
    pub format: Format,
}

impl Table {
    /// A table at `location` (a local path or a URL), its format from `format` or the name.
    pub fn new(name: &str, location: &str, format: Option<Format>) -> Result<Self> {
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(Error::BadTable {
                table: name.to_string(),
                reason: "a table name is letters, digits and _".into(),
            });
        }
        let url = if location.contains("://") {
            location.to_string()
        } else {
            let path = std::path::absolute(Path::new(location)).map_err(|e| Error::io("resolve", location, e))?;
            if !path.exists() {
                return Err(Error::BadTable {
                    table: name.into(),
                    reason: format!("{} does not exist", path.display()),
                });
            }
            let dir = path.is_dir();
            let mut url = format!("file://{}", path.display());
            if dir && !url.ends_with('/') {
                url.push('/');
            }
            url
        };
        let format =
            format.unwrap_or(if split_query(&url).0.ends_with(".csv") { Format::Csv } else { Format::Parquet });
        Ok(Self { name: name.to_string(), url, format })
    }

    /// Parses `NAME=LOCATION`.
    pub fn parse(flag: &str) -> Result<Self> {
        let (name, location) = flag
            .split_once('=')
            .ok_or_else(|| Error::BadTable { table: flag.to_string(), reason: "expected NAME=LOCATION".into() })?;
        Self::new(name.trim(), location.trim(), None)
    }
}

/// A catalog file's contents.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Catalog {
    tables: BTreeMap<String, CatalogEntry>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum CatalogEntry {
    Location(String),
    Full {
        location: String,
        #[serde(default)]
        format: Option<Format>,
    },
}

/// The tables of the catalog file at `path`.
pub fn read_catalog(path: &Path) -> Result<Vec<Table>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
    let catalog: Catalog = toml::from_str(&text)
        .map_err(|e| Error::BadCatalog { path: path.to_path_buf(), reason: e.message().to_string() })?;
    // Relative locations are relative to the catalog file.
    let base = path.parent().unwrap_or(Path::new("."));
    catalog
        .tables
        .into_iter()
        .map(|(name, entry)| {
            let (location, format) = match entry {
                CatalogEntry::Location(l) => (l, None),
                CatalogEntry::Full { location, format } => (location, format),
            };
            let location = if location.contains("://") { location } else { base.join(&location).display().to_string() };
            Table::new(&name, &location, format)
        })
        .collect()
}

/// The eight TPC-H tables as `baton tpch gen` wrote them into `dir`.
pub fn tpch_tables(dir: &Path) -> Result<Vec<Table>> {
    crate::tpch::TABLES
        .iter()
        .map(|t| Table::new(t, &dir.join(format!("{t}.parquet")).display().to_string(), Some(Format::Parquet)))
        .collect()
}

/// Registers the object store of every non-local table location with `ctx`.
pub fn register_stores(ctx: &SessionContext, urls: &[String]) -> Result<()> {
    for url in urls {
        if url.starts_with("file://") {
            continue;
        }
        // The store's settings ride in the URL's query (`?aws_endpoint=…`): they open the store,
        // and DataFusion sees the location without them.
        let (location, query) = split_query(url);
        let parsed = ListingTableUrl::parse(location)?;
        let base = parsed.object_store();
        let with_settings = query.map_or_else(|| base.as_str().to_string(), |q| format!("{}?{q}", base.as_str()));
        let (store, _) = baton_connectors::open_url(&with_settings)?;
        ctx.register_object_store(base.as_ref(), store);
    }
    Ok(())
}

/// A location and the store settings in its query, if any.
fn split_query(url: &str) -> (&str, Option<&str>) {
    url.split_once('?').map_or((url, None), |(location, query)| (location, Some(query)))
}

/// Registers `tables` with `ctx` (and the stores they live in).
pub async fn register(ctx: &SessionContext, tables: &[Table]) -> Result<()> {
    let urls: Vec<String> = tables.iter().map(|t| t.url.clone()).collect();
    register_stores(ctx, &urls)?;
    for t in tables {
        let (location, _) = split_query(&t.url);
        let done = match t.format {
            Format::Parquet => ctx.register_parquet(&t.name, location, ParquetReadOptions::default()).await,
            Format::Csv => ctx.register_csv(&t.name, location, CsvReadOptions::new().has_header(true)).await,
        };
        done.map_err(|e| Error::BadTable { table: t.name.clone(), reason: format!("{location}: {e}") })?;
    }
    Ok(())
}
