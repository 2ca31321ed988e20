//! (stub until the control branch lands)
use std::sync::Arc;

use super::snapshot::{OrgNum, Snapshot};
use super::store::{Store, StoreError};

/// Stub.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// Method.
    pub method: String,
    /// Path.
    pub path: String,
    /// Query.
    pub query: String,
    /// Bearer.
    pub bearer: Option<String>,
    /// Body.
    pub body: bytes::Bytes,
}

/// Stub.
#[derive(Debug, Clone)]
pub struct ApiResponse {
    /// Status.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

/// Stub.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Active.
    Active,
    /// Disconnected.
    Disconnected,
    /// All.
    All,
}

/// Stub.
#[derive(Debug, Clone)]
pub enum SessionsOp {
    /// List.
    List {
        /// State.
        state: SessionState,
        /// Limit.
        limit: usize,
        /// Cursor.
        cursor: Option<String>,
    },
    /// Get.
    Get {
        /// Id.
        client_id: String,
    },
    /// Disconnect.
    Disconnect {
        /// Id.
        client_id: String,
    },
    /// Delete.
    Delete {
        /// Id.
        client_id: String,
    },
}

/// Stub.
#[derive(Debug)]
pub enum Outcome {
    /// Done.
    Done(ApiResponse),
    /// Sessions.
    Sessions {
        /// Org.
        org: OrgNum,
        /// Op.
        op: SessionsOp,
    },
}

/// Stub.
#[derive(Debug, Default, Clone, Copy)]
pub struct Usage {
    /// Connections.
    pub connections: u64,
    /// In.
    pub messages_in: u64,
    /// Out.
    pub messages_out: u64,
    /// REST.
    pub rest_publishes: u64,
}

/// Stub.
pub trait LiveView {
    /// Usage.
    fn usage(&self, org: OrgNum) -> Usage;
}

/// Stub.
pub struct Api {
    snapshot: Arc<Snapshot>,
}

impl Api {
    /// Stub.
    pub fn new(_store: Store, _providers: super::jwt::Providers) -> Result<Api, StoreError> {
        Ok(Api {
            snapshot: Arc::new(Snapshot::empty_default()),
        })
    }
    /// Stub.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        Arc::clone(&self.snapshot)
    }
    /// Stub.
    pub fn take_changed(&mut self) -> Option<Arc<Snapshot>> {
        None
    }
    /// Stub.
    pub fn handle(&mut self, _req: &ApiRequest, _live: &dyn LiveView, _now_unix: u64) -> Outcome {
        Outcome::Done(Api::error(404, "not_found", "stub"))
    }
    /// Stub.
    pub fn error(status: u16, code: &str, detail: &str) -> ApiResponse {
        ApiResponse {
            status,
            headers: Vec::new(),
            body: format!("{{\"error\":\"{code}\",\"detail\":\"{detail}\"}}").into_bytes(),
        }
    }
}
