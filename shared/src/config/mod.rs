//! `proxy-config.yaml` / `.json`: the model ([`model`]), `${VAR}` interpolation ([`interpolate`])
//! and the loader, whose every error names the file, the line and column where known, and the key.
//!
//! Policy: wrong types and missing required keys are errors; unknown keys, literal secrets and
//! declined cloaking plugins are warnings (docs/config.md, docs/out-of-scope.md). A missing default config file is not
//! an error: the defaults apply.

pub mod interpolate;
mod keys;
pub mod model;
mod yaml;

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserializer;

pub use interpolate::{EnvSource, ISecret, IString, Num};
pub use model::*;

/// A config that loaded, with what the user should hear about it.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    pub config: ProxyConfig,
    /// The file it came from; `None` when no file exists and the defaults apply.
    pub path: Option<PathBuf>,
    pub warnings: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The OS error is part of the message and deliberately not the error's `source`: printing
    /// the chain would say it twice.
    #[error("cannot read config file {}: {cause}", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    /// Bad syntax, a wrong type or a missing key, found while parsing.
    #[error("{}", Located { path, line: *line, column: *column, key, message })]
    Invalid {
        path: PathBuf,
        line: Option<usize>,
        column: Option<usize>,
        key: String,
        message: String,
    },
}

struct Located<'a> {
    path: &'a Path,
    line: Option<usize>,
    column: Option<usize>,
    key: &'a str,
    message: &'a str,
}

impl fmt::Display for Located<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.path.display())?;
        if let Some(line) = self.line {
            write!(f, ":{line}")?;
            if let Some(col) = self.column {
                write!(f, ":{col}")?;
            }
        }
        if self.key.is_empty() || self.key == "." {
            write!(f, ": {}", self.message)
        } else {
            write!(f, ": key `{}`: {}", self.key, self.message)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Yaml,
    Json,
}

impl Format {
    /// `.json` is JSON; anything else is YAML (as NeuroLink decides).
    pub fn for_path(path: &Path) -> Self {
        match path.extension().and_then(|e| e.to_str()) {
            Some(e) if e.eq_ignore_ascii_case("json") => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// Load the config: `explicit` (from `--config`) must exist; otherwise the default file in `home`
/// is used when present, else the defaults.
pub fn load(
    explicit: Option<&Path>,
    paths: &crate::paths::Paths,
    env: &EnvSource,
) -> Result<Loaded, ConfigError> {
    let path = match explicit {
        Some(p) => p.to_path_buf(),
        None => match paths.default_config() {
            Some(p) => p,
            None => return Ok(Loaded::default()),
        },
    };
    let text = std::fs::read_to_string(&path).map_err(|cause| ConfigError::Read {
        path: path.clone(),
        cause,
    })?;
    let (config, mut warnings) = parse(&text, Format::for_path(&path), &path, env)?;
    if explicit.is_none() {
        for other in paths.config_candidates().iter().skip(1) {
            warnings.push(format!(
                "{} is ignored: {} is the config in use (remove one of them)",
                other.display(),
                path.display()
            ));
        }
    }
    Ok(Loaded {
        config,
        path: Some(path),
        warnings,
    })
}

/// Parse and validate config text. `origin` is named in messages, and relative paths in the
/// config (`server.caFile`) are relative to its directory.
pub fn parse(
    text: &str,
    format: Format,
    origin: &Path,
    env: &EnvSource,
) -> Result<(ProxyConfig, Vec<String>), ConfigError> {
    let mut ignored = Vec::new();
    let parsed = interpolate::with_env(env, || match format {
        Format::Yaml => {
            let mut failure = None;
            let result = yaml::deserialize_with(text, |de| {
                tracked(de, &mut ignored).map_err(|(key, e)| {
                    failure = Some(key);
                    e
                })
            });
            result.map_err(|e| {
                let pos = yaml::position(&e, text);
                invalid(
                    origin,
                    pos.as_ref().map(|p| (p.line, p.column)),
                    failure.unwrap_or_default(),
                    &yaml::describe(&e),
                )
            })
        }
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value = tracked(&mut de, &mut ignored)
                .and_then(|v| de.end().map(|()| v).map_err(|e| (String::new(), e)));
            value.map_err(|(key, e)| invalid(origin, Some((e.line(), e.column())), key, &e))
        }
    })?;
    let mut config = parsed.unwrap_or_default();
    if let Some(ca) = &mut config.server.ca_file {
        if !ca.value.is_empty() {
            ca.value = crate::ca_bundle::resolve(&ca.value, origin)
                .to_string_lossy()
                .into_owned();
        }
    }
    let known = if ignored.is_empty() {
        Default::default()
    } else {
        keys::known_keys()
    };
    let mut warnings: Vec<String> = ignored
        .into_iter()
        .map(|k| unknown_key_warning(&k, &known, text, format, origin))
        .collect();
    validate(&config, origin, &mut warnings).map_err(|e| with_position(e, text, format))?;
    warnings.extend(duplicate_names(&config, text, origin));
    Ok((config, warnings))
}

/// Deserialize while recording the key path (for errors) and every ignored key (for warnings).
fn tracked<'de, D: Deserializer<'de>>(
    de: D,
    ignored: &mut Vec<String>,
) -> Result<Option<ProxyConfig>, (String, D::Error)> {
    let mut track = serde_path_to_error::Track::new();
    let inner = serde_path_to_error::Deserializer::new(de, &mut track);
    let result = serde_ignored::deserialize(inner, |path| ignored.push(path.to_string()));
    result.map_err(|e| (track.path().to_string(), e))
}

fn invalid(
    path: &Path,
    pos: Option<(usize, usize)>,
    key: String,
    err: &dyn fmt::Display,
) -> ConfigError {
    let mut message = err.to_string();
    // Both parsers append their own " at line N column M"; we print the position ourselves.
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    // A parser may prefix its own (shorter) path; ours is the precise one.
    if let Some((prefix, rest)) = message.split_once(": ") {
        if !prefix.contains(' ') && key.starts_with(prefix) {
            message = rest.to_string();
        }
    }
    let (line, column) = match pos {
        Some((l, c)) if l > 0 => (Some(l), Some(c)),
        _ => (None, None),
    };
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line,
        column,
        key,
        message,
    }
}

/// `file:line:column: unknown key `server.prot` is ignored; did you mean `port`?`
fn unknown_key_warning(
    raw: &str,
    known: &std::collections::HashMap<String, Vec<&'static str>>,
    text: &str,
    format: Format,
    origin: &Path,
) -> String {
    let segs: Vec<&str> = raw.split('.').filter(|s| *s != "?").collect();
    let name = segs.last().copied().unwrap_or_default();
    // The path of the struct that holds the key, as `keys::known_keys` names it.
    let mut parent = String::new();
    for seg in &segs[..segs.len().saturating_sub(1)] {
        let join = |p: &str, s: &str| {
            if p.is_empty() {
                s.to_string()
            } else {
                format!("{p}.{s}")
            }
        };
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            parent.push_str("[]");
        } else {
            let candidate = join(&parent, seg);
            let is_field = known.keys().any(|k| {
                k == &candidate
                    || k.starts_with(&format!("{candidate}."))
                    || k.starts_with(&format!("{candidate}["))
            });
            parent = if is_field {
                candidate
            } else {
                join(&parent, "*")
            };
        }
    }
    let position = key_position(text, name, format)
        .map(|(l, c)| format!(":{l}:{c}"))
        .unwrap_or_default();
    let hint = keys::suggestion(known, &parent, name)
        .map(|s| format!("; did you mean `{s}`?"))
        .unwrap_or_default();
    format!(
        "{}{position}: unknown key `{}` is ignored{hint}",
        origin.display(),
        key_path(raw)
    )
}

/// Where `name` first appears as a key: line and column, 1-based.
fn key_position(text: &str, name: &str, format: Format) -> Option<(usize, usize)> {
    for (i, line) in text.lines().enumerate() {
        let found = match format {
            Format::Yaml => {
                let body = line.trim_start();
                let body = body.strip_prefix("- ").unwrap_or(body).trim_start();
                let bare = body
                    .strip_prefix(name)
                    .is_some_and(|r| r.trim_start().starts_with(':'));
                let quoted = [format!("\"{name}\""), format!("'{name}'")]
                    .iter()
                    .any(|q| {
                        body.strip_prefix(q.as_str())
                            .is_some_and(|r| r.trim_start().starts_with(':'))
                    });
                (bare || quoted).then(|| line.len() - body.len())
            }
            Format::Json => line.find(&format!("\"{name}\"")),
        };
        if let Some(col) = found {
            return Some((i + 1, col + 1));
        }
    }
    None
}

/// A check made after parsing (a range, a missing provider) names its key; this adds the line and
/// column of that key in the text, found by walking the key path through the file's block
/// structure (YAML) or by the key's last name (JSON, flow-style YAML).
fn with_position(e: ConfigError, text: &str, format: Format) -> ConfigError {
    match e {
        ConfigError::Invalid {
            path,
            line: None,
            key,
            message,
            ..
        } => {
            let at = match format {
                Format::Yaml => locate_yaml(text, &key),
                Format::Json => None,
            }
            .or_else(|| {
                let last = key.rsplit(['.', ']']).find(|s| !s.is_empty())?;
                key_position(text, last, format)
            });
            ConfigError::Invalid {
                path,
                line: at.map(|a| a.0),
                column: at.map(|a| a.1),
                key,
                message,
            }
        }
        other => other,
    }
}

/// The line and column (1-based) of `accounts.anthropic[1].weight` in block-style YAML.
fn locate_yaml(text: &str, key_path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = text.lines().collect();
    let meaningful = |l: &str| {
        let t = l.trim_start();
        !t.is_empty() && !t.starts_with('#')
    };
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut start = 0;
    let mut parent: Option<usize> = None; // indent of the enclosing key or list item
    let mut found = None;
    let within = |l: &str, parent: Option<usize>| parent.is_none_or(|p| indent(l) > p);
    for seg in key_path.split('.') {
        let (name, indexes) = match seg.find('[') {
            Some(i) => (&seg[..i], &seg[i..]),
            None => (seg, ""),
        };
        if !name.is_empty() {
            let mut hit = None;
            for (i, l) in lines.iter().enumerate().skip(start) {
                if !meaningful(l) {
                    continue;
                }
                // The key may follow a list item's dash on the same line.
                let body = l.trim_start();
                let (body, col) = match body.strip_prefix("- ") {
                    Some(rest) => (rest.trim_start(), l.len() - rest.trim_start().len()),
                    None => (body, indent(l)),
                };
                if i > start && !within(l, parent) && body.len() == l.trim_start().len() {
                    return None; // left the enclosing block
                }
                let is_key = [name.to_string(), format!("\"{name}\""), format!("'{name}'")]
                    .iter()
                    .any(|k| {
                        body.strip_prefix(k.as_str())
                            .is_some_and(|r| r.trim_start().starts_with(':'))
                    });
                if is_key && parent.is_none_or(|p| col > p) {
                    hit = Some((i, col));
                    break;
                }
            }
            let (i, col) = hit?;
            found = Some((i + 1, col + 1));
            start = i + 1;
            parent = Some(col);
        }
        for index in indexes
            .split(']')
            .filter_map(|s| s.strip_prefix('['))
            .map(str::parse::<usize>)
        {
            let index = index.ok()?;
            let mut items = lines
                .iter()
                .enumerate()
                .skip(start)
                .filter(|(_, l)| meaningful(l))
                .take_while(|(_, l)| within(l, parent) || l.trim_start().starts_with("- "))
                .filter(|(_, l)| l.trim_start().starts_with("- "));
            let (first_i, first) = items.next()?;
            let dash = indent(first);
            let (i, l) = std::iter::once((first_i, first))
                .chain(items.filter(|(_, l)| indent(l) == dash))
                .nth(index)?;
            found = Some((i + 1, indent(l) + 1));
            start = i; // the item's first key may share the dash's line
            parent = Some(dash);
        }
    }
    found
}

/// Two API-key accounts with one `name`: the proxy keeps both and shows the second as `name-2`,
/// the third as `name-3` (as `proxy start` warns); `config check` says so before, pointing at
/// each repeat.
fn duplicate_names(c: &ProxyConfig, text: &str, origin: &Path) -> Vec<String> {
    // The first account with each name, and how many have carried it so far.
    let mut seen: std::collections::HashMap<&str, (usize, usize)> = Default::default();
    let mut warnings = Vec::new();
    for (i, a) in c.accounts.anthropic.iter().enumerate() {
        if a.api_key.is_none() {
            continue; // settings for a stored login, matched by this name on purpose
        }
        let name = a.name.value.as_str();
        let entry = seen.entry(name).or_insert((i, 0));
        entry.1 += 1;
        let (earlier, count) = *entry;
        if count == 1 {
            continue;
        }
        // The line of this repeat: `name: a`, quoted or not, in a list item or not.
        let position = text
            .lines()
            .enumerate()
            .filter_map(|(n, line)| {
                let body = line.trim_start();
                let body = body.strip_prefix("- ").unwrap_or(body).trim_start();
                let value = body.strip_prefix("name")?.trim_start().strip_prefix(':')?;
                let value = value.trim().trim_matches(|c| c == '"' || c == '\'');
                (value == name).then(|| (n + 1, line.len() - body.len() + 1))
            })
            .nth(count - 1)
            .map(|(l, c)| format!(":{l}:{c}"))
            .unwrap_or_default();
        warnings.push(format!(
            "{}{position}: `accounts.anthropic[{i}].name` repeats `{name}` of \
             accounts.anthropic[{earlier}]; the proxy shows this one as `{name}-{count}`: give \
             each account its own name",
            origin.display()
        ));
    }
    warnings
}

/// `?.accounts.anthropic.0.colour` (serde_ignored's form) as `accounts.anthropic[0].colour`.
fn key_path(raw: &str) -> String {
    let mut out = String::new();
    for seg in raw.split('.').filter(|s| *s != "?") {
        if !seg.is_empty() && seg.bytes().all(|b| b.is_ascii_digit()) {
            out.push_str(&format!("[{seg}]"));
        } else {
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(seg);
        }
    }
    out
}

fn semantic(path: &Path, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        path: path.to_path_buf(),
        line: None,
        column: None,
        key: key.into(),
        message: message.into(),
    }
}

/// Checks every account entry gets, with or without `apiKey`.
fn continue_checks(a: &ConfigAccount, key: &str, origin: &Path) -> Result<(), ConfigError> {
    if a.weight.0 == 0 {
        return Err(semantic(
            origin,
            format!("{key}.weight"),
            "must be at least 1 (use enabled: false to switch an account off)",
        ));
    }
    Ok(())
}

/// Checks serde cannot express, and the warnings docs/config.md and docs/out-of-scope.md describe.
fn validate(c: &ProxyConfig, origin: &Path, warnings: &mut Vec<String>) -> Result<(), ConfigError> {
    let file = origin.display();
    for (i, a) in c.accounts.anthropic.iter().enumerate() {
        let key = format!("accounts.anthropic[{i}]");
        let Some(api_key) = &a.api_key else {
            // An overlay for a stored login; matched (or warned about) when accounts are found.
            continue_checks(a, &key, origin)?;
            continue;
        };
        if api_key.value.is_empty() {
            return Err(semantic(
                origin,
                format!("{key}.apiKey"),
                "must not be empty (leave the key out to add settings to a stored login named by `name`)",
            ));
        }
        if !api_key.from_env {
            warnings.push(format!(
                "{file}: `{key}.apiKey` holds a literal API key; keep it out of the file with \
                 apiKey: \"${{ANTHROPIC_KEY_{}}}\" and export the variable",
                i + 1
            ));
        }
        if a.weight.0 == 0 {
            return Err(semantic(
                origin,
                format!("{key}.weight"),
                "must be at least 1 (use enabled: false to switch an account off)",
            ));
        }
        if let Some(url) = &a.base_url {
            check_url(origin, &format!("{key}.baseUrl"), url)?;
        }
    }
    check_url(
        origin,
        "providers.anthropic.baseUrl",
        &c.providers.anthropic.base_url,
    )?;
    let compatible = c
        .providers
        .openai_compatible
        .iter()
        .map(|(name, p)| (format!("openai-compatible.{name}"), Some(p)));
    for (name, p) in [
        ("openai".to_string(), c.providers.openai.as_ref()),
        ("google-ai".to_string(), c.providers.google_ai.as_ref()),
    ]
    .into_iter()
    .chain(compatible)
    {
        let Some(p) = p else { continue };
        if let Some(url) = &p.base_url {
            check_url(origin, &format!("providers.{name}.baseUrl"), url)?;
        }
        if let Some(k) = &p.api_key {
            if !k.from_env && !k.value.is_empty() {
                warnings.push(format!(
                    "{file}: `providers.{name}.apiKey` holds a literal API key; use \"${{ENV_VAR}}\" instead"
                ));
            }
        }
    }
    if let Some(k) = &c.server.auth_key {
        if !k.from_env && !k.value.is_empty() {
            warnings.push(format!(
                "{file}: `server.authKey` is written literally; use \"${{NEUROLINK_PROXY_KEY}}\" instead"
            ));
        }
    }
    if let Some(ca) = c.server.ca_file() {
        crate::ca_bundle::read(ca).map_err(|m| semantic(origin, "server.caFile", m))?;
    }
    let t = c.routing.quota_threshold.0;
    if !(0.0..=1.0).contains(&t) {
        return Err(semantic(
            origin,
            "routing.quota-threshold",
            format!("{t} is outside 0.0..=1.0"),
        ));
    }
    let w = c.routing.max_wait.0;
    if !(0.0..=600.0).contains(&w) {
        return Err(semantic(
            origin,
            "routing.max-wait",
            format!("{w} is outside 0..=600 seconds"),
        ));
    }
    for name in c.providers.openai_compatible.keys() {
        if model::BUILTIN_PROVIDERS.contains(&name.as_str()) {
            return Err(semantic(
                origin,
                format!("providers.openai-compatible.{name}"),
                format!("`{name}` is a built-in provider's name; choose another"),
            ));
        }
        if c.providers.openai_compatible[name].base_url.is_none() {
            return Err(semantic(
                origin,
                format!("providers.openai-compatible.{name}.baseUrl"),
                "is required (e.g. http://127.0.0.1:11434/v1 for Ollama)",
            ));
        }
    }
    let known = |p: &str| {
        model::BUILTIN_PROVIDERS.contains(&p) || c.providers.openai_compatible.contains_key(p)
    };
    let unknown = |key: String, p: &str, warnings: &mut Vec<String>| {
        let mut names: Vec<&str> = model::BUILTIN_PROVIDERS.to_vec();
        names.extend(c.providers.openai_compatible.keys().map(String::as_str));
        warnings.push(format!(
            "{file}: `{key}` names provider `{p}`, which is not configured (known: {}); it is skipped",
            names.join(", ")
        ));
    };
    for (i, m) in c.routing.model_mappings.iter().enumerate() {
        if m.from.value.is_empty() || m.to.value.is_empty() {
            warnings.push(format!(
                "{file}: `routing.model-mappings[{i}]` has an empty from/to and is skipped"
            ));
        } else if !known(&m.provider.value) {
            unknown(
                format!("routing.model-mappings[{i}].provider"),
                &m.provider.value,
                warnings,
            );
        }
    }
    for (i, f) in c.routing.fallback_chain.iter().enumerate() {
        if f.provider.value.is_empty() || f.model.value.is_empty() {
            warnings.push(format!(
                "{file}: `routing.fallback-chain[{i}]` has an empty provider/model and is skipped"
            ));
        } else if f.provider.value == "anthropic" {
            warnings.push(format!(
                "{file}: `routing.fallback-chain[{i}]` names anthropic, whose accounts were already tried; it is skipped"
            ));
        } else if !known(&f.provider.value) {
            unknown(
                format!("routing.fallback-chain[{i}].provider"),
                &f.provider.value,
                warnings,
            );
        }
    }
    if c.server.host.value.is_empty() {
        return Err(semantic(origin, "server.host", "must not be empty"));
    }
    if let Some(cloaking) = &c.cloaking {
        cloaking_warnings(cloaking, &file.to_string(), warnings);
    }
    Ok(())
}

fn check_url(origin: &Path, key: &str, url: &IString) -> Result<(), ConfigError> {
    let v = url.value.as_str();
    let rest = v
        .strip_prefix("https://")
        .or_else(|| v.strip_prefix("http://"));
    if rest.is_some_and(|r| !r.is_empty()) {
        Ok(())
    } else {
        Err(semantic(
            origin,
            key,
            format!("`{v}` is not an http:// or https:// URL"),
        ))
    }
}

/// The seed's cloaking plugins exist to make other clients look like Claude Code; we forward
/// Claude Code's own traffic instead (docs/out-of-scope.md). Accept the keys, say plainly what is ignored.
fn cloaking_warnings(c: &Cloaking, file: &str, warnings: &mut Vec<String>) {
    if c.mode == CloakMode::Always {
        warnings.push(format!(
            "{file}: `cloaking.mode: always` is accepted but has no effect: requests are forwarded as the client sent them"
        ));
    }
    let Some(plugins) = &c.plugins else { return };
    for (name, value) in plugins {
        let enabled = match value {
            serde_json::Value::Bool(b) => *b,
            serde_json::Value::Object(o) => {
                o.get("enabled").and_then(|v| v.as_bool()).unwrap_or(true)
            }
            _ => false,
        };
        if enabled && c.mode != CloakMode::Never {
            warnings.push(format!(
                "{file}: cloaking plugin `{name}` is not supported and is ignored (see docs/out-of-scope.md)"
            ));
        }
    }
}

#[cfg(test)]
mod tests;
