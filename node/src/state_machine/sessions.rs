//! Remembered write results per client, so a retried request id returns the original result
//! instead of applying twice (Raft thesis §6.3).

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::command::{RequestId, Response};
use crate::limits::{SESSIONS_MAX, SESSION_IDLE_MS, SESSION_RESPONSES_MAX};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
struct ClientSession {
    /// Serials below this are forgotten: the client promised not to retry them, or they were
    /// dropped to keep within SESSION_RESPONSES_MAX.
    floor: u64,
    responses: BTreeMap<u64, Response>,
    last_active_ms: u64,
}

/// What the state machine should do with a request id.
pub enum Lookup {
    /// First time seen: apply it.
    Apply,
    /// Applied before: return this result.
    Duplicate(Response),
    /// Too old to know: apply nothing.
    Expired,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Sessions {
    by_client: BTreeMap<u64, ClientSession>,
    /// (last_active_ms, client_id), to expire idle clients oldest first.
    by_activity: BTreeSet<(u64, u64)>,
}

impl Sessions {
    pub fn lookup(&self, id: &RequestId) -> Lookup {
        match self.by_client.get(&id.client_id) {
            None => Lookup::Apply,
            Some(session) => match session.responses.get(&id.serial) {
                Some(response) => Lookup::Duplicate(response.clone()),
                None if id.serial < session.floor => Lookup::Expired,
                None => Lookup::Apply,
            },
        }
    }

    /// Remembers the result of an applied request.
    pub fn record(&mut self, id: &RequestId, now_ms: u64, response: Response) {
        let session = self.by_client.entry(id.client_id).or_default();
        self.by_activity
            .remove(&(session.last_active_ms, id.client_id));
        session.last_active_ms = session.last_active_ms.max(now_ms);
        self.by_activity
            .insert((session.last_active_ms, id.client_id));

        session.floor = session.floor.max(id.min_pending_serial);
        session.responses.insert(id.serial, response);
        let floor = session.floor;
        session.responses.retain(|serial, _| *serial >= floor);
        while session.responses.len() > SESSION_RESPONSES_MAX {
            let (oldest, _) = session
                .responses
                .pop_first()
                .expect("over the limit, so not empty");
            session.floor = session.floor.max(oldest + 1);
        }
        self.expire(now_ms);
    }

    pub fn client_count(&self) -> usize {
        self.by_client.len()
    }

    /// Forgets clients idle for SESSION_IDLE_MS, and the least recently active beyond SESSIONS_MAX.
    fn expire(&mut self, now_ms: u64) {
        while let Some(&(last_active_ms, client_id)) = self.by_activity.first() {
            let idle = now_ms.saturating_sub(last_active_ms) > SESSION_IDLE_MS;
            if !idle && self.by_client.len() <= SESSIONS_MAX {
                break;
            }
            self.by_activity.pop_first();
            self.by_client.remove(&client_id);
        }
    }
}
