//! Reading one UDP request datagram: serde_json into a borrowed struct, owned only once it is
//! handed to the future that answers it.

use std::borrow::Cow;

use beast_core::ApiError;
use serde::Deserialize;

/// Longest request id echoed back.
const MAX_ID: usize = 64;

#[derive(Debug, Deserialize)]
pub struct Request<'a> {
    #[serde(borrow, default)]
    pub key: Cow<'a, str>,
    #[serde(borrow, default)]
    pub asset: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub assets: Option<Vec<Cow<'a, str>>>,
    #[serde(borrow, default)]
    pub source: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    pub id: Option<Cow<'a, str>>,
}

impl Request<'_> {
    /// The request with its strings owned, to be answered by a task of its own.
    pub fn into_owned(self) -> Request<'static> {
        let own = |c: Cow<'_, str>| Cow::Owned(c.into_owned());
        Request {
            key: own(self.key),
            asset: self.asset.map(own),
            assets: self.assets.map(|a| a.into_iter().map(own).collect()),
            source: self.source.map(own),
            id: self.id.map(own),
        }
    }
}

pub enum Parsed<'a> {
    Request(Request<'a>),
    /// JSON, but not a valid request: answered with this error (and the id, if readable).
    Invalid {
        id: Option<String>,
        error: ApiError,
    },
    /// Not JSON at all: dropped.
    Garbage,
}

/// The `id` of a JSON request to echo in its answer, if it has a readable one.
pub(crate) fn echo_id(request: &serde_json::Value) -> Option<String> {
    request
        .get("id")
        .and_then(|i| i.as_str())
        .filter(|id| id.chars().count() <= MAX_ID)
        .map(str::to_owned)
}

pub fn parse(datagram: &[u8]) -> Parsed<'_> {
    let request: Request = match serde_json::from_slice(datagram) {
        Ok(r) => r,
        Err(e) if e.is_syntax() || e.is_eof() => return Parsed::Garbage,
        Err(e) => {
            // A wrong shape may be met before a syntax error further on (`7 garbage`): only
            // JSON is answered, echoing the id if there is one.
            let Ok(value) = serde_json::from_slice::<serde_json::Value>(datagram) else {
                return Parsed::Garbage;
            };
            return Parsed::Invalid {
                id: echo_id(&value),
                error: ApiError::BadRequest(format!("bad request: {e}")),
            };
        }
    };
    if let Some(id) = &request.id
        && id.chars().count() > MAX_ID
    {
        return Parsed::Invalid {
            id: None,
            error: ApiError::BadRequest(format!("id is longer than {MAX_ID} characters")),
        };
    }
    Parsed::Request(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_or_refused_with_a_reason() {
        let Parsed::Request(r) = parse(br#"{"key":"k","asset":"BTC","id":"1"}"#) else {
            panic!("valid request refused");
        };
        assert_eq!(
            (&*r.key, r.asset.as_deref(), r.id.as_deref()),
            ("k", Some("BTC"), Some("1"))
        );
        assert!(matches!(parse(b"\x00\xffnot json"), Parsed::Garbage));
        assert!(matches!(parse(br#"{"key":"k","asset":"#), Parsed::Garbage));
        // No key is for authentication to refuse (and count), as on HTTP.
        assert!(matches!(
            parse(br#"{"asset":"BTC","id":"9"}"#),
            Parsed::Request(ref r) if r.key.is_empty()
        ));
        assert!(matches!(
            parse(br#"{"key":"k","asset":42,"id":"x"}"#),
            Parsed::Invalid {
                id: Some(_),
                error: ApiError::BadRequest(_)
            }
        ));
        let long = format!(r#"{{"key":"k","asset":"BTC","id":"{}"}}"#, "x".repeat(65));
        assert!(matches!(
            parse(long.as_bytes()),
            Parsed::Invalid { id: None, .. }
        ));
        assert!(matches!(parse(b"[1,2]"), Parsed::Invalid { .. }));
        // Not JSON, though its start already has the wrong shape.
        assert!(matches!(parse(br#"7{"key":"k"}"#), Parsed::Garbage));
        assert!(matches!(
            parse(br#"{"key":true"k","asset":"BTC"}"#),
            Parsed::Garbage
        ));
    }
}
