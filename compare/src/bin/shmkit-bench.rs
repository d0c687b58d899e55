//! `shmkit-bench`: the comparison table of every IPC mechanism (the driver is
//! [`shmkit_compare::report`]; the method is in compare/README.md).
//!
//! ```text
//! cargo run --release -p shmkit-compare --bin shmkit-bench -- --quick --json out.json --plot out.svg
//! ```

use std::process::ExitCode;

use clap::Parser;

/// Benchmark every IPC mechanism against the others and the hardware floor.
#[derive(Parser, Debug)]
#[command(name = "shmkit-bench", version, about)]
struct Cli {
    #[command(flatten)]
    args: shmkit_compare::report::Args,
}

fn main() -> ExitCode {
    // First: a `--workload pool` worker (this executable, re-executed by shmkit::process)
    // runs its entry here and exits; otherwise this only registers the entries.
    shmkit::process::init(&shmkit_compare::pool::ENTRIES);
    let cli = Cli::parse();
    match shmkit_compare::report::run(cli.args, &mut std::io::stdout().lock()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            shmkit_compare::report::note(format_args!("shmkit-bench: {e}"));
            ExitCode::FAILURE
        }
    }
}
