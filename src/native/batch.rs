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
//!
//! A counter or gauge change takes no lock: each series has its own
//! [`Changes`], atomics that every worker adds to and a flush takes from. A
//! request makes about a dozen changes; behind one lock shared by every
//! worker, each was a lock taken and a map searched.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
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

/// A counter's or gauge's changes not sent yet. Any worker adds to it
/// without a lock; a flush takes what it holds, and what is added meanwhile
/// waits for the next flush.
#[derive(Debug, Default)]
pub(crate) struct Changes {
    /// A gauge's value set since the last flush, plus one (0: none set).
    /// `u64::MAX` is sent as `u64::MAX - 1`.
    set: AtomicU64,
    /// The sum of the changes since (since the set, if there was one).
    delta: AtomicI64,
}

impl Changes {
    fn add(&self, delta: i64) {
        self.delta.fetch_add(delta, Ordering::Relaxed);
    }

    /// A gauge's new value: the changes added before it are replaced by it.
    fn set(&self, value: u64) {
        self.delta.store(0, Ordering::Relaxed);
        self.set.store(value.saturating_add(1), Ordering::Release);
    }

    /// What is waiting to be sent: a value set, then the changes since.
    fn take(&self) -> (Option<u64>, i64) {
        let set = self.set.swap(0, Ordering::AcqRel).checked_sub(1);
        (set, self.delta.swap(0, Ordering::AcqRel))
    }
}

/// Every series registered: by its key, and by number with its changes.
type Registry = (HashMap<Series, usize>, Vec<(Series, Arc<Changes>)>);

/// A registered series, for [`Batch::add`], [`Batch::set`] and [`Batch::record`].
#[derive(Debug, Clone)]
pub(crate) struct SeriesRef {
    n: usize,
    changes: Arc<Changes>,
}

pub(crate) struct Batch {
    /// Every series a worker has registered, by number, with its changes.
    series: Mutex<Registry>,
    /// Set by a change since the last flush (read by the thread's idle test).
    changed: AtomicBool,
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
    fn new(every: Duration) -> Self {
        Batch {
            series: Mutex::new((HashMap::new(), Vec::new())),
            changed: AtomicBool::new(false),
            values: Mutex::new(Vec::new()),
            sending: Mutex::new(Vec::new()),
            sent_ms: AtomicU64::new(0),
            epoch: Instant::now(),
            every_ms: u64::try_from(every.as_millis()).unwrap_or(u64::MAX),
            stop: Mutex::new(false),
            wake: Condvar::new(),
        }
    }

    /// A series, for the changes to it (once per series and worker: the
    /// workers that register one series share its changes).
    pub fn register(&self, kind: u32, id: usize, values: &[Vec<u8>]) -> Option<SeriesRef> {
        let mut guard = self.series.lock().ok()?;
        let (index, list) = &mut *guard;
        let key: Series = (kind, id, values.to_vec());
        if let Some(&n) = index.get(&key) {
            let (_, changes) = list.get(n)?;
            return Some(SeriesRef { n, changes: Arc::clone(changes) });
        }
        let n = list.len();
        let changes = Arc::new(Changes::default());
        list.push((key.clone(), Arc::clone(&changes)));
        index.insert(key, n);
        Some(SeriesRef { n, changes })
    }

    /// Marks the batch changed, without writing the flag's line again when
    /// it already is (every worker reads it).
    fn mark_changed(&self) {
        if !self.changed.load(Ordering::Relaxed) {
            self.changed.store(true, Ordering::Relaxed);
        }
    }

    /// Adds a change to a counter or gauge series.
    pub fn add(&self, series: &SeriesRef, delta: i64) {
        series.changes.add(delta);
        self.mark_changed();
    }

    /// Sets a gauge: the changes added before it are replaced by it.
    pub fn set(&self, series: &SeriesRef, value: u64) {
        series.changes.set(value);
        self.mark_changed();
    }

    /// Queues a histogram value. False when the queue is full (Envoy's main
    /// thread has not flushed it for a long while): record it directly then.
    pub fn record(&self, series: &SeriesRef, value: u64) -> bool {
        match self.values.lock() {
            Ok(mut values) if values.len() < MAX_QUEUED_VALUES => {
                values.push((series.n, value));
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
        waited && (self.changed.load(Ordering::Relaxed) || self.values.lock().is_ok_and(|v| !v.is_empty()))
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
        // Cleared before the changes are taken: one made meanwhile sets it again.
        self.changed.store(false, Ordering::Relaxed);
        let Ok(mut sending) = self.sending.lock() else { return };
        if let Ok(mut values) = self.values.lock() {
            std::mem::swap(&mut *values, &mut *sending);
        }
        let Ok(guard) = self.series.lock() else { return };
        for (n, value) in sending.drain(..) {
            let Some(((_, id, labels), _)) = guard.1.get(n) else { continue };
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
        for ((kind, id, values), changes) in &guard.1 {
            let (set, delta) = changes.take();
            if set.is_none() && delta == 0 {
                continue;
            }
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
        let batch = Arc::new(Batch::new(every));
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

#[cfg(test)]
mod tests {
    use super::*;

    fn batch() -> Batch {
        Batch::new(Duration::from_millis(1000))
    }

    #[test]
    fn workers_registering_one_series_share_its_changes() {
        let b = batch();
        let one = b.register(COUNTER, 7, &[b"team-a".to_vec()]).unwrap();
        let again = b.register(COUNTER, 7, &[b"team-a".to_vec()]).unwrap();
        let other = b.register(COUNTER, 7, &[b"team-b".to_vec()]).unwrap();
        assert_eq!((one.n, again.n, other.n), (0, 0, 1));
        b.add(&one, 2);
        b.add(&again, 3);
        assert_eq!(one.changes.take(), (None, 5));
        assert_eq!(other.changes.take(), (None, 0));
        // Taken once: nothing is sent twice.
        assert_eq!(again.changes.take(), (None, 0));
    }

    #[test]
    fn a_gauge_set_replaces_the_changes_before_it() {
        let b = batch();
        let g = b.register(super::super::GAUGE, 1, &[]).unwrap();
        b.add(&g, 4);
        b.set(&g, 10);
        b.add(&g, -3);
        assert_eq!(g.changes.take(), (Some(10), -3));
        b.set(&g, 0);
        assert_eq!(g.changes.take(), (Some(0), 0));
        b.set(&g, u64::MAX);
        assert_eq!(g.changes.take(), (Some(u64::MAX - 1), 0));
    }

    #[test]
    fn changes_from_many_threads_add_up_exactly() {
        let b = Arc::new(batch());
        let series = b.register(COUNTER, 3, &[]).unwrap();
        let taken = Arc::new(AtomicI64::new(0));
        // A flush taking changes while they are added loses none. The two
        // overlap by construction, not by luck of scheduling: the taker runs
        // until every adder is done, and each adder does half its adds, then
        // waits until the taker has taken some, then does the other half.
        let done = Arc::new(AtomicBool::new(false));
        let (s, t, d) = (series.clone(), Arc::clone(&taken), Arc::clone(&done));
        let taker = std::thread::spawn(move || {
            while !d.load(Ordering::Acquire) {
                t.fetch_add(s.changes.take().1, Ordering::AcqRel);
                std::thread::yield_now();
            }
        });
        let adders: Vec<_> = (0..4)
            .map(|_| {
                let (b, s, t) = (Arc::clone(&b), series.clone(), Arc::clone(&taken));
                std::thread::spawn(move || {
                    for _ in 0..25_000 {
                        b.add(&s, 1);
                    }
                    while t.load(Ordering::Acquire) == 0 {
                        std::thread::yield_now();
                    }
                    for _ in 0..25_000 {
                        b.add(&s, 1);
                    }
                })
            })
            .collect();
        for a in adders {
            a.join().unwrap();
        }
        done.store(true, Ordering::Release);
        taker.join().unwrap();
        let total = taken.load(Ordering::Relaxed) + series.changes.take().1;
        assert_eq!(total, 200_000);
    }

    #[test]
    fn a_change_marks_the_batch_until_it_is_flushed() {
        let b = batch();
        let s = b.register(COUNTER, 1, &[]).unwrap();
        assert!(!b.changed.load(Ordering::Relaxed));
        b.add(&s, 1);
        assert!(b.changed.load(Ordering::Relaxed));
        // Two intervals with no request flushing: the thread's test is true.
        b.sent_ms.store(0, Ordering::Relaxed);
        let b = Batch { every_ms: 0, ..b };
        assert!(b.idle_with_changes());
        b.changed.store(false, Ordering::Relaxed);
        assert!(!b.idle_with_changes());
        let h = b.register(super::super::HISTOGRAM, 2, &[]).unwrap();
        assert!(b.record(&h, 42));
        assert!(b.idle_with_changes());
    }
}
