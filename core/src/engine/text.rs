//! Turning sampled token bytes into text: incremental UTF-8 decoding (a character may span
//! tokens) and stop-sequence matching that holds back text which might still become a stop.

/// Accumulates token bytes and releases the longest valid UTF-8 prefix.
#[derive(Debug, Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds bytes and returns the text that is complete so far. Invalid bytes become U+FFFD.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(bad) => {
                            out.push(char::REPLACEMENT_CHARACTER);
                            self.pending.drain(..valid + bad);
                        }
                        None => {
                            // Incomplete sequence at the end: keep it for the next token.
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Whatever is left at the end of generation (an incomplete character) as U+FFFD.
    pub fn finish(&mut self) -> String {
        let out = if self.pending.is_empty() {
            String::new()
        } else {
            char::REPLACEMENT_CHARACTER.to_string()
        };
        self.pending.clear();
        out
    }
}

/// Finds stop sequences in streamed text without ever releasing part of a stop sequence.
#[derive(Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
    /// The stop sequence that ended the text, once one has.
    matched: Option<String>,
}

/// Result of feeding text to a [`StopMatcher`].
#[derive(Debug, PartialEq, Eq)]
pub struct StopOutcome {
    /// Text that is safe to release now.
    pub text: String,
    /// A stop sequence was found; generation must end and nothing after it is released.
    pub stopped: bool,
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops: stops.into_iter().filter(|s| !s.is_empty()).collect(),
            held: String::new(),
            matched: None,
        }
    }

    /// The stop sequence that was found, if any (the earliest in the text; the longest on a tie).
    pub fn matched(&self) -> Option<&str> {
        self.matched.as_deref()
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        if self.stops.is_empty() {
            return StopOutcome {
                text: std::mem::take(&mut self.held),
                stopped: false,
            };
        }
        if let Some((pos, stop)) = self
            .stops
            .iter()
            .filter_map(|s| self.held.find(s.as_str()).map(|p| (p, s)))
            .min_by(|a, b| a.0.cmp(&b.0).then(b.1.len().cmp(&a.1.len())))
        {
            self.matched = Some(stop.clone());
            let text = self.held[..pos].to_string();
            self.held.clear();
            return StopOutcome {
                text,
                stopped: true,
            };
        }
        // Hold back the longest suffix that is a proper prefix of some stop sequence.
        let keep = self
            .held
            .char_indices()
            .map(|(i, _)| i)
            .find(|&i| {
                let suffix = &self.held[i..];
                self.stops.iter().any(|s| s.starts_with(suffix))
            })
            .unwrap_or(self.held.len());
        let text = self.held[..keep].to_string();
        self.held.drain(..keep);
        StopOutcome {
            text,
            stopped: false,
        }
    }

    /// Releases held text when generation ends for another reason.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let mut u = Utf8Stream::default();
        let bytes = "é😀".as_bytes();
        assert_eq!(u.push(&bytes[..1]), "");
        assert_eq!(u.push(&bytes[1..3]), "é");
        assert_eq!(u.push(&bytes[3..5]), "");
        assert_eq!(u.push(&bytes[5..]), "😀");
        assert_eq!(u.finish(), "");
    }

    #[test]
    fn utf8_invalid_bytes_are_replaced() {
        let mut u = Utf8Stream::default();
        assert_eq!(u.push(b"a\xffb"), "a\u{FFFD}b");
        assert_eq!(u.push(b"\xe2\x82"), "");
        assert_eq!(u.finish(), "\u{FFFD}");
    }

    #[test]
    fn stop_across_token_boundaries() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(
            m.push("hello E"),
            StopOutcome {
                text: "hello ".into(),
                stopped: false
            }
        );
        assert_eq!(
            m.push("N"),
            StopOutcome {
                text: "".into(),
                stopped: false
            }
        );
        assert_eq!(
            m.push("D and more"),
            StopOutcome {
                text: "".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(
            m.push("EN"),
            StopOutcome {
                text: "".into(),
                stopped: false
            }
        );
        assert_eq!(
            m.push("X"),
            StopOutcome {
                text: "ENX".into(),
                stopped: false
            }
        );
        assert_eq!(
            m.push("E"),
            StopOutcome {
                text: "".into(),
                stopped: false
            }
        );
        assert_eq!(m.finish(), "E");
    }

    #[test]
    fn earliest_of_several_stops_wins() {
        let mut m = StopMatcher::new(vec!["world".into(), "lo w".into(), "".into()]);
        let out = m.push("hello world");
        assert_eq!(
            out,
            StopOutcome {
                text: "hel".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn overlapping_prefix_keeps_shortest_needed() {
        // "aab" must be found even though "a" then "a" looks like restarting the match.
        let mut m = StopMatcher::new(vec!["aab".into()]);
        assert_eq!(m.push("xa").text, "x");
        assert_eq!(m.push("a").text, "");
        assert_eq!(
            m.push("b"),
            StopOutcome {
                text: "".into(),
                stopped: true
            }
        );
    }

    #[test]
    fn multibyte_stop_and_text() {
        let mut m = StopMatcher::new(vec!["»".into()]);
        assert_eq!(
            m.push("«é»z"),
            StopOutcome {
                text: "«é".into(),
                stopped: true
            }
        );
        let mut n = StopMatcher::new(vec![]);
        assert_eq!(n.push("abc").text, "abc");
    }
}
