//! A cached response: the events a finished generation produced, kept in the pieces they came
//! in, so a hit replays them through the same renderer as a live response (a stream from the
//! cache looks like the live stream, with its chunks).

use std::collections::VecDeque;

use cada_core::{FinishReason, Usage};

use crate::events::{Out, Source};
use crate::safety::Decision;

/// A finished response's events.
#[derive(Debug, Clone)]
pub struct Entry {
    pub decision: Option<Decision>,
    pub reasoning: Vec<String>,
    pub content: Vec<String>,
    pub finish: FinishReason,
    pub usage: Usage,
    pub reasoning_tokens: usize,
}

/// Bytes an entry holds besides its fixed size: the text pieces and the decision's vectors.
const PIECE_OVERHEAD: usize = std::mem::size_of::<String>();

impl Entry {
    /// Approximate memory held by the entry, for the cache's byte bound.
    pub fn bytes(&self) -> usize {
        let pieces = |v: &[String]| v.iter().map(|s| s.len() + PIECE_OVERHEAD).sum::<usize>();
        let decision = self.decision.as_ref().map_or(0, |d| {
            d.embedding.as_ref().map_or(0, |e| e.len() * 4)
                + d.precedents
                    .iter()
                    .map(|p| std::mem::size_of_val(p) + p.id.len())
                    .sum::<usize>()
        });
        std::mem::size_of::<Self>()
            + std::mem::size_of::<Decision>()
            + pieces(&self.reasoning)
            + pieces(&self.content)
            + decision
    }

    /// The events to replay, in the order a live response sends them.
    pub fn replay(&self) -> Source {
        let mut events = VecDeque::with_capacity(self.reasoning.len() + self.content.len() + 2);
        events.extend(self.reasoning.iter().cloned().map(Out::Reasoning));
        // The renderer waits for a decision before it answers: there is always one.
        let decision = self.decision.clone().unwrap_or_default();
        events.push_back(Out::Decided(Box::new(decision)));
        events.extend(self.content.iter().cloned().map(Out::Content));
        events.push_back(Out::Done {
            finish: self.finish,
            usage: self.usage,
            reasoning_tokens: self.reasoning_tokens,
        });
        Source::Replay(events)
    }
}

/// Collects a live response's events; [`Recorder::finish`] makes them an entry once `Done`
/// arrives (responses that fail or are abandoned are never cached).
#[derive(Debug, Default)]
pub struct Recorder {
    decision: Option<Decision>,
    reasoning: Vec<String>,
    content: Vec<String>,
}

impl Recorder {
    /// Notes the response's decision.
    pub fn decided(&mut self, decision: &Decision) {
        self.decision = Some(decision.clone());
    }

    /// Notes an event; returns the entry when the response has ended well.
    pub fn saw(&mut self, out: &Out) -> Option<Entry> {
        match out {
            Out::Reasoning(t) => self.reasoning.push(t.clone()),
            Out::Decided(d) => self.decided(d),
            Out::Content(t) => self.content.push(t.clone()),
            Out::Done {
                finish,
                usage,
                reasoning_tokens,
            } => {
                return Some(Entry {
                    decision: self.decision.take(),
                    reasoning: std::mem::take(&mut self.reasoning),
                    content: std::mem::take(&mut self.content),
                    finish: *finish,
                    usage: *usage,
                    reasoning_tokens: *reasoning_tokens,
                })
            }
            Out::Error(_) => {}
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApiError;

    fn events() -> Vec<Out> {
        vec![
            Out::Reasoning("Think".into()),
            Out::Reasoning("ing.".into()),
            Out::Decided(Box::new(Decision {
                embedding: Some(vec![0.5; 8]),
                ..Decision::default()
            })),
            Out::Content("Hel".into()),
            Out::Content("lo".into()),
            Out::Done {
                finish: FinishReason::Stop,
                usage: Usage {
                    prompt_tokens: 5,
                    completion_tokens: 4,
                },
                reasoning_tokens: 2,
            },
        ]
    }

    fn describe(out: &Out) -> String {
        match out {
            Out::Reasoning(t) => format!("reasoning {t}"),
            Out::Decided(d) => format!("decided {:?}", d.embedding),
            Out::Content(t) => format!("content {t}"),
            Out::Done {
                finish,
                usage,
                reasoning_tokens,
            } => format!("done {finish:?} {usage:?} {reasoning_tokens}"),
            Out::Error(e) => format!("error {}", e.code),
        }
    }

    #[tokio::test]
    async fn a_replay_sends_the_recorded_events_in_order() {
        let mut recorder = Recorder::default();
        let mut entry = None;
        for out in &events() {
            assert!(entry.is_none(), "an entry only once Done arrives");
            entry = recorder.saw(out);
        }
        let entry = entry.expect("an entry at Done");
        assert!(entry.bytes() > 8 * 4 + "Thinking.Hello".len());
        let mut source = entry.replay();
        let mut replayed = Vec::new();
        while let Some(out) = source.next().await {
            replayed.push(describe(&out));
        }
        let expected: Vec<String> = events().iter().map(describe).collect();
        assert_eq!(replayed, expected);
    }

    #[test]
    fn a_failed_response_makes_no_entry() {
        let mut recorder = Recorder::default();
        assert!(recorder.saw(&Out::Content("partial".into())).is_none());
        assert!(recorder
            .saw(&Out::Error(ApiError::internal("engine stopped")))
            .is_none());
    }
}
