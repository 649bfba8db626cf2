//! Team budgets: where the budget is checked.
//!
//! Each team with a `max_budget` has a ledger in proxy-wasm shared data,
//! shared by every worker VM: what it has spent and what requests in flight
//! have reserved, in integer micro-USD. At admission a request reserves its
//! worst-case cost; when its response ends it settles to the actual cost.
//! Every update is atomic (see `shared::update`: a compare-and-swap retried
//! on conflict, or one step under the store's lock where the store has one),
//! so concurrent requests on different workers never lose an update.
//!
//! The rule: a request is admitted while `spent + reserved < budget`. So a
//! burst cannot all pass a nearly spent budget (each admitted request raises
//! `reserved` for the next), and spend can exceed the budget by at most one
//! request: the last one admitted, if its actual cost was above what
//! remained.

pub use crate::shared::Store;
use crate::shared::{self, Record};

/// A team's ledger, in micro-USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ledger {
    pub spent: u64,
    pub reserved: u64,
    /// The start of the budget period `spent` counts (0: no periods).
    pub period_start: u64,
}

impl Record for Ledger {
    fn encode_into(&self, out: &mut Vec<u8>) {
        shared::encode_u64s_into(&[self.spent, self.reserved, self.period_start], out)
    }

    fn decode(bytes: &[u8]) -> Option<Ledger> {
        if let Some([spent, reserved, period_start]) = shared::decode_u64s::<3>(bytes) {
            return Some(Ledger { spent, reserved, period_start });
        }
        let [spent, reserved] = shared::decode_u64s::<2>(bytes)?;
        Some(Ledger { spent, reserved, period_start: 0 })
    }
}

impl Ledger {
    /// The ledger in the period that started at `period_start`: a new
    /// period starts spend from zero (reservations of requests still in
    /// flight carry over, to be settled in it).
    pub fn at(self, period_start: u64) -> Ledger {
        if period_start == self.period_start {
            self
        } else {
            Ledger { spent: 0, period_start, ..self }
        }
    }

    /// What is left of a budget, not counting reservations.
    pub fn remaining(&self, budget: u64) -> u64 {
        budget.saturating_sub(self.spent)
    }
}

/// The admission rule, on one ledger value.
pub fn admit(ledger: Ledger, budget: u64, worst_case: u64) -> Result<Ledger, Ledger> {
    if ledger.spent.saturating_add(ledger.reserved) >= budget {
        return Err(ledger);
    }
    Ok(Ledger { reserved: ledger.reserved.saturating_add(worst_case), ..ledger })
}

/// Settling: the reservation is released and the actual cost is spent.
pub fn settle(ledger: Ledger, reserved: u64, actual: u64) -> Ledger {
    Ledger { spent: ledger.spent.saturating_add(actual), reserved: ledger.reserved.saturating_sub(reserved), ..ledger }
}

/// USD (as in `max_budget`) to micro-USD.
pub fn usd_to_micro(usd: f64) -> u64 {
    let micro = (usd * 1e6).round();
    if micro.is_finite() && micro > 0.0 {
        micro.min(u64::MAX as f64) as u64
    } else {
        0
    }
}

pub fn ledger_key(team: &str) -> String {
    format!("tollgate/ledger/{team}")
}

/// Applies `change` to a ledger atomically (`shared::update`).
/// `change` returns the new ledger, or `Err` to leave the ledger as it is.
/// Returns the ledger before and after.
pub fn update<E>(
    store: &dyn Store,
    key: &str,
    change: impl Fn(Ledger) -> Result<Ledger, E>,
) -> Result<Result<(Ledger, Ledger), E>, String> {
    shared::update(store, key, |l: &Ledger| change(*l))
}

/// Creates a ledger if it does not exist yet (when the config is loaded),
/// so that every later update is a compare-and-swap on a versioned value.
pub fn ensure(store: &dyn Store, key: &str) -> Result<Ledger, String> {
    let (value, _) = store.get(key)?;
    match value {
        Some(bytes) => Ledger::decode(&bytes).ok_or_else(|| format!("ledger {key} is corrupt")),
        None => {
            store.set(key, &Ledger::default().encode(), None)?;
            Ok(Ledger::default())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;
    use std::sync::{Arc, Barrier, Mutex};

    /// Shared data as Envoy keeps it: a value and a version per key.
    #[derive(Default)]
    struct MapStore(Mutex<HashMap<String, (Vec<u8>, u32)>>);

    impl Store for MapStore {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
            let read = match self.0.lock().unwrap().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            };
            // Widen the window between read and write, so that racing
            // threads do interleave (and lost updates would show).
            std::thread::sleep(std::time::Duration::from_micros(100));
            Ok(read)
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
            let mut map = self.0.lock().unwrap();
            let entry = map.entry(key.to_string()).or_insert((Vec::new(), 0));
            if let Some(c) = cas {
                if c != entry.1 {
                    return Ok(false);
                }
            }
            *entry = (value.to_vec(), entry.1 + 1);
            Ok(true)
        }
    }

    #[test]
    fn a_new_period_starts_spend_from_zero() {
        use crate::period::Period;
        // 2026-11-30T23:59:59Z, then the first of December.
        let (nov, dec) = (1_796_083_199_000, 1_796_083_200_000);
        let p = Period::Monthly;
        let l = Ledger { spent: 900, reserved: 50, period_start: p.start(nov) };
        assert_eq!(l.at(p.start(nov)), l, "the same month keeps its spend");
        let fresh = l.at(p.start(dec));
        assert_eq!((fresh.spent, fresh.reserved, fresh.period_start), (0, 50, p.start(dec)));
        // A request reserved in November and settled in December counts in December.
        let settled = settle(fresh, 50, 30);
        assert_eq!((settled.spent, settled.reserved), (30, 0));
        assert!(admit(l, 900, 10).is_err() && admit(l.at(p.start(dec)), 900, 10).is_ok());
        // Records written before periods existed still read.
        assert_eq!(Ledger::decode(&shared::encode_u64s(&[7, 8])), Some(Ledger { spent: 7, reserved: 8, period_start: 0 }));
    }

    #[test]
    fn encodes_and_decodes() {
        let l = Ledger { spent: 7, reserved: u64::MAX, period_start: 0 };
        assert_eq!(Ledger::decode(&l.encode()), Some(l));
        assert_eq!(Ledger::decode(&[1, 2, 3]), None);
    }

    #[test]
    fn admission_rule() {
        let budget = 100;
        assert_eq!(admit(Ledger { spent: 0, reserved: 0, period_start: 0 }, budget, 30), Ok(Ledger { spent: 0, reserved: 30, period_start: 0 }));
        assert_eq!(admit(Ledger { spent: 60, reserved: 30, period_start: 0 }, budget, 30), Ok(Ledger { spent: 60, reserved: 60, period_start: 0 }));
        assert!(admit(Ledger { spent: 60, reserved: 40, period_start: 0 }, budget, 1).is_err());
        assert!(admit(Ledger { spent: 100, reserved: 0, period_start: 0 }, budget, 0).is_err());
        assert!(admit(Ledger::default(), 0, 0).is_err(), "a zero budget admits nothing");
        assert_eq!(settle(Ledger { spent: 60, reserved: 60, period_start: 0 }, 30, 12), Ledger { spent: 72, reserved: 30, period_start: 0 });
    }

    #[test]
    fn usd_conversion() {
        assert_eq!(usd_to_micro(500.0), 500_000_000);
        assert_eq!(usd_to_micro(0.0000014), 1);
        assert_eq!(usd_to_micro(-1.0), 0);
    }

    /// A store whose team ledger has 940 of 1000 spent.
    fn nearly_spent() -> (Arc<MapStore>, String) {
        let store = Arc::new(MapStore::default());
        let key = ledger_key("team");
        ensure(store.as_ref(), &key).unwrap();
        update(store.as_ref(), &key, |l| Ok::<_, ()>(Ledger { spent: 940, ..l })).unwrap().unwrap();
        (store, key)
    }

    /// Runs `request` on 40 threads released at once; returns how many were admitted.
    fn race(store: &Arc<MapStore>, key: &str, request: fn(&MapStore, &str) -> bool) -> usize {
        let barrier = Arc::new(Barrier::new(40));
        let handles: Vec<_> = (0..40)
            .map(|_| {
                let (store, key, barrier) = (Arc::clone(store), key.to_string(), Arc::clone(&barrier));
                std::thread::spawn(move || {
                    barrier.wait();
                    request(store.as_ref(), &key)
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).filter(|a| *a).count()
    }

    /// 40 threads race for a budget with room for 3 worst cases, each
    /// settling as soon as it is admitted; after settling, spend is within
    /// one request of the budget. Run many times over.
    #[test]
    fn a_burst_cannot_overrun_a_budget() {
        const BUDGET: u64 = 1_000;
        const WORST: u64 = 20;
        const ACTUAL: u64 = 15;
        for _ in 0..10 {
            let (store, key) = nearly_spent();
            let admitted = race(&store, &key, |store, key| {
                let admitted = update(store, key, |l| admit(l, BUDGET, WORST)).unwrap().is_ok();
                if admitted {
                    update(store, key, |l| Ok::<_, ()>(settle(l, WORST, ACTUAL))).unwrap().unwrap();
                }
                admitted
            });
            let (value, _) = store.get(&key).unwrap();
            let ledger = Ledger::decode(&value.unwrap()).unwrap();
            assert_eq!(ledger.reserved, 0);
            assert_eq!(ledger.spent, 940 + admitted as u64 * ACTUAL);
            // Reservations admit exactly 3 (940+20+20+20 = 1000); settling
            // early can free room for a few more, never past budget + one.
            assert!(admitted >= 3, "admitted {admitted}");
            assert!(ledger.spent < BUDGET + ACTUAL, "spent {} with {admitted} admitted", ledger.spent);
        }
    }

    #[test]
    fn reservations_alone_admit_exactly_what_fits() {
        let (store, key) = nearly_spent();
        let admitted = race(&store, &key, |store, key| update(store, key, |l| admit(l, 1_000, 20)).unwrap().is_ok());
        assert_eq!(admitted, 3);
    }

    #[test]
    fn gives_up_on_a_corrupt_ledger() {
        let store = MapStore::default();
        store.set("k", b"xx", None).unwrap();
        assert!(update(&store, "k", Ok::<_, ()>).is_err());
    }
}
