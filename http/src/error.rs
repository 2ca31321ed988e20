//! Errors from parsing a request, each mapped to the status code it is answered with.

/// Why a request could not be parsed; after any of these the connection is closed.
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The request line or a header is not valid HTTP/1.x syntax (400).
    #[error("malformed request: {0}")]
    Malformed(&'static str),
    /// The head grew past `head_bytes_max` without completing (431).
    #[error("request head larger than {limit} bytes")]
    HeadTooLarge {
        /// The configured `head_bytes_max`.
        limit: usize,
    },
    /// The head has more than `headers_count_max` headers (431).
    #[error("more than {limit} request headers")]
    TooManyHeaders {
        /// The configured `headers_count_max`.
        limit: usize,
    },
    /// Content-Length is not a single decimal number, or conflicts with Transfer-Encoding (400).
    #[error("invalid Content-Length or message framing: {0}")]
    InvalidFraming(&'static str),
    /// The body is or would become larger than `body_bytes_max` (413).
    #[error("request body larger than {limit} bytes")]
    BodyTooLarge {
        /// The configured `body_bytes_max`.
        limit: usize,
    },
    /// A chunked body is malformed: bad size line, missing CRLF, oversized size or trailers (400).
    #[error("malformed chunked body: {0}")]
    InvalidChunk(&'static str),
    /// A transfer coding other than chunked (gzip, deflate, ...) that we do not decode (501).
    #[error("unsupported transfer coding")]
    UnsupportedTransferCoding,
    /// The request is not HTTP/1.0 or HTTP/1.1 (505).
    #[error("unsupported HTTP version")]
    UnsupportedVersion,
}

impl HttpError {
    /// The HTTP status code to answer this error with before closing the connection.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::Malformed(_) | HttpError::InvalidFraming(_) | HttpError::InvalidChunk(_) => {
                400
            }
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::UnsupportedTransferCoding => 501,
            HttpError::UnsupportedVersion => 505,
        }
    }
}
