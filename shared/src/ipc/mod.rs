//! The daemon's local control socket: JSON-RPC 2.0, one JSON object per line (docs/ipc.md).
//!
//! # Layout
//! - [`protocol`]: the wire types (requests, responses, errors, events, account views).
//! - [`methods`]: every method with its typed params and result; [`Call`] for the daemon.
//! - [`client`]: connect, call, subscribe, one message at a time; used by the CLI
//!   (`neurolink rpc`, `proxy stop|status`).
//! - [`connection`]: calls and events on one connection at once (a reader task routes answers
//!   by id); used by the dashboard.
//!
//! The daemon's server lives in the daemon crate; only the wire format is shared.

pub mod client;
pub mod connection;
pub mod methods;
pub mod protocol;

pub use client::{ClientError, IpcClient};
pub use connection::{Connection, Events};
pub use methods::{Call, Method, METHODS};
pub use protocol::*;
