//! AdamW over the adapter's variables, with gradient accumulation and global-norm clipping, and a
//! state that checkpoints and resumes exactly (candle-nn's AdamW keeps its moments private).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::model::ModelError;

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Global gradient-norm ceiling; 0 turns clipping off.
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            lr: 2e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            max_grad_norm: 1.0,
        }
    }
}

/// AdamW for a fixed list of variables.
#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    vars: Vec<Var>,
    m: Vec<Tensor>,
    v: Vec<Tensor>,
    /// Updates taken so far (bias correction uses it).
    pub step: usize,
    /// Summed gradients of the micro-batches since the last update.
    acc: Vec<Option<Tensor>>,
    micro: usize,
}

/// What one update did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepInfo {
    /// Global norm of the averaged gradient before clipping.
    pub grad_norm: f64,
    pub clipped: bool,
}

impl AdamW {
    pub fn new(vars: Vec<Var>, config: AdamWConfig) -> Result<Self, ModelError> {
        let m = vars
            .iter()
            .map(|v| v.as_tensor().zeros_like())
            .collect::<candle_core::Result<Vec<_>>>()?;
        let v = m.clone();
        let acc = vec![None; vars.len()];
        Ok(Self {
            config,
            vars,
            m,
            v,
            step: 0,
            acc,
            micro: 0,
        })
    }

    /// Adds one micro-batch's gradients. A variable the loss did not reach counts as zero.
    pub fn accumulate(&mut self, grads: &GradStore) -> Result<(), ModelError> {
        for (slot, var) in self.acc.iter_mut().zip(&self.vars) {
            if let Some(g) = grads.get(var) {
                *slot = Some(match slot.take() {
                    Some(a) => (a + g)?,
                    None => g.clone(),
                });
            }
        }
        self.micro += 1;
        Ok(())
    }

    /// Averages the accumulated gradients, clips them to the global norm and updates the
    /// variables. `None` when nothing was accumulated.
    pub fn update(&mut self) -> Result<Option<StepInfo>, ModelError> {
        if self.micro == 0 {
            return Ok(None);
        }
        let n = self.micro as f64;
        let grads: Vec<Option<Tensor>> = self
            .acc
            .iter_mut()
            .map(|a| a.take().map(|g| g / n).transpose())
            .collect::<candle_core::Result<_>>()?;
        self.micro = 0;
        let mut sq = 0f64;
        for g in grads.iter().flatten() {
            sq += f64::from(g.sqr()?.sum_all()?.to_scalar::<f32>()?);
        }
        let grad_norm = sq.sqrt();
        let clip = self.config.max_grad_norm;
        let clipped = clip > 0.0 && grad_norm > clip;
        let factor = if clipped {
            clip / (grad_norm + 1e-6)
        } else {
            1.0
        };
        self.step += 1;
        let c = &self.config;
        let t = self.step as i32;
        let (bc1, bc2) = (1.0 - c.beta1.powi(t), 1.0 - c.beta2.powi(t));
        for (i, g) in grads.into_iter().enumerate() {
            let Some(g) = g else { continue };
            let g = (g * factor)?;
            let m = ((&self.m[i] * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            let v = ((&self.v[i] * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let update = ((&m / bc1)? / ((&v / bc2)?.sqrt()? + c.eps)?)?;
            let theta = self.vars[i].as_tensor();
            let next = ((theta * (1.0 - c.lr * c.weight_decay))? - (update * c.lr)?)?;
            self.vars[i].set(&next)?;
            self.m[i] = m;
            self.v[i] = v;
        }
        Ok(Some(StepInfo { grad_norm, clipped }))
    }

    /// Moments as named tensors (`m.<i>`, `v.<i>`), for checkpoints.
    pub fn state_tensors(&self) -> BTreeMap<String, Tensor> {
        let mut out = BTreeMap::new();
        for (i, (m, v)) in self.m.iter().zip(&self.v).enumerate() {
            out.insert(format!("m.{i}"), m.clone());
            out.insert(format!("v.{i}"), v.clone());
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(
        &mut self,
        tensors: &BTreeMap<String, Tensor>,
        step: usize,
    ) -> Result<(), ModelError> {
        for i in 0..self.vars.len() {
            for (key, slot) in [
                (format!("m.{i}"), &mut self.m[i]),
                (format!("v.{i}"), &mut self.v[i]),
            ] {
                let t = tensors
                    .get(&key)
                    .ok_or_else(|| ModelError::Config(format!("optimiser state lacks '{key}'")))?;
                if t.dims() != slot.dims() {
                    return Err(ModelError::Config(format!(
                        "optimiser state '{key}' has the wrong shape"
                    )));
                }
                *slot = t.clone();
            }
        }
        self.step = step;
        Ok(())
    }
}

/// Saves named tensors as safetensors, atomically.
pub fn save_tensors(tensors: &BTreeMap<String, Tensor>, path: &Path) -> Result<(), ModelError> {
    let io = |e: std::io::Error| ModelError::Read {
        path: path.display().to_string(),
        message: e.to_string(),
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(io)?;
    let tmp = tempfile::NamedTempFile::new_in(dir).map_err(io)?;
    let map: std::collections::HashMap<String, Tensor> = tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    candle_core::safetensors::save(&map, tmp.path())?;
    tmp.persist(path).map_err(|e| io(e.error))?;
    Ok(())
}

/// Loads safetensors saved by [`save_tensors`].
pub fn load_tensors(path: &Path) -> Result<BTreeMap<String, Tensor>, ModelError> {
    Ok(
        candle_core::safetensors::load(path, &candle_core::Device::Cpu)?
            .into_iter()
            .collect(),
    )
}
