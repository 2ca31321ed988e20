//! The sessions API's questions to a shard and its answers, and the per-org counters a shard
//! reports: plain data the control thread and the shard core exchange.

/// Which sessions a list asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionState {
    /// Connected only.
    Active,
    /// Persistent sessions without a connection.
    Disconnected,
    /// Both.
    All,
}

/// A sessions request the broker answers from the shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionsOp {
    /// `GET /v1/sessions`.
    List {
        /// Filter.
        state: SessionState,
        /// Page size.
        limit: usize,
        /// Cursor of the previous page.
        cursor: Option<String>,
        /// Only sessions whose client id or username contains this text.
        search: Option<String>,
    },
    /// `GET /v1/sessions/{client_id}`.
    Get {
        /// Client id.
        client_id: String,
    },
    /// `POST /v1/sessions/{client_id}/disconnect`.
    Disconnect {
        /// Client id.
        client_id: String,
    },
    /// `DELETE /v1/sessions/{client_id}`.
    Delete {
        /// Client id.
        client_id: String,
    },
}

/// One shard's answer to a sessions query.
#[derive(Debug, Default)]
pub struct ShardAnswer {
    /// Sessions found (JSON objects as in docs/api.md), for list and get.
    pub sessions: Vec<SessionInfo>,
    /// True when the shard held the session the op named (disconnect, delete, get).
    pub found: bool,
}

/// One session as the sessions API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SessionInfo {
    /// Client id as the client sent it.
    pub client_id: String,
    /// MQTT username (without `@org`), if the client logged in.
    pub username: Option<String>,
    /// True while a connection is attached.
    pub connected: bool,
    /// Shard holding the session.
    pub shard: u16,
    /// Peer address of the connection (filled in by the IO driver, which holds the socket).
    pub address: Option<String>,
    /// The attached connection, for the driver to look the address up by.
    #[serde(skip)]
    pub conn: Option<crate::shard::ConnAt>,
    /// When the connection was made (unix seconds).
    pub connected_at: Option<u64>,
    /// Subscriptions (filters as the client sent them) and their granted QoS.
    pub subscriptions: Vec<SubscriptionInfo>,
    /// Messages queued for the session (QoS 1/2 waiting plus in flight).
    pub queued: usize,
}

/// One subscription of a session.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SubscriptionInfo {
    /// Filter as the client sent it.
    pub filter: String,
    /// Granted QoS.
    pub qos: u8,
}

/// Per-org live counters one shard reports.
#[derive(Debug, Default, Clone, Copy)]
pub struct OrgCounters {
    /// Connected clients.
    pub connections: u64,
    /// Messages received from clients.
    pub messages_in: u64,
    /// Messages delivered to clients.
    pub messages_out: u64,
    /// REST publishes accepted.
    pub rest_publishes: u64,
}
