//! The `safedelete` binary: parse the command line, run it, turn failure into
//! an exit code.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = safedelete::cli::Cli::parse();
    match safedelete::cli::run(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let err = anyhow::Error::from(err);
            eprintln!("safedelete: {err:#}");
            ExitCode::FAILURE
        }
    }
}
