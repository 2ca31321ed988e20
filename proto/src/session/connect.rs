//! CONNECT validation and the negotiation of connection parameters (sans-IO).

use std::time::Instant;

use crate::mqtt::{
    ConnAck, ConnAckProperties, Connect, ProtocolVersion, QoS, ReasonCode, Str, Will,
};

use super::rules::Rules;
use super::Link;

/// Why a CONNECT is refused, with the v5 reason code (mapped to a v3 return code when needed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// v5 reason code.
    pub reason: ReasonCode,
    /// Human-readable reason string.
    pub text: &'static str,
}

/// The outcome of a valid CONNECT: the link parameters and what the CONNACK must announce.
#[derive(Debug)]
pub struct Negotiated {
    /// Client id (assigned when the client sent an empty one).
    pub client_id: Str,
    /// True when the client id was assigned by us.
    pub assigned: bool,
    /// Clean start / clean session.
    pub clean_start: bool,
    /// Session expiry interval in seconds after disconnect.
    pub expiry_interval_secs: u32,
    /// Effective keep-alive in seconds (0: none).
    pub keep_alive_secs: u16,
    /// Set when the client's keep-alive was capped (v5 Server Keep Alive).
    pub server_keep_alive: Option<u16>,
    /// Set when the session expiry was capped (v5 CONNACK property).
    pub capped_expiry: Option<u32>,
    /// Connection parameters for the session.
    pub link: Link,
}

/// Validates a CONNECT against the rules and negotiates the connection parameters.
pub fn negotiate(
    connect: &Connect,
    rules: &Rules,
    now: Instant,
    assign_id: impl FnOnce() -> String,
) -> Result<Negotiated, Refusal> {
    let v5 = connect.version == ProtocolVersion::V5;
    let mut client_id = connect.client_id.clone();
    let mut assigned = false;
    if client_id.is_empty() {
        // v3.1 requires 1..23 bytes; v3.1.1 allows empty only with clean session; v5 assigns one.
        if connect.version == ProtocolVersion::V31 || (!v5 && !connect.clean_start) {
            return Err(Refusal {
                reason: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
                text: "empty client id requires clean session",
            });
        }
        client_id = Str::from(assign_id());
        assigned = true;
    }
    if client_id.len() > rules.client_id_bytes_max {
        return Err(Refusal {
            reason: ReasonCode::CLIENT_IDENTIFIER_NOT_VALID,
            text: "client id too long",
        });
    }
    if let Some(will) = &connect.will {
        check_will(will, rules)?;
    }
    if connect.properties.authentication_method.is_some() {
        return Err(Refusal {
            reason: ReasonCode::BAD_AUTHENTICATION_METHOD,
            text: "enhanced authentication is not supported",
        });
    }

    let (expiry_interval_secs, capped_expiry) = if v5 {
        let asked = connect.properties.session_expiry_interval.unwrap_or(0);
        if asked > rules.session_expiry_max_secs {
            (
                rules.session_expiry_max_secs,
                Some(rules.session_expiry_max_secs),
            )
        } else {
            (asked, None)
        }
    } else if connect.clean_start {
        (0, None)
    } else {
        // A v3 persistent session has no expiry of its own; the operator's cap bounds it.
        (rules.session_expiry_max_secs, None)
    };

    let (keep_alive_secs, server_keep_alive) =
        if v5 && (connect.keep_alive > rules.keep_alive_max_secs || connect.keep_alive == 0) {
            // Keep-alive 0 means "none"; a cap still applies in v5 where we can tell the client.
            if connect.keep_alive == 0 {
                (0, None)
            } else {
                (rules.keep_alive_max_secs, Some(rules.keep_alive_max_secs))
            }
        } else {
            (connect.keep_alive, None)
        };

    let props = &connect.properties;
    let link = Link {
        version: connect.version,
        keep_alive_secs,
        last_rx: now,
        receive_maximum: if v5 {
            props.receive_maximum.unwrap_or(u16::MAX)
        } else {
            u16::MAX
        },
        packet_size_max: if v5 {
            props.maximum_packet_size.unwrap_or(u32::MAX)
        } else {
            u32::MAX
        },
        topic_alias_max: if v5 {
            props.topic_alias_maximum.unwrap_or(0)
        } else {
            0
        },
        aliases: None,
        will: connect.will.clone().map(Box::new),
        problem_information: props.request_problem_information.unwrap_or(1) == 1,
        access: super::Access::default(),
    };
    Ok(Negotiated {
        client_id,
        assigned,
        clean_start: connect.clean_start,
        expiry_interval_secs,
        keep_alive_secs,
        server_keep_alive,
        capped_expiry,
        link,
    })
}

fn check_will(will: &Will, rules: &Rules) -> Result<(), Refusal> {
    if ringmq_router::validate_topic_name(&will.topic, rules.topic_levels_max).is_err() {
        return Err(Refusal {
            reason: ReasonCode::TOPIC_NAME_INVALID,
            text: "invalid will topic",
        });
    }
    if will.qos > rules.maximum_qos {
        return Err(Refusal {
            reason: ReasonCode::QOS_NOT_SUPPORTED,
            text: "will QoS above the maximum QoS",
        });
    }
    if will.retain && !rules.retain_available {
        return Err(Refusal {
            reason: ReasonCode::RETAIN_NOT_SUPPORTED,
            text: "retained wills are not supported",
        });
    }
    Ok(())
}

/// Builds the CONNACK for an accepted connection.
pub fn connack_accepted(n: &Negotiated, session_present: bool, rules: &Rules) -> ConnAck {
    let mut properties = ConnAckProperties::default();
    if n.link.version == ProtocolVersion::V5 {
        properties.receive_maximum = Some(rules.inflight_max);
        properties.maximum_packet_size = Some(rules.packet_size_max);
        properties.topic_alias_maximum = Some(rules.topic_alias_max);
        properties.server_keep_alive = n.server_keep_alive;
        properties.session_expiry_interval = n.capped_expiry;
        if n.assigned {
            properties.assigned_client_identifier = Some(n.client_id.clone());
        }
        if rules.maximum_qos < QoS::ExactlyOnce {
            properties.maximum_qos = Some(rules.maximum_qos as u8);
        }
        if !rules.retain_available {
            properties.retain_available = Some(0);
        }
        if !rules.wildcard_subscriptions {
            properties.wildcard_subscription_available = Some(0);
        }
        if !rules.shared_subscriptions {
            properties.shared_subscription_available = Some(0);
        }
        if !rules.subscription_identifiers {
            properties.subscription_identifiers_available = Some(0);
        }
    }
    ConnAck {
        session_present,
        reason: ReasonCode::SUCCESS,
        properties,
    }
}

/// Builds the CONNACK for a refused connection in the client's protocol version.
pub fn connack_refused(version: ProtocolVersion, refusal: &Refusal) -> ConnAck {
    let mut properties = ConnAckProperties::default();
    let reason = if version == ProtocolVersion::V5 {
        properties.reason_string = Some(Str::from_static(refusal.text));
        refusal.reason
    } else {
        ReasonCode(refusal.reason.to_connack_v3())
    };
    ConnAck {
        session_present: false,
        reason,
        properties,
    }
}
