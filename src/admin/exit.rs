//! The operator tool's exit codes: one table for every `shimgate` command, so scripts and
//! monitoring can act on them (MIGRATION.md, "Exit codes"). doctor's 0/1/2/3 are the
//! monitoring-plugin convention (OK, WARNING, CRITICAL, UNKNOWN); a bad command line is
//! `EX_USAGE` from sysexits.h, far from all of them.

/// Done; doctor: nothing needs doing.
pub const OK: i32 = 0;
/// doctor: warnings (works, with steps to take). install/uninstall/upgrade: done in part:
/// something was left as it was or a shim did not move (the output says which).
pub const PARTIAL: i32 = 1;
/// doctor: problems (follow the steps before moving this host).
pub const PROBLEMS: i32 = 2;
/// Nothing was changed: the command refused (a file it does not recognise, an unusable
/// `--binary`, a manifest it cannot read) or could not run (doctor: its matrix unreadable).
pub const REFUSED: i32 = 3;
/// Failed partway: something was changed before the failure; install/uninstall recorded what
/// in the manifest, so running the command again (or the other one) picks it up.
pub const FAILED: i32 = 4;
/// The command line itself is wrong (unknown command or option, missing value).
pub const USAGE: i32 = 64;

/// (code, meaning) for documentation and `--help`.
pub const TABLE: &[(i32, &str)] = &[
    (OK, "done; doctor: nothing needs doing"),
    (
        PARTIAL,
        "doctor: warnings; install/uninstall/upgrade: done in part (something left as it was, a shim not moved)",
    ),
    (PROBLEMS, "doctor: problems"),
    (
        REFUSED,
        "nothing changed: refused (unrecognised file, unusable --binary, unreadable manifest) or could not run",
    ),
    (
        FAILED,
        "failed partway: something changed first (recorded in the install manifest)",
    ),
    (USAGE, "bad command line"),
];
