//! Envoy stats for the metrics in `crate::metrics`. A metric is defined on
//! first use and its id cached for the life of the VM, so each later update
//! is one hostcall.

use std::cell::RefCell;
use std::collections::HashMap;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::metrics::{self, Kind, Metric};

#[derive(Default)]
pub struct Stats {
    ids: RefCell<HashMap<String, u32>>,
}

impl Stats {
    fn id(&self, metric: Metric, labels: &[(&str, &str)]) -> Option<u32> {
        let name = metrics::name(metric, labels);
        if let Some(id) = self.ids.borrow().get(&name) {
            return Some(*id);
        }
        let kind = match metric.kind() {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        match hostcalls::define_metric(kind, &name) {
            Ok(id) => {
                self.ids.borrow_mut().insert(name, id);
                Some(id)
            }
            Err(status) => {
                warn!("defining metric {name} failed: {status:?}");
                None
            }
        }
    }

    /// Adds to a counter or a gauge.
    pub fn add(&self, metric: Metric, labels: &[(&str, &str)], delta: i64) {
        if delta == 0 && metric.kind() == Kind::Counter {
            return;
        }
        if let Some(id) = self.id(metric, labels) {
            if let Err(status) = hostcalls::increment_metric(id, delta) {
                warn!("updating metric {} failed: {status:?}", metric.base());
            }
        }
    }

    /// Sets a gauge, or records a histogram value.
    pub fn record(&self, metric: Metric, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(metric, labels) {
            if let Err(status) = hostcalls::record_metric(id, value) {
                warn!("recording metric {} failed: {status:?}", metric.base());
            }
        }
    }
}

/// A count as a metric delta.
pub fn delta(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
