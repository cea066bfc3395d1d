//! The OpenAPI description against the real routes.

use std::collections::BTreeSet;

use crate::common::{Backend, spawn_secured};
use serde_json::Value;

/// Every route the router serves (method, path template).
const ROUTES: &[(&str, &str)] = &[
    ("get", "/health"),
    ("get", "/ready"),
    ("get", "/metrics"),
    ("get", "/originals/{profile}/{image_id}"),
    ("get", "/thumb/{profile}/{image_id}"),
    ("post", "/thumb/{profile}/{image_id}"),
    ("get", "/proxy/{profile}/{image_id}"),
    ("get", "/v1/profiles"),
    ("post", "/v1/uploads/presign"),
    ("post", "/v1/uploads/presign/parts"),
    ("get", "/v1/uploads/{object_key}/parts/{upload_id}"),
    ("post", "/v1/uploads/{object_key}/complete/{upload_id}"),
    ("delete", "/v1/uploads/{object_key}/abort/{upload_id}"),
    ("get", "/v1/assets/{profile}/{key_base}"),
    ("delete", "/v1/assets/{profile}/{key_base}"),
    ("put", "/_upload/{key}"),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_description_matches_the_routes() {
    let app = spawn_secured(Backend::Fs).await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, ops)| ops.as_object().unwrap().keys().map(move |m| (m.clone(), path.clone())))
        .filter(|(m, _)| ["get", "put", "post", "delete", "patch"].contains(&m.as_str()))
        .collect();
    let served: BTreeSet<(String, String)> = ROUTES.iter().map(|(m, p)| (m.to_string(), p.to_string())).collect();
    assert_eq!(documented, served, "documented operations = served routes");

    // Each documented operation reaches a handler: never the router's own 404/405.
    for (method, path) in &documented {
        let concrete = path
            .replace("{profile}", "avatar")
            .replace("{image_id}", "x1")
            .replace("{key_base}", "x1")
            .replace("{object_key}", "originals%2Favatars%2Fab%2Fx1")
            .replace("{upload_id}", "0123456789abcdef0123456789abcdef")
            .replace("{key}", "originals/avatars/ab/x1");
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let r = app.client.request(method.clone(), app.url(&concrete)).send().await.unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert_ne!(status, 405, "{method} {concrete}");
        assert!(
            !(status == 404 && body["message"] == "no such route"),
            "{method} {concrete} is documented but not routed"
        );
        // Every documented status of the operation is a number or a range.
        let op = &doc["paths"][path][method.as_str().to_lowercase()];
        assert!(op["responses"].as_object().is_some_and(|r| !r.is_empty()), "{method} {path} documents responses");
        // Error answers match the documented error schema.
        if status >= 400 && !body.is_null() {
            assert!(body["code"].is_string() && body["message"].is_string(), "{method} {concrete}: {body}");
            assert!(
                op["responses"].get(status.to_string()).is_some(),
                "{method} {concrete}: {status} is not documented"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thumbnails_document_boxes_fit_and_gravity() {
    let app = spawn_secured(Backend::Fs).await;
    let doc: Value = app.client.get(app.url("/openapi.json")).send().await.unwrap().json().await.unwrap();
    let params = doc["paths"]["/thumb/{profile}/{image_id}"]["get"]["parameters"].as_array().unwrap();
    let query: BTreeSet<&str> =
        params.iter().filter(|p| p["in"] == "query").filter_map(|p| p["name"].as_str()).collect();
    for name in ["width", "height", "fit", "gravity", "format", "quality", "shard", "sig"] {
        assert!(query.contains(name), "{name} is documented: {query:?}");
    }
    let gravity = params.iter().find(|p| p["name"] == "gravity").unwrap();
    assert!(gravity["description"].as_str().unwrap().contains("smart"), "{gravity}");
}
