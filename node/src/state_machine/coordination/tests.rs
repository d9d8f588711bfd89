//! Table-driven tests of the coordination state machine.
