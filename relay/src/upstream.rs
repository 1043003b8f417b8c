//! The upstream: the app behind the relay, asked for the reply of a message the database
//! answered with `"upstream": true` (reply.rs). It gets the exact request body bytes and, of the
//! request's headers, only the credential the verifier read and `x-request-id`, so it can check
//! Vapi's credential itself and its logs line up with the relay's. One POST, never retried,
//! bounded by `--upstream-timeout`; whatever it answers in time comes back verbatim.
//!
//! The client is reqwest (rustls, no default features): already this crate's test client, it
//! pools connections, and with rustls an https upstream needs no OpenSSL on the build host.
//! hyper-util's client would do the same with TLS, pooling and timeouts wired by hand. One
//! client per process ([`Upstream`] lives in `AppState`), so connections are reused.

use std::fmt;
use std::str::FromStr;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, StatusCode};
use reqwest::redirect::Policy;
use reqwest::Url;

use crate::app::REQUEST_ID;

/// `--upstream-url`: an http or https URL without credentials of its own (the app checks
/// Vapi's). `Debug` leaves out the query string, which may hold a token.
#[derive(Clone, PartialEq, Eq)]
pub struct UpstreamUrl(Url);

impl FromStr for UpstreamUrl {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let url = Url::parse(s.trim()).map_err(|e| format!("invalid URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("the scheme must be http or https, not {:?}", url.scheme()));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("the URL has no host".into());
        }
        if !url.username().is_empty() || url.password().is_some() {
            return Err("the URL must not carry credentials: the upstream gets Vapi's".into());
        }
        Ok(Self(url))
    }
}

impl fmt::Debug for UpstreamUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let url = &self.0;
        let host = url.host_str().unwrap_or_default();
        let port = url.port().map(|p| format!(":{p}")).unwrap_or_default();
        let query = if url.query().is_some() { "?<redacted>" } else { "" };
        write!(f, "UpstreamUrl({}://{host}{port}{}{query})", url.scheme(), url.path())
    }
}

/// The upstream's answer, as it came.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamAnswer {
    pub status: StatusCode,
    pub content_type: Option<HeaderValue>,
    pub body: Bytes,
}

/// Why the upstream gave no answer; the relay then sends the database's reply.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no answer within {0:?}")]
    Timeout(Duration),
    #[error("could not connect: {0}")]
    Connect(reqwest::Error),
    #[error("answer larger than {0} bytes")]
    TooLarge(usize),
    #[error("request failed: {0}")]
    Failed(reqwest::Error),
}

impl UpstreamError {
    /// The `upstream_error` span field.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout(_) => "timeout",
            Self::Connect(_) => "connect",
            Self::TooLarge(_) => "too_large",
            Self::Failed(_) => "failed",
        }
    }
}

impl From<reqwest::Error> for UpstreamError {
    fn from(err: reqwest::Error) -> Self {
        // the URL may hold a token in its query: never in a log line
        let err = err.without_url();
        if err.is_connect() {
            Self::Connect(err)
        } else {
            Self::Failed(err)
        }
    }
}

/// The upstream and the one client that talks to it.
#[derive(Debug)]
pub struct Upstream {
    client: reqwest::Client,
    url: Url,
    timeout: Duration,
    answer_limit: usize,
    /// The headers a credential can be in (`Verifier::credential_headers`).
    credential_headers: Vec<HeaderName>,
}

impl Upstream {
    /// `timeout` bounds the whole exchange (connect, send, the answer's last byte); an answer
    /// longer than `answer_limit` bytes counts as none.
    pub fn new(
        url: &UpstreamUrl,
        timeout: Duration,
        answer_limit: usize,
        credential_headers: Vec<HeaderName>,
    ) -> Result<Self, reqwest::Error> {
        let client = reqwest::Client::builder()
            // the upstream is the operator's app, reached directly: proxy variables of the
            // environment would send Vapi's credential through a third party
            .no_proxy()
            // a redirect is an answer, passed back as it is
            .redirect(Policy::none())
            // never sent twice (reqwest would resend on some protocol refusals). hyper's pool
            // still resends a request that never left, on a reused connection found closed.
            .retry(reqwest::retry::never())
            .connect_timeout(timeout)
            .build()?;
        Ok(Self { client, url: url.0.clone(), timeout, answer_limit, credential_headers })
    }

    /// POSTs `body` with the [`forwarded_headers`] of `request`; the answer, or why there is
    /// none. Never retried: the message may have effects in the app, and the deadline is short.
    pub async fn forward(&self, request: &HeaderMap, body: Bytes) -> Result<UpstreamAnswer, UpstreamError> {
        let exchange = async {
            let mut response = self
                .client
                .post(self.url.clone())
                .headers(forwarded_headers(request, &self.credential_headers))
                .body(body)
                .send()
                .await?;
            let status = response.status();
            let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
            if response.content_length().is_some_and(|n| n > self.answer_limit as u64) {
                return Err(UpstreamError::TooLarge(self.answer_limit));
            }
            let mut answer = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if chunk.len() > self.answer_limit - answer.len() {
                    return Err(UpstreamError::TooLarge(self.answer_limit));
                }
                answer.extend_from_slice(&chunk);
            }
            Ok(UpstreamAnswer { status, content_type, body: answer.into() })
        };
        tokio::time::timeout(self.timeout, exchange).await.unwrap_or(Err(UpstreamError::Timeout(self.timeout)))
    }
}

/// What the upstream gets of the request's headers: the credential headers the verifier reads
/// (`credential_headers`), `x-request-id`, and `Content-Type: application/json`. Nothing else.
pub fn forwarded_headers(request: &HeaderMap, credential_headers: &[HeaderName]) -> HeaderMap {
    let mut forwarded = HeaderMap::new();
    let request_id = HeaderName::from_static(REQUEST_ID);
    for name in credential_headers.iter().chain([&request_id]) {
        for value in request.get_all(name) {
            forwarded.append(name.clone(), value.clone());
        }
    }
    forwarded.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    forwarded
}

/// Milliseconds of `since`, for the span.
pub fn millis(since: Instant) -> u64 {
    u64::try_from(since.elapsed().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verify::{SECRET_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER};

    fn credential_headers() -> Vec<HeaderName> {
        [SECRET_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, "authorization"].map(HeaderName::from_static).to_vec()
    }

    #[test]
    fn only_the_credential_and_the_request_id_are_forwarded() {
        let mut request = HeaderMap::new();
        for (name, value) in [
            (SECRET_HEADER, "s3cret"),
            ("authorization", "Bearer tok"),
            (SIGNATURE_HEADER, "abcd"),
            (TIMESTAMP_HEADER, "1732540000"),
            (REQUEST_ID, "req-1"),
            ("content-type", "text/plain"),
            ("cookie", "session=1"),
            ("user-agent", "Vapi"),
            ("x-forwarded-for", "10.0.0.1"),
            ("host", "relay.example"),
        ] {
            request.insert(name, value.parse().unwrap());
        }
        let forwarded = forwarded_headers(&request, &credential_headers());
        let mut names: Vec<&str> = forwarded.keys().map(|k| k.as_str()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            ["authorization", "content-type", "x-request-id", "x-signature", "x-timestamp", "x-vapi-secret"]
        );
        assert_eq!(forwarded[header::CONTENT_TYPE], "application/json");
        assert_eq!(forwarded[SECRET_HEADER], "s3cret");
        assert_eq!(forwarded[REQUEST_ID], "req-1");
        assert_eq!(forwarded_headers(&HeaderMap::new(), &credential_headers()).len(), 1, "only the content type");
    }

    #[test]
    fn upstream_urls_are_http_without_credentials_and_their_query_is_not_shown() {
        for good in ["http://127.0.0.1:9000/vapi", "https://app.example/hooks/vapi?token=abc"] {
            assert!(good.parse::<UpstreamUrl>().is_ok(), "{good}");
        }
        for bad in [
            "ftp://app.example/",
            "app.example/vapi",
            "https://user:pw@app.example/",
            "https://token@app.example/",
            "http://",
            "",
        ] {
            assert!(bad.parse::<UpstreamUrl>().is_err(), "{bad}");
        }
        let url: UpstreamUrl = "https://app.example:8443/hooks/vapi?token=abc".parse().unwrap();
        assert_eq!(format!("{url:?}"), "UpstreamUrl(https://app.example:8443/hooks/vapi?<redacted>)");
    }
}
