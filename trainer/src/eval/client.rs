//! HTTP to an OpenAI-compatible server: the model list and one chat completion per prompt, with
//! retries on 429/503 and the cada gateway's response extensions read where a server has them.

use std::time::{Duration, Instant};

use cada_core::policy::Label;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// Retries after a 429 or 503 before the item counts as failed.
const RETRIES: u32 = 4;
/// First wait between retries; it doubles each time unless the server sends `Retry-After`.
const BACKOFF: Duration = Duration::from_millis(500);
/// Longest wait honoured between retries.
const MAX_WAIT: Duration = Duration::from_secs(30);
/// Characters of an error response body kept in the error message.
const ERROR_BODY_CHARS: usize = 300;

/// The gateway's safety modes, sent as the `safety_mode` request extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SafetyMode {
    /// No deliberation.
    Off,
    /// Deliberate with the codes and retrieved precedent cases in context.
    Cases,
    /// Deliberate with the trained adapter, no cases in context.
    Trained,
    /// Probe the risk first; deliberate only where it is needed.
    Adaptive,
}

impl SafetyMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SafetyMode::Off => "off",
            SafetyMode::Cases => "cases",
            SafetyMode::Trained => "trained",
            SafetyMode::Adaptive => "adaptive",
        }
    }
}

/// What every request carries besides the prompt.
#[derive(Debug, Clone)]
pub struct RequestOptions {
    pub model: String,
    pub max_tokens: u32,
    pub temperature: f64,
    /// Sent as `safety_mode` only when set.
    pub mode: Option<SafetyMode>,
    /// Sent as `include_reasoning: true` only when set.
    pub include_reasoning: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid base URL `{url}`: {message}")]
    BaseUrl { url: String, message: String },
    #[error("cannot reach {url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("no answer from {url} within {secs} s")]
    Timeout { url: String, secs: u64 },
    #[error("request to {url} failed: {message}")]
    Transport { url: String, message: String },
    #[error("{url} answered HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url} answered with an unexpected body: {message}")]
    Body { url: String, message: String },
    #[error("{url} lists no models; pass --model")]
    NoModels { url: String },
}

/// A precedent the gateway retrieved for a request (`cada.precedents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PrecedentRef {
    pub id: String,
    pub label: Option<Label>,
    pub similarity: Option<f32>,
}

/// The gateway's `cada` response object; other servers send none.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct CadaExtension {
    /// The safety mode the gateway ran.
    pub mode: Option<String>,
    /// The deliberation's verdict; null when the mode does not deliberate.
    pub verdict: Option<Label>,
    pub verdict_probability: Option<f32>,
    /// Normalised probabilities of the three verdicts.
    pub verdict_probabilities: Option<VerdictProbabilities>,
    pub policy_version: Option<String>,
    pub precedents: Option<Vec<PrecedentRef>>,
    /// Codes the request came close to.
    pub borderline: Option<Vec<String>>,
    /// The gateway's own refusal reading of the answer: `none`, `partial` or `full`.
    pub refusal: Option<String>,
}

/// `cada.verdict_probabilities`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct VerdictProbabilities {
    pub allow: f32,
    pub refuse: f32,
    pub safe_complete: f32,
}

/// One answered chat completion.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// `choices[0].message.content`; empty when the server sent none.
    pub content: String,
    /// `choices[0].message.reasoning_content`, sent by the gateway with `include_reasoning`.
    pub reasoning: Option<String>,
    pub completion_tokens: Option<u64>,
    /// `usage.completion_tokens_details.reasoning_tokens`.
    pub reasoning_tokens: Option<u64>,
    pub cada: Option<CadaExtension>,
    /// Time from sending the request that succeeded to reading its whole body.
    pub latency: Duration,
    /// Requests sent, retries included.
    pub attempts: u32,
}

/// A client bound to one base URL.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    /// Base URL without a trailing slash.
    base: String,
    api_key: Option<String>,
    timeout: Duration,
}

impl Client {
    pub fn new(
        base_url: &str,
        api_key: Option<String>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let base = base_url.trim().trim_end_matches('/').to_owned();
        let bad = |message: String| ClientError::BaseUrl {
            url: base_url.to_owned(),
            message,
        };
        let parsed = reqwest::Url::parse(&base).map_err(|e| bad(e.to_string()))?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(bad("expected an http:// or https:// URL".into()));
        }
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| bad(error_chain(&e)))?;
        Ok(Self {
            http,
            base,
            api_key,
            timeout,
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The first id `GET {base}/models` lists.
    pub async fn first_model(&self) -> Result<String, ClientError> {
        let url = format!("{}/models", self.base);
        let (status, text, _) = self.send(self.http.get(&url), &url).await?;
        if !status.is_success() {
            return Err(status_error(&url, status, &text));
        }
        let list: ModelList = serde_json::from_str(&text).map_err(|e| ClientError::Body {
            url: url.clone(),
            message: e.to_string(),
        })?;
        list.data
            .into_iter()
            .next()
            .map(|m| m.id)
            .ok_or(ClientError::NoModels { url })
    }

    /// Sends one prompt as a user message; retries 429 and 503 with backoff.
    pub async fn chat(
        &self,
        options: &RequestOptions,
        prompt: &str,
    ) -> Result<Completion, ClientError> {
        let url = format!("{}/chat/completions", self.base);
        let body = request_body(options, prompt);
        let mut attempts = 0;
        let (text, latency) = loop {
            attempts += 1;
            let started = Instant::now();
            let (status, text, retry_after) =
                self.send(self.http.post(&url).json(&body), &url).await?;
            let latency = started.elapsed();
            let busy = matches!(
                status,
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE
            );
            if busy && attempts <= RETRIES {
                tokio::time::sleep(retry_wait(attempts, retry_after)).await;
                continue;
            }
            if !status.is_success() {
                return Err(status_error(&url, status, &text));
            }
            break (text, latency);
        };
        parse_completion(&text, latency, attempts).map_err(|message| ClientError::Body {
            url: url.clone(),
            message,
        })
    }

    /// Sends a request and reads its whole body: status, text and any `Retry-After` wait.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        url: &str,
    ) -> Result<(StatusCode, String, Option<Duration>), ClientError> {
        let request = match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        };
        let response = request.send().await.map_err(|e| self.transport(url, &e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let text = response.text().await.map_err(|e| self.transport(url, &e))?;
        Ok((status, text, retry_after))
    }

    fn transport(&self, url: &str, e: &reqwest::Error) -> ClientError {
        let url = url.to_owned();
        if e.is_timeout() {
            ClientError::Timeout {
                url,
                secs: self.timeout.as_secs(),
            }
        } else if e.is_connect() {
            // The innermost cause is the readable one ("Connection refused (os error 111)").
            let mut cause: &dyn std::error::Error = e;
            while let Some(next) = cause.source() {
                cause = next;
            }
            ClientError::Unreachable {
                url,
                message: cause.to_string(),
            }
        } else {
            ClientError::Transport {
                url,
                message: error_chain(e),
            }
        }
    }
}

/// The JSON body of one chat completion request; extension fields only when asked for.
pub fn request_body(options: &RequestOptions, prompt: &str) -> Value {
    let mut body = json!({
        "model": options.model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": options.max_tokens,
        "temperature": options.temperature,
    });
    if let Some(mode) = options.mode {
        body["safety_mode"] = json!(mode.as_str());
    }
    if options.include_reasoning {
        body["include_reasoning"] = json!(true);
    }
    body
}

/// Reads a chat completion body, `cada` extension and reasoning included where present.
pub fn parse_completion(
    text: &str,
    latency: Duration,
    attempts: u32,
) -> Result<Completion, String> {
    let response: ChatResponse = serde_json::from_str(text).map_err(|e| e.to_string())?;
    let message = response
        .choices
        .into_iter()
        .next()
        .ok_or("the response has no choices")?
        .message;
    let usage = response.usage.unwrap_or_default();
    Ok(Completion {
        content: message.content.unwrap_or_default(),
        reasoning: message.reasoning_content,
        completion_tokens: usage.completion_tokens,
        reasoning_tokens: usage
            .completion_tokens_details
            .and_then(|d| d.reasoning_tokens),
        cada: response.cada,
        latency,
        attempts,
    })
}

/// The wait before retry number `retry` (from 1): the server's `Retry-After` if it sent one,
/// else exponential backoff; never more than `MAX_WAIT`.
fn retry_wait(retry: u32, retry_after: Option<Duration>) -> Duration {
    retry_after
        .unwrap_or_else(|| BACKOFF.saturating_mul(2u32.saturating_pow(retry.saturating_sub(1))))
        .min(MAX_WAIT)
}

fn status_error(url: &str, status: StatusCode, body: &str) -> ClientError {
    // OpenAI-style errors carry a message; otherwise show the start of the body.
    let message = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .unwrap_or_else(|| body.trim().chars().take(ERROR_BODY_CHARS).collect());
    ClientError::Status {
        url: url.to_owned(),
        status: status.as_u16(),
        body: message,
    }
}

/// An error and its causes, `: `-separated.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[derive(Debug, Deserialize)]
struct ModelList {
    data: Vec<ModelObject>,
}

#[derive(Debug, Deserialize)]
struct ModelObject {
    id: String,
}

#[derive(Debug, Deserialize)]
struct ChatResponse {
    choices: Vec<Choice>,
    usage: Option<Usage>,
    cada: Option<CadaExtension>,
}

#[derive(Debug, Deserialize)]
struct Choice {
    message: Message,
}

#[derive(Debug, Deserialize)]
struct Message {
    content: Option<String>,
    reasoning_content: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
struct Usage {
    completion_tokens: Option<u64>,
    completion_tokens_details: Option<UsageDetails>,
}

#[derive(Debug, Deserialize)]
struct UsageDetails {
    reasoning_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(mode: Option<SafetyMode>, include_reasoning: bool) -> RequestOptions {
        RequestOptions {
            model: "m".into(),
            max_tokens: 16,
            temperature: 0.0,
            mode,
            include_reasoning,
        }
    }

    #[test]
    fn extensions_are_sent_only_when_asked_for() {
        let plain = request_body(&options(None, false), "hi");
        assert_eq!(
            plain,
            json!({"model": "m", "messages": [{"role": "user", "content": "hi"}],
                   "max_tokens": 16, "temperature": 0.0})
        );
        let ext = request_body(&options(Some(SafetyMode::Adaptive), true), "hi");
        assert_eq!(ext["safety_mode"], "adaptive");
        assert_eq!(ext["include_reasoning"], true);
    }

    #[test]
    fn plain_and_extended_responses_parse() {
        let plain = r#"{"choices":[{"message":{"role":"assistant","content":"Sure."}}],
                        "usage":{"prompt_tokens":3,"completion_tokens":2}}"#;
        let c = parse_completion(plain, Duration::from_millis(5), 1).unwrap();
        assert_eq!(c.content, "Sure.");
        assert_eq!((c.completion_tokens, c.reasoning_tokens), (Some(2), None));
        assert!(c.cada.is_none() && c.reasoning.is_none());

        let extended = r#"{"choices":[{"message":{"content":"No.","reasoning_content":"r"}}],
            "usage":{"completion_tokens":9,"completion_tokens_details":{"reasoning_tokens":7}},
            "cada":{"mode":"cases","verdict":"refuse","verdict_probability":0.8,
                    "verdict_probabilities":{"allow":0.1,"refuse":0.8,"safe_complete":0.1},
                    "policy_version":"abc","precedents":[{"id":"case-1","label":"refuse",
                    "similarity":0.7}],"borderline":["violence"],"refusal":"full"}}"#;
        let c = parse_completion(extended, Duration::ZERO, 2).unwrap();
        let cada = c.cada.unwrap();
        assert_eq!(cada.verdict, Some(Label::Refuse));
        assert_eq!(cada.verdict_probabilities.map(|p| p.refuse), Some(0.8));
        assert_eq!(cada.precedents.unwrap()[0].id, "case-1");
        assert_eq!((c.reasoning_tokens, c.attempts), (Some(7), 2));
        assert_eq!(c.reasoning.as_deref(), Some("r"));

        let null_verdict = r#"{"choices":[{"message":{"content":null}}],"cada":{"verdict":null}}"#;
        let c = parse_completion(null_verdict, Duration::ZERO, 1).unwrap();
        assert_eq!(c.content, "");
        assert_eq!(c.cada.unwrap().verdict, None);

        assert!(parse_completion(r#"{"choices":[]}"#, Duration::ZERO, 1).is_err());
        assert!(parse_completion("not json", Duration::ZERO, 1).is_err());
    }

    #[test]
    fn retries_back_off_unless_the_server_says_when() {
        let waits: Vec<Duration> = (1..=RETRIES).map(|r| retry_wait(r, None)).collect();
        assert_eq!(waits, [BACKOFF, BACKOFF * 2, BACKOFF * 4, BACKOFF * 8]);
        assert_eq!(retry_wait(40, None), MAX_WAIT);
        assert_eq!(retry_wait(3, Some(Duration::ZERO)), Duration::ZERO);
        assert_eq!(retry_wait(1, Some(Duration::from_secs(3600))), MAX_WAIT);
    }

    #[test]
    fn error_bodies_are_summarised() {
        let e = status_error(
            "u",
            StatusCode::BAD_REQUEST,
            r#"{"error":{"message":"bad model"}}"#,
        );
        assert_eq!(e.to_string(), "u answered HTTP 400: bad model");
        let e = status_error("u", StatusCode::BAD_GATEWAY, &"x".repeat(1000));
        assert_eq!(
            e.to_string().len(),
            "u answered HTTP 502: ".len() + ERROR_BODY_CHARS
        );
    }

    #[test]
    fn base_urls_are_checked_and_trimmed() {
        let c = Client::new("http://127.0.0.1:8080/v1/", None, Duration::from_secs(1)).unwrap();
        assert_eq!(c.base_url(), "http://127.0.0.1:8080/v1");
        assert!(Client::new("127.0.0.1:8080", None, Duration::from_secs(1)).is_err());
        assert!(Client::new("ftp://host/v1", None, Duration::from_secs(1)).is_err());
    }
}
