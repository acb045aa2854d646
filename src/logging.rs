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
