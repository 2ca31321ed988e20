//! What the HTTP routes share: the shard and broker they serve, the bearer key of a request,
//! and the API's error shape.

use std::rc::Rc;
use std::sync::Arc;

use ringmq_http::{RequestHead, Response};

use super::mailbox::ShardHandle;
use super::shared::Shared;

/// What the HTTP routes of one shard reach.
pub struct HttpContext {
    /// The shard serving the connection.
    pub shard: Rc<ShardHandle>,
    /// Broker-wide state (control plane, stats of every shard).
    pub(super) shared: Arc<Shared>,
}

/// The key of `Authorization: Bearer KEY`, if the request has one.
pub fn bearer(head: &RequestHead) -> Option<String> {
    let value = head.header("authorization")?;
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

/// An error response in the API's shape: `{"error": CODE, "detail": "…"}` (the HTTP layer's
/// [`Response::error`], under the name the routes use).
pub fn json_error(status: u16, code: &str, detail: &str) -> Response {
    Response::error(status, code, detail)
}
