//! The `portcullis` binary: parse arguments, set up logging, run the command. The only place
//! `anyhow` appears; errors are printed once, with their chain.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use std::io::{IsTerminal as _, Write as _};

use portcullis::check::report::Format;
use portcullis::cli::{CheckArgs, Cli, Command};
use portcullis::{app, certs, server, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // `check` keeps 1 for "something is denied", so its own errors exit 2, like usage errors.
    let failure = match cli.command {
        Command::Check(_) => ExitCode::from(2),
        _ => ExitCode::FAILURE,
    };
    match run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("{}", report(&error));
            failure
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Check(args) => check(&args),
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
            Ok(ExitCode::SUCCESS)
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
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `portcullis check`: the report on stdout, 1 when anything is denied or unreadable.
fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let documents = portcullis::check::manifest::read_inputs(&args.inputs)?;
    // One evaluation at a time: a pool slot per core would only cost memory here.
    let engine = portcullis::engine::EngineOptions {
        max_concurrent_instances: 1,
    };
    let (_engine, set) = app::load_policies(args.config.as_deref(), false, engine)?;
    let report = portcullis::check::check(&set, documents, &args.namespace);
    let style = portcullis::check::report::Style {
        format: args.output,
        colour: args.output == Format::Table
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none(),
        show_patches: args.show_patches,
    };
    let text = portcullis::check::report::render(&report, style).context("cannot render the report")?;
    std::io::stdout()
        .write_all(text.as_bytes())
        .context("cannot write the report")?;
    Ok(if report.failed() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
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
