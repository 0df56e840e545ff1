//! The daemon's local control socket: JSON-RPC 2.0, one JSON object per line (DESIGN.md §6).
//!
//! # Layout
//! - [`protocol`]: the wire types (requests, responses, errors, events) and method names.
//! - [`client`]: connect, call, subscribe; used by the CLI (`neurolink rpc`, `proxy stop|status`)
//!   and the dashboard.
//!
//! The daemon's server lives in the daemon crate; only the wire format is shared.

pub mod client;
pub mod protocol;

pub use client::{ClientError, IpcClient};
pub use protocol::*;
