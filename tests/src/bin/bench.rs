//! Benchmark: the fake upstream directly vs through the real `neurolink` binary, in one run.
//!
//! `cargo run --release -p neurolink-tests --bin bench [-- --quick] [--out FILE] [--soak SECS]`
//!
//! Builds the release proxy, starts the fake upstream and the proxy as child processes (one
//! API-key account), then measures both paths with a lean hyper client (one
//! connection per worker, keep-alive): latency at concurrency 1, throughput at concurrency 32, a
//! 128 KB request body, SSE time to first and last byte of a 1,000-event stream, and the proxy's
//! RSS idle and holding 1,000 open streams. Prints a table with ratios to direct and writes JSON.
//! Figures, not pass/fail: these machines are noisy, so compare ratios from the same run.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::harness::{build_release, neurolink_bin, Daemon, TestHome};
use serde_json::json;
use tokio::net::TcpStream;

struct Opts {
    quick: bool,
    out: std::path::PathBuf,
    /// Only load the proxy at c=32 for this many seconds (attach a profiler to the printed pid).
    soak: Option<f64>,
}

fn opts() -> Opts {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let out = args
        .iter()
        .position(|a| a == "--out")
        .and_then(|i| args.get(i + 1))
        .map_or_else(
            || std::path::PathBuf::from("target/bench/results.json"),
            Into::into,
        );
    let soak = args
        .iter()
        .position(|a| a == "--soak")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok());
    Opts { quick, out, soak }
}

fn main() -> anyhow::Result<()> {
    if std::env::args().any(|a| a == "--serve-fake") {
        return serve_fake();
    }
    let o = opts();
    build_proxy()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(o))
}

/// `cargo run` builds only this package; the proxy binary is built here, in the same profile.
fn build_proxy() -> anyhow::Result<()> {
    build_release(&[("neurolink-daemon", "neurolink")])?;
    let bin = neurolink_bin();
    if !bin.is_file() {
        bail!("{} is missing after the build", bin.display());
    }
    Ok(())
}

type Conn = SendRequest<Full<Bytes>>;

async fn connect(authority: &str) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await?;
    tokio::spawn(conn);
    Ok(send)
}

fn request(authority: &str, body: &Bytes, headers: &[(&str, &str)]) -> http::Request<Full<Bytes>> {
    request_to(authority, "/v1/messages", body, headers)
}

fn request_to(
    authority: &str,
    path: &str,
    body: &Bytes,
    headers: &[(&str, &str)],
) -> http::Request<Full<Bytes>> {
    let mut b = http::Request::post(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .header("x-api-key", "bench-client-key");
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Full::new(body.clone())).unwrap_or_default()
}

/// Send one request, read the whole answer. Returns (time to first body byte, total).
async fn once(
    conn: &mut Conn,
    req: http::Request<Full<Bytes>>,
) -> anyhow::Result<(Duration, Duration)> {
    let start = Instant::now();
    conn.ready().await?;
    let resp = conn.send_request(req).await?;
    if !resp.status().is_success() {
        bail!("status {}", resp.status());
    }
    let mut body = resp.into_body();
    let mut first = None;
    while let Some(frame) = body.frame().await {
        let frame = frame?;
        if frame.data_ref().is_some_and(|d| !d.is_empty()) && first.is_none() {
            first = Some(start.elapsed());
        }
    }
    let total = start.elapsed();
    Ok((first.unwrap_or(total), total))
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

struct Lat {
    p50: f64,
    p99: f64,
    ttfb_p50: f64,
}

/// Rounds each measure is split into, alternating direct and proxy, so that a burst of noise from
/// elsewhere on the machine hits both paths alike.
const ROUNDS: usize = 5;

#[derive(Default)]
struct Samples {
    totals: Vec<Duration>,
    firsts: Vec<Duration>,
}

impl Samples {
    fn lat(mut self) -> Lat {
        self.totals.sort();
        self.firsts.sort();
        Lat {
            p50: percentile(&self.totals, 0.5),
            p99: percentile(&self.totals, 0.99),
            ttfb_p50: percentile(&self.firsts, 0.5),
        }
    }
}

/// Sequential requests on one keep-alive connection per path, `n` per path in all.
async fn latency_pair(
    direct: &str,
    proxy: &str,
    body: &Bytes,
    headers: &[(&str, &str)],
    n: usize,
) -> anyhow::Result<(Lat, Lat)> {
    let make = |authority: &str| request(authority, body, headers);
    latency_pair_with(direct, proxy, [&make, &make], n).await
}

/// Builds a request for an authority.
type MakeRequest<'a> = dyn Fn(&str) -> http::Request<Full<Bytes>> + 'a;

/// [`latency_pair`] with each side's own request (`make[0]` direct, `make[1]` via the proxy).
async fn latency_pair_with(
    direct: &str,
    proxy: &str,
    make: [&MakeRequest<'_>; 2],
    n: usize,
) -> anyhow::Result<(Lat, Lat)> {
    let mut conns = [connect(direct).await?, connect(proxy).await?];
    let authorities = [direct, proxy];
    let mut samples = [Samples::default(), Samples::default()];
    for ((conn, authority), make) in conns.iter_mut().zip(authorities).zip(make) {
        for _ in 0..(n / 10).max(1) {
            once(conn, make(authority)).await?;
        }
    }
    for _ in 0..ROUNDS {
        for (((conn, authority), s), make) in conns
            .iter_mut()
            .zip(authorities)
            .zip(samples.iter_mut())
            .zip(make)
        {
            for _ in 0..n / ROUNDS {
                let (f, t) = once(conn, make(authority)).await?;
                s.firsts.push(f);
                s.totals.push(t);
            }
        }
    }
    let [d, p] = samples;
    Ok((d.lat(), p.lat()))
}

async fn throughput_pair(
    direct: &str,
    proxy: &str,
    body: &Bytes,
    workers: usize,
    secs: f64,
) -> anyhow::Result<(f64, f64)> {
    let mut totals = [0.0f64; 2];
    for _ in 0..ROUNDS {
        for (i, authority) in [direct, proxy].into_iter().enumerate() {
            totals[i] += throughput(authority, body, workers, secs / ROUNDS as f64).await?;
        }
    }
    Ok((totals[0] / ROUNDS as f64, totals[1] / ROUNDS as f64))
}

async fn throughput(
    authority: &str,
    body: &Bytes,
    workers: usize,
    secs: f64,
) -> anyhow::Result<f64> {
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let authority = authority.to_string();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&authority).await?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                once(&mut conn, request(&authority, &body, &[])).await?;
                n += 1;
            }
            Ok::<u64, anyhow::Error>(n)
        }));
    }
    let start = Instant::now();
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / start.elapsed().as_secs_f64())
}

fn rss_mb(pid: u32) -> anyhow::Result<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no VmRSS")?;
    Ok(kb / 1024.0)
}

/// Open `n` streams that stay open (the fake holds the last event), wait until each delivered
/// its first bytes, and return the proxy's RSS then. The streams are dropped afterwards.
async fn rss_with_open_streams(authority: &str, pid: u32, n: usize) -> anyhow::Result<f64> {
    let body = Bytes::from(json!({"model":"claude-sonnet-4-5","max_tokens":8,"stream":true,"messages":[{"role":"user","content":"hi"}]}).to_string());
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(n);
    let stop = std::sync::Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for _ in 0..n {
        let authority = authority.to_string();
        let body = body.clone();
        let tx = tx.clone();
        let stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut conn = connect(&authority).await?;
            conn.ready().await?;
            let resp = conn
                .send_request(request(&authority, &body, &[("x-fake-hold-ms", "120000")]))
                .await?;
            let mut b = resp.into_body();
            let _ = b.frame().await;
            let _ = tx.send(()).await;
            stop.notified().await;
            Ok::<(), anyhow::Error>(())
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    for i in 0..n {
        match tokio::time::timeout_at(deadline.into(), rx.recv()).await {
            Ok(Some(())) => {}
            _ => bail!("only {i} of {n} streams opened within 60 s"),
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = rss_mb(pid)?;
    stop.notify_waiters();
    for t in tasks {
        t.abort();
    }
    Ok(rss)
}

/// Child mode: run the fake upstream alone in this process until stdin closes, so that the
/// direct path (bench client process to fake process) crosses processes like the proxied one.
fn serve_fake() -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let fake = FakeAnthropic::start_with(false).await?;
        let providers = neurolink_tests::fake_providers::FakeProviders::start().await?;
        println!("fake listening on {}", fake.addr);
        println!("providers listening on {}", providers.addr);
        let _ = tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink())
        })
        .await;
        Ok(())
    })
}

/// The fake upstream in a child process; killed on drop.
struct FakeProcess {
    child: std::process::Child,
    addr: String,
    /// The fake OpenAI and Gemini.
    providers: String,
}

impl FakeProcess {
    fn start() -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe()?)
            .arg("--serve-fake")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("fake stdout")?;
        let mut reader = std::io::BufReader::new(stdout);
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("fake listening on ")
            .context("fake did not start")?
            .to_string();
        line.clear();
        reader.read_line(&mut line)?;
        let providers = line
            .trim()
            .strip_prefix("providers listening on ")
            .context("fake providers did not start")?
            .to_string();
        Ok(Self {
            child,
            addr,
            providers,
        })
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn run(o: Opts) -> anyhow::Result<()> {
    let fake = FakeProcess::start()?;
    let home = TestHome::new()?;
    // `bench-translated` is served by the fake OpenAI, translated both ways.
    home.write_config(&format!(
        "routing:\n  model-mappings:\n    - {{from: bench-translated, to: gpt-4o, provider: openai}}\nproviders:\n  anthropic:\n    baseUrl: http://{}\n  openai:\n    baseUrl: http://{}/v1\n    apiKey: bench-openai-key\naccounts:\n  anthropic:\n    - {{name: bench, apiKey: bench-upstream-key}}\n",
        fake.addr, fake.providers
    ))?;
    let mut daemon = Daemon::start(&home, &["-q"], &[])?;
    let pid = daemon.child.id();
    let direct = fake.addr.clone();
    let proxy = daemon.url.trim_start_matches("http://").to_string();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = rss_mb(pid)?;
    if let Some(secs) = o.soak {
        eprintln!("proxy pid {pid}: loading it at c=32 for {secs} s");
        let small = Bytes::from(json!({"model":"claude-sonnet-4-5","max_tokens":64,"stream":false,"messages":[{"role":"user","content":"say hi"}]}).to_string());
        let rps = throughput(&proxy, &small, 32, secs).await?;
        println!("{rps:.0} req/s through the proxy");
        return Ok(());
    }

    let (n_lat, n_body, n_sse, secs) = if o.quick {
        (500, 200, 30, 1.0)
    } else {
        (5000, 1000, 200, 5.0)
    };
    let small = Bytes::from(json!({"model":"claude-sonnet-4-5","max_tokens":64,"stream":false,"messages":[{"role":"user","content":"say hi"}]}).to_string());
    let filler = "x".repeat(128 * 1024);
    let big = Bytes::from(json!({"model":"claude-sonnet-4-5","max_tokens":64,"stream":false,"messages":[{"role":"user","content":filler}]}).to_string());
    let sse_body = Bytes::from(json!({"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hi"}]}).to_string());
    let events = std::env::var("BENCH_SSE_EVENTS").unwrap_or_else(|_| "1000".into());
    let sse_headers = [("x-fake-events", events.as_str())];

    eprintln!("latency, concurrency 1 ({n_lat} requests each)...");
    let (lat_d, lat_p) = latency_pair(&direct, &proxy, &small, &[], n_lat).await?;
    eprintln!("throughput, concurrency 32 ({secs} s each)...");
    let (rps_d, rps_p) = throughput_pair(&direct, &proxy, &small, 32, secs).await?;
    eprintln!("128 KB request body ({n_body} requests each)...");
    let (body_d, body_p) = latency_pair(&direct, &proxy, &big, &[], n_body).await?;
    eprintln!("SSE, 1,000 events ({n_sse} streams each)...");
    let (sse_d, sse_p) = latency_pair(&direct, &proxy, &sse_body, &sse_headers, n_sse).await?;
    eprintln!("translated SSE through the OpenAI fake ({n_sse} streams each)...");
    let translated_body = Bytes::from(json!({"model":"bench-translated","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hi"}]}).to_string());
    let openai_body = Bytes::from(json!({"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"say hi"}]}).to_string());
    let to_openai = |a: &str| request_to(a, "/v1/chat/completions", &openai_body, &[]);
    let to_proxy = |a: &str| request(a, &translated_body, &[]);
    let (tr_d, tr_p) =
        latency_pair_with(&fake.providers, &proxy, [&to_openai, &to_proxy], n_sse).await?;
    let rss_after = rss_mb(pid)?;
    eprintln!("1,000 open streams...");
    let rss_streams = rss_with_open_streams(&proxy, pid, 1000).await?;
    let _ = daemon.terminate(Duration::from_secs(15));

    let rows = vec![
        ("latency p50, c=1 (ms)", lat_d.p50, lat_p.p50),
        ("latency p99, c=1 (ms)", lat_d.p99, lat_p.p99),
        ("throughput, c=32 (req/s)", rps_d, rps_p),
        ("128 KB body p50 (ms)", body_d.p50, body_p.p50),
        ("SSE first byte p50 (ms)", sse_d.ttfb_p50, sse_p.ttfb_p50),
        ("SSE last byte p50, 1,000 events (ms)", sse_d.p50, sse_p.p50),
        (
            "translated SSE first byte p50, vs OpenAI direct (ms)",
            tr_d.ttfb_p50,
            tr_p.ttfb_p50,
        ),
        (
            "translated SSE last byte p50, vs OpenAI direct (ms)",
            tr_d.p50,
            tr_p.p50,
        ),
    ];
    println!();
    println!("| measure | direct | via proxy | added | ratio |");
    println!("| --- | ---: | ---: | ---: | ---: |");
    for (name, d, p) in &rows {
        println!(
            "| {name} | {d:.3} | {p:.3} | {:+.3} | {:.3}x |",
            p - d,
            p / d
        );
    }
    println!();
    println!("| proxy memory | RSS (MB) |");
    println!("| --- | ---: |");
    println!("| idle after start | {rss_idle:.1} |");
    println!("| idle after the runs above | {rss_after:.1} |");
    println!("| holding 1,000 open streams | {rss_streams:.1} |");

    let results = json!({
        "date": humantime_now(),
        "quick": o.quick,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rows": rows.iter().map(|(name, d, p)| json!({"measure": name, "direct": d, "proxy": p, "added": p - d, "ratio": p / d})).collect::<Vec<_>>(),
        "rss_mb": {"idle": rss_idle, "idle_after_load": rss_after, "open_streams_1000": rss_streams},
    });
    if let Some(dir) = o.out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&o.out, serde_json::to_string_pretty(&results)?)?;
    eprintln!("\nwrote {}", o.out.display());
    Ok(())
}

fn humantime_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format!("unix {secs}")
}
