use std::collections::HashMap;
use std::path::Path;

use super::*;

fn env(pairs: &[(&str, &str)]) -> EnvSource {
    EnvSource::Map(
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect::<HashMap<_, _>>(),
    )
}

fn yaml(text: &str, e: &EnvSource) -> Result<(ProxyConfig, Vec<String>), ConfigError> {
    parse(text, Format::Yaml, Path::new("/cfg/proxy-config.yaml"), e)
}

#[test]
fn full_seed_config_loads_with_interpolation() {
    let text = r#"
version: 1
accounts:
  anthropic:
    - name: personal
      apiKey: "${KEY_1}"
      weight: 3
      enabled: false
      rateLimit: 60
      metadata: {tier: pro}
      excludedModels: ["claude-opus-*"]
routing:
  strategy: fill-first
  model-mappings:
    - {from: claude-3-5-haiku-20241022, to: gemini-2.5-flash, provider: google-ai}
  fallback-chain:
    - {provider: openai, model: gpt-4o}
  passthrough-models: [claude-sonnet-4-5]
  quota-threshold: 0.7
providers:
  anthropic: {baseUrl: "http://127.0.0.1:${UP_PORT:-9}"}
server: {port: "${PORT:-4000}", host: 127.0.0.1}
"#;
    let (c, warnings) = yaml(text, &env(&[("KEY_1", "sk-ant-api03-secret-value-0000")])).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    let a = &c.accounts.anthropic[0];
    assert_eq!(a.name.as_str(), "personal");
    let key = a.api_key.as_ref().unwrap();
    assert_eq!(key.value.expose(), "sk-ant-api03-secret-value-0000");
    assert!(key.from_env);
    assert_eq!(a.weight.0, 3);
    assert!(!a.enabled);
    assert_eq!(a.excluded_models[0].as_str(), "claude-opus-*");
    assert_eq!(c.routing.strategy, Some(Strategy::FillFirst));
    assert_eq!(c.routing.model_mappings[0].provider.as_str(), "google-ai");
    assert_eq!(c.routing.fallback_chain[0].model.as_str(), "gpt-4o");
    assert_eq!(c.routing.quota_threshold.0, 0.7);
    assert_eq!(
        c.providers.anthropic.base_url.as_str(),
        "http://127.0.0.1:9"
    );
    assert_eq!(c.server.port.0, 4000);
}

#[test]
fn camel_case_routing_aliases_are_accepted() {
    let text = "routing:\n  modelMappings: [{from: a, to: b}]\n  fallbackChain: [{provider: openai, model: m}]\n";
    let (c, w) = yaml(text, &env(&[])).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!(c.routing.model_mappings.len(), 1);
    assert_eq!(c.routing.model_mappings[0].provider.as_str(), "anthropic");
    assert_eq!(c.routing.fallback_chain.len(), 1);
}

#[test]
fn defaults_when_empty() {
    let (c, w) = yaml("# nothing here\n", &env(&[])).unwrap();
    assert!(w.is_empty());
    assert_eq!(c.server.port.0, DEFAULT_PORT);
    assert_eq!(c.server.host.as_str(), "127.0.0.1");
    assert_eq!(
        c.providers.anthropic.base_url.as_str(),
        DEFAULT_ANTHROPIC_BASE_URL
    );
    assert_eq!(c.routing.quota_threshold.0, 0.5);
}

#[test]
fn wrong_type_names_line_column_and_key() {
    let text =
        "accounts:\n  anthropic:\n    - name: a\n      apiKey: \"${K}\"\n      weight: lots\n";
    let err = yaml(text, &env(&[("K", "x")])).unwrap_err();
    let ConfigError::Invalid {
        line, column, key, ..
    } = &err
    else {
        panic!("{err}")
    };
    assert_eq!(key, "accounts.anthropic[0].weight");
    assert_eq!(*line, Some(5));
    assert_eq!(*column, Some(15));
    let msg = err.to_string();
    assert!(
        msg.starts_with("/cfg/proxy-config.yaml:5:15: key `accounts.anthropic[0].weight`:"),
        "{msg}"
    );
    assert!(msg.contains("not a number"), "{msg}");
}

#[test]
fn missing_variable_is_an_error_naming_key_and_variable() {
    let text = "accounts:\n  anthropic:\n    - name: a\n      apiKey: \"${MISSING_KEY}\"\n";
    let err = yaml(text, &env(&[])).unwrap_err().to_string();
    assert!(err.contains("accounts.anthropic[0].apiKey"), "{err}");
    assert!(err.contains("`MISSING_KEY` is not set"), "{err}");
    assert!(
        err.starts_with("/cfg/proxy-config.yaml:4:15:"),
        "points at the value: {err}"
    );
    assert!(!err.contains("[0]: environment"), "no doubled path: {err}");
}

#[test]
fn an_entry_without_api_key_is_an_overlay_but_an_empty_key_is_an_error() {
    let (c, _) = yaml(
        "accounts:\n  anthropic:\n    - name: a\n      excludedModels: [x]\n",
        &env(&[]),
    )
    .unwrap();
    assert!(c.accounts.anthropic[0].api_key.is_none());
    let err = yaml(
        "accounts:\n  anthropic:\n    - name: a\n      apiKey: \"\"\n",
        &env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("accounts.anthropic[0].apiKey"), "{err}");
    let err = yaml(
        "accounts:\n  anthropic:\n    - name: a\n      weight: 0\n",
        &env(&[]),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("accounts.anthropic[0].weight"), "{err}");
}

#[test]
fn unknown_keys_and_literal_keys_warn() {
    let text = "accounts:\n  anthropic:\n    - name: a\n      apiKey: sk-ant-api03-literal\n      colour: blue\nroutnig: {}\n";
    let (_, w) = yaml(text, &env(&[])).unwrap();
    assert!(
        w.iter()
            .any(|m| m.contains("unknown key `accounts.anthropic[0].colour`")),
        "{w:?}"
    );
    assert!(w.iter().any(|m| m.contains("`routnig`")), "{w:?}");
    let literal = w
        .iter()
        .find(|m| m.contains("literal API key"))
        .expect("literal warning");
    assert!(literal.contains("${ANTHROPIC_KEY_1}"), "{literal}");
    assert!(
        !literal.contains("sk-ant-api03-literal"),
        "a warning must not echo the key: {literal}"
    );
}

#[test]
fn bad_strategy_lists_the_choices() {
    let err = yaml("routing: {strategy: random}\n", &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("routing.strategy"), "{err}");
    assert!(err.contains("fill-first"), "{err}");
}

#[test]
fn syntax_error_has_position() {
    let err = yaml("server: {port: 1\n", &env(&[])).unwrap_err();
    let ConfigError::Invalid { line, .. } = &err else {
        panic!("{err}")
    };
    assert!(line.is_some(), "{err}");
}

#[test]
fn json_config_is_accepted_with_positions() {
    let p = Path::new("/cfg/proxy-config.json");
    let (c, _) = parse(r#"{"server": {"port": 1234}}"#, Format::Json, p, &env(&[])).unwrap();
    assert_eq!(c.server.port.0, 1234);
    let err = parse(
        "{\n  \"server\": {\"port\": true}\n}",
        Format::Json,
        p,
        &env(&[]),
    )
    .unwrap_err();
    let ConfigError::Invalid { line, key, .. } = &err else {
        panic!("{err}")
    };
    assert_eq!(*line, Some(2));
    assert_eq!(key, "server.port");
}

#[test]
fn cloaking_is_accepted_and_declined_plugins_warn() {
    let text = "cloaking:\n  mode: auto\n  plugins:\n    wordObfuscator: {enabled: true, words: [proxy]}\n    tlsFingerprint: {enabled: false}\n";
    let (c, w) = yaml(text, &env(&[])).unwrap();
    assert_eq!(c.cloaking.unwrap().mode, CloakMode::Auto);
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(w[0].contains("wordObfuscator"));
    let err = yaml("cloaking: {mode: sometimes}\n", &env(&[]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("cloaking.mode"), "{err}");
}

#[test]
fn semantic_checks_name_the_key() {
    let e = env(&[("K", "k")]);
    let err = yaml(
        "accounts: {anthropic: [{apiKey: \"${K}\", weight: 0}]}\n",
        &e,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("accounts.anthropic[0].weight"), "{err}");
    let err = yaml("providers: {anthropic: {baseUrl: ftp://x}}\n", &e)
        .unwrap_err()
        .to_string();
    assert!(err.contains("providers.anthropic.baseUrl"), "{err}");
    let err = yaml("routing: {quota-threshold: 2}\n", &e)
        .unwrap_err()
        .to_string();
    assert!(err.contains("routing.quota-threshold"), "{err}");
}

#[test]
fn secrets_serialize_masked() {
    let e = env(&[("K", "sk-ant-api03-0123456789abcdefghijklmnop")]);
    let (c, _) = yaml(
        "accounts: {anthropic: [{name: a, apiKey: \"${K}\"}]}\nserver: {authKey: \"${K}\"}\n",
        &e,
    )
    .unwrap();
    let json = serde_json::to_string(&c).unwrap();
    assert!(!json.contains("0123456789abcdef"), "{json}");
    assert!(json.contains("sk-ant-api03-…mnop"), "{json}");
}

/// The loader never panics: a valid config with bytes inserted or removed anywhere (YAML and
/// JSON) either loads or is an error that names the file.
mod properties {
    use super::{env, parse, yaml, ConfigError, Format, Path, ProxyConfig};
    use proptest::prelude::*;

    const SAMPLE: &str = "accounts:\n  anthropic:\n    - name: work\n      apiKey: \"${KEY:-sk-x}\"\n      weight: 2\n      excludedModels: [\"claude-opus-*\"]\nrouting:\n  strategy: fill-first\n  quota-threshold: 0.5\n  max-wait: 3\nserver:\n  port: 8080\n  authKey: \"${PROXY_KEY:-k}\"\n";
    const SAMPLE_JSON: &str = r#"{"accounts":{"anthropic":[{"name":"work","apiKey":"${KEY:-sk-x}","weight":2}]},"routing":{"strategy":"round-robin","max-wait":0},"server":{"port":8080}}"#;

    fn mutated(base: &'static str) -> impl Strategy<Value = String> {
        (proptest::collection::vec(
            (
                any::<proptest::sample::Index>(),
                prop_oneof![
                    Just(None),
                    "[\\n :,{}\\[\\]\"'#&*!|>%@`$\\-a-z0-9.]".prop_map(Some),
                ],
            ),
            1..6,
        ),)
            .prop_map(move |(edits,)| {
                let mut text: Vec<char> = base.chars().collect();
                for (at, insert) in edits {
                    let i = at.index(text.len() + 1);
                    match insert {
                        Some(s) => {
                            for (k, c) in s.chars().enumerate() {
                                text.insert(i + k, c);
                            }
                        }
                        None if i < text.len() => {
                            text.remove(i);
                        }
                        None => {}
                    }
                }
                text.into_iter().collect()
            })
    }

    fn check(
        result: Result<(ProxyConfig, Vec<String>), ConfigError>,
        file: &str,
    ) -> Result<(), TestCaseError> {
        if let Err(e) = result {
            let shown = e.to_string();
            prop_assert!(shown.contains(file), "{shown}");
            // Where: a line and column after the file name, or the key's path.
            let after = &shown[shown.find(file).map_or(0, |i| i + file.len())..];
            let at_position =
                after.starts_with(':') && after[1..].starts_with(|c: char| c.is_ascii_digit());
            prop_assert!(at_position || shown.contains("key `"), "{shown}");
        }
        Ok(())
    }

    proptest! {
        #[test]
        fn yaml_edits_never_panic(text in mutated(SAMPLE)) {
            check(yaml(&text, &env(&[])), "proxy-config.yaml")?;
        }

        #[test]
        fn json_edits_never_panic(text in mutated(SAMPLE_JSON)) {
            let r = parse(&text, Format::Json, Path::new("/cfg/proxy-config.json"), &env(&[]));
            check(r, "proxy-config.json")?;
        }

        #[test]
        fn any_text_never_panics(text in "[ -~\\n]{0,200}") {
            check(yaml(&text, &env(&[])), "proxy-config.yaml")?;
        }
    }
}

#[test]
fn providers_named_by_routing_must_be_configured() {
    let e = env(&[("LOCAL_KEY", "k")]);
    let text = "routing:\n  fallback-chain:\n    - {provider: opnai, model: gpt-4o}\n    - {provider: anthropic, model: x}\n    - {provider: local, model: qwen}\n  model-mappings:\n    - {from: a, to: b, provider: vertex}\nproviders:\n  openai-compatible:\n    local: {baseUrl: 'http://127.0.0.1:11434/v1', apiKey: '${LOCAL_KEY}'}\n";
    let (c, warnings) = yaml(text, &e).unwrap();
    assert_eq!(
        c.providers.openai_compatible["local"]
            .base_url
            .as_ref()
            .unwrap()
            .as_str(),
        "http://127.0.0.1:11434/v1"
    );
    let all = warnings.join("\n");
    assert!(
        all.contains("`routing.fallback-chain[0].provider` names provider `opnai`, which is not configured (known: anthropic, openai, google-ai, local)"),
        "{all}"
    );
    assert!(
        all.contains("`routing.fallback-chain[1]` names anthropic"),
        "{all}"
    );
    assert!(
        all.contains("`routing.model-mappings[0].provider` names provider `vertex`"),
        "{all}"
    );
    assert!(!all.contains("fallback-chain[2]"), "{all}");

    let err = yaml(
        "providers:\n  openai-compatible:\n    openai: {baseUrl: 'http://x'}\n",
        &e,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("providers.openai-compatible.openai"), "{err}");
    let err = yaml(
        "providers:\n  openai-compatible:\n    local: {apiKey: k}\n",
        &e,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("providers.openai-compatible.local.baseUrl"),
        "{err}"
    );
    let err = yaml(
        "providers:\n  openai-compatible:\n    local: {baseUrl: 'ftp://x'}\n",
        &e,
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("providers.openai-compatible.local.baseUrl"),
        "{err}"
    );
}

#[test]
fn unknown_keys_say_where_and_what_was_meant() {
    let text = "server:\n  prot: 8080\naccounts:\n  anthropic:\n    - name: a\n      excludedModel: [x]\nroutnig: {}\nproviders:\n  openai-compatible:\n    local: {baseUrl: 'http://127.0.0.1:1/v1', apikey: k}\n";
    let (_, w) = yaml(text, &env(&[])).unwrap();
    let all = w.join("\n");
    assert!(
        all.contains(
            "proxy-config.yaml:2:3: unknown key `server.prot` is ignored; did you mean `port`?"
        ),
        "{all}"
    );
    assert!(
        all.contains(":6:7: unknown key `accounts.anthropic[0].excludedModel` is ignored; did you mean `excludedModels`?"),
        "{all}"
    );
    assert!(
        all.contains(":7:1: unknown key `routnig` is ignored; did you mean `routing`?"),
        "{all}"
    );
    assert!(
        all.contains("unknown key `providers.openai-compatible.local.apikey` is ignored; did you mean `apiKey`?"),
        "{all}"
    );
    let json = r#"{"server": {"hots": "127.0.0.1"}}"#;
    let (_, w) = parse(
        json,
        Format::Json,
        Path::new("/cfg/proxy-config.json"),
        &env(&[]),
    )
    .unwrap();
    assert!(
        w.iter().any(|m| m.contains(
            "proxy-config.json:1:13: unknown key `server.hots` is ignored; did you mean `host`?"
        )),
        "{w:?}"
    );
}

#[test]
fn a_second_document_is_pointed_at() {
    let e = yaml(
        "routing:\n  strategy: fill-first\n---\nserver: {}\n",
        &env(&[]),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("proxy-config.yaml:4:1"),
        "the second document: {e}"
    );
    assert!(e.contains("more than one YAML document"), "{e}");
    assert!(!e.contains("from_str_multiple"), "no API advice: {e}");
}

#[test]
fn two_accounts_with_one_name_are_reported_at_the_second() {
    let text = "accounts:\n  anthropic:\n    - name: a\n      apiKey: ${K1}\n    - name: \"a\"\n      apiKey: ${K2}\n    - name: b\n";
    let (_, warnings) = yaml(text, &env(&[("K1", "x1"), ("K2", "x2")])).unwrap();
    let w = warnings
        .iter()
        .find(|w| w.contains("repeats"))
        .unwrap_or_else(|| panic!("{warnings:?}"));
    assert!(w.contains("proxy-config.yaml:5:7"), "{w}");
    assert!(
        w.contains("accounts.anthropic[1].name") && w.contains("`a-2`"),
        "{w}"
    );
}

#[test]
fn a_third_account_with_one_name_is_reported_as_the_proxy_labels_it() {
    let text = "accounts:\n  anthropic:\n    - name: a\n      apiKey: ${K}\n    - name: a\n      apiKey: ${K}\n    - name: a\n      apiKey: ${K}\n";
    let (_, warnings) = yaml(text, &env(&[("K", "x")])).unwrap();
    let repeats: Vec<_> = warnings.iter().filter(|w| w.contains("repeats")).collect();
    assert_eq!(repeats.len(), 2, "{warnings:?}");
    assert!(
        repeats[0].contains("proxy-config.yaml:5:7") && repeats[0].contains("`a-2`"),
        "{}",
        repeats[0]
    );
    assert!(
        repeats[1].contains("proxy-config.yaml:7:7")
            && repeats[1].contains("accounts.anthropic[2].name")
            && repeats[1].contains("`a-3`"),
        "{}",
        repeats[1]
    );
}

#[test]
fn checks_after_parsing_point_at_their_key() {
    let text = "server:\n  port: 1\nrouting:\n  strategy: fill-first\n  quota-threshold: 5\naccounts:\n  anthropic:\n    - name: a\n      apiKey: ${K}\n    - name: b\n      apiKey: ${K}\n      weight: 0\n";
    let weight_ok = text.replace("weight: 0", "weight: 1");
    let e = yaml(&weight_ok, &env(&[("K", "x")]))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/cfg/proxy-config.yaml:5:3: key `routing.quota-threshold`"),
        "{e}"
    );
    let text = text.replace("quota-threshold: 5", "quota-threshold: 0.5");
    let e = yaml(&text, &env(&[("K", "x")]))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(
        e.starts_with("/cfg/proxy-config.yaml:12:7: key `accounts.anthropic[1].weight`"),
        "{e}"
    );
    assert_eq!(
        locate_yaml("a:\n  - x: 1\n  - x: 2\n    y: 3\n", "a[1].y"),
        Some((4, 5))
    );
    assert_eq!(
        locate_yaml("a:\n  b: 1\nc: 2\n", "a.c"),
        None,
        "c is not under a"
    );
}

#[test]
fn a_key_given_twice_is_an_error_at_the_second() {
    let e = yaml("server:\n  port: 1\n  port: 2\n", &env(&[]))
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("/cfg/proxy-config.yaml:3:3:"), "{e}");
    assert!(e.contains("`port` is given twice"), "{e}");
    assert!(!e.contains("DuplicateKeyPolicy"), "{e}");
}
