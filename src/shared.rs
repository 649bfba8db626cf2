//! State shared by every worker VM, in proxy-wasm shared data: budget
//! ledgers, team rate-limit windows, deployment health and load. Each value
//! is a small fixed-layout record updated atomically, so concurrent
//! requests on different workers never lose an update: with
//! compare-and-swap, retried on conflict (proxy-wasm shared data), or in one
//! step under the store's lock (the native build's, `Store::modify`).

/// Where shared records live. The filter implements it with proxy-wasm
/// shared data; tests with a map.
pub trait Store {
    /// The value and its version (CAS token), or `(None, None)` if absent.
    fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String>;
    /// Writes if `cas` still matches the stored version (`None`: unconditionally).
    /// `Ok(false)` when someone else wrote first.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String>;
    /// Reads and rewrites a value in one step, for a store that can hold
    /// off every other writer meanwhile (a lock): `f` rewrites the value
    /// where it lies (see [`Rewrite`]). `None` when the store cannot, and
    /// [`update`] then uses compare-and-swap.
    fn modify(&self, _key: &str, _f: &mut Rewrite<'_>) -> Option<Result<(), String>> {
        None
    }
}

/// What [`Store::modify`] runs on a value: it gets the stored bytes (empty,
/// with `false`, when there is no value) and rewrites them in place,
/// returning whether to keep what it wrote. It writes only when it returns
/// true, so false leaves the value as it was (and creates none). Rewriting
/// in place reuses the value's buffer: once a record has been written
/// whole, a request's reservation and settlement allocate nothing.
pub type Rewrite<'f> = dyn FnMut(&mut Vec<u8>, bool) -> bool + 'f;

/// What [`update`] returns: the record before and after, the change's
/// refusal, or the store's error.
pub type Updated<T, E> = Result<Result<(T, T), E>, String>;

/// A record kept in shared data.
pub trait Record: Sized + Default {
    /// Writes the record's bytes into `out`, replacing what it held.
    fn encode_into(&self, out: &mut Vec<u8>);
    fn decode(bytes: &[u8]) -> Option<Self>;

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.encode_into(&mut out);
        out
    }
}

const MAX_ATTEMPTS: usize = 256;

/// Reads a record (the default if absent).
pub fn read<T: Record>(store: &dyn Store, key: &str) -> Result<T, String> {
    match store.get(key)?.0 {
        Some(bytes) => T::decode(&bytes).ok_or_else(|| format!("shared record {key} is corrupt")),
        None => Ok(T::default()),
    }
}

/// Applies `change` to a record atomically: in one step where the store
/// can (`Store::modify`), else with compare-and-swap, retrying on conflict.
/// `change` returns the new record, or `Err` to leave it as it is. Returns
/// the record before and after.
pub fn update<T: Record, E>(
    store: &dyn Store,
    key: &str,
    change: impl Fn(&T) -> Result<T, E>,
) -> Updated<T, E> {
    // In one step where the store can: one lookup, and no copy of the
    // value out of the store.
    let mut outcome: Option<Updated<T, E>> = None;
    let modified = store.modify(key, &mut |value, present| {
        let before = if present {
            match T::decode(value) {
                Some(before) => before,
                None => {
                    outcome = Some(Err(format!("shared record {key} is corrupt")));
                    return false;
                }
            }
        } else {
            T::default()
        };
        match change(&before) {
            Ok(after) => {
                after.encode_into(value);
                outcome = Some(Ok(Ok((before, after))));
                true
            }
            Err(e) => {
                outcome = Some(Ok(Err(e)));
                false
            }
        }
    });
    if let Some(modified) = modified {
        modified?;
        return outcome.unwrap_or_else(|| Err(format!("shared record {key}: the store did not read it")));
    }
    for _ in 0..MAX_ATTEMPTS {
        let (value, cas) = store.get(key)?;
        let before = match &value {
            Some(bytes) => T::decode(bytes).ok_or_else(|| format!("shared record {key} is corrupt"))?,
            None => T::default(),
        };
        let after = match change(&before) {
            Ok(after) => after,
            Err(e) => return Ok(Err(e)),
        };
        if store.set(key, &after.encode(), cas)? {
            return Ok(Ok((before, after)));
        }
    }
    Err(format!("shared record {key}: gave up after {MAX_ATTEMPTS} conflicting updates"))
}

/// Creates a record (empty) if it does not exist yet, so that every later
/// update is a compare-and-swap on a versioned value.
pub fn ensure(store: &dyn Store, key: &str) -> Result<(), String> {
    if store.get(key)?.0.is_none() {
        store.set(key, &[], None)?;
    }
    Ok(())
}

/// Little-endian u64 fields, in order.
pub fn encode_u64s(fields: &[u64]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_u64s_into(fields, &mut out);
    out
}

/// [`encode_u64s`] into `out`, replacing what it held (its buffer reused).
pub fn encode_u64s_into(fields: &[u64], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(fields.len().saturating_mul(8));
    for f in fields {
        out.extend_from_slice(&f.to_le_bytes());
    }
}

/// The inverse of [`encode_u64s`]; None unless `bytes` holds exactly `N` fields.
pub fn decode_u64s<const N: usize>(bytes: &[u8]) -> Option<[u64; N]> {
    if bytes.len() != N * 8 {
        return None;
    }
    let mut out = [0u64; N];
    for (slot, chunk) in out.iter_mut().zip(bytes.chunks_exact(8)) {
        *slot = u64::from_le_bytes(chunk.try_into().ok()?);
    }
    Some(out)
}

#[cfg(test)]
pub mod testing {
    use super::Store;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Shared data as Envoy keeps it: a value and a version per key.
    #[derive(Default)]
    pub struct MapStore(pub Mutex<HashMap<String, (Vec<u8>, u32)>>);

    /// The same, read and rewritten under its lock (as the native build's).
    #[derive(Default)]
    pub struct LockedStore(pub MapStore);

    impl Store for LockedStore {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
            self.0.get(key)
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
            self.0.set(key, value, cas)
        }

        fn modify(&self, key: &str, f: &mut crate::shared::Rewrite<'_>) -> Option<Result<(), String>> {
            let mut map = self.0 .0.lock().unwrap();
            match map.get_mut(key) {
                Some((value, cas)) => {
                    let before = value.clone();
                    if f(value, true) {
                        *cas += 1;
                    } else {
                        assert_eq!(*value, before, "a rewrite that keeps nothing must write nothing");
                    }
                }
                None => {
                    let mut new = Vec::new();
                    if f(&mut new, false) {
                        map.insert(key.to_string(), (new, 1));
                    }
                }
            }
            Some(Ok(()))
        }
    }

    impl Store for MapStore {
        fn get(&self, key: &str) -> Result<(Option<Vec<u8>>, Option<u32>), String> {
            Ok(match self.0.lock().unwrap().get(key) {
                Some((v, cas)) => (Some(v.clone()), Some(*cas)),
                None => (None, None),
            })
        }

        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<bool, String> {
            let mut map = self.0.lock().unwrap();
            let current = map.get(key).map(|(_, c)| *c);
            if cas.is_some() && cas != current {
                return Ok(false);
            }
            map.insert(key.to_string(), (value.to_vec(), current.unwrap_or(0) + 1));
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
    struct Count(u64);

    impl Record for Count {
        fn encode_into(&self, out: &mut Vec<u8>) {
            encode_u64s_into(&[self.0], out)
        }
        fn decode(bytes: &[u8]) -> Option<Self> {
            decode_u64s::<1>(bytes).map(|[n]| Count(n))
        }
    }

    /// Both ways of updating (compare-and-swap, and in one step under a
    /// lock) read, change and refuse alike, and lose no update when
    /// threads race.
    #[test]
    fn updates_by_swap_and_under_a_lock_agree() {
        use std::sync::Arc;
        let stores: [Arc<dyn Store + Send + Sync>; 2] =
            [Arc::new(testing::MapStore::default()), Arc::new(testing::LockedStore::default())];
        for store in stores {
            let add = |n: u64| move |c: &Count| if c.0 + n > 100 { Err("full") } else { Ok(Count(c.0 + n)) };
            assert_eq!(update(&*store, "k", add(5)).unwrap(), Ok((Count(0), Count(5))));
            assert_eq!(update(&*store, "k", add(96)).unwrap(), Err("full"));
            assert_eq!(read::<Count>(&*store, "k").unwrap(), Count(5));
            // Created before the race: a compare-and-swap store's first
            // write is unconditional (the record is made when the config
            // loads for that reason).
            update(&*store, "n", |_: &Count| Ok::<_, ()>(Count(0))).unwrap().unwrap();
            let threads: Vec<_> = (0..4)
                .map(|_| {
                    let store = Arc::clone(&store);
                    std::thread::spawn(move || {
                        for _ in 0..50 {
                            update(&*store, "n", |c: &Count| Ok::<_, ()>(Count(c.0 + 1))).unwrap().unwrap();
                        }
                    })
                })
                .collect();
            for t in threads {
                t.join().unwrap();
            }
            assert_eq!(read::<Count>(&*store, "n").unwrap(), Count(200));
            store.set("bad", b"xyz", None).unwrap();
            assert!(update(&*store, "bad", add(1)).unwrap_err().contains("corrupt"));
        }
    }

    #[test]
    fn u64_fields_round_trip() {
        let bytes = encode_u64s(&[1, u64::MAX, 0]);
        assert_eq!(decode_u64s::<3>(&bytes), Some([1, u64::MAX, 0]));
        assert_eq!(decode_u64s::<2>(&bytes), None);
        assert_eq!(decode_u64s::<3>(&bytes[1..]), None);
    }
}
