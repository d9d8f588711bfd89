//! Sequential specifications for the linearizability checker: what one object does, one operation
//! at a time.

use std::fmt::Debug;
use std::hash::Hash;

/// A sequential specification. The checker searches for an order of the history's operations,
/// consistent with real time, in which every operation is a legal step of this model.
///
/// `step` must be a pure function: the checker memoizes on the state it returns.
pub trait Model {
    /// The object's state. Equal states must behave identically: the checker prunes a branch of
    /// its search when it reaches a state it has already explored with the same operations done.
    type State: Clone + Eq + Hash + Debug;
    /// What an operation asked for.
    type Input: Clone + Debug;
    /// What it returned, or that the return is unknown.
    type Output: Clone + Debug;

    fn init(&self) -> Self::State;

    /// The state after `input` takes effect in `state` and returns `output`, or `None` if the model
    /// cannot return `output` for `input` in `state`.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;
}

/// One register holding `Option<u64>` (absent until first written), with read, write and
/// compare-and-swap. Its state is the register's value.
#[derive(Clone, Copy, Debug, Default)]
pub struct Register;

/// An operation on a [`Register`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterInput {
    Read,
    Write(u64),
    /// Sets the value to `new` if it is `expected`.
    Cas {
        expected: u64,
        new: u64,
    },
}

/// What an operation on a [`Register`] returned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RegisterOutput {
    /// A read returned this value (`None`: absent).
    Read(Option<u64>),
    /// A write, or a compare-and-swap that matched, took effect.
    Applied,
    /// The outcome is unknown (`info`). A write takes effect; a compare-and-swap takes effect if
    /// the value matches and otherwise changes nothing. "Never took effect" is the search placing
    /// the operation after every other one, where its effect is unobservable.
    Unknown,
}

impl Model for Register {
    type State = Option<u64>;
    type Input = RegisterInput;
    type Output = RegisterOutput;

    fn init(&self) -> Option<u64> {
        None
    }

    fn step(
        &self,
        state: &Option<u64>,
        input: &RegisterInput,
        output: &RegisterOutput,
    ) -> Option<Option<u64>> {
        use RegisterInput as I;
        use RegisterOutput as O;
        match (*input, *output) {
            (I::Read, O::Read(value)) => (*state == value).then_some(*state),
            (I::Read, O::Unknown) => Some(*state),
            (I::Write(value), O::Applied | O::Unknown) => Some(Some(value)),
            (I::Cas { expected, new }, O::Applied) => {
                (*state == Some(expected)).then_some(Some(new))
            }
            (I::Cas { expected, new }, O::Unknown) => Some(if *state == Some(expected) {
                Some(new)
            } else {
                *state
            }),
            // A read cannot be "applied", nor a write return a value.
            (I::Read, O::Applied) | (I::Write(_) | I::Cas { .. }, O::Read(_)) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn register_steps() {
        use RegisterInput as I;
        use RegisterOutput as O;
        // The state before, the operation, and the state after (`None`: the step is illegal).
        type Case = (Option<u64>, I, O, Option<Option<u64>>);
        #[rustfmt::skip]
        let cases: Vec<Case> = vec![
            (None,    I::Read,                            O::Read(None),    Some(None)),
            (None,    I::Read,                            O::Read(Some(1)), None),
            (Some(1), I::Read,                            O::Read(Some(1)), Some(Some(1))),
            (Some(1), I::Read,                            O::Read(Some(2)), None),
            (Some(1), I::Read,                            O::Unknown,       Some(Some(1))),
            (None,    I::Write(3),                        O::Applied,       Some(Some(3))),
            (Some(1), I::Write(3),                        O::Unknown,       Some(Some(3))),
            (Some(1), I::Cas { expected: 1, new: 2 },     O::Applied,       Some(Some(2))),
            (Some(5), I::Cas { expected: 1, new: 2 },     O::Applied,       None),
            (None,    I::Cas { expected: 1, new: 2 },     O::Applied,       None),
            (Some(1), I::Cas { expected: 1, new: 2 },     O::Unknown,       Some(Some(2))),
            (Some(5), I::Cas { expected: 1, new: 2 },     O::Unknown,       Some(Some(5))),
            (Some(1), I::Write(3),                        O::Read(Some(3)), None),
            (Some(1), I::Read,                            O::Applied,       None),
        ];
        for (state, input, output, expected) in cases {
            assert_eq!(
                Register.step(&state, &input, &output),
                expected,
                "{input:?} -> {output:?} in {state:?}"
            );
        }
    }
}
