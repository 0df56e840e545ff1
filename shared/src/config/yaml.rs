//! The only module that names `serde_yaml`, so a maintained fork can replace it in one place.

use serde::de::DeserializeOwned;

/// Where in the text a YAML error points (1-based).
pub struct YamlPos {
    pub line: usize,
    pub column: usize,
}

pub type YamlError = serde_yaml::Error;

/// Deserialize `text` through `wrap`, which receives the YAML deserializer (the loader wraps it to
/// track the key path and the keys it ignored).
pub fn deserialize_with<T, F>(text: &str, wrap: F) -> Result<T, YamlError>
where
    T: DeserializeOwned,
    F: FnOnce(serde_yaml::Deserializer<'_>) -> Result<T, YamlError>,
{
    wrap(serde_yaml::Deserializer::from_str(text))
}

/// Where `err` points in `text`. serde_yaml gives no position when the text holds a second
/// document: then it is the first document marker (`---` or `...`) after some content, if any.
pub fn position(err: &YamlError, text: &str) -> Option<YamlPos> {
    if let Some(l) = err.location() {
        return Some(YamlPos {
            line: l.line(),
            column: l.column(),
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
