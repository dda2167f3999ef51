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
    /// Print Webhook manifests that adopt a repository's (project's, workspace's)
    /// existing hooks: applied, they take the hooks over with the same ids and no write.
    /// The credential comes from BITBUCKET_TOKEN (Bearer), BITBUCKET_USERNAME and
    /// BITBUCKET_PASSWORD (Basic), or --token-file. Manifests go to stdout; progress and
    /// what a manifest cannot say go to stderr.
    Export(Box<ExportArgs>),
    /// List every hook of a workspace, project or whole Data Center instance: who manages
    /// it (--cluster), how its deliveries fare, and what is wrong with it (unmanaged,
    /// duplicated, inherited duplicate, inactive, failing, never delivered, unreachable,
    /// certificate expiring, unknown events), each with the command that fixes it.
    /// Credential as for export; the output goes to stdout or --out, progress to stderr.
    /// Exits non-zero when a place could not be read.
    Inventory(Box<InventoryArgs>),
    /// Check Webhook, WebhookSet and connection manifests offline, as the API server
    /// (schema, CEL rules) and the operator (events and scope per flavor) would: one
    /// FILE:LINE message per problem and a non-zero exit, for a CI step before Argo CD or
    /// Flux applies them. "-" reads standard input; other kinds are passed over.
    Check {
        /// YAML files (several documents each); a directory means its *.yaml and *.yml.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// The flavor of connections not among the files (Cloud, DataCenter, PostWebhooks).
        #[arg(long, value_parser = ["Cloud", "DataCenter", "PostWebhooks"])]
        flavor: Option<String>,
    },
    /// Print the CustomResourceDefinitions as YAML (kubectl apply -f - ready).
    Crds {
        /// Write one file per CRD into this directory instead of printing them.
        #[arg(long, value_name = "DIR")]
        out_dir: Option<PathBuf>,
    },
}

#[derive(clap::Args)]
struct RunArgs {
    /// How often every hook is compared with Bitbucket ("10m", "90s"); spread per repository,
    /// and longer where one listing per repository that often would take more than half of
    /// a credential's request budget (its connection's status.budget.resyncEvery).
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
    /// Watch Flux Receivers (notification.toolkit.fluxcd.io/v1) so that a Webhook with
    /// urlFrom.receiverRef follows its Receiver's path at once. Needs Flux's CRDs and read
    /// access to receivers (chart value urlFrom.fluxReceivers); without it such Webhooks
    /// read their Receiver at each reconcile and follow it at the next resync.
    #[arg(long, env = "BBWO_WATCH_FLUX_RECEIVERS", default_value_t = false, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    watch_flux_receivers: bool,
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

/// Which Bitbucket, which credential, which places: shared by `export` and `inventory`.
#[derive(clap::Args)]
struct ServerArgs {
    /// Which API: Cloud, DataCenter or PostWebhooks.
    #[arg(long, value_parser = ["Cloud", "DataCenter", "PostWebhooks"])]
    flavor: String,
    /// The API root, as a connection's baseURL (default for Cloud: its public API).
    #[arg(long)]
    base_url: Option<String>,
    /// A repository ("workspace/slug", "PROJECT/slug"); repeat for several.
    #[arg(long = "repository", value_name = "OWNER/SLUG", conflicts_with_all = ["workspace", "project"])]
    repositories: Vec<String>,
    /// Cloud: every repository of this workspace, and the workspace's own hooks.
    #[arg(long)]
    workspace: Option<String>,
    /// Data Center, Post Webhooks: every repository of this project and the project's
    /// own hooks. Cloud (with --workspace): only the repositories of this project.
    #[arg(long)]
    project: Option<String>,
    /// Requests per hour at most (Cloud allows 1,000 webhook requests an hour).
    #[arg(long, default_value_t = 900, value_parser = clap::value_parser!(u32).range(1..))]
    requests_per_hour: u32,
    /// A file whose content is the Bearer token (instead of BITBUCKET_TOKEN).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// PEM CA certificates to trust for a Data Center server.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[derive(clap::Args)]
struct ExportArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Print Webhooks for this flavor instead of the source's (only Cloud, from Data
    /// Center or Post Webhooks): events are translated, what Cloud lacks is named on
    /// stderr and left out. Needs --map.
    #[arg(long, value_parser = ["Cloud"], requires = "map")]
    to: Option<String>,
    /// With --to Cloud: where a project's repositories go, PROJECT=workspace or
    /// PROJECT=workspace/CLOUDPROJECT (the Cloud project of a project's own hooks);
    /// repeat for several.
    #[arg(long, value_name = "PROJECT=WORKSPACE[/PROJECT]", requires = "to")]
    map: Vec<String>,
    /// The BitbucketConnection the Webhooks will reference.
    #[arg(long, default_value = "bitbucket")]
    connection: String,
    /// Reference a ClusterBitbucketConnection instead.
    #[arg(long)]
    cluster_connection: bool,
    /// Put the manifests in this namespace (default: none, `kubectl apply -n` decides).
    #[arg(long)]
    namespace: Option<String>,
    /// The Secret (key "secret") the Webhooks of signed hooks reference.
    #[arg(long, default_value = "webhook-secret")]
    secret_name: String,
}

#[derive(clap::Args)]
struct InventoryArgs {
    #[command(flatten)]
    server: ServerArgs,
    /// Data Center, Post Webhooks: every project the credential may view.
    #[arg(long, conflicts_with_all = ["repositories", "workspace", "project"])]
    all_projects: bool,
    /// table, json (schema: docs/inventory.schema.json) or html (one self-contained page).
    #[arg(long, short, default_value = "table", value_parser = ["table", "json", "html"])]
    output: String,
    /// Write the output to this file instead of stdout.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep what is listed in this file; a later run with the same file and flags lists
    /// only what is missing (after an interruption or a long rate limit).
    #[arg(long)]
    state: Option<PathBuf>,
    /// Ask the cluster (KUBECONFIG, or in-cluster) which Webhook manages each hook, and
    /// flag the ones none does.
    #[arg(long)]
    cluster: bool,
    /// Send each distinct URL one unsigned ping, as the operator's endpoint probe does
    /// (never to private, loopback or cluster addresses unless --probe-private-targets).
    #[arg(long)]
    probe: bool,
    /// Let --probe reach private, loopback and link-local addresses.
    #[arg(long, requires = "probe")]
    probe_private_targets: bool,
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
        Command::Export(args) => export(*args),
        Command::Inventory(args) => inventory(*args),
        Command::Check { files, flavor } => check(&files, flavor.as_deref()),
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

fn check(paths: &[PathBuf], flavor: Option<&str>) -> Result<(), String> {
    use bitbucket_webhook_operator::api::Flavor;
    let flavor = match flavor {
        Some("Cloud") => Some(Flavor::Cloud),
        Some("DataCenter") => Some(Flavor::DataCenter),
        Some(_) => Some(Flavor::PostWebhooks),
        None => None,
    };
    let mut files = Vec::new();
    for path in paths {
        if path.as_os_str() == "-" {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)
                .map_err(|e| format!("cannot read standard input: {e}"))?;
            files.push(("<stdin>".to_owned(), text));
            continue;
        }
        let mut found = vec![path.clone()];
        if path.is_dir() {
            let entries = std::fs::read_dir(path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            found = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
                .collect();
            found.sort();
        }
        for file in found {
            let text = std::fs::read_to_string(&file)
                .map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            files.push((file.display().to_string(), text));
        }
    }
    let report = bitbucket_webhook_operator::check::check(&files, flavor);
    for finding in &report.findings {
        println!("{finding}");
    }
    for note in &report.notes {
        eprintln!("note: {note}");
    }
    match report.findings.len() {
        0 => {
            eprintln!(
                "{} objects checked in {} files: no problems",
                report.checked,
                files.len()
            );
            Ok(())
        }
        1 => Err(format!(
            "1 problem in {} objects checked ({} files)",
            report.checked,
            files.len()
        )),
        n => Err(format!(
            "{n} problems in {} objects checked ({} files)",
            report.checked,
            files.len()
        )),
    }
}

/// The credential of `export`, from a file or the environment; never from a flag value
/// (other users of the machine can read command lines).
fn export_credentials(
    token_file: Option<&PathBuf>,
) -> Result<bitbucket_webhook_operator::bitbucket::Credentials, String> {
    use bitbucket_webhook_operator::bitbucket::Credentials;
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
    if let Some(path) = token_file {
        let token = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --token-file {}: {e}", path.display()))?;
        let token = token.trim();
        if token.is_empty() {
            return Err(format!("--token-file {} is empty", path.display()));
        }
        return Ok(Credentials::Bearer(token.to_owned().into()));
    }
    match (
        env("BITBUCKET_TOKEN"),
        env("BITBUCKET_USERNAME"),
        env("BITBUCKET_PASSWORD"),
    ) {
        (Some(token), _, _) => Ok(Credentials::Bearer(token.trim().to_owned().into())),
        (None, Some(username), Some(password)) => Ok(Credentials::Basic {
            username,
            password: password.into(),
        }),
        _ => Err("no credential: set BITBUCKET_TOKEN, or BITBUCKET_USERNAME and BITBUCKET_PASSWORD, or pass --token-file".to_owned()),
    }
}

/// The places to read, from the flags.
fn source(
    args: &ServerArgs,
    flavor: bitbucket_webhook_operator::api::Flavor,
) -> Result<bitbucket_webhook_operator::export::Source, String> {
    use bitbucket_webhook_operator::api::Flavor;
    use bitbucket_webhook_operator::bitbucket::RepoRef;
    use bitbucket_webhook_operator::export::Source;
    let source = match (&args.workspace, &args.project, flavor) {
        (None, None, _) if !args.repositories.is_empty() => Source::Repositories(
            args.repositories
                .iter()
                .map(|r| {
                    RepoRef::parse(r).ok_or_else(|| format!("--repository {r:?} is not owner/slug"))
                })
                .collect::<Result<_, _>>()?,
        ),
        (Some(workspace), project, Flavor::Cloud) => Source::Owner {
            owner: workspace.clone(),
            project: project.clone(),
        },
        (None, Some(project), Flavor::DataCenter | Flavor::PostWebhooks) => Source::Owner {
            owner: project.clone(),
            project: None,
        },
        (None, Some(_), Flavor::Cloud) => {
            return Err(
                "on Cloud, --project narrows a --workspace: give the workspace too".to_owned(),
            );
        }
        (Some(_), _, _) => {
            return Err(format!("{flavor:?} has no workspaces: use --project KEY"));
        }
        (None, None, _) => {
            return Err("say what to read: --repository OWNER/SLUG (repeatable), --workspace (Cloud) or --project".to_owned());
        }
    };
    Ok(source)
}

/// The server, credential, TLS options and pace the flags name.
fn server(args: &ServerArgs) -> Result<bitbucket_webhook_operator::export::Server, String> {
    use bitbucket_webhook_operator::api::Flavor;
    let _ = rustls::crypto::ring::default_provider().install_default();
    let flavor = match args.flavor.as_str() {
        "Cloud" => Flavor::Cloud,
        "DataCenter" => Flavor::DataCenter,
        _ => Flavor::PostWebhooks,
    };
    let tls = bitbucket_webhook_operator::bitbucket::TlsOptions {
        ca_bundle_pem: match &args.ca_file {
            Some(path) => Some(
                std::fs::read(path)
                    .map_err(|e| format!("cannot read --ca-file {}: {e}", path.display()))?,
            ),
            None => None,
        },
        insecure_skip_verify: false,
    };
    Ok(bitbucket_webhook_operator::export::Server {
        flavor,
        base_url: args.base_url.clone(),
        credentials: export_credentials(args.token_file.as_ref())?,
        tls,
        requests_per_hour: args.requests_per_hour,
    })
}

fn block_on<T>(work: impl std::future::Future<Output = Result<T, String>>) -> Result<T, String> {
    tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?
        .block_on(work)
}

fn export(args: ExportArgs) -> Result<(), String> {
    use bitbucket_webhook_operator::export::{Migration, Request, Target};
    let server = server(&args.server)?;
    let source = source(&args.server, server.flavor)?;
    let migration = match args.to {
        Some(_) => Some(Migration::parse(server.flavor, &args.map)?),
        None => None,
    };
    let request = Request {
        target: Target {
            flavor: server.flavor,
            connection: args.connection,
            cluster_connection: args.cluster_connection,
            namespace: args.namespace,
            secret_name: args.secret_name,
        },
        server,
        source,
        migration,
    };
    let mut progress = |line: String| eprintln!("export: {line}");
    let outcome = block_on(bitbucket_webhook_operator::export::run(
        request,
        &mut progress,
    ))?;
    for manifest in &outcome.export.manifests {
        let yaml = serde_saphyr::to_string(manifest)
            .map_err(|e| format!("cannot write a manifest as YAML: {e}"))?;
        print!("---\n{yaml}");
    }
    for note in &outcome.export.notes {
        eprintln!("export: note: {note}");
    }
    eprintln!(
        "export: {} manifests written",
        outcome.export.manifests.len()
    );
    if outcome.complete {
        Ok(())
    } else {
        Err("some repositories could not be read (see the notes above); their hooks are not in the output".to_owned())
    }
}

fn inventory(args: InventoryArgs) -> Result<(), String> {
    use bitbucket_webhook_operator::inventory::{self, Request, Scope};
    let server = server(&args.server)?;
    let scope = if args.all_projects {
        if server.flavor == bitbucket_webhook_operator::api::Flavor::Cloud {
            return Err(
                "--all-projects is for Data Center and Post Webhooks; on Cloud give --workspace"
                    .to_owned(),
            );
        }
        Scope::AllProjects
    } else {
        Scope::Of(source(&args.server, server.flavor)?)
    };
    let mut progress = |line: String| eprintln!("inventory: {line}");
    let found = block_on(async {
        let cluster = match args.cluster {
            true => Some(kube::Client::try_default().await.map_err(|e| {
                format!("--cluster: cannot reach the cluster (KUBECONFIG or in-cluster): {e}")
            })?),
            false => None,
        };
        let request = Request {
            server,
            scope,
            state: args.state.clone(),
            cluster,
            probe: args.probe.then_some(args.probe_private_targets),
        };
        inventory::run(request, &mut progress).await
    })?;
    let text = match args.output.as_str() {
        "json" => serde_json::to_string_pretty(&found).map_err(|e| e.to_string())? + "\n",
        "html" => inventory::html::render(&found)?,
        _ => inventory::table::render(&found),
    };
    match &args.out {
        Some(path) => std::fs::write(path, text)
            .map_err(|e| format!("cannot write --out {}: {e}", path.display()))?,
        None => print!("{text}"),
    }
    let t = &found.totals;
    eprintln!(
        "inventory: {} hooks on {} places, {} flagged, {} requests",
        t.hooks, t.places, t.flagged, found.requests
    );
    if found.complete {
        Ok(())
    } else {
        Err(format!(
            "{} places could not be read (see the output); their hooks are missing",
            t.unreadable_places
        ))
    }
}

/// What the logging setup leaves to the rest of the run: the handle that changes the log
/// filter, and (otel builds) the trace exporter to flush at the end.
struct Logging {
    log_level: bitbucket_webhook_operator::runtime::LogLevelControl,
    #[cfg(feature = "otel")]
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

/// Installs the log subscriber: the filter (behind a reload handle, so PUT
/// /debug/log-level can change it), the format, and the OTLP layer when asked.
fn init_logging(args: &RunArgs) -> Result<Logging, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .map_err(|e| format!("--log-level {:?}: {e}", args.log_level))?;
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
        let format = tracing_subscriber::fmt::layer().json();
        registry.with(format.with_writer(std::io::stderr)).init();
    } else {
        registry
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .init();
    }
    Ok(Logging {
        log_level: std::sync::Arc::new(move |level: &str| {
            let filter = tracing_subscriber::EnvFilter::try_new(level)
                .map_err(|e| format!("{level:?} is not a log filter: {e}"))?;
            reload
                .reload(filter)
                .map_err(|e| format!("cannot change the log filter: {e}"))
        }),
        #[cfg(feature = "otel")]
        provider,
    })
}

/// The operator's settings from its flags.
fn operator_config(args: &RunArgs) -> Config {
    Config {
        resync_period: args.resync_period,
        list_ttl: args.resync_period.mul_f64(0.9),
        health_period: args.health_period,
        status_refresh: args.status_refresh_period,
        retry: bitbucket_webhook_operator::bitbucket::RetryPolicy {
            rate_limit_pause: args.rate_limit_pause,
            ..Default::default()
        },
        namespaces: args.namespaces.clone(),
        selector: args.selector.clone(),
        cluster_connections: args.cluster_connections,
        leader_election: (!args.leader_election_lease.is_empty()).then(|| {
            bitbucket_webhook_operator::reconcile::LeaderElection {
                namespace: args
                    .leader_election_namespace
                    .clone()
                    .unwrap_or_else(|| args.cluster_secret_namespace.clone()),
                lease: args.leader_election_lease.clone(),
                identity: std::env::var("POD_NAME")
                    .unwrap_or_else(|_| format!("{}-{}", hostname(), std::process::id())),
                duration_seconds: args.leader_election_duration.max(2),
            }
        }),
        cluster_secret_namespace: args.cluster_secret_namespace.clone(),
        namespaced_private_targets: args.namespaced_private_targets,
        watch_flux_receivers: args.watch_flux_receivers,
        concurrency: args.concurrency,
        periodic_concurrency: usize::from(args.periodic_concurrency),
    }
}

fn run(args: RunArgs) -> Result<(), String> {
    // reqwest, kube (and the OTLP exporter) use rustls; exactly one crypto provider must
    // be installed, before any client is built.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let logging = init_logging(&args)?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async {
        let result = operate(args, logging.log_level).await;
        #[cfg(feature = "otel")]
        if let Some(provider) = &logging.provider {
            // Send what is still batched before the process ends.
            let _ = provider.shutdown();
        }
        result
    })
}

/// Serves metrics and probes and runs the controllers until SIGTERM or Ctrl-C.
async fn operate(
    args: RunArgs,
    log_level: bitbucket_webhook_operator::runtime::LogLevelControl,
) -> Result<(), String> {
    let client = kube::Client::try_default()
        .await
        .map_err(|e| format!("cannot reach Kubernetes (kubeconfig or in-cluster config): {e}"))?;
    let config = operator_config(&args);
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
    let metrics = std::sync::Arc::new(
        bitbucket_webhook_operator::metrics::Metrics::with_per_webhook(args.per_webhook_metrics),
    );
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
    result
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
