//! The versioned key-value store: keys in byte order, each with its create and mod revisions.

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

/// A key as clients see it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyValue {
    #[serde(with = "serde_bytes")]
    pub key: Vec<u8>,
    #[serde(with = "serde_bytes")]
    pub value: Vec<u8>,
    pub create_revision: u64,
    pub mod_revision: u64,
    pub version: u64,
    /// The agent session the key is attached to (0: none): deleted when the session ends.
    pub session_id: u64,
}

impl KeyValue {
    /// The same key without its value: what write responses and the result cache hold.
    pub fn without_value(&self) -> KeyValue {
        KeyValue {
            key: self.key.clone(),
            value: Vec::new(),
            create_revision: self.create_revision,
            mod_revision: self.mod_revision,
            version: self.version,
            session_id: self.session_id,
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Slot {
    #[serde(with = "serde_bytes")]
    value: Vec<u8>,
    create_revision: u64,
    mod_revision: u64,
    version: u64,
    session_id: u64,
}

/// The keys, their total size and an order-independent digest of their content.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    slots: BTreeMap<Vec<u8>, Slot>,
    bytes: u64,
    /// XOR of `slot_digest` over every key: equal stores have equal digests, and it is kept up to
    /// date in O(1) per change.
    digest: u64,
    /// Session -> the keys attached to it (ephemeral keys), to delete them when it ends.
    by_session: BTreeMap<u64, BTreeSet<Vec<u8>>>,
}

impl KvStore {
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.slots.get(key).map(|slot| to_key_value(key, slot))
    }

    pub fn mod_revision(&self, key: &[u8]) -> u64 {
        self.slots.get(key).map_or(0, |slot| slot.mod_revision)
    }

    pub fn key_count(&self) -> u64 {
        self.slots.len() as u64
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn digest(&self) -> u64 {
        self.digest
    }

    /// Keys starting with `prefix` and strictly after `start_after`, at most `limit` of them.
    /// Returns the page and whether more keys follow.
    pub fn list(&self, prefix: &[u8], start_after: &[u8], limit: usize) -> (Vec<KeyValue>, bool) {
        let lower = if start_after.is_empty() || start_after < prefix {
            Bound::Included(prefix.to_vec())
        } else {
            Bound::Excluded(start_after.to_vec())
        };
        let mut page = Vec::new();
        for (key, slot) in self.slots.range((lower, Bound::Unbounded)) {
            if !key.starts_with(prefix) {
                return (page, false);
            }
            if page.len() == limit {
                return (page, true);
            }
            page.push(to_key_value(key, slot));
        }
        (page, false)
    }

    /// The keys attached to `session_id`, in byte order.
    pub fn session_keys(&self, session_id: u64) -> Vec<Vec<u8>> {
        self.by_session
            .get(&session_id)
            .map(|keys| keys.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Writes a key at `revision`, attached to `session_id` (0: none), and returns the key as it
    /// was before.
    pub fn put(
        &mut self,
        key: &[u8],
        value: Vec<u8>,
        revision: u64,
        session_id: u64,
    ) -> (KeyValue, Option<KeyValue>) {
        let previous = self.remove(key);
        let slot = Slot {
            value,
            create_revision: previous.as_ref().map_or(revision, |kv| kv.create_revision),
            mod_revision: revision,
            version: previous.as_ref().map_or(1, |kv| kv.version + 1),
            session_id,
        };
        if session_id != 0 {
            self.by_session
                .entry(session_id)
                .or_default()
                .insert(key.to_vec());
        }
        self.bytes += (key.len() + slot.value.len()) as u64;
        self.digest ^= slot_digest(key, &slot);
        let written = to_key_value(key, &slot);
        self.slots.insert(key.to_vec(), slot);
        (written, previous)
    }

    /// Removes a key and returns it as it was.
    pub fn remove(&mut self, key: &[u8]) -> Option<KeyValue> {
        let slot = self.slots.remove(key)?;
        if slot.session_id != 0 {
            if let Some(keys) = self.by_session.get_mut(&slot.session_id) {
                keys.remove(key);
                if keys.is_empty() {
                    self.by_session.remove(&slot.session_id);
                }
            }
        }
        self.bytes -= (key.len() + slot.value.len()) as u64;
        self.digest ^= slot_digest(key, &slot);
        Some(to_key_value(key, &slot))
    }
}

fn to_key_value(key: &[u8], slot: &Slot) -> KeyValue {
    KeyValue {
        key: key.to_vec(),
        value: slot.value.clone(),
        create_revision: slot.create_revision,
        mod_revision: slot.mod_revision,
        version: slot.version,
        session_id: slot.session_id,
    }
}

/// FNV-1a over the key, value and revisions: stable across builds and platforms, unlike std's
/// hasher, so digests from different nodes can be compared.
fn slot_digest(key: &[u8], slot: &Slot) -> u64 {
    let mut hash = Fnv::default();
    hash.write(&(key.len() as u64).to_be_bytes());
    hash.write(key);
    hash.write(&(slot.value.len() as u64).to_be_bytes());
    hash.write(&slot.value);
    hash.write(&slot.create_revision.to_be_bytes());
    hash.write(&slot.mod_revision.to_be_bytes());
    hash.write(&slot.version.to_be_bytes());
    hash.write(&slot.session_id.to_be_bytes());
    hash.finish()
}

pub(crate) struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for byte in bytes {
            self.0 ^= u64::from(*byte);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}
