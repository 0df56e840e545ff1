//! HTTPS upstreams: a certificate authority made for the test run stands in for a corporate
//! TLS-inspecting proxy's. The daemon trusts it only through `server.caFile`; with it, requests
//! go over TLS, HTTP/2 when the upstream offers it by ALPN (as api.anthropic.com does).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use neurolink_shared::ipc::IpcClient;
use neurolink_tests::fake_anthropic::{Behavior, FakeAnthropic};
use neurolink_tests::fake_oauth::FakeOAuth;
use neurolink_tests::harness::{
    command, config_with_keys, message_body, now_ms, send_message, token_store_with, Daemon,
    TestHome,
};
use neurolink_tests::sse;
use neurolink_tests::tls::{Alpn, TestCa};

/// A home whose config sends key `key-a` to `upstream`, trusting `ca_file` when given.
fn home_for(upstream: &str, ca_file: Option<&str>) -> TestHome {
    let home = TestHome::new().unwrap();
    home.write_config(&config(upstream, ca_file)).unwrap();
    home
}

/// A home whose config sends key `key-a` to `fake` and trusts `ca`, kept in the home as `file`
/// and named relatively.
fn trusting_home(fake: &FakeAnthropic, ca: &TestCa, file: &str) -> TestHome {
    let home = TestHome::new().unwrap();
    home.write(file, &ca.ca_pem).unwrap();
    home.write_config(&config(&fake.url(), Some(file))).unwrap();
    home
}

fn config(upstream: &str, ca_file: Option<&str>) -> String {
    let mut yaml = config_with_keys(upstream, "fill-first", &[("a", "key-a")]);
    if let Some(file) = ca_file {
        yaml.push_str(&format!("server:\n  caFile: {file}\n"));
    }
    yaml
}

/// One client connection to the daemon, so that its requests are served by one thread, which
/// keeps its own upstream connections. (reqwest's pool may open a second connection when the
/// next request comes before it has taken the first back.)
struct OneConnection {
    send: hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    host: String,
}

impl OneConnection {
    async fn to(d: &Daemon) -> Self {
        let host = d.authority();
        let tcp = tokio::net::TcpStream::connect(&host).await.unwrap();
        let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
            .await
            .unwrap();
        tokio::spawn(conn);
        Self { send, host }
    }

    /// `POST /v1/messages`: the status and the whole body.
    async fn post(&mut self, stream: bool) -> (u16, String) {
        let r = self
            .send(Bytes::from(message_body(stream).to_string()), &[])
            .await;
        let status = r.status().as_u16();
        let body = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8(body.to_vec()).unwrap())
    }
}

impl OneConnection {
    /// `POST /v1/messages` with this body and these headers; the answer as it starts.
    async fn send(
        &mut self,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> http::Response<hyper::body::Incoming> {
        self.send.ready().await.unwrap();
        let mut req = http::Request::post("/v1/messages")
            .header("host", &self.host)
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body)).unwrap();
        self.send.send_request(req).await.unwrap()
    }
}

/// An HTTP/2 fake upstream over TLS and a daemon trusting its authority (`ca.pem` in the
/// home); bind the three in this order, so the daemon stops before its home is removed.
async fn http2_daemon() -> (FakeAnthropic, TestHome, Daemon) {
    let ca = TestCa::new().unwrap();
    let fake = https_fake(&ca, Alpn::Http2).await;
    let home = trusting_home(&fake, &ca, "ca.pem");
    let d = Daemon::start(&home, &[], &[]).unwrap();
    (fake, home, d)
}

async fn https_fake(ca: &TestCa, alpn: Alpn) -> FakeAnthropic {
    FakeAnthropic::start_tls(ca.acceptor(alpn).unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_makes_an_https_upstream_trusted_and_http2_is_spoken_when_offered() {
    let ca = TestCa::new().unwrap();
    let fake = https_fake(&ca, Alpn::Http2).await;
    // Relative to the config file's directory.
    let home = trusting_home(&fake, &ca, "corp-ca.pem");
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let mut client = OneConnection::to(&d).await;

    let (status, body) = client.post(false).await;
    assert_eq!(status, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        answer["content"][0]["text"],
        "Hello from the fake upstream."
    );
    let seen = fake.last().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.headers["x-api-key"], "key-a");

    // A stream arrives whole over the same HTTP/2 connection.
    let (status, text) = client.post(true).await;
    assert_eq!(status, 200, "{text}");
    assert!(text.starts_with("event: message_start"), "{text}");
    assert!(
        text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        "{text}"
    );
    assert_eq!(fake.connections(), 1, "one HTTP/2 connection carried both");
}

/// Over HTTP/2: a request body larger than the stream's first flow-control window (64 KB)
/// arrives whole; a client that leaves mid-stream resets its stream, which the upstream sees
/// as a cancel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_large_bodies_arrive_whole_and_a_client_leaving_cancels_its_stream() {
    let (fake, _home, d) = http2_daemon().await;
    let mut client = OneConnection::to(&d).await;

    let mut big = message_body(false);
    big["messages"][0]["content"] = "x".repeat(200 * 1024).into();
    let big = Bytes::from(big.to_string());
    let r = client.send(big.clone(), &[]).await;
    assert_eq!(r.status(), 200);
    r.into_body().collect().await.unwrap();
    let seen = fake.last().unwrap();
    assert_eq!(seen.version, http::Version::HTTP_2);
    assert_eq!(seen.body, big, "the body arrived whole");

    // Upstream sends all but the last event, then holds the stream open.
    let r = client
        .send(
            Bytes::from(message_body(true).to_string()),
            &[("x-fake-hold-ms", "60000")],
        )
        .await;
    assert_eq!(r.status(), 200);
    let mut body = r.into_body();
    let mut seen = String::new();
    while !seen.contains("event: message_delta") {
        let frame = body.frame().await.expect("the stream goes on").unwrap();
        if let Ok(data) = frame.into_data() {
            seen.push_str(&String::from_utf8_lossy(&data));
        }
    }
    assert_eq!(fake.cancels(), 0);
    drop(body);
    drop(client);
    assert_eq!(
        fake.wait_cancels(1, std::time::Duration::from_secs(10))
            .await,
        1,
        "the upstream saw the client leave"
    );

    // (The next client connection may be served by another thread, with upstream connections
    // of its own, so the count of upstream connections says nothing here.)
    let mut client = OneConnection::to(&d).await;
    let (status, text) = client.post(false).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(fake.last().unwrap().version, http::Version::HTTP_2);
}

/// Over HTTP/2, an upstream stream that breaks after its first events (the upstream resets
/// it) ends, for the client, with those events whole and then an `error` event; the account
/// counts a stream error and no other account is tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_a_stream_reset_after_the_first_events_ends_with_an_error_event() {
    let (fake, _home, d) = http2_daemon().await;
    fake.script("key-a", 1, Behavior::DropAfter(3));
    let mut client = OneConnection::to(&d).await;
    let (status, text) = client.post(true).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(fake.last().unwrap().version, http::Version::HTTP_2);
    let events = sse::text_stream(
        "msg_fake_0",
        "claude-sonnet-4-5",
        &["Hello", " from", " the fake upstream."],
    );
    let first = events[..3].concat();
    assert!(text.starts_with(&first), "the first 3 events pass: {text}");
    let tail = &text[first.len()..];
    assert!(
        tail.starts_with("event: error\ndata: ") && tail.ends_with("\n\n"),
        "{tail}"
    );
    let a = d.account("a").await.unwrap();
    assert_eq!(a["counters"]["errors"]["stream_error"], 1);
    assert_eq!(fake.count("key-a"), 1, "no retry after the first byte");
}

/// An HTTP/2 upstream that refuses a stream unprocessed (`REFUSED_STREAM`, as a server at its
/// stream limit does) has not failed: the request goes again at once, the client gets its
/// answer, and the account is not blamed (no error counted, no cooldown).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_a_stream_refused_unprocessed_goes_again_without_blaming_the_account() {
    let (fake, _home, d) = http2_daemon().await;
    fake.script("key-a", 1, Behavior::RefusedStream);
    let mut client = OneConnection::to(&d).await;
    let (status, text) = client.post(false).await;
    assert_eq!(status, 200, "{text}");
    assert_eq!(fake.count("key-a"), 2, "refused once, then served");
    assert_eq!(fake.last().unwrap().version, http::Version::HTTP_2);
    let a = d.account("a").await.unwrap();
    assert_eq!(a["state"], "active", "{a}");
    assert_eq!(a["counters"]["errors"], serde_json::json!({}), "{a}");
    // A reset for any other reason may follow processing: it is the account's failure.
    fake.script("key-a", 1, Behavior::CloseBeforeHeaders);
    let (status, _) = client.post(false).await;
    assert_eq!(status, 502);
    assert_eq!(fake.count("key-a"), 3, "not sent again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_offering_only_http1_over_tls_gets_http1() {
    let ca = TestCa::new().unwrap();
    let fake = https_fake(&ca, Alpn::Http1).await;
    let home = TestHome::new().unwrap();
    let ca_file = home.write("ca.pem", &ca.ca_pem).unwrap();
    home.write_config(&config(&fake.url(), Some(&ca_file.display().to_string())))
        .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let mut client = OneConnection::to(&d).await;
    for _ in 0..3 {
        let (status, body) = client.post(false).await;
        assert_eq!(status, 200, "{body}");
    }
    assert_eq!(fake.last().unwrap().version, http::Version::HTTP_11);
    assert_eq!(fake.connections(), 1, "the connection is kept and reused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_fails_with_a_hint_naming_the_setting() {
    let ca = TestCa::new().unwrap();
    let fake = https_fake(&ca, Alpn::Http2).await;
    let home = home_for(&fake.url(), None);
    let d = Daemon::start(&home, &[], &[]).unwrap();
    let r = send_message(&d.url, false).await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("certificate"), "{body}");
    assert!(body.contains("server.caFile"), "{body}");
    assert_eq!(
        fake.total(),
        0,
        "no request went over an untrusted connection"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_the_http2_connection_being_opened() {
    let (fake, _home, d) = http2_daemon().await;
    // The daemon serves on one thread per core, each with its own upstream connections: at
    // most that many connections, however many requests arrive at once.
    let lanes = std::thread::available_parallelism().map_or(2, |n| n.get().min(16));
    let n = 4 * lanes;
    let requests: Vec<_> = (0..n)
        .map(|_| {
            let url = d.url.clone();
            tokio::spawn(async move { send_message(&url, false).await.status() })
        })
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap(), 200);
    }
    assert_eq!(fake.total(), n);
    assert!(
        fake.connections() <= lanes,
        "{} connections for {n} requests on {lanes} serving threads",
        fake.connections()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_that_adds_the_ca_file_takes_effect_without_a_restart() {
    let ca = TestCa::new().unwrap();
    let fake = https_fake(&ca, Alpn::Http2).await;
    let home = home_for(&fake.url(), None);
    let d = Daemon::start(&home, &[], &[]).unwrap();
    assert_eq!(send_message(&d.url, false).await.status(), 502);

    home.write("ca.pem", &ca.ca_pem).unwrap();
    home.write_config(&config(&fake.url(), Some("ca.pem")))
        .unwrap();
    let mut c = IpcClient::connect(&home.neurolink_home().join("daemon.sock"))
        .await
        .unwrap();
    c.call("config.reload", None).await.unwrap();
    assert_eq!(send_message(&d.url, false).await.status(), 200);
    assert_eq!(fake.total(), 1);
}

#[test]
fn a_bad_ca_file_is_refused_by_config_check_and_at_start_naming_the_file() {
    let home = TestHome::new().unwrap();
    home.write_config(&config("https://localhost", Some("missing.pem")))
        .unwrap();
    let out = command(&home).args(["config", "check"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("server.caFile") && stderr.contains("missing.pem"),
        "{stderr}"
    );

    home.write("not-a-cert.pem", "hello\n").unwrap();
    home.write_config(&config("https://localhost", Some("not-a-cert.pem")))
        .unwrap();
    let out = command(&home).args(["config", "check"]).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not-a-cert.pem: holds no certificate"),
        "{stderr}"
    );
    let out = command(&home)
        .args(["proxy", "start", "-p", "0"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(printed.contains("not-a-cert.pem"), "{printed}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refreshes_by_the_daemon_and_the_cli_trust_the_ca_file_too() {
    let ca = TestCa::new().unwrap();
    let fake = https_fake(&ca, Alpn::Http2).await;
    let oauth = FakeOAuth::start_tls(ca.acceptor(Alpn::Http1).unwrap())
        .await
        .unwrap();
    oauth.register("rt-0");
    let home = TestHome::new().unwrap();
    home.write("ca.pem", &ca.ca_pem).unwrap();
    // Expired: the first request refreshes it, over HTTPS, with the daemon's own client.
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() - 60_000)]),
    )
    .unwrap();
    let yaml = format!(
        "providers:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth: {{tokenUrl: \"{}\"}}\nserver:\n  caFile: ca.pem\n",
        fake.url(),
        oauth.token_url()
    );
    home.write_config(&yaml).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    assert_eq!(send_message(&d.url, false).await.status(), 200);
    assert_eq!(fake.count("at-1"), 1);
    assert_eq!(oauth.refreshes(), 1);

    // The CLI's client trusts it as well.
    let cli = tokio::task::spawn_blocking({
        let mut c = command(&home);
        c.args(["auth", "refresh", "anthropic"]);
        move || c.output().unwrap()
    })
    .await
    .unwrap();
    assert!(
        cli.status.success(),
        "{}",
        String::from_utf8_lossy(&cli.stderr)
    );
    assert_eq!(oauth.refreshes(), 2);
    assert_eq!(oauth.reuses(), 0);
}
