//! axum's extractors with their rejections turned into [`ApiError`], so a bad
//! path, query or JSON body gets the same `{code, message, hint}` answer as
//! every other error.

use axum::extract::{FromRequest, FromRequestParts};

use super::error::ApiError;

/// `Path<T>` answering [`ApiError`] on rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// `Query<T>` answering [`ApiError`] on rejection.
#[derive(Debug, FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// `Json<T>` answering [`ApiError`] on rejection.
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// `?shard=` on asset URLs: the custom shard an original was stored under.
#[derive(Debug, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ShardQuery {
    /// A custom shard (`[a-z0-9_-]{1,64}`; ignored by profiles without sharding).
    pub shard: Option<String>,
}
