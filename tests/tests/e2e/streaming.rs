//! SSE passthrough: bytes unchanged, nothing buffered, failures after the first byte, client
//! disconnects, and many streams at once.

use std::time::Duration;

use futures_util::StreamExt;
use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::harness::{config_with_keys, http, message_body, Daemon, TestHome};
use neurolink_tests::sse;

async fn proxy(fake: &FakeAnthropic, keys: &[(&str, &str)]) -> (TestHome, Daemon) {
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(&fake.url(), "fill-first", keys))
        .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    (home, d)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_bytes_are_exactly_upstreams() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = proxy(&fake, &[("a", "key-a")]).await;
    let r = d.message(true).await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()["content-type"],
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(r.headers()["cache-control"], "no-cache");
    let got = r.text().await.unwrap();
    let expected = sse::text_stream(
        "msg_fake_0",
        "claude-sonnet-4-5",
        &["Hello", " from", " the fake upstream."],
    )
    .concat();
    assert_eq!(got, expected);
    let a = d.account("a").await.unwrap();
    assert_eq!(a["counters"]["inputTokens"], sse::INPUT_TOKENS);
    assert_eq!(a["counters"]["outputTokens"], sse::OUTPUT_TOKENS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_reach_the_client_while_upstream_still_streams_and_disconnect_cancels() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = proxy(&fake, &[("a", "key-a")]).await;
    // Upstream sends everything but the last event, then holds the stream open for a minute.
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("x-fake-hold-ms", "60000")
        .json(&message_body(true))
        .send()
        .await
        .unwrap();
    let mut body = r.bytes_stream();
    let mut seen = String::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while !seen.contains("event: message_delta") {
            match body.next().await {
                Some(Ok(chunk)) => seen.push_str(&String::from_utf8_lossy(&chunk)),
                other => panic!("stream ended early: {other:?} after {seen}"),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "events held back by the proxy; got {seen}");
    assert!(!seen.contains("message_stop"));
    assert_eq!(fake.cancels(), 0);
    drop(body);
    assert_eq!(
        fake.wait_cancels(1, Duration::from_secs(5)).await,
        1,
        "upstream saw the client leave"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_while_upstream_hangs_cancels_it() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = proxy(&fake, &[("a", "key-a")]).await;
    fake.script("key-a", 1, Behavior::Hang);
    let url = format!("{}/v1/messages", d.url);
    let pending =
        tokio::spawn(async move { http().post(url).json(&message_body(true)).send().await });
    // Wait until the request reached the fake, then give up on it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while fake.count("key-a") == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(fake.count("key-a"), 1);
    pending.abort();
    assert_eq!(fake.wait_cancels(1, Duration::from_secs(5)).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failure_after_first_byte_ends_with_an_error_event_and_no_retry() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = proxy(&fake, &[("a", "key-a"), ("b", "key-b")]).await;
    fake.script("key-a", 1, Behavior::DropAfter(3));
    let r = d.message(true).await;
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let events = sse::text_stream(
        "msg_fake_0",
        "claude-sonnet-4-5",
        &["Hello", " from", " the fake upstream."],
    );
    assert!(
        text.starts_with(&events[..3].concat()),
        "the first 3 events pass unchanged: {text}"
    );
    let tail = &text[events[..3].concat().len()..];
    assert!(tail.starts_with("event: error\ndata: "), "{tail}");
    let data: serde_json::Value =
        serde_json::from_str(tail.trim_start_matches("event: error\ndata: ").trim()).unwrap();
    assert_eq!(data["type"], "error");
    assert_eq!(data["error"]["type"], "api_error");
    assert_eq!(fake.count("key-b"), 0, "no retry after the first byte");
    let a = d.account("a").await.unwrap();
    assert_eq!(a["counters"]["errors"]["stream_error"], 1);
}

/// Events a few milliseconds apart, as a model writes them, go out one by one as they come
/// (the relay sends a chunk that follows a pause at once), whole and unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paced_events_go_out_whole_as_they_come() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = proxy(&fake, &[("a", "key-a")]).await;
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("x-fake-events", "6")
        .header("x-fake-pace-ms", "5")
        .json(&message_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let mut body = r.bytes_stream();
    let mut chunks = Vec::new();
    while let Some(chunk) = body.next().await {
        chunks.push(String::from_utf8(chunk.unwrap().to_vec()).unwrap());
    }
    for c in &chunks {
        assert!(c.ends_with("\n\n"), "a chunk ends inside an event: {c:?}");
    }
    let words = ["Hello", " from", " the fake upstream."];
    let parts: Vec<&str> = (0..6).map(|i| words[i % 3]).collect();
    let expected = sse::text_stream("msg_fake_0", "claude-sonnet-4-5", &parts).concat();
    assert_eq!(chunks.concat(), expected);
    let a = d.account("a").await.unwrap();
    assert_eq!(a["counters"]["outputTokens"], sse::OUTPUT_TOKENS);
    assert_eq!(a["counters"]["successes"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_streams() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, d) = proxy(&fake, &[("a", "key-a"), ("b", "key-b")]).await;
    let client = http();
    let tasks: Vec<_> = (0..100)
        .map(|_| {
            let client = client.clone();
            let url = format!("{}/v1/messages", d.url);
            tokio::spawn(async move {
                let r = client
                    .post(url)
                    .header("x-fake-events", "20")
                    .json(&message_body(true))
                    .send()
                    .await?;
                let status = r.status();
                let text = r.text().await?;
                Ok::<_, reqwest::Error>((status, text))
            })
        })
        .collect();
    for t in tasks {
        let (status, text) = t.await.unwrap().unwrap();
        assert_eq!(status, 200);
        assert_eq!(text.matches("event: content_block_delta").count(), 20);
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
    }
    let status = d.status().await.unwrap();
    assert_eq!(status["totals"]["successes"], 100);
    assert_eq!(status["totals"]["outputTokens"], 100 * sse::OUTPUT_TOKENS);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_cleanly() {
    let fake = FakeAnthropic::start().await.unwrap();
    let (_home, mut d) = proxy(&fake, &[("a", "key-a")]).await;
    let status = d.terminate(Duration::from_secs(15)).unwrap();
    assert!(status.success(), "exit status {status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_stream_times_out_with_an_error_event() {
    let fake = FakeAnthropic::start().await.unwrap();
    let home = TestHome::new().unwrap();
    let cfg = config_with_keys(&fake.url(), "fill-first", &[("a", "key-a"), ("b", "key-b")])
        + "server:\n  idleTimeoutSecs: 1\n";
    home.write_config(&cfg).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let r = http()
        .post(format!("{}/v1/messages", d.url))
        .header("x-fake-hold-ms", "30000")
        .json(&message_body(true))
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(10), r.text())
        .await
        .unwrap()
        .unwrap();
    assert!(text.contains("event: message_delta"), "{text}");
    assert!(!text.contains("message_stop"));
    assert!(
        text.ends_with("\n\n") && text.contains("event: error\ndata: "),
        "{text}"
    );
    assert!(text.contains("sent nothing for 1 s"), "{text}");
    assert_eq!(fake.count("key-b"), 0, "no retry after the first byte");
    assert_eq!(
        fake.wait_cancels(1, Duration::from_secs(5)).await,
        1,
        "the stalled upstream is closed"
    );
}
