//! The application message as it travels through the broker.
//!
//! One `Message` is built per inbound PUBLISH and shared (`Arc`) by every subscriber on every
//! shard, so a fan-out costs refcount increments, never payload copies.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;

use crate::mqtt::{PublishProperties, QoS, Str};

/// A published application message, immutable once routed.
#[derive(Debug, Clone)]
pub struct Message {
    /// Topic name (never an alias: inbound aliases are resolved before a message is built).
    pub topic: Str,
    /// Application payload, usually a zero-copy slice of the publisher's read buffer.
    pub payload: Bytes,
    /// QoS the publisher sent it with; a delivery uses the minimum of this and the granted QoS.
    pub qos: QoS,
    /// The RETAIN flag as published.
    pub retain: bool,
    /// v5 properties passed through to subscribers (alias and subscription ids cleared).
    pub properties: PublishProperties,
    /// When the v5 Message Expiry Interval runs out, if the publisher set one.
    pub expires_at: Option<Instant>,
    /// Client id of the publisher, for v5 No Local.
    pub publisher: Str,
    /// The publishing connection, so a subscriber falling behind can pause exactly that
    /// publisher.
    pub origin: Origin,
    /// The publishing user's namespace label, if it has one (the streams' `?ns=` filter).
    pub namespace: Option<Str>,
    /// The publisher's device identity (TLS client certificate CN), if it has one; streams'
    /// `?device=` matches it, or else the client id.
    pub device: Option<Str>,
}

/// The connection a message was published on, as the broker that drives the sessions names it.
/// Opaque to the protocol: a session stamps its connection's on what it publishes, and the
/// broker reads it back to pause that publisher. [`Origin::BROKER`] marks messages no
/// connection published (wills, `$SYS`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Origin(pub u64);

impl Origin {
    /// No connection: the broker itself published it.
    pub const BROKER: Origin = Origin(0);
}

/// The shared handle every queue and shard holds.
pub type SharedMessage = Arc<Message>;

impl Message {
    /// True once the message expiry interval has run out.
    pub fn is_expired(&self, now: Instant) -> bool {
        self.expires_at.is_some_and(|at| now >= at)
    }

    /// Remaining expiry in whole seconds (rounded up, at least 1) for the outbound property.
    pub fn remaining_expiry_secs(&self, now: Instant) -> Option<u32> {
        self.expires_at.map(|at| {
            let left = at.saturating_duration_since(now);
            let secs = left.as_secs() + u64::from(left.subsec_nanos() > 0);
            secs.clamp(1, u64::from(u32::MAX)) as u32
        })
    }
}
