//! `${VAR}` and `${VAR:-default}` in config strings.
//!
//! The loader deserializes on one thread, so the environment to read from is set for the duration
//! of a load in a thread-local ([`with_env`]); that lets the string types below interpolate while
//! serde still knows the key, line and column of the value being read.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};

use crate::secret::{mask, Secret};

/// Where `${VAR}` is looked up.
#[derive(Debug, Clone, Default)]
pub enum EnvSource {
    /// The process environment.
    #[default]
    Process,
    /// A fixed map (tests).
    Map(HashMap<String, String>),
}

impl EnvSource {
    fn get(&self, name: &str) -> Option<String> {
        match self {
            EnvSource::Process => std::env::var(name).ok(),
            EnvSource::Map(m) => m.get(name).cloned(),
        }
    }
}

thread_local! {
    static ENV: RefCell<EnvSource> = const { RefCell::new(EnvSource::Process) };
}

/// Run `f` with `env` as the interpolation source on this thread.
pub fn with_env<R>(env: &EnvSource, f: impl FnOnce() -> R) -> R {
    let previous = ENV.with(|e| e.replace(env.clone()));
    let out = f();
    ENV.with(|e| e.replace(previous));
    out
}

/// Replace every `${NAME}` / `${NAME:-default}` in `input`. Returns the new string and whether any
/// placeholder was present. A placeholder without default whose variable is unset is an error
/// naming the variable. A `${` with no closing `}` is kept literally.
pub fn interpolate(input: &str, env: &EnvSource) -> Result<(String, bool), String> {
    let mut out = String::with_capacity(input.len());
    let mut rest = input;
    let mut found = false;
    while let Some(start) = rest.find("${") {
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&rest[..start]);
        let inner = &rest[start + 2..start + len];
        let (name, default) = match inner.find(":-") {
            Some(i) => (&inner[..i], Some(&inner[i + 2..])),
            None => (inner, None),
        };
        if name.is_empty() || name.contains(':') {
            return Err(format!(
                "`${{{inner}}}` is not a valid placeholder (use ${{VAR}} or ${{VAR:-default}})"
            ));
        }
        found = true;
        match (env.get(name), default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable `{name}` is not set (export it, or write ${{{name}:-default}})"
                ))
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Ok((out, found))
}

fn interpolate_current(input: &str) -> Result<(String, bool), String> {
    ENV.with(|e| interpolate(input, &e.borrow()))
}

/// A config string after interpolation, remembering whether it came from the environment.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct IString {
    pub value: String,
    /// True when the file held a `${...}` placeholder rather than the literal text.
    pub from_env: bool,
}

impl IString {
    pub fn literal(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
            from_env: false,
        }
    }

    pub fn as_str(&self) -> &str {
        &self.value
    }
}

impl fmt::Debug for IString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

impl<'de> Deserialize<'de> for IString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        let (value, from_env) = interpolate_current(&raw).map_err(de::Error::custom)?;
        Ok(Self { value, from_env })
    }
}

impl Serialize for IString {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.value)
    }
}

/// A config secret (API key, auth key): interpolated like [`IString`], masked when printed or
/// serialized.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct ISecret {
    pub value: Secret,
    pub from_env: bool,
}

impl fmt::Debug for ISecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.value, f)
    }
}

impl<'de> Deserialize<'de> for ISecret {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = IString::deserialize(d)?;
        Ok(Self {
            value: Secret::new(s.value),
            from_env: s.from_env,
        })
    }
}

impl Serialize for ISecret {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&mask(self.value.expose()))
    }
}

/// A number that may also be written as a string with placeholders (`port: ${PORT:-55669}`).
#[derive(Clone, Copy, Default, PartialEq, PartialOrd)]
pub struct Num<T>(pub T);

impl<T: fmt::Debug> fmt::Debug for Num<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Serialize> Serialize for Num<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl<'de, T> Deserialize<'de> for Num<T>
where
    T: FromStr + NumLike,
    <T as FromStr>::Err: fmt::Display,
{
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(std::marker::PhantomData<T>);
        impl<T> Visitor<'_> for V<T>
        where
            T: FromStr + NumLike,
            <T as FromStr>::Err: fmt::Display,
        {
            type Value = Num<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a number (or a string such as \"${VAR:-1}\")")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                T::from_i128(i128::from(v))
                    .map(Num)
                    .ok_or_else(|| E::custom(format!("{v} is out of range")))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                T::from_i128(i128::from(v))
                    .map(Num)
                    .ok_or_else(|| E::custom(format!("{v} is out of range")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                T::from_float(v)
                    .map(Num)
                    .ok_or_else(|| E::custom(format!("{v} is not a valid value here")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                let (s, _) = interpolate_current(v).map_err(E::custom)?;
                s.trim()
                    .parse::<T>()
                    .map(Num)
                    .map_err(|e| E::custom(format!("`{s}` is not a number: {e}")))
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// The numeric types a [`Num`] can hold.
pub trait NumLike: Sized {
    fn from_i128(v: i128) -> Option<Self>;
    /// Exact integers only, for integer types.
    fn from_float(v: f64) -> Option<Self>;
}

macro_rules! int_num {
    ($($t:ty),*) => {$(
        impl NumLike for $t {
            fn from_i128(v: i128) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_float(v: f64) -> Option<Self> {
                if v.fract() == 0.0 && v >= <$t>::MIN as f64 && v <= <$t>::MAX as f64 {
                    Some(v as $t)
                } else {
                    None
                }
            }
        }
    )*};
}
int_num!(u16, u32, u64);

impl NumLike for f64 {
    fn from_i128(v: i128) -> Option<Self> {
        Some(v as f64)
    }
    fn from_float(v: f64) -> Option<Self> {
        Some(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvSource {
        EnvSource::Map(
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn replaces_variables_and_defaults() {
        let e = env(&[("A", "one")]);
        assert_eq!(
            interpolate("x-${A}-${B:-two}-y", &e),
            Ok(("x-one-two-y".into(), true))
        );
        assert_eq!(interpolate("${B:-}", &e), Ok((String::new(), true)));
        assert_eq!(interpolate("plain", &e), Ok(("plain".into(), false)));
        assert_eq!(
            interpolate("dangling ${A", &e),
            Ok(("dangling ${A".into(), false))
        );
    }

    #[test]
    fn missing_variable_without_default_names_it() {
        let err = interpolate("${NOPE}", &env(&[])).unwrap_err();
        assert!(err.contains("`NOPE` is not set"), "{err}");
    }

    #[test]
    fn set_variable_wins_over_default() {
        let e = env(&[("P", "9")]);
        assert_eq!(interpolate("${P:-1}", &e), Ok(("9".into(), true)));
    }
}
