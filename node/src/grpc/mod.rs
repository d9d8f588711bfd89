//! Inbound gRPC: one file per service, plus the error table. The only code that sees
//! `tonic::Status` and generated request types.

pub mod agents;
pub mod barriers;
pub mod cluster;
pub mod convert;
pub mod decisions;
pub mod feed;
pub mod forward;
pub mod gateway;
pub mod health;
pub mod kv;
pub mod locks;
pub mod peer;
pub mod progress;
pub mod status;
pub mod streams;
pub mod tasks;
pub mod topics;
pub mod transactions;
pub mod validation;
pub mod workflows;
