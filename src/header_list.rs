//! A request's headers as the host hands them over: one buffer in
//! proxy-wasm's map serialization (a count, the sizes, then each name and
//! value followed by a NUL), read in place. Reading a header map through
//! the SDK makes a `String` and a `Vec` of every name and value; this keeps
//! the one buffer and an index into it.

use std::ops::Range;

#[derive(Debug, Clone, Default)]
pub struct HeaderList {
    bytes: Vec<u8>,
    /// (name, value) ranges in `bytes`, in the order the host gave them.
    index: Vec<(Range<usize>, Range<usize>)>,
}

impl HeaderList {
    /// Reads a serialized map; a malformed tail is dropped (what is whole is kept).
    pub fn from_serialized(bytes: Vec<u8>) -> Self {
        let word = |at: usize| -> Option<usize> {
            let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(b)).ok()
        };
        let mut index = Vec::new();
        if let Some(count) = word(0) {
            // Each entry needs 8 bytes of sizes: a count beyond that is malformed.
            let count = count.min(bytes.len() / 8);
            index.reserve(count);
            let mut data = 4 + count * 8;
            for i in 0..count {
                let (Some(k), Some(v)) = (word(4 + i * 8), word(8 + i * 8)) else { break };
                let name = data..data.saturating_add(k);
                let value = name.end.saturating_add(1)..name.end.saturating_add(1).saturating_add(v);
                if value.end >= bytes.len() {
                    break;
                }
                data = value.end + 1;
                index.push((name, value));
            }
        }
        Self { bytes, index }
    }

    /// Builds the serialized form from pairs (for tests and fallbacks).
    pub fn from_pairs(pairs: &[(&str, &[u8])]) -> Self {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&u32::try_from(pairs.len()).unwrap_or(u32::MAX).to_le_bytes());
        for (k, v) in pairs {
            bytes.extend_from_slice(&u32::try_from(k.len()).unwrap_or(u32::MAX).to_le_bytes());
            bytes.extend_from_slice(&u32::try_from(v.len()).unwrap_or(u32::MAX).to_le_bytes());
        }
        for (k, v) in pairs {
            bytes.extend_from_slice(k.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(v);
            bytes.push(0);
        }
        Self::from_serialized(bytes)
    }

    /// Each header's name and value, in order, as bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.index
            .iter()
            .map(|(k, v)| (self.bytes.get(k.clone()).unwrap_or_default(), self.bytes.get(v.clone()).unwrap_or_default()))
    }

    /// The first value of a header. A value that is not text is returned as
    /// an empty string, so the checks refuse it instead of treating it as absent.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.iter().find(|(k, _)| *k == name.as_bytes()).map(|(_, v)| std::str::from_utf8(v).unwrap_or_default())
    }

    /// Forgets every value of a header (in this list only).
    pub fn remove(&mut self, name: &str) {
        let bytes = &self.bytes;
        self.index.retain(|(k, _)| bytes.get(k.clone()) != Some(name.as_bytes()));
    }

    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_in_place() {
        let mut h = HeaderList::from_pairs(&[(":path", b"/v1"), ("x", b""), ("cookie", b"a=1"), ("cookie", b"b=2"), ("bin", b"\xff")]);
        assert_eq!(h.len(), 5);
        assert_eq!(h.get(":path"), Some("/v1"));
        assert_eq!(h.get("x"), Some(""));
        assert_eq!(h.get("cookie"), Some("a=1"));
        assert_eq!(h.get("bin"), Some(""));
        assert_eq!(h.get("missing"), None);
        h.remove("cookie");
        assert_eq!(h.iter().map(|(k, _)| k).collect::<Vec<_>>(), vec![&b":path"[..], b"x", b"bin"]);
    }

    #[test]
    fn malformed_keeps_what_is_whole() {
        let whole = HeaderList::from_pairs(&[("a", b"1"), ("bb", b"22")]);
        let bytes = whole.bytes.clone();
        for cut in 0..bytes.len() {
            let h = HeaderList::from_serialized(bytes[..cut].to_vec());
            assert!(h.len() <= 2);
            assert!(h.iter().all(|(k, v)| (k, v) == (&b"a"[..], &b"1"[..]) || (k, v) == (&b"bb"[..], &b"22"[..])), "cut at {cut}");
        }
        assert_eq!(HeaderList::from_serialized(bytes).len(), 2);
        // A count far beyond the bytes.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[1, 0, 0, 0, 1, 0, 0, 0, b'a', 0, b'b', 0]);
        assert!(HeaderList::from_serialized(huge).len() <= 1);
        assert!(HeaderList::from_serialized(Vec::new()).is_empty());
    }
}
