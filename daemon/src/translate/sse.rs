//! Reads a provider's SSE stream into whole `data` payloads, however the bytes were chunked.
//!
//! The standard algorithm, reduced to what OpenAI and Gemini send: lines end in `\n`, `\r\n` or
//! `\r`; `data:` lines of one event are joined with `\n`; a blank line ends the event; comments
//! (`:`) and other fields are skipped. Only whole events come out, so a payload is never parsed
//! half-arrived.

/// The incremental reader. Feed chunks, collect payloads.
#[derive(Debug, Default)]
pub struct SseReader {
    /// Bytes of a line not yet ended.
    line: Vec<u8>,
    /// `data` of the event being read.
    data: Option<String>,
    /// The previous chunk ended in `\r`: a `\n` opening this one belongs to that line end.
    after_cr: bool,
}

impl SseReader {
    /// Read `chunk`; every event it completes adds its payload to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<String>) {
        let mut rest = chunk;
        if self.after_cr && !rest.is_empty() {
            self.after_cr = false;
            if let Some(r) = rest.strip_prefix(b"\n") {
                rest = r;
            }
        }
        while let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            let (line, tail) = rest.split_at(pos);
            self.line.extend_from_slice(line);
            let cr = tail[0] == b'\r';
            rest = &tail[1..];
            if cr {
                match rest.first() {
                    Some(b'\n') => rest = &rest[1..],
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        self.line.extend_from_slice(rest);
    }

    /// Whether part of an event is held (the stream ended inside it if nothing more comes).
    pub fn inside_event(&self) -> bool {
        !self.line.is_empty() || self.data.is_some()
    }

    /// The stream ended: an event left without its blank line still counts (Gemini and some
    /// servers end the body right after the last `data:` line).
    pub fn finish(&mut self, out: &mut Vec<String>) {
        if !self.line.is_empty() {
            let line = std::mem::take(&mut self.line);
            self.line_done(&line, out);
        }
        if let Some(d) = self.data.take() {
            out.push(d);
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<String>) {
        if line.is_empty() {
            if let Some(d) = self.data.take() {
                out.push(d);
            }
            return;
        }
        let Some(value) = line.strip_prefix(b"data:") else {
            // Comments (`:`), `event:`, `id:`, `retry:`: nothing a translation needs.
            return;
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        let value = String::from_utf8_lossy(value);
        match &mut self.data {
            Some(d) => {
                d.push('\n');
                d.push_str(&value);
            }
            None => self.data = Some(value.into_owned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_split(bytes: &[u8], at: &[usize]) -> Vec<String> {
        let mut r = SseReader::default();
        let mut out = Vec::new();
        let mut start = 0;
        for &cut in at {
            r.feed(&bytes[start..cut], &mut out);
            start = cut;
        }
        r.feed(&bytes[start..], &mut out);
        r.finish(&mut out);
        out
    }

    #[test]
    fn every_split_and_line_ending_reads_the_same_payloads() {
        let lf = b": OPENROUTER PROCESSING\n\ndata: {\"a\":1}\n\nevent: x\ndata: two\ndata: lines\n\ndata: [DONE]\n\n";
        let crlf: Vec<u8> = String::from_utf8_lossy(lf)
            .replace('\n', "\r\n")
            .into_bytes();
        let cr: Vec<u8> = String::from_utf8_lossy(lf).replace('\n', "\r").into_bytes();
        let want = vec!["{\"a\":1}", "two\nlines", "[DONE]"];
        for bytes in [lf.to_vec(), crlf, cr] {
            for i in 0..=bytes.len() {
                for j in i..=bytes.len() {
                    assert_eq!(read_split(&bytes, &[i, j]), want, "split at {i},{j}");
                }
            }
        }
    }

    #[test]
    fn a_last_event_without_its_blank_line_still_counts() {
        assert_eq!(read_split(b"data: {}\n", &[]), vec!["{}"]);
        assert_eq!(read_split(b"data: {}", &[]), vec!["{}"]);
    }
}
