//! `tandem`: the broker's command line.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tandem_broker::config::overrides::{ConfigSource, ListenerOverride};
use tandem_broker::config::{Config, DEFAULT_CONFIG, LogFormat};
use tandem_broker::telemetry::Telemetry;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

/// jemalloc, with its background threads: a connection, a session and a routed message
/// each allocate a little, from many threads (glibc's allocator showed up at ~7% of the
/// broker's CPU under a connect storm), and what a burst of clients used must come back
/// when they leave. mimalloc was as fast or a little faster (QoS 1 throughput 3-5%, in
/// one A/B run), but it purges freed pages only from the thread that owns them, when that
/// thread next allocates: an idle broker kept 430 MB after 19,000 clients had left
/// (18 MB at start). jemalloc's background threads return them within seconds (46 MB).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Tandem: an MQTT broker whose plugins run out of process as gRPC servers.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// Configuration file (YAML). Without it the embedded default is served:
    /// 127.0.0.1:1883, no plugins.
    #[arg(long, short, env = "TANDEM_CONFIG")]
    config: Option<PathBuf>,
    /// Log filter, e.g. `info` or `tandem_broker=debug`. Overrides the config's
    /// `log.level`; `RUST_LOG` overrides both.
    #[arg(long, env = "TANDEM_LOG")]
    log: Option<String>,
    /// Serve the listener named `default` (or the only one) on this address instead:
    /// `IP:PORT`, or an `IP` that keeps its port, e.g. `0.0.0.0:1883` or `0.0.0.0`.
    #[arg(long, value_name = "ADDR")]
    bind: Option<String>,
    /// Serve the listener named `default` (or the only one) on this port instead.
    #[arg(long, short, value_name = "PORT")]
    port: Option<u16>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validates a configuration file and exits (0 if valid). Unless `--offline`, also
    /// loads every TLS listener's certificate, key and client CA, starts every plugin (running their `command:` if any), checks that each answers
    /// `Describe` and declares the role its chain needs, then stops them.
    CheckConfig {
        /// The file to check.
        file: PathBuf,
        /// Only check the file itself; do not contact plugins.
        #[arg(long)]
        offline: bool,
    },
    /// Prints the embedded, commented default configuration.
    PrintDefaultConfig,
    /// Asks a running broker to reload its configuration file, and says whether it did:
    /// exits 0 when the reload is applied, 1 with the reason when it is refused or the
    /// broker cannot be asked (the configuration in force keeps serving), 2 when no
    /// answer came in time (it may still be applied). The plugin sections take effect. Uses the
    /// broker's local control socket; `kill -HUP` reloads too, with the outcome only in
    /// the log.
    Reload {
        /// The broker's process id.
        #[arg(long)]
        pid: u32,
        /// How long to wait for the outcome (a reload waits for new plugins to start).
        /// Past it, the command exits 2: the outcome is unknown.
        #[arg(long, default_value = "60s", value_parser = positive_duration)]
        timeout: std::time::Duration,
    },
    /// Tools for plugin authors.
    Plugin {
        #[command(subcommand)]
        command: PluginCommand,
    },
}

#[derive(Subcommand)]
enum PluginCommand {
    /// Writes a standalone plugin project (Rust on the SDK, or Python) in a new directory.
    New(tandem_broker::scaffold::NewArgs),
    /// Checks a running plugin server against the plugin contract and prints one line
    /// per check; exits non-zero if any check fails.
    Check(tandem_broker::conformance::CheckArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::PrintDefaultConfig) => {
            print!("{DEFAULT_CONFIG}");
            ExitCode::SUCCESS
        }
        Some(Command::CheckConfig { file, offline }) => check_config(&file, offline),
        Some(Command::Reload { pid, timeout }) => {
            use tandem_broker::control::{ReloadAnswer, request_reload};
            match request_reload(pid, timeout) {
                Ok(ReloadAnswer::Applied(summary)) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Ok(ReloadAnswer::Refused(reason)) => {
                    eprintln!(
                        "error: reload refused; the configuration in force keeps serving: {reason}"
                    );
                    ExitCode::FAILURE
                }
                Err(err @ tandem_broker::control::ControlError::NoAnswer { .. }) => {
                    eprintln!("error: {err}");
                    ExitCode::from(2)
                }
                Err(err) => {
                    eprintln!("error: {err}");
                    ExitCode::FAILURE
                }
            }
        }
        Some(Command::Plugin {
            command: PluginCommand::New(args),
        }) => match tandem_broker::scaffold::create(&args) {
            Ok(created) => {
                print!("{created}");
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {err}");
                ExitCode::FAILURE
            }
        },
        Some(Command::Plugin {
            command: PluginCommand::Check(args),
        }) => tandem_broker::conformance::run(&args),
        None => {
            let overrides = ListenerOverride {
                bind: cli.bind,
                port: cli.port,
                listener: None,
            };
            serve(cli.config, overrides, cli.log)
        }
    }
}

/// A duration above zero (`--timeout 0s` would mean "never wait").
fn positive_duration(text: &str) -> Result<std::time::Duration, String> {
    match humantime::parse_duration(text) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be more than zero".into()),
        Err(err) => Err(err.to_string()),
    }
}

fn check_config(file: &std::path::Path, offline: bool) -> ExitCode {
    let config = match Config::from_file(file) {
        Ok(c) => c,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    if !offline {
        // The TLS listeners' files, read as start-up reads them (offline skips them, as
        // the image build checks a config whose certificates are mounted later).
        match tandem_broker::transport::check_certificates(&config) {
            Ok(listeners) => {
                for (name, not_after) in listeners {
                    let until = not_after.unwrap_or_else(|| "unknown".to_owned());
                    println!("listener {name}: TLS certificate and key load; valid until {until}");
                }
            }
            Err(err) => {
                eprintln!("error: {}: {err}", file.display());
                return ExitCode::FAILURE;
            }
        }
    }
    if offline || config.plugins.is_empty() {
        println!("{}: ok", file.display());
        return ExitCode::SUCCESS;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let result =
            tandem_broker::plugins::PluginHost::start(&config.plugin_sections(), shutdown.clone())
                .await;
        shutdown.cancel();
        match result {
            Ok(host) => {
                for p in host.plugins() {
                    let d = p.described().unwrap_or_default();
                    println!(
                        "plugin {}: {} {} at {} serves {:?}",
                        p.alias, d.name, d.version, p.config.endpoint, d.roles
                    );
                }
                host.stop(std::time::Duration::from_secs(5)).await;
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(err) => {
                eprintln!("error: {}: {err}", file.display());
                ExitCode::FAILURE
            }
        }
    })
}

/// How long the spans still queued at exit may take to reach the OTLP collector.
const TRACE_FLUSH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

fn serve(file: Option<PathBuf>, overrides: ListenerOverride, log: Option<String>) -> ExitCode {
    // The config is read before logging starts, as it says how to log; its errors go
    // to stderr as they do for check-config.
    let source = file.map(|file| ConfigSource {
        file,
        overrides: overrides.clone(),
    });
    let loaded = match &source {
        Some(source) => source.load(),
        None => {
            let mut config = Config::embedded_default();
            overrides
                .apply(&mut config, std::path::Path::new("<embedded default>"))
                .map(|()| config)
        }
    };
    let config = match loaded {
        Ok(c) => c,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    // Reloads override the listener overridden now, whatever the file becomes.
    let source = source.map(|s| ConfigSource {
        overrides: s.overrides.pinned(&config),
        file: s.file,
    });
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(err) => {
            eprintln!("error: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    // The OTLP exporter's connection is spawned on the runtime: set up inside it.
    let telemetry = match runtime.block_on(async { init_tracing(&config, log) }) {
        Ok(t) => t,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::FAILURE;
        }
    };
    if source.is_none() {
        tracing::info!("no --config given: serving the embedded default configuration");
    }
    if let Some(endpoint) = telemetry.endpoint() {
        tracing::info!(%endpoint, "exporting traces over OTLP");
    }
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        let served = match source {
            Some(source) => tandem_broker::run_file(config, source, shutdown).await,
            None => tandem_broker::run(config, shutdown).await,
        };
        match served {
            Ok(()) => {
                tracing::info!("stopped");
                ExitCode::SUCCESS
            }
            Err(err) => {
                tracing::error!("{err}");
                ExitCode::FAILURE
            }
        }
    });
    // Blocks this thread while the runtime's workers still drive the exporter's connection.
    telemetry.shutdown(TRACE_FLUSH_TIMEOUT);
    code
}

/// One subscriber for logs and spans: logs to stderr, filtered by `RUST_LOG`, else
/// `--log`/`TANDEM_LOG`, else `log.level`, as text or JSON lines (`log.format`); spans
/// to OpenTelemetry with their own filter (see `telemetry`), so a quiet log level does
/// not switch trace propagation off.
fn init_tracing(config: &Config, cli: Option<String>) -> Result<Telemetry, String> {
    let (source, filter) = match std::env::var("RUST_LOG") {
        Ok(env) if !env.is_empty() => ("RUST_LOG", env),
        _ => match cli {
            Some(cli) => ("--log/TANDEM_LOG", cli),
            None => ("log.level", config.log.level.as_str().to_owned()),
        },
    };
    let filter = EnvFilter::builder()
        .parse(&filter)
        .map_err(|e| format!("{source}: invalid log filter `{filter}`: {e}"))?;
    let (otel, telemetry) =
        tandem_broker::telemetry::layer(&config.tracing).map_err(|e| e.to_string())?;
    let registry = tracing_subscriber::registry().with(otel);
    match config.log.format {
        LogFormat::Text => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .fmt_fields(tandem_broker::logging::EscapedFields)
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal())
                    .with_filter(filter),
            )
            .init(),
        // Each line carries its spans' fields (a connection's client_id) under "spans".
        LogFormat::Json => registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_current_span(false)
                    .with_span_list(true)
                    .with_writer(std::io::stderr)
                    .with_filter(filter),
            )
            .init(),
    }
    Ok(telemetry)
}

/// Cancels `shutdown` on the first SIGINT or SIGTERM; a second one exits at once.
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    shutdown.cancel();
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    tracing::warn!("second signal: exiting now");
    std::process::exit(130);
}
