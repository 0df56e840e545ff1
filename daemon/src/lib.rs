//! The `neurolink` binary's library: CLI and daemon.
//!
//! # Layout
//! - [`cli`]: argument parsing and the commands (`proxy start`, `config check`).
//! - [`daemon`]: composes config, accounts, pool and server, and runs until a signal.
//! - [`server`]: HTTP routes, shared state, the proxy's own error answers, `/status`.
//! - [`passthrough`]: forwarding to Anthropic: headers, attempts across accounts, the relay.
//! - [`pool`]: account selection and cooldowns; pure, tested with a hand-moved clock.
//! - [`outcome`]: the one place that turns an upstream answer into an [`outcome::Outcome`].
//! - [`auth`]: OAuth tokens that change while running, and their refresh.
//! - [`claude_settings`], [`guard`]: pointing Claude Code at the proxy, and undoing it even after a crash.
//! - [`accounts`]: finding accounts in `tokens.json`, legacy credentials, env and config.
//! - [`service`]: systemd unit / launchd agent rendering and install.
//! - [`store_watch`]: picks up accounts added, removed, enabled or re-logged-in by other processes.
//! - [`ipc`]: the control socket (JSON-RPC lines) and its methods.
//! - [`lifecycle`]: `proxy-state.json`, one daemon per home, stale take-over.
//! - [`logs`]: the JSONL request log (and `--debug` exchange log), redaction, rotation.
//! - [`config_watch`]: reloads the config file when it is saved.
//! - [`reload`]: applying a changed config without a restart.
//! - [`clock`]: time, injected.
//! - [`providers`]: OpenAI, Gemini and OpenAI-compatible providers; model routing; the fallback chain.
//! - [`upstream`]: the seam every provider implements: prepare, observe, classify, adapt.
//! - [`translate`]: Claude requests and answers to and from other providers' formats (pure).
//! - [`demo`]: `neurolink demo`: simulated accounts and upstream, a real daemon, the dashboard.

pub mod accounts;
pub mod auth;
pub mod claude_settings;
pub mod cli;
pub mod clock;
pub mod config_watch;
pub mod daemon;
pub mod demo;
pub mod guard;
pub mod ipc;
pub mod lifecycle;
pub mod logs;
pub mod outcome;
pub mod passthrough;
pub mod pool;
pub mod providers;
pub mod reload;
pub mod server;
pub mod service;
pub mod store_watch;
pub mod translate;
pub mod upstream;
