//! Outbound HTTP for identity services (JWKS, discovery, introspection):
//! every call has a timeout and a bound on the answer's size, so a slow or
//! hostile identity provider cannot stall or exhaust the gateway.

use std::time::Duration;

/// The largest answer accepted from an identity service.
pub(crate) const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("timed out")]
    Timeout,
    #[error("connection failed")]
    Connect,
    #[error("answered HTTP {0}")]
    Status(u16),
    #[error("answer larger than {MAX_RESPONSE_BYTES} bytes")]
    TooLarge,
    #[error("request failed")]
    Other,
}

impl From<reqwest::Error> for FetchError {
    fn from(e: reqwest::Error) -> Self {
        if e.is_timeout() {
            FetchError::Timeout
        } else if e.is_connect() {
            FetchError::Connect
        } else {
            FetchError::Other
        }
    }
}

/// A client for one provider; connections are pooled per client.
#[derive(Debug, Clone)]
pub(crate) struct Fetcher {
    client: reqwest::Client,
    timeout: Duration,
}

impl Fetcher {
    pub(crate) fn new(timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Fetcher { client, timeout }
    }

    /// GET `url`, a 2xx answer's body.
    pub(crate) async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let request = self.client.get(url).header("accept", "application/json");
        self.send(request).await
    }

    /// POST a form with HTTP Basic client credentials; a 2xx answer's body.
    pub(crate) async fn post_form(
        &self,
        url: &str,
        user: &str,
        password: &str,
        form: &[(&str, &str)],
    ) -> Result<Vec<u8>, FetchError> {
        let request = self
            .client
            .post(url)
            .basic_auth(user, Some(password))
            .header("accept", "application/json")
            .form(form);
        self.send(request).await
    }

    /// GET `url` with `headers`, for a yes/no answer: the status and the
    /// answer's headers, whatever the status. The body is read (bounded) and
    /// dropped, so the connection can be reused.
    pub(crate) async fn ask(
        &self,
        url: &str,
        headers: http::HeaderMap,
    ) -> Result<(u16, http::HeaderMap), FetchError> {
        let work = async {
            let mut response = self.client.get(url).headers(headers).send().await?;
            let status = response.status().as_u16();
            let headers = std::mem::take(response.headers_mut());
            let mut read = 0usize;
            while let Some(chunk) = response.chunk().await? {
                read += chunk.len();
                if read > MAX_RESPONSE_BYTES {
                    return Err(FetchError::TooLarge);
                }
            }
            Ok((status, headers))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| FetchError::Timeout)?
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Vec<u8>, FetchError> {
        let work = async {
            let mut response = request.send().await?;
            let status = response.status();
            if !status.is_success() {
                return Err(FetchError::Status(status.as_u16()));
            }
            if response
                .content_length()
                .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
            {
                return Err(FetchError::TooLarge);
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
                    return Err(FetchError::TooLarge);
                }
                body.extend_from_slice(&chunk);
            }
            Ok(body)
        };
        // reqwest's own timeout covers the whole exchange too; this one also
        // bounds the body loop.
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| FetchError::Timeout)?
    }
}
