//! The `beast` binary: parse the command line, run the command, print the whole cause chain
//! of a fatal error.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = beast::cli::Cli::parse();
    match beast::commands::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our output went away (`| head`): it has what it wanted.
        Err(e) if e.is::<beast::commands::StdoutClosed>() => ExitCode::SUCCESS,
        Err(e) => {
            beast::note!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
