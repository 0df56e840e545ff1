//! A request-log line, written by hand: the same bytes `serde_json` writes for a
//! [`RequestRecord`], in less than half the instructions. serde's writer escapes each string
//! byte by byte through its table and writes every fragment through `io::Write`; the strings
//! here (ids, paths, model and account names) almost never need escaping, so each is checked
//! in one pass and copied whole. One needing an escape goes through `serde_json` itself, so
//! the output cannot drift from the derived format: a test compares the two on every field
//! shape.

use neurolink_shared::ipc::RequestRecord;

/// Append `r` as one JSON object (no newline) to `out`.
pub fn write_record(out: &mut Vec<u8>, r: &RequestRecord) {
    out.extend_from_slice(b"{\"time\":");
    string(out, &r.time);
    out.extend_from_slice(b",\"requestId\":");
    string(out, &r.request_id);
    out.extend_from_slice(b",\"method\":");
    string(out, &r.method);
    out.extend_from_slice(b",\"path\":");
    string(out, &r.path);
    if let Some(model) = &r.model {
        out.extend_from_slice(b",\"model\":");
        string(out, model);
    }
    out.extend_from_slice(if r.stream {
        b",\"stream\":true"
    } else {
        b",\"stream\":false"
    });
    if let Some(account) = &r.account {
        out.extend_from_slice(b",\"account\":");
        string(out, account);
    }
    out.extend_from_slice(b",\"status\":");
    number(out, u64::from(r.status));
    out.extend_from_slice(b",\"attempts\":[");
    for (i, a) in r.attempts.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(b"{\"account\":");
        string(out, &a.account);
        out.extend_from_slice(b",\"outcome\":");
        string(out, &a.outcome);
        out.push(b'}');
    }
    out.push(b']');
    if let Some(p) = &r.fallback_provider {
        out.extend_from_slice(b",\"fallbackProvider\":");
        string(out, p);
    }
    if let Some(ms) = r.ttfb_ms {
        out.extend_from_slice(b",\"ttfbMs\":");
        number(out, ms);
    }
    out.extend_from_slice(b",\"totalMs\":");
    number(out, r.total_ms);
    out.extend_from_slice(b",\"inputTokens\":");
    number(out, r.input_tokens);
    out.extend_from_slice(b",\"outputTokens\":");
    number(out, r.output_tokens);
    if let Some(class) = &r.error_class {
        out.extend_from_slice(b",\"errorClass\":");
        string(out, class);
    }
    out.push(b'}');
}

/// A JSON string: copied whole when nothing in it needs an escape (JSON escapes `"`, `\` and
/// control characters; serde_json nothing else), else written by serde_json.
fn string(out: &mut Vec<u8>, s: &str) {
    if !needs_escape(s.as_bytes()) {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else if serde_json::to_writer(&mut *out, s).is_err() {
        // Writing to a Vec cannot fail; an empty string keeps the line valid JSON regardless.
        out.extend_from_slice(b"\"\"");
    }
}

/// Whether any byte is a control character, `"` or `\\`. Eight bytes are tested at a time
/// (the classic "has a byte less than n / equal to c" word tricks, exact as yes/no answers):
/// a byte-by-byte loop was the largest part of writing a line.
fn needs_escape(s: &[u8]) -> bool {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    let has_zero = |v: u64| v.wrapping_sub(ONES) & !v & HIGHS != 0;
    let has_less_than_space = |v: u64| v.wrapping_sub(ONES * 0x20) & !v & HIGHS != 0;
    let mut words = s.chunks_exact(8);
    for word in &mut words {
        let mut w = [0u8; 8];
        w.copy_from_slice(word);
        let v = u64::from_ne_bytes(w);
        if has_less_than_space(v)
            || has_zero(v ^ (ONES * u64::from(b'"')))
            || has_zero(v ^ (ONES * u64::from(b'\\')))
        {
            return true;
        }
    }
    words
        .remainder()
        .iter()
        .any(|&b| b < 0x20 || b == b'"' || b == b'\\')
}

/// A number in decimal.
fn number(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

#[cfg(test)]
mod tests {
    use neurolink_shared::ipc::AttemptRecord;

    use super::*;

    fn record() -> RequestRecord {
        RequestRecord {
            time: "2026-12-02T04:30:00.123Z".into(),
            request_id: "req_nl_abcdefghijklmnopqrstuvwx".into(),
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: Some("claude-sonnet-4-5".into()),
            stream: true,
            account: Some("work".into()),
            status: 200,
            attempts: vec![
                AttemptRecord {
                    account: "home".into(),
                    outcome: "rate_limit".into(),
                },
                AttemptRecord {
                    account: "work".into(),
                    outcome: "success".into(),
                },
            ],
            fallback_provider: Some("openai".into()),
            ttfb_ms: Some(412),
            total_ms: 18_446_744_073_709_551_615,
            input_tokens: 0,
            output_tokens: 1234,
            error_class: Some("stream_error".into()),
        }
    }

    fn same_as_serde(r: &RequestRecord) {
        let mut ours = Vec::new();
        write_record(&mut ours, r);
        let theirs = serde_json::to_vec(r).expect("serializes");
        assert_eq!(
            String::from_utf8_lossy(&ours),
            String::from_utf8_lossy(&theirs)
        );
    }

    #[test]
    fn writes_what_serde_writes_with_every_field() {
        same_as_serde(&record());
    }

    #[test]
    fn writes_what_serde_writes_without_the_optional_fields() {
        same_as_serde(&RequestRecord {
            model: None,
            stream: false,
            account: None,
            attempts: Vec::new(),
            fallback_provider: None,
            ttfb_ms: None,
            error_class: None,
            ..record()
        });
    }

    #[test]
    fn the_word_test_finds_every_byte_that_needs_an_escape_at_every_position() {
        let naive = |s: &[u8]| s.iter().any(|&b| b < 0x20 || b == b'"' || b == b'\\');
        for len in 0..24 {
            for at in 0..len {
                for b in 0..=255u8 {
                    let mut s = vec![b'a'; len];
                    s[at] = b;
                    // Neighbours that sit just above the limits: no false alarms from them.
                    if at + 1 < len {
                        s[at + 1] = [0x20, 0x21, 0x23, 0x5b, 0x5d, 0x80, 0xff][usize::from(b) % 7];
                    }
                    assert_eq!(needs_escape(&s), naive(&s), "{s:?}");
                }
            }
        }
    }

    #[test]
    fn escapes_what_json_escapes_and_passes_the_rest() {
        same_as_serde(&RequestRecord {
            path: "/v1/\"odd\"\\path\n\t\u{1}\u{7f}".into(),
            model: Some("modèle-ünïcode-✓-🦀".into()),
            account: Some("a\u{1f}b".into()),
            ..record()
        });
    }
}
