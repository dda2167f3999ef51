//! A webhook receiver for tests and the demo: records every request it gets and answers
//! with a status that can be changed at any time. Over https it uses a fresh self-signed
//! certificate, which Bitbucket (and the simulator) must refuse unless verification is
//! skipped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::any;

/// One request the receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    /// Header names in lower case.
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

#[derive(Default)]
struct Shared {
    received: Mutex<Vec<Received>>,
    status: AtomicU16,
}

/// A running receiver. Stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    tls: bool,
    shared: Arc<Shared>,
    handle: axum_server::Handle<SocketAddr>,
    /// The self-signed certificate (PEM) when serving https.
    pub certificate_pem: Option<String>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.handle.shutdown();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let headers: HashMap<String, String> = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let key = headers.get("x-event-key").cloned().unwrap_or_default();
    let signed = headers.contains_key("x-hub-signature");
    tracing::info!(path = %uri.path(), event = %key, signed, bytes = body.len(), "delivery received");
    shared
        .received
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(Received {
            path: uri.path().to_owned(),
            headers,
            body: body.to_vec(),
        });
    StatusCode::from_u16(shared.status.load(Ordering::Relaxed)).unwrap_or(StatusCode::OK)
}

impl Receiver {
    /// Starts on a free loopback port; `tls` serves https with a self-signed certificate
    /// for 127.0.0.1 and localhost.
    pub async fn start(tls: bool) -> Result<Receiver, String> {
        Receiver::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), tls).await
    }

    /// Starts over https with a self-signed certificate that expires `days` from now
    /// (at midnight UTC), to test certificate-expiry warnings.
    pub async fn start_expiring(days: i64) -> Result<Receiver, String> {
        let date = (jiff::Timestamp::now() + jiff::SignedDuration::from_hours(24 * days))
            .to_zoned(jiff::tz::TimeZone::UTC)
            .date();
        let month = u8::try_from(date.month()).map_err(|e| e.to_string())?;
        let day = u8::try_from(date.day()).map_err(|e| e.to_string())?;
        Receiver::serve(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            true,
            Some((i32::from(date.year()), month, day)),
        )
        .await
    }

    /// Starts on a given address.
    pub async fn start_on(listen: SocketAddr, tls: bool) -> Result<Receiver, String> {
        Receiver::serve(listen, tls, None).await
    }

    /// `expires`: the certificate's last day (year, month, day).
    async fn serve(
        listen: SocketAddr,
        tls: bool,
        expires: Option<(i32, u8, u8)>,
    ) -> Result<Receiver, String> {
        crate::install_crypto_provider();
        let shared = Arc::new(Shared {
            status: AtomicU16::new(200),
            ..Shared::default()
        });
        let app = Router::new()
            .route("/", any(record))
            .route("/{*path}", any(record))
            .with_state(shared.clone());
        let listener = std::net::TcpListener::bind(listen).map_err(|e| e.to_string())?;
        listener.set_nonblocking(true).map_err(|e| e.to_string())?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        let handle = axum_server::Handle::new();
        let mut certificate_pem = None;
        if tls {
            let key = rcgen::KeyPair::generate().map_err(|e| e.to_string())?;
            let mut params =
                rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
                    .map_err(|e| e.to_string())?;
            if let Some((year, month, day)) = expires {
                params.not_after = rcgen::date_time_ymd(year, month, day);
            }
            let cert = params.self_signed(&key).map_err(|e| e.to_string())?;
            let config = axum_server::tls_rustls::RustlsConfig::from_pem(
                cert.pem().into_bytes(),
                key.serialize_pem().into_bytes(),
            )
            .await
            .map_err(|e| e.to_string())?;
            certificate_pem = Some(cert.pem());
            let server = axum_server::from_tcp_rustls(listener, config)
                .map_err(|e| e.to_string())?
                .handle(handle.clone());
            tokio::spawn(server.serve(app.into_make_service()));
        } else {
            let server = axum_server::from_tcp(listener)
                .map_err(|e| e.to_string())?
                .handle(handle.clone());
            tokio::spawn(server.serve(app.into_make_service()));
        }
        Ok(Receiver {
            addr,
            tls,
            shared,
            handle,
            certificate_pem,
        })
    }

    /// The URL to register as a webhook target.
    pub fn url(&self) -> String {
        format!(
            "{}://{}/hook",
            if self.tls { "https" } else { "http" },
            self.addr
        )
    }

    /// What the receiver answers from now on.
    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::Relaxed);
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
