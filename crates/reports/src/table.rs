//! One table writer for the four formats, fed row by row so large exports stream:
//! JSON objects (the caller wraps them), CSV per RFC 4180 (header row, quoting, CRLF), TSV
//! (header row, no tabs or line breaks inside fields) and text (aligned columns).

use std::io::Write;

use crate::query::Format;

/// One value of a row.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cell<'a> {
    Int(i64),
    Str(&'a str),
    /// A ratio, printed with 4 decimals; `None` when undefined (nothing to divide by).
    Ratio(Option<f64>),
}

impl Cell<'_> {
    fn text(&self) -> String {
        match self {
            Cell::Int(n) => n.to_string(),
            Cell::Str(s) => (*s).to_owned(),
            Cell::Ratio(Some(r)) => format!("{r:.4}"),
            Cell::Ratio(None) => String::new(),
        }
    }
}

/// A column: its name, and its width in text tables.
pub type Column = (&'static str, usize);

enum Sink {
    Json {
        first: bool,
    },
    /// CSV, or TSV when `tsv`.
    Csv {
        w: Box<csv::Writer<Vec<u8>>>,
        tsv: bool,
    },
    Text,
}

pub struct TableWriter {
    columns: &'static [Column],
    sink: Sink,
    out: Vec<u8>,
}

/// A CSV writer per RFC 4180 (quoting as needed, CRLF), or a TSV writer (no quoting).
fn csv_writer(tsv: bool) -> csv::Writer<Vec<u8>> {
    let mut builder = csv::WriterBuilder::new();
    if tsv {
        builder.delimiter(b'\t').quote_style(csv::QuoteStyle::Never);
    } else {
        builder.terminator(csv::Terminator::CRLF);
    }
    builder.from_writer(Vec::new())
}

/// TSV fields cannot hold tabs or line breaks: they become spaces.
fn tsv_field(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains(['\t', '\n', '\r']) {
        text.replace(['\t', '\n', '\r'], " ").into()
    } else {
        text.into()
    }
}

impl TableWriter {
    /// A writer with the header already written (CSV, TSV, text); JSON writes only the row
    /// objects, comma-separated, for the caller to wrap.
    pub fn new(format: Format, columns: &'static [Column]) -> Self {
        let sink = match format {
            Format::Json => Sink::Json { first: true },
            Format::Csv => Sink::Csv {
                w: Box::new(csv_writer(false)),
                tsv: false,
            },
            Format::Tsv => Sink::Csv {
                w: Box::new(csv_writer(true)),
                tsv: true,
            },
            Format::Text => Sink::Text,
        };
        let mut writer = Self {
            columns,
            sink,
            out: Vec::new(),
        };
        match &mut writer.sink {
            Sink::Json { .. } => {}
            Sink::Csv { w, .. } => {
                let _ = w.write_record(columns.iter().map(|(name, _)| *name));
            }
            Sink::Text => {
                let names: Vec<Cell> = columns.iter().map(|(n, _)| Cell::Str(n)).collect();
                writer.text_line(&names);
                let rule: Vec<String> = columns.iter().map(|(_, w)| "-".repeat(*w)).collect();
                let rule: Vec<Cell> = rule.iter().map(|r| Cell::Str(r)).collect();
                writer.text_line(&rule);
            }
        }
        writer
    }

    fn text_line(&mut self, cells: &[Cell]) {
        let mut line = String::new();
        for (i, (cell, (_, width))) in cells.iter().zip(self.columns).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            let text = cell.text();
            let pad = width.saturating_sub(text.chars().count());
            let last = i + 1 == self.columns.len();
            match cell {
                Cell::Int(_) | Cell::Ratio(_) => {
                    line.extend(std::iter::repeat_n(' ', pad));
                    line.push_str(&text);
                }
                Cell::Str(_) => {
                    line.push_str(&text);
                    if !last {
                        line.extend(std::iter::repeat_n(' ', pad));
                    }
                }
            }
        }
        self.out.extend_from_slice(line.trim_end().as_bytes());
        self.out.push(b'\n');
    }

    /// Writes one row; `cells` follow the columns.
    pub fn row(&mut self, cells: &[Cell]) {
        match &mut self.sink {
            Sink::Json { first } => {
                if !*first {
                    self.out.push(b',');
                }
                *first = false;
                self.out.push(b'{');
                for (i, (cell, (name, _))) in cells.iter().zip(self.columns).enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    let _ = write!(self.out, "\"{name}\":");
                    let _ = match cell {
                        Cell::Int(n) => write!(self.out, "{n}"),
                        Cell::Str(s) => serde_json::to_writer(&mut self.out, s).map_err(Into::into),
                        Cell::Ratio(Some(r)) => write!(self.out, "{r:.4}"),
                        Cell::Ratio(None) => self.out.write_all(b"null"),
                    };
                }
                self.out.push(b'}');
            }
            Sink::Csv { w, tsv } => {
                // Field by field, without a String per cell: exports write millions of rows.
                let mut int = itoa::Buffer::new();
                for cell in cells {
                    let _ = match cell {
                        Cell::Int(n) => w.write_field(int.format(*n)),
                        Cell::Str(s) if *tsv => w.write_field(tsv_field(s).as_bytes()),
                        Cell::Str(s) => w.write_field(s),
                        Cell::Ratio(_) => w.write_field(cell.text()),
                    };
                }
                let _ = w.write_record(None::<&[u8]>);
            }
            Sink::Text => self.text_line(cells),
        }
    }

    /// Bytes written so far, handed over (the writer keeps going).
    pub fn take(&mut self) -> Vec<u8> {
        if let Sink::Csv { w, tsv } = &mut self.sink {
            // Writing into a Vec cannot fail; the writer is replaced by a fresh one.
            let full = std::mem::replace(w.as_mut(), csv_writer(*tsv));
            return full.into_inner().unwrap_or_default();
        }
        std::mem::take(&mut self.out)
    }

    /// Bytes waiting to be taken (roughly, for CSV/TSV which buffer inside).
    pub fn buffered(&self) -> usize {
        match &self.sink {
            Sink::Csv { w, .. } => w.get_ref().len(),
            _ => self.out.len(),
        }
    }
}
