//! The upstream client honours the environment's proxies as curl does: `HTTP_PROXY` for an
//! `http://` upstream (absolute form, `Proxy-Authorization`), `HTTPS_PROXY` for an `https://`
//! one (a `CONNECT` tunnel with TLS to the upstream inside it), `NO_PROXY` to go direct.

use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::fake_proxy::FakeProxy;
use neurolink_tests::harness::{config_with_keys, send_message, Daemon, TestHome};
use neurolink_tests::tls::{Alpn, TestCa};

/// `alice:s3cret`, as HTTP Basic credentials.
const BASIC: &str = "Basic YWxpY2U6czNjcmV0";

fn home_for(upstream: &str) -> TestHome {
    let home = TestHome::new().unwrap();
    home.write_config(&config_with_keys(upstream, "fill-first", &[("a", "key-a")]))
        .unwrap();
    home
}

async fn post(d: &Daemon) -> reqwest::Response {
    send_message(&d.url, false).await
}

/// A 200 carrying the fake upstream's normal answer.
async fn assert_fake_answer(r: reqwest::Response) {
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        answer["content"][0]["text"],
        "Hello from the fake upstream."
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_upstream_goes_through_http_proxy_in_absolute_form_with_its_credentials() {
    let fake = FakeAnthropic::start().await.unwrap();
    let proxy = FakeProxy::start().await.unwrap();
    let home = home_for(&fake.url());
    let via = proxy.url(Some("alice:s3cret"));
    let d = Daemon::start(&home, &[], &[("HTTP_PROXY", &via), ("NO_PROXY", "")]).unwrap();
    for _ in 0..2 {
        assert_fake_answer(post(&d).await).await;
    }
    let seen = proxy.wait_for(1).await;
    let first = &seen[0];
    let want = format!("POST {}/v1/messages", fake.url());
    assert!(
        first.request_line.starts_with(&want) && first.request_line.ends_with(" HTTP/1.1"),
        "{first:?}"
    );
    assert_eq!(first.proxy_authorization.as_deref(), Some(BASIC));
    assert_eq!(fake.count("key-a"), 2, "both requests reached the upstream");
    assert_eq!(fake.last().unwrap().headers["x-api-key"], "key-a");
    for line in d.drain_output() {
        assert!(!line.contains("s3cret"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_sends_a_listed_host_direct() {
    let fake = FakeAnthropic::start().await.unwrap();
    let proxy = FakeProxy::start().await.unwrap();
    let home = home_for(&fake.url());
    let via = proxy.url(None);
    let env = [
        ("HTTP_PROXY", via.as_str()),
        ("NO_PROXY", "localhost,127.0.0.1"),
    ];
    let d = Daemon::start(&home, &[], &env).unwrap();
    assert_eq!(post(&d).await.status(), 200);
    assert_eq!(fake.count("key-a"), 1);
    assert!(proxy.seen().is_empty(), "{:?}", proxy.seen());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_tunneled_with_connect_and_tls_to_the_upstream_inside() {
    let proxy = FakeProxy::start().await.unwrap();
    // Loopback by name: the daemon hands it to the proxy in the CONNECT line and never
    // connects to it; the fake proxy never does either.
    let home = home_for("https://localhost");
    let via = proxy.url(Some("alice:s3cret"));
    let d = Daemon::start(&home, &[], &[("HTTPS_PROXY", &via), ("NO_PROXY", "")]).unwrap();
    // The fake proxy ends the tunnel after the TLS ClientHello: the attempt fails as a network
    // error, after the proxy saw what it should.
    let r = post(&d).await;
    assert_eq!(r.status(), 502);
    let body = r.text().await.unwrap();
    assert!(body.contains("upstream request failed"), "{body}");
    let seen = proxy.wait_for(1).await;
    let connect = &seen[0];
    assert_eq!(
        connect.request_line, "CONNECT localhost:443 HTTP/1.1",
        "{connect:?}"
    );
    assert_eq!(connect.proxy_authorization.as_deref(), Some(BASIC));
    let hello = &connect.tunneled;
    assert_eq!(
        hello.first(),
        Some(&0x16),
        "a TLS handshake record: {hello:?}"
    );
    assert!(
        hello.windows(9).any(|w| w == b"localhost"),
        "the ClientHello names the upstream (SNI), not the proxy"
    );
    for line in d.drain_output() {
        assert!(!line.contains("s3cret"), "{line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_answers_through_the_tunnel_over_http2_end_to_end() {
    let ca = TestCa::new().unwrap();
    let fake = FakeAnthropic::start_tls(ca.acceptor(Alpn::Http2).unwrap())
        .await
        .unwrap();
    let proxy = FakeProxy::start().await.unwrap();
    let home = home_for(&fake.url());
    home.write("ca.pem", &ca.ca_pem).unwrap();
    let mut config =
        std::fs::read_to_string(home.neurolink_home().join("proxy-config.yaml")).unwrap();
    config.push_str("server:\n  caFile: ca.pem\n");
    home.write_config(&config).unwrap();
    let via = proxy.url(Some("alice:s3cret"));
    let d = Daemon::start(&home, &[], &[("HTTPS_PROXY", &via), ("NO_PROXY", "")]).unwrap();
    assert_fake_answer(post(&d).await).await;
    assert_eq!(fake.last().unwrap().version, http::Version::HTTP_2);
    let connect = &proxy.wait_for(1).await[0];
    assert_eq!(
        connect.request_line,
        format!("CONNECT {} HTTP/1.1", fake.addr),
        "{connect:?}"
    );
    assert_eq!(connect.proxy_authorization.as_deref(), Some(BASIC));
    assert_eq!(
        connect.tunneled.first(),
        Some(&0x16),
        "TLS inside the tunnel"
    );
}
