//! Per-step metrics as JSONL (one object per line, flushed as written), the record plots and
//! reports are drawn from and what an interrupted run leaves behind.

use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::Path;

use serde::Serialize;
use serde_json::{Map, Value};

/// Appends metric lines to `<run>/metrics.jsonl`.
#[derive(Debug)]
pub struct Metrics {
    out: BufWriter<File>,
    /// Every line written, for the report.
    pub lines: Vec<Value>,
}

impl Metrics {
    pub fn create(path: &Path) -> std::io::Result<Self> {
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        Ok(Self {
            out: BufWriter::new(file),
            lines: Vec::new(),
        })
    }

    /// Writes `{"phase": phase, "step": step, ...fields}`.
    pub fn log(&mut self, phase: &str, step: usize, fields: impl Serialize) -> std::io::Result<()> {
        let mut line = Map::new();
        line.insert("phase".into(), Value::from(phase));
        line.insert("step".into(), Value::from(step));
        if let Ok(Value::Object(extra)) = serde_json::to_value(fields) {
            line.extend(extra);
        }
        let line = Value::Object(line);
        serde_json::to_writer(&mut self.out, &line)?;
        self.out.write_all(b"\n")?;
        self.out.flush()?;
        self.lines.push(line);
        Ok(())
    }
}
