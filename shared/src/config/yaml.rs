//! The only module that names the YAML crate (`serde-saphyr`: maintained, no `unsafe` parser),
//! so another can replace it in one place.

use serde::de::DeserializeOwned;

/// Where in the text a YAML error points (1-based).
pub struct YamlPos {
    pub line: usize,
    pub column: usize,
}

pub type YamlError = serde_saphyr::Error;

/// Deserialize `text` through `wrap`, which receives the YAML deserializer (the loader wraps it to
/// track the key path and the keys it ignored). A key given twice in one mapping is an error at
/// the second one; the message is plain text (no source snippet: the loader prints the position).
pub fn deserialize_with<T, F>(text: &str, wrap: F) -> Result<T, YamlError>
where
    T: DeserializeOwned,
    F: for<'e> FnOnce(serde_saphyr::Deserializer<'_, 'e>) -> Result<T, YamlError>,
{
    // Fields are public on a non-exhaustive struct: set on the default.
    let mut options = serde_saphyr::Options::default();
    options.with_snippet = false;
    serde_saphyr::with_deserializer_from_str_with_options(text, options, wrap)
}

/// The error in the config's words: the parser's own advice about its API is left out.
pub fn describe(err: &YamlError) -> String {
    let mut text = err.to_string();
    if let Some(rest) = text.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return format!("`{key}` is given twice in this mapping; keep one");
    }
    for advice in ["; use Option<String>", "; use Option<"] {
        if let Some(i) = text.find(advice) {
            text.truncate(i);
        }
    }
    text = text.replace(
        "expected mapping start",
        "expected a mapping (`key: value` lines)",
    );
    text = text.replace("cannot deserialize null into string", "a value is missing");
    if text.contains("multiple YAML documents") {
        return "the file holds more than one YAML document (after a `---` line); a config is one \
                mapping"
            .to_string();
    }
    text
}

/// Where `err` points in `text`. When the parser gives no position for a second document, it is
/// the first document marker (`---` or `...`) after some content, if any.
pub fn position(err: &YamlError, text: &str) -> Option<YamlPos> {
    if let Some(l) = err.location() {
        return Some(YamlPos {
            line: usize::try_from(l.line()).unwrap_or(usize::MAX),
            column: usize::try_from(l.column()).unwrap_or(usize::MAX),
        });
    }
    let mut content = false;
    for (i, line) in text.lines().enumerate() {
        let marker = line.starts_with("---") || line.starts_with("...");
        if marker && content {
            return Some(YamlPos {
                line: i + 1,
                column: 1,
            });
        }
        let t = line.trim();
        content |= !marker && !t.is_empty() && !t.starts_with('#');
    }
    None
}
