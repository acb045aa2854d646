//! A small re-implementation of the parsing rules of Go's `flag` package.
//!
//! containerd builds shim command lines for Go binaries, so the exact syntax it produces (and the
//! exact syntax operators have learnt to type) is Go's: `-name value`, `--name value`,
//! `-name=value`, boolean flags only as `-name` or `-name=<bool>`, parsing stops at the first
//! non-flag word or at `--`. Using clap here would accept and reject different command lines than
//! the Go shims do, so this module replicates Go's behaviour, driven by a per-personality table
//! of [`FlagDef`]s. Typed argument structs are built on top of it in the sibling modules.

use thiserror::Error;

/// What kind of value a flag takes. Go distinguishes only booleans (no separate value allowed)
/// from everything else (value required), which is all the shims need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlagKind {
    /// `-name` or `-name=<bool>`; `-name <word>` does NOT consume the word.
    Bool,
    /// `-name value`, `-name=value`; the value is mandatory.
    String,
}

/// One accepted flag of a personality. Aliases are separate entries; the typed layer maps
/// several names onto one field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlagDef {
    /// Name without dashes, e.g. `"namespace"`.
    pub name: &'static str,
    /// Whether the flag takes a value.
    pub kind: FlagKind,
    /// One-line help shown by [`usage_text`].
    pub help: &'static str,
    /// Default shown in the usage text (`None` = Go's zero value, not shown).
    pub default: Option<&'static str>,
}

/// A value given on the command line for one flag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FlagValue {
    /// Value of a [`FlagKind::Bool`] flag.
    Bool(bool),
    /// Value of a [`FlagKind::String`] flag (may be empty: `-name=` is legal in Go).
    String(String),
}

/// Result of a successful parse: every flag occurrence in command-line order (Go lets the
/// last occurrence win; the typed layer gets that for free by applying them in order), and the
/// positional arguments left after the flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedFlags {
    /// `(flag name as defined, value)` in the order given.
    pub flags: Vec<(&'static str, FlagValue)>,
    /// Arguments after the last flag (after `--` or starting at the first non-flag word).
    pub positional: Vec<String>,
}

/// A command-line error, with messages worded like Go's `flag` package so that operators and
/// containerd logs see what they would see with the Go shims.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CliError {
    /// `-h`, `-help` (or `--h`, `--help`): print usage, exit 0.
    #[error("flag: help requested")]
    Help,
    /// A flag that is not in the personality's table.
    #[error("flag provided but not defined: -{0}")]
    NotDefined(String),
    /// A non-boolean flag at the end of the command line without a value.
    #[error("flag needs an argument: -{0}")]
    NeedsArgument(String),
    /// `---x`, `-=x` and similar.
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    /// `-debug=maybe`.
    #[error("invalid boolean value {value:?} for -{name}: parse error")]
    InvalidBool {
        /// Flag name.
        name: String,
        /// The rejected text.
        value: String,
    },
    /// A positional action word the shim does not implement (see `ShimV2Args::mode`).
    #[error("unknown action {0:?}: expected \"start\", \"delete\" or none")]
    UnknownAction(String),
    /// `-namespace` missing or empty; worded exactly like the Go shim (observed in
    /// protocols.md 7.7) because containerd shows it verbatim.
    #[error("shim namespace cannot be empty")]
    EmptyNamespace,
}

impl CliError {
    /// Process exit code Go uses for this error: 0 for help, 2 for flag syntax errors
    /// (`flag.ExitOnError`), 1 for errors found after parsing (Go's `run` returned an error).
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Help => 0,
            CliError::NotDefined(_)
            | CliError::NeedsArgument(_)
            | CliError::BadSyntax(_)
            | CliError::InvalidBool { .. } => 2,
            CliError::UnknownAction(_) | CliError::EmptyNamespace => 1,
        }
    }

    /// Whether Go would print the usage text together with this error.
    pub fn shows_usage(&self) -> bool {
        self.exit_code() != 1
    }
}

/// Go's `strconv.ParseBool`: exactly these spellings, nothing else (no "yes", no "on").
pub fn parse_go_bool(s: &str) -> Option<bool> {
    match s {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// Parse `args` (without argv[0]) against `defs` with Go `flag` semantics.
pub fn parse<I, S>(defs: &[FlagDef], args: I) -> Result<ParsedFlags, CliError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    let args: Vec<String> = args.into_iter().map(|s| s.as_ref().to_owned()).collect();
    let mut flags = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        // A lone "-" or any word not starting with '-' is the first positional argument.
        if arg.len() < 2 || !arg.starts_with('-') {
            break;
        }
        let mut name = &arg[1..];
        if let Some(rest) = name.strip_prefix('-') {
            if rest.is_empty() {
                // "--" ends the flags and is itself consumed.
                i += 1;
                break;
            }
            name = rest;
        }
        if name.is_empty() || name.starts_with('-') || name.starts_with('=') {
            return Err(CliError::BadSyntax(arg.clone()));
        }
        i += 1;
        let (name, inline_value) = match name.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (name, None),
        };
        let Some(def) = defs.iter().find(|d| d.name == name) else {
            // Go answers help only when no flag of that name is defined.
            if name == "h" || name == "help" {
                return Err(CliError::Help);
            }
            return Err(CliError::NotDefined(name.to_owned()));
        };
        let value = match def.kind {
            FlagKind::Bool => match inline_value {
                None => FlagValue::Bool(true),
                Some(v) => match parse_go_bool(v) {
                    Some(b) => FlagValue::Bool(b),
                    None => {
                        return Err(CliError::InvalidBool {
                            name: name.to_owned(),
                            value: v.to_owned(),
                        })
                    }
                },
            },
            FlagKind::String => match inline_value {
                Some(v) => FlagValue::String(v.to_owned()),
                // Go takes the next word whatever it looks like, even "-x" or "--".
                None => match args.get(i) {
                    Some(v) => {
                        i += 1;
                        FlagValue::String(v.clone())
                    }
                    None => return Err(CliError::NeedsArgument(name.to_owned())),
                },
            },
        };
        flags.push((def.name, value));
    }
    Ok(ParsedFlags {
        flags,
        positional: args[i..].to_vec(),
    })
}

/// Render a Go-`PrintDefaults`-style usage text: header, then flags sorted by name.
pub fn usage_text(program: &str, defs: &[FlagDef]) -> String {
    let mut sorted: Vec<&FlagDef> = defs.iter().collect();
    sorted.sort_by_key(|d| d.name);
    let mut out = format!("Usage of {program}:\n");
    for d in sorted {
        let mut line = format!("  -{}", d.name);
        if d.kind == FlagKind::String {
            line.push_str(" string");
        }
        // Go keeps one-letter boolean flags on one line with their help, others wrap.
        if line.len() <= 4 {
            line.push('\t');
        } else {
            line.push_str("\n    \t");
        }
        line.push_str(d.help);
        if let Some(default) = d.default {
            match d.kind {
                FlagKind::String => line.push_str(&format!(" (default {default:?})")),
                FlagKind::Bool => line.push_str(&format!(" (default {default})")),
            }
        }
        out.push_str(&line);
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEFS: &[FlagDef] = &[
        FlagDef {
            name: "debug",
            kind: FlagKind::Bool,
            help: "debug",
            default: None,
        },
        FlagDef {
            name: "id",
            kind: FlagKind::String,
            help: "id",
            default: None,
        },
        FlagDef {
            name: "v",
            kind: FlagKind::Bool,
            help: "version",
            default: None,
        },
    ];

    fn p(args: &[&str]) -> Result<ParsedFlags, CliError> {
        parse(DEFS, args)
    }

    #[test]
    fn bool_spellings() {
        for (s, want) in [
            ("1", true),
            ("t", true),
            ("T", true),
            ("TRUE", true),
            ("true", true),
            ("True", true),
            ("0", false),
            ("f", false),
            ("F", false),
            ("FALSE", false),
            ("false", false),
            ("False", false),
        ] {
            let arg = format!("-debug={s}");
            let got = p(&[arg.as_str()]).unwrap();
            assert_eq!(got.flags, vec![("debug", FlagValue::Bool(want))], "{s}");
        }
        for bad in ["yes", "", "tRUE", "on"] {
            let arg = format!("--debug={bad}");
            assert_eq!(
                p(&[arg.as_str()]).unwrap_err(),
                CliError::InvalidBool {
                    name: "debug".into(),
                    value: bad.into()
                }
            );
        }
    }

    #[test]
    fn value_forms() {
        for args in [&["-id", "x"][..], &["--id", "x"], &["-id=x"], &["--id=x"]] {
            let got = p(args).unwrap();
            assert_eq!(got.flags, vec![("id", FlagValue::String("x".into()))]);
            assert!(got.positional.is_empty());
        }
        // The next word is taken even when it looks like a flag.
        let got = p(&["-id", "-debug"]).unwrap();
        assert_eq!(got.flags, vec![("id", FlagValue::String("-debug".into()))]);
        // Empty inline value and '=' inside the value.
        let got = p(&["-id=", "-id=a=b"]).unwrap();
        assert_eq!(
            got.flags,
            vec![
                ("id", FlagValue::String(String::new())),
                ("id", FlagValue::String("a=b".into()))
            ]
        );
    }

    #[test]
    fn stops_at_positional_and_double_dash() {
        let got = p(&["-debug", "start", "-id", "x"]).unwrap();
        assert_eq!(got.positional, vec!["start", "-id", "x"]);
        let got = p(&["--", "-debug"]).unwrap();
        assert!(got.flags.is_empty());
        assert_eq!(got.positional, vec!["-debug"]);
        let got = p(&["-", "x"]).unwrap();
        assert_eq!(got.positional, vec!["-", "x"]);
        let got = p(&["-debug", "true"]).unwrap();
        assert_eq!(got.flags, vec![("debug", FlagValue::Bool(true))]);
        assert_eq!(got.positional, vec!["true"]);
    }

    #[test]
    fn errors() {
        assert_eq!(
            p(&["-x"]).unwrap_err().to_string(),
            "flag provided but not defined: -x"
        );
        assert_eq!(p(&["--x=1"]).unwrap_err(), CliError::NotDefined("x".into()));
        assert_eq!(
            p(&["-id"]).unwrap_err().to_string(),
            "flag needs an argument: -id"
        );
        assert_eq!(
            p(&["---id"]).unwrap_err().to_string(),
            "bad flag syntax: ---id"
        );
        assert_eq!(p(&["-=x"]).unwrap_err(), CliError::BadSyntax("-=x".into()));
        for h in ["-h", "-help", "--help", "-h=1"] {
            assert_eq!(p(&[h]).unwrap_err(), CliError::Help);
        }
        assert_eq!(CliError::Help.exit_code(), 0);
        assert_eq!(CliError::NotDefined("x".into()).exit_code(), 2);
    }

    #[test]
    fn usage_layout() {
        let text = usage_text("prog", DEFS);
        assert_eq!(
            text,
            "Usage of prog:\n  -debug\n    \tdebug\n  -id string\n    \tid\n  -v\tversion\n"
        );
    }
}
