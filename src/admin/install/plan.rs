//! Judging each shim name (what stands there, what install or uninstall would do) and
//! applying the plan: atomic replacements through a hard link and a rename.

use super::*;

pub(super) fn run_checked(cmd: Command) -> Result<(), InstallError> {
    let command = format!("{cmd:?}");
    let out = match run_tool(cmd) {
        Ok(out) => out,
        Err(source) => return Err(InstallError::RunTool { command, source }),
    };
    if out.status != 0 {
        return Err(InstallError::ToolFailed {
            command,
            status: out.status,
            stderr: out.stderr.trim().to_string(),
        });
    }
    Ok(())
}

/// Rename `tmp` over `host` (removing `tmp` if that fails).
fn rename_into_place(tmp: &Path, host: &Path) -> Result<(), InstallError> {
    std::fs::rename(tmp, host).map_err(|source| {
        let _ = std::fs::remove_file(tmp);
        InstallError::Rename {
            from: tmp.display().to_string(),
            to: host.display().to_string(),
            source,
        }
    })
}

pub(super) fn temp_name(host: &Path, tag: &str) -> PathBuf {
    let name = host
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    host.with_file_name(format!(".{name}.shimgate-{tag}"))
}

/// Put a symlink `host -> target` in place atomically (replacing whatever is there).
pub(super) fn place_symlink(host: &Path, target: &str) -> Result<(), InstallError> {
    let tmp = temp_name(host, "new");
    let _ = std::fs::remove_file(&tmp);
    symlink(target, &tmp).map_err(|source| InstallError::Symlink {
        path: tmp.display().to_string(),
        source,
    })?;
    rename_into_place(&tmp, host)
}

/// Put a hard link of `from` at `host` atomically (replacing whatever is there).
pub(super) fn place_hardlink(from: &Path, host: &Path) -> Result<(), InstallError> {
    let tmp = temp_name(host, "restore");
    let _ = std::fs::remove_file(&tmp);
    std::fs::hard_link(from, &tmp).map_err(|source| InstallError::Link {
        from: from.display().to_string(),
        to: tmp.display().to_string(),
        source,
    })?;
    rename_into_place(&tmp, host)
}

/// One change install makes, decided before anything is touched.
#[derive(Debug)]
pub(super) enum Action {
    /// Already as wanted.
    Keep,
    /// Nothing there: create.
    Create,
    /// Our own earlier install: update in place (the binary after an upgrade).
    Update,
    /// Replace a symlink, remembering its target.
    ReplaceSymlink(String),
    /// Keep the file under the kept name, by rename.
    Rename,
    /// Keep the file under the kept name, by dpkg-divert for this package.
    Divert(String),
    /// A name this install had renamed away was written over since (an RPM upgrade writes
    /// the new shim over our symlink): the new file replaces the older kept original.
    Rekeep,
}

pub(super) struct Planned {
    pub(super) inner: PathBuf,
    pub(super) action: Action,
    /// What goes there: a symlink target, or None for the binary copy.
    pub(super) link: Option<String>,
    pub(super) what: String,
}

/// What stands at `host` (inside `root` at `inner`), and may install replace it?
pub(super) fn judge(
    layout: &Layout,
    inner: &Path,
    want_link: Option<&str>,
    source: &Path,
    ours: Option<&Record>,
    force: bool,
) -> Result<Action, InstallError> {
    let host = layout.host(inner);
    let path = || inner.display().to_string();
    let meta = match std::fs::symlink_metadata(&host) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Action::Create),
        Err(source) => {
            return Err(InstallError::Inspect {
                path: path(),
                source,
            })
        }
    };
    let saved = PathBuf::from(format!("{}{KEPT_SUFFIX}", inner.display()));
    let saved_exists = std::fs::symlink_metadata(layout.host(&saved)).is_ok();
    if meta.file_type().is_symlink() {
        let target = std::fs::read_link(&host)
            .map(|t| t.to_string_lossy().into_owned())
            .unwrap_or_default();
        if want_link == Some(target.as_str()) {
            return Ok(Action::Keep);
        }
        let recognised = matches!(
            inspect::classify(&host),
            BinaryKind::Shimgate { .. } | BinaryKind::GoContainerd
        );
        if !recognised && !force {
            return Err(InstallError::ForeignSymlink {
                path: path(),
                target,
            });
        }
        return Ok(Action::ReplaceSymlink(target));
    }
    if !meta.is_file() {
        return Err(InstallError::NotAFile { path: path() });
    }
    if want_link.is_none() {
        // The binary slot.
        if same_contents(&host, source) {
            return Ok(Action::Keep);
        }
        if ours.is_some() && matches!(inspect::classify(&host), BinaryKind::Shimgate { .. }) {
            return Ok(Action::Update);
        }
    }
    if saved_exists {
        // Our own rename, written over since by a package upgrade (not dpkg: its upgrades
        // land on the diverted name): keep the newer file as the original.
        let renamed_by_us = matches!(
            ours,
            Some(Record {
                kept: Kept::Renamed { .. },
                ..
            })
        );
        let recognised = matches!(
            inspect::classify(&host),
            BinaryKind::Shimgate { .. } | BinaryKind::GoContainerd
        );
        if renamed_by_us && want_link.is_some() && (recognised || force) {
            return Ok(Action::Rekeep);
        }
        return Err(InstallError::KeptNameTaken {
            saved: saved.display().to_string(),
        });
    }
    if let Some(who) = dpkg_diverter(&layout.root, inner) {
        return Err(InstallError::AlreadyDiverted {
            path: path(),
            by: who,
        });
    }
    if let Some(pkg) = dpkg_owner(&layout.root, inner) {
        return Ok(Action::Divert(pkg));
    }
    let recognised = matches!(
        inspect::classify(&host),
        BinaryKind::Shimgate { .. } | BinaryKind::GoContainerd
    );
    if !recognised && !force {
        return Err(InstallError::Foreign {
            path: path(),
            saved: saved.display().to_string(),
        });
    }
    Ok(Action::Rename)
}

pub(super) fn describe(p: &Planned, source: &Path) -> String {
    let path = p.inner.display();
    let kept = format!("{path}{KEPT_SUFFIX}");
    let then = match &p.link {
        Some(t) => format!("link {path} -> {t}"),
        None => format!("copy {} -> {path}", source.display()),
    };
    match &p.action {
        Action::Keep => format!("ok       {path} ({} already in place)", p.what),
        Action::Create => match &p.link {
            Some(t) => format!("link     {path} -> {t}"),
            None => format!("copy     {} -> {path}", source.display()),
        },
        Action::Update => format!("update   {path} from {}", source.display()),
        Action::ReplaceSymlink(t) => format!("relink   {path} (was -> {t}; remembered), {then}"),
        Action::Rename => format!("keep     {path} as {kept} (rename), {then}"),
        Action::Divert(pkg) => {
            format!("divert   {path} to {kept} (dpkg-divert, package {pkg}), {then}")
        }
        Action::Rekeep => format!(
            "rekeep   {path} (written over since install) as {kept}, replacing the older original, {then}"
        ),
    }
}

/// Carry out one planned change; returns its record.
pub(super) fn apply(
    layout: &Layout,
    p: &Planned,
    source: &Path,
    previous: Option<&Record>,
) -> Result<Record, InstallError> {
    let host = layout.host(&p.inner);
    let inner_s = p.inner.to_string_lossy().into_owned();
    let saved = PathBuf::from(format!("{inner_s}{KEPT_SUFFIX}"));
    let mut installed = p.link.clone().unwrap_or_else(|| COPY.to_string());
    if matches!(p.action, Action::Keep) {
        // Already in place: as recorded by the earlier install, or, with no record, there
        // before any shimgate install (e.g. the binary placed by hand), so not ours to remove.
        installed = previous.map_or_else(|| UNCHANGED.to_string(), |r| r.installed.clone());
    }
    let checksum = |host: &Path| {
        inspect::sha256_file(host).map_err(|source| InstallError::Inspect {
            path: inner_s.clone(),
            source,
        })
    };
    let keep = |host: &Path| {
        std::fs::hard_link(host, layout.host(&saved)).map_err(|source| InstallError::Keep {
            path: inner_s.clone(),
            saved: saved.display().to_string(),
            source,
        })
    };
    let put = |host: &Path| -> Result<(), InstallError> {
        match &p.link {
            Some(t) => place_symlink(host, t),
            None => copy_binary(source, host),
        }
    };
    let kept = match &p.action {
        Action::Keep | Action::Update => {
            if matches!(p.action, Action::Update) {
                put(&host)?;
            }
            previous.map_or(Kept::Nothing, |r| r.kept.clone())
        }
        Action::Create => {
            put(&host)?;
            Kept::Nothing
        }
        Action::ReplaceSymlink(t) => {
            put(&host)?;
            Kept::Symlink { target: t.clone() }
        }
        Action::Rename => {
            let sum = checksum(&host)?;
            keep(&host)?;
            put(&host)?;
            Kept::Renamed {
                saved_as: saved.to_string_lossy().into_owned(),
                sha256: sum,
            }
        }
        Action::Rekeep => {
            let sum = checksum(&host)?;
            // The kept name is replaced atomically by the newer file, then the name by our
            // link: at every moment both names hold a working shim.
            place_hardlink(&host, &layout.host(&saved))?;
            put(&host)?;
            Kept::Renamed {
                saved_as: saved.to_string_lossy().into_owned(),
                sha256: sum,
            }
        }
        Action::Divert(pkg) => {
            let sum = checksum(&host)?;
            run_checked(divert_command(&layout.root, &p.inner, &saved, true))?;
            let kept = keep(&host).and_then(|()| put(&host));
            if let Err(e) = kept {
                // Undo the diversion record so the host is as before.
                let _ = std::fs::remove_file(layout.host(&saved));
                let _ = run_checked(divert_command(&layout.root, &p.inner, &saved, false));
                return Err(e);
            }
            Kept::Diverted {
                saved_as: saved.to_string_lossy().into_owned(),
                package: pkg.clone(),
                sha256: sum,
            }
        }
    };
    Ok(Record {
        path: inner_s,
        installed,
        kept,
    })
}

/// Do two files hold the same bytes? (Sizes first: binaries differ in size almost always.)
pub(super) fn same_contents(a: &Path, b: &Path) -> bool {
    let size = |p: &Path| std::fs::metadata(p).map(|m| m.len()).ok();
    if size(a).is_none() || size(a) != size(b) {
        return false;
    }
    match (std::fs::read(a), std::fs::read(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

pub(super) fn copy_binary(source: &Path, host: &Path) -> Result<(), InstallError> {
    let tmp = temp_name(host, "new");
    let _ = std::fs::remove_file(&tmp);
    std::fs::copy(source, &tmp).map_err(|e| InstallError::Copy {
        from: source.display().to_string(),
        to: tmp.display().to_string(),
        source: e,
    })?;
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o755)).map_err(|source| {
        InstallError::Chmod {
            path: tmp.display().to_string(),
            source,
        }
    })?;
    // Renaming over a binary that running shims execute is safe: they keep the old inode.
    rename_into_place(&tmp, host)
}
