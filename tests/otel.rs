//! OpenTelemetry export (built with `--features otel`): the operator's spans reach an
//! OTLP/HTTP endpoint.
#![cfg(feature = "otel")]

mod support;

use std::time::{Duration, Instant};

use bitbucket_sim::receiver::Receiver;
use bitbucket_webhook_operator::api::Flavor;
use support::World;

#[tokio::test]
async fn spans_are_exported_over_otlp() {
    let w = World::standalone("otel", Flavor::Cloud).await;
    let collector = Receiver::start(false)
        .await
        .expect("a stand-in OTLP collector");
    let endpoint = format!("http://{}", collector.addr);
    let mut operator = w
        .operator_command()
        .args(["--otel=true", "--metrics-bind-address=127.0.0.1:0"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint)
        .env("OTEL_BSP_SCHEDULE_DELAY", "200")
        .spawn()
        .expect("operator");
    w.apply(&w.webhook_yaml("ci", "https://ci.example.com/x", ""))
        .expect("apply");
    w.wait_ready("ci").await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let traces: Vec<_> = collector
            .received()
            .into_iter()
            .filter(|r| r.path == "/v1/traces")
            .collect();
        if let Some(batch) = traces.first() {
            assert_eq!(batch.header("content-type"), Some("application/x-protobuf"));
            assert!(!batch.body.is_empty());
            break;
        }
        assert!(Instant::now() < deadline, "no spans reached the collector");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = operator.start_kill();
}
