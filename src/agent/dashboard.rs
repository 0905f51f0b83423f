//! `GET /`: the fleet dashboard, built into the binary (no CDN: it works offline).
//! The page, its script and its style hold no data and need no token; the script asks
//! for the token (a login form, or the URL fragment `#token=...` that the browser
//! never sends), keeps it in session storage and calls `GET /v1/sessions` with it.

use super::Resp;
use http_body_util::{BodyExt, Full};
use hyper::{Response, StatusCode};

const INDEX: &str = include_str!("dashboard/index.html");
const SCRIPT: &str = include_str!("dashboard/dashboard.js");
const STYLE: &str = include_str!("dashboard/dashboard.css");

/// What the page may do: its own script and style, calls to this agent, nothing else
/// (no inline script, no other origin, no framing).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self'; form-action 'none'; frame-ancestors 'none'; \
    base-uri 'none'";

/// The dashboard's file at `path`, if it is one.
pub fn page(path: &str) -> Option<Resp> {
    let (content_type, body) = match path {
        "/" | "/index.html" => ("text/html; charset=utf-8", INDEX),
        "/dashboard.js" => ("text/javascript; charset=utf-8", SCRIPT),
        "/dashboard.css" => ("text/css; charset=utf-8", STYLE),
        _ => return None,
    };
    Some(
        Response::builder()
            .status(StatusCode::OK)
            .header("content-type", content_type)
            .header("content-security-policy", POLICY)
            .header("referrer-policy", "no-referrer")
            .header("x-content-type-options", "nosniff")
            .header("cache-control", "no-store")
            .body(Full::new(body.into()).boxed())
            .expect("static response parts"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_loads_nothing_from_elsewhere_and_writes_no_html() {
        for file in [INDEX, SCRIPT, STYLE] {
            assert!(!file.contains("http://") && !file.contains("https://"));
        }
        // Client text goes in as text only.
        assert!(!SCRIPT.contains("innerHTML") && !SCRIPT.contains("insertAdjacentHTML"));
        assert!(page("/").is_some() && page("/v1/sessions").is_none());
    }
}
