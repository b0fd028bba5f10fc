//! Serving a chat request under a safety mode. Every mode yields the same stream of [`Out`]
//! events (reasoning, the decision, answer text, the end), so one renderer serves plain and
//! streaming responses alike. Deliberation runs in one engine session: reasoning is generated and
//! the verdict is read from the logits after a forced `Verdict:`. The answer is then written on
//! the base model's weights from the application's own conversation, in the same slot: an
//! adapter decides, it never rewrites the answer (a 135M adapter trained on the deliberation
//! format answers in that format), and without an adapter the answer is the one `off` gives
//! instead of a reply squeezed after the reasoning ("I can help with that.").

use std::sync::Arc;

use cada_core::policy::protocol::{
    cases_system_prompt, verdict_text, REASONING_PREFIX, SAFE_COMPLETION_NOTE, VERDICT_PREFIX,
};
use cada_core::policy::{Label, VerdictRule};
use cada_core::{
    ChatMessage, ChatRole, Engine, Event, FinishReason, GenerationParams, Prompt, Session, Usage,
    Weights,
};
use tokio::sync::mpsc;

use super::config::RefusalFinish;
use super::decision::label_risk;
use super::screen::{probe_messages, retrieve, split_system};
use super::{Decision, Mode, Safety};
use crate::error::ApiError;
use crate::events::{Out, Source};

/// Stops that end the reasoning: the model writing the next line of the format itself.
const REASONING_STOPS: [&str; 2] = ["Verdict:", "Answer:"];

/// A chat request ready to serve.
#[derive(Debug, Clone)]
pub struct ChatJob {
    pub messages: Vec<ChatMessage>,
    pub params: GenerationParams,
    pub mode: Mode,
    /// How `trained` mode reads the verdict: the served adapter's calibrated rule.
    pub rule: VerdictRule,
    /// `false` (shadow): deliberate and report the verdict, but answer as `off` would.
    pub enforce: bool,
    /// A raw completion's prompt: `messages` is it as one user turn (what the verdict reads),
    /// and an allowed answer is its continuation on the base weights.
    pub text: Option<String>,
}

/// Starts serving `job`. Fails fast (before any output) on overload and, for plain serving, on
/// prompts that cannot fit.
pub async fn start(
    engine: &Engine,
    safety: &Arc<Safety>,
    job: ChatJob,
) -> Result<Source, ApiError> {
    if job.mode == Mode::Off {
        let prompt = match &job.text {
            Some(text) => engine.text_prompt(text),
            None => engine.chat_prompt(&job.messages)?,
        };
        let generation = engine.generate_on(prompt, job.params, Weights::Base)?;
        return Ok(Source::plain(
            generation,
            Decision {
                mode: Some(Mode::Off),
                ..Decision::default()
            },
        ));
    }
    let (precedents, embedding) = retrieve(safety, &job.messages).await?;
    let decision = Decision {
        mode: Some(job.mode),
        shadow: !job.enforce,
        precedents,
        embedding: Some(embedding),
        ..Decision::default()
    };
    // Sessions are opened here so a full queue is a fast 503, not an error mid-stream.
    let session = engine.session()?;
    let (tx, rx) = mpsc::channel(64);
    let engine = engine.clone();
    let safety = Arc::clone(safety);
    tokio::spawn(async move {
        let result = match job.mode {
            Mode::Adaptive => adaptive(&engine, &safety, session, job, decision, &tx).await,
            _ => deliberate(&engine, &safety, session, job, decision, &tx).await,
        };
        if let Err(e) = result {
            let _ = tx.send(Out::Error(e)).await;
        }
    });
    Ok(Source::Driven(rx))
}

/// The last user message: what a response record and a logged case show as the request.
pub fn last_user_text(messages: &[ChatMessage]) -> String {
    messages
        .iter()
        .rev()
        .find(|m| m.role == ChatRole::User)
        .map(|m| m.content.clone())
        .unwrap_or_default()
}

/// The conversation with the deliberation context as its system message.
pub(super) fn deliberation_messages(
    safety: &Safety,
    job: &ChatJob,
    decision: &Decision,
) -> Vec<ChatMessage> {
    let (app_system, rest) = split_system(&job.messages);
    let system = match job.mode {
        Mode::Trained => app_system.map(str::to_owned),
        _ => {
            let precedents: Vec<_> = decision
                .precedents
                .iter()
                .filter_map(|r| {
                    safety
                        .policy
                        .case(&r.id)
                        .map(|case| cada_core::policy::Precedent {
                            case,
                            similarity: r.similarity,
                        })
                })
                .collect();
            Some(cases_system_prompt(
                &safety.policy.codes,
                &precedents,
                app_system,
            ))
        }
    };
    system
        .map(|s| ChatMessage::new(ChatRole::System, s))
        .into_iter()
        .chain(rest.iter().cloned())
        .collect()
}

/// Sends an event; false once the client has gone (the caller stops, dropping the session).
pub(super) async fn emit(tx: &mpsc::Sender<Out>, out: Out) -> bool {
    tx.send(out).await.is_ok()
}

/// Reads one generation of the session, passing its text on; returns the final event.
async fn relay(
    session: &mut Session,
    tx: &mpsc::Sender<Out>,
    wrap: fn(String) -> Out,
    trim_start: bool,
) -> Result<Option<(FinishReason, Usage, Option<String>)>, ApiError> {
    let mut started = !trim_start;
    loop {
        match session.next().await {
            Some(Event::Text(mut t)) => {
                if !started {
                    t = t.trim_start().to_owned();
                    if t.is_empty() {
                        continue;
                    }
                    started = true;
                }
                if !emit(tx, wrap(t)).await {
                    return Ok(None);
                }
            }
            Some(Event::Done {
                finish_reason,
                usage,
                stop,
                ..
            }) => return Ok(Some((finish_reason, usage, stop))),
            Some(Event::Error(e)) => return Err(e.into()),
            Some(Event::Scores { .. }) | None => {
                return Err(ApiError::internal("the engine stopped mid-deliberation"))
            }
        }
    }
}

pub(super) async fn verdict_scores(
    engine: &Engine,
    session: &mut Session,
    append: Prompt,
    last: bool,
) -> Result<Vec<f32>, ApiError> {
    let candidates: Vec<Prompt> = Label::ALL
        .iter()
        .map(|l| engine.tokens(&verdict_text(*l)))
        .collect();
    Ok(session.score(append, &candidates, last).await?)
}

/// Reasoning, verdict from the logits, then the answer (or the configured refusal).
pub(super) async fn deliberate(
    engine: &Engine,
    safety: &Safety,
    mut session: Session,
    job: ChatJob,
    mut decision: Decision,
    tx: &mpsc::Sender<Out>,
) -> Result<(), ApiError> {
    decision.deliberated = true;
    let mut prompt = engine.chat_prompt(&deliberation_messages(safety, &job, &decision))?;
    prompt.extend(&engine.tokens(REASONING_PREFIX));
    let reasoning_params = GenerationParams {
        max_tokens: Some(safety.config.max_reasoning_tokens),
        stop: REASONING_STOPS.iter().map(|s| (*s).to_owned()).collect(),
        ignore_eos: false,
        ..job.params.clone()
    };
    session.generate(prompt, reasoning_params, false)?;
    let Some((_, reasoning_usage, stop)) = relay(&mut session, tx, Out::Reasoning, true).await?
    else {
        return Ok(());
    };
    let reasoning_tokens = reasoning_usage.completion_tokens;
    // If the model wrote `Verdict:` itself, its last token (fed next) completes the prefix.
    let prefix = if stop.as_deref() == Some("Verdict:") {
        ""
    } else {
        VERDICT_PREFIX
    };
    let raw = verdict_scores(engine, &mut session, engine.tokens(prefix), false).await?;
    // A calibrated threshold belongs to the adapter in `trained` mode, where it was measured.
    let rule = match job.mode {
        Mode::Trained => job.rule,
        _ => VerdictRule::default(),
    };
    let (verdict, probability, probs) = Decision::from_probs(&raw, rule);
    decision.refuse_log_odds = rule.refuse_log_odds;
    decision.verdict = Some(verdict);
    decision.probability = Some(probability);
    decision.probs = Some(probs);
    if !emit(tx, Out::Decided(Box::new(decision))).await {
        return Ok(());
    }
    if verdict == Label::Refuse && job.enforce {
        let usage = Usage {
            prompt_tokens: session.appended_tokens(),
            completion_tokens: reasoning_tokens + 1,
        };
        drop(session);
        refuse(safety, tx, usage, reasoning_tokens).await;
        return Ok(());
    }
    let spent = session.appended_tokens();
    serve_answer(engine, &mut session, &job, verdict)?;
    answer(
        &mut session,
        tx,
        spent,
        reasoning_tokens,
        reasoning_tokens + 1,
    )
    .await
}

/// The conversation the answer is written from: the application's, with the safe-completion
/// note in its system message after `safe_complete`.
pub(super) fn answer_messages(messages: &[ChatMessage], verdict: Label) -> Vec<ChatMessage> {
    if verdict != Label::SafeComplete {
        return messages.to_vec();
    }
    match messages.first() {
        Some(m) if m.role == ChatRole::System => {
            let system = format!("{SAFE_COMPLETION_NOTE}\n\n{}", m.content);
            std::iter::once(ChatMessage::new(ChatRole::System, system))
                .chain(messages[1..].iter().cloned())
                .collect()
        }
        _ => std::iter::once(ChatMessage::new(ChatRole::System, SAFE_COMPLETION_NOTE))
            .chain(messages.iter().cloned())
            .collect(),
    }
}

/// Forgets the session's context and generates the answer after `verdict` on the base weights:
/// the application's conversation, with the safe-completion note after `safe_complete`, or a raw
/// prompt's continuation. In shadow every answer is the one `off` gives.
pub(super) fn serve_answer(
    engine: &Engine,
    session: &mut Session,
    job: &ChatJob,
    verdict: Label,
) -> Result<(), ApiError> {
    let verdict = if job.enforce { verdict } else { Label::Allow };
    session.reset_to(Weights::Base)?;
    // A raw continuation cannot carry the safe-completion note: the safe part is a chat answer.
    let prompt = match (&job.text, verdict) {
        (Some(text), Label::Allow) => engine.text_prompt(text),
        _ => engine.chat_prompt(&answer_messages(&job.messages, verdict))?,
    };
    session.generate(prompt, job.params.clone(), true)?;
    Ok(())
}

/// Answers with the configured refusal and ends the response.
pub(super) async fn refuse(
    safety: &Safety,
    tx: &mpsc::Sender<Out>,
    usage: Usage,
    reasoning_tokens: usize,
) {
    let finish = match safety.config.refusal_finish_reason {
        RefusalFinish::Stop => FinishReason::Stop,
        RefusalFinish::ContentFilter => FinishReason::ContentFilter,
    };
    if emit(tx, Out::Content(safety.config.refusal_message.clone())).await {
        emit(
            tx,
            Out::Done {
                finish,
                usage,
                reasoning_tokens,
            },
        )
        .await;
    }
}

/// Relays the answer generation and ends the response; `prompt_spent` prompt tokens and
/// `spent` completion tokens (the probe, reasoning and verdict) came before it.
pub(super) async fn answer(
    session: &mut Session,
    tx: &mpsc::Sender<Out>,
    prompt_spent: usize,
    reasoning_tokens: usize,
    spent: usize,
) -> Result<(), ApiError> {
    let Some((finish, usage, _)) = relay(session, tx, Out::Content, false).await? else {
        return Ok(());
    };
    let usage = Usage {
        prompt_tokens: prompt_spent + session.appended_tokens(),
        completion_tokens: spent + usage.completion_tokens,
    };
    emit(
        tx,
        Out::Done {
            finish,
            usage,
            reasoning_tokens,
        },
    )
    .await;
    Ok(())
}

/// One prefill with the verdict question gives the model's risk; with the precedents' labels it
/// decides between serving directly and deliberating with cases. Over an adapter with a
/// calibrated probe band, the adapter's own probe decides instead (`probed.rs`).
async fn adaptive(
    engine: &Engine,
    safety: &Safety,
    mut session: Session,
    job: ChatJob,
    mut decision: Decision,
    tx: &mpsc::Sender<Out>,
) -> Result<(), ApiError> {
    if let Some(band) = job.rule.probe {
        return super::probed::probed(engine, safety, session, job, decision, band, tx).await;
    }
    let probe = probe_messages(&safety.policy.codes, &job.messages);
    let mut prompt = engine.chat_prompt(&probe)?;
    prompt.extend(&engine.tokens(VERDICT_PREFIX.trim_start()));
    let raw = verdict_scores(engine, &mut session, prompt, false).await?;
    let (_, _, p) = Decision::from_probs(&raw, VerdictRule::default());
    let model_risk: f32 = Label::ALL
        .iter()
        .zip(p)
        .map(|(l, q)| label_risk(*l) * q)
        .sum();
    let w = safety.config.adaptive_probe_weight;
    let risk = w * model_risk + (1.0 - w) * decision.precedent_risk();
    decision.risk = Some(risk);
    if risk >= safety.config.adaptive_threshold {
        // The probe's context is not needed any more; the slot is kept for what follows.
        session.reset()?;
        return deliberate(engine, safety, session, job, decision, tx).await;
    }
    let spent = session.appended_tokens();
    serve_answer(engine, &mut session, &job, Label::Allow)?;
    if !emit(tx, Out::Decided(Box::new(decision))).await {
        return Ok(());
    }
    answer(&mut session, tx, spent, 0, 0).await
}
