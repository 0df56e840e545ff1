//! The control socket, end to end: every method, error replies, a lagging subscriber, two clients
//! at once, and the socket's permissions.

use std::time::Duration;

use neurolink_shared::ipc::{
    codes, AccountChange, AccountState, ClientError, DaemonEventKind, Event, IpcClient,
};
use neurolink_tests::fake_anthropic::FakeAnthropic;
use neurolink_tests::fake_oauth::FakeOAuth;
use neurolink_tests::harness::{http, now_ms, spawn_messages, token_store_with, Daemon, TestHome};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

struct Setup {
    fake: FakeAnthropic,
    oauth: FakeOAuth,
    home: TestHome,
    d: Daemon,
}

/// An OAuth login `alice` and an API key `key`, fill-first.
async fn setup() -> Setup {
    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    oauth.register("rt-0");
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() + 5 * 3_600_000)]),
    )
    .unwrap();
    home.write_config(&config(&fake, &oauth, "fill-first"))
        .unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();
    Setup {
        fake,
        oauth,
        home,
        d,
    }
}

fn config(fake: &FakeAnthropic, oauth: &FakeOAuth, strategy: &str) -> String {
    format!(
        "routing: {{strategy: {strategy}}}\nproviders:\n  anthropic: {{baseUrl: \"{}\"}}\n  anthropic-oauth:\n    tokenUrl: \"{}\"\n    authorizeUrl: \"{}\"\n    redirectUri: \"http://127.0.0.1:1/cb\"\naccounts:\n  anthropic:\n    - {{name: key, apiKey: key-1}}\n",
        fake.url(),
        oauth.token_url(),
        oauth.authorize_url()
    )
}

async fn client(home: &TestHome) -> IpcClient {
    IpcClient::connect(&home.neurolink_home().join("daemon.sock"))
        .await
        .unwrap()
}

async fn send(d: &Daemon) -> reqwest::StatusCode {
    d.message(false).await.status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_method_answers() {
    let s = setup().await;
    let mut c = client(&s.home).await;

    let hello = c
        .call("hello", Some(json!({"client": "test"})))
        .await
        .unwrap();
    assert_eq!(hello["protocol"], neurolink_shared::ipc::PROTOCOL_VERSION);
    assert_eq!(hello["version"], env!("CARGO_PKG_VERSION"));
    assert!(hello["pid"].as_u64().unwrap() > 0);

    let status = c.call("status", None).await.unwrap();
    assert_eq!(status["strategy"], "fill-first");
    assert_eq!(status["accountCount"], 2);
    assert_eq!(
        status["port"].as_u64().unwrap(),
        s.d.url.rsplit(':').next().unwrap().parse::<u64>().unwrap()
    );

    let list = c.call("accounts.list", None).await.unwrap();
    let labels: Vec<_> = list["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["label"].clone())
        .collect();
    assert_eq!(labels, [json!("alice"), json!("key")]);
    assert!(
        !list.to_string().contains("at-0") && !list.to_string().contains("key-1"),
        "no secrets over IPC"
    );

    // refresh: a real exchange against the fake token endpoint.
    let a = c
        .call("accounts.refresh", Some(json!({"label": "alice"})))
        .await
        .unwrap()["account"]
        .clone();
    assert_eq!(a["state"], "active");
    assert_eq!(s.oauth.refreshes(), 1);
    assert_eq!(send(&s.d).await, 200);
    assert_eq!(s.fake.count("at-1"), 1);

    // disable / enable / reset.
    let a = c
        .call("accounts.disable", Some(json!({"label": "alice"})))
        .await
        .unwrap()["account"]
        .clone();
    assert_eq!(a["state"], "disabled");
    assert_eq!(send(&s.d).await, 200);
    assert_eq!(s.fake.count("key-1"), 1, "disabled alice is skipped");
    let stored = s.home.tokens().unwrap();
    assert_eq!(
        stored["providers"]["anthropic:alice"]["disabled"], true,
        "persisted"
    );
    let a = c
        .call("accounts.enable", Some(json!({"label": "alice"})))
        .await
        .unwrap()["account"]
        .clone();
    assert_eq!(a["state"], "active");
    s.fake.script(
        "at-1",
        1,
        neurolink_tests::fake_anthropic::Behavior::error(429, "rate_limit_error", "x")
            .with_header("retry-after", "60"),
    );
    assert_eq!(send(&s.d).await, 200);
    assert_eq!(s.d.account("alice").await.unwrap()["state"], "cooling");
    let a = c
        .call("accounts.reset", Some(json!({"label": "alice"})))
        .await
        .unwrap()["account"]
        .clone();
    assert_eq!(a["state"], "active");
    assert_eq!(a["backoffLevel"], 0);

    // logs.tail: the requests above, newest last, with attempts.
    let tail = c
        .call("logs.tail", Some(json!({"limit": 2})))
        .await
        .unwrap();
    let records = tail["records"].as_array().unwrap();
    assert_eq!(records.len(), 2);
    let last = &records[1];
    assert_eq!(last["account"], "key");
    assert_eq!(last["status"], 200);
    assert_eq!(
        last["attempts"],
        json!([{"account": "alice", "outcome": "rate_limit"}, {"account": "key", "outcome": "success"}])
    );
    assert_eq!(last["path"], "/v1/messages");
    assert_eq!(last["inputTokens"], 25);

    // auth.login.start / complete: the fake login page shows code#state.
    let started = c
        .call(
            "auth.login.start",
            Some(json!({"label": "bob", "method": "oauth"})),
        )
        .await
        .unwrap();
    let shown = http()
        .get(started["authorizeUrl"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let done = c
        .call(
            "auth.login.complete",
            Some(json!({"loginId": started["loginId"], "code": shown})),
        )
        .await
        .unwrap();
    assert_eq!(done["account"]["label"], "bob");
    assert_eq!(done["account"]["state"], "active");

    // config.reload: a valid change applies.
    s.home
        .write_config(&config(&s.fake, &s.oauth, "round-robin"))
        .unwrap();
    let r = c.call("config.reload", None).await.unwrap();
    assert_eq!(r["applied"], true);
    assert_eq!(
        c.call("status", None).await.unwrap()["strategy"],
        "round-robin"
    );

    // shutdown: answered, then the daemon exits and cleans up.
    let r = c.call("shutdown", None).await.unwrap();
    assert_eq!(r["ok"], true);
    let mut d = s.d;
    let exit = tokio::task::spawn_blocking(move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = d.child.try_wait() {
                return Some(st);
            }
            if std::time::Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    })
    .await
    .unwrap();
    assert!(exit.is_some_and(|st| st.success()), "{exit:?}");
    assert!(!s.home.neurolink_home().join("proxy-state.json").exists());
    assert!(!s.home.neurolink_home().join("daemon.sock").exists());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_json_rpc_errors_and_the_daemon_lives_on() {
    let s = setup().await;
    let sock = s.home.neurolink_home().join("daemon.sock");
    let stream = tokio::net::UnixStream::connect(&sock).await.unwrap();
    let (r, mut w) = stream.into_split();
    let mut lines = BufReader::new(r).lines();
    let mut ask = async |line: &str| -> serde_json::Value {
        w.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap()
    };
    let v = ask("{not json").await;
    assert_eq!(v["error"]["code"], codes::PARSE_ERROR);
    let v = ask(r#"{"jsonrpc":"2.0","id":1}"#).await;
    assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
    let v = ask(r#"{"jsonrpc":"1.0","id":2,"method":"hello"}"#).await;
    assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
    let v = ask(r#"{"jsonrpc":"2.0","id":3,"method":"accounts.explode"}"#).await;
    assert_eq!(v["error"]["code"], codes::METHOD_NOT_FOUND);
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("accounts.list"),
        "{v}"
    );
    assert_eq!(v["id"], 3);
    let v =
        ask(r#"{"jsonrpc":"2.0","id":4,"method":"accounts.enable","params":{"lable":"x"}}"#).await;
    assert_eq!(v["error"]["code"], codes::INVALID_PARAMS);
    let v =
        ask(r#"{"jsonrpc":"2.0","id":5,"method":"accounts.reset","params":{"label":"nobody"}}"#)
            .await;
    assert_eq!(v["error"]["code"], codes::NO_SUCH_ACCOUNT);
    let v = ask(r#"{"jsonrpc":"2.0","id":6,"method":"subscribe","params":{"topics":["weather"]}}"#)
        .await;
    assert_eq!(v["error"]["code"], codes::INVALID_PARAMS);
    let v = ask(r#"{"jsonrpc":"2.0","id":7,"method":"accounts.refresh","params":{"label":"key"}}"#)
        .await;
    assert_eq!(v["error"]["code"], codes::FAILED);
    let v = ask(r#"{"jsonrpc":"2.0","id":"s","method":"hello"}"#).await;
    assert_eq!(v["id"], "s");
    assert_eq!(
        v["result"]["protocol"],
        neurolink_shared::ipc::PROTOCOL_VERSION
    );
    // A line over 1 MB is refused and the connection closed (the rest of our write may hit the
    // closed socket); the daemon keeps serving.
    let big = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"hello\",\"params\":{{\"x\":\"{}\"}}}}\n",
        "a".repeat(1_100_000)
    );
    let _ = w.write_all(big.as_bytes()).await;
    let v: serde_json::Value =
        serde_json::from_str(&lines.next_line().await.unwrap().unwrap()).unwrap();
    assert_eq!(v["error"]["code"], codes::INVALID_REQUEST);
    assert_eq!(send(&s.d).await, 200);
    let mut c = client(&s.home).await;
    assert_eq!(
        c.call("hello", None).await.unwrap()["protocol"],
        neurolink_shared::ipc::PROTOCOL_VERSION
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_reload_rejects_an_invalid_file_and_says_so() {
    let s = setup().await;
    let mut sub = client(&s.home).await;
    sub.call("subscribe", Some(json!({"topics": ["daemon"]})))
        .await
        .unwrap();
    let mut c = client(&s.home).await;
    s.home
        .write_config("routing: {strategy: sideways}\n")
        .unwrap();
    let err = c.call("config.reload", None).await.unwrap_err();
    let ClientError::Remote(e) = err else {
        panic!("{err}")
    };
    assert_eq!(e.code, codes::FAILED);
    assert!(
        e.message.contains("routing.strategy") && e.message.contains("old one stays"),
        "{}",
        e.message
    );
    let n = tokio::time::timeout(Duration::from_secs(5), sub.next_event())
        .await
        .unwrap()
        .unwrap();
    assert!(
        matches!(n.params, Event::Daemon { ref kind, .. } if *kind == DaemonEventKind::ConfigInvalid),
        "{:?}",
        n.params
    );
    assert_eq!(
        c.call("status", None).await.unwrap()["strategy"],
        "fill-first",
        "old config kept"
    );
    assert_eq!(send(&s.d).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hear_requests_and_account_changes_and_two_clients_work_at_once() {
    let s = setup().await;
    let mut sub = client(&s.home).await;
    let r = sub
        .call(
            "subscribe",
            Some(json!({"topics": ["requests", "accounts"]})),
        )
        .await
        .unwrap();
    assert_eq!(r["topics"], json!(["requests", "accounts"]));
    let mut other = client(&s.home).await;
    // The second client works while the first is subscribed.
    let (a, b) = tokio::join!(other.call("status", None), send(&s.d));
    assert_eq!(a.unwrap()["accountCount"], 2);
    assert_eq!(b, 200);
    let n = tokio::time::timeout(Duration::from_secs(5), sub.next_event())
        .await
        .unwrap()
        .unwrap();
    let Event::Requests { record } = n.params else {
        panic!("{:?}", n.params)
    };
    assert_eq!(record.account.as_deref(), Some("alice"));
    assert_eq!(record.status, 200);
    other
        .call("accounts.disable", Some(json!({"label": "key"})))
        .await
        .unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), sub.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        n.params,
        Event::account(
            "key",
            AccountChange::Disabled,
            AccountState::Disabled,
            Some("disabled by a user".into())
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subscriber_that_stops_reading_is_dropped_with_a_lagged_notice_and_never_slows_the_proxy()
{
    let s = setup().await;
    let mut slow = client(&s.home).await;
    slow.call("subscribe", Some(json!({"topics": ["requests"]})))
        .await
        .unwrap();
    // 3,000 requests while the subscriber reads nothing: far more than its buffers hold.
    let started = std::time::Instant::now();
    let client = http();
    for chunk in 0..30 {
        let tasks = spawn_messages(&client, &s.d.url, 100);
        for t in tasks {
            assert_eq!(t.await.unwrap().unwrap(), 200, "chunk {chunk}");
        }
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "the proxy kept serving: {:?}",
        started.elapsed()
    );
    // Now it reads: some events, then the lagged notice, then the end.
    let mut saw_lagged = false;
    let mut seen = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, slow.next_event()).await {
            Ok(Ok(n)) => {
                seen += 1;
                if let Event::Daemon { kind, .. } = &n.params {
                    assert_eq!(*kind, DaemonEventKind::Lagged);
                    saw_lagged = true;
                }
            }
            Ok(Err(ClientError::Closed)) => break,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => panic!(
                "no end of the subscription within 20 s ({seen} events read, lagged: {saw_lagged})"
            ),
        }
    }
    assert!(saw_lagged, "a lagged notice before the connection closed");
    let mut c = IpcClient::connect(&s.home.neurolink_home().join("daemon.sock"))
        .await
        .unwrap();
    assert_eq!(
        c.call("hello", None).await.unwrap()["protocol"],
        neurolink_shared::ipc::PROTOCOL_VERSION
    );
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_is_private() {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let s = setup().await;
    let meta = std::fs::metadata(s.home.neurolink_home().join("daemon.sock")).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(
        meta.permissions().mode() & 0o777,
        0o600,
        "only the owner can connect"
    );
}

/// Take events until one matches `want` (others are skipped), within 20 s.
async fn wait_event(
    events: &mut neurolink_shared::ipc::Events,
    what: &str,
    want: impl Fn(&Event) -> bool,
) -> Event {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(e)) if want(&e) => return e,
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the connection closed while waiting for {what}"),
            Err(_) => panic!("no {what} within 20 s"),
        }
    }
}

fn account_event(e: &Event, who: &str, what: AccountChange) -> bool {
    matches!(e, Event::Accounts { label, change, .. } if label == who && *change == what)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_carries_calls_and_events_and_every_account_change_is_announced() {
    use neurolink_shared::ipc::methods::{self, LabelParams, NoParams};
    use neurolink_shared::ipc::Connection;

    let fake = FakeAnthropic::start().await.unwrap();
    let oauth = FakeOAuth::start().await.unwrap();
    oauth.register("rt-0");
    let home = TestHome::new().unwrap();
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() + 5 * 3_600_000)]),
    )
    .unwrap();
    let mut config = config(&fake, &oauth, "fill-first");
    config.push_str("server: {tokenCheckSecs: 1}\n");
    home.write_config(&config).unwrap();
    let d = Daemon::start(&home, &[], &[]).unwrap();

    let (conn, mut events) = Connection::connect(&home.neurolink_home().join("daemon.sock"))
        .await
        .unwrap();
    let hello = conn
        .request::<methods::Hello>(&Default::default())
        .await
        .unwrap();
    assert!(hello.compatible(), "{hello:?}");
    conn.subscribe(None).await.unwrap();

    // A request's event and calls made meanwhile share the connection; nothing is lost.
    assert_eq!(send(&d).await, 200);
    let listed = conn
        .request::<methods::AccountsList>(&NoParams {})
        .await
        .unwrap();
    assert_eq!(listed.accounts.len(), 2);
    let e = wait_event(&mut events, "a request event", |e| {
        matches!(e, Event::Requests { .. })
    })
    .await;
    let Event::Requests { record } = e else {
        unreachable!()
    };
    assert_eq!(record.account.as_deref(), Some("alice"));

    // Cooling, then the end of the cooldown, without polling.
    fake.script(
        "at-0",
        1,
        neurolink_tests::fake_anthropic::Behavior::error(429, "rate_limit_error", "wait")
            .with_header("retry-after", "1"),
    );
    assert_eq!(send(&d).await, 200, "the API key answered");
    let e = wait_event(&mut events, "alice cooling", |e| {
        account_event(e, "alice", AccountChange::Cooling)
    })
    .await;
    assert_eq!(
        e,
        Event::account(
            "alice",
            AccountChange::Cooling,
            AccountState::Cooling,
            Some("rate_limit".into())
        )
    );
    wait_event(&mut events, "alice's cooldown end", |e| {
        account_event(e, "alice", AccountChange::CooldownEnded)
    })
    .await;

    // A login written by another process is announced, and so is its removal.
    home.write(
        "tokens.json",
        &token_store_with(&[
            ("alice", "at-0", "rt-0", now_ms() + 5 * 3_600_000),
            ("bob", "at-b", "rt-b", now_ms() + 5 * 3_600_000),
        ]),
    )
    .unwrap();
    wait_event(&mut events, "bob added", |e| {
        account_event(e, "bob", AccountChange::Added)
    })
    .await;
    // bob expires soon: the background check refreshes him, and says so.
    oauth.register("rt-b");
    home.write(
        "tokens.json",
        &token_store_with(&[
            ("alice", "at-0", "rt-0", now_ms() + 5 * 3_600_000),
            ("bob", "at-b", "rt-b", now_ms() + 10 * 60_000),
        ]),
    )
    .unwrap();
    wait_event(&mut events, "bob refreshed in the background", |e| {
        account_event(e, "bob", AccountChange::Refreshed)
    })
    .await;
    home.write(
        "tokens.json",
        &token_store_with(&[("alice", "at-0", "rt-0", now_ms() + 5 * 3_600_000)]),
    )
    .unwrap();
    wait_event(&mut events, "bob removed", |e| {
        account_event(e, "bob", AccountChange::Removed)
    })
    .await;

    // A typed call's answer: the account after the change.
    let r = conn
        .request::<methods::AccountsDisable>(&LabelParams::new("key"))
        .await
        .unwrap();
    assert_eq!(r.account.state, AccountState::Disabled);
    wait_event(&mut events, "key disabled", |e| {
        account_event(e, "key", AccountChange::Disabled)
    })
    .await;

    // The daemon goes away: calls fail, the event channel ends.
    drop(d);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match tokio::time::timeout_at(deadline, events.recv()).await {
            Ok(Some(_)) => continue,
            Ok(None) => break,
            Err(_) => panic!("the event channel did not end"),
        }
    }
    assert!(conn.request::<methods::Status>(&NoParams {}).await.is_err());
}
