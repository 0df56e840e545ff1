//! `neurolink-tui`: the dashboard of a running NeuroLink proxy, over its control socket.
//!
//! # Layout
//! - [`model`]: the state and the reducer (`Msg` in, `Command`s out); pure.
//! - [`view`]: rendering, a pure function of the state; one module per screen.
//! - [`input`]: keys to actions, and the key help.
//! - [`forecast`]: will the quota last (the pace forecast and its formula).
//! - [`runtime`]: the terminal, the keyboard, the tick and the link to the daemon.
//!
//! It depends on `neurolink-shared` only: everything it knows comes over the socket.

pub mod forecast;
pub mod input;
pub mod model;
pub mod runtime;
pub mod view;

#[cfg(test)]
mod fixtures;

pub use runtime::{run, Options};

/// Run the dashboard as a command: the exit code, with any error on stderr.
pub fn main_with(options: Options) -> std::process::ExitCode {
    match run(options) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// The socket of this `NEUROLINK_HOME`.
pub fn default_socket() -> std::path::PathBuf {
    neurolink_shared::paths::Paths::from_env().socket()
}
