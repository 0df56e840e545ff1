//! `neurolink`: see `neurolink --help`.

/// mimalloc instead of the system allocator: see BENCHMARKS.md.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    neurolink_daemon::cli::main()
}
