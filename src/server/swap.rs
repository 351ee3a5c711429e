//! A value replaced as a whole while readers keep using the one they loaded:
//! the policy and the serving certificate.
//!
//! A read takes the lock only long enough to clone the `Arc` (never across an
//! `.await`), so a reload never waits for a review and a review never sees a
//! half-updated value. This is `std` only; `arc-swap` would shave a few
//! nanoseconds off a path that costs microseconds anyway.

use std::sync::{Arc, PoisonError, RwLock};

#[derive(Debug)]
pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub fn new(value: Arc<T>) -> Self {
        Swap(RwLock::new(value))
    }

    /// The current value.
    pub fn load(&self) -> Arc<T> {
        // A panic while holding the lock cannot leave a half-written Arc.
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Replaces the value; readers holding the old one keep it until they drop it.
    pub fn store(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}
