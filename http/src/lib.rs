//! Sans-IO HTTP/1.1 for ringmq: request heads, request bodies and responses, with no socket.
//!
//! The shard loop owns the connection and its buffers; this crate only turns bytes into
//! requests and responses into bytes, so every rule (limits, framing, keep-alive) is testable
//! without a network. Layout:
//! - [`request`]: [`parse_head`] turns the bytes of a request head into a [`RequestHead`];
//! - [`body`]: [`BodyDecoder`] decodes a Content-Length or chunked body incrementally;
//! - [`response`]: [`Response`] encodes a status line, headers and body;
//! - [`publish`]: the REST publish and batch publish bodies, validated;
//! - [`sse`]: Server-Sent Events encoding;
//! - [`ws`]: the WebSocket upgrade handshake, frame codec and message assembler;
//! - [`origin`]: which browser origins may open a WebSocket ([`origin::OriginPolicy`]);
//! - [`error`]: [`HttpError`] and the status code each error is answered with.
//!
//! A connection's loop: parse a head (incomplete is not an error, read more), answer
//! `100 Continue` when asked and the body is acceptable, feed the body decoder until `Done`,
//! route, encode the response, and keep the bytes after the body for the next pipelined request.

pub mod body;
pub mod error;
pub mod origin;
pub mod percent;
pub mod publish;
pub mod request;
pub mod response;
pub mod sse;
pub mod ws;

pub use body::{BodyDecoder, BodyEvent};
pub use error::HttpError;
pub use request::{parse_head, Limits, Method, RequestHead};
pub use response::{Response, CONTINUE_100};
