//! Where accounts come from (docs/design.md §1): `tokens.json` compound keys; else the legacy
//! credentials file; else `ANTHROPIC_API_KEY`; plus the config file's `accounts.anthropic[]`.
//!
//! Discovery only reads: refreshed tokens are written by `auth::refresh`. A store that does not
//! parse is reported and skipped, never rewritten.

use std::collections::HashSet;

use neurolink_shared::config::ProxyConfig;
use neurolink_shared::paths::{self, Paths};
use neurolink_shared::token_store::{self, NEVER_EXPIRES_MS};
use std::sync::Arc;

use neurolink_shared::Secret;

use crate::auth::{OAuthCell, Persist, Tokens};

use crate::clock::{rfc3339, Millis};
use crate::pool::{AccountSpec, Credential, Source};

#[derive(Debug, Default)]
pub struct Found {
    pub specs: Vec<AccountSpec>,
    /// `tokens.json` exists but could not be read: a running daemon keeps the accounts it has.
    pub store_unreadable: bool,
    /// Store labels whose entry says `disabled: false` explicitly (what `auth enable` writes).
    pub enabled_by_user: std::collections::HashSet<String>,
    /// Problems the user should hear about; none stops the daemon.
    pub warnings: Vec<String>,
}

/// Gather every account. `env_api_key` is `ANTHROPIC_API_KEY`, passed in so tests control it.
pub fn discover(
    config: &ProxyConfig,
    paths: &Paths,
    env_api_key: Option<String>,
    now: Millis,
) -> Found {
    let mut found = Found::default();
    let home = paths::home_dir()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_default();

    let stored = match token_store::read_store(&paths.tokens(), &home) {
        Ok(Some(file)) => token_store::anthropic_accounts(&file, &mut found.warnings),
        Ok(None) => Vec::new(),
        Err(e) => {
            found.warnings.push(format!(
                "{e}; its accounts are not used (the file is left untouched)"
            ));
            found.store_unreadable = true;
            Vec::new()
        }
    };
    for account in stored {
        if account.entry.disabled == Some(false) {
            found.enabled_by_user.insert(account.label.clone());
        }
        let t = &account.entry.tokens;
        let credential = if t.is_oauth() {
            let tokens = Tokens {
                access: Secret::new(t.access_token.clone()),
                refresh: t.refresh_token.clone().map(Secret::new),
                expires_at_ms: t.expires_at,
            };
            let persist = Persist::TokenStore {
                label: account.label.clone(),
            };
            Credential::OAuth(Arc::new(OAuthCell::new(tokens, persist)))
        } else {
            Credential::api_key(Secret::new(t.access_token.clone()))
        };
        let mut disabled = if account.entry.disabled == Some(true) {
            Some(format!(
                "disabled in tokens.json ({}); run `neurolink auth enable {}`",
                account
                    .entry
                    .disabled_reason
                    .as_deref()
                    .unwrap_or("no reason given"),
                account.label
            ))
        } else {
            None
        };
        if disabled.is_none() {
            disabled = expired(&credential, now, &account.label);
        }
        found.specs.push(AccountSpec {
            disabled,
            ..AccountSpec::new(account.label, Source::TokenStore, credential)
        });
    }

    if found.specs.is_empty() {
        match token_store::read_legacy(&paths.legacy_credentials()) {
            Ok(Some(legacy)) => match legacy_credential(&legacy) {
                Some(credential) => {
                    let disabled = expired(&credential, now, "default");
                    found.specs.push(AccountSpec {
                        disabled,
                        ..AccountSpec::new("default", Source::LegacyCredentials, credential)
                    });
                }
                None => found.warnings.push(format!(
                    "{}: has neither `oauth` nor `apiKey`; skipped",
                    paths.legacy_credentials().display()
                )),
            },
            Ok(None) => {}
            Err(e) => found.warnings.push(format!("{e}; skipped")),
        }
    }

    if found.specs.is_empty() {
        if let Some(key) = env_api_key.filter(|k| !k.trim().is_empty()) {
            let credential = Credential::api_key(Secret::new(key.trim()));
            found
                .specs
                .push(AccountSpec::new("env", Source::Environment, credential));
        }
    }

    for (i, a) in config.accounts.anthropic.iter().enumerate() {
        let excluded: Vec<String> = a.excluded_models.iter().map(|m| m.value.clone()).collect();
        let disabled = (!a.enabled).then(|| "enabled: false in the config file".to_string());
        let Some(key) = &a.api_key else {
            // No key of its own: settings for the stored login with this label.
            match found.specs.iter_mut().find(|s| *s.label == *a.name.value && s.source != Source::Config) {
                Some(stored) => {
                    stored.excluded_models.extend(excluded);
                    stored.weight = a.weight.0.max(1);
                    if stored.disabled.is_none() {
                        stored.disabled = disabled;
                    }
                }
                None => found.warnings.push(format!(
                    "accounts.anthropic[{i}] (`{}`) has no apiKey and no stored login has that label; ignored",
                    a.name.value
                )),
            }
            continue;
        };
        found.specs.push(AccountSpec {
            base_url: a.base_url.as_ref().map(|u| u.value.clone()),
            weight: a.weight.0.max(1),
            disabled,
            excluded_models: excluded,
            ..AccountSpec::new(
                a.name.value.clone(),
                Source::Config,
                Credential::api_key(key.value.clone()),
            )
        });
    }

    make_labels_unique(&mut found);
    found
}

/// The legacy file's credential: the one its `type` names, else whichever it has.
fn legacy_credential(legacy: &token_store::LegacyCredentials) -> Option<Credential> {
    let oauth = legacy.oauth.as_ref().map(|o| {
        let tokens = Tokens {
            access: Secret::new(o.access_token.clone()),
            refresh: o.refresh_token.clone().map(Secret::new),
            expires_at_ms: o.expires_at.unwrap_or(NEVER_EXPIRES_MS),
        };
        Credential::OAuth(Arc::new(OAuthCell::new(tokens, Persist::Legacy)))
    });
    let key = legacy
        .api_key
        .as_ref()
        .map(|k| Credential::api_key(Secret::new(k.clone())));
    if legacy.kind == "oauth" {
        oauth.or(key)
    } else {
        key.or(oauth)
    }
}

/// An OAuth token past its expiry with no refresh token cannot be used; one with a refresh token
/// gets a refresh attempt at start (see `daemon::refresh_expired_at_start`).
fn expired(credential: &Credential, now: Millis, label: &str) -> Option<String> {
    match credential {
        Credential::OAuth(cell) if cell.is_expired(now) && !cell.has_refresh_token() => Some(format!(
            "OAuth access token expired at {}; log in again with `neurolink auth login anthropic --add --label {label}`",
            rfc3339(u64::try_from(cell.expires_at_ms()).unwrap_or(0))
        )),
        _ => None,
    }
}

fn make_labels_unique(found: &mut Found) {
    let mut seen = HashSet::new();
    for spec in &mut found.specs {
        if seen.insert(spec.label.clone()) {
            continue;
        }
        let original = spec.label.clone();
        let mut n = 2;
        while !seen.insert(format!("{original}-{n}").into()) {
            n += 1;
        }
        spec.label = format!("{original}-{n}").into();
        found.warnings.push(format!(
            "two accounts are labelled `{original}`; the later one is shown as `{}`",
            spec.label
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurolink_shared::config::{self, EnvSource, Format};
    use std::path::Path;

    fn cfg(text: &str) -> ProxyConfig {
        config::parse(
            text,
            Format::Yaml,
            Path::new("c.yaml"),
            &EnvSource::Map(Default::default()),
        )
        .unwrap()
        .0
    }

    #[test]
    fn env_key_is_used_only_without_stored_accounts_and_config_accounts_add_up() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        let c = cfg("accounts: {anthropic: [{name: work, apiKey: sk-ant-api03-x, weight: 2, enabled: false}]}");
        let found = discover(&c, &paths, Some("sk-env".into()), 0);
        let labels: Vec<_> = found.specs.iter().map(|s| &*s.label).collect();
        assert_eq!(labels, ["env", "work"]);
        assert_eq!(found.specs[1].weight, 2);
        assert!(found.specs[1].disabled.is_some());
    }

    #[test]
    fn plain_store_accounts_win_over_env_and_expired_oauth_is_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        std::fs::write(
            paths.tokens(),
            r#"{"version":"2.0","lastModified":1,"providers":{
              "anthropic:alice":{"tokens":{"accessToken":"oat-a","refreshToken":"r","expiresAt":5000,"tokenType":"Bearer"},"createdAt":1,"lastAccessed":1},
              "anthropic:bob":{"tokens":{"accessToken":"oat-b","expiresAt":500,"tokenType":"Bearer"},"createdAt":1,"lastAccessed":1},
              "anthropic:key":{"tokens":{"accessToken":"sk-k","expiresAt":9007199254740991,"tokenType":"api-key"},"createdAt":1,"lastAccessed":1,"disabled":true,"disabledReason":"refresh_failed"},
              "openai:x":{"tokens":{"accessToken":"o","expiresAt":1,"tokenType":"Bearer"}}}}"#,
        )
        .unwrap();
        let found = discover(&ProxyConfig::default(), &paths, Some("sk-env".into()), 1000);
        let labels: Vec<_> = found.specs.iter().map(|s| &*s.label).collect();
        assert_eq!(labels, ["alice", "bob", "key"]);
        assert!(found.specs[0].disabled.is_none());
        assert!(found.specs[1]
            .disabled
            .as_deref()
            .unwrap()
            .contains("expired"));
        assert!(found.specs[2]
            .disabled
            .as_deref()
            .unwrap()
            .contains("refresh_failed"));
        assert!(matches!(found.specs[2].credential, Credential::ApiKey(_)));
    }

    #[test]
    fn broken_store_is_reported_and_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        std::fs::write(paths.tokens(), "{ not json").unwrap();
        let found = discover(&ProxyConfig::default(), &paths, Some("sk-env".into()), 0);
        assert_eq!(found.specs.len(), 1);
        assert!(
            found.warnings[0].contains("tokens.json:1:"),
            "{:?}",
            found.warnings
        );
        assert_eq!(
            std::fs::read_to_string(paths.tokens()).unwrap(),
            "{ not json"
        );
    }

    #[test]
    fn legacy_file_is_read_when_store_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        std::fs::write(
            paths.legacy_credentials(),
            r#"{"type":"oauth","oauth":{"accessToken":"oat","expiresAt":99999999999999},"provider":"anthropic"}"#,
        )
        .unwrap();
        let found = discover(&ProxyConfig::default(), &paths, None, 0);
        assert_eq!(&*found.specs[0].label, "default");
        assert_eq!(found.specs[0].source, Source::LegacyCredentials);
    }

    #[test]
    fn entries_without_a_key_add_settings_to_stored_logins() {
        let dir = tempfile::tempdir().unwrap();
        let paths = Paths::at(dir.path());
        std::fs::write(
            paths.tokens(),
            r#"{"version":"2.0","lastModified":1,"providers":{"anthropic:alice":{"tokens":{"accessToken":"a","refreshToken":"r","expiresAt":99999999999999,"tokenType":"Bearer"}}}}"#,
        )
        .unwrap();
        let c = cfg("accounts: {anthropic: [{name: alice, excludedModels: [\"claude-opus-*\"], weight: 3}, {name: ghost}]}");
        let found = discover(&c, &paths, None, 0);
        assert_eq!(found.specs.len(), 1);
        assert_eq!(found.specs[0].excluded_models, ["claude-opus-*"]);
        assert_eq!(found.specs[0].weight, 3);
        assert!(
            found.warnings.iter().any(|w| w.contains("ghost")),
            "{:?}",
            found.warnings
        );
    }

    #[test]
    fn duplicate_labels_get_a_suffix() {
        let dir = tempfile::tempdir().unwrap();
        let c = cfg("accounts: {anthropic: [{name: a, apiKey: k1}, {name: a, apiKey: k2}]}");
        let found = discover(&c, &Paths::at(dir.path()), None, 0);
        assert_eq!(&*found.specs[1].label, "a-2");
    }
}
