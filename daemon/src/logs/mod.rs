//! Request logs: one JSON line per finished request in `logs/proxy-YYYY-MM-DD.jsonl` (UTC date),
//! and with `--debug` the request and response headers and the request body in
//! `logs/proxy-debug-YYYY-MM-DD.jsonl`, every secret masked ([`redact`]).
//!
//! Writing never blocks a request: lines go through a bounded channel to one writer task; when it
//! is full the line is dropped and counted. Files are 0600 in a 0700 folder. Old files are
//! removed at start and hourly ([`rotate`]).

pub mod redact;
pub mod rotate;

use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

/// Lines waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 8192;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Debug,
}

/// What goes into a line; serialized by the writer, off the request path.
enum Payload {
    Record(Arc<neurolink_shared::ipc::RequestRecord>),
    Json(serde_json::Value),
}

struct Line {
    kind: Kind,
    /// `YYYY-MM-DD` (UTC) of the record.
    date: String,
    payload: Payload,
}

/// Where request-path code sends log lines.
#[derive(Clone)]
pub struct LogSender {
    tx: mpsc::Sender<Line>,
    pub dropped: Arc<AtomicU64>,
    pub debug: bool,
}

impl LogSender {
    /// Queue a request record; never waits.
    pub fn record(&self, record: Arc<neurolink_shared::ipc::RequestRecord>) {
        let date = record.time.get(..10).unwrap_or("unknown").to_string();
        self.queue(Line {
            kind: Kind::Request,
            date,
            payload: Payload::Record(record),
        });
    }

    /// Queue a debug line (dropped unless `--debug`); never waits.
    pub fn debug(&self, time_rfc3339: &str, value: serde_json::Value) {
        if !self.debug {
            return;
        }
        let date = time_rfc3339.get(..10).unwrap_or("unknown").to_string();
        self.queue(Line {
            kind: Kind::Debug,
            date,
            payload: Payload::Json(value),
        });
    }

    fn queue(&self, line: Line) {
        if self.tx.try_send(line).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Start the writer task for `dir`.
pub fn start(dir: PathBuf, debug: bool) -> LogSender {
    let (tx, mut rx) = mpsc::channel::<Line>(QUEUE);
    tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            // Write what is queued in one go, off the async threads.
            let mut batch = vec![first];
            while let Ok(more) = rx.try_recv() {
                batch.push(more);
                if batch.len() >= 512 {
                    break;
                }
            }
            let dir = dir.clone();
            let written = tokio::task::spawn_blocking(move || write_batch(&dir, batch)).await;
            if let Ok(Err(e)) = written {
                tracing::warn!("request log write failed: {e}");
            }
        }
    });
    LogSender {
        tx,
        dropped: Arc::new(AtomicU64::new(0)),
        debug,
    }
}

fn write_batch(dir: &std::path::Path, batch: Vec<Line>) -> std::io::Result<()> {
    neurolink_shared::atomic_file::create_private_dir(dir)?;
    let mut open: Option<(String, std::io::BufWriter<std::fs::File>)> = None;
    for line in batch {
        let name = match line.kind {
            Kind::Request => format!("proxy-{}.jsonl", line.date),
            Kind::Debug => format!("proxy-debug-{}.jsonl", line.date),
        };
        if open.as_ref().is_none_or(|(n, _)| *n != name) {
            if let Some((_, mut w)) = open.take() {
                w.flush()?;
            }
            let mut o = std::fs::OpenOptions::new();
            o.create(true).append(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                o.mode(0o600);
            }
            open = Some((
                name.clone(),
                std::io::BufWriter::new(o.open(dir.join(&name))?),
            ));
        }
        if let Some((_, w)) = open.as_mut() {
            let written = match &line.payload {
                Payload::Record(r) => serde_json::to_writer(&mut *w, r.as_ref()),
                Payload::Json(v) => serde_json::to_writer(&mut *w, v),
            };
            written.map_err(std::io::Error::other)?;
            w.write_all(b"\n")?;
        }
    }
    if let Some((_, mut w)) = open {
        w.flush()?;
    }
    Ok(())
}
