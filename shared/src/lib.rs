//! What the daemon, the CLI and the dashboard agree on.
//!
//! # Layout
//! - [`ca_bundle`]: the extra certificate authorities of `server.caFile`.
//! - [`atomic_file`]: 0600 temp-fsync-rename writes and the cross-process lock.
//! - [`quotas`]: `account-quotas.json`, the unified 5h/7d utilisation per account.
//! - [`ipc`]: the control socket protocol (JSON-RPC 2.0 lines) and its client.
//! - [`paths`]: where every file lives (`$NEUROLINK_HOME`, Claude Code's settings), in one place.
//! - [`secret`]: [`Secret`], a string that never prints itself.
//! - [`config`]: the `proxy-config.yaml` / `.json` model, `${VAR}` interpolation and the loader whose
//!   errors name file, line, column and key.
//! - [`time`]: RFC 3339 and relative times ("in 3m 20s") for files, the wire and screens.
//! - [`token_store`]: NeuroLink's `tokens.json` format (obfuscated or plain) and the legacy
//!   `anthropic-credentials.json`.
//!
//! This crate knows nothing about HTTP; its only I/O is files and the control socket.

pub mod atomic_file;
pub mod ca_bundle;
pub mod config;
pub mod ipc;
pub mod paths;
pub mod quotas;
pub mod secret;
pub mod time;
pub mod token_store;

pub use secret::Secret;
