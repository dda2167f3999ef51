//! The endpoint probe: one signed `diagnostics:ping` POST to a webhook URL, with the
//! hook's own TLS setting, guarded against reaching into the cluster (SSRF).

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use bitbucket_events::payload::PING_EVENT;
use bitbucket_events::signature;
use jiff::Timestamp;
use reqwest::Url;
use secrecy::{ExposeSecret, SecretString};

use super::classify::ProbeOutcome;
use crate::bitbucket::transport::error_chain;

/// Like Bitbucket, the probe gives a target 10 seconds.
const TIMEOUT: Duration = Duration::from_secs(10);

/// What to probe and how.
pub struct Probe<'a> {
    pub url: &'a str,
    pub secret: Option<&'a SecretString>,
    pub skip_cert_verification: bool,
    pub allow_private_targets: bool,
}

/// Why an address is off limits, if it is.
pub fn forbidden_address(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            if v4.is_loopback() {
                Some("loopback")
            } else if v4.is_link_local() {
                Some("link-local")
            } else if v4.is_private() {
                Some("private")
            } else if a == 100 && (64..128).contains(&b) {
                Some("shared (carrier-grade NAT)")
            } else if v4.is_unspecified() || v4.is_broadcast() || v4.is_multicast() || a == 0 {
                Some("non-routable")
            } else {
                None
            }
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return forbidden_address(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            if v6.is_loopback() {
                Some("loopback")
            } else if first & 0xffc0 == 0xfe80 {
                Some("link-local")
            } else if first & 0xfe00 == 0xfc00 {
                Some("private (unique local)")
            } else if v6.is_unspecified() || v6.is_multicast() {
                Some("non-routable")
            } else {
                None
            }
        }
    }
}

/// Cluster-internal names, refused before any lookup.
pub fn forbidden_host(host: &str) -> bool {
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    host == "localhost"
        || host.ends_with(".localhost")
        || host.ends_with(".svc")
        || host.ends_with(".cluster.local")
        || !host.contains('.') && host.parse::<IpAddr>().is_err()
}

fn refusal(host: &str, kind: &str) -> ProbeOutcome {
    ProbeOutcome::Refused(format!(
        "the probe does not go to {host}, a {kind} address; set allowPrivateTargets: true on the connection to allow it"
    ))
}

/// Where the probe may go: the URL's addresses after the SSRF checks.
async fn targets(
    url: &Url,
    allow_private: bool,
) -> Result<(String, Vec<SocketAddr>), ProbeOutcome> {
    let host = url
        .host_str()
        .ok_or_else(|| ProbeOutcome::Unreachable("the URL has no host".to_owned()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(443);
    if !allow_private && forbidden_host(&host) {
        return Err(refusal(&host, "cluster-internal or local"));
    }
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| ProbeOutcome::Unreachable(format!("cannot resolve {host}: {e}")))?
        .collect();
    if addrs.is_empty() {
        return Err(ProbeOutcome::Unreachable(format!(
            "{host} resolves to no address"
        )));
    }
    if !allow_private && let Some(kind) = addrs.iter().find_map(|a| forbidden_address(a.ip())) {
        return Err(refusal(&host, kind));
    }
    Ok((host, addrs))
}

fn not_after(der: &[u8]) -> Option<Timestamp> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Timestamp::from_second(cert.validity().not_after.timestamp()).ok()
}

/// Probes once. Never panics; every failure is an outcome.
pub async fn run(probe: &Probe<'_>) -> (ProbeOutcome, Option<Duration>) {
    let url = match Url::parse(probe.url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => u,
        _ => {
            return (
                ProbeOutcome::Unreachable(format!("{} is not an http(s) URL", probe.url)),
                None,
            );
        }
    };
    let (host, addrs) = match targets(&url, probe.allow_private_targets).await {
        Ok(t) => t,
        Err(outcome) => return (outcome, None),
    };
    // Pin the checked addresses so a second lookup cannot point elsewhere (DNS rebinding).
    let client = reqwest::Client::builder()
        .resolve_to_addrs(&host, &addrs)
        .timeout(TIMEOUT)
        .redirect(reqwest::redirect::Policy::none())
        .danger_accept_invalid_certs(probe.skip_cert_verification)
        .tls_info(true)
        .user_agent(concat!(
            "bitbucket-webhook-operator/",
            env!("CARGO_PKG_VERSION"),
            " (endpoint probe)"
        ))
        .build();
    let client = match client {
        Ok(c) => c,
        Err(e) => return (ProbeOutcome::Unreachable(error_chain(&e)), None),
    };
    let body = serde_json::to_vec(
        &serde_json::json!({ "test": true, "source": "bitbucket-webhook-operator" }),
    )
    .unwrap_or_default();
    let mut request = client
        .post(url)
        .header("Content-Type", "application/json")
        .header("X-Event-Key", PING_EVENT)
        .header("X-Request-Id", uuid::Uuid::new_v4().to_string());
    if let Some(secret) = probe.secret {
        request = request.header(
            signature::HEADER,
            signature::sign(secret.expose_secret().as_bytes(), &body),
        );
    }
    let started = Instant::now();
    let sent = request.body(body).send().await;
    outcome(sent, started.elapsed())
}

/// What a probe's answer (or its failure) says.
fn outcome(
    sent: Result<reqwest::Response, reqwest::Error>,
    latency: Duration,
) -> (ProbeOutcome, Option<Duration>) {
    match sent {
        Ok(response) => {
            let certificate_expires = response
                .extensions()
                .get::<reqwest::tls::TlsInfo>()
                .and_then(|info| info.peer_certificate())
                .and_then(not_after);
            let status = response.status().as_u16();
            (
                ProbeOutcome::Answered {
                    status,
                    latency,
                    certificate_expires,
                },
                Some(latency),
            )
        }
        Err(e) => {
            let text = error_chain(&e);
            let lower = text.to_ascii_lowercase();
            if lower.contains("certificate") || lower.contains("unknownissuer") {
                (ProbeOutcome::CertificateRejected(text), None)
            } else if e.is_timeout() {
                (
                    ProbeOutcome::Unreachable(format!("no answer within {}s", TIMEOUT.as_secs())),
                    None,
                )
            } else {
                (ProbeOutcome::Unreachable(text), None)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_and_local_addresses_are_refused() {
        for (ip, kind) in [
            ("127.0.0.1", Some("loopback")),
            ("10.0.0.5", Some("private")),
            ("172.16.3.4", Some("private")),
            ("192.168.1.1", Some("private")),
            ("169.254.169.254", Some("link-local")),
            ("100.64.0.1", Some("shared (carrier-grade NAT)")),
            ("0.0.0.0", Some("non-routable")),
            ("::1", Some("loopback")),
            ("fe80::1", Some("link-local")),
            ("fd00::1", Some("private (unique local)")),
            ("::ffff:10.1.2.3", Some("private")),
            ("104.192.143.1", None),
            ("2600:1f18::1", None),
        ] {
            assert_eq!(forbidden_address(ip.parse().expect("ip")), kind, "{ip}");
        }
    }

    #[test]
    fn cluster_names_are_refused_before_lookup() {
        for host in [
            "localhost",
            "api.localhost",
            "jenkins.ci.svc",
            "jenkins.ci.svc.cluster.local",
            "jenkins",
        ] {
            assert!(forbidden_host(host), "{host}");
        }
        assert!(!forbidden_host("ci.example.com"));
        assert!(!forbidden_host("104.192.143.1"));
    }

    #[tokio::test]
    async fn a_loopback_target_is_refused_without_a_request() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
        listener.set_nonblocking(true).expect("nonblocking");
        let probe = Probe {
            url: &url,
            secret: None,
            skip_cert_verification: false,
            allow_private_targets: false,
        };
        let (outcome, _) = run(&probe).await;
        assert!(
            matches!(&outcome, ProbeOutcome::Refused(m) if m.contains("loopback")),
            "{outcome:?}"
        );
        assert!(listener.accept().is_err(), "no connection was made");
    }
}
