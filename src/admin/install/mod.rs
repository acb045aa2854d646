//! `shimgate install` and `shimgate uninstall`: switch a host's shims to shimgate and back.
//!
//! Layout after `install --prefix P` (default P: the directory holding `containerd`):
//! `P/shimgate` is a copy of the running binary (a build tree may be cleaned, so the shims
//! never point into one), and `P/containerd-shim`, `P/containerd-shim-runc-v1`,
//! `P/containerd-shim-runc-v2` are relative symlinks to it. Whatever stood at those names
//! before is kept under `<name>.shimgate-orig`: through `dpkg-divert` when a Debian package owns
//! the file (so package upgrades land on the kept name instead of clobbering our link), by a
//! plain rename otherwise, or, for a symlink, by remembering its target. A manifest in the
//! state directory (default `/var/lib/shimgate/<prefix>.json`) records each change, and
//! `uninstall` undoes exactly those.
//!
//! Every replacement is atomic: the old file is first hard-linked to its kept name and the new
//! symlink is renamed over it, so containerd never finds a shim name missing while it starts a
//! container. (dpkg-divert is therefore asked only to record the diversion, `--no-rename`; the
//! result is the same as its `--rename`.) Running shims are untouched: a shim process keeps the
//! inode it was started from, and containerd reconnects to it through the socket in the
//! bundle's `address` file; it records the path it used in `shim-binary-path` and only runs
//! that binary again for `delete`, which the Go shims and shimgate do on each other's bundles
//! alike.
//!
//! `--root R` treats R as the filesystem root (paths, the manifest and `dpkg --root`), so the
//! divert path can be exercised on a throwaway tree.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use super::inspect::{self, BinaryKind};
use super::{exit, run_tool};
use crate::cli::Personality;

/// The shim names install manages.
pub const SHIM_NAMES: [Personality; 3] = [
    Personality::ShimV1,
    Personality::RuncV1,
    Personality::RuncV2,
];
/// Suffix of the kept originals.
pub const KEPT_SUFFIX: &str = ".shimgate-orig";
const BINARY_NAME: &str = "shimgate";
const MANIFEST_FORMAT: u32 = 1;
/// `Record::installed` of the binary copy.
const COPY: &str = "copy";
/// `Record::installed` of a name that was already as wanted before any install.
pub const UNCHANGED: &str = "unchanged";
/// Where install manifests live by default (inside the root).
pub const STATE_DIR: &str = "/var/lib/shimgate";

/// Options shared by install and uninstall.
#[derive(Debug, Clone)]
pub struct Options {
    /// Directory (inside `root`) for the binary and the shim names.
    pub prefix: Option<PathBuf>,
    /// Filesystem root (default `/`).
    pub root: PathBuf,
    /// Where manifests live (host path; default `<root>/var/lib/shimgate`).
    pub state_dir: Option<PathBuf>,
    pub dry_run: bool,
    pub force: bool,
    /// Print one JSON object ([`Outcome`]) instead of the text.
    pub json: bool,
    /// The binary to install (default: the running executable).
    pub source: Option<PathBuf>,
}

/// How an original file was kept.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "method", rename_all = "kebab-case")]
pub enum Kept {
    /// Nothing stood at the name.
    Nothing,
    /// Renamed to `saved_as` (paths inside the root).
    Renamed { saved_as: String, sha256: String },
    /// Diverted with dpkg-divert to `saved_as`.
    Diverted {
        saved_as: String,
        package: String,
        sha256: String,
    },
    /// A symlink with this target (recreated on uninstall).
    Symlink { target: String },
}

/// One name install took over.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Path inside the root.
    pub path: String,
    /// What we put there: a symlink target, or `copy` for the binary.
    pub installed: String,
    pub kept: Kept,
}

/// What uninstall needs to know.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    pub format: u32,
    pub shimgate_version: String,
    pub prefix: String,
    pub records: Vec<Record>,
}

/// Resolved locations.
struct Layout {
    root: PathBuf,
    /// Prefix inside the root, canonical.
    prefix: PathBuf,
    manifest: PathBuf,
}

impl Layout {
    fn host(&self, inner: &Path) -> PathBuf {
        host_path(&self.root, inner)
    }
}

fn host_path(root: &Path, inner: &Path) -> PathBuf {
    root.join(inner.strip_prefix("/").unwrap_or(inner))
}

fn default_prefix() -> PathBuf {
    crate::search_path::which("containerd")
        .and_then(|p| std::fs::canonicalize(p).ok())
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| PathBuf::from("/usr/local/bin"))
}

fn layout(o: &Options) -> Result<Layout, InstallError> {
    let root = std::fs::canonicalize(&o.root).map_err(|source| InstallError::Root {
        path: o.root.display().to_string(),
        source,
    })?;
    let prefix = o.prefix.clone().unwrap_or_else(default_prefix);
    let shown = || prefix.display().to_string();
    if !prefix.is_absolute() {
        return Err(InstallError::RelativePrefix { prefix: shown() });
    }
    // Canonical, so /bin and /usr/bin (merged /usr) are one place and dpkg finds its paths.
    let real = std::fs::canonicalize(host_path(&root, &prefix)).map_err(|source| {
        InstallError::Prefix {
            prefix: shown(),
            source,
        }
    })?;
    if !real.is_dir() {
        return Err(InstallError::PrefixNotADirectory { prefix: shown() });
    }
    let inner = real
        .strip_prefix(&root)
        .map(|p| Path::new("/").join(p))
        .map_err(|_| InstallError::PrefixOutsideRoot { prefix: shown() })?;
    let key = inner.to_string_lossy().trim_matches('/').replace('/', "_");
    let key = if key.is_empty() { "root".into() } else { key };
    let state = o
        .state_dir
        .clone()
        .unwrap_or_else(|| host_path(&root, Path::new(STATE_DIR)));
    Ok(Layout {
        root,
        prefix: inner,
        manifest: state.join(format!("{key}.json")),
    })
}

fn read_manifest(path: &Path) -> Result<Option<Manifest>, InstallError> {
    let shown = || path.display().to_string();
    match std::fs::read(path) {
        Ok(b) => {
            serde_json::from_slice(&b)
                .map(Some)
                .map_err(|source| InstallError::DecodeManifest {
                    path: shown(),
                    source,
                })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(InstallError::ReadManifest {
            path: shown(),
            source,
        }),
    }
}

fn write_manifest(path: &Path, m: &Manifest) -> Result<(), InstallError> {
    if let Some(d) = path.parent() {
        std::fs::create_dir_all(d).map_err(|source| InstallError::CreateDirectory {
            path: d.display().to_string(),
            source,
        })?;
    }
    let data = serde_json::to_vec_pretty(m).map_err(InstallError::EncodeManifest)?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, data).map_err(|source| InstallError::Write {
        path: tmp.display().to_string(),
        source,
    })?;
    std::fs::rename(&tmp, path).map_err(|source| InstallError::Write {
        path: path.display().to_string(),
        source,
    })
}

/// Every install manifest in `state_dir`, with its file (unreadable ones are skipped: doctor
/// reports what it can).
pub fn manifests(state_dir: &Path) -> Vec<(PathBuf, Manifest)> {
    let Ok(rd) = std::fs::read_dir(state_dir) else {
        return Vec::new();
    };
    let mut v: Vec<(PathBuf, Manifest)> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .filter_map(|p| read_manifest(&p).ok().flatten().map(|m| (p, m)))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// What stands at a recorded name now: `ok` (what install put there, or a name install
/// found already right), `changed` (something else) or `missing`.
pub fn record_state(root: &Path, rec: &Record) -> &'static str {
    let host = host_path(root, Path::new(&rec.path));
    if std::fs::symlink_metadata(&host).is_err() {
        "missing"
    } else if rec.installed == UNCHANGED || still_ours(&host, rec) {
        "ok"
    } else {
        "changed"
    }
}

/// The `--json` account of one install or uninstall of one prefix
/// (schema/install.schema.json): what changed and what was already so.
#[derive(Debug, Serialize)]
pub struct Outcome {
    pub command: &'static str,
    pub shimgate_version: String,
    pub prefix: String,
    pub root: String,
    pub manifest: String,
    pub dry_run: bool,
    /// `done`, `nothing-to-do`, `partial` (entries left), `refused` (nothing changed) or
    /// `failed` (failed partway).
    pub result: &'static str,
    pub entries: Vec<Entry>,
    pub errors: Vec<String>,
}

/// One name in an [`Outcome`].
#[derive(Debug, Serialize)]
pub struct Entry {
    pub path: String,
    /// install: `none` (already so), `create`, `update`, `replace-symlink`, `rename`, `divert`,
    /// `rekeep`; uninstall: `none` (there before install), `remove`, `restore-symlink`,
    /// `restore`, `restore-diverted`, `left` (changed since install), `failed`.
    pub action: &'static str,
    /// Whether this run changed the name (false for `none`, `left`, `failed` and dry runs).
    pub changed: bool,
    /// The same as the text output's line.
    pub detail: String,
}

impl Outcome {
    fn new(command: &'static str, o: &Options) -> Outcome {
        Outcome {
            command,
            shimgate_version: crate::VERSION.to_string(),
            prefix: o
                .prefix
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            root: o.root.display().to_string(),
            manifest: String::new(),
            dry_run: o.dry_run,
            result: "done",
            entries: Vec::new(),
            errors: Vec::new(),
        }
    }

    fn at(&mut self, layout: &Layout) {
        self.prefix = layout.prefix.display().to_string();
        self.root = layout.root.display().to_string();
        self.manifest = layout.manifest.display().to_string();
    }

    fn entry(
        &mut self,
        json: bool,
        path: &str,
        action: &'static str,
        changed: bool,
        detail: String,
    ) {
        if !json {
            println!("  {detail}");
        }
        self.entries.push(Entry {
            path: path.to_string(),
            action,
            changed,
            detail,
        });
    }

    /// Report the outcome (JSON line or the error on stderr) and return the exit code.
    fn finish(self, json: bool) -> i32 {
        let code = match self.result {
            "refused" => exit::REFUSED,
            "failed" => exit::FAILED,
            "partial" => exit::PARTIAL,
            _ => exit::OK,
        };
        for e in &self.errors {
            eprintln!("shimgate {}: {e}", self.command);
        }
        if json {
            match serde_json::to_string(&self) {
                Ok(line) => println!("{line}"),
                Err(e) => {
                    eprintln!("shimgate {}: encode: {e}", self.command);
                    return exit::FAILED.max(code);
                }
            }
        }
        code
    }
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Keep => "none",
        Action::Create => "create",
        Action::Update => "update",
        Action::ReplaceSymlink(_) => "replace-symlink",
        Action::Rename => "rename",
        Action::Divert(_) => "divert",
        Action::Rekeep => "rekeep",
    }
}

/// `shimgate install`. Returns the exit code.
pub fn install(o: &Options) -> i32 {
    let mut out = Outcome::new("install", o);
    if let Err(e) = install_inner(o, &mut out) {
        if out.result == "done" {
            out.result = "refused";
        }
        out.errors.push(e.to_string());
    }
    out.finish(o.json)
}

fn install_inner(o: &Options, out: &mut Outcome) -> Result<(), InstallError> {
    let layout = layout(o)?;
    out.at(&layout);
    let source = match &o.source {
        Some(s) => s.clone(),
        None => std::env::current_exe().map_err(InstallError::LocateSelf)?,
    };
    // Only a binary named with --binary needs checking; the running one is shimgate.
    if o.source.is_some() && !matches!(inspect::classify(&source), BinaryKind::Shimgate { .. }) {
        return Err(InstallError::NotShimgate {
            path: source.display().to_string(),
        });
    }
    let previous = read_manifest(&layout.manifest)?;
    let prev_rec = |inner: &Path| {
        previous
            .as_ref()
            .and_then(|m| m.records.iter().find(|r| Path::new(&r.path) == inner))
    };

    // Decide everything first: a refusal leaves the host untouched.
    let mut plan = Vec::new();
    let mut refusals = Vec::new();
    let bin_inner = layout.prefix.join(BINARY_NAME);
    let mut slots: Vec<(PathBuf, Option<String>, String)> =
        vec![(bin_inner.clone(), None, "shimgate binary".to_string())];
    for p in SHIM_NAMES {
        slots.push((
            layout.prefix.join(p.binary_name()),
            Some(BINARY_NAME.to_string()),
            format!("{} symlink", p.binary_name()),
        ));
    }
    for (inner, link, what) in slots {
        let ours = prev_rec(&inner);
        match judge(&layout, &inner, link.as_deref(), &source, ours, o.force) {
            Ok(action) => plan.push(Planned {
                inner,
                action,
                link,
                what,
            }),
            Err(e) => refusals.push(e),
        }
    }
    if !refusals.is_empty() {
        out.result = "refused";
        out.errors
            .extend(refusals.iter().map(|r| format!("nothing changed: {r}")));
        return Ok(());
    }

    let verb = if o.dry_run { "would" } else { "did" };
    if !o.json {
        println!(
            "shimgate install {} into {}{} ({verb}):",
            crate::VERSION,
            layout.prefix.display(),
            if layout.root == Path::new("/") {
                String::new()
            } else {
                format!(" under root {}", layout.root.display())
            }
        );
    }
    if o.dry_run {
        for p in &plan {
            let path = p.inner.display().to_string();
            out.entry(
                o.json,
                &path,
                action_name(&p.action),
                false,
                describe(p, &source),
            );
        }
        if !o.json {
            println!("  manifest {}", layout.manifest.display());
            println!("dry run: nothing changed");
        }
        return Ok(());
    }

    let mut manifest = Manifest {
        format: MANIFEST_FORMAT,
        shimgate_version: crate::VERSION.to_string(),
        prefix: layout.prefix.to_string_lossy().into_owned(),
        records: Vec::new(),
    };
    for p in &plan {
        match apply(&layout, p, &source, prev_rec(&p.inner)) {
            Ok(rec) => {
                let path = p.inner.display().to_string();
                let changed = !matches!(p.action, Action::Keep);
                out.entry(
                    o.json,
                    &path,
                    action_name(&p.action),
                    changed,
                    describe(p, &source),
                );
                manifest.records.push(rec);
                // After every change, so a failure later still leaves an exact undo list.
                if let Err(e) = write_manifest(&layout.manifest, &manifest) {
                    out.result = "failed";
                    return Err(e);
                }
            }
            Err(e) => {
                out.result = "failed";
                // Keep the records of a previous install we have not reached yet.
                if let Some(prev) = &previous {
                    for r in &prev.records {
                        if !manifest.records.iter().any(|m| m.path == r.path) {
                            manifest.records.push(r.clone());
                        }
                    }
                }
                write_manifest(&layout.manifest, &manifest)?;
                return Err(InstallError::Partway {
                    source: Box::new(e),
                    manifest: layout.manifest.display().to_string(),
                });
            }
        }
    }
    if out.entries.iter().all(|e| !e.changed) {
        out.result = "nothing-to-do";
    }
    if !o.json {
        println!("  manifest {}", layout.manifest.display());
        println!(
            "New containers now start under shimgate; running containers keep the shims they \
             started with (containerd reconnects to them through their sockets).\n\
             Check with `shimgate doctor`; undo with `shimgate uninstall --prefix {}`.",
            layout.prefix.display()
        );
    }
    Ok(())
}

/// `shimgate uninstall`. Returns the exit code.
pub fn uninstall(o: &Options) -> i32 {
    let mut out = Outcome::new("uninstall", o);
    if let Err(e) = uninstall_inner(o, &mut out) {
        if out.result == "done" {
            out.result = "refused";
        }
        out.errors.push(e.to_string());
    }
    out.finish(o.json)
}

/// `shimgate uninstall --all`: every prefix with a manifest in the state directory (what the
/// Debian package's prerm runs, so no shim name outlives the binary it points to). The exit
/// code is the worst of them.
pub fn uninstall_all(o: &Options) -> i32 {
    let root = match std::fs::canonicalize(&o.root) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("shimgate uninstall: root {}: {e}", o.root.display());
            return exit::REFUSED;
        }
    };
    let state = o
        .state_dir
        .clone()
        .unwrap_or_else(|| host_path(&root, Path::new(STATE_DIR)));
    let found = manifests(&state);
    if found.is_empty() && !o.json {
        println!(
            "shimgate uninstall: no shimgate install recorded in {}; nothing to do",
            state.display()
        );
    }
    found
        .into_iter()
        .map(|(_, m)| {
            uninstall(&Options {
                prefix: Some(PathBuf::from(&m.prefix)),
                ..o.clone()
            })
        })
        .max()
        .unwrap_or(exit::OK)
}

/// Is `host` still what install put there?
fn still_ours(host: &Path, rec: &Record) -> bool {
    if rec.installed == COPY {
        matches!(inspect::classify(host), BinaryKind::Shimgate { .. })
    } else {
        std::fs::read_link(host).is_ok_and(|t| t.to_string_lossy() == rec.installed.as_str())
    }
}

fn uninstall_inner(o: &Options, out: &mut Outcome) -> Result<(), InstallError> {
    let layout = layout(o)?;
    out.at(&layout);
    let Some(manifest) = read_manifest(&layout.manifest)? else {
        out.result = "nothing-to-do";
        if !o.json {
            println!(
                "shimgate uninstall: no shimgate install recorded for {} ({} not found); nothing to do",
                layout.prefix.display(),
                layout.manifest.display()
            );
        }
        return Ok(());
    };
    let verb = if o.dry_run { "would" } else { "did" };
    if !o.json {
        println!(
            "shimgate uninstall from {} ({verb}):",
            layout.prefix.display()
        );
    }
    let mut left = Vec::new();
    let mut failed = false;
    // Shims first, the binary last, so no shim name ever points at a missing binary.
    let mut order: Vec<&Record> = manifest.records.iter().collect();
    order.sort_by_key(|r| r.installed == COPY);
    for rec in order {
        if rec.installed == UNCHANGED {
            out.entry(
                o.json,
                &rec.path,
                "none",
                false,
                format!("ok       {} (was there before install; left)", rec.path),
            );
            continue;
        }
        let inner = Path::new(&rec.path);
        let host = layout.host(inner);
        let present = std::fs::symlink_metadata(&host).is_ok();
        if present && !still_ours(&host, rec) && !o.force {
            out.entry(
                o.json,
                &rec.path,
                "left",
                false,
                format!(
                    "left     {} (changed since install; use --force to restore the original anyway)",
                    rec.path
                ),
            );
            left.push(rec.clone());
            continue;
        }
        let (action, line) = match &rec.kept {
            Kept::Nothing => ("remove", format!("remove   {}", rec.path)),
            Kept::Symlink { target } => (
                "restore-symlink",
                format!("restore  {} -> {target} (symlink)", rec.path),
            ),
            Kept::Renamed { saved_as, .. } => {
                ("restore", format!("restore  {} from {saved_as}", rec.path))
            }
            Kept::Diverted {
                saved_as, package, ..
            } => (
                "restore-diverted",
                format!(
                    "restore  {} from {saved_as} (remove dpkg diversion, package {package})",
                    rec.path
                ),
            ),
        };
        if o.dry_run {
            out.entry(o.json, &rec.path, action, false, line);
            continue;
        }
        match restore(&layout, rec) {
            Ok(()) => out.entry(o.json, &rec.path, action, true, line),
            Err(e) => {
                out.entry(
                    o.json,
                    &rec.path,
                    "failed",
                    false,
                    format!("failed   {}: {e}", rec.path),
                );
                out.errors.push(format!("{}: {e}", rec.path));
                failed = true;
                left.push(rec.clone());
            }
        }
    }
    if o.dry_run {
        if !o.json {
            println!("dry run: nothing changed");
        }
        return Ok(());
    }
    if left.is_empty() {
        std::fs::remove_file(&layout.manifest).map_err(|source| InstallError::Remove {
            path: layout.manifest.display().to_string(),
            source,
        })?;
        if let Some(d) = layout.manifest.parent() {
            // Only if empty: other prefixes may have manifests there.
            let _ = std::fs::remove_dir(d);
        }
        if !o.json {
            println!(
                "Restored. New containers start under the original shims; containers started \
                 under shimgate keep running under it until they are removed."
            );
        }
    } else {
        out.result = if failed { "failed" } else { "partial" };
        let m = Manifest {
            records: left,
            ..manifest
        };
        write_manifest(&layout.manifest, &m)?;
        if !o.json {
            println!(
                "Some entries were left; they stay recorded in {}.",
                layout.manifest.display()
            );
        }
    }
    Ok(())
}

fn restore(layout: &Layout, rec: &Record) -> Result<(), InstallError> {
    let inner = Path::new(&rec.path);
    let host = layout.host(inner);
    let remove = |p: &Path| {
        std::fs::remove_file(p).map_err(|source| InstallError::Remove {
            path: p.display().to_string(),
            source,
        })
    };
    match &rec.kept {
        Kept::Nothing => match remove(&host) {
            Ok(()) => Ok(()),
            Err(InstallError::Remove { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Ok(())
            }
            Err(e) => Err(e),
        },
        Kept::Symlink { target } => place_symlink(&host, target),
        Kept::Renamed { saved_as, sha256 } => {
            let saved = layout.host(Path::new(saved_as));
            check_sum(&saved, sha256);
            place_hardlink(&saved, &host)?;
            remove(&saved)
        }
        Kept::Diverted {
            saved_as, sha256, ..
        } => {
            let saved = layout.host(Path::new(saved_as));
            // A package upgrade while diverted lands on the kept name: that newer file is
            // the right one to restore, so a different checksum is only reported.
            check_sum(&saved, sha256);
            place_hardlink(&saved, &host)?;
            run_checked(divert_command(
                &layout.root,
                inner,
                Path::new(saved_as),
                false,
            ))?;
            remove(&saved)
        }
    }
}

fn check_sum(saved: &Path, want: &str) {
    if let Ok(h) = inspect::sha256_file(saved) {
        if h != want {
            println!(
                "  note     {} changed since install (a package upgrade?); restoring it as it is now",
                saved.display()
            );
        }
    }
}

mod dpkg;
mod error;
mod plan;

pub use error::InstallError;

use dpkg::*;
pub use dpkg::{divert_command, package_owner};
use plan::*;

#[cfg(test)]
mod tests;
