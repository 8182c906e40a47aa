//! The `rollcall` binary: parse the command line, run, and exit with the
//! command's status (0 success, 1 a check failed, 2 an error).

// glibc's malloc was a fifth of the instructions of a SCIM lookup (many
// small, short-lived JSON values); mimalloc's thread-local free lists are
// several times cheaper for that pattern (BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    rollcall::cli::main()
}
