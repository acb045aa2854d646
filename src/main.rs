//! The shimgate binary: the personality comes from argv[0] (see `shimgate::run`).

fn main() {
    std::process::exit(shimgate::run(std::env::args_os().collect()));
}
