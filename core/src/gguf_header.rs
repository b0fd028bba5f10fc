//! A GGUF header reader that trusts nothing in the file: every length, count and offset it
//! reads is checked against the bytes the file actually has (and fixed caps) before anything is
//! allocated or skipped. Adapters arrive from training jobs, registries and operators; candle's
//! and llama.cpp's readers allocate whatever a header claims (a huge string length aborts the
//! process, `general.alignment = 0` divides by zero), so a file is read here first and handed
//! to them only once its header is sane.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

const MAGIC: [u8; 4] = *b"GGUF";
/// Longest metadata key or tensor name accepted.
const MAX_NAME: u64 = 64 * 1024;
/// Longest string value accepted (chat templates are the longest real ones, a few KiB).
const MAX_STRING: u64 = 16 << 20;
/// GGML allows at most 4 dimensions.
const MAX_DIMS: u32 = 4;
/// Arrays inside arrays, at most this deep.
const MAX_ARRAY_DEPTH: u32 = 2;
pub const DEFAULT_ALIGNMENT: u64 = 32;

/// A scalar or string metadata value (arrays are checked and skipped, not kept).
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    Int(i128),
    Float(f64),
    Bool(bool),
    Str(String),
    Array,
}

impl MetaValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Self::Str(s) => Some(s),
            _ => None,
        }
    }
}

/// One tensor's description: GGUF's dimension order (`ne`, innermost first) and ggml type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ggml_type: u32,
    /// Offset inside the data section.
    pub offset: u64,
}

/// What the header says, once every length in it was found consistent with the file.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufHeader {
    pub version: u32,
    pub metadata: BTreeMap<String, MetaValue>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Where the data section starts in the file.
    pub data_start: u64,
    pub file_len: u64,
}

/// How strictly tensor data is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataCheck {
    /// Every tensor's type is one this reader knows the size of, and its bytes lie inside the
    /// file, aligned (what an adapter must satisfy before it is loaded).
    Extents,
    /// Names and shapes only (a base model already loaded by llama.cpp, whose quantisation
    /// types may be newer than this table).
    ShapesOnly,
}

/// Elements per block and bytes per block of the ggml types adapters are written in.
fn type_size(ggml_type: u32) -> Option<(u64, u64)> {
    match ggml_type {
        0 => Some((1, 4)),   // F32
        1 => Some((1, 2)),   // F16
        8 => Some((32, 34)), // Q8_0
        30 => Some((1, 2)),  // BF16
        _ => None,
    }
}

struct Reader {
    inner: BufReader<File>,
    pos: u64,
    len: u64,
}

impl Reader {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn bytes<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.inner
            .read_exact(&mut b)
            .map_err(|_| format!("truncated at byte {}", self.pos))?;
        self.pos += N as u64;
        Ok(b)
    }

    fn u32(&mut self) -> Result<u32, String> {
        self.bytes::<4>().map(u32::from_le_bytes)
    }

    fn u64(&mut self) -> Result<u64, String> {
        self.bytes::<8>().map(u64::from_le_bytes)
    }

    /// A count of items of at least `min_size` bytes each, which the rest of the file must be
    /// able to hold.
    fn count(&mut self, what: &str, min_size: u64) -> Result<u64, String> {
        let at = self.pos;
        let n = self.u64()?;
        if n.checked_mul(min_size).is_none_or(|b| b > self.remaining()) {
            return Err(format!(
                "{what} {n} at byte {at} is more than the {} bytes left can hold",
                self.remaining()
            ));
        }
        Ok(n)
    }

    fn string(&mut self, what: &str, max: u64) -> Result<String, String> {
        let n = self.count(what, 1)?;
        if n > max {
            return Err(format!(
                "{what} of {n} bytes at byte {} is over the {max}-byte limit",
                self.pos - 8
            ));
        }
        let mut buf = vec![0u8; n as usize];
        self.inner
            .read_exact(&mut buf)
            .map_err(|_| format!("truncated {what} at byte {}", self.pos))?;
        self.pos += n;
        String::from_utf8(buf).map_err(|_| format!("{what} before byte {} is not UTF-8", self.pos))
    }

    fn skip(&mut self, n: u64) -> Result<(), String> {
        if n > self.remaining() {
            return Err(format!("truncated at byte {}", self.pos));
        }
        let n = i64::try_from(n).map_err(|_| "offset overflow".to_string())?;
        self.inner
            .seek_relative(n)
            .map_err(|e| format!("seek: {e}"))?;
        self.pos += n as u64;
        Ok(())
    }

    /// One value of type `t`; arrays are walked (every element checked) and dropped.
    fn value(&mut self, t: u32, depth: u32) -> Result<MetaValue, String> {
        Ok(match t {
            0 => MetaValue::Int(self.bytes::<1>()?[0].into()),
            1 => MetaValue::Int(i8::from_le_bytes(self.bytes::<1>()?).into()),
            2 => MetaValue::Int(u16::from_le_bytes(self.bytes::<2>()?).into()),
            3 => MetaValue::Int(i16::from_le_bytes(self.bytes::<2>()?).into()),
            4 => MetaValue::Int(self.u32()?.into()),
            5 => MetaValue::Int(i32::from_le_bytes(self.bytes::<4>()?).into()),
            6 => MetaValue::Float(f32::from_le_bytes(self.bytes::<4>()?).into()),
            7 => match self.bytes::<1>()?[0] {
                0 => MetaValue::Bool(false),
                1 => MetaValue::Bool(true),
                b => return Err(format!("bool value {b} before byte {}", self.pos)),
            },
            8 => MetaValue::Str(self.string("string length", MAX_STRING)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(format!("arrays nested too deep at byte {}", self.pos));
                }
                let inner = self.u32()?;
                let min = match inner {
                    0 | 1 | 7 => 1,
                    2 | 3 => 2,
                    4..=6 => 4,
                    8..=12 => 8,
                    other => return Err(format!("unknown array element type {other}")),
                };
                let n = self.count("array length", min)?;
                match inner {
                    // Fixed-size elements: skipped in one seek.
                    0..=7 | 10..=12 => self.skip(n * min)?,
                    _ => {
                        for _ in 0..n {
                            self.value(inner, depth + 1)?;
                        }
                    }
                }
                MetaValue::Array
            }
            10 => MetaValue::Int(self.u64()?.into()),
            11 => MetaValue::Int(i64::from_le_bytes(self.bytes::<8>()?).into()),
            12 => MetaValue::Float(f64::from_le_bytes(self.bytes::<8>()?)),
            other => {
                return Err(format!(
                    "unknown value type {other} before byte {}",
                    self.pos
                ))
            }
        })
    }
}

impl GgufHeader {
    /// Reads and checks `path`'s header; `Err` says what is wrong and where.
    pub fn read(path: &Path, data: DataCheck) -> Result<Self, String> {
        let file = File::open(path).map_err(|e| e.to_string())?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        let mut r = Reader {
            inner: BufReader::new(file),
            pos: 0,
            len,
        };
        if r.bytes::<4>()
            .map_err(|_| "shorter than a GGUF header".to_string())?
            != MAGIC
        {
            return Err("not a GGUF file (bad magic)".into());
        }
        let version = r.u32()?;
        if !(2..=3).contains(&version) {
            return Err(format!("unsupported GGUF version {version}"));
        }
        // Smallest tensor info: name length, no name, n_dims, type, offset.
        let n_tensors = r.count("tensor count", 8 + 4 + 4 + 8)?;
        // Smallest key-value: key length, no key, type, one byte.
        let n_kv = r.count("metadata count", 8 + 4 + 1)?;
        let mut metadata = BTreeMap::new();
        for _ in 0..n_kv {
            let key = r.string("key length", MAX_NAME)?;
            let t = r.u32()?;
            let v = r.value(t, 0)?;
            if metadata.insert(key.clone(), v).is_some() {
                return Err(format!("metadata key {key} appears twice"));
            }
        }
        let mut tensors = Vec::with_capacity(n_tensors as usize);
        for _ in 0..n_tensors {
            let name = r.string("tensor name length", MAX_NAME)?;
            let n_dims = r.u32()?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(format!("tensor {name} has {n_dims} dimensions"));
            }
            let dims = (0..n_dims)
                .map(|_| r.u64())
                .collect::<Result<Vec<_>, _>>()?;
            if dims.contains(&0) {
                return Err(format!("tensor {name} has an empty dimension: {dims:?}"));
            }
            let ggml_type = r.u32()?;
            let offset = r.u64()?;
            tensors.push(TensorInfo {
                name,
                dims,
                ggml_type,
                offset,
            });
        }
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(MetaValue::Int(a)) if *a > 0 && (*a as u64).is_power_of_two() && *a <= 1 << 20 => {
                *a as u64
            }
            Some(other) => {
                return Err(format!(
                    "general.alignment must be a power of two up to 1 MiB, found {other:?}"
                ))
            }
        };
        let data_start = r.pos.div_ceil(alignment) * alignment;
        let header = Self {
            version,
            metadata,
            tensors,
            alignment,
            data_start,
            file_len: len,
        };
        if data == DataCheck::Extents {
            header.check_extents()?;
        }
        Ok(header)
    }

    /// Each tensor's bytes are aligned, inside the file, and of a known type.
    pub fn check_extents(&self) -> Result<(), String> {
        let data_len = self.file_len.saturating_sub(self.data_start);
        for t in &self.tensors {
            let (block, size) = type_size(t.ggml_type)
                .ok_or_else(|| format!("tensor {} has unsupported type {}", t.name, t.ggml_type))?;
            let elements = t
                .dims
                .iter()
                .try_fold(1u64, |acc, d| acc.checked_mul(*d))
                .ok_or_else(|| format!("tensor {} dimensions overflow", t.name))?;
            if t.dims[0] % block != 0 {
                return Err(format!("tensor {} rows are not whole blocks", t.name));
            }
            let bytes = (elements / block)
                .checked_mul(size)
                .ok_or_else(|| format!("tensor {} size overflows", t.name))?;
            if t.offset % self.alignment != 0 {
                return Err(format!(
                    "tensor {} offset {} is not aligned",
                    t.name, t.offset
                ));
            }
            if t.offset.checked_add(bytes).is_none_or(|end| end > data_len) {
                return Err(format!(
                    "tensor {} ({} bytes at offset {}) runs past the end of the file",
                    t.name, bytes, t.offset
                ));
            }
        }
        Ok(())
    }

    /// A string metadata value.
    pub fn string(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(MetaValue::as_str)
    }
}
