//! Benchmark: the fake upstream directly vs through the real `neurolink` binary, in one run.
//!
//! `cargo run --release -p neurolink-tests --bin bench [-- --quick] [--out FILE] [--soak SECS [--nginx]] [--sse N] [--paced] [--oauth] [--tls] [--train]`
//!
//! Builds the release proxy, starts the fake upstream and the proxy as child processes (one
//! API-key account), and, when `nginx` is on PATH, nginx as a reference reverse proxy in front of
//! the same fake (`tests/bench/nginx.conf`). Then measures every path with a lean hyper client
//! (one connection per worker, keep-alive): latency at concurrency 1, throughput at concurrency 32
//! with the CPU each path's own processes spent per request (their rusage over the run), a 128 KB
//! request body, SSE time to first and last byte of a 1,000-event stream, paced streams (CPU per
//! event while 32 answers are written a few milliseconds apart), and RSS idle and
//! holding 1,000 open streams. Prints a table with ratios to direct and writes JSON. Figures, not
//! pass/fail: these machines are noisy, so compare ratios from the same run.
//!
//! `--soak SECS [--c N]` only loads one path at c=32, or N (to attach a profiler); `--sse N` only measures the
//! SSE stream, N per path; `--paced` only the paced streams (32 at once, events 2 ms apart, as a
//! model writes: the proxy's CPU per event on the path real answers take); `--oauth` makes the proxy's account a subscription login, whose
//! answers carry quota headers (the path most users take); `--tls` makes the fake upstream
//! HTTPS (a certificate from a CA made for the run, HTTP/2 offered by ALPN, as Anthropic does):
//! the proxy then speaks HTTP/2 over TLS upstream, nginx HTTP/1.1 over TLS, and the direct row
//! is the bench client over TLS (HTTP/1.1). `--train` loads every path through the proxy
//! briefly and stops it with SIGTERM: the training run of `tests/bench/pgo.sh`.
//!
//! `NEUROLINK_BIN=PATH` measures that binary instead of building the release one.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::tls::{Alpn, TestCa};

mod floor;
use neurolink_tests::harness::{build_release, neurolink_bin, Daemon, TestHome};
use serde_json::json;
use tokio::net::TcpStream;

struct Opts {
    quick: bool,
    out: std::path::PathBuf,
    /// Only load the proxy at c=32 for this many seconds (attach a profiler to the printed pid).
    soak: Option<f64>,
    /// With `soak`: load the nginx reference instead, so a profiler sees the floor the same way.
    soak_nginx: bool,
    /// With `soak`: load the stack-floor proxy with this upstream client instead.
    soak_floor: Option<String>,
    /// With `soak`: this many connections at once (`--c N`; 32 unless told).
    soak_c: usize,
    /// The proxy's account is a subscription login (OAuth, with quota headers on every
    /// answer) instead of an API key.
    oauth: bool,
    /// Only the SSE rows, this many streams per target (direct, proxy, nginx).
    sse_only: Option<usize>,
    /// The fake upstream speaks HTTPS (HTTP/2 by ALPN).
    tls: bool,
    /// Only the paced-stream rows.
    paced_only: bool,
    /// A short load of every path through the proxy alone, then SIGTERM and a clean exit: the
    /// training run of a profile-guided build (`tests/bench/pgo.sh`), whose instrumented binary
    /// writes its profile when it exits.
    train: bool,
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
    let soak_nginx = args.iter().any(|a| a == "--nginx");
    let soak_c = args
        .iter()
        .position(|a| a == "--c")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok())
        .unwrap_or(32);
    let oauth = args.iter().any(|a| a == "--oauth");
    let tls = args.iter().any(|a| a == "--tls");
    let paced_only = args.iter().any(|a| a == "--paced");
    let train = args.iter().any(|a| a == "--train");
    let soak_floor = args
        .iter()
        .position(|a| a == "--floor")
        .and_then(|i| args.get(i + 1))
        .cloned();
    let sse_only = args
        .iter()
        .position(|a| a == "--sse")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse().ok());
    Opts {
        quick,
        out,
        soak,
        soak_nginx,
        soak_floor,
        soak_c,
        oauth,
        sse_only,
        tls,
        paced_only,
        train,
    }
}

fn main() -> anyhow::Result<()> {
    if let Some(i) = std::env::args().position(|a| a == "--serve-fake") {
        // `--serve-fake [--tls DIR]`: DIR holds the run's CA and certificate.
        let tls = std::env::args()
            .skip(i + 1)
            .skip_while(|a| a != "--tls")
            .nth(1)
            .map(std::path::PathBuf::from);
        return serve_fake(tls);
    }
    if let Some(i) = std::env::args().position(|a| a == "--serve-floor") {
        // `--serve-floor UPSTREAM CLIENT`: the stack-floor proxy; prints its address.
        let args: Vec<String> = std::env::args().skip(i + 1).collect();
        let (Some(upstream), Some(client)) = (args.first(), args.get(1)) else {
            bail!("--serve-floor UPSTREAM legacy|conn");
        };
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        println!("floor listening on {}", listener.local_addr()?);
        return floor::serve(listener, upstream.clone(), client);
    }
    let o = opts();
    match std::env::var_os("NEUROLINK_BIN") {
        // A binary built elsewhere (a saved build, an instrumented one): nothing to build.
        Some(bin) if std::path::Path::new(&bin).is_file() => {}
        Some(bin) => bail!("NEUROLINK_BIN={} is not a file", bin.to_string_lossy()),
        None => build_proxy()?,
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(run(o))
}

/// `--train`: every path the bench measures, and requests shaped like Claude Code's, through the
/// proxy only and briefly (about 10 s), then SIGTERM: an instrumented binary writes its profile
/// as it exits, so the exit must be clean.
async fn train(
    mut daemon: Daemon,
    proxy: &str,
    sse_body: &Bytes,
    sse_headers: &[(&str, &str)],
) -> anyhow::Result<()> {
    let small = small_body();
    let big = big_body();
    let translated = translated_body();
    let pid = daemon.child.id();
    let pids = move || vec![pid];
    eprintln!(
        "training: latency, throughput, bodies, streams, paced and translated streams, Claude Code's requests..."
    );
    latency_set(&[proxy], &small, &[], 2000).await?;
    let (served, _) = throughput(proxy, &small, 32, 3.0).await?;
    latency_set(&[proxy], &big, &[], 200).await?;
    latency_set(&[proxy], sse_body, sse_headers, 50).await?;
    paced_set(&[(proxy, &pids)], sse_body, 32, 2.0).await?;
    latency_set(&[proxy], &translated, &[], 200).await?;
    // What Claude Code sends (docs/clients.md): its path, its headers, a 48 KB streamed body.
    let claude_code_body = claude_code_body();
    let claude_code = |a: &str| {
        request_to(
            a,
            "/v1/messages?beta=true",
            &claude_code_body,
            &CLAUDE_CODE_HEADERS,
        )
    };
    latency_set_with(&[proxy], &[&claude_code], 500).await?;
    let status = daemon.terminate(Duration::from_secs(30))?;
    if !status.success() {
        bail!("the proxy exited with {status} after the training run: no profile was written");
    }
    println!("trained: {served} requests at c=32 among the rest; the proxy exited cleanly");
    Ok(())
}

/// The headers Claude Code sends with every request, as the e2e suite saw them (the session id
/// is one per run; the credential is the bench's).
const CLAUDE_CODE_HEADERS: [(&str, &str); 14] = [
    ("anthropic-version", "2023-06-01"),
    ("anthropic-beta", "claude-code-20250219,interleaved-thinking-2025-05-14,context-management-2025-06-27,per-turn-control-2026-07-01,mid-conversation-tool-changes-2026-07-01,thinking-token-count-2026-05-13,advanced-tool-use-2025-11-20,effort-2025-11-24"),
    ("user-agent", "claude-cli/2.1.332 (external, sdk-cli)"),
    ("x-app", "cli"),
    ("x-claude-code-session-id", "2f0c7a58-8a4e-4c3b-9d51-6f7e2b1c0d93"),
    ("anthropic-dangerous-direct-browser-access", "true"),
    ("x-stainless-lang", "js"),
    ("x-stainless-runtime", "node"),
    ("x-stainless-runtime-version", "v22.12.0"),
    ("x-stainless-package-version", "0.70.0"),
    ("x-stainless-os", "Linux"),
    ("x-stainless-arch", "x64"),
    ("x-stainless-retry-count", "0"),
    ("x-stainless-timeout", "600"),
];

/// A body shaped like Claude Code's first request: system blocks, tools, metadata, thinking
/// and effort settings, streamed; about 48 KB.
fn claude_code_body() -> Bytes {
    let tools: Vec<serde_json::Value> = ["Agent", "Bash", "Edit", "Read", "Write", "Grep"]
        .iter()
        .map(|name| {
            json!({"name": name, "description": "d".repeat(6000), "input_schema": {"type": "object", "properties": {"path": {"type": "string"}}}})
        })
        .collect();
    Bytes::from(
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 128000,
            "stream": true,
            "system": [
                {"type": "text", "text": "x-anthropic-billing-header: cc_version=2.1.332"},
                {"type": "text", "text": "s".repeat(8000), "cache_control": {"type": "ephemeral"}}
            ],
            "messages": [{"role": "user", "content": [{"type": "text", "text": "say hi"}]}],
            "tools": tools,
            "metadata": {"user_id": "{\"device_id\":\"bench\",\"session_id\":\"2f0c7a58\"}"},
            "thinking": {"type": "adaptive", "display": "omitted"},
            "output_config": {"effort": "medium"}
        })
        .to_string(),
    )
}

/// A short non-streamed request: the latency and throughput rows.
fn small_body() -> Bytes {
    Bytes::from(json!({"model":"claude-sonnet-4-5","max_tokens":64,"stream":false,"messages":[{"role":"user","content":"say hi"}]}).to_string())
}

/// A request with a 128 KB message.
fn big_body() -> Bytes {
    Bytes::from(json!({"model":"claude-sonnet-4-5","max_tokens":64,"stream":false,"messages":[{"role":"user","content":"x".repeat(128 * 1024)}]}).to_string())
}

/// A streamed request; the fake sends as many events as `x-fake-events` says.
fn sse_body() -> Bytes {
    Bytes::from(json!({"model":"claude-sonnet-4-5","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hi"}]}).to_string())
}

/// A streamed request for the model the bench's config routes to the OpenAI fake, translated
/// both ways.
fn translated_body() -> Bytes {
    Bytes::from(json!({"model":"bench-translated","max_tokens":64,"stream":true,"messages":[{"role":"user","content":"say hi"}]}).to_string())
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

/// With `--tls`: the fake's address and how to reach it (the direct rows go over TLS too).
static DIRECT_TLS: std::sync::OnceLock<(String, tokio_rustls::TlsConnector)> =
    std::sync::OnceLock::new();

async fn connect(authority: &str) -> anyhow::Result<Conn> {
    let tcp = TcpStream::connect(authority).await?;
    tcp.set_nodelay(true)?;
    if let Some((_, tls)) = DIRECT_TLS.get().filter(|(a, _)| a == authority) {
        let name = tokio_rustls::rustls::pki_types::ServerName::try_from("127.0.0.1")?;
        let stream = tls.connect(name, tcp).await?;
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        return Ok(send);
    }
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
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        let text = String::from_utf8_lossy(&body[..body.len().min(400)]).into_owned();
        bail!("status {status}: {text}");
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

/// Sequential requests on one keep-alive connection per target, `n` per target in all; the same
/// request for each.
async fn latency_set(
    targets: &[&str],
    body: &Bytes,
    headers: &[(&str, &str)],
    n: usize,
) -> anyhow::Result<Vec<Lat>> {
    let make = |authority: &str| request(authority, body, headers);
    let makes: Vec<&MakeRequest<'_>> = targets.iter().map(|_| &make as &MakeRequest<'_>).collect();
    latency_set_with(targets, &makes, n).await
}

/// Builds a request for an authority.
type MakeRequest<'a> = dyn Fn(&str) -> http::Request<Full<Bytes>> + 'a;

/// [`latency_set`] with each target's own request (`make[i]` for `targets[i]`).
async fn latency_set_with(
    targets: &[&str],
    make: &[&MakeRequest<'_>],
    n: usize,
) -> anyhow::Result<Vec<Lat>> {
    let mut conns = Vec::new();
    for t in targets {
        conns.push(connect(t).await?);
    }
    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    for ((conn, authority), make) in conns.iter_mut().zip(targets).zip(make) {
        for _ in 0..(n / 10).max(1) {
            once(conn, make(authority))
                .await
                .with_context(|| format!("a request to {authority}"))?;
        }
    }
    for _ in 0..ROUNDS {
        for (((conn, authority), s), make) in conns
            .iter_mut()
            .zip(targets)
            .zip(samples.iter_mut())
            .zip(make)
        {
            for _ in 0..n / ROUNDS {
                let (f, t) = once(conn, make(authority))
                    .await
                    .with_context(|| format!("a request to {authority}"))?;
                s.firsts.push(f);
                s.totals.push(t);
            }
        }
    }
    Ok(samples.into_iter().map(Samples::lat).collect())
}

/// Throughput at concurrency `workers`, and the CPU each target's own processes spent per
/// request meanwhile (from their rusage in /proc: user + system time over requests served).
struct Thru {
    rps: f64,
    cpu_us_per_request: f64,
}

async fn throughput_set(
    targets: &[(&str, &dyn Fn() -> Vec<u32>)],
    body: &Bytes,
    workers: usize,
    secs: f64,
) -> anyhow::Result<Vec<Thru>> {
    let mut requests = vec![0u64; targets.len()];
    let mut elapsed = vec![0f64; targets.len()];
    let mut ticks = vec![0u64; targets.len()];
    for _ in 0..ROUNDS {
        for (i, (authority, pids)) in targets.iter().enumerate() {
            let before = cpu_ticks(&pids());
            let (n, took) = throughput(authority, body, workers, secs / ROUNDS as f64).await?;
            ticks[i] += cpu_ticks(&pids()).saturating_sub(before);
            requests[i] += n;
            elapsed[i] += took;
        }
    }
    let per_tick_us = 1e6 / clock_ticks_per_second();
    Ok((0..targets.len())
        .map(|i| Thru {
            rps: requests[i] as f64 / elapsed[i].max(1e-9),
            cpu_us_per_request: ticks[i] as f64 * per_tick_us / requests[i].max(1) as f64,
        })
        .collect())
}

/// User + system CPU time of these processes so far, in clock ticks.
fn cpu_ticks(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            // Fields after the parenthesised name: state is the 1st, utime the 12th, stime the 13th.
            let rest = stat.rsplit_once(')')?.1;
            let f: Vec<&str> = rest.split_whitespace().collect();
            Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
        })
        .sum()
}

fn clock_ticks_per_second() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// A process and the children it forked (nginx's workers).
fn with_children(pid: u32) -> Vec<u32> {
    let mut pids = vec![pid];
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(child) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            let parent = std::fs::read_to_string(format!("/proc/{child}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')?
                        .1
                        .split_whitespace()
                        .nth(1)?
                        .parse::<u32>()
                        .ok()
                });
            if parent == Some(pid) {
                pids.push(child);
            }
        }
    }
    pids
}

/// Runs `work` on `n` keep-alive connections to `authority` at once, each until `secs` have
/// passed (`work` gets the connection, the authority and the deadline); their results, and the
/// seconds it took.
async fn on_connections<T, F, Fut>(
    authority: &str,
    n: usize,
    secs: f64,
    work: F,
) -> anyhow::Result<(Vec<T>, f64)>
where
    F: Fn(Conn, String, Instant) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + Send + 'static,
    T: Send + 'static,
{
    let deadline = Instant::now() + Duration::from_secs_f64(secs);
    let start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (authority, work) = (authority.to_string(), work.clone());
            tokio::spawn(async move {
                let conn = connect(&authority).await?;
                work(conn, authority, deadline).await
            })
        })
        .collect();
    let mut results = Vec::with_capacity(n);
    for t in tasks {
        results.push(t.await??);
    }
    Ok((results, start.elapsed().as_secs_f64()))
}

/// Requests served at concurrency `workers` for `secs`, and the seconds it took.
async fn throughput(
    authority: &str,
    body: &Bytes,
    workers: usize,
    secs: f64,
) -> anyhow::Result<(u64, f64)> {
    let body = body.clone();
    let (counts, took) = on_connections(
        authority,
        workers,
        secs,
        move |mut conn, authority, deadline| {
            let body = body.clone();
            async move {
                let mut n = 0u64;
                while Instant::now() < deadline {
                    once(&mut conn, request(&authority, &body, &[])).await?;
                    n += 1;
                }
                Ok(n)
            }
        },
    )
    .await?;
    Ok((counts.iter().sum(), took))
}

/// Events in a paced stream, and how far apart the fake writes them.
const PACED_EVENTS: &str = "100";
const PACE_MS: &str = "2";

/// Paced streams at concurrency `streams`: what a path costs while models write their answers,
/// events a few milliseconds apart (real answers arrive that way; the other SSE rows flood the
/// path with a stream that is ready at once). CPU of the target's processes per event, and the
/// time to a stream's first and last byte.
struct Paced {
    cpu_us_per_event: f64,
    first_p50: f64,
    last_p50: f64,
}

async fn paced_set(
    targets: &[(&str, &dyn Fn() -> Vec<u32>)],
    body: &Bytes,
    streams: usize,
    secs: f64,
) -> anyhow::Result<Vec<Paced>> {
    let mut events = vec![0u64; targets.len()];
    let mut ticks = vec![0u64; targets.len()];
    let mut samples: Vec<Samples> = targets.iter().map(|_| Samples::default()).collect();
    for _ in 0..ROUNDS {
        for (i, (authority, pids)) in targets.iter().enumerate() {
            let before = cpu_ticks(&pids());
            let (n, s) = paced(authority, body, streams, secs / ROUNDS as f64).await?;
            ticks[i] += cpu_ticks(&pids()).saturating_sub(before);
            events[i] += n;
            samples[i].firsts.extend(s.firsts);
            samples[i].totals.extend(s.totals);
        }
    }
    let per_tick_us = 1e6 / clock_ticks_per_second();
    Ok(samples
        .into_iter()
        .enumerate()
        .map(|(i, s)| {
            let lat = s.lat();
            Paced {
                cpu_us_per_event: ticks[i] as f64 * per_tick_us / events[i].max(1) as f64,
                first_p50: lat.ttfb_p50,
                last_p50: lat.p50,
            }
        })
        .collect())
}

/// `streams` clients reading paced streams one after the other for `secs`: the events read
/// (counted by their blank-line ends) and each stream's timings.
async fn paced(
    authority: &str,
    body: &Bytes,
    streams: usize,
    secs: f64,
) -> anyhow::Result<(u64, Samples)> {
    let body = body.clone();
    let (results, _) = on_connections(
        authority,
        streams,
        secs,
        move |mut conn, authority, deadline| {
            let body = body.clone();
            async move {
                let mut events = 0u64;
                let mut samples = Samples::default();
                let headers = [("x-fake-events", PACED_EVENTS), ("x-fake-pace-ms", PACE_MS)];
                while Instant::now() < deadline {
                    let start = Instant::now();
                    conn.ready().await?;
                    let resp = conn
                        .send_request(request(&authority, &body, &headers))
                        .await?;
                    if !resp.status().is_success() {
                        bail!("status {} from {authority}", resp.status());
                    }
                    let mut b = resp.into_body();
                    let (mut first, mut last_byte) = (None, 0u8);
                    while let Some(frame) = b.frame().await {
                        let Ok(data) = frame?.into_data() else {
                            continue;
                        };
                        if data.is_empty() {
                            continue;
                        }
                        first.get_or_insert_with(|| start.elapsed());
                        let ends = data.windows(2).filter(|w| w == b"\n\n").count();
                        let across = last_byte == b'\n' && data[0] == b'\n';
                        events += (ends + usize::from(across)) as u64;
                        last_byte = data[data.len() - 1];
                    }
                    let total = start.elapsed();
                    samples.firsts.push(first.unwrap_or(total));
                    samples.totals.push(total);
                }
                Ok((events, samples))
            }
        },
    )
    .await?;
    let mut events = 0;
    let mut all = Samples::default();
    for (n, s) in results {
        events += n;
        all.firsts.extend(s.firsts);
        all.totals.extend(s.totals);
    }
    Ok((events, all))
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
fn serve_fake(tls: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let fake = match tls {
            Some(dir) => {
                let acceptor = TestCa::load(&dir)?.acceptor(Alpn::Http2)?;
                FakeAnthropic::start_tls_with(false, acceptor).await?
            }
            None => FakeAnthropic::start_with(false).await?,
        };
        // A subscription login's answers carry the unified quota headers, as Anthropic's do:
        // measuring that path (callgrind, `--soak` with an OAuth home) includes reading them.
        fake.set_answer_headers(
            BENCH_OAUTH_TOKEN,
            &[
                ("anthropic-ratelimit-unified-5h-utilization", "0.12"),
                ("anthropic-ratelimit-unified-5h-status", "allowed"),
                ("anthropic-ratelimit-unified-5h-reset", "1785518400"),
                ("anthropic-ratelimit-unified-7d-utilization", "0.34"),
                ("anthropic-ratelimit-unified-7d-status", "allowed"),
                ("anthropic-ratelimit-unified-7d-reset", "1786006800"),
                ("anthropic-ratelimit-unified-fallback-percentage", "0.5"),
                ("anthropic-ratelimit-unified-overage-status", "rejected"),
            ],
        );
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

/// The URL (plain or TLS scheme) of a fake's printed address, which must be on loopback: the
/// bench contacts nothing else.
fn loopback_url(addr: &str, https: bool) -> anyhow::Result<String> {
    let port = addr
        .strip_prefix("127.0.0.1:")
        .with_context(|| format!("the fake listens on {addr}, not on 127.0.0.1"))?;
    let scheme = if https { "https" } else { "http" };
    Ok(format!("{scheme}://127.0.0.1:{port}"))
}

/// The access token of the bench's subscription login (see `serve_fake`).
const BENCH_OAUTH_TOKEN: &str = "bench-oauth-access";

/// The fake upstream in a child process; killed on drop.
struct FakeProcess {
    child: std::process::Child,
    addr: String,
    /// The fake OpenAI and Gemini.
    providers: String,
}

impl FakeProcess {
    /// `tls`: the directory of the run's CA and certificate (HTTPS), or plain HTTP.
    fn start(tls: Option<&std::path::Path>) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut command = Command::new(std::env::current_exe()?);
        command.arg("--serve-fake");
        if let Some(dir) = tls {
            command.arg("--tls").arg(dir);
        }
        let mut child = command
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

/// The stack-floor proxy ([`floor`]) in a child process; killed on drop.
struct Floor {
    child: std::process::Child,
    addr: String,
}

impl Floor {
    fn start(upstream: &str, client: &str) -> anyhow::Result<Self> {
        use std::io::BufRead;
        let mut child = Command::new(std::env::current_exe()?)
            .args(["--serve-floor", upstream, client])
            .stdout(std::process::Stdio::piped())
            .spawn()?;
        let stdout = child.stdout.take().context("floor stdout")?;
        let mut line = String::new();
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let addr = line
            .trim()
            .strip_prefix("floor listening on ")
            .context("the floor proxy did not start")?
            .to_string();
        Ok(Self { child, addr })
    }
}

impl Drop for Floor {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// nginx as the reference reverse proxy (`tests/bench/nginx.conf`), when `nginx` is on PATH.
struct Nginx {
    child: std::process::Child,
    authority: String,
    conf: std::path::PathBuf,
    prefix: tempfile::TempDir,
}

impl Nginx {
    /// Start it in front of `upstream` (over TLS, trusting the PEM file `ca`, when given);
    /// `None` when there is no nginx here.
    fn start(upstream: &str, ca: Option<&std::path::Path>) -> anyhow::Result<Option<Self>> {
        if !Command::new("nginx")
            .arg("-v")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Ok(None);
        }
        let prefix = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let template = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("bench/nginx.conf"),
        )?;
        let conf = prefix.path().join("nginx.conf");
        std::fs::write(
            &conf,
            template
                .replace("{{PREFIX}}", &prefix.path().display().to_string())
                .replace("{{UPSTREAM}}", upstream)
                .replace("{{SCHEME}}", if ca.is_some() { "https" } else { "http" })
                .replace(
                    "{{TLS}}",
                    &ca.map_or_else(String::new, |ca| {
                        format!(
                            "\n            proxy_ssl_trusted_certificate {};\n            proxy_ssl_verify on;\n            proxy_ssl_name localhost;\n            proxy_ssl_session_reuse on;",
                            ca.display()
                        )
                    }),
                )
                .replace("{{PORT}}", &port.to_string()),
        )?;
        let child = Command::new("nginx")
            .arg("-p")
            .arg(prefix.path())
            .arg("-c")
            .arg(&conf)
            .args(["-e", "stderr"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .spawn()?;
        let authority = format!("127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&authority).is_err() {
            if Instant::now() > deadline {
                bail!("nginx did not listen on {authority} within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(Self {
            child,
            authority,
            conf,
            prefix,
        }))
    }

    /// The master and its workers.
    fn pids(&self) -> Vec<u32> {
        with_children(self.child.id())
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // Its complaints, if any (a failed upstream handshake shows only as a 502 otherwise).
        if let Ok(log) = std::fs::read_to_string(self.prefix.path().join("error.log")) {
            for line in log
                .lines()
                .filter(|l| l.contains("[error]") || l.contains("[crit]"))
                .take(5)
            {
                eprintln!("nginx: {line}");
            }
        }
        // Through the master, so the workers go too.
        let _ = Command::new("nginx")
            .arg("-p")
            .arg(self.prefix.path())
            .arg("-c")
            .arg(&self.conf)
            .args(["-e", "stderr", "-s", "stop"])
            .output();
        let _ = self.child.wait();
    }
}

async fn run(o: Opts) -> anyhow::Result<()> {
    let home = TestHome::new()?;
    // With `--tls`: a CA for this run, kept in the home (the proxy's `server.caFile`), its
    // certificate and key handed to the fake.
    let tls_dir = home.neurolink_home().join("bench-tls");
    let ca_file = if o.tls {
        std::fs::create_dir_all(&tls_dir)?;
        let ca = TestCa::new()?;
        ca.save(&tls_dir)?;
        Some((tls_dir.join("ca.pem"), ca.connector()?))
    } else {
        None
    };
    let fake = FakeProcess::start(ca_file.as_ref().map(|_| tls_dir.as_path()))?;
    if let Some((_, connector)) = &ca_file {
        let _ = DIRECT_TLS.set((fake.addr.clone(), connector.clone()));
    }
    // `bench-translated` is served by the fake OpenAI, translated both ways.
    let account = if o.oauth {
        home.write(
            "tokens.json",
            &neurolink_tests::harness::token_store(&[(
                "bench",
                BENCH_OAUTH_TOKEN,
                4_102_444_800_000,
            )]),
        )?;
        ""
    } else {
        "accounts:\n  anthropic:\n    - {name: bench, apiKey: bench-upstream-key}\n"
    };
    let (anthropic, openai) = (
        loopback_url(&fake.addr, o.tls)?,
        loopback_url(&fake.providers, false)?,
    );
    let server = ca_file.as_ref().map_or_else(String::new, |(ca, _)| {
        format!("server:\n  caFile: {}\n", ca.display())
    });
    home.write_config(&format!(
        "routing:\n  model-mappings:\n    - {{from: bench-translated, to: gpt-4o, provider: openai}}\nproviders:\n  anthropic:\n    baseUrl: {anthropic}\n  openai:\n    baseUrl: {openai}/v1\n    apiKey: bench-openai-key\n{account}{server}",
    ))?;
    let mut daemon = Daemon::start(&home, &["-q"], &[])?;
    let pid = daemon.child.id();
    let direct = fake.addr.clone();
    let proxy = daemon.authority();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_idle = rss_mb(pid)?;
    if let Some(secs) = o.soak {
        let c = o.soak_c;
        let small = small_body();
        if let Some(client) = &o.soak_floor {
            let floor = Floor::start(&direct, client)?;
            eprintln!(
                "floor pid {}: loading it at c={c} for {secs} s",
                floor.child.id()
            );
            let (n, took) = throughput(&floor.addr, &small, c, secs).await?;
            println!("{:.0} req/s through the floor", n as f64 / took);
            return Ok(());
        }
        if o.soak_nginx {
            let Some(nginx) = Nginx::start(&direct, ca_file.as_ref().map(|(ca, _)| ca.as_path()))?
            else {
                bail!("--nginx: nginx is not on PATH");
            };
            eprintln!(
                "nginx pids {:?}: loading it at c={c} for {secs} s",
                nginx.pids()
            );
            let (n, took) = throughput(&nginx.authority, &small, c, secs).await?;
            println!("{:.0} req/s through nginx", n as f64 / took);
            return Ok(());
        }
        eprintln!("proxy pid {pid}: loading it at c={c} for {secs} s");
        let (n, took) = throughput(&proxy, &small, c, secs).await?;
        println!("{:.0} req/s through the proxy", n as f64 / took);
        return Ok(());
    }

    let (n_lat, n_body, n_sse, secs) = if o.quick {
        (500, 200, 30, 1.0)
    } else {
        (5000, 1000, 200, 5.0)
    };
    let small = small_body();
    let big = big_body();
    let sse_body = sse_body();
    let events = std::env::var("BENCH_SSE_EVENTS").unwrap_or_else(|_| "1000".into());
    let sse_headers = [("x-fake-events", events.as_str())];

    let nginx = Nginx::start(&direct, ca_file.as_ref().map(|(ca, _)| ca.as_path()))?;
    if nginx.is_none() {
        eprintln!("nginx is not on PATH: no reference row (apt-get install nginx-light)");
    }
    // direct, via the proxy, via nginx (when there is one)
    let mut targets = vec![direct.as_str(), proxy.as_str()];
    if let Some(n) = &nginx {
        targets.push(n.authority.as_str());
    }
    let fake_pid = fake.child.id();
    let fake_pids = move || vec![fake_pid];
    let proxy_pids = move || vec![pid];
    let nginx_pids_now = || nginx.as_ref().map(Nginx::pids).unwrap_or_default();
    let mut cpu_targets: Vec<(&str, &dyn Fn() -> Vec<u32>)> =
        vec![(direct.as_str(), &fake_pids), (proxy.as_str(), &proxy_pids)];
    if let Some(n) = &nginx {
        cpu_targets.push((n.authority.as_str(), &nginx_pids_now));
    }
    let paced_streams = 32;
    if o.train {
        return train(daemon, &proxy, &sse_body, &sse_headers).await;
    }
    if o.paced_only {
        let paced = paced_set(&cpu_targets, &sse_body, paced_streams, secs).await?;
        for (name, p) in ["direct", "proxy", "nginx"].iter().zip(&paced) {
            println!(
                "{name:>6}: paced SSE CPU per event {:.2} µs, first byte p50 {:.3} ms, last byte p50 {:.3} ms",
                p.cpu_us_per_event, p.first_p50, p.last_p50
            );
        }
        return Ok(());
    }
    if let Some(n) = o.sse_only {
        let sse = latency_set(&targets, &sse_body, &sse_headers, n).await?;
        for (name, l) in ["direct", "proxy", "nginx"].iter().zip(&sse) {
            println!(
                "{name:>6}: SSE first byte p50 {:.3} ms, last byte p50 {:.3} ms",
                l.ttfb_p50, l.p50
            );
        }
        return Ok(());
    }
    let nginx_pids = nginx.as_ref().map(Nginx::pids).unwrap_or_default();
    let rss_nginx_idle = nginx_pids
        .iter()
        .map(|p| rss_mb(*p).unwrap_or(0.0))
        .sum::<f64>();

    eprintln!("latency, concurrency 1 ({n_lat} requests each)...");
    let lat = latency_set(&targets, &small, &[], n_lat).await?;
    eprintln!("throughput, concurrency 32 ({secs} s each)...");
    let thru = throughput_set(&cpu_targets, &small, 32, secs).await?;
    eprintln!("128 KB request body ({n_body} requests each)...");
    let body = latency_set(&targets, &big, &[], n_body).await?;
    eprintln!("SSE, 1,000 events ({n_sse} streams each)...");
    let sse = latency_set(&targets, &sse_body, &sse_headers, n_sse).await?;
    eprintln!(
        "paced SSE: {paced_streams} streams at once, {PACED_EVENTS} events {PACE_MS} ms apart ({secs} s each)..."
    );
    let paced = paced_set(&cpu_targets, &sse_body, paced_streams, secs).await?;
    eprintln!("translated SSE through the OpenAI fake ({n_sse} streams each)...");
    let translated_body = translated_body();
    let openai_body = Bytes::from(json!({"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"say hi"}]}).to_string());
    let to_openai = |a: &str| request_to(a, "/v1/chat/completions", &openai_body, &[]);
    let to_proxy = |a: &str| request(a, &translated_body, &[]);
    let tr = latency_set_with(
        &[fake.providers.as_str(), proxy.as_str()],
        &[&to_openai, &to_proxy],
        n_sse,
    )
    .await?;
    let rss_after = rss_mb(pid)?;
    eprintln!("1,000 open streams...");
    let rss_streams = rss_with_open_streams(&proxy, pid, 1000).await?;
    let _ = daemon.terminate(Duration::from_secs(15));

    // Each row: direct, proxy, and nginx when measured.
    let rows: Vec<(&str, Vec<f64>)> = vec![
        ("latency p50, c=1 (ms)", lat.iter().map(|l| l.p50).collect()),
        ("latency p99, c=1 (ms)", lat.iter().map(|l| l.p99).collect()),
        (
            "throughput, c=32 (req/s)",
            thru.iter().map(|t| t.rps).collect(),
        ),
        (
            "CPU per request, c=32 (µs; direct: the fake's own)",
            thru.iter().map(|t| t.cpu_us_per_request).collect(),
        ),
        ("128 KB body p50 (ms)", body.iter().map(|l| l.p50).collect()),
        (
            "SSE first byte p50 (ms)",
            sse.iter().map(|l| l.ttfb_p50).collect(),
        ),
        (
            "SSE last byte p50, 1,000 events (ms)",
            sse.iter().map(|l| l.p50).collect(),
        ),
        (
            "paced SSE: CPU per event, 32 streams (µs; direct: the fake's own)",
            paced.iter().map(|p| p.cpu_us_per_event).collect(),
        ),
        (
            "paced SSE last byte p50, 100 events 2 ms apart (ms)",
            paced.iter().map(|p| p.last_p50).collect(),
        ),
        (
            "translated SSE first byte p50, vs OpenAI direct (ms)",
            tr.iter().map(|l| l.ttfb_p50).collect(),
        ),
        (
            "translated SSE last byte p50, vs OpenAI direct (ms)",
            tr.iter().map(|l| l.p50).collect(),
        ),
    ];
    println!();
    let with_nginx = nginx.is_some();
    if with_nginx {
        println!("| measure | direct | via proxy | added | ratio | via nginx | added | ratio |");
        println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    } else {
        println!("| measure | direct | via proxy | added | ratio |");
        println!("| --- | ---: | ---: | ---: | ---: |");
    }
    for (name, v) in &rows {
        let d = v[0];
        let cell = |x: f64| format!("{x:.3} | {:+.3} | {:.3}x", x - d, x / d);
        let nginx_cells = match v.get(2) {
            Some(x) => format!(" {} |", cell(*x)),
            None if with_nginx => " - | | |".to_string(),
            None => String::new(),
        };
        println!("| {name} | {d:.3} | {} |{nginx_cells}", cell(v[1]));
    }
    println!();
    println!("| memory | RSS (MB) |");
    println!("| --- | ---: |");
    println!("| proxy idle after start | {rss_idle:.1} |");
    println!("| proxy idle after the runs above | {rss_after:.1} |");
    println!("| proxy holding 1,000 open streams | {rss_streams:.1} |");
    if with_nginx {
        println!("| nginx idle (master and workers) | {rss_nginx_idle:.1} |");
    }

    let results = json!({
        "date": humantime_now(),
        "quick": o.quick,
        "tls": o.tls,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rows": rows.iter().map(|(name, v)| json!({"measure": name, "direct": v[0], "proxy": v[1], "added": v[1] - v[0], "ratio": v[1] / v[0], "nginx": v.get(2)})).collect::<Vec<_>>(),
        "rss_mb": {"idle": rss_idle, "idle_after_load": rss_after, "open_streams_1000": rss_streams, "nginx_idle": with_nginx.then_some(rss_nginx_idle)},
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
