//! A small column table: what the CLI writes as CSV (metadata, training logs, predictions,
//! per-speaker accuracy) and the notebook shows as a polars `DataFrame`.
//!
//! Why not polars everywhere: polars was a third of a cold release build (571 s of 1,757 s of
//! compile time on 2 cores, support/RESULTS.md) for tables of a few columns that are only
//! written out. The notebook, where tables are looked at, still gets `DataFrame`s
//! ([`Table::to_frame`], feature `notebook`).

use std::fmt;
use std::path::Path;

/// One column's values; `None` is a missing value (an empty CSV field, a polars null).
#[derive(Debug, Clone, PartialEq)]
pub enum Values {
    Int(Vec<Option<i64>>),
    Float(Vec<Option<f64>>),
    Text(Vec<Option<String>>),
    Bool(Vec<bool>),
}

impl Values {
    fn len(&self) -> usize {
        match self {
            Values::Int(v) => v.len(),
            Values::Float(v) => v.len(),
            Values::Text(v) => v.len(),
            Values::Bool(v) => v.len(),
        }
    }

    /// The CSV field of row `i` (floats keep a decimal point: `1.0`, not `1`).
    fn field(&self, i: usize) -> String {
        match self {
            Values::Int(v) => v[i].map(|x| x.to_string()).unwrap_or_default(),
            Values::Float(v) => v[i].map(|x| format!("{x:?}")).unwrap_or_default(),
            Values::Text(v) => v[i].clone().unwrap_or_default(),
            Values::Bool(v) => v[i].to_string(),
        }
    }
}

/// Named columns of equal length, in order.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Table {
    columns: Vec<(String, Values)>,
}

impl Table {
    pub fn new() -> Self {
        Self::default()
    }

    /// Add a column. Panics when its length differs from the columns before it: tables are
    /// built by our code from one list of rows, so a mismatch is a bug, not an input error.
    pub fn with(mut self, name: &str, values: Values) -> Self {
        if let Some((first, v)) = self.columns.first() {
            assert_eq!(v.len(), values.len(), "column {name} has another length than {first}");
        }
        self.columns.push((name.to_string(), values));
        self
    }

    pub fn int<T: Into<Option<i64>>>(self, name: &str, values: impl IntoIterator<Item = T>) -> Self {
        self.with(name, Values::Int(values.into_iter().map(Into::into).collect()))
    }

    pub fn float<T: Into<Option<f64>>>(self, name: &str, values: impl IntoIterator<Item = T>) -> Self {
        self.with(name, Values::Float(values.into_iter().map(Into::into).collect()))
    }

    pub fn text<T: Into<Option<String>>>(self, name: &str, values: impl IntoIterator<Item = T>) -> Self {
        self.with(name, Values::Text(values.into_iter().map(Into::into).collect()))
    }

    pub fn bool(self, name: &str, values: impl IntoIterator<Item = bool>) -> Self {
        self.with(name, Values::Bool(values.into_iter().collect()))
    }

    pub fn height(&self) -> usize {
        self.columns.first().map_or(0, |(_, v)| v.len())
    }

    pub fn names(&self) -> Vec<&str> {
        self.columns.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// The column called `name`.
    pub fn column(&self, name: &str) -> Option<&Values> {
        self.columns.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }

    fn row(&self, i: usize) -> Vec<String> {
        self.columns.iter().map(|(_, v)| v.field(i)).collect()
    }

    /// The table as CSV text (RFC 4180: a header line, fields quoted where they must be).
    pub fn to_csv(&self) -> anyhow::Result<String> {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(self.names())?;
        for i in 0..self.height() {
            w.write_record(self.row(i))?;
        }
        Ok(String::from_utf8(w.into_inner().map_err(|e| anyhow::anyhow!("{e}"))?)?)
    }

    /// Write the table as CSV, atomically (a killed run never leaves half a file).
    pub fn write_csv(&self, path: &Path) -> anyhow::Result<()> {
        super::write_text(path, &self.to_csv()?)
    }

    #[cfg(feature = "notebook")]
    /// The same table as a polars `DataFrame` (what the notebook displays).
    pub fn to_frame(&self) -> polars::prelude::PolarsResult<polars::prelude::DataFrame> {
        use polars::prelude::{Column, DataFrame};
        let cols = self.columns.iter().map(|(n, v)| {
            let name = n.as_str().into();
            match v {
                Values::Int(v) => Column::new(name, v),
                Values::Float(v) => Column::new(name, v),
                Values::Text(v) => Column::new(name, v),
                Values::Bool(v) => Column::new(name, v),
            }
        });
        DataFrame::new_infer_height(cols.collect())
    }
}

/// Aligned columns; long tables show their first and last 5 rows.
impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.height();
        writeln!(f, "{n} rows x {} columns", self.columns.len())?;
        let shown: Vec<Option<usize>> = if n <= 10 {
            (0..n).map(Some).collect()
        } else {
            (0..5).map(Some).chain([None]).chain((n - 5..n).map(Some)).collect()
        };
        let cells: Vec<Vec<String>> = std::iter::once(self.names().iter().map(|s| s.to_string()).collect())
            .chain(shown.iter().map(|r| match r {
                Some(i) => self.row(*i),
                None => vec!["…".to_string(); self.columns.len()],
            }))
            .collect();
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| cells.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &cells {
            let line: Vec<String> = row.iter().zip(&widths).map(|(s, w)| format!("{s:<w$}")).collect();
            writeln!(f, "{}", line.join("  ").trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        Table::new()
            .text("speaker", ["a, the first".to_string(), "b \"quoted\"".to_string()])
            .int("take", [Some(1), None])
            .float("accuracy", [1.0, 0.25])
            .bool("training only", [true, false])
    }

    #[test]
    fn csv_quotes_what_must_be_quoted_and_leaves_missing_values_empty() {
        let text = sample().to_csv().unwrap();
        assert_eq!(
            text,
            "speaker,take,accuracy,training only\n\"a, the first\",1,1.0,true\n\"b \"\"quoted\"\"\",,0.25,false\n"
        );
        let mut r = csv::Reader::from_reader(text.as_bytes());
        let rows: Vec<csv::StringRecord> = r.records().map(|r| r.unwrap()).collect();
        assert_eq!(&rows[1][0], "b \"quoted\"");
    }

    #[test]
    fn display_shows_the_ends_of_a_long_table() {
        let t = Table::new().int("n", (0..25).map(Some));
        let text = t.to_string();
        assert!(text.starts_with("25 rows x 1 columns\nn\n0\n"), "{text}");
        assert!(text.contains("…") && text.trim_end().ends_with("24") && !text.contains("\n12\n"), "{text}");
        assert_eq!(sample().height(), 2);
    }

    #[test]
    #[should_panic(expected = "another length")]
    fn columns_of_different_lengths_are_a_bug() {
        let _ = Table::new().int("a", [1]).int("b", [1, 2]);
    }

    #[cfg(feature = "notebook")]
    #[test]
    fn the_frame_has_the_same_columns_and_nulls() {
        let df = sample().to_frame().unwrap();
        assert_eq!(df.shape(), (2, 4));
        assert_eq!(df.column("take").unwrap().null_count(), 1);
        assert_eq!(df.column("accuracy").unwrap().f64().unwrap().get(1), Some(0.25));
    }
}
