//! The `podgate` binary; everything lives in the library.

fn main() -> std::process::ExitCode {
    podgate::cli::main()
}
