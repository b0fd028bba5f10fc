//! Server-sent events framing: `data: <json>\n\n` per event and a closing `data: [DONE]\n\n`.

use bytes::Bytes;

/// One SSE event carrying a JSON payload.
pub fn event(payload: &serde_json::Value) -> Bytes {
    let mut out = Vec::with_capacity(256);
    out.extend_from_slice(b"data: ");
    // serde_json never writes a raw newline inside a value, so one `data:` line is enough.
    out.extend_from_slice(payload.to_string().as_bytes());
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// The terminating event OpenAI clients wait for.
pub fn done() -> Bytes {
    Bytes::from_static(b"data: [DONE]\n\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_are_single_data_lines() {
        let b = event(&json!({"text": "line1\nline2"}));
        assert_eq!(&b[..], b"data: {\"text\":\"line1\\nline2\"}\n\n");
        assert_eq!(&done()[..], b"data: [DONE]\n\n");
    }
}
