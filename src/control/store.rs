//! (stub until the control branch lands)
use std::path::Path;

/// Stub.
#[derive(Debug, thiserror::Error)]
#[error("store stub")]
pub struct StoreError;

/// Stub.
pub struct Store;

impl Store {
    /// Stub.
    pub fn open(_path: &Path) -> Result<Store, StoreError> {
        Ok(Store)
    }
    /// Stub.
    pub fn bootstrap(&mut self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }
}
