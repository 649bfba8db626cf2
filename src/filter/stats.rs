//! Envoy stats for the metrics in `crate::metrics`.
//!
//! A metric is defined on first use and its id cached for the life of the VM,
//! keyed by small integers rather than its name. Counter and gauge changes
//! are added up in the VM and flushed to Envoy on a timer
//! (`general_settings.stats_flush_interval_ms`, 1 s by default), which saves
//! several hostcalls per request; with an interval of 0 every change is sent
//! at once. Histogram values are always recorded at once.

use std::cell::RefCell;
use crate::fast_hash::FastMap;

use log::warn;
use proxy_wasm::hostcalls;
use proxy_wasm::types::MetricType;

use crate::metrics::{self, Kind, Metric};

/// Identifies one labelled series: the metric, and the indexes of its label
/// values (team, model, provider, and a code, token type or reason).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key {
    pub metric: Metric,
    pub team: u32,
    pub model: u32,
    pub provider: u32,
    pub extra: u32,
    /// The caller within the team (key alias, JWT user), from
    /// [`Stats::caller_id`]; 0 for none.
    pub caller: u32,
}

impl Key {
    pub fn new(metric: Metric, team: usize, model: usize, provider: usize, extra: u32) -> Self {
        let idx = |i: usize| u32::try_from(i).unwrap_or(u32::MAX);
        Self { metric, team: idx(team), model: idx(model), provider: idx(provider), extra, caller: 0 }
    }

    pub fn by(self, caller: u32) -> Self {
        Self { caller, ..self }
    }
}

#[derive(Default)]
pub struct Stats {
    ids: RefCell<FastMap<Key, u32>>,
    /// Caller label sets (`key=…;user=…`) by number, for [`Key::caller`].
    callers: RefCell<FastMap<String, u32>>,
    /// Changes not yet sent, by metric id.
    pending: RefCell<FastMap<u32, i64>>,
    batched: bool,
}

impl Stats {
    pub fn new(batched: bool) -> Self {
        Self { batched, ..Self::default() }
    }

    /// A number for a set of caller labels (0: none), stable for the VM.
    pub fn caller_id(&self, labels: &[(&str, &str)]) -> u32 {
        if labels.is_empty() {
            return 0;
        }
        let name: String = labels.iter().map(|(k, v)| format!("{k}={v};")).collect();
        let mut callers = self.callers.borrow_mut();
        let next = u32::try_from(callers.len()).unwrap_or(u32::MAX).saturating_add(1);
        *callers.entry(name).or_insert(next)
    }

    /// The series' id; `name` makes its stat name, only the first time.
    fn id(&self, key: Key, name: impl FnOnce() -> String) -> Option<u32> {
        if let Some(id) = self.ids.borrow().get(&key) {
            return Some(*id);
        }
        let name = name();
        let kind = match key.metric.kind() {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
        };
        match hostcalls::define_metric(kind, &name) {
            Ok(id) => {
                self.ids.borrow_mut().insert(key, id);
                Some(id)
            }
            Err(status) => {
                warn!("defining metric {name} failed: {status:?}");
                None
            }
        }
    }

    /// Adds to a counter or a gauge.
    pub fn add(&self, key: Key, labels: &[(&str, &str)], delta: i64) {
        self.add_with(key, || metrics::name(key.metric, labels), delta);
    }

    /// [`Stats::add`], with the labels made only when the series is new:
    /// a request's series are almost always known already.
    pub fn add_with(&self, key: Key, name: impl FnOnce() -> String, delta: i64) {
        if delta == 0 {
            return;
        }
        let Some(id) = self.id(key, name) else { return };
        if self.batched {
            let mut pending = self.pending.borrow_mut();
            let slot = pending.entry(id).or_insert(0);
            *slot = slot.saturating_add(delta);
        } else {
            send(id, delta);
        }
    }

    /// Sets a gauge, or records a histogram value, at once.
    pub fn record(&self, key: Key, labels: &[(&str, &str)], value: u64) {
        if let Some(id) = self.id(key, || metrics::name(key.metric, labels)) {
            if let Err(status) = hostcalls::record_metric(id, value) {
                warn!("recording metric {} failed: {status:?}", key.metric.base());
            }
        }
    }

    /// Sends the changes added up since the last flush.
    pub fn flush(&self) {
        let pending: Vec<(u32, i64)> = self.pending.borrow_mut().drain().collect();
        for (id, delta) in pending {
            if delta != 0 {
                send(id, delta);
            }
        }
    }
}

fn send(id: u32, delta: i64) {
    if let Err(status) = hostcalls::increment_metric(id, delta) {
        warn!("updating metric {id} failed: {status:?}");
    }
}

/// A count as a metric delta.
pub fn delta(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}
