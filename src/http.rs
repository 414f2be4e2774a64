//! The HTTP client every adapter talks through: rustls, timeouts, gzip, keep-alive, a per-account
//! request rate limit, a clear User-Agent, the classification of every failure, and redaction.
//!
//! Contract: [`HttpClient::send`] returns the body of a 2xx response, or a [`MarketplaceError`] that
//! says whether the failure is transient (connect, timeout, 5xx, 429 — with `Retry-After` when the API
//! sent one, at most [`MAX_RETRY_AFTER`]), permanent (any other 4xx, and any 3xx) or needs an operator
//! (401/403). Every text it puts into an error has the account's secrets replaced by `***`, and URLs in
//! errors carry no query string values that are secrets. Request bodies are never copied into errors
//! or logs: some APIs (C2C) carry credentials in them. Retrying is the caller's decision; this module
//! only classifies.
//!
//! Redirects are never followed. None of the marketplace APIs documents one, and every credential
//! would go along to wherever it points: reqwest strips only `Authorization` and cookies on a hop to
//! another host, so an i1 token in a custom header, a C2C body holding `ApiKey`/`ApiPassword` (re-sent
//! on 307/308) and allesgo's `access_token` in the query string would all leave with the request.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::TryStreamExt;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use reqwest::header::{HeaderMap, LOCATION, RETRY_AFTER};
use reqwest::{RequestBuilder, StatusCode};
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::config::MIN_SECRET_LEN;
use crate::marketplace::MarketplaceError;
use crate::ops::metrics::{self, ApiLabels};

/// How long an excerpt of a response body kept in an error may be.
const EXCERPT_CHARS: usize = 500;

/// The longest `Retry-After` honoured: a longer one, or an HTTP date further away, counts as this.
///
/// Rate limits and maintenance answers ask for seconds to minutes; a longer wait more likely comes from
/// a misconfigured or hostile server, and honouring it would keep the account's poll run asleep (no
/// other run of the account starts meanwhile) and push its queued transitions back as far as it says.
/// Fifteen minutes is within the outbox's default `max_backoff` (30 minutes), so `Retry-After` never
/// makes a transition wait longer than the backoff itself may. When the API does need longer, asking
/// again costs one request, answered with a fresh `Retry-After`. The bound also keeps every delay
/// computed from the header far from overflowing a timestamp or an interval downstream.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(15 * 60);

/// Settings of one account's client.
#[derive(Debug, Clone)]
pub struct HttpSettings {
    pub timeout: Duration,
    pub requests_per_second: NonZeroU32,
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: StatusCode,
    pub content_type: Option<String>,
    pub body: Bytes,
    pub elapsed: Duration,
}

/// A successful response whose body is still to be read.
#[derive(Debug)]
pub struct HttpStream {
    pub content_type: Option<String>,
    response: reqwest::Response,
}

impl HttpStream {
    /// The first `limit` bytes of the body (all of it when shorter; what arrived when reading
    /// fails), to record an answer that is not what was asked for.
    pub async fn first_bytes(mut self, limit: usize) -> Vec<u8> {
        let mut start = Vec::new();
        while start.len() < limit
            && let Ok(Some(chunk)) = self.response.chunk().await
        {
            start.extend_from_slice(&chunk);
        }
        start.truncate(limit);
        start
    }

    /// The body as a blocking reader, for a parser running on a blocking thread
    /// ([`tokio::task::spawn_blocking`]); call it within the runtime. A transport failure while
    /// reading is an I/O error whose text has no URL (the URL may carry a credential).
    pub fn into_reader(self) -> impl std::io::Read + Send + 'static {
        let chunks = self
            .response
            .bytes_stream()
            .map_err(|e| std::io::Error::other(e.without_url()));
        SyncIoBridge::new(StreamReader::new(chunks))
    }
}

/// The content type of a response, when it has a readable one.
fn content_type(response: &reqwest::Response) -> Option<String> {
    response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

/// One account's HTTP client. Cheap to clone; clones share the connection pool and the rate limit, so
/// an account's poller and its outbox worker together stay within the account's request rate.
#[derive(Clone)]
pub struct HttpClient {
    inner: reqwest::Client,
    /// For [`HttpClient::send_streaming`]: no limit on the whole exchange (a body read as it arrives
    /// takes as long as its reader takes), but on each wait for data from the API.
    streaming: reqwest::Client,
    limiter: Arc<DefaultDirectRateLimiter>,
    redactor: Redactor,
    /// The labels of this client's request metrics; `None` records none.
    labels: Option<Arc<ApiLabels>>,
}

impl HttpClient {
    /// Builds a client for one account. `secrets` are the account's secret values; they are scrubbed
    /// from every error text this client produces.
    pub fn new(
        settings: &HttpSettings,
        secrets: Vec<String>,
    ) -> Result<HttpClient, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .user_agent(concat!(
                    "ordersync/",
                    env!("CARGO_PKG_VERSION"),
                    " (+https://github.com/ordersync/ordersync)"
                ))
                .connect_timeout(settings.timeout.min(Duration::from_secs(10)))
                .pool_idle_timeout(Duration::from_secs(90))
                .gzip(true)
                .redirect(reqwest::redirect::Policy::none())
        };
        Ok(HttpClient {
            inner: builder().timeout(settings.timeout).build()?,
            streaming: builder().read_timeout(settings.timeout).build()?,
            limiter: Arc::new(RateLimiter::direct(Quota::per_second(
                settings.requests_per_second,
            ))),
            redactor: Redactor::new(secrets),
            labels: None,
        })
    }

    /// Records this client's requests in the metrics under these labels.
    pub fn with_metrics(mut self, labels: ApiLabels) -> HttpClient {
        self.labels = Some(Arc::new(labels));
        self
    }

    /// The underlying client, to build requests with.
    pub fn request(&self, method: reqwest::Method, url: &str) -> RequestBuilder {
        self.inner.request(method, url)
    }

    /// The redactor holding this account's secrets.
    pub fn redactor(&self) -> &Redactor {
        &self.redactor
    }

    /// This client (sharing its connections, rate limit and metrics) scrubbing `secrets` too, for a
    /// request that carries secrets of its own, such as a signature computed for it alone.
    pub fn with_secrets(&self, secrets: Vec<String>) -> HttpClient {
        HttpClient {
            redactor: self.redactor.with_secrets(secrets),
            ..self.clone()
        }
    }

    /// Sends a request after waiting for the rate limit and classifies the outcome. `what` names the
    /// request in errors and logs (e.g. `GET orders/ page 3`); it must not contain secrets.
    /// `api_message` extracts the API's own error message from a 4xx body, when the API has one.
    pub async fn send(
        &self,
        what: &str,
        request: RequestBuilder,
        api_message: fn(&[u8]) -> Option<String>,
    ) -> Result<HttpResponse, MarketplaceError> {
        let (response, started) = self.head(what, request, false).await?;
        let status = response.status();
        let retry_after = retry_after(response.headers());
        let content_type = content_type(&response);
        let body = self.body(what, response, started).await?;
        let elapsed = started.elapsed();
        tracing::debug!(
            request = what,
            status = status.as_u16(),
            elapsed_ms = elapsed.as_millis() as u64,
            "http response"
        );
        if status.is_success() {
            return Ok(HttpResponse {
                status,
                content_type,
                body,
                elapsed,
            });
        }
        Err(self.refusal(what, status, retry_after, &body, api_message))
    }

    /// Like [`HttpClient::send`], but a successful response's body is left to be read as it arrives
    /// ([`HttpStream::into_reader`]), for answers too large to hold whole. The account's timeout
    /// bounds each wait for data, not the whole exchange: the reader may pause as long as it needs.
    pub async fn send_streaming(
        &self,
        what: &str,
        request: RequestBuilder,
        api_message: fn(&[u8]) -> Option<String>,
    ) -> Result<HttpStream, MarketplaceError> {
        let (response, started) = self.head(what, request, true).await?;
        let status = response.status();
        if status.is_success() {
            self.record(Some(status.as_u16()), started);
            tracing::debug!(
                request = what,
                status = status.as_u16(),
                elapsed_ms = started.elapsed().as_millis() as u64,
                "http response head"
            );
            return Ok(HttpStream {
                content_type: content_type(&response),
                response,
            });
        }
        let retry_after = retry_after(response.headers());
        let body = self.body(what, response, started).await?;
        Err(self.refusal(what, status, retry_after, &body, api_message))
    }

    /// Waits for the rate limit and sends the request, up to the response's head.
    async fn head(
        &self,
        what: &str,
        request: RequestBuilder,
        streaming: bool,
    ) -> Result<(reqwest::Response, Instant), MarketplaceError> {
        self.limiter.until_ready().await;
        let started = Instant::now();
        let sent = if streaming {
            match request.build() {
                Ok(request) => self.streaming.execute(request).await,
                Err(e) => Err(e),
            }
        } else {
            request.send().await
        };
        let response = sent.map_err(|e| {
            self.record(None, started);
            self.transport_error(what, e)
        })?;
        if response.status().is_redirection() {
            self.record(Some(response.status().as_u16()), started);
            return Err(self.redirected(what, &response));
        }
        Ok((response, started))
    }

    /// The error of a redirect, which is not followed (see the module's header). It is permanent: the
    /// same request would be redirected again, and only an operator can tell whether the account's
    /// `base_url` should change. The body is not read (it often repeats the `Location`), and the
    /// `Location` is kept without its query string, fragment or user info, redacted: any of them may
    /// carry a credential.
    fn redirected(&self, what: &str, response: &reqwest::Response) -> MarketplaceError {
        let target = response
            .headers()
            .get(LOCATION)
            .and_then(|location| location.to_str().ok())
            .and_then(|location| response.url().join(location).ok())
            .map(|url| {
                let withheld = if url.query().is_some() {
                    " (query withheld)"
                } else {
                    ""
                };
                let shown = format!("{}{}", url.origin().ascii_serialization(), url.path());
                format!("to {}{withheld}", self.redactor.redact(&shown))
            })
            .unwrap_or_else(|| "without a usable Location".to_owned());
        MarketplaceError::Rejected {
            what: what.to_owned(),
            status: Some(response.status().as_u16()),
            message: format!(
                "the API redirects {target}; redirects are not followed (no marketplace API \
                 documents them, and following one could send the account's credentials \
                 elsewhere): check the account's base_url"
            ),
        }
    }

    /// Reads a whole body and records the request.
    async fn body(
        &self,
        what: &str,
        response: reqwest::Response,
        started: Instant,
    ) -> Result<Bytes, MarketplaceError> {
        let status = response.status();
        let body = response.bytes().await.map_err(|e| {
            self.record(None, started);
            self.transport_error(what, e)
        })?;
        self.record(Some(status.as_u16()), started);
        Ok(body)
    }

    /// The error of a response that is not a success.
    fn refusal(
        &self,
        what: &str,
        status: StatusCode,
        retry_after: Option<Duration>,
        body: &[u8],
        api_message: fn(&[u8]) -> Option<String>,
    ) -> MarketplaceError {
        let message = match api_message(body) {
            Some(message) => self.redactor.redact(&message),
            None => self.redactor.excerpt(body),
        };
        let what = what.to_owned();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            MarketplaceError::Transient {
                what,
                detail: format!("HTTP {}: {message}", status.as_u16()),
                retry_after,
                ambiguous: false,
            }
        } else if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
            MarketplaceError::Unauthorized {
                what,
                status: status.as_u16(),
                message,
            }
        } else {
            MarketplaceError::Rejected {
                what,
                status: Some(status.as_u16()),
                message,
            }
        }
    }

    fn record(&self, status: Option<u16>, started: Instant) {
        if let Some(labels) = &self.labels {
            metrics::api_request(labels, status, started.elapsed());
        }
    }

    fn transport_error(&self, what: &str, error: reqwest::Error) -> MarketplaceError {
        // A failure to connect means nothing reached the API; anything later (a timeout, a reset) may
        // have been processed by it, which matters to callers that change state.
        let ambiguous = !error.is_connect();
        let kind = if error.is_timeout() {
            "timed out"
        } else if error.is_connect() {
            "could not connect"
        } else {
            "transport error"
        };
        let detail = self
            .redactor
            .redact(&format!("{kind}: {}", ErrorChain(&error.without_url())));
        MarketplaceError::Transient {
            what: what.to_owned(),
            detail,
            retry_after: None,
            ambiguous,
        }
    }
}

/// Displays an error with its whole `source()` chain.
struct ErrorChain<'a>(&'a dyn std::error::Error);

impl std::fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(s) = source {
            write!(f, ": {s}")?;
            source = s.source();
        }
        Ok(())
    }
}

/// The `Retry-After` header as a duration (delta-seconds or an HTTP date), at most
/// [`MAX_RETRY_AFTER`]; `None` when there is none or it is neither form.
pub fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    let after = if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // More seconds than a u64 holds is still a number of seconds: the longest wait there is.
        value
            .parse::<u64>()
            .map_or(MAX_RETRY_AFTER, Duration::from_secs)
    } else {
        let when = httpdate::parse_http_date(value).ok()?;
        when.duration_since(std::time::SystemTime::now())
            .unwrap_or(Duration::ZERO)
    };
    Some(after.min(MAX_RETRY_AFTER))
}

/// The forms a secret takes in a text a client or an API wrote: as it is; URL-encoded (a query);
/// escaped in a JSON string, the way common encoders write it (`serde_json`; with `/` as `\/`, as
/// PHP does; with every other character as `\uXXXX`, as Python does); and HTML-escaped (an error
/// page). An API that echoes a request back may use any of them.
fn written_forms(secret: String) -> Vec<String> {
    let url = url::form_urlencoded::byte_serialize(secret.as_bytes()).collect::<String>();
    let quoted = serde_json::Value::String(secret.clone()).to_string();
    let json = quoted[1..quoted.len() - 1].to_owned();
    let ascii = |upper: bool| {
        let mut out = String::with_capacity(json.len());
        for c in json.chars() {
            if c.is_ascii() {
                out.push(c);
            } else {
                for unit in c.encode_utf16(&mut [0; 2]) {
                    out.push_str(&if upper {
                        format!("\\u{unit:04X}")
                    } else {
                        format!("\\u{unit:04x}")
                    });
                }
            }
        }
        out
    };
    let (ascii_lower, ascii_upper) = (ascii(false), ascii(true));
    let html = |apostrophe: &str| {
        secret
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
            .replace('\'', apostrophe)
    };
    let mut forms = vec![
        html("&#39;"),
        html("&#x27;"),
        json.replace('/', "\\/"),
        ascii_lower.replace('/', "\\/"),
        ascii_lower,
        ascii_upper,
        json,
        url,
        secret,
    ];
    forms.sort();
    forms.dedup();
    forms
}

/// The first characters of a text, for error messages.
fn excerpt(text: &str) -> String {
    let mut out: String = text.chars().take(EXCERPT_CHARS).collect();
    if text.chars().nth(EXCERPT_CHARS).is_some() {
        out.push('…');
    }
    out
}

/// Replaces an account's secret values by `***` in any text.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Every secret as it may appear ([`written_forms`]), longest first, so a secret that contains
    /// another is scrubbed whole.
    forms: Arc<Vec<String>>,
}

impl Redactor {
    pub fn new(secrets: Vec<String>) -> Redactor {
        let mut forms: Vec<String> = secrets
            .into_iter()
            // Configuration refuses shorter ones; scrubbing a value that short would scrub innocent text.
            .filter(|s| s.len() >= MIN_SECRET_LEN)
            .flat_map(written_forms)
            .collect();
        forms.sort_by_key(|s| std::cmp::Reverse(s.len()));
        forms.dedup();
        Redactor {
            forms: Arc::new(forms),
        }
    }

    /// This redactor scrubbing `secrets` too.
    pub fn with_secrets(&self, secrets: Vec<String>) -> Redactor {
        let added = Redactor::new(secrets);
        let mut forms: Vec<String> = self
            .forms
            .iter()
            .chain(added.forms.iter())
            .cloned()
            .collect();
        // Longest first as in `new`; equal lengths in order, so that duplicates are adjacent.
        forms.sort_by(|a, b| b.len().cmp(&a.len()).then_with(|| a.cmp(b)));
        forms.dedup();
        Redactor {
            forms: Arc::new(forms),
        }
    }

    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for secret in self.forms.iter() {
            if out.contains(secret.as_str()) {
                out = out.replace(secret.as_str(), "***");
            }
        }
        out
    }

    /// The first characters of a body, redacted: the whole text is redacted before it is cut, so the
    /// cut cannot leave part of a secret.
    pub fn excerpt(&self, body: &[u8]) -> String {
        excerpt(&self.redact(&String::from_utf8_lossy(body)))
    }

    /// Redacts a piece cut out of a longer text that is not at hand: a secret that the piece's start
    /// (`cut_start`) or end (`cut_end`) cuts through is scrubbed too, where at least 4 of its
    /// characters are in the piece.
    pub fn redact_piece(&self, piece: &[u8], cut_start: bool, cut_end: bool) -> String {
        let mut out = self.redact(&String::from_utf8_lossy(piece));
        for secret in self.forms.iter() {
            let cuts = (MIN_SECRET_LEN..secret.len()).rev();
            if cut_start
                && let Some(n) = cuts.clone().find(|&n| {
                    secret.is_char_boundary(secret.len() - n)
                        && out.starts_with(&secret[secret.len() - n..])
                })
            {
                out.replace_range(..n, "***");
            }
            if cut_end
                && let Some(n) = cuts
                    .clone()
                    .find(|&n| secret.is_char_boundary(n) && out.ends_with(&secret[..n]))
            {
                out.replace_range(out.len() - n.., "***");
            }
        }
        out
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secret forms)", self.forms.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redactor_scrubs_plain_and_url_encoded_secrets() {
        let r = Redactor::new(vec!["s3cr3t+token/x".into(), "ab".into()]);
        let text =
            "GET /x?access_token=s3cr3t%2Btoken%2Fx failed; body said s3cr3t+token/x; ab stays";
        assert_eq!(
            r.redact(text),
            "GET /x?access_token=*** failed; body said ***; ab stays"
        );
    }

    #[test]
    fn redactor_scrubs_secrets_escaped_in_json_and_html() {
        let secret = "k\"ey/ş'<&>\\z";
        let r = Redactor::new(vec![secret.into()]);
        let json = serde_json::json!({ "echo": secret }).to_string();
        assert_eq!(r.redact(&json), r#"{"echo":"***"}"#);
        for written in [
            r#"{"echo":"k\"ey\/ş'<&>\\z"}"#,
            r#"{"echo":"k\"ey/\u015f'<&>\\z"}"#,
            r#"{"echo":"k\"ey\/\u015f'<&>\\z"}"#,
            r#"{"echo":"k\"ey/\u015F'<&>\\z"}"#,
        ] {
            assert_eq!(r.redact(written), r#"{"echo":"***"}"#, "{written}");
        }
        for written in [
            "<p>k&quot;ey/ş&#39;&lt;&amp;&gt;\\z</p>",
            "<p>k&quot;ey/ş&#x27;&lt;&amp;&gt;\\z</p>",
        ] {
            assert_eq!(r.redact(written), "<p>***</p>", "{written}");
        }
    }

    /// What [`retry_after`] makes of this header value.
    fn retry_after_of(value: &str) -> Option<Duration> {
        let mut headers = HeaderMap::new();
        headers.insert(RETRY_AFTER, value.parse().unwrap());
        retry_after(&headers)
    }

    #[test]
    fn retry_after_reads_seconds() {
        assert_eq!(retry_after_of("7"), Some(Duration::from_secs(7)));
        assert_eq!(retry_after_of(" 0 "), Some(Duration::ZERO));
        assert_eq!(retry_after_of("600"), Some(Duration::from_secs(600)));
        assert_eq!(retry_after_of("900"), Some(MAX_RETRY_AFTER));
        // Delay-seconds are digits only (RFC 9110 §10.2.3).
        for malformed in ["soon", "", "-5", "1.5", "+7", "7 s"] {
            assert_eq!(retry_after_of(malformed), None, "{malformed:?}");
        }
        assert_eq!(retry_after(&HeaderMap::new()), None);
    }

    #[test]
    fn retry_after_reads_http_dates() {
        let in_a_minute = std::time::SystemTime::now() + Duration::from_secs(60);
        let after = retry_after_of(&httpdate::fmt_http_date(in_a_minute)).unwrap();
        // The date has whole seconds, and time passes between writing and reading it.
        assert!(
            after > Duration::from_secs(55) && after <= Duration::from_secs(60),
            "{after:?}"
        );
        assert_eq!(
            retry_after_of("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn a_huge_retry_after_is_capped() {
        for huge in [
            "901",
            "31536000",
            "9300000000000",
            "18446744073709551615",
            "99999999999999999999999999",
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ] {
            assert_eq!(retry_after_of(huge), Some(MAX_RETRY_AFTER), "{huge}");
        }
    }

    const TOKEN: &str = "tok-9f8e7d6c5b4a";

    /// Serves `app` on a free local port.
    async fn serve(app: axum::Router) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        addr
    }

    #[tokio::test]
    async fn redirects_are_refused_and_take_no_credential_elsewhere() {
        use std::sync::atomic::{AtomicUsize, Ordering};

        // Where the redirects point: it must receive nothing.
        let received = Arc::new(AtomicUsize::new(0));
        let counter = received.clone();
        let elsewhere = serve(axum::Router::new().fallback(move || {
            counter.fetch_add(1, Ordering::SeqCst);
            async { "taken" }
        }))
        .await;
        // The API answers with the status its path names, pointing to the other server with a
        // Location that keeps the token the client knows and a signature it does not; its body
        // repeats the Location, as servers' redirect pages do.
        let location =
            format!("http://{elsewhere}/v1.0/order/store/7?access_token={TOKEN}&sig=unknown-sig");
        let api = serve(axum::Router::new().fallback(move |uri: axum::http::Uri| {
            let status = uri.path().trim_start_matches('/').parse::<u16>().unwrap();
            let page = format!("<a href=\"{location}\">moved</a>");
            let head = [(axum::http::header::LOCATION, location.clone())];
            async move {
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    head,
                    page,
                )
            }
        }))
        .await;
        let settings = HttpSettings {
            timeout: Duration::from_secs(5),
            requests_per_second: NonZeroU32::new(100).unwrap(),
        };
        let http = HttpClient::new(&settings, vec![TOKEN.to_owned()]).unwrap();
        let none = |_: &[u8]| None;

        // A token in the query (allesgo), in a custom header (i1), in a JSON body (C2C, re-posted on
        // 307/308), and a body read as it arrives.
        let get = http
            .request(
                reqwest::Method::GET,
                &format!("http://{api}/302?access_token={TOKEN}"),
            )
            .header("X-Api-Token", TOKEN);
        let post_307 = http
            .request(reqwest::Method::POST, &format!("http://{api}/307"))
            .json(&serde_json::json!({"ApiKey": TOKEN, "ApiPassword": TOKEN}));
        let post_308 = http
            .request(reqwest::Method::POST, &format!("http://{api}/308"))
            .json(&serde_json::json!({"ApiKey": TOKEN, "ApiPassword": TOKEN}));
        let errors = [
            (302, http.send("GET orders", get, none).await.unwrap_err()),
            (
                307,
                http.send("POST GetAll", post_307, none).await.unwrap_err(),
            ),
            (
                308,
                http.send("POST GetAll", post_308, none).await.unwrap_err(),
            ),
            (
                301,
                http.send_streaming(
                    "GET orders",
                    http.request(reqwest::Method::GET, &format!("http://{api}/301")),
                    none,
                )
                .await
                .unwrap_err(),
            ),
        ];

        assert_eq!(received.load(Ordering::SeqCst), 0);
        for (status, error) in errors {
            assert!(
                matches!(error, MarketplaceError::Rejected { status: Some(s), .. } if s == status),
                "{error:?}"
            );
            assert_eq!(error.disposition(), crate::marketplace::Disposition::Fail);
            let text = format!("{error} {error:?}");
            assert!(
                text.contains(&format!("HTTP {status}"))
                    && text.contains("redirects are not followed")
                    && text.contains(&format!(
                        "to http://{elsewhere}/v1.0/order/store/7 (query withheld)"
                    )),
                "{text}"
            );
            for secret in [TOKEN, "unknown-sig", "access_token"] {
                assert!(!text.contains(secret), "{text}");
            }
        }
    }

    #[test]
    fn excerpt_is_bounded() {
        let long = "ğ".repeat(2000);
        assert_eq!(excerpt(&long).chars().count(), EXCERPT_CHARS + 1);
    }

    #[test]
    fn excerpts_and_pieces_keep_no_part_of_a_secret() {
        let r = Redactor::new(vec!["tok-9f8e7d6c5b4a".into(), "s3cr3t+token/x".into()]);
        // The body is redacted before it is cut: the cut cannot leave the token's first characters.
        let body = format!("{}tok-9f8e7d6c5b4a and more", "a".repeat(EXCERPT_CHARS - 6));
        let excerpt = r.excerpt(body.as_bytes());
        assert!(!excerpt.contains("tok-9f"), "{excerpt}");
        assert!(excerpt.contains("a*** an"), "{excerpt}");

        // A piece whose start or end cuts through a secret (as it is or URL-encoded).
        assert_eq!(
            r.redact_piece(b"7d6c5b4a\"}, more", true, false),
            "***\"}, more"
        );
        assert_eq!(r.redact_piece(b"x tok-9f8e", false, true), "x ***");
        assert_eq!(r.redact_piece(b"oken%2Fx&y=1", true, false), "***&y=1");
        // Where the piece is not cut, or fewer than 4 characters would be a secret's, it stays.
        assert_eq!(r.redact_piece(b"7d6c5b4a\"}", false, false), "7d6c5b4a\"}");
        assert_eq!(r.redact_piece(b"4a\" tok-", true, false), "4a\" tok-");
        assert_eq!(r.redact_piece(b"4a\" tok-", false, true), "4a\" ***");
    }
}
