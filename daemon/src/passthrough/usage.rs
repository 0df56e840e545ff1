//! Reading token usage from an answer while its bytes pass through, without holding them.
//!
//! For SSE only two events carry usage (`message_start`, `message_delta`), and they are small. The
//! scanner walks each chunk with `memchr`, keeps only the lines that can matter (`event:` lines and
//! the `data:` line of those two events) and skips the rest without copying. A general SSE parser
//! would copy every event, including the large `content_block_delta`s, to throw them away. A plain
//! JSON answer keeps a bounded copy and is read once at the end.

use bytes::Bytes;
use serde::Deserialize;

use super::peek;
use crate::pool::Usage;

/// The longest line kept; `message_start` is well under a kilobyte.
const MAX_LINE: usize = 64 * 1024;
/// The largest non-streamed body inspected for usage.
const MAX_JSON: usize = 8 * 1024 * 1024;

#[derive(Debug, Default, Deserialize)]
struct RawUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl Usage {
    /// Usage values are running totals: keep the largest seen of each.
    fn absorb(&mut self, raw: &RawUsage) {
        let max = |a: &mut u64, b: Option<u64>| *a = (*a).max(b.unwrap_or(0));
        max(&mut self.input_tokens, raw.input_tokens);
        max(&mut self.output_tokens, raw.output_tokens);
        max(
            &mut self.cache_creation_input_tokens,
            raw.cache_creation_input_tokens,
        );
        max(
            &mut self.cache_read_input_tokens,
            raw.cache_read_input_tokens,
        );
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Line {
    /// At the start of a line, deciding (we may have a few bytes buffered).
    Undecided,
    Keep,
    Skip,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    None,
    Interesting,
    Other,
}

/// Incremental usage reader for an Anthropic SSE stream.
#[derive(Debug)]
pub struct SseUsage {
    line: Vec<u8>,
    mode: Line,
    event: Event,
    pub usage: Usage,
}

impl Default for SseUsage {
    fn default() -> Self {
        Self {
            line: Vec::new(),
            mode: Line::Undecided,
            event: Event::None,
            usage: Usage::default(),
        }
    }
}

impl SseUsage {
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            let (segment, ends_line) = match memchr::memchr(b'\n', chunk) {
                Some(i) => (&chunk[..i], true),
                None => (chunk, false),
            };
            chunk = &chunk[segment.len() + usize::from(ends_line)..];
            match self.mode {
                Line::Skip => {}
                Line::Keep => self.push(segment),
                Line::Undecided => {
                    self.push(segment);
                    self.decide(ends_line);
                }
            }
            if ends_line {
                if self.mode == Line::Keep || self.mode == Line::Undecided {
                    self.finish_line();
                }
                self.line.clear();
                self.mode = Line::Undecided;
            }
        }
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.line.len() + bytes.len() > MAX_LINE {
            self.mode = Line::Skip;
            self.line.clear();
        } else {
            self.line.extend_from_slice(bytes);
        }
    }

    /// Decide from the first bytes whether this line can matter.
    fn decide(&mut self, complete: bool) {
        if self.mode != Line::Undecided {
            return;
        }
        let l = self.line.as_slice();
        if l.starts_with(b"event:") {
            self.mode = Line::Keep;
        } else if l.starts_with(b"data:") {
            self.mode = if self.event == Event::Other {
                Line::Skip
            } else {
                Line::Keep
            };
        } else if l.len() >= 6 || complete {
            // Comments, `id:`, `retry:`, blank lines: a blank line ends the event.
            if complete && (l.is_empty() || l == b"\r") {
                self.event = Event::None;
            }
            self.mode = Line::Skip;
        }
        if self.mode == Line::Skip {
            self.line.clear();
        }
    }

    fn finish_line(&mut self) {
        let line = self.line.strip_suffix(b"\r").unwrap_or(&self.line);
        if let Some(name) = line.strip_prefix(b"event:") {
            let name = name.trim_ascii();
            self.event = if name == b"message_start" || name == b"message_delta" {
                Event::Interesting
            } else {
                Event::Other
            };
        } else if let Some(data) = line.strip_prefix(b"data:") {
            #[derive(Deserialize)]
            struct Data {
                #[serde(default)]
                message: Option<Message>,
                #[serde(default)]
                usage: Option<RawUsage>,
            }
            #[derive(Deserialize)]
            struct Message {
                #[serde(default)]
                usage: Option<RawUsage>,
            }
            if let Ok(d) = serde_json::from_slice::<Data>(data.trim_ascii()) {
                if let Some(u) = d.message.and_then(|m| m.usage) {
                    self.usage.absorb(&u);
                }
                if let Some(u) = d.usage {
                    self.usage.absorb(&u);
                }
            }
        }
    }
}

/// Usage from a complete (non-streamed) Messages answer, its chunks kept (up to 8 MiB) and read
/// once it ended.
#[derive(Debug, Default)]
pub struct JsonUsage {
    /// The body's first chunk, shared with what went to the client (no copy). Nearly every
    /// answer has one chunk only, and it is kept without allocating a list for it.
    first: Option<Bytes>,
    /// The chunks after the first.
    rest: Vec<Bytes>,
    len: usize,
    overflow: bool,
}

impl JsonUsage {
    pub fn feed(&mut self, chunk: &Bytes) {
        if self.overflow || self.len + chunk.len() > MAX_JSON {
            self.overflow = true;
            self.first = None;
            self.rest = Vec::new();
        } else {
            self.len += chunk.len();
            match self.first {
                None => self.first = Some(chunk.clone()),
                Some(_) => self.rest.push(chunk.clone()),
            }
        }
    }

    /// Only the top-level `usage` object is decoded, not the content (most of the body).
    pub fn usage(&self) -> Usage {
        let joined;
        let body: &[u8] = match (&self.first, self.rest.is_empty()) {
            (None, _) => b"",
            (Some(one), true) => one,
            (Some(first), false) => {
                let mut all = Vec::with_capacity(self.len);
                all.extend_from_slice(first);
                for chunk in &self.rest {
                    all.extend_from_slice(chunk);
                }
                joined = all;
                &joined
            }
        };
        let mut u = Usage::default();
        let raw = last_member_usage(body).or_else(|| {
            peek::top_level(body, b"usage").and_then(|v| serde_json::from_slice(v).ok())
        });
        if let Some(raw) = raw {
            u.absorb(&raw);
        }
        u
    }
}

/// Anthropic writes `usage` as the answer's last member: found from the end, it is read without
/// scanning the content before it. Outside strings `"usage":` can only be a key (a quote inside
/// a string is escaped), and only the top-level object's last member is followed by nothing
/// but its closing `}`, so a nested `usage` is never taken for it. `None` sends the caller to
/// the full scan.
fn last_member_usage(body: &[u8]) -> Option<RawUsage> {
    static KEY: std::sync::LazyLock<memchr::memmem::FinderRev<'static>> =
        std::sync::LazyLock::new(|| memchr::memmem::FinderRev::new(b"\"usage\":"));
    let at = KEY.rfind(body)?;
    let after = &body[at + KEY.needle().len()..];
    let (raw, len) = match plain_usage(after) {
        Some(read) => read,
        None => {
            let len = peek::value_len(after)?;
            (serde_json::from_slice(&after[..len]).ok()?, len)
        }
    };
    (after[len..].trim_ascii() == b"}").then_some(raw)
}

/// The usage object at the start of `b` (after any whitespace), read in one pass: its four
/// counts when each is absent, `null` or plain digits, other members skipped undecoded, and
/// the length read. This is what the derived `Deserialize` makes of such an object at a
/// fraction of the cost (serde decodes and matches every key as a string). `None` for anything
/// else (a key with an escape, a count that is not plain digits or comes twice, an object cut
/// short): serde then decides, exactly as before. The values of other members are skipped by
/// counting brackets, not validated.
fn plain_usage(b: &[u8]) -> Option<(RawUsage, usize)> {
    let ws = |i: &mut usize| {
        while matches!(b.get(*i), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            *i += 1;
        }
    };
    let mut raw = RawUsage::default();
    let mut seen = [false; 4];
    let mut i = 0;
    ws(&mut i);
    if b.get(i) != Some(&b'{') {
        return None;
    }
    i += 1;
    ws(&mut i);
    if b.get(i) == Some(&b'}') {
        return Some((raw, i + 1));
    }
    loop {
        // "key"
        if b.get(i) != Some(&b'"') {
            return None;
        }
        let key_start = i + 1;
        i = key_start;
        loop {
            match b.get(i)? {
                b'"' => break,
                b'\\' => return None,
                _ => i += 1,
            }
        }
        let key = &b[key_start..i];
        i += 1;
        ws(&mut i);
        if b.get(i) != Some(&b':') {
            return None;
        }
        i += 1;
        ws(&mut i);
        let slot = match key {
            b"input_tokens" => Some((0, &mut raw.input_tokens)),
            b"output_tokens" => Some((1, &mut raw.output_tokens)),
            b"cache_creation_input_tokens" => Some((2, &mut raw.cache_creation_input_tokens)),
            b"cache_read_input_tokens" => Some((3, &mut raw.cache_read_input_tokens)),
            _ => None,
        };
        match slot {
            None => i += peek::value_len(&b[i..])?,
            Some((k, field)) => {
                if std::mem::replace(&mut seen[k], true) {
                    // serde refuses a duplicate field.
                    return None;
                }
                let value = if b[i..].starts_with(b"null") {
                    i += 4;
                    None
                } else {
                    let digits = b[i..].iter().take_while(|c| c.is_ascii_digit()).count();
                    // Leading zeros are not JSON; a count too large for u64 fails serde too.
                    if digits == 0 || (digits > 1 && b[i] == b'0') {
                        return None;
                    }
                    let mut n: u64 = 0;
                    for &d in &b[i..i + digits] {
                        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
                    }
                    i += digits;
                    Some(n)
                };
                *field = value;
            }
        }
        ws(&mut i);
        match b.get(i)? {
            b',' => {
                i += 1;
                ws(&mut i);
            }
            b'}' => return Some((raw, i + 1)),
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "event: message_start\r\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"m\",\"usage\":{\"input_tokens\":472,\"cache_creation_input_tokens\":3,\"cache_read_input_tokens\":4,\"output_tokens\":2}}}\r\n\r\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"usage\\\":{\\\"output_tokens\\\":999}\"}}\n\n: comment\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":61}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

    fn expected() -> Usage {
        Usage {
            input_tokens: 472,
            output_tokens: 61,
            cache_creation_input_tokens: 3,
            cache_read_input_tokens: 4,
        }
    }

    #[test]
    fn reads_usage_from_whole_stream() {
        let mut s = SseUsage::default();
        s.feed(STREAM.as_bytes());
        assert_eq!(s.usage, expected());
    }

    #[test]
    fn reads_usage_whatever_the_chunking() {
        let bytes = STREAM.as_bytes();
        for size in [1, 2, 3, 5, 7, 13, 64] {
            let mut s = SseUsage::default();
            for c in bytes.chunks(size) {
                s.feed(c);
            }
            assert_eq!(s.usage, expected(), "chunk size {size}");
        }
    }

    #[test]
    fn delta_text_that_looks_like_usage_is_ignored() {
        let mut s = SseUsage::default();
        s.feed(b"event: content_block_delta\ndata: {\"usage\":{\"output_tokens\":999}}\n\n");
        assert_eq!(s.usage, Usage::default());
    }

    #[test]
    fn json_usage_is_the_top_level_one_wherever_it_is() {
        let usage = |body: &'static [u8]| {
            let mut j = JsonUsage::default();
            j.feed(&Bytes::from_static(body));
            j.usage().input_tokens
        };
        // Last, as Anthropic writes it.
        assert_eq!(usage(br#"{"content":[],"usage":{"input_tokens":5}}"#), 5);
        assert_eq!(usage(b"{\"usage\" :{\"input_tokens\":6} }\n"), 6);
        // Elsewhere, with a nested lookalike last.
        assert_eq!(
            usage(br#"{"usage":{"input_tokens":7},"content":[{"input":{"usage":{"input_tokens":99}}}]}"#),
            7
        );
        // Members the reader does not know are skipped, nested objects included.
        assert_eq!(
            usage(br#"{"usage":{"service_tier":"standard","cache_creation":{"input_tokens":1},"input_tokens":8}}"#),
            8
        );
        // A nested one only: none.
        assert_eq!(
            usage(br#"{"content":[{"input":{"usage":{"input_tokens":99}}}]}"#),
            0
        );
        // In a string: none.
        assert_eq!(usage(br#"{"text":"\"usage\":{\"input_tokens\":99}}"}"#), 0);
    }

    #[test]
    fn the_plain_usage_reader_agrees_with_serde() {
        let shapes: &[&[u8]] = &[
            br#"{"input_tokens":5,"output_tokens":7}"#,
            br#"{ "input_tokens" : 5 , "cache_read_input_tokens":0, "output_tokens":12 }"#,
            br#"{"input_tokens":null,"output_tokens":3}"#,
            br#"{"service_tier":"standard","cache_creation":{"ephemeral_5m_input_tokens":4,"x":[1,{"y":"}"}]},"input_tokens":9,"cache_creation_input_tokens":2}"#,
            br#"{"server_tool_use":{"web_search_requests":0},"output_tokens":18446744073709551615}"#,
            br#"{}"#,
            // serde refuses these; the reader must not accept them either.
            br#"{"input_tokens":5,"input_tokens":6}"#,
            br#"{"input_tokens":1.5}"#,
            br#"{"input_tokens":-1}"#,
            br#"{"input_tokens":05}"#,
            br#"{"input_tokens":"5"}"#,
            br#"{"input_tokens":18446744073709551616}"#,
            br#"{"input_tokens":1e3}"#,
            br#"{"input_tokens":5"#,
            br#"{"input_tokens" 5}"#,
            // An escaped key is serde's to decode.
            br#"{"input_tokens":5}"#,
        ];
        for shape in shapes {
            let serde: Option<RawUsage> = serde_json::from_slice(shape).ok();
            let plain = plain_usage(shape)
                .map(|(raw, _)| raw)
                .or_else(|| serde_json::from_slice(shape).ok());
            let key = |r: &Option<RawUsage>| {
                r.as_ref().map(|r| {
                    (
                        r.input_tokens,
                        r.output_tokens,
                        r.cache_creation_input_tokens,
                        r.cache_read_input_tokens,
                    )
                })
            };
            assert_eq!(
                key(&plain),
                key(&serde),
                "{}",
                String::from_utf8_lossy(shape)
            );
        }
        // The common shape is read without serde.
        assert!(plain_usage(shapes[0]).is_some());
        assert!(plain_usage(shapes[3]).is_some());
    }

    #[test]
    fn json_body_usage() {
        let mut j = JsonUsage::default();
        j.feed(&Bytes::from_static(
            br#"{"id":"m","content":[],"usage":{"input_tokens":5,"#,
        ));
        j.feed(&Bytes::from_static(br#""output_tokens":7}}"#));
        assert_eq!(
            j.usage(),
            Usage {
                input_tokens: 5,
                output_tokens: 7,
                ..Usage::default()
            }
        );
    }
}
