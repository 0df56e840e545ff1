//! `neurolink`: see `neurolink --help`.

fn main() -> std::process::ExitCode {
    neurolink_daemon::cli::main()
}
