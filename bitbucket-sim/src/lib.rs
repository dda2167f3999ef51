//! `bitbucket-sim`: an in-memory Bitbucket for tests, benchmarks and the demo.
//!
//! One port serves Bitbucket Cloud REST 2.0 (`/2.0/...`), Data Center
//! (`/rest/api/latest/...`), the Post Webhooks app (`/rest/webhook/2.0/...`) and the
//! simulator's own control API (`/_sim/...`, see [`control`]). It really delivers:
//! `POST /_sim/events` sends signed payloads to every matching hook. Nothing in the
//! operator depends on this crate.
//!
//! Where Atlassian's documents are silent the simulator makes a choice and says so in
//! `docs/simulator.md`.

// Handlers return `Result<_, Response>`: the error is the answer, built once.
#![allow(clippy::result_large_err)]

pub mod access;
pub mod client;
pub mod cloud;
pub mod control;
pub mod datacenter;
pub mod delivery;
pub mod http;
pub mod middleware;
pub mod postwebhooks;
pub mod receiver;
pub mod scopes;
pub mod state;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;

/// The simulator: its state and the HTTP clients it delivers with.
pub struct Sim {
    state: Mutex<State>,
    pub(crate) deliverer: delivery::Deliverer,
    /// Whether the simulator itself serves https (for links it writes).
    pub(crate) tls: bool,
}

pub use state::State;

impl Sim {
    /// A simulator with no repositories, tokens or hooks.
    pub fn new(tls: bool) -> Result<Arc<Sim>, String> {
        Ok(Arc::new(Sim {
            state: Mutex::new(State::default()),
            deliverer: delivery::Deliverer::new()?,
            tls,
        }))
    }

    /// The state, even if a handler panicked while holding it (the simulator keeps serving).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Every route of the simulator.
pub fn router(sim: Arc<Sim>) -> Router {
    let api = Router::new()
        .merge(cloud::routes())
        .merge(datacenter::routes())
        .merge(postwebhooks::routes())
        .layer(axum::middleware::from_fn_with_state(
            sim.clone(),
            middleware::faults_and_counts,
        ));
    api.merge(control::routes()).with_state(sim)
}

/// Installs the rustls crypto provider once per process (reqwest and the TLS server
/// need one, and more than one is compiled in).
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// A simulator on a loopback port, for tests in this process.
pub struct Running {
    pub sim: Arc<Sim>,
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    handle: axum_server::Handle<SocketAddr>,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
}

/// Serves the simulator's routes on `listener` until `handle` shuts it down (which also
/// breaks its open connections).
fn serve(
    sim: &Arc<Sim>,
    listener: std::net::TcpListener,
    tls: Option<axum_server::tls_rustls::RustlsConfig>,
    handle: axum_server::Handle<SocketAddr>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    let app = router(sim.clone()).into_make_service();
    Ok(match tls {
        Some(config) => {
            let server = axum_server::from_tcp_rustls(listener, config)?.handle(handle);
            tokio::spawn(async move {
                let _ = server.serve(app).await;
            })
        }
        None => {
            let server = axum_server::from_tcp(listener)?.handle(handle);
            tokio::spawn(async move {
                let _ = server.serve(app).await;
            })
        }
    })
}

impl Running {
    /// `http://127.0.0.1:PORT` (or https when started with TLS).
    pub fn base_url(&self) -> String {
        format!(
            "{}://{}",
            if self.sim.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// A client of this simulator's control API.
    pub fn control(&self) -> client::SimClient {
        client::SimClient::new(&self.base_url())
    }

    /// Bitbucket restarting with its database: stops serving (open connections broken,
    /// the port refusing) for `down`, then serves the same state on the same address.
    pub async fn restart(&mut self, down: std::time::Duration) -> std::io::Result<()> {
        self.handle.shutdown();
        let _ = (&mut self.task).await;
        tokio::time::sleep(down).await;
        // std's listener sets SO_REUSEADDR: the port is free again at once.
        let listener = std::net::TcpListener::bind(self.addr)?;
        self.handle = axum_server::Handle::new();
        self.task = serve(&self.sim, listener, self.tls.clone(), self.handle.clone())?;
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.handle.shutdown();
        self.task.abort();
    }
}

/// Starts a simulator serving https with the given PEM certificate and key.
pub async fn start_tls(cert_pem: &str, key_pem: &str) -> std::io::Result<Running> {
    install_crypto_provider();
    let config = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.as_bytes().to_vec(),
        key_pem.as_bytes().to_vec(),
    )
    .await
    .map_err(std::io::Error::other)?;
    start_with(Some(config))
}

/// Starts a simulator on a free loopback port in the current tokio runtime.
pub async fn start() -> std::io::Result<Running> {
    install_crypto_provider();
    start_with(None)
}

fn start_with(tls: Option<axum_server::tls_rustls::RustlsConfig>) -> std::io::Result<Running> {
    let sim = Sim::new(tls.is_some()).map_err(std::io::Error::other)?;
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let addr = listener.local_addr()?;
    let handle = axum_server::Handle::new();
    let task = serve(&sim, listener, tls.clone(), handle.clone())?;
    Ok(Running {
        sim,
        addr,
        task,
        handle,
        tls,
    })
}
