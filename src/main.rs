//! The `rollcall` binary: parse the command line, run, and exit with the
//! command's status (0 success, 1 a check failed, 2 an error).

fn main() -> std::process::ExitCode {
    rollcall::cli::main()
}
