//! `fleetctl`: hands the process's arguments and exit code to [`fleetctl::cli::main`].

fn main() -> std::process::ExitCode {
    fleetctl::cli::main()
}
