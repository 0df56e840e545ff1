//! `cargo run --release -p neurolink-tests --bin tui_bench`
//!
//! What the dashboard costs: the release `neurolink-tui` runs in a pseudo-terminal (120×40) on a
//! release daemon in front of the fake upstream, first idle, then while 100 requests a second
//! flow through the proxy (Requests screen, the busiest). Its CPU time comes from
//! `/proc/<pid>/stat` over each window, its memory from `/proc/<pid>/status`. Prints a table for
//! BENCHMARKS.md. Loopback only.

use std::time::{Duration, Instant};

use anyhow::Context;
use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::harness::{
    build_release, config_with_keys, message_body, neurolink_bin, Daemon, TestHome,
};
use neurolink_tests::pty::Terminal;

const WINDOW: Duration = Duration::from_secs(20);
/// Linux reports process times in USER_HZ ticks, 100 a second on every mainstream build.
const TICKS_PER_SEC: f64 = 100.0;

fn main() -> anyhow::Result<()> {
    build_release(&[
        ("neurolink-daemon", "neurolink"),
        ("neurolink-tui", "neurolink-tui"),
    ])?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(run())
}

/// User + system CPU seconds of `pid` so far.
fn cpu_secs(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start after the last ')'.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("odd /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> anyhow::Result<f64> {
        Ok(fields.get(i).context("short /proc stat")?.parse::<f64>()?)
    };
    // utime and stime are fields 14 and 15 of the whole line: 11 and 12 after the name.
    Ok((ticks(11)? + ticks(12)?) / TICKS_PER_SEC)
}

fn mem_mb(pid: u32, field: &str) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("no {field}"))?;
    Ok(kb / 1024.0)
}

/// The share of one core `pid` used while `during` ran.
async fn cpu_share<F: std::future::Future<Output = ()>>(
    pid: u32,
    during: F,
) -> anyhow::Result<f64> {
    let (c0, t0) = (cpu_secs(pid)?, Instant::now());
    during.await;
    Ok((cpu_secs(pid)? - c0) / t0.elapsed().as_secs_f64() * 100.0)
}

async fn run() -> anyhow::Result<()> {
    let fake = FakeAnthropic::start_with(false).await?;
    let home = TestHome::new()?;
    home.write_config(&config_with_keys(
        &fake.url(),
        "fill-first",
        &[("a", "key-a")],
    ))?;
    let d = Daemon::start(&home, &["--no-settings", "-q"], &[])?;
    let tui_bin = neurolink_bin().with_file_name("neurolink-tui");
    let nl_home = home.neurolink_home();
    let tui = Terminal::spawn(
        &tui_bin,
        &[],
        &[
            ("HOME", home.path().as_os_str()),
            ("NEUROLINK_HOME", nl_home.as_os_str()),
        ],
        40,
        120,
    )?;
    tui.wait_for("● 127.0.0.1", Duration::from_secs(20))?;
    let pid = tui.pid();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let idle = cpu_share(pid, tokio::time::sleep(WINDOW)).await?;
    let idle_rss = mem_mb(pid, "VmRSS:")?;

    tui.send("3")?;
    let client = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("{}/v1/messages", d.url);
    let body = message_body(false);
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = {
        let sent = sent.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let end = tokio::time::Instant::now() + WINDOW;
            while tokio::time::Instant::now() < end {
                tick.tick().await;
                let (client, url, body, sent) =
                    (client.clone(), url.clone(), body.clone(), sent.clone());
                tokio::spawn(async move {
                    if let Ok(r) = client.post(url).json(&body).send().await {
                        if r.status().is_success() {
                            sent.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        }
    };
    let busy = cpu_share(pid, load).await?;
    let rate = sent.load(std::sync::atomic::Ordering::Relaxed) as f64 / WINDOW.as_secs_f64();
    let busy_rss = mem_mb(pid, "VmRSS:")?;
    let peak = mem_mb(pid, "VmHWM:")?;
    println!("| dashboard (`neurolink-tui`, 120×40) | measured | target |");
    println!("| --- | ---: | --- |");
    println!(
        "| CPU idle, {} s (% of a core) | {idle:.2} | < 1 % |",
        WINDOW.as_secs()
    );
    println!("| RSS idle (MB) | {idle_rss:.1} | < 25 MB |");
    println!("| CPU with {rate:.0} requests/s flowing, Requests screen (% of a core) | {busy:.2} | < 5 % |");
    println!("| RSS after the load (MB), peak | {busy_rss:.1}, {peak:.1} | < 25 MB |");
    drop(tui);
    drop(d);
    Ok(())
}
