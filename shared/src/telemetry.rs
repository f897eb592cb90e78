//! Tracing, trace propagation and metrics set-up for the binaries.
//!
//! - Logs: JSON lines (or `GIFTCARD_LOG_FORMAT=pretty`) filtered by
//!   `RUST_LOG`. SQL statements and NATS protocol traces are never logged
//!   whatever `RUST_LOG` says: they carry activation codes.
//! - Traces: every span of the giftcard crates goes through an OpenTelemetry
//!   tracer, so each purchase has one trace id from the HTTP request through
//!   the JetStream message (W3C `traceparent` header) to the worker's
//!   transaction and the reply. Spans are exported over OTLP/HTTP only when
//!   `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`)
//!   is set; the trace ids are in the logs either way (`trace_id` fields).
//! - Metrics: one process-wide Prometheus recorder plus process metrics
//!   (`process_*`, from `metrics-process`), collected on each scrape.

use std::collections::HashMap;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::{LevelFilter, Targets};
use tracing_subscriber::{fmt, prelude::*, EnvFilter};

/// Targets whose debug output would carry activation codes (SQL statements
/// with their parameters, NATS payloads): capped whatever `RUST_LOG` says.
const CAPPED: [(&str, &str); 3] = [
    ("sqlx", "warn"),
    ("sea_orm", "info"),
    ("async_nats", "info"),
];

/// The crates whose spans make up the traces.
const TRACED: [&str; 3] = ["giftcard_api", "giftcard_worker", "giftcard_shared"];

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Exports the spans still buffered (call before the process exits).
pub fn shutdown_tracing() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.shutdown();
    }
}

fn log_filter() -> EnvFilter {
    let mut filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn,sea_orm=warn,async_nats=warn"));
    for (target, level) in CAPPED {
        if let Ok(d) = format!("{target}={level}").parse() {
            filter = filter.add_directive(d);
        }
    }
    filter
}

/// Installs the global tracing subscriber: JSON lines unless
/// `GIFTCARD_LOG_FORMAT=pretty`; level from `RUST_LOG` (default `info`);
/// OpenTelemetry spans exported when `OTEL_EXPORTER_OTLP_ENDPOINT` is set.
pub fn init_tracing(service: &str) {
    let exporting = [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    ]
    .iter()
    .any(|v| std::env::var(v).is_ok_and(|s| !s.trim().is_empty()));
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service.to_owned())
        .build();
    let mut builder = SdkTracerProvider::builder().with_resource(resource);
    let mut export_error = None;
    if exporting {
        match opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .build()
        {
            Ok(exporter) => builder = builder.with_batch_exporter(exporter),
            Err(e) => export_error = Some(e.to_string()),
        }
    }
    let provider = builder.build();
    let tracer = provider.tracer(service.to_owned());
    if exporting && export_error.is_none() {
        // The span exporter's own errors (collector unreachable) surface
        // through the global error handler: keep them.
        opentelemetry::global::set_tracer_provider(provider.clone());
    }
    let traced = TRACED
        .iter()
        .fold(Targets::new(), |t, c| t.with_target(*c, LevelFilter::INFO));
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(traced);

    let pretty = std::env::var("GIFTCARD_LOG_FORMAT").is_ok_and(|v| v == "pretty");
    let registry = tracing_subscriber::registry().with(otel);
    let res = if pretty {
        registry
            .with(fmt::layer().with_target(false).with_filter(log_filter()))
            .try_init()
    } else {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(true)
                    .with_filter(log_filter()),
            )
            .try_init()
    };
    if res.is_ok() {
        tracing::info!(
            service,
            version = env!("CARGO_PKG_VERSION"),
            otlp_export = exporting && export_error.is_none(),
            "starting"
        );
        if let Some(e) = export_error {
            tracing::error!(error = %e, "cannot set up the OTLP span exporter; spans are not exported");
        }
    }
    let _ = PROVIDER.set(provider);
}

/// A W3C trace-context carrier over plain header values.
#[derive(Default)]
struct Carrier(HashMap<String, String>);

impl opentelemetry::propagation::Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_ascii_lowercase(), value);
    }
}

impl opentelemetry::propagation::Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(&key.to_ascii_lowercase()).map(String::as_str)
    }
    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Makes `span` continue the trace of a `traceparent` (and `tracestate`)
/// header, if there is a valid one, and records the span's `trace_id`
/// field (which the span must declare, `trace_id = field::Empty`).
pub fn continue_trace(span: &tracing::Span, traceparent: Option<&str>, tracestate: Option<&str>) {
    if let Some(tp) = traceparent {
        let mut carrier = Carrier::default();
        carrier.0.insert("traceparent".into(), tp.to_owned());
        if let Some(ts) = tracestate {
            carrier.0.insert("tracestate".into(), ts.to_owned());
        }
        let cx = TraceContextPropagator::new().extract(&carrier);
        if cx.span().span_context().is_valid() {
            let _ = span.set_parent(cx);
        }
    }
    record_trace_id(span);
}

/// Records `span`'s trace id in its `trace_id` field (nothing without a
/// tracer, as in tests that do not install [`init_tracing`]).
pub fn record_trace_id(span: &tracing::Span) {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", tracing::field::display(sc.trace_id()));
    }
}

/// The `traceparent` header value naming `span` (None without a tracer).
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut carrier = Carrier::default();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.0.remove("traceparent")
}

/// The process-wide Prometheus recorder (installed once; later calls, such
/// as several apps in one test process, share it).
pub fn metrics_handle() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(&[
                    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
                    30.0,
                ])
                .expect("static buckets are valid")
                .build_recorder();
            let handle = recorder.handle();
            // Another recorder may already be installed (tests); keep ours
            // readable either way.
            let _ = metrics::set_global_recorder(recorder);
            process_collector().describe();
            handle
        })
        .clone()
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: OnceLock<metrics_process::Collector> = OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The Prometheus text of this process's metrics, process metrics
/// refreshed first.
pub fn render_metrics(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

/// Cancels `shutdown` on SIGTERM or Ctrl-C: the one shutdown path.
pub async fn cancel_on_signal(shutdown: tokio_util::sync::CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => futures::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = futures::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => tracing::info!("interrupt received; shutting down"),
        _ = term => tracing::info!("SIGTERM received; shutting down"),
    }
    shutdown.cancel();
}

/// `giftcard_build_info{service,version}`: always 1; tells which build runs.
pub const BUILD_INFO: &str = "giftcard_build_info";

/// Describes [`BUILD_INFO`] and sets it for `service`.
pub fn record_build_info(service: &'static str) {
    metrics::describe_gauge!(
        BUILD_INFO,
        "Always 1; the labels say which service and version this process runs"
    );
    metrics::gauge!(BUILD_INFO, "service" => service, "version" => env!("CARGO_PKG_VERSION"))
        .set(1.0);
}

/// Keeps the gauge `name` at 1 while `client` is connected to NATS and 0
/// otherwise, checking every second until `shutdown`.
pub fn spawn_nats_connected_gauge(
    client: async_nats::Client,
    name: &'static str,
    shutdown: tokio_util::sync::CancellationToken,
) {
    tokio::spawn(async move {
        loop {
            let up = client.connection_state() == async_nats::connection::State::Connected;
            metrics::gauge!(name).set(if up { 1.0 } else { 0.0 });
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
            }
        }
    });
}
