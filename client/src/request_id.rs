//! Request ids for writes: one random client id, increasing serials, and the set of serials still
//! in flight, whose minimum tells the cluster which older results it may forget.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use conclave_proto::v1::RequestId;

/// Hands out request ids for one client instance.
#[derive(Debug)]
pub(crate) struct RequestIds {
    client_id: u64,
    last_serial: AtomicU64,
    /// Serials whose write has not returned yet. Bounded by the caller's concurrency: each entry
    /// belongs to one live [`PendingWrite`].
    in_flight: Mutex<BTreeSet<u64>>,
}

impl RequestIds {
    /// A fresh id space with a random non-zero client id.
    pub fn new() -> Arc<RequestIds> {
        let client_id = loop {
            let candidate: u64 = rand::random();
            if candidate != 0 {
                break candidate;
            }
        };
        Arc::new(Self::with_client_id(client_id))
    }

    pub fn with_client_id(client_id: u64) -> RequestIds {
        assert_ne!(client_id, 0, "client id 0 is reserved by the wire contract");
        RequestIds {
            client_id,
            last_serial: AtomicU64::new(0),
            in_flight: Mutex::new(BTreeSet::new()),
        }
    }

    pub fn client_id(&self) -> u64 {
        self.client_id
    }

    /// Starts a write: takes the next serial and marks it in flight until the guard drops.
    pub fn begin(self: &Arc<Self>) -> PendingWrite {
        let serial = self.last_serial.fetch_add(1, Ordering::Relaxed) + 1;
        self.in_flight
            .lock()
            .expect("request id set poisoned")
            .insert(serial);
        PendingWrite {
            ids: Arc::clone(self),
            serial,
        }
    }

    /// The lowest serial still in flight, or the next serial to be issued when none is.
    fn min_pending_serial(&self) -> u64 {
        let in_flight = self.in_flight.lock().expect("request id set poisoned");
        match in_flight.first() {
            Some(serial) => *serial,
            None => self.last_serial.load(Ordering::Relaxed) + 1,
        }
    }
}

/// One write in flight. Every attempt of the write carries the same `(client_id, serial)`; the
/// serial leaves the in-flight set when this guard drops, whether the write finished, failed or
/// was cancelled.
#[derive(Debug)]
pub(crate) struct PendingWrite {
    ids: Arc<RequestIds>,
    serial: u64,
}

impl PendingWrite {
    /// The id for the next attempt. `min_pending_serial` is recomputed each time: it can only have
    /// risen, and it never passes this write's own serial, which is still in the set.
    pub fn request_id(&self) -> RequestId {
        let min_pending_serial = self.ids.min_pending_serial();
        debug_assert!(min_pending_serial <= self.serial);
        RequestId {
            client_id: self.ids.client_id,
            serial: self.serial,
            min_pending_serial,
        }
    }
}

impl Drop for PendingWrite {
    fn drop(&mut self) {
        // A poisoned lock means another thread panicked mid-update; there is nothing to keep.
        if let Ok(mut in_flight) = self.ids.in_flight.lock() {
            in_flight.remove(&self.serial);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_increase_and_min_pending_tracks_the_oldest_in_flight() {
        let ids = Arc::new(RequestIds::with_client_id(7));
        let first = ids.begin();
        let second = ids.begin();
        let third = ids.begin();
        assert_eq!(
            first.request_id(),
            RequestId {
                client_id: 7,
                serial: 1,
                min_pending_serial: 1
            }
        );
        assert_eq!(third.request_id().serial, 3);
        assert_eq!(third.request_id().min_pending_serial, 1);

        drop(first);
        assert_eq!(third.request_id().min_pending_serial, 2);
        // A retry of the same write keeps its serial.
        assert_eq!(second.request_id().serial, 2);

        drop(second);
        assert_eq!(third.request_id().min_pending_serial, 3);
        drop(third);
        assert!(ids.in_flight.lock().expect("not poisoned").is_empty());

        let fourth = ids.begin();
        assert_eq!(
            fourth.request_id(),
            RequestId {
                client_id: 7,
                serial: 4,
                min_pending_serial: 4
            }
        );
    }

    #[test]
    fn out_of_order_completion_keeps_the_oldest() {
        let ids = Arc::new(RequestIds::with_client_id(1));
        let first = ids.begin();
        let second = ids.begin();
        let third = ids.begin();
        drop(second);
        assert_eq!(third.request_id().min_pending_serial, 1);
        drop(first);
        assert_eq!(third.request_id().min_pending_serial, 3);
    }

    #[test]
    fn client_ids_are_random_and_non_zero() {
        let a = RequestIds::new();
        let b = RequestIds::new();
        assert_ne!(a.client_id(), 0);
        assert_ne!(a.client_id(), b.client_id());
    }
}
