//! Why install or uninstall refused or stopped partway, one case per cause, so the command's
//! outcome (refused: nothing changed; failed: something had) is decided where the error is met
//! and callers match on cases, not on text.

/// Why install or uninstall refused, or failed partway. The texts are what the command prints
/// (and `--json` carries in `errors`); whether something had changed first is the outcome's
/// `result` (`refused` or `failed`), decided where the error is met.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("root {path}: {source}")]
    Root {
        path: String,
        source: std::io::Error,
    },
    #[error("--prefix must be absolute: {prefix}")]
    RelativePrefix { prefix: String },
    #[error("prefix {prefix}: {source}")]
    Prefix {
        prefix: String,
        source: std::io::Error,
    },
    #[error("prefix {prefix} is not a directory")]
    PrefixNotADirectory { prefix: String },
    #[error("prefix {prefix} leaves the root")]
    PrefixOutsideRoot { prefix: String },
    #[error("manifest {path}: {source}")]
    ReadManifest {
        path: String,
        source: std::io::Error,
    },
    #[error("manifest {path}: {source}")]
    DecodeManifest {
        path: String,
        source: serde_json::Error,
    },
    #[error("encode manifest: {0}")]
    EncodeManifest(serde_json::Error),
    #[error("create {path}: {source}")]
    CreateDirectory {
        path: String,
        source: std::io::Error,
    },
    #[error("write {path}: {source}")]
    Write {
        path: String,
        source: std::io::Error,
    },
    #[error("remove {path}: {source}")]
    Remove {
        path: String,
        source: std::io::Error,
    },
    #[error("locate this binary: {0}")]
    LocateSelf(std::io::Error),
    #[error("{path} is not a shimgate binary")]
    NotShimgate { path: String },
    /// A helper (dpkg-divert) could not run, or failed.
    #[error("{command}: {source}")]
    RunTool {
        command: String,
        source: std::io::Error,
    },
    #[error("{command}: exit {status}: {stderr}")]
    ToolFailed {
        command: String,
        status: i32,
        stderr: String,
    },
    #[error("symlink {path}: {source}")]
    Symlink {
        path: String,
        source: std::io::Error,
    },
    #[error("link {from} -> {to}: {source}")]
    Link {
        from: String,
        to: String,
        source: std::io::Error,
    },
    #[error("rename {from} -> {to}: {source}")]
    Rename {
        from: String,
        to: String,
        source: std::io::Error,
    },
    #[error("copy {from} -> {to}: {source}")]
    Copy {
        from: String,
        to: String,
        source: std::io::Error,
    },
    #[error("chmod {path}: {source}")]
    Chmod {
        path: String,
        source: std::io::Error,
    },
    /// Reading what stands at a name (its metadata or its checksum).
    #[error("{path}: {source}")]
    Inspect {
        path: String,
        source: std::io::Error,
    },
    #[error("keep {path} as {saved}: {source}")]
    Keep {
        path: String,
        saved: String,
        source: std::io::Error,
    },
    #[error(
        "{path} is a symlink to {target}, which is neither shimgate nor a containerd shim; \
         use --force to replace it (its target is remembered and restored by uninstall)"
    )]
    ForeignSymlink { path: String, target: String },
    #[error("{path} is not a file or symlink; refusing to touch it")]
    NotAFile { path: String },
    #[error(
        "{saved} exists already and is not recorded by a shimgate install; \
         move it away (it may be an original from an earlier install) and run again"
    )]
    KeptNameTaken { saved: String },
    #[error("{path} is already diverted by {by}; refusing to stack diversions")]
    AlreadyDiverted { path: String, by: String },
    #[error(
        "{path} is neither shimgate nor a containerd shim and no package owns it; \
         use --force to replace it (it is kept as {saved} and restored by uninstall)"
    )]
    Foreign { path: String, saved: String },
    /// A change failed after others were made; the manifest records them.
    #[error(
        "{source}\n(changes made so far are recorded in {manifest}; `shimgate uninstall` undoes them)"
    )]
    Partway {
        source: Box<InstallError>,
        manifest: String,
    },
}
