//! The web dashboard and the OpenAPI document: static files embedded in the
//! binary (no CDN, no fonts fetched), served with a strict content policy.

use super::error::ApiError;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const FAVICON_SVG: &str = include_str!("assets/favicon.svg");
const OPENAPI_JSON: &str = include_str!("assets/openapi.json");

/// Only this origin's scripts, styles and API; no inline script, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
        .into_response()
}

/// `GET /`: the dashboard page.
pub async fn index() -> Response {
    let mut resp = file("text/html; charset=utf-8", INDEX_HTML);
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        header::HeaderValue::from_static(CSP),
    );
    resp
}

/// `GET /assets/{file}`: the dashboard's script, style sheet and icon.
pub async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "app.js" => Ok(file("text/javascript; charset=utf-8", APP_JS)),
        "app.css" => Ok(file("text/css; charset=utf-8", APP_CSS)),
        "favicon.svg" => Ok(file("image/svg+xml", FAVICON_SVG)),
        _ => Err(ApiError::not_found(format!("no asset {name:?}"))),
    }
}

/// `GET /api/v1/openapi.json`: the OpenAPI 3 description of every route.
pub async fn openapi() -> Response {
    file("application/json", OPENAPI_JSON)
}
