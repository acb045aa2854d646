//! Command line of every personality.
//!
//! The binary is chosen by `basename(argv[0])` ([`Personality`]); each shim personality is
//! invoked by containerd with Go `flag`-package syntax, which [`goflags`] replicates, and
//! [`ShimV1Args`] / [`ShimV2Args`] give the rest of the program typed values. The operator tool
//! (`shimgate`) has an ordinary CLI and is not parsed here.

pub mod goflags;
pub mod shim_v1;
pub mod shim_v2;

#[cfg(test)]
mod fixtures;

use std::ffi::OsStr;
use std::path::Path;

pub use goflags::CliError;
pub use shim_v1::ShimV1Args;
pub use shim_v2::{Action, Mode, ShimV2Args};

/// Which program this binary is acting as, decided from the basename of argv[0].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Personality {
    /// `containerd-shim`: legacy shim v1 API (`io.containerd.runtime.v1.linux`).
    ShimV1,
    /// `containerd-shim-runc-v1`: task API, one container per shim.
    RuncV1,
    /// `containerd-shim-runc-v2`: task API, containers grouped per shim.
    RuncV2,
    /// `shimgate`: operator tool.
    Admin,
}

/// containerd 1.x's legacy runtime, the one `containerd-shim` serves (also the name of its
/// state directory).
pub const LEGACY_RUNTIME: &str = "io.containerd.runtime.v1.linux";

impl Personality {
    /// All personalities, for tables and tests.
    pub const ALL: [Personality; 4] = [
        Personality::ShimV1,
        Personality::RuncV1,
        Personality::RuncV2,
        Personality::Admin,
    ];

    /// Pick the personality from argv[0]. containerd gives an absolute path for v2 shims and the
    /// bare name for the v1 shim, so only the basename counts. `None` for any other name.
    pub fn from_argv0(argv0: &OsStr) -> Option<Personality> {
        let base = Path::new(argv0).file_name()?;
        Personality::ALL
            .into_iter()
            .find(|p| OsStr::new(p.binary_name()) == base)
    }

    /// The file name this personality is installed under.
    pub fn binary_name(self) -> &'static str {
        match self {
            Personality::ShimV1 => "containerd-shim",
            Personality::RuncV1 => "containerd-shim-runc-v1",
            Personality::RuncV2 => "containerd-shim-runc-v2",
            Personality::Admin => "shimgate",
        }
    }

    /// The name `shimgate doctor` reports a running shim of this personality under (its
    /// `--json` `personality` field, schema/doctor.schema.json).
    pub fn report_name(self) -> &'static str {
        match self {
            Personality::ShimV1 => "shim-v1",
            Personality::RuncV1 => "runc-v1",
            Personality::RuncV2 => "runc-v2",
            Personality::Admin => "shimgate",
        }
    }

    /// The personality a doctor report names (the inverse of [`Personality::report_name`]).
    pub fn from_report_name(name: &str) -> Option<Personality> {
        Personality::ALL
            .into_iter()
            .find(|p| p.report_name() == name)
    }

    /// The containerd runtime name served by this personality. Go v2 shims prefix their fatal
    /// errors with it (`io.containerd.runc.v2: …`), and `-info` reports it.
    pub fn runtime_name(self) -> Option<&'static str> {
        match self {
            Personality::ShimV1 => Some(LEGACY_RUNTIME),
            Personality::RuncV1 => Some("io.containerd.runc.v1"),
            Personality::RuncV2 => Some("io.containerd.runc.v2"),
            Personality::Admin => None,
        }
    }

    /// The Go-flag table of a shim personality (`None` for the operator tool).
    pub fn flags(self) -> Option<&'static [goflags::FlagDef]> {
        match self {
            Personality::ShimV1 => Some(shim_v1::FLAGS),
            Personality::RuncV1 | Personality::RuncV2 => Some(shim_v2::FLAGS),
            Personality::Admin => None,
        }
    }
}

/// Usage text in the layout Go's `flag.PrintDefaults` uses, printed on `-h` and on flag errors.
pub fn usage(personality: Personality) -> String {
    match personality.flags() {
        Some(defs) => goflags::usage_text(personality.binary_name(), defs),
        None => format!(
            "Usage of {}: see `{} --help`; as a shim it must be invoked as one of {}, {} or {}\n",
            personality.binary_name(),
            personality.binary_name(),
            Personality::ShimV1.binary_name(),
            Personality::RuncV1.binary_name(),
            Personality::RuncV2.binary_name(),
        ),
    }
}

/// Report a command-line error as Go's `flag` package does (the message, then the usage when Go
/// shows it, on stderr) and return the exit code (`-h` prints only the usage and exits 0).
pub fn report(personality: Personality, e: &CliError) -> i32 {
    if !matches!(e, CliError::Help) {
        eprintln!("{e}");
    }
    if e.shows_usage() {
        eprint!("{}", usage(personality));
    }
    e.exit_code()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personality_from_argv0() {
        let cases = [
            (
                "/usr/bin/containerd-shim-runc-v2",
                Some(Personality::RuncV2),
            ),
            ("containerd-shim-runc-v1", Some(Personality::RuncV1)),
            ("containerd-shim", Some(Personality::ShimV1)),
            ("/usr/local/sbin/shimgate", Some(Personality::Admin)),
            ("/usr/bin/containerd-shim-runc-v3", None),
            ("", None),
        ];
        for (argv0, want) in cases {
            assert_eq!(Personality::from_argv0(OsStr::new(argv0)), want, "{argv0}");
        }
    }

    #[test]
    fn usage_lists_every_flag() {
        for p in Personality::ALL {
            let text = usage(p);
            assert!(text.starts_with(&format!("Usage of {}", p.binary_name())));
            for def in p.flags().unwrap_or_default() {
                assert!(
                    text.contains(&format!("  -{}", def.name)),
                    "{p:?} -{}",
                    def.name
                );
            }
        }
        assert!(usage(Personality::ShimV1).contains("(default \"/run/containerd/runc\")"));
    }
}
