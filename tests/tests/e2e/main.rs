//! End-to-end suites: the real `neurolink` binary against the fake upstream, over real HTTP on
//! 127.0.0.1. One test binary: one link step, and the suite shares the built daemon.

// An unwrap that fails here is the test failing, with its line: allowed in this suite only.
#![allow(clippy::unwrap_used)]

mod auth_cli;
mod clients;
mod config_check;
mod config_reload;
mod dashboard;
mod defects;
mod demo;
mod doctor;
mod failover;
mod fallback;
mod fault_matrix;
mod ipc;
mod lifecycle;
mod login;
mod logs;
mod oauth_refresh;
mod openai_endpoint;
mod passthrough;
mod quotas;
mod reliability;
mod sdk;
mod service;
mod settings;
mod streaming;
mod tls;
mod upstream_proxy;
