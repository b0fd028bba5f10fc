//! Checkpoints of a run: after every warm-start epoch, every own-reasoning round and once GRPO
//! and DPO are done, the LoRA values, the AdamW moments and where the run stands, so
//! `cada-trainer run --resume <run dir>` continues a stopped, crashed or paused run instead of
//! starting over. The tensors are written and synced first, under a new name, and
//! `checkpoint.json` (which names them) is synced and renamed into place after, the directory
//! synced, and only then the previous tensors removed: a crash or power loss at any point
//! leaves a whole checkpoint.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::TrainError;
use crate::model::Lora;
use crate::optim::{self, AdamW};

const STATE: &str = "checkpoint.json";
const LORA_PREFIX: &str = "lora.";
const ADAMW_PREFIX: &str = "adamw.";

/// Where a run stands.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// Warm-start epochs finished.
    pub epochs_done: usize,
    /// Rounds of verdict training on the model's own reasoning finished (after the warm start).
    #[serde(default)]
    pub own_rounds_done: usize,
    /// GRPO and DPO finished too: what is left is export, calibration and the gate.
    pub trained: bool,
    /// Optimiser updates over all phases (metric steps continue from it).
    pub updates: usize,
    /// Warm-start updates (the learning-rate schedule continues from it).
    pub warm_updates: usize,
    /// AdamW's own step count (its bias correction).
    pub opt_step: usize,
    /// Training seconds spent before this point; the budget counts them.
    pub train_seconds: f64,
    /// The training data's hash: a resumed run must train on the same data.
    pub data_hash: String,
    /// The safetensors file (in the run directory) with the LoRA values and AdamW moments.
    pub tensors: String,
}

impl Checkpoint {
    /// Takes the optimiser's position and the seconds trained from `trainer`.
    pub fn note_progress(&mut self, trainer: &super::Trainer<'_>, train_seconds: f64) {
        self.updates = trainer.updates;
        self.opt_step = trainer.opt.step;
        self.train_seconds = train_seconds;
    }

    /// Saves `self` with the adapter's values and the optimiser's moments into `run_dir`.
    pub fn save(&mut self, run_dir: &Path, lora: &Lora, opt: &AdamW) -> Result<(), TrainError> {
        let mut tensors: BTreeMap<String, Tensor> = lora
            .named_tensors()
            .into_iter()
            .map(|(k, t)| (format!("{LORA_PREFIX}{k}"), t))
            .collect();
        tensors.extend(
            opt.state_tensors()
                .into_iter()
                .map(|(k, t)| (format!("{ADAMW_PREFIX}{k}"), t)),
        );
        let previous = self.tensors.clone();
        self.tensors = format!(
            "checkpoint-e{}{}{}-u{}.safetensors",
            self.epochs_done,
            if self.own_rounds_done > 0 {
                format!("-r{}", self.own_rounds_done)
            } else {
                String::new()
            },
            if self.trained { "-trained" } else { "" },
            self.updates
        );
        let tensors_path = run_dir.join(&self.tensors);
        optim::save_tensors(&tensors, &tensors_path)
            .map_err(|e| TrainError::new("checkpoint", e))?;
        let io = TrainError::io("checkpoint");
        // Durable in this order: the tensors, then the state naming them, then the directory
        // entry of its rename; only then is the previous checkpoint's tensors file removed, so a
        // power loss at any point leaves one whole checkpoint.
        cada_core::durable::sync_file(&tensors_path).map_err(&io)?;
        let tmp = tempfile::NamedTempFile::new_in(run_dir).map_err(&io)?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| TrainError::new("checkpoint", e))?;
        std::fs::write(tmp.path(), json).map_err(&io)?;
        tmp.as_file().sync_all().map_err(&io)?;
        tmp.persist(run_dir.join(STATE))
            .map_err(|e| TrainError::new("checkpoint", e.error))?;
        cada_core::durable::sync_dir(run_dir).map_err(&io)?;
        if !previous.is_empty() && previous != self.tensors {
            // The new checkpoint is durable; a leftover file would only take space.
            let _ = std::fs::remove_file(run_dir.join(previous));
        }
        Ok(())
    }

    /// The run directory's checkpoint, if it has one.
    pub fn load(run_dir: &Path) -> Result<Option<Self>, TrainError> {
        let path = run_dir.join(STATE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| TrainError::new("checkpoint", format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(TrainError::new("checkpoint", e)),
        }
    }

    /// Puts the saved values into `lora` and the saved moments and step into `opt`.
    pub fn restore(&self, run_dir: &Path, lora: &Lora, opt: &mut AdamW) -> Result<(), TrainError> {
        let all = optim::load_tensors(&run_dir.join(&self.tensors))
            .map_err(|e| TrainError::new("checkpoint", e))?;
        let part = |prefix: &str| -> BTreeMap<String, Tensor> {
            all.iter()
                .filter_map(|(k, t)| k.strip_prefix(prefix).map(|k| (k.to_owned(), t.clone())))
                .collect()
        };
        lora.load_tensors(&part(LORA_PREFIX))
            .map_err(|e| TrainError::new("checkpoint", e))?;
        opt.load_state(&part(ADAMW_PREFIX), self.opt_step)
            .map_err(|e| TrainError::new("checkpoint", e))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::Device;

    use super::*;
    use crate::model::{tiny, LoraConfig};
    use crate::optim::AdamWConfig;

    /// Values and moments come back exactly; a second save replaces the first file.
    #[test]
    fn a_checkpoint_restores_adapter_and_optimiser() {
        let dir = tempfile::tempdir().unwrap();
        let model = tiny::model(3, &Device::Cpu).unwrap();
        let lora = model.new_lora(LoraConfig::default(), 1).unwrap();
        let mut opt = AdamW::new(lora.vars(), AdamWConfig::default()).unwrap();
        for v in lora.vars() {
            v.set(&(v.as_tensor().ones_like().unwrap() * 0.5).unwrap())
                .unwrap();
        }
        // One update, so the moments are not their zero start.
        let mut loss = Tensor::zeros((), candle_core::DType::F32, &Device::Cpu).unwrap();
        for v in lora.vars() {
            loss = (loss + v.as_tensor().sqr().unwrap().sum_all().unwrap()).unwrap();
        }
        opt.accumulate(&loss.backward().unwrap()).unwrap();
        opt.update().unwrap().expect("an update");
        let mut state = Checkpoint {
            epochs_done: 1,
            own_rounds_done: 0,
            trained: false,
            updates: 7,
            warm_updates: 7,
            opt_step: 7,
            train_seconds: 12.5,
            data_hash: "abc".into(),
            tensors: String::new(),
        };
        state.save(dir.path(), &lora, &opt).unwrap();
        let first = dir.path().join(&state.tensors);
        state.epochs_done = 2;
        state.save(dir.path(), &lora, &opt).unwrap();
        assert!(!first.exists(), "the replaced tensors are removed");
        let loaded = Checkpoint::load(dir.path()).unwrap().expect("checkpoint");
        assert_eq!(loaded, state);

        let fresh = model.new_lora(LoraConfig::default(), 1).unwrap();
        let mut fresh_opt = AdamW::new(fresh.vars(), AdamWConfig::default()).unwrap();
        loaded.restore(dir.path(), &fresh, &mut fresh_opt).unwrap();
        assert_eq!(fresh_opt.step, 7);
        let (saved, restored) = (opt.state_tensors(), fresh_opt.state_tensors());
        assert_eq!(saved.len(), restored.len());
        for (k, t) in &saved {
            let a = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert!(a.iter().any(|&x| x != 0.0), "{k} moved");
            assert_eq!(
                a,
                restored[k].flatten_all().unwrap().to_vec1::<f32>().unwrap()
            );
        }
        for (a, b) in lora.vars().iter().zip(fresh.vars()) {
            let diff = (a.as_tensor() - b.as_tensor())
                .unwrap()
                .abs()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert_eq!(diff, 0.0);
        }
        assert!(Checkpoint::load(&dir.path().join("none"))
            .unwrap()
            .is_none());
    }
}
