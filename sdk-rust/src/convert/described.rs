//! What `Describe` carries besides names: the roles a plugin declares, and its configuration,
//! a protobuf `Struct` the SDK reads as JSON (and the testing harness writes from JSON).

use prost_types::value::Kind;
use tandem_proto::v1 as pb;

use crate::types::Role;

impl From<Role> for pb::Role {
    fn from(r: Role) -> Self {
        match r {
            Role::Authenticate => pb::Role::Authenticate,
            Role::TopicFilter => pb::Role::TopicFilter,
        }
    }
}

/// The broker's `config:` section as JSON. Integral numbers become JSON integers, so that they
/// deserialize into integer fields (protobuf's `Struct` only knows doubles).
pub(crate) fn struct_to_json(s: prost_types::Struct) -> serde_json::Value {
    serde_json::Value::Object(
        s.fields
            .into_iter()
            .map(|(k, v)| (k, value_to_json(v)))
            .collect(),
    )
}

fn value_to_json(v: prost_types::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v.kind {
        None | Some(Kind::NullValue(_)) => J::Null,
        Some(Kind::BoolValue(b)) => J::Bool(b),
        Some(Kind::StringValue(s)) => J::String(s),
        Some(Kind::NumberValue(n)) => number_to_json(n),
        Some(Kind::StructValue(s)) => struct_to_json(s),
        Some(Kind::ListValue(l)) => J::Array(l.values.into_iter().map(value_to_json).collect()),
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
fn number_to_json(n: f64) -> serde_json::Value {
    // 2^53: beyond it doubles are not exact integers anyway.
    const EXACT: f64 = 9_007_199_254_740_992.0;
    if n.fract() == 0.0 && n.abs() <= EXACT {
        // In range and integral, so the cast is exact.
        serde_json::Value::from(n as i64)
    } else {
        serde_json::Number::from_f64(n).map_or(serde_json::Value::Null, serde_json::Value::Number)
    }
}

/// JSON to a protobuf `Struct` (the testing harness's way of pushing a config). A non-object
/// becomes an empty struct.
pub(crate) fn json_to_struct(v: serde_json::Value) -> prost_types::Struct {
    match json_to_value(v).kind {
        Some(Kind::StructValue(s)) => s,
        _ => prost_types::Struct::default(),
    }
}

fn json_to_value(v: serde_json::Value) -> prost_types::Value {
    use serde_json::Value as J;
    let kind = match v {
        J::Null => Kind::NullValue(0),
        J::Bool(b) => Kind::BoolValue(b),
        J::Number(n) => Kind::NumberValue(n.as_f64().unwrap_or(0.0)),
        J::String(s) => Kind::StringValue(s),
        J::Array(a) => Kind::ListValue(prost_types::ListValue {
            values: a.into_iter().map(json_to_value).collect(),
        }),
        J::Object(o) => Kind::StructValue(prost_types::Struct {
            fields: o.into_iter().map(|(k, v)| (k, json_to_value(v))).collect(),
        }),
    };
    prost_types::Value { kind: Some(kind) }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn config_numbers_become_integers_when_integral() {
        let config = json!({"port": 8080, "ratio": 0.5, "users": [{"name": "a"}], "off": null});
        let back = struct_to_json(json_to_struct(config.clone()));
        assert_eq!(back, config);
        assert!(back["port"].is_u64());
        assert_eq!(
            json_to_struct(json!([1, 2])),
            prost_types::Struct::default()
        );
    }
}
