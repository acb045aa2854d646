//! What dpkg knows about a shim name: the package owning it, its diversion, and the
//! `dpkg-divert` command that records or removes ours.

use super::*;

/// The Debian package owning `inner` (a path inside `root`), if dpkg knows one.
pub(super) fn dpkg_owner(root: &Path, inner: &Path) -> Option<String> {
    let mut cmd = Command::new("dpkg-query");
    if root != Path::new("/") {
        cmd.arg(format!("--root={}", root.display()));
    }
    cmd.arg("-S").arg(inner);
    let out = run_tool(cmd).ok()?;
    if out.status != 0 {
        return None;
    }
    let want = inner.to_string_lossy();
    // Lines are "pkg[, pkg]: path"; diversion notes ("[local ]diversion by/from/to …") are not
    // ownership.
    out.stdout.lines().find_map(|l| {
        if l.starts_with("diversion ") || l.starts_with("local diversion ") {
            return None;
        }
        let (pkgs, path) = l.split_once(": ")?;
        (path == want).then(|| pkgs.to_string())
    })
}

/// The package (Debian, else RPM) that owns `inner` (a path inside `root`), if any.
pub fn package_owner(root: &Path, inner: &Path) -> Option<String> {
    if let Some(p) = dpkg_owner(root, inner) {
        return Some(p);
    }
    crate::search_path::which("rpm")?;
    let mut cmd = Command::new("rpm");
    if root != Path::new("/") {
        cmd.arg("--root").arg(root);
    }
    cmd.args(["-qf", "--queryformat", "%{NAME}\\n"]).arg(inner);
    let out = run_tool(cmd).ok().filter(|o| o.status == 0)?;
    out.stdout.lines().next().map(|l| l.trim().to_string())
}

/// Who diverts `inner` already ("LOCAL" or a package), if anyone.
pub(super) fn dpkg_diverter(root: &Path, inner: &Path) -> Option<String> {
    let mut cmd = dpkg_divert(root);
    cmd.arg("--listpackage").arg(inner);
    let out = run_tool(cmd).ok()?;
    let who = out.stdout.trim().to_string();
    (out.status == 0 && !who.is_empty()).then_some(who)
}

pub(super) fn dpkg_divert(root: &Path) -> Command {
    let mut cmd = Command::new("dpkg-divert");
    if root != Path::new("/") {
        cmd.arg("--root").arg(root);
    }
    cmd
}

/// The dpkg-divert command that records (`add`) or drops a diversion of `inner` to `saved`.
/// `--no-rename`: the files are moved by us, atomically (see the module docs).
pub fn divert_command(root: &Path, inner: &Path, saved: &Path, add: bool) -> Command {
    let mut cmd = dpkg_divert(root);
    cmd.args(["--local", "--no-rename", "--divert"])
        .arg(saved)
        .arg(if add { "--add" } else { "--remove" })
        .arg(inner);
    cmd
}
