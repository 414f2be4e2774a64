//! The `ordersync` binary: parses the command line and hands over to the library.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = ordersync::cli::Cli::parse();
    ordersync::cli::execute(cli).await
}
