//! OpenTelemetry export (built with `--features otel`): the operator's spans (a
//! reconcile, its steps, the Bitbucket requests) reach an OTLP/HTTP endpoint.
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
    // Protobuf keeps span names as plain bytes: the reconcile, its steps and the
    // Bitbucket requests under them must all be there.
    let wanted: [&[u8]; 4] = [b"reconcile", b"observe", b"execute", b"bitbucket"];
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let traces: Vec<_> = collector
            .received()
            .into_iter()
            .filter(|r| r.path == "/v1/traces")
            .collect();
        for batch in &traces {
            assert_eq!(batch.header("content-type"), Some("application/x-protobuf"));
        }
        let missing: Vec<_> = wanted
            .iter()
            .filter(|name| {
                !traces
                    .iter()
                    .any(|b| b.body.windows(name.len()).any(|w| w == **name))
            })
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "spans missing from the collector: {missing:?} ({} batches)",
            traces.len()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let _ = operator.start_kill();
}
