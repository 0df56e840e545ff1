//! The soak: the real daemon under concurrency 32 of mixed streamed and JSON requests for a
//! while, the fake upstream failing at random, two OAuth logins whose tokens expire every few
//! seconds (so refreshes run under load). It reports what a reliability review asks: requests,
//! successes, client-visible failures split into "a retry could have saved it" and "could not be
//! saved", RSS and open files at the start, middle and end, refreshes and refresh-token reuses.
//!
//! Run it with `cargo run --release -p neurolink-tests --bin soak -- --minutes 10`; a 30-second
//! version is in the end-to-end suite.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::fake_anthropic::FakeAnthropic;
use crate::fake_oauth::FakeOAuth;
use crate::harness::{message_body, now_ms, token_store_with, Daemon, TestHome};

/// How hard and how long.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    pub concurrency: usize,
    /// The share of upstream answers that fail.
    pub fault_rate: f64,
    pub seed: u64,
}

/// One process sample.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sample {
    pub rss_mb: f64,
    pub open_files: usize,
}

/// What the soak saw.
#[derive(Debug, Default)]
pub struct Report {
    pub seconds: f64,
    pub requests: u64,
    pub successes: u64,
    /// Failures the proxy answered while a retry (another account, or waiting a moment) could
    /// have served the request.
    pub savable: u64,
    /// Failures nothing could have saved: the stream had started, or every account had failed.
    pub unsavable: u64,
    /// Client-visible failures by kind.
    pub kinds: BTreeMap<String, u64>,
    /// Start, middle, end.
    pub samples: [Sample; 3],
    pub refreshes: usize,
    pub refresh_reuses: usize,
    pub upstream_requests: usize,
    /// Failures as the clients counted them (a cross-check of the log's).
    pub client_failures: u64,
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "soak: {:.0} s", self.seconds)?;
        writeln!(
            f,
            "requests {}   successes {}   upstream requests {} (faults injected upstream)",
            self.requests, self.successes, self.upstream_requests
        )?;
        writeln!(
            f,
            "client-visible failures {}: a retry could have saved it {}   could not be saved {}",
            self.client_failures, self.savable, self.unsavable
        )?;
        for (k, n) in &self.kinds {
            writeln!(f, "  {k}: {n}")?;
        }
        let [s, m, e] = self.samples;
        writeln!(
            f,
            "RSS MB start {:.1} / middle {:.1} / end {:.1}   open files {} / {} / {}",
            s.rss_mb, m.rss_mb, e.rss_mb, s.open_files, m.open_files, e.open_files
        )?;
        write!(
            f,
            "token refreshes {}   refresh-token reuses {}",
            self.refreshes, self.refresh_reuses
        )
    }
}

/// The daemon's memory and open files (Linux `/proc`).
pub fn sample(pid: u32) -> Sample {
    let rss_mb = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0);
    let open_files = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count());
    Sample { rss_mb, open_files }
}

/// Run the soak in a fresh home.
pub async fn run(o: &Options) -> anyhow::Result<Report> {
    let fake = FakeAnthropic::start_with(false).await?;
    let oauth = FakeOAuth::start().await?;
    // Tokens last just over the one-hour refresh margin: each login refreshes every few seconds.
    oauth.set_expires_in(3605);
    oauth.register("rt-soak-1");
    oauth.register("rt-soak-2");
    let home = TestHome::new()?;
    let soon = now_ms() + 3_600_000 + 5_000;
    home.write(
        "tokens.json",
        &token_store_with(&[
            ("login-1", "at-soak-1", "rt-soak-1", soon),
            ("login-2", "at-soak-2", "rt-soak-2", soon),
        ]),
    )?;
    home.write_config(&format!(
        "routing: {{strategy: round-robin, max-wait: 5}}\nproviders:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\naccounts:\n  anthropic:\n    - {{name: key-1, apiKey: sk-soak-1}}\n    - {{name: key-2, apiKey: sk-soak-2}}\nserver:\n  tokenCheckSecs: 2\n",
        fake.url(),
        oauth.token_url()
    ))?;
    let accounts = 4;
    let mut daemon = Daemon::start(&home, &["-q"], &[])?;
    let pid = daemon.child.id();
    fake.set_fault_rate(o.fault_rate, o.seed);
    let client = reqwest::Client::builder().no_proxy().build()?;
    let started = Instant::now();
    let deadline = started + o.duration;
    let requests = Arc::new(AtomicU64::new(0));
    let successes = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let mut samples = [sample(pid), Sample::default(), Sample::default()];
    let mut tasks = Vec::new();
    for worker in 0..o.concurrency {
        let (client, url) = (client.clone(), format!("{}/v1/messages", daemon.url));
        let (requests, successes, failures) =
            (requests.clone(), successes.clone(), failures.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while Instant::now() < deadline {
                let stream = (worker + i).is_multiple_of(2);
                i += 1;
                requests.fetch_add(1, Ordering::Relaxed);
                if succeeds(&client, &url, stream).await {
                    successes.fetch_add(1, Ordering::Relaxed);
                } else {
                    failures.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    tokio::time::sleep(o.duration / 2).await;
    samples[1] = sample(pid);
    for t in tasks {
        let _ = t.await;
    }
    samples[2] = sample(pid);
    let seconds = started.elapsed().as_secs_f64();
    let records = request_log(&home);
    let _ = daemon.terminate(Duration::from_secs(15));

    let mut report = Report {
        seconds,
        requests: requests.load(Ordering::Relaxed),
        successes: successes.load(Ordering::Relaxed),
        samples,
        refreshes: oauth.refreshes(),
        refresh_reuses: oauth.reuses(),
        upstream_requests: fake.total(),
        ..Report::default()
    };
    report.client_failures = failures.load(Ordering::Relaxed);
    // Judged from the request log, which knows what was tried: a failure is savable when the
    // proxy gave up while an account it had not tried could still have served, and before any
    // byte went out.
    for r in records.values() {
        let Some(class) = r["errorClass"].as_str() else {
            continue;
        };
        if class == "client_disconnected" {
            continue;
        }
        *report.kinds.entry(class.to_string()).or_default() += 1;
        let tried = r["attempts"].as_array().map_or(0, Vec::len);
        let refused = matches!(
            class,
            "all_cooling" | "all_refused" | "all_disabled" | "no_accounts" | "model_excluded"
        );
        if class != "stream_error" && !refused && tried < accounts {
            report.savable += 1;
        } else {
            report.unsavable += 1;
        }
    }
    Ok(report)
}

/// Every record of the request log, by request id.
fn request_log(home: &TestHome) -> HashMap<String, Value> {
    let mut out = HashMap::new();
    let Ok(dir) = std::fs::read_dir(home.neurolink_home().join("logs")) else {
        return out;
    };
    for entry in dir.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                if let Some(id) = v["requestId"].as_str() {
                    out.insert(id.to_string(), v);
                }
            }
        }
    }
    out
}

/// One request: whether the client got a whole answer (a stream through its `message_stop`).
async fn succeeds(client: &reqwest::Client, url: &str, stream: bool) -> bool {
    let Ok(r) = client.post(url).json(&message_body(stream)).send().await else {
        return false;
    };
    let ok = r.status().is_success();
    let body = r.text().await.unwrap_or_default();
    ok && (!stream || body.contains("event: message_stop"))
}
