//! Redaction of personal data before anything is stored: cases and response records outlive the
//! request and are read by people, so emails, phone numbers, card numbers and IP addresses are
//! replaced with placeholders (`[email]`, `[phone]`, `[card]`, `[ip]`; custom patterns give
//! `[redacted]`). Patterns are tuned to leave version numbers, years, dates and short numbers be.

use regex::Regex;
use serde::Deserialize;

use super::StoreError;

/// Which kinds of personal data to redact. All on by default.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedactionConfig {
    pub emails: bool,
    /// Numbers of 10 to 15 digits in phone layout (8 to 15 with a leading `+`).
    pub phones: bool,
    /// 13 to 19 digits that pass the Luhn check.
    pub cards: bool,
    /// IPv4 and IPv6 addresses.
    pub ips: bool,
    /// Further regexes (Rust `regex` syntax) for data of the deployment's own (account numbers,
    /// internal host names); matches become `[redacted]`.
    pub extra: Vec<String>,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            emails: true,
            phones: true,
            cards: true,
            ips: true,
            extra: Vec::new(),
        }
    }
}

/// Whether a regex match really is the thing: `(text, start, end)`.
type Accept = fn(&str, usize, usize) -> bool;

#[derive(Debug, Clone)]
struct Rule {
    regex: Regex,
    placeholder: &'static str,
    accept: Accept,
}

/// Compiled redaction rules, applied in order: emails, cards, IPs, phones, then extra patterns.
#[derive(Debug, Clone)]
pub struct Redactor {
    rules: Vec<Rule>,
}

const EMAIL: &str = r"(?i)[a-z0-9._%+-]+@[a-z0-9-]+(?:\.[a-z0-9-]+)*\.[a-z]{2,}";
const CARD: &str = r"\b\d(?:[ -]?\d){12,18}\b";
const IPV4: &str =
    r"\b(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\b";
const IPV6: &str = r"(?i)\b(?:[0-9a-f]{1,4}:){7}[0-9a-f]{1,4}\b|\b(?:[0-9a-f]{1,4}:){1,7}:(?:[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6})?|::[0-9a-f]{1,4}(?::[0-9a-f]{1,4}){0,6}";
/// Optional country code, optional area code in parentheses, then at least two digit groups
/// separated by space, dot or dash; or E.164 (`+` and digits).
const PHONE: &str =
    r"(?:\+\d{1,3}[ .-]?)?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]\d{2,4}){1,5}|\+\d{8,15}";

impl Redactor {
    /// Compiles the rules; an invalid extra pattern is an error naming it.
    pub fn new(config: RedactionConfig) -> Result<Self, StoreError> {
        let mut rules = Vec::new();
        let builtin = [
            (config.emails, EMAIL, "[email]", any as Accept),
            (config.cards, CARD, "[card]", card),
            (config.ips, IPV4, "[ip]", ipv4),
            (config.ips, IPV6, "[ip]", ipv6),
            (config.phones, PHONE, "[phone]", phone),
        ];
        for (on, pattern, placeholder, accept) in builtin {
            if on {
                rules.push(Rule {
                    regex: compile(pattern)?,
                    placeholder,
                    accept,
                });
            }
        }
        for pattern in &config.extra {
            rules.push(Rule {
                regex: compile(pattern)?,
                placeholder: "[redacted]",
                accept: any,
            });
        }
        Ok(Self { rules })
    }

    /// `text` with every match replaced by its placeholder.
    pub fn redact(&self, text: &str) -> String {
        let mut text = text.to_owned();
        for rule in &self.rules {
            text = apply(rule, &text);
        }
        text
    }

    /// Redacts every string inside a JSON value (message lists, tool arguments); keys stay.
    pub fn redact_value(&self, value: &mut serde_json::Value) {
        match value {
            serde_json::Value::String(s) => *s = self.redact(s),
            serde_json::Value::Array(items) => {
                items.iter_mut().for_each(|v| self.redact_value(v));
            }
            serde_json::Value::Object(map) => {
                map.values_mut().for_each(|v| self.redact_value(v));
            }
            _ => {}
        }
    }
}

fn compile(pattern: &str) -> Result<Regex, StoreError> {
    Regex::new(pattern).map_err(|e| StoreError::InvalidPattern {
        pattern: pattern.to_owned(),
        message: e.to_string(),
    })
}

fn apply(rule: &Rule, text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for m in rule.regex.find_iter(text) {
        if (rule.accept)(text, m.start(), m.end()) {
            out.push_str(&text[last..m.start()]);
            out.push_str(rule.placeholder);
            last = m.end();
        }
    }
    out.push_str(&text[last..]);
    out
}

fn any(_: &str, _: usize, _: usize) -> bool {
    true
}

fn before(text: &str, start: usize) -> Option<char> {
    text[..start].chars().next_back()
}

/// The character after the match and the one after that.
fn after(text: &str, end: usize) -> (Option<char>, Option<char>) {
    let mut rest = text[end..].chars();
    (rest.next(), rest.next())
}

fn digits(s: &str) -> impl Iterator<Item = u32> + '_ {
    s.chars().filter_map(|c| c.to_digit(10))
}

/// 13 to 19 digits passing the Luhn check, not written as a phone number (`+49151...`).
fn card(text: &str, start: usize, end: usize) -> bool {
    let ds: Vec<u32> = digits(&text[start..end]).collect();
    if !(13..=19).contains(&ds.len()) || before(text, start) == Some('+') {
        return false;
    }
    let sum: u32 = ds
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| match (i % 2 == 1, d * 2) {
            (true, dd) if dd > 9 => dd - 9,
            (true, dd) => dd,
            (false, _) => d,
        })
        .sum();
    sum % 10 == 0
}

/// Not part of a longer dotted run (`1.2.3.4.5`, `v10.0.0.1` is fine).
fn ipv4(text: &str, start: usize, end: usize) -> bool {
    let prev_dot_run =
        text[..start].ends_with('.') && before(text, start - 1).is_some_and(|c| c.is_ascii_digit());
    let (next, next2) = after(text, end);
    let next_dot_run = next == Some('.') && next2.is_some_and(|c| c.is_ascii_digit());
    !prev_dot_run && !next_dot_run
}

/// Has a digit (`add::new`, `dead::beef` are code) and stands alone (`Self::ADD1` is code too).
fn ipv6(text: &str, start: usize, end: usize) -> bool {
    let s = &text[start..end];
    let loose = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == ':' || c == '_');
    s.chars().any(|c| c.is_ascii_digit())
        && s.matches(':').count() >= 2
        && !loose(before(text, start))
        && !loose(after(text, end).0)
}

fn phone(text: &str, start: usize, end: usize) -> bool {
    let s = &text[start..end];
    let n = digits(s).count();
    let enough = if s.starts_with('+') {
        (8..=15).contains(&n)
    } else {
        (10..=15).contains(&n)
    };
    let glued_before =
        before(text, start).is_some_and(|c| c.is_alphanumeric() || "._/+-".contains(c));
    let (next, next2) = after(text, end);
    let glued_after = next.is_some_and(|c| c.is_alphanumeric() || ":/_".contains(c))
        || (next.is_some_and(|c| ".,-".contains(c)) && next2.is_some_and(|c| c.is_ascii_digit()));
    enough && !glued_before && !glued_after && !is_date(s)
}

/// Starts with a date (`2024-01-15 12` is a timestamp, not a phone).
fn is_date(s: &str) -> bool {
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| {
        b.get(r.clone())
            .filter(|d| d.iter().all(u8::is_ascii_digit))
            .map(|d| d.iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let sep = b.get(4).filter(|c| b"-./".contains(c));
    matches!(num(0..4), Some(1900..=2099))
        && sep.is_some()
        && b.get(7) == sep
        && matches!(num(5..7), Some(1..=12))
        && matches!(num(8..10), Some(1..=31))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(RedactionConfig::default()).unwrap()
    }

    #[test]
    fn redacts_emails() {
        let r = redactor();
        assert_eq!(
            r.redact("mail jane.doe+spam@mail.example.co.uk or BOB@x.io."),
            "mail [email] or [email]."
        );
        assert_eq!(r.redact("@handle and a@b"), "@handle and a@b");
    }

    #[test]
    fn redacts_phones_in_common_layouts() {
        let r = redactor();
        for phone in [
            "+1 (555) 123-4567",
            "555-123-4567",
            "+44 20 7946 0958",
            "(555) 123-4567",
            "555.123.4567",
            "+33 1 23 45 67 89",
            "+4915112345678",
            "1 800 555 0199",
        ] {
            assert_eq!(
                r.redact(&format!("call me at {phone} today")),
                "call me at [phone] today",
                "{phone}"
            );
        }
        assert_eq!(r.redact("Phone: 555-123-4567."), "Phone: [phone].");
        assert_eq!(r.redact("tel:+15551234567"), "tel:[phone]");
    }

    #[test]
    fn leaves_numbers_that_are_not_phones() {
        let r = redactor();
        for text in [
            "upgrade from 1.2.3 to 10.0.19041",
            "in 2023 and 2024, about 12 345 people",
            "released 2024-01-15 12:30:00 UTC",
            "meet on 2024-01-15",
            "pi is 3.14159265358979",
            "it costs $1,234,567.89",
            "port 8080, pid 4242, error 0x80070005",
            "a 555-1234 short number",
            "order 12345678901234567890",
            "ISBN 978-3-16-148410-0",
            "logged 2024.01.15 0930 UTC",
        ] {
            assert_eq!(r.redact(text), text);
        }
    }

    #[test]
    fn redacts_cards_only_when_luhn_valid() {
        let r = redactor();
        assert_eq!(r.redact("card 4111 1111 1111 1111 exp"), "card [card] exp");
        assert_eq!(r.redact("card 4111-1111-1111-1111"), "card [card]");
        assert_eq!(r.redact("amex 378282246310005"), "amex [card]");
        assert_eq!(r.redact("id 4111 1111 1111 1112"), "id 4111 1111 1111 1112");
    }

    #[test]
    fn redacts_ip_addresses_but_not_versions() {
        let r = redactor();
        assert_eq!(
            r.redact("ssh root@10.0.0.1 or 192.168.1.254."),
            "ssh root@[ip] or [ip]."
        );
        assert_eq!(r.redact("v6 fe80::1ff:fe23:4567:890a"), "v6 [ip]");
        assert_eq!(
            r.redact("localhost ::1 and 2001:db8::8a2e:370:7334"),
            "localhost [ip] and [ip]"
        );
        for text in [
            "version 1.2.3",
            "1.2.3.4.5 is a version",
            "999.1.1.1",
            "use std::fmt; Self::ADD; add::new",
            "at 12:30:45",
        ] {
            assert_eq!(r.redact(text), text);
        }
    }

    #[test]
    fn extra_patterns_and_switches() {
        let r = Redactor::new(RedactionConfig {
            extra: vec![r"\bACCT-\d{6}\b".into()],
            phones: false,
            ..RedactionConfig::default()
        })
        .unwrap();
        assert_eq!(
            r.redact("ACCT-123456 at 555-123-4567"),
            "[redacted] at 555-123-4567"
        );
        let err = Redactor::new(RedactionConfig {
            extra: vec!["(unclosed".into()],
            ..RedactionConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.code(), "invalid_redaction_pattern");
        assert!(err.to_string().contains("(unclosed"), "{err}");
    }

    #[test]
    fn redacts_strings_inside_json() {
        let mut v = serde_json::json!([
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": [{"type": "text", "text": "I am bob@example.com"}]},
        ]);
        redactor().redact_value(&mut v);
        assert_eq!(v[1]["content"][0]["text"], "I am [email]");
        assert_eq!(v[0]["content"], "be nice");
    }
}
