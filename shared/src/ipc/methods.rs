//! Every control-socket method with its params and result types, in one table.
//!
//! A client calls a method by its marker type (`client.request::<methods::AccountsList>(&NoParams)`)
//! and gets its typed result back; the daemon parses a request into a [`Call`] and answers each
//! variant with that method's result type. Adding a method is one line of the table below.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::protocol::{
    codes, AccountView, CountersView, RequestRecord, RpcError, Topic, PROTOCOL_VERSION,
};

/// A control-socket method: its wire name and the shapes of its params and result.
pub trait Method {
    const NAME: &'static str;
    type Params: Serialize + DeserializeOwned;
    type Result: Serialize + DeserializeOwned;
}

macro_rules! methods {
    ($( $(#[$doc:meta])* $variant:ident = $name:literal, $params:ty => $result:ty; )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug, Clone, Copy)]
            pub struct $variant;
            impl Method for $variant {
                const NAME: &'static str = $name;
                type Params = $params;
                type Result = $result;
            }
        )*

        /// A parsed request: which method, with its params.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Call {
            $( $variant($params), )*
        }

        impl Call {
            /// Parse a request's method and params (absent or `null` params are `{}`).
            pub fn parse(method: &str, params: Option<Value>) -> Result<Self, RpcError> {
                let params = match params {
                    None | Some(Value::Null) => Value::Object(Default::default()),
                    Some(p) => p,
                };
                match method {
                    $( $name => parse_params::<$params>(method, params).map(Call::$variant), )*
                    other => Err(RpcError::new(
                        codes::METHOD_NOT_FOUND,
                        format!("unknown method `{other}`; methods: {}", METHODS.join(", ")),
                    )),
                }
            }

            /// The method's wire name.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Call::$variant(_) => $name, )*
                }
            }

            /// The params as sent on the wire.
            pub fn params(&self) -> Value {
                match self {
                    $( Call::$variant(p) => serde_json::to_value(p).unwrap_or(Value::Null), )*
                }
            }
        }

        /// Every method the daemon answers.
        pub const METHODS: &[&str] = &[$($name),*];
    };
}

methods! {
    /// Who is there: protocol and daemon version.
    Hello = "hello", HelloParams => HelloResult;
    /// The daemon without its accounts.
    Status = "status", NoParams => StatusView;
    AccountsList = "accounts.list", NoParams => AccountsResult;
    /// Force a token refresh (OAuth accounts).
    AccountsRefresh = "accounts.refresh", LabelParams => AccountResult;
    /// Enable an account (a stored login also in `tokens.json`).
    AccountsEnable = "accounts.enable", LabelParams => AccountResult;
    /// Disable an account (a stored login also in `tokens.json`).
    AccountsDisable = "accounts.disable", LabelParams => AccountResult;
    /// Clear an account's cooldown and backoff.
    AccountsReset = "accounts.reset", LabelParams => AccountResult;
    /// Start a browser login; open the URL, then complete with the code the page shows.
    AuthLoginStart = "auth.login.start", LoginStartParams => LoginStarted;
    AuthLoginComplete = "auth.login.complete", LoginCompleteParams => AccountResult;
    /// The last finished requests, oldest first.
    LogsTail = "logs.tail", TailParams => LogsResult;
    /// Re-read the config file and put it in force.
    ConfigReload = "config.reload", NoParams => ReloadResult;
    /// Receive events on this connection from now on.
    Subscribe = "subscribe", SubscribeParams => SubscribeResult;
    /// Stop the daemon (in-flight answers get up to 30 s).
    Shutdown = "shutdown", NoParams => ShutdownResult;
}

fn parse_params<T: DeserializeOwned>(method: &str, params: Value) -> Result<T, RpcError> {
    let fail = |problem: String| {
        RpcError::new(
            codes::INVALID_PARAMS,
            format!(
                "invalid params for `{method}`: {problem}; it takes {}",
                params_shape(method)
            ),
        )
    };
    // By name only: serde would also read a struct from a list, by position.
    if !params.is_object() {
        return Err(fail("params must be a JSON object".into()));
    }
    serde_json::from_value(params).map_err(|e| fail(in_plain_words(&e.to_string())))
}

/// What each method's params look like, in the terms of the wire (`?` marks an optional one).
pub fn params_shape(method: &str) -> &'static str {
    match method {
        "hello" => r#"{"client"?: string}"#,
        "accounts.refresh" | "accounts.enable" | "accounts.disable" | "accounts.reset" => {
            r#"{"label": string}, the account's label as `accounts.list` shows it"#
        }
        "auth.login.start" => r#"{"label"?: string, "method"?: "oauth" | "create-api-key"}"#,
        "auth.login.complete" => {
            r#"{"loginId": string from auth.login.start, "code": string the login page showed}"#
        }
        "logs.tail" => r#"{"limit"?: a whole number}"#,
        "subscribe" => r#"{"topics"?: ["accounts" | "requests" | "daemon", ...]}"#,
        _ => "no params ({} or none)",
    }
}

/// serde's message about a params object, with Rust's type names put in JSON's words.
fn in_plain_words(message: &str) -> String {
    let mut m = message.to_string();
    for (rust, json) in [
        ("expected usize", "expected a whole number"),
        ("expected u64", "expected a whole number"),
        ("expected u32", "expected a whole number"),
        ("expected a sequence", "expected a list"),
        ("expected a map", "expected an object"),
        ("invalid type: map", "invalid type: object"),
        ("invalid type: sequence", "invalid type: list"),
        ("invalid type: ", "got "),
        ("integer `", "the number `"),
        ("unknown field", "unknown param"),
        ("missing field", "missing param"),
        ("unknown variant", "unknown value"),
    ] {
        m = m.replace(rust, json);
    }
    if let Some(i) = m.find("expected struct ") {
        m.replace_range(i.., "expected an object");
    }
    m
}

/// Params of a method that takes none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoParams {}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelloParams {
    /// The caller's name, for the daemon's log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HelloResult {
    pub protocol: u32,
    pub version: String,
    pub pid: u32,
}

impl HelloResult {
    /// Whether the daemon speaks this client's protocol.
    pub fn compatible(&self) -> bool {
        self.protocol == PROTOCOL_VERSION
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LabelParams {
    pub label: String,
}

impl LabelParams {
    pub fn new(label: impl Into<String>) -> Self {
        Self {
            label: label.into(),
        }
    }
}

/// How a browser login signs in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LoginMethod {
    /// A Claude Pro/Max subscription (OAuth tokens).
    Oauth,
    /// Sign in to the Console and mint an API key.
    CreateApiKey,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginStartParams {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// `oauth` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub method: Option<LoginMethod>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginStarted {
    pub authorize_url: String,
    pub login_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct LoginCompleteParams {
    pub login_id: String,
    /// What the login page showed (`code#state`).
    pub code: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TailParams {
    /// 50 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubscribeParams {
    /// Every topic when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topics: Option<Vec<Topic>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeResult {
    pub topics: Vec<Topic>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountsResult {
    pub accounts: Vec<AccountView>,
}

/// One account, after the change a method made.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountResult {
    pub account: AccountView,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogsResult {
    pub records: Vec<RequestRecord>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReloadResult {
    pub applied: bool,
    /// The keys whose values changed (`server.authKey`, `routing.strategy`...), never values.
    pub changed: Vec<String>,
    pub warnings: Vec<String>,
    /// What needs a restart to take effect.
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ShutdownResult {
    pub ok: bool,
}

/// The daemon as `status` (and the top of `/status`) shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StatusView {
    /// `running`.
    pub status: String,
    pub version: String,
    pub pid: u32,
    pub host: String,
    pub port: u16,
    /// `fill-first` or `round-robin`.
    pub strategy: String,
    /// RFC 3339.
    pub started_at: String,
    /// Seconds.
    pub uptime: f64,
    /// `routing.fallback-chain` as configured.
    pub fallback_chain: Vec<Value>,
    pub account_count: usize,
    pub usable_accounts: usize,
    /// Every account's counters added up.
    pub totals: CountersView,
    /// Each provider link used since the start (fallback chain and model mappings).
    #[serde(default)]
    pub providers: Vec<ProviderView>,
}

/// One provider link (`provider/model`) and how it has served.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProviderView {
    /// `provider/model`.
    pub link: String,
    pub requests: u64,
    pub successes: u64,
    pub failures: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// RFC 3339: the provider asked to wait until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cooling_until: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absent_null_and_empty_params_are_the_same() {
        for p in [None, Some(Value::Null), Some(serde_json::json!({}))] {
            assert_eq!(
                Call::parse("accounts.list", p),
                Ok(Call::AccountsList(NoParams {}))
            );
        }
    }

    #[test]
    fn params_errors_name_the_method_and_the_field() {
        let e = Call::parse("accounts.reset", Some(serde_json::json!({"lable": "x"})))
            .expect_err("unknown field");
        assert_eq!(e.code, codes::INVALID_PARAMS);
        assert!(e.message.contains("accounts.reset"), "{}", e.message);
        assert!(e.message.contains("lable"), "{}", e.message);
        let e = Call::parse("subscribe", Some(serde_json::json!({"topics": ["nope"]})))
            .expect_err("unknown topic");
        assert!(e.message.contains("nope"), "{}", e.message);
        let e = Call::parse("nope", None).expect_err("unknown method");
        assert_eq!(e.code, codes::METHOD_NOT_FOUND);
    }

    /// The words are the wire's, never Rust's: no `usize`, no `struct`, no `map`.
    #[test]
    fn params_errors_speak_of_params_not_rust_types() {
        let cases = [
            (
                "logs.tail",
                serde_json::json!({"limit": "x"}),
                "expected a whole number",
            ),
            (
                "logs.tail",
                serde_json::json!({"limt": 3}),
                "unknown param `limt`",
            ),
            (
                "logs.tail",
                serde_json::json!([1]),
                "params must be a JSON object",
            ),
            (
                "accounts.reset",
                serde_json::json!({}),
                "missing param `label`",
            ),
            (
                "accounts.reset",
                serde_json::json!({"label": 5}),
                "got the number `5`",
            ),
            (
                "subscribe",
                serde_json::json!({"topics": "requests"}),
                "expected a list",
            ),
            (
                "auth.login.start",
                serde_json::json!({"method": "x"}),
                "unknown value `x`",
            ),
        ];
        for (method, params, says) in cases {
            let e = Call::parse(method, Some(params)).expect_err(method);
            assert!(e.message.contains(says), "{method}: {}", e.message);
            assert!(e.message.contains(params_shape(method)), "{}", e.message);
            for rust in ["usize", "struct ", "a map", "sequence"] {
                assert!(!e.message.contains(rust), "{method}: {}", e.message);
            }
        }
    }

    #[test]
    fn a_call_round_trips_through_its_wire_form() {
        let calls = [
            Call::Hello(HelloParams {
                client: Some("me".into()),
            }),
            Call::AccountsDisable(LabelParams::new("work")),
            Call::AuthLoginStart(LoginStartParams {
                label: None,
                method: Some(LoginMethod::CreateApiKey),
            }),
            Call::Subscribe(SubscribeParams {
                topics: Some(vec![Topic::Requests]),
            }),
            Call::LogsTail(TailParams { limit: Some(5) }),
        ];
        for c in calls {
            assert_eq!(Call::parse(c.name(), Some(c.params())), Ok(c.clone()));
        }
        assert_eq!(METHODS.len(), 13);
    }
}

/// The example session of `docs/ipc.md` is what the types read and write.
#[cfg(test)]
mod documented_session {
    use super::*;
    use crate::ipc::{Notification, Response};

    const DOC: &str = include_str!("../../../docs/ipc.md");

    #[test]
    fn every_line_of_the_example_session_parses_into_the_types() {
        let session = DOC
            .split("## Example session")
            .nth(1)
            .and_then(|s| s.split("```").nth(1))
            .expect("docs/ipc.md has an example session in a code block");
        let mut methods: std::collections::HashMap<u64, String> = Default::default();
        let (mut calls, mut answers, mut events) = (0, 0, 0);
        for line in session.lines().filter(|l| l.starts_with('{')) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{line}: {e}"));
            if v["method"] == "event" {
                let n: Notification =
                    serde_json::from_value(v).unwrap_or_else(|e| panic!("{line}: {e}"));
                assert_eq!(serde_json::to_value(&n.params).ok(), {
                    let v: Value = serde_json::from_str(line).ok().unwrap_or_default();
                    Some(v["params"].clone())
                });
                events += 1;
            } else if let Some(method) = v["method"].as_str() {
                let id = v["id"].as_u64().unwrap_or_default();
                methods.insert(id, method.to_string());
                // The documented mistakes are errors, the rest calls.
                let parsed = Call::parse(method, v.get("params").cloned());
                if method != "nope" && !line.contains("lable") {
                    parsed.unwrap_or_else(|e| panic!("{line}: {}", e.message));
                    calls += 1;
                }
            } else {
                let r: Response =
                    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{line}: {e}"));
                let id = r.id.as_u64().unwrap_or_default();
                let method = methods.get(&id).map(String::as_str).unwrap_or_default();
                if let Some(result) = r.result {
                    check_result(method, result, line);
                    answers += 1;
                }
            }
        }
        assert_eq!((calls, answers, events), (3, 3, 3));
    }

    fn check_result(method: &str, result: Value, line: &str) {
        fn back<T: Serialize + DeserializeOwned>(v: Value, line: &str) {
            let t: T = serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("{line}: {e}"));
            // Nothing documented is lost on the way through the type.
            let again = serde_json::to_value(&t).unwrap_or_default();
            for (k, x) in v.as_object().into_iter().flatten() {
                assert_eq!(again.get(k), Some(x), "{k} in {line}");
            }
        }
        match method {
            "hello" => back::<<Hello as Method>::Result>(result, line),
            "accounts.reset" => back::<<AccountsReset as Method>::Result>(result, line),
            "subscribe" => back::<<Subscribe as Method>::Result>(result, line),
            other => panic!("the example answers `{other}`: add it here"),
        }
    }
}

/// Whatever a client sends as method and params, parsing answers a call or a JSON-RPC error,
/// never a panic.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            "[ -~]{0,10}".prop_map(Value::from),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                proptest::collection::vec(
                    ("label|limit|topics|client|code|loginId|[a-z]{1,5}", inner),
                    0..4
                )
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
            ]
        })
    }

    proptest! {
        #[test]
        fn parsing_never_panics(
            method in prop_oneof![proptest::sample::select(METHODS.to_vec()).prop_map(str::to_string), "[a-z.]{0,20}"],
            params in proptest::option::of(json()),
        ) {
            match Call::parse(&method, params) {
                Ok(call) => prop_assert_eq!(call.name(), method.as_str()),
                Err(e) => prop_assert!(
                    e.code == codes::INVALID_PARAMS || e.code == codes::METHOD_NOT_FOUND,
                    "{e:?}"
                ),
            }
        }
    }
}
