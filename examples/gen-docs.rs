//! Generates the operator tool's documentation from its clap definition
//! (`shimgate::admin::command()`): a man page per command (`shimgate.1`, `shimgate-install.1`,
//! …) and bash, zsh and fish completions.
//!
//! `cargo run --example gen-docs -- OUT_DIR` writes `OUT_DIR/man/*.1` and
//! `OUT_DIR/completions/{shimgate.bash,_shimgate,shimgate.fish}`; `scripts/build-deb.sh`
//! ships them. This lives outside the shimgate binary on purpose: clap_mangen and
//! clap_complete are dev-dependencies, so the binary every serving shim maps does not carry
//! them (its size is unchanged by this generator).

use std::path::Path;

use clap_complete::Shell;

/// The shells completions are generated for, with the file name each expects.
pub const SHELLS: [(Shell, &str); 3] = [
    (Shell::Bash, "shimgate.bash"),
    (Shell::Zsh, "_shimgate"),
    (Shell::Fish, "shimgate.fish"),
];

/// Write the man pages and completions under `out`.
pub fn generate(out: &Path) -> std::io::Result<()> {
    let man = out.join("man");
    let completions = out.join("completions");
    std::fs::create_dir_all(&man)?;
    std::fs::create_dir_all(&completions)?;
    // One page per visible command (hidden ones, such as the upgrade hand-over probe, are
    // internal), named shimgate-<command>.1 as man(1) users expect.
    clap_mangen::generate_to(shimgate::admin::command(), &man)?;
    for (shell, file) in SHELLS {
        let mut cmd = shimgate::admin::command();
        let mut f = std::fs::File::create(completions.join(file))?;
        clap_complete::generate(shell, &mut cmd, "shimgate", &mut f);
    }
    Ok(())
}

#[allow(dead_code)] // tests include this file as a module for `generate`
fn main() {
    let Some(out) = std::env::args_os().nth(1) else {
        eprintln!("usage: gen-docs OUT_DIR");
        std::process::exit(64);
    };
    if let Err(e) = generate(Path::new(&out)) {
        eprintln!("gen-docs: {e}");
        std::process::exit(1);
    }
}
