//! The OpenAPI document, generated from the handlers and types, then
//! completed with what every route shares: bearer auth, the error answers
//! the extractor, auth layer and error mapping give, and their
//! `application/problem+json` content type.

use axum::Json;
use utoipa::openapi::path::{Operation, ParameterIn};
use utoipa::openapi::schema::{ObjectBuilder, Type};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{Content, Ref, RefOr, Response};
use utoipa::{Modify, OpenApi};

use super::handlers;
use super::problem::{PROBLEM_JSON, Problem, ProblemCode};
use crate::labels;

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

/// Adds the answers every route can give and makes every error answer a
/// problem document.
struct ErrorResponses;

fn problem(description: &str) -> RefOr<Response> {
    let mut r = Response::new(description);
    r.content.insert(
        PROBLEM_JSON.into(),
        Content::new(Some(Ref::from_schema_name("Problem"))),
    );
    RefOr::T(r)
}

fn complete(op: &mut Operation) {
    // Every path parameter is a Kubernetes object name.
    for p in op.parameters.iter_mut().flatten() {
        if p.parameter_in == ParameterIn::Path {
            p.schema = Some(RefOr::T(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some(labels::NAME_PATTERN))
                    .max_length(Some(253))
                    .into(),
            ));
        }
    }
    let body = op.request_body.is_some();
    let query = op
        .parameters
        .iter()
        .flatten()
        .any(|p| p.parameter_in == ParameterIn::Query);
    let mut add = |status: &str, description: &str| {
        op.responses
            .responses
            .entry(status.to_string())
            .or_insert_with(|| problem(description));
    };
    add("401", "unauthorized: no or a wrong bearer token");
    add(
        "404",
        "not_found: the session, volume or container it names does not exist",
    );
    add(
        "422",
        "invalid_request: a name, label or value Kubernetes would refuse",
    );
    add("500", "internal or plugin_failed");
    add(
        "502",
        "kubernetes_unavailable: the API server answered with an unexpected error",
    );
    add(
        "503",
        "kubernetes_unavailable: the API server cannot be reached",
    );
    if query {
        add(
            "400",
            "invalid_request: a query parameter of the wrong type",
        );
    }
    if body {
        add(
            "409",
            "conflict: the name is taken by another session, or is being deleted",
        );
        add(
            "400",
            "invalid_request: the body is not the JSON this route takes",
        );
        add(
            "413",
            "invalid_request: the body is larger than max_body_bytes",
        );
        add("415", "invalid_request: the body is not application/json");
    }
    // Error answers are problem documents, whatever the handler annotation
    // said.
    for (status, resp) in op.responses.responses.iter_mut() {
        if (status.starts_with('4') || status.starts_with('5'))
            && let RefOr::T(r) = resp
        {
            let description = r.description.clone();
            *resp = problem(&description);
        }
    }
}

impl Modify for ErrorResponses {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        for item in openapi.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.post,
                &mut item.put,
                &mut item.delete,
                &mut item.patch,
            ]
            .into_iter()
            .flatten()
            {
                complete(op);
            }
        }
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
    components(schemas(Problem, ProblemCode)),
    modifiers(&BearerAuth, &ErrorResponses)
)]
pub struct ApiDoc;

pub async fn serve() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
