//! `neurolink-tui`: see `neurolink-tui --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// The NeuroLink dashboard: which account serves, which cools and for how long, whether quotas
/// last, and every request live. Keys: ? in the dashboard.
#[derive(Parser, Debug)]
#[command(name = "neurolink-tui", version)]
struct Cli {
    /// The daemon's control socket [default: $NEUROLINK_HOME/daemon.sock]
    #[arg(long)]
    socket: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let options = neurolink_tui::Options {
        socket: cli.socket.unwrap_or_else(neurolink_tui::default_socket),
        daemon_bin: None,
        neurolink_home: None,
    };
    neurolink_tui::main_with(options)
}
