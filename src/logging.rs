//! Shim logs in the shape containerd's own log has: logrus text lines
//! (`time="…" level=info msg="…" key=value …`). containerd copies a v2 shim's `log` FIFO
//! verbatim into its own output, so these lines sit naturally among containerd's.
//!
//! Every line carries the fixed fields given at setup (`namespace`, `runtime`) plus the
//! event's structured fields (`id`, `exec_id`, `pid`, …).

use std::fmt::Write as _;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::prelude::*;

/// Format `t` as RFC 3339 with nanoseconds in UTC, as logrus does.
pub fn rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:09}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        d.subsec_nanos()
    )
}

fn needs_quotes(s: &str) -> bool {
    s.is_empty()
        || s.chars()
            .any(|c| c <= ' ' || c == '"' || c == '=' || !c.is_ascii())
}

fn push_value(out: &mut String, v: &str) {
    if needs_quotes(v) {
        let _ = write!(out, "{v:?}");
    } else {
        out.push_str(v);
    }
}

#[derive(Default)]
struct Fields {
    msg: String,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" {
            self.msg = v.to_string();
        } else {
            let _ = write!(self.rest, " {}=", f.name());
            push_value(&mut self.rest, v);
        }
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.record_str(f, &format!("{v:?}"));
    }
}

/// A layer writing logrus-style lines to a writer (the shim's stderr, i.e. the log FIFO).
pub struct LogrusLayer<W> {
    writer: std::sync::Mutex<W>,
    fixed: String,
    max: Level,
}

impl<S: Subscriber, W: Write + Send + 'static> Layer<S> for LogrusLayer<W> {
    fn enabled(&self, meta: &tracing::Metadata<'_>, _: Context<'_, S>) -> bool {
        *meta.level() <= self.max
    }

    fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let level = match *event.metadata().level() {
            Level::ERROR => "error",
            Level::WARN => "warning",
            Level::INFO => "info",
            Level::DEBUG => "debug",
            Level::TRACE => "trace",
        };
        let mut line = format!("time=\"{}\" level={level} msg=", rfc3339(SystemTime::now()));
        let _ = write!(line, "{:?}", f.msg);
        line.push_str(&f.rest);
        line.push_str(&self.fixed);
        line.push('\n');
        if let Ok(mut w) = self.writer.lock() {
            // A reader may be gone (containerd restarting): losing a log line is better than
            // blocking the shim, and SIGPIPE is ignored.
            let _ = w.write_all(line.as_bytes());
        }
    }
}

/// Install the global subscriber writing to `writer`. `fixed` fields are appended to every
/// line. Returns false if a subscriber was already installed.
pub fn init<W: Write + Send + 'static>(writer: W, debug: bool, fixed: &[(&str, &str)]) -> bool {
    let mut fx = String::new();
    for (k, v) in fixed {
        let _ = write!(fx, " {k}=");
        push_value(&mut fx, v);
    }
    let layer = LogrusLayer {
        writer: std::sync::Mutex::new(writer),
        fixed: fx,
        max: if debug { Level::DEBUG } else { Level::INFO },
    };
    let installed = tracing_subscriber::registry()
        .with(layer)
        .try_init()
        .is_ok();
    if installed {
        report_panics();
    }
    installed
}

/// A panic (a bug) ends only the task it happened in: the request in flight gets an error and
/// the shim keeps serving. Report it as one error line in containerd's log rather than a raw
/// backtrace on the FIFO.
fn report_panics() {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        let location = info
            .location()
            .map(|l| format!("{}:{}", l.file(), l.line()))
            .unwrap_or_default();
        tracing::error!(
            location = %location,
            panic = %msg,
            "internal error (bug): the operation failed; please report it"
        );
    }));
}

/// Longest write a pipe takes whole or not at all (`PIPE_BUF`).
const ATOMIC_LINE: usize = 4096;

/// A log destination that never blocks the shim. A shim's log is a FIFO (the bundle's `log`,
/// the legacy shim's `shim.stdout.log`) opened non-blocking, which containerd copies into its
/// own output; when containerd stops reading it (its own output is stuck, it is restarting), a
/// line that does not fit is dropped and counted instead of holding the thread that logs,
/// which is the serving thread. The first line that gets through again is preceded by a
/// warning saying how many were lost (`msg="log lines dropped …" dropped=N`), so the count is
/// visible in containerd's log exactly where the gap is. Each line is one `write(2)` of at most
/// `PIPE_BUF` bytes (longer lines are cut), so a line lands whole or not at all.
pub struct NonBlockingLog<W> {
    inner: W,
    dropped: u64,
}

impl<W: Write> NonBlockingLog<W> {
    pub fn new(inner: W) -> Self {
        NonBlockingLog { inner, dropped: 0 }
    }

    /// Lines dropped since the last one that got through.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    /// One line in one write; false when the destination did not take it.
    fn put(&mut self, line: &[u8]) -> bool {
        let cut;
        let line = if line.len() > ATOMIC_LINE {
            const MARK: &[u8] = b" [cut]\n";
            let mut end = ATOMIC_LINE - MARK.len();
            // Cut on a character boundary.
            while end > 0 && (line[end] & 0xc0) == 0x80 {
                end -= 1;
            }
            cut = [&line[..end], MARK].concat();
            &cut[..]
        } else {
            line
        };
        loop {
            match self.inner.write(line) {
                Ok(_) => return true,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
    }
}

impl<W: Write> Write for NonBlockingLog<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }

    /// Write one whole line, or drop it (counted). Never fails, never waits.
    fn write_all(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.dropped > 0 {
            let note = format!(
                "time=\"{}\" level=warning msg=\"log lines dropped: the shim's log was not read\" dropped={}\n",
                rfc3339(SystemTime::now()),
                self.dropped
            );
            if !self.put(note.as_bytes()) {
                self.dropped += 1;
                return Ok(());
            }
            self.dropped = 0;
        }
        if !self.put(line) {
            self.dropped += 1;
        }
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn rfc3339_known_instants() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000000Z");
        let t = UNIX_EPOCH + Duration::new(1_764_342_784, 5);
        assert_eq!(rfc3339(t), "2025-11-28T15:13:04.000000005Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert!(rfc3339(leap).starts_with("2000-02-29T00:00:00"));
    }

    #[test]
    fn a_full_log_pipe_drops_and_counts_lines_instead_of_blocking() {
        use std::io::Read;
        use std::os::fd::AsFd;
        let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_NONBLOCK).unwrap();
        crate::io::fd::grow_pipe(w.as_fd(), 4096);
        let mut log = NonBlockingLog::new(std::fs::File::from(w));
        let line = format!("{}\n", "x".repeat(99));
        // A one-page pipe takes 40 lines of 100 bytes; the rest are dropped at once.
        let t = std::time::Instant::now();
        for _ in 0..100 {
            log.write_all(line.as_bytes()).unwrap();
        }
        assert!(t.elapsed() < Duration::from_secs(1));
        assert_eq!(log.dropped(), 60);
        let mut rd = std::fs::File::from(r);
        let mut got = vec![0u8; 8192];
        let n = rd.read(&mut got).unwrap();
        assert_eq!(n, 4000, "whole lines only");
        // Read again: the count comes first, then the line.
        log.write_all(b"after\n").unwrap();
        assert_eq!(log.dropped(), 0);
        let n = rd.read(&mut got).unwrap();
        let text = String::from_utf8_lossy(&got[..n]).into_owned();
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].contains("level=warning msg=\"log lines dropped"),
            "{text}"
        );
        assert!(lines[0].ends_with(" dropped=60"), "{text}");
        assert_eq!(lines[1], "after");
        // An over-long line is cut to fit one atomic write.
        log.write_all(format!("{}\n", "é".repeat(5000)).as_bytes())
            .unwrap();
        let n = rd.read(&mut got).unwrap();
        assert!(n <= 4096);
        let text = std::str::from_utf8(&got[..n]).unwrap();
        assert!(text.ends_with(" [cut]\n"));
    }

    #[test]
    fn values_are_quoted_only_when_needed() {
        let mut s = String::new();
        push_value(&mut s, "abc-123");
        s.push(' ');
        push_value(&mut s, "two words");
        s.push(' ');
        push_value(&mut s, "");
        assert_eq!(s, r#"abc-123 "two words" """#);
    }
}
