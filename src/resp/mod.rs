//! RESP, the Redis protocol: [`request`] decodes what clients send, [`reply`] encodes
//! what we answer (RESP2 or RESP3). Both are pure and runtime-free.

pub mod reply;
pub mod request;

pub use reply::{Out, Protocol};
pub use request::{Decoded, Limits, ProtocolError, RequestDecoder};
