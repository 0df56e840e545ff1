//! Test support for NeuroLink: fake upstreams that tests script, and a harness that runs the real
//! `neurolink` binary against them in a temporary `NEUROLINK_HOME`.
//!
//! # Layout
//! - [`fake_anthropic`]: an Anthropic API on 127.0.0.1, scripted per credential, recording what
//!   it receives.
//! - [`fake_providers`]: OpenAI Chat Completions and Gemini, for the fallback chain.
//! - [`fake_oauth`]: a token endpoint that rotates refresh tokens and counts reuses.
//! - [`fake_proxy`]: an outbound HTTP proxy (absolute form and `CONNECT`), recording requests.
//! - [`harness`]: temp homes, starting and stopping the daemon, small HTTP helpers.
//! - [`pty`]: a program in a pseudo-terminal, its screen read by a terminal emulator.
//! - [`soak`]: the daemon under load with random upstream faults, and what it reports.
//! - [`secrets`]: the secrets the fakes gave out, and the scan of every temp home for them.
//! - [`serve`]: the accept loop the fakes share.
//! - [`sse`]: the exact SSE bytes the fake sends, shared by tests that compare them.
//! - [`tls`]: a certificate authority made at run time, for HTTPS fakes.
//!
//! Nothing here contacts any address but loopback.

pub mod fake_anthropic;
pub mod fake_oauth;
pub mod fake_providers;
pub mod fake_proxy;
pub mod harness;
pub mod pty;
pub mod secrets;
pub mod serve;
pub mod soak;
pub mod sse;
pub mod tls;
