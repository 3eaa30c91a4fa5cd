//! RESP, the Redis protocol: [`request`] decodes what clients send, [`reply`] encodes
//! what we answer (RESP2 or RESP3), [`frame`] decodes replies as a client reads them. All
//! are pure and runtime-free.

pub mod frame;
pub mod reply;
pub mod request;

pub use reply::{Out, Protocol};
pub use request::{Decoded, Limits, ProtocolError, RequestDecoder};
