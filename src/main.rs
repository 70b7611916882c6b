//! The `portcullis` binary: parse arguments, set up logging, run the command. The only place
//! `anyhow` appears; errors are printed once, with their chain.

use anyhow::Context as _;
use clap::Parser as _;

use portcullis::cli::{Cli, Command};
use portcullis::{app, certs, server, telemetry};

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    match cli.command {
        Command::Serve(args) => {
            let prepared = app::prepare(&args.options())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let listener = tokio::net::TcpListener::bind(args.addr)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.addr))?;
                app::run(prepared, listener, server::shutdown::signal()).await;
                anyhow::Ok(())
            })?;
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
        }
    }
    Ok(())
}
