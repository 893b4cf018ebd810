//! Builds binary firehose messages from the JSON-form frames in the
//! fixtures (`{"$bytes": …}` for bytes, `{"$link": …}` for CIDs), with
//! `serde_ipld_dagcbor` as the encoder: header object then body object; and
//! reads the recorded relay capture into `(seq, message)` pairs
//! ([`relay_frames`]).

#![allow(dead_code)]

use std::collections::BTreeMap;

use base64::Engine;
use ipld_core::ipld::Ipld;

pub fn to_ipld(v: &serde_json::Value) -> Ipld {
    use serde_json::Value as J;
    match v {
        J::Null => Ipld::Null,
        J::Bool(b) => Ipld::Bool(*b),
        J::Number(n) => Ipld::Integer(n.as_i64().expect("integers only").into()),
        J::String(s) => Ipld::String(s.clone()),
        J::Array(a) => Ipld::List(a.iter().map(to_ipld).collect()),
        J::Object(o) => {
            if o.len() == 1 {
                if let Some(J::String(l)) = o.get("$link") {
                    return Ipld::Link(cid::Cid::try_from(l.as_str()).expect("valid CID"));
                }
                if let Some(J::String(b)) = o.get("$bytes") {
                    let bytes = base64::engine::general_purpose::STANDARD_NO_PAD
                        .decode(b.trim_end_matches('='))
                        .expect("base64");
                    return Ipld::Bytes(bytes);
                }
            }
            Ipld::Map(
                o.iter()
                    .map(|(k, v)| (k.clone(), to_ipld(v)))
                    .collect::<BTreeMap<_, _>>(),
            )
        }
    }
}

/// One websocket message: DAG-CBOR header then DAG-CBOR body.
pub fn message(header: &serde_json::Value, body: &serde_json::Value) -> Vec<u8> {
    let mut out = serde_ipld_dagcbor::to_vec(&to_ipld(header)).unwrap();
    out.extend(serde_ipld_dagcbor::to_vec(&to_ipld(body)).unwrap());
    out
}

/// `(seq, message, drop flag)` for every message of a relay scenario file.
pub fn scenario(name: &str) -> Vec<(i64, Vec<u8>, bool)> {
    let path = crate::fixture(&format!("firehose/indigo-relay-scenarios/{name}"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    v["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let f = &m["frame"];
            (
                f["body"]["seq"].as_i64().unwrap(),
                message(&f["header"], &f["body"]),
                m["drop"].as_bool().unwrap_or(false),
            )
        })
        .collect()
}

/// The relay frames of the recording as `(seq, message bytes)`; the seq is
/// read with `serde_ipld_dagcbor`, independently of parity's decoder.
pub fn relay_frames() -> Vec<(i64, Vec<u8>)> {
    let bytes = std::fs::read(crate::fixture(crate::RELAY_FRAMES)).unwrap();
    let mut out = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let len = u32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
        let msg = &rest[4..4 + len];
        let mut de = serde_ipld_dagcbor::de::Deserializer::from_slice(msg);
        let _header: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
        let body: ipld_core::ipld::Ipld = serde::Deserialize::deserialize(&mut de).unwrap();
        let ipld_core::ipld::Ipld::Map(m) = body else {
            panic!("body is a map")
        };
        let Some(ipld_core::ipld::Ipld::Integer(seq)) = m.get("seq") else {
            panic!("seq")
        };
        out.push((*seq as i64, msg.to_vec()));
        rest = &rest[4 + len..];
    }
    out
}
