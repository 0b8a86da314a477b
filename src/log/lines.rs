//! The stdout line writer: lines are appended to a buffer of the writing
//! thread's own, and one background thread drains the buffers to stdout in
//! batches.
//!
//! A request never waits on stdout: when the buffers hold `MAX_BUFFERED`
//! bytes (stdout is slow or blocked), new lines are dropped and counted
//! (`kawal_log_lines_dropped_total`). Batching is the point: the writer
//! thread is woken when a buffer gets its first line, then writes whatever
//! came in every `BATCH_WINDOW` with one `write` until a window brings
//! nothing; a busy proxy pays neither a wake-up nor a system call per line.
//! Each thread has its own buffer so that writers never contend with each
//! other, only (briefly) with the drain.

use std::cell::RefCell;
use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::thread::{JoinHandle, Thread};
use std::time::Duration;

/// How long the writer thread waits after a wake-up for more lines to write
/// in the same batch. Each batch costs two context switches on a core the
/// requests need; at 20 ms a line is on stdout within 20 ms (Envoy flushes its
/// access log every 10 s by default) and a busy thread buffers a few hundred KiB.
const BATCH_WINDOW: Duration = Duration::from_millis(20);

/// Bytes a thread's buffer may hold before lines are dropped.
const MAX_BUFFERED: usize = 8 << 20;

/// A cheap handle for writing lines; clones share the buffers and the thread.
#[derive(Clone)]
pub struct LineWriter {
    shared: Arc<Shared>,
}

struct Shared {
    /// Every thread's buffer, for the drain.
    buffers: Mutex<Vec<Arc<Buffer>>>,
    writer: OnceLock<Thread>,
    dropped: AtomicU64,
    stop: AtomicBool,
}

#[derive(Default)]
struct Buffer {
    lines: Mutex<Vec<u8>>,
}

/// Flushes what is buffered and stops the writer thread when dropped.
pub struct FlushOnDrop {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

thread_local! {
    /// This thread's buffer, with the writer it belongs to.
    static OWN: RefCell<Option<(Arc<Shared>, Arc<Buffer>)>> = const { RefCell::new(None) };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl LineWriter {
    /// Starts the writer thread over `out`.
    pub fn spawn(mut out: impl Write + Send + 'static) -> (LineWriter, FlushOnDrop) {
        let shared = Arc::new(Shared {
            buffers: Mutex::default(),
            writer: OnceLock::new(),
            dropped: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let drain = shared.clone();
        let thread = std::thread::Builder::new()
            .name("kawal-log".into())
            .spawn(move || {
                let mut batch = Vec::new();
                loop {
                    // Idle: wait for a buffer's first line (or the stop).
                    std::thread::park();
                    // Busy: one batch per window until a window brings none.
                    // Meanwhile the request threads' unparks find this thread
                    // asleep, not parked: an atomic swap, no system call.
                    loop {
                        let stopping = drain.stop.load(Ordering::Acquire);
                        if !stopping {
                            std::thread::sleep(BATCH_WINDOW);
                        }
                        let wrote = drain.drain_into(&mut batch, &mut out);
                        if stopping {
                            return;
                        }
                        if !wrote {
                            break;
                        }
                    }
                }
            })
            .expect("spawn the log writer thread");
        let _ = shared.writer.set(thread.thread().clone());
        let guard = FlushOnDrop {
            shared: shared.clone(),
            thread: Some(thread),
        };
        (LineWriter { shared }, guard)
    }

    /// Appends one complete line (or several), unless the buffer is full.
    pub fn write_line(&self, line: &[u8]) {
        OWN.with(|own| {
            let mut own = own.borrow_mut();
            let buffer = match &*own {
                Some((shared, buffer)) if Arc::ptr_eq(shared, &self.shared) => buffer,
                _ => {
                    let buffer = Arc::new(Buffer::default());
                    lock(&self.shared.buffers).push(buffer.clone());
                    &own.insert((self.shared.clone(), buffer)).1
                }
            };
            let mut lines = lock(&buffer.lines);
            if lines.len() + line.len() > MAX_BUFFERED {
                drop(lines);
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let was_empty = lines.is_empty();
            lines.extend_from_slice(line);
            drop(lines);
            if was_empty {
                self.shared.wake();
            }
        })
    }

    /// Lines dropped because stdout fell behind.
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }
}

impl Shared {
    fn wake(&self) {
        if let Some(writer) = self.writer.get() {
            writer.unpark();
        }
    }

    /// Moves every buffer's lines into `batch` and writes them. A line is
    /// appended whole under its buffer's lock, so batches split only
    /// between lines. The buffer of a thread that has exited (only this list
    /// still holds it) is drained one last time and forgotten. Whether
    /// there were any lines.
    fn drain_into(&self, batch: &mut Vec<u8>, out: &mut impl Write) -> bool {
        lock(&self.buffers).retain(|buffer| {
            let orphan = Arc::strong_count(buffer) == 1;
            let mut lines = lock(&buffer.lines);
            if batch.is_empty() {
                std::mem::swap(batch, &mut lines);
            } else {
                batch.extend_from_slice(&lines);
                lines.clear();
            }
            !orphan
        });
        if batch.is_empty() {
            return false;
        }
        // A failed write (stdout closed) loses the batch: there is nowhere
        // else to report it.
        let _ = out.write_all(batch).and_then(|()| out.flush());
        batch.clear();
        true
    }
}

impl Drop for FlushOnDrop {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// `tracing`'s writer for process events: each event is formatted whole and
/// written with one `write_all`, so it stays one line.
impl Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_line(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LineWriter {
    type Writer = LineWriter;

    fn make_writer(&'a self) -> LineWriter {
        self.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `Write` into shared memory, to see what the writer thread wrote.
    #[derive(Clone, Default)]
    struct Out(Arc<Mutex<Vec<u8>>>);

    impl Write for Out {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_from_every_thread_is_written_whole_by_the_flush_at_the_latest() {
        let out = Out::default();
        let (writer, flush) = LineWriter::spawn(out.clone());
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        writer.write_line(format!("{{\"t\":{t},\"i\":{i}}}\n").as_bytes());
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        drop(flush);
        let text = String::from_utf8(lock(&out.0).clone()).unwrap();
        let mut seen: Vec<(u32, u32)> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                (v["t"].as_u64().unwrap() as u32, v["i"].as_u64().unwrap() as u32)
            })
            .collect();
        // Each thread's lines stay in their order.
        for t in 0..4 {
            let own: Vec<u32> = seen.iter().filter(|s| s.0 == t).map(|s| s.1).collect();
            assert_eq!(own, (0..1000).collect::<Vec<_>>());
        }
        seen.sort();
        assert_eq!(seen.len(), 4000);
        assert_eq!(writer.dropped(), 0);
    }

    /// Waits (bounded) until `out` holds `want`, without flushing.
    fn written(out: &Out, want: &[u8]) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if lock(&out.0).as_slice() == want {
                return true;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        false
    }

    #[test]
    fn lines_after_an_idle_spell_wake_the_writer_again() {
        let out = Out::default();
        let (writer, _flush) = LineWriter::spawn(out.clone());
        writer.write_line(b"one\n");
        assert!(written(&out, b"one\n"));
        // Several empty windows: the writer goes back to waiting for a wake-up.
        std::thread::sleep(BATCH_WINDOW * 5);
        writer.write_line(b"two\n");
        assert!(written(&out, b"one\ntwo\n"));
    }

    #[test]
    fn the_buffer_of_an_exited_thread_is_written_then_forgotten() {
        let out = Out::default();
        let (writer, flush) = LineWriter::spawn(out.clone());
        let w = writer.clone();
        std::thread::spawn(move || w.write_line(b"last words\n"))
            .join()
            .unwrap();
        let mut batch = Vec::new();
        writer.shared.drain_into(&mut batch, &mut out.clone());
        assert!(lock(&writer.shared.buffers).is_empty());
        drop(flush);
        assert_eq!(lock(&out.0).as_slice(), b"last words\n");
    }

    #[test]
    fn a_blocked_stdout_drops_lines_and_counts_them() {
        /// Blocks every write until released.
        struct Blocked(Arc<Mutex<()>>);
        impl Write for Blocked {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                drop(lock(&self.0));
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let gate = Arc::new(Mutex::new(()));
        let closed = lock(&gate);
        let (writer, flush) = LineWriter::spawn(Blocked(gate.clone()));
        let line = vec![b'x'; 1 << 16];
        // Twice what the buffer holds, even if the writer took one batch
        // before it blocked: some lines must be dropped, none may block.
        for _ in 0..(4 * MAX_BUFFERED / line.len()) {
            writer.write_line(&line);
        }
        assert!(writer.dropped() > 0);
        drop(closed);
        drop(flush);
    }
}
