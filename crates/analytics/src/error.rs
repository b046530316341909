//! The store's typed errors, so callers can tell "try again later" from "refused".

/// Why the store could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The disk (or the database's size limit) is full: nothing of the batch was stored;
    /// the sender should try again once space is freed.
    #[error("storage is full: {0}")]
    Full(String),
    /// The database is busy or unreachable for now; nothing of the batch was stored.
    #[error("storage is unavailable: {0}")]
    Unavailable(String),
    /// The database file is damaged; an operator must look at it.
    #[error("storage is corrupt: {0}")]
    Corrupt(String),
    /// A query asked for something the store cannot answer (a bad range, say).
    #[error("invalid query: {0}")]
    InvalidQuery(String),
    /// Anything else the engine reported.
    #[error("storage failed: {0}")]
    Other(String),
}

impl StoreError {
    /// Whether resending the same batch later can succeed (answer 503 with `Retry-After`).
    pub fn is_retryable(&self) -> bool {
        matches!(self, StoreError::Full(_) | StoreError::Unavailable(_))
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(err: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode;
        match err.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full(err.to_string()),
            Some(
                ErrorCode::DatabaseBusy
                | ErrorCode::DatabaseLocked
                | ErrorCode::SystemIoFailure
                | ErrorCode::CannotOpen
                | ErrorCode::OutOfMemory,
            ) => StoreError::Unavailable(err.to_string()),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
                StoreError::Corrupt(err.to_string())
            }
            _ => StoreError::Other(err.to_string()),
        }
    }
}
