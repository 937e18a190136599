//! `greeter-twistrs`: the twistrs launcher with the wire plugins and `greet`.

fn main() {
    let mut plugins = twistrs::builtin_plugins();
    plugins.push(twistrs_example_greeter::plugin());
    std::process::exit(twistrs::run(std::env::args_os(), plugins));
}
