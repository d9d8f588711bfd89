//! Network fault injection between nodes on loopback.
