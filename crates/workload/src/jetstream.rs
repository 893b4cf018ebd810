//! Renders a generated event as a Jetstream v1 message (the JSON text
//! frame `/subscribe` sends), with `time_us` as the cursor and the
//! upstream `seq` of identity and account events = index + 1.

use serde_json::json;

use crate::event::{GenEvent, Kind, rfc3339};

pub fn message(e: &GenEvent) -> String {
    let v = match &e.kind {
        Kind::Commit {
            op,
            collection,
            rkey,
            rev,
            record,
            cid,
            ..
        } => {
            let mut c = json!({
                "rev": rev,
                "operation": op.as_str(),
                "collection": collection,
                "rkey": rkey,
            });
            if let (Some(r), Some(cid)) = (record, cid) {
                c["record"] = r.clone();
                c["cid"] = cid.clone().into();
            }
            json!({"did": e.did, "time_us": e.time_us, "kind": "commit", "commit": c})
        }
        Kind::Identity { handle } => json!({
            "did": e.did, "time_us": e.time_us, "kind": "identity",
            "identity": {"did": e.did, "handle": handle, "seq": e.index + 1, "time": rfc3339(e.time_us)},
        }),
        Kind::Account { active, status } => {
            let mut a = json!({"active": active, "did": e.did, "seq": e.index + 1, "time": rfc3339(e.time_us)});
            if let Some(s) = status {
                a["status"] = s.clone().into();
            }
            json!({"did": e.did, "time_us": e.time_us, "kind": "account", "account": a})
        }
    };
    v.to_string()
}
