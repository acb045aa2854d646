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
use tracing::span::{Attributes, Id, Record};
use tracing::subscriber::Interest;
use tracing::{Event, Level, Metadata, Subscriber};

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

/// Would logrus's text formatter quote this value? It writes a value bare only when every
/// character is an ASCII letter or digit or one of `-._/@^+`. An empty value stays bare
/// (`key=`): containerd does not set `QuoteEmptyFields`.
fn needs_quotes(s: &str) -> bool {
    !s.bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-._/@^+".contains(&b))
}

/// Is `c` printable the way Go's `strconv.IsPrint` means it: a letter, mark, number,
/// punctuation or symbol, or the ASCII space. (Other spaces, controls, format characters,
/// private-use and unassigned code points are not.)
fn go_is_print(c: char) -> bool {
    use unicode_general_category::{get_general_category, GeneralCategory as G};
    if c.is_ascii() {
        return (' '..='~').contains(&c);
    }
    !matches!(
        get_general_category(c),
        G::Control
            | G::Format
            | G::PrivateUse
            | G::Surrogate
            | G::Unassigned
            | G::SpaceSeparator
            | G::LineSeparator
            | G::ParagraphSeparator
    )
}

/// Go's `%q` of a string (`strconv.Quote`), which logrus uses for every value it quotes:
/// `\"` and `\\`, the C escapes `\a \b \f \n \r \t \v`, other ASCII controls and DEL as
/// `\xNN`, printable characters as they are, any other character as `\uNNNN` or
/// `\UNNNNNNNN` (lower-case hex).
pub fn go_quote(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c if go_is_print(c) => out.push(c),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if c < ' ' || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if (c as u32) < 0x10000 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => {
                let _ = write!(out, "\\U{:08x}", c as u32);
            }
        }
    }
    out.push('"');
}

/// A value as logrus's text formatter writes it: bare, or quoted Go-style.
fn push_value(out: &mut String, v: &str) {
    if needs_quotes(v) {
        go_quote(out, v);
    } else {
        out.push_str(v);
    }
}

/// One logrus text line (`TextFormatter` as containerd configures it: full RFC 3339 timestamp
/// with nanoseconds, no colours): `time`, `level` and `msg` (left out when empty) first, then
/// the fields sorted by key. A field named `time`, `level` or `msg` is written as
/// `fields.<name>`, as logrus does with clashing keys. A field given twice keeps its last value.
pub fn logrus_line(time: SystemTime, level: &str, msg: &str, fields: &[(&str, &str)]) -> String {
    let mut line = String::from("time=");
    push_value(&mut line, &rfc3339(time));
    line.push_str(" level=");
    push_value(&mut line, level);
    if !msg.is_empty() {
        line.push_str(" msg=");
        push_value(&mut line, msg);
    }
    let mut sorted: Vec<(String, &str)> = Vec::with_capacity(fields.len());
    for (k, v) in fields {
        let key = match *k {
            "time" | "level" | "msg" => format!("fields.{k}"),
            k => k.to_string(),
        };
        match sorted.iter_mut().find(|(have, _)| *have == key) {
            Some(slot) => slot.1 = v,
            None => sorted.push((key, v)),
        }
    }
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    for (k, v) in sorted {
        let _ = write!(line, " {k}=");
        push_value(&mut line, v);
    }
    line.push('\n');
    line
}

#[derive(Default)]
struct Fields {
    msg: String,
    rest: Vec<(&'static str, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, f: &Field, v: &str) {
        if f.name() == "message" {
            self.msg = v.to_string();
        } else {
            self.rest.push((f.name(), v.to_string()));
        }
    }
    fn record_debug(&mut self, f: &Field, v: &dyn std::fmt::Debug) {
        self.record_str(f, &format!("{v:?}"));
    }
}

/// logrus's name of a level.
fn level_name(l: Level) -> &'static str {
    match l {
        Level::ERROR => "error",
        Level::WARN => "warning",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

/// The shim's subscriber: logrus-style lines to a writer (the shim's stderr, i.e. the log
/// FIFO). A subscriber of its own rather than `tracing-subscriber`'s registry with a layer:
/// the shim opens no spans, and the registry's span slab costs every shim 32 KiB of heap.
/// Spans that dependencies might open are accepted and ignored.
pub struct LogrusSubscriber<W> {
    writer: std::sync::Mutex<W>,
    fixed: Vec<(String, String)>,
    max: Level,
}

impl<W: Write + Send + 'static> Subscriber for LogrusSubscriber<W> {
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if self.enabled(meta) {
            Interest::always()
        } else {
            Interest::never()
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Some(tracing::level_filters::LevelFilter::from_level(self.max))
    }

    fn enabled(&self, meta: &Metadata<'_>) -> bool {
        *meta.level() <= self.max
    }

    fn new_span(&self, _: &Attributes<'_>) -> Id {
        Id::from_u64(1)
    }

    fn record(&self, _: &Id, _: &Record<'_>) {}

    fn record_follows_from(&self, _: &Id, _: &Id) {}

    fn event(&self, event: &Event<'_>) {
        let mut f = Fields::default();
        event.record(&mut f);
        // The fixed fields first, so an event's own field of the same name wins.
        let fields: Vec<(&str, &str)> = self
            .fixed
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .chain(f.rest.iter().map(|(k, v)| (*k, v.as_str())))
            .collect();
        let line = logrus_line(
            SystemTime::now(),
            level_name(*event.metadata().level()),
            &f.msg,
            &fields,
        );
        if let Ok(mut w) = self.writer.lock() {
            // A reader may be gone (containerd restarting): losing a log line is better than
            // blocking the shim, and SIGPIPE is ignored.
            let _ = w.write_all(line.as_bytes());
        }
    }

    fn enter(&self, _: &Id) {}

    fn exit(&self, _: &Id) {}
}

/// Install the global subscriber writing to `writer`. `fixed` fields are added to every
/// line. Returns false if a subscriber was already installed.
pub fn init<W: Write + Send + 'static>(writer: W, debug: bool, fixed: &[(&str, &str)]) -> bool {
    let subscriber = LogrusSubscriber {
        writer: std::sync::Mutex::new(writer),
        fixed: fixed
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        max: if debug { Level::DEBUG } else { Level::INFO },
    };
    let installed = tracing::subscriber::set_global_default(subscriber).is_ok();
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
            let note = logrus_line(
                SystemTime::now(),
                "warning",
                "log lines dropped: the shim's log was not read",
                &[("dropped", &self.dropped.to_string())],
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
    fn values_are_quoted_only_when_logrus_would() {
        let shown = |v: &str| {
            let mut s = String::new();
            push_value(&mut s, v);
            s
        };
        // Bare: ASCII letters, digits and -._/@^+ only; an empty value stays bare.
        for bare in ["abc-123", "io.containerd.runc.v2", "/run/x@y^z+1_2", ""] {
            assert_eq!(shown(bare), bare);
        }
        assert_eq!(shown("two words"), r#""two words""#);
        assert_eq!(shown("a:b"), r#""a:b""#);
        assert_eq!(shown("a=b"), r#""a=b""#);
        assert_eq!(shown("1.6.20~ds1"), r#""1.6.20~ds1""#);
        assert_eq!(shown("é"), r#""é""#);
    }

    #[test]
    fn go_quoting_escapes() {
        let q = |v: &str| {
            let mut s = String::new();
            go_quote(&mut s, v);
            s
        };
        assert_eq!(q("\u{7}\u{8}\u{c}\n\r\t\u{b}"), r#""\a\b\f\n\r\t\v""#);
        assert_eq!(q("\u{0}\u{1b}\u{7f}"), r#""\x00\x1b\x7f""#);
        assert_eq!(q("\u{80}\u{ad}\u{feff}"), r#""\u0080\u00ad\ufeff""#);
        assert_eq!(q("\u{e0001}\u{10ffff}"), r#""\U000e0001\U0010ffff""#);
        assert_eq!(q("'\"\\"), r#""'\"\\""#);
        assert_eq!(q("ü\u{301}中😀"), "\"ü\u{301}中😀\"");
    }

    /// Splits a real logrus line into (time, level, msg, fields) as raw strings, using the
    /// inputs the test knows (the line's own values are what is being checked).
    fn secs_of(time: &str) -> SystemTime {
        // Only the two seconds the fixture uses.
        let secs = match &time[..19] {
            "2026-12-03T22:39:04" => 1_796_337_544,
            "2026-12-03T22:39:06" => 1_796_337_546,
            other => panic!("fixture time {other}"),
        };
        let nanos: u32 = time[20..29].parse().unwrap();
        UNIX_EPOCH + Duration::new(secs, nanos)
    }

    #[test]
    fn lines_match_real_containerd_logrus_output() {
        let weird =
            "/tmp/ops-logrus/r/a b\t\"q\"\\é\u{a0}\u{200b}\u{1}\u{7f}😀\u{e000}\u{378}\u{2028}z";
        let btrfs = format!(
            "path {weird}/io.containerd.snapshotter.v1.btrfs (ext4) must be a btrfs filesystem to be used with the btrfs snapshotter: skip plugin"
        );
        let snap = ("type", "io.containerd.snapshotter.v1");
        // What containerd logged in each fixture line: level, message, fields (in the order
        // the code gave them; logrus sorts).
        type Logged<'a> = (&'a str, &'a str, Vec<(&'a str, &'a str)>);
        let want: Vec<Logged> = vec![
            ("info", "starting containerd", vec![("version", "1.6.20~ds1"), ("revision", "1.6.20~ds1-1+deb12u3")]),
            (
                "info",
                "skip loading plugin \"io.containerd.snapshotter.v1.aufs\"...",
                vec![
                    snap,
                    ("error", "aufs is not supported (modprobe aufs failed: exit status 1 \"modprobe: FATAL: Module aufs not found in directory /lib/modules/6.18.44-fc-v1252\\n\"): skip plugin"),
                ],
            ),
            ("info", "skip loading plugin \"io.containerd.snapshotter.v1.btrfs\"...", vec![snap, ("error", &btrfs)]),
            ("warning", "failed to load plugin io.containerd.snapshotter.v1.devmapper", vec![("error", "devmapper not configured")]),
            ("info", "serving...", vec![("address", "/tmp/ops-logrus/c.sock")]),
            ("debug", "sd notification", vec![("state", "READY=1"), ("notified", "false"), ("error", "<nil>")]),
            ("debug", "garbage collected", vec![("d", "532.467µs")]),
            ("debug", "received signal", vec![("signal", "terminated")]),
        ];
        let real: Vec<&str> = include_str!("../compat/logrus-containerd-1.6.20.log")
            .lines()
            .filter(|l| !l.starts_with('#'))
            .collect();
        assert_eq!(real.len(), want.len());
        for (line, (level, msg, fields)) in real.iter().zip(want) {
            let time = secs_of(&line[6..]);
            let ours = logrus_line(time, level, msg, &fields);
            assert_eq!(ours, format!("{line}\n"));
        }
    }

    #[test]
    fn clashing_and_repeated_keys_and_empty_message() {
        let t = UNIX_EPOCH;
        assert_eq!(
            logrus_line(
                t,
                "info",
                "",
                &[("msg", "x"), ("b", "1"), ("a", "2"), ("b", "3")]
            ),
            "time=\"1970-01-01T00:00:00.000000000Z\" level=info a=2 b=3 fields.msg=x\n"
        );
    }
}
