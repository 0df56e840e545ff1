//! HTTP routes: the Anthropic endpoints go through the pool; `/health` and `/status` answer
//! locally; anything else is an Anthropic-shaped 404.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use http::{Method, StatusCode};

use super::{errors, status, App, Runtime, MAX_REQUEST_BODY};
use crate::passthrough::record::Draft;
use crate::passthrough::{self, headers, Inbound, Route};

/// The connection's service: `POST /v1/messages`, nearly every request Claude Code sends, goes
/// straight to its handler; everything else through the [`router`]. The router costs about a
/// dozen allocations per request (route parameters, matched path, boxed futures) that this one
/// route does not need, and the answer is the same either way.
#[derive(Clone)]
pub struct Service {
    app: Arc<App>,
    router: Router,
}

impl Service {
    pub fn new(app: Arc<App>) -> Self {
        Self {
            router: router(app.clone()),
            app,
        }
    }
}

impl hyper::service::Service<http::Request<hyper::body::Incoming>> for Service {
    type Response = Response;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Response, std::convert::Infallible>> + Send>,
    >;

    fn call(&self, req: http::Request<hyper::body::Incoming>) -> Self::Future {
        if req.method() == Method::POST && req.uri().path() == paths::MESSAGES {
            // hyper's body as it is: the router's boxed `Body` is one more allocation.
            let app = self.app.clone();
            return Box::pin(async move { Ok(proxied(app, req, Route::Messages).await) });
        }
        // The router is always ready (`poll_ready` is a no-op), so `call` alone is enough.
        let mut router = self.router.clone();
        Box::pin(tower_service::Service::call(
            &mut router,
            req.map(Body::new),
        ))
    }
}

/// The proxy's own paths: the router's, and the ones records name without a copy.
pub mod paths {
    pub const MESSAGES: &str = "/v1/messages";
    pub const COUNT_TOKENS: &str = "/v1/messages/count_tokens";
    pub const CHAT_COMPLETIONS: &str = "/v1/chat/completions";
    pub const MODELS: &str = "/v1/models";
    pub const HEALTH: &str = "/health";
    pub const STATUS: &str = "/status";
    /// Every fixed path above (`/v1/models/{id}` is not one).
    pub const ALL: [&str; 6] = [
        MESSAGES,
        COUNT_TOKENS,
        CHAT_COMPLETIONS,
        MODELS,
        HEALTH,
        STATUS,
    ];
}

pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route(paths::MESSAGES, post(messages))
        .route(paths::COUNT_TOKENS, post(count_tokens))
        .route(paths::CHAT_COMPLETIONS, post(super::chat::completions))
        .route(paths::MODELS, get(models))
        .route("/v1/models/{id}", get(models))
        .route(paths::HEALTH, get(health))
        .route(paths::STATUS, get(status_route))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(app)
}

async fn messages(State(app): State<Arc<App>>, req: Request) -> Response {
    proxied(app, req, Route::Messages).await
}

async fn count_tokens(State(app): State<Arc<App>>, req: Request) -> Response {
    proxied(app, req, Route::CountTokens).await
}

async fn models(State(app): State<Arc<App>>, req: Request) -> Response {
    // OpenAI clients send no `anthropic-version`: they get OpenAI's shape.
    if !req.headers().contains_key("anthropic-version") && req.uri().path() == "/v1/models" {
        return super::chat::models(app, req).await;
    }
    proxied(app, req, Route::Models).await
}

async fn proxied<B: ClientBody>(app: Arc<App>, req: http::Request<B>, route: Route) -> Response {
    match read(&app, req).await {
        Ok(r) => {
            let inbound = Inbound {
                route,
                method: r.parts.method,
                path_and_query: r.path_and_query,
                headers: r.parts.headers,
                body: r.body,
                model: r.model,
                api_keys_only: false,
            };
            passthrough::forward(app, r.rt, r.draft, inbound).await
        }
        Err(response) => response,
    }
}

/// A client request read whole and checked, ready to be served.
pub struct Received {
    pub draft: Draft,
    pub rt: Arc<Runtime>,
    pub parts: http::request::Parts,
    pub path_and_query: http::uri::PathAndQuery,
    pub body: bytes::Bytes,
    pub model: Option<Arc<str>>,
}

/// Check the client's key, read the body (bounded in size and time) and find its `model`. A
/// request refused here is answered (and logged) at once.
pub async fn read<B: ClientBody>(
    app: &Arc<App>,
    req: http::Request<B>,
) -> Result<Received, Response> {
    // One id per request, from here on: the request-log line and any answer of the proxy's own
    // carry the same one. Requests refused here get a log line too (who knocked with the wrong
    // key, what was too big).
    let mut draft = Draft::new(app, req.method().as_str(), req.uri().path(), None);
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        let response = errors::anthropic(
            draft.request_id(),
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            "invalid_request_error",
            &format!(
                "the request headers are {} KB; at most {} KB are accepted",
                header_bytes / 1024,
                MAX_HEADER_BYTES / 1024
            ),
        );
        return Err(draft.finish(app, response, None, Some("headers_too_large")));
    }
    let rt = app.runtime();
    if let Some(denied) = check_client_key(&rt, draft.request_id(), req.headers()) {
        return Err(draft.finish(app, denied, None, Some("proxy_auth")));
    }
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_REQUEST_BODY as u64) {
        // Said up front: answer before the client uploads any of it.
        let response = too_large(draft.request_id());
        return Err(draft.finish(app, response, None, Some("request_too_large")));
    }
    let (parts, body) = req.into_parts();
    let read = tokio::time::timeout(
        rt.client_body_timeout,
        collect(body, MAX_REQUEST_BODY, declared),
    )
    .await;
    let Ok(read) = read else {
        let response = errors::anthropic(
            draft.request_id(),
            StatusCode::REQUEST_TIMEOUT,
            "timeout_error",
            &format!(
                "the request body did not arrive within {} s (server.clientBodyTimeoutSecs)",
                rt.client_body_timeout.as_secs()
            ),
        );
        return Err(draft.finish(app, response, None, Some("client_body_timeout")));
    };
    let body = match read {
        Ok(b) => b,
        Err(e) => {
            let (response, class) = match e {
                Unread::TooLarge => (too_large(draft.request_id()), "request_too_large"),
                Unread::Failed(e) => (
                    errors::anthropic(
                        draft.request_id(),
                        StatusCode::BAD_REQUEST,
                        "invalid_request_error",
                        &format!("could not read the request body: {e}"),
                    ),
                    "unreadable_body",
                ),
            };
            return Err(draft.finish(app, response, None, Some(class)));
        }
    };
    let model = if parts.method == Method::POST {
        match passthrough::peek::model(&body) {
            Ok(m) => m,
            Err(msg) => {
                let response = errors::anthropic(
                    draft.request_id(),
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    &msg,
                );
                return Err(draft.finish(app, response, None, Some("invalid_json")));
            }
        }
    } else {
        None
    };
    draft.set_model(model.as_ref());
    // Shared with the request's URI, not copied; an origin-form request always has one.
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| http::uri::PathAndQuery::from_static("/"));
    draft.debug = app.logs.debug.then(|| {
        Arc::new(crate::passthrough::record::DebugRequest {
            headers: parts.headers.clone(),
            body: body.clone(),
        })
    });
    Ok(Received {
        draft,
        rt,
        parts,
        path_and_query,
        body,
        model,
    })
}

/// A client request's body: hyper's own on the `POST /v1/messages` path, the router's boxed one
/// elsewhere.
pub trait ClientBody:
    http_body::Body<Data = bytes::Bytes, Error: std::fmt::Display> + Send + 'static
{
}

impl<B> ClientBody for B where
    B: http_body::Body<Data = bytes::Bytes, Error: std::fmt::Display> + Send + 'static
{
}

/// Why a request body was not read whole.
enum Unread {
    TooLarge,
    Failed(String),
}

/// The whole body, at most `limit` bytes. A body that arrives in one frame (nearly all: hyper
/// hands over what one read brought) is kept as it is, without a copy or a list of frames;
/// more frames are joined into one buffer sized from the declared length.
async fn collect<B: ClientBody>(
    body: B,
    limit: usize,
    declared: Option<u64>,
) -> Result<bytes::Bytes, Unread> {
    use http_body_util::BodyExt;
    let mut body = std::pin::pin!(body);
    let mut first: Option<bytes::Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    let mut len = 0usize;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| Unread::Failed(e.to_string()))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        len += data.len();
        if len > limit {
            return Err(Unread::TooLarge);
        }
        if let Some(buf) = &mut joined {
            buf.extend_from_slice(&data);
        } else if let Some(one) = first.take() {
            let hint = declared
                .map_or(0, |n| usize::try_from(n).unwrap_or(0))
                .min(limit);
            let mut buf = bytes::BytesMut::with_capacity(hint.max(len));
            buf.extend_from_slice(&one);
            buf.extend_from_slice(&data);
            joined = Some(buf);
        } else {
            first = Some(data);
        }
    }
    Ok(joined.map_or_else(|| first.unwrap_or_default(), bytes::BytesMut::freeze))
}

/// Request headers larger than this get an Anthropic-shaped 431 (Claude Code sends a few KB;
/// hyper itself refuses, with a bare 431, past about 400 KB).
const MAX_HEADER_BYTES: usize = 64 * 1024;

fn too_large(request_id: &str) -> Response {
    errors::anthropic(
        request_id,
        StatusCode::PAYLOAD_TOO_LARGE,
        "request_too_large",
        &format!(
            "request body is larger than {} MB",
            MAX_REQUEST_BODY / (1024 * 1024)
        ),
    )
}

/// With `server.authKey` set, clients must present it; otherwise anything is accepted (loopback).
pub(crate) fn check_client_key(
    rt: &Runtime,
    request_id: &str,
    h: &http::HeaderMap,
) -> Option<Response> {
    let expected = rt.auth_key.as_ref()?;
    match headers::client_key(h) {
        Some(k) if constant_time_eq(k.as_bytes(), expected.expose().as_bytes()) => None,
        _ => Some(errors::anthropic(
            request_id,
            StatusCode::UNAUTHORIZED,
            "authentication_error",
            "this proxy requires its auth key (server.authKey): send it as x-api-key or Authorization: Bearer",
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// With `server.authKey` set and not presented, only `{"status":"ok"}`: enough for a health
/// check, nothing about the daemon.
async fn health(State(app): State<Arc<App>>, headers: http::HeaderMap) -> Json<serde_json::Value> {
    let rt = app.runtime();
    if check_client_key(&rt, "", &headers).is_some() {
        return Json(serde_json::json!({"status": "ok"}));
    }
    Json(status::health(&app))
}

/// Accounts (labels are often e-mail addresses), errors and cooldowns: behind `server.authKey`
/// when one is set.
async fn status_route(State(app): State<Arc<App>>, headers: http::HeaderMap) -> Response {
    let rt = app.runtime();
    if let Some(denied) = check_client_key(&rt, &errors::request_id(), &headers) {
        return denied;
    }
    Json(status::status(&app)).into_response()
}

/// `GET /v1/messages` and the like: Anthropic's error shape, naming the method to use.
async fn method_not_allowed(req: Request<Body>) -> Response {
    let path = req.uri().path();
    let allowed = if matches!(path, "/health" | "/status") || path.starts_with("/v1/models") {
        "GET"
    } else {
        "POST"
    };
    let mut r = errors::anthropic(
        &errors::request_id(),
        StatusCode::METHOD_NOT_ALLOWED,
        "invalid_request_error",
        &format!("{} {path} is not served; use {allowed}", req.method()),
    );
    r.headers_mut()
        .insert(http::header::ALLOW, http::HeaderValue::from_static(allowed));
    r
}

async fn not_found(req: Request<Body>) -> Response {
    errors::anthropic(
        &errors::request_id(),
        StatusCode::NOT_FOUND,
        "not_found_error",
        &format!(
            "{} {} is not served by this proxy",
            req.method(),
            req.uri().path()
        ),
    )
    .into_response()
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http_body::Frame;
    use http_body_util::StreamBody;

    use super::*;

    fn body(frames: Vec<Result<Frame<Bytes>, std::io::Error>>) -> impl ClientBody {
        StreamBody::new(futures_util::stream::iter(frames))
    }

    fn data(b: &'static [u8]) -> Result<Frame<Bytes>, std::io::Error> {
        Ok(Frame::data(Bytes::from_static(b)))
    }

    #[tokio::test]
    async fn one_frame_is_kept_as_it_is() {
        let one = Bytes::from(b"{\"model\":\"m\"}".to_vec());
        let at = one.as_ptr();
        let got = collect(body(vec![Ok(Frame::data(one))]), 64, None).await;
        let got = got.unwrap_or_else(|_| panic!("read"));
        assert_eq!(got, Bytes::from_static(b"{\"model\":\"m\"}"));
        assert_eq!(got.as_ptr(), at, "not copied");
    }

    #[tokio::test]
    async fn frames_are_joined_and_trailers_skipped() {
        let frames = || {
            vec![
                data(b"{\"a\":"),
                data(b""),
                data(b"1,\"b\":"),
                data(b"2}"),
                Ok(Frame::trailers(http::HeaderMap::new())),
            ]
        };
        // The declared length only sizes the buffer: wrong or absent, the bytes are the same.
        for declared in [None, Some(13), Some(1), Some(u64::MAX)] {
            let got = collect(body(frames()), 64, declared).await;
            let got = got.unwrap_or_else(|_| panic!("read"));
            assert_eq!(
                got,
                Bytes::from_static(b"{\"a\":1,\"b\":2}"),
                "{declared:?}"
            );
        }
        let empty = collect(body(Vec::new()), 64, None).await;
        assert!(empty.is_ok_and(|b| b.is_empty()));
    }

    #[tokio::test]
    async fn past_the_limit_or_broken_it_fails_saying_which() {
        let over = collect(body(vec![data(b"12345"), data(b"6")]), 5, None).await;
        assert!(matches!(over, Err(Unread::TooLarge)));
        let exact = collect(body(vec![data(b"123"), data(b"45")]), 5, None).await;
        assert!(exact.is_ok_and(|b| b == Bytes::from_static(b"12345")));
        let broken = vec![data(b"{"), Err(std::io::Error::other("connection reset"))];
        match collect(body(broken), 64, None).await {
            Err(Unread::Failed(e)) => assert_eq!(e, "connection reset"),
            _ => panic!("a broken body fails"),
        }
    }
}
