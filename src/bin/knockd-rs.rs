//! `knockd-rs`: the knockd drop-in as `cargo install` installs it. The code
//! is the `knockd` example's (`examples/knockd/`), which the tests run.

#[path = "../../examples/knockd/main.rs"]
mod knockd;

fn main() -> std::process::ExitCode {
    knockd::main()
}
