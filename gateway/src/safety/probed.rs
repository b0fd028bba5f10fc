//! `adaptive` over a trained adapter that carries a calibrated probe band. The probe is the
//! verdict read right after `Reasoning:` with no reasoning: one prefill of the conversation as
//! `trained` mode lays it out (the whole conversation, not its last message), no generation.
//! Clearly benign requests are then served directly, as `off` serves them; clearly harmful ones
//! get the refusal; only the uncertain middle pays for the adapter's reasoning (`trained` mode).
//! The band comes from the adapter's metadata (`cada-trainer run` picks it on held-out prompts).

use cada_core::policy::protocol::{REASONING_PREFIX, VERDICT_PREFIX};
use cada_core::policy::{log_odds, Label, ProbeBand, ProbeCall, VerdictRule};
use cada_core::Session;
use cada_core::{Engine, Usage};
use tokio::sync::mpsc;

use super::deliberate::{
    answer, deliberate, deliberation_messages, emit, refuse, serve_answer, verdict_scores, ChatJob,
};
use super::{Decision, Mode, Safety};
use crate::error::ApiError;
use crate::events::Out;

/// Probes, then serves, refuses or deliberates by `band`.
pub(super) async fn probed(
    engine: &Engine,
    safety: &Safety,
    mut session: Session,
    mut job: ChatJob,
    mut decision: Decision,
    band: ProbeBand,
    tx: &mpsc::Sender<Out>,
) -> Result<(), ApiError> {
    // The probe sees what `trained` mode would: the conversation without codes or precedents.
    job.mode = Mode::Trained;
    let mut prompt = engine.chat_prompt(&deliberation_messages(safety, &job, &decision))?;
    prompt.extend(&engine.tokens(REASONING_PREFIX));
    prompt.extend(&engine.tokens(VERDICT_PREFIX));
    let raw = verdict_scores(engine, &mut session, prompt, false).await?;
    let (_, _, p) = Decision::from_probs(&raw, VerdictRule::default());
    let refuse_at = Label::ALL
        .iter()
        .position(|l| *l == Label::Refuse)
        .unwrap_or(1);
    let probe = log_odds(p[refuse_at]);
    let call = band.call(probe);
    decision.probe = Some((probe, call));
    match call {
        ProbeCall::Deliberate => {
            session.reset()?;
            deliberate(engine, safety, session, job, decision, tx).await
        }
        ProbeCall::Refuse if job.enforce => {
            decision.verdict = Some(Label::Refuse);
            decision.probability = Some(p[refuse_at]);
            decision.probs = Some(p);
            if !emit(tx, Out::Decided(Box::new(decision))).await {
                return Ok(());
            }
            let usage = Usage {
                prompt_tokens: session.appended_tokens(),
                completion_tokens: 1,
            };
            drop(session);
            refuse(safety, tx, usage, 0).await;
            Ok(())
        }
        ProbeCall::Refuse | ProbeCall::Serve => {
            // As `off` serves it: the application's conversation on the base model's weights
            // (a clear refusal in shadow too, with the verdict reported).
            if call == ProbeCall::Refuse {
                decision.verdict = Some(Label::Refuse);
                decision.probability = Some(p[refuse_at]);
                decision.probs = Some(p);
            }
            let spent = session.appended_tokens();
            serve_answer(engine, &mut session, &job, Label::Allow)?;
            if !emit(tx, Out::Decided(Box::new(decision))).await {
                return Ok(());
            }
            answer(&mut session, tx, spent, 0, 0).await
        }
    }
}
