//! Checkers for operation histories recorded under faults: pure functions of the history.
