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

pub fn position(err: &YamlError) -> Option<YamlPos> {
    err.location().map(|l| YamlPos {
        line: l.line(),
        column: l.column(),
    })
}
