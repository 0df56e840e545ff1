//! The keys the config knows, read from the config types themselves, so that an unknown key's
//! warning can suggest the one that was meant (`prot` → `port`) and never goes stale.
//!
//! [`known_keys`] runs [`ProxyConfig`]'s `Deserialize` against a deserializer that produces no
//! data: every struct it is asked for records its field names under its path and gets a
//! placeholder for each field, every list one element, every map one entry, so every nested
//! struct is reached once.

use std::cell::RefCell;
use std::collections::HashMap;

use serde::de::value::Error;
use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::model::ProxyConfig;

/// Field names by the path of the struct that has them (`""`, `server`, `accounts.anthropic[]`,
/// `providers.openai-compatible.*`).
pub fn known_keys() -> HashMap<String, Vec<&'static str>> {
    let state = State::default();
    // A struct's field list holds its aliases too (`primary-account`, `primaryAccount`); giving
    // both is a duplicate field. Each run that meets one leaves the alias out and runs again.
    for _ in 0..64 {
        state.found.borrow_mut().clear();
        let _ = ProxyConfig::deserialize(Collector {
            path: String::new(),
            state: &state,
        });
        match state.blame.borrow_mut().take() {
            Some(alias) => state.skip.borrow_mut().push(alias),
            None => break,
        }
    }
    state.found.into_inner()
}

/// What the runs learn.
#[derive(Default)]
struct State {
    found: RefCell<HashMap<String, Vec<&'static str>>>,
    /// `path.field` names left out (aliases of a field already given).
    skip: RefCell<Vec<String>>,
    /// The alias that broke this run.
    blame: RefCell<Option<String>>,
    /// The last key given (`path.name`): on a duplicate field, the alias to leave out.
    last_key: RefCell<String>,
}

/// The known key closest to `unknown` at `parent`, when it is close enough to be a typo.
pub fn suggestion(
    known: &HashMap<String, Vec<&'static str>>,
    parent: &str,
    unknown: &str,
) -> Option<&'static str> {
    let fields = known.get(parent)?;
    let limit = (unknown.chars().count() / 3).max(1);
    fields
        .iter()
        .map(|f| (distance(&unknown.to_lowercase(), &f.to_lowercase()), *f))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, f)| f)
}

/// Edit distance counting a swap of two neighbours as one edit (`prot` → `port` is 1).
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    let mut d = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
}

struct Collector<'a> {
    path: String,
    state: &'a State,
}

impl<'a> Collector<'a> {
    fn child(&self, name: &str) -> Collector<'a> {
        let path = if self.path.is_empty() {
            name.to_string()
        } else if name.starts_with('[') {
            format!("{}{name}", self.path)
        } else {
            format!("{}.{name}", self.path)
        };
        Collector {
            path,
            state: self.state,
        }
    }
}

impl<'de> de::Deserializer<'de> for Collector<'_> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        // Strings and numbers alike accept a string (`${VAR}` placeholders): "1" suits both.
        v.visit_str("1")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_bool(false)
    }

    fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_some(self)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        v: V,
    ) -> Result<V::Value, Error> {
        v.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        v.visit_seq(One {
            item: Some(self.child("[]")),
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, Error> {
        let value = self.child("*");
        v.visit_map(Fields {
            names: vec!["*"],
            parent: self,
            next_value: None,
            single: Some(value),
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        self.state
            .found
            .borrow_mut()
            .entry(self.path.clone())
            .or_insert_with(|| fields.to_vec());
        let skip = self.state.skip.borrow().clone();
        let path = self.path.clone();
        let state = self.state;
        let names = fields
            .iter()
            .rev()
            .copied()
            .filter(|f| !skip.contains(&format!("{path}.{f}")))
            .collect();
        let result = v.visit_map(Fields {
            names,
            parent: self,
            next_value: None,
            single: None,
        });
        if let Err(e) = &result {
            let text = e.to_string();
            let mut blame = state.blame.borrow_mut();
            if blame.is_none() && text.starts_with("duplicate field") {
                *blame = Some(state.last_key.borrow().clone());
            }
        }
        result
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        _name: &'static str,
        variants: &'static [&'static str],
        v: V,
    ) -> Result<V::Value, Error> {
        let first = variants.first().copied().unwrap_or_default();
        v.visit_enum(first.into_deserializer())
    }

    serde::forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf unit unit_struct tuple tuple_struct identifier ignored_any
    }
}

/// A list of one element.
struct One<'a> {
    item: Option<Collector<'a>>,
}

impl<'de> SeqAccess<'de> for One<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.item.take() {
            Some(c) => seed.deserialize(c).map(Some),
            None => Ok(None),
        }
    }
}

/// A struct's fields (or a map's one entry), each with a placeholder value.
struct Fields<'a> {
    /// Names still to give, last first.
    names: Vec<&'static str>,
    parent: Collector<'a>,
    next_value: Option<Collector<'a>>,
    /// A map's one value.
    single: Option<Collector<'a>>,
}

impl<'de> MapAccess<'de> for Fields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(name) = self.names.pop() else {
            return Ok(None);
        };
        self.next_value = Some(match self.single.take() {
            Some(v) => v,
            None => self.parent.child(name),
        });
        *self.parent.state.last_key.borrow_mut() = format!("{}.{name}", self.parent.path);
        let key: de::value::StrDeserializer<'_, Error> = name.into_deserializer();
        seed.deserialize(key).map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        match self.next_value.take() {
            Some(c) => seed.deserialize(c),
            None => Err(de::Error::custom("value without a key")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_section_is_reached() {
        let k = known_keys();
        assert!(k[""].contains(&"server"), "{k:?}");
        assert!(k["server"].contains(&"port"));
        assert!(k["server"].contains(&"authKey"));
        assert!(k["accounts.anthropic[]"].contains(&"excludedModels"));
        assert!(k["routing"].contains(&"fallback-chain"));
        assert!(k["routing.fallback-chain[]"].contains(&"model"));
        assert!(k["providers.openai-compatible.*"].contains(&"baseUrl"));
        assert!(k["providers.anthropic-oauth"].contains(&"tokenUrl"));
    }

    #[test]
    fn typos_get_the_key_that_was_meant() {
        let k = known_keys();
        assert_eq!(suggestion(&k, "server", "prot"), Some("port"));
        assert_eq!(suggestion(&k, "server", "authkey"), Some("authKey"));
        assert_eq!(
            suggestion(&k, "routing", "fallback-chian"),
            Some("fallback-chain")
        );
        assert_eq!(suggestion(&k, "server", "colour"), None);
    }
}
