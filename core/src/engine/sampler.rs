//! Builds a llama.cpp sampler chain from request parameters.

use llama_cpp_2::sampling::LlamaSampler;

use super::GenerationParams;

/// llama.cpp's "draw a random seed" value.
const RANDOM_SEED: u32 = u32::MAX;

/// Penalties, then greedy when temperature is 0, else top-k, top-p, min-p, temperature and a seeded draw.
pub(crate) fn build(params: &GenerationParams, n_vocab: i32) -> LlamaSampler {
    let mut chain = Vec::new();
    let penalised = params.repetition_penalty != 1.0
        || params.presence_penalty != 0.0
        || params.frequency_penalty != 0.0;
    if penalised {
        chain.push(LlamaSampler::penalties(
            n_vocab,
            i32::try_from(params.penalty_last_n).unwrap_or(i32::MAX),
            params.repetition_penalty,
            params.frequency_penalty,
            params.presence_penalty,
        ));
    }
    if params.temperature <= 0.0 {
        chain.push(LlamaSampler::greedy());
    } else {
        if params.top_k > 0 {
            chain.push(LlamaSampler::top_k(
                i32::try_from(params.top_k).unwrap_or(i32::MAX),
            ));
        }
        if params.top_p < 1.0 {
            chain.push(LlamaSampler::top_p(params.top_p, 1));
        }
        if params.min_p > 0.0 {
            chain.push(LlamaSampler::min_p(params.min_p, 1));
        }
        chain.push(LlamaSampler::temp(params.temperature));
        chain.push(LlamaSampler::dist(params.seed.unwrap_or(RANDOM_SEED)));
    }
    LlamaSampler::chain_simple(chain)
}
