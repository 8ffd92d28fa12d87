//! Each running task's cgroup figures, read from its shim at scrape time
//! and named as containerd's metrics name them (`container_*`, labelled
//! `container_id` and `namespace`).
//!
//! Every shim is asked at once, each with a short limit: a shim that does
//! not answer in time (stopped, stuck) is left out of that scrape rather
//! than holding it up.

use std::time::Duration;

use berth_api::containerd::task::v2::StatsRequest;
use berth_api::io::containerd::cgroups::v1::Metrics;
use berth_core::runtime::RuntimeManager;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prost::Message as _;

/// How long one shim may take to answer a scrape.
pub const SHIM_LIMIT: Duration = Duration::from_millis(500);

/// The type URL of the figures the shims send.
const V1_METRICS: &str = "io.containerd.cgroups.v1.Metrics";

/// Which task.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TaskLabels {
    container_id: String,
    namespace: String,
}

/// One task's figures.
#[derive(Debug)]
struct TaskFigures {
    labels: TaskLabels,
    metrics: Metrics,
}

/// Asks every shim for its task's figures.
async fn collect(runtime: &RuntimeManager) -> Vec<TaskFigures> {
    let asks = runtime.list_all().into_iter().map(|shim| async move {
        let request = StatsRequest { id: shim.id.clone() };
        let options = shim.options().timeout(SHIM_LIMIT);
        let answer = tokio::time::timeout(SHIM_LIMIT, shim.client.stats(&options, &request)).await;
        let stats = match answer {
            Ok(Ok(response)) => response.stats?,
            Ok(Err(e)) => {
                tracing::debug!(namespace = %shim.namespace, id = %shim.id, error = %e, "no figures from the shim");
                return None;
            }
            Err(_) => {
                tracing::debug!(namespace = %shim.namespace, id = %shim.id, "the shim did not answer the scrape in time");
                return None;
            }
        };
        if stats.type_url.trim_start_matches("type.googleapis.com/") != V1_METRICS {
            return None;
        }
        let metrics = Metrics::decode(stats.value.as_slice()).ok()?;
        Some(TaskFigures {
            labels: TaskLabels {
                container_id: shim.id.clone(),
                namespace: shim.namespace.clone(),
            },
            metrics,
        })
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// Reads the tasks' figures and adds them to a scrape's registry.
pub async fn register(runtime: &RuntimeManager, registry: &mut Registry) {
    let tasks = collect(runtime).await;
    let gauge = |registry: &mut Registry, name: &str, help: &str, value: &dyn Fn(&Metrics) -> Option<u64>| {
        let family = Family::<TaskLabels, Gauge>::default();
        for task in &tasks {
            if let Some(value) = value(&task.metrics) {
                family
                    .get_or_create(&task.labels)
                    .set(i64::try_from(value).unwrap_or(i64::MAX));
            }
        }
        registry.register(name, help, family);
    };
    let cpu = |m: &Metrics| m.cpu.as_ref().and_then(|c| c.usage.clone());
    gauge(
        registry,
        "container_cpu_total_nanoseconds",
        "The total cpu time",
        &|m| cpu(m).map(|u| u.total),
    );
    gauge(
        registry,
        "container_cpu_kernel_nanoseconds",
        "The total kernel cpu time",
        &|m| cpu(m).map(|u| u.kernel),
    );
    gauge(
        registry,
        "container_cpu_user_nanoseconds",
        "The total user cpu time",
        &|m| cpu(m).map(|u| u.user),
    );
    let memory = |m: &Metrics| m.memory.as_ref().and_then(|memory| memory.usage);
    gauge(registry, "container_memory_usage_bytes", "Current memory usage", &|m| {
        memory(m).map(|u| u.usage)
    });
    gauge(
        registry,
        "container_memory_usage_limit_bytes",
        "Memory usage limit",
        &|m| memory(m).map(|u| u.limit),
    );
    gauge(registry, "container_memory_rss_bytes", "The rss amount", &|m| {
        m.memory.as_ref().map(|memory| memory.rss)
    });
    gauge(registry, "container_pids_current", "The number of processes", &|m| {
        m.pids.as_ref().map(|p| p.current)
    });
    gauge(
        registry,
        "container_pids_limit",
        "The limit to the number of processes",
        &|m| m.pids.as_ref().map(|p| p.limit),
    );
}
