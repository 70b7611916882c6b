//! The `portcullis` binary: parse arguments, set up logging, run the command. The only place
//! `anyhow` appears; errors are printed once, with their chain.

use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;

use std::io::{IsTerminal as _, Write as _};

use portcullis::check::report::Format;
use portcullis::cli::{AuditArgs, CheckArgs, Cli, Command, MetricsAddr, PolicyCommand, PolicyTestArgs};
use portcullis::engine::limits::{Limits, MAX_POLICY_MEMORY_MIB};
use portcullis::engine::{Engine, EngineOptions};
use portcullis::{app, certs, server, telemetry};

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    // `check`, `audit` and `policy test` keep 1 for "something is denied / fails / a case
    // failed", so their own errors exit 2, like usage errors.
    let failure = match cli.command {
        Command::Check(_) | Command::Audit(_) | Command::Policy(_) => ExitCode::from(2),
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
        Command::Policy(PolicyCommand::Test(args)) => policy_test(&args),
        Command::Policy(PolicyCommand::Inspect(args)) => {
            let bytes = std::fs::read(&args.module)
                .with_context(|| format!("cannot read module {}", args.module.display()))?;
            let engine = Engine::new(EngineOptions {
                max_concurrent_instances: 1,
                cache: portcullis::engine::cache::ArtifactCache::Off,
            })?;
            let inspection = engine.inspect(&bytes);
            print!("{inspection}");
            Ok(if inspection.loads() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        Command::Audit(args) => audit(&args),
        Command::Serve(args) => {
            let prepared = app::prepare(&args.options())?;
            let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
            runtime.block_on(async {
                let webhook = tokio::net::TcpListener::bind(args.addr)
                    .await
                    .with_context(|| format!("cannot listen on {}", args.addr))?;
                let metrics = match args.metrics_addr {
                    MetricsAddr::Off => None,
                    MetricsAddr::Listen(addr) => Some(
                        tokio::net::TcpListener::bind(addr)
                            .await
                            .with_context(|| format!("cannot listen for metrics on {addr}"))?,
                    ),
                };
                let (shutdown, hurry) = server::shutdown::signals();
                portcullis::reload::hangup::listen(prepared.reload.handle());
                let listeners = app::Listeners { webhook, metrics };
                app::serve(prepared, listeners, shutdown, hurry).await;
                anyhow::Ok(())
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Certs(args) => {
            let bundle = certs::generate_with_client(&args.hosts, args.client.as_deref())?;
            let paths = bundle.write(&args.out)?;
            eprintln!(
                "wrote {}, {} and {}",
                paths.ca.display(),
                paths.cert.display(),
                paths.key.display()
            );
            if let Some((cert, key)) = &paths.client {
                eprintln!("wrote {} and {}", cert.display(), key.display());
            }
            println!("{}", bundle.ca_bundle());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `portcullis policy test`: a line per case, 1 when any fails.
fn policy_test(args: &PolicyTestArgs) -> anyhow::Result<ExitCode> {
    let engine = Engine::new(EngineOptions {
        max_concurrent_instances: 1,
        cache: args.cache.cache(),
    })?;
    let timeout = portcullis::policy::spec::Timeout::from_millis(args.timeout_ms)
        .context("--timeout-ms must be between 1 and 30000")?;
    let memory = portcullis::policy::spec::MemoryLimit::from_mib(args.memory_mib, MAX_POLICY_MEMORY_MIB)
        .with_context(|| format!("--memory-mib must be between 1 and {MAX_POLICY_MEMORY_MIB}"))?;
    let limits = Limits {
        timeout: timeout.duration(),
        memory_bytes: memory.bytes(),
    };
    let results = portcullis::authoring::run(
        &engine,
        &args.module,
        args.settings.as_deref(),
        &args.cases,
        limits,
    )?;
    print!("{}", portcullis::authoring::render(&results));
    Ok(if results.iter().all(|r| r.failures.is_empty()) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// `portcullis check`: the report on stdout, 1 when anything is denied or unreadable.
fn check(args: &CheckArgs) -> anyhow::Result<ExitCode> {
    let documents = portcullis::check::manifest::read_inputs(&args.inputs)?;
    // One evaluation at a time: a pool slot per core would only cost memory here.
    let engine = EngineOptions {
        max_concurrent_instances: 1,
        cache: args.cache.cache(),
    };
    let (_engine, set, _origin) = app::load_policies(args.config.as_deref(), false, engine)?;
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

/// `portcullis audit`: the audit on stdout, what was written on stderr; 1 when anything fails,
/// errors or could not be listed.
fn audit(args: &AuditArgs) -> anyhow::Result<ExitCode> {
    use portcullis::audit::{self, list::ChunkSize, progress};
    let workers = std::thread::available_parallelism().unwrap_or(std::num::NonZeroUsize::MIN);
    let chunk = ChunkSize(args.chunk_size);
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    // The cluster first: a wrong context or a missing report CRD is reported before the
    // policies spend seconds compiling.
    let cluster = runtime.block_on(audit::connect(&args.connection()))?;
    if args.write_reports {
        cluster.require_reports()?;
    }
    // One Wasm instance per judging thread.
    let engine = portcullis::engine::EngineOptions {
        max_concurrent_instances: u32::try_from(workers.get()).unwrap_or(1),
        cache: args.cache.cache(),
    };
    let (_engine, set, _origin) = app::load_policies(args.config.as_deref(), false, engine)?;
    runtime.block_on(async {
        let bar = progress::Progress::new(progress::Display::Terminal);
        let audit = cluster
            .audit(std::sync::Arc::new(set), chunk, workers, bar)
            .await?;
        let colour = args.output == audit::render::Format::Table
            && std::io::stdout().is_terminal()
            && std::env::var_os("NO_COLOR").is_none();
        let text = audit::render::render(&audit, args.output, colour).context("cannot render the audit")?;
        std::io::stdout()
            .write_all(text.as_bytes())
            .context("cannot write the audit")?;
        if args.write_reports {
            for (format, written) in cluster.write_reports(&audit, chunk).await? {
                eprintln!(
                    "{}: {} created, {} updated, {} unchanged",
                    format.describe(),
                    written.created,
                    written.updated,
                    written.unchanged
                );
            }
        }
        Ok(if audit.failed() {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        })
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
