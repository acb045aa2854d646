//! Unit tests of `admin/install/mod.rs`, kept beside it so the module reads as its job alone.

use super::*;

#[test]
fn divert_command_shape() {
    let c = divert_command(
        Path::new("/"),
        Path::new("/usr/bin/containerd-shim"),
        Path::new("/usr/bin/containerd-shim.shimgate-orig"),
        true,
    );
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(c.get_program(), "dpkg-divert");
    assert_eq!(
        args,
        [
            "--local",
            "--no-rename",
            "--divert",
            "/usr/bin/containerd-shim.shimgate-orig",
            "--add",
            "/usr/bin/containerd-shim"
        ]
    );
    let c = divert_command(
        Path::new("/tmp/r"),
        Path::new("/usr/bin/x"),
        Path::new("/usr/bin/x.shimgate-orig"),
        false,
    );
    let args: Vec<String> = c
        .get_args()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    assert_eq!(&args[..2], ["--root", "/tmp/r"]);
    assert!(args.contains(&"--remove".to_string()));
}

#[test]
fn manifest_round_trip() {
    let m = Manifest {
        format: 1,
        shimgate_version: "0.1.0".into(),
        prefix: "/usr/bin".into(),
        records: vec![Record {
            path: "/usr/bin/containerd-shim".into(),
            installed: "shimgate".into(),
            kept: Kept::Diverted {
                saved_as: "/usr/bin/containerd-shim.shimgate-orig".into(),
                package: "containerd".into(),
                sha256: "ab".into(),
            },
        }],
    };
    let j = serde_json::to_string(&m).unwrap();
    assert!(j.contains(r#""method":"diverted""#), "{j}");
    let back: Manifest = serde_json::from_str(&j).unwrap();
    assert_eq!(back.records[0].kept, m.records[0].kept);
}
