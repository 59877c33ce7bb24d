//! Plugin call metrics, kept by the database (calls run embedded too) and registered with the
//! node's Prometheus registry: `vektagraf_plugin_calls_total`, `vektagraf_plugin_errors_total`
//! by kind and `vektagraf_plugin_call_duration_seconds`, each by plugin.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

const BUCKETS: [f64; 9] = [0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginLabel {
    pub plugin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PluginErrorLabel {
    pub plugin: String,
    pub kind: String,
}

/// Cheap to clone: the families share their storage.
#[derive(Clone)]
pub struct PluginMetrics {
    calls: Family<PluginLabel, Counter>,
    errors: Family<PluginErrorLabel, Counter>,
    duration: Family<PluginLabel, Histogram, fn() -> Histogram>,
}

impl Default for PluginMetrics {
    fn default() -> Self {
        Self {
            calls: Family::default(),
            errors: Family::default(),
            duration: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
        }
    }
}

impl PluginMetrics {
    pub fn call(&self, plugin: &str, took: Duration) {
        let l = PluginLabel {
            plugin: plugin.to_owned(),
        };
        self.calls.get_or_create(&l).inc();
        self.duration.get_or_create(&l).observe(took.as_secs_f64());
    }

    pub fn error(&self, plugin: &str, kind: &str) {
        self.errors
            .get_or_create(&PluginErrorLabel {
                plugin: plugin.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    /// Calls of `plugin` so far (for status output and tests).
    pub fn calls(&self, plugin: &str) -> u64 {
        self.calls
            .get_or_create(&PluginLabel {
                plugin: plugin.to_owned(),
            })
            .get()
    }

    /// Errors of `plugin` of `kind` so far.
    pub fn errors(&self, plugin: &str, kind: &str) -> u64 {
        self.errors
            .get_or_create(&PluginErrorLabel {
                plugin: plugin.to_owned(),
                kind: kind.to_owned(),
            })
            .get()
    }

    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "vektagraf_plugin_calls",
            "Plugin calls (query handlers and resolvers), by plugin",
            self.calls.clone(),
        );
        registry.register(
            "vektagraf_plugin_errors",
            "Failed plugin calls by plugin and kind (timeout, fuel, memory, stack, trap, failed, host)",
            self.errors.clone(),
        );
        registry.register(
            "vektagraf_plugin_call_duration_seconds",
            "Duration of plugin calls, by plugin",
            self.duration.clone(),
        );
    }
}
