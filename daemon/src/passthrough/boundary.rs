//! Whole SSE events only: the relay hands the client bytes up to the last complete event and holds
//! the incomplete rest, so an upstream that dies inside an event never leaves the client with half
//! of one (followed by our `error` event, that would read as `data:event: error`).
//!
//! Upstream chunks nearly always end on an event boundary; then the chunk passes through as it
//! is, without a copy. Only a chunk that ends inside an event is split, and its tail waits (up to
//! [`MAX_HELD`]) for the rest of the event.

use bytes::{Bytes, BytesMut};

/// The most bytes held back waiting for an event to complete. An event larger than this (none is,
/// in Anthropic's streams) is passed on in pieces rather than held without bound.
pub const MAX_HELD: usize = 4 * 1024 * 1024;

/// Splits an SSE byte stream at event boundaries (a blank line: two line endings in a row, where
/// a line ends with `\n`, `\r\n` or `\r`).
#[derive(Debug, Default)]
pub struct EventFramer {
    /// The start of an event whose end has not arrived yet.
    held: BytesMut,
}

impl EventFramer {
    /// Take `chunk`; return the bytes that end on an event boundary, if any.
    pub fn push(&mut self, chunk: Bytes) -> Option<Bytes> {
        if self.held.is_empty() && ends_with_blank_line(&chunk) {
            return Some(chunk);
        }
        let out = if self.held.is_empty() {
            match last_event_end(&chunk) {
                Some(end) => {
                    let mut chunk = chunk;
                    self.held.extend_from_slice(&chunk[end..]);
                    chunk.truncate(end);
                    Some(chunk)
                }
                None => {
                    self.held.extend_from_slice(&chunk);
                    None
                }
            }
        } else {
            self.held.extend_from_slice(&chunk);
            last_event_end(&self.held).map(|end| self.held.split_to(end).freeze())
        };
        if self.held.len() > MAX_HELD {
            tracing::warn!(
                held = self.held.len(),
                "an SSE event larger than {MAX_HELD} bytes; passing it on unsplit"
            );
            let rest = self.held.split().freeze();
            return Some(match out {
                Some(done) => [done, rest].concat().into(),
                None => rest,
            });
        }
        out
    }

    /// Bytes of an unfinished event are held (the stream is inside an event).
    pub fn inside_event(&self) -> bool {
        self.held.iter().any(|b| !b.is_ascii_whitespace())
    }

    /// What is held, for the end of a stream that stopped between events (only line endings).
    pub fn take_rest(&mut self) -> Bytes {
        self.held.split().freeze()
    }
}

/// The fast path: `\n\n` (or `\r\r`, `\r\n\r\n`) at the very end is always a boundary.
fn ends_with_blank_line(b: &[u8]) -> bool {
    b.ends_with(b"\n\n") || b.ends_with(b"\r\r") || b.ends_with(b"\n\r\n")
}

/// The end (exclusive) of the last complete event in `buf`, which starts at an event boundary.
fn last_event_end(buf: &[u8]) -> Option<usize> {
    let mut end = None;
    let mut line_start = 0;
    let mut i = 0;
    while let Some(off) = memchr::memchr2(b'\n', b'\r', &buf[i..]) {
        let at = i + off;
        let mut next = at + 1;
        if buf[at] == b'\r' {
            match buf.get(next) {
                Some(b'\n') => next += 1,
                // A `\r` at the very end may be the first half of `\r\n`. On a blank line the
                // event is complete either way; after text, wait for the next byte.
                None => {
                    if at == line_start {
                        end = Some(next);
                    }
                    break;
                }
                Some(_) => {}
            }
        }
        if at == line_start {
            end = Some(next);
        }
        line_start = next;
        i = next;
    }
    end
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> (Vec<Vec<u8>>, Vec<u8>) {
        let mut f = EventFramer::default();
        let mut out = Vec::new();
        for c in chunks {
            if let Some(b) = f.push(Bytes::copy_from_slice(c)) {
                out.push(b.to_vec());
            }
        }
        (out, f.take_rest().to_vec())
    }

    #[test]
    fn whole_events_pass_through_unchanged() {
        let (out, rest) = run(&[
            b"event: a\ndata: {}\n\n",
            b"event: b\ndata: {}\n\nevent: c\ndata: 1\n\n",
        ]);
        assert_eq!(
            out,
            vec![
                b"event: a\ndata: {}\n\n".to_vec(),
                b"event: b\ndata: {}\n\nevent: c\ndata: 1\n\n".to_vec()
            ]
        );
        assert!(rest.is_empty());
    }

    #[test]
    fn a_cut_inside_an_event_is_held_until_it_completes() {
        let mut f = EventFramer::default();
        assert_eq!(
            f.push(Bytes::from_static(b"event: a\ndata: 1\n\nevent: b\nda")),
            Some(Bytes::from_static(b"event: a\ndata: 1\n\n"))
        );
        assert!(f.inside_event());
        assert_eq!(f.push(Bytes::from_static(b"ta: 2")), None);
        assert_eq!(
            f.push(Bytes::from_static(b"\n\nevent: c\n")),
            Some(Bytes::from_static(b"event: b\ndata: 2\n\n"))
        );
        assert!(f.inside_event());
        assert_eq!(
            f.push(Bytes::from_static(b"data: 3\n\n")),
            Some(Bytes::from_static(b"event: c\ndata: 3\n\n"))
        );
        assert!(!f.inside_event());
    }

    #[test]
    fn every_line_ending_counts() {
        for stream in [
            &b"data: 1\r\n\r\ndata: 2\r\n\r\n"[..],
            b"data: 1\r\rdata: 2\r\r",
            b"data: 1\n\r\ndata: 2\r\n\n",
        ] {
            // Any split point gives the same bytes, in whole events.
            for cut in 0..=stream.len() {
                let (out, rest) = run(&[&stream[..cut], &stream[cut..]]);
                let joined: Vec<u8> = out.concat();
                assert_eq!(joined, stream, "cut at {cut}");
                assert!(rest.is_empty());
                for piece in &out {
                    assert_eq!(
                        last_event_end(piece),
                        Some(piece.len()),
                        "{piece:?} at cut {cut}"
                    );
                }
            }
        }
    }

    #[test]
    fn a_split_crlf_is_not_taken_for_a_blank_line() {
        let (out, rest) = run(&[b"data: 1\r", b"\ndata: 2\r\n\r\n"]);
        assert_eq!(out.concat(), b"data: 1\r\ndata: 2\r\n\r\n");
        assert!(rest.is_empty());
    }

    #[test]
    fn an_oversized_event_is_passed_on() {
        let mut f = EventFramer::default();
        let big = vec![b'x'; MAX_HELD + 1];
        assert_eq!(
            f.push(Bytes::from(big)).map(|b| b.len()),
            Some(MAX_HELD + 1)
        );
        assert!(!f.inside_event());
    }
}

/// Any valid stream, cut anywhere, relays byte for byte in whole events.
#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// A valid SSE stream: events of `event:`/`data:` lines, any line ending, optional comments.
    fn stream() -> impl Strategy<Value = Vec<u8>> {
        let ending = prop_oneof![Just("\n"), Just("\r\n"), Just("\r")];
        let event = (
            "[a-z_]{1,12}",
            "[ -~]{0,40}".prop_filter("no line breaks", |s| !s.contains(['\n', '\r'])),
            any::<bool>(),
            ending,
        )
            .prop_map(|(name, data, comment, end)| {
                let mut e = String::new();
                if comment {
                    e.push_str(&format!(": keep-alive{end}"));
                }
                e.push_str(&format!("event: {name}{end}data: {data}{end}{end}"));
                e
            });
        proptest::collection::vec(event, 1..12).prop_map(|events| events.concat().into_bytes())
    }

    proptest! {
        #[test]
        fn any_split_relays_the_same_bytes_in_whole_events(
            bytes in stream(),
            cuts in proptest::collection::vec(any::<proptest::sample::Index>(), 0..8),
        ) {
            let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
            points.sort_unstable();
            points.dedup();
            let mut framer = EventFramer::default();
            let mut out = Vec::new();
            let mut from = 0;
            for p in points.into_iter().chain([bytes.len()]) {
                if let Some(b) = framer.push(Bytes::copy_from_slice(&bytes[from..p])) {
                    // Whatever goes out ends on an event boundary.
                    prop_assert_eq!(last_event_end(&b), Some(b.len()));
                    out.extend_from_slice(&b);
                }
                from = p;
            }
            out.extend_from_slice(&framer.take_rest());
            prop_assert_eq!(out, bytes);
        }

        #[test]
        fn a_cut_anywhere_leaves_only_whole_events_out(bytes in stream(), at in any::<proptest::sample::Index>()) {
            let cut = at.index(bytes.len());
            let mut framer = EventFramer::default();
            let out = framer.push(Bytes::copy_from_slice(&bytes[..cut])).unwrap_or_default();
            // What went out is a prefix made of whole events; what is held is the rest of the cut
            // one (dropped on failure, then one `error` event follows).
            prop_assert!(bytes.starts_with(&out));
            if !out.is_empty() {
                prop_assert_eq!(last_event_end(&out), Some(out.len()));
            }
        }
    }
}
