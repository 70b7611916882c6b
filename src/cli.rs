//! The command line: clap definitions turned into typed commands.

use std::net::SocketAddr;
use std::num::{NonZeroU32, NonZeroUsize};
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::app::{ServeOptions, TlsSource};
use crate::check::report::Format;
use crate::engine::EngineOptions;
use crate::engine::cache::ArtifactCache;
use crate::server::ShutdownTiming;
use crate::server::limits::{BodyBudget, BodyLimit, HeaderLimit, HttpLimits};
use crate::server::memory::MemoryBudget;
use crate::telemetry::LogFormat;

/// Portcullis: a Kubernetes admission webhook that runs sandboxed WebAssembly policies.
#[derive(Debug, Parser)]
#[command(name = "portcullis", version, about)]
pub struct Cli {
    /// Log format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the validating and mutating webhook over HTTPS.
    Serve(Box<ServeArgs>),
    /// Generate a CA and a serving certificate, and print the caBundle.
    Certs(CertsArgs),
    /// Tools for policy authors: test a module against case files, inspect a module.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Check manifest files against the policies, offline: exit 0 when nothing is denied, 1
    /// when something is denied or a document cannot be read, 2 on usage or configuration errors.
    Check(CheckArgs),
    /// Audit what already runs in a cluster against the policies, each object judged as if it
    /// were submitted today: exit 0 when nothing fails, 1 when an object fails a policy, a policy
    /// errors or a listing is forbidden, 2 on usage, configuration or connection errors.
    Audit(AuditArgs),
}

/// `portcullis serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, default_value = "0.0.0.0:8443")]
    pub addr: SocketAddr,
    /// PEM certificate chain (with --key). Without both, certs/ is used and filled when empty.
    #[arg(long, requires = "key")]
    pub cert: Option<PathBuf>,
    /// PEM private key (with --cert).
    #[arg(long, requires = "cert")]
    pub key: Option<PathBuf>,
    /// Directory for tls.crt/tls.key when --cert/--key are not given.
    #[arg(long, default_value = "certs", conflicts_with_all = ["cert", "key"])]
    pub cert_dir: PathBuf,
    /// Policy configuration (YAML). Default: the built-in policy set.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Run every policy in monitor mode: warn, never deny.
    #[arg(long)]
    pub dry_run: bool,
    /// Largest request body accepted, in bytes (default: an UPDATE review of the largest
    /// object the API server stores; see README).
    #[arg(long, default_value_t = BodyLimit::DEFAULT.0)]
    pub max_body_bytes: usize,
    /// Request body bytes held at once by the whole server; a request reserves its share
    /// before its body is read.
    #[arg(long, default_value_t = BodyBudget::DEFAULT.0)]
    pub body_budget_bytes: usize,
    /// Request body bytes held at once by one connection.
    #[arg(long, default_value_t = BodyBudget::PER_CONNECTION.0)]
    pub connection_body_budget_bytes: usize,
    /// Review requests admitted at once, from before their body is read until answered.
    #[arg(long, default_value_t = HttpLimits::default().requests_in_flight)]
    pub max_requests_in_flight: NonZeroUsize,
    /// Open connections; beyond it the server stops accepting until one closes.
    #[arg(long, default_value_t = HttpLimits::default().max_connections)]
    pub max_connections: NonZeroUsize,
    /// HTTP/2 streams one connection may have open at once.
    #[arg(long, default_value_t = HttpLimits::default().h2_max_concurrent_streams)]
    pub http2_max_concurrent_streams: NonZeroU32,
    /// Seconds between HTTP/2 PINGs; a PING unanswered that long closes the connection.
    #[arg(long, default_value_t = HttpLimits::default().h2_keep_alive.as_secs())]
    pub http2_keep_alive_secs: u64,
    /// Largest request head (HTTP/1.1 request line and headers, HTTP/2 header list), bytes.
    #[arg(long, default_value_t = HeaderLimit::DEFAULT, value_parser = header_limit)]
    pub max_header_bytes: HeaderLimit,
    /// Seconds from accepting a connection to a completed TLS handshake.
    #[arg(long, default_value_t = HttpLimits::default().handshake_timeout.as_secs())]
    pub handshake_timeout_secs: u64,
    /// Seconds for an HTTP/1.1 request head (also closes HTTP/1.1 connections idle that long).
    #[arg(long, default_value_t = HttpLimits::default().header_read_timeout.as_secs())]
    pub header_read_timeout_secs: u64,
    /// Seconds for a request to be admitted and its body read whole.
    #[arg(long, default_value_t = HttpLimits::default().body_read_timeout.as_secs())]
    pub body_read_timeout_secs: u64,
    /// Seconds a connection may stay open with no request in flight.
    #[arg(long, default_value_t = HttpLimits::default().idle_timeout.as_secs())]
    pub idle_timeout_secs: u64,
    /// Seconds to keep serving, unready, after SIGTERM, so endpoints stop sending reviews
    /// before the server stops accepting. A second signal ends it early.
    #[arg(long, default_value_t = 5)]
    pub shutdown_delay_secs: u64,
    /// Seconds to wait for in-flight reviews once the server stops accepting.
    #[arg(long, default_value_t = 25)]
    pub drain_timeout_secs: u64,
    /// Memory the configuration must fit, in MiB. Default: the cgroup's memory limit, when
    /// there is one.
    #[arg(long)]
    pub memory_budget_mib: Option<u64>,
    /// Policy evaluations (Wasm instances) that may run at once.
    #[arg(long, default_value_t = EngineOptions::default().max_concurrent_instances)]
    pub max_concurrent_evaluations: u32,
    /// Where compiled policies are cached.
    #[command(flatten)]
    pub cache: CacheArgs,
    /// Address of the plain-HTTP metrics listener (`GET /metrics`), or `off` for none.
    #[arg(long, default_value = "0.0.0.0:9090", value_parser = metrics_addr)]
    pub metrics_addr: MetricsAddr,
    /// Require a client certificate that chains to a CA in this PEM file (mutual TLS; see
    /// README for the API server's side).
    #[arg(long)]
    pub client_ca: Option<PathBuf>,
}

/// Where compiled policies are cached (serve, check, audit, policy test).
#[derive(Debug, Args)]
pub struct CacheArgs {
    /// Directory for compiled policies, so a restart with unchanged modules skips compiling
    /// them. Default: $XDG_CACHE_HOME/portcullis, else $HOME/.cache/portcullis. It must be
    /// writable by this process only. When it cannot be created, every start compiles.
    #[arg(long, env = "PORTCULLIS_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Compile every policy at every start; never read or write a cache.
    #[arg(long, conflicts_with = "cache_dir")]
    pub no_cache: bool,
}

impl CacheArgs {
    /// The cache these flags ask for.
    pub fn cache(&self) -> ArtifactCache {
        match (&self.cache_dir, self.no_cache) {
            (_, true) => ArtifactCache::Off,
            (Some(dir), false) => ArtifactCache::Dir(dir.clone()),
            (None, false) => ArtifactCache::user_default(),
        }
    }
}

/// Where the metrics listener listens, if anywhere.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricsAddr {
    /// No metrics listener.
    Off,
    /// Listen here.
    Listen(SocketAddr),
}

fn metrics_addr(text: &str) -> Result<MetricsAddr, String> {
    if text == "off" {
        return Ok(MetricsAddr::Off);
    }
    text.parse()
        .map(MetricsAddr::Listen)
        .map_err(|e| format!("{e}: expected an address such as 0.0.0.0:9090, or `off`"))
}

fn header_limit(text: &str) -> Result<HeaderLimit, String> {
    let bytes: usize = text.parse().map_err(|e| format!("{e}"))?;
    HeaderLimit::new(bytes)
        .ok_or_else(|| format!("must be between {} and {} bytes", HeaderLimit::MIN, u32::MAX))
}

impl ServeArgs {
    /// The typed options for [`crate::app::prepare`].
    pub fn options(&self) -> ServeOptions {
        let tls = match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => TlsSource::Files {
                cert: cert.clone(),
                key: key.clone(),
            },
            _ => TlsSource::Dir(self.cert_dir.clone()),
        };
        ServeOptions {
            config: self.config.clone(),
            tls,
            dry_run: self.dry_run,
            http: HttpLimits {
                body: BodyLimit(self.max_body_bytes),
                body_budget: BodyBudget(self.body_budget_bytes),
                connection_body_budget: BodyBudget(self.connection_body_budget_bytes),
                requests_in_flight: self.max_requests_in_flight,
                handshake_timeout: Duration::from_secs(self.handshake_timeout_secs),
                header_read_timeout: Duration::from_secs(self.header_read_timeout_secs),
                body_read_timeout: Duration::from_secs(self.body_read_timeout_secs),
                idle_timeout: Duration::from_secs(self.idle_timeout_secs),
                max_connections: self.max_connections,
                h2_max_concurrent_streams: self.http2_max_concurrent_streams,
                h2_keep_alive: Duration::from_secs(self.http2_keep_alive_secs),
                max_header_bytes: self.max_header_bytes,
            },
            shutdown: ShutdownTiming {
                delay: Duration::from_secs(self.shutdown_delay_secs),
                drain: Duration::from_secs(self.drain_timeout_secs),
            },
            memory_budget: self
                .memory_budget_mib
                .map_or(MemoryBudget::FromCgroup, MemoryBudget::Mib),
            engine: EngineOptions {
                max_concurrent_instances: self.max_concurrent_evaluations,
                cache: self.cache.cache(),
            },
            client_ca: self.client_ca.clone(),
        }
    }
}

/// `portcullis certs`.
#[derive(Debug, Args)]
pub struct CertsArgs {
    /// Output directory for ca.crt, tls.crt and tls.key.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// DNS name or IP address for the certificate (repeatable).
    #[arg(long = "host", required = true)]
    pub hosts: Vec<String>,
    /// Also write client.crt and client.key, a client certificate for this name signed by the
    /// same CA: what the API server presents to `serve --client-ca ca.crt`.
    #[arg(long)]
    pub client: Option<String>,
}

/// `portcullis check`.
#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Manifest files or directories (searched recursively for .yaml, .yml, .json); `-` reads
    /// standard input (e.g. `helm template ... | portcullis check -`).
    #[arg(required = true)]
    pub inputs: Vec<PathBuf>,
    /// Policy configuration (YAML). Default: the built-in policy set.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Namespace for objects that do not name one.
    #[arg(long, short = 'n', default_value = "default")]
    pub namespace: String,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Format::Table)]
    pub output: Format,
    /// Show each mutation as a diff of the object (table output).
    #[arg(long)]
    pub show_patches: bool,
    /// Where compiled policies are cached.
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `portcullis policy ...`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Run a module against case files (the fixture format of policies/README.md) and print a
    /// pass/fail line per case; exit 1 when any case fails.
    Test(PolicyTestArgs),
    /// Show a module's transport, imports, exports and size, and whether it compiles and links.
    Inspect(PolicyInspectArgs),
}

/// `portcullis policy test`.
#[derive(Debug, Args)]
pub struct PolicyTestArgs {
    /// The policy module (.wasm).
    pub module: PathBuf,
    /// Settings (JSON or YAML) for cases that carry none.
    #[arg(long)]
    pub settings: Option<PathBuf>,
    /// Time bound per evaluation, as `timeout_ms` in the configuration.
    #[arg(long, default_value_t = 100)]
    pub timeout_ms: u64,
    /// Memory bound per instance, as `memory_mib` in the configuration.
    #[arg(long, default_value_t = 64)]
    pub memory_mib: u64,
    /// Case files (JSON or YAML).
    #[arg(required = true)]
    pub cases: Vec<PathBuf>,
    /// Where compiled policies are cached.
    #[command(flatten)]
    pub cache: CacheArgs,
}

/// `portcullis policy inspect`.
#[derive(Debug, Args)]
pub struct PolicyInspectArgs {
    /// The module (.wasm).
    pub module: PathBuf,
}

/// `portcullis audit`.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// Policy configuration (YAML). Default: the built-in policy set.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// kubeconfig file. Default: $KUBECONFIG, ~/.kube/config, then the in-cluster service
    /// account.
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    /// kubeconfig context. Default: the current context.
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace to audit (repeatable). Default: the context's namespace.
    #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
    pub namespace: Vec<String>,
    /// Audit every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = crate::audit::render::Format::Table)]
    pub output: crate::audit::render::Format,
    /// Create or update one PolicyReport (wgpolicyk8s.io/v1alpha2) per audited object, and an
    /// OpenReports Report (openreports.io/v1alpha1) where that CRD is installed.
    #[arg(long)]
    pub write_reports: bool,
    /// Objects per list request, as kubectl's --chunk-size.
    #[arg(long, default_value_t = crate::audit::list::ChunkSize::DEFAULT.0)]
    pub chunk_size: std::num::NonZeroU32,
    /// Where compiled policies are cached.
    #[command(flatten)]
    pub cache: CacheArgs,
}

impl AuditArgs {
    /// Where the cluster is and which namespaces to audit.
    pub fn connection(&self) -> crate::audit::Connection {
        use crate::audit::Namespaces;
        let namespaces = if self.all_namespaces {
            Namespaces::All
        } else if self.namespace.is_empty() {
            Namespaces::ContextDefault
        } else {
            Namespaces::Given(self.namespace.clone())
        };
        crate::audit::Connection {
            kubeconfig: self.kubeconfig.clone(),
            context: self.context.clone(),
            namespaces,
        }
    }
}
