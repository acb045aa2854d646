//! Checks the Go-flag parser against the argv fixtures in `compat/argv/*.json`.
//!
//! The fixtures are data (observed containerd command lines plus Go `flag` edge cases), kept
//! outside the code so the compatibility matrix can grow without touching Rust. Each file holds
//! one fixture object or an array of them:
//! `{"name", "personality": <binary name>, "argv": [argv0, …],`
//! `  "expect": {field: value, …} | "error": "<message>", "exit_code"?, "mode"? | "mode_error"?}`.
//! `expect` lists only the fields that differ from the defaults; everything else must equal the
//! default, so a fixture also catches fields being set by accident.

use std::ffi::OsStr;
use std::path::Path;

use serde_json::Value;

use super::{CliError, Mode, Personality, ShimV1Args, ShimV2Args};

fn load_fixtures() -> Vec<(String, Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("compat/argv");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() == Some(OsStr::new("json")))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let value: Value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{}: invalid JSON: {e}", file.display()));
        let items = match value {
            Value::Array(items) => items,
            single => vec![single],
        };
        let stem = file.file_name().unwrap().to_string_lossy().into_owned();
        for item in items {
            let name = item["name"].as_str().unwrap_or("?").to_owned();
            out.push((format!("{stem}: {name}"), item));
        }
    }
    out
}

fn mode_word(mode: Mode) -> &'static str {
    match mode {
        Mode::Version => "version",
        Mode::Info => "info",
        Mode::Start => "start",
        Mode::Delete => "delete",
        Mode::Daemon => "daemon",
    }
}

/// Overlay `expect` on `defaults`, refusing keys the struct does not have (typos in fixtures).
fn merged(label: &str, defaults: Value, expect: &Value) -> Value {
    let mut want = defaults;
    let (Some(want_map), Some(expect_map)) = (want.as_object_mut(), expect.as_object()) else {
        panic!("{label}: expect must be an object");
    };
    for (k, v) in expect_map {
        assert!(
            want_map.contains_key(k),
            "{label}: unknown field {k:?} in expect"
        );
        want_map.insert(k.clone(), v.clone());
    }
    want
}

fn check(label: &str, fixture: &Value) {
    let personality_name = fixture["personality"].as_str().expect("personality");
    let argv: Vec<String> = fixture["argv"]
        .as_array()
        .expect("argv")
        .iter()
        .map(|v| v.as_str().expect("argv entries are strings").to_owned())
        .collect();
    let personality = Personality::from_argv0(OsStr::new(&argv[0]))
        .unwrap_or_else(|| panic!("{label}: argv[0] {:?} names no personality", argv[0]));
    assert_eq!(
        personality.binary_name(),
        personality_name,
        "{label}: personality"
    );
    let args = &argv[1..];

    let (result, defaults, mode): (
        Result<Value, CliError>,
        Value,
        Option<Result<Mode, CliError>>,
    ) = match personality {
        Personality::ShimV1 => (
            ShimV1Args::parse(args).map(|a| serde_json::to_value(a).unwrap()),
            serde_json::to_value(ShimV1Args::default()).unwrap(),
            None,
        ),
        Personality::RuncV1 | Personality::RuncV2 => {
            let parsed = ShimV2Args::parse(args);
            let mode = parsed.as_ref().ok().map(ShimV2Args::mode);
            (
                parsed.map(|a| serde_json::to_value(a).unwrap()),
                serde_json::to_value(ShimV2Args::default()).unwrap(),
                mode,
            )
        }
        Personality::Admin => panic!("{label}: the operator tool has no Go-flag fixtures"),
    };

    match (&fixture["expect"], &fixture["error"]) {
        (Value::Null, Value::String(want_err)) => {
            let err = result.expect_err(label);
            assert_eq!(&err.to_string(), want_err, "{label}: error message");
            if let Some(code) = fixture["exit_code"].as_i64() {
                assert_eq!(i64::from(err.exit_code()), code, "{label}: exit code");
            }
        }
        (expect @ Value::Object(_), Value::Null) => {
            let got = result.unwrap_or_else(|e| panic!("{label}: unexpected error: {e}"));
            assert_eq!(got, merged(label, defaults, expect), "{label}: parsed args");
            match (&fixture["mode"], &fixture["mode_error"], mode) {
                (Value::Null, Value::Null, _) => {}
                (Value::String(want), Value::Null, Some(m)) => {
                    let m = m.unwrap_or_else(|e| panic!("{label}: mode error {e}"));
                    assert_eq!(mode_word(m), want, "{label}: mode");
                }
                (Value::Null, Value::String(want), Some(m)) => {
                    let e = m.expect_err(label);
                    assert_eq!(&e.to_string(), want, "{label}: mode error");
                }
                _ => panic!("{label}: mode/mode_error only apply to v2 personalities, not both"),
            }
        }
        _ => panic!("{label}: exactly one of expect / error is required"),
    }
}

#[test]
fn argv_fixtures() {
    let fixtures = load_fixtures();
    assert!(
        fixtures.len() >= 30,
        "only {} fixtures found",
        fixtures.len()
    );
    for (label, fixture) in &fixtures {
        check(label, fixture);
    }
}
