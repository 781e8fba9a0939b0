//! Query results compared across engines: each value as text, floats within a relative
//! tolerance (engines sum in different orders), everything else — decimals too — exactly.

use arrow_array::{Array, RecordBatch};
use arrow_schema::{ArrowError, DataType};
use datafusion::arrow::util::display::array_value_to_string;

/// A value as compared.
#[derive(Debug, Clone, PartialEq, PartialOrd)]
pub enum Cell {
    /// SQL NULL.
    Null,
    /// A float, compared within [`FLOAT_TOLERANCE`] of the larger magnitude.
    Float(f64),
    /// Anything else, as Arrow displays it.
    Text(String),
}

/// Relative tolerance of float comparisons.
pub const FLOAT_TOLERANCE: f64 = 1e-9;

/// The rows of `batches`, in their order.
pub fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<Cell>>, ArrowError> {
    let mut rows = Vec::new();
    for b in batches {
        for r in 0..b.num_rows() {
            let mut row = Vec::with_capacity(b.num_columns());
            for c in b.columns() {
                row.push(if c.is_null(r) {
                    Cell::Null
                } else if matches!(c.data_type(), DataType::Float16 | DataType::Float32 | DataType::Float64) {
                    let text = array_value_to_string(c, r)?;
                    Cell::Float(text.parse().map_err(|e| ArrowError::ParseError(format!("{text:?}: {e}")))?)
                } else {
                    Cell::Text(array_value_to_string(c, r)?)
                });
            }
            rows.push(row);
        }
    }
    Ok(rows)
}

/// `rows` in a canonical order (for results whose order the query leaves open).
pub fn sorted(mut rows: Vec<Vec<Cell>>) -> Vec<Vec<Cell>> {
    rows.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    rows
}

/// Whether `a` and `b` hold the same rows in the same order; the first difference if not.
pub fn same_rows(a: &[Vec<Cell>], b: &[Vec<Cell>]) -> Result<(), String> {
    if a.len() != b.len() {
        return Err(format!("{} rows vs {}", a.len(), b.len()));
    }
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        let same = x.len() == y.len()
            && x.iter().zip(y).all(|(p, q)| match (p, q) {
                (Cell::Float(p), Cell::Float(q)) => (p - q).abs() <= FLOAT_TOLERANCE * p.abs().max(q.abs()).max(1.0),
                _ => p == q,
            });
        if !same {
            return Err(format!("row {i}: {x:?} vs {y:?}"));
        }
    }
    Ok(())
}

/// Whether two results hold the same rows, in any order.
pub fn same_result(a: &[RecordBatch], b: &[RecordBatch]) -> Result<(), String> {
    let a = rows(a).map_err(|e| e.to_string())?;
    let b = rows(b).map_err(|e| e.to_string())?;
    same_rows(&sorted(a), &sorted(b))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::sync::Arc;

    use arrow_array::{Float64Array, Int32Array};
    use arrow_schema::{Field, Schema};

    use super::*;

    fn batch(ints: Vec<Option<i32>>, floats: Vec<f64>) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("i", DataType::Int32, true),
            Field::new("f", DataType::Float64, false),
        ]));
        RecordBatch::try_new(schema, vec![Arc::new(Int32Array::from(ints)), Arc::new(Float64Array::from(floats))])
            .unwrap()
    }

    #[test]
    fn order_and_float_rounding_do_not_matter_but_values_do() {
        let a = [batch(vec![Some(1), None], vec![0.1 + 0.2, 2.0])];
        let b = [batch(vec![None, Some(1)], vec![2.0, 0.3])];
        same_result(&a, &b).unwrap();
        assert!(same_rows(&rows(&a).unwrap(), &rows(&b).unwrap()).is_err(), "the order differs");
        let c = batch(vec![Some(2), None], vec![0.3, 2.0]);
        assert!(same_result(&a, &[c]).unwrap_err().contains("Text(\"1\")"));
        let d = batch(vec![Some(1)], vec![0.3]);
        assert_eq!(same_result(&a, &[d]).unwrap_err(), "2 rows vs 1");
        let e = batch(vec![Some(1), None], vec![0.3001, 2.0]);
        assert!(same_result(&a, &[e]).is_err(), "a float off by more than the tolerance");
    }
}
