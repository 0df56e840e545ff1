//! Finding the `model` of a request without parsing the whole body.
//!
//! The body goes upstream untouched, and Anthropic validates it; routing needs only the model.
//! Claude Code puts `model` first, so scanning the top-level keys and stopping at `model` costs
//! the same for a 50 KB or a 30 MB body. Values before it are skipped with `memchr`, without
//! decoding. A body that is not a JSON object is refused here with a message that says so.

use std::sync::Arc;

/// `Ok(Some(model))`, `Ok(None)` when the object has no string `model` (upstream will say what is
/// wrong), or `Err` naming the byte offset where the body stopped looking like a JSON object.
pub fn model(body: &[u8]) -> Result<Option<Arc<str>>, String> {
    let mut s = Scanner { b: body, i: 0 };
    s.ws();
    if s.peek() != Some(b'{') {
        return Err(s.err("the body is not a JSON object (expected `{`)"));
    }
    s.i += 1;
    let mut found: Option<Option<Arc<str>>> = None;
    loop {
        s.ws();
        match s.peek() {
            Some(b'}') => return Ok(found.flatten()),
            Some(b'"') => {}
            _ => return Err(s.err("expected a key in double quotes")),
        }
        let key = s.string()?;
        s.ws();
        if s.peek() != Some(b':') {
            return Err(s.err("expected `:` after a key"));
        }
        s.i += 1;
        s.ws();
        if key == b"model" {
            if found.is_some() {
                // JSON parsers disagree on which one counts; routing on one while the upstream
                // uses the other would bypass excludedModels.
                return Err(s.err("`model` appears twice at the top level; send it once"));
            }
            let value = model_value(&mut s)?;
            // The rest is scanned only when it may hold another `model` key at all. The
            // searcher is built once: building it cost more than the search of most bodies.
            static MODEL_KEY: std::sync::LazyLock<memchr::memmem::Finder<'static>> =
                std::sync::LazyLock::new(|| memchr::memmem::Finder::new(b"\"model\""));
            if MODEL_KEY.find(&body[s.i..]).is_none() {
                return Ok(value);
            }
            found = Some(value);
        } else {
            s.skip_value()?;
        }
        s.ws();
        match s.peek() {
            Some(b',') => s.i += 1,
            Some(b'}') => return Ok(found.flatten()),
            _ => return Err(s.err("expected `,` or `}` after a value")),
        }
    }
}

/// The raw bytes of the top-level `key`'s value in a JSON object (the first one, its key
/// written without escapes), found like `model`: values before it are skipped, not decoded.
/// `None` when the body is not an object or has no such key.
pub fn top_level<'a>(body: &'a [u8], key: &[u8]) -> Option<&'a [u8]> {
    members(body).find(|(k, _)| *k == key).map(|(_, v)| v)
}

/// The members of a JSON object, as raw key (between its quotes) and raw value bytes, values
/// skipped rather than decoded. Ends early where the bytes stop being an object.
pub fn members(object: &[u8]) -> Members<'_> {
    let mut s = Scanner { b: object, i: 0 };
    s.ws();
    let open = s.peek() == Some(b'{');
    s.i += 1;
    Members { s, done: !open }
}

/// The length of the JSON value at the start of `b` (after any whitespace), found by counting
/// brackets outside strings; `None` when `b` ends first.
pub fn value_len(b: &[u8]) -> Option<usize> {
    let mut s = Scanner { b, i: 0 };
    s.ws();
    s.skip_value().ok()?;
    Some(s.i)
}

pub struct Members<'a> {
    s: Scanner<'a>,
    done: bool,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let member = self.member();
        self.done = member.is_none();
        member
    }
}

impl<'a> Members<'a> {
    fn member(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let s = &mut self.s;
        s.ws();
        if s.peek() == Some(b',') {
            s.i += 1;
            s.ws();
        }
        if s.peek() != Some(b'"') {
            return None;
        }
        let key = s.string().ok()?;
        s.ws();
        if s.peek() != Some(b':') {
            return None;
        }
        s.i += 1;
        s.ws();
        let start = s.i;
        s.skip_value().ok()?;
        Some((key, &s.b[start..s.i]))
    }
}

/// The value of `model`: a string, or `None` for anything else (which is skipped).
fn model_value(s: &mut Scanner<'_>) -> Result<Option<Arc<str>>, String> {
    if s.peek() != Some(b'"') {
        s.skip_value()?;
        return Ok(None);
    }
    let raw = s.string()?;
    // Model ids never need escapes; a value with one is decoded properly.
    if raw.contains(&b'\\') {
        let quoted = &s.b[s.i - raw.len() - 2..s.i];
        serde_json::from_slice::<String>(quoted)
            .map(|m| Some(m.into()))
            .map_err(|e| s.err(&format!("bad `model` string: {e}")))
    } else {
        std::str::from_utf8(raw)
            .map(|m| Some(m.into()))
            .map_err(|_| s.err("`model` is not UTF-8"))
    }
}

struct Scanner<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn err(&self, what: &str) -> String {
        format!("request body is not valid JSON at byte {}: {what}", self.i)
    }

    fn ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    /// At an opening quote: returns the raw bytes between the quotes and moves past the closing one.
    fn string(&mut self) -> Result<&'a [u8], String> {
        let start = self.i + 1;
        let mut j = start;
        while j <= self.b.len() {
            match memchr::memchr2(b'"', b'\\', &self.b[j..]) {
                Some(k) if self.b[j + k] == b'\\' => j += k + 2,
                Some(k) => {
                    self.i = j + k + 1;
                    return Ok(&self.b[start..j + k]);
                }
                None => break,
            }
        }
        self.i = self.b.len();
        Err(self.err("unterminated string"))
    }

    /// Skip one value of any kind, counting brackets outside strings.
    fn skip_value(&mut self) -> Result<(), String> {
        match self.peek() {
            Some(b'"') => self.string().map(|_| ()),
            Some(b'{' | b'[') => {
                let mut depth = 0usize;
                while let Some(k) = self.next_structural() {
                    self.i = k;
                    match self.b[k] {
                        b'"' => {
                            self.string()?;
                            continue;
                        }
                        b'{' | b'[' => depth += 1,
                        _ => depth -= 1,
                    }
                    self.i = k + 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                self.i = self.b.len();
                Err(self.err("unterminated object or array"))
            }
            Some(_) => {
                // number, true, false, null: up to the next delimiter.
                while !matches!(
                    self.peek(),
                    None | Some(b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r')
                ) {
                    self.i += 1;
                }
                Ok(())
            }
            None => Err(self.err("unexpected end of body")),
        }
    }

    /// Position of the next `"`, `{`, `[`, `}` or `]` from `i`.
    fn next_structural(&self) -> Option<usize> {
        self.b[self.i..]
            .iter()
            .position(|c| matches!(c, b'"' | b'{' | b'[' | b'}' | b']'))
            .map(|k| self.i + k)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_model_first_or_after_other_values() {
        assert_eq!(
            model(br#"{"model":"claude-x","messages":[]}"#),
            Ok(Some("claude-x".into()))
        );
        let body = br#" { "max_tokens": 5, "system": [{"type":"text","text":"a \"quoted\" {brace} [x]"}], "meta": {"a": [1, {"b": null}]}, "stream": true, "model" : "m-2" }"#;
        assert_eq!(model(body), Ok(Some("m-2".into())));
        assert_eq!(model(br#"{"model":"a\u002db"}"#), Ok(Some("a-b".into())));
    }

    #[test]
    fn a_second_top_level_model_is_refused_and_nested_ones_are_not() {
        let e = model(br#"{"model":"a","x":1,"model":"b"}"#).unwrap_err();
        assert!(e.contains("twice"), "{e}");
        assert_eq!(
            model(br#"{"model":"a","messages":[{"content":""model": b","model":"c"}]}"#),
            Ok(Some("a".into()))
        );
        assert_eq!(
            model(br#"{"messages":[{"model":"x"}],"model":"a","meta":{"model":"y"}}"#),
            Ok(Some("a".into()))
        );
    }

    #[test]
    fn top_level_finds_a_value_past_nested_lookalikes() {
        let body = br#"{"content":[{"text":"\"usage\":{1}","usage":2}],"usage" : {"input_tokens":5} ,"x":1}"#;
        assert_eq!(
            top_level(body, b"usage"),
            Some(&br#"{"input_tokens":5}"#[..])
        );
        assert_eq!(top_level(body, b"x"), Some(&b"1"[..]));
        assert_eq!(top_level(body, b"missing"), None);
        assert_eq!(top_level(b"[1]", b"usage"), None);
        assert_eq!(top_level(br#"{"usage":{"a":"#, b"usage"), None);
    }

    #[test]
    fn no_model_is_none() {
        assert_eq!(model(b"{}"), Ok(None));
        assert_eq!(model(br#"{"messages":[]}"#), Ok(None));
        assert_eq!(model(br#"{"model":5}"#), Ok(None));
    }

    #[test]
    fn non_objects_are_refused_with_an_offset() {
        let e = model(b"{not json").unwrap_err();
        assert!(e.contains("byte 1"), "{e}");
        assert!(model(b"[1,2]").is_err());
        assert!(model(b"").is_err());
        assert!(model(br#"{"a":"unterminated"#).is_err());
        assert!(model(br#"{"a":[1,2"#).is_err());
        assert!(
            model(b"{\"a\":\"x\\").is_err(),
            "a trailing backslash must not panic"
        );
    }

    #[test]
    fn agrees_with_serde_on_generated_bodies() {
        for n in 0..50 {
            let mut v = serde_json::json!({"messages": [{"role":"user","content": "x".repeat(n * 37)}], "n": n});
            if n % 3 != 0 {
                v["model"] = format!("claude-{n}").into();
            }
            v["tools"] = serde_json::json!([{"name":"t","input_schema":{"type":"object","properties":{"q":{"type":"string"}}}}]);
            let bytes = serde_json::to_vec(&v).unwrap();
            let expected = v.get("model").and_then(|m| m.as_str()).map(Arc::from);
            assert_eq!(model(&bytes), Ok(expected), "{n}");
        }
    }
}

/// The peek agrees with a full JSON parse on every valid object, duplicate keys included.
#[cfg(test)]
mod properties {
    use proptest::prelude::*;

    fn value() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i32>().prop_map(serde_json::Value::from),
            "[ -~]{0,12}".prop_map(serde_json::Value::from),
            Just(serde_json::Value::from("\"model\": \"x\"")),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
                proptest::collection::vec(("[a-z]{1,6}|model", inner), 0..4)
                    .prop_map(|kv| { serde_json::Value::Object(kv.into_iter().collect()) }),
            ]
        })
    }

    proptest! {
        #[test]
        fn agrees_with_a_full_parse(
            keys in proptest::collection::vec(("[a-z]{1,8}|model", value()), 0..6),
            model in proptest::option::of("claude-[a-z0-9-]{1,12}"),
            at in any::<proptest::sample::Index>(),
        ) {
            // Build the object text by hand, so duplicate keys stay duplicate.
            let mut members: Vec<String> = keys
                .iter()
                .filter(|(k, _)| k != "model")
                .map(|(k, v)| format!("{}:{}", serde_json::Value::from(k.as_str()), v))
                .collect();
            if let Some(m) = &model {
                members.insert(at.index(members.len() + 1), format!("\"model\":{}", serde_json::Value::from(m.as_str())));
            }
            let duplicates = keys.iter().filter(|(k, _)| k == "model").count();
            for _ in 0..duplicates {
                members.push("\"model\":\"claude-other\"".into());
            }
            let body = format!("{{{}}}", members.join(","));
            let got = super::model(body.as_bytes());
            let top_level_models = usize::from(model.is_some()) + duplicates;
            if top_level_models > 1 {
                prop_assert!(got.is_err(), "{body}");
            } else {
                let parsed: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
                let expected = parsed.get("model").and_then(|m| m.as_str()).map(std::sync::Arc::from);
                prop_assert_eq!(got, Ok(expected), "{}", body);
            }
        }
    }
}
