//! `cargo run --release -p neurolink-tests --bin soak -- [--minutes N | --seconds N]
//! [--concurrency C] [--fault-rate P] [--seed S]`: the release daemon under load with random
//! upstream faults; prints the report (see `neurolink_tests::soak`).

use std::time::Duration;

use neurolink_tests::harness::{build_release, neurolink_bin};
use neurolink_tests::soak::{self, Options};

fn arg<T: std::str::FromStr>(args: &[String], name: &str) -> Option<T> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("soak [--minutes N (10) | --seconds N] [--concurrency C (32)] [--fault-rate P (0.05)] [--seed S]");
        return Ok(());
    }
    let secs = arg::<u64>(&args, "--seconds")
        .or_else(|| arg::<u64>(&args, "--minutes").map(|m| m * 60))
        .unwrap_or(600);
    let o = Options {
        duration: Duration::from_secs(secs),
        concurrency: arg(&args, "--concurrency").unwrap_or(32),
        fault_rate: arg(&args, "--fault-rate").unwrap_or(0.05),
        seed: arg(&args, "--seed").unwrap_or(7),
    };
    build_release(&[("neurolink-daemon", "neurolink")])?;
    anyhow::ensure!(
        neurolink_bin().is_file(),
        "the proxy binary is missing after the build"
    );
    eprintln!(
        "soak: {} s, concurrency {}, {:.0} % upstream faults, seed {}",
        secs,
        o.concurrency,
        o.fault_rate * 100.0,
        o.seed
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let report = rt.block_on(soak::run(&o))?;
    println!("{report}");
    Ok(())
}
