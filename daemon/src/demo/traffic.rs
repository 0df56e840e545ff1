//! The demo's steady traffic: two clients sending a mix of streamed and JSON messages and
//! count_tokens through the proxy, a few a second, until stopped.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<[AtomicU64; 3]>);

#[derive(Debug, Clone, Copy)]
pub struct Counts {
    pub sent: u64,
    pub ok: u64,
    pub failed: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Counts {
        Counts {
            sent: self.0[0].load(Ordering::Relaxed),
            ok: self.0[1].load(Ordering::Relaxed),
            failed: self.0[2].load(Ordering::Relaxed),
        }
    }
}

pub async fn run(url: String, stats: Stats, stop: CancellationToken) {
    let Ok(client) = reqwest::Client::builder().no_proxy().build() else {
        return;
    };
    for _ in 0..2 {
        let (client, url, stats, stop) = (client.clone(), url.clone(), stats.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    () = tokio::time::sleep(Duration::from_millis(150 + fastrand::u64(0..450))) => {}
                }
                let roll = fastrand::u32(0..10);
                let model = if fastrand::bool() {
                    "claude-sonnet-4-5"
                } else {
                    "claude-opus-4-1"
                };
                let (path, body) = match roll {
                    0 => (
                        "/v1/messages/count_tokens",
                        serde_json::json!({"model": model, "messages": [{"role": "user", "content": "how many tokens is this?"}]}),
                    ),
                    1..=6 => (
                        "/v1/messages",
                        serde_json::json!({"model": model, "max_tokens": 256, "stream": true,
                                           "messages": [{"role": "user", "content": "hello from the demo"}]}),
                    ),
                    _ => (
                        "/v1/messages",
                        serde_json::json!({"model": model, "max_tokens": 256,
                                           "messages": [{"role": "user", "content": "hello from the demo"}]}),
                    ),
                };
                stats.0[0].fetch_add(1, Ordering::Relaxed);
                let sent = client
                    .post(format!("{url}{path}"))
                    .header("x-api-key", "demo-client")
                    .header("anthropic-version", "2023-06-01")
                    .json(&body)
                    .send()
                    .await;
                let ok = match sent {
                    Ok(r) if r.status().is_success() => r.bytes().await.is_ok(),
                    _ => false,
                };
                stats.0[if ok { 1 } else { 2 }].fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}
