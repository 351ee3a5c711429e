//! Where `podgate serve` writes its log: standard output, in batches, from a
//! background thread.
//!
//! A review never waits for the log consumer: the formatted line is copied
//! into a shared buffer under a short lock, and a flusher thread writes
//! whatever has gathered with one `write` call. The flusher is woken only when
//! the buffer goes from empty to non-empty, and after each write it lets lines
//! gather for [`BATCH_INTERVAL`]: under load that is one wake-up and one
//! system call per batch instead of per line (a channel send, a thread
//! wake-up and a `write` per line cost about as much as evaluating a review),
//! and a lone line after a quiet spell is still written at once.
//!
//! If standard output is slower than the log for long enough that
//! [`MAX_BUFFERED`] bytes are waiting, new lines are dropped rather than
//! stalling admission, and a warning says how many.

use std::io::{self, Write};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// How long the flusher lets lines gather after a write.
pub const BATCH_INTERVAL: Duration = Duration::from_millis(5);
/// Most bytes waiting to be written; lines beyond it are dropped.
pub const MAX_BUFFERED: usize = 2 * 1024 * 1024;
/// A batch buffer larger than this is given back after a burst.
const KEEP_CAPACITY: usize = 256 * 1024;

#[derive(Debug, Default)]
struct State {
    buffer: Vec<u8>,
    dropped: u64,
    flusher_waiting: bool,
    closed: bool,
}

#[derive(Debug, Default)]
struct Shared {
    state: Mutex<State>,
    wake: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // Only plain data behind the lock: a panic elsewhere cannot leave it torn.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The `MakeWriter` for the tracing subscriber; cheap to clone.
#[derive(Debug, Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Flushes what is buffered and stops the flusher when dropped (at exit).
#[derive(Debug)]
pub struct FlushGuard {
    shared: Arc<Shared>,
    flusher: Option<JoinHandle<()>>,
}

/// Starts the flusher thread writing to `out`.
pub fn spawn<W: Write + Send + 'static>(out: W) -> io::Result<(LogWriter, FlushGuard)> {
    let shared = Arc::new(Shared::default());
    let flusher = {
        let shared = shared.clone();
        std::thread::Builder::new().name("podgate-log".to_owned()).spawn(move || flush_loop(&shared, out))?
    };
    Ok((LogWriter { shared: shared.clone() }, FlushGuard { shared, flusher: Some(flusher) }))
}

fn flush_loop<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        let (dropped, closed) = {
            let mut state = shared.lock();
            while state.buffer.is_empty() && !state.closed {
                state.flusher_waiting = true;
                state = shared.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
                state.flusher_waiting = false;
            }
            std::mem::swap(&mut state.buffer, &mut batch);
            (std::mem::take(&mut state.dropped), state.closed)
        };
        // A failed write (stdout closed) loses these lines; nothing else to do.
        let _ = out.write_all(&batch).and_then(|()| out.flush());
        batch.clear();
        if batch.capacity() > KEEP_CAPACITY {
            batch.shrink_to(KEEP_CAPACITY / 4);
        }
        if dropped > 0 {
            // Goes through the subscriber into the buffer, out with the next batch.
            tracing::warn!(lines = dropped, "standard output is too slow for the log: dropped lines");
        }
        if closed {
            if shared.lock().buffer.is_empty() {
                return;
            }
            continue;
        }
        std::thread::sleep(BATCH_INTERVAL);
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.wake.notify_one();
        if let Some(flusher) = self.flusher.take() {
            let _ = flusher.join();
        }
    }
}

impl LogWriter {
    /// Queues one formatted line (the subscriber writes each event at once).
    fn append(&self, line: &[u8]) {
        let mut state = self.shared.lock();
        if state.buffer.len() + line.len() > MAX_BUFFERED {
            state.dropped += 1;
            return;
        }
        let wake = state.buffer.is_empty() && state.flusher_waiting;
        state.buffer.extend_from_slice(line);
        drop(state);
        if wake {
            self.shared.wake.notify_one();
        }
    }
}

/// The writer of one event.
#[derive(Debug)]
pub struct EventWriter<'a>(&'a LogWriter);

impl Write for EventWriter<'_> {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        self.0.append(line);
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An `out` the test can read, optionally stalled.
    #[derive(Clone, Default)]
    struct Sink {
        bytes: Arc<Mutex<Vec<u8>>>,
        stall: Arc<Mutex<()>>,
    }

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            let _stalled = self.stall.lock().unwrap();
            self.bytes.lock().unwrap().extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn every_line_is_written_in_order_and_flushed_at_drop() {
        let sink = Sink::default();
        let (writer, guard) = spawn(sink.clone()).unwrap();
        for i in 0..10_000 {
            writer.make_writer().write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        drop(guard);
        let text = String::from_utf8(sink.bytes.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 10_000);
        assert!(lines.iter().enumerate().all(|(i, line)| *line == format!("line {i}")));
    }

    #[test]
    fn a_lone_line_is_written_without_waiting_for_more() {
        let sink = Sink::default();
        let (writer, _guard) = spawn(sink.clone()).unwrap();
        writer.make_writer().write_all(b"hello\n").unwrap();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while sink.bytes.lock().unwrap().is_empty() {
            assert!(std::time::Instant::now() < deadline, "not written");
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(&*sink.bytes.lock().unwrap(), b"hello\n");
    }

    #[test]
    fn a_stalled_output_drops_lines_instead_of_blocking() {
        let sink = Sink::default();
        // Stalled after the spawn (the flusher writes nothing before the
        // first line), so that a failing assertion unwinds the stall before
        // the guard, which joins the flusher: a failure, never a hang.
        let (writer, guard) = spawn(sink.clone()).unwrap();
        let stalled = sink.stall.lock().unwrap();
        let line = [b'x'; 1023].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
        // The first batch blocks in the stalled write; the rest fills the buffer.
        let started = std::time::Instant::now();
        let lines = 3 * MAX_BUFFERED / line.len();
        for _ in 0..lines {
            writer.make_writer().write_all(&line).unwrap();
        }
        assert!(started.elapsed() < Duration::from_secs(5), "writers blocked");
        assert!(writer.shared.lock().dropped > 0);
        drop(stalled);
        drop(guard);
        // What the first (stalled) batch held, plus at most a full buffer.
        let written = sink.bytes.lock().unwrap().len();
        assert!(written <= 2 * MAX_BUFFERED, "{written}");
        assert_eq!(written % line.len(), 0, "only whole lines");
        assert!(written < lines * line.len());
    }
}
