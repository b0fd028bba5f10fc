//! The request fields `/v1/chat/completions` and `/v1/completions` share: model, sampling,
//! limits, stop sequences and streaming options.

use cada_core::GenerationParams;

use super::fields::Fields;
use crate::error::ApiError;

/// Validated common part of a completion request.
#[derive(Debug, Clone, PartialEq)]
pub struct Common {
    pub model: String,
    pub params: GenerationParams,
    pub stream: bool,
    /// `stream_options.include_usage`: a final chunk with `usage` and no choices.
    pub include_usage: bool,
}

/// Most stop sequences per request, as in OpenAI's API.
const MAX_STOPS: usize = 4;

impl Common {
    /// Parses and validates the shared fields; `max_tokens_cap` bounds `max_tokens` and is the
    /// limit of requests without one.
    /// Without one, generation runs to the end of the model's turn or of the slot's context.
    pub fn parse(f: Fields<'_>, max_tokens_cap: u32) -> Result<Self, ApiError> {
        let model = f.required_string("model")?.to_string();
        let mut p = GenerationParams::default();
        if let Some(t) = f.number("temperature", 0.0, 2.0)? {
            p.temperature = t;
        }
        if let Some(v) = f.number("top_p", 0.0, 1.0)? {
            if v == 0.0 {
                // OpenAI accepts 0; the nucleus then holds only the top token.
                p.temperature = 0.0;
            }
            p.top_p = v;
        }
        if let Some(k) = f.integer("top_k", 0, 1_000_000)? {
            p.top_k = k as u32;
        }
        if let Some(v) = f.number("min_p", 0.0, 1.0)? {
            p.min_p = v;
        }
        if let Some(seed) = f.integer("seed", i64::MIN, i64::MAX)? {
            // llama.cpp seeds are 32-bit; u32::MAX means "random", so fold it away.
            p.seed = Some((seed as u64 % u64::from(u32::MAX)) as u32);
        }
        if let Some(v) = f.number("presence_penalty", -2.0, 2.0)? {
            p.presence_penalty = v;
        }
        if let Some(v) = f.number("frequency_penalty", -2.0, 2.0)? {
            p.frequency_penalty = v;
        }
        let rep_name = if f.get("repetition_penalty").is_some() {
            "repetition_penalty"
        } else {
            "repeat_penalty"
        };
        if let Some(v) = f.number(rep_name, 0.01, 10.0)? {
            p.repetition_penalty = v;
        }
        let max_name = if f.get("max_completion_tokens").is_some() {
            "max_completion_tokens"
        } else {
            "max_tokens"
        };
        // The cap bounds every request, those that leave `max_tokens` out (with `ignore_eos`
        // they would otherwise generate to the end of the slot's context) included.
        p.max_tokens = f
            .integer(max_name, 1, i64::from(max_tokens_cap))?
            .map(|m| m as u32);
        p.limit = p.max_tokens.is_none().then_some(max_tokens_cap);
        p.stop = parse_stop(f)?;
        if let Some(b) = f.bool("ignore_eos")? {
            p.ignore_eos = b;
        }
        if let Some(n) = f.integer("n", i64::MIN, i64::MAX)? {
            if n != 1 {
                return Err(ApiError::unsupported("n", "Only n=1 is supported."));
            }
        }
        if f.bool("logprobs")? == Some(true) || f.get("top_logprobs").is_some() {
            return Err(ApiError::unsupported(
                "logprobs",
                "logprobs are not supported.",
            ));
        }
        if let Some(b) = f.integer("best_of", i64::MIN, i64::MAX)? {
            if b != 1 {
                return Err(ApiError::unsupported(
                    "best_of",
                    "Only best_of=1 is supported.",
                ));
            }
        }
        let stream = f.bool("stream")?.unwrap_or(false);
        let include_usage = match f.object("stream_options")? {
            Some(o) => o.bool("include_usage")?.unwrap_or(false),
            None => false,
        };
        if include_usage && !stream {
            return Err(ApiError::invalid_value(
                "stream_options",
                "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            ));
        }
        Ok(Self {
            model,
            params: p,
            stream,
            include_usage,
        })
    }
}

fn parse_stop(f: Fields<'_>) -> Result<Vec<String>, ApiError> {
    let stops = match f.get("stop") {
        None => Vec::new(),
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(items)) => items
            .iter()
            .map(|v| v.as_str().map(str::to_string))
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| ApiError::invalid_type("stop", "a string or an array of strings"))?,
        Some(_) => {
            return Err(ApiError::invalid_type(
                "stop",
                "a string or an array of strings",
            ))
        }
    };
    if stops.len() > MAX_STOPS {
        return Err(ApiError::invalid_value(
            "stop",
            format!("At most {MAX_STOPS} stop sequences are allowed."),
        ));
    }
    if stops.iter().any(String::is_empty) {
        return Err(ApiError::invalid_value(
            "stop",
            "Stop sequences must not be empty.",
        ));
    }
    Ok(stops)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: serde_json::Value) -> Result<Common, ApiError> {
        Common::parse(Fields::of(&v).expect("object"), 1000)
    }

    #[test]
    fn defaults_and_values() {
        let c = parse(json!({"model": "m"})).expect("valid");
        assert_eq!(c.params.max_tokens, None);
        assert_eq!(
            c.params.limit,
            Some(1000),
            "the cap bounds requests without max_tokens"
        );
        assert!(!c.stream);
        let c = parse(
            json!({"model": "m", "temperature": 0, "max_tokens": 7, "stop": "x", "seed": 42,
            "stream": true, "stream_options": {"include_usage": true}, "top_k": 5}),
        )
        .expect("valid");
        assert_eq!(c.params.temperature, 0.0);
        assert_eq!(c.params.max_tokens, Some(7));
        assert_eq!(c.params.stop, vec!["x".to_string()]);
        assert_eq!(c.params.seed, Some(42));
        assert_eq!(c.params.top_k, 5);
        assert!(c.stream && c.include_usage);
        let c = parse(json!({"model": "m", "max_completion_tokens": 3, "max_tokens": 9}))
            .expect("valid");
        assert_eq!(c.params.max_tokens, Some(3));
    }

    #[test]
    fn invalid_parameters_are_named() {
        let cases = [
            (json!({}), "model"),
            (json!({"model": 1}), "model"),
            (json!({"model": "m", "temperature": 3}), "temperature"),
            (json!({"model": "m", "temperature": "hot"}), "temperature"),
            (json!({"model": "m", "top_p": 1.5}), "top_p"),
            (json!({"model": "m", "max_tokens": 0}), "max_tokens"),
            (json!({"model": "m", "max_tokens": 1001}), "max_tokens"),
            (json!({"model": "m", "max_tokens": 1e20}), "max_tokens"),
            (
                json!({"model": "m", "stop": ["a", "b", "c", "d", "e"]}),
                "stop",
            ),
            (json!({"model": "m", "stop": [1]}), "stop"),
            (json!({"model": "m", "stop": ""}), "stop"),
            (json!({"model": "m", "n": 2}), "n"),
            (json!({"model": "m", "logprobs": true}), "logprobs"),
            (json!({"model": "m", "stream": "yes"}), "stream"),
            (
                json!({"model": "m", "stream_options": {"include_usage": true}}),
                "stream_options",
            ),
            (
                json!({"model": "m", "presence_penalty": -3}),
                "presence_penalty",
            ),
        ];
        for (body, param) in cases {
            let err = parse(body.clone()).expect_err(&body.to_string());
            assert_eq!(err.param.as_deref(), Some(param), "{body}: {err:?}");
            assert_eq!(err.status, hyper::StatusCode::BAD_REQUEST);
        }
    }
}
