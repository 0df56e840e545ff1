//! The record of one client request, built while it is served and finished when its answer is
//! complete: by [`super::forward`] for answers given at once, by the [`super::relay::Relay`] for
//! streamed ones (whose tokens are known only at the end).

use std::sync::Arc;
use std::time::Instant;

use axum::response::Response;
use neurolink_shared::ipc::{AttemptRecord, Label, Name, RequestRecord};

use crate::clock::rfc3339;
use crate::pool::Usage;
use crate::server::{errors, App};

/// The client's side of an exchange, kept only with `--debug`.
#[derive(Debug)]
pub struct DebugRequest {
    pub headers: http::HeaderMap,
    pub body: bytes::Bytes,
}

/// Bodies in the debug log stop here.
const MAX_DEBUG_BODY: usize = 1024 * 1024;

/// What names a request in its record and never changes once it started. Shared: an attempt
/// that commits takes its own copy of the draft (its relay finishes the record), and copying
/// these strings for every answer cost more than the rest of the copy.
#[derive(Debug, Clone)]
struct Head {
    time: String,
    request_id: String,
    method: Name,
    path: Name,
}

#[derive(Debug, Clone)]
pub struct Draft {
    pub debug: Option<Arc<DebugRequest>>,
    started: Instant,
    head: Arc<Head>,
    model: Option<Arc<str>>,
    pub attempts: Vec<AttemptRecord>,
    /// The provider that answered, when it was not Anthropic.
    pub fallback_provider: Option<String>,
}

impl Draft {
    pub fn new(app: &App, method: &str, path_and_query: &str, model: Option<&str>) -> Self {
        Self {
            debug: None,
            started: Instant::now(),
            head: Arc::new(Head {
                time: rfc3339(app.now_ms()),
                request_id: errors::request_id(),
                method: method_name(method),
                path: path_name(path_and_query.split('?').next().unwrap_or_default()),
            }),
            model: model.map(Arc::from),
            attempts: Vec::new(),
            fallback_provider: None,
        }
    }

    /// The id of the request (`req_nl_...`), also sent to the client with errors.
    pub fn request_id(&self) -> &str {
        &self.head.request_id
    }

    /// The model, once the body was read.
    pub fn set_model(&mut self, model: Option<&Arc<str>>) {
        self.model = model.cloned();
    }

    pub fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// The finished record.
    pub fn into_record(
        self,
        status: u16,
        stream: bool,
        account: Option<Label>,
        ttfb_ms: Option<u64>,
        usage: Usage,
        error_class: Option<String>,
    ) -> RequestRecord {
        let total_ms = self.elapsed_ms();
        // By the end of an answer its relay's copy is usually the only one left.
        let head = Arc::try_unwrap(self.head).unwrap_or_else(|shared| (*shared).clone());
        RequestRecord {
            time: head.time,
            request_id: head.request_id,
            method: head.method,
            path: head.path,
            model: self.model,
            stream,
            account,
            status,
            attempts: self.attempts,
            fallback_provider: self.fallback_provider,
            ttfb_ms,
            total_ms,
            input_tokens: usage.input_tokens,
            output_tokens: usage.output_tokens,
            error_class,
        }
    }

    /// With `--debug`: the exchange, every secret masked, to `proxy-debug-*.jsonl`.
    pub fn log_debug(&self, app: &App, status: u16, response_headers: &http::HeaderMap) {
        let Some(d) = &self.debug else { return };
        let r = app.redactor();
        let body = &d.body[..d.body.len().min(MAX_DEBUG_BODY)];
        let line = serde_json::json!({
            "timestamp": self.head.time,
            "type": "exchange",
            "requestId": self.head.request_id,
            "request": {
                "method": self.head.method,
                "path": self.head.path,
                "headers": r.headers(&d.headers),
                "body": r.text(&String::from_utf8_lossy(body)),
                "bodyTruncated": d.body.len() > MAX_DEBUG_BODY,
            },
            "response": {"status": status, "headers": r.headers(response_headers)},
        });
        app.logs.debug(&self.head.time, line);
    }

    /// Record an answer given at once (not streamed through a relay) and pass it on.
    pub fn finish(
        self,
        app: &App,
        response: Response,
        account: Option<Label>,
        error_class: Option<&str>,
    ) -> Response {
        let status = response.status().as_u16();
        self.log_debug(app, status, response.headers());
        let ttfb = Some(self.elapsed_ms());
        app.record(self.into_record(
            status,
            false,
            account,
            ttfb,
            Usage::default(),
            error_class.map(str::to_string),
        ));
        response
    }
}

/// The method as records name it: the standard ones without a copy.
fn method_name(method: &str) -> Name {
    const STANDARD: [&str; 7] = ["POST", "GET", "HEAD", "OPTIONS", "PUT", "DELETE", "PATCH"];
    match STANDARD.iter().find(|m| **m == method) {
        Some(m) => Name::Borrowed(m),
        None => Name::Owned(method.to_string()),
    }
}

/// The path as records name it: the proxy's own routes without a copy.
fn path_name(path: &str) -> Name {
    match crate::server::routes::paths::ALL
        .iter()
        .find(|r| **r == path)
    {
        Some(r) => Name::Borrowed(r),
        None => Name::Owned(path.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::{method_name, path_name, Name};

    #[test]
    fn known_methods_and_routes_are_named_without_a_copy() {
        assert!(matches!(method_name("POST"), Name::Borrowed("POST")));
        assert!(matches!(
            path_name("/v1/messages"),
            Name::Borrowed("/v1/messages")
        ));
        assert!(matches!(
            path_name("/v1/messages/count_tokens"),
            Name::Borrowed("/v1/messages/count_tokens")
        ));
        // Anything else is kept as it came.
        assert_eq!(method_name("PROPFIND"), "PROPFIND");
        assert!(matches!(method_name("post"), Name::Owned(_)));
        assert_eq!(path_name("/v1/other"), "/v1/other");
        assert!(matches!(path_name("/v1/messages/"), Name::Owned(_)));
    }
}
