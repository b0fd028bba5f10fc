//! `POST /v1/moderations` in OpenAI's shape: `input` is a string or an array of strings, each
//! answered with `flagged`, `categories` and `category_scores` from the served model's verdict
//! probabilities (`safety/moderate.rs`), plus the `cada` detail. The inputs are assessed
//! together, so the engine batches their prefills. `model` may name the served model or one of
//! OpenAI's moderation models (which mean the served model here).

use futures_util::future::try_join_all;
use hyper::http::request::Parts;
use serde_json::{json, Value};

use super::{admit_tokens, Caller};
use crate::error::ApiError;
use crate::safety::moderate::{self, Assessment};
use crate::server::{json_response, Response};
use crate::state::AppState;

pub async fn handle(
    state: &AppState,
    req: Parts,
    body: serde_json::Value,
) -> Result<Response, ApiError> {
    let caller = req.extensions.get::<Caller>().cloned();
    let inputs = parse_inputs(&body, state.config.limits.max_moderation_inputs)?;
    let served = state.served().ok_or_else(ApiError::not_ready)?;
    let model = match body.get("model") {
        None | Some(Value::Null) => served.name.clone(),
        Some(Value::String(m)) if m.contains("moderation") => served.name.clone(),
        Some(Value::String(m)) => m.clone(),
        Some(_) => return Err(ApiError::invalid_type("model", "a string")),
    };
    let served = state.engine_for(&model)?;
    let safety = state.safety().ok_or_else(ApiError::not_ready)?;
    let engine = &served.engine;
    // Nothing is generated: the prompt tokens charged on admission are the whole cost.
    let _charged = admit_tokens(caller.as_ref(), || {
        Ok(inputs.iter().map(|t| engine.text_prompt(t).len()).sum())
    })?;
    let trained_layout = served.adapter.is_some();
    let assessed = try_join_all(
        inputs
            .into_iter()
            .map(|text| moderate::assess(engine, safety, served.rule, trained_layout, text)),
    )
    .await?;
    let results: Vec<Value> = assessed.iter().map(result_json).collect();
    let body = json!({
        "id": format!("modr-{}", uuid::Uuid::new_v4().simple()),
        "model": served.name,
        "results": results,
    });
    Ok(json_response(hyper::StatusCode::OK, &body))
}

/// The texts of `input`: a non-empty string or a non-empty array of them.
fn parse_inputs(body: &Value, max: usize) -> Result<Vec<String>, ApiError> {
    let texts = match body.get("input") {
        None => return Err(ApiError::missing("input")),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(ApiError::unsupported(
                    "input",
                    "Only text inputs (strings) are supported.",
                )),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(ApiError::invalid_type(
                "input",
                "a string or an array of strings",
            ))
        }
    };
    if texts.is_empty() || texts.iter().any(|t| t.trim().is_empty()) {
        return Err(ApiError::invalid_value(
            "input",
            "'input' must hold at least one non-empty text.",
        ));
    }
    if texts.len() > max {
        return Err(ApiError::invalid_value(
            "input",
            format!(
                "'input' has {} texts; at most {max} are allowed.",
                texts.len()
            ),
        ));
    }
    Ok(texts)
}

fn result_json(a: &Assessment) -> Value {
    let scores = a.category_scores();
    let mut categories = serde_json::Map::new();
    let mut category_scores = serde_json::Map::new();
    let mut applied = serde_json::Map::new();
    // The flagged input's strongest category is flagged with it (at least one when flagged).
    let top = scores
        .iter()
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .filter(|(_, s)| *s > 0.0)
        .map(|(n, _)| *n);
    for (name, score) in &scores {
        categories.insert((*name).into(), json!(a.flagged && Some(*name) == top));
        category_scores.insert((*name).into(), json!(score));
        applied.insert((*name).into(), json!(["text"]));
    }
    json!({
        "flagged": a.flagged,
        "categories": categories,
        "category_scores": category_scores,
        "category_applied_input_types": applied,
        "cada": {
            "verdict_probabilities": {
                "allow": a.probs[0], "refuse": a.probs[1], "safe_complete": a.probs[2]
            },
            "refuse_log_odds": a.refuse_log_odds,
            "threshold": a.threshold,
            "precedents": a.precedents.iter().map(|p| json!({
                "id": p.id, "label": p.label.as_str(), "similarity": p.similarity
            })).collect::<Vec<_>>(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_forms() {
        assert_eq!(parse_inputs(&json!({"input": "a"}), 4).unwrap(), ["a"]);
        assert_eq!(
            parse_inputs(&json!({"input": ["a", "b"]}), 4).unwrap(),
            ["a", "b"]
        );
        for (body, code) in [
            (json!({}), "missing_required_parameter"),
            (json!({"input": 3}), "invalid_type"),
            (json!({"input": []}), "invalid_value"),
            (json!({"input": [""]}), "invalid_value"),
            (json!({"input": ["a", "b", "c"]}), "invalid_value"),
            (
                json!({"input": [{"type": "image_url"}]}),
                "unsupported_parameter",
            ),
        ] {
            let e = parse_inputs(&body, 2).unwrap_err();
            assert_eq!(
                (e.code, e.param.as_deref()),
                (code, Some("input")),
                "{body}"
            );
        }
    }
}
