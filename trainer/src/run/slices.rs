//! Which examples each pass trains on. The library and case-store exports are a few hundred
//! requests that every warm-start epoch and own-reasoning round trains in full. The labelled
//! outside requests are thousands (1,911 against the library's 318 in run-1796613828), and a
//! pass costs in proportion to its requests. So each pass trains the library plus the next slice of the outside requests,
//! `share` of them, in an order fixed by the seed: passes walk through the order, and every
//! outside request is trained once in each 1/share passes. A resumed run draws the slice the
//! uninterrupted one would have.

use rand::seq::SliceRandom;

use super::train;
use crate::data::{Example, Origin};

/// Streams apart from the epochs' and rounds' own generators.
const ORDER_STREAM: usize = 2_000;

/// Which sequence of passes a slice belongs to: the warm start's epochs and the own-reasoning
/// rounds walk the order separately.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Passes {
    WarmStart,
    OwnReasoning,
}

/// Indices into `examples` that pass `pass` trains: every example that is not outside data,
/// then `share` of the outside ones (at least one while there are any).
pub fn pass_indices(
    examples: &[&Example],
    share: f64,
    seed: u64,
    passes: Passes,
    pass: usize,
) -> Vec<usize> {
    let (outside, mut picked): (Vec<usize>, Vec<usize>) =
        (0..examples.len()).partition(|&i| examples[i].origin == Origin::Outside);
    if outside.is_empty() || share >= 1.0 {
        return (0..examples.len()).collect();
    }
    let mut order = outside;
    let stream = ORDER_STREAM + usize::from(passes == Passes::OwnReasoning);
    order.shuffle(&mut train::epoch_rng(seed, stream));
    let n = slice_len(order.len(), share);
    let start = (pass * n) % order.len();
    picked.extend(order.iter().cycle().skip(start).take(n));
    picked.sort_unstable();
    picked
}

fn slice_len(outside: usize, share: f64) -> usize {
    ((outside as f64 * share).round() as usize).clamp(1, outside)
}

#[cfg(test)]
mod tests {
    use super::*;
    use cada_core::policy::Label;

    fn examples(library: usize, outside: usize) -> Vec<Example> {
        (0..library + outside)
            .map(|i| Example {
                id: format!("e{i}"),
                request: format!("request {i}"),
                label: Label::Allow,
                rationale: None,
                answer: None,
                origin: if i < library {
                    Origin::Library
                } else {
                    Origin::Outside
                },
            })
            .collect()
    }

    #[test]
    fn every_pass_trains_the_library_and_passes_cover_the_outside_data_once() {
        let all = examples(10, 40);
        let refs: Vec<&Example> = all.iter().collect();
        let mut seen = std::collections::HashMap::new();
        for pass in 0..4 {
            let idx = pass_indices(&refs, 0.25, 7, Passes::WarmStart, pass);
            assert_eq!(idx.len(), 20);
            assert!((0..10).all(|i| idx.contains(&i)), "library in every pass");
            for i in idx.into_iter().filter(|&i| i >= 10) {
                *seen.entry(i).or_insert(0) += 1;
            }
        }
        assert_eq!(seen.len(), 40);
        assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    }

    #[test]
    fn slices_depend_on_seed_and_pass_only() {
        let all = examples(3, 30);
        let refs: Vec<&Example> = all.iter().collect();
        let a = pass_indices(&refs, 0.2, 7, Passes::WarmStart, 1);
        assert_eq!(a, pass_indices(&refs, 0.2, 7, Passes::WarmStart, 1));
        assert_ne!(a, pass_indices(&refs, 0.2, 7, Passes::WarmStart, 2));
        assert_ne!(a, pass_indices(&refs, 0.2, 8, Passes::WarmStart, 1));
        assert_ne!(a, pass_indices(&refs, 0.2, 7, Passes::OwnReasoning, 1));
    }

    #[test]
    fn a_full_share_or_no_outside_data_trains_everything() {
        let all = examples(5, 5);
        let refs: Vec<&Example> = all.iter().collect();
        assert_eq!(pass_indices(&refs, 1.0, 7, Passes::WarmStart, 3).len(), 10);
        let library = examples(6, 0);
        let refs: Vec<&Example> = library.iter().collect();
        assert_eq!(pass_indices(&refs, 0.1, 7, Passes::WarmStart, 0).len(), 6);
    }
}
