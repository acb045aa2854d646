//! `shimgate`, the operator's tool. For now it reports its version and usage; install,
//! uninstall and doctor arrive with the migration toolkit.

pub fn main(args: Vec<String>) -> i32 {
    match args.first().map(String::as_str) {
        Some("version" | "--version" | "-v") => {
            print!("{}", crate::version_block("shimgate"));
            0
        }
        None | Some("help" | "--help" | "-h") => {
            print!("{}", usage());
            0
        }
        Some(other) => {
            eprint!("shimgate: unknown command {other:?}\n\n{}", usage());
            2
        }
    }
}

fn usage() -> String {
    format!(
        "shimgate {} - one containerd shim for every containerd version\n\n\
         Usage: shimgate <command>\n\n\
         Commands:\n  version   print the version\n  help      print this help\n\n\
         Installed (symlinked) as containerd-shim-runc-v2 or containerd-shim-runc-v1 it is the\n\
         containerd task-API shim of that name.\n",
        crate::VERSION
    )
}
