//! The OpenAPI 3.1 description of the whole API, generated from the handlers'
//! annotations and served at `/openapi.json`.

use axum::Json;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::{assets, error, fs_upload, health, observe, originals, profiles, proxy, thumbs, uploads};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "MediaFlow", description = "Presigned uploads, originals and on-demand thumbnails in front of S3 or a local directory."),
    paths(
        health::health,
        health::ready,
        observe::metrics,
        originals::get_original,
        thumbs::get_thumb,
        thumbs::post_thumb,
        proxy::get_proxy,
        profiles::list_profiles,
        uploads::presign,
        uploads::presign_parts,
        uploads::list_parts,
        uploads::complete,
        uploads::abort,
        uploads::delete_asset,
        assets::get_asset,
        fs_upload::receive,
    ),
    components(schemas(error::ErrorBody, Binary)),
    modifiers(&Security),
    tags(
        (name = "uploads", description = "Presigned direct uploads and asset deletion"),
        (name = "media", description = "Originals, thumbnails, video posters and proxies, asset descriptions"),
        (name = "operations", description = "Health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// Bytes of a media body (the schema of binary content).
#[derive(utoipa::ToSchema)]
#[schema(value_type = String, format = Binary)]
#[allow(dead_code)]
pub struct Binary(Vec<u8>);

/// Declares the credentials mutating endpoints take.
struct Security;

impl Modify for Security {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        components
            .add_security_scheme("api_key", SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-API-Key"))));
        components.add_security_scheme(
            "upload_token",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::new("X-Upload-Token"))),
        );
    }
}

/// `GET /openapi.json`.
pub async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
