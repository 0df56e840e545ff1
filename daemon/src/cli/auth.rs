//! `neurolink auth …`: the accounts in `tokens.json`, as the seed's commands name them. These work
//! on the files directly (locked like the daemon's own writes); a running daemon picks the changes
//! up within a second.

use std::process::ExitCode;
use std::sync::Arc;

use clap::{Subcommand, ValueEnum};
use neurolink_shared::config::{self, EnvSource};
use neurolink_shared::paths::Paths;
use neurolink_shared::quotas;
use neurolink_shared::token_store::{self, Store, StoredEntry};
use serde_json::json;

use super::OutputFormat;
use crate::accounts;
use crate::auth::endpoint::Endpoint;
use crate::auth::login::{self, LoginFlow, Method, NewAccount, NewCredential, Placement, Urls};
use crate::auth::refresh::{Refreshed, Refresher};
use crate::clock::{Clock, SystemClock};
use crate::pool::{Credential, Source};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Provider {
    Anthropic,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LoginMethod {
    /// Claude Pro/Max subscription (browser login; the token refreshes itself)
    Oauth,
    /// Paste a Console API key
    ApiKey,
    /// Console browser login that mints a new API key
    CreateApiKey,
}

#[derive(Subcommand, Debug)]
pub enum AuthCommand {
    /// Log in and store the account in tokens.json (a running proxy picks it up at once).
    #[command(
        after_help = "Examples:\n  neurolink auth login anthropic                       asks which method\n  \
neurolink auth login anthropic --method oauth --add --label work\n  \
ANTHROPIC_API_KEY=sk-ant-... neurolink auth login anthropic --method api-key --non-interactive\n\n\
Browser logins print a URL; after you approve, the page shows a code (code#state) to paste here.\n\
Without --add the new login replaces the first stored account (and says which); logging in again\n\
with the same label replaces its tokens and clears its disabled state. API keys are checked with\n\
Anthropic before they are stored (--no-verify skips that); without --label a key is named\n\
key-<its last 4 characters>."
    )]
    Login {
        provider: Provider,
        #[arg(short, long, value_enum)]
        method: Option<LoginMethod>,
        /// Keep the other accounts (add to the pool)
        #[arg(long)]
        add: bool,
        /// Name of the account [default: its email]
        #[arg(long)]
        label: Option<String>,
        /// Never prompt: API keys come from ANTHROPIC_API_KEY, browser codes from standard input
        #[arg(long)]
        non_interactive: bool,
        /// Store an API key without checking it with Anthropic first (e.g. offline)
        #[arg(long)]
        no_verify: bool,
    },
    /// Every account: label, email, kind, state, expiry, 5h/7d quota, refresh ages, last error.
    List,
    /// A short summary: how many accounts, how many usable, which one comes first.
    Status { provider: Option<Provider> },
    /// Refresh OAuth tokens now (all OAuth accounts, or one with --label).
    #[command(
        after_help = "Safe next to a running daemon: both take the token store's lock, and whoever \
comes second uses the tokens the first one got."
    )]
    Refresh {
        provider: Option<Provider>,
        #[arg(long)]
        label: Option<String>,
    },
    /// Use a disabled account again (`alice` or `anthropic:alice`).
    Enable { account: String },
    /// Stop using an account until `auth enable`.
    Disable { account: String },
    /// Remove a stored account (--label), or every stored Anthropic account (--all).
    Logout {
        provider: Option<Provider>,
        #[arg(long, conflicts_with = "all")]
        label: Option<String>,
        #[arg(long)]
        all: bool,
    },
    /// Remove expired accounts that cannot refresh, and disabled ones (asks unless --force).
    Cleanup {
        #[arg(long)]
        force: bool,
    },
}

pub fn run(cmd: AuthCommand) -> ExitCode {
    let format = super::output::format();
    let paths = Paths::from_env();
    let store = Store::for_paths(&paths);
    let result = match cmd {
        AuthCommand::Login {
            method,
            add,
            label,
            non_interactive,
            no_verify,
            ..
        } => login(
            &paths,
            &store,
            method,
            Placement { label, add },
            Prompting {
                non_interactive,
                no_verify,
            },
            format,
        ),
        AuthCommand::List => list(&paths, format),
        AuthCommand::Status { .. } => status(&paths, format),
        AuthCommand::Refresh { label, .. } => refresh(&paths, label.as_deref(), format),
        AuthCommand::Enable { account } => set_disabled(&store, &account, None),
        AuthCommand::Disable { account } => set_disabled(
            &store,
            &account,
            Some("disabled by `neurolink auth disable`"),
        ),
        AuthCommand::Logout { label, all, .. } => logout(&store, label.as_deref(), all),
        AuthCommand::Cleanup { force } => cleanup(&store, force),
    };
    result.unwrap_or_else(super::output::fail)
}

fn label_of(account: &str) -> &str {
    account.strip_prefix("anthropic:").unwrap_or(account)
}

fn now_ms() -> i64 {
    i64::try_from(SystemClock.now_ms()).unwrap_or(i64::MAX)
}

/// "in 7h 59m", "3m ago", "never".
pub fn relative(ms: i64, now: i64) -> String {
    if ms >= token_store::NEVER_EXPIRES_MS {
        return "never".into();
    }
    let d = (ms - now).unsigned_abs() / 1000;
    let text = if d >= 86_400 {
        format!("{}d {}h", d / 86_400, d % 86_400 / 3600)
    } else if d >= 3600 {
        format!("{}h {}m", d / 3600, d % 3600 / 60)
    } else if d >= 60 {
        format!("{}m", d / 60)
    } else {
        format!("{d}s")
    };
    if ms >= now {
        format!("in {text}")
    } else {
        format!("{text} ago")
    }
}

fn load_config(paths: &Paths) -> anyhow::Result<config::ProxyConfig> {
    Ok(config::load(None, paths, &EnvSource::Process)?.config)
}

/// The client for the CLI's own calls (login, refresh): the daemon's, trusting `server.caFile`
/// too, so a login works on the network the proxy works on.
fn own_client(cfg: &config::ProxyConfig) -> anyhow::Result<reqwest::Client> {
    let roots =
        crate::upstream::trust::ExtraRoots::from_config(&cfg.server).map_err(anyhow::Error::msg)?;
    crate::server::runtime::client(std::time::Duration::from_secs(10), &roots)
        .map_err(anyhow::Error::msg)
}

/// One row of `auth list`.
fn rows(paths: &Paths) -> anyhow::Result<Vec<serde_json::Value>> {
    let cfg = load_config(paths)?;
    let now = now_ms();
    let found = accounts::discover(
        &cfg,
        paths,
        std::env::var("ANTHROPIC_API_KEY").ok(),
        u64::try_from(now).unwrap_or(0),
    );
    for w in &found.warnings {
        eprintln!("warning: {w}");
    }
    let store = Store::for_paths(paths).read().ok().flatten();
    let quotas = quotas::read(&paths.quotas()).unwrap_or_else(|e| {
        eprintln!("warning: {e}");
        Default::default()
    });
    Ok(found
        .specs
        .iter()
        .map(|spec| {
            let entry: Option<StoredEntry> = (spec.source == Source::TokenStore)
                .then(|| store.as_ref().and_then(|f| f.entry(&spec.label)))
                .flatten();
            let email = entry
                .as_ref()
                .and_then(|e| e.tokens.email().map(str::to_string))
                .or_else(|| spec.label.contains('@').then(|| spec.label.to_string()));
            let (expires_at, has_refresh) = match &spec.credential {
                Credential::OAuth(cell) => (Some(cell.expires_at_ms()), cell.has_refresh_token()),
                Credential::ApiKey(_) => (None, false),
            };
            let state = match (&spec.disabled, expires_at) {
                (Some(_), _) => "disabled",
                (None, Some(at)) if at <= now && !has_refresh => "expired",
                (None, Some(at)) if at <= now => "expired (refreshes on use)",
                _ => "active",
            };
            let last_refresh = entry.as_ref().and_then(|e| e.extra.get("lastRefreshedAt")).and_then(|v| v.as_i64());
            let rt_since = last_refresh.or(entry.as_ref().map(|e| e.created_at)).filter(|t| *t > 0);
            let q = quotas.get(&*spec.label);
            json!({
                "label": spec.label,
                "email": email,
                "kind": spec.credential.kind(),
                "source": spec.source,
                "state": state,
                "disabledReason": spec.disabled,
                "expiresAt": expires_at,
                "expiresIn": expires_at.map(|at| relative(at, now)),
                "quota5h": q.map(|q| q.session_used),
                "quota7d": q.map(|q| q.weekly_used),
                "lastRefresh": last_refresh.map(|t| relative(t, now)),
                "refreshTokenAge": if has_refresh { rt_since.map(|t| relative(t, now)) } else { None },
                "lastError": spec.disabled,
            })
        })
        .collect())
}

fn pct(v: &serde_json::Value) -> String {
    v.as_f64()
        .map_or_else(|| "-".into(), |f| format!("{:.0}%", f * 100.0))
}

fn list(paths: &Paths, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let rows = rows(paths)?;
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "accounts": rows }))?
        );
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        println!("No accounts. Add one with `neurolink auth login anthropic`, ANTHROPIC_API_KEY, or accounts.anthropic[] in the config.");
        return Ok(ExitCode::SUCCESS);
    }
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("-").to_string();
    let table: Vec<[String; 10]> = rows
        .iter()
        .map(|r| {
            [
                s(&r["label"]),
                s(&r["email"]),
                s(&r["kind"]),
                s(&r["state"]),
                s(&r["expiresIn"]),
                pct(&r["quota5h"]),
                pct(&r["quota7d"]),
                s(&r["lastRefresh"]),
                s(&r["refreshTokenAge"]),
                s(&r["lastError"]),
            ]
        })
        .collect();
    let head = [
        "LABEL",
        "EMAIL",
        "KIND",
        "STATE",
        "EXPIRES",
        "5H",
        "7D",
        "LAST REFRESH",
        "RT AGE",
        "LAST ERROR",
    ];
    let mut widths = head.map(str::len);
    for row in &table {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    println!("{}", line(head.to_vec()));
    for row in &table {
        println!("{}", line(row.iter().map(String::as_str).collect()));
    }
    Ok(ExitCode::SUCCESS)
}

fn status(paths: &Paths, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let rows = rows(paths)?;
    let usable = rows
        .iter()
        .filter(|r| r["state"] != "disabled" && r["state"] != "expired")
        .count();
    let first = rows
        .iter()
        .find(|r| r["state"] != "disabled" && r["state"] != "expired");
    if format == OutputFormat::Json {
        let out = json!({"provider": "anthropic", "accounts": rows.len(), "usable": usable, "first": first});
        println!("{}", serde_json::to_string_pretty(&out)?);
    } else {
        println!("anthropic: {} account(s), {usable} usable", rows.len());
        if let Some(f) = first {
            println!(
                "first in line: {} ({}, expires {})",
                f["label"].as_str().unwrap_or("-"),
                f["kind"].as_str().unwrap_or("-"),
                f["expiresIn"].as_str().unwrap_or("never")
            );
        } else {
            println!("nothing usable: log in with `neurolink auth login anthropic`");
        }
    }
    Ok(if usable > 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn refresh(paths: &Paths, label: Option<&str>, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let cfg = load_config(paths)?;
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let found = accounts::discover(&cfg, paths, None, clock.now_ms());
    let targets: Vec<_> = found
        .specs
        .iter()
        .filter(|s| label.is_none_or(|l| label_of(l) == &*s.label))
        .filter_map(|s| match &s.credential {
            Credential::OAuth(cell) => Some((s.label.clone(), cell.clone())),
            Credential::ApiKey(_) => None,
        })
        .collect();
    if targets.is_empty() {
        anyhow::bail!(
            "{}",
            match label {
                Some(l) => format!(
                    "no OAuth account labelled `{}` (see `neurolink auth list`)",
                    label_of(l)
                ),
                None => "no OAuth account to refresh (API keys do not expire)".into(),
            }
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let client = own_client(&cfg)?;
    let refresher = Refresher::new(
        client,
        Endpoint::from_config(&cfg.providers.anthropic_oauth),
        Store::for_paths(paths),
        paths.legacy_credentials(),
        clock.clone(),
    );
    let mut results = Vec::new();
    let mut failed = false;
    for (label, cell) in targets {
        let r = runtime.block_on(refresher.refresh(&cell, true));
        let now = now_ms();
        let (ok, message) = match r {
            Ok(Refreshed::Exchanged) => (
                true,
                format!("refreshed; expires {}", relative(cell.expires_at_ms(), now)),
            ),
            Ok(Refreshed::Adopted | Refreshed::AlreadyFresh) => (
                true,
                format!(
                    "already refreshed by another process; expires {}",
                    relative(cell.expires_at_ms(), now)
                ),
            ),
            Err(e) => {
                failed = true;
                (false, format!("{e}; if this persists, log in again with `neurolink auth login anthropic --add --label {label}`"))
            }
        };
        if format == OutputFormat::Text {
            println!("{label}: {message}");
        }
        results.push(json!({"label": label, "ok": ok, "message": message}));
    }
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(&json!({ "results": results }))?
        );
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn set_disabled(store: &Store, account: &str, reason: Option<&str>) -> anyhow::Result<ExitCode> {
    let label = label_of(account).to_string();
    store
        .update(|f| match f.entry(&label) {
            Some(mut e) => {
                match reason {
                    Some(r) => e.disable(r),
                    None => e.enable(),
                }
                f.set_entry(&label, &e).map_err(|e| e.to_string())
            }
            None => Err(format!(
                "no stored account `anthropic:{label}` in {} (see `neurolink auth list`)",
                store.path().display()
            )),
        })?
        .map_err(anyhow::Error::msg)?;
    let state = if reason.is_some() {
        "disabled"
    } else {
        "enabled"
    };
    Ok(super::output::done(
        format!("{label}: {state}"),
        json!({"label": label, "state": state}),
    ))
}

fn logout(store: &Store, label: Option<&str>, all: bool) -> anyhow::Result<ExitCode> {
    let removed = store
        .update(|f| {
            let keys: Vec<String> = f
                .providers
                .keys()
                .filter(|k| k.starts_with("anthropic:"))
                .cloned()
                .collect();
            let chosen: Vec<String> = match (label, all) {
                (Some(l), _) => keys
                    .into_iter()
                    .filter(|k| k == &format!("anthropic:{}", label_of(l)))
                    .collect(),
                (None, true) => keys,
                (None, false) if keys.len() == 1 => keys,
                (None, false) if keys.is_empty() => Vec::new(),
                (None, false) => {
                    return Err(format!(
                        "{} stored accounts; name one with --label, or use --all",
                        keys.len()
                    ))
                }
            };
            if chosen.is_empty() {
                return Err(match label {
                    Some(l) => format!("no stored account `anthropic:{}`", label_of(l)),
                    None => "no stored Anthropic account".into(),
                });
            }
            for k in &chosen {
                f.providers.remove(k);
            }
            Ok(chosen)
        })?
        .map_err(anyhow::Error::msg)?;
    let labels: Vec<&str> = removed.iter().map(|k| label_of(k)).collect();
    let text: String = labels
        .iter()
        .map(|l| format!("logged out: {l}\n"))
        .collect();
    Ok(super::output::done(text, json!({ "loggedOut": labels })))
}

fn cleanup(store: &Store, force: bool) -> anyhow::Result<ExitCode> {
    let now = now_ms();
    let doomed = |e: &StoredEntry| {
        e.disabled == Some(true) || (e.tokens.expires_at <= now && e.tokens.refresh_token.is_none())
    };
    let candidates: Vec<String> = store
        .read()?
        .map(|f| {
            f.providers
                .keys()
                .filter_map(|k| k.strip_prefix("anthropic:"))
                .filter(|l| f.entry(l).is_some_and(|e| doomed(&e)))
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    use super::output::done;
    if candidates.is_empty() {
        return Ok(done(
            "nothing to clean up",
            json!({"candidates": [], "removed": []}),
        ));
    }
    let listing: String = candidates.iter().map(|l| format!("  {l}\n")).collect();
    if !force {
        use std::io::IsTerminal;
        if !std::io::stdin().is_terminal() || super::output::json_wanted() {
            return Ok(done(
                format!("to remove (disabled, or expired without a refresh token):\n{listing}run again with --force to remove them"),
                json!({"candidates": candidates, "removed": [], "hint": "run again with --force to remove them"}),
            ));
        }
        println!("to remove (disabled, or expired without a refresh token):\n{listing}");
        print!("remove them? [y/N] ");
        use std::io::Write;
        std::io::stdout().flush()?;
        let mut answer = String::new();
        std::io::stdin().read_line(&mut answer)?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            println!("nothing removed");
            return Ok(ExitCode::SUCCESS);
        }
    }
    let removed = store
        .update(|f| {
            let mut removed = Vec::new();
            for l in &candidates {
                // Re-checked under the lock: an account re-enabled meanwhile stays.
                if f.entry(l).is_some_and(|e| doomed(&e)) {
                    f.providers.remove(&format!("anthropic:{l}"));
                    removed.push(l.clone());
                }
            }
            Ok::<_, String>(removed)
        })?
        .map_err(anyhow::Error::msg)?;
    // Asked interactively, the list was shown already.
    let shown = if force {
        format!("to remove (disabled, or expired without a refresh token):\n{listing}")
    } else {
        String::new()
    };
    Ok(done(
        format!("{shown}removed {} account(s)", removed.len()),
        json!({"candidates": candidates, "removed": removed}),
    ))
}

fn ask_method() -> anyhow::Result<LoginMethod> {
    use std::io::Write;
    eprintln!("How do you want to log in?");
    eprintln!("  1) Claude Pro/Max subscription (browser)");
    eprintln!("  2) Paste an API key");
    eprintln!("  3) Create an API key from your Console account (browser)");
    eprint!("choice [1]: ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().read_line(&mut line)?;
    Ok(match line.trim() {
        "" | "1" => LoginMethod::Oauth,
        "2" => LoginMethod::ApiKey,
        "3" => LoginMethod::CreateApiKey,
        other => anyhow::bail!("`{other}` is not 1, 2 or 3"),
    })
}

/// Open the URL in a browser when there is a display to show it on.
fn open_browser(url: &str) {
    let program = if cfg!(target_os = "macos") {
        Some("open")
    } else if std::env::var_os("DISPLAY").is_some() || std::env::var_os("WAYLAND_DISPLAY").is_some()
    {
        Some("xdg-open")
    } else {
        None
    };
    if let Some(p) = program {
        let _ = std::process::Command::new(p)
            .arg(url)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
    }
}

/// How a login may ask for what it needs.
struct Prompting {
    non_interactive: bool,
    no_verify: bool,
}

fn login(
    paths: &Paths,
    store: &Store,
    method: Option<LoginMethod>,
    placement: Placement,
    prompting: Prompting,
    format: OutputFormat,
) -> anyhow::Result<ExitCode> {
    let non_interactive = prompting.non_interactive;
    let method = match method {
        Some(m) => m,
        None if non_interactive => anyhow::bail!(
            "--method is required with --non-interactive (oauth, api-key or create-api-key)"
        ),
        None => ask_method()?,
    };
    let cfg = load_config(paths)?;
    let client = own_client(&cfg)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let account: NewAccount = match method {
        LoginMethod::ApiKey => {
            let key = if non_interactive {
                std::env::var("ANTHROPIC_API_KEY").map_err(|_| {
                    anyhow::anyhow!(
                        "--non-interactive reads the key from ANTHROPIC_API_KEY, which is not set"
                    )
                })?
            } else {
                use std::io::IsTerminal;
                anyhow::ensure!(
                    std::io::stdin().is_terminal(),
                    "no terminal to type the key in: pass it in ANTHROPIC_API_KEY with --non-interactive"
                );
                rpassword::prompt_password("Anthropic API key (input hidden): ")?
            };
            let key = neurolink_shared::Secret::new(key.trim());
            login::check_key_shape(key.expose())?;
            if prompting.no_verify {
                eprintln!("Not checked with Anthropic (--no-verify).");
            } else {
                runtime.block_on(login::check_api_key(
                    &client,
                    &cfg.providers.anthropic.base_url.value,
                    &key,
                ))?;
            }
            NewAccount {
                email: None,
                credential: NewCredential::ApiKey(key),
            }
        }
        LoginMethod::Oauth | LoginMethod::CreateApiKey => {
            let m = if matches!(method, LoginMethod::Oauth) {
                Method::OAuth
            } else {
                Method::CreateApiKey
            };
            let flow = LoginFlow::start(m, Urls::from_config(&cfg.providers.anthropic_oauth))?;
            eprintln!(
                "Open this page, log in and approve:\n\n  {}\n",
                flow.authorize_url
            );
            if !non_interactive {
                open_browser(&flow.authorize_url);
            }
            eprintln!("Then paste the code the page shows (code#state) and press Enter:");
            let mut pasted = String::new();
            std::io::stdin().read_line(&mut pasted)?;
            runtime.block_on(flow.complete(&client, &pasted))?
        }
    };
    let login::Stored { label, replaced } = login::store_account(store, &account, &placement)?;
    if let Some(old) = &replaced {
        eprintln!(
            "Replaced the account `{old}` (without --add a login takes the first account's place; \
             add --add to keep both)."
        );
    }
    let (kind, expires) = match &account.credential {
        NewCredential::OAuth { expires_at_ms, .. } => ("oauth", Some(*expires_at_ms)),
        NewCredential::ApiKey(_) => ("api_key", None),
    };
    if format == OutputFormat::Json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &json!({"label": label, "email": account.email, "kind": kind, "expiresAt": expires, "replaced": replaced})
            )?
        );
    } else {
        let who = account
            .email
            .as_deref()
            .map(|e| format!(" as {e}"))
            .unwrap_or_default();
        let exp = expires
            .map(|e| format!(", expires {}", relative(e, now_ms())))
            .unwrap_or_default();
        println!("Logged in{who}: account `{label}` ({kind}{exp}). A running proxy uses it within a second.");
    }
    Ok(ExitCode::SUCCESS)
}
