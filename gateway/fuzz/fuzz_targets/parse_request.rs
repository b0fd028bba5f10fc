//! Request parsing under arbitrary input: any bytes that are JSON go through the chat and text
//! completion validators, which must answer `Ok` or an error, never panic.

#![no_main]

use cada_gateway::openai::chat::ChatRequest;
use cada_gateway::openai::completion::CompletionRequest;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(body) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let _ = ChatRequest::parse(&body, 2048, 256);
    let _ = CompletionRequest::parse(&body, 2048);
});
