//! `fleetctl`: the thin command-line shell around the pacfleet library. Parsing, settings and
//! output live in `pacfleet::cli`; this only hands over the process's arguments and exit code.

fn main() -> std::process::ExitCode {
    pacfleet::cli::main()
}
