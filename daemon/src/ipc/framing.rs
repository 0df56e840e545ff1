//! The control socket's framing: one JSON-RPC request per line, at most `MAX_LINE` bytes.
//!
//! Reading and parsing are separate so that each can be tested alone: [`read_line`] cuts lines out
//! of whatever chunks the socket delivers, [`parse`] turns one line into a request or the error
//! answer the client gets. A bad line (not UTF-8, not JSON, not a request, wrong `jsonrpc`) is
//! answered and the connection goes on; only a line over the limit ends it, since the reader can
//! no longer tell where the next request starts.

use neurolink_shared::ipc::{codes, Request, Response, RpcError};
use serde_json::Value;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// What reading one line gave.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A line (without its `\n`, which the last line of a stream may lack).
    Text,
    /// More than `limit` bytes without a newline: the connection is answered and closed.
    TooLong,
    /// The peer closed (or the read failed).
    End,
}

/// Read the next line into `buf` (cleared first), reading at most `limit + 1` bytes.
pub async fn read_line<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    buf: &mut Vec<u8>,
    limit: usize,
) -> Line {
    buf.clear();
    let mut limited = reader.take(limit as u64 + 1);
    match limited.read_until(b'\n', buf).await {
        Ok(0) | Err(_) => Line::End,
        Ok(n) if n > limit => Line::TooLong,
        Ok(_) => {
            if buf.last() == Some(&b'\n') {
                buf.pop();
            }
            Line::Text
        }
    }
}

/// The answer to a line over the limit.
pub fn too_long(limit: usize) -> Response {
    Response::err(
        Value::Null,
        RpcError::new(
            codes::INVALID_REQUEST,
            format!("line longer than {limit} bytes"),
        ),
    )
}

/// One line: `None` when blank, else the request or the error answer for it.
pub fn parse(line: &[u8]) -> Option<Result<Request, Response>> {
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    let request: Request = match serde_json::from_slice(line) {
        Ok(r) => r,
        Err(e) => {
            let code = if serde_json::from_slice::<Value>(line).is_ok() {
                codes::INVALID_REQUEST
            } else {
                codes::PARSE_ERROR
            };
            return Some(Err(Response::err(
                Value::Null,
                RpcError::new(code, format!("not a JSON-RPC request: {e}")),
            )));
        }
    };
    if request.jsonrpc != "2.0" {
        let id = request.id.clone().unwrap_or(Value::Null);
        return Some(Err(Response::err(
            id,
            RpcError::new(codes::INVALID_REQUEST, "jsonrpc must be \"2.0\""),
        )));
    }
    Some(Ok(request))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use tokio::io::AsyncWriteExt;

    /// What a line came to, comparable: the request's method and id, or the error code.
    fn summary(r: Option<Result<Request, Response>>) -> Option<Result<(String, Value), i64>> {
        r.map(|r| match r {
            Ok(req) => Ok((req.method, req.id.unwrap_or(Value::Null))),
            Err(resp) => Err(resp.error.map_or(0, |e| e.code)),
        })
    }

    /// Feed `bytes` in `cuts`-sized chunks through a real pipe and read every line back.
    fn read_all(bytes: &[u8], cuts: &[usize], limit: usize) -> Vec<(Line, Vec<u8>)> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (mut tx, rx) = tokio::io::duplex(16);
            let data = bytes.to_vec();
            let cuts = cuts.to_vec();
            let writer = tokio::spawn(async move {
                let mut rest = &data[..];
                let mut i = 0;
                while !rest.is_empty() {
                    let n = cuts
                        .get(i)
                        .copied()
                        .unwrap_or(rest.len())
                        .clamp(1, rest.len());
                    if tx.write_all(&rest[..n]).await.is_err() {
                        return; // the reader stopped (a line over the limit)
                    }
                    rest = &rest[n..];
                    i += 1;
                }
            });
            let mut reader = tokio::io::BufReader::with_capacity(8, rx);
            let mut out = Vec::new();
            let mut buf = Vec::new();
            loop {
                let line = read_line(&mut reader, &mut buf, limit).await;
                let stop = line != Line::Text;
                out.push((line, buf.clone()));
                if stop {
                    break;
                }
            }
            drop(reader);
            writer.await.unwrap();
            out
        })
    }

    fn a_line() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            // A valid request.
            ("[a-z]{1,8}(\\.[a-z]{1,8})?", any::<u32>()).prop_map(|(m, id)| {
                format!(r#"{{"jsonrpc":"2.0","id":{id},"method":"{m}"}}"#).into_bytes()
            }),
            // Wrong version.
            any::<u32>().prop_map(|id| {
                format!(r#"{{"jsonrpc":"1.0","id":{id},"method":"status"}}"#).into_bytes()
            }),
            // JSON that is no request.
            Just(br#"{"hello":1}"#.to_vec()),
            Just(b"[1,2]".to_vec()),
            // Blank.
            Just(b"  \t ".to_vec()),
            Just(Vec::new()),
            // Anything, not UTF-8 included (no newline: that would make two lines).
            proptest::collection::vec(
                any::<u8>().prop_filter("no newline", |b| *b != b'\n'),
                1..40
            ),
        ]
    }

    proptest! {
        /// However the socket splits the bytes, the lines and what they parse to are those of the
        /// whole text split at its newlines; no input panics or ends the connection early.
        #[test]
        fn any_split_reads_the_same_lines(
            lines in proptest::collection::vec(a_line(), 0..8),
            cuts in proptest::collection::vec(1usize..20, 0..40),
            final_newline in any::<bool>(),
        ) {
            let mut bytes = lines.join(&b'\n');
            if final_newline && !lines.is_empty() {
                bytes.push(b'\n');
            }
            let read = read_all(&bytes, &cuts, 1024);
            let (end, texts) = read.split_last().unwrap();
            prop_assert_eq!(&end.0, &Line::End);
            let got: Vec<_> = texts.iter().map(|(_, t)| summary(parse(t))).collect();
            let mut expected_lines: Vec<&[u8]> = bytes.split(|b| *b == b'\n').collect();
            if bytes.is_empty() || bytes.last() == Some(&b'\n') {
                expected_lines.pop(); // nothing after the last newline
            }
            let expected: Vec<_> = expected_lines.iter().map(|l| summary(parse(l))).collect();
            prop_assert_eq!(got, expected);
        }

        /// Every line that is not blank is a request or an answered error, never silence.
        #[test]
        fn a_bad_line_is_answered(line in a_line()) {
            let blank = line.iter().all(u8::is_ascii_whitespace);
            match parse(&line) {
                None => prop_assert!(blank),
                Some(Ok(r)) => prop_assert_eq!(r.jsonrpc, "2.0"),
                Some(Err(resp)) => {
                    let code = resp.error.unwrap().code;
                    prop_assert!(code == codes::PARSE_ERROR || code == codes::INVALID_REQUEST);
                }
            }
        }

        /// A line longer than the limit, split anyhow, is `TooLong` (and the lines before it are
        /// read whole).
        #[test]
        fn an_overlong_line_is_cut_off(
            before in 0usize..3,
            extra in 1usize..200,
            cuts in proptest::collection::vec(1usize..50, 0..20),
        ) {
            let limit = 64;
            let mut bytes = Vec::new();
            for i in 0..before {
                bytes.extend(format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"status"}}"#).bytes());
                bytes.push(b'\n');
            }
            bytes.extend(std::iter::repeat_n(b'x', limit + extra));
            bytes.push(b'\n');
            let read = read_all(&bytes, &cuts, limit);
            prop_assert_eq!(read.len(), before + 1);
            prop_assert_eq!(&read[before].0, &Line::TooLong);
            for (line, text) in &read[..before] {
                prop_assert_eq!(line, &Line::Text);
                prop_assert!(matches!(parse(text), Some(Ok(_))));
            }
        }
    }

    #[test]
    fn a_line_of_exactly_the_limit_is_read() {
        let line = br#"{"jsonrpc":"2.0","id":1,"method":"status"}"#;
        let read = read_all(&[&line[..], b"\n"].concat(), &[], line.len() + 1);
        assert_eq!(read[0].0, Line::Text);
        assert_eq!(read[0].1, line);
    }
}
