//! OpenTelemetry trace export (cargo feature `otel`): spans go over OTLP/HTTP to
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (default http://localhost:4318), batched off the hot path.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::registry::LookupSpan;

/// A tracing layer exporting spans; keep the provider to flush it on shutdown.
pub fn layer<S>() -> Result<(impl Layer<S>, SdkTracerProvider), String>
where
    S: Subscriber + for<'span> LookupSpan<'span>,
{
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| format!("cannot set up the OTLP exporter: {e}"))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("bitbucket-webhook-operator")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("bitbucket-webhook-operator");
    Ok((tracing_opentelemetry::layer().with_tracer(tracer), provider))
}
