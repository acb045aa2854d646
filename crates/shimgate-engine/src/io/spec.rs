//! Parsing the stdio strings of Create/Exec once into a typed [`StdioSpec`], so nothing below
//! compares strings against "" again. The scheme is taken from stdout, as the Go shims do:
//! no scheme or `fifo` = named pipes (or plain files) the client made, `file://` = append to a
//! log file, `binary://` = hand the streams to a logging binary.

use std::path::PathBuf;

use super::IoError;

/// Where a process's stdio goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdioSpec {
    /// All three streams empty: the container gets `/dev/null`.
    Null,
    /// Copy through pipes to/from these paths (FIFOs normally; regular files are appended to).
    /// `file://` is this too, with stdout and stderr both set to the file.
    Paths {
        stdin: Option<PathBuf>,
        stdout: Option<PathBuf>,
        stderr: Option<PathBuf>,
        /// `file://`: create the file (and its directories) before use.
        create_file: bool,
    },
    /// A logging binary reads the container's stdout/stderr (fd 3 and 4) itself.
    Binary {
        path: PathBuf,
        /// Query pairs, in the order given (only the first value per key, like Go).
        args: Vec<(String, String)>,
        stdin: Option<PathBuf>,
    },
}

fn opt(s: &str) -> Option<PathBuf> {
    (!s.is_empty()).then(|| PathBuf::from(s))
}

/// Split `scheme://rest` without a URL crate: containerd builds these strings itself and only
/// ever uses the three schemes above, with absolute paths.
fn split_scheme(s: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = s.split_once("://")?;
    let valid = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        && scheme.starts_with(|c: char| c.is_ascii_alphabetic());
    valid.then_some((scheme, rest))
}

/// Decode `%XX` escapes (the query of a `binary://` URI is percent-encoded by containerd).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => {
                // Two hex digits exactly (from_str_radix alone would take "+1").
                let hex = std::str::from_utf8(&b[i + 1..i + 3])
                    .ok()
                    .filter(|h| h.bytes().all(|c| c.is_ascii_hexdigit()));
                match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                    Some(v) => {
                        out.push(v);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path part of `rest` (after `scheme://`): `host/path` is not used by containerd, an
/// empty host is (`file:///abs`).
fn uri_path(rest: &str) -> Result<(PathBuf, &str), IoError> {
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if !path.starts_with('/') {
        return Err(IoError::InvalidUri(format!(
            "stdio URI must carry an absolute path: {rest:?}"
        )));
    }
    Ok((PathBuf::from(percent_decode(path)), query))
}

impl StdioSpec {
    pub fn parse(stdin: &str, stdout: &str, stderr: &str) -> Result<StdioSpec, IoError> {
        if stdin.is_empty() && stdout.is_empty() && stderr.is_empty() {
            return Ok(StdioSpec::Null);
        }
        let Some((scheme, rest)) = split_scheme(stdout) else {
            return Ok(StdioSpec::Paths {
                stdin: opt(stdin),
                stdout: opt(stdout),
                stderr: opt(stderr),
                create_file: false,
            });
        };
        match scheme {
            "fifo" => {
                let (path, _) = uri_path(rest)?;
                let err = match split_scheme(stderr) {
                    Some(("fifo", r)) => Some(uri_path(r)?.0),
                    _ => opt(stderr),
                };
                Ok(StdioSpec::Paths {
                    stdin: opt(stdin),
                    stdout: Some(path),
                    stderr: err,
                    create_file: false,
                })
            }
            "file" => {
                let (path, _) = uri_path(rest)?;
                Ok(StdioSpec::Paths {
                    stdin: opt(stdin),
                    stdout: Some(path.clone()),
                    stderr: Some(path),
                    create_file: true,
                })
            }
            "binary" => {
                let (path, query) = uri_path(rest)?;
                let mut args: Vec<(String, String)> = Vec::new();
                for pair in query.split('&').filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
                    let k = percent_decode(k);
                    if !args.iter().any(|(seen, _)| *seen == k) {
                        args.push((k, percent_decode(v)));
                    }
                }
                Ok(StdioSpec::Binary {
                    path,
                    args,
                    stdin: opt(stdin),
                })
            }
            other => Err(IoError::InvalidUri(format!("unknown STDIO scheme {other}"))),
        }
    }

    pub fn stdin(&self) -> Option<&PathBuf> {
        match self {
            StdioSpec::Null => None,
            StdioSpec::Paths { stdin, .. } | StdioSpec::Binary { stdin, .. } => stdin.as_ref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn null_when_all_empty() {
        assert_eq!(StdioSpec::parse("", "", "").unwrap(), StdioSpec::Null);
    }

    #[test]
    fn plain_paths_are_fifos() {
        let s = StdioSpec::parse("/f/in", "/f/out", "").unwrap();
        assert_eq!(
            s,
            StdioSpec::Paths {
                stdin: Some("/f/in".into()),
                stdout: Some("/f/out".into()),
                stderr: None,
                create_file: false
            }
        );
    }

    #[test]
    fn file_scheme_sends_both_streams_to_the_file() {
        let s = StdioSpec::parse("", "file:///var/log/x.txt", "file:///var/log/x.txt").unwrap();
        assert_eq!(
            s,
            StdioSpec::Paths {
                stdin: None,
                stdout: Some("/var/log/x.txt".into()),
                stderr: Some("/var/log/x.txt".into()),
                create_file: true
            }
        );
    }

    #[test]
    fn binary_scheme_keeps_first_value_per_key() {
        let s = StdioSpec::parse("", "binary:///bin/logger?k1=v1&k2=a%20b&k1=zz", "").unwrap();
        assert_eq!(
            s,
            StdioSpec::Binary {
                path: "/bin/logger".into(),
                args: vec![("k1".into(), "v1".into()), ("k2".into(), "a b".into())],
                stdin: None
            }
        );
    }

    #[test]
    fn percent_escapes_need_two_hex_digits() {
        assert_eq!(percent_decode("a%20b%2"), "a b%2");
        // Not byte 0x01: the "%" stays, and "+" is a query space as usual.
        assert_eq!(percent_decode("%+1x"), "% 1x");
        assert_eq!(percent_decode("%zz"), "%zz");
    }

    #[test]
    fn unknown_scheme_and_relative_uri_are_refused() {
        let e = StdioSpec::parse("", "tcp://1.2.3.4:5", "").unwrap_err();
        assert_eq!(e.to_string(), "unknown STDIO scheme tcp");
        assert!(StdioSpec::parse("", "file://relative/x", "").is_err());
    }
}
