//! Whether a LoRA adapter file may be handed to llama.cpp for a given base model: its digest is
//! the one recorded for it, it was trained for this base, and its header (read by the bounded
//! reader in [`crate::gguf_header`]) describes a llama.cpp LoRA adapter of the base's
//! architecture whose tensor pairs fit the base's tensors. Checked before any other parser
//! reads the file, so a truncated, corrupt or foreign file is a refusal, never a crash.

use std::collections::HashMap;
use std::path::Path;

use crate::gguf_header::{DataCheck, GgufHeader};
use crate::registry::sha256_file;

/// What the adapter is expected to be, from the registry that names it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expected<'a> {
    /// Recorded digest of the file.
    pub sha256: Option<&'a str>,
    /// Recorded base model (a registry id or a path), checked against the served one.
    pub base_model: Option<&'a str>,
}

/// The base model an adapter is checked against.
#[derive(Debug, Clone, Copy)]
pub struct Base<'a> {
    /// Registry id of the served model.
    pub id: &'a str,
    pub path: &'a Path,
}

/// Why an adapter was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdapterRejected {
    #[error("cannot read {0}")]
    Unreadable(String),
    #[error("sha256 {actual} is not the recorded {expected}")]
    Digest { expected: String, actual: String },
    #[error("trained for base model {recorded}, not the served {served}")]
    BaseModel { recorded: String, served: String },
    #[error("malformed GGUF header: {0}")]
    Header(String),
    #[error("not a llama.cpp LoRA adapter: {0}")]
    NotLora(String),
    #[error("architecture {adapter} does not match the base model's {base}")]
    Architecture { adapter: String, base: String },
    #[error("tensor shapes do not fit the base model: {0}")]
    Shapes(String),
}

/// Summary of an accepted adapter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    pub sha256: String,
    pub rank: u64,
    /// Base tensors the adapter changes.
    pub targets: usize,
}

/// Checks `adapter` for `base` (see the module docs); reads the adapter twice (digest, header)
/// and the base model's header once.
pub fn check_adapter(
    adapter: &Path,
    base: Base<'_>,
    expected: Expected<'_>,
) -> Result<Accepted, AdapterRejected> {
    let sha256 = sha256_file(adapter)
        .map_err(|e| AdapterRejected::Unreadable(format!("{}: {e}", adapter.display())))?;
    if let Some(want) = expected.sha256.filter(|s| !s.is_empty()) {
        if !want.eq_ignore_ascii_case(&sha256) {
            return Err(AdapterRejected::Digest {
                expected: want.to_owned(),
                actual: sha256,
            });
        }
    }
    if let Some(recorded) = expected.base_model.filter(|s| !s.is_empty()) {
        if !names_base(recorded, base) {
            return Err(AdapterRejected::BaseModel {
                recorded: recorded.to_owned(),
                served: base.id.to_owned(),
            });
        }
    }
    let header =
        GgufHeader::read(adapter, DataCheck::ShapesOnly).map_err(AdapterRejected::Header)?;
    for (key, want) in [("general.type", "adapter"), ("adapter.type", "lora")] {
        match header.string(key) {
            Some(v) if v == want => {}
            other => {
                return Err(AdapterRejected::NotLora(format!(
                    "{key} is {other:?}, not \"{want}\""
                )))
            }
        }
    }
    header.check_extents().map_err(AdapterRejected::Header)?;
    let base_header = GgufHeader::read(base.path, DataCheck::ShapesOnly)
        .map_err(|e| AdapterRejected::Unreadable(format!("{}: {e}", base.path.display())))?;
    let arch = header.string("general.architecture").unwrap_or("");
    let base_arch = base_header.string("general.architecture").unwrap_or("");
    if arch != base_arch {
        return Err(AdapterRejected::Architecture {
            adapter: arch.to_owned(),
            base: base_arch.to_owned(),
        });
    }
    let (rank, targets) = check_shapes(&header, &base_header).map_err(AdapterRejected::Shapes)?;
    Ok(Accepted {
        sha256,
        rank,
        targets,
    })
}

/// A recorded base (registry id, or the path the trainer was given) names the served model.
fn names_base(recorded: &str, base: Base<'_>) -> bool {
    if recorded == base.id {
        return true;
    }
    let same_file = |p: &Path| match (p.canonicalize(), base.path.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    };
    let recorded = Path::new(recorded);
    same_file(recorded)
        || recorded
            .file_name()
            .is_some_and(|n| Some(n) == base.path.file_name())
}

/// The dimensions of a base tensor's lora_a and lora_b, as found.
type Pair<'a> = (Option<&'a [u64]>, Option<&'a [u64]>);

/// Every tensor is `<base tensor>.lora_a` (ne = [in, rank]) or `.lora_b` (ne = [rank, out]),
/// in pairs over a 2-D base tensor of ne = [in, out], all of one rank.
fn check_shapes(adapter: &GgufHeader, base: &GgufHeader) -> Result<(u64, usize), String> {
    let base_dims: HashMap<&str, &[u64]> = base
        .tensors
        .iter()
        .map(|t| (t.name.as_str(), t.dims.as_slice()))
        .collect();
    let mut pairs: HashMap<&str, Pair<'_>> = HashMap::new();
    for t in &adapter.tensors {
        let (stem, is_a) = if let Some(s) = t.name.strip_suffix(".lora_a") {
            (s, true)
        } else if let Some(s) = t.name.strip_suffix(".lora_b") {
            (s, false)
        } else {
            return Err(format!("{} is not a .lora_a or .lora_b tensor", t.name));
        };
        let slot = pairs.entry(stem).or_default();
        let side = if is_a { &mut slot.0 } else { &mut slot.1 };
        if side.replace(t.dims.as_slice()).is_some() {
            return Err(format!("{} appears twice", t.name));
        }
    }
    if pairs.is_empty() {
        return Err("the adapter has no tensors".into());
    }
    let mut rank = None;
    for (stem, (a, b)) in &pairs {
        let (Some(a), Some(b)) = (a, b) else {
            return Err(format!("{stem} has only one of lora_a and lora_b"));
        };
        let w = base_dims
            .get(stem)
            .ok_or_else(|| format!("the base model has no tensor {stem}"))?;
        let fits = matches!((*w, *a, *b), ([n_in, n_out], [a_in, r], [r2, b_out])
            if a_in == n_in && b_out == n_out && r == r2);
        if !fits {
            return Err(format!(
                "{stem}: lora_a {a:?} and lora_b {b:?} do not fit the base tensor {w:?}"
            ));
        }
        let r = a[1];
        if *rank.get_or_insert(r) != r {
            return Err(format!("{stem} has rank {r}, others {}", rank.unwrap_or(0)));
        }
    }
    Ok((rank.unwrap_or(0), pairs.len()))
}
