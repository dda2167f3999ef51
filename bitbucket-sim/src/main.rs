//! The `bitbucket-sim` binary: `bitbucket-sim --listen 127.0.0.1:7990 [--tls-cert C --tls-key K]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;

/// An in-memory Bitbucket (Cloud 2.0, Data Center, Post Webhooks) for tests and demos.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:7990")]
    listen: SocketAddr,
    /// Serve https with this PEM certificate (chain).
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Also run a webhook receiver here (for demos): it answers 200 and logs each delivery.
    #[arg(long)]
    receiver_listen: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bitbucket-sim: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    bitbucket_sim::install_crypto_provider();
    let tls = args.tls_cert.is_some();
    let sim = bitbucket_sim::Sim::new(tls)?;
    let app = bitbucket_sim::router(sim);
    let listener = std::net::TcpListener::bind(args.listen)
        .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    listener.set_nonblocking(true).map_err(|e| e.to_string())?;
    let scheme = if tls { "https" } else { "http" };
    // Scripts read these lines to learn the ports.
    println!("bitbucket-sim listening on {scheme}://{addr}");
    let _receiver = match args.receiver_listen {
        Some(listen) => {
            let receiver = bitbucket_sim::receiver::Receiver::start_on(listen, false).await?;
            println!("receiver listening on http://{}", receiver.addr);
            Some(receiver)
        }
        None => None,
    };
    let shutdown = axum_server::Handle::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.graceful_shutdown(Some(std::time::Duration::from_secs(5)));
    });
    let service = app.into_make_service();
    match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => {
            let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&cert, &key)
                .await
                .map_err(|e| format!("cannot load {} / {}: {e}", cert.display(), key.display()))?;
            axum_server::from_tcp_rustls(listener, config)
                .map_err(|e| e.to_string())?
                .handle(shutdown)
                .serve(service)
                .await
        }
        _ => {
            axum_server::from_tcp(listener)
                .map_err(|e| e.to_string())?
                .handle(shutdown)
                .serve(service)
                .await
        }
    }
    .map_err(|e| format!("server failed: {e}"))
}
