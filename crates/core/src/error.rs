//! Typed errors with stable codes. The binding maps each code once to the
//! matching JavaScript class.

use thiserror::Error;

pub type Result<T, E = AluviaError> = std::result::Result<T, E>;

#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum AluviaError {
    #[error("Aluvia apiKey is required")]
    MissingApiKey,
    #[error("Authentication failed (HTTP {0}). Check token validity and that you are using an account API token for account endpoints.")]
    InvalidApiKey(u16),
    /// Any other API failure. `status` is the HTTP status when one is known
    /// (408 for a timeout), `None` for failures that never got an answer.
    #[error("{message}")]
    Api { message: String, status: Option<u16> },
    #[error("Failed to start proxy server: {0}")]
    ProxyStart(String),
    #[error("{0}")]
    Connect(String),
    /// Bad input from the caller (a plain `Error` in JS).
    #[error("{0}")]
    Invalid(String),
    /// An option of the wrong kind or shape (a `TypeError` in JS); the
    /// message names the option.
    #[error("{0}")]
    InvalidType(String),
    /// An option outside its range or set of values (a `RangeError` in JS);
    /// the message names the option.
    #[error("{0}")]
    OutOfRange(String),
    #[error("{0}")]
    Internal(String),
}

impl AluviaError {
    pub fn api(message: impl Into<String>, status: Option<u16>) -> Self {
        AluviaError::Api { message: message.into(), status }
    }

    /// The stable code that crosses into JavaScript.
    pub fn code(&self) -> &'static str {
        match self {
            AluviaError::MissingApiKey => "MissingApiKeyError",
            AluviaError::InvalidApiKey(_) => "InvalidApiKeyError",
            AluviaError::Api { .. } => "ApiError",
            AluviaError::ProxyStart(_) => "ProxyStartError",
            AluviaError::Connect(_) => "ConnectError",
            AluviaError::Invalid(_) => "InvalidArgument",
            AluviaError::InvalidType(_) => "TypeError",
            AluviaError::OutOfRange(_) => "RangeError",
            AluviaError::Internal(_) => "InternalError",
        }
    }

    /// The HTTP status carried by the error, when there is one.
    pub fn status(&self) -> Option<u16> {
        match self {
            AluviaError::InvalidApiKey(s) => Some(*s),
            AluviaError::Api { status, .. } => *status,
            _ => None,
        }
    }
}
