//! Adapters as llama.cpp LoRA GGUF files, the one format both the gateway (through llama.cpp) and
//! the trainer (to resume or evaluate) read: `general.type = adapter`, `adapter.type = lora`,
//! `adapter.lora.alpha`, the base's `general.architecture`, and f16 tensors
//! `<base tensor>.lora_a` (rank x in) / `.lora_b` (out x rank) in candle's row-major shape order,
//! which GGUF stores reversed (ne = [in, rank] and [rank, out]): what llama.cpp checks for.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use cada_core::policy::{
    ProbeBand, VerdictRule, PROBE_REFUSE_FROM_KEY, PROBE_SERVE_BELOW_KEY, REFUSE_LOG_ODDS_KEY,
};
use candle_core::quantized::gguf_file::{self, Content, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::Device;

use crate::model::{Llama, Lora, LoraConfig, ModelError, Target};

/// Provenance written into the adapter's metadata under `cada.*`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AdapterMeta {
    /// Adapter version (the registry id it is promoted under).
    pub version: String,
    /// Version this one was trained from, if any.
    pub parent: Option<String>,
    /// Hash of the training data.
    pub data_hash: String,
    /// Policy version (codes + cases) the training used.
    pub policy_version: String,
    /// Refuse threshold calibrated on held-out cases, which the gateway applies in `trained`
    /// mode (see [`cada_core::policy::VerdictRule`]).
    pub refuse_log_odds: Option<f32>,
    /// The probe band `adaptive` applies over this adapter (see [`cada_core::policy::ProbeBand`]).
    pub probe: Option<ProbeBand>,
}

/// Writes the adapter to `path` atomically (a temp file in the same directory, then rename).
pub fn write(
    lora: &Lora,
    base: &crate::model::LlamaConfig,
    meta: &AdapterMeta,
    path: &Path,
) -> Result<(), ModelError> {
    let io = |e: std::io::Error| ModelError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let targets: Vec<&str> = lora.config.targets.iter().map(|t| t.stem()).collect();
    let mut md: Vec<(&str, Value)> = vec![
        (
            "general.architecture",
            Value::String(base.architecture.clone()),
        ),
        ("general.type", Value::String("adapter".into())),
        (
            "general.name",
            Value::String(format!("cada-lora-{}", meta.version)),
        ),
        ("adapter.type", Value::String("lora".into())),
        ("adapter.lora.alpha", Value::F32(lora.config.alpha)),
        ("cada.adapter.version", Value::String(meta.version.clone())),
        (
            "cada.adapter.data_hash",
            Value::String(meta.data_hash.clone()),
        ),
        (
            "cada.adapter.policy_version",
            Value::String(meta.policy_version.clone()),
        ),
        ("cada.lora.rank", Value::U32(lora.config.rank as u32)),
        ("cada.lora.targets", Value::String(targets.join(","))),
    ];
    if let Some(parent) = &meta.parent {
        md.push(("cada.adapter.parent", Value::String(parent.clone())));
    }
    if let Some(t) = meta.refuse_log_odds {
        md.push((REFUSE_LOG_ODDS_KEY, Value::F32(t)));
    }
    if let Some(b) = meta.probe {
        md.push((PROBE_SERVE_BELOW_KEY, Value::F32(b.serve_below)));
        md.push((PROBE_REFUSE_FROM_KEY, Value::F32(b.refuse_from)));
    }
    let tensors = lora
        .named_tensors()
        .into_iter()
        // f16 halves the file (the shipped release adapter is in git) and is what llama.cpp
        // computes LoRA in anyway; training checkpoints keep f32 (`run/checkpoint.rs`).
        .map(|(name, t)| Ok((name, QTensor::quantize(&t.contiguous()?, GgmlDType::F16)?)))
        .collect::<Result<Vec<_>, ModelError>>()?;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    {
        let mut w = BufWriter::new(tmp.as_file());
        let md_refs: Vec<(&str, &Value)> = md.iter().map(|(k, v)| (*k, v)).collect();
        let t_refs: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
        gguf_file::write(&mut w, &md_refs, &t_refs)?;
        w.flush().map_err(io)?;
    }
    tmp.as_file().sync_all().map_err(io)?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Reads an adapter written by [`write`] (or any llama.cpp LoRA GGUF over the same base with
/// f32/f16 tensors) back into trainable form for `model`.
pub fn read(path: &Path, model: &Llama) -> Result<(Lora, AdapterMeta), ModelError> {
    let read_err = |e: &dyn std::fmt::Display| ModelError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let mut file = File::open(path).map_err(|e| read_err(&e))?;
    let content = Content::read(&mut file).map_err(|e| read_err(&e))?;
    let md = &content.metadata;
    let text = |k: &str| md.get(k).and_then(|v| v.to_string().ok()).cloned();
    if text("general.type").as_deref() != Some("adapter")
        || text("adapter.type").as_deref() != Some("lora")
    {
        return Err(ModelError::Metadata(format!(
            "{} is not a LoRA adapter GGUF",
            path.display()
        )));
    }
    if text("general.architecture").as_deref() != Some(model.config.architecture.as_str()) {
        return Err(ModelError::Metadata(
            "adapter architecture differs from the base model's".into(),
        ));
    }
    let alpha = md
        .get("adapter.lora.alpha")
        .and_then(|v| v.to_f32().ok())
        .ok_or_else(|| ModelError::Metadata("missing adapter.lora.alpha".into()))?;
    let mut tensors = BTreeMap::new();
    for name in content.tensor_infos.keys() {
        let t = content
            .tensor(&mut file, name, &Device::Cpu)
            .map_err(|e| read_err(&e))?
            .dequantize(model.device())?;
        tensors.insert(name.clone(), t);
    }
    let mut targets: Vec<Target> = Vec::new();
    let mut rank = None;
    for name in tensors.keys() {
        let Some(base) = name.strip_suffix(".lora_a") else {
            continue;
        };
        let stem = base
            .split('.')
            .nth(2)
            .ok_or_else(|| ModelError::Metadata(format!("unexpected tensor '{name}'")))?;
        let target: Target = stem.parse().map_err(ModelError::Metadata)?;
        if !targets.contains(&target) {
            targets.push(target);
        }
        rank = Some(tensors[name].dim(0)?);
    }
    targets.sort();
    let rank = rank.ok_or_else(|| ModelError::Metadata("adapter has no tensors".into()))?;
    let config = LoraConfig {
        rank,
        alpha,
        dropout: 0.0,
        targets,
    };
    // The seed is irrelevant: every tensor is overwritten from the file.
    let lora = model.new_lora(config, 0)?;
    if tensors.len() != 2 * lora.pairs.len() {
        return Err(ModelError::Metadata(format!(
            "adapter has {} tensors, {} expected",
            tensors.len(),
            2 * lora.pairs.len()
        )));
    }
    lora.load_tensors(&tensors)?;
    let meta = AdapterMeta {
        version: text("cada.adapter.version").unwrap_or_default(),
        parent: text("cada.adapter.parent"),
        data_hash: text("cada.adapter.data_hash").unwrap_or_default(),
        policy_version: text("cada.adapter.policy_version").unwrap_or_default(),
        refuse_log_odds: md.get(REFUSE_LOG_ODDS_KEY).and_then(|v| v.to_f32().ok()),
        probe: VerdictRule::from_adapter(path)
            .map_err(ModelError::Metadata)?
            .probe,
    };
    Ok((lora, meta))
}
