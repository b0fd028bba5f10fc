//! Which weights each decode step runs on. llama.cpp applies an adapter to a whole context, not
//! to a sequence, so sessions on the adapter and sessions on the base model take turns: a step
//! decodes one group, and the adapter is switched on the context only when the group changes.

use super::{Task, Worker};
use crate::engine::Weights;

impl<'m> Worker<'m> {
    /// The weights this step decodes on: the only group with work, or in turn when both have.
    pub(super) fn group(&mut self) -> Weights {
        if self.adapter.is_none() {
            return Weights::Adapted;
        }
        let busy = |w: Weights| {
            self.slots
                .iter()
                .flatten()
                .any(|s| s.weights == w && !matches!(s.task, Task::Idle))
        };
        match (busy(Weights::Adapted), busy(Weights::Base)) {
            (true, true) => {
                let now = self.turn;
                self.turn = match now {
                    Weights::Adapted => Weights::Base,
                    Weights::Base => Weights::Adapted,
                };
                now
            }
            (false, true) => Weights::Base,
            _ => Weights::Adapted,
        }
    }

    /// Makes the context apply the adapter or not, as `weights` says.
    pub(super) fn apply(&mut self, weights: Weights) -> Result<(), String> {
        let Some(adapter) = self.adapter.as_deref_mut() else {
            return Ok(());
        };
        let want = weights == Weights::Adapted;
        if self.applied == want {
            return Ok(());
        }
        let result = if want {
            self.ctx
                .lora_adapter_set(adapter, 1.0)
                .map_err(|e| e.to_string())
        } else {
            self.ctx
                .lora_adapter_remove(adapter)
                .map_err(|e| e.to_string())
        };
        result.map_err(|e| format!("cannot switch the adapter: {e}"))?;
        self.applied = want;
        Ok(())
    }
}
