//! Request logs: one JSON line per finished request in `logs/proxy-YYYY-MM-DD.jsonl` (UTC date),
//! and with `--debug` the request and response headers and the request body in
//! `logs/proxy-debug-YYYY-MM-DD.jsonl`, every secret masked ([`redact`]).
//!
//! Writing never blocks a request: lines go into a bounded queue that one writer thread empties
//! every 100 ms (serializing them there, into a reused buffer); when it is full the line is
//! dropped and counted. Files are 0600 in a 0700 folder. Old files are
//! removed at start and hourly ([`rotate`]).

mod line;
pub mod redact;
pub mod rotate;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Lines waiting for the writer before new ones are dropped.
pub const QUEUE: usize = 8192;

/// How long a line may wait before the writer takes it. The writer is not woken per line: a wake
/// is a futex call and a context switch, which cost more than building the line itself.
const FLUSH_EVERY: Duration = Duration::from_millis(100);

/// A queue this long wakes the writer before its time.
const WAKE_AT: usize = 1024;

/// An open file is reopened after this, so a removed or renamed log file comes back.
const REOPEN_EVERY: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Request,
    Debug,
}

/// What goes into a line; serialized by the writer, off the request path.
enum Payload {
    Record(Arc<neurolink_shared::ipc::RequestRecord>),
    Json {
        /// `YYYY-MM-DD` (UTC) of the line.
        date: [u8; 10],
        value: serde_json::Value,
    },
}

impl Payload {
    fn kind(&self) -> Kind {
        match self {
            Payload::Record(_) => Kind::Request,
            Payload::Json { .. } => Kind::Debug,
        }
    }

    /// `YYYY-MM-DD` (UTC): the file the line goes to.
    fn date(&self) -> [u8; 10] {
        match self {
            Payload::Record(r) => date_of(&r.time),
            Payload::Json { date, .. } => *date,
        }
    }
}

/// The date part of an RFC 3339 time; `unknown-` pads anything else to the same width.
fn date_of(time: &str) -> [u8; 10] {
    time.as_bytes()
        .get(..10)
        .and_then(|d| d.try_into().ok())
        .unwrap_or(*b"unknown---")
}

/// What the request path and the writer thread share.
struct Shared {
    queue: Mutex<Vec<Payload>>,
    /// The writer's state: whoever holds it writes (the thread, or [`LogSender::flush`]).
    writer: Mutex<Writer>,
    dropped: AtomicU64,
    /// The writer thread found nothing to write for a whole period and sleeps until a line
    /// comes: an idle daemon does not wake ten times a second for its log.
    idle: std::sync::atomic::AtomicBool,
}

/// Where request-path code sends log lines.
#[derive(Clone)]
pub struct LogSender {
    shared: Arc<Shared>,
    thread: Option<std::thread::Thread>,
    pub debug: bool,
}

impl LogSender {
    /// Queue a request record; never waits on the disk.
    pub fn record(&self, record: Arc<neurolink_shared::ipc::RequestRecord>) {
        self.queue(Payload::Record(record));
    }

    /// Queue a debug line (dropped unless `--debug`); never waits on the disk.
    pub fn debug(&self, time_rfc3339: &str, value: serde_json::Value) {
        if !self.debug {
            return;
        }
        self.queue(Payload::Json {
            date: date_of(time_rfc3339),
            value,
        });
    }

    /// Lines dropped because the queue was full.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn queue(&self, line: Payload) {
        let len = {
            let mut q = lock(&self.shared.queue);
            if q.len() >= QUEUE {
                drop(q);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            q.push(line);
            q.len()
        };
        // The first line into an empty queue wakes a writer that went idle (see `start`).
        let wake = len == WAKE_AT || (len == 1 && self.shared.idle.load(Ordering::SeqCst));
        if wake {
            if let Some(t) = &self.thread {
                t.unpark();
            }
        }
    }

    /// Write every queued line now, on this thread (at shutdown, so nothing queued is lost).
    pub fn flush(&self) {
        if let Err(e) = self.shared.drain() {
            tracing::warn!("request log write failed: {e}");
        }
    }
}

/// A poisoned lock still holds usable data: a panic elsewhere must not stop the logs.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Start the writer thread for `dir`.
pub fn start(dir: PathBuf, debug: bool) -> LogSender {
    let shared = Arc::new(Shared {
        queue: Mutex::new(Vec::with_capacity(256)),
        writer: Mutex::new(Writer::new(dir)),
        dropped: AtomicU64::new(0),
        idle: std::sync::atomic::AtomicBool::new(false),
    });
    let for_thread = shared.clone();
    let thread = std::thread::Builder::new()
        .name("neurolink-log".into())
        .spawn(move || loop {
            std::thread::park_timeout(FLUSH_EVERY);
            match for_thread.drain() {
                Ok(true) => continue,
                Ok(false) => {}
                Err(e) => tracing::warn!("request log write failed: {e}"),
            }
            // Nothing came for a whole period: sleep until a line does. `idle` is set before
            // the queue is looked at, and a sender looks at `idle` after its push, so either
            // this look sees the line or the sender sees `idle` and wakes the thread (an
            // `unpark` before the `park` makes the `park` return at once).
            for_thread.idle.store(true, Ordering::SeqCst);
            if lock(&for_thread.queue).is_empty() {
                std::thread::park();
            }
            for_thread.idle.store(false, Ordering::SeqCst);
        })
        .map(|h| h.thread().clone());
    let thread = match thread {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::warn!("cannot start the request log writer ({e}); lines are written at stop");
            None
        }
    };
    LogSender {
        shared,
        thread,
        debug,
    }
}

impl Shared {
    /// Take what is queued and write it; `false` when nothing was queued.
    fn drain(&self) -> std::io::Result<bool> {
        let mut w = lock(&self.writer);
        {
            let mut q = lock(&self.queue);
            if q.is_empty() {
                return Ok(false);
            }
            // Swap in the writer's spare vector: both keep their capacity.
            std::mem::swap(&mut *q, &mut w.batch);
        }
        w.write_batch().map(|()| true)
    }
}

/// The open log file and the buffers reused from batch to batch.
struct Writer {
    dir: PathBuf,
    batch: Vec<Payload>,
    buf: Vec<u8>,
    open: Option<Open>,
}

struct Open {
    kind: Kind,
    date: [u8; 10],
    file: std::fs::File,
    at: Instant,
}

impl Writer {
    fn new(dir: PathBuf) -> Self {
        Self {
            dir,
            batch: Vec::with_capacity(256),
            buf: Vec::with_capacity(64 * 1024),
            open: None,
        }
    }

    /// Write the batch, one `write` per run of lines for the same file.
    fn write_batch(&mut self) -> std::io::Result<()> {
        let batch = std::mem::take(&mut self.batch);
        let mut result = Ok(());
        let mut i = 0;
        while i < batch.len() {
            let (kind, date) = (batch[i].kind(), batch[i].date());
            self.buf.clear();
            while let Some(line) = batch
                .get(i)
                .filter(|l| l.kind() == kind && l.date() == date)
            {
                let written = match line {
                    Payload::Record(r) => {
                        line::write_record(&mut self.buf, r);
                        Ok(())
                    }
                    Payload::Json { value, .. } => serde_json::to_writer(&mut self.buf, value),
                };
                match written {
                    Ok(()) => self.buf.push(b'\n'),
                    Err(e) => tracing::warn!("a request log line could not be serialized: {e}"),
                }
                i += 1;
            }
            if let Err(e) = self.write_to(kind, date) {
                self.open = None;
                result = Err(e);
            }
        }
        // Give the (emptied) vector back so its capacity is reused.
        let mut batch = batch;
        batch.clear();
        self.batch = batch;
        result
    }

    fn write_to(&mut self, kind: Kind, date: [u8; 10]) -> std::io::Result<()> {
        let fresh = self
            .open
            .as_ref()
            .is_some_and(|o| o.kind == kind && o.date == date && o.at.elapsed() < REOPEN_EVERY);
        if !fresh {
            self.open = None;
            let file = open_log(&self.dir, kind, &date)?;
            self.open = Some(Open {
                kind,
                date,
                file,
                at: Instant::now(),
            });
        }
        match &mut self.open {
            Some(o) => o.file.write_all(&self.buf),
            None => Ok(()),
        }
    }
}

/// `proxy-YYYY-MM-DD.jsonl` or `proxy-debug-YYYY-MM-DD.jsonl`, opened for appending (0600 in a
/// 0700 folder).
fn open_log(dir: &Path, kind: Kind, date: &[u8; 10]) -> std::io::Result<std::fs::File> {
    neurolink_shared::atomic_file::create_private_dir(dir)?;
    let date = String::from_utf8_lossy(date);
    let name = match kind {
        Kind::Request => format!("proxy-{date}.jsonl"),
        Kind::Debug => format!("proxy-debug-{date}.jsonl"),
    };
    let mut o = std::fs::OpenOptions::new();
    o.create(true).append(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        o.mode(0o600);
    }
    o.open(dir.join(name))
}

#[cfg(test)]
mod tests {
    use super::*;
    use neurolink_shared::ipc::RequestRecord;

    fn record(time: &str, id: &str) -> Arc<RequestRecord> {
        Arc::new(RequestRecord {
            time: time.into(),
            request_id: id.into(),
            method: "POST".into(),
            path: "/v1/messages".into(),
            model: None,
            stream: false,
            account: Some("a".into()),
            status: 200,
            attempts: Vec::new(),
            fallback_provider: None,
            ttfb_ms: None,
            total_ms: 1,
            input_tokens: 0,
            output_tokens: 0,
            error_class: None,
        })
    }

    /// A sender with no writer thread: only `flush` writes, so the test decides when.
    fn sender(dir: &Path, debug: bool) -> LogSender {
        LogSender {
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                writer: Mutex::new(Writer::new(dir.to_path_buf())),
                dropped: AtomicU64::new(0),
                idle: std::sync::atomic::AtomicBool::new(false),
            }),
            thread: None,
            debug,
        }
    }

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("a whole JSON line"))
            .collect()
    }

    #[test]
    fn lines_go_to_the_file_of_their_kind_and_date_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let s = sender(&dir, true);
        s.record(record("2026-01-01T23:59:59Z", "r1"));
        s.record(record("2026-01-02T00:00:00Z", "r2"));
        s.debug("2026-01-02T00:00:00Z", serde_json::json!({"d": 1}));
        s.record(record("2026-01-02T00:00:01Z", "r3"));
        assert!(!dir.exists(), "nothing is written before a flush");
        s.flush();
        let ids = |p: &str| -> Vec<String> {
            lines(&dir.join(p))
                .iter()
                .map(|v| v["requestId"].as_str().unwrap_or_default().to_string())
                .collect()
        };
        assert_eq!(ids("proxy-2026-01-01.jsonl"), ["r1"]);
        assert_eq!(ids("proxy-2026-01-02.jsonl"), ["r2", "r3"]);
        assert_eq!(lines(&dir.join("proxy-debug-2026-01-02.jsonl")).len(), 1);
        // The next batch appends, to the file still open.
        s.record(record("2026-01-02T00:00:02Z", "r4"));
        s.flush();
        assert_eq!(ids("proxy-2026-01-02.jsonl"), ["r2", "r3", "r4"]);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode(&dir), 0o700);
            assert_eq!(mode(&dir.join("proxy-2026-01-02.jsonl")), 0o600);
        }
    }

    #[test]
    fn debug_lines_are_dropped_without_debug_and_a_full_queue_counts_what_it_drops() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let s = sender(&dir, false);
        s.debug("2026-01-02T00:00:00Z", serde_json::json!({"d": 1}));
        for i in 0..QUEUE + 5 {
            s.record(record("2026-01-02T00:00:00Z", &format!("r{i}")));
        }
        assert_eq!(s.dropped(), 5);
        s.flush();
        assert_eq!(lines(&dir.join("proxy-2026-01-02.jsonl")).len(), QUEUE);
        assert!(!dir.join("proxy-debug-2026-01-02.jsonl").exists());
    }

    #[test]
    fn a_removed_file_comes_back() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let s = sender(&dir, false);
        s.record(record("2026-01-02T00:00:00Z", "r1"));
        s.flush();
        std::fs::remove_dir_all(&dir).unwrap();
        // Reopened once the open file is older than REOPEN_EVERY.
        if let Some(o) = lock(&s.shared.writer).open.as_mut() {
            o.at = Instant::now().checked_sub(REOPEN_EVERY).unwrap_or(o.at);
        }
        s.record(record("2026-01-02T00:00:01Z", "r2"));
        s.flush();
        assert_eq!(lines(&dir.join("proxy-2026-01-02.jsonl")).len(), 1);
    }

    #[test]
    fn the_writer_thread_writes_without_being_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let s = start(dir.clone(), false);
        s.record(record("2026-01-02T00:00:00Z", "r1"));
        let path = dir.join("proxy-2026-01-02.jsonl");
        let deadline = Instant::now() + Duration::from_secs(30);
        while lines(&path).is_empty() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert_eq!(lines(&path).len(), 1);
    }

    #[test]
    fn an_idle_writer_wakes_for_the_next_line() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("logs");
        let s = start(dir.clone(), false);
        let path = dir.join("proxy-2026-01-02.jsonl");
        let wait_for = |n: usize| {
            let deadline = Instant::now() + Duration::from_secs(30);
            while lines(&path).len() < n && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
            assert_eq!(lines(&path).len(), n);
        };
        // Idle from the start: the first line wakes it.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.shared.idle.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(s.shared.idle.load(Ordering::SeqCst), "the writer went idle");
        s.record(record("2026-01-02T00:00:00Z", "r1"));
        wait_for(1);
        // Idle again, and woken again.
        let deadline = Instant::now() + Duration::from_secs(30);
        while !s.shared.idle.load(Ordering::SeqCst) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
        s.record(record("2026-01-02T00:00:01Z", "r2"));
        wait_for(2);
    }
}
