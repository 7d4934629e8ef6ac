//! A minimal HTTP/1 client for the management API, used by the command-line tools (`pagebench`,
//! `restore`): one GET per connection, `http://` only, an optional bearer token.

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};

/// `GET <endpoint><path>` (`endpoint` is `http://host:port`): the status and the whole body. The error is a
/// message naming what failed (never the token).
pub async fn get(
    endpoint: &str,
    path: &str,
    token: Option<&str>,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or("only http:// endpoints are supported")?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("connect to {authority}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, authority);
    if let Some(token) = token {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let req = req.body(Empty::<Bytes>::new()).map_err(|e| e.to_string())?;
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    Ok((status, body))
}

/// [`get`], then the body as JSON of type `T`; a status other than 2xx is an error with the body's text.
pub async fn get_json<T: serde::de::DeserializeOwned>(
    endpoint: &str,
    path: &str,
    token: Option<&str>,
) -> Result<T, String> {
    let (status, body) = get(endpoint, path, token).await?;
    if !status.is_success() {
        return Err(format!(
            "{status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    serde_json::from_slice(&body).map_err(|e| format!("response JSON: {e}"))
}
