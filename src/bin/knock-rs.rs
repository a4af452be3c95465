//! `knock-rs`: the knock client as `cargo install` installs it. The code is
//! the `knock` example's (`examples/knock/`), which the tests run.

#[path = "../../examples/knock/main.rs"]
mod knock_client;

fn main() -> std::process::ExitCode {
    knock_client::main()
}
