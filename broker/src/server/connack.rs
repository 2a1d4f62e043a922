//! The properties of an MQTT 5 CONNACK: what the broker tells a client it accepted.

use bytestring::ByteString;

use crate::broker::Broker;
use crate::plugins::login::Grant;
use crate::protocol::{Connect, Properties};

/// What an MQTT 5 CONNACK tells the client of this broker (section 3.2.2.3): the id it
/// assigned, the session expiry when it holds the one asked for to
/// `mqtt.session_expiry`, and the limits it applies (topic aliases, packet size, keep
/// alive), and what the auth chain adds (the method of an enhanced authentication
/// exchange, its final data, plugins' user properties). `assigned` is the client id the
/// broker gave a client that sent none. `None` for 3.1.1, whose CONNACK has no properties.
pub(crate) fn connack_properties(
    broker: &Broker,
    connect: &Connect,
    assigned: Option<&ByteString>,
    grant: Grant,
) -> Option<Box<Properties>> {
    if !connect.protocol.is_v5() {
        return None;
    }
    let mqtt = &broker.config.mqtt;
    let asked = connect
        .properties
        .as_ref()
        .and_then(|p| p.session_expiry_interval)
        .unwrap_or(0);
    let held = mqtt
        .session_expiry
        .map(|cap| u32::try_from(cap.as_secs()).unwrap_or(u32::MAX))
        .filter(|cap| asked > *cap);
    let (keep_alive, imposed) = mqtt.keep_alive_for(connect.keep_alive, true);
    Some(Box::new(Properties {
        assigned_client_identifier: assigned.cloned(),
        server_keep_alive: imposed.then_some(keep_alive),
        session_expiry_interval: held,
        topic_alias_maximum: (mqtt.topic_alias_maximum > 0).then_some(mqtt.topic_alias_maximum),
        receive_maximum: (mqtt.receive_maximum < u16::MAX).then_some(mqtt.receive_maximum),
        maximum_packet_size: Some(u32::try_from(mqtt.max_packet_size).unwrap_or(u32::MAX)),
        authentication_method: grant.auth_method,
        authentication_data: grant.auth_data,
        // Plugins' user properties only when they keep the CONNACK within the client's
        // maximum packet size (MQTT-3.2.2-20); the rest of it is small.
        user_properties: if user_properties_len(&grant.user_properties) + 256
            <= client_max_packet(connect)
        {
            grant.user_properties
        } else {
            Vec::new()
        },
        ..Properties::default()
    }))
}

/// The largest packet the client accepts (its MQTT 5 Maximum Packet Size).
pub(crate) fn client_max_packet(connect: &Connect) -> usize {
    connect
        .properties
        .as_ref()
        .and_then(|p| p.maximum_packet_size)
        .map_or(usize::MAX, |m| m as usize)
}

/// Bytes user properties take on the wire.
fn user_properties_len(props: &[(ByteString, ByteString)]) -> usize {
    props.iter().map(|(k, v)| 5 + k.len() + v.len()).sum()
}
