//! A thin client for the v1 HTTP API: base URL, bearer token, a fresh
//! `X-Request-Id` per request, and decoding of the api's error body
//! `{"error": {"code", "message"}}` into [`CtlError::Api`].

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderValue, LOCATION};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::CtlError;

const REQUEST_ID: &str = "x-request-id";

/// The api's base URL and the caller's token.
pub struct Client {
    http: reqwest::Client,
    base: Url,
    token: Option<String>,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base", &self.base.as_str())
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// A response of any status, read whole.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    /// The request id the api answered with (or the one we sent).
    pub request_id: Option<String>,
    pub location: Option<String>,
    pub text: String,
    /// `METHOD /path`, for messages.
    pub what: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}

impl Reply {
    /// Decodes a successful body into `T`.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, CtlError> {
        serde_json::from_str(&self.text).map_err(|e| {
            self.unexpected(format!(
                "cannot decode the body ({e}): {}",
                snippet(&self.text)
            ))
        })
    }

    /// Whether the body is the api's error shape (rather than a resource).
    pub fn api_error(&self) -> Option<CtlError> {
        let body: ErrorBody = serde_json::from_str(&self.text).ok()?;
        Some(CtlError::Api {
            status: self.status.as_u16(),
            code: body.error.code,
            message: body.error.message,
            request_id: self.request_id.clone(),
        })
    }

    /// The error for a non-success reply: the api's own, or a description.
    pub fn error(&self) -> CtlError {
        self.api_error().unwrap_or_else(|| {
            let detail = if self.text.trim().is_empty() {
                "empty body".to_owned()
            } else {
                snippet(&self.text)
            };
            self.unexpected(detail)
        })
    }

    pub fn unexpected(&self, detail: String) -> CtlError {
        CtlError::Unexpected {
            status: self.status.as_u16(),
            what: self.what.clone(),
            detail,
            request_id: self.request_id.clone(),
        }
    }
}

/// The first 300 characters of a body, on one line.
fn snippet(text: &str) -> String {
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &one_line[..i]),
        None => one_line,
    }
}

impl Client {
    /// A client for `base`; `token` is sent as a bearer token when present.
    pub fn new(base: Url, token: Option<String>) -> Result<Self, CtlError> {
        giftcard_shared::tls::install_crypto_provider();
        if !matches!(base.scheme(), "http" | "https") || base.cannot_be_a_base() {
            return Err(CtlError::Usage(format!(
                "--api-url / GIFTCARD_API_URL must be an http(s) URL such as http://127.0.0.1:8080, got {:?}",
                base.as_str()
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(Duration::from_secs(120))
            .user_agent(concat!("giftcardctl/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|source| CtlError::Transport {
                what: "setting up the HTTP client".to_owned(),
                source,
            })?;
        Ok(Self { http, base, token })
    }

    /// The base URL joined with `segments`, each percent-encoded as one
    /// path segment (so a user id or code containing `/` stays one segment).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        url.set_fragment(None);
        url.path_segments_mut()
            .expect("checked in Client::new: the base URL can be a base")
            .pop_if_empty()
            .extend(segments);
        url
    }

    /// A request with the token and a fresh request id.
    pub fn request(&self, method: Method, url: Url) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, url)
            .header(REQUEST_ID, Uuid::new_v4().to_string());
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        req
    }

    /// Sends the request and reads the whole reply, whatever its status.
    pub async fn send(&self, req: RequestBuilder) -> Result<Reply, CtlError> {
        let req = req.build().map_err(|source| CtlError::Transport {
            what: "building the request".to_owned(),
            source,
        })?;
        let what = format!("{} {}", req.method(), req.url().path());
        let sent_id = req.headers().get(REQUEST_ID).and_then(header_string);
        let transport = |source| CtlError::Transport {
            what: what.clone(),
            source,
        };
        let resp = self.http.execute(req).await.map_err(transport)?;
        let status = resp.status();
        let request_id = resp
            .headers()
            .get(REQUEST_ID)
            .and_then(header_string)
            .or(sent_id);
        let location = resp.headers().get(LOCATION).and_then(header_string);
        let text = resp.text().await.map_err(transport)?;
        Ok(Reply {
            status,
            request_id,
            location,
            text,
            what,
        })
    }

    /// Sends the request; a non-2xx reply becomes an error.
    pub async fn call(&self, req: RequestBuilder) -> Result<Reply, CtlError> {
        let reply = self.send(req).await?;
        if reply.status.is_success() {
            Ok(reply)
        } else {
            Err(reply.error())
        }
    }

    pub async fn get(&self, segments: &[&str]) -> Result<Reply, CtlError> {
        self.call(self.request(Method::GET, self.url(segments)))
            .await
    }

    pub async fn delete(&self, segments: &[&str]) -> Result<Reply, CtlError> {
        self.call(self.request(Method::DELETE, self.url(segments)))
            .await
    }

    pub async fn post_json<B: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Reply, CtlError> {
        self.call(self.request(Method::POST, self.url(segments)).json(body))
            .await
    }

    pub async fn patch_json<B: Serialize + ?Sized>(
        &self,
        segments: &[&str],
        body: &B,
    ) -> Result<Reply, CtlError> {
        self.call(self.request(Method::PATCH, self.url(segments)).json(body))
            .await
    }
}

fn header_string(v: &HeaderValue) -> Option<String> {
    v.to_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(base: &str) -> Client {
        Client::new(base.parse().unwrap(), Some("secret-token".into())).unwrap()
    }

    #[test]
    fn path_segments_are_encoded_one_by_one() {
        let c = client("http://127.0.0.1:8080");
        assert_eq!(
            c.url(&["v1", "admin", "wallets", "a/b c", "credits"])
                .as_str(),
            "http://127.0.0.1:8080/v1/admin/wallets/a%2Fb%20c/credits"
        );
        let c = client("http://h/prefix/");
        assert_eq!(c.url(&["readyz"]).as_str(), "http://h/prefix/readyz");
    }

    #[test]
    fn a_url_that_is_not_http_is_refused() {
        assert!(Client::new("localhost:8080".parse().unwrap(), None).is_err());
    }

    #[test]
    fn debug_output_does_not_show_the_token() {
        assert!(!format!("{:?}", client("http://h")).contains("secret-token"));
    }

    #[test]
    fn error_bodies_become_api_errors() {
        let reply = Reply {
            status: StatusCode::CONFLICT,
            request_id: Some("r1".into()),
            location: None,
            text: r#"{"error":{"code":"INSUFFICIENT_FUNDS","message":"no money"}}"#.into(),
            what: "POST /v1/purchases".into(),
        };
        let msg = reply.error().to_string();
        assert_eq!(msg, "HTTP 409 INSUFFICIENT_FUNDS: no money (request id r1)");
    }
}
