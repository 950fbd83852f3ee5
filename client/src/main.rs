//! `ctl`: the command-line client of ctld. Parsing and error reporting only; the work is in
//! the `ctl_client` library.

use std::process::ExitCode;

use clap::Parser;
use ctl_client::cli::{self, Cli};

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut stdout = std::io::stdout();
    match cli::run(&cli, &mut stdout).await {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("Error: {:#}", anyhow::Error::from(e));
            ExitCode::FAILURE
        }
    }
}
