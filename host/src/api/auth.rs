//! Bearer-token authentication. Tokens are compared in constant time, and
//! every configured token is compared, so timing reveals neither a token's
//! prefix nor which token matched.

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use super::{Problem, Shared};

pub fn token_matches(presented: &[u8], tokens: &[String]) -> bool {
    let mut ok = subtle::Choice::from(0u8);
    for t in tokens {
        ok |= presented.ct_eq(t.as_bytes());
    }
    ok.into()
}

pub async fn require_token(State(state): State<Shared>, req: Request, next: Next) -> Response {
    let presented = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token);
    match presented {
        Some(t) if token_matches(t.as_bytes(), &state.tokens) => next.run(req).await,
        Some(_) => unauthorized("the bearer token is not valid"),
        None => unauthorized("missing bearer token (Authorization: Bearer <token>)"),
    }
}

/// The token of an `Authorization: Bearer <token>` value. The scheme is
/// case-insensitive (RFC 7235 §2.1): `bearer` and `BEARER` are the same.
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn unauthorized(detail: &str) -> Response {
    let mut resp = Problem::new(StatusCode::UNAUTHORIZED, "unauthorized", detail).into_response();
    resp.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer realm=\"berth\""),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scheme_is_case_insensitive() {
        for v in ["Bearer abc", "bearer abc", "BEARER  abc ", "  bEaReR abc"] {
            assert_eq!(bearer_token(v), Some("abc"), "{v:?}");
        }
        for v in ["Basic abc", "Bearer", "Bearer ", "Bearerabc", "abc"] {
            assert_eq!(bearer_token(v), None, "{v:?}");
        }
    }

    #[test]
    fn matches_only_exact_tokens() {
        let tokens = vec![
            "aaaaaaaaaaaaaaaa".to_string(),
            "bbbbbbbbbbbbbbbb".to_string(),
        ];
        assert!(token_matches(b"bbbbbbbbbbbbbbbb", &tokens));
        assert!(!token_matches(b"bbbbbbbbbbbbbbb", &tokens));
        assert!(!token_matches(b"bbbbbbbbbbbbbbbbb", &tokens));
        assert!(!token_matches(b"", &tokens));
        assert!(!token_matches(b"aaaaaaaaaaaaaaaa", &[]));
    }
}
