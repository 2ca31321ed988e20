//! (stub until the control branch lands)

/// Stub.
pub fn verify_password(_phc: &str, _password: &[u8]) -> bool {
    false
}
