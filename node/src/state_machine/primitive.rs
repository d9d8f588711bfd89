//! The extension point of the state machine: what every primitive implements, what it shares
//! with the others ([`Ctx`]), and how it affects them ([`Effect`]).
//!
//! A primitive owns its state in its own module and is one field of `StateMachine`. The state
//! machine drives it: it applies the primitive's own commands (an inherent `apply` taking the
//! context and returning the primitive's response), fires its timers and collects its garbage on
//! every `Tick`, extends its holders' deadlines on a new leader's first tick, routes other
//! primitives' effects to it, asks when it is next due, and mixes its digest into the state
//! digest. Its serde encoding is its snapshot section. Nothing here may read a clock, draw
//! randomness or do I/O (see `state_machine`).

use super::coordination::{CoordEventKind, EventRing, SessionId};

/// What primitives share, handed to each call: cluster time, the event ring streams follow, the
/// effects raised for the others, and a read-only view of the agent sessions.
pub struct Ctx<'a> {
    /// Cluster time: the greatest leader stamp applied so far.
    pub now_ms: u64,
    events: &'a mut EventRing,
    effects: Vec<Effect>,
    live_session: &'a dyn Fn(SessionId) -> bool,
}

impl<'a> Ctx<'a> {
    pub fn new(
        now_ms: u64,
        events: &'a mut EventRing,
        live_session: &'a dyn Fn(SessionId) -> bool,
    ) -> Self {
        Ctx {
            now_ms,
            events,
            effects: Vec::new(),
            live_session,
        }
    }

    /// Appends an event to the ring, numbered and stamped with cluster time.
    pub fn event(&mut self, kind: CoordEventKind) {
        self.events.push(self.now_ms, kind);
    }

    /// The sequence the next event will get.
    pub fn next_event_seq(&self) -> u64 {
        self.events.last_seq() + 1
    }

    /// Raises an effect for the state machine to route to the other primitives after this call.
    pub fn raise(&mut self, effect: Effect) {
        self.effects.push(effect);
    }

    /// Whether `session_id` is the live session of an agent.
    pub fn session_live(&self, session_id: SessionId) -> bool {
        (self.live_session)(session_id)
    }

    /// The effects raised so far, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }
}

/// What one primitive does to the others, routed by the state machine in the order raised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Effect {
    /// An agent session ended (expired, closed or replaced): the keys attached to it go, and its
    /// locks, permits and leaderships are lost.
    SessionEnded { session_id: SessionId },
}

/// The part of a primitive that the state machine drives the same way for every primitive.
pub trait Primitive {
    /// Fires every timer due at `ctx.now_ms` and forgets what retention allows.
    fn tick(&mut self, ctx: &mut Ctx);

    /// A new leader's first tick: deadlines that the election kept from being renewed (TTL
    /// holders) are pushed to at least now + their TTL.
    fn refresh(&mut self, _ctx: &mut Ctx) {}

    /// Reacts to another primitive's effect.
    fn on_effect(&mut self, _ctx: &mut Ctx, _effect: &Effect) {}

    /// The earliest cluster time at which a `Tick` would change something; never a time at which
    /// a tick would leave the same thing due.
    fn next_due_ms(&self) -> Option<u64>;

    /// Order-independent: equal state, equal digest.
    fn digest(&self) -> u64;
}
