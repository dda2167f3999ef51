//! The `bitbucket-webhook-operator` command line.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use bitbucket_webhook_operator::api::{all_crds, crd_file_name, crd_yaml};
use bitbucket_webhook_operator::reconcile::Config;

/// Bitbucket webhooks as Kubernetes custom resources.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the operator: reconcile Webhooks and connections until SIGTERM or Ctrl-C.
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML (kubectl apply -f - ready).
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// How often every hook is compared with Bitbucket ("10m", "90s"); spread per repository.
    #[arg(long, default_value = "10m", value_parser = parse_duration, env = "BBWO_RESYNC_PERIOD")]
    resync_period: std::time::Duration,
    /// How often Data Center delivery statistics are read ("5m"): one listing per
    /// repository, shared with the resync when their slots meet (a divisor of the resync
    /// period makes them meet).
    #[arg(long, default_value = "5m", value_parser = parse_duration, env = "BBWO_HEALTH_PERIOD")]
    health_period: std::time::Duration,
    /// How old `lastSyncTime` may grow while resyncs find nothing new ("1h"): until then
    /// a matching hook costs no status write. A restarted operator trusts a status this
    /// much (plus one resync period) old until the repository's next slot.
    #[arg(long, default_value = "1h", value_parser = parse_duration, env = "BBWO_STATUS_REFRESH_PERIOD")]
    status_refresh_period: std::time::Duration,
    /// After Bitbucket answers 429 without Retry-After, how long every request of that
    /// credential waits ("60s"); doubled per further 429, at most an hour.
    #[arg(long, default_value = "60s", value_parser = parse_duration, env = "BBWO_RATE_LIMIT_PAUSE")]
    rate_limit_pause: std::time::Duration,
    /// Reconciles running at once, per watched namespace (they mostly wait on the
    /// network, so a few dozen suit two cores).
    #[arg(long, env = "BBWO_CONCURRENCY", default_value_t = 32, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// How many of those, across the process, may be periodic work (resyncs and health
    /// polls of Webhooks whose status is current); the rest stay free for new and edited
    /// Webhooks.
    #[arg(long, env = "BBWO_PERIODIC_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u16).range(1..))]
    periodic_concurrency: u16,
    /// After SIGTERM, how long in-flight reconciles may finish before the process exits
    /// anyway (below the pod's terminationGracePeriodSeconds). Work cut off is safe: a
    /// create in flight is marked and found again.
    #[arg(long, default_value = "20s", value_parser = parse_duration, env = "BBWO_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: std::time::Duration,
    /// The namespace holding the credential Secrets of ClusterBitbucketConnections.
    #[arg(
        long,
        env = "POD_NAMESPACE",
        default_value = "bitbucket-webhook-operator"
    )]
    cluster_secret_namespace: String,
    /// Watch only this namespace; repeat (or separate with commas) for several. Default:
    /// all namespaces.
    #[arg(long = "namespace", env = "BBWO_NAMESPACES", value_delimiter = ',')]
    namespaces: Vec<String>,
    /// Watch only Webhooks and connections matching this label selector (to shard).
    #[arg(long, env = "BBWO_SELECTOR")]
    selector: Option<String>,
    /// Serve ClusterBitbucketConnections (needs cluster-wide read access to them and to
    /// namespaces).
    #[arg(long, env = "BBWO_CLUSTER_CONNECTIONS", default_value_t = true, action = clap::ArgAction::Set)]
    cluster_connections: bool,
    /// Hold this Lease (in --leader-election-namespace) to work; other replicas wait.
    /// Empty: no leader election (one replica only).
    #[arg(long, env = "BBWO_LEADER_ELECTION_LEASE", default_value = "")]
    leader_election_lease: String,
    /// The namespace of the leader Lease (default: POD_NAMESPACE).
    #[arg(long, env = "BBWO_LEADER_ELECTION_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Seconds a leader keeps the Lease without renewing it; a standby takes over after.
    #[arg(long, env = "BBWO_LEADER_ELECTION_DURATION", default_value_t = 15)]
    leader_election_duration: u64,
    /// Where /healthz, /readyz and /metrics are served.
    #[arg(
        long,
        env = "BBWO_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_bind_address: std::net::SocketAddr,
    /// Log filter: a level (error, warn, info, debug, trace) or a tracing directive list.
    #[arg(long, env = "BBWO_LOG_LEVEL", default_value = "info")]
    log_level: String,
    /// Export traces over OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT (needs the "otel" build
    /// feature).
    #[arg(long, env = "BBWO_OTEL", default_value_t = false, action = clap::ArgAction::Set)]
    otel: bool,
    /// Log format.
    #[arg(long, env = "BBWO_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    log_format: String,
    /// Let namespaced BitbucketConnections reach private, loopback, link-local and
    /// cluster-internal addresses (their baseURL, and probes with allowPrivateTargets).
    /// Off: a namespace's user could otherwise aim the operator's requests inside the
    /// cluster. ClusterBitbucketConnections decide for themselves.
    #[arg(long, env = "BBWO_NAMESPACED_PRIVATE_TARGETS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    namespaced_private_targets: bool,
    /// Serve `PUT /debug/log-level` on the metrics port. Off by default: anyone who
    /// reaches that port (the chart's Service exposes it) could change the logging.
    #[arg(long, env = "BBWO_ENABLE_DEBUG_ENDPOINTS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    enable_debug_endpoints: bool,
    /// Export one `bbwo_webhook_ready` and one `bbwo_webhook_health` series per Webhook
    /// (namespace, name and connection labels), so alerts can name the failing Webhook.
    /// Two series per Webhook; turn off for very large installations.
    #[arg(long, env = "BBWO_PER_WEBHOOK_METRICS", default_value_t = true, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    per_webhook_metrics: bool,
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let d: jiff::SignedDuration = text
        .parse()
        .map_err(|e| format!("{text:?} is not a duration like 10m or 90s: {e}"))?;
    std::time::Duration::try_from(d).map_err(|_| format!("{text:?} must be positive"))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crds { out_dir } => crds(out_dir),
        Command::Run(args) => run(*args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("bitbucket-webhook-operator: {message}");
            ExitCode::FAILURE
        }
    }
}

fn crds(out_dir: Option<PathBuf>) -> Result<(), String> {
    let mut documents = Vec::new();
    for crd in all_crds() {
        let yaml = crd_yaml(&crd).map_err(|e| format!("cannot render CRD as YAML: {e}"))?;
        match &out_dir {
            Some(dir) => {
                let path = dir.join(crd_file_name(&crd));
                std::fs::write(&path, &yaml)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                eprintln!("wrote {}", path.display());
            }
            None => documents.push(yaml),
        }
    }
    if out_dir.is_none() {
        print!("{}", documents.join("---\n"));
    }
    Ok(())
}

fn run(args: RunArgs) -> Result<(), String> {
    // reqwest, kube (and the OTLP exporter) use rustls; exactly one crypto provider must
    // be installed, before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| format!("--log-level {:?}: {e}", args.log_level))?;
    // The filter sits behind a reload handle so PUT /debug/log-level can change it.
    let (filter, reload) = tracing_subscriber::reload::Layer::new(filter);
    #[cfg(feature = "otel")]
    let (otel, provider) = if args.otel {
        let (layer, provider) = bitbucket_webhook_operator::telemetry::layer()?;
        (Some(layer), Some(provider))
    } else {
        (None, None)
    };
    #[cfg(not(feature = "otel"))]
    let otel: Option<tracing_subscriber::layer::Identity> = if args.otel {
        return Err("--otel needs a build with the \"otel\" cargo feature".to_owned());
    } else {
        None
    };
    let registry = tracing_subscriber::registry().with(filter).with(otel);
    if args.log_format == "json" {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    let log_level: bitbucket_webhook_operator::runtime::LogLevelControl =
        std::sync::Arc::new(move |level: &str| {
            let filter = tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| format!("{level:?} is not a log filter: {e}"))?;
            reload
                .reload(filter)
                .map_err(|e| format!("cannot change the log filter: {e}"))
        });
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let client = kube::Client::try_default().await.map_err(|e| {
            format!("cannot reach Kubernetes (kubeconfig or in-cluster config): {e}")
        })?;
        let config = Config {
            resync_period: args.resync_period,
            list_ttl: args.resync_period.mul_f64(0.9),
            health_period: args.health_period,
            status_refresh: args.status_refresh_period,
            retry: bitbucket_webhook_operator::bitbucket::RetryPolicy {
                rate_limit_pause: args.rate_limit_pause,
                ..Default::default()
            },
            namespaces: args.namespaces,
            selector: args.selector,
            cluster_connections: args.cluster_connections,
            leader_election: (!args.leader_election_lease.is_empty()).then(|| {
                bitbucket_webhook_operator::reconcile::LeaderElection {
                    namespace: args
                        .leader_election_namespace
                        .clone()
                        .unwrap_or_else(|| args.cluster_secret_namespace.clone()),
                    lease: args.leader_election_lease.clone(),
                    identity: std::env::var("POD_NAME").unwrap_or_else(|_| {
                        format!("{}-{}", hostname(), std::process::id())
                    }),
                    duration_seconds: args.leader_election_duration.max(2),
                }
            }),
            cluster_secret_namespace: args.cluster_secret_namespace,
            namespaced_private_targets: args.namespaced_private_targets,
            concurrency: args.concurrency,
            periodic_concurrency: usize::from(args.periodic_concurrency),
        };
        let listener = tokio::net::TcpListener::bind(args.metrics_bind_address)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.metrics_bind_address))?;
        let (stop, stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            shutdown_signal().await;
            let _ = stop.send(true);
        });
        let until_stopped = move || {
            let mut rx = stopped.clone();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let metrics = std::sync::Arc::new(bitbucket_webhook_operator::metrics::Metrics::with_per_webhook(
            args.per_webhook_metrics,
        ));
        let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let server = tokio::spawn(bitbucket_webhook_operator::runtime::serve(
            listener,
            metrics.clone(),
            ready.clone(),
            args.enable_debug_endpoints.then_some(log_level),
            until_stopped(),
        ));
        tracing::info!(resync = ?config.resync_period, address = %args.metrics_bind_address, "bitbucket-webhook-operator starting");
        let run = bitbucket_webhook_operator::runtime::run_elected(
            client,
            config,
            metrics,
            ready,
            until_stopped(),
        );
        // Controllers finish their in-flight reconciles after the signal; a busy operator
        // gets shutdown_timeout for that, then exits anyway (in time for the kubelet).
        let deadline = {
            let stopped = until_stopped();
            let timeout = args.shutdown_timeout;
            async move {
                stopped.await;
                tokio::time::sleep(timeout).await;
            }
        };
        let result = tokio::select! {
            result = run => result,
            () = deadline => {
                tracing::warn!(timeout = ?args.shutdown_timeout, "in-flight reconciles did not finish in time; exiting");
                Ok(())
            }
        };
        server.abort();
        tracing::info!("stopped");
        #[cfg(feature = "otel")]
        if let Some(provider) = &provider {
            // Send what is still batched before the process ends.
            let _ = provider.shutdown();
        }
        result
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "operator".to_owned())
}
