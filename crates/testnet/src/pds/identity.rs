//! The identity peers: the PLC directory (`GET /<did>`), a did:web host
//! (`GET /.well-known/did.json`) and a handle host
//! (`GET /.well-known/atproto-did`, keyed by the `Host` header).
//!
//! Semantics modelled on plc.directory: a known DID answers its document as
//! `application/did+ld+json`; an unknown one 404 `{"message":"DID not
//! registered: <did>"}`; a tombstoned one 410 `{"message":"DID not
//! available: <did>"}` (the body is did-method-plc's `ServerError`; the 410
//! is what production answers, per indigo's resolver). Only `did:plc:` DIDs
//! are served there. Generated documents follow the current-format fixture
//! `identity/did-docs/indigo_did_plc_doc.json`, with the DID's test signing
//! key (`car_out::multikey`, what getRepo signs with) as its `Multikey`, the DID, `alsoKnownAs: ["at://<handle>"]`
//! and the `#atproto_pds` endpoint set to this server.

#![allow(dead_code)]

use std::sync::OnceLock;

use serde_json::{Value, json};

use super::serve::Reply;
use super::state::{Doc, State};

fn template() -> &'static Value {
    static T: OnceLock<Value> = OnceLock::new();
    T.get_or_init(|| {
        let path = crate::fixture("identity/did-docs/indigo_did_plc_doc.json");
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_str(&text).expect("DID doc fixture is JSON")
    })
}

/// A current-format DID document for `did` hosted at `pds_url`.
pub(super) fn generated(did: &str, handle: Option<&str>, pds_url: &str) -> Value {
    let mut doc = template().clone();
    doc["id"] = json!(did);
    doc["alsoKnownAs"] = json!(
        handle
            .map(|h| format!("at://{h}"))
            .into_iter()
            .collect::<Vec<_>>()
    );
    let vm = &mut doc["verificationMethod"][0];
    vm["id"] = json!(format!("{did}#atproto"));
    vm["controller"] = json!(did);
    vm["publicKeyMultibase"] = json!(super::car_out::multikey(did));
    assert!(rewrite_pds_endpoint(&mut doc, pds_url));
    doc
}

/// Points the document's `#atproto_pds` service at `url`; false if it has
/// none.
pub(super) fn rewrite_pds_endpoint(doc: &mut Value, url: &str) -> bool {
    let Some(services) = doc.get_mut("service").and_then(Value::as_array_mut) else {
        return false;
    };
    let Some(pds) = services.iter_mut().find(|s| {
        s.get("id")
            .and_then(Value::as_str)
            .is_some_and(|id| id.ends_with("#atproto_pds"))
    }) else {
        return false;
    };
    pds["serviceEndpoint"] = json!(url);
    true
}

/// The first `at://` entry of `alsoKnownAs`, lower-cased.
pub(super) fn handle_in(doc: &Value) -> Option<String> {
    doc.get("alsoKnownAs")?
        .as_array()?
        .iter()
        .filter_map(Value::as_str)
        .find_map(|a| a.strip_prefix("at://"))
        .map(str::to_ascii_lowercase)
}

/// The document served for `did`, or the status that replaces it.
pub(super) fn document(s: &State, did: &str) -> Result<Value, u16> {
    let Some(id) = s.identities.get(did) else {
        return Err(404);
    };
    match &id.doc {
        Doc::Generated => Ok(generated(did, id.handle.as_deref(), &s.url)),
        Doc::Json(v) => Ok(v.clone()),
        Doc::Absent => Err(404),
        Doc::Tombstoned => Err(410),
    }
}

pub(super) fn plc(s: &State, did: &str) -> Reply {
    let found = if did.starts_with("did:plc:") {
        document(s, did)
    } else {
        Err(404)
    };
    match found {
        Ok(doc) => Reply {
            content_type: "application/did+ld+json; charset=utf-8",
            ..Reply::json(200, doc.to_string())
        },
        Err(410) => Reply::json(
            410,
            json!({ "message": format!("DID not available: {did}") }).to_string(),
        ),
        Err(status) => Reply::json(
            status,
            json!({ "message": format!("DID not registered: {did}") }).to_string(),
        ),
    }
}

pub(super) fn did_web(s: &State) -> Reply {
    match s.did_web.as_deref().map(|did| document(s, did)) {
        Some(Ok(doc)) => Reply::json(200, doc.to_string()),
        _ => Reply::text(404, "Not Found"),
    }
}

pub(super) fn atproto_did(s: &State, host: Option<&str>) -> Reply {
    let handle = host.map(|h| {
        let h = match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => h,
        };
        h.to_ascii_lowercase()
    });
    match handle.and_then(|h| s.well_known.get(&h)) {
        Some(did) => Reply::text(200, did),
        None => Reply::text(404, "User not found"),
    }
}
