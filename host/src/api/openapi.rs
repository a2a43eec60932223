//! The OpenAPI document, generated from the handlers and types.

use axum::Json;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::handlers;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "Berth", description = "Bay's sandbox-session driver for Kubernetes. Errors are application/problem+json with a stable `code`."),
    paths(
        handlers::create_session, handlers::start_session, handlers::stop_session, handlers::destroy_session,
        handlers::session_status, handlers::session_logs,
        handlers::create_multi, handlers::start_multi, handlers::stop_multi, handlers::destroy_multi,
        handlers::create_volume, handlers::delete_volume, handlers::volume_exists,
        handlers::list_runtime_instances, handlers::destroy_runtime_instance,
        handlers::create_session_network, handlers::remove_session_network,
        handlers::render_pod, handlers::render_pvc, handlers::plugins, handlers::reload_plugins,
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
