//! Counter and gauge changes, added up across the workers, and histogram
//! values, queued, sent to Envoy every `general_settings.stats_flush_interval_ms`
//! (as the wasm build sends its counters on its timer). A labelled stat
//! change costs Envoy a lookup of the series by its label values; a request
//! makes several, so they are summed first. Envoy itself shows histograms
//! only after its own stats flush (every 5 s by default), so queueing their
//! values for a shorter interval delays nothing a scrape sees.
//!
//! Who sends them matters for memory. Envoy gives a filter no timer, so the
//! first version had a thread of this module ask Envoy's main thread
//! (through the config's scheduler) to send every interval. Each such
//! request is a small object allocated on this module's thread and freed on
//! Envoy's main thread, and tcmalloc spread those over ever more pages: RSS
//! crept up with the number of flushes (about 12 KiB a minute at 1 s, 260 KiB
//! at 20 ms), while the bytes allocated stayed flat. Recording the stats
//! themselves was not the cause: with both kinds of recording switched off
//! the creep was the same, and with every change sent at once (no thread)
//! there was none.
//!
//! So a request's end sends the batch, through its own filter on its
//! worker, when the interval has passed: under traffic that is every flush,
//! and nothing crosses threads. The thread still wakes every interval, but
//! asks the main thread to send only when changes have waited two intervals
//! with no request to send them: once, after traffic stops.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::abi::{self, ConfigEnvoy, FilterEnvoy, ModuleBuffer};
use super::{log_message, COUNTER};

/// Where a flush sends: through the filter config (main thread) or through
/// a request's filter (its worker).
#[derive(Clone, Copy)]
enum Target {
    Config(ConfigEnvoy),
    Filter(FilterEnvoy),
}

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
    pending: Mutex<crate::fast_hash::FastMap<usize, (Option<u64>, i64)>>,
    /// Histogram values not sent yet, by series number.
    values: Mutex<Vec<(usize, u64)>>,
    /// The flush's own list, swapped with `values` and emptied in place, so
    /// that no list is allocated on one thread and freed on another.
    sending: Mutex<Vec<(usize, u64)>>,
    /// When the batch was last sent, in ms after `epoch`; and how often.
    sent_ms: AtomicU64,
    epoch: Instant,
    every_ms: u64,
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

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Claims the next send if `gap_ms` have passed since the last one:
    /// true for one caller only.
    fn claim(&self, gap_ms: u64) -> bool {
        let now = self.now_ms();
        let last = self.sent_ms.load(Ordering::Relaxed);
        now.saturating_sub(last) >= gap_ms
            && self.sent_ms.compare_exchange(last, now, Ordering::AcqRel, Ordering::Relaxed).is_ok()
    }

    /// At a request's end (on its worker): sends the batch through that
    /// request's filter if the interval has passed.
    pub fn flush_at_request_end(&self, filter: FilterEnvoy) {
        if self.claim(self.every_ms) {
            self.flush(Target::Filter(filter));
        }
    }

    /// Whether changes wait that no request has sent for two intervals (the
    /// thread's test, before it asks the main thread to send them).
    fn idle_with_changes(&self) -> bool {
        let waited = self.now_ms().saturating_sub(self.sent_ms.load(Ordering::Relaxed)) >= self.every_ms.saturating_mul(2);
        waited
            && (self.pending.lock().is_ok_and(|p| !p.is_empty()) || self.values.lock().is_ok_and(|v| !v.is_empty()))
    }

    /// On the main thread, when the thread found changes waiting: sends,
    /// through the config, what no request has sent for two intervals.
    pub fn flush_when_idle(&self, config: ConfigEnvoy) {
        if self.claim(self.every_ms.saturating_mul(2)) {
            self.flush(Target::Config(config));
        }
    }

    /// Sends what was added up and queued.
    fn flush(&self, to: Target) {
        let drained: Vec<(usize, (Option<u64>, i64))> = match self.pending.lock() {
            Ok(mut pending) => pending.drain().collect(),
            Err(_) => return,
        };
        let Ok(mut sending) = self.sending.lock() else { return };
        if let Ok(mut values) = self.values.lock() {
            std::mem::swap(&mut *values, &mut *sending);
        }
        let Ok(guard) = self.series.lock() else { return };
        for (n, value) in sending.drain(..) {
            let Some((_, id, labels)) = guard.1.get(n) else { continue };
            let mut buffers: Vec<ModuleBuffer> = labels.iter().map(|v| ModuleBuffer::of(v)).collect();
            let (ptr, len) = (buffers.as_mut_ptr(), buffers.len());
            // SAFETY: `buffers` borrows `labels`, both alive for the call.
            let result = unsafe {
                match to {
                    Target::Config(c) => abi::envoy_dynamic_module_callback_http_filter_config_record_histogram_value(c, *id, ptr, len, value),
                    Target::Filter(f) => abi::envoy_dynamic_module_callback_http_filter_record_histogram_value(f, *id, ptr, len, value),
                }
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
                    results.push(match to {
                        Target::Config(c) => abi::envoy_dynamic_module_callback_http_filter_config_set_gauge(c, *id, ptr, len, v),
                        Target::Filter(f) => abi::envoy_dynamic_module_callback_http_filter_set_gauge(f, *id, ptr, len, v),
                    });
                }
                if delta != 0 {
                    results.push(match (to, *kind, delta > 0) {
                        (Target::Config(c), COUNTER, _) => abi::envoy_dynamic_module_callback_http_filter_config_increment_counter(c, *id, ptr, len, by),
                        (Target::Config(c), _, true) => abi::envoy_dynamic_module_callback_http_filter_config_increment_gauge(c, *id, ptr, len, by),
                        (Target::Config(c), _, false) => abi::envoy_dynamic_module_callback_http_filter_config_decrement_gauge(c, *id, ptr, len, by),
                        (Target::Filter(f), COUNTER, _) => abi::envoy_dynamic_module_callback_http_filter_increment_counter(f, *id, ptr, len, by),
                        (Target::Filter(f), _, true) => abi::envoy_dynamic_module_callback_http_filter_increment_gauge(f, *id, ptr, len, by),
                        (Target::Filter(f), _, false) => abi::envoy_dynamic_module_callback_http_filter_decrement_gauge(f, *id, ptr, len, by),
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
            pending: Mutex::new(crate::fast_hash::FastMap::default()),
            values: Mutex::new(Vec::new()),
            sending: Mutex::new(Vec::new()),
            sent_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
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
                if !b.idle_with_changes() {
                    continue;
                }
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
