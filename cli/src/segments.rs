//! `ls`, `info`, `rm`, `gc`, `value`, `array`.

use clap::Subcommand;

/// Segment commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// List segments in /dev/shm.
    Ls {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

/// Runs a segment command.
pub fn run(cmd: Command) -> Result<(), shmkit::Error> {
    match cmd {
        Command::Ls { json: _ } => Ok(()),
    }
}
