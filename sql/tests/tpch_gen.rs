//! TPC-H generation writes eight Parquet tables with the specification's cardinalities.
#![allow(clippy::unwrap_used)]

use baton_sql::tpch::{QUERIES, TABLES, generate};
use parquet::file::reader::{FileReader, SerializedFileReader};

#[test]
fn tables_have_the_cardinalities_of_the_scale_factor() {
    let dir = tempfile::tempdir().unwrap();
    let written = generate(0.01, dir.path()).unwrap();
    assert_eq!(written.iter().map(|t| t.table).collect::<Vec<_>>(), TABLES.to_vec());
    for t in &written {
        // What the file says, not what the writer counted.
        let reader = SerializedFileReader::new(std::fs::File::open(&t.path).unwrap()).unwrap();
        let rows = reader.metadata().file_metadata().num_rows() as u64;
        assert_eq!(rows, t.rows, "{}", t.table);
        let expected = match t.table {
            "region" => Some(5),
            "nation" => Some(25),
            "supplier" => Some(100),
            "customer" => Some(1_500),
            "part" => Some(2_000),
            "partsupp" => Some(8_000),
            "orders" => Some(15_000),
            _ => None,
        };
        match expected {
            Some(n) => assert_eq!(rows, n, "{}", t.table),
            // One to seven lines per order.
            None => assert!((15_000..=7 * 15_000).contains(&rows), "lineitem has {rows} rows"),
        }
        assert!(!t.path.with_extension("parquet.partial").exists());
    }
}

#[test]
fn a_bad_scale_factor_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for sf in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        assert!(matches!(generate(sf, dir.path()), Err(baton_sql::Error::BadScale { .. })), "{sf}");
    }
}

#[test]
fn the_22_queries_are_there() {
    assert_eq!(QUERIES.len(), 22);
    for (name, sql) in QUERIES {
        assert!(sql.to_lowercase().contains("select"), "{name}");
    }
}
