//! Inbound gRPC: one file per service, plus the error table. The only code that sees
//! `tonic::Status` and generated request types.

pub mod cluster;
pub mod forward;
pub mod kv;
pub mod peer;
pub mod status;
