//! The `portcullis` binary: parse arguments, set up logging, run the command. The only place
//! `anyhow` appears; errors are printed once, with their chain.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use portcullis::cli::{Cli, Command};
use portcullis::{app, certs, server, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{}", report(&error));
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve(args) => {
            let prepared = app::prepare(&args.options())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(args.addr)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.addr))?;
                let (shutdown, hurry) = server::shutdown::signals();
                app::run_until(prepared, listener, shutdown, hurry).await;
                anyhow::Ok(())
            })
        }
        Command::Certs(args) => {
            let bundle = certs::generate(&args.hosts)?;
            let paths = bundle.write(&args.out)?;
            eprintln!(
                "wrote {}, {} and {}",
                paths.ca.display(),
                paths.cert.display(),
                paths.key.display()
            );
            println!("{}", bundle.ca_bundle());
            Ok(())
        }
    }
}

/// `error: <message>` plus one `caused by:` line per cause that the message does not
/// already spell out (several library errors include their source's text on purpose, so that
/// they read well on their own).
fn report(error: &anyhow::Error) -> String {
    let mut out = format!("error: {error}");
    for cause in error.chain().skip(1) {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str("\n  caused by: ");
            out.push_str(&text);
        }
    }
    out
}
