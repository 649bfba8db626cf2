//! Counter and gauge changes, added up across the workers, and histogram
//! values, queued, sent to Envoy from the main thread every
//! `general_settings.stats_flush_interval_ms` (as the wasm build sends its
//! counters on its timer). A labelled stat change costs Envoy a lookup of
//! the series by its label values, on the request's thread; a request makes
//! several, so they are summed first. Envoy itself shows histograms only
//! after its own stats flush (every 5 s by default), so queueing their values
//! for a shorter interval delays nothing a scrape sees.
//!
//! Envoy gives a filter no timer: a thread of this module wakes every
//! interval and asks Envoy (through the config's scheduler) to run the flush
//! on the main thread, where a config may record stats.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::abi::{self, ConfigEnvoy, ModuleBuffer};
use super::{log_message, COUNTER};

/// Histogram values queued between two flushes, at most: beyond it (a main
/// thread stalled for seconds at full load), values are recorded directly.
const MAX_QUEUED_VALUES: usize = 1 << 18;

/// A series: the metric's kind and Envoy id, and its label values.
type Series = (u32, usize, Vec<Vec<u8>>);

pub(crate) struct Batch {
    /// Every series a worker has registered, by number.
    series: Mutex<(HashMap<Series, usize>, Vec<Series>)>,
    /// Changes not sent yet, by series number: a gauge's new value (set
    /// after the last flush), then the sum of changes since.
    pending: Mutex<HashMap<usize, (Option<u64>, i64)>>,
    /// Histogram values not sent yet, by series number.
    values: Mutex<Vec<(usize, u64)>>,
    stop: Mutex<bool>,
    wake: Condvar,
}

impl Batch {
    /// The number of a series, for [`Batch::add`] (once per series and worker).
    pub fn register(&self, kind: u32, id: usize, values: &[Vec<u8>]) -> Option<usize> {
        let mut guard = self.series.lock().ok()?;
        let (index, list) = &mut *guard;
        let key: Series = (kind, id, values.to_vec());
        if let Some(&n) = index.get(&key) {
            return Some(n);
        }
        let n = list.len();
        list.push(key.clone());
        index.insert(key, n);
        Some(n)
    }

    /// Adds a change to a counter or gauge series.
    pub fn add(&self, series: usize, delta: i64) {
        if let Ok(mut pending) = self.pending.lock() {
            let slot = pending.entry(series).or_insert((None, 0));
            slot.1 = slot.1.saturating_add(delta);
        }
    }

    /// Sets a gauge: the changes added before it are replaced by it.
    pub fn set(&self, series: usize, value: u64) {
        if let Ok(mut pending) = self.pending.lock() {
            pending.insert(series, (Some(value), 0));
        }
    }

    /// Queues a histogram value. False when the queue is full (Envoy's main
    /// thread has not flushed it for a long while): record it directly then.
    pub fn record(&self, series: usize, value: u64) -> bool {
        match self.values.lock() {
            Ok(mut values) if values.len() < MAX_QUEUED_VALUES => {
                values.push((series, value));
                true
            }
            _ => false,
        }
    }

    /// Sends what was added up, through the config (on the main thread).
    pub fn flush(&self, config: ConfigEnvoy) {
        let drained: Vec<(usize, (Option<u64>, i64))> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        let values = self.values.lock().map(|mut v| std::mem::take(&mut *v)).unwrap_or_default();
        let Ok(guard) = self.series.lock() else { return };
        for (n, value) in values {
            let Some((_, id, labels)) = guard.1.get(n) else { continue };
            let mut buffers: Vec<ModuleBuffer> = labels.iter().map(|v| ModuleBuffer::of(v)).collect();
            // SAFETY: `buffers` borrows `labels`, both alive for the call.
            let result = unsafe {
                abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(config, *id, buffers.as_mut_ptr(), buffers.len(), value)
            };
            if result != abi::METRICS_SUCCESS {
                log_message(3, format!("recording a histogram value failed ({result})").as_bytes());
            }
        }
        for (n, (set, delta)) in drained {
            let Some((kind, id, values)) = guard.1.get(n) else { continue };
            let mut buffers: Vec<ModuleBuffer> = values.iter().map(|v| ModuleBuffer::of(v)).collect();
            let (ptr, len, by) = (buffers.as_mut_ptr(), buffers.len(), delta.unsigned_abs());
            let mut results = Vec::with_capacity(2);
            unsafe {
                if let Some(v) = set {
                    results.push(abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(config, *id, ptr, len, v));
                }
                if delta != 0 {
                    results.push(match (*kind, delta > 0) {
                        (COUNTER, _) => abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(config, *id, ptr, len, by),
                        (_, true) => abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge(config, *id, ptr, len, by),
                        (_, false) => abi::envoy_dynamic_module_callback_http_filter_config_decrement_gauge(config, *id, ptr, len, by),
                    });
                }
            }
            if let Some(result) = results.into_iter().find(|r| *r != abi::METRICS_SUCCESS) {
                log_message(3, format!("sending a stat change failed ({result})").as_bytes());
            }
        }
    }
}

/// A batch and the thread that has it flushed.
pub(crate) struct Flusher {
    pub batch: Arc<Batch>,
    scheduler: usize,
    thread: Option<JoinHandle<()>>,
}

impl Flusher {
    pub fn start(config: ConfigEnvoy, every: Duration) -> Option<Self> {
        let scheduler = unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_new(config) };
        if scheduler.is_null() {
            return None;
        }
        let batch = Arc::new(Batch {
            series: Mutex::new((HashMap::new(), Vec::new())),
            pending: Mutex::new(HashMap::new()),
            values: Mutex::new(Vec::new()),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        });
        let (b, s) = (Arc::clone(&batch), scheduler as usize);
        let thread = std::thread::Builder::new()
            .name("tollgate-stats".into())
            .spawn(move || loop {
                let Ok(stop) = b.stop.lock() else { return };
                let Ok((stop, _)) = b.wake.wait_timeout(stop, every) else { return };
                if *stop {
                    return;
                }
                drop(stop);
                // SAFETY: the scheduler is deleted only after this thread is joined.
                unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_commit(s as abi::ConfigScheduler, 0) };
            })
            .ok()?;
        Some(Self { batch, scheduler: scheduler as usize, thread: Some(thread) })
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        if let Ok(mut stop) = self.batch.stop.lock() {
            *stop = true;
        }
        self.batch.wake.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        unsafe { abi::envoy_dynamic_module_callback_http_filter_config_scheduler_delete(self.scheduler as abi::ConfigScheduler) };
    }
}
