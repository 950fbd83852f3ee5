//! `GET /1.0/metrics`: OpenMetrics text for Prometheus, with Incus' metric names under our
//! `ctl_` prefix (`ctl_cpu_seconds_total`, `ctl_memory_MemTotal_bytes`, `ctl_procs_total`,
//! `ctl_network_receive_bytes_total`, ...), one series set per running instance, labelled
//! `name`, `project` and `type`. Rendered by the prometheus-client crate from a registry
//! built per scrape.

use std::sync::atomic::AtomicU64;

use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::{ApiError, AppState};
use crate::instance::InstanceMetrics;

type Labels = Vec<(String, String)>;
type FloatCounter = Counter<f64, AtomicU64>;

const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// `GET /1.0/metrics`.
pub async fn get_metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let instances = state.instances.metrics().await?;
    let body =
        render(&instances).map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}

fn labels(name: &str, extra: &[(&str, &str)]) -> Labels {
    let mut l = vec![
        ("name".to_string(), name.to_string()),
        ("project".to_string(), "default".to_string()),
        ("type".to_string(), "container".to_string()),
    ];
    l.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    l
}

/// Encode the metrics of `instances`. Pure apart from the registry it builds.
pub fn render(instances: &[InstanceMetrics]) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::with_prefix("ctl");
    let cpu = Family::<Labels, FloatCounter>::default();
    let mem_total = Family::<Labels, Gauge>::default();
    let mem_free = Family::<Labels, Gauge>::default();
    let mem_avail = Family::<Labels, Gauge>::default();
    let swap = Family::<Labels, Gauge>::default();
    let oom = Family::<Labels, Counter>::default();
    let procs = Family::<Labels, Gauge>::default();
    let rx_bytes = Family::<Labels, Counter>::default();
    let tx_bytes = Family::<Labels, Counter>::default();
    let rx_packets = Family::<Labels, Counter>::default();
    let tx_packets = Family::<Labels, Counter>::default();
    for m in instances {
        let n = m.name.as_str();
        cpu.get_or_create(&labels(n, &[("mode", "user")]))
            .inc_by(m.stats.cpu_user_ns as f64 / 1e9);
        cpu.get_or_create(&labels(n, &[("mode", "system")]))
            .inc_by(m.stats.cpu_system_ns as f64 / 1e9);
        let total = i64::try_from(m.memory_total).unwrap_or(i64::MAX);
        let free = (total - m.usage.memory).max(0);
        mem_total.get_or_create(&labels(n, &[])).set(total);
        mem_free.get_or_create(&labels(n, &[])).set(free);
        mem_avail.get_or_create(&labels(n, &[])).set(free);
        swap.get_or_create(&labels(n, &[])).set(m.usage.swap);
        oom.get_or_create(&labels(n, &[]))
            .inc_by(u64::try_from(m.stats.oom_kills).unwrap_or(0));
        procs.get_or_create(&labels(n, &[])).set(m.usage.processes);
        for c in &m.network {
            let l = labels(n, &[("device", c.name.as_str())]);
            rx_bytes.get_or_create(&l).inc_by(c.rx_bytes);
            tx_bytes.get_or_create(&l).inc_by(c.tx_bytes);
            rx_packets.get_or_create(&l).inc_by(c.rx_packets);
            tx_packets.get_or_create(&l).inc_by(c.tx_packets);
        }
    }
    registry.register("cpu_seconds", "CPU time used, in seconds", cpu);
    registry.register(
        "memory_MemTotal_bytes",
        "Memory the instance may use",
        mem_total,
    );
    registry.register("memory_MemFree_bytes", "Memory not in use", mem_free);
    registry.register("memory_MemAvailable_bytes", "Memory available", mem_avail);
    registry.register("memory_Swap_bytes", "Swap in use", swap);
    registry.register(
        "memory_OOM_kills",
        "Processes killed by the OOM killer",
        oom,
    );
    registry.register("procs_total", "Number of processes", procs);
    registry.register("network_receive_bytes", "Bytes received", rx_bytes);
    registry.register("network_transmit_bytes", "Bytes sent", tx_bytes);
    registry.register("network_receive_packets", "Packets received", rx_packets);
    registry.register("network_transmit_packets", "Packets sent", tx_packets);
    let mut out = String::new();
    encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::usage::NetCounters;
    use crate::worker::{CgroupStats, CgroupUsage};

    #[test]
    fn names_labels_and_values() {
        let m = InstanceMetrics {
            name: "c1".into(),
            usage: CgroupUsage {
                memory: 1 << 20,
                processes: 3,
                ..Default::default()
            },
            stats: CgroupStats {
                cpu_user_ns: 1_500_000_000,
                cpu_system_ns: 500_000_000,
                oom_kills: 1,
                memory_limit: 64 << 20,
            },
            memory_total: 64 << 20,
            network: vec![NetCounters {
                name: "lo".into(),
                rx_bytes: 10,
                rx_packets: 1,
                tx_bytes: 10,
                tx_packets: 1,
            }],
        };
        let text = render(&[m]).unwrap_or_default();
        let l = r#"name="c1",project="default",type="container""#;
        for line in [
            format!("ctl_cpu_seconds_total{{{l},mode=\"user\"}} 1.5"),
            format!("ctl_memory_MemTotal_bytes{{{l}}} 67108864"),
            format!("ctl_memory_MemFree_bytes{{{l}}} 66060288"),
            format!("ctl_memory_OOM_kills_total{{{l}}} 1"),
            format!("ctl_procs_total{{{l}}} 3"),
            format!("ctl_network_receive_bytes_total{{{l},device=\"lo\"}} 10"),
        ] {
            assert!(text.contains(&line), "missing {line} in\n{text}");
        }
        assert!(text.trim_end().ends_with("# EOF"));
        assert_eq!(render(&[]).map(|t| t.contains("{name=")), Ok(false));
    }
}
