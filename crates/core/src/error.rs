//! The one API error table: each variant maps to a status, a stable code and a message,
//! used alike by HTTP, UDP and WebSocket answers.

use serde_json::json;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ApiError {
    #[error(
        "an API key is required (HTTP: Authorization: Bearer <key> or X-API-Key; UDP: the request's \"key\")"
    )]
    MissingKey,
    #[error("the API key is not valid or has been revoked")]
    InvalidKey,
    #[error("rate limit of your tier exceeded, retry after {retry_after_s} s")]
    RateLimited { retry_after_s: u64 },
    #[error("monthly quota of your tier used up, it resets in {retry_after_s} s")]
    QuotaExceeded { retry_after_s: u64 },
    #[error("unknown asset {asset:?}")]
    UnknownAsset { asset: String },
    #[error("unknown source {source_tag:?} for this asset")]
    UnknownSource { source_tag: String },
    #[error("no price received yet for {asset}")]
    NoPrice { asset: String },
    #[error("no fresh price for {asset}: the newest is {age_ms} ms old")]
    StalePrice { asset: String, age_ms: i64 },
    #[error("{0}")]
    BadRequest(String),
    /// A definition or mapping field that does not validate.
    #[error("field `{field}`: {message}")]
    InvalidField { field: String, message: String },
    #[error("this endpoint needs the admin key")]
    Forbidden,
    #[error("your tier does not include usage reports")]
    ReportsNotIncluded,
    #[error(
        "the monthly allowance of {allowance} reports is used up; it resets in {retry_after_s} s"
    )]
    ReportAllowanceUsed {
        allowance: u64,
        retry_after_s: u64,
        /// When the allowance starts again (unix ms).
        resets_at_ms: i64,
    },
    #[error(
        "the answer is {bytes} bytes, more than one datagram carries ({max}); ask over HTTP instead ({instead})"
    )]
    TooLargeForUdp {
        bytes: usize,
        max: usize,
        /// The HTTP request to make instead (`GET /prices`).
        instead: &'static str,
    },
    #[error("{0}")]
    NotFound(String),
    /// The node is at its limit of price requests in flight (`governor_max_in_flight`).
    #[error("this node is at capacity, retry in a moment")]
    Overloaded,
    /// The node is stopping and no longer meters requests: one it could not meter is refused
    /// rather than answered unmetered.
    #[error("this node is stopping, retry in a moment")]
    Stopping,
    /// Something on our side failed; the details are in the server log.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ApiError {
    /// A field of a request that does not validate.
    pub fn invalid_field(field: &str, message: impl Into<String>) -> Self {
        ApiError::InvalidField {
            field: field.to_owned(),
            message: message.into(),
        }
    }

    pub fn status(&self) -> u16 {
        match self {
            ApiError::MissingKey | ApiError::InvalidKey => 401,
            ApiError::RateLimited { .. }
            | ApiError::QuotaExceeded { .. }
            | ApiError::ReportAllowanceUsed { .. } => 429,
            ApiError::UnknownAsset { .. }
            | ApiError::UnknownSource { .. }
            | ApiError::NotFound(_) => 404,
            ApiError::NoPrice { .. }
            | ApiError::StalePrice { .. }
            | ApiError::Overloaded
            | ApiError::Stopping => 503,
            ApiError::BadRequest(_) | ApiError::InvalidField { .. } => 400,
            ApiError::Forbidden | ApiError::ReportsNotIncluded => 403,
            ApiError::TooLargeForUdp { .. } => 413,
            ApiError::Internal(_) => 500,
        }
    }

    /// Stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::MissingKey => "missing_api_key",
            ApiError::InvalidKey => "invalid_api_key",
            ApiError::RateLimited { .. } => "rate_limited",
            ApiError::QuotaExceeded { .. } => "quota_exceeded",
            ApiError::UnknownAsset { .. } => "unknown_asset",
            ApiError::UnknownSource { .. } => "unknown_source",
            ApiError::NoPrice { .. } => "no_price_yet",
            ApiError::StalePrice { .. } => "stale_price",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::Forbidden => "forbidden",
            ApiError::ReportsNotIncluded => "reports_not_included",
            ApiError::ReportAllowanceUsed { .. } => "report_allowance_used",
            ApiError::TooLargeForUdp { .. } => "too_large_for_udp",
            ApiError::NotFound(_) => "not_found",
            ApiError::Overloaded => "overloaded",
            ApiError::Stopping => "stopping",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// Seconds a client should wait, for answers that carry `Retry-After`.
    pub fn retry_after_s(&self) -> Option<u64> {
        match self {
            ApiError::RateLimited { retry_after_s }
            | ApiError::QuotaExceeded { retry_after_s }
            | ApiError::ReportAllowanceUsed { retry_after_s, .. } => Some(*retry_after_s),
            ApiError::Overloaded | ApiError::Stopping => Some(1),
            _ => None,
        }
    }

    /// The JSON error object: `{"error":{"code":..,"message":..,...}}`.
    pub fn to_json(&self) -> serde_json::Value {
        let mut body = json!({"code": self.code(), "message": self.to_string()});
        if let Some(s) = self.retry_after_s() {
            body["retry_after_s"] = json!(s);
        }
        match self {
            ApiError::StalePrice { age_ms, .. } => body["age_ms"] = json!(age_ms),
            ApiError::InvalidField { field, .. } => body["field"] = json!(field),
            ApiError::ReportAllowanceUsed { resets_at_ms, .. } => {
                body["resets_at"] = json!(crate::rfc3339_ms(*resets_at_ms));
            }
            _ => {}
        }
        json!({ "error": body })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_price_error_tells_the_age() {
        let e = ApiError::StalePrice {
            asset: "BTC".into(),
            age_ms: 42_000,
        };
        assert_eq!(e.status(), 503);
        let v = e.to_json();
        assert_eq!(v["error"]["code"], "stale_price");
        assert_eq!(v["error"]["age_ms"], 42_000);
    }

    #[test]
    fn rate_limit_error_carries_retry_after() {
        let e = ApiError::RateLimited { retry_after_s: 2 };
        assert_eq!((e.status(), e.retry_after_s()), (429, Some(2)));
        assert_eq!(e.to_json()["error"]["retry_after_s"], 2);
    }

    #[test]
    fn overloaded_and_stopping_are_503s_to_retry_in_a_second() {
        for (e, code) in [
            (ApiError::Overloaded, "overloaded"),
            (ApiError::Stopping, "stopping"),
        ] {
            assert_eq!(
                (e.status(), e.code(), e.retry_after_s()),
                (503, code, Some(1))
            );
        }
    }
}
