//! The language Vektagraf nodes and clients speak, with no I/O and no engine, so a client
//! build never pulls in wasmtime or redb.
//!
//! - [`model`]: collections, objects, edges, queries and answers (also the embedded API's types).
//! - [`codec`]: the [`Wire`](codec::Wire) trait and the primitive encodings.
//! - [`wire`]: wire forms of the model's types.
//! - [`frame`]: `length | version | body` framing, checked before the body is read.
//! - [`message`]: requests ([`Request`], [`Op`]) and responses ([`Reply`], [`ErrorReply`]).
//!
//! The byte-level specification, enough to write a client in another language, is
//! `docs/protocol.md`.

pub mod codec;
pub mod frame;
pub mod message;
pub mod model;
pub mod wire;

pub use codec::DecodeError;
pub use frame::{FrameError, ALPN, VERSION};
pub use message::{
    decode_response, encode_response, ErrorCode, ErrorReply, Op, Reply, Request, Response,
};
