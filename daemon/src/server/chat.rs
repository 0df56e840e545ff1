//! The OpenAI-compatible endpoint: `POST /v1/chat/completions` and, for clients that send no
//! `anthropic-version`, `GET /v1/models` in OpenAI's shape.
//!
//! A Chat Completions request is translated to a Claude request ([`crate::translate::chat`]) and
//! served exactly like one from Claude Code: the routing plan, the pool (API-key accounts only:
//! Anthropic allows subscription logins for Claude Code alone), the fallback chain. The Claude
//! answer that comes back (whole, streamed, or an error) is translated to OpenAI's shape on the
//! way out, a stream as it arrives.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde_json::{json, Value};

use super::{errors, routes, App};
use crate::passthrough::{self, Inbound, Route};
use crate::translate::chat;

/// Answers larger than this are not translated (a Claude JSON answer is far smaller).
const MAX_ANSWER: usize = 64 * 1024 * 1024;

/// `POST /v1/chat/completions`.
pub async fn completions(State(app): State<Arc<App>>, req: Request) -> Response {
    let r = match routes::read(&app, req).await {
        Ok(r) => r,
        Err(response) => return to_openai_error(response).await,
    };
    let openai: Value = match serde_json::from_slice(&r.body) {
        Ok(v) => v,
        Err(e) => return invalid(&app, r.draft, format!("the body is not JSON: {e}")).await,
    };
    let claude = match chat::request(&openai) {
        Ok(c) => c,
        Err(msg) => return invalid(&app, r.draft, msg).await,
    };
    let model = claude["model"].as_str().unwrap_or_default().to_string();
    let stream = claude["stream"] == true;
    let include_usage = openai["stream_options"]["include_usage"] == true;
    let body = match serde_json::to_vec(&claude) {
        Ok(b) => Bytes::from(b),
        Err(e) => return invalid(&app, r.draft, e.to_string()).await,
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let inbound = Inbound {
        route: Route::Messages,
        method: http::Method::POST,
        path_and_query: http::uri::PathAndQuery::from_static("/v1/messages"),
        headers,
        body,
        model: Some(model.as_str().into()),
        api_keys_only: true,
    };
    let created = app.now_ms() / 1000;
    let response = passthrough::forward(app, r.rt, r.draft, inbound).await;
    translate_answer(response, &model, created, stream, include_usage).await
}

async fn invalid(app: &App, draft: crate::passthrough::record::Draft, msg: String) -> Response {
    let response = errors::anthropic(
        draft.request_id(),
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        &msg,
    );
    to_openai_error(draft.finish(app, response, None, Some("invalid_request"))).await
}

/// The proxy's answer in OpenAI's shape.
async fn translate_answer(
    response: Response,
    model: &str,
    created: u64,
    stream: bool,
    include_usage: bool,
) -> Response {
    if !response.status().is_success() {
        return to_openai_error(response).await;
    }
    let sse = response
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    let (mut parts, body) = response.into_parts();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    if stream && sse {
        let conv = chat::StreamConverter::new(model, created, include_usage);
        let upstream = body.into_data_stream();
        let out = futures_util::stream::unfold(
            (upstream, conv, false),
            |(mut upstream, mut conv, done)| async move {
                if done {
                    return None;
                }
                loop {
                    match upstream.next().await {
                        Some(Ok(chunk)) => {
                            let text = conv.feed(&chunk);
                            if !text.is_empty() {
                                return Some((
                                    Ok::<Bytes, std::io::Error>(Bytes::from(text)),
                                    (upstream, conv, false),
                                ));
                            }
                        }
                        Some(Err(e)) => {
                            tracing::debug!("answer body failed: {e}");
                            let text = conv.end();
                            return Some((Ok(Bytes::from(text)), (upstream, conv, true)));
                        }
                        None => {
                            let text = conv.end();
                            return Some((Ok(Bytes::from(text)), (upstream, conv, true)));
                        }
                    }
                }
            },
        );
        parts.headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        );
        return Response::from_parts(parts, Body::from_stream(out));
    }
    let bytes = match axum::body::to_bytes(body, MAX_ANSWER).await {
        Ok(b) => b,
        Err(e) => {
            return openai_error(
                StatusCode::BAD_GATEWAY,
                &format!("the answer could not be read: {e}"),
            )
        }
    };
    let msg: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let answer = chat::response(&msg, model, created);
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(answer.to_string()))
}

/// An error answer (Anthropic-shaped, small) in OpenAI's shape, status and headers kept.
async fn to_openai_error(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 1024 * 1024)
        .await
        .unwrap_or_default();
    parts.headers.remove(http::header::CONTENT_LENGTH);
    parts.headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Response::from_parts(parts, Body::from(chat::error(&bytes).to_string()))
}

fn openai_error(status: StatusCode, message: &str) -> Response {
    let body =
        json!({"error": {"message": message, "type": "api_error", "param": null, "code": null}});
    let mut r = Response::new(Body::from(body.to_string()));
    *r.status_mut() = status;
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

/// `GET /v1/models` for OpenAI clients: Anthropic's models (when an account can list them), then
/// every model a mapping or the fallback chain reaches.
pub async fn models(app: Arc<App>, req: Request) -> Response {
    let r = match routes::read(&app, req).await {
        Ok(r) => r,
        Err(response) => return to_openai_error(response).await,
    };
    let rt = r.rt.clone();
    let inbound = Inbound {
        route: Route::Models,
        method: http::Method::GET,
        path_and_query: r.path_and_query,
        headers: HeaderMap::new(),
        body: Bytes::new(),
        model: None,
        api_keys_only: false,
    };
    let response = passthrough::forward(app, r.rt, r.draft, inbound).await;
    let mut data: Vec<Value> = Vec::new();
    if response.status().is_success() {
        let bytes = axum::body::to_bytes(response.into_body(), MAX_ANSWER)
            .await
            .unwrap_or_default();
        let v: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        for m in v["data"].as_array().into_iter().flatten() {
            if let Some(id) = m["id"].as_str() {
                data.push(
                    json!({"id": id, "object": "model", "created": 0, "owned_by": "anthropic"}),
                );
            }
        }
    }
    for (id, owner) in rt.routes.reachable() {
        if !data.iter().any(|d| d["id"] == id.as_str()) {
            data.push(json!({"id": id, "object": "model", "created": 0, "owned_by": owner}));
        }
    }
    let body = json!({"object": "list", "data": data});
    let mut out = Response::new(Body::from(body.to_string()));
    out.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    out
}
