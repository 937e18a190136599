//! The `twistrs` binary: the launcher with the built-in plugins.

fn main() {
    std::process::exit(twistrs::run(
        std::env::args_os(),
        twistrs::builtin_plugins(),
    ));
}
